"""Length generalisation: a metric against the sequence length a model is evaluated at, per group of
runs, mean ± std over seeds (the runs' `val@T=<length>/<metric>` entries, `task.eval_lengths`).

The table is the report's own (`summarize` over the `final/val@T=<length>/<metric>` columns, lengths in
increasing order); the figure draws the same numbers, one line per group, the training length marked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rnnbench.report.plotting import BASELINE, line_style, metric_label, new_figure, save_figure, styled
from rnnbench.report.runs import ReportError, groups
from rnnbench.report.stats import most_common

LENGTH_COLUMN = re.compile(r"final/(?P<split>\w+)@T=(?P<length>\d+)/(?P<metric>.+)")


def length_columns(df: pd.DataFrame, metric: str | None = None) -> list[str]:
    """The `final/<split>@T=<length>/<metric>` columns of `metric` (default: the name of the runs'
    main metric, e.g. `loss`), by increasing length."""
    found = [(m, c) for c in df.columns if (m := LENGTH_COLUMN.fullmatch(c))]
    if not found:
        raise ReportError("no length-generalisation metrics (val@T=<length>/<metric>) in these runs: train them "
                          "with task.eval_lengths=[...]")
    if not metric:
        main = most_common(df.get("main_metric")) or "val/loss"
        metric = main.split("/", 1)[-1]
    chosen = sorted(((int(m["length"]), c) for m, c in found if m["metric"] == metric))
    if not chosen:
        names = ", ".join(sorted({m["metric"] for m, _ in found}))
        raise ReportError(f"--lengths {metric!r}: no such metric at other lengths; available: {names}")
    return [c for _, c in chosen]


@styled
def length_figure(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str], stem: Path,
                  label_of) -> list[Path]:
    """The metric of `columns` against length: per group of completed runs, the mean and a ±1 std
    band (ddof=1) over its runs; a dotted line at the training length (task.seq_len) when all agree,
    the memoryless baseline (of a loss) above the curves."""
    lengths = [int(LENGTH_COLUMN.fullmatch(c)["length"]) for c in columns]
    match = LENGTH_COLUMN.fullmatch(columns[0])
    metric = match["metric"]
    fig, ax = new_figure()
    done = df[df["status"] == "completed"]
    for i, (values, runs) in enumerate(groups(done, keys)):
        table = runs[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)  # (runs, lengths)
        mean = np.nanmean(table, axis=0)
        std = np.nanstd(table, axis=0, ddof=1) if len(table) > 1 else np.zeros_like(mean)
        style = line_style(i)
        ax.plot(lengths, mean, label=f"{label_of(keys, values)} (n={len(table)})", **style)
        ax.fill_between(lengths, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
    trained = {v for v in done.get("cfg.task.seq_len", pd.Series(dtype=float)).dropna()}
    if len(trained) == 1:
        ax.axvline(trained.pop(), color="0.5", linestyle=":", linewidth=1.0, label="training length")
    baseline = {v for v in done.get("memoryless_baseline", pd.Series(dtype=float)).dropna()}
    if metric == "loss" and len(baseline) == 1:
        ax.axhline(baseline.pop(), label="memoryless baseline", **BASELINE)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set(xlabel="evaluated at sequence length T",
           ylabel=metric_label(f"{match['split']}/{metric}", most_common(df.get("task"))))
    ax.set_title("length generalisation: mean ± std over seeds", fontsize="small")
    ax.legend()
    return save_figure(fig, stem)
