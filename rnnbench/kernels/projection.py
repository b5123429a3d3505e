"""The input projection W x_t + b_ih of a sequence kernel that projects x inside its own loops (issue 26):
the autograd node through which ∂L/∂x flows, and the stand-in for x_proj it hands the kernel's node."""

from __future__ import annotations

import torch
from torch import Tensor


class InputProjection(torch.autograd.Function):
    """x (T, B, I) -> a stand-in for x_proj = W x + b_ih (T, B, N) that holds no memory, for a sequence node
    that projects x inside its loops; ∂L/∂x = δ W is made here, from the ∂L/∂x_proj that node hands back. A
    node of its own, run after the sequence node has freed its saved tensors (the cell states, and the outputs
    if nothing else holds them), so that ∂L/∂x adds to the peak memory no more than when the projection was
    `F.linear`. W's own gradient is the sequence node's."""

    @staticmethod
    def forward(ctx, x, weight_ih):
        ctx.save_for_backward(weight_ih)
        ctx.set_materialize_grads(False)
        return _placeholder(x, weight_ih)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_proj):
        (weight_ih,) = ctx.saved_tensors
        return (None if d_proj is None else d_proj @ weight_ih), None   # (T, B, I)


def stand_in(x: Tensor, weight_ih: Tensor) -> Tensor:
    """The (T, B, N) stand-in for x_proj a sequence node takes with x and W: through `InputProjection` when
    x needs a gradient, else a plain one (one element, stride 0)."""
    if x.requires_grad:
        return InputProjection.apply(x, weight_ih.detach())
    return _placeholder(x, weight_ih)


def _placeholder(x: Tensor, weight_ih: Tensor) -> Tensor:
    """(T, B, N) of one zero (stride 0): x_proj's shape, dtype and device, no memory."""
    return x.new_zeros(()).expand(*x.shape[:2], weight_ih.shape[0])
