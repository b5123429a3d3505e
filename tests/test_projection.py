"""projection.py: the stand-in for x_proj that a kernel projecting x in its own loops takes, and the node through
which ∂L/∂x = ∂L/∂x_proj W flows. The kernels' own tests (test_fast_peephole, test_fast_gru) hold the whole
layer path to the cells; here the module's two pieces on their own."""

import pytest
import torch

from rnnbench.kernels import projection

T, B, I, N = 5, 3, 4, 6


@pytest.mark.parametrize("x_needs_grad", [True, False], ids=["through-input-projection", "plain"])
def test_the_stand_in_has_x_projs_shape_and_holds_one_zero(x_needs_grad):
    # the kernel's node takes it as x_proj (T, B, N): autograd checks ∂L/∂x_proj against its shape
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=x_needs_grad)
    stand_in = projection.stand_in(x, torch.randn(N, I, dtype=torch.float64))
    assert stand_in.shape == (T, B, N) and stand_in.dtype == torch.float64
    assert stand_in.stride() == (0, 0, 0) and stand_in.untyped_storage().nbytes() == 8
    assert (stand_in == 0).all() and stand_in.requires_grad == x_needs_grad


def test_the_gradient_of_x_is_the_gradient_of_x_proj_times_w():
    # ∂L/∂x for x_proj = x W^T + b: δ W, as torch's own F.linear gives it; W gets none here (the kernel's node's)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(N, I, generator=g, dtype=torch.float64, requires_grad=True)
    d_proj = torch.randn(T, B, N, generator=g, dtype=torch.float64)
    (dx,) = torch.autograd.grad(projection.stand_in(x, weight), x, d_proj)
    (expected,) = torch.autograd.grad(torch.nn.functional.linear(x, weight), x, d_proj)
    torch.testing.assert_close(dx, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, torch.einsum("tbn,ni->tbi", d_proj, weight.detach()), rtol=1e-12, atol=1e-12)
