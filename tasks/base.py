"""The task interface: what the trainer may ask of a task, and nothing about the trainer.

A task owns its data (generated or read), its loss, its metrics and its memoryless baseline. Models
are handed to it only as a callable, in `evaluate`, so that each task aggregates its own metrics the
way its field reports them (e.g. perplexity = exp of the token-weighted mean NLL over a whole split).

Layout is time-major, as in the recurrent core: inputs (T, B, F) float or (T, B) int64 token ids;
per-step targets (T, B) int64 or (T, B, O) float; per-sequence targets (B,) int64 or (B, O) float;
`lengths` (B,) int64 on the CPU, or None when every sequence has length T.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class IOSpec:
    """What a model must accept and produce for a task."""

    input_kind: Literal["continuous", "tokens"]
    input_size: int  # features per step, or the vocabulary size for tokens
    output_size: int  # classes (classification) or dimensions (regression)
    output_kind: Literal["per_step", "sequence"]  # a prediction at every step, or one per sequence
    loss_kind: Literal["classification", "regression"]
    stateful: bool = False  # consecutive batches continue the same streams (truncated BPTT)


@dataclass(frozen=True)
class BatchShape:
    """The largest batch a task makes (training or evaluation) and the config keys that set its size:
    what the run's memory estimate reads before anything is built (`run.build.check_memory`)."""

    steps: int
    sequences: int
    steps_key: str  # e.g. "task.seq_len"
    sequences_key: str = "train.batch_size"


@dataclass
class Batch:
    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None = None
    # For stateful tasks: True on the first window of an epoch/stream, where carried state must reset.
    reset_state: bool = False

    @property
    def num_steps(self) -> int:
        """Sequence steps in the batch (valid steps only when lengths are given): throughput's unit."""
        if self.lengths is not None:
            return int(self.lengths.sum())
        return int(self.inputs.shape[0] * self.inputs.shape[1])


# predict(batch, state) -> (outputs, state): outputs (T', B, O) per step or (B, O) per sequence.
Predict = Callable[[Batch, Any], tuple[Tensor, Any]]


class Task(abc.ABC):
    """Base of every task. Subclasses set `name`, `spec`, `main_metric`, `main_metric_mode`."""

    name: str = "task"
    spec: IOSpec
    main_metric: str = "loss"
    main_metric_mode: Literal["min", "max"] = "min"
    # Length generalisation: the trainer also evaluates the model at each of these sequence lengths
    # (`at_length`) at the end of the run. Only tasks whose length is a parameter set it.
    eval_lengths: tuple[int, ...] = ()
    # The allowed values of the constructor's choice arguments, checked before a run starts
    # (run.config.validate reads them from the class `task._target_` names).
    ALLOWED: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    @abc.abstractmethod
    def train_batch(self) -> Batch:
        """The next training batch (drawn from the task's own seeded generator or data order)."""

    @abc.abstractmethod
    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """The training objective as a scalar, averaged the way the task's literature averages it."""

    @abc.abstractmethod
    def batch_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Metrics of one batch (for training-time logging); includes `loss`."""

    @abc.abstractmethod
    def evaluate(self, predict: Predict, split: str = "val") -> dict[str, float]:
        """Metrics over a whole fixed split, aggregated correctly; includes `loss` and `main_metric`."""

    def probe_batch(self) -> Batch:
        """A fixed batch for diagnostics (the temporal gradient profile): the first evaluation batch.

        Taken through `evaluate`, so every task has one without writing anything; a task may override.
        """
        captured: list[Batch] = []

        def grab(batch: Batch, state: Any) -> tuple[Tensor, Any]:
            captured.append(batch)
            raise _Captured

        try:
            self.evaluate(grab, "val")
        except _Captured:
            return captured[0]
        raise RuntimeError(f"task {self.name!r} has no validation batch to probe with")

    def at_length(self, seq_len: int) -> "Task":
        """The same task (same seed, variant and sizes) with sequences of `seq_len` steps, its val and
        test splits drawn at that length: what a model trained at another length is evaluated on."""
        raise ValueError(f"task {self.name!r} has no sequence-length parameter to change")

    def batch_shape(self) -> BatchShape | None:
        """The largest batch the task will make, without making it (None: not known in advance)."""
        return None

    def vocabulary(self) -> list[str] | None:
        """Token i's string for token-input tasks whose ids a run must keep (written to the run folder
        as vocab.json, read back by `rnnbench.sample` and `rnnbench.evaluate`); None otherwise."""
        return None

    @property
    def memoryless_baseline(self) -> float | None:
        """Loss of the best predictor that ignores the inputs' memory content (None when not defined)."""
        return None

    def solved(self, metrics: dict[str, float]) -> bool:
        """The task's success criterion on evaluation metrics (used for optional early stopping)."""
        return False

    # Reproducible resume (checkpoints): the task's data-order / generator state.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """Facts recorded in summary.json (variant, sizes, baseline)."""
        return {"task": self.name, "memoryless_baseline": self.memoryless_baseline}


class _Captured(Exception):
    """Stops `evaluate` once `probe_batch` has its batch."""
