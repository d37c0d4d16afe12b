import numpy as np
import pytest
from PIL import Image

from herbscan.errors import ParameterError
from herbscan.tiles import (
    TileSpec,
    aggregate,
    entropy,
    heatmap_png,
    iter_tiles,
    origins,
    otsu_threshold,
    sheet_tiles,
    tile_stats,
    windows,
)


def test_origins_cover_every_pixel_and_align_the_last_window():
    assert origins(300, 128, 128) == [0, 128, 172]  # last window aligned with the far edge
    assert origins(256, 128, 128) == [0, 128]
    assert origins(300, 128, 64) == [0, 64, 128, 172]
    assert origins(100, 128, 128) == [0]  # smaller than a tile: one (padded) window
    assert len(windows(300, 256, TileSpec())) == 3 * 2
    with pytest.raises(ParameterError, match="scale must be in"):
        TileSpec(scale=1.5)


def test_entropy_bits():
    assert entropy(np.full((16, 16), 200, np.uint8)) == 0.0
    two = np.zeros((16, 16), np.uint8)
    two[:8] = 255
    assert entropy(two) == pytest.approx(1.0)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert entropy(every) == pytest.approx(8.0)


def test_tile_stats_and_small_sheets_are_padded(tmp_path):
    sheet = np.full((40, 60, 3), 235, np.uint8)  # paper
    sheet[:, 30:] = (40, 90, 30)  # plant-green half
    p = tmp_path / "s.png"
    Image.fromarray(sheet).save(p)
    st = sheet_tiles(p, TileSpec(size=64))
    assert st.sheet.shape == (64, 64, 3) and st.coords == [(0, 0)]
    s = tile_stats(sheet, [(0, 0), (30, 0)], 30)
    assert s[0].tolist() == pytest.approx([0.0, 235.0, 0.0, 1.0])
    assert s[1, 3] == 0.0 and s[1, 0] == 0.0  # uniform green: no paper, no entropy


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(2.0, 0.3, 500), rng.normal(6.0, 0.4, 300)])
    t = otsu_threshold(values)
    assert 3.0 < t < 5.0
    assert (values[:500] < t).mean() > 0.99 and (values[500:] >= t).mean() > 0.99


def test_aggregation_rules():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.9, 0.1]])
    assert aggregate(p, "mean").tolist() == pytest.approx([0.7, 0.3])
    assert aggregate(p, "vote").tolist() == pytest.approx([0.75, 0.25])
    mx = aggregate(p, "max")
    assert mx.tolist() == pytest.approx([0.9 / 1.7, 0.8 / 1.7])
    top2 = aggregate(p, "topk", k=2)
    assert top2.tolist() == pytest.approx(np.array([0.9, 0.5]) / 1.4)
    assert np.isnan(aggregate(np.zeros((0, 2)), "mean")).all()
    with pytest.raises(ParameterError, match="aggregate must be one of"):
        aggregate(p, "median")


def test_iter_tiles_decodes_each_sheet_once_and_filters(tmp_path, monkeypatch):
    import herbscan.tiles as tiles_mod

    paths = []
    for i in range(2):
        a = np.full((256, 256, 3), 240, np.uint8)
        a[128:, 128:] = np.random.default_rng(i).integers(0, 255, (128, 128, 3))
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    calls = []
    real = tiles_mod.load_scaled
    monkeypatch.setattr(tiles_mod, "load_scaled", lambda p, s: calls.append(p) or real(p, s))
    got = [(i, j) for i, _, j, tile in iter_tiles(paths, TileSpec(), min_entropy=1.0)]
    assert calls == paths  # one decode per sheet
    assert got == [(0, 3), (1, 3)]  # only the noisy bottom-right window survives the filter


def test_scaled_decode_and_heatmap(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (1000, 1500), (230, 225, 210)).save(p, quality=90)
    st = sheet_tiles(p, TileSpec(size=128, scale=0.5))
    assert st.sheet.shape == (750, 500, 3)
    scores = np.linspace(0, 1, len(st.coords))
    png = heatmap_png(st.sheet, st.coords, 128, scores, np.ones(len(st.coords), bool), max_side=200)
    im = Image.open(__import__("io").BytesIO(png))
    assert im.format == "PNG" and max(im.size) == 200
    a = np.asarray(im).astype(int)
    assert a[-5, -5, 0] - a[-5, -5, 2] > 50  # high-score corner tinted red
