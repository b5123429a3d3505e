"""The config schemas (rnnbench/run/config.py): one source of truth for each default and allowed value."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hydra.utils import get_class

from rnnbench.run import config

# The task keys the schema links to `train` on purpose: one batch size and one data seed per run.
LINKED = {"batch_size": "${train.batch_size}", "seed": "${train.data_seed}"}
SCHEMAS = [c for c in vars(config).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
           and getattr(c, "_target_", "").startswith(("rnnbench.", "tasks."))]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda c: c.__name__)
def test_schema_defaults_are_the_constructors_own(schema):
    """The app and a user of the class in Python get the same experiment: the task schemas take their
    defaults from the constructors (config.defaults_from_constructor), the others must repeat them."""
    signature = inspect.signature(get_class(schema._target_))
    for field in dataclasses.fields(schema):
        if field.name.startswith("_") or field.name not in signature.parameters:
            continue
        default = signature.parameters[field.name].default
        if field.name in LINKED and issubclass(schema, config.TaskConf):
            assert field.default == LINKED[field.name]
            continue
        value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if isinstance(value, list) and isinstance(default, tuple):  # a YAML list is the constructor's tuple
            value = tuple(value)
        assert value == default, f"{schema.__name__}.{field.name}: {value!r} vs {default!r}"


def test_every_allowed_tuple_is_the_modules_own():
    from rnnbench.modules import cells, models, recurrent
    from rnnbench.records import wandb_sink
    from rnnbench.tasks import seq_image, text

    assert config.ALLOWED["model.backend"] is recurrent.BACKENDS
    assert config.ALLOWED["model.pooling"] is models.POOLINGS
    assert config.ALLOWED["logger.wandb.mode"] is wandb_sink.MODES
    assert config.ALLOWED["cell.recurrent_init"] is cells.RECURRENT_INITS
    assert config.ALLOWED["task.mode"] is seq_image.MODES
    assert config.ALLOWED["task.level"] is text.LEVELS and config.ALLOWED["task.empty_text"] is text.EMPTY_TEXT
