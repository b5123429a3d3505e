"""Sweeps end to end, as a user runs them: `python -m rnnbench -m ...` in a subprocess, then what the
sweep left on disk (rnnbench/run/callbacks.py, rnnbench/report/, conf/experiment/sweep_*, search_*).

Every sweep is tiny (T=10, 6 steps, width 8) so the whole file takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli
from rnnbench import report
from rnnbench.records.wandb_offline import find_offline_runs
from rnnbench.records.wandb_sink import sweep_group
from rnnbench.run import callbacks
from wandb_records import read_history, read_run

# One torch thread per job: on a shared 2-core machine, two threads per tiny job made each job ~50x
# slower (8-12 s instead of 0.2 s for these 6 steps) as the threads wait for each other.
TINY = ["task.seq_len=10", "task.val_size=16", "train.batch_size=4", "train.max_steps=6", "train.log_every=2",
        "train.eval_every=3", "train.profile_every=3", "model.hidden_size=8", "train.threads=1"]


def isolated_env(root: Path) -> dict[str, str]:
    """W&B's folders under `root`, no API key, no netrc (module-scoped fixtures run before the
    autouse per-test isolation of conftest.py)."""
    home = root / "wandb_home"
    home.mkdir(exist_ok=True)
    env = {var: str(home) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")}
    return {**env, "WANDB_API_KEY": "", "NETRC": str(root / "no-netrc")}


def sweep(root: Path, *args: str):
    """Run a sweep in `root`; returns the finished process and its sweep folder."""
    proc = run_cli(*args, cwd=root, env=isolated_env(root), timeout=240)
    (sweep_dir,) = (root / "outputs" / "sweeps").glob("*/*")
    return proc, sweep_dir


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "summary.json").read_text()) for d in job_dirs(sweep_dir)}


# ------------------------------------------------------------------------------------------------
# 2 cells x 2 seeds, local parallel launcher


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    proc, sweep_dir = sweep(root, "-m", "task=adding", *TINY, "cell=gru,lstm", "train.seed=0,1",
                            "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "logger.wandb.mode=offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, sweep_dir


def test_parallel_sweep_writes_one_run_folder_per_job(parallel):
    proc, sweep_dir = parallel
    dirs = job_dirs(sweep_dir)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    hydra_cfg = yaml.safe_load((dirs[0] / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra_cfg["launcher"]["_target_"].endswith("JoblibLauncher") and hydra_cfg["launcher"]["n_jobs"] == 2
    jobs = {(s["cell"], s["seed"]): s for s in summaries(sweep_dir).values()}
    assert set(jobs) == {("gru", 0), ("gru", 1), ("lstm", 0), ("lstm", 1)}
    assert all(s["status"] == "completed" and s["steps"] == 6 for s in jobs.values())
    assert "Sweep summary (4 runs, 4 completed)" in proc.stdout
    assert "Not completed" not in (sweep_dir / "sweep_summary.md").read_text()


def test_report_means_and_stds_equal_those_of_the_summary_files(parallel):
    _, sweep_dir = parallel
    values = defaultdict(list)  # (cell, metric) -> the final values over seeds, from summary.json
    for summary in summaries(sweep_dir).values():
        for metric, value in summary["final"].items():
            values[summary["cell"], metric].append(value)
    metrics = sorted({m for _, m in values})
    assert "val/loss" in metrics

    runs = report.load_runs(sweep_dir)
    stats = report.summarize(runs, metrics=metrics).set_index("cell")
    assert stats.attrs["rows"] == ["cell"] and list(stats.index) == ["gru", "lstm"]
    for cell in ("gru", "lstm"):
        assert stats.at[cell, "n"] == 2
        for metric in metrics:
            x = np.array(values[cell, metric], dtype=float)
            assert len(x) == 2
            assert stats.at[cell, f"final/{metric} mean"] == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
            assert stats.at[cell, f"final/{metric} std"] == pytest.approx(x.std(ddof=1), rel=1e-12, abs=1e-15)


def test_latex_of_a_real_sweep_has_balanced_rows(parallel):
    runs = report.load_runs(parallel[1])
    text = report.to_latex(report.summarize(runs, reference="cell=lstm"))
    lines = text.strip().splitlines()
    spec = re.fullmatch(r"\\begin\{tabular\}\{([lr]+)\}", lines[0]).group(1)
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule" and lines[-3] == r"\bottomrule"
    assert lines[-2].startswith(r"\multicolumn") and "Bold: " in lines[-2] and lines[-1] == r"\end{tabular}"
    rows = [lines[2], *lines[4:-3]]
    assert len(rows) == 3  # the header, gru, lstm
    for row in rows:
        assert row.endswith(r" \\") and len(re.split(r"(?<!\\)&", row)) == len(spec)


def test_figures_of_a_real_sweep_are_written(parallel, tmp_path):
    runs = report.load_runs(parallel[1])
    written, notes = report.write_figures(runs, tmp_path, ["cell"])
    assert notes == []
    assert sorted(p.name for p in written) == [  # GRU and LSTM have gates: their saturation plane too
        "gate_saturation_layer0.pdf", "gate_saturation_layer0.png",
        "gradient_profile_layer0.pdf", "gradient_profile_layer0.png",
        "learning_curves_val_loss.pdf", "learning_curves_val_loss.png",
    ]
    for path in written:
        data = path.read_bytes()
        assert len(data) > 5000 and data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF")


def test_sweep_summary_is_one_wandb_run_in_the_sweeps_group(parallel):
    _, sweep_dir = parallel
    (summary_run,) = find_offline_runs(sweep_dir / "wandb")
    info = read_run(summary_run)
    assert info["job_type"] == "sweep-summary" and info["exit_code"] == 0
    job_groups = {read_run(r)["group"] for d in job_dirs(sweep_dir) for r in find_offline_runs(d)}
    assert job_groups == {info["group"]} == {sweep_group(sweep_dir)} == {f"{sweep_dir.parent.name}_{sweep_dir.name}"}

    (row,) = read_history(summary_run)  # logged once
    table_ref = row["sweep/summary"]
    assert table_ref["_type"] == "table-file" and table_ref["nrows"] == 2
    table = json.loads((summary_run / "files" / table_ref["path"]).read_text())
    logged = [dict(zip(table["columns"], line)) for line in table["data"]]
    stats = report.summarize(report.load_runs(sweep_dir))
    assert [r["cell"] for r in logged] == list(stats["cell"])
    for r, (_, s) in zip(logged, stats.iterrows()):
        assert r["n"] == s["n"] and r["final/val/loss mean"] == pytest.approx(s["final/val/loss mean"])
    assert row["sweep/runs"]["nrows"] == 4


# ------------------------------------------------------------------------------------------------
# Failing jobs


def test_failing_jobs_under_the_parallel_launcher_leave_the_others_intact(tmp_path):
    # On copy (an output at every step) the pyramid's 8x time reduction is rejected when the model
    # is built: a valid config that fails at run time.
    proc, sweep_dir = sweep(tmp_path, "-m", "task=copy", *TINY, "cell=gru,lstm", "arch=single,pyramid",
                            "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "logger.wandb.mode=disabled")
    assert proc.returncode == 1
    runs = report.load_runs(sweep_dir).set_index(["cell", "arch"])
    assert len(runs) == 4
    for cell in ("gru", "lstm"):
        ok, bad = runs.loc[(cell, "single")], runs.loc[(cell, "pyramid")]
        assert ok["status"] == "completed" and ok["final/val/recall_accuracy"] >= 0
        assert bad["status"] == "failed" and "model.pyramid=true reduces time 8x" in bad["error"]
    stats = report.summarize(runs.reset_index())
    assert "0 (1 failed)" in report.to_markdown(stats)
    assert "Not completed (2 of 4)" in proc.stdout
    assert len(re.findall(r"- \d \[cell=\w+ arch=pyramid\]: failed: \w+: model.pyramid=true", proc.stdout)) == 2


def test_basic_launcher_runs_every_job_after_a_failure_and_exits_1(tmp_path):
    # Job 0 crashes after its first step, job 1 diverges, job 2 crashes, job 3 completes; the basic
    # launcher runs them one after the other, in this order.
    proc, sweep_dir = sweep(tmp_path, "-m", "task=adding", *TINY, "cell=vanilla", "optim=sgd", "train.clip=0",
                            "optim.lr=1e9,1e-2", "testing.fail_at_step=1,null", "logger.wandb.mode=disabled")
    assert proc.returncode == 1
    # Hydra re-raises the first failure once every job has run ...
    assert "Error executing job with overrides" in proc.stderr and "failing on purpose" in proc.stderr
    jobs = summaries(sweep_dir)
    assert [jobs[n]["status"] for n in "0123"] == ["failed", "diverged", "failed", "completed"]
    assert jobs["0"]["error"].startswith("RuntimeError: testing.fail_at_step=1") and jobs["1"]["diverged_at"] >= 1
    assert jobs["3"]["final"]["val/loss"] > 0
    # ... and the summary, printed at exit, says which jobs did not complete and why.
    assert "Not completed (3 of 4)" in proc.stdout
    # (named by the keys that change what a run computes: not the test hook testing.fail_at_step)
    assert re.search(r"- 1 \[optim.lr=1e\+09\]: diverged: at step \d+", proc.stdout)
    assert "- 2 [optim.lr=0.01]: failed: RuntimeError: testing.fail_at_step=1" in proc.stdout
    assert "Not completed (3 of 4)" in (sweep_dir / "sweep_summary.md").read_text()


# ------------------------------------------------------------------------------------------------
# Optuna


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    tiny = [o for o in TINY if not o.startswith("model.hidden_size")]  # searched here
    proc, sweep_dir = sweep(root, "+experiment=search_lr_adding", "hydra/launcher=basic",
                            "hydra.sweeper.n_trials=3", *tiny, "logger.wandb.mode=disabled")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, sweep_dir


def test_optuna_preset_runs_trials_and_minimises_the_returned_metric(search):
    _, sweep_dir = search
    jobs = summaries(sweep_dir)
    assert len(jobs) == 3 and all(s["status"] == "completed" for s in jobs.values())
    assert {s["main_metric"] for s in jobs.values()} == {"val/loss"}
    losses = {n: s["final"]["val/loss"] for n, s in jobs.items()}
    best = min(losses, key=losses.get)
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(losses[best])
    overrides = dict(report.parse_override(o) for o in jobs[best]["overrides"])
    assert set(results["best_params"]) == {"optim.lr", "model.hidden_size", "train.clip"}
    for key, value in results["best_params"].items():
        assert overrides[key] == pytest.approx(value)
    assert 1e-4 <= overrides["optim.lr"] <= 1e-1 and overrides["model.hidden_size"] in (32, 64, 128)


def test_importance_of_each_searched_hyperparameter_is_written(search, capsys):
    proc, sweep_dir = search
    importance = json.loads((sweep_dir / "importance.json").read_text())
    assert importance["evaluator"] == "MeanDecreaseImpurityImportanceEvaluator"
    assert importance["metric"] == "val/loss" and importance["n_trials"] == 3
    assert set(importance["importances"]) == {"optim.lr", "model.hidden_size", "train.clip"}
    assert sum(importance["importances"].values()) == pytest.approx(1.0)
    assert "hyperparameter importance for val/loss (3 trials" in proc.stdout
    # The report rebuilds it from the folders alone.
    assert report.main([str(sweep_dir), "--importance"]) == 0
    assert "optim.lr" in capsys.readouterr().err


def test_a_search_goes_on_past_diverged_trials_and_records_them_as_failed(tmp_path):
    # a diverged run returns no value: Optuna records a failed trial and the search draws the next
    # (with NaN, hydra-optuna-sweeper 1.3 told Optuna the value twice and the whole search ended there)
    proc, sweep_dir = sweep(tmp_path, "+experiment=search_lr_adding", "hydra/launcher=basic",
                            "hydra.sweeper.n_trials=4", "optim.lr=choice(0.01, 1e30)", *TINY,
                            "logger.wandb.mode=disabled")
    status = {n: s["status"] for n, s in summaries(sweep_dir).items()}
    assert len(status) == 4 and set(status.values()) == {"completed", "diverged"}, status
    assert "Values were told" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode == 1 and "did not complete" in proc.stdout + proc.stderr  # the summary says so
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"]["optim.lr"] == pytest.approx(0.01)


def test_a_search_in_the_wrong_direction_is_flagged(search):
    runs = report.load_runs(search[1])
    assert callbacks.direction_warnings(runs, "minimize") == []
    (warning, _) = callbacks.direction_warnings(runs, "maximize")
    assert "val/loss" in warning and "hydra.sweeper.direction=minimize" in warning


def test_a_failed_jobs_exception_is_read_from_hydras_job_return():
    """callbacks.job_exception reads a private attribute of Hydra's JobReturn (no public way exists):
    this fails loudly if a Hydra release changes it."""
    from hydra.core.utils import JobReturn, JobStatus

    error = RuntimeError("boom")
    job_return = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert callbacks.job_exception(job_return) is error


# ------------------------------------------------------------------------------------------------
# Two sweeps given one folder: the first keeps it (its runs, multirun.yaml, sweep_summary.md), the
# second is refused before it writes anything


def test_two_sweeps_started_at_once_into_one_folder_one_runs_the_other_is_refused(tmp_path):
    sweep_dir = tmp_path / "shared"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **isolated_env(tmp_path))
    seeds = {"first": "1,11", "second": "2,12"}
    logs = {name: tmp_path / f"{name}.txt" for name in seeds}
    procs = {name: subprocess.Popen([sys.executable, "-m", "rnnbench", "-m", "task=adding", *TINY,
                                     "train.max_steps=150", "train.eval_every=50", "cell=gru",
                                     f"train.seed={seed}", "logger.wandb.mode=disabled",
                                     f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=logs[name].open("w"))
             for name, seed in seeds.items()}
    done = {name: (proc.wait(timeout=600), logs[name].read_text()) for name, proc in procs.items()}
    assert sorted(code for code, _ in done.values()) == [0, 2], done
    (winner,) = [name for name, (code, _) in done.items() if code == 0]
    (refusal,) = [err for code, err in done.values() if code == 2]
    # Refused while the other sweep runs ("in use"), or after it ended ("another sweep").
    assert (f"hydra.sweep.dir={sweep_dir} is in use: its sweep is still going (pid " in refusal
            or f"hydra.sweep.dir={sweep_dir} already holds another sweep (its overrides: " in refusal), refusal
    assert "Traceback" not in refusal
    expected = sorted(int(s) for s in seeds[winner].split(","))
    assert sorted(s["seed"] for s in summaries(sweep_dir).values()) == expected
    assert all(s["status"] == "completed" and s["steps"] == 150 for s in summaries(sweep_dir).values())
    saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
    assert f"train.seed={seeds[winner]}" in saved["hydra"]["overrides"]["task"]
    assert "Sweep summary (2 runs, 2 completed)" in (sweep_dir / callbacks.SUMMARY_FILE).read_text()
