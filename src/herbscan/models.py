"""Model registry: a name maps to a small typed factory `(num_classes, input_size) -> nn.Module`.

`create_model("smithsonian2017", num_classes=2)` builds the network of Schuettpelz et al. (2017)
as described; `herbnet` is herbscan's efficient default; `efficientnet_lite0/1/2` are ImageNet
backbones (`pretrained=True`). Register more with `@register_model`; `model_info(name)` describes
one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from herbscan.efficientnet import MEAN as LITE_MEAN
from herbscan.efficientnet import STD as LITE_STD
from herbscan.efficientnet import VARIANTS as LITE_VARIANTS
from herbscan.efficientnet import EfficientNetLite
from herbscan.errors import ParameterError, check_choice

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
WEIGHTS_OF = {"stainnet": "efficientnet_lite0"}
"""Models whose ImageNet weights are another model's (the stages they share)."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a factory under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def pretrained_models() -> list[str]:
    """Models whose factory can load ImageNet weights (`pretrained=True`)."""
    return sorted(
        n for n, fn in _REGISTRY.items() if "pretrained" in inspect.signature(fn).parameters
    )


def create_model(
    name: str, num_classes: int, input_size: int = 256, pretrained: bool = False, **kwargs
) -> nn.Module:
    """Build a registered model for `num_classes` outputs (logits) on input_size² RGB.

    `pretrained=True` loads ImageNet weights into the backbone (the classifier for
    `num_classes` stays freshly initialised); only `pretrained_models()` have them.
    """
    check_choice("model", name, list_models())
    if num_classes < 2:
        raise ParameterError(f"num_classes must be at least 2; got {num_classes}")
    if pretrained:
        if name not in pretrained_models():
            shown = ", ".join(repr(n) for n in pretrained_models())
            raise ParameterError(f"pretrained weights exist only for {shown}; got {name!r}")
        kwargs["pretrained"] = True
    return _REGISTRY[name](num_classes=num_classes, input_size=input_size, **kwargs)


def model_info(name: str, num_classes: int = 2) -> dict:
    """What a registered model is: parameters (with a `num_classes` head), native input size,
    feature width, and for ImageNet backbones whether the weights are available, where from,
    and the normalisation they expect (`mean`, `std` on 0-1 RGB; None for scratch models)."""
    check_choice("model", name, list_models())
    lite = LITE_VARIANTS.get(name)
    size = lite.input_size if lite else 1024 if name == "stainnet" else 256
    with torch.device("meta"):  # counts parameters without allocating or initialising memory
        model = _REGISTRY[name](num_classes=num_classes, input_size=size)
    info = {
        "name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_size": size,
        "fit": "sheet" if name == "stainnet" else "stretch",
        "feature_width": getattr(model, "num_features", None),
        "pretrained": name in pretrained_models(),
        "weights": None,
        "mean": None,
        "std": None,
    }
    if info["pretrained"]:
        from herbscan.pretrained import weights_source  # lazy: this module imports torch only

        info["weights"] = weights_source(WEIGHTS_OF.get(name, name))
        info["mean"], info["std"] = LITE_MEAN, LITE_STD
    return info


class Smithsonian2017(nn.Module):
    """The paper's net: two 5×5 conv blocks (10, 40 filters), dropout, dense 500, dense K.

    Convolutions are unpadded as in Mathematica's ConvolutionLayer, so a 256² input gives a
    40×61×61 feature map and a 74 M-parameter first dense layer — most of the model.
    """

    def __init__(self, num_classes: int, input_size: int = 256, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 10, 5),
            nn.BatchNorm2d(10),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(10, 40, 5),
            nn.BatchNorm2d(40),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ParameterError(
                f"input_size must be at least 16 for smithsonian2017; got {input_size}"
            )
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(40 * side * side, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Block(nn.Module):
    """Pre-activation-free ResNet basic block with an optional stride-2 projection."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class HerbNet(nn.Module):
    """A compact ResNet: strided stem (÷4), four stages of basic blocks, avg+max pooling.

    Max pooling next to average pooling lets a few stained regions drive the decision even
    when most of the sheet is clean paper.
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int = 256,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        depths: tuple[int, ...] = (1, 1, 2, 1),
        dropout: float = 0.2,
    ):
        super().__init__()
        del input_size  # fully convolutional: any input size works
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, w0 // 2, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w0 // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(w0 // 2, w0, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
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


def _lite(name: str, num_classes: int, pretrained: bool, **kw) -> nn.Module:
    if not pretrained:
        return EfficientNetLite(LITE_VARIANTS[name], num_classes, **kw)
    from herbscan.pretrained import load_backbone_weights, pretrained_weights  # lazy: torch only

    weights = pretrained_weights(name)  # before building: a missing package fails fast
    model = EfficientNetLite(LITE_VARIANTS[name], num_classes, **kw)
    load_backbone_weights(model, weights)
    return model


@register_model
def efficientnet_lite0(
    num_classes: int, input_size: int = 224, pretrained: bool = False, **kw
) -> nn.Module:
    """EfficientNet-Lite0: 3.4 M backbone parameters, native 224², any input size works."""
    del input_size  # fully convolutional
    return _lite("efficientnet_lite0", num_classes, pretrained, **kw)


@register_model
def efficientnet_lite1(
    num_classes: int, input_size: int = 240, pretrained: bool = False, **kw
) -> nn.Module:
    """EfficientNet-Lite1: 4.1 M backbone parameters, native 240²."""
    del input_size
    return _lite("efficientnet_lite1", num_classes, pretrained, **kw)


@register_model
def efficientnet_lite2(
    num_classes: int, input_size: int = 260, pretrained: bool = False, **kw
) -> nn.Module:
    """EfficientNet-Lite2: 4.8 M backbone parameters, native 260²."""
    del input_size
    return _lite("efficientnet_lite2", num_classes, pretrained, **kw)


@register_model
def stainnet(
    num_classes: int, input_size: int = 1024, pretrained: bool = False, members: int = 1, **kw
) -> nn.Module:
    """StainNet: Lite0 stages 1-5 (ImageNet) + a per-cell stain head; 2:3 sheets ~1024 wide.
    `members` > 1: an ensemble of that many sharing their frozen first blocks (the weights come
    from a run; `StainEnsemble.from_members` makes one of trained StainNets)."""
    del input_size  # fully convolutional
    from herbscan.stainnet import (  # lazy: one concept per module
        StainEnsemble,
        StainNet,
        load_imagenet_stages,
    )

    if members != 1:
        if pretrained:
            raise ParameterError(
                "an ensemble starts from trained members, not from ImageNet: train each with "
                "learn-stains and join them (scripts/train_mercury.py --members)"
            )
        return StainEnsemble(num_classes, members=members, **kw)
    if not pretrained:
        return StainNet(num_classes, **kw)
    from herbscan.pretrained import pretrained_weights

    weights = pretrained_weights("efficientnet_lite0")
    model = StainNet(num_classes, **kw)
    load_imagenet_stages(model, weights)
    return model
