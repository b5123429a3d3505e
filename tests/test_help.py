"""`python -m rnnbench --help`: rnnbench's own page, read from the config folders (rnnbench/run/help.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

from conftest import REPO, run_cli
from rnnbench.run.help import first_sentence, one_line, page, user_config_dirs

CONF = REPO / "conf"
EXAMPLE_CONF = REPO / "examples" / "my_research" / "conf"


def test_help_page_as_a_user_sees_it(tmp_path):
    # the page fits the terminal (COLUMNS, else the terminal of stdout): pinned, so the lines below
    # read the same under any runner (a narrower page cuts an experiment's line at a comma)
    proc = run_cli("--help", cwd=tmp_path, env={"COLUMNS": "110"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert text.startswith("rnnbench: config-driven experiments comparing recurrent cells")
    assert "powered by Hydra" not in text and "schema" not in text  # not Hydra's page, no internal groups
    assert "  cell            gated_deltanet, gated_deltanet_neg, gru, indrnn, irnn, lru, lstm*, lstm_arjovsky," in text  # lstm: the default
    assert "  copy_T100 " in text and "Copying memory at T=100, Arjovsky et al. 2016" in text
    assert "python -m rnnbench +experiment=quickstart" in text
    assert not list(tmp_path.iterdir())  # no run, no folder


def test_version_names_rnnbench_and_torch_not_hydra(tmp_path):
    import platform

    import torch

    import rnnbench

    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == f"rnnbench {rnnbench.__version__} (torch {torch.__version__}, Python {platform.python_version()})\n"
    assert "Hydra" not in proc.stdout + proc.stderr
    assert not list(tmp_path.iterdir())  # no run, no folder


def test_every_group_and_experiment_is_listed_with_its_first_sentence():
    text = page(CONF, width=100)
    for group in ("cell", "arch", "task", "optim", "schedule", "hydra/launcher"):
        lines = text.splitlines()
        first = next(i for i, l in enumerate(lines) if l.startswith(f"  {group} "))
        listed = lines[first] + "".join(  # a long list continues on indented lines
            l for l in lines[first + 1:first + 4] if l.startswith(" " * 18))
        for path in (CONF / group).glob("*.yaml"):
            assert path.stem in listed
    lines = text.splitlines()
    for path in (CONF / "experiment").glob("*.yaml"):
        (line,) = [l for l in lines if l.startswith(f"  {path.stem} ")]
        assert len(line) <= 100
        assert line.split(maxsplit=1)[1].removesuffix(" …") in first_sentence(path)


def group_options(text: str, group: str) -> list[str]:
    """The options the help page lists for `group`, over its wrapped lines."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {group} "))
    block = [lines[start][len(f"  {group} "):]]
    block += [line for line in itertools.takewhile(lambda l: l.startswith(" " * 18), lines[start + 1:])]
    return [o.strip().rstrip("*") for o in ", ".join(b.strip().rstrip(",") for b in block).split(",")]


def test_a_users_config_folder_is_listed_with_the_built_in_one():
    text = page(CONF, user_config_dirs(["--config-dir", str(EXAMPLE_CONF), "--help"]), width=120)
    assert "my_mgu" in group_options(text, "cell") and "mingru" in group_options(text, "cell")
    assert "parity" in group_options(text, "task") and "parity_check" in group_options(text, "task")
    assert "  parity_cells " in text
    assert user_config_dirs(["--config-dir=a", "-cd", "b"]) == [Path("a"), Path("b")]


def test_first_sentence_and_one_line(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("# @package _global_\n# Copying memory, Arjovsky et al. 2016: RMSprop,\n# clipping 1. More.\nx: 1\n")
    assert first_sentence(f) == "Copying memory, Arjovsky et al. 2016: RMSprop, clipping 1."
    assert one_line("Copying memory, Arjovsky et al. 2016: RMSprop, clipping 1.", 40) == "Copying memory, Arjovsky et al. 2016 …"
