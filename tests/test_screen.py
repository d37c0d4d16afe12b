"""Screening: every input exactly once, through a kill -9 and --resume."""

import csv
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from herbscan.errors import RunError
from herbscan.manifest import split
from herbscan.screen import screen
from herbscan.train import train


def test_screen_folder_with_a_bad_file(tiny_run, tiny_collection, tmp_path):
    (tiny_collection / "clean" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    s = screen(
        tiny_run,
        tiny_collection,
        tmp_path / "scr",
        shard_size=8,
        threshold=0.5,
        precision="fp32",
        progress=False,
    )
    assert s["screened"] == 29 and s["failed"] == 1 and s["shards"] == 4
    rows = pq.read_table(tmp_path / "scr" / "shards").to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in tiny_collection.rglob("*.jpg"))
    bad = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert "broken.jpg" in bad["error"] and bad["flagged"] is False
    ok = [r for r in rows if not r["error"]]
    assert all(abs(r["p_clean"] + r["p_contaminated"] - 1) < 1e-5 for r in ok)
    assert all(r["flagged"] == (r["p_contaminated"] >= 0.5) for r in ok)
    with open(tmp_path / "scr" / "flagged.csv") as f:
        flagged = list(csv.DictReader(f))
    assert len(flagged) == s["flagged"]
    assert [float(x["score"]) for x in flagged] == sorted(
        (float(x["score"]) for x in flagged), reverse=True
    )
    with pytest.raises(RunError, match="--resume"):
        screen(tiny_run, tiny_collection, tmp_path / "scr", progress=False)
    with pytest.raises(RunError, match="threshold 0.5, not 0.7"):
        screen(
            tiny_run, tiny_collection, tmp_path / "scr", resume=True, threshold=0.7, progress=False
        )


def test_manifest_metadata_is_carried(tiny_run, tiny_collection, tmp_path):
    files = sorted(tiny_collection.rglob("*.jpg"))[:5]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,catalogNumber,cabinet\n"
        + "".join(f"{p},{p.stem},C{i % 2}\n" for i, p in enumerate(files))
    )
    screen(tiny_run, manifest, tmp_path / "s2", precision="fp32", progress=False)
    rows = pq.read_table(tmp_path / "s2" / "shards").to_pylist()
    assert [r["specimen_id"] for r in rows] == [p.stem for p in files]
    assert [r["cabinet"] for r in rows] == ["C0", "C1", "C0", "C1", "C0"]


def test_kill_9_then_resume_gives_every_input_exactly_once(tiny_run, tiny_collection, tmp_path):
    out = tmp_path / "killed"
    # the child is the real CLI with each shard slowed to 0.2 s, so the kill lands mid-job
    child = (
        "import sys, time; import herbscan.screen as s; real = s._shard_table; "
        "s._shard_table = lambda *a: (time.sleep(0.2), real(*a))[1]; "
        "sys.argv = ['herbscan'] + sys.argv[1:]; from herbscan.cli import main; main()"
    )
    cmd = [
        sys.executable,
        "-c",
        child,
        "screen",
        str(tiny_run),
        str(tiny_collection),
        "--out",
        str(out),
        "--shard-size",
        "2",
        "--precision",
        "fp32",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = list((out / "shards").glob("part-*.parquet")) if (out / "shards").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("part-*.parquet")))
    assert 3 <= done < 14, "the job should be killed part way"
    s = screen(tiny_run, tiny_collection, out, resume=True, precision="fp32", progress=False)
    rows = pq.read_table(out / "shards").to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 28 == s["screened"]
    assert set(paths) == {str(p) for p in tiny_collection.rglob("*.jpg")}


def test_auto_threshold_is_the_runs_validation_operating_point(tiny_run, tiny_collection, tmp_path):
    import json

    op = json.loads((tiny_run / "run.json").read_text())["operating_point"]
    assert op["positive_class"] == "contaminated" and 0 <= op["threshold"] <= 1
    s = screen(
        tiny_run, tiny_collection / "clean", tmp_path / "auto", precision="fp32", progress=False
    )
    assert (
        s["threshold"] == op["threshold"]
        and "validation operating point" in s["threshold_source"]
        and "recall" in s["threshold_source"]
    )


def test_hotspots_rank_by_lower_bound():
    from herbscan.metrics import wilson_interval
    from herbscan.screen import hotspots

    rows = (
        [{"error": "", "flagged": True, "cabinet": "A"}]  # 1 of 1
        + [{"error": "", "flagged": i < 30, "cabinet": "B"} for i in range(100)]  # 30/100
        + [{"error": "", "flagged": False, "cabinet": "C"} for _ in range(50)]
        + [{"error": "bad file", "flagged": False, "cabinet": "C"}]
    )
    (table,) = hotspots(rows, ["cabinet"])
    assert [r["value"] for r in table["rows"]] == ["B", "A", "C"]
    b = table["rows"][0]
    assert (b["n"], b["flagged"], b["rate"]) == (100, 30, 0.3)
    assert (b["low"], b["high"]) == pytest.approx(wilson_interval(30, 100))
    assert wilson_interval(30, 100) == pytest.approx((0.2189, 0.3958), abs=1e-4)
    assert wilson_interval(1, 1)[0] == pytest.approx(0.2065, abs=1e-4)
    assert table["rows"][2]["n"] == 50  # failed files are not counted


def test_dask_local_cluster_gives_the_local_results(tiny_run, tiny_collection, tmp_path):
    pytest.importorskip("distributed")
    local = screen(
        tiny_run,
        tiny_collection,
        tmp_path / "local",
        shard_size=6,
        precision="fp32",
        progress=False,
        report=False,
    )
    dasked = screen(
        tiny_run,
        tiny_collection,
        tmp_path / "dask",
        shard_size=6,
        precision="fp32",
        progress=False,
        report=False,
        dask="local:2",
    )
    assert dasked["screened"] == local["screened"] == 28
    a = sorted(pq.read_table(tmp_path / "local" / "shards").to_pylist(), key=lambda r: r["path"])
    b = sorted(pq.read_table(tmp_path / "dask" / "shards").to_pylist(), key=lambda r: r["path"])
    assert [r["path"] for r in a] == [r["path"] for r in b]
    assert [r["predicted"] for r in a] == [r["predicted"] for r in b]
    assert [r["flagged"] for r in a] == [r["flagged"] for r in b]
    assert max(abs(x["p_clean"] - y["p_clean"]) for x, y in zip(a, b)) < 1e-5


def test_screen_with_a_tile_run_reports_heatmaps(tiny_collection, tmp_path):
    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    run = train(
        data,
        tmp_path / "trun",
        mode="tiles",
        model="herbnet_small",
        tile_size=32,
        epochs=1,
        workers=1,
        progress=False,
        precision="fp32",
    )
    s = screen(
        run,
        tiny_collection / "contaminated",
        tmp_path / "ts",
        threshold=0.0,
        precision="fp32",
        progress=False,
    )
    assert s["screened"] == s["flagged"] == 14  # threshold 0 flags everything
    html = (tmp_path / "ts" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 14  # heatmap PNGs, not JPEG thumbnails
    assert len(list((tmp_path / "ts" / "pictures").iterdir())) == 14  # saved while screening


def test_screen_report_rebuilds_from_the_screens_files_without_the_model(
    tiny_collection, tmp_path, monkeypatch
):
    import herbscan.screen as sc

    data, _ = split(tiny_collection, tmp_path / "split.csv", seed=1)
    run = train(
        data,
        tmp_path / "trun",
        mode="tiles",
        model="herbnet_small",
        tile_size=32,
        epochs=1,
        workers=1,
        progress=False,
        precision="fp32",
    )
    screen(
        run,
        tiny_collection / "contaminated",
        tmp_path / "ts",
        threshold=0.0,
        precision="fp32",
        progress=False,
    )
    first = (tmp_path / "ts" / "report.html").read_text()

    def no_model(*a, **k):
        raise AssertionError("screen-report loaded the model")

    monkeypatch.setattr(sc, "Predictor", no_model)
    monkeypatch.setattr(sc, "load_run", no_model)
    (tmp_path / "ts" / "report.html").unlink()
    sc.screen_report(tmp_path / "ts")
    again = (tmp_path / "ts" / "report.html").read_text()
    assert again.count("data:image/png;base64,") == first.count("data:image/png;base64,") >= 14


def test_paths_outside_the_manifests_folder_are_counted_named_and_refusable(
    tiny_run, tiny_collection, tmp_path
):
    import csv as _csv

    from herbscan.errors import ManifestError

    inner = tmp_path / "lists"
    inner.mkdir()
    sheets = sorted((tiny_collection / "clean").glob("*.jpg"))[:3]
    manifest = inner / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["path", "specimen_id"])
        w.writerow([str(sheets[0]), "a"])  # absolute
        w.writerow([f"../coll/clean/{sheets[1].name}", "b"])  # climbs out
        (inner / "here.jpg").write_bytes(sheets[2].read_bytes())
        w.writerow(["here.jpg", "c"])  # inside
    s = screen(tiny_run, manifest, tmp_path / "s", progress=False)
    assert s["outside_paths"] == 2 and s["screened"] == 3
    assert str(sheets[0]) in s["outside_examples"]
    html = (tmp_path / "s" / "report.html").read_text()
    assert "2 image paths of the source are absolute or lead out of its folder" in html
    with pytest.raises(ManifestError, match="2 image path.*refuse-outside-paths"):
        screen(tiny_run, manifest, tmp_path / "s2", progress=False, refuse_outside_paths=True)


def test_compare_col_flags_confident_disagreement_with_the_record():
    from types import SimpleNamespace

    import numpy as np

    from herbscan.screen import _shard_table

    classes = ["Huperzia", "Lycopodium", "Diphasiastrum"]
    part = [
        {"path": f"{i}.jpg", "specimen_id": str(i), "genus": g}
        for i, g in enumerate(["Huperzia", "Huperzia", "Lycopodium", "Selaginella", "x"])
    ]
    preds = [
        SimpleNamespace(probs=np.array(p), label=classes[int(np.argmax(p))], error="")
        for p in ([0.1, 0.85, 0.05], [0.3, 0.45, 0.25], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05])
    ]
    preds.append(SimpleNamespace(probs=None, label="", error="x.jpg: cannot decode"))
    rows = _shard_table(part, preds, classes, ["genus"], None, 0.5, "m", compare="genus")
    assert [r["flagged"] for r in rows] == [True, False, False, False, False]
    assert rows[0]["score"] == pytest.approx(0.75) and rows[0]["recorded"] == "Huperzia"
    assert rows[1]["score"] == pytest.approx(0.15)  # disagrees, but not confidently
    assert rows[2]["score"] == pytest.approx(0.0)  # agrees
    assert rows[3]["score"] != rows[3]["score"]  # recorded class unknown to the model: NaN


def test_screen_writes_people_csvs_remembers_groups_and_warns_about_training_sheets(
    tiny_run, tiny_collection, tmp_path
):
    from herbscan.screen import screen_report

    manifest = tmp_path / "m.csv"
    sheets = sorted(tiny_collection.rglob("*.jpg"))
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "specimen_id", "label", "cabinet"])
        for i, p in enumerate(sheets):
            w.writerow([str(p), f"S{i}", p.parent.name, f"C{i % 3}"])
    s = screen(
        tiny_run,
        manifest,
        tmp_path / "s",
        progress=False,
        group_by=["cabinet"],
        compare_col="label",
    )
    assert s["compare_col"] == "label" and s["positive_class"] is None
    # the run was trained on these very files: said in the summary and the report
    assert s["seen_in_training"] >= 20
    html = (tmp_path / "s" / "report.html").read_text()
    assert "own training or validation sheets (same file or specimen id" in html
    assert "disagree with label" in html
    with open(tmp_path / "s" / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    assert len(results) == len(sheets) and {"recorded", "flagged", "p_clean"} <= set(results[0])
    assert all(len(r["p_clean"].split(".")[-1]) <= 4 for r in results)  # not 16 digits
    # screen-report without --group-by keeps the screen's grouping
    (tmp_path / "s" / "report.html").unlink()
    screen_report(tmp_path / "s")
    assert "cabinet" in (tmp_path / "s" / "report.html").read_text()
    with pytest.raises(RunError, match="compare_col"):
        screen(tiny_run, manifest, tmp_path / "s", progress=False, resume=True)


def test_screen_line_of_a_multiclass_run_says_how_to_flag(tmp_path):
    import numpy as np
    from conftest import make_sheet
    from typer.testing import CliRunner

    from herbscan.cli import app

    rng = np.random.default_rng(1)
    for label in ("Huperzia", "Lycopodium", "Diphasiastrum"):
        (tmp_path / "c" / label).mkdir(parents=True)
        for i in range(5):
            make_sheet(rng, label == "Huperzia").save(tmp_path / "c" / label / f"{i}.jpg")
    data, _ = split(tmp_path / "c", tmp_path / "s.csv", seed=0)
    run = train(
        data,
        tmp_path / "r",
        model="herbnet_small",
        size=64,
        epochs=1,
        workers=1,
        progress=False,
        precision="fp32",
    )
    result = CliRunner().invoke(
        app, ["screen", str(run), str(tmp_path / "c"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "none flagged" in result.output and "--compare-col" in result.output


def test_local_screen_keeps_one_worker_pool_for_all_shards(
    tiny_run, tiny_collection, tmp_path, monkeypatch
):
    import herbscan.cache
    import herbscan.predict

    started = []
    for mod in (herbscan.cache, herbscan.predict):
        real = mod.worker_pool

        def counting(n, real=real):
            started.append(n)
            return real(n)

        monkeypatch.setattr(mod, "worker_pool", counting)
    s = screen(
        tiny_run,
        tiny_collection,
        tmp_path / "s",
        workers=2,
        shard_size=5,
        progress=False,
        report=False,
    )
    assert s["shards"] == 6 and s["screened"] == 28
    assert started == [2]
