"""`python -m rnnbench --help`: what rnnbench is, what a user chooses from, the ready-made experiments
and three example commands (Hydra's own page, `--hydra-help`, lists the internal schema/* groups as
if they were choices).

Everything listed is read from the config folders themselves, so the page cannot drift from them: the
groups are conf/'s folders, the defaults conf/config.yaml's defaults list, each experiment's line the
first sentence of the comment it opens with. Folders given with `--config-dir` (a user's own cells,
tasks, experiments) are listed with the built-in ones.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path
from typing import Iterable, Sequence

import yaml

# The groups a user picks an option of, in the order an experiment is described.
GROUPS = ("cell", "arch", "task", "optim", "schedule", "hydra/launcher", "hydra/sweeper")
HELP_FLAGS = ("--help", "-h")

INTRO = """\
rnnbench: config-driven experiments comparing recurrent cells (Elman RNN, IRNN, LSTM, peephole LSTM,
GRU; minGRU, minLSTM, LRU, RG-LRU, IndRNN, S6, sLSTM, mLSTM, Gated DeltaNet; or a cell of your own)
across architectures and classic sequence tasks. Every run logs its metrics and the temporal
gradient profile ||dL/dh_t|| to its own folder (and W&B); sweeps run locally or on SLURM; paper
tables come from the run folders.

Usage:
  python -m rnnbench [+experiment=NAME] [GROUP=OPTION ...] [KEY=VALUE ...]    one run
  python -m rnnbench -m GROUP=A,B KEY=1,2,3 ...                                a sweep
  python -m rnnbench --config-dir MY_CONF ...                                  with your own configs
"""

EXAMPLES = """\
Examples:
  python -m rnnbench +experiment=quickstart
  python -m rnnbench -m hydra/launcher=parallel cell=lstm,gru arch=single,deep train.seed=0,1,2 task=adding
  python -m rnnbench --config-dir my_conf -m cell=mycell,lstm,gru task=copy task.seq_len=100

More:
  python -m rnnbench +experiment=NAME --cfg job     every key of a run with its value
  python -m rnnbench.report SWEEP_FOLDER            the table of a sweep (--format latex, --reference cell=...)
  python -m rnnbench.evaluate RUN_FOLDER [KEY=V]    a trained run evaluated again (e.g. task.seq_len=1000)
  python -m rnnbench.sample RUN_FOLDER --prime TEXT text from a trained language model
  python -m rnnbench.report.studies table STUDY     the literature's comparisons, rerun (docs/results.md)
  python -m rnnbench.bench SUITE                    speed benchmarks
  python -m rnnbench.tasks.data fetch NAME          download a data set for the real-data tasks
  python -m rnnbench --hydra-help                   Hydra's own options
  python -m rnnbench --version                      rnnbench's version, torch's and Python's
  docs/configuration.md: every key; docs/extending.md: your own cell, task or experiment.
"""


def wants_help(argv: Sequence[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def wants_version(argv: Sequence[str]) -> bool:
    return "--version" in argv  # Hydra's flag would print Hydra's version


def version() -> str:
    """`rnnbench 0.1.0 (torch 2.13.0+cpu, Python 3.11.7)`: what a bug report needs first (Hydra's own
    version: `--hydra-help`)."""
    import platform

    import torch

    import rnnbench

    return f"rnnbench {rnnbench.__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def user_config_dirs(argv: Sequence[str]) -> list[Path]:
    """The folders given with --config-dir DIR, --config-dir=DIR or -cd DIR (Hydra's flags)."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
        elif arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
    return dirs


def first_sentence(path: Path) -> str:
    """The first sentence of the comment a config file opens with ('' when it has none)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    end = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)[.!](\s|$)", text)  # "et al. 2016" does not end it
    return text[: end.start() + 1] if end else text


def one_line(text: str, width: int) -> str:
    """`text` if it fits in `width`, else cut at the last clause boundary that fits, marked with …"""
    if len(text) <= width:
        return text
    cuts = [m.start() for m in re.finditer(r"[,;:]\s| \(", text) if m.start() <= width - 2]
    end = cuts[-1] if cuts else width - 2
    return text[:end].rstrip() + " …"


def options(conf_dirs: Iterable[Path], group: str) -> dict[str, Path]:
    """Option name -> its file, over every config folder (a later folder's file shadows nothing:
    Hydra takes the first on its search path, and so does this)."""
    found: dict[str, Path] = {}
    for conf in conf_dirs:
        for path in sorted((conf / group).glob("*.yaml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def defaults(conf: Path) -> dict[str, str]:
    """conf/config.yaml's defaults list: group -> the option a run takes when none is given."""
    entries = yaml.safe_load((conf / "config.yaml").read_text()).get("defaults", [])
    return {k: str(v) for entry in entries if isinstance(entry, dict) for k, v in entry.items()}


def page(conf: Path, user_dirs: Sequence[Path] = (), width: int | None = None) -> str:
    width = width or min(shutil.get_terminal_size((110, 20)).columns, 120)
    dirs = [*user_dirs, conf]
    chosen = defaults(conf)
    out = [INTRO, "Choose from (GROUP=OPTION; * the default):"]
    for group in GROUPS:
        names = [f"{name}*" if chosen.get(group) == name else name for name in options(dirs, group)]
        if names:
            out.append(textwrap.fill(", ".join(names), width, initial_indent=f"  {group:<16}",
                                     subsequent_indent=" " * 18))
    experiments = options(dirs, "experiment")
    out += ["", "Ready-made experiments (+experiment=NAME):"]
    column = max(map(len, experiments), default=0) + 4
    for name, path in experiments.items():
        out.append(f"  {name:<{column - 2}}{one_line(first_sentence(path), width - column)}")
    out += ["", EXAMPLES]
    return "\n".join(out)
