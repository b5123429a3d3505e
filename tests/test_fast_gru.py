"""fast_gru computes exactly GRUCell's function (both forms), with exact gradients, padded or not, at every
magnitude of pre-activation; the layer falls back where the kernel cannot run."""

import pytest
import torch

from rnnbench.kernels import fast_gru
from rnnbench.modules.cells import GRUCell
from test_fast_peephole import needs_compiler

pytestmark = needs_compiler

T, B, I, H = 7, 3, 4, 5
PADDED = [7, 3, 5]
FORMS = [pytest.param(True, id="reset_after"), pytest.param(False, id="cho")]
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


def make_cell(reset_after, dtype=torch.float32, seed=0, hidden=H):
    torch.manual_seed(seed)
    cell = GRUCell(I, hidden, reset_after=reset_after).to(dtype)
    with torch.no_grad():  # about twice the init, so that every term matters, yet float32 rounding stays small
        for p in cell.parameters():
            p.normal_(0, 1.1 / hidden ** 0.5)
    return cell


def cell_loop(cell, x_proj, h0, lengths=None):
    """The specification: GRUCell.step for t = 0..T-1; finished sequences keep their state, output zero."""
    h, outputs = h0, []
    for t, x_t in enumerate(x_proj.unbind(0)):
        new, _ = cell.step(x_t, (h,))
        if lengths is None:
            h, out = new, new
        else:
            valid = (t < lengths).unsqueeze(1)
            h, out = torch.where(valid, new, h), torch.where(valid, new, torch.zeros_like(new))
        outputs.append(out)
    return torch.stack(outputs), h


def run_kernel(cell, x_proj, h0, lengths=None):
    return fast_gru.gru_sequence(x_proj, h0, cell.weight_hh, cell.bias_hh, lengths, cell.reset_after)


def values_and_grads(cell, run, x_proj, h0, lengths, parts=(1, 1)):
    out, h_T = run(cell, x_proj, h0, lengths)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t, used in zip((out, h_T), parts)
               if used)
    grads = torch.autograd.grad(loss, [x_proj, h0, cell.weight_hh, cell.bias_hh])
    return dict(zip(["outputs", "h_T", "grad x_proj", "grad h0", "grad weight_hh", "grad bias_hh"],
                    (out, h_T, *grads)))


def assert_same(got, expected, rtol, atol):
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{name}: {m}")


def inputs(cell, magnitude=1.0, dtype=torch.float32, T=T, B=B, seed=3):
    g = torch.Generator().manual_seed(seed)
    hidden = cell.hidden_size
    size = (T, B, 3 * hidden)
    signs = torch.randint(0, 2, size, generator=g).mul(2).sub(1)
    x_proj = magnitude * torch.empty(size, dtype=dtype).uniform_(1, 10, generator=g) * signs
    return x_proj.requires_grad_(), torch.randn(B, hidden, generator=g, dtype=dtype).requires_grad_()


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("lengths", [None, PADDED, [0, 7, 2]], ids=["full", "padded", "with-empty"])
@pytest.mark.parametrize("parts", [(1, 1), (1, 0), (0, 1)], ids=["all", "outputs", "final"])
def test_equals_cell_loop_values_and_gradients(reset_after, lengths, parts):
    cell = make_cell(reset_after)
    x_proj, h0 = inputs(cell, magnitude=0.2)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected = values_and_grads(cell, cell_loop, x_proj, h0, lengths, parts)
    got = values_and_grads(cell, run_kernel, x_proj, h0, lengths, parts)
    assert_same(got, expected, 1e-5, 1e-6)


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("magnitude", [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4])
def test_every_magnitude_of_preactivation_equals_the_cell(reset_after, dtype, magnitude):
    cell = make_cell(reset_after, dtype, hidden=8)
    x_proj, h0 = inputs(cell, magnitude, dtype, T=6)
    lengths = torch.tensor([6, 4, 5])
    expected = values_and_grads(cell, cell_loop, x_proj, h0, lengths)
    got = values_and_grads(cell, run_kernel, x_proj, h0, lengths)
    assert all(torch.isfinite(v).all() for v in expected.values())
    assert_same(got, expected, *TOLERANCE[dtype])


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("special", [float("inf"), -float("inf"), float("nan")], ids=["+inf", "-inf", "nan"])
@pytest.mark.parametrize("gate", range(3), ids=["r", "z", "n"])
def test_inf_and_nan_preactivations_behave_as_torch(reset_after, special, gate):
    cell = make_cell(reset_after, hidden=8)
    x_proj, h0 = inputs(cell, 0.3, T=5)
    with torch.no_grad():
        x_proj[2, 1, gate * 8 + 3] = special
    expected = values_and_grads(cell, cell_loop, x_proj, h0, None)
    got = values_and_grads(cell, run_kernel, x_proj, h0, None)
    if special != special:
        assert expected["outputs"][2:, 1].isnan().any() and not expected["outputs"][:, 0].isnan().any()
    assert_same(got, expected, 1e-5, 1e-5)


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "padded"])
def test_gradcheck_float64(reset_after, lengths):
    cell = make_cell(reset_after, torch.float64)
    x_proj, h0 = inputs(cell, 0.5, torch.float64, T=4)
    lengths = None if lengths is None else torch.tensor(lengths)
    params = [p.detach().clone().requires_grad_() for p in (cell.weight_hh, cell.bias_hh)]

    def f(x_proj, h0, weight_hh, bias_hh):
        return fast_gru.gru_sequence(x_proj, h0, weight_hh, bias_hh, lengths, reset_after)

    assert torch.autograd.gradcheck(f, (x_proj, h0, *params))


@pytest.mark.parametrize("reset_after", FORMS)
def test_multithreaded_row_blocks_equal_the_cell(reset_after):
    # large enough for the rows to split across two threads (each block runs in its own thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cell = make_cell(reset_after, hidden=64)
        x_proj, h0 = inputs(cell, 0.3, T=6, B=130)
        lengths = torch.randint(0, 7, (130,), generator=torch.Generator().manual_seed(5))
        expected = values_and_grads(cell, cell_loop, x_proj, h0, lengths)
        got = values_and_grads(cell, run_kernel, x_proj, h0, lengths)
    finally:
        torch.set_num_threads(threads)
    assert_same(got, expected, 1e-4, 1e-5)


@pytest.mark.parametrize("reset_after", FORMS)
def test_retained_graph_backward_twice_gives_the_same_gradients(reset_after):
    cell = make_cell(reset_after)
    x_proj, h0 = inputs(cell)
    out, h_T = run_kernel(cell, x_proj, h0, torch.tensor(PADDED))
    loss = out.square().sum() + h_T.sum()
    first = torch.autograd.grad(loss, [x_proj, h0, *cell.parameters()][:4], retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(loss, [x_proj, h0, *cell.parameters()][:4], allow_unused=True)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_what_the_kernel_cannot_run_is_refused_clearly():
    cell = make_cell(True)
    x_proj, h0 = inputs(cell)
    with pytest.raises(RuntimeError, match="float32/float64 CPU tensors, got torch.bfloat16"):
        fast_gru.gru_sequence(x_proj.bfloat16(), h0.bfloat16(), cell.weight_hh.bfloat16(), cell.bias_hh.bfloat16())


def test_without_the_kernel_the_refusal_names_why_with_its_whole_message(monkeypatch):
    cell = make_cell(True)
    x_proj, h0 = inputs(cell)
    monkeypatch.setattr(fast_gru, "available", lambda: False)
    with pytest.raises(RuntimeError) as refused:
        fast_gru.gru_sequence(x_proj, h0, cell.weight_hh, cell.bias_hh)
    assert str(refused.value) == ("the C++ GRU kernel is unavailable (RNNBENCH_NO_CPP set, or no compiler: "
                                  "see the warning)")


@needs_compiler
def test_the_default_form_is_the_reset_after_gru():
    cell = make_cell(True)  # torch's and cuDNN's form: r ⊙ (U_h h + b_h); Cho's differs in every step
    x_proj, h0 = inputs(cell)
    torch.testing.assert_close(fast_gru.gru_sequence(x_proj, h0, cell.weight_hh, cell.bias_hh),
                               cell_loop(cell, x_proj, h0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "cho"])
def test_x_proj_is_overwritten_only_when_the_caller_gives_it_away(reset_after):
    # overwrite_x_proj: the kernel keeps its gates in x_proj's memory; the results are the same, and a
    # caller's x_proj is never touched without it
    torch.manual_seed(0)
    cell = GRUCell(4, 5, reset_after=reset_after)
    x, h0 = torch.randn(7, 3, 4), torch.randn(3, 5, requires_grad=True)
    results = {}
    for overwrite in (False, True):
        x_proj = cell.input_projection(x)
        kept = x_proj.detach().clone()
        out, h_T = fast_gru.gru_sequence(x_proj, h0, cell.weight_hh, cell.bias_hh, torch.tensor([7, 3, 5]),
                                         reset_after, overwrite_x_proj=overwrite)
        grads = torch.autograd.grad((out * out).sum() + h_T.sum(), [h0, *cell.parameters()])
        assert torch.equal(x_proj, kept) == (not overwrite)
        results[overwrite] = (out, h_T, *grads)
    for a, b in zip(results[False], results[True]):
        assert torch.equal(a, b)
