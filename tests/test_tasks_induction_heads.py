"""Specification of induction heads (tasks/induction_heads.py; Safari's generate_induction_head, Gu & Dao
2023): a sequence written out by hand, the sampling law, the baseline, the metrics and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnbench.errors import ConfigError
from rnnbench.run.build import build_task
from rnnbench.run.config import compose
from rnnbench.tasks.induction_heads import InductionHeadsTask
from rnnbench.tasks.synthetic import IGNORE

_ = IGNORE


def test_a_sequence_written_out():
    """T = 6, V = 16 (ordinary 0..13, trigger 14): 3 7 2 5 9 1 with the trigger at step 2 -> y = 5."""
    task = InductionHeadsTask(seq_len=6, vocab_size=16, val_size=2)
    batch = task.sequences(torch.tensor([3, 7, 2, 5, 9, 1]).unsqueeze(1), torch.tensor([2]))
    assert batch.inputs[:, 0].tolist() == [3, 7, 14, 5, 9, 1, 14]
    assert batch.targets[:, 0].tolist() == [_, _, _, _, _, _, 5]


def test_sampled_sequences_follow_the_definition():
    task = InductionHeadsTask(seq_len=10, vocab_size=8, batch_size=4000, val_size=2)
    batch = task.train_batch()
    ids, targets = batch.inputs, batch.targets  # (T + 1, B)
    assert ids.shape == (11, 4000) and (ids[-1] == task.trigger).all()
    first = (ids[:-1] == task.trigger).int().argmax(0)  # (B,) the one trigger among the T tokens
    assert ((ids[:-1] == task.trigger).sum(0) == 1).all() and (ids < task.trigger).sum() == 4000 * 9
    assert torch.equal(targets[-1], ids[first + 1, torch.arange(4000)]) and (targets[:-1] == IGNORE).all()
    frequency = torch.bincount(first, minlength=10).double() / 4000  # uniform over steps 0 .. T - 3
    assert torch.allclose(frequency[:8], torch.full((8,), 1 / 8, dtype=torch.float64), atol=0.025)
    assert frequency[8:].sum() == 0


def test_baseline_and_metrics():
    task = InductionHeadsTask(seq_len=20, vocab_size=16, val_size=300, batch_size=64)
    assert task.memoryless_baseline == pytest.approx(math.log(14)) and task.chance_accuracy == 1 / 14

    def uniform(batch, state):
        logits = torch.full((*batch.inputs.shape, 16), -1e9)
        logits[..., :14] = 0.0
        return logits, state

    assert task.evaluate(uniform)["loss"] == pytest.approx(math.log(14), rel=1e-6)

    def oracle(batch, state):
        return 20.0 * F.one_hot(batch.targets.clamp(min=0), 16).float(), state

    metrics = task.evaluate(oracle)
    assert metrics["accuracy"] == metrics["sequence_accuracy"] == 1.0 and task.solved(metrics)
    longer = task.at_length(200)
    assert longer.probe_batch().inputs.shape[0] == 201


@pytest.mark.parametrize("overrides, message", [
    (["task.seq_len=2"], "seq_len=2"),
    (["task.vocab_size=3"], "vocab_size=3"),
])
def test_bad_sizes_are_refused_before_a_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task(compose(["task=induction_heads", *overrides]))
