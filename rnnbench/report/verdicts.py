"""Whether a published claim holds on a study's runs: rules that can fail, judged by the test that fits
how the runs were drawn, and that say "no power" where the budget could not have shown the claim.

A study's ``published.yaml`` states, beside its claims:

- ``control``: the study's positive control, a point (keys over the claim's own ``where``, so the budget
  and the length follow the claim) that must leave the memoryless baseline on every seed for a negative
  verdict to mean anything. A claim may name its own ``control``.
- ``pair_by``: the keys that make two runs a pair (default: the seed, which fixes the data order; Greff
  et al.'s variants share hyperparameter draws, so theirs is the draw). Two points whose runs match one
  to one on those keys are compared by a paired test; otherwise by Welch's.
- ``margin``: the largest harm that still "does not hurt" (metric units, or "2%" of the base's mean).
- ``k_of_n``: how many seeds must beat the baseline for "beats the baseline" (default: all of them).
- ``slowdown`` and a claim's ``paper_steps``: the steps the paper's model needed; where this recipe
  learns ``slowdown`` times slower (a claim may state its own), a failure before ``paper_steps ×
  slowdown`` is no power.

The rules (`judge`; `judge_all` adjusts a study's p-values together, Holm–Bonferroni at `ALPHA`):

- ``beats_baseline``: k of n seeds end below `BEATS_BASELINE` × the baseline; true needs k ≥ k_of_n,
  false needs k = 0.
- ``better_than``: the difference of means with its 95% interval, paired or Welch; yes where every
  compared point is worse and the Holm-adjusted p < α; a better mean the seeds do not separate is
  `MEAN_ONLY`.
- ``hurts``: true: the variant is worse than the base, Holm-adjusted p < α. false ("does not hurt"): the
  one-sided 95% bound of the harm lies under the margin (non-inferiority, one half of TOST); a large
  p-value is not that, and reads `INCONCLUSIVE`.
- ``fewer_divergences``: the point diverges on fewer seeds than each compared one (Fisher's exact test,
  one-sided); where even none against all could not reach α, no power.
- ``bound``: every profile at initialisation lies under Pascanu et al.'s bound.
- ``reaches``: k of n seeds reach the stated value of the metric (at least it where higher is better);
  true needs k ≥ k_of_n. ``stays_below``: no seed reaches it, with the control's power; a claim with
  ``fits_training: true`` also needs the point's own runs to leave the memoryless baseline in validation
  on every seed, else no power: a length-generalisation failure (Delétang et al. 2023's claims) means
  something only for a model that fitted the training lengths. ``fits_training: <value>`` asks more:
  the metric's validation counterpart (``final/val/…``: the training lengths) at that value on every
  seed, as well as the baseline left (leaving the baseline is not fitting). On ``reaches`` it makes a
  failure to reach no power where the training lengths were not fitted (a budget too short to fit them
  says nothing of generalising beyond them).

Any verdict other than a positive finding ("yes" to something happening) needs power: with a control
that stays at the baseline (or was not run), or before the paper's budget, it reads `NO_POWER`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from rnnbench.modules.diagnostics import summarise_profile
from rnnbench.report.runs import BUDGET_KEY, ReportError, key_value, label
from rnnbench.report.stats import compare_samples, holm, metric_mode, noninferiority

ALPHA = 0.05  # family-wise, over a study's claims (Holm–Bonferroni)
BEATS_BASELINE = 0.9  # a seed's final loss / memoryless baseline below this: it beats the baseline
BOUND_TOLERANCE = 1e-4  # log10 units: float32 rounding of norms near the last step
CLAIM_KINDS = ("beats_baseline", "better_than", "bound", "hurts", "fewer_divergences", "reaches", "stays_below")
MEAN_ONLY = "mean only"  # better by the mean, not significantly
ALL_DIVERGED = "diverged"  # every run of the point diverged: no value to judge
NO_POWER = "no power"  # the budget (or n) could not have shown the claim either way
INCONCLUSIVE = "inconclusive"  # "does not hurt": neither within the margin nor significantly worse
VERDICT_TEXT = {True: "yes", False: "**no**", None: "not run", MEAN_ONLY: "mean only (n.s.)",
                ALL_DIVERGED: "**diverged**", NO_POWER: "no power at this budget", INCONCLUSIVE: "inconclusive"}


def matching(df: pd.DataFrame, where: dict[str, Any], status: str | None = "completed") -> pd.DataFrame:
    mask = pd.Series(True, index=df.index)
    for key, value in where.items():
        if key not in df.columns:  # no run set the key: each has its default, which None names
            if value is None:
                continue
            return df.iloc[0:0]
        mask &= df[key].map(lambda v: label(key_value(v)) == label(value))
    return df[mask & (df["status"] == status)] if status else df[mask]


def values(runs: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in runs.columns:
        return np.array([])
    x = pd.to_numeric(runs[metric], errors="coerce").to_numpy(float)
    return x[~np.isnan(x)]


def baseline_ratios(runs: pd.DataFrame) -> np.ndarray:
    """Each completed run's final validation loss over its task's memoryless baseline."""
    if "final/val/loss_over_baseline" in runs.columns:
        ratio = pd.to_numeric(runs["final/val/loss_over_baseline"], errors="coerce")
    elif "final/val/loss" in runs.columns and "memoryless_baseline" in runs.columns:
        ratio = pd.to_numeric(runs["final/val/loss"], errors="coerce") / pd.to_numeric(runs["memoryless_baseline"], errors="coerce")
    else:
        return np.array([])
    ratio = ratio.to_numpy(float)
    return ratio[~np.isnan(ratio)]


def bound_margin(profile: Sequence[float], gamma: float) -> float:
    """max over t < T of log10(‖∂L/∂h_t‖/‖∂L/∂h_T‖) - (T - t)·log10 γ: ≤ 0 where the bound holds
    (t = T is left out: there both sides are 0 by definition)."""
    norms = np.asarray(profile, float)
    back = np.arange(len(norms))[::-1]  # T - t for t = 1..T
    with np.errstate(divide="ignore"):
        measured = np.log10(norms / norms[-1])  # a gradient flushed to 0 gives -inf: far below
    return float(np.nanmax((measured - back * math.log10(gamma))[:-1]))


def _mode(published: dict[str, Any], df: pd.DataFrame) -> str:
    return published.get("mode") or metric_mode(published["metric"], df) or "min"


def pair(a: pd.DataFrame, b: pd.DataFrame, metric: str, pair_by: Sequence[str]) -> tuple[np.ndarray, np.ndarray, bool]:
    """The two points' values, aligned pair by pair on the `pair_by` values both sides have (at least
    two pairs, each value once a side), else as they are (then unpaired)."""
    def keyed(runs: pd.DataFrame) -> dict[tuple, float] | None:
        if any(k not in runs.columns for k in pair_by):
            return None
        out = {}
        for _, run in runs.iterrows():
            key = tuple(label(key_value(run[k])) for k in pair_by)
            value = pd.to_numeric(pd.Series([run.get(metric)]), errors="coerce").iloc[0]
            if key in out or math.isnan(value):
                return None
            out[key] = value
        return out

    ka, kb = keyed(a), keyed(b)
    common = sorted(set(ka) & set(kb)) if ka is not None and kb is not None else []
    if len(common) >= 2:  # a draw one side lost (diverged, failed) leaves the pairs the others make
        return np.array([ka[k] for k in common]), np.array([kb[k] for k in common]), True
    return values(a, metric), values(b, metric), False


def _margin(spec: Any, base: np.ndarray) -> float:
    if isinstance(spec, str) and spec.endswith("%"):
        return abs(float(spec[:-1]) / 100 * base.mean())
    return float(spec)


def _budget(claim: dict[str, Any], runs: pd.DataFrame) -> float | None:
    budget = claim.get("where", {}).get(BUDGET_KEY)
    if budget is None and BUDGET_KEY in runs.columns and len(runs):
        budget = pd.to_numeric(runs[BUDGET_KEY], errors="coerce").max()
    return None if budget is None or pd.isna(budget) else float(budget)


def power(claim: dict[str, Any], df: pd.DataFrame, published: dict[str, Any], runs: pd.DataFrame) -> tuple[bool | None, str]:
    """Whether a negative verdict of `claim` could mean anything, and why not: True (the budget reaches
    the paper's, or the control left the baseline on every seed), False (the budget is before the
    paper's, or the control did not leave the baseline or was not run), None (neither is stated)."""
    control = claim.get("control", published.get("control"))
    paper_steps = claim.get("paper_steps")
    if paper_steps is not None:
        slowdown = float(claim.get("slowdown", published.get("slowdown", 1)))
        needed = float(paper_steps) * slowdown
        budget = _budget(claim, runs)
        if budget is not None and budget < needed:
            return False, f"{budget:,.0f} steps < {needed:,.0f} (the paper's {float(paper_steps):,.0f}" + (
                f" × this recipe's slowdown {slowdown:g})" if slowdown != 1 else ")")
        if budget is not None:  # the paper's own budget (at this recipe's pace) was given
            return True, ""
    where = {**claim.get("where", {}), **(control or {})}
    if control is None or where == claim.get("where", {}):  # a point is no control of itself
        return None, ""
    ratios = baseline_ratios(matching(df, where))
    name = ", ".join(f"{k}={label(v)}" for k, v in control.items())
    if not len(ratios):
        return False, f"control ({name}) not run"
    k = int((ratios < BEATS_BASELINE).sum())
    if k < len(ratios):
        return False, f"control ({name}) beats the baseline on {k} of {len(ratios)} seeds"
    return True, ""


def measure(claim: dict[str, Any], df: pd.DataFrame, published: dict[str, Any]) -> dict[str, Any]:
    """The statistics of one claim, before its verdict: n, mean, std, and per kind k-of-n, the
    difference with its interval and the raw p-value."""
    kinds = [k for k in CLAIM_KINDS if k in claim]
    if len(kinds) != 1:
        raise ReportError(f"a claim must state exactly one of {', '.join(CLAIM_KINDS)}; got {claim}")
    kind = kinds[0]
    where = claim.get("where", {})
    metric = published["metric"]
    runs = matching(df, where)
    x = values(runs, metric)
    out: dict[str, Any] = {"kind": kind, "n": len(x), "mean": x.mean() if len(x) else math.nan,
                           "std": x.std(ddof=1) if len(x) > 1 else math.nan,
                           "diverged": len(matching(df, where, status="diverged")), "runs": runs}
    pair_by = list(published.get("pair_by", ["seed"]))
    mode = out["mode"] = _mode(published, df)
    if kind == "beats_baseline":
        ratio = baseline_ratios(runs)
        if len(ratio):
            out.update(ratio=ratio.mean(), k=int((ratio < BEATS_BASELINE).sum()), n_ratio=len(ratio))
    elif kind in ("reaches", "stays_below"):
        threshold = float(claim[kind])
        reached = x >= threshold if mode == "max" else x <= threshold
        out.update(threshold=threshold, k_reach=int(reached.sum()), n_reach=len(x))
        ratio = baseline_ratios(runs)
        out["fitted"] = bool(len(ratio)) and bool((ratio < BEATS_BASELINE).all())
        fit = claim.get("fits_training")
        if not isinstance(fit, bool) and isinstance(fit, (int, float)):  # a value on the training lengths
            trained = values(runs, "final/" + metric.replace("test/", "val/", 1))
            fits = trained >= fit if mode == "max" else trained <= fit
            out["fitted"] = out["fitted"] and len(trained) == len(runs) and bool(fits.all())
    elif kind == "better_than":
        tests = []
        for other in claim["better_than"]:
            a, b, paired = pair(runs, matching(df, {**where, **other}), metric, pair_by)
            if not len(a) or not len(b):
                return out
            tests.append(compare_samples(a, b, paired=paired))
        signed = [(t["diff"] if mode == "min" else -t["diff"]) for t in tests]  # < 0: the claimed point is better
        out["tests"] = tests
        out["better_mean"] = all(s < 0 for s in signed)
        ps = [t["p"] for t in tests]
        if not any(math.isnan(p) for p in ps):  # one seed a side: no test, and no p to show
            out["p"] = max(ps)
    elif kind == "hurts":
        base = matching(df, {**where, **published["base"]})
        a, b, paired = pair(runs, base, metric, pair_by)
        if len(a) < 2 or len(b) < 2:
            return out
        test = compare_samples(a, b, paired=paired)
        out["tests"] = [test]
        out["worse_mean"] = (test["diff"] > 0) == (mode == "min")
        if not math.isnan(test["p"]):
            out["p"] = test["p"]
        if not claim["hurts"]:
            if "margin" not in published and "margin" not in claim:
                raise ReportError(f"claim {where}: 'does not hurt' needs a margin (published.yaml: margin)")
            margin = _margin(claim.get("margin", published.get("margin")), b)
            out["equivalence"] = noninferiority(a, b, margin, mode, paired, alpha=ALPHA)
    elif kind == "fewer_divergences":
        def counts(point: dict[str, Any]) -> tuple[int, int]:
            diverged = len(matching(df, point, status="diverged"))
            return diverged, diverged + len(matching(df, point))

        mine = counts(where)
        others = [counts({**where, **other}) for other in claim["fewer_divergences"]]
        out.update(n=mine[1], rates=[mine, *others])
        if mine[1] and all(t for _, t in others):
            ps, reach = [], []
            for d, t in others:
                table = [[mine[0], mine[1] - mine[0]], [d, t - d]]
                ps.append(scipy_stats.fisher_exact(table, alternative="less").pvalue)
                reach.append(scipy_stats.fisher_exact([[0, mine[1]], [t, 0]], alternative="less").pvalue)
            out.update(p=float(max(ps)), reachable=float(max(reach)),
                       fewer=all(mine[0] / mine[1] < d / t for d, t in others))
    elif kind == "bound":
        layer = published.get("layer", "layer0")
        profiles = [p[layer] for p in runs.get("profile_init", pd.Series(dtype=object)) if isinstance(p, dict)]
        if profiles:
            factors = np.array([summarise_profile(p)["backward_factor"] for p in profiles])
            out.update(n=len(factors), mean=factors.mean(), std=factors.std(ddof=1) if len(factors) > 1 else math.nan)
            out["margin"] = max(bound_margin(p, float(claim["bound"])) for p in profiles)
    return out


def decide(claim: dict[str, Any], result: dict[str, Any], df: pd.DataFrame, published: dict[str, Any],
           p_adjusted: float | None = None) -> dict[str, Any]:
    """The verdict of a measured claim, with the p-value adjusted across its study (default: itself)."""
    out = {k: v for k, v in result.items() if k != "runs"}
    kind = out.pop("kind")
    p = out.get("p", math.nan) if p_adjusted is None else p_adjusted
    if "p" in out:
        out["p_holm"] = p
    holds: Any = None
    positive = False  # a "yes" to something happening needs no control
    if out["diverged"] and not out["n"] and kind != "fewer_divergences":
        out["holds"] = ALL_DIVERGED
        return out
    if kind == "beats_baseline" and "k" in out:
        needed = out["n_ratio"] if published.get("k_of_n", "all") == "all" else int(published["k_of_n"])
        if claim["beats_baseline"]:
            holds = out["k"] >= needed
            positive = holds
        else:
            holds = out["k"] == 0
    elif kind in ("reaches", "stays_below") and out.get("n_reach"):
        if kind == "reaches":
            needed = out["n_reach"] if published.get("k_of_n", "all") == "all" else int(published["k_of_n"])
            holds = out["k_reach"] >= needed
            positive = holds
        else:
            holds = out["k_reach"] == 0
        fit = claim.get("fits_training")
        if fit and not out["fitted"] and (kind == "stays_below" or not holds):  # a reach needs no fit
            out["holds"] = NO_POWER
            out["why"] = ("did not leave the baseline in validation on every seed" if fit is True else
                          f"did not reach {fit:g} in validation (the training lengths) on every seed")
            return out
    elif kind == "better_than" and "tests" in out:
        if not out["better_mean"]:
            holds = False
        else:
            holds = True if p < ALPHA else MEAN_ONLY
        positive = holds is True
    elif kind == "hurts" and "tests" in out:
        significantly_worse = bool(out["worse_mean"] and p < ALPHA)
        if claim["hurts"]:
            holds = significantly_worse
            positive = holds
        elif out["equivalence"]["noninferior"]:
            holds = True
        else:
            holds = False if significantly_worse else INCONCLUSIVE
    elif kind == "fewer_divergences" and "p" in out:
        if out["reachable"] >= ALPHA:
            out["holds"] = NO_POWER
            out["why"] = f"n = {out['n']}: even none against all diverged gives p = {out['reachable']:.2g} ≥ {ALPHA}"
            return out
        holds = bool(out["fewer"] and p < ALPHA)
        positive = holds
    elif kind == "bound" and "margin" in out:
        holds = out["margin"] <= BOUND_TOLERANCE
        positive = True  # measured at initialisation: no budget involved
    if holds is not None and not positive:
        ok, why = power(claim, df, published, result["runs"])
        if ok is False:
            out["why"] = why
            holds = NO_POWER
    out["holds"] = holds
    return out


def judge(claim: dict[str, Any], df: pd.DataFrame, published: dict[str, Any]) -> dict[str, Any]:
    """One claim judged alone (its p-value is its own family)."""
    return decide(claim, measure(claim, df, published), df, published)


def judge_all(claims: Sequence[dict[str, Any]], df: pd.DataFrame, published: dict[str, Any]) -> list[dict[str, Any]]:
    """Every claim of a study, the p-values adjusted together (Holm–Bonferroni): six claims tested at
    0.05 each would claim something false one time in four."""
    measured = [measure(claim, df, published) for claim in claims]
    adjusted = holm([m.get("p", math.nan) for m in measured])
    return [decide(c, m, df, published, None if math.isnan(p) else p) for c, m, p in zip(claims, measured, adjusted)]


def compared_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs a study compares (its findings, its figure): the completed ones, less a fair comparison's
    screen, which tries settings on one seed each and compares nothing (it has its own figure)."""
    done = df[df["status"] == "completed"]
    return done[done["fair"].map(lambda v: v != "screen")] if "fair" in done.columns else done


def findings(df: pd.DataFrame, published: dict[str, Any], key: str, within: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every pair of values of `key` (the compared key: cell, variant) within each group of `within`
    keys (a budget, a length), tested as the claims are (paired where the runs pair), Holm-adjusted
    across all pairs: the differences a study found, claimed or not."""
    metric = published["metric"]
    pair_by = list(published.get("pair_by", ["seed"]))
    mode = _mode(published, df)
    done = compared_runs(df)
    if key not in done.columns:
        return []
    out = []
    groups = [((), done)] if not within else list(done.groupby([k for k in within if k in done.columns], dropna=False))
    for group, runs in groups:
        group = group if isinstance(group, tuple) else (group,)
        present = sorted({label(key_value(v)) for v in runs[key] if key_value(v) is not None})
        for i, first in enumerate(present):
            for second in present[i + 1:]:
                a, b, paired = pair(matching(runs, {key: first}), matching(runs, {key: second}), metric, pair_by)
                if len(a) < 2 or len(b) < 2:
                    continue
                test = compare_samples(a, b, paired=paired)
                if math.isnan(test["p"]):
                    continue
                if (test["diff"] < 0) == (mode == "min"):
                    better, worse = first, second
                else:  # shown as better − worse
                    better, worse = second, first
                    test = {**test, "diff": -test["diff"], "ci": (-test["ci"][1], -test["ci"][0])}
                out.append({"group": dict(zip(within, group)), "better": better, "worse": worse, **test})
    for finding, p in zip(out, holm([f["p"] for f in out])):
        finding["p_holm"] = p
    return out
