"""The training loop's behaviour, each against a hand computation on a model and task small enough to
know every number: clipping (norm and value), the learning-rate schedule's cadence, the best-so-far
tracking, carried state resets, early stopping, divergence and the non-finite guard rail.

Each test here was shown to fail with the bug it names planted in `rnnbench/run/train.py`
(docs/testing.md lists them)."""

import math

import pytest
import torch
from torch import nn

from rnnbench.run.train import TrainSettings, Trainer
from rnnbench.tasks.base import Batch, IOSpec, Task

GRAD = (3.0, -4.0)  # the loss is GRAD · w, so ∂L/∂w = GRAD at every step: global norm 5


class Linear(nn.Module):
    """outputs = w (the same at every step), so a task's loss GRAD · outputs has gradient GRAD. The carried
    state counts the windows since it was last reset; `received` keeps the state each window started from."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(len(GRAD)))
        self.received = []

    def forward(self, inputs, lengths=None, state=None):
        self.received.append(None if state is None else int(state))
        return self.w, (torch.zeros(()) if state is None else state) + 1


class Scripted(Task):
    """A task whose training loss is GRAD · w (or a scripted non-finite value), whose evaluations return
    the scripted metrics in turn, and whose stream resets the carried state where `resets` says."""

    name = "scripted"
    main_metric = "accuracy"
    main_metric_mode = "max"

    def __init__(self, evals=(), resets=(), stateful=False, nonfinite_at=(), solved_at_accuracy=None):
        super().__init__()
        self.spec = IOSpec("continuous", 1, len(GRAD), "sequence", "regression", stateful=stateful)
        self.evals, self.resets, self.nonfinite_at = list(evals), list(resets), set(nonfinite_at)
        self.solved_at_accuracy = solved_at_accuracy
        self.drawn = 0

    def train_batch(self):
        self.drawn += 1
        reset = self.resets[self.drawn - 1] if self.resets else False
        return Batch(torch.zeros(1, 1, 1), torch.zeros(1), reset_state=reset)

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
