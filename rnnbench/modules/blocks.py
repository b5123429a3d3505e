"""The residual block modern recurrences are published in, offered around every cell (`model.block`), so that
a comparison can put a classic and a modern cell in the same block.

Griffin's residual block (De et al. 2024, §2.2 and Fig. 2(a)), the skeleton Mamba's and xLSTM's blocks share:

    x'  = x + layer(RMSNorm(x))                                     temporal mixing: the recurrent layer
    y   = x' + W_down(GeLU(W_gate z) ⊙ W_up z),   z = RMSNorm(x')   gated MLP (GeGLU), width `mlp_ratio`·W

with W = the layer's output width (hidden_size × directions). The stack projects its input to W once
(`RecurrentStack.input_proj`); with the pyramid the shortcut is the mean of the concatenated pair, as the
plain stack's `residual` does. Outputs at padded steps stay exactly zero.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

BLOCKS = ("none", "residual_mlp")


class ResidualMLPBlock(nn.Module):
    """The norm before a recurrent layer and, after it, the residual add and the gated MLP (module docstring)."""

    def __init__(self, input_size: int, width: int, mlp_ratio: int = 3):
        super().__init__()
        if mlp_ratio < 1:
            raise ValueError(f"model.block_mlp_ratio={mlp_ratio} is not allowed: must be a positive integer")
        self.norm = nn.RMSNorm(input_size, eps=1e-6)
        self.mlp_norm = nn.RMSNorm(width, eps=1e-6)
        self.mlp_in = nn.Linear(width, 2 * mlp_ratio * width)      # rows [W_gate; W_up]
        self.mlp_out = nn.Linear(mlp_ratio * width, width)

    def finish(self, out: Tensor, shortcut: Tensor, mask: Tensor | None) -> Tensor:
        """Residual add and gated MLP on the layer's output (T, B, W); `mask` (T, B, 1) zeroes padded steps."""
        x = out + shortcut
        gate, up = self.mlp_in(self.mlp_norm(x)).chunk(2, dim=-1)
        x = x + self.mlp_out(F.gelu(gate, approximate="tanh") * up)
        return x if mask is None else x * mask
