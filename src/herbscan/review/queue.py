"""What a reviewer goes through: the sheets of a screen, or the records of a transcription.

A screen folder (`herbscan screen --out S`) gives sheets: the flagged ones most probable first
(`queue="probable"`), or every readable sheet, the one whose decision would teach the model most
first (`queue="uncertain"`, see `learn.uncertainty`). A transcription (`herbscan transcribe
--out L/labels.csv --crops L/crops`) gives records: drafts with the sheets whose fields need
review first.

Each item gets a key (a hash of its path) that URLs use; the files a job may serve (sheets,
heatmaps, label crops) are the ones its tables name, resolved once here: the server serves
nothing else.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from herbscan.errors import ManifestError, check_choice
from herbscan.fileio import path_key, picture_file, read_people_csv
from herbscan.review.learn import uncertainty_order

QUEUES = ("probable", "uncertain")
REVIEW_DIR = "review"


key_of = path_key  # the URL key of a sheet or record: the stem screen names its pictures by


def _read_csv(path: Path, need: str | None = None, fix: str = "") -> list[dict]:
    """The rows of a job's table; `need` names a column it must have. A table that cannot be
    read is one error naming it and `fix`."""
    try:
        rows, columns = read_people_csv(path)
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; {fix}") from None
    except csv.Error as e:
        raise ManifestError(f"{path}: not a readable CSV ({e}); {fix}") from None
    if need is not None and need not in columns:
        raise ManifestError(f"{path}: no {need} column; {fix}")
    return rows


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def locate(raw: str, source: str | Path | None) -> Path:
    """A sheet path as a table wrote it, made absolute: as it is when absolute; else relative
    to the working folder, or to the job's source with leading steps dropped (a screen of
    `../x/data` wrote `../x/data/a.jpg`, found again as `<source>/a.jpg` from anywhere)."""
    p = Path(raw)
    if p.is_absolute():
        return p
    if p.exists() or source is None:
        return p.resolve()
    base = Path(source)
    base = base if base.is_dir() else base.parent
    parts = p.parts
    for i in range(len(parts)):
        cand = base.joinpath(*parts[i:])
        if cand.is_file():
            return cand.resolve()
    return p.resolve()


@dataclass
class Sheet:
    """One sheet to review, with what the screen said about it."""

    key: str
    path: Path
    specimen_id: str
    score: float
    predicted: str
    flagged: bool
    metadata: dict
    probs: dict
    picture: Path | None = None

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "name": self.path.name,
            "path": str(self.path),
            "specimen_id": self.specimen_id,
            "score": None if math.isnan(self.score) else round(self.score, 4),
            "predicted": self.predicted,
            "flagged": self.flagged,
            "metadata": self.metadata,
            "probs": self.probs,
            "heatmap": self.picture is not None,
        }


@dataclass
class SheetJob:
    """The sheets of a screen, in queue order."""

    folder: Path
    queue: str
    model_id: str
    threshold: float | None
    positive_class: str | None
    sheets: list[Sheet]
    by_key: dict[str, Sheet] = field(default_factory=dict)
    kind: str = "sheets"
    classes: list[str] = field(default_factory=list)

    @property
    def review_dir(self) -> Path:
        return self.folder / REVIEW_DIR

    @property
    def decision_labels(self) -> dict[str, str]:
        """The class of the screen's run each decision means: `contaminated` is the screen's
        positive class; `clean` is the other class of a two-class run ('' where none fits: a
        run of more classes, or a screen without a positive class)."""
        pos = self.positive_class if self.positive_class in self.classes else ""
        others = [c for c in self.classes if c != pos]
        return {"contaminated": pos or "", "clean": others[0] if pos and len(others) == 1 else ""}

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "folder": self.folder.name,
            "queue": self.queue,
            "model_id": self.model_id,
            "threshold": self.threshold,
            "positive_class": self.positive_class,
            "sheets": [s.to_dict() for s in self.sheets],
        }


def load_sheets(folder: str | Path, queue: str = "probable") -> SheetJob:
    """Read a finished screen folder into its review queue."""
    check_choice("queue", queue, QUEUES)
    folder = Path(folder)
    state_path = folder / "screen.json"
    if not state_path.is_file():
        raise ManifestError(
            f"{folder}: not a screen folder (no screen.json); give the --out folder of "
            "`herbscan screen`, or a folder with labels.csv from `herbscan transcribe`"
        )
    redo = "restore it from a copy, or screen the collection again with another --out"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{state_path}: not a screen's JSON ({e}); {redo}") from None
    if not isinstance(state, dict):
        raise ManifestError(f"{state_path}: not a screen's state (no JSON object); {redo}")
    if not state.get("complete"):
        raise ManifestError(
            f"{folder}: the screen is unfinished; finish it with `herbscan screen ... --resume`"
        )
    classes = state.get("classes") or []
    meta_cols = state.get("metadata_columns") or []
    thr = state.get("threshold")
    pos = state.get("positive_class")
    table = folder / ("flagged.csv" if queue == "probable" else "results.csv")
    fix = (
        f"it is not {table.name} as `herbscan screen` wrote it: run the same screen with "
        "--resume to write it again from its shards"
    )
    rows = _read_csv(table, "path", fix) if table.is_file() else []
    if queue == "uncertain":
        rows = [r for r in rows if not r.get("error")]
        scores = [_float(r.get("score")) for r in rows]
        if pos is not None and thr is not None:
            order = uncertainty_order(scores, thr)
        else:  # several classes: the margin between the two most probable
            probs = [sorted((_float(r.get(f"p_{c}")) for c in classes), reverse=True) for r in rows]
            order = uncertainty_order(
                [p[0] if p else math.nan for p in probs],
                None,
                [p[1] if len(p) > 1 else 0.0 for p in probs],
            )
        rows = [rows[i] for i in order]
    sheets = []
    seen = set()
    for r in rows:
        path = locate(r["path"], state.get("source"))
        key = key_of(r["path"])
        if key in seen:
            continue
        seen.add(key)
        picture = picture_file(folder, r["path"])
        sheets.append(
            Sheet(
                key=key,
                path=path,
                specimen_id=r.get("specimen_id", ""),
                score=_float(r.get("score")),
                predicted=r.get("predicted", ""),
                flagged=r.get("flagged", "True") in ("True", "true", "1", ""),
                metadata={c: r[c] for c in meta_cols if r.get(c)},
                probs={c: _float(r.get(f"p_{c}")) for c in classes if f"p_{c}" in r},
                picture=picture if _is_png(picture) else None,
            )
        )
    return SheetJob(
        folder=folder,
        queue=queue,
        model_id=state.get("model_id", ""),
        threshold=thr,
        positive_class=pos,
        sheets=sheets,
        by_key={s.key: s for s in sheets},
        classes=[str(c) for c in classes],
    )


def _is_png(path: Path) -> bool:
    """Whether a screen picture is a heatmap (PNG) rather than a plain thumbnail (JPEG)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


@dataclass
class Record:
    """One transcription draft: its fields, their confidences and its label crops."""

    key: str
    file: str
    specimen_id: str
    fields: dict
    confidence: dict
    needs_review: list
    crops: list[Path]
    error: str = ""
    ident: str = ""
    """What the store files the record's edits under and its key hashes: its file, or for a
    row without one, its line in the CSV and its specimen id (so such rows stay apart)."""

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "file": Path(self.file).name,
            "specimen_id": self.specimen_id,
            "fields": self.fields,
            "confidence": self.confidence,
            "needsReview": self.needs_review,
            "crops": len(self.crops),
            "error": self.error,
        }


@dataclass
class LabelJob:
    """The drafts of a transcription, those with fields to review first."""

    folder: Path
    labels: Path
    crops_dir: Path | None
    records: list[Record]
    by_key: dict[str, Record] = field(default_factory=dict)
    kind: str = "labels"

    @property
    def review_dir(self) -> Path:
        return self.folder / REVIEW_DIR

    def to_dict(self) -> dict:
        from herbscan.labels.transcribe import DWC_COLUMNS

        return {
            "kind": self.kind,
            "folder": self.folder.name,
            "labels": self.labels.name,
            "terms": list(DWC_COLUMNS),
            "records": [r.to_dict() for r in self.records],
        }


def _labels_csv(folder: Path) -> Path | None:
    """The transcription CSV of a folder: labels.csv, else the one CSV with a needsReview
    column."""
    if folder.is_file():
        return folder
    if (folder / "labels.csv").is_file():
        return folder / "labels.csv"
    found = []
    for p in sorted(folder.glob("*.csv")):
        with open(p, encoding="utf-8", errors="replace") as f:
            if "needsReview" in f.readline():
                found.append(p)
    return found[0] if len(found) == 1 else None


def load_labels(folder: str | Path, crops: str | Path | None = None) -> LabelJob:
    """Read a transcription (its folder, or its CSV) and its label crops into a review queue."""
    from herbscan.labels.transcribe import DWC_COLUMNS

    folder = Path(folder)
    labels = _labels_csv(folder)
    if labels is None:
        raise ManifestError(
            f"{folder}: no labels.csv (or one CSV with a needsReview column); give the folder "
            "holding the --out CSV of `herbscan transcribe`"
        )
    folder = labels.parent
    rows = _read_csv(labels)
    if rows and "needsReview" not in rows[0]:
        raise ManifestError(f"{labels}: not a transcription (no needsReview column)")
    if crops is not None:
        crops_dir = Path(crops)
    else:
        crops_dir = next((d for d in (folder / "crops", folder) if d.is_dir()), None)
    records = []
    for line, r in enumerate(rows, start=2):  # the header is line 1
        try:
            conf = json.loads(r.get("fieldConfidence") or "{}")
            boxes = json.loads(r.get("labelBoxes") or "[]")
        except json.JSONDecodeError:
            conf, boxes = {}, []
        found = []
        for b in boxes if isinstance(boxes, list) else []:
            name = b.get("crop") if isinstance(b, dict) else None
            if crops_dir is None or not isinstance(name, str) or Path(name).name != name:
                continue  # a crop name with a folder in it is not ours to serve
            p = (crops_dir / name).resolve()
            if p.is_file():
                found.append(p)
        needs = [t for t in (r.get("needsReview") or "").split("|") if t]
        ident = r.get("file") or f"#{line}:{r.get('specimen_id', '')}"
        records.append(
            Record(
                key=key_of(ident),
                file=r.get("file", ""),
                specimen_id=r.get("specimen_id", ""),
                fields={c: r.get(c, "") for c in DWC_COLUMNS},
                confidence={k: v for k, v in conf.items() if isinstance(v, int | float)},
                needs_review=needs,
                crops=found,
                error=r.get("error", ""),
                ident=ident,
            )
        )
    # fields to review first, then the least confident
    records.sort(
        key=lambda r: (not r.needs_review, min(r.confidence.values(), default=1.0), r.file)
    )
    return LabelJob(
        folder=folder,
        labels=labels,
        crops_dir=crops_dir,
        records=records,
        by_key={r.key: r for r in records},
    )


def load_job(folder: str | Path, queue: str = "probable", crops: str | Path | None = None):
    """A screen folder → `SheetJob`; a transcription folder or CSV → `LabelJob`."""
    folder = Path(folder)
    if (folder / "screen.json").is_file():
        return load_sheets(folder, queue)
    if not folder.exists():
        raise ManifestError(
            f"{folder}: no such folder; give a screen's --out folder or a transcription's folder"
        )
    return load_labels(folder, crops)
