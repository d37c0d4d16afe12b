"""A polite, resumable downloader for collection images, and safe tarball extraction.

Downloads run on a bounded thread pool with a per-host rate limit and a User-Agent naming
herbscan. 429, 5xx, timeouts and truncated bodies are retried with exponential backoff (honouring
Retry-After up to a cap). A file is written as `NAME.part` and renamed only after its length and
content type check out, so a re-run skips finished files and never mistakes a partial one for
complete. Nothing is ever written outside the output folder.
"""

from __future__ import annotations

import http.client
import os
import re
import tarfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from herbscan import __version__
from herbscan.errors import ManifestError
from herbscan.progress import Progress

USER_AGENT = f"herbscan/{__version__} (herbarium image research)"
RETRY_STATUS = {429, 500, 502, 503, 504}


class _Retry(Exception):
    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.wait = wait


class _Fail(Exception):
    pass


@dataclass
class Result:
    url: str
    path: Path
    ok: bool
    skipped: bool = False  # already complete on disk
    error: str = ""
    attempts: int = 0


class _HostLimiter:
    """At most `rate` requests per second to each host, shared by all threads."""

    def __init__(self, rate: float):
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next: dict[str, float] = {}
        self.lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next.get(host, now))
            self.next[host] = at + self.gap
        if at > now:
            time.sleep(at - now)


def safe_dest(out: Path, rel: str | Path) -> Path:
    """`out/rel`, refusing anything that would land outside `out`."""
    root = out.resolve()
    dest = (root / rel).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise _Fail(f"refused: {rel} would be written outside {out}")
    return dest


def iiif_sized(url: str, size: int | None) -> str:
    """For a IIIF Image API URL or service, the URL of the image fitted into size×size."""
    if not size:
        return url
    m = re.match(r"(.*)/full/[^/]+/(\d+)/(default|color|gray)\.(jpg|png)$", url)
    if m:
        return f"{m.group(1)}/full/!{size},{size}/{m.group(2)}/{m.group(3)}.{m.group(4)}"
    if url.endswith("/info.json"):
        return f"{url[: -len('/info.json')]}/full/!{size},{size}/0/default.jpg"
    return url


def _fetch_once(
    url: str, dest: Path, timeout: float, max_bytes: int, content_types: tuple[str, ...] | None
) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "")
            if content_types and not ctype.startswith(content_types):
                raise _Fail(
                    f"content type {ctype or 'missing'!r}, expected {' or '.join(content_types)}"
                )
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            if expected is not None and expected > max_bytes:
                raise _Fail(f"{expected:,} bytes is over the {max_bytes:,}-byte limit")
            dest.parent.mkdir(parents=True, exist_ok=True)
            got = 0
            with open(part, "wb") as f:
                while chunk := resp.read(1 << 16):
                    got += len(chunk)
                    if got > max_bytes:
                        raise _Fail(f"more than the {max_bytes:,}-byte limit")
                    f.write(chunk)
            if expected is not None and got != expected:
                raise _Retry(f"truncated: {got:,} of {expected:,} bytes")
        os.replace(part, dest)
    except urllib.error.HTTPError as e:
        if e.code in RETRY_STATUS:
            ra = e.headers.get("Retry-After", "") if e.headers else ""
            raise _Retry(f"HTTP {e.code}", float(ra) if ra.isdigit() else None) from None
        raise _Fail(f"HTTP {e.code} {e.reason}") from None
    except (
        urllib.error.URLError,
        TimeoutError,
        ConnectionError,
        http.client.IncompleteRead,
        http.client.RemoteDisconnected,
    ) as e:
        raise _Retry(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
    finally:
        part.unlink(missing_ok=True)


def download_all(
    items: list[tuple[str, str]],
    out: str | Path,
    *,
    workers: int = 4,
    per_host_rate: float = 4.0,
    retries: int = 4,
    backoff: float = 1.0,
    max_wait: float = 60.0,
    timeout: float = 30.0,
    max_bytes: int = 500 << 20,
    content_types: tuple[str, ...] | None = ("image/",),
    progress: bool = True,
) -> list[Result]:
    """Download (url, relative path) pairs under `out`; returns one Result per item, in order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    limiter = _HostLimiter(per_host_rate)

    def one(item: tuple[str, str]) -> Result:
        url, rel = item
        try:
            dest = safe_dest(out, rel)
        except _Fail as e:
            return Result(url, out / rel, False, error=str(e))
        if dest.is_file():
            return Result(url, dest, True, skipped=True)
        for attempt in range(1, retries + 2):
            limiter.wait(urlsplit(url).netloc)
            try:
                _fetch_once(url, dest, timeout, max_bytes, content_types)
                return Result(url, dest, True, attempts=attempt)
            except _Fail as e:
                return Result(url, dest, False, error=str(e), attempts=attempt)
            except _Retry as e:
                if attempt > retries:
                    return Result(
                        url, dest, False, error=f"{e} (after {attempt} tries)", attempts=attempt
                    )
                time.sleep(
                    min(max_wait, e.wait if e.wait is not None else backoff * 2 ** (attempt - 1))
                )
        raise AssertionError("unreachable")

    results: list[Result] = []
    with (
        Progress(len(items), "downloading", unit="files", enabled=progress) as bar,
        ThreadPoolExecutor(max(1, workers)) as pool,
    ):
        for r in pool.map(one, items):
            results.append(r)
            bar.update(1, failed=sum(not x.ok for x in results))
    return results


def safe_extract(
    archive: str | Path, out: str | Path, *, max_files: int = 100_000, max_bytes: int = 20 << 30
) -> list[Path]:
    """Extract the regular files of a tarball under `out`, refusing anything unsafe.

    Absolute paths, `..`, links, devices and FIFOs are refused, as are archives past the file
    count or total size limits; the error names the archive and the member.
    """
    out = Path(out)
    written, total = [], 0
    try:
        tf = tarfile.open(archive)
    except (OSError, tarfile.TarError) as e:
        raise ManifestError(
            f"{archive}: not a readable tar archive ({e}); download it again"
        ) from None
    with tf:
        members = tf.getmembers()
        if len(members) > max_files:
            raise ManifestError(
                f"{archive}: {len(members):,} members is over the limit of {max_files:,}; refused"
            )
        for m in members:
            if m.isdir():
                continue
            if not m.isfile():
                raise ManifestError(
                    f"{archive}: member {m.name!r} is a link or special file; "
                    "refused (only regular files are extracted)"
                )
            if Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                raise ManifestError(
                    f"{archive}: member {m.name!r} points outside the extraction folder; refused"
                )
            total += m.size
            if total > max_bytes:
                raise ManifestError(
                    f"{archive}: more than {max_bytes:,} bytes when extracted; refused"
                )
        for m in members:
            if not m.isfile():
                continue
            dest = safe_dest(out, m.name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            part = dest.with_name(dest.name + ".part")
            with open(part, "wb") as f:
                while chunk := src.read(1 << 20):
                    f.write(chunk)
            os.replace(part, dest)
            written.append(dest)
    return written
