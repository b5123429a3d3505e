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
from rnnbench.report.plotting import (BASELINE, COLOURS, DPI, ONE_COLUMN, TWO_COLUMNS, key_label, line_style,
                                      metric_label, new_figure, save_figure, styled)
from rnnbench.report.stats import most_common
from rnnbench.report.runs import BUDGET_KEY, ReportError, groups, label, read_records, records_frame


@styled
def figure(study: str, out: Path | None = None) -> Path:
    """Draw the study's figure; writes `out` (default docs/results/<study>/<study>.png, 300 dpi) and the
    PDF beside it; returns the PNG's path. One panel is one column of a paper wide, two are the full width."""
    published = study_records.read_published(study)
    df = records_frame(read_records(study_records.folder(study)))
    out = Path(out or study_records.folder(study) / f"{study}.png")
    spec = published["figure"]
    metric = published.get("metric", "")
    task = most_common(df.get("task"))
    done = verdicts.compared_runs(df)
    if spec["kind"] == "profile":
        fig, axes = new_figure(TWO_COLUMNS, panels=2, height=3.0)
        _profile_panel(axes[0], df, spec)
        _clipping_panel(axes[1], df, spec)
    elif spec["kind"] == "bars":
        x_keys = _keys(spec["x"])
        if spec.get("panels"):  # one panel per value of a key (study 8: a language each), the same y
            panel_key = spec["panels"]
            by_panel = _groups(done, [panel_key])
            fig, axes = new_figure(TWO_COLUMNS, height=2.8, panels=len(by_panel), sharey=True)
            axes = axes if len(by_panel) > 1 else [axes]
            for ax, ((value,), runs) in zip(axes, by_panel):
                _bars_panel(ax, runs, [k for k in x_keys if k != panel_key], spec, metric, task)
                ax.set_title(label(value), fontsize="small")
            for ax in axes:
                ax.set_ylabel("")
            fig.supylabel(metric_label(metric, task), fontsize="small")
            fig.suptitle(spec["title"] + " (mean ± std over seeds; grey: each seed)", fontsize="small")
        else:
            groups = _groups(done, x_keys)
            fig, ax = new_figure(ONE_COLUMN if len(groups) <= 6 else TWO_COLUMNS, height=2.8)
            _bars_panel(ax, done, x_keys, spec, metric, task)
            ax.set_title(spec["title"] + "\n(mean ± std over seeds; grey: each seed)")
    else:
        curves = spec.get("curves")  # a second panel: the training curves of one point, seed by seed
        line_keys = _keys(spec["lines"])
        many = len(_groups(done, line_keys)) > 6  # the legend beside the axes, on the full width
        fig, axes = new_figure(TWO_COLUMNS if curves or many else ONE_COLUMN, panels=2 if curves else 1, height=3.0)
        ax = axes[0] if curves else axes
        if curves:
            _curves_panel(axes[1], df, curves, task)
        x_key = spec["x"]
        for i, (line, runs) in enumerate(_groups(done, line_keys)):
            points = [(float(x), verdicts.values(r, metric)) for (x,), r in _groups(runs, [x_key])]
            xs = [p[0] for p in points]
            style = line_style(i)
            ax.errorbar(xs, [v.mean() for _, v in points], yerr=[v.std(ddof=1) if len(v) > 1 else 0 for _, v in points],
                        capsize=2.5, elinewidth=0.8, label=_group_label(line_keys, line), **style)
        if spec.get("baseline"):
            ax.plot(*baseline_curve(df, x_key), label="memoryless baseline", **BASELINE)
        ax.set_xlabel(key_label(x_key))
        ax.set_ylabel(metric_label(metric, task))
        ax.set_yscale(spec.get("yscale", "linear"))
        ax.set_xscale(spec.get("xscale", "linear"))
        if many and not curves:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5))
        else:
            ax.legend(fontsize=6)
        ax.set_title(spec["title"])
    for path in (out, out.with_suffix(".pdf")):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return out


def _bars_panel(ax, done: pd.DataFrame, x_keys: list[str], spec: dict[str, Any], metric: str, task: str | None) -> None:
    """The metric per group of `x_keys`: mean ± std over seeds and every seed beside it."""
    groups = _groups(done, x_keys)
    values = [verdicts.values(runs, metric) for _, runs in groups]
    # points, not bars: a bar's length from 0 would hide differences a tenth of its height
    for i, v in enumerate(values):
        ax.errorbar([i], [v.mean()], yerr=[v.std(ddof=1) if len(v) > 1 else 0], fmt="o", color=COLOURS[0],
                    capsize=3, markersize=4, elinewidth=1.0, zorder=4)
        jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else np.zeros(1)
        ax.plot(i + 0.25 + jitter, v, ".", color="0.35", markersize=3, zorder=5)  # every seed, beside
    ax.set_xticks(range(len(groups)), [_group_label(x_keys, x) for x, _ in groups])
    ax.set_xlabel(", ".join(key_label(k) for k in x_keys if k != "fair"))
    ax.set_ylabel(metric_label(metric, task))
    ax.set_yscale(spec.get("yscale", "linear"))
    if len(groups) > 3 or len(x_keys) > 1:  # "peephole, 2000 steps": long labels, slanted so they do not overlap
        for tick in ax.get_xticklabels():
            tick.set(rotation=30 if len(groups) <= 8 else 60, ha="right")
    ax.grid(axis="x", visible=False)
    ax.set_xlim(-0.6, len(groups) - 0.3)
    if spec.get("baseline"):  # the task's memoryless baseline, as the runs recorded it
        recorded = set(verdicts.values(done, "memoryless_baseline"))
        if len(recorded) == 1:
            ax.axhline(recorded.pop(), label="memoryless baseline", **BASELINE)
            ax.legend()


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
        if key == "fair":  # the fair comparison's stage: each cell at its own screened setting
            parts.append(_stage_label(str(value)))
        else:
            parts.append(f"{label(value)} steps" if key == BUDGET_KEY else f"{key_label(key)}={label(value)}")
    return ", ".join(parts)


def _stage_label(stage: str) -> str:
    """A fair comparison's stage, short: "tuned" (final), "tuned on a 1000-step screen" (final chosen by
    a screen of train.max_steps=1000), else the stage."""
    if not stage.startswith("final"):
        return stage
    screen = stage.removeprefix("final").strip(" ()").removeprefix("screen").strip()
    if not screen:
        return "tuned"
    words = [f"{o.split('=', 1)[1]}-step" if o.startswith(f"{BUDGET_KEY}=") else o for o in screen.split()]
    return f"tuned on a {' '.join(words)} screen"


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
    """log10 ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at initialisation against T - t, mean over seeds, with γ^(T-t): a colour
    per gain, a dash pattern and marker per cell (so "gru γ=0.5" and "tanh γ=0.5" differ in the legend)."""
    gain_key = "cell.recurrent_gain"
    cells = {"vanilla": ("-", None), "lstm": (":", "o"), "gru": ("-.", "^")}
    gains = sorted({float(g) for g in df[gain_key].dropna()})
    for (cell, gain), runs in _groups(df[df["status"] == "completed"], ["cell", gain_key]):
        profiles = [np.asarray(p["layer0"], float) for p in runs["profile_init"] if isinstance(p, dict)]
        if not profiles:
            continue
        with np.errstate(divide="ignore"):
            ratios = np.mean([np.log10(p / p[-1]) for p in profiles], axis=0)[::-1]  # index = T - t
        colour = COLOURS[gains.index(float(gain)) % len(COLOURS)]
        dash, marker = cells.get(cell, ("--", "s"))
        ax.plot(ratios, linestyle=dash, marker=marker, markevery=12, color=colour,
                label=f"{'tanh RNN' if cell == 'vanilla' else cell.upper()} γ={gain:g}")
        if cell == "vanilla":
            steps = np.arange(len(ratios))
            ax.plot(steps, steps * math.log10(float(gain)), color=colour, linestyle=(0, (2, 2)), alpha=0.6, linewidth=0.8)
    ax.set_ylim(spec.get("ylim", [-12, 8]))
    ax.set_xlabel("T − t (steps back from the loss)")
    ax.set_ylabel("log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖, at initialisation")
    ax.set_title("measured; thin dashed: the tanh RNN's bound γ^(T−t)")
    ax.legend(fontsize=5.5, ncol=2)


def _clipping_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """The tanh RNN at the largest gain: gradient norm (before clipping) and training loss over the
    steps, clipped by norm against unclipped (mean over seeds)."""
    tanh = df[(df["cell"] == "vanilla") & (df["status"] == "completed")]
    gain = max(float(g) for g in tanh["cell.recurrent_gain"])
    twin = ax.twinx()
    twin.grid(False)
    for i, ((mode,), runs) in enumerate(_groups(tanh[tanh["cell.recurrent_gain"].astype(float) == gain],
                                                ["train.clip_mode"])):
        curves = [np.asarray(c, float) for c in runs["train_curve"] if isinstance(c, list) and c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)  # columns: step, train/loss, grad norm
        style = line_style(i)
        what = "clipped by norm" if mode == "norm" else ("not clipped" if mode == "off" else f"clip_mode={mode}")
        ax.plot(mean[:, 0], mean[:, 2], color=style["color"], marker=style["marker"], markevery=5,
                label=f"‖∇‖, {what}")
        twin.plot(mean[:, 0], mean[:, 1], "--", color=style["color"], label=f"training MSE, {what}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("gradient norm before clipping (solid)")
    twin.set_ylabel("training MSE (dashed)")
    ax.set_title(spec.get("clip_title", "") + f"\nrecurrent gain γ={gain:g}")
    handles = [h for a in (ax, twin) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left")


def training_curves(df: pd.DataFrame, where: dict[str, Any]) -> list[tuple[Any, np.ndarray]]:
    """(seed, rows of step, train/loss, grad norm) of each completed run at `where` that kept its
    training curve (`export --detail`), by seed."""
    runs = verdicts.matching(df, where)
    out = [(seed, np.asarray(c, float)) for seed, c in zip(runs["seed"], runs["train_curve"])
           if isinstance(c, list) and c]
    return sorted(out, key=lambda pair: pair[0])


def _curves_panel(ax, df: pd.DataFrame, spec: dict[str, Any], task: str | None = None) -> None:
    """Training loss (a logged step's batch; `smooth`: running mean over that many) against step at
    one point (`spec["where"]`), one line per seed, with the memoryless baseline those runs recorded
    drawn above them: the published figures' view of when a cell leaves the baseline."""
    curves = training_curves(df, spec["where"])
    smooth = int(spec.get("smooth", 1))  # a running mean over this many logged steps
    for i, (seed, curve) in enumerate(curves):
        loss = pd.Series(curve[:, 1]).rolling(smooth, min_periods=1).mean()
        style = line_style(i)
        ax.plot(curve[:, 0], loss, linewidth=0.8, color=style["color"], linestyle=style["linestyle"], label=f"seed {seed}")
    if not curves:
        ax.text(0.5, 0.5, "no training curves in the records\n(export with --detail)", ha="center",
                transform=ax.transAxes)
    baselines = set(verdicts.values(verdicts.matching(df, spec["where"]), "memoryless_baseline"))
    if len(baselines) == 1:  # the task's own value, as each run's summary recorded it
        ax.axhline(baselines.pop(), label="memoryless baseline", **BASELINE)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric_label("train/loss", task))
    ax.set_ylim(*spec.get("ylim", [None, None]))
    ax.legend(fontsize=6)
    ax.set_title(spec["title"] + (f"\n(running mean of {smooth} logged batches)" if smooth > 1 else ""))


@styled
def screen_figure(state: dict[str, Any], out: Path) -> list[Path]:
    """A fair comparison's screen (`rnnbench.fair`, its fair.json `state`): the selection metric against
    the (first) grid key, one line per compared value, each one's choice ringed: what shows a reader
    that every value got its chance. Writes `out`.pdf and `out`.png."""
    plan = state["plan"]
    key = next(iter(plan["grid"]))
    (values,) = plan["compare"].values()
    fig, ax = new_figure()
    for i, value in enumerate(values):
        choice = state["chosen"].get(label(value)) or {"point": None, "score": math.nan, "scores": []}
        points = sorted((s["point"][key], s["score"]) for s in choice["scores"]
                        if isinstance(s["point"][key], (int, float)) and not isinstance(s["point"][key], bool))
        if not points:
            continue
        xs, ys = zip(*points)
        style = line_style(i)
        ax.plot(xs, ys, label=label(value), **style)
        if choice["point"]:
            ax.plot([choice["point"][key]], [choice["score"]], "o", markersize=9, fillstyle="none",
                    color=style["color"])
    if all(v > 0 for v in plan["grid"][key] if isinstance(v, (int, float))):
        ax.set_xscale("log")
    ax.set_xlabel(key_label(key))
    ax.set_ylabel(metric_label(state["select"].removeprefix("best/")) + " (screen)")
    budget = ", ".join(plan["screen"]) or "the full budget"
    ax.set_title(f"screen at {budget}, {len(plan['screen_seeds'])} seed(s)\nringed: each one's choice", fontsize="small")
    ax.legend()
    return save_figure(fig, Path(out).with_suffix(""))
