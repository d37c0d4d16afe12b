"""Predictor: a Run turned into class probabilities for image files.

Works in chunks so a long list of sheets never sits in memory at once; a file that cannot be read
gets an `error` and no probabilities instead of stopping the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herbscan.accel import Accel
from herbscan.cache import load_sheets
from herbscan.errors import ImageError, check_range
from herbscan.images import is_image_file
from herbscan.runs import Run, load_run, write_csv


@dataclass
class Prediction:
    path: str
    probs: np.ndarray | None  # (K,) or None when the file failed
    label: str = ""
    error: str = ""


class Predictor:
    """Class probabilities for sheets, by the preprocessing and model recorded in a Run."""

    def __init__(self, run: Run | str | Path, *, device: str = "auto", precision: str = "auto",
                 batch_size: int = 64, workers: int = 1, cache_dir=False, chunk: int = 512):
        check_range("batch_size", batch_size, 1)
        check_range("workers", workers, 1)
        self.run = run if isinstance(run, Run) else load_run(run)
        self.accel = Accel.resolve(device, precision)
        self.model = self.accel.prepare(self.run.build_model())
        self.batch_size, self.workers, self.cache_dir, self.chunk = (batch_size, workers,
                                                                    cache_dir, chunk)

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    def predict(self, paths: Sequence[str | Path], progress: bool = True) -> list[Prediction]:
        prep = self.run.preprocessing
        results: list[Prediction] = []
        for start in range(0, len(paths), self.chunk):
            part = [str(p) for p in paths[start:start + self.chunk]]
            arrays, ok, failures = load_sheets(part, prep["size"], prep["fit"],
                                               cache_dir=self.cache_dir, workers=self.workers,
                                               progress=progress)
            probs = self.accel.predict_proba(self.model, arrays, prep["mean"], prep["std"],
                                             self.batch_size)
            errors = dict(failures)
            by_index = dict(zip(ok, probs))
            for i, p in enumerate(part):
                if i in by_index:
                    pr = by_index[i]
                    results.append(Prediction(p, pr, self.classes[int(pr.argmax())]))
                else:
                    results.append(Prediction(p, None, "", errors.get(p, "unreadable")))
        return results


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders are searched recursively)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)))
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"{p}: no such file or folder; check the path")
    return out


def predict(run: str | Path, images: Sequence[str | Path], out: str | Path | None = None, *,
            device: str = "auto", precision: str = "auto", batch_size: int = 64,
            workers: int = 1) -> tuple[list[Prediction], list[str]]:
    """Predict image files (or folders of them); write a CSV when `out` is given.

    Returns (predictions, classes). CSV columns: path, predicted, confidence, p_<class>…, error.
    """
    predictor = Predictor(run, device=device, precision=precision, batch_size=batch_size,
                          workers=workers)
    preds = predictor.predict(expand_images(images))
    if out is not None:
        write_csv(Path(out), prediction_rows(preds, predictor.classes),
                  ["path", "predicted", "confidence"] + [f"p_{c}" for c in predictor.classes]
                  + ["error"])
    return preds, predictor.classes


def prediction_rows(preds: Sequence[Prediction], classes: list[str]) -> list[dict]:
    rows = []
    for p in preds:
        row = {"path": p.path, "predicted": p.label, "error": p.error}
        if p.probs is not None:
            row["confidence"] = f"{float(p.probs.max()):.4f}"
            row.update({f"p_{c}": f"{float(v):.4f}" for c, v in zip(classes, p.probs)})
        rows.append(row)
    return rows
