"""Padded batches: which steps of each sequence are real. Time-major, lengths (B,) int64 or None."""

from __future__ import annotations

import torch
from torch import Tensor


def valid_steps(lengths: Tensor, T: int, device=None) -> Tensor:
    """(T, B, 1) bool: step t lies inside sequence b (t < lengths[b]). The one length mask: the explicit
    loop, the Python kernels, the pyramid's input pairs and the models' pooling all take it from here."""
    device = lengths.device if device is None else device
    return (torch.arange(T, device=device).unsqueeze(1) < lengths.to(device).unsqueeze(0)).unsqueeze(-1)


def checked_lengths(lengths: Tensor | None, T: int, B: int) -> Tensor | None:
    """`lengths` as the kernels take it: a (B,) int64 CPU tensor with values in [0, T], or None when no
    sequence is shorter than T (the unmasked loop is the same function)."""
    if lengths is None:
        return None
    lengths = lengths.to("cpu", torch.long)
    if lengths.numel() != B or (T > 0 and ((lengths < 0) | (lengths > T)).any()):
        raise ValueError(f"lengths must be (B={B},) with values in [0, T={T}], got {lengths.tolist()}")
    return None if bool((lengths == T).all()) else lengths
