"""summary.json's schema: one dataclass, the one place its fields are named, composed and parsed.

`run_folder` writes and reads the file (atomically, JSON with NaN/Inf) through `Summary.to_dict` and
`Summary.from_dict`; every reader (the report, evaluate, sample, the resume plan, the sweep
callbacks) gets a `Summary` and reads attributes, so a renamed field fails where it is used instead
of reading None from a misspelt key.

Versions. Files written before this schema carry no ``version`` and read as version 1 with the fields
they had (every field here has a default, since older runs lack the newer ones: ``git_dirty``,
``machine``, ``train_time_s``...). A field this schema does not know (a newer rnnbench, a branch's own
field, a hand edit) is kept in `extra` and written back unchanged, so reading and rewriting a summary
(a resumed run) never drops what it held. Bump `SUMMARY_VERSION` when a field changes meaning or type,
and teach `from_dict` to read the older form.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from typing import Any

# 1: the untyped dict of rnnbench <= 0.1 (no "version" key); 2: the typed schema; 3: status `stopped`
# (a run stopped by a signal: SIGINT, SIGTERM, SIGUSR2), which version 2 wrote as `running` with `interrupted`
SUMMARY_VERSION = 3

# Statuses written by the trainer, plus the one only readers produce (a `running` run whose process
# is gone).
RUNNING, COMPLETED, FAILED, DIVERGED, STOPPED = "running", "completed", "failed", "diverged", "stopped"
INCOMPLETE = "incomplete"


@dataclasses.dataclass
class Summary:
    """One run's status, identity, provenance and results (docs/architecture.md, "Run folder")."""

    version: int = SUMMARY_VERSION
    status: str = INCOMPLETE  # running | completed | failed | diverged | stopped (| incomplete, read only)
    error: str | None = None  # "ExceptionType: message" of a failed run
    traceback: str | None = None  # of a job that failed before the app started it (run.callbacks)
    diverged_at: int | None = None
    # what runs
    task: str | None = None
    cell: str | None = None  # the config group's choice, e.g. "lstm"
    arch: str | None = None
    seed: int | None = None
    hidden_size: int | None = None  # as built (model.param_budget resolves to it)
    num_params: int | None = None
    # like with like: effective parameters drop the classic cells' redundant second bias (modules/models.py)
    num_params_effective: int | None = None
    param_count: str | None = None  # model.param_count: what a parameter budget counts ("total" / "effective")
    state_size: int | None = None  # floats carried per sequence between steps, all layers
    time_reduction: int | None = None
    main_metric: str | None = None  # "val/<metric>"
    main_metric_mode: str | None = None  # "min" | "max"
    memoryless_baseline: float | None = None  # the task's loss without memory (tasks/*.py)
    task_info: dict[str, Any] | None = None  # `Task.describe()`
    overrides: list[str] = dataclasses.field(default_factory=list)
    config_fingerprint: str | None = None
    # where and how it runs
    device: str | None = None
    threads: int | None = None
    flush_denormal: bool | None = None
    versions: dict[str, str | None] | None = None  # `run_folder.run_metadata`
    git_commit: str | None = None
    git_dirty: bool | None = None
    machine: dict[str, Any] | None = None
    guard_rails: dict[str, Any] | None = None  # train.skip_nonfinite / lr_backoff, when on
    resumed: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"from_step", "checkpoint"}
    wandb: dict[str, Any] | None = None  # {"mode", "id", "dir"}
    # results
    steps: int | None = None
    final: dict[str, float] = dataclasses.field(default_factory=dict)  # metric -> last evaluation
    best: dict[str, float] = dataclasses.field(default_factory=dict)
    best_step: dict[str, int] = dataclasses.field(default_factory=dict)
    test: dict[str, float] = dataclasses.field(default_factory=dict)  # "test/<metric>", once at the end
    solved_at: int | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    throughput_steps_per_s: float | None = None
    # a stopped run: {"signal": "SIGINT", "step": the last step run, "checkpoint": the file a resume
    # continues from (None: none yet), "at_once": true when a second Ctrl-C stopped it mid-step}
    interrupted: dict[str, Any] | None = None
    # the writing process: a `running` run whose process is gone reads as incomplete
    hostname: str | None = None
    pid: int | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields this schema does not know

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """A summary.json's object, of any version; unknown fields go to `extra`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"summary.json holds a {type(data).__name__}, not an object")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        known.setdefault("version", 1)  # written before the schema had a version
        # Older files wrote null for an empty section (e.g. "final" of a run failed at setup).
        for name in ("overrides", "resumed", "final", "best", "best_step", "test"):
            if known.get(name) is None:
                known.pop(name, None)
        if known["version"] < 3 and known.get("status") == RUNNING and known.get("interrupted"):
            known["status"] = STOPPED  # version 2 left a stopped run `running`, its `interrupted` set
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to summary.json: the fields in order, then the unknown ones."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["version"] = SUMMARY_VERSION if self.version < SUMMARY_VERSION else self.version
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    def record_result(self, result: Any, wall_time_s: float) -> None:
        """Take the trainer's result (`run.train.TrainResult`: completed, diverged or stopped)."""
        self.status = result.status
        self.diverged_at, self.steps, self.solved_at = result.diverged_at, result.steps, result.solved_at
        self.final, self.best, self.best_step = result.final, result.best, result.best_step
        self.wall_time_s, self.train_time_s = wall_time_s, result.train_time_s
        self.throughput_steps_per_s = result.throughput
        if self.guard_rails is not None:  # on for this run: which steps the rails skipped
            self.guard_rails["skipped_steps"] = result.skipped_steps

    def with_process(self) -> Summary:
        """This summary naming the writing process (unless it names one already)."""
        return dataclasses.replace(self, hostname=self.hostname or socket.gethostname(), pid=self.pid or os.getpid())

    @property
    def final_main_metric(self) -> float | None:
        """The main validation metric at the last evaluation (None before one, or without a metric)."""
        return self.final.get(self.main_metric) if self.main_metric else None

    def mirrored(self) -> dict[str, Any]:
        """What W&B's run summary shows of it (wandb_sink mirrors the run folder)."""
        return {"status": self.status, "steps": self.steps, "final": self.final, "best": self.best,
                "diverged_at": self.diverged_at, **({"guard_rails": self.guard_rails} if self.guard_rails else {})}


def starting(*, task: Any, model: Any, cell: str | None, arch: str | None, seed: int | None, hidden_size: int,
             overrides: list[str], fingerprint: str, device: str, threads: int, flush_denormal: bool,
             provenance: Mapping[str, Any], guard_rails: dict[str, Any] | None = None,
             resumed: list[dict[str, Any]] | None = None) -> Summary:
    """summary.json as a run starts (status running): what runs (`task`: a `rnnbench.tasks` Task, `model`:
    a SequenceModel), where, with what code (`provenance`: `run_folder.run_metadata()`), what it resumes."""
    return Summary(
        status=RUNNING, task=task.name, cell=cell, arch=arch, seed=seed, hidden_size=hidden_size,
        num_params=model.num_parameters(), num_params_effective=model.effective_parameters(),
        param_count=model.param_count, state_size=model.state_size(), time_reduction=model.time_reduction,
        main_metric=f"val/{task.main_metric}", main_metric_mode=task.main_metric_mode,
        memoryless_baseline=task.memoryless_baseline, task_info=task.describe(), overrides=list(overrides),
        config_fingerprint=fingerprint, device=device, threads=threads, flush_denormal=flush_denormal,
        versions=provenance["versions"], git_commit=provenance["git_commit"], git_dirty=provenance["git_dirty"],
        machine=provenance["machine"], guard_rails=guard_rails, resumed=list(resumed or []))
