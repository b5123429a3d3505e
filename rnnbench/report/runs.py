"""Run folders -> one pandas row per run, and the values that set runs apart.

A run's results live in its folder (docs/architecture.md, "Run folder"): ``summary.json`` (through
`rnnbench.records.run_folder`, the one reader of a run's status), the resolved config and Hydra's
``.hydra/overrides.yaml``. Overrides are parsed by Hydra's own override grammar, so a value reads
back as the type Hydra gave it (``+x=[1,2]`` is a list, ``~train.clip`` is None).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from rnnbench.errors import UserError
from rnnbench.records import run_folder
from rnnbench.records.run_folder import read_config, read_summary
from rnnbench.records.summary import INCOMPLETE, Summary

RUNS_FILE = "runs.jsonl"  # a study's committed records (rnnbench.report.studies)
FAIR_PLAN = "fair.json"  # the plan of a fair comparison (rnnbench.fair), in the folder above its sweeps
BUDGET_KEY = "train.max_steps"  # a record's step budget, a column even where no override set it: one
# study may hold runs at two budgets (a reduced sweep and the published one), which claims tell apart

SUMMARY_FIELDS = (
    "status", "error", "diverged_at", "task", "cell", "seed", "steps", "wall_time_s", "num_params",
    "throughput_steps_per_s", "main_metric", "main_metric_mode", "memoryless_baseline",
)


class ReportError(UserError):
    """A problem of the user's input (path, key, metric): one message, exit code 2 (rnnbench.errors)."""


def is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / ".hydra" / "config.yaml").is_file()


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """Every run folder at or under `path` (a run folder, a sweep folder, or any parent)."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"path does not exist: {path}")
    found = []
    for dirpath, dirnames, _ in os.walk(path):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames.clear()  # a run's own subfolders (.hydra, wandb, checkpoints) hold no runs
        else:
            dirnames.sort()
    return found


def parse_override(text: str) -> tuple[str, Any]:
    """Hydra override "key=value" (also "+key=", "++key=", "~key", "group@package=") -> (key,
    value as Hydra types it); a deletion ``~key`` has the value None."""
    try:
        (override,) = OverridesParser.create().parse_overrides([text])
    except HydraException as error:
        raise ReportError(f"not a Hydra override: {text!r} ({str(error).splitlines()[0]})") from error
    key = override.key_or_group + (f"@{override.package}" if override.package is not None else "")
    return key, None if override.is_delete() else override.value()


def _recorded_override(text: str) -> tuple[str, Any]:
    """An override as a run recorded it: Hydra's reading, or (key, the text after "=") for one that
    Hydra's grammar does not read (written by hand, or by an older Hydra), so a table still loads."""
    try:
        return parse_override(text)
    except ReportError:
        key, _, value = text.partition("=")
        return key.strip().lstrip("+~"), value


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config (Hydra's copy for a run that died before writing its own), else {}."""
    try:
        return read_config(run_dir, hydra_fallback=True)
    except FileNotFoundError:
        return {}


def fair_stage(run_dir: Path) -> str | None:
    """"screen" or "final" for a run of a fair comparison (`rnnbench.fair`: DIR/screen/<job>,
    DIR/extend-*/<job>, DIR/final-<value>/<job> beside DIR/fair.json), else None. A final whose
    setting was chosen by a screen at other overrides (`--screen`, e.g. a shorter budget) is
    "final (screen <overrides>)", so its claims never mix with those of a screen at the final's budget."""
    plan_file = run_dir.parent.parent / FAIR_PLAN
    if not plan_file.is_file():
        return None
    if not run_dir.parent.name.startswith("final-"):
        return "screen"
    screen = json.loads(plan_file.read_text()).get("plan", {}).get("screen") or []
    return f"final (screen {' '.join(screen)})" if screen else "final"


def is_seed_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def _run_row(run_dir: Path) -> dict[str, Any]:
    try:
        summary = read_summary(run_dir)
    except FileNotFoundError:  # Hydra made the folder; the run never wrote its first summary
        summary = Summary(status=INCOMPLETE)
    except ValueError as error:  # not JSON: written by hand or by something else than run_folder.py
        summary = Summary(status=INCOMPLETE, error=f"unreadable summary.json: {error}")
    config = _read_config(run_dir)
    cfg = pd.json_normalize(config, sep=".").add_prefix("cfg.").to_dict("records")[0] if config else {}
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_file)) or []]
    else:
        overrides = [str(o) for o in summary.overrides]
    override_values = dict(_recorded_override(o) for o in overrides)

    row: dict[str, Any] = {"run_dir": str(run_dir)}
    row.update({field: getattr(summary, field) for field in SUMMARY_FIELDS})
    for section in ("final", "best", "best_step"):
        row.update({f"{section}/{k}": v for k, v in getattr(summary, section).items()})
    row.update(summary.test)  # the test split's metrics, named test/<metric> already
    if row["seed"] is None:  # no summary yet: the seed is in the config
        row["seed"] = next((v for k, v in {**cfg, **override_values}.items() if is_seed_key(k)), None)
    row["overrides"] = overrides
    row["override_values"] = override_values
    row.update(cfg)
    return row


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run folder found under `paths`.

    Columns: ``run_dir``, ``status`` (completed / failed / diverged / incomplete / running), one
    column per override key (the override's typed value; a run without that override gets the
    config's value, e.g. ``model.hidden_size``), the summary fields (``error``, ``diverged_at``,
    ``seed``, ``steps``, ``wall_time_s``, ``num_params``, ...), ``final/<metric>``,
    ``best/<metric>``, ``best_step/<metric>``, ``test/<metric>`` (the test split, evaluated once at the
    end), ``overrides`` (list) and ``override_values`` (dict),
    and the config flattened with dots as ``cfg.<key>``. ``df.attrs["swept_keys"]`` holds
    `swept_keys(df)`.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if paths and all(is_records(p) for p in paths):  # a study's committed records, read as runs
        return records_frame([row for p in paths for row in read_records(p)])
    run_dirs = [d for p in paths for d in find_run_dirs(p)]
    if not run_dirs:
        raise ReportError(f"no runs found under {', '.join(str(p) for p in paths)}")
    rows = [_run_row(d) for d in run_dirs]
    override_keys = list(dict.fromkeys(k for row in rows for k in row["override_values"]))
    for row in rows:
        for key in override_keys:
            if key in row["override_values"]:
                row[key] = row["override_values"][key]
            else:  # the default: a summary field of the same name ("cell", "seed") or the config's
                row[key] = row.get(key, row.get(f"cfg.{key}"))
    df = pd.DataFrame(rows)
    front = ["run_dir", "status", *override_keys]
    df = df[front + [c for c in df.columns if c not in front]]
    df.attrs["swept_keys"] = swept_keys(df)
    return df


def key_value(value: Any) -> Any:
    """A hashable, comparable form of a cell: missing -> None, lists -> tuples, numpy -> Python."""
    if isinstance(value, (list, tuple)):
        return tuple(key_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, key_value(v)) for k, v in value.items()))
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def swept_keys(df: pd.DataFrame) -> list[str]:
    """Override keys whose value differs between runs, in the order they were first written; not the
    keys that leave the function a run learns unchanged (`run_folder.SAME_FUNCTION_KEYS`: threads,
    resume, logging cadence, device, ...), which never split a table's groups."""
    keys = dict.fromkeys(k for values in df["override_values"] for k in values if not run_folder.same_function_key(k))
    return [k for k in keys if len({key_value(v) for v in df[k]}) > 1]


def resolve_key(df: pd.DataFrame, key: str) -> str:
    """A group key as the user wrote it -> its column: an override key, else a config key."""
    for candidate in (key, f"cfg.{key}"):
        if candidate in df.columns:
            return candidate
    swept = ", ".join(swept_keys(df)) or "none"
    raise ReportError(f"unknown key {key!r}; swept keys: {swept} (any config key works, e.g. model.hidden_size)")


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(values of `keys`, runs) for each distinct combination, in sorted order."""
    labels = [tuple(key_value(df.at[i, k]) for k in keys) for i in df.index]
    order = sorted(set(labels), key=lambda values: tuple(_sort_key(v) for v in values))
    return [(values, df[[label == values for label in labels]]) for values in order]


def label(value: Any) -> str:
    """How a key's value is shown: 0.001 not 0.0010000, "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(label(v) for v in value) + "]"
    return str(value)


def not_completed(df: pd.DataFrame) -> list[str]:
    """One line per run that is not ``completed``: its folder name, the swept keys that set it
    apart, its status and why (the error recorded in summary.json, or the step it diverged at)."""
    keys = df.attrs.get("swept_keys") or swept_keys(df)
    lines = []
    for _, row in df[df["status"] != "completed"].iterrows():
        where = " ".join(f"{k}={label(key_value(row[k]))}" for k in keys)
        if row["status"] in ("diverged", "stopped"):
            step = key_value(row.get("diverged_at" if row["status"] == "diverged" else "steps"))
            why = "" if step is None else f"at step {int(step)}"
        else:
            why = row.get("error") if isinstance(row.get("error"), str) else ""
        lines.append(f"{Path(row['run_dir']).name} [{where}]: {row['status']}" + (f": {why}" if why else ""))
    return lines


# --------------------------------------------------------------------------------------------
# a study's committed records (docs/results/<study>/runs.jsonl) -> the same DataFrame


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / RUNS_FILE
    if not path.is_file():  # a study not run yet: every claim reads "not run"
        return []
    return [run_folder.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def records_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records as the rows `rnnbench.report.load_runs` gives for run folders (same column names), so
    `summarize` and the report CLI work on committed records as on sweep folders."""
    frame = []
    for r in rows:
        values = dict(parse_override(o) for o in r["overrides"])
        row = {"run_dir": f"{r.get('sweep', '')}/{r['job']}", **{k: v for k, v in r.items() if not isinstance(v, dict)},
               "profile_init": r.get("profile_init"), "train_curve": r.get("train_curve"), "override_values": values}
        for section in ("final", "best"):
            row.update({f"{section}/{k}": v for k, v in r[section].items()})
        row.update(r["test"])  # summary.json names them test/<metric> already
        frame.append(row)
    keys = list(dict.fromkeys(k for row in frame for k in row["override_values"]))
    for row in frame:
        for key in keys:
            row[key] = row["override_values"].get(key, row.get(key))
        row[BUDGET_KEY] = row["override_values"].get(BUDGET_KEY, row.get("max_steps"))
    df = pd.DataFrame(frame, columns=None if frame else ["run_dir", "status", "override_values"])
    df.attrs["swept_keys"] = swept_keys(df) if frame else []
    return df


def is_records(path: str | Path) -> bool:
    path = Path(path)
    return path.name == RUNS_FILE or (path / RUNS_FILE).is_file()
