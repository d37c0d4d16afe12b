"""Rebuild herbscan's stamped-number readers from synthetic data (no real sheets are used).

    python scripts/train_number_reader.py [--reader N] [--out PATH] [--steps N] [--samples N]
                                          [--workers N]

Rebuilds every shipped reader (src/herbscan/labels/weights/number_reader*.safetensors, each with
its recipe in `numreader.RECIPES`), or only reader N, about 16 minutes each on 2 cores. Prints
each one's accuracy on fresh synthetic numbers.
"""

import argparse
import json
import os

from herbscan.labels.numreader import RECIPES, WEIGHTS, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", type=int, choices=range(len(WEIGHTS)))
    ap.add_argument("--out", help="Where to write reader N (default: its shipped file).")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if args.out and args.reader is None:
        ap.error("--out needs --reader")
    todo = range(len(WEIGHTS)) if args.reader is None else [args.reader]
    for n in todo:
        out = args.out or str(WEIGHTS[n])
        result = train(
            out, steps=args.steps, samples=args.samples, workers=args.workers, **RECIPES[n]
        )
        print(json.dumps({"reader": n, "out": out, **RECIPES[n], **result}), flush=True)


if __name__ == "__main__":
    main()
