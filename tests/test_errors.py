"""One error format and one exit-code convention for every command (rnnbench/errors.py,
docs/reliability.md): a user error is `Error in <kind>:` and the message, exit code 2, no traceback."""

from __future__ import annotations

import tomllib

import pytest
from hydra.utils import get_method

from conftest import REPO
from rnnbench import errors, evaluate, fair, sample
from rnnbench.records.run_folder import FolderInUse
from rnnbench.report import cli as report_cli
from rnnbench.report import studies
from rnnbench.report.runs import ReportError
from rnnbench.run.checkpoint import CheckpointError
from rnnbench.tasks import data
from rnnbench.tasks.data import DataError

KINDS = {errors.ConfigError: "config", DataError: "data", CheckpointError: "checkpoint", FolderInUse: "config",
         ReportError: "input"}


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_every_user_error_is_one_kind_of_one_format(cls, capsys):
    assert issubclass(cls, errors.UserError)
    assert errors.fail(cls("what is wrong; what to do")) == errors.USER_ERROR == 2
    assert capsys.readouterr().err == f"Error in {KINDS[cls]}:\nwhat is wrong; what to do\n"


@pytest.mark.parametrize("command, argv, kind", [
    (evaluate.main, ["/nonexistent-run"], "config"),
    (sample.main, ["/nonexistent-run"], "config"),
    (report_cli.main, ["/nonexistent-sweep"], "input"),
    (studies.main, ["table", "no_such_study"], "input"),
    (data.main, ["fetch", "no-such-data-set"], "data"),
    (fair.main, ["--dir", "/nonexistent-fair", "--compare", "cell", "--grid", "optim.lr=1e-3", "--dry-run"], "input"),
], ids=["evaluate", "sample", "report", "studies", "data", "fair"])
def test_every_command_reports_a_user_error_the_same_way(command, argv, kind, capsys):
    assert command(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error in {kind}:\n") and "Traceback" not in err, err


def test_every_command_is_an_installed_script():
    """pyproject's scripts name callables that exist (the wheel's scripts run them: tests/test_install.py)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"rnnbench", "rnnbench-evaluate", "rnnbench-sample", "rnnbench-report",
                            "rnnbench-studies", "rnnbench-bench", "rnnbench-data", "rnnbench-fair"}
    for target in scripts.values():
        assert callable(get_method(target.replace(":", ".")))
