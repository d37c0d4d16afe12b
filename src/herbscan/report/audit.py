"""Self-contained HTML report of a shortcut audit, rendered from audit.json's dict only."""

from __future__ import annotations

import os

from herbscan.fileio import atomic_write

from . import _card, _env

LABELS = {
    "metadata": "File and imaging metadata",
    "background": "Background (plant, labels and ink masked out)",
    "border": "Border strip only",
}


def _interval(pair) -> str:
    return f"{pair[0]:.2f}–{pair[1]:.2f}" if pair else "—"


def _probe_rows(result: dict) -> list[dict]:
    rows = []
    for name, p in result["probes"].items():
        rows.append(
            {
                "name": LABELS.get(name, name),
                "balanced": f"{p['balanced_accuracy']:.2f}",
                "balanced_ci": _interval(p["balanced_accuracy_interval"]),
                "accuracy": f"{p['accuracy']:.2f}",
                "accuracy_ci": _interval(p["accuracy_interval"]),
                "chance": f"{p['chance']:.2f}",
                "majority": f"{p['majority_share']:.2f}",
                "alarm": p["alarm"],
                "evidence": p.get("evidence", ""),
            }
        )
    run = result.get("run")
    if run:
        rows.append(
            {
                "name": f"The run itself ({run['path']}), on its test sheets",
                "balanced": "—",
                "balanced_ci": "",
                "accuracy": f"{run['accuracy']:.2f}",
                "accuracy_ci": _interval(run["accuracy_interval"]),
                "chance": "",
                "majority": "",
                "alarm": False,
                "evidence": "",
            }
        )
    return rows


def write_audit_report(path: str | os.PathLike, result: dict) -> None:
    """Write the audit report for `result` (the dict `herbscan.audit.audit` returns)."""
    alarms = sum(p["alarm"] for p in result["probes"].values())
    cards = [
        _card("Sheets audited", f"{result['n']:,}", f"{result['n_specimens']:,} specimens"),
        _card("Classes", str(len(result["classes"])), ", ".join(result["classes"][:6])),
        _card(
            "Probes above chance",
            f"{alarms} of {len(result['probes'])}",
            "95% interval of balanced accuracy above 1/K",
            alert=bool(alarms),
        ),
        _card(
            "Near-duplicate pairs",
            str(len(result["near_duplicates"])) if result["near_duplicates_checked"] else "—",
            "near-identical images under different specimen ids",
            alert=bool(result["near_duplicates"]),
        ),
    ]
    meta = result["probes"].get("metadata", {})
    fields = [
        {
            "field": f["field"].replace("_", " "),
            "balanced": f"{f['balanced_accuracy']:.2f}",
            "ci": _interval(f["balanced_accuracy_interval"]),
            "alarm": f["alarm"],
            "by_class": f["by_class"],
        }
        for f in meta.get("fields", [])
    ]
    html = _env.get_template("audit.html.j2").render(
        title=f"herbscan audit: {result['data']}",
        cards=cards,
        warnings=result["warnings"],
        probes=_probe_rows(result),
        fields=fields,
        masked=result.get("masked_share"),
        run=result.get("run"),
        near=result["near_duplicates"][:200],
        n_near=len(result["near_duplicates"]),
        checked=result["near_duplicates_checked"],
        skipped=result["skipped"],
        folds=result["folds"],
        seconds=result["seconds"],
    )
    atomic_write(path, html)
