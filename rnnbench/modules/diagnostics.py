"""Gradient diagnostics: the vanishing/exploding-gradient picture of the lecture notes.

- `gradient_norms`: per parameter group (input weights, recurrent weights, biases, peepholes of each
  layer and direction; embedding; head), read off `.grad` after backward.
- `temporal_profile`: ‖∂L/∂h_t‖ for t = 1..T and every layer (and direction) on a fixed probe batch,
  through the explicit backend on the model's own parameters (probes added to h_t, see
  `recurrent.run_explicit`), so it is the true total gradient wrt the hidden state — not the
  ‖∂L/∂x_t‖ proxy a fused kernel would give. Pascanu et al. 2013: ‖∂h_t/∂h_k‖ behaves like γ^{t-k}.
- `gate_statistics`: on the same forward pass, for gated cells, per layer and gate the mean activation
  and the fractions of left-saturated (σ < 0.1) and right-saturated (σ > 0.9) gate values, overall and
  per unit (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding Recurrent Networks", §4.2
  and Fig. 3: a unit's fraction of time left- vs right-saturated, the "saturation plane").
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

from rnnbench.modules.recurrent import GateSteps, Probes

# Karpathy et al. 2015: a gate value below 0.1 is left-saturated (closed), above 0.9 right-saturated (open).
LEFT_SATURATED, RIGHT_SATURATED = 0.1, 0.9
_STACK_PARAM = re.compile(r"stack\.layers\.(\d+)\.directions\.(\d+)\.(\w+)")


def parameter_group(name: str) -> str:
    """`stack.layers.1.directions.1.bias_hh` -> `layer1_reverse.bias`; `head.weight` -> `head`."""
    m = _STACK_PARAM.fullmatch(name)
    if m is None:
        return name.split(".")[0]
    layer, direction, kind = m.groups()
    kind = "bias" if kind.startswith("bias") else kind
    return f"layer{layer}{'_reverse' if direction == '1' else ''}.{kind}"


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradient of each parameter group (groups as `parameter_group`)."""
    squares: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            group = parameter_group(name)
            sq = p.grad.detach().float().square().sum()
            squares[group] = squares[group] + sq if group in squares else sq
    if not squares:
        return {}
    values = torch.stack(list(squares.values())).sqrt().tolist()  # one device sync for all groups
    return dict(zip(squares, values))


def _fit_log_slope(norms: list[float]) -> float:
    """Least-squares slope of log10 ‖∂L/∂h_t‖ against t, over the finite, positive values."""
    points = [(t, math.log10(v)) for t, v in enumerate(norms) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var


def summarise_profile(norms: list[float]) -> dict[str, float]:
    """One-number summaries of a profile ‖∂L/∂h_t‖, t = 1..T.

    - `log10_ratio`: log10(‖∂L/∂h_1‖ / ‖∂L/∂h_T‖); strongly negative = the gradient vanishes on its way
      back to the first step, positive = it grows (explodes).
    - `backward_factor`: the fitted factor by which the norm changes per step going back in time,
      10^(-slope of log10 norm vs t); < 1 vanishing, > 1 exploding, 1 = preserved (γ of Pascanu et al.).
    """
    first, last = norms[0], norms[-1]
    if first > 0 and last > 0:
        ratio = math.log10(first / last)
    else:
        ratio = float("-inf") if last > 0 else float("nan")
    return {"log10_ratio": ratio, "backward_factor": 10 ** (-_fit_log_slope(norms))}


def temporal_profile(model: nn.Module, loss_fn, batch, gate_stats: bool = True) -> dict:
    """‖∂L/∂h_t‖ (mean over the batch of each sequence's L2 norm) for every t, layer and direction;
    with `gate_stats`, also `gates`: `gate_statistics` of the gated layers on the same forward pass.

    `loss_fn(outputs, batch) -> scalar`. Runs in eval mode (no dropout); leaves no gradient behind.
    """
    was_training = model.training
    model.eval()
    try:
        probes = Probes(record_gates=gate_stats)
        with torch.enable_grad():
            outputs, _ = model(batch.inputs, batch.lengths, None, probes)
            loss = loss_fn(outputs, batch)
            grads = torch.autograd.grad(loss, [p for _, p in probes], allow_unused=True)
    finally:
        model.train(was_training)
    layers, summary = {}, {}
    for (name, probe), grad in zip(probes, grads):
        if grad is None:
            grad = torch.zeros_like(probe)
        norms = grad.detach().float().norm(dim=-1).mean(dim=1).tolist()          # (T,) per step
        layers[name] = norms
        for key, value in summarise_profile(norms).items():
            summary[f"{name}/{key}"] = value
    profile = {"seq_len": len(next(iter(layers.values()))) if layers else 0, "layers": layers,
               "summary": summary, "loss": float(loss.detach())}
    if probes.gates:
        profile["gates"] = gate_statistics(probes.gates)
    return profile


@torch.no_grad()
def gate_statistics(gates: dict[str, GateSteps]) -> dict[str, dict[str, dict]]:
    """{layer: {gate: stats}} over the valid steps of the probe batch, for each σ gate g ∈ (0, 1):

    - `mean`: the mean of g over steps, sequences and units;
    - `left_saturated` / `right_saturated`: the fraction of values g < 0.1 / g > 0.9;
    - `unit_left` / `unit_right`: the same fractions per unit (H values each), over steps and sequences.
    """
    out: dict[str, dict[str, dict]] = {}
    for layer, steps in gates.items():
        if not steps:
            continue
        if steps[0][1] is None:
            weight = None
            count = len(steps) * steps[0][0][next(iter(steps[0][0]))].shape[0]   # T · B
        else:
            weight = torch.stack([mask for _, mask in steps]).double()           # (T, B, 1)
            count = weight.sum()
        out[layer] = {}
        for gate in steps[0][0]:
            g = torch.stack([values[gate] for values, _ in steps])               # (T, B, H)
            g = g.to(torch.promote_types(g.dtype, torch.float32))
            left, right = (g < LEFT_SATURATED).float(), (g > RIGHT_SATURATED).float()
            if weight is not None:
                g, left, right = g * weight, left * weight, right * weight
            unit_left = left.sum((0, 1)) / count                                  # (H,)
            unit_right = right.sum((0, 1)) / count
            mean = g.sum((0, 1)) / count                                          # (H,) per-unit means
            stats = torch.stack([mean.mean(), unit_left.mean(), unit_right.mean()]).tolist()
            out[layer][gate] = {"mean": stats[0], "left_saturated": stats[1], "right_saturated": stats[2],
                                "unit_left": unit_left.tolist(), "unit_right": unit_right.tolist()}
    return out


def gate_scalars(gate_stats: dict[str, dict[str, dict]]) -> dict[str, float]:
    """`gates/<layer>/<gate>/<mean|left_saturated|right_saturated>`: the numbers a dashboard plots."""
    return {f"gates/{layer}/{gate}/{key}": stats[key] for layer, by_gate in gate_stats.items()
            for gate, stats in by_gate.items() for key in ("mean", "left_saturated", "right_saturated")}
