"""Models: heads, pooling, parameter counts, time reduction and the parameter-budget function."""


import functools

import pytest
import torch

from rnnbench.modules.budget import hidden_size_for_budget
from rnnbench.modules.cells import GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.modules.models import SequenceModel
from rnnbench.tasks.base import IOSpec

PER_STEP = IOSpec("continuous", 10, 10, "per_step", "classification")
SEQUENCE = IOSpec("continuous", 2, 1, "sequence", "regression")
TOKENS = IOSpec("tokens", 50, 50, "per_step", "classification", stateful=True)
CELLS = {"vanilla": VanillaCell, "lstm": LSTMCell, "peephole": PeepholeLSTMCell, "gru": GRUCell,
         # the LSTM variants with the fewest and the most parameters (Greff et al. 2016)
         "peephole_cifg": functools.partial(PeepholeLSTMCell, variant="cifg"),
         "peephole_fgr": functools.partial(PeepholeLSTMCell, variant="fgr")}
ARCHS = {"single": {}, "deep": dict(num_layers=3), "bidirectional": dict(bidirectional=True),
         "pyramid": dict(num_layers=4, bidirectional=True, pyramid=True)}


def test_parameter_count_matches_the_formula():
    """LSTM, one layer, I=10, H=16, head 10: 4H(I+H) + 8H (two biases) + (H+1)·10."""
    model = SequenceModel(PER_STEP, LSTMCell, 16)
    assert model.num_parameters() == 4 * 16 * (10 + 16) + 8 * 16 + 17 * 10
    peephole = SequenceModel(PER_STEP, PeepholeLSTMCell, 16)
    assert peephole.num_parameters() == model.num_parameters() + 3 * 16
    # Greff et al.'s variants, two layers: a gate removed (CIFG) drops its rows of W, U, b and its
    # peephole; FGR adds the nine H x H gate-to-gate matrices; NP is the plain LSTM
    def variant(name):
        return SequenceModel(PER_STEP, functools.partial(PeepholeLSTMCell, variant=name), 16, num_layers=2)

    two_layers = SequenceModel(PER_STEP, LSTMCell, 16, num_layers=2).num_parameters()
    assert variant("np").num_parameters() == two_layers
    assert variant("fgr").num_parameters() == two_layers + 2 * (3 * 16 + 9 * 16 * 16)
    layer_input_rows = (10 + 16 + 2) * 16 + (16 + 16 + 2) * 16  # one gate's W, U, b in layers 1 and 2
    assert variant("cifg").num_parameters() == two_layers - layer_input_rows + 2 * 2 * 16


# FGR is left out of the small budget: its 8 cells in the pyramid get H ~ 16 there, and 13 H^2 weights
# per cell make one unit of H more or less move the count by more than 5 %.
@pytest.mark.parametrize("cell,arch,budget", [(c, a, b) for c in CELLS for a in ARCHS for b in (50_000, 250_000)
                                              if not (c == "peephole_fgr" and b < 250_000)])
def test_budget_lands_within_a_few_percent(cell, arch, budget):
    make = lambda h: SequenceModel(SEQUENCE, CELLS[cell], h, **ARCHS[arch])  # noqa: E731
    h = hidden_size_for_budget(budget, make)
    count = make(h).num_parameters()
    assert abs(count - budget) / budget < 0.05, (h, count)
    # and it is the closest: one unit more or less is no nearer
    assert abs(count - budget) <= min(abs(make(h + 1).num_parameters() - budget),
                                      abs(make(max(1, h - 1)).num_parameters() - budget))


@pytest.mark.parametrize("cell", ["gated_deltanet", "mlstm", "slstm"])
def test_a_budget_for_a_cell_with_heads_lands_on_a_width_they_divide(cell):
    """Their constructors refuse H not divisible by num_heads (4): the search tries multiples of 4 only."""
    from rnnbench.run.build import build_model, build_task
    from rnnbench.run.config import compose

    cfg = compose([f"cell={cell}", "task=parity_check", "model.param_budget=20000"])
    model, h = build_model(cfg, build_task(cfg).spec, torch.device("cpu"))
    assert h % 4 == 0 and abs(model.num_parameters() - 20000) / 20000 < 0.1
    make = lambda k: SequenceModel(build_task(cfg).spec, type(model.stack.layers[0].directions[0]), k)  # noqa: E731
    assert hidden_size_for_budget(20000, make, multiple_of=4) % 4 == 0


def test_time_reduction_and_per_step_heads():
    assert SequenceModel(SEQUENCE, LSTMCell, 8, **ARCHS["pyramid"]).time_reduction == 8
    out, _ = SequenceModel(PER_STEP, GRUCell, 8, num_layers=2, bidirectional=True)(torch.randn(7, 3, 10))
    assert out.shape == (7, 3, 10)
    with pytest.raises(ValueError, match="model.pyramid=true reduces time 8x.*needs an output at every input step"):
        SequenceModel(PER_STEP, LSTMCell, 8, **ARCHS["pyramid"])


def test_last_pooling_takes_both_directions_final_states():
    model = SequenceModel(SEQUENCE, LSTMCell, 8, bidirectional=True).eval()
    x = torch.randn(6, 2, 2)
    out, final = model(x)
    forward_h, backward_h = final[-1][0][0], final[-1][1][0]
    stack_out, _, _ = model.stack(x)
    # forward final = output at the last step; backward final = backward output at the first step
    torch.testing.assert_close(forward_h, stack_out[-1, :, :8])
    torch.testing.assert_close(backward_h, stack_out[0, :, 8:])
    torch.testing.assert_close(out, model.head(torch.cat([forward_h, backward_h], -1)))


def test_mean_and_max_pooling_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 2)
    lengths = torch.tensor([6, 3])
    for pooling in ("mean", "max"):
        model = SequenceModel(SEQUENCE, GRUCell, 8, pooling=pooling).eval()
        padded, _ = model(x, lengths)
        alone, _ = model(x[:3, 1:2])
        torch.testing.assert_close(padded[1], alone[0])


def test_bad_model_options_name_the_key():
    with pytest.raises(ValueError, match="model.pooling='sum'"):
        SequenceModel(SEQUENCE, LSTMCell, 8, pooling="sum")
    with pytest.raises(ValueError, match="model.hidden_size=0"):
        SequenceModel(SEQUENCE, LSTMCell, 0)
    with pytest.raises(ValueError, match="model.dropout=1.5"):
        SequenceModel(SEQUENCE, LSTMCell, 8, num_layers=2, dropout=1.5)
    with pytest.raises(ValueError, match="model.tie_weights=true needs a token task"):
        SequenceModel(SEQUENCE, LSTMCell, 8, tie_weights=True)


def test_a_size_is_checked_by_one_rule_in_the_constructors_and_the_config_check_alike():
    """`cells.size_error` is the rule: the model, its stack, the budget search, a cell and
    `run.config.validate` (before anything is written) all give its one message."""
    from rnnbench.run.config import ConfigError, compose, validate

    expected = "model.hidden_size=-3 is not allowed: must be a positive integer (>= 1)"
    with pytest.raises(ValueError) as built:
        SequenceModel(SEQUENCE, LSTMCell, -3)
    with pytest.raises(ConfigError) as checked:
        validate(compose(["task=adding", "model.hidden_size=-3"]))
    assert str(built.value) == str(checked.value) == expected
    with pytest.raises(ValueError, match=r"^hidden_size=0 is not allowed: must be a positive integer \(>= 1\)$"):
        GRUCell(4, 0)
    with pytest.raises(ValueError, match=r"^model.num_layers=0 is not allowed"):
        SequenceModel(SEQUENCE, LSTMCell, 8, num_layers=0)
    with pytest.raises(ValueError, match=r"^model.param_budget=0 is not allowed"):
        hidden_size_for_budget(0, lambda h: SequenceModel(SEQUENCE, LSTMCell, h))


def test_pyramid_input_pairs_the_frames_before_the_first_layer():
    """LAS-style listener reading pairs of frames: every layer runs on a halved sequence."""
    model = SequenceModel(SEQUENCE, LSTMCell, 8, num_layers=3, pyramid=True, pyramid_input=True)
    assert model.time_reduction == 8 and model.stack.layers[0].directions[0].input_size == 2 * 2
    out, _, _ = model.stack(torch.randn(16, 2, 2))
    assert out.shape[0] == 2  # 16 -> 8 (input) -> 4 -> 2
