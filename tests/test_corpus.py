"""A corpus of malformed inputs run through every command: each entry ends as a result or as one
error row naming the file, no job ends early, and the counts add up to the number of inputs."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_sheet
from PIL import Image
from typer.testing import CliRunner

from herbscan.cli import app
from herbscan.images import IMAGE_SUFFIXES, open_rgb

HUGE = (9000, 10000)  # 90 MP: above Pillow's own 89.5 MP warning, below herbscan's limit


def _png_with_size(w: int, h: int) -> bytes:
    """A tiny valid PNG whose header claims w×h (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length, b"IHDR", fields, crc
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus into `root`; returns {entry name: "ok" | "error" | "skipped"}."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    exp: dict[str, str] = {}

    def sheet(dotted=False, size=(96, 144)):
        return make_sheet(rng, dotted, size)

    def ok(name, im, **kw):
        im.save(root / name, **kw)
        exp[name] = "ok"

    ok("good.jpg", sheet(True), quality=90)
    ok("good.png", sheet())
    ok("good.tif", sheet(True))
    ok("cmyk.jpg", sheet().convert("CMYK"))
    ok("grey16.png", Image.fromarray(np.asarray(sheet().convert("L"), np.uint16) * 257))
    ok("palette.png", sheet(True).convert("P"))
    rgba = sheet().convert("RGBA")
    rgba.putalpha(128)
    ok("alpha.png", rgba)
    exif = Image.Exif()
    exif[0x0112] = 6
    ok("rotated.jpg", sheet(True, (144, 96)), exif=exif)
    pages = [sheet(), sheet(True)]
    pages[0].save(root / "multipage.tif", save_all=True, append_images=pages[1:])
    exp["multipage.tif"] = "ok"
    ok("sheet.webp", sheet(True))
    ok("sheet.bmp", sheet())
    if ".jp2" in IMAGE_SUFFIXES:
        ok("sheet.jp2", sheet(True))
    buf = io.BytesIO()
    sheet().save(buf, "PNG")
    (root / "png_named.jpg").write_bytes(buf.getvalue())  # wrong extension
    exp["png_named.jpg"] = "ok"
    for odd in ("=HYPERLINK(1).jpg", "-minus.jpg", "ünï cödé #1.jpg"):
        ok(odd, sheet(True), quality=85)
    Image.new("RGB", HUGE, (228, 226, 215)).save(root / "huge_legal.jpg", quality=60)
    exp["huge_legal.jpg"] = "ok"

    good = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "zero.jpg").write_bytes(b"")
    (root / "bomb.png").write_bytes(_png_with_size(100_000, 100_000))
    png = bytearray((root / "good.png").read_bytes())
    idat = png.index(b"IDAT")
    png[idat + 20 : idat + 40] = bytes(20)  # a corrupt chunk
    (root / "corrupt_chunk.png").write_bytes(bytes(png))
    exp.update({n: "error" for n in ("truncated.jpg", "zero.jpg", "bomb.png", "corrupt_chunk.png")})

    (root / "notes.txt").write_text("not a sheet\n")
    (root / ".DS_Store").write_bytes(b"\0\0")
    (root / "folder.jpg").mkdir()
    os.symlink(root / "gone_target.jpg", root / "dangling.jpg")
    exp.update({n: "skipped" for n in ("notes.txt", ".DS_Store", "folder.jpg", "dangling.jpg")})
    return exp


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus") / "sheets"
    return root, make_corpus(root)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, corpus) -> tuple[Path, Path]:
    """A labelled manifest of the whole corpus (bad files included), split and trained."""
    root, exp = corpus
    work = tmp_path_factory.mktemp("work")
    names = sorted(n for n, e in exp.items() if e != "skipped" or n == "dangling.jpg")
    manifest = work / "sheets.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "recordedBy"])
        for i, n in enumerate(names):
            w.writerow([f"sheets/{n}", ("clean", "contaminated")[i % 2], "=cmd|' /C calc'!A0"])
    (work / "sheets").symlink_to(root)
    os.environ["HERBSCAN_CACHE"] = str(work / "cache")
    from herbscan.manifest import split
    from herbscan.train import train

    with pytest.warns(UserWarning, match="do not exist"):  # the dangling link
        data, _ = split(manifest, work / "data.csv", path_col="file", seed=0)
    run = train(
        data,
        work / "run",
        model="herbnet_small",
        size=64,
        epochs=1,
        workers=2,
        progress=False,
        precision="fp32",
    )
    return data, run


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return result


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [c for row in csv.reader(f) for c in row]


def _outcome(error: str) -> str:
    return "error" if error else "ok"


def test_open_rgb_reads_every_readable_entry(corpus):
    root, exp = corpus
    for name, e in exp.items():
        if e == "ok":
            im = open_rgb(root / name, min_size=(64, 64))
            assert im.mode == "RGB" and min(im.size) >= 64, name


def test_predict_accounts_for_every_entry(corpus, corpus_run, tmp_path):
    root, exp = corpus
    _, run = corpus_run
    out = tmp_path / "p.csv"
    _invoke(
        "predict",
        str(run),
        str(root),
        str(root / "missing.jpg"),
        "--out",
        str(out),
        "--workers",
        "2",
    )
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    assert set(rows) == set(exp) | {"missing.jpg"}
    for name, e in exp.items():
        assert _outcome(rows[name]["error"]) == ("ok" if e == "ok" else "error"), name
        if e != "ok":
            assert name in rows[name]["error"]
    assert "no such file" in rows["missing.jpg"]["error"]
    assert "broken symbolic link" in rows["dangling.jpg"]["error"]
    assert "exceeds the limit" in rows["bomb.png"]["error"]
    # the odd file names are neutralised in the CSV only where they start a cell
    raw = out.read_text(encoding="utf-8")
    assert "\n=" not in raw and ",=" not in raw


def test_a_lower_pixel_limit_turns_a_large_sheet_into_an_error_row(corpus, corpus_run, tmp_path):
    root, _ = corpus
    _, run = corpus_run
    out = tmp_path / "p.csv"
    try:
        _invoke(
            "--max-pixels",
            "50e6",
            "predict",
            str(run),
            str(root / "huge_legal.jpg"),
            str(root / "good.jpg"),
            "--out",
            str(out),
        )
    finally:
        os.environ.pop("HERBSCAN_MAX_PIXELS", None)
    rows = _rows(out)
    assert "exceeds the limit of 50,000,000" in rows[0]["error"]
    assert rows[1]["error"] == ""


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_screen_accounts_for_every_entry(corpus, corpus_run, tmp_path, engine):
    if engine == "dask":
        pytest.importorskip("distributed")
    root, exp = corpus
    _, run = corpus_run
    out = tmp_path / "screen"
    args = ["screen", str(run), str(root), "--out", str(out), "--shard-size", "5"]
    args += ["--dask", "local:1"] if engine == "dask" else ["--workers", "2"]
    result = _invoke(*args)
    summary = json.loads((out / "screen.json").read_text())
    n_ok = sum(e == "ok" for e in exp.values())
    n_err = sum(e == "error" for e in exp.values())
    n_skip = sum(e == "skipped" for e in exp.values())
    assert summary["screened"] == n_ok + n_err and summary["failed"] == n_err
    assert summary["skipped"] == n_skip
    assert summary["screened"] + summary["skipped"] == len(exp)
    assert f"{n_skip} folder entries skipped" in result.output
    skipped = {Path(r["path"]).name for r in _rows(out / "skipped.csv")}
    assert skipped == {n for n, e in exp.items() if e == "skipped"}


def test_evaluate_and_tiles_account_for_every_row(corpus, corpus_run, tmp_path):
    _, exp = corpus
    data, run = corpus_run
    m = json.loads((Path(run) / "run.json").read_text())
    rows = _rows(data)
    n_train = sum(r["split"] == "train" for r in rows)
    skipped_train = _rows(Path(run) / "skipped.csv")
    assert m["training"]["n_train"] + sum(r["split"] == "train" for r in skipped_train) == n_train
    out = tmp_path / "eval"
    _invoke("evaluate", str(run), "--split", "train", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] + metrics["n_skipped"] == n_train
    # the manifest's hostile metadata never reaches a people CSV as a formula
    for f in (out / "predictions.csv", out / "eval_skipped.csv"):
        assert not any(c.startswith("=") for c in _cells(f))
    tiles = tmp_path / "tiles"
    _invoke("tiles", str(data), "--out", str(tiles), "--scale", "0.25", "--tile-size", "32")
    s = json.loads((tiles / "summary.json").read_text())
    assert s["sheets"] + s["failed"] == len(rows)
    assert s["failed"] == sum(exp[Path(r["file"]).name] != "ok" for r in rows)


def test_transcribe_accounts_for_every_entry(corpus, tmp_path):
    import shutil

    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed")
    root, exp = corpus
    out = tmp_path / "labels.csv"
    result = _invoke("transcribe", str(root), "--out", str(out), "--workers", "2")
    skipped = {n for n, e in exp.items() if e == "skipped"}
    assert f"{len(skipped)} folder entries are not images" in result.output
    assert {Path(r["path"]).name for r in _rows(tmp_path / "labels.skipped.csv")} == skipped
    rows = {Path(r["file"]).name: r for r in _rows(out)}
    readable = {n for n, e in exp.items() if e != "skipped"}
    assert set(rows) == readable
    for name in readable:
        assert bool(rows[name].get("error")) == (exp[name] == "error"), name
