"""Checkpoint files and the rules to resume (rnnbench/run/checkpoint.py), in process: the files a run
folder holds and how they are read back, the resume plan for each state a folder can be in, the
differences a refused resume names, the rows a resumed run drops, the random generators a checkpoint
restores, and the stop signals.

`tests/test_resume.py` checks the same through real runs (`python -m rnnbench` children, killed and
resumed); mutation testing cannot use those (docs/testing.md), so every rule is also checked here on
files made in the test."""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import zipfile

import numpy as np
import pytest
import torch

from rnnbench.errors import ConfigError
from rnnbench.records import run_folder
from rnnbench.records.summary import Summary
from rnnbench.run import checkpoint
from rnnbench.run.checkpoint import CheckpointError

FINGERPRINT = "a" * 64
CONFIG = {"model": {"hidden_size": 8, "cell": "lstm"}, "train": {"max_steps": 8, "resume": False},
          "logger": {"wandb": {"mode": "disabled"}}}


def payload(step: int, fingerprint: str = FINGERPRINT, config=None) -> dict:
    return {"step": step, "config_fingerprint": fingerprint, "config": CONFIG if config is None else config,
            "trainer": {"step": step, "weight": torch.full((2,), float(step))}}


def names(run_dir) -> list[str]:
    return [p.name for p in checkpoint.list_checkpoints(run_dir)]


# ------------------------------------------------------------------------------------------------
# Files: names, how many are kept, atomic writes


def test_save_names_the_file_by_step_keeps_the_newest_two_and_load_reads_it_back(tmp_path):
    run_dir = tmp_path / "outputs" / "run"  # not made yet: save makes the folders
    paths = [checkpoint.save(run_dir, payload(step)) for step in (5, 10, 15)]
    assert [p.name for p in paths] == ["step-00000005.pt", "step-00000010.pt", "step-00000015.pt"]
    assert all(p.parent == run_dir / "checkpoints" for p in paths)
    assert names(run_dir) == ["step-00000010.pt", "step-00000015.pt"]
    assert checkpoint.latest(run_dir) == paths[-1]
    loaded = checkpoint.load(paths[-1])
    assert loaded["format"] == "rnnbench-checkpoint" and loaded["version"] == checkpoint.VERSION
    assert loaded["step"] == 15 and loaded["config"] == CONFIG
    assert torch.equal(loaded["trainer"]["weight"], torch.full((2,), 15.0))


def test_checkpoints_are_ordered_by_step_number_not_by_name_and_stray_files_are_not_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    # a run past 10^8 steps writes 9 digits: by name, step-100000000 would sort before step-99999999
    for name in ("step-99999999.pt", "step-100000000.pt", "step-00000007.pt", "step-latest.pt",
                 "step-.pt", ".step-00000009.pt.k2j3.tmp", "best.pt", "notes.txt", "step-00000008.pth"):
        (folder / name).write_bytes(b"")
    assert names(tmp_path) == ["step-00000007.pt", "step-99999999.pt", "step-100000000.pt"]
    assert checkpoint.latest(tmp_path) == folder / "step-100000000.pt"


def test_a_folder_without_checkpoints_has_no_latest_nor_best(tmp_path):
    assert checkpoint.list_checkpoints(tmp_path / "missing") == [] and checkpoint.latest(tmp_path / "missing") is None
    (tmp_path / "checkpoints").mkdir()
    assert checkpoint.list_checkpoints(tmp_path) == [] and checkpoint.latest(tmp_path) is None
    assert checkpoint.best(tmp_path) is None


def test_best_is_its_own_file_never_counted_among_the_checkpoints_or_removed_by_them(tmp_path):
    path = checkpoint.save_best(tmp_path / "run", payload(3))
    assert path == tmp_path / "run" / "checkpoints" / "best.pt" == checkpoint.best(tmp_path / "run")
    for step in (4, 8, 12):
        checkpoint.save(tmp_path / "run", payload(step))
    assert names(tmp_path / "run") == ["step-00000008.pt", "step-00000012.pt"]
    assert checkpoint.load(checkpoint.best(tmp_path / "run"))["step"] == 3


def test_a_writer_killed_mid_write_leaves_a_temporary_file_the_next_write_of_the_same_kind_removes(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale_step, stale_best = folder / ".step-00000004.pt.x7q1.tmp", folder / ".best.pt.p0z9.tmp"
    stale_step.write_bytes(b"cut"), stale_best.write_bytes(b"cut")
    checkpoint.save(tmp_path, payload(8))
    assert not stale_step.exists() and stale_best.exists()  # best.pt's own writer may be the one cut
    checkpoint.save_best(tmp_path, payload(8))
    assert not stale_best.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "step-00000008.pt"]


# ------------------------------------------------------------------------------------------------
# Reading a checkpoint: every bad file is refused with what is wrong and what to do


def refusal(path) -> str:
    with pytest.raises(CheckpointError) as refused:
        checkpoint.load(path)
    return str(refused.value)


@pytest.fixture
def two_checkpoints(tmp_path):
    """A run folder with checkpoints at steps 4, 8 and 12 (the first written by hand: save keeps two)."""
    checkpoint.save(tmp_path, payload(8))
    checkpoint.save(tmp_path, payload(12))
    first = tmp_path / "checkpoints" / "step-00000004.pt"
    first.write_bytes((tmp_path / "checkpoints" / "step-00000008.pt").read_bytes())
    return tmp_path / "checkpoints"


def fallback(folder) -> str:
    """What a refusal of the newest of `two_checkpoints` says to do."""
    return (f" The previous checkpoint (step-00000008.pt) is kept beside it: move step-00000012.pt out of {folder} "
            "to resume from that one.")


def test_an_empty_checkpoint_is_refused_naming_the_previous_one_to_resume_from(two_checkpoints):
    newest = two_checkpoints / "step-00000012.pt"
    newest.write_bytes(b"")
    assert refusal(newest) == f"checkpoint {newest} is empty (0 bytes): not a checkpoint." + fallback(two_checkpoints)


def test_a_cut_checkpoint_is_refused_with_its_size(two_checkpoints):
    newest = two_checkpoints / "step-00000012.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    assert refusal(newest) == (
        f"checkpoint {newest} ({len(data) // 2} bytes) is cut short or is not a file written by torch.save (no "
        f"zip directory at its end)." + fallback(two_checkpoints))


def test_a_missing_checkpoint_says_why_it_cannot_be_read(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000003.pt"
    assert refusal(path) == f"checkpoint {path} cannot be read: No such file or directory."


def test_a_lone_bad_checkpoint_offers_no_previous_one(tmp_path):
    path = checkpoint.save(tmp_path, payload(4))
    path.write_bytes(b"")
    assert refusal(path) == f"checkpoint {path} is empty (0 bytes): not a checkpoint."


def test_a_zip_that_torch_cannot_read_is_refused_with_the_first_line_of_torchs_reason(two_checkpoints):
    newest = two_checkpoints / "step-00000012.pt"
    newest.unlink()
    with zipfile.ZipFile(newest, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    with pytest.raises(Exception) as torchs:
        torch.load(newest, map_location="cpu", weights_only=True)
    first_line = str(torchs.value).strip().splitlines()[0]
    assert refusal(newest) == (
        f"checkpoint {newest} ({newest.stat().st_size} bytes) is not a readable rnnbench checkpoint: {first_line}."
        + fallback(two_checkpoints))


def test_a_pickled_python_object_is_refused_without_running_it(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000004.pt"
    path.parent.mkdir()
    torch.save(torch.nn.Linear(2, 2), path)
    assert refusal(path) == (f"checkpoint {path} ({path.stat().st_size} bytes) is not a readable rnnbench "
                             "checkpoint: it holds Python objects, which an rnnbench checkpoint never does.")


def test_a_foreign_record_is_refused_naming_what_it_holds(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000004.pt"
    path.parent.mkdir()
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 3}, path)
    assert refusal(path) == (f"checkpoint {path} is not an rnnbench checkpoint: it holds a dict with keys "
                             "['epoch', 'state_dict'], not a 'rnnbench-checkpoint' record.")
    torch.save({f"k{i}": i for i in range(8)}, path)  # the first six keys only
    assert "a dict with keys ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'], not" in refusal(path)
    torch.save([torch.zeros(2)], path)
    assert refusal(path) == (f"checkpoint {path} is not an rnnbench checkpoint: it holds a list, not a "
                             "'rnnbench-checkpoint' record.")


def test_a_newer_format_version_asks_for_a_newer_rnnbench_and_the_current_and_unversioned_ones_load(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000004.pt"
    path.parent.mkdir()
    torch.save({"format": "rnnbench-checkpoint", "version": checkpoint.VERSION + 1, **payload(4)}, path)
    assert refusal(path) == (f"checkpoint {path} has format version {checkpoint.VERSION + 1}; this rnnbench reads "
                             f"up to version {checkpoint.VERSION}: update rnnbench to resume it.")
    for version in ({"version": checkpoint.VERSION}, {}):
        torch.save({"format": "rnnbench-checkpoint", **version, **payload(4)}, path)
        assert checkpoint.load(path)["step"] == 4


def test_an_incomplete_record_names_the_keys_it_lacks(tmp_path):
    path = tmp_path / "checkpoints" / "step-00000004.pt"
    path.parent.mkdir()
    torch.save({"format": "rnnbench-checkpoint", "version": 1, "step": 4, "config": {}}, path)
    assert refusal(path) == f"checkpoint {path} lacks config_fingerprint, trainer: incomplete record."


# ------------------------------------------------------------------------------------------------
# The resume plan: fresh, continued, finished, or refused (reading only)


def write_summary(run_dir, status, fingerprint=FINGERPRINT, **fields) -> Summary:
    return run_folder.write_summary(run_dir, Summary(status=status, config_fingerprint=fingerprint, **fields))


def plan(run_dir, resume=True, fingerprint=FINGERPRINT, config=CONFIG):
    return checkpoint.plan_resume(run_dir, fingerprint, config, resume=resume, folder_key="hydra.run.dir")


def test_an_empty_or_missing_folder_starts_fresh(tmp_path):
    for run_dir in (tmp_path / "missing", tmp_path):
        for resume in (False, True):
            started = plan(run_dir, resume=resume)
            assert started == checkpoint.ResumePlan() and started.step == 0


@pytest.mark.parametrize("holds", ["summary", "metrics", "checkpoint"])
def test_a_folder_holding_a_run_is_refused_without_resume_and_left_untouched(tmp_path, holds):
    if holds == "summary":
        write_summary(tmp_path, run_folder.FAILED)
    elif holds == "metrics":
        (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    else:
        checkpoint.save(tmp_path, payload(2))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError) as refused:
        plan(tmp_path, resume=False)
    status = "failed" if holds == "summary" else "unknown"
    assert str(refused.value) == (
        f"hydra.run.dir={tmp_path} already holds a run (status {status}). To continue it, add train.resume=true "
        "(same config); to start another run, choose a new hydra.run.dir.")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("status", [run_folder.COMPLETED, run_folder.DIVERGED])
def test_a_finished_run_of_the_same_config_is_not_run_again(tmp_path, status):
    checkpoint.save(tmp_path, payload(8))
    write_summary(tmp_path, status, steps=8)
    started = plan(tmp_path)
    assert started.finished.status == status and started.finished.steps == 8
    assert started.previous == started.finished and started.checkpoint is None and started.step == 0


@pytest.mark.parametrize("status", [run_folder.FAILED, run_folder.STOPPED, run_folder.RUNNING])
def test_an_unfinished_run_continues_from_its_newest_checkpoint(tmp_path, status):
    for step in (4, 8):
        checkpoint.save(tmp_path, payload(step))
    write_summary(tmp_path, status, hostname="elsewhere")  # running on another host: read as incomplete
    started = plan(tmp_path)
    assert started.finished is None and started.previous.status == (
        run_folder.INCOMPLETE if status == run_folder.RUNNING else status)
    assert started.checkpoint_path == tmp_path / "checkpoints" / "step-00000008.pt"
    assert started.checkpoint["step"] == 8 and started.step == 8


def test_an_unfinished_run_without_a_checkpoint_starts_again_from_step_0(tmp_path):
    write_summary(tmp_path, run_folder.FAILED, steps=3)
    started = plan(tmp_path)
    assert started.previous.status == run_folder.FAILED and started.previous.steps == 3
    assert started.checkpoint is None and started.finished is None and started.step == 0


def test_a_summary_without_a_fingerprint_leaves_the_decision_to_the_checkpoint(tmp_path):
    checkpoint.save(tmp_path, payload(4))
    write_summary(tmp_path, run_folder.COMPLETED, fingerprint=None)
    assert plan(tmp_path).finished.status == run_folder.COMPLETED
    checkpoint.save(tmp_path, payload(8, fingerprint="b" * 64))
    write_summary(tmp_path, run_folder.FAILED, fingerprint=None)
    with pytest.raises(ConfigError, match="step-00000008.pt"):
        plan(tmp_path)


def test_a_garbled_summary_is_passed_over_with_a_warning_and_the_checkpoint_decides(tmp_path, caplog):
    checkpoint.save(tmp_path, payload(4))
    (tmp_path / "summary.json").write_text('{"status": "compl')
    with pytest.raises(ValueError) as garbled:
        run_folder.read_summary(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rnnbench"):
        started = plan(tmp_path)
    assert started.previous is None and started.step == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"unreadable {tmp_path / 'summary.json'} ({garbled.value}): resuming from the checkpoint alone"]


CHANGED = {"model": {"hidden_size": 16, "cell": "lstm"}, "train": {"max_steps": 12, "resume": True},
           "logger": {"wandb": {"mode": "offline"}}}


def test_a_summary_of_another_config_is_refused_naming_the_keys_that_differ(tmp_path):
    with run_folder.RunRecorder(tmp_path) as recorder:
        recorder.write_config(CONFIG)
    write_summary(tmp_path, run_folder.COMPLETED)
    with pytest.raises(ConfigError) as refused:
        plan(tmp_path, fingerprint="c" * 64, config=CHANGED)
    assert str(refused.value) == "\n".join([
        f"train.resume: the config differs from the run being resumed ({tmp_path / 'summary.json'}); its config "
        "fingerprint is not this one.",
        "Keys that differ (resumed run -> this command):",
        "  model.hidden_size: 8 -> 16",
        "  train.max_steps: 8 -> 12",
        "Resume with the run's own overrides (\"overrides\" in its summary.json; its whole config is config.yaml), "
        "or start a new run in another folder."])


def test_without_its_config_a_refusal_still_says_what_to_do(tmp_path):
    write_summary(tmp_path, run_folder.COMPLETED)
    with pytest.raises(ConfigError) as refused:
        plan(tmp_path, fingerprint="c" * 64, config=CHANGED)
    assert str(refused.value).splitlines()[1:] == [
        "Resume with the run's own overrides (\"overrides\" in its summary.json; its whole config is config.yaml), "
        "or start a new run in another folder."]


def test_a_checkpoint_of_another_config_is_refused_naming_the_keys_that_differ(tmp_path):
    checkpoint.save(tmp_path, payload(4))
    with pytest.raises(ConfigError) as refused:
        plan(tmp_path, fingerprint="c" * 64, config=CHANGED)
    lines = str(refused.value).splitlines()
    assert lines[0].startswith(f"train.resume: the config differs from the run being resumed "
                               f"({tmp_path / 'checkpoints' / 'step-00000004.pt'})")
    assert lines[1:4] == ["Keys that differ (resumed run -> this command):", "  model.hidden_size: 8 -> 16",
                          "  train.max_steps: 8 -> 12"]


def test_a_refused_resume_reads_a_bad_checkpoint_as_an_error(tmp_path):
    checkpoint.save(tmp_path, payload(4)).write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        plan(tmp_path)


def test_config_differences_name_each_leaf_that_differs_and_leave_out_the_fingerprints_exclusions():
    old = {"model": {"cell": "lstm", "sizes": [8, 8], "extra": {}}, "optim": {"lr": 1e-3},
           "train": {"checkpoint_every": 10, "resume": False, "seed": 0, "lr_backoff": None},
           "logger": {"wandb": {"mode": "disabled"}},
           "hydra": {"run": {"dir": "a"}}, "paths": {"output_dir": "a"}}
    new = {"model": {"cell": "gru", "sizes": [8, 16], "extra": {"x": 1}, "dropout": None},
           "optim": {"lr": 1e-3, "momentum": 0.9},
           "train": {"checkpoint_every": 20, "resume": True}, "logger": {"wandb": {"mode": "online"}},
           "hydra": {"run": {"dir": "b"}}, "paths": {"output_dir": "b"}}
    assert checkpoint.config_differences(old, new) == [
        "model.cell: 'lstm' -> 'gru'", "model.dropout: (absent) -> None", "model.extra: {} -> (absent)",
        "model.extra.x: (absent) -> 1", "model.sizes: [8, 8] -> [8, 16]", "optim.momentum: (absent) -> 0.9",
        "train.lr_backoff: None -> (absent)", "train.seed: 0 -> (absent)"]
    assert checkpoint.config_differences(old, new, exclude=("model", "optim", "train.*", "logger.wandb")) == [
        "hydra.run.dir: 'a' -> 'b'", "paths.output_dir: 'a' -> 'b'"]
    assert checkpoint.config_differences(old, old) == []


# ------------------------------------------------------------------------------------------------
# Rows a resumed run logs again


def rows(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_rows(path, items, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in items) + tail)


def test_a_resumed_run_forgets_the_rows_after_its_checkpoint(tmp_path, caplog):
    metrics = [{"step": s, "train/loss": 1.0 / s} for s in (2, 4, 6, 8)]
    write_rows(tmp_path / "metrics.jsonl", metrics, tail='{"step": 10, "train/lo')  # cut by the kill
    profiles = [{"step": s, "grad": [float(s)]} for s in (0, 2, 4, 8)]
    write_rows(tmp_path / "profiles.jsonl", profiles)
    (tmp_path / "profile.json").write_text(json.dumps(profiles[-1]))
    with caplog.at_level(logging.INFO, logger="rnnbench"):
        checkpoint.forget_after(tmp_path, 4)
    assert rows(tmp_path / "metrics.jsonl") == metrics[:2]
    assert rows(tmp_path / "profiles.jsonl") == profiles[:3]
    assert json.loads((tmp_path / "profile.json").read_text()) == profiles[2]  # the last one kept
    assert [r.getMessage() for r in caplog.records] == [
        "metrics.jsonl: 3 rows after step 4 dropped (logged again from the checkpoint)",
        "profiles.jsonl: 1 rows after step 4 dropped (logged again from the checkpoint)"]


def test_a_run_resumed_from_its_final_checkpoint_forgets_its_test_row_and_keeps_the_rest(tmp_path):
    # killed while testing after the last step: the final checkpoint is at that step, as is the test row
    metrics = [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5, "val/loss": 0.6}]
    write_rows(tmp_path / "metrics.jsonl", [*metrics, {"step": 2, "test/loss": 0.7}])
    checkpoint.forget_after(tmp_path, 2)
    assert rows(tmp_path / "metrics.jsonl") == metrics
    checkpoint.forget_after(tmp_path, 1)  # a checkpoint at step 1 keeps step 1
    assert rows(tmp_path / "metrics.jsonl") == metrics[:1]


def test_a_fresh_start_in_a_folder_forgets_every_row_of_the_earlier_attempt(tmp_path, caplog):
    # the earlier attempt profiled step 0 (the picture at initialisation) and logged steps 1 and 2, then
    # crashed before its first checkpoint; the new attempt profiles step 0 and logs from step 1 again
    write_rows(tmp_path / "metrics.jsonl", [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5}])
    write_rows(tmp_path / "profiles.jsonl", [{"step": 0, "grad": [0.5]}])
    (tmp_path / "profile.json").write_text(json.dumps({"step": 0, "grad": [0.5]}))
    with caplog.at_level(logging.INFO, logger="rnnbench"):
        checkpoint.forget_after(tmp_path, 0)
    assert rows(tmp_path / "metrics.jsonl") == [] and rows(tmp_path / "profiles.jsonl") == []
    assert not (tmp_path / "profile.json").exists()
    assert [r.getMessage() for r in caplog.records] == [
        "metrics.jsonl: the 2 rows of the earlier attempt dropped (no checkpoint: logged again from step 1)",
        "profiles.jsonl: the 1 rows of the earlier attempt dropped (no checkpoint: logged again from step 1)"]


def test_a_run_with_nothing_to_forget_keeps_its_files_as_they_are(tmp_path, caplog):
    write_rows(tmp_path / "metrics.jsonl", [{"step": 1}, {"step": 2}])
    before = (tmp_path / "metrics.jsonl").stat().st_mtime_ns, (tmp_path / "metrics.jsonl").stat().st_ino
    with caplog.at_level(logging.INFO, logger="rnnbench"):
        checkpoint.forget_after(tmp_path, 2)
    assert caplog.records == [] and rows(tmp_path / "metrics.jsonl") == [{"step": 1}, {"step": 2}]
    assert ((tmp_path / "metrics.jsonl").stat().st_mtime_ns, (tmp_path / "metrics.jsonl").stat().st_ino) == before
    assert not (tmp_path / "profiles.jsonl").exists() and not (tmp_path / "profile.json").exists()


def test_truncate_jsonl_keeps_the_accepted_rows_and_counts_the_dropped_and_the_cut_ones(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    assert checkpoint.truncate_jsonl(path, lambda row: row["step"] != 2) == 2
    assert path.read_text() == '{"step": 1}\n{"step": 3}\n'
    # a line cut by a kill that a later attempt appended after (no newline between them)
    path.write_text('{"step": 1}\n{"step": 2, "lo{"step": 2}\n{"step": 3}\n')
    assert checkpoint.truncate_jsonl(path, lambda row: True) == 1
    assert path.read_text() == '{"step": 1}\n{"step": 3}\n'
    assert checkpoint.truncate_jsonl(tmp_path / "missing.jsonl", lambda row: False) == 0
    assert not (tmp_path / "missing.jsonl").exists()


# ------------------------------------------------------------------------------------------------
# Random generators: a resumed run draws what the uninterrupted one would have


def draws() -> tuple:
    return (random.random(), random.getrandbits(64), np.random.standard_normal(3).tolist(),
            np.random.randint(0, 1000, 4).tolist(), torch.rand(3).tolist())


def test_restored_generators_draw_again_what_they_drew_after_the_save_through_a_checkpoint_file(tmp_path):
    while np.random.get_state()[3] != 1:  # numpy's second Gaussian of a pair cached (has_gauss), to be kept
        np.random.standard_normal()
    path = checkpoint.save(tmp_path, {**payload(1), "trainer": {"rng": checkpoint.rng_states()}})
    expected = draws()
    draws()  # the generators move on
    checkpoint.restore_rng_states(checkpoint.load(path)["trainer"]["rng"])
    assert draws() == expected


def test_python_generator_state_restores_from_lists_as_a_json_reader_hands_it_back():
    states = checkpoint.rng_states()
    states["python"] = json.loads(json.dumps(states["python"]))
    assert isinstance(states["python"], list) and isinstance(states["python"][1], list)
    expected = draws()
    checkpoint.restore_rng_states(states)
    assert draws() == expected


# ------------------------------------------------------------------------------------------------
# Stop signals: a flag, then the signal passed on


def test_the_preemption_signals_are_ctrl_c_term_usr2_and_submitits_own(monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert checkpoint.preemption_signals() == (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM)  # by number
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert checkpoint.preemption_signals() == (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "NOSUCH")
    assert checkpoint.preemption_signals() == (signal.SIGINT, signal.SIGUSR2, signal.SIGTERM)


@pytest.fixture
def usr_handlers():
    """SIGUSR1 and SIGUSR2 handlers that record what reached them (the handlers from before a run)."""
    reached = []
    previous = {sig: signal.signal(sig, lambda signum, frame: reached.append(signal.Signals(signum)))
                for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    yield reached
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_a_stop_signal_only_sets_the_flag_the_first_one_is_kept_and_the_handlers_come_back(usr_handlers):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    with checkpoint.StopSignals([signal.SIGUSR1, signal.SIGUSR2]) as stop:
        assert not stop.requested() and stop.received is None
        signal.raise_signal(signal.SIGUSR2)
        signal.raise_signal(signal.SIGUSR1)
        assert stop.requested() and stop.received == signal.SIGUSR2
        assert usr_handlers == []  # held back while training
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with pytest.raises(SystemExit) as exited:
        stop.redeliver()
    assert usr_handlers == [signal.SIGUSR2] and exited.value.code == 128 + signal.SIGUSR2


def test_ctrl_c_stops_after_the_step_a_second_one_at_once_and_redelivered_exits_130(capsys):
    before = signal.getsignal(signal.SIGINT)
    with checkpoint.StopSignals([signal.SIGINT]) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.received == signal.SIGINT
        assert capsys.readouterr().err == ("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again: "
                                           "stop at once)\n")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(SystemExit) as exited:
        stop.redeliver()
    assert exited.value.code == 130


def test_stop_signals_default_to_the_preemption_signals_and_can_be_entered_again(monkeypatch, usr_handlers):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    stop = checkpoint.StopSignals()
    assert stop.signals == checkpoint.preemption_signals()
    stop.signals = (signal.SIGUSR1,)
    for _ in range(2):  # a sweep's worker may run several jobs, each with its own stop window
        with stop:
            assert signal.getsignal(signal.SIGUSR1) == stop._handle
        assert signal.getsignal(signal.SIGUSR1) != stop._handle


def test_outside_the_main_thread_stop_signals_change_nothing(usr_handlers):
    before = signal.getsignal(signal.SIGUSR2)
    seen = []

    def enter():
        with checkpoint.StopSignals([signal.SIGUSR2]) as stop:
            seen.append(signal.getsignal(signal.SIGUSR2))
            seen.append(stop.requested())

    thread = threading.Thread(target=enter)
    thread.start(), thread.join()
    assert seen == [before, False]
