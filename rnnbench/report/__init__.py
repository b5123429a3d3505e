"""Run folders -> one pandas row per run -> tables (Markdown, LaTeX, CSV) and figures.

    python -m rnnbench.report outputs/sweeps/2024-05-01/12-00-00_cells
    python -m rnnbench.report outputs/sweeps/... --rows cell --cols task --format latex -o table.tex
    python -m rnnbench.report outputs/sweeps/... --reference cell=lstm --figures figures/
    python -m rnnbench.report outputs/sweeps/...   --importance   # after an Optuna search

A run's results live in its folder (docs/architecture.md, "Run folder"); everything here is computed
from the folders, so a table can always be rebuilt. One module per concern:

- `runs`: finding run folders and loading them into a DataFrame (`load_runs`), override parsing
  by Hydra's grammar, the list of runs that did not complete;
- `stats`: grouping, mean ± sample std, the best group, Welch's t-test (`summarize`);
- `tables`: Markdown, LaTeX and CSV (`render`);
- `figures`: learning curves and gradient profiles (`write_figures`), drawn with `plotting`;
- `lengths`: length generalisation, a table's columns and a figure (`length_columns`, `length_figure`);
- `gates`: the gate saturation plane (`saturation_figure`);
- `importance`: hyperparameter importance after an Optuna search (`param_importance`);
- the literature studies (docs/results/<study>/): `study_records` (records exported from sweep folders,
  published claims read), `verdicts` (the rules that judge a claim: k of n seeds, paired or Welch tests
  with intervals, Holm, non-inferiority, Fisher's test, "no power" where the positive control did not
  learn), `claim_tables` (published beside measured: the tables), `study_figures`, `results_page`
  (docs/results.md's tables), `wikitext` (study 5's data); `studies` is their command
  (``python -m rnnbench.report.studies``);
- `cli`: ``python -m rnnbench.report`` (`main`).

The names below are the report's API (``from rnnbench import report; report.load_runs(...)``).
"""

from rnnbench.report.runs import (
    ReportError, find_run_dirs, label, load_runs, not_completed, parse_override, swept_keys,
)
from rnnbench.report.stats import (
    available_metrics, default_metrics, metric_mode, parse_reference, resolve_metric, summarize, welch_p_value,
)
from rnnbench.report.cli import main
from rnnbench.report.figures import write_figures
from rnnbench.report.importance import find_search, importance_text, optuna_search, param_importance, search_space
from rnnbench.report.tables import latex_escape, render, to_csv, to_latex, to_markdown

__all__ = [
    "ReportError", "available_metrics", "default_metrics", "find_run_dirs", "find_search", "importance_text",
    "label", "latex_escape", "load_runs", "main", "metric_mode", "not_completed", "optuna_search",
    "param_importance", "parse_override", "parse_reference", "render", "resolve_metric", "search_space",
    "summarize", "swept_keys", "to_csv", "to_latex", "to_markdown", "welch_p_value", "write_figures",
]
