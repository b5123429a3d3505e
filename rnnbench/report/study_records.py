"""A study's folder, docs/results/<study>/: its committed records and its published claims.

It holds three files, all small enough for git:

- ``runs.jsonl``: one row per run (`record`): the swept overrides, seed, status, steps, wall time,
  parameter count, final / best / test metrics, the rnnbench commit and config fingerprint, and for the
  gradient study the temporal profile at initialisation. Written from sweep folders by `export`;
  `rnnbench.report` reads it like a sweep folder (``python -m rnnbench.report docs/results/adding``).
- ``published.yaml``: the published claims (`read_published`): each with its paper, table or figure and
  page, whether the number was checked against the paper or its code here, and the claim in kind
  (`CLAIM_KINDS`); judged in `claim_tables`.
- ``<study>.png``: the figure, drawn from ``runs.jsonl`` alone (`study_figures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from rnnbench.records import run_folder
from rnnbench.report import verdicts
from rnnbench.report.runs import BUDGET_KEY, FAIR_PLAN, RUNS_FILE, ReportError, fair_stage, find_run_dirs, read_records

RESULTS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"
PUBLISHED_FILE = "published.yaml"
CLAIM_KINDS = verdicts.CLAIM_KINDS


def folder(study: str | Path) -> Path:
    """The folder of `study`: a name under `RESULTS_DIR` (read when called, so a test may move it), or
    the folder of a published.yaml given as a path."""
    return Path(study).parent if Path(study).suffix == ".yaml" else RESULTS_DIR / str(study)


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
                                       "hidden_size", "num_params", "state_size", "memoryless_baseline", "main_metric",
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
            rows.append({"sweep": sweep_name(sweep), **record(run_dir, detail)})
    if not rows:
        raise ReportError(f"no runs found under {', '.join(map(str, sweeps))}")
    if add and (out_dir / RUNS_FILE).is_file():
        names = {sweep_name(sweep) for sweep in sweeps}
        # records exported before fair sweeps carried their comparison's name hold the stage's folder alone
        bare = {Path(sweep).name for sweep in sweeps if sweep_name(sweep) != Path(sweep).name}
        rows += [r for r in read_records(out_dir)
                 if r.get("sweep") not in names and not (r.get("sweep") in bare and r.get("fair"))]
    rows.sort(key=lambda r: (r["sweep"], int(r["job"]) if r["job"].isdigit() else r["job"]))
    path = out_dir / RUNS_FILE
    run_folder.atomic_write_text(path, "".join(run_folder.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


def sweep_name(sweep: str | Path) -> str:
    """A sweep's name in the records: its folder's name; for a stage of a fair comparison (screen,
    final-<value>, ...: the same names in every comparison) "<comparison folder>/<stage folder>"."""
    sweep = Path(sweep)
    return f"{sweep.parent.name}/{sweep.name}" if (sweep.parent / FAIR_PLAN).is_file() else sweep.name


def read_published(study: str | Path) -> dict[str, Any]:
    path = Path(study) if Path(study).suffix == ".yaml" else folder(study) / PUBLISHED_FILE
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
