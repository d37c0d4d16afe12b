"""Recipes that turn portal exports into a trainable manifest: URL lists, Darwin Core archives,
and the Smithsonian mercury dataset (Schuettpelz et al. 2017, figshare 5423083 + 5423098).

Each recipe downloads into `out/images/`, keeps every provenance column it was given (source
URL, licence, rights holder and all Darwin Core terms), writes `out/manifest.csv` with a `path`
column for the images that arrived, and lists the ones that did not in `out/failures.csv`.
Running a recipe again downloads only what is missing.
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

from herbscan.download import download_all, iiif_sized, safe_extract
from herbscan.dwca import read_dwca
from herbscan.errors import ManifestError, ParameterError
from herbscan.fileio import write_csv

FIGSHARE_FILES = "https://ndownloader.figshare.com/files/"
# stain: (figshare article, file id, size in bytes when known)
MERCURY = {"stained": (5423083, 9355285, None), "unstained": (5423098, 9355303, 413_485_713)}
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def _name(row: dict, i: int, url: str) -> str:
    stem = row.get("catalogNumber") or row.get("coreid") or row.get("id") or f"img{i:06d}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or f"img{i:06d}"
    ext = Path(urlsplit(url).path).suffix.lower()
    return f"images/{stem}_{i:06d}{ext if ext in IMAGE_EXT else '.jpg'}"


def _download_rows(
    rows: list[dict], out: Path, url_key: str, size: int | None, workers: int, progress: bool
) -> Path:
    items = [(iiif_sized(r[url_key], size), _name(r, i, r[url_key])) for i, r in enumerate(rows)]
    results = download_all(items, out, workers=workers, progress=progress)
    kept, failed = [], []
    for r, (url, rel), res in zip(rows, items, results):
        row = dict(r, source_url=url)
        if res.ok:
            kept.append(dict(row, path=rel))
        else:
            failed.append(dict(row, error=res.error))
    columns = list(dict.fromkeys(k for r in rows for k in r)) + ["source_url"]
    write_csv(out / "failures.csv", failed, columns + ["error"])
    if not kept:
        raise ManifestError(
            f"none of the {len(rows)} images could be downloaded (first error: "
            f"{failed[0]['error'] if failed else 'none'}); see "
            f"{out / 'failures.csv'}"
        )
    return write_csv(out / "manifest.csv", kept, ["path"] + columns, for_people=False)


def fetch_urls(
    manifest: str | Path,
    out: str | Path,
    *,
    url_col: str = "accessURI",
    size: int | None = None,
    workers: int = 4,
    progress: bool = True,
) -> Path:
    """Download the images of a CSV with a URL column; every other column is carried."""
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ManifestError(f"{manifest}: no rows")
    if url_col not in rows[0]:
        raise ManifestError(
            f"{manifest}: no column {url_col!r} (columns: {', '.join(rows[0])}); fix --url-col"
        )
    rows = [r for r in rows if r[url_col].strip()]
    return _download_rows(rows, Path(out), url_col, size, workers, progress)


def _matches(row: dict, expr: str) -> bool:
    m = re.fullmatch(r"\s*(\w+)\s+(in|not in)\s*\((.*)\)\s*", expr) or re.fullmatch(
        r"\s*(\w+)\s*(==|!=)\s*(.*?)\s*", expr
    )
    if not m:
        raise ParameterError(
            f'filter must look like "family in (A,B)" or "country == Canada"; got {expr!r}'
        )
    col, op, value = m.groups()
    got = row.get(col, "")
    if op in ("in", "not in"):
        inside = got in [v.strip().strip("'\"") for v in value.split(",")]
        return inside if op == "in" else not inside
    return (got == value.strip("'\"")) == (op == "==")


def fetch_dwca(
    archive: str | Path,
    out: str | Path,
    *,
    label_col: str | None = None,
    filter: str | None = None,
    max_per_class: int | None = None,
    all_images: bool = False,
    size: int | None = None,
    seed: int = 0,
    workers: int = 4,
    progress: bool = True,
) -> tuple[Path, list[str]]:
    """Download the images of a Darwin Core archive; returns (manifest, reading problems)."""
    rows, problems = read_dwca(archive, one_per_specimen=not all_images)
    if filter:
        rows = [r for r in rows if _matches(r, filter)]
    if label_col:
        missing = [r for r in rows if not r.get(label_col)]
        if len(missing) == len(rows):
            raise ManifestError(
                f"{archive}: no row has a {label_col!r} value; choose another --label-col"
            )
        rows = [r for r in rows if r.get(label_col)]
        if max_per_class:
            by: dict[str, list[dict]] = defaultdict(list)
            for r in rows:
                by[r[label_col]].append(r)
            rng = random.Random(seed)
            rows = [
                r
                for k in sorted(by)
                for r in (rng.sample(by[k], max_per_class) if len(by[k]) > max_per_class else by[k])
            ]
    if not rows:
        raise ManifestError(f"{archive}: no images left after the filter")
    return _download_rows(rows, Path(out), "url", size, workers, progress), problems


def fetch_smithsonian_mercury(
    out: str | Path,
    *,
    base_url: str = FIGSHARE_FILES,
    sizes: dict | None = None,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Download, verify and extract the two figshare tarballs; write a barcode/stain manifest."""
    out = Path(out)
    sizes = {k: v[2] for k, v in MERCURY.items()} if sizes is None else sizes
    items = [
        (f"{base_url.rstrip('/')}/{fid}", f"downloads/{stain}.tar.gz")
        for stain, (_, fid, _) in MERCURY.items()
    ]
    results = download_all(
        items,
        out,
        workers=workers,
        content_types=None,
        max_bytes=4 << 30,
        timeout=120,
        progress=progress,
    )
    rows = []
    for (stain, _), res in zip(MERCURY.items(), results):
        if not res.ok:
            raise ManifestError(f"{res.url}: {res.error}; run the same command again to resume")
        want, got = sizes.get(stain), res.path.stat().st_size
        if want is not None and got != want:
            res.path.unlink()
            raise ManifestError(
                f"{res.url}: {got:,} bytes, expected {want:,}; deleted, run "
                "again to download it anew"
            )
        for f in safe_extract(res.path, out / "images" / stain):
            m = re.search(r"(\d{8})", f.stem)
            if f.suffix.lower() in IMAGE_EXT and m:
                rows.append(
                    {
                        "barcode": m.group(1),
                        "stain": stain,
                        "path": f.relative_to(out).as_posix(),
                        "source_url": res.url,
                        "license": f"see figshare article {MERCURY[stain][0]}",
                        "rightsHolder": "Smithsonian Institution, Department of Botany",
                    }
                )
    if not rows:
        raise ManifestError(f"{out}: the tarballs held no images named by 8-digit barcode")
    rows.sort(key=lambda r: (r["stain"], r["barcode"]))
    return write_csv(out / "manifest.csv", rows, list(rows[0]), for_people=False)
