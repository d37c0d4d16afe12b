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
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch
from safetensors.torch import load_file, save_file

from herbscan.errors import RunError
from herbscan.fileio import atomic_path, write_json
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
    config: RunConfig

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

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
        arch = self.config.architecture
        model = create_model(
            arch.name,
            num_classes=len(self.classes),
            input_size=self.preprocessing.size,
            **arch.kwargs,
        )
        state = load_tensors(self.folder / WEIGHTS)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunError(
                f"{self.folder / WEIGHTS}: weights do not match {arch.name} "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); "
                "the run folder is inconsistent, retrain it"
            )
        return model.eval()


# --- run.json's schema ---------------------------------------------------------------------------
# One dataclass per section. `RunConfig.load` checks every key (unknown, missing, wrong type) and
# names it with the file in one line; readers use attributes, never string keys.

SCHEMA = 2
"""run.json's schema version. 1: the release before typed configs (no `schema` key)."""

Json = dict[str, Any]


@dataclass
class Preprocessing:
    """How a sheet becomes the network's input."""

    mode: str
    size: int
    fit: str = "stretch"
    mean: list[float] | None = None
    std: list[float] | None = None
    tile_size: int | None = None
    stride: int | None = None
    scale: float | None = None
    min_entropy: float | None = None
    min_entropy_rule: str | None = None
    train_tiles_total: int | None = None
    train_tiles_kept: int | None = None
    validation_tiles_kept: int | None = None
    tile_labels: str | None = None


@dataclass
class Architecture:
    name: str
    kwargs: Json = field(default_factory=dict)
    parameters: int | None = None
    init: str | None = None
    weights: Json | None = None


@dataclass
class Training:
    """What was trained on and how; `train` and `learn-stains` fill different fields."""

    data: str | None = None
    kind: str = "train"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    balance: str | None = None
    patience: int | None = None
    samples_per_epoch: int | None = None
    augmentation: bool | None = None
    jpeg_augmentation: Json | None = None
    backbone_lr_scale: float | None = None
    linear_probe: Json | None = None
    precision: str | None = None
    device: str | None = None
    seed: int | None = None
    n_train: int | None = None
    n_validation: int | None = None
    n_skipped: int | None = None
    validation_majority: float | None = None
    reviewed_labels: Json | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    stopped_early: bool | None = None
    complete: bool = False
    train_seconds: float | None = None
    # learn-stains
    sources: list[str] | None = None
    n_train_sheets: int | None = None
    n_validation_sheets: int | None = None
    validation: str | None = None
    size: int | None = None
    crop: int | None = None
    steps: int | None = None
    stain_kinds: list[str] | None = None
    holdout_kinds: list[str] | None = None
    negatives: list[str] | None = None
    frozen_blocks: int | None = None


@dataclass
class Aggregation:
    """How a tile run turns tile probabilities into one per sheet, chosen on validation."""

    rule: str
    k: int | None = None
    threshold: float | None = None
    positive_class: str | None = None
    balanced_accuracy: float | None = None
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    p_vs_mean: float | None = None
    chosen_because: str | None = None
    candidates: list[Json] = field(default_factory=list)


@dataclass
class OperatingPoint:
    """The threshold on P(positive class) that `screen --threshold auto` flags by."""

    positive_class: str
    threshold: float | None
    source: str = ""
    raw_threshold: float | None = None
    balanced_accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    accuracy: float | None = None
    n: int | None = None


@dataclass
class RunConfig:
    """The whole of run.json (schema version `SCHEMA`)."""

    classes: list[str]
    preprocessing: Preprocessing
    architecture: Architecture
    training: Training
    schema: int = SCHEMA
    format: str = FORMAT
    task: str = "classification"
    label_column: str | None = None
    metrics: Json | None = None
    aggregation: Aggregation | None = None
    operating_point: OperatingPoint | None = None
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None

    @property
    def is_tiles(self) -> bool:
        return self.preprocessing.mode == "tiles"

    def to_dict(self) -> Json:
        """run.json's object: format and schema first; optional keys that are unset left out."""
        d = _plain(self)
        return {"format": d.pop("format"), "schema": d.pop("schema"), **d}

    def save(self, folder: str | Path) -> Path:
        """run.json written atomically."""
        return write_json(Path(folder) / RUN_JSON, self.to_dict())

    @classmethod
    def from_dict(cls, data: object, where: str | Path) -> RunConfig:
        """Migrate to the current schema, then check every key; a RunError names the key and
        `where` in one line."""
        config = _build(cls, migrate(data, where), "", where)
        if len(config.classes) < 2:
            raise RunError(f"{where}: key 'classes' must list two or more class names; retrain")
        if config.is_tiles:
            for key in ("tile_size", "stride", "scale", "min_entropy"):
                if getattr(config.preprocessing, key) is None:
                    raise RunError(
                        f"{where}: key 'preprocessing.{key}' is missing (a tile run needs it); "
                        "restore run.json or retrain"
                    )
            if config.aggregation is None:
                raise RunError(
                    f"{where}: key 'aggregation' is missing (a tile run needs it); "
                    "restore run.json or retrain"
                )
        return config

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path}: not valid JSON ({e}); restore or retrain the run") from None
        return cls.from_dict(data, path)


def migrate(data: object, where: str | Path) -> Json:
    """run.json of any schema this release knows, as the current schema (a new dict)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise RunError(
            f"{where}: format {found!r} is not {FORMAT!r}; retrain with this herbscan version"
        )
    data = json.loads(json.dumps(data))
    version = data.get("schema", 1)
    if version == 1:
        # Schema 1 had no version key; learn-stains wrote the herbscan version at the top level.
        if "herbscan_version" in data:
            data.setdefault("versions", {})["herbscan"] = data.pop("herbscan_version")
        training = data.get("training")
        if isinstance(training, dict):
            training.setdefault("kind", "train")
        data["schema"] = version = 2
    if version != SCHEMA:
        raise RunError(
            f"{where}: run.json schema {version!r} is newer than this herbscan knows ({SCHEMA}); "
            "upgrade herbscan"
        )
    return data


def _plain(obj: object) -> Json:
    """A dataclass as a dict, recursively, without the fields that are None by default."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        out[f.name] = _plain(value) if is_dataclass(value) else value
    return out


def parse(cls: type, data: object, where: str | Path):
    """One section of run.json (e.g. `Aggregation`) from a dict, checked like `RunConfig.load`."""
    return _build(cls, data, "", where)


def _type_name(tp: object) -> str:
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (Union, UnionType):
        names = " or ".join(_type_name(a) for a in args)
        return f"{names} or null" if type(None) in get_args(tp) else names
    origin = get_origin(tp) or tp
    return {float: "number", Any: "any value"}.get(origin, getattr(origin, "__name__", str(tp)))


def _fits(value: object, tp: object) -> bool:
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin in (Union, UnionType):
        return any(_fits(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = get_args(tp)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        _, item = get_args(tp)
        return isinstance(value, dict) and all(_fits(v, item) for v in value.values())
    if is_dataclass(tp):
        return isinstance(value, dict)
    return isinstance(value, tp)  # type: ignore[arg-type]


def _build(cls: type, data: object, prefix: str, where: str | Path):
    """`cls` from a JSON object, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise RunError(
            f"{where}: key {prefix.rstrip('.') or 'run.json'!r} must be an object, not "
            f"{type(data).__name__}; restore run.json or retrain"
        )
    hints = get_type_hints(cls)
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise RunError(
            f"{where}: unknown key {prefix + unknown[0]!r}; remove it, or open the run with the "
            "herbscan version that wrote it"
        )
    kwargs = {}
    for name, f in names.items():
        key = prefix + name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RunError(f"{where}: key {key!r} is missing; restore run.json or retrain")
            continue
        value, tp = data[name], hints[name]
        if not _fits(value, tp):
            raise RunError(
                f"{where}: key {key!r} must be {_type_name(tp)}, not {type(value).__name__} "
                f"({value!r:.40}); restore run.json or retrain"
            )
        inner = [a for a in (get_args(tp) or (tp,)) if is_dataclass(a)]
        if inner and value is not None:
            value = _build(inner[0], value, key + ".", where)
        kwargs[name] = value
    return cls(**kwargs)


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
    config = RunConfig.load(cfg_path)
    if not (folder / WEIGHTS).is_file():
        raise RunError(
            f"{folder}: no {WEIGHTS} (training did not finish an epoch?); resume with "
            f"`herbscan train ... --out {folder} --resume`"
        )
    return Run(folder, config)
