"""Predictor: a Run turned into class probabilities for image files.

Sheets stream from the decoder into batches, so a long list never sits in memory at once and
inference overlaps decoding; a file that cannot be read gets an `error` and no probabilities
instead of stopping the job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herbscan.accel import INFER_PIXELS, Accel, fit_batch
from herbscan.errors import ParameterError, check_choice, check_range
from herbscan.fileio import atomic_write, write_csv
from herbscan.images import scan_folder
from herbscan.runs import Run, load_run
from herbscan.tiles import heatmap_png
from herbscan.views import SheetInputs, TileScores, view_of
from herbscan.workers import worker_pool

BACKENDS = ("torch", "onnx", "onnx-int8")


@dataclass
class Prediction:
    path: str
    probs: np.ndarray | None  # (K,) or None when the file failed
    label: str = ""
    error: str = ""
    tiles: TileScores | None = None
    heatmap: bytes = b""


class Predictor:
    """Class probabilities for sheets, by the preprocessing and model recorded in a Run."""

    def __init__(
        self,
        run: Run | str | Path,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        workers: int = 1,
        cache_dir=False,
        threads: int | None = None,
        backend: str = "torch",
    ):
        check_range("batch_size", batch_size, 1)
        check_range("workers", workers, 1)
        self.run = run if isinstance(run, Run) else load_run(run)
        # decoding processes and inference threads share the cores: leave one core per worker
        if threads is None and workers > 1:
            threads = max(1, (os.cpu_count() or 1) - workers)
        check_choice("backend", backend, BACKENDS)
        self.accel = Accel.resolve(device, precision, threads=threads)
        self.backend = backend
        if backend == "torch":
            self.model = self.accel.prepare(self.run.build_model())
        else:
            from herbscan.export import onnx_model

            self.model = onnx_model(self.run, int8=backend == "onnx-int8", threads=threads)
        self.view = view_of(self.run.config)
        self.batch_size = fit_batch(batch_size, self.view.input_shape, INFER_PIXELS)
        self.workers, self.cache_dir = workers, cache_dir
        self._pool = None

    @contextmanager
    def pool(self):
        """Keep one pool of decoding workers for every `predict` call inside the block (a
        screen predicts shard after shard; starting workers per shard costs seconds each)."""
        if self.workers < 2 or self._pool is not None:
            yield self
            return
        with worker_pool(self.workers) as p:
            self._pool = p
            try:
                yield self
            finally:
                self._pool = None

    def _proba(self, arrays: np.ndarray) -> np.ndarray:
        prep = self.run.preprocessing
        if self.backend == "torch":
            return self.accel.predict_proba(
                self.model, arrays, prep.mean, prep.std, self.batch_size
            )
        return self.model.predict_proba(arrays, prep.mean, prep.std, self.batch_size)

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    @property
    def dense(self) -> bool:
        """Whether the model scores cells of the sheet (StainNet), so heatmaps come for free."""
        return self.backend == "torch" and hasattr(self.model, "cell_logits")

    @property
    def makes_heatmaps(self) -> bool:
        """Whether `predict(heatmaps=True)` draws one per sheet (tile views, dense models)."""
        return self.view.heatmaps or self.dense

    def _dense_proba(self, arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 2), P(stain) per cell (n, h/16, w/16)) from one forward pass."""
        import torch

        prep = self.run.preprocessing
        probs, maps = [], []
        with torch.inference_mode():
            for i in range(0, len(arrays), self.batch_size):
                x = self.accel.to_input(arrays[i : i + self.batch_size], prep.mean, prep.std)
                with self.accel.autocast():
                    cells = self.model.cell_logits(x)
                cells = cells.float()
                z = torch.sigmoid(self.model.pool(cells))
                probs.append(torch.stack([1 - z, z], 1).cpu().numpy())
                maps.append(torch.sigmoid(cells).cpu().numpy())
        return np.concatenate(probs), np.concatenate(maps)

    def sheets(self, paths, progress: bool = False, thumbnails: bool = False):
        """(index, SheetInputs or None, error) per path: the view's model inputs per sheet."""
        return self.view.sheets(
            paths, cache_dir=self.cache_dir, workers=self.workers, progress=progress,
            pool=self._pool, thumbnails=thumbnails,
        )  # fmt: skip

    def predict(
        self, paths: Sequence[str | Path], progress: bool = True, heatmaps: bool = False
    ) -> list[Prediction]:
        """One prediction per sheet, in order; with tile scores for tile runs and, if asked and
        the run makes them, a heatmap PNG. Inputs of several sheets share a batch."""
        results: list[Prediction | None] = [None] * len(paths)
        queue: list[tuple[int, SheetInputs]] = []
        dense = heatmaps and self.dense
        draw = heatmaps and self.makes_heatmaps

        def flush():
            arrays = np.concatenate([si.inputs for _, si in queue])
            probs, maps = self._dense_proba(arrays) if dense else (self._proba(arrays), None)
            at = 0
            for i, si in queue:
                n = len(si.inputs)
                r = self.view.result(si, probs[at : at + n], self.classes)
                pred = Prediction(si.path, r.probs, r.label, tiles=r.tiles)
                if dense:
                    pred.heatmap = cell_heatmap(si.inputs[0], maps[at])
                elif draw:
                    pred.heatmap = self.view.heatmap(si, r)
                results[i] = pred
                at += n
            queue.clear()

        queued = 0
        for i, si, err in self.sheets(paths, progress, thumbnails=draw):
            if si is None:
                results[i] = Prediction(str(paths[i]), None, "", err)
                continue
            queue.append((i, si))
            queued += len(si.inputs)
            if queued >= self.batch_size:
                flush()
                queued = 0
        if queue:
            flush()
        return results


def cell_heatmap(image: np.ndarray, cells: np.ndarray, min_score: float = 0.1) -> bytes:
    """PNG of a sheet with the cells a dense model scored ≥ min_score tinted by P(stain)."""
    ch, cw = cells.shape
    step = image.shape[0] / ch
    coords = [(round(x * step), round(y * step)) for y in range(ch) for x in range(cw)]
    scores = cells.ravel()
    return heatmap_png(image, coords, round(step), scores, scores >= min_score)


def expand_images(items: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(images to predict, [(entry, reason)] left out) from a mix of files and folders.

    Folders are searched recursively and every entry is accounted for; a path that does not exist
    or cannot be read stays in the list, so that it gets an error row of its own.
    """
    out: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = scan_folder(p)
            out.extend(found.images)
            skipped.extend(found.skipped)
            if not found.images and not found.skipped:
                skipped.append((p, "an empty folder"))
        else:
            out.append(p)
    return out, skipped


def predict(
    run: str | Path,
    images: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    workers: int = 1,
    heatmaps: str | Path | None = None,
) -> tuple[list[Prediction], list[str]]:
    """Predict image files (or folders of them); write a CSV when `out` is given.

    Returns (predictions, classes). CSV columns: path, predicted, confidence, p_<class>…, error.
    For tile-mode and stain runs, `heatmaps` names a folder that receives
    `<image name>.heatmap.png` per sheet: P(positive) of every kept tile (or stain cell) painted
    over the sheet.
    """
    if out is not None and Path(out).is_dir():
        raise ParameterError(f"{out}: is a folder; --out needs a CSV file name")
    predictor = Predictor(
        run, device=device, precision=precision, batch_size=batch_size, workers=workers
    )
    if heatmaps is not None and not predictor.makes_heatmaps:
        raise ParameterError(
            f"{run}: heatmaps need a tile-mode run (train with --mode tiles) or a stain run "
            "(learn-stains, or mercury)"
        )
    paths, skipped = expand_images(images)
    preds = predictor.predict(paths, heatmaps=heatmaps is not None) if paths else []
    preds += [Prediction(str(p), None, "", f"{p}: skipped, {why}") for p, why in skipped]
    names: dict[int, str] = {}
    if heatmaps is not None:
        used: set[str] = set()
        for p in preds:
            if p.heatmap:
                name = f"{Path(p.path).name}.heatmap.png"
                if name in used:  # same file name in another folder
                    tag = hashlib.sha1(p.path.encode()).hexdigest()[:8]
                    name = f"{Path(p.path).name}.{tag}.heatmap.png"
                used.add(name)
                names[id(p)] = str(Path(heatmaps) / name)
                atomic_write(Path(heatmaps) / name, p.heatmap)
    if out is not None:
        rows = prediction_rows(preds, predictor.classes)
        for row, p in zip(rows, preds):
            row["heatmap"] = names.get(id(p), "")
        write_csv(
            Path(out),
            rows,
            ["path", "predicted", "confidence"]
            + [f"p_{c}" for c in predictor.classes]
            + ["error"]
            + (["heatmap"] if heatmaps is not None else []),
        )
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
