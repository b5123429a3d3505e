"""`python -m rnnbench.fair` end to end on a tiny task (screen, choice on validation, seeds at each
value's best, the table), and the choice rules on constructed screens (rnnbench/fair.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from rnnbench import fair

TINY = ["task=adding", "task.seq_len=10", "task.val_size=32", "train.batch_size=8", "train.max_steps=40",
        "train.log_every=10", "train.eval_every=20", "train.profile_every=0", "model.hidden_size=8",
        "train.threads=1", "logger.wandb.mode=disabled", "hydra/launcher=basic"]


def run_fair(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rnnbench.fair", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def summaries(folder: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "summary.json").read_text()) for d in sorted(folder.iterdir())
            if (d / "summary.json").is_file()}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("fair")
    args = ["--dir", "cmp", "--compare", "cell=vanilla,gru", "--grid", "optim.lr=0.001,0.03",
            "--screen", "train.max_steps=20", "--seeds", "2", "--concurrent", "2", *TINY]
    proc = run_fair(root, *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root / "cmp", proc, args


def test_the_screen_runs_every_value_at_every_grid_point_at_the_screen_budget(comparison):
    folder, _, _ = comparison
    runs = summaries(folder / "screen")
    assert len(runs) == 4
    points = {(s["cell"], next(o for o in s["overrides"] if o.startswith("optim.lr="))) for s in runs.values()}
    assert points == {(c, f"optim.lr={lr}") for c in ("vanilla", "gru") for lr in ("0.001", "0.03")}
    assert {s["steps"] for s in runs.values()} == {20}  # --screen applies to the screen only


def test_each_value_gets_its_best_validation_setting_and_seeds_at_the_full_budget(comparison):
    folder, _, _ = comparison
    screen = summaries(folder / "screen")
    state = json.loads((folder / fair.PLAN_FILE).read_text())
    for cell in ("vanilla", "gru"):
        # the choice recomputed from the summaries: the lower best validation MSE, never the test split
        by_lr = {next(o for o in s["overrides"] if o.startswith("optim.lr=")).split("=")[1]: s["best"]["val/loss"]
                 for s in screen.values() if s["cell"] == cell}
        best_lr = float(min(by_lr, key=by_lr.get))
        assert state["chosen"][cell]["point"] == {"optim.lr": best_lr}
        final = summaries(folder / f"final-{cell}")
        assert sorted(s["seed"] for s in final.values()) == [1, 2]  # fresh: not the screen's seed 0
        assert {s["steps"] for s in final.values()} == {40}
        assert all(f"optim.lr={best_lr}" in s["overrides"] and s["status"] == "completed" for s in final.values())


def test_the_table_reports_n_of_n_and_a_paired_test_by_seed(comparison):
    folder, proc, _ = comparison
    table = (folder / "fair.md").read_text()
    assert table in proc.stdout
    assert "2 of 2" in table and "paired t" in table and "p (Holm)" in table
    assert (folder / "screen.png").is_file() and (folder / "screen.pdf").is_file()


def test_running_the_same_command_again_keeps_every_finished_run(comparison):
    folder, _, args = comparison
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.jsonl")}
    proc = run_fair(folder.parent, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.jsonl")} == before


def test_another_plan_in_the_same_folder_is_refused_before_anything_runs(comparison):
    folder, _, args = comparison
    changed = [a if a != "2" else "3" for a in args]  # --seeds 3
    proc = run_fair(folder.parent, *changed)
    assert proc.returncode == 2
    assert "holds another fair comparison" in proc.stderr and "Traceback" not in proc.stderr


def test_the_same_plan_on_another_launcher_is_the_same_comparison(comparison):
    folder, _, args = comparison
    other = [a if a != "hydra/launcher=basic" else "hydra/launcher=parallel" for a in args]
    proc = run_fair(folder.parent, *other, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hydra/launcher=parallel" in proc.stdout  # where the runs go changed, what they are did not


@pytest.mark.parametrize("args, message", [
    (["--compare", "train.seed=0,1", "--grid", "optim.lr=1"], "seeds are drawn by --seeds"),
    (["--compare", "cell=lstm,gru", "--grid", "optim.lr=1", "--select", "test/loss"], "never the test split"),
    (["--compare", "cell=lstm,gru", "--grid", "cell=gru"], "cannot be tuned"),
    (["--compare", "cell=lstm,gru", "--grid", "optim.lr=1", "optim.lr=2"], "set by the command"),
    (["--compare", "cell=lstm,gru", "--grid", "optim.lr=1", "--match", "width=big"], "--match"),
])
def test_a_bad_plan_is_one_line_naming_what_is_wrong(tmp_path, args, message):
    assert fair.main(["--dir", str(tmp_path / "x"), *args]) == 2
    assert not (tmp_path / "x").exists()


def test_final_seeds_are_fresh_and_keep_the_unchanged_seeds_in_their_jobs():
    assert fair.final_seeds(5, [0]) == [5, 1, 2, 3, 4]
    assert fair.final_seeds(3, [0, 1]) == [3, 4, 2]
    assert fair.final_seeds(2, [0, 1, 2]) == [3, 4]
    for n, screen in [(5, [0]), (3, [0, 1]), (1, [0]), (4, [0, 1, 2, 3, 4, 5])]:
        seeds = fair.final_seeds(n, screen)
        assert len(set(seeds)) == n and not set(seeds) & set(screen)


def old_comparison(root: Path, grid: str = "optim.lr=0.001,0.03") -> tuple[fair.Plan, dict]:
    """A folder begun when the final seeds were 0..n-1: job 0 of each final sweep ran the screen's seed."""
    args = fair.parser().parse_args(["--dir", str(root), "--compare", "cell=vanilla,gru", "--grid", grid,
                                     "--seeds", "3", *TINY])
    plan = fair.Plan(args)
    saved = {"plan": {**json.loads(json.dumps(plan.as_dict())), "seeds": [0, 1, 2]}, "chosen": {"gru": {}}}
    for value in ("vanilla", "gru"):
        for job in (0, 1):
            (root / f"final-{value}" / str(job)).mkdir(parents=True)
            (root / f"final-{value}" / str(job) / "summary.json").write_text(json.dumps({"seed": job}))
        (root / f"final-{value}" / "multirun.yaml").write_text("hydra: {overrides: {task: [train.seed=0,1,2]}}\n")
    return plan, saved


def test_a_comparison_begun_with_the_screen_seed_in_its_finals_moves_only_that_job_aside(tmp_path, capsys):
    plan, saved = old_comparison(tmp_path)
    migrated = fair.migrate_seeds(saved, plan)
    assert migrated["plan"]["seeds"] == plan.seeds == [3, 1, 2] and migrated["chosen"] == saved["chosen"]
    for value in ("vanilla", "gru"):
        final = tmp_path / f"final-{value}"
        assert not (final / "0").exists() and not (final / "multirun.yaml").exists()
        assert json.loads((final / "1" / "summary.json").read_text()) == {"seed": 1}  # kept in its job
        moved = tmp_path / "replaced-seeds" / f"final-{value}-seed0" / "summary.json"
        assert json.loads(moved.read_text()) == {"seed": 0}  # kept, not deleted
    assert "seed 0 is a screen seed" in capsys.readouterr().out
    assert fair._identity(migrated["plan"]) == fair._identity(json.loads(json.dumps(plan.as_dict())))


def test_an_old_folder_of_another_plan_is_left_untouched_and_refused(tmp_path):
    plan, saved = old_comparison(tmp_path)
    other = fair.Plan(fair.parser().parse_args(["--dir", str(tmp_path), "--compare", "cell=vanilla,gru", "--grid",
                                                "optim.lr=0.001,0.1", "--seeds", "3", *TINY]))
    assert fair.migrate_seeds(saved, other) is saved
    assert (tmp_path / "final-gru" / "0").is_dir() and (tmp_path / "final-gru" / "multirun.yaml").is_file()
    (tmp_path / fair.PLAN_FILE).write_text(json.dumps(saved))
    assert fair.main(["--dir", str(tmp_path), "--compare", "cell=vanilla,gru", "--grid", "optim.lr=0.001,0.1",
                      "--seeds", "3", *TINY]) == 2
    assert (tmp_path / "final-gru" / "0").is_dir()


def test_a_plan_without_final_folders_has_no_final_runs_yet(tmp_path):
    """--screen-only stops before the finals: the table then says so instead of failing on no folders."""
    plan = fair.Plan(fair.parser().parse_args(["--dir", str(tmp_path), "--compare", "cell=vanilla,gru", "--grid",
                                               "optim.lr=0.001,0.03", *TINY]))
    assert fair.final_runs(plan).empty
    assert fair.final_table(plan, {"select": "best/val/loss", "mode": "min", "chosen": {}})[0] == "no final runs yet\n"


def test_match_makes_equal_parameters_or_equal_width_one_switch():
    assert fair.match_overrides("params=240000") == ["model.param_budget=240000"]
    assert fair.match_overrides("width=128") == ["model.param_budget=null", "model.hidden_size=128"]


def screen_frame(rows):
    return pd.DataFrame([{"cell": c, "optim.lr": lr, "status": st, "best/val/loss": v} for c, lr, st, v in rows])


def test_a_point_whose_runs_all_diverged_is_not_chosen_however_good_its_other_numbers():
    runs = screen_frame([("lstm", 0.1, "diverged", 0.01), ("lstm", 0.01, "completed", 0.5),
                         ("lstm", 0.001, "completed", 0.7)])
    chosen = fair.select(runs, "cell", ["optim.lr"], "best/val/loss", "min")
    assert chosen["lstm"]["point"] == {"optim.lr": 0.01}


def test_the_choice_follows_the_metrics_direction_and_averages_the_screen_seeds():
    runs = screen_frame([("gru", 0.1, "completed", 0.9), ("gru", 0.1, "completed", 0.1),
                         ("gru", 0.01, "completed", 0.6), ("gru", 0.01, "completed", 0.6)])
    assert fair.select(runs, "cell", ["optim.lr"], "best/val/loss", "min")["gru"]["point"] == {"optim.lr": 0.1}
    assert fair.select(runs, "cell", ["optim.lr"], "best/val/loss", "max")["gru"]["point"] == {"optim.lr": 0.01}


def test_a_best_setting_at_the_edge_of_the_grid_is_flagged_and_the_next_point_is_one_step_past_it():
    tried = screen_frame([("lstm", lr, "completed", 0.0) for lr in (0.001, 0.004, 0.016)])
    assert fair.edges({"optim.lr": 0.016}, {"optim.lr": [0.001, 0.004, 0.016]}, tried) == {"optim.lr": "high"}
    assert fair.edges({"optim.lr": 0.001}, {"optim.lr": [0.001, 0.004, 0.016]}, tried) == {"optim.lr": "low"}
    assert fair.edges({"optim.lr": 0.004}, {"optim.lr": [0.001, 0.004, 0.016]}, tried) == {}
    assert math.isclose(fair.next_value("optim.lr", "high", [0.001, 0.004, 0.016]), 0.064)
    assert math.isclose(fair.next_value("optim.lr", "low", [0.001, 0.004, 0.016]), 0.00025)
    assert fair.next_value("train.clip", "low", [0.0, 1.0, 2.0]) == -1.0  # arithmetic where 0 is in the grid


def test_a_screen_started_by_hand_is_continued_in_its_own_order_and_another_sweep_refused(tmp_path, capsys):
    import yaml

    by_hand = ["+experiment=study_char_lm", "train.max_steps=1000", "train.seed=0", "cell=vanilla,lstm",
               "optim.lr=1e-3,1.6e-2", "logger.wandb.mode=disabled"]
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": by_hand}}}))
    ours = ["+experiment=study_char_lm", "logger.wandb.mode=disabled", "hydra/launcher=basic",
            "train.max_steps=1000", "train.seed=0", "cell=vanilla,lstm", "optim.lr=0.001,0.016"]
    fair.run_sweep(ours, tmp_path, dry_run=True)
    printed = capsys.readouterr().out
    assert " ".join(by_hand) + " hydra/launcher=basic" in printed  # their order: job numbers keep their meaning
    with pytest.raises(fair.FairError, match="holds another sweep"):
        fair.run_sweep([o.replace("0.016", "0.008") for o in ours], tmp_path, dry_run=True)


def test_exported_records_name_the_stage_so_a_claim_can_read_the_tuned_runs_alone(comparison, tmp_path):
    from rnnbench.report import runs, study_records, verdicts

    folder, _, _ = comparison
    path = study_records.export("toy", [folder / "screen", folder / "final-vanilla", folder / "final-gru"], tmp_path)
    rows = runs.read_records(path)
    short = "final (screen train.max_steps=20)"  # chosen by a screen at a fifth of the budget: said in the stage
    assert sorted({(r["sweep"], r["fair"]) for r in rows}) == [("cmp/final-gru", short), ("cmp/final-vanilla", short),
                                                                ("cmp/screen", "screen")]
    df = runs.records_frame(rows)
    published = {"metric": "final/val/loss", "mode": "min", "claims": []}
    tuned = verdicts.judge({"where": {"cell": "gru", "fair": short}, "better_than": [{"cell": "vanilla"}]}, df, published)
    assert tuned["n"] == 2 and tuned["tests"][0]["test"] == "paired t"  # the two seeds, not the screen's run


def test_a_final_chosen_at_the_final_budget_is_final_and_not_a_shorter_screens(tmp_path):
    from rnnbench.report import runs

    for name, screen in (("full", []), ("short", ["train.max_steps=1000", "data.batch_size=16"])):
        folder = tmp_path / name
        for job in ("screen/0", "extend-lstm-optim.lr_0.032/0", "final-lstm/0"):
            (folder / job).mkdir(parents=True)
        assert runs.fair_stage(folder / "final-lstm" / "0") is None  # no plan beside: not a fair comparison
        (folder / fair.PLAN_FILE).write_text(json.dumps({"plan": {"screen": screen}}))
    for name, final in (("full", "final"), ("short", "final (screen train.max_steps=1000 data.batch_size=16)")):
        stages = [runs.fair_stage(tmp_path / name / job) for job in ("screen/0", "extend-lstm-optim.lr_0.032/0",
                                                                       "final-lstm/0")]
        assert stages == ["screen", "screen", final]


def test_a_second_comparison_joins_the_records_beside_the_first_and_replaces_only_its_own(comparison, tmp_path):
    import shutil

    from rnnbench.report import runs, study_records

    folder, _, _ = comparison
    again = tmp_path / "cmp_full"  # a second comparison: the same stage names, another plan
    shutil.copytree(folder / "final-gru", again / "final-gru")
    plan = json.loads((folder / fair.PLAN_FILE).read_text())
    (again / fair.PLAN_FILE).write_text(json.dumps({**plan, "plan": {**plan["plan"], "screen": []}}))
    out = tmp_path / "records"
    study_records.export("toy", [folder / "final-gru", folder / "final-vanilla"], out)
    legacy = [{**r, "sweep": r["sweep"].split("/")[1]} for r in runs.read_records(out)]  # before sweeps named their comparison
    (out / runs.RUNS_FILE).write_text("".join(json.dumps(r) + "\n" for r in legacy + [{"sweep": "shared", "job": "0"}]))
    study_records.export("toy", [folder / "final-gru"], out, add=True)
    study_records.export("toy", [again / "final-gru"], out, add=True)
    study_records.export("toy", [again / "final-gru"], out, add=True)  # exported again: replaces its own rows
    rows = runs.read_records(out)
    count = {}
    for r in rows:
        count[(r["sweep"], r.get("fair"))] = count.get((r["sweep"], r.get("fair")), 0) + 1
    assert count == {("cmp/final-gru", "final (screen train.max_steps=20)"): 2, ("cmp_full/final-gru", "final"): 2,
                     ("final-vanilla", "final (screen train.max_steps=20)"): 2, ("shared", None): 1}


def test_two_values_that_never_left_the_baseline_are_not_ranked_however_their_seeds_differ(tmp_path):
    """Study 8's modular arithmetic: every cell at the memoryless baseline at the test lengths, yet the
    accuracies differ from seed to seed; the table says how many seeds got under 0.9 × the baseline and
    ranks no pair of which neither did. A value that learned is still compared with one that did not."""
    import yaml

    from rnnbench.records.run_folder import RunRecorder, Summary

    # three cells, three seeds; at_chance ones differ on every seed by the same sign (a t-test would rank them)
    results = {"a": [(0.30, 1.00), (0.32, 0.99), (0.31, 1.01)],
               "b": [(0.20, 1.00), (0.21, 1.00), (0.22, 0.98)],
               "c": [(0.90, 0.20), (0.95, 0.10), (0.93, 0.95)]}  # left the baseline on two seeds
    for cell, per_seed in results.items():
        for seed, (accuracy, ratio) in enumerate(per_seed, start=1):
            folder = tmp_path / f"final-{cell}" / str(seed)
            with RunRecorder(folder) as rec:
                (folder / ".hydra").mkdir()
                (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"cell={cell}", f"train.seed={seed}"]))
                rec.write_summary(Summary(status="completed", cell=cell, seed=seed, steps=10, main_metric="val/accuracy",
                                          main_metric_mode="max", final={"val/accuracy": accuracy},
                                          best={"val/accuracy": accuracy},
                                          test={"test/accuracy": accuracy, "test/loss_over_baseline": ratio}))
    plan = fair.Plan(fair.parser().parse_args(["--dir", str(tmp_path), "--compare", "cell=a,b,c", "--grid",
                                               "optim.lr=0.001,0.01", "--seeds", "3", *TINY]))
    state = {"select": "best/val/accuracy", "mode": "max", "chosen": {}}
    text, pairs = fair.final_table(plan, state)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| ") and "−" in line}
    assert "seeds under 0.9 × baseline (test)" in text.splitlines()[0]
    cells = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in text.splitlines()[2:5]}
    assert cells == {"a": "0 of 3", "b": "0 of 3", "c": "2 of 3"}
    assert rows["a − b"][-1] == "neither left the baseline"
    ab = next(p for p in pairs if (p["a"], p["b"]) == ("a", "b"))
    assert ab["p"] < 0.05  # the t-test alone would have ranked them
    assert rows["a − c"][-1] != "neither left the baseline" and rows["b − c"][-1] != "neither left the baseline"
    assert "a budget where nothing learns ranks nothing" in text


def test_table_only_writes_the_table_again_from_the_runs_there_and_runs_nothing(comparison, tmp_path):
    folder, proc, args = comparison
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.jsonl")}
    table = (folder / "fair.md").read_text()
    (folder / "fair.md").write_text("an older rule's table\n")
    again = run_fair(folder.parent, *args, "--table-only")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (folder / "fair.md").read_text() == table and table in again.stdout
    assert "$ -m rnnbench" not in again.stdout  # no sweep launched
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*/metrics.jsonl")} == before
    # nowhere to read a table from: one line, and no folder made
    assert fair.main(["--dir", str(tmp_path / "none"), *args[2:], "--table-only"]) == 2
    assert not (tmp_path / "none").exists()
