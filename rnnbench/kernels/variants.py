"""The LSTM family of Greff et al. 2016 as switches: what `modules.cells.PeepholeLSTMCell` writes as
equations and what the sequence kernel (`fast_peephole`, `csrc/peephole.cpp`) instantiates, one table
for both. It lives on the kernels' floor because the kernel's template parameters are these switches."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LSTMVariant:
    """The switches of the LSTM family of Greff et al. 2016; all defaults = their "vanilla" LSTM."""

    input_gate: bool = True            # False: i = 1                                     (NIG)
    forget_gate: bool = True           # False: no learned forget gate, f = 1 or 1 - i    (NFG, CIFG)
    output_gate: bool = True           # False: o = 1                                     (NOG)
    input_activation: bool = True      # False: g = a_g, no tanh                          (NIAF)
    output_activation: bool = True     # False: h = o ⊙ c, no tanh                        (NOAF)
    peepholes: bool = True             # False: no p_i, p_f, p_o                          (NP)
    coupled: bool = False              # True: f = 1 - i                                  (CIFG)
    full_gate_recurrence: bool = False  # True: i, f, o also read i, f, o of t-1          (FGR)


# Greff, Srivastava, Koutník, Steunebrink, Schmidhuber, "LSTM: A Search Space Odyssey", IEEE TNNLS
# 2017 (arXiv:1503.04069), §III: the eight variants, each one change to the vanilla LSTM.
LSTM_VARIANTS: dict[str, LSTMVariant] = {
    "vanilla": LSTMVariant(),
    "nig": LSTMVariant(input_gate=False),
    "nfg": LSTMVariant(forget_gate=False),
    "nog": LSTMVariant(output_gate=False),
    "niaf": LSTMVariant(input_activation=False),
    "noaf": LSTMVariant(output_activation=False),
    "np": LSTMVariant(peepholes=False),
    "cifg": LSTMVariant(forget_gate=False, coupled=True),
    "fgr": LSTMVariant(full_gate_recurrence=True),
}
