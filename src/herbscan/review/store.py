"""Every decision a curator makes, kept: an append-only SQLite database inside the job folder.

`review/decisions.sqlite` in WAL mode with `synchronous=FULL`: a decision is committed (and on
disk) before the server answers, so killing the server loses nothing, and readers never block
the writer. Rows are never updated or deleted. A sheet decided twice keeps both rows and the
latest is current; an undo is one more row that restores the state before the row it undoes
(its `prev` link), so history reads as it happened and undoing twice goes two steps back. Every
row records reviewer, UTC time, the model id and the score the reviewer was shown.

Two reviewers (threads of one server, or two server processes on the same folder) each open
their own connection; writes take SQLite's write lock (`BEGIN IMMEDIATE`), so the read of the
current state and the row written from it are one step and nothing is lost. An undo names the
row it expects to undo: when someone else decided the sheet meanwhile, it is refused rather
than undoing their decision.

Label fields are kept the same way: one row per confirmed or changed field, the latest current.
The `meta` table records what a decision means (`set_labels`: the class of the screened run a
`contaminated` or `clean` decision stands for), so `decisions()` can give training labels.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from herbscan.errors import HerbscanError, ParameterError, check_choice
from herbscan.fileio import write_csv

STORE_FILE, DECISIONS_FILE = "decisions.sqlite", "decisions.csv"
"""The store and its export, in a job's review folder."""
DECISIONS = ("contaminated", "clean", "unsure")
"""What a curator can decide about a flagged sheet."""
LABELLED = ("contaminated", "clean")
"""The decisions that name a class (`unsure` teaches nothing)."""
DECISION_COLUMNS = (
    "path",
    "specimen_id",
    "decision",
    "label",
    "note",
    "reviewer",
    "time",
    "model_id",
    "score",
    "rows_in_history",
)
"""The columns of `decisions.csv`; `label` is the class of the screen's run a decision means."""
FIELD_ACTIONS = ("confirmed", "changed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sheet TEXT NOT NULL,
    specimen_id TEXT NOT NULL DEFAULT '',
    decision TEXT NOT NULL,          -- contaminated | clean | unsure | '' (undecided, by undo)
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    time TEXT NOT NULL,              -- UTC, ISO 8601
    model_id TEXT NOT NULL DEFAULT '',
    score REAL,
    prev INTEGER REFERENCES decisions(id),   -- the row current before this one
    undoes INTEGER REFERENCES decisions(id)  -- set on undo rows
);
CREATE INDEX IF NOT EXISTS decisions_sheet ON decisions(sheet, id);
CREATE TABLE IF NOT EXISTS fields (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL,            -- the transcription row's file (Record.ident)
    field TEXT NOT NULL,             -- a Darwin Core term
    value TEXT NOT NULL,
    original TEXT NOT NULL,          -- the draft's value
    action TEXT NOT NULL,            -- confirmed | changed
    reviewer TEXT NOT NULL,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fields_record ON fields(record, field, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StoreError(HerbscanError):
    """The decision store cannot be opened or the request conflicts with its state."""


class Conflict(StoreError):
    """Someone else changed the sheet since the reviewer saw it."""


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds and a Z: sortable and unambiguous."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DecisionStore:
    """The decisions and field edits of one review job, in `path` (an SQLite file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as con:
                con.executescript(_SCHEMA)
                con.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path}: not a herbscan decision store ({e}); move it away and start again"
            ) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation, closed after it (connections are cheap, and one per
        operation is safe from any thread or process)."""
        try:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path}: cannot open the decision store ({e}); check the folder's "
                "permissions and free space"
            ) from None
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            yield con
        finally:
            con.close()

    def _read(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._connect() as con:
            return [dict(r) for r in con.execute(sql, args)]

    def _write(self, fn):
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # the write lock: read-then-write is one step
            try:
                out = fn(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return out

    # -- sheet decisions -------------------------------------------------------------------

    def decide(
        self,
        sheet: str,
        decision: str,
        *,
        reviewer: str,
        specimen_id: str = "",
        note: str = "",
        model_id: str = "",
        score: float | None = None,
    ) -> dict:
        """Record a decision about `sheet`; returns the new row."""
        check_choice("decision", decision, DECISIONS)
        _check_reviewer(reviewer)

        def write(con):
            cur = _current_row(con, sheet)
            cid = con.execute(
                "INSERT INTO decisions (sheet, specimen_id, decision, note, reviewer, time, "
                "model_id, score, prev) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sheet,
                    specimen_id,
                    decision,
                    note,
                    reviewer,
                    utc_now(),
                    model_id,
                    score,
                    cur["id"] if cur else None,
                ),
            ).lastrowid
            return _row(con, cid)

        return self._write(write)

    def undo(self, sheet: str, *, reviewer: str, expected: int | None = None) -> dict:
        """Restore the state of `sheet` before its current row, as a new row.

        `expected` is the id of the row the reviewer means to undo; when the sheet's current row
        is another (someone decided it meanwhile), `Conflict` is raised and nothing written."""
        _check_reviewer(reviewer)

        def write(con):
            cur = _current_row(con, sheet)
            if cur is None or (cur["decision"] == "" and cur["prev"] is None):
                raise Conflict(f"{sheet}: nothing to undo")
            if expected is not None and cur["id"] != expected:
                raise Conflict(
                    f"{sheet}: changed meanwhile by {cur['reviewer']} ({cur['decision'] or 'undo'}"
                    f" at {cur['time']}); reload to see it"
                )
            before = _row(con, cur["prev"]) if cur["prev"] is not None else None
            cid = con.execute(
                "INSERT INTO decisions (sheet, specimen_id, decision, note, reviewer, time, "
                "model_id, score, prev, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sheet,
                    cur["specimen_id"],
                    before["decision"] if before else "",
                    before["note"] if before else "",
                    reviewer,
                    utc_now(),
                    before["model_id"] if before else cur["model_id"],
                    before["score"] if before else cur["score"],
                    before["prev"] if before else None,
                    cur["id"],
                ),
            ).lastrowid
            return _row(con, cid)

        return self._write(write)

    def current(self) -> dict[str, dict]:
        """The current row of every sheet ever decided, by sheet (undecided ones included, with
        an empty decision)."""
        rows = self._read(
            "SELECT d.* FROM decisions d JOIN (SELECT sheet, MAX(id) AS id FROM decisions "
            "GROUP BY sheet) m ON d.id = m.id ORDER BY d.id"
        )
        return {r["sheet"]: r for r in rows}

    def history(self, sheet: str | None = None) -> list[dict]:
        """Every row, oldest first (of one sheet when given)."""
        if sheet is None:
            return self._read("SELECT * FROM decisions ORDER BY id")
        return self._read("SELECT * FROM decisions WHERE sheet = ? ORDER BY id", (sheet,))

    def since(self, after_id: int) -> list[dict]:
        """Rows written after `after_id` (what a page polls for: other reviewers' decisions)."""
        return self._read("SELECT * FROM decisions WHERE id > ? ORDER BY id", (int(after_id),))

    def set_meta(self, key: str, value: str) -> None:
        """Remember a fact about the job (e.g. which label a decision means)."""
        self._write(
            lambda con: con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        )

    def meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_labels(self, labels: dict[str, str]) -> None:
        """Which class of the screen's run each decision means (`{"contaminated": "stained",
        "clean": "unstained"}`; '' where no one class fits)."""
        self.set_meta("labels", json.dumps({d: labels.get(d) or "" for d in LABELLED}))

    def labels(self) -> dict[str, str]:
        """The classes decisions mean, as `set_labels` stored them ({} when never stored)."""
        raw = self.meta("labels")
        try:
            found = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            found = {}
        return {d: str(found.get(d) or "") for d in LABELLED} if isinstance(found, dict) else {}

    def decisions(self) -> list[dict]:
        """The current decision of every decided sheet, as `decisions.csv` holds them: path,
        specimen id, decision, the label it means (`labels()`, or the decision's own name where
        none were ever set; '' for unsure), note, who, when, model, score and how many rows the
        sheet has in the history. Read in one transaction."""
        with self._connect() as con:
            con.execute("BEGIN")
            try:
                return _decisions(con)
            finally:
                con.execute("COMMIT")

    def export_decisions(self, out: str | Path) -> Path:
        """The current decision of every decided sheet as CSV (atomic), for training.

        Read and written while holding the store's write lock: two server processes export in
        the order of their decisions, so the file written last holds the latest of them (a
        plain read could take a snapshot, lose the race to write the file to a newer export,
        and then overwrite it with older decisions)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                return write_csv(out, _decisions(con), list(DECISION_COLUMNS))
            finally:
                con.execute("COMMIT")  # nothing was written: commit and rollback are the same

    # -- label fields ----------------------------------------------------------------------

    def set_field(
        self, record: str, field: str, value: str, *, original: str, reviewer: str
    ) -> dict:
        """Record a person's confirmation (value equals the draft) or change of one field."""
        _check_reviewer(reviewer)
        action = "confirmed" if value == original else "changed"

        def write(con):
            cid = con.execute(
                "INSERT INTO fields (record, field, value, original, action, reviewer, time) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record, field, value, original, action, reviewer, utc_now()),
            ).lastrowid
            return dict(con.execute("SELECT * FROM fields WHERE id = ?", (cid,)).fetchone())

        return self._write(write)

    def fields(self, record: str | None = None) -> dict[str, dict[str, dict]]:
        """The current row of every reviewed field: {record: {field: row}}."""
        sql = (
            "SELECT f.* FROM fields f JOIN (SELECT record, field, MAX(id) AS id FROM fields "
            "GROUP BY record, field) m ON f.id = m.id"
        )
        args: tuple = ()
        if record is not None:
            sql += " WHERE f.record = ?"
            args = (record,)
        out: dict[str, dict[str, dict]] = {}
        for r in self._read(sql + " ORDER BY f.id", args):
            out.setdefault(r["record"], {})[r["field"]] = r
        return out


def _decisions(con) -> list[dict]:
    """`DecisionStore.decisions` on an open connection (inside the caller's transaction)."""
    cur = [
        dict(r)
        for r in con.execute(
            "SELECT d.* FROM decisions d JOIN (SELECT sheet, MAX(id) AS id FROM "
            "decisions GROUP BY sheet) m ON d.id = m.id ORDER BY d.id"
        )
    ]
    counts = dict(con.execute("SELECT sheet, COUNT(*) FROM decisions GROUP BY sheet").fetchall())
    raw = con.execute("SELECT value FROM meta WHERE key = 'labels'").fetchone()
    try:
        labels = json.loads(raw[0]) if raw else None
    except json.JSONDecodeError:
        labels = None
    if not isinstance(labels, dict):  # never set (an older review): the decision's name
        labels = {d: d for d in LABELLED}
    rows = []
    for r in cur:
        if not r["decision"]:
            continue
        r["path"] = r["sheet"]
        r["label"] = str(labels.get(r["decision"]) or "")
        r["rows_in_history"] = counts[r["sheet"]]
        rows.append(r)
    return rows


def _current_row(con, sheet: str):
    return con.execute(
        "SELECT * FROM decisions WHERE sheet = ? ORDER BY id DESC LIMIT 1", (sheet,)
    ).fetchone()


def _row(con, rid: int) -> dict:
    return dict(con.execute("SELECT * FROM decisions WHERE id = ?", (rid,)).fetchone())


def _check_reviewer(reviewer: str) -> None:
    if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > 100:
        raise ParameterError(
            f"reviewer must be a name or initials (1-100 characters); got {reviewer!r}"
        )
