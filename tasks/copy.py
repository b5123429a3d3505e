"""The copy (copying memory) task: remember `copy_len` symbols over a delay of `seq_len` steps.

Four published variants, all with the same alphabet and the same recall positions; they differ in
the delimiter, in which steps the loss covers and (`selective`) in where the symbols stand. With T = seq_len, M = copy_len, K = num_symbols,
data symbols 0..K-1, blank K, delimiter K+1 (a0..a7, a8, a9 for the defaults), every input has
length T + 2M and every target is T + M blanks followed by the M input symbols:

- `arjovsky` (default) -- Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural
  Networks" (copying memory problem): input = M symbols, T-1 blanks, 1 delimiter, M blanks.
  Loss: mean cross-entropy over all T + 2M steps.
- `tcn` -- Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic Convolutional and
  Recurrent Networks for Sequence Modeling" (locuslab/TCN `copy_memory/utils.py`): input = M
  symbols, T-1 blanks, M+1 delimiters (the first one marks the recall; the other M keep "recall
  now" visible at every recall step). Loss: mean cross-entropy over all T + 2M steps, as in their
  `copymem_test.py`. Their digits are relabelled (they use 1-8 for data, 0 blank, 9 delimiter,
  fed as one scalar channel); we use the alphabet above, one-hot, so only the delimiter run
  differs from `arjovsky`.
- `s4` -- the copying dataset of the state-spaces repository (S4: Gu, Goel & Re 2022,
  "Efficiently Modeling Long Sequences with Structured State Spaces"), fixed positions
  (`variable=False`): input = M symbols, T blanks, M delimiters (the recall is emitted at the
  delimiter steps). Loss: mean cross-entropy over the M recall steps only.
- `selective` -- selective copying, Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
  Selective State Spaces" (§3.1, Fig. 2; the same S4 generator with `variable=True`): as `s4`, but
  the M symbols stand at M random steps of the first T + M, in order, blanks (the noise) between
  them: the model must select what to keep by content, not by position. Loss: the M recall steps.

Memoryless baseline: the best predictor that knows the step index but nothing of the symbols
outputs a blank with certainty for the first T + M steps and the uniform distribution over the K
data symbols at the M recall steps, so its loss is M ln K / (T + 2M) for `arjovsky` and `tcn`
(Arjovsky et al.'s 10 ln 8 / (T + 20)) and ln K for `s4` and `selective`.

Training batches come from a generator seeded with `seed`; the fixed `val` and `test` splits
(`val_size` sequences each) from their own generators seeded `seed + 1_000_003` and
`seed + 2_000_006`.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.synthetic import GeneratedTask, require_fraction, require_int

VARIANTS = ("arjovsky", "tcn", "s4", "selective")
RECALL_ONLY = ("s4", "selective")  # the variants whose loss covers the recall steps only



class CopyTask(GeneratedTask):
    """Copying memory (Arjovsky et al. 2016; TCN, S4 and selective-copying variants); see the module docstring.

    Batches: inputs (T + 2M, B, K + 2) one-hot float32; targets (T + 2M, B) int64 class ids.
    The model returns logits (T + 2M, B, K + 2), one prediction per step.
    Metrics: `loss`, `loss_over_baseline`, `recall_accuracy` (per symbol, on the M recall steps),
    `sequence_accuracy` (all M recalled symbols right), and for `arjovsky`/`tcn` (whose loss covers
    every step) `accuracy_all_steps`. Solved when `recall_accuracy >= solve_threshold`.
    """

    ALLOWED = {"variant": VARIANTS}

    name = "copy"
    main_metric = "recall_accuracy"
    main_metric_mode = "max"

    def __init__(
        self,
        seq_len: int = 100,
        variant: str = "arjovsky",
        num_symbols: int = 8,
        copy_len: int = 10,
        batch_size: int = 64,
        val_size: int = 1000,
        seed: int = 0,
        solve_threshold: float = 0.99,
        device: str | torch.device = "cpu",
        eval_lengths: Sequence[int] = (),
    ):
        super().__init__(batch_size, val_size, seed, device, eval_lengths)
        require_int("seq_len", seq_len, 1)
        if variant not in VARIANTS:
            allowed = ", ".join(repr(v) for v in VARIANTS)
            raise ValueError(f"variant={variant!r}: unknown copy variant; allowed: {allowed}")
        require_int("num_symbols", num_symbols, 2)  # ln 1 = 0 would make the baseline vanish
        require_int("copy_len", copy_len, 1)
        require_fraction("solve_threshold", solve_threshold)

        self.seq_len = seq_len
        self.variant = variant
        self.num_symbols = num_symbols
        self.copy_len = copy_len
        self.solve_threshold = float(solve_threshold)

        self.blank = num_symbols
        self.delimiter = num_symbols + 1
        self.num_classes = num_symbols + 2
        self.input_length = self.steps_at(seq_len)
        T, M = seq_len, copy_len
        self._delimiter_steps = {
            "arjovsky": slice(M + T - 1, M + T),  # one delimiter, then M blanks
            "tcn": slice(M + T - 1, None),  # M + 1 delimiters to the end
            "s4": slice(M + T, None),  # M delimiters, at the recall steps themselves
            "selective": slice(M + T, None),
        }[variant]
        self.loss_on_all_steps = variant not in RECALL_ONLY

        self.spec = IOSpec(
            input_kind="continuous",
            input_size=self.num_classes,
            output_size=self.num_classes,
            output_kind="per_step",
            loss_kind="classification",
        )
        # A fixed split is stored as its symbols (M, N) (and for `selective` their steps, (M, N));
        # sequences are built per chunk.
        self._draw_splits()

    def steps_at(self, seq_len: int) -> int:
        """M symbols, T - 1 blanks and the delimiter, M recall steps: T + 2M."""
        return seq_len + 2 * self.copy_len

    # ---- data -------------------------------------------------------------------------------
    def _draw_symbols(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        symbols = torch.randint(
            0, self.num_symbols, (self.copy_len, batch), generator=generator, device=self.device
        )  # (M, B)
        if self.variant != "selective":
            return symbols, None  # drawn only for `selective`: the other variants' streams stay as they were
        # M distinct steps of the first T + M, in order (S4's `randperm(L + M)[:M]`, sorted)
        scores = torch.rand(batch, self.seq_len + self.copy_len, generator=generator, device=self.device)
        steps = scores.argsort(1)[:, : self.copy_len].sort(1).values.T  # (M, B)
        return symbols, steps

    def sequences(self, symbols: Tensor, steps: Tensor | None = None) -> Batch:
        """The batch whose symbols to remember are `symbols` (M, B) int64 in [0, num_symbols), at the
        steps `steps` (M, B) (`selective`), or at the first M steps."""
        M, B = symbols.shape
        ids = torch.full(
            (self.input_length, B), self.blank, dtype=torch.long, device=symbols.device
        )
        if steps is None:
            ids[:M] = symbols
        else:
            ids.scatter_(0, steps, symbols)
        ids[self._delimiter_steps] = self.delimiter  # (T + 2M, B)
        # One-hot by scatter: several times faster than F.one_hot(ids).float() on CPU.
        inputs = torch.zeros(*ids.shape, self.num_classes, device=ids.device)
        inputs.scatter_(2, ids.unsqueeze(-1), 1.0)  # (T + 2M, B, K + 2)
        targets = torch.full_like(ids, self.blank)
        targets[-M:] = symbols  # (T + 2M, B): T + M blanks, then the symbols
        return Batch(inputs=inputs, targets=targets)

    def _draw(self, n: int, generator: torch.Generator) -> Batch:
        return self.sequences(*self._draw_symbols(n, generator))

    def _draw_split(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        return self._draw_symbols(n, generator)  # (M, N) each

    def _split_batches(self, split: tuple[Tensor, Tensor | None]) -> Iterator[Batch]:
        symbols, steps = split
        for start in range(0, self.val_size, self.batch_size):
            chunk = slice(start, start + self.batch_size)
            yield self.sequences(symbols[:, chunk], None if steps is None else steps[:, chunk])

    # ---- loss and metrics -------------------------------------------------------------------
    @property
    def memoryless_baseline(self) -> float:
        recall_loss = math.log(self.num_symbols)  # uniform guess at each recall step
        if self.loss_on_all_steps:
            return self.copy_len * recall_loss / self.input_length
        return recall_loss

    def _check_outputs(self, outputs: Tensor, batch: Batch) -> None:
        expected = (self.input_length, batch.targets.shape[1], self.num_classes)
        if tuple(outputs.shape) != expected:
            raise ValueError(
                f"copy outputs have shape {tuple(outputs.shape)}; "
                f"expected (T + 2M, B, K + 2) = {expected}"
            )

    def _scored(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """The logits and targets the loss covers: every step, or the M recall steps for `s4`."""
        self._check_outputs(outputs, batch)
        if self.loss_on_all_steps:
            return outputs, batch.targets
        return outputs[-self.copy_len :], batch.targets[-self.copy_len :]

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        logits, targets = self._scored(outputs, batch)
        return F.cross_entropy(logits.reshape(-1, self.num_classes), targets.reshape(-1))

    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        """Sums that add up across chunks; `_metrics` turns them into means."""
        logits, targets = self._scored(outputs, batch)
        loss_sum = F.cross_entropy(
            logits.reshape(-1, self.num_classes), targets.reshape(-1), reduction="sum"
        )
        correct = outputs.argmax(-1) == batch.targets  # (T + 2M, B)
        recalled = correct[-self.copy_len :]  # (M, B)
        return {
            "loss_sum": float(loss_sum),
            "loss_terms": targets.numel(),
            "recall_correct": int(recalled.sum()),
            "recall_terms": recalled.numel(),
            "sequences_correct": int(recalled.all(0).sum()),
            "sequences": recalled.shape[1],
            "all_correct": int(correct.sum()),
            "all_terms": correct.numel(),
        }

    def _metrics(self, counts: dict[str, float]) -> dict[str, float]:
        loss = counts["loss_sum"] / counts["loss_terms"]
        metrics = {
            "loss": loss,
            "loss_over_baseline": loss / self.memoryless_baseline,
            "recall_accuracy": counts["recall_correct"] / counts["recall_terms"],
            "sequence_accuracy": counts["sequences_correct"] / counts["sequences"],
        }
        if self.loss_on_all_steps:  # for `s4` the blank steps are not part of the task
            metrics["accuracy_all_steps"] = counts["all_correct"] / counts["all_terms"]
        return metrics

    def solved(self, metrics: dict[str, float]) -> bool:
        """`recall_accuracy` (as returned by `evaluate`) at least `solve_threshold`."""
        return metrics["recall_accuracy"] >= self.solve_threshold

    # ---- resume and records -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "variant": self.variant,
            "seq_len": self.seq_len,
            "input_length": self.input_length,
            "num_symbols": self.num_symbols,
            "copy_len": self.copy_len,
            "loss_steps": "all" if self.loss_on_all_steps else "recall",
            "memoryless_baseline": self.memoryless_baseline,
            "solve_threshold": self.solve_threshold,
            "batch_size": self.batch_size,
            "val_size": self.val_size,
            "seed": self.seed,
        }
