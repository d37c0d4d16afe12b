"""Does hiding non-paper regions from a StainNet's cell map before pooling help it find mercury?

The shipped `mercury` run scores every 16-px cell of a sheet resized to 1024×1536 and calls the
sheet by the mean of its top 3 cell logits. On other herbaria's sheets its top cells sit on label
text, dotted leader lines, rulers and charts as often as on stains (benchmarks/stains_eval.py:
AUC 0.68). This benchmark paints the same 56 sheets the same way as stains_eval.py (clean, hard
negatives, faint, heavy; held-out style; the same seeds, so the same images), computes each
painted sheet's cell map once, and re-pools it with cells ignored by cheap masks computed from
the painted image at the working scale:

- text: dark marks (luma 30 below the local paper, the max of 8-px blocks over 24 px) joined
  by a 1×15 horizontal closing into components at least 30 px wide, at most 30 px tall and at
  least 6× longer than their mean thickness (typed lines, rules, ruler ticks), plus dotted
  leaders (small dots with >= 5 dots within ±40 px on their own row and few just above or
  below); every cell a kept component's box (grown 4 px) touches;
- label: text cells closed with a 5×5-cell square (label blocks, handwriting between lines);
- border: large dark grey areas (scanner bed, black bands; max channel < 60, >= 1% of the
  image) grown by 48 px, which holds the rulers and colour bars laid beside the sheet;
- chart: >= 3 flat saturated square patches within 24 px of each other, grown 8 px;
- plant: pixels whose colour cast differs from the paper's by > 28 levels, or coloured and
  40 levels darker than the paper; opened, components >= 400 px, grown 8 px;
- specimen: `herbscan.masks.specimen_mask` at half scale (everything that is not paper,
  stains included);

and their combinations. Some stain kinds sit on or around the plant (halos, greyed tissue,
speckles centred on plant pixels), so the plant masks are reported as the cost they are.

For each mask and pooling rule (top-3 mean, top-10 mean, top-3 mean minus the sheet's 90th
percentile) it reports AUC clean vs stained / faint / heavy (and a bootstrap interval over sheets
of the AUC change against no mask), specificity on clean and hard-negative sheets and detection
of faint and heavy stains at the model's own threshold (logit 0) and at a threshold calibrated
2-fold over the sheets (as stains_eval does), with 95% Wilson intervals; the share of cells
masked, the share of painted stain cells and of stain darkening hidden, stained sheets whose
every stain cell is hidden, and the mask's time per sheet. It does the same for ALA sheets
(a second collection, painted the same way) and scores the two real stained sheets of
../shared/data/mercury-reference under each mask. A table is printed; the last line is JSON.

    python benchmarks/stain_masking.py [RUN ...] [--ala 16] [--limit N] [--workers 2]

RUN defaults to `mercury` (the shipped run); other stain run folders may be added. About
11-15 minutes on 2 cores (each worker runs torch with one thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import stains_eval  # noqa: E402  (same sheets, versions, seeds and AUC as stains_eval.py)

SHARED = stains_eval.SHARED
VERSIONS = stains_eval.VERSIONS[:4]  # clean, hard negatives, faint, heavy
STRIDE = 16  # StainNet's cell
SIZE = 1024  # working width; sheets are 1024×1536 (fit "sheet")
MIN_AREA = 1.5  # learn_stains.MIN_AREA: pixels' worth of darkening for a cell to be stained

# ---------------------------------------------------------------------------------------------
# masks: uint8 (h, w, 3) sheet at the working scale -> bool (h/16, w/16) cells to ignore


def luma(img: np.ndarray) -> np.ndarray:
    i = img.astype(np.uint16)
    return ((i[..., 0] * 77 + i[..., 1] * 150 + i[..., 2] * 29) >> 8).astype(np.int16)


def block_max(a: np.ndarray, b: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a[: h // b * b, : w // b * b].reshape(h // b, b, w // b, b).max(axis=(1, 3))


def upsample(a: np.ndarray, b: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.repeat(np.repeat(a, b, 0), b, 1)
    return np.pad(out, ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1])), mode="edge")


def cell_share(mask: np.ndarray) -> np.ndarray:
    """Share of each 16-px cell's pixels that are True."""
    h, w = mask.shape
    m = mask[: h // STRIDE * STRIDE, : w // STRIDE * STRIDE]
    return m.reshape(h // STRIDE, STRIDE, w // STRIDE, STRIDE).mean(axis=(1, 3))


def dark_marks(img: np.ndarray, contrast: int = 30, block: int = 8) -> np.ndarray:
    """Pixels `contrast` luma levels darker than the local paper: the brightest pixel of the
    8-px blocks around them (24 px square), so marks on a label slip count against the slip."""
    g = luma(img)
    paper = upsample(ndi.maximum_filter(block_max(g, block), size=3), block, g.shape)
    return (paper - g) > contrast


def _boxes(lab: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) top, bottom, left, right of each labelled component."""
    return np.array(
        [(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in ndi.find_objects(lab)], int
    ).reshape(n, 4)


def _box_cells(boxes: np.ndarray, shape: tuple[int, int], grow: int) -> np.ndarray:
    cells = np.zeros((shape[0] // STRIDE, shape[1] // STRIDE), bool)
    for y0, y1, x0, x1 in boxes:
        cells[
            max(0, (y0 - grow) // STRIDE) : (y1 - 1 + grow) // STRIDE + 1,
            max(0, (x0 - grow) // STRIDE) : (x1 - 1 + grow) // STRIDE + 1,
        ] = True
    return cells


def text_lines(dark: np.ndarray, close=15, min_w=30, max_h=30, aspect=6.0) -> np.ndarray:
    """Boxes of dark marks that a 1×`close` horizontal closing joins into long flat
    components: at least `min_w` wide, at most `max_h` tall, and `aspect` times longer than
    their mean thickness (area / width). Typed and printed lines, rules, ruler ticks."""
    d8 = dark.view(np.uint8)
    closed = ndi.minimum_filter1d(ndi.maximum_filter1d(d8, close, axis=1), close, axis=1)
    lab, n = ndi.label(closed)
    if not n:
        return np.zeros((0, 4), int)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    b = _boxes(lab, n)
    hh, ww = b[:, 1] - b[:, 0], b[:, 3] - b[:, 2]
    return b[(ww >= min_w) & (hh <= max_h) & (ww * ww >= aspect * area)]


def dotted_leaders(dark: np.ndarray, max_dot=16, reach=40, min_row=5, bin_x=8) -> np.ndarray:
    """Boxes of dots in rows (the '. . . .' of printed label forms): marks of at most `max_dot`
    pixels (5×5) with at least `min_row` such dots within ±`reach` px on their own row (±1 px),
    and at most half as many again 2-6 rows above or below. A speckle cloud is isotropic: it
    has as many dots just above and below a dot as beside it."""
    lab, n = ndi.label(dark)
    if not n:
        return np.zeros((0, 4), int)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    b = _boxes(lab, n)
    small = (area <= max_dot) & (b[:, 1] - b[:, 0] <= 5) & (b[:, 3] - b[:, 2] <= 5)
    yi, xi = (b[:, 0] + b[:, 1] - 1) // 2, ((b[:, 2] + b[:, 3] - 1) // 2) // bin_x
    grid = np.zeros((dark.shape[0], dark.shape[1] // bin_x + 1), np.float32)
    np.add.at(grid, (yi[small], xi[small]), 1)
    w = 2 * (reach // bin_x) + 1
    rows = ndi.uniform_filter1d(grid, w, axis=1, mode="constant") * w
    row = ndi.uniform_filter1d(rows, 3, axis=0, mode="constant") * 3
    band = ndi.uniform_filter1d(rows, 13, axis=0, mode="constant") * 13
    r, near = row[yi, xi], band[yi, xi]
    return b[small & (r >= min_row - 0.5) & (near - r <= 0.5 * r)]


def text_cells(img: np.ndarray, grow: int = 4) -> np.ndarray:
    """Cells touched by a text line or a dotted leader (boxes grown `grow` px)."""
    dark = dark_marks(img)
    boxes = np.concatenate([text_lines(dark), dotted_leaders(dark)])
    return _box_cells(boxes, dark.shape, grow)


def label_blocks(text: np.ndarray) -> np.ndarray:
    """Text cells closed into blocks (5×5 cells): whole labels, handwriting between lines."""
    return text | ndi.binary_closing(text, structure=np.ones((5, 5), bool))


def border_cells(img: np.ndarray, level=60, min_share=0.01, grow=12) -> np.ndarray:
    """Cells within 48 px of a large dark grey area (scanner bed, black bands round the sheet,
    where rulers and colour bars lie), found at 1/4 scale."""
    small = img[2::4, 2::4]
    dark = small.max(axis=2) < level
    lab, n = ndi.label(dark)
    if not n:
        return np.zeros((img.shape[0] // STRIDE, img.shape[1] // STRIDE), bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    big = np.r_[False, sizes >= min_share * dark.size][lab]
    big = ndi.binary_dilation(big, iterations=grow)
    return cell_share(upsample(big, 4, img.shape[:2])) > 0


def chart_cells(img: np.ndarray, chroma=50, min_patches=3, near=6) -> np.ndarray:
    """Colour charts: at least `min_patches` flat, saturated, square patches (3-16 px at 1/4
    scale: 3-16 mm) within 24 px of each other; the group grown by 8 px."""
    small = img[2::4, 2::4].astype(np.int16)
    c = small.max(axis=2) - small.min(axis=2)
    g = small.mean(axis=2)
    flat = (ndi.maximum_filter(g, 3) - ndi.minimum_filter(g, 3)) < 12
    sat = (c > chroma) & flat
    lab, n = ndi.label(sat)
    cells = np.zeros((img.shape[0] // STRIDE, img.shape[1] // STRIDE), bool)
    if not n:
        return cells
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    b = _boxes(lab, n)
    hh, ww = b[:, 1] - b[:, 0], b[:, 3] - b[:, 2]
    patch = (
        (hh >= 3) & (ww >= 3) & (hh <= 16) & (ww <= 16) & (area >= 0.6 * hh * ww)
        & (np.maximum(hh, ww) <= 2 * np.minimum(hh, ww))
    )  # fmt: skip
    if not patch.any():
        return cells
    p = np.r_[False, patch][lab]
    groups, _ = ndi.label(ndi.binary_dilation(p, iterations=near))
    count = np.bincount(groups[b[patch, 0], b[patch, 2]], minlength=groups.max() + 1)
    chart = (count >= min_patches)[groups] & (groups > 0)
    chart = ndi.binary_dilation(chart, iterations=2)
    return cell_share(upsample(chart, 4, img.shape[:2])) > 0


def paper_rgb(img: np.ndarray) -> np.ndarray:
    """The paper's colour: the most common coarse colour of the brighter half (1/4 scale)."""
    flat = img[2::4, 2::4].reshape(-1, 3).astype(np.int32)
    lum = flat.sum(axis=1)
    bright = flat[lum >= np.percentile(lum, 50)]
    bins = (bright // 16) @ np.array([256, 16, 1])
    return np.median(bright[bins == np.bincount(bins).argmax()], axis=0)


def plant_cells(img: np.ndarray, cast=28, min_area=400, grow=8) -> np.ndarray:
    """Regions whose colour cast (RGB minus its grey level) differs by more than `cast` from
    the paper's, or coloured (chroma > 24) and 40 levels darker than the paper; opened,
    components of at least `min_area` px, grown `grow` px: the plant. Relative to the paper,
    so a cream or tinted sheet is not all plant."""
    i = img.astype(np.int16)
    paper = paper_rgb(img)
    tint = i - i.mean(axis=2, keepdims=True).astype(np.int16)
    m = np.abs(tint - (paper - paper.mean()).astype(np.int16)).max(axis=2) > cast
    # dark brown and olive tissue has the cast of cream paper, only darker
    chroma = i.max(axis=2) - i.min(axis=2)
    m |= (chroma > 24) & (i.mean(axis=2) < paper.mean() - 40)
    m = ndi.binary_opening(m)
    lab, n = ndi.label(m)
    if n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        m = np.r_[False, sizes >= min_area][lab]
    return cell_share(ndi.binary_dilation(m, iterations=grow)) >= 0.1


def specimen_cells(img: np.ndarray) -> np.ndarray:
    """`herbscan.masks.specimen_mask` (not paper: plant, labels, ink, and stains too), run at
    half scale for time; cells at least 10% covered."""
    from herbscan.masks import specimen_mask

    m = specimen_mask(img[::2, ::2])
    h, w = m.shape
    half = STRIDE // 2
    m = m[: h // half * half, : w // half * half]
    return m.reshape(h // half, half, w // half, half).mean(axis=(1, 3)) >= 0.1


MASKS = {
    "text": text_cells,
    "label": None,  # label_blocks of the text cells
    "border": border_cells,
    "chart": chart_cells,
    "plant": plant_cells,
    "specimen": specimen_cells,
}
COMBOS = (
    "none",
    "text",
    "label",
    "border",
    "chart",
    "plant",
    "specimen",
    "text+border",
    "label+border",
    "label+border+chart",
    "label+border+chart+plant",
    "specimen+border+chart",
)
RULES = ("top3", "top10", "top3-p90")


def combined(masks: dict, combo: str, shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    for name in combo.split("+"):
        if name != "none":
            m |= masks[name]
    return m


def pooled(cells: np.ndarray, ignore: np.ndarray, rule: str) -> float:
    """Sheet score from the cells not ignored (all of them ignored: -10, 'clean')."""
    v = cells[~ignore]
    if not v.size:
        return -10.0
    top = np.sort(v)
    if rule == "top3":
        return float(top[-3:].mean())
    if rule == "top10":
        return float(top[-10:].mean())
    return float(top[-3:].mean() - np.percentile(v, 90))  # sheet-relative


# ---------------------------------------------------------------------------------------------
# painting and cell maps (in worker processes)


def painted(sheet: np.ndarray, version: str, i: int):
    """stains_eval.painted's image (same rng, same calls) and the painter's stain strength."""
    from herbscan.stains import STYLES, paint, scanner

    rng = np.random.default_rng([12345, i, stains_eval.VERSIONS.index(version)])
    kw = {"style": STYLES["holdout"]}
    if version == "clean":
        img, strength, _ = paint(rng, sheet, stained=False, **kw)
    elif version == "hard negatives":
        img, strength, _ = paint(rng, sheet, stained=False, n_negatives=4, **kw)
    elif version == "faint":
        img, strength, _ = paint(rng, sheet, stained=True, severity=rng.uniform(0.02, 0.2), **kw)
    else:
        img, strength, _ = paint(rng, sheet, stained=True, severity=rng.uniform(0.6, 1.0), **kw)
    return scanner(rng, img), strength


_NETS: dict = {}


def _init(runs: list[str]) -> None:
    from herbscan.runs import load_run

    torch.set_num_threads(1)
    for run in runs:
        r = load_run(run)
        prep = r.preprocessing  # a dict in run schema 1, an object with attributes in 2

        def get(key, prep=prep):
            return prep[key] if isinstance(prep, dict) else getattr(prep, key)

        if get("fit") != "sheet" or get("size") != SIZE:
            raise SystemExit(f"{run}: not a 1024-px 'sheet' stain run")
        _NETS[run] = (r.build_model().float().eval(), get("mean"), get("std"))


def cell_maps(img: np.ndarray) -> dict[str, np.ndarray]:
    from herbscan.accel import Accel

    acc = Accel(torch.device("cpu"), "fp32")
    out = {}
    for run, (net, mean, std) in _NETS.items():
        with torch.inference_mode():
            out[run] = net.cell_logits(acc.to_input(img[None].copy(), mean, std))[0].numpy()
    return out


def all_masks(img: np.ndarray) -> tuple[dict, dict]:
    masks, seconds = {}, {}
    for name, fn in MASKS.items():
        t = time.perf_counter()
        masks[name] = label_blocks(masks["text"]) if name == "label" else fn(img)
        seconds[name] = time.perf_counter() - t + (seconds["text"] if name == "label" else 0)
    return masks, seconds


def sheet_job(job: tuple[str, int, str, int]) -> dict:
    """One sheet in its four painted versions: cell maps, masks, painted stain per cell."""
    from herbscan.images import load_sheet

    collection, index, path, seed = job
    sheet = load_sheet(path, SIZE, "sheet")
    out = {"collection": collection, "index": index, "path": path, "versions": {}}
    for v in VERSIONS:
        img, strength = painted(sheet, v, seed)
        masks, seconds = all_masks(img)
        ink = cell_share(strength) * STRIDE * STRIDE  # darkening, in pixels' worth per cell
        out["versions"][v] = {
            "cells": cell_maps(img),
            "masks": masks,
            "seconds": seconds,
            "stain": ink >= MIN_AREA,
            "ink": ink.astype(np.float32),
        }
    return out


def reference_job(runs: list[str]) -> list[dict]:
    """The two US National Herbarium sheets of the mercury-reference figure, as stains_eval
    crops them (panels c and d, without colour bars), resized to 1024×1536."""
    fig = Image.open(SHARED / "mercury-reference" / "images" / "stained_sheets.png").convert("RGB")
    panels = {"c": (47, 10, 414, 530), "d": (450, 10, 816, 533)}
    rows = []
    for name, box in panels.items():
        img = np.asarray(
            fig.crop(box).resize((SIZE, SIZE * 3 // 2), Image.Resampling.BICUBIC), np.uint8
        )
        masks, _ = all_masks(img)
        rows.append({"panel": name, "cells": cell_maps(img), "masks": masks})
    return rows


# ---------------------------------------------------------------------------------------------
# scoring


def _rate(k: int, n: int) -> dict:
    lo, hi = stains_eval.wilson(k, n)
    return {"rate": round(k / n, 3) if n else None, "k": k, "n": n, "ci95": [lo, hi]}


def _rates(s: dict[str, np.ndarray], t_of) -> dict:
    """Specificity on clean and hard negatives, detection of faint and heavy; t_of(i) is the
    threshold used for sheet i."""
    out = {}
    for v, what in zip(VERSIONS, ("spec_clean", "spec_hard", "det_faint", "det_heavy")):
        flag = np.array([x >= t_of(i) for i, x in enumerate(s[v])])
        k = int((~flag).sum()) if what.startswith("spec") else int(flag.sum())
        out[what] = _rate(k, len(flag))
    return out


def _calibrated(s: dict[str, np.ndarray]) -> dict:
    """Threshold chosen (herbscan.train.operating_point, best balanced accuracy) on the painted
    clean + faint + heavy versions of half the sheets (odd, even), applied to the other half."""
    try:
        from herbscan.metrics import operating_point
    except ImportError:  # before it moved to metrics
        from herbscan.train import operating_point

    prob = {v: 1 / (1 + np.exp(-np.clip(x, -30, 30))) for v, x in s.items()}
    n = len(prob["clean"])
    t = np.zeros(n)
    for fold in (0, 1):
        pick = np.arange(n) % 2 == fold
        p = np.concatenate([prob["clean"][pick], prob["faint"][pick], prob["heavy"][pick]])
        y = np.r_[np.zeros(pick.sum()), np.ones(2 * pick.sum())].astype(bool)
        t[~pick] = operating_point(p, y)["threshold"]
    out = _rates(prob, lambda i: t[i])
    right = sum(out[k]["k"] for k in ("spec_clean", "det_faint", "det_heavy"))
    out["accuracy"] = _rate(right, 3 * n)
    return out


def _auc_fast(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
        / (len(pos) * len(neg))
    )


def _aucs(s: dict[str, np.ndarray]) -> dict:
    stained = np.r_[s["faint"], s["heavy"]]
    return {
        "auc_clean_vs_stained": round(stains_eval._auc(stained, s["clean"]), 3),
        "auc_clean_vs_faint": round(stains_eval._auc(s["faint"], s["clean"]), 3),
        "auc_clean_vs_heavy": round(stains_eval._auc(s["heavy"], s["clean"]), 3),
        "auc_hard_vs_stained": round(stains_eval._auc(stained, s["hard negatives"]), 3),
    }


def _auc_gain_ci(s: dict, base: dict, n_boot: int = 1000) -> list[float]:
    """95% bootstrap interval (resampling sheets, all versions of a sheet together) of the
    change in AUC clean vs stained against the unmasked top-3 rule."""
    rng = np.random.default_rng(0)
    n = len(s["clean"])
    d = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)

        def auc(x, i=i):
            return _auc_fast(np.r_[x["faint"][i], x["heavy"][i]], x["clean"][i])

        d.append(auc(s) - auc(base))
    return [round(float(q), 3) for q in np.percentile(d, [2.5, 97.5])]


def score_collection(sheets: list[dict], run: str, rules=RULES, boot: bool = True) -> list[dict]:
    rows = []
    base = None
    for combo in COMBOS:
        hidden = {"cells": [0, 0], "ink": [0.0, 0.0], "sheets": [0, 0]}
        masked, seconds = [], []
        ignore = {v: [] for v in VERSIONS}
        for sh in sheets:
            for v in VERSIONS:
                d = sh["versions"][v]
                m = combined(d["masks"], combo, d["stain"].shape)
                ignore[v].append(m)
                masked.append(m.mean())
                # label is built from text, so its time already holds text's
                seconds.append(sum(d["seconds"].get(k, 0.0) for k in combo.split("+")))
                if v in ("faint", "heavy") and d["stain"].any():
                    hidden["cells"][0] += int((d["stain"] & m).sum())
                    hidden["cells"][1] += int(d["stain"].sum())
                    hidden["ink"][0] += float(d["ink"][m].sum())
                    hidden["ink"][1] += float(d["ink"].sum())
                    hidden["sheets"][0] += int(not (d["stain"] & ~m).any())
                    hidden["sheets"][1] += 1
        for rule in rules:
            s = {
                v: np.array(
                    [
                        pooled(sh["versions"][v]["cells"][run], m, rule)
                        for sh, m in zip(sheets, ignore[v])
                    ]
                )
                for v in VERSIONS
            }
            if combo == "none" and rule == "top3":
                base = s
            row = {"mask": combo, "rule": rule, **_aucs(s)}
            if boot and base is not None:
                row["auc_gain_vs_none_top3_ci95"] = _auc_gain_ci(s, base)
            # logit 0 (P 0.5) is the run's own operating point, folded into its head; it has
            # no meaning for the sheet-relative rule
            row["model_threshold"] = _rates(s, lambda i: 0.0) if rule != "top3-p90" else None
            row["calibrated"] = _calibrated(s)
            row["cells_masked"] = round(float(np.mean(masked)), 4)
            row["stain_cells_hidden"] = round(hidden["cells"][0] / max(1, hidden["cells"][1]), 4)
            row["stain_ink_hidden"] = round(hidden["ink"][0] / max(1e-9, hidden["ink"][1]), 4)
            row["stained_sheets_all_hidden"] = hidden["sheets"]
            row["mask_seconds_per_sheet"] = round(float(np.mean(seconds)), 4)
            row["mask_seconds_p90"] = round(float(np.percentile(seconds, 90)), 4)
            rows.append(row)
    return rows


def score_reference(panels: list[dict], run: str) -> list[dict]:
    rows = []
    for p in panels:
        cells = p["cells"][run]
        for combo in COMBOS:
            m = combined(p["masks"], combo, cells.shape)
            z = pooled(cells, m, "top3")
            rows.append(
                {
                    "panel": p["panel"],
                    "mask": combo,
                    "p_contaminated": round(1 / (1 + np.exp(-z)), 3),
                    "flagged": bool(z >= 0),
                    "cells_masked": round(float(m.mean()), 3),
                    "cells_over_0_left": int((cells[~m] >= 0).sum()),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------


def _ci(d: dict) -> str:
    return f"{d['rate']:.2f} [{d['ci95'][0]:.2f},{d['ci95'][1]:.2f}]"


def print_table(title: str, rows: list[dict], rules=RULES) -> None:
    print(f"\n{title}")
    print(
        f"{'mask':<25} {'rule':<8} {'AUC st':>6} {'gain 95%':>13} {'faint':>5} {'heavy':>5} "
        f"{'hard':>5} | model thr: spec clean / hard, det faint / heavy"
        f"{'':<16}| calibrated: spec clean, hard, det faint, heavy"
        f"{'':<18}| masked  stain hid  ink hid  all-hid  s/sheet"
    )
    for r in rows:
        if r["rule"] not in rules:
            continue
        mt = r["model_threshold"]
        thr = (
            " ".join(_ci(mt[k]) for k in ("spec_clean", "spec_hard", "det_faint", "det_heavy"))
            if mt
            else "-".ljust(79)
        )
        c = r["calibrated"]
        cal = " ".join(f"{c[k]['rate']:.2f}" for k in ("spec_clean", "spec_hard"))
        cal += " " + " ".join(f"{c[k]['rate']:.2f}" for k in ("det_faint", "det_heavy"))
        g = r.get("auc_gain_vs_none_top3_ci95")
        gain = f"[{g[0]:+.3f},{g[1]:+.3f}]" if g else ""
        print(
            f"{r['mask']:<25} {r['rule']:<8} {r['auc_clean_vs_stained']:>6.3f} {gain:>13} "
            f"{r['auc_clean_vs_faint']:>5.3f} {r['auc_clean_vs_heavy']:>5.3f} "
            f"{r['auc_hard_vs_stained']:>5.3f} | {thr} | {cal:<27} "
            f"| {r['cells_masked']:>6.3f} {r['stain_cells_hidden']:>9.3f} "
            f"{r['stain_ink_hidden']:>8.3f} {r['stained_sheets_all_hidden'][0]:>4}/"
            f"{r['stained_sheets_all_hidden'][1]:<4} {r['mask_seconds_per_sheet']:>6.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", default=["mercury"], help="stain runs (default mercury)")
    ap.add_argument("--sources", nargs="*", type=Path, default=stains_eval.DEFAULT_SOURCES)
    ap.add_argument("--limit", type=int, default=None, help="first N evaluation sheets")
    ap.add_argument("--ala", type=int, default=16, help="ALA sheets, evenly spaced (0: none)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    from herbscan.predict import expand_images

    paths = sorted(expand_images(args.sources)[0])[: args.limit]
    jobs = [("eval", i, str(p), i) for i, p in enumerate(paths)]
    ala_dir = SHARED / "ala-lycopodiaceae" / "images"
    ala = sorted(ala_dir.glob("*.jpg")) if ala_dir.is_dir() else []
    if args.ala and ala:
        pick = ala[:: max(1, len(ala) // args.ala)][: args.ala]
        jobs += [("ala", j, str(p), 1000 + j) for j, p in enumerate(pick)]
    t0 = time.monotonic()
    results = []
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.runs,)) as ex:
        ref = ex.submit(reference_job, args.runs)
        for k, res in enumerate(ex.map(sheet_job, jobs), 1):
            results.append(res)
            if k % 8 == 0 or k == len(jobs):
                print(f"  {k}/{len(jobs)} sheets, {time.monotonic() - t0:.0f} s", flush=True)
        panels = ref.result()
    seconds = round(time.monotonic() - t0, 1)
    out = {"runs": [], "seconds": seconds, "n_eval_sheets": len(paths)}
    for run in args.runs:
        ev = [r for r in results if r["collection"] == "eval"]
        al = [r for r in results if r["collection"] == "ala"]
        res = {"run": run, "eval": score_collection(ev, run)}
        print_table(
            f"{run}: {len(ev)} sheets of other herbaria × (clean, hard negatives, faint, heavy); "
            "AUC clean vs stained / faint / heavy, hard negatives vs stained; Wilson 95%",
            res["eval"],
        )
        if al:
            res["ala"] = score_collection(al, run, boot=False)
            res["n_ala_sheets"] = len(al)
            print_table(f"{run}: {len(al)} ALA sheets, painted the same way", res["ala"])
        res["mercury_reference"] = score_reference(panels, run)
        print(f"\n{run}: mercury-reference (real stained US sheets), top-3 rule")
        for r in res["mercury_reference"]:
            print(
                f"  panel {r['panel']} {r['mask']:<25} P {r['p_contaminated']:.3f} "
                f"{'flagged' if r['flagged'] else 'NOT flagged':<11} cells masked "
                f"{r['cells_masked']:.3f}, cells >= 0 left {r['cells_over_0_left']}"
            )
        out["runs"].append(res)
    print(f"\n{seconds} s in all")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
