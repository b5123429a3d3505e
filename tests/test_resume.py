"""Checkpoints and resume (rnnbench/run/checkpoint.py, `Trainer.state_dict`, the app's resume plan).

The bar: a run killed at an arbitrary step (SIGKILL: no warning) and resumed ends with the same
metrics, bit for bit, and the same parameters, optimiser state and random generators as the run that
never stopped; its metrics.jsonl has every step once. Tested as a user runs it (`python -m rnnbench`
in a subprocess), for a synthetic task with dropout and a schedule, and for language modelling with
the state carried across (overlapping) windows. Also: Ctrl-C (SIGINT), SIGTERM and submitit's SIGUSR2
checkpoint the current step and leave the run `stopped` with its step (Ctrl-C: exit 130, no traceback; a
second Ctrl-C stops at once, from the last checkpoint); a killed run reads as `incomplete`; divergence
is a result; a sweep run again skips what is finished and resumes the rest, and so does a sweep stopped
with Ctrl-C.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from datagen import char_corpus
from rnnbench.modules.cells import GRUCell
from rnnbench.modules.models import SequenceModel
from rnnbench.records import run_folder
from rnnbench.records.wandb_offline import find_offline_runs
from rnnbench.run import checkpoint
from rnnbench.run.train import TrainSettings, Trainer
from wandb_records import read_summary as read_wandb_summary
from rnnbench.tasks.adding import AddingTask

# Two layers with dropout between them and before the head (the torch generator is drawn from at every
# step), a cosine schedule, Adam; a checkpoint every 50 steps; a row every step, so a kill can be timed.
SYNTHETIC = ["task=copy", "task.seq_len=10", "task.copy_len=3", "task.val_size=64", "train.batch_size=8",
             "model.hidden_size=16", "arch=deep", "model.num_layers=2", "model.dropout=0.1",
             "model.output_dropout=0.2", "schedule=cosine", "train.max_steps=300", "train.log_every=1",
             "train.eval_every=25", "train.profile_every=50", "train.checkpoint_every=50", "train.threads=1"]
# Truncated BPTT with k1 < k2 (overlapping windows: the carried state is the one after k1 steps),
# embedding and between-layer dropout, a step schedule, SGD with momentum.
LM = ["task=lm", "task.level=char", "task.bptt=8", "task.k1=5", "task.eval_batch_size=4",
      "train.batch_size=4", "model.hidden_size=16", "model.embedding_size=8", "arch=deep",
      "model.num_layers=2", "model.dropout=0.1", "model.embedding_dropout=0.1", "cell=gru",
      "optim=sgd", "optim.lr=0.5", "schedule=step", "schedule.step_size=60", "train.max_steps=240",
      "train.log_every=1", "train.eval_every=40", "train.profile_every=80", "train.checkpoint_every=40",
      "train.threads=1", "logger.wandb.mode=disabled"]
KILL_AFTER = 60  # kill once a row past this step is logged (the checkpoint of step 50 / 40 is then on disk)
NOT_COMPARED = ("time_s", "throughput")  # wall-clock values


def cli_env(root: Path) -> dict[str, str]:
    """W&B files under `root`, no key (module-scoped fixtures run outside conftest's isolation)."""
    base = root / "wandb-home"
    env = {var: str(base) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")}
    env.update(NETRC=str(base / "no-netrc"), WANDB_SILENT="true")
    return env


def start_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    return subprocess.Popen([sys.executable, "-m", "rnnbench", *args], cwd=cwd,
                            env={**full_env, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # its own group, as in a terminal


def last_step(run_dir: Path) -> int:
    rows = run_folder.read_metrics(run_dir) if (run_dir / run_folder.METRICS_FILE).exists() else []
    return rows[-1]["step"] if rows else 0


def signal_after(proc: subprocess.Popen, run_dir: Path, step: int, sig: int, pid_of=None,
                 timeout: float = 240) -> int:
    """Send `sig` once metrics.jsonl shows a step past `step`; returns the step seen then. `pid_of`:
    the process to signal, read from the run folder (default: `proc` itself)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = last_step(run_dir)
        if seen > step:
            pid = pid_of(run_dir) if pid_of else proc.pid
            os.kill(pid, sig)
            return seen
        assert proc.poll() is None, f"the run ended before step {step}:\n{proc.communicate()[1][-3000:]}"
        time.sleep(0.005)
    raise AssertionError(f"no step past {step} logged in {timeout} s")


def signal_twice_while_paused(proc: subprocess.Popen, timeout: float = 240) -> None:
    """Ctrl-C, then Ctrl-C again once the first was taken, both while the run sleeps in its
    `testing.pause_at_step` hook, i.e. in the middle of a step."""
    deadline = time.time() + timeout
    for waited_for in ("testing.pause_at_step", "Ctrl-C: stopping after this step"):
        while waited_for not in proc.stderr.readline():
            assert proc.poll() is None and time.time() < deadline, f"no {waited_for!r} on stderr"
        proc.send_signal(signal.SIGINT)


def rows_without_clock(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in NOT_COMPARED} for row in run_folder.read_metrics(run_dir)]


def assert_same_state(a, b, where: str = "") -> None:
    """Equal nested containers; tensors equal bit for bit (torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def final_trainer_state(run_dir: Path) -> dict:
    state = checkpoint.load(checkpoint.latest(run_dir))["trainer"]
    for clock in ("train_time_s", "elapsed_s"):
        state["result"].pop(clock)
    return state


def assert_same_run(reference: Path, resumed: Path) -> None:
    a, b = run_folder.read_summary(reference), run_folder.read_summary(resumed)
    assert a.status == b.status == "completed", (a.error, b.error)
    for key in ("steps", "final", "best", "best_step", "test", "solved_at", "config_fingerprint"):
        assert getattr(a, key) == getattr(b, key), key  # exact: floats compared with ==
    assert rows_without_clock(reference) == rows_without_clock(resumed)
    assert run_folder.read_profiles(reference) == run_folder.read_profiles(resumed)
    assert_same_state(final_trainer_state(reference), final_trainer_state(resumed), "trainer")


def steps_of(run_dir: Path) -> list[int]:
    return [row["step"] for row in run_folder.read_metrics(run_dir) if "test/loss" not in row]


# ------------------------------------------------------------------------------------------------
# Synthetic task: one uninterrupted run, one killed with SIGKILL, one stopped with SIGTERM, one with
# Ctrl-C (SIGINT), one with Ctrl-C twice (in the middle of step 60)

STOPPED_BY = {"killed": signal.SIGKILL, "terminated": signal.SIGTERM, "interrupted": signal.SIGINT}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    env = cli_env(root)
    stopped = (*STOPPED_BY, "twice")
    runs = {name: root / name for name in ("reference", *stopped)}
    offline = ("killed", "interrupted", "twice")
    procs = {name: start_cli(*SYNTHETIC, f"hydra.run.dir={path}",
                             "logger.wandb.mode=" + ("offline" if name in offline else "disabled"),
                             *(["testing.pause_at_step=60"] if name == "twice" else []), cwd=root, env=env)
             for name, path in runs.items()}
    with ThreadPoolExecutor(len(stopped)) as pool:
        # Ctrl-C as a terminal sends it: to the whole process group (W&B's service process too)
        futures = {name: pool.submit(signal_after, procs[name], runs[name], KILL_AFTER, sig,
                                     (lambda _, pid=procs[name].pid: -pid) if sig == signal.SIGINT else None)
                   for name, sig in STOPPED_BY.items()}
        futures["twice"] = pool.submit(signal_twice_while_paused, procs["twice"])
        seen = {name: f.result() for name, f in futures.items()}
    outcomes = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        outcomes[name] = (proc.returncode, out + err, err)
    assert outcomes["reference"][0] == 0, outcomes["reference"][1][-3000:]
    after_stop = {name: {"summary": run_folder.read_summary(runs[name]), "steps": steps_of(runs[name]),
                         "checkpoints": [p.name for p in checkpoint.list_checkpoints(runs[name])],
                         "returncode": outcomes[name][0], "output": outcomes[name][1], "stderr": outcomes[name][2],
                         "seen": seen[name]}
                  for name in stopped}
    with ThreadPoolExecutor(2) as pool:
        resumes = dict(zip(stopped, pool.map(
            lambda name: run_cli(*SYNTHETIC, f"hydra.run.dir={runs[name]}", "train.resume=true",
                                 "logger.wandb.mode=" + ("offline" if name in offline else "disabled"),
                                 cwd=root, env=env),
            stopped)))
    for name, proc in resumes.items():
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    return {"runs": runs, "after_stop": after_stop, "resumes": resumes, "root": root, "env": env}


def test_a_run_killed_without_warning_reads_as_incomplete(synthetic):
    killed = synthetic["after_stop"]["killed"]
    assert killed["returncode"] == -signal.SIGKILL
    assert killed["summary"].status == "incomplete"  # written `running`, its process is gone
    assert killed["checkpoints"][-1] == "step-00000050.pt"
    assert killed["steps"][-1] >= killed["seen"] > KILL_AFTER  # rows past the checkpoint were logged


def test_sigkill_at_any_step_then_resume_is_bit_identical(synthetic):
    runs = synthetic["runs"]
    assert_same_run(runs["reference"], runs["killed"])
    assert steps_of(runs["killed"]) == list(range(1, 301))  # every step once: no duplicate, none missing
    summary = run_folder.read_summary(runs["killed"])
    assert summary.resumed == [{"from_step": 50, "checkpoint": "step-00000050.pt"}]
    assert "rows after step 50 dropped" in synthetic["resumes"]["killed"].stdout  # Hydra logs to stdout
    # the same W&B run goes on: same id, a second offline segment
    killed_id = synthetic["after_stop"]["killed"]["summary"].wandb["id"]
    assert summary.wandb["id"] == killed_id
    segments = find_offline_runs(runs["killed"])
    assert len(segments) == 2 and all(s.name.endswith(killed_id) for s in segments)
    assert f"wandb sync {segments[0]} {segments[1]}\n" in synthetic["resumes"]["killed"].stdout  # both segments
    assert read_wandb_summary(segments[-1])["status"] == "completed"
    # two checkpoints kept: the final one and the one before it (step 250, or the evaluation of step 275)
    kept = [p.name for p in checkpoint.list_checkpoints(runs["killed"])]
    assert kept[0] in ("step-00000250.pt", "step-00000275.pt") and kept[1] == "step-00000300.pt"


def test_sigterm_checkpoints_the_current_step_then_resume_is_bit_identical(synthetic):
    stopped = synthetic["after_stop"]["terminated"]
    step = stopped["steps"][-1]
    assert stopped["returncode"] == -signal.SIGTERM  # the signal's own effect, after the checkpoint
    assert stopped["checkpoints"][-1] == f"step-{step:08d}.pt"  # nothing lost: the step it was on
    assert stopped["summary"].status == "stopped" and stopped["summary"].steps == step
    assert stopped["summary"].interrupted == {"signal": "SIGTERM", "step": step, "checkpoint": f"step-{step:08d}.pt"}
    assert "stopped by SIGTERM after step" in stopped["output"]
    assert f"hydra.run.dir={synthetic['runs']['terminated']} train.resume=true" in stopped["output"]
    run = synthetic["runs"]["terminated"]
    assert_same_run(synthetic["runs"]["reference"], run)
    assert steps_of(run) == list(range(1, 301))
    assert run_folder.read_summary(run).resumed[0]["from_step"] == step


def test_ctrl_c_checkpoints_the_current_step_exits_130_then_resume_is_bit_identical(synthetic):
    stopped = synthetic["after_stop"]["interrupted"]
    step = stopped["steps"][-1]
    assert step >= stopped["seen"] > KILL_AFTER
    assert stopped["returncode"] == 130, stopped["output"][-3000:]
    assert "Traceback" not in stopped["stderr"] and "KeyboardInterrupt" not in stopped["stderr"]
    assert "Ctrl-C: stopping after this step" in stopped["stderr"]
    assert stopped["checkpoints"][-1] == f"step-{step:08d}.pt"
    summary = stopped["summary"]
    assert summary.status == "stopped" and summary.steps == step and summary.error is None
    assert summary.interrupted == {"signal": "SIGINT", "step": step, "checkpoint": f"step-{step:08d}.pt"}
    assert f"stopped by SIGINT after step {step}" in stopped["output"]
    run = synthetic["runs"]["interrupted"]
    assert f"hydra.run.dir={run} train.resume=true" in stopped["output"]
    assert_same_run(synthetic["runs"]["reference"], run)
    assert steps_of(run) == list(range(1, 301))
    assert run_folder.read_summary(run).resumed == [{"from_step": step, "checkpoint": f"step-{step:08d}.pt"}]
    first, second = find_offline_runs(run)  # W&B's service got the Ctrl-C too: its run was closed, then continued
    assert read_wandb_summary(first)["status"] == "stopped" and read_wandb_summary(second)["status"] == "completed"
    assert second.name.endswith(summary.wandb["id"])


def test_a_second_ctrl_c_stops_at_once_from_the_last_checkpoint_then_resume_is_bit_identical(synthetic):
    stopped = synthetic["after_stop"]["twice"]
    assert stopped["returncode"] == 130, stopped["output"][-3000:]
    assert "Traceback" not in stopped["stderr"] and "KeyboardInterrupt" not in stopped["stderr"]
    summary = stopped["summary"]  # stopped in the middle of step 61: step 60 is the last one run
    assert summary.status == "stopped" and summary.steps == 60 and summary.error is None
    # the last checkpoint is that of the evaluation at step 50 (default checkpoint_at_eval)
    assert summary.interrupted == {"signal": "SIGINT", "step": 60, "checkpoint": "step-00000050.pt", "at_once": True}
    assert stopped["checkpoints"][-1] == "step-00000050.pt"
    assert "stopped at once by a second SIGINT" in stopped["output"]
    run = synthetic["runs"]["twice"]
    assert_same_run(synthetic["runs"]["reference"], run)
    assert steps_of(run) == list(range(1, 301))
    resumed = run_folder.read_summary(run)
    assert resumed.resumed == [{"from_step": 50, "checkpoint": "step-00000050.pt"}]
    assert resumed.wandb["id"] == summary.wandb["id"]  # one W&B run: the resume continues it
    first, second = find_offline_runs(run)
    assert read_wandb_summary(first)["status"] == "stopped" and read_wandb_summary(second)["status"] == "completed"


@pytest.mark.slow
def test_submitit_preemption_requeues_and_resumes_into_the_same_folder_and_wandb_run(synthetic):
    """hydra-submitit-launcher's local executor runs a job the way SLURM does (pickled job, submitit's
    signal handlers); SIGUSR2 to the job makes it checkpoint, submitit requeue it, and the requeued
    job resume in the same job folder and W&B run. ~40 s."""
    root, env = synthetic["root"], synthetic["env"]
    sweep = root / "preempted"
    proc = start_cli("-m", "hydra/launcher=submitit_local", *SYNTHETIC, "logger.wandb.mode=offline",
                     f"hydra.sweep.dir={sweep}", cwd=root, env=env)
    job = sweep / "0"
    seen = signal_after(proc, job, KILL_AFTER, signal.SIGUSR2,
                        pid_of=lambda d: json.loads((d / run_folder.SUMMARY_FILE).read_text())["pid"])
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, stderr[-3000:]
    summary = run_folder.read_summary(job)
    (resumed,) = summary.resumed
    assert resumed["from_step"] >= seen  # the step it was on when the signal came
    assert_same_run(synthetic["runs"]["reference"], job)
    assert steps_of(job) == list(range(1, 301))
    segments = find_offline_runs(job)
    assert len(segments) == 2 and {s.name.rsplit("-", 1)[1] for s in segments} == {summary.wandb["id"]}


# ------------------------------------------------------------------------------------------------
# Language modelling: the carried state is part of the checkpoint


@pytest.fixture(scope="module")
def language_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    env = cli_env(root)
    corpus = char_corpus(root / "corpus.txt", n_chars=3000)  # 135 windows an epoch: the streams wrap
    args = [*LM, f"task.corpus={corpus}"]
    runs = {name: root / name for name in ("reference", "killed")}
    procs = {name: start_cli(*args, f"hydra.run.dir={path}", cwd=root, env=env) for name, path in runs.items()}
    signal_after(procs["killed"], runs["killed"], KILL_AFTER, signal.SIGKILL)
    procs["killed"].communicate(timeout=60)
    assert procs["killed"].returncode == -signal.SIGKILL
    resumed = run_cli(*args, f"hydra.run.dir={runs['killed']}", "train.resume=true", cwd=root, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stderr = procs["reference"].communicate(timeout=240)[1]
    assert procs["reference"].returncode == 0, stderr[-3000:]
    return runs


def test_language_model_sigkill_then_resume_is_bit_identical(language_model):
    assert_same_run(language_model["reference"], language_model["killed"])
    assert steps_of(language_model["killed"]) == list(range(1, 241))
    summary = run_folder.read_summary(language_model["killed"])
    assert summary.resumed == [{"from_step": 40, "checkpoint": "step-00000040.pt"}]
    state = final_trainer_state(language_model["killed"])
    assert state["carried_state"] is not None and state["task"]["epoch"] >= 1  # streams wrapped around


# ------------------------------------------------------------------------------------------------
# In-process: the trainer's state_dict covers every optimiser and schedule, with a crash simulated


class Rows:
    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append({k: v for k, v in row.items() if k not in NOT_COMPARED})

    def log_profile(self, step, profile):
        pass


class Crash(Exception):
    pass


def adding_trainer(optim: str, schedule: str, checkpoints: list, crash_at: int | None = None):
    torch.manual_seed(0)
    task = AddingTask(seq_len=8, batch_size=8, val_size=32, seed=0)
    model = SequenceModel(task.spec, GRUCell, 8, num_layers=2, dropout=0.2, output_dropout=0.1)
    optimizer = {"sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
                 "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
                 "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2)}[optim](model.parameters())
    scheduler = {"plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5),
                 "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
                 "none": lambda o: None}[schedule](optimizer)
    settings = TrainSettings(max_steps=30, log_every=1, eval_every=5, profile_every=0, checkpoint_every=10,
                             checkpoint_at_eval=False, checkpoint_minutes=0, progress=False)

    def on_step(step):
        if step == crash_at:
            raise Crash

    rows = Rows()
    trainer = Trainer(model, task, optimizer, scheduler, settings, [rows], on_step=on_step,
                      checkpoint=lambda state: checkpoints.append(copy.deepcopy(state)))  # tensors live on
    return trainer, rows


@pytest.mark.parametrize("optim,schedule", [("sgd", "step"), ("rmsprop", "plateau"), ("adamw", "none")])
def test_trainer_state_dict_resumes_exactly(tmp_path, optim, schedule):
    reference, full_rows = adding_trainer(optim, schedule, [])
    reference.fit()
    states = []
    crashed, rows = adding_trainer(optim, schedule, states, crash_at=17)
    with pytest.raises(Crash):
        crashed.fit()
    assert [state["step"] for state in states] == [10]
    # through a real file, as a resumed run reads it
    path = checkpoint.save(tmp_path, {"step": 10, "config_fingerprint": "-", "config": {}, "trainer": states[-1]})
    resumed, more_rows = adding_trainer(optim, schedule, [])
    resumed.load_state_dict(checkpoint.load(path)["trainer"])
    result = resumed.fit()
    assert [r for r in rows.rows if r["step"] <= 10] + more_rows.rows == full_rows.rows
    assert result.final == reference.result.final and result.best == reference.result.best
    a, b = resumed.state_dict(), reference.state_dict()
    for state in (a, b):
        state["result"].pop("train_time_s"), state["result"].pop("elapsed_s")
    assert_same_state(a, b)


# ------------------------------------------------------------------------------------------------
# Divergence is a result; the guard rails are off unless asked for


def test_divergence_is_recorded_and_exits_cleanly_and_guard_rails_are_recorded(tmp_path):
    diverging = ["cell=vanilla", "cell.nonlinearity=relu", "optim=sgd", "optim.lr=1e6", "train.clip_mode=off",
                 "task=adding", "task.seq_len=10", "task.val_size=16", "train.batch_size=8", "model.hidden_size=8",
                 "train.max_steps=50", "train.log_every=5", "train.eval_every=5", "train.threads=1"]
    with ThreadPoolExecutor(2) as pool:
        plain, guarded = pool.map(lambda extra: run_cli(*diverging, *extra, cwd=tmp_path), [
            ["hydra.run.dir=plain", "logger.wandb.mode=offline"],
            ["hydra.run.dir=guarded", "logger.wandb.mode=disabled", "train.skip_nonfinite=2",
             "train.lr_backoff=0.5"]])
    assert plain.returncode == 0, plain.stderr[-3000:]  # a result, not a crash
    summary = run_folder.read_summary(tmp_path / "plain")
    assert summary.status == "diverged" and isinstance(summary.diverged_at, int)
    assert summary.guard_rails is None  # off by default
    last = run_folder.read_metrics(tmp_path / "plain")[-1]
    assert last["step"] == summary.diverged_at and last["diverged"] is True
    (wandb_run,) = find_offline_runs(tmp_path / "plain")
    mirrored = read_wandb_summary(wandb_run)
    assert mirrored["status"] == "diverged" and mirrored["diverged_at"] == summary.diverged_at
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    summary = run_folder.read_summary(tmp_path / "guarded")
    rails = summary.guard_rails
    assert rails["skip_nonfinite"] == 2 and rails["lr_backoff"] == 0.5 and len(rails["skipped_steps"]) == 2
    # lr 1e6 has wrecked the weights before the first non-finite step: skipping cannot save it
    assert summary.status == "diverged" and summary.diverged_at > rails["skipped_steps"][-1]
    skipped = [r for r in run_folder.read_metrics(tmp_path / "guarded") if r.get("skipped_nonfinite")]
    assert [r["step"] for r in skipped] == rails["skipped_steps"] and skipped[1]["lr"] == 1e6 * 0.25


def test_a_skipped_non_finite_step_lets_the_run_go_on():
    """One poisoned batch (NaN inputs) with skip_nonfinite=1: no update from it, the run completes."""
    torch.manual_seed(0)
    task = AddingTask(seq_len=8, batch_size=8, val_size=32, seed=0)
    draw = task.train_batch

    def poisoned():
        batch = draw()
        if task._batches_drawn == 4:
            batch.inputs[0, 0, 0] = float("nan")
        return batch

    task.train_batch = poisoned
    model = SequenceModel(task.spec, GRUCell, 8)
    rows = Rows()
    settings = TrainSettings(max_steps=10, log_every=1, eval_every=10, profile_every=0, progress=False,
                             skip_nonfinite=1, lr_backoff=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    result = Trainer(model, task, optimizer, None, settings, [rows]).fit()
    assert result.status == "completed" and result.skipped_steps == [4] and result.steps == 10
    assert optimizer.param_groups[0]["lr"] == 5e-3
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# Sweeps run again: finished jobs are skipped, failed ones resume


def test_a_sweep_run_again_skips_finished_jobs_and_resumes_the_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "task=adding", "task.seq_len=8", "task.val_size=16", "train.batch_size=4",
            "model.hidden_size=8", "train.max_steps=6,12", "testing.fail_at_step=8", "train.checkpoint_every=4",
            "train.log_every=2", "train.eval_every=4", "train.threads=1", "logger.wandb.mode=disabled",
            f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode != 0  # one job failed
    assert run_folder.read_summary(sweep / "0").status == "completed"
    failed = run_folder.read_summary(sweep / "1")
    assert failed.status == "failed" and "fail_at_step=8" in failed.error
    results = ("summary.json", "metrics.jsonl", "config.yaml", "profiles.jsonl", "checkpoints/step-00000006.pt")
    finished_before = {name: (sweep / "0" / name).read_bytes() for name in results}

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already completed with this config (step 6): not run again" in again.stdout  # Hydra logs a sweep there
    assert {name: (sweep / "0" / name).read_bytes() for name in results} == finished_before  # not rewritten
    resumed = run_folder.read_summary(sweep / "1")
    assert resumed.status == "completed" and resumed.steps == 12
    assert resumed.resumed == [{"from_step": 8, "checkpoint": "step-00000008.pt"}]
    assert steps_of(sweep / "1") == [2, 4, 6, 8, 10, 12]
    assert "Sweep summary (2 runs" in again.stdout  # the report shows the whole sweep


@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_a_sweep_stopped_with_ctrl_c_leaves_its_jobs_resumable_and_runs_again_to_the_end(tmp_path, launcher):
    """Ctrl-C in a terminal signals the whole process group: the sweep and, under the parallel launcher,
    its workers. Basic launcher: the job in training stops, and the sweep with it; parallel (2 workers):
    both jobs in training stop, the third never starts."""
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra/launcher={launcher}", "task=adding", "task.seq_len=8", "task.val_size=16",
            "train.batch_size=4", "model.hidden_size=8", "train.seed=0,1,2", "train.max_steps=400",
            "train.log_every=1", "train.eval_every=25", "train.threads=1", "logger.wandb.mode=disabled",
            f"hydra.sweep.dir={sweep}", *(["hydra.launcher.n_jobs=2"] if launcher == "parallel" else [])]
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    proc = subprocess.Popen([sys.executable, "-m", "rnnbench", *args], cwd=tmp_path, start_new_session=True,
                            env={**full_env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    training = ["0", "1"] if launcher == "parallel" else ["0"]
    while min(last_step(sweep / job) for job in training) <= 20:  # both in training (workers start apart)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    stopped = {job: run_folder.read_summary(sweep / job) for job in training}
    for job, summary in stopped.items():
        assert summary.status == "stopped" and summary.interrupted["signal"] == "SIGINT", job
        assert summary.interrupted["checkpoint"] == f"step-{summary.steps:08d}.pt"
    assert f"To resume: run the same sweep command with hydra.sweep.dir={sweep}" in out
    assert not (sweep / "2").exists()  # the sweep stopped with its jobs: the next one never started

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    for job, summary in stopped.items():
        resumed = run_folder.read_summary(sweep / job)
        assert resumed.status == "completed" and resumed.resumed[0]["from_step"] == summary.steps
        assert steps_of(sweep / job) == list(range(1, 401))
    assert run_folder.read_summary(sweep / "2").status == "completed"


def test_resuming_a_folder_without_a_checkpoint_says_so_and_keeps_its_wandb_run(tmp_path):
    """A run that crashed before its first checkpoint (none by the clock or at evaluations here)."""
    args = ["task=adding", "task.seq_len=8", "task.val_size=16", "train.batch_size=4", "model.hidden_size=8",
            "train.max_steps=6", "train.log_every=1", "train.eval_every=100", "train.checkpoint_minutes=0",
            "train.checkpoint_at_eval=false", "train.threads=1", "logger.wandb.mode=offline", "hydra.run.dir=run"]
    crashed = run_cli(*args, "testing.fail_at_step=3", cwd=tmp_path)
    assert crashed.returncode == 1 and checkpoint.list_checkpoints(tmp_path / "run") == []
    first = run_folder.read_summary(tmp_path / "run")
    resumed = run_cli(*args, "train.resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "holds a run (status failed, last logged step 3) but no checkpoint: nothing to resume from, starting again " \
           "from step 0" in resumed.stdout
    assert "logged again from the checkpoint" not in resumed.stdout
    assert "the 3 rows of the earlier attempt dropped (no checkpoint" in resumed.stdout
    assert steps_of(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    # the earlier attempt's profile of step 0 goes too: the new attempt profiles its initialisation again
    assert [profile["step"] for profile in run_folder.read_profiles(tmp_path / "run")] == [0, 6]
    summary = run_folder.read_summary(tmp_path / "run")
    assert summary.status == "completed" and summary.wandb["id"] == first.wandb["id"]
    assert {s.name.rsplit("-", 1)[1] for s in find_offline_runs(tmp_path / "run")} == {first.wandb["id"]}
