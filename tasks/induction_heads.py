"""Induction heads: Olsson et al. 2022's mechanism as the synthetic task of H3 and Hyena (HazyResearch/safari,
`src/dataloaders/synthetics.py`, `generate_induction_head` with one trigger of length 1), used by Gu &
Dao 2023 ("Mamba", §4.1.2: vocabulary 16, training length 256, tested at longer lengths).

With T = seq_len and V = vocab_size (two of them special, as theirs: the trigger "=>" and an unused
no-op "."), a sequence is T tokens uniform over the V - 2 ordinary ones in which the trigger replaces
the token at one step p, uniform over 0 .. T - 3, then the trigger once more:

    x_1 ... x_p => y x_(p+3) ... x_T =>        target at the last step: y

Loss and `accuracy`: the last step only, the quantity Safari and Mamba evaluate (Safari's training
loss also covers every next-token prediction of the random tokens, which is irreducible noise of
ln(V - 2) a step; we leave it out). Memoryless baseline: ln(V - 2), a uniform guess over the ordinary
tokens; chance accuracy 1 / (V - 2).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.synthetic import (
    IGNORE, AccuracyScoredTask, position_counts, require_int,
    time_major_chunks,
)


class InductionHeadsTask(AccuracyScoredTask):
    """Induction heads (Safari's generator; Gu & Dao 2023); see the module docstring.

    Batches: inputs (T + 1, B) int64 token ids; targets (T + 1, B) int64, IGNORE except the last step.
    The model returns (T + 1, B, V) logits.
    """

    name = "induction_heads"
    min_seq_len = 3  # a trigger at 0 .. T - 3 and the token after it

    def __init__(
        self,
        seq_len: int = 256,
        vocab_size: int = 16,
        batch_size: int = 64,
        val_size: int = 1000,
        seed: int = 0,
        solve_threshold: float = 0.99,
        device: str | torch.device = "cpu",
        eval_lengths: Sequence[int] = (),
    ):
        super().__init__(batch_size, val_size, seed, device, eval_lengths, solve_threshold)
        require_int("seq_len", seq_len, self.min_seq_len)
        require_int("vocab_size", vocab_size, 4)  # two special tokens and at least two ordinary ones
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.trigger = vocab_size - 2  # "=>"; vocab_size - 1 is Safari's no-op ".", never drawn
        self.input_length = self.steps_at(seq_len)
        self.spec = IOSpec(input_kind="tokens", input_size=vocab_size, output_size=vocab_size,
                           output_kind="per_step", loss_kind="classification")
        self._draw_splits()

    def steps_at(self, seq_len: int) -> int:
        """T tokens and the final trigger."""
        return seq_len + 1

    # ---- data -------------------------------------------------------------------------------
    def sequences(self, tokens: Tensor, trigger_steps: Tensor) -> Batch:
        """The batch of ordinary `tokens` (T, B) with the trigger at `trigger_steps` (B,) and at the end."""
        T, B = tokens.shape
        rows = torch.arange(B, device=tokens.device)
        ids = torch.cat([tokens, tokens.new_full((1, B), self.trigger)])  # (T + 1, B)
        ids[trigger_steps, rows] = self.trigger
        targets = torch.full_like(ids, IGNORE)
        targets[-1] = tokens[trigger_steps + 1, rows]  # the token that followed the first trigger
        return Batch(inputs=ids, targets=targets)

    def _draw_parts(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        tokens = torch.randint(0, self.vocab_size - 2, (self.seq_len, n), generator=g, device=self.device)
        steps = torch.randint(0, self.seq_len - 2, (n,), generator=g, device=self.device)
        return tokens, steps

    def _draw(self, n: int, generator: torch.Generator) -> Batch:
        return self.sequences(*self._draw_parts(n, generator))

    def _split_batches(self, data: Batch) -> Iterator[Batch]:
        return time_major_chunks(data, self.batch_size)

    # ---- loss and metrics -------------------------------------------------------------------
    @property
    def memoryless_baseline(self) -> float:
        return math.log(self.vocab_size - 2)

    @property
    def chance_accuracy(self) -> float:
        return 1 / (self.vocab_size - 2)

    def _answer(self, outputs: Tensor, batch: Batch) -> Tensor:
        expected = (*batch.targets.shape, self.vocab_size)
        if tuple(outputs.shape) != expected:
            raise ValueError(f"induction_heads outputs have shape {tuple(outputs.shape)}; expected (T + 1, B, V) = "
                             f"{expected}")
        return outputs[-1:]  # (1, B, V): only the last step is asked

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        return torch.nn.functional.cross_entropy(self._answer(outputs, batch)[0], batch.targets[-1])

    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        asked = torch.ones_like(batch.targets[-1:], dtype=torch.bool)
        return position_counts(self._answer(outputs, batch), batch.targets[-1:], asked, asked)

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "seq_len": self.seq_len,
            "input_length": self.input_length,
            "vocab_size": self.vocab_size,
            "memoryless_baseline": self.memoryless_baseline,
            "chance_accuracy": self.chance_accuracy,
            "solve_threshold": self.solve_threshold,
            "batch_size": self.batch_size,
            "val_size": self.val_size,
            "seed": self.seed,
        }
