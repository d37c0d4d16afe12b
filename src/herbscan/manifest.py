"""Reading sources into a Manifest and splitting it by specimen.

A source is a folder with one subfolder per class, or a CSV/TSV manifest whose path column is
resolved against the manifest's own folder. A Manifest keeps every input column untouched and
knows which columns hold the image path, the label and the specimen id.

Splitting is stratified by label and grouped by specimen, so that all images of one specimen land
in the same split. Classes with fewer than 3 specimens cannot be present in train, validation and
test at once: by default that is an error naming the class (`rare="error"`); `rare="train"` keeps
them in train only with a warning, `rare="drop"` removes them with a warning.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from herbscan.errors import ManifestError, ParameterError, check_choice, check_range
from herbscan.fileio import atomic_path, write_csv
from herbscan.images import is_image_file, scan_folder

SPLITS = ("train", "validation", "test")
PATH_COLUMNS = ("path", "file", "filename", "image", "accessURI")
LABEL_COLUMNS = ("label",)
GROUP_COLUMNS = ("specimen_id", "catalogNumber", "catalog_number", "barcode")
RARE = ("error", "train", "drop")
# Columns herbscan adds to a split manifest so `train` needs no column flags afterwards.
OUT_PATH, OUT_LABEL, OUT_GROUP, OUT_SPLIT = "path", "label", "specimen_id", "split"


@dataclass
class Manifest:
    """Rows of a source plus which columns mean what; `root` resolves relative paths."""

    rows: list[dict[str, str]]
    columns: list[str]
    root: Path
    path_col: str
    label_col: str | None = None
    group_col: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, row: dict[str, str]) -> Path:
        raw = row[self.path_col].strip()
        if "\\" in raw and os.sep == "/":  # a Windows path in a manifest made on Windows
            raw = raw.replace("\\", "/")
        p = Path(raw)
        return p if p.is_absolute() else self.root / p

    def label(self, row: dict[str, str]) -> str:
        if self.label_col is None:
            raise ManifestError(f"{self.source}: no label column; pass --label-col")
        return row[self.label_col].strip()

    def specimen(self, row: dict[str, str]) -> str:
        """Specimen id (the group col), or the image path when no group column is known."""
        if self.group_col and row.get(self.group_col, "").strip():
            return row[self.group_col].strip()
        return str(self.path(row))

    def paths(self) -> list[Path]:
        return [self.path(r) for r in self.rows]

    def outside_paths(self) -> list[str]:
        """Image paths as written that are absolute or lead out of the manifest's folder."""
        return outside_paths([r[self.path_col] for r in self.rows], self.root)

    def labels(self) -> list[str]:
        return [self.label(r) for r in self.rows]

    def has_split(self) -> bool:
        return OUT_SPLIT in self.columns

    def subset(self, split: str | None) -> Manifest:
        """Rows of one split (all rows when `split` is None or there is no split column)."""
        if split is None or not self.has_split():
            return self
        check_choice("split", split, SPLITS)
        rows = [r for r in self.rows if r.get(OUT_SPLIT) == split]
        return Manifest(
            rows,
            self.columns,
            self.root,
            self.path_col,
            self.label_col,
            self.group_col,
            self.source,
        )


def read_source(
    source: str | Path,
    *,
    label_col: str | None = None,
    path_col: str | None = None,
    group_col: str | None = None,
    require_label: bool = True,
    refuse_outside_paths: bool = False,
) -> Manifest:
    """Read a class-folder tree or a CSV/TSV manifest into a Manifest.

    Absolute paths and paths leading out of the manifest's folder are followed (see
    `Manifest.outside_paths`); `refuse_outside_paths` makes them an error, for manifests from
    others whose reports will be shared.
    """
    source = Path(source)
    if source.is_dir():
        return _read_folder(source)
    if not source.is_file():
        raise ManifestError(
            f"{source}: no such file or folder; give a folder with one subfolder "
            "per class or a CSV/TSV manifest"
        )
    m = _read_table(
        source,
        label_col=label_col,
        path_col=path_col,
        group_col=group_col,
        require_label=require_label,
    )
    check_outside(m.outside_paths(), source, refuse_outside_paths)
    return m


def _read_folder(folder: Path) -> Manifest:
    rows, skipped = [], []
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    for cls in classes:
        found = scan_folder(cls)
        skipped += found.skipped
        for f in found.images:
            rel = f.relative_to(folder).as_posix()
            rows.append({OUT_PATH: rel, OUT_LABEL: cls.name, OUT_GROUP: rel})
    if skipped:
        warnings.warn(
            f"{folder}: {len(skipped)} entries are not images herbscan reads and are "
            f"left out (first: {skipped[0][0]}: {skipped[0][1]})",
            stacklevel=3,
        )
    if not rows:
        raise ManifestError(
            f"{folder}: no images found in class subfolders (expected e.g. "
            f"{folder}/clean/*.jpg and {folder}/contaminated/*.jpg)"
        )
    empty = [c.name for c in classes if not any(r[OUT_LABEL] == c.name for r in rows)]
    if empty:
        raise ManifestError(
            f"{folder}: class folder(s) {', '.join(empty)} hold no images; add "
            "images or remove the folder"
        )
    return Manifest(
        rows, [OUT_PATH, OUT_LABEL, OUT_GROUP], folder, OUT_PATH, OUT_LABEL, OUT_GROUP, str(folder)
    )


def _dialect(path: Path, head: str) -> str:
    first = head.splitlines()[0] if head else ""
    if path.suffix.lower() in (".tsv", ".tab") or first.count("\t") > first.count(","):
        return "\t"
    if first.count(";") > first.count(","):  # spreadsheet export in a comma-decimal locale
        return ";"
    return ","


def _pick(
    name: str | None,
    candidates: tuple[str, ...],
    columns: list[str],
    source: Path,
    flag: str,
    required: bool,
) -> str | None:
    if name is not None:
        if name not in columns:
            raise ManifestError(
                f"{source}: no column {name!r} (columns: {', '.join(columns)}); fix {flag}"
            )
        return name
    for c in candidates:
        if c in columns:
            return c
    if required:
        raise ManifestError(
            f"{source}: none of the columns {', '.join(columns)} is a known "
            f"{flag[2:].replace('-col', '')} column; pass {flag}"
        )
    return None


def _read_table(path: Path, *, label_col, path_col, group_col, require_label) -> Manifest:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            head = f.read(4096)
            f.seek(0)
            reader = csv.DictReader(f, delimiter=_dialect(path, head))
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; save the manifest as UTF-8 CSV") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: malformed CSV ({e}); fix the file") from None
    if not columns:
        raise ManifestError(f"{path}: empty manifest; it needs a header row and one row per image")
    pcol = _pick(path_col, PATH_COLUMNS, columns, path, "--path-col", True)
    lcol = _pick(label_col, LABEL_COLUMNS, columns, path, "--label-col", require_label)
    gcol = _pick(group_col, GROUP_COLUMNS, columns, path, "--group-col", False)
    bad = [i + 2 for i, r in enumerate(rows) if not (r.get(pcol) or "").strip()]
    if bad:
        raise ManifestError(f"{path}: empty {pcol!r} on line(s) {_few(bad)}; fill or delete them")
    if lcol:
        bad = [i + 2 for i, r in enumerate(rows) if not (r.get(lcol) or "").strip()]
        if bad:
            raise ManifestError(
                f"{path}: empty label {lcol!r} on line(s) {_few(bad)}; fill or delete them"
            )
    for r in rows:  # DictReader gives None for missing trailing cells
        for c in columns:
            if r.get(c) is None:
                r[c] = ""
        r.pop(None, None)
    if not rows:
        raise ManifestError(f"{path}: the manifest has a header but no rows")
    return Manifest(rows, columns, path.parent.resolve(), pcol, lcol, gcol, str(path))


def outside_paths(paths: list[str], root: Path) -> list[str]:
    """Paths (as written) that are absolute or whose `..` steps lead out of `root`."""
    out = []
    for raw in paths:
        text = raw.strip().replace("\\", "/")
        if (
            Path(text).is_absolute()
            or text[1:3] == ":/"
            or not os.path.normpath(os.path.join(root, text)).startswith(
                os.path.join(os.path.normpath(root), "")
            )
        ):
            out.append(raw)
    return out


def check_outside(paths: list[str], source: str | Path, refuse: bool) -> list[str]:
    """The outside paths of a source; with `refuse`, an error naming them instead."""
    if refuse and paths:
        raise ManifestError(
            f"{source}: {len(paths)} image path(s) are absolute or lead out of "
            f"its folder (first: {paths[0]}); with --refuse-outside-paths every "
            "path must be relative and stay inside the manifest's folder"
        )
    return paths


def _few(items: list, n: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def split_manifest(
    manifest: Manifest,
    *,
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    rare: str = "error",
    linked: dict[str, str] | None = None,
) -> Manifest:
    """Assign each specimen to train/validation/test, stratified by label, deterministic by seed.

    Returns a new Manifest whose rows carry `split`; with `rare` as in the module docstring.
    `linked` maps specimen ids to a group id: specimens of one group share a split (near-
    duplicate images under different ids).
    """
    linked = linked or {}

    def unit(r: dict) -> str:
        s = manifest.specimen(r)
        return linked.get(s, s)

    check_choice("rare", rare, RARE)
    _check_paths(manifest)
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3:
        raise ParameterError(f"ratios must be three numbers train,validation,test; got {ratios}")
    for name, r in zip(SPLITS, ratios):
        check_range(f"ratios ({name})", r, 0.0, 1.0)
    if abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ParameterError(f"ratios must sum to 1 with a positive train share; got {ratios}")

    specimen_label: dict[str, str] = {}
    votes: dict[str, Counter] = defaultdict(Counter)
    for r in manifest.rows:
        votes[unit(r)][manifest.label(r)] += 1
    mixed = [s for s, c in votes.items() if len(c) > 1]
    if mixed:
        warnings.warn(
            f"{len(mixed)} specimen(s) have images with different labels (e.g. "
            f"{mixed[0]!r}); each specimen is stratified under its most common label",
            stacklevel=2,
        )
    for s, c in votes.items():
        specimen_label[s] = min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    by_label: dict[str, list[str]] = defaultdict(list)
    for s in sorted(specimen_label):
        by_label[specimen_label[s]].append(s)

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    dropped: set[str] = set()
    for label in sorted(by_label):
        specimens = by_label[label]
        n = len(specimens)
        need = sum(1 for r in ratios if r > 0)
        if n < need:
            msg = (
                f"class {label!r} has {n} specimen(s), fewer than the {need} needed to appear "
                "in every split"
            )
            if rare == "error":
                raise ManifestError(
                    f"{manifest.source}: {msg}; add specimens, remove the class, "
                    "or pass --rare train (keep it in train only) or --rare drop"
                )
            if rare == "drop":
                warnings.warn(f"{msg}; dropped", stacklevel=2)
                dropped.add(label)
                continue
            warnings.warn(f"{msg}; kept in train only", stacklevel=2)
            for s in specimens:
                assignment[s] = "train"
            continue
        order = [specimens[i] for i in rng.permutation(n)]
        counts = _allocate(n, ratios)
        start = 0
        for name, k in zip(SPLITS, counts):
            for s in order[start : start + k]:
                assignment[s] = name
            start += k

    rows = []
    for r in manifest.rows:
        if manifest.label(r) in dropped:
            continue
        out = dict(r)
        out[OUT_SPLIT] = assignment[unit(r)]
        rows.append(out)
    columns = list(manifest.columns) + [c for c in (OUT_SPLIT,) if c not in manifest.columns]
    return Manifest(
        rows,
        columns,
        manifest.root,
        manifest.path_col,
        manifest.label_col,
        manifest.group_col,
        manifest.source,
    )


def _check_paths(m: Manifest) -> None:
    """Refuse duplicate images (they would leak between splits) and a manifest whose images are
    not where it says; warn when only some are missing."""
    seen: dict[Path, tuple[int, Path]] = {}
    dups = []
    for i, p in enumerate(m.paths()):
        rp = p.resolve()
        if rp in seen:
            dups.append(f"{p} (lines {seen[rp][0] + 2} and {i + 2})")
        seen.setdefault(rp, (i, p))
    if dups:
        raise ManifestError(
            f"{m.source}: the same image is listed more than once: "
            f"{_few(dups, 3)}; remove the duplicate rows"
        )
    missing = [str(p) for _, p in seen.values() if not p.is_file()]  # as written, not resolved
    if missing and len(missing) == len(seen):
        raise ManifestError(
            f"{m.source}: none of the {len(seen)} image paths exists (first: "
            f"{missing[0]}); check --path-col and that paths are relative to the "
            "manifest's folder"
        )
    if missing:
        warnings.warn(
            f"{m.source}: {len(missing)} of {len(seen)} images do not exist (e.g. "
            f"{missing[0]}); they will be skipped when training",
            stacklevel=3,
        )


def _allocate(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Split n items by ratios (largest remainder), giving each positive ratio at least one."""
    exact = [n * r for r in ratios]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(ratios)), key=lambda i: exact[i] - counts[i], reverse=True):
        if sum(counts) == n:
            break
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts


def split_counts(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Images per class per split: {label: {"train": n, "validation": n, "test": n}}."""
    table: dict[str, dict[str, int]] = {}
    for r in manifest.rows:
        row = table.setdefault(manifest.label(r), dict.fromkeys(SPLITS, 0))
        row[r.get(OUT_SPLIT, "train")] += 1
    return dict(sorted(table.items()))


def write_manifest(manifest: Manifest, out: str | Path) -> Path:
    """Write the manifest as CSV, atomically, with herbscan's columns added.

    Every input column is kept as it was; `path` (resolved relative to the output's folder so the
    CSV works wherever it is written), `label`, `specimen_id` and `split` are added or updated,
    so `herbscan train` needs no column flags afterwards.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    chosen = {
        OUT_PATH: (manifest.path_col, "--path-col"),
        OUT_LABEL: (manifest.label_col, "--label-col"),
        OUT_GROUP: (manifest.group_col, "--group-col"),
    }
    for col, (src, flag) in chosen.items():
        if col in manifest.columns and src not in (None, col):
            raise ManifestError(
                f"{manifest.source}: column {col!r} would be overwritten by the "
                f"{flag} column {src!r}; rename {col!r} in the manifest"
            )
    columns = list(manifest.columns)
    for col in (OUT_PATH, OUT_LABEL, OUT_GROUP, OUT_SPLIT):
        if col not in columns and (col != OUT_LABEL or manifest.label_col):
            if col == OUT_SPLIT and not manifest.has_split():
                continue
            columns.append(col)
    rows = []
    for r in manifest.rows:
        o = dict(r)
        o[OUT_PATH] = _relative(manifest.path(r), base)
        if manifest.label_col:
            o[OUT_LABEL] = manifest.label(r)
        o[OUT_GROUP] = manifest.specimen(r) if manifest.group_col else o[OUT_PATH]
        rows.append(o)
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return out


def _relative(path: Path, base: Path) -> str:
    """Relative to `base` when the image lies below it, else absolute (survives moving the CSV)."""
    path = path.resolve()
    return (path.relative_to(base) if path.is_relative_to(base) else path).as_posix()


def split(
    source: str | Path,
    out: str | Path,
    *,
    label_col: str | None = None,
    group_col: str | None = None,
    path_col: str | None = None,
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 0,
    rare: str = "error",
    refuse_outside_paths: bool = False,
    near_duplicates: str = "warn",
) -> tuple[Path, dict[str, dict[str, int]]]:
    """Read a source, split it by specimen and write the split manifest; returns (path, counts).

    `near_duplicates`: images under different specimen ids that are near-identical (perceptual
    hash, `herbscan.neardup`) would put one sheet in training and test. "warn" keeps each such
    group in one split, says so and lists the pairs in `<out>.near_duplicates.csv`; "error"
    refuses; "off" does not look (no image is decoded).
    """
    check_choice("near_duplicates", near_duplicates, NEAR_DUPLICATES)
    m = read_source(
        source,
        label_col=label_col,
        group_col=group_col,
        path_col=path_col,
        refuse_outside_paths=refuse_outside_paths,
    )
    linked = None
    if near_duplicates != "off":
        linked = _near_duplicate_groups(m, out, near_duplicates == "error")
    s = split_manifest(m, ratios=ratios, seed=seed, rare=rare, linked=linked)
    return write_manifest(s, out), split_counts(s)


NEAR_DUPLICATES = ("warn", "error", "off")


def _near_duplicate_groups(m: Manifest, out: str | Path, refuse: bool) -> dict[str, str]:
    from herbscan.neardup import linked_groups, pairs_across

    paths = m.paths()
    keys = [m.specimen(r) for r in m.rows]
    cross = pairs_across(paths, keys)
    if not cross:
        return {}
    i, j, _, sim = cross[0]
    example = f"e.g. {paths[i]} and {paths[j]}, correlation {sim:.2f}"
    if refuse:
        raise ManifestError(
            f"{m.source}: {len(cross)} pair(s) of near-identical images under different "
            f"specimen ids ({example}); give them one specimen id, remove the copies, or pass "
            "--near-duplicates warn to keep each group in one split"
        )
    report = Path(str(out) + ".near_duplicates.csv")
    fields = ["path_a", "specimen_a", "path_b", "specimen_b", "hash_bits_apart", "similarity"]
    rows = [
        dict(zip(fields, (str(paths[a]), keys[a], str(paths[b]), keys[b], d, s)))
        for a, b, d, s in cross
    ]
    write_csv(report, rows, fields)
    warnings.warn(
        f"{len(cross)} pair(s) of near-identical images under different specimen ids "
        f"({example}); each group is kept in one split (list: {report})",
        stacklevel=3,
    )
    return linked_groups(keys, cross)


class Inputs(NamedTuple):
    """What a screen or transcription reads: rows {path, specimen_id, …metadata}, the metadata
    column names, folder entries left out with their reasons, and paths outside the source."""

    rows: list[dict]
    extra: list[str]
    skipped: list[tuple[str, str]]
    outside: list[str]

    def write_skipped(self, path: str | Path) -> Path:
        """The folder entries left out, with their reasons, as a CSV for people."""
        rows = [{"path": p, "reason": why} for p, why in self.skipped]
        return write_csv(path, rows, ["path", "reason"])


def read_inputs(
    source: str | Path,
    *,
    path_col: str | None = None,
    group_col: str | None = None,
    refuse_outside_paths: bool = False,
) -> Inputs:
    """The sheets of a folder, a list of paths, a manifest or one image, every entry counted."""
    source = Path(source)
    if source.is_dir():
        found = scan_folder(source)
        if not found.images:
            why = (
                f" ({len(found.skipped)} entries, none readable: first {found.skipped[0][0]}: "
                f"{found.skipped[0][1]})"
                if found.skipped
                else ""
            )
            raise ManifestError(f"{source}: no images in this folder or below it{why}")
        return Inputs(
            [{"path": str(f), "specimen_id": f.stem} for f in found.images],
            [],
            [(str(p), why) for p, why in found.skipped],
            [],
        )
    if not source.is_file():
        raise ManifestError(
            f"{source}: no such file or folder; give a folder of images, a text "
            "file of paths or a CSV/TSV manifest"
        )
    if is_image_file(source):  # one sheet
        return Inputs([{"path": str(source), "specimen_id": source.stem}], [], [], [])
    if source.suffix.lower() in (".txt", ".lst"):
        try:
            text = source.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ManifestError(
                f"{source}: not UTF-8 text; save the list of paths as UTF-8"
            ) from None
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        outside = check_outside(
            outside_paths(lines, source.parent.resolve()), source, refuse_outside_paths
        )
        paths = [Path(ln) if Path(ln).is_absolute() else source.parent / ln for ln in lines]
        return Inputs([{"path": str(p), "specimen_id": p.stem} for p in paths], [], [], outside)
    m = read_source(
        source,
        path_col=path_col,
        group_col=group_col,
        require_label=False,
        refuse_outside_paths=refuse_outside_paths,
    )
    extra = [c for c in m.columns if c not in ("path", "specimen_id")]
    rows = [
        {"path": str(m.path(r)), "specimen_id": m.specimen(r), **{c: r.get(c, "") for c in extra}}
        for r in m.rows
    ]
    return Inputs(rows, extra, [], m.outside_paths())


def seen_in_training(data: str | Path | None, rows: list[dict]) -> list[str] | None:
    """Paths of `rows` ({path, specimen_id}) that were training or validation sheets of the
    split manifest `data` (same file, or same specimen id when it has a specimen column): scores
    on them are optimistic. None when `data` cannot be read."""
    if not data or not Path(data).is_file():
        return None
    try:
        m = read_source(data, require_label=False)
    except ManifestError:
        return None
    used = [r for r in m.rows if r.get(OUT_SPLIT) in ("train", "validation")]
    paths = {str(m.path(r).resolve()) for r in used}
    specimens = {m.specimen(r) for r in used} if m.group_col else set()
    return [
        r["path"]
        for r in rows
        if str(Path(r["path"]).resolve()) in paths or r.get("specimen_id") in specimens
    ]
