"""Mutation testing of the core modules with mutmut, run on purpose (not in CI): docs/testing.md.

    python scripts/mutation.py                          # every core module, one after the other
    python scripts/mutation.py rnnbench/run/train.py    # one (or a few) of them

For each module: a scratch copy of the checkout (its uncommitted changes too) under --workdir, the
module's tests chosen below, `mutmut run` there, then one line of counts and the kill rate. mutmut
keeps its results in the scratch folder (`cd WORKDIR/<module> && mutmut results`, `mutmut show NAME`)
until the module's next run, which starts afresh.

The top-level tasks/ folder is the import name `rnnbench.tasks` (setup.py's package_dir). mutmut
imports the package from its mutants/rnnbench, so the scratch copy holds tasks/ as rnnbench/tasks too:
the tasks' generators are then mutated under their import name, and the tests import the mutants.
The shared mutmut settings are [tool.mutmut] in pyproject.toml; this script adds the module and its
tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each core module with the test files that exercise it in-process (pytest arguments: `-k` narrows a
# file). Tests that run `python -m rnnbench` in a child import the installed package, not mutmut's
# copy: they cannot kill a mutant.
TESTS = {
    "rnnbench/run/train.py": ["tests/test_train_behaviour.py", "tests/test_resume.py", "tests/test_length_generalisation.py"],
    "rnnbench/report/verdicts.py": ["tests/test_studies.py"],
    "rnnbench/report/stats.py": ["tests/test_studies.py", "tests/test_report.py"],
    "rnnbench/run/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_resume.py"],
    "rnnbench/run/config.py": ["tests/test_config.py"],
    "tasks/copy.py": ["tests/test_tasks_synthetic.py"],
    "tasks/adding.py": ["tests/test_tasks_synthetic.py"],
    "rnnbench/modules/cells.py": ["tests/test_cells.py"],
    "rnnbench/modules/recurrent.py": ["tests/test_recurrent.py", "tests/test_blocks.py"],
    "tasks/formal_languages.py": ["tests/test_tasks_formal_languages.py"],
    "tasks/mqar.py": ["tests/test_tasks_mqar.py"],
    "tasks/induction_heads.py": ["tests/test_tasks_induction_heads.py"],
    # the Python reference (_PythonLoops) and the dispatch; the C++ kernel itself (csrc/) is not mutated.
    # Without the two sweeps of extreme pre-activations (592 of the file's 842 tests), which made the run
    # hours long, and the C++ kernel's multithreaded test: a mutant's tests run in a child forked from
    # mutmut's process, where a thread pool that test started hangs them (docs/testing.md).
    "rnnbench/kernels/fast_peephole.py": ["tests/test_fast_peephole.py", "-k",
                                          "not every_magnitude and not inf_and_nan and not multithreaded"],
    # the GRU kernel's dispatch and autograd node (its equations are the C++ kernel's, proven against the
    # cell in the same file); without the multithreaded test, for the reason above
    "rnnbench/kernels/fast_gru.py": ["tests/test_fast_gru.py", "-k", "not multithreaded"],
    # the stand-in for x_proj and ∂L/∂x of the kernels that project x in their loops (issue 26): its own tests
    # and the fused-projection tests of both kernels, without their multithreaded ones, for the reason above
    "rnnbench/kernels/projection.py": ["tests/test_projection.py", "tests/test_fast_gru.py",
                                       "tests/test_fast_peephole.py", "-k", "projection and not multithreaded"],
    # the scan's three Python forms (reference, doubling, log space), its dispatch and the fused cells' autograd
    # nodes; the diagonal modern cells run them in test_modern_cells
    "rnnbench/kernels/scan.py": ["tests/test_scan.py", "tests/test_modern_cells.py"],
    # the sLSTM and IndRNN kernels' dispatch and autograd nodes (the recurrent weight's gradient is computed
    # here, in torch); their reference is the cell's step, which test_modern_cells holds the kernels to
    "rnnbench/kernels/slstm.py": ["tests/test_modern_cells.py"],
    "rnnbench/kernels/indrnn.py": ["tests/test_modern_cells.py"],
    # the modern cells: each step against its paper's equations, each sequence form against the step loop
    "rnnbench/modules/modern_cells.py": ["tests/test_modern_cells.py"],
}
KILLED = ("killed", "timeout", "segfault")  # the tests noticed the mutant
SCRATCH_IGNORE = shutil.ignore_patterns(".git", "mutants", "outputs", "multirun", "wandb", "__pycache__", "*.egg-info", "build")


def mutated_path(module: str) -> str:
    """Where the module sits in the scratch copy: tasks/x.py is rnnbench/tasks/x.py, its import name."""
    return "rnnbench/" + module if module.startswith("tasks/") else module


def prepare(module: str, workdir: Path) -> Path:
    """A scratch copy of the checkout whose [tool.mutmut] mutates `module` under its tests."""
    scratch = workdir / module.replace("/", "_").removesuffix(".py")
    # afresh: mutmut keeps a survivor's result while the module is unchanged, even when the tests changed
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(REPO, scratch, ignore=SCRATCH_IGNORE, dirs_exist_ok=True)
    shutil.copytree(REPO / "tasks", scratch / "rnnbench" / "tasks", ignore=SCRATCH_IGNORE, dirs_exist_ok=True)
    pyproject = (scratch / "pyproject.toml").read_text()
    tables = re.findall(r"^\[([^\]]+)\]", pyproject, flags=re.M)
    assert tables[-1] == "tool.mutmut", "scripts/mutation.py appends to [tool.mutmut]: keep it the last table"
    selection = ", ".join(f'"{t}"' for t in TESTS[module])
    pyproject += f'only_mutate = ["{mutated_path(module)}"]\npytest_add_cli_args_test_selection = [{selection}]\n'
    (scratch / "pyproject.toml").write_text(pyproject)
    return scratch


def mutmut(scratch: Path, *args: str, capture: bool = False) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mutmut", *args]
    done = subprocess.run(command, cwd=scratch, env=env, text=True, check=True, capture_output=capture)
    return done.stdout if capture else ""


def counts(scratch: Path, module: str) -> Counter:
    """The status of each of the module's mutants, as `mutmut results --all true` lists them."""
    prefix = mutated_path(module).removesuffix(".py").replace("/", ".") + "."
    lines = mutmut(scratch, "results", "--all", "true", capture=True).splitlines()
    return Counter(status.strip() for name, _, status in (line.strip().rpartition(": ") for line in lines) if name.startswith(prefix))


def kill_rate_line(module: str, status: Counter) -> str:
    total = sum(status.values())
    killed = sum(status[s] for s in KILLED)
    rest = ", ".join(f"{n} {s}" for s, n in sorted(status.items()) if s not in KILLED)
    rate = f"{100 * killed / total:.1f}%" if total else "-"
    return f"{module:32} {total:5} mutants  {killed:5} killed  {rate:>6}  ({rest or 'none left'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all of {', '.join(TESTS)}")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rnnbench-mutation"), help="scratch copies (default: %(default)s)")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default: %(default)s)")
    parser.add_argument("--report-only", action="store_true", help="print the rates of the last runs, run nothing")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TESTS]
    if unknown:
        parser.error(f"not a core module: {', '.join(unknown)} (choose from {', '.join(TESTS)})")
    lines = []
    for module in args.modules or list(TESTS):
        scratch = args.workdir / module.replace("/", "_").removesuffix(".py")
        if not args.report_only:
            scratch = prepare(module, args.workdir)
            mutmut(scratch, "run", "--max-children", str(args.max_children))
        lines.append(kill_rate_line(module, counts(scratch, module)))
    print("\n".join(["", "module                           mutants         killed    rate", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
