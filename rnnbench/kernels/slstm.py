"""sLSTM over a whole sequence on the C++ kernel `csrc/slstm.cpp` (its docstring: the equations, the
hand-written backward and why the stabilisers need care there); `modules/modern_cells.SLSTMCell.step` is the
reference it is proven against (tests/test_modern_cells.py, every sequence-path test)."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnbench.kernels import extension
from rnnbench.kernels.lengths import checked_lengths


class _SLSTMSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_proj, h0, c0, n0, m0, weight_hh, lengths, kernel):
        out, h, c, n, m, saved = kernel.forward(x_proj, h0, c0, n0, m0, weight_hh, lengths)
        ctx.kernel = kernel
        ctx.save_for_backward(saved, out, h0, c0, n0, m0, weight_hh, lengths)
        return out, h, c, n, m

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c, grad_n, grad_m):
        saved, out, h0, c0, n0, m0, weight_hh, lengths = ctx.saved_tensors
        dx, dh0, dc0, dn0, dm0 = ctx.kernel.backward(grad_out, grad_h, grad_c, grad_n, grad_m, saved, c0, n0, m0,
                                                     weight_hh, lengths)
        T, B, H = out.shape
        _, heads, d, _ = weight_hh.shape
        # ∂L/∂R = Σ_t h_{t-1}ᵀ δpre_t per gate and head; h_{t-1} = out[t-1] wherever δpre_t is not zero
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]]).view(T, B, heads, d)
        d_weight = torch.einsum("tbki,tbgkj->gkij", h_prev, dx.view(T, B, 4, heads, d))
        return dx, dh0, dc0, dn0, dm0, d_weight, None, None


def fits(x_proj: Tensor) -> bool:
    """Whether the C++ sLSTM kernel runs here (CPU float32/float64, the extension built)."""
    return extension.fits(x_proj) and extension.available("slstm")


def slstm_sequence(x_proj: Tensor, state: tuple[Tensor, ...], weight_hh: Tensor, lengths: Tensor | None = None):
    """x_proj (T, B, 4H) (gate blocks z, i, f, o), state (h, c, n, m) each (B, H), weight_hh (4, heads, d, d) ->
    outputs (T, B, H) (zero at padded steps) and the final (h, c, n, m) at each sequence's own end."""
    lengths = checked_lengths(lengths, *x_proj.shape[:2])
    out, *final = _SLSTMSequence.apply(x_proj, *state, weight_hh, lengths, extension.load("slstm"))
    return out, tuple(final)
