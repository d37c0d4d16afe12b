"""herbscan review in a real browser: Chromium driven over the Chrome DevTools Protocol.

The driver is the few lines below: Chromium's `--remote-debugging-pipe` speaks CDP as JSON
messages separated by NUL bytes on file descriptors 3 (in) and 4 (out), so no WebSocket
library, no Playwright and no browser download are needed; it works offline wherever
`chromium` is installed (as for the report test), and skips with a message where it is not.
The screenshots go to a temporary folder; with HERBSCAN_SCREENSHOTS=docs/review they replace
the ones in the docs (so an ordinary test run leaves the working tree clean).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import select
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from test_review import make_labels, make_screen

from herbscan.review.learn import read_decisions
from herbscan.review.server import make_server
from herbscan.review.store import DecisionStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: HERBSCAN_SCREENSHOTS (relative to the repository) or tmp_path."""
    chosen = os.environ.get("HERBSCAN_SCREENSHOTS")
    folder = REPO / chosen if chosen else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Browser:
    """Headless Chromium and one page, driven over CDP on a pipe."""

    def __init__(self, exe: str, profile: Path, size=(1280, 800)):
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        args = [
            exe,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            "about:blank",
        ]
        # fds 3 and 4 are where Chromium expects the pipe
        cmd = ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "chromium", *args]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )

    def _message(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session=False, timeout=30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._message(timeout)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def js(self, expression: str):
        r = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=True,
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"still false after {timeout} s: {expression}")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait("document.readyState === 'complete'")

    def key(self, key: str) -> None:
        """A real key press, as the keyboard sends it."""
        code = {"ArrowRight": 39, "ArrowLeft": 37, "Enter": 13}.get(key, ord(key.upper()[0]))
        base = {"key": key, "windowsVirtualKeyCode": code}
        self.call(
            "Input.dispatchKeyEvent",
            {"type": "keyDown", **base, **({"text": key} if len(key) == 1 else {})},
            session=True,
        )
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **base}, session=True)

    def type(self, text: str) -> None:
        self.call("Input.insertText", {"text": text}, session=True)

    def screenshot(self, path: Path) -> int:
        """A PNG of the page, reduced to 256 colours so that it stays small; returns bytes."""
        data = base64.b64decode(
            self.call("Page.captureScreenshot", {"format": "png"}, True)["data"]
        )
        im = Image.open(io.BytesIO(data)).convert("RGB")
        im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, optimize=True)
        return path.stat().st_size

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium) - review app not tested")
    b = Browser(exe, tmp_path_factory.mktemp("profile"))
    yield b
    b.close()


def _serve(folder, **kw):
    srv = make_server(folder, port=0, reviewer="AB", **kw)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def _stop(srv) -> None:
    srv.shutdown()
    srv.server_close()


def _url(srv) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/"


def test_sheet_review_zoom_keyboard_undo_and_restart(tmp_path, browser, shots):
    job = make_screen(tmp_path, sizes=((1200, 1800), (1000, 1500), (900, 1350), (600, 900)))
    srv = _serve(job)
    store = DecisionStore(job / "review" / "decisions.sqlite")
    try:
        browser.goto(_url(srv))
        browser.wait("window.herbscanReview && herbscanReview.ready")
        assert browser.js("document.querySelectorAll('#queue li').length") == 3
        # metadata shown as text: the script in it is not run, no element made of it
        assert browser.js("document.querySelector('#meta').textContent.includes('<script>')")
        assert browser.js("document.querySelectorAll('#meta script, #meta img').length") == 0
        browser.wait("herbscanReview.viewer.world.getItemCount() === 2")  # sheet + heatmap
        browser.wait("herbscanReview.viewer.world.getItemAt(0).getFullyLoaded()")
        assert browser.screenshot(shots / "sheet_queue.png") < 300_000
        # zoom to full resolution: the viewer asks for the top level's tiles, the server cuts
        key = srv.app.job.sheets[0].key
        top = job / "review" / "tiles" / key / "11"
        browser.js(
            "const v = herbscanReview.viewer.viewport;"
            "v.zoomTo(v.imageToViewportZoom(1.0), v.getCenter(), true); true"
        )
        end = time.monotonic() + 20
        while time.monotonic() < end and len(list(top.glob("*.jpeg"))) < 4:
            time.sleep(0.1)
        assert len(list(top.glob("*.jpeg"))) >= 4  # full-resolution tiles were served
        time.sleep(0.3)  # the viewer's next frame starts drawing them
        browser.wait("herbscanReview.viewer.world.getItemAt(0).getFullyLoaded()")
        assert browser.screenshot(shots / "sheet_zoomed_heatmap.png") < 300_000
        # the heatmap overlay toggles with h
        browser.key("h")
        assert browser.js("herbscanReview.viewer.world.getItemAt(1).getOpacity()") == 0
        browser.key("h")
        # decide with the keyboard: c on the first sheet, n on the next, then undo the n
        browser.key("c")
        browser.wait("herbscanReview.index === 1")
        browser.key("n")
        browser.wait("herbscanReview.index === 2")
        paths = [str(s.path) for s in srv.app.job.sheets]
        cur = store.current()
        assert cur[paths[0]]["decision"] == "contaminated" and cur[paths[0]]["reviewer"] == "AB"
        assert cur[paths[0]]["model_id"] == "model-abc" and cur[paths[0]]["score"] == 0.97
        assert cur[paths[1]]["decision"] == "clean"
        browser.key("z")
        browser.wait("herbscanReview.job.sheets[1].current.decision === ''")
        assert [r["decision"] for r in store.history(paths[1])] == ["clean", ""]
        browser.key("k")  # back to the first: j/k and the arrows move
        browser.wait("herbscanReview.index === 0")
        # another reviewer decides meanwhile: the page shows it on its next poll
        store.decide(paths[2], "unsure", reviewer="CD")
        browser.wait("(herbscanReview.job.sheets[2].current || {}).reviewer === 'CD'", 10)
    finally:
        _stop(srv)
    # a new server on the same folder: the decisions are there
    srv = _serve(job)
    try:
        browser.goto(_url(srv))
        browser.wait("window.herbscanReview && herbscanReview.job")
        badges = browser.js(
            "[...document.querySelectorAll('#queue li .badge')].map(b => b.textContent)"
        )
        assert badges[0] == "contaminated" and badges[2] == "unsure"
    finally:
        _stop(srv)
    # CD's unsure came after the last export of decisions.csv: training reads the store
    rows = read_decisions(job / "review" / "decisions.csv")
    assert {Path(r["path"]).name: r["decision"] for r in rows} == {
        "HS000.jpg": "contaminated",
        "HS002.jpg": "unsure",
    }


def _field_rows(folder: Path) -> dict[str, int]:
    """How many rows the store holds per field: one per edit a person made."""
    con = sqlite3.connect(folder / "review" / "decisions.sqlite")
    try:
        return dict(con.execute("SELECT field, COUNT(*) FROM fields GROUP BY field").fetchall())
    finally:
        con.close()


def test_label_review_edit_confirm_and_export(tmp_path, browser, shots):
    folder = make_labels(tmp_path)
    srv = _serve(folder)
    try:
        browser.goto(_url(srv))
        browser.wait("window.herbscanReview && herbscanReview.ready")
        terms = browser.js("[...document.querySelectorAll('#fields tr')].map(t => t.dataset.term)")
        assert terms[:2] == ["scientificName", "eventDate"]  # needsReview first
        browser.wait("document.querySelector('#crops img').naturalWidth === 420")  # the crop
        # a real edit: focus, select, type, Enter (saves and moves to the next field)
        browser.js(
            "const i = document.querySelector('tr[data-term=scientificName] input');"
            "i.focus(); i.select(); true"
        )
        browser.type("Lycopodium annotinum L. subsp. alpestre")
        browser.key("Enter")
        browser.wait("herbscanReview.job.records[0].reviewed.scientificName")
        browser.js("document.querySelector('tr[data-term=eventDate] button').click(); true")
        browser.wait("herbscanReview.job.records[0].reviewed.eventDate")
        # leaving the field (Enter moved on, the click moved again) saves nothing twice
        browser.js("document.querySelector('tr[data-term=country] input').focus(); true")
        time.sleep(0.5)
        assert _field_rows(folder) == {"scientificName": 1, "eventDate": 1}
        assert browser.screenshot(shots / "label_review.png") < 300_000
        browser.js("document.getElementById('export').click(); true")
        browser.wait("document.getElementById('status').textContent.startsWith('exported 1')")
    finally:
        _stop(srv)
    with open(folder / "review" / "labels_reviewed.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert rows[0]["scientificName"] == "Lycopodium annotinum L. subsp. alpestre"
    assert rows[0]["changedFields"] == "scientificName"
    assert rows[0]["confirmedFields"] == "eventDate"
    assert rows[0]["stateProvince"] == "Alaska"  # the rest of the draft travels along
