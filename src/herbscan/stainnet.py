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

A `StainEnsemble` is several StainNets trained apart (other seeds, other synthetic sheets) that
kept the same ImageNet blocks frozen: those run once, each member's trained blocks and head run
on their output, and a cell's logit is the members' mean. Members trained on one generator each
learn some of its habits; what they agree on is more likely the stain.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from herbscan.efficientnet import VARIANTS, EfficientNetLite
from herbscan.errors import ParameterError, RunError

STRIDE = 16


class StainDetector(nn.Module):
    """What StainNet and StainEnsemble share: top-k pooling of cell logits into two-class sheet
    logits, frozen leading blocks that stay in eval mode, and a stain logit per member and cell
    (`member_cells`, what training fits)."""

    top_k: int
    frozen_blocks: int

    def _frozen(self) -> list[nn.Module]:
        raise NotImplementedError

    def _chain_length(self) -> int:
        """Blocks from the stem to a head (shared ones included)."""
        raise NotImplementedError

    def freeze(self, n_blocks: int) -> None:
        """Keep the stem and the first `n_blocks` blocks as they are (weights and BatchNorm
        statistics): low-level ImageNet filters then survive training on synthetic sheets."""
        total = self._chain_length()
        if not 0 <= n_blocks <= total:
            raise ParameterError(f"freeze: choose 0 to {total} blocks, not {n_blocks}")
        self.frozen_blocks = int(n_blocks)
        for m in self._frozen():
            m.requires_grad_(False)
        self.train(self.training)

    def member_cells(self, x: torch.Tensor) -> torch.Tensor:
        """(members, n, h/16, w/16) stain logit per member and cell."""
        raise NotImplementedError

    def shift_logits(self, delta: float) -> None:
        """Add `delta` to every cell logit (how an operating point is folded into the head)."""
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen():
            m.eval()
        return self

    def cell_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, h/16, w/16) stain logit per cell."""
        return self.member_cells(x).mean(dim=0)

    def pool(self, cells: torch.Tensor) -> torch.Tensor:
        """Sheet logit: mean of the top_k cell logits."""
        flat = cells.flatten(1)
        k = min(self.top_k, flat.shape[1])
        return flat.topk(k, dim=1).values.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pool(self.cell_logits(x))
        return torch.stack([torch.zeros_like(z), z], dim=1)


class StainNet(StainDetector):
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

    def _chain_length(self) -> int:
        return len(self._blocks)

    def _frozen(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        return [self._conv_stem, self._bn0, *self._blocks[: self.frozen_blocks]]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 112, h/16, w/16) backbone features per cell, before the stain head."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x

    def cell_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(n, h/16, w/16) stain logit per cell."""
        return self.stain_head(self.features(x))[:, 0]

    def member_cells(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell_logits(x)[None]

    def shift_logits(self, delta: float) -> None:
        with torch.no_grad():
            self.stain_head[2].bias += delta


class _Member(nn.Module):
    """One ensemble member's own part: the blocks after the shared trunk and its head."""

    def __init__(self, net: StainNet, shared_blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(copy.deepcopy(list(net._blocks)[shared_blocks:]))
        self.stain_head = copy.deepcopy(net.stain_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.stain_head(x)[:, 0]


class StainEnsemble(StainDetector):
    """`members` StainNets sharing the stem and first `shared_blocks` blocks; see the module
    docstring. Build one from trained StainNets with `from_members`."""

    def __init__(
        self,
        num_classes: int = 2,
        top_k: int = 3,
        hidden: int = 64,
        members: int = 3,
        shared_blocks: int = 5,
    ):
        super().__init__()
        base = StainNet(num_classes, top_k, hidden)  # refuses other than 2 classes
        if members < 2:
            raise ParameterError(f"an ensemble needs at least 2 members, not {members}")
        if not 0 <= shared_blocks < len(base._blocks):
            raise ParameterError(
                f"shared_blocks: choose 0 to {len(base._blocks) - 1}, not {shared_blocks}"
            )
        self._conv_stem, self._bn0, self._act = base._conv_stem, base._bn0, base._act
        self._blocks = nn.ModuleList(list(base._blocks)[:shared_blocks])
        self.members = nn.ModuleList(_Member(base, shared_blocks) for _ in range(members))
        self.top_k = int(top_k)
        self.shared_blocks = int(shared_blocks)
        self.frozen_blocks = 0

    @classmethod
    def from_members(cls, nets: list[StainNet]) -> StainEnsemble:
        """One ensemble of trained StainNets that kept the same stem and first blocks frozen
        (the fewest any of them froze are shared); their own blocks and heads are copied."""
        if len(nets) < 2 or not all(isinstance(n, StainNet) for n in nets):
            raise ParameterError("an ensemble is made of 2 or more StainNets")
        shared = min(n.frozen_blocks for n in nets)
        first = nets[0]
        trunk = [first._conv_stem, first._bn0, *first._blocks[:shared]]
        for net in nets[1:]:
            theirs = [net._conv_stem, net._bn0, *net._blocks[:shared]]
            for a, b in zip(trunk, theirs, strict=True):
                for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
                    if not torch.equal(x, y):
                        raise ParameterError(
                            f"ensemble members differ in their frozen blocks ({name}): train "
                            "them from the same ImageNet weights with the same --freeze-blocks"
                        )
        hidden = first.stain_head[0].out_channels
        ens = cls(2, first.top_k, hidden, members=len(nets), shared_blocks=shared)
        ens._conv_stem.load_state_dict(first._conv_stem.state_dict())
        ens._bn0.load_state_dict(first._bn0.state_dict())
        for i in range(shared):
            ens._blocks[i].load_state_dict(first._blocks[i].state_dict())
        for member, net in zip(ens.members, nets, strict=True):
            member.load_state_dict(_Member(net, shared).state_dict())
        ens.freeze(shared)
        return ens.train(first.training)

    def _chain_length(self) -> int:
        return self.shared_blocks + len(self.members[0].blocks)

    def _frozen(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        own = self.frozen_blocks - self.shared_blocks
        return [
            self._conv_stem,
            self._bn0,
            *self._blocks[: self.frozen_blocks],
            *(b for m in self.members for b in m.blocks[: max(own, 0)]),
        ]

    def member_cells(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return torch.stack([m(x) for m in self.members])

    def shift_logits(self, delta: float) -> None:
        with torch.no_grad():
            for m in self.members:
                m.stain_head[2].bias += delta


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
