"""The adding problem: read T (value, marker) pairs and output the sum of the two marked values.

Input (T, B, 2): channel 0 holds values drawn uniformly from [0, 1]; channel 1 is a marker channel
with exactly two 1s (zeros elsewhere). Target (B, 1): the sum of the two marked values. Loss: MSE.
Two variants, which differ only in where the markers go:

- `halves` (default) -- Hochreiter & Schmidhuber 1997, "Long Short-Term Memory"; Le, Jaitly &
  Hinton 2015, "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units"; Arjovsky,
  Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks": one marker uniform over the
  first half, steps [0, T // 2), one uniform over the second half, steps [T // 2, T).
- `anywhere` -- Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic Convolutional and
  Recurrent Networks for Sequence Modeling" (locuslab/TCN `adding_problem/utils.py`): two distinct
  steps, the pair uniform over all T (T - 1) / 2 such pairs.

Memoryless baseline: whatever the positions, the target is a + b with a, b ~ U[0, 1] independent,
so the best constant prediction is E[a + b] = 1 and its MSE is Var(a + b) = 2 / 12 = 1/6.
Success (Hochreiter & Schmidhuber's criterion, per sequence): |prediction - target| < 0.04.

Training batches come from a generator seeded with `seed`; the fixed `val` and `test` splits
(`val_size` sequences each) from their own generators seeded `seed + 1_000_003` and
`seed + 2_000_006`.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.synthetic import GeneratedTask, require_int

VARIANTS = ("halves", "anywhere")
HOCHREITER_TOLERANCE = 0.04



class AddingTask(GeneratedTask):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016;
    TCN variant); see the module docstring.

    Batches: inputs (T, B, 2) float32, targets (B, 1) float32. The model returns (B, 1).
    Metrics: `loss` (MSE), `loss_over_baseline` (MSE / (1/6)), `accuracy` (fraction of sequences
    with |prediction - target| < 0.04). Solved when `loss < solve_mse` (default 0.01).
    """

    ALLOWED = {"variant": VARIANTS}

    name = "adding"
    min_seq_len = 2  # two distinct marked steps
    main_metric = "loss"
    main_metric_mode = "min"
    spec = IOSpec(
        input_kind="continuous",
        input_size=2,
        output_size=1,
        output_kind="sequence",
        loss_kind="regression",
    )

    def __init__(
        self,
        seq_len: int = 200,
        variant: str = "halves",
        batch_size: int = 64,
        val_size: int = 1000,
        seed: int = 0,
        solve_mse: float = 0.01,
        device: str | torch.device = "cpu",
        eval_lengths: Sequence[int] = (),
    ):
        super().__init__(batch_size, val_size, seed, device, eval_lengths)
        require_int("seq_len", seq_len, self.min_seq_len)
        if variant not in VARIANTS:
            allowed = ", ".join(repr(v) for v in VARIANTS)
            raise ValueError(f"variant={variant!r}: unknown adding variant; allowed: {allowed}")
        number = isinstance(solve_mse, (int, float)) and not isinstance(solve_mse, bool)
        if not (number and solve_mse > 0):
            raise ValueError(f"solve_mse={solve_mse!r}: must be a number > 0")

        self.seq_len = seq_len
        self.variant = variant
        self.solve_mse = float(solve_mse)
        self.input_length = self.steps_at(seq_len)

        self._draw_splits()

    # ---- data -------------------------------------------------------------------------------
    def _draw(self, batch: int, generator: torch.Generator) -> Batch:
        T, B, device = self.seq_len, batch, self.device
        values = torch.rand((T, B), generator=generator, device=device)  # (T, B)
        if self.variant == "halves":
            first = torch.randint(0, T // 2, (B,), generator=generator, device=device)
            second = torch.randint(T // 2, T, (B,), generator=generator, device=device)
        else:
            first = torch.randint(0, T, (B,), generator=generator, device=device)
            # Uniform over the other T - 1 steps: draw in [0, T - 1) and skip over `first`.
            second = torch.randint(0, T - 1, (B,), generator=generator, device=device)
            second = second + (second >= first).long()
        sequence = torch.arange(B, device=device)
        markers = torch.zeros_like(values)
        markers[first, sequence] = 1.0
        markers[second, sequence] = 1.0
        inputs = torch.stack([values, markers], dim=-1)  # (T, B, 2)
        targets = (values[first, sequence] + values[second, sequence]).unsqueeze(1)  # (B, 1)
        return Batch(inputs=inputs, targets=targets)

    def _split_batches(self, data: Batch) -> Iterator[Batch]:
        for start in range(0, self.val_size, self.batch_size):
            stop = start + self.batch_size
            yield Batch(inputs=data.inputs[:, start:stop].contiguous(), targets=data.targets[start:stop])

    # ---- loss and metrics -------------------------------------------------------------------
    @property
    def memoryless_baseline(self) -> float:
        return 1.0 / 6.0  # Var(a + b), a, b ~ U[0, 1] independent: MSE of always predicting 1

    def _check_outputs(self, outputs: Tensor, batch: Batch) -> None:
        if tuple(outputs.shape) != tuple(batch.targets.shape):
            raise ValueError(
                f"adding outputs have shape {tuple(outputs.shape)}; expected (B, 1) = "
                f"{tuple(batch.targets.shape)}"
            )

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return F.mse_loss(outputs, batch.targets)

    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Sums that add up across chunks; `_metrics` turns them into means."""
        self._check_outputs(outputs, batch)
        error = outputs - batch.targets  # (B, 1)
        return {
            "squared_error_sum": float(error.square().sum()),
            "within_tolerance": int((error.abs() < HOCHREITER_TOLERANCE).sum()),
            "sequences": error.shape[0],
        }

    def _metrics(self, counts: dict[str, float]) -> dict[str, float]:
        mse = counts["squared_error_sum"] / counts["sequences"]
        return {
            "loss": mse,
            "loss_over_baseline": mse / self.memoryless_baseline,
            "accuracy": counts["within_tolerance"] / counts["sequences"],
        }

    def solved(self, metrics: dict[str, float]) -> bool:
        """MSE `loss` (as returned by `evaluate`) below `solve_mse`."""
        return metrics["loss"] < self.solve_mse

    # ---- resume and records -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "variant": self.variant,
            "seq_len": self.seq_len,
            "input_length": self.input_length,
            "memoryless_baseline": self.memoryless_baseline,
            "solve_mse": self.solve_mse,
            "accuracy_tolerance": HOCHREITER_TOLERANCE,
            "batch_size": self.batch_size,
            "val_size": self.val_size,
            "seed": self.seed,
        }
