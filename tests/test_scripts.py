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
