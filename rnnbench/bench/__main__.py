"""Command line: `python -m rnnbench.bench SUITE [--json FILE] [--repeats N] [--threads 2] [--quick]`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from rnnbench.bench.measure import eprint, machine, machine_line, render
from rnnbench.records import run_folder

SUITES = ("cells", "pyramid", "overhead", "diagnostics", "denormals", "sweep", "modern")


@dataclass
class Options:
    repeats: int = 7
    threads: int = 2
    quick: bool = False
    min_sample_s: float = 0.2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnnbench.bench", description=__doc__)
    parser.add_argument("suite", choices=SUITES + ("all",))
    parser.add_argument("--json", metavar="FILE", help="write every figure, sample and table here")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7, quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    opts = Options(repeats=args.repeats or (2 if args.quick else 7), threads=args.threads, quick=args.quick,
                   min_sample_s=0.02 if args.quick else 0.2)
    torch.set_num_threads(opts.threads)
    os.environ.setdefault("WANDB_SILENT", "true")

    info = machine(opts.threads)
    print(machine_line(info), flush=True)
    report = {"machine": info, "options": asdict(opts), "suites": {}}
    for name in SUITES if args.suite == "all" else (args.suite,):
        eprint(f"[bench] {name} ...")
        started, load_start = time.perf_counter(), os.getloadavg()[0]
        result = importlib.import_module(f"rnnbench.bench.{name}").run(opts)
        result["wall_s"] = time.perf_counter() - started
        result["load_average_1min"] = [load_start, os.getloadavg()[0]]
        report["suites"][name] = result
        for t in result["tables"]:
            print("\n" + render(t), flush=True)
        print(f"  ({name}: {result['wall_s']:.0f} s; load average (1 min) {load_start:.1f} at start, "
              f"{result['load_average_1min'][1]:.1f} at end, on {info['cores']} cores)", flush=True)
    info["load_average_end"] = list(os.getloadavg())
    print(f"\nload average at end {info['load_average_end'][0]:.2f} (1 min)")
    if args.json:
        with open(args.json, "w") as f:
            f.write(run_folder.dumps(report, indent=1) + "\n")  # NaN as "nan", as in every run folder
    return 0


if __name__ == "__main__":
    sys.exit(main())
