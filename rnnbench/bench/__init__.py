"""`python -m rnnbench.bench SUITE [--json FILE] [--repeats N] [--threads 2] [--quick]`: benchmarks.

Suites: `cells` (one training step of every cell and backend against torch's fused LSTM),
`pyramid` (pyramid vs deep encoder), `overhead` (the Trainer vs a hand-written loop), `diagnostics`
(cost of gradient norms and temporal profiles at their default cadence), `denormals` (a training step with
and without flushing subnormal floats), `sweep` (local parallel launcher vs sequential jobs), and `all`.
How the numbers are taken: `measure.py`; the figures and the machine they ran on: docs/performance.md.
Benchmarks, not timed tests.
"""
