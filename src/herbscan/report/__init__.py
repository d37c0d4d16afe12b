"""Self-contained HTML report of an evaluation: numbers, figures and misclassified sheets.

The report is rendered from tables (the `compute_metrics` dict, per-sheet predictions, training
history), never from a live model, with a Jinja2 template packaged next to this module and
autoescaping on, so sheet paths and class names are shown exactly as given and cannot inject
markup. Figures and thumbnails are embedded as data URIs: the single file can be mailed or
archived and opens anywhere without a network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
import numpy as np

from herbscan.fileio import atomic_write

from . import figures

MAX_HIST_PANELS = 24
MAX_CONFUSION_TABLE = 50
TOP_CONFUSIONS = 10
GALLERY_TOP_PROBS = 3
MAX_ENTROPY_CLASSES = 10
_DIAGONAL_RGB = "37, 99, 235"
_ERROR_RGB = "220, 38, 38"

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("herbscan.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _card(label: str, value: str, detail: str | None = None, alert: bool = False) -> dict:
    """One number of a report's summary: its value, what it is, a small line under it, and
    whether it calls for action (drawn in red)."""
    return {"label": label, "value": value, "detail": detail, "alert": alert}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: object) -> str:
    """A history or info value as short text."""
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _info_value(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_num(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_num(v) for v in value)
    return _num(value)


SMALL_TEST = 30
"""Below this many sheets (or 10 in a class) the report says the numbers cannot tell models
apart: a 95% interval on an accuracy of 0.8 from 30 sheets spans about ±14 points."""


def _majority(metrics: dict, classes: list[str]) -> tuple[str, float]:
    support = [sum(row) for row in metrics["confusion_matrix"]]
    i = int(np.argmax(support))
    return classes[i], support[i] / max(sum(support), 1)


def _hazard(
    metrics: dict, predictions: Sequence[dict], classes: list[str], hazard: Mapping | None
) -> dict | None:
    """What a collection manager acts on, for a class to find (e.g. contaminated): sheets of it
    missed, its recall, and how many sheets a person must check at the operating point."""
    if not hazard or hazard.get("positive") not in classes or not predictions:
        return None
    pos = hazard["positive"]
    pi = classes.index(pos)
    thr = hazard.get("threshold")
    y_true, probs = _arrays(predictions, classes)
    flagged = probs[:, pi] >= thr if thr is not None else probs.argmax(1) == pi
    actual = y_true == pi
    n_pos, n = int(actual.sum()), len(y_true)
    missed = int((actual & ~flagged).sum())
    checked = int(flagged.sum())
    from herbscan.metrics import wilson_interval

    low, high = wilson_interval(n_pos - missed, n_pos)
    right = checked - int((flagged & ~actual).sum())
    return {
        "positive": pos,
        "threshold": None if thr is None else f"{thr:.3f}",
        "source": hazard.get("source") or "",
        "cards": [
            _card(f"{pos} sheets missed", f"{missed:,} of {n_pos:,}", alert=missed > 0),
            _card(
                f"recall of {pos}",
                _pct(1 - missed / n_pos) if n_pos else "—",
                f"95% interval {_pct(low)}–{_pct(high)}" if n_pos else None,
            ),
            _card(
                "sheets to check by hand",
                f"{checked:,} of {n:,}",
                f"{_pct(checked / n)} of the sheets",
            ),
            _card(f"flagged sheets that are {pos}", _pct(right / checked) if checked else "—"),
        ],
    }


def _small_test(metrics: dict, classes: list[str]) -> str | None:
    from herbscan.metrics import wilson_interval

    n = metrics["n"]
    smallest = min(sum(row) for row in metrics["confusion_matrix"])
    if n >= SMALL_TEST and smallest >= 10:
        return None
    low, high = metrics.get("intervals", {}).get("accuracy") or wilson_interval(
        round(metrics["accuracy"] * n), n
    )
    return (
        f"Only {n} sheets were evaluated (the smallest class has {smallest}): the 95% "
        f"interval on the accuracy runs from {_pct(low)} to {_pct(high)}. That is too few "
        "to trust the numbers below or to tell two models apart; evaluate on more sheets "
        "(e.g. `herbscan evaluate RUN --data other.csv`)."
    )


def _headline(metrics: dict, classes: list[str]) -> list[dict]:
    name, share = _majority(metrics, classes)
    iv = metrics.get("intervals", {})

    def between(key, fmt):
        return f"95%: {fmt(iv[key][0])}–{fmt(iv[key][1])}" if key in iv else None

    def three(v):
        return f"{v:.3f}"

    return [
        _card("Sheets", f"{metrics['n']:,}"),
        _card("Accuracy", _pct(metrics["accuracy"]), between("accuracy", _pct)),
        _card(f"Always answering “{name}”", _pct(share)),
        _card(
            "Balanced accuracy",
            _pct(metrics["balanced_accuracy"]),
            between("balanced_accuracy", _pct),
        ),
        _card("Macro-F1", three(metrics["macro_f1"]), between("macro_f1", three)),
        *(
            _card(f"Top-{k} accuracy", _pct(v))
            for k, v in metrics.get("top_k_accuracy", {}).items()
        ),
        _card("ECE", three(metrics["calibration"]["ece"]), between("ece", three)),
        _card("Log loss", three(metrics["log_loss"])),
    ]


def _per_class(metrics: dict, classes: list[str]) -> list[dict]:
    cm = metrics["confusion_matrix"]
    iv = metrics.get("intervals") or {}

    def interval(key: str, name: str) -> str:
        pair = (iv.get(key) or {}).get(name)
        return f"{_pct(pair[0])}–{_pct(pair[1])}" if pair else "—"

    rows = []
    for i, name in enumerate(classes):
        acc = metrics["per_class_accuracy"].get(name)
        rows.append(
            {
                "name": name,
                "support": sum(cm[i]),
                "correct": cm[i][i],
                "predicted": sum(row[i] for row in cm),
                "accuracy": _pct(acc),
                "accuracy_interval": interval("per_class_accuracy", name),
                "precision": _pct((metrics.get("per_class_precision") or {}).get(name)),
                "precision_interval": interval("per_class_precision", name),
                "bar": 0.0 if acc is None else round(100 * acc, 1),
            }
        )
    return rows


def _confusion(metrics: dict, classes: list[str]) -> dict:
    cm = metrics["confusion_matrix"]
    k = len(classes)
    table = None
    if k <= MAX_CONFUSION_TABLE:
        table = []
        for i, row in enumerate(cm):
            total = sum(row)
            cells = []
            for j, count in enumerate(row):
                alpha = count / total if total else 0.0
                cells.append(
                    {
                        "count": count,
                        "title": f"true {classes[i]}, predicted {classes[j]}: {count}",
                        "rgb": _DIAGONAL_RGB if i == j else _ERROR_RGB,
                        "alpha": f"{0.08 + 0.8 * alpha:.2f}" if count else "0",
                        "dark": alpha > 0.5,
                    }
                )
            table.append({"index": i + 1, "name": classes[i], "total": total, "cells": cells})
    pairs = sorted(
        ((cm[i][j], i, j) for i in range(k) for j in range(k) if i != j and cm[i][j]),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    top = [
        {"true": classes[i], "pred": classes[j], "count": c, "share": _pct(c / sum(cm[i]))}
        for c, i, j in pairs[:TOP_CONFUSIONS]
    ]
    return {
        "table": table,
        "names_in_header": k <= 6,
        "top": top if k > 2 else [],
        "limit": MAX_CONFUSION_TABLE,
    }


def _arrays(predictions: Sequence[dict], classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """True class indices and the (n, K) probability matrix of the predictions."""
    index = {name: i for i, name in enumerate(classes)}
    y_true = np.empty(len(predictions), dtype=np.int64)
    probs = np.empty((len(predictions), len(classes)), dtype=np.float64)
    for row_number, p in enumerate(predictions):
        if p["true"] not in index:
            raise ValueError(
                f"prediction for {p['path']!r} has true class {p['true']!r}, "
                f"which is not one of the report's classes {classes}"
            )
        if len(p["probs"]) != len(classes):
            raise ValueError(
                f"prediction for {p['path']!r} has {len(p['probs'])} "
                f"probabilities; expected one per class ({len(classes)})"
            )
        y_true[row_number] = index[p["true"]]
        probs[row_number] = p["probs"]
    return y_true, probs


def _histograms(predictions: Sequence[dict], classes: list[str]) -> dict:
    if not predictions:
        return {"uri": None, "note": None}
    y_true, probs = _arrays(predictions, classes)
    k = len(classes)
    shown = list(range(k))
    note = None
    if k > MAX_HIST_PANELS:
        support = np.bincount(y_true, minlength=k)
        shown = sorted(np.argsort(-support, kind="stable")[:MAX_HIST_PANELS].tolist())
        note = f"Shown for the {MAX_HIST_PANELS} classes with the most sheets, of {k}."
    return {"uri": figures.probability_histograms(probs, y_true, classes, shown), "note": note}


def _gallery(gallery: Sequence[dict], classes: list[str]) -> list[dict]:
    items = []
    for sheet in gallery:
        probs = sorted(zip(classes, sheet["probs"]), key=lambda t: -t[1])
        if len(classes) > GALLERY_TOP_PROBS:
            # the most probable classes, and always the true one
            probs = [
                t for i, t in enumerate(probs) if i < GALLERY_TOP_PROBS or t[0] == sheet["true"]
            ]
        items.append(
            {
                "path": str(sheet["path"]),
                "true": sheet["true"],
                "pred": sheet["pred"],
                "thumbnail": figures.image_data_uri(sheet.get("thumbnail")),
                "href": _file_uri(sheet["path"]),
                "probs": [
                    {
                        "name": name,
                        "value": f"{p:.3f}",
                        "true": name == sheet["true"],
                        "pred": name == sheet["pred"],
                    }
                    for name, p in probs
                ],
            }
        )
    return items


def _file_uri(path: object) -> str:
    """A link to the full sheet on this machine (it opens where the files are reachable)."""
    try:
        return Path(str(path)).resolve().as_uri()
    except ValueError:
        return ""


def _finite_float(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _entropy(entropy: Mapping | None) -> dict | None:
    """The "Tile entropy" section: a per-class figure, a small table and the kept share."""
    if entropy is None:
        return None
    threshold = _finite_float(entropy.get("threshold"))
    classes = []
    for name, values in (entropy.get("by_class") or {}).items():
        bits = np.asarray(values, dtype=np.float64).ravel()
        bits = np.clip(bits[np.isfinite(bits)], 0.0, figures.ENTROPY_MAX_BITS)
        classes.append((str(name), bits))
    note = None
    shown = [c for c in classes if c[1].size]
    if len(shown) > MAX_ENTROPY_CLASSES:
        largest = sorted(range(len(shown)), key=lambda i: -shown[i][1].size)
        shown = [shown[i] for i in sorted(largest[:MAX_ENTROPY_CLASSES])]
        note = (
            f"The figure shows the {MAX_ENTROPY_CLASSES} classes with the most tiles, "
            f"of {len(classes)}."
        )
    rows = []
    for name, bits in classes:
        below = None if threshold is None or not bits.size else float(np.mean(bits < threshold))
        rows.append(
            {
                "name": name,
                "n": f"{bits.size:,}",
                "median": f"{np.median(bits):.2f}" if bits.size else "—",
                "below": "—" if below is None else _pct(below),
            }
        )
    kept = _finite_float(entropy.get("kept_fraction"))
    total = entropy.get("tiles_total")
    return {
        "uri": figures.entropy_histograms(shown, threshold) if shown else None,
        "note": note,
        "threshold": None if threshold is None else f"{threshold:.2f}",
        "rows": rows,
        "kept": None if kept is None else _pct(kept),
        "total": None if total is None else f"{int(total):,}",
    }


_RULES = {
    "mean": "the mean of {p} over the sheet's tiles",
    "max": "the highest {p} of any of the sheet's tiles",
    "topk": "the mean of the {k} highest {p} of the sheet's tiles",
    "vote": "the share of the sheet's tiles whose most likely class is {c}",
}


def _rule_name(rule: str, k: int | None) -> str:
    return f"{rule} (k = {k})" if k is not None else rule


def _same_rule(a: Mapping, b: Mapping) -> bool:
    if str(a.get("rule")) != str(b.get("rule")) or a.get("k") != b.get("k"):
        return False
    ta, tb = _finite_float(a.get("threshold")), _finite_float(b.get("threshold"))
    return ta == tb or (ta is not None and tb is not None and math.isclose(ta, tb))


def _aggregation(aggregation: Mapping | None) -> dict | None:
    """The "Sheet aggregation" section: the chosen rule and the validation candidates."""
    if aggregation is None:
        return None
    rule = str(aggregation["rule"])
    k = aggregation.get("k")
    threshold = _finite_float(aggregation.get("threshold"))
    positive = aggregation.get("positive_class")
    p = "P(positive class)" if positive is None else f"P({positive})"
    key = rule.lower().replace("-", "").replace("_", "")
    template = _RULES.get(key)
    description = (
        template.format(
            p=p,
            k=k if k is not None else "k",
            c="the positive class" if positive is None else positive,
        )
        if template
        else None
    )
    candidates = sorted(
        aggregation.get("candidates") or (), key=lambda c: -float(c["balanced_accuracy"])
    )
    rows = [
        {
            "rule": str(c["rule"]),
            "k": "—" if c.get("k") is None else str(c["k"]),
            "threshold": "—"
            if _finite_float(c.get("threshold")) is None
            else f"{float(c['threshold']):.3f}",
            "balanced_accuracy": _pct(float(c["balanced_accuracy"])),
            "accuracy": _pct(float(c["accuracy"])),
            "p_vs_mean": "—" if c.get("p_vs_mean") is None else f"{float(c['p_vs_mean']):.2g}",
            "chosen": _same_rule(c, aggregation),
        }
        for c in candidates
    ]
    return {
        "rule": _rule_name(rule, k),
        "description": description,
        "threshold": None if threshold is None else f"{threshold:.3f}",
        "positive": None if positive is None else str(positive),
        "because": aggregation.get("chosen_because"),
        "rows": rows,
    }


def _heatmaps(heatmaps: Sequence[dict] | None) -> list[dict] | None:
    if heatmaps is None:
        return None
    items = []
    for sheet in heatmaps:
        score = _finite_float(sheet.get("score"))
        items.append(
            {
                "path": str(sheet["path"]),
                "true": str(sheet["true"]),
                "pred": str(sheet["pred"]),
                "correct": str(sheet["true"]) == str(sheet["pred"]),
                "score": "—" if score is None else f"{score:.3f}",
                "image": figures.image_data_uri(sheet.get("png")),
                "caption": str(sheet.get("caption") or ""),
            }
        )
    return items


def _history_table(history: Sequence[dict]) -> dict:
    known = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    present = {key for row in history for key in row}
    columns = [k for k in known if k in present] + sorted(present - set(known))
    rows = []
    for row in history:
        cells = []
        for key in columns:
            value = row.get(key)
            if value is None:
                cells.append("—")
            elif "accuracy" in key and isinstance(value, (int, float)):
                cells.append(_pct(value))
            else:
                cells.append(_num(value))
        rows.append(cells)
    return {"columns": columns, "rows": rows}


def write_report(
    path: str | os.PathLike,
    *,
    title: str,
    metrics: dict,
    predictions: Sequence[dict],
    classes: list[str],
    gallery: Sequence[dict] = (),
    history: Sequence[dict] | None = None,
    notes: Sequence[str] = (),
    info: Mapping | None = None,
    entropy: Mapping | None = None,
    aggregation: Mapping | None = None,
    heatmaps: Sequence[dict] | None = None,
    hazard: Mapping | None = None,
) -> Path:
    """Write the evaluation report as one self-contained HTML file and return its path.

    `metrics` is the `compute_metrics` dict; `predictions` one dict per sheet with keys path,
    true, pred, probs (aligned with `classes`); `gallery` the misclassified sheets to show, each
    also with `thumbnail` (JPEG or PNG bytes); `history` training rows (epoch, train_loss,
    train_accuracy, val_loss, val_accuracy, …); `notes` warnings shown at the top; `info` run
    facts shown as a small table. `hazard` {"positive", "threshold", "source"} names a class
    to find (e.g. contaminated) and its operating point: the summary then starts with the
    sheets of it missed, its recall and the sheets to check by hand. The file is written
    atomically.

    Tile mode adds up to three sections, each only when its argument is given:
    `entropy` {"by_class": {class: tile entropies in bits}, "threshold", "kept_fraction",
    "tiles_total"} draws the entropy distribution of the labelled tiles per class against the
    blank-paper threshold; `aggregation` {"rule", "k", "threshold", "positive_class",
    "candidates": [{"rule", "k", "threshold", "balanced_accuracy", "accuracy"}, …]} names the
    rule that turns tile probabilities into a sheet score, chosen on the validation split, and
    tabulates the candidates; `heatmaps` (one dict per sheet with path, true, pred, score, png —
    an overlay of P(positive) per tile — and caption) shows the overlays as a grid. An empty
    `heatmaps` sequence gives a section saying there are none; None leaves it out.
    """
    classes = [str(c) for c in classes]
    if list(metrics["classes"]) != classes:
        raise ValueError(
            f"metrics are for classes {metrics['classes']}, but the report was given {classes}"
        )
    history = list(history or [])
    n_wrong = sum(1 for p in predictions if p["true"] != p["pred"])
    html = _env.get_template("report.html.j2").render(
        title=title,
        notes=list(notes) + [n for n in (_small_test(metrics, classes),) if n],
        hazard=_hazard(metrics, predictions, classes, hazard),
        info=[(str(k), _info_value(v)) for k, v in (info or {}).items()],
        headline=_headline(metrics, classes),
        interval_method=metrics.get("intervals", {}).get("method", "no intervals given"),
        classes=classes,
        per_class=_per_class(metrics, classes),
        confusion=_confusion(metrics, classes),
        histograms=_histograms(predictions, classes),
        n_predictions=len(predictions),
        n_wrong=n_wrong,
        gallery=_gallery(gallery, classes),
        coverage=[
            {
                "discarded": _pct(r["discarded"]),
                "n": r["n"],
                "threshold": f"{r['threshold']:.3f}" if "threshold" in r else "—",
                "accuracy": _pct(r["accuracy"]),
            }
            for r in metrics["coverage"]
        ],
        coverage_uri=figures.coverage_figure(metrics["coverage"]),
        ece=f"{metrics['calibration']['ece']:.3f}",
        calibration_uri=figures.reliability_figure(metrics["calibration"]),
        training_uri=figures.training_figure(history) if history else None,
        history=_history_table(history),
        entropy=_entropy(entropy),
        aggregation=_aggregation(aggregation),
        heatmaps=_heatmaps(heatmaps),
    )
    return atomic_write(Path(path), html)
