"""benchmarks/rank_contrast.py: twin crops and the sheet-level rank loss it measures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rank_contrast  # noqa: E402

from herbscan.learn_stains import MIN_AREA, crop_loss  # noqa: E402
from herbscan.stainnet import StainNet, cell_targets  # noqa: E402
from herbscan.stains import NEGATIVE_KINDS, STAIN_KINDS, STYLES  # noqa: E402


def test_rank_loss_compares_each_stains_top_cell_with_the_batchs_top_clean_cells():
    cells = torch.full((3, 2, 2), -5.0)
    target = torch.zeros(3, 2, 2)
    cells[0, 0, 0], cells[0, 1, 1] = 2.0, 1.0  # crop 0: a clean crop's false alarms
    cells[1, 0, 1], target[1, 0, 1] = 0.5, 1.0  # crop 1: a faint stain, one cell
    cells[2, 1, 0], target[2, 1, 0] = 4.0, 1.0  # crop 2: a clear stain
    cells[2, 0, 0], target[2, 0, 0] = -1.0, 1.0  # its weaker cell does not count
    top_clean = (2.0 + 1.0 - 5.0) / 3
    expected = torch.nn.functional.softplus(
        torch.tensor([1 + top_clean - 0.5, 1 + top_clean - 4.0])
    ).mean()
    assert torch.isclose(rank_contrast.rank_loss(cells, target, k=3, margin=1.0), expected)
    cells.requires_grad_(True)
    rank_contrast.rank_loss(cells, target, k=3).backward()
    assert cells.grad[0, 0, 0] > 0 and cells.grad[1, 0, 1] < 0  # false alarm down, stain up
    assert cells.grad[2, 0, 0] == 0
    assert rank_contrast.rank_loss(cells, torch.zeros(3, 2, 2)).item() == 0  # no stain at all


def test_with_rank_loss_adds_the_weighted_term_to_learn_stains_loss():
    net = StainNet()
    cells, target = torch.randn(4, 3, 3), (torch.rand(4, 3, 3) > 0.8).float()
    got = rank_contrast.with_rank_loss(0.5)(net, cells, target)
    want = crop_loss(net, cells, target) + 0.5 * rank_contrast.rank_loss(cells, target, 3)
    assert torch.isclose(got, want)


def test_twin_crops_differ_only_where_the_stain_is(tmp_path):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(2):
        entries.append(tmp_path / f"{i}.npy")
        sheet = np.full((384, 256, 3), (236, 230, 214), np.uint8)
        sheet[96:288, 120:136] = (70, 110, 50)  # a green stem
        np.save(entries[-1], sheet + rng.integers(0, 6, (384, 256, 1)).astype(np.uint8))
    sampler = rank_contrast.TwinSampler(
        entries, 256, 128, STAIN_KINDS, NEGATIVE_KINDS, STYLES["train"], 0
    )
    x, strength = sampler.batch(7)
    assert x.shape == (7, 128, 128, 3) and x.dtype == np.uint8
    target = cell_targets(torch.from_numpy(strength), MIN_AREA)
    assert all(target[j].sum() == 0 and strength[j].max() == 0 for j in (0, 2, 4))
    assert sum(target[j].sum() > 0 for j in (1, 3, 5)) >= 2
    for j in (0, 2, 4):
        touched = torch.nn.functional.max_pool2d(
            torch.from_numpy(strength[j + 1] > 0).float()[None, None], 48, 16, 16
        )[0, 0].numpy()  # cells within a cell of the stain (blur and JPEG spread it)
        same = np.abs(x[j].astype(int) - x[j + 1]).reshape(8, 16, 8, 16, 3).max(axis=(1, 3, 4))
        assert (same[touched == 0] == 0).all() and (same[touched > 0] > 0).any()
