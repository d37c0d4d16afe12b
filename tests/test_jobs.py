"""The job engine: fixed inputs, atomic units, exactly-once resume, refused option changes."""

import json

import pytest

from herbscan.errors import RunError
from herbscan.jobs import Job


def _open(folder, rows, resume=False, **options):
    return Job.open(
        folder,
        options=options or {"model": "m1"},
        start=lambda: (rows, ["path", "specimen_id"], {"note": "kept"}),
        resume=resume,
        unit_size=3,
    )


def test_units_are_done_once_and_inputs_stay_fixed(tmp_path):
    rows = [{"path": f"s{i}.jpg", "specimen_id": str(i)} for i in range(8)]
    job = _open(tmp_path / "j", rows)
    assert job.n_units == 3 and [len(job.unit_rows(k)) for k in range(3)] == [3, 3, 2]
    assert job.state["note"] == "kept" and job.state["options"] == {"model": "m1"}
    seen = []

    def process(k, part):
        if k == 1:
            raise KeyboardInterrupt  # stopped part way: unit 0 is saved, 1 and 2 are not
        seen.extend(r["path"] for r in part)
        job.save_records(k, [{"file": r["path"]} for r in part])

    with pytest.raises(KeyboardInterrupt):
        job.run(process, progress=False)
    assert job.todo() == [1, 2]
    # a resume reads the inputs fixed at the start, not the (changed) source
    again = _open(tmp_path / "j", rows[:2], resume=True)
    assert [r["path"] for r in again.rows] == [r["path"] for r in rows]

    def finish(k, part):
        seen.extend(r["path"] for r in part)
        again.save_records(k, [{"file": r["path"]} for r in part])

    again.run(finish, progress=False)
    assert seen == [r["path"] for r in rows]  # every input exactly once, in order
    assert again.todo() == [] and not list((tmp_path / "j" / "units").glob(".*"))
    state = again.finish({"done": 8})
    assert json.loads((tmp_path / "j" / "job.json").read_text())["complete"] is state["complete"]


def test_resume_is_refused_without_the_flag_or_with_other_options(tmp_path):
    rows = [{"path": "a.jpg", "specimen_id": "a"}]
    _open(tmp_path / "j", rows)
    with pytest.raises(RunError, match="--resume"):
        _open(tmp_path / "j", rows)
    with pytest.raises(RunError, match="started with model 'm1', not 'm2'") as e:
        _open(tmp_path / "j", rows, resume=True, model="m2")
    assert str(tmp_path / "j") in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "j" / "inputs.csv").write_text("path,specimen_id\n", encoding="utf-8")
    with pytest.raises(RunError, match="cut short"):
        _open(tmp_path / "j", rows, resume=True)
