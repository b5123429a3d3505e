"""Optimisers whose published form torch's own do not offer."""

from __future__ import annotations

import torch


class RMSprop(torch.optim.RMSprop):
    """torch's RMSprop (Tieleman & Hinton 2012), with the mean square optionally started at a constant.

    Arjovsky, Shah & Bengio 2016's code (github.com/amarshah/complex_RNN, optimizations.py `rms_prop`)
    starts it at 1e-3 and adds no ε:

        v_0 = 1e-3,   v_t = 0.9 v_{t-1} + 0.1 g_t²,   θ_t = θ_{t-1} - lr g_t / sqrt(v_t)

    which is this class with ``initial_square_avg=1e-3, alpha=0.9, eps=0``. With the default 0 it is
    torch's RMSprop to the bit (its state starts at zeros, as torch's does). Without ε an entry whose
    gradient is 0 long enough for its mean square to underflow to 0 steps by 0/0 = NaN, as theirs would:
    one seed of three did on adding T=100 (docs/results.md §2)."""

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0,
                 momentum: float = 0, centered: bool = False, initial_square_avg: float = 0.0, **kwargs):
        if not initial_square_avg >= 0:
            raise ValueError(f"optim.initial_square_avg={initial_square_avg} is not allowed: must be >= 0")
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, **kwargs)
        self.initial_square_avg = initial_square_avg

    @torch.no_grad()
    def step(self, closure=None):
        if self.initial_square_avg:
            for group in self.param_groups:
                fresh = [p for p in group["params"] if p.grad is not None and not self.state[p]]
                if fresh:  # torch's own state initialisation, then the mean square's start
                    self._init_group({**group, "params": fresh}, [], [], [], [], [], [])
                    for p in fresh:
                        self.state[p]["square_avg"].fill_(self.initial_square_avg)
        return super().step(closure)
