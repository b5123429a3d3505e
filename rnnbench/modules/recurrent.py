"""Recurrent architectures that compose with any cell: deep (stacked), bidirectional, pyramid.

Time-major throughout: x (T, B, F); `lengths` (B,) int64 or None. With lengths, the state of a
sequence is frozen after its last valid step (so final states are taken at each sequence's true end)
and outputs at padded steps are exactly zero.

Backends (one per layer, the same parameter tensors for all):
- `explicit`: the cell's `step`, written from its equations, in a Python loop over time.
- `fused`: torch's own kernels (`torch._VF.lstm / gru / rnn_tanh / rnn_relu`, what nn.LSTM, nn.GRU
  and nn.RNN call) on the cell's own tensors; an error for a cell with no such kernel.
- `auto` (default): the fastest path that computes exactly the cell's function:
  - both GRU forms: the C++ GRU kernel of `fast_gru` (on CPU, float32/float64; it measured 0.36-0.58x torch's
    GRU, and torch has none for reset_after=False; elsewhere torch's GRU kernel or the explicit path, with
    one warning);
  - the peephole LSTM and every Greff variant but fgr (np included): the sequence kernel of `fast_peephole`
    (C++ on CPU float32/float64; elsewhere its Python loops, np torch's LSTM kernel, with one warning);
    fgr: explicit (its gate recurrence does not fit the kernel's loop);
  - the plain LSTM (`cell=lstm`) stays on torch's fused kernel, by decision, although our kernel computes
    the same function as variant np and measured faster (np on it: 0.72x / 0.70x torch's fused LSTM at
    H=128, T=100 / H=256, T=500 with 1 thread, 0.91x / 0.75x with 2; training step, B=64,
    docs/performance.md): switching would change the last bits of every LSTM run, including the committed study
    records. `python -m rnnbench.bench cells` measures both (rows `np auto`, `fused LSTM`);
  - a cell with a whole-sequence form (`cell.sequence`: the modern diagonal cells of `modern_cells.py` on
    `scan.py`'s kernel): that form;
  - the other cells with a torch kernel: that kernel; else explicit.
Temporal gradient probes (‖∂L/∂h_t‖ for every t, `diagnostics.py`) always run the explicit path.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnbench.kernels import extension, fast_gru, fast_peephole
from rnnbench.kernels.lengths import valid_steps
from rnnbench.modules.blocks import BLOCKS, ResidualMLPBlock
from rnnbench.modules.cells import Cell, GRUCell, PeepholeLSTMCell, State, require_size

BACKENDS = ("auto", "explicit", "fused")

# Per direction a cell state tuple; per layer a list of directions; per stack a list of layers.
StackState = list[list[State]]
# Per step of a gated cell: ({gate name: (B, H) σ values}, the (B, 1) valid-step mask or None).
GateSteps = list[tuple[dict[str, Tensor], Tensor | None]]


class Probes(list):
    """What a diagnostic forward pass collects on the explicit path: (name, (T, B, H) zero tensor whose
    grad is ∂L/∂h_t) pairs and, when made with `record_gates=True`, in `gates[name]` the gate values of
    every step of each layer (and direction) of a gated cell (`diagnostics.gate_statistics`)."""

    def __init__(self, record_gates: bool = False):
        super().__init__()
        self.gates: dict[str, GateSteps] | None = {} if record_gates else None


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence within its own length; padded steps stay where they are.

    (T, B, ...) -> (T, B, ...). An involution, so it also maps the reversed outputs back.
    """
    if lengths is None:
        return x.flip(0)
    T, B = x.shape[:2]
    t = torch.arange(T, device=x.device).unsqueeze(1)                          # (T, 1)
    L = lengths.to(x.device).unsqueeze(0)                                      # (1, B)
    index = torch.where(t < L, L - 1 - t, t)                                   # (T, B)
    index = index.view(T, B, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def _needs_mask(lengths: Tensor | None, T: int) -> bool:
    return lengths is not None and bool((lengths < T).any())


def run_explicit(cell: Cell, x: Tensor, state: State, lengths: Tensor | None = None,
                 probe: Tensor | None = None, gates: GateSteps | None = None) -> tuple[Tensor, State]:
    """The cell's equations step by step. x (T, B, I) -> outputs (T, B, H), final state.

    `probe` (T, B, H) zeros requiring grad is added to h_t at every step; its gradient is then the
    total ∂L/∂h_t (through the output at t and through every later step). `gates`, a list, receives
    each step's gate values and valid-step mask.
    """
    T = x.shape[0]
    masks = None
    if _needs_mask(lengths, T):
        masks = valid_steps(lengths, T, x.device).unbind(0)                   # T × (B, 1)
    probes = probe.unbind(0) if probe is not None else None
    outputs = []
    for t, x_proj_t in enumerate(cell.input_projection(x).unbind(0)):
        if gates is None:
            h, new_state = cell.step(x_proj_t, state)
        else:
            gates.append(({}, None if masks is None else masks[t]))
            h, new_state = cell.step(x_proj_t, state, gates=gates[-1][0])
        if probes is not None:
            h = h + probes[t]
            new_state = (h,) + tuple(new_state[1:])
        if masks is not None:  # freeze finished sequences; zero their outputs
            new_state = tuple(torch.where(_batch_mask(masks[t], s), n, s) for n, s in zip(new_state, state))
            h = h.masked_fill(~masks[t], 0.0)  # zero, not h·0 (NaN where h is ±inf)
        state = new_state
        outputs.append(h)
    return torch.stack(outputs), state


def _batch_mask(mask: Tensor, state: Tensor) -> Tensor:
    """The (B, 1) step mask shaped to broadcast over a state entry (B, ...): (B, H) entries take it as it is,
    a modern cell's (B, E, N) or (B, heads, d, d) entries as (B, 1, 1[, 1])."""
    return mask if state.dim() <= 2 else mask.view(-1, *([1] * (state.dim() - 1)))


def run_sequence(cell, x: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """A cell computed over the whole sequence at once (`cell.sequence`, e.g. the scan of the diagonal modern
    cells, `modern_cells.py`): the same function as its `step` loop, proven in tests/test_modern_cells.py."""
    return cell.sequence(cell.input_projection(x), state, lengths if _needs_mask(lengths, x.shape[0]) else None)


def run_fused(cell: Cell, x: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """torch's own kernel on the cell's tensors; packed sequences when lengths are given.

    `torch._VF.<mode>` is private, and the only place rnnbench calls it: it is what nn.LSTM/GRU/RNN's
    forward calls, and no public function runs those kernels on tensors a module does not own
    (`torch.func.functional_call` on an nn.LSTM would, but through the module's weight flattening and
    checks at every call). tests/test_recurrent.py::test_private_fused_kernels_keep_their_signature fails
    by name if torch changes it.
    """
    mode = cell.fused_mode
    kernel = {"lstm": torch._VF.lstm, "gru": torch._VF.gru,
              "rnn_tanh": torch._VF.rnn_tanh, "rnn_relu": torch._VF.rnn_relu}[mode]
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    hx = tuple(s.unsqueeze(0) for s in state)                                   # (1, B, H) each
    hx_arg = hx if mode == "lstm" else hx[0]
    T = x.shape[0]
    if not _needs_mask(lengths, T):
        # args: input, hx, weights, has_biases, num_layers, dropout, train, bidirectional, batch_first
        out, *final = kernel(x, hx_arg, weights, True, 1, 0.0, cell.training, False, False)
        return out, tuple(f.squeeze(0) for f in final)
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    order, inverse = packed.sorted_indices, packed.unsorted_indices
    hx_sorted = tuple(h.index_select(1, order) for h in hx)
    hx_arg = hx_sorted if mode == "lstm" else hx_sorted[0]
    # packed form: input data, batch_sizes, hx, weights, has_biases, num_layers, dropout, train, bidirectional
    out, *final = kernel(packed.data, packed.batch_sizes, hx_arg, weights, True, 1, 0.0, cell.training, False)
    out, _ = pad_packed_sequence(PackedSequence(out, packed.batch_sizes, order, inverse), total_length=T)
    return out, tuple(f.index_select(1, inverse).squeeze(0) for f in final)


def run_fast_peephole(cell: PeepholeLSTMCell, x: Tensor, state: State,
                      lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """`fast_peephole`'s sequence kernel for every covered variant: C++ where it runs (CPU, float32/float64,
    built), else its Python loops; np elsewhere than on CPU float32/float64 runs torch's LSTM kernel (CUDA
    has one). The same function either way."""
    lengths = lengths if _needs_mask(lengths, x.shape[0]) else None
    if not extension.fits(x):  # an unbuildable extension has warned already
        fused = cell.fused_mode is not None
        _warn_once_lstm_elsewhere(str(x.dtype), x.device.type, fused)
        if fused:
            return run_fused(cell, x, state, lengths)
    return fast_peephole.cell_sequence(cell, x, state, lengths)


@functools.cache
def _warn_once_lstm_elsewhere(dtype: str, device: str, fused: bool) -> None:
    instead = "torch's LSTM kernel" if fused else "the Python sequence kernel"
    warnings.warn(f"model.backend=auto: the C++ LSTM kernel runs float32/float64 on CPU only; {dtype} on {device} "
                  f"runs {instead}", RuntimeWarning, stacklevel=4)


def run_fast_gru(cell: GRUCell, x: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """`fast_gru`'s C++ kernel where it runs (CPU, float32/float64, built), else torch's GRU kernel
    (reset_after=True) or the explicit path (Cho's form): the same function either way."""
    if extension.fits(x) and fast_gru.available():
        (h0,) = state
        out, h = fast_gru.cell_sequence(cell, x, h0, lengths if _needs_mask(lengths, x.shape[0]) else None)
        return out, (h,)
    if not extension.fits(x):  # an unbuildable extension has warned already
        _warn_once_gru_elsewhere(str(x.dtype), x.device.type, cell.fused_mode is not None)
    return (run_fused if cell.fused_mode is not None else run_explicit)(cell, x, state, lengths)


@functools.cache
def _warn_once_gru_elsewhere(dtype: str, device: str, fused: bool) -> None:
    instead = "torch's GRU kernel" if fused else "the explicit path"
    warnings.warn(f"model.backend=auto: the C++ GRU kernel runs float32/float64 on CPU only; {dtype} on {device} "
                  f"runs {instead}", RuntimeWarning, stacklevel=4)


def resolve_backend(cell: Cell, backend: str) -> str:
    """The path a cell runs on for a requested backend: 'fused', 'fast', 'sequence' or 'explicit'."""
    if backend not in BACKENDS:
        raise ValueError(f"model.backend={backend!r}: allowed {', '.join(BACKENDS)}")
    if backend == "explicit":
        return "explicit"
    if backend == "auto" and hasattr(cell, "sequence"):
        return "sequence"  # run_sequence: a modern cell's whole-sequence form
    if backend == "auto" and isinstance(cell, GRUCell):
        return "fast"  # run_fast_gru: the C++ kernel, or where it cannot run the next exact path
    if backend == "auto" and isinstance(cell, PeepholeLSTMCell) and cell.variant in fast_peephole.KERNEL_VARIANTS:
        return "fast"  # np included: run_fast_peephole, or torch's kernel off CPU
    if cell.fused_mode is not None:
        return "fused"
    if backend == "fused":
        raise ValueError(
            f"model.backend=fused: {type(cell).__name__}({cell.extra_repr()}) has no torch kernel computing "
            f"its function; use model.backend=auto (its fastest exact path) or explicit")
    return "explicit"


class RecurrentLayer(nn.Module):
    """One layer: a cell over t = 1..T and, when bidirectional, a second cell over t = T..1 (each
    sequence reversed within its own length, so the backward direction starts at its last valid
    step). Outputs of both directions are concatenated per step: (T, B, D*H)."""

    def __init__(self, make_cell: Callable[[int, int], Cell], input_size: int, hidden_size: int,
                 bidirectional: bool = False, backend: str = "auto"):
        super().__init__()
        self.directions = nn.ModuleList(
            [make_cell(input_size, hidden_size) for _ in range(2 if bidirectional else 1)])
        self.backend = backend
        self.paths = [resolve_backend(c, backend) for c in self.directions]
        self.hidden_size = hidden_size

    def default_state(self, batch: int, device=None, dtype=None) -> list[State]:
        return [c.default_state(batch, device, dtype) for c in self.directions]

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: list[State] | None = None,
                probes: Probes | None = None, name: str = "layer") -> tuple[Tensor, list[State]]:
        if state is None:
            state = self.default_state(x.shape[1], x.device, x.dtype)
        outputs, finals = [], []
        for d, (cell, path) in enumerate(zip(self.directions, self.paths)):
            reverse = d == 1
            x_d = reverse_padded(x, lengths) if reverse else x
            if probes is not None:
                probe = x.new_zeros(x.shape[0], x.shape[1], self.hidden_size, requires_grad=True)
                probes.append((name + ("_reverse" if reverse else ""), probe))
                gates = None
                if getattr(probes, "gates", None) is not None and cell.gate_activations:
                    gates = probes.gates[probes[-1][0]] = []
                out, final = run_explicit(cell, x_d, state[d], lengths, probe, gates)
            elif path == "fused":
                out, final = run_fused(cell, x_d, state[d], lengths)
            elif path == "sequence":
                out, final = run_sequence(cell, x_d, state[d], lengths)
            elif path == "fast":
                run_fast = run_fast_gru if isinstance(cell, GRUCell) else run_fast_peephole
                out, final = run_fast(cell, x_d, state[d], lengths)
            else:
                out, final = run_explicit(cell, x_d, state[d], lengths)
            outputs.append(reverse_padded(out, lengths) if reverse else out)
            finals.append(final)
        return torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0], finals


def pyramid_reduce(x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Concatenate consecutive output pairs (Chan et al. 2016, LAS pBLSTM): (T, B, F) -> (⌈T/2⌉, B, 2F).

    Odd lengths: an odd number of steps is padded with one zero step, so a sequence of length L
    becomes ⌈L/2⌉ steps and its last pair is [h_L, 0] — no valid step is dropped. Because outputs at
    padded steps are zero, a sequence inside a padded batch pairs exactly as it would alone.
    """
    T, B, Fdim = x.shape
    if T % 2:
        x = F.pad(x, (0, 0, 0, 0, 0, 1))                                       # (T+1, B, F)
    x = x.view(-1, 2, B, Fdim).permute(0, 2, 1, 3).reshape(-1, B, 2 * Fdim)    # (⌈T/2⌉, B, 2F)
    return x, (None if lengths is None else (lengths + 1) // 2)


class RecurrentStack(nn.Module):
    """`num_layers` recurrent layers of one cell type, each optionally bidirectional.

    - deep: layer l reads layer l-1's output sequence; `dropout` between layers (not after the last,
      as nn.LSTM); `residual` adds each layer's input to its output from the second layer on (He et al.
      2016; with pyramid, the shortcut is the mean of the pair that was concatenated).
    - pyramid: between layers, consecutive output pairs are concatenated (`pyramid_reduce`), so every
      layer above the first runs on half the steps of the one below: time reduction 2^(num_layers-1).
      `pyramid_input=True` also pairs the input frames before the first layer, so every layer reads a
      halved sequence (T/2 + T/4 + ... steps in all): time reduction 2^num_layers.
    - block="residual_mlp": every layer inside a pre-norm residual block with a gated MLP (`blocks.py`), the
      input projected once to the block width (hidden_size × directions); "none" (default): the plain stack.
    """

    def __init__(self, cell: Callable[[int, int], Cell], input_size: int, hidden_size: int,
                 num_layers: int = 1, bidirectional: bool = False, pyramid: bool = False,
                 dropout: float = 0.0, residual: bool = False, backend: str = "auto",
                 pyramid_input: bool = False, block: str = "none", block_mlp_ratio: int = 3):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"model.block={block!r} is not allowed: choose one of {', '.join(BLOCKS)}")
        require_size("model.num_layers", num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout}: must be in [0, 1)")
        directions = 2 if bidirectional else 1
        self.output_size = directions * hidden_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pyramid = pyramid
        self.pyramid_input = pyramid and pyramid_input
        self.residual = residual
        self.dropout = dropout
        stack_input = input_size * (2 if self.pyramid_input else 1)
        self.block = block
        self.input_proj = None
        if block != "none" and stack_input != self.output_size:
            self.input_proj = nn.Linear(stack_input, self.output_size)
            stack_input = self.output_size
        sizes = [stack_input] + [self.output_size * (2 if pyramid else 1)] * (num_layers - 1)
        self.layers = nn.ModuleList(
            [RecurrentLayer(cell, size, hidden_size, bidirectional, backend) for size in sizes])
        self.blocks = None if block == "none" else nn.ModuleList(
            [ResidualMLPBlock(size, self.output_size, block_mlp_ratio) for size in sizes])

    @property
    def reductions(self) -> int:
        """How many times the stack halves time."""
        return (self.num_layers - 1 + self.pyramid_input) if self.pyramid else 0

    @property
    def time_reduction(self) -> int:
        return 2 ** self.reductions

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for _ in range(self.reductions):
            lengths = (lengths + 1) // 2
        return lengths

    def default_state(self, batch: int, device=None, dtype=None) -> StackState:
        return [layer.default_state(batch, device, dtype) for layer in self.layers]

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: StackState | None = None,
                probes: Probes | None = None) -> tuple[Tensor, Tensor | None, StackState]:
        """x (T, B, I) -> outputs (T', B, D*H), output lengths (B,) or None, final state per layer."""
        finals = []
        if self.pyramid_input:
            if lengths is not None:  # the pairs must not read the padding (outputs are zero there, inputs not)
                x = x * valid_steps(lengths, x.shape[0], x.device)
            x, lengths = pyramid_reduce(x, lengths)                           # (T/2, B, 2·I)
        if self.input_proj is not None:
            x = self.input_proj(x)                                            # (T, B, D·H)
        residual = self.residual or self.blocks is not None
        for l, layer in enumerate(self.layers):
            shortcut = x if self.blocks is not None else None
            if l > 0:
                if self.pyramid:
                    x, lengths = pyramid_reduce(x, lengths)                   # (T/2, B, 2·D·H)
                    if residual:
                        shortcut = 0.5 * (x[..., :self.output_size] + x[..., self.output_size:])
                elif residual:
                    shortcut = x
                if self.dropout > 0:
                    x = F.dropout(x, self.dropout, self.training)
            if self.blocks is None:
                out, final = layer(x, lengths, None if state is None else state[l], probes, name=f"layer{l}")
                x = out if shortcut is None else out + shortcut
            else:
                out, final = layer(self.blocks[l].norm(x), lengths, None if state is None else state[l], probes,
                                   name=f"layer{l}")
                mask = valid_steps(lengths, out.shape[0], out.device) if _needs_mask(lengths, out.shape[0]) else None
                x = self.blocks[l].finish(out, shortcut, mask)
            finals.append(final)
        return x, lengths, finals


def detach_state(state):
    """Cut the graph between truncated-BPTT windows; works on any nesting of lists/tuples of tensors."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (list, tuple)):
        return type(state)(detach_state(s) for s in state)
    return state

