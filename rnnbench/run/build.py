"""The one place where a config becomes objects: the app (`python -m rnnbench`), `rnnbench.evaluate`,
`rnnbench.sample` and the benchmarks' experiments all build here, with the same checks.

`prepare_process` sets what is process-wide (flush-to-zero, threads, seeds) and picks the device;
`build_experiment` then makes the task, the model (its width), the optimiser and the schedule, checking
a user's own cell or task as it goes (`interface`) and the pyramid's depth against the task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnnbench.errors import ConfigError
from rnnbench.kernels import flush
from rnnbench.modules.budget import hidden_size_for_budget
from rnnbench.run import interface
from rnnbench.run.train import TrainSettings
from rnnbench.tasks.base import BatchShape, IOSpec, Task
from rnnbench.tasks.data import DataError

log = logging.getLogger("rnnbench")


@dataclasses.dataclass
class Experiment:
    """The experiment's objects, built from the config."""

    task: Task
    model: torch.nn.Module
    hidden_size: int  # model.hidden_size, or the width model.param_budget resolved to
    optimizer: torch.optim.Optimizer
    scheduler: Any


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (CPU and CUDA) generators; the task's data generator is seeded apart."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={device!r} is not available here (no CUDA device): use auto or cpu")
    return torch.device(device)


def prepare_process(cfg: DictConfig, launcher_threads: int | None = None) -> tuple[torch.device, bool]:
    """Flush mode, threads and seeds, in that order, then the device. Returns (device, whether
    subnormals are flushed: train.flush_denormal where the CPU can)."""
    # First: torch's worker threads copy the flush mode when they are made (flush.set_flush_denormal).
    flushed = flush.set_flush_denormal(cfg.train.flush_denormal) and cfg.train.flush_denormal
    threads = cfg.train.threads or launcher_threads
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    return device, flushed


def instantiate_group(node: DictConfig, group: str, *args: Any, **kwargs: Any) -> Any:
    """`instantiate(node, **kwargs)`, called with `args` when given (a `_partial_` node such as an
    optimiser). What a user can fix is reported as such: a constructor's ValueError (a value or a
    combination it does not allow) as a ConfigError naming the group, a DataError as itself."""
    try:
        built = instantiate(node, **kwargs)
        return built(*args) if args else built
    except (InstantiationException, ValueError) as e:
        cause = e.__cause__ if isinstance(e, InstantiationException) else e
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        if isinstance(cause, ValueError):
            message = str(cause)
            raise ConfigError(message if message.startswith(f"{group}.") else f"{group}: {message}") from None
        raise


def build_task(cfg: DictConfig, device: torch.device | None = None) -> Task:
    """The task of `cfg.task` (a user's own: importable, with a task's methods)."""
    interface.check_class(cfg.task, "task")
    task = instantiate_group(cfg.task, "task", **({} if device is None else {"device": device}))
    interface.check_task(task, cfg.task._target_)
    return task


def build_model(cfg: DictConfig, spec: IOSpec, device: torch.device,
                batch_shape: BatchShape | None = None) -> tuple[torch.nn.Module, int]:
    """The model of `cfg.model` around the cell of `cfg.cell`, and its width (model.param_budget or
    model.state_budget, when set, chooses it); built on the meta device first, so a model, or the
    task's largest batch through it (`batch_shape`), that cannot fit in memory is refused unbuilt."""
    interface.check_class(cfg.cell, "cell")
    cell = instantiate_group(cfg.cell, "cell")
    hidden_size = cfg.model.hidden_size
    budget = ("parameters", cfg.model.param_budget) if cfg.model.param_budget else ("state", cfg.model.get("state_budget"))
    heads = cfg.cell.get("num_heads") or 1  # a cell with heads is built only at widths they divide
    if budget[1]:
        try:
            hidden_size = hidden_size_for_budget(
                budget[1], lambda h: instantiate_group(cfg.model, "model", spec=spec, cell=cell, hidden_size=h),
                measure=budget[0], multiple_of=heads)
        except ValueError as e:  # a budget no width meets
            raise ConfigError(str(e)) from None
        key = "model.param_budget" if budget[0] == "parameters" else "model.state_budget"
        log.info("%s=%d: hidden_size=%d chosen (model.hidden_size=%d is not used; summary.json records the "
                 "width as hidden_size)", key, budget[1], hidden_size, cfg.model.hidden_size)
    try:  # the model's shapes without its memory; a user's cell whose __init__ needs values (e.g. .item())
        with torch.device("meta"):  # cannot be built there and goes unchecked
            planned = instantiate_group(cfg.model, "model", spec=spec, cell=cell, hidden_size=hidden_size)
    except (ConfigError, DataError):
        raise
    except Exception:
        planned = None
    if planned is not None:
        check_memory(cfg, planned, batch_shape, device)
    model = instantiate_group(cfg.model, "model", spec=spec, cell=cell, hidden_size=hidden_size)
    interface.check_cell_step(model.stack.layers[0].directions[0], cfg.cell._target_)
    return model.to(device), hidden_size


def memory_of(device: torch.device) -> int:
    """Bytes of memory the device has: a GPU's total, or the machine's RAM (its cgroup's limit if lower)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        return min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        return total


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_memory(cfg: DictConfig, model: torch.nn.Module, shape: BatchShape | None, device: torch.device) -> None:
    """Refuse, before anything is allocated, a run that cannot fit in the device's memory. The estimate is
    a lower bound, so it refuses only what cannot work: the parameters and their gradients (an
    optimiser's state comes on top), and the first layer's outputs over the task's largest batch, which
    backpropagation through time keeps (every cell keeps more: gates, states)."""
    params = list(model.parameters())
    element = params[0].element_size() if params else 4
    weights = 2 * sum(p.numel() for p in params) * element
    width = model.stack.output_size  # hidden size x directions
    outputs = shape.steps * shape.sequences * width * element if shape else 0
    have = memory_of(device)
    if weights + outputs <= have:
        return
    width_key = "model.param_budget" if cfg.model.param_budget else "model.hidden_size"
    parts = [f"the parameters and their gradients {_bytes(weights)} ({width_key}="
             f"{cfg.model.param_budget or cfg.model.hidden_size}: hidden_size {model.stack.hidden_size})"]
    if shape:
        parts.append(f"the first layer's outputs over the largest batch {_bytes(outputs)} ({shape.steps} steps "
                     f"x {shape.sequences} sequences x {width} units x {element} bytes; {shape.steps_key}, "
                     f"{shape.sequences_key}, {width_key})")
    if weights >= outputs or not shape:
        lower = width_key
    else:  # the largest factor of the outputs is the one out of proportion
        lower = max([(shape.steps, shape.steps_key), (shape.sequences, shape.sequences_key),
                     (width, width_key)])[1]
    raise ConfigError(f"this run needs at least {_bytes(weights + outputs)} of memory and the {device.type} has "
                      f"{_bytes(have)}: {'; '.join(parts)}. Lower {lower}.")


def check_pyramid_depth(model, task) -> None:
    """Each pyramid reduction halves time: past 2^(L-1) > T steps (2^L with model.pyramid_input) the
    top layers see a single step padded with zeros, which no architecture means."""
    if model.time_reduction <= 1:
        return
    steps = task.probe_batch().inputs.shape[0]
    if model.time_reduction > steps:
        layers = model.stack.num_layers
        most = steps.bit_length() - model.stack.pyramid_input  # largest L with time_reduction <= steps
        raise ConfigError(
            f"model.pyramid=true with model.num_layers={layers} reduces time {model.time_reduction}x, "
            f"but this task's sequences have {steps} steps: use model.num_layers <= {most} "
            f"({'2^num_layers' if model.stack.pyramid_input else '2^(num_layers-1)'} <= {steps}) "
            f"or longer sequences")


def build_experiment(cfg: DictConfig, device: torch.device) -> Experiment:
    """Task, model (and its width), optimiser and schedule from the config, checked as they are built.
    Sets nothing process-wide (`prepare_process` does), so the tests build every preset this way in one
    process."""
    task = build_task(cfg, device)
    model, hidden_size = build_model(cfg, task.spec, device, task.batch_shape())
    check_pyramid_depth(model, task)
    optimizer = instantiate_group(cfg.optim, "optim", model.parameters())
    scheduler = instantiate_group(cfg.schedule, "schedule", optimizer) if cfg.schedule else None
    return Experiment(task, model, hidden_size, optimizer, scheduler)


def train_settings(cfg: DictConfig, **overrides: Any) -> TrainSettings:
    """The trainer's settings from the config: every `TrainSettings` field that `train` has, by name
    (no field is copied by hand), then `overrides` (those that are not `train` keys, e.g. progress)."""
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{**{k: v for k, v in cfg.train.items() if k in names}, **overrides})
