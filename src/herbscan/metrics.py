"""Classification metrics for herbarium sheets, from true labels and predicted probabilities.

Numpy only, so evaluation, screening summaries and reports share one definition of each number.
`y_true` holds class indices (ints in [0, K)); `probs` is an (n, K) array whose rows sum to 1.
Everything `compute_metrics` returns is plain Python (JSON-serialisable), never numpy types.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_DISCARD = tuple(round(0.05 * i, 2) for i in range(11))
TOP_K = (2, 3, 5)
_PROB_SUM_TOLERANCE = 1e-2
_LOG_LOSS_FLOOR = 1e-15


def _labels(y: object, name: str, n_classes: int | None = None) -> np.ndarray:
    """Return `y` as a non-empty 1-D int64 array of class indices, or raise ValueError."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sheet")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class indices; got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n_classes is not None and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes - 1}]; "
            f"got values from {arr.min()} to {arr.max()}"
        )
    return arr


def _n_classes(n_classes: int) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer; got {n_classes!r}")
    return int(n_classes)


def _probs(probs: object, n: int) -> np.ndarray:
    """Return `probs` as an (n, K) float64 array of probabilities, or raise ValueError."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise ValueError(f"probs must have shape ({n}, n_classes); got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("probs must be finite and non-negative (pass probabilities, not logits)")
    sums = arr.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > _PROB_SUM_TOLERANCE:
        raise ValueError(
            f"each row of probs must sum to 1 (apply softmax first); row {worst} sums to "
            f"{sums[worst]:.4g}"
        )
    return arr


def _pair(y_true: object, y_pred: object, n_classes: int | None = None):
    t = _labels(y_true, "y_true", n_classes)
    p = _labels(y_pred, "y_pred", n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    return t, p


def _pair_probs(y_true: object, probs: object):
    p = np.asarray(probs)
    t = _labels(y_true, "y_true", p.shape[1] if p.ndim == 2 else None)
    return t, _probs(p, t.size)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: rows are true classes, columns predicted ones (int64)."""
    k = _n_classes(n_classes)
    t, p = _pair(y_true, y_pred, k)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def accuracy(y_true, y_pred) -> float:
    """Fraction of sheets whose predicted class equals the true class."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def per_class_accuracy(y_true, y_pred, n_classes: int) -> list[float | None]:
    """Recall of each class: correct / true sheets of that class; None for a class with none."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(len(cm))]


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in y_true or y_pred.

    Classes absent from both are left out, so a class missing from a small test split neither
    counts as perfect nor as zero.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm)
    # 2TP / (2TP + FP + FN) == 2TP / (row sum + column sum)
    denom = cm.sum(axis=1) + cm.sum(axis=0)
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def top_k_accuracy(y_true, probs, k: int) -> float:
    """Fraction of sheets whose true class is among the k most probable classes.

    Ties count in the sheet's favour: the true class is in the top k when fewer than k classes
    have a strictly higher probability.
    """
    t, p = _pair_probs(y_true, probs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= p.shape[1]:
        raise ValueError(f"k must be an integer in [1, {p.shape[1]}]; got {k!r}")
    p_true = p[np.arange(t.size), t]
    higher = (p > p_true[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def coverage_curve(y_true, probs, discard: Sequence[float] = DEFAULT_DISCARD) -> list[dict]:
    """Accuracy after setting aside the least confident fraction of sheets.

    Confidence is the highest class probability. For each fraction f in `discard`, the
    floor(f * n) least confident sheets are dropped (ties broken by input order) and accuracy is
    measured on the rest. `threshold` is the lowest confidence still kept, i.e. the cut-off a
    curator would apply to get that coverage.
    """
    t, p = _pair_probs(y_true, probs)
    conf = p.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    correct = (p.argmax(axis=1) == t)[order]
    conf = conf[order]
    n = t.size
    curve = []
    for f in discard:
        f = float(f)
        if not 0.0 <= f < 1.0:
            raise ValueError(f"discard fractions must be in [0, 1); got {f!r}")
        kept = n - math.floor(f * n + 1e-9)
        curve.append(
            {
                "discarded": f,
                "coverage": 1.0 - f,
                "n": kept,
                "threshold": float(conf[kept - 1]),
                "accuracy": float(correct[:kept].mean()),
            }
        )
    return curve


def calibration(y_true, probs, n_bins: int = 10) -> dict:
    """Reliability of the top-class confidence: equal-width bins over [0, 1] and the ECE.

    Bin i covers [i/n_bins, (i+1)/n_bins), the last one includes 1. Empty bins are listed with
    count 0 and None for confidence and accuracy. ECE = sum over bins of
    count/n * |accuracy - confidence|.
    """
    t, p = _pair_probs(y_true, probs)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == t
    edges = np.arange(n_bins + 1) / n_bins
    index = np.searchsorted(edges[1:-1], conf, side="right")
    bins = []
    for i in range(n_bins):
        member = index == i
        count = int(member.sum())
        row = {
            "low": float(edges[i]),
            "high": float(edges[i + 1]),
            "count": count,
            "confidence": None,
            "accuracy": None,
        }
        if count:
            row["confidence"] = float(conf[member].mean())
            row["accuracy"] = float(correct[member].mean())
        bins.append(row)
    return {"ece": _ece(t, p, n_bins), "bins": bins}


def log_loss(y_true, probs) -> float:
    """Mean negative natural log of the probability given to the true class (floored at 1e-15)."""
    t, p = _pair_probs(y_true, probs)
    p_true = np.maximum(p[np.arange(t.size), t], _LOG_LOSS_FLOOR)
    return float(-np.mean(np.log(p_true)))


def _ece(t: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over confidence bins of |hits − confidence| / n."""
    conf, correct = p.max(axis=1), p.argmax(axis=1) == t
    edges = np.arange(n_bins + 1) / n_bins
    index = np.searchsorted(edges[1:-1], conf, side="right")
    gap = np.bincount(index, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / t.size)


def resample_groups(groups: Sequence, n_boot: int, seed: int = 0):
    """Yield `n_boot` bootstrap samples as index arrays: whole groups (specimens: all images of
    one specimen together) drawn with replacement, as many as there are groups."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1]
    members = [np.flatnonzero(g == i) for i in range(g.max() + 1)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])


def intervals(
    y_true, probs, groups: Sequence | None = None, n_boot: int = 1000, seed: int = 0
) -> dict:
    """95% intervals: Wilson for proportions (accuracy, per-class accuracy), and a percentile
    bootstrap over specimens (`groups`; over sheets when None) for balanced accuracy, macro-F1
    and ECE, which are not proportions."""
    t, p = _pair_probs(y_true, probs)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {
        "accuracy": list(wilson_interval(int((pred == t).sum()), t.size)),
        "per_class_accuracy": [
            list(wilson_interval(int(((pred == t) & (t == c)).sum()), int((t == c).sum())))
            if (t == c).any()
            else None
            for c in range(k)
        ],
    }
    stats = []
    for idx in resample_groups(groups if groups is not None else np.arange(t.size), n_boot, seed):
        tb, pb = t[idx], pred[idx]
        per = [float(np.mean(pb[tb == c] == c)) for c in range(k) if (tb == c).any()]
        stats.append((np.mean(per), macro_f1(tb, pb, k), _ece(tb, p[idx])))
    lo, hi = np.percentile(np.array(stats), [2.5, 97.5], axis=0)
    for j, name in enumerate(("balanced_accuracy", "macro_f1", "ece")):
        out[name] = [float(lo[j]), float(hi[j])]
    out["method"] = (
        f"Wilson for proportions; percentile bootstrap ({n_boot}×) over "
        f"{'specimens' if groups is not None else 'sheets'} for the rest"
    )
    return out


def compute_metrics(y_true, probs, classes: list[str], groups: Sequence | None = None) -> dict:
    """Every summary number of an evaluation as one JSON-serialisable dict, with a 95% interval
    on each (`intervals`; `groups` are the sheets' specimen ids for the bootstrap).

    The predicted class of a sheet is its most probable class (first one on ties).
    """
    t, p = _pair_probs(y_true, probs)
    classes = [str(c) for c in classes]
    k = p.shape[1]
    if len(classes) != k:
        raise ValueError(f"classes has {len(classes)} names but probs has {k} columns")
    if len(set(classes)) != k:
        raise ValueError(f"class names must be unique; got {classes}")
    pred = p.argmax(axis=1)
    per_class = per_class_accuracy(t, pred, k)
    present = [a for a in per_class if a is not None]
    hits = [int(((pred == c) & (t == c)).sum()) for c in range(k)]
    called = [int((pred == c).sum()) for c in range(k)]
    return {
        "n": int(t.size),
        "classes": classes,
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": float(np.mean(present)),
        "per_class_accuracy": dict(zip(classes, per_class)),
        # of the sheets predicted as a class, the share that are (recall is per_class_accuracy)
        "per_class_precision": {
            c: (h / n if n else None) for c, h, n in zip(classes, hits, called)
        },
        "confusion_matrix": confusion_matrix(t, pred, k).tolist(),
        "macro_f1": macro_f1(t, pred, k),
        "top_k_accuracy": {str(j): top_k_accuracy(t, p, j) for j in TOP_K if j < k},
        "coverage": coverage_curve(t, p),
        "calibration": calibration(t, p),
        "log_loss": log_loss(t, p),
        "intervals": {
            **(iv := intervals(t, p, groups)),
            "per_class_accuracy": dict(zip(classes, iv["per_class_accuracy"])),
            "per_class_precision": {
                c: (list(wilson_interval(h, n)) if n else None)
                for c, h, n in zip(classes, hits, called)
            },
        },
    }


def mcnemar_p(right_a, right_b) -> float:
    """Two-sided exact McNemar test of paired outcomes (bool per sheet): the binomial p-value of
    the sheets only one of the two got right."""
    a, b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2.0**n
    return float(min(1.0, 2 * tail))


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (sensible for small n and k = 0 or n)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def operating_point(scores: np.ndarray, is_positive: np.ndarray) -> dict:
    """The threshold on P(positive) with the best balanced accuracy (ties: nearest 0.5), and
    the precision and recall it gives on these sheets."""
    scores = np.asarray(scores, dtype=np.float64)
    is_positive = np.asarray(is_positive, dtype=bool)
    best = None
    for t in sorted(set(np.round(scores, 4)) | {0.5}):
        flag = scores >= t
        rates = [
            flag[is_positive].mean() if is_positive.any() else None,
            (~flag[~is_positive]).mean() if (~is_positive).any() else None,
        ]
        bal = float(np.mean([r for r in rates if r is not None]))
        key = (bal, -abs(t - 0.5))
        if best is None or key > best[0]:
            best = (key, float(t), bal)
    _, t, bal = best
    flag = scores >= t
    tp = int((flag & is_positive).sum())
    return {
        "threshold": t,
        "balanced_accuracy": bal,
        "precision": tp / int(flag.sum()) if flag.any() else None,
        "recall": tp / int(is_positive.sum()) if is_positive.any() else None,
        "accuracy": float((flag == is_positive).mean()),
        "n": len(scores),
    }
