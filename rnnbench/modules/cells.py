"""The four recurrent cells, each written from the equations of the paper its class docstring cites.

Every cell shares one small interface, so the layers and stacks in `recurrent.py` never ask which
cell they hold:

    x_proj = cell.input_projection(x)        # (T, B, I) -> (T, B, G*H), one matmul, biases folded in
    h, state = cell.step(x_proj[t], state)   # one time step of the equations
    cell.default_state(B, device, dtype)     # zeros: (h,) or (h, c), each (B, H)
    cell.fused_mode                          # the torch kernel computing exactly this function, or None
    cell.step(x_proj[t], state, gates={})    # ... also fills the dict with the σ gates' values (B, H)
    cell.gate_activations                    # the names of those gates ("forget", ...); () without gates

Parameters are named and laid out as torch's own (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`;
LSTM gates i, f, g, o; GRU gates r, z, n), so the fused backend runs on the very same tensors and a
model trained fused runs through the explicit path unchanged.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnbench.kernels.variants import LSTM_VARIANTS

State = tuple[Tensor, ...]

RECURRENT_INITS = ("default", "orthogonal", "identity")


def size_error(key: str, value: int) -> str | None:
    """The one rule for a size (hidden size, layer count, parameter budget; a task's lengths and counts):
    a positive integer. Returns the message naming the key, the value and what is allowed, or None.
    `run.config.validate` reports it for every size key of a config before anything runs; the
    constructors raise it (`require_size`) for a model built in Python."""
    if isinstance(value, bool) or not value >= 1:
        return f"{key}={value} is not allowed: must be a positive integer (>= 1)"
    return None


def require_size(key: str, value: int) -> None:
    """ValueError with `size_error`'s message if `value` is not a positive integer."""
    error = size_error(key, value)
    if error is not None:
        raise ValueError(error)


class Cell(nn.Module):
    """Base of every cell: torch's parameter layout and the shared interface."""

    gates: int = 1
    state_names: tuple[str, ...] = ("h",)
    # The sigmoid gates `step(..., gates=dict)` reports (their saturation is what Karpathy et al. 2015
    # plot); a cell without gates reports none.
    gate_activations: tuple[str, ...] = ()
    # The allowed values of the constructor's choice arguments, checked before a run starts
    # (run.config.validate reads them from the class `cell._target_` names: a cell of a user's own
    # with a key of the same name follows its own rules).
    ALLOWED: ClassVar[dict[str, tuple[str, ...]]] = {"recurrent_init": RECURRENT_INITS}

    def __init__(self, input_size: int, hidden_size: int, recurrent_init: str = "default",
                 recurrent_gain: float = 1.0):
        super().__init__()
        require_size("input_size", input_size)
        require_size("hidden_size", hidden_size)
        if recurrent_init not in RECURRENT_INITS:
            raise ValueError(f"recurrent_init={recurrent_init!r}: allowed {', '.join(RECURRENT_INITS)}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.recurrent_init = recurrent_init
        self.recurrent_gain = recurrent_gain
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
        if self.recurrent_gain != 1.0:
            # U scaled by a gain: an orthogonal U then has every singular value (and so ‖U‖₂) equal
            # to the gain, the γ of Pascanu et al. 2013's bound ‖∂h_t/∂h_k‖ ≤ γ^{t-k} for tanh.
            with torch.no_grad():
                self.weight_hh.mul_(self.recurrent_gain)

    # -- the shared interface -------------------------------------------------------------------
    def default_state(self, batch: int, device=None, dtype=None) -> State:
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return tuple(zeros.clone() for _ in self.state_names)

    def input_projection(self, x: Tensor) -> Tensor:
        """(T, B, I) -> (T, B, G*H): W x_t + b_ih for every step in one matmul."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
        """One step of the equations; when `gates` is a dict, the σ gate values of this step go in it
        under the names of `gate_activations`, each (B, H)."""
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
        gain = f", recurrent_gain={self.recurrent_gain}" if self.recurrent_gain != 1.0 else ""
        return f"{self.input_size}, {self.hidden_size}, recurrent_init={self.recurrent_init!r}{gain}"


class VanillaCell(Cell):
    """Elman RNN: h_t = φ(W x_t + U h_{t-1} + b), φ ∈ {tanh, relu} (Elman 1990; seeds 000, 001, 003).

    `recurrent_init="identity"` with `nonlinearity="relu"` is the IRNN of Le et al. 2015
    ("A Simple Way to Initialize Recurrent Networks of Rectified Linear Units"): U = I, b = 0.
    """

    gates = 1
    state_names = ("h",)
    NONLINEARITIES = ("tanh", "relu")
    ALLOWED = {**Cell.ALLOWED, "nonlinearity": NONLINEARITIES}

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh",
                 recurrent_init: str = "default", recurrent_gain: float = 1.0):
        if nonlinearity not in self.NONLINEARITIES:
            raise ValueError(f"nonlinearity={nonlinearity!r}: allowed {', '.join(self.NONLINEARITIES)}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, recurrent_init, recurrent_gain)

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
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
    gate_names: tuple[str, ...] = ("i", "f", "g", "o")  # the row blocks of weight_ih, weight_hh, biases
    state_names = ("h", "c")
    gate_activations = ("input", "forget", "output")

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_init: str = "default", recurrent_gain: float = 1.0):
        self.forget_bias = forget_bias
        super().__init__(input_size, hidden_size, recurrent_init, recurrent_gain)

    def initial_gate_biases(self) -> dict[str, float]:
        """Total bias (bias_ih + bias_hh) each gate starts from, where it is not random."""
        return {"f": self.forget_bias}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        H = self.hidden_size
        with torch.no_grad():  # e.g. b_f = bias_ih[f] + bias_hh[f] = forget_bias
            for gate, value in self.initial_gate_biases().items():
                k = self.gate_names.index(gate)
                self.bias_ih[k * H:(k + 1) * H].fill_(value)
                self.bias_hh[k * H:(k + 1) * H].zero_()

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
        h, c = state                                                            # (B, H) each
        a = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())        # (B, 4H)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)                                  # (B, H) each
        i, f, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.sigmoid(a_o)
        c = f * c + i * torch.tanh(a_g)
        h = o * torch.tanh(c)
        if gates is not None:
            gates.update(input=i, forget=f, output=o)
        return h, (h, c)

    @property
    def fused_mode(self) -> str | None:
        return "lstm"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", forget_bias={self.forget_bias}"


class ArjovskyLSTMCell(LSTMCell):
    """The LSTM of Arjovsky, Shah & Bengio 2016's code (github.com/amarshah/complex_RNN, models.py `LSTM`,
    the baseline of their adding and copy figures), as three switches over `LSTMCell`:

        o_t = σ(W_o x_t + U_o h_{t-1} + V_o c_t + b_o)   `cell_to_output`: a full H x H matrix V_o
                                                          (`cell_output`) from the new cell state c_t
        W, U, V ~ U(±sqrt(6 / (fan_in + fan_out))) per gate block, biases 0 but b_f = forget_bias
                                                          `glorot` (their `initialize_matrix`, b_f = 1)
        (h_0, c_0) learned, zero at the start            `learned_initial_state` (`initial_state`, (2, H))

    The other gates and c_t, h_t are `LSTMCell`'s. Deviations: the output layer keeps the model's head
    init (theirs is Glorot too), and the biases stay torch's two vectors (theirs: one per gate).
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0, glorot: bool = True,
                 cell_to_output: bool = True, learned_initial_state: bool = True,
                 recurrent_init: str = "default", recurrent_gain: float = 1.0):
        if glorot and recurrent_init != "default":
            raise ValueError(f"cell.recurrent_init={recurrent_init!r} is not allowed with cell.glorot=true "
                             f"(Glorot initialises U too): choose default, or cell.glorot=false")
        if glorot and recurrent_gain != 1.0:  # Glorot's draw would overwrite the scaled U: the gain did nothing
            raise ValueError(f"cell.recurrent_gain={recurrent_gain} is not allowed with cell.glorot=true "
                             f"(Glorot initialises U too): leave it at 1.0, or cell.glorot=false")
        self.glorot, self.cell_to_output, self.learned_initial_state = glorot, cell_to_output, learned_initial_state
        super().__init__(input_size, hidden_size, forget_bias, recurrent_init, recurrent_gain)

    def reset_parameters(self) -> None:
        H = self.hidden_size
        if self.cell_to_output and not hasattr(self, "cell_output"):
            self.cell_output = nn.Parameter(torch.empty(H, H))                  # V_o
        if self.learned_initial_state and not hasattr(self, "initial_state"):
            self.initial_state = nn.Parameter(torch.empty(2, H))                # rows h_0, c_0
        super().reset_parameters()
        with torch.no_grad():
            if self.learned_initial_state:
                self.initial_state.zero_()
            if self.glorot:
                for block in (*self.weight_ih.split(H), *self.weight_hh.split(H),
                              *((self.cell_output,) if self.cell_to_output else ())):
                    fan_out, fan_in = block.shape
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    nn.init.uniform_(block, -bound, bound)
                self.bias_ih.zero_()
                self.bias_hh.zero_()
                k = self.gate_names.index("f")
                self.bias_ih[k * H:(k + 1) * H].fill_(self.forget_bias)

    def default_state(self, batch: int, device=None, dtype=None) -> State:
        if not self.learned_initial_state:
            return super().default_state(batch, device, dtype)
        h0, c0 = self.initial_state.to(device=device, dtype=dtype)            # (H,) each
        return h0.expand(batch, -1), c0.expand(batch, -1)                       # (B, H) each

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
        if not self.cell_to_output:
            return super().step(x_proj_t, state, gates)
        h, c = state                                                            # (B, H) each
        a = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())        # (B, 4H)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)                                  # (B, H) each
        i, f = torch.sigmoid(a_i), torch.sigmoid(a_f)
        c = f * c + i * torch.tanh(a_g)
        o = torch.sigmoid(torch.addmm(a_o, c, self.cell_output.t()))          # V_o c_t: after c_t
        h = o * torch.tanh(c)
        if gates is not None:
            gates.update(input=i, forget=f, output=o)
        return h, (h, c)

    @property
    def fused_mode(self) -> str | None:
        return None if self.cell_to_output else "lstm"

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", glorot={self.glorot}, cell_to_output={self.cell_to_output}, "
                                       f"learned_initial_state={self.learned_initial_state}")


class PeepholeLSTMCell(LSTMCell):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber 2000, "Recurrent nets that time and
    count"), the "vanilla" LSTM of Greff et al. 2016, and its eight variants (`variant`, LSTM_VARIANTS).

    vanilla, with a_* = W_* x_t + U_* h_{t-1} + b_*:
        i_t = σ(a_i + p_i ⊙ c_{t-1})
        f_t = σ(a_f + p_f ⊙ c_{t-1})
        g_t = tanh(a_g)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        o_t = σ(a_o + p_o ⊙ c_t)        the output gate sees c_t, not c_{t-1}
        h_t = o_t ⊙ tanh(c_t)

    Variants (Greff et al. §III), each one change to those equations:
        nig   no input gate                i_t = 1
        nfg   no forget gate               f_t = 1
        nog   no output gate               o_t = 1
        niaf  no input activation function g_t = a_g
        noaf  no output activation function h_t = o_t ⊙ c_t
        np    no peepholes                 p_i = p_f = p_o = 0: torch.nn.LSTM's function (`fused_mode`)
        cifg  coupled input and forget gate f_t = 1 - i_t
        fgr   full gate recurrence         a_j += R_ji i_{t-1} + R_jf f_{t-1} + R_jo o_{t-1}, j ∈ {i, f, o}

    A variant has exactly the parameters its equations use: a gate it removes (i for nig; f for nfg
    and cifg; o for nog) has no rows in weight_ih, weight_hh, bias_ih, bias_hh (`gate_names` lists the
    row blocks present, in the order i, f, g, o), nor a peephole; `peephole` is (len(peephole_names), H)
    and absent for np, whose parameters are then exactly LSTMCell's; fgr adds the nine H x H matrices
    R_jk as `gate_recurrence` (3H, 3H) (rows: gate at t, columns: gate at t-1, both in order i, f, o)
    and carries the previous gate activations (B, 3H) as a third state tensor, zero at t = 0; R is
    drawn like the other weights (`recurrent_init` and `recurrent_gain` act on U alone).
    `forget_bias` is the initial total forget-gate bias; with cifg, where f_t = 1 - σ(a_i) = σ(-a_i),
    it is applied as b_i = -forget_bias, so the forget gate starts as open as the vanilla LSTM's.
    Every variant but fgr runs on `fast_peephole`'s sequence kernel under `model.backend=auto`; fgr on
    these explicit equations.
    """

    ALLOWED = {**Cell.ALLOWED, "variant": tuple(LSTM_VARIANTS)}

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_init: str = "default", variant: str = "vanilla", recurrent_gain: float = 1.0):
        if variant not in LSTM_VARIANTS:
            raise ValueError(f"cell.variant={variant!r} is not allowed: choose one of {', '.join(LSTM_VARIANTS)}")
        self.variant = variant
        self.switches = v = LSTM_VARIANTS[variant]
        sigmoid_gates = tuple(gate for gate, present in
                              (("i", v.input_gate), ("f", v.forget_gate), ("o", v.output_gate)) if present)
        self.gate_names = tuple(gate for gate in ("i", "f", "g", "o") if gate in sigmoid_gates + ("g",))
        self.gates = len(self.gate_names)
        self.peephole_names = sigmoid_gates if v.peepholes else ()
        self.recurrent_gate_names = sigmoid_gates if v.full_gate_recurrence else ()
        self.state_names = ("h", "c", "gates") if v.full_gate_recurrence else ("h", "c")
        # the learned σ gates (cifg's f = 1 - i is not one)
        self.gate_activations = tuple(name for gate, name in (("i", "input"), ("f", "forget"), ("o", "output"))
                                      if gate in sigmoid_gates)
        super().__init__(input_size, hidden_size, forget_bias, recurrent_init, recurrent_gain)

    def initial_gate_biases(self) -> dict[str, float]:
        if self.switches.coupled:
            return {"i": -self.forget_bias}
        return super().initial_gate_biases() if "f" in self.gate_names else {}

    def reset_parameters(self) -> None:
        # Created here, after the four torch-layout tensors, so that they are initialised last and the
        # vanilla cell draws today's numbers from a seed.
        H = self.hidden_size
        if self.peephole_names and not hasattr(self, "peephole"):
            self.peephole = nn.Parameter(torch.empty(len(self.peephole_names), H))
        if self.recurrent_gate_names and not hasattr(self, "gate_recurrence"):
            n = len(self.recurrent_gate_names) * H
            self.gate_recurrence = nn.Parameter(torch.empty(n, n))
        super().reset_parameters()

    def default_state(self, batch: int, device=None, dtype=None) -> State:
        state = super().default_state(batch, device, dtype)
        if self.recurrent_gate_names:  # the gate activations of t = 0 - 1: zero
            state = state[:2] + (torch.zeros(batch, len(self.recurrent_gate_names) * self.hidden_size,
                                             device=device, dtype=dtype),)
        return state

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
        h, c_prev = state[:2]                                                   # (B, H) each
        v = self.switches
        a = torch.addmm(x_proj_t + self.bias_hh, h, self.weight_hh.t())        # (B, G*H)
        a = dict(zip(self.gate_names, a.chunk(self.gates, dim=1)))             # (B, H) each
        if v.full_gate_recurrence:
            r = state[2] @ self.gate_recurrence.t()                             # Σ_k R_jk k_{t-1}  (B, 3H)
            for gate, r_gate in zip(self.recurrent_gate_names, r.chunk(len(self.recurrent_gate_names), dim=1)):
                a[gate] = a[gate] + r_gate
        p = dict(zip(self.peephole_names, self.peephole)) if self.peephole_names else {}  # (H,) each
        i = f = o = None  # None: the gate is absent (= 1)
        if v.input_gate:
            i = torch.sigmoid(a["i"] + p["i"] * c_prev) if v.peepholes else torch.sigmoid(a["i"])
        if v.forget_gate:
            f = torch.sigmoid(a["f"] + p["f"] * c_prev) if v.peepholes else torch.sigmoid(a["f"])
        elif v.coupled:
            f = 1 - i
        g = torch.tanh(a["g"]) if v.input_activation else a["g"]
        c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
        if v.output_gate:
            o = torch.sigmoid(a["o"] + p["o"] * c) if v.peepholes else torch.sigmoid(a["o"])
        out = torch.tanh(c) if v.output_activation else c
        h = out if o is None else o * out
        if gates is not None:
            gates.update((name, value) for name, value in (("input", i), ("forget", f), ("output", o))
                         if name in self.gate_activations)
        if v.full_gate_recurrence:
            activations = {"i": i, "f": f, "o": o}
            return h, (h, c, torch.cat([activations[gate] for gate in self.recurrent_gate_names], dim=1))
        return h, (h, c)

    @property
    def fused_mode(self) -> str | None:
        return "lstm" if self.variant == "np" else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", variant={self.variant!r}"


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
    gate_activations = ("reset", "update")

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True,
                 recurrent_init: str = "default", recurrent_gain: float = 1.0):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, recurrent_init, recurrent_gain)

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
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
        if gates is not None:
            gates.update(reset=r, update=z)
        return h, (h,)

    @property
    def fused_mode(self) -> str | None:
        return "gru" if self.reset_after else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"


CELLS = {"vanilla": VanillaCell, "lstm": LSTMCell, "lstm_arjovsky": ArjovskyLSTMCell, "peephole": PeepholeLSTMCell,
         "gru": GRUCell}
