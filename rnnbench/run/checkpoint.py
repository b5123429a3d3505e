"""Checkpoints: everything a run needs to go on as if it had never stopped, and the rules to resume.

A checkpoint is one `torch.save` file, ``<run_dir>/checkpoints/step-<step>.pt``, written atomically
(temporary file in the same folder, flush, fsync, ``os.replace``, fsync of the folder): a kill at any
moment leaves the previous checkpoint intact. The newest `KEEP` files are kept. It holds

- ``trainer``: `Trainer.state_dict()`: step, model, optimiser, scheduler, the task's data-generator
  state, the carried recurrent state of a stateful task, the results so far (best metrics, train time,
  sequence steps, ...) and every random generator state (`rng_states`);
- ``config_fingerprint`` and ``config`` (the resolved config), to refuse a resume with another config
  and say which keys differ;
- ``wandb_id`` (a resumed run continues the same W&B run) and ``wall_time_s`` so far.

Only plain containers, numbers, strings and tensors go in, so `load` reads with ``weights_only=True``:
a foreign file can never run code.

Resuming (`plan_resume`) never writes: every check is made before the run folder is touched, so a
refused resume leaves checkpoints, metrics and summary exactly as they were. `truncate_jsonl` then
drops the rows a killed run logged after its last checkpoint, which the resumed run logs again.

`StopSignals` makes a run preemptible and Ctrl-C safe: SIGINT, SIGUSR2 (submitit's preemption /
time-limit signal) and SIGTERM only raise a flag; the trainer checkpoints at the end of the current step
and returns; the signal is then handed to the handler that was there before (submitit's requeue, or the
default action; Ctrl-C exits 130). A second Ctrl-C stops at once (KeyboardInterrupt).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnbench.errors import ConfigError, UserError
from rnnbench.records import run_folder

log = logging.getLogger("rnnbench")

FORMAT = "rnnbench-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
KEEP = 2  # the last checkpoint and the one before it
BEST_FILE = "best.pt"  # the model at the best main validation metric (rnnbench.evaluate/sample --checkpoint best)
FINISHED = (run_folder.COMPLETED, run_folder.DIVERGED)  # results: a resume has nothing left to do


class CheckpointError(UserError):
    """A checkpoint file that cannot be used; the message names the file, says why and what to do."""

    kind = "checkpoint"


# --------------------------------------------------------------------------------------------
# Random generators


def rng_states() -> dict[str, Any]:
    """Every generator a training step may draw from: Python, numpy, torch CPU, and CUDA when present.

    numpy's state is kept as a tensor and ints so the checkpoint stays loadable with weights_only.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    random.setstate(_tuples(states["python"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants tuples all the way down (a reader may hand back lists)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------
# Files


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run folder's checkpoint files, oldest first (temporary files of a cut write excluded)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("step-*.pt"):
        try:
            found.append((int(path.stem.removeprefix("step-")), path))
        except ValueError:
            continue
    return [path for _, path in sorted(found)]


def latest(run_dir: str | os.PathLike) -> Path | None:
    files = list_checkpoints(run_dir)
    return files[-1] if files else None


def save(run_dir: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write `payload` (with ``step``) as ``checkpoints/step-<step>.pt`` atomically; keep the newest KEEP."""
    folder = checkpoint_dir(run_dir)
    path = _atomic_save(folder / f"step-{int(payload['step']):08d}.pt", payload)
    for old in list_checkpoints(run_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def save_best(run_dir: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``checkpoints/best.pt`` atomically: the model at the best main validation metric so far
    (`payload` as for `save`, its ``trainer`` holding only ``step`` and ``model``). Never resumed from."""
    return _atomic_save(checkpoint_dir(run_dir) / BEST_FILE, payload)


def best(run_dir: str | os.PathLike) -> Path | None:
    path = checkpoint_dir(run_dir) / BEST_FILE
    return path if path.is_file() else None


def _atomic_save(path: Path, payload: Mapping[str, Any]) -> Path:
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f".{path.stem.split('-')[0]}*.tmp"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    with run_folder.atomic_file(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
    return path


REQUIRED_KEYS = ("step", "config_fingerprint", "config", "trainer")


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save`; a missing, cut, corrupt or foreign file is a CheckpointError."""
    path = Path(path)
    others = [p.name for p in list_checkpoints(path.parent.parent) if p != path]
    fallback = (f" The previous checkpoint ({others[-1]}) is kept beside it: move {path.name} out of "
                f"{path.parent} to resume from that one." if others else "")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror}.") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): not a checkpoint.{fallback}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, its directory at the very end
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is cut short or is not a file written by "
                              f"torch.save (no zip directory at its end).{fallback}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in reason:
            reason = "it holds Python objects, which an rnnbench checkpoint never does"
        raise CheckpointError(f"checkpoint {path} ({size} bytes) is not a readable rnnbench checkpoint: "
                              f"{reason}.{fallback}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = (f"a {type(payload).__name__} with keys {sorted(map(str, payload))[:6]}"
                if isinstance(payload, dict) else f"a {type(payload).__name__}")
        raise CheckpointError(f"checkpoint {path} is not an rnnbench checkpoint: it holds {what}, "
                              f"not a '{FORMAT}' record.{fallback}")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {payload['version']}; this rnnbench "
                              f"reads up to version {VERSION}: update rnnbench to resume it.")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: incomplete record.{fallback}")
    return payload


# --------------------------------------------------------------------------------------------
# Deciding how a job starts


@dataclass
class ResumePlan:
    """What a job does with its run folder: start fresh, continue a checkpoint, or nothing (finished)."""

    checkpoint: dict[str, Any] | None = None  # the checkpoint to continue from
    checkpoint_path: Path | None = None
    finished: run_folder.Summary | None = None  # summary.json of the same experiment, already finished
    previous: run_folder.Summary | None = None  # summary.json found in the folder (any status)

    @property
    def step(self) -> int:
        return int(self.checkpoint["step"]) if self.checkpoint else 0


def holds_a_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (run_folder.SUMMARY_FILE, run_folder.METRICS_FILE)) \
        or bool(list_checkpoints(run_dir))


def plan_resume(run_dir: Path, fingerprint: str, config: Mapping[str, Any], resume: bool,
                folder_key: str) -> ResumePlan:
    """How a job starts in `run_dir`. Reads only; raises ConfigError / CheckpointError to refuse.

    - empty folder: fresh start;
    - a run already there and not `resume`: refused (its files would be mixed with this run's);
    (a run whose process is still going holds the folder: `run_folder.hold_folder` refused it before);
    - the run there has another config fingerprint: refused, naming the keys that differ;
    - the same experiment, finished (completed or diverged): nothing to do (`finished`);
    - else the newest checkpoint, checked (format, fingerprint); none: fresh start.
    """
    if not holds_a_run(run_dir):
        return ResumePlan()
    previous = _read_previous_summary(run_dir)
    status = previous.status if previous else "unknown"
    if not resume:
        raise ConfigError(
            f"{folder_key}={run_dir} already holds a run (status {status}). To continue it, add "
            f"train.resume=true (same config); to start another run, choose a new {folder_key}.")
    if previous and previous.config_fingerprint not in (None, fingerprint):
        old_config = _read_previous_config(run_dir)
        raise ConfigError(_mismatch_message(run_dir / run_folder.SUMMARY_FILE, old_config, config))
    if previous and status in FINISHED:
        return ResumePlan(finished=previous, previous=previous)
    path = latest(run_dir)
    if path is None:
        return ResumePlan(previous=previous)
    payload = load(path)
    if payload["config_fingerprint"] != fingerprint:
        raise ConfigError(_mismatch_message(path, payload["config"], config))
    return ResumePlan(checkpoint=payload, checkpoint_path=path, previous=previous)


def _read_previous_summary(run_dir: Path) -> run_folder.Summary | None:
    try:
        return run_folder.read_summary(run_dir)
    except FileNotFoundError:
        return None
    except ValueError as e:  # cut or garbled JSON: the checkpoint decides
        log.warning("unreadable %s (%s): resuming from the checkpoint alone", run_dir / run_folder.SUMMARY_FILE, e)
        return None


def _read_previous_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        return run_folder.read_config(run_dir)
    except Exception:  # noqa: BLE001 - only used to explain a refusal
        return None


def _mismatch_message(source: Path, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    lines = [f"train.resume: the config differs from the run being resumed ({source}); its config "
             "fingerprint is not this one."]
    if old is not None:
        diffs = config_differences(old, new)
        if diffs:
            lines.append("Keys that differ (resumed run -> this command):")
            lines += [f"  {d}" for d in diffs]
    lines.append("Resume with the run's own overrides (\"overrides\" in its summary.json; its whole config "
                 "is config.yaml), or start a new run in another folder.")
    return "\n".join(lines)


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any],
                       exclude: Iterable[str] = run_folder.DEFAULT_FINGERPRINT_EXCLUDE) -> list[str]:
    """``key: old -> new`` for every leaf that differs, keys outside the fingerprint left out."""
    patterns = tuple(exclude)
    a, b = _flatten(run_folder.to_container(old)), _flatten(run_folder.to_container(new))
    out = []
    for key in sorted(set(a) | set(b)):
        if any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(key, p + ".*") for p in patterns):
            continue
        if a.get(key, _ABSENT) != b.get(key, _ABSENT):
            out.append(f"{key}: {_show(a.get(key, _ABSENT))} -> {_show(b.get(key, _ABSENT))}")
    return out


_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def forget_after(run_dir: Path, step: int) -> None:
    """Drop the rows of metrics.jsonl and profiles.jsonl after `step`, and the test row written after
    training: the run logs them again from step + 1. A fresh start (`step` 0) drops all of them, the
    profile at step 0 too: the run profiles its initialisation again."""
    def keep(row: dict[str, Any]) -> bool:
        return step > 0 and row.get("step", 0) <= step and not any(k.startswith("test/") for k in row)

    for name in (run_folder.METRICS_FILE, run_folder.PROFILES_FILE):
        dropped = truncate_jsonl(run_dir / name, keep)
        if dropped and step:
            log.info("%s: %d rows after step %d dropped (logged again from the checkpoint)", name, dropped, step)
        elif dropped:
            log.info("%s: the %d rows of the earlier attempt dropped (no checkpoint: logged again from step 1)",
                     name, dropped)
    profiles = run_folder.read_profiles(run_dir)
    profile_file = run_dir / run_folder.PROFILE_FILE
    if profiles:
        run_folder.atomic_write_text(profile_file, run_folder.dumps(profiles[-1]))
    else:
        profile_file.unlink(missing_ok=True)


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite `path` (atomically) with only the rows `keep` accepts; a cut last line goes too.

    Returns the number of rows dropped. A missing file is left missing.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    kept, dropped = [], 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            row = run_folder.loads(line)
        except ValueError:  # the line a killed writer left half written
            dropped += 1
            continue
        if keep(row):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        run_folder.atomic_write_text(path, "".join(line + "\n" for line in kept))
    return dropped


# --------------------------------------------------------------------------------------------
# Preemption and Ctrl-C


def preemption_signals() -> tuple[signal.Signals, ...]:
    """SIGINT (Ctrl-C), SIGTERM, SIGUSR2, and submitit's preemption signal if set otherwise
    (SUBMITIT_PREEMPT_SIGNAL)."""
    names = {"INT", "TERM", "USR2", os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")}
    return tuple(sorted({getattr(signal, f"SIG{n}") for n in names if hasattr(signal, f"SIG{n}")}))


class StopSignals:
    """While active, a stop signal only sets `received`; `redeliver` passes it on afterwards.

    A second Ctrl-C does not wait for the step to end: after the first SIGINT, SIGINT raises
    KeyboardInterrupt again (Python's own handler), which the app records as a run stopped at once.
    Use as a context manager around the training; handlers can only be set in the main thread (in any
    other thread this does nothing and signals keep their usual effect).
    """

    def __init__(self, signals: Iterable[signal.Signals] | None = None):
        self.signals = tuple(signals) if signals is not None else preemption_signals()
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C stops at once
            print("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again: stop at once)",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def redeliver(self) -> None:
        """Pass the received signal on, now that the handler from before is back, without raising an
        Exception: nothing may record this job as finished. SIGINT exits with 130 (128 + 2, the shell's
        code for Ctrl-C; Python's own handler would print a KeyboardInterrupt traceback). Any other
        signal is raised again: submitit's handler requeues the job and exits, the default one ends
        the process; if that handler returns (it ignores the signal, as submitit does SIGTERM), exit
        with 128 + the signal number."""
        assert self.received is not None
        if self.received != signal.SIGINT:
            signal.raise_signal(self.received)
        raise SystemExit(128 + int(self.received))
