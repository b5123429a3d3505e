"""A task of one's own: running parity. Read T random bits; at every step t, say whether the bits read
so far hold an odd number of ones: y_t = x_1 ⊕ … ⊕ x_t = y_{t-1} ⊕ x_t. A state that flips on every 1
solves it (a two-state automaton); parity is the classic function no local feature predicts (Minsky &
Papert 1969). Loss: cross-entropy at every step; memoryless baseline: y_1 = x_1 is free, every later
step is a coin, so ((T - 1) / T) ln 2."""

import math

import torch
import torch.nn.functional as F

from rnnbench.tasks.base import Batch, IOSpec
from rnnbench.tasks.synthetic import GeneratedTask


class ParityTask(GeneratedTask):
    name = "parity"
    main_metric, main_metric_mode = "accuracy", "max"
    spec = IOSpec(input_kind="continuous", input_size=1, output_size=2, output_kind="per_step",
                  loss_kind="classification")

    def __init__(self, seq_len=10, batch_size=64, val_size=1000, seed=0, device="cpu"):
        super().__init__(batch_size, val_size, seed, device)
        self.seq_len = seq_len
        self._draw_splits()  # fixed val/test sets, from their own seeds

    def _draw(self, n, generator):
        bits = torch.randint(0, 2, (self.seq_len, n), generator=generator, device=self.device)  # (T, B)
        return Batch(inputs=bits.unsqueeze(-1).float(), targets=bits.cumsum(0) % 2)         # (T, B, 1), (T, B)

    def _split_batches(self, data):
        for i in range(0, self.val_size, self.batch_size):
            yield Batch(inputs=data.inputs[:, i:i + self.batch_size], targets=data.targets[:, i:i + self.batch_size])

    def loss(self, outputs, batch):  # outputs (T, B, 2): logits at every step
        return F.cross_entropy(outputs.flatten(0, 1), batch.targets.flatten())

    def _counts(self, outputs, batch):  # sums over a chunk of the split; _metrics makes the means
        return {"nll": F.cross_entropy(outputs.flatten(0, 1), batch.targets.flatten(), reduction="sum").item(),
                "correct": (outputs.argmax(-1) == batch.targets).sum().item(), "n": batch.targets.numel()}

    def _metrics(self, counts):
        return {"loss": counts["nll"] / counts["n"], "accuracy": counts["correct"] / counts["n"]}

    @property
    def memoryless_baseline(self):
        return (self.seq_len - 1) / self.seq_len * math.log(2)
