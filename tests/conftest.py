"""Shared test fixtures: every test runs with W&B pointed at its own temporary folders, no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# In-process tests train tiny models: one thread is fastest for them, and it keeps a test run from
# oversubscribing the cores when something else (a benchmark, a second suite) runs beside it.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("wandb")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(base))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(base / "no-netrc"))


# Variables read when torch or the interpreter starts (thread pools, allocators, import paths): a
# command whose environment differs from the fork server's in one of them gets a real interpreter.
_READ_AT_IMPORT = ("OMP_", "MKL_", "KMP_", "GOMP_", "TORCH_", "PYTORCH_", "CUDA_", "LD_", "PYTHON")
_server: dict = {}


def _fork_server():
    """The multiprocessing context whose server has imported what a run imports (tests/cli_child.py),
    started on first use, with the environment it started in."""
    if not _server:
        import multiprocessing

        import cli_child

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(cli_child.PRELOAD)
        _server.update(context=context, env=dict(os.environ))
    return _server["context"], _server["env"]


def _read_at_import(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(_READ_AT_IMPORT) and k != "PYTHONUNBUFFERED"}


def _may_start_workers(args: tuple[str, ...]) -> bool:
    """Whether a command may sweep on a launcher that starts worker processes (joblib's loky workers
    never report back to a forked child: the sweep hangs): one that chooses a launcher, or a preset or
    config folder that may, unless it names the basic launcher (conf/'s default: jobs in the process)."""
    if "hydra/launcher=basic" in args:
        return False
    return any(a.startswith(("+experiment=", "hydra/launcher=", "--config-dir", "-cd")) for a in args)


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None, fresh: bool = False,
            base_env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m rnnbench ARGS` in `cwd`, as a user runs it; returns the finished process.

    The command runs in a process forked from a server that has already imported torch, Hydra and
    rnnbench (tests/cli_child.py says what that keeps and what it cannot): the same entry point, exit
    code and output, seconds sooner. `fresh=True`, a command that may start launcher workers, or an
    environment that changes what is read at import starts a real interpreter instead. The environment is `base_env` (default: this one's)
    updated with `env`."""
    full_env = dict(os.environ if base_env is None else base_env, PYTHONUNBUFFERED="1", **(env or {}))
    if full_env.get("MUTANT_UNDER_TEST") == "stats":
        # mutmut (scripts/mutation.py) maps tests to functions in its own process; a child cannot report
        # back, and would fail looking for mutmut's settings in its folder: it runs the unmutated code.
        full_env["MUTANT_UNDER_TEST"] = ""
    command = [sys.executable, "-m", "rnnbench", *args]
    fresh = fresh or _may_start_workers(args)
    if not fresh:
        context, server_env = _fork_server()
        fresh = _read_at_import(full_env) != _read_at_import(server_env)
    if fresh:
        return subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    import tempfile

    import cli_child

    with tempfile.TemporaryDirectory() as out:
        paths = [os.path.join(out, "stdout"), os.path.join(out, "stderr")]
        for path in paths:  # there, whatever the child gets to do
            Path(path).touch()
        child = context.Process(target=cli_child.main, args=(list(args), str(cwd), full_env, *paths))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(command, timeout)
        stdout, stderr = (Path(p).read_text(errors="replace") for p in paths)
    return subprocess.CompletedProcess(command, child.exitcode, stdout, stderr)


# Overrides that make any experiment a few-second smoke run.
FAST = ["train.max_steps=4", "train.log_every=2", "train.eval_every=2", "train.profile_every=2",
        "task.val_size=16", "train.batch_size=4", "model.hidden_size=8"]
