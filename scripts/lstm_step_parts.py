"""Where the LSTM kernel's training step spends its time (issue 26): the step `bench cells` times (the plain
LSTM's function on rnnbench's kernel, `PeepholeLSTMCell(variant="np")` in a `RecurrentLayer`, forward +
backward, B=64, input 32) and its parts timed alone in the same process: the C++ forward and backward (given
x_proj, as before issue 26, and given x and W_ih, the layer path since, which projects inside), the T per-step recurrent GEMMs alone (one full-batch GEMM per step: the kernel runs one per block of rows), the
recurrent weight-gradient GEMM, the input projection and its gradients (weight, input, bias), and the
element-wise passes by difference. Each part as a share of the step and, for the GEMMs, as GFLOP/s and a
share of the float32 matmul peak measured in the same run (2048² × 2048²). Times are the fastest of
repeated calls (at least 1 s of them); name the CPU beside them.

    python scripts/lstm_step_parts.py --threads 1        # both sizes of `bench cells`
    python scripts/lstm_step_parts.py --quick            # tiny sizes, seconds (a smoke test)
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Callable

import torch

from rnnbench.bench.measure import cpu_model
from rnnbench.kernels import extension, fast_peephole
from rnnbench.kernels.variants import LSTM_VARIANTS
from rnnbench.modules.cells import PeepholeLSTMCell
from rnnbench.modules.recurrent import RecurrentLayer

FULL = [(64, 500, 32, 256), (64, 100, 32, 128)]  # (B, T, I, H): bench cells' two sizes
QUICK = [(8, 16, 8, 16)]
G = 4  # gate row blocks of the np variant (i, f, g, o)


def fastest(fn: Callable[[], object], min_s: float) -> float:
    fn()  # warm-up
    best, started, calls = float("inf"), time.perf_counter(), 0
    while time.perf_counter() - started < min_s or calls < 3:
        t0 = time.perf_counter()
        fn()
        best, calls = min(best, time.perf_counter() - t0), calls + 1
    return best


def parts(B: int, T: int, I: int, H: int, min_s: float) -> tuple[dict[str, float], dict[str, float], float]:
    """({part: seconds}, {part: matmul FLOPs}, matmul FLOPs of the whole step)."""
    torch.manual_seed(0)
    layer = RecurrentLayer(functools.partial(PeepholeLSTMCell, variant="np"), I, H, backend="auto")
    params = dict(layer.directions[0].named_parameters())
    w_ih, w_hh, b_ih, b_hh = (params[k].detach() for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    x, grad_out = torch.randn(T, B, I), torch.randn(T, B, H) / (T * B) ** 0.5

    def step():
        layer.zero_grad(set_to_none=True)
        layer(x)[0].backward(grad_out)

    ext, bits = extension.load("peephole"), fast_peephole.variant_bits(LSTM_VARIANTS["np"])
    h0 = c0 = torch.zeros(B, H)
    x_proj = torch.randn(T, B, G * H) * 0.5
    # the kernel given x_proj (as before issue 26), and given x and W_ih (the layer path: the projection in
    # each step's GEMM, [x_t | h_{t-1}] [W_ih | U]^T, and ∂L/∂W_ih from δa_t per step; ∂L/∂x = δa W_ih is
    # then one matmul after the kernel, not timed here)
    forward = lambda: ext.forward(x_proj.clone(), None, None, h0, c0, w_hh, b_hh, None, None, None, bits, True)  # noqa: E731
    outputs, _, _, gates, cs = forward()
    backward = lambda: ext.backward(grad_out, None, None, gates.clone(), cs, outputs, None, h0, c0, w_hh,  # noqa: E731
                                    None, None, False, True, bits)
    projecting_forward = lambda: ext.forward(x, w_ih, b_ih, h0, c0, w_hh, b_hh, None, None, None, bits, False)  # noqa: E731
    p_outputs, _, _, p_gates, p_cs = projecting_forward()
    projecting_backward = lambda: ext.backward(grad_out, None, None, p_gates.clone(), p_cs, p_outputs, x, h0, c0,  # noqa: E731
                                               w_hh, None, None, False, True, bits)
    h, w_t, uh = torch.randn(B, H), w_hh.t().contiguous(), torch.empty(B, G * H)
    da, dh = torch.randn(B, G * H), torch.empty(B, H)
    x_flat, d_proj = x.view(T * B, I), torch.randn(T * B, G * H)

    def step_gemms_forward():
        for _ in range(T):
            torch.mm(h, w_t, out=uh)

    def step_gemms_backward():
        for _ in range(T):
            torch.mm(da, w_hh, out=dh)

    def projection_grads():
        d_proj.t().mm(x_flat), d_proj.mm(w_ih), d_proj.sum(0)

    timed = {
        "whole step": step,
        "C++ forward (with a copy of x_proj)": forward,
        "  the copy of x_proj": lambda: x_proj.clone(),
        "C++ backward (with a copy of the gates)": backward,
        "  the copy of the gates": lambda: gates.clone(),
        "C++ forward, input projected inside": projecting_forward,
        "C++ backward, input projected inside (w/ copy)": projecting_backward,
        "T forward step GEMMs alone": step_gemms_forward,
        "T backward step GEMMs alone": step_gemms_backward,
        "weight-grad GEMM": lambda: torch.mm(gates.view(T * B, G * H).t(), outputs.view(T * B, H)),
        "input projection": lambda: torch.addmm(b_hh, x_flat, w_ih.t()),
        "input projection grads": projection_grads,
    }
    seconds = {name: fastest(fn, min_s) for name, fn in timed.items()}
    recurrent = 2.0 * T * B * H * G * H
    flops = {"T forward step GEMMs alone": recurrent, "T backward step GEMMs alone": recurrent,
             "weight-grad GEMM": recurrent, "input projection": 2.0 * T * B * I * G * H,
             "input projection grads": 4.0 * T * B * I * G * H}
    return seconds, flops, 3 * 2.0 * T * B * (I + H) * G * H


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny sizes, short timings")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    min_s = 0.05 if args.quick else 1.0
    n = 256 if args.quick else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    peak = 2.0 * n ** 3 / fastest(lambda: torch.mm(a, b), min_s)
    print(f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for B, T, I, H in QUICK if args.quick else FULL:
        seconds, flops, total = parts(B, T, I, H, min_s)
        whole = seconds["whole step"]
        print(f"\nB={B} T={T} I={I} H={H}: sgemm peak {peak / 1e9:.1f} GFLOP/s; the step {total / whole / 1e9:.1f} "
              f"GFLOP/s = {total / whole / peak:.0%} of peak")
        rows = dict(seconds)
        rows["forward element-wise (by difference)"] = (seconds["C++ forward (with a copy of x_proj)"]
                                                        - seconds["  the copy of x_proj"]
                                                        - seconds["T forward step GEMMs alone"])
        rows["backward element-wise (by difference)"] = (seconds["C++ backward (with a copy of the gates)"]
                                                         - seconds["  the copy of the gates"]
                                                         - seconds["T backward step GEMMs alone"]
                                                         - seconds["weight-grad GEMM"])
        rows["all matmuls at the peak"] = total / peak
        for name, s in rows.items():
            rate = f"  {flops[name] / s / 1e9:7.1f} GFLOP/s ({flops[name] / s / peak:.0%} of peak)" if name in flops else ""
            print(f"{name:42s} {1000 * s:9.2f} ms {s / whole:7.1%}{rate}")


if __name__ == "__main__":
    main()
