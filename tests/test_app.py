"""The experiment app end to end, as a user runs it: `python -m rnnbench ...` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import DictConfig, OmegaConf

from conftest import REPO, run_cli
from datagen import char_corpus, sentiment_csv, separable_images
from rnnbench.records import run_folder
from rnnbench.records.summary import SUMMARY_VERSION
from rnnbench.run.build import build_experiment
from rnnbench.run.config import compose, validate

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))


def compose_experiment(experiment: str, *overrides: str) -> DictConfig:
    return compose([f"+experiment={experiment}", *overrides], hydra_config=True)


PRESETS = {experiment: compose_experiment(experiment) for experiment in EXPERIMENTS}


def generated_data(target: str, root: Path) -> list[str]:
    """Overrides pointing a real-data task at small generated files in the real formats."""
    if target.endswith("LanguageModelTask"):
        return [f"task.corpus={char_corpus(root / 'text.txt')}", "task.level=char"]
    if target.endswith("SequentialImageTask"):
        return [f"task.dataset={separable_images(root / 'fashion-mnist', 64, 32)}"]
    if target.endswith("TextClassificationTask"):
        folder = sentiment_csv(root / "sentiment", (40, 10, 10))
        return [f"task.train_file={folder / 'train.csv'}", f"task.valid_file={folder / 'valid.csv'}",
                f"task.test_file={folder / 'test.csv'}"]
    return []


def sweep_values(experiment: str) -> dict[str, list]:
    """Each swept key of a preset and the values its sweep can give it, read by Hydra's own override
    parser: every value of a list, choice or range, both ends of an interval (Optuna draws between)."""
    params = PRESETS[experiment].hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    values = {}
    for key, text in params.items():
        override = parser.parse_override(f"{key}={text}")
        if isinstance(override.value(), IntervalSweep):
            values[key] = [override.value().start, override.value().end]
        elif override.is_sweep_override():
            values[key] = list(override.sweep_iterator())
        else:
            values[key] = [override.value()]
    return values


SMALL = {"task.val_size": 16, "task.seq_len": 12, "task.num_kv_pairs": 2, "task.max_train_tokens": 2000, "task.max_train": 64,
         "task.max_eval": 32, "task.bptt": 8, "task.eval_batch_size": 8}
FEW_STEPS = ["train.max_steps=4", "train.log_every=2", "train.eval_every=2", "train.profile_every=2",
             "train.batch_size=4", "model.hidden_size=8", "logger.wandb.mode=disabled", "train.threads=1"]


def small_overrides(experiment: str, root: Path, point: dict[str, str]) -> list[str]:
    """An experiment at tiny sizes (only keys its task has) on generated data, each swept key at the
    value `point` gives it (else the sweep's first, for a list), and a few steps."""
    cfg = PRESETS[experiment]
    out = [f"{k}={v}" for k, v in SMALL.items() if k.split(".")[1] in cfg.task and k not in point]
    out += generated_data(cfg.task._target_, root)
    swept = sweep_values(experiment)
    out += [f"{k}={v[0]}" for k, v in swept.items() if k not in point and "(" not in str(cfg.hydra.sweeper.params[k])]
    return out + [f"{k}={v}" for k, v in point.items()] + FEW_STEPS


def fast_overrides(experiment: str, root: Path) -> list[str]:
    """A few steps of an experiment at tiny sizes; a sweep preset runs as a sweep, cut to one job per
    swept key (a command-line value replaces the list), Optuna's to two trials."""
    cfg = PRESETS[experiment]
    out = small_overrides(experiment, root, {})
    if "n_trials" in cfg.hydra.sweeper:
        out += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    # The parallel launcher is tested in test_sweeps; here one process is quicker (for a single run
    # the launcher is not used at all).
    return out + ["hydra/launcher=basic"]


def exercised(experiment: str) -> tuple:
    """What running a preset exercises beyond composing and building it (every preset is composed and
    built below): its task, sweeper, launcher, architecture, schedule, clipping, length evaluation."""
    cfg = PRESETS[experiment]
    choices = cfg.hydra.runtime.choices
    return (cfg.task._target_, choices["hydra/sweeper"], choices["hydra/launcher"], choices.get("arch"),
            cfg.schedule._target_ if cfg.schedule else None, cfg.train.clip_mode, bool(cfg.task.get("eval_lengths")))


# One preset per combination that `exercised` tells apart (the first by name) runs end to end in the
# default suite; the others (same combination, other values) run with `-m slow`.
RUN_BY_DEFAULT = set({exercised(e): e for e in reversed(EXPERIMENTS)}.values())


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("summary.json"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_every_point_of_its_sweep_composes_validates_and_builds(experiment, tmp_path):
    """In process: the preset, and each value each swept key can take, composes, passes config.validate
    and builds (task on generated data, model, optimiser, schedule, the interface checks). A config
    group's value (cell=gru) is composed; a plain value is set as Hydra sets an override
    (OmegaConf.update on the composed config, which checks its type)."""
    root = tmp_path / "data"
    base = compose_experiment(experiment, *small_overrides(experiment, root, {}))
    points = [{}] + [{key: value} for key, values in sweep_values(experiment).items() for value in values]
    for point in points:
        ((key, value),) = point.items() if point else ((None, None),)
        if key in base.hydra.runtime.choices:
            cfg = compose_experiment(experiment, *small_overrides(experiment, root, point))
            assert cfg.hydra.runtime.choices[key] == value
        else:
            cfg = base.copy()
            if key:
                OmegaConf.update(cfg, key, value, merge=True)
                assert OmegaConf.select(cfg, key) == value
        validate(cfg)
        exp = build_experiment(cfg, torch.device("cpu"))
        assert exp.task.spec and exp.model.num_parameters() > 0 and exp.optimizer.param_groups


@pytest.mark.parametrize("experiment", [e if e in RUN_BY_DEFAULT else pytest.param(e, marks=pytest.mark.slow)
                                        for e in EXPERIMENTS])
def test_every_experiment_runs(experiment, tmp_path):
    proc = run_cli(f"+experiment={experiment}", *fast_overrides(experiment, tmp_path / "data"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = run_dirs(tmp_path / "outputs")
    assert dirs, "no run folder written"
    for d in dirs:
        summary = run_folder.read_summary(d)
        assert summary.status == "completed", summary.error
        assert summary.steps == 4 and summary.final


def test_cli_run_folder_and_wandb_offline_mirror(tmp_path):
    """One run with W&B in its default mode (offline: no key here); the files are the truth and the
    offline W&B run holds the same rows."""
    from rnnbench.records.wandb_offline import find_offline_runs
    from wandb_records import read_history

    proc = run_cli("task=adding", "task.seq_len=10", "task.val_size=32", "train.max_steps=12",
                   "train.log_every=4", "train.eval_every=6", "train.profile_every=6",
                   "model.hidden_size=8", "cell=gru", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path / "outputs" / "runs")
    assert run_dir.parent.parent.name == "runs"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["cell"] == "gru" and summary["seed"] == 0
    assert summary["num_params"] > 0 and summary["throughput_steps_per_s"] > 0
    assert summary["versions"]["torch"] and "git_commit" in summary
    assert summary["machine"]["cpu"] and summary["machine"]["aten_capability"] in ("DEFAULT", "AVX2", "AVX512")
    assert summary["final"]["val/loss"] == pytest.approx(summary["final"]["val/loss_over_baseline"] / 6, rel=1e-6)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"]["seq_len"] == 10 and config["cell"]["_target_"].endswith("GRUCell")
    rows = run_folder.read_metrics(run_dir)
    assert [r["step"] for r in rows if "train/loss" in r] == [4, 8, 12]
    assert [r["step"] for r in rows if "val/loss" in r] == [6, 12]
    assert all("grad/global_norm" in r and "grad/layer0.weight_hh" in r for r in rows if "train/loss" in r)
    profile = json.loads((run_dir / "profile.json").read_text())
    assert profile["step"] == 12 and len(profile["layers"]["layer0"]) == 10
    assert summary["wandb"]["mode"] == "offline"
    typed = run_folder.read_summary(run_dir)  # the schema holds every field the app writes
    assert typed.version == summary["version"] == SUMMARY_VERSION and typed.extra == {}
    assert (typed.cell, typed.seed, typed.steps, typed.final) == ("gru", 0, 12, summary["final"])
    assert typed.to_dict() == summary
    (offline_run,) = find_offline_runs(run_dir)
    assert f"to upload it to W&B: wandb sync {offline_run}\n" in proc.stdout  # the command, ready to paste
    history = read_history(offline_run)
    for row in rows:
        mirrored = [h for h in history if h.get("_step") == row["step"]]
        assert mirrored, f"step {row['step']} missing from the W&B run"
        merged = {k: v for h in mirrored for k, v in h.items()}
        for key, value in row.items():
            if key != "step":
                assert merged[key] == pytest.approx(value), key


BAD_INPUTS = {
    "cell=lstmm": ["Error in config:\ncell=lstmm: config group 'cell' has no option 'lstmm'; did you mean cell=lstm?"],
    "model.hidden_size=-3": ["model.hidden_size=-3", "positive integer"],
    "task.seq_len=0": ["task.seq_len=0", "positive integer"],
    "optim.lr=abc": ["optim.lr=abc", "could not be converted to Float"],
    "train.batch_size=0": ["train.batch_size=0", "positive integer"],
    "+experiment=does_not_exist": ["experiment=does_not_exist: config group 'experiment' has no option "
                                   "'does_not_exist'; choose one of ", "quickstart"],
    "foo=1": ["foo=1: the config has no key or config group 'foo'.", "(To add a key of your own on purpose: +foo=1.)"],
    "model.hiden_size=8": ["model.hiden_size=8: 'model' has no key 'hiden_size'.\nDid you mean model.hidden_size=8?"],
    "model.backend=cudnn": ["model.backend='cudnn'", "auto, explicit, fused"],
    "logger.wandb.mode=sometimes": ["logger.wandb.mode='sometimes'", "offline"],
    "schedule.factor=abc": ["schedule.factor=abc", "could not be converted to Float"],
}


def test_bad_config_messages_as_a_user_sees_them(tmp_path):
    def attempt(override):
        return override, run_cli("train.max_steps=1", "logger.wandb.mode=disabled", override,
                                 cwd=tmp_path, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, BAD_INPUTS))
    for override, proc in results:
        assert proc.returncode == 2, override
        for fragment in BAD_INPUTS[override]:
            assert fragment in proc.stderr, (override, proc.stderr)
        assert "Traceback" not in proc.stderr, (override, proc.stderr)
    assert not list((tmp_path / "outputs").rglob("summary.json")), "a rejected config must not start a run"


# The run folder has one writer (run_folder.hold_folder): a second command given the same folder, by
# mistake or by a second sweep with the same hydra.sweep.dir, is refused before it touches a file.
ONE_FOLDER = ["task=adding", "task.seq_len=10", "task.val_size=16", "train.batch_size=4", "train.max_steps=150",
              "train.log_every=1", "train.eval_every=50", "model.hidden_size=8", "train.threads=1",
              "logger.wandb.mode=disabled"]


def test_two_writers_started_at_once_into_one_folder_one_runs_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "one_folder"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logs = {seed: tmp_path / f"stderr_{seed}.txt" for seed in (1, 2)}
    procs = {seed: subprocess.Popen([sys.executable, "-m", "rnnbench", *ONE_FOLDER, f"train.seed={seed}",
                                     f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=logs[seed].open("w"))
             for seed in (1, 2)}
    done = {seed: (proc.wait(timeout=300), logs[seed].read_text()) for seed, proc in procs.items()}
    assert sorted(code for code, _ in done.values()) == [0, 2], done
    (winner,) = [seed for seed, (code, _) in done.items() if code == 0]
    (refusal,) = [err for code, err in done.values() if code == 2]
    # Refused while the other runs ("in use"), or after it ended (the folder "already holds a run").
    assert f"hydra.run.dir={run_dir} is in use: its run is still going (pid " in refusal \
        or "already holds a run" in refusal, refusal
    assert "Traceback" not in refusal
    summary = run_folder.read_summary(run_dir)
    assert summary.status == "completed" and summary.seed == winner
    assert [r["step"] for r in run_folder.read_metrics(run_dir) if "train/loss" in r] == list(range(1, 151))


def test_a_folder_held_by_a_live_run_is_refused_before_any_file_is_written(tmp_path):
    run_dir = tmp_path / "held"
    with run_folder.hold_folder(run_dir, "hydra.run.dir"):
        proc = run_cli(*ONE_FOLDER, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert f"Error in config:\nhydra.run.dir={run_dir} is in use: its run is still going (pid {os.getpid()} on " \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    written = {p.name for p in run_dir.iterdir()}
    assert not written & {run_folder.SUMMARY_FILE, run_folder.METRICS_FILE, run_folder.CONFIG_FILE, "checkpoints"}, written


def test_the_trainer_settings_are_the_configs_train_keys():
    """Every trainer setting comes from `train` by name; the only ones that are not `train` keys are
    progress and its cadence (logger settings), and the trainer's own defaults are the config's."""
    import dataclasses

    from rnnbench.run.build import train_settings
    from rnnbench.run.config import TrainConf
    from rnnbench.run.train import TrainSettings

    fields = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    from rnnbench.run.config import LoggerConf

    logger_keys = {"progress", "progress_every_s"}
    assert set(fields) - {f.name for f in dataclasses.fields(TrainConf)} == logger_keys
    assert {k: v for k, v in fields.items() if k not in logger_keys} == {k: getattr(TrainConf, k) for k in fields
                                                                         if k not in logger_keys}
    assert {k: fields[k] for k in logger_keys} == {k: getattr(LoggerConf, k) for k in logger_keys}
    cfg = compose(["train.clip=0.5", "train.max_minutes=3", "train.skip_nonfinite=2", "train.lr_backoff=0.5",
                   "train.checkpoint_every=7"])
    settings = train_settings(cfg, progress=False, progress_every_s=5.0)
    assert dataclasses.asdict(settings) == {**{k: cfg.train[k] for k in fields if k not in logger_keys},
                                            "progress": False, "progress_every_s": 5.0}


@pytest.mark.slow
def test_the_readmes_text_classification_command_runs_verbatim(tmp_path):
    """The README's `text_sentiment` command, as written, on a fresh checkout's toy file: it trains, and
    ends with a test evaluation on the split held out of the training file (no test file given)."""
    import re
    import shlex

    line = next(l for l in (REPO / "README.md").read_text().splitlines() if "`text_sentiment`" in l)
    command = shlex.split(re.search(r"`(python -m rnnbench \+experiment=text_sentiment [^`]*)`", line).group(1))
    shutil.copytree(REPO / "examples" / "data", tmp_path / "examples" / "data")
    proc = run_cli(*command[3:], cwd=tmp_path, timeout=900, env={"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = (tmp_path / "outputs").rglob("summary.json")
    record = run_folder.read_summary(summary.parent)
    assert record.status == "completed" and record.test["test/accuracy"] > 0.9
