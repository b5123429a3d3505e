"""The gate saturation plane (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks", Fig. 3): every unit of a gate is a point at (fraction of time left-saturated,
σ < 0.1; fraction of time right-saturated, σ > 0.9) on the probe batch of the run's last profile
(`profile.json` `gates`, `diagnostics.gate_statistics`). Points near the origin are units whose gate
acts in its linear range; along the y axis, gates that are (almost) always open; along the x axis,
always closed; the diagonal x + y = 1 bounds the plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnbench.records.run_folder import read_profile
from rnnbench.report.plotting import ONE_COLUMN, TWO_COLUMNS, line_style, save_figure, styled, taken_at
from rnnbench.report.runs import groups


def saturation_points(run_dirs: Sequence[str], layer: str) -> tuple[dict[str, tuple[list[float], list[float]]], list[int]]:
    """({gate: (unit_left, unit_right)} of every unit of `layer` over the runs' last profiles, the
    training steps those profiles were taken at)."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    steps = []
    for run_dir in run_dirs:
        if not (Path(run_dir) / "profile.json").is_file():
            continue
        profile = read_profile(run_dir)
        gates = (profile.get("gates") or {}).get(layer, {})
        if gates and profile.get("step") is not None:
            steps.append(int(profile["step"]))
        for gate, stats in gates.items():
            left, right = points.setdefault(gate, ([], []))
            left.extend(stats["unit_left"])
            right.extend(stats["unit_right"])
    return points, steps


NEAR_ORIGIN = 0.02  # a unit this close to (0, 0) is counted: its gate works in its linear range


@styled
def saturation_figure(df, keys: Sequence[str], layer: str, stem: Path, label_of) -> tuple[list[Path], list[str]]:
    """One panel per group of completed runs with gates: the saturation plane of `layer`, a colour and
    marker per gate, the units of all the group's runs, translucent so that where units pile up (near the
    origin, typically) reads as density; each gate's share of units near the origin is in the legend.
    Returns the files and notes on groups without gates."""
    panels, notes, steps = [], [], []
    for values, runs in groups(df[df["status"] == "completed"], keys):
        points, at = saturation_points(list(runs["run_dir"]), layer)
        if points:
            panels.append((f"{label_of(keys, values)} (n={len(runs)})", points))
            steps += at
        else:
            notes.append(f"no gate saturation for {label_of(keys, values)}: its runs have no gate statistics "
                         f"for {layer} (a cell without gates, or train.gate_stats=false)")
    if not panels:
        return [], [f"no gate saturation figure: no completed run has gate statistics for {layer} (gated cells "
                    "record them with each temporal profile)"]
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(TWO_COLUMNS if columns > 1 else ONE_COLUMN, 2.5 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, (name, points) in zip(axes, panels):
        ax.plot([0, 1], [1, 0], color="0.5", linewidth=0.8, linestyle=":")
        for i, (gate, (left, right)) in enumerate(points.items()):
            near = sum(1 for x, y in zip(left, right) if x <= NEAR_ORIGIN and y <= NEAR_ORIGIN) / max(len(left), 1)
            style = line_style(i)
            ax.scatter(left, right, s=6, alpha=0.25, color=style["color"], marker=style["marker"], linewidths=0,
                       rasterized=True, label=f"{gate} ({near:.0%} near 0)")
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=name)
        ax.legend(loc="upper right", markerscale=2)
        for handle in ax.get_legend().legend_handles:
            handle.set_alpha(1)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.supxlabel("fraction of steps left-saturated (σ < 0.1)", fontsize="medium")
    fig.supylabel("fraction of steps right-saturated (σ > 0.9)", fontsize="medium")
    fig.suptitle(f"gate saturation per unit ({layer}), {taken_at(steps)}", fontsize="medium")
    return save_figure(fig, stem), notes
