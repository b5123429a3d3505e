"""Hydra callbacks: after a multirun, print the sweep's table (from the run folders on disk)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("rnnbench")


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            from rnnbench import report

            runs = report.load_runs([sweep_dir])
            table = report.render(report.summarize(runs), "md", 4)
        except Exception as e:  # a summary must never turn a finished sweep into a failure
            log.warning("no sweep summary for %s: %s", sweep_dir, e)
            return
        print(f"\nSweep summary ({len(runs)} runs), from {sweep_dir}:\n{table}\n")
        print(f"Run folders: {sweep_dir}/<job>/ ; W&B files: {sweep_dir}/<job>/wandb/ "
              f"(offline runs: `wandb sync` them when online)")
