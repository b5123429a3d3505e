"""The diagnostic scripts the README quotes (scripts/*.py) run and print what it quotes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from datagen import char_corpus

from conftest import REPO


def test_char_lm_torch_reference_trains_on_the_study_stream_and_prints_the_reported_steps(tmp_path):
    char_corpus(tmp_path / "tinyshakespeare" / "input.txt")
    env = {**os.environ, "RNNBENCH_DATA": str(tmp_path), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "char_lm_torch_reference.py"), "--hidden", "16",
                          "--steps", "200"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    losses = {int(step): float(loss) for step, loss in re.findall(r"^lstm H=16 step (\d+): train/loss ([\d.]+)$",
                                                                  out.stdout, re.M)}
    assert sorted(losses) == [50, 100, 200]
    # the grammar's text is far more predictable than its characters' unigram (~2.8 nats): it learns
    assert losses[200] < losses[50] and losses[200] < 2.2


def test_lstm_step_parts_prints_every_part_of_the_step_with_its_share():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "lstm_step_parts.py"), "--quick"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^B=8 T=16 I=8 H=16: sgemm peak [\d.]+ GFLOP/s; the step [\d.]+ GFLOP/s = \d+% of peak$",
                     out.stdout, re.M)
    shares = dict(re.findall(r"^(\S.*?)\s+-?[\d.]+ ms\s+(-?[\d.]+)%", out.stdout, re.M))
    assert float(shares["whole step"]) == 100.0
    for part in ("C++ forward (with a copy of x_proj)", "C++ backward (with a copy of the gates)", "weight-grad GEMM",
                 "T forward step GEMMs alone", "input projection grads", "all matmuls at the peak"):
        assert 0 < float(shares[part]) < 100, part  # each a part of the step, none of it all
    assert re.search(r"^.+, 1 threads, torch \S+$", out.stdout.splitlines()[0])  # the CPU named, first
    assert len(re.findall(r"GFLOP/s \(\d+% of peak\)", out.stdout)) == 5  # the five GEMM parts
