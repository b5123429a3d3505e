"""Weights & Biases mirror of a run folder.

The run folder (``run_folder.py``) is the source of truth; this sink copies the same rows to W&B so
runs can be browsed there. Facts this code relies on, measured with wandb 0.31:

- Offline must be chosen for the whole process (``WANDB_MODE`` and ``wandb.setup``), not only in
  ``wandb.init``: otherwise usage telemetry is sent at exit and, with no network, exit waits ~10 s.
- A job that does not finish makes the next ``init`` return the same run (Hydra multirun in one
  process): ``reinit="finish_previous"`` and ``dir=<the job's folder>`` on every init.
- Tables (and charts, which are tables) cost 7-85 ms a call and leave a copy under
  ``$WANDB_DATA_DIR/artifacts/staging``.

Decisions:

- Mode ``auto`` is ``online`` when an API key is configured locally (``WANDB_API_KEY`` or a netrc
  entry for the W&B host), else ``offline``; nothing asks a server.
- Temporal gradient profiles: each `log_profile` call logs only the cheap scalars it is given
  (``profile/<name>``) and keeps the profile in memory; `finish` draws one line chart per layer,
  ``profile/<layer>``, log10 ‖∂L/∂h_t‖ against t with one line per profile step (at most
  ``max_profile_lines``, spread over the run, the last always included; at most
  ``max_profile_points`` values of t, spread from 1 to T). So a run pays the chart cost once per
  layer (~70 ms for 6 lines x 100 points, plus ~0.5 s once per process to import wandb's plotting),
  whatever ``profile_every`` is; the price is that the chart appears when the run ends. ``profile.json`` / ``profiles.jsonl`` in the run folder hold every profile anyway.
- If ``init`` fails in online mode: an explicit ``online`` raises `WandbInitError` (the user asked
  for a server; say so and how to go offline); ``auto`` warns and falls back to offline (the user
  asked for the best available), and the run can be uploaded later with ``wandb sync``.
- ``disabled`` does not import wandb at all: every method is a no-op.
"""

from __future__ import annotations

import math
import netrc
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODES = ("auto", "offline", "online", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"


class WandbInitError(RuntimeError):
    """W&B could not start a run in the requested mode."""


def resolve_mode(requested: str) -> str:
    """The W&B mode to use for `requested` (the value of ``logger.wandb.mode``).

    ``auto`` becomes ``online`` if an API key is configured on this machine, else ``offline``.
    """
    if requested not in MODES:
        raise ValueError(f"logger.wandb.mode={requested!r} is not one of {', '.join(MODES)}")
    if requested == "auto":
        return "online" if api_key_configured() else "offline"
    return requested


def api_key_configured() -> bool:
    """True if ``WANDB_API_KEY`` is set or the netrc file has an entry for the W&B host
    (``WANDB_BASE_URL``, default api.wandb.ai). Local files only: no server is asked."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).netloc
    if not host:
        return False
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


class WandbSink:
    """One W&B run mirroring one run folder.

    `run_dir` is the run folder: W&B writes ``<run_dir>/wandb/offline-run-*/`` (or ``run-*``) there.
    `config` is logged as the run config (a dict, or an OmegaConf config, resolved). With
    ``resume=True`` the run `run_id` is continued (``resume="allow"``). Use as a context manager, or
    call `finish` in a ``finally``.
    """

    def __init__(
        self,
        mode: str,
        project: str,
        run_dir: str | os.PathLike,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        config: Any = None,
        tags: Sequence[str] | None = None,
        run_id: str | None = None,
        resume: bool = False,
        entity: str | None = None,
        init_timeout: float = 30.0,
        max_profile_lines: int = 6,
        max_profile_points: int = 100,
    ):
        self.requested_mode = mode
        self.mode = resolve_mode(mode)
        self.max_profile_lines = max_profile_lines
        self.max_profile_points = max_profile_points
        self._profiles: list[tuple[int, dict[str, list[float]]]] = []
        self._last_step: int | None = None
        self._run = None
        self._finished = False
        if self.mode == "disabled":
            return

        from rnnbench.records import run_folder

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        init_kwargs = dict(
            project=project, dir=os.fspath(run_dir), name=name, group=group, job_type=job_type,
            config=run_folder.to_container(config),
            tags=list(tags) if tags else None, entity=entity,
            id=run_id, resume="allow" if resume else None,
            reinit="finish_previous",
        )
        git_root = run_folder.git_root()
        settings = dict(
            console="off", x_disable_stats=True, quiet=True, init_timeout=init_timeout,
            # The code's repository, not the run folder's (where W&B would look, and warn).
            **({"git_root": os.fspath(git_root)} if git_root else {"disable_git": True}),
        )
        try:
            self._run = _init(self.mode, init_kwargs, settings)
        except Exception as error:
            if self.mode != "online":
                raise
            if self.requested_mode == "online":
                raise WandbInitError(
                    f"could not start an online W&B run ({type(error).__name__}: {error}). "
                    "Run with logger.wandb.mode=offline (and `wandb sync` the run later) or "
                    "logger.wandb.mode=disabled."
                ) from error
            warnings.warn(
                f"W&B online init failed ({type(error).__name__}: {error}); logging offline instead. "
                f"Upload later with `wandb sync {os.fspath(run_dir)}/wandb/offline-run-*`.",
                RuntimeWarning,
                stacklevel=2,
            )
            self.mode = "offline"
            self._run = _init(self.mode, init_kwargs, settings)

    # -- identity ----------------------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else self._run.id

    @property
    def run_dir(self) -> Path | None:
        """The W&B run folder (``.../wandb/offline-run-<date>_<time>-<id>``), or None if disabled."""
        return None if self._run is None else Path(self._run.dir).parent

    @property
    def info(self) -> dict[str, Any]:
        """The ``wandb`` entry of summary.json: mode used, run id, W&B run folder."""
        return {"mode": self.mode, "id": self.run_id, "dir": None if self.run_dir is None else str(self.run_dir)}

    # -- logging -----------------------------------------------------------------------------

    def log(self, row: Mapping[str, Any], step: int) -> None:
        """Log a metrics.jsonl row at W&B step `step` (a ``"step"`` key in `row` is that step and is
        not logged again). Rows of one step may come in several calls: W&B merges them."""
        if self._run is None:
            return
        self._run.log({k: v for k, v in row.items() if k != "step"}, step=step)
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def log_profile(
        self, step: int, layers: Mapping[str, Sequence[float]], scalars: Mapping[str, float] | None = None
    ) -> None:
        """Keep the temporal profile ‖∂L/∂h_t‖, t = 1..T, of each layer for the end-of-run chart,
        and log `scalars` (e.g. profile.json's ``summary``) now, as ``profile/<name>``."""
        if self._run is None:
            return
        self._profiles.append((step, {name: [float(v) for v in values] for name, values in layers.items()}))
        if scalars:
            self.log({f"profile/{name}": value for name, value in scalars.items()}, step=step)
        else:
            self._last_step = step if self._last_step is None else max(self._last_step, step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary fields (e.g. those of summary.json: status, final, best...)."""
        if self._run is None:
            return
        self._run.summary.update(dict(values))

    def finish(self, exit_code: int = 0, timeout: float = 10.0) -> None:
        """Draw the profile charts, close the run and wait (up to `timeout` s) until its .wandb file
        is complete on disk, so that it can be read back or synced at once. Safe to call twice."""
        if self._run is None or self._finished:
            return
        self._finished = True
        try:
            self._log_profile_charts()
        except Exception as error:  # a missing chart must not hide the training's own outcome
            warnings.warn(f"W&B profile charts not logged: {type(error).__name__}: {error}", RuntimeWarning)
        finally:
            self._run.finish(exit_code=exit_code)
            _wait_for_file(self.run_dir, timeout)

    def __enter__(self) -> WandbSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=0 if exc is None else 1)

    # -- profile charts ----------------------------------------------------------------------

    def _log_profile_charts(self) -> None:
        if not self._profiles:
            return
        import wandb

        picked = _spread(self._profiles, self.max_profile_lines)
        charts = {}
        for layer in picked[-1][1]:
            lines = [(step, layers[layer]) for step, layers in picked if layer in layers]
            length = max(len(values) for _, values in lines)
            # The chart's cost grows with lines x points (~70 ms for 6 x 100): thin out long sequences.
            ts = _spread(list(range(length)), self.max_profile_points)
            charts[f"profile/{layer}"] = wandb.plot.line_series(
                xs=[t + 1 for t in ts],
                ys=[[_log10(values[t]) if t < len(values) else None for t in ts] for _, values in lines],
                keys=[f"step {step}" for step, _ in lines],
                title=f"{layer}: log10 ‖∂L/∂h_t‖",
                xname="t",
            )
        # At the last step logged, so the charts join its row instead of adding a step.
        self._run.log(charts, step=self._last_step)


class WandbTrainerSink:
    """The trainer's sink (`train.Sink`) that mirrors its rows and profiles to a `WandbSink`."""

    def __init__(self, sink):
        self.sink = sink

    def log(self, row: dict[str, Any]) -> None:
        self.sink.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def log_profile(self, step: int, profile: dict) -> None:
        self.sink.log_profile(step, profile["layers"])
        self.sink.log({f"profile/{k}": v for k, v in profile["summary"].items()}, step=step)
        if profile.get("gates"):
            from rnnbench.modules.diagnostics import gate_scalars

            self.sink.log(gate_scalars(profile["gates"]), step=step)


def _init(mode: str, init_kwargs: dict[str, Any], settings: dict[str, Any]):
    """``wandb.init`` with `mode` set for the whole process first (see the module docstring)."""
    if os.environ.get("WANDB_MODE") != mode:
        os.environ["WANDB_MODE"] = mode
    import wandb

    wandb.setup(settings=wandb.Settings(mode=mode))
    return wandb.init(mode=mode, settings=wandb.Settings(**settings), **init_kwargs)


def _wait_for_file(run_dir: Path, timeout: float) -> None:
    """``run.finish()`` may return before W&B's service has written the last block (wandb 0.31).

    Contained: this decodes W&B's own file format (`rnnbench.records.wandb_offline`), which a W&B release
    may change; the run's records are already written, so any error here is a warning, never the
    run's outcome."""
    from rnnbench.records import wandb_offline

    files = sorted(run_dir.glob("run-*.wandb"))
    try:
        complete = not files or wandb_offline.wait_until_complete(files[0], timeout)
    except Exception as error:  # noqa: BLE001 - a format change must not fail a finished run
        warnings.warn(f"could not check that {files[0]} is complete ({type(error).__name__}: {error}); "
                      "the run's own records are unaffected", RuntimeWarning)
        return
    if not complete:
        warnings.warn(f"{files[0]} was still incomplete {timeout} s after wandb.finish()", RuntimeWarning)


def _spread(items: list, n: int) -> list:
    """At most `n` items, evenly spread, first and last included."""
    if len(items) <= n:
        return list(items)
    if n <= 1:
        return items[-1:]
    indices = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in indices]


def _log10(value: float) -> float | None:
    return math.log10(value) if value > 0 and math.isfinite(value) else None


def sweep_group(sweep_dir) -> str:
    """The W&B group of a sweep's runs: its folder's date and time (`outputs/sweeps/<date>/<time>`),
    so sweeps of different days never share a group."""
    from pathlib import Path

    path = Path(sweep_dir)
    return f"{path.parent.name}_{path.name}" if path.parent.name else path.name
