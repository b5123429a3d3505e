"""`rnnbench/kernels/scan.py`: the C++ scan and the PyTorch doubling scan equal the step-by-step recurrence
h_t = a_t ⊙ h_{t-1} + b_t, values and gradients, real and complex, with an initial state and padded batches."""

import warnings

import pytest
import torch

from rnnbench.kernels import scan

pytestmark = pytest.mark.skipif(not scan.kernel_available(), reason="C++ scan extension unavailable")

REAL = (torch.float32, torch.float64)
COMPLEX = (torch.complex64, torch.complex128)
TOL = {torch.float32: 2e-5, torch.float64: 1e-12, torch.complex64: 2e-5, torch.complex128: 1e-12}


def inputs(T, B, D, dtype, seed=0, contraction=0.95):
    """a with |a| < 1 (a stable recurrence), b and h0 standard normal; all require grad."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    if dtype.is_complex:
        radius = contraction * torch.rand(T, B, D, generator=g, dtype=real)
        phase = 6.28 * torch.rand(T, B, D, generator=g, dtype=real)
        a = torch.polar(radius, phase)
        b = torch.complex(torch.randn(T, B, D, generator=g, dtype=real), torch.randn(T, B, D, generator=g, dtype=real))
        h0 = torch.complex(torch.randn(B, D, generator=g, dtype=real), torch.randn(B, D, generator=g, dtype=real))
    else:
        a = contraction * (2 * torch.rand(T, B, D, generator=g, dtype=real) - 1)
        b, h0 = torch.randn(T, B, D, generator=g, dtype=real), torch.randn(B, D, generator=g, dtype=real)
    return [t.requires_grad_() for t in (a, b, h0)]


def values_and_grads(backend, a, b, h0, lengths=None, seed=1):
    out, final = scan.linear_scan(a, b, h0, lengths, backend=backend)
    g = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=g, dtype=out.real.dtype).to(out.dtype)
    w_fin = torch.randn(final.shape, generator=g, dtype=out.real.dtype).to(out.dtype)
    loss = (out * w_out).real.sum() + (final * w_fin).real.sum()
    grads = torch.autograd.grad(loss, (a, b, h0))
    return [out.detach(), final.detach(), *grads]


@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_scan_equals_the_recurrence_with_initial_state_and_padding(dtype, backend):
    a, b, h0 = inputs(37, 5, 6, dtype)
    lengths = torch.tensor([37, 20, 1, 0, 36])
    expected = values_and_grads("loop", a, b, h0, lengths)
    got = values_and_grads(backend, a, b, h0, lengths)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=TOL[dtype], rtol=TOL[dtype])
    out = scan.linear_scan(a, b, h0, lengths, backend=backend)[0]
    assert (out[20:, 1] == 0).all() and (out[:, 3] == 0).all()  # padded steps output exactly zero
    final = got[1]
    torch.testing.assert_close(final[3], h0[3].detach(), atol=0, rtol=0)  # length 0: the initial state


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_scan_gradcheck(dtype):
    a, b, h0 = inputs(6, 2, 3, dtype)
    assert torch.autograd.gradcheck(lambda a, b, h: scan.linear_scan(a, b, h, backend="cpp")[0], (a, b, h0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_scan_long_sequence_T2048(dtype):
    """T = 2,048 with |a| close to 1 (memory across the whole sequence): float32 errors stay at rounding level."""
    a, b, h0 = inputs(2048, 2, 8, dtype, contraction=0.999)
    expected = values_and_grads("loop", a, b, h0)
    for backend in ("cpp", "torch"):
        for e, g in zip(expected, values_and_grads(backend, a, b, h0)):
            torch.testing.assert_close(g, e, atol=5e-4, rtol=5e-4)


@pytest.mark.parametrize("form", [*scan.BACKENDS, "log_scan"])
def test_no_steps_give_the_initial_state_and_one_step_is_one_step_of_the_recurrence(form):
    """T = 0: no output, the final state is h0 and its gradient passes straight through; T = 1: h_0 = a_0 h0 + b_0.
    Every form special-cases them (the loop's empty stack, the doubling scan's h0 folded into step 0, the final
    state's out[-1]). The C++ path failed at T = 0 (its kernel takes T >= 1): it is not called there."""
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(1, 3, 4, generator=g, dtype=torch.float64) + 0.5).requires_grad_()  # positive: log_scan too
    b = (torch.rand(1, 3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    h0 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def run(a, b):
        if form == "log_scan":
            return scan.log_scan(a.log(), b.log(), h0)
        return scan.linear_scan(a, b, h0, backend=form)

    out, final = run(a[:0], b[:0])
    assert out.shape == (0, 3, 4) and torch.equal(final, h0)
    w = torch.randn(3, 4, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((final * w).sum(), h0)
    assert torch.equal(grad, w)
    out, final = run(a, b)
    one_step = a[0] * h0 + b[0]
    torch.testing.assert_close(out, one_step.unsqueeze(0), rtol=1e-12, atol=0)
    torch.testing.assert_close(final, one_step, rtol=1e-12, atol=0)


def test_scan_multi_dimensional_state_and_final_state():
    """(T, B, E, N) as S6 uses it: the same as the flattened (T, B, E·N) recurrence."""
    a, b, h0 = inputs(9, 3, 20, torch.float64)
    out, final = scan.linear_scan(a.view(9, 3, 4, 5), b.view(9, 3, 4, 5), h0.view(3, 4, 5), backend="cpp")
    ref = scan.scan_reference(a, b, h0)
    torch.testing.assert_close(out.reshape(9, 3, 20), ref)
    torch.testing.assert_close(final.reshape(3, 20), ref[-1])


def test_scan_extreme_inputs_propagate_like_the_recurrence():
    """inf and NaN travel exactly as the step-by-step products do (no hidden clamping), and saturated a = 1
    carries huge values without loss. The doubling scan forms products of a's the loop never forms, so an
    infinite a meets a partial zero sum there (inf·0 = NaN where the loop gives -inf): it is held to the
    loop on finite a only."""
    T, B, D = 6, 1, 5
    a = torch.ones(T, B, D)
    b = torch.zeros(T, B, D)
    h0 = torch.tensor([[1e30, 1.0, 0.0, 3.0, -2.0]])
    b[2, 0, 1] = float("inf")
    b[3, 0, 2] = float("nan")
    a[1, 0, 3] = 0.0                    # forgets: state 3 restarts from b
    a[4, 0, 4] = float("inf")           # -2 * inf = -inf from step 4 on
    for backend in ("cpp", "torch"):
        out, final = scan.linear_scan(a, b, h0, backend=backend)
        ref = scan.scan_reference(a, b, h0)
        if backend == "torch":
            out, ref = out[..., :4], ref[..., :4]
        torch.testing.assert_close(out, ref, equal_nan=True)
        assert out[-1, 0, 0] == 1e30 and out[1:, 0, 3].eq(0).all()
        assert out[2:, 0, 1].isinf().all() and out[3:, 0, 2].isnan().all()
    assert scan.linear_scan(a, b, h0, backend="cpp")[0][4:, 0, 4].eq(float("-inf")).all()


def test_scan_gradient_of_a_nan_step_stays_local():
    """A NaN in b at step t poisons the gradient of a_s and h0 for s <= t only through the path that reads it."""
    a, b, h0 = inputs(8, 1, 2, torch.float64)
    with torch.no_grad():
        b[5, 0, 0] = float("nan")
    got = values_and_grads("cpp", a, b, h0)
    expected = values_and_grads("loop", a, b, h0)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, equal_nan=True)
    assert got[2][:, 0, 1].isfinite().all()  # the other column never meets the NaN


def test_log_space_scan_equals_the_recurrence_for_positive_coefficients():
    """Heinsen's formulation (minGRU/minLSTM's log-space form) with a non-zero initial state of any sign."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 3, 4, generator=g, dtype=torch.float64) * 0.9 + 0.05
    b = torch.rand(50, 3, 4, generator=g, dtype=torch.float64) + 0.1
    h0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(scan.scan_log_space(a.log(), b.log(), h0), scan.scan_reference(a, b, h0))


def test_other_dtypes_fall_back_to_torch_with_one_warning():
    a, b, h0 = (t.detach().to(torch.bfloat16) for t in inputs(5, 2, 3, torch.float32))
    scan._warn_once_fallback.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = scan.linear_scan(a, b, h0)
        scan.linear_scan(a, b, h0)
    assert [str(w.message) for w in caught if "C++ scan" in str(w.message)] == [
        "scan backend=auto: the C++ scan runs float32/float64/complex on CPU only (and when built); "
        "torch.bfloat16 on cpu runs the PyTorch doubling scan"]
    torch.testing.assert_close(out.float(), scan.scan_reference(a.float(), b.float(), h0.float()), atol=0.1, rtol=0.05)


@pytest.fixture
def forms_run(monkeypatch):
    """The names of the scan forms `linear_scan` calls, in order (each still computes)."""
    ran = []
    for name in ("scan_reference", "scan_doubling", "scan_kernel"):
        form = getattr(scan, name)
        monkeypatch.setattr(scan, name, lambda *args, form=form, name=name: ran.append(name) or form(*args))
    return ran


def test_each_backend_runs_its_form_and_auto_the_cpp_kernel_where_it_fits(forms_run):
    """loop: the reference, torch: the doubling scan, cpp: the C++ kernel; auto: the C++ kernel on CPU
    float32/float64/complex tensors of one dtype, else the doubling scan."""
    a, b, h0 = (t.detach() for t in inputs(5, 2, 3, torch.float32))
    ca, cb, ch0 = (t.detach() for t in inputs(5, 2, 3, torch.complex128))
    cases = [("loop", (a, b, h0), "scan_reference"), ("torch", (a, b, h0), "scan_doubling"),
             ("cpp", (a, b, h0), "scan_kernel"), ("auto", (a, b, h0), "scan_kernel"),
             ("auto", (ca, cb, ch0), "scan_kernel"), ("auto", (a.double(), b.double(), h0.double()), "scan_kernel"),
             ("auto", (a.double(), b, h0), "scan_doubling"), ("auto", (a, b, h0.double()), "scan_doubling"),
             ("auto", (a.bfloat16(), b.bfloat16(), h0.bfloat16()), "scan_doubling")]
    for backend, tensors, form in cases:
        forms_run.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan.linear_scan(*tensors, backend=backend)
        assert forms_run == [form], (backend, [t.dtype for t in tensors])


def test_without_the_cpp_kernel_auto_runs_the_doubling_scan_and_cpp_is_refused_whole(forms_run, monkeypatch):
    a, b, h0 = (t.detach() for t in inputs(4, 2, 3, torch.float32))
    assert scan.fused_fits(a) and not scan.fused_fits(a.bfloat16()) and not scan.fused_fits(a.half())
    monkeypatch.setenv("RNNBENCH_NO_CPP", "1")
    assert not scan.kernel_available() and not scan.fused_fits(a)
    scan.linear_scan(a, b, h0)
    assert forms_run == ["scan_doubling"]
    with pytest.raises(RuntimeError) as refused:
        scan.linear_scan(a, b, h0, backend="cpp")
    assert str(refused.value) == ("scan backend='cpp': the C++ extension is unavailable "
                                  "(RNNBENCH_NO_CPP, or no compiler)")


def test_the_torch_forms_run_forward_and_backward_on_the_device_of_their_inputs():
    """The doubling scan, the loop and the log-space scan on any device (the meta device stands in for a GPU),
    with the padding mask made there; lengths on the CPU, as the models pass them."""
    T, B, D = 5, 3, 2
    a, b = (torch.zeros(T, B, D, device="meta", requires_grad=True) for _ in range(2))
    h0 = torch.zeros(B, D, device="meta", requires_grad=True)
    lengths = torch.tensor([5, 2, 0])
    for run in (lambda: scan.linear_scan(a, b, h0, lengths, backend="torch"),
                lambda: scan.linear_scan(a, b, h0, lengths, backend="loop"),
                lambda: scan.log_scan(a, b, h0, lengths)):
        out, final = run()
        assert out.device.type == final.device.type == "meta"
        grads = torch.autograd.grad(out.sum() + final.sum(), (a, b, h0))
        assert {g.device.type for g in grads} == {"meta"}


def test_log_space_scan_without_an_initial_state_starts_from_zero():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(7, 2, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05
    b = torch.rand(7, 2, 3, generator=g, dtype=torch.float64) + 0.1
    h0 = torch.zeros(2, 3, dtype=torch.float64)
    torch.testing.assert_close(scan.scan_log_space(a.log(), b.log()), scan.scan_reference(a, b, h0))


def test_bad_backend_is_named():
    a, b, h0 = inputs(3, 1, 1, torch.float32)
    with pytest.raises(ValueError, match="backend='gpu'.*allowed auto, cpp, torch, loop"):
        scan.linear_scan(a, b, h0, backend="gpu")
    with pytest.raises(ValueError, match="needs CPU float32/float64/complex"):
        scan.linear_scan(a.half(), b.half(), h0.half(), backend="cpp")


@pytest.mark.parametrize("gates", [2, 3])
def test_fused_min_rnn_saturates_and_propagates_like_the_equations(gates):
    """minGRU (2 gates) / minLSTM (3) fused kernel on pre-activations ±1e5, ±inf and a NaN: the same values
    and gradients as the cell's step loop (the σ of common.h saturates exactly like torch's)."""
    from rnnbench.modules import modern_cells as mc
    from rnnbench.modules.recurrent import run_explicit

    cell = (mc.MinGRUCell if gates == 2 else mc.MinLSTMCell)(1, 4).double()
    g = torch.Generator().manual_seed(0)
    x_proj = torch.randn(6, 2, gates * 4, generator=g, dtype=torch.float64)
    x_proj[1, 0, 0], x_proj[2, 0, 1], x_proj[3, 1, 0] = 1e5, -1e5, float("inf")
    x_proj[4, 1, 1] = float("-inf")
    x_proj[2, 1, (gates - 1) * 4 + 2] = float("nan")                      # a candidate h̃: column 2 of row 1
    h0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    lengths = torch.tensor([6, 5])

    def explicit(x_proj, h0):
        cell.input_projection = lambda x: x                               # x_proj is the input here
        return run_explicit(cell, x_proj, (h0,), lengths)

    results = []
    for run in (explicit, lambda x, h: (lambda o, f: (o, (f,)))(*scan.min_rnn(x, h, lengths))):
        x = x_proj.clone().requires_grad_()
        h = h0.clone().requires_grad_()
        out, (final,) = run(x, h)
        out.nansum().backward()
        results.append((out.detach(), final.detach(), x.grad, h.grad))
    # the explicit loop zeroes a padded output by multiplying with the mask, and still runs the step there: with
    # a NaN state, NaN · 0 = NaN in the output and in that step's input gradient; the kernel writes 0 to both
    assert (results[1][0][5, 1] == 0).all() and (results[1][2][5, 1] == 0).all()
    results[0][0][5, 1] = results[0][2][5, 1] = 0
    for e, got in zip(*results):
        torch.testing.assert_close(got, e, equal_nan=True)
    assert results[1][0][2:5, 1, 2].isnan().all() and results[1][0][:, 0].isfinite().all()
