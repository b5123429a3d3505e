"""The command line: ``python -m rnnbench.report PATH... [--rows/--cols/--metrics/--reference/
--figures/--importance/--published]``. A problem of the user's input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rnnbench.errors import UserError, fail
from rnnbench.report.figures import write_figures
from rnnbench.report.importance import find_search, importance_text, param_importance
from rnnbench.report.lengths import length_columns
from rnnbench.report.runs import ReportError, load_runs, not_completed
from rnnbench.report.stats import as_list, resolve_metric, summarize
from rnnbench.report.tables import render


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnbench.report",
        description="Tables (mean ± std over seeds) and figures from run and sweep folders.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run or sweep folders, searched recursively")
    parser.add_argument("--rows", help="comma-separated group keys (default: the swept keys except seeds); '' for one row")
    parser.add_argument("--cols", help="comma-separated keys pivoted into columns")
    parser.add_argument("--metrics", help="comma-separated metrics, e.g. val/accuracy,best/val/loss,wall_time_s "
                        "(default: the final main metric and loss)")
    parser.add_argument("--precision", type=int, default=3, help="digits after the point (default 3)")
    parser.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the table here instead of stdout")
    parser.add_argument("--reference", metavar="KEY=VALUE,...",
                        help="row that every row is compared with (paired t-test on the seeds both ran, else Welch's; p-value columns)")
    parser.add_argument("--max", metavar="METRICS", help="comma-separated metrics where higher is better")
    parser.add_argument("--min", metavar="METRICS", help="comma-separated metrics where lower is better")
    parser.add_argument("--figures", metavar="DIR", help="write learning curves and gradient profiles (PNG, PDF) here")
    parser.add_argument("--curve", metavar="METRIC",
                        help="metric of the learning curves (default: the main metric, else train/loss)")
    parser.add_argument("--lengths", nargs="?", const="", metavar="METRIC",
                        help="length generalisation: METRIC (default: the main metric) at each length the runs were "
                        "evaluated at (task.eval_lengths) as the table's columns, and its figure with --figures")
    parser.add_argument("--layer", default="layer0", help="profile.json layer of the gradient figure (default layer0)")
    parser.add_argument("--published", metavar="FILE",
                        help="a study's published.yaml (docs/results/<study>/): print its published values beside "
                        "these runs' and whether each claim holds, instead of the mean ± std table")
    parser.add_argument("--importance", action="store_true",
                        help="after an Optuna search: the importance of each searched hyperparameter for the main "
                        "metric (or the first of --metrics)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        df = load_runs(args.paths)
        modes = {m: "max" for m in as_list(args.max)} | {m: "min" for m in as_list(args.min)}
        for m in modes:
            resolve_metric(df, m)  # an unknown name is an error, not a silent no-op
        by = None if args.rows is None else as_list(args.rows)
        metrics = args.metrics and as_list(args.metrics)
        if args.lengths is not None and not metrics:
            metrics = length_columns(df, args.lengths)
        # the mean ± std table; with --published only when the figures need its rows (a sweep whose
        # every run diverged has no mean to show, and its published table says "diverged")
        stats = None
        if not args.published or args.figures:
            stats = summarize(df, by=by, metrics=metrics, cols=args.cols,
                              reference=args.reference, modes=modes)
        if args.published:
            from rnnbench.report import claim_tables

            text = claim_tables.table(args.published, args.format, runs=df)
        else:
            text = render(stats, args.format, args.precision)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        for line in not_completed(df):  # on stderr: stdout stays a table to paste
            print(f"not completed: {line}", file=sys.stderr)
        if args.importance:
            search = next((s for s in map(find_search, args.paths) if s), None)
            if search is None:
                raise ReportError("--importance: no Optuna search found (no multirun.yaml or .hydra/hydra.yaml "
                                  "with an Optuna sweeper under the given paths)")
            metric = as_list(args.metrics)[0] if args.metrics else None
            print(importance_text(param_importance(df, *search, metric=metric)), file=sys.stderr)
        if args.figures:
            written, notes = write_figures(df, args.figures, stats.attrs["rows"] + stats.attrs["cols"],
                                           curve=args.curve, layer=args.layer, length_metric=args.lengths)
            for line in [f"wrote {p}" for p in written] + [f"note: {n}" for n in notes]:
                print(line, file=sys.stderr)
    except UserError as error:
        return fail(error)
    except OSError as error:  # a path the user gave that cannot be read or written
        return fail(ReportError(str(error)))
    return 0

