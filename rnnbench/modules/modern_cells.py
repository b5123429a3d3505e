"""The recurrences of 2018-2024 as rnnbench cells, each written from its paper's equations (numbers cited in
each class) with the initialisation of the authors' code, deviations named in the docstring.

They keep the cell interface of `cells.py` (`input_projection`, `step`, `default_state`, `fused_mode`,
`gate_activations`, `input_size`, `hidden_size`), generalised in two ways:
- the state is a tuple whose first entry is the cell's output y_t (B, H) — what the layer emits, what the
  heads pool and what the temporal gradient profile ‖∂L/∂h_t‖ probes — followed by tensors of any shape
  (B, ...): S6's (B, E, N), mLSTM's and Gated DeltaNet's matrices per head (B, heads, d, d), LRU's complex
  (B, N). Where y_t is the recurrent state itself (minGRU, minLSTM, RG-LRU, IndRNN, sLSTM's h) it is entry
  one and nothing is stored twice; `state_names` name the entries, "y" marking an output that is not carried.
- cells whose recurrence is linear in the state have `sequence(x_proj, state, lengths)`: the whole sequence
  at once (`scan.linear_scan`: the C++ kernel on CPU), the path `model.backend=auto` takes; `step` stays the
  reference the tests hold `sequence` to (values and gradients, tests/test_modern_cells.py).

`state_size(cell)` counts the floats a sequence carries between steps per layer and direction (a complex
number as two), for summary.json and the state budget.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnbench.kernels import indrnn, scan, slstm
from rnnbench.kernels.lengths import valid_steps
from rnnbench.modules.cells import Cell, require_size

State = tuple[Tensor, ...]


def state_size(cell: nn.Module) -> int:
    """Floats a sequence carries from one step to the next in this cell (complex counts 2); the output
    entry "y" of a cell whose output is not its state is not carried and not counted."""
    names = getattr(cell, "state_names", ())
    with torch.device("meta"):
        state = cell.default_state(1, torch.device("meta"), torch.float32)
    return sum(s.numel() * (2 if s.is_complex() else 1)
               for i, s in enumerate(state) if not (i < len(names) and names[i] == "y"))


@functools.cache
def _warn_once_step_loop(cell: str, dtype: str, device: str) -> None:
    warnings.warn(f"model.backend=auto: the C++ kernel of {cell} runs float32/float64 on CPU where it is built; "
                  f"{dtype} on {device} runs its step loop", RuntimeWarning, stacklevel=4)


def _complex_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _freeze_padded(state: State, new: State, lengths: Tensor | None, T: int) -> State:
    """`new` where a sequence had at least one valid step, else the old state (a zero-length sequence)."""
    if lengths is None:
        return new
    seen = (lengths.to(new[0].device) > 0)
    return tuple(torch.where(seen.view(-1, *([1] * (n.dim() - 1))), n, s) for n, s in zip(new, state))


class ModernCell(nn.Module):
    """Base: the interface, a default state of zeros in the shapes `state_shapes` gives, and the step loop."""

    state_names: tuple[str, ...] = ("h",)
    gate_activations: tuple[str, ...] = ()
    fused_mode = None  # no torch kernel computes any of these cells

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        require_size("input_size", input_size)  # the one size rule of every cell (cells.size_error)
        require_size("hidden_size", hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size

    def state_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each state entry without the batch dimension."""
        return ((self.hidden_size,),)

    def default_state(self, batch: int, device=None, dtype=None) -> State:
        return tuple(torch.zeros(batch, *shape, device=device, dtype=dtype) for shape in self.state_shapes())

    def input_projection(self, x: Tensor) -> Tensor:
        """(T, B, I) -> (T, B, P): every input-only linear map of the cell in one matmul."""
        return F.linear(x, self.weight_in, self.bias_in)

    def step(self, x_proj_t: Tensor, state: State, gates: dict[str, Tensor] | None = None
             ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _step_loop(self, x_proj: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        """`step` over x_proj (T, B, P), each entry frozen and the output zero at padded steps (as
        `recurrent.run_explicit`): where a cell's fast sequence form cannot run."""
        _warn_once_step_loop(type(self).__name__, str(x_proj.dtype), x_proj.device.type)
        T = x_proj.shape[0]
        masks = None if lengths is None else valid_steps(lengths, T, x_proj.device).unbind(0)
        outputs = []
        for t, x_proj_t in enumerate(x_proj.unbind(0)):
            h, new_state = self.step(x_proj_t, state)
            if masks is not None:
                new_state = tuple(torch.where(masks[t].view(-1, *([1] * (n.dim() - 1))), n, s)
                                  for n, s in zip(new_state, state))
                h = h.masked_fill(~masks[t], 0.0)  # zero, not h·0 (NaN where h is ±inf)
            state = new_state
            outputs.append(h)
        return torch.stack(outputs), state

    forward = Cell.forward  # a whole sequence step by step, as every classic cell runs one

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def _linear_init(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """torch.nn.Linear's default, U(-1/√fan_in, 1/√fan_in), what the authors' code gets from nn.Linear."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


def _log_g(x: Tensor) -> Tensor:
    """log g(x) of Feng et al. 2024 (appendix, log-space minGRU/minLSTM): g(x) = x + 1/2 for x >= 0, σ(x) else,
    a positive, continuous activation so that h̃ has a real logarithm."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def _g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


# ---------------------------------------------------------------------------------------------------------
class MinGRUCell(ModernCell):
    """minGRU (Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs All We Needed?", §3.1.3):

        z_t = σ(Linear_z(x_t))                         update gate, from the input only
        h̃_t = Linear_h(x_t)                            candidate (log_space: h̃_t = g(Linear_h(x_t)))
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

    a diagonal linear recurrence a_t = 1 - z_t, b_t = z_t ⊙ h̃_t: `sequence` runs the gates and the scan fused
    in C++ (`scan.min_rnn`, CPU float32/float64), elsewhere `scan.linear_scan` on the same a_t, b_t.
    `log_space=True` is the paper's log-space version (its appendix, "parallel_scan_log"): h̃ through the
    positive g(x) = x + ½ (x ≥ 0), σ(x) (x < 0), and the sequence computed as log h_t by Heinsen's scan with
    log z = -softplus(-k), log(1 - z) = -softplus(k); its `step` is the same equations with g. Measured: at
    T = 2,048 in float32 its parameter gradients differ from the step loop's by up to 20% (the cumulative sum
    Σ log a reaches ~-10³ and exp amplifies its rounding); the default form (the scan kernel) stays within 2e-3.
    Parameters: weight_in (2H, I) rows [z; h̃], bias_in (2H): 2H(I + 1) (nn.Linear's init, as the paper's code).
    """

    gate_activations = ("update",)

    def __init__(self, input_size: int, hidden_size: int, log_space: bool = False):
        super().__init__(input_size, hidden_size)
        self.log_space = bool(log_space)
        self.weight_in = nn.Parameter(torch.empty(2 * hidden_size, input_size))
        self.bias_in = nn.Parameter(torch.empty(2 * hidden_size))
        _linear_init(self.weight_in, self.bias_in, input_size)

    def step(self, x_proj_t, state, gates=None):
        (h,) = state                                                            # (B, H)
        k_z, k_h = x_proj_t.chunk(2, dim=-1)                                    # (B, H) each
        z = torch.sigmoid(k_z)
        h_tilde = _g(k_h) if self.log_space else k_h
        h = (1 - z) * h + z * h_tilde
        if gates is not None:
            gates.update(update=z)
        return h, (h,)

    def sequence(self, x_proj: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        (h0,) = state
        if not self.log_space and scan.fused_fits(x_proj):
            out, h = scan.min_rnn(x_proj, h0, lengths)                          # gates and scan fused, C++
            return out, (h,)
        k_z, k_h = x_proj.chunk(2, dim=-1)                                      # (T, B, H) each
        if self.log_space:
            out, h = scan.log_scan(-F.softplus(k_z), -F.softplus(-k_z) + _log_g(k_h), h0, lengths)
        else:
            z = torch.sigmoid(k_z)
            out, h = scan.linear_scan(1 - z, z * k_h, h0, lengths)
        return out, (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", log_space={self.log_space}"


class MinLSTMCell(ModernCell):
    """minLSTM (Feng et al. 2024, §3.2.3), with the paper's length-independent normalisation of the gates:

        f_t = σ(Linear_f(x_t))     i_t = σ(Linear_i(x_t))     h̃_t = Linear_h(x_t)   (log_space: g(Linear_h))
        f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)
        h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t

    log_space (the paper's appendix): with d = softplus(-k_f) - softplus(-k_i), log f' = -softplus(d),
    log i' = -softplus(-d), then Heinsen's scan as minGRU. Gate statistics report f_t and i_t.
    Parameters: weight_in (3H, I) rows [f; i; h̃], bias_in (3H): 3H(I + 1).
    """

    gate_activations = ("forget", "input")

    def __init__(self, input_size: int, hidden_size: int, log_space: bool = False):
        super().__init__(input_size, hidden_size)
        self.log_space = bool(log_space)
        self.weight_in = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.bias_in = nn.Parameter(torch.empty(3 * hidden_size))
        _linear_init(self.weight_in, self.bias_in, input_size)

    def step(self, x_proj_t, state, gates=None):
        (h,) = state
        k_f, k_i, k_h = x_proj_t.chunk(3, dim=-1)                               # (B, H) each
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        h_tilde = _g(k_h) if self.log_space else k_h
        h = f / (f + i) * h + i / (f + i) * h_tilde
        if gates is not None:
            gates.update(forget=f, input=i)
        return h, (h,)

    def sequence(self, x_proj, state, lengths=None):
        (h0,) = state
        if not self.log_space and scan.fused_fits(x_proj):
            out, h = scan.min_rnn(x_proj, h0, lengths)                          # gates and scan fused, C++
            return out, (h,)
        k_f, k_i, k_h = x_proj.chunk(3, dim=-1)
        if self.log_space:
            d = F.softplus(-k_f) - F.softplus(-k_i)
            out, h = scan.log_scan(-F.softplus(d), -F.softplus(-d) + _log_g(k_h), h0, lengths)
        else:
            f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
            out, h = scan.linear_scan(f / (f + i), i / (f + i) * k_h, h0, lengths)
        return out, (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", log_space={self.log_space}"


# ---------------------------------------------------------------------------------------------------------
class LRUCell(ModernCell):
    """Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De 2023, "Resurrecting Recurrent
    Neural Networks for Long Sequences", §3 and the appendix A code), state x_k ∈ ℂ^N:

        λ_j = exp(-exp(ν_j) + i·exp(θ_j))                     exponential parametrisation (§3.3, eq. 6)
        γ_j = exp(γ_log_j),  γ_log initialised to log √(1 - |λ_j|²)   normalisation (§3.4)
        x_k = diag(λ) x_{k-1} + γ ⊙ (B u_k)                   (eq. 1 with the γ of §3.4)
        y_k = Re(C x_k) + D u_k

    Ring initialisation (appendix A, `init_lru_parameters`): |λ| uniform on the ring r_min ≤ |λ| ≤ r_max by area,
    ν = log(-½ log(u₁(r_max² - r_min²) + r_min²)), phase θ = log(max_phase · u₂); B = (B_re + iB_im)/√(2I),
    C = (C_re + iC_im)/√N, entries N(0, 1).
    Deviation: the paper's D is diagonal (its input and output widths are equal); here the cell maps I inputs
    to H outputs, so D is a dense (H, I) matrix, N(0, 1/I).
    Parameters: ν, θ, γ_log (N each), weight_in = [B_re; B_im; D] (2N + H, I), C_re, C_im (H, N):
    3N + (2N + H)·I + 2HN. State: y (B, H) (output) and x (B, N) complex: 2N floats carried.
    `sequence` runs the recurrence in real halves on a fused C++ kernel (`scan.lru`, CPU float32/float64)
    and the readout as one GEMM; elsewhere `scan.linear_scan` on complex tensors.
    """

    state_names = ("y", "x")

    def __init__(self, input_size: int, hidden_size: int, state_dim: int | None = None, r_min: float = 0.0,
                 r_max: float = 1.0, max_phase: float = 2 * math.pi):
        super().__init__(input_size, hidden_size)
        N = hidden_size if state_dim is None else state_dim
        if N < 1:
            raise ValueError(f"cell.state_dim={state_dim} is not allowed: must be a positive integer")
        if not 0.0 <= r_min < r_max <= 1.0:
            raise ValueError(f"cell.r_min={r_min}, cell.r_max={r_max} are not allowed: need 0 <= r_min < r_max <= 1")
        self.state_dim, self.r_min, self.r_max, self.max_phase = N, r_min, r_max, max_phase
        self.nu_log = nn.Parameter(torch.empty(N))
        self.theta_log = nn.Parameter(torch.empty(N))
        self.gamma_log = nn.Parameter(torch.empty(N))
        self.weight_in = nn.Parameter(torch.empty(2 * N + hidden_size, input_size))
        self.C_re = nn.Parameter(torch.empty(hidden_size, N))
        self.C_im = nn.Parameter(torch.empty(hidden_size, N))
        self.bias_in = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        N, I = self.state_dim, self.input_size
        with torch.no_grad():
            u1, u2 = torch.rand(N), torch.rand(N)
            self.nu_log.copy_(torch.log(-0.5 * torch.log(u1 * (self.r_max ** 2 - self.r_min ** 2) + self.r_min ** 2)))
            self.theta_log.copy_(torch.log(self.max_phase * u2))
            modulus = torch.exp(-torch.exp(self.nu_log))
            self.gamma_log.copy_(torch.log(torch.sqrt(1 - modulus ** 2)))
            nn.init.normal_(self.weight_in[:2 * N], std=1 / math.sqrt(2 * I))
            nn.init.normal_(self.weight_in[2 * N:], std=1 / math.sqrt(I))
            nn.init.normal_(self.C_re, std=1 / math.sqrt(N))
            nn.init.normal_(self.C_im, std=1 / math.sqrt(N))

    def state_shapes(self):
        return ((self.hidden_size,), (self.state_dim,))

    def default_state(self, batch, device=None, dtype=None):
        return (torch.zeros(batch, self.hidden_size, device=device, dtype=dtype),
                torch.zeros(batch, self.state_dim, device=device, dtype=_complex_dtype(dtype)))

    def eigenvalues(self) -> Tensor:
        """λ (N,) complex: exp(-exp(ν) + i exp(θ))."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def _input(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """γ ⊙ B u (complex, (..., N)) and D u ((..., H))."""
        N = self.state_dim
        Bu = torch.complex(x_proj[..., :N], x_proj[..., N:2 * N])
        return torch.exp(self.gamma_log) * Bu, x_proj[..., 2 * N:]

    def _readout(self, x: Tensor, Du: Tensor) -> Tensor:
        # Re(C x) = C_re Re(x) - C_im Im(x)
        return F.linear(x.real, self.C_re) - F.linear(x.imag, self.C_im) + Du

    def step(self, x_proj_t, state, gates=None):
        _, x = state                                                            # x (B, N) complex
        gamma_Bu, Du = self._input(x_proj_t)
        x = self.eigenvalues() * x + gamma_Bu
        y = self._readout(x, Du)                                                # (B, H)
        return y, (y, x)

    def sequence(self, x_proj, state, lengths=None):
        _, x0 = state
        N = self.state_dim
        if scan.fused_fits(x_proj):  # in real halves on the fused C++ kernel, the readout one GEMM
            lam = self.eigenvalues()
            halves, last = scan.lru(x_proj, torch.cat([lam.real, lam.imag]), torch.exp(self.gamma_log),
                                    torch.cat([x0.real, x0.imag], dim=-1), lengths)       # (T, B, 2N), (B, 2N)
            x = torch.complex(last[:, :N], last[:, N:])
            y = F.linear(halves, torch.cat([self.C_re, -self.C_im], dim=1)) + x_proj[..., 2 * N:]
        else:
            gamma_Bu, Du = self._input(x_proj)                                  # (T, B, N), (T, B, H)
            lam = self.eigenvalues().expand_as(gamma_Bu)
            xs, x = scan.linear_scan(lam, gamma_Bu, x0, lengths)                # (T, B, N) complex
            y = self._readout(xs, Du)
        if lengths is not None:
            y = y.masked_fill(~valid_steps(lengths, y.shape[0], y.device), 0.0)  # not y·0: NaN at ±inf
        return y, _freeze_padded(state, (y[_last_index(lengths, y)], x), lengths, y.shape[0])

    def extra_repr(self):
        return (super().extra_repr() + f", state_dim={self.state_dim}, r_min={self.r_min}, r_max={self.r_max}, "
                f"max_phase={self.max_phase:.4g}")


def _last_index(lengths: Tensor | None, out: Tensor):
    """Index of each sequence's output at its own last valid step: out[idx] is (B, ...)."""
    T, B = out.shape[:2]
    if lengths is None:
        return T - 1
    last = (lengths.to(out.device) - 1).clamp(min=0)
    return last, torch.arange(B, device=out.device)


# ---------------------------------------------------------------------------------------------------------
class _SqrtBoundDerivative(torch.autograd.Function):
    """√x with its derivative bounded at 1000, as google-deepmind/recurrentgemma's RG-LRU computes
    √(1 - a_t²) (`SqrtBoundDerivative`, `_MAX_SQRT_GRADIENT = 1000`): 1/(2√x) grows without bound as a_t -> 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1 / 1000.0 ** 2))


def _causal_conv_step(u_t: Tensor, window: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """One step of a depthwise causal convolution of width k: u_t (B, E), window (B, E, k-1) the last k-1
    inputs (oldest first), weight (E, k), bias (E) -> output (B, E), the new window."""
    full = torch.cat([window, u_t.unsqueeze(-1)], dim=-1)                      # (B, E, k)
    return (full * weight).sum(-1) + bias, full[..., 1:]


def _causal_conv_sequence(u: Tensor, window: Tensor, weight: Tensor, bias: Tensor,
                          lengths: Tensor | None) -> tuple[Tensor, Tensor]:
    """The same convolution over u (T, B, E) after the window (B, E, k-1): outputs (T, B, E) and the window
    of the last k-1 inputs at each sequence's own end."""
    T, B, E = u.shape
    k = weight.shape[1]
    seq = torch.cat([window.permute(2, 0, 1), u], dim=0)                       # (k-1+T, B, E)
    # time-major shifted sums, not F.conv1d on a (B, E, T) view: the output stays contiguous in (T, B, E),
    # so what follows (SiLU, the selective scan) reads it in order (measured: conv1d's permuted output
    # made S6's SiLU backward and its copies the larger part of its step at T=500, H=256)
    out = torch.addcmul(bias, seq[:T], weight[:, 0])
    for j in range(1, k):
        out = torch.addcmul(out, seq[j:j + T], weight[:, j])
    ends = torch.full((B,), T, device=u.device) if lengths is None else lengths.to(u.device)
    index = ends.view(1, B) + torch.arange(k - 1, device=u.device).view(k - 1, 1)   # (k-1, B)
    new_window = seq.gather(0, index.unsqueeze(-1).expand(k - 1, B, E)).permute(1, 2, 0)
    return out, new_window


class RGLRUCell(ModernCell):
    """Real-Gated Linear Recurrent Unit (De et al. 2024, "Griffin: Mixing Gated Linear Recurrences with Local
    Attention", §2.4, eqs. 1-4), on the input u_t = W_u x_t + b_u (H):

        r_t = σ(W_a u_t + b_a)                recurrence gate      (1)
        i_t = σ(W_x u_t + b_x)                input gate           (2)
        a_t = a^{c r_t},  a = σ(Λ),  c = 8    log a_t = -c r_t softplus(-Λ)   (3)
        h_t = a_t ⊙ h_{t-1} + √(1 - a_t²) ⊙ (i_t ⊙ u_t)                      (4)

    W_a, W_x are block-diagonal with `num_heads` blocks (the authors' `BlockDiagonalLinear`: N(0, 1/width_block),
    zero bias); Λ as the authors' `rnn_param_init(min_rad=0.9, max_rad=0.999)`: a uniform by area on the ring
    0.9 ≤ a ≤ 0.999. Paper and code disagree here: §2.4 says a^c lies in [0.9, 0.999]; the code puts a itself
    there (so a^c starts in [0.43, 0.992]); this follows the code. √(1 - a_t²) has the code's derivative bound.
    Deviations: the code resets h (and drops the √ factor) at document starts; here a sequence continues from
    its initial (carried) state. The paper's u_t is its block's input; here u_t = W_u x_t + b_u (nn.Linear init).

    `temporal_block=True` is Hawk's recurrent block (§2.3, Fig. 2(c)): two branches of the input, the gate
    GeLU(W_g x_t + b_g) and the recurrence input u_t = Conv1D_4(W_u x_t + b_u) (depthwise causal, width
    `conv_width`), and the output y_t = W_o (GeLU branch ⊙ h_t) + b_o; then the state also holds y and the
    convolution window. Parameters: W_u, b_u (H(I + 1)); W_a, W_x, b_a, b_x (2(H²/heads + H)); Λ (H); block:
    W_g, b_g (H(I + 1)), conv (k H + H), W_o, b_o (H² + H).
    `sequence` runs the gate GEMM in torch and the rest of (1)-(4) fused in C++ (`scan.rglru`, CPU
    float32/float64), elsewhere `scan.linear_scan` on the a_t, b_t computed here.
    """

    gate_activations = ("recurrence", "input")
    c = 8.0  # §2.4: "c is a scalar-valued constant set to 8"

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 1, temporal_block: bool = False,
                 conv_width: int = 4, min_rad: float = 0.9, max_rad: float = 0.999):
        super().__init__(input_size, hidden_size)
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"cell.num_heads={num_heads} is not allowed: must divide model.hidden_size={hidden_size}")
        if conv_width < 1:
            raise ValueError(f"cell.conv_width={conv_width} is not allowed: must be >= 1")
        if not 0.0 < min_rad < max_rad < 1.0:
            raise ValueError(f"cell.min_rad={min_rad}, cell.max_rad={max_rad} are not allowed: need 0 < min < max < 1")
        H = hidden_size
        self.num_heads, self.temporal_block, self.conv_width = num_heads, bool(temporal_block), conv_width
        self.min_rad, self.max_rad = min_rad, max_rad
        self.state_names = ("y", "h", "conv") if self.temporal_block else ("h",)
        branches = 2 if self.temporal_block else 1
        self.weight_in = nn.Parameter(torch.empty(branches * H, input_size))  # rows [u; gate branch]
        self.bias_in = nn.Parameter(torch.empty(branches * H))
        self.gate_weight = nn.Parameter(torch.empty(2, num_heads, H // num_heads, H // num_heads))  # [a; x]
        self.gate_bias = nn.Parameter(torch.empty(2, H))
        self.a_param = nn.Parameter(torch.empty(H))  # Λ
        if self.temporal_block:
            self.conv_weight = nn.Parameter(torch.empty(H, conv_width))
            self.conv_bias = nn.Parameter(torch.empty(H))
            self.weight_out = nn.Parameter(torch.empty(H, H))
            self.bias_out = nn.Parameter(torch.empty(H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H = self.hidden_size
        _linear_init(self.weight_in, self.bias_in, self.input_size)
        with torch.no_grad():
            nn.init.normal_(self.gate_weight, std=math.sqrt(1.0 / (H // self.num_heads)))
            self.gate_bias.zero_()
            radius = torch.sqrt(torch.empty(H).uniform_(self.min_rad ** 2, self.max_rad ** 2))
            self.a_param.copy_(torch.log(radius / (1 - radius)))              # σ(Λ) = radius
            if self.temporal_block:
                _linear_init(self.conv_weight, self.conv_bias, self.conv_width)  # nn.Conv1d's, fan_in = k
                _linear_init(self.weight_out, self.bias_out, H)

    def state_shapes(self):
        H = self.hidden_size
        return ((H,), (H,), (H, self.conv_width - 1)) if self.temporal_block else ((H,),)

    def _pre_activations(self, u: Tensor, whole_sequence: bool = False) -> Tensor:
        """[W_a u + b_a | W_x u + b_x] (..., 2H) from u (..., H), W_a and W_x block-diagonal. Over a whole
        sequence with one head: one GEMM with both gates' rows, whose weight copy (2H²) the T·B rows repay;
        per step the einsum, which copies no weight (measured at B=64, H=256, 1 thread: 240 against 350 µs)."""
        if whole_sequence and self.num_heads == 1:
            return F.linear(u, self.gate_weight[:, 0].transpose(1, 2).reshape(-1, self.hidden_size),
                            self.gate_bias.flatten())
        heads = u.unflatten(-1, (self.num_heads, -1))                          # (..., heads, H/heads)
        return torch.einsum("...hi,ghij->...ghj", heads, self.gate_weight).flatten(-3) + self.gate_bias.flatten()

    def _coefficients(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r, i = torch.sigmoid(self._pre_activations(u)).chunk(2, dim=-1)
        log_a = -self.c * r * F.softplus(-self.a_param)                         # log a_t   (3)
        a = torch.exp(log_a)
        return a, _SqrtBoundDerivative.apply(-torch.expm1(2 * log_a)) * (i * u), r, i  # √(1 - a_t²) ⊙ i ⊙ u

    def step(self, x_proj_t, state, gates=None):
        H = self.hidden_size
        u = x_proj_t[..., :H]
        if self.temporal_block:
            _, h, window = state
            u, window = _causal_conv_step(u, window, self.conv_weight, self.conv_bias)
        else:
            (h,) = state
        a, b, r, i = self._coefficients(u)
        h = a * h + b                                                           # (4)
        if gates is not None:
            gates.update(recurrence=r, input=i)
        if not self.temporal_block:
            return h, (h,)
        y = F.linear(F.gelu(x_proj_t[..., H:], approximate="tanh") * h, self.weight_out, self.bias_out)
        return y, (y, h, window)

    def sequence(self, x_proj, state, lengths=None):
        H = self.hidden_size
        u = x_proj[..., :H]
        if self.temporal_block:
            _, h0, window = state
            u, window = _causal_conv_sequence(u, window, self.conv_weight, self.conv_bias, lengths)
        else:
            (h0,) = state
        if scan.fused_fits(u):  # gates' nonlinearities, a_t, √(1 - a_t²) and the scan fused, C++
            hs, h = scan.rglru(u, self._pre_activations(u, whole_sequence=True), self.c * F.softplus(-self.a_param),
                               h0, lengths)
        else:
            a, b, _, _ = self._coefficients(u)
            hs, h = scan.linear_scan(a, b, h0, lengths)                         # (T, B, H)
        if not self.temporal_block:
            return hs, (h,)
        y = F.linear(F.gelu(x_proj[..., H:], approximate="tanh") * hs, self.weight_out, self.bias_out)
        if lengths is not None:
            y = y.masked_fill(~valid_steps(lengths, y.shape[0], y.device), 0.0)  # not y·0: NaN at ±inf
        return y, _freeze_padded(state, (y[_last_index(lengths, y)], h, window), lengths, y.shape[0])

    def extra_repr(self):
        return (super().extra_repr() + f", num_heads={self.num_heads}, temporal_block={self.temporal_block}"
                + (f", conv_width={self.conv_width}" if self.temporal_block else ""))


# ---------------------------------------------------------------------------------------------------------
class IndRNNCell(ModernCell):
    """Independently recurrent neural network (Li, Li, Cook, Zhu, Gao 2018, "Independently Recurrent Neural
    Network (IndRNN): Building A Longer and Deeper RNN", eq. 2):

        h_t = relu(W x_t + u ⊙ h_{t-1} + b)

    with the recurrent weight constrained (§3.1, eqs. 4-6): |u_n| ≤ γ^{1/T} keeps ∂h_T/∂h_t = Π u_n·relu' ≤ γ
    over T steps (γ = `gamma`, T = `time_steps`). The authors clip u into range after each optimiser step;
    here the constraint is a projection in the forward pass, u_eff = clamp(u, -γ^{1/T}, γ^{1/T}) (the same
    function of the stored u wherever it is in range; the gradient is zero past the bound). Init as the
    authors' code: u ~ U(0, γ^{1/T}); W, b nn.Linear's. Nonlinear in h, so no scan: its own C++ sequence kernel.
    Parameters: W, b (H(I + 1)), u (H).
    """

    def __init__(self, input_size: int, hidden_size: int, gamma: float = 2.0, time_steps: int = 100):
        super().__init__(input_size, hidden_size)
        if not gamma > 0:
            raise ValueError(f"cell.gamma={gamma} is not allowed: must be > 0")
        if time_steps < 1:
            raise ValueError(f"cell.time_steps={time_steps} is not allowed: must be a positive integer")
        self.gamma, self.time_steps = gamma, time_steps
        self.recurrent_max = gamma ** (1.0 / time_steps)
        self.weight_in = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias_in = nn.Parameter(torch.empty(hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size))  # u, the diagonal recurrent weight
        _linear_init(self.weight_in, self.bias_in, input_size)
        nn.init.uniform_(self.weight_hh, 0.0, self.recurrent_max)

    def recurrent_weight(self) -> Tensor:
        """u projected into [-γ^{1/T}, γ^{1/T}] (§3.1)."""
        return self.weight_hh.clamp(-self.recurrent_max, self.recurrent_max)

    def step(self, x_proj_t, state, gates=None):
        (h,) = state
        h = torch.relu(x_proj_t + self.recurrent_weight() * h)
        return h, (h,)

    def sequence(self, x_proj: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """The C++ sequence kernel (`kernels/indrnn.py`: every unit's chain of steps in one pass, hand-written
        backward) on CPU float32/float64; elsewhere the step loop."""
        if indrnn.fits(x_proj):
            out, h = indrnn.indrnn_sequence(x_proj, state[0], self.recurrent_weight(), lengths)
            return out, (h,)
        return self._step_loop(x_proj, state, lengths)

    def extra_repr(self):
        return super().extra_repr() + f", gamma={self.gamma}, time_steps={self.time_steps}"


# ---------------------------------------------------------------------------------------------------------
def _inverse_softplus_dt(size: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    """Mamba's Δ bias init (state-spaces/mamba `mamba_simple.py`): Δ = exp(U[log dt_min, log dt_max]) clamped
    at `floor`, stored as softplus⁻¹(Δ) = Δ + log(-expm1(-Δ)) so that softplus(bias) = Δ at the start."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class S6Cell(ModernCell):
    """Mamba's selective SSM S6 in its block (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
    Selective State Spaces", Algorithm 2 and §3.4 / Fig. 3; state-spaces/mamba `mamba_simple.py`,
    `selective_scan_ref`), model width H, inner width E = expand·H, state N per channel:

        (x̂_t, z_t) = W_in x_t                                  input projection (no bias), E each
        u_t = SiLU(Conv1D_k(x̂)_t)                              depthwise causal convolution, width k
        (δ_t, B_t, C_t) = W_x u_t                              R = ⌈H/16⌉, N, N    (Alg. 2: s_B, s_C, s_Δ)
        Δ_t = softplus(W_Δ δ_t + b_Δ)                          (E)                  (Alg. 2: τ_Δ)
        h_t = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t ⊙ u_t) B_tᵀ          h (E, N), A = -exp(A_log)   (eq. 2a, 4)
        y_t = W_out((h_t C_t + D ⊙ u_t) ⊙ SiLU(z_t))           (eq. 2b, D skip, gate, output projection)

    Discretisation as the authors' code: Ā = exp(ΔA) (zero-order hold, eq. 4) and B̄ = ΔB (Euler; the paper's
    ZOH B̄ = (ΔA)⁻¹(exp(ΔA) - I)ΔB is what eq. 4 writes, the code and §3.5 simplify to ΔB). Init as the code:
    A_log = log(1..N) per channel (S4D-real), D = 1, W_Δ ~ U(±R^-½), b_Δ = softplus⁻¹(Δ), Δ log-uniform in
    [0.001, 0.1] (floor 1e-4); W_in, W_x, W_out, conv: nn.Linear / nn.Conv1d's default.
    Parameters: W_in 2E·I, conv E(k + 1), W_x (R + 2N)E, W_Δ, b_Δ E(R + 1), A_log EN, D E, W_out HE.
    State: y (B, H) output; h (B, E, N) and the convolution window (B, E, k-1): E(N + k - 1) floats carried.
    `sequence` runs the selective scan fused in C++ (`scan.s6`: the state of a batch row stays in cache, y_t
    = C_t h_t is taken on the fly, the backward recomputes states from checkpoints every 16 steps, as the
    authors' CUDA kernel recomputes rather than stores them), CPU float32/float64; elsewhere
    `scan.linear_scan` on the materialised (T, B, E, N) Ā and B̄u.
    """

    state_names = ("y", "ssm", "conv")

    def __init__(self, input_size: int, hidden_size: int, state_dim: int = 16, expand: int = 2,
                 conv_width: int = 4, dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__(input_size, hidden_size)
        for key, value in (("state_dim", state_dim), ("expand", expand), ("conv_width", conv_width)):
            if value < 1:
                raise ValueError(f"cell.{key}={value} is not allowed: must be a positive integer")
        if not 0 < dt_min < dt_max:
            raise ValueError(f"cell.dt_min={dt_min}, cell.dt_max={dt_max} are not allowed: need 0 < dt_min < dt_max")
        H, N = hidden_size, state_dim
        E, R = expand * hidden_size, math.ceil(hidden_size / 16)
        self.state_dim, self.expand, self.conv_width, self.dt_rank = N, expand, conv_width, R
        self.dt_min, self.dt_max = dt_min, dt_max
        self.weight_in = nn.Parameter(torch.empty(2 * E, input_size))  # rows [x̂; z]
        self.bias_in = None
        self.conv_weight = nn.Parameter(torch.empty(E, conv_width))
        self.conv_bias = nn.Parameter(torch.empty(E))
        self.x_proj_weight = nn.Parameter(torch.empty(R + 2 * N, E))  # rows [δ; B; C]
        self.dt_proj_weight = nn.Parameter(torch.empty(E, R))
        self.dt_bias = nn.Parameter(torch.empty(E))
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.weight_out = nn.Parameter(torch.empty(H, E))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        E, N, R = self.expand * self.hidden_size, self.state_dim, self.dt_rank
        _linear_init(self.weight_in, None, self.input_size)
        _linear_init(self.conv_weight, self.conv_bias, self.conv_width)
        _linear_init(self.x_proj_weight, None, E)
        _linear_init(self.weight_out, None, E)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj_weight, -R ** -0.5, R ** -0.5)     # dt_init="random", dt_scale=1
            self.dt_bias.copy_(_inverse_softplus_dt(E, self.dt_min, self.dt_max, 1e-4))
            self.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(E, N))
            self.D.fill_(1.0)

    def state_shapes(self):
        E = self.expand * self.hidden_size
        return ((self.hidden_size,), (E, self.state_dim), (E, self.conv_width - 1))

    def _selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Δ (..., E), B and C (..., N) of u (..., E)."""
        R, N = self.dt_rank, self.state_dim
        delta_low, B, C = F.linear(u, self.x_proj_weight).split([R, N, N], dim=-1)
        return F.softplus(F.linear(delta_low, self.dt_proj_weight) + self.dt_bias), B, C

    def _selective(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Ā, B̄u) (..., E, N) and C (..., N) of u (..., E)."""
        delta, B, C = self._selection(u)
        A = -torch.exp(self.A_log)                                                     # (E, N)
        return torch.exp(delta.unsqueeze(-1) * A), (delta * u).unsqueeze(-1) * B.unsqueeze(-2), C, delta

    def _output(self, hC: Tensor, u: Tensor, z: Tensor) -> Tensor:
        """W_out((h_t C_t + D ⊙ u_t) ⊙ SiLU(z_t)) from h_t C_t (..., E)."""
        return F.linear((hC + self.D * u) * F.silu(z), self.weight_out)

    @staticmethod
    def _read(h: Tensor, C: Tensor) -> Tensor:
        return (h @ C.unsqueeze(-1)).squeeze(-1)                                # h_t C_t  (..., E)

    def step(self, x_proj_t, state, gates=None):
        _, h, window = state
        x_hat, z = x_proj_t.chunk(2, dim=-1)                                    # (B, E) each
        u, window = _causal_conv_step(x_hat, window, self.conv_weight, self.conv_bias)
        u = F.silu(u)
        A_bar, Bu, C, _ = self._selective(u)
        h = A_bar * h + Bu                                                      # (B, E, N)
        y = self._output(self._read(h, C), u, z)
        return y, (y, h, window)

    def sequence(self, x_proj, state, lengths=None):
        _, h0, window = state
        x_hat, z = x_proj.chunk(2, dim=-1)                                      # (T, B, E) each
        u, window = _causal_conv_sequence(x_hat, window, self.conv_weight, self.conv_bias, lengths)
        u = F.silu(u)
        if scan.fused_fits(u):  # the selective scan fused in C++, no (T, B, E, N) tensor
            delta, B, C = self._selection(u)
            hC, h = scan.s6(delta, u, -torch.exp(self.A_log), B, C, h0, lengths)   # (T, B, E), (B, E, N)
            y = self._output(hC, u, z)
        else:
            A_bar, Bu, C, _ = self._selective(u)                                # (T, B, E, N) each
            hs, h = scan.linear_scan(A_bar, Bu, h0, lengths)
            y = self._output(self._read(hs, C), u, z)
        if lengths is not None:
            y = y.masked_fill(~valid_steps(lengths, y.shape[0], y.device), 0.0)  # not y·0: NaN at ±inf
        return y, _freeze_padded(state, (y[_last_index(lengths, y)], h, window), lengths, y.shape[0])

    def extra_repr(self):
        return (super().extra_repr() + f", state_dim={self.state_dim}, expand={self.expand}, "
                f"conv_width={self.conv_width}, dt_rank={self.dt_rank}")


# ---------------------------------------------------------------------------------------------------------
def _heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1))                                         # (..., H) -> (..., heads, d)


def _chunks(x: Tensor, size: int, fill: float = 0.0) -> Tensor:
    """(T, B, heads[, d]) -> (B, heads, chunks, size[, d]); time padded at the end with `fill`."""
    x = x.movedim(0, 2)                                                         # (B, heads, T[, d])
    pad = (-x.shape[2]) % size
    if pad:
        x = torch.cat([x, x.new_full((*x.shape[:2], pad, *x.shape[3:]), fill)], dim=2)
    return x.unflatten(2, (-1, size))


def _balanced_chunk(T: int, chunk_size: int) -> int:
    """The chunk length for T steps: ⌈T/chunk_size⌉ chunks of equal length (within one step), so that no chunk
    is mostly padding (T = 100 at chunk_size 64: two chunks of 50, not 64 + 36 padded to 64; measured 1.5x
    faster for Gated DeltaNet and mLSTM at B=64, H=128, 1 thread). Any chunk length is the same function."""
    return max(1, math.ceil(T / max(1, math.ceil(T / chunk_size))))


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"cell.chunk_size={chunk_size} is not allowed: must be a positive integer")


def _check_heads(num_heads: int, hidden_size: int) -> None:
    if num_heads < 1 or hidden_size % num_heads:
        raise ValueError(f"cell.num_heads={num_heads} is not allowed: must divide model.hidden_size={hidden_size}")


class MLSTMCell(ModernCell):
    """mLSTM, the matrix-memory cell of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory",
    §2.3, eqs. 19-27, stabilised as in §2.2 eqs. 15-17 and NX-AI/xlstm `recurrent_step_stabilized_simple`),
    per head (d = H/heads; q_t, k_t, v_t ∈ ℝ^d, scalar gates per head):

        q_t = W_q x + b_q,  k_t = (W_k x + b_k)/√d,  v_t = W_v x + b_v             (22-24)
        ĩ_t = w_iᵀ x + b_i,  f̃_t = w_fᵀ x + b_f,  o_t = σ(W_o x + b_o)              (25-27)
        m_t = max(log σ(f̃_t) + m_{t-1}, ĩ_t)                                         stabiliser (15)
        i'_t = exp(ĩ_t - m_t),  f'_t = exp(log σ(f̃_t) + m_{t-1} - m_t)               (16, 17)
        C_t = f'_t C_{t-1} + i'_t v_t k_tᵀ        n_t = f'_t n_{t-1} + i'_t k_t        (19, 20)
        h_t = o_t ⊙ C_t q_t / (max(|n_tᵀ q_t|, exp(-m_t)) + ε)                       (21)

    max(|nᵀq|, exp(-m)) is eq. 21's max(|nᵀq|, 1) for the stabilised C, n (both carry a factor exp(-m));
    ε = 1e-6 as the code. Init as the code's mLSTM cell: forget-gate weights 0 and biases linspace(3, 6) over
    heads, input-gate weights 0 and biases N(0, 0.1²); q, k, v, o nn.Linear's. Deviation: the cell alone —
    the xLSTM block's up-projection, convolution, learnable skip and head-wise LayerNorm belong to its block
    (`model.block` wraps any cell in a pre-norm residual block).
    Parameters: (4H + 2·heads)(I + 1). State: y (B, H) output; C (B, heads, d, d), n (B, heads, d),
    m (B, heads): heads(d² + d + 1) floats carried.
    """

    state_names = ("y", "C", "n", "m")
    gate_activations = ("forget", "output")
    eps = 1e-6

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 4, chunk_size: int = 64):
        super().__init__(input_size, hidden_size)
        _check_heads(num_heads, hidden_size)
        _check_chunk(chunk_size)
        self.num_heads, self.chunk_size = num_heads, chunk_size
        H = hidden_size
        self.weight_in = nn.Parameter(torch.empty(4 * H + 2 * num_heads, input_size))  # [q; k; v; o; ĩ; f̃]
        self.bias_in = nn.Parameter(torch.empty(4 * H + 2 * num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H, NH = self.hidden_size, self.num_heads
        _linear_init(self.weight_in, self.bias_in, self.input_size)
        with torch.no_grad():
            self.weight_in[4 * H:].zero_()
            nn.init.normal_(self.bias_in[4 * H:4 * H + NH], std=0.1)
            self.bias_in[4 * H + NH:].copy_(torch.linspace(3.0, 6.0, NH))

    def state_shapes(self):
        NH, d = self.num_heads, self.hidden_size // self.num_heads
        return ((self.hidden_size,), (NH, d, d), (NH, d), (NH,))

    def step(self, x_proj_t, state, gates=None):
        _, C, n, m = state                                # C (B, NH, d, d), n (B, NH, d), m (B, NH)
        H, NH = self.hidden_size, self.num_heads
        q, k, v, o_pre = (_heads(part, NH) for part in x_proj_t[..., :4 * H].chunk(4, dim=-1))  # (B, NH, d)
        k = k / math.sqrt(k.shape[-1])
        i_pre, f_pre = x_proj_t[..., 4 * H:].chunk(2, dim=-1)                  # (B, NH) each
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)                                 # (15)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)           # (16, 17)
        C = f[..., None, None] * C + i[..., None, None] * (v.unsqueeze(-1) * k.unsqueeze(-2))   # (19)
        n = f[..., None] * n + i[..., None] * k                                  # (20)
        denominator = torch.maximum((n * q).sum(-1).abs(), torch.exp(-m_new)) + self.eps        # (B, NH)
        h_tilde = (C @ q.unsqueeze(-1)).squeeze(-1) / denominator.unsqueeze(-1)  # (21)  (B, NH, d)
        o = torch.sigmoid(o_pre)
        y = (o * h_tilde).flatten(-2)                                            # (B, H)
        if gates is not None:
            gates.update(forget=torch.sigmoid(f_pre), output=o.flatten(-2))
        return y, (y, C, n, m_new)

    def sequence(self, x_proj, state, lengths=None):
        """The chunkwise-parallel form (Beck et al. 2024, appendix: the parallel mLSTM, applied per chunk with
        the state passed between chunks): with F_t = Σ_{s≤t} log σ(f̃_s) inside a chunk that starts from
        (C₀, n₀, m₀), the recurrent stabiliser unrolls exactly to m_t = max(F_t + m₀, max_{j≤t} F_t - F_j + ĩ_j),
        and C_t q_t = e^{F_t + m₀ - m_t} C₀ q_t + Σ_{j≤t} e^{F_t - F_j + ĩ_j - m_t} (k_j·q_t) v_j (n_t·q_t likewise):
        the same function as `step`, (C, C) matrices per chunk instead of T small steps."""
        _, C0, n0, m0 = state
        T, B = x_proj.shape[:2]
        H, NH, L = self.hidden_size, self.num_heads, _balanced_chunk(x_proj.shape[0], self.chunk_size)
        q, k, v, o_pre = (_heads(part, NH) for part in x_proj[..., :4 * H].chunk(4, dim=-1))  # (T, B, NH, d)
        k = k / math.sqrt(k.shape[-1])
        i_pre, f_pre = x_proj[..., 4 * H:].chunk(2, dim=-1)                    # (T, B, NH)
        log_f = F.logsigmoid(f_pre)
        if lengths is not None:  # padded steps: f = 1, i = 0, the state carried unchanged
            valid = valid_steps(lengths, T, x_proj.device)                  # (T, B, 1)
            log_f = log_f.masked_fill(~valid, 0.0)
            i_pre = i_pre.masked_fill(~valid, float("-inf"))
        qc, kc, vc = _chunks(q, L), _chunks(k, L), _chunks(v, L)                # (B, NH, n, L, d)
        Fc = _chunks(log_f, L).cumsum(-1)                                        # (B, NH, n, L)
        ic = _chunks(i_pre, L, float("-inf"))                                    # padding: i = 0
        causal = torch.ones(L, L, dtype=torch.bool, device=x_proj.device).tril()
        log_D = (Fc.unsqueeze(-1) - Fc.unsqueeze(-2) + ic.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
        scores = qc @ kc.transpose(-1, -2)                                       # (B, NH, n, L, L)  q_t·k_j
        D_max = log_D.amax(-1)                                                   # (B, NH, n, L)
        outputs = []
        C, n, m = C0, n0, m0
        for c in range(Fc.shape[2]):
            Fcc = Fc[:, :, c]                                                    # (B, NH, L)
            m_t = torch.maximum(Fcc + m.unsqueeze(-1), D_max[:, :, c])           # (B, NH, L)
            carry = torch.exp(Fcc + m.unsqueeze(-1) - m_t)                       # (B, NH, L)
            weights = torch.exp(log_D[:, :, c] - m_t.unsqueeze(-1)) * scores[:, :, c]   # (B, NH, L, L)
            numerator = carry.unsqueeze(-1) * (qc[:, :, c] @ C.transpose(-1, -2)) + weights @ vc[:, :, c]
            n_dot_q = carry * (qc[:, :, c] @ n.unsqueeze(-1)).squeeze(-1) + weights.sum(-1)
            denominator = torch.maximum(n_dot_q.abs(), torch.exp(-m_t)) + self.eps
            outputs.append(numerator / denominator.unsqueeze(-1))                # (B, NH, L, d)
            m_end = m_t[..., -1]                                                 # (B, NH)
            decay = torch.exp(Fcc[..., -1:] - Fcc + ic[:, :, c] - m_end.unsqueeze(-1))   # (B, NH, L)
            carry_end = torch.exp(Fcc[..., -1] + m - m_end)
            C = carry_end[..., None, None] * C + (vc[:, :, c] * decay.unsqueeze(-1)).transpose(-1, -2) @ kc[:, :, c]
            n = carry_end.unsqueeze(-1) * n + (decay.unsqueeze(-1) * kc[:, :, c]).sum(-2)
            m = m_end
        h_tilde = torch.cat(outputs, dim=2)[:, :, :T].permute(2, 0, 1, 3)      # (T, B, NH, d)
        y = (torch.sigmoid(o_pre) * h_tilde).flatten(-2)                         # (T, B, H)
        if lengths is not None:
            y = y.masked_fill(~valid, 0.0)  # not y·0: NaN at ±inf
        return y, _freeze_padded(state, (y[_last_index(lengths, y)], C, n, m), lengths, T)

    def extra_repr(self):
        return super().extra_repr() + f", num_heads={self.num_heads}, chunk_size={self.chunk_size}"


class GatedDeltaNetCell(ModernCell):
    """Gated DeltaNet (Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
    eq. 10; fla-org/flash-linear-attention `fla/ops/gated_delta_rule/naive.py` and `layers/gated_deltanet.py`),
    per head (d = H/heads), state S ∈ ℝ^{d×d}:

        q_t = SiLU(W_q x)/‖·‖ · d^-½,  k_t = SiLU(W_k x)/‖·‖,  v_t = SiLU(W_v x)     L2-normalised q, k
        α_t = exp(-exp(A_log) · softplus(w_aᵀ x + b_Δ))                               decay ∈ (0, 1)
        β_t = σ(w_bᵀ x)   (allow_neg_eigval: β_t = 2σ(w_bᵀ x) ∈ (0, 2))
        S_t = α_t (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ                           (eq. 10, fla's layout)
        o_t = S_tᵀ q_t

    With β ∈ (0, 2) the transition I - β k kᵀ has the eigenvalue 1 - β ∈ (-1, 1) (Grazzi et al. 2024, "Unlocking
    State-Tracking in Linear RNNs Through Negative Eigenvalues"), what parity needs. Init as fla: A ~ U(0, 16),
    A_log = log A; b_Δ = softplus⁻¹(Δ), Δ log-uniform in [0.001, 0.1] (as Mamba); projections nn.Linear's
    without bias. Deviations: the cell alone, without fla's short convolutions on q, k, v (SiLU is applied
    as fla does without them), its output RMSNorm and gate, and with value width = key width (fla: 2×).
    Parameters: (3H + 2·heads)·I + 2·heads. State: y (B, H) output; S (B, heads, d, d): H²/heads floats.
    """

    state_names = ("y", "S")
    gate_activations = ("decay",)

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 4, allow_neg_eigval: bool = False,
                 chunk_size: int = 64):
        super().__init__(input_size, hidden_size)
        _check_heads(num_heads, hidden_size)
        _check_chunk(chunk_size)
        self.num_heads, self.allow_neg_eigval, self.chunk_size = num_heads, bool(allow_neg_eigval), chunk_size
        H = hidden_size
        self.weight_in = nn.Parameter(torch.empty(3 * H + 2 * num_heads, input_size))  # [q; k; v; a; b]
        self.bias_in = None
        self.A_log = nn.Parameter(torch.empty(num_heads))
        self.dt_bias = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _linear_init(self.weight_in, None, self.input_size)
        with torch.no_grad():
            self.A_log.copy_(torch.log(torch.empty(self.num_heads).uniform_(0, 16)))
            self.dt_bias.copy_(_inverse_softplus_dt(self.num_heads, 0.001, 0.1, 1e-4))

    def state_shapes(self):
        d = self.hidden_size // self.num_heads
        return ((self.hidden_size,), (self.num_heads, d, d))

    def step(self, x_proj_t, state, gates=None):
        _, S = state                                                            # (B, NH, d_k, d_v)
        q, k, v, log_alpha, beta = self._inputs(x_proj_t)                       # (B, NH, d), (B, NH)
        alpha = torch.exp(log_alpha)
        S = alpha[..., None, None] * S
        # S - β k (kᵀ S) + β k vᵀ  =  S + k ⊗ β(v - Sᵀ k)   (fla naive.py's delta-rule update)
        v_new = beta[..., None] * (v - (k.unsqueeze(-2) @ S).squeeze(-2))        # (B, NH, d_v)
        S = S + k.unsqueeze(-1) * v_new.unsqueeze(-2)
        y = (q.unsqueeze(-2) @ S).squeeze(-2).flatten(-2)                        # Sᵀ q  (B, H)
        if gates is not None:
            gates.update(decay=alpha)
        return y, (y, S)

    def _inputs(self, x_proj: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """q, k, v (..., NH, d) and log α, β (..., NH) of x_proj (..., 3H + 2·NH)."""
        H, NH = self.hidden_size, self.num_heads
        q, k, v = (_heads(F.silu(part), NH) for part in x_proj[..., :3 * H].chunk(3, dim=-1))
        q = F.normalize(q, dim=-1) / math.sqrt(q.shape[-1])
        k = F.normalize(k, dim=-1)
        a_pre, b_pre = x_proj[..., 3 * H:].chunk(2, dim=-1)
        log_alpha = -torch.exp(self.A_log) * F.softplus(a_pre + self.dt_bias)
        beta = torch.sigmoid(b_pre) * (2.0 if self.allow_neg_eigval else 1.0)
        return q, k, v, log_alpha, beta

    def sequence(self, x_proj, state, lengths=None):
        """The chunkwise-parallel form (Yang et al. 2024 §3.3, the WY/UT representation of DeltaNet's chunk
        form, Yang et al. 2024b, with the gate): inside a chunk from state S₀, with γ_t = Π_{s≤t} α_s and
        u_t = β_t (v_t - α_t S_{t-1}ᵀ k_t) (so S_t = α_t S_{t-1} + k_t u_tᵀ),

            (I + A) U = diag(β) V - diag(β γ) K S₀,   A_tj = β_t (γ_t/γ_j) k_t·k_j  (j < t)    unit lower-triangular
            O = diag(γ) Q S₀ + (M ⊙ Q Kᵀ) U,           M_tj = γ_t/γ_j (j ≤ t)
            S_end = γ_L S₀ + Kᵀ diag(γ_L/γ) U

        the same function as `step`, one triangular solve and a few (L, L) matmuls per chunk."""
        _, S0 = state
        T = x_proj.shape[0]
        L = _balanced_chunk(T, self.chunk_size)
        q, k, v, log_alpha, beta = self._inputs(x_proj)                          # (T, B, NH, d), (T, B, NH)
        if lengths is not None:  # padded steps: α = 1, β = 0, the state carried unchanged
            valid = valid_steps(lengths, T, x_proj.device)                  # (T, B, 1)
            log_alpha = log_alpha.masked_fill(~valid, 0.0)
            beta = beta.masked_fill(~valid, 0.0)
        qc, kc, vc = _chunks(q, L), _chunks(k, L), _chunks(v, L)                # (B, NH, n, L, d)
        g = _chunks(log_alpha, L).cumsum(-1)                                     # log γ  (B, NH, n, L)
        bc = _chunks(beta, L)
        strictly_lower = torch.ones(L, L, dtype=torch.bool, device=x_proj.device).tril(-1)
        lower = torch.ones(L, L, dtype=torch.bool, device=x_proj.device).tril()
        ratio = g.unsqueeze(-1) - g.unsqueeze(-2)                                # log γ_t/γ_j  (…, L, L)
        decay = torch.exp(ratio.masked_fill(~lower, float("-inf")))            # M
        A = (bc.unsqueeze(-1) * decay * (kc @ kc.transpose(-1, -2))).masked_fill(~strictly_lower, 0.0)
        eye = torch.eye(L, dtype=x_proj.dtype, device=x_proj.device)
        # T = (I + A)⁻¹ applied to [diag(β) V, diag(β γ) K] in one triangular solve
        rhs = torch.cat([bc.unsqueeze(-1) * vc, (bc * torch.exp(g)).unsqueeze(-1) * kc], dim=-1)
        solved = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
        d_v = vc.shape[-1]
        U_free, W = solved[..., :d_v], solved[..., d_v:]                         # U = U_free - W S₀
        attention = decay * (qc @ kc.transpose(-1, -2))                          # M ⊙ Q Kᵀ
        outputs, S = [], S0
        for c in range(g.shape[2]):
            U = U_free[:, :, c] - W[:, :, c] @ S                                 # (B, NH, L, d_v)
            outputs.append(torch.exp(g[:, :, c]).unsqueeze(-1) * (qc[:, :, c] @ S) + attention[:, :, c] @ U)
            g_end = g[:, :, c, -1:]                                              # (B, NH, 1)
            S = torch.exp(g_end).unsqueeze(-1) * S + \
                (torch.exp(g_end - g[:, :, c]).unsqueeze(-1) * kc[:, :, c]).transpose(-1, -2) @ U
        y = torch.cat(outputs, dim=2)[:, :, :T].permute(2, 0, 1, 3).flatten(-2)  # (T, B, H)
        if lengths is not None:
            y = y.masked_fill(~valid, 0.0)  # not y·0: NaN at ±inf
        return y, _freeze_padded(state, (y[_last_index(lengths, y)], S), lengths, T)

    def extra_repr(self):
        return (super().extra_repr() + f", num_heads={self.num_heads}, allow_neg_eigval={self.allow_neg_eigval}, "
                f"chunk_size={self.chunk_size}")


class SLSTMCell(ModernCell):
    """sLSTM, the scalar-memory cell of xLSTM (Beck et al. 2024, §2.2, eqs. 8-17), exponential input gate,
    normaliser state and stabiliser, recurrence block-diagonal per head (R_* ∈ ℝ^{heads × d × d}, d = H/heads):

        z̃, ĩ, f̃, õ = W_* x_t + R_* h_{t-1} + b_*       (R_* acting within each head)
        m_t = max(log σ(f̃) + m_{t-1}, ĩ)                                            (15)
        i'_t = exp(ĩ - m_t),  f'_t = exp(log σ(f̃) + m_{t-1} - m_t)                   (16, 17)
        c_t = f'_t c_{t-1} + i'_t tanh(z̃)        n_t = f'_t n_{t-1} + i'_t            (8, 9)
        h_t = σ(õ) ⊙ c_t / n_t                                                       (10)

    The forget gate is σ (the paper allows σ or exp; the code's default is σ through logsigmoid).
    Deviations: init is this codebase's, not the xLSTM code's ("powerlaw_blockdependent" forget biases, zero
    R): W, R, b ~ nn.Linear's U(±1/√fan_in), forget-gate bias linspace(3, 6) over units (the code's mLSTM forget
    init); the xLSTM block's convolution and group norm are the block's. Nonlinear in h: `sequence` runs the
    step loop in C++ (`kernels/slstm.py`).
    Parameters: W 4H·I, R 4H²/heads, b 4H. State h, c, n, m (B, H) each: 4H floats.
    """

    state_names = ("h", "c", "n", "m")
    gate_activations = ("forget", "output")

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 4):
        super().__init__(input_size, hidden_size)
        _check_heads(num_heads, hidden_size)
        self.num_heads = num_heads
        H, d = hidden_size, hidden_size // num_heads
        self.weight_in = nn.Parameter(torch.empty(4 * H, input_size))      # gate order z, i, f, o
        self.bias_in = nn.Parameter(torch.empty(4 * H))
        self.weight_hh = nn.Parameter(torch.empty(4, num_heads, d, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H = self.hidden_size
        _linear_init(self.weight_in, self.bias_in, self.input_size)
        _linear_init(self.weight_hh, None, H // self.num_heads)
        with torch.no_grad():
            self.bias_in[2 * H:3 * H].copy_(torch.linspace(3.0, 6.0, H))

    def state_shapes(self):
        return ((self.hidden_size,),) * 4

    def step(self, x_proj_t, state, gates=None):
        h, c, n, m = state                                                       # (B, H) each
        recurrent = torch.einsum("bhi,ghij->gbhj", _heads(h, self.num_heads), self.weight_hh).flatten(-2)
        pre = x_proj_t.unflatten(-1, (4, -1)).movedim(-2, 0) + recurrent         # (4, B, H): z, i, f, o
        z_pre, i_pre, f_pre, o_pre = pre.unbind(0)
        log_f = F.logsigmoid(f_pre)
        m_new = torch.maximum(log_f + m, i_pre)                                 # (15)
        i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)           # (16, 17)
        c = f * c + i * torch.tanh(z_pre)                                        # (8)
        n = f * n + i                                                            # (9)
        o = torch.sigmoid(o_pre)
        h = o * c / n                                                            # (10)
        if gates is not None:
            gates.update(forget=torch.sigmoid(f_pre), output=o)
        return h, (h, c, n, m_new)

    def sequence(self, x_proj, state, lengths=None):
        """The C++ sequence kernel (`kernels/slstm.py`: one GEMM for all heads and one fused pass per step,
        hand-written backward) on CPU float32/float64; elsewhere the step loop."""
        if slstm.fits(x_proj):
            return slstm.slstm_sequence(x_proj, state, self.weight_hh, lengths)
        return self._step_loop(x_proj, state, lengths)

    def extra_repr(self):
        return super().extra_repr() + f", num_heads={self.num_heads}"


MODERN_CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell, "lru": LRUCell, "rglru": RGLRUCell,
                "indrnn": IndRNNCell, "s6": S6Cell, "mlstm": MLSTMCell, "gated_deltanet": GatedDeltaNetCell,
                "slstm": SLSTMCell}
