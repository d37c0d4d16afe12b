"""The review web app: a small HTTP server over one job folder (standard library only).

`ThreadingHTTPServer` serves a static page (HTML, JavaScript, the vendored OpenSeadragon) and a
JSON API; every decision goes to the job's `DecisionStore` before the answer, and
`review/decisions.csv` is rewritten (atomically) after each one, for people; training reads the
store itself (`learn.read_decisions`), which another server process may have written since.
The standard library is enough for one curator or a handful: no framework, no new dependency,
nothing to install on a collection's workstation.

Safe by default:
- binds 127.0.0.1; another `host` needs a token (printed in the URL). The first request carries
  it as `?token=`, the server answers with an HttpOnly, SameSite=Strict cookie holding it, and
  every request without the token (cookie or query) gets 403. On loopback the Host header must
  name the loopback address (no DNS rebinding).
- serves only what the job's tables name: sheets and heatmaps by key, label crops by record and
  index, static files by name from the package; a path is never taken from a URL.
- POSTs must carry the page's CSRF token in `X-CSRF-Token` and a JSON body under 64 KB.
- the page writes every value with `textContent` (never as HTML); responses forbid framing,
  sniffing and referrers, and a Content-Security-Policy allows only the app's own scripts.
- a malformed request gets a 4xx answer and the server goes on (odd Content-Length digits,
  too many query fields, ids beyond 64 bits, JSON nested too deep or with 5000-digit numbers
  included); an unexpected error a 500 without details (the traceback goes to the log); a
  client that leaves before its answer is dropped quietly.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import json
import re
import secrets
import sys
import threading
import traceback
from collections import OrderedDict
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from herbscan.errors import HerbscanError, ParameterError
from herbscan.fileio import write_csv
from herbscan.review.dzi import DeepZoom, TileError
from herbscan.review.queue import LabelJob, SheetJob, load_job
from herbscan.review.store import (
    DECISIONS,
    DECISIONS_FILE,
    STORE_FILE,
    Conflict,
    DecisionStore,
)

MAX_BODY = 64 * 1024
OPEN_SHEETS = 2
"""Sheets whose decoded pyramid stays in memory (a 4000×6000 sheet: about 100 MB)."""
STORE, DECISIONS_CSV, LABELS_CSV = STORE_FILE, DECISIONS_FILE, "labels_reviewed.csv"
TOKEN_COOKIE = "herbscan_token"
_TILE = re.compile(r"^/dzi/([0-9a-f]{20})_files/(\d{1,2})/(\d{1,6})_(\d{1,6})\.jpeg$")
_DZI = re.compile(r"^/dzi/([0-9a-f]{20})\.dzi$")
_HEATMAP = re.compile(r"^/heatmap/([0-9a-f]{20})\.png$")
_CROP = re.compile(r"^/crop/([0-9a-f]{20})/(\d{1,3})\.jpg$")
_STATIC = re.compile(r"^/static/([\w./-]{1,200})$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


class BadRequest(Exception):
    """A request the app refuses, with the status and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _static_files() -> dict[str, Path]:
    """Name → file of everything under the package's static folder (the allow-list)."""
    root = Path(str(resources.files("herbscan.review") / "static"))
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


class ReviewApp:
    """One job folder's review state: the queue, the store, open sheets and the tokens."""

    def __init__(
        self,
        folder: str | Path,
        *,
        queue: str = "probable",
        reviewer: str | None = None,
        crops: str | Path | None = None,
        token: str | None = None,
    ):
        self.job: SheetJob | LabelJob = load_job(folder, queue=queue, crops=crops)
        self.review_dir = self.job.review_dir
        self.store = DecisionStore(self.review_dir / STORE)
        if isinstance(self.job, SheetJob):  # what a decision means travels with the decisions
            self.store.set_labels(self.job.decision_labels)
        self.reviewer = (reviewer or _user()).strip()[:100] or "reviewer"
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self.static = _static_files()
        self._open: OrderedDict[str, DeepZoom] = OrderedDict()
        self._open_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wanted: str | None = None  # the sheet the prefetch worker decodes next
        self._prefetch_cv = threading.Condition()
        self._prefetcher: threading.Thread | None = None
        self._closed = False

    # -- sheets ----------------------------------------------------------------------------

    def zoom(self, key: str) -> DeepZoom:
        """The Deep Zoom pyramid of a sheet of the job (the last `OPEN_SHEETS` stay open)."""
        sheet = self.job.by_key.get(key) if isinstance(self.job, SheetJob) else None
        if sheet is None:
            raise BadRequest(404, "no such sheet in this job")
        with self._open_lock:
            dz = self._open.get(key)
            if dz is None:
                dz = DeepZoom(sheet.path, self.review_dir / "tiles" / key)
                self._open[key] = dz
                while len(self._open) > OPEN_SHEETS:
                    self._open.popitem(last=False)
            self._open.move_to_end(key)
        return dz

    def prefetch(self, key: str) -> None:
        """Have the sheet decoded fully in the background, while its overview shows.

        One worker thread decodes one sheet at a time, and only the one asked for last: a
        reviewer paging fast through the queue asks for many, and a full decode of each (about
        100 MB and a second for a 4000×6000 sheet) in a thread of its own would pile up memory
        and compete with the tiles of the sheet on screen. A sheet passed over is decoded when
        its tiles are asked for; errors show there too."""
        with self._prefetch_cv:
            if self._closed:
                return
            self._wanted = key
            if self._prefetcher is None:
                self._prefetcher = threading.Thread(
                    target=self._prefetch_loop, name="herbscan-prefetch", daemon=True
                )
                self._prefetcher.start()
            self._prefetch_cv.notify()

    def _prefetch_loop(self) -> None:
        while True:
            with self._prefetch_cv:
                while self._wanted is None and not self._closed:
                    self._prefetch_cv.wait()
                if self._closed:
                    return
                key, self._wanted = self._wanted, None
            try:
                self.zoom(key).prefetch()
            except Exception:  # noqa: BLE001 - a bad sheet answers its own tile requests
                pass

    def close(self) -> None:
        """Stop the prefetch worker (after the sheet it is decoding, if any)."""
        with self._prefetch_cv:
            self._closed = True
            self._prefetch_cv.notify_all()

    def decide(self, body: dict) -> dict:
        sheet = self._sheet(body)
        decision = body.get("decision")
        if decision not in DECISIONS:
            raise BadRequest(400, f"decision must be one of {', '.join(DECISIONS)}")
        note = body.get("note", "")
        if not isinstance(note, str) or len(note) > 2000:
            raise BadRequest(400, "note must be text of at most 2000 characters")
        row = self.store.decide(
            str(sheet.path),
            decision,
            reviewer=self._reviewer(body),
            specimen_id=sheet.specimen_id,
            note=note,
            model_id=self.job.model_id,
            score=None if sheet.score != sheet.score else sheet.score,
        )
        self.export_decisions()
        return self._public(row)

    def undo(self, body: dict) -> dict:
        sheet = self._sheet(body)
        expected = body.get("expected")
        if expected is not None and not isinstance(expected, int):
            raise BadRequest(400, "expected must be a decision id")
        try:
            row = self.store.undo(str(sheet.path), reviewer=self._reviewer(body), expected=expected)
        except Conflict as e:
            raise BadRequest(409, str(e)) from None
        self.export_decisions()
        return self._public(row)

    def _sheet(self, body: dict):
        if not isinstance(self.job, SheetJob):
            raise BadRequest(404, "this job has no sheets to decide")
        sheet = self.job.by_key.get(body.get("key")) if isinstance(body.get("key"), str) else None
        if sheet is None:
            raise BadRequest(404, "no such sheet in this job")
        return sheet

    def _reviewer(self, body: dict) -> str:
        name = body.get("reviewer") or self.reviewer
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise BadRequest(400, "reviewer must be a name of 1-100 characters")
        return name.strip()

    def _public(self, row: dict) -> dict:
        """A decision row as the page sees it: the sheet by key, not by path."""
        from herbscan.review.queue import key_of

        out = {k: v for k, v in row.items() if k != "sheet"}
        out["key"] = self._key_of_path.get(row["sheet"]) or key_of(row["sheet"])
        return out

    @property
    def _key_of_path(self) -> dict[str, str]:
        if not hasattr(self, "_kp"):
            items = self.job.sheets if isinstance(self.job, SheetJob) else []
            self._kp = {str(s.path): s.key for s in items}
        return self._kp

    def decisions_since(self, after: int) -> list[dict]:
        return [self._public(r) for r in self.store.since(after)]

    def export_decisions(self) -> Path:
        """`review/decisions.csv`: the current decision of every decided sheet (atomic)."""
        with self._export_lock:
            return self.store.export_decisions(self.review_dir / DECISIONS_CSV)

    def job_info(self) -> dict:
        info = self.job.to_dict()
        info["reviewer"] = self.reviewer
        if isinstance(self.job, SheetJob):
            current = {self._key_of_path.get(k): v for k, v in self.store.current().items()}
            for s in info["sheets"]:
                row = current.get(s["key"])
                s["current"] = self._public(row) if row else None
            info["last_id"] = max((r["id"] for r in current.values() if r), default=0)
        else:
            edits = self.store.fields()
            for r in info["records"]:
                rec = self.job.by_key[r["key"]]
                r["reviewed"] = {
                    f: {k: e[k] for k in ("value", "action", "reviewer", "time")}
                    for f, e in edits.get(rec.ident, {}).items()
                }
        return info

    # -- label drafts ----------------------------------------------------------------------

    def _record(self, key):
        if not isinstance(self.job, LabelJob):
            raise BadRequest(404, "this job has no label drafts")
        rec = self.job.by_key.get(key) if isinstance(key, str) else None
        if rec is None:
            raise BadRequest(404, "no such record in this job")
        return rec

    def set_field(self, body: dict) -> dict:
        rec = self._record(body.get("key"))
        field, value = body.get("field"), body.get("value")
        if not isinstance(field, str) or field not in rec.fields:
            raise BadRequest(400, "field must be a Darwin Core term of the transcription")
        if not isinstance(value, str) or len(value) > 5000:
            raise BadRequest(400, "value must be text of at most 5000 characters")
        row = self.store.set_field(
            rec.ident, field, value, original=rec.fields[field], reviewer=self._reviewer(body)
        )
        return {k: row[k] for k in ("field", "value", "action", "reviewer", "time")}

    def export_labels(self) -> dict:
        """`review/labels_reviewed.csv`: every record a person reviewed, as Darwin Core, with
        the fields they confirmed and changed, by whom and when (atomic; written for database
        import, so values are not formula-escaped)."""
        from herbscan.labels.transcribe import DWC_COLUMNS

        if not isinstance(self.job, LabelJob):
            raise BadRequest(404, "this job has no label drafts")
        edits = self.store.fields()
        rows = []
        for rec in self.job.records:
            done = edits.get(rec.ident)
            if not done:
                continue
            row = {"file": rec.file, "specimen_id": rec.specimen_id, **rec.fields}
            row.update({f: e["value"] for f, e in done.items()})
            row["confirmedFields"] = "|".join(
                f for f in DWC_COLUMNS if done.get(f, {}).get("action") == "confirmed"
            )
            row["changedFields"] = "|".join(
                f for f in DWC_COLUMNS if done.get(f, {}).get("action") == "changed"
            )
            row["needsReview"] = "|".join(f for f in rec.needs_review if f not in done)
            row["reviewedBy"] = "|".join(sorted({e["reviewer"] for e in done.values()}))
            row["reviewedAt"] = max(e["time"] for e in done.values())
            rows.append(row)
        cols = [
            "file",
            "specimen_id",
            *DWC_COLUMNS,
            "confirmedFields",
            "changedFields",
            "needsReview",
            "reviewedBy",
            "reviewedAt",
        ]
        # for a collection database to import: values as the reviewers typed them, no `'` before
        # a leading = + - @ (the spreadsheet guard of files for people)
        out = write_csv(self.review_dir / LABELS_CSV, rows, cols, for_people=False)
        return {"path": str(out), "records": len(rows)}

    def crop(self, key: str, k: int) -> Path:
        rec = self._record(key)
        if not 0 <= k < len(rec.crops):
            raise BadRequest(404, "no such label crop")
        return rec.crops[k]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


class Handler(BaseHTTPRequestHandler):
    """One request; the app is on the server object."""

    server_version = "herbscan-review"
    sys_version = ""
    timeout = 30  # a client that stops sending is dropped, not waited for forever
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> ReviewApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        if getattr(self.server, "verbose", False):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    # -- plumbing ---------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str,
        *,
        cache: bool = False,
        headers: dict | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._json(status, {"error": message})

    def _authorised(self, query: dict) -> bool:
        token = self.app.token
        if token is None:
            return True
        given = (query.get("token") or [""])[0]
        if not given:
            try:
                cookie = SimpleCookie(self.headers.get("Cookie", ""))
            except CookieError:
                return False
            given = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else ""
        return hmac.compare_digest(given.encode(), token.encode())

    def _host_ok(self) -> bool:
        """On loopback, the Host header must name the loopback (no DNS rebinding)."""
        if self.app.token is not None:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def _guard(self):
        """(path, query) of an authorised request, or None once an error was sent."""
        try:
            url = urlsplit(self.path)
        except ValueError:
            self._error(400, "malformed URL")
            return None
        try:
            query = parse_qs(url.query, max_num_fields=20)
        except ValueError:  # more fields than that: no page of ours sends them
            self._error(400, "too many query fields")
            return None
        if not self._host_ok():
            self._error(403, "the Host header must name this machine")
            return None
        if not self._authorised(query):
            self._error(403, "a token is needed: open the URL the server printed")
            return None
        return url.path, query

    def _dispatch(self, method) -> None:
        try:
            try:
                method()
            except BadRequest as e:
                self._error(e.status, str(e))
            except (TileError, ParameterError) as e:
                self._error(404 if isinstance(e, TileError) else 400, str(e))
            except HerbscanError as e:  # an unreadable sheet: say which, to the reviewer
                self._error(422, str(e))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception:  # noqa: BLE001 - a bug must not stop the server
                traceback.print_exc(file=sys.stderr)
                self._error(500, "internal error (see the server's log)")
        except OSError:  # the client left before its error answer: nobody to tell
            self.close_connection = True

    # -- GET ----------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def _get(self) -> None:
        guarded = self._guard()
        if guarded is None:
            return
        path, query = guarded
        app = self.app
        if path == "/" and "token" in query and app.token is not None:
            cookie = f"{TOKEN_COOKIE}={app.token}; HttpOnly; SameSite=Strict; Path=/"
            self._send(302, b"", "text/plain", headers={"Location": "/", "Set-Cookie": cookie})
            return
        if path in ("/", "/index.html"):
            page = "sheets.html" if isinstance(app.job, SheetJob) else "labels.html"
            html = app.static[page].read_text(encoding="utf-8")
            html = html.replace("{{csrf}}", app.csrf)  # URL-safe base64: nothing to escape
            self._send(200, html.encode(), _TYPES[".html"])
            return
        if path == "/api/job":
            self._json(200, app.job_info())
            return
        if path == "/api/decisions":
            since = (query.get("since") or ["0"])[0]
            if not (since.isascii() and since.isdigit() and len(since) <= 18):  # SQLite: 64 bits
                raise BadRequest(400, "since must be a decision id")
            self._json(200, {"decisions": app.decisions_since(int(since))})
            return
        if m := _DZI.match(path):
            dz = app.zoom(m.group(1))
            body = dz.descriptor().encode()
            self._send(200, body, "application/xml; charset=utf-8")
            app.prefetch(m.group(1))  # decode the full sheet while the overview shows
            return
        if m := _TILE.match(path):
            key, level, col, row = m.group(1), *(int(g) for g in m.groups()[1:])
            self._send(200, app.zoom(key).tile(level, col, row), "image/jpeg", cache=True)
            return
        if m := _HEATMAP.match(path):
            sheet = app.job.by_key.get(m.group(1)) if isinstance(app.job, SheetJob) else None
            if sheet is None or sheet.picture is None:
                raise BadRequest(404, "no heatmap for this sheet")
            self._send(200, sheet.picture.read_bytes(), "image/png", cache=True)
            return
        if m := _CROP.match(path):
            self._send(200, app.crop(m.group(1), int(m.group(2))).read_bytes(), "image/jpeg")
            return
        if m := _STATIC.match(path):
            f = app.static.get(m.group(1))
            if f is None:
                raise BadRequest(404, "no such file")
            ctype = _TYPES.get(f.suffix, "application/octet-stream")
            self._send(200, f.read_bytes(), ctype, cache=True)
            return
        raise BadRequest(404, "no such page")

    # -- POST ---------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _post(self) -> None:
        guarded = self._guard()
        if guarded is None:
            return
        path, _ = guarded
        app = self.app
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "a Content-Length is needed")
        if not (length.isascii() and length.isdigit()):  # '²' is a digit to isdigit() alone
            raise BadRequest(400, "the Content-Length must be a number of bytes")
        if len(length) > 9 or int(length) > MAX_BODY:
            raise BadRequest(413, f"the body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(int(length))
        if not hmac.compare_digest(
            self.headers.get("X-CSRF-Token", "").encode(), app.csrf.encode()
        ):
            raise BadRequest(403, "missing or wrong CSRF token: reload the page")
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (ValueError, RecursionError):  # not UTF-8 or JSON, too deep, a 5000-digit number
            raise BadRequest(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest(400, "the body must be a JSON object")
        handlers = {
            "/api/decide": app.decide,
            "/api/undo": app.undo,
            "/api/field": app.set_field,
            "/api/export-labels": lambda b: app.export_labels(),
        }
        fn = handlers.get(path)
        if fn is None:
            raise BadRequest(404, "no such action")
        self._json(200, fn(body))


class ReviewServer(ThreadingHTTPServer):
    """The HTTP server with its app; threads are daemons so Ctrl-C stops at once."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, app: ReviewApp, host: str, port: int, verbose: bool = False):
        self.app, self.verbose = app, verbose
        super().__init__((host, port), Handler)

    def server_close(self) -> None:
        super().server_close()
        self.app.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        suffix = f"/?token={self.app.token}" if self.app.token else "/"
        return f"http://{shown}:{port}{suffix}"


def make_server(
    folder: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    queue: str = "probable",
    reviewer: str | None = None,
    crops: str | Path | None = None,
    token: str | None = None,
    verbose: bool = False,
) -> ReviewServer:
    """A review server for `folder`, bound and ready for `serve_forever()`. A host other than
    the loopback gets a random token unless `token` is given."""
    if not (0 <= port <= 65535):
        raise ParameterError(f"port must be in [0, 65535]; got {port}")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    app = ReviewApp(folder, queue=queue, reviewer=reviewer, crops=crops, token=token)
    try:
        return ReviewServer(app, host, port, verbose)
    except OSError as e:
        raise ParameterError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port "
            "(0: any free one)"
        ) from None


def review(
    folder: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    queue: str = "probable",
    reviewer: str | None = None,
    crops: str | Path | None = None,
    open_browser: bool = True,
    verbose: bool = False,
    say=print,
) -> Path:
    """Serve the review app for a screen or transcription folder until interrupted; returns
    the decisions CSV (sheets) or reviewed labels CSV (labels) written on the way out."""
    server = make_server(
        folder,
        host=host,
        port=port,
        queue=queue,
        reviewer=reviewer,
        crops=crops,
        verbose=verbose,
    )
    app = server.app
    n = len(app.job.sheets) if isinstance(app.job, SheetJob) else len(app.job.records)
    what = "sheets" if isinstance(app.job, SheetJob) else "label drafts"
    say(f"reviewing {n} {what} of {app.job.folder} as {app.reviewer}: {server.url}")
    say(f"decisions are kept in {app.store.path}; Ctrl-C to stop")
    if open_browser:
        import webbrowser

        threading.Thread(target=lambda: webbrowser.open(server.url), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM, via the CLI) ends a session
        pass
    finally:
        server.server_close()
    if isinstance(app.job, SheetJob):
        out = app.export_decisions()
    else:
        out = Path(app.export_labels()["path"])
    say(f"wrote {out}")
    return out
