"""Bad input, as a user meets it (`python -m rnnbench ...` in a subprocess): every case of
docs/bad-inputs.md gets one clear message (the key or file, the bad value, what is allowed), a non-zero
exit code and no Python traceback, and nothing already written is damaged: the run folders a case
points at keep their results, metrics, checkpoints and W&B files byte for byte.

The config errors already covered by tests/test_app.py (`cell=lstmm`, `foo=1`, ...) are listed in the
doc and not repeated here. All cases run up front, two at a time (a module fixture); each test then
checks one case.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import REPO, run_cli
from datagen import char_corpus
from rnnbench.run import checkpoint

ADDING = ["task=adding", "task.seq_len=8", "task.val_size=16", "train.batch_size=4", "model.hidden_size=8",
          "train.max_steps=8", "train.checkpoint_every=4", "train.log_every=2", "train.eval_every=4",
          "train.threads=1", "logger.wandb.mode=offline"]
CRASHED = [*ADDING, "testing.fail_at_step=6"]  # a run that crashed after step 6 (checkpoint of step 4)
LM = ["task=lm", "task.level=char", "task.bptt=8", "task.eval_batch_size=2", "train.batch_size=2",
      "model.hidden_size=8", "train.max_steps=2", "train.threads=1", "logger.wandb.mode=disabled"]

# Hydra rewrites `.hydra/` and appends to the job's log on every launch into a folder, refused or not,
# and the app holds the folder's `.lock` (records.hold_folder, noting its pid) before it reads anything;
# everything else in a run folder must come out of a refused command untouched.
LAUNCH_RECORDS = (".hydra", "app.log", ".lock")


@dataclass
class Case:
    args: list[str]  # {corpus}, {root} and {folder} are filled in
    expect: list[str]  # fragments of the message, in stderr
    returncode: int = 2
    folder_from: str | None = None  # the case runs in a copy of this prepared run folder
    damage: Callable[[Path], None] | None = None  # what is wrong with that copy
    skip: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def cut_latest_checkpoint(folder: Path) -> None:
    path = checkpoint.latest(folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def foreign_state_dict(folder: Path) -> None:
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, checkpoint.latest(folder))


def pickled_module(folder: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), checkpoint.latest(folder))


def empty_checkpoint(folder: Path) -> None:
    checkpoint.latest(folder).write_bytes(b"")


CASES: dict[str, Case] = {
    # -- wrong types and values ------------------------------------------------------------------
    "wrong-type-int": Case([*ADDING, "train.max_steps=ten"],
                           ["Error in config:\ntrain.max_steps=ten: Value 'ten' of type 'str' could not be "
                            "converted to Integer"]),
    "wrong-type-bool": Case([*ADDING, "train.resume=maybe"],
                            ["Error in config:\ntrain.resume=maybe: Value 'maybe' is not a valid bool"]),
    "list-given-an-int": Case([*ADDING, "task.eval_lengths=100"],
                              ["task.eval_lengths=100 is not allowed: task.eval_lengths takes a list, e.g. "
                               "task.eval_lengths=[100,200]"]),
    "group-typo": Case([*ADDING, "cel=gru"],
                       ["Error in config:\ncel=gru: the config has no key or config group 'cel'.\n"
                        "Did you mean cell=gru?"]),
    "group-option-typo": Case([*ADDING, "cell=lstmm"],
                              ["cell=lstmm: config group 'cell' has no option 'lstmm'; did you mean cell=lstm? "
                               "choose one of "]),
    "unknown-task-key": Case([*LM, "task.corpus={corpus}", "task.seq_len=10"],
                             ["task.seq_len=10: 'task' has no key 'seq_len'.", "Its keys: ", "bptt",
                              "(To add a key of your own on purpose: +task.seq_len=10.)"]),
    # three values out of range at once: every one is listed (one line each)
    "negative-zero-out-of-range": Case([*ADDING, "train.checkpoint_every=-5", "model.num_layers=0", "model.dropout=1.5"],
                                       ["model.num_layers=0 is not allowed: must be a positive integer (>= 1)",
                                        "train.checkpoint_every=-5 is not allowed: must be >= 0",
                                        "model.dropout=1.5 is not allowed: must be in [0, 1)"]),
    "bad-optimizer-value": Case([*ADDING, "optim.betas=[2.0,0.9]"],
                                ["optim: Invalid beta parameter at index 0: 2.0"]),
    "unknown-variant": Case([*ADDING[1:], "task=copy", "task.variant=graves"],
                            ["task.variant='graves' is not allowed: choose one of arjovsky, tcn, s4"]),
    "lm-level": Case([*LM, "task.corpus={corpus}", "task.level=bytes"],
                     ["task.level='bytes' is not allowed: choose one of char, word"]),
    "lstm-variant": Case([*ADDING, "cell=peephole", "cell.variant=cfig"],
                         ["cell.variant='cfig' is not allowed: choose one of vanilla, nig, nfg, nog, niaf, noaf, "
                          "np, cifg, fgr"]),
    "variant-on-lstm": Case([*ADDING, "cell=lstm", "cell.variant=cifg"],
                            ["cell.variant=cifg: 'cell' has no key 'variant'.", "forget_bias"]),
    "no-cuda": Case([*ADDING, "train.device=cuda"],
                    ["train.device='cuda' is not available here (no CUDA device): use auto or cpu"],
                    skip="a CUDA device is present" if torch.cuda.is_available() else None),
    "guard-rail-negative": Case([*ADDING, "train.skip_nonfinite=-1", "hydra.run.dir={folder}"],
                                ["train.skip_nonfinite=-1 is not allowed: must be >= 0"]),
    # -- contradictory settings ------------------------------------------------------------------
    "tied-sizes": Case([*LM, "task.corpus={corpus}", "model.tie_weights=true", "model.embedding_size=4"],
                       ["model.tie_weights=true needs model.embedding_size (4) == model.hidden_size x directions (8)"]),
    "pyramid-too-deep": Case([*ADDING, "task.seq_len=4", "arch=pyramid"],
                             ["model.pyramid=true with model.num_layers=4 reduces time 8x, but this task's "
                              "sequences have 4 steps: use model.num_layers <= 3"]),
    "bidirectional-lm": Case([*LM, "task.corpus={corpus}", "arch=bidirectional"],
                             ["model.bidirectional=true is not allowed for this task",
                              "the backward direction would read the future it must predict"]),
    "k1-above-bptt": Case([*LM, "task.corpus={corpus}", "task.k1=20"],
                          ["task: need 1 <= k1 <= bptt, got k1=20, bptt=8"]),
    "backoff-without-skip": Case([*ADDING, "train.lr_backoff=0.5"],
                                 ["train.lr_backoff=0.5 needs train.skip_nonfinite >= 1"]),
    # -- data files ------------------------------------------------------------------------------
    "corpus-missing": Case([*LM, "task.corpus={root}/nope.txt"],
                           ["Error in data:", "corpus '{root}/nope.txt' not found. Looked in:"]),
    "corpus-empty": Case([*LM, "task.corpus={root}/empty.txt"], ["Error in data:", "{root}/empty.txt: file is empty"]),
    "corpus-garbled": Case([*LM, "task.corpus={root}/garbled.txt"],
                           ["{root}/garbled.txt: not valid UTF-8 at byte offset 3 (bytes ff: invalid start byte); "
                            "re-encode the file as UTF-8"]),
    "corpus-too-small": Case([*LM, "task.corpus={corpus}", "train.batch_size=5000"],
                             ["training tokens are too few for batch_size 5000"]),
    # -- run folders and checkpoints -------------------------------------------------------------
    "folder-holds-a-run": Case([*ADDING, "hydra.run.dir={folder}"],
                               ["hydra.run.dir={folder} already holds a run (status completed). To continue it, "
                                "add train.resume=true (same config); to start another run, choose a new "
                                "hydra.run.dir."], folder_from="completed"),
    "resume-changed-config": Case([*ADDING, "train.max_steps=12", "model.hidden_size=16", "train.resume=true",
                                   "hydra.run.dir={folder}"],
                                  ["train.resume: the config differs from the run being resumed",
                                   "model.hidden_size: 8 -> 16", "train.max_steps: 8 -> 12"], folder_from="completed"),
    "checkpoint-truncated": Case([*CRASHED, "train.resume=true", "hydra.run.dir={folder}"],
                                 ["Error in checkpoint:", "step-00000004.pt", "is cut short or is not a file "
                                  "written by torch.save"], folder_from="crashed", damage=cut_latest_checkpoint),
    "checkpoint-empty": Case([*CRASHED, "train.resume=true", "hydra.run.dir={folder}"],
                             ["step-00000004.pt is empty (0 bytes): not a checkpoint."],
                             folder_from="crashed", damage=empty_checkpoint),
    "checkpoint-foreign": Case([*CRASHED, "train.resume=true", "hydra.run.dir={folder}"],
                               ["is not an rnnbench checkpoint: it holds a dict with keys ['epoch', 'state_dict'], "
                                "not a 'rnnbench-checkpoint' record."], folder_from="crashed", damage=foreign_state_dict),
    "checkpoint-pickled-module": Case([*CRASHED, "train.resume=true", "hydra.run.dir={folder}"],
                                      ["is not a readable rnnbench checkpoint: it holds Python objects, which an "
                                       "rnnbench checkpoint never does."], folder_from="crashed", damage=pickled_module),
    "output-folder-unwritable": Case([*ADDING, "hydra.run.dir={root}/a-file/run"],
                                     ["cannot write the output folder hydra.run.dir={root}/a-file/run: "
                                      "Not a directory", "set hydra.run.dir=<a writable folder>"]),
    "sweep-folder-unwritable": Case(["-m", *ADDING, "train.seed=0,1", "hydra.sweep.dir={root}/a-file/sweep"],
                                    ["cannot write the output folder hydra.sweep.dir={root}/a-file/sweep: "
                                     "Not a directory"]),
    # refused before Hydra makes a folder or starts a job: one bad point of a sweep refuses the sweep
    "sweep-one-bad-point": Case(["-m", *ADDING, "task.seq_len=8,0", "hydra.sweep.dir={root}/bad-sweep"],
                                ["Error in config:\ntask.seq_len=0 is not allowed: must be a positive integer (>= 1)\n"
                                 "(in the sweep's jobs: 2; none was started)"]),
    # -- what cannot work: refused before anything is built ------------------------------------------
    "param-budget-unmet": Case([*ADDING, "model.param_budget=3"],
                               ["model.param_budget=3 cannot be met: the smallest model of this cell, architecture "
                                "and task (hidden_size=1) has ", "allowed: model.param_budget >= "]),
    "memory-width": Case([*ADDING, "model.hidden_size=2000000"],
                         ["this run needs at least ", "TiB of memory", "the parameters and their gradients",
                          "Lower model.hidden_size."]),
    "memory-length": Case([*ADDING, "task.seq_len=2000000000000"],
                          ["this run needs at least ", "2000000000000 steps x 4 sequences", "Lower task.seq_len."]),
    "memory-batch": Case([*ADDING, "train.batch_size=2000000000000"],
                         ["this run needs at least ", "8 steps x 2000000000000 sequences", "Lower train.batch_size."]),
    "corpus-binary": Case([*LM, "task.corpus={root}/nul.txt"],
                          ["Error in data:\n{root}/nul.txt: holds NUL bytes (the first at byte offset 0): a binary "
                           "file, not text"]),
    "corpus-one-symbol": Case([*LM, "task.corpus={root}/one-symbol.txt"],
                              ["Error in data:\n{root}/one-symbol.txt: the training split holds 1 distinct "
                               "character(s) ['a']; a language model needs at least 2"]),
    "dropout-one-layer": Case([*ADDING, "model.dropout=0.3"],
                              ["Error in config:\nmodel.dropout=0.3 is not allowed with model.num_layers=1: it applies "
                               "between stacked layers and one layer has none"]),
    "run-dir-empty": Case([*ADDING, "hydra.run.dir="],
                          ["Error in config:\nhydra.run.dir is empty (hydra.run.dir=''): the run would be written "
                           "into the current folder"]),
    "sweep-dir-empty": Case(["-m", *ADDING, "train.seed=0,1", "hydra.sweep.dir="],
                            ["Error in config:\nhydra.sweep.dir is empty (hydra.sweep.dir=''): the sweep would be "
                             "written into the current folder"]),
    # -- launcher --------------------------------------------------------------------------------
    "launcher-not-installed": Case([*ADDING, "hydra/launcher=ray"],
                                   ["Could not find 'hydra/launcher/ray'", "Available options in 'hydra/launcher'",
                                    "joblib", "submitit_slurm"], 1),
}


def launch_records_excluded(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder (checkpoints, W&B files included) but Hydra's launch records."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in LAUNCH_RECORDS}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, base_env=env)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    base = root / "wandb-home"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env.update({var: str(base) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")},
               NETRC=str(base / "no-netrc"), WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    corpus = char_corpus(root / "corpus.txt", n_chars=2000)
    (root / "empty.txt").write_text("")
    (root / "garbled.txt").write_bytes(b"abc\xff\xfe def\n" * 50)
    (root / "nul.txt").write_bytes(b"\0" * 2000)  # valid UTF-8, but a binary file
    (root / "one-symbol.txt").write_text("a" * 2000)
    (root / "a-file").write_text("not a folder")
    with ThreadPoolExecutor(2) as pool:  # the runs the folder cases start from
        prepared = dict(zip(("completed", "crashed"), pool.map(
            lambda args: run([*args[1], f"hydra.run.dir={root / args[0]}"], root, env),
            [("completed", ADDING), ("crashed", CRASHED)])))
    assert prepared["completed"].returncode == 0, prepared["completed"].stderr[-2000:]
    assert "fail_at_step=6" in prepared["crashed"].stderr

    def attempt(name: str) -> tuple[str, subprocess.CompletedProcess | None]:
        case = CASES[name]
        if case.skip:
            return name, None
        folder = root / name
        if case.folder_from:
            shutil.copytree(root / case.folder_from, folder)
            if case.damage:
                case.damage(folder)
            case.files = launch_records_excluded(folder)
        fill = {"corpus": str(corpus), "root": str(root), "folder": str(folder)}
        args = [a.format(**fill) for a in case.args]
        case.expect = [e.format(**fill) for e in case.expect]
        return name, run(args, root, env)

    with ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(attempt, CASES))
    return {"root": root, "results": results}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_message_and_damages_nothing(outcomes, name):
    case = CASES[name]
    if case.skip:
        pytest.skip(case.skip)
    proc = outcomes["results"][name]
    assert proc.returncode == case.returncode, (proc.returncode, proc.stderr[-3000:])
    for fragment in case.expect:
        assert fragment in proc.stderr, (fragment, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    if case.folder_from:
        assert launch_records_excluded(outcomes["root"] / name) == case.files  # untouched


def test_a_refused_command_leaves_no_run_folder(outcomes):
    """The cases without a folder of their own run in outputs/ (Hydra's default): none leaves a file
    there, not even Hydra's .hydra/ and log, whether it was refused before Hydra made the folder (a
    value, a key, a type) or while building (a data file, a budget, the memory estimate)."""
    assert not [p for p in (outcomes["root"] / "outputs").rglob("*") if p.is_file()]


def test_a_refused_sweep_writes_no_folder_and_runs_no_job(outcomes):
    """The good point of a sweep with one bad point did not run either: the sweep folder was never made."""
    assert outcomes["results"]["sweep-one-bad-point"].returncode == 2
    assert not (outcomes["root"] / "bad-sweep").exists()


def test_a_refused_run_writes_no_folder(outcomes):
    """A value validate refuses stops the run before Hydra makes its folder (no .hydra/, no log)."""
    assert outcomes["results"]["guard-rail-negative"].returncode == 2
    assert not (outcomes["root"] / "guard-rail-negative").exists()


def test_every_case_is_in_the_table():
    table = (REPO / "docs" / "bad-inputs.md").read_text()
    missing = [name for name in [*CASES, "still-going"] if f"`{name}`" not in table]
    assert not missing, f"docs/bad-inputs.md lacks {missing}"


def test_resuming_a_run_that_is_still_going_is_refused(tmp_path):
    """The run is paused (SIGSTOP) so it is surely alive while the second command tries its folder."""
    folder = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    live = subprocess.Popen([sys.executable, "-m", "rnnbench", *ADDING[:-1], "logger.wandb.mode=disabled",
                             "train.max_steps=100000", f"hydra.run.dir={folder}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(checkpoint.list_checkpoints(folder)):
            assert live.poll() is None and time.time() < deadline, "the run did not get going"
            time.sleep(0.05)
        live.send_signal(signal.SIGSTOP)
        before = launch_records_excluded(folder)
        proc = run([*ADDING[:-1], "logger.wandb.mode=disabled", "train.max_steps=100000", "train.resume=true",
                    f"hydra.run.dir={folder}"], tmp_path, env)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert (f"hydra.run.dir={folder} is in use: its run is still going (pid {live.pid} on "
                f"{socket.gethostname()}). Wait for it to end, or stop it with `kill -TERM {live.pid}` "
                "(it checkpoints first) and then resume.") in proc.stderr
        assert "Traceback" not in proc.stderr
        assert launch_records_excluded(folder) == before
    finally:
        live.kill()
        live.wait()


def test_a_cell_that_cannot_be_built_without_values_is_not_refused_by_the_memory_estimate(tmp_path):
    """The memory estimate builds the model on the meta device; a user's cell whose __init__ reads a value
    (.item()) cannot be built there: the run goes on unchecked instead of failing."""
    from omegaconf import OmegaConf

    from rnnbench.run.build import build_model
    from rnnbench.run.config import compose
    from rnnbench.tasks.adding import AddingTask

    (tmp_path / "valuecell.py").write_text(
        "import torch\nfrom rnnbench.modules.cells import VanillaCell\n\n"
        "class ValueCell(VanillaCell):\n"
        "    def __init__(self, input_size, hidden_size, **kwargs):\n"
        "        super().__init__(input_size, hidden_size, **kwargs)\n"
        "        self.scale = float(self.weight_hh.abs().max().item())  # a value: impossible on meta\n")
    cfg = compose(["task=adding", "cell=vanilla", "model.hidden_size=4"])
    OmegaConf.update(cfg, "cell._target_", "valuecell.ValueCell")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        task = AddingTask(seq_len=5, batch_size=2, val_size=4)
        model, width = build_model(cfg, task.spec, torch.device("cpu"), task.batch_shape())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("valuecell", None)
    assert width == 4 and model.stack.layers[0].directions[0].scale > 0
