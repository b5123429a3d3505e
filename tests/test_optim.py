"""rnnbench/run/optim.py: RMSprop with the mean square started at a constant (Arjovsky et al. 2016)."""

import pytest
import torch

from rnnbench.run.optim import RMSprop


def quadratic_steps(make, steps=5):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(7))
    target = torch.randn(7)
    opt = make([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2 * torch.arange(1.0, 8.0)).sum().backward()
        opt.step()
    return w.detach()


@pytest.mark.parametrize("options", [{}, {"momentum": 0.9}, {"centered": True}, {"alpha": 0.9, "eps": 0.0}])
def test_with_the_default_start_it_is_torchs_rmsprop_to_the_bit(options):
    ours = quadratic_steps(lambda p: RMSprop(p, lr=1e-2, **options))
    torchs = quadratic_steps(lambda p: torch.optim.RMSprop(p, lr=1e-2, **options))
    assert torch.equal(ours, torchs)


def test_arjovskys_rmsprop_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSprop([w], lr=1e-3, alpha=0.9, eps=0.0, initial_square_avg=1e-3)
    v = torch.full((2,), 1e-3)
    expected = w.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        (w ** 2).sum().backward()
        g = 2 * expected
        v = 0.9 * v + 0.1 * g ** 2
        expected = expected - 1e-3 * g / v.sqrt()
        opt.step()
        torch.testing.assert_close(w.detach(), expected)


def test_a_negative_start_is_refused_by_name():
    with pytest.raises(ValueError, match="optim.initial_square_avg=-1 is not allowed"):
        RMSprop([torch.nn.Parameter(torch.zeros(1))], initial_square_avg=-1)
