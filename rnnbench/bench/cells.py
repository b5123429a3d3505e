"""Suite `cells`: one training step (forward + backward) of one recurrent layer, every cell and backend.

B=64, T=500, input 32, H=256 and B=64, T=100, input 32, H=128 (issues 2 and 7). The step is the layer as
the framework runs it (`recurrent.RecurrentLayer`: input projection, sequence, backward through all of it)
with a fixed random output gradient; the reference is torch's fused LSTM kernel on the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rnnbench.bench.measure import (Case, allocator_peak, interleaved, matmul_case, min_ratio_text, pct,
                                    peak_rate, ratio_text, recurrent_flops, rnn_gemm_case, rss_peak_increase,
                                    summarise, table)
from rnnbench.cells import Cell, GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.recurrent import RecurrentLayer

REFERENCE = "fused LSTM"


@dataclass
class Variant:
    name: str
    make_cell: Callable[[int, int], Cell]
    backend: str  # a RecurrentLayer backend, or "python-kernel" for fast_peephole's Python loops


VARIANTS = [
    Variant(REFERENCE, LSTMCell, "fused"),
    Variant("explicit LSTM", LSTMCell, "explicit"),
    Variant("peephole auto", PeepholeLSTMCell, "auto"),
    Variant("peephole Python kernel", PeepholeLSTMCell, "python-kernel"),
    Variant("peephole explicit", PeepholeLSTMCell, "explicit"),
    Variant("fused GRU", GRUCell, "fused"),
    Variant("GRU auto", GRUCell, "auto"),
    Variant("explicit GRU", GRUCell, "explicit"),
    Variant("GRU Cho (reset_after=False)", lambda i, h: GRUCell(i, h, reset_after=False), "auto"),
    Variant("GRU Cho explicit", lambda i, h: GRUCell(i, h, reset_after=False), "explicit"),
    Variant("fused vanilla tanh", VanillaCell, "fused"),
    Variant("explicit vanilla tanh", VanillaCell, "explicit"),
]

FULL_CONFIGS = [(64, 500, 32, 256), (64, 100, 32, 128)]  # (B, T, I, H)
QUICK_CONFIGS = [(8, 16, 8, 16)]


def training_step(variant: Variant, B: int, T: int, I: int, H: int, seed: int = 0):
    """(step function, path actually run, gates) for one variant at one size."""
    torch.manual_seed(seed)
    layer_backend = "auto" if variant.backend == "python-kernel" else variant.backend
    layer = RecurrentLayer(variant.make_cell, I, H, backend=layer_backend)
    cell = layer.directions[0]
    x = torch.randn(T, B, I)
    grad_out = torch.randn(T, B, H) / (T * B) ** 0.5
    params = list(layer.parameters())
    path = layer.paths[0]

    if variant.backend == "python-kernel":
        from rnnbench import fast_peephole

        h0, c0 = cell.default_state(B)
        path = "fast/python"

        def forward():
            return fast_peephole.peephole_sequence(cell.input_projection(x), h0, c0, cell.weight_hh,
                                                   cell.bias_hh, cell.peephole, backend="python")[0]
    else:
        if path == "fast":
            from rnnbench import fast_peephole
            path = f"fast/{fast_peephole.implementation()}"

        def forward():
            return layer(x)[0]

    def step():
        for p in params:
            p.grad = None
        out = forward()                                                    # (T, B, H)
        out.backward(grad_out)

    return step, path, cell.gates


def run(opts) -> dict:
    configs = QUICK_CONFIGS if opts.quick else FULL_CONFIGS
    peak_n = 256 if opts.quick else 2048
    results, tables = [], []
    for B, T, I, H in configs:
        cases, paths = [], {}
        for v in VARIANTS:
            step, path, gates = training_step(v, B, T, I, H)
            paths[v.name] = path
            cases.append(Case(v.name, step, flops=recurrent_flops(T, B, I, H, gates)))
        peak = matmul_case(peak_n)
        step_gemm = rnn_gemm_case(B, H, 4)
        failures: dict[str, str] = {}
        samples = interleaved(cases + [peak, step_gemm], opts.repeats, opts.min_sample_s, failures=failures)
        peak_flops = peak_rate(samples, peak)
        flops = {c.name: c.flops for c in cases + [peak, step_gemm]}
        stats = summarise(samples, REFERENCE, flops, peak_flops)
        rows = []
        for c in cases:
            if c.name in failures:
                rows.append([c.name, paths[c.name], "failed", "-", "-", "-", "-", None, "-"])
                continue
            s = stats[c.name]
            rows.append([c.name, paths[c.name], 1000 * s["median_s"], pct(s["spread"]), ratio_text(s),
                         1000 * s["min_s"], min_ratio_text(s), s["gflops"], pct(s["fraction_of_peak"])])
        for c in (peak, step_gemm):
            s = stats[c.name]
            rows.append([c.name, "torch.mm", 1000 * s["median_s"], pct(s["spread"]), "-", 1000 * s["min_s"], "-",
                         s["gflops"], pct(s["fraction_of_peak"])])
        title = (f"cells: training step (forward + backward), B={B} T={T} input={I} H={H}, "
                 f"{opts.threads} threads, median of {opts.repeats} interleaved repeats")
        notes = [f"ms = median; ratio = median / median of {REFERENCE} (IQR of per-round ratios in brackets); "
                 "spread = IQR/median of the times; min = fastest sample; GFLOP/s and peak from medians",
                 "GFLOP/s counts the matmul FLOPs only: forward 2·T·B·(I+H)·G·H, backward 2x forward; "
                 f"peak = median {peak.name} GFLOP/s measured in the same rounds"]
        notes += [f"{name} failed: {error}" for name, error in failures.items()]
        tables.append(table(title, ["cell", "path", "ms", "spread", "ratio (IQR)", "min ms", "ratio of min",
                                    "GFLOP/s", "of peak"],
                            rows, notes))
        results.append({"B": B, "T": T, "input": I, "hidden": H, "paths": paths, "failures": failures,
                        "peak_gflops": peak_flops / 1e9, "stats": stats})

    # Peak memory of one training step at the first (T=500) size, each cell after a warm-up step.
    B, T, I, H = configs[0]
    memory, rows = {}, []
    for v in VARIANTS:
        step, path, _ = training_step(v, B, T, I, H)
        try:
            step()
        except Exception as error:
            memory[v.name] = {"error": f"{type(error).__name__}: {error}"}
            rows.append([v.name, path, "failed", "failed"])
            continue
        tensors = allocator_peak(step)
        rss = rss_peak_increase(step)
        memory[v.name] = {"tensor_peak_bytes": tensors, "rss_peak_increase_bytes": rss}
        rows.append([v.name, path, None if tensors is None else tensors / 2**20, None if rss is None else rss / 2**20])
    tables.append(table(
        f"cells: peak memory of one training step, B={B} T={T} input={I} H={H} (MiB)",
        ["cell", "path", "tensor peak", "RSS peak increase"], rows,
        ["tensor peak: torch's CPU allocator, the most bytes allocated during the step and live at once "
         "(torch.profiler profile_memory, 'Total Allocated'): saved activations, gradients, workspaces",
         "RSS peak increase: the process's resident high-water mark during the step above its resident size "
         "just before it (freed heap trimmed, VmHWM reset via /proc/self/clear_refs)"]))
    return {"configs": results, "memory": {"B": B, "T": T, "input": I, "hidden": H, "cells": memory},
            "tables": tables}
