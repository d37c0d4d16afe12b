"""Model registry: a name maps to a small typed factory `(num_classes, input_size) -> nn.Module`.

`create_model("smithsonian2017", num_classes=2)` builds the network of Schuettpelz et al. (2017)
as described; `herbnet` is herbscan's efficient default. Register more with `@register_model`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from herbscan.errors import ParameterError, check_choice

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, input_size: int = 256, **kwargs) -> nn.Module:
    """Build a registered model for `num_classes` outputs (logits) on input_size² RGB."""
    check_choice("model", name, list_models())
    if num_classes < 2:
        raise ParameterError(f"num_classes must be at least 2; got {num_classes}")
    return _REGISTRY[name](num_classes=num_classes, input_size=input_size, **kwargs)


class Smithsonian2017(nn.Module):
    """The paper's net: two 5×5 conv blocks (10, 40 filters), dropout, dense 500, dense K.

    Convolutions are unpadded as in Mathematica's ConvolutionLayer, so a 256² input gives a
    40×61×61 feature map and a 74 M-parameter first dense layer — most of the model.
    """

    def __init__(self, num_classes: int, input_size: int = 256, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 10, 5), nn.BatchNorm2d(10), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(10, 40, 5), nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ParameterError(f"input_size must be at least 16 for smithsonian2017; got "
                                 f"{input_size}")
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Flatten(), nn.Linear(40 * side * side, 500),
            nn.ReLU(inplace=True), nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    """Pre-activation-free ResNet basic block with an optional stride-2 projection."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class HerbNet(nn.Module):
    """A compact ResNet: strided stem (÷4), four stages of basic blocks, avg+max pooling.

    Max pooling next to average pooling lets a few stained regions drive the decision even
    when most of the sheet is clean paper.
    """

    def __init__(self, num_classes: int, input_size: int = 256,
                 widths: tuple[int, ...] = (32, 64, 128, 256), depths: tuple[int, ...] = (1, 1, 2, 1),
                 dropout: float = 0.2):
        super().__init__()
        del input_size  # fully convolutional: any input size works
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0 // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(w0 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(w0 // 2, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True),
        )
        blocks, cin = [], w0
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                blocks.append(_Block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * cin, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for blk in blocks:  # start each residual branch at zero: trains stably from scratch
            nn.init.zeros_(blk.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


@register_model
def smithsonian2017(num_classes: int, input_size: int = 256, **kw) -> nn.Module:
    """Schuettpelz et al. 2017 full-sheet CNN (256×256 input in the paper)."""
    return Smithsonian2017(num_classes, input_size, **kw)


@register_model
def herbnet(num_classes: int, input_size: int = 256, **kw) -> nn.Module:
    """herbscan's default: compact ResNet, ~2.8 M parameters, ~0.5 GFLOPs at 256²."""
    return HerbNet(num_classes, input_size, **kw)


@register_model
def herbnet_small(num_classes: int, input_size: int = 256, **kw) -> nn.Module:
    """Half-width herbnet for quick tests and very small datasets."""
    return HerbNet(num_classes, input_size, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), **kw)
