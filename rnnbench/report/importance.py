"""Hyperparameter importance after an Optuna search, rebuilt from the run folders.

Optuna's default evaluator, fANOVA (the analysis of Greff et al. 2016, "LSTM: A Search Space
Odyssey"), fails in optuna 2.10 (the newest hydra-optuna-sweeper 1.3 allows) with numpy 2
("setting an array element with a sequence"); mean decrease in impurity of a random forest
fitted to the same trials works, and answers the same question: which hyperparameter explains
most of the variance of the objective.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf, open_dict

from rnnbench.report.runs import ReportError, find_run_dirs, key_value
from rnnbench.report.stats import default_metrics, display_name, resolve_metric


@contextlib.contextmanager
def _quiet_optuna_import() -> Iterator[None]:
    """optuna 2.10 imports SQLAlchemy's old declarative_base: a DeprecationWarning that is not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def search_space(params: dict[str, Any] | None, arguments: Sequence[str] = ()) -> dict[str, Any]:
    """The Optuna distributions of a search, built as hydra-optuna-sweeper builds them: from
    ``hydra.sweeper.params`` (e.g. ``optim.lr: tag(log, interval(1e-4, 1e-1))``) and the command
    line's overrides, where a plain value fixes a key and so removes it from the search."""
    # A private API, on purpose and only here: the sweeper's own translation of its grammar
    # (interval, tag(log, ...), choice, a fixed value) into Optuna distributions has no public
    # entry point, and a copy would drift from the sweeper that ran the search.
    # tests/test_report.py::test_search_space_is_the_optuna_sweepers fails loudly if it changes.
    with _quiet_optuna_import():
        from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    overrides = [f"{k}={v}" for k, v in (params or {}).items()] + [str(a) for a in arguments]
    distributions, fixed = create_params_from_overrides(overrides)
    return {k: d for k, d in distributions.items() if k not in fixed}


def optuna_search(hydra_cfg: Any) -> tuple[dict[str, Any], str] | None:
    """(distributions, direction) of the Optuna search described by a ``hydra`` config node (the
    sweep's, with the command line in ``overrides.task``), or None if its sweeper is not Optuna."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_", "")):
        return None
    direction = sweeper.get("direction", "minimize")
    if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction):
        raise ReportError("importance needs a single objective; this search has several directions")
    direction = getattr(direction, "name", str(direction)).rsplit(".", 1)[-1]  # Direction.minimize
    overrides = (hydra_cfg.get("overrides") or {}).get("task") or []
    return search_space(sweeper.get("params"), list(overrides)), direction


def find_search(path: str | os.PathLike) -> tuple[dict[str, Any], str] | None:
    """The Optuna search of a sweep folder, from its ``multirun.yaml`` (which `SweepSummary`
    writes for every sweeper, with the command line), else from a job's ``.hydra/hydra.yaml``
    (``hydra.sweeper.params`` only: a search dimension given on the command line is not there)."""
    path = Path(path)
    candidates = [path / "multirun.yaml"] + [d / ".hydra" / "hydra.yaml" for d in find_run_dirs(path)[:1]]
    for file in candidates:
        if file.is_file():
            cfg = OmegaConf.load(file)
            if file.name == "hydra.yaml":
                with open_dict(cfg):
                    cfg.hydra.overrides.task = []  # a job's own values, not the search's dimensions
            return optuna_search(OmegaConf.to_container(cfg.hydra, resolve=False))
    return None


def param_importance(
    df: pd.DataFrame,
    distributions: dict[str, Any],
    direction: str = "minimize",
    metric: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Importance of each searched hyperparameter for `metric`, from the completed runs of `df`.

    The study is rebuilt from the run folders: one Optuna trial per completed run, its parameters
    the run's values of the searched keys, its value the final `metric` (default: the main metric,
    the value the app returned to the sweeper). Returns ``{"importances": {key: share, ...}``
    (sums to 1, most important first), ``"metric"``, ``"direction"``, ``"n_trials"``,
    ``"evaluator"``, ``"search_space"``}.
    """
    with _quiet_optuna_import():
        import optuna
        from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances

    metric = resolve_metric(df, metric) if metric else default_metrics(df)[0]
    missing = [k for k in distributions if k not in df.columns]
    if missing:
        raise ReportError(f"searched keys not found in the runs: {', '.join(missing)}")
    done = df[df["status"] == "completed"]
    values = pd.to_numeric(done[metric], errors="coerce")
    done = done[values.notna() & np.isfinite(values)]
    if len(done) < 2:
        raise ReportError(f"importance needs at least 2 completed runs with {display_name(metric)}; found {len(done)}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(direction=direction)
        for _, row in done.iterrows():
            params = {k: key_value(row[k]) for k in distributions}
            try:
                trial = optuna.trial.create_trial(params=params, distributions=distributions, value=float(row[metric]))
            except ValueError as error:  # a value outside the search space: the space changed since
                raise ReportError(f"{Path(row['run_dir']).name}: {error}") from error
            study.add_trial(trial)
        evaluator = MeanDecreaseImpurityImportanceEvaluator(seed=seed)
        importances = get_param_importances(study, evaluator=evaluator)
    return {
        "metric": display_name(metric), "direction": direction, "n_trials": len(done),
        "evaluator": type(evaluator).__name__,
        "importances": {k: float(v) for k, v in importances.items()},
        "search_space": {k: repr(d) for k, d in distributions.items()},
    }


def importance_text(result: dict[str, Any], precision: int = 2) -> str:
    """"hyperparameter importance for val/loss (12 trials, mean decrease impurity): optim.lr 0.71, ..."."""
    shares = ", ".join(f"{k} {v:.{precision}f}" for k, v in result["importances"].items())
    return (f"hyperparameter importance for {result['metric']} ({result['n_trials']} trials, "
            f"{result['evaluator']}): {shares}")
