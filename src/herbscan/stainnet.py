"""StainNet: a dense stain detector that scores every 16×16-pixel cell of a whole sheet.

Mercury shows as sub-millimetre speckles, so the detector must look at a sheet at a few pixels
per millimetre, where a whole-sheet classifier is too slow to train on a laptop and 150 labelled
sheets are far too few. StainNet is the first five stages of EfficientNet-Lite0 (ImageNet
weights, stride 16, 112 channels: edges, dots and textures, not objects) and a 1×1 head that
gives one stain logit per cell. It trains on small crops with a target per cell, and reads a
whole 2:3 sheet in one pass at inference; the sheet's logit is the mean of its `k` highest
cells, so a handful of speckles in one corner decides the sheet, whatever the input size.

`forward` returns two-class logits (clean, stain) like every herbscan model, so a StainNet run
works with predict, evaluate, screen and export unchanged; `cell_logits` gives the map for
heatmaps.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from herbscan.efficientnet import VARIANTS, EfficientNetLite
from herbscan.errors import ParameterError, RunError

STRIDE = 16
_KEEP_STAGES = 5  # lite0's stages 1-5 end at stride 16 with 112 channels


class StainNet(nn.Module):
    """EfficientNet-Lite0 stages 1-5 and a per-cell stain head; see the module docstring."""

    HEAD_PREFIX = "stain_head"

    def __init__(self, num_classes: int = 2, top_k: int = 3, hidden: int = 64):
        super().__init__()
        if num_classes != 2:
            raise ParameterError(
                f"stainnet scores stain vs clean: it needs 2 classes, not {num_classes}"
            )
        lite = EfficientNetLite(VARIANTS["efficientnet_lite0"], num_classes=1)
        n_blocks = sum(1 for b in lite._blocks if b._project_conv.out_channels <= 112)
        self._conv_stem, self._bn0, self._act = lite._conv_stem, lite._bn0, lite._act
        self._blocks = nn.ModuleList(list(lite._blocks)[:n_blocks])
        channels = self._blocks[-1]._project_conv.out_channels
        self.stain_head = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU6(inplace=True), nn.Conv2d(hidden, 1, 1)
        )
        nn.init.constant_(self.stain_head[2].bias, -4.0)  # start from "almost no cell is stained"
        self.top_k = int(top_k)
        self.frozen_blocks = 0

    def freeze(self, n_blocks: int) -> None:
        """Keep the stem and the first `n_blocks` blocks as they are (weights and BatchNorm
        statistics): low-level ImageNet filters then survive training on synthetic sheets."""
        if not 0 <= n_blocks <= len(self._blocks):
            raise ParameterError(f"freeze: choose 0 to {len(self._blocks)} blocks, not {n_blocks}")
        self.frozen_blocks = int(n_blocks)
        for m in self._frozen():
            m.requires_grad_(False)
        self.train(self.training)

    def _frozen(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        return [self._conv_stem, self._bn0, *self._blocks[: self.frozen_blocks]]

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen():
            m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 112, h/16, w/16) backbone features per cell, before the stain head."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def cell_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, h/16, w/16) stain logit per cell."""
        return self.stain_head(self.features(x))[:, 0]

    def pool(self, cells: torch.Tensor) -> torch.Tensor:
        """Sheet logit: mean of the top_k cell logits."""
        flat = cells.flatten(1)
        k = min(self.top_k, flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pool(self.cell_logits(x))
        return torch.stack([torch.zeros_like(z), z], dim=1)


def cell_targets(mask: torch.Tensor, min_area: float) -> torch.Tensor:
    """Per-cell target from a per-pixel stain strength map (n, h, w) in [0, 1]: 1 where the
    cell's summed strength reaches `min_area` pixels' worth (a stain too faint to see is clean)."""
    summed = F.avg_pool2d(mask[:, None], STRIDE, STRIDE, ceil_mode=True)[:, 0] * STRIDE * STRIDE
    return (summed >= min_area).float()


def load_imagenet_stages(model: StainNet, file: str | Path) -> None:
    """Load lite0's ImageNet tensors for the stages StainNet keeps (the rest are unused)."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(model.HEAD_PREFIX)}
    with safe_open(str(file), framework="pt") as f:
        names = set(f.keys())
        missing = [k for k in expected if k not in names]
        if missing:
            raise RunError(f"{file}: not EfficientNet-Lite0 weights (no {missing[0]})")
        state = {k: f.get_tensor(k) for k in expected}
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise RunError(
            f"{file}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
            f"{tuple(expected[bad[0]].shape)}; not EfficientNet-Lite0 weights"
        )
    model.load_state_dict(state, strict=False)
