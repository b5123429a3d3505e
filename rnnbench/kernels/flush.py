"""Flushing subnormal floats to zero on every CPU thread torch computes on (`train.flush_denormal`)."""

from __future__ import annotations

import torch

from rnnbench.kernels import extension


def set_flush_denormal(on: bool) -> bool:
    """`torch.set_flush_denormal(on)` on every CPU thread torch computes on; False where unsupported.

    Flushing sets the x86 MXCSR bits flush-to-zero (a subnormal result becomes ±0) and denormals-are-zero
    (a subnormal operand is read as ±0), i.e. |x| < 1.18e-38 (float32) / 2.2e-308 (float64) counts as 0.
    torch sets them on the calling thread only; OpenMP worker threads copy them once, when torch's pool
    is made, so in a process that has already computed in parallel the workers would keep computing with
    subnormals. The small `csrc/flush.cpp` extension sets them on every thread of the pool (no sequence
    kernel is loaded for it); without it (no compiler, RNNBENCH_NO_CPP) only threads made afterwards
    follow, which is enough when this is called before any parallel work, as the app does.
    """
    if not torch.set_flush_denormal(on):
        return False
    if extension.available("flush"):
        extension.load("flush").set_flush_denormal(on)
    return True
