"""The boundary with a user's own code: what a cell and a task must provide, checked before training.

A cell or task named by `cell._target_` / `task._target_` may live in the user's own package
(docs/extending.md). What can go wrong there is reported as a config error naming the
key, what was found and what is expected, instead of a traceback from deep inside training:

- the target cannot be imported (`check_class`);
- it is not a cell or a task: which methods and attributes it lacks (`check_class`, `check_task`);
- its `step` returns the wrong shapes, found on one tiny step before training (`check_cell_step`).

The interfaces themselves are `rnnbench.modules.cells.Cell` and `rnnbench.tasks.base.Task`: a class that subclasses
them has everything but what it must write itself (`step`; a task's abstract methods and `spec`).
"""

from __future__ import annotations

import inspect
import traceback
from typing import Any

import torch
from hydra._internal.utils import _locate
from omegaconf import DictConfig

from rnnbench.errors import ConfigError
from rnnbench.tasks.base import IOSpec

# What the recurrent stacks, the diagnostics and the budget search use of a cell (rnnbench/modules/cells.py).
CELL_METHODS = ("input_projection", "step", "default_state", "fused_mode", "gate_activations")
CELL_ATTRIBUTES = ("input_size", "hidden_size")
# What the trainer and the app use of a task (tasks/base.py); `spec` may be set in __init__.
TASK_METHODS = ("train_batch", "loss", "batch_metrics", "evaluate", "probe_batch", "solved",
                "state_dict", "load_state_dict", "describe", "memoryless_baseline")
TASK_ATTRIBUTES = ("name", "spec", "main_metric", "main_metric_mode")

EXPECTED = {
    "cell": "a recurrent cell: a subclass of rnnbench.modules.cells.Cell, or a torch.nn.Module with "
            "input_projection(x) (T, B, I) -> (T, B, G*H), step(x_proj_t, state) -> (h, state), "
            "default_state(batch, device, dtype) -> (h, ...), fused_mode (None: no torch kernel) and "
            "gate_activations (the sigmoid gates step reports; (): none)",
    "task": "a task: a subclass of rnnbench.tasks.base.Task (train_batch, loss, batch_metrics, evaluate, and "
            "the attributes name, spec, main_metric, main_metric_mode)",
}
WHERE = ("it must be importable where rnnbench runs: a module in the current folder, on PYTHONPATH, "
         "or in an installed package")


def check_class(node: DictConfig, key: str) -> Any:
    """The class (or factory) `node._target_` names, once it is known to import and, when it is a
    class, to have the methods of a `key` ('cell' or 'task'). Raises ConfigError otherwise."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        raise ConfigError(f"{key}._target_ is missing: it names the class to build, {EXPECTED[key]}")
    try:
        found = _locate(target)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{key}._target_={target} cannot be imported: {_import_reason(target, e)}; "
                          f"{WHERE}") from None
    if key == "cell" and not node.get("_partial_", False):
        raise ConfigError(f"{key}._partial_ must be true (found {node.get('_partial_')}): the model "
                          f"builds one {target} per layer and direction, calling it with (input_size, "
                          f"hidden_size)")
    if inspect.isclass(found):
        methods = CELL_METHODS if key == "cell" else TASK_METHODS
        lacking = [m for m in methods if not hasattr(found, m)]
        lacking += sorted(getattr(found, "__abstractmethods__", ()))  # declared by the base, not written
        if key == "cell" and not issubclass(found, torch.nn.Module):
            lacking.insert(0, "torch.nn.Module as a base (its parameters train)")
        if lacking:
            raise ConfigError(f"{key}._target_={target} is not {EXPECTED[key].split(':')[0]}: it lacks "
                              f"{', '.join(lacking)}. Expected {EXPECTED[key]}")
        _check_arguments(found, node, key, target)
    return found


def _check_arguments(cls: type, node: DictConfig, key: str, target: str) -> None:
    """The class takes the config's keys as keyword arguments, besides what rnnbench passes itself:
    (input_size, hidden_size) to a cell, device= to a task."""
    keys = [k for k in node if not str(k).startswith("_")]
    given = ({"input_size": 1, "hidden_size": 1} if key == "cell" else {"device": "cpu"})
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read (a builtin): instantiate will say
        return
    try:
        signature.bind(**given, **{k: None for k in keys})
    except TypeError as e:
        passed = ", ".join([*given, *keys])
        raise ConfigError(f"{key}._target_={target} cannot be built from the config: {e} (it is called "
                          f"with {passed}; its parameters: {signature}). Remove the key from the "
                          f"{key} config, or add the parameter") from None


def check_task(task: Any, target: str) -> None:
    """A built task has every attribute the trainer reads, `spec` an IOSpec."""
    lacking = [a for a in (*TASK_ATTRIBUTES, *TASK_METHODS) if not hasattr(task, a)]
    if lacking:
        raise ConfigError(f"task._target_={target} is not a task: it lacks {', '.join(lacking)}. "
                          f"Expected {EXPECTED['task']}")
    if not isinstance(task.spec, IOSpec):
        raise ConfigError(f"task._target_={target}: its spec is {type(task.spec).__name__}, expected a "
                          f"rnnbench.tasks.base.IOSpec (what the model must accept and produce)")
    if task.main_metric_mode not in ("min", "max"):
        raise ConfigError(f"task._target_={target}: main_metric_mode={task.main_metric_mode!r}, "
                          f"expected 'min' or 'max'")


def check_cell_step(cell: Any, target: str, batch: int = 2) -> None:
    """One step of the model's own first cell on zeros, before training: `default_state` gives a
    tuple of (B, ...) tensors, h first, and `step` returns h (B, H) and a state of the same shapes.
    Runs without gradients and leaves every random generator where it was."""
    lacking = [a for a in (*CELL_METHODS, *CELL_ATTRIBUTES) if not hasattr(cell, a)]
    if lacking:
        raise ConfigError(f"cell._target_={target} is not a recurrent cell: it lacks {', '.join(lacking)}. "
                          f"Expected {EXPECTED['cell']}")
    B, H = batch, cell.hidden_size
    param = next(cell.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)

    def fail(what: str) -> ConfigError:
        return ConfigError(f"cell._target_={target}: {what} (checked on one step with batch {B}, "
                           f"input_size {cell.input_size}, hidden_size {H} before training)")

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        state = cell.default_state(B, device, dtype)
        if not _is_state(state, B) or tuple(state[0].shape) != (B, H):
            raise fail(f"default_state({B}) returned {_shapes(state)}; expected a tuple of tensors "
                       f"(h, ...), h of shape (batch, hidden_size) = ({B}, {H}), each (batch, ...)")
        x_proj = cell.input_projection(torch.zeros(1, B, cell.input_size, device=device, dtype=dtype))
        if not isinstance(x_proj, torch.Tensor) or x_proj.dim() != 3 or tuple(x_proj.shape[:2]) != (1, B):
            raise fail(f"input_projection(x) of x (1, {B}, {cell.input_size}) returned {_shapes(x_proj)}; "
                       f"expected (T, B, ·) = (1, {B}, ·)")
        out = cell.step(x_proj[0], state)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise fail(f"step(x_proj_t, state) returned {_shapes(out)}; expected a pair (h, state)")
        h, new_state = out
        if not isinstance(h, torch.Tensor) or tuple(h.shape) != (B, H):
            raise fail(f"step(x_proj_t, state) returned h of shape {_shapes(h)}; expected (batch, "
                       f"hidden_size) = ({B}, {H})")
        if not _is_state(new_state, B) or _shapes(new_state) != _shapes(state):
            raise fail(f"step(x_proj_t, state) returned the state {_shapes(new_state)}; expected the "
                       f"shapes of default_state({B}): {_shapes(state)}")


def _is_state(state: Any, batch: int) -> bool:
    return (isinstance(state, tuple) and len(state) > 0
            and all(isinstance(s, torch.Tensor) and s.dim() >= 1 and s.shape[0] == batch for s in state))


def _shapes(value: Any) -> str:
    """(2, 8) for a tensor, ((2, 8), (2, 8)) for a tuple of them, the type's name otherwise."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_shapes(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return type(value).__name__


def _import_reason(target: str, error: Exception) -> str:
    """Why `target` did not import, in one line; for an error inside the user's module, where."""
    cause = error.__cause__ or error
    name = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
    if name and (target + ".").startswith(name + "."):  # the target's own path is what is missing
        if "." in name:
            module, _, attribute = name.rpartition(".")
            return f"module {module!r} has no {attribute!r}"
        return f"no module named {name!r}"
    if isinstance(cause, AttributeError):
        return str(cause)
    if error is cause:
        return str(error)
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if not f.filename.startswith("<frozen")]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"importing it raised {type(cause).__name__}: {cause}{where}"
