"""Views: what one sample of a sheet is — the whole sheet resized, or its textured tiles.

A view is the one place that knows the difference between the paper's two methods. Training
asks it for the samples of a split, their sampling weights, how sample probabilities become sheet
probabilities and which sheet rule to keep; prediction asks it for the model inputs of each sheet
and turns their probabilities back into one prediction per sheet; reports ask it for their extra
sections. Nobody else branches on the mode:

    view = create_view("tiles", tile_size=128, scale=0.5)   # training
    view = view_of(run.config)                              # a trained run
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from herbscan.cache import (
    TileMeta,
    TileWindows,
    cache_chosen,
    cache_root,
    cached_tiles,
    check_free_space,
    iter_sheets,
    load_sheets,
    load_tile_sheets,
    tile_cache_bytes,
)
from herbscan.errors import ManifestError, ParameterError, check_choice, check_range
from herbscan.images import input_shape
from herbscan.manifest import Manifest, read_source
from herbscan.metrics import mcnemar_p, operating_point, per_class_accuracy
from herbscan.runs import (
    Aggregation,
    OperatingPoint,
    Preprocessing,
    RunConfig,
    parse,
    positive_class,
)
from herbscan.tiles import AGGREGATIONS, KeptTiles, TileSpec, aggregate, cut, heatmap_png
from herbscan.tiles import otsu_threshold as otsu

MODES = ("full", "tiles")

# Rules `auto` chooses among: each is invariant to the number of tiles on a sheet (a mean, a
# share, or the mean of the top tenth). `max` and `topk` with a fixed k grow with the number of
# tiles, so a sheet scanned at a higher resolution than the validation sheets crosses their
# threshold by having more tiles; they stay available by name.
AUTO_RULES = (("mean", None), ("topk", None), ("vote", None))
AGGREGATION_ALPHA = 0.05


@dataclass
class Samples:
    """The samples of one split: model inputs, a label per input and which sheet each came from.
    For whole sheets `sheet` is 0..n-1; for tiles, many inputs share a sheet."""

    x: np.ndarray | TileWindows  # (n, H, W, 3) uint8
    y: np.ndarray  # (n,) class index (the sheet's label unless a tile label overrides)
    sheet: np.ndarray  # (n,) index into sheet_y
    sheet_y: np.ndarray  # (n_sheets,) sheet label
    paths: list[str]  # sheet paths, aligned with sheet_y
    n_windows: int  # inputs looked at before any were dropped (tiles: all windows)
    entropies: dict | None = None  # tiles: class name → tile entropies of its sheets


@dataclass
class TileScores:
    """Where a sheet's tiles were and what the model made of them (tile views)."""

    coords: list[tuple[int, int]]
    kept: np.ndarray  # bool per window: passed the entropy filter
    scores: np.ndarray  # P(positive class) per window (or of the predicted class); NaN if dropped
    entropy: np.ndarray  # bits per window


@dataclass
class SheetInputs:
    """The model inputs of one sheet and what the view needs to map them back."""

    path: str
    inputs: np.ndarray  # (n, H, W, 3) uint8
    tiles: KeptTiles | None = None


@dataclass
class SheetResult:
    probs: np.ndarray  # (K,)
    label: str
    tiles: TileScores | None = None


def _class_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return len(y) / (k * np.maximum(counts, 1))


def group_probs(
    probs: np.ndarray, groups: np.ndarray, n_groups: int, rule: str = "mean", k: int | None = None
) -> np.ndarray:
    """Aggregate per-sample probabilities into one row per sheet."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    return np.stack(
        [aggregate(probs[order[bounds[i] : bounds[i + 1]]], rule, k) for i in range(n_groups)]
    )


class FullSheets:
    """One sample per sheet: the whole sheet resized to `size` (the paper's 256² method)."""

    heatmaps = False  # a dense model (StainNet) draws its own; a whole-sheet input has none
    caches_by_default = True  # decoded inputs are small: re-evaluating a run reads them back

    def __init__(self, size: int, fit: str = "stretch"):
        self.size, self.fit = size, fit

    @property
    def input_shape(self) -> tuple[int, int]:
        return input_shape(self.size, self.fit)

    def preprocessing(self) -> dict:
        """The view's part of run.json's preprocessing record."""
        return {"mode": "full", "size": self.size, "fit": self.fit}

    def identity(self) -> dict:
        """What a resumed run must share with the one it continues."""
        return {"size": self.size}

    def counts(self, tr: Samples, va: Samples) -> dict:
        """Sample counts for run.json's preprocessing record (none beyond the sheets)."""
        return {}

    def describe(self) -> str:
        return f"{self.size}² ({self.fit})"

    def balance(self, requested: str) -> str:
        return requested

    def check_space(self, paths: Sequence[str | Path], cache_dir) -> None:
        """Whole sheets at the input size are small; nothing to check."""

    def prepare(self, m: Manifest, cache_dir, workers: int, progress: bool) -> None:
        """Settings learnt from the training sheets before sampling (none here)."""

    def samples(
        self, m: Manifest, split: str, classes, cache_dir, workers, skipped, progress
    ) -> Samples:
        sub = m.subset(split)
        paths = sub.paths()
        arrays, ok, failures = load_sheets(
            paths, self.size, self.fit, cache_dir=cache_dir, workers=workers, progress=progress
        )
        for p, err in failures:
            skipped.append({"path": p, "split": split, "error": err})
        y = np.array([classes.index(sub.label(sub.rows[i])) for i in ok], dtype=np.int64)
        return Samples(arrays, y, np.arange(len(y)), y, [str(paths[i]) for i in ok], len(y))

    def sample_weights(self, s: Samples, n_classes: int) -> np.ndarray:
        """Each class drawn equally often when balancing by sampler."""
        return _class_weights(s.y, n_classes)[s.y]

    def sheet_probs(self, probs: np.ndarray, s: Samples) -> np.ndarray:
        return probs

    def choose_rule(self, probs, s: Samples, classes, rule: str) -> Aggregation | None:
        return None

    def operating_point(self, probs: np.ndarray, s: Samples, classes: list[str]) -> OperatingPoint:
        """The threshold on P(positive) with the best balanced accuracy on validation."""
        pos = positive_class(classes)
        pi = classes.index(pos)
        op = operating_point(probs[:, pi], s.sheet_y == pi)
        return OperatingPoint(positive_class=pos, source="validation split", **op)

    def sheets(
        self, paths, *, cache_dir=None, workers=1, progress=False, pool=None, thumbnails=False
    ) -> Iterator[tuple[int, SheetInputs | None, str]]:
        for i, a, err in iter_sheets(
            paths, self.size, self.fit, cache_dir=cache_dir, workers=workers, progress=progress,
            pool=pool,
        ):  # fmt: skip
            yield i, (None if a is None else SheetInputs(str(paths[i]), a[None])), err

    def result(self, si: SheetInputs, probs: np.ndarray, classes: list[str]) -> SheetResult:
        return SheetResult(probs[0], classes[int(probs[0].argmax())])

    def heatmap(self, si: SheetInputs, result: SheetResult) -> bytes:
        return b""

    def report_sections(self, preds, labels: Sequence[str], classes: list[str]) -> dict:
        return {}


class Tiles:
    """Many samples per sheet: `tile_size`² windows every `stride` px at `scale`, blank ones
    (entropy below `min_entropy` bits) dropped; a sheet's tile probabilities are aggregated by
    `aggregation` (the paper's mean, unless validation chose another rule)."""

    heatmaps = True
    # a tiled sheet is 25-70 MB on disk: prediction caches it only where the user chose a place
    caches_by_default = False

    def __init__(
        self,
        spec: TileSpec,
        min_entropy: float | str = "auto",
        aggregation: Aggregation | None = None,
        tile_labels: str | Path | None = None,
    ):
        self.spec, self.min_entropy, self.aggregation = spec, min_entropy, aggregation
        self.tile_labels = tile_labels
        self.rule_of_threshold = "otsu" if min_entropy == "auto" else "fixed"

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.spec.size, self.spec.size)

    @property
    def threshold(self) -> float:
        if self.min_entropy == "auto":
            raise RuntimeError("prepare() sets the entropy cut before tiles are kept")
        return float(self.min_entropy)

    def preprocessing(self) -> dict:
        return {
            "mode": "tiles",
            "size": self.spec.size,
            "tile_size": self.spec.size,
            "stride": self.spec.stride,
            "scale": self.spec.scale,
            "min_entropy": self.threshold,
            "min_entropy_rule": self.rule_of_threshold,
            "tile_labels": str(self.tile_labels) if self.tile_labels else None,
        }

    def identity(self) -> dict:
        s = self.spec
        return {"tile_size": s.size, "stride": s.stride, "scale": s.scale}

    def counts(self, tr: Samples, va: Samples) -> dict:
        return {
            "train_tiles_total": tr.n_windows,
            "train_tiles_kept": len(tr.y),
            "validation_tiles_kept": len(va.y),
        }

    def describe(self) -> str:
        s = self.spec
        return (
            f"{s.size}² tiles every {s.stride} px at scale {s.scale:g}; kept ≥ "
            f"{self.threshold:.2f} bits"
        )

    def balance(self, requested: str) -> str:
        return "sampler"  # per-class and per-sheet balance lives in the sampling weights

    def check_space(self, paths: Sequence[str | Path], cache_dir) -> None:
        root = cache_root(cache_dir)
        if root is not None:
            check_free_space(root, tile_cache_bytes(paths, self.spec, root), "the tile cache")

    def _sheet_tiles(self, paths, cache_dir, workers, progress):
        """(index, sheet tiles or None, error) per path: TileMeta (pixels stay in the tile
        cache) when there is a cache, else SheetTiles decoded in memory."""
        root = cache_root(cache_dir)
        if root is not None:
            return cached_tiles(paths, self.spec, root, workers=workers, progress=progress)
        return load_tile_sheets(
            paths, self.spec, cache_dir=False, workers=workers, progress=progress
        )

    def prepare(self, m: Manifest, cache_dir, workers: int, progress: bool) -> None:
        """`auto`: the Otsu cut of the training sheets' tile entropies (blank paper vs plant)."""
        if self.min_entropy != "auto":
            return
        ent = [
            st.entropy.copy()
            for _, st, _ in self._sheet_tiles(m.paths(), cache_dir, workers, progress)
            if st is not None
        ]
        self.min_entropy = otsu(np.concatenate(ent)) if any(len(e) for e in ent) else 0.0

    def samples(
        self, m: Manifest, split: str, classes, cache_dir, workers, skipped, progress
    ) -> Samples:
        """The kept tiles of a split's sheets (at least the most textured tile of each sheet).

        With a cache, `x` is a TileWindows that reads each batch's windows from the cached
        sheets, so memory does not grow with the number of sheets; without one, the tiles are
        cut into memory."""
        labels = read_tile_labels(self.tile_labels, classes)
        sub = m.subset(split)
        sub_paths = sub.paths()
        xs, ys, sheets, sheet_y, paths, files, xy = [], [], [], [], [], [], []
        entropies: dict[str, list[np.ndarray]] = {c: [] for c in classes}
        total = 0
        for i, st, err in self._sheet_tiles(sub_paths, cache_dir, workers, progress):
            if st is None:
                skipped.append({"path": str(sub_paths[i]), "split": split, "error": err})
                continue
            label = sub.label(sub.rows[i])
            keep = np.flatnonzero(st.entropy >= self.threshold)
            if keep.size == 0:
                keep = np.array([int(np.argmax(st.entropy))])
            coords = [st.coords[j] for j in keep]
            key = str(Path(st.path).resolve())
            tile_y = [classes.index(labels.get((key, x, y), label)) for x, y in coords]
            if isinstance(st, TileMeta):
                files.append(st.sheet_file)
                xy.append(np.asarray(coords, np.int64).reshape(-1, 2))
            else:
                xs.append(cut(st.sheet, coords, self.spec.size))
            ys.append(np.array(tile_y, np.int64))
            sheets.append(np.full(len(keep), len(sheet_y), np.int64))
            sheet_y.append(classes.index(label))
            paths.append(st.path)
            entropies[label].append(st.entropy)
            total += len(st.coords)
        size = self.spec.size
        sheet = np.concatenate(sheets) if sheets else np.zeros(0, np.int64)
        if files:
            x = TileWindows(files, sheet, np.concatenate(xy), size)
        else:
            x = np.concatenate(xs) if xs else np.zeros((0, size, size, 3), np.uint8)
        return Samples(
            x,
            np.concatenate(ys) if ys else np.zeros(0, np.int64),
            sheet,
            np.array(sheet_y, np.int64),
            paths,
            total,
            {c: np.concatenate(v) if v else np.zeros(0) for c, v in entropies.items()},
        )

    def sample_weights(self, s: Samples, n_classes: int) -> np.ndarray:
        return tile_sample_weights(s.sheet, s.sheet_y, n_classes)

    def sheet_probs(self, probs: np.ndarray, s: Samples) -> np.ndarray:
        """Sheet probabilities by the paper's mean rule (how validation scores epochs)."""
        return group_probs(probs, s.sheet, len(s.sheet_y))

    def choose_rule(self, probs, s: Samples, classes, rule: str) -> Aggregation:
        """The sheet rule kept in run.json, chosen on the validation sheets."""
        check_choice("aggregate", rule, ("auto",) + AGGREGATIONS)
        if not len(s.sheet_y):
            chosen = {
                "rule": "mean" if rule == "auto" else rule,
                "k": None,
                "threshold": None,
                "positive_class": positive_class(classes),
                "candidates": [],
            }
        elif rule == "auto":
            chosen = choose_aggregation(probs, s.sheet, s.sheet_y, classes)
        else:
            chosen = choose_aggregation(probs, s.sheet, s.sheet_y, classes, rules=((rule, None),))
            chosen["chosen_because"] = f"asked for ({rule})"
        self.aggregation = parse(Aggregation, chosen, "aggregation")
        return self.aggregation

    def operating_point(self, probs: np.ndarray, s: Samples, classes: list[str]) -> OperatingPoint:
        """The chosen rule's threshold and what it scored on the validation sheets."""
        agg = self.aggregation
        return OperatingPoint(
            positive_class=agg.positive_class,
            threshold=agg.threshold,
            source=f"aggregation {agg.rule}",
            balanced_accuracy=agg.balanced_accuracy,
            precision=agg.precision,
            recall=agg.recall,
            accuracy=agg.accuracy,
            n=len(s.sheet_y),
        )

    def sheets(
        self, paths, *, cache_dir=None, workers=1, progress=False, pool=None, thumbnails=False
    ) -> Iterator[tuple[int, SheetInputs | None, str]]:
        if not cache_chosen(cache_dir):
            cache_dir = False
        for i, kt, err in load_tile_sheets(
            paths, self.spec, cache_dir=cache_dir, workers=workers, progress=progress,
            keep_above=self.threshold, thumbnails=thumbnails, pool=pool,
        ):  # fmt: skip
            yield i, (None if kt is None else SheetInputs(kt.path, kt.tiles, kt)), err

    def result(self, si: SheetInputs, probs: np.ndarray, classes: list[str]) -> SheetResult:
        """Aggregate the kept tiles' probabilities into the sheet's."""
        agg = self.aggregation or Aggregation("mean")
        sheet = aggregate(probs, agg.rule, agg.k)
        if agg.positive_class in classes and agg.threshold is not None:
            pi = classes.index(agg.positive_class)
            label = agg.positive_class if sheet[pi] >= agg.threshold else classes[1 - pi]
            column = pi
        else:
            column = int(sheet.argmax())
            label = classes[column]
        kt = si.tiles
        scores = np.full(len(kt.coords), np.nan, np.float32)
        scores[kt.kept] = probs[:, column]
        return SheetResult(sheet, label, TileScores(kt.coords, kt.kept, scores, kt.entropy))

    def heatmap(self, si: SheetInputs, result: SheetResult) -> bytes:
        """PNG of the sheet thumbnail with each kept tile tinted by its score."""
        t, kt = result.tiles, si.tiles
        return heatmap_png(
            kt.thumbnail, t.coords, self.spec.size, t.scores, t.kept, sheet_shape=kt.shape
        )

    def report_sections(self, preds, labels: Sequence[str], classes: list[str]) -> dict:
        """Report inputs of a tile run: tile entropy by class and the aggregation rule."""
        by_class: dict[str, list] = {c: [] for c in classes}
        kept = total = 0
        for label, p in zip(labels, preds):
            if p.tiles is not None:
                by_class[label].append(p.tiles.entropy)
                kept += int(p.tiles.kept.sum())
                total += len(p.tiles.kept)
        entropy = {
            "by_class": {c: np.concatenate(v).tolist() if v else [] for c, v in by_class.items()},
            "threshold": self.threshold,
            "kept_fraction": kept / max(total, 1),
            "tiles_total": total,
        }
        agg = asdict(self.aggregation) if self.aggregation else {}
        return {"entropy": entropy, "aggregation": agg}


View = FullSheets | Tiles


def create_view(
    mode: str,
    *,
    size: int = 256,
    fit: str = "stretch",
    tile_size: int = 128,
    stride: int | None = None,
    scale: float = 1.0,
    min_entropy: float | str = "auto",
    tile_labels: str | Path | None = None,
) -> View:
    """A view for training, from the user's options (validated)."""
    check_choice("mode", mode, MODES)
    if mode == "full":
        return FullSheets(size, fit)
    if min_entropy != "auto":
        try:
            min_entropy = float(min_entropy)
        except ValueError:
            raise ParameterError(
                f"min_entropy must be 'auto' or a number of bits; got {min_entropy!r}"
            ) from None
        check_range("min_entropy", min_entropy, 0.0, 8.0)
    return Tiles(TileSpec(tile_size, stride or tile_size, scale), min_entropy, None, tile_labels)


def view_of(config: RunConfig) -> View:
    """The view a trained run was trained with."""
    p: Preprocessing = config.preprocessing
    if not config.is_tiles:
        return FullSheets(p.size, p.fit)
    return Tiles(
        TileSpec(p.tile_size, p.stride, p.scale), p.min_entropy, config.aggregation, p.tile_labels
    )


def tile_sample_weights(tile_sheet: np.ndarray, sheet_y: np.ndarray, n_classes: int) -> np.ndarray:
    """Sampling weight per tile so that every class, and every sheet within a class, is drawn
    equally often whatever its number of tiles (a 3,000-tile sheet can't drown a 300-tile one).
    """
    n_sheets = np.bincount(sheet_y, minlength=n_classes).astype(np.float64)
    per_sheet = np.bincount(tile_sheet, minlength=len(sheet_y)).astype(np.float64)
    w = 1.0 / (n_sheets[sheet_y[tile_sheet]] * per_sheet[tile_sheet])
    return w / w.sum()


def read_tile_labels(path: str | Path | None, classes: list[str]) -> dict:
    """Tile-level labels {(resolved sheet path, x, y): label} from a CSV of sheet,x,y,label.

    `sheet` is resolved against the CSV's folder; x and y are window origins at the working
    scale, as in the tile index written by `herbscan tiles`.
    """
    if path is None:
        return {}
    t = read_source(path, path_col="sheet", label_col="label")
    out = {}
    for r in t.rows:
        for c in ("x", "y"):
            if not str(r.get(c, "")).strip().lstrip("-").isdigit():
                raise ManifestError(
                    f"{path}: column {c!r} must hold integer pixel origins; got {r.get(c)!r}"
                )
        if r["label"] not in classes:
            raise ManifestError(
                f"{path}: tile label {r['label']!r} is not a class of the "
                f"training data ({', '.join(classes)})"
            )
        out[(str(t.path(r).resolve()), int(r["x"]), int(r["y"]))] = r["label"]
    return out


def choose_aggregation(
    probs: np.ndarray,
    groups: np.ndarray,
    sheet_y: np.ndarray,
    classes: list[str],
    rules: tuple = AUTO_RULES,
) -> dict:
    """Pick the sheet-aggregation rule (and, for two classes, a decision threshold on
    P(positive)) on validation sheets: the paper's mean rule, unless another rule of AUTO_RULES
    has a higher balanced accuracy *and* beats it in a paired test (McNemar, p <
    AGGREGATION_ALPHA) on the same sheets. Picking the best of several rules on 30 sheets would
    otherwise pick one that wins there by a sheet or two and fails elsewhere. `rules` are
    (rule, k) pairs, the first one the default."""
    pos = positive_class(classes)
    pi = classes.index(pos) if pos else None
    candidates, right = [], []
    for rule, k in rules:
        sp = group_probs(probs, groups, len(sheet_y), rule, k)
        if pi is None:
            pred = sp.argmax(1)
            pcs = [v for v in per_class_accuracy(sheet_y, pred, len(classes)) if v is not None]
            ok = pred == sheet_y
            row = {
                "rule": rule,
                "k": k,
                "threshold": None,
                "balanced_accuracy": float(np.mean(pcs)),
                "accuracy": float(ok.mean()),
            }
        else:
            op = operating_point(sp[:, pi], sheet_y == pi)
            ok = (sp[:, pi] >= op["threshold"]) == (sheet_y == pi)
            row = {
                "rule": rule,
                "k": k,
                "threshold": op["threshold"],
                "balanced_accuracy": op["balanced_accuracy"],
                "accuracy": op["accuracy"],
                "precision": op["precision"],
                "recall": op["recall"],
            }
        right.append(ok)
        candidates.append(row)
    for row, ok in zip(candidates, right):
        row["p_vs_mean"] = mcnemar_p(ok, right[0])
    best = max(range(len(candidates)), key=lambda i: candidates[i]["balanced_accuracy"])
    n = len(sheet_y)
    if best == 0:
        why = f"the paper's mean rule is as good as any other on {n} validation sheets"
    elif candidates[best]["p_vs_mean"] < AGGREGATION_ALPHA:
        why = (
            f"{candidates[best]['rule']} beats the mean rule on {n} validation sheets "
            f"(McNemar p = {candidates[best]['p_vs_mean']:.3g})"
        )
    else:
        why = (
            f"{candidates[best]['rule']} scored higher on {n} validation sheets, but not beyond "
            f"their noise (McNemar p = {candidates[best]['p_vs_mean']:.2g}): too few sheets to "
            "choose another rule, so the paper's mean rule is kept"
        )
        best = 0
    return dict(candidates[best], positive_class=pos, candidates=candidates, chosen_because=why)
