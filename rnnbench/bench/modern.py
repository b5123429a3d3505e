"""Suite `modern`: the modern cells' training step beside rnnbench's own LSTM kernel, and the scan kernel
beside a memory-bound reference and the log-space (Heinsen) formulation (issue 23).

Training step: one `recurrent.RecurrentLayer` as the framework runs it (input projection, the cell over the
sequence on `model.backend=auto`, backward through all of it with a fixed random output gradient), B=64,
input 32, at H=256, T=500 and H=128, T=100. The reference is rnnbench's own LSTM kernel (the plain LSTM's
function on `fast_peephole`'s C++ kernel, Greff's variant np), measured in the same interleaved rounds;
torch's fused LSTM is a row too. The matrix-state cells (mLSTM, Gated DeltaNet) run at the small size only:
their step loops save a (B, heads, d, d) state per step. S6 runs at both (its fused scan keeps no (T, B, E, N)
tensor; the generic scan's would be ~1 GiB each at H=256, T=500).
mLSTM and Gated DeltaNet run twice: `auto` (their chunkwise-parallel form) and `explicit` (the step loop).

Scan: h_t = a_t h_{t-1} + b_t on (T, B·H) float32 tensors: the C++ kernel forward, forward + backward, the
PyTorch doubling scan, the log-space form (positive a, b: logcumsumexp), and `torch.mul(a, b, out=...)` that
reads and writes the same bytes as the kernel's forward (two tensors in, one out): the memory-bound
reference. GB/s counts those 3·4·T·N bytes (forward) and 9·4·T·N (forward + backward: the forward's three,
then a, the output gradient and h read, ∂a and ∂b written, h_{t-1} read again).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from rnnbench.bench.measure import Case, interleaved, matmul_case, pct, peak_rate, recurrent_flops, summarise, table
from rnnbench.kernels import scan
from rnnbench.modules import modern_cells as mc
from rnnbench.modules.cells import LSTMCell, PeepholeLSTMCell
from rnnbench.modules.recurrent import RecurrentLayer

REFERENCE = "LSTM, our kernel (np auto)"


@dataclass
class Row:
    name: str
    make_cell: Callable[[int, int], torch.nn.Module]
    backend: str = "auto"
    large: bool = True  # measured at H=256, T=500 too


ROWS = [
    Row(REFERENCE, functools.partial(PeepholeLSTMCell, variant="np")),
    Row("fused LSTM (torch)", LSTMCell, "fused"),
    Row("minGRU", mc.MinGRUCell),
    Row("minGRU log-space", functools.partial(mc.MinGRUCell, log_space=True)),
    Row("minLSTM", mc.MinLSTMCell),
    Row("LRU (N=H)", mc.LRUCell),
    Row("RG-LRU", mc.RGLRUCell),
    Row("RG-LRU Hawk block", functools.partial(mc.RGLRUCell, temporal_block=True)),
    Row("IndRNN", mc.IndRNNCell),
    Row("IndRNN (explicit)", mc.IndRNNCell, "explicit", large=False),
    Row("sLSTM", mc.SLSTMCell),
    Row("sLSTM (explicit)", mc.SLSTMCell, "explicit", large=False),
    Row("S6 (N=16)", mc.S6Cell),
    Row("mLSTM chunkwise", mc.MLSTMCell, large=False),
    Row("mLSTM recurrent", mc.MLSTMCell, "explicit", large=False),
    Row("Gated DeltaNet chunkwise", mc.GatedDeltaNetCell, large=False),
    Row("Gated DeltaNet recurrent", mc.GatedDeltaNetCell, "explicit", large=False),
]
# issue 23: the chunkwise form >= 3x faster than the same cell's recurrent form
CHUNKWISE = {"mLSTM chunkwise": "mLSTM recurrent", "Gated DeltaNet chunkwise": "Gated DeltaNet recurrent"}
# a sequence kernel against the same cell's step loop (reported beside the chunkwise forms)
KERNEL_VS_LOOP = {"IndRNN": "IndRNN (explicit)", "sLSTM": "sLSTM (explicit)"}
FULL_CONFIGS = [(64, 500, 32, 256), (64, 100, 32, 128)]  # (B, T, I, H)
QUICK_CONFIGS = [(4, 12, 4, 8)]
# issue 23's targets, as ratios to REFERENCE at H=256, T=500
TARGETS = {"minGRU": 0.25, "minLSTM": 0.25, "LRU (N=H)": 0.25, "RG-LRU": 0.25, "S6 (N=16)": 1.0,
           "sLSTM": 1.5}


def training_step(row: Row, B: int, T: int, I: int, H: int, seed: int = 0):
    """(step function, the path the layer takes) for one row at one size."""
    torch.manual_seed(seed)
    layer = RecurrentLayer(row.make_cell, I, H, backend=row.backend)
    x = torch.randn(T, B, I)
    grad_out = torch.randn(T, B, H) / (T * B) ** 0.5
    params = list(layer.parameters())

    def step():
        for p in params:
            p.grad = None
        layer(x)[0].backward(grad_out)

    return step, layer.paths[0]


def gemm_flops(row: Row, step: Callable[[], None], B: int, T: int, I: int, H: int) -> float:
    """The matrix products of one training step, as torch's FlopCounterMode counts them (it sees the GEMMs
    that rnnbench's C++ kernels call through the dispatcher too); torch's fused LSTM hides its GEMMs, so its
    row takes the formula. The element-wise work of the fused kernels is not counted: GFLOP/s says how much
    of a row's time its GEMMs could explain."""
    if row.backend == "fused":
        return recurrent_flops(T, B, I, H, 4)
    from torch.utils.flop_counter import FlopCounterMode

    step()  # the warm-up builds any kernel outside the count
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def scan_cases(T: int, N: int) -> tuple[list[Case], dict[str, float]]:
    """The scan's cases on (T, N) float32 tensors and the bytes each moves."""
    g = torch.Generator().manual_seed(0)
    a = (0.5 + 0.5 * torch.rand(T, 1, N, generator=g)).requires_grad_()
    b = torch.rand(T, 1, N, generator=g).requires_grad_()
    h0 = torch.zeros(1, N)
    grad = torch.randn(T, 1, N, generator=g)
    out = torch.empty(T, 1, N)
    log_a, log_b = a.detach().log().requires_grad_(), b.detach().log().requires_grad_()

    def forward(fn):
        with torch.no_grad():
            fn()

    def backward(fn):
        a.grad = b.grad = log_a.grad = log_b.grad = None
        fn().backward(grad)

    kernel = lambda: scan.linear_scan(a, b, h0, backend="cpp")[0]  # noqa: E731
    doubling = lambda: scan.linear_scan(a, b, h0, backend="torch")[0]  # noqa: E731
    log_space = lambda: scan.scan_log_space(log_a, log_b)  # noqa: E731
    one = 4.0 * T * N
    cases = [
        Case("torch.mul(a, b, out=)", lambda: torch.mul(a.detach(), b.detach(), out=out)),
        Case("scan kernel forward", functools.partial(forward, kernel)),
        Case("doubling scan forward", functools.partial(forward, doubling)),
        Case("log-space scan forward", functools.partial(forward, log_space)),
        Case("scan kernel fwd+bwd", functools.partial(backward, kernel)),
        Case("log-space scan fwd+bwd", functools.partial(backward, log_space)),
    ]
    moved = {"torch.mul(a, b, out=)": 3 * one, "scan kernel forward": 3 * one, "doubling scan forward": 3 * one,
             "log-space scan forward": 3 * one, "scan kernel fwd+bwd": 9 * one, "log-space scan fwd+bwd": 9 * one}
    return cases, moved


def run(opts) -> dict:
    configs = QUICK_CONFIGS if opts.quick else FULL_CONFIGS
    results, tables = [], []
    large = configs[0]
    for B, T, I, H in configs:
        rows = [r for r in ROWS if r.large or (B, T, I, H) != large or opts.quick]
        cases, paths = [], {}
        for r in rows:
            step, path = training_step(r, B, T, I, H)
            paths[r.name] = path
            try:
                flops = gemm_flops(r, step, B, T, I, H)
            except Exception:  # a row that fails is reported as failed by the timing below
                flops = 0.0
            cases.append(Case(r.name, step, flops=flops))
        peak = matmul_case(256 if opts.quick else 2048)
        failures: dict[str, str] = {}
        samples = interleaved(cases + [peak], opts.repeats, opts.min_sample_s, failures=failures)
        stats = summarise(samples, REFERENCE, {c.name: c.flops for c in cases + [peak]}, peak_rate(samples, peak))
        lines = []
        for r in rows:
            if r.name in failures:
                lines.append([r.name, paths[r.name], "failed", "-", "-", "-", "-", "-", "-"])
                continue
            s = stats[r.name]
            target = TARGETS.get(r.name) if (B, T, I, H) == large and not opts.quick else None
            verdict = "-" if target is None else (f"<= {target}: {'met' if s['ratio'] <= target else 'missed'}")
            recurrent = stats.get(CHUNKWISE.get(r.name, ""))
            if recurrent is not None:
                speedup = recurrent["median_s"] / s["median_s"]
                verdict = f"{speedup:.1f}x recurrent's speed (>= 3: {'met' if speedup >= 3 else 'missed'})"
            loop = stats.get(KERNEL_VS_LOOP.get(r.name, ""))
            if loop is not None:
                verdict += f"; {loop['median_s'] / s['median_s']:.1f}x its step loop's speed"
            lines.append([r.name, paths[r.name], 1000 * s["median_s"], pct(s["spread"]), f"{s['ratio']:.2f}",
                          f"{s['ratio_of_minima']:.2f}", s["gflops"], pct(s["fraction_of_peak"]), verdict])
        ps = stats[peak.name]
        lines.append([peak.name, "torch.mm", 1000 * ps["median_s"], pct(ps["spread"]), "-", "-", ps["gflops"],
                      pct(ps["fraction_of_peak"]), "-"])
        skipped = [r.name for r in ROWS if r not in rows]
        notes = [f"ms = median; ratio = median / median of '{REFERENCE}' in the same rounds; min ratio = ratio "
                 "of the fastest samples; spread = IQR/median",
                 "GFLOP/s = the step's GEMM FLOPs (torch's FlopCounterMode; the fused LSTM by formula) / median; "
                 f"of peak = against {peak.name} in the same rounds: the share of the time its GEMMs explain"]
        if skipped:
            notes.append("not measured at this size (memory, module docstring): " + ", ".join(skipped))
        notes += [f"{name} failed: {error}" for name, error in failures.items()]
        tables.append(table(f"modern: training step (forward + backward), B={B} T={T} input={I} H={H}, "
                            f"{opts.threads} threads, median of {opts.repeats} interleaved repeats",
                            ["cell", "path", "ms", "spread", "ratio", "min ratio", "GFLOP/s", "of peak", "target"],
                            lines, notes))
        results.append({"B": B, "T": T, "input": I, "hidden": H, "paths": paths, "failures": failures,
                        "stats": stats})

    T, N = (16, 64) if opts.quick else (500, 64 * 256)
    cases, moved = scan_cases(T, N)
    failures = {}
    samples = interleaved(cases, opts.repeats, opts.min_sample_s, failures=failures)
    stats = summarise(samples, "torch.mul(a, b, out=)")
    lines = [[c.name, 1000 * stats[c.name]["median_s"], pct(stats[c.name]["spread"]),
              moved[c.name] / stats[c.name]["median_s"] / 1e9, f"{stats[c.name]['ratio']:.2f}"]
             for c in cases if c.name not in failures]
    kernel = stats.get("scan kernel forward", {}).get("median_s")
    log_fwd = stats.get("log-space scan forward", {}).get("median_s")
    kernel_bwd = stats.get("scan kernel fwd+bwd", {}).get("median_s")
    log_bwd = stats.get("log-space scan fwd+bwd", {}).get("median_s")
    notes = ["ratio = median / median of torch.mul(a, b, out=) (the same bytes as the kernel's forward)",
             "GB/s: forward 3·4·T·N bytes (a, b read, h written), forward + backward 9·4·T·N",
             "targets: kernel forward within 2x of torch.mul; >= 3x faster than the log-space form"]
    if kernel and log_fwd and kernel_bwd and log_bwd:
        notes.append(f"log-space / kernel: forward {log_fwd / kernel:.1f}x, forward + backward "
                     f"{log_bwd / kernel_bwd:.1f}x")
    tables.append(table(f"scan: h_t = a_t h_(t-1) + b_t, float32, T={T} N={N} (B·H), {opts.threads} threads",
                        ["case", "ms", "spread", "GB/s", "ratio"], lines, notes))
    results.append({"scan": {"T": T, "N": N, "stats": stats, "failures": failures}})
    return {"configs": results, "tables": tables}
