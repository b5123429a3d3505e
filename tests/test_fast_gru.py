"""fast_gru computes exactly GRUCell's function (both forms), with exact gradients, padded or not, at every
magnitude of pre-activation; the layer falls back where the kernel cannot run."""

import types

import pytest
import torch

from rnnbench.kernels import fast_gru
from rnnbench.modules.cells import GRUCell
from test_fast_peephole import DTYPES, assert_close_to_scale, layer_step_peaks, needs_compiler

pytestmark = needs_compiler

T, B, I, H = 7, 3, 4, 5
PADDED = [7, 3, 5]
FORMS = [pytest.param(True, id="reset_after"), pytest.param(False, id="cho")]
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


def make_cell(reset_after, dtype=torch.float32, seed=0, hidden=H, input_size=I):
    torch.manual_seed(seed)
    cell = GRUCell(input_size, hidden, reset_after=reset_after).to(dtype)
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


# -- the input projection inside the kernel (issue 26): cell_sequence hands the kernel x and W_ih ----------
# x_t W_ih^T + b_ih is a GEMM of each step into the row block's buffer; ∂L/∂W_ih and ∂L/∂b_ih are the
# kernel's, ∂L/∂x is projection.InputProjection's. Specification: the cell's step loop on its own projection.

def fused_and_cell_loop(cell, x, h0, lengths=None):
    """(values and gradients of fast_gru.cell_sequence, the same of the cell's step loop): outputs, h_T and the
    gradients of x, h0 and every parameter requiring one, of a loss weighting each output element differently."""
    def run(fn):
        out, h_T = fn()
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, h_T))
        asked = [(n, t) for n, t in [("x", x), ("h0", h0), *cell.named_parameters()] if t.requires_grad]
        grads = torch.autograd.grad(loss, [t for _, t in asked])
        return {"outputs": out, "h_T": h_T, **{f"grad {n}": g for (n, _), g in zip(asked, grads)}}

    return (run(lambda: fast_gru.cell_sequence(cell, x, h0, lengths)),
            run(lambda: cell_loop(cell, cell.input_projection(x), h0, lengths)))


def gru_inputs(reset_after, dtype=torch.float32, T=T, B=B, I=I, hidden=H):
    cell = make_cell(reset_after, dtype, hidden=hidden, input_size=I)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(T, B, I, generator=g, dtype=dtype).requires_grad_()
    return cell, x, torch.randn(B, hidden, generator=g, dtype=dtype).requires_grad_()


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [None, PADDED, [0, 7, 2]], ids=["full", "padded", "with-empty"])
def test_fused_projection_equals_the_cell_loop(reset_after, dtype, lengths):
    cell, x, h0 = gru_inputs(reset_after, dtype)
    lengths = None if lengths is None else torch.tensor(lengths)
    got, expected = fused_and_cell_loop(cell, x, h0, lengths)
    assert {"grad x", "grad weight_ih", "grad bias_ih"} <= set(got)
    assert_close_to_scale(got, expected, dtype)
    if lengths is not None:  # a padded step's input is never read: its gradient is exactly zero
        for b, n in enumerate(lengths.tolist()):
            assert (got["grad x"][n:, b] == 0).all() and (got["outputs"][n:, b] == 0).all()


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [2.0 ** -10, 1.0, 2.0 ** 10, 2.0 ** 20])
def test_fused_projection_saturates_as_the_cell(reset_after, dtype, magnitude):
    # x = ±magnitude, W_ih in multiples of 1/8: W x_t exact in any order (test_fast_peephole's twin)
    cell, _, h0 = gru_inputs(reset_after, dtype, T=6, hidden=8)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.randint(-4, 5, cell.weight_ih.shape) / 8)
    x = (magnitude * torch.randint(0, 2, (6, B, I)).mul(2).sub(1)).to(dtype).requires_grad_()
    got, expected = fused_and_cell_loop(cell, x, h0, torch.tensor([6, 4, 5]))
    assert all(torch.isfinite(v).all() for v in expected.values())
    assert_close_to_scale(got, expected, dtype)


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("special", [float("inf"), -float("inf"), float("nan")], ids=["+inf", "-inf", "nan"])
@pytest.mark.parametrize("step", [2, 5], ids=["in-the-sequence", "past-its-end"])
def test_fused_projection_inf_and_nan_inputs_behave_as_the_cell(reset_after, special, step):
    # as test_fast_peephole's twin: inside the sequence as the equations give it; past its end (row 1, length 4)
    # never read, the results of a 0 there but for 0 · inf = NaN in that feature's column of ∂L/∂W_ih
    cell, x, h0 = gru_inputs(reset_after, hidden=8)
    lengths = torch.tensor([7, 4 if step == 5 else 7, 6])
    x_special = x.detach().clone()
    x_special[step, 1, 3] = special
    got, expected = fused_and_cell_loop(cell, x_special.requires_grad_(), h0, lengths)
    if step == 5:
        _, expected = fused_and_cell_loop(cell, x, h0, lengths)
        assert got["grad weight_ih"][:, 3].isnan().all()
        for grads in (got, expected):
            grads["grad weight_ih"] = grads["grad weight_ih"][:, :3]
    assert expected["outputs"][:, [0, 2]].isfinite().all()
    assert_close_to_scale(got, expected, torch.float32)


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "padded"])
def test_fused_projection_gradcheck_float64(reset_after, lengths):
    cell, x, h0 = gru_inputs(reset_after, torch.float64, T=4)
    names = [n for n, _ in cell.named_parameters()]

    def f(x, h0, *params):
        tensors = types.SimpleNamespace(reset_after=reset_after, **dict(zip(names, params)))
        return fast_gru.cell_sequence(tensors, x, h0, lengths and torch.tensor(lengths))

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("input_size", [4, 700], ids=["per-step-weight-grad", "one-matmul-weight-grad"])
def test_fused_projection_multithreaded_row_blocks_and_both_input_weight_sums(reset_after, threads, input_size):
    # 130 rows at H=64: two row blocks on two threads, each with its own ∂L/∂W_ih partial sum (I = 4), or
    # one matmul after the loop (I = 700: its per-thread sum 3H x I would exceed 256 KiB)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cell, x, h0 = gru_inputs(reset_after, T=6, B=130, I=input_size, hidden=64)
        got, expected = fused_and_cell_loop(cell, x, h0, torch.randint(0, 7, (130,)))
    finally:
        torch.set_num_threads(before)
    assert_close_to_scale(got, expected, torch.float32)


@pytest.mark.parametrize("frozen", ["input", "weight_ih", "bias_ih", "weight_hh"])
def test_fused_projection_gives_each_gradient_asked_for_alone(frozen):
    cell, x, h0 = gru_inputs(True)
    (x if frozen == "input" else getattr(cell, frozen)).requires_grad_(False)
    got, expected = fused_and_cell_loop(cell, x, h0, torch.tensor(PADDED))
    assert_close_to_scale(got, expected, torch.float32)
    assert ("grad x" in got) == (frozen != "input") and (f"grad {frozen}" not in got)


@pytest.mark.parametrize("reset_after", FORMS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
def test_fused_projection_peak_memory_is_no_more_than_with_x_proj_made_first(reset_after, bidirectional, monkeypatch):
    """test_fast_peephole's twin: no (T, B, 3H) buffer is added."""
    def x_proj_first(cell, x, h0, lengths=None):
        return fast_gru.gru_sequence(cell.input_projection(x), h0, cell.weight_hh, cell.bias_hh, lengths,
                                     cell.reset_after, overwrite_x_proj=True)

    fused, before, allowance = layer_step_peaks(lambda i, h: GRUCell(i, h, reset_after=reset_after), bidirectional,
                                                monkeypatch, fast_gru, x_proj_first, G=3)
    assert fused <= before + allowance, (fused, before)
