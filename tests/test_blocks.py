"""`rnnbench/modules/blocks.py` and what comes with it: the residual block around any cell (`model.block`), parameters
counted like with like (`effective_parameters`), state size and the state budget."""

import pytest
import torch

from rnnbench.modules import modern_cells as mc
from rnnbench.modules.budget import hidden_size_for_budget
from rnnbench.modules.cells import GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.modules.models import SequenceModel
from rnnbench.tasks.base import IOSpec

SPEC = IOSpec("continuous", 3, 2, "per_step", "regression")
SEQ_SPEC = IOSpec("continuous", 3, 1, "sequence", "regression")


@pytest.mark.parametrize("cell", [LSTMCell, GRUCell, mc.MinGRUCell, mc.S6Cell])
@pytest.mark.parametrize("arch", [dict(), dict(num_layers=2, bidirectional=True), dict(num_layers=3, pyramid=True)])
def test_block_wraps_classic_and_modern_cells_in_every_architecture(cell, arch):
    torch.manual_seed(0)
    spec = SEQ_SPEC if arch.get("pyramid") else SPEC
    model = SequenceModel(spec, cell, 8, block="residual_mlp", **arch)
    lengths = torch.tensor([12, 7, 2])
    out, _ = model(torch.randn(12, 3, 3), lengths)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    stack_out, out_lengths, _ = model.stack(torch.randn(12, 3, 3), lengths)
    mask = torch.arange(stack_out.shape[0]).view(-1, 1) >= out_lengths.view(1, -1)
    assert (stack_out[mask] == 0).all()                        # padded steps stay exactly zero


def test_block_is_the_equations():
    """y = x' + W_down(GeLU(W_gate z) ⊙ W_up z), z = RMSNorm(x'), x' = x + layer(RMSNorm(x)), x = W_in input."""
    torch.manual_seed(0)
    model = SequenceModel(SPEC, LSTMCell, 4, block="residual_mlp", block_mlp_ratio=2).double()
    stack, block = model.stack, model.stack.blocks[0]
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    projected = stack.input_proj(x)

    def rms(v, weight):
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    layer_out, _ = stack.layers[0](rms(projected, block.norm.weight))
    x1 = projected + layer_out
    gate, up = block.mlp_in(rms(x1, block.mlp_norm.weight)).chunk(2, -1)
    expected = x1 + block.mlp_out(torch.nn.functional.gelu(gate, approximate="tanh") * up)
    torch.testing.assert_close(stack(x)[0], expected)


def test_plain_stack_stays_the_default_and_unchanged():
    """block='none' builds no block parameters: a classic model's parameters (and so its seeded init and every
    result) are what they were."""
    torch.manual_seed(0)
    plain = SequenceModel(SPEC, LSTMCell, 8)
    assert plain.stack.blocks is None and plain.stack.input_proj is None
    assert [n for n, _ in plain.named_parameters()] == [
        "stack.layers.0.directions.0.weight_ih", "stack.layers.0.directions.0.weight_hh",
        "stack.layers.0.directions.0.bias_ih", "stack.layers.0.directions.0.bias_hh", "head.weight", "head.bias"]


def test_bad_block_values_are_named():
    with pytest.raises(ValueError, match="model.block='ffn' is not allowed: choose one of none, residual_mlp"):
        SequenceModel(SPEC, LSTMCell, 8, block="ffn")
    with pytest.raises(ValueError, match="model.block_mlp_ratio=0 is not allowed"):
        SequenceModel(SPEC, LSTMCell, 8, block="residual_mlp", block_mlp_ratio=0)
    with pytest.raises(ValueError, match="model.param_count='all' is not allowed: choose one of total, effective"):
        SequenceModel(SPEC, LSTMCell, 8, param_count="all")


@pytest.mark.parametrize("cell, redundant", [
    (LSTMCell, lambda H: 4 * H),                               # all of bias_hh
    (VanillaCell, lambda H: H),
    (PeepholeLSTMCell, lambda H: 4 * H),
    (GRUCell, lambda H: 2 * H),                                # b_hr, b_hz; b_hn sits inside r ⊙ (U_n h + b_hn)
    (lambda i, h: GRUCell(i, h, reset_after=False), lambda H: 3 * H),
    (mc.MinGRUCell, lambda H: 0),
    (mc.S6Cell, lambda H: 0),
])
def test_effective_parameters_drop_exactly_the_redundant_bias(cell, redundant):
    model = SequenceModel(SPEC, cell, 6, num_layers=2, bidirectional=True)
    assert model.num_parameters() - model.effective_parameters() == 2 * 2 * redundant(6)


def test_redundant_bias_is_redundant():
    """Shifting b_ih by +d and b_hh by -d leaves the LSTM's function unchanged: the count is right to drop one."""
    torch.manual_seed(0)
    cell = LSTMCell(3, 5).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    before, _ = cell(x)
    with torch.no_grad():
        d = torch.randn(20, dtype=torch.float64)
        cell.bias_ih += d
        cell.bias_hh -= d
    torch.testing.assert_close(cell(x)[0], before)


def test_state_size_and_the_state_budget():
    lstm = SequenceModel(SPEC, LSTMCell, 10, num_layers=2, bidirectional=True)
    assert lstm.state_size() == 2 * 2 * 2 * 10                 # (h, c) per direction and layer
    H = hidden_size_for_budget(1000, lambda h: SequenceModel(SPEC, mc.S6Cell, h), measure="state")
    assert SequenceModel(SPEC, mc.S6Cell, H).state_size() == 2 * H * (16 + 3)   # E(N + k - 1), E = 2H
    assert abs(2 * H * 19 - 1000) <= 19                         # the closest width


def test_param_budget_counts_effective_parameters_when_asked():
    def make(count):
        return lambda h: SequenceModel(SPEC, LSTMCell, h, param_count=count)
    total, effective = (hidden_size_for_budget(20000, make(c)) for c in ("total", "effective"))
    assert effective >= total
    assert abs(SequenceModel(SPEC, LSTMCell, effective).effective_parameters() - 20000) < \
        abs(SequenceModel(SPEC, LSTMCell, total).effective_parameters() - 20000) + 1
