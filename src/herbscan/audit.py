"""Shortcut and confound audit: can the label be predicted from things that are not the specimen?

If one class was scanned with another camera, saved at another JPEG quality, mounted on other
paper or photographed with another colour chart, a network can score well by recognising that
instead of the plant or the stain. The audit trains simple probes that see only such things,
each cross-validated by specimen, and compares them with chance:

- **metadata**: width, height, aspect, file size, bytes per pixel, format, JPEG quality and
  chroma subsampling, EXIF camera and year, and the folders the files sit in (folders named
  after a class are left out: a class-folder tree is labelled by them);
- **background**: the sheet with plant, labels and ink masked out (`herbscan.masks`), seen
  through frozen ImageNet features;
- **border**: only the outer strip of the image (colour charts, rulers, scanner bed).

With a run, its accuracy per group (`group_by` columns) shows where it collapses. Near-identical
images under different specimen ids are listed. Results go to `audit.json` and `report.html`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from herbscan.errors import ManifestError, ParameterError, check_choice, check_range
from herbscan.fileio import write_csv, write_json
from herbscan.images import file_facts, open_rgb
from herbscan.manifest import OUT_SPLIT, read_source
from herbscan.metrics import resample_groups, wilson_interval
from herbscan.progress import Progress
from herbscan.workers import worker_pool

PROBES = ("metadata", "background", "border")
WORK_SIDE = 768  # long side of the image the masker and the image probes look at
BORDER = 0.08  # share of each side that the border probe sees
FEATURE_NET, FEATURE_SIZE = "efficientnet_lite0", 320
NUMERIC = ("width", "height", "aspect", "log_file_bytes", "bytes_per_pixel", "jpeg_quality", "year")
CATEGORICAL = ("format", "mode", "subsampling", "camera", "folders")
WHAT = {
    "metadata": "file and imaging metadata",
    "background": "the sheet with plant, labels and ink masked out",
    "border": f"the outer strip of the image ({BORDER:.0%} of each side, plant masked)",
}


def grouped_folds(y: np.ndarray, groups: list[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold of each row: every specimen in one fold, specimens of each class dealt round."""
    rng = np.random.default_rng(seed)
    label_of: dict[str, int] = {}
    for g, c in zip(groups, y):
        label_of.setdefault(g, int(c))
    fold_of: dict[str, int] = {}
    offset = 0
    for c in sorted(set(label_of.values())):
        specimens = sorted(g for g, v in label_of.items() if v == c)
        rng.shuffle(specimens)
        for i, g in enumerate(specimens):
            fold_of[g] = (i + offset) % k
        offset += len(specimens)
    return np.array([fold_of[g] for g in groups])


def _cv_predict(x: np.ndarray, y: np.ndarray, folds: np.ndarray, k: int) -> np.ndarray:
    """Out-of-fold predictions of herbscan's class-weighted logistic probe."""
    import torch

    from herbscan.train import fit_logistic

    pred = np.zeros(len(y), np.int64)
    x = np.asarray(x, np.float64)
    for f in np.unique(folds):
        te = folds == f
        if len(np.unique(y[~te])) < 2:
            pred[te] = np.bincount(y[~te], minlength=k).argmax()
            continue
        w, b = fit_logistic(torch.from_numpy(x[~te]), y[~te], k)
        pred[te] = (torch.from_numpy(x[te]) @ w.T + b).argmax(1).numpy()
    return pred


def _balanced(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def score(y: np.ndarray, pred: np.ndarray, groups: list[str], k: int, n_boot: int = 1000) -> dict:
    """Accuracy (Wilson interval) and balanced accuracy (bootstrap over specimens) against
    chance (the majority share; 1/K for balanced accuracy)."""
    right = int(np.sum(pred == y))
    boot = [_balanced(y[i], pred[i]) for i in resample_groups(groups, n_boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    chance = 1.0 / k
    balanced_low = float(lo)
    return {
        "accuracy": right / len(y),
        "accuracy_interval": list(wilson_interval(right, len(y))),
        "majority_share": float(np.bincount(y, minlength=k).max() / len(y)),
        "balanced_accuracy": _balanced(y, pred),
        "balanced_accuracy_interval": [balanced_low, float(hi)],
        "chance": chance,
        "alarm": bool(balanced_low > chance),
        "n": len(y),
    }


def _folders(path: Path, root: Path, classes: set[str]) -> str:
    try:
        parts = path.parent.resolve().relative_to(root.resolve()).parts
    except ValueError:
        parts = path.parent.parts
    return "/".join(p for p in parts if p.lower() not in classes)


def metadata_table(paths: list[Path], root: Path, classes: list[str]) -> list[dict]:
    """One dict of metadata per file (None where the file could not be read)."""
    lower = {c.lower() for c in classes}
    out: list[dict] = []
    for p in paths:
        try:
            f = file_facts(p)
        except Exception:  # noqa: BLE001 - an unreadable file is left out of the probes
            out.append(None)
            continue
        w, h = f["width"], f["height"]
        f["aspect"] = round(max(w, h) / max(1, min(w, h)), 4)
        f["log_file_bytes"] = math.log10(max(1, f["file_bytes"]))
        f["bytes_per_pixel"] = f["file_bytes"] / max(1, w * h)
        f["folders"] = _folders(p, root, lower)
        out.append(f)
    return out


def _encode(values: list, numeric: bool) -> np.ndarray:
    """Columns for one metadata field: a numeric one as its standardised value, a missing flag
    and quartile bins (so thresholds and bands count, not only trends); a categorical one as
    one-hot columns of its values."""
    if numeric:
        v = np.array([np.nan if x is None else float(x) for x in values])
        missing = np.isnan(v)
        if missing.all():
            return np.zeros((len(v), 0))
        filled = np.where(missing, np.nanmedian(v), v)
        if np.ptp(filled) == 0 and not missing.any():
            return np.zeros((len(v), 0))
        sd = filled.std() or 1.0
        cols = [(filled - filled.mean()) / sd, missing.astype(float)]
        edges = np.unique(np.nanpercentile(v, [25, 50, 75]))
        bins = np.digitize(filled, edges)
        cols += [(bins == b).astype(float) for b in range(len(edges) + 1)]
        return np.stack(cols, 1)
    seen = sorted({str(x) for x in values})
    if len(seen) < 2:
        return np.zeros((len(values), 0))
    return np.stack([[str(x) == s for x in values] for s in seen], 1).astype(float)


def _class_summary(field: str, values: list, y: np.ndarray, classes: list[str]) -> str:
    """How a field differs between classes, in words."""
    parts = []
    for c, name in enumerate(classes):
        vals = [v for v, t in zip(values, y) if t == c and v is not None]
        if not vals:
            continue
        if field in NUMERIC:
            parts.append(f"{name}: median {np.median(np.array(vals, float)):.4g}")
        else:
            value, count = Counter(str(v) for v in vals).most_common(1)[0]
            parts.append(f"{name}: {value or '(none)'} in {count}/{len(vals)}")
    return "; ".join(parts)


def metadata_probe(facts: list[dict], y, folds, groups, classes) -> dict:
    """The metadata probe, with each field alone as the evidence."""
    k = len(classes)
    blocks, fields = [], []
    for field in NUMERIC + CATEGORICAL:
        cols = _encode([f[field] for f in facts], field in NUMERIC)
        if cols.shape[1]:
            blocks.append(cols)
            fields.append(field)
    if not blocks:
        result = score(y, np.zeros_like(y), groups, k)
        result.update(fields=[], evidence="every file has the same metadata")
        return result
    result = score(y, _cv_predict(np.concatenate(blocks, 1), y, folds, k), groups, k)
    single = []
    for field, cols in zip(fields, blocks):
        s = score(y, _cv_predict(cols, y, folds, k), groups, k, n_boot=300)
        s["field"] = field
        s["by_class"] = _class_summary(field, [f[field] for f in facts], y, classes)
        single.append(s)
    single.sort(key=lambda s: -s["balanced_accuracy"])
    result["fields"] = single
    best = single[0]
    result["evidence"] = (
        f"{best['field'].replace('_', ' ')} alone predicts the label with balanced accuracy "
        f"{best['balanced_accuracy']:.2f} ({best['by_class']})"
    )
    return result


def _views(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(background view, border view, share of the sheet masked) of one image, upright, long
    side WORK_SIDE."""
    from PIL import Image

    from herbscan.masks import hide, specimen_mask

    im = open_rgb(path, min_size=(WORK_SIDE, WORK_SIDE))
    scale = WORK_SIDE / max(im.size)
    if scale < 1:
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
            Image.Resampling.BILINEAR,
        )
    rgb = np.asarray(im)
    mask = specimen_mask(rgb)
    background = hide(rgb, mask)
    border = background.copy()  # a plant reaching the edge is hidden here too
    h, w = rgb.shape[:2]
    bh, bw = max(1, round(h * BORDER)), max(1, round(w * BORDER))
    border[bh : h - bh, bw : w - bw] = 128
    return background, border, float(mask.mean())


def _view_job(path: str) -> tuple[np.ndarray | None, np.ndarray | None, float, str]:
    """`_views` for a worker process: (background, border, masked share, error)."""
    try:
        return (*_views(Path(path)), "")
    except Exception as e:  # noqa: BLE001 - a file that cannot be decoded is left out
        from herbscan.cache import failure

        return None, None, 0.0, failure(path, e)


def _features(views: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Frozen ImageNet features (global average) of each list of images, at FEATURE_SIZE²,
    from one network loaded once."""
    import torch
    from PIL import Image

    from herbscan.accel import Accel
    from herbscan.images import fit_square
    from herbscan.models import create_model, model_info

    info = model_info(FEATURE_NET)
    acc = Accel.resolve("auto", "auto")
    net = acc.prepare(create_model(FEATURE_NET, 2, input_size=FEATURE_SIZE, pretrained=True))
    net.eval()

    def embed(images: list[np.ndarray]) -> np.ndarray:
        out = []
        for i in range(0, len(images), 16):
            chunk = images[i : i + 16]
            batch = np.stack(
                [np.asarray(fit_square(Image.fromarray(a), FEATURE_SIZE)) for a in chunk]
            )
            with acc.autocast():
                f = net.forward_features(acc.to_input(batch, info["mean"], info["std"]))
            out.append(f.float().mean(dim=(2, 3)).cpu().numpy())
        return np.concatenate(out)

    with torch.no_grad():
        return {name: embed(images) for name, images in views.items()}


def _per_group(run, m, rows, group_by: list[str], progress: bool) -> dict:
    """The run's accuracy on these rows, overall and per value of each `group_by` column."""
    from herbscan.predict import Predictor

    paths = [str(m.path(r)) for r in rows]
    preds = Predictor(run).predict(paths, progress=progress)
    truth = [m.label(r) for r in rows]
    ok = [i for i, p in enumerate(preds) if p.probs is not None]
    right = [preds[i].label == truth[i] for i in ok]
    overall = float(np.mean(right)) if right else float("nan")
    out = {
        "n": len(ok),
        "accuracy": overall,
        "accuracy_interval": list(wilson_interval(int(sum(right)), len(ok))),
        "groups": {},
    }
    for col in group_by:
        table = []
        values = sorted({rows[i].get(col, "") for i in ok})
        for v in values:
            idx = [j for j, i in enumerate(ok) if rows[i].get(col, "") == v]
            k = int(sum(right[j] for j in idx))
            lo, hi = wilson_interval(k, len(idx))
            table.append(
                {
                    "value": v,
                    "n": len(idx),
                    "accuracy": k / len(idx),
                    "accuracy_interval": [lo, hi],
                    "collapse": bool(len(idx) >= 5 and hi < overall),
                }
            )
        out["groups"][col] = table
    return out


def _near_duplicates(paths: list[Path], keys: list[str], splits: list[str]) -> list[dict]:
    from herbscan.neardup import pairs_across

    return [
        {
            "path_a": str(paths[i]),
            "specimen_a": keys[i],
            "split_a": splits[i],
            "path_b": str(paths[j]),
            "specimen_b": keys[j],
            "split_b": splits[j],
            "hash_bits_apart": d,
            "similarity": s,
        }
        for i, j, d, s in pairs_across(paths, keys)
    ]


def _warnings(result: dict) -> list[str]:
    """What a user must know, in words, with the evidence."""
    out = []
    for name, p in result["probes"].items():
        if not p["alarm"]:
            continue
        lo, hi = p["balanced_accuracy_interval"]
        text = (
            f"The label can be predicted from {WHAT[name]} with balanced accuracy "
            f"{p['balanced_accuracy']:.2f} (95% interval {lo:.2f}–{hi:.2f}; chance "
            f"{p['chance']:.2f}): the classes differ in more than the specimen."
        )
        if name == "metadata":
            evidence = p["evidence"][0].upper() + p["evidence"][1:]
            text += f" {evidence}: the classes were imaged or stored differently."
        elif name == "background":
            text += (
                " Unless the task is about the paper itself (mercury stains lie on it), the "
                "classes differ in paper, mounting, background or imaging."
            )
        else:
            text += " Colour charts, rulers, scanner bed or crop differ between the classes."
        out.append(text)
    groups = (result.get("run") or {}).get("groups", {})
    for col, table in groups.items():
        for g in table:
            if g["collapse"]:
                lo, hi = g["accuracy_interval"]
                out.append(
                    f"The run's accuracy collapses where {col} = {g['value']!r}: "
                    f"{g['accuracy']:.2f} (95% interval {lo:.2f}–{hi:.2f}) on {g['n']} sheets, "
                    f"against {result['run']['accuracy']:.2f} overall."
                )
    dups = result["near_duplicates"]
    crossing = [d for d in dups if d["split_a"] and d["split_b"] and d["split_a"] != d["split_b"]]
    if crossing:
        out.append(
            f"{len(crossing)} pair(s) of near-identical images lie in different splits (e.g. "
            f"{crossing[0]['path_a']} and {crossing[0]['path_b']}): a test sheet seen in "
            "training inflates accuracy; split again with `herbscan split`."
        )
    return out


def audit(
    data: str | Path,
    out: str | Path,
    *,
    run: str | Path | None = None,
    group_by: list[str] | None = None,
    probes: list[str] | tuple[str, ...] = PROBES,
    split: str | None = None,
    folds: int = 5,
    seed: int = 0,
    label_col: str | None = None,
    path_col: str | None = None,
    group_col: str | None = None,
    near_duplicates: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Audit a labelled manifest (and a run on it) for shortcuts; write audit.json and
    report.html into `out` and return the result.

    The probes use every row (or the `split` rows), cross-validated in `folds` folds grouped by
    specimen; `group_by` columns split the run's accuracy on its test rows (all rows when the
    manifest has no split column). `workers` processes decode and mask the sheets."""
    for p in probes:
        check_choice("probe", p, PROBES)
    check_range("folds", folds, 2)
    check_range("workers", workers, 1)
    t0 = time.monotonic()
    m = read_source(data, label_col=label_col, path_col=path_col, group_col=group_col)
    rows = m.subset(split).rows
    group_by = list(group_by or [])
    for col in group_by:
        if col not in m.columns:
            raise ManifestError(
                f"{m.source}: no column {col!r} to group by; the columns are {', '.join(m.columns)}"
            )
    labels = [m.label(r) for r in rows]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ManifestError(f"{m.source}: the audit needs at least two classes; found {classes}")
    paths = [m.path(r) for r in rows]
    keys = [m.specimen(r) for r in rows]
    n_specimens = len(set(keys))
    if n_specimens < folds:
        raise ParameterError(f"folds must be at most the number of specimens ({n_specimens})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    facts = metadata_table(paths, m.root, classes)
    usable = [i for i, f in enumerate(facts) if f is not None]
    skipped = [str(paths[i]) for i, f in enumerate(facts) if f is None]
    y = np.array([classes.index(labels[i]) for i in usable])
    groups = [keys[i] for i in usable]
    fold_ids = grouped_folds(y, groups, folds, seed)
    result: dict = {
        "data": str(data),
        "classes": classes,
        "n": len(usable),
        "n_specimens": len(set(groups)),
        "class_counts": {c: int(np.sum(y == j)) for j, c in enumerate(classes)},
        "folds": folds,
        "seed": seed,
        "skipped": skipped,
        "probes": {},
    }
    if "metadata" in probes:
        result["probes"]["metadata"] = metadata_probe(
            [facts[i] for i in usable], y, fold_ids, groups, classes
        )
    image_probes = [p for p in ("background", "border") if p in probes]
    if image_probes:
        views: dict[str, list[np.ndarray]] = {p: [] for p in image_probes}
        masked, ok = [], []
        jobs = [str(paths[i]) for i in usable]
        with (
            Progress(len(jobs), "audit: masking sheets", unit="sheets", enabled=progress) as bar,
            worker_pool(workers) if workers > 1 else nullcontext() as pool,
        ):
            results = pool.map(_view_job, jobs, chunksize=4) if pool else map(_view_job, jobs)
            for j, (background, border, share, error) in enumerate(results):
                bar.update(1)
                if error:
                    skipped.append(error)
                    continue
                for p, v in (("background", background), ("border", border)):
                    if p in views:
                        views[p].append(v)
                masked.append(share)
                ok.append(j)
        ok_idx = np.array(ok, dtype=np.int64)
        features = _features(views)
        for p in image_probes:
            feats = features[p]
            sub_groups = [groups[j] for j in ok]
            pred = _cv_predict(feats, y[ok_idx], fold_ids[ok_idx], len(classes))
            result["probes"][p] = score(y[ok_idx], pred, sub_groups, len(classes))
            result["probes"][p]["evidence"] = f"a linear probe on {FEATURE_NET} features"
        result["masked_share"] = {
            "mean": float(np.mean(masked)) if masked else None,
            "min": float(np.min(masked)) if masked else None,
            "max": float(np.max(masked)) if masked else None,
        }
    splits = [r.get(OUT_SPLIT, "") if m.has_split() else "" for r in rows]
    result["near_duplicates"] = _near_duplicates(paths, keys, splits) if near_duplicates else []
    result["near_duplicates_checked"] = near_duplicates
    if run is not None:
        test = m.subset("test").rows if m.has_split() and split is None else rows
        result["run"] = _per_group(run, m, test, group_by, progress)
        result["run"]["path"] = str(run)
    result["warnings"] = _warnings(result)
    result["seconds"] = round(time.monotonic() - t0, 1)
    write_json(out / "audit.json", result)
    if result["near_duplicates"]:
        write_csv(
            out / "near_duplicates.csv",
            result["near_duplicates"],
            list(result["near_duplicates"][0]),
        )
    from herbscan.report.audit import write_audit_report

    write_audit_report(out / "report.html", result)
    return result
