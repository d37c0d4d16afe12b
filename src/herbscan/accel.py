"""Running a model fast on the machine at hand: device, precision, memory layout, threads.

Defaults are the fast path: on CPU channels_last + bf16 autocast when the CPU has native bf16
support (2–3× on recent x86), on GPU autocast (bf16 where supported, else fp16 with loss
scaling). `precision="fp32"` is the exact fallback everywhere.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from herbscan.errors import ParameterError, check_choice

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Pixels per batch that keep activations within a few GB: a training step keeps every layer's
# output for the backward pass (StainNet at 1024 × 1536: about 1.25 GB per sheet, measured),
# inference only a layer or two at a time.
TRAIN_PIXELS = 4 * 1024 * 1536
INFER_PIXELS = 8 * 1024 * 1536
DEVICES = ("auto", "cpu", "cuda")


def fit_batch(requested: int, shape: tuple[int, int], budget: int) -> int:
    """`requested`, lowered so that a batch of (height, width) inputs stays within `budget`
    pixels (at least 1): large inputs (a stain detector's whole sheet) must not run a laptop out
    of memory at a batch size chosen for 320² inputs."""
    return max(1, min(int(requested), budget // max(1, shape[0] * shape[1])))


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Accel:
    """Where and in which precision a model runs; build with `Accel.resolve`."""

    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16

    @classmethod
    def resolve(
        cls, device: str = "auto", precision: str = "auto", threads: int | None = None
    ) -> Accel:
        check_choice("precision", precision, PRECISIONS)
        kind = device.split(":")[0]
        check_choice("device", kind, DEVICES)
        if kind == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif kind == "cuda" and not torch.cuda.is_available():
            raise ParameterError(
                "device 'cuda' asked for but no CUDA GPU is visible; use --device cpu or auto"
            )
        dev = torch.device(device)
        if dev.type == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        if precision == "auto":
            if dev.type == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            else:
                precision = "bf16" if cpu_supports_bf16() else "fp32"
        if precision == "fp16" and dev.type == "cpu":
            raise ParameterError("precision 'fp16' is for GPUs; use bf16 or fp32 on CPU")
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return cls(dev, precision)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device, memory_format=torch.channels_last)

    def to_input(self, batch: np.ndarray | torch.Tensor, mean, std) -> torch.Tensor:
        """uint8 NHWC batch → normalised float NCHW (channels_last) on the device.

        An NHWC buffer viewed as NCHW already is channels_last, so this is one conversion and
        one in-place scale-and-shift, with no layout copy.
        """
        t = (
            torch.from_numpy(np.ascontiguousarray(batch))
            if isinstance(batch, np.ndarray)
            else batch
        )
        x = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        return x.mul_(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)

    @torch.inference_mode()
    def predict_proba(
        self, model: torch.nn.Module, arrays: np.ndarray, mean, std, batch_size: int = 64
    ) -> np.ndarray:
        """Class probabilities (n, K) for uint8 NHWC arrays, in eval mode."""
        was_training = model.training
        model.eval()
        out = []
        for i in range(0, len(arrays), batch_size):
            x = self.to_input(arrays[i : i + batch_size], mean, std)
            with self.autocast():
                logits = model(x)
            out.append(torch.softmax(logits.float(), dim=1).cpu())
        model.train(was_training)
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.cat(out).numpy()
