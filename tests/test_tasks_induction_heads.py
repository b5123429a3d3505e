"""Specification of induction heads (tasks/induction_heads.py; Safari's generate_induction_head, Gu & Dao
2023): a sequence written out by hand, the sampling law, the baseline, the metrics and the errors."""

from __future__ import annotations

import math
import re

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


# ---- what the mutation run of the module found untested (docs/testing.md, "### `induction_heads.py`") ----
def test_induction_heads_describes_its_documented_defaults_and_is_a_token_task_scored_per_step():
    """The defaults of docs/configuration.md's `task=induction_heads` table (Mamba's V = 16, T = 256):
    T + 1 steps with the final trigger; a uniform guess over the 14 ordinary tokens."""
    from rnnbench.tasks.base import BatchShape, IOSpec

    task = InductionHeadsTask()
    assert task.describe() == {
        "task": "induction_heads", "seq_len": 256, "input_length": 257, "vocab_size": 16,
        "memoryless_baseline": pytest.approx(math.log(14)), "chance_accuracy": 1 / 14,
        "solve_threshold": 0.99, "batch_size": 64, "val_size": 1000, "seed": 0,
    }
    assert task.spec == IOSpec(input_kind="tokens", input_size=16, output_size=16, output_kind="per_step",
                               loss_kind="classification")
    assert task.batch_shape() == BatchShape(257, 64, "task.seq_len")
    longer = InductionHeadsTask(val_size=2, eval_lengths=[1024], solve_threshold=0.5)
    assert longer.batch_shape() == BatchShape(1025, 64, "task.eval_lengths") and longer.describe()["solve_threshold"] == 0.5


def test_sequences_are_drawn_from_the_tasks_own_generator_alone():
    """The same seed gives the same batches whatever torch's global generator holds."""
    def batches(global_seed):
        torch.manual_seed(global_seed)
        task = InductionHeadsTask(seq_len=10, vocab_size=8, batch_size=20, val_size=2, seed=3)
        return [task.train_batch().inputs for _ in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(batches(0), batches(1)))


def test_the_ordinary_tokens_are_all_of_zero_to_v_minus_three_and_four_symbols_suffice():
    """V = 4 is the smallest vocabulary: two ordinary tokens (0, 1), the trigger 2, the no-op 3."""
    task = InductionHeadsTask(seq_len=10, vocab_size=4, batch_size=500, val_size=2)
    ids = task.train_batch().inputs
    assert set(ids[ids != task.trigger].tolist()) == {0, 1} and task.trigger == 2
    wider = InductionHeadsTask(seq_len=10, vocab_size=9, batch_size=500, val_size=2).train_batch().inputs
    assert set(wider[wider != 7].tolist()) == set(range(7))


def test_the_loss_is_the_cross_entropy_at_the_last_step_only():
    task = InductionHeadsTask(seq_len=6, vocab_size=16, val_size=2)
    batch = task.sequences(torch.tensor([[3, 4], [7, 5], [2, 6], [5, 6], [9, 1], [1, 1]]), torch.tensor([2, 0]))
    outputs = torch.randn(7, 2, 16, generator=torch.Generator().manual_seed(0))
    log_p = outputs[-1].log_softmax(-1)
    by_hand = -(float(log_p[0, 5]) + float(log_p[1, 5])) / 2  # the tokens after the triggers at 2 and 0
    assert float(task.loss(outputs, batch)) == pytest.approx(by_hand)
    message = "induction_heads outputs have shape (7, 2, 15); expected (T + 1, B, V) = (7, 2, 16)"
    with pytest.raises(ValueError, match=re.escape(message)):
        task.loss(torch.zeros(7, 2, 15), batch)
