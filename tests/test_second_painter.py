"""benchmarks/second_painter.py, the independent stain generator stains_eval tests against: it
must be deterministic, darken more with severity, and leave a clean sheet nearly as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import second_painter  # noqa: E402


def sheet(h=450, w=300) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = np.full((h, w, 3), (232, 226, 210), np.uint8) + rng.integers(0, 5, (h, w, 1)).astype(
        np.uint8
    )
    a[60:390, 140:160] = (80, 110, 55)  # a plant stem
    a[150:170, 80:220] = (70, 100, 50)  # and a leaf across it
    return a


def darkening(img: np.ndarray, base: np.ndarray) -> float:
    return float(np.clip(base.astype(float) - img.astype(float), 0, None).mean())


def test_same_seed_same_sheet_and_clean_sheets_stay_nearly_clean():
    base = sheet()
    a = second_painter.paint(np.random.default_rng(3), base, 0.5)
    b = second_painter.paint(np.random.default_rng(3), base, 0.5)
    assert a.dtype == np.uint8 and a.shape == base.shape
    np.testing.assert_array_equal(a, b)
    clean = second_painter.paint(np.random.default_rng(3), base, None, n_lookalikes=0)
    assert darkening(clean, base) < 1.5  # only the rescan: noise, blur, JPEG


def test_more_severity_darkens_more():
    base = sheet()
    mean = {}
    for s in (0.05, 0.5, 1.0):
        painted = [
            second_painter.paint(np.random.default_rng(k), base, s, n_lookalikes=0)
            for k in range(4)
        ]
        mean[s] = np.mean([darkening(img, base) for img in painted])
    assert mean[0.05] < mean[0.5] < mean[1.0], mean
    assert mean[1.0] > 3 * mean[0.05], mean


def test_bad_severity_is_refused():
    with pytest.raises(ValueError):
        second_painter.paint(np.random.default_rng(0), sheet(), 1.5)
