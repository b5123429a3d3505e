"""Why the IRNN diverges at step 2 of `study_adding_reduced` (README "Results", study 2).

torch's RMSprop has no bias correction: its square average starts at 0, so the first update is
lr·g/√((1-α)·g²) = 10·lr per entry (α = 0.99). On the IRNN's identity recurrent matrix one such step
raises ‖U‖₂ well above 1, and a ReLU state, which nothing bounds, grows geometrically over T steps.
This replays the study's first steps (H=128, T=100, batch 20, entries clipped to [-1, 1], explicit
cell) and prints ‖U‖₂, its spectral radius, the largest |h_T| and the loss.

    python scripts/irnn_rmsprop_first_step.py [--lr 1e-3] [--seed 1]
"""

import argparse
from functools import partial

import torch

from rnnbench.modules.cells import VanillaCell
from rnnbench.modules.recurrent import RecurrentLayer


def adding_batch(T: int, B: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Adding problem, one marker in each half (Arjovsky et al. 2016's variant)."""
    x = torch.zeros(T, B, 2)
    x[:, :, 0] = torch.rand(T, B, generator=generator)
    first = torch.randint(0, T // 2, (B,), generator=generator)
    second = torch.randint(T // 2, T, (B,), generator=generator)
    rows = torch.arange(B)
    x[first, rows, 1] = 1
    x[second, rows, 1] = 1
    return x, x[first, rows, 0] + x[second, rows, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    H, T, B = 128, 100, 20
    layer = RecurrentLayer(partial(VanillaCell, nonlinearity="relu", recurrent_init="identity"), 2, H,
                           backend="explicit")
    head = torch.nn.Linear(H, 1)
    params = [*layer.parameters(), *head.parameters()]
    optimiser = torch.optim.RMSprop(params, lr=args.lr)
    U = layer.directions[0].weight_hh
    data = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        x, y = adding_batch(T, B, data)
        out, _ = layer(x)
        loss = ((head(out[-1]).squeeze(-1) - y) ** 2).mean()
        with torch.no_grad():
            norm = torch.linalg.matrix_norm(U, 2).item()
            radius = torch.linalg.eigvals(U).abs().max().item()
        print(f"step {step}: ‖U‖₂ {norm:.3f}  spectral radius {radius:.3f}  "
              f"max|h_T| {out[-1].abs().max().item():.3g}  loss {loss.item():.3g}")
        optimiser.zero_grad()
        loss.backward()
        for p in params:
            p.grad.clamp_(-1, 1)  # the study's clip_mode=value, clip 1
        optimiser.step()


if __name__ == "__main__":
    main()
