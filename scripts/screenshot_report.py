"""Render an HTML report to a PNG with headless Chromium, to look at a report without a desktop.

Usage: python scripts/screenshot_report.py REPORT.html OUT.png [--width 1280] [--height 4000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser")
TIMEOUT_S = 120


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None when none is installed."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 4000) -> Path:
    """Write a width x height PNG of `report` to `out`; raise RuntimeError with the reason."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError(
            "chromium is not installed; install it (e.g. apt-get install chromium) "
            "or put it on PATH"
        )
    if not report.is_file():
        raise RuntimeError(f"report not found: {report}")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="herbscan-chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            report.resolve().as_uri(),
        ]
        try:
            proc = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"chromium did not finish within {TIMEOUT_S} s") from None
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
        raise RuntimeError(f"chromium failed (exit {proc.returncode}) to write {out}:\n{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="HTML report to render")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.report, args.out, args.width, args.height)
    except RuntimeError as error:
        print(f"screenshot_report: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
