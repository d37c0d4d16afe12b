"""Near-duplicate sheets: hashes that survive copies, and a split that keeps copies together."""

import csv
import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from herbscan.errors import ManifestError
from herbscan.manifest import read_source, split
from herbscan.neardup import (
    MIN_SIMILARITY,
    fingerprint,
    fingerprints,
    linked_groups,
    near_pairs,
    similarity,
)
from herbscan.synth import make_sheet


def _sheet(seed: int) -> Image.Image:
    im, _ = make_sheet(np.random.default_rng(seed), stained=False, size=(256, 384))
    return im


def _copies(im: Image.Image, seed: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    w, h = im.size
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    cx, cy = int(0.03 * w), int(0.03 * h)
    return {
        "resized": im.resize((w // 2, h // 2)),
        "re-encoded": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "cropped 3%": im.crop((cx, cy, w - int(rng.integers(0, cx)), h - cy)),
        "colour-shifted": ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.1)).enhance(0.7),
        "turned 90°": im.transpose(Image.Transpose.ROTATE_90),
    }


def test_copies_are_found_and_different_sheets_are_not(tmp_path):
    paths, sheet_of = [], []
    for s in range(6):
        im = _sheet(s)
        im.save(tmp_path / f"s{s}.png")
        paths.append(tmp_path / f"s{s}.png")
        sheet_of.append(s)
        for name, c in _copies(im, s).items():
            p = tmp_path / f"s{s}_{name.split()[0]}.png"
            c.save(p)
            paths.append(p)
            sheet_of.append(s)
    fp = fingerprints(paths)
    assert not fp.errors
    found = {(i, j) for i, j, _, _ in near_pairs(fp, block=7)}  # small blocks: same answer
    same = {(i, j) for j in range(len(paths)) for i in range(j) if sheet_of[i] == sheet_of[j]}
    assert found == same  # every copy of every sheet, and no pair of two different sheets


def test_unreadable_files_are_listed_and_never_paired(tmp_path):
    _sheet(1).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "c.png").write_bytes(b"not an image either")
    fp = fingerprints([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"])
    assert [i for i, _ in fp.errors] == [1, 2] and "b.png" in fp.errors[0][1]
    assert near_pairs(fp) == []  # b and c have equal (empty) fingerprints but are no pair
    (h, h180), thumb = fingerprint(tmp_path / "a.png")
    assert h != h180 and thumb.shape == (72, 48)
    assert similarity(thumb, thumb) > 0.99 > MIN_SIMILARITY


def test_linked_groups_join_chains():
    keys = ["A", "B", "C", "D", "B"]
    groups = linked_groups(keys, [(0, 1, 2), (1, 2, 3)])
    assert groups["A"] == groups["B"] == groups["C"] != groups["D"]


def _collection(tmp_path, copy_under_other_id: bool):
    rows = []
    for s in range(12):
        label = "contaminated" if s % 2 else "clean"
        p = tmp_path / f"s{s}.jpg"
        _sheet(s).save(p, quality=90)
        rows.append((p.name, label, f"SP{s}"))
    if copy_under_other_id:
        _copies(_sheet(3), 3)["re-encoded"].save(tmp_path / "copy.jpg")
        rows.append(("copy.jpg", "contaminated", "SP99"))
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "catalogNumber"])
        w.writerows(rows)
    return tmp_path / "m.csv"


def test_split_keeps_a_copy_under_another_id_in_the_same_split(tmp_path):
    src = _collection(tmp_path, copy_under_other_id=True)
    for seed in range(4):
        out = tmp_path / f"split{seed}.csv"
        with pytest.warns(UserWarning, match="1 pair.*near-identical.*kept in one split"):
            split(src, out, group_col="catalogNumber", seed=seed)
        m = read_source(out)
        where = {r["catalogNumber"]: r["split"] for r in m.rows}
        assert where["SP3"] == where["SP99"]
    listed = (tmp_path / "split0.csv.near_duplicates.csv").read_text()
    assert "s3.jpg" in listed and "copy.jpg" in listed
    with pytest.raises(ManifestError, match="near-identical images under different specimen ids"):
        split(src, tmp_path / "x.csv", group_col="catalogNumber", near_duplicates="error")
    split(src, tmp_path / "y.csv", group_col="catalogNumber", near_duplicates="off")


def test_split_of_distinct_sheets_says_nothing(tmp_path):
    src = _collection(tmp_path, copy_under_other_id=False)
    split(src, tmp_path / "s.csv", group_col="catalogNumber")  # warnings are errors in tests
    assert not (tmp_path / "s.csv.near_duplicates.csv").exists()


def test_duplicates_among_indexes_the_others_as_given(tmp_path):
    from conftest import make_sheet

    from herbscan.neardup import duplicates_among

    rng = np.random.default_rng(5)
    make_sheet(rng, True, size=(200, 300)).save(tmp_path / "a.png")
    b = make_sheet(rng, False, size=(200, 300))
    b.save(tmp_path / "b.png")
    b.resize((160, 240)).save(tmp_path / "b_copy.png")
    # the test sheet itself is among the others (left out), before the copy of it
    others = [tmp_path / "b.png", tmp_path / "a.png", tmp_path / "b_copy.png"]
    found = duplicates_among([tmp_path / "b.png"], others)
    assert [(i, j) for i, j, _ in found] == [(0, 2)]
