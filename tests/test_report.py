"""The report (rnnbench/report/): run folders -> tables and figures.

Every test reads a synthetic sweep written here in the run folder format of docs/architecture.md:
2 cells x 3 seeds completed, plus a failed run, a run whose summary says "running" but whose
process is dead, and a run that never wrote a summary.
"""

import io
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rnnbench import report

REPO = Path(__file__).resolve().parents[1]
CELLS = {"lstm": "rnnbench.modules.cells.LSTMCell", "gru": "rnnbench.modules.cells.GRUCell"}
SEEDS = (0, 1, 2)
STEPS = list(range(0, 101, 10))
SEQ_LEN = 20


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer exists
    return child.pid


def _write_run(run_dir: Path, cell: str, seed: int, summary: dict | None, rng: np.random.Generator) -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    config = (
        "task:\n  _target_: rnnbench.tasks.copy.CopyTask\n  seq_len: 20\n"
        f"cell:\n  _target_: {CELLS[cell]}\n"
        "model:\n  hidden_size: 64\n  num_layers: 1\n"
        f"train:\n  seed: {seed}\n  lr: 0.001\n  steps: 100\n"
    )
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- cell={cell}\n- train.seed={seed}\n")
    if summary is None:
        return
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["status"] != "completed":
        return
    scale = 1.0 if cell == "lstm" else 0.6  # the lstm learns faster
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in STEPS:
            row = {"step": step, "time_s": step * 0.1, "train/loss": 2.0 * math.exp(-0.03 * scale * step) + 0.05 * rng.random()}
            if step % 20 == 0:
                row["val/accuracy"] = 1.0 - math.exp(-0.03 * scale * step) * (0.8 + 0.1 * rng.random())
            f.write(json.dumps(row) + "\n")
    decay = 0.9 if cell == "lstm" else 0.7
    profile = [decay ** (SEQ_LEN - t) * (1 + 0.1 * rng.random()) for t in range(1, SEQ_LEN + 1)]
    (run_dir / "profile.json").write_text(json.dumps({"step": 100, "seq_len": SEQ_LEN, "layers": {"layer0": profile}}))


def _summary(cell: str, seed: int, status: str, final: dict, pid: int, **extra) -> dict:
    return {
        "status": status, "error": None, "diverged_at": None, "task": "copy", "cell": cell, "seed": seed,
        "steps": 100, "wall_time_s": 10.0 + seed, "num_params": 1000 if cell == "lstm" else 800,
        "final": final, "best": {k: v for k, v in final.items()},
        "main_metric": "val/accuracy", "main_metric_mode": "max",
        "overrides": [f"cell={cell}", f"train.seed={seed}"],
        "hostname": socket.gethostname(), "pid": pid, **extra,
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, dict]:
    """The sweep folder and the final metrics written for each completed (cell, seed)."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    rng = np.random.default_rng(0)
    dead = _dead_pid()  # every run was started on this host by a process that has ended
    written, job = {}, 0
    for cell in CELLS:
        for seed in SEEDS:
            final = {"val/accuracy": float(rng.uniform(0.5, 1.0)), "val/loss": float(rng.uniform(0.1, 1.0))}
            written[cell, seed] = final
            _write_run(root / str(job), cell, seed, _summary(cell, seed, "completed", final, dead), rng)
            job += 1
    _write_run(root / str(job), "gru", 3, _summary("gru", 3, "failed", {}, dead, error="RuntimeError: boom"), rng)
    _write_run(root / str(job + 1), "lstm", 4, _summary("lstm", 4, "running", {}, dead), rng)  # pid is dead
    _write_run(root / str(job + 2), "lstm", 5, None, rng)  # died before its first summary
    return root, written


@pytest.fixture(scope="module")
def runs(sweep):
    return report.load_runs(sweep[0])


def test_load_runs_finds_every_run_with_its_true_status(runs):
    assert len(runs) == 9
    by_seed = runs.set_index(runs["train.seed"].astype(int))["status"]
    assert (by_seed[list(SEEDS)] == "completed").all()
    assert by_seed[3] == "failed" and by_seed[4] == "incomplete" and by_seed[5] == "incomplete"
    failed = runs[runs["status"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom"


def test_load_runs_flattens_config_and_parses_overrides(runs, sweep):
    lstm = runs[runs["cell"] == "lstm"]
    assert set(lstm["cfg.cell._target_"]) == {"rnnbench.modules.cells.LSTMCell"}
    assert (runs["cfg.model.hidden_size"] == 64).all()
    first = runs[runs["run_dir"] == str(sweep[0] / "0")].iloc[0]
    assert first["overrides"] == ["cell=lstm", "train.seed=0"]
    assert first["override_values"] == {"cell": "lstm", "train.seed": 0}
    assert first["final/val/accuracy"] == sweep[1]["lstm", 0]["val/accuracy"]
    assert first["num_params"] == 1000 and first["seed"] == 0
    assert report.swept_keys(runs) == ["cell", "train.seed"]
    assert runs[runs["train.seed"] == 5].iloc[0]["seed"] == 5  # no summary: seed from the config


def test_summarize_groups_by_the_swept_keys_but_the_seed(runs, sweep):
    stats = report.summarize(runs)
    assert stats.attrs["rows"] == ["cell"]
    assert stats.attrs["metrics"] == ["final/val/accuracy", "final/val/loss"]
    assert list(stats["cell"]) == ["gru", "lstm"]


def test_summarize_mean_and_sample_std_over_completed_runs(runs, sweep):
    stats = report.summarize(runs).set_index("cell")
    written = sweep[1]
    for cell in CELLS:
        for metric in ("val/accuracy", "val/loss"):
            values = np.array([written[cell, seed][metric] for seed in SEEDS])
            assert stats.at[cell, f"final/{metric} mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert stats.at[cell, f"final/{metric} std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert stats.at["gru", "n"] == 3 and stats.at["gru", "n_failed"] == 1 and stats.at["gru", "n_incomplete"] == 0
    assert stats.at["lstm", "n"] == 3 and stats.at["lstm", "n_incomplete"] == 2 and stats.at["lstm", "n_failed"] == 0


def test_best_follows_the_direction_of_each_metric(runs, sweep):
    stats = report.summarize(runs).set_index("cell")
    written = sweep[1]
    acc = {c: np.mean([written[c, s]["val/accuracy"] for s in SEEDS]) for c in CELLS}
    loss = {c: np.mean([written[c, s]["val/loss"] for s in SEEDS]) for c in CELLS}
    assert stats["final/val/accuracy best"].to_dict() == {c: c == max(acc, key=acc.get) for c in CELLS}
    assert stats["final/val/loss best"].to_dict() == {c: c == min(loss, key=loss.get) for c in CELLS}
    flipped = report.summarize(runs, modes={"val/loss": "max"}).set_index("cell")
    assert flipped["final/val/loss best"].to_dict() == {c: c == max(loss, key=loss.get) for c in CELLS}


def test_a_single_run_has_no_std(runs):
    stats = report.summarize(runs[runs["train.seed"] == 0])
    assert stats["final/val/accuracy std"].isna().all() and (stats["n"] == 1).all()
    assert "± –" in report.to_markdown(stats)


def test_markdown_shows_mean_pm_std_best_in_bold_and_failed_runs(runs, sweep):
    stats = report.summarize(runs)
    text = report.to_markdown(stats, precision=3)
    best = stats[stats["final/val/accuracy best"]].iloc[0]
    expected = f"**{best['final/val/accuracy mean']:.3f} ± {best['final/val/accuracy std']:.3f}**"
    assert expected in text
    assert "3 (1 failed)" in text and "3 (2 incomplete)" in text
    assert text.count("**") == 2 * 2  # one best per metric column
    assert text.rstrip().endswith("Bold: the best mean of its column (ties at the shown precision included); not a "
                                  "significance test; `--reference KEY=VALUE` adds p-values.")


def _latex_cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)&", line)


def test_latex_is_a_booktabs_tabular_with_consistent_columns(runs):
    stats = report.summarize(runs, reference="cell=lstm")
    text = report.to_latex(stats)
    lines = text.strip().splitlines()
    spec = re.fullmatch(r"\\begin\{tabular\}\{([lcr]+)\}", lines[0]).group(1)
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule"
    assert lines[-3] == r"\bottomrule" and lines[-1] == r"\end{tabular}"
    assert lines[-2] == (rf"\multicolumn{{{len(spec)}}}{{l}}{{\footnotesize Bold: the best mean of its column (ties at "
                         r"the shown precision included); not a significance test; the p columns test each group "
                         r"against the reference.} \\")
    rows = [lines[2], *lines[4:-3]]
    assert len(rows) == 3  # header + 2 cells
    for row in rows:
        assert row.endswith(r" \\")
        assert len(_latex_cells(row)) == len(spec)
    assert r"\textbf{" in text and r"$\pm$" in text and "±" not in text
    assert r"val/accuracy" in text and "ref" in text


def test_latex_escapes_special_characters(runs):
    stats = report.summarize(runs, by="cfg.cell._target_", metrics="val/loss")
    text = report.to_latex(stats)
    assert r"cell.\_target\_" in text and r"rnnbench.modules.cells.LSTMCell" in text
    for line in text.splitlines()[2:-2]:
        if "&" in line:
            assert "_" not in line.replace(r"\_", "")


def test_csv_parses_back_to_the_numbers(runs):
    stats = report.summarize(runs, reference="cell=gru")
    back = pd.read_csv(io.StringIO(report.to_csv(stats)))
    pd.testing.assert_frame_equal(back, stats, check_dtype=False)


def test_cols_pivots_a_key_into_columns_each_compared_on_its_own(runs, sweep):
    stats = report.summarize(runs, by="train.seed", cols="cell", metrics="val/accuracy")
    lines = [line for line in report.to_markdown(stats).splitlines() if line.startswith("|")]  # the table, not its legend
    assert [h.strip() for h in lines[0].strip("|").split("|")] == ["train.seed", "gru", "gru n", "lstm", "lstm n"]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["0", "1", "2", "3", "4", "5"]
    for cell in CELLS:
        accuracy = {seed: sweep[1][cell, seed]["val/accuracy"] for seed in SEEDS}
        best = stats[(stats["cell"] == cell) & stats["final/val/accuracy best"]]
        assert list(best["train.seed"]) == [max(accuracy, key=accuracy.get)]


def test_a_lone_group_is_not_marked_best(runs):
    stats = report.summarize(runs, by=[], cols="cell")
    assert not stats.filter(like=" best").to_numpy().any()
    assert "**" not in report.to_markdown(stats) and "Bold" not in report.to_markdown(stats)


def test_overrides_are_read_as_hydra_types_them():
    assert report.parse_override("+x=[1,2]") == ("x", [1, 2])
    assert report.parse_override("~train.clip") == ("train.clip", None)
    assert report.parse_override("++optim.lr=1e-3") == ("optim.lr", 0.001)
    assert report.parse_override("cell@model.cell=gru") == ("cell@model.cell", "gru")
    assert report.parse_override("task.name='a b'") == ("task.name", "a b")
    assert report.parse_override("train.clip=null") == ("train.clip", None)
    with pytest.raises(report.ReportError, match="--reference wants key=value"):
        report.parse_reference("cell")
    with pytest.raises(report.ReportError, match="not a Hydra override: 'task.name=a=b'"):
        report.parse_override("task.name=a=b")


def test_a_recorded_override_hydra_cannot_read_still_loads(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("train:\n  seed: 0\n")
    (run / ".hydra" / "overrides.yaml").write_text("- task.name=a=b\n- train.seed=0\n")
    row = report.load_runs(run).iloc[0]
    assert row["override_values"] == {"task.name": "a=b", "train.seed": 0}


def test_welch_p_value_against_known_values():
    # nu = 2 here, where P(|T| > |t|) = 1 - |t| / sqrt(2 + t²): t = -sqrt(2) gives 1 - 1/sqrt(2).
    assert report.welch_p_value([0.0, 2.0], [2.0, 4.0]) == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-12)
    # Unequal sizes and variances: s_a²/n_a = 0.005, s_b²/n_b = 0.0422917, t = -3.104, nu = 3.712;
    # scipy.stats.ttest_ind(a, b, equal_var=False).pvalue = 0.03990653424768795.
    a, b = [1.1, 1.3, 0.9, 1.2, 1.0], [1.5, 1.9, 1.4, 2.3]
    assert report.welch_p_value(a, b) == pytest.approx(0.03990653424768795, rel=1e-9)
    assert math.isnan(report.welch_p_value([1.0], [2.0, 3.0]))


def test_welch_p_value_leaves_out_missing_values_and_is_nan_when_undefined():
    # A run without the metric (NaN) is not a value: the same p as without it.
    assert report.welch_p_value([0.0, 2.0, math.nan], [2.0, 4.0]) == report.welch_p_value([0.0, 2.0], [2.0, 4.0])
    assert math.isnan(report.welch_p_value([1.0, 1.0], [2.0, 2.0]))  # both constant: t is undefined
    assert math.isnan(report.welch_p_value([1.0, math.nan], [2.0, 3.0]))  # one value left on a side


def test_reference_row_gets_p_values_of_the_others_paired_by_seed(runs, sweep):
    from scipy.stats import ttest_rel

    stats = report.summarize(runs, reference="cell=lstm").set_index("cell")
    written = sweep[1]
    gru = [written["gru", s]["val/accuracy"] for s in SEEDS]
    lstm = [written["lstm", s]["val/accuracy"] for s in SEEDS]
    # both cells ran the same seeds (the same data order): the runs come in pairs
    assert stats.at["gru", "final/val/accuracy p"] == pytest.approx(ttest_rel(gru, lstm).pvalue)
    one_less = report.summarize(runs[~((runs["cell"] == "gru") & (runs["seed"] == SEEDS[0]))],
                                reference="cell=lstm").set_index("cell")
    assert one_less.at["gru", "final/val/accuracy p"] == pytest.approx(report.welch_p_value(gru[1:], lstm))
    assert math.isnan(stats.at["lstm", "final/val/accuracy p"])
    with pytest.raises(report.ReportError, match="no row matches"):
        report.summarize(runs, reference="cell=rnn")


def test_unknown_metric_lists_the_available_ones(runs):
    with pytest.raises(report.ReportError, match=r"unknown metric 'val/f1'; available: .*val/accuracy"):
        report.summarize(runs, metrics="val/f1")


def test_figures_are_written_as_png_and_pdf(runs, tmp_path):
    written, notes = report.write_figures(runs, tmp_path, ["cell"])
    names = sorted(p.name for p in written)
    assert names == [
        "gradient_profile_layer0.pdf", "gradient_profile_layer0.png",
        "learning_curves_val_accuracy.pdf", "learning_curves_val_accuracy.png",
    ]
    assert notes == ["no gate saturation figure: no completed run has gate statistics for layer0 (gated cells "
                     "record them with each temporal profile)"]
    for path in written:
        data = path.read_bytes()
        assert len(data) > 10_000
        assert data.startswith(b"\x89PNG\r\n\x1a\n" if path.suffix == ".png" else b"%PDF")
    with pytest.raises(report.ReportError, match="unknown curve metric 'val/f1'; logged: .*train/loss"):
        report.write_figures(runs, tmp_path, ["cell"], curve="val/f1")


def test_cli_writes_the_table(sweep, tmp_path, capsys):
    out = tmp_path / "table.tex"
    assert report.main([str(sweep[0]), "--format", "latex", "--output", str(out), "--metrics", "val/loss"]) == 0
    assert out.read_text().startswith(r"\begin{tabular}{lrr}")
    assert report.main([str(sweep[0]), "--rows", "cell", "--precision", "2"]) == 0
    assert "3 (1 failed)" in capsys.readouterr().out


def test_cli_unknown_metric_is_one_message_and_exit_code_2(sweep, capsys):
    assert report.main([str(sweep[0]), "--metrics", "val/f1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error in input:\n") and err.count("\n") == 2  # the format's line, the message
    assert "available:" in err and "val/accuracy" in err


def test_cli_missing_path_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "rnnbench.report", "/nonexistent"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == "Error in input:\npath does not exist: /nonexistent\n"
    assert result.stdout == ""


def test_no_runs_under_a_folder_is_an_error(tmp_path):
    with pytest.raises(report.ReportError, match="no runs found under"):
        report.load_runs(tmp_path)


def test_runs_that_did_not_complete_are_listed_with_the_reason(runs):
    assert report.not_completed(runs) == [
        "6 [cell=gru train.seed=3]: failed: RuntimeError: boom",
        "7 [cell=lstm train.seed=4]: incomplete",
        "8 [cell=lstm train.seed=5]: incomplete",
    ]


def test_search_space_is_the_optuna_sweepers_and_a_fixed_key_leaves_it():
    space = report.search_space({"optim.lr": "tag(log, interval(1e-4, 1e-1))", "model.hidden_size": "choice(32, 64)",
                                 "train.clip": "interval(0.5, 5.0)"}, ["train.clip=1.0", "task.seq_len=10"])
    assert set(space) == {"optim.lr", "model.hidden_size"}
    assert type(space["optim.lr"]).__name__ == "LogUniformDistribution" and space["optim.lr"].low == 1e-4
    assert space["model.hidden_size"].choices == (32, 64)


def test_param_importance_finds_the_hyperparameter_that_matters():
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -1, 24)
    hidden = rng.choice([32, 64], 24)
    loss = (np.log10(lr) + 2.5) ** 2 + 1e-3 * rng.random(24)  # the width hardly matters
    df = pd.DataFrame({"run_dir": [f"/sweep/{i}" for i in range(24)], "status": "completed",
                       "optim.lr": lr, "model.hidden_size": hidden, "final/val/loss": loss, "main_metric": "val/loss"})
    df.loc[23, "status"] = "failed"  # not a trial
    space = report.search_space({"optim.lr": "tag(log, interval(1e-4, 1e-1))", "model.hidden_size": "choice(32, 64)"})
    result = report.param_importance(df, space, "minimize")
    assert result["n_trials"] == 23 and result["metric"] == "val/loss"
    assert list(result["importances"]) == ["optim.lr", "model.hidden_size"]
    assert result["importances"]["optim.lr"] > 0.8 and sum(result["importances"].values()) == pytest.approx(1)
    assert report.importance_text(result).startswith(
        "hyperparameter importance for val/loss (23 trials, MeanDecreaseImpurityImportanceEvaluator): optim.lr ")
    with pytest.raises(report.ReportError, match="at least 2 completed runs"):
        report.param_importance(df.iloc[:1], space)


# ------------------------------------------------------------------------------------------------
# the tests claims are judged by (rnnbench/report/stats.py: compare_samples, noninferiority, holm)


def test_paired_test_is_students_t_on_the_differences_by_hand():
    from rnnbench.report.stats import compare_samples

    a, b = [2.0, 3.0, 5.0, 4.0], [1.0, 2.5, 4.0, 4.0]
    d = np.subtract(a, b)  # 1, .5, 1, 0
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    from scipy.stats import t as student

    result = compare_samples(a, b, paired=True)
    assert result["test"] == "paired t" and result["diff"] == pytest.approx(0.625)
    assert result["p"] == pytest.approx(2 * student.sf(abs(t), df=3))
    half = student.ppf(0.975, df=3) * d.std(ddof=1) / 2
    assert result["ci"] == pytest.approx((0.625 - half, 0.625 + half))


def test_pairing_finds_a_shift_that_welch_cannot_see_under_the_seed_to_seed_spread():
    from rnnbench.report.stats import compare_samples

    base = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    better = base - 0.1 + np.array([0.01, -0.01, 0.0, 0.01, -0.01])  # every draw 0.1 lower
    assert compare_samples(better, base, paired=True)["p"] < 1e-4
    assert compare_samples(better, base, paired=False)["p"] > 0.5


def test_holm_adjusts_step_down_and_keeps_the_order():
    from rnnbench.report.stats import holm

    # sorted p: .01 (x3), .03 (x2), .04 (x1 -> raised to .06 by monotonicity); NaN is not a test
    assert holm([0.04, 0.01, math.nan, 0.03]) == pytest.approx([0.06, 0.03, math.nan, 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_noninferiority_needs_the_interval_inside_the_margin_not_a_large_p():
    from rnnbench.report.stats import compare_samples, noninferiority

    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 0.05, size=6)
    same = base + rng.normal(0.0, 0.005, size=6)  # paired draws, no real difference
    assert noninferiority(same, base, margin=0.02, mode="min", paired=True)["noninferior"]
    noisy_a, noisy_b = rng.normal(2.0, 0.5, size=3), rng.normal(2.0, 0.5, size=3)
    result = noninferiority(noisy_a, noisy_b, margin=0.02, mode="min", paired=False)
    assert compare_samples(noisy_a, noisy_b, paired=False)["p"] > 0.05  # "no significant difference" ...
    assert not result["noninferior"]  # ... is not evidence that it does not hurt
    worse = base + 0.05
    assert not noninferiority(worse, base, margin=0.02, mode="min", paired=True)["noninferior"]
    assert noninferiority(base - 0.05, base, margin=0.02, mode="max", paired=True)["noninferior"] is False
    assert noninferiority(base + 0.05, base, margin=0.02, mode="max", paired=True)["noninferior"]


def test_no_spread_is_judged_on_the_rounded_differences_relative_to_the_difference():
    """Differences equal to 1e-12 of the difference (at least 1e-12 absolute, the boundary included)
    have no spread to estimate, so no t statistic (it would be x/0 or rounding noise): the exact
    permutation test instead, with the difference itself as its interval; no difference at all is p 1.
    Beyond that, scipy's t test."""
    from scipy.stats import ttest_ind, ttest_rel

    from rnnbench.report.stats import compare_samples

    rounded = compare_samples([0.1, 0.2, 0.3], [0.0, 0.1, 0.2], paired=True)  # 0.1 - 0.0 != 0.3 - 0.2 in floats
    assert np.ptp(np.subtract([0.1, 0.2, 0.3], [0.0, 0.1, 0.2])) > 0
    # 3 pairs alike: of the 2^3 signs, only all + and all - reach |Δ|
    assert (rounded["test"], rounded["p"], rounded["ci"]) == ("sign-flip (exact)", 0.25, (rounded["diff"], rounded["diff"]))
    large = compare_samples([1000.0, 1000.0 + 1e-10], [0.0, 0.0], paired=True)  # 1e-10 of 1000: 1e-13 relative
    assert (large["p"], large["ci"]) == (0.5, (large["diff"], large["diff"]))
    boundary = compare_samples([0.0, 1e-12], [0.0, 0.0], paired=True)  # spread 1e-12 exactly, diff 5e-13
    assert (boundary["p"], boundary["ci"]) == (1.0, (5e-13, 5e-13))  # every sign of (0, 1e-12) reaches |Δ|
    above = [0.0, 1.5e-12]  # spread 1.5e-12 (over the 1e-12 floor) of a difference of 7.5e-13: t = 1, p = 0.5
    assert compare_samples(above, [0.0, 0.0], paired=True)["test"] == "paired t"
    assert compare_samples(above, [0.0, 0.0], paired=True)["p"] == pytest.approx(0.5) == ttest_rel(above, [0.0, 0.0]).pvalue
    for paired in (True, False):
        same = compare_samples([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], paired=paired)
        assert (same["diff"], same["ci"], same["p"]) == (0.0, (0.0, 0.0), 1.0)
        two = compare_samples([0.3, 0.3], [0.1, 0.1], paired=paired)  # two values a side suffice for a test
        assert (two["n"], two["ci"]) == ((2, 2), (two["diff"], two["diff"]))
    # two pairs: 2 of 4 signs reach |Δ|; two constant sides of 2: 2 of the C(4, 2) = 6 splits
    assert compare_samples([0.3, 0.3], [0.1, 0.1], paired=True)["p"] == 0.5
    assert compare_samples([0.3, 0.3], [0.1, 0.1], paired=False)["p"] == pytest.approx(2 / 6)
    constant = compare_samples([0.3, 0.3, 0.3], [0.1, 0.1, 0.1], paired=False)  # each side without spread
    assert (constant["test"], constant["ci"]) == ("permutation (exact)", (constant["diff"], constant["diff"]))
    assert constant["p"] == pytest.approx(2 / 20)  # the two extreme splits of C(6, 3)
    five = compare_samples([0.3] * 5, [0.1] * 5, paired=True)  # five seeds alike: 2/32, above 0.05
    assert five["p"] == pytest.approx(2 / 32)
    # 5 against 6: one split of C(11, 5) = 462 is as extreme; two-sided, twice that
    assert compare_samples([0.3] * 5, [0.1] * 6, paired=False)["p"] == pytest.approx(2 / 462)
    # two values a side with spread: Welch's t (nu = 2 here, p = 1 - 1/sqrt(2))
    welch = compare_samples([0.0, 2.0], [2.0, 4.0], paired=False)
    assert welch["test"] == "Welch t" and welch["n"] == (2, 2)
    assert welch["p"] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-12) == ttest_ind([0.0, 2.0], [2.0, 4.0]).pvalue


def test_three_seeds_whose_accuracies_differ_alike_are_not_a_significant_difference():
    """Accuracies counted on the same test set can differ by the same count on every seed (two models at
    chance predicting alike): study 8's modular arithmetic had LSTM − GRU = −0.012 on all three seeds.
    Before, no spread read as an exact difference, p 0, "gru better"; the sign-flip test cannot go
    below 2/2^3 with three pairs."""
    from rnnbench.report.stats import compare_samples

    gru = np.array([0.196, 0.272, 0.200])
    result = compare_samples(gru - 0.012, gru, paired=True)
    assert result["p"] == pytest.approx(0.25) and result["p"] > 0.05


def test_compare_samples_drops_a_pair_with_a_missing_value_and_needs_two_values_a_side():
    from rnnbench.report.stats import compare_samples

    a, b = [2.0, 3.0, 5.0, 4.0], [1.0, 2.5, 4.0, 4.0]
    missing = compare_samples([2.0, math.nan, 3.0, 5.0, 4.0], [1.0, 7.0, 2.5, 4.0, 4.0], paired=True)
    assert missing == compare_samples(a, b, paired=True) and missing["n"] == (4, 4)
    assert compare_samples([1.0, 2.0, math.nan], [math.nan, 1.0, 3.0], paired=True)["n"] == (1, 1)
    nothing = compare_samples([math.nan, 1.0], [2.0, math.nan], paired=True)  # no whole pair
    assert nothing["n"] == (0, 0) and all(math.isnan(v) for v in (nothing["diff"], *nothing["ci"], nothing["p"]))
    one_side_empty = compare_samples([math.nan], [1.0, 2.0], paired=False)
    assert one_side_empty["n"] == (0, 2) and math.isnan(one_side_empty["diff"]) and math.isnan(one_side_empty["p"])
    with pytest.raises(ValueError, match="^paired samples differ in length: 3 and 2$"):
        compare_samples([1.0, 2.0, 3.0], [1.0, 2.0], paired=True)


def noninferiority_by_hand(a, b, margin, mode, paired):
    """The one-sided p that a is worse than b by `margin` or more, from the t distribution by hand."""
    from scipy.stats import t as student

    worse = np.subtract(a, margin) if mode == "min" else np.negative(a) - margin  # sign·a − margin
    base = np.asarray(b, float) if mode == "min" else np.negative(b)
    if paired:
        d = worse - base
        return student.cdf(d.mean() / (d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1)
    va, vb = worse.var(ddof=1) / len(worse), base.var(ddof=1) / len(base)
    nu = (va + vb) ** 2 / (va ** 2 / (len(worse) - 1) + vb ** 2 / (len(base) - 1))
    return student.cdf((worse.mean() - base.mean()) / math.sqrt(va + vb), nu)


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("paired", [True, False])
def test_noninferiority_p_is_the_one_sided_t_test_against_the_margin_by_hand(mode, paired):
    from rnnbench.report.stats import compare_samples, noninferiority

    # unequal spreads and sizes (unpaired), so Welch's t differs from Student's pooled one
    a = [2.01, 1.98, 2.03, 1.97, 2.02] if paired else [2.01, 1.98, 2.03, 1.90, 2.12, 2.0]
    b = [2.00, 1.99, 2.01, 1.98, 2.00] if paired else [2.00, 1.99, 2.01]
    result = noninferiority(a, b, margin=0.05, mode=mode, paired=paired)
    p = noninferiority_by_hand(a, b, 0.05, mode, paired)
    assert result["p_noninferior"] == pytest.approx(p, rel=1e-9) and result["noninferior"] == (p < 0.05)
    assert result["margin"] == 0.05
    interval = compare_samples(a, b, paired, confidence=0.9)  # the (1 − 2α) interval beside it
    assert (result["test"], result["n"], result["diff"], result["ci"]) == (
        interval["test"], interval["n"], interval["diff"], interval["ci"])
    # two values a side are enough for a test
    two = noninferiority(a[:2], b[:2], margin=0.05, mode=mode, paired=paired)
    assert two["p_noninferior"] == pytest.approx(noninferiority_by_hand(a[:2], b[:2], 0.05, mode, paired), rel=1e-9)


def test_noninferiority_with_equal_spreads_a_missing_value_or_one_value_a_side():
    from rnnbench.report.stats import noninferiority

    a, b = [1.0, 2.0, 3.0], [1.5, 2.5, 3.5]  # the same variance on both sides: a test all the same
    assert noninferiority(a, b, 0.1, "min", paired=False)["p_noninferior"] == pytest.approx(
        noninferiority_by_hand(a, b, 0.1, "min", paired=False), rel=1e-9)
    for paired in (True, False):
        a, b = [2.01, 1.98, 2.03, 1.97], [2.00, 1.99, 2.01, 1.98]
        with_nan = noninferiority([*a, math.nan], [*b, 2.0], 0.05, "min", paired)
        assert with_nan["p_noninferior"] == pytest.approx(noninferiority_by_hand(a, b if paired else [*b, 2.0], 0.05,
                                                                                  "min", paired), rel=1e-9)
        one = noninferiority([2.0], [2.1], 0.05, "min", paired)  # no test: not shown noninferior
        assert math.isnan(one["p_noninferior"]) and one["noninferior"] is False


def test_noninferiority_without_spread_is_the_exact_permutation_test_unless_the_results_are_the_same():
    """No spread at all (to the last digits, as compare_samples judges it): no t statistic, so the
    one-sided exact permutation test of "worse by the margin"; a variant with the very same results,
    draw by draw, does not hurt (p 0)."""
    from rnnbench.report.stats import noninferiority

    base = [1.0, 2.0, 3.0]
    shifted = [1.01, 2.01, 3.01]  # 0.01 worse on every draw, to rounding
    assert np.ptp(np.subtract(shifted, base)) > 0
    same = noninferiority(base, base, 0.02, "min", paired=True)  # the very same results, draw by draw
    assert (same["p_noninferior"], same["noninferior"]) == (0.0, True)
    # within the margin on 3 draws alike: only all 8 signs' one extreme is as far, p 1/8: not shown
    within = noninferiority(shifted, base, 0.02, "min", paired=True)
    assert (within["p_noninferior"], within["noninferior"], within["ci"]) == (0.125, False, (within["diff"],) * 2)
    within5 = noninferiority([x + 0.01 for x in range(5)], list(range(5)), 0.02, "min", paired=True)
    assert (within5["p_noninferior"], within5["noninferior"]) == (pytest.approx(1 / 32), True)
    beyond = noninferiority(shifted, base, 0.005, "min", paired=True)  # worse than the margin on every draw
    assert (beyond["p_noninferior"], beyond["noninferior"]) == (1.0, False)
    assert noninferiority([x + 0.01 for x in range(5)], list(range(5)), 0.02, "max", paired=True)["noninferior"]
    constant_sides = noninferiority([2.0] * 4, [1.99] * 4, 0.02, "min", paired=False)  # 1 of C(8, 4) splits
    assert (constant_sides["p_noninferior"], constant_sides["noninferior"]) == (pytest.approx(1 / 70), True)
    assert noninferiority([2.0, 2.0], [1.99, 1.99], 0.005, "min", paired=False)["p_noninferior"] == 1.0
    assert noninferiority([2.0, 2.0], [2.0, 2.0], 0.005, "min", paired=False)["p_noninferior"] == 0.0  # the same
    at_margin = noninferiority([1.25, 2.25], [1.0, 2.0], 0.25, "min", paired=True)  # worse by the margin exactly
    assert (at_margin["p_noninferior"], at_margin["noninferior"]) == (1.0, False)
    # fewer than two values a side: no test, even without spread; no whole pair or an empty side at all
    for a, b, paired in (([2.0], [1.99, 1.99], False), ([2.0, math.nan], [math.nan, 2.0], True),
                         ([math.nan], [1.99, 1.99], False)):
        result = noninferiority(a, b, 0.02, "min", paired)
        assert math.isnan(result["p_noninferior"]) and result["noninferior"] is False


@pytest.mark.parametrize("margin", [0.0, -0.1, math.nan])
def test_noninferiority_needs_a_positive_margin(margin):
    from rnnbench.report.stats import noninferiority

    with pytest.raises(ValueError, match=f"^an equivalence margin must be positive, got {margin}$"):
        noninferiority([1.0, 2.0], [1.0, 2.0], margin, "min", paired=True)


def test_a_reference_row_with_two_seeds_in_common_is_paired():
    from scipy.stats import ttest_rel

    from rnnbench.report.stats import reference_p_value

    a, b = {0: 0.91, 1: 0.95}, {0: 0.88, 1: 0.90}
    paired = reference_p_value(a, b, np.array([0.91, 0.95]), np.array([0.88, 0.90]))
    assert paired == pytest.approx(ttest_rel([0.91, 0.95], [0.88, 0.90]).pvalue)
    assert paired != pytest.approx(report.welch_p_value([0.91, 0.95], [0.88, 0.90]))


def test_every_summary_section_and_run_number_is_a_metric_and_an_unknown_one_lists_them():
    df = pd.DataFrame({"status": ["completed"] * 2, "final/val/loss": [1.0, 2.0], "best/val/loss": [0.5, 0.7],
                       "best_step/val/loss": [10, 20], "test/accuracy": [0.9, 0.8], "steps": [100, 100],
                       "wall_time_s": [math.nan, math.nan]})
    assert report.available_metrics(df) == ["final/val/loss", "best/val/loss", "best_step/val/loss", "test/accuracy",
                                            "steps"]
    assert [report.resolve_metric(df, m) for m in ("val/loss", "best/val/loss", "best_step/val/loss", "steps")] == [
        "final/val/loss", "best/val/loss", "best_step/val/loss", "steps"]
    with pytest.raises(report.ReportError) as unknown:
        report.resolve_metric(df, "val/acc")
    assert str(unknown.value) == ("unknown metric 'val/acc'; available: val/loss, best/val/loss, best_step/val/loss, "
                                  "test/accuracy, steps")
    with pytest.raises(report.ReportError) as none:
        report.resolve_metric(df[["status"]], "val/loss")
    assert str(none.value) == "unknown metric 'val/loss'; available: none"


def test_a_reference_given_as_a_mapping_and_one_that_matches_no_row(runs):
    assert report.parse_reference({"cell": "lstm", "model.hidden_size": 128}) == {"cell": "lstm",
                                                                                  "model.hidden_size": 128}
    by_mapping = report.summarize(runs, reference={"cell": "lstm"})
    assert by_mapping.equals(report.summarize(runs, reference="cell=lstm"))
    with pytest.raises(report.ReportError) as refused:
        report.summarize(runs, by="cell,train.seed", reference="cell=rnn,train.seed=0")
    assert str(refused.value) == "no row matches the reference cell=rnn,train.seed=0"


def test_keys_that_do_not_change_the_function_do_not_split_groups(tmp_path):
    """`report RUN_A RUN_B`: two seeds of one experiment, the second resumed on another thread count,
    device spelling, logging cadence and W&B mode, are one group of two runs."""
    from conftest import run_cli

    common = ["task=adding", "task.seq_len=8", "task.val_size=16", "train.batch_size=4", "model.hidden_size=8",
              "train.max_steps=4", "train.eval_every=2"]
    first = run_cli(*common, "train.seed=0", "train.threads=1", "logger.wandb.mode=disabled", "hydra.run.dir=a",
                    cwd=tmp_path)
    second = run_cli(*common, "train.seed=1", "train.threads=2", "train.device=cpu", "train.resume=true",
                     "train.log_every=1", "logger.wandb.mode=disabled", "logger.progress_every_s=5",
                     "train.checkpoint_minutes=1", "hydra.run.dir=b", cwd=tmp_path)
    assert first.returncode == second.returncode == 0, (first.stderr[-2000:], second.stderr[-2000:])
    runs = report.load_runs([tmp_path / "a", tmp_path / "b"])
    assert report.swept_keys(runs) == ["train.seed"]
    text = report.to_markdown(report.summarize(runs))
    assert [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")] == ["runs", "all"]
    assert re.search(r"\|\s+2 \|$", text.splitlines()[2])  # one group, both runs
