"""A collection's sheets → Darwin Core record drafts (CSV and JSON), one row per sheet.

Each sheet is read (barcodes, labels, OCR) and parsed in a worker process; tesseract itself runs
single-threaded, so `workers` processes keep that many cores busy. The job runs on
`herbscan.jobs`: its inputs are fixed in a folder next to the output (`labels.csv.partial/`) and
every UNIT_SIZE finished sheets are saved there as one file, so a killed job (even `kill -9`)
resumes where it stopped with `resume=True`; the CSV and JSON are written atomically at the end
and the folder removed. A sheet that cannot be read becomes a row with its `error`, and is read
again on resume (its image may have been fixed since). Before writing,
the job looks at the collection as a whole once: where its barcodes are evidently not its
catalogue numbers, barcodes taken as catalogue numbers are sent for review
(`distrust_barcodes`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import time
from collections import Counter
from concurrent.futures import as_completed
from pathlib import Path

from herbscan.errors import HerbscanError, ParameterError, check_choice, check_range
from herbscan.fileio import atomic_write
from herbscan.jobs import Job
from herbscan.labels.fields import BARCODE_STANDIN, CATALOG_SOURCES, REVIEW, parse_label
from herbscan.labels.names import Checklist
from herbscan.labels.ocr import check_languages, find_tesseract
from herbscan.labels.read import LAYOUTS, read_sheet
from herbscan.progress import Progress
from herbscan.workers import worker_pool

DWC_COLUMNS = (
    "catalogNumber",
    "otherCatalogNumbers",
    "scientificName",
    "scientificNameAuthorship",
    "genus",
    "specificEpithet",
    "taxonRank",
    "infraspecificEpithet",
    "identificationQualifier",
    "verbatimIdentification",
    "family",
    "recordedBy",
    "recordNumber",
    "eventDate",
    "verbatimEventDate",
    "country",
    "stateProvince",
    "county",
    "locality",
    "habitat",
    "verbatimElevation",
    "decimalLatitude",
    "decimalLongitude",
    "verbatimCoordinates",
    "verbatimLabel",
)
EXTRA_COLUMNS = (
    "barcodes",
    "stamps",
    "labelBoxes",
    "needsReview",
    "fieldConfidence",
    "ocrConfidence",
    "seconds",
    "error",
)
COLUMNS = ("file", "specimen_id", *DWC_COLUMNS, *EXTRA_COLUMNS)
NUMBER_COLUMNS = ("decimalLatitude", "decimalLongitude", "ocrConfidence", "seconds")
"""Numbers in the JSON copy (null when empty); the CSV writes them as text, as CSV does."""


def transcribe_sheet(
    path: str,
    *,
    lang: str = "eng",
    layout: str = "sheet",
    checklist: Checklist | None = None,
    crops_dir: str | None = None,
    crop_name: str | None = None,
    min_name_score: float = 80.0,
    catalog: str = "auto",
) -> dict:
    """One sheet → one record (dict with every column of `COLUMNS` but file/specimen_id)."""
    start = time.perf_counter()
    reading = read_sheet(
        path,
        lang=lang,
        layout_mode=layout,
        crops_dir=Path(crops_dir) if crops_dir else None,
        crop_name=crop_name,
    )
    word_conf = reading.word_confidences()
    text = reading.text
    others = [a for lt in reading.labels for a in lt.alternatives]
    fields, review = parse_label(
        text,
        word_conf=word_conf,
        checklist=checklist,
        barcodes=[b.value for b in reading.barcodes],
        stamps=[(s.number, s.conf) for s in reading.stamps],
        name_readings=[text, *others] if layout == "line" else None,
        min_name_score=min_name_score,
        catalog=catalog,
    )
    row = {c: "" for c in DWC_COLUMNS + EXTRA_COLUMNS}
    row.update({k: f.value for k, f in fields.items() if k in row})
    row["verbatimLabel"] = text
    row["barcodes"] = json.dumps([b.to_dict() for b in reading.barcodes])
    row["stamps"] = json.dumps([s.to_dict() for s in reading.stamps])
    row["labelBoxes"] = json.dumps([lt.box_dict() for lt in reading.labels])
    row["needsReview"] = "|".join(review)
    row["fieldConfidence"] = json.dumps({k: f.conf for k, f in fields.items()})
    words = reading.words
    n = sum(len(w.text) for w in words)
    row["ocrConfidence"] = round(sum(w.conf * len(w.text) for w in words) / n, 1) if n else ""
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _job(args: tuple) -> dict:
    path, kwargs = args
    try:
        return transcribe_sheet(path, **kwargs)
    except HerbscanError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - one bad sheet must not stop a collection
        return {"error": f"{path}: {type(e).__name__}: {e}"}


def transcribe(
    rows: list[dict],
    out: str | Path,
    *,
    names: str | Path | None = None,
    lang: str = "eng",
    layout: str = "sheet",
    workers: int = 1,
    crops: str | Path | None = None,
    resume: bool = False,
    min_name_score: float = 80.0,
    catalog: str = "auto",
    progress: bool = True,
) -> dict:
    """Transcribe every row {path, specimen_id} into `out` (.csv) and `out` with .json.

    `catalog`: where the collection's catalogue numbers are (`fields.CATALOG_SOURCES`).

    Returns a summary: counts of sheets, errors, fields filled and rows needing review.
    """
    check_choice("layout", layout, LAYOUTS)
    check_range("workers", workers, 1)
    check_range("min_name_score", min_name_score, 0, 100)
    check_choice("catalog", catalog, CATALOG_SOURCES)
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ParameterError(f"--out {out}: give a .csv path (a .json copy is written beside it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = {out.resolve(), out.with_suffix(".json").resolve()}
    clash = next(
        (
            p
            for p in [*(r["path"] for r in rows), *([names] if names else [])]
            if Path(p).resolve() in inputs
        ),
        None,
    )
    if clash is not None:
        raise ParameterError(f"--out {out} would overwrite the input {clash}; write elsewhere")
    checklist = Checklist.read(names) if names else None
    find_tesseract()
    check_languages(lang)
    options = {
        "lang": lang,
        "layout": layout,
        "catalog": catalog,
        "min_name_score": min_name_score,
        "names": str(Path(names).resolve()) if names else None,
    }
    folder = out.with_name(out.name + ".partial")
    keep = sorted({k for r in rows for k in r} - {"path", "specimen_id"})
    job = Job.open(
        folder,
        options=options,
        start=lambda: (rows, ["path", "specimen_id", *keep], {"kind": "transcribe"}),
        resume=resume,
        unit_size=UNIT_SIZE,
        what="transcription",
        error=ParameterError,
    )
    kwargs = {
        "lang": lang,
        "layout": layout,
        "checklist": checklist,
        "crops_dir": str(crops) if crops else None,
        "min_name_score": min_name_score,
        "catalog": catalog,
    }
    names_of = _crop_names(job.rows) if crops else {}
    # units to do: missing ones, and finished ones with sheets that failed (read those again)
    todo = {k: [None] * len(job.unit_rows(k)) for k in job.todo()}
    for k in set(range(job.n_units)) - set(todo):
        kept = job.records(k)
        if any(rec.get("error") for rec in kept):
            todo[k] = [None if rec.get("error") else rec for rec in kept]

    with Progress(len(job.rows), "transcribe", unit="sheets", enabled=progress) as bar:
        bar.update(len(job.rows) - sum(r.count(None) for r in todo.values()))
        waiting = {k: recs.count(None) for k, recs in todo.items()}

        def record(k: int, i: int, row: dict, rec: dict) -> None:
            full = {c: "" for c in COLUMNS}
            full.update(rec)
            full["file"], full["specimen_id"] = str(row["path"]), row.get("specimen_id", "")
            todo[k][i] = full
            waiting[k] -= 1
            bar.update(1)
            if not waiting[k]:
                job.save_records(k, todo[k])

        sheets = [
            (k, i, row, (str(row["path"]), {**kwargs, "crop_name": names_of.get(str(row["path"]))}))
            for k in sorted(todo)
            for i, row in enumerate(job.unit_rows(k))
            if todo[k][i] is None
        ]
        for k in [k for k, n in waiting.items() if not n]:  # nothing left to read in it
            job.save_records(k, todo[k])
        if workers == 1 or len(sheets) <= 1:
            for k, i, row, args in sheets:
                record(k, i, row, _job(args))
        else:  # one pool for the whole job; a unit is saved once its last sheet is back
            with worker_pool(workers) as pool:
                futures = {pool.submit(_job, args): (k, i, row) for k, i, row, args in sheets}
                for fut in as_completed(futures):
                    record(*futures[fut], fut.result())
    records = [rec for k in range(job.n_units) for rec in job.records(k)]  # in input order
    if catalog == "auto":
        distrust_barcodes(records)
    write_records(records, out)
    shutil.rmtree(folder, ignore_errors=True)
    return summarise(records)


UNIT_SIZE = 16
"""Sheets per saved unit of a transcription job: a kill loses at most the units in flight."""

MIN_DISAGREE = 5
"""Sheets on which a confident catalogue number differs from the barcode before a job takes
the collection's barcodes for something else than its catalogue numbers."""


def distrust_barcodes(records: list[dict]) -> int:
    """Send for review the catalogue numbers that are barcodes taken for want of anything else,
    when the collection itself shows that its barcodes are not its catalogue numbers: on at
    least half of its sheets with a barcode (and `MIN_DISAGREE`), a confidently read stamped
    or printed number differs from it (the ALA sheets: "V161227" stamped, barcode "H1106319").
    Their confidence drops to `fields.BARCODE_STANDIN`. A collection whose barcode is its
    catalogue number keeps its barcodes confident. Records are changed in place; returns how
    many were sent for review."""

    def barcodes_of(r):
        return [b["value"] for b in json.loads(r.get("barcodes") or "[]")]

    def confidence(r):
        return json.loads(r.get("fieldConfidence") or "{}").get("catalogNumber", 0.0)

    ok = [r for r in records if not r.get("error") and barcodes_of(r)]
    differ = sum(
        1
        for r in ok
        if r.get("catalogNumber")
        and confidence(r) >= REVIEW
        and r["catalogNumber"] not in barcodes_of(r)
    )
    if differ < max(MIN_DISAGREE, len(ok) / 2):
        return 0
    sent = 0
    for r in ok:
        if r.get("catalogNumber") in barcodes_of(r) and confidence(r) > BARCODE_STANDIN:
            conf = json.loads(r["fieldConfidence"])
            conf["catalogNumber"] = BARCODE_STANDIN
            r["fieldConfidence"] = json.dumps(conf)
            review = [t for t in (r.get("needsReview") or "").split("|") if t]
            r["needsReview"] = "|".join(
                [*review, "catalogNumber"] if "catalogNumber" not in review else review
            )
            sent += 1
    return sent


def _crop_names(rows: list[dict]) -> dict[str, str]:
    """A file-name stem per sheet for its label crops: the specimen id (or the image's name),
    with a short hash of the path where two sheets would share it (same names in two folders),
    so that no crop overwrites another."""
    stems = {
        str(r["path"]): re.sub(r"[^\w.\-]+", "_", str(r.get("specimen_id") or Path(r["path"]).stem))
        or "sheet"
        for r in rows
    }
    count = Counter(stems.values())
    return {
        p: s if count[s] == 1 else f"{s}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for p, s in stems.items()
    }


def write_records(records: list[dict], out: Path) -> None:
    """The CSV (for spreadsheets and database import) and JSON (typed) copies, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for rec in records:
        w.writerow(rec)
    atomic_write(out, buf.getvalue())
    typed = []
    for rec in records:
        t = dict(rec)
        for k in ("barcodes", "stamps", "labelBoxes", "fieldConfidence"):
            t[k] = json.loads(t[k]) if t.get(k) else ([] if k != "fieldConfidence" else {})
        for k in NUMBER_COLUMNS:
            t[k] = float(t[k]) if t.get(k) not in ("", None) else None
        t["needsReview"] = [x for x in (t.get("needsReview") or "").split("|") if x]
        typed.append(t)
    atomic_write(out.with_suffix(".json"), json.dumps(typed, indent=1, ensure_ascii=False))


def summarise(records: list[dict]) -> dict:
    """Counts for the closing line: sheets, errors, barcodes, names, review and time."""
    ok = [r for r in records if not r.get("error")]
    secs = [float(r["seconds"]) for r in ok if r.get("seconds") not in ("", None)]
    return {
        "sheets": len(records),
        "errors": len(records) - len(ok),
        "with_barcode": sum(1 for r in ok if r.get("barcodes") not in ("", "[]")),
        "with_name": sum(1 for r in ok if r.get("scientificName")),
        "with_date": sum(1 for r in ok if r.get("eventDate")),
        "needs_review": sum(1 for r in ok if r.get("needsReview")),
        "seconds_per_sheet": round(sum(secs) / len(secs), 2) if secs else None,
    }
