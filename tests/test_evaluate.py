"""`python -m rnnbench.evaluate RUN_DIR [overrides]`: a finished run's model evaluated again, on its
own splits (the numbers the run recorded, exactly) or on a changed task setting (what the run measured
at that length), written beside the run; the run's own records are never touched; settings the model
cannot take are refused with one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from rnnbench import evaluate
from rnnbench.kernels.flush import set_flush_denormal
from rnnbench.records import run_folder

COPY_RUN = ["task=copy", "task.seq_len=5", "task.copy_len=3", "task.val_size=32", "train.batch_size=8",
            "model.hidden_size=16", "train.max_steps=30", "train.eval_every=10", "train.log_every=10",
            "train.profile_every=0", "train.threads=1", "logger.wandb.mode=disabled", "task.eval_lengths=[10]",
            "optim.lr=0.01"]


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    folder = root / "run"
    proc = run_cli(*COPY_RUN, f"hydra.run.dir={folder}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != evaluate.EVALUATIONS_DIR}


def test_the_runs_own_splits_give_the_numbers_the_run_recorded(copy_run, capsys):
    summary = run_folder.read_summary(copy_run)
    before = snapshot(copy_run)
    assert evaluate.main([str(copy_run)]) == 0
    result = json.loads((copy_run / "evaluations" / "default.json").read_text())
    assert result["step"] == summary.steps == 30 and result["checkpoint"] == "final"
    for key in ("val/loss", "val/recall_accuracy", "val@T=10/loss"):
        assert result["metrics"][key] == summary.final[key]
    for key, value in summary.test.items():
        assert result["metrics"][key] == value
    assert snapshot(copy_run) == before  # the run's records, checkpoints included, are untouched
    out = capsys.readouterr().out
    assert "val/recall_accuracy" in out and "written to" in out


def test_another_length_gives_what_the_run_measured_there(copy_run):
    """The run evaluated itself at T=10 at its end (val@T=10/...); evaluating at task.seq_len=10 later
    must give the same numbers: same model, same split."""
    summary = run_folder.read_summary(copy_run)
    result, path = evaluate.evaluate_run(copy_run, ["task.seq_len=10"], splits=("val",))
    assert result["changed"] == {"task.seq_len": {"run": 5, "evaluated": 10}}
    assert result["metrics"]["val/loss"] == summary.final["val@T=10/loss"]
    assert result["metrics"]["val/loss"] != summary.final["val/loss"]
    assert path.name == "task.seq_len=10.json" and path.parent == copy_run / "evaluations"


def test_best_checkpoint_holds_the_model_of_the_best_evaluation(copy_run):
    summary = run_folder.read_summary(copy_run)
    main = summary.main_metric
    result, _ = evaluate.evaluate_run(copy_run, [], splits=("val",), which="best")
    assert result["step"] == summary.best_step[main]
    assert result["metrics"][main] == summary.best[main]


@pytest.mark.parametrize("args, message", [
    (["model.hidden_size=32"], "model.hidden_size cannot be changed when evaluating a trained model: allowed are "
     "this run's task keys (task.batch_size, task.seed, task.seq_len, task.variant"),
    (["task.seq_len=ten"], "task.seq_len=ten is not allowed: the run's value is 5 (int); give a value of that type"),
    (["task.num_symbols=4"], "task.num_symbols=4: the model cannot take this task: it was trained on 10 input "
     "features per step, 10 outputs per step, this task has 6 input features per step, 6 outputs per step"),
    (["task.eval_lengths=[0]"], "task: eval_lengths=[0]: every length must be an integer >= 1"),
])
def test_a_setting_the_model_cannot_take_is_one_clear_error(copy_run, capsys, args, message):
    before = snapshot(copy_run)
    assert evaluate.main([str(copy_run), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(("Error in config:\n", "Error in checkpoint:\n")) and message in err, err
    assert snapshot(copy_run) == before


def test_a_folder_without_a_run_is_one_clear_error(tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    assert f"{tmp_path} is not a run folder: it has no config.yaml" in capsys.readouterr().err


def test_a_run_without_a_checkpoint_is_one_clear_error(copy_run, tmp_path, capsys):
    folder = tmp_path / "no-checkpoint"
    folder.mkdir()
    (folder / "config.yaml").write_bytes((copy_run / "config.yaml").read_bytes())
    assert evaluate.main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} has no final checkpoint (looked in {folder / 'checkpoints'})" in err, err


def test_a_text_classifier_is_refused_data_whose_vocabulary_differs(tmp_path):
    """Token ids are positions in the run's vocabulary: another training file gives other ids."""
    from datagen import sentiment_csv
    from rnnbench.errors import ConfigError
    from rnnbench.tasks.text import TextClassificationTask

    def task(seed):
        folder = sentiment_csv(tmp_path / str(seed), seed=seed)
        return TextClassificationTask(train_file=str(folder / "train.csv"), valid_file=str(folder / "valid.csv"),
                                      test_file=str(folder / "test.csv"), dataset=None)

    trained, other = task(0), task(1)
    assert sorted(trained.vocabulary()) == sorted(other.vocabulary())  # the same words ...
    assert trained.vocabulary() != other.vocabulary()                  # ... in another order
    evaluate.check_compatible(tmp_path, trained.spec, trained.vocabulary(), task(0), {})  # the same data: fine
    with pytest.raises(ConfigError, match=r"task.train_file=x.csv: the model cannot take this data: its vocabulary "
                                          r"differs .*the same tokens in another order"):
        evaluate.check_compatible(tmp_path, trained.spec, trained.vocabulary(), other,
                                  {"task.train_file": ("train.csv", "x.csv")})


@pytest.mark.parametrize("flush", [True, False])
def test_evaluation_computes_with_the_runs_flush_mode(copy_run, tmp_path, flush):
    """Subnormals are flushed (or kept) as the run's train.flush_denormal says, so the numbers match."""
    run = tmp_path / "run"
    run.mkdir()
    for item in copy_run.iterdir():  # the run, its recorded flush mode changed
        if item.is_file():
            (run / item.name).write_bytes(item.read_bytes())
    (run / "checkpoints").symlink_to(copy_run / "checkpoints")
    (run / ".hydra").symlink_to(copy_run / ".hydra")
    text = (run / "config.yaml").read_text()
    assert "flush_denormal: true" in text
    (run / "config.yaml").write_text(text.replace("flush_denormal: true", f"flush_denormal: {str(flush).lower()}"))
    try:
        evaluate.load_run(run, ["task.seq_len=6"])
        subnormal = torch.tensor([1e-39]) * 1.0
        assert (subnormal.item() == 0.0) == flush
    finally:
        set_flush_denormal(False)  # the suite's default arithmetic


def test_options_and_overrides_in_any_order_and_a_run_that_stopped_early_is_said(tmp_path, capsys):
    folder = tmp_path / "stopped"
    proc = run_cli(*COPY_RUN, "train.checkpoint_every=10", "testing.fail_at_step=25", f"hydra.run.dir={folder}",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "fail_at_step=25" in proc.stderr
    assert evaluate.main([str(folder), "--split", "val", "train.threads=1", "--name", "mixed"]) == 0
    captured = capsys.readouterr()
    assert ("warning: the run did not reach its last step: its newest checkpoint is of step 20 of "
            "train.max_steps=30 (status failed); evaluating that model") in captured.err
    result = json.loads((folder / "evaluations" / "mixed.json").read_text())
    assert result["ended_early"] == {"step": 20, "max_steps": 30, "status": "failed"}
    assert result["overrides"] == ["train.threads=1"] and "val/loss" in result["metrics"]
    assert not any(k.startswith("test/") for k in result["metrics"])
