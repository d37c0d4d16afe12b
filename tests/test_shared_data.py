"""Integration on real sheets in ../shared/data (skips when the folder is absent)."""

import csv
from collections import defaultdict

import numpy as np

from herbscan.cache import load_sheets
from herbscan.images import open_rgb
from herbscan.manifest import split


def test_ala_split_by_catalog_number(shared_data, tmp_path):
    src = shared_data / "ala-lycopodiaceae" / "manifest.csv"
    out, counts = split(
        src, tmp_path / "ala.csv", label_col="genus", group_col="catalog_number", path_col="file"
    )
    assert sum(sum(c.values()) for c in counts.values()) == 158
    assert {g: sum(c.values()) for g, c in counts.items()} == {
        "Diphasiastrum": 46,
        "Huperzia": 33,
        "Lycopodiella": 6,
        "Lycopodium": 73,
    }
    assert all(c["test"] >= 1 and c["validation"] >= 1 for c in counts.values())
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    splits = defaultdict(set)
    for r in rows:
        splits[r["catalog_number"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())


def test_every_unlabeled_sheet_decodes_upright_rgb(shared_data):
    folder = shared_data / "unlabeled-sheets"
    with open(folder / "manifest.csv", newline="") as f:
        files = [folder / r["file"] for r in csv.DictReader(f)]
    arrays, ok, failures = load_sheets(files, 128, cache_dir=False, progress=False)
    assert failures == [] and len(ok) == len(files) == 32
    assert arrays.shape == (32, 128, 128, 3)
    assert float(arrays.std()) > 10  # real content, not blank


def test_highres_draft_decode_covers_target(shared_data):
    for p in sorted((shared_data / "highres-sheets" / "images").glob("*.jpg"))[:2]:
        im = open_rgb(p, min_size=(256, 256))
        assert 256 <= min(im.size) < 1000  # decoded at 1/8 scale, not 4000×6000
        assert np.asarray(im).mean() > 50
