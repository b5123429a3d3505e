"""Comparisons at equal size: the hidden size whose model comes closest to a parameter budget
(as in Arjovsky et al. 2016 and Bai et al. 2018, which compare cells at matched parameter counts) or to a
state budget (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures": iso-state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from rnnbench.modules.cells import require_size

if TYPE_CHECKING:
    from rnnbench.modules.models import SequenceModel


def hidden_size_for_budget(budget: int, make_model: Callable[[int], SequenceModel], max_hidden: int = 1 << 16,
                           measure: str = "parameters", multiple_of: int = 1) -> int:
    """The hidden size H whose `make_model(H)` has the parameter count (`measure="parameters"`: the count
    `model.param_count` names, total or effective) or the state size (`measure="state"`: floats carried per
    sequence, Poli et al. 2024's iso-state comparison) closest to `budget`.

    The count grows monotonically with H, so a binary search finds the first H at or above the budget
    and the closer of it and H - 1 wins. Models are built on the meta device: nothing is allocated.
    Only multiples of `multiple_of` are tried (a cell with heads needs H divisible by their number).
    """
    key = "model.param_budget" if measure == "parameters" else "model.state_budget"
    require_size(key, budget)

    def size(k: int) -> int:
        with torch.device("meta"):
            model = make_model(k * multiple_of)
            return model.counted_parameters() if measure == "parameters" else model.state_size()

    smallest = size(1)
    if smallest > budget:  # the narrowest model is already over: nothing meets the budget
        raise ValueError(f"{key}={budget} cannot be met: the smallest model of this cell, architecture and "
                         f"task (hidden_size={multiple_of}) has {smallest} {measure}; allowed: {key} >= {smallest}")
    if smallest == budget:
        return multiple_of
    low, high = 1, 2
    while size(high) < budget:
        low, high = high, high * 2
        if high * multiple_of > max_hidden:
            raise ValueError(f"{key}={budget} cannot be met: it needs hidden_size > {max_hidden}; "
                             f"allowed: {key} <= {size(max_hidden // multiple_of)}")
    while high - low > 1:  # invariant: size(low) < budget <= size(high)
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) < budget else (low, mid)
    return multiple_of * (low if budget - size(low) < size(high) - budget else high)
