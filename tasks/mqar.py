"""Multi-query associative recall (MQAR): Arora, Eyuboglu et al. 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models" (HazyResearch/zoology, `zoology/data/multiquery_ar.py`,
one pass, `random_non_queries=True`).

With V = vocab_size, T = seq_len and K = num_kv_pairs, a sequence of T tokens is

    k_1 v_1 k_2 v_2 ... k_K v_K | query region of T - 2K tokens

- keys: K distinct tokens from 1 .. V/2 - 1; values: K distinct tokens from V/2 .. V - 1;
- every key is asked once in the query region, at an even offset 2 g_i from its start; the K gaps
  g_i are distinct, drawn without replacement from 0 .. (T - 2K)/2 - 1 with P(g) proportional to
  a (g + 1)^(a - 1), a = power_a (0.01: most queries come soon after the context; 1: uniform);
- every other query-region token is uniform over the whole vocabulary (noise, which may repeat a key);
- target at the query position of k_i: v_i (the model reads k_i and must answer at once); no target
  elsewhere. Loss: cross-entropy over the K query positions only (Zoology's -100 labels).

Metrics: `accuracy` (per query, Zoology's measure), `sequence_accuracy` (all K queries right).
Memoryless baseline: without memory of the context the value is uniform over the V - V/2 value
tokens: loss ln(V - V/2), accuracy 1 / (V - V/2). Zoology's constraints hold: T even, V > T, 4K <= T.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.synthetic import (
    IGNORE, AccuracyScoredTask, position_counts, require_fraction, require_int,
    time_major_chunks,
)


class MQARTask(AccuracyScoredTask):
    """Multi-query associative recall (Zoology); see the module docstring.

    Batches: inputs (T, B) int64 token ids; targets (T, B) int64, IGNORE except at the K query
    positions. The model returns (T, B, V) logits.
    """

    name = "mqar"
    min_seq_len = 4

    def __init__(
        self,
        seq_len: int = 64,
        num_kv_pairs: int = 8,
        vocab_size: int = 8192,
        power_a: float = 0.01,
        batch_size: int = 64,
        val_size: int = 1000,
        seed: int = 0,
        solve_threshold: float = 0.99,
        device: str | torch.device = "cpu",
        eval_lengths: Sequence[int] = (),
    ):
        super().__init__(batch_size, val_size, seed, device, eval_lengths, solve_threshold)
        require_int("seq_len", seq_len, self.min_seq_len)
        require_int("num_kv_pairs", num_kv_pairs, 1)
        require_int("vocab_size", vocab_size, 4)
        require_fraction("power_a", power_a)
        for length in (seq_len, *self.eval_lengths):
            check_sizes(length, num_kv_pairs, vocab_size)
        self.seq_len = seq_len
        self.num_kv_pairs = num_kv_pairs
        self.vocab_size = vocab_size
        self.power_a = float(power_a)
        self.input_length = seq_len
        self.spec = IOSpec(input_kind="tokens", input_size=vocab_size, output_size=vocab_size,
                           output_kind="per_step", loss_kind="classification")
        self._draw_splits()

    # ---- data -------------------------------------------------------------------------------
    def gap_probabilities(self) -> Tensor:
        """P(gap = g), g = 0 .. (T - 2K)/2 - 1: Zoology's power law a (g + 1)^(a - 1), normalised."""
        space = (self.seq_len - 2 * self.num_kv_pairs) // 2
        g = torch.arange(1, space + 1, dtype=torch.float64)
        p = self.power_a * g ** (self.power_a - 1)
        return p / p.sum()

    def sequences(self, keys: Tensor, values: Tensor, gaps: Tensor, noise: Tensor) -> Batch:
        """The batch of K pairs `keys`, `values` (K, B), asked at query offsets 2 `gaps` (K, B), every
        other query-region step filled from `noise` (T, B)."""
        K, B = keys.shape
        T = self.seq_len
        ids = noise.clone()  # (T, B)
        ids[0 : 2 * K : 2] = keys
        ids[1 : 2 * K : 2] = values
        positions = 2 * K + 2 * gaps  # (K, B) the query steps
        ids.scatter_(0, positions, keys)
        targets = torch.full((T, B), IGNORE, dtype=torch.long, device=ids.device)
        targets.scatter_(0, positions, values)
        return Batch(inputs=ids, targets=targets)

    def _draw_parts(self, n: int, g: torch.Generator) -> tuple[Tensor, ...]:
        K, V, d = self.num_kv_pairs, self.vocab_size, self.device
        half = V // 2
        # K distinct of each range: the first K of a random permutation, per sequence
        keys = 1 + torch.rand(n, half - 1, generator=g, device=d).argsort(1)[:, :K].T  # (K, B)
        values = half + torch.rand(n, V - half, generator=g, device=d).argsort(1)[:, :K].T
        p = self.gap_probabilities().to(d, torch.float32).expand(n, -1)
        gaps = torch.multinomial(p, K, replacement=False, generator=g).T  # (K, B), sequential draws
        noise = torch.randint(0, V, (self.seq_len, n), generator=g, device=d)
        return keys, values, gaps, noise

    def _draw(self, n: int, generator: torch.Generator) -> Batch:
        return self.sequences(*self._draw_parts(n, generator))

    def _split_batches(self, data: Batch) -> Iterator[Batch]:
        return time_major_chunks(data, self.batch_size)

    # ---- loss and metrics -------------------------------------------------------------------
    @property
    def memoryless_baseline(self) -> float:
        return math.log(self.vocab_size - self.vocab_size // 2)  # uniform over the value tokens

    @property
    def chance_accuracy(self) -> float:
        return 1 / (self.vocab_size - self.vocab_size // 2)

    def _check(self, outputs: Tensor, batch: Batch) -> None:
        expected = (*batch.targets.shape, self.vocab_size)
        if tuple(outputs.shape) != expected:
            raise ValueError(f"mqar outputs have shape {tuple(outputs.shape)}; expected (T, B, V) = {expected}")

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check(outputs, batch)
        return F.cross_entropy(outputs.reshape(-1, self.vocab_size), batch.targets.reshape(-1),
                               ignore_index=IGNORE)

    def _counts(self, outputs: Tensor, batch: Batch) -> dict[str, float]:
        self._check(outputs, batch)
        asked = batch.targets != IGNORE  # (T, B)
        return position_counts(outputs, batch.targets, asked, asked)

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "seq_len": self.seq_len,
            "input_length": self.input_length,
            "num_kv_pairs": self.num_kv_pairs,
            "vocab_size": self.vocab_size,
            "power_a": self.power_a,
            "memoryless_baseline": self.memoryless_baseline,
            "chance_accuracy": self.chance_accuracy,
            "solve_threshold": self.solve_threshold,
            "batch_size": self.batch_size,
            "val_size": self.val_size,
            "seed": self.seed,
        }


def check_sizes(seq_len: int, num_kv_pairs: int, vocab_size: int) -> None:
    """Zoology's constraints (the asserts of `multiquery_ar`), named by key."""
    if seq_len % 2:
        raise ValueError(f"task.seq_len={seq_len} is not allowed: MQAR sequences have even length")
    if 4 * num_kv_pairs > seq_len:
        raise ValueError(f"task.num_kv_pairs={num_kv_pairs} is not allowed with task.seq_len={seq_len}: the "
                         f"K pairs and their K queries need 4K <= seq_len (K <= {seq_len // 4})")
    if vocab_size <= seq_len:
        raise ValueError(f"task.vocab_size={vocab_size} is not allowed with task.seq_len={seq_len}: Zoology "
                         "requires vocab_size > seq_len")
