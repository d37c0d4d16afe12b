"""herbscan review: the decision store, the job queues, Deep Zoom tiles, the HTTP endpoints and
learning from decisions (the browser tests are in test_review_browser.py)."""

from __future__ import annotations

import csv
import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from herbscan.errors import ManifestError, ParameterError
from herbscan.review.dzi import DeepZoom, TileError
from herbscan.review.learn import add_labels, read_decisions, uncertainty, uncertainty_order
from herbscan.review.queue import key_of, load_labels, load_sheets, locate
from herbscan.review.server import make_server
from herbscan.review.store import Conflict, DecisionStore

EVIL = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- fixtures: a screen folder and a transcription folder made in code ----------------------


def make_screen(
    root: Path,
    sizes=((600, 900), (500, 750), (640, 960), (480, 720)),
    positive: str = "contaminated",
    negative: str = "clean",
) -> Path:
    """A finished screen of synthetic sheets: 3 flagged (the first with a heatmap), 1 not; the
    screened run's classes are `positive` and `negative`."""
    from herbscan.synth import make_sheet
    from herbscan.tiles import heatmap_png

    sheets = root / "sheets"
    sheets.mkdir(parents=True)
    out = root / "screen"
    (out / "pictures").mkdir(parents=True)
    scores = [0.97, 0.81, 0.55, 0.30]
    rows = []
    for i, (size, score) in enumerate(zip(sizes, scores)):
        im, _ = make_sheet(np.random.default_rng([3, i]), stained=score > 0.5, size=size)
        path = sheets / f"HS{i:03d}.jpg"
        im.save(path, quality=90)
        rows.append(
            {
                "path": str(path),
                "specimen_id": f"HS{i:03d}",
                "family": EVIL if i == 0 else "Lycopodiaceae",
                "score": score,
                "predicted": positive if score >= 0.5 else negative,
                f"p_{negative}": round(1 - score, 4),
                f"p_{positive}": score,
                "flagged": score >= 0.5,
                "error": "",
                "model_id": "model-abc",
            }
        )
    a = np.asarray(Image.open(rows[0]["path"]).convert("RGB"))
    coords = [
        (x, y) for y in range(0, a.shape[0] - 127, 128) for x in range(0, a.shape[1] - 127, 128)
    ]
    heat = np.linspace(0, 1, len(coords))
    png = heatmap_png(a, coords, 128, heat, np.ones(len(coords), bool))
    (out / "pictures" / f"{key_of(rows[0]['path'])}.img").write_bytes(png)
    (out / "pictures" / f"{key_of(rows[1]['path'])}.img").write_bytes(b"\xff\xd8 a thumbnail")
    cols = ["path", "specimen_id", "family", "score", "predicted", f"p_{negative}", f"p_{positive}"]
    with open(out / "flagged.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(r for r in rows if r["flagged"])
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, [*cols, "flagged", "error", "model_id"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    state = {
        "complete": True,
        "model_id": "model-abc",
        "threshold": 0.5,
        "positive_class": positive,
        "classes": sorted([negative, positive]),
        "metadata_columns": ["family"],
        "source": str(sheets),
    }
    (out / "screen.json").write_text(json.dumps(state))
    return out


def make_labels(root: Path) -> Path:
    """A transcription folder: labels.csv with two drafts and their label crops."""
    from herbscan.labels.transcribe import COLUMNS

    folder = root / "labels"
    crops = folder / "crops"
    crops.mkdir(parents=True)
    recs = []
    texts = [
        ("Lycopodium annotinum L.", "Alaska", "1961-07-04", "scientificName|eventDate"),
        ("Huperzia selago (L.) Bernh.", "Yukon", "1970-08-01", ""),
    ]
    for i, (name, state, date, review) in enumerate(texts):
        crop = Image.new("RGB", (420, 160), (250, 248, 240))
        d = ImageDraw.Draw(crop)
        d.text((12, 20), f"Flora of {state}", fill=(20, 20, 20))
        d.text((12, 60), name, fill=(20, 20, 20))
        d.text((12, 100), date, fill=(20, 20, 20))
        crop.save(crops / f"S{i}_label1.jpg")
        rec = {c: "" for c in COLUMNS}
        rec.update(
            file=str(root / f"S{i}.jpg"),
            specimen_id=f"S{i}",
            scientificName=name,
            stateProvince=state,
            eventDate=date,
            country=EVIL if i == 0 else "United States",
            needsReview=review,
            fieldConfidence=json.dumps(
                {"scientificName": 0.42 if review else 0.9, "eventDate": 0.55, "country": 0.95}
            ),
            labelBoxes=json.dumps(
                [{"box": [0, 0, 420, 160], "crop": f"S{i}_label1.jpg"}, {"crop": "../secret.jpg"}]
            ),
        )
        recs.append(rec)
    (folder / "secret.jpg").write_bytes(b"not yours")
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(recs[::-1])  # the record needing review comes second in the file
    return folder


@pytest.fixture
def screen_job(tmp_path) -> Path:
    return make_screen(tmp_path)


@pytest.fixture
def label_job(tmp_path) -> Path:
    return make_labels(tmp_path)


# -- the store -----------------------------------------------------------------------------


def test_store_keeps_every_decision_and_the_latest_is_current(tmp_path):
    s = DecisionStore(tmp_path / "d.sqlite")
    a = s.decide("a.jpg", "contaminated", reviewer="AB", model_id="m1", score=0.9)
    b = s.decide("a.jpg", "clean", reviewer="CD", note="ink, not mercury", score=0.9)
    s.decide("b.jpg", "unsure", reviewer="AB")
    cur = s.current()
    assert cur["a.jpg"]["decision"] == "clean" and cur["a.jpg"]["reviewer"] == "CD"
    assert cur["b.jpg"]["decision"] == "unsure"
    hist = s.history("a.jpg")
    assert [r["decision"] for r in hist] == ["contaminated", "clean"]
    assert hist[1]["prev"] == a["id"] and b["note"] == "ink, not mercury"
    assert a["model_id"] == "m1" and a["score"] == 0.9
    assert a["time"].endswith("Z") and a["time"][:2] == "20"
    with pytest.raises(ParameterError, match="decision must be one of"):
        s.decide("a.jpg", "maybe", reviewer="AB")
    with pytest.raises(ParameterError, match="reviewer"):
        s.decide("a.jpg", "clean", reviewer=" ")


def test_undo_restores_the_state_before_step_by_step_and_keeps_history(tmp_path):
    s = DecisionStore(tmp_path / "d.sqlite")
    s.decide("a.jpg", "contaminated", reviewer="AB", note="first")
    second = s.decide("a.jpg", "clean", reviewer="AB")
    u1 = s.undo("a.jpg", reviewer="AB", expected=second["id"])
    assert u1["decision"] == "contaminated" and u1["note"] == "first"
    assert u1["undoes"] == second["id"]
    u2 = s.undo("a.jpg", reviewer="AB")
    assert u2["decision"] == "" and s.current()["a.jpg"]["decision"] == ""
    with pytest.raises(Conflict, match="nothing to undo"):
        s.undo("a.jpg", reviewer="AB")
    assert len(s.history("a.jpg")) == 4  # nothing deleted
    # an undo aimed at a row someone else has replaced is refused
    mine = s.decide("b.jpg", "clean", reviewer="AB")
    s.decide("b.jpg", "contaminated", reviewer="CD")
    with pytest.raises(Conflict, match="changed meanwhile by CD"):
        s.undo("b.jpg", reviewer="AB", expected=mine["id"])
    assert s.current()["b.jpg"]["decision"] == "contaminated"


_WRITER = """
import os, signal, sys
from herbscan.review.store import DecisionStore
s = DecisionStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    s.decide(f"p{i % 7}.jpg", "clean", reviewer="proc")
os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown: what was committed must be there
"""


def test_two_writers_at_once_lose_nothing_and_a_killed_one_keeps_its_decisions(tmp_path):
    db = tmp_path / "review" / "decisions.sqlite"
    DecisionStore(db)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), "60"])
    stores = [DecisionStore(db), DecisionStore(db)]

    def work(k):
        for i in range(30):
            stores[k].decide(f"p{i % 7}.jpg", "contaminated", reviewer=f"T{k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    hist = DecisionStore(db).history()
    assert len(hist) == 120
    assert sorted({r["reviewer"] for r in hist}) == ["T0", "T1", "proc"]
    assert sum(r["reviewer"] == "proc" for r in hist) == 60
    assert len({r["id"] for r in hist}) == 120


def test_export_writes_current_decisions_and_escapes_formulas(tmp_path):
    s = DecisionStore(tmp_path / "d.sqlite")
    s.decide("/x/a.jpg", "contaminated", reviewer="AB", note="=HYPERLINK(1)", specimen_id="A1")
    s.decide("/x/a.jpg", "clean", reviewer="AB", specimen_id="A1", note="=HYPERLINK(1)")
    s.decide("/x/b.jpg", "clean", reviewer="AB")
    s.undo("/x/b.jpg", reviewer="AB")  # undecided again: not exported
    out = s.export_decisions(tmp_path / "decisions.csv")
    rows = _rows(out)
    assert [(r["path"], r["decision"], r["rows_in_history"]) for r in rows] == [
        ("/x/a.jpg", "clean", "2")
    ]
    assert rows[0]["note"] == "'=HYPERLINK(1)"
    assert read_decisions(out)[0]["note"] == "=HYPERLINK(1)"


def test_field_edits_record_confirmed_or_changed(tmp_path):
    s = DecisionStore(tmp_path / "d.sqlite")
    s.set_field("r1", "eventDate", "1961-07-04", original="1961-07-04", reviewer="AB")
    s.set_field("r1", "scientificName", "Lycopodium", original="Lycopodiurn", reviewer="AB")
    s.set_field(
        "r1", "scientificName", "Lycopodium annotinum", original="Lycopodiurn", reviewer="CD"
    )
    f = s.fields()["r1"]
    assert f["eventDate"]["action"] == "confirmed"
    assert f["scientificName"]["action"] == "changed"
    assert f["scientificName"]["value"] == "Lycopodium annotinum"


def test_a_file_that_is_not_a_store_is_one_clear_error(tmp_path):
    bad = tmp_path / "decisions.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(Exception, match="decision store"):
        DecisionStore(bad)


# -- learning from decisions -----------------------------------------------------------------


def test_uncertainty_is_the_log_odds_distance_to_the_operating_point():
    assert uncertainty(0.2, 0.2) == 0
    assert uncertainty(0.5, 0.5) == 0
    # with threshold 0.2, p=0.1 is nearer in evidence than p=0.4
    assert uncertainty(0.1, 0.2) < uncertainty(0.4, 0.2)
    assert uncertainty(float("nan"), 0.5) == float("inf")
    assert uncertainty_order([0.99, 0.52, 0.1, 0.45, float("nan")], 0.5) == [1, 3, 2, 0, 4]
    assert uncertainty_order([0.6, 0.9, 0.5], None, [0.3, 0.05, 0.45]) == [2, 0, 1]


def _manifest(tmp_path: Path, pos="contaminated", neg="clean", name="data.csv") -> Path:
    rows = [
        ("img/t1.jpg", neg, "T1", "train"),
        ("img/t2.jpg", pos, "T2", "train"),
        ("img/v1.jpg", neg, "V1", "validation"),
        ("img/x1.jpg", neg, "X1", "test"),
    ]
    p = tmp_path / name
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "specimen_id", "split"])
        w.writerows(rows)
    return p


def test_add_labels_joins_reviewed_sheets_and_never_touches_the_test_split(tmp_path):
    from herbscan.manifest import read_source

    data = _manifest(tmp_path)
    s = DecisionStore(tmp_path / "review" / "decisions.sqlite")
    img = tmp_path / "img"
    s.decide(str(img / "t1.jpg"), "contaminated", reviewer="AB", specimen_id="T1")  # relabel
    s.decide(str(img / "t2.jpg"), "contaminated", reviewer="AB", specimen_id="T2")  # confirm
    s.decide(str(img / "x1.jpg"), "contaminated", reviewer="AB", specimen_id="X1")  # test
    s.decide(str(img / "x1b.jpg"), "contaminated", reviewer="AB", specimen_id="X1")  # test spec.
    s.decide(str(img / "v1b.jpg"), "clean", reviewer="AB", specimen_id="V1")  # joins validation
    for i in range(20):
        s.decide(str(img / f"new{i}.jpg"), "contaminated", reviewer="AB", specimen_id=f"N{i}")
    s.decide(str(img / "u.jpg"), "unsure", reviewer="AB", specimen_id="U")
    dec = s.export_decisions(tmp_path / "review" / "decisions.csv")
    out = tmp_path / "review" / "merged.csv"
    summary = add_labels(data, dec, out)
    assert summary["reviewed"] == 26
    assert summary["relabelled"] == 1 and summary["confirmed"] == 1
    assert summary["left_in_test"] == 2 and summary["skipped_unsure"] == 1
    assert summary["added"] == summary["train"] + summary["validation"] == 21
    assert 1 <= summary["validation"] <= 10  # 1 by its specimen, ~20% of the 20 new
    assert json.loads(Path(str(out) + ".json").read_text())["relabelled"] == 1
    m = read_source(out)
    by = {m.path(r).resolve(): r for r in m.rows}
    assert by[(img / "t1.jpg").resolve()]["label"] == "contaminated"
    assert by[(img / "x1.jpg").resolve()]["label"] == "clean"  # test label as it was
    assert (img / "x1b.jpg").resolve() not in by
    assert by[(img / "v1b.jpg").resolve()]["split"] == "validation"
    assert [r["split"] for r in m.rows].count("test") == 1
    # the same decisions give the same splits (hash of the specimen, not a random draw)
    again = add_labels(data, dec, tmp_path / "review" / "merged2.csv")
    assert again["validation"] == summary["validation"]
    with pytest.raises(ParameterError, match="review_positive must be one of"):
        add_labels(data, dec, out, review_positive="stained")


def test_decisions_carry_the_label_they_mean_from_the_screen(tmp_path, serve):
    job = make_screen(tmp_path, positive="stained", negative="unstained")
    srv, c = serve(job)
    keys = [s.key for s in srv.app.job.sheets]
    assert c.json("POST", "/api/decide", {"key": keys[0], "decision": "contaminated"})[0] == 200
    assert c.json("POST", "/api/decide", {"key": keys[1], "decision": "clean"})[0] == 200
    assert c.json("POST", "/api/decide", {"key": keys[2], "decision": "unsure"})[0] == 200
    dec = job / "review" / "decisions.csv"
    rows = {r["specimen_id"]: (r["decision"], r["label"]) for r in _rows(dec)}
    assert rows == {
        "HS000": ("contaminated", "stained"),
        "HS001": ("clean", "unstained"),
        "HS002": ("unsure", ""),
    }
    # a manifest labelled like the screened run takes the labels as they are
    data = _manifest(tmp_path, "stained", "unstained")
    summary = add_labels(data, dec, tmp_path / "merged.csv")
    assert summary["added"] == 2
    from herbscan.manifest import read_source

    m = read_source(tmp_path / "merged.csv")
    got = {r["specimen_id"]: r["label"] for r in m.rows if r.get("review_decision")}
    assert got == {"HS000": "stained", "HS001": "unstained"}
    # a manifest that names its classes otherwise: one line naming its labels and the option
    other = _manifest(tmp_path, "mercury", "none", name="other.csv")
    with pytest.raises(ManifestError, match=r"labels mercury, none; pass review_positive="):
        add_labels(other, dec, tmp_path / "o.csv")
    summary = add_labels(
        other, dec, tmp_path / "o.csv", review_positive="mercury", review_negative="none"
    )
    m = read_source(tmp_path / "o.csv")
    got = {r["specimen_id"]: r["label"] for r in m.rows if r.get("review_decision")}
    assert got == {"HS000": "mercury", "HS001": "none"}


def test_a_sheet_is_placed_by_its_file_then_its_specimen_and_never_blindly(tmp_path):
    from herbscan.manifest import read_source

    data = _manifest(tmp_path)
    img = tmp_path / "img"
    s = DecisionStore(tmp_path / "review" / "decisions.sqlite")
    # the test sheet itself, under another id than the manifest's: its file decides
    s.decide(str(img / "x1.jpg"), "contaminated", reviewer="AB", specimen_id="OTHER")
    # a new image of no known specimen: could be the test specimen's second image
    s.decide(str(img / "x1-back.jpg"), "contaminated", reviewer="AB", specimen_id="")
    # new specimens: added, and counted as ids the manifest does not know
    s.decide(str(img / "n1.jpg"), "contaminated", reviewer="AB", specimen_id="N1")
    s.decide(str(img / "n1b.jpg"), "contaminated", reviewer="AB", specimen_id="N1")
    dec = s.export_decisions(tmp_path / "review" / "decisions.csv")
    summary = add_labels(data, dec, tmp_path / "merged.csv")
    m = read_source(tmp_path / "merged.csv")
    paths = {m.path(r).resolve(): r for r in m.rows}
    assert (img / "x1-back.jpg").resolve() not in paths  # neither in train nor in validation
    assert paths[(img / "x1.jpg").resolve()]["label"] == "clean"
    assert paths[(img / "n1.jpg").resolve()]["split"] == paths[(img / "n1b.jpg").resolve()]["split"]
    assert summary["left_in_test"] == 1 and summary["skipped_no_specimen"] == 1
    assert summary["added"] == 2 and summary["specimens_not_in_manifest"] == 1
    # a manifest without specimen ids: every image is its own specimen, so it is added
    plain = tmp_path / "plain.csv"
    plain.write_text("path,label,split\nimg/a.jpg,clean,train\nimg/b.jpg,contaminated,test\n")
    summary = add_labels(plain, dec, tmp_path / "merged2.csv")
    assert summary["skipped_no_specimen"] == 0 and summary["added"] == 4


def test_a_run_of_several_classes_needs_the_label_of_a_clean_decision(tmp_path):
    s = DecisionStore(tmp_path / "review" / "decisions.sqlite")
    s.set_labels({"contaminated": "contaminated", "clean": ""})  # 3 classes: clean is no one
    s.decide(str(tmp_path / "img" / "n.jpg"), "clean", reviewer="AB", specimen_id="N")
    dec = s.export_decisions(tmp_path / "review" / "decisions.csv")
    data = _manifest(tmp_path)
    with pytest.raises(ManifestError, match="no one label .* pass review_negative=LABEL"):
        add_labels(data, dec, tmp_path / "o.csv")
    assert add_labels(data, dec, tmp_path / "o.csv", review_negative="clean")["reviewed"] == 1


def test_add_labels_needs_a_split_manifest_and_a_decisions_file(tmp_path):
    data = tmp_path / "nosplit.csv"
    data.write_text("path,label\na.jpg,clean\nb.jpg,contaminated\n")
    dec = tmp_path / "decisions.csv"
    dec.write_text("path,decision\na.jpg,clean\n")
    with pytest.raises(ManifestError, match="no split column"):
        add_labels(data, dec, tmp_path / "o.csv")
    with pytest.raises(ManifestError, match="no such decisions file"):
        read_decisions(tmp_path / "missing.csv")


def test_train_add_labels_records_and_reports_the_reviewed_sheets(tiny_collection, tmp_path):
    import shutil

    from herbscan.evaluate import evaluate
    from herbscan.manifest import read_source, split
    from herbscan.train import train

    data, _ = split(tiny_collection, tmp_path / "split.csv", ratios=(0.6, 0.2, 0.2), seed=1)
    m = read_source(data)
    test_row = next(r for r in m.rows if r["split"] == "test")
    s = DecisionStore(tmp_path / "review" / "decisions.sqlite")
    new = tmp_path / "new"
    new.mkdir()
    for i, src in enumerate(sorted((tiny_collection / "contaminated").glob("*.jpg"))[:4]):
        shutil.copy(src, new / f"n{i}.jpg")
        s.decide(str(new / f"n{i}.jpg"), "contaminated", reviewer="AB", specimen_id=f"N{i}")
    s.decide(str(m.path(test_row).resolve()), "clean", reviewer="AB")  # stays in test
    s.decide(str(new / "u.jpg"), "unsure", reviewer="AB", specimen_id="U")
    dec = s.export_decisions(tmp_path / "review" / "decisions.csv")
    run = train(
        data,
        tmp_path / "run",
        epochs=1,
        model="herbnet_small",
        size=64,
        batch_size=8,
        workers=1,
        progress=False,
        precision="fp32",
        add_labels=dec,
    )
    cfg = json.loads((run / "run.json").read_text())
    got = cfg["training"]["reviewed_labels"]
    assert got["added"] == got["train"] + got["validation"] == 4
    assert got["left_in_test"] == 1 and got["skipped_unsure"] == 1
    assert got["source"] == str(dec)
    assert cfg["training"]["data"] == str((tmp_path / "review" / "split+reviewed.csv").resolve())
    assert cfg["training"]["n_train"] + cfg["training"]["n_validation"] == 22 + 4
    evaluate(run, out=tmp_path / "eval", progress=False, precision="fp32")
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "4 reviewed sheets were added to training" in report


def test_cli_train_passes_add_labels_to_the_library(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import herbscan.train
    from herbscan.cli import app

    seen = {}

    def fake_train(data, out, **kw):  # the library merges; the CLI only passes it on
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(herbscan.train, "train", fake_train)
    dec = tmp_path / "decisions.csv"
    r = CliRunner().invoke(
        app,
        ["train", "d.csv", "--out", "r", "--add-labels", str(dec), "--review-positive", "st"],
    )
    assert r.exit_code == 0, r.output
    assert seen["add_labels"] == dec and seen["review_positive"] == "st"
    assert seen["review_negative"] is None


# -- job queues -------------------------------------------------------------------------------


def test_queues_of_a_screen(screen_job):
    probable = load_sheets(screen_job)
    assert [s.score for s in probable.sheets] == [0.97, 0.81, 0.55]
    assert probable.sheets[0].picture is not None  # a PNG heatmap
    assert probable.sheets[1].picture is None  # a JPEG thumbnail is no overlay
    assert probable.sheets[0].metadata["family"] == EVIL
    uncertain = load_sheets(screen_job, queue="uncertain")
    assert [s.score for s in uncertain.sheets] == [0.55, 0.30, 0.81, 0.97]
    with pytest.raises(ParameterError, match="queue must be one of"):
        load_sheets(screen_job, queue="oldest")
    with pytest.raises(ManifestError, match="not a screen folder"):
        load_sheets(screen_job / "pictures")


def test_a_corrupt_screen_folder_is_one_line_naming_the_file_and_the_fix(
    screen_job, monkeypatch, capsys
):
    from herbscan.cli import main

    state = (screen_job / "screen.json").read_text()
    for bad in ('{"complete": true, "classes": [', "[1, 2]"):  # cut short; not an object
        (screen_job / "screen.json").write_text(bad)
        with pytest.raises(ManifestError, match=r"screen\.json: .*screen .* again"):
            load_sheets(screen_job)
    monkeypatch.setattr(sys, "argv", ["herbscan", "review", str(screen_job), "--no-open"])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    assert stop.value.code == 2 and "Traceback" not in out.err + out.out
    assert len((out.err + out.out).strip().splitlines()) == 1 and "screen.json" in out.err + out.out
    (screen_job / "screen.json").write_text(state)
    (screen_job / "flagged.csv").write_text("file,score\na.jpg,0.9\n")  # no path column
    with pytest.raises(ManifestError, match=r"flagged\.csv: no path column.*--resume"):
        load_sheets(screen_job)
    (screen_job / "results.csv").write_bytes(b"path,score\n\xff\xfe.jpg,0.9\n")  # not UTF-8
    with pytest.raises(ManifestError, match=r"results\.csv: not UTF-8.*--resume"):
        load_sheets(screen_job, queue="uncertain")


def test_relative_sheet_paths_are_found_from_the_screen_source(tmp_path, monkeypatch):
    src = tmp_path / "coll" / "data"
    src.mkdir(parents=True)
    (src / "a.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "coll")
    assert locate("data/a.jpg", src) == (src / "a.jpg").resolve()
    monkeypatch.chdir(tmp_path)
    assert locate("../x/data/a.jpg", src) == (src / "a.jpg").resolve()


def test_label_queue_puts_fields_to_review_first_and_only_its_own_crops(label_job):
    job = load_labels(label_job)
    assert [r.specimen_id for r in job.records] == ["S0", "S1"]
    assert job.records[0].needs_review == ["scientificName", "eventDate"]
    assert [p.name for p in job.records[0].crops] == ["S0_label1.jpg"]  # not ../secret.jpg


# -- Deep Zoom tiles -----------------------------------------------------------------------------


def test_deep_zoom_levels_tiles_and_cache(tmp_path):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 1000, 3), np.uint8))
    im.save(tmp_path / "s.jpg", quality=92)
    dz = DeepZoom(tmp_path / "s.jpg", tmp_path / "tiles")
    assert dz.size == (1000, 700) and dz.max_level == 10
    assert 'Width="1000" Height="700"' in dz.descriptor()
    assert dz.grid(10) == (4, 3) and dz.level_size(9) == (500, 350) and dz.grid(0) == (1, 1)
    t = Image.open(io.BytesIO(dz.tile(10, 1, 1)))
    assert t.size == (254 + 2, 254 + 2)  # overlap on both sides
    last = Image.open(io.BytesIO(dz.tile(10, 3, 2)))
    assert last.size == (1000 - 3 * 254 + 1, 700 - 2 * 254 + 1)
    assert Image.open(io.BytesIO(dz.tile(0, 0, 0))).size == (1, 1)
    assert (tmp_path / "tiles" / "10" / "1_1.jpeg").is_file()
    full = np.asarray(dz._level_image(10), np.float32)
    decoded = np.asarray(Image.open(tmp_path / "s.jpg").convert("RGB"), np.float32)
    assert np.abs(full - decoded).max() == 0  # the top level is the sheet itself
    for bad in ((11, 0, 0), (10, 4, 0), (10, 0, 3), (-1, 0, 0)):
        with pytest.raises(TileError):
            dz.tile(*bad)


def test_deep_zoom_follows_exif_orientation(tmp_path):
    im = Image.new("RGB", (800, 400), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    im.save(tmp_path / "r.jpg", exif=exif)
    dz = DeepZoom(tmp_path / "r.jpg")
    assert dz.size == (400, 800)
    assert dz._level_image(dz.max_level).size == (400, 800)


def test_one_worker_decodes_only_the_sheet_asked_for_last(screen_job, monkeypatch):
    from herbscan.review.server import ReviewApp

    started, gate, done = threading.Event(), threading.Event(), []

    def slow_decode(self):  # a 4000×6000 sheet takes a while: the first holds the worker
        started.set()
        gate.wait(10)
        done.append((self.path.name, threading.current_thread().name))

    monkeypatch.setattr(DeepZoom, "prefetch", slow_decode)
    app = ReviewApp(screen_job, reviewer="AB")
    keys = [s.key for s in app.job.sheets]
    before = threading.active_count()
    try:
        app.prefetch(keys[0])
        assert started.wait(10)
        for k in (keys[1], keys[2], keys[1], keys[2]):  # a reviewer paging fast
            app.prefetch(k)
        assert threading.active_count() <= before + 1
        gate.set()
        end = time.monotonic() + 10
        while len(done) < 2 and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.2)
        assert [name for name, _ in done] == ["HS000.jpg", "HS002.jpg"]
        assert len({thread for _, thread in done}) == 1
    finally:
        app.close()


# -- the HTTP endpoints ---------------------------------------------------------------------------


class Client:
    def __init__(self, server):
        self.host, self.port = server.server_address[:2]
        self.csrf = server.app.csrf

    def request(self, method, path, body=None, headers=None, csrf=True):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        h = dict(headers or {})
        if method == "POST" and csrf:
            h.setdefault("X-CSRF-Token", self.csrf)
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data

    def json(self, method, path, body=None, **kw):
        status, _, data = self.request(method, path, body, **kw)
        return status, json.loads(data)


@pytest.fixture
def serve():
    servers = []

    def start(folder, **kw):
        srv = make_server(folder, port=0, reviewer="AB", **kw)
        threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(srv)
        return srv, Client(srv)

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_sheet_endpoints_decide_undo_export_and_tiles(screen_job, serve):
    srv, c = serve(screen_job)
    status, headers, page = c.request("GET", "/")
    assert status == 200 and srv.app.csrf.encode() in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    status, job = c.json("GET", "/api/job")
    keys = [s["key"] for s in job["sheets"]]
    assert status == 200 and len(keys) == 3 and job["model_id"] == "model-abc"
    assert job["sheets"][0]["metadata"]["family"] == EVIL  # data in JSON, never HTML
    assert EVIL.encode() not in page
    status, row = c.json("POST", "/api/decide", {"key": keys[0], "decision": "contaminated"})
    assert status == 200 and row["reviewer"] == "AB" and row["score"] == 0.97
    assert row["model_id"] == "model-abc" and row["key"] == keys[0]
    rows = _rows(screen_job / "review" / "decisions.csv")
    assert [(r["specimen_id"], r["decision"]) for r in rows] == [("HS000", "contaminated")]
    status, undone = c.json("POST", "/api/undo", {"key": keys[0], "expected": row["id"]})
    assert status == 200 and undone["decision"] == "" and undone["undoes"] == row["id"]
    status, err = c.json("POST", "/api/undo", {"key": keys[0], "expected": row["id"]})
    assert status == 409
    status, since = c.json("GET", f"/api/decisions?since={row['id']}")
    assert [d["id"] for d in since["decisions"]] == [undone["id"]]
    # Deep Zoom: descriptor, a full-resolution tile, cached in the job folder
    status, _, dzi = c.request("GET", f"/dzi/{keys[0]}.dzi")
    assert status == 200 and b'Width="600" Height="900"' in dzi
    status, headers, tile = c.request("GET", f"/dzi/{keys[0]}_files/10/1_2.jpeg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tile)).size == (256, 256)
    assert (screen_job / "review" / "tiles" / keys[0] / "10" / "1_2.jpeg").is_file()
    status, _, png = c.request("GET", f"/heatmap/{keys[0]}.png")
    assert status == 200 and png.startswith(b"\x89PNG")
    assert c.request("GET", f"/heatmap/{keys[1]}.png")[0] == 404
    status, _, js = c.request("GET", "/static/openseadragon/openseadragon.min.js")
    assert status == 200 and b"openseadragon 6.1.1" in js


OUTSIDE = [
    "/static/../../screen.json",
    "/static/..%2f..%2fscreen.json",
    "/static//etc/passwd",
    "/dzi/../../screen.json",
    "/dzi/0123456789abcdef0123.dzi",  # a key of no sheet of the job
    "/dzi/KEY_files/10/99_0.jpeg",
    "/dzi/KEY_files/11/0_0.jpeg",
    "/dzi/KEY_files/99/0_0.jpeg",
    "/dzi/KEY_files/-1/0_0.jpeg",
    "/dzi/KEY_files/10/1_1.png",
    "/heatmap/../screen.json",
    "/crop/KEY/0.jpg",
    "/nothing",
]


def test_paths_outside_the_job_are_not_served(screen_job, serve):
    srv, c = serve(screen_job)
    key = srv.app.job.sheets[0].key
    for path in OUTSIDE:
        status, _, body = c.request("GET", path.replace("KEY", key))
        assert status in (400, 404), (path, status, body)
        assert b"model-abc" not in body and b"root:" not in body


def test_malformed_requests_get_4xx_and_the_server_goes_on(screen_job, serve):
    srv, c = serve(screen_job)
    key = srv.app.job.sheets[0].key
    ok = {"key": key, "decision": "clean"}
    assert c.request("POST", "/api/decide", ok, csrf=False)[0] == 403
    assert c.request("POST", "/api/decide", ok, headers={"X-CSRF-Token": "nope"})[0] == 403
    assert c.request("POST", "/api/decide", b"{not json")[0] == 400
    assert c.request("POST", "/api/decide", b"\xff\xfe\x00")[0] == 400
    assert c.request("POST", "/api/decide", [1, 2])[0] == 400
    assert c.request("POST", "/api/decide", {"key": key, "decision": "burn"})[0] == 400
    assert c.request("POST", "/api/decide", {"key": "../../etc", "decision": "clean"})[0] == 404
    assert c.request("POST", "/api/decide", {**ok, "note": "x" * 3000})[0] == 400
    assert c.request("POST", "/api/decide", {**ok, "reviewer": 5})[0] == 400
    assert c.request("POST", "/api/undo", {"key": key, "expected": "x"})[0] == 400
    assert c.request("POST", "/api/nothing", {})[0] == 404
    assert c.request("POST", "/api/decide", b"x" * 70_000)[0] == 413
    assert c.request("GET", "/api/decisions?since=abc")[0] == 400
    assert c.request("GET", "/", headers={"Host": "evil.example:80"})[0] == 403
    # raw garbage on the socket, a lying Content-Length, a silent client
    for raw in (
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ):
        with socket.create_connection(srv.server_address[:2], timeout=5) as s:
            s.sendall(raw)
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 4") or b"Error code: 400" in answer, answer
    assert c.request("GET", "/api/job")[0] == 200
    assert srv.app.store.history() == []  # none of it was a decision


def _raw(srv, data: bytes) -> bytes:
    """Send bytes as they are on a new connection; the answer's first bytes."""
    with socket.create_connection(srv.server_address[:2], timeout=5) as s:
        s.sendall(data)
        return s.recv(4096)


def test_odd_lengths_query_fields_ids_and_nesting_get_400_not_500(screen_job, serve, capfd):
    srv, c = serve(screen_job)
    key = srv.app.job.sheets[0].key
    head = f"Host: 127.0.0.1\r\nX-CSRF-Token: {srv.app.csrf}\r\n".encode()
    deep = b"[" * 30_000 + b"]" * 30_000
    nested = b'{"key": "' + key.encode() + b'", "decision": ' + deep + b"}"
    many = "&".join(f"f{i}=1" for i in range(25))
    huge = b'{"key": "' + key.encode() + b'", "expected": ' + b"7" * 5000 + b"}"
    for raw in (
        # a digit that is not 0-9 (latin-1 superscript two): isdigit() says yes, int() no
        b"POST /api/decide HTTP/1.1\r\n" + head + b"Content-Length: \xb2\r\n\r\nxx",
        b"POST /api/decide HTTP/1.1\r\n" + head + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
        f"GET /api/job?{many} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        b"GET /api/decisions?since=" + b"9" * 30 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/decisions?since=-" + b"9" * 30 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /api/decide HTTP/1.1\r\n"
        + head
        + f"Content-Length: {len(deep)}\r\n\r\n".encode()
        + deep,
        b"POST /api/decide HTTP/1.1\r\n"
        + head
        + f"Content-Length: {len(nested)}\r\n\r\n".encode()
        + nested,
        b"POST /api/undo HTTP/1.1\r\n"
        + head
        + f"Content-Length: {len(huge)}\r\n\r\n".encode()
        + huge,
    ):
        answer = _raw(srv, raw)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), (raw[:60], answer[:200])
    assert c.request("GET", "/api/job")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
    assert srv.app.store.history() == []


def test_a_client_gone_before_its_error_is_sent_is_dropped_quietly(
    screen_job, serve, capfd, monkeypatch
):
    from herbscan.review.server import Handler

    srv, c = serve(screen_job)
    sent = Handler._json

    def gone(self, status, obj):
        if status >= 400:
            raise BrokenPipeError(32, "Broken pipe")
        return sent(self, status, obj)

    monkeypatch.setattr(Handler, "_json", gone)
    answer = _raw(srv, b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer == b""  # closed without an answer: the client is gone anyway
    monkeypatch.setattr(Handler, "_json", sent)
    assert c.request("GET", "/api/job")[0] == 200
    assert "Traceback" not in capfd.readouterr().err


def test_a_token_guards_every_request_when_set(screen_job, serve):
    srv, c = serve(screen_job, token="s3cret-token")
    assert srv.url.endswith("/?token=s3cret-token")
    assert c.request("GET", "/")[0] == 403
    assert c.request("GET", "/api/job")[0] == 403
    assert c.request("GET", "/?token=wrong")[0] == 403
    status, headers, _ = c.request("GET", "/?token=s3cret-token")
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    assert c.request("GET", "/api/job", headers=jar)[0] == 200
    assert c.request("GET", "/api/job", headers={"Cookie": "herbscan_token=x"})[0] == 403
    assert c.request("GET", "/api/job", headers={"Cookie": '"\\bad'})[0] == 403


def test_other_hosts_than_loopback_get_a_token(screen_job):
    srv = make_server(screen_job, host="0.0.0.0", port=0)
    try:
        assert srv.app.token and f"?token={srv.app.token}" in srv.url
    finally:
        srv.server_close()
    srv = make_server(screen_job, port=0)
    try:
        assert srv.app.token is None and srv.url.startswith("http://127.0.0.1:")
    finally:
        srv.server_close()


def test_label_endpoints_edit_and_export(label_job, serve):
    srv, c = serve(label_job)
    status, job = c.json("GET", "/api/job")
    assert job["kind"] == "labels" and [r["specimen_id"] for r in job["records"]] == ["S0", "S1"]
    key = job["records"][0]["key"]
    assert c.request("GET", f"/crop/{key}/0.jpg")[0] == 200
    assert c.request("GET", f"/crop/{key}/1.jpg")[0] == 404  # ../secret.jpg is not served
    status, row = c.json(
        "POST",
        "/api/field",
        {"key": key, "field": "scientificName", "value": "Lycopodium annotinum L. ssp. alpestre"},
    )
    assert status == 200 and row["action"] == "changed"
    status, row = c.json(
        "POST", "/api/field", {"key": key, "field": "eventDate", "value": "1961-07-04"}
    )
    assert row["action"] == "confirmed"
    assert c.request("POST", "/api/field", {"key": key, "field": "path", "value": "x"})[0] == 400
    assert c.request("POST", "/api/field", {"key": key, "field": ["x"], "value": "x"})[0] == 400
    status, out = c.json("POST", "/api/export-labels", {})
    assert out["records"] == 1
    rows = _rows(out["path"])
    assert rows[0]["scientificName"] == "Lycopodium annotinum L. ssp. alpestre"
    assert rows[0]["changedFields"] == "scientificName"
    assert rows[0]["confirmedFields"] == "eventDate"
    assert rows[0]["needsReview"] == ""
    assert rows[0]["reviewedBy"] == "AB" and rows[0]["country"].startswith("<script>")
    status, job = c.json("GET", "/api/job")
    assert job["records"][0]["reviewed"]["eventDate"]["action"] == "confirmed"


def test_records_without_a_file_stay_apart_and_the_export_is_for_import(label_job, serve):
    rows = _rows(label_job / "labels.csv")
    for r in rows:
        r["file"] = ""  # a transcription of sheets it could not name
    with open(label_job / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    job = load_labels(label_job)
    assert len({r.key for r in job.records}) == 2 and len(job.by_key) == 2
    srv, c = serve(label_job)
    key = srv.app.job.records[0].key
    value = "=Lycopodium annotinum"  # a value as typed, not a formula to guard against
    status, _ = c.json(
        "POST", "/api/field", {"key": key, "field": "scientificName", "value": value}
    )
    assert status == 200
    _, info = c.json("GET", "/api/job")
    assert [bool(r["reviewed"]) for r in info["records"]] == [True, False]
    status, out = c.json("POST", "/api/export-labels", {})
    assert out["records"] == 1
    exported = _rows(out["path"])
    assert exported[0]["scientificName"] == value  # for database import: no leading '
    assert exported[0]["specimen_id"] == "S0" and exported[0]["file"] == ""


def test_two_servers_on_one_folder_see_each_others_decisions(screen_job, serve):
    a, ca = serve(screen_job)
    b, cb = serve(screen_job)
    keys = [s.key for s in a.app.job.sheets]
    errors = []

    def decide(client, who):
        for i in range(15):
            status, _ = client.json(
                "POST", "/api/decide", {"key": keys[i % 3], "decision": "clean", "reviewer": who}
            )
            if status != 200:
                errors.append(status)

    ts = [threading.Thread(target=decide, args=(c, w)) for c, w in ((ca, "A"), (cb, "B"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    status, seen = cb.json("GET", "/api/decisions?since=0")
    assert len(seen["decisions"]) == 30
    assert {d["reviewer"] for d in seen["decisions"]} == {"A", "B"}


def test_add_labels_reads_the_store_not_a_stale_csv(screen_job, serve, tmp_path):
    import shutil

    srv, c = serve(screen_job)
    keys = [s.key for s in srv.app.job.sheets]
    assert c.json("POST", "/api/decide", {"key": keys[0], "decision": "contaminated"})[0] == 200
    # another server process on the folder decides; its export of decisions.csv has not
    # happened yet (or lost the race to this one's)
    other = DecisionStore(screen_job / "review" / "decisions.sqlite")
    other.decide(str(srv.app.job.sheets[1].path), "clean", reviewer="CD", specimen_id="HS001")
    dec = screen_job / "review" / "decisions.csv"
    assert [r["specimen_id"] for r in _rows(dec)] == ["HS000"]  # the stale snapshot
    for given in (dec, screen_job / "review", screen_job / "review" / "decisions.sqlite"):
        got = {r["specimen_id"]: (r["decision"], r["label"]) for r in read_decisions(given)}
        assert got == {"HS000": ("contaminated", "contaminated"), "HS001": ("clean", "clean")}
    summary = add_labels(_manifest(tmp_path), dec, tmp_path / "merged.csv")
    assert summary["reviewed"] == 2 and summary["added"] == 2
    # a copy under another name is read as it is
    shutil.copy(dec, screen_job / "review" / "edited.csv")
    assert len(read_decisions(screen_job / "review" / "edited.csv")) == 1
    # exports hold the write lock, so the file written last has the latest decisions
    srv.app.export_decisions()
    assert [r["specimen_id"] for r in _rows(dec)] == ["HS000", "HS001"]


def test_cli_review_needs_a_job_folder(tmp_path):
    from typer.testing import CliRunner

    from herbscan.cli import app

    r = CliRunner().invoke(app, ["review", str(tmp_path / "nope"), "--no-open"])
    assert r.exit_code != 0
    assert "no such folder" in str(r.exception) or "no such folder" in r.output


def test_static_files_carry_the_openseadragon_licence():
    from herbscan.review.server import _static_files

    files = _static_files()
    assert "openseadragon/openseadragon.min.js" in files
    assert "BSD" in files["openseadragon/VENDORED.md"].read_text()
    assert "Redistribution and use" in files["openseadragon/LICENSE.txt"].read_text()
    assert {"sheets.html", "labels.html", "sheets.js", "labels.js", "common.js"} <= set(files)
    for js in ("sheets.js", "labels.js", "common.js"):
        assert "innerHTML" not in files[js].read_text()  # values go in as text, never HTML
