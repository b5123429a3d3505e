"""Flushing subnormal floats to zero (issue 10, part 4): on every thread, in the C++ kernel, and in the app.

Subnormal values are |x| < 1.18e-38 (float32). With flushing on, a subnormal operand reads as 0 and a
subnormal result is written as 0 — also in comparisons, so every check below reads results with flushing
off again.
"""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import run_cli
from rnnbench.kernels import extension, fast_peephole, flush
from test_fast_peephole import needs_compiler

SUBNORMAL = 1e-39


@pytest.fixture
def two_threads_pool_made_unflushed():
    """Two torch threads whose OpenMP pool already exists, made while flushing was off (as in any process
    that computed before flushing was turned on); flushing off again afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    flush.set_flush_denormal(False)
    (torch.randn(1_000_000) * 2).sum()  # a parallel region: the pool's threads are made here
    yield
    flush.set_flush_denormal(False)
    torch.set_num_threads(threads)


def kept_share(tensor: torch.Tensor) -> float:
    torch.set_flush_denormal(False)
    return float((tensor != 0).float().mean())


def test_torch_alone_flushes_only_the_calling_thread_and_ours_flushes_all(two_threads_pool_made_unflushed):
    x = torch.full((1_000_000,), SUBNORMAL)  # large enough for torch to split x * 1 over both threads
    torch.set_flush_denormal(True)
    partly = kept_share(x * 1.0)
    assert flush.set_flush_denormal(True)
    y = x * 1.0
    if extension.available("flush"):
        assert kept_share(y) == 0.0, "a worker thread kept computing with subnormals"
        assert 0.0 < partly < 1.0  # why the pool-wide setting is needed: torch's covers the caller only
    flush.set_flush_denormal(False)
    assert kept_share(x * 1.0) == 1.0  # and off again everywhere


@needs_compiler
def test_cpp_kernel_flushes_in_every_row_block(two_threads_pool_made_unflushed):
    # i = 0 and f = 1 exactly: c_T = c0, subnormal. B=130 rows at H=64 run as two blocks on two threads.
    # torch.set_flush_denormal alone (the worker's MXCSR untouched): the kernel must still flush every row.
    T, B, H = 3, 130, 64
    x_proj = torch.zeros(T, B, 4 * H)
    x_proj[..., :H], x_proj[..., H:2 * H] = -1e4, 1e4
    c0 = torch.full((B, H), SUBNORMAL)
    args = (torch.zeros(B, H), c0, torch.zeros(4 * H, H), torch.zeros(4 * H), torch.zeros(3, H))
    for flushed, expected in ((False, 1.0), (True, 0.0)):
        torch.set_flush_denormal(flushed)
        with torch.no_grad():
            _, _, c_T = fast_peephole.peephole_sequence(x_proj, *args, backend="cpp")
        assert kept_share(c_T) == expected, f"flush={flushed}"


def run_summary(tmp_path, *overrides):
    tmp_path.mkdir()
    proc = run_cli("task=adding", "task.seq_len=60", "task.val_size=64", "cell=vanilla", "model.hidden_size=16",
                   "train.batch_size=16", "train.max_steps=40", "train.eval_every=20", "train.log_every=20",
                   "train.threads=2", "logger.wandb.mode=disabled", *overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary_file,) = (tmp_path / "outputs").rglob("summary.json")
    config = yaml.safe_load((summary_file.parent / "config.yaml").read_text())
    return json.loads(summary_file.read_text()), config


def test_app_flushes_by_default_records_it_and_learns_the_same(tmp_path):
    flushed, config = run_summary(tmp_path / "default")
    assert config["train"]["flush_denormal"] is True and flushed["flush_denormal"] is True
    unflushed, config = run_summary(tmp_path / "off", "train.flush_denormal=false")
    assert config["train"]["flush_denormal"] is False and unflushed["flush_denormal"] is False
    assert flushed["config_fingerprint"] != unflushed["config_fingerprint"]  # they may differ in the last bits
    assert flushed["final"]["val/loss"] == pytest.approx(unflushed["final"]["val/loss"], rel=1e-4)


def test_a_gru_run_flushes_without_loading_the_peephole_kernel():
    """The switch has its own small extension: a GRU (or tanh-RNN) run asks only for what it uses."""
    code = ("import torch\n"
            "from rnnbench.kernels import extension, flush\n"
            "asked, load = set(), extension.load\n"
            "extension.load = lambda kernel: asked.add(kernel) or load(kernel)\n"
            "from rnnbench.modules.cells import GRUCell\n"
            "from rnnbench.modules.recurrent import RecurrentLayer\n"
            "flush.set_flush_denormal(True)\n"
            "RecurrentLayer(GRUCell, 3, 4)(torch.randn(5, 2, 3))\n"
            "print(sorted(asked))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ("[]" if extension.disabled() else "['flush', 'gru']")  # RNNBENCH_NO_CPP: none
