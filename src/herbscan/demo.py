"""The embedded default: a synthetic herbarium, split, trained and evaluated in one call.

Runs in a few minutes on a 2-core laptop and ends in the same report a real run gives, marked
as synthetic.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from herbscan.errors import check_range
from herbscan.evaluate import evaluate
from herbscan.manifest import split
from herbscan.synth import make_collection
from herbscan.train import train


def run_demo(
    out: str | Path = "runs/demo",
    *,
    specimens: int = 300,
    epochs: int = 20,
    seed: int = 0,
    model: str = "herbnet",
    progress: bool = True,
) -> dict:
    """Generate `specimens` synthetic sheets under `out`, train `model`, evaluate on test.

    Returns {"accuracy", "n", "report", "run", "seconds"}. A second call reuses the generated
    sheets and the decoded cache, and retrains from scratch.
    """
    check_range("specimens", specimens, 20)
    out = Path(out)
    t0 = time.monotonic()
    sheets = out / "sheets"
    manifest = sheets / "manifest.csv"
    if not manifest.is_file():
        manifest = make_collection(sheets, n_specimens=specimens, seed=seed)
    data, _ = split(manifest, out / "split.csv", group_col="catalogNumber", seed=seed)
    run = out / "run"
    if run.exists():
        shutil.rmtree(run)
    train(
        data,
        run,
        model=model,
        epochs=epochs,
        seed=seed,
        cache_dir=out / "cache",
        patience=0,
        progress=progress,
    )
    metrics = evaluate(run, split="test", cache_dir=out / "cache", progress=progress)
    return {
        "accuracy": metrics["accuracy"],
        "n": metrics["n"],
        "report": run / "report.html",
        "run": run,
        "seconds": time.monotonic() - t0,
    }


def herbscan_command(argv0: str | None = None) -> str:
    """How to type herbscan in this shell: `herbscan` when that name on PATH is the program that
    runs now (an activated venv), else its path, relative when it lies under the current folder
    (`.venv/bin/herbscan` after `make demo`)."""
    exe = Path(sys.argv[0] if argv0 is None else argv0)
    if exe.stem != "herbscan":  # python -m herbscan, a notebook, a test: this venv's script
        exe = Path(sys.executable).parent / ("herbscan.exe" if os.name == "nt" else "herbscan")
        if not exe.is_file():
            return "herbscan"
    on_path = shutil.which("herbscan")
    if on_path and Path(on_path).resolve() == exe.resolve():
        return "herbscan"
    exe, here = Path(os.path.abspath(exe)), Path.cwd()
    if here == Path(here.anchor) or not exe.is_relative_to(here):
        return shlex.quote(str(exe))
    rel = exe.relative_to(here)
    return shlex.quote(str(rel) if len(rel.parts) > 1 else f"./{rel}")


def demo_message(result: dict, command: str = "herbscan") -> str:
    """The demo's last words: accuracy, the report as a file:// link (absolute, so a terminal or
    browser opens it from anywhere) and the commands to type next; `command` is how herbscan is
    called here (see herbscan_command)."""
    report = Path(result["report"]).resolve().as_uri()
    steps = [
        (f"{command} evaluate {shlex.quote(str(result['run']))}", "evaluate the demo model again"),
        (
            f"{command} split MY_SHEETS/ --out data.csv",
            "your own sheets: a folder with one subfolder per class",
        ),
        (f"{command} train data.csv --out runs/r1", "then evaluate runs/r1; see the README"),
    ]
    width = max(len(c) for c, _ in steps)
    lines = [
        f"demo test accuracy {result['accuracy']:.3f} (synthetic data, n={result['n']})",
        f"report: {report}",
        "next:",
    ]
    lines += [f"  {c:<{width}}  # {why}" for c, why in steps]
    if command != "herbscan":
        activate = shlex.quote(str(Path(command).parent / "activate"))
        lines.append(f"  (or run `source {activate}` once, then type plain `herbscan`)")
    return "\n".join(lines)
