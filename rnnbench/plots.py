"""Figures of a sweep, drawn from what the report has read from the run folders.

Each figure is written as PNG (for a look) and PDF (for a paper). Figures are built on matplotlib's
object API with the Agg canvas, so nothing here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def learning_curves(curves: dict[str, list[pd.Series]], metric: str, stem: Path) -> list[Path]:
    """`metric` against step: per group, the mean over its runs and a ±1 std band (ddof=1).

    curves: {group label: [one Series per run, indexed by step]}.
    """
    fig, ax = _figure()
    for name, runs in curves.items():
        table = pd.concat(runs, axis=1, ignore_index=True).sort_index()  # (steps, runs), NaN where not logged
        mean, std = table.mean(axis=1), table.std(axis=1, ddof=1)
        (line,) = ax.plot(mean.index, mean, label=f"{name} (n={len(runs)})")
        ax.fill_between(mean.index, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set(xlabel="step", ylabel=metric, title=f"{metric}: mean ± std over seeds")
    ax.legend()
    return _save(fig, stem)


def gradient_profiles(profiles: dict[str, list[Sequence[float]]], layer: str, stem: Path) -> list[Path]:
    """‖∂L/∂h_t‖ against t on a log scale: per group, the geometric mean over runs and a ±1 std band
    of log10 (gradients decay or explode geometrically, so their spread is multiplicative).

    profiles: {group label: [one profile per run, ‖∂L/∂h_t‖ for t = 1..T]}.
    """
    fig, ax = _figure()
    for name, runs in profiles.items():
        length = max(len(p) for p in runs)
        norms = np.full((len(runs), length), np.nan)  # (runs, T), NaN-padded when T differs
        for i, p in enumerate(runs):
            norms[i, : len(p)] = np.asarray(p, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_norms = np.log10(np.where(norms > 0, norms, np.nan))  # a zero gradient has no log
        mean = pd.DataFrame(log_norms).mean(axis=0).to_numpy()
        std = pd.DataFrame(log_norms).std(axis=0, ddof=1).to_numpy()
        t = np.arange(1, length + 1)
        (line,) = ax.plot(t, 10**mean, label=f"{name} (n={len(runs)})")
        ax.fill_between(t, 10 ** (mean - std), 10 ** (mean + std), color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="time step t", ylabel=r"$\|\partial L / \partial h_t\|$", title=f"temporal gradient profile ({layer})")
    ax.legend()
    return _save(fig, stem)
