"""Suite `overhead`: an rnnbench training step through `Trainer.fit` vs a minimal hand-written loop.

Both run the same model object, optimiser (Adam) and task (its batches drawn from the same generator), and
do the same computation per step: batch, forward, loss, backward, clip the global norm at 1, Adam step.
The Trainer adds what the framework does at its default cadence: divergence check every step, the
scheduler (constant), gradient norms per parameter group, batch metrics and a metrics.jsonl row every 50
steps into a run folder. The hand loop keeps the loss every 50 steps. Evaluation and temporal profiles
are not training steps: evaluation happens outside the timed window (the last step of each `fit` call)
and profiles are off here (their cost is the `diagnostics` suite).

Timing: blocks of 50 steps, interleaved Trainer, hand loop, Trainer, ... Each block runs 52 steps and the
clock covers steps 2..51 (the first step of a `fit` call and the last, which evaluates, are outside), so
every timed window holds exactly one logging step, as the default cadence does.

Checkpoints are not in those windows either: a run writes one at every evaluation and every few minutes
(`train.checkpoint_at_eval`, `train.checkpoint_minutes`), and the suite times one as a run writes it and
gives its share of training time at that cadence.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
import torch.nn.functional as F  # noqa: F401  (the hand loop is written the way a user would)

from rnnbench.bench.experiment import build, training_flops
from rnnbench.bench.measure import Case, matmul_case, pct, peak_rate, quartiles, ratio_text, summarise, table
from rnnbench.run import checkpoint
from rnnbench.run.train import CHECKPOINT_TIME_SHARE, TrainSettings

BLOCK = 50  # the default log_every: one logging step per timed block
CONFIGS = {  # name: overrides (cell lstm, optim adam, schedule constant: the config's defaults)
    "adding T=50 H=64 (quickstart)": ["task=adding", "task.seq_len=50", "model.hidden_size=64"],
    "adding T=200 H=128": ["task=adding", "task.seq_len=200", "model.hidden_size=128"],
}
QUICK = {"adding T=12 H=8": ["task=adding", "task.seq_len=12", "model.hidden_size=8"]}
COMMON = ["train.batch_size=64", "task.val_size=64"]


class TrainerBlocks:
    """`fit` continued BLOCK + 2 steps at a time; returns seconds per step over the middle BLOCK steps."""

    def __init__(self, exp, run_dir: Path):
        self.stamps: dict[int, float] = {}
        self.trainer, self.recorder = exp.trainer(run_dir, max_steps=0, eval_every=10**9, profile_every=0,
                                                  on_step=self._stamp)

    def _stamp(self, step: int) -> None:
        self.stamps[step] = time.perf_counter()

    def __call__(self) -> float:
        first = self.trainer.step
        self.trainer.s.max_steps = first + BLOCK + 2
        self.trainer.fit()
        return (self.stamps[first + BLOCK + 1] - self.stamps[first + 1]) / BLOCK


class HandLoopBlocks:
    """The loop a user would write for the same computation; same timing window as `TrainerBlocks`."""

    def __init__(self, exp):
        self.model, self.task, self.optimizer = exp.model, exp.task, exp.optimizer
        self.losses: list[float] = []
        self.step = 0

    def __call__(self) -> float:
        model, task, optimizer = self.model, self.task, self.optimizer
        stamps = []
        for _ in range(BLOCK + 2):
            batch = task.train_batch()
            outputs, _ = model(batch.inputs)                                   # (B, 1)
            loss = F.mse_loss(outputs, batch.targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            self.step += 1
            if self.step % BLOCK == 0:
                self.losses.append(loss.item())
            stamps.append(time.perf_counter())
        return (stamps[BLOCK] - stamps[0]) / BLOCK


def checkpoint_cost(exp, run_dir: Path, repeats: int) -> dict:
    """One checkpoint as a run writes it (the Trainer's whole state through `checkpoint.save`: torch.save,
    fsync, rename, the older ones removed), timed `repeats` times; its share of training time at the
    default cadence: at every evaluation and once every `train.checkpoint_minutes`."""
    trainer, recorder = exp.trainer(run_dir, max_steps=2, eval_every=10**9, profile_every=0)
    trainer.fit()  # optimiser state exists, as in any checkpoint after the first step
    recorder.close()
    config = OmegaConf.to_container(exp.cfg, resolve=True)
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        path = checkpoint.save(run_dir, {"step": i, "config_fingerprint": "-", "config": config,
                                         "trainer": trainer.state_dict()})
        seconds.append(time.perf_counter() - start)
    return {"median_s": quartiles(seconds)[1], "bytes": path.stat().st_size, "samples": seconds}


def _checkpoint_table(rows: list[list], settings: TrainSettings) -> dict:
    return table(
        "overhead: checkpoints at the default cadence (at every evaluation, and every "
        f"{settings.checkpoint_minutes:g} min), share of training time",
        ["config", "KiB", "ms/checkpoint", "ms/step", "eval_every", "every evaluation", "as run", "by the clock"],
        rows,
        ["every evaluation = ms/checkpoint / (eval_every x ms/step of Trainer.fit); as run: the trainer skips an "
         f"evaluation's checkpoint that would take more than {pct(CHECKPOINT_TIME_SHARE)} of the time since the last",
         f"by the clock = ms/checkpoint / {settings.checkpoint_minutes:g} min (target: each <= 1%)"])


def profile_trainer(exp, run_dir: Path, steps: int, top: int = 12) -> tuple[dict, list[dict]]:
    """cProfile of `Trainer.fit` over `steps` steps (no evaluation or profile inside): the top functions
    by own time, and the calls made by `fit` and `train_step` themselves by cumulative time."""
    trainer, recorder = exp.trainer(run_dir, max_steps=steps, eval_every=10**9, profile_every=0)
    profiler = cProfile.Profile()
    profiler.enable()
    trainer.fit()
    profiler.disable()
    recorder.close()
    profile = pstats.Stats(profiler, stream=io.StringIO())
    profile.calc_callees()
    stats = profile.stats
    total = max(v[3] for v in stats.values())  # cumulative time of the outermost call

    def name(path, line, func):
        return f"{Path(path).parent.name}/{Path(path).name}:{line}({func})" if line else func

    def rows(items, caller=""):
        out = []
        for (path, line, func), (_, calls, own, cum, *_) in items[:top]:
            out.append({"function": caller + name(path, line, func), "calls": calls,
                        "own_ms_per_step": 1000 * own / steps, "cum_ms_per_step": 1000 * cum / steps,
                        "own_share": own / total, "cum_share": cum / total})
        return out

    by_own = rows(sorted(stats.items(), key=lambda kv: -kv[1][2]))
    # what the Trainer's own two functions call, each callee's time: where a step goes
    callees = []
    for key in stats:
        if key[0].endswith(("rnnbench/run/train.py", "rnnbench\\train.py")) and key[2] in ("fit", "train_step"):
            callees += rows(sorted(profile.all_callees[key].items(), key=lambda kv: -kv[1][3]), f"{key[2]} -> ")
    callees.sort(key=lambda r: -r["cum_ms_per_step"])
    return {"steps": steps, "total_s": total, "top_own": by_own, "trainer_callees": callees}, [by_own, callees]


def _profile_table(title: str, rows: list[dict]) -> dict:
    return table(title, ["function", "calls", "own ms/step", "cum ms/step", "own share", "cum share"],
                 [[r["function"], r["calls"], r["own_ms_per_step"], r["cum_ms_per_step"], pct(r["own_share"]),
                   pct(r["cum_share"])] for r in rows],
                 ["cProfile slows Python-heavy code; read shares, not absolute times"])


def run(opts) -> dict:
    configs = QUICK if opts.quick else CONFIGS
    repeats = opts.repeats if opts.quick else max(opts.repeats, 10)
    results, tables, checkpoint_rows = {}, [], []
    with tempfile.TemporaryDirectory(prefix="rnnbench-bench-") as tmp:
        for i, (name, overrides) in enumerate(configs.items()):
            exp = build(overrides + COMMON)
            T, B = exp.cfg.task.seq_len, exp.cfg.train.batch_size
            flops = training_flops(exp, T, B)
            trainer_blocks = TrainerBlocks(exp, Path(tmp) / f"run{i}")
            cases = [Case("hand-written loop", HandLoopBlocks(exp), flops),
                     Case("Trainer.fit", trainer_blocks, flops)]
            peak = matmul_case(256 if opts.quick else 2048)
            samples = interleaved_self_timed(cases, repeats, peak)
            peak_flops = peak_rate(samples, peak)
            stats = summarise({c.name: samples[c.name] for c in cases}, "hand-written loop",
                              {c.name: c.flops for c in cases}, peak_flops)
            trainer_blocks.recorder.close()
            saving = checkpoint_cost(exp, Path(tmp) / f"checkpoints{i}", repeats)
            step_s, eval_every = stats["Trainer.fit"]["median_s"], exp.cfg.train.eval_every
            saving["share_at_evaluations"] = saving["median_s"] / (eval_every * step_s)
            saving["share_as_run"] = min(saving["share_at_evaluations"], CHECKPOINT_TIME_SHARE)
            saving["share_by_the_clock"] = saving["median_s"] / (60 * exp.cfg.train.checkpoint_minutes)
            checkpoint_rows.append([name, saving["bytes"] / 1024, 1000 * saving["median_s"], 1000 * step_s, eval_every,
                                    *(f"{100 * saving[k]:.2g}%" for k in ("share_at_evaluations", "share_as_run",
                                                                          "share_by_the_clock"))])
            results[name] = {"overrides": overrides + COMMON, "stats": stats, "peak_gflops": peak_flops / 1e9,
                             "checkpoint": saving}
            rows = [[c.name, 1000 * stats[c.name]["median_s"], pct(stats[c.name]["spread"]),
                     ratio_text(stats[c.name]), stats[c.name]["gflops"], pct(stats[c.name]["fraction_of_peak"])]
                    for c in cases]
            tables.append(table(
                f"overhead: one training step, {name}, LSTM B={B}, Adam, clip 1.0, {opts.threads} threads, "
                f"median of {repeats} interleaved blocks of {BLOCK} steps",
                ["loop", "ms/step", "spread", "ratio (IQR)", "GFLOP/s", "of peak"], rows,
                ["ratio = Trainer / hand-written loop, both in the same run (target <= 1.03)",
                 f"peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s (median, same rounds)"]))
        tables.append(_checkpoint_table(checkpoint_rows, TrainSettings()))
        # where a Trainer step goes: the small config, where any overhead shows most
        name, overrides = next(iter(configs.items()))
        exp = build(overrides + COMMON)
        steps = 20 if opts.quick else 500
        prof, (by_own, by_cum) = profile_trainer(exp, Path(tmp) / "profile", steps)
        results["profile"] = {"config": name, **prof}
        tables.append(_profile_table(f"overhead: cProfile of Trainer.fit, {name}, {steps} steps: top by own time",
                                     by_own))
        tables.append(_profile_table(f"overhead: cProfile of Trainer.fit, {name}, {steps} steps: what fit and "
                                     f"train_step call, by cumulative time", by_cum))
    return {"configs": results, "tables": tables}


def interleaved_self_timed(cases: list[Case], repeats: int, peak: Case) -> dict[str, list[float]]:
    """Like `measure.interleaved`, for cases whose `run()` returns its own seconds per step; the matmul
    peak is sampled in the same rounds."""
    for case in cases:  # warm-up
        case.run()
    samples = {c.name: [] for c in cases}
    samples[peak.name] = []
    peak.run()
    for _ in range(repeats):
        for case in cases:
            samples[case.name].append(case.run())
        start = time.perf_counter()
        peak.run()
        samples[peak.name].append(time.perf_counter() - start)
    return samples
