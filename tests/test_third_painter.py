"""benchmarks/third_painter.py: an independent mercury painter for real sheets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import third_painter  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114])


def make_sheet(scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A 450 x 300 px (420 x 280 mm) cream sheet with a green stem and leaf, scanned softly;
    and where the plant is."""
    h, w = 450 * scale, 300 * scale
    rng = np.random.default_rng(7)
    sheet = np.empty((h, w, 3), np.float64)
    sheet[:] = (236, 231, 214)
    sheet += rng.integers(0, 4, (h, w, 1))
    yy, xx = np.mgrid[0:h, 0:w] / scale
    stem = (np.abs(xx - 150 - 0.1 * (yy - 225)) < 2) & (yy > 90) & (yy < 380)
    leaf = ((yy - 180) / 55) ** 2 + ((xx - 185) / 22) ** 2 < 1
    plant = stem | leaf
    sheet[plant] = (88, 118, 62)
    sheet = ndimage.gaussian_filter(sheet, (1.2 * scale, 1.2 * scale, 0))
    return sheet.round().astype(np.uint8), plant


def darkening(sheet: np.ndarray, out: np.ndarray) -> np.ndarray:
    return sheet.astype(np.float64) @ LUMA - out.astype(np.float64) @ LUMA


def visible(sheet: np.ndarray, out: np.ndarray) -> float:
    """Mean darkening beyond 6 grey levels: the rescan's blur, noise and JPEG stay below it."""
    return float(np.clip(darkening(sheet, out) - 6, 0, None).mean())


def test_deterministic_shape_and_input_untouched():
    sheet, _ = make_sheet()
    before = sheet.copy()
    a = third_painter.paint(np.random.default_rng(3), sheet, 0.4)
    b = third_painter.paint(np.random.default_rng(3), sheet, 0.4)
    assert a.dtype == np.uint8 and a.shape == sheet.shape
    assert np.array_equal(a, b)
    assert np.array_equal(sheet, before)
    c = third_painter.paint(np.random.default_rng(4), sheet, 0.4)
    assert not np.array_equal(a, c)


def test_clean_sheet_is_only_rescanned():
    sheet, _ = make_sheet()
    for seed in range(3):
        out = third_painter.paint(np.random.default_rng(seed), sheet, None, n_lookalikes=0)
        assert out.shape == sheet.shape
        assert not np.array_equal(out, sheet)  # the rescan left its mark
        assert abs(darkening(sheet, out).mean()) < 1.5
        assert visible(sheet, out) < 0.01


def test_lookalikes_mark_a_clean_sheet():
    sheet, _ = make_sheet()
    n = len(third_painter.LOOKALIKES)
    out = third_painter.paint(np.random.default_rng(0), sheet, None, n_lookalikes=n)
    assert (darkening(sheet, out) > 15).sum() > 20


def test_more_severity_darkens_more():
    sheet, _ = make_sheet()
    mean = {
        s: np.mean(
            [
                visible(sheet, third_painter.paint(rng, sheet, s, n_lookalikes=0))
                for rng in map(np.random.default_rng, range(3))
            ]
        )
        for s in (0.05, 0.5, 1.0)
    }
    assert 0 < mean[0.05] < mean[0.5] < mean[1.0]
    assert mean[1.0] > 4 * mean[0.5] > 16 * mean[0.05]


def test_mercury_gathers_on_and_near_the_plant():
    sheet, plant = make_sheet()
    dist = ndimage.distance_transform_edt(~plant)  # px, about a millimetre each
    near, far = dist <= 4, dist > 40
    d = np.mean(
        [
            darkening(sheet, third_painter.paint(rng, sheet, 0.6, n_lookalikes=0))
            for rng in map(np.random.default_rng, range(4))
        ],
        axis=0,
    )
    assert d[near].mean() > 2 * d[far].mean()
    assert d[far].mean() > 0  # bare paper gets some too


def test_sizes_are_in_millimetres():
    """A sheet scanned at twice the resolution darkens about as much at the same severity."""
    small, _ = make_sheet()
    big, _ = make_sheet(scale=2)
    lo, hi = (
        np.mean(
            [
                visible(s, third_painter.paint(rng, s, 1.0, n_lookalikes=0))
                for rng in map(np.random.default_rng, range(3))
            ]
        )
        for s in (small, big)
    )
    assert 0.5 < hi / lo < 2.0


@pytest.mark.parametrize("severity", [1.5, -0.1, float("nan"), float("inf")])
def test_bad_severity_raises(severity):
    sheet, _ = make_sheet()
    with pytest.raises(ValueError):
        third_painter.paint(np.random.default_rng(0), sheet, severity)
