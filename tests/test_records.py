"""The run folder (rnnbench/records/run_folder.py): what the trainer writes and the report reads."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch

import rnnbench
from rnnbench.records import run_folder
from rnnbench.records.run_folder import RunRecorder, config_fingerprint, read_metrics, read_summary, run_metadata
from rnnbench.records.summary import SUMMARY_VERSION, Summary


def test_each_logged_row_is_on_disk_as_one_json_line_at_once(tmp_path):
    with RunRecorder(tmp_path) as rec:
        for step in range(3):
            rec.log({"step": step, "train/loss": 1.0 / (step + 1)})
            # Read with a separate handle while the recorder is still open: flushed, one line a row.
            lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
            assert len(lines) == step + 1
            assert json.loads(lines[-1]) == {"step": step, "train/loss": 1.0 / (step + 1)}
        assert read_metrics(tmp_path) == [{"step": s, "train/loss": 1.0 / (s + 1)} for s in range(3)]


def test_metrics_append_across_recorders(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.log({"step": 0})
    with RunRecorder(tmp_path) as rec:  # a resumed run continues the same file
        rec.log({"step": 1})
    assert [row["step"] for row in read_metrics(tmp_path)] == [0, 1]


def test_non_finite_floats_are_valid_json_and_read_back_as_floats(tmp_path):
    row = {"step": 1, "train/loss": math.nan, "grad/global_norm": math.inf, "x": -math.inf, "lr": 0.1}
    with RunRecorder(tmp_path) as rec:
        rec.log(row)
        rec.write_summary(Summary(status="diverged", final={"val/loss": math.nan}))
        rec.write_profile({"step": 1, "layers": {"layer0": [1.0, math.inf, math.nan]}})
    line = (tmp_path / "metrics.jsonl").read_text()
    json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} is not JSON"))
    assert '"nan"' in line and '"inf"' in line and '"-inf"' in line

    back = read_metrics(tmp_path)[0]
    assert math.isnan(back["train/loss"])
    assert back["grad/global_norm"] == math.inf and back["x"] == -math.inf and back["lr"] == 0.1
    assert math.isnan(read_summary(tmp_path).final["val/loss"])
    layer = run_folder.read_profile(tmp_path)["layers"]["layer0"]
    assert layer[:2] == [1.0, math.inf] and math.isnan(layer[2])


def test_numpy_and_torch_scalars_are_recorded_as_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    with RunRecorder(tmp_path) as rec:
        rec.log({"a": np.float32(0.5), "b": torch.tensor(2.0), "c": np.int64(3), "d": torch.tensor([1.0, 2.0])})
    assert read_metrics(tmp_path) == [{"a": 0.5, "b": 2.0, "c": 3, "d": [1.0, 2.0]}]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n{"ste')
    assert read_metrics(tmp_path) == [{"step": 0}, {"step": 1}]


def test_profiles_replace_profile_json_and_append_to_profiles_jsonl(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.write_profile({"step": 10, "seq_len": 2, "layers": {"layer0": [1.0, 2.0]}})
        rec.write_profile({"step": 20, "seq_len": 2, "layers": {"layer0": [3.0, 4.0]}})
    assert run_folder.read_profile(tmp_path)["step"] == 20
    assert [p["step"] for p in run_folder.read_profiles(tmp_path)] == [10, 20]


def test_summary_survives_a_crash_between_temp_write_and_rename(tmp_path, monkeypatch):
    rec = RunRecorder(tmp_path)
    rec.write_summary(Summary(status="running", steps=0))

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        rec.write_summary(Summary(status="completed", steps=100))
    monkeypatch.undo()

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "running" and summary["steps"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp file left behind


def test_summary_records_host_and_pid_and_a_live_run_reads_as_running(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.write_summary(Summary(status="running"))
    summary = read_summary(tmp_path)
    assert summary.hostname == socket.gethostname() and summary.pid == os.getpid()
    assert summary.status == "running"  # this very process is alive


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid no longer exists
    return child.pid


def test_running_summary_of_a_dead_process_reads_as_incomplete(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.write_summary(Summary(status="running", pid=_dead_pid()))
    assert read_summary(tmp_path).status == "incomplete"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "running"  # file untouched


def test_running_summary_from_another_host_reads_as_incomplete(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.write_summary(Summary(status="running", hostname="elsewhere-" + socket.gethostname()))
    assert read_summary(tmp_path).status == "incomplete"


def test_finished_statuses_are_reported_as_written(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.write_summary(Summary(status="completed", pid=_dead_pid()))
    assert read_summary(tmp_path).status == "completed"


def test_an_exception_inside_the_recorder_marks_a_running_summary_failed(tmp_path):
    with pytest.raises(RuntimeError):
        with RunRecorder(tmp_path) as rec:
            rec.write_summary(Summary(status="running", task="copy"))
            raise RuntimeError("boom")
    summary = read_summary(tmp_path)
    assert summary.status == "failed" and summary.error == "RuntimeError: boom"
    assert summary.task == "copy"


def test_config_yaml_is_the_resolved_config(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"hidden": 64}, "train": {"width": "${model.hidden}"}})
    with RunRecorder(tmp_path) as rec:
        rec.write_config(cfg)
    assert run_folder.read_config(tmp_path) == {"model": {"hidden": 64}, "train": {"width": 64}}
    assert "${" not in (tmp_path / "config.yaml").read_text()


def test_a_run_that_wrote_no_config_is_read_from_hydras_copy_only_when_asked(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "train:\n  seed: 3\n  lr: ${train.seed}\nout: ${hydra:runtime.output_dir}\n")
    with pytest.raises(FileNotFoundError):
        run_folder.read_config(tmp_path)
    config = run_folder.read_config(tmp_path, hydra_fallback=True)
    assert config == {"train": {"seed": 3, "lr": "${train.seed}"}, "out": "${hydra:runtime.output_dir}"}
    (tmp_path / "config.yaml").write_text("train:\n  seed: 5\n  lr: ${train.seed}\n")
    assert run_folder.read_config(tmp_path, hydra_fallback=True) == {"train": {"seed": 5, "lr": 5}}


CONFIG = {"cell": {"name": "lstm", "hidden": 64}, "train": {"lr": 0.01, "seed": 0, "resume": None}, "task": "copy"}


def test_fingerprint_ignores_key_order():
    reordered = {"task": "copy", "train": {"resume": None, "seed": 0, "lr": 0.01}, "cell": {"hidden": 64, "name": "lstm"}}
    assert config_fingerprint(CONFIG) == config_fingerprint(reordered)
    assert len(config_fingerprint(CONFIG)) == 64


def test_fingerprint_changes_with_what_is_computed():
    changed = {**CONFIG, "train": {**CONFIG["train"], "seed": 1}}
    assert config_fingerprint(changed) != config_fingerprint(CONFIG)


def test_fingerprint_ignores_where_and_how_a_run_is_recorded():
    local = {
        **CONFIG,
        "train": {**CONFIG["train"], "resume": "outputs/runs/x/ckpt.pt"},
        "hydra": {"run": {"dir": "outputs/runs/x"}},
        "logger": {"wandb": {"mode": "offline"}},
        "paths": {"output_dir": "/somewhere"},
        "output_dir": "/elsewhere",
    }
    assert config_fingerprint(local) == config_fingerprint(CONFIG)
    # The exclusion list is a parameter: with nothing excluded the same configs differ.
    assert config_fingerprint(local, exclude=()) != config_fingerprint(CONFIG, exclude=())


def test_fingerprint_of_an_omegaconf_config_equals_that_of_its_resolved_dict():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": 2, "b": "${a}"})
    assert config_fingerprint(cfg) == config_fingerprint({"a": 2, "b": 2})


def test_run_metadata_names_versions_and_the_code_commit():
    meta = run_metadata()
    versions = meta["versions"]
    assert set(versions) >= {"python", "torch", "rnnbench", "hydra", "omegaconf", "wandb", "numpy"}
    assert versions["rnnbench"] == rnnbench.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    import torch

    assert versions["torch"] == torch.__version__
    if meta["git_commit"] is not None:  # this checkout is a git repository
        assert len(meta["git_commit"]) == 40 and isinstance(meta["git_dirty"], bool)
    json.dumps(meta)  # goes straight into summary.json


def test_a_second_writer_of_a_held_folder_is_refused_with_the_holder_named(tmp_path):
    with run_folder.hold_folder(tmp_path, "hydra.run.dir"):
        with pytest.raises(run_folder.FolderInUse) as refused:
            with run_folder.hold_folder(tmp_path, "hydra.run.dir"):
                pass
        pid = os.getpid()
        assert str(refused.value) == (
            f"hydra.run.dir={tmp_path} is in use: its run is still going (pid {pid} on {socket.gethostname()}). "
            f"Wait for it to end, or stop it with `kill -TERM {pid}` (it checkpoints first) and then resume. "
            "To start another run, choose another hydra.run.dir.")
    with run_folder.hold_folder(tmp_path):  # released at the end of the block
        pass


def test_the_lock_of_a_killed_writer_is_gone_with_its_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rnnbench.records import run_folder\n"
         f"with run_folder.hold_folder({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(run_folder.FolderInUse, match=f"still going \\(pid {holder.pid} on"):
            with run_folder.hold_folder(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_folder.hold_folder(tmp_path):  # SIGKILL ran no clean-up, and the folder is free
        pass


def test_metric_direction_is_read_from_the_name_for_trainer_and_report_alike():
    names = ("val/accuracy", "acc_class/3", "val/fraction_within_0.04", "f1", "val/loss", "ppl", "train/bpc",
             "val/error_rate", "grad/global_norm")
    assert [run_folder.metric_mode(n) for n in names] == ["max"] * 4 + ["min"] * 4 + [None]


def test_run_metadata_names_the_cpu_its_vector_dispatch_and_the_blas(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    machine = run_folder.run_metadata()["machine"]
    with open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    assert machine["cpu"] == model
    assert machine["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert ("avx2" in machine["flags"]) == ("avx2" in open("/proc/cpuinfo").read().split())
    assert "Math Kernel Library" in machine["blas"] and machine["onednn"]  # torch's x86 wheels: MKL and oneDNN
    assert machine["env"] == {"MKL_CBWR": "COMPATIBLE"}


# summary.json's schema (records/summary.py): written with its version, read back field by field; files
# of earlier versions (no "version" key; committed study records were exported from them) still read.

# A run folder of rnnbench before the schema, as written at 3219b78 (greff/cifg_forget_bias0/3, shortened),
# plus a field no version of the schema knows.
OLD_SUMMARY = {
    "status": "completed", "error": None, "diverged_at": None, "task": "copy", "cell": "lstm_cifg",
    "arch": None, "seed": 3, "hidden_size": 128, "num_params": 50954, "time_reduction": 1,
    "main_metric": "val/loss", "main_metric_mode": "min", "memoryless_baseline": 0.0735,
    "task_info": {"task": "copy"}, "overrides": ["cell=lstm_cifg", "train.seed=3"],
    "config_fingerprint": "ab12", "device": "cpu", "threads": 1, "flush_denormal": True,
    "versions": {"python": "3.11.7", "torch": "2.3.0"}, "git_commit": "abc", "git_dirty": False,
    "wandb": {"mode": "disabled", "id": None, "dir": None}, "test": {"test/loss": 0.01}, "steps": 2000,
    "final": {"val/loss": "nan"}, "best": {"val/loss": 0.009}, "best_step": {"val/loss": 1900},
    "solved_at": None, "wall_time_s": 81.2, "train_time_s": 80.0, "throughput_steps_per_s": 52000.0,
    "hostname": "elsewhere", "pid": 1, "from_a_later_version": 256,
}


def test_a_summary_without_a_version_reads_as_version_1_with_its_fields(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    summary = read_summary(tmp_path)
    assert summary.version == 1
    assert (summary.status, summary.cell, summary.seed, summary.steps) == ("completed", "lstm_cifg", 3, 2000)
    assert summary.best_step == {"val/loss": 1900} and summary.test == {"test/loss": 0.01}
    assert math.isnan(summary.final["val/loss"]) and summary.final_main_metric != summary.final_main_metric
    assert summary.machine is None and summary.resumed == []  # fields it did not have yet
    assert summary.extra == {"from_a_later_version": 256}  # unknown to this schema, kept


def test_rewriting_an_old_summary_writes_the_version_and_keeps_unknown_fields(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    RunRecorder(tmp_path).write_summary(read_summary(tmp_path))  # what a resumed run does
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert raw["version"] == SUMMARY_VERSION and raw["from_a_later_version"] == 256
    assert {k: raw[k] for k in OLD_SUMMARY} == OLD_SUMMARY  # nothing changed, nothing dropped


def test_every_field_of_a_summary_reads_back_as_written(tmp_path):
    written = Summary(status="diverged", error="x", diverged_at=7, task="adding", cell="gru", seed=2, steps=7,
                      hidden_size=8, num_params=99, final={"val/loss": math.inf}, best={"val/loss": 0.5},
                      best_step={"val/loss": 4}, resumed=[{"from_step": 4, "checkpoint": "step-00000004.pt"}],
                      machine={"cpu": "x"}, hostname="h", pid=12, extra={"later": [1, 2]})
    run_folder.write_summary(tmp_path, written)
    assert read_summary(tmp_path) == written
    assert json.loads((tmp_path / "summary.json").read_text())["version"] == SUMMARY_VERSION


def test_a_summary_is_written_only_through_the_schema(tmp_path):
    with pytest.raises(TypeError, match="Summary"):
        run_folder.write_summary(tmp_path, {"status": "completed"})
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an object"):
        read_summary(tmp_path)


def test_a_version_2_summary_of_a_stopped_run_reads_as_stopped(tmp_path):
    """Version 2 left a run stopped by a signal `running`, with `interrupted` set; version 3 says `stopped`."""
    stopped = {**OLD_SUMMARY, "version": 2, "status": "running", "steps": 120,
               "interrupted": {"signal": "SIGTERM", "step": 120}}
    (tmp_path / "summary.json").write_text(json.dumps(stopped))
    summary = read_summary(tmp_path)
    assert summary.status == "stopped" and summary.interrupted["step"] == 120
    (tmp_path / "summary.json").write_text(json.dumps({**stopped, "interrupted": None}))
    assert read_summary(tmp_path).status == "incomplete"  # a version 2 run that was not stopped: killed


# ------------------------------------------------------------------------------------------------
# Files in a shared results folder: an atomic write's mode is an ordinary file's, 0666 less the umask


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert run_folder.umask() == mask
        run_folder.atomic_write_text(tmp_path / "a.json", "{}")
        with run_folder.atomic_file(tmp_path / "b.pt", "wb") as f:
            f.write(b"x")
        (tmp_path / "plain.txt").write_text("as open() makes it")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.json", "b.pt", "plain.txt"], 0o666 & ~mask)


def test_a_runs_files_are_readable_by_the_group_when_the_umask_says_so(tmp_path):
    """A language-model run (vocab.json too) under umask 002, as in a group's shared results folder:
    every file it writes is 0664, the atomic ones (config, summary, profile, vocabulary, checkpoints)
    like the appended ones (metrics.jsonl)."""
    from datagen import char_corpus

    corpus = char_corpus(tmp_path / "corpus.txt", n_chars=3000)
    proc = subprocess.run(
        [sys.executable, "-m", "rnnbench", "task=lm", "task.level=char", f"task.corpus={corpus}", "task.bptt=8",
         "train.batch_size=4", "model.hidden_size=8", "train.max_steps=4", "train.eval_every=2",
         "train.profile_every=2", "train.threads=1", "logger.wandb.mode=disabled", "hydra.run.dir=run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(0o002))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    files = ["config.yaml", "summary.json", "profile.json", "profiles.jsonl", "vocab.json", "metrics.jsonl",
             "checkpoints/best.pt", "checkpoints/step-00000004.pt"]
    assert {name: oct((run / name).stat().st_mode & 0o777) for name in files} == dict.fromkeys(files, oct(0o664))
