"""Character error rate on taxon-name line crops: raw tesseract against herbscan's line reader.

Both run in the same process on the same crops (../shared/data/ocr-taxon-lines by default):

- raw: tesseract with its defaults (page segmentation 3, English) on the crop as stored;
- herbscan: `read_line` (grey on white, text scaled to three heights, two line modes, the most
  confident of the six readings, stray marks at word ends dropped);
- herbscan + checklist: `Checklist.snap_line` over all six readings, with a checklist built from
  the other crops' names (leave-one-out: a crop's own name counts only if another crop has it
  too), falling back to the most confident reading when no name is within `--min-score`.

Prints a table and, last, one JSON line with the CERs and the ratios against raw.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from rapidfuzz.distance import Levenshtein

from herbscan.labels.names import LINE_MIN_SCORE, Checklist
from herbscan.labels.ocr import find_tesseract
from herbscan.labels.read import line_readings

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "ocr-taxon-lines"


def raw(path: str) -> str:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    out = subprocess.run(
        [find_tesseract(), path, "-", "-l", "eng"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    ).stdout
    return " ".join(out.split())


def ours(path: str) -> list[str]:
    """Every reading, most confident first."""
    return [" ".join(r.text.split()) for r in line_readings(Image.open(path))]


def cer(preds: list[str], truths: list[str]) -> float:
    edits = sum(Levenshtein.distance(p, t) for p, t in zip(preds, truths, strict=True))
    return edits / sum(len(t) for t in truths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HERBSCAN_SHARED_DATA", DEFAULT.parent)) / "ocr-taxon-lines",
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--min-score", type=float, default=LINE_MIN_SCORE)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    with (args.data / "manifest.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if args.limit:
        rows = rows[: args.limit]
    paths = [str(args.data / r["file"]) for r in rows]
    truths = [" ".join(r["gt_text"].split()) for r in rows]
    with ProcessPoolExecutor(args.workers) as pool:
        t0 = time.perf_counter()
        raw_out = list(pool.map(raw, paths))
        t_raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        our_out = list(pool.map(ours, paths))
        t_ours = time.perf_counter() - t0
    counts = Counter(truths)
    snapped = []
    for readings, truth in zip(our_out, truths, strict=True):
        checklist = Checklist(names=sorted(n for n in counts if n != truth or counts[n] > 1))
        hit = checklist.snap_line(readings, args.min_score)
        snapped.append(hit[0] if hit else readings[0])
    best = [readings[0] for readings in our_out]
    result = {
        "lines": len(rows),
        "cer_raw": round(cer(raw_out, truths), 4),
        "cer_herbscan": round(cer(best, truths), 4),
        "cer_herbscan_checklist": round(cer(snapped, truths), 4),
        "seconds_raw": round(t_raw, 1),
        "seconds_herbscan": round(t_ours, 1),
    }
    result["reduction"] = round(1 - result["cer_herbscan"] / result["cer_raw"], 3)
    result["reduction_checklist"] = round(
        1 - result["cer_herbscan_checklist"] / result["cer_raw"], 3
    )
    print(f"{'pipeline':<34} {'CER':>7} {'vs raw':>8}", file=sys.stderr)
    print(f"{'raw tesseract (psm 3, eng)':<34} {result['cer_raw']:>7.3f} {'':>8}", file=sys.stderr)
    print(
        f"{'herbscan read_line':<34} {result['cer_herbscan']:>7.3f} "
        f"{-100 * result['reduction']:>7.1f}%",
        file=sys.stderr,
    )
    print(
        f"{'herbscan + leave-one-out checklist':<34} {result['cer_herbscan_checklist']:>7.3f} "
        f"{-100 * result['reduction_checklist']:>7.1f}%",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
