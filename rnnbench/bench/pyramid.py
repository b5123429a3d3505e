"""Suite `pyramid`: a 3-layer pyramid encoder vs a 3-layer deep encoder, same cell and width.

Bidirectional layers, as the LAS listener (Chan et al. 2016) and `conf/arch/pyramid.yaml`; B=32, T=1024,
input 32, H=128; one training step (forward + backward) with a fixed random output gradient.

Variants, the deep stack being the reference:
- `deep`: every layer runs T steps: 3T steps in all;
- `pyramid`: `RecurrentStack(pyramid=True)`, consecutive output pairs concatenated between layers:
  T + T/2 + T/4 = 1.75T steps, so at most 3/1.75 = 1.71x fewer steps;
- `pyramid_input`: `RecurrentStack(pyramid=True, pyramid_input=True)`, the input frames paired before the
  first layer too (every layer reads a halved sequence): T/2 + T/4 + T/8 = 0.875T steps, at most 3.43x.
"""

from __future__ import annotations

import torch

from rnnbench.bench.measure import (Case, interleaved, matmul_case, pct, peak_rate, ratio_text, recurrent_flops,
                                    summarise, table)
from rnnbench.modules.cells import GRUCell, LSTMCell
from rnnbench.modules.recurrent import RecurrentStack

LAYERS = 3
CELLS = {"LSTM": LSTMCell, "GRU": GRUCell}
VARIANTS = ("deep", "pyramid", "pyramid_input")
REFERENCE = "deep"


def layer_shapes(variant: str, T: int, I: int, H: int, directions: int = 2) -> list[tuple[int, int]]:
    """(steps, input size) of each layer."""
    out = directions * H
    if variant == "deep":
        return [(T, I)] + [(T, out)] * (LAYERS - 1)
    halved_input = variant != "pyramid"
    t = (T + 1) // 2 if halved_input else T
    shapes = [(t, 2 * I if halved_input else I)]
    for _ in range(LAYERS - 1):
        t = (t + 1) // 2
        shapes.append((t, 2 * out))
    return shapes


def training_step(cell, variant: str, B: int, T: int, I: int, H: int, seed: int = 0):
    torch.manual_seed(seed)
    stack = RecurrentStack(cell, I, H, LAYERS, bidirectional=True, pyramid=variant != "deep",
                           pyramid_input=variant == "pyramid_input")
    x = torch.randn(T, B, I)
    params = list(stack.parameters())
    T_out = layer_shapes(variant, T, I, H)[-1][0]
    grad_out = torch.randn(T_out, B, 2 * H) / (T_out * B) ** 0.5

    def step():
        for p in params:
            p.grad = None
        out, _, _ = stack(x)                                                   # (T_out, B, 2H)
        out.backward(grad_out)

    return step


def run(opts) -> dict:
    B, T, I, H = (4, 16, 8, 8) if opts.quick else (32, 1024, 32, 128)
    peak = matmul_case(256 if opts.quick else 2048)
    cases = []
    for cell_name, cell in CELLS.items():
        for v in VARIANTS:
            flops = sum(recurrent_flops(t, B, i, H, cell.gates, directions=2) for t, i in layer_shapes(v, T, I, H))
            cases.append(Case(f"{cell_name} {v}", training_step(cell, v, B, T, I, H), flops,
                              {"cell": cell_name, "variant": v}))
    samples = interleaved(cases + [peak], opts.repeats, opts.min_sample_s)
    peak_flops = peak_rate(samples, peak)
    flops = {c.name: c.flops for c in cases}
    results, rows = {}, []
    for cell_name in CELLS:
        mine = {c.name: samples[c.name] for c in cases if c.info["cell"] == cell_name}
        stats = summarise(mine, f"{cell_name} {REFERENCE}", flops, peak_flops)
        deep_steps = sum(t for t, _ in layer_shapes("deep", T, I, H))
        deep_flops = flops[f"{cell_name} deep"]
        for v in VARIANTS:
            name, s = f"{cell_name} {v}", stats[f"{cell_name} {v}"]
            steps = sum(t for t, _ in layer_shapes(v, T, I, H))
            lo, hi = s["ratio_iqr"]
            speedup = 1 / s["ratio"]
            rows.append([name, steps, 1000 * s["median_s"], pct(s["spread"]), ratio_text(s),
                         f"{speedup:.2f} ({1 / hi:.2f}-{1 / lo:.2f})", 1000 * s["min_s"],
                         1 / s["ratio_of_minima"], deep_steps / steps,
                         deep_flops / flops[name], s["gflops"], pct(s["fraction_of_peak"])])
            results[name] = {**s, "speedup": speedup, "steps": steps, "layers": layer_shapes(v, T, I, H),
                             "ideal_speedup_steps": deep_steps / steps, "ideal_speedup_flops": deep_flops / flops[name]}
    title = (f"pyramid: training step of a {LAYERS}-layer bidirectional encoder, B={B} T={T} input={I} H={H}, "
             f"{opts.threads} threads, median of {opts.repeats} interleaved repeats")
    notes = ["ms = median; speed-up = deep / variant (IQR of per-round values); min = fastest sample",
             "ideal = by recurrent steps, and by matmul FLOPs (a pyramid layer's input is 2x wider)",
             f"peak = {peak.name} {peak_flops / 1e9:.1f} GFLOP/s (median, same rounds)"]
    t = table(title, ["encoder", "steps", "ms", "spread", "time ratio (IQR)", "speed-up (IQR)",
                      "min ms", "speed-up of min", "ideal steps", "ideal FLOPs", "GFLOP/s", "of peak"], rows, notes)
    return {"B": B, "T": T, "input": I, "hidden": H, "layers": LAYERS, "bidirectional": True,
            "peak_gflops": peak_flops / 1e9, "stats": results, "tables": [t]}
