"""The training loop, explicit and readable top to bottom (as pytorch/examples word_language_model):
draw a batch, carry (detached) state for stateful tasks, forward, loss, backward, measure gradients,
clip, step; log, evaluate, profile and checkpoint at their cadences.

The loop talks to a task through `rnnbench.tasks.base.Task` and to a model through `forward(inputs, lengths,
state, probes)`; results go to the sinks it is given (the run folder first, W&B as a mirror).

Resume is exact: `state_dict()` holds everything the next step depends on (model, optimiser,
scheduler, the task's data order, the carried state, the results so far and every random generator),
so a run restored with `load_state_dict` at step k goes on bit for bit as the run that never stopped.
A non-finite loss or gradient ends the run as `diverged` (a result, not a crash) unless the
`skip_nonfinite` guard rail is on.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from rnnbench.modules.diagnostics import gradient_norms, temporal_profile
from rnnbench.modules.recurrent import detach_state
from rnnbench.records import run_folder
from rnnbench.run.checkpoint import restore_rng_states, rng_states
from rnnbench.tasks.base import Batch, Task

log = logging.getLogger("rnnbench")


class Sink(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...
    def log_profile(self, step: int, profile: dict) -> None: ...


class RecorderSink:
    """Trainer sink writing the run folder."""

    def __init__(self, recorder: run_folder.RunRecorder):
        self.recorder = recorder

    def log(self, row: dict[str, Any]) -> None:
        self.recorder.log(row)

    def log_profile(self, step: int, profile: dict) -> None:
        self.recorder.write_profile(profile)


# Checkpoints at evaluations take at most this share of the time: one is skipped while the last was
# written less than (its write time / this) ago (tiny models evaluating often; fsync costs ~10 ms).
CHECKPOINT_TIME_SHARE = 0.01

CLIP_MODES = ("norm", "value", "off")  # clip the global norm, each gradient entry, or nothing
LENGTH_EVALS = ("end", "eval")  # evaluate at the task's eval_lengths at the end, or at every evaluation


@dataclass
class TrainSettings:
    """The trainer's settings; their defaults are the config's (`run.config.TrainConf` is generated
    from them)."""

    ALLOWED: ClassVar[dict[str, tuple[str, ...]]] = {"clip_mode": CLIP_MODES, "length_eval": LENGTH_EVALS}

    max_steps: int = 2000
    clip: float = 1.0
    clip_mode: str = "norm"  # norm | value | off
    log_every: int = 50
    eval_every: int = 250
    profile_every: int = 500
    early_stop: bool = False
    max_minutes: float | None = None  # wall-clock budget; runs stopped by it are not bit-reproducible
    progress: bool = True  # a bar where stdout is a terminal, else a log line every progress_every_s
    progress_every_s: float = 30.0
    length_eval: str = "end"  # end | eval: when to evaluate at the task's eval_lengths
    gate_stats: bool = True  # gate saturation statistics with each temporal profile (gated cells)
    checkpoint_every: int = 0  # every N steps (0: none by step count; the ones below still come)
    # A checkpoint once this many minutes have passed since the last one (0: none by the clock), and
    # one at every evaluation: a crash or `kill -9` loses minutes, not the run (cost: docs/reliability.md)
    checkpoint_minutes: float = 5.0
    checkpoint_at_eval: bool = True
    skip_nonfinite: int = 0  # guard rail: skip up to this many non-finite steps instead of diverging
    lr_backoff: float = 1.0  # guard rail: multiply the learning rate by this at each skipped step


@dataclass
class TrainResult:
    status: str = "running"  # completed | diverged | stopped (by a signal, after checkpointing)
    steps: int = 0
    diverged_at: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    best_step: dict[str, int] = field(default_factory=dict)
    train_time_s: float = 0.0
    sequence_steps: int = 0
    solved_at: int | None = None
    skipped_steps: list[int] = field(default_factory=list)  # non-finite steps skipped (guard rail)
    elapsed_s: float = 0.0  # wall time inside fit(), all segments of a resumed run together

    @property
    def throughput(self) -> float:
        """Sequence steps (time steps × sequences) processed per second of training."""
        return self.sequence_steps / self.train_time_s if self.train_time_s > 0 else 0.0


def evaluate_model(model: nn.Module, task: Task, split: str = "val") -> dict[str, float]:
    """The task's metrics over a whole split: the model in eval mode (no dropout), no gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return task.evaluate(lambda batch, state: model(batch.inputs, batch.lengths, detach_state(state)),
                                 split)
    finally:
        model.train(was_training)


def length_key(split: str, seq_len: int, metric: str) -> str:
    """`val@T=400/loss`: a metric at a length other than the training one (length generalisation)."""
    return f"{split}@T={seq_len}/{metric}"


def _higher_is_better(metric: str, task: Task) -> bool:
    if metric == task.main_metric:
        return task.main_metric_mode == "max"
    return run_folder.metric_mode(metric) == "max"


class Trainer:
    def __init__(self, model: nn.Module, task: Task, optimizer: torch.optim.Optimizer,
                 scheduler: Any, settings: TrainSettings, sinks: list[Sink],
                 on_step: Callable[[int], None] | None = None,
                 checkpoint: Callable[[dict[str, Any]], Any] | None = None,
                 stop_requested: Callable[[], bool] | None = None,
                 save_best: Callable[[int], Any] | None = None):
        """`checkpoint(state_dict)` writes a checkpoint (every `checkpoint_every` steps, every
        `checkpoint_minutes`, at evaluations with `checkpoint_at_eval`, at the end, and when
        `stop_requested()` turns true: then the run stops after the current step).
        `save_best(step)` keeps the model of an evaluation that improved the main metric."""
        self.model = model
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.s = settings
        self.sinks = sinks
        self.on_step = on_step
        self.checkpoint = checkpoint
        self.stop_requested = stop_requested or (lambda: False)
        self.save_best = save_best
        self.result = TrainResult()
        self.step = 0
        self.state = None  # carried recurrent state for stateful tasks (truncated BPTT)
        self._saved_step: int | None = None  # step of the last checkpoint written or loaded
        self._saved_clock = time.perf_counter()  # when it was written (or training started)
        self._saving_s = 0.0  # how long it took to write
        self._length_tasks: dict[int, Task] | None = None  # the task at each of its eval_lengths

    # ------------------------------------------------------------------------------------------
    def evaluate(self, split: str = "val") -> dict[str, float]:
        return evaluate_model(self.model, self.task, split)

    def evaluate_lengths(self, split: str = "val") -> dict[str, float]:
        """Length generalisation: the metrics at each of the task's `eval_lengths` (its splits drawn
        once per length and kept), as `val@T=<length>/<metric>`."""
        if self._length_tasks is None:
            self._length_tasks = {T: self.task.at_length(T) for T in self.task.eval_lengths}
        return {length_key(split, T, k): v for T, task in self._length_tasks.items()
                for k, v in evaluate_model(self.model, task, split).items()}

    def _emit(self, row: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(row)

    def _track_best(self, metrics: dict[str, float], step: int) -> set[str]:
        """Update the best values; returns the names (`val/<metric>`) that improved."""
        improved = set()
        for key, value in metrics.items():
            name = f"val/{key}"
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            better = _higher_is_better(key, self.task)
            old = self.result.best.get(name)
            if old is None or (value > old if better else value < old):
                self.result.best[name] = value
                self.result.best_step[name] = step
                improved.add(name)
        return improved

    # ------------------------------------------------------------------------------------------
    def train_step(self, measure_groups: bool = False) -> tuple[Any, dict[str, Any], Any, Batch]:
        """One optimisation step up to (not including) `optimizer.step()`. Gradient norms are taken
        before clipping; per-group norms only when `measure_groups` (they cost a pass over .grad)."""
        batch = self.task.train_batch()
        if self.task.spec.stateful:
            self.state = None if batch.reset_state else detach_state(self.state)
            carry = getattr(batch, "state_carry_steps", None)
            if carry:  # truncated BPTT with k1 < k2: windows overlap, the next starts k1 steps on
                head, mid_state = self.model(batch.inputs[:carry], None, self.state)
                tail, _ = self.model(batch.inputs[carry:], None, mid_state)
                outputs, self.state = torch.cat([head, tail]), mid_state
            else:
                outputs, self.state = self.model(batch.inputs, batch.lengths, self.state)
        else:
            outputs, _ = self.model(batch.inputs, batch.lengths)
        loss = self.task.loss(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads: dict[str, Any] = {}
        if measure_groups:
            grads.update({f"grad/{k}": v for k, v in gradient_norms(self.model).items()})
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.s.clip_mode == "norm" and self.s.clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.s.clip)
            grads["grad/global_norm"] = norm
            grads["grad/global_norm_clipped"] = norm.clamp(max=self.s.clip)
        else:
            if self.s.clip_mode == "value" and self.s.clip > 0:
                # the norm before clipping is wanted too: measure, then clip element-wise
                grads["grad/global_norm"] = torch.nn.utils.get_total_norm([p.grad for p in params])
                torch.nn.utils.clip_grad_value_(params, self.s.clip)
                grads["grad/global_norm_clipped"] = torch.nn.utils.get_total_norm([p.grad for p in params])
            else:
                grads["grad/global_norm"] = torch.nn.utils.get_total_norm([p.grad for p in params])
                grads["grad/global_norm_clipped"] = grads["grad/global_norm"]
        return loss, grads, outputs, batch

    def fit(self) -> TrainResult:
        s, r = self.s, self.result
        self.model.train()
        progress = _progress(s, self.step)
        started = time.perf_counter() - r.elapsed_s  # a resumed run's clock goes on
        last_metric = ""  # the main validation metric at the last evaluation, for the progress display
        if s.profile_every and self.step == 0:
            self.profile(0)  # the gradient picture at initialisation, before any update shapes it
        try:
            while self.step < s.max_steps:
                t0 = time.perf_counter()
                step = self.step + 1
                # a wall-clock budget (comparisons at equal time) ends the run like max_steps does
                out_of_time = s.max_minutes is not None and time.perf_counter() - started >= 60 * s.max_minutes
                last = step == s.max_steps or out_of_time
                logging = step % s.log_every == 0 or last
                loss, grads, outputs, batch = self.train_step(measure_groups=logging)
                self.step = step
                loss_value = float(loss.detach())  # one sync per step: divergence is checked every step
                norm_value = float(grads["grad/global_norm"])
                if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                    if len(r.skipped_steps) < s.skip_nonfinite:
                        self._skip_step(step, loss_value, norm_value)
                        continue
                    r.status, r.diverged_at = "diverged", step
                    self._emit({"step": step, "train/loss": loss_value, "grad/global_norm": norm_value,
                                "diverged": True})
                    break
                self.optimizer.step()
                if self.scheduler is not None and not self.plateau:
                    self.scheduler.step()
                r.sequence_steps += batch.num_steps
                r.train_time_s += time.perf_counter() - t0
                r.steps = step
                row: dict[str, Any] = {}  # one row per step: train, gradient and val keys together
                if logging:
                    with torch.no_grad():
                        metrics = self.task.batch_metrics(outputs.detach(), batch)
                    row.update({"lr": self.optimizer.param_groups[0]["lr"], "throughput": r.throughput})
                    row.update({f"train/{k}": v for k, v in metrics.items()})
                    row.update({k: float(v) for k, v in grads.items()})
                evaluating = step % s.eval_every == 0 or last
                if evaluating:
                    metrics = self.evaluate("val")
                    r.final = {f"val/{k}": v for k, v in metrics.items()}
                    if self.task.eval_lengths and (last or s.length_eval == "eval"):
                        r.final.update(self.evaluate_lengths("val"))
                    improved = self._track_best(metrics, step)
                    if self.save_best is not None and f"val/{self.task.main_metric}" in improved:
                        self.save_best(step)
                    row.update(r.final)
                    if self.plateau:
                        self.scheduler.step(metrics["loss"])
                    main = metrics.get(self.task.main_metric)
                    last_metric = f"val/{self.task.main_metric}={main:.4g} (step {step})" if main is not None else ""
                    if self.task.solved(metrics) and r.solved_at is None:
                        r.solved_at = step
                if s.profile_every and (step % s.profile_every == 0 or last):
                    self.profile(step)
                r.elapsed_s = time.perf_counter() - started
                if row:
                    self._emit({"step": step, "time_s": r.elapsed_s, **row})
                # The checkpoint closes the step: a run resumed from it starts at step + 1.
                stopping = self.stop_requested()
                if stopping or self._checkpoint_due(step, evaluating):
                    self.save_checkpoint()
                if self.on_step is not None:
                    self.on_step(step)
                if progress is not None:
                    progress.update(step, loss_value, last_metric)
                if stopping:
                    r.status = run_folder.STOPPED
                    break
                if out_of_time or (s.early_stop and r.solved_at is not None):
                    break
        finally:
            if progress is not None:
                progress.close()
        if r.status == "running":
            r.status = "completed"
            self.save_checkpoint()  # the final one (a no-op if this step's is written already)
        return r

    def _skip_step(self, step: int, loss_value: float, norm_value: float) -> None:
        """Guard rail (`skip_nonfinite`): no update for this step; the carried state, which the
        non-finite forward may have poisoned, restarts from zeros; the learning rate backs off."""
        self.result.skipped_steps.append(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.state = None
        for group in self.optimizer.param_groups:
            group["lr"] *= self.s.lr_backoff
        self._emit({"step": step, "train/loss": loss_value, "grad/global_norm": norm_value,
                    "skipped_nonfinite": True, "lr": self.optimizer.param_groups[0]["lr"]})

    # ------------------------------------------------------------------------------------------
    def _checkpoint_due(self, step: int, evaluated: bool) -> bool:
        s, since = self.s, time.perf_counter() - self._saved_clock
        return bool((s.checkpoint_every and step % s.checkpoint_every == 0)
                    or (s.checkpoint_at_eval and evaluated and since * CHECKPOINT_TIME_SHARE >= self._saving_s)
                    or (s.checkpoint_minutes and since >= 60 * s.checkpoint_minutes))

    def save_checkpoint(self) -> None:
        if self.checkpoint is not None and self._saved_step != self.step:
            start = time.perf_counter()
            self.checkpoint(self.state_dict())
            self._saved_step = self.step
            self._saved_clock = time.perf_counter()
            self._saving_s = self._saved_clock - start

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on, as plain containers and tensors."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "task": self.task.state_dict(),
            "carried_state": detach_state(self.state),  # stateful tasks: the state entering step + 1
            "result": dataclasses.asdict(self.result),
            "rng": rng_states(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`: the next step is `state["step"] + 1`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.task.load_state_dict(state["task"])
        self.state = state["carried_state"]
        self.result = TrainResult(**state["result"])
        self.step = self._saved_step = int(state["step"])
        restore_rng_states(state["rng"])

    def profile(self, step: int) -> dict:
        profile = temporal_profile(self.model, self.task.loss, self.task.probe_batch(), self.s.gate_stats)
        profile["step"] = step
        for sink in self.sinks:
            sink.log_profile(step, profile)
        return profile


def _progress(settings: TrainSettings, initial: int) -> ProgressBar | ProgressLines | None:
    """A bar where stdout is a terminal; log lines elsewhere (SLURM, nohup, CI), where tqdm draws nothing
    and the log (stdout and the run folder's app.log) would otherwise stay silent until the end."""
    if not settings.progress:
        return None
    if sys.stdout.isatty():
        return ProgressBar(settings.max_steps, initial)
    return ProgressLines(settings.max_steps, initial, settings.progress_every_s)


class ProgressBar:
    def __init__(self, total: int, initial: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, leave=False,
                        disable=None)  # None: off when stderr, where it draws, is not a terminal either

    def update(self, step: int, loss: float, last_metric: str) -> None:
        self.bar.set_postfix_str(f"loss={loss:.4g} {last_metric}", refresh=False)
        self.bar.update(1)  # redraws at most every 0.1 s

    def close(self) -> None:
        self.bar.close()


class ProgressLines:
    """One log line every `every_s` seconds of training:
    ``step 1200/2000 (60%), loss 0.0123, val/loss=0.02 (step 1000), 41.3 steps/s, ETA 19 s``.
    By the clock, not by a share of the steps: the first line comes within `every_s` however long the
    run, and a long run's log grows by a line per `every_s` (30 s: 120 lines an hour), not by 1% of it."""

    def __init__(self, total: int, initial: int, every_s: float):
        self.total, self.initial, self.every_s = total, initial, every_s
        self.started = self.last = time.perf_counter()

    def update(self, step: int, loss: float, last_metric: str) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = (step - self.initial) / (now - self.started)
        log.info("step %d/%d (%.0f%%), loss %.4g%s, %.3g steps/s, ETA %s", step, self.total, 100 * step / self.total,
                 loss, f", {last_metric}" if last_metric else "", rate, duration((self.total - step) / rate))

    def close(self) -> None:
        pass


def duration(seconds: float) -> str:
    """`2 h 05 min`, `3 min 20 s`, `12 s`."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
