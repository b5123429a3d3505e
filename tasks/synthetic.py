"""What the generated tasks (copy, adding) share: a seeded training generator on the task's device,
fixed validation/test splits drawn once from their own generators, evaluation in chunks that sums
counts (so every mean is over the whole split, not a mean of chunk means), and resume state."""

from __future__ import annotations

import abc
import inspect
import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, BatchShape, Predict, Task

SPLITS = ("val", "test")
IGNORE = -100  # a step with no target (torch's ignore_index; Zoology's and Safari's label for it)
# Fixed splits are drawn from their own generators, seeded `seed + offset`: they depend on the seed
# only, never on how many training batches were drawn.
SPLIT_SEED_OFFSET = {"val": 1_000_003, "test": 2_000_006}


def require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")


def require_fraction(name: str, value: Any) -> None:
    """A success threshold on an accuracy: a number in (0, 1]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and 0.0 < value <= 1.0):
        raise ValueError(f"{name}={value!r}: must be a number in (0, 1]")


class GeneratedTask(Task):
    """Subclasses draw data with `_draw(n, generator)`, store a split with `_draw_split`, cut it into
    batches with `_split_batches`, and score with `_counts` (sums) and `_metrics` (means)."""

    def __init__(self, batch_size: int, val_size: int, seed: int, device: str | torch.device,
                 eval_lengths: Sequence[int] = ()):
        super().__init__(device)
        require_int("batch_size", batch_size, 1)
        require_int("val_size", val_size, 1)
        require_int("seed", seed, 0)
        eval_lengths = list(eval_lengths or ())
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= self.min_seq_len
                   for n in eval_lengths):
            raise ValueError(f"eval_lengths={eval_lengths}: every length must be an integer >= "
                             f"{self.min_seq_len}")
        self.eval_lengths = tuple(eval_lengths)
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)
        self._batches_drawn = 0

    min_seq_len = 1  # the shortest `seq_len` the task is defined for
    # The constructor argument `at_length` sets: the sequence length itself, or for a task trained on
    # a range of lengths (the formal languages) the one length its splits are drawn at.
    length_argument = "seq_len"

    def steps_at(self, seq_len: int) -> int:
        """Steps of a sequence of the task at `seq_len` (its input length)."""
        return seq_len

    def batch_shape(self) -> BatchShape:
        """Training and evaluation batches hold `batch_size` sequences; the longest are at the longest
        of `seq_len` and `eval_lengths`."""
        longest = max((self.seq_len, *self.eval_lengths))
        key = "task.eval_lengths" if longest > self.seq_len else "task.seq_len"
        return BatchShape(self.steps_at(longest), self.batch_size, key)

    def at_length(self, seq_len: int) -> GeneratedTask:
        """A new task of the same class built from this one's constructor arguments (each is kept as
        the attribute of its name) with `length_argument` set to `seq_len`: same seed, so the same
        split generators."""
        require_int("seq_len", seq_len, self.min_seq_len)
        names = [n for n in inspect.signature(type(self)).parameters if n != "eval_lengths"]
        return type(self)(**{**{n: getattr(self, n) for n in names}, self.length_argument: seq_len})

    def _draw_splits(self) -> None:
        """Each fixed split drawn once, whole, so it depends on neither batch_size nor training; drawn at
        first use (its own generators make it the same whenever that is), so building a task allocates
        nothing in proportion to its length before the run's memory estimate has seen it."""
        self._drawn_splits: dict[str, Any] | None = None

    @property
    def _splits(self) -> dict[str, Any]:
        if self._drawn_splits is None:
            self._drawn_splits = {split: self._draw_named_split(split) for split in SPLITS}
        return self._drawn_splits

    def _draw_named_split(self, split: str) -> Any:
        """The stored data of `split` (a task whose splits differ, e.g. in their lengths, overrides this)."""
        return self._draw_split(self.val_size, self._split_generator(split))

    def _split_generator(self, split: str) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed + SPLIT_SEED_OFFSET[split])
        return generator

    @abc.abstractmethod
    def _draw(self, n: int, generator: torch.Generator) -> Batch:
        """A batch of n fresh sequences."""

    def _draw_split(self, n: int, generator: torch.Generator) -> Any:
        return self._draw(n, generator)

    @abc.abstractmethod
    def _split_batches(self, split_data: Any) -> Iterator[Batch]:
        """The stored split in chunks of at most `batch_size` sequences."""

    @abc.abstractmethod
    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Sums that add up across chunks."""

    @abc.abstractmethod
    def _metrics(self, counts: dict[str, float]) -> dict[str, float]:
        """Means from summed counts."""

    def train_batch(self) -> Batch:
        self._batches_drawn += 1
        return self._draw(self.batch_size, self._generator)

    @torch.no_grad()
    def batch_metrics(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        return self._metrics(self._counts(outputs.detach(), batch))

    @torch.no_grad()
    def evaluate(self, predict: Predict, split: str = "val") -> dict[str, float]:
        """Metrics over the fixed split, predicted in chunks of `batch_size`; every mean is over all
        terms of the split (not a mean of chunk means)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: unknown split; allowed: {', '.join(SPLITS)}")
        totals: dict[str, float] = {}
        for batch in self._split_batches(self._splits[split]):
            outputs, _ = predict(batch, None)
            for key, value in self._counts(outputs, batch).items():
                totals[key] = totals.get(key, 0) + value
        return self._metrics(totals)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state(), "batches_drawn": self._batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._generator.set_state(state["generator"].cpu())
        self._batches_drawn = int(state["batches_drawn"])



class AccuracyScoredTask(GeneratedTask):
    """A generated task scored per output position (the formal languages, MQAR, induction heads):
    `position_counts` per chunk, `position_metrics` over a split, solved at `solve_threshold` accuracy."""

    main_metric = "accuracy"
    main_metric_mode = "max"

    def __init__(self, batch_size: int, val_size: int, seed: int, device: str | torch.device,
                 eval_lengths: Sequence[int] = (), solve_threshold: float = 0.99):
        super().__init__(batch_size, val_size, seed, device, eval_lengths)
        require_fraction("solve_threshold", solve_threshold)
        self.solve_threshold = float(solve_threshold)

    def _metrics(self, counts: dict[str, float]) -> dict[str, float]:
        return position_metrics(counts, self.memoryless_baseline)

    def solved(self, metrics: dict[str, float]) -> bool:
        """`accuracy` (as returned by `evaluate`) at least `solve_threshold`."""
        return metrics["accuracy"] >= self.solve_threshold


def position_counts(logits: Tensor, targets: Tensor, loss_mask: Tensor, scored: Tensor) -> dict[str, float]:
    """Sums over a chunk for tasks scored per output position (the formal languages, MQAR): logits
    (P, B, C), targets (P, B) (any value where `loss_mask` is False), the cross-entropy summed where
    `loss_mask`, accuracy counted where `scored`; a sequence is right when all its scored positions are."""
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1),
                          reduction="none").view(targets.shape)  # (P, B)
    right = (logits.argmax(-1) == targets) & scored
    return {
        "loss_sum": float(nll[loss_mask].sum()),
        "loss_terms": int(loss_mask.sum()),
        "correct": int(right.sum()),
        "scored": int(scored.sum()),
        "sequences_correct": int((right == scored).all(0).sum()),
        "sequences": targets.shape[1],
    }


def position_metrics(counts: dict[str, float], baseline: float) -> dict[str, float]:
    """`loss`, `loss_over_baseline`, `accuracy` (per scored position), `sequence_accuracy` from the
    summed `position_counts` of a whole split."""
    loss = counts["loss_sum"] / counts["loss_terms"]
    return {
        "loss": loss,
        "loss_over_baseline": loss / baseline if baseline > 0 else math.inf,
        "accuracy": counts["correct"] / counts["scored"],
        "sequence_accuracy": counts["sequences_correct"] / counts["sequences"],
    }


def time_major_chunks(data: Batch, batch_size: int) -> Iterator[Batch]:
    """A stored split whose inputs and targets are both time-major, (T, N, ...), in chunks of at most
    `batch_size` sequences."""
    for start in range(0, data.inputs.shape[1], batch_size):
        chunk = slice(start, start + batch_size)
        yield Batch(inputs=data.inputs[:, chunk], targets=data.targets[:, chunk])

