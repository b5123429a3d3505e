"""The four recurrent cells, each written from its equations (../shared/REFERENCE.md).

Every cell shares one small interface, so the layers and stacks in `recurrent.py` never ask which
cell they hold:

    x_proj = cell.input_projection(x)        # (T, B, I) -> (T, B, G*H), one matmul, biases folded in
    h, state = cell.step(x_proj[t], state)   # one time step of the equations
    cell.default_state(B, device, dtype)     # zeros: (h,) or (h, c), each (B, H)
    cell.fused_mode                          # the torch kernel computing exactly this function, or None

Parameters are named and laid out as torch's own (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`;
LSTM gates i, f, g, o; GRU gates r, z, n), so the fused backend runs on the very same tensors and a
model trained fused runs through the explicit path unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]

RECURRENT_INITS = ("default", "orthogonal", "identity")


class Cell(nn.Module):
    """Base of every cell: torch's parameter layout and the shared interface."""

    gates: int = 1
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, recurrent_init: str = "default"):
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be >= 1, got {input_size}, {hidden_size}")
        if recurrent_init not in RECURRENT_INITS:
            raise ValueError(f"recurrent_init={recurrent_init!r}: allowed {', '.join(RECURRENT_INITS)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.recurrent_init = recurrent_init
        G, H = self.gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))
        self.bias_ih = nn.Parameter(torch.empty(G * H))
        self.bias_hh = nn.Parameter(torch.empty(G * H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's default for every RNN module: U(-1/sqrt(H), 1/sqrt(H)) on all weights and biases.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        H = self.hidden_size
        if self.recurrent_init == "orthogonal":
            # One orthogonal H x H block per gate (Saxe et al. 2014; seeds: remedy for vanishing gradients).
            for g in range(self.gates):
                nn.init.orthogonal_(self.weight_hh.data[g * H:(g + 1) * H])
        elif self.recurrent_init == "identity":
            # IRNN (Le et al. 2015): U = I per gate block, zero bias.
            with torch.no_grad():
                for g in range(self.gates):
                    self.weight_hh[g * H:(g + 1) * H].copy_(torch.eye(H))
                self.bias_ih.zero_()
                self.bias_hh.zero_()

    # -- the shared interface -------------------------------------------------------------------
    def default_state(self, batch: int, device=None, dtype=None) -> State:
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return tuple(zeros.clone() for _ in self.state_names)

    def input_projection(self, x: Tensor) -> Tensor:
        """(T, B, I) -> (T, B, G*H): W x_t + b_ih for every step in one matmul."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    @property
    def fused_mode(self) -> str | None:
        return None

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run a whole sequence (T, B, I) step by step; returns outputs (T, B, H) and the final state."""
        if state is None:
            state = self.default_state(x.shape[1], x.device, x.dtype)
        outputs = []
        for x_proj_t in self.input_projection(x).unbind(0):
            h, state = self.step(x_proj_t, state)
            outputs.append(h)
        return torch.stack(outputs), state

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, recurrent_init={self.recurrent_init!r}"


class VanillaCell(Cell):
    """Elman RNN: h_t = φ(W x_t + U h_{t-1} + b), φ ∈ {tanh, relu} (Elman 1990; seeds 000, 001, 003).

    `recurrent_init="identity"` with `nonlinearity="relu"` is the IRNN of Le et al. 2015
    ("A Simple Way to Initialize Recurrent Networks of Rectified Linear Units"): U = I, b = 0.
    """

    gates = 1
    state_names = ("h",)
    NONLINEARITIES = ("tanh", "relu")

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh",
                 recurrent_init: str = "default"):
        if nonlinearity not in self.NONLINEARITIES:
            raise ValueError(f"nonlinearity={nonlinearity!r}: allowed {', '.join(self.NONLINEARITIES)}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, recurrent_init)

    def step(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state                                                            # (B, H)
        pre = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())      # W x + b + U h  (B, H)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return h, (h,)

    @property
    def fused_mode(self) -> str | None:
        return f"rnn_{self.nonlinearity}"


class LSTMCell(Cell):
    """LSTM with forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000), torch.nn.LSTM's function.

        i, f, g, o = σ(·), σ(·), tanh(·), σ(·)  of  W x_t + U h_{t-1} + b   (gate order i, f, g, o)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)

    `forget_bias` is the initial total forget-gate bias b_f (Jozefowicz et al. 2015 recommend 1).
    """

    gates = 4
    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_init: str = "default"):
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, recurrent_init)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        H = self.hidden_size
        with torch.no_grad():  # b_f = bias_ih[f] + bias_hh[f] = forget_bias
            self.bias_ih[H:2 * H].fill_(self.forget_bias)
            self.bias_hh[H:2 * H].zero_()

    def step(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state                                                            # (B, H) each
        gates = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())    # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)                                      # (B, H) each
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    @property
    def fused_mode(self) -> str | None:
        return "lstm"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_bias={self.forget_bias}"


class PeepholeLSTMCell(LSTMCell):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and
    count"; the standard diagonal form of Greff et al. 2016):

        i_t = σ(W_i x_t + U_i h_{t-1} + p_i ⊙ c_{t-1} + b_i)
        f_t = σ(W_f x_t + U_f h_{t-1} + p_f ⊙ c_{t-1} + b_f)
        g_t = tanh(W_g x_t + U_g h_{t-1} + b_g)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        o_t = σ(W_o x_t + U_o h_{t-1} + p_o ⊙ c_t + b_o)        the output gate sees c_t, not c_{t-1}
        h_t = o_t ⊙ tanh(c_t)

    `peephole` is (3, H), rows p_i, p_f, p_o, initialised like the other weights. No torch kernel
    computes this function; `recurrent.py` runs it through `fast_peephole` when that is available.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_init: str = "default"):
        super().__init__(input_size, hidden_size, forget_bias, recurrent_init)

    def reset_parameters(self) -> None:
        if not hasattr(self, "peephole"):
            self.peephole = nn.Parameter(torch.empty(3, self.hidden_size))
        super().reset_parameters()

    def step(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c_prev = state                                                       # (B, H) each
        gates = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())    # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)                                      # (B, H) each
        p_i, p_f, p_o = self.peephole                                           # (H,) each
        i = torch.sigmoid(i + p_i * c_prev)
        f = torch.sigmoid(f + p_f * c_prev)
        c = f * c_prev + i * torch.tanh(g)
        o = torch.sigmoid(o + p_o * c)
        h = o * torch.tanh(c)
        return h, (h, c)

    @property
    def fused_mode(self) -> str | None:
        return None


class GRUCell(Cell):
    """Gated recurrent unit (Cho et al. 2014), in both published forms, switched by `reset_after`
    (Keras's name for the switch). Gate order r, z, n as in torch.nn.GRU.

        r_t = σ(W_r x_t + b_ir + U_r h_{t-1} + b_hr)
        z_t = σ(W_z x_t + b_iz + U_z h_{t-1} + b_hz)
        reset_after=True  (cuDNN / torch.nn.GRU):  n_t = tanh(W_n x_t + b_in + r_t ⊙ (U_n h_{t-1} + b_hn))
        reset_after=False (Cho et al. 2014):       n_t = tanh(W_n x_t + b_in + U_n (r_t ⊙ h_{t-1}) + b_hn)
        h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

    The update convention is Cho et al.'s (and torch's): z_t keeps the old state. The lecture notes
    write h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ n_t, the same family of functions with z_t ↔ 1 - z_t
    (negate W_z, U_z, b_z); only the reset placement makes the two forms different functions.
    """

    gates = 3
    state_names = ("h",)

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True,
                 recurrent_init: str = "default"):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, recurrent_init)

    def step(self, x_proj_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state                                                            # (B, H)
        H = self.hidden_size
        if self.reset_after:
            h_proj = torch.addmm(self.bias_hh, h, self.weight_hh.t())          # U h + b_h  (B, 3H)
            x_r, x_z, x_n = x_proj_t.chunk(3, dim=1)
            h_r, h_z, h_n = h_proj.chunk(3, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
        else:
            # r and z need U_{r,z} h first; U_n then multiplies the reset state r ⊙ h.
            rz = torch.addmm(x_proj_t[:, :2 * H] + self.bias_hh[:2 * H], h, self.weight_hh[:2 * H].t())
            r, z = torch.sigmoid(rz).chunk(2, dim=1)                            # (B, H) each
            n = torch.tanh(torch.addmm(x_proj_t[:, 2 * H:] + self.bias_hh[2 * H:],
                                       r * h, self.weight_hh[2 * H:].t()))
        h = (1 - z) * n + z * h
        return h, (h,)

    @property
    def fused_mode(self) -> str | None:
        return "gru" if self.reset_after else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"


CELLS = {"vanilla": VanillaCell, "lstm": LSTMCell, "peephole": PeepholeLSTMCell, "gru": GRUCell}
