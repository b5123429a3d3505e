"""Fast sequence-level GRU on CPU: `cells.GRUCell` over a whole sequence, hand-differentiated, both forms.

torch's CPU GRU (`torch._VF.gru`, what nn.GRU calls) does not use oneDNN: it loops over steps with ordinary
ops recorded by autograd, and has no kernel at all for Cho et al.'s form (reset_after=False). Here one
`torch.autograd.Function` covers the whole sequence, in C++ (`csrc/gru.cpp`, built once like the peephole
kernel by `extension.load`): per step one GEMM per block of batch rows (two for Cho's form) and
fused element-wise passes; the recurrent weight gradient is one GEMM after the backward loop. Float32 and
float64 CPU tensors only; everything else runs torch's kernel or the explicit path (`recurrent.py`).

The function is exactly `GRUCell.step`, gate order r, z, n, x_proj_t = W x_t + b_ih (B, 3H):

    r = σ(x_r + U_r h + b_hr)      z = σ(x_z + U_z h + b_hz)      h_t = (1 - z) ⊙ n + z ⊙ h      (h = h_{t-1})
    reset_after=True  (torch, cuDNN):  n = tanh(x_n + r ⊙ (U_n h + b_hn))
    reset_after=False (Cho et al. 2014): n = tanh(x_n + U_n (r ⊙ h) + b_hn)

and its backward, with δh = ∂L/∂h_t (output gradient + what step t+1 sends back):

    δ_n = δh ⊙ (1 - z) ⊙ (1 - n²)          δ_z = δh ⊙ (h - n) ⊙ z(1 - z)
    reset_after:  δ_r = δ_n ⊙ (U_n h + b_hn) ⊙ r(1 - r);  ∂L/∂(U h + b_hh) = (δ_r, δ_z, r ⊙ δ_n) =: δ'
                  δh_{t-1} = δh ⊙ z + δ' U;  ∂L/∂U = Σ_t δ'^T h_{t-1};  ∂L/∂b_hh = Σ δ';  ∂L/∂x_proj = (δ_r, δ_z, δ_n)
    Cho:          ∂L/∂(r ⊙ h) = δ_n U_n;  δ_r = (δ_n U_n) ⊙ h ⊙ r(1 - r);  δ = (δ_r, δ_z, δ_n) = ∂L/∂x_proj = ∂L/∂b_hh
                  δh_{t-1} = δh ⊙ z + (δ_n U_n) ⊙ r + (δ_r, δ_z) U_{r,z}
                  ∂L/∂U_{r,z} = Σ_t (δ_r, δ_z)^T h_{t-1};  ∂L/∂U_n = Σ_t δ_n^T (r ⊙ h_{t-1})

Given the layer's input x (`cell_sequence`, the layer path), the kernel makes x_proj_t = W x_t + b_ih in a
GEMM of each step instead of taking a (T, B, 3H) x_proj (issue 26), and sums ∂L/∂W = Σ_t ∂L/∂x_proj_t^T x_t
and ∂L/∂b_ih = Σ ∂L/∂x_proj itself; ∂L/∂x = ∂L/∂x_proj W is `projection.InputProjection`'s.

Padded batches (`lengths`): at t >= lengths[b] sequence b keeps its state and outputs exactly zero, so the
final state is each sequence's own last one. Double backward is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnbench.kernels import extension, projection
from rnnbench.kernels.lengths import checked_lengths


class GRUSequence(torch.autograd.Function):
    """The whole sequence as one autograd node on the C++ module `kernel`. Given x, weight_ih and bias_ih, the
    kernel projects x itself and x_proj is `projection.stand_in`, through which ∂L/∂x flows."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, bias_hh, lengths, reset_after, kernel, overwrite_x_proj=False, x=None,
                weight_ih=None, bias_ih=None):
        outputs, h_T, gates, aux = kernel.forward(x_proj if weight_ih is None else x, weight_ih, bias_ih, h0,
                                                  weight_hh, bias_hh, lengths, reset_after, overwrite_x_proj)
        ctx.kernel, ctx.reset_after = kernel, reset_after
        ctx.save_for_backward(gates, aux, outputs, h0, weight_hh, lengths, x)
        ctx.set_materialize_grads(False)
        return outputs, h_T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_outputs, grad_h_T):
        gates, aux, outputs, h0, weight_hh, lengths, x = ctx.saved_tensors
        if extension.graph_retained():  # the C++ backward overwrites them; a later backward needs them
            gates, aux = gates.clone(), aux.clone()
        need = ctx.needs_input_grad
        dx_proj, dh0, dw, db, dw_ih, db_ih = ctx.kernel.backward(
            grad_outputs, grad_h_T, gates, aux, outputs, x if need[9] or need[10] else None, h0, weight_hh, lengths,
            ctx.reset_after, need[2])
        return ((dx_proj if need[0] else None), dh0, dw, db, None, None, None, None, None,
                (dw_ih if need[9] else None), (db_ih if need[10] else None))


def _refuse_where_the_kernel_cannot_run(x: Tensor) -> None:
    if not extension.fits(x):
        raise RuntimeError(f"the C++ GRU kernel needs float32/float64 CPU tensors, got {x.dtype} on {x.device}")
    if not available():
        raise RuntimeError("the C++ GRU kernel is unavailable (RNNBENCH_NO_CPP set, or no compiler: see the warning)")


def available() -> bool:
    """True if the C++ GRU kernel is usable here (builds or loads it on first call)."""
    return extension.available("gru")


def gru_sequence(x_proj: Tensor, h0: Tensor, weight_hh: Tensor, bias_hh: Tensor, lengths: Tensor | None = None,
                 reset_after: bool = True, overwrite_x_proj: bool = False) -> tuple[Tensor, Tensor]:
    """Run `GRUCell.step` for t = 0..T-1 (module docstring) on the C++ kernel.

    x_proj (T, B, 3H) = x @ W_ih^T + b_ih; h0 (B, H); weight_hh (3H, H); bias_hh (3H,); lengths (B,) int64
    or None. Returns outputs (T, B, H) (zero at padded steps) and h_T (B, H) (each sequence's own end).
    Raises RuntimeError where the kernel cannot run (`fits`, `available`): callers choose the fallback.
    `overwrite_x_proj=True`: x_proj is this call's own, read by nothing else; the kernel keeps its gates in
    its memory (one (T, B, 3H) buffer less) and x_proj's values are gone after the call.
    """
    _refuse_where_the_kernel_cannot_run(x_proj)
    lengths = checked_lengths(lengths, *x_proj.shape[:2])
    return GRUSequence.apply(x_proj, h0, weight_hh, bias_hh, lengths, bool(reset_after),
                             extension.load("gru"), overwrite_x_proj, None, None, None)


def cell_sequence(cell, x: Tensor, h0: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`gru_sequence` on a `GRUCell`'s own tensors: x (T, B, I) -> outputs (T, B, H), h_T (B, H). The cell's
    input projection W x_t + b_ih is made by the kernel, a GEMM of each step: no (T, B, 3H) x_proj is made."""
    _refuse_where_the_kernel_cannot_run(x)
    lengths = checked_lengths(lengths, *x.shape[:2])
    return GRUSequence.apply(projection.stand_in(x, cell.weight_ih), h0, cell.weight_hh, cell.bias_hh, lengths,
                             bool(cell.reset_after), extension.load("gru"), False, x, cell.weight_ih, cell.bias_ih)
