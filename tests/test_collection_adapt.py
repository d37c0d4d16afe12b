"""benchmarks/collection_adapt.py: the nearest-cell distance and AdaBN it measures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import collection_adapt  # noqa: E402


def test_nearest_distance_matches_brute_force_across_batches():
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(300, 8)).astype(np.float32)
    queries = np.r_[memory[:5], rng.normal(size=(40, 8))].astype(np.float32)
    got = collection_adapt.nearest_distance(queries, memory, batch=7)
    want = np.sqrt(((queries[:, None] - memory[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(got, want, atol=1e-3)
    assert np.all(got[:5] < 1e-2)  # a cell already in memory is at distance 0


def test_adapt_batchnorm_takes_statistics_of_the_inputs_and_keeps_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    net[1].weight.data.fill_(2.0)
    inputs = [torch.randn(1, 3, 5, 6) * 3 + 7 for _ in range(4)]
    collection_adapt.adapt_batchnorm(net, iter(inputs))
    with torch.no_grad():
        pre = torch.cat([net[0](x) for x in inputs])
    # momentum None: the average of the per-input means
    torch.testing.assert_close(net[1].running_mean, pre.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert not net.training and not net[1].training
    assert torch.all(net[1].weight == 2.0)
    with torch.no_grad():
        out = torch.cat([net(x) for x in inputs])
    # normalised with the inputs' own statistics: centred on the bias (0), spread by the weight
    assert float(out.mean((0, 2, 3)).abs().max()) < 1e-3
    assert 1.8 < float(out.std((0, 2, 3)).min()) <= float(out.std((0, 2, 3)).max()) < 2.2
