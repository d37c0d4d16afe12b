"""Screening a whole collection: sharded, resumable results of a Run over every sheet.

The input list is fixed on the first call (`inputs.csv`) and cut into shards of `shard_size`
sheets; each shard's results are written as one Parquet file, atomically, once all its sheets are
done. `resume=True` skips the shards already on disk, so a killed job (even `kill -9`) ends with
every input exactly once: no duplicates, no gaps. A sheet that cannot be read gets a row with its
`error` and does not stop the job.

`screen_report` summarises the shards in `report.html`: counts, the flagged sheets ranked by
score with thumbnails (heatmaps for tile runs), the score distribution, and hot spots — the
flagged rate per value of chosen metadata columns with 95% Wilson intervals, ranked by the lower
bound so that 1 flagged sheet out of 1 does not top the list.

Two engines run the same shards: the local one (decoding processes feeding batched inference)
and Dask (`dask="tcp://scheduler:8786"` or `"local:N"` for a LocalCluster of N processes), where
each task predicts one shard on a worker and writes it itself. Either way a shard is the unit of
work, of atomic output and of resumption.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from herbscan.errors import HerbscanError, ParameterError, RunError, check_range
from herbscan.fileio import atomic_write, picture_file, write_csv, write_json
from herbscan.images import thumbnail_jpeg
from herbscan.jobs import Job, save_unit
from herbscan.manifest import read_inputs, seen_in_training
from herbscan.metrics import wilson_interval
from herbscan.predict import Predictor
from herbscan.runs import is_shipped, load_run, positive_class
from herbscan.views import view_of

STATE, SHARDS, FLAGGED = "screen.json", "shards", "flagged.csv"
SKIPPED, RESULTS = "skipped.csv", "results.csv"
REPORT = "report.html"
# Darwin Core terms (and storage words) worth grouping by when present and not asked otherwise
DEFAULT_GROUPS = (
    "family",
    "genus",
    "recordedBy",
    "year",
    "country",
    "stateProvince",
    "institutionCode",
    "collectionCode",
    "cabinet",
    "storageLocation",
)


DEFAULT_MARGIN = 0.5
"""`compare_col` screens flag a sheet when P(predicted) − P(recorded class) reaches this."""


def _threshold(
    run, threshold: str | float, compare_col: str | None = None
) -> tuple[str | None, float | None, str]:
    """(positive class, probability threshold, where it came from)."""
    op = run.config.operating_point
    pos = op.positive_class if op else positive_class(run.classes)
    if compare_col is not None:
        margin = DEFAULT_MARGIN if threshold == "auto" else _probability(threshold)
        return (
            None,
            margin,
            (
                f"disagreement with the collection's {compare_col!r}: "
                f"P(predicted) − P({compare_col}) ≥ {margin:g}"
            ),
        )
    if pos is None:
        return (
            None,
            None,
            (
                "more than two classes and no --compare-col: nothing is flagged "
                "(compare with a column of the manifest, e.g. --compare-col genus)"
            ),
        )
    if threshold == "calibrate":
        if run.config.architecture.name != "stainnet":
            raise ParameterError(
                "--threshold calibrate needs a stain run (learn-stains, or --model mercury); "
                "use auto or a probability"
            )
        return pos, None, "calibrate"
    if threshold == "auto":
        if op is not None and op.threshold is not None:
            return (
                pos,
                float(op.threshold),
                (
                    f"the run's validation operating point: precision {_pct(op.precision)}, "
                    f"recall {_pct(op.recall)} on {op.n} validation sheets"
                ),
            )
        return pos, 0.5, "0.5 (the run records no operating point)"
    return pos, _probability(threshold), "given"


def _probability(threshold: str | float) -> float:
    try:
        t = float(threshold)
    except ValueError:
        raise ParameterError(
            f"threshold must be 'auto', 'calibrate' (stain runs) or a probability; got "
            f"{threshold!r}"
        ) from None
    check_range("threshold", t, 0.0, 1.0)
    return t


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def screen(
    run: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    workers: int = 1,
    batch_size: int = 64,
    threshold: str | float = "auto",
    resume: bool = False,
    shard_size: int = 256,
    path_col: str | None = None,
    group_col: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
    group_by: Sequence[str] | None = None,
    report: bool = True,
    dask: str | None = None,
    backend: str = "torch",
    refuse_outside_paths: bool = False,
    compare_col: str | None = None,
) -> dict:
    """Predict every sheet of `source` with `run`, in resumable Parquet shards under `out`.

    Returns the summary also written to `out/screen.json`; flagged sheets (P(positive) ≥
    threshold) are listed in `out/flagged.csv`, most probable first, and `out/report.html`
    summarises the screen (see `screen_report`; `report=False` skips it). Entries of a source
    folder that are not readable images are listed in `out/skipped.csv` and counted; paths of a
    manifest that are absolute or lead out of its folder are counted and named in the summary
    (`refuse_outside_paths` refuses them instead).

    `threshold="calibrate"` (stain runs; the default for the shipped `mercury`, whose own
    operating point comes from synthetic sheets) paints up to 24 of the collection's sheets
    clean and stained and takes the operating point there (`out/calibration.json`).

    `compare_col` names a manifest column holding what the collection records for the run's
    classes (e.g. `genus` for a genus model): a sheet is flagged when the model disagrees with it
    confidently, P(predicted) − P(recorded) ≥ threshold (auto: 0.5) — possible
    misidentifications or misfilings, ranked by that margin. `out/results.csv` holds every sheet
    for people (the shards hold the same as Parquet).
    """
    import pyarrow.parquet as pq

    check_range("shard_size", shard_size, 1)
    out = Path(out)
    r = load_run(run)
    model_id = r.model_id
    if threshold == "auto" and compare_col is None and is_shipped(r.folder):
        threshold = "calibrate"  # learnt on synthetic sheets: its own operating point moves
    pos, thr, thr_source = _threshold(r, threshold, compare_col)

    def start() -> tuple[list[dict], list[str], dict]:
        """A new screen: fix its inputs (and calibrate its threshold on them if asked)."""
        inputs = read_inputs(
            source, path_col=path_col, group_col=group_col,
            refuse_outside_paths=refuse_outside_paths,
        )  # fmt: skip
        rows, extra = inputs.rows, inputs.extra
        if compare_col is not None and compare_col not in extra:
            raise ParameterError(
                f"compare_col {compare_col!r} is not a column of {source} "
                f"(columns: {', '.join(extra) or 'none; give a manifest'})"
            )
        inputs.write_skipped(out / SKIPPED)
        t, source_of_t = thr, thr_source
        if threshold == "calibrate":
            from herbscan.learn_stains import calibrate  # a stain run's own concept

            cal = calibrate(r, [row["path"] for row in rows], device=device, precision=precision)
            write_json(out / "calibration.json", cal)
            t = cal["threshold"]
            source_of_t = (
                f"calibrated on {cal['sheets']} sheets of this collection painted with stains: "
                f"balanced accuracy {_pct(cal['balanced_accuracy'])} there"
            )
        info = {
            "source": str(Path(source).resolve()),
            "run": str(r.folder.resolve()),
            "model_id": model_id,
            "metadata_columns": extra,
            "threshold": t,
            "threshold_source": source_of_t,
            "skipped": len(inputs.skipped),
            "outside_paths": len(inputs.outside),
            "outside_examples": inputs.outside[:10],
            "compare_col": compare_col,
            "group_by": list(group_by) if group_by else None,
            **_seen_in_training(r, rows),
        }
        return rows, ["path", "specimen_id"] + extra, info

    job = Job.open(
        out,
        options={"model": model_id, "compare_col": compare_col, "threshold": threshold},
        start=start,
        resume=resume,
        unit_size=shard_size,
        state_name=STATE,
        units_name=SHARDS,
        suffix=".parquet",
        what="screen",
    )
    thr, thr_source = job.state["threshold"], job.state["threshold_source"]
    extra, classes = job.state["metadata_columns"], r.classes
    payload = {
        "run": str(r.folder),
        "classes": classes,
        "extra": extra,
        "pos": pos,
        "thr": thr,
        "model_id": model_id,
        "batch_size": batch_size,
        "precision": precision,
        "device": device,
        "backend": backend,
        "compare": compare_col,
        # heatmaps for the report, where the run makes them
        "pictures": view_of(r.config).heatmaps
        or (r.config.architecture.name == "stainnet" and backend == "torch"),
    }
    if dask:
        job.run_dask(dask, _dask_shard, payload, description="screening", progress=progress)
    else:
        predictor = Predictor(
            r, device=device, precision=precision, batch_size=batch_size, workers=workers,
            backend=backend,
        )  # fmt: skip

        def shard(k: int, part: list[dict]) -> None:
            paths = [p["path"] for p in part]
            preds = predictor.predict(paths, progress=False, heatmaps=payload["pictures"])
            _write_shard(job.units_dir, k, part, preds, payload)

        with predictor.pool():  # one pool of decoding workers for the whole job
            job.run(shard, description="screening", progress=progress)

    # column-wise, so a screen of millions of sheets is summarised without a dict per row
    import pyarrow.compute as pc

    table = pq.read_table(job.units_dir)
    flagged_t = table.filter(pc.field("flagged"))
    flagged = sorted(flagged_t.to_pylist(), key=lambda x: -x["score"])
    people = (
        ["path", "specimen_id"]
        + extra
        + ["score", "predicted"]
        + (["recorded"] if compare_col else [])
        + [f"p_{c}" for c in classes]
    )
    write_csv(out / FLAGGED, (_rounded(x) for x in flagged), people)
    write_csv(  # batch by batch: no dict per sheet of the whole collection at once
        out / RESULTS,
        (_rounded(x) for batch in table.to_batches() for x in batch.to_pylist()),
        people + ["flagged", "error", "model_id"],
    )
    summary = job.finish(
        dict(
            screened=table.num_rows,
            failed=int(pc.sum(pc.not_equal(table["error"], "")).as_py() or 0),
            flagged=len(flagged),
            positive_class=pos,
            threshold=thr,
            threshold_source=thr_source,
            classes=classes,
            shards=job.n_units,
        )
    )
    if report:
        screen_report(out, group_by=group_by)
    return summary


def _results(out: Path):
    """(summary, pyarrow Table of all shards) of a finished screen."""
    import pyarrow.parquet as pq

    state_path = out / STATE
    if not state_path.is_file():
        raise RunError(f"{out}: not a screen folder (no {STATE}); run `herbscan screen` first")
    summary = json.loads(state_path.read_text())
    if not summary.get("complete"):
        raise RunError(
            f"{out}: the screen is unfinished; finish it with `herbscan screen ... --resume`"
        )
    return summary, pq.read_table(out / SHARDS)


def hotspots(results: list[dict], columns: Sequence[str]) -> list[dict]:
    """Flagged rate per value of each column, with 95% Wilson intervals, ranked by lower bound."""
    out = []
    ok = [r for r in results if not r.get("error")]
    for col in columns:
        groups: dict[str, list[int]] = {}
        for r in ok:
            g = groups.setdefault(str(r.get(col, "") or "(blank)"), [0, 0])
            g[0] += 1
            g[1] += int(r["flagged"])
        rows = []
        for value, (n, k) in groups.items():
            low, high = wilson_interval(k, n)
            rows.append(
                {"value": value, "n": n, "flagged": k, "rate": k / n, "low": low, "high": high}
            )
        rows.sort(key=lambda x: (-x["low"], -x["n"], x["value"]))
        out.append({"column": col, "rows": rows})
    return out


def screen_report(
    out: str | Path, *, group_by: Sequence[str] | None = None, max_gallery: int = 48
) -> Path:
    """Write `out/report.html` for a finished screen; `group_by` names metadata columns."""
    import pyarrow.compute as pc

    from herbscan.report.screen import write_screen_report

    out = Path(out)
    summary, table = _results(out)
    meta = summary.get("metadata_columns", [])
    if group_by is None:
        group_by = summary.get("group_by") or [c for c in DEFAULT_GROUPS if c in meta]
    unknown = [c for c in group_by if c not in meta]
    if unknown:
        raise ParameterError(
            f"group_by column(s) {', '.join(unknown)} are not in the screened "
            f"manifest (columns: {', '.join(meta) or 'none'})"
        )
    if summary.get("positive_class") is None and not summary.get("compare_col"):
        group_by = []  # nothing can be flagged, so there are no hot spots to rank
    ok = table.filter(pc.equal(table["error"], ""))
    scores = [v for v in ok["score"].to_pylist() if v == v]  # NaN when no positive class
    top = sorted(table.filter(pc.field("flagged")).to_pylist(), key=lambda r: -r["score"])[
        :max_gallery
    ]
    pictures = _pictures(out, [r["path"] for r in top])
    flagged = [
        {
            "path": r["path"],
            "specimen_id": r["specimen_id"],
            "score": r["score"],
            "thumbnail": pictures.get(r["path"], b""),
            "extra": ({"predicted": r["predicted"]} if summary.get("compare_col") else {})
            | {c: str(r.get(c, "")) for c in meta if r.get(c, "") not in ("", None)},
        }
        for r in top
    ]
    notes = []
    if "synthetic" in table.column_names and "true" in {
        str(v).lower() for v in pc.unique(table["synthetic"]).to_pylist()
    }:
        notes.append(
            "This collection is synthetic (herbscan's demo): the flags show the "
            "pipeline works, not how a real collection is stained."
        )
    if summary.get("seen_in_training"):
        notes.append(
            f"{summary['seen_in_training']:,} of the {summary['screened']:,} sheets "
            "were among the run's own training or validation sheets (same file or "
            f"specimen id, e.g. {', '.join(summary.get('seen_examples', [])[:2])}): "
            "their scores are optimistic and say nothing about new sheets."
        )
    if summary.get("outside_paths"):
        notes.append(
            f"{summary['outside_paths']:,} image paths of the source are absolute or "
            "lead out of its folder (first: "
            f"{', '.join(summary.get('outside_examples', [])[:3])}); this report "
            "embeds thumbnails of those files. Screen with --refuse-outside-paths to "
            "refuse such paths in manifests from others."
        )
    return write_screen_report(
        out / REPORT,
        title=f"herbscan screen — {out.name}",
        summary=summary,
        scores=scores,
        flagged=flagged,
        hotspots=hotspots(ok.select(list(group_by) + ["flagged"]).to_pylist(), group_by),
        notes=notes,
    )


def _save_pictures(folder: Path, table: list[dict], preds) -> None:
    """What the report shows of each flagged sheet, saved while screening: the heatmap when the
    run makes one (tile and stain runs), else a thumbnail; so the report never needs the model."""
    for row, pred in zip(table, preds):
        if not row.get("flagged"):
            continue
        data = pred.heatmap
        if not data:
            try:
                data = thumbnail_jpeg(row["path"])
            except HerbscanError:
                continue
        atomic_write(picture_file(folder, row["path"]), data)


def _pictures(out: Path, paths: list[str]) -> dict[str, bytes]:
    """The saved pictures of these sheets (a thumbnail made now where none was saved)."""
    pics = {}
    for p in paths:
        f = picture_file(out, p)
        try:
            pics[p] = f.read_bytes() if f.is_file() else thumbnail_jpeg(p)
        except (OSError, HerbscanError):
            pass
    return pics


def _write_shard(shard_dir: Path, k: int, part: list[dict], preds, job: dict) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _shard_table(
        part,
        preds,
        job["classes"],
        job["extra"],
        job["pos"],
        job["thr"],
        job["model_id"],
        job.get("compare"),
    )
    _save_pictures(Path(shard_dir).parent, table, preds)  # before the shard marks the part done
    save_unit(
        shard_dir, k, ".parquet", lambda tmp: pq.write_table(pa.Table.from_pylist(table), str(tmp))
    )
    return len(part)


_WORKER_PREDICTORS: dict[str, Predictor] = {}


def _dask_shard(job: dict, k: int, part: list[dict], shard_dir: str) -> int:
    """One shard on a Dask worker: the model is loaded once per worker process and reused."""
    key = json.dumps(
        [job["run"], job["precision"], job["device"], job["batch_size"], job["backend"]]
    )
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS[key] = Predictor(
            job["run"],
            device=job["device"],
            precision=job["precision"],
            batch_size=job["batch_size"],
            threads=1,
            backend=job["backend"],
        )
    preds = _WORKER_PREDICTORS[key].predict(
        [p["path"] for p in part], progress=False, heatmaps=job["pictures"]
    )
    return _write_shard(Path(shard_dir), k, part, preds, job)


def _shard_table(
    part: list[dict],
    preds,
    classes: list[str],
    extra: list[str],
    pos: str | None,
    thr: float | None,
    model_id: str,
    compare: str | None = None,
) -> list[dict]:
    """One row per sheet. `score` is P(positive class) for a two-class run, the margin
    P(predicted) − P(recorded) when comparing with a column, else P(predicted)."""
    pi = classes.index(pos) if pos is not None else None
    table = []
    for row, p in zip(part, preds):
        rec = {
            "path": row["path"],
            "specimen_id": row["specimen_id"],
            **{c: row.get(c, "") for c in extra},
        }
        ok = p.probs is not None
        probs = p.probs if ok else np.full(len(classes), np.nan)
        rec.update({f"p_{c}": float(v) for c, v in zip(classes, probs)})
        flagged = False
        if compare is not None:
            recorded = str(row.get(compare, "")).strip()
            rec["recorded"] = recorded
            if ok and recorded in classes:
                score = float(probs.max() - probs[classes.index(recorded)])
                flagged = p.label != recorded and score >= thr
            else:
                score = float("nan")
        elif pi is not None:
            score = float(probs[pi])
            flagged = ok and score >= thr
        else:
            score = float(probs.max())
        rec.update(
            predicted=p.label, score=score, flagged=bool(flagged), error=p.error, model_id=model_id
        )
        table.append(rec)
    return table


def _rounded(row: dict) -> dict:
    """Scores and probabilities to 4 decimals, for CSV files people read."""
    return {
        k: (("" if math.isnan(v) else round(v, 4)) if isinstance(v, float) else v)
        for k, v in row.items()
    }


def _seen_in_training(run, rows: list[dict]) -> dict:
    seen = seen_in_training(run.config.training.data, rows)
    return {
        "seen_in_training": None if seen is None else len(seen),
        "seen_examples": (seen or [])[:5],
    }
