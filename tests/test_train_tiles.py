"""Tile mode end to end, the specimen-level split of tiles, balanced sampling, tile labels."""

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from herbscan.evaluate import evaluate
from herbscan.manifest import read_source, split
from herbscan.predict import predict
from herbscan.runs import RunConfig
from herbscan.tileindex import tile_index
from herbscan.tiles import TileSpec
from herbscan.train import train
from herbscan.views import Tiles, tile_sample_weights

FAST = dict(
    mode="tiles",
    model="herbnet_small",
    tile_size=32,
    batch_size=16,
    lr=5e-3,
    workers=1,
    progress=False,
    precision="fp32",
)


@pytest.fixture
def split_csv(tiny_collection, tmp_path):
    out, _ = split(tiny_collection, tmp_path / "split.csv", ratios=(0.6, 0.2, 0.2), seed=1)
    return out


def test_tiles_never_straddle_splits(split_csv, tmp_path):
    tile_index(split_csv, tmp_path / "tiles", tile_size=32, progress=False)
    t = pq.read_table(tmp_path / "tiles" / "index.parquet").to_pylist()
    splits_of = {}
    for row in t:
        splits_of.setdefault(row["specimen_id"], set()).add(row["split"])
    assert len(splits_of) == 28 and all(len(s) == 1 for s in splits_of.values())
    m = read_source(split_csv)
    classes = ["clean", "contaminated"]
    spec = TileSpec(32)
    sets = {
        s: Tiles(spec, 0.0).samples(m, s, classes, False, 1, [], False)
        for s in ("train", "validation", "test")
    }
    paths = {s: set(ts.paths) for s, ts in sets.items()}
    assert not (paths["train"] & paths["validation"]) and not (paths["train"] & paths["test"])
    assert not (paths["validation"] & paths["test"])
    assert sum(len(p) for p in paths.values()) == 28
    # tiles keep their sheet's index: none points outside its own split's sheets
    assert sets["train"].sheet.max() == len(sets["train"].sheet_y) - 1


def test_balanced_sampling_weights():
    # class 0: sheets with 3000 and 300 tiles; class 1: one sheet with 30 tiles
    tile_sheet = np.repeat([0, 1, 2], [3000, 300, 30])
    w = tile_sample_weights(tile_sheet, np.array([0, 0, 1]), 2)
    per_sheet = np.bincount(tile_sheet, weights=w)
    assert per_sheet.tolist() == pytest.approx([0.25, 0.25, 0.5])


def test_tile_mode_train_evaluate_predict(split_csv, tmp_path, monkeypatch):
    run = train(split_csv, tmp_path / "run", epochs=3, patience=0, **FAST)
    cfg = json.loads((run / "run.json").read_text())
    prep, agg = cfg["preprocessing"], cfg["aggregation"]
    assert (
        prep["mode"] == "tiles" and prep["tile_size"] == 32 and prep["min_entropy_rule"] == "otsu"
    )
    assert 0 < prep["train_tiles_kept"] < prep["train_tiles_total"]  # blank paper dropped
    assert (
        agg["rule"] in {"mean", "max", "topk", "vote"} and agg["positive_class"] == "contaminated"
    )
    assert [c["rule"] for c in agg["candidates"]] == ["mean", "topk", "vote"]
    assert agg["chosen_because"] and all("p_vs_mean" in c for c in agg["candidates"])
    # nobody chose a cache: evaluating a tile run tiles the sheets in memory, leaving nothing
    # in the default cache (a tiled sheet is tens of MB)
    monkeypatch.delenv("HERBSCAN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    m = evaluate(run, split="test", precision="fp32", progress=False)
    assert m["n"] == 6 and not (tmp_path / "home").exists()
    html = (run / "report.html").read_text()
    for section in ("Tile entropy", "Sheet aggregation", "Tile heatmaps"):
        assert section in html
    imgs = sorted((tmp_path / "coll" / "contaminated").glob("*.jpg"))[:2]
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / imgs[0].name  # same file name in another folder
    twin.write_bytes(imgs[1].read_bytes())
    preds, _ = predict(
        run, imgs + [twin], tmp_path / "p.csv", heatmaps=tmp_path / "hm", precision="fp32"
    )
    assert all(p.probs is not None and p.tiles is not None for p in preds)
    made = sorted(f.name for f in (tmp_path / "hm").iterdir())
    assert len(made) == 3 and f"{imgs[0].name}.heatmap.png" in made
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["heatmap"]).name for r in rows) == made


def test_explicit_threshold_and_tile_labels(split_csv, tmp_path):
    m = read_source(split_csv)
    first = m.subset("train").paths()[0]
    (tmp_path / "tl.csv").write_text(f"sheet,x,y,label\n{first},0,0,contaminated\n")
    view = Tiles(TileSpec(32), 0.0, tile_labels=tmp_path / "tl.csv")
    ts = view.samples(m, "train", ["clean", "contaminated"], False, 1, [], False)
    i = ts.paths.index(str(first))
    own = ts.y[ts.sheet == i]
    sheet_label = ts.sheet_y[i]
    assert own[0] == 1 and (own[1:] == sheet_label).all()
    run = train(
        split_csv,
        tmp_path / "r",
        epochs=1,
        min_entropy=0.5,
        aggregate="mean",
        tile_labels=tmp_path / "tl.csv",
        **FAST,
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["preprocessing"]["min_entropy"] == 0.5
    assert cfg["preprocessing"]["min_entropy_rule"] == "fixed"
    assert cfg["aggregation"]["rule"] == "mean"


def test_tile_mode_with_three_classes(tmp_path):
    """Any labels work: three 'genera' told apart by the colour of their blobs."""
    from PIL import Image

    rng = np.random.default_rng(3)
    root = tmp_path / "genera"
    colours = {"Abies": (40, 90, 30), "Betula": (150, 60, 30), "Carex": (30, 60, 150)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            a = np.full((96, 96, 3), 235, np.uint8) + rng.integers(
                0, 10, (96, 96, 1), dtype=np.uint8
            )
            for _ in range(3):
                y, x = rng.integers(8, 80, 2)
                a[y : y + 12, x : x + 12] = colour
            Image.fromarray(a).save(root / name / f"{name}{i}.png")
    data, _ = split(root, tmp_path / "s.csv", ratios=(0.5, 0.25, 0.25))
    run = train(data, tmp_path / "run", epochs=2, **FAST)
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["classes"] == ["Abies", "Betula", "Carex"]
    agg = RunConfig.load(run / "run.json").aggregation
    assert agg.positive_class is None and agg.threshold is None
    m = evaluate(run, precision="fp32", progress=False)
    assert m["n"] == 6 and len(m["confusion_matrix"]) == 3
    assert "2" in m["top_k_accuracy"]


def test_cached_tiles_stream_from_disk_and_equal_the_in_memory_ones(split_csv, tmp_path):
    from herbscan.cache import TileWindows

    m, classes, spec = read_source(split_csv), ["clean", "contaminated"], TileSpec(32)
    view = Tiles(spec, 3.0)
    memory = view.samples(m, "train", classes, False, 1, [], False)
    streamed = view.samples(m, "train", classes, tmp_path / "cache", 2, [], False)
    assert isinstance(memory.x, np.ndarray) and isinstance(streamed.x, TileWindows)
    assert streamed.x.shape == memory.x.shape and len(streamed.x) > 50
    assert np.array_equal(streamed.x[:], memory.x)
    assert np.array_equal(streamed.y, memory.y) and np.array_equal(streamed.sheet, memory.sheet)
    idx = np.array([len(memory.x) - 1, 0, 7, 7])
    assert np.array_equal(streamed.x[idx], memory.x[idx])
    assert np.array_equal(streamed.x[3], memory.x[3])


def test_tile_windows_keep_few_sheets_mapped(tmp_path):
    from herbscan.cache import TileWindows

    files = []
    for s in range(5):
        a = np.full((64, 64, 3), s * 40, np.uint8)
        a[:32, 32:] = 255
        files.append(str(tmp_path / f"s{s}.npy"))
        np.save(files[-1], a)
    sheet = np.repeat(np.arange(5), 2)
    xy = np.tile([[0, 0], [32, 0]], (5, 1))
    w = TileWindows(files, sheet, xy, 32, open_sheets=2)
    tiles = w[np.arange(10)]
    assert [int(t[0, 0, 0]) for t in tiles] == [0, 255, 40, 255, 80, 255, 120, 255, 160, 255]
    assert len(w._open) == 2  # the rest were unmapped
    assert np.array_equal(w[np.arange(10)], tiles)  # pages given back are read again


def test_tile_training_refuses_a_cache_that_will_not_fit(split_csv, tmp_path, monkeypatch):
    import shutil

    from herbscan.errors import ParameterError

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ParameterError, match="tile cache needs about .* GB.*--scale"):
        train(split_csv, tmp_path / "r", epochs=1, cache_dir=tmp_path / "c", **FAST)


def test_samples_per_epoch_caps_the_steps_of_an_epoch(split_csv, tmp_path, monkeypatch):
    import herbscan.train as tr

    calls = []
    real = tr.augment
    monkeypatch.setattr(tr, "augment", lambda x, g: calls.append(len(x)) or real(x, g))
    run = train(split_csv, tmp_path / "r", epochs=2, samples_per_epoch=32, **FAST)
    assert calls == [16, 16, 16, 16]  # 2 epochs × 32 tiles / batches of 16
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["training"]["samples_per_epoch"] == 32
    assert cfg["training"]["n_train"] > 64  # the tile set itself is larger


def _tile_scores(n_sheets, tiles_per_sheet, hot, rng):
    """Tile probabilities (clean, contaminated) per sheet: stained sheets carry `hot` tiles near
    1, the rest of every sheet near 0.1."""
    probs, groups, y = [], [], []
    for s in range(n_sheets):
        stained = s % 2
        p = rng.uniform(0.0, 0.2, tiles_per_sheet)
        if stained:
            p[:hot] = rng.uniform(0.9, 1.0, hot)
        probs.append(np.stack([1 - p, p], 1))
        groups += [s] * tiles_per_sheet
        y.append(stained)
    return np.concatenate(probs), np.array(groups), np.array(y)


def test_aggregation_keeps_the_mean_unless_another_rule_wins_beyond_noise():
    from herbscan.views import AUTO_RULES, choose_aggregation

    classes = ["clean", "contaminated"]
    assert "max" not in {r for r, _ in AUTO_RULES}  # grows with the number of tiles
    rng = np.random.default_rng(0)
    # 12 validation sheets, one hot tile in 40: topk separates them, the mean barely does
    probs, groups, y = _tile_scores(12, 40, 1, rng)
    small = choose_aggregation(probs, groups, y, classes)
    top = next(c for c in small["candidates"] if c["rule"] == "topk")
    assert small["rule"] == "mean" and top["p_vs_mean"] >= 0.05
    assert "too few sheets" in small["chosen_because"] or "as good" in small["chosen_because"]
    # 200 sheets, 3 hot tiles in 200: the mean drowns them, topk (top tenth) does not
    probs, groups, y = _tile_scores(200, 200, 3, rng)
    probs[:, 1] += rng.normal(0, 0.02, len(probs))  # noise that swamps 3/200 in the mean
    probs = np.clip(probs, 0, 1)
    probs[:, 0] = 1 - probs[:, 1]
    large = choose_aggregation(probs, groups, y, classes)
    assert large["rule"] == "topk", large["candidates"]
    assert "beats the mean rule" in large["chosen_because"]


def test_mcnemar_p_is_the_exact_binomial_test():
    from scipy.stats import binomtest

    from herbscan.metrics import mcnemar_p

    a = np.array([1] * 10 + [0] * 6 + [1] * 2, bool)
    b = np.array([1] * 10 + [1] * 6 + [0] * 2, bool)
    assert mcnemar_p(a, b) == pytest.approx(binomtest(2, 8, 0.5).pvalue)
    assert mcnemar_p(a, a) == 1.0
    assert mcnemar_p(np.zeros(6, bool), np.ones(6, bool)) == pytest.approx(2 / 64)
