"""Studies: the literature's comparisons rerun with rnnbench, their committed records, and the
published values set beside them (docs/results.md; docs/results/<study>/).
(Over 400 lines on purpose: a study's records, its rules and its figure are one concept, read together when a claim is checked.)

    python -m rnnbench.report.studies export adding outputs/sweeps/DATE/TIME  # sweep folder(s) -> runs.jsonl
    python -m rnnbench.report.studies export adding --add NEW_SWEEP          # ... beside the committed ones
    python -m rnnbench.report.studies table adding [--format latex]          # published beside measured
    python -m rnnbench.report.studies figure adding                          # docs/results/adding/adding.png
    python -m rnnbench.report.studies render                                 # docs/results.md's tables from the records
    python -m rnnbench.report.studies wikitext2-sample DIR                   # the folder of study 5

A study's folder holds three files, all small enough for git:

- ``runs.jsonl``: one row per run (`record`): the swept overrides, seed, status, steps, wall time,
  parameter count, final / best / test metrics, the rnnbench commit and config fingerprint, and for the
  gradient study the temporal profile at initialisation. Written from sweep folders by `export`;
  `rnnbench.report` reads it like a sweep folder (``python -m rnnbench.report docs/results/adding``).
- ``published.yaml``: the published claims: each with its paper, table or figure and page, whether the
  number was checked against the paper or its code here, and the claim in kind (`CLAIM_KINDS`).
- ``<study>.png``: the figure, drawn from ``runs.jsonl`` alone.

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

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml
from tabulate import tabulate

from rnnbench.errors import UserError, fail
from rnnbench.records import run_folder
from rnnbench.report import verdicts
from rnnbench.report.runs import (BUDGET_KEY, RUNS_FILE, ReportError, fair_stage, find_run_dirs, groups, label,
                                  read_records, records_frame)

RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"
PUBLISHED_FILE = "published.yaml"
CLAIM_KINDS = verdicts.CLAIM_KINDS
MEAN_ONLY, ALL_DIVERGED, NO_POWER, INCONCLUSIVE = verdicts.MEAN_ONLY, verdicts.ALL_DIVERGED, verdicts.NO_POWER, verdicts.INCONCLUSIVE
judge, bound_margin = verdicts.judge, verdicts.bound_margin


# --------------------------------------------------------------------------------------------
# sweep folders -> records


def record(run_dir: Path, detail: bool = False) -> dict[str, Any]:
    """One run folder as one compact row: what a table needs, nothing a checkpoint holds. With
    `detail`, also the temporal profile at initialisation and the training curve (step, train/loss,
    grad/global_norm before clipping) at the logged steps."""
    try:
        summary = run_folder.read_summary(run_dir)
    except FileNotFoundError:
        summary = run_folder.Summary(status=run_folder.INCOMPLETE)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else summary.overrides
    row = {
        "job": run_dir.name,
        "overrides": [str(o) for o in overrides or []],
        **{k: getattr(summary, k) for k in ("status", "error", "diverged_at", "task", "cell", "seed", "steps",
                                       "hidden_size", "num_params", "memoryless_baseline", "main_metric",
                                       "main_metric_mode", "wall_time_s", "train_time_s", "threads",
                                       "git_commit", "config_fingerprint")},
        **{section: getattr(summary, section) for section in ("final", "best", "test")},
        "max_steps": _config_value(run_dir, BUDGET_KEY),
        "machine": {k: (summary.machine or {}).get(k) for k in ("cpu", "aten_capability", "blas")},
        "fair": fair_stage(run_dir),  # the stage of a fair comparison: claims can name the tuned runs
    }
    if detail:
        initial = next((p for p in run_folder.read_profiles(run_dir) if p.get("step") == 0), None)
        row["profile_init"] = initial["layers"] if initial else None
        row["train_curve"] = [[m["step"], m["train/loss"], m["grad/global_norm"]]
                              for m in run_folder.read_metrics(run_dir) if "train/loss" in m and "grad/global_norm" in m]
    return row


def _config_value(run_dir: Path, key: str) -> Any:
    """`key` (dotted) of the run's resolved config, None when the run wrote no config."""
    try:
        value: Any = run_folder.read_config(run_dir)
    except FileNotFoundError:
        return None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def export(study: str, sweeps: Sequence[str | Path], out_dir: Path | None = None, detail: bool = False,
           add: bool = False) -> Path:
    """Write ``runs.jsonl`` of `study` from its sweep folders (sorted by sweep and job, one line per run).

    `add`: keep the rows already in the file whose sweep (folder name) is not among `sweeps`, so a new
    sweep joins the committed records of sweeps whose folders are gone (another machine, a cleaned disk);
    a sweep exported again replaces its own rows."""
    out_dir = Path(out_dir or RESULTS_DIR / study)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for sweep in sweeps:
        for run_dir in find_run_dirs(sweep):
            rows.append({"sweep": Path(sweep).name, **record(run_dir, detail)})
    if not rows:
        raise ReportError(f"no runs found under {', '.join(map(str, sweeps))}")
    if add and (out_dir / RUNS_FILE).is_file():
        names = {Path(sweep).name for sweep in sweeps}
        rows += [r for r in read_records(out_dir) if r.get("sweep") not in names]
    rows.sort(key=lambda r: (r["sweep"], int(r["job"]) if r["job"].isdigit() else r["job"]))
    path = out_dir / RUNS_FILE
    run_folder.atomic_write_text(path, "".join(run_folder.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------
# published claims and the rules that judge them


def read_published(study: str | Path) -> dict[str, Any]:
    path = Path(study) if Path(study).suffix == ".yaml" else RESULTS_DIR / str(study) / PUBLISHED_FILE
    if not path.is_file():
        raise ReportError(f"no published values at {path}")
    published = yaml.safe_load(path.read_text(encoding="utf-8"))
    for i, claim in enumerate(published["claims"]):
        kinds = [k for k in CLAIM_KINDS if k in claim]
        if len(kinds) != 1:
            raise ReportError(f"{path}: claim {i + 1} must state exactly one of {', '.join(CLAIM_KINDS)}; got {claim}")
        if claim["source"] not in published["sources"]:
            raise ReportError(f"{path}: claim {i + 1} cites {claim['source']!r}, not in sources")
    return published


def claim_text(claim: dict[str, Any], published: dict[str, Any]) -> str:
    if "beats_baseline" in claim:
        return "beats the baseline" if claim["beats_baseline"] else "at the baseline"
    if "better_than" in claim:
        return "better than " + ", ".join(_other_text(other) for other in claim["better_than"])
    if "fewer_divergences" in claim:
        return "diverges less than " + ", ".join(_other_text(other) for other in claim["fewer_divergences"])
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
    for test in result.get("tests", []):
        details.append(_test_text(test, precision))
    if "equivalence" in result:
        eq = result["equivalence"]
        worst = eq["ci"][1] if published_mode_is_min(result) else -eq["ci"][0]
        details.append(f"harm ≤ {worst:+.2g} (one-sided 95%) vs margin {eq['margin']:.2g}")
    if "rates" in result:
        details.append("diverged " + " vs ".join(f"{d} of {t}" for d, t in result["rates"])
                       + ("" if "p" not in result else f", Fisher p = {result['p']:.2g}"))
    if "p_holm" in result and "tests" in result and len(result.get("tests", [])) > 0:
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
    published = read_published(study)
    folder = Path(study).parent if Path(study).suffix == ".yaml" else RESULTS_DIR / str(study)
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
    published = read_published(study)
    folder = Path(study).parent if Path(study).suffix == ".yaml" else RESULTS_DIR / str(study)
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

    published = read_published(study)
    if "search" not in published:
        return None
    folder = Path(study).parent if Path(study).suffix == ".yaml" else RESULTS_DIR / str(study)
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
    published = read_published(study)
    return "".join(f"- {s['cite']}: {s['paper']}, {s['where']}. {s['verified']}\n"
                   for s in published["sources"].values())


# --------------------------------------------------------------------------------------------
# figures, from the records alone


def figure(study: str, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    published = read_published(study)
    df = records_frame(read_records(RESULTS_DIR / study))
    out = Path(out or RESULTS_DIR / study / f"{study}.png")
    spec = published["figure"]
    if spec["kind"] == "profile":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        _profile_panel(axes[0], df, spec)
        _clipping_panel(axes[1], df, spec)
    elif spec["kind"] == "bars":
        fig, ax = plt.subplots(figsize=(6, 4))
        metric = published["metric"]
        x_keys = _keys(spec["x"])
        groups = _groups(df[df["status"] == "completed"], x_keys)
        values = [verdicts.values(runs, metric) for _, runs in groups]
        ax.bar([_group_label(x_keys, x) for x, _ in groups], [v.mean() for v in values],
               yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values], capsize=4, color="tab:blue")
        for i, v in enumerate(values):  # every seed, so the spread is visible
            ax.plot([i] * len(v), v, "k.", markersize=4)
        ax.set_xlabel(", ".join(x_keys))
        ax.set_ylabel(metric)
        ax.set_yscale(spec.get("yscale", "linear"))
        ax.tick_params(axis="x", labelsize=7)
        if len(x_keys) > 1:  # "peephole, 2000 steps": long labels, slanted so they do not overlap
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        ax.set_title(spec["title"], fontsize=10)
    else:
        curves = spec.get("curves")  # a second panel: the training curves of one point, seed by seed
        fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12 if curves else 6, 4), squeeze=False)
        ax = axes[0][0]
        if curves:
            _curves_panel(axes[0][1], df, curves)
        x_key, metric = spec["x"], published["metric"]
        line_keys = _keys(spec["lines"])
        for line, runs in _groups(df[df["status"] == "completed"], line_keys):
            points = [(float(x), verdicts.values(r, metric)) for (x,), r in _groups(runs, [x_key])]
            xs = [p[0] for p in points]
            ax.errorbar(xs, [v.mean() for _, v in points], yerr=[v.std(ddof=1) if len(v) > 1 else 0 for _, v in points],
                        marker="o", capsize=3, label=_group_label(line_keys, line))
        if spec.get("baseline"):
            ax.plot(*baseline_curve(df, x_key), "k--", label="memoryless baseline")
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric.removeprefix("final/"))
        ax.set_yscale(spec.get("yscale", "linear"))
        ax.legend(fontsize=8)
        ax.set_title(spec["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _keys(spec: str | Sequence[str]) -> list[str]:
    """A figure's `x` or `lines`: one key or a list (e.g. [cell, train.max_steps])."""
    return [spec] if isinstance(spec, str) else list(spec)


def _group_label(keys: Sequence[str], values: tuple) -> str:
    """"lstm" for one key; "lstm, 10000 steps" with the budget; else "key=value" past the first,
    left out where the runs did not set the key (the preset's value)."""
    parts = [label(values[0])]
    for key, value in zip(keys[1:], values[1:]):
        if value is None:
            continue
        parts.append(f"{label(value)} steps" if key == BUDGET_KEY else f"{key}={label(value)}")
    return ", ".join(parts)


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """`rnnbench.report.runs.groups`; a key no run set (e.g. optim.alpha in another study's records) is
    None for every run, not an error."""
    return groups(df.assign(**{k: None for k in keys if k not in df.columns}), list(keys))


def baseline_curve(df: pd.DataFrame, x_key: str) -> tuple[list[float], list[float]]:
    """The memoryless baseline at each x, as the runs recorded it (summary.json's `memoryless_baseline`,
    the task's own definition: tasks/copy.py, tasks/adding.py), so the figure never restates a formula.
    Runs at one x that recorded different baselines (another copy length, say) have no one curve: an error."""
    recorded = df[[x_key, "memoryless_baseline"]].dropna() if "memoryless_baseline" in df else df.iloc[:0]
    xs, ys = [], []
    for x, runs in recorded.groupby(x_key, sort=True):
        values = sorted(set(runs["memoryless_baseline"]))
        if len(values) > 1:
            raise ReportError(f"runs at {x_key}={x} recorded different memoryless baselines {values}: "
                              "one baseline curve cannot stand for them")
        xs.append(float(x))
        ys.append(values[0])
    if not xs:
        raise ReportError("the figure asks for the memoryless baseline, but no run recorded one")
    return xs, ys


def _profile_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """log10 ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at initialisation against T - t, mean over seeds, with γ^(T-t)."""
    gain_key = "cell.recurrent_gain"
    colours = plt_colours()
    for i, ((cell, gain), runs) in enumerate(_groups(df[df["status"] == "completed"], ["cell", gain_key])):
        profiles = [np.asarray(p["layer0"], float) for p in runs["profile_init"] if isinstance(p, dict)]
        if not profiles:
            continue
        with np.errstate(divide="ignore"):
            ratios = np.mean([np.log10(p / p[-1]) for p in profiles], axis=0)[::-1]  # index = T - t
        style = "-" if cell == "vanilla" else (":" if cell == "lstm" else "-.")
        colour = colours[[0.5, 0.9, 1.0, 1.1, 1.5].index(float(gain)) % len(colours)] if float(gain) in (0.5, 0.9, 1.0, 1.1, 1.5) else None
        ax.plot(ratios, style, color=colour, label=f"{cell} γ={gain:g}")
        if cell == "vanilla":
            steps = np.arange(len(ratios))
            ax.plot(steps, steps * math.log10(float(gain)), "--", color=colour, alpha=0.5, linewidth=0.8)
    ax.set_ylim(spec.get("ylim", [-12, 8]))
    ax.set_xlabel("T − t (steps back from the loss)")
    ax.set_ylabel("log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at init")
    ax.set_title("measured (solid: tanh; dotted LSTM, dash-dot GRU)\nand the bound γ^(T−t) (dashed)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def _clipping_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """The tanh RNN at the largest gain: gradient norm (before clipping) and training loss over the
    steps, clipped by norm against unclipped (mean over seeds)."""
    tanh = df[(df["cell"] == "vanilla") & (df["status"] == "completed")]
    gain = max(float(g) for g in tanh["cell.recurrent_gain"])
    twin = ax.twinx()
    for i, ((mode,), runs) in enumerate(_groups(tanh[tanh["cell.recurrent_gain"].astype(float) == gain],
                                                ["train.clip_mode"])):
        curves = [np.asarray(c, float) for c in runs["train_curve"] if isinstance(c, list) and c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)  # columns: step, train/loss, grad norm
        colour = plt_colours()[i]
        ax.plot(mean[:, 0], mean[:, 2], color=colour, label=f"‖∇‖, clip_mode={mode}")
        twin.plot(mean[:, 0], mean[:, 1], "--", color=colour, label=f"train loss, clip_mode={mode}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm before clipping (solid)")
    twin.set_ylabel("training MSE (dashed)")
    ax.set_title(spec.get("clip_title", "") + f" (γ={gain:g})", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")


def training_curves(df: pd.DataFrame, where: dict[str, Any]) -> list[tuple[Any, np.ndarray]]:
    """(seed, rows of step, train/loss, grad norm) of each completed run at `where` that kept its
    training curve (`export --detail`), by seed."""
    runs = verdicts.matching(df, where)
    out = [(seed, np.asarray(c, float)) for seed, c in zip(runs["seed"], runs["train_curve"])
           if isinstance(c, list) and c]
    return sorted(out, key=lambda pair: pair[0])


def _curves_panel(ax, df: pd.DataFrame, spec: dict[str, Any]) -> None:
    """Training loss (a logged step's batch; `smooth`: running mean over that many) against step at
    one point (`spec["where"]`), one line per seed, with the memoryless baseline those runs recorded:
    the published figures' view of when a cell leaves the baseline."""
    curves = training_curves(df, spec["where"])
    smooth = int(spec.get("smooth", 1))  # a running mean over this many logged steps
    for seed, curve in curves:
        loss = pd.Series(curve[:, 1]).rolling(smooth, min_periods=1).mean()
        ax.plot(curve[:, 0], loss, linewidth=0.8, label=f"seed {seed}")
    if not curves:
        ax.text(0.5, 0.5, "no training curves in the records\n(export with --detail)", ha="center",
                transform=ax.transAxes)
    baselines = set(verdicts.values(verdicts.matching(df, spec["where"]), "memoryless_baseline"))
    if len(baselines) == 1:  # the task's own value, as each run's summary recorded it
        ax.axhline(baselines.pop(), color="k", linestyle="--", label="memoryless baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss" + (f" (running mean of {smooth} logged batches)" if smooth > 1 else ""))
    ax.set_ylim(*spec.get("ylim", [None, None]))
    ax.legend(fontsize=8)
    ax.set_title(spec["title"], fontsize=10)


def plt_colours() -> list[str]:
    return ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


# --------------------------------------------------------------------------------------------
# the tables of docs/results.md


def render_tables(path: Path) -> list[str]:
    """Rewrite each ``<!-- study:NAME -->`` … ``<!-- /study:NAME -->`` block of `path` with
    `table(NAME)`, so the page's tables are the committed records' (a test checks docs/results.md's are)."""
    import re

    text = path.read_text(encoding="utf-8")
    done: list[str] = []

    def render(match: re.Match) -> str:
        done.append(match.group(1))
        return f"<!-- study:{match.group(1)} -->\n{table(match.group(1))}<!-- /study:{match.group(1)} -->"

    new = re.sub(r"<!-- study:(\w+) -->\n.*?<!-- /study:\1 -->", render, text, flags=re.S)
    if new != text:
        run_folder.atomic_write_text(path, new)
    return done


# --------------------------------------------------------------------------------------------
# study 5's data folder


def wikitext2_sample(source: Path, out: Path) -> Path:
    """train = valid.txt; valid = test = test.txt with every word not in train mapped to <unk>.

    pytorch/examples word_language_model builds its vocabulary from all three files, rnnbench from
    train only: with this folder both see the same vocabulary (the words of valid.txt, <eos>, <unk>).
    """
    out.mkdir(parents=True, exist_ok=True)
    train = (source / "valid.txt").read_text(encoding="utf-8")
    vocabulary = set(train.split()) | {"<unk>"}
    lines = (source / "test.txt").read_text(encoding="utf-8").split("\n")
    mapped = "\n".join(" ".join(w if w in vocabulary or not w else "<unk>" for w in line.split(" ")) if line.strip() else line
                       for line in lines)
    (out / "train.txt").write_text(train, encoding="utf-8")
    for name in ("valid.txt", "test.txt"):
        (out / name).write_text(mapped, encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnbench.report.studies", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="sweep folders -> docs/results/STUDY/runs.jsonl")
    p.add_argument("study")
    p.add_argument("sweeps", nargs="+")
    p.add_argument("--out", type=Path, help="folder to write (default docs/results/STUDY)")
    p.add_argument("--detail", action="store_true",
                   help="keep each run's gradient profile at initialisation and its training curve")
    p.add_argument("--add", action="store_true",
                   help="keep the records of other sweeps already in runs.jsonl (a sweep given again "
                        "replaces its own)")
    p = sub.add_parser("table", help="published values beside the committed records")
    p.add_argument("study")
    p.add_argument("--format", choices=("md", "latex"), default="md")
    p.add_argument("--records", help="a runs.jsonl or sweep records other than the committed ones")
    p = sub.add_parser("figure", help="the study's figure from its records")
    p.add_argument("study")
    p = sub.add_parser("render", help="re-render every <!-- study:NAME --> table of a Markdown page")
    p.add_argument("file", type=Path, nargs="?", default=RESULTS_DIR.parent / "results.md")
    p = sub.add_parser("wikitext2-sample", help="study 5's folder from the WikiText-2 sample")
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, required=True,
                   help="the WikiText-2 sample folder (valid.txt and test.txt of WikiText-2)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            print(export(args.study, args.sweeps, args.out, args.detail, args.add))
        elif args.command == "table":
            sys.stdout.write(table(args.study, args.format, args.records))
            if args.format == "md":
                sys.stdout.write("\n" + sources_text(args.study))
                line = importance(args.study, args.records)
                if line:
                    sys.stdout.write("\n" + line + "\n")
        elif args.command == "figure":
            print(figure(args.study))
        elif args.command == "render":
            print(", ".join(render_tables(args.file)) or "no study tables found")
        else:
            print(wikitext2_sample(args.source, args.out))
    except UserError as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
