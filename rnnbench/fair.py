"""A fair comparison in one command: every compared value (a cell, a variant, any key) gets its own
tuning under the same budget before seeds are spent on it (Melis et al. 2018; Greff et al. 2016).

    python -m rnnbench.fair --dir outputs/fair/char_lm --compare cell=vanilla,lstm,gru,peephole \\
        --grid optim.lr=1e-3,2e-3,4e-3,8e-3,1.6e-2 --screen train.max_steps=1000 --seeds 5 \\
        +experiment=study_char_lm

1. **screen**: one Hydra multirun over compared values × the grid, on `--screen-seeds` seeds, with the
   `--screen` overrides (a shorter budget, say), into ``DIR/screen``;
2. **select**: per compared value, the grid point with the best mean *validation* metric over its screen
   seeds (the runs' best evaluation; the test split is never looked at). A point whose every run
   diverged or failed is not eligible. A choice at the edge of a numeric grid is flagged, and with
   `--extend K` the grid is extended past that edge (one point per round, up to K rounds) for that value;
3. **final**: `--seeds` seeds of each compared value at its own best setting, at the full budget, one
   multirun per value into ``DIR/final-<value>``. The final seeds are fresh: a seed the screen ran is
   replaced by the next seed past them (:func:`final_seeds`), so no run that chose a setting is also a
   run that reports it (the chosen point's screen run would be optimistic: picked as the best of many);
4. **table**: per value, the setting chosen, the screen's score, n completed of n, mean ± std of the
   validation and test metrics, and every pair compared by the test that fits how the runs were drawn
   (paired by seed: the seeds share their data order), Holm–Bonferroni across the pairs.

Every stage is an ordinary sweep of ordinary run folders through the configured launcher (local,
joblib, SLURM: pass ``hydra/launcher=...`` like any override), so the command resumes like any sweep:
run it again and finished runs are kept, unfinished ones resumed. ``DIR/fair.json`` records the plan and
the choices; a second command with another plan is refused for that folder. Equal parameters or equal
width is one switch: ``--match params=240000`` or ``--match width=128``.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from rnnbench.errors import UserError, fail
from rnnbench.records import run_folder
from rnnbench.report.study_figures import screen_figure
from rnnbench.report.runs import FAIR_PLAN, ReportError, label, load_runs, parse_override
from rnnbench.report.stats import compare_samples, holm
from rnnbench.report.verdicts import BEATS_BASELINE

PLAN_FILE = FAIR_PLAN
SCREEN = "screen"
SEED_KEY = "train.seed"


class FairError(ReportError):
    """A bad plan or a folder that holds another plan: one line, exit code 2."""


def parse_values(text: str) -> tuple[str, list[Any]]:
    """"optim.lr=1e-3,2e-3" -> ("optim.lr", [0.001, 0.002]), typed by Hydra's grammar."""
    key, value = parse_override(text)
    values = list(value.list) if hasattr(value, "list") else [value]  # Hydra's ChoiceSweep
    if not key or not values:
        raise FairError(f"expected KEY=V1,V2,... got {text!r}")
    return key, values


def match_overrides(match: str | None) -> list[str]:
    """`--match params=N` (the preset's parameter budget made explicit) or `--match width=H`."""
    if not match:
        return []
    kind, _, value = match.partition("=")
    if kind == "params" and value.isdigit():
        return [f"model.param_budget={value}"]
    if kind == "width" and value.isdigit():
        return ["model.param_budget=null", f"model.hidden_size={value}"]
    raise FairError(f"--match: expected params=N or width=H (N, H positive integers), got {match!r}")


def _hydra_value(value: Any) -> str:
    return "null" if value is None else str(value)


def _sweep(key: str, values: Sequence[Any]) -> str:
    return f"{key}={','.join(_hydra_value(v) for v in values)}"


def final_seeds(n: int, screen_seeds: Sequence[int]) -> list[int]:
    """Seeds 0..n-1 with each seed the screen ran replaced, in its place, by the next unused seed past
    them: n=5 after a screen on seed 0 gives [5, 1, 2, 3, 4]. The final runs are thereby independent of
    the choice (a winner's screen run, picked as the best of several, would bias its own value's mean),
    and a final folder begun under the old rule (seeds 0..n-1) keeps every job whose seed is unchanged."""
    spare = (s for s in range(n, n + len(screen_seeds) + n) if s not in screen_seeds)
    return [next(spare) if s in screen_seeds else s for s in range(n)]


def folder_name(value: Any) -> str:
    """A compared value as a folder name: "final-lstm", "final-cell.variant_nig" stays readable."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label(value))


class Plan:
    """What the command was asked, and the overrides of each stage, as saved in ``DIR/fair.json``."""

    def __init__(self, args: argparse.Namespace):
        self.dir = Path(args.dir)
        self.compare_key, self.compare = parse_values(args.compare)
        if self.compare_key == SEED_KEY:
            raise FairError(f"--compare {args.compare}: seeds are drawn by --seeds, not compared")
        self.grid = dict(parse_values(g) for g in args.grid)
        clash = {self.compare_key, SEED_KEY} & set(self.grid)
        if clash:
            raise FairError(f"--grid {sorted(clash)[0]}: the compared key and the seed cannot be tuned")
        self.screen = list(args.screen)
        self.overrides = [*args.overrides, *match_overrides(args.match)]
        for text in self.overrides:
            key = parse_override(text)[0].lstrip("+~")
            if key in (self.compare_key, SEED_KEY, *self.grid):
                raise FairError(f"override {text!r}: {key} is set by the command (--compare, --grid, --seeds)")
        if args.seeds < 1 or args.screen_seeds < 1:
            raise FairError(f"--seeds and --screen-seeds take a positive number, got {args.seeds}, {args.screen_seeds}")
        self.screen_seeds = list(range(args.screen_seeds))
        self.seeds = final_seeds(args.seeds, self.screen_seeds)
        if args.select and args.select.startswith("test/"):
            raise FairError(f"--select {args.select}: a setting is chosen on the validation split, never the test split")
        self.select = args.select  # None: the runs' main metric (summary.json's main_metric)
        self.extend = args.extend

    def as_dict(self) -> dict[str, Any]:
        return {"compare": {self.compare_key: self.compare}, "grid": self.grid, "screen": self.screen,
                "overrides": self.overrides, "seeds": self.seeds, "screen_seeds": self.screen_seeds,
                "select": self.select}

    def identity(self) -> dict[str, Any]:
        """What a saved plan is compared by: the plan as fair.json stores it (JSON types), without Hydra's keys."""
        return _identity(run_folder.loads(run_folder.dumps(self.as_dict())))

    def screen_overrides(self) -> list[str]:
        return [*self.overrides, *self.screen, _sweep(SEED_KEY, self.screen_seeds),
                _sweep(self.compare_key, self.compare), *(_sweep(k, v) for k, v in self.grid.items())]

    def extension_overrides(self, value: Any, point: dict[str, Any]) -> list[str]:
        return [*self.overrides, *self.screen, _sweep(SEED_KEY, self.screen_seeds),
                f"{self.compare_key}={_hydra_value(value)}", *(f"{k}={_hydra_value(v)}" for k, v in point.items())]

    def final_overrides(self, value: Any, point: dict[str, Any]) -> list[str]:
        return [*self.overrides, _sweep(SEED_KEY, self.seeds), f"{self.compare_key}={_hydra_value(value)}",
                *(f"{k}={_hydra_value(v)}" for k, v in point.items())]


# ------------------------------------------------------------------------------------------------
# stages


def run_sweep(overrides: list[str], sweep_dir: Path, dry_run: bool = False) -> None:
    """One Hydra multirun of `python -m rnnbench`. A folder that already holds this sweep (possibly
    started by hand, its overrides in another order) is continued with its own recorded order, so its
    job numbers keep their meaning."""
    saved = sweep_dir / "multirun.yaml"
    if saved.is_file():
        from omegaconf import OmegaConf

        theirs = [str(o) for o in OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[]) or []]
        ours = [o for o in overrides if not _is_hydra(o)]  # Hydra keeps those apart
        if sorted(map(_canonical, theirs)) != sorted(map(_canonical, ours)):
            raise FairError(f"{sweep_dir} holds another sweep (its overrides: {' '.join(theirs)}); "
                            f"choose another --dir or remove that folder")
        overrides = theirs + [o for o in overrides if o not in ours]
    command = [sys.executable, "-m", "rnnbench", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print("$ " + " ".join(command[1:]), flush=True)
    if dry_run:
        return
    done = subprocess.run(command)
    if done.returncode not in (0, 1):  # 1: some job failed; its summary says so and the table counts it
        raise FairError(f"the sweep into {sweep_dir} stopped with exit code {done.returncode}")


def _identity(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """A plan without its Hydra overrides: the launcher (local, SLURM) and its settings say where the
    runs go, not what they are, so a comparison may be continued on another launcher."""
    if not plan:
        return plan
    return {**plan, "overrides": [o for o in plan.get("overrides", []) if not _is_hydra(o)]}


def migrate_seeds(saved: dict[str, Any], plan: "Plan") -> dict[str, Any]:
    """A comparison begun when the final seeds were 0..n-1 (they included the screen's): the jobs that
    ran a screen seed are moved to ``DIR/replaced-seeds/`` (kept, not deleted; their runs repeat or
    re-draw the screen's) and the plan takes the fresh seeds, so the next command runs only the new ones."""
    old, new = saved.get("plan", {}).get("seeds"), plan.seeds
    if old == new or old != list(range(len(new))) or not set(old) & set(plan.screen_seeds):
        return saved
    if _identity({**saved["plan"], "seeds": new}) != plan.identity():
        return saved  # another plan, refused by the caller
    for value in plan.compare:
        folder = plan.dir / f"final-{folder_name(value)}"
        for job, seed in enumerate(old):
            if seed in new or not (folder / str(job)).exists():
                continue
            target = plan.dir / "replaced-seeds" / f"{folder.name}-seed{seed}"
            target.parent.mkdir(exist_ok=True)
            (folder / str(job)).rename(target)
            print(f"# {folder / str(job)}: seed {seed} is a screen seed; moved to {target} (the final seeds are now "
                  f"{', '.join(map(str, new))})")
        (folder / "multirun.yaml").unlink(missing_ok=True)  # its seed list is the old one
    return {**saved, "plan": {**saved["plan"], "seeds": new}}


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra/", "hydra."))


def _canonical(override: str) -> str:
    """An override as Hydra reads it, so "optim.lr=1e-3,2e-3" (typed by hand) equals "optim.lr=0.001,0.002"."""
    key, value = parse_override(override)
    values = list(value.list) if hasattr(value, "list") else [value]
    return f"{override[:len(override) - len(override.lstrip('+~'))]}{key}={[label(v) for v in values]}"


def selection_metric(plan: Plan, runs: pd.DataFrame) -> str:
    """The column the screen is judged by: ``best/<metric>`` of the validation split."""
    name = plan.select or next((m for m in runs.get("main_metric", pd.Series(dtype=object)).dropna()), None)
    if not name:
        raise FairError("no run of the screen has a main metric in its summary.json; pass --select")
    column = f"best/{name.removeprefix('best/')}"
    if column not in runs.columns:
        raise FairError(f"--select {name}: no screen run recorded it; recorded: "
                        + ", ".join(c.removeprefix("best/") for c in runs.columns if c.startswith("best/")))
    return column


def select(runs: pd.DataFrame, compare_key: str, grid_keys: Sequence[str], metric: str,
           mode: str) -> dict[Any, dict[str, Any]]:
    """Per compared value: the grid point whose completed runs have the best mean `metric` (a
    validation column), its score, and every point's score (NaN where no run completed)."""
    chosen: dict[Any, dict[str, Any]] = {}
    for value, of_value in runs.groupby(compare_key, sort=False, dropna=False):
        scores = []
        for point, at in of_value.groupby(list(grid_keys), sort=True, dropna=False):
            point = point if isinstance(point, tuple) else (point,)
            done = pd.to_numeric(at.loc[at["status"] == "completed", metric], errors="coerce").dropna()
            scores.append({"point": dict(zip(grid_keys, point)), "score": done.mean() if len(done) else math.nan,
                           "n": len(done), "runs": len(at)})
        eligible = [s for s in scores if not math.isnan(s["score"])]
        if not eligible:
            chosen[value] = {"point": None, "score": math.nan, "scores": scores}
            continue
        best = (max if mode == "max" else min)(eligible, key=lambda s: s["score"])
        chosen[value] = {"point": best["point"], "score": best["score"], "scores": scores}
    return chosen


def edges(point: dict[str, Any], grid: dict[str, list[Any]], tried: pd.DataFrame) -> dict[str, str]:
    """Keys whose chosen value is the lowest or highest numeric value tried ("low" / "high")."""
    out = {}
    for key, chosen in point.items():
        values = sorted({float(v) for v in tried[key] if _is_number(v)} | {float(v) for v in grid[key] if _is_number(v)})
        if len(values) < 2 or not _is_number(chosen):
            continue
        if float(chosen) == values[0]:
            out[key] = "low"
        elif float(chosen) == values[-1]:
            out[key] = "high"
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def next_value(key: str, side: str, tried: Sequence[float]) -> float:
    """One step past the edge: geometric where the grid is (every value positive), else arithmetic."""
    values = sorted(set(tried))
    inner, edge = (values[1], values[0]) if side == "low" else (values[-2], values[-1])
    if inner > 0 and edge > 0:
        return float(f"{edge * edge / inner:.6g}")
    return float(f"{2 * edge - inner:.6g}")


def screen_runs(plan: Plan) -> pd.DataFrame:
    folders = [plan.dir / SCREEN, *sorted(plan.dir.glob("extend-*"))]
    runs = load_runs([f for f in folders if f.is_dir()])
    for key in (plan.compare_key, *plan.grid):
        if key not in runs.columns:
            raise FairError(f"the screen's runs do not record {key}; is {plan.dir / SCREEN} this plan's screen?")
    return runs


def final_runs(plan: Plan) -> pd.DataFrame:
    folders = [f for f in (plan.dir / f"final-{folder_name(v)}" for v in plan.compare) if f.is_dir()]
    return load_runs(folders) if folders else pd.DataFrame()  # --screen-only: none yet


def main_metric_mode(runs: pd.DataFrame, metric: str) -> str:
    from rnnbench.report.stats import metric_mode

    return metric_mode(metric, runs) or "min"


# ------------------------------------------------------------------------------------------------
# the table


def final_table(plan: Plan, state: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table of the final runs and the pairwise comparisons (paired by seed)."""
    from tabulate import tabulate

    runs = final_runs(plan)
    if runs.empty:
        return "no final runs yet\n", []
    val = state["select"]
    name = val.removeprefix("best/").split("/", 1)[1]
    test = f"test/{name}" if f"test/{name}" in runs.columns else None
    mode = state["mode"]
    # the loss over the task's memoryless baseline, on the split the table compares: a value none of whose
    # seeds got under BEATS_BASELINE of it learned nothing there, and two such values are not ranked
    ratio_column = next((c for c in (["test/loss_over_baseline"] if test else []) + ["final/val/loss_over_baseline"]
                         if c in runs.columns and runs[c].notna().any()), None)
    rows, samples, learned = [], {}, {}
    for value in plan.compare:
        choice = state["chosen"].get(label(value)) or {"point": None, "score": math.nan, "scores": []}
        at = runs[runs[plan.compare_key].map(label) == label(value)]
        done = at[at["status"] == "completed"]
        metric = test or f"final/{val.removeprefix('best/')}"
        x = pd.to_numeric(done.get(metric, pd.Series(dtype=float)), errors="coerce")
        samples[label(value)] = dict(zip(done["seed"], x))
        v = pd.to_numeric(done.get(val, pd.Series(dtype=float)), errors="coerce")
        setting = ", ".join(f"{k}={label(p)}" for k, p in (choice["point"] or {}).items()) or "–"
        if choice.get("edge"):
            setting += " (edge: " + ", ".join(f"{k} {side}" for k, side in choice["edge"].items()) + ")"
        rows.append([label(value), setting, f"{choice['score']:.4g}", f"{len(done)} of {len(at)}",
                     _mean_std(v), _mean_std(x)])
        if ratio_column:
            ratio = pd.to_numeric(done[ratio_column], errors="coerce").dropna()
            learned[label(value)] = int((ratio < BEATS_BASELINE).sum())
            rows[-1].append(f"{learned[label(value)]} of {len(ratio)}")
    header = [plan.compare_key, "chosen (screen)", f"screen {val.removeprefix('best/')}", "n",
              f"{val.removeprefix('best/')} (best)", test or f"final {val.removeprefix('best/')}"]
    if ratio_column:
        header.append(f"seeds under {BEATS_BASELINE:g} × baseline ({ratio_column.split('/')[0]})")
    text = tabulate(rows, headers=header, tablefmt="pipe", disable_numparse=True) + "\n"
    pairs = []
    for a, b in combinations([label(v) for v in plan.compare], 2):
        seeds = sorted(set(samples[a]) & set(samples[b]))
        paired = len(seeds) >= 2  # on the seeds both ran, as the claims pair (report.verdicts.pair)
        xa = [samples[a][s] for s in seeds] if paired else list(samples[a].values())
        xb = [samples[b][s] for s in seeds] if paired else list(samples[b].values())
        if min(len(xa), len(xb)) < 2:
            continue
        result = compare_samples(xa, xb, paired=paired)
        pairs.append({"a": a, "b": b, **result})
    if pairs:
        for pair, adjusted in zip(pairs, holm([p["p"] for p in pairs])):
            pair["p_holm"] = adjusted
        body = []
        for p in pairs:
            better = p["a"] if (p["diff"] < 0) == (mode == "min") else p["b"]
            if learned.get(p["a"]) == 0 and learned.get(p["b"]) == 0:  # both at the baseline: no power to rank them
                verdict = "neither left the baseline"
            else:
                verdict = f"{better} better" if p["p_holm"] < 0.05 else "no significant difference"
            body.append([f"{p['a']} − {p['b']}", p["test"], f"{p['diff']:+.4g} [{p['ci'][0]:+.3g}, {p['ci'][1]:+.3g}]",
                         f"{p['p']:.3g}", f"{p['p_holm']:.3g}", verdict])
        text += "\n" + tabulate(body, headers=["difference", "test", "mean [95% CI]", "p", "p (Holm)", "verdict"],
                                tablefmt="pipe", disable_numparse=True) + "\n"
        if any(row[-1] == "neither left the baseline" for row in body):
            text += (f"\n\"neither left the baseline\": no seed of either got its loss under {BEATS_BASELINE:g} × the "
                     f"task's memoryless baseline ({ratio_column}); a budget where nothing learns ranks nothing.\n")
    return text, pairs


def _mean_std(x: pd.Series) -> str:
    x = x.dropna()
    if not len(x):
        return "–"
    return f"{x.mean():.4g} ± {x.std(ddof=1):.2g}" if len(x) > 1 else f"{x.mean():.4g}"


# ------------------------------------------------------------------------------------------------
# command line


def run(args: argparse.Namespace) -> int:
    plan = Plan(args)
    plan_file = plan.dir / PLAN_FILE
    if args.table_only and not plan_file.is_file():
        raise FairError(f"--table-only: {plan.dir} holds no fair comparison ({PLAN_FILE}); run the command without it first")
    plan.dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"plan": plan.as_dict()}
    if plan_file.is_file():
        saved = run_folder.loads(plan_file.read_text(encoding="utf-8"))
        if not (args.dry_run or args.table_only):
            saved = migrate_seeds(saved, plan)
        if _identity(saved.get("plan")) != plan.identity():
            raise FairError(f"{plan.dir} holds another fair comparison ({plan_file}: {run_folder.dumps(saved.get('plan'))}); "
                            f"run that one again to continue it, or choose another --dir")
        state = saved
    if args.table_only:  # the table again from the runs there (a rule of the table changed): nothing runs
        if "chosen" not in state:
            raise FairError(f"--table-only: {plan.dir} has no choice yet; run the command without it first")
        text, state["pairs"] = final_table(plan, state)
        run_folder.atomic_write_text(plan_file, run_folder.dumps(state, indent=1, sort_keys=True) + "\n")
        run_folder.atomic_write_text(plan.dir / "fair.md", text)
        print(text)
        return 0
    if not args.dry_run:
        run_folder.atomic_write_text(plan_file, run_folder.dumps(state, indent=1, sort_keys=True) + "\n")

    run_sweep(plan.screen_overrides(), plan.dir / SCREEN, args.dry_run)
    if args.dry_run:
        print(f"# then per {plan.compare_key}: {len(plan.seeds)} seeds at its best screen setting, "
              f"into {plan.dir}/final-<value>")
        return 0
    for round_ in range(plan.extend + 1):
        runs = screen_runs(plan)
        metric = selection_metric(plan, runs)
        mode = main_metric_mode(runs, metric.removeprefix("best/"))
        chosen = select(runs, plan.compare_key, list(plan.grid), metric, mode)
        extensions = []
        for value, choice in chosen.items():
            if choice["point"] is None:
                continue
            tried = runs[runs[plan.compare_key].map(label) == label(value)]
            choice["edge"] = edges(choice["point"], plan.grid, tried)
            for key, side in choice["edge"].items():
                if round_ < plan.extend:
                    new = next_value(key, side, [float(v) for v in tried[key] if _is_number(v)])
                    extensions.append((value, {**choice["point"], key: new}))
        if not extensions:
            break
        for value, point in extensions:
            print(f"# {plan.compare_key}={label(value)}: best at the edge of the grid; screening {point}")
            name = "-".join([folder_name(value), *(f"{k}={label(v)}" for k, v in point.items())])
            run_sweep(plan.extension_overrides(value, point), plan.dir / f"extend-{folder_name(name)}")
    state.update(select=metric, mode=mode, chosen={label(v): c for v, c in chosen.items()})
    run_folder.atomic_write_text(plan_file, run_folder.dumps(state, indent=1, sort_keys=True) + "\n")
    figure = screen_figure(state, plan.dir / "screen")
    print(f"screen: {figure[0]}")
    finals = []
    for value in plan.compare:
        choice = state["chosen"].get(label(value))
        if not choice or choice["point"] is None:
            print(f"# {plan.compare_key}={label(value)}: no screen run completed; no final runs", file=sys.stderr)
            continue
        finals.append((plan.final_overrides(value, choice["point"]), plan.dir / f"final-{folder_name(value)}"))
    if not args.screen_only:
        # --concurrent N: N values' sweeps at once (with the basic launcher, N jobs at once), so no core
        # idles while one value's last seed runs alone
        with ThreadPoolExecutor(max_workers=max(1, args.concurrent)) as pool:
            for future in [pool.submit(run_sweep, overrides, folder) for overrides, folder in finals]:
                future.result()
    text, pairs = final_table(plan, state)
    state["pairs"] = pairs
    run_folder.atomic_write_text(plan_file, run_folder.dumps(state, indent=1, sort_keys=True) + "\n")
    run_folder.atomic_write_text(plan.dir / "fair.md", text)
    print(text)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rnnbench.fair", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="the comparison's folder (screen/, final-<value>/, fair.json, fair.md)")
    p.add_argument("--compare", required=True, help="the compared key and values, e.g. cell=vanilla,lstm,gru")
    p.add_argument("--grid", action="append", default=[], required=True,
                   help="a tuned key and its values, e.g. optim.lr=1e-3,4e-3,1.6e-2 (repeat for more keys)")
    p.add_argument("--screen", action="append", default=[],
                   help="an override of the screen only, e.g. train.max_steps=1000 (repeatable)")
    p.add_argument("--screen-seeds", type=int, default=1, help="seeds per screen point (default 1)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per compared value at its best (default 5; fresh: none the screen ran)")
    p.add_argument("--select", help="validation metric of the choice (default: the runs' main metric)")
    p.add_argument("--extend", type=int, default=0,
                   help="rounds that extend the grid past an edge where a best setting lies (default 0: flag only)")
    p.add_argument("--match", help="params=N (equal parameter budget) or width=H (equal hidden size)")
    p.add_argument("--concurrent", type=int, default=1,
                   help="final sweeps run at once, one per compared value (default 1); with "
                        "hydra/launcher=basic, that many jobs at once")
    p.add_argument("--screen-only", action="store_true", help="stop after the screen and the choice")
    p.add_argument("--table-only", action="store_true",
                   help="write and print the table again from the runs already there, running nothing")
    p.add_argument("--dry-run", action="store_true", help="print the screen's command and stop")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of every stage, e.g. +experiment=NAME")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        return run(args)
    except UserError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
