"""The HTML report: sections, self-containment, escaping, numbers, and a rendered screenshot."""

import base64
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from herbscan.metrics import compute_metrics
from herbscan.report import write_report

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "Summary",
    "Per-class accuracy",
    "Confusion matrix",
    "Probability distributions",
    "Misclassified sheets",
    "Accuracy versus coverage",
    "Calibration",
    "Training curves",
]
EVIL = "<script>alert(1)</script>.jpg"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((30, 20, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).resize((100, 150)).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _evaluation(classes, n=200, seed=0):
    """Synthetic predictions, their metrics and a gallery of the misclassified ones."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    predictions = [
        {
            "path": f"sheets/{i:04d}.jpg",
            "true": classes[y[i]],
            "pred": classes[pred[i]],
            "probs": probs[i].tolist(),
        }
        for i in range(n)
    ]
    wrong = [p for p in predictions if p["true"] != p["pred"]]
    wrong[0]["path"] = EVIL
    gallery = [dict(p, thumbnail=_jpeg(i)) for i, p in enumerate(wrong[:6])]
    return compute_metrics(y, probs, classes), predictions, gallery


HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "train_accuracy": 1 - 0.3 / e,
        "val_loss": 1.2 / e,
        "val_accuracy": 0.9 - 0.3 / e,
        "lr": 1e-3,
        "seconds": 4.2,
    }
    for e in range(1, 6)
]


@pytest.fixture(
    scope="module",
    params=[["clean", "stained"], ["Quercus", "Acer", "Ficus $aurea", "Salix", "Pinus"]],
    ids=["2-classes", "5-classes"],
)
def report(request, tmp_path_factory):
    classes = request.param
    metrics, predictions, gallery = _evaluation(classes)
    path = tmp_path_factory.mktemp("report") / "out" / "report.html"
    written = write_report(
        path,
        title="Test evaluation",
        metrics=metrics,
        predictions=predictions,
        classes=classes,
        gallery=gallery,
        history=HISTORY,
        notes=["This data is synthetic."],
        info={"model": "smithsonian_cnn", "versions": {"torch": "2.13.0"}},
    )
    return written, written.read_text(encoding="utf-8"), metrics


def test_report_has_every_section_and_the_notes(report):
    path, html, _ = report
    assert path.is_file()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in html
    assert "This data is synthetic." in html
    assert "smithsonian_cnn" in html and "torch 2.13.0" in html


def test_report_is_self_contained(report):
    _, html, _ = report
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html.lower()
    assert "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 4
    assert len(re.findall(r'src="data:image/jpeg;base64,', html)) == 6


def test_report_escapes_sheet_paths(report):
    _, html, _ = report
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in html


def test_report_shows_the_metrics(report):
    _, html, metrics = report
    assert f"{100 * metrics['accuracy']:.1f}%" in html
    assert f"{100 * metrics['balanced_accuracy']:.1f}%" in html
    assert f"{metrics['macro_f1']:.3f}" in html
    assert f"{metrics['calibration']['ece']:.3f}" in html
    assert ("Top-2 accuracy" in html) == (len(metrics["classes"]) > 2)
    assert f"{100 * metrics['coverage'][-1]['accuracy']:.1f}%" in html


def test_report_without_errors_history_or_thumbnails(tmp_path):
    classes = ["clean", "stained"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    y = np.array([0, 1, 0])
    predictions = [
        {"path": f"{i}.jpg", "true": classes[t], "pred": classes[t], "probs": p.tolist()}
        for i, (t, p) in enumerate(zip(y, probs))
    ]
    path = write_report(
        tmp_path / "r.html",
        title="Perfect",
        metrics=compute_metrics(y, probs, classes),
        predictions=predictions,
        classes=classes,
    )
    html = path.read_text(encoding="utf-8")
    assert "None: every one of the 3 sheets was classified correctly." in html
    assert "No training history was recorded" in html
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed away


def test_report_rejects_predictions_with_unknown_classes(tmp_path):
    classes = ["clean", "stained"]
    metrics, predictions, _ = _evaluation(classes)
    predictions[3]["true"] = "mouldy"
    with pytest.raises(ValueError, match="mouldy"):
        write_report(
            tmp_path / "r.html",
            title="Bad",
            metrics=metrics,
            predictions=predictions,
            classes=classes,
        )
    assert not list(tmp_path.iterdir())


def test_screenshot_renders_a_page(report, tmp_path):
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.skip("chromium is not installed (apt-get install chromium) - screenshot not tested")
    path, _, _ = report
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "screenshot_report.py"),
            str(path),
            str(out),
            "--height",
            "2000",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10


TILE_SECTIONS = {
    "tile-entropy": "Tile entropy",
    "sheet-aggregation": "Sheet aggregation",
    "tile-heatmaps": "Tile heatmaps",
}


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((24, 16, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _tile_inputs(classes):
    rng = np.random.default_rng(3)
    entropy = {
        "by_class": {
            classes[0]: rng.uniform(0, 8, 3000).tolist(),
            classes[1]: rng.normal(5, 1, 400).tolist(),
        },
        "threshold": 2.345,
        "kept_fraction": 0.62,
        "tiles_total": 12800,
    }
    aggregation = {
        "rule": "top-k",
        "k": 3,
        "threshold": 0.5,
        "positive_class": classes[1],
        "candidates": [
            {
                "rule": "mean",
                "k": None,
                "threshold": 0.5,
                "balanced_accuracy": 0.81,
                "accuracy": 0.83,
            },
            {
                "rule": "top-k",
                "k": 3,
                "threshold": 0.5,
                "balanced_accuracy": 0.875,
                "accuracy": 0.9,
            },
            {
                "rule": "max",
                "k": None,
                "threshold": 0.5,
                "balanced_accuracy": 0.7,
                "accuracy": 0.72,
            },
        ],
    }
    heatmaps = [
        {
            "path": EVIL if i == 0 else f"sheets/{i}.jpg",
            "true": classes[1],
            "pred": classes[i % 2],
            "score": 0.25 * i,
            "png": _png(i),
            "caption": "<b>top-3</b> of 40 tiles",
        }
        for i in range(3)
    ]
    return entropy, aggregation, heatmaps


@pytest.fixture(scope="module")
def tile_report(tmp_path_factory):
    classes = ["clean", "stained"]
    metrics, predictions, _ = _evaluation(classes, n=60)
    entropy, aggregation, heatmaps = _tile_inputs(classes)
    path = write_report(
        tmp_path_factory.mktemp("tiles") / "report.html",
        title="Tiles",
        metrics=metrics,
        predictions=predictions,
        classes=classes,
        entropy=entropy,
        aggregation=aggregation,
        heatmaps=heatmaps,
    )
    return path.read_text(encoding="utf-8"), heatmaps


def test_tile_sections_only_when_given(report):
    _, html, _ = report
    for anchor, heading in TILE_SECTIONS.items():
        assert f'id="{anchor}"' not in html and f'href="#{anchor}"' not in html
        assert f"<h2>{heading}</h2>" not in html


def test_tile_sections_and_navigation(tile_report):
    html, _ = tile_report
    for anchor, heading in TILE_SECTIONS.items():
        assert f'<section id="{anchor}">' in html and f'href="#{anchor}"' in html
        assert f"<h2>{heading}</h2>" in html
    for heading in SECTIONS:  # the sheet-level report is still all there
        assert f"<h2>{heading}</h2>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html.lower() and "url(" not in html


def test_tile_entropy_figure_threshold_and_kept_share(tile_report):
    html, _ = tile_report
    section = html[html.index('<section id="tile-entropy">') :]
    section = section[: section.index("</section>")]
    assert re.search(
        r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" '
        r'alt="Distribution of tile entropy',
        section,
    )
    assert "2.35 bits" in section and "62.0% of 12,800 tiles were kept" in section


def test_sheet_aggregation_highlights_the_chosen_rule(tile_report):
    html, _ = tile_report
    section = html[html.index('<section id="sheet-aggregation">') :]
    section = section[: section.index("</section>")]
    assert "chosen on the validation split" in section
    assert "mean of the 3 highest P(stained)" in section
    chosen = re.findall(r'<tr class="chosen"><td>([^<]*)</td><td class="num">([^<]*)</td>', section)
    assert chosen == [("top-k", "3")]
    assert section.index("87.5%") < section.index("81.0%") < section.index("70.0%")


def test_tile_heatmaps_are_embedded_and_escaped(tile_report):
    html, heatmaps = tile_report
    for sheet in heatmaps:
        assert "data:image/png;base64," + base64.b64encode(sheet["png"]).decode() in html
    assert EVIL not in html and "<b>top-3</b>" not in html
    section = html[html.index('<section id="tile-heatmaps">') :]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in section
    assert "&lt;b&gt;top-3&lt;/b&gt; of 40 tiles" in section
    assert "0.500" in section  # a sheet score
    assert "<script" not in html.lower()


def test_empty_tile_inputs_say_so(tmp_path):
    classes = ["clean", "stained"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 1])
    predictions = [
        {"path": f"{i}.jpg", "true": classes[t], "pred": classes[t], "probs": p.tolist()}
        for i, (t, p) in enumerate(zip(y, probs))
    ]
    path = write_report(
        tmp_path / "r.html",
        title="Empty tiles",
        metrics=compute_metrics(y, probs, classes),
        predictions=predictions,
        classes=classes,
        entropy={"by_class": {"clean": []}, "threshold": None},
        aggregation={"rule": "mean", "candidates": []},
        heatmaps=[],
    )
    html = path.read_text(encoding="utf-8")
    assert "No tile entropies were given." in html
    assert "No candidate rules were recorded." in html
    assert "None: no tile heatmaps were given." in html
    assert "Threshold:" not in html and "tiles were kept" not in html


def test_hazard_summary_baseline_and_small_test_warning(tmp_path):
    classes = ["clean", "contaminated"]
    metrics, predictions, gallery = _evaluation(classes, n=20, seed=3)
    path = write_report(
        tmp_path / "r.html",
        title="t",
        metrics=metrics,
        predictions=predictions,
        classes=classes,
        gallery=gallery,
        hazard={"positive": "contaminated", "threshold": 0.5, "source": "val"},
    )
    html = path.read_text()
    pos = [p for p in predictions if p["true"] == "contaminated"]
    missed = sum(p["probs"][1] < 0.5 for p in pos)
    flagged = sum(p["probs"][1] >= 0.5 for p in predictions)
    assert f'{missed:,} of {len(pos):,}</div><div class="label">contaminated sheets missed' in html
    assert f'{flagged:,} of 20</div><div class="label">sheets to check by hand' in html
    # the hazard cards come before the overall accuracy
    assert html.index("sheets missed") < html.index(">Accuracy<")
    support = [sum(r) for r in metrics["confusion_matrix"]]
    majority = classes[int(np.argmax(support))]
    assert f"Always answering “{majority}”" in html
    assert f"{100 * max(support) / 20:.1f}%" in html
    assert "Only 20 sheets were evaluated" in html and "too few" in html
    assert "file://" in html  # a misclassified thumbnail links to its full sheet
    big = _evaluation(classes, n=200)[0]
    html = write_report(
        tmp_path / "b.html",
        title="t",
        metrics=big,
        predictions=_evaluation(classes, n=200)[1],
        classes=classes,
    ).read_text()
    assert "Only 200" not in html and "sheets missed" not in html


def test_report_title_names_the_run_and_data():
    from herbscan.evaluate import report_title

    assert (
        report_title(Path("/x/runs/demo/run"), "/d/split.csv", "test")
        == "herbscan evaluation: demo/run on the test split of split.csv"
    )
    assert (
        report_title(Path("/x/genus_lite0"), "/d/other.csv", "all")
        == "herbscan evaluation: genus_lite0 on other.csv"
    )


def test_headline_numbers_carry_their_intervals(tmp_path):
    classes = ["clean", "contaminated"]
    metrics, predictions, _ = _evaluation(classes, n=60, seed=1)
    html = write_report(
        tmp_path / "r.html", title="t", metrics=metrics, predictions=predictions, classes=classes
    ).read_text()
    lo, hi = metrics["intervals"]["accuracy"]
    assert f"95%: {100 * lo:.1f}%–{100 * hi:.1f}%" in html
    assert "percentile bootstrap" in html
