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
from typing import Any, Optional, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from rnnbench.modules.cells import LSTM_VARIANTS, RECURRENT_INITS, VanillaCell
from rnnbench.modules.blocks import BLOCKS
from rnnbench.modules.models import PARAM_COUNTS, POOLINGS
from rnnbench.modules.recurrent import BACKENDS
from rnnbench.records.wandb_sink import MODES as WANDB_MODES
from rnnbench.tasks.seq_image import MODES
from rnnbench.tasks.text import EMPTY_TEXT, LEVELS


# The configs: an installed package reads the copy of conf/ its wheel ships (rnnbench/conf, setup.py);
# a checkout (editable install) reads the top-level conf/ itself, the one source.
_PACKAGE = Path(__file__).resolve().parent.parent
CONF_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""


# ---------------------------------------------------------------------------------------------
# cells (group `cell`)
@dataclass
class CellConf:
    _target_: str = MISSING
    _partial_: bool = True
    recurrent_init: str = "default"
    recurrent_gain: float = 1.0  # U times this after its init (orthogonal: ‖U‖₂ = gain)


@dataclass
class VanillaConf(CellConf):
    _target_: str = "rnnbench.modules.cells.VanillaCell"
    nonlinearity: str = "tanh"


@dataclass
class LSTMConf(CellConf):
    _target_: str = "rnnbench.modules.cells.LSTMCell"
    forget_bias: float = 1.0


@dataclass
class PeepholeConf(LSTMConf):
    _target_: str = "rnnbench.modules.cells.PeepholeLSTMCell"
    variant: str = "vanilla"  # Greff et al. 2016: one of rnnbench.modules.cells.LSTM_VARIANTS


@dataclass
class GRUConf(CellConf):
    _target_: str = "rnnbench.modules.cells.GRUCell"
    reset_after: bool = True


@dataclass
class ModernCellConf:
    """The cells of `modern_cells.py`: no torch-layout recurrent matrix, so no recurrent_init / gain; each
    constructor checks its own ranges (its ValueError names the key, reported as a ConfigError)."""
    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class MinGRUConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.MinGRUCell"
    log_space: bool = False


@dataclass
class MinLSTMConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.MinLSTMCell"
    log_space: bool = False


@dataclass
class LRUConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.LRUCell"
    state_dim: Optional[int] = None  # complex state size N; None: hidden_size
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 6.283185307179586


@dataclass
class RGLRUConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.RGLRUCell"
    num_heads: int = 1
    temporal_block: bool = False  # Hawk's block: conv + GeLU gate branch + output projection
    conv_width: int = 4
    min_rad: float = 0.9
    max_rad: float = 0.999


@dataclass
class IndRNNConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.IndRNNCell"
    gamma: float = 2.0  # |u| <= gamma^(1/time_steps)
    time_steps: int = 100


@dataclass
class S6Conf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.S6Cell"
    state_dim: int = 16
    expand: int = 2
    conv_width: int = 4
    dt_min: float = 0.001
    dt_max: float = 0.1


@dataclass
class MLSTMConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.MLSTMCell"
    num_heads: int = 4
    chunk_size: int = 64  # the chunkwise-parallel form's chunk length (model.backend=auto)


@dataclass
class SLSTMConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.SLSTMCell"
    num_heads: int = 4


@dataclass
class GatedDeltaNetConf(ModernCellConf):
    _target_: str = "rnnbench.modules.modern_cells.GatedDeltaNetCell"
    num_heads: int = 4
    allow_neg_eigval: bool = False  # beta in (0, 2): negative eigenvalues (Grazzi et al. 2024)
    chunk_size: int = 64  # the chunkwise-parallel form's chunk length (model.backend=auto)


MODERN_CELL_SCHEMAS = {"mingru": MinGRUConf, "minlstm": MinLSTMConf, "lru": LRUConf, "rglru": RGLRUConf,
                       "indrnn": IndRNNConf, "s6": S6Conf, "mlstm": MLSTMConf, "slstm": SLSTMConf,
                       "gated_deltanet": GatedDeltaNetConf}


# ---------------------------------------------------------------------------------------------
# model (architecture keys; the `arch` group sets some of them)
@dataclass
class ModelConf:
    _target_: str = "rnnbench.modules.models.SequenceModel"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    pyramid: bool = False
    pyramid_input: bool = False  # with pyramid: pair the input frames before the first layer too
    dropout: float = 0.0
    residual: bool = False
    backend: str = "auto"
    embedding_size: Optional[int] = None
    embedding_dropout: float = 0.0
    output_dropout: float = 0.0
    tie_weights: bool = False
    pooling: str = "last"
    # When set, hidden_size is replaced by the size whose model comes closest to this many parameters.
    param_budget: Optional[int] = None
    param_count: str = "total"  # total | effective: how param_budget (and the report) count parameters
    # When set, hidden_size is replaced by the size whose model carries closest to this many floats per
    # sequence between steps (all layers and directions): iso-state comparisons (Poli et al. 2024, MAD).
    state_budget: Optional[int] = None
    block: str = "none"  # none | residual_mlp: each layer in a pre-norm residual block with a gated MLP
    block_mlp_ratio: int = 3  # the gated MLP's width / the block's width (Griffin: 3)


# ---------------------------------------------------------------------------------------------
# tasks (group `task`)
def defaults_from_constructor(cls: type) -> type:
    """Schema decorator (under @dataclass): each field declared without a value takes the default of the
    same-named argument of its `_target_` class's constructor, the one place that default is written
    (a user of the class in Python and the app get the same experiment). A tuple default becomes a
    list, what a YAML list composes to."""
    parameters = inspect.signature(get_class(cls._target_)).parameters
    for name in cls.__dict__.get("__annotations__", {}):
        if name in cls.__dict__:
            continue
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}.{name}: {cls._target_} has no default for {name!r}")
        setattr(cls, name, field(default_factory=lambda d=default: list(d)) if isinstance(default, tuple)
                else default)
    return cls


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
class RMSpropConf(OptimConf):
    _target_: str = "torch.optim.RMSprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0


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
@dataclass
class TrainConf:
    max_steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    data_seed: int = "${train.seed}"  # type: ignore[assignment]
    clip: float = 1.0
    clip_mode: str = "norm"  # norm | value | off
    log_every: int = 50
    eval_every: int = 250
    profile_every: int = 500
    device: str = "auto"
    threads: Optional[int] = None
    # Flush subnormal floats to zero on CPU (x86 FTZ/DAZ, every thread): |x| < 1.18e-38 computes as 0.
    # Vanishing gradients sink into that range, where arithmetic is 10-100x slower (docs/performance.md).
    flush_denormal: bool = True
    early_stop: bool = False
    length_eval: str = "end"  # end | eval: when to evaluate at task.eval_lengths (eval: every eval too)
    gate_stats: bool = True  # with each temporal profile: gate saturation statistics (gated cells only)
    # Wall-clock budget in minutes (comparisons at equal time); the run ends at whichever of
    # max_steps and max_minutes comes first. Where a time budget stops a run is not reproducible.
    max_minutes: Optional[float] = None
    test_at_end: bool = True  # evaluate the test split once at the end (summary.json "test")
    checkpoint_every: int = 0  # every N steps (0: none); a final one and one on SIGUSR2/SIGTERM always
    resume: bool = False  # continue the run folder's last checkpoint (multirun jobs always do)
    # Guard rails, off by default, recorded in summary.json when on: skip a step whose loss or
    # gradient is not finite (at most this many times, then the run diverges), multiplying lr by
    # lr_backoff at each skipped step.
    skip_nonfinite: int = 0
    lr_backoff: float = 1.0


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
    progress: bool = True
    print_every_eval: bool = True


@dataclass
class TestingConf:
    """Hooks for the test suite, not experiment settings: outside `train` and outside the config
    fingerprint (records.DEFAULT_FINGERPRINT_EXCLUDE), so no result depends on them."""

    fail_at_step: Optional[int] = None  # raise right after this step, as a crash would


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


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, schemas in {
        "cell": {"vanilla": VanillaConf, "lstm": LSTMConf, "peephole": PeepholeConf, "gru": GRUConf,
                 **MODERN_CELL_SCHEMAS},
        "task": {"copy": CopyConf, "adding": AddingConf, "lm": LMConf, "seq_image": SeqImageConf,
                 "text": TextConf},
        "optim": {"sgd": SGDConf, "rmsprop": RMSpropConf, "adam": AdamConf, "adamw": AdamWConf},
        "schedule": {"constant": ConstantScheduleConf, "cosine": CosineScheduleConf,
                     "plateau": PlateauScheduleConf, "step": StepScheduleConf},
    }.items():
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
# Each allowed tuple is defined once, beside the code that gives its values a meaning.
ALLOWED = {
    "model.backend": BACKENDS,
    "model.pooling": POOLINGS,
    "model.block": BLOCKS,
    "model.param_count": PARAM_COUNTS,
    "train.clip_mode": ("norm", "value", "off"),
    "train.length_eval": ("end", "eval"),
    "logger.wandb.mode": WANDB_MODES,
    "cell.recurrent_init": RECURRENT_INITS,
    "cell.nonlinearity": VanillaCell.NONLINEARITIES,
    "cell.variant": tuple(LSTM_VARIANTS),
    "task.level": LEVELS,
    "task.mode": MODES,
    "task.empty_text": EMPTY_TEXT,
}
POSITIVE = ("model.hidden_size", "model.num_layers", "model.param_budget", "model.state_budget",
            "model.block_mlp_ratio", "model.embedding_size",
            "task.seq_len", "task.batch_size", "task.val_size", "task.bptt", "task.copy_len",
            "task.num_symbols", "task.k1", "task.eval_batch_size", "task.max_train_tokens",
            "task.max_train", "task.max_eval", "task.max_len", "task.max_vocab", "task.min_freq", "train.max_steps", "train.batch_size", "train.log_every",
            "train.eval_every", "train.threads", "testing.fail_at_step")
NON_NEGATIVE = ("cell.recurrent_gain", "train.max_minutes", "train.clip", "train.profile_every", "train.checkpoint_every",
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
    for key, allowed in ALLOWED.items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            errors.append(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        value = _get(cfg, key)
        if value is not None and (isinstance(value, bool) or not value >= 1):
            errors.append(f"{key}={value} is not allowed: must be a positive integer (>= 1)")
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
                      "its sequence length is not a parameter (tasks with task.seq_len: copy, adding)")
    backoff, skips = _get(cfg, "train.lr_backoff"), _get(cfg, "train.skip_nonfinite")
    if backoff is not None and not 0 < backoff <= 1:
        errors.append(f"train.lr_backoff={backoff} is not allowed: must be in (0, 1] (1: off)")
    elif backoff is not None and backoff < 1 and skips == 0:
        errors.append(f"train.lr_backoff={backoff} needs train.skip_nonfinite >= 1: the learning "
                      "rate backs off at a skipped step, and with skip_nonfinite=0 no step is skipped")
    device = _get(cfg, "train.device")
    if device is not None and not (device in ("auto", "cpu", "cuda") or str(device).startswith("cuda:")):
        errors.append(f"train.device={device!r} is not allowed: choose auto, cpu, cuda or cuda:N")
    if errors:
        raise ConfigError("\n".join(errors))
