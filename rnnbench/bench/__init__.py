"""`python -m rnnbench.bench SUITE [--json FILE] [--repeats N] [--threads 2] [--quick]`: benchmarks.

Suites (issue 7): `cells` (one training step of every cell and backend against torch's fused LSTM),
`pyramid` (pyramid vs deep encoder), `overhead` (the Trainer vs a hand-written loop), `diagnostics`
(cost of gradient norms and temporal profiles at their default cadence), `sweep` (local parallel launcher
vs sequential jobs), and `all`. How the numbers are taken: `measure.py`. Benchmarks, not timed tests.
"""
