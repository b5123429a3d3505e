"""`python -m rnnbench ARGS` without paying the interpreter's imports each time.

A command run by the tests spends most of its time importing: torch (~4 s on this machine), torch's
compiler stack (which `torch.optim` pulls in when the first optimiser is made, ~3 s) and Hydra's
plugins, against well under a second for a few training steps. `tests/conftest.py:run_cli` therefore
runs each command in a child forked from one server process (multiprocessing's "forkserver") that has
imported all of that once: the child is a fresh process as far as the run is concerned (its own pid,
working directory, environment, file descriptors, signal handlers, thread pools and flush mode; the
server never runs a torch operation, so no thread pool is inherited) and runs the same entry point as
`python -m rnnbench` (`rnnbench.run.app.cli`), with the same exit code, stdout, stderr and atexit handlers.

What a forked child cannot reproduce: an environment variable read at import time (OMP_NUM_THREADS,
MKL_*, TORCH_*...), and joblib's loky workers, which never report back to a forked child (a sweep on
the parallel launcher hangs): `run_cli` starts a real interpreter for such environments and for a
command that may sweep on a launcher other than basic. The tests of the entry point itself
(`python -m rnnbench` started by hand, installs) keep starting real ones.
"""

from __future__ import annotations

import atexit
import importlib
import os
import runpy
import sys
import traceback

# What the server imports: everything a run imports before it trains, by module name (the server
# does not see the tests' folder; a child imports this module, cheaply, to reach `main`).
PRELOAD = ["torch._dynamo",  # torch.optim imports it when the first optimiser is built
           "rnnbench.run.app", "rnnbench.records.wandb_sink",
           "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
           "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper",
           "hydra_plugins.hydra_submitit_launcher.submitit_launcher"]


def main(args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """Run `python -m rnnbench ARGS` in this (forked) process, as its own program: output to the two
    files, exit with the code the interpreter would give."""
    os.chdir(cwd)
    sys.path.insert(0, os.getcwd())  # as `python -m` does: a user's modules in the folder import
    importlib.invalidate_caches()
    os.environ.clear()
    os.environ.update(env)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = ["-m", *args]  # runpy sets argv[0] to the module's file, as `python -m` does
    try:
        # As `python -m rnnbench`: rnnbench/__main__.py runs as the __main__ module (rnnbench.run.app.cli).
        runpy.run_module("rnnbench", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:  # as the interpreter reads sys.exit's argument
        code = 0 if e.code is None else e.code
        if not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001  (an uncaught error: the interpreter's traceback and exit 1)
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # multiprocessing ends a child with os._exit, which skips them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
