"""How good a transcription is: character error rate and per-field exact and fuzzy accuracy.

The truth CSV is joined to the transcription on a key (`file` matches by path, or by file name
when folders differ; `catalogNumber` by value). Truth columns are matched to Darwin Core terms
by name, by the common aliases below, or by `mapping` ({truth column: term}). Rows whose truth
is empty do not count for that field; an empty transcription where the truth has a value counts
as wrong.

Comparisons are per term, so that formatting a curator would not care about does not count as
an error: names compare genus + species; catalog numbers ignore spaces and a leading institution
code ("ALA V161227" = "V161227"); dates compare as ISO dates after parsing both sides;
coordinates within 0.01°. Fuzzy accuracy is the share with a normalised similarity ≥ `FUZZY`.
CER is edit distance over truth length, summed over rows (catalogue numbers in the compared
form, so that CER and exact accuracy agree).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from herbscan.errors import ManifestError, check_choice

FUZZY = 80.0
CATALOG_TERMS = ("catalogNumber", "otherCatalogNumbers")
"""Terms compared as catalogue numbers (`_catalog`)."""
KEYS = ("file", "catalogNumber", "specimen_id")
"""Columns a transcription can be joined to its truth on."""
ALIASES = {
    "scientific_name": "scientificName",
    "gt_taxon": "scientificName",
    "taxon": "scientificName",
    "catalog_number": "catalogNumber",
    "gt_date": "eventDate",
    "date": "eventDate",
    "gt_locality": "locality",
    "gt_coordinates": "verbatimCoordinates",
    "gt_elevation": "verbatimElevation",
    "gt_substrate": "habitat",
    "gt_text": "verbatimLabel",
    "recorded_by": "recordedBy",
    "collector": "recordedBy",
    "family": "family",
}


def _read(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(
            f"{path}: no such file; give the CSV written by `herbscan "
            "transcribe` and a ground-truth CSV"
        )
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def norm(s: str) -> str:
    s = (s or "").replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    return " ".join(s.split()).strip(" .,;:").casefold()


def _catalog(s: str) -> str:
    """A catalogue number as compared: without a leading herbarium code ("ALA 16970"), spaces,
    punctuation and zero padding (a stamp's V080233 is the database's V80233)."""
    toks = (s or "").split()
    if len(toks) > 1 and toks[0].isalpha():
        toks = toks[1:]
    unpadded = re.sub(r"(?<!\d)0+(?=\d)", "", "".join(toks))
    return re.sub(r"[^0-9A-Za-z]", "", unpadded).upper()


def _date(s: str) -> str:
    from herbscan.labels.fields import _DATE_PATTERNS, _iso_date

    if re.fullmatch(r"\d{4}(-\d{2}){0,2}", (s or "").strip()):
        return s.strip()
    for rx, kind, _ in _DATE_PATTERNS:
        m = rx.search(s or "")
        if m:
            iso = _iso_date(kind, m.groups())
            if iso:
                return iso
    return norm(s)


def _coords(s: str) -> tuple[float, float] | None:
    from herbscan.labels.fields import Field, _coordinate_fields

    out: dict = {}
    _coordinate_fields(s or "", {}, out)
    if "decimalLatitude" not in out:
        return None
    f: Field = out["decimalLatitude"]
    return float(f.value), float(out["decimalLongitude"].value)


def exact(term: str, pred: str, truth: str) -> bool:
    """Whether a transcribed value equals the truth, by the term's own rule."""
    from herbscan.labels.names import binomial_key

    if term in ("scientificName",):
        return bool(pred) and binomial_key(pred) == binomial_key(truth)
    if term in CATALOG_TERMS:
        return bool(pred) and _catalog(pred) == _catalog(truth)
    if term == "eventDate":
        return bool(pred) and _date(pred) == _date(truth)
    if term == "verbatimCoordinates":
        a, b = _coords(pred), _coords(truth)
        if a and b:
            return abs(a[0] - b[0]) <= 0.01 and abs(a[1] - b[1]) <= 0.01
    return bool(pred) and norm(pred) == norm(truth)


def similarity(pred: str, truth: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(norm(pred), norm(truth)))


def cer(pred: str, truth: str) -> tuple[int, int]:
    """(edits, truth characters) between whitespace-normalised strings, case kept."""
    from rapidfuzz.distance import Levenshtein

    p, t = " ".join((pred or "").split()), " ".join((truth or "").split())
    return Levenshtein.distance(p, t), len(t)


def _key_value(row: dict, key: str) -> str:
    v = (row.get(key) or "").strip()
    return _catalog(v) if key == "catalogNumber" else v


def evaluate_transcription(
    labels: str | Path,
    truth: str | Path,
    *,
    key: str = "file",
    fields: list[str] | None = None,
    mapping: dict[str, str] | None = None,
) -> dict:
    """Scores per term: n, exact, fuzzy, CER; plus the rows that could not be joined."""
    check_choice("key", key, KEYS)
    pred_rows, truth_rows = _read(labels), _read(truth)
    if not truth_rows:
        raise ManifestError(f"{truth}: no rows")
    if not pred_rows:
        raise ManifestError(f"{labels}: no rows; give the CSV written by `herbscan transcribe`")
    pcols = list(pred_rows[0])
    if key not in pcols:
        raise ManifestError(
            f"{labels}: no {key!r} column; give the CSV written by `herbscan "
            "transcribe` first and the ground truth second"
        )
    tcols = list(truth_rows[0])
    if key not in tcols:
        alias = {"catalogNumber": "catalog_number"}.get(key)
        if alias in tcols:
            for r in truth_rows:
                r[key] = r[alias]
        else:
            raise ManifestError(
                f"{truth}: no key column {key!r} (columns: {', '.join(tcols)}); "
                "choose --key file, catalogNumber or specimen_id"
            )
    columns: dict[str, str] = {}  # term -> truth column
    for c in tcols:
        term = c if c in pcols and c not in ("file", "specimen_id") else ALIASES.get(c)
        if term and term in pcols and term not in columns:
            columns[term] = c
    for c, term in (mapping or {}).items():
        if c not in tcols:
            raise ManifestError(
                f"{truth}: no column {c!r} to map to {term} (columns: {', '.join(tcols)})"
            )
        if term not in pcols:
            raise ManifestError(
                f"--map {c}={term}: {labels} has no column {term!r}; map to one "
                "of its Darwin Core terms, e.g. scientificName, eventDate"
            )
        columns[term] = c
    if fields:
        unknown = [f for f in fields if f not in columns]
        if unknown:
            raise ManifestError(
                f"{truth}: no column for {', '.join(unknown)}; map one with --map TRUTH_COLUMN=TERM"
            )
        columns = {f: columns[f] for f in fields}
    if not columns:
        raise ManifestError(
            f"{truth}: none of its columns ({', '.join(tcols)}) is a term of "
            f"{labels} or a known alias; map them with --map TRUTH_COLUMN=TERM "
            "(and give the transcription first, the truth second)"
        )

    index: dict[str, dict] = {}
    for r in pred_rows:
        k = _key_value(r, key)
        index[k] = r
        if key == "file":
            index.setdefault(Path(k).name, r)
    joined, missing = [], []
    for t in truth_rows:
        k = _key_value(t, key)
        p = index.get(k) or (index.get(Path(k).name) if key == "file" else None)
        if p is None:
            missing.append(k)
        else:
            joined.append((p, t))
    scores = {}
    for term, col in columns.items():
        n = ex = fz = edits = chars = 0
        for p, t in joined:
            truth_v = (t.get(col) or "").strip()
            if not truth_v:
                continue
            pred_v = (p.get(term) or "").strip()
            if term == "eventDate" and not pred_v:
                pred_v = p.get("verbatimEventDate", "")
            n += 1
            ex += exact(term, pred_v, truth_v)
            compare = p.get("verbatimEventDate") or pred_v if term == "eventDate" else pred_v
            fz += exact(term, pred_v, truth_v) or similarity(compare, truth_v) >= FUZZY
            if term in CATALOG_TERMS:  # as `exact` compares them
                compare, truth_v = _catalog(compare), _catalog(truth_v)
            e, c = cer(compare, truth_v)
            edits, chars = edits + e, chars + c
        scores[term] = {
            "truth_column": col,
            "n": n,
            "exact": ex / n if n else None,
            "fuzzy": fz / n if n else None,
            "cer": edits / chars if chars else None,
        }
    return {"joined": len(joined), "missing": missing, "fields": scores}


def format_table(result: dict) -> str:
    """The scores as a fixed-width table for the terminal."""
    lines = [f"{'field':<22} {'truth column':<18} {'n':>4} {'exact':>7} {'fuzzy':>7} {'CER':>7}"]
    for term, s in result["fields"].items():

        def pct(v):
            return "—" if v is None else f"{100 * v:.1f}%"

        lines.append(
            f"{term:<22} {s['truth_column'][:18]:<18} {s['n']:>4} {pct(s['exact']):>7} "
            f"{pct(s['fuzzy']):>7} {pct(s['cer']):>7}"
        )
    lines.append(
        f"joined {result['joined']} rows; {len(result['missing'])} truth rows had no transcription"
    )
    return "\n".join(lines)
