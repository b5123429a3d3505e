"""The config schemas (rnnbench/run/config.py): one source of truth for each default and allowed value."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import warnings

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import REPO
from rnnbench.errors import ConfigError
from rnnbench.modules.cells import Cell
from rnnbench.run import config, reference
from rnnbench.run.train import TrainSettings

# The task keys the schema links to `train` on purpose: one batch size and one data seed per run.
LINKED = {"batch_size": "${train.batch_size}", "seed": "${train.data_seed}"}
# Each schema built from a class, and that class: the constructor holds the defaults.
SOURCES = {**{schema: get_class(schema._target_) for options in config.SCHEMAS.values()
              for schema in options.values() if schema._target_.startswith("rnnbench.")},
           config.ModelConf: get_class(config.ModelConf._target_), config.TrainConf: TrainSettings}


@pytest.mark.parametrize("schema", SOURCES, ids=lambda c: c.__name__)
def test_no_schema_writes_a_default_its_class_has(schema):
    """By construction, not by comparison: in config.py's source, a schema field whose class's
    constructor has a default for it is declared without a value (the decorator fills it in)."""
    tree = ast.parse((REPO / "rnnbench" / "run" / "config.py").read_text())
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == schema.__name__]
    parameters = inspect.signature(SOURCES[schema]).parameters
    written = [f.target.id for f in node.body if isinstance(f, ast.AnnAssign) and f.value is not None
               and f.target.id in parameters and not f.target.id.startswith("_")
               and parameters[f.target.id].default is not inspect.Parameter.empty
               and f.target.id not in LINKED]
    assert written == [], f"{schema.__name__} writes the default of {written} again"


@pytest.mark.parametrize("schema", SOURCES, ids=lambda c: c.__name__)
def test_schema_defaults_are_the_constructors_own(schema):
    """What the decorator filled in: the app and a user of the class in Python get the same experiment."""
    signature = inspect.signature(SOURCES[schema])
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


@pytest.mark.parametrize("option", [p for group in ("cell", "task") for p in sorted((REPO / "conf" / group).glob("*.yaml"))],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_group_option_sets_only_what_differs_from_its_schema(option):
    """conf/cell/lstm.yaml restating forget_bias=1.0 would be the default written a second time."""
    text = yaml.safe_load(option.read_text())
    schema = config.SCHEMAS[option.parent.name][text["defaults"][0].split("/")[-1].split("@")[0]]
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    restated = {k: v for k, v in text.items() if k != "defaults" and k in defaults and defaults[k] == v}
    assert restated == {}


def test_allowed_values_are_the_classes_own():
    from rnnbench.modules import cells, models, recurrent
    from rnnbench.records import wandb_sink
    from rnnbench.tasks import copy, language_model, seq_image

    cfg = config.compose(["cell=peephole", "task=seq_image"])
    allowed = config.allowed_values(cfg)
    assert allowed["model.backend"] is recurrent.BACKENDS and allowed["model.pooling"] is models.POOLINGS
    assert allowed["logger.wandb.mode"] is wandb_sink.MODES
    assert allowed["cell.recurrent_init"] is cells.RECURRENT_INITS
    assert allowed["cell.variant"] is cells.PeepholeLSTMCell.ALLOWED["variant"]
    assert allowed["task.mode"] is seq_image.MODES
    assert allowed["train.clip_mode"] is TrainSettings.ALLOWED["clip_mode"]
    assert config.allowed_values(config.compose(["task=text"]))["task.level"] is language_model.LEVELS
    assert config.allowed_values(config.compose(["task=lm"]))["task.level"] is language_model.LEVELS
    assert config.allowed_values(config.compose(["task=copy"]))["task.variant"] is copy.VARIANTS
    assert "cell.variant" not in config.allowed_values(config.compose(["cell=gru"]))


class MyCell(Cell):
    """A user's own cell with a `variant` key that is not Greff et al.'s."""

    def __init__(self, input_size, hidden_size, variant="diagonal"):
        self.variant = variant
        super().__init__(input_size, hidden_size)


def test_a_users_own_keys_are_not_held_to_our_classes_values():
    cfg = config.compose(["cell=vanilla"])
    OmegaConf.set_struct(cfg, False)
    cfg.cell = {"_target_": f"{__name__}.MyCell", "_partial_": True, "variant": "diagonal"}
    cfg.task = {**cfg.task, "mode": "my-own-mode"}  # the copy task has no `mode`: nothing of ours checks it
    config.validate(cfg)
    cfg.cell = {"_target_": "rnnbench.modules.cells.PeepholeLSTMCell", "_partial_": True, "variant": "diagonal"}
    with pytest.raises(ConfigError, match=r"cell.variant='diagonal' is not allowed: choose one of vanilla, nig"):
        config.validate(cfg)


def test_the_configuration_page_is_generated_from_the_code():
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    start, end = page.index(reference.BEGIN), page.index(reference.END) + len(reference.END)
    assert page[start:end] == reference.reference(), \
        "docs/configuration.md is stale: python -m rnnbench.run.reference docs/configuration.md"


@pytest.mark.parametrize("key, accepted, refused", [
    # sizes: >= 1 (cells.size_error)
    ("model.hidden_size", [1, 2], [0, -1]),
    ("train.max_steps", [1], [0]),
    # >= 0
    ("train.clip", [0.0, 1e-12], [-1e-12, -1.0]),
    ("cell.recurrent_gain", [0.0, 1.5], [-0.5]),
    ("train.checkpoint_every", [0, 7], [-1]),
    # [0, 1)
    ("model.dropout", [0.0, 0.999], [1.0, -0.001, 1.5]),
    ("model.output_dropout", [0.0, 0.5], [1.0]),
    # > 0
    ("optim.lr", [1e-12, 20.0], [0.0, -1e-3]),
])
def test_every_range_rule_holds_at_its_boundaries(key, accepted, refused):
    """Each range check accepts its boundary where the boundary is allowed and refuses the value just past
    it: a check written with the wrong comparison (> for >=, <= for <) fails one side."""
    base = ["task=adding", "model.num_layers=2"] if "dropout" in key else ["task=adding"]
    for value in accepted:
        config.validate(config.compose([*base, f"{key}={value}"]))
    for value in refused:
        with pytest.raises(ConfigError, match=rf"^{key}={value!s}"):
            config.validate(config.compose([*base, f"{key}={value}"]))


def test_the_lr_backoff_range_is_half_open_at_zero():
    ok = ["task=adding", "train.skip_nonfinite=1"]
    for value in (1.0, 0.5, 1e-9):
        config.validate(config.compose([*ok, f"train.lr_backoff={value}"]))
    for value in (0.0, -0.5, 1.000001):
        with pytest.raises(ConfigError, match=rf"train.lr_backoff={value!s} is not allowed: must be in \(0, 1\]"):
            config.validate(config.compose([*ok, f"train.lr_backoff={value}"]))


# ---- the schema decorator, the registration, composing ----------------------------------------
class Source:
    """A constructor whose defaults a schema takes: a size, a tuple (YAML list), a name."""

    def __init__(self, size=3, lengths=(1, 2), name="from the constructor"):
        self.size, self.lengths, self.name = size, lengths, name


def test_a_schema_field_without_a_value_takes_the_constructors_default():
    class Schema:
        _private: int  # private: not a key, left alone
        size: int
        lengths: list[int]
        name: str = "written in the schema"  # a value written stays

    assert config.defaults_from(Source)(Schema) is Schema
    assert Schema.size == 3 and Schema.name == "written in the schema" and not hasattr(Schema, "_private")
    assert isinstance(Schema.lengths, dataclasses.Field)  # a fresh list per config, as a YAML list composes
    assert Schema.lengths.default_factory() == [1, 2] and isinstance(Schema.lengths.default_factory(), list)

    class Targeted:
        _target_ = f"{__name__}.Source"
        size: int

    assert config.defaults_from_constructor(Targeted).size == 3

    class NoKeysOfItsOwn(Targeted):  # no annotations in its body: nothing to fill in
        pass

    assert config.defaults_from(Source)(NoKeysOfItsOwn) is NoKeysOfItsOwn


def test_a_schema_field_the_constructor_has_no_default_for_is_refused_by_name():
    class Schema:
        size: int
        missing: int

    with pytest.raises(TypeError, match=r"^Schema.missing: Source has no default for 'missing'$"):
        config.defaults_from(Source)(Schema)
    source = functools.partial(Source)  # a callable without a __name__ is named by its repr
    with pytest.raises(TypeError, match=rf"^Schema.missing: {re.escape(repr(source))} has no default for 'missing'$"):
        config.defaults_from(source)(Schema)


def test_the_schemas_are_registered_where_the_config_files_name_them(monkeypatch):
    """conf/config.yaml reads `schema`; conf/<group>/<option>.yaml reads /schema/<group>/<option>."""
    stored = {}

    class Store:  # stands in for Hydra's ConfigStore singleton, which holds the schemas from earlier tests
        @staticmethod
        def instance():
            return Store

        @staticmethod
        def store(name, node, group=None):
            stored[(group, name)] = node

    monkeypatch.setattr(config, "ConfigStore", Store)
    config.register_schemas()
    assert stored.pop((None, "schema")) is config.Config
    assert stored == {(f"schema/{group}", name): node for group, options in config.SCHEMAS.items()
                      for name, node in options.items()}
    for option in [*(REPO / "conf" / "cell").glob("*.yaml"), *(REPO / "conf" / "task").glob("*.yaml")]:
        named = yaml.safe_load(option.read_text())["defaults"][0].split("@")[0]  # e.g. /schema/task/copy
        assert tuple(named.lstrip("/").rsplit("/", 1)) in stored, option


def test_compose_gives_hydras_own_node_only_when_asked_and_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Hydra warns when no version_base is given
        plain = config.compose(["task=adding"])
        with_hydra = config.compose(["task=adding"], hydra_config=True)
    assert "hydra" not in plain and plain.task._target_ == "rnnbench.tasks.adding.AddingTask"
    assert with_hydra.hydra.sweeper is not None


# ---- every cross-key rule and the rest of validate, with the message a user reads -------------
# The messages are docs/bad-inputs.md's (rows 14 and 64, and the eval_lengths row); each is the whole error.
@pytest.mark.parametrize("overrides, message", [
    (["model.param_budget=1000", "model.state_budget=64"],
     "model.state_budget=64 is not allowed with model.param_budget=1000: each one chooses hidden_size; set one of them"),
    (["task=lm", "+task.eval_lengths=[100]"],
     "task.eval_lengths=[100] is not allowed for this task: its sequence length is not a parameter (tasks with "
     "task.seq_len: copy, adding, the formal languages, mqar, induction_heads)"),
    (["train.lr_backoff=0.5"],
     "train.lr_backoff=0.5 needs train.skip_nonfinite >= 1: the learning rate backs off at a skipped step, and "
     "with skip_nonfinite=0 no step is skipped"),
    (["model.dropout=0.3"],
     "model.dropout=0.3 is not allowed with model.num_layers=1: it applies between stacked layers and one layer "
     "has none, so it would do nothing. Stack layers (arch=deep, model.num_layers >= 2), or use "
     "model.output_dropout / model.embedding_dropout"),
    (["train.device=tpu"], "train.device='tpu' is not allowed: choose auto, cpu, cuda or cuda:N"),
    (["train.device=CPU"], "train.device='CPU' is not allowed: choose auto, cpu, cuda or cuda:N"),
    (["logger.wandb.mode=sometimes"],  # a key three levels deep
     "logger.wandb.mode='sometimes' is not allowed: choose one of auto, offline, online, disabled"),
    (["train.batch_size=0"],  # once, at its source: task.batch_size interpolates it
     "train.batch_size=0 is not allowed: must be a positive integer (>= 1)"),
    (["model.hidden_size=0", "train.clip=-1"],  # every error, one line each
     "model.hidden_size=0 is not allowed: must be a positive integer (>= 1)\n"
     "train.clip=-1.0 is not allowed: must be >= 0"),
])
def test_each_rule_refuses_with_its_whole_message(overrides, message):
    cfg = config.compose(["task=adding", *overrides])
    with pytest.raises(ConfigError) as refused:
        config.validate(cfg)
    assert str(refused.value) == message


@pytest.mark.parametrize("overrides", [
    ["model.param_budget=1000"], ["model.state_budget=64"], ["task=copy", "task.eval_lengths=[100]"],
    ["train.lr_backoff=0.5", "train.skip_nonfinite=2"], ["model.dropout=0.3", "model.num_layers=2"],
    ["train.device=auto"], ["train.device=cpu"], ["train.device=cuda"], ["train.device=cuda:1"],
])
def test_what_each_rule_allows_passes(overrides):
    config.validate(config.compose(["task=adding", *overrides]))


class PlainTask:
    """A user's own task without ALLOWED: nothing of ours to hold its keys to."""


def test_a_users_class_without_allowed_values_or_that_does_not_import_is_not_checked():
    cfg = config.compose(["task=adding"])
    OmegaConf.set_struct(cfg, False)
    cfg.task = {"_target_": f"{__name__}.PlainTask", "variant": "anything"}
    assert not any(key.startswith("task.") for key in config.allowed_values(cfg))
    config.validate(cfg)
    cfg.task = {"_target_": "no_such_module.Task", "variant": "anything"}
    assert config.target_class(cfg.task) is None and config.target_class(None) is None
    config.validate(cfg)
