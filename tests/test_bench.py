"""The benchmark command (`python -m rnnbench.bench`): it runs, and writes the figures it prints.

Benchmarks, not timed tests: nothing here asserts a speed. The subprocess runs are `--quick` (tiny sizes).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from rnnbench.bench.measure import Case, interleaved, render, summarise, table


def run_bench(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "rnnbench.bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_interleaved_takes_samples_round_robin():
    calls = []
    cases = [Case(name, lambda name=name: calls.append(name)) for name in "ABC"]
    samples = interleaved(cases, repeats=3, min_sample_s=0.0, warmup=1)
    # warm-up and calibration (2 calls each, case by case), then A, B, C, A, B, C, ...
    assert calls == ["A", "A", "B", "B", "C", "C"] + ["A", "B", "C"] * 3
    assert {k: len(v) for k, v in samples.items()} == {"A": 3, "B": 3, "C": 3}


def test_before_and_after_wrap_each_sample_outside_the_clock():
    import time

    calls = []
    case = Case("A", lambda: calls.append("run"), before=lambda: (calls.append("before"), time.sleep(0.05)),
                after=lambda: calls.append("after"))
    samples = interleaved([case], repeats=2, min_sample_s=0.0, warmup=1)
    assert calls == ["before", "run", "after"] * 4  # warm-up, calibration, 2 samples
    assert max(samples["A"]) < 0.05  # the 50 ms of `before` is not in the time


def test_summarise_ratios_medians_and_flops():
    samples = {"ref": [1.0, 2.0, 3.0], "other": [2.0, 4.0, 60.0]}
    stats = summarise(samples, "ref", flops={"ref": 4e9}, peak_flops=8e9)
    assert stats["ref"]["ratio"] == 1.0 and stats["ref"]["ratio_iqr"] == [1.0, 1.0]
    assert stats["other"]["median_s"] == 4.0 and stats["other"]["ratio"] == 2.0
    assert stats["ref"]["gflops"] == 2.0 and stats["ref"]["fraction_of_peak"] == 0.25


def test_render_aligns_columns():
    text = render(table("title", ["name", "ms"], [["a", 1.5], ["longer", 1234.5]], ["a note"]))
    lines = text.splitlines()
    assert lines[0] == "title" and lines[-1] == "  a note"
    assert len({len(line) for line in lines[1:4]}) == 1  # header, rule and rows equally wide


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_cells_quick_writes_json(tmp_path):
    out = tmp_path / "cells.json"
    proc = run_bench("cells", "--quick", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fused LSTM" in proc.stdout and "machine:" in proc.stdout
    report = json.loads(out.read_text())
    machine = report["machine"]
    assert machine["cpu"] and machine["threads"] == 2 and machine["torch"]
    cells = report["suites"]["cells"]
    from rnnbench.bench.cells import REFERENCE, VARIANTS
    from rnnbench.kernels import fast_peephole
    for config in cells["configs"]:
        stats, failures = config["stats"], config["failures"]
        # a variant that cannot run (e.g. a kernel being rebuilt) is reported as failed, not dropped
        measured = {name for name in stats if not name.startswith(("sgemm", "step gemm"))}
        assert measured | set(failures) == {v.name for v in VARIANTS}
        assert REFERENCE not in failures and stats[REFERENCE]["ratio"] == 1.0
        assert _positive(config["peak_gflops"])
        for v in VARIANTS:
            if v.name in failures:
                continue
            row = stats[v.name]
            assert _positive(row["median_s"]) and _positive(row["ratio"]) and _positive(row["gflops"])
            assert len(row["samples_s"]) == report["options"]["repeats"]
        # every LSTM variant but fgr and both GRU forms run on rnnbench's kernels under auto
        paths = config["paths"]
        kernel_rows = [v.name for v in VARIANTS if v.backend == "auto" and "fgr" not in v.name]
        expected = "fast/cpp" if fast_peephole.cpp_available() else ("fast/python", "fallback")
        assert len(kernel_rows) == 10 and all(paths[name] in expected for name in kernel_rows), paths
        assert paths["peephole fgr auto"] == "explicit" and paths[REFERENCE] == "fused"
        for v in VARIANTS:  # the ratio to the row's torch counterpart, measured in the same rounds
            if v.name not in failures and v.counterpart not in failures:
                assert stats[v.name]["ratio_to_counterpart"] == pytest.approx(
                    stats[v.name]["median_s"] / stats[v.counterpart]["median_s"])
        memory = config["memory"]
        assert set(memory) == {v.name for v in VARIANTS}
        assert all(m.get("tensor_peak_bytes") is None or m["tensor_peak_bytes"] > 0 for m in memory.values())
    assert cells["tables"] and all(t["rows"] for t in cells["tables"])
    assert "vs torch" in proc.stdout and "MiB tensor" in proc.stdout and "targets (issue 10)" in proc.stdout
    # the memory column profiles every variant; the profiler's own log lines stay out of the output
    assert "profiler_start" not in proc.stdout + proc.stderr and "USDT" not in proc.stderr


def test_diagnostics_quick_writes_json(tmp_path):
    out = tmp_path / "diagnostics.json"
    proc = run_bench("diagnostics", "--quick", "--repeats", "2", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = json.loads(out.read_text())["suites"]["diagnostics"]["cells"]
    assert set(cells) == {"lstm", "gru", "peephole", "vanilla"}
    for result in cells.values():
        assert _positive(result["training_step_s"]) and _positive(result["temporal_profile_s"])
        assert result["log_every"] == 50 and result["profile_every"] == 500
        assert 0 < result["fraction"] < 1
        assert result["gate_statistics_fraction"] < result["temporal_profile_fraction"]


def test_modern_quick_writes_json(tmp_path):
    from rnnbench.bench.modern import ROWS

    out = tmp_path / "modern.json"
    proc = run_bench("modern", "--quick", "--repeats", "1", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    configs = json.loads(out.read_text())["suites"]["modern"]["configs"]
    training, scan = configs[0], configs[-1]["scan"]
    assert not training["failures"] and set(training["stats"]) == {r.name for r in ROWS} | {"sgemm 256^3"}
    assert training["paths"]["minGRU"] == "sequence" and training["paths"]["mLSTM recurrent"] == "explicit"
    # GEMM rates: every row has GEMMs (the fused LSTM's by formula), the peak is its own 100%
    assert all(_positive(s["gflops"]) for s in training["stats"].values())
    assert training["stats"]["sgemm 256^3"]["fraction_of_peak"] == 1.0
    assert not scan["failures"] and all(_positive(s["median_s"]) for s in scan["stats"].values())
    assert "log-space / kernel" in proc.stdout and "recurrent's speed" in proc.stdout


def test_unknown_suite_is_a_usage_error(tmp_path):
    proc = run_bench("nonsense", cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
