"""rnnbench as a user installs it (not editable): the wheel ships conf/ inside the package, and the
installed package runs experiments from any folder, with no checkout in sight.

The wheel is built from a copy of the checkout and installed into a fresh virtual environment that
sees this interpreter's site-packages (so torch and the other dependencies are reused, never
downloaded: `--no-deps`, `--no-index`). Every command runs without PYTHONPATH, in a folder outside
the checkout, and the test checks that the rnnbench it imported is the installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import FAST, REPO

# What a checkout holds that is not part of the source (run outputs, caches, earlier builds).
NOT_SOURCE = shutil.ignore_patterns(".git", "outputs", "multirun", "wandb", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", "*.so")


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, nothing else
    return subprocess.run([str(a) for a in args], cwd=cwd, env=dict(env, PYTHONUNBUFFERED="1"),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source") / "rnnbench"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    dist = source.parent / "dist"
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", dist, source, cwd=source.parent)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("rnnbench-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment holding the installed wheel; its python."""
    home = tmp_path_factory.mktemp("venv") / "env"
    made = run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", home, cwd=home.parent)
    assert made.returncode == 0, made.stderr
    python = home / "bin" / "python"
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                    wheel, cwd=home.parent)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


def test_the_wheel_ships_conf_as_it_is_in_the_checkout(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name.removeprefix("rnnbench/conf/"): archive.read(name)
                   for name in archive.namelist() if name.startswith("rnnbench/conf/")}
        csrc = REPO / "rnnbench" / "kernels" / "csrc"
        kernels = {p.relative_to(REPO).as_posix() for p in csrc.iterdir() if p.is_file()}
        assert kernels and kernels <= set(archive.namelist())  # the C++ kernels build where installed
        tasks = {f"rnnbench/tasks/{p.name}" for p in (REPO / "tasks").glob("*.py")}
        assert tasks <= set(archive.namelist())  # the top-level tasks/, shipped as rnnbench.tasks
        assert not any(name.startswith("tasks/") for name in archive.namelist())  # no bare `tasks` to shadow
    conf = REPO / "conf"
    in_checkout = {p.relative_to(conf).as_posix(): p.read_bytes() for p in conf.rglob("*.yaml")}
    assert shipped == in_checkout


def test_an_installed_package_runs_an_experiment_from_another_folder(venv, tmp_path):
    where = run(venv, "-c", "import rnnbench, rnnbench.run.config; print(rnnbench.__file__); print(rnnbench.run.config.CONF_DIR)",
                cwd=tmp_path)
    package, conf = where.stdout.split()
    venv_root = venv.parent.parent
    assert Path(package).is_relative_to(venv_root), f"imported {package}, not the installed package"
    assert Path(conf) == Path(package).parent / "conf"

    # A user's own tasks.py (and a `tasks` folder) where they run: the package's tasks are rnnbench.tasks.
    (tmp_path / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    script = venv.parent / "rnnbench"  # the console script
    for command in ((venv, "-m", "rnnbench"), (script,)):
        done = run(*command, "+experiment=copy_T100", "task.seq_len=10", *FAST, "train.threads=1",
                   "logger.wandb.mode=disabled", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "runs").glob("*/*/summary.json")]
    assert len(summaries) == 2
    for summary in summaries:
        assert summary["status"] == "completed" and summary["steps"] == 4
        assert summary["task"] == "copy"


def test_an_editable_checkout_reads_the_top_level_conf():
    from rnnbench.run.config import CONF_DIR

    assert Path(CONF_DIR) == REPO / "conf"
