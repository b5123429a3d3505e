"""`python -m rnnbench.evaluate RUN_DIR [key=value ...]`: evaluate a finished run's model again,
on its own splits or on a changed task setting, without retraining.

    python -m rnnbench.evaluate outputs/runs/2026-11-30/10-00-00                      # val and test
    python -m rnnbench.evaluate RUN task.seq_len=1000                                 # "and at T=1000?"
    python -m rnnbench.evaluate RUN task.eval_lengths=[100,200,400] --split val       # several lengths
    python -m rnnbench.evaluate RUN task.corpus=other.txt --checkpoint best          # another data file

The model is rebuilt from the run's `config.yaml` (its hidden size as recorded in summary.json) and
loaded from a checkpoint of the run folder: `final` (default), the newest checkpoint, which for a
completed run is the model at its last step; or `best`, the model at the best main validation
metric (`checkpoints/best.pt`). Only task keys (and `train.device`, `train.threads`) may change; a
setting the model cannot take (another input size, another vocabulary) is refused before anything is
evaluated.

The result goes beside the run, to `<RUN_DIR>/evaluations/<name>.json` (name from the overrides and
the checkpoint); the run's own records (summary.json, metrics.jsonl, config.yaml, checkpoints) are
never written.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from rnnbench.errors import ConfigError, UserError, fail
from rnnbench.kernels import flush
from rnnbench.records import run_folder
from rnnbench.run import checkpoint
from rnnbench.run.build import build_model, build_task, check_pyramid_depth, resolve_device
from rnnbench.run.checkpoint import CheckpointError
from rnnbench.run.config import validate
from rnnbench.run.train import evaluate_model, length_key
from rnnbench.tasks.base import IOSpec, Task

EVALUATIONS_DIR = "evaluations"
CHECKPOINTS = ("final", "best")
# Besides the task's own keys, what may change without changing the model.
RUNTIME_KEYS = ("train.device", "train.threads")


@dataclass
class LoadedRun:
    """A run's config (with the overrides applied), its model loaded from a checkpoint, and where from."""

    run_dir: Path
    cfg: DictConfig
    changed: dict[str, tuple[Any, Any]]  # key -> (the run's value, this evaluation's)
    model: torch.nn.Module
    checkpoint: Path
    step: int
    vocabulary: list[str] | None
    device: torch.device


# ------------------------------------------------------------------------------------------------
# Reading a run folder


def read_run_config(run_dir: Path) -> DictConfig:
    if not (run_dir / run_folder.CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} is not a run folder: it has no {run_folder.CONFIG_FILE} (give the folder "
                          "of one run, e.g. outputs/runs/<date>/<time> or a sweep's job folder)")
    return OmegaConf.create(run_folder.read_config(run_dir))


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> dict[str, tuple[Any, Any]]:
    """Set `key=value` overrides (values parsed as YAML, as Hydra does) on the run's resolved config.

    Only `task.*` keys the run's task has, and RUNTIME_KEYS; a value must keep the type of the run's.
    Returns the keys that changed: key -> (old, new)."""
    changed = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{text!r} is not an override: write key=value, e.g. task.seq_len=1000")
        task_keys = [k for k in cfg.task if k != "_target_"]
        if not (key in RUNTIME_KEYS or (key.startswith("task.") and key[5:] in task_keys)):
            raise ConfigError(
                f"{key} cannot be changed when evaluating a trained model: allowed are this run's task keys "
                f"({', '.join('task.' + k for k in task_keys)}) and {', '.join(RUNTIME_KEYS)}")
        value = yaml.safe_load(raw) if raw.strip() else None
        old = OmegaConf.select(cfg, key)
        old = OmegaConf.to_container(old) if OmegaConf.is_config(old) else old
        if not _same_kind(old, value):
            raise ConfigError(f"{key}={raw} is not allowed: the run's value is {old!r} "
                              f"({type(old).__name__}); give a value of that type")
        OmegaConf.update(cfg, key, value, merge=False)
        if value != old:
            changed[key] = (old, value)
    validate(cfg)
    return changed


def _same_kind(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)):
        return isinstance(new, int) if isinstance(old, int) else isinstance(new, (int, float))
    if isinstance(old, (list, tuple)) or OmegaConf.is_list(old):
        return isinstance(new, list)
    return isinstance(new, type(old))


def _spec_sizes(spec: IOSpec) -> str:
    reads = "token ids" if spec.input_kind == "tokens" else f"{spec.input_size} input features per step"
    return f"{reads}, {spec.output_size} outputs {spec.output_kind.replace('_', ' ')}"


def check_compatible(run_dir: Path, trained: IOSpec, vocab: list[str] | None, task: Task,
                     changed: dict[str, tuple[Any, Any]]) -> None:
    """The model trained on `trained` (and `vocab`) can take `task`: same kinds and sizes of inputs and
    outputs, and for token inputs the very same vocabulary (token i must mean the same string)."""
    what = ", ".join(f"{k}={new}" for k, (_, new) in changed.items()) or "this setting"
    new_vocab = task.vocabulary()
    if vocab is not None and new_vocab is not None and new_vocab != vocab:
        unknown = [t for t in new_vocab if t not in set(vocab)]
        missing = [t for t in vocab if t not in set(new_vocab)]
        parts = [f"{len(new_vocab)} tokens, the model's {len(vocab)}"]
        if unknown:
            parts.append(f"not in the model's: {_show_tokens(unknown)}")
        if missing:
            parts.append(f"missing: {_show_tokens(missing)}")
        if not unknown and not missing:
            parts.append("the same tokens in another order (token ids would mean other tokens)")
        raise ConfigError(f"{what}: the model cannot take this data: its vocabulary differs from the run's "
                          f"({run_dir / run_folder.VOCAB_FILE}): {'; '.join(parts)}")
    new = task.spec
    if (new.input_kind, new.input_size, new.output_size, new.output_kind, new.loss_kind) != \
            (trained.input_kind, trained.input_size, trained.output_size, trained.output_kind, trained.loss_kind):
        raise ConfigError(f"{what}: the model cannot take this task: it was trained on {_spec_sizes(trained)}"
                          f"{f' (vocabulary {trained.input_size})' if trained.input_kind == 'tokens' else ''}, "
                          f"this task has {_spec_sizes(new)}"
                          f"{f' (vocabulary {new.input_size})' if new.input_kind == 'tokens' else ''}")


def _show_tokens(tokens: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(t) for t in tokens[:most])
    return shown + (f" and {len(tokens) - most} more" if len(tokens) > most else "")


def checkpoint_path(run_dir: Path, which: str) -> Path:
    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint {which!r}: choose one of {', '.join(CHECKPOINTS)}")
    path = checkpoint.best(run_dir) if which == "best" else checkpoint.latest(run_dir)
    if path is None:
        where = checkpoint.checkpoint_dir(run_dir)
        raise CheckpointError(
            f"{run_dir} has no {which} checkpoint (looked in {where}): "
            + ("the best model is kept by runs that evaluated at least once since rnnbench wrote best.pt; "
               "use --checkpoint final" if which == "best" else
               "the run wrote none (it failed before its first checkpoint)"))
    return path


def build_trained_model(run_dir: Path, cfg: DictConfig, spec: IOSpec, which: str,
                        device: torch.device) -> tuple[torch.nn.Module, Path, int]:
    """The run's model (its config, its recorded hidden size) with the weights of checkpoint `which`."""
    summary = run_folder.read_summary(run_dir) if (run_dir / run_folder.SUMMARY_FILE).is_file() else None
    model_cfg = cfg.copy()
    if summary is not None and summary.hidden_size:  # model.param_budget / state_budget was resolved to this by the run
        model_cfg.model.hidden_size = summary.hidden_size
        model_cfg.model.param_budget = None
        if "state_budget" in model_cfg.model:
            model_cfg.model.state_budget = None
    model, _ = build_model(model_cfg, spec, device)
    path = checkpoint_path(run_dir, which)
    payload = checkpoint.load(path)
    try:
        model.load_state_dict(payload["trainer"]["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model of {run_dir / run_folder.CONFIG_FILE}: "
                              f"{str(e).splitlines()[0]}") from None
    model.eval()
    return model, path, int(payload["step"])


def load_run(run_dir: str | Path, overrides: Sequence[str] = (), which: str = "final",
             spec: IOSpec | None = None) -> tuple[LoadedRun, Task | None]:
    """The run's model, and its task built with `overrides` (checked to fit the model).

    With `spec` given, no task is built (`rnnbench.sample` needs only the model and the vocabulary)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    trained_cfg = cfg.copy()
    changed = apply_overrides(cfg, overrides)
    if cfg.train.get("threads"):
        torch.set_num_threads(cfg.train.threads)
    # The run's own arithmetic: subnormals flushed as in training (runs older than the key did not flush).
    flush.set_flush_denormal(bool(cfg.train.get("flush_denormal", False)))
    device = resolve_device(cfg.train.device)
    vocab = run_folder.read_vocabulary(run_dir)
    task = None
    if spec is None:
        task = build_task(cfg, device)
        trained = task.spec
        if changed:  # what the model was trained on: the run's own task
            trained_task = build_task(trained_cfg, device)
            trained, vocab = trained_task.spec, vocab or trained_task.vocabulary()
        check_compatible(run_dir, trained, vocab, task, changed)
        spec = trained
    model, path, step = build_trained_model(run_dir, cfg, spec, which, device)
    if task is not None:
        check_pyramid_depth(model, task)
    return LoadedRun(run_dir, cfg, changed, model, path, step, vocab, device), task


# ------------------------------------------------------------------------------------------------
# Evaluating


def evaluate_run(run_dir: str | Path, overrides: Sequence[str] = (), splits: Sequence[str] = ("val", "test"),
                 which: str = "final", name: str | None = None) -> tuple[dict[str, Any], Path]:
    """Evaluate the run's model on `splits` of its task with `overrides`; the task's `eval_lengths`
    too (`val@T=<length>/<metric>`). Writes `<run_dir>/evaluations/<name>.json`; returns the record
    and its path."""
    run, task = load_run(run_dir, overrides, which)
    metrics: dict[str, float] = {}
    for split in splits:
        metrics.update({f"{split}/{k}": v for k, v in evaluate_model(run.model, task, split).items()})
        for length in task.eval_lengths:
            at_length = evaluate_model(run.model, task.at_length(length), split)
            metrics.update({length_key(split, length, k): v for k, v in at_length.items()})
    result = {
        "run_dir": str(run.run_dir), "checkpoint": which, "checkpoint_file": run.checkpoint.name,
        "step": run.step, "overrides": list(overrides),
        "changed": {k: {"run": old, "evaluated": new} for k, (old, new) in run.changed.items()},
        "metrics": metrics, "task_info": task.describe(), "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **{k: v for k, v in run_folder.run_metadata().items() if k in ("python", "torch", "rnnbench", "git_commit")},
    }
    planned = run.cfg.train.max_steps
    if which == "final" and run.step < planned:  # a run that stopped (or diverged, or crashed) early
        status = (run_folder.read_summary(run.run_dir).status
                  if (run.run_dir / run_folder.SUMMARY_FILE).is_file() else "unknown")
        result["ended_early"] = {"step": run.step, "max_steps": planned, "status": status}
    path = run.run_dir / EVALUATIONS_DIR / f"{name or evaluation_name(overrides, which)}.json"
    path.parent.mkdir(exist_ok=True)
    run_folder.atomic_write_text(path, run_folder.dumps(result, indent=2) + "\n")
    return result, path


def evaluation_name(overrides: Sequence[str], which: str) -> str:
    """A file name from the overrides: `task.seq_len=1000`, `default`; `@best` for the best model."""
    name = ",".join(overrides) or "default"
    name = re.sub(r"[^\w.,=@+\-\[\]]+", "_", name)[:150]
    return name + ("@best" if which == "best" else "")


def _table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:.6g}" if isinstance(v, (int, float)) else f"{k:<{width}}  {v}"
                     for k, v in metrics.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnnbench.evaluate",
        description="Evaluate a run's trained model on its splits or a changed task setting; the result "
                    "is written to RUN_DIR/evaluations/, the run's own records are left as they are.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of one run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="task settings to change, e.g. task.seq_len=1000 task.eval_lengths=[100,200]")
    parser.add_argument("--split", choices=("val", "test", "both"), default="both")
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="final",
                        help="final: the newest checkpoint (default); best: the model at the best main metric")
    parser.add_argument("--name", help="file name of the result in RUN_DIR/evaluations/ (default: from the overrides)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)  # options and overrides in any order
    splits = ("val", "test") if args.split == "both" else (args.split,)
    try:
        result, path = evaluate_run(args.run_dir, args.overrides, splits, args.checkpoint, args.name)
    except UserError as error:
        return fail(error)
    if "ended_early" in result:
        early = result["ended_early"]
        print(f"warning: the run did not reach its last step: its newest checkpoint is of step {early['step']} "
              f"of train.max_steps={early['max_steps']} (status {early['status']}); evaluating that model",
              file=sys.stderr)
    changed = ", ".join(f"{k}: {v['run']} -> {v['evaluated']}" for k, v in result["changed"].items())
    print(f"{result['run_dir']} ({result['checkpoint']} checkpoint, step {result['step']})"
          + (f", changed {changed}" if changed else ""))
    print(_table(result["metrics"]))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
