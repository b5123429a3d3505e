"""Length generalisation: train at T, evaluate at other lengths (`task.eval_lengths`), recorded as
`val@T=<length>/<metric>` rows and summary entries."""

from __future__ import annotations

import re

import pytest
import torch
from paper_figures import check_paper_figure, drawn  # noqa: F401 (a fixture)

from rnnbench.errors import ConfigError
from rnnbench.modules.cells import LSTMCell
from rnnbench.modules.models import SequenceModel
from rnnbench.run.config import compose, validate
from rnnbench.run.train import TrainSettings, Trainer, evaluate_model
from rnnbench.tasks.adding import AddingTask
from rnnbench.tasks.copy import CopyTask


class Rows:
    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append(row)

    def log_profile(self, step, profile):
        pass


@pytest.mark.parametrize("make, kwargs", [
    (CopyTask, dict(variant="tcn", num_symbols=4, copy_len=3, batch_size=8, val_size=20, seed=3)),
    (AddingTask, dict(variant="anywhere", batch_size=8, val_size=20, seed=3, solve_mse=0.02)),
])
def test_at_length_is_the_same_task_at_another_length(make, kwargs):
    task = make(seq_len=5, **kwargs)
    longer, direct = task.at_length(17), make(seq_len=17, **kwargs)
    assert type(longer) is make and longer.describe() == direct.describe()
    a, b = longer.probe_batch(), direct.probe_batch()  # the same split generators: the same data
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.inputs.shape[0] == longer.input_length > task.input_length


def _train(task, length_eval="end", steps=20):
    torch.manual_seed(0)
    model = SequenceModel(task.spec, LSTMCell, 8)
    rows = Rows()
    settings = TrainSettings(max_steps=steps, eval_every=10, log_every=10, profile_every=0, progress=False,
                             length_eval=length_eval)
    trainer = Trainer(model, task, torch.optim.Adam(model.parameters(), 1e-2), None, settings, [rows])
    return trainer, trainer.fit(), rows.rows


def test_the_trained_model_is_evaluated_at_every_length_at_the_end():
    task = AddingTask(seq_len=8, batch_size=8, val_size=32, seed=0, eval_lengths=[8, 16, 40])
    trainer, result, rows = _train(task)
    keys = [k for k in result.final if k.startswith("val@")]
    assert keys == [f"val@T={T}/{m}" for T in (8, 16, 40) for m in ("loss", "loss_over_baseline", "accuracy")]
    assert [k for k in rows[0] if k.startswith("val@")] == []  # at the end only (length_eval=end)
    assert all(rows[-1][k] == result.final[k] for k in keys)  # the final row of metrics.jsonl holds them
    # at the training length the numbers are the validation split's; elsewhere, the split at that length
    assert result.final["val@T=8/loss"] == result.final["val/loss"]
    assert result.final["val@T=40/loss"] == evaluate_model(trainer.model, task.at_length(40))["loss"]
    assert result.final["val@T=40/loss"] != result.final["val@T=16/loss"]
    assert not any(k.startswith("val@") for k in result.best)  # best tracks the training length only


def test_length_eval_at_eval_cadence():
    task = CopyTask(seq_len=4, copy_len=2, batch_size=8, val_size=16, seed=0, eval_lengths=[12])
    _, result, rows = _train(task, length_eval="eval")
    evaluated = [r["step"] for r in rows if "val@T=12/recall_accuracy" in r]
    assert evaluated == [10, 20]


def compose_cfg(*overrides):
    return compose(overrides)


def test_bad_lengths_are_refused_with_the_key_value_and_what_is_allowed(tmp_path):
    with pytest.raises(ValueError, match=r"eval_lengths=\[1, 100\]: every length must be an integer >= 2"):
        AddingTask(seq_len=10, val_size=8, eval_lengths=[1, 100])
    cfg = compose_cfg("task=lm", "+task.eval_lengths=[100]")
    with pytest.raises(ConfigError, match=r"task.eval_lengths=\[100\] is not allowed for this task: its sequence "
                                          r"length is not a parameter \(tasks with task.seq_len: copy, adding, the formal languages, mqar, induction_heads\)"):
        validate(cfg)
    cfg = compose_cfg("task=adding", "train.length_eval=always")
    with pytest.raises(ConfigError, match="train.length_eval='always' is not allowed: choose one of end, eval"):
        validate(cfg)


# ------------------------------------------------------------------------------------------------
# The report: metric against length per cell, mean ± std over seeds; its figure; the gate saturation plane

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("lengths")
    proc = run_cli("-m", "task=adding", "task.seq_len=6", "task.val_size=16", "train.batch_size=8",
                   "model.hidden_size=8", "train.max_steps=6", "train.eval_every=3", "train.log_every=3",
                   "train.profile_every=3", "train.threads=1", "logger.wandb.mode=disabled",
                   "task.eval_lengths=[6,12,24]", "cell=lstm,vanilla", "train.seed=0,1",
                   f"hydra.sweep.dir={root / 'sweep'}", cwd=root, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "sweep"


def test_report_tables_the_metric_against_length_per_cell(sweep, capsys):
    from rnnbench import report
    from rnnbench.records import run_folder

    assert report.main([str(sweep), "--lengths", "--precision", "6"]) == 0
    table = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["cell", "val@T=6/loss", "val@T=12/loss", "val@T=24/loss", "n"]
    runs = {d.name: run_folder.read_summary(d) for d in sweep.iterdir() if (d / "summary.json").is_file()}
    for row in table[2:]:
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        values = [s.final for s in runs.values() if s.cell == cells[0]]
        for text, T in zip(cells[1:4], (6, 12, 24)):
            losses = torch.tensor([v[f"val@T={T}/loss"] for v in values], dtype=torch.float64)
            assert text == f"{losses.mean():.6f} ± {losses.std():.6f}", (text, T)


def test_report_figures_length_generalisation_and_gate_saturation(sweep, tmp_path, capsys):
    from rnnbench import report

    assert report.main([str(sweep), "--lengths", "accuracy", "--figures", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    for name in ("length_generalisation_accuracy", "gate_saturation_layer0"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000, name
    assert "note: no gate saturation for vanilla: its runs have no gate statistics for layer0" in err
    assert report.main([str(sweep), "--lengths", "perplexity"]) == 2
    assert ("--lengths 'perplexity': no such metric at other lengths; available: accuracy, loss, "
            "loss_over_baseline") in capsys.readouterr().err


def test_a_length_table_of_runs_without_lengths_is_one_clear_error(tmp_path, capsys):
    from rnnbench import report
    from rnnbench.records import run_folder

    run = tmp_path / "run"
    with run_folder.RunRecorder(run) as recorder:
        recorder.write_summary(run_folder.Summary(status="completed", cell="lstm", main_metric="val/loss",
                                                  final={"val/loss": 0.1}))
    assert report.main([str(run), "--lengths"]) == 2
    assert ("Error in input:\nno length-generalisation metrics (val@T=<length>/<metric>) in these runs: "
            "train them with task.eval_lengths=[...]") in capsys.readouterr().err


def test_the_report_figures_are_drawn_for_a_paper(sweep, tmp_path, drawn):
    """Learning curves, the gradient profile (saying at which step), length generalisation (the
    baseline above the curves) and the gate saturation plane (translucent, the step said)."""
    from rnnbench import report

    assert report.main([str(sweep), "--lengths", "loss", "--figures", str(tmp_path)]) == 0
    by_name: dict[str, tuple] = {}
    for fig, path in drawn:
        by_name.setdefault(path.stem, (fig, []))[1].append(path)
    assert {"learning_curves_val_loss", "gradient_profile_layer0", "length_generalisation_loss",
            "gate_saturation_layer0"} <= set(by_name), sorted(by_name)
    for fig, files in by_name.values():
        check_paper_figure(fig, files)
    profile = by_name["gradient_profile_layer0"][0].axes[0]
    assert re.search(r"at training steps? \d+", profile.get_title()), profile.get_title()
    gates = by_name["gate_saturation_layer0"][0]
    assert re.search(r"at training steps? \d+", gates._suptitle.get_text())
    assert all(c.get_alpha() <= 0.3 for ax in gates.axes for c in ax.collections)  # density, not a blot at 0
    lengths = by_name["length_generalisation_loss"][0].axes[0]
    baseline = next(l for l in lengths.get_lines() if l.get_label() == "memoryless baseline")
    assert baseline.get_zorder() > max(l.get_zorder() for l in lengths.get_lines() if l is not baseline)
    assert lengths.get_ylabel() == "validation MSE"


def test_more_groups_than_one_axes_can_show_get_a_panel_each_with_every_seed(tmp_path, drawn):
    """Thirteen cells at chance are one blot in one axes (study 8's parity check): past MAX_LINES groups,
    one panel per group, titled with it, its mean, and every seed's own line; evenly spaced lengths on
    a linear axis, every panel with its tick labels."""
    import numpy as np
    import pandas as pd

    from rnnbench.report import lengths
    from rnnbench.report.runs import label

    columns = [f"final/val@T={n}/accuracy" for n in (50, 150, 250)]
    rows = [{"cell": f"c{c}", "train.seed": seed, "status": "completed", "cfg.task.seq_len": 40,
             **{col: 0.5 + 0.1 * c / 8 + 0.01 * seed + 0.001 * j for j, col in enumerate(columns)}}
            for c in range(lengths.MAX_LINES + 1) for seed in range(3)]
    df = pd.DataFrame(rows)
    paths = lengths.length_figure(df, ["cell"], columns, tmp_path / "many", lambda keys, values: f"cell={label(values[0])}")
    (fig, _), = {id(f): (f, p) for f, p in drawn}.values()
    check_paper_figure(fig, paths)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == lengths.MAX_LINES + 1 and len(fig.axes) == 8  # two rows of four, the last one hidden
    for c, ax in enumerate(panels):
        assert ax.get_title() == f"cell=c{c} (n=3)"
        lines = [line for line in ax.get_lines() if line.get_label() != "training length"]
        drawn_runs = [line.get_ydata() for line in lines if line.get_color() == "0.55"]
        expected = df[df["cell"] == f"c{c}"][columns].to_numpy()
        assert np.allclose(sorted(map(tuple, drawn_runs)), sorted(map(tuple, expected)))  # each seed, as recorded
        mean = next(line for line in lines if line.get_color() != "0.55")
        assert np.allclose(mean.get_ydata(), expected.mean(axis=0))
        assert ax.get_xscale() == "linear" and [t.get_text() for t in ax.get_xticklabels()] == ["50", "150", "250"]
        assert any(line.get_label() == "training length" for line in ax.get_lines())
    # up to MAX_LINES groups share one axes, with a legend
    few = lengths.length_figure(df[df["cell"].isin(["c0", "c1"])], ["cell"], columns, tmp_path / "few",
                                lambda keys, values: f"cell={label(values[0])}")
    fig = drawn[-1][0]
    assert len(fig.axes) == 1 and fig.axes[0].get_legend() is not None and few[0].exists()
    # no completed run at all: one empty axes, still labelled (not an IndexError)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib: a legend without entries
        lengths.length_figure(df.assign(status="failed"), ["cell"], columns, tmp_path / "none", lambda keys, values: "x")
    fig = drawn[-1][0]
    assert len(fig.axes) == 1 and not fig.axes[0].get_lines()[:-1] and fig.axes[0].get_xlabel()
