"""Groups of runs -> mean ± sample std per metric, the best group, and Welch's t-test against a
reference group; and the tests claims are judged by (`compare_samples`: paired or Welch with the
interval of the difference; `noninferiority`; `holm`).

Seeds are aggregated as mean ± sample std (ddof=1) over *completed* runs; failed, diverged,
incomplete and still-running runs are counted in the row they belong to ("3 (1 failed)"), never
dropped silently.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from rnnbench.records import run_folder
from rnnbench.report.runs import ReportError, groups, is_seed_key, key_value, label, parse_override, resolve_key, swept_keys

COUNTED = ("failed", "diverged", "stopped", "incomplete", "running")  # statuses shown next to n
RUN_NUMBERS = ("steps", "wall_time_s", "num_params", "throughput_steps_per_s")  # usable as metrics


def available_metrics(df: pd.DataFrame) -> list[str]:
    sections = [c for c in df.columns if c.startswith(("final/", "best/", "best_step/", "test/"))]
    return sections + [c for c in RUN_NUMBERS if c in df.columns and df[c].notna().any()]


def display_name(metric: str) -> str:
    return metric.removeprefix("final/")


def resolve_metric(df: pd.DataFrame, name: str) -> str:
    """"val/loss" -> "final/val/loss"; "best/val/loss" and "wall_time_s" as they are."""
    available = available_metrics(df)
    for candidate in (name, f"final/{name}"):
        if candidate in available:
            return candidate
    names = ", ".join(display_name(m) for m in available) or "none"
    raise ReportError(f"unknown metric {name!r}; available: {names}")


def most_common(series: pd.Series | None) -> Any:
    values = [v for v in series if key_value(v) is not None] if series is not None else []
    return Counter(values).most_common(1)[0][0] if values else None


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The final main metric (summary.json's ``main_metric``) and the final loss."""
    columns = set(df.columns)
    main = most_common(df.get("main_metric"))
    metrics = [f"final/{main}"] if main and f"final/{main}" in columns else []
    loss = next((m for m in ("final/val/loss", "final/train/loss") if m in columns), None)
    if loss and loss not in metrics:
        metrics.append(loss)
    metrics = metrics or [c for c in df.columns if c.startswith("final/")]
    if not metrics:
        raise ReportError("no run has final metrics in its summary.json (are they all incomplete?)")
    return metrics


def metric_mode(metric: str, df: pd.DataFrame | None = None, modes: dict[str, str] | None = None) -> str | None:
    """"max" or "min": from `modes` (by column or plain name), then summary.json's
    ``main_metric_mode`` for the main metric, then the name (`run_folder.metric_mode`, as the trainer
    decides its best values); None when nothing says."""
    name = metric.split("/", 1)[1] if metric.startswith(("final/", "best/")) else metric
    modes = modes or {}
    for key in (metric, name):
        if key in modes:
            return modes[key]
    if df is not None and name == most_common(df.get("main_metric")):
        mode = most_common(df.get("main_metric_mode"))
        if mode in ("max", "min"):
            return mode
    return run_folder.metric_mode(name)


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances), by ``scipy.stats.ttest_ind(a, b,
    equal_var=False)``; NaN values are left out, and the p-value is NaN with fewer than 2 values
    a side or when both sides are constant (the t statistic is then undefined).

    t = (mean_a - mean_b) / sqrt(s_a²/n_a + s_b²/n_b), with Welch–Satterthwaite degrees of freedom.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2 or a.var() + b.var() == 0:
        return math.nan
    return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """A comma-separated string (as the command line gives it) or a list -> a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def parse_reference(reference: str | dict[str, Any]) -> dict[str, Any]:
    """"cell=lstm,model.hidden_size=128" -> {"cell": "lstm", "model.hidden_size": 128}."""
    if isinstance(reference, dict):
        return dict(reference)
    try:
        pairs = [parse_override(p) for p in as_list(reference)]
    except ReportError:
        pairs = []
    if not pairs or any(not key for key, _ in pairs):
        raise ReportError(f"--reference wants key=value[,key=value...], got {reference!r}")
    return dict(pairs)


def summarize(
    df: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    metrics: str | Sequence[str] | None = None,
    cols: str | Sequence[str] | None = None,
    reference: str | dict[str, Any] | None = None,
    modes: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per group of runs: mean ± sample std of each metric over the completed runs.

    by: group keys (default: the swept keys except seeds and `cols`); cols: keys that the
    rendered table pivots into columns (the groups are by + cols); metrics: names as in
    `resolve_metric` (default: `default_metrics`); reference: a row, e.g. "cell=lstm", that every
    row of the same column group is compared with (`reference_p_value`: paired t where both ran the
    same seeds, Welch's t otherwise); modes: {metric: "max"|"min"}
    overriding `metric_mode`.

    Columns: the keys, ``n`` (completed runs), ``n_failed``, ``n_diverged``, ``n_incomplete``,
    ``n_running``, then per metric ``<m> mean``, ``<m> std`` (NaN for n < 2), ``<m> best`` (the
    best mean of its column group, by the metric's direction, when the group has two or more) and, with a reference, ``<m> p``.
    ``attrs`` keeps rows, cols, metrics, modes and reference for `render`.
    """
    cols = [resolve_key(df, k) for k in as_list(cols)]
    if by is None:
        by = [k for k in swept_keys(df) if not is_seed_key(k) and k not in cols]
    by = [resolve_key(df, k) for k in as_list(by)]
    metrics = default_metrics(df) if metrics is None else [resolve_metric(df, m) for m in as_list(metrics)]
    directions = {m: metric_mode(m, df, modes) for m in metrics}

    rows, values, by_seed = [], [], []  # values[i][m]: the completed runs' values of row i
    for key, runs in groups(df, by + cols):
        done = runs[runs["status"] == "completed"]
        row = dict(zip(by + cols, key))
        row["n"] = len(done)
        row.update({f"n_{status}": int((runs["status"] == status).sum()) for status in COUNTED})
        values.append({})
        by_seed.append({})
        for m in metrics:
            x = pd.to_numeric(done[m], errors="coerce").to_numpy(float)  # "nan" strings -> NaN
            seeds = list(done["seed"]) if "seed" in done.columns else []
            if len(set(seeds)) == len(seeds) == len(x) and not np.isnan(x).any():
                by_seed[-1][m] = dict(zip(seeds, x))  # one run per seed: pairable with another row's
            x = x[~np.isnan(x)]
            values[-1][m] = x
            row[f"{m} mean"] = x.mean() if len(x) else math.nan
            row[f"{m} std"] = x.std(ddof=1) if len(x) > 1 else math.nan
        rows.append(row)
    stats = pd.DataFrame(rows)
    blocks = [runs.index for _, runs in groups(stats, cols)]  # rows that share a column of the table

    for m in metrics:
        mean = stats[f"{m} mean"]
        best = pd.Series(False, index=stats.index)
        if directions[m] is not None:
            for block in blocks:
                if mean[block].notna().sum() < 2:  # nothing to compare with
                    continue
                target = mean[block].max() if directions[m] == "max" else mean[block].min()
                best[block] = mean[block] == target
        stats[f"{m} best"] = best

    if reference is not None:
        reference = {resolve_key(df, k): v for k, v in parse_reference(reference).items()}
        outside = [k for k in reference if k not in by]
        if outside:
            raise ReportError(f"reference key {outside[0]!r} is not a row key ({', '.join(by) or 'none'})")
        matches = [i for i in stats.index if all(label(stats.at[i, k]) == label(v) for k, v in reference.items())]
        if not matches:
            raise ReportError(f"no row matches the reference {_reference_text(reference)}")
        for m in metrics:
            stats[f"{m} p"] = math.nan
        for block in blocks:
            in_block = [i for i in matches if i in block]
            if len(in_block) > 1:
                raise ReportError(f"reference {_reference_text(reference)} matches several rows; name every row key")
            for i in block if in_block else []:
                for m in metrics:
                    if i != in_block[0]:
                        stats.at[i, f"{m} p"] = reference_p_value(by_seed[i].get(m), by_seed[in_block[0]].get(m),
                                                                  values[i][m], values[in_block[0]][m])

    per_metric = [f"{m} {s}" for m in metrics for s in ("mean", "std", "best", "p") if f"{m} {s}" in stats]
    stats = stats[[*by, *cols, "n", *(f"n_{s}" for s in COUNTED), *per_metric]]
    stats.attrs = {"rows": by, "cols": cols, "metrics": metrics, "modes": directions, "reference": reference}
    return stats


def reference_p_value(a_by_seed: dict | None, b_by_seed: dict | None, a: np.ndarray, b: np.ndarray) -> float:
    """A row against the reference row: paired t on the seeds both ran (the seed fixes the data order,
    so the runs come in pairs) where each ran the same seeds once, Welch's t otherwise."""
    if a_by_seed and b_by_seed and set(a_by_seed) == set(b_by_seed) and len(a_by_seed) >= 2:
        seeds = sorted(a_by_seed)
        return compare_samples([a_by_seed[s] for s in seeds], [b_by_seed[s] for s in seeds], paired=True)["p"]
    return welch_p_value(a, b)


def _reference_text(reference: dict[str, Any]) -> str:
    return ",".join(f"{k}={label(v)}" for k, v in reference.items())


# ------------------------------------------------------------------------------------------------
# the tests a claim is judged by: paired where the runs were drawn in pairs, Welch otherwise


def compare_samples(a: Sequence[float], b: Sequence[float], paired: bool, confidence: float = 0.95) -> dict[str, Any]:
    """Mean difference a − b with its confidence interval and two-sided p-value.

    paired: a[i] and b[i] share a draw (a seed, hence the data order; a hyperparameter draw): Student's
    t on the differences (``scipy.stats.ttest_rel``); else Welch's t (``ttest_ind(equal_var=False)``).
    NaN values drop their pair (paired) or themselves (Welch). With fewer than 2 values a side the
    p-value and the interval are NaN. With no spread at all (every difference the same, or each side
    constant) there is no variance for t to stand on: the p-value is then the exact permutation test's
    (`_permutation_p`), and the interval the difference itself; none at all is p 1."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
        keep = ~(np.isnan(a) | np.isnan(b))
        a, b = a[keep], b[keep]
        diff = float((a - b).mean()) if len(a) else math.nan
        spread = np.ptp(a - b) if len(a) else 0.0
        result = None if len(a) < 2 or _constant(spread, diff) else scipy_stats.ttest_rel(a, b)
    else:
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        spread = max(np.ptp(a), np.ptp(b)) if len(a) and len(b) else 0.0
        result = None if len(a) < 2 or len(b) < 2 or _constant(spread, diff) else scipy_stats.ttest_ind(a, b, equal_var=False)
    out = {"test": "paired t" if paired else "Welch t", "n": (len(a), len(b)), "diff": diff}
    if result is not None:
        return {**out, "ci": tuple(float(x) for x in result.confidence_interval(confidence)), "p": float(result.pvalue)}
    if len(a) >= 2 and len(b) >= 2:  # no spread at all (to the last digits)
        if diff == 0:
            return {**out, "ci": (diff, diff), "p": 1.0}
        return {**out, "test": "sign-flip (exact)" if paired else "permutation (exact)", "ci": (diff, diff),
                "p": _permutation_p(a, b, paired)}
    return {**out, "ci": (math.nan, math.nan), "p": math.nan}


def _permutation_p(x: np.ndarray, y: np.ndarray, paired: bool, alternative: str = "two-sided") -> float:
    """The exact permutation test of the mean difference x − y (paired: every sign of the pairs'
    differences; else every split of the pooled values into groups of the two sizes). Where the
    samples have no spread, t is x/0; this test needs no variance, and how few draws there were bounds
    its p-value from below (2/2^n for n pairs that all differ alike, two-sided): three seeds whose
    differences tie, as accuracies counted on the same test set can, are not proof of a difference."""
    result = scipy_stats.permutation_test((x, y), lambda u, v, axis: u.mean(axis=axis) - v.mean(axis=axis),
                                          permutation_type="samples" if paired else "independent",
                                          vectorized=True, n_resamples=np.inf, alternative=alternative)
    return float(result.pvalue)


def _constant(spread: float, diff: float) -> bool:
    """No variance to estimate: values (or differences) equal to float precision, where scipy's t
    statistic is 0/0 or rounding noise."""
    return spread <= 1e-12 * max(1.0, abs(diff))


def noninferiority(a: Sequence[float], b: Sequence[float], margin: float, mode: str, paired: bool,
                   alpha: float = 0.05) -> dict[str, Any]:
    """"a does not hurt against b": the one-sided test that a is worse than b by less than `margin`
    (metric units, > 0), i.e. the (1 − 2α) interval of the difference lies on the good side of the
    margin (one half of TOST). `mode` is the metric's direction ("min": lower is better). A large
    p-value of a difference test is not this: it is absence of evidence, not evidence of absence.
    With fewer than 2 values a side there is no test (p NaN); with no spread at all, the exact
    permutation test as in `compare_samples`, except that results equal draw by draw (paired) or
    all equal (unpaired) are the same results, which do not hurt (p 0)."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    sign = 1.0 if mode == "min" else -1.0  # sign·(a − b) > 0: a is worse
    x, y = sign * a - margin, sign * b  # H0: sign·(a − b) ≥ margin; H1: sign·(a − b) < margin
    if paired:
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        enough = len(x) >= 2
        spread = np.ptp(x - y) if enough else 0.0
        same = np.array_equal(a[keep], b[keep])
    else:
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        enough = len(x) >= 2 and len(y) >= 2
        spread = max(np.ptp(x), np.ptp(y)) if enough else 0.0
        values = np.concatenate([a, b])
        same = enough and np.ptp(values[~np.isnan(values)]) == 0
    interval = compare_samples(a, b, paired, confidence=1 - 2 * alpha)
    if not enough:
        p = math.nan
    elif _constant(spread, interval["diff"]):
        p = 0.0 if same else _permutation_p(x, y, paired, alternative="less")
    elif paired:
        p = float(scipy_stats.ttest_rel(x, y, alternative="less").pvalue)
    else:
        p = float(scipy_stats.ttest_ind(x, y, equal_var=False, alternative="less").pvalue)
    return {**interval, "margin": margin, "p_noninferior": p, "noninferior": bool(p < alpha)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and does not
    count among the tests. Rejecting where the adjusted p < α controls the family-wise error at α."""
    p = np.asarray(p_values, float)
    order = [i for i in np.argsort(p) if not np.isnan(p[i])]
    m = len(order)
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
