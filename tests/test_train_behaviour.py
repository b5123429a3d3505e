"""The training loop's behaviour, each against a hand computation on a model and task small enough to
know every number: clipping (norm and value), the learning-rate schedule's cadence, the best-so-far
tracking, carried state resets, early stopping, divergence and the non-finite guard rail.

Each test here was shown to fail with the bug it names planted in `rnnbench/run/train.py`
(docs/testing.md lists them)."""

import json
import time
import math
import re

import pytest
import torch
from torch import nn

from conftest import run_cli
from rnnbench import evaluate
from rnnbench.records import run_folder
from rnnbench.modules.cells import LSTMCell
from rnnbench.modules.models import SequenceModel
from rnnbench.run import checkpoint
from rnnbench.run import train
from rnnbench.run.train import TrainSettings, Trainer
from rnnbench.tasks.base import Batch, IOSpec, Task
from test_lm_data import char_task

GRAD = (3.0, -4.0)  # the loss is GRAD · w, so ∂L/∂w = GRAD at every step: global norm 5


class Linear(nn.Module):
    """outputs = w at each step, so a one-step task's loss GRAD · outputs has gradient GRAD. The carried
    state counts the windows since it was last reset; `received` keeps the state each window started from."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(len(GRAD)))
        self.received = []

    def forward(self, inputs, lengths=None, state=None):
        self.received.append(None if state is None else int(state))
        return self.w.expand(inputs.shape[0], -1), (torch.zeros(()) if state is None else state) + 1  # (T, 2)


class Scripted(Task):
    """A task whose training loss is GRAD · w (or a scripted non-finite value), whose evaluations return
    the scripted metrics in turn, and whose stream resets the carried state where `resets` says."""

    name = "scripted"
    main_metric = "accuracy"
    main_metric_mode = "max"

    def __init__(self, evals=(), resets=(), stateful=False, nonfinite_at=(), solved_at_accuracy=None,
                 carry=None):
        super().__init__()
        self.spec = IOSpec("continuous", 1, len(GRAD), "sequence", "regression", stateful=stateful)
        self.evals, self.resets, self.nonfinite_at = list(evals), list(resets), set(nonfinite_at)
        self.solved_at_accuracy = solved_at_accuracy
        self.carry = carry  # (window length, steps the next window starts on): truncated BPTT with k1 < k2
        self.drawn = 0

    def train_batch(self):
        self.drawn += 1
        reset = self.resets[self.drawn - 1] if self.resets else False
        if self.carry is None:
            return Batch(torch.zeros(1, 1, 1), torch.zeros(1), reset_state=reset)
        batch = Batch(torch.zeros(self.carry[0], 1, 1), torch.zeros(1), reset_state=reset)
        batch.state_carry_steps = self.carry[1]
        return batch

    def loss(self, outputs, batch):
        loss = (torch.tensor(GRAD) * outputs).sum()
        return loss * math.nan if self.drawn in self.nonfinite_at else loss

    def batch_metrics(self, outputs, batch):
        return {"loss": float(self.loss(outputs, batch))}

    def evaluate(self, predict, split="val"):
        return self.evals.pop(0) if self.evals else {"loss": 1.0, "accuracy": 0.0}

    def solved(self, metrics):
        return self.solved_at_accuracy is not None and metrics["accuracy"] >= self.solved_at_accuracy


class Rows(list):
    """A sink keeping the logged rows."""

    log = list.append

    def log_profile(self, step, profile):
        pass


def settings(**kw):
    return TrainSettings(**{"max_steps": 1, "log_every": 1, "eval_every": 10**6, "profile_every": 0,
                            "progress": False, **kw})


def one_sgd_step(**kw) -> list[float]:
    """w after one plain SGD step (lr 1) from 0: minus the gradient as clipped."""
    model = Linear()
    Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=1.0), None, settings(**kw), [Rows()]).fit()
    return model.w.detach().tolist()


# ---- clipping ------------------------------------------------------------------------------------
def test_norm_clipping_scales_the_whole_gradient_to_the_threshold():
    """‖(3, -4)‖ = 5 clipped to 2.5: the gradient halves, direction kept."""
    assert one_sgd_step(clip_mode="norm", clip=2.5) == pytest.approx([-1.5, 2.0])


def test_norm_clipping_leaves_a_gradient_under_the_threshold_alone():
    assert one_sgd_step(clip_mode="norm", clip=10.0) == pytest.approx([-3.0, 4.0])


def test_value_clipping_clamps_each_entry():
    """(3, -4) clamped entry-wise to ±3.5: 3 passes untouched, -4 becomes -3.5 (by norm: (2.1, -2.8))."""
    assert one_sgd_step(clip_mode="value", clip=3.5) == pytest.approx([-3.0, 3.5])


@pytest.mark.parametrize("clip_mode, clip", [("off", 1.0), ("norm", 0.0), ("value", 0.0)])
def test_no_clipping_applies_the_raw_gradient(clip_mode, clip):
    assert one_sgd_step(clip_mode=clip_mode, clip=clip) == pytest.approx([-3.0, 4.0])


def test_logged_gradient_norms_are_before_and_after_clipping():
    rows = Rows()
    model = Linear()
    Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=1.0), None,
            settings(clip_mode="value", clip=3.5), [rows]).fit()
    assert rows[0]["grad/global_norm"] == pytest.approx(5.0)
    assert rows[0]["grad/global_norm_clipped"] == pytest.approx(math.hypot(3.0, 3.5))



@pytest.mark.parametrize("clip_mode, clipped", [("norm", [-0.3, 0.4]), ("value", [-0.5, 0.5])])
def test_a_threshold_below_one_clips_too(clip_mode, clipped):
    """clip=0.5: by norm the gradient shrinks to a tenth (5 -> 0.5), by value each entry to ±0.5."""
    assert one_sgd_step(clip_mode=clip_mode, clip=0.5) == pytest.approx(clipped)


@pytest.mark.parametrize("clip_mode, clip, after", [("norm", 2.5, 2.5), ("norm", 10.0, 5.0), ("off", 1.0, 5.0)])
def test_the_logged_clipped_norm_is_the_norm_applied_in_every_mode(clip_mode, clip, after):
    rows = Rows()
    model = Linear()
    Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=1.0), None,
            settings(clip_mode=clip_mode, clip=clip), [rows]).fit()
    assert rows[0]["grad/global_norm_clipped"] == pytest.approx(after)


# ---- the learning-rate schedule -------------------------------------------------------------------
def logged_lrs(make_scheduler, task=None, **kw) -> dict[int, float]:
    """The learning rate logged at each logged step (SGD from lr 1): the rate after that step's update."""
    model, rows = Linear(), Rows()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    Trainer(model, task or Scripted(), optimizer, make_scheduler(optimizer), settings(clip_mode="off", **kw),
            [rows]).fit()
    return {row["step"]: row["lr"] for row in rows if "lr" in row}


def test_cosine_schedule_advances_once_per_optimiser_step():
    """Logged every 3rd step of 10: after k steps the rate is (1 + cos(πk/10)) / 2, whatever the cadence."""
    lrs = logged_lrs(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10),
                     max_steps=10, log_every=3)
    assert list(lrs) == [3, 6, 9, 10]
    assert lrs == pytest.approx({k: (1 + math.cos(math.pi * k / 10)) / 2 for k in lrs})


def test_step_schedule_advances_once_per_optimiser_step():
    """StepLR(step_size=2, gamma=0.5), logged every 3rd step: after k steps the rate is 0.5^(k // 2)."""
    lrs = logged_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
                     max_steps=10, log_every=3)
    assert lrs == pytest.approx({3: 0.5, 6: 0.125, 9: 0.5**4, 10: 0.5**5})


def test_plateau_schedule_steps_once_per_evaluation_on_the_validation_loss():
    """ReduceLROnPlateau(patience 0, factor 0.5), evaluating every 2nd step of 8. The validation loss
    improves at the 2nd evaluation and not after (while accuracy, the main metric, improves at each): the rate halves
    after the 3rd and the 4th evaluations, so the rate logged at step 8 (before that step's evaluation) is
    0.5 and the final rate 0.25. Stepped on every optimiser step, or on accuracy, it would differ."""
    evals = [{"loss": 2.0, "accuracy": 0.1}, {"loss": 1.0, "accuracy": 0.2},
             {"loss": 1.5, "accuracy": 0.3}, {"loss": 1.2, "accuracy": 0.4}]
    model, rows = Linear(), Rows()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=0)
    Trainer(model, Scripted(evals=evals), optimizer, plateau,
            settings(max_steps=8, log_every=1, eval_every=2, clip_mode="off"), [rows]).fit()
    assert [row["lr"] for row in rows] == [1.0] * 6 + [0.5] * 2
    assert optimizer.param_groups[0]["lr"] == 0.25



COPY_RUN = ["task=copy", "task.seq_len=5", "task.copy_len=3", "task.val_size=32", "train.batch_size=8",
            "model.hidden_size=16", "train.profile_every=0", "train.threads=1", "logger.wandb.mode=disabled"]
COPY_MAX = {"val/recall_accuracy", "val/sequence_accuracy", "val/accuracy_all_steps"}  # the rest: min


def copy_run(tmp_path, *overrides) -> tuple:
    """`python -m rnnbench` on a tiny copy task: the run folder and the rows of its metrics.jsonl."""
    folder = tmp_path / "run"
    proc = run_cli(*COPY_RUN, *overrides, f"hydra.run.dir={folder}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("schedule, closed_form", [
    (["schedule=cosine"], lambda k: 0.01 * (1 + math.cos(math.pi * k / 12)) / 2),
    (["schedule=step", "schedule.step_size=3", "schedule.gamma=0.5"], lambda k: 0.01 * 0.5 ** (k // 3)),
], ids=["cosine", "step"])
def test_a_runs_logged_learning_rates_follow_the_schedules_closed_form(tmp_path, schedule, closed_form):
    """`python -m rnnbench ... schedule=...`, 12 steps logged every 5th: metrics.jsonl's lr after k steps."""
    _, rows = copy_run(tmp_path, "train.max_steps=12", "train.eval_every=100", "train.log_every=5",
                       "optim.lr=0.01", *schedule)
    lrs = {row["step"]: row["lr"] for row in rows if "lr" in row}
    assert lrs == pytest.approx({k: closed_form(k) for k in (5, 10, 12)}, abs=1e-12)


def test_a_runs_plateau_schedule_divides_the_rate_after_each_evaluation_that_did_not_improve(tmp_path):
    """`python -m rnnbench ... schedule=plateau` (ReduceLROnPlateau: factor 0.25, patience 0, threshold 0):
    read back from metrics.jsonl, the rate logged at step k is 0.03 × 0.25^(evaluations before step k whose
    validation loss did not go below the best before it), and nothing else moves it."""
    _, rows = copy_run(tmp_path, "train.max_steps=24", "train.eval_every=2", "train.log_every=1",
                       "optim.lr=0.03", "schedule=plateau")
    losses = {row["step"]: row["val/loss"] for row in rows if "val/loss" in row}
    lrs = {row["step"]: row["lr"] for row in rows if "lr" in row}
    best, lr, expected, reductions = math.inf, 0.03, {}, 0
    for step in sorted(lrs):
        expected[step] = lr  # the rate this step's update used: evaluations before it have acted
        if step in losses:
            if losses[step] < best:
                best = losses[step]
            else:
                lr, reductions = lr * 0.25, reductions + 1
    assert 0 < reductions < len(losses) - 1, losses  # both branches taken: the test can fail either way
    assert lrs == pytest.approx(expected, rel=1e-12)


# ---- the best evaluation so far -------------------------------------------------------------------
def test_best_tracks_each_metric_in_its_direction_and_keeps_the_best_main_metric_model():
    """Five evaluations (every 2nd step of 10), neither monotone. val/loss (min) is best at step 6,
    val/accuracy (max, the main metric) at step 4; the model kept is the one of step 4 (SGD from 0 at lr 1:
    w = -4 · GRAD), saved each time accuracy improved and not after."""
    evals = [{"loss": 3.0, "accuracy": 0.3}, {"loss": 2.0, "accuracy": 0.9}, {"loss": 1.0, "accuracy": 0.5},
             {"loss": 4.0, "accuracy": 0.1}, {"loss": 1.5, "accuracy": 0.7}]
    model, rows, kept = Linear(), Rows(), {}
    trainer = Trainer(model, Scripted(evals=evals), torch.optim.SGD(model.parameters(), lr=1.0), None,
                      settings(max_steps=10, eval_every=2, clip_mode="off"), [rows],
                      save_best=lambda step: kept.update({step: model.w.detach().tolist()}))
    result = trainer.fit()
    logged = {row["step"]: row for row in rows if "val/loss" in row}
    assert list(logged) == [2, 4, 6, 8, 10]
    assert result.best == {"val/loss": 1.0, "val/accuracy": 0.9}
    assert result.best_step == {"val/loss": 6, "val/accuracy": 4}
    assert {k: logged[step][k] for k, step in result.best_step.items()} == result.best
    assert list(kept) == [2, 4]
    assert kept[4] == pytest.approx([-4 * g for g in GRAD])



def test_a_tie_keeps_the_first_best_and_a_non_finite_metric_is_passed_over():
    """Equal evaluations at steps 2 and 4: each metric's best stays at step 2 (a later tie is no
    improvement), for min and max metrics alike. A NaN loss at step 2 is no best, and it does not stop
    the metrics after it from being tracked."""
    evals = [{"loss": 2.0, "accuracy": 0.5}, {"loss": 2.0, "accuracy": 0.5}]
    result = Trainer(Linear(), Scripted(evals=evals), torch.optim.SGD(Linear().parameters(), lr=1.0), None,
                     settings(max_steps=4, eval_every=2), [Rows()]).fit()
    assert result.best_step == {"val/loss": 2, "val/accuracy": 2}
    evals = [{"loss": math.nan, "accuracy": 0.5}, {"loss": 3.0, "accuracy": 0.4}]
    result = Trainer(Linear(), Scripted(evals=evals), torch.optim.SGD(Linear().parameters(), lr=1.0), None,
                     settings(max_steps=4, eval_every=2), [Rows()]).fit()
    assert (result.best, result.best_step) == ({"val/accuracy": 0.5, "val/loss": 3.0}, {"val/accuracy": 2, "val/loss": 4})


def test_a_runs_best_metrics_and_best_pt_are_the_best_evaluation_in_metrics_jsonl(tmp_path):
    """A real run, read back from its files: for each val metric the summary's best and best_step are the
    first best evaluation in metrics.jsonl in the metric's own direction (loss: min; recall accuracy, the
    main metric: max), and best.pt holds the model of the main metric's best step."""
    folder, rows = copy_run(tmp_path, "train.max_steps=30", "train.eval_every=5", "train.log_every=10",
                            "optim.lr=0.03")
    evals = [row for row in rows if "val/loss" in row]
    summary = run_folder.read_summary(folder)
    assert [row["step"] for row in evals] == [5, 10, 15, 20, 25, 30]
    for key in ("val/loss", "val/recall_accuracy"):  # else min and max would agree and prove nothing
        assert len({row[key] for row in evals}) > 1, [row[key] for row in evals]
    for key in summary.best:
        pick = max if key in COPY_MAX else min
        best = pick(row[key] for row in evals)
        assert summary.best[key] == best, key
        assert summary.best_step[key] == next(row["step"] for row in evals if row[key] == best), key
    main = summary.main_metric
    assert torch.load(checkpoint.best(folder), weights_only=False)["step"] == summary.best_step[main]
    result, _ = evaluate.evaluate_run(folder, [], splits=("val",), which="best")
    assert result["metrics"][main] == summary.best[main]


# ---- carried state (stateful tasks, truncated BPTT) ------------------------------------------------
def test_carried_state_resets_exactly_where_the_stream_says():
    """The model's state counts the windows since the last reset: a window flagged `reset_state` starts
    from no state (None), every other one from the state the previous window left."""
    resets = [True, False, False, True, False, True, True, False]
    model = Linear()
    Trainer(model, Scripted(resets=resets, stateful=True), torch.optim.SGD(model.parameters(), lr=1.0), None,
            settings(max_steps=len(resets)), [Rows()]).fit()
    assert model.received == [None, 1, 2, None, 1, None, None, 1]




def test_overlapping_windows_carry_the_state_from_k1_steps_in():
    """Windows of 4 steps starting 1 step apart (`state_carry_steps=1`): the model runs the first step,
    then the other 3; the next window starts from the state after that first step, not after all 4."""
    model = Linear()
    Trainer(model, Scripted(resets=[True, False, True, False], stateful=True, carry=(4, 1)),
            torch.optim.SGD(model.parameters(), lr=1.0), None, settings(max_steps=4), [Rows()]).fit()
    assert model.received == [None, 1, 1, 2, None, 1, 1, 2]  # (head, tail) per window

def test_a_language_models_state_resets_at_each_epoch_of_its_stream_and_nowhere_else(tmp_path):
    """The real char-level LM task and an LSTM over two and a bit epochs of windows: a training window
    starts from no state exactly where the task's batches say `reset_state` (each epoch's first window)."""
    task = char_task(tmp_path, bptt=50, batch_size=2)
    model = SequenceModel(task.spec, LSTMCell, 8)
    resets, fresh = [], []
    draw, forward = task.train_batch, model.forward
    task.train_batch = lambda: resets.append((batch := draw()).reset_state) or batch
    model.forward = lambda inputs, lengths=None, state=None: fresh.append(state is None) or forward(
        inputs, lengths, state)
    steps = 2 * task.windows_per_epoch + 3
    Trainer(model, task, torch.optim.SGD(model.parameters(), lr=0.1), None, settings(max_steps=steps), [Rows()]).fit()
    assert resets.count(True) == 3 and resets[0] and resets[task.windows_per_epoch]
    assert fresh[:steps] == resets  # after these, the final evaluation's own calls


def test_a_stateless_task_never_carries_state():
    model = Linear()
    Trainer(model, Scripted(resets=[False] * 3), torch.optim.SGD(model.parameters(), lr=1.0), None,
            settings(max_steps=3), [Rows()]).fit()
    assert model.received == [None] * 3


# ---- early stopping, divergence and the guard rail -------------------------------------------------
def test_early_stopping_ends_the_run_at_the_first_solved_evaluation():
    """Solved at accuracy ≥ 0.9, reached at the 2nd evaluation (step 4 of 10)."""
    evals = [{"loss": 1.0, "accuracy": 0.5}, {"loss": 1.0, "accuracy": 0.95}, {"loss": 1.0, "accuracy": 0.99}]
    model = Linear()
    result = Trainer(model, Scripted(evals=evals, solved_at_accuracy=0.9), torch.optim.SGD(model.parameters()),
                     None, settings(max_steps=10, eval_every=2, early_stop=True), [Rows()]).fit()
    assert (result.status, result.steps, result.solved_at) == ("completed", 4, 4)


def test_without_early_stopping_a_solved_run_goes_on():
    evals = [{"loss": 1.0, "accuracy": 0.95}]
    model = Linear()
    result = Trainer(model, Scripted(evals=evals, solved_at_accuracy=0.9), torch.optim.SGD(model.parameters()),
                     None, settings(max_steps=6, eval_every=2), [Rows()]).fit()
    assert (result.status, result.steps, result.solved_at) == ("completed", 6, 2)


def test_a_non_finite_loss_ends_the_run_as_diverged_without_applying_that_step():
    """Loss NaN at step 3: two updates applied (w = -2 · GRAD), the run ends there, a `diverged` row."""
    model, rows = Linear(), Rows()
    result = Trainer(model, Scripted(nonfinite_at={3}), torch.optim.SGD(model.parameters(), lr=1.0), None,
                     settings(max_steps=10, clip_mode="off"), [rows]).fit()
    assert (result.status, result.diverged_at, result.steps) == ("diverged", 3, 2)
    assert model.w.detach().tolist() == pytest.approx([-2 * g for g in GRAD])
    assert rows[-1]["step"] == 3 and rows[-1]["diverged"] is True and math.isnan(rows[-1]["train/loss"])


def test_the_guard_rail_skips_non_finite_steps_resets_state_and_backs_off_the_learning_rate():
    """skip_nonfinite=2, lr_backoff=0.5, NaN at steps 3 and 5 of 6: both skipped (no update, carried state
    restarted, rate halved each time), so 4 updates at rates 1, 1, 0.5, 0.25 and the run completes."""
    model = Linear()
    task = Scripted(nonfinite_at={3, 5}, resets=[False] * 6, stateful=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = Trainer(model, task, optimizer, None,
                     settings(max_steps=6, clip_mode="off", skip_nonfinite=2, lr_backoff=0.5), [Rows()]).fit()
    assert (result.status, result.skipped_steps, result.steps) == ("completed", [3, 5], 6)
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert model.w.detach().tolist() == pytest.approx([-2.75 * g for g in GRAD])
    assert model.received == [None, 1, 2, None, 1, None]  # the window after a skipped one starts afresh


def test_the_guard_rail_diverges_once_its_skips_are_spent():
    model = Linear()
    result = Trainer(model, Scripted(nonfinite_at={2, 4}), torch.optim.SGD(model.parameters(), lr=1.0), None,
                     settings(max_steps=6, skip_nonfinite=1), [Rows()]).fit()
    assert (result.status, result.skipped_steps, result.diverged_at) == ("diverged", [2], 4)


def test_a_skipped_step_is_logged_with_its_loss_norm_and_rate():
    """The guard rail's row for a skipped step: its step, the non-finite loss and norm that caused the
    skip, the flag, and the rate the next step will use (after the back-off)."""
    rows = Rows()
    model = Linear()
    Trainer(model, Scripted(nonfinite_at={2}), torch.optim.SGD(model.parameters(), lr=1.0), None,
            settings(max_steps=3, skip_nonfinite=1, lr_backoff=0.5), [rows]).fit()
    skipped = [row for row in rows if row.get("skipped_nonfinite")]
    assert len(skipped) == 1 and set(skipped[0]) == {"step", "train/loss", "grad/global_norm", "skipped_nonfinite", "lr"}
    assert (skipped[0]["step"], skipped[0]["lr"]) == (2, 0.5)
    assert math.isnan(skipped[0]["train/loss"]) and not math.isfinite(skipped[0]["grad/global_norm"])


def test_throughput_and_time_count_every_training_step():
    """Four windows of 3 steps x 2 sequences: 24 sequence steps; the logged time grows and stays within
    the wall time of fit(), and the logged throughput is the steps over the training time so far."""
    class Windows(Scripted):
        def train_batch(self):
            self.drawn += 1
            return Batch(torch.zeros(3, 2, 1), torch.zeros(2))

    rows = Rows()
    model = Linear()
    started = time.perf_counter()
    result = Trainer(model, Windows(), torch.optim.SGD(model.parameters(), lr=1.0), None,
                     settings(max_steps=4), [rows]).fit()
    wall = time.perf_counter() - started
    assert result.sequence_steps == 24
    times = [row["time_s"] for row in rows if "time_s" in row]
    assert len(times) == 4 and times == sorted(times) and 0 < times[-1] <= wall
    assert 0 < result.train_time_s <= wall
    assert rows[-1]["throughput"] == pytest.approx(24 / result.train_time_s, rel=0.05)


# ------------------------------------------------------------------------------------------------
# Checkpoints by default: at evaluations (at most 1% of the time) and by the clock


class NoRows:
    def log(self, row):
        pass

    def log_profile(self, step, profile):
        pass


def checkpointed_steps(write_s: float = 0.0, **settings) -> list[int]:
    """The steps a 20-step run checkpoints at, a checkpoint taking `write_s` to write."""
    from rnnbench.tasks.adding import AddingTask

    torch.manual_seed(0)
    task = AddingTask(seq_len=4, batch_size=4, val_size=8, seed=0)
    model = SequenceModel(task.spec, LSTMCell, 4)
    steps = []

    def save(state):
        steps.append(state["step"])
        time.sleep(write_s)

    defaults = dict(max_steps=20, log_every=5, eval_every=5, profile_every=0, progress=False)
    Trainer(model, task, torch.optim.SGD(model.parameters(), lr=0.1), None,
            TrainSettings(**{**defaults, **settings}), [NoRows()], checkpoint=save).fit()
    return steps


def test_a_run_checkpoints_at_every_evaluation_by_default(monkeypatch):
    assert TrainSettings().checkpoint_at_eval and TrainSettings().checkpoint_minutes > 0
    monkeypatch.setattr(train, "CHECKPOINT_TIME_SHARE", math.inf)  # no cap: the next test has it
    assert checkpointed_steps() == [5, 10, 15, 20]
    assert checkpointed_steps(checkpoint_at_eval=False) == [20]  # the final one only (5 minutes not reached)


def test_checkpoints_at_evaluations_skip_what_would_take_over_1_percent_of_the_time():
    # a 50 ms write may come again after 5 s: the 20 steps take far less, so only the first and the final
    assert checkpointed_steps(write_s=0.05) == [5, 20]


def test_checkpoints_by_the_clock():
    assert checkpointed_steps(checkpoint_at_eval=False, checkpoint_minutes=1e-9) == list(range(1, 21))


# ------------------------------------------------------------------------------------------------
# Progress where output is not a terminal (SLURM, nohup, CI): log lines, on stdout and in app.log


def test_a_run_whose_output_is_not_a_terminal_logs_progress_lines(tmp_path):
    proc = run_cli("task=adding", "task.seq_len=8", "task.val_size=16", "train.batch_size=4", "model.hidden_size=8",
                   "train.max_steps=4", "train.eval_every=2", "train.threads=1", "logger.wandb.mode=disabled",
                   "logger.progress_every_s=0", "hydra.run.dir=run", cwd=tmp_path)  # a line every step
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "] - step " in line]
    assert [line.split("] - ")[1].split(",")[0] for line in lines] == ["step 1/4 (25%)", "step 2/4 (50%)",
                                                                        "step 3/4 (75%)", "step 4/4 (100%)"]
    assert re.search(r"step 3/4 \(75%\), loss [\d.e+-]+, val/loss=[\d.e+-]+ \(step 2\), [\d.e+]+ steps/s, ETA 0 s$",
                     lines[2]), lines[2]
    assert "val/loss" not in lines[0]  # no evaluation yet
    assert lines == [line for line in (tmp_path / "run" / "app.log").read_text().splitlines() if "] - step " in line]


def test_progress_durations_read_as_words():
    assert [train.duration(s) for s in (0.4, 12, 200, 7500)] == ["0 s", "12 s", "3 min 20 s", "2 h 05 min"]


def test_progress_durations_change_unit_at_a_whole_minute_and_hour():
    assert [train.duration(s) for s in (59.4, 59.6, 60, 120, 3599, 3600, 7200)] == [
        "59 s", "1 min 00 s", "1 min 00 s", "2 min 00 s", "59 min 59 s", "1 h 00 min", "2 h 00 min"]


def test_progress_lines_report_each_steps_loss_and_the_last_evaluation(caplog):
    """In process (the run above is a child): with a line every step, each line is the step of the total,
    that step's loss (plain SGD at lr 0.1 from 0: GRAD · w = -2.5 (k - 1) at step k) and, from the first
    evaluation on, the main metric and the step it was measured at."""
    model = Linear()
    with caplog.at_level("INFO", logger=train.log.name):
        Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                settings(max_steps=4, eval_every=2, clip_mode="off", progress=True, progress_every_s=0), [Rows()]).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(", ")[:2] for line in lines] == [
        [f"step {k}/4 ({25 * k}%)", f"loss {-2.5 * (k - 1) + 0.0:.4g}"] for k in (1, 2, 3, 4)]
    assert re.fullmatch(r"step 1/4 \(25%\), loss 0, [\d.e+]+ steps/s, ETA \d+ s", lines[0]), lines[0]  # no evaluation yet
    assert [line.split(", ")[2] for line in lines[1:]] == ["val/accuracy=0 (step 2)"] * 2 + ["val/accuracy=0 (step 4)"]
    assert lines[-1].endswith("ETA 0 s")


# ------------------------------------------------------------------------------------------------
# Gradient profiles and the run folder sink (in process: mutation testing cannot use a child's run)


class Profiles(Rows):
    """A sink keeping the logged rows and each profile with the step it was logged at."""

    def __init__(self):
        super().__init__()
        self.profiles = []

    def log_profile(self, step, profile):
        self.profiles.append((step, profile))


def profiled_run(gate_stats: bool, **kw) -> tuple[Profiles, dict]:
    """A 7-step LSTM run on the adding task profiling every 3 steps; the profile its model had at
    initialisation, computed beside it on a copy."""
    import copy

    from rnnbench.modules.diagnostics import temporal_profile
    from rnnbench.tasks.adding import AddingTask

    torch.manual_seed(0)
    task = AddingTask(seq_len=4, batch_size=4, val_size=8, seed=0)
    model = SequenceModel(task.spec, LSTMCell, 4)
    initial = temporal_profile(copy.deepcopy(model), task.loss, task.probe_batch(), gate_stats)
    sink = Profiles()
    Trainer(model, task, torch.optim.SGD(model.parameters(), lr=0.1), None,
            settings(max_steps=7, eval_every=5, profile_every=3, gate_stats=gate_stats, **kw), [sink]).fit()
    return sink, initial


@pytest.mark.parametrize("gate_stats", [True, False])
def test_profiles_come_at_initialisation_every_profile_every_steps_and_at_the_last(gate_stats):
    sink, initial = profiled_run(gate_stats)
    assert [step for step, _ in sink.profiles] == [0, 3, 6, 7]
    assert [profile["step"] for _, profile in sink.profiles] == [0, 3, 6, 7]
    first = sink.profiles[0][1]
    assert first["layers"] == initial["layers"] and first["loss"] == initial["loss"]  # before any update
    assert sink.profiles[1][1]["layers"] != initial["layers"]
    assert ("gates" in first) == gate_stats


def test_the_recorder_sink_writes_rows_and_profiles_to_the_run_folder(tmp_path):
    with run_folder.RunRecorder(tmp_path) as recorder:
        sink = train.RecorderSink(recorder)
        sink.log({"step": 1, "train/loss": 0.5})
        sink.log_profile(3, {"step": 3, "layers": {"layer0": [0.25, 1.0]}})
    assert run_folder.read_metrics(tmp_path) == [{"step": 1, "train/loss": 0.5}]
    assert run_folder.read_profiles(tmp_path) == [{"step": 3, "layers": {"layer0": [0.25, 1.0]}}]
    assert run_folder.read_profile(tmp_path) == {"step": 3, "layers": {"layer0": [0.25, 1.0]}}


# ------------------------------------------------------------------------------------------------
# The clock, a stop request, the carried state in a checkpoint, the splits evaluated


def run_for(max_minutes: float, elapsed_s: float) -> int:
    """The steps a 4-step run takes under `max_minutes` when its earlier segments took `elapsed_s`."""
    model = Linear()
    trainer = Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                      settings(max_steps=4, max_minutes=max_minutes), [Rows()])
    trainer.result.elapsed_s = elapsed_s  # as load_state_dict restores it
    return trainer.fit().steps


def test_a_resumed_runs_clock_goes_on_from_its_earlier_segments_against_max_minutes():
    assert run_for(max_minutes=2, elapsed_s=0.0) == 4
    assert run_for(max_minutes=2, elapsed_s=100.0) == 4  # 100 s of 120: time left for the 4 steps
    assert run_for(max_minutes=2, elapsed_s=120.5) == 1  # out of time: the step under way is the last


class SqrtLoss(Scripted):
    """loss = Σ sqrt(|w|): finite (0) at w = 0, where its gradient is not (∞ · 0 = NaN)."""

    def loss(self, outputs, batch):
        return torch.sqrt(outputs.abs()).sum()


def test_a_finite_loss_with_a_non_finite_gradient_diverges_without_an_update():
    model, rows = Linear(), Rows()
    result = Trainer(model, SqrtLoss(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                     settings(max_steps=3), [rows]).fit()
    assert (result.status, result.diverged_at, result.steps) == ("diverged", 1, 0)
    assert [sorted(row) for row in rows] == [["diverged", "grad/global_norm", "step", "train/loss"]]
    assert rows[0]["train/loss"] == 0.0 and math.isnan(rows[0]["grad/global_norm"]) and rows[0]["diverged"] is True
    assert model.w.tolist() == [0.0, 0.0]


def test_a_stop_request_checkpoints_the_step_just_run_and_returns_the_stopped_result():
    model, saved = Linear(), []
    trainer = Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                      settings(max_steps=10, checkpoint_at_eval=False, checkpoint_minutes=0), [Rows()],
                      checkpoint=lambda state: saved.append(state["step"]), stop_requested=lambda: trainer.step >= 2)
    result = trainer.fit()
    assert result is trainer.result and (result.status, result.steps) == ("stopped", 2)
    assert saved == [2]  # the step just run, and no "final" checkpoint of a completed run after it


def test_the_carried_state_goes_into_the_checkpoint_and_comes_back_from_it():
    model = Linear()
    first = Trainer(model, Scripted(stateful=True), torch.optim.SGD(model.parameters(), lr=0.1), None,
                    settings(max_steps=3), [Rows()])
    first.fit()
    state = first.state_dict()
    assert int(state["carried_state"]) == 3  # three windows since the stream began
    resumed_model = Linear()
    resumed = Trainer(resumed_model, Scripted(stateful=True), torch.optim.SGD(resumed_model.parameters(), lr=0.1), None,
                      settings(max_steps=5), [Rows()])
    resumed.load_state_dict(state)
    resumed.fit()
    assert resumed_model.received == [3, 4]  # steps 4 and 5 start from the state step 3 left


def test_the_trainer_evaluates_the_validation_split_unless_told_another():
    from rnnbench.tasks.adding import AddingTask

    torch.manual_seed(0)
    task = AddingTask(seq_len=4, batch_size=4, val_size=8, seed=0)
    model = SequenceModel(task.spec, LSTMCell, 4)
    trainer = Trainer(model, task, torch.optim.SGD(model.parameters(), lr=0.1), None, settings(), [Rows()])
    val, test = train.evaluate_model(model, task, "val"), train.evaluate_model(model, task, "test")
    assert val != test
    assert trainer.evaluate() == val and trainer.evaluate("test") == test


def test_progress_lines_come_every_every_s_seconds_with_the_rate_and_eta_of_this_segment(monkeypatch, caplog):
    """By a clock the test moves: a run resumed at step 2 of 10, a line at most every 30 s."""
    clock = [1000.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    lines = train.ProgressLines(total=10, initial=2, every_s=30)
    with caplog.at_level("INFO", logger=train.log.name):
        for now, step, last_metric in ((1010, 3, ""), (1040, 6, ""), (1060, 7, "val/loss=0.2 (step 6)"),
                                       (1070, 8, "val/loss=0.2 (step 6)")):
            clock[0] = now
            lines.update(step, 0.5, last_metric)
    # 1040: 4 steps in 40 s since the resume, 0.1 steps/s, 4 steps left: 40 s. None at 1060 (20 s after
    # the last line); at 1070, exactly 30 s after: 6 steps in 70 s, 2 left: 23.3 s
    assert [r.getMessage() for r in caplog.records] == [
        "step 6/10 (60%), loss 0.5, 0.1 steps/s, ETA 40 s",
        "step 8/10 (80%), loss 0.5, val/loss=0.2 (step 6), 0.0857 steps/s, ETA 23 s"]


class LengthsSeen(Linear):
    """Linear, keeping the lengths each training forward pass was given."""

    def __init__(self):
        super().__init__()
        self.lengths_seen = []

    def forward(self, inputs, lengths=None, state=None):
        self.lengths_seen.append(None if lengths is None else lengths.tolist())
        return super().forward(inputs, lengths, state)


class Padded(Scripted):
    """Batches of two sequences of 3 and 1 steps, padded to 3."""

    def train_batch(self):
        batch = super().train_batch()
        return Batch(torch.zeros(3, 2, 1), torch.zeros(2), lengths=torch.tensor([3, 1]),
                     reset_state=batch.reset_state)

    def loss(self, outputs, batch):
        return (torch.tensor(GRAD) * outputs[0]).sum()


@pytest.mark.parametrize("stateful", [False, True])
def test_a_padded_batch_trains_with_its_lengths(stateful):
    model = LengthsSeen()
    Trainer(model, Padded(stateful=stateful), torch.optim.SGD(model.parameters(), lr=0.1), None,
            settings(max_steps=2), [Rows()]).fit()
    assert model.lengths_seen == [[3, 1], [3, 1]]


def test_per_group_gradient_norms_come_with_the_logged_steps_only():
    from rnnbench.modules.diagnostics import gradient_norms
    from rnnbench.tasks.adding import AddingTask

    torch.manual_seed(0)
    task = AddingTask(seq_len=4, batch_size=4, val_size=8, seed=0)
    model = SequenceModel(task.spec, LSTMCell, 4)
    rows = Rows()
    trainer = Trainer(model, task, torch.optim.SGD(model.parameters(), lr=0.1), None,
                      settings(max_steps=3, log_every=2), [rows])
    _, grads, _, _ = trainer.train_step()  # not a logged step unless asked
    assert sorted(grads) == ["grad/global_norm", "grad/global_norm_clipped"]
    trainer.fit()
    groups = {f"grad/{name}" for name in gradient_norms(model)}
    assert groups and [sorted(groups & set(row)) for row in rows] == [sorted(groups)] * 2  # steps 2 and 3 (the last)


def test_on_a_terminal_the_progress_is_a_bar_from_the_resumed_step_with_the_loss_and_last_evaluation(monkeypatch,
                                                                                                      request):
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # where tqdm draws
    progress = train._progress(settings(max_steps=10, progress=True), 3)
    assert isinstance(progress, train.ProgressBar)
    request.addfinalizer(progress.close)  # a bar left open when an assertion fails hangs mutmut's runner
    bar = progress.bar
    assert (bar.total, bar.n, bar.desc, bar.leave) == (10, 3, "train", False) and not bar.disable
    assert bar.dynamic_ncols  # follows the terminal's width
    progress.update(4, 0.123456, "val/loss=0.2 (step 4)")
    assert bar.n == 4 and bar.postfix == "loss=0.1235 val/loss=0.2 (step 4)"
    progress.close()
    assert train._progress(settings(max_steps=10, progress=False), 3) is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # stdout a terminal, stderr redirected: no drawing
    assert train.ProgressBar(10, 3).bar.disable is True
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(train._progress(settings(max_steps=10, progress=True), 3), train.ProgressLines)


def test_a_metric_other_than_the_main_one_is_tracked_in_the_direction_its_name_says():
    """val/f1 (higher is better by its name, not the task's main metric) is best at its highest, val/mse
    (lower is better by its name) at its lowest."""
    evals = [{"loss": 1.0, "accuracy": 0.1, "f1": 0.2, "mse": 0.3}, {"loss": 1.0, "accuracy": 0.1, "f1": 0.8, "mse": 0.1},
             {"loss": 1.0, "accuracy": 0.1, "f1": 0.5, "mse": 0.2}]
    model = Linear()
    result = Trainer(model, Scripted(evals=evals), torch.optim.SGD(model.parameters(), lr=0.1), None,
                     settings(max_steps=3, eval_every=1), [Rows()]).fit()
    assert (result.best["val/f1"], result.best_step["val/f1"]) == (0.8, 2)
    assert (result.best["val/mse"], result.best_step["val/mse"]) == (0.1, 2)


def clocked_checkpoints(monkeypatch, write_s: float, **kw) -> list[int]:
    """The steps a 25-step run checkpoints at by a clock the test moves: each step takes 10 s, each
    checkpoint `write_s`."""
    clock = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    saved = []

    def write(state):
        saved.append(state["step"])
        clock[0] += write_s

    model = Linear()
    Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), None,
            settings(max_steps=25, **kw), [Rows()], checkpoint=write,
            on_step=lambda step: clock.__setitem__(0, 10.0 * step)).fit()
    return saved


def test_checkpoints_by_the_clock_come_once_checkpoint_minutes_have_passed_to_the_second(monkeypatch):
    # step k runs at 10 (k - 1) s: 60 s have passed at step 7 exactly, then at step 13, 19; the final one
    assert clocked_checkpoints(monkeypatch, 0.0, checkpoint_at_eval=False, checkpoint_minutes=1) == [7, 13, 19, 25]


def test_checkpoints_at_evaluations_wait_a_hundred_times_their_write_time(monkeypatch):
    # a 1 s write: the next checkpoint at an evaluation only 100 s after the last was written
    assert clocked_checkpoints(monkeypatch, 1.0, eval_every=1, checkpoint_minutes=0) == [1, 12, 23, 25]


def test_a_run_is_out_of_time_once_max_minutes_have_passed_to_the_second(monkeypatch):
    monkeypatch.setattr(train.time, "perf_counter", lambda: 1000.0)  # a stopped clock: elapsed is what was
    assert run_for(max_minutes=2, elapsed_s=120.0) == 1
    assert run_for(max_minutes=2, elapsed_s=119.0) == 4


def test_training_time_adds_up_every_steps_forward_and_backward(monkeypatch):
    """Each training forward pass takes 2 s of a clock the test moves (and nothing else does): 4 steps
    train for 8 s, and the throughput is the sequence steps over those 8 s."""
    clock = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])

    class TwoSeconds(Linear):
        def forward(self, inputs, lengths=None, state=None):
            clock[0] += 2.0
            return super().forward(inputs, lengths, state)

    model = TwoSeconds()
    result = Trainer(model, Scripted(), torch.optim.SGD(model.parameters(), lr=0.1), None,
                     settings(max_steps=4), [Rows()]).fit()
    assert result.train_time_s == 8.0 and result.throughput == result.sequence_steps / 8.0


def test_an_evaluation_without_the_main_metric_shows_none_in_the_progress(caplog):
    model = Linear()
    with caplog.at_level("INFO", logger=train.log.name):
        Trainer(model, Scripted(evals=[{"loss": 1.0}, {"loss": 0.5}]), torch.optim.SGD(model.parameters(), lr=0.1),
                None, settings(max_steps=2, eval_every=1, progress=True, progress_every_s=0), [Rows()]).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 2 and all(re.fullmatch(r"step \d/2 \(\d+%\), loss [^,]+, [\d.e+]+ steps/s, ETA \d+ s", line)
                                   for line in lines), lines
