"""The stain painter, StainNet, learn-stains and the shipped mercury model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from herbscan.errors import ParameterError
from herbscan.images import input_shape, load_sheet
from herbscan.stainnet import STRIDE, StainNet, cell_targets
from herbscan.stains import NEGATIVE_KINDS, STAIN_KINDS, paint, pixels_per_mm, plant_mask, scanner


def paper(h=300, w=200, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), (236, 230, 214), np.uint8) + rng.integers(0, 6, (h, w, 1)).astype(
        np.uint8
    )
    a[h // 4 : 3 * h // 4, w // 2 - 3 : w // 2 + 3] = (70, 110, 50)  # a green stem
    return a


def test_clean_sheets_have_no_stain_strength_and_stay_in_range():
    for seed in range(5):
        img, strength, d = paint(np.random.default_rng(seed), paper(), stained=False, n_negatives=4)
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
        assert strength.max() == 0
        assert d["stained"] is False and d["kinds"] == [] and len(d["negatives"]) == 4
        assert set(d["negatives"]) <= set(NEGATIVE_KINDS)


def test_every_stain_kind_darkens_the_sheet_where_it_says():
    for kind in STAIN_KINDS:
        base = paper()
        img, strength, d = paint(
            np.random.default_rng(1), base, stained=True, severity=0.8, kinds=[kind], n_negatives=0
        )
        assert d["kinds"] == [kind]
        lum = np.array([0.299, 0.587, 0.114], np.float32)
        darker = (base.astype(np.float32) / 255 - img) @ lum
        assert strength.max() > 0.25, kind
        # strength is the darkening in luminance, a quarter of the range counting fully
        assert np.allclose(strength, np.clip(darker / 0.25, 0, 1), atol=1e-4), kind
        assert 0 < (strength > 0.3).mean() < 0.8, kind


def test_severity_means_more_stain():
    faint, heavy = [], []
    for seed in range(8):
        for sev, out in ((0.05, faint), (1.0, heavy)):
            _, s, _ = paint(
                np.random.default_rng(seed),
                paper(),
                stained=True,
                severity=sev,
                kinds=["speckles"],
                n_negatives=0,
            )
            out.append((s > 0.3).sum())
    assert np.median(heavy) > 5 * np.median(faint) > 0


def _shares(fraction, seeds: int) -> dict[int, float]:
    """Mean share of a paper sheet that `fraction(rng, base, scale)` finds painted, at 1× and 2×
    the pixels (a painter sized in millimetres covers the same share at both)."""
    share = {}
    for scale in (1, 2):
        base = np.asarray(Image.fromarray(paper()).resize((200 * scale, 300 * scale)))
        share[scale] = np.mean(
            [fraction(np.random.default_rng(seed), base, scale) for seed in range(seeds)]
        )
    return share


def test_sizes_are_in_millimetres_not_pixels():
    """The same stains painted on the same sheet at twice the scale cover the same share of it."""

    def stained(rng, base, scale):
        _, s, _ = paint(
            rng, base, stained=True, severity=0.7, kinds=["speckles"], n_negatives=0,
            ppm=2.0 * scale,
        )  # fmt: skip
        return (s > 0.3).mean()

    share = _shares(stained, 6)
    assert 0.6 < share[2] / share[1] < 1.6


def test_bad_kinds_are_refused_with_the_choices():
    with pytest.raises(ParameterError, match="unknown stain kind 'rust'.*speckles"):
        paint(np.random.default_rng(0), paper(), stained=True, kinds=["rust"])
    with pytest.raises(ParameterError, match="look-alike"):
        paint(np.random.default_rng(0), paper(), stained=False, negatives=["cat"])
    with pytest.raises(ParameterError, match="at least one stain kind"):
        paint(np.random.default_rng(0), paper(), stained=True, kinds=[])
    with pytest.raises(ParameterError, match="RGB"):
        paint(np.random.default_rng(0), np.zeros((10, 10)), stained=False)


def test_plant_mask_finds_the_stem_not_the_paper():
    m = plant_mask(paper())
    assert m[150, 100] and not m[10, 10]
    assert 0.01 < m.mean() < 0.1


def test_scale_and_scanner():
    assert pixels_per_mm((1536, 1024, 3)) == pytest.approx(1536 / 420)
    out = scanner(np.random.default_rng(0), np.full((40, 30, 3), 0.5, np.float32))
    assert out.dtype == np.uint8 and out.shape == (40, 30, 3) and out.flags.writeable
    assert 90 < out.mean() < 170


def test_cell_targets_need_a_visible_amount_of_stain():
    m = torch.zeros(1, 32, 48)
    m[0, 3, 20] = 1.0  # one fully darkened pixel: below 1.5 pixels' worth
    assert cell_targets(m, 1.5).sum() == 0
    m[0, 4, 20] = 1.0
    t = cell_targets(m, 1.5)
    assert t.shape == (1, 2, 3) and t[0, 0, 1] == 1 and t.sum() == 1


def test_stainnet_is_lite0s_first_stages_and_pools_the_top_cells():
    from safetensors.torch import load_file

    from herbscan.models import create_model
    from herbscan.pretrained import pretrained_weights

    net = create_model("stainnet", 2, pretrained=True).eval()
    ref = load_file(str(pretrained_weights("efficientnet_lite0")))
    shared = [k for k in net.state_dict() if not k.startswith("stain_head")]
    assert len(shared) > 100
    assert all(torch.equal(net.state_dict()[k], ref[k]) for k in shared)
    assert not any(k.startswith("_blocks.11.") for k in net.state_dict())  # stride 32 dropped
    x = torch.rand(2, 3, 96, 64)
    cells = net.cell_logits(x)
    assert cells.shape == (2, 96 // STRIDE, 64 // STRIDE)
    logits = net(x)
    assert logits.shape == (2, 2) and (logits[:, 0] == 0).all()
    top = cells.flatten(1).topk(net.top_k, 1).values.mean(1)
    assert torch.allclose(logits[:, 1], top)
    with pytest.raises(ParameterError, match="needs 2 classes, not 3"):
        StainNet(3)


def test_sheet_fit_is_an_upright_two_by_three_sheet(tmp_path):
    p = tmp_path / "landscape.jpg"
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(p)
    assert input_shape(64, "sheet") == (96, 64)
    assert load_sheet(p, 64, "sheet").shape == (96, 64, 3)
    assert load_sheet(p, 64, "stretch").shape == (64, 64, 3)


def _clean_folder(tmp_path, n=6):
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(paper(360, 240, seed=i)).save(folder / f"s{i}.jpg", quality=92)
    return folder


def test_learn_stains_writes_a_run_every_command_accepts(tmp_path):
    from herbscan.learn_stains import learn_stains
    from herbscan.predict import Predictor
    from herbscan.runs import load_run

    folder = _clean_folder(tmp_path)
    (folder / "notes.txt").write_text("not a sheet")
    run = learn_stains(
        [folder],
        tmp_path / "run",
        size=256,
        crop=64,
        steps=2,
        batch_size=2,
        validation_sheets=2,
        init="scratch",
        precision="fp32",
        progress=False,
        holdout_kinds=["tideline"],
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["preprocessing"] == {**cfg["preprocessing"], "fit": "sheet", "size": 256}
    assert cfg["training"]["n_train_sheets"] == 5 and cfg["training"]["n_validation_sheets"] == 1
    assert "tideline" not in cfg["training"]["stain_kinds"]
    assert cfg["operating_point"]["threshold"] == 0.5
    assert 0 <= cfg["operating_point"]["raw_threshold"] <= 1
    assert (run / "history.csv").read_text().startswith("step,")
    assert "notes.txt" in (run / "skipped.csv").read_text()
    preds = Predictor(load_run(run), precision="fp32").predict(
        sorted(folder.glob("*.jpg")), progress=False
    )
    assert all(p.probs is not None and p.probs.shape == (2,) for p in preds)
    with pytest.raises(ParameterError, match="already there"):
        learn_stains([folder], run, steps=1, init="scratch", progress=False)


def test_learn_stains_refuses_what_it_cannot_use(tmp_path):
    from herbscan.learn_stains import learn_stains

    folder = _clean_folder(tmp_path, n=2)
    with pytest.raises(ParameterError, match="at least 3 readable sheets"):
        learn_stains([folder], tmp_path / "r", init="scratch", progress=False)
    with pytest.raises(ParameterError, match="unknown stain kind 'rust'"):
        learn_stains([folder], tmp_path / "r", holdout_kinds=["rust"], progress=False)
    with pytest.raises(ParameterError, match="multiples of 16"):
        learn_stains([folder], tmp_path / "r", size=1000, progress=False)
    with pytest.raises(ParameterError, match="--init imagnet: choose mercury, imagenet, scratch"):
        learn_stains([folder], tmp_path / "r", init="imagnet", progress=False)


def test_the_decode_cache_is_checked_for_space(tmp_path, monkeypatch):
    import shutil

    from herbscan import learn_stains as ls

    folder = _clean_folder(tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    with pytest.raises(ParameterError, match="decode cache needs about .* GB.*--cache-dir"):
        ls.learn_stains([folder], tmp_path / "r", init="scratch", progress=False)
    assert ls.cache_bytes(1000, 1024) == 1000 * (1536 * 1024 * 3 + 128)


def test_train_init_from_a_stain_run_keeps_its_model_and_scale(tiny_collection, tmp_path):
    from safetensors.torch import load_file

    from herbscan.learn_stains import learn_stains
    from herbscan.manifest import split
    from herbscan.train import train

    stains = learn_stains(
        [tiny_collection / "clean"],
        tmp_path / "stains",
        size=256,
        crop=64,
        steps=1,
        batch_size=2,
        validation_sheets=2,
        init="scratch",
        precision="fp32",
        progress=False,
    )
    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    run = train(
        data, tmp_path / "ft", init=stains, epochs=0, workers=1, progress=False, precision="fp32"
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["architecture"]["name"] == "stainnet"
    assert cfg["architecture"]["init"] == "run"
    assert cfg["architecture"]["weights"]["head"] == "kept"
    assert cfg["preprocessing"]["size"] == 256 and cfg["preprocessing"]["fit"] == "sheet"
    # epoch 0 is the stain run itself, scored on validation: same weights
    a, b = load_file(str(stains / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ParameterError, match="not both"):
        train(data, tmp_path / "x", init=stains, pretrained=True, progress=False)


def _cli(monkeypatch, capsys, *args):
    import sys

    from herbscan.cli import main

    monkeypatch.setattr(sys, "argv", ["herbscan", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_learn_stains_then_screen_and_heatmaps(monkeypatch, capsys, tmp_path):
    folder = _clean_folder(tmp_path)
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "learn-stains",
        folder,
        "--out",
        tmp_path / "run",
        "--size",
        256,
        "--crop",
        64,
        "--steps",
        2,
        "--batch-size",
        2,
        "--validation-sheets",
        2,
        "--init",
        "scratch",
        "--precision",
        "fp32",
    )
    assert code in (0, None), err
    assert "run saved in" in out and "balanced accuracy" in out and "herbscan screen" in out
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "predict",
        tmp_path / "run",
        folder / "s0.jpg",
        "--out",
        tmp_path / "p.csv",
        "--heatmaps",
        tmp_path / "heat",
        "--precision",
        "fp32",
    )
    assert code in (0, None), err
    png = tmp_path / "heat" / "s0.jpg.heatmap.png"
    with Image.open(png) as im:
        assert im.size[1] > im.size[0]  # upright 2:3
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "screen",
        "--model",
        tmp_path / "run",
        folder,
        "--out",
        tmp_path / "screen",
        "--precision",
        "fp32",
    )
    assert code in (0, None), err
    assert "screened 6 sheets" in out
    code, _, err = _cli(monkeypatch, capsys, "screen", "--out", tmp_path / "s2", folder)
    assert code == 2 and "run folder" in err


def test_the_shipped_mercury_model_flags_stains_it_was_not_trained_on():
    """`mercury` loads by name and separates clean sheets from sheets stained by the demo's own
    painter (herbscan.synth, not the stains module it learnt from), on seeds it never saw."""
    from herbscan.accel import Accel
    from herbscan.runs import load_run
    from herbscan.synth import make_sheet

    run = load_run("mercury")
    cfg = run.config
    assert cfg.architecture.name == "stainnet" and cfg.preprocessing.fit == "sheet"
    assert "herbscan.synth" in cfg.training.sources[0]  # no collection's images inside
    net, acc = run.build_model().float().eval(), Accel.resolve(precision="fp32")
    prep = run.preprocessing
    clean = []
    for seed in (910, 911, 912):
        scores = []
        for stained in (False, True):
            im, _ = make_sheet(np.random.default_rng(seed), stained=stained, size=(1024, 1536))
            x = acc.to_input(np.asarray(im)[None].copy(), prep.mean, prep.std)
            with torch.no_grad():
                scores.append(float(torch.softmax(net(x), 1)[0, 1]))
        assert scores[0] + 0.2 < scores[1] and scores[1] >= 0.5, (seed, scores)
        clean.append(scores[0])
    # Its threshold comes from its own painter's sheets: seed 0 alone flagged 1 to 3 clean
    # sheets of 20 (0.53-0.77), the three-seed ensemble none (highest 0.32), so one of these
    # three may sit above 0.5, but not the run of them.
    assert np.mean(clean) < 0.5, clean
    assert cfg.architecture.kwargs == {"members": 3, "shared_blocks": 5}


def test_leaf_texture_stays_on_the_plant_and_debris_is_coloured():
    base = paper()
    img, strength, _ = paint(
        np.random.default_rng(2), base, stained=False, negatives=["texture"], n_negatives=1
    )
    changed = np.abs(img - base.astype(np.float32) / 255).max(axis=2) > 0.02
    assert changed.any() and not (changed & ~plant_mask(base)).any() and strength.max() == 0
    img, _, _ = paint(
        np.random.default_rng(3), base, stained=False, negatives=["debris"], n_negatives=1, ppm=4
    )
    dark = (img.mean(axis=2) < 0.5) & ~plant_mask(base)
    assert dark.any()
    chroma = img.max(axis=2) - img.min(axis=2)
    assert np.median(chroma[dark]) > 0.08  # brown or green, not mercury's grey


def test_screen_threshold_calibrate_uses_painted_sheets_of_the_collection(tmp_path):
    from herbscan.learn_stains import learn_stains
    from herbscan.screen import screen

    folder = _clean_folder(tmp_path)
    run = learn_stains(
        [folder],
        tmp_path / "run",
        size=256,
        crop=64,
        steps=1,
        batch_size=2,
        validation_sheets=2,
        init="scratch",
        precision="fp32",
        progress=False,
    )
    s = screen(
        run,
        folder,
        tmp_path / "screen",
        threshold="calibrate",
        precision="fp32",
        progress=False,
        report=False,
    )
    cal = json.loads((tmp_path / "screen" / "calibration.json").read_text())
    assert cal["sheets"] == 6 and cal["n"] == 12 and 0 <= cal["threshold"] <= 1
    assert s["threshold"] == cal["threshold"]
    assert s["threshold_source"].startswith("calibrated on 6 sheets of this collection")
    again = screen(
        run,
        folder,
        tmp_path / "screen",
        threshold="calibrate",
        resume=True,
        precision="fp32",
        progress=False,
        report=False,
    )
    assert again["threshold"] == cal["threshold"]
    with pytest.raises(ParameterError, match="needs a stain run"):
        from herbscan.runs import load_run
        from herbscan.screen import _threshold

        r = load_run(run)
        r.config.architecture.name = "herbnet"
        _threshold(r, "calibrate")


def test_commands_say_where_they_cache_when_the_user_did_not_choose(monkeypatch, capsys):
    from herbscan.cli import _say_cache

    monkeypatch.delenv("HERBSCAN_CACHE", raising=False)
    _say_cache(None)
    assert "caching decoded sheets in" in capsys.readouterr().err
    monkeypatch.setenv("HERBSCAN_CACHE", "/tmp/somewhere")
    _say_cache(None)
    assert capsys.readouterr().err == ""


def test_train_stainnet_from_imagenet_on_labelled_sheets(tiny_collection, tmp_path):
    from herbscan.manifest import split
    from herbscan.train import train

    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    run = train(
        data,
        tmp_path / "r",
        model="stainnet",
        size=64,
        epochs=1,
        workers=1,
        progress=False,
        precision="fp32",
        pretrained=True,
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["architecture"]["init"] == "imagenet"
    assert "efficientnet-lite0" in cfg["architecture"]["weights"]["origin"]
    assert cfg["preprocessing"]["fit"] == "sheet" and "linear_probe" not in cfg["training"]


def test_learn_stains_resumes_a_stopped_job_and_refuses_changed_settings(tmp_path, monkeypatch):
    from herbscan import learn_stains as ls
    from herbscan.errors import RunError

    folder = _clean_folder(tmp_path)
    kw = dict(
        size=256,
        crop=64,
        steps=4,
        batch_size=2,
        validation_sheets=2,
        init="scratch",
        precision="fp32",
        progress=False,
    )
    real, calls = ls.sheet_scores, []

    def dies_at_third_validation(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # validations at steps 1, 2, 3 and 4: stop at the last
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ls, "sheet_scores", dies_at_third_validation)
    with pytest.raises(KeyboardInterrupt):
        ls.learn_stains([folder], tmp_path / "run", **kw)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["history"]) == 3
    with pytest.raises(ParameterError, match="unfinished learn-stains job; pass --resume"):
        ls.learn_stains([folder], tmp_path / "run", **kw)
    with pytest.raises(RunError, match="started with lr=0.001, not 0.002"):
        ls.learn_stains([folder], tmp_path / "run", resume=True, **{**kw, "lr": 2e-3})
    monkeypatch.setattr(ls, "sheet_scores", real)
    run = ls.learn_stains([folder], tmp_path / "run", resume=True, **kw)
    rows = (run / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert not (run / "checkpoint").exists() and (run / "run.json").is_file()


def test_text_blocks_anywhere_on_any_image_size():
    """Text half outside the image, on tiny crops and large sheets, never fails."""
    for seed in range(60):
        rng = np.random.default_rng(seed)
        h, w = (int(v) for v in rng.integers(16, 400, 2))
        img, s, d = paint(
            rng,
            paper(h, w, seed),
            stained=False,
            negatives=["text"],
            n_negatives=2,
            ppm=float(rng.uniform(1, 8)),
        )
        assert img.shape == (h, w, 3) and d["negatives"] == ["text", "text"]


def test_screening_with_the_shipped_model_calibrates_on_the_collection(tmp_path):
    from herbscan.runs import is_shipped, resolve_run
    from herbscan.screen import screen

    assert is_shipped(resolve_run("mercury")) and not is_shipped(tmp_path)
    folder = tmp_path / "sheets"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(paper(180, 120, seed=i)).save(folder / f"s{i}.jpg")
    s = screen(
        "mercury", folder, tmp_path / "screen", precision="fp32", progress=False, report=False
    )
    assert s["threshold_source"].startswith("calibrated on 3 sheets of this collection")
    assert (tmp_path / "screen" / "calibration.json").is_file()


NEW_LOOK_ALIKES = ("form", "frame", "coin", "finger", "specks", "stems")


@pytest.mark.parametrize("kind", NEW_LOOK_ALIKES)
def test_real_sheet_look_alikes_paint_in_millimetres_and_are_never_stain(kind):
    """Label forms, scanner frames, coins, fingers, paper specks and stems change the sheet,
    never count as stain, and cover the same share of it at twice the pixels per millimetre."""
    assert kind in NEGATIVE_KINDS

    def changed(rng, base, scale):
        img, strength, d = paint(
            rng, base, stained=False, negatives=[kind], n_negatives=1, ppm=4.0 * scale
        )
        assert d["negatives"] == [kind] and strength.max() == 0
        assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
        return (np.abs(img - base.astype(np.float32) / 255).max(axis=2) > 0.06).mean()

    share = _shares(changed, 8)
    assert share[1] > 0 and share[2] > 0, (kind, share)  # it painted something at each scale
    assert 0.6 < share[2] / share[1] < 1.6, (kind, share)
    # painted under stains, they still never count as stain themselves
    _, strength, _ = paint(
        np.random.default_rng(0), paper(), stained=True, kinds=["blotch"], negatives=[kind]
    )
    assert strength.max() > 0


def test_aged_paper_browns_the_paper_and_leaves_the_plant_alone():
    """Ageing darkens blue more than red (yellow-brown, where mercury is grey), varies across the
    sheet in patches, never touches the plant and never counts as stain."""
    base = paper(300, 200)
    stem = base[150, 100].astype(np.float32) / 255
    for seed in range(6):
        img, strength, d = paint(
            np.random.default_rng(seed), base, stained=False, negatives=["ageing"], n_negatives=1
        )
        assert d["negatives"] == ["ageing"] and strength.max() == 0
        loss = 1 - img[:, :50] / (base[:, :50].astype(np.float32) / 255)  # paper only
        red, blue = loss[..., 0].mean(), loss[..., 2].mean()
        assert blue > 0.02 and blue > 2 * red, (seed, red, blue)
        assert loss[..., 2].std() > 0.005  # patchy, not a flat cast
        np.testing.assert_allclose(img[150, 100], stem, atol=1e-6)


def test_paper_specks_are_sparse_and_never_clustered():
    """Mercury speckles gather in clusters; paper inclusions are each on their own."""
    from scipy import ndimage

    base = np.full((600, 400, 3), 235, np.uint8)
    for seed in range(6):
        img, _, _ = paint(
            np.random.default_rng(seed), base, stained=False, negatives=["specks"], n_negatives=1
        )
        dark = ndimage.binary_dilation(img.mean(axis=2) < 0.8, iterations=2)  # fibres whole
        labels, n = ndimage.label(dark)
        assert n >= 1
        ppm = pixels_per_mm(base.shape)
        per_cm2 = n / (base.shape[0] * base.shape[1] / (ppm * 10) ** 2)
        assert per_cm2 < 0.5
        c = np.array(ndimage.center_of_mass(dark, labels, range(1, n + 1)))
        if n > 1:
            gap = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(n) * 1e9
            assert gap.min() / ppm > 2  # no two specks within 2 mm


def test_scanner_frames_darken_an_edge_and_forms_draw_dotted_leaders():
    base = paper(300, 200)
    for seed in range(6):
        img, _, _ = paint(
            np.random.default_rng(seed), base, stained=False, negatives=["frame"], n_negatives=1
        )
        lum = img.mean(axis=2)
        edges = [lum[:2].mean(), lum[-2:].mean(), lum[:, :2].mean(), lum[:, -2:].mean()]
        assert min(edges) < 0.5 and lum[150, 60] > 0.7  # dark at an edge, paper in the middle
    # a form of dotted leaders only: rows of small separate dots at a regular pitch
    from scipy import ndimage

    seen = 0
    for seed in range(40):
        img, _, _ = paint(
            np.random.default_rng(seed),
            np.full((600, 600, 3), 240, np.uint8),
            stained=False,
            negatives=["form"],
            n_negatives=1,
            ppm=6.0,
        )
        labels, n = ndimage.label(img.mean(axis=2) < 0.6)
        if n < 20:
            continue
        sizes = np.bincount(labels.ravel())[1:] / 36  # mm²
        seen += int(((sizes > 0.01) & (sizes < 0.5)).sum() >= 10)  # dots of 0.2-0.6 mm
    assert seen >= 5


def test_learn_stains_adapts_the_shipped_detector_by_default(tmp_path):
    from herbscan.learn_stains import default_steps, learn_stains
    from herbscan.runs import load_run, resolve_run

    folder = _clean_folder(tmp_path)
    run = learn_stains(
        [folder], tmp_path / "run", size=256, crop=64, steps=2, batch_size=2, validation_sheets=2,
        precision="fp32", progress=False,
    )  # fmt: skip
    cfg = load_run(run).config
    assert cfg.architecture.init == "run"
    assert cfg.architecture.weights["source"] == "mercury"
    assert cfg.architecture.weights["sha256"] == load_run(resolve_run("mercury")).model_id
    assert (default_steps("mercury"), default_steps(run), default_steps("imagenet")) == (
        200,
        200,
        600,
    )


def test_freezing_keeps_the_stem_and_first_blocks_and_their_batchnorm():
    net = StainNet()
    net.freeze(5)
    frozen = {
        k: v.clone()
        for k, v in net.state_dict().items()
        if k.startswith(("_conv_stem", "_bn0", "_blocks.0.", "_blocks.4."))
    }
    rest = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("_blocks.5.")}
    net.train()
    assert not net._bn0.training and net._blocks[5].training
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    loss = net.cell_logits(torch.randn(2, 3, 64, 64)).sigmoid().mean()
    loss.backward()
    opt.step()
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in rest.items())
    with pytest.raises(ParameterError, match="choose 0 to 11 blocks"):
        StainNet().freeze(12)
