"""A task's model: input encoder -> recurrent stack -> head.

- Encoder: token ids go through an embedding (optionally with dropout, as Zaremba et al. 2014 and
  pytorch/examples word_language_model); continuous inputs feed the stack directly.
- Head: a linear map at every step (`per_step` tasks: copy, language modelling) or once per sequence
  after pooling (`sequence` tasks: adding, classification): `last` takes each direction's final state
  at the sequence's true end (the backward direction's final state is the one after reading step 1),
  `mean` / `max` pool the outputs over valid steps only.
- Tied input/output embeddings (Press & Wolf 2017; Inan et al. 2017) when sizes allow.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnbench.kernels.lengths import valid_steps
from rnnbench.modules.blocks import BLOCKS
from rnnbench.modules.cells import Cell, require_size
from rnnbench.modules.recurrent import BACKENDS, Probes, RecurrentStack, StackState
from rnnbench.tasks.base import IOSpec

POOLINGS = ("last", "mean", "max")
# How `param_budget` and summary.json count: every parameter, or the effective ones (`effective_parameters`).
PARAM_COUNTS = ("total", "effective")


class SequenceModel(nn.Module):
    ALLOWED: ClassVar[dict[str, tuple[str, ...]]] = {"backend": BACKENDS, "pooling": POOLINGS, "block": BLOCKS,
                                                     "param_count": PARAM_COUNTS}

    def __init__(self, spec: IOSpec, cell: Callable[[int, int], Cell], hidden_size: int = 128,
                 num_layers: int = 1, bidirectional: bool = False, pyramid: bool = False,
                 dropout: float = 0.0, residual: bool = False, backend: str = "auto",
                 embedding_size: int | None = None, embedding_dropout: float = 0.0,
                 output_dropout: float = 0.0, tie_weights: bool = False, pooling: str = "last",
                 param_budget: int | None = None, pyramid_input: bool = False, block: str = "none",
                 block_mlp_ratio: int = 3, param_count: str = "total", state_budget: int | None = None):
        super().__init__()
        del param_budget, state_budget  # resolved to hidden_size by the caller (budget.py); recorded in the config
        if param_count not in PARAM_COUNTS:
            raise ValueError(f"model.param_count={param_count!r} is not allowed: choose one of {', '.join(PARAM_COUNTS)}")
        self.param_count = param_count
        require_size("model.hidden_size", hidden_size)  # before any layer is sized by it
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r}: allowed {', '.join(POOLINGS)}")
        if bidirectional and spec.stateful and spec.output_kind == "per_step":
            raise ValueError(
                "model.bidirectional=true is not allowed for this task: it predicts the next token at "
                "every step from the past (language modelling), and the backward direction would read "
                "the future it must predict; use model.bidirectional=false (arch=single or arch=deep)")
        self.spec = spec
        self.pooling = pooling
        if spec.input_kind == "tokens":
            embedding_size = embedding_size or hidden_size * (2 if bidirectional else 1)
            self.embedding = nn.Embedding(spec.input_size, embedding_size)
            stack_input = embedding_size
        else:
            self.embedding = None
            stack_input = spec.input_size
        self.embedding_dropout = embedding_dropout
        self.output_dropout = output_dropout
        self.stack = RecurrentStack(cell, stack_input, hidden_size, num_layers, bidirectional, pyramid,
                                    dropout, residual, backend, pyramid_input, block, block_mlp_ratio)
        if spec.output_kind == "per_step" and self.stack.time_reduction > 1:
            raise ValueError(
                f"model.pyramid=true reduces time {self.stack.time_reduction}x with model.num_layers="
                f"{num_layers}, but this task needs an output at every input step; use a sequence-level "
                f"task or model.pyramid=false")
        self.head = nn.Linear(self.stack.output_size, spec.output_size)
        if tie_weights:
            if self.embedding is None or spec.output_size != spec.input_size:
                raise ValueError("model.tie_weights=true needs a token task whose outputs are its inputs "
                                 "(language modelling)")
            if self.embedding.embedding_dim != self.stack.output_size:
                raise ValueError(
                    f"model.tie_weights=true needs model.embedding_size ({self.embedding.embedding_dim}) "
                    f"== model.hidden_size x directions ({self.stack.output_size})")
            self.head.weight = self.embedding.weight
        self._init_embedding()

    def _init_embedding(self) -> None:
        if self.embedding is not None:  # pytorch/examples word_language_model: U(-0.1, 0.1)
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    @property
    def time_reduction(self) -> int:
        return self.stack.time_reduction

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def effective_parameters(self) -> int:
        """The parameters minus the redundant ones: torch's layout gives the classic cells two bias vectors
        per gate, b_ih + b_hh, of which one is redundant wherever only their sum enters (shift one by +d, the
        other by -d: the same function). That is all of bias_hh for the Elman RNN and the LSTM family, and
        for the GRU b_hr, b_hz (plus b_hn in Cho's form, where it adds to b_in; with reset_after it is
        multiplied by r_t and counts). The modern cells have one bias per gate: nothing is redundant."""
        redundant = 0
        for module in self.modules():
            bias_hh = getattr(module, "bias_hh", None)
            if isinstance(bias_hh, nn.Parameter) and hasattr(module, "weight_ih"):
                redundant += bias_hh.numel()
                if getattr(module, "reset_after", False):
                    redundant -= module.hidden_size  # b_hn sits inside r_t ⊙ (U_n h + b_hn)
        return self.num_parameters() - redundant

    def counted_parameters(self) -> int:
        """The count `model.param_count` asks for (the one param_budget matches)."""
        return self.effective_parameters() if self.param_count == "effective" else self.num_parameters()

    def state_size(self) -> int:
        """Floats carried per sequence between steps, summed over layers and directions (`modern_cells.state_size`)."""
        from rnnbench.modules.modern_cells import state_size

        return sum(state_size(cell) for layer in self.stack.layers for cell in layer.directions)

    def default_state(self, batch: int, device=None) -> StackState:
        return self.stack.default_state(batch, device, next(self.parameters()).dtype)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, state: StackState | None = None,
                probes: Probes | None = None) -> tuple[Tensor, StackState]:
        """inputs (T, B) ids or (T, B, I) -> (outputs, final state).

        outputs: (T', B, O) for per-step tasks, (B, O) for sequence tasks.
        """
        x = inputs
        if self.embedding is not None:
            x = F.dropout(self.embedding(inputs), self.embedding_dropout, self.training)  # (T, B, E)
        out, out_lengths, final = self.stack(x, lengths, state, probes)                    # (T', B, D·H)
        if self.spec.output_kind == "sequence":
            out = self.pool(out, out_lengths, final)                                       # (B, D·H)
        out = F.dropout(out, self.output_dropout, self.training)
        return self.head(out), final

    def pool(self, out: Tensor, lengths: Tensor | None, final: StackState) -> Tensor:
        if self.pooling == "last" and self.stack.blocks is not None:
            # in blocks the output is the block's (residual + MLP), not a cell's state: its last valid step
            last = out.shape[0] - 1 if lengths is None else (lengths.to(out.device) - 1).clamp(min=0)
            return out[last, torch.arange(out.shape[1], device=out.device)]
        if self.pooling == "last":
            # each direction's final h of the top layer: at the true end (forward) / after step 1 (backward)
            return torch.cat([state[0] for state in final[-1]], dim=-1)
        T = out.shape[0]
        if lengths is None:
            return out.mean(0) if self.pooling == "mean" else out.max(0).values
        valid = valid_steps(lengths, T, out.device)
        if self.pooling == "mean":
            return out.sum(0) / lengths.to(out.device, out.dtype).clamp(min=1).unsqueeze(-1)
        return out.masked_fill(~valid, float("-inf")).max(0).values
