"""Suite `cells`: one training step (forward + backward) of one recurrent layer, every cell and backend.

B=64, T=500, input 32, H=256 and B=64, T=100, input 32, H=128 (issues 2, 7 and 10). The step is the layer
as the framework runs it (`recurrent.RecurrentLayer`: input projection, sequence, backward through all of
it) with a fixed random output gradient. Rows: torch's fused LSTM (the reference every ratio is taken to,
measured in the same interleaved rounds), every LSTM variant of Greff et al. 2016 on `auto` (the sequence
kernel of `fast_peephole`; fgr explicit), the plain LSTM's function on that kernel (variant np), both GRU
forms on `auto` and torch's GRU, the explicit paths; per row also the ratio to its torch counterpart
(nn.LSTM, nn.GRU, nn.RNN), GFLOP/s, the share of the float32 matmul peak measured in the same rounds, and
the peak memory of the step, at both sizes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from rnnbench.bench.measure import (Case, allocator_peak, interleaved, matmul_case, min_ratio_text, pct,
                                    peak_rate, ratio_text, recurrent_flops, rnn_gemm_case, rss_peak_increase,
                                    summarise, table)
from rnnbench.modules.cells import LSTM_VARIANTS, Cell, GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.modules.recurrent import RecurrentLayer

REFERENCE = "fused LSTM"
GRU_REFERENCE = "fused GRU"
TANH_REFERENCE = "fused vanilla tanh"


@dataclass
class Variant:
    name: str
    make_cell: Callable[[int, int], Cell]
    backend: str  # a RecurrentLayer backend, or "python-kernel" for fast_peephole's Python loops
    counterpart: str  # the torch kernel computing the closest function: nn.LSTM, nn.GRU or nn.RNN


def _lstm_variant(name: str) -> Callable[[int, int], Cell]:
    return functools.partial(PeepholeLSTMCell, variant=name)


def _cho(i: int, h: int) -> Cell:
    return GRUCell(i, h, reset_after=False)


VARIANTS = [
    Variant(REFERENCE, LSTMCell, "fused", REFERENCE),
    Variant("explicit LSTM", LSTMCell, "explicit", REFERENCE),
    # the plain LSTM's function on rnnbench's kernel (Greff's np = LSTMCell's parameters); cell=lstm itself
    # stays on torch's kernel in auto by decision (recurrent.py)
    Variant("LSTM on our kernel (peephole np auto)", _lstm_variant("np"), "auto", REFERENCE),
    Variant("peephole auto", PeepholeLSTMCell, "auto", REFERENCE),
    *(Variant(f"peephole {name} auto", _lstm_variant(name), "auto", REFERENCE)
      for name in LSTM_VARIANTS if name not in ("vanilla", "np")),
    Variant("peephole Python kernel", PeepholeLSTMCell, "python-kernel", REFERENCE),
    Variant("peephole explicit", PeepholeLSTMCell, "explicit", REFERENCE),
    Variant(GRU_REFERENCE, GRUCell, "fused", GRU_REFERENCE),
    Variant("GRU auto", GRUCell, "auto", GRU_REFERENCE),
    Variant("explicit GRU", GRUCell, "explicit", GRU_REFERENCE),
    Variant("GRU Cho (reset_after=False)", _cho, "auto", GRU_REFERENCE),
    Variant("GRU Cho explicit", _cho, "explicit", GRU_REFERENCE),
    Variant(TANH_REFERENCE, VanillaCell, "fused", TANH_REFERENCE),
    Variant("explicit vanilla tanh", VanillaCell, "explicit", TANH_REFERENCE),
]

FULL_CONFIGS = [(64, 500, 32, 256), (64, 100, 32, 128)]  # (B, T, I, H)
QUICK_CONFIGS = [(8, 16, 8, 16)]
# issue 10's targets, as ratios to the row's torch counterpart (nn.LSTM for the LSTM family, nn.GRU for GRUs)
TARGETS = {REFERENCE: 1.0, GRU_REFERENCE: 0.75}


def step_flops(cell: Cell, T: int, B: int, I: int, H: int) -> float:
    """Matmul FLOPs of a training step: the gates' products, and fgr's gate recurrence R (3H x 3H) too."""
    flops = recurrent_flops(T, B, I, H, cell.gates)
    gate_recurrence = getattr(cell, "gate_recurrence", None)
    if gate_recurrence is not None:  # forward 2·T·B·(3H)², backward twice that
        flops += 3 * 2.0 * T * B * gate_recurrence.numel()
    return flops


def training_step(variant: Variant, B: int, T: int, I: int, H: int, seed: int = 0):
    """(step function, path actually run, FLOPs of one step) for one variant at one size."""
    torch.manual_seed(seed)
    layer_backend = "auto" if variant.backend == "python-kernel" else variant.backend
    layer = RecurrentLayer(variant.make_cell, I, H, backend=layer_backend)
    cell = layer.directions[0]
    x = torch.randn(T, B, I)
    grad_out = torch.randn(T, B, H) / (T * B) ** 0.5
    params = list(layer.parameters())
    path = layer.paths[0]

    if variant.backend == "python-kernel":
        from rnnbench.kernels import fast_peephole

        state = cell.default_state(B)
        path = "fast/python"

        def forward():
            return fast_peephole.cell_sequence(cell, x, state, backend="python")[0]
    else:
        if path == "fast":
            from rnnbench.kernels import fast_gru, fast_peephole

            available = fast_gru.available() if isinstance(cell, GRUCell) else fast_peephole.cpp_available()
            path = "fast/cpp" if available else ("fast/python" if isinstance(cell, PeepholeLSTMCell) else "fallback")

        def forward():
            return layer(x)[0]

    def step():
        for p in params:
            p.grad = None
        out = forward()                                                    # (T, B, H)
        out.backward(grad_out)

    return step, path, step_flops(cell, T, B, I, H)


def measure_memory(B: int, T: int, I: int, H: int) -> dict[str, dict]:
    """Peak memory of one training step per variant, each after a warm-up step: torch's allocator peak
    and the process's resident high-water mark above its level before the step."""
    memory = {}
    for v in VARIANTS:
        step, _, _ = training_step(v, B, T, I, H)
        try:
            step()
        except Exception as error:
            memory[v.name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        memory[v.name] = {"tensor_peak_bytes": allocator_peak(step), "rss_peak_increase_bytes": rss_peak_increase(step)}
    return memory


def _mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def run(opts) -> dict:
    configs = QUICK_CONFIGS if opts.quick else FULL_CONFIGS
    peak_n = 256 if opts.quick else 2048
    results, tables = [], []
    for B, T, I, H in configs:
        memory = measure_memory(B, T, I, H)
        cases, paths = [], {}
        for v in VARIANTS:
            step, path, flops = training_step(v, B, T, I, H)
            paths[v.name] = path
            cases.append(Case(v.name, step, flops=flops))
        peak = matmul_case(peak_n)
        step_gemm = rnn_gemm_case(B, H, 4)
        failures: dict[str, str] = {}
        samples = interleaved(cases + [peak, step_gemm], opts.repeats, opts.min_sample_s, failures=failures)
        peak_flops = peak_rate(samples, peak)
        flops = {c.name: c.flops for c in cases + [peak, step_gemm]}
        stats = summarise(samples, REFERENCE, flops, peak_flops)
        rows = []
        for v in VARIANTS:
            mem = memory[v.name]
            mem_cells = [_mib(mem.get("tensor_peak_bytes")), _mib(mem.get("rss_peak_increase_bytes"))]
            if v.name in failures:
                rows.append([v.name, paths[v.name], "failed", "-", "-", "-", "-", "-", None, "-", *mem_cells])
                continue
            s = stats[v.name]
            counterpart = stats.get(v.counterpart)
            if counterpart is not None:
                s["ratio_to_counterpart"] = s["median_s"] / counterpart["median_s"]
            rows.append([v.name, paths[v.name], 1000 * s["median_s"], pct(s["spread"]), ratio_text(s),
                         _ratio(s.get("ratio_to_counterpart")), 1000 * s["min_s"], min_ratio_text(s), s["gflops"],
                         pct(s["fraction_of_peak"]), *mem_cells])
        for c in (peak, step_gemm):
            s = stats[c.name]
            rows.append([c.name, "torch.mm", 1000 * s["median_s"], pct(s["spread"]), "-", "-", 1000 * s["min_s"], "-",
                         s["gflops"], pct(s["fraction_of_peak"]), None, None])
        title = (f"cells: training step (forward + backward), B={B} T={T} input={I} H={H}, "
                 f"{opts.threads} threads, median of {opts.repeats} interleaved repeats")
        notes = [f"ms = median; ratio = median / median of {REFERENCE} (IQR of per-round ratios in brackets); "
                 "vs torch = median / median of the row's torch counterpart (LSTM family: fused LSTM = nn.LSTM; "
                 "GRU forms: fused GRU = nn.GRU; tanh: nn.RNN); spread = IQR/median of the times; "
                 "min = fastest sample; GFLOP/s and peak from medians",
                 "GFLOP/s counts the matmul FLOPs only: forward 2·T·B·(I+H)·G·H (+ 2·T·B·(3H)² for fgr's R), "
                 f"backward 2x forward; peak = median {peak.name} GFLOP/s measured in the same rounds",
                 "MiB: peak memory of one step, measured before the timings, each after a warm-up step: tensor = "
                 "torch's CPU allocator, the most bytes live at once (torch.profiler profile_memory, "
                 "'Total Allocated'); RSS = the process's resident high-water mark above its level just before "
                 "the step (freed heap trimmed, VmHWM reset via /proc/self/clear_refs)",
                 "targets (issue 10): every LSTM-family row <= 1.0 vs torch, GRU forms <= 0.75, peak memory <= "
                 "fused LSTM's at T=500: " + target_summary(stats, memory, failures)]
        notes += [f"{name} failed: {error}" for name, error in failures.items()]
        tables.append(table(title, ["cell", "path", "ms", "spread", "ratio (IQR)", "vs torch", "min ms",
                                    "ratio of min", "GFLOP/s", "of peak", "MiB tensor", "MiB RSS"],
                            rows, notes))
        results.append({"B": B, "T": T, "input": I, "hidden": H, "paths": paths, "failures": failures,
                        "peak_gflops": peak_flops / 1e9, "stats": stats, "memory": memory})
    return {"configs": results, "tables": tables}


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def target_summary(stats: dict, memory: dict, failures: dict) -> str:
    """Which rows on `auto` miss issue 10's targets in this run."""
    missed = []
    for v in VARIANTS:
        if v.backend != "auto" or v.counterpart not in TARGETS or v.name in failures:
            continue
        ratio = stats[v.name].get("ratio_to_counterpart")
        if ratio is not None and ratio > TARGETS[v.counterpart]:
            missed.append(f"{v.name} {ratio:.2f}")
        reference_bytes = memory.get(REFERENCE, {}).get("tensor_peak_bytes")
        own_bytes = memory.get(v.name, {}).get("tensor_peak_bytes")
        if v.counterpart == REFERENCE and reference_bytes and own_bytes and own_bytes > reference_bytes:
            missed.append(f"{v.name} memory {own_bytes / reference_bytes:.2f}x")
    return "all met" if not missed else "missed by " + ", ".join(missed)
