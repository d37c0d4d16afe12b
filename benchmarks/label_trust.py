"""How far a confident transcription can be trusted: precision at confidence ≥ 0.8, and wrong
values that were not sent for review, per field, on hand-checked ALA sheets.

Truth: tests/data/ala_label_truth.csv, read off the sheet images by eye (file, country,
stateProvince, recordedBy, eventDate, catalogNumber; empty where the label does not say).
`country` is the country of the place the label names, stated or implied by the state or
province it names ("Maine" → United States), written as herbscan writes it ("U.S.S.R." →
Russia); `stateProvince` only where the label names one of the states and provinces herbscan
knows ("District of Mackenzie" is left empty). The images are in
../shared/data/ala-lycopodiaceae (or $HERBSCAN_SHARED_DATA/ala-lycopodiaceae).

The sheets are transcribed with `herbscan.labels.transcribe` (`--catalog`, `--workers`), or an
existing labels.csv is read (`--labels`). A value is right when it equals the truth: countries
and states ignoring case ("Yukon" = "Yukon Territory"), collectors ignoring case, punctuation,
spaces and the words joining names ("&", "and", "et"), dates as ISO dates, catalogue numbers as
`transcribe-eval` compares them (without the herbarium code and zero padding). A value where
the truth is empty is wrong. "Sent for review" means the field is listed in needsReview.

Prints, per field: values given, right, values at confidence ≥ 0.8 and how many of them are
right (precision), wrong values not sent for review, and for catalogNumber how many of those
are a decoded barcode; then the wrong values not sent for review one per line; last, one JSON
line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from herbscan.labels.scoring import exact

HERE = Path(__file__).resolve().parent
TRUTH = HERE.parent / "tests" / "data" / "ala_label_truth.csv"
DEFAULT = HERE.parent.parent / "shared" / "data"
FIELDS = ("country", "stateProvince", "recordedBy", "eventDate", "catalogNumber")
CONFIDENT = 0.8


def _place(s: str) -> str:
    return re.sub(r"\s+territory$", "", " ".join((s or "").split()).casefold())


def _people(s: str) -> str:
    s = re.sub(r"(?i)(?:&|\band\b|\bet\b)", " ", s or "")
    return re.sub(r"[\W_\d]+", "", s).casefold()


def right(term: str, value: str, truth: str) -> bool:
    """Whether a transcribed value is the truth (see the module docstring)."""
    if not truth:
        return not value
    if term in ("country", "stateProvince"):
        return _place(value) == _place(truth)
    if term == "recordedBy":
        return _people(value) == _people(truth)
    return exact(term, value, truth)


def transcribe_sample(files: list[Path], catalog: str, workers: int) -> list[dict]:
    from herbscan.labels.transcribe import transcribe

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "labels.csv"
        transcribe(
            [{"path": str(f), "specimen_id": f.stem} for f in files],
            out,
            workers=workers,
            catalog=catalog,
            progress=False,
        )
        with out.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def score(truth: list[dict], rows: list[dict]) -> tuple[dict, list[str]]:
    """Per-field counts, and the wrong values nobody is asked to check."""
    by_name = {Path(r["file"]).name: r for r in rows}
    counts = (
        "given",
        "right",
        "confident",
        "confident_right",
        "wrong_unreviewed",
        "wrong_unreviewed_barcode",
    )
    stats = {t: dict.fromkeys(counts, 0) for t in FIELDS}
    missing, unreviewed = [], []
    for t in truth:
        row = by_name.get(Path(t["file"]).name)
        if row is None:
            missing.append(t["file"])
            continue
        conf = json.loads(row.get("fieldConfidence") or "{}")
        review = set(filter(None, (row.get("needsReview") or "").split("|")))
        codes = [b["value"] for b in json.loads(row.get("barcodes") or "[]")]
        for term in FIELDS:
            value = row.get(term) or ""
            if not value:
                continue
            s = stats[term]
            ok = right(term, value, t[term])
            s["given"] += 1
            s["right"] += ok
            if conf.get(term, 0.0) >= CONFIDENT:
                s["confident"] += 1
                s["confident_right"] += ok
            if not ok and term not in review:
                s["wrong_unreviewed"] += 1
                barcode = term == "catalogNumber" and value in codes
                s["wrong_unreviewed_barcode"] += barcode
                unreviewed.append(
                    f"  {Path(t['file']).name:<12} {term:<14} {value!r} "
                    f"(conf {conf.get(term, 0.0):.2f}{', barcode' if barcode else ''})"
                    f" truth {t[term]!r}"
                )
    if missing:
        raise SystemExit(f"{len(missing)} truth sheets are not in the labels, e.g. {missing[0]}")
    for s in stats.values():
        s["precision"] = round(s["confident_right"] / s["confident"], 3) if s["confident"] else None
    return stats, unreviewed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HERBSCAN_SHARED_DATA", DEFAULT)) / "ala-lycopodiaceae",
    )
    ap.add_argument("--truth", type=Path, default=TRUTH)
    ap.add_argument("--labels", type=Path, help="Score this labels.csv instead of transcribing.")
    ap.add_argument("--catalog", default="auto", help="--catalog for the transcription.")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    with args.truth.open(newline="", encoding="utf-8") as f:
        truth = list(csv.DictReader(f))
    if args.labels:
        with args.labels.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        if not args.data.is_dir():
            raise SystemExit(f"{args.data}: no such folder (set HERBSCAN_SHARED_DATA)")
        rows = transcribe_sample([args.data / t["file"] for t in truth], args.catalog, args.workers)
    stats, unreviewed = score(truth, rows)
    source = f"catalog={args.catalog}" if not args.labels else f"labels from {args.labels}"
    print(f"{len(truth)} hand-checked sheets; {source}", file=sys.stderr)
    print(
        f"{'field':<14} {'given':>5} {'right':>5} {'≥0.8':>5} {'right':>5} {'precision':>9} "
        f"{'wrong, not reviewed':>20}",
        file=sys.stderr,
    )
    for term, s in stats.items():
        p = f"{s['precision']:.1%}" if s["precision"] is not None else "-"
        extra = f" ({s['wrong_unreviewed_barcode']} barcode)" if term == "catalogNumber" else ""
        print(
            f"{term:<14} {s['given']:>5} {s['right']:>5} {s['confident']:>5} "
            f"{s['confident_right']:>5} {p:>9} {s['wrong_unreviewed']:>8}{extra}",
            file=sys.stderr,
        )
    if unreviewed:
        print("wrong values not sent for review:", *unreviewed, sep="\n", file=sys.stderr)
    confident = sum(s["confident"] for s in stats.values())
    confident_right = sum(s["confident_right"] for s in stats.values())
    result = {
        "sheets": len(truth),
        "catalog": args.catalog if not args.labels else None,
        "precision_at_0.8": round(confident_right / confident, 3) if confident else None,
        "confident": confident,
        "wrong_unreviewed": sum(s["wrong_unreviewed"] for s in stats.values()),
    }
    for term, s in stats.items():
        result[f"{term}_precision"] = s["precision"]
        result[f"{term}_confident"] = s["confident"]
        result[f"{term}_wrong_unreviewed"] = s["wrong_unreviewed"]
    result["catalogNumber_wrong_unreviewed_barcode"] = stats["catalogNumber"][
        "wrong_unreviewed_barcode"
    ]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
