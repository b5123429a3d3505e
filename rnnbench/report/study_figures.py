"""A study's figure (docs/results/<study>/<study>.png), drawn from its committed records and the
``figure`` entry of its published.yaml alone: a curve against one key (with the memoryless baseline the
runs recorded), bars, the gradient profile at initialisation with clipping, or training curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rnnbench.report import study_records, verdicts
from rnnbench.report.runs import BUDGET_KEY, ReportError, groups, label, read_records, records_frame


def figure(study: str, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    published = study_records.read_published(study)
    df = records_frame(read_records(study_records.folder(study)))
    out = Path(out or study_records.folder(study) / f"{study}.png")
    spec = published["figure"]
    if spec["kind"] == "profile":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        _profile_panel(axes[0], df, spec)
        _clipping_panel(axes[1], df, spec)
    elif spec["kind"] == "bars":
        fig, ax = plt.subplots(figsize=(6, 4))
        metric = published["metric"]
        x_keys = _keys(spec["x"])
        groups = _groups(df[df["status"] == "completed"], x_keys)
        values = [verdicts.values(runs, metric) for _, runs in groups]
        ax.bar([_group_label(x_keys, x) for x, _ in groups], [v.mean() for v in values],
               yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values], capsize=4, color="tab:blue")
        for i, v in enumerate(values):  # every seed, so the spread is visible
            ax.plot([i] * len(v), v, "k.", markersize=4)
        ax.set_xlabel(", ".join(x_keys))
        ax.set_ylabel(metric)
        ax.set_yscale(spec.get("yscale", "linear"))
        ax.tick_params(axis="x", labelsize=7)
        if len(x_keys) > 1:  # "peephole, 2000 steps": long labels, slanted so they do not overlap
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        ax.set_title(spec["title"], fontsize=10)
    else:
        curves = spec.get("curves")  # a second panel: the training curves of one point, seed by seed
        fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12 if curves else 6, 4), squeeze=False)
        ax = axes[0][0]
        if curves:
            _curves_panel(axes[0][1], df, curves)
        x_key, metric = spec["x"], published["metric"]
        line_keys = _keys(spec["lines"])
        for line, runs in _groups(df[df["status"] == "completed"], line_keys):
            points = [(float(x), verdicts.values(r, metric)) for (x,), r in _groups(runs, [x_key])]
            xs = [p[0] for p in points]
            ax.errorbar(xs, [v.mean() for _, v in points], yerr=[v.std(ddof=1) if len(v) > 1 else 0 for _, v in points],
                        marker="o", capsize=3, label=_group_label(line_keys, line))
        if spec.get("baseline"):
            ax.plot(*baseline_curve(df, x_key), "k--", label="memoryless baseline")
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric.removeprefix("final/"))
        ax.set_yscale(spec.get("yscale", "linear"))
        ax.legend(fontsize=8)
        ax.set_title(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _keys(spec: str | Sequence[str]) -> list[str]:
    """A figure's `x` or `lines`: one key or a list (e.g. [cell, train.max_steps])."""
    return [spec] if isinstance(spec, str) else list(spec)


def _group_label(keys: Sequence[str], values: tuple) -> str:
    """"lstm" for one key; "lstm, 10000 steps" with the budget; else "key=value" past the first,
    left out where the runs did not set the key (the preset's value)."""
    parts = [label(values[0])]
    for key, value in zip(keys[1:], values[1:]):
        if value is None:
            continue
        parts.append(f"{label(value)} steps" if key == BUDGET_KEY else f"{key}={label(value)}")
    return ", ".join(parts)


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """`rnnbench.report.runs.groups`; a key no run set (e.g. optim.alpha in another study's records) is
    None for every run, not an error."""
    return groups(df.assign(**{k: None for k in keys if k not in df.columns}), list(keys))


def baseline_curve(df: pd.DataFrame, x_key: str) -> tuple[list[float], list[float]]:
    """The memoryless baseline at each x, as the runs recorded it (summary.json's `memoryless_baseline`,
    the task's own definition: tasks/copy.py, tasks/adding.py), so the figure never restates a formula.
    Runs at one x that recorded different baselines (another copy length, say) have no one curve: an error."""
    recorded = df[[x_key, "memoryless_baseline"]].dropna() if "memoryless_baseline" in df else df.iloc[:0]
    xs, ys = [], []
    for x, runs in recorded.groupby(x_key, sort=True):
        values = sorted(set(runs["memoryless_baseline"]))
        if len(values) > 1:
            raise ReportError(f"runs at {x_key}={x} recorded different memoryless baselines {values}: "
                              "one baseline curve cannot stand for them")
        xs.append(float(x))
        ys.append(values[0])
    if not xs:
        raise ReportError("the figure asks for the memoryless baseline, but no run recorded one")
    return xs, ys


def _profile_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """log10 ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at initialisation against T - t, mean over seeds, with γ^(T-t)."""
    gain_key = "cell.recurrent_gain"
    colours = plt_colours()
    for i, ((cell, gain), runs) in enumerate(_groups(df[df["status"] == "completed"], ["cell", gain_key])):
        profiles = [np.asarray(p["layer0"], float) for p in runs["profile_init"] if isinstance(p, dict)]
        if not profiles:
            continue
        with np.errstate(divide="ignore"):
            ratios = np.mean([np.log10(p / p[-1]) for p in profiles], axis=0)[::-1]  # index = T - t
        style = "-" if cell == "vanilla" else (":" if cell == "lstm" else "-.")
        colour = colours[[0.5, 0.9, 1.0, 1.1, 1.5].index(float(gain)) % len(colours)] if float(gain) in (0.5, 0.9, 1.0, 1.1, 1.5) else None
        ax.plot(ratios, style, color=colour, label=f"{cell} γ={gain:g}")
        if cell == "vanilla":
            steps = np.arange(len(ratios))
            ax.plot(steps, steps * math.log10(float(gain)), "--", color=colour, alpha=0.5, linewidth=0.8)
    ax.set_ylim(spec.get("ylim", [-12, 8]))
    ax.set_xlabel("T − t (steps back from the loss)")
    ax.set_ylabel("log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at init")
    ax.set_title("measured (solid: tanh; dotted LSTM, dash-dot GRU)\nand the bound γ^(T−t) (dashed)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def _clipping_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """The tanh RNN at the largest gain: gradient norm (before clipping) and training loss over the
    steps, clipped by norm against unclipped (mean over seeds)."""
    tanh = df[(df["cell"] == "vanilla") & (df["status"] == "completed")]
    gain = max(float(g) for g in tanh["cell.recurrent_gain"])
    twin = ax.twinx()
    for i, ((mode,), runs) in enumerate(_groups(tanh[tanh["cell.recurrent_gain"].astype(float) == gain],
                                                ["train.clip_mode"])):
        curves = [np.asarray(c, float) for c in runs["train_curve"] if isinstance(c, list) and c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)  # columns: step, train/loss, grad norm
        colour = plt_colours()[i]
        ax.plot(mean[:, 0], mean[:, 2], color=colour, label=f"‖∇‖, clip_mode={mode}")
        twin.plot(mean[:, 0], mean[:, 1], "--", color=colour, label=f"train loss, clip_mode={mode}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm before clipping (solid)")
    twin.set_ylabel("training MSE (dashed)")
    ax.set_title(spec.get("clip_title", "") + f" (γ={gain:g})", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def training_curves(df: pd.DataFrame, where: dict[str, Any]) -> list[tuple[Any, np.ndarray]]:
    """(seed, rows of step, train/loss, grad norm) of each completed run at `where` that kept its
    training curve (`export --detail`), by seed."""
    runs = verdicts.matching(df, where)
    out = [(seed, np.asarray(c, float)) for seed, c in zip(runs["seed"], runs["train_curve"])
           if isinstance(c, list) and c]
    return sorted(out, key=lambda pair: pair[0])


def _curves_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """Training loss (a logged step's batch; `smooth`: running mean over that many) against step at
    one point (`spec["where"]`), one line per seed, with the memoryless baseline those runs recorded:
    the published figures' view of when a cell leaves the baseline."""
    curves = training_curves(df, spec["where"])
    smooth = int(spec.get("smooth", 1))  # a running mean over this many logged steps
    for seed, curve in curves:
        loss = pd.Series(curve[:, 1]).rolling(smooth, min_periods=1).mean()
        ax.plot(curve[:, 0], loss, linewidth=0.8, label=f"seed {seed}")
    if not curves:
        ax.text(0.5, 0.5, "no training curves in the records\n(export with --detail)", ha="center",
                transform=ax.transAxes)
    baselines = set(verdicts.values(verdicts.matching(df, spec["where"]), "memoryless_baseline"))
    if len(baselines) == 1:  # the task's own value, as each run's summary recorded it
        ax.axhline(baselines.pop(), color="k", linestyle="--", label="memoryless baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss" + (f" (running mean of {smooth} logged batches)" if smooth > 1 else ""))
    ax.set_ylim(*spec.get("ylim", [None, None]))
    ax.legend(fontsize=8)
    ax.set_title(spec["title"], fontsize=10)


def plt_colours() -> list[str]:
    return ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
