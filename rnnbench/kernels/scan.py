"""The diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t over a whole sequence (the "scan" of the diagonal
modern cells: minGRU, minLSTM, LRU, RG-LRU, S6), real or complex, with an initial state and padded batches.

Three forms of one function, side by side as fla and mamba keep a kernel beside its reference:
- `scan_reference`: the recurrence step by step, the definition the others are proven against;
- `scan_doubling`: a PyTorch formulation in ⌈log2 T⌉ rounds of element-wise ops (Hillis & Steele 1986's
  doubling scan of the affine maps h -> a h + b, composed as (a2, b2)∘(a1, b1) = (a2 a1, a2 b1 + b2));
  any sign, real or complex, any device and dtype, differentiable by autograd: the fallback (it forms products
  of a's the loop never forms, so an infinite a_t can meet a partial sum 0 there: inf·0 = NaN where the loop
  gives ±inf; for finite a it is the same function up to rounding);
- the C++ kernel `csrc/scan.cpp` (forward and hand-written backward, float32/float64, complex64/complex128
  as real pairs, built and loaded by `extension.py`), what `backend="auto"` runs on CPU.
`scan_log_space` is Heinsen 2023's formulation (log h_t = a*_t + logcumsumexp(log b - a*)_t, a*_t = Σ log a),
the one minGRU/minLSTM's paper uses (Feng et al. 2024, §3 and appendix): positive a and b only.

Padded batches (`lengths`): at t >= lengths[b] sequence b gets a = 1, b = 0, so its state is carried unchanged
to the end (the final state is each sequence's own last one), and its outputs there are exactly zero.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from rnnbench.kernels import extension
from rnnbench.kernels.lengths import checked_lengths, valid_steps

BACKENDS = ("auto", "cpp", "torch", "loop")
_KERNEL_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def scan_reference(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for t = 0..T-1 with h_{-1} = h0; a, b (T, B, ...), h0 (B, ...) -> (T, B, ...)."""
    h, out = h0, []
    for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out) if out else b.clone()


def scan_doubling(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The same function in ⌈log2 T⌉ rounds: after round k, position t holds the composition of steps
    max(0, t - 2^(k+1) + 1) .. t, so b[t] is h_t once every prefix is complete."""
    T = a.shape[0]
    if T == 0:
        return b.clone()
    b = torch.cat([(a[0] * h0 + b[0]).unsqueeze(0), b[1:]])                    # h0 folded into step 0
    k = 1
    while k < T:
        b = torch.cat([b[:k], a[k:] * b[:-k] + b[k:]])
        a = torch.cat([a[:k], a[k:] * a[:-k]])
        k *= 2
    return b


def scan_log_space(log_a: Tensor, log_b: Tensor, h0: Tensor | None = None) -> Tensor:
    """Heinsen 2023 ("Efficient parallelization of a ubiquitous sequential computation", eq. 2) for a, b > 0
    given as logs: h_t = exp(a*_t + logcumsumexp_{s<=t}(log b_s - a*_s)), a*_t = Σ_{s<=t} log a_s; the initial
    state (any sign) enters as exp(a*_t) h0, the term the log of a non-positive h0 could not carry."""
    a_star = torch.cumsum(log_a, dim=0)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=0))
    return h if h0 is None else h + torch.exp(a_star) * h0


class _KernelScan(torch.autograd.Function):
    """The whole scan as one autograd node on `csrc/scan.cpp` (contiguous (T, N[, 2]) real tensors)."""

    @staticmethod
    def forward(ctx, a, b, h0, complex_pairs, kernel):
        out = kernel.forward(a, b, h0, complex_pairs)
        ctx.kernel, ctx.complex_pairs = kernel, complex_pairs
        ctx.save_for_backward(a, out, h0)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        a, out, h0 = ctx.saved_tensors
        if grad_out is None:
            return None, None, None, None, None
        da, db, dh0 = ctx.kernel.backward(grad_out, None, a, out, h0, ctx.complex_pairs)
        return da, db, dh0, None, None


def kernel_fits(x: Tensor) -> bool:
    """Whether the C++ scan runs on tensors like `x` (CPU; float32/64, complex64/128)."""
    return x.device.type == "cpu" and x.dtype in _KERNEL_DTYPES


def kernel_available() -> bool:
    """True if the C++ scan is usable here (built or loaded on first call; RNNBENCH_NO_CPP turns it off)."""
    return extension.available("scan")


def scan_kernel(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The C++ scan; a, b (T, B, ...), h0 (B, ...) of one kernel dtype on CPU."""
    T, shape = a.shape[0], a.shape
    if T == 0:  # no step, as `scan_reference`: the kernel takes T >= 1, and (0, B, ...) has no (0, N) view
        return b.clone()
    complex_pairs = a.is_complex()

    def flat(x: Tensor, rows: int) -> Tensor:  # (rows, N) real, or (rows, N, 2) real pairs
        x = x.contiguous().reshape(rows, -1)
        return torch.view_as_real(x) if complex_pairs else x

    out = _KernelScan.apply(flat(a, T), flat(b, T), flat(h0, 1)[0], complex_pairs, extension.load("scan"))
    return (torch.view_as_complex(out) if complex_pairs else out).view(shape)


@functools.cache
def _warn_once_fallback(dtype: str, device: str) -> None:
    warnings.warn(f"scan backend=auto: the C++ scan runs float32/float64/complex on CPU only (and when built); "
                  f"{dtype} on {device} runs the PyTorch doubling scan", RuntimeWarning, stacklevel=4)


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, lengths: Tensor | None = None,
                backend: str = "auto") -> tuple[Tensor, Tensor]:
    """h_t = a_t ⊙ h_{t-1} + b_t. a, b (T, B, ...), h0 (B, ...); lengths (B,) or None.

    Returns the outputs (T, B, ...), exactly zero at padded steps, and the final state (B, ...) at each
    sequence's own end. `backend`: auto (C++ where it fits and is built, else the doubling scan with one
    warning), cpp, torch (the doubling scan), loop (the reference).
    """
    if backend not in BACKENDS:
        raise ValueError(f"scan backend={backend!r}: allowed {', '.join(BACKENDS)}")
    T = a.shape[0]
    mask = None
    if lengths is not None and bool((lengths < T).any()):
        mask = valid_steps(lengths, T, a.device).view(T, -1, *([1] * (a.dim() - 2)))  # (T, B, 1, ...)
        a = torch.where(mask, a, torch.ones((), dtype=a.dtype, device=a.device))
        b = torch.where(mask, b, torch.zeros((), dtype=b.dtype, device=b.device))
    if backend == "auto":
        fits = kernel_fits(a) and a.dtype == b.dtype == h0.dtype
        if fits and kernel_available():
            backend = "cpp"
        else:
            if not fits:
                _warn_once_fallback(str(a.dtype), a.device.type)
            backend = "torch"
    if backend == "cpp":
        if not kernel_fits(a):
            raise ValueError(f"scan backend='cpp' needs CPU float32/float64/complex tensors, got {a.dtype} on {a.device}")
        if not kernel_available():
            raise RuntimeError("scan backend='cpp': the C++ extension is unavailable (RNNBENCH_NO_CPP, or no compiler)")
        out = scan_kernel(a, b, h0)
    elif backend == "torch":
        out = scan_doubling(a, b, h0)
    else:
        out = scan_reference(a, b, h0)
    final = out[-1] if T > 0 else h0
    return (out if mask is None else out * mask), final


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`scan_log_space` with `linear_scan`'s contract: padded steps take log a = 0, log b = -inf (a = 1, b = 0),
    outputs there are zero, the final state is each sequence's own last one."""
    T = log_a.shape[0]
    mask = None
    if lengths is not None and bool((lengths < T).any()):
        mask = valid_steps(lengths, T, log_a.device).view(T, -1, *([1] * (log_a.dim() - 2)))
        log_a = log_a.masked_fill(~mask, 0.0)
        log_b = log_b.masked_fill(~mask, float("-inf"))
    out = scan_log_space(log_a, log_b, h0)
    final = out[-1] if T > 0 else h0
    return (out if mask is None else out * mask), final


class _Fused(torch.autograd.Function):
    """A fused cell kernel of `csrc/scan.cpp` over the whole sequence as one autograd node: `<name>_forward(*inputs,
    h0, lengths)` -> (outputs, h_T[, *kept]); `<name>_backward(δoutputs, δh_T, *inputs, *kept, lengths)` ->
    (δinputs..., δh0), where `kept` is what the forward returned beyond its outputs (S6: its state checkpoints)
    or else (outputs, h0). minGRU / minLSTM (`min_rnn`), RG-LRU (`rglru`), LRU (`lru`), S6 (`s6`); every
    backward hand-written."""

    @staticmethod
    def forward(ctx, kernel, name, lengths, h0, *inputs):
        out, h_T, *kept = getattr(kernel, f"{name}_forward")(*inputs, h0, lengths)
        ctx.kernel, ctx.name = kernel, name
        ctx.save_for_backward(lengths, *inputs, *(kept or (out, h0)))
        ctx.set_materialize_grads(False)
        return out, h_T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h_T):
        lengths, *saved = ctx.saved_tensors
        *d_inputs, dh0 = getattr(ctx.kernel, f"{ctx.name}_backward")(grad_out, grad_h_T, *saved, lengths)
        return None, None, None, dh0, *d_inputs


def _fused(name: str, h0: Tensor, lengths: Tensor | None, *inputs: Tensor) -> tuple[Tensor, Tensor]:
    lengths = checked_lengths(lengths, *inputs[0].shape[:2])
    return _Fused.apply(extension.load("scan"), name, lengths, h0, *inputs)


def fused_fits(x: Tensor) -> bool:
    """Whether the fused cell kernels (minGRU / minLSTM, RG-LRU, LRU, S6) run on tensors like `x` here (CPU
    float32/float64, the extension built)."""
    return extension.fits(x) and extension.available("scan")


def min_rnn(x_proj: Tensor, h0: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """minGRU (x_proj (T, B, 2H) = [k_z | k_h]) or minLSTM ((T, B, 3H) = [k_f | k_i | k_h]) from h0 (B, H) on the
    fused C++ kernel: outputs (T, B, H), zero at padded steps, and the final state (B, H) at each sequence's end."""
    return _fused("min_rnn", h0, lengths, x_proj)


def rglru(u: Tensor, pre: Tensor, coef: Tensor, h0: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """RG-LRU's recurrence on the fused C++ kernel: u (T, B, H), the gates' pre-activations pre (T, B, 2H)
    = [recurrence | input], coef = c·softplus(-Λ) (H), h0 (B, H) -> outputs (T, B, H), zero at padded steps,
    and the final state (B, H) at each sequence's end. Runs where `fused_fits` (CPU float32/64, built)."""
    return _fused("rglru", h0, lengths, u, pre, coef)


def lru(x_proj: Tensor, lam: Tensor, gamma: Tensor, h0: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """LRU's recurrence x_t = λ x_{t-1} + γ (u_re + i u_im) on the fused C++ kernel, in real halves: x_proj
    (T, B, ≥ 2N) starting [u_re | u_im], lam (2N) = [Re λ | Im λ], gamma (N), h0 (B, 2N) = [Re x0 | Im x0]
    -> states (T, B, 2N) = [Re x_t | Im x_t], zero at padded steps, and the final state (B, 2N) at each
    sequence's end. Runs where `fused_fits` (CPU float32/64, built)."""
    return _fused("lru", h0, lengths, x_proj, lam, gamma)


def s6(delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor,
       lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mamba's selective scan on the fused C++ kernel, without the (T, B, E, N) tensors: Δ, u (T, B, E), A (E, N),
    B, C (T, B, N), h0 (B, E, N) -> y (T, B, E) with y_t = Σ_n C_t[n] h_t[:, n], zero at padded steps, and the
    final state (B, E, N) at each sequence's end. Runs where `fused_fits` (CPU float32/64, built)."""
    return _fused("s6", h0, lengths, delta, u, A, B, C)
