"""Shared fixtures: tiny collections made in code, and the optional ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("HERBSCAN_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set HERBSCAN_SHARED_DATA)")
    return d


def make_sheet(rng: np.random.Generator, dotted: bool, size=(96, 144)) -> Image.Image:
    """A pale sheet; 'dotted' ones carry clusters of dark dots (a trivially learnable class)."""
    w, h = size
    a = np.full((h, w, 3), 235, np.uint8) + rng.integers(0, 15, (h, w, 1), dtype=np.uint8)
    # a stem and a label where this sheet has them, so no two sheets are near-duplicates
    x, y0, y1 = (
        rng.integers(w // 5, 4 * w // 5),
        rng.integers(h // 8, h // 3),
        rng.integers(h // 2, 7 * h // 8),
    )
    a[y0:y1, x - 2 : x + 2] = (60, 110, 50)
    for _ in range(3):  # leaves
        cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
        a[cy - 5 : cy + 5, cx - 7 : cx + 7] = (80, 120, 60)
    lx, ly = rng.integers(0, w - 30), rng.integers(0, h - 16)
    a[ly : ly + 14, lx : lx + 28] = 200  # a label
    if dotted:
        for _ in range(6):
            cy, cx = rng.integers(10, h - 10), rng.integers(10, w - 10)
            a[cy - 4 : cy + 4, cx - 4 : cx + 4] = 30
    return Image.fromarray(a)


@pytest.fixture
def tiny_collection(tmp_path) -> Path:
    """Class folders clean/ and contaminated/ with 14 small JPEG sheets each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "coll"
    for label, dotted in (("clean", False), ("contaminated", True)):
        (root / label).mkdir(parents=True)
        for i in range(14):
            make_sheet(rng, dotted).save(root / label / f"{label[:2]}{i:03d}.jpg", quality=92)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HERBSCAN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tiny_run(tiny_collection, tmp_path) -> Path:
    """A full-sheet run trained for one epoch on `tiny_collection` (64², fp32)."""
    from herbscan.manifest import split
    from herbscan.train import train

    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    return train(
        data,
        tmp_path / "run",
        model="herbnet_small",
        size=64,
        epochs=1,
        workers=1,
        progress=False,
        precision="fp32",
    )
