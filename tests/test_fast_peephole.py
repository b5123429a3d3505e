"""fast_peephole computes exactly PeepholeLSTMCell's function, with exact gradients, on both implementations,
for every variant it covers (Greff et al. 2016's LSTM family but fgr).

The C++ tests build the extension once per machine (~30 s the first time; cached afterwards) and are
skipped only where no C++ compiler exists.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from rnnbench.kernels import extension, fast_peephole
from rnnbench.modules.cells import LSTM_VARIANTS, PeepholeLSTMCell

T, B, I, H = 7, 3, 4, 5
PADDED = [7, 3, 5]
VARIANTS = fast_peephole.KERNEL_VARIANTS

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None or
                                    os.environ.get("RNNBENCH_NO_CPP", "") not in ("", "0"),
                                    reason="no C++ compiler (or RNNBENCH_NO_CPP set)")
BACKENDS = [pytest.param("cpp", marks=needs_compiler), "python"]


def make_inputs(dtype=torch.float32, seed=0, T=T, B=B, variant="vanilla"):
    torch.manual_seed(seed)
    cell = PeepholeLSTMCell(I, H, variant=variant).to(dtype)
    with torch.no_grad():  # larger than the init so that every term, peepholes included, matters
        for p in cell.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(T, B, I, dtype=dtype)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    return cell, x, h0, c0


def cell_loop(cell, x_proj, h0, c0, lengths=None, h_probe=None):
    """The specification: PeepholeLSTMCell.step for t = 0..T-1; finished sequences keep their state and
    output zero; the probe is added to h_t."""
    state, outputs = (h0, c0), []
    for t, x_t in enumerate(x_proj.unbind(0)):
        h, (_, c) = cell.step(x_t, state)
        if h_probe is not None:
            h = h + h_probe[t]
        if lengths is None:
            state = (h, c)
        else:
            valid = (t < lengths).unsqueeze(1)                                # (B, 1)
            state = (torch.where(valid, h, state[0]), torch.where(valid, c, state[1]))
            h = torch.where(valid, h, torch.zeros_like(h))
        outputs.append(h)
    return torch.stack(outputs), state[0], state[1]


def run_fast(cell, x_proj, h0, c0, backend, lengths=None, **kw):
    return fast_peephole.peephole_sequence(x_proj, h0, c0, cell.weight_hh, cell.bias_hh,
                                           getattr(cell, "peephole", None), lengths=lengths, backend=backend,
                                           variant=cell.variant, **kw)


def loss_and_grads(run, cell, x, h0, c0, parts):
    """A loss weighting every output element differently; gradients of everything that has one."""
    x_proj = cell.input_projection(x)
    out, h_T, c_T = run(x_proj)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in (out, h_T, c_T)]
    loss = sum((t * w).sum() for t, w, used in zip((out, h_T, c_T), weights, parts) if used)
    tensors = [x_proj, h0, c0, *cell.parameters()]
    grads = torch.autograd.grad(loss, tensors)
    return (out, h_T, c_T), dict(zip(["x_proj", "h0", "c0"] + [n for n, _ in cell.named_parameters()], grads))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, PADDED], ids=["full", "padded"])
@pytest.mark.parametrize("parts", [(1, 1, 1), (1, 0, 0), (0, 1, 1)], ids=["all", "outputs", "final"])
def test_equals_cell_loop_values_and_gradients(variant, backend, lengths, parts):
    cell, x, h0, c0 = make_inputs(variant=variant)
    lengths = None if lengths is None else torch.tensor(lengths)
    expected, expected_grads = loss_and_grads(lambda xp: cell_loop(cell, xp, h0, c0, lengths), cell, x, h0, c0,
                                              parts)
    got, got_grads = loss_and_grads(lambda xp: run_fast(cell, xp, h0, c0, backend, lengths), cell, x, h0, c0,
                                    parts)
    for name, a, b in zip(["outputs", "h_T", "c_T"], got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert set(got_grads) == {"x_proj", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"} | (
        {"peephole"} if cell.switches.peepholes else set())
    for name in got_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [PADDED, [0, 7, 2]], ids=["7-3-5", "with-empty"])
def test_padding_zero_outputs_and_state_at_true_end(variant, backend, lengths):
    cell, x, h0, c0 = make_inputs(variant=variant)
    lengths = torch.tensor(lengths)
    with torch.no_grad():
        out, h_T, c_T = run_fast(cell, cell.input_projection(x), h0, c0, backend, lengths)
        for b, n in enumerate(lengths.tolist()):
            assert (out[n:, b] == 0).all(), f"sequence {b}: padded outputs must be exactly zero"
            if n == 0:  # an empty sequence ends where it starts
                h_alone, c_alone = h0[b:b + 1], c0[b:b + 1]
            else:  # the same sequence alone, unpadded
                alone, h_alone, c_alone = cell_loop(cell, cell.input_projection(x[:n, b:b + 1]), h0[b:b + 1],
                                                    c0[b:b + 1])
                torch.testing.assert_close(out[:n, b:b + 1], alone, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(h_T[b:b + 1], h_alone, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c_T[b:b + 1], c_alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "padded"])
def test_gradcheck_float64(variant, backend, lengths):
    cell, _, _, _ = make_inputs(torch.float64, T=4, variant=variant)
    lengths = None if lengths is None else torch.tensor(lengths)
    g = torch.Generator().manual_seed(2)
    x_proj, h0, c0 = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                      for s in [(4, B, cell.gates * H), (B, H), (B, H)])
    probe = torch.zeros(4, B, H, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in (cell.weight_hh, cell.bias_hh)]
    peephole = cell.peephole.detach().clone().requires_grad_() if cell.switches.peepholes else None

    def f(x_proj, h0, c0, weight_hh, bias_hh, h_probe, peephole=None):
        return fast_peephole.peephole_sequence(x_proj, h0, c0, weight_hh, bias_hh, peephole, lengths=lengths,
                                               h_probe=h_probe, backend=backend, variant=variant)

    # every element for vanilla; torch's fast mode (random directions) for the other variants keeps the suite
    # quick: their gradients are also compared element by element with the cell's autograd above
    assert torch.autograd.gradcheck(f, (x_proj, h0, c0, *params, probe, *([peephole] if peephole is not None else [])),
                                    fast_mode=variant != "vanilla")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, PADDED], ids=["full", "padded"])
def test_probe_gradient_is_total_dL_dh_t(variant, backend, lengths):
    cell, x, h0, c0 = make_inputs(variant=variant)
    lengths = None if lengths is None else torch.tensor(lengths)
    x_proj = cell.input_projection(x).detach()
    w = torch.randn(T, B, H)

    def probe_grad(run):
        probe = torch.zeros(T, B, H, requires_grad=True)
        out, h_T, c_T = run(probe)
        ((out * w).sum() + h_T.sum() + 2 * c_T.sum()).backward()
        return probe.grad

    expected = probe_grad(lambda p: cell_loop(cell, x_proj, h0, c0, lengths, p))
    got = probe_grad(lambda p: run_fast(cell, x_proj, h0, c0, backend, lengths, h_probe=p))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert expected[1:].abs().sum() > 0  # the gradient carried back through time is part of it
    # probe=True makes the probe itself
    out, h_T, c_T, probe = run_fast(cell, x_proj, h0, c0, backend, lengths, probe=True)
    ((out * w).sum() + h_T.sum() + 2 * c_T.sum()).backward()
    torch.testing.assert_close(probe.grad, expected, rtol=1e-5, atol=1e-6)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_cpp_multithreaded_blocks_equal_python(variant, dtype):
    # large enough for the C++ loops to split the batch across threads (each block runs in its own thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(3)
        cell = PeepholeLSTMCell(I, 64, variant=variant).to(dtype)
        x = torch.randn(6, 130, I, dtype=dtype)
        h0 = torch.randn(130, 64, dtype=dtype, requires_grad=True)
        c0 = torch.randn(130, 64, dtype=dtype, requires_grad=True)
        lengths = torch.randint(0, 7, (130,))
        results = {}
        for backend in ("cpp", "python"):
            probe = torch.zeros(6, 130, 64, dtype=dtype, requires_grad=True)
            out, h_T, c_T = run_fast(cell, cell.input_projection(x), h0, c0, backend, lengths, h_probe=probe)
            inputs = [h0, c0, probe, *cell.parameters()]
            results[backend] = (out, h_T, c_T, *torch.autograd.grad(out.sum() + h_T.sum() + c_T.sum(), inputs))
    finally:
        torch.set_num_threads(threads)
    # A parameter's gradient is a sum over 130 x 6 terms whose order differs between the two backends, so
    # its rounding error scales with the tensor's magnitude, not with each entry: an entry near zero that
    # is the difference of large terms (seen: 0.025 in a weight_hh gradient up to 114) can differ in its
    # 4th digit in float32. The tolerance is therefore relative to the largest entry (a few float32 ulps
    # of it); float64, where the same sums agree to ~1e-13, shows the kernel computes the same function.
    ulps = 1e-6 if dtype == torch.float32 else 1e-12
    for a, b in zip(results["cpp"], results["python"]):
        torch.testing.assert_close(a, b, rtol=ulps * 100, atol=ulps * float(b.detach().abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_retained_graph_backward_twice_gives_the_same_gradients(backend):
    # the C++ backward overwrites its saved gates with δa unless the graph is retained
    cell, x, h0, c0 = make_inputs()
    out, h_T, c_T = run_fast(cell, cell.input_projection(x), h0, c0, backend, torch.tensor(PADDED))
    loss = out.square().sum() + h_T.sum() + c_T.sum()
    first = torch.autograd.grad(loss, [h0, c0, *cell.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [h0, c0, *cell.parameters()])
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        torch.autograd.grad(loss, [h0])


@pytest.fixture
def fresh_extension_cache():
    extension.load.cache_clear()
    yield
    extension.load.cache_clear()


def test_a_build_says_so_before_it_starts_and_a_cached_one_is_silent(monkeypatch, tmp_path, fresh_extension_cache,
                                                                      caplog):
    """The build of a kernel (once per machine, a minute or more) is announced; loading it later is not."""
    def build(name, build_dir, source):
        assert "building the C++ kernel 'peephole' (once per machine, ~" in caplog.text  # said first
        library = build_dir / f"{name}.so"
        library.parent.mkdir(parents=True, exist_ok=True)
        library.write_bytes((Path(real_library).read_bytes()))
        return "built"

    real_library = extension.load("peephole").__file__  # the machine's own cached build
    extension.load.cache_clear()
    monkeypatch.delenv("RNNBENCH_NO_CPP", raising=False)
    monkeypatch.setattr(extension, "_build_dir", lambda: tmp_path)
    monkeypatch.setattr(extension, "_compile_extension", build)
    with caplog.at_level("INFO", logger="rnnbench"):
        assert extension.load("peephole") == "built"
        assert f"min; cached in {tmp_path})" in caplog.text
        caplog.clear()
        extension.load.cache_clear()
        assert extension.load("peephole") is not None  # loaded from tmp_path, without a word
        assert "building" not in caplog.text


def test_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path, fresh_extension_cache):
    def broken_build(name, build_dir, source):
        raise RuntimeError("simulated: no working C++ compiler")

    monkeypatch.delenv("RNNBENCH_NO_CPP", raising=False)
    monkeypatch.setattr(extension, "_build_dir", lambda: tmp_path)  # no cached library to load
    monkeypatch.setattr(extension, "_compile_extension", broken_build)
    monkeypatch.setattr(extension, "_warned", False)
    with pytest.warns(RuntimeWarning, match="simulated: no working C\\+\\+ compiler"):
        assert fast_peephole.implementation() == "python"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later calls are silent
        assert not fast_peephole.cpp_available()
        cell, x, h0, c0 = make_inputs()
        x_proj = cell.input_projection(x)
        got = run_fast(cell, x_proj, h0, c0, "auto", torch.tensor(PADDED))
    expected = cell_loop(cell, x_proj, h0, c0, torch.tensor(PADDED))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    message = "backend='cpp': the C++ extension could not be built (see the warning)"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        run_fast(cell, x_proj, h0, c0, "cpp")


def test_env_var_forces_python(monkeypatch):
    monkeypatch.setenv("RNNBENCH_NO_CPP", "1")
    assert fast_peephole.implementation() == "python"
    assert not fast_peephole.cpp_available()
    cell, x, h0, c0 = make_inputs()
    message = "backend='cpp' while RNNBENCH_NO_CPP is set"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        run_fast(cell, cell.input_projection(x), h0, c0, "cpp")


@needs_compiler
def test_cached_extension_loads_fast_in_a_new_process():
    assert fast_peephole.cpp_available()  # builds it if this is the first time
    code = ("import time, torch; from rnnbench.kernels import fast_peephole as f; t = time.perf_counter(); "
            "ok = f.cpp_available(); print(ok, time.perf_counter() - t)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ok, seconds = result.stdout.split()
    assert ok == "True" and float(seconds) < 1.0, result.stdout + result.stderr


# -- extreme pre-activations: saturation, ±inf, NaN (issue 10, part 1) ---------------------------------

def extreme_inputs(magnitude, dtype, seed=4, T=6, B=3, H=8, variant="vanilla"):
    """x_proj (T, B, G·H) of the given magnitude (×U(1, 10), random signs) and a cell whose recurrent and
    peephole terms stay ordinary, so each gate's pre-activation has about that magnitude."""
    torch.manual_seed(seed)
    cell = PeepholeLSTMCell(I, H, variant=variant).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    size = (T, B, cell.gates * H)
    x_proj = magnitude * torch.empty(size, dtype=dtype).uniform_(1, 10) * torch.randint(0, 2, size).mul(2).sub(1)
    h0, c0 = torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)
    return cell, x_proj.requires_grad_(), h0.requires_grad_(), c0.requires_grad_()


def values_and_grads(cell, run, x_proj, h0, c0, lengths=None):
    out, h_T, c_T = run(x_proj, lengths)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, h_T, c_T))
    params = [cell.weight_hh, cell.bias_hh] + ([cell.peephole] if cell.switches.peepholes else [])
    grads = torch.autograd.grad(loss, [x_proj, h0, c0, *params])
    return dict(zip(["outputs", "h_T", "c_T", "grad x_proj", "grad h0", "grad c0", "grad weight_hh",
                     "grad bias_hh", "grad peephole"], (out, h_T, c_T, *grads)))


def assert_same(got, expected, rtol, atol):
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m: f"{name}: {m}")


DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12)}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4])
def test_every_magnitude_of_preactivation_equals_the_cell(variant, backend, dtype, magnitude):
    # Pre-activations from 1e-3 to 1e5 in magnitude, both signs: σ and tanh saturate to exactly 0/1/±1
    # as torch's do, values and gradients equal the equations (today's exp-based σ gave NaN past -88).
    cell, x_proj, h0, c0 = extreme_inputs(magnitude, dtype, variant=variant)
    lengths = torch.tensor([6, 4, 5])
    expected = values_and_grads(cell, lambda xp, n: cell_loop(cell, xp, h0, c0, n), x_proj, h0, c0, lengths)
    got = values_and_grads(cell, lambda xp, n: run_fast(cell, xp, h0, c0, backend, n), x_proj, h0, c0, lengths)
    assert all(torch.isfinite(v).all() for v in expected.values())
    assert_same(got, expected, *TOLERANCE[dtype])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_large_input_saturates_and_stays_finite(variant, backend):
    # The case: input 1000 at one step of a (T=10, B=3, I=4, H=8) sequence.
    torch.manual_seed(0)
    cell = PeepholeLSTMCell(4, 8, variant=variant)
    x = torch.randn(10, 3, 4)
    x[3, 1, 2] = 1000.0
    h0, c0 = torch.zeros(3, 8, requires_grad=True), torch.zeros(3, 8, requires_grad=True)
    x_proj = cell.input_projection(x)
    expected = values_and_grads(cell, lambda xp, n: cell_loop(cell, xp, h0, c0), x_proj, h0, c0)
    got = values_and_grads(cell, lambda xp, n: run_fast(cell, xp, h0, c0, backend), x_proj, h0, c0)
    assert all(torch.isfinite(v).all() for v in got.values())
    assert_same(got, expected, 1e-5, 1e-5)


VARIANT_GATES = [pytest.param(variant, k, id=f"{variant}-{gate}") for variant in VARIANTS
                 for k, gate in enumerate(fast_peephole.gate_layout(LSTM_VARIANTS[variant])[0])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [float("inf"), -float("inf"), float("nan")], ids=["+inf", "-inf", "nan"])
@pytest.mark.parametrize("variant,gate", VARIANT_GATES)
def test_inf_and_nan_preactivations_behave_as_torch(backend, dtype, special, variant, gate):
    # ±inf in one gate's pre-activation (one unit, one step, one row) of every gate each variant has: the
    # explicit path's torch.sigmoid and torch.tanh give exactly 0, 1 or ±1 there; NaN in gives NaN out, in
    # the same places, forward and backward (rows never mix before the weight gradient).
    cell, x_proj, h0, c0 = extreme_inputs(1.0, dtype, T=5, H=8, variant=variant)
    with torch.no_grad():
        x_proj[2, 1, gate * 8 + 3] = special
    expected = values_and_grads(cell, lambda xp, n: cell_loop(cell, xp, h0, c0), x_proj, h0, c0)
    got = values_and_grads(cell, lambda xp, n: run_fast(cell, xp, h0, c0, backend), x_proj, h0, c0)
    if special != special:  # NaN: it must reach the output, not be swallowed
        assert expected["outputs"][2:, 1].isnan().any() and not expected["outputs"][:, 0].isnan().any()
    assert_same(got, expected, *TOLERANCE[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("H", [8, 16, 37])  # AVX2 / AVX-512 / remainder lanes
def test_saturated_gates_hold_the_cell_exactly(backend, H):
    # i = σ(-1e4) = 0 and f = σ(1e4) = 1 exactly, as torch.sigmoid gives: the cell is held bit for bit over
    # 50 steps (a reciprocal estimate gave f = 0.99999994, a memory that decays).
    cell = PeepholeLSTMCell(I, H)
    x_proj = torch.zeros(50, 2, 4 * H)
    x_proj[:, :, :H], x_proj[:, :, H:2 * H] = -1e4, 1e4
    c0 = torch.randn(2, H)
    with torch.no_grad():
        _, _, c_T = run_fast(cell, x_proj, torch.randn(2, H), c0, backend)
    assert torch.equal(c_T, c0)


# -- the variants' layout and coverage ---------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_kernel_layout_is_the_cells_parameter_layout(variant):
    cell = PeepholeLSTMCell(I, H, variant=variant)
    assert fast_peephole.gate_layout(cell.switches) == (cell.gate_names, cell.peephole_names)


def test_fgr_is_refused_with_the_covered_list():
    cell = PeepholeLSTMCell(I, H, variant="fgr")
    x_proj = cell.input_projection(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="variant='fgr'.*covers vanilla, nig, nfg, nog, niaf, noaf, np, cifg"):
        fast_peephole.peephole_sequence(x_proj, *cell.default_state(B)[:2], cell.weight_hh, cell.bias_hh,
                                        cell.peephole, variant="fgr")
    assert "fgr" not in fast_peephole.KERNEL_VARIANTS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["vanilla", "cifg"])
def test_x_proj_is_overwritten_only_when_the_caller_gives_it_away(backend, variant):
    # overwrite_x_proj: the C++ kernel keeps its gates in x_proj's memory; the results are the same, and a
    # caller's x_proj is never touched without it
    cell, x, h0, c0 = make_inputs(variant=variant)
    lengths = torch.tensor(PADDED)
    results = {}
    for overwrite in (False, True):
        x_proj = cell.input_projection(x)
        kept = x_proj.detach().clone()
        out, h_T, c_T = fast_peephole.peephole_sequence(
            x_proj, h0, c0, cell.weight_hh, cell.bias_hh, getattr(cell, "peephole", None), lengths=lengths,
            backend=backend, variant=variant, overwrite_x_proj=overwrite)
        grads = torch.autograd.grad((out * out).sum() + h_T.sum() + c_T.sum(), [h0, c0, *cell.parameters()])
        assert torch.equal(x_proj, kept) == (not overwrite or backend == "python"), overwrite
        results[overwrite] = (out, h_T, c_T, *grads)
    for a, b in zip(results[False], results[True]):
        assert torch.equal(a, b)


# -- what the mutation run of the module found untested (docs/testing.md, "### `fast_peephole.py`") -------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["vanilla", "np", "cifg"])
def test_cell_sequence_runs_the_cells_own_tensors_with_lengths_and_probe(backend, variant, monkeypatch):
    """`cell_sequence` (what recurrent.py calls) is the cell's step loop on x itself: its projection, its
    U, b and peepholes, its variant, the padded lengths and the probe, on the backend asked for."""
    cell, x, h0, c0 = make_inputs(variant=variant)
    lengths = torch.tensor(PADDED)
    probe = torch.zeros(T, B, H, requires_grad=True)
    asked, choose = [], fast_peephole._loops
    monkeypatch.setattr(fast_peephole, "_loops", lambda backend, x_proj: asked.append(backend) or choose(backend, x_proj))
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0), lengths=lengths, backend=backend, h_probe=probe)
    assert asked == [backend]
    expected_probe = torch.zeros(T, B, H, requires_grad=True)
    expected = cell_loop(cell, cell.input_projection(x), h0, c0, lengths, expected_probe)
    for a, b in zip((out, h_T, c_T), expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    (out.sum() + h_T.sum()).backward()
    (expected[0].sum() + expected[1].sum()).backward()
    torch.testing.assert_close(probe.grad, expected_probe.grad, rtol=1e-5, atol=1e-6)


def test_implementation_names_what_auto_runs(monkeypatch):
    """'cpp' exactly when `backend="auto"` runs the C++ module on float32 CPU tensors, else 'python'."""
    cell, x, h0, c0 = make_inputs()
    for no_cpp in ("0", "1"):
        monkeypatch.setenv("RNNBENCH_NO_CPP", no_cpp)
        loops = fast_peephole._loops("auto", cell.input_projection(x))
        assert fast_peephole.implementation() == ("python" if loops is fast_peephole._PythonLoops else "cpp")
    assert fast_peephole.implementation() == "python"  # RNNBENCH_NO_CPP=1


def test_cell_sequence_on_its_defaults_is_the_full_length_loop_on_auto():
    cell, x, h0, c0 = make_inputs()
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0))
    for a, b in zip((out, h_T, c_T), cell_loop(cell, cell.input_projection(x), h0, c0)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_python_loops_run_forward_and_backward_on_the_device_of_their_inputs():
    """The reference runs on any device (the meta device stands in for a GPU), padding masks included."""
    cell = PeepholeLSTMCell(I, H).to("meta")
    x = torch.zeros(T, B, I, device="meta")
    h0, c0 = (torch.zeros(B, H, device="meta", requires_grad=True) for _ in range(2))
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0), lengths=torch.tensor(PADDED))
    assert {t.device.type for t in (out, h_T, c_T)} == {"meta"}
    (out.sum() + h_T.sum() + c_T.sum()).backward()
    assert {t.grad.device.type for t in (h0, c0, cell.weight_hh, cell.peephole)} == {"meta"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_sequence_passes_the_state_and_its_gradient_through(backend):
    """T = 0: h_T = h0 and c_T = c0, and a loss on either alone gives the other's initial state a zero
    gradient of its own shape, and U a zero one. (The Python backward failed here on reshaping h_{t-1}: its
    (h0, outputs[:-1]) held one step of T = 0.)"""
    cell, x, h0, c0 = make_inputs()
    x_proj = cell.input_projection(x[:0])
    for used in ("h", "c"):
        out, h_T, c_T = run_fast(cell, x_proj, h0, c0, backend)
        assert out.shape == (0, B, H) and torch.equal(h_T, h0) and torch.equal(c_T, c0)
        w = torch.randn(B, H)
        grad_h0, grad_c0, grad_u = torch.autograd.grad(((h_T if used == "h" else c_T) * w).sum(), [h0, c0, cell.weight_hh],
                                                       allow_unused=True)
        given, other = (grad_h0, grad_c0) if used == "h" else (grad_c0, grad_h0)
        assert torch.equal(given, w) and (other is None or torch.equal(other, torch.zeros(B, H)))
        assert grad_u is None or torch.equal(grad_u, torch.zeros_like(cell.weight_hh))  # no step ran


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, [1, 0, 1]], ids=["full", "padded"])
def test_a_single_step_is_the_cells_step(backend, lengths):
    cell, x, h0, c0 = make_inputs(T=1)
    lengths = None if lengths is None else torch.tensor(lengths)
    got = run_fast(cell, cell.input_projection(x), h0, c0, backend, lengths)
    for a, b in zip(got, cell_loop(cell, cell.input_projection(x), h0, c0, lengths)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frozen_recurrent_matrix_still_gives_the_other_gradients(backend):
    """U without requires_grad (a frozen layer): no gradient is computed for it, the others are the cell's."""
    cell, x, h0, c0 = make_inputs()
    cell.weight_hh.requires_grad_(False)
    x_proj = cell.input_projection(x)
    inputs = [h0, c0, cell.bias_hh, cell.peephole]
    expected = torch.autograd.grad(sum(t.sum() for t in cell_loop(cell, x_proj, h0, c0)), inputs)
    got = torch.autograd.grad(sum(t.sum() for t in run_fast(cell, x_proj, h0, c0, backend)), inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_peephole_sequence_on_its_defaults_is_the_vanilla_cell_on_auto():
    cell, x, h0, c0 = make_inputs()
    x_proj = cell.input_projection(x)
    got = fast_peephole.peephole_sequence(x_proj, h0, c0, cell.weight_hh, cell.bias_hh, cell.peephole)
    for a, b in zip(got, cell_loop(cell, x_proj, h0, c0)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_probe_given_and_asked_for_is_the_one_returned_with_the_gradient():
    cell, x, h0, c0 = make_inputs()
    probe = torch.zeros(T, B, H, requires_grad=True)
    *_, returned = run_fast(cell, cell.input_projection(x), h0, c0, "python", probe=True, h_probe=probe)
    assert returned is probe


def test_the_kernels_refusals_name_what_is_wrong():
    cell, x, h0, c0 = make_inputs()
    x_proj = cell.input_projection(x)
    covered = "vanilla, nig, nfg, nog, niaf, noaf, np, cifg"
    cases = [
        (dict(variant="lstm2"), ValueError, f"variant='lstm2': allowed {covered}"),
        (dict(backend="gpu"), ValueError, "backend='gpu': allowed auto, cpp, python"),
        (dict(variant="np"), ValueError, "variant='np' has no peephole tensor"),
        (dict(backend="cpp", x_proj=x_proj.bfloat16()), ValueError,
         "backend='cpp' needs float32/float64 CPU tensors, got torch.bfloat16 on cpu"),
    ]
    # a combination of switches that is no variant of the kernel's (no input and no output gate)
    odd = dataclasses.replace(cell.switches, input_gate=False, output_gate=False)
    cases.append((dict(variant=odd), ValueError, f"variant={odd!r}: the sequence kernel covers {covered} "
                                                 "(fgr runs on the explicit path)"))
    for kwargs, error, message in cases:
        args = {"x_proj": x_proj, "peephole": cell.peephole, **kwargs}
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            fast_peephole.peephole_sequence(args.pop("x_proj"), h0, c0, cell.weight_hh, cell.bias_hh, **args)
    with pytest.raises(ValueError, match=f"^{re.escape('variant=' + repr('vanilla') + ' takes peephole tensor')}$"):
        fast_peephole.peephole_sequence(x_proj, h0, c0, cell.weight_hh, cell.bias_hh, None)


# -- the input projection inside the kernel (issue 26): cell_sequence hands the loops x and W_ih ------------
# The layer path (`cell_sequence`) no longer makes x_proj: the C++ kernel projects x_t in each step's GEMM,
# [x_t | h_{t-1}] [W_ih | U]^T, gets δx_t from δa_t [W_ih | U] and ∂L/∂W_ih per step. Specification as above:
# the cell's own step loop on cell.input_projection(x), autograd through both.

def fused_and_cell_loop(cell, x, h0, c0, backend, lengths=None):
    """(values and gradients of cell_sequence, the same of the cell's step loop): outputs, h_T, c_T and the
    gradients of x, h0, c0, the probe and every parameter, of a loss weighting each output element differently;
    only the gradients of the tensors requiring one."""
    def run(fn):
        probe = torch.zeros(*x.shape[:2], h0.shape[1], dtype=x.dtype, requires_grad=True)
        out, h_T, c_T = fn(probe)
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, h_T, c_T))
        names = ["x", "h0", "c0", "probe"] + [n for n, _ in cell.named_parameters()]
        tensors = [x, h0, c0, probe, *cell.parameters()]
        asked = [(n, t) for n, t in zip(names, tensors) if t.requires_grad]
        grads = torch.autograd.grad(loss, [t for _, t in asked])
        return {"outputs": out, "h_T": h_T, "c_T": c_T, **{f"grad {n}": g for (n, _), g in zip(asked, grads)}}

    def fused(probe):
        out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0), lengths, backend, h_probe=probe)
        return out, h_T, c_T

    return run(fused), run(lambda probe: cell_loop(cell, cell.input_projection(x), h0, c0, lengths, probe))


def assert_close_to_scale(got, expected, dtype):
    """Every result and gradient equal up to a few ulps of the largest entry of its tensor: a gradient summed over
    steps and rows in another order (here: W x_t and U h_{t-1} in one GEMM, ∂L/∂W_ih per row block) rounds
    differently by that much (test_cpp_multithreaded_blocks_equal_python); NaN where the equations give NaN."""
    ulps = 1e-6 if dtype == torch.float32 else 1e-12
    assert set(got) == set(expected)
    for name in expected:
        finite = expected[name].detach()[torch.isfinite(expected[name])]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        torch.testing.assert_close(got[name], expected[name], rtol=ulps * 100, atol=ulps * max(scale, 1.0),
                                   equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, PADDED, [0, 7, 2]], ids=["full", "padded", "with-empty"])
@pytest.mark.parametrize("initial", ["random", "zero"])
def test_fused_projection_equals_the_cell_loop_values_and_gradients(variant, backend, lengths, initial):
    cell, x, h0, c0 = make_inputs(variant=variant)
    x.requires_grad_()
    if initial == "zero":
        h0, c0 = (torch.zeros(B, H, requires_grad=True) for _ in range(2))
    lengths = None if lengths is None else torch.tensor(lengths)
    got, expected = fused_and_cell_loop(cell, x, h0, c0, backend, lengths)
    assert {"grad x", "grad weight_ih", "grad bias_ih"} <= set(got)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if lengths is not None:  # a padded step's input is never read: its gradient is exactly zero
        for b, n in enumerate(lengths.tolist()):
            assert (got["grad x"][n:, b] == 0).all() and (got["outputs"][n:, b] == 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", [2.0 ** -10, 1.0, 2.0 ** 10, 2.0 ** 20])
def test_fused_projection_saturates_as_the_cell(variant, backend, dtype, magnitude):
    # x = ±magnitude and W_ih in multiples of 1/8: W x_t is exact in any summation order, so each pre-activation
    # is the recurrent part alone (W x_t = 0) or at least magnitude/8 from it, saturated from 2^10 on: σ and
    # tanh at exactly 0, 1, ±1, values and gradients those of the equations, finite.
    cell, _, h0, c0 = make_inputs(dtype, variant=variant)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.randint(-4, 5, cell.weight_ih.shape) / 8)
    x = (magnitude * torch.randint(0, 2, (T, B, I)).mul(2).sub(1)).to(dtype).requires_grad_()
    got, expected = fused_and_cell_loop(cell, x, h0, c0, backend, torch.tensor([6, 4, 7]))
    assert all(torch.isfinite(v).all() for v in expected.values())
    assert_close_to_scale(got, expected, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [float("inf"), -float("inf"), float("nan")], ids=["+inf", "-inf", "nan"])
@pytest.mark.parametrize("step", [2, 5], ids=["in-the-sequence", "past-its-end"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_projection_inf_and_nan_inputs_behave_as_the_cell(backend, dtype, special, step, variant):
    # ±inf or NaN in one input (row 1, feature 3), rows of lengths 7, 4 or 7, 6:
    # - at step 2, inside its sequence: every value and gradient as the equations give it, NaN in the same
    #   places, never in another row's values;
    # - at step 5, past its end (length 4): never read, so every value and gradient is that of the same batch
    #   with a 0 there, but ∂L/∂W_ih = Σ δa^T x, where δa = 0 at that step meets it (0 · inf = NaN), in that
    #   feature's column, as in torch's own linear layer. (The cell's step loop is no reference for this one:
    #   it computes the discarded step, and its autograd carries 0 · NaN back into the row's earlier gradients.)
    cell, x, h0, c0 = make_inputs(dtype, variant=variant)
    lengths = torch.tensor([7, 4 if step == 5 else 7, 6])
    x_special = x.clone()
    x_special[step, 1, 3] = special
    x.requires_grad_(), x_special.requires_grad_()
    got, expected = fused_and_cell_loop(cell, x_special, h0, c0, backend, lengths)
    if step == 5:
        _, expected = fused_and_cell_loop(cell, x, h0, c0, backend, lengths)
        assert got["grad weight_ih"][:, 3].isnan().all()
        for grads in (got, expected):
            grads["grad weight_ih"] = grads["grad weight_ih"][:, :3]
    assert expected["outputs"][:, [0, 2]].isfinite().all()
    if special != special and step == 2:  # NaN reaches the row's output
        assert expected["outputs"][2:, 1].isnan().all()
    assert_close_to_scale(got, expected, dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "padded"])
def test_fused_projection_gradcheck_float64(variant, backend, lengths):
    cell, x, h0, c0 = make_inputs(torch.float64, T=4, variant=variant)
    probe = torch.zeros(4, B, H, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]

    def f(x, h0, c0, h_probe, *params):
        tensors = types.SimpleNamespace(switches=cell.switches, **dict(zip(names, params)))
        out, (h_T, c_T) = fast_peephole.cell_sequence(tensors, x, (h0, c0), lengths and torch.tensor(lengths),
                                                      backend, h_probe)
        return out, h_T, c_T

    # every element for vanilla, torch's fast mode for the other variants, as test_gradcheck_float64
    assert torch.autograd.gradcheck(f, (x.requires_grad_(), h0, c0, probe, *params), fast_mode=variant != "vanilla")


@needs_compiler
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_projection_multithreaded_row_blocks_on_one_and_two_threads(variant, dtype, threads):
    # B=130 rows at H=64: two row blocks, each on its own thread with 2 threads, each with its own ∂L/∂W_ih
    # partial sum; padded rows of every length 0..6 and the probe
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(3)
        cell = PeepholeLSTMCell(I, 64, variant=variant).to(dtype)
        x = torch.randn(6, 130, I, dtype=dtype, requires_grad=True)
        h0, c0 = (torch.randn(130, 64, dtype=dtype, requires_grad=True) for _ in range(2))
        got, expected = fused_and_cell_loop(cell, x, h0, c0, "cpp", torch.randint(0, 7, (130,)))
    finally:
        torch.set_num_threads(before)
    assert_close_to_scale(got, expected, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_size", [4, 520], ids=["narrow", "wide"])
def test_fused_projection_input_weight_gradient_per_step_or_in_one_matmul(backend, dtype, input_size):
    # The C++ backward sums ∂L/∂W_ih = Σ_t δa_t^T x_t per step while its (G·H, I) sum is at most 256 KiB
    # (I = 4 here) and in one matmul after the loop beyond (I = 520 at G·H = 128): the cell's gradients either way
    torch.manual_seed(5)
    cell = PeepholeLSTMCell(input_size, 32).to(dtype)
    x = torch.randn(5, 4, input_size, dtype=dtype, requires_grad=True)
    h0, c0 = (torch.randn(4, 32, dtype=dtype, requires_grad=True) for _ in range(2))
    got, expected = fused_and_cell_loop(cell, x, h0, c0, backend, torch.tensor([5, 2, 0, 4]))
    assert_close_to_scale(got, expected, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frozen", ["input", "weight_ih", "bias_ih", "weight_hh", "input-and-weight_ih"])
def test_fused_projection_gives_each_gradient_asked_for_alone(backend, frozen):
    """The first layer's input (data) has no gradient, a frozen W_ih or b_ih none either: the others are the
    cell's, and what is not asked for stays None."""
    cell, x, h0, c0 = make_inputs()
    x.requires_grad_()
    for name in frozen.split("-and-"):
        (x if name == "input" else getattr(cell, name)).requires_grad_(False)
    got, expected = fused_and_cell_loop(cell, x, h0, c0, backend, torch.tensor(PADDED))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0), backend=backend)
    (out.sum() + h_T.sum() + c_T.sum()).backward()
    assert (x.grad is None) == (not x.requires_grad)
    assert all((p.grad is None) == (not p.requires_grad) for p in cell.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_projection_retained_graph_and_empty_sequence(backend):
    # backward twice on a retained graph gives the same gradients (the C++ backward overwrites its saved gates
    # unless the graph is retained); T = 0 passes the state through and gives W_ih, b_ih zero gradients
    cell, x, h0, c0 = make_inputs()
    x.requires_grad_()
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x, (h0, c0), torch.tensor(PADDED), backend)
    loss = out.square().sum() + h_T.sum() + c_T.sum()
    inputs = [x, h0, c0, *cell.parameters()]
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    for a, b in zip(first, torch.autograd.grad(loss, inputs)):
        assert torch.equal(a, b)
    out, (h_T, c_T) = fast_peephole.cell_sequence(cell, x[:0], (h0, c0), backend=backend)
    assert out.shape == (0, B, H) and torch.equal(h_T, h0) and torch.equal(c_T, c0)
    grads = torch.autograd.grad(h_T.sum() + c_T.sum(), [h0, cell.weight_ih, cell.bias_ih], allow_unused=True)
    assert torch.equal(grads[0], torch.ones(B, H))
    assert all(g is None or torch.equal(g, torch.zeros_like(g)) for g in grads[1:])


def layer_step_peaks(make_cell, bidirectional, monkeypatch, module, x_proj_first, G, T=60, B=16, H=32):
    """Allocator peaks (torch.profiler profile_memory, as bench cells' "MiB tensor") of one training step of a
    layer of `make_cell` (input 2H, as above a bidirectional layer; padded; 1 thread) on the fused path and with
    `module.cell_sequence` replaced by `x_proj_first` (x_proj made by F.linear and overwritten by the gates: the
    layer path before issue 26); and the bytes the fused path may add: the concatenated weight [W_ih | U]^T
    and the row blocks' step buffers, at most."""
    from rnnbench.bench.measure import allocator_peak
    from rnnbench.modules.recurrent import RecurrentLayer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        layer = RecurrentLayer(make_cell, 2 * H, H, bidirectional=bidirectional)
        x = torch.randn(T, B, 2 * H, requires_grad=True)
        lengths, grad = torch.randint(1, T + 1, (B,)), torch.randn(T, B, H * (1 + bidirectional))

        def step():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            layer(x, lengths)[0].backward(grad)

        step()
        fused = allocator_peak(step)
        monkeypatch.setattr(module, "cell_sequence", x_proj_first)
        step()
        before = allocator_peak(step)
    finally:
        torch.set_num_threads(threads)
    allowance = 4 * ((3 * H) * G * H + B * (3 * H + G * H))
    assert T * B * G * H * 4 > 4 * allowance  # a (T, B, G·H) buffer more would show
    return fused, before, allowance


@needs_compiler
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one-direction", "bidirectional"])
def test_fused_projection_peak_memory_is_no_more_than_with_x_proj_made_first(bidirectional, monkeypatch):
    """No (T, B, G·H) buffer is added (docs/performance.md, issue 26: why ∂L/∂x is a node of its own,
    `projection.InputProjection`)."""
    def x_proj_first(cell, x, state, lengths=None, backend="auto", h_probe=None):
        out, h, c = fast_peephole.peephole_sequence(cell.input_projection(x), *state, cell.weight_hh, cell.bias_hh,
                                                    cell.peephole, lengths, backend=backend, overwrite_x_proj=True)
        return out, (h, c)

    fused, before, allowance = layer_step_peaks(PeepholeLSTMCell, bidirectional, monkeypatch, fast_peephole,
                                                x_proj_first, G=4)
    assert fused <= before + allowance, (fused, before)
