"""A collection's tile index: every window of every sheet with its entropy and statistics.

`tile_index` walks the sheets of a source (each decoded once, through the tile cache), writes one
Parquet row per window (sheet, specimen_id, label, split, x, y, size, entropy, mean, std,
paper_fraction), and summarises the entropy distribution per class with the threshold that
`--min-entropy auto` would choose. This is the "study the entropy distribution of the tiles"
step of Schuettpelz et al. (2017), before any training.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from herbscan.cache import load_tile_sheets
from herbscan.fileio import atomic_path, atomic_write, write_csv, write_json
from herbscan.manifest import OUT_SPLIT, read_source
from herbscan.tiles import STAT_NAMES, TileSpec, otsu_threshold

INDEX, SUMMARY, PLOT, FAILED = "index.parquet", "summary.json", "entropy.png", "skipped.csv"


def tile_index(
    data: str | Path,
    out: str | Path,
    *,
    tile_size: int = 128,
    stride: int | None = None,
    scale: float = 1.0,
    label_col: str | None = None,
    path_col: str | None = None,
    workers: int = 1,
    cache_dir=False,
    progress: bool = True,
) -> dict:
    """Write out/index.parquet, summary.json, entropy.png (and skipped.csv); return the summary.

    Sheets are not cached unless `cache_dir` is given: the tile cache holds each decoded sheet
    (H·W·3 bytes at the working scale) and only pays off when training follows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = TileSpec(tile_size, stride or tile_size, scale)
    m = read_source(data, label_col=label_col, path_col=path_col, require_label=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("sheet", pa.string()),
            ("specimen_id", pa.string()),
            ("label", pa.string()),
            ("split", pa.string()),
            ("x", pa.int32()),
            ("y", pa.int32()),
            ("size", pa.int16()),
        ]
        + [(n, pa.float32()) for n in STAT_NAMES]
    )
    per_sheet, failed = [], []
    by_class: dict[str, list[np.ndarray]] = {}
    with atomic_path(out / INDEX) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for i, st, err in load_tile_sheets(
            m.paths(), spec, cache_dir=cache_dir, workers=workers, progress=progress
        ):
            row = m.rows[i]
            if st is None:
                failed.append({"path": str(m.paths()[i]), "error": err})
                continue
            label = m.label(row) if m.label_col else ""
            n = len(st.coords)
            xy = np.asarray(st.coords, np.int32).reshape(-1, 2)
            cols = {
                "sheet": [st.path] * n,
                "specimen_id": [m.specimen(row)] * n,
                "label": [label] * n,
                "split": [row.get(OUT_SPLIT, "")] * n,
                "x": xy[:, 0],
                "y": xy[:, 1],
                "size": np.full(n, spec.size, np.int16),
            }
            cols.update({name: st.stats[:, j] for j, name in enumerate(STAT_NAMES)})
            writer.write_table(pa.table(cols, schema=schema))
            by_class.setdefault(label or "all", []).append(st.entropy.copy())
            per_sheet.append(n)
    if failed:
        write_csv(out / FAILED, failed, ["path", "error"])
    entropies = {c: np.concatenate(v) for c, v in by_class.items()}
    every = np.concatenate(list(entropies.values())) if entropies else np.zeros(0)
    threshold = otsu_threshold(every) if every.size else None
    kept = (
        [int((e >= threshold).sum()) for v in by_class.values() for e in v]
        if threshold is not None
        else []
    )
    summary = {
        "data": str(Path(data).resolve()),
        "tile": spec.as_dict(),
        "sheets": len(per_sheet),
        "failed": len(failed),
        "tiles": int(sum(per_sheet)),
        "tiles_per_sheet": _describe(per_sheet),
        "auto_min_entropy": threshold,
        "kept_per_sheet": _describe(kept),
        "kept_fraction": (sum(kept) / max(sum(per_sheet), 1)) if kept else None,
        "entropy_by_class": {c: _describe(e.tolist()) for c, e in entropies.items()},
    }
    write_json(out / SUMMARY, summary)
    from herbscan.report.figures import entropy_histograms

    uri = entropy_histograms(sorted(entropies.items()), threshold)
    atomic_write(out / PLOT, base64.b64decode(uri.split(",", 1)[1]))
    return summary


def _describe(values) -> dict | None:
    if not len(values):
        return None
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "median": round(float(np.median(a)), 3),
        "max": round(float(a.max()), 3),
    }
