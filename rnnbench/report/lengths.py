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

from rnnbench.report.plotting import BASELINE, TWO_COLUMNS, line_style, metric_label, new_figure, save_figure, styled
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


# more groups than this in one axes hide each other (13 cells at chance are one blot): one panel each
MAX_LINES = 6
PANEL_COLUMNS = 4


@styled
def length_figure(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str], stem: Path,
                  label_of) -> list[Path]:
    """The metric of `columns` against length: per group of completed runs, the mean and a ±1 std
    band (ddof=1) over its runs; a dotted line at the training length (task.seq_len) when all agree,
    the memoryless baseline (of a loss) above the curves. Up to MAX_LINES groups share one axes; more
    get a panel each (shared axes, PANEL_COLUMNS a row), where every run is drawn too."""
    lengths = [int(LENGTH_COLUMN.fullmatch(c)["length"]) for c in columns]
    match = LENGTH_COLUMN.fullmatch(columns[0])
    metric = match["metric"]
    done = df[df["status"] == "completed"]
    found = groups(done, keys)
    if len(found) <= MAX_LINES:
        fig, ax = new_figure()
        panels = [ax] * max(1, len(found))  # no completed run: the empty axes, labelled
    else:
        rows = -(-len(found) // PANEL_COLUMNS)
        fig, grid = new_figure(TWO_COLUMNS, height=1.45 * rows + 0.5, panels=PANEL_COLUMNS, rows=rows,
                               sharex=True, sharey=True)
        panels = list(grid.flat)
        for ax in panels[len(found):]:
            ax.set_visible(False)
    trained = {v for v in done.get("cfg.task.seq_len", pd.Series(dtype=float)).dropna()}
    baseline = {v for v in done.get("memoryless_baseline", pd.Series(dtype=float)).dropna()}
    for i, (values, runs) in enumerate(found):
        ax = panels[i]
        table = runs[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)  # (runs, lengths)
        mean = np.nanmean(table, axis=0)
        std = np.nanstd(table, axis=0, ddof=1) if len(table) > 1 else np.zeros_like(mean)
        style = line_style(i if len(found) <= MAX_LINES else 0)
        name = f"{label_of(keys, values)} (n={len(table)})"
        ax.plot(lengths, mean, label=name, **style)
        ax.fill_between(lengths, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
        if len(found) > MAX_LINES:
            for run in table:  # every seed: three seeds' mean hides whether one solved it and two did not
                ax.plot(lengths, run, color="0.55", linewidth=0.6, zorder=1)
            ax.set_title(name.replace(", ", "\n", 1), fontsize="x-small")  # the group, then its setting
    for ax in dict.fromkeys(panels):  # each axes once
        if len(trained) == 1:
            ax.axvline(next(iter(trained)), color="0.5", linestyle=":", linewidth=1.0, label="training length")
        if metric == "loss" and len(baseline) == 1:
            ax.axhline(next(iter(baseline)), label="memoryless baseline", **BASELINE)
        if len(lengths) < 3 or len(set(np.diff(lengths))) > 1:  # doubling lengths: a log axis; evenly spaced: linear
            ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_tick_params(labelbottom=True)  # on every panel: the last row may be short
    xlabel = "evaluated at sequence length T"
    ylabel = metric_label(f"{match['split']}/{metric}", most_common(df.get("task")))
    title = "length generalisation: mean ± std over seeds"
    if len(found) <= MAX_LINES:
        panels[0].set(xlabel=xlabel, ylabel=ylabel)
        panels[0].set_title(title, fontsize="small")
        panels[0].legend()
    else:
        fig.supxlabel(xlabel, fontsize="small")
        fig.supylabel(ylabel, fontsize="small")
        fig.suptitle(f"{title} (band), each seed (grey); dotted: the longest training length", fontsize="small")
    return save_figure(fig, stem)
