"""Report figures as PNG data URIs, drawn with matplotlib's object API.

`matplotlib.figure.Figure` is used directly (never pyplot), so no GUI backend is chosen, no
global figure state is kept, and a report can be written from any thread or headless server.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

DPI = 96
HIST_BINS = np.linspace(0.0, 1.0, 21)
GRID_COLUMNS = 4
LABEL_CHARS = 28
TRUE_COLOR = "#2563eb"
OTHER_COLOR = "#9ca3af"
SECOND_COLOR = "#ea580c"


def _label(text: object) -> str:
    """A class name safe for matplotlib text: shortened, with `$` not starting mathtext."""
    text = str(text)
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def _data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def probability_histograms(
    probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str], shown: Sequence[int]
) -> str:
    """Distribution of predicted class probabilities, split by true class.

    Two classes: one panel per true class, each a histogram of P(first class) — the figure the
    mercury-stain paper uses to show how cleanly the two groups separate. More classes: one panel
    per class c in `shown`, comparing P(c) on sheets of class c with P(c) on all other sheets,
    each as a fraction of its group on a log scale, so a small class stays visible next to the
    rest and the few other sheets given a high P(c) (the confusions) are not lost.
    """
    if len(classes) == 2:
        fig = _new_figure(7.5, 2.8)
        axes = fig.subplots(1, 2, sharex=True)
        p0 = probs[:, 0]
        for ax, c, color in zip(axes, (0, 1), (TRUE_COLOR, SECOND_COLOR)):
            values = p0[y_true == c]
            ax.hist(values, bins=HIST_BINS, color=color, edgecolor="white", linewidth=0.5)
            ax.set_title(f"True class: {_label(classes[c])} (n={values.size})", fontsize=9)
            ax.set_xlabel(f"P({_label(classes[0])})", fontsize=8)
            ax.set_ylabel("sheets", fontsize=8)
            ax.set_xlim(0, 1)
            _style(ax)
        return _data_uri(fig)

    rows = math.ceil(len(shown) / GRID_COLUMNS)
    cols = math.ceil(len(shown) / rows)
    low = 0.5 / len(y_true)
    # A fixed layout and one `stairs` artist per histogram: constrained layout and per-bar
    # patches take seconds on a grid of twenty panels.
    fig = Figure(figsize=(2.2 * cols + 0.5, 1.6 * rows + 0.7), dpi=DPI)
    fig.set_facecolor("white")
    axes = fig.subplots(
        rows,
        cols,
        squeeze=False,
        sharex=True,
        sharey=True,
        gridspec_kw={"hspace": 0.45, "wspace": 0.12},
    ).ravel()
    fig.subplots_adjust(
        left=0.75 / fig.get_figwidth(),
        right=0.98,
        top=1 - 0.3 / fig.get_figheight(),
        bottom=0.65 / fig.get_figheight(),
    )
    for ax, c in zip(axes, shown):
        own = y_true == c
        for is_own in (False, True):
            values = probs[own == is_own, c]
            if values.size:
                counts, _ = np.histogram(values, bins=HIST_BINS)
                fraction = np.where(counts > 0, counts / values.size, low)
                if is_own:
                    ax.stairs(fraction, HIST_BINS, baseline=low, color=TRUE_COLOR, linewidth=1.4)
                else:
                    ax.stairs(
                        fraction, HIST_BINS, baseline=low, fill=True, color=OTHER_COLOR, alpha=0.6
                    )
        ax.set_title(f"P({_label(classes[c])})  n={int(own.sum())}", fontsize=8)
        _style(ax)
    for i, ax in enumerate(axes):
        if i >= len(shown):
            ax.set_visible(False)
            axes[i - cols].xaxis.set_tick_params(labelbottom=True)
    ax = axes[0]
    ax.set_xlim(0, 1)
    ax.set_yscale("log")
    ax.set_ylim(low, 1.5)
    ax.yaxis.set_major_locator(
        FixedLocator([10.0**e for e in range(math.floor(math.log10(low)) + 1, 1)])
    )
    ax.yaxis.set_minor_locator(NullLocator())
    fig.legend(
        [Patch(color=OTHER_COLOR, alpha=0.6), Line2D([], [], color=TRUE_COLOR)],
        ["true class = other", "true class = this"],
        loc="lower center",
        ncols=2,
        fontsize=8,
        frameon=False,
    )
    fig.supylabel("fraction of group (log scale)", fontsize=8, x=0.1 / fig.get_figwidth())
    return _data_uri(fig)


def coverage_figure(curve: Sequence[dict]) -> str:
    """Accuracy on the sheets kept after setting aside the least confident fraction."""
    discarded = [100 * row["discarded"] for row in curve]
    acc = [100 * row["accuracy"] for row in curve]
    fig = _new_figure(5.2, 2.9)
    ax = fig.subplots()
    ax.plot(discarded, acc, marker="o", markersize=4, color=TRUE_COLOR)
    for i in {0, len(curve) - 1}:
        ax.annotate(
            f"{acc[i]:.1f}%",
            (discarded[i], acc[i]),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
        )
    low = min(acc)
    ax.set_ylim(max(0.0, low - 0.15 * (100 - low) - 1), 100.5)
    ax.set_xlabel("least confident sheets set aside (%)", fontsize=8)
    ax.set_ylabel("accuracy on the rest (%)", fontsize=8)
    _style(ax)
    return _data_uri(fig)


def reliability_figure(calib: dict) -> str:
    """Reliability diagram: accuracy vs mean confidence per bin, with sheet counts below."""
    bins = calib["bins"]
    width = bins[0]["high"] - bins[0]["low"]
    full = [b for b in bins if b["count"]]
    centers = [(b["low"] + b["high"]) / 2 for b in full]
    fig = _new_figure(4.6, 4.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(
        [0, 1], [0, 1], linestyle="--", color=OTHER_COLOR, linewidth=1, label="perfect calibration"
    )
    top.bar(
        centers,
        [b["accuracy"] for b in full],
        width=width * 0.9,
        color=TRUE_COLOR,
        alpha=0.8,
        label="accuracy",
    )
    top.scatter(
        [b["confidence"] for b in full],
        [b["confidence"] for b in full],
        s=14,
        color=SECOND_COLOR,
        zorder=3,
        label="mean confidence",
    )
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy", fontsize=8)
    top.set_title(f"ECE = {calib['ece']:.3f}", fontsize=9)
    top.legend(fontsize=7, frameon=False, loc="upper left")
    bottom.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["count"] for b in bins],
        width=width * 0.9,
        color=OTHER_COLOR,
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (highest class probability)", fontsize=8)
    bottom.set_ylabel("sheets", fontsize=8)
    for ax in (top, bottom):
        _style(ax)
    return _data_uri(fig)


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [
        (row["epoch"], row[key])
        for row in history
        if row.get(key) is not None
        and row.get("epoch") is not None
        and math.isfinite(float(row[key]))
    ]
    return [float(e) for e, _ in points], [float(v) for _, v in points]


def training_figure(history: Sequence[dict]) -> str | None:
    """Loss and accuracy per epoch, train vs validation; None when nothing can be plotted."""
    panels = (("loss", "loss", 1), ("accuracy", "accuracy (%)", 100))
    if not any(
        _series(history, f"{split}_{key}")[0] for key, _, _ in panels for split in ("train", "val")
    ):
        return None
    fig = _new_figure(7.5, 2.8)
    for ax, (key, title, scale) in zip(fig.subplots(1, 2), panels):
        for split, color, name in (
            ("train", TRUE_COLOR, "train"),
            ("val", SECOND_COLOR, "validation"),
        ):
            epochs, values = _series(history, f"{split}_{key}")
            if epochs:
                ax.plot(
                    epochs,
                    [scale * v for v in values],
                    marker="o",
                    markersize=3,
                    color=color,
                    label=name,
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend(fontsize=7, frameon=False)
        _style(ax)
    return _data_uri(fig)


ENTROPY_MAX_BITS = 8.0
ENTROPY_BINS = np.linspace(0.0, ENTROPY_MAX_BITS, 65)  # 1/8-bit bins
CLASS_COLORS = (
    TRUE_COLOR,
    SECOND_COLOR,
    "#16a34a",
    "#9333ea",
    "#0891b2",
    "#db2777",
    "#ca8a04",
    "#4b5563",
    "#65a30d",
    "#7c2d12",
)
THRESHOLD_COLOR = "#111827"
DROPPED_COLOR = "#f3f4f6"


def entropy_histograms(by_class: Sequence[tuple[str, np.ndarray]], threshold: float | None) -> str:
    """Distribution of tile entropy (bits, 0–8) per class of labelled tiles, overlaid.

    Each class is one step line normalised to density, so a class with a few hundred tiles
    compares with one of many thousands; the entropy threshold below which tiles are dropped as
    blank paper is a dashed vertical line, labelled above the axes, over a shaded region.
    """
    fig = _new_figure(7.5, 3.0)
    ax = fig.subplots()
    for i, (name, values) in enumerate(by_class):
        density, _ = np.histogram(values, bins=ENTROPY_BINS, density=True)
        ax.stairs(
            density,
            ENTROPY_BINS,
            color=CLASS_COLORS[i % len(CLASS_COLORS)],
            linewidth=1.5,
            label=f"{_label(name)} (n={values.size:,})",
        )
    ax.set_xlim(0.0, ENTROPY_MAX_BITS)
    ax.set_ylim(bottom=0.0)
    if threshold is not None:
        ax.axvspan(0.0, threshold, color=DROPPED_COLOR, zorder=0)
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.2)
        # above the axes at the line: inside, the blank-paper and specimen peaks move with
        # the data and no place is reliably free
        shown = min(max(threshold, 0.0), ENTROPY_MAX_BITS)
        left = shown <= ENTROPY_MAX_BITS / 2
        ax.annotate(
            f"threshold {threshold:.2f} bits (tiles below are dropped as blank paper)",
            xy=(shown, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="left" if left else "right",
            va="bottom",
            fontsize=7.5,
            color=THRESHOLD_COLOR,
        )
    ax.set_xlabel("tile entropy (bits)", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.legend(
        fontsize=7,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="true class",
        title_fontsize=7,
        alignment="left",
    )
    _style(ax)
    return _data_uri(fig)


SCORE_BINS = np.linspace(0.0, 1.0, 51)
FLAG_COLOR = "#dc2626"
FLAG_SHADE = "#fef2f2"
SKEW_RATIO = 100  # tallest / lowest non-empty bin above which the score histogram is log-scale
HOTSPOT_BAR_COLOR = "#f59e0b"


def score_histogram(scores: np.ndarray, threshold: float | None, positive_class: str | None) -> str:
    """Distribution of the screening score P(positive class) over every scored sheet.

    The threshold is a dashed vertical line over a shaded "flagged" region to its right. When
    the counts are very uneven (a collection is mostly clean, so most sheets pile up near 0)
    the y axis is logarithmic, so the few bins near the threshold stay visible.
    """
    counts, _ = np.histogram(scores, bins=SCORE_BINS)
    nonzero = counts[counts > 0]
    log = nonzero.size > 0 and nonzero.max() / nonzero.min() > SKEW_RATIO
    fig = _new_figure(7.5, 2.9)
    ax = fig.subplots()
    baseline = 0.7 if log else 0.0
    ax.stairs(
        np.maximum(counts, baseline),
        SCORE_BINS,
        baseline=baseline,
        fill=True,
        color=TRUE_COLOR,
        alpha=0.85,
    )
    if threshold is not None:
        shown = min(max(threshold, 0.0), 1.0)
        ax.axvspan(shown, 1.0, color=FLAG_SHADE, zorder=0)
        ax.axvline(shown, color=FLAG_COLOR, linestyle="--", linewidth=1.3)
        left = shown <= 0.5
        ax.annotate(
            f"threshold {threshold:.3f}: sheets scoring this or more are flagged",
            xy=(shown, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="left" if left else "right",
            va="bottom",
            fontsize=7.5,
            color=FLAG_COLOR,
        )
    ax.set_xlim(0.0, 1.0)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(baseline, 10.0 ** math.ceil(math.log10(nonzero.max() * 1.5)))
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")  # 1, 10, 100, not 10⁰
        ax.tick_params(axis="y", which="minor", labelleft=False)
        ax.set_ylabel("sheets (log scale)", fontsize=8)
    else:
        ax.set_ylim(0, max(1, counts.max()) * 1.08)
        ax.set_ylabel("sheets", fontsize=8)
        ax.yaxis.get_major_locator().set_params(integer=True)
    name = "positive class" if positive_class is None else _label(positive_class)
    ax.set_xlabel(f"score = P({name})", fontsize=8)
    _style(ax)
    return _data_uri(fig)


def hotspot_figure(
    labels: Sequence[str],
    rate: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    overall: float | None,
) -> str:
    """Flagged share per group as horizontal bars with 95% interval whiskers, first at the top.

    `overall` (the share over all sheets) is a dashed vertical line for comparison.
    """
    n = len(labels)
    rate, low, high = (np.asarray(v, dtype=np.float64) for v in (rate, low, high))
    fig = _new_figure(7.5, 0.9 + 0.26 * n)
    ax = fig.subplots()
    y = np.arange(n)
    ax.barh(y, 100 * rate, height=0.62, color=HOTSPOT_BAR_COLOR, alpha=0.85)
    err = 100 * np.vstack([np.clip(rate - low, 0, None), np.clip(high - rate, 0, None)])
    ax.errorbar(
        100 * rate, y, xerr=err, fmt="none", ecolor=THRESHOLD_COLOR, elinewidth=1, capsize=2.5
    )
    ax.set_yticks(y, [_label(v) for v in labels], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # first group at the top
    top = max([float(np.nanmax(high)) if n else 0.0] + ([overall] if overall else []))
    ax.set_xlim(0, min(100.0, 100 * top * 1.08) if top > 0 else 100.0)
    if overall is not None:
        ax.axvline(
            100 * overall,
            color=FLAG_COLOR,
            linestyle="--",
            linewidth=1.2,
            label=f"all sheets: {100 * overall:.1f}%",
        )
        ax.legend(
            fontsize=7.5,
            frameon=False,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            borderaxespad=0.2,
        )
    ax.set_xlabel("flagged sheets in the group (%), with 95% interval", fontsize=8)
    _style(ax)
    ax.grid(False, axis="y")
    return _data_uri(fig)


IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_data_uri(data: bytes | None) -> str | None:
    """A JPEG/PNG/GIF given as bytes as a data URI, or None when empty or not recognised."""
    if not data:
        return None
    for magic, mime in IMAGE_MAGIC:
        if data.startswith(magic):
            return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return None
