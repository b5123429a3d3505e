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


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m rnnbench ARGS` in `cwd`, as a user runs it; returns the finished process."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "rnnbench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


# Overrides that make any experiment a few-second smoke run.
FAST = ["train.max_steps=4", "train.log_every=2", "train.eval_every=2", "train.profile_every=2",
        "task.val_size=16", "train.batch_size=4", "model.hidden_size=8"]
