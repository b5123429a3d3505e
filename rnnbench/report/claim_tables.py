"""A study's published claims beside what its records measured: the table (Markdown, LaTeX, CSV), the
significant differences found whether claimed or not, the importance of the searched settings, and the
citations.

Whether a claim holds is decided by a stated rule, never by eye: `rnnbench.report.verdicts` (beats the
baseline on k of n seeds; better than / hurts by a paired or Welch test with its interval, Holm-adjusted
across the study; does not hurt by non-inferiority within a stated margin; fewer divergences by Fisher's
test; Pascanu et al.'s bound), and a negative verdict where the study's positive control did not learn
reads "no power at this budget". Below each table, every significant difference between the compared
values is listed, claimed or not.

Every rule reads completed runs; the table says how many runs of a point diverged, and a point whose
every run diverged reads "diverged" (not "not run", and not a value).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from rnnbench.report import study_records, verdicts
from rnnbench.report.runs import BUDGET_KEY, label, read_records, records_frame


def claim_text(claim: dict[str, Any], published: dict[str, Any]) -> str:
    if "beats_baseline" in claim:
        return "beats the baseline" if claim["beats_baseline"] else "at the baseline"
    if "better_than" in claim:
        return "better than " + ", ".join(_other_text(other) for other in claim["better_than"])
    if "fewer_divergences" in claim:
        return "diverges less than " + ", ".join(_other_text(other) for other in claim["fewer_divergences"])
    if "reaches" in claim:
        return f"reaches {label(claim['reaches'])}"
    if "stays_below" in claim:
        return f"stays below {label(claim['stays_below'])}"
    if "bound" in claim:
        return f"‖∂L/∂h_t‖ ≤ {label(float(claim['bound']))}^(T−t)·‖∂L/∂h_T‖"
    return ("hurts" if claim["hurts"] else "does not hurt") + " (vs " + ", ".join(
        f"{label(v)}" for v in published["base"].values()) + ")"


def _test_text(test: dict[str, Any], precision: int) -> str:
    """"paired t: Δ −0.25 [−0.31, −0.19], p = 0.001" (the difference claimed − compared, 95% interval)."""
    low, high = test["ci"]
    interval = "" if math.isnan(low) else f" [{low:+.2g}, {high:+.2g}]"
    p = "p = –" if math.isnan(test["p"]) else f"p = {test['p']:.2g}"
    return f"{test['test']}: Δ {test['diff']:+.{precision - 1}g}{interval}, {p}"


def measured_text(result: dict[str, Any], precision: int = 4) -> str:
    """The measured column: mean ± std over seeds, then what the rule read (k of n, the test, the
    interval, the Holm-adjusted p) and, for a verdict without power, why."""
    text = "–" if result["n"] == 0 else (
        f"{result['mean']:.{precision}g} ± " + ("–" if math.isnan(result["std"]) else f"{result['std']:.2g}"))
    details = []
    if "margin" in result and "tests" not in result:  # a bound claim shows the profile's fitted factor
        text = f"factor {text} per step; excess over bound {result['margin']:+.2g} (log10)"
    if "k" in result:
        details.append(f"{result['ratio']:.2f}× baseline; {result['k']} of {result['n_ratio']} seeds below "
                       f"{verdicts.BEATS_BASELINE}×")
    if result.get("n_reach"):
        sign = "≤" if published_mode_is_min(result) else "≥"
        details.append(f"{result['k_reach']} of {result['n_reach']} seeds {sign} {result['threshold']:g}")
    for test in result.get("tests", []):
        details.append(_test_text(test, precision))
    if "equivalence" in result:
        eq = result["equivalence"]
        worst = eq["ci"][1] if published_mode_is_min(result) else -eq["ci"][0]
        details.append(f"harm ≤ {worst:+.2g} (one-sided 95%) vs margin {eq['margin']:.2g}")
    if "rates" in result:
        details.append("diverged " + " vs ".join(f"{d} of {t}" for d, t in result["rates"])
                       + ("" if "p" not in result else f", Fisher p = {result['p']:.2g}"))
    if "p_holm" in result and ("tests" in result or "rates" in result):
        details.append(f"Holm p = {result['p_holm']:.2g}")
    if result.get("why"):
        details.append(result["why"])
    if details:
        text += " (" + "; ".join(details) + ")"
    if result["diverged"] and "rates" not in result:  # the rules read completed runs: say what they left out
        total = result["n"] + result["diverged"]
        text = ("" if result["n"] == 0 else text + "; ") + f"{result['diverged']} of {total} diverged"
    return text


def published_mode_is_min(result: dict[str, Any]) -> bool:
    return result.get("mode", "min") == "min"


def _other_text(other: dict[str, Any]) -> str:
    """A compared point as the table names it: "vanilla"; with keys past the first that it sets,
    "vanilla (model.hidden_size=127)" (a key given as null, i.e. left at the preset's value, is not shown)."""
    (_, first), *rest = other.items()
    extra = [f"{key}={label(value)}" for key, value in rest if value is not None]
    return label(first) + (f" ({', '.join(extra)})" if extra else "")


def comparison(study: str | Path, records_path: str | Path | None = None, precision: int = 4,
               runs: pd.DataFrame | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the published-beside-measured table of `study` (a name under docs/results/
    or a published.yaml), measured on its committed records, on `records_path`, or on `runs` (the
    DataFrame `rnnbench.report.load_runs` reads from sweep folders)."""
    published = study_records.read_published(study)
    folder = study_records.folder(study)
    df = with_budget(runs) if runs is not None else records_frame(read_records(records_path or folder))
    keys = list(dict.fromkeys(k for claim in published["claims"] for k in claim.get("where", {})))
    metric = published["metric"]
    header = [*keys, "published", "source", "claim", f"rnnbench ({metric.removeprefix('final/')})", "n", "holds"]
    body = []
    for claim, result in zip(published["claims"], verdicts.judge_all(published["claims"], df, published)):
        value = claim.get("value")
        source = published["sources"][claim["source"]]
        body.append([*(label(claim.get("where", {}).get(k)) for k in keys),
                     "–" if value is None else label(value), source["cite"], claim_text(claim, published),
                     measured_text(result, precision), str(result["n"]), verdicts.VERDICT_TEXT[result["holds"]]])
    return header, body


def with_budget(df: pd.DataFrame) -> pd.DataFrame:
    """Runs read from sweep folders with the `BUDGET_KEY` column the records have (the override,
    else the resolved config's value)."""
    df = df.copy()
    config = df.get(f"cfg.{BUDGET_KEY}", pd.Series(None, index=df.index))
    df[BUDGET_KEY] = df[BUDGET_KEY].where(df[BUDGET_KEY].notna(), config) if BUDGET_KEY in df else config
    return df


def table(study: str | Path, fmt: str = "md", records_path: str | Path | None = None,
          runs: pd.DataFrame | None = None) -> str:
    header, body = comparison(study, records_path, runs=runs)
    if fmt == "csv":
        return pd.DataFrame(body, columns=header).to_csv(index=False)
    if fmt == "latex":
        return tabulate(body, headers=header, tablefmt="latex_booktabs", disable_numparse=True) + "\n"
    text = tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True) + "\n"
    return text + findings_text(study, records_path, runs)


def findings_text(study: str | Path, records_path: str | Path | None = None, runs: pd.DataFrame | None = None) -> str:
    """Every significant difference between the study's compared values (``compared`` in
    published.yaml, else the cell), claimed or not, within each group of ``findings_within`` (default:
    the budget and the claims' other keys): a study reports what it found, not only what it looked for."""
    published = study_records.read_published(study)
    folder = study_records.folder(study)
    df = with_budget(runs) if runs is not None else records_frame(read_records(records_path or folder))
    key = next(iter(published.get("compared", {"cell": None})))
    within = published.get("findings_within") or [
        k for k in dict.fromkeys([BUDGET_KEY, *(k for c in published["claims"] for k in c.get("where", {}))])
        if k != key and k in df.columns]
    found = verdicts.findings(df, published, key, within)
    significant = [f for f in found if f["p_holm"] < verdicts.ALPHA]
    if not found:
        return ""
    lines = [f"\nSignificant differences between {key} values, claimed or not ({len(significant)} of {len(found)} "
             f"pairs; paired where the runs pair, Holm across all {len(found)}):\n"]
    for f in significant:
        where = ", ".join(f"{k}={label(v)}" for k, v in f["group"].items() if v is not None and not pd.isna(v))
        lines.append(f"- {(where + ': ') if where else ''}{f['better']} better than {f['worse']} "
                     f"({_test_text(f, 3)}, Holm p = {f['p_holm']:.2g})\n")
    if not significant:
        lines.append("- none\n")
    return "".join(lines)


def importance(study: str | Path, records_path: str | Path | None = None) -> str | None:
    """Greff et al.'s second question: how much each searched hyperparameter (and the variant)
    matters, from the committed trials (`rnnbench.report.importance`, Optuna's fANOVA-like mean
    decrease impurity). None when the study searched nothing or has fewer than 2 runs."""
    from rnnbench.report.importance import param_importance, search_space

    published = study_records.read_published(study)
    if "search" not in published:
        return None
    folder = study_records.folder(study)
    df = records_frame(read_records(records_path or folder))
    if published.get("importance_where"):  # the search's own trials, not a check run beside them
        df = verdicts.matching(df, published["importance_where"], status=None)
    if (df.get("status") == "completed").sum() < 2:
        return None
    space = search_space(published["search"])
    from optuna.distributions import CategoricalDistribution

    for key, values in published.get("compared", {}).items():
        space[key] = CategoricalDistribution(values)
    result = param_importance(df, space, metric=published["metric"])
    from rnnbench.report.importance import importance_text

    return importance_text(result)


def sources_text(study: str | Path) -> str:
    """The citations under a table: paper, table/figure and page, and whether checked here."""
    published = study_records.read_published(study)
    return "".join(f"- {s['cite']}: {s['paper']}, {s['where']}. {s['verified']}\n"
                   for s in published["sources"].values())
