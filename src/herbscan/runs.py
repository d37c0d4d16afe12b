"""The Run folder: a trained model that loads without executing anything from disk.

    run.json            classes, preprocessing, architecture, seed, metrics, versions
    model.safetensors   best weights
    history.csv         one row per epoch
    skipped.csv         files that could not be read while training
    checkpoint/         last epoch's weights + optimiser state for --resume (removed when done)

Weights are safetensors and configuration is JSON: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from herbscan.errors import RunError
from herbscan.fileio import atomic_path
from herbscan.models import create_model

RUN_JSON, WEIGHTS, HISTORY, SKIPPED = "run.json", "model.safetensors", "history.csv", "skipped.csv"
FORMAT = "herbscan-run/1"


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """safetensors file written atomically; tensors are made contiguous CPU copies."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return Path(path)


NEGATIVE_NAMES = ("clean", "unstained", "negative", "healthy", "absent")


def positive_class(classes: list[str]) -> str | None:
    """For two classes, the one to flag (the class not named like 'clean'); else None."""
    if len(classes) != 2:
        return None
    neg = [c for c in classes if c.lower() in NEGATIVE_NAMES]
    return next(c for c in classes if c != neg[0]) if len(neg) == 1 else classes[1]


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise RunError(f"{path}: unreadable weights ({e}); retrain or restore the file") from None


@dataclass
class Run:
    """A loaded run folder: its config and the model it describes."""

    folder: Path
    config: dict

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def preprocessing(self) -> dict:
        return dict(self.config["preprocessing"])

    @property
    def model_id(self) -> str:
        """Short hash of the weights file: which model produced a prediction."""
        h = hashlib.sha256()
        with open(self.folder / WEIGHTS, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:12]

    def build_model(self) -> torch.nn.Module:
        """The architecture from run.json with the best weights loaded, in eval mode."""
        arch = self.config["architecture"]
        model = create_model(
            arch["name"],
            num_classes=len(self.classes),
            input_size=self.preprocessing["size"],
            **arch.get("kwargs", {}),
        )
        state = load_tensors(self.folder / WEIGHTS)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunError(
                f"{self.folder / WEIGHTS}: weights do not match {arch['name']} "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); "
                "the run folder is inconsistent, retrain it"
            )
        return model.eval()


# What every reader of run.json relies on: key path → accepted types. Tile runs need more.
_NUMBER = (int, float)
REQUIRED = {
    "classes": list,
    "preprocessing": dict,
    "preprocessing.mode": str,
    "preprocessing.size": int,
    "preprocessing.mean": (list, type(None)),
    "preprocessing.std": (list, type(None)),
    "architecture": dict,
    "architecture.name": str,
    "training": dict,
}
REQUIRED_TILES = {
    "preprocessing.tile_size": int,
    "preprocessing.stride": int,
    "preprocessing.scale": _NUMBER,
    "preprocessing.min_entropy": _NUMBER,
    "aggregation": dict,
    "aggregation.rule": str,
}


def check_config(config: dict, path: Path) -> None:
    """Refuse a run.json that lacks a key its readers need or holds a value of the wrong type,
    in one line naming the key and the file (a hand edit or a cut-short copy, not a traceback
    later in some other module)."""
    preprocessing = config.get("preprocessing")
    tiles = isinstance(preprocessing, dict) and preprocessing.get("mode") == "tiles"
    for key, types in {**REQUIRED, **(REQUIRED_TILES if tiles else {})}.items():
        value: object = config
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                raise RunError(f"{path}: key {key!r} is missing; restore run.json or retrain")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, types):
            allowed = types if isinstance(types, tuple) else (types,)
            names = " or ".join(t.__name__ for t in allowed)
            raise RunError(
                f"{path}: key {key!r} must be {names}, not {type(value).__name__} "
                f"({value!r:.40}); restore run.json or retrain"
            )
    classes = config["classes"]
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise RunError(f"{path}: key 'classes' must list two or more class names; retrain")


SHIPPED = {"mercury": Path(__file__).parent / "weights" / "mercury"}
"""Runs that come with herbscan, by name: `herbscan screen mercury FOLDER`."""


def resolve_run(folder: str | Path) -> Path:
    """The folder of a run given as a folder or as the name of a shipped run (a folder of that
    name in the working directory wins)."""
    folder = Path(folder)
    if not folder.exists() and str(folder) in SHIPPED:
        return SHIPPED[str(folder)]
    return folder


def is_shipped(folder: str | Path) -> bool:
    """Whether a run folder is one of the runs that come with herbscan."""
    return any(Path(folder).resolve() == p.resolve() for p in SHIPPED.values())


def load_run(folder: str | Path) -> Run:
    """Open a run folder (or a shipped run by name), checking that it is complete."""
    folder = resolve_run(folder)
    cfg_path = folder / RUN_JSON
    if not folder.is_dir():
        raise RunError(
            f"{folder}: no such run folder; train one with `herbscan train DATA --out {folder}`"
        )
    if not cfg_path.is_file():
        raise RunError(
            f"{folder}: not a herbscan run (no {RUN_JSON}); give the folder that "
            "`herbscan train --out` wrote"
        )
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{cfg_path}: not valid JSON ({e}); restore or retrain the run") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise RunError(
            f"{cfg_path}: format {found!r} is not {FORMAT!r}; retrain with this herbscan version"
        )
    check_config(config, cfg_path)
    if not (folder / WEIGHTS).is_file():
        raise RunError(
            f"{folder}: no {WEIGHTS} (training did not finish an epoch?); resume with "
            f"`herbscan train ... --out {folder} --resume`"
        )
    return Run(folder, config)
