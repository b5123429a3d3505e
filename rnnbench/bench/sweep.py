"""Suite `sweep`: 2 jobs on the local parallel launcher vs the same 2 jobs one after the other.

Each variant is one `python -m rnnbench -m ...` subprocess, timed end to end (Python and torch start-up,
Hydra, the launcher's workers, both jobs, the sweep summary), as a user would run it:

- `sequential` (reference): Hydra's basic launcher, torch's default threads (all cores) per job;
- `parallel`: `hydra/launcher=parallel` (joblib, n_jobs=2), the app gives each worker cores // n_jobs threads;
- `parallel, 2 threads each`: the same with `train.threads=2`, i.e. workers oversubscribing the cores
  (what happens when threads per worker are not set).

Two seeds of one fixed-step adding run (LSTM), so both jobs do the same work, at two sizes: the README
quickstart's model (T=50, H=64), where a second thread helps a job little, and T=100, H=128, where it helps
more. The oversubscribed variant runs at the first size only. Throughput ratio = sequential wall time /
variant wall time at the same size (target >= 1.7 for `parallel`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnbench.bench.measure import matmul_case, pct, quartiles, recurrent_flops, table
from rnnbench.records import run_folder

SIZES = {  # two seeds of one fixed-step adding run (LSTM): ~15-30 s per job here
    "quickstart size (T=50 H=64)": dict(seq_len=50, hidden=64, batch=64, steps=2500, val_size=1000),
    "T=100 H=128": dict(seq_len=100, hidden=128, batch=64, steps=500, val_size=1000),
}
QUICK = {"tiny": dict(seq_len=10, hidden=8, batch=8, steps=3, val_size=16)}
VARIANTS = {"sequential": [], "parallel": ["hydra/launcher=parallel"],
            "parallel, 2 threads each": ["hydra/launcher=parallel", "train.threads=2"]}
OVERSUBSCRIBED = "parallel, 2 threads each"  # run at the first size only: it is slow, and it is the point
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
    for summary in sorted(sweep_dir.rglob(run_folder.SUMMARY_FILE)):
        s = run_folder.read_summary(summary.parent)
        jobs.append({k: getattr(s, k) for k in ("status", "steps", "threads", "wall_time_s", "train_time_s",
                                           "throughput_steps_per_s")})
    if len(jobs) != 2 or any(j["status"] != "completed" for j in jobs):
        raise RuntimeError(f"sweep {extra}: expected 2 completed jobs, got {jobs}")
    return {"wall_s": wall, "jobs": jobs}


def run(opts) -> dict:
    sizes = QUICK if opts.quick else SIZES
    repeats = min(opts.repeats, 2 if opts.quick else 3)
    peak = matmul_case(256 if opts.quick else 2048)
    runs = [(size, variant) for n, size in enumerate(sizes) for variant in VARIANTS
            if variant != OVERSUBSCRIBED or n == 0]
    samples = {run: [] for run in runs}
    peaks = []
    with tempfile.TemporaryDirectory(prefix="rnnbench-bench-sweep-") as tmp:
        for r in range(repeats):
            peak.run()
            start = time.perf_counter()
            peak.run()
            peaks.append(peak.flops / (time.perf_counter() - start))
            for i, (size, variant) in enumerate(runs):
                samples[size, variant].append(
                    run_sweep(sizes[size], Path(tmp) / f"r{r}v{i}", VARIANTS[variant], Path(tmp)))
    peak_flops = quartiles(peaks)[1]
    results, rows = {}, []
    for size, variant in runs:
        spec = sizes[size]
        flops_per_job = recurrent_flops(spec["seq_len"], spec["batch"], 2, spec["hidden"], 4) * spec["steps"]
        ref_walls = [s["wall_s"] for s in samples[size, REFERENCE]]
        walls = [s["wall_s"] for s in samples[size, variant]]
        q1, median, q3 = quartiles(walls)
        ref_median = quartiles(ref_walls)[1]
        lo, _, hi = quartiles([rw / w for rw, w in zip(ref_walls, walls)])
        train = quartiles([j["train_time_s"] for s in samples[size, variant] for j in s["jobs"]])[1]
        threads = sorted({j["threads"] for s in samples[size, variant] for j in s["jobs"]})
        gflops = 2 * flops_per_job / median / 1e9
        results[f"{size}: {variant}"] = {
            "size": spec, "variant": variant, "wall_s": walls, "median_wall_s": median,
            "throughput_ratio": ref_median / median, "throughput_ratio_iqr": [lo, hi],
            "throughput_ratio_of_minima": min(ref_walls) / min(walls), "threads_per_job": threads,
            "median_train_s_per_job": train, "runs": samples[size, variant], "training_gflops": gflops,
            "fraction_of_peak": gflops * 1e9 / peak_flops}
        rows.append([size, variant, ",".join(map(str, threads)), median, pct((q3 - q1) / median),
                     f"{ref_median / median:.2f} ({lo:.2f}-{hi:.2f})", min(ref_walls) / min(walls), train,
                     gflops, pct(gflops * 1e9 / peak_flops)])
    title = (f"sweep: 2 jobs (two seeds of one adding run, LSTM, B=64), {os.cpu_count()} cores, "
             f"median of {repeats} interleaved repeats")
    t = table(title, ["size", "launcher", "threads/job", "wall s", "spread", "throughput ratio (IQR)",
                      "ratio of min", "train s/job", "GFLOP/s", "of peak"], rows,
              ["wall = the whole `python -m rnnbench -m ...` command; throughput ratio = sequential wall / wall "
               "at the same size (target >= 1.7 for parallel)",
               "steps per job: " + ", ".join(f"{k} {v['steps']}" for k, v in sizes.items()),
               "GFLOP/s = training matmul FLOPs of both jobs / wall (evaluation, profiles and start-up are in the "
               f"wall time, not counted); peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s at {opts.threads} threads"])
    return {"sizes": sizes, "peak_gflops": peak_flops / 1e9, "variants": results, "tables": [t]}
