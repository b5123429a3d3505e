"""What makes a figure usable in a paper, checked on the figures the code draws (tests/test_report.py,
test_length_generalisation.py, test_studies.py): a one- or two-column width, a 300-dpi PNG beside a vector
PDF, axis labels in words (not raw keys such as `val/loss` or `task.seq_len`), and a legend whose entries
differ in what they show, not only in their text."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rnnbench.report import plotting

RAW_KEY = re.compile(r"[a-z_]+(?:[./][a-z_@=0-9]+)+")  # val/loss, task.seq_len, best/val/bits_per_char


@pytest.fixture
def drawn(monkeypatch) -> list[tuple[Figure, Path]]:
    """Every figure saved while the test runs, with the path it was saved to."""
    saved: list[tuple[Figure, Path]] = []
    original = Figure.savefig

    def savefig(self, path, *args, **kwargs):
        saved.append((self, Path(path)))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def png_dpi(path: Path) -> float:
    data = path.read_bytes()
    at = data.index(b"pHYs")
    per_metre, _, unit = struct.unpack(">IIB", data[at + 4: at + 13])
    assert unit == 1, "pHYs in metres"
    return per_metre * 0.0254


def check_paper_figure(fig: Figure, files: list[Path]) -> None:
    width = fig.get_size_inches()[0]
    assert width in (plotting.ONE_COLUMN, plotting.TWO_COLUMNS), width
    suffixes = {p.suffix for p in files}
    assert suffixes == {".png", ".pdf"}, files
    for path in files:
        head = path.read_bytes()[:8]
        assert head.startswith(b"%PDF") if path.suffix == ".pdf" else head == b"\x89PNG\r\n\x1a\n"
        if path.suffix == ".png":
            assert round(png_dpi(path)) == plotting.DPI
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data():
            continue
        twins = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a is not ax]  # a twinx axis: one x label
        labels = [ax.get_xlabel() or next((a.get_xlabel() for a in twins if a.get_xlabel()), "")
                  or fig._supxlabel and fig._supxlabel.get_text(),
                  ax.get_ylabel() or fig._supylabel and fig._supylabel.get_text()]
        for text in labels:
            assert text, f"an axis without a label in {fig}"
            assert not RAW_KEY.fullmatch(text), f"axis label is a raw key: {text!r}"
        legend = ax.get_legend()
        if legend is None:
            continue
        shown = []
        for handle in legend.legend_handles:
            line = handle if isinstance(handle, Line2D) else None
            if line is not None:
                shown.append((line.get_color(), str(line.get_linestyle()), line.get_marker()))
        assert len(shown) == len(set(shown)), f"legend entries that look alike: {shown}"
