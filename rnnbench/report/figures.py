"""Figures of a sweep, drawn from what the report has read from the run folders: learning curves
and temporal gradient profiles, one line per group of completed runs.

Each figure is written as PNG (for a look) and PDF (for a paper). Figures are built on matplotlib's
object API with the Agg canvas, so nothing here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from rnnbench.records.run_folder import read_metrics, read_profile
from rnnbench.report.gates import saturation_figure
from rnnbench.report.lengths import LENGTH_COLUMN, length_columns, length_figure
from rnnbench.report.plotting import group_label, line_style, metric_label, new_figure, save_figure, styled, taken_at
from rnnbench.report.runs import ReportError, groups
from rnnbench.report.stats import most_common


@styled
def learning_curves(curves: dict[str, list[pd.Series]], metric: str, stem: Path, task: str | None = None) -> list[Path]:
    """`metric` against step: per group, the mean over its runs and a ±1 std band (ddof=1).

    curves: {group label: [one Series per run, indexed by step]}.
    """
    fig, ax = new_figure()
    for i, (name, runs) in enumerate(curves.items()):
        table = pd.concat(runs, axis=1, ignore_index=True).sort_index()  # (steps, runs), NaN where not logged
        mean, std = table.mean(axis=1), table.std(axis=1, ddof=1)
        style = line_style(i)
        ax.plot(mean.index, mean, label=f"{name} (n={len(runs)})", markevery=max(1, len(mean) // 8), **style)
        ax.fill_between(mean.index, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
    ax.set(xlabel="training step", ylabel=metric_label(metric, task))
    ax.set_title("mean ± std over seeds", fontsize="small")
    ax.legend()
    return save_figure(fig, stem)


@styled
def gradient_profiles(profiles: dict[str, list[Sequence[float]]], layer: str, stem: Path,
                      steps: Sequence[int] = ()) -> list[Path]:
    """‖∂L/∂h_t‖ against t on a log scale: per group, the geometric mean over runs and a ±1 std band
    of log10 (gradients decay or explode geometrically, so their spread is multiplicative). `steps`:
    the training steps the profiles were taken at (said in the title).

    profiles: {group label: [one profile per run, ‖∂L/∂h_t‖ for t = 1..T]}.
    """
    fig, ax = new_figure()
    for i, (name, runs) in enumerate(profiles.items()):
        length = max(len(p) for p in runs)
        norms = np.full((len(runs), length), np.nan)  # (runs, T), NaN-padded when T differs
        for j, p in enumerate(runs):
            norms[j, : len(p)] = np.asarray(p, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_norms = np.log10(np.where(norms > 0, norms, np.nan))  # a zero gradient has no log
        mean = pd.DataFrame(log_norms).mean(axis=0).to_numpy()
        std = pd.DataFrame(log_norms).std(axis=0, ddof=1).to_numpy()
        t = np.arange(1, length + 1)
        style = line_style(i)
        ax.plot(t, 10**mean, label=f"{name} (n={len(runs)})", markevery=max(1, length // 8), **style)
        ax.fill_between(t, 10 ** (mean - std), 10 ** (mean + std), color=style["color"], alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="time step t", ylabel=r"$\|\partial L / \partial h_t\|$")
    ax.set_title(f"temporal gradient profile ({layer}), {taken_at(steps)}", fontsize="small")
    ax.legend()
    return save_figure(fig, stem)


def write_figures(
    df: pd.DataFrame,
    out_dir: str | os.PathLike,
    keys: Sequence[str],
    curve: str | None = None,
    layer: str = "layer0",
    length_metric: str | None = None,
) -> tuple[list[Path], list[str]]:
    """Learning curves of `curve` and the temporal gradient profile of `layer`, one line per group
    of completed runs (grouped by `keys`), as PNG and PDF in `out_dir`; when the runs have them, the
    length generalisation of `length_metric` (`lengths.length_figure`) and the gate saturation plane
    of `layer` (`gates.saturation_figure`).

    curve defaults to the main metric (e.g. ``val/accuracy``) if logged, else ``train/loss``.
    Returns the files written and notes on figures left out for want of data.
    """
    out_dir = Path(out_dir)
    by_group = [(group_label(keys, values), runs) for values, runs in groups(df[df["status"] == "completed"], keys)]
    written, notes = [], []

    histories = {d: pd.DataFrame(read_metrics(d)) for _, runs in by_group for d in runs["run_dir"]}
    logged = sorted(set().union(*(h.columns for h in histories.values())) - {"step", "time_s"})
    if curve is None:
        main = most_common(df.get("main_metric"))
        curve = main if main in logged else "train/loss"
        if curve not in logged:
            notes.append("no learning curves: no completed run logged the main metric or train/loss")
    elif curve not in logged:
        raise ReportError(f"unknown curve metric {curve!r}; logged: {', '.join(logged) or 'none'}")
    if curve in logged:
        curves = {}
        for name, runs in by_group:
            series = []
            for d in runs["run_dir"]:
                history = histories[d]
                if curve in history.columns:
                    points = history[["step", curve]].dropna().drop_duplicates("step", keep="last")
                    series.append(pd.to_numeric(points[curve], errors="coerce").set_axis(points["step"]))
            if series:
                curves[name] = series
        written += learning_curves(curves, curve, out_dir / f"learning_curves_{curve.replace('/', '_')}",
                                   most_common(df.get("task")))

    profiles = {name: [read_profile(d) for d in runs["run_dir"] if (Path(d) / "profile.json").is_file()] for name, runs in by_group}
    layers = sorted({k for runs in profiles.values() for p in runs for k in p.get("layers", {})})
    if not layers:
        notes.append("no gradient profiles: no completed run has a profile.json")
    elif layer not in layers:
        raise ReportError(f"unknown profile layer {layer!r}; available: {', '.join(layers)}")
    else:
        lines = {name: [p["layers"][layer] for p in runs if layer in p.get("layers", {})] for name, runs in profiles.items()}
        lines = {name: runs for name, runs in lines.items() if runs}
        steps = [p.get("step") for runs in profiles.values() for p in runs]
        written += gradient_profiles(lines, layer, out_dir / f"gradient_profile_{layer}", steps)
    if any(LENGTH_COLUMN.fullmatch(c) for c in df.columns):
        columns = length_columns(df, length_metric)
        metric = LENGTH_COLUMN.fullmatch(columns[0])["metric"]
        written += length_figure(df, keys, columns, out_dir / f"length_generalisation_{metric}", group_label)
    if layers:
        files, more = saturation_figure(df, keys, layer, out_dir / f"gate_saturation_{layer}", group_label)
        written, notes = written + files, notes + more
    return written, notes
