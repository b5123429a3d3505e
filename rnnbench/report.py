"""Run folders -> one pandas row per run -> tables (Markdown, LaTeX, CSV) and figures.

    python -m rnnbench.report outputs/sweeps/2024-05-01/12-00-00_cells
    python -m rnnbench.report outputs/sweeps/... --rows cell --cols task --format latex -o table.tex
    python -m rnnbench.report outputs/sweeps/... --reference cell=lstm --figures figures/
    python -m rnnbench.report outputs/sweeps/...   --importance   # after an Optuna search

A run's results live in its folder (docs/architecture.md, "Run folder"); everything here is computed
from the folders, so a table can always be rebuilt. Seeds are aggregated as mean ± sample std
(ddof=1) over *completed* runs; failed, diverged, incomplete and still-running runs are counted in
the row they belong to ("3 (1 failed)"), never dropped silently; the CLI lists them with the
reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from tabulate import tabulate

from rnnbench.records import read_metrics, read_profile, read_summary  # one source of truth for a status


COUNTED = ("failed", "diverged", "incomplete", "running")  # statuses shown next to n
SUMMARY_FIELDS = (
    "status", "error", "diverged_at", "task", "cell", "seed", "steps", "wall_time_s", "num_params",
    "throughput_steps_per_s", "main_metric", "main_metric_mode", "memoryless_baseline",
)
RUN_NUMBERS = ("steps", "wall_time_s", "num_params", "throughput_steps_per_s")  # usable as metrics
# Direction of a metric guessed from its name (the last path component), when neither --max/--min
# nor summary.json's main_metric_mode says it.
MAX_WORDS = ("accuracy", "acc", "f1", "auc")
MIN_WORDS = ("loss", "mse", "mae", "ppl", "perplexity", "bpc", "nll", "error")


class ReportError(Exception):
    """A problem of the user's input (path, key, metric): reported as one line, exit code 2."""


# --------------------------------------------------------------------------------------------
# Run folders -> DataFrame


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
    """Hydra override "key=value" (also "+key=", "++key=", "~key") -> (key, typed value)."""
    key, _, value = text.partition("=")
    return key.strip().lstrip("+~"), _parse_value(value)


def _parse_value(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() == "null":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The resolved ``config.yaml`` of the run, else Hydra's ``.hydra/config.yaml``."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            cfg = OmegaConf.load(path)
            try:
                return OmegaConf.to_container(cfg, resolve=True)
            except OmegaConfBaseException:  # e.g. ${hydra:...}, which only resolves inside Hydra
                return OmegaConf.to_container(cfg, resolve=False)
    return {}


def _flatten(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_seed_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed"


def _run_row(run_dir: Path) -> dict[str, Any]:
    try:
        summary = read_summary(run_dir)
    except FileNotFoundError:  # Hydra made the folder; the run never wrote its first summary
        summary = {"status": "incomplete"}
    except ValueError as error:  # not JSON: written by hand or by something else than records.py
        summary = {"status": "incomplete", "error": f"unreadable summary.json: {error}"}
    cfg = _flatten(_read_config(run_dir), "cfg.")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_file)) or []]
    else:
        overrides = [str(o) for o in summary.get("overrides") or []]
    override_values = dict(parse_override(o) for o in overrides)

    row: dict[str, Any] = {"run_dir": str(run_dir)}
    row.update({field: summary.get(field) for field in SUMMARY_FIELDS})
    for section in ("final", "best", "best_step"):
        row.update({f"{section}/{k}": v for k, v in (summary.get(section) or {}).items()})
    if row["seed"] is None:  # no summary yet: the seed is in the config
        row["seed"] = next((v for k, v in {**cfg, **override_values}.items() if _is_seed_key(k)), None)
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
    ``best/<metric>``, ``best_step/<metric>``, ``overrides`` (list) and ``override_values`` (dict),
    and the config flattened with dots as ``cfg.<key>``. ``df.attrs["swept_keys"]`` holds
    `swept_keys(df)`.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
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


def _key_value(value: Any) -> Any:
    """A hashable, comparable form of a cell: missing -> None, lists -> tuples, numpy -> Python."""
    if isinstance(value, (list, tuple)):
        return tuple(_key_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _key_value(v)) for k, v in value.items()))
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def swept_keys(df: pd.DataFrame) -> list[str]:
    """Override keys whose value differs between runs, in the order they were first written."""
    keys = dict.fromkeys(k for values in df["override_values"] for k in values)
    return [k for k in keys if len({_key_value(v) for v in df[k]}) > 1]


# --------------------------------------------------------------------------------------------
# Statistics


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(values of `keys`, runs) for each distinct combination, in sorted order."""
    labels = [tuple(_key_value(df.at[i, k]) for k in keys) for i in df.index]
    order = sorted(set(labels), key=lambda values: tuple(_sort_key(v) for v in values))
    return [(values, df[[label == values for label in labels]]) for values in order]


def _resolve_key(df: pd.DataFrame, key: str) -> str:
    for candidate in (key, f"cfg.{key}"):
        if candidate in df.columns:
            return candidate
    swept = ", ".join(swept_keys(df)) or "none"
    raise ReportError(f"unknown key {key!r}; swept keys: {swept} (any config key works, e.g. model.hidden_size)")


def available_metrics(df: pd.DataFrame) -> list[str]:
    sections = [c for c in df.columns if c.startswith(("final/", "best/", "best_step/"))]
    return sections + [c for c in RUN_NUMBERS if c in df.columns and df[c].notna().any()]


def display_name(metric: str) -> str:
    return metric.removeprefix("final/")


def resolve_metric(df: pd.DataFrame, name: str) -> str:
    """"val/loss" -> "final/val/loss"; "best/val/loss" and "wall_time_s" as they are."""
    available = available_metrics(df)
    for candidate in (name, f"final/{name}"):
        if candidate in available:
            return candidate
    names = ", ".join(display_name(m) for m in available) or "none"
    raise ReportError(f"unknown metric {name!r}; available: {names}")


def _most_common(series: pd.Series) -> Any:
    values = [v for v in series if _key_value(v) is not None] if series is not None else []
    return Counter(values).most_common(1)[0][0] if values else None


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The final main metric (summary.json's ``main_metric``) and the final loss."""
    columns = set(df.columns)
    main = _most_common(df.get("main_metric"))
    metrics = [f"final/{main}"] if main and f"final/{main}" in columns else []
    loss = next((m for m in ("final/val/loss", "final/train/loss") if m in columns), None)
    if loss and loss not in metrics:
        metrics.append(loss)
    metrics = metrics or [c for c in df.columns if c.startswith("final/")]
    if not metrics:
        raise ReportError("no run has final metrics in its summary.json (are they all incomplete?)")
    return metrics


def metric_mode(metric: str, df: pd.DataFrame | None = None, modes: dict[str, str] | None = None) -> str | None:
    """"max" or "min": from `modes` (by column or plain name), then summary.json's
    ``main_metric_mode`` for the main metric, then the name; None when nothing says."""
    name = metric.split("/", 1)[1] if metric.startswith(("final/", "best/")) else metric
    modes = modes or {}
    for key in (metric, name):
        if key in modes:
            return modes[key]
    if df is not None and name == _most_common(df.get("main_metric")):
        mode = _most_common(df.get("main_metric_mode"))
        if mode in ("max", "min"):
            return mode
    leaf = name.rsplit("/", 1)[-1].lower()
    if any(word in leaf for word in MAX_WORDS):
        return "max"
    if any(word in leaf for word in MIN_WORDS):
        return "min"
    return None


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than 2 values a side.

    t = (mean_a - mean_b) / sqrt(s_a²/n_a + s_b²/n_b), with Welch–Satterthwaite degrees of freedom
    nu; p = P(|T_nu| > |t|) = I_{nu/(nu+t²)}(nu/2, 1/2), the regularized incomplete beta function.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return math.nan
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    nu = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _betainc(nu / 2, 0.5, nu / (nu + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes, 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # the fraction converges fast here; else use I_x(a,b) = 1 - I_{1-x}(b,a)
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),  # odd step
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def parse_reference(reference: str | dict[str, Any]) -> dict[str, Any]:
    """"cell=lstm,model.hidden_size=128" -> {"cell": "lstm", "model.hidden_size": 128}."""
    if isinstance(reference, dict):
        return dict(reference)
    pairs = [parse_override(p) for p in _as_list(reference)]
    if not pairs or any(not key for key, _ in pairs):
        raise ReportError(f"--reference wants key=value[,key=value...], got {reference!r}")
    return dict(pairs)


def label(value: Any) -> str:
    """How a key's value is shown: 0.001 not 0.0010000, "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(label(v) for v in value) + "]"
    return str(value)


def summarize(
    df: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    cols: str | Sequence[str] | None = None,
    reference: str | dict[str, Any] | None = None,
    modes: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per group of runs: mean ± sample std of each metric over the completed runs.

    by: group keys (default: the swept keys except seeds and `cols`); cols: keys that the
    rendered table pivots into columns (the groups are by + cols); metrics: names as in
    `resolve_metric` (default: `default_metrics`); reference: a row, e.g. "cell=lstm", that every
    row of the same column group is compared with by Welch's t-test; modes: {metric: "max"|"min"}
    overriding `metric_mode`.

    Columns: the keys, ``n`` (completed runs), ``n_failed``, ``n_diverged``, ``n_incomplete``,
    ``n_running``, then per metric ``<m> mean``, ``<m> std`` (NaN for n < 2), ``<m> best`` (the
    best mean of its column group, by the metric's direction, when the group has two or more) and, with a reference, ``<m> p``.
    ``attrs`` keeps rows, cols, metrics, modes and reference for `render`.
    """
    cols = [_resolve_key(df, k) for k in _as_list(cols)]
    if by is None:
        by = [k for k in swept_keys(df) if not _is_seed_key(k) and k not in cols]
    by = [_resolve_key(df, k) for k in _as_list(by)]
    metrics = default_metrics(df) if metrics is None else [resolve_metric(df, m) for m in _as_list(metrics)]
    directions = {m: metric_mode(m, df, modes) for m in metrics}

    rows, values = [], []  # values[i][m]: the completed runs' values of row i
    for key, runs in _groups(df, by + cols):
        done = runs[runs["status"] == "completed"]
        row = dict(zip(by + cols, key))
        row["n"] = len(done)
        row.update({f"n_{status}": int((runs["status"] == status).sum()) for status in COUNTED})
        values.append({})
        for m in metrics:
            x = pd.to_numeric(done[m], errors="coerce").to_numpy(float)  # "nan" strings -> NaN
            x = x[~np.isnan(x)]
            values[-1][m] = x
            row[f"{m} mean"] = x.mean() if len(x) else math.nan
            row[f"{m} std"] = x.std(ddof=1) if len(x) > 1 else math.nan
        rows.append(row)
    stats = pd.DataFrame(rows)
    blocks = [runs.index for _, runs in _groups(stats, cols)]  # rows that share a column of the table

    for m in metrics:
        mean = stats[f"{m} mean"]
        best = pd.Series(False, index=stats.index)
        if directions[m] is not None:
            for block in blocks:
                if mean[block].notna().sum() < 2:  # nothing to compare with
                    continue
                target = mean[block].max() if directions[m] == "max" else mean[block].min()
                best[block] = mean[block] == target
        stats[f"{m} best"] = best

    if reference is not None:
        reference = {_resolve_key(df, k): v for k, v in parse_reference(reference).items()}
        outside = [k for k in reference if k not in by]
        if outside:
            raise ReportError(f"reference key {outside[0]!r} is not a row key ({', '.join(by) or 'none'})")
        matches = [i for i in stats.index if all(label(stats.at[i, k]) == label(v) for k, v in reference.items())]
        if not matches:
            raise ReportError(f"no row matches the reference {_reference_text(reference)}")
        for m in metrics:
            stats[f"{m} p"] = math.nan
        for block in blocks:
            in_block = [i for i in matches if i in block]
            if len(in_block) > 1:
                raise ReportError(f"reference {_reference_text(reference)} matches several rows; name every row key")
            for i in block if in_block else []:
                for m in metrics:
                    if i != in_block[0]:
                        stats.at[i, f"{m} p"] = welch_p_value(values[i][m], values[in_block[0]][m])

    per_metric = [f"{m} {s}" for m in metrics for s in ("mean", "std", "best", "p") if f"{m} {s}" in stats]
    stats = stats[[*by, *cols, "n", *(f"n_{s}" for s in COUNTED), *per_metric]]
    stats.attrs = {"rows": by, "cols": cols, "metrics": metrics, "modes": directions, "reference": reference}
    return stats


def _reference_text(reference: dict[str, Any]) -> str:
    return ",".join(f"{k}={label(v)}" for k, v in reference.items())


# --------------------------------------------------------------------------------------------
# Tables


class _Style(NamedTuple):
    bold: Any  # str -> str
    plus_minus: str
    missing: str
    escape: Any  # str -> str


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


MARKDOWN = _Style(bold="**{}**".format, plus_minus=" ± ", missing="–", escape=lambda s: s.replace("|", r"\|"))
LATEX = _Style(bold=r"\textbf{{{}}}".format, plus_minus=r" $\pm$ ", missing="--", escape=latex_escape)


def _n_text(row: pd.Series) -> str:
    others = [f"{row[f'n_{s}']} {s}" for s in COUNTED if row[f"n_{s}"]]
    return f"{row['n']}" + (f" ({', '.join(others)})" if others else "")


def _p_text(p: float, precision: int, style: _Style) -> str:
    if math.isnan(p):
        return style.missing
    floor = 10.0**-precision
    return f"<{floor:.{precision}f}" if p < floor / 2 else f"{p:.{precision}f}"


def _table_cells(stats: pd.DataFrame, precision: int, style: _Style) -> tuple[list[str], list[list[str]], int]:
    """Header, body and the number of key columns of the table as it is shown."""
    rows, cols, metrics = stats.attrs["rows"], stats.attrs["cols"], stats.attrs["metrics"]
    reference = stats.attrs.get("reference")
    row_groups, col_groups = _groups(stats, rows), _groups(stats, cols)

    def mean_text(mean: float) -> str:
        return f"{mean:.{precision}f}"

    # Bold every mean that reads like the best one: ties at the shown precision are ties.
    best_texts = {
        (j, m): {mean_text(v) for v in block.loc[block[f"{m} best"], f"{m} mean"]}
        for j, (_, block) in enumerate(col_groups)
        for m in metrics
    }
    key_header = [style.escape(k.removeprefix("cfg.")) for k in rows] or ["runs"]
    header = list(key_header)
    for col_key, _ in col_groups:
        prefix = ", ".join(label(v) if len(cols) == 1 else f"{k}={label(v)}" for k, v in zip(cols, col_key))
        for m in metrics:
            name = " ".join(filter(None, [prefix, display_name(m) if len(metrics) > 1 or not prefix else ""]))
            header.append(style.escape(name))
            if reference is not None:
                header.append(style.escape(" ".join(filter(None, [prefix, "p", display_name(m) if len(metrics) > 1 else ""]))))
        header.append(style.escape(" ".join(filter(None, [prefix, "n"]))))

    body = []
    for row_key, row_block in row_groups:
        line = [style.escape(label(v)) for v in row_key] or ["all"]
        for j, (_, col_block) in enumerate(col_groups):
            index = row_block.index.intersection(col_block.index)
            if len(index) == 0:  # this combination was not run
                line += [""] * (len(metrics) * (2 if reference is not None else 1) + 1)
                continue
            row = stats.loc[index[0]]
            for m in metrics:
                mean, std = row[f"{m} mean"], row[f"{m} std"]
                if math.isnan(mean):
                    line.append(style.missing)
                else:
                    text = mean_text(mean) + style.plus_minus + (style.missing if math.isnan(std) else mean_text(std))
                    line.append(style.bold(text) if mean_text(mean) in best_texts[j, m] else text)
                if reference is not None:
                    is_reference = all(label(row[k]) == label(v) for k, v in reference.items())
                    line.append("ref" if is_reference else _p_text(row[f"{m} p"], precision, style))
            line.append(_n_text(row))
        body.append(line)
    return header, body, len(key_header)


def to_markdown(stats: pd.DataFrame, precision: int = 3) -> str:
    header, body, n_keys = _table_cells(stats, precision, MARKDOWN)
    align = ["left"] * n_keys + ["right"] * (len(header) - n_keys)
    return tabulate(body, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def to_latex(stats: pd.DataFrame, precision: int = 3) -> str:
    """A booktabs ``tabular``, ready to paste into a paper (needs ``\\usepackage{booktabs}``)."""
    header, body, n_keys = _table_cells(stats, precision, LATEX)
    lines = [
        rf"\begin{{tabular}}{{{'l' * n_keys}{'r' * (len(header) - n_keys)}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(line) + r" \\" for line in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(stats: pd.DataFrame) -> str:
    """The numbers of `summarize` at full precision, one line per group."""
    return stats.to_csv(index=False)


def render(stats: pd.DataFrame, fmt: str = "md", precision: int = 3) -> str:
    if fmt == "md":
        return to_markdown(stats, precision)
    if fmt == "latex":
        return to_latex(stats, precision)
    if fmt == "csv":
        return to_csv(stats)
    raise ReportError(f"unknown format {fmt!r} (md, latex or csv)")


# --------------------------------------------------------------------------------------------
# Figures


def _group_label(keys: Sequence[str], values: tuple) -> str:
    if len(keys) == 1:
        return label(values[0])
    return ", ".join(f"{k.removeprefix('cfg.')}={label(v)}" for k, v in zip(keys, values)) or "all runs"


def write_figures(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    keys: Sequence[str],
    curve: str | None = None,
    layer: str = "layer0",
) -> tuple[list[Path], list[str]]:
    """Learning curves of `curve` and the temporal gradient profile of `layer`, one line per group
    of completed runs (grouped by `keys`), as PNG and PDF in `out_dir`.

    curve defaults to the main metric (e.g. ``val/accuracy``) if logged, else ``train/loss``.
    Returns the files written and notes on figures left out for want of data.
    """
    from rnnbench import plots

    out_dir = Path(out_dir)
    groups = [(_group_label(keys, values), runs) for values, runs in _groups(df[df["status"] == "completed"], keys)]
    written, notes = [], []

    histories = {d: pd.DataFrame(read_metrics(d)) for _, runs in groups for d in runs["run_dir"]}
    logged = sorted(set().union(*(h.columns for h in histories.values())) - {"step", "time_s"})
    if curve is None:
        main = _most_common(df.get("main_metric"))
        curve = main if main in logged else "train/loss"
        if curve not in logged:
            notes.append("no learning curves: no completed run logged the main metric or train/loss")
    elif curve not in logged:
        raise ReportError(f"unknown curve metric {curve!r}; logged: {', '.join(logged) or 'none'}")
    if curve in logged:
        curves = {}
        for name, runs in groups:
            series = []
            for d in runs["run_dir"]:
                history = histories[d]
                if curve in history.columns:
                    points = history[["step", curve]].dropna().drop_duplicates("step", keep="last")
                    series.append(pd.to_numeric(points[curve], errors="coerce").set_axis(points["step"]))
            if series:
                curves[name] = series
        written += plots.learning_curves(curves, curve, out_dir / f"learning_curves_{curve.replace('/', '_')}")

    profiles = {name: [read_profile(d) for d in runs["run_dir"] if (Path(d) / "profile.json").is_file()] for name, runs in groups}
    layers = sorted({k for runs in profiles.values() for p in runs for k in p.get("layers", {})})
    if not layers:
        notes.append("no gradient profiles: no completed run has a profile.json")
    elif layer not in layers:
        raise ReportError(f"unknown profile layer {layer!r}; available: {', '.join(layers)}")
    else:
        lines = {name: [p["layers"][layer] for p in runs if layer in p.get("layers", {})] for name, runs in profiles.items()}
        lines = {name: runs for name, runs in lines.items() if runs}
        written += plots.gradient_profiles(lines, layer, out_dir / f"gradient_profile_{layer}")
    return written, notes


# --------------------------------------------------------------------------------------------
# Runs that did not complete, and why


def not_completed(df: pd.DataFrame) -> list[str]:
    """One line per run that is not ``completed``: its folder name, the swept keys that set it
    apart, its status and why (the error recorded in summary.json, or the step it diverged at)."""
    keys = df.attrs.get("swept_keys") or swept_keys(df)
    lines = []
    for _, row in df[df["status"] != "completed"].iterrows():
        where = " ".join(f"{k}={label(_key_value(row[k]))}" for k in keys)
        if row["status"] == "diverged":
            step = _key_value(row.get("diverged_at"))
            why = "" if step is None else f"at step {int(step)}"
        else:
            why = row.get("error") if isinstance(row.get("error"), str) else ""
        lines.append(f"{Path(row['run_dir']).name} [{where}]: {row['status']}" + (f": {why}" if why else ""))
    return lines


# --------------------------------------------------------------------------------------------
# Hyperparameter importance (after an Optuna search)
#
# Optuna's default evaluator, fANOVA (the analysis of Greff et al. 2016, "LSTM: A Search Space
# Odyssey"), fails in optuna 2.10 (the newest hydra-optuna-sweeper 1.3 allows) with numpy 2
# ("setting an array element with a sequence"); mean decrease in impurity of a random forest
# fitted to the same trials works, and answers the same question: which hyperparameter explains
# most of the variance of the objective.


@contextlib.contextmanager
def _quiet_optuna_import() -> Iterator[None]:
    """optuna 2.10 imports SQLAlchemy's old declarative_base: a DeprecationWarning that is not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def search_space(params: dict[str, Any] | None, arguments: Sequence[str] = ()) -> dict[str, Any]:
    """The Optuna distributions of a search, built as hydra-optuna-sweeper builds them: from
    ``hydra.sweeper.params`` (e.g. ``optim.lr: tag(log, interval(1e-4, 1e-1))``) and the command
    line's overrides, where a plain value fixes a key and so removes it from the search."""
    with _quiet_optuna_import():
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    overrides = [f"{k}={v}" for k, v in (params or {}).items()] + [str(a) for a in arguments]
    distributions, fixed = create_params_from_overrides(overrides)
    return {k: d for k, d in distributions.items() if k not in fixed}


def optuna_search(hydra_cfg: Any) -> tuple[dict[str, Any], str] | None:
    """(distributions, direction) of the Optuna search described by a ``hydra`` config node (the
    sweep's, with the command line in ``overrides.task``), or None if its sweeper is not Optuna."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_", "")):
        return None
    direction = sweeper.get("direction", "minimize")
    if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction):
        raise ReportError("importance needs a single objective; this search has several directions")
    direction = getattr(direction, "name", str(direction)).rsplit(".", 1)[-1]  # Direction.minimize
    overrides = (hydra_cfg.get("overrides") or {}).get("task") or []
    return search_space(sweeper.get("params"), list(overrides)), direction


def find_search(path: str | os.PathLike) -> tuple[dict[str, Any], str] | None:
    """The Optuna search of a sweep folder, from its ``multirun.yaml`` (which `SweepSummary`
    writes for every sweeper, with the command line), else from a job's ``.hydra/hydra.yaml``
    (``hydra.sweeper.params`` only: a search dimension given on the command line is not there)."""
    path = Path(path)
    candidates = [path / "multirun.yaml"] + [d / ".hydra" / "hydra.yaml" for d in find_run_dirs(path)[:1]]
    for file in candidates:
        if file.is_file():
            cfg = OmegaConf.load(file)
            if file.name == "hydra.yaml":
                with open_dict(cfg):
                    cfg.hydra.overrides.task = []  # a job's own values, not the search's dimensions
            return optuna_search(OmegaConf.to_container(cfg.hydra, resolve=False))
    return None


def param_importance(
    df: pd.DataFrame,
    distributions: dict[str, Any],
    direction: str = "minimize",
    metric: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Importance of each searched hyperparameter for `metric`, from the completed runs of `df`.

    The study is rebuilt from the run folders: one Optuna trial per completed run, its parameters
    the run's values of the searched keys, its value the final `metric` (default: the main metric,
    the value the app returned to the sweeper). Returns ``{"importances": {key: share, ...}``
    (sums to 1, most important first), ``"metric"``, ``"direction"``, ``"n_trials"``,
    ``"evaluator"``, ``"search_space"``}.
    """
    with _quiet_optuna_import():
        import optuna
        from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances

    metric = resolve_metric(df, metric) if metric else default_metrics(df)[0]
    missing = [k for k in distributions if k not in df.columns]
    if missing:
        raise ReportError(f"searched keys not found in the runs: {', '.join(missing)}")
    done = df[df["status"] == "completed"]
    values = pd.to_numeric(done[metric], errors="coerce")
    done = done[values.notna() & np.isfinite(values)]
    if len(done) < 2:
        raise ReportError(f"importance needs at least 2 completed runs with {display_name(metric)}; found {len(done)}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction=direction)
        for _, row in done.iterrows():
            params = {k: _key_value(row[k]) for k in distributions}
            try:
                trial = optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[metric]))
            except ValueError as error:  # a value outside the search space: the space changed since
                raise ReportError(f"{Path(row['run_dir']).name}: {error}") from error
            study.add_trial(trial)
        evaluator = MeanDecreaseImpurityImportanceEvaluator(seed=seed)
        importances = get_param_importances(study, evaluator=evaluator)
    return {
        "metric": display_name(metric), "direction": direction, "n_trials": len(done),
        "evaluator": type(evaluator).__name__,
        "importances": {k: float(v) for k, v in importances.items()},
        "search_space": {k: repr(d) for k, d in distributions.items()},
    }


def importance_text(result: dict[str, Any], precision: int = 2) -> str:
    """"hyperparameter importance for val/loss (12 trials, mean decrease impurity): optim.lr 0.71, ..."."""
    shares = ", ".join(f"{k} {v:.{precision}f}" for k, v in result["importances"].items())
    return (f"hyperparameter importance for {result['metric']} ({result['n_trials']} trials, "
            f"{result['evaluator']}): {shares}")


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnbench.report",
        description="Tables (mean ± std over seeds) and figures from run and sweep folders.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep folders, searched recursively")
    parser.add_argument("--rows", help="comma-separated group keys (default: the swept keys except seeds); '' for one row")
    parser.add_argument("--cols", help="comma-separated keys pivoted into columns")
    parser.add_argument("--metrics", help="comma-separated metrics, e.g. val/accuracy,best/val/loss,wall_time_s "
                        "(default: the final main metric and loss)")
    parser.add_argument("--precision", type=int, default=3, help="digits after the point (default 3)")
    parser.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the table here instead of stdout")
    parser.add_argument("--reference", metavar="KEY=VALUE,...",
                        help="row that every row is compared with (Welch's t-test, p-value columns)")
    parser.add_argument("--max", metavar="METRICS", help="comma-separated metrics where higher is better")
    parser.add_argument("--min", metavar="METRICS", help="comma-separated metrics where lower is better")
    parser.add_argument("--figures", metavar="DIR", help="write learning curves and gradient profiles (PNG, PDF) here")
    parser.add_argument("--curve", metavar="METRIC",
                        help="metric of the learning curves (default: the main metric, else train/loss)")
    parser.add_argument("--layer", default="layer0", help="profile.json layer of the gradient figure (default layer0)")
    parser.add_argument("--importance", action="store_true",
                        help="after an Optuna search: the importance of each searched hyperparameter for the main "
                        "metric (or the first of --metrics)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        df = load_runs(args.paths)
        modes = {m: "max" for m in _as_list(args.max)} | {m: "min" for m in _as_list(args.min)}
        for m in modes:
            resolve_metric(df, m)  # an unknown name is an error, not a silent no-op
        by = None if args.rows is None else _as_list(args.rows)
        stats = summarize(df, by=by, metrics=args.metrics and _as_list(args.metrics), cols=args.cols,
                          reference=args.reference, modes=modes)
        text = render(stats, args.format, args.precision)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        for line in not_completed(df):  # on stderr: stdout stays a table to paste
            print(f"not completed: {line}", file=sys.stderr)
        if args.importance:
            search = next((s for s in map(find_search, args.paths) if s), None)
            if search is None:
                raise ReportError("--importance: no Optuna search found (no multirun.yaml or .hydra/hydra.yaml "
                                  "with an Optuna sweeper under the given paths)")
            metric = _as_list(args.metrics)[0] if args.metrics else None
            print(importance_text(param_importance(df, *search, metric=metric)), file=sys.stderr)
        if args.figures:
            written, notes = write_figures(df, args.figures, stats.attrs["rows"] + stats.attrs["cols"],
                                           curve=args.curve, layer=args.layer)
            for line in [f"wrote {p}" for p in written] + [f"note: {n}" for n in notes]:
                print(line, file=sys.stderr)
    except (ReportError, OSError) as error:
        print(f"rnnbench.report: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
