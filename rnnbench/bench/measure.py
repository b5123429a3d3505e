"""Measuring on a shared, noisy machine: interleaved repeats, medians, ratios within one run, the float32
matmul peak of the machine measured alongside, FLOP counts, peak memory, and the printed table.

Every suite follows the same recipe:

1. each case is one unit of work (a training step, a block of steps, one GEMM) as a callable;
2. every case runs once to warm up (allocator, oneDNN primitives, thread pool, C++ extension load), and
   small cases repeat inside one sample until it lasts `min_sample_s`, so the clock's resolution and the
   Python call overhead do not matter;
3. the samples are taken round-robin, A, B, C, A, B, C, ..., so a burst of load from another process
   hits neighbouring samples of every case alike;
4. a figure is the median of a case's samples and a ratio is the ratio of two medians from the same run;
   the spread printed next to it is the interquartile range of the per-round ratios (case / reference
   of the same round). Load from other processes only ever adds time, so the fastest sample of each
   case and the ratio of those minima are printed too: when the two ratios disagree, the noise won.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tabulate import tabulate


@dataclass
class Case:
    """One thing to time. `run()` does one unit of work; `flops` is the matmul FLOPs of one unit."""

    name: str
    run: Callable[[], Any]
    flops: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    # run outside the clock around each sample of this case (and its warm-up), e.g. a global mode on, off
    before: Callable[[], Any] | None = None
    after: Callable[[], Any] | None = None

    def sample(self, n: int) -> float:
        """Seconds per run over `n` runs, `before` and `after` outside the clock."""
        if self.before is not None:
            self.before()
        try:
            start = time.perf_counter()
            for _ in range(n):
                self.run()
            return (time.perf_counter() - start) / n
        finally:
            if self.after is not None:
                self.after()


def interleaved(cases: list[Case], repeats: int, min_sample_s: float = 0.2, warmup: int = 1,
                between: Callable[[], Any] | None = None,
                failures: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Seconds per unit of work of each case, `repeats` samples each, taken round-robin.

    `between`, if given, runs before every sample (outside the clock), e.g. to reset state. With
    `failures` given, a case that raises during its warm-up is recorded there (name -> error) and left
    out, so one broken variant does not cost the measurements of the others.
    """
    inner, working = {}, []
    for case in cases:
        try:
            for _ in range(warmup):
                case.sample(1)
        except Exception as error:
            if failures is None:
                raise
            failures[case.name] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            continue
        working.append(case)
        once = case.sample(1)
        inner[case.name] = max(1, math.ceil(min_sample_s / max(once, 1e-9)))
    cases = working
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    for _ in range(repeats):
        for case in cases:
            if between is not None:
                between()
            samples[case.name].append(case.sample(inner[case.name]))
    return samples


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile); all three equal for a single value."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summarise(samples: dict[str, list[float]], reference: str | None = None,
              flops: dict[str, float] | None = None, peak_flops: float | None = None) -> dict[str, dict]:
    """Per case: median seconds, relative spread, ratio to `reference` and its spread, GFLOP/s, fraction
    of `peak_flops` (FLOP/s)."""
    out = {}
    ref = samples.get(reference) if reference else None
    for name, values in samples.items():
        q1, median, q3 = quartiles(values)
        row = {"median_s": median, "spread": (q3 - q1) / median if median > 0 else float("nan"),
               "min_s": min(values), "max_s": max(values), "samples_s": values}
        if ref is not None:
            per_round = [v / r for v, r in zip(values, ref)]
            r1, _, r3 = quartiles(per_round)
            row["ratio"] = median / statistics.median(ref)
            row["ratio_iqr"] = [r1, r3]
            # noise on a shared machine only ever adds time: the ratio of the fastest samples is a
            # second, often steadier, estimate
            row["ratio_of_minima"] = min(values) / min(ref)
        if flops and flops.get(name):
            row["gflops"] = flops[name] / median / 1e9
            if peak_flops:
                row["fraction_of_peak"] = flops[name] / median / peak_flops
        out[name] = row
    return out


# -- the machine ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        from rnnbench.kernels import fast_peephole
        peephole_impl = fast_peephole.implementation()
    except Exception as error:  # the benchmark still runs the other cells
        peephole_impl = f"unavailable ({type(error).__name__})"
    try:
        from rnnbench.records import run_folder
        meta = run_folder.run_metadata()
        commit, dirty = meta.get("git_commit"), meta.get("git_dirty")
    except Exception:
        commit, dirty = None, None
    return {"cpu": cpu_model(), "cores": cores, "threads": threads, "torch": torch.__version__,
            "python": platform.python_version(), "mkldnn": torch.backends.mkldnn.is_available(),
            "peephole_kernel": peephole_impl, "load_average_start": list(os.getloadavg()),
            "git_commit": commit, "git_dirty": dirty}


def machine_line(m: dict[str, Any]) -> str:
    load = m.get("load_average_start")
    text = (f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']}, "
            f"Python {m['python']}, peephole kernel: {m['peephole_kernel']}")
    if load:
        text += f"; load average at start {load[0]:.2f} (1 min)"
    return text


# -- FLOPs and the matmul peak -------------------------------------------------------------------------

def recurrent_flops(T: int, B: int, input_size: int, hidden_size: int, gates: int, directions: int = 1,
                    training: bool = True) -> float:
    """Matmul FLOPs of one recurrent layer: forward 2·T·B·(I+H)·G·H per direction (input projection and
    recurrent product); the backward pass does two products of the same size per forward product."""
    forward = 2.0 * T * B * (input_size + hidden_size) * gates * hidden_size * directions
    return 3.0 * forward if training else forward


def matmul_case(n: int, name: str | None = None) -> Case:
    """float32 n×n @ n×n into a preallocated output: the matmul peak at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    return Case(name or f"sgemm {n}^3", lambda: torch.mm(a, b, out=c), flops=2.0 * n ** 3)


def peak_rate(samples: dict[str, list[float]], case: Case) -> float:
    """FLOP/s of a matmul case: its FLOPs over its median time."""
    return case.flops / statistics.median(samples[case.name])


def rnn_gemm_case(batch: int, hidden: int, gates: int) -> Case:
    """The recurrent product of one step, (B, H) @ (H, G·H): the best a step loop can hope for."""
    h, w = torch.randn(batch, hidden), torch.randn(hidden, gates * hidden)
    out = torch.empty(batch, gates * hidden)
    return Case(f"step gemm {batch}x{hidden}x{gates * hidden}", lambda: torch.mm(h, w, out=out),
                flops=2.0 * batch * hidden * gates * hidden)


# -- peak memory of one call ---------------------------------------------------------------------------

def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_peak_increase(fn: Callable[[], Any]) -> int | None:
    """Bytes by which the process's resident set peaked above its level just before `fn()`.

    Freed heap is handed back to the OS first (malloc_trim) and the kernel's high-water mark is reset
    (/proc/self/clear_refs, Linux >= 4.0), so this is what the call itself made resident: tensors,
    oneDNN scratch space, allocator fragmentation. None where the kernel does not allow the reset.
    """
    _trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_bytes("VmRSS:")
    fn()
    peak = _status_bytes("VmHWM:")
    return None if before is None or peak is None else max(0, peak - before)


def allocator_peak(fn: Callable[[], Any]) -> int | None:
    """Peak bytes of tensor memory allocated during `fn()` and still live, from torch's CPU allocator as
    the profiler sees it (profile_memory=True; the "Total Allocated" of its memory events)."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto (the profiler's C++ library, inside libtorch_cpu) logs "USDT: ... profiler_start" and
    # "profiler_stop" to stderr around every profile at its default level: two lines a measurement in
    # the middle of the tables. Its level is read from KINETO_LOG_LEVEL when the first profile starts;
    # 6 is above its highest level (USDT), the one that is on by default.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    _trim_heap()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    return max(totals) if totals else None


# -- printing ------------------------------------------------------------------------------------------

def table(title: str, columns: list[str], rows: list[list[Any]], notes: list[str] | None = None) -> dict:
    return {"title": title, "columns": columns, "rows": rows, "notes": notes or []}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def render(t: dict) -> str:
    """The table as printed: its title, tabulate's plain columns, then its notes."""
    cells = [[_cell(v) for v in row] for row in t["rows"]]
    # names left, numbers right: a column is a name column if none of its values starts like a number
    left = [i == 0 or all(not r[i][:1].isdigit() and r[i] != "-" for r in cells) for i in range(len(t["columns"]))]
    body = tabulate(cells, headers=t["columns"], tablefmt="simple", disable_numparse=True,
                    colalign=["left" if is_name else "right" for is_name in left])
    return "\n".join([t["title"], body, *(f"  {n}" for n in t["notes"])])


def min_ratio_text(row: dict) -> str:
    return f"{row['ratio_of_minima']:.2f}" if "ratio_of_minima" in row else "-"


def pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def ratio_text(row: dict) -> str:
    """'1.23 (1.18-1.30)': the ratio of medians and the interquartile range of per-round ratios."""
    if "ratio" not in row:
        return "-"
    lo, hi = row["ratio_iqr"]
    return f"{row['ratio']:.2f} ({lo:.2f}-{hi:.2f})"


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
