"""Suite `denormals`: a training step with and without flushing subnormal floats to zero.

When the loss sits at the end of a long sequence (adding task: the last state only), ∂L/∂h_t shrinks
geometrically going back in time — the vanishing gradient the lecture notes study — and soon reaches the
subnormal range (|x| < 1.18e-38 in float32), where x86 arithmetic is tens of times slower. Whether it
gets there depends on the cell (an LSTM with forget bias 1 keeps its gradient far longer than a GRU or a
tanh RNN). `torch.set_flush_denormal(True)` turns on flush-to-zero / denormals-are-zero for the calling
thread only: torch's OpenMP workers keep the mode they were made with. `flush.set_flush_denormal`
(what the app's `train.flush_denormal` runs) sets it on every thread; both are measured.

Per cell, at initialisation (where the gradient vanishes most; a tanh RNN on adding at T >= 100 stays
there for thousands of steps), on one fixed batch: forward + backward of the app's model with flushing
off (the reference, torch's default) and on, interleaved. Also printed: the share of the entries of
∂L/∂h_t (every t, explicit path) that are subnormal — the mechanism, not just the symptom.
"""

from __future__ import annotations

import torch

from rnnbench.bench.experiment import build, training_flops
from rnnbench.bench.measure import Case, interleaved, matmul_case, pct, peak_rate, ratio_text, summarise, table
from rnnbench.kernels.flush import set_flush_denormal

CELLS = ("lstm", "gru", "peephole", "vanilla")
FULL = ["task=adding", "task.seq_len=200", "model.hidden_size=128", "train.batch_size=64", "task.val_size=64"]
QUICK = ["task=adding", "task.seq_len=12", "model.hidden_size=8", "train.batch_size=8", "task.val_size=8"]
TINY = torch.finfo(torch.float32).tiny  # smallest normal float32, 1.18e-38


def subnormal_share(exp, batch) -> float:
    """Share of the entries of ∂L/∂h_t, all t, that are subnormal (flushing off)."""
    probes: list = []
    outputs, _ = exp.model(batch.inputs, batch.lengths, None, probes)
    grads = torch.autograd.grad(exp.task.loss(outputs, batch), [p for _, p in probes])
    g = torch.cat([x.flatten() for x in grads]).abs()
    return float(((g > 0) & (g < TINY)).float().mean())


# case name suffix -> how flushing is turned on (outside the clock, for each sample; off again after it)
MODES = {"flush off": None, "flush on, calling thread (torch)": torch.set_flush_denormal,
         "flush on, every thread (app)": set_flush_denormal}


def step_with(exp, batch):
    def step():
        exp.model.zero_grad(set_to_none=True)
        outputs, _ = exp.model(batch.inputs, batch.lengths)
        exp.task.loss(outputs, batch).backward()
    return step


def run(opts) -> dict:
    overrides = QUICK if opts.quick else FULL
    peak = matmul_case(256 if opts.quick else 2048)
    cases, info = [], {}
    for cell in CELLS:
        exp = build(overrides + [f"cell={cell}"])
        batch = exp.task.train_batch()
        flops = training_flops(exp, batch.inputs.shape[0], batch.inputs.shape[1])
        info[cell] = {"path": exp.model.stack.layers[0].paths[0], "subnormal_share": subnormal_share(exp, batch)}
        cases += [Case(f"{cell} {mode}", step_with(exp, batch), flops,
                       before=None if set_flush is None else lambda on=set_flush: on(True),
                       after=lambda: set_flush_denormal(False))  # torch's default, every thread
                  for mode, set_flush in MODES.items()]
    samples = interleaved(cases + [peak], opts.repeats, opts.min_sample_s)
    peak_flops = peak_rate(samples, peak)
    rows, results = [], {}
    for cell in CELLS:
        names = [f"{cell} {mode}" for mode in MODES]
        stats = summarise({n: samples[n] for n in names}, names[0], {c.name: c.flops for c in cases}, peak_flops)
        results[cell] = {**info[cell], "stats": stats, "speedup": 1 / stats[names[-1]]["ratio"]}
        for n in names:
            s = stats[n]
            rows.append([n, info[cell]["path"], f"{100 * info[cell]['subnormal_share']:.1f}%" if n == names[0] else "",
                         1000 * s["median_s"], pct(s["spread"]), ratio_text(s), s["gflops"],
                         pct(s["fraction_of_peak"])])
    cfg = build(overrides).cfg
    t = table(f"denormals: forward + backward at initialisation, adding T={cfg.task.seq_len} B={cfg.train.batch_size} "
              f"H={cfg.model.hidden_size} (loss on the last state), {opts.threads} threads, median of "
              f"{opts.repeats} interleaved repeats",
              ["cell, flushing", "path", "subnormal dL/dh", "ms", "spread", "ratio (IQR)",
               "GFLOP/s", "of peak"], rows,
              ["subnormal dL/dh = share of the entries of dL/dh_t (all t) below 1.18e-38 in magnitude, flushing off",
               "ratio = flush on / flush off of the same cell, same run",
               f"peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s (median, same rounds)"])
    set_flush_denormal(False)
    return {"overrides": overrides, "peak_gflops": peak_flops / 1e9, "cells": results, "tables": [t]}
