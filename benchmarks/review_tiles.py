"""Time from opening a flagged sheet in `herbscan review` to its first full-resolution tiles.

For each ~4000×6000 JPEG of ../shared/data/highres-sheets, a fresh review server (no tiles cut
yet) is asked what the viewer asks, over HTTP: the sheet's .dzi (opening it; the server starts
decoding the full sheet in the background), the tiles of the level that fits a 1000×800 view
(the overview), then — zooming straight to 1:1 at the centre — the full-resolution tiles that
cover a 1280×800 view, 6 at a time as a browser does. Then the same again with the tiles already
cut (a second visit, or a second reviewer). The floor is a plain full decode of the JPEG
(`images.open_rgb`) plus cutting one tile, measured in the same run. Prints a table, then one
JSON object on the last line.

    python benchmarks/review_tiles.py [--sheets 5]
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))
HIGHRES = SHARED / "highres-sheets"


def job_folder(sheet: Path, root: Path) -> Path:
    """A finished screen with one flagged sheet (what `herbscan screen` leaves)."""
    out = root / "screen"
    out.mkdir(parents=True)
    state = {
        "complete": True,
        "model_id": "bench",
        "threshold": 0.5,
        "positive_class": "contaminated",
        "classes": ["clean", "contaminated"],
        "metadata_columns": [],
        "source": str(sheet.parent),
    }
    (out / "screen.json").write_text(json.dumps(state))
    with open(out / "flagged.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "specimen_id", "score", "predicted", "p_clean", "p_contaminated"])
        w.writerow([str(sheet), sheet.stem, 0.9, "contaminated", 0.1, 0.9])
    return out


def get(port: int, path: str) -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status} {body[:200]!r}")
    return body


def visit(port: int, key: str) -> dict:
    """Seconds from opening the sheet to its overview, first and all full-resolution tiles."""
    t0 = time.perf_counter()
    dzi = get(port, f"/dzi/{key}.dzi").decode()
    w = int(dzi.split('Width="')[1].split('"')[0])
    h = int(dzi.split('Height="')[1].split('"')[0])
    top = math.ceil(math.log2(max(w, h)))
    ts = 254
    fit = next(
        lv
        for lv in range(top, -1, -1)
        if w / 2 ** (top - lv) <= 1000 and h / 2 ** (top - lv) <= 800
    )
    lw, lh = math.ceil(w / 2 ** (top - fit)), math.ceil(h / 2 ** (top - fit))
    for row in range(math.ceil(lh / ts)):
        for col in range(math.ceil(lw / ts)):
            get(port, f"/dzi/{key}_files/{fit}/{col}_{row}.jpeg")
    overview = time.perf_counter() - t0
    cx, cy = w // 2, h // 2
    cols = range((cx - 640) // ts, (cx + 640) // ts + 1)
    rows = range((cy - 400) // ts, (cy + 400) // ts + 1)
    urls = [f"/dzi/{key}_files/{top}/{c}_{r}.jpeg" for r in rows for c in cols]
    done = []

    def one(u):
        get(port, u)
        done.append(time.perf_counter() - t0)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, urls))
    return {
        "size": f"{w}×{h}",
        "overview_s": overview,
        "first_full_s": min(done),
        "all_full_s": max(done),
        "tiles": len(urls),
    }


def floor(sheet: Path) -> float:
    """A plain full decode and one tile cut: what any on-demand viewer must at least spend."""
    import io

    from herbscan.images import open_rgb

    t0 = time.perf_counter()
    im = open_rgb(sheet)
    buf = io.BytesIO()
    im.crop((2000, 3000, 2256, 3256)).save(buf, "JPEG", quality=85)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sheets", type=int, default=5)
    args = ap.parse_args()
    from herbscan.review.server import make_server

    sheets = sorted((HIGHRES / "images").glob("*.jpg"))[: args.sheets]
    if not sheets:
        print(f"no sheets in {HIGHRES} (set HERBSCAN_SHARED_DATA)")
        print(json.dumps({}))
        return
    rows = []
    for sheet in sheets:
        with tempfile.TemporaryDirectory() as tmp:
            srv = make_server(job_folder(sheet, Path(tmp)), port=0, reviewer="bench")
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            try:
                key = srv.app.job.sheets[0].key
                port = srv.server_address[1]
                cold = visit(port, key)
                srv.app._open.clear()  # a second visit after the sheet left memory: disk tiles
                warm = visit(port, key)
            finally:
                srv.shutdown()
                srv.server_close()
        base = floor(sheet)
        rows.append(
            {"sheet": sheet.name, **cold, "cached_all_full_s": warm["all_full_s"], "floor_s": base}
        )
    print(
        f"{'sheet':<16} {'size':>10} {'overview':>9} {'1st full':>9} {'all full':>9} "
        f"{'(tiles)':>7} {'cached':>7} {'floor':>7}"
    )
    for r in rows:
        print(
            f"{r['sheet']:<16} {r['size']:>10} {r['overview_s']:>8.2f}s {r['first_full_s']:>8.2f}s "
            f"{r['all_full_s']:>8.2f}s {r['tiles']:>7} {r['cached_all_full_s']:>6.2f}s "
            f"{r['floor_s']:>6.2f}s"
        )
    med = {
        k: round(statistics.median(r[k] for r in rows), 3)
        for k in ("overview_s", "first_full_s", "all_full_s", "cached_all_full_s", "floor_s")
    }
    med["ratio_first_full_to_floor"] = round(med["first_full_s"] / med["floor_s"], 2)
    med["sheets"] = len(rows)
    print("median: " + ", ".join(f"{k} {v}" for k, v in med.items()))
    sys.stdout.flush()
    print(json.dumps(med))


if __name__ == "__main__":
    main()
