"""IndRNN over a whole sequence on the C++ kernel `csrc/indrnn.cpp` (its header: the equations and the
hand-written backward); `modules/modern_cells.IndRNNCell.step` is the reference it is proven against
(tests/test_modern_cells.py, every sequence-path test)."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnbench.kernels import extension
from rnnbench.kernels.lengths import checked_lengths


class _IndRNNSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_proj, h0, u, lengths, kernel):
        out, h = kernel.forward(x_proj, h0, u, lengths)
        ctx.kernel = kernel
        ctx.save_for_backward(out, h0, u, lengths)
        return out, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h):
        out, h0, u, lengths = ctx.saved_tensors
        dx, dh0 = ctx.kernel.backward(grad_out, grad_h, out, u, lengths)
        # ∂L/∂u = Σ_t,b δpre_t ⊙ h_{t-1}; h_{t-1} = out[t-1] wherever δpre_t is not zero
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        return dx, dh0, (dx * h_prev).sum((0, 1)), None, None


def fits(x_proj: Tensor) -> bool:
    """Whether the C++ IndRNN kernel runs here (CPU float32/float64, the extension built)."""
    return extension.fits(x_proj) and extension.available("indrnn")


def indrnn_sequence(x_proj: Tensor, h0: Tensor, u: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x_proj (T, B, H) = W x_t + b, h0 (B, H), u (H) the (clamped) recurrent weight -> outputs (T, B, H) (zero at
    padded steps) and the final h (B, H) at each sequence's own end."""
    lengths = checked_lengths(lengths, *x_proj.shape[:2])
    return _IndRNNSequence.apply(x_proj, h0, u, lengths, extension.load("indrnn"))
