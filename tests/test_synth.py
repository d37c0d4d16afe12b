"""Tests for herbscan.synth: synthetic sheets and collections."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from herbscan.errors import ParameterError
from herbscan.synth import MANIFEST_COLUMNS, make_collection, make_sheet

TINY = (192, 288)
CONFUSERS = {"dirt", "foxing", "ink", "pencil", "dust", "tideline"}


def _sheet(seed: int, **kwargs):
    return make_sheet(np.random.default_rng(seed), **kwargs)


def _dark_grey(img: Image.Image) -> int:
    """Pixels that are dark and nearly colourless, like mercury speckles."""
    a = np.asarray(img, dtype=np.int16)
    hi, lo = a.max(axis=2), a.min(axis=2)
    return int(((hi < 110) & (hi - lo < 30)).sum())


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sheet_has_requested_size_and_mode():
    img, info = _sheet(0, stained=False)
    assert img.size == (768, 1152) and img.mode == "RGB"
    img, info = _sheet(0, stained=True, size=(300, 450))
    assert img.size == (300, 450) and img.mode == "RGB"
    assert set(info) == {"stained", "severity", "confusers"}
    assert info["stained"] is True and 0.0 <= info["severity"] <= 1.0


def test_clean_sheet_has_zero_severity_and_given_severity_is_kept():
    _, clean = _sheet(1, stained=False, size=TINY)
    assert clean["stained"] is False and clean["severity"] == 0.0
    _, stained = _sheet(1, stained=True, severity=0.42, size=TINY)
    assert stained["severity"] == pytest.approx(0.42)


def test_sheet_is_deterministic_for_a_seed():
    a, info_a = _sheet(7, stained=True, size=TINY)
    b, info_b = _sheet(7, stained=True, size=TINY)
    c, _ = _sheet(8, stained=True, size=TINY)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert info_a == info_b
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_stained_and_clean_sheet_of_one_seed_share_the_layout():
    clean, info_c = _sheet(3, stained=False, size=TINY)
    stained, info_s = _sheet(3, stained=True, severity=0.8, size=TINY)
    assert info_c["confusers"] == info_s["confusers"]
    diff = np.abs(np.asarray(clean, dtype=np.int16) - np.asarray(stained, dtype=np.int16))
    assert 0 < (diff.max(axis=2) > 0).mean() < 0.9  # the stain changes part of the sheet only


def test_stained_sheets_have_more_dark_grey_pixels():
    seeds = range(5)
    clean = [_dark_grey(_sheet(s, stained=False, size=(384, 576))[0]) for s in seeds]
    stained = [_dark_grey(_sheet(s, stained=True, severity=0.6, size=(384, 576))[0]) for s in seeds]
    assert all(st >= cl for st, cl in zip(stained, clean))
    assert np.mean(stained) > 1.5 * np.mean(clean) + 100


def test_severity_controls_how_much_stain_there_is():
    def added(seed, severity):
        stained = _dark_grey(_sheet(seed, stained=True, severity=severity, size=(384, 576))[0])
        return stained - _dark_grey(_sheet(seed, stained=False, size=(384, 576))[0])

    faint = np.mean([added(s, 0.1) for s in range(4)])
    heavy = np.mean([added(s, 1.0) for s in range(4)])
    assert heavy > 2 * faint > 0


def test_confusers_appear_on_clean_and_stained_sheets():
    clean = [_sheet(s, stained=False, size=TINY)[1]["confusers"] for s in range(20)]
    stained = [_sheet(s, stained=True, size=TINY)[1]["confusers"] for s in range(100, 120)]
    assert sum(bool(c) for c in clean) >= 5
    assert sum(bool(c) for c in stained) >= 5
    seen = {name for names in clean + stained for name in names}
    assert seen <= CONFUSERS and len(seen) >= 3


def test_make_collection_writes_manifest_and_images(tmp_path):
    manifest = make_collection(
        tmp_path / "coll",
        n_specimens=12,
        stained_fraction=0.5,
        duplicate_fraction=0.25,
        size=TINY,
        seed=3,
    )
    assert manifest == tmp_path / "coll" / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(MANIFEST_COLUMNS)
    rows = _read_manifest(manifest)
    assert len(rows) == 12 + 3
    for row in rows:
        path = manifest.parent / row["path"]
        assert "\\" not in row["path"] and row["path"].split("/")[0] == row["label"]
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == TINY
        assert row["synthetic"] == "true"
        assert row["catalogNumber"].startswith("HS") and len(row["catalogNumber"]) == 8
        severity = float(row["severity"])
        assert (severity == 0.0) if row["label"] == "clean" else (0.0 < severity <= 1.0)
    specimens = {r["catalogNumber"]: r["label"] for r in rows}
    assert len(specimens) == 12
    assert Counter(specimens.values()) == {"clean": 6, "contaminated": 6}
    by_specimen = Counter(r["catalogNumber"] for r in rows)
    duplicated = [c for c, n in by_specimen.items() if n == 2]
    assert len(duplicated) == 3
    for cat in duplicated:
        pair = [r for r in rows if r["catalogNumber"] == cat]
        assert {Path(r["path"]).stem for r in pair} == {cat, cat + "_b"}
        assert len({(r["label"], r["severity"]) for r in pair}) == 1
    assert sorted(p.name for p in manifest.parent.iterdir()) == [
        "clean",
        "contaminated",
        "manifest.csv",
    ]


def test_duplicate_is_a_slightly_different_photograph(tmp_path):
    manifest = make_collection(tmp_path, n_specimens=4, duplicate_fraction=1.0, size=TINY, seed=5)
    row = _read_manifest(manifest)[0]
    with (
        Image.open(tmp_path / row["path"]) as a,
        Image.open(tmp_path / row["path"].replace(".jpg", "_b.jpg")) as b,
    ):
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean()
    assert 1.0 < diff < 60.0


def test_make_collection_is_deterministic(tmp_path):
    kwargs = {"n_specimens": 4, "duplicate_fraction": 0.5, "size": TINY, "seed": 11}
    first = make_collection(tmp_path / "a", **kwargs)
    second = make_collection(tmp_path / "b", **kwargs)
    assert first.read_bytes() == second.read_bytes()
    for row in _read_manifest(first):
        a, b = (m.parent / row["path"] for m in (first, second))
        assert a.read_bytes() == b.read_bytes(), row["path"]
    other = make_collection(tmp_path / "c", **{**kwargs, "seed": 12})
    images = [(m.parent / _read_manifest(m)[0]["path"]).read_bytes() for m in (first, other)]
    assert images[0] != images[1]


def test_stained_fraction_extremes(tmp_path):
    rows = _read_manifest(
        make_collection(
            tmp_path / "all", n_specimens=3, stained_fraction=1.0, duplicate_fraction=0.0, size=TINY
        )
    )
    assert [r["label"] for r in rows] == ["contaminated"] * 3
    rows = _read_manifest(
        make_collection(
            tmp_path / "none",
            n_specimens=3,
            stained_fraction=0.0,
            duplicate_fraction=0.0,
            size=TINY,
        )
    )
    assert [r["label"] for r in rows] == ["clean"] * 3


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_specimens": 0}, "n_specimens"),
        ({"n_specimens": 2.5}, "n_specimens"),
        ({"stained_fraction": 1.5}, "stained_fraction"),
        ({"duplicate_fraction": -0.1}, "duplicate_fraction"),
        ({"quality": 0}, "quality"),
        ({"seed": -1}, "seed"),
        ({"size": (10, 10)}, "size"),
        ({"size": (192,)}, "size"),
    ],
)
def test_make_collection_rejects_bad_parameters(tmp_path, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        make_collection(tmp_path, **{"size": TINY, **kwargs})
    assert not (tmp_path / "manifest.csv").exists()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"stained": True, "severity": 1.2}, "severity"),
        ({"stained": True, "severity": -0.1}, "severity"),
        ({"stained": False, "severity": 0.5}, "severity"),
        ({"stained": True, "size": (768, 20)}, "size"),
        ({"stained": True, "size": "big"}, "size"),
    ],
)
def test_make_sheet_rejects_bad_parameters(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        make_sheet(np.random.default_rng(0), **kwargs)


def test_make_sheet_needs_a_generator():
    with pytest.raises(ParameterError, match="rng"):
        make_sheet(0, stained=False)  # type: ignore[arg-type]
