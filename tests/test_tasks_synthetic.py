"""Specification of the synthetic tasks: copy (tasks/copy.py) and adding (tasks/adding.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnbench.tasks.adding import AddingTask
from rnnbench.tasks.base import Batch, Task
from rnnbench.tasks.copy import CopyTask

COPY_VARIANTS = ("arjovsky", "tcn", "s4", "selective")
FIXED_VARIANTS = ("arjovsky", "tcn", "s4")  # the symbols at the first M steps
ADDING_VARIANTS = ("halves", "anywhere")


def copy_oracle(batch: Batch, state):
    """Logits that put all the mass on the right class at every step."""
    return 20.0 * F.one_hot(batch.targets, batch.inputs.shape[-1]).float(), state  # (T', B, K+2)


def adding_oracle(batch: Batch, state):
    inputs = batch.inputs  # (T, B, 2)
    return (inputs[..., 0] * inputs[..., 1]).sum(0).unsqueeze(1), state  # (B, 1)


def make_task(kind: str, **kwargs) -> Task:
    if kind == "copy":
        return CopyTask(seq_len=kwargs.pop("seq_len", 12), **kwargs)
    return AddingTask(seq_len=kwargs.pop("seq_len", 12), **kwargs)


TASK_KINDS = [("copy", v) for v in COPY_VARIANTS] + [("adding", v) for v in ADDING_VARIANTS]


# ---- copy: data layout ------------------------------------------------------------------------
@pytest.mark.parametrize("variant", COPY_VARIANTS)
def test_copy_batch_shapes_and_dtypes(variant):
    task = CopyTask(seq_len=30, variant=variant, batch_size=7)
    batch = task.train_batch()
    assert task.input_length == 30 + 20
    assert batch.inputs.shape == (50, 7, 10) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (50, 7) and batch.targets.dtype == torch.int64
    assert batch.lengths is None
    assert torch.equal(batch.inputs.sum(-1), torch.ones(50, 7))  # one-hot
    assert task.spec.input_size == task.spec.output_size == 10
    assert task.spec.output_kind == "per_step" and task.spec.loss_kind == "classification"


@pytest.mark.parametrize("variant", FIXED_VARIANTS)
def test_copy_target_is_the_input_symbols_at_the_recall_steps(variant):
    task = CopyTask(seq_len=25, variant=variant, num_symbols=5, copy_len=4, batch_size=50)
    batch = task.train_batch()
    symbols = batch.inputs[:4].argmax(-1)  # (M, B)
    assert symbols.max() < 5  # data symbols only, never blank (5) or delimiter (6)
    assert torch.equal(batch.targets[-4:], symbols)
    assert (batch.targets[:-4] == task.blank).all()
    assert len(symbols.unique()) == 5  # all of the alphabet is drawn


@pytest.mark.parametrize(
    "variant, after_symbols",
    [
        # T = 5, M = 3; b = blank, d = delimiter; the steps after the M symbols.
        ("arjovsky", "bbbbdbbb"),  # T-1 blanks, 1 delimiter, M blanks (Arjovsky et al. 2016)
        ("tcn", "bbbbdddd"),  # T-1 blanks, M+1 delimiters (Bai et al. 2018)
        ("s4", "bbbbbddd"),  # T blanks, M delimiters (Gu et al. 2022)
    ],
)
def test_copy_blank_and_delimiter_positions(variant, after_symbols):
    task = CopyTask(seq_len=5, variant=variant, copy_len=3, batch_size=4)
    ids = task.train_batch().inputs.argmax(-1)  # (T + 2M, B)
    code = {"b": task.blank, "d": task.delimiter}
    expected = torch.tensor([code[c] for c in after_symbols]).unsqueeze(1).expand(-1, 4)
    assert torch.equal(ids[3:], expected)


def test_selective_copying_written_out():
    """Gu & Dao 2023's selective copying (S4's generator, variable=True): T = 3, M = 2, symbols 5
    and 2 at steps 1 and 3 of the first T + M = 5; b = blank (8), d = delimiter (9)."""
    task = CopyTask(seq_len=3, variant="selective", copy_len=2, val_size=4)
    batch = task.sequences(torch.tensor([[5], [2]]), torch.tensor([[1], [3]]))
    b, d = task.blank, task.delimiter
    assert batch.inputs[:, 0].argmax(-1).tolist() == [b, 5, b, 2, b, d, d]
    assert batch.targets[:, 0].tolist() == [b, b, b, b, b, 5, 2]
    assert not task.loss_on_all_steps  # the loss and the baseline ln K cover the 2 recall steps


def test_selective_copying_draws_ordered_distinct_steps_anywhere_before_the_recall():
    task = CopyTask(seq_len=6, variant="selective", num_symbols=4, copy_len=3, batch_size=4000, val_size=4)
    ids = task.train_batch().inputs.argmax(-1)  # (T + 2M, B)
    data = ids[:9] < 4  # (T + M, B): where the symbols stand
    assert (data.sum(0) == 3).all() and (ids[9:] == task.delimiter).all()
    recalled = task.train_batch()
    symbols = recalled.inputs[:9].argmax(-1).T  # in order of appearance = the recall order
    kept = symbols[symbols < 4].view(-1, 3)
    assert torch.equal(kept, recalled.targets[-3:].T)
    frequency = data.float().mean(1)  # every step of the first T + M equally likely: M / (T + M)
    assert torch.allclose(frequency, torch.full((9,), 3 / 9), atol=0.03)


def test_the_fixed_variants_draw_the_same_data_as_before_selective_existed():
    """Only `selective` draws steps: the other variants' generator streams are unchanged."""
    task = CopyTask(seq_len=5, variant="s4", copy_len=3, batch_size=2, val_size=2, seed=7)
    generator = torch.Generator().manual_seed(7)
    expected = torch.randint(0, 8, (3, 2), generator=generator)
    assert torch.equal(task.train_batch().targets[-3:], expected)


# ---- copy: baseline, loss and metrics ---------------------------------------------------------
def copy_memoryless(task: CopyTask):
    """Log-probabilities of the best predictor blind to the symbols: blank for sure for T + M
    steps, uniform over the data symbols at the M recall steps."""

    def predict(batch: Batch, state):
        steps, B, classes = batch.inputs.shape
        log_probs = torch.full((steps, B, classes), -math.inf)
        log_probs[: -task.copy_len, :, task.blank] = 0.0
        log_probs[-task.copy_len :, :, : task.num_symbols] = -math.log(task.num_symbols)
        return log_probs, state

    return predict


@pytest.mark.parametrize("variant", COPY_VARIANTS)
@pytest.mark.parametrize("num_symbols, copy_len", [(8, 10), (5, 3)])
def test_copy_baseline_is_the_loss_of_the_memoryless_predictor(variant, num_symbols, copy_len):
    task = CopyTask(
        seq_len=40, variant=variant, num_symbols=num_symbols, copy_len=copy_len, val_size=100
    )
    expected = {
        "arjovsky": copy_len * math.log(num_symbols) / (40 + 2 * copy_len),
        "tcn": copy_len * math.log(num_symbols) / (40 + 2 * copy_len),
        "s4": math.log(num_symbols),
        "selective": math.log(num_symbols),
    }[variant]
    assert task.memoryless_baseline == pytest.approx(expected)
    metrics = task.evaluate(copy_memoryless(task))
    assert metrics["loss"] == pytest.approx(task.memoryless_baseline, rel=1e-5)
    assert metrics["loss_over_baseline"] == pytest.approx(1.0, rel=1e-5)


def test_copy_baseline_matches_the_published_value():
    assert CopyTask(seq_len=1000).memoryless_baseline == pytest.approx(0.0204, abs=1e-4)


def test_copy_s4_loss_covers_only_the_recall_steps():
    wrong_blanks = {}
    for variant in ("arjovsky", "s4"):
        task = CopyTask(seq_len=10, variant=variant)
        batch = task.train_batch()
        logits, _ = copy_oracle(batch, None)
        logits[: -task.copy_len] = logits[: -task.copy_len].roll(1, dims=-1)  # blanks wrong
        wrong_blanks[variant] = task.loss(logits, batch).item()
    assert wrong_blanks["s4"] < 1e-6
    assert wrong_blanks["arjovsky"] > 1.0


@pytest.mark.parametrize("variant", COPY_VARIANTS)
def test_copy_oracle_solves_and_partial_recall_is_told_apart(variant):
    task = CopyTask(seq_len=15, variant=variant, val_size=50, batch_size=16)
    metrics = task.evaluate(copy_oracle)
    assert metrics["recall_accuracy"] == 1.0 and metrics["sequence_accuracy"] == 1.0
    assert metrics["loss"] < 1e-6
    assert task.solved(metrics)
    assert task.main_metric in metrics and task.main_metric_mode == "max"

    def one_symbol_wrong(batch, state):  # the last recalled symbol of every sequence is wrong
        logits, _ = copy_oracle(batch, state)
        logits[-1] = logits[-1].roll(1, dims=-1)
        return logits, state

    metrics = task.evaluate(one_symbol_wrong)
    assert metrics["recall_accuracy"] == pytest.approx(0.9)
    assert metrics["sequence_accuracy"] == 0.0
    assert not task.solved(metrics)
    assert CopyTask(solve_threshold=0.9).solved(metrics)


def test_copy_batch_metrics_agree_with_loss():
    task = CopyTask(seq_len=10, batch_size=8)
    batch = task.train_batch()
    logits = torch.randn(30, 8, 10, requires_grad=True)
    metrics = task.batch_metrics(logits, batch)
    assert metrics["loss"] == pytest.approx(task.loss(logits, batch).item(), rel=1e-6)
    assert set(metrics) == {
        "loss", "loss_over_baseline", "recall_accuracy", "sequence_accuracy", "accuracy_all_steps"
    }


def test_copy_rejects_outputs_of_the_wrong_shape():
    task = CopyTask(seq_len=10, batch_size=8)
    batch = task.train_batch()
    with pytest.raises(ValueError, match=r"expected \(T \+ 2M, B, K \+ 2\)"):
        task.loss(torch.zeros(29, 8, 10), batch)


def test_arjovsky_copying_written_out_with_its_alphabet():
    """Arjovsky et al. 2016 with T = 3, M = 2, K = 4: data symbols 0..3, blank 4, delimiter 5; symbols 3
    and 1, then T - 1 blanks, the delimiter, M blanks; the target is T + M blanks, then 3 and 1."""
    task = CopyTask(seq_len=3, num_symbols=4, copy_len=2, val_size=4)
    assert (task.blank, task.delimiter, task.num_classes) == (4, 5, 6)
    batch = task.sequences(torch.tensor([[3], [1]]))
    assert batch.inputs[:, 0].argmax(-1).tolist() == [3, 1, 4, 4, 5, 4, 4]
    assert batch.targets[:, 0].tolist() == [4, 4, 4, 4, 4, 3, 1]
    assert task.spec.input_kind == "continuous"  # one-hot vectors, not token ids


def test_a_batch_is_built_on_the_device_of_its_symbols():
    """The meta device stands in for a GPU: every tensor of the batch follows the symbols."""
    task = CopyTask(seq_len=3, num_symbols=4, copy_len=2, val_size=4)
    batch = task.sequences(torch.tensor([[3], [1]], device="meta"))
    assert (batch.inputs.device.type, batch.targets.device.type) == ("meta", "meta")


@pytest.mark.parametrize("split", ["val", "test"])
def test_selective_copying_evaluates_on_symbols_at_their_drawn_steps(split):
    """The fixed splits of `selective` keep each sequence's own steps (M of the first T + M, in order),
    as its training batches do; the symbols never all stand at the first M steps of all 64 sequences."""
    task = CopyTask(seq_len=6, variant="selective", num_symbols=4, copy_len=3, batch_size=16, val_size=64)
    ids = seen_by_evaluate(task, split).argmax(-1)  # (T + 2M, N)
    data = ids[:9] < 4  # (T + M, N): where the symbols stand
    assert (data.sum(0) == 3).all() and (ids[9:] == task.delimiter).all()
    assert data[3:].any()  # some symbol after the first M steps


@pytest.mark.parametrize("variant", COPY_VARIANTS)
def test_accuracy_all_steps_counts_every_step_for_the_variants_whose_loss_covers_them(variant):
    """T = 5, M = 3: 11 steps; one blank step wrong in every sequence gives 10/11 (the recall stays
    right). `s4` and `selective` score the recall steps only, so they do not report it."""
    task = CopyTask(seq_len=5, variant=variant, copy_len=3, batch_size=4, val_size=8)

    def first_step_wrong(batch, state):
        logits, _ = copy_oracle(batch, state)
        logits[task.copy_len] = logits[task.copy_len].roll(1, dims=-1)  # the first blank after the symbols
        return logits, state

    metrics = task.evaluate(first_step_wrong)
    assert metrics["recall_accuracy"] == 1.0
    if variant in ("arjovsky", "tcn"):
        assert metrics["accuracy_all_steps"] == pytest.approx(10 / 11)
    else:
        assert "accuracy_all_steps" not in metrics


@pytest.mark.parametrize("variant, loss_steps, baseline", [
    ("arjovsky", "all", 10 * math.log(8) / 120),  # M ln K / (T + 2M), Arjovsky et al.'s 10 ln 8 / (T + 20)
    ("s4", "recall", math.log(8)),
])
def test_copy_describes_its_documented_defaults(variant, loss_steps, baseline):
    """The defaults of docs/configuration.md's `task=copy` table, as a user of the class gets them."""
    assert CopyTask(variant=variant).describe() == {
        "task": "copy", "variant": variant, "seq_len": 100, "input_length": 120, "num_symbols": 8,
        "copy_len": 10, "loss_steps": loss_steps, "memoryless_baseline": pytest.approx(baseline),
        "solve_threshold": 0.99, "batch_size": 64, "val_size": 1000, "seed": 0,
    }


def test_copy_eval_lengths_set_the_longest_batch():
    task = CopyTask(seq_len=10, copy_len=2, val_size=4, eval_lengths=(30,))
    assert task.eval_lengths == (30,)
    shape = task.batch_shape()  # 30 + 2M steps: the longest evaluation
    assert (shape.steps, shape.steps_key) == (34, "task.eval_lengths")


# ---- adding: data layout ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ADDING_VARIANTS)
def test_adding_batch_shapes_and_target(variant):
    task = AddingTask(seq_len=31, variant=variant, batch_size=9)
    batch = task.train_batch()
    assert batch.inputs.shape == (31, 9, 2) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (9, 1) and batch.targets.dtype == torch.float32
    assert batch.lengths is None
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert (values >= 0).all() and (values <= 1).all()
    assert torch.allclose(batch.targets[:, 0], (values * markers).sum(0))
    assert task.spec.output_kind == "sequence" and task.spec.loss_kind == "regression"


@pytest.mark.parametrize("seq_len", [10, 11])
@pytest.mark.parametrize("variant", ADDING_VARIANTS)
def test_adding_markers_obey_the_variant(variant, seq_len):
    task = AddingTask(seq_len=seq_len, variant=variant, batch_size=2000)
    markers = task.train_batch().inputs[..., 1]  # (T, B)
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers.sum(0) == 2).all()  # exactly two marks, at distinct steps
    half = seq_len // 2
    in_first_half = markers[:half].sum(0)  # (B,)
    if variant == "halves":
        assert (in_first_half == 1).all()
    else:  # both marks in the first half, or both in the second, happens (P = 2/9 each at T = 10)
        assert (in_first_half == 2).any() and (in_first_half == 0).any()
        # each step is marked with probability 2/T: 2B/T = 400 or 364 expected, sd < 20
        expected = 2 * 2000 / seq_len
        assert ((markers.sum(1) - expected).abs() < 100).all()


# ---- adding: baseline, loss and metrics -------------------------------------------------------
@pytest.mark.parametrize("variant", ADDING_VARIANTS)
def test_adding_baseline_is_the_mse_of_predicting_one(variant):
    task = AddingTask(seq_len=20, variant=variant, val_size=20_000, batch_size=20_000)
    assert task.memoryless_baseline == pytest.approx(1 / 6)
    metrics = task.evaluate(lambda batch, state: (torch.ones(batch.targets.shape), state))
    # Var((a + b - 1)^2) = 7/180, so the mean of 20k draws has sd 0.0014; allow 5 sd.
    assert metrics["loss"] == pytest.approx(1 / 6, abs=0.007)
    assert metrics["loss_over_baseline"] == pytest.approx(1.0, abs=0.042)


@pytest.mark.parametrize("variant", ADDING_VARIANTS)
def test_adding_oracle_solves(variant):
    task = AddingTask(seq_len=20, variant=variant, val_size=50, batch_size=16)
    metrics = task.evaluate(adding_oracle)
    assert metrics["loss"] < 1e-10 and metrics["accuracy"] == 1.0
    assert task.solved(metrics)
    assert task.main_metric in metrics and task.main_metric_mode == "min"

    def off_by(error):
        return lambda batch, state: (adding_oracle(batch, state)[0] + error, state)

    assert task.evaluate(off_by(0.039))["accuracy"] == 1.0  # Hochreiter: |error| < 0.04
    off = task.evaluate(off_by(0.041))
    assert off["accuracy"] == 0.0
    assert off["loss"] == pytest.approx(0.041**2, rel=1e-3) and task.solved(off)
    assert not task.solved(task.evaluate(off_by(0.2)))
    assert AddingTask(solve_mse=1e-4).solved(off) is False


def test_adding_batch_metrics_agree_with_loss():
    task = AddingTask(seq_len=10, batch_size=8)
    batch = task.train_batch()
    outputs = torch.rand(8, 1, requires_grad=True)
    metrics = task.batch_metrics(outputs, batch)
    assert metrics["loss"] == pytest.approx(task.loss(outputs, batch).item(), rel=1e-6)
    assert set(metrics) == {"loss", "loss_over_baseline", "accuracy"}
    with pytest.raises(ValueError, match=r"expected \(B, 1\)"):
        task.loss(torch.zeros(8), batch)


# ---- both: evaluation, determinism, resume ----------------------------------------------------
@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_evaluate_weights_every_sample_equally(kind, variant):
    """10 samples in chunks of 4, 4, 2: right only on the chunk of 2 -> 0.2, not 1/3."""
    task = make_task(kind, variant=variant, val_size=10, batch_size=4)
    oracle = copy_oracle if kind == "copy" else adding_oracle

    def right_on_small_chunks(batch, state):
        outputs, _ = oracle(batch, state)
        if batch.inputs.shape[1] == 2:
            return outputs, state
        # copy: every class shifted (all wrong); adding: off by exactly 1
        return (outputs.roll(1, dims=-1) if kind == "copy" else outputs + 1), state

    sizes = []

    def record_size(batch, state):
        sizes.append(batch.inputs.shape[1])
        return oracle(batch, state)

    task.evaluate(record_size)
    assert sizes == [4, 4, 2]
    metrics = task.evaluate(right_on_small_chunks)
    accuracy = metrics["recall_accuracy"] if kind == "copy" else metrics["accuracy"]
    assert accuracy == pytest.approx(0.2)
    if kind == "adding":
        assert metrics["loss"] == pytest.approx(0.8, rel=1e-5)  # 8 sequences off by exactly 1


@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_same_seed_same_batches_different_seed_different(kind, variant):
    a, b, c = (make_task(kind, variant=variant, seed=s) for s in (3, 3, 4))
    for _ in range(3):
        batch_a, batch_b, batch_c = a.train_batch(), b.train_batch(), c.train_batch()
        assert torch.equal(batch_a.inputs, batch_b.inputs)
        assert torch.equal(batch_a.targets, batch_b.targets)
        assert not torch.equal(batch_a.inputs, batch_c.inputs)
    assert not torch.equal(a.train_batch().inputs, batch_a.inputs)  # batches change over time


def seen_by_evaluate(task: Task, split: str = "val") -> torch.Tensor:
    seen = []

    def record(batch, state):
        seen.append(batch.inputs)
        oracle = copy_oracle if isinstance(task, CopyTask) else adding_oracle
        return oracle(batch, state)

    task.evaluate(record, split)
    return torch.cat(seen, dim=1)  # (T', N, F)


@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_validation_set_is_fixed_and_independent_of_training_draws(kind, variant):
    fresh = make_task(kind, variant=variant, val_size=40, batch_size=16)
    trained = make_task(kind, variant=variant, val_size=40, batch_size=16)
    for _ in range(5):
        trained.train_batch()
    val = seen_by_evaluate(fresh)
    assert torch.equal(val, seen_by_evaluate(trained))
    assert torch.equal(val, seen_by_evaluate(fresh))  # evaluating twice: the same set
    assert not torch.equal(val[:, :16], fresh.train_batch().inputs)  # not the training stream
    assert not torch.equal(val, seen_by_evaluate(fresh, "test"))
    other_seed = make_task(kind, variant=variant, val_size=40, batch_size=16, seed=1)
    assert not torch.equal(val, seen_by_evaluate(other_seed))


@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_training_stream_depends_on_the_seed_only(kind, variant):
    small = make_task(kind, variant=variant, val_size=3, batch_size=5)
    large = make_task(kind, variant=variant, val_size=70, batch_size=5)
    for _ in range(2):
        assert torch.equal(small.train_batch().inputs, large.train_batch().inputs)


@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_state_dict_round_trip_reproduces_the_next_batch(kind, variant):
    task = make_task(kind, variant=variant)
    for _ in range(3):
        task.train_batch()
    state = task.state_dict()
    expected = task.train_batch()
    resumed = make_task(kind, variant=variant, seed=99)  # the state, not the seed, decides
    resumed.load_state_dict(state)
    batch = resumed.train_batch()
    assert torch.equal(batch.inputs, expected.inputs)
    assert torch.equal(batch.targets, expected.targets)
    assert torch.equal(resumed.train_batch().inputs, task.train_batch().inputs)


@pytest.mark.parametrize("kind, variant", TASK_KINDS)
def test_describe_names_the_variant_and_baseline(kind, variant):
    task = make_task(kind, variant=variant)
    facts = task.describe()
    assert facts["task"] == kind and facts["variant"] == variant and facts["seq_len"] == 12
    assert facts["input_length"] == (32 if kind == "copy" else 12)
    assert facts["memoryless_baseline"] == task.memoryless_baseline


# ---- argument validation ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 0}, "seq_len=0: must be an integer >= 1"),
        ({"seq_len": 2.5}, "seq_len=2.5: must be an integer >= 1"),
        (
            {"variant": "bai"},
            "variant='bai': unknown copy variant; allowed: 'arjovsky', 'tcn', 's4', 'selective'",
        ),
        ({"num_symbols": 1}, "num_symbols=1: must be an integer >= 2"),
        ({"copy_len": 0}, "copy_len=0: must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size=0: must be an integer >= 1"),
        ({"val_size": -5}, "val_size=-5: must be an integer >= 1"),
        ({"seed": -1}, "seed=-1: must be an integer >= 0"),
        ({"solve_threshold": 1.5}, r"solve_threshold=1.5: must be a number in \(0, 1\]"),
    ],
)
def test_copy_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CopyTask(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 1}, "seq_len=1: must be an integer >= 2"),
        (
            {"variant": "tcn"},
            "variant='tcn': unknown adding variant; allowed: 'halves', 'anywhere'",
        ),
        ({"batch_size": True}, "batch_size=True: must be an integer >= 1"),
        ({"val_size": 0}, "val_size=0: must be an integer >= 1"),
        ({"solve_mse": 0}, "solve_mse=0: must be a number > 0"),
    ],
)
def test_adding_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AddingTask(**kwargs)


@pytest.mark.parametrize("kind", ["copy", "adding"])
def test_evaluate_rejects_unknown_split(kind):
    with pytest.raises(ValueError, match="split='train': unknown split; allowed: val, test"):
        make_task(kind).evaluate(copy_oracle, "train")


@pytest.mark.parametrize("seq_len", [10, 11])
@pytest.mark.parametrize("variant", ADDING_VARIANTS)
def test_adding_markers_reach_every_step_their_variant_allows(variant, seq_len):
    """Where the marks can fall, both ends included: "halves" puts the first in [0, T//2) and the second
    in [T//2, T) (Le et al. 2015), "anywhere" both anywhere in [0, T). A range cut by one step at either end
    (the last step never marked, say) fails here; 4,000 draws reach each allowed step with P > 1 - 1e-100."""
    task = AddingTask(seq_len=seq_len, variant=variant, batch_size=4000)
    markers = task.train_batch().inputs[..., 1]  # (T, B)
    steps = torch.arange(seq_len).unsqueeze(1).expand_as(markers)
    first = steps.masked_fill(markers == 0, seq_len).min(0).values   # (B,) the earlier mark
    second = steps.masked_fill(markers == 0, -1).max(0).values       # (B,) the later mark
    half = seq_len // 2
    if variant == "halves":
        assert set(first.tolist()) == set(range(half)) and set(second.tolist()) == set(range(half, seq_len))
    else:
        assert set(first.tolist()) == set(range(seq_len - 1)) and set(second.tolist()) == set(range(1, seq_len))


def test_adding_is_solved_strictly_below_its_mse_and_counts_errors_strictly_inside_the_tolerance():
    """Hochreiter & Schmidhuber's criterion: |prediction - target| < 0.04; solved: loss < solve_mse. An
    error of exactly the tolerance, or a loss of exactly solve_mse, is outside."""
    task = AddingTask(seq_len=10, batch_size=3, val_size=3, seed=0, solve_mse=0.01)
    assert (task.solved({"loss": 0.01}), task.solved({"loss": 0.0099})) == (False, True)
    tolerance = torch.tensor(0.04).item()  # the float32 nearest 0.04, as the outputs hold it
    outputs = torch.tensor([[tolerance], [0.039], [-0.039]])
    batch = Batch(torch.zeros(10, 3, 2), torch.zeros(3, 1))
    assert task._counts(outputs, batch)["within_tolerance"] == 2
