"""Curators' decisions → training labels, and which sheet a decision would teach the model most.

`add_labels` merges the current decisions of a review (`review/decisions.csv`, or rather the
store beside it when it is there: see `read_decisions`) into a split
manifest: a reviewed sheet already in the manifest's training or validation split (found by its
resolved path) takes the reviewed label; a new sheet joins the split of its specimen when the
specimen is already there, else training or validation by a hash of its specimen id (stable
across re-runs), and a new sheet without a specimen id is left out (see `add_labels`); a sheet or
specimen of the test split is never moved or relabelled, so a run trained with the reviews is
still measured on the same test sheets as the run before it. `unsure` decisions teach nothing
and are left out. The counts come back, are written beside the merged manifest, and go into
run.json (`training.reviewed_labels`) when `train(add_labels=...)` merges them.

`uncertainty` orders sheets for review by how close the model's score lies to its operating
point, in log-odds: the decision of a sheet on the threshold flips with the smallest change of
the model, so its label is the one most likely to correct the model (uncertainty sampling,
Lewis & Gale 1994). Log-odds rather than probability because a threshold is rarely 0.5: with a
threshold of 0.2, p = 0.1 and p = 0.4 are equally far from it in evidence (log-odds 0.81 and
0.98 away), not 0.1 and 0.2 apart. Runs with more than two classes and no threshold use the
margin between the two most probable classes. `benchmarks/review_active.py` measures what this
order buys against a random order with a simulated reviewer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

from herbscan.errors import ManifestError, ParameterError, check_range
from herbscan.fileio import read_people_csv, write_json
from herbscan.manifest import OUT_SPLIT, Manifest, read_source, write_manifest
from herbscan.review.store import DECISIONS_FILE, LABELLED, STORE_FILE, DecisionStore

_OPTION = {"contaminated": "review_positive", "clean": "review_negative"}


def uncertainty(score: float, threshold: float | None = 0.5, second: float | None = None) -> float:
    """How far a sheet is from changing the model's decision: 0 on the operating point.

    With a `threshold`, |logit(score) − logit(threshold)|; without one, `score − second` (the
    margin between the two most probable classes). NaN scores (unreadable sheets) are infinitely
    far: there is nothing to review."""
    if score is None or not math.isfinite(score):
        return math.inf
    if threshold is None:
        return float(score - (second or 0.0))
    return abs(_logit(score) - _logit(threshold))


def _logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(float(p), eps), 1 - eps)
    return math.log(p / (1 - p))


def uncertainty_order(
    scores: Sequence[float], threshold: float | None = 0.5, seconds: Sequence[float] | None = None
) -> list[int]:
    """Indices of `scores` from the most uncertain to the least (ties keep their order)."""
    u = [
        uncertainty(s, threshold, None if seconds is None else seconds[i])
        for i, s in enumerate(scores)
    ]
    return sorted(range(len(u)), key=lambda i: (u[i], i))


def read_decisions(path: str | Path) -> list[dict]:
    """The current decisions of a review: `path` is its `decisions.csv`, its `decisions.sqlite`
    or the review folder holding them.

    Beside `decisions.csv` (or in the folder) the SQLite store is read when it is there: it is
    the record, and the CSV a snapshot that another server process on the same folder may not
    have rewritten since its last decision. A CSV under another name (a copy someone edited) is
    read as it is, formula escapes undone."""
    path = Path(path)
    if path.is_dir():
        db, path = path / STORE_FILE, path / DECISIONS_FILE
    elif path.suffix == ".sqlite":
        db = path
    else:
        db = path.with_name(STORE_FILE) if path.name == DECISIONS_FILE else None
    if db is not None and db.is_file():
        return DecisionStore(db).decisions()
    if not path.is_file():
        raise ManifestError(
            f"{path}: no such decisions file; review sheets with `herbscan review SCREEN` "
            "(it writes SCREEN/review/decisions.csv)"
        )
    rows, _ = read_people_csv(path)
    need = {"path", "decision"}
    if rows and not need <= set(rows[0]):
        raise ManifestError(
            f"{path}: not a decisions file (columns path and decision missing); give "
            "SCREEN/review/decisions.csv"
        )
    return rows


def _hash_share(text: str) -> float:
    """A number in [0, 1) fixed by `text`: the same specimen always lands in the same split."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12


def add_labels(
    data: str | Path,
    decisions: str | Path,
    out: str | Path,
    *,
    review_positive: str | None = None,
    review_negative: str | None = None,
    validation_share: float = 0.2,
) -> dict:
    """Write `out`: the split manifest `data` with the reviewed sheets of `decisions` added or
    relabelled (see the module docstring). Returns the counts, also written to `out` + .json.

    A decision becomes the label in its `label` column: the class of the screened run it means
    (`contaminated`: the screen's positive class; `clean`: the run's other class when it has
    two). `review_positive` / `review_negative` override them: the manifest's labels for a
    `contaminated` / `clean` decision (needed when the manifest names its classes otherwise, or
    the screen's run had more than two classes). A decisions file without a `label` column (an
    older review) means the decision's own name. `validation_share` of new specimens go to
    validation (the operating point is chosen there, and reviewed sheets come from the
    collection the model is used on).

    Which split a reviewed sheet belongs to is decided by its file first (the resolved path of
    a manifest row: that row's split, even if the screen gave it another specimen id), then by
    its specimen id (a new image of a manifest specimen joins that specimen's split). A new
    sheet with no specimen id, when the manifest has specimen ids, is left out and counted
    (`skipped_no_specimen`) rather than refused or added: nothing says it is not another image
    of a test specimen, and putting it in training could leak that specimen into the model
    (the test split is what every later run is measured on), while refusing the whole merge
    for a few such sheets would throw away every other decision. Without a specimen column in
    the manifest every image is its own specimen, so such a sheet is added like any other.
    Specimen ids of the decisions that the manifest does not know are counted
    (`specimens_not_in_manifest`): they join training or validation as new specimens, so a count
    near the number of reviewed sheets can mean the screen and the manifest use different ids."""
    check_range("validation_share", validation_share, 0.0, 1.0)
    m = read_source(data)
    if not m.has_split():
        raise ManifestError(
            f"{data}: has no split column; split it first (herbscan split) so that reviewed "
            "sheets can join it without touching the test split"
        )
    classes = sorted({m.label(r) for r in m.rows})
    given = {"contaminated": review_positive, "clean": review_negative}
    for decision, value in given.items():
        if value is not None and value not in classes:
            raise ParameterError(
                f"{_OPTION[decision]} must be one of the manifest's labels "
                f"{', '.join(classes)}; got {value!r}"
            )
    reviewed = read_decisions(decisions)

    def label_of(d: dict) -> str | None:
        if d["decision"] not in LABELLED:
            return None
        if given[d["decision"]] is not None:
            return given[d["decision"]]
        label = d["label"] if "label" in d else d["decision"]
        if label not in classes:
            meant = f"label {label!r}" if label else "no one label of the screened run"
            raise ManifestError(
                f"{decisions}: a {d['decision']!r} decision means {meant}, but {data} has the "
                f"labels {', '.join(classes)}; pass {_OPTION[d['decision']]}=LABEL "
                f"(train --{_OPTION[d['decision']].replace('_', '-')} LABEL)"
            )
        return label

    labels = [label_of(d) for d in reviewed]  # every mismatch refused before anything is written
    rows = [dict(r) for r in m.rows]
    by_path = {str(m.path(r).resolve()): r for r in rows}
    split_of = {m.specimen(r): r.get(OUT_SPLIT, "") for r in m.rows}
    counts = dict.fromkeys(
        (
            "reviewed",
            "added",
            "train",
            "validation",
            "relabelled",
            "confirmed",
            "left_in_test",
            "skipped_unsure",
            "skipped_no_specimen",
            "specimens_not_in_manifest",
        ),
        0,
    )
    unknown: set[str] = set()
    extra = ["review_decision", "reviewer"]
    for d, label in zip(reviewed, labels, strict=True):
        counts["reviewed"] += 1
        if label is None:
            counts["skipped_unsure"] += 1
            continue
        path = str(Path(d["path"]).resolve())
        given_id = (d.get("specimen_id") or "").strip()
        row = by_path.get(path)  # the same file first: its split, whatever id the screen gave
        if row is not None:
            split = row.get(OUT_SPLIT, "")
        elif not given_id and m.group_col:
            counts["skipped_no_specimen"] += 1  # its specimen could be one of the test split's
            continue
        else:
            specimen = given_id or path
            split = split_of.get(specimen)
            if split is None and given_id and given_id not in unknown:
                unknown.add(given_id)
                counts["specimens_not_in_manifest"] += 1
        if split == "test":
            counts["left_in_test"] += 1
            continue
        if row is not None:
            counts["relabelled" if m.label(row) != label else "confirmed"] += 1
        else:
            if split not in ("train", "validation"):
                split = "validation" if _hash_share(specimen) < validation_share else "train"
            row = {c: "" for c in m.columns}
            row[m.path_col] = path
            if m.group_col:
                row[m.group_col] = specimen
            row[OUT_SPLIT] = split
            rows.append(row)
            by_path[path] = row
            split_of[specimen] = split
            counts["added"] += 1
            counts[split] += 1
        row[m.label_col] = label
        row["review_decision"], row["reviewer"] = d["decision"], d.get("reviewer", "")
    merged = Manifest(
        rows,
        list(m.columns) + [c for c in extra if c not in m.columns],
        m.root,
        m.path_col,
        m.label_col,
        m.group_col,
        str(data),
    )
    write_manifest(merged, out)
    summary = {"source": str(decisions), "data": str(data), "manifest": str(out), **counts}
    write_json(Path(str(out) + ".json"), summary)
    return summary


def merge_for_training(
    data: str | Path,
    decisions: str | Path,
    *,
    review_positive: str | None = None,
    review_negative: str | None = None,
) -> tuple[Path, dict]:
    """`add_labels` as `train(add_labels=...)` uses it: the merged manifest goes beside the
    decisions (`<data's name>+reviewed.csv`); returns its path and the counts run.json keeps."""
    name = f"{Path(data).stem}+reviewed.csv"
    merged = Path(decisions) / name if Path(decisions).is_dir() else Path(decisions).with_name(name)
    summary = add_labels(
        data,
        decisions,
        merged,
        review_positive=review_positive,
        review_negative=review_negative,
    )
    return merged, summary


def describe(summary: dict) -> str:
    """One line for people: how many reviewed sheets were added, and where."""
    return (
        f"{summary['reviewed']} reviewed sheets: {summary['added']} added "
        f"({summary['train']} train, {summary['validation']} validation), "
        f"{summary['relabelled']} relabelled, {summary['confirmed']} confirmed, "
        f"{summary['left_in_test']} in the test split left as they were, "
        f"{summary['skipped_unsure']} unsure, "
        f"{summary.get('skipped_no_specimen', 0)} left out for want of a specimen id, "
        f"{summary.get('specimens_not_in_manifest', 0)} specimen ids new to the manifest "
        f"→ {summary['manifest']}"
    )
