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
- SIGINT (Ctrl-C) / SIGUSR2 / SIGTERM: the trainer checkpoints at the end of the current step and stops
  (summary.json: `stopped`, with the step); the signal then goes to the handler installed before (under
  submitit: requeue; the requeued job re-enters here with the same job folder and resumes, into the
  same W&B run); Ctrl-C exits 130 without a traceback, and a second Ctrl-C stops at once.
- One writer per run folder (`run_folder.hold_folder`): a second command or sweep given a folder whose
  run is still going is refused at once.
- Exit codes: 0 completed or diverged (a divergence is a result), 2 a bad config, data file,
  checkpoint or a run folder in use (one message, no traceback), 1 a crash, 128 + N stopped by signal N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
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
from rnnbench.records.wandb_offline import find_offline_runs
from rnnbench.records.wandb_sink import WandbSink, WandbTrainerSink, sweep_group
from rnnbench.run import callbacks, checkpoint, help, overrides
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
    if job.multirun and callbacks.sweep_stopping(job.sweep_dir):  # its sweep was stopped with Ctrl-C
        log.warning("not started: the sweep was stopped with Ctrl-C (run it again to continue it)")
        raise SystemExit(128 + signal.SIGINT)
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
    elif plan.previous is not None and plan.checkpoint is None:
        rows = run_folder.read_metrics(job.run_dir)
        log.warning("%s holds a run (status %s, last logged step %s) but no checkpoint: nothing to resume from, "
                    "starting again from step 0 in the same folder", job.run_dir, plan.previous.status,
                    rows[-1].get("step", 0) if rows else 0)
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
        # the folder's W&B run goes on, even when no checkpoint was left to resume from
        wandb_id = resumed.get("wandb_id") if resumed else ((plan.previous and plan.previous.wandb) or {}).get("id")
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

        exit_code, trainer = 1, None
        try:
            # a sweep's jobs on a terminal draw no bar (they would overwrite each other's): Hydra's lines only
            settings = train_settings(cfg, progress=cfg.logger.progress and not (job.multirun and sys.stdout.isatty()),
                                      progress_every_s=cfg.logger.progress_every_s)
            trainer = Trainer(model, task, optimizer, scheduler, settings,
                              [RecorderSink(recorder), WandbTrainerSink(sink)],
                              on_step=None if resumed else _testing_hook(cfg.testing),
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
            if result.status == run_folder.STOPPED:
                summary.interrupted = _stopped(run_dir, stop.received.name, result.steps)
            recorder.write_summary(summary)
            sink.summary(summary.mirrored())
            exit_code = 0 if result.status != run_folder.STOPPED else 1
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, mid-step, from its last checkpoint
            wall_time_s = wall_before + time.time() - started
            if trainer is not None:  # the results up to the last whole step
                summary.record_result(trainer.result, wall_time_s=wall_time_s)
            stop.received = stop.received or signal.SIGINT  # (no handler outside the main thread)
            summary.status, summary.steps = run_folder.STOPPED, summary.steps or plan.step
            summary.interrupted = {**_stopped(run_dir, "SIGINT", summary.steps), "at_once": True}
            summary.wall_time_s = wall_time_s
            recorder.write_summary(summary)
            with contextlib.suppress(Exception):  # best effort: W&B may have been mid-call
                sink.summary(summary.mirrored())
        except BaseException as e:
            summary.status, summary.error = run_folder.FAILED, f"{type(e).__name__}: {e}"
            summary.wall_time_s = wall_before + time.time() - started
            recorder.write_summary(summary)
            raise
        finally:
            sink.finish(exit_code=exit_code)
    if summary.status == run_folder.STOPPED:
        _report_stop(summary, job)
        stop.redeliver()  # submitit requeues the job; Ctrl-C exits 130; else the signal ends the process
    return summary


def _stopped(run_dir: Path, signal_name: str, step: int) -> dict[str, Any]:
    """summary.json's `interrupted`: the signal, the last step run, the checkpoint a resume continues from."""
    last = checkpoint.latest(run_dir)
    return {"signal": signal_name, "step": step, "checkpoint": last.name if last else None}


def _report_stop(summary: Summary, job: Job) -> None:
    """The stop and how to resume, on the log (no traceback)."""
    stopped = summary.interrupted
    requeued = " (submitit requeues a preempted job by itself)" if stopped["signal"] != "SIGINT" else ""
    how = (f"run the same sweep command with hydra.sweep.dir={job.sweep_dir}{requeued}" if job.multirun else
           f"run the same command with hydra.run.dir={job.run_dir} train.resume=true")
    if stopped.get("at_once"):
        kept = (f"it resumes from its last checkpoint, {stopped['checkpoint']}" if stopped["checkpoint"]
                else "no checkpoint was written yet: a resume starts again from step 0")
        log.warning("stopped at once by a second SIGINT during step %d; %s. To resume: %s",
                    stopped["step"] + 1, kept, how)
    else:
        log.warning("stopped by %s after step %d; checkpoint %s. To resume: %s", stopped["signal"],
                    stopped["step"], checkpoint.latest(job.run_dir), how)


def main_metric(summary: Summary) -> float | None:
    """The value a sweeper optimises: the final main validation metric; None for a diverged run, so
    Optuna records the trial as failed instead of ranking an earlier evaluation. Not NaN:
    hydra-optuna-sweeper 1.3 tells Optuna a NaN, Optuna (2.10) refuses it, and the sweeper then tells
    "failed" with the NaN again, which Optuna refuses too, ending the whole search; None fails the
    float() before any value is told."""
    return None if summary.status == run_folder.DIVERGED else summary.final_main_metric


def _testing_hook(testing: DictConfig):
    """The hooks of `testing` after a step, in a run started from step 0 (a resumed run does not fail
    or pause again: a transient crash): `fail_at_step`, a crash right after that step (and its
    checkpoint, if one is due); `pause_at_step`, a minute's sleep there, for a test to signal a run
    that is in the middle of a step."""
    if testing.fail_at_step is None and testing.pause_at_step is None:
        return None

    def hook(current: int) -> None:
        if current == testing.pause_at_step:
            print(f"testing.pause_at_step={current}: pausing (testing hook)", file=sys.stderr, flush=True)
            time.sleep(60)
        if current == testing.fail_at_step:
            raise RuntimeError(f"testing.fail_at_step={current}: failing on purpose after step {current} (testing hook)")
    return hook


def _report(summary: Summary, run_dir: Path) -> None:
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in summary.final.items() if isinstance(v, (int, float)))
    log.info("%s %s (%s steps, %.1fs): %s", summary.cell, summary.status, summary.steps,
             summary.wall_time_s or 0, metrics)
    log.info("run folder: %s", run_dir)
    if (summary.wandb or {}).get("dir"):
        log.info("W&B (%s): %s", summary.wandb["mode"], summary.wandb["dir"])
        if summary.wandb["mode"] == "offline":  # every segment of the run (a resumed run has one per start)
            segments = " ".join(str(s) for s in find_offline_runs(run_dir) if s.name.endswith(summary.wandb["id"]))
            log.info("to upload it to W&B: wandb sync %s", segments or summary.wandb["dir"])


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
    if help.wants_version(sys.argv[1:]):
        print(help.version())
        return
    # W&B telemetry must not outlive a run without a server (notes/wandb-offline.md); and a sweep's
    # workers should not each spawn a full thread pool unless asked to.
    os.environ.setdefault("WANDB_SILENT", "true")
    try:  # what Hydra would refuse while composing, said as rnnbench says it (and exit 2)
        overrides.check(sys.argv[1:], CONF_DIR)
    except UserError as e:
        sys.exit(fail(e))
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C outside a run's training (which checkpoints and exits 130 itself)
        sweep = any(a in ("-m", "--multirun") for a in sys.argv[1:])
        print("Interrupted (Ctrl-C): " + ("the jobs in training checkpointed and stopped; run the same sweep "
                                          "command with hydra.sweep.dir=<its folder> to continue it." if sweep
                                          else "no run was in training: nothing to checkpoint."), file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
