"""Transcription on real sheets with a manifest: barcodes, names, catalog numbers, seconds.

Default data: ../shared/data/ala-lycopodiaceae (158 University of Alaska sheets; the manifest's
`scientific_name` is the database's current name and `catalog_number` is printed on the sheet).
Each sheet is read once (`read_sheet`) in `--workers` processes and parsed twice:

- without a checklist;
- with a checklist built from the other sheets: the manifest's names, leaving out a name that
  only this sheet carries (the name a collection would have in its taxon table already, except
  for a first record).

Metrics (fractions of sheets): a barcode decoded; genus + species equal to the manifest's;
the catalog number equal (ignoring the institution code "ALA", spaces and zero padding), as
herbscan chooses it by default and with `catalog="stamp"`, the setting for a collection that
stamps its accession numbers on the sheet as this one does (`catalog_stamp_first`); stamps
found, and their number read and right (whatever the catalogue number was finally taken
from); and, as the ceiling for names, the manifest's species epithet found anywhere in the OCR
text (labels often carry an older combination, e.g. Lycopodium alpinum for Diphasiastrum alpinum);
`name_other_genus` counts the sheets whose label name was read with the manifest's epithet but
under another genus, which no reading without a checklist can match. Seconds per sheet are
wall time over the run (all workers) and CPU time per sheet in one worker.
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from herbscan.labels.fields import parse_label
from herbscan.labels.names import Checklist, binomial_key, epithet_stem
from herbscan.labels.read import read_sheet
from herbscan.labels.scoring import exact

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data"


def _read(path: str):
    t0 = time.perf_counter()
    r = read_sheet(path)
    return (
        r.text,
        r.word_confidences(),
        [b.value for b in r.barcodes],
        time.perf_counter() - t0,
        [(s.number, s.conf) for s in r.stamps],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("HERBSCAN_SHARED_DATA", DEFAULT)) / "ala-lycopodiaceae",
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--dump", type=Path, help="Also write each sheet's OCR text here (JSON).")
    args = ap.parse_args()
    with (args.data / "manifest.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if args.limit:
        rows = rows[: args.limit]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        reads = list(pool.map(_read, [str(args.data / r["file"]) for r in rows]))
    wall = time.perf_counter() - t0
    if args.dump:
        args.dump.write_text(
            json.dumps(
                [
                    {
                        "file": r["file"],
                        "text": x[0],
                        "conf": x[1],
                        "barcodes": x[2],
                        "stamps": x[4],
                    }
                    for r, x in zip(rows, reads, strict=True)
                ]
            )
        )
    counts = Counter(r["scientific_name"] for r in rows)
    n = len(rows)
    hits = Counter()
    for r, (text, conf, codes, _, stamps) in zip(rows, reads, strict=True):
        truth = r["scientific_name"]
        hits["barcode"] += bool(codes)
        hits["epithet_in_text"] += binomial_key(truth).split()[1] in text.lower()
        plain, _ = parse_label(text, word_conf=conf, barcodes=codes, stamps=stamps)
        names = sorted(k for k, c in counts.items() if k != truth or c > 1)
        with_list, _ = parse_label(
            text, word_conf=conf, barcodes=codes, stamps=stamps, checklist=Checklist(names=names)
        )
        hits["name"] += exact("scientificName", plain.get("scientificName", _E).value, truth)
        read, want = (
            binomial_key(plain.get("scientificName", _E).value).split(),
            binomial_key(truth).split(),
        )
        hits["name_other_genus"] += (
            len(read) == 2 and read[0] != want[0] and epithet_stem(read[1]) == epithet_stem(want[1])
        )
        hits["name_checklist"] += exact(
            "scientificName", with_list.get("scientificName", _E).value, truth
        )
        hits["catalog"] += exact(
            "catalogNumber", plain.get("catalogNumber", _E).value, r["catalog_number"]
        )
        stamp_first, _ = parse_label(
            text, word_conf=conf, barcodes=codes, stamps=stamps, catalog="stamp"
        )
        hits["catalog_stamp_first"] += exact(
            "catalogNumber", stamp_first.get("catalogNumber", _E).value, r["catalog_number"]
        )
        hits["catalog_in_text"] += r["catalog_number"].split()[-1] in "".join(text.split())
        hits["stamp_found"] += bool(stamps)
        read_stamp = next((num for num, _ in stamps if num), "")
        hits["stamp_number_read"] += bool(read_stamp)
        hits["stamp_number_right"] += exact("catalogNumber", read_stamp, r["catalog_number"])
    result = {k: round(v / n, 3) for k, v in sorted(hits.items())}
    result.update(
        sheets=n,
        workers=args.workers,
        wall_seconds_per_sheet=round(wall / n, 2),
        worker_seconds_per_sheet=round(sum(x[3] for x in reads) / n, 2),
    )
    for k, v in result.items():
        print(f"{k:<28} {v}", file=sys.stderr)
    print(json.dumps(result))


class _Empty:
    value = ""


_E = _Empty()


if __name__ == "__main__":
    main()
