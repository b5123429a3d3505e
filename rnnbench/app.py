"""`python -m rnnbench +experiment=NAME [key=value ...]`: one experiment (or a sweep with -m).

Builds everything from the composed config with Hydra's `instantiate`, runs the trainer, and keeps
the run folder (Hydra's job folder) as the source of truth: config.yaml, metrics.jsonl, profile.json,
summary.json. W&B mirrors it. Returns the task's main validation metric (for sweepers such as Optuna).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnbench import records
from rnnbench.budget import hidden_size_for_budget
from rnnbench.config import ConfigError, register_schemas, validate
from rnnbench.train import Trainer, TrainSettings

log = logging.getLogger("rnnbench")

register_schemas()

# conf/ sits beside the package (editable install, as the README sets up)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA) generators; the task's data generator is seeded apart."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={device!r} is not available here (no CUDA device): use auto or cpu")
    return torch.device(device)


class RecorderSink:
    """Trainer sink writing the run folder."""

    def __init__(self, recorder: records.RunRecorder):
        self.recorder = recorder

    def log(self, row: dict[str, Any]) -> None:
        self.recorder.log(row)

    def log_profile(self, step: int, profile: dict) -> None:
        self.recorder.write_profile(profile)


class WandbTrainerSink:
    """Trainer sink mirroring rows and profiles to W&B."""

    def __init__(self, sink):
        self.sink = sink

    def log(self, row: dict[str, Any]) -> None:
        self.sink.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def log_profile(self, step: int, profile: dict) -> None:
        self.sink.log_profile(step, profile["layers"])
        self.sink.log({f"profile/{k}": v for k, v in profile["summary"].items()}, step=step)


def _threads_per_parallel_job(hc) -> int | None:
    """Under the local parallel launcher, cores // n_jobs threads per job, so workers don't
    oversubscribe the machine (torch would otherwise start a full pool in every worker)."""
    launcher = hc.get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs") or -1
    n_jobs = cores if n_jobs < 0 else n_jobs
    return max(1, cores // max(1, n_jobs))


def build_model(cfg: DictConfig, spec, device: torch.device):
    cell = instantiate(cfg.cell)
    hidden_size = cfg.model.hidden_size
    if cfg.model.param_budget:
        hidden_size = hidden_size_for_budget(
            cfg.model.param_budget, lambda h: instantiate(cfg.model, spec=spec, cell=cell, hidden_size=h))
    model = instantiate(cfg.model, spec=spec, cell=cell, hidden_size=hidden_size)
    return model.to(device), hidden_size


def _run_name(overrides: list[str]) -> str:
    keep = [o for o in overrides if not o.startswith(("logger.", "hydra.", "train.device"))]
    return ",".join(keep) if keep else "defaults"


def run_experiment(cfg: DictConfig) -> float | None:
    """One job: validate, build, train, record. Raises on failure after recording it."""
    validate(cfg)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    choices = dict(hc.runtime.choices)
    overrides = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    threads = cfg.train.threads or _threads_per_parallel_job(hc)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    task = instantiate(cfg.task, device=device)
    model, hidden_size = build_model(cfg, task.spec, device)
    optimizer = instantiate(cfg.optim)(model.parameters())
    scheduler = instantiate(cfg.schedule)(optimizer) if cfg.schedule else None

    summary: dict[str, Any] = {
        "status": records.RUNNING, "error": None, "diverged_at": None,
        "task": task.name, "cell": choices.get("cell"), "arch": choices.get("arch"),
        "seed": cfg.train.seed, "hidden_size": hidden_size, "num_params": model.num_parameters(),
        "time_reduction": model.time_reduction,
        "main_metric": f"val/{task.main_metric}", "main_metric_mode": task.main_metric_mode,
        "memoryless_baseline": task.memoryless_baseline, "task_info": task.describe(),
        "overrides": overrides, "config_fingerprint": records.config_fingerprint(resolved),
        "device": str(device), "threads": torch.get_num_threads(),
        **records.run_metadata(),
    }
    from rnnbench.wandb_sink import WandbSink

    wandb_cfg = cfg.logger.wandb
    group = wandb_cfg.group or (Path(hc.sweep.dir).name if multirun else None)
    started = time.time()
    with records.RunRecorder(run_dir) as recorder:
        recorder.write_config(resolved)
        recorder.write_summary(summary)
        sink = WandbSink(mode=wandb_cfg.mode, project=wandb_cfg.project, run_dir=run_dir,
                         name=_run_name(overrides), group=group, job_type=choices.get("cell"),
                         config=resolved, tags=list(wandb_cfg.tags), entity=wandb_cfg.entity)
        summary["wandb"] = {"mode": sink.mode, "id": sink.run_id,
                            "dir": str(sink.run_dir) if sink.run_dir else None}
        exit_code = 1
        try:
            settings = TrainSettings(
                max_steps=cfg.train.max_steps, clip=cfg.train.clip, clip_mode=cfg.train.clip_mode,
                log_every=cfg.train.log_every, eval_every=cfg.train.eval_every,
                profile_every=cfg.train.profile_every, early_stop=cfg.train.early_stop,
                progress=cfg.logger.progress and not multirun)
            trainer = Trainer(model, task, optimizer, scheduler, settings,
                              [RecorderSink(recorder), WandbTrainerSink(sink)])
            result = trainer.fit()
            if cfg.train.test_at_end and result.status == "completed":
                test = {f"test/{k}": v for k, v in trainer.evaluate("test").items()}
                recorder.log({"step": result.steps, **test})
                summary["test"] = test
            summary.update(
                status=result.status, diverged_at=result.diverged_at, steps=result.steps,
                final=result.final, best=result.best, best_step=result.best_step,
                solved_at=result.solved_at, wall_time_s=time.time() - started,
                train_time_s=result.train_time_s, throughput_steps_per_s=result.throughput)
            recorder.write_summary(summary)
            sink.summary({k: v for k, v in summary.items() if k in ("status", "steps", "final", "best")})
            exit_code = 0
        except BaseException as e:
            summary.update(status=records.FAILED, error=f"{type(e).__name__}: {e}",
                           wall_time_s=time.time() - started)
            recorder.write_summary(summary)
            raise
        finally:
            sink.finish(exit_code=exit_code)
    _report(summary, run_dir)
    return summary.get("final", {}).get(summary["main_metric"])


def _report(summary: dict, run_dir: Path) -> None:
    final = summary.get("final", {})
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, (int, float)))
    log.info("%s %s (%s steps, %.1fs): %s", summary["cell"], summary["status"], summary.get("steps"),
             summary.get("wall_time_s", 0), metrics)
    log.info("run folder: %s", run_dir)
    if summary.get("wandb", {}).get("dir"):
        log.info("W&B (%s): %s", summary["wandb"]["mode"], summary["wandb"]["dir"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return run_experiment(cfg)
    except ConfigError as e:
        # A bad value: one clear message, no traceback. In a sweep the job fails and the others go on.
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"Error in config:\n{e}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    # W&B telemetry must not outlive a run without a server (notes/wandb-offline.md); and a sweep's
    # workers should not each spawn a full thread pool unless asked to.
    os.environ.setdefault("WANDB_SILENT", "true")
    main()
