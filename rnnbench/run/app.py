"""`python -m rnnbench +experiment=NAME [key=value ...]`: one experiment (or a sweep with -m).
(About 400 lines on purpose: the steps of one job, in the order they run, read top to bottom.)

`run_experiment` is one job in the steps it takes: validate the config, hold the run folder (Hydra's
job folder), plan how the job starts there (fresh, resumed, finished already), build everything from
the config with Hydra's `instantiate`, train while recording the run folder (the source of truth:
config.yaml, metrics.jsonl, profile.json, summary.json, checkpoints/; W&B mirrors it). It returns the
task's main validation metric (for sweepers such as Optuna; None for a diverged run, which Optuna records as a failed trial).

Reliability (docs/bad-inputs.md, rnnbench/run/checkpoint.py):
- A job never mixes its files with another run's: a folder that already holds a run is resumed
  (`train.resume=true`; multirun jobs always resume) or refused. Resuming checks the config
  fingerprint and the checkpoint before anything is written; a finished run (completed or diverged)
  with the same config is not run again: its recorded metric is returned.
- SIGUSR2 / SIGTERM: the trainer checkpoints at the end of the current step and stops; the signal
  then goes to the handler installed before (under submitit: requeue; the requeued job re-enters here
  with the same job folder and resumes, into the same W&B run).
- One writer per run folder (`run_folder.hold_folder`): a second command or sweep given a folder whose
  run is still going is refused at once.
- Exit codes: 0 completed or diverged (a divergence is a result), 2 a bad config, data file,
  checkpoint or a run folder in use (one message, no traceback), 1 a crash, 128 + N stopped by signal N.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnnbench.errors import UserError, fail
from rnnbench.records import run_folder
from rnnbench.records import summary as summary_schema
from rnnbench.records.summary import Summary
from rnnbench.records.wandb_sink import WandbSink, WandbTrainerSink, sweep_group
from rnnbench.run import checkpoint, help, overrides
from rnnbench.run.build import Experiment, build_experiment, prepare_process, train_settings
from rnnbench.run.config import CONF_DIR, register_schemas, validate
from rnnbench.run.train import RecorderSink, Trainer

log = logging.getLogger("rnnbench")

register_schemas()

def _threads_per_parallel_job(hc) -> int | None:
    """Under the local parallel launcher, cores // n_jobs threads per job, so workers don't
    oversubscribe the machine (torch would otherwise start a full pool in every worker); under the
    submitit launchers, the job's cpus_per_task."""
    launcher = hc.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)  # the local executor ignores it; SLURM sets no affinity here
    if "joblib" not in target:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs") or -1
    n_jobs = cores if n_jobs < 0 else n_jobs
    return max(1, cores // max(1, n_jobs))


def _run_name(overrides: list[str]) -> str:
    keep = [o for o in overrides if not o.startswith(("logger.", "hydra.", "train.device"))]
    return ",".join(keep) if keep else "defaults"


@dataclasses.dataclass
class Built:
    """The experiment's objects and where and how they compute."""

    experiment: Experiment
    device: torch.device
    flush_denormal: bool  # subnormal floats flushed to zero (train.flush_denormal, where the CPU can)


@dataclasses.dataclass
class Job:
    """What Hydra says about this job: its run folder, the key that names it, how it was asked for."""

    run_dir: Path
    folder_key: str  # hydra.run.dir, or hydra.sweep.dir for a job of a sweep
    multirun: bool
    sweep_dir: str | None
    choices: dict[str, Any]  # config group -> option, e.g. {"cell": "lstm"}
    overrides: list[str]
    launcher_threads: int | None

    @classmethod
    def current(cls) -> Job:
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(run_dir=Path(hc.runtime.output_dir), folder_key="hydra.sweep.dir" if multirun else "hydra.run.dir",
                   multirun=multirun, sweep_dir=hc.sweep.dir if multirun else None,
                   choices=dict(hc.runtime.choices), overrides=list(hc.overrides.task),
                   launcher_threads=_threads_per_parallel_job(hc))


def run_experiment(cfg: DictConfig) -> float | None:
    """One job, step by step; returns the main validation metric (for sweepers). Raises on failure
    after recording it."""
    validate(cfg)  # 1. every value in range, before anything is read or written
    job = Job.current()
    with run_folder.hold_folder(job.run_dir, job.folder_key):  # 2. one writer per run folder
        resolved = OmegaConf.to_container(cfg, resolve=True)
        plan = plan_start(cfg, job, resolved)  # 3. fresh, resumed, or finished already
        if plan.finished is not None:
            return main_metric(plan.finished)
        try:
            device, flushed = prepare_process(cfg, job.launcher_threads)  # 4. flush mode, threads, seeds
            built = Built(build_experiment(cfg, device), device, flushed)  # 5. task, model, optimiser, schedule
        except UserError:  # refused while building (a data file, a value only building finds wrong): a
            if not job.multirun:  # single run leaves no folder (a sweep's job records why it failed)
                run_folder.discard_unstarted(job.run_dir)
            raise
        summary = train_and_record(cfg, job, resolved, plan, built)  # 6. the run folder as it goes
    _report(summary, job.run_dir)
    return main_metric(summary)


def plan_start(cfg: DictConfig, job: Job, resolved: dict[str, Any]) -> checkpoint.ResumePlan:
    """How the job starts in its folder (`checkpoint.plan_resume`: reads only, refuses what it must)."""
    plan = checkpoint.plan_resume(job.run_dir, run_folder.config_fingerprint(resolved), resolved,
                                  resume=cfg.train.resume or job.multirun, folder_key=job.folder_key)
    if plan.finished is not None:
        log.info("already %s with this config (step %s): not run again. Run folder: %s",
                 plan.finished.status, plan.finished.steps, job.run_dir)
    elif cfg.train.resume and plan.previous is None and not job.multirun:
        log.warning("train.resume=true, but %s holds no run: starting from step 0 (to resume a run, "
                    "set hydra.run.dir to its folder)", job.run_dir)
    return plan


def first_summary(cfg: DictConfig, job: Job, built: Built, plan: checkpoint.ResumePlan,
                  fingerprint: str) -> Summary:
    """summary.json as the run starts (status running; its fields: `records.summary`)."""
    resumed = plan.checkpoint
    if resumed and resumed.get("threads", torch.get_num_threads()) != torch.get_num_threads():
        log.warning("resuming with %d torch threads, the checkpoint was written with %d: results may "
                    "differ in the last bits", torch.get_num_threads(), resumed["threads"])
    return summary_schema.starting(
        task=built.experiment.task, model=built.experiment.model, cell=job.choices.get("cell"),
        arch=job.choices.get("arch"), seed=cfg.train.seed, hidden_size=built.experiment.hidden_size,
        overrides=job.overrides, fingerprint=fingerprint, device=str(built.device),
        threads=torch.get_num_threads(), flush_denormal=built.flush_denormal, provenance=run_folder.run_metadata(),
        guard_rails=({"skip_nonfinite": cfg.train.skip_nonfinite, "lr_backoff": cfg.train.lr_backoff}
                     if cfg.train.skip_nonfinite else None),
        resumed=([*(plan.previous.resumed if plan.previous else []),
                  {"from_step": plan.step, "checkpoint": plan.checkpoint_path.name}] if resumed else None))


def train_and_record(cfg: DictConfig, job: Job, resolved: dict[str, Any], plan: checkpoint.ResumePlan,
                     built: Built) -> Summary:
    """Train, writing the run folder as it goes (config, summary, rows, profiles, checkpoints; W&B
    mirrors it); a failure is recorded in summary.json, then raised. Returns the final summary."""
    run_dir, overrides, choices = job.run_dir, job.overrides, job.choices
    exp = built.experiment
    task, model, optimizer, scheduler = exp.task, exp.model, exp.optimizer, exp.scheduler
    fingerprint = run_folder.config_fingerprint(resolved)
    summary = first_summary(cfg, job, built, plan, fingerprint)
    resumed = plan.checkpoint
    wall_before = resumed["wall_time_s"] if resumed else 0.0
    # Rows logged after the checkpoint (by a run killed later) are logged again by this one.
    checkpoint.forget_after(run_dir, plan.step)
    wandb_cfg = cfg.logger.wandb
    group = wandb_cfg.group or (sweep_group(job.sweep_dir) if job.multirun else None)
    started = time.time()
    with run_folder.RunRecorder(run_dir) as recorder, checkpoint.StopSignals() as stop:
        recorder.write_config(resolved)
        if task.vocabulary() is not None:  # what sample/evaluate need to read the model's token ids
            run_folder.write_vocabulary(run_dir, task.vocabulary())
        recorder.write_summary(summary)
        wandb_id = resumed.get("wandb_id") if resumed else None
        sink = WandbSink(mode=wandb_cfg.mode, project=wandb_cfg.project, run_dir=run_dir,
                         name=_run_name(overrides), group=group, job_type=choices.get("cell"),
                         config=resolved, tags=list(wandb_cfg.tags), entity=wandb_cfg.entity,
                         run_id=wandb_id, resume=wandb_id is not None)
        summary.wandb = {"mode": sink.mode, "id": sink.run_id, "dir": str(sink.run_dir) if sink.run_dir else None}
        recorder.write_summary(summary)  # a run killed from here on still names its W&B run

        def save_checkpoint(trainer_state: dict[str, Any]) -> None:
            checkpoint.save(run_dir, {
                "step": trainer_state["step"], "config_fingerprint": fingerprint, "config": resolved,
                "wandb_id": sink.run_id, "wall_time_s": wall_before + time.time() - started,
                "threads": torch.get_num_threads(), "trainer": trainer_state})

        def save_best(step: int) -> None:
            checkpoint.save_best(run_dir, {
                "step": step, "config_fingerprint": fingerprint, "config": resolved,
                "trainer": {"step": step, "model": model.state_dict()}})

        exit_code = 1
        try:
            settings = train_settings(cfg, progress=cfg.logger.progress and not job.multirun)
            trainer = Trainer(model, task, optimizer, scheduler, settings,
                              [RecorderSink(recorder), WandbTrainerSink(sink)],
                              on_step=None if resumed else _fail_at(cfg.testing.fail_at_step),
                              checkpoint=save_checkpoint, save_best=save_best,
                              stop_requested=stop.requested)
            if resumed:
                trainer.load_state_dict(resumed["trainer"])
                log.info("resuming from %s (step %d)", plan.checkpoint_path, plan.step)
            result = trainer.fit()
            if cfg.train.test_at_end and result.status == "completed":
                test = {f"test/{k}": v for k, v in trainer.evaluate("test").items()}
                recorder.log({"step": result.steps, **test})
                sink.log(test, step=result.steps)  # W&B mirrors every row of metrics.jsonl
                summary.test = test
            summary.record_result(result, wall_time_s=wall_before + time.time() - started)
            if result.status == "interrupted":  # stays `running`: reads as incomplete once the process ends
                summary.interrupted = {"signal": stop.received.name, "step": result.steps}
            recorder.write_summary(summary)
            sink.summary(summary.mirrored())
            exit_code = 0 if result.status != "interrupted" else 1
        except BaseException as e:
            summary.status, summary.error = run_folder.FAILED, f"{type(e).__name__}: {e}"
            summary.wall_time_s = wall_before + time.time() - started
            recorder.write_summary(summary)
            raise
        finally:
            sink.finish(exit_code=exit_code)
    if result.status == "interrupted":
        how = (f"run the same sweep command with hydra.sweep.dir={job.sweep_dir} (submitit requeues the "
               "job by itself)" if job.multirun else
               f"run the same command with hydra.run.dir={run_dir} train.resume=true")
        log.warning("stopped by %s after step %d; checkpoint %s. To resume: %s", stop.received.name,
                    result.steps, checkpoint.latest(run_dir), how)
        stop.redeliver()  # submitit requeues the job; without it the signal ends the process
    return summary


def main_metric(summary: Summary) -> float | None:
    """The value a sweeper optimises: the final main validation metric; None for a diverged run, so
    Optuna records the trial as failed instead of ranking an earlier evaluation. Not NaN:
    hydra-optuna-sweeper 1.3 tells Optuna a NaN, Optuna (2.10) refuses it, and the sweeper then tells
    "failed" with the NaN again, which Optuna refuses too, ending the whole search; None fails the
    float() before any value is told."""
    return None if summary.status == run_folder.DIVERGED else summary.final_main_metric


def _fail_at(step: int | None):
    """The `testing.fail_at_step` hook: a crash right after that step (and its checkpoint, if
    one is due), in a run started from step 0; a resumed run does not fail again (a transient crash)."""
    if step is None:
        return None

    def fail(current: int) -> None:
        if current == step:
            raise RuntimeError(f"testing.fail_at_step={step}: failing on purpose after step {step} (testing hook)")
    return fail



def _report(summary: Summary, run_dir: Path) -> None:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in summary.final.items() if isinstance(v, (int, float)))
    log.info("%s %s (%s steps, %.1fs): %s", summary.cell, summary.status, summary.steps,
             summary.wall_time_s or 0, metrics)
    log.info("run folder: %s", run_dir)
    if (summary.wandb or {}).get("dir"):
        log.info("W&B (%s): %s", summary.wandb["mode"], summary.wandb["dir"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        return run_experiment(cfg)
    except UserError as e:
        # A bad value, data file, checkpoint or a run folder in use: one clear message, no traceback
        # (rnnbench.errors). In a sweep the job fails and the others go on.
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(fail(e))


def cli() -> None:
    if help.wants_help(sys.argv[1:]):  # rnnbench's page: Hydra's would offer the schema/* groups as choices
        print(help.page(Path(CONF_DIR), help.user_config_dirs(sys.argv[1:])))
        return
    # W&B telemetry must not outlive a run without a server (notes/wandb-offline.md); and a sweep's
    # workers should not each spawn a full thread pool unless asked to.
    os.environ.setdefault("WANDB_SILENT", "true")
    try:  # what Hydra would refuse while composing, said as rnnbench says it (and exit 2)
        overrides.check(sys.argv[1:], CONF_DIR)
    except UserError as e:
        sys.exit(fail(e))
    main()
