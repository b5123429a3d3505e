"""Comparisons at equal size: the hidden size whose model comes closest to a parameter budget
(as in Arjovsky et al. 2016 and Bai et al. 2018, which compare cells at matched parameter counts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from rnnbench.modules.cells import require_size

if TYPE_CHECKING:
    from rnnbench.modules.models import SequenceModel


def hidden_size_for_budget(budget: int, make_model: Callable[[int], SequenceModel], max_hidden: int = 1 << 16) -> int:
    """The hidden size H whose `make_model(H)` has the parameter count closest to `budget`.

    The count grows monotonically with H, so a binary search finds the first H at or above the budget
    and the closer of it and H - 1 wins. Models are built on the meta device: nothing is allocated.
    """
    require_size("model.param_budget", budget)

    def size(h: int) -> int:
        with torch.device("meta"):
            return make_model(h).num_parameters()  # the count summary.json records

    if size(1) >= budget:
        return 1
    low, high = 1, 2
    while size(high) < budget:
        low, high = high, high * 2
        if high > max_hidden:
            raise ValueError(f"model.param_budget={budget}: needs hidden_size > {max_hidden}")
    while high - low > 1:  # invariant: size(low) < budget <= size(high)
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) < budget else (low, mid)
    return low if budget - size(low) < size(high) - budget else high
