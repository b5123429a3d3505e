"""The W&B mirror (rnnbench/records/wandb_sink.py) and reading offline runs back (rnnbench/records/wandb_offline.py,
tests/wandb_records.py).

No server exists here: every run is offline, in a temporary folder, and is checked by decoding its
.wandb file.
"""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import wandb_records
from rnnbench.records import wandb_offline
from rnnbench.records.wandb_sink import WandbSink, resolve_mode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B's folders in tmp_path, no API key, no netrc, no mode from the environment."""
    home = tmp_path / "wandb_home"
    home.mkdir()
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "TMPDIR"):
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _same(a, b):
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


ROWS = [
    {"step": 0, "train/loss": 2.5, "grad/global_norm": 1.0, "lr": 0.01},
    {"step": 10, "train/loss": math.nan, "grad/global_norm": math.inf, "lr": 0.01},
    {"step": 20, "train/loss": 1.25, "val/loss": 1.5, "val/accuracy": 0.5, "lr": 0.005},
]
PROFILE = {"layer0": [1e-4, 1e-2, 1.0], "layer0_reverse": [1.0, 0.1, 0.0]}


def test_offline_sink_history_reads_back_exactly_the_logged_rows(wandb_env):
    config = {"cell": {"name": "lstm", "hidden": 64}, "train": {"seed": 0}}
    with WandbSink("offline", "rnnbench-test", wandb_env / "run", name="lstm-copy", group="g",
                   job_type="train", config=config, tags=["copy"]) as sink:
        for row in ROWS:
            sink.log(row, step=row["step"])
        sink.log_profile(20, PROFILE, scalars={"layer0/log10_ratio": 4.0})
        sink.summary({"status": "completed", "best": {"val/loss": 1.5}})
    assert sink.mode == "offline"
    assert sink.run_dir.parent == wandb_env / "run" / "wandb"
    assert sink.run_dir.name.startswith("offline-run-") and sink.run_dir.name.endswith(sink.run_id)
    assert sink.info == {"mode": "offline", "id": sink.run_id, "dir": str(sink.run_dir)}

    history = wandb_records.read_history(sink.run_dir)
    assert [row["_step"] for row in history] == [0, 10, 20]
    expected = [{k: v for k, v in row.items() if k != "step"} for row in ROWS]
    expected[-1]["profile/layer0/log10_ratio"] = 4.0
    for got, want in zip(history, expected):
        logged = {k: v for k, v in got.items() if not k.startswith("_") and not k.endswith("_table")}
        assert logged.keys() == want.keys()
        assert all(_same(logged[k], want[k]) for k in want), (logged, want)

    assert wandb_records.read_config(sink.run_dir) == config
    summary = wandb_records.read_summary(sink.run_dir)
    assert summary["status"] == "completed" and summary["best"] == {"val/loss": 1.5}
    assert summary["val/accuracy"] == 0.5  # last logged values, as W&B keeps them
    run = wandb_records.read_run(sink.run_dir)
    assert run == {"id": sink.run_id, "project": "rnnbench-test", "name": "lstm-copy", "group": "g",
                   "job_type": "train", "tags": ["copy"], "exit_code": 0}


def test_profile_chart_per_layer_joins_the_last_row_at_finish(wandb_env):
    sink = WandbSink("offline", "p", wandb_env / "run", max_profile_lines=2)
    for step in (0, 100, 200):
        sink.log({"train/loss": 1.0}, step=step)
        sink.log_profile(step, {"layer0": [0.5 ** t for t in range(300)], "layer1": [1.0] * 300})
    # Before finish: nothing drawn (the per-call cost is only keeping the lists).
    sink.finish()
    history = wandb_records.read_history(sink.run_dir)
    assert len(history) == 3
    assert {"profile/layer0_table", "profile/layer1_table"} <= history[-1].keys()
    assert all("profile/layer0_table" not in row for row in history[:-1])
    tables = sorted(p.name for p in (sink.run_dir / "files" / "media" / "table" / "profile").iterdir())
    assert [name.split("_table")[0] for name in tables] == ["layer0", "layer1"]
    import json

    table = json.loads(next((sink.run_dir / "files" / "media" / "table" / "profile").glob("layer0_*")).read_text())
    lines = {row[table["columns"].index("lineKey")] for row in table["data"]}
    assert lines == {"step 0", "step 200"}  # at most 2 lines: first and last
    assert len(table["data"]) == 2 * 100  # thinned to max_profile_points values of t


def test_auto_mode_is_offline_without_a_key_and_online_with_one(wandb_env, monkeypatch):
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline" and resolve_mode("disabled") == "disabled"


def test_auto_mode_reads_a_netrc_entry_for_the_wandb_host(wandb_env, monkeypatch):
    netrc = wandb_env / "netrc"
    netrc.write_text("machine example.org login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto") == "offline"  # an entry for another host is no W&B key
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert resolve_mode("auto") == "online"


def test_unknown_mode_names_the_setting_and_the_choices():
    with pytest.raises(ValueError) as error:
        resolve_mode("offlien")
    message = str(error.value)
    assert "logger.wandb.mode" in message and "'offlien'" in message
    assert all(mode in message for mode in ("auto", "offline", "online", "disabled"))


def test_disabled_sink_writes_nothing(wandb_env):
    with WandbSink("disabled", "p", wandb_env / "run", config={"a": 1}) as sink:
        sink.log({"train/loss": 1.0}, step=0)
        sink.log_profile(0, PROFILE)
        sink.summary({"status": "completed"})
    sink.finish()
    assert sink.run_id is None and sink.run_dir is None
    assert sink.info == {"mode": "disabled", "id": None, "dir": None}
    assert not (wandb_env / "run").exists()
    assert list((wandb_env / "wandb_home").iterdir()) == []


def test_two_sinks_in_sequence_write_two_runs(wandb_env):
    """A Hydra multirun in one process: job 1 must not land in job 0's run."""
    runs = []
    for job in range(2):
        sink = WandbSink("offline", "p", wandb_env / str(job), name=f"job{job}")
        try:
            sink.log({"job": job}, step=0)
        finally:
            sink.finish()
        runs.append(sink)
    assert runs[0].run_id != runs[1].run_id
    for job, sink in enumerate(runs):
        assert sink.run_dir.parent == wandb_env / str(job) / "wandb"
        assert [row["job"] for row in wandb_records.read_history(sink.run_dir)] == [job]


def test_a_job_that_never_finished_does_not_capture_the_next(wandb_env):
    first = WandbSink("offline", "p", wandb_env / "0")
    first.log({"job": 0}, step=0)  # no finish: the job crashed without clean-up
    second = WandbSink("offline", "p", wandb_env / "1")
    second.log({"job": 1}, step=0)
    second.finish()
    first.finish()  # late clean-up of the run W&B already closed: harmless
    assert first.run_id != second.run_id
    assert [row["job"] for row in wandb_records.read_history(first.run_dir)] == [0]
    assert [row["job"] for row in wandb_records.read_history(second.run_dir)] == [1]


def test_finish_is_idempotent_and_leaves_a_complete_file(wandb_env):
    sink = WandbSink("offline", "p", wandb_env / "run")
    sink.log({"a": 1}, step=0)
    sink.finish()
    sink.finish()
    assert wandb_offline.is_complete(wandb_offline.wandb_file(sink.run_dir))
    assert wandb_records.read_run(sink.run_dir)["exit_code"] == 0


def test_wandb_file_records_pass_crc_across_blocks_and_corruption_is_caught(wandb_env):
    big = "x" * (80 * 1024)  # a record longer than two 32 KiB blocks: first, middle, last pieces
    sink = WandbSink("offline", "p", wandb_env / "run", config={"big": big})
    for step in range(300):  # and enough rows for records to straddle block boundaries
        sink.log({"train/loss": 1.0 / (step + 1)}, step=step)
    sink.finish()
    path = wandb_offline.wandb_file(sink.run_dir)
    data = path.read_bytes()
    assert data[:7] == wandb_offline.FILE_HEADER and len(data) > 3 * wandb_offline.BLOCK_SIZE

    kinds = set()
    pos = 7
    while pos + 7 <= len(data):
        left = wandb_offline.BLOCK_SIZE - pos % wandb_offline.BLOCK_SIZE
        if left < 7:
            pos += left
            continue
        _, length, kind = wandb_offline.RECORD_HEADER.unpack_from(data, pos)
        kinds.add(kind)
        pos += 7 + length
    assert {1, 2, 3, 4} <= kinds

    assert len(list(wandb_offline.iter_payloads(path))) > 300  # every CRC checked
    assert wandb_records.read_config(path) == {"big": big}
    assert len(wandb_records.read_history(path)) == 300

    corrupt = bytearray(data)
    corrupt[50_000] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(wandb_offline.CorruptRecordError, match="CRC"):
        list(wandb_offline.iter_payloads(path))


def test_a_file_cut_short_reads_up_to_the_last_whole_record(wandb_env):
    sink = WandbSink("offline", "p", wandb_env / "run")
    for step in range(50):
        sink.log({"a": step}, step=step)
    sink.finish()
    path = wandb_offline.wandb_file(sink.run_dir)
    path.write_bytes(path.read_bytes()[:-10])
    steps = [row["a"] for row in wandb_records.read_history(path)]
    assert steps == list(range(len(steps))) and len(steps) >= 45
    assert not wandb_offline.is_complete(path)


def test_find_offline_runs(wandb_env):
    sinks = []
    for job in range(2):
        with WandbSink("offline", "p", wandb_env / "sweep" / str(job)) as sink:
            sink.log({"a": job}, step=0)
        sinks.append(sink)
    assert wandb_offline.find_offline_runs(wandb_env / "sweep") == [s.run_dir for s in sinks]
    assert wandb_offline.find_offline_runs(wandb_env / "sweep" / "1") == [sinks[1].run_dir]
    with pytest.raises(FileNotFoundError, match="expected one"):
        wandb_offline.wandb_file(wandb_env / "sweep")


def _run_isolated(code, env_extra, tmp_path):
    """Run `code` in a fresh interpreter: an online attempt changes W&B's process-wide state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "wandb_home"
    env.update({var: str(home) for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR")})
    env.update(NETRC=str(tmp_path / "no-netrc"), PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def test_explicit_online_without_a_key_raises_a_clear_error(wandb_env):
    result = _run_isolated(
        """
        from rnnbench.records.wandb_sink import WandbInitError, WandbSink
        try:
            WandbSink("online", "p", "run")
        except WandbInitError as error:
            print("RAISED", error)
        """,
        {},
        wandb_env,
    )
    assert "RAISED" in result.stdout, result.stderr[-2000:]
    assert "logger.wandb.mode=offline" in result.stdout


@pytest.mark.slow
def test_auto_with_a_key_but_no_server_falls_back_to_offline(wandb_env):
    """~15 s: W&B retries the unreachable server until init_timeout (and some more)."""
    result = _run_isolated(
        """
        import warnings
        from rnnbench.records.wandb_sink import WandbSink
        import wandb_records
from rnnbench.records import wandb_offline
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sink = WandbSink("auto", "p", "run", init_timeout=3)
        sink.log({"a": 1}, step=0)
        sink.finish()
        print("MODE", sink.mode, len(wandb_records.read_history(sink.run_dir)))
        print("WARNED", any("logging offline instead" in str(w.message) for w in caught))
        """,
        {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},
        wandb_env,
    )
    assert "MODE offline 1" in result.stdout, result.stderr[-2000:]
    assert "WARNED True" in result.stdout


def test_a_wandb_file_format_change_is_a_warning_not_a_failed_run(wandb_env, monkeypatch):
    """The end of every run checks the .wandb file with our own decoder: if a W&B release changes the
    format, the run still finishes (its records are the truth), with a warning naming the file."""
    def changed_format(path, timeout=10.0):
        raise wandb_offline.CorruptRecordError(f"{path}: not a W&B record log (header b':W&B\\x02')")

    monkeypatch.setattr(wandb_offline, "wait_until_complete", changed_format)
    sink = WandbSink("offline", "p", wandb_env / "run")
    sink.log({"a": 1}, step=0)
    with pytest.warns(RuntimeWarning, match=r"could not check that .*run-.*\.wandb is complete \(CorruptRecordError"):
        sink.finish()
