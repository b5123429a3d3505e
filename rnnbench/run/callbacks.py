"""Hydra callbacks (registered in conf/hydra/default.yaml): the output folder checked before a run
or sweep starts, and what a sweep leaves behind once its jobs have run.

`CheckOutputFolder`: an output folder that cannot be created or written is one clear message.

`SweepSummary`, for every multirun:

- when a job ends with an exception before its run folder had a ``summary.json`` (a value that
  `validate` rejects, a model that cannot be built), writes one with status ``failed`` and the
  error, so the report counts the job as failed and says why (later failures the app records
  itself);
- when the sweep ends: prints the report's table (mean ± std over seeds) and every job that did not
  complete with its reason, and writes the same to ``<sweep>/sweep_summary.md``; after an Optuna
  search, the importance of each searched hyperparameter (``<sweep>/importance.json`` and a line of
  the summary); a W&B run of job type ``sweep-summary`` in the sweep's group holding the table;
  and exit status 1 if any job failed, diverged or left no result.

What Hydra does here (hydra-core 1.3.8, hydra/core/utils.py and _internal/core_plugins):

- `run_job` catches a job's exception into its ``JobReturn``, so the basic launcher (sequential)
  and the joblib launcher (parallel) both run every job of a batch whatever fails. The basic
  sweeper sends all jobs as one batch (``max_batch_size: null``), then reads each
  ``JobReturn.return_value``, which re-raises the first failure: the command exits 1 with that
  job's error, and ``on_multirun_end`` is skipped. The summary is then printed by an ``atexit``
  hook, after Hydra's message. (With ``max_batch_size`` set, the batches after a failure never run.)
- The Optuna sweeper records a failed trial as ``FAIL`` and goes on while the failures stay within
  ``max_failure_rate`` (the presets here allow any), then calls ``on_multirun_end``.
- An exception raised in a callback is turned into a warning: a broken summary never fails a
  finished sweep, and the exit status has to be set with ``SystemExit``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnnbench.errors import ConfigError, fail
from rnnbench.records.run_folder import FolderInUse, hold_folder

log = logging.getLogger("rnnbench")

SUMMARY_FILE = "sweep_summary.md"
IMPORTANCE_FILE = "importance.json"
DIRECTIONS = {"min": "minimize", "max": "maximize"}


class ValidateConfig(Callback):
    """`config.validate` before Hydra starts anything: a run's config before its folder is made, and
    every job of a basic sweep before the first job starts (one bad point of `-m ... task.seq_len=100,0`
    refuses the whole sweep: no folder, no job). The message is validate's, once per bad value, exit 2.
    The Optuna sweeper draws its points as it goes: its fixed values are checked here, each drawn
    trial by the job itself (`app.run_experiment` validates again, first thing)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(_errors([config]))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = [config]
        if config.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
            jobs = list(basic_sweep_configs(config))
        errors = _errors(jobs)
        if errors and len(jobs) > 1:
            errors.append(f"(in the sweep's jobs: {len(jobs)}; none was started)")
        _refuse(errors)


def basic_sweep_configs(config: DictConfig):
    """The config of every job the basic sweeper will launch, as it composes them
    (`ConfigLoader.load_sweep_config` on the points of `BasicSweeper.split_arguments`). Jobs that
    choose the same config-group options share one composition; each job's plain values are then set
    as Hydra sets an override (`OmegaConf.update`, which checks the type)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    params = config.hydra.sweeper.get("params") or {}
    arguments = [*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task]
    groups = set(config.hydra.runtime.choices)
    composed: dict[tuple[str, ...], DictConfig] = {}
    for batch in BasicSweeper.split_arguments(parser.parse_overrides(arguments), None):
        for point in batch:
            plain = [o for o in parser.parse_overrides(list(point))
                     if o.type.name == "CHANGE" and o.package is None and o.key_or_group not in groups]
            plain_text = {o.input_line for o in plain}
            rest = tuple(o for o in point if o not in plain_text)
            if rest not in composed:
                composed[rest] = loader.load_sweep_config(config, list(rest))
            job = composed[rest].copy()
            for override in plain:
                OmegaConf.update(job, override.key_or_group, override.value(), merge=True)
            yield job


def _errors(configs) -> list[str]:
    """validate's lines for these configs, each line once, in order."""
    from rnnbench.run.config import validate  # the schemas import torch and every module: when needed

    lines: dict[str, None] = {}
    for cfg in configs:
        try:
            validate(cfg)
        except ConfigError as e:
            lines.update(dict.fromkeys(str(e).splitlines()))
    return list(lines)


def _refuse(errors: list[str]) -> None:
    if errors:
        sys.exit(fail(ConfigError("\n".join(errors))))


class CheckOutputFolder(Callback):
    """Hydra creates the run (or sweep) folder before the job starts, and a folder it cannot create
    or write to ends in a traceback. This checks first and says which key to change. (Hydra turns a
    callback's Exception into a warning and goes on, so this exits: SystemExit passes through.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")


def _check_writable(folder: str, key: str) -> None:
    if not str(folder).strip():  # Hydra would take the current folder and mix the run into it
        what = "sweep" if key == "hydra.sweep.dir" else "run"
        sys.exit(fail(ConfigError(f"{key} is empty ({key}={folder!r}): the {what} would be written into the current "
                                  f"folder ({Path.cwd()}), among its files. Give a folder, e.g. {key}=outputs/my-run, "
                                  f"or leave {key} out for a new dated one.")))
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        sys.exit(fail(ConfigError(f"cannot write the output folder {key}={folder}: {e.strerror} ({e.filename}). "
                                  f"Run from a folder you can write to, or set {key}=<a writable folder>.")))


class SweepSummary(Callback):
    def __init__(self, exit_on_failure: bool = True, precision: int = 4):
        self.exit_on_failure = exit_on_failure
        self.precision = precision
        self._unreported: DictConfig | None = None  # the sweep's config until its summary is printed
        self._sweep_pid: int | None = None  # the process that runs the sweeper (not a joblib worker)

    def __getstate__(self) -> dict[str, Any]:
        # joblib's launcher sends the callbacks to its workers; the hold on the folder stays here.
        return {k: v for k, v in self.__dict__.items() if k != "_hold"}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # One sweep per folder, like one run per run folder: held for the sweep (the kernel lets go
        # when this process ends), and a folder holding another sweep's files is not written over.
        self._hold = contextlib.ExitStack()
        try:
            self._hold.enter_context(hold_folder(sweep_dir, "hydra.sweep.dir", "sweep"))
            check_same_sweep(sweep_dir, config)
        except (FolderInUse, ConfigError) as error:
            sys.exit(fail(error))
        # The basic sweeper saves the sweep's config; the Optuna sweeper does not, and the report
        # reads the search space from it (the basic sweeper overwrites this with the same config).
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        self._unreported = config
        self._sweep_pid = os.getpid()
        atexit.register(self._summarize_at_exit)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if os.getpid() == self._sweep_pid:
            # A job run in this process (basic launcher) may have started W&B, whose exit hook would
            # then run before ours (atexit is last in, first out) and leave no W&B for the summary.
            atexit.unregister(self._summarize_at_exit)
            atexit.register(self._summarize_at_exit)
        if job_return.status != JobStatus.FAILED:
            return
        error = job_exception(job_return)
        run_dir = Path(config.hydra.runtime.output_dir)
        log.error("job %s failed: %s (run folder %s)", config.hydra.job.num, error_text(error), run_dir)
        # A folder in use belongs to another live run: this job must not write there.
        if not (run_dir / "summary.json").is_file() and not isinstance(error, FolderInUse):
            record_setup_failure(run_dir, config, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._unreported = None
        problems = self.summarize(config)
        if problems and self.exit_on_failure:
            print(f"{problems} job(s) did not complete (see above): exit status 1", file=sys.stderr)
            sys.exit(1)

    def _summarize_at_exit(self) -> None:
        """The sweeper raised (a job failed under the basic sweeper): summarize what is on disk."""
        if self._unreported is not None and os.getpid() == self._sweep_pid:
            config, self._unreported = self._unreported, None
            self.summarize(config)

    def summarize(self, config: DictConfig) -> int:
        """Print and write the sweep's summary; returns the number of jobs that did not complete."""
        from rnnbench import report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = report.load_runs([sweep_dir])
        except Exception as error:  # a summary must never turn a finished sweep into a failure
            log.warning("no sweep summary for %s: %s", sweep_dir, error)
            return 0
        completed = int((runs["status"] == "completed").sum())
        lines = [f"Sweep summary ({len(runs)} runs, {completed} completed), from {sweep_dir}:", ""]
        stats = None
        try:
            stats = report.summarize(runs)
            lines.append(report.render(stats, "md", self.precision))
        except Exception as error:
            lines.append(f"(no table: {error})\n")

        problems = report.not_completed(runs)
        if problems:
            lines += [f"Not completed ({len(problems)} of {len(runs)}):", *(f"- {p}" for p in problems), ""]

        importance = None
        try:
            search = report.optuna_search(config.hydra)
            if search is not None:
                importance = report.param_importance(runs, *search)
                (sweep_dir / IMPORTANCE_FILE).write_text(json.dumps(importance, indent=2) + "\n", encoding="utf-8")
                lines += [report.importance_text(importance) + f" ({IMPORTANCE_FILE})", ""]
                lines += direction_warnings(runs, search[1])
        except Exception as error:
            lines += [f"(no hyperparameter importance: {error})", ""]

        text = "\n".join(lines)
        (sweep_dir / SUMMARY_FILE).write_text(text + "\n", encoding="utf-8")
        where = f"Written to {sweep_dir / SUMMARY_FILE}. Run folders: {sweep_dir}/<job>/"
        if OmegaConf.select(config, "logger.wandb.mode") != "disabled":
            where += f" ; W&B files: {sweep_dir}/<job>/wandb/ (offline runs: `wandb sync` them when online)"
        print(f"\n{text}\n{where}\n")
        try:
            log_to_wandb(config, sweep_dir, runs, stats, problems, importance)
        except Exception as error:
            log.warning("sweep summary not logged to W&B: %s: %s", type(error).__name__, error)
        return len(problems)


def check_same_sweep(sweep_dir: Path, config: DictConfig) -> None:
    """A folder that holds a sweep's files (multirun.yaml) takes only that sweep again (it skips its
    finished jobs and resumes the others); another sweep would overwrite its multirun.yaml and
    summary and find its job folders taken."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return
    theirs = list(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[]) or [])
    ours = list(config.hydra.overrides.task)
    if theirs != ours:
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds another sweep (its overrides: {' '.join(theirs) or 'none'}). "
            f"To continue that sweep, run it with those overrides; to start another sweep, choose a new "
            f"hydra.sweep.dir.")


# ------------------------------------------------------------------------------------------------


def job_exception(job_return: JobReturn) -> BaseException:
    """The exception a failed job raised.

    A private attribute, read here only: the public ``JobReturn.return_value`` re-raises the
    exception (and logs Hydra's "Error executing job" line), and hydra-core 1.3 has no other way to
    it. tests/test_sweeps.py::test_a_failed_jobs_exception_is_read_from_hydras_job_return fails
    loudly if a Hydra release renames it."""
    return job_return._return_value


def error_text(error: BaseException) -> str:
    """"ValueError: ..." of the error itself, not of Hydra's wrapper around a failed instantiate."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def record_setup_failure(run_dir: Path, config: DictConfig, error: BaseException) -> None:
    """summary.json of a job that failed before the app wrote one: status, error and identity."""
    from rnnbench.records import run_folder

    choices = config.hydra.runtime.choices
    summary = run_folder.Summary(
        status=run_folder.FAILED, error=error_text(error), traceback="".join(traceback.format_exception(error)),
        task=choices.get("task"), cell=choices.get("cell"), arch=choices.get("arch"),
        seed=OmegaConf.select(config, "train.seed", default=None), overrides=list(config.hydra.overrides.task))
    run_dir.mkdir(parents=True, exist_ok=True)
    run_folder.write_summary(run_dir, summary)


def direction_warnings(runs, direction: str) -> list[str]:
    """A line if the search's direction is not that of the task's main metric (summary.json)."""
    modes = set(runs["main_metric_mode"].dropna()) if "main_metric_mode" in runs else set()
    metrics = set(runs["main_metric"].dropna()) if "main_metric" in runs else set()
    wrong = [m for m in modes if DIRECTIONS.get(m) not in (None, direction)]
    if not wrong:
        return []
    return [f"WARNING: hydra.sweeper.direction={direction}, but the task's main metric "
            f"{', '.join(sorted(metrics))} is best at its {wrong[0]}: the search went the wrong way "
            f"(set hydra.sweeper.direction={DIRECTIONS[wrong[0]]})", ""]


def log_to_wandb(config: DictConfig, sweep_dir: Path, runs, stats, problems: list[str],
                 importance: dict | None) -> None:
    """One small W&B run, job type ``sweep-summary``, in the group of the sweep's runs, holding the
    summary table and a table of the runs. logger.wandb.mode as for the jobs (disabled: nothing)."""
    from rnnbench.records.wandb_sink import WandbSink, resolve_mode, sweep_group

    wandb_cfg = OmegaConf.select(config, "logger.wandb")
    if wandb_cfg is None or resolve_mode(wandb_cfg.mode) == "disabled":
        return
    import wandb

    group = wandb_cfg.group or sweep_group(sweep_dir)  # as the app names its jobs' group
    tables = {"sweep/runs": wandb.Table(dataframe=_runs_table(runs))}
    if stats is not None:
        tables["sweep/summary"] = wandb.Table(dataframe=_plain(stats))
    sink = WandbSink(
        mode=wandb_cfg.mode, project=wandb_cfg.project, run_dir=sweep_dir, name=f"{group} summary",
        group=group, job_type="sweep-summary", tags=list(wandb_cfg.tags), entity=wandb_cfg.entity,
        config={"sweep_dir": str(sweep_dir), "overrides": list(config.hydra.overrides.task),
                "swept_keys": list(runs.attrs.get("swept_keys", []))},
    )
    exit_code = 1
    try:
        sink.log(tables, step=0)
        sink.summary({"runs": len(runs), "completed": int((runs["status"] == "completed").sum()),
                      "not_completed": problems,
                      **({"importance": importance["importances"]} if importance else {})})
        exit_code = 0
    finally:
        sink.finish(exit_code=exit_code)
    log.info("sweep summary logged to W&B (%s, group %s): %s", sink.mode, group, sink.run_dir)


def _plain(df):
    """`df` without pandas attrs, and key columns of mixed types as text (W&B types each column)."""
    out = df.copy()
    out.attrs = {}
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: None if v is None else str(v))
    return out


def _runs_table(runs):
    from rnnbench import report

    keys = list(runs.attrs.get("swept_keys", []))
    metrics = [c for c in runs.columns if c.startswith("final/")]
    columns = ["run_dir", *keys, "status", "error", "diverged_at", *metrics, "num_params", "wall_time_s"]
    table = runs[[c for c in dict.fromkeys(columns) if c in runs.columns]].copy()
    table["run_dir"] = table["run_dir"].map(lambda d: Path(d).name)
    table = table.rename(columns={"run_dir": "job"})
    for key in keys:
        table[key] = table[key].map(report.label)
    return _plain(table)
