"""The SLURM launcher preset (conf/hydra/launcher/slurm.yaml) against a real cluster.

`scripts/slurm-local.sh` starts a one-node SLURM cluster on localhost, once per test session, in its own
folder under pytest's tmp and on free ports, so a cluster a contributor already runs is left alone; it is
stopped at the end of the session. A sweep is sent to it as a user sends one, and every job's results are
checked, along with what SLURM and submitit recorded of them. Skipped only when the cluster cannot be
started on this machine: not root, or SLURM missing with no working apt-get to install it.
"""

from __future__ import annotations

import os
import socket
import sys
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from rnnbench.records import run_folder

pytestmark = pytest.mark.slurm

SETUP = REPO / "scripts" / "slurm-local.sh"
TEARDOWN = REPO / "scripts" / "slurm-local-teardown.sh"
CANNOT_START = {3: "SLURM packages missing and not installable", 4: "not root"}  # setup's exit codes


@dataclass
class Cluster:
    """A running local cluster: its folder and the variables its env.sh sets (SLURM_CONF, PATH with
    the sacct stand-in), to be added to a subprocess's environment."""

    lab: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 30) -> str:
        proc = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(command)}: {proc.stderr}"
        return proc.stdout

    def jobs(self, job_id: str) -> dict[str, dict[str, str]]:
        """Every job (array task) of `job_id` slurmctld knows, finished ones included (MinJobAge):
        {id: {"name", "partition", "state"}}."""
        out = self.run("squeue", "-h", "--states=all", "-j", job_id, "-o", "%i|%j|%P|%T")
        rows = [line.split("|") for line in out.splitlines()]
        return {i: {"name": name, "partition": part, "state": state} for i, name, part, state in rows}

    def sacct_states(self, job_id: str) -> dict[str, str]:
        """What submitit reads: the sacct stand-in's JobID -> State."""
        out = self.run("sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job_id)
        header, *rows = out.splitlines()
        assert header == "JobID|State|NodeList"
        return {row.split("|")[0]: row.split("|")[1] for row in rows}

    def node_cpus(self) -> int:
        return int(self.run("sinfo", "-h", "-n", "localhost", "-o", "%c").split()[0])

    def preempt(self, seconds: float = 5) -> str:
        """Submit a job to partition `urgent` that needs the whole node, so SLURM preempts the `debug`
        jobs running there: USR2 first (submitit checkpoints), then requeue. Returns its job id."""
        return self.run("sbatch", "--parsable", "-p", "urgent", "-c", str(self.node_cpus()), "--mem=1G",
                        "-J", "urgent", "-o", str(self.lab / "log" / "urgent-%j.out"),
                        "--wrap", f"sleep {seconds}").strip()

    def wait_state(self, job_id: str, states: set[str], timeout: float = 60) -> str:
        """Poll until job `job_id` (a plain or an array-task id) is in one of `states`."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.jobs(job_id).get(job_id, {}).get("state", "")
            if state in states or time.monotonic() > deadline:
                assert state in states, f"job {job_id} is {state!r} after {timeout}s, waited for {states}"
                return state
            time.sleep(0.2)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env_added_by(env_sh: Path) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", 'source "$1" && env -0', "_", str(env_sh)],
                         capture_output=True, text=True, check=True).stdout
    after = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in after.items() if os.environ.get(k) != v and not k.startswith(("_", "SHLVL"))}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """One cluster for the whole session (setup about a second once SLURM is installed)."""
    if os.geteuid() != 0:
        pytest.skip("local SLURM cluster needs root (scripts/slurm-local.sh starts its daemons as root)")
    lab = tmp_path_factory.mktemp("slurm")
    if len(str(lab)) > 60:  # munge's socket path must fit in sun_path
        lab = Path(tempfile.mkdtemp(prefix="rnnbench-slurm-", dir="/tmp"))
    ctld_port, slurmd_port = _free_ports(2)
    env = dict(os.environ, SLURMLAB=str(lab), SLURM_CTLD_PORT=str(ctld_port), SLURMD_PORT=str(slurmd_port))
    proc = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode in CANNOT_START:
        pytest.skip(f"local SLURM cluster cannot be started here ({CANNOT_START[proc.returncode]}): "
                    f"{proc.stderr.strip()[-500:]}")
    try:
        assert proc.returncode == 0, f"scripts/slurm-local.sh failed:\n{proc.stdout}\n{proc.stderr}"
        yield Cluster(lab, _env_added_by(lab / "env.sh"))
    finally:
        subprocess.run(["bash", str(TEARDOWN)], env=env, capture_output=True, timeout=120)


# A tiny sweep: 2 cells x 2 seeds, 20 steps of the adding problem (T=10).
TINY = ["task=adding", "task.seq_len=10", "task.val_size=32", "train.max_steps=20", "train.log_every=5",
        "train.eval_every=10", "train.profile_every=10", "train.batch_size=8", "model.hidden_size=8",
        "logger.wandb.mode=offline"]


def _hydra_job_id(run_dir: Path) -> str:
    """hydra.job.id: the launcher sets it from submitit's JobEnvironment, i.e. from the job's
    SLURM_ARRAY_JOB_ID/SLURM_ARRAY_TASK_ID (SLURM_JOB_ID for a plain job)."""
    return str(yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def test_sweep_runs_every_job_under_slurm(slurm_cluster, tmp_path):
    proc = run_cli("-m", "hydra/launcher=slurm", "cell=lstm,gru", "train.seed=0,1", *TINY,
                   cwd=tmp_path, env=slurm_cluster.env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "sweeps").glob("*/*")

    # Every job's results: four run folders, one per (cell, seed), each complete.
    run_dirs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in run_dirs] == ["0", "1", "2", "3"]
    seen = set()
    for run_dir in run_dirs:
        summary = run_folder.read_summary(run_dir)
        assert summary.status == "completed", summary.error
        assert summary.steps == 20 and summary.final["val/loss"] > 0
        assert summary.threads == 1, "torch must use cpus_per_task threads (OMP_NUM_THREADS in setup)"
        seen.add((summary.cell, summary.seed))
        rows = run_folder.read_metrics(run_dir)
        assert [r["step"] for r in rows if "train/loss" in r] == [5, 10, 15, 20]
        assert [r["step"] for r in rows if "val/loss" in r] == [10, 20]
    assert seen == {("lstm", 0), ("lstm", 1), ("gru", 0), ("gru", 1)}

    # They ran as the four tasks of one SLURM job array, run folder k = array task k ...
    job_ids = [_hydra_job_id(d) for d in run_dirs]
    array_id = job_ids[0].split("_")[0]
    assert job_ids == [f"{array_id}_{k}" for k in range(4)]
    # ... submitted as the preset says ...
    script = (sweep / ".submitit" / array_id / f"{array_id}_submission.sh").read_text()
    for line in ["#SBATCH --partition=debug", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=1GB",
                 "#SBATCH --array=0-3%4", "#SBATCH --signal=USR2@30", "#SBATCH --time=10",
                 "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"]:
        assert line in script, line
    # ... started by submitit inside the SLURM job (its JobEnvironment reads the SLURM_* variables) ...
    for job_id in job_ids:
        log = (sweep / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job_id}," in log and "Job completed successfully" in log, log
    # ... and SLURM itself, and the sacct stand-in submitit polls, saw all four complete.
    assert slurm_cluster.jobs(array_id) == {
        job_id: {"name": "rnnbench", "partition": "debug", "state": "COMPLETED"} for job_id in job_ids}
    assert slurm_cluster.sacct_states(array_id) == {job_id: "COMPLETED" for job_id in job_ids}


# Long enough (about 5 s of training on a 2-core machine) that the preemption lands mid-run.
PREEMPTIBLE = ["cell=gru", "train.seed=3", "task=adding", "task.seq_len=10", "task.val_size=32",
               "train.max_steps=1000", "train.log_every=50", "train.eval_every=500",
               "train.profile_every=1000", "train.batch_size=8", "model.hidden_size=8",
               "logger.wandb.mode=offline"]
VARYING = ("time_s", "throughput")  # wall-clock columns of metrics.jsonl


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) while waiting for {what}")
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.2)
    return value


def _training_started(root: Path) -> Path | None:
    for metrics in root.glob("outputs/sweeps/*/*/0/metrics.jsonl"):
        if any("train/loss" in row for row in run_folder.read_metrics(metrics.parent)):
            return metrics.parent
    return None


@pytest.mark.slow  # 30-50 s on 2 cores, beyond the suite's minute for SLURM: `python -m pytest -m slurm`
def test_preempted_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(slurm_cluster, tmp_path):
    """A job on `debug` is preempted by an `urgent` one: SLURM sends USR2, the run checkpoints and
    submitit requeues it; it starts again into the same run folder, resumes from the checkpoint, and
    ends with exactly the metrics of the same run never interrupted (single-threaded both)."""
    (tmp_path / "slurm").mkdir()
    (tmp_path / "reference").mkdir()
    env = {**os.environ, **slurm_cluster.env, "PYTHONUNBUFFERED": "1"}
    sweep = subprocess.Popen([sys.executable, "-m", "rnnbench", "-m", "hydra/launcher=slurm", *PREEMPTIBLE],
                             cwd=tmp_path / "slurm", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        run_dir = _wait_for(lambda: _training_started(tmp_path / "slurm"), 120, "training in the job", sweep)
        job_id = _hydra_job_id(run_dir)
        urgent = slurm_cluster.preempt(seconds=5)
        # The reference, while the job waits to run again: a plain local run of the same config, with
        # one thread as the job has.
        reference = run_cli(*PREEMPTIBLE, cwd=tmp_path / "reference", env={"OMP_NUM_THREADS": "1"})
        assert reference.returncode == 0, reference.stderr[-3000:]
        output, _ = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output[-3000:]

    # SLURM preempted the job once and ran the urgent one in its place.
    assert slurm_cluster.jobs(urgent)[urgent]["state"] == "COMPLETED"
    assert "Restarts=1" in slurm_cluster.run("scontrol", "show", "job", job_id), \
        "the job was not requeued: it finished before the preemption reached it (make it longer)"
    log = (run_dir.parent / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    for line in ["Caught signal SIGUSR2", f"Requeued job {job_id}", "Job completed successfully"]:
        assert line in log, log

    # The requeued job resumed from the checkpoint the first one wrote on USR2, in the same folder ...
    summary = run_folder.read_summary(run_dir)
    assert summary.status == "completed" and summary.steps == 1000, summary.error
    (resumed,) = summary.resumed
    assert 0 < resumed["from_step"] < 1000

    # ... and ended exactly where the uninterrupted run did.
    (reference_dir,) = (tmp_path / "reference" / "outputs" / "runs").glob("*/*")
    expected = run_folder.read_summary(reference_dir)
    assert summary.config_fingerprint == expected.config_fingerprint
    assert summary.threads == expected.threads == 1
    for key in ("final", "best", "best_step", "test"):
        assert getattr(summary, key) == getattr(expected, key), key

    def rows(folder):
        return [{k: v for k, v in row.items() if k not in VARYING} for row in run_folder.read_metrics(folder)]
    assert rows(run_dir) == rows(reference_dir)
