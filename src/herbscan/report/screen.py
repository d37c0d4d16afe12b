"""Self-contained HTML summary of a collection screen: counts, flagged sheets and hot spots.

Like the evaluation report, it is rendered from tables (the screen summary, the scores, the
flagged sheets and the per-group counts), never from a live model, with a packaged Jinja2
template, autoescaping on and StrictUndefined; figures and thumbnails are embedded as data URIs,
so the one file can be mailed to collection staff and opens anywhere without a network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from herbscan.fileio import atomic_write

from . import _card, _env, _pct, figures

MAX_HOTSPOT_BARS = 20
MAX_HOTSPOT_TABLE = 100
# summary keys shown in the facts table, in this order, with plain names; others follow as given
_FACTS = (
    ("positive_class", "Looking for"),
    ("compare_col", "Compared with the collection's column"),
    ("seen_in_training", "Sheets the run was trained or validated on"),
    ("threshold", "Threshold"),
    ("threshold_source", "Threshold chosen by"),
    ("classes", "Classes the model knows"),
    ("model_id", "Model"),
    ("run", "Run folder"),
    ("source", "Sheets screened from"),
    ("n_inputs", "Sheets in the list"),
    ("skipped", "Folder entries skipped (not readable images; see skipped.csv)"),
    ("outside_paths", "Image paths outside the source's folder"),
    ("outside_examples", "First paths outside the source's folder"),
    ("metadata_columns", "Metadata columns"),
    ("unit_size", "Sheets per result file"),
    ("shards", "Result files"),
    ("complete", "Screen finished"),
)
_HIDDEN = {"screened", "flagged", "failed"}  # shown as cards


def _finite(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _count(value: object) -> str:
    return f"{int(value):,}"


def _fact(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_fact(v)}" for k, v in value.items()) or "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fact(v) for v in value) or "—"
    return str(value)


def _headline(summary: Mapping, n_scored: int, threshold: float | None) -> list[dict]:
    flagged = int(summary["flagged"])
    share = (
        f"{100 * flagged / n_scored:.1f}% of the {n_scored:,} sheets scored"
        if n_scored
        else "no sheet could be scored"
    )
    compare = summary.get("compare_col")
    positive = summary.get("positive_class")
    if compare:  # flagged = disagrees with the collection's record, by a margin
        flag_label, rule, rule_value = f"disagree with {compare}", "margin", ".2f"
        rule_detail = "P(predicted) − P(recorded)"
    else:
        flag_label, rule, rule_value = "flagged for checking", "threshold", ".3f"
        rule_detail = None if positive is None else f"on P({positive})"

    return [
        _card("sheets screened", _count(summary["screened"])),
        _card(flag_label, _count(flagged), share, flagged > 0),
        _card("could not be read", _count(summary["failed"]), "not scored"),
        _card(rule, "—" if threshold is None else f"{threshold:{rule_value}}", rule_detail),
    ]


def _facts(summary: Mapping) -> list[tuple[str, str]]:
    rows = [(label, _fact(summary.get(key))) for key, label in _FACTS if key in summary]
    known = {key for key, _ in _FACTS} | _HIDDEN
    rows += [(str(k).replace("_", " "), _fact(v)) for k, v in summary.items() if k not in known]
    return rows


def _scores(scores: Sequence[float], threshold: float | None, positive: str | None) -> dict:
    values = np.asarray(list(scores), dtype=np.float64).ravel()
    values = np.clip(values[np.isfinite(values)], 0.0, 1.0)
    if not values.size:
        return {"uri": None, "n": 0, "above": None, "median": None}
    above = None if threshold is None else int(np.sum(values >= threshold))
    return {
        "uri": figures.score_histogram(values, threshold, positive),
        "n": f"{values.size:,}",
        "above": None if above is None else f"{above:,}",
        "median": f"{float(np.median(values)):.3f}",
    }


def _gallery(flagged: Sequence[dict]) -> list[dict]:
    items = []
    for rank, sheet in enumerate(flagged, start=1):
        score = _finite(sheet.get("score"))
        items.append(
            {
                "rank": rank,
                "path": str(sheet["path"]),
                "specimen_id": str(sheet.get("specimen_id") or ""),
                "score": "—" if score is None else f"{score:.3f}",
                "thumbnail": figures.image_data_uri(sheet.get("thumbnail")),
                "extra": [
                    (str(k), str(v))
                    for k, v in (sheet.get("extra") or {}).items()
                    if v not in (None, "")
                ],
            }
        )
    return items


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "—"
    return f"{100 * low:.1f}–{100 * high:.1f}%"


def _hotspots(hotspots: Sequence[dict]) -> list[dict]:
    sections = []
    for group in hotspots:
        given = list(group["rows"])
        n = sum(int(r["n"]) for r in given)
        k = sum(int(r["flagged"]) for r in given)
        overall = k / n if n else None
        rows = []
        for r in given[:MAX_HOTSPOT_TABLE]:
            low, high = _finite(r.get("low")), _finite(r.get("high"))
            rows.append(
                {
                    "value": str(r["value"]),
                    "n": _count(r["n"]),
                    "flagged": _count(r["flagged"]),
                    "rate": _pct(_finite(r.get("rate"))),
                    "ci": _interval(low, high),
                    # even the low end of the interval is above the rate over all sheets
                    "above": overall is not None and low is not None and low > overall,
                }
            )
        bars = given[:MAX_HOTSPOT_BARS]
        uri = None
        if bars:
            rate = [_finite(r.get("rate")) or 0.0 for r in bars]
            low = [_finite(r.get("low")) for r in bars]
            high = [_finite(r.get("high")) for r in bars]
            uri = figures.hotspot_figure(
                [f"{r['value'] or '(blank)'} ({int(r['flagged'])}/{int(r['n'])})" for r in bars],
                rate,
                [p if v is None else v for p, v in zip(rate, low)],
                [p if v is None else v for p, v in zip(rate, high)],
                overall,
            )
        sections.append(
            {
                "column": str(group["column"]),
                "rows": rows,
                "n_groups": len(given),
                "n_groups_text": _count(len(given)),
                "n_bars": len(bars),
                "overall": _pct(overall),
                "uri": uri,
            }
        )
    return sections


def write_screen_report(
    path: str | os.PathLike,
    *,
    title: str,
    summary: dict,
    scores: Sequence[float],
    flagged: Sequence[dict],
    hotspots: Sequence[dict],
    notes: Sequence[str] = (),
) -> Path:
    """Write the screening report as one self-contained HTML file and return its path.

    `summary` is the screen summary (screened, flagged, failed, positive_class, threshold,
    threshold_source, model_id, run, source, classes; other keys are listed as given);
    `scores` P(positive class) of every sheet scored; `flagged` the flagged sheets to show, most
    probable first, each {path, specimen_id, score, thumbnail (JPEG or PNG bytes, may be
    empty), extra (metadata to show small)}; `hotspots` one {column, rows} per grouping column,
    rows {value, n, flagged, rate, low, high} with a 95% interval, already ranked (by `low`,
    descending) — the table shows the first MAX_HOTSPOT_TABLE, the chart the first
    MAX_HOTSPOT_BARS, and the overall rate drawn is the sum of flagged over the sum of n of the
    column's rows; `notes` warnings shown at the top. The file is written atomically.
    """
    threshold = _finite(summary.get("threshold"))
    positive = summary.get("positive_class")
    positive = None if positive is None else str(positive)
    score_info = _scores(scores, threshold, positive)
    n_scored = sum(1 for s in scores if _finite(s) is not None)
    html = _env.get_template("screen.html.j2").render(
        title=title,
        notes=[str(n) for n in notes],
        headline=_headline(summary, n_scored, threshold),
        facts=_facts(summary),
        positive=positive,
        compare=summary.get("compare_col"),
        threshold=None if threshold is None else f"{threshold:.3f}",
        threshold_source=str(summary.get("threshold_source") or ""),
        scores=score_info,
        n_flagged=int(summary["flagged"]),
        n_flagged_text=_count(summary["flagged"]),
        gallery=_gallery(flagged),
        hotspots=_hotspots(hotspots),
        max_bars=MAX_HOTSPOT_BARS,
    )
    return atomic_write(Path(path), html)
