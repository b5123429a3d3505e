"""An experiment built exactly as `python -m rnnbench` builds it (composed config, checked by
`config.validate` and built by `run.build`, a run-folder sink), minus Hydra's job machinery and the
process-wide settings a benchmark chooses itself (threads, flush mode)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rnnbench.bench.measure import recurrent_flops
from rnnbench.records import run_folder
from rnnbench.run.build import build_experiment, seed_everything, train_settings
from rnnbench.run.config import compose, validate
from rnnbench.run.train import RecorderSink, Trainer


@dataclass
class Experiment:
    cfg: DictConfig
    task: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    hidden_size: int

    @property
    def gates(self) -> int:
        return self.model.stack.layers[0].directions[0].gates

    def trainer(self, run_dir: Path, **settings: Any) -> tuple[Trainer, run_folder.RunRecorder]:
        """A Trainer with the config's settings (overridden by `settings`) writing `run_dir`."""
        on_step = settings.pop("on_step", None)
        recorder = run_folder.RunRecorder(run_dir)
        trainer = Trainer(self.model, self.task, self.optimizer, self.scheduler,
                          train_settings(self.cfg, **{"progress": False, **settings}),
                          [RecorderSink(recorder)], on_step=on_step)
        return trainer, recorder


def build(overrides: list[str]) -> Experiment:
    cfg = compose(overrides)
    validate(cfg)
    seed_everything(cfg.train.seed)
    built = build_experiment(cfg, torch.device("cpu"))
    return Experiment(cfg, built.task, built.model, built.optimizer, built.scheduler, built.hidden_size)


def training_flops(exp: Experiment, T: int, B: int) -> float:
    """Matmul FLOPs of one training step of the recurrent stack (the head is negligible)."""
    total = 0.0
    for layer in exp.model.stack.layers:
        cell = layer.directions[0]
        total += recurrent_flops(T, B, cell.input_size, cell.hidden_size, cell.gates, len(layer.directions))
    return total
