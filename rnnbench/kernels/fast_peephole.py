"""Fast sequence-level LSTM family: `cells.PeepholeLSTMCell` over a whole sequence, hand-differentiated.
(Over 400 lines on purpose: the Python loops are the reference the C++ kernel is proven against, so the
two implementations of the same forward and backward, and their build and dispatch, stay side by side.)

No torch kernel computes the peephole LSTM or Greff et al.'s variants of it, and a Python loop of
`cell.step` pays autograd's bookkeeping at every step. Here one `torch.autograd.Function` covers the whole
sequence: its forward loops over time saving the activated gates, its backward loops back over them, and the
recurrent weight gradient is one matmul after the loop. Two implementations of the same two loops:

- C++ (`csrc/peephole.cpp`, built once with torch.utils.cpp_extension and cached): one ATen GEMM per step
  into a preallocated buffer plus one fused, vectorised, multi-threaded element-wise pass; each variant is
  one compile-time instantiation (its switches as template parameters), chosen once per call. Given x and
  W (`cell_sequence`, the layer path), the forward step GEMM is [x_t | h_{t-1}] [W | U]^T and ∂L/∂W
  accumulates per step of the backward, from δa_t in cache: no (T, B, G·H) x_proj is made, and the
  (T, B, G·H) δa is read twice after the loop (for ∂L/∂U and ∂L/∂x) instead of four times;
- Python (below): the same math with torch ops, the fallback when no compiler is available, on non-CPU
  devices, for dtypes other than float32/float64, or with RNNBENCH_NO_CPP=1.

The function is exactly `PeepholeLSTMCell.step` (Gers & Schmidhuber 2000) for every variant of Greff et al.
2016 but fgr (KERNEL_VARIANTS), gate order i, f, g, o. Vanilla:

    a_t = x_proj_t + b_hh + U h_{t-1}                          x_proj_t = W x_t + b_ih  (B, 4H)
    i_t = σ(a_i + p_i ⊙ c_{t-1})        f_t = σ(a_f + p_f ⊙ c_{t-1})        g_t = tanh(a_g)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    o_t = σ(a_o + p_o ⊙ c_t)
    h_t = o_t ⊙ tanh(c_t)  (+ probe_t)

and its backward, given δh_t = ∂L/∂h_t (output gradient + δ from step t+1) and δc_t from step t+1:

    δa_o = δh_t ⊙ tanh(c_t) ⊙ o(1-o)
    δc   = δc_t + δh_t ⊙ o ⊙ (1 - tanh²c_t) + δa_o ⊙ p_o
    δa_i = δc ⊙ g ⊙ i(1-i)      δa_f = δc ⊙ c_{t-1} ⊙ f(1-f)      δa_g = δc ⊙ i ⊙ (1-g²)
    δc_{t-1} = δc ⊙ f + δa_i ⊙ p_i + δa_f ⊙ p_f          δh_{t-1} = δa U
    ∂L/∂x_proj_t = δa_t,  ∂L/∂b_hh = Σ_t δa_t,  ∂L/∂U = Σ_t δa_t^T h_{t-1},
    ∂L/∂p_i = Σ δa_i ⊙ c_{t-1},  ∂L/∂p_f = Σ δa_f ⊙ c_{t-1},  ∂L/∂p_o = Σ δa_o ⊙ c_t
    and through x_proj_t:  ∂L/∂x_t = δa_t W,  ∂L/∂W = Σ_t δa_t^T x_t,  ∂L/∂b_ih = Σ_t δa_t

The variants change those lines as their equations do, and a removed gate has no rows in a, U, b, no
peephole and no δ (`gate_layout`): nig i = 1 (δa_g = δc ⊙ (1-g²)); nfg f = 1 (δc_{t-1} = δc + ...);
nog o = 1 (δc = δc_t + δh_t ⊙ (1 - tanh²c_t)); niaf g = a_g (δa_g = δc ⊙ i); noaf h = o ⊙ c
(δa_o = δh ⊙ c ⊙ o(1-o), δc = δc_t + δh ⊙ o + δa_o ⊙ p_o); np no peephole terms (torch.nn.LSTM's function);
cifg f = 1 - i, not a gate of its own: δa_i = δc ⊙ (g - c_{t-1}) ⊙ i(1-i), δc_{t-1} = δc ⊙ (1-i) + δa_i ⊙ p_i.

Padded batches (`lengths`): at t >= lengths[b] sequence b keeps its state and outputs exactly zero, so
the final state is the state at each sequence's own end. Probes (`h_probe`, (T, B, H) zeros requiring
grad) are added to h_t at every valid step, as in `recurrent.run_explicit`; their gradient is the total
∂L/∂h_t, zero at padded steps. Double backward is not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnbench.kernels import extension, projection
from rnnbench.kernels.lengths import checked_lengths, valid_steps
from rnnbench.kernels.variants import LSTM_VARIANTS, LSTMVariant



# -- the two implementations of the sequence loops ------------------------------------------------------
# Both expose forward(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe, variant,
#                     overwrite_x_proj)
#   -> [outputs (T,B,H), h_T, c_T, gates (T,B,G·H) activated gates present (i,f,g,o), c (T,B,H)]
# and backward(grad_outputs, grad_h_T, grad_c_T, gates, c, outputs, x, h0, c0, weight_hh, peephole, lengths,
#              has_probe, need_weight_grad, variant)
#   -> [δa = grad x_proj, grad h0, grad c0, grad weight_ih, grad weight_hh, grad bias, grad peephole, grad h_probe];
# forward's x is the layer's input (T,B,I) with its weight_ih (G·H, I) and bias_ih, or, with both None, x_proj
# (T,B,G·H) = W x + b_ih itself; backward's x is the input when grad weight_ih = Σ_t δa_t^T x_t is wanted,
# else None (grad weight_ih None); grad bias is that of b_hh, and of b_ih alike (both add to a_t); grad x =
# δa W_ih is projection.InputProjection's. `variant` is the LSTMVariant (Python) or its `variant_bits` (C++);
# peephole is None without peepholes; with overwrite_x_proj the C++ forward may write `gates` over x_proj
# (the Python one never does). backward may write δa over `gates` (the C++ one does: a second T·B·G·H buffer,
# and its page faults, are then saved); PeepholeSequence hands it a copy when the graph is retained.

class _PythonLoops:
    """The sequence loops in torch ops (any device/dtype); `csrc/peephole.cpp` is the same code in C++."""

    @staticmethod
    def forward(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe, variant,
                overwrite_x_proj=False):
        gate_names, peephole_names = gate_layout(variant)
        G = len(gate_names)
        T, B, H = x.shape[0], x.shape[1], weight_hh.shape[1]
        x_proj = x if weight_ih is None else F.linear(x, weight_ih, bias_ih)   # (T, B, G·H): W x_t + b_ih
        gates = x_proj + bias_hh                                  # (T, B, G·H): a_t without U h_{t-1}
        cs = gates.new_empty(T, B, H)
        outputs = gates.new_empty(T, B, H)
        masks = _step_masks(lengths, T, x.device)
        probes = h_probe.unbind(0) if h_probe is not None else (None,) * T
        p = dict(zip(peephole_names, peephole.unbind(0))) if peephole_names else {}  # (H,) each
        w_t = weight_hh.t().contiguous()                          # (H, G·H): faster per-step GEMMs
        h, c = h0, c0
        for t, (a, c_t, out_t) in enumerate(zip(gates.unbind(0), cs.unbind(0), outputs.unbind(0))):
            a.addmm_(h, w_t)                                      # (B, G·H)
            # views: activated in place, saved for backward; None: the gate is absent
            i, f, g, o = map(dict(zip(gate_names, a.chunk(G, dim=1))).get, "ifgo")
            if i is not None:
                (i.addcmul_(p["i"], c) if "i" in p else i).sigmoid_()
            if f is not None:
                (f.addcmul_(p["f"], c) if "f" in p else f).sigmoid_()
            if variant.input_activation:
                g.tanh_()
            if f is not None:
                torch.mul(f, c, out=c_t)
            elif variant.coupled:                                 # f = 1 - i
                torch.mul(1 - i, c, out=c_t)
            else:                                                 # f = 1
                c_t.copy_(c)
            if i is not None:
                c_t.addcmul_(i, g)
            else:
                c_t.add_(g)
            if o is not None:
                (o.addcmul_(p["o"], c_t) if "o" in p else o).sigmoid_()
            cell_out = torch.tanh(c_t) if variant.output_activation else c_t
            h_new = torch.mul(o, cell_out, out=out_t) if o is not None else out_t.copy_(cell_out)
            if probes[t] is not None:
                h_new.add_(probes[t])
            if masks is None:
                h = h_new
            else:
                m = masks[t]                                      # (B, 1) bool
                torch.where(m, c_t, c, out=c_t)
                h = torch.where(m, h_new, h)
                out_t.masked_fill_(~m, 0.0)
            c = c_t
        h_T = h0.clone() if T == 0 else (h.clone() if masks is None else h)
        c_T = c.clone()
        return [outputs, h_T, c_T, gates, cs]

    @staticmethod
    def backward(grad_outputs, grad_h_T, grad_c_T, gates, cs, outputs, x, h0, c0, weight_hh, peephole, lengths,
                 has_probe, need_weight_grad, variant):
        gate_names, peephole_names = gate_layout(variant)
        G = len(gate_names)
        T, B, H = gates.shape[0], gates.shape[1], gates.shape[2] // G
        masks = _step_masks(lengths, T, gates.device)
        dgates = torch.empty_like(gates)
        dprobe = gates.new_empty(T, B, H) if has_probe else None
        dh = grad_h_T if grad_h_T is not None else h0.new_zeros(B, H)
        dc = grad_c_T if grad_c_T is not None else c0.new_zeros(B, H)
        p = dict(zip(peephole_names, peephole.unbind(0))) if peephole_names else {}
        c_prev_all = torch.cat([c0.unsqueeze(0), cs[:-1]])       # (T, B, H)
        grad_out = grad_outputs.unbind(0) if grad_outputs is not None else (None,) * T
        steps = zip(gates.unbind(0), cs.unbind(0), c_prev_all.unbind(0), dgates.unbind(0))
        for t, (a, c, c_prev, da) in reversed(list(enumerate(steps))):
            i, f, g, o = map(dict(zip(gate_names, a.chunk(G, dim=1))).get, "ifgo")
            da_i, da_f, da_g, da_o = map(dict(zip(gate_names, da.chunk(G, dim=1))).get, "ifgo")
            tc = torch.tanh(c) if variant.output_activation else c   # what o multiplies
            dh_t = dh if grad_out[t] is None else dh + grad_out[t]
            if o is not None:
                torch.mul(dh_t, tc, out=da_o).mul_(o * (1 - o))
            d_out = dh_t * o if o is not None else dh_t           # ∂L/∂ of (tanh) c_t through h_t
            dc_t = dc + d_out * (1 - tc * tc) if variant.output_activation else dc + d_out
            if "o" in p:
                dc_t = dc_t + da_o * p["o"]
            if i is not None:                                     # cifg: ∂c_t/∂i = g - c_{t-1}
                torch.mul(dc_t, g - c_prev if variant.coupled else g, out=da_i).mul_(i * (1 - i))
            if f is not None:
                torch.mul(dc_t, c_prev, out=da_f).mul_(f * (1 - f))
            if i is not None:
                torch.mul(dc_t, i, out=da_g)
            else:
                da_g.copy_(dc_t)
            if variant.input_activation:
                da_g.mul_(1 - g * g)
            f_eff = f if f is not None else (1 - i if variant.coupled else None)
            dc_prev = dc_t * f_eff if f_eff is not None else dc_t.clone()
            if "i" in p:
                dc_prev.addcmul_(da_i, p["i"])
            if "f" in p:
                dc_prev.addcmul_(da_f, p["f"])
            if masks is None:
                if has_probe:
                    dprobe[t].copy_(dh_t)
                dc, dh = dc_prev, da @ weight_hh
            else:  # finished rows: no gate gradient, δh and δc carried unchanged
                m = masks[t]
                da.masked_fill_(~m, 0.0)
                if has_probe:
                    dprobe[t].copy_(dh_t).masked_fill_(~m, 0.0)
                dc = torch.where(m, dc_prev, dc)
                dh = torch.addmm(dh.masked_fill(m, 0.0), da, weight_hh)
        grad_weight_ih = grad_weight_hh = None
        if x is not None:
            grad_weight_ih = dgates.reshape(T * B, G * H).t() @ x.reshape(T * B, x.shape[2])
        if need_weight_grad:
            h_prev_all = torch.cat([h0.unsqueeze(0), outputs[:-1]])[:T]   # (T, B, H), T = 0 too; exact wherever δa != 0
            grad_weight_hh = dgates.reshape(T * B, G * H).t() @ h_prev_all.reshape(T * B, H)
        dpeep = None
        if peephole_names:  # p_i, p_f read c_{t-1}; p_o reads c_t
            k = {gate: n * H for n, gate in enumerate(gate_names)}
            dpeep = torch.stack([(dgates[..., k[gate]:k[gate] + H] * (cs if gate == "o" else c_prev_all)).sum((0, 1))
                                 for gate in peephole_names])
        return [dgates, dh, dc, grad_weight_ih, grad_weight_hh, dgates.sum((0, 1)), dpeep, dprobe]


def _step_masks(lengths: Tensor | None, T: int, device) -> tuple[Tensor, ...] | None:
    """T × (B, 1) bool: is step t inside sequence b."""
    if lengths is None:
        return None
    return valid_steps(lengths, T, device).unbind(0)


class PeepholeSequence(torch.autograd.Function):
    """The whole sequence as one autograd node; `loops` is the C++ module or `_PythonLoops`, `variant` the
    cell's `LSTMVariant` (the C++ module takes its bits, `variant_bits`). Given x, weight_ih and bias_ih, the
    loops project x themselves and x_proj is `projection.stand_in`, through which ∂L/∂x flows."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe, loops, variant,
                overwrite_x_proj=False, x=None, weight_ih=None, bias_ih=None):
        which = variant if loops is _PythonLoops else variant_bits(variant)
        outputs, h_T, c_T, gates, cs = loops.forward(x_proj if weight_ih is None else x, weight_ih, bias_ih, h0, c0,
                                                     weight_hh, bias_hh, peephole, lengths, h_probe, which,
                                                     overwrite_x_proj)
        ctx.loops, ctx.has_probe, ctx.which = loops, h_probe is not None, which
        # x_proj is not needed again (and may hold the gates now); the input is, for ∂L/∂W_ih
        ctx.save_for_backward(gates, cs, outputs, h0, c0, weight_hh, peephole, lengths, x)
        ctx.set_materialize_grads(False)
        return outputs, h_T, c_T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_outputs, grad_h_T, grad_c_T):
        gates, cs, outputs, h0, c0, weight_hh, peephole, lengths, x = ctx.saved_tensors
        if ctx.loops is not _PythonLoops and extension.graph_retained():  # C++ overwrites them; a later backward needs them
            gates = gates.clone()
        need = ctx.needs_input_grad
        da, dh0, dc0, dw_ih, dw_hh, db, dp, dprobe = ctx.loops.backward(
            grad_outputs, grad_h_T, grad_c_T, gates, cs, outputs, x if need[12] else None, h0, c0, weight_hh,
            peephole, lengths, ctx.has_probe, need[3], ctx.which)
        db_ih = db.clone() if need[13] else None                  # b_ih and b_hh: the same gradient
        return (da if need[0] else None), dh0, dc0, dw_hh, db, dp, None, dprobe, None, None, None, None, dw_ih, db_ih


# -- the variants ------------------------------------------------------------------------------------------

# Every variant of cells.LSTM_VARIANTS but fgr, whose gates also read the previous step's gate activations
# through R (3H x 3H): a second recurrent GEMM per step on a third state tensor, which this kernel's loop
# (one GEMM per step on h_{t-1}) does not have; fgr runs its explicit equations.
KERNEL_VARIANTS = tuple(name for name, v in LSTM_VARIANTS.items() if not v.full_gate_recurrence)

# The switches the C++ kernel instantiates, in this order as bits 0..6 (csrc/peephole.cpp, `Variant`).
_SWITCHES = ("input_gate", "forget_gate", "output_gate", "input_activation", "output_activation", "peepholes",
             "coupled")


def variant_bits(variant: LSTMVariant) -> int:
    """The C++ kernel's name for a variant: its switches as bits (an uncovered one is refused there)."""
    return sum(int(getattr(variant, switch)) << k for k, switch in enumerate(_SWITCHES))


def gate_layout(variant: LSTMVariant) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(gate row blocks present, in the order i, f, g, o; peepholes present, in the order i, f, o): the
    parameter layout of `PeepholeLSTMCell` with these switches (a removed gate has no rows and no peephole)."""
    sigmoid_gates = tuple(gate for gate, present in
                          (("i", variant.input_gate), ("f", variant.forget_gate), ("o", variant.output_gate))
                          if present)
    gate_names = tuple(gate for gate in "ifgo" if gate in sigmoid_gates or gate == "g")
    return gate_names, (sigmoid_gates if variant.peepholes else ())


def _switches(variant: str | LSTMVariant) -> LSTMVariant:
    if isinstance(variant, LSTMVariant):
        switches = variant
    elif variant in LSTM_VARIANTS:
        switches = LSTM_VARIANTS[variant]
    else:
        raise ValueError(f"variant={variant!r}: allowed {', '.join(KERNEL_VARIANTS)}")
    if switches.full_gate_recurrence or switches not in (LSTM_VARIANTS[name] for name in KERNEL_VARIANTS):
        raise ValueError(f"variant={variant!r}: the sequence kernel covers {', '.join(KERNEL_VARIANTS)} "
                         "(fgr runs on the explicit path)")
    return switches


# -- choosing the implementation ------------------------------------------------------------------------

def cpp_available() -> bool:
    """True if the C++ implementation is usable (builds or loads it on first call)."""
    return extension.available("peephole")


def implementation() -> str:
    """'cpp' or 'python': what `backend="auto"` runs for float32/float64 CPU tensors."""
    return "cpp" if cpp_available() else "python"


def _loops(backend: str, x_proj: Tensor):
    if backend not in ("auto", "cpp", "python"):
        raise ValueError(f"backend={backend!r}: allowed auto, cpp, python")
    fits = extension.fits(x_proj)
    if backend == "python" or (backend == "auto" and not fits):
        return _PythonLoops
    if backend == "cpp":
        if not fits:
            raise ValueError(f"backend='cpp' needs float32/float64 CPU tensors, got {x_proj.dtype} on {x_proj.device}")
        if extension.disabled():
            raise RuntimeError("backend='cpp' while RNNBENCH_NO_CPP is set")
        if extension.load("peephole") is None:
            raise RuntimeError("backend='cpp': the C++ extension could not be built (see the warning)")
        return extension.load("peephole")
    return extension.load("peephole") if cpp_available() else _PythonLoops


def peephole_sequence(x_proj: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, bias_hh: Tensor,
                      peephole: Tensor | None, lengths: Tensor | None = None, probe: bool = False,
                      h_probe: Tensor | None = None, backend: str = "auto", variant: str | LSTMVariant = "vanilla",
                      overwrite_x_proj: bool = False):
    """Run an LSTM of the family over a sequence: `PeepholeLSTMCell.step` for t = 0..T-1 (module docstring).

    `variant`: a name in KERNEL_VARIANTS or its LSTMVariant. With G gate row blocks (`gate_layout`) and P
    peepholes: x_proj (T, B, G·H) = x @ W_ih^T + b_ih; h0, c0 (B, H); weight_hh (G·H, H); bias_hh (G·H,);
    peephole (P, H), None for np; lengths (B,) int64 or None. Returns outputs (T, B, H) (zero at padded
    steps), h_T, c_T (B, H) (each sequence's state at its own end).

    Gradient probes: pass `h_probe` (T, B, H) zeros requiring grad, or `probe=True` to have one made and
    returned as a fourth result; after backward its `.grad` is ∂L/∂h_t for every t.

    `overwrite_x_proj=True` says x_proj is this call's own, read by nothing else: the C++ kernel then keeps
    its gates in x_proj's memory (one (T, B, G·H) buffer less) and x_proj's values are gone after the call.
    (`cell_sequence` needs neither: it hands the kernel x itself, and no x_proj exists.)
    """
    return _sequence(x_proj, None, None, h0, c0, weight_hh, bias_hh, peephole, lengths, probe, h_probe, backend,
                     variant, overwrite_x_proj)


def cell_sequence(cell, x: Tensor, state, lengths: Tensor | None = None, backend: str = "auto",
                  h_probe: Tensor | None = None):
    """`peephole_sequence` on a `PeepholeLSTMCell`'s own tensors (any covered variant): x (T, B, I), state
    (h0, c0) -> outputs (T, B, H), (h_T, c_T). The cell's input projection W x_t + b_ih (`input_projection`)
    is done inside the loops, by the C++ kernel in each step's GEMM: no (T, B, G·H) x_proj is made."""
    h0, c0 = state
    out, h, c = _sequence(x, cell.weight_ih, cell.bias_ih, h0, c0, cell.weight_hh, cell.bias_hh,
                          getattr(cell, "peephole", None), lengths, False, h_probe, backend, cell.switches, False)
    return out, (h, c)


def _sequence(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, peephole, lengths, probe, h_probe, backend,
              variant, overwrite_x_proj):
    """Both entries: x is x_proj (weight_ih, bias_ih None) or the input, projected in the loops."""
    switches = _switches(variant)
    if (peephole is None) != (not switches.peepholes):
        raise ValueError(f"variant={variant!r} {'takes' if switches.peepholes else 'has no'} peephole tensor")
    T, B = x.shape[:2]
    lengths = checked_lengths(lengths, T, B)
    if probe and h_probe is None:
        h_probe = x.new_zeros(T, B, h0.shape[1], requires_grad=True)
    if weight_ih is None:  # x is x_proj
        x_proj, x = x, None
    else:  # ∂L/∂x flows through the stand-in, ∂L/∂W_ih is the sequence node's (from δa_t per step)
        x_proj = projection.stand_in(x, weight_ih)
    result = PeepholeSequence.apply(x_proj, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe,
                                    _loops(backend, x_proj), switches, overwrite_x_proj, x, weight_ih, bias_ih)
    return (*result, h_probe) if probe else result
