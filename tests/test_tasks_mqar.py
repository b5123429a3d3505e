"""Specification of multi-query associative recall (tasks/mqar.py; Arora, Eyuboglu et al. 2023, Zoology):
the generator against the example of Zoology's docstring, its sampling law, the baseline in closed
form, the errors, and learning."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from rnnbench.errors import ConfigError
from rnnbench.run.build import build_task
from rnnbench.run.config import compose
from rnnbench.tasks.mqar import IGNORE, MQARTask

_ = IGNORE


def test_the_zoology_docstring_example_written_out():
    """multiquery_ar(vocab_size=12, num_kv_pairs=2, input_seq_len=16, random_non_queries=False):
    keys 2, 4 with values 8, 7; key 4 asked first (gap 1), key 2 second (gap 4)."""
    task = MQARTask(seq_len=16, num_kv_pairs=2, vocab_size=17, val_size=2)
    batch = task.sequences(keys=torch.tensor([[2], [4]]), values=torch.tensor([[8], [7]]),
                           gaps=torch.tensor([[4], [1]]), noise=torch.zeros(16, 1, dtype=torch.long))
    assert batch.inputs[:, 0].tolist() == [2, 8, 4, 7, 0, 0, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0]
    assert batch.targets[:, 0].tolist() == [_, _, _, _, _, _, 7, _, _, _, _, _, 8, _, _, _]


def test_sampled_sequences_follow_the_definition():
    task = MQARTask(seq_len=64, num_kv_pairs=8, vocab_size=128, batch_size=50, val_size=10)
    batch = task.train_batch()
    ids, targets = batch.inputs, batch.targets  # (T, B)
    assert ids.shape == targets.shape == (64, 50) and ids.dtype == torch.int64
    for b in range(50):
        keys, values = ids[0:16:2, b], ids[1:16:2, b]
        assert len(set(keys.tolist())) == 8 and ((1 <= keys) & (keys < 64)).all()
        assert len(set(values.tolist())) == 8 and ((64 <= values) & (values < 128)).all()
        asked = (targets[:, b] != IGNORE).nonzero()[:, 0]
        assert len(asked) == 8 and (asked >= 16).all() and (asked % 2 == 0).all()
        answer = dict(zip(keys.tolist(), values.tolist()))
        assert sorted(ids[asked, b].tolist()) == sorted(keys.tolist())  # every key asked once
        assert all(answer[int(ids[t, b])] == int(targets[t, b]) for t in asked)
    assert len(ids[16:].unique()) > 64  # the rest of the query region is noise over the vocabulary


def test_query_gaps_follow_the_power_law():
    task = MQARTask(seq_len=16, num_kv_pairs=1, vocab_size=32, batch_size=20000, val_size=2)
    p = task.gap_probabilities()  # space = (16 - 2) / 2 = 7 gaps
    expected = torch.tensor([0.01 * g ** (0.01 - 1) for g in range(1, 8)], dtype=torch.float64)
    assert torch.allclose(p, expected / expected.sum())
    batch = task.train_batch()
    gaps = ((batch.targets != IGNORE).nonzero()[:, 0] - 2) // 2
    frequency = torch.bincount(gaps, minlength=7).double() / 20000
    assert torch.allclose(frequency, p, atol=0.015)
    uniform = MQARTask(seq_len=16, num_kv_pairs=1, vocab_size=32, power_a=1.0, val_size=2)
    assert torch.allclose(uniform.gap_probabilities(), torch.full((7,), 1 / 7, dtype=torch.float64))


def test_baseline_is_the_loss_of_a_uniform_guess_over_the_values_and_the_oracle_solves():
    task = MQARTask(seq_len=32, num_kv_pairs=4, vocab_size=100, val_size=300, batch_size=64)
    assert task.memoryless_baseline == pytest.approx(math.log(50))

    def uniform_over_values(batch, state):
        logits = torch.full((*batch.inputs.shape, 100), -1e9)
        logits[..., 50:] = 0.0
        return logits, state

    metrics = task.evaluate(uniform_over_values)
    assert metrics["loss"] == pytest.approx(math.log(50), rel=1e-6)
    assert metrics["loss_over_baseline"] == pytest.approx(1.0, rel=1e-6)

    def oracle(batch, state):
        return 20.0 * F.one_hot(batch.targets.clamp(min=0), 100).float(), state

    metrics = task.evaluate(oracle)
    assert metrics["accuracy"] == metrics["sequence_accuracy"] == 1.0 and task.solved(metrics)

    def first_query_wrong(batch, state):
        logits, _ = oracle(batch, state)
        first = (batch.targets != IGNORE).float().argmax(0)  # (B,) each sequence's first query step
        logits[first, torch.arange(batch.targets.shape[1])] = 0.0
        return logits, state

    metrics = task.evaluate(first_query_wrong)
    assert metrics["accuracy"] == pytest.approx(3 / 4) and metrics["sequence_accuracy"] == 0.0


def test_at_length_keeps_the_pairs_and_changes_the_length():
    task = MQARTask(seq_len=32, num_kv_pairs=4, vocab_size=300, val_size=8, eval_lengths=[64, 256])
    longer = task.at_length(256)
    assert longer.seq_len == 256 and longer.num_kv_pairs == 4 and longer.probe_batch().inputs.shape[0] == 256


@pytest.mark.parametrize("overrides, message", [
    (["task.seq_len=63"], "task.seq_len=63 is not allowed: MQAR sequences have even length"),
    (["task.num_kv_pairs=20"], "task.num_kv_pairs=20 is not allowed with task.seq_len=64: .* 4K <= seq_len"),
    (["task.vocab_size=64"], "task.vocab_size=64 is not allowed with task.seq_len=64"),
    (["task.eval_lengths=[128]", "task.vocab_size=100"], "task.vocab_size=100 is not allowed with task.seq_len=128"),
    (["task.power_a=0"], "power_a=0"),
])
def test_bad_sizes_are_refused_before_a_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_task(compose(["task=mqar", *overrides]))


# ---- what the mutation run of the module found untested (docs/testing.md, "### `mqar.py`") ----------
def test_mqar_describes_its_documented_defaults_and_is_a_token_task_scored_per_step():
    """The defaults of docs/configuration.md's `task=mqar` table; the baseline a uniform guess over the
    V - V/2 = 4096 value tokens."""
    from rnnbench.tasks.base import IOSpec

    task = MQARTask()
    assert task.describe() == {
        "task": "mqar", "seq_len": 64, "input_length": 64, "num_kv_pairs": 8, "vocab_size": 8192,
        "power_a": 0.01, "memoryless_baseline": pytest.approx(math.log(4096)), "chance_accuracy": 1 / 4096,
        "solve_threshold": 0.99, "batch_size": 64, "val_size": 1000, "seed": 0,
    }
    assert task.spec == IOSpec(input_kind="tokens", input_size=8192, output_size=8192, output_kind="per_step",
                               loss_kind="classification")
    assert MQARTask(seq_len=16, num_kv_pairs=2, vocab_size=17, val_size=2, solve_threshold=0.5).describe()["solve_threshold"] == 0.5


def test_sequences_are_drawn_from_the_tasks_own_generator_alone():
    """The same seed gives the same batches whatever torch's global generator holds."""
    def batches(global_seed):
        torch.manual_seed(global_seed)
        task = MQARTask(seq_len=16, num_kv_pairs=2, vocab_size=32, batch_size=20, val_size=2, seed=3)
        return [task.train_batch().inputs for _ in range(3)]

    assert all(torch.equal(a, b) for a, b in zip(batches(0), batches(1)))


def test_keys_values_and_noise_cover_their_whole_ranges():
    """V = 8: keys are any of 1 .. V/2 - 1 = 3, values any of 4 .. 7, noise any of the 8 tokens."""
    task = MQARTask(seq_len=6, num_kv_pairs=1, vocab_size=8, batch_size=3000, val_size=2)
    batch = task.train_batch()
    ids, asked = batch.inputs, batch.targets != IGNORE  # (6, B)
    assert set(ids[0].tolist()) == {1, 2, 3} and set(ids[1].tolist()) == {4, 5, 6, 7}
    assert set(ids[2:][~asked[2:]].tolist()) == set(range(8))


def test_a_batch_is_built_on_the_device_of_its_parts():
    task = MQARTask(seq_len=8, num_kv_pairs=2, vocab_size=12, val_size=2)
    parts = [torch.zeros(*shape, dtype=torch.long, device="meta") for shape in ((2, 3), (2, 3), (2, 3), (8, 3))]
    batch = task.sequences(*parts)
    assert (batch.inputs.device.type, batch.targets.device.type) == ("meta", "meta")


def test_the_loss_is_the_cross_entropy_at_the_query_positions_only():
    task = MQARTask(seq_len=8, num_kv_pairs=2, vocab_size=12, val_size=2)
    batch = task.sequences(keys=torch.tensor([[1], [3]]), values=torch.tensor([[7], [9]]),
                           gaps=torch.tensor([[1], [0]]), noise=torch.zeros(8, 1, dtype=torch.long))
    outputs = torch.randn(8, 1, 12, generator=torch.Generator().manual_seed(0))
    log_p = outputs.log_softmax(-1)[:, 0]
    by_hand = -(float(log_p[6, 7]) + float(log_p[4, 9])) / 2  # key 1 asked at 4 + 2, key 3 at 4 + 0
    assert float(task.loss(outputs, batch)) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match=re.escape("mqar outputs have shape (8, 1, 11); expected (T, B, V) = (8, 1, 12)")):
        task.loss(torch.zeros(8, 1, 11), batch)


def test_four_k_equal_to_the_length_is_allowed_and_each_size_rule_names_its_bound():
    assert MQARTask(seq_len=16, num_kv_pairs=4, vocab_size=17, val_size=2).num_kv_pairs == 4  # 4K = T
    for kwargs, message in [
        (dict(seq_len=16, num_kv_pairs=5, vocab_size=17),
         "task.num_kv_pairs=5 is not allowed with task.seq_len=16: the K pairs and their K queries need "
         "4K <= seq_len (K <= 4)"),
        (dict(seq_len=4, num_kv_pairs=1, vocab_size=4),
         "task.vocab_size=4 is not allowed with task.seq_len=4: Zoology requires vocab_size > seq_len"),
        (dict(seq_len=2), "seq_len=2: must be an integer >= 4"),
        (dict(num_kv_pairs=0), "num_kv_pairs=0: must be an integer >= 1"),
        (dict(vocab_size=3), "vocab_size=3: must be an integer >= 4"),
    ]:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            MQARTask(val_size=2, **kwargs)
