"""A researcher's own cell, task and experiments, kept in their own folder (README, "Compare your own
cell"; the example is examples/my_research): the cell computes its paper's equations, gets every
architecture, the temporal gradient profile and parameter budgets; the task trains; the sweep and the
experiment preset run from the user's folder with `--config-dir`. And what goes wrong at that boundary
(a target that does not import, a class that is not a cell or a task, a step with the wrong shapes)
ends in one message naming the key and what is expected, exit code 2, no traceback
(docs/bad-inputs.md).
"""

from __future__ import annotations

import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli
from rnnbench.modules.budget import hidden_size_for_budget
from rnnbench.modules.diagnostics import temporal_profile
from rnnbench.modules.models import SequenceModel
from rnnbench.modules.recurrent import resolve_backend
from rnnbench.run import interface

EXAMPLE = REPO / "examples" / "my_research"
TINY = ["train.max_steps=4", "train.log_every=2", "train.eval_every=2", "train.profile_every=2",
        "train.batch_size=4", "model.hidden_size=8", "train.threads=1", "logger.wandb.mode=disabled"]
ARCHS = {"single": {}, "deep": dict(num_layers=3), "bidirectional": dict(bidirectional=True),
         "pyramid": dict(num_layers=3, bidirectional=True, pyramid=True)}


@pytest.fixture
def user_code(monkeypatch):
    """The example's modules importable, as they are for `python -m rnnbench` run in its folder."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import mycells
    import mytasks

    return mycells, mytasks


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A copy of the example: the user's own repository, outside the checkout."""
    folder = tmp_path_factory.mktemp("user") / "my_research"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return folder


# -- the cell and the task -----------------------------------------------------------------------
def test_mgu_step_is_its_equation(user_code):
    """Zhou et al. 2016, eqs. 6-8: f = σ(W_f x + U_f h + b_f), h̃ = tanh(W_h x + U_h (f ⊙ h) + b_h),
    h_t = (1 - f) h_{t-1} + f h̃; its one gate reported for the gate statistics."""
    cell = user_code[0].MGUCell(3, 5)
    x, h = torch.randn(4, 3), torch.randn(4, 5)
    W_f, W_h = cell.weight_ih.chunk(2)
    U_f, U_h = cell.weight_hh.chunk(2)
    b_f, b_h = (cell.bias_ih + cell.bias_hh).chunk(2)
    f = torch.sigmoid(x @ W_f.T + h @ U_f.T + b_f)
    expected = (1 - f) * h + f * torch.tanh(x @ W_h.T + (f * h) @ U_h.T + b_h)
    gates = {}
    out, (state,) = cell.step(cell.input_projection(x[None])[0], (h,), gates=gates)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(state, expected)
    torch.testing.assert_close(gates["forget"], f)
    # one gate fewer than the GRU: 2H(I + H + 2) parameters
    assert sum(p.numel() for p in cell.parameters()) == 2 * 5 * (3 + 5 + 2)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_user_cell_gets_every_architecture_the_profile_and_budgets(user_code, arch):
    from rnnbench.tasks.adding import AddingTask

    task = AddingTask(seq_len=8, batch_size=4, val_size=8)
    model = SequenceModel(task.spec, user_code[0].MGUCell, 6, **ARCHS[arch])
    assert {resolve_backend(c, "auto") for layer in model.stack.layers for c in layer.directions} == {"explicit"}
    batch = task.train_batch()
    outputs, _ = model(batch.inputs, batch.lengths)
    assert outputs.shape == (4, 1)
    task.loss(outputs, batch).backward()
    assert all(p.grad is not None for p in model.parameters())
    profile = temporal_profile(model, task.loss, task.probe_batch())
    assert len(profile["layers"]) == (len(model.stack.layers) * (2 if ARCHS[arch].get("bidirectional") else 1))
    assert all(len(norms) > 0 and all(n >= 0 for n in norms) for norms in profile["layers"].values())
    make = lambda h: SequenceModel(task.spec, user_code[0].MGUCell, h, **ARCHS[arch])  # noqa: E731
    h = hidden_size_for_budget(5_000, make)
    assert abs(make(h).num_parameters() - 5_000) <= abs(make(h + 1).num_parameters() - 5_000)


def test_the_parity_task_is_running_parity_and_reproducible(user_code):
    task = user_code[1].ParityTask(seq_len=7, batch_size=16, val_size=32, seed=3)
    batch = task.train_batch()
    assert batch.inputs.shape == (7, 16, 1) and batch.targets.shape == (7, 16)
    bits = batch.inputs[..., 0].long()
    for t in range(7):  # y_t = x_1 xor ... xor x_t
        torch.testing.assert_close(batch.targets[t], bits[: t + 1].sum(0) % 2)
    again = user_code[1].ParityTask(seq_len=7, batch_size=16, val_size=32, seed=3)
    torch.testing.assert_close(again.train_batch().inputs, batch.inputs)
    # the best memoryless predictor: x_1 at step 1, a coin after it
    def memoryless(b, state):
        logits = torch.zeros(*b.targets.shape, 2)
        logits[0] = torch.nn.functional.one_hot(b.targets[0], 2).float() * 50
        return logits, state
    assert task.evaluate(memoryless)["loss"] == pytest.approx(task.memoryless_baseline, rel=1e-4)
    truth = task.evaluate(lambda b, s: (torch.nn.functional.one_hot(b.targets, 2).float() * 50, s))
    assert truth["accuracy"] == 1.0


def test_a_user_cell_learns_what_its_equations_allow(user_code):
    """The MGU's gate can close (f = 0 keeps h), so its state can hold the marked values of the adding
    problem until the end: it learns it."""
    from rnnbench.tasks.adding import AddingTask

    torch.manual_seed(0)
    task = AddingTask(seq_len=10, batch_size=32, val_size=256)
    model = SequenceModel(task.spec, user_code[0].MGUCell, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        batch = task.train_batch()
        optimizer.zero_grad()
        task.loss(model(batch.inputs)[0], batch).backward()
        optimizer.step()
    loss = task.evaluate(lambda b, s: model(b.inputs, b.lengths, s))["loss"]
    assert loss < 0.2 * task.memoryless_baseline, loss


# -- from the user's folder, as the README runs it ---------------------------------------------------
def test_sweep_the_user_cell_against_lstm_on_the_user_task(user_folder):
    proc = run_cli("--config-dir", "conf", "-m", "cell=my_mgu,lstm", "task=parity", "task.seq_len=6",
                   "task.val_size=16", *TINY, cwd=user_folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (user_folder / "outputs" / "sweeps").glob("*/*")
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert sorted(s["cell"] for s in summaries) == ["lstm", "my_mgu"]
    assert all(s["status"] == "completed" and s["task"] == "parity" for s in summaries)
    assert all(s["main_metric"] == "val/accuracy" for s in summaries)
    table = (sweep / "sweep_summary.md").read_text()
    assert "| my_mgu" in table and "| lstm" in table
    # the temporal gradient profile of the user's cell, as for a built-in one
    mgu = next(p.parent for p in sweep.glob("*/summary.json") if json.loads(p.read_text())["cell"] == "my_mgu")
    profile = json.loads((mgu / "profile.json").read_text())
    assert len(profile["layers"]["layer0"]) == 6


@pytest.mark.parametrize("launcher", ["basic", pytest.param("parallel", marks=pytest.mark.slow)])
def test_an_experiment_preset_in_the_user_folder(user_folder, tmp_path, launcher):
    """The preset's own launcher (parallel: joblib workers import the user's modules too) is the slow
    variant; the basic launcher runs the same preset in this process."""
    proc = run_cli("--config-dir", str(user_folder / "conf"), "+experiment=parity_cells", "cell=my_mgu",
                   "train.seed=0", "task.val_size=16", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   f"hydra/launcher={launcher}", cwd=user_folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = (tmp_path / "sweep").glob("*/summary.json")
    summary = json.loads(summary.read_text())
    assert (summary["cell"], summary["task"], summary["task_info"]["task"]) == ("my_mgu", "parity", "parity")
    assert summary["threads"] == 1  # the preset's own setting


# -- bad input at the boundary --------------------------------------------------------------------
BAD_CODE = '''
import torch
from rnnbench.modules.cells import Cell
from rnnbench.tasks.base import Task


class WideCell(Cell):  # step returns (B, 2H)
    def step(self, x_proj_t, state):
        (h,) = state
        h = torch.cat([h, h], dim=1)
        return h, (h,)


class HalfTask(Task):  # forgot evaluate and batch_metrics
    name = "half"

    def train_batch(self):
        raise NotImplementedError

    def loss(self, outputs, batch):
        raise NotImplementedError


import not_installed_anywhere  # noqa: E402  (a dependency the user forgot)
'''
ADDING = ["task=adding", "task.seq_len=8", "task.val_size=16", *TINY]
BOUNDARY = {
    "target-not-importable": (["cell._target_=mypkg.cells.MinGRU"],
                              ["cell._target_=mypkg.cells.MinGRU cannot be imported: no module named 'mypkg'",
                               "a module in the current folder, on PYTHONPATH, or in an installed package"]),
    "target-name-not-in-module": (["cell=my_mgu", "cell._target_=mycells.MGU"],
                                  ["cell._target_=mycells.MGU cannot be imported: module 'mycells' has no 'MGU'"]),
    "target-module-fails-to-import": (["cell=my_mgu", "cell._target_=badcode.WideCell"],
                                      ["cell._target_=badcode.WideCell cannot be imported: importing it raised "
                                       "ModuleNotFoundError: No module named 'not_installed_anywhere' (",
                                       "badcode.py:24)"]),
    "not-a-cell": (["cell._target_=torch.nn.Linear"],
                   ["cell._target_=torch.nn.Linear is not a recurrent cell: it lacks input_projection, step, "
                    "default_state, fused_mode, gate_activations"]),
    "not-a-task": (["task._target_=torch.nn.Linear"],
                   ["task._target_=torch.nn.Linear is not a task: it lacks train_batch, loss, batch_metrics, "
                    "evaluate"]),
    "task-lacks-methods": (["task=half"], ["task._target_=halftask.HalfTask is not a task: it lacks "
                                           "batch_metrics, evaluate"]),
    "wrong-step-shape": (["cell=wide"],
                         ["cell._target_=widecell.WideCell: step(x_proj_t, state) returned h of shape (2, 16); "
                          "expected (batch, hidden_size) = (2, 8)"]),
    "unknown-cell-argument": (["cell._target_=mycells.MGUCell"],
                              ["cell._target_=mycells.MGUCell cannot be built from the config: got an "
                               "unexpected keyword argument 'forget_bias'"]),
    "cell-not-partial": (["cell=my_mgu", "cell._partial_=false"],
                         ["cell._partial_ must be true (found False)"]),
}


@pytest.fixture(scope="module")
def boundary_outcomes(user_folder):
    """Every boundary case run from the user's folder, two at a time."""
    (user_folder / "badcode.py").write_text(BAD_CODE)
    # the same classes without the failing import, one module each
    clean = BAD_CODE.rsplit("import not_installed_anywhere", 1)[0]
    (user_folder / "widecell.py").write_text(clean)
    (user_folder / "halftask.py").write_text(clean)
    (user_folder / "conf" / "cell" / "wide.yaml").write_text("_target_: widecell.WideCell\n_partial_: true\n")
    (user_folder / "conf" / "task" / "half.yaml").write_text("_target_: halftask.HalfTask\n")

    def attempt(name):
        args, _ = BOUNDARY[name]
        base = TINY if args[0].startswith("task=") else ADDING  # a case with its own task
        return name, run_cli("--config-dir", "conf", *base, *args, f"hydra.run.dir=boundary/{name}",
                             cwd=user_folder)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(attempt, BOUNDARY))


@pytest.mark.parametrize("name", list(BOUNDARY))
def test_boundary_error_is_one_message_exit_2(boundary_outcomes, user_folder, name):
    proc = boundary_outcomes[name]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.startswith("Error in config:\n") or "\nError in config:\n" in proc.stderr, proc.stderr[-3000:]
    for fragment in BOUNDARY[name][1]:
        assert fragment in proc.stderr, (fragment, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (user_folder / "boundary" / name / "summary.json").exists()  # refused before any run


def test_every_boundary_case_is_in_the_table():
    table = (REPO / "docs" / "bad-inputs.md").read_text()
    missing = [name for name in BOUNDARY if f"`{name}`" not in table]
    assert not missing, f"docs/bad-inputs.md lacks {missing}"


def test_the_step_check_leaves_the_random_generators_alone(user_code):
    cell = user_code[0].MGUCell(2, 4)
    state = torch.random.get_rng_state()
    interface.check_cell_step(cell, "mycells.MGUCell")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_extending_page_shows_the_example_as_it_is():
    """docs/extending.md quotes the example's code and configs: every line of each block is in the
    example's files, so the page cannot drift from what the tests run."""
    section = (REPO / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```(python|yaml)\n(.*?)```", section, flags=re.S)
    sources = {"python": (EXAMPLE / "mycells.py").read_text() + (EXAMPLE / "mytasks.py").read_text(),
               "yaml": "".join(p.read_text() for p in (EXAMPLE / "conf").rglob("*.yaml"))}
    assert len(blocks) == 5
    for kind, block in blocks:
        for line in block.splitlines():
            assert line in sources[kind], line
