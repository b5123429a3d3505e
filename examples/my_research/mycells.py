"""A cell of one's own: the Minimal Gated Unit (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for
Recurrent Neural Networks", eqs. 6-8), a GRU whose one forget gate also does the reset gate's work:

    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)                   the one gate
    h̃_t = tanh(W_h x_t + U_h (f_t ⊙ h_{t-1}) + b_h)        the candidate reads the gated state
    h_t = (1 - f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t

(rnnbench has no MGU, which is why it is the example.) The biases b_f, b_h are `bias_ih + bias_hh`
in torch's layout, as in rnnbench's GRU; weights and biases start U(-1/√H, 1/√H), torch's default.
"""

import torch

from rnnbench.modules.cells import Cell


class MGUCell(Cell):
    gates = 2  # f and h̃: weight_ih (2H, I), weight_hh (2H, H) = [U_f; U_h], biases (2H)
    gate_activations = ("forget",)  # its σ gate, for the gate statistics

    def step(self, x_proj_t, state, gates=None):
        (h,) = state                                                        # (B, H)
        x_f, x_h = x_proj_t.chunk(2, dim=1)                                 # W x_t + b_ih, (B, H) each
        U_f, U_h = self.weight_hh.chunk(2, dim=0)                           # (H, H) each
        b_f, b_h = self.bias_hh.chunk(2)
        f = torch.sigmoid(torch.addmm(x_f + b_f, h, U_f.t()))              # (B, H)
        h_tilde = torch.tanh(torch.addmm(x_h + b_h, f * h, U_h.t()))       # (B, H)
        if gates is not None:
            gates["forget"] = f
        h = (1 - f) * h + f * h_tilde
        return h, (h,)
