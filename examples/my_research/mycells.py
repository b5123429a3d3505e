"""A cell of one's own: minGRU (Feng et al. 2024, "Were RNNs All We Needed?", eqs. for minGRU):

    z_t = σ(W_z x_t + b_z)                          the gate reads the input only
    h̃_t = W_h x_t + b_h                             the candidate too: no tanh, no U h_{t-1}
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
"""

import torch

from rnnbench.modules.cells import Cell


class MinGRUCell(Cell):
    gates = 2  # W x_t + b for z and h̃ in one matmul: weight_ih (2H, I), bias_ih (2H)

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        del self.weight_hh, self.bias_hh  # no recurrent weights: h_{t-1} enters only through the mix

    def step(self, x_proj_t, state):
        (h,) = state                                                    # (B, H)
        z, h_tilde = x_proj_t.chunk(2, dim=1)                           # (B, H) each
        z = torch.sigmoid(z)
        h = (1 - z) * h + z * h_tilde
        return h, (h,)
