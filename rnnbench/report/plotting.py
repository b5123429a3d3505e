"""What every figure shares (the report's, the studies', the fair comparison's screen): a size that fits
one or two columns of a paper, fonts that stay legible there, labels in words from one table of metric
and key names, lines that differ in colour, dash and marker (a legend tells them apart, in grey print
too), baselines drawn above the curves, and two files: vector PDF (for the paper) and 300-dpi PNG (for a
look). Built on matplotlib's object API with the Agg canvas: no pyplot state, no display.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnbench.report.runs import label

ONE_COLUMN = 3.5  # inches: one column of a two-column paper (ICML, NeurIPS, IEEE: 3.25-3.5)
TWO_COLUMNS = 7.0  # the full text width
DPI = 300  # the PNG's resolution, what journals ask of line art at print size

STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 6.5, "legend.handlelength": 3.2, "legend.framealpha": 0.85, "lines.linewidth": 1.2,
    "lines.markersize": 3.5, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: text stays text (searchable, editable)
    "savefig.dpi": DPI, "figure.dpi": 100,
}

# Colour-blind-safe colours (Okabe & Ito 2008; their yellow, faint on white, replaced by grey) with a dash pattern and a marker each: the k-th line of a
# figure differs from the others in all three.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]
DASHES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
BASELINE = {"color": "0.2", "linestyle": (0, (6, 3)), "linewidth": 1.0, "zorder": 3}  # above the curves (2), below the legend (5)

# Metric names in words, with units where they have one. The loss is each task's own objective.
METRIC_WORDS = {
    "bits_per_char": "bits per character", "perplexity": "perplexity", "accuracy": "accuracy",
    "recall_accuracy": "recall accuracy (copied symbols)", "sequence_accuracy": "sequence accuracy",
    "accuracy_all_steps": "accuracy over all steps", "loss_over_baseline": "loss / memoryless baseline",
    "grad_norm": "gradient norm ‖∇‖", "lr": "learning rate", "mse": "MSE",
}
TASK_LOSS = {
    "adding": "MSE", "copy": "cross-entropy (nats per step)", "lm": "cross-entropy (nats per token)",
    "seq_image": "cross-entropy (nats)", "text": "cross-entropy (nats)",
}
SPLIT_WORDS = {"val": "validation", "test": "test", "train": "training"}
KEY_WORDS = {
    "optim.lr": "learning rate", "task.seq_len": "sequence length T", "train.max_steps": "training steps",
    "cell.recurrent_gain": "recurrent gain γ", "model.hidden_size": "hidden size", "cell": "cell",
    "cell.variant": "LSTM variant", "model.num_layers": "layers", "train.clip": "clipping threshold",
    "cell.forget_bias": "forget-gate bias", "model.param_budget": "parameters",
    "state_size": "state size (floats per sequence)",
}


def metric_label(name: str, task: str | None = None) -> str:
    """"val/loss" -> "validation MSE" (adding), "best/val/bits_per_char" -> "best validation bits per
    character", "final/val@T=200/accuracy" -> "validation accuracy at T=200"."""
    parts = name.split("/")
    prefix = ""
    if parts[0] in ("final", "best"):
        prefix = "best " if parts[0] == "best" else ""
        parts = parts[1:]
    split, at = "", ""
    if len(parts) > 1:
        split_name, _, length = parts[0].partition("@")
        split = SPLIT_WORDS.get(split_name, split_name) + " "
        at = f" at {length}" if length else ""
        parts = parts[1:]
    metric = "/".join(parts)
    words = TASK_LOSS.get(task or "", "loss") if metric == "loss" else METRIC_WORDS.get(metric, metric.replace("_", " "))
    return f"{prefix}{split}{words}{at}"


def key_label(key: str) -> str:
    """A config key in words ("optim.lr" -> "learning rate"); the key itself when it has none."""
    return KEY_WORDS.get(key, key)


def line_style(i: int) -> dict[str, Any]:
    """The i-th line's colour, dash pattern and marker."""
    return {"color": COLOURS[i % len(COLOURS)], "linestyle": DASHES[i % len(DASHES)], "marker": MARKERS[i % len(MARKERS)]}


F = TypeVar("F", bound=Callable[..., Any])


def styled(draw: F) -> F:
    """Draw under `STYLE` (matplotlib reads its settings when an artist is made, so the whole drawing
    runs inside the style, and nothing of it leaks to the caller's matplotlib)."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def new_figure(width: float = ONE_COLUMN, height: float | None = None, panels: int = 1, rows: int = 1,
               **subplots: Any) -> tuple[Figure, Any]:
    """A figure `width` inches wide (ONE_COLUMN or TWO_COLUMNS) with `panels` axes side by side (one axes
    when 1; with `rows` > 1, a rows × panels grid, as a 2-D array). Call inside `styled`."""
    fig = Figure(figsize=(width, height or width * (0.72 if panels == 1 else 0.36) * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, panels, squeeze=False, **subplots)
    if rows > 1:
        return fig, axes
    return fig, (axes[0][0] if panels == 1 else axes[0])


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """`stem`.pdf (vector) and `stem`.png (300 dpi)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in ("pdf", "png")]
    with matplotlib.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, dpi=DPI, metadata={"Creator": "rnnbench"} if path.suffix == ".pdf" else None)
    return paths


def taken_at(steps: Sequence[int]) -> str:
    """"at training step 2000", or the range when the runs' last profiles differ."""
    steps = sorted({int(s) for s in steps if s is not None})
    if not steps:
        return "at the runs' last profile"
    return f"at training step {steps[0]}" if len(steps) == 1 else f"at training steps {steps[0]}-{steps[-1]}"


def group_label(keys: Sequence[str], values: tuple) -> str:
    """"lstm" for one key; else "key=value, ..."."""
    if len(keys) == 1:
        return label(values[0])
    return ", ".join(f"{k.removeprefix('cfg.')}={label(v)}" for k, v in zip(keys, values)) or "all runs"
