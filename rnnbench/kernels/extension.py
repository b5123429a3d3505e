"""The one loader of the C++ kernels in `csrc/`: built once per machine with torch.utils.cpp_extension
(ninja and the system compiler), cached under $TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions),
loaded in a few ms afterwards. A kernel that cannot be built is None: its caller runs its Python form.

Each kernel is its own extension (`csrc/<kernel>.cpp` plus `common.h`), loaded only when a run uses it.
RNNBENCH_NO_CPP=1 turns every kernel off.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

CSRC = Path(__file__).parent / "csrc"
_SHARED = CSRC / "common.h"  # included by every kernel source
# -ffast-math lets gcc vectorise exp() and tanh() through glibc's libmvec; compile flags only (linking with
# it would set flush-to-zero for the whole process on older gcc). -mrecip=!vec-div keeps true vector
# division, which -ffast-math would replace by a reciprocal estimate + Newton step: that one is not exact
# at 1 (σ(large) = 0.99999994 on AVX2) and turns 1/inf into NaN; measured at no cost to the step time.
# -fopenmp makes at::parallel_for parallel; libgomp resolves to the copy torch already loaded.
_CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-mrecip=!vec-div", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
# What one kernel's build takes (torch's headers dominate, so every kernel about alike), measured on the
# 2-core Intel Xeon of docs/performance.md under load (load average ~5): flush 98 s, peephole 66 s, from
# an empty cache. A run builds the kernels it uses, one after the other.
BUILD_MINUTES = "1-2"


def _cache_key(kernel: str) -> str:
    """Sources, flags, torch, Python and CPU: a cached build is reused only where it was made."""
    cpu_flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    parts = [(CSRC / f"{kernel}.cpp").read_text(), _SHARED.read_text(), " ".join(_CFLAGS + _LDFLAGS),
             torch.__version__, sys.version, platform.machine(), cpu_flags]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _build_dir() -> Path:
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(base) / "rnnbench"


def _compile_extension(name: str, build_dir: Path, source: Path):
    """Build with ninja and the system C++ compiler (`BUILD_MINUTES`) and load; raises on any failure."""
    from torch.utils import cpp_extension  # imports setuptools machinery: only when a build is needed

    build_dir.mkdir(parents=True, exist_ok=True)
    lock = build_dir / "lock"  # torch's build lock; one left by a killed build would block us forever
    if lock.exists() and time.time() - lock.stat().st_mtime > 600:
        lock.unlink(missing_ok=True)
    return cpp_extension.load(name=name, sources=[str(source)], build_directory=str(build_dir),
                              extra_cflags=_CFLAGS, extra_ldflags=_LDFLAGS, verbose=False)


def _failure_reason(error: Exception) -> str:
    """The informative line of a (possibly pages long) compiler failure."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if re.search(r"error:|not found|no such file|cannot|unable", line, re.I)]
    return f"{type(error).__name__}: {(telling or lines or [''])[0][:300]}"


_warned = False


@functools.cache
def load(kernel: str):
    """The C++ module of `csrc/<kernel>.cpp`, built once per machine and cached; None if it cannot be (one
    warning per process, however many kernels fail: no compiler fails them all)."""
    global _warned
    try:
        name = f"rnnbench_{kernel}_{_cache_key(kernel)}"
        build_dir = _build_dir() / name
        library, done = build_dir / f"{name}.so", build_dir / "BUILD_OK"
        if library.exists() and done.exists():  # fast path: a few ms, no compiler involved
            spec = importlib.util.spec_from_file_location(name, library)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        # The one slow moment of a first run on a machine, said before it starts (else minutes of silence)
        logging.getLogger("rnnbench").warning(
            "building the C++ kernel %r (once per machine, ~%s min; cached in %s)", kernel, BUILD_MINUTES, build_dir.parent)
        module = _compile_extension(name, build_dir, CSRC / f"{kernel}.cpp")
        tmp = done.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(name + "\n")
        tmp.replace(done)  # atomic: a concurrent process never loads a half-written library
        return module
    except Exception as error:  # no compiler, no ninja, failed build, ...: keep running, slower
        if not _warned:
            _warned = True
            warnings.warn(f"rnnbench: C++ extension {kernel!r} unavailable ({_failure_reason(error)}); "
                          "running the Python forms of the kernels", RuntimeWarning, stacklevel=3)
        return None


def disabled() -> bool:
    """RNNBENCH_NO_CPP set (to anything but 0): no C++ kernel is built or loaded."""
    return os.environ.get("RNNBENCH_NO_CPP", "") not in ("", "0")


def available(kernel: str) -> bool:
    """True if the C++ kernel `kernel` is usable (builds or loads it on first call)."""
    return not disabled() and load(kernel) is not None


def fits(x: Tensor) -> bool:
    """Whether the C++ kernels can run on tensors like `x` (CPU, float32/float64)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def graph_retained() -> bool:
    """backward(retain_graph=True), autograd.grad(..., retain_graph=True), gradcheck, ...: the saved tensors
    must survive this backward (the C++ backward passes overwrite theirs). torch's AOT autograd asks the
    same private question."""
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except (AttributeError, RuntimeError):
        return True
