"""The downloader against a local HTTP server that misbehaves on purpose."""

import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from herbscan.download import download_all, iiif_sized, safe_extract
from herbscan.errors import ManifestError

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 5000


class Handler(BaseHTTPRequestHandler):
    hits: dict = {}
    agents: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Handler.agents.append(self.headers.get("User-Agent"))
        n = Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky") and n <= 2:
            return self._send(500, b"oops", "text/plain")
        if self.path.startswith("/limited") and n == 1:
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return None
        if self.path.startswith("/truncated") and n <= 1:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG[:100])
            return None
        if self.path.startswith("/slow") and n == 1:
            import time

            time.sleep(1.0)  # longer than the client's timeout
            return self._send(200, JPEG, "image/jpeg")
        if self.path.startswith("/html"):
            return self._send(200, b"<html>login</html>", "text/html")
        if self.path.startswith("/missing"):
            return self._send(404, b"no", "text/plain")
        return self._send(200, JPEG, "image/jpeg")

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.hits, Handler.agents = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_retries_checks_and_resume(server, tmp_path):
    items = [
        (f"{server}/ok/a.jpg", "a.jpg"),
        (f"{server}/flaky/b.jpg", "b.jpg"),
        (f"{server}/limited/c.jpg", "c.jpg"),
        (f"{server}/truncated/d.jpg", "d.jpg"),
        (f"{server}/html/e.jpg", "e.jpg"),
        (f"{server}/missing/f.jpg", "f.jpg"),
        (f"{server}/ok/g.jpg", "../escape.jpg"),
    ]
    res = download_all(items, tmp_path / "out", backoff=0.01, progress=False)
    ok = {r.path.name: r for r in res if r.ok}
    assert sorted(ok) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert ok["b.jpg"].attempts == 3 and ok["c.jpg"].attempts == 2 and ok["d.jpg"].attempts == 2
    assert all((tmp_path / "out" / n).read_bytes() == JPEG for n in ok)
    errors = {r.url.rsplit("/", 2)[-2]: r.error for r in res if not r.ok}
    assert "content type 'text/html'" in errors["html"]
    assert "HTTP 404" in errors["missing"]
    assert "outside" in errors["ok"] and not (tmp_path / "escape.jpg").exists()
    assert not list((tmp_path / "out").glob("*.part"))
    assert all(a.startswith("herbscan/") for a in Handler.agents)
    # a re-run fetches only what is missing
    before = dict(Handler.hits)
    again = download_all(items[:4], tmp_path / "out", backoff=0.01, progress=False)
    assert all(r.ok and r.skipped for r in again) and Handler.hits == before


def test_timeout_is_retried(server, tmp_path):
    res = download_all(
        [(f"{server}/slow/t.jpg", "t.jpg")], tmp_path, timeout=0.3, backoff=0.01, progress=False
    )
    assert res[0].ok and res[0].attempts == 2 and (tmp_path / "t.jpg").read_bytes() == JPEG


def test_gives_up_after_retries(server, tmp_path):
    res = download_all(
        [(f"{server}/flaky/z.jpg", "z.jpg")], tmp_path, retries=1, backoff=0.01, progress=False
    )
    assert not res[0].ok and "HTTP 500 (after 2 tries)" in res[0].error


def test_iiif_sizing():
    base = "https://iiif.example.org/iiif/2/abc"
    assert (
        iiif_sized(f"{base}/full/full/0/default.jpg", 2048)
        == f"{base}/full/!2048,2048/0/default.jpg"
    )
    assert iiif_sized(f"{base}/info.json", 1024) == f"{base}/full/!1024,1024/0/default.jpg"
    assert iiif_sized("https://example.org/a.jpg", 2048) == "https://example.org/a.jpg"


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 4
                tf.addfile(info, io.BytesIO(b"data"))
            else:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/passwd"
                tf.addfile(info)
    return path


def test_safe_extract(tmp_path):
    good = _tar(tmp_path / "good.tgz", [("stained/00012345.jpg", "file")])
    assert [p.name for p in safe_extract(good, tmp_path / "x")] == ["00012345.jpg"]
    for name, members in (
        ("dots", [("../evil.jpg", "file")]),
        ("abs", [("/tmp/evil.jpg", "file")]),
        ("link", [("stained/link.jpg", "link")]),
    ):
        bad = _tar(tmp_path / f"{name}.tgz", members)
        with pytest.raises(ManifestError, match="refused"):
            safe_extract(bad, tmp_path / name)
        assert not (tmp_path / "evil.jpg").exists()
    with pytest.raises(ManifestError, match="over the limit"):
        safe_extract(good, tmp_path / "y", max_files=0)
