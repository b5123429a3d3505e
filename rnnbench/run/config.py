"""Structured-config schemas (validated by OmegaConf when Hydra composes) and range checks.
(About 400 lines on purpose: every key a user can set, its type, default source and allowed values, in one file.)

Types are checked at compose time by the schemas registered here (`optim.lr=abc` fails before
anything runs); ranges and cross-key rules that a type cannot express (`model.hidden_size=-3`,
`task.seq_len=0`, `train.lr_backoff` without `train.skip_nonfinite`) are checked by `validate`,
as soon as Hydra has composed (the callback `callbacks.ValidateConfig`: before a run's folder is
made, on every job of a basic sweep before any starts) and again first thing in every job (an Optuna
trial's drawn values), before any file is written: one step, one message format
(``<key>=<value> is not allowed: <what is>``). What needs the built model and task (the pyramid's
depth against the sequence length, `build.check_pyramid_depth`) and what a constructor alone knows
(a value torch's optimiser rejects) are reported the same way, as a ConfigError.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from rnnbench.errors import ConfigError
from rnnbench.modules.cells import size_error
from rnnbench.records.wandb_sink import MODES as WANDB_MODES
from rnnbench.run.train import TrainSettings


# The configs: an installed package reads the copy of conf/ its wheel ships (rnnbench/conf, setup.py);
# a checkout (editable install) reads the top-level conf/ itself, the one source.
_PACKAGE = Path(__file__).resolve().parent.parent
CONF_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")


def defaults_from(source: Any) -> Callable[[type], type]:
    """Schema decorator (under @dataclass): each field declared without a value takes the default of the
    same-named argument of `source` (a class: its constructor), the one place that default is written
    (a user of the class in Python and the app get the same experiment). A tuple default becomes a
    list, what a YAML list composes to."""
    parameters = inspect.signature(source).parameters

    def decorate(cls: type) -> type:
        for name in cls.__dict__.get("__annotations__", {}):
            if name in cls.__dict__ or name.startswith("_"):
                continue
            default = parameters[name].default if name in parameters else inspect.Parameter.empty
            if default is inspect.Parameter.empty:
                raise TypeError(f"{cls.__name__}.{name}: {getattr(source, '__name__', source)} has no default "
                                f"for {name!r}")
            setattr(cls, name, field(default_factory=lambda d=default: list(d)) if isinstance(default, tuple)
                    else default)
        return cls
    return decorate


def defaults_from_constructor(cls: type) -> type:
    """`defaults_from` the class the schema's `_target_` names."""
    return defaults_from(get_class(cls._target_))(cls)


# ---------------------------------------------------------------------------------------------
# cells (group `cell`)
# Every cell schema lists its keys; their defaults come from the cell's constructor.
@dataclass
class CellConf:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
@defaults_from_constructor
class VanillaConf(CellConf):
    _target_: str = "rnnbench.modules.cells.VanillaCell"
    recurrent_init: str
    recurrent_gain: float  # U times this after its init (orthogonal: ‖U‖₂ = gain)
    nonlinearity: str


@dataclass
@defaults_from_constructor
class LSTMConf(CellConf):
    _target_: str = "rnnbench.modules.cells.LSTMCell"
    recurrent_init: str
    recurrent_gain: float
    forget_bias: float


@dataclass
@defaults_from_constructor
class ArjovskyLSTMConf(CellConf):
    _target_: str = "rnnbench.modules.cells.ArjovskyLSTMCell"
    recurrent_init: str
    recurrent_gain: float
    forget_bias: float
    glorot: bool  # Arjovsky et al. 2016's code: Glorot-uniform W, U, V_o
    cell_to_output: bool  # the cell -> output gate matrix V_o
    learned_initial_state: bool


@dataclass
@defaults_from_constructor
class PeepholeConf(CellConf):
    _target_: str = "rnnbench.modules.cells.PeepholeLSTMCell"
    recurrent_init: str
    recurrent_gain: float
    forget_bias: float
    variant: str  # Greff et al. 2016: one of PeepholeLSTMCell.ALLOWED["variant"]


@dataclass
@defaults_from_constructor
class GRUConf(CellConf):
    _target_: str = "rnnbench.modules.cells.GRUCell"
    recurrent_init: str
    recurrent_gain: float
    reset_after: bool


# The modern cells (`modules/modern_cells.py`): no torch-layout recurrent matrix, so no recurrent_init / gain;
# each constructor checks its own ranges (its ValueError names the key, reported as a ConfigError).
@dataclass
@defaults_from_constructor
class MinGRUConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.MinGRUCell"
    log_space: bool


@dataclass
@defaults_from_constructor
class MinLSTMConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.MinLSTMCell"
    log_space: bool


@dataclass
@defaults_from_constructor
class LRUConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.LRUCell"
    state_dim: Optional[int]  # complex state size N; None: hidden_size
    r_min: float
    r_max: float
    max_phase: float


@dataclass
@defaults_from_constructor
class RGLRUConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.RGLRUCell"
    num_heads: int
    temporal_block: bool  # Hawk's block: conv + GeLU gate branch + output projection
    conv_width: int
    min_rad: float
    max_rad: float


@dataclass
@defaults_from_constructor
class IndRNNConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.IndRNNCell"
    gamma: float  # |u| <= gamma^(1/time_steps)
    time_steps: int


@dataclass
@defaults_from_constructor
class S6Conf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.S6Cell"
    state_dim: int
    expand: int
    conv_width: int
    dt_min: float
    dt_max: float


@dataclass
@defaults_from_constructor
class MLSTMConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.MLSTMCell"
    num_heads: int
    chunk_size: int  # the chunkwise-parallel form's chunk length (model.backend=auto)


@dataclass
@defaults_from_constructor
class SLSTMConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.SLSTMCell"
    num_heads: int


@dataclass
@defaults_from_constructor
class GatedDeltaNetConf(CellConf):
    _target_: str = "rnnbench.modules.modern_cells.GatedDeltaNetCell"
    num_heads: int
    allow_neg_eigval: bool  # beta in (0, 2): negative eigenvalues (Grazzi et al. 2024)
    chunk_size: int  # the chunkwise-parallel form's chunk length (model.backend=auto)


MODERN_CELL_SCHEMAS = {"mingru": MinGRUConf, "minlstm": MinLSTMConf, "lru": LRUConf, "rglru": RGLRUConf,
                       "indrnn": IndRNNConf, "s6": S6Conf, "mlstm": MLSTMConf, "slstm": SLSTMConf,
                       "gated_deltanet": GatedDeltaNetConf}


# ---------------------------------------------------------------------------------------------
# model (architecture keys; the `arch` group sets some of them)
@dataclass
@defaults_from_constructor
class ModelConf:
    _target_: str = "rnnbench.modules.models.SequenceModel"
    hidden_size: int
    num_layers: int
    bidirectional: bool
    pyramid: bool
    pyramid_input: bool  # with pyramid: pair the input frames before the first layer too
    dropout: float
    residual: bool
    backend: str
    embedding_size: Optional[int]
    embedding_dropout: float
    output_dropout: float
    tie_weights: bool
    pooling: str
    # When set, hidden_size is replaced by the size whose model comes closest to this many parameters.
    param_budget: Optional[int]
    param_count: str  # total | effective: how param_budget (and the report) count parameters
    # When set, hidden_size is replaced by the size whose model carries closest to this many floats per
    # sequence between steps (all layers and directions): iso-state comparisons (Poli et al. 2024, MAD).
    state_budget: Optional[int]
    block: str  # none | residual_mlp: each layer in a pre-norm residual block with a gated MLP
    block_mlp_ratio: int  # the gated MLP's width / the block's width (Griffin: 3)


# ---------------------------------------------------------------------------------------------
# tasks (group `task`)
@dataclass
class TaskConf:
    _target_: str = MISSING
    batch_size: int = "${train.batch_size}"  # type: ignore[assignment]
    seed: int = "${train.data_seed}"  # type: ignore[assignment]


@dataclass
@defaults_from_constructor
class CopyConf(TaskConf):
    _target_: str = "rnnbench.tasks.copy.CopyTask"
    seq_len: int
    variant: str
    num_symbols: int
    copy_len: int
    val_size: int
    solve_threshold: float
    eval_lengths: list[int]  # length generalisation: also evaluate at these


@dataclass
@defaults_from_constructor
class AddingConf(TaskConf):
    _target_: str = "rnnbench.tasks.adding.AddingTask"
    seq_len: int
    variant: str
    val_size: int
    solve_mse: float
    eval_lengths: list[int]  # length generalisation: also evaluate at these


@dataclass
@defaults_from_constructor
class FormalLanguageConf(TaskConf):
    _target_: str = "rnnbench.tasks.formal_languages.FormalLanguageTask"
    language: str  # Delétang et al. 2023: one of FormalLanguageTask.ALLOWED["language"]
    seq_len: int  # training lengths are uniform over 1..seq_len
    eval_length: Optional[int]  # None: the val/test splits spread over 1..seq_len; else all at this length
    test_lengths: list[int]  # the test split spreads over these (theirs: 41..500); []: as validation
    val_size: int
    solve_threshold: float
    eval_lengths: list[int]  # length generalisation: also evaluate at these (theirs: 41..500)


@dataclass
@defaults_from_constructor
class MQARConf(TaskConf):
    _target_: str = "rnnbench.tasks.mqar.MQARTask"
    seq_len: int  # Zoology's input_seq_len (even, < vocab_size)
    num_kv_pairs: int  # K: 4K <= seq_len
    vocab_size: int  # keys from the lower half, values from the upper half
    power_a: float  # the query gaps' power law (1: uniform)
    val_size: int
    solve_threshold: float
    eval_lengths: list[int]  # length generalisation: also evaluate at these


@dataclass
@defaults_from_constructor
class InductionHeadsConf(TaskConf):
    _target_: str = "rnnbench.tasks.induction_heads.InductionHeadsTask"
    seq_len: int
    vocab_size: int  # two of them special (the trigger and Safari's unused no-op)
    val_size: int
    solve_threshold: float
    eval_lengths: list[int]  # length generalisation: also evaluate at these (Mamba: up to 2^20)


@dataclass
@defaults_from_constructor
class LMConf(TaskConf):
    _target_: str = "rnnbench.tasks.language_model.LanguageModelTask"
    data_dir: Optional[str]  # default: $RNNBENCH_DATA, else ~/.cache/rnnbench/data
    corpus: str  # a dataset name under data_dir, or a path (folder or text file)
    level: Optional[str]  # char | word; None: word for a folder of splits, char for one file
    bptt: int
    eval_batch_size: int
    k1: Optional[int]  # truncated BPTT: advance k1 steps per window, backprop bptt (= k2)
    train_fraction: float
    valid_fraction: float
    max_train_tokens: Optional[int]


@dataclass
@defaults_from_constructor
class SeqImageConf(TaskConf):
    _target_: str = "rnnbench.tasks.seq_image.SequentialImageTask"
    data_dir: Optional[str]
    dataset: str
    mode: str  # row: 28 steps of 28 pixels; pixel: 784 steps of 1
    permute: bool
    permute_seed: int
    eval_batch_size: int
    val_fraction: float
    split_seed: int
    max_train: Optional[int]
    max_eval: Optional[int]


@dataclass
@defaults_from_constructor
class TextConf(TaskConf):
    _target_: str = "rnnbench.tasks.text.TextClassificationTask"
    data_dir: Optional[str]
    dataset: Optional[str]
    train_file: Optional[str]
    valid_file: Optional[str]
    test_file: Optional[str]
    format: Optional[str]  # csv | tsv | jsonl; None: from the file name
    text_column: Any
    label_column: Any
    level: str
    lowercase: bool
    min_freq: int
    max_vocab: Optional[int]
    max_len: Optional[int]
    eval_batch_size: int
    bucket: bool
    bucket_chunk: int
    val_fraction: float
    test_fraction: float
    split_seed: int
    empty_text: str  # error | skip
    max_train: Optional[int]
    max_eval: Optional[int]


# ---------------------------------------------------------------------------------------------
# optimisers (group `optim`) and schedules (group `schedule`)
@dataclass
class OptimConf:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass
class SGDConf(OptimConf):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
@defaults_from_constructor
class RMSpropConf(OptimConf):
    _target_: str = "rnnbench.run.optim.RMSprop"
    alpha: float
    eps: float
    momentum: float
    initial_square_avg: float  # Arjovsky et al. 2016's code: 1e-3 (with eps 0, alpha 0.9)


@dataclass
class AdamConf(OptimConf):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class AdamWConf(AdamConf):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class ScheduleConf:
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class ConstantScheduleConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    factor: float = 1.0
    total_iters: int = 0


@dataclass
class CosineScheduleConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = "${train.max_steps}"  # type: ignore[assignment]
    eta_min: float = 0.0


@dataclass
class PlateauScheduleConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    mode: str = "min"
    factor: float = 0.25
    patience: int = 0
    threshold: float = 0.0


@dataclass
class StepScheduleConf(ScheduleConf):
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 1000
    gamma: float = 0.5


# ---------------------------------------------------------------------------------------------
# The trainer's keys take their defaults from `TrainSettings`; the rest are the app's own.
@dataclass
@defaults_from(TrainSettings)
class TrainConf:
    max_steps: int
    batch_size: int = 64
    seed: int = 0
    data_seed: int = "${train.seed}"  # type: ignore[assignment]
    clip: float
    clip_mode: str  # TrainSettings.ALLOWED
    log_every: int
    eval_every: int
    profile_every: int
    device: str = "auto"
    threads: Optional[int] = None
    # Flush subnormal floats to zero on CPU (x86 FTZ/DAZ, every thread): |x| < 1.18e-38 computes as 0.
    # Vanishing gradients sink into that range, where arithmetic is 10-100x slower (docs/performance.md).
    flush_denormal: bool = True
    early_stop: bool
    length_eval: str  # end | eval: when to evaluate at task.eval_lengths (eval: every eval too)
    gate_stats: bool  # with each temporal profile: gate saturation statistics (gated cells only)
    # Wall-clock budget in minutes (comparisons at equal time); the run ends at whichever of
    # max_steps and max_minutes comes first. Where a time budget stops a run is not reproducible.
    max_minutes: Optional[float]
    test_at_end: bool = True  # evaluate the test split once at the end (summary.json "test")
    checkpoint_every: int  # every N steps (0: none); a final one and one on SIGINT/SIGTERM/SIGUSR2 always
    checkpoint_minutes: float  # also once this many minutes have passed since the last one (0: not by the clock)
    checkpoint_at_eval: bool  # also at every evaluation
    resume: bool = False  # continue the run folder's last checkpoint (multirun jobs always do)
    # Guard rails, off by default, recorded in summary.json when on: skip a step whose loss or
    # gradient is not finite (at most this many times, then the run diverges), multiplying lr by
    # lr_backoff at each skipped step.
    skip_nonfinite: int
    lr_backoff: float


@dataclass
class WandbConf:
    mode: str = "auto"  # auto | offline | online | disabled
    project: str = "rnnbench"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConf:
    wandb: WandbConf = field(default_factory=WandbConf)
    progress: bool = True  # a bar on a terminal; elsewhere (SLURM, nohup, CI) a log line every progress_every_s
    progress_every_s: float = TrainSettings.progress_every_s
    print_every_eval: bool = True


@dataclass
class TestingConf:
    """Hooks for the test suite, not experiment settings: outside `train` and outside the config
    fingerprint (run_folder.DEFAULT_FINGERPRINT_EXCLUDE), so no result depends on them."""

    fail_at_step: Optional[int] = None  # raise right after this step, as a crash would
    pause_at_step: Optional[int] = None  # sleep a minute right after this step (signals arrive mid-step)


@dataclass
class Config:
    cell: Any = MISSING
    model: ModelConf = field(default_factory=ModelConf)
    task: Any = MISSING
    optim: Any = MISSING
    schedule: Any = None
    train: TrainConf = field(default_factory=TrainConf)
    logger: LoggerConf = field(default_factory=LoggerConf)
    testing: TestingConf = field(default_factory=TestingConf)


# Each config group's options backed by a schema (conf/<group>/<option>.yaml names one as its default).
SCHEMAS: dict[str, dict[str, type]] = {
    "cell": {"vanilla": VanillaConf, "lstm": LSTMConf, "lstm_arjovsky": ArjovskyLSTMConf, "peephole": PeepholeConf,
             "gru": GRUConf, **MODERN_CELL_SCHEMAS},
    "task": {"copy": CopyConf, "adding": AddingConf, "formal_language": FormalLanguageConf, "mqar": MQARConf, "induction_heads": InductionHeadsConf, "lm": LMConf, "seq_image": SeqImageConf, "text": TextConf},
    "optim": {"sgd": SGDConf, "rmsprop": RMSpropConf, "adam": AdamConf, "adamw": AdamWConf},
    "schedule": {"constant": ConstantScheduleConf, "cosine": CosineScheduleConf, "plateau": PlateauScheduleConf,
                 "step": StepScheduleConf},
}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def compose(overrides: Sequence[str] = (), hydra_config: bool = False) -> DictConfig:
    """The config `python -m rnnbench OVERRIDES` runs, composed outside the app (the benchmarks, the
    tests); with `hydra_config`, Hydra's own node too (the sweeper's params, the launcher)."""
    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


# ---------------------------------------------------------------------------------------------
# ranges and cross-key rules
# Allowed values are defined once, beside the code that gives them a meaning, on the class that uses
# them (its ALLOWED): a group's rules are those of the class its `_target_` names, so a user's own cell
# or task with a key of the same name (`variant`, `mode`) is held to its own rules, not to ours.
GROUPS_BY_TARGET = ("cell", "model", "task")


def target_class(node: Any) -> type | None:
    """The class `node._target_` names, or None where it does not import (`interface.check_class`
    reports that, with the reason)."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        found = get_class(target) if target else None
    except Exception:  # a user's module failing to import: reported, with its reason, when built
        return None
    return found if isinstance(found, type) else None


def allowed_values(cfg: DictConfig) -> dict[str, tuple[str, ...]]:
    """`<group>.<key>` -> its allowed values, for this config's classes."""
    allowed = {f"train.{key}": values for key, values in TrainSettings.ALLOWED.items()}
    allowed["logger.wandb.mode"] = WANDB_MODES
    for group in GROUPS_BY_TARGET:
        cls = target_class(cfg.get(group)) if isinstance(cfg, DictConfig) else None
        allowed.update({f"{group}.{key}": values for key, values in getattr(cls, "ALLOWED", {}).items()})
    return allowed

POSITIVE = ("model.hidden_size", "model.num_layers", "model.param_budget", "model.state_budget",
            "model.block_mlp_ratio", "model.embedding_size",
            "task.seq_len", "task.eval_length", "task.batch_size", "task.val_size", "task.bptt", "task.copy_len",
            "task.num_symbols", "task.num_kv_pairs", "task.vocab_size", "task.k1", "task.eval_batch_size", "task.max_train_tokens",
            "task.max_train", "task.max_eval", "task.max_len", "task.max_vocab", "task.min_freq", "train.max_steps", "train.batch_size", "train.log_every",
            "train.eval_every", "train.threads", "testing.fail_at_step", "testing.pause_at_step")
NON_NEGATIVE = ("cell.recurrent_gain", "optim.initial_square_avg", "optim.eps", "train.max_minutes", "train.clip", "train.profile_every", "train.checkpoint_every", "train.checkpoint_minutes", "logger.progress_every_s",
                "train.skip_nonfinite", "optim.weight_decay")
PROBABILITY = ("model.dropout", "model.embedding_dropout", "model.output_dropout")


def _get(cfg: DictConfig, key: str) -> Any:
    """The value at `key`, or None when absent or an interpolation (its source is checked instead)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node or OmegaConf.is_interpolation(node, leaf):
        return None
    return node[leaf]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError listing every value out of range (one line each)."""
    errors = []
    for key, allowed in allowed_values(cfg).items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            errors.append(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = _get(cfg, key)
        if value is not None and size_error(key, value) is not None:  # the constructors' own rule
            errors.append(size_error(key, value))
    for key in NON_NEGATIVE:
        value = _get(cfg, key)
        if value is not None and not value >= 0:
            errors.append(f"{key}={value} is not allowed: must be >= 0")
    for key in PROBABILITY:
        value = _get(cfg, key)
        if value is not None and not 0 <= value < 1:
            errors.append(f"{key}={value} is not allowed: must be in [0, 1)")
    if _get(cfg, "model.param_budget") is not None and _get(cfg, "model.state_budget") is not None:
        errors.append(f"model.state_budget={_get(cfg, 'model.state_budget')} is not allowed with model.param_budget="
                      f"{_get(cfg, 'model.param_budget')}: each one chooses hidden_size; set one of them")
    lr = _get(cfg, "optim.lr")
    if lr is not None and not lr > 0:
        errors.append(f"optim.lr={lr} is not allowed: must be > 0")
    if _get(cfg, "task.eval_lengths") and _get(cfg, "task.seq_len") is None:
        errors.append(f"task.eval_lengths={list(_get(cfg, 'task.eval_lengths'))} is not allowed for this task: "
                      "its sequence length is not a parameter (tasks with task.seq_len: copy, adding, the formal "
                      "languages, mqar, induction_heads)")
    backoff, skips = _get(cfg, "train.lr_backoff"), _get(cfg, "train.skip_nonfinite")
    if backoff is not None and not 0 < backoff <= 1:
        errors.append(f"train.lr_backoff={backoff} is not allowed: must be in (0, 1] (1: off)")
    elif backoff is not None and backoff < 1 and skips == 0:
        errors.append(f"train.lr_backoff={backoff} needs train.skip_nonfinite >= 1: the learning "
                      "rate backs off at a skipped step, and with skip_nonfinite=0 no step is skipped")
    dropout, layers = _get(cfg, "model.dropout"), _get(cfg, "model.num_layers")
    if dropout and layers == 1:  # torch only warns; here it would silently regularise nothing
        errors.append(f"model.dropout={dropout} is not allowed with model.num_layers=1: it applies between stacked "
                      "layers and one layer has none, so it would do nothing. Stack layers (arch=deep, "
                      "model.num_layers >= 2), or use model.output_dropout / model.embedding_dropout")
    device = _get(cfg, "train.device")
    if device is not None and not (device in ("auto", "cpu", "cuda") or str(device).startswith("cuda:")):
        errors.append(f"train.device={device!r} is not allowed: choose auto, cpu, cuda or cuda:N")
    if errors:
        raise ConfigError("\n".join(errors))
