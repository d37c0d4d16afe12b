"""The install chooses its PyTorch build (scripts/pip_args.sh, the Makefile) and the demo ends by
saying where its report is and what to type next. Nothing here downloads anything: the script
runs with a faked platform (uname), a faked GPU (nvidia-smi) and faked pip settings, and make
only prints its commands (-n)."""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pip_args.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_ARGS = f"--extra-index-url {CPU_INDEX} -c constraints-cpu.txt"


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake(tmp_path):
    """A fake bin folder first on PATH: uname says Linux x86_64 and nvidia-smi finds no GPU
    (it shadows a real one, and the /proc check is skipped while nvidia-smi is on PATH)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()

    def platform(system: str, machine: str = "x86_64") -> None:
        _tool(bin_, "uname", f'case "$1" in -m) echo {machine} ;; *) echo {system} ;; esac')

    def gpu(present: bool) -> None:
        _tool(
            bin_,
            "nvidia-smi",
            "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'"
            if present
            else "echo 'NVIDIA-SMI has failed: no NVIDIA driver' >&2; exit 9",
        )

    platform("Linux")
    gpu(False)
    # pip's settings come only from what a test sets: no config files, no PIP_* variables
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "TORCH"}
    env.update(
        PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}",
        PIP_CONFIG_FILE=os.devnull,
        PY=sys.executable,
        HOME=str(tmp_path / "home"),
    )

    def run(*args: str, cwd: Path = ROOT, **extra: str) -> str:
        done = subprocess.run(
            ["sh", str(SCRIPT), *args],
            check=False,
            cwd=cwd,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    run.platform, run.gpu, run.env, run.tmp = platform, gpu, env, tmp_path
    return run


def test_linux_without_gpu_takes_the_cpu_build(fake):
    assert fake("--mode") == "cpu"
    assert fake() == CPU_ARGS
    assert "CPU build" in fake("--describe")


def test_cpu_constraint_is_the_cpu_build_of_the_pinned_torch():
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)[1]
    cpu = re.search(r"^torch==(\S+)$", (ROOT / "constraints-cpu.txt").read_text(), re.MULTILINE)[1]
    assert cpu == f"{pinned}+cpu"
    # PEP 440: the plain pin (pyproject, constraints.txt) accepts the +cpu build, and the +cpu pin
    # refuses PyPI's build, so an unreachable CPU index fails instead of downloading CUDA
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(f"=={pinned}").contains(cpu)
    assert not SpecifierSet(f"=={cpu}").contains(pinned)


def test_outside_the_repo_the_constraint_path_is_absolute(fake, tmp_path):
    assert fake(cwd=tmp_path) == f"--extra-index-url {CPU_INDEX} -c {ROOT / 'constraints-cpu.txt'}"


def test_linux_with_an_nvidia_gpu_takes_pypi_cuda_build(fake):
    fake.gpu(True)
    assert fake("--mode") == "cuda"
    assert fake() == ""
    assert "CUDA" in fake("--describe")


def test_linux_arm_without_gpu_takes_the_cpu_build(fake):
    fake.platform("Linux", "aarch64")
    assert fake() == CPU_ARGS


@pytest.mark.parametrize("system", ["Darwin", "MINGW64_NT-10.0-19045", "MSYS_NT-10.0"])
def test_macos_and_windows_take_pypi_wheels(fake, system):
    fake.platform(system, "arm64" if system == "Darwin" else "x86_64")
    for torch in ("auto", "cpu", "pip"):
        assert fake(TORCH=torch) == "", torch
    assert fake("--mode") == "pip"
    assert "PyPI" in fake("--describe")


@pytest.mark.parametrize(
    "setting",
    [
        "extra-index-url = file:///opt/pypi/simple",
        "index-url = https://mirror.example/simple",
        "find-links = /opt/wheels",
        "constraint = /etc/pip-constraints.txt",
        "no-index = true",
    ],
)
def test_a_pip_config_that_names_an_index_decides(fake, setting):
    conf = fake.tmp / "pip.conf"
    conf.write_text(f"[global]\n{setting}\n")
    assert fake("--mode", PIP_CONFIG_FILE=str(conf)) == "pip"
    assert fake(PIP_CONFIG_FILE=str(conf)) == ""
    fake.gpu(True)
    assert fake("--mode", PIP_CONFIG_FILE=str(conf)) == "pip"


@pytest.mark.parametrize(
    "var",
    ["PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX"],
)
def test_pip_variables_that_name_an_index_decide(fake, var):
    assert fake("--mode", **{var: "/opt/wheels"}) == "pip"


def test_unrelated_pip_settings_do_not_decide(fake):
    assert fake("--mode", PIP_DEFAULT_TIMEOUT="60", PIP_DISABLE_PIP_VERSION_CHECK="1") == "cpu"


def test_without_a_working_pip_the_settings_are_read_here(fake):
    conf = fake.tmp / "pip.conf"
    conf.write_text("[global]\nfind-links = /opt/wheels\n")
    assert fake("--mode", PY="/nonexistent/python") == "cpu"
    assert fake("--mode", PY="/nonexistent/python", PIP_FIND_LINKS="/x") == "pip"
    xdg = fake.tmp / "home" / ".config" / "pip"
    xdg.mkdir(parents=True)
    (xdg / "pip.conf").write_text("[global]\nextra-index-url = https://mirror.example/simple\n")
    assert fake("--mode", PY="/nonexistent/python", PIP_CONFIG_FILE="") == "pip"


def test_torch_overrides_the_choice(fake):
    fake.gpu(True)
    assert fake(TORCH="cpu") == CPU_ARGS
    fake.gpu(False)
    assert fake(TORCH="cuda") == ""
    assert fake(TORCH="pip") == ""
    conf = fake.tmp / "pip.conf"
    conf.write_text("[global]\nfind-links = /opt/wheels\n")
    assert fake(TORCH="cpu", PIP_CONFIG_FILE=str(conf)) == CPU_ARGS


def test_an_unknown_torch_value_is_refused(fake):
    done = subprocess.run(
        ["sh", str(SCRIPT)],
        check=False,
        cwd=ROOT,
        env={**fake.env, "TORCH": "rocm"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "TORCH must be auto, cpu, cuda or pip" in done.stderr


def _make_n(tmp_path, *args: str, env: dict | None = None) -> str:
    """`make -n install` for a venv that does not exist yet, so every step is printed."""
    done = subprocess.run(
        ["make", "-n", "install", f"VENV={tmp_path / 'venv'}", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("torch", ["cpu", "cuda", "pip"])
def test_make_install_prints_the_pip_command_for_each_choice(tmp_path, torch):
    out = _make_n(tmp_path, f"TORCH={torch}")
    pip_lines = [line for line in out.splitlines() if " install " in line and " -e ." in line]
    assert len(pip_lines) == 1, out
    assert "-c constraints.txt" in pip_lines[0]
    if torch == "cpu":
        assert CPU_ARGS in pip_lines[0]
    else:
        assert "download.pytorch.org" not in pip_lines[0]
    # what it is about to do is said before the silent pip step
    assert out.index("Installing herbscan and PyTorch") < out.index(pip_lines[0])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_install_auto_follows_the_script(fake):
    env = {**fake.env, "PY": "python3"}
    out = _make_n(fake.tmp, env=env)
    assert CPU_ARGS in out  # fake Linux without GPU and without pip settings
    out = _make_n(fake.tmp, env={**env, "PIP_FIND_LINKS": "/opt/wheels"})
    assert "download.pytorch.org" not in out.replace("TORCH=cpu", "")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_refuses_an_unknown_torch(tmp_path):
    done = subprocess.run(
        ["make", "-n", "install", f"VENV={tmp_path / 'v'}", "TORCH=rocm"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "TORCH must be auto, cpu, cuda or pip" in done.stderr


def test_dev_tools_are_pinned_exactly():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = extras["optional-dependencies"]["dev"]
    for tool in ("pytest", "ruff"):
        pins = [d for d in dev if re.match(rf"{tool}\b", d)]
        assert pins and all(re.fullmatch(rf"{tool}==[\d.]+", p) for p in pins), pins


# the demo's last words


def _result(tmp_path):
    run = tmp_path / "runs" / "demo" / "run"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<html>synthetic</html>")
    return {"accuracy": 0.9667, "n": 30, "report": run / "report.html", "run": run, "seconds": 1.0}


def _report_of(message: str) -> Path:
    url = re.search(r"file://\S+", message)[0]
    return Path(unquote(urlparse(url).path))


def test_demo_message_links_the_report_and_says_what_next(tmp_path, monkeypatch):
    from herbscan.demo import demo_message

    monkeypatch.chdir(tmp_path)
    result = _result(tmp_path)
    result = {
        **result,
        "report": Path("runs/demo/run/report.html"),
        "run": Path("runs/demo/run"),
    }  # relative, as `make demo` passes them
    message = demo_message(result, ".venv/bin/herbscan")
    report = _report_of(message)
    assert report.is_absolute() and report.is_file()
    assert report == (tmp_path / "runs/demo/run/report.html").resolve()
    assert "demo test accuracy 0.967" in message
    assert ".venv/bin/herbscan evaluate runs/demo/run" in message
    assert "source .venv/bin/activate" in message


def test_demo_message_with_spaces_in_the_path(tmp_path):
    from herbscan.demo import demo_message

    result = _result(tmp_path / "my sheets")
    assert _report_of(demo_message(result)).is_file()  # the space is %20 in the URL
    assert "source" not in demo_message(result, "herbscan")


def test_herbscan_command_is_the_path_unless_it_is_on_path(tmp_path, monkeypatch):
    from herbscan.demo import herbscan_command

    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    _tool(bin_, "herbscan", "exit 0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert herbscan_command(str(bin_ / "herbscan")) == ".venv/bin/herbscan"
    monkeypatch.chdir("/")
    assert herbscan_command(str(bin_ / "herbscan")) == str(bin_ / "herbscan")
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}/usr/bin:/bin")  # an activated venv
    assert herbscan_command(str(bin_ / "herbscan")) == "herbscan"


def test_cli_demo_ends_with_the_report_link(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import herbscan.demo
    from herbscan.cli import app

    result = _result(tmp_path)
    monkeypatch.setattr(herbscan.demo, "run_demo", lambda out, **kw: result)
    done = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "runs" / "demo")])
    assert done.exit_code == 0, done.output
    last = done.output.strip().splitlines()
    assert any(line.startswith("report: file://") for line in last)
    assert _report_of(done.output) == result["report"].resolve()
