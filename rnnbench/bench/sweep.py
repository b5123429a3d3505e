"""Suite `sweep`: 2 jobs on the local parallel launcher vs the same 2 jobs one after the other (issue 7).

Each variant is one `python -m rnnbench -m ...` subprocess, timed end to end (Python and torch start-up,
Hydra, the launcher's workers, both jobs, the sweep summary), as a user would run it:

- `sequential` (reference): Hydra's basic launcher, torch's default threads (all cores) per job;
- `parallel`: `hydra/launcher=parallel` (joblib, n_jobs=2), the app gives each worker cores // n_jobs threads;
- `parallel, 2 threads each`: the same with `train.threads=2`, i.e. workers oversubscribing the cores
  (what happens when threads per worker are not set).

Two seeds of one fixed-step adding run (LSTM), so both jobs do the same work. Throughput ratio =
sequential wall time / variant wall time (target >= 1.7 for `parallel`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnbench.bench.measure import matmul_case, pct, quartiles, recurrent_flops, table

FULL = dict(seq_len=100, hidden=128, batch=64, steps=500, val_size=1000)
QUICK = dict(seq_len=10, hidden=8, batch=8, steps=3, val_size=16)
VARIANTS = {"sequential": [], "parallel": ["hydra/launcher=parallel"],
            "parallel, 2 threads each": ["hydra/launcher=parallel", "train.threads=2"]}
REFERENCE = "sequential"


def command(size: dict, sweep_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "rnnbench", "-m", "task=adding", f"task.seq_len={size['seq_len']}",
            f"task.val_size={size['val_size']}", f"model.hidden_size={size['hidden']}",
            f"train.batch_size={size['batch']}", f"train.max_steps={size['steps']}", "train.seed=0,1",
            "logger.wandb.mode=disabled", "logger.progress=false", f"hydra.sweep.dir={sweep_dir}", *extra]


def run_sweep(size: dict, sweep_dir: Path, extra: list[str], cwd: Path) -> dict:
    env = dict(os.environ, WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.run(command(size, sweep_dir, extra), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {extra} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    jobs = []
    for summary in sorted(sweep_dir.rglob("summary.json")):
        s = json.loads(summary.read_text())
        jobs.append({k: s.get(k) for k in ("status", "steps", "threads", "wall_time_s", "train_time_s",
                                           "throughput_steps_per_s")})
    if len(jobs) != 2 or any(j["status"] != "completed" for j in jobs):
        raise RuntimeError(f"sweep {extra}: expected 2 completed jobs, got {jobs}")
    return {"wall_s": wall, "jobs": jobs}


def run(opts) -> dict:
    size = QUICK if opts.quick else FULL
    repeats = min(opts.repeats, 2 if opts.quick else 3)
    peak = matmul_case(256 if opts.quick else 2048)
    flops_per_job = recurrent_flops(size["seq_len"], size["batch"], 2, size["hidden"], 4) * size["steps"]
    samples = {name: [] for name in VARIANTS}
    peaks = []
    with tempfile.TemporaryDirectory(prefix="rnnbench-bench-sweep-") as tmp:
        for r in range(repeats):
            peak.run()
            start = time.perf_counter()
            peak.run()
            peaks.append(peak.flops / (time.perf_counter() - start))
            for i, (name, extra) in enumerate(VARIANTS.items()):
                samples[name].append(run_sweep(size, Path(tmp) / f"r{r}v{i}", extra, Path(tmp)))
    peak_flops = sorted(peaks)[len(peaks) // 2]
    results, rows = {}, []
    ref_walls = [s["wall_s"] for s in samples[REFERENCE]]
    ref_median = quartiles(ref_walls)[1]
    for name, runs in samples.items():
        walls = [s["wall_s"] for s in runs]
        q1, median, q3 = quartiles(walls)
        per_round = [rw / w for rw, w in zip(ref_walls, walls)]
        lo, _, hi = quartiles(per_round)
        train_walls = [max(j["train_time_s"] for j in s["jobs"]) for s in runs]
        threads = sorted({j["threads"] for s in runs for j in s["jobs"]})
        gflops = 2 * flops_per_job / median / 1e9
        results[name] = {"wall_s": walls, "median_wall_s": median, "throughput_ratio": ref_median / median,
                         "throughput_ratio_iqr": [lo, hi], "threads_per_job": threads, "runs": runs,
                         "training_gflops": gflops, "fraction_of_peak": gflops * 1e9 / peak_flops}
        rows.append([name, ",".join(map(str, threads)), median, pct((q3 - q1) / median),
                     f"{ref_median / median:.2f} ({lo:.2f}-{hi:.2f})",
                     quartiles([j["train_time_s"] for s in runs for j in s["jobs"]])[1],
                     quartiles(train_walls)[1], gflops, pct(gflops * 1e9 / peak_flops)])
    title = (f"sweep: 2 jobs (adding T={size['seq_len']} H={size['hidden']} B={size['batch']}, LSTM, "
             f"{size['steps']} steps each), {os.cpu_count()} cores, median of {repeats} interleaved repeats")
    t = table(title, ["launcher", "threads/job", "wall s", "spread", "throughput ratio (IQR)",
                      "train s/job", "longest train s", "GFLOP/s", "of peak"], rows,
              ["wall = the whole `python -m rnnbench -m ...` command; throughput ratio = sequential wall / wall "
               "(target >= 1.7 for parallel)",
               "GFLOP/s = training matmul FLOPs of both jobs / wall (evaluation, profiles and start-up are in "
               f"the wall time but not counted); peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s at "
               f"{opts.threads} threads"])
    return {"size": size, "peak_gflops": peak_flops / 1e9, "variants": results, "tables": [t]}
