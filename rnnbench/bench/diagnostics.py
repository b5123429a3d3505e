"""Suite `diagnostics`: the cost of the default diagnostics cadence as a fraction of training.

Per training step the Trainer adds, on average, one per-group gradient-norm pass every `log_every` (50)
steps and one temporal profile ‖∂L/∂h_t‖ (explicit path, probe batch = the first validation batch) every
`profile_every` (500) steps, with the gate statistics of gated cells taken on its forward pass. Each is
timed on its own (the profile with and without the gate statistics too), interleaved in the same rounds:

    fraction = (t_gradient_norms / log_every + t_temporal_profile / profile_every) / t_training_step

where the training step is `Trainer.train_step` without group norms + `optimizer.step()` (what every
step does). Models as the app builds them (adding task, B=64, one layer, backend auto).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rnnbench.bench.experiment import build, training_flops
from rnnbench.bench.measure import Case, interleaved, matmul_case, pct, peak_rate, summarise, table
from rnnbench.modules.diagnostics import gradient_norms, temporal_profile

CELLS = ("lstm", "gru", "peephole", "vanilla")
FULL = ["task=adding", "task.seq_len=200", "model.hidden_size=128", "train.batch_size=64", "task.val_size=64"]
QUICK = ["task=adding", "task.seq_len=12", "model.hidden_size=8", "train.batch_size=8", "task.val_size=8"]


def run(opts) -> dict:
    overrides = QUICK if opts.quick else FULL
    results, rows = {}, []
    peak = matmul_case(256 if opts.quick else 2048)
    all_cases, per_cell = [], {}
    scratch = tempfile.mkdtemp(prefix="rnnbench-bench-")
    for cell in CELLS:
        exp = build(overrides + [f"cell={cell}"])
        trainer, recorder = exp.trainer(Path(scratch) / cell)  # only train_step is used: nothing is written
        recorder.close()
        probe = exp.task.probe_batch()
        T, B = exp.cfg.task.seq_len, exp.cfg.train.batch_size
        s = exp.cfg.train

        def step(trainer=trainer, exp=exp):
            trainer.train_step(measure_groups=False)
            exp.optimizer.step()

        cases = [Case(f"{cell} training step", step, training_flops(exp, T, B)),
                 Case(f"{cell} gradient norms", lambda exp=exp: gradient_norms(exp.model)),
                 Case(f"{cell} temporal profile",
                      lambda exp=exp, probe=probe: temporal_profile(exp.model, exp.task.loss, probe),
                      training_flops(exp, probe.inputs.shape[0], probe.inputs.shape[1])),
                 # the same without the gate statistics it takes by default: what they cost on their own
                 Case(f"{cell} temporal profile without gate statistics",
                      lambda exp=exp, probe=probe: temporal_profile(exp.model, exp.task.loss, probe, gate_stats=False))]
        per_cell[cell] = (exp, cases, s.log_every, s.profile_every,
                          exp.model.stack.layers[0].paths[0])
        all_cases += cases
    samples = interleaved(all_cases + [peak], opts.repeats, opts.min_sample_s)
    shutil.rmtree(scratch, ignore_errors=True)
    peak_flops = peak_rate(samples, peak)
    flops = {c.name: c.flops for c in all_cases}
    stats = summarise({c.name: samples[c.name] for c in all_cases}, None, flops, peak_flops)
    for cell, (exp, cases, log_every, profile_every, path) in per_cell.items():
        t_step, t_norms, t_profile, t_bare = (stats[c.name]["median_s"] for c in cases)
        norms_share = t_norms / log_every / t_step
        profile_share = t_profile / profile_every / t_step
        gates_share = (t_profile - t_bare) / profile_every / t_step
        # per round, the same formula: its spread
        rounds = [(n / log_every + p / profile_every) / st for st, n, p, _ in
                  zip(*(samples[c.name] for c in cases))]
        lo, hi = sorted(rounds)[len(rounds) // 4], sorted(rounds)[(3 * len(rounds)) // 4]
        results[cell] = {"path": path, "log_every": log_every, "profile_every": profile_every,
                         "training_step_s": t_step, "gradient_norms_s": t_norms, "temporal_profile_s": t_profile,
                         "fraction": norms_share + profile_share, "fraction_rounds": rounds,
                         "gradient_norms_fraction": norms_share, "temporal_profile_fraction": profile_share,
                         "temporal_profile_without_gates_s": t_bare, "gate_statistics_fraction": gates_share,
                         "stats": {c.name: stats[c.name] for c in cases}}
        rows.append([cell, path, 1000 * t_step, stats[cases[0].name]["gflops"],
                     pct(stats[cases[0].name]["fraction_of_peak"]), 1000 * t_norms, 1000 * t_profile,
                     stats[cases[2].name]["gflops"], f"{100 * norms_share:.2f}%", f"{100 * profile_share:.2f}%",
                     f"{100 * gates_share:.3f}%",
                     f"{100 * (norms_share + profile_share):.2f}% ({100 * lo:.2f}-{100 * hi:.2f})"])
    cfg = per_cell[CELLS[0]][0].cfg
    title = (f"diagnostics: default cadence (gradient norms every {cfg.train.log_every}, temporal profile every "
             f"{cfg.train.profile_every} steps), adding T={cfg.task.seq_len} B={cfg.train.batch_size} "
             f"H={cfg.model.hidden_size}, {opts.threads} threads, median of {opts.repeats} interleaved repeats")
    t = table(title, ["cell", "train path", "step ms", "GFLOP/s", "of peak", "norms ms", "profile ms",
                      "profile GFLOP/s", "norms", "profile", "of which gates", "total (IQR)"], rows,
              ["norms / profile / total = share of training time at the default cadence (target total <= 5%)",
               "the profile includes the gate statistics of gated cells (train.gate_stats=true, the default); "
               "'of which gates' = (profile - profile without them) / profile_every / step",
               "the profile runs the explicit path (true dL/dh_t) on the probe batch (the first validation batch)",
               f"peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s (median, same rounds)"])
    return {"overrides": overrides, "peak_gflops": peak_flops / 1e9, "cells": results, "tables": [t]}

