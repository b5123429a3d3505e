"""What every figure of the report shares: a figure on matplotlib's object API with the Agg canvas (no
pyplot state, no display), saved as PNG (for a look) and PDF (for a paper), and a group's legend label."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnbench.report.runs import label


def new_figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """`stem`.png and `stem`.pdf."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def group_label(keys: Sequence[str], values: tuple) -> str:
    """"lstm" for one key; else "key=value, ..."."""
    if len(keys) == 1:
        return label(values[0])
    return ", ".join(f"{k.removeprefix('cfg.')}={label(v)}" for k, v in zip(keys, values)) or "all runs"
