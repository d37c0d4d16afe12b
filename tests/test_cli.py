"""The CLI: thin commands, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from herbscan.cli import main


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["herbscan", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_help_is_fast_and_lists_commands():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from herbscan.cli import main; "
            "sys.argv=['herbscan','--help']\ntry: main()\nexcept SystemExit: pass\n"
            "print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for cmd in ("split", "train", "evaluate", "predict", "demo"):
        assert cmd in r.stdout
    assert r.stdout.strip().endswith("False")  # torch not imported for --help


def test_split_prints_counts(monkeypatch, capsys, tiny_collection, tmp_path):
    code, out, _ = _run(monkeypatch, capsys, "split", tiny_collection, "--out", tmp_path / "s.csv")
    assert code in (0, None)
    lines = out.splitlines()
    assert lines[0].split() == ["class", "train", "validation", "test"]
    assert lines[1].split() == ["clean", "10", "3", "1"]
    assert (tmp_path / "s.csv").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["split", "{tmp}/nope.csv", "--out", "{tmp}/o.csv"], "nope.csv: no such file or folder"),
        (
            ["split", "{coll}", "--out", "{tmp}/o.csv", "--ratios", "0.7,0.3"],
            "ratios must be three",
        ),
        (["evaluate", "{tmp}"], "not a herbscan run"),
        (["predict", "{tmp}/nothing", "x.jpg"], "no such run folder"),
        (["train", "{coll}", "--out", "{tmp}/r"], "no 'split' column"),
        (
            ["split", "{tmp}/m.csv", "--out", "{tmp}/o.csv", "--label-col", "genus"],
            "no column 'genus'",
        ),
        (["split", "{coll}", "--out", "{tmp}"], "Is a directory"),
    ],
)
def test_errors_are_one_line_exit_2(monkeypatch, capsys, tiny_collection, tmp_path, args, needle):
    (tmp_path / "m.csv").write_text("path,label\na.jpg,x\n")
    args = [a.format(tmp=tmp_path, coll=tiny_collection) for a in args]
    code, out, err = _run(monkeypatch, capsys, *args)
    assert code == 2
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_option_is_usage_error(monkeypatch, capsys):
    code, _, err = _run(monkeypatch, capsys, "split", "--bogus")
    assert code == 2 and "bogus" in err


def test_tiles_command_writes_index_and_summary(monkeypatch, capsys, tiny_collection, tmp_path):
    code, out, _ = _run(
        monkeypatch, capsys, "tiles", tiny_collection, "--out", tmp_path / "t", "--tile-size", "32"
    )
    assert code in (0, None)
    assert "28 sheets (0 failed)" in out and "auto entropy threshold" in out
    for name in ("index.parquet", "summary.json", "entropy.png"):
        assert (tmp_path / "t" / name).is_file()


def test_cli_and_library_default_to_the_same_model():
    import inspect

    from herbscan import cli
    from herbscan.train import DEFAULT_MODEL, train

    assert (
        cli.DEFAULT_MODEL == DEFAULT_MODEL == inspect.signature(train).parameters["model"].default
    )


def test_train_ends_with_best_epoch_validation_accuracy_and_baseline(
    monkeypatch, capsys, tiny_collection, tmp_path
):
    from herbscan.manifest import split

    data, _ = split(tiny_collection, tmp_path / "s.csv", seed=1)
    args = ["train", data, "--out", tmp_path / "r", "--model", "herbnet_small", "--size", "64"]
    code, out, err = _run(monkeypatch, capsys, *args, "--epochs", "2", "--workers", "1")
    assert code in (0, None), err
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"run saved in {tmp_path / 'r'}: best epoch ")
    assert " of 2, validation accuracy " in line
    assert "(always answering the most common class: 0.500, n=6)" in line
