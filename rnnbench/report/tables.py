"""Summaries (`rnnbench.report.stats.summarize`) -> tables as they are shown: Markdown, a booktabs
LaTeX ``tabular``, CSV. The best mean of a column is bold; ties at the shown precision are ties. Bold
is not a test (the p-values against a reference are), and a table with bold says so under it (`BOLD_MEANS`)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import pandas as pd
from tabulate import tabulate

from rnnbench.report.runs import ReportError, groups, label
from rnnbench.report.stats import COUNTED, display_name


class _Style(NamedTuple):
    bold: Any  # str -> str
    plus_minus: str
    missing: str
    escape: Any  # str -> str


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


MARKDOWN = _Style(bold="**{}**".format, plus_minus=" ± ", missing="–", escape=lambda s: s.replace("|", r"\|"))
LATEX = _Style(bold=r"\textbf{{{}}}".format, plus_minus=r" $\pm$ ", missing="--", escape=latex_escape)


def _n_text(row: pd.Series) -> str:
    others = [f"{row[f'n_{s}']} {s}" for s in COUNTED if row[f"n_{s}"]]
    return f"{row['n']}" + (f" ({', '.join(others)})" if others else "")


def _p_text(p: float, precision: int, style: _Style) -> str:
    if math.isnan(p):
        return style.missing
    floor = 10.0**-precision
    return f"<{floor:.{precision}f}" if p < floor / 2 else f"{p:.{precision}f}"


def _table_cells(stats: pd.DataFrame, precision: int, style: _Style) -> tuple[list[str], list[list[str]], int]:
    """Header, body and the number of key columns of the table as it is shown."""
    rows, cols, metrics = stats.attrs["rows"], stats.attrs["cols"], stats.attrs["metrics"]
    reference = stats.attrs.get("reference")
    row_groups, col_groups = groups(stats, rows), groups(stats, cols)

    def mean_text(mean: float) -> str:
        return f"{mean:.{precision}f}"

    # Bold every mean that reads like the best one: ties at the shown precision are ties.
    best_texts = {
        (j, m): {mean_text(v) for v in block.loc[block[f"{m} best"], f"{m} mean"]}
        for j, (_, block) in enumerate(col_groups)
        for m in metrics
    }
    key_header = [style.escape(k.removeprefix("cfg.")) for k in rows] or ["runs"]
    header = list(key_header)
    for col_key, _ in col_groups:
        prefix = ", ".join(label(v) if len(cols) == 1 else f"{k}={label(v)}" for k, v in zip(cols, col_key))
        for m in metrics:
            name = " ".join(filter(None, [prefix, display_name(m) if len(metrics) > 1 or not prefix else ""]))
            header.append(style.escape(name))
            if reference is not None:
                header.append(style.escape(" ".join(filter(None, [prefix, "p", display_name(m) if len(metrics) > 1 else ""]))))
        header.append(style.escape(" ".join(filter(None, [prefix, "n"]))))

    body = []
    for row_key, row_block in row_groups:
        line = [style.escape(label(v)) for v in row_key] or ["all"]
        for j, (_, col_block) in enumerate(col_groups):
            index = row_block.index.intersection(col_block.index)
            if len(index) == 0:  # this combination was not run
                line += [""] * (len(metrics) * (2 if reference is not None else 1) + 1)
                continue
            row = stats.loc[index[0]]
            for m in metrics:
                mean, std = row[f"{m} mean"], row[f"{m} std"]
                if math.isnan(mean):
                    line.append(style.missing)
                else:
                    text = mean_text(mean) + style.plus_minus + (style.missing if math.isnan(std) else mean_text(std))
                    line.append(style.bold(text) if mean_text(mean) in best_texts[j, m] else text)
                if reference is not None:
                    is_reference = all(label(row[k]) == label(v) for k, v in reference.items())
                    line.append("ref" if is_reference else _p_text(row[f"{m} p"], precision, style))
            line.append(_n_text(row))
        body.append(line)
    return header, body, len(key_header)


BOLD_MEANS = "Bold: the best mean of its column (ties at the shown precision included); not a significance test"


def _bold_legend(stats: pd.DataFrame) -> str | None:
    """What bold means, for a table that has any; with a reference, where its tests are."""
    if not stats.filter(like=" best").to_numpy().any():
        return None
    tested = "; the p columns test each group against the reference" if stats.attrs.get("reference") else ""
    return BOLD_MEANS + (tested or "; `--reference KEY=VALUE` adds p-values") + "."


def to_markdown(stats: pd.DataFrame, precision: int = 3) -> str:
    header, body, n_keys = _table_cells(stats, precision, MARKDOWN)
    align = ["left"] * n_keys + ["right"] * (len(header) - n_keys)
    table = tabulate(body, headers=header, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"
    legend = _bold_legend(stats)
    return table + (f"\n{legend}\n" if legend else "")


def to_latex(stats: pd.DataFrame, precision: int = 3) -> str:
    """A booktabs ``tabular``, ready to paste into a paper (needs ``\\usepackage{booktabs}``)."""
    header, body, n_keys = _table_cells(stats, precision, LATEX)
    lines = [
        rf"\begin{{tabular}}{{{'l' * n_keys}{'r' * (len(header) - n_keys)}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(line) + r" \\" for line in body),
        r"\bottomrule",
    ]
    legend = _bold_legend(stats)
    if legend:  # under the rule, across the table: the reader of the paper sees it too
        lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\footnotesize {latex_escape(legend.replace('`', ''))}}} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def to_csv(stats: pd.DataFrame) -> str:
    """The numbers of `summarize` at full precision, one line per group."""
    return stats.to_csv(index=False)


def render(stats: pd.DataFrame, fmt: str = "md", precision: int = 3) -> str:
    if fmt == "md":
        return to_markdown(stats, precision)
    if fmt == "latex":
        return to_latex(stats, precision)
    if fmt == "csv":
        return to_csv(stats)
    raise ReportError(f"unknown format {fmt!r} (md, latex or csv)")
