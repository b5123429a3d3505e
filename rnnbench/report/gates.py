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
from rnnbench.report.plotting import save_figure
from rnnbench.report.runs import groups


def saturation_points(run_dirs: Sequence[str], layer: str) -> dict[str, tuple[list[float], list[float]]]:
    """{gate: (unit_left, unit_right)} of every unit of `layer` over the runs' last profiles."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    for run_dir in run_dirs:
        if not (Path(run_dir) / "profile.json").is_file():
            continue
        for gate, stats in (read_profile(run_dir).get("gates") or {}).get(layer, {}).items():
            left, right = points.setdefault(gate, ([], []))
            left.extend(stats["unit_left"])
            right.extend(stats["unit_right"])
    return points


def saturation_figure(df, keys: Sequence[str], layer: str, stem: Path, label_of) -> tuple[list[Path], list[str]]:
    """One panel per group of completed runs with gates: the saturation plane of `layer`, a colour per
    gate, the units of all the group's runs. Returns the files and notes on groups without gates."""
    panels, notes = [], []
    for values, runs in groups(df[df["status"] == "completed"], keys):
        points = saturation_points(list(runs["run_dir"]), layer)
        if points:
            panels.append((f"{label_of(keys, values)} (n={len(runs)})", points))
        else:
            notes.append(f"no gate saturation for {label_of(keys, values)}: its runs have no gate statistics "
                         f"for {layer} (a cell without gates, or train.gate_stats=false)")
    if not panels:
        return [], [f"no gate saturation figure: no completed run has gate statistics for {layer} (gated cells "
                    "record them with each temporal profile)"]
    fig = Figure(figsize=(3.4 * len(panels), 3.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (name, points) in zip(axes, panels):
        ax.plot([0, 1], [1, 0], color="gray", linewidth=0.8, linestyle=":")
        for gate, (left, right) in points.items():
            ax.scatter(left, right, s=10, alpha=0.6, label=gate)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=name, xlabel="fraction left-saturated (σ < 0.1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper right")
    axes[0].set_ylabel("fraction right-saturated (σ > 0.9)")
    fig.suptitle(f"gate saturation per unit ({layer}), last profile")
    return save_figure(fig, stem), notes
