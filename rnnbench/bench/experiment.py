"""An experiment built exactly as `python -m rnnbench` builds it (composed config, `app.build_model`,
instantiated optimiser and schedule, a run-folder sink), minus Hydra's job machinery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnbench import records
from rnnbench.app import CONF_DIR, RecorderSink, build_model, seed_everything, train_settings
from rnnbench.train import Trainer


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

    def trainer(self, run_dir: Path, **settings: Any) -> tuple[Trainer, records.RunRecorder]:
        """A Trainer with the config's settings (overridden by `settings`) writing `run_dir`."""
        on_step = settings.pop("on_step", None)
        recorder = records.RunRecorder(run_dir)
        trainer = Trainer(self.model, self.task, self.optimizer, self.scheduler,
                          train_settings(self.cfg, **{"progress": False, **settings}),
                          [RecorderSink(recorder)], on_step=on_step)
        return trainer, recorder


def build(overrides: list[str]) -> Experiment:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    seed_everything(cfg.train.seed)
    device = torch.device("cpu")
    task = instantiate(cfg.task, device=device)
    model, hidden_size = build_model(cfg, task.spec, device)
    optimizer = instantiate(cfg.optim)(model.parameters())
    scheduler = instantiate(cfg.schedule)(optimizer) if cfg.schedule else None
    return Experiment(cfg, task, model, optimizer, scheduler, hidden_size)


def training_flops(exp: Experiment, T: int, B: int) -> float:
    """Matmul FLOPs of one training step of the recurrent stack (the head is negligible)."""
    from rnnbench.bench.measure import recurrent_flops

    total = 0.0
    for layer in exp.model.stack.layers:
        cell = layer.directions[0]
        total += recurrent_flops(T, B, cell.input_size, cell.hidden_size, cell.gates, len(layer.directions))
    return total
