"""The run folder: the single source of truth for a run's results.

(Over 400 lines on purpose: all that makes a run folder lives here, and nowhere else writes or parses
one: its files and their JSON encoding, atomic writes, the one-writer lock, the readers, the run's
provenance and config fingerprint, and how a metric's direction is read from its name.)

One folder per run (Hydra's job folder, see docs/architecture.md, "Run folder"):

- ``config.yaml``      the resolved config;
- ``metrics.jsonl``    one JSON object per logged step, appended and flushed;
- ``profile.json``     the last temporal gradient profile (replaced atomically);
- ``profiles.jsonl``   every profile, appended;
- ``summary.json``     status and final numbers, replaced atomically (at start with status
  ``running``, at the end with ``completed`` / ``failed`` / ``diverged``);
- ``.lock``            held (flock) by the one process writing the folder (`hold_folder`).

JSON has no NaN or infinity, and a diverged run produces both. Every file here writes the
non-finite floats as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (the spellings ``float()``
accepts), so each line is valid JSON for any reader (``jq``, pandas, browsers); the readers of this
module turn exactly these three strings back into floats. The price: a genuine string value
``"nan"`` would read back as a float, which no metric, profile or summary field is.

W&B (``wandb_sink.py``) mirrors these files; tables and figures are computed from the folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rnnbench.errors import UserError
# The statuses and the schema, re-exported: a run folder's readers and writers name them as run_folder.X.
from rnnbench.records.summary import COMPLETED, DIVERGED, FAILED, INCOMPLETE, RUNNING, Summary  # noqa: F401

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
PROFILE_FILE = "profile.json"
PROFILES_FILE = "profiles.jsonl"
SUMMARY_FILE = "summary.json"
VOCAB_FILE = "vocab.json"  # token i's string, for runs whose inputs are token ids
LOCK_FILE = ".lock"
# What a launch writes into a job's folder before the app decides to run: Hydra's `.hydra/` and job log,
# and the app's hold on the folder. A folder holding nothing else holds no run.
LAUNCH_RECORDS = (".hydra", "app.log", LOCK_FILE)

# Config keys that say where or how a run is recorded, not what is computed: two runs that differ
# only there are the same experiment. Dotted paths matched with fnmatch; a match drops the whole
# subtree. "*output_dir" catches both a top-level `output_dir` and `paths.output_dir`.
DEFAULT_FINGERPRINT_EXCLUDE: tuple[str, ...] = (
    "hydra",
    "logger",
    "paths",
    "train.resume",
    "train.checkpoint_every",  # when to save changes nothing that is computed
    "testing",  # hooks of the test suite (config.TestingConf)
    "*output_dir",
    "*run_dir",
    "*log_dir",
)

_STR_TO_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

# Direction of a metric told by its name, for every metric whose task does not say it (a task's
# `main_metric_mode` decides for its main metric): the trainer's best values and the report's
# best rows both ask `metric_mode`.
HIGHER_IS_BETTER = ("acc", "f1", "auc", "fraction", "within")
LOWER_IS_BETTER = ("loss", "mse", "mae", "ppl", "perplexity", "bpc", "nll", "error")


def metric_mode(name: str) -> str | None:
    """"max" or "min" for a metric named `name` (``val/accuracy``, ``loss``, ``acc_class/3``), by the
    words of its name; None when the name does not say."""
    name = name.lower()
    if any(word in name for word in HIGHER_IS_BETTER):
        return "max"
    if any(word in name for word in LOWER_IS_BETTER):
        return "min"
    return None


# --------------------------------------------------------------------------------------------
# JSON with non-finite floats


def to_jsonable(obj: Any) -> Any:
    """`obj` as plain JSON types, non-finite floats as "nan" / "inf" / "-inf".

    Accepts what a training loop hands over: dicts, lists, tuples, Python numbers, numpy scalars and
    arrays, 0-d or small torch tensors (anything with ``tolist()`` or ``item()``).
    """
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    raise TypeError(f"cannot record a value of type {type(obj).__name__}: {obj!r}")


def from_jsonable(obj: Any) -> Any:
    """Inverse of `to_jsonable` for what JSON parsing returns: "nan" / "inf" / "-inf" -> floats."""
    if isinstance(obj, str):
        return _STR_TO_NON_FINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Valid JSON (``allow_nan=False``) of `obj` with the non-finite encoding of this module."""
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def loads(text: str) -> Any:
    return from_jsonable(json.loads(text))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """A file object whose content replaces `path` at the end of the block, so that readers see the
    old file or the new one, never a mix; an exception inside the block leaves `path` as it was.

    The temporary file (``.<name>.<random>.tmp``) lives in the same folder (``os.replace`` is only
    atomic within one file system) and is fsynced before the rename, and the folder after it, so a
    crash at any moment leaves the previous version intact.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a machine crash


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace `path` by `text` atomically (`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Writing a run folder


class FolderInUse(UserError):
    """Another live process writes this run folder; the message names it and what to do. Refused like
    any other bad hydra.run.dir / hydra.sweep.dir value."""

    kind = "config"


@contextlib.contextmanager
def hold_folder(run_dir: str | os.PathLike, key: str = "run folder", what: str = "run") -> Iterator[None]:
    """Hold the run folder for one writer: an exclusive, non-blocking ``flock`` on its ``.lock``.

    A second writer (another command, another sweep given the same folder) gets FolderInUse at once,
    before it reads or writes anything, instead of mixing its files with this run's. The kernel drops
    the lock when its process ends, however it ends, so a killed run never leaves a stale lock.
    `key` names the folder in the message (e.g. ``hydra.sweep.dir``), `what` what holds it (a run, a
    sweep: `callbacks.SweepSummary` holds a sweep's folder for the sweep). Local file systems only:
    flock is not shared between the hosts of a network file system.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, _, host = os.read(fd, 200).decode(errors="replace").strip().partition(" ")
        os.close(fd)
        who = f"pid {pid} on {host}" if pid.isdigit() else "another process"
        stop = f"stop it with `kill -TERM {pid}`" if pid.isdigit() else "stop it"
        raise FolderInUse(
            f"{key}={run_dir} is in use: its {what} is still going ({who}). Wait for it to end, or {stop} "
            f"(it checkpoints first) and then resume. To start another {what}, choose another {key}.") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)  # releases the lock



def discard_unstarted(run_dir: str | os.PathLike) -> bool:
    """Remove a job folder that holds only its launch records (a run refused before it started, e.g. a
    value only building the task finds wrong), so no half-made run is left for `report` to list.
    A folder holding anything else is left as it is. Returns whether the folder was removed."""
    folder = Path(run_dir)
    if not folder.is_dir() or any(p.name not in LAUNCH_RECORDS for p in folder.iterdir()):
        return False
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    folder.rmdir()
    return True


class RunRecorder:
    """Writes one run folder. Use as a context manager, or call `close()`.

    If an exception leaves the ``with`` block while the last summary written still says
    ``running``, that summary is rewritten with status ``failed`` and the error, so a crashed run
    never keeps claiming to run.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None
        self._profiles = None
        self._summary: Summary | None = None

    # -- files -------------------------------------------------------------------------------

    def write_config(self, cfg: Any) -> Path:
        """Save the resolved config (a dict or an OmegaConf DictConfig) as ``config.yaml``."""
        from omegaconf import OmegaConf

        container = to_container(cfg)
        path = self.run_dir / CONFIG_FILE
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(container)))
        return path

    def log(self, row: Mapping[str, Any]) -> None:
        """Append `row` as one line of ``metrics.jsonl`` and flush it to the OS.

        Flushed, not fsynced: a crash of the process loses nothing already logged; a crash of the
        machine may lose the last lines (fsync per step would cost more than a small model's step).
        """
        if self._metrics is None:
            self._metrics = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")
        self._metrics.write(dumps(row) + "\n")
        self._metrics.flush()

    def write_profile(self, profile: Mapping[str, Any]) -> None:
        """Replace ``profile.json`` by `profile` (atomically) and append it to ``profiles.jsonl``."""
        text = dumps(profile)
        if self._profiles is None:
            self._profiles = open(self.run_dir / PROFILES_FILE, "a", encoding="utf-8")
        self._profiles.write(text + "\n")
        self._profiles.flush()
        atomic_write_text(self.run_dir / PROFILE_FILE, text)

    def write_summary(self, summary: Summary) -> None:
        """Replace ``summary.json`` atomically by `summary` (`write_summary`)."""
        self._summary = write_summary(self.run_dir, summary)

    def close(self) -> None:
        for f in (self._metrics, self._profiles):
            if f is not None:
                f.close()
        self._metrics = self._profiles = None

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None and self._summary is not None and self._summary.status == RUNNING:
                self.write_summary(dataclasses.replace(self._summary, status=FAILED,
                                                       error=f"{exc_type.__name__}: {exc}"))
        finally:
            self.close()


# --------------------------------------------------------------------------------------------
# Reading a run folder


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` in order ([] if the run logged nothing yet).

    A last line cut short (the process died while writing it) is skipped; a bad line elsewhere is
    an error.
    """
    return _read_jsonl(Path(run_dir) / METRICS_FILE)


def read_profiles(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every profile of ``profiles.jsonl`` in order."""
    return _read_jsonl(Path(run_dir) / PROFILES_FILE)


def read_profile(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The last profile (``profile.json``)."""
    return loads((Path(run_dir) / PROFILE_FILE).read_text(encoding="utf-8"))


def write_summary(run_dir: str | os.PathLike, summary: Summary) -> Summary:
    """Replace ``summary.json`` atomically by `summary` (its schema: `records.summary`), naming this
    process (hostname, pid) unless it names one: how a reader tells a run that is still going from one
    whose process died (`read_summary`). Returns the summary as written."""
    if not isinstance(summary, Summary):  # a dict would bypass the schema (and its version)
        raise TypeError(f"write_summary takes a records.summary.Summary, not {type(summary).__name__}")
    summary = summary.with_process()
    atomic_write_text(Path(run_dir) / SUMMARY_FILE, dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def read_summary(run_dir: str | os.PathLike) -> Summary:
    """``summary.json`` of any version as a `Summary`, with status ``incomplete`` for a run that says
    ``running`` but is not.

    A run is taken as alive only if it was started on this host and its pid still exists; a run
    started on another host is reported ``incomplete`` (this reader cannot see that host's processes,
    and reports are made after the runs). Raises FileNotFoundError if there is no summary, ValueError
    if it is not a JSON object.
    """
    summary = Summary.from_dict(loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8")))
    if summary.status == RUNNING and not _is_alive(summary.hostname, summary.pid):
        summary.status = INCOMPLETE
    return summary


def read_config(run_dir: str | os.PathLike, *, hydra_fallback: bool = False) -> dict[str, Any]:
    """``config.yaml`` as a plain dict (FileNotFoundError if there is none).

    With ``hydra_fallback``, a run that died before writing it is read from Hydra's
    ``.hydra/config.yaml``, left unresolved when it names what only resolves inside Hydra
    (``${hydra:...}``): the report still shows such a run's settings.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(run_dir) / CONFIG_FILE
    if hydra_fallback and not path.is_file():
        path = Path(run_dir) / ".hydra" / CONFIG_FILE
    cfg = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        if not hydra_fallback:
            raise
        return OmegaConf.to_container(cfg, resolve=False)


def write_vocabulary(run_dir: str | os.PathLike, vocab: list[str]) -> None:
    atomic_write_text(Path(run_dir) / VOCAB_FILE, json.dumps(list(vocab), ensure_ascii=False) + "\n")


def read_vocabulary(run_dir: str | os.PathLike) -> list[str] | None:
    """``vocab.json`` (token i's string), or None for a run that has none."""
    path = Path(run_dir) / VOCAB_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: a write cut short
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line: {line[:80]!r}") from None
    return rows


def _is_alive(hostname: str | None, pid: int | None) -> bool:
    if hostname != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# --------------------------------------------------------------------------------------------
# Provenance


_DISTRIBUTIONS = {
    "torch": "torch",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "wandb": "wandb",
    "numpy": "numpy",
}


def run_metadata() -> dict[str, Any]:
    """Versions of Python and the libraries that shape a result, the git state of the code, and the
    machine (`machine`).

    ``{"versions": {"python", "torch", "rnnbench", "hydra", "omegaconf", "wandb", "numpy"},
    "git_commit": sha or None, "git_dirty": bool or None, "machine": {...}}``. Versions come from the installed
    package metadata, so nothing heavy is imported (a missing package gives None). The commit is
    that of the repository holding the rnnbench package (None when it is not in a git checkout);
    ``git_dirty`` ignores untracked files (run outputs, caches) and counts modified tracked ones.
    """
    import rnnbench

    versions: dict[str, str | None] = {"python": platform.python_version(), "rnnbench": rnnbench.__version__}
    for name, dist in _DISTRIBUTIONS.items():
        try:
            versions[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    package_dir = Path(rnnbench.__file__).resolve().parent
    commit = _git(package_dir, "rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
        dirty = None if status is None else bool(status)
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "machine": machine()}


# Environment variables that change which floating-point code paths run (hence the last digits).
NUMERICS_ENV = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE", "DNNL_MAX_CPU_ISA")
# CPU flags that decide the vector code the kernels and the BLAS take (-march=native, ATen's dispatch).
NUMERICS_FLAGS = ("fma", "avx", "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def machine() -> dict[str, Any]:
    """What a run's numbers were computed on: the same config and code agree to the last digit only
    on the same CPU type and libraries (docs/reliability.md says how far elsewhere).

    ``{"cpu": model name, "vendor", "flags": the subset of `NUMERICS_FLAGS` the CPU has, "aten_capability":
    ATen's vector dispatch (DEFAULT, AVX2, AVX512), "blas": the BLAS torch was built with and its version,
    "onednn": oneDNN's version, "env": the `NUMERICS_ENV` variables set}``."""
    import torch

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if key.strip() == "flags":
                    break
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    config = torch.__config__.show()
    blas = next((line.strip(" -") for line in config.splitlines() if "Math Kernel Library" in line or "OpenBLAS" in line), None)
    onednn = next((line.strip(" -") for line in config.splitlines() if "MKL-DNN" in line or "oneDNN" in line), None)
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "vendor": info.get("vendor_id"), "flags": [f for f in NUMERICS_FLAGS if f in flags],
            "aten_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas, "onednn": onednn,
            "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}


def git_root() -> Path | None:
    """Top folder of the git checkout holding the rnnbench package, or None."""
    import rnnbench

    top = _git(Path(rnnbench.__file__).resolve().parent, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def config_fingerprint(cfg: Any, exclude: Iterable[str] = DEFAULT_FINGERPRINT_EXCLUDE) -> str:
    """sha256 (hex) of the canonical JSON of the resolved config minus the `exclude` keys.

    Canonical: keys sorted, no spaces, non-finite floats as in the rest of this module. `exclude`
    holds dotted paths with fnmatch wildcards (``"train.resume"``, ``"*output_dir"``); a match drops
    the subtree. Runs with equal fingerprints computed the same thing (same seed included), wherever
    and however they were recorded. Note 1 and 1.0 differ, as they do in the config.
    """
    patterns = tuple(exclude)
    kept = _drop_keys(to_container(cfg), patterns, prefix="")
    canonical = json.dumps(to_jsonable(kept), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _drop_keys(node: Any, patterns: tuple[str, ...], prefix: str) -> Any:
    if not isinstance(node, Mapping):
        return node
    kept = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if any(fnmatch.fnmatchcase(path, p) for p in patterns):
            continue
        kept[str(key)] = _drop_keys(value, patterns, prefix=f"{path}.")
    return kept


def to_container(cfg: Any) -> Any:
    """A plain resolved dict from a dict or an OmegaConf config (imported only when needed)."""
    if "omegaconf" in sys.modules:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: to_container(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_container(v) for v in cfg]
    return cfg
