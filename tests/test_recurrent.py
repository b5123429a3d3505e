"""Architectures and backends: explicit == fused == torch, padded batches == unpadded sequences."""

import functools
import itertools

import pytest
import torch

from rnnbench.modules.cells import LSTM_VARIANTS, GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.modules.recurrent import RecurrentStack, pyramid_reduce, resolve_backend, reverse_padded

I, H = 4, 6

FUSABLE = {
    "vanilla_tanh": functools.partial(VanillaCell, nonlinearity="tanh"),
    "vanilla_relu": functools.partial(VanillaCell, nonlinearity="relu"),
    "lstm": LSTMCell,
    "gru": GRUCell,
}
ALL = dict(FUSABLE, peephole=PeepholeLSTMCell, gru_cho=functools.partial(GRUCell, reset_after=False))
# the LSTM variants of Greff et al. 2016 (their vanilla is `peephole`)
VARIANTS = {f"peephole_{v}": functools.partial(PeepholeLSTMCell, variant=v) for v in LSTM_VARIANTS if v != "vanilla"}
ALL.update(VARIANTS)


def twin(make, backend_a, backend_b, **kw):
    """Two stacks with the same parameters on two backends."""
    torch.manual_seed(0)
    a = RecurrentStack(make, I, H, backend=backend_a, **kw)
    b = RecurrentStack(make, I, H, backend=backend_b, **kw)
    b.load_state_dict(a.state_dict())
    return a, b


def run_and_grad(stack, x, lengths=None):
    stack.zero_grad()
    out, _, final = stack(x, lengths)
    flat = [s for layer in final for direction in layer for s in direction]
    (out.square().sum() + sum(s.sum() for s in flat)).backward()
    return out, flat, {n: p.grad.clone() for n, p in stack.named_parameters()}


def assert_same_run(a, b, x, lengths=None):
    out_a, fin_a, g_a = run_and_grad(a, x, lengths)
    out_b, fin_b, g_b = run_and_grad(b, x, lengths)
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-4)
    for s, t in zip(fin_a, fin_b):
        torch.testing.assert_close(s, t, atol=1e-5, rtol=1e-4)
    for n in g_a:
        torch.testing.assert_close(g_a[n], g_b[n], atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize("cell", list(FUSABLE))
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (3, False), (2, True)])
def test_explicit_equals_fused(cell, num_layers, bidirectional):
    a, b = twin(FUSABLE[cell], "explicit", "fused", num_layers=num_layers, bidirectional=bidirectional)
    assert {p for l in b.layers for p in l.paths} == {"fused"}
    assert_same_run(a, b, torch.randn(9, 3, I))


@pytest.mark.parametrize("cell", list(FUSABLE))
def test_explicit_equals_fused_on_padded_batches(cell):
    a, b = twin(FUSABLE[cell], "explicit", "fused", num_layers=2, bidirectional=True)
    assert_same_run(a, b, torch.randn(9, 4, I), torch.tensor([9, 4, 7, 1]))


def test_fused_lstm_is_torch_nn_lstm():
    """Our parameters in torch's layout: nn.LSTM with the same state dict computes the same."""
    stack = RecurrentStack(LSTMCell, I, H, num_layers=2, bidirectional=True, backend="explicit")
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    with torch.no_grad():
        for l, layer in enumerate(stack.layers):
            for d, cell in enumerate(layer.directions):
                suffix = f"_l{l}" + ("_reverse" if d else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, name + suffix).copy_(getattr(cell, name))
    x = torch.randn(7, 3, I)
    out, _, final = stack(x)
    ref_out, (h_n, c_n) = ref(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(final[1][1][0], h_n[3])  # top layer, backward direction


def run_alone(stack, x, lengths):
    """Every sequence of the batch, unpadded, on its own."""
    outs, finals = [], []
    for b, L in enumerate(lengths.tolist()):
        out, out_len, final = stack(x[:L, b:b + 1])
        outs.append(out[:, 0])
        finals.append([[tuple(s[0] for s in d) for d in layer] for layer in final])
    return outs, finals


@pytest.mark.parametrize("cell", list(ALL))
@pytest.mark.parametrize("arch", ["bidirectional", "pyramid", "pyramid_input"])
@pytest.mark.parametrize("backend", ["explicit", "auto"])
def test_padded_batch_equals_each_sequence_alone(cell, arch, backend):
    torch.manual_seed(1)
    kw = {"bidirectional": dict(bidirectional=True),
          "pyramid": dict(num_layers=3, bidirectional=True, pyramid=True),
          "pyramid_input": dict(num_layers=2, bidirectional=True, pyramid=True, pyramid_input=True)}[arch]
    stack = RecurrentStack(ALL[cell], I, H, backend=backend, **kw)
    lengths = torch.tensor([11, 5, 8, 1, 10])
    x = torch.randn(11, 5, I)
    for b, L in enumerate(lengths.tolist()):  # garbage in the padding must not leak in
        x[L:, b] = 100.0
    out, out_lengths, final = stack(x, lengths)
    torch.testing.assert_close(out_lengths, stack.output_lengths(lengths))
    alone, alone_finals = run_alone(stack, x, lengths)
    for b, (L, ref) in enumerate(zip(out_lengths.tolist(), alone)):
        assert ref.shape[0] == L
        torch.testing.assert_close(out[:L, b], ref, atol=1e-5, rtol=1e-4)
        if L < out.shape[0]:
            assert out[L:, b].abs().max() == 0  # padded outputs are zero
        for layer, ref_layer in zip(final, alone_finals[b]):
            for d, ref_d in zip(layer, ref_layer):
                for s, r in zip(d, ref_d):
                    torch.testing.assert_close(s[b], r, atol=1e-5, rtol=1e-4)


def test_pyramid_odd_length_rule():
    """T=5 -> 3 steps; the last pair is [h_5, 0]; lengths ⌈L/2⌉."""
    x = torch.arange(5 * 1 * 2, dtype=torch.float).view(5, 1, 2)
    y, lengths = pyramid_reduce(x, torch.tensor([5]))
    assert y.shape == (3, 1, 4) and lengths.tolist() == [3]
    torch.testing.assert_close(y[0, 0], torch.cat([x[0, 0], x[1, 0]]))
    torch.testing.assert_close(y[2, 0], torch.cat([x[4, 0], torch.zeros(2)]))
    assert pyramid_reduce(torch.zeros(8, 3, 2), torch.tensor([8, 7, 1]))[1].tolist() == [4, 4, 1]


def test_reverse_padded_reverses_within_length():
    x = torch.arange(4).view(4, 1).repeat(1, 2).float()       # (T=4, B=2)
    y = reverse_padded(x, torch.tensor([4, 2]))
    assert y[:, 0].tolist() == [3, 2, 1, 0] and y[:, 1].tolist() == [1, 0, 2, 3]
    torch.testing.assert_close(reverse_padded(y, torch.tensor([4, 2])), x)


ARCHS = {
    "single": dict(),
    "deep": dict(num_layers=3, dropout=0.1, residual=True),
    "bidirectional": dict(bidirectional=True),
    "pyramid": dict(num_layers=3, pyramid=True),
    "pyramid_bidirectional_residual": dict(num_layers=4, pyramid=True, bidirectional=True, residual=True),
    "pyramid_input": dict(num_layers=3, pyramid=True, pyramid_input=True),
}


@pytest.mark.parametrize("cell,arch", list(itertools.product(ALL, ARCHS)))
def test_every_cell_in_every_architecture(cell, arch):
    kw = ARCHS[arch]
    stack = RecurrentStack(ALL[cell], I, H, **kw)
    T, B = 13, 3
    x = torch.randn(T, B, I, requires_grad=True)
    out, lengths, final = stack(x, torch.tensor([13, 6, 9]))
    directions = 2 if kw.get("bidirectional") else 1
    reduction = 2 ** (kw.get("num_layers", 1) - 1 + kw.get("pyramid_input", False)) if kw.get("pyramid") else 1
    assert stack.time_reduction == reduction
    expected_T = T
    for _ in range(reduction.bit_length() - 1):
        expected_T = (expected_T + 1) // 2
    assert out.shape == (expected_T, B, directions * H)
    assert lengths.max() == expected_T
    assert len(final) == kw.get("num_layers", 1) and len(final[0]) == directions
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in stack.parameters())


@pytest.mark.parametrize("cell,arch", list(itertools.product(ALL, ARCHS)))
def test_auto_equals_explicit_in_every_architecture(cell, arch):
    """Whatever `auto` runs (asserted: the C++/Python sequence kernels for both GRU forms and every LSTM
    variant but fgr), it equals the cell's equations in every architecture, forward and backward, padded."""
    a, b = twin(ALL[cell], "explicit", "auto", **ARCHS[arch])
    expected = {"explicit"} if cell in ("peephole_fgr",) else (
        {"fast"} if cell.startswith(("peephole", "gru")) else {"fused"})
    assert {p for l in b.layers for p in l.paths} == expected
    x, lengths = torch.randn(13, 3, I), torch.tensor([13, 6, 9])
    results = []
    for stack in (a, b):
        torch.manual_seed(5)  # the same dropout masks
        results.append(run_and_grad(stack, x, lengths))
    (out_a, fin_a, g_a), (out_b, fin_b, g_b) = results
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=1e-4)
    for s, t in zip(fin_b, fin_a):
        torch.testing.assert_close(s, t, atol=1e-5, rtol=1e-4)
    for n in g_a:
        torch.testing.assert_close(g_b[n], g_a[n], atol=1e-4, rtol=1e-4, msg=n)


def test_backend_choice():
    # the plain LSTM stays on torch's kernel in auto (the lead's decision: recurrent.py's docstring)
    assert resolve_backend(LSTMCell(I, H), "auto") == "fused"
    for variant in LSTM_VARIANTS:  # every variant but fgr on the sequence kernel, np included
        assert resolve_backend(PeepholeLSTMCell(I, H, variant=variant), "auto") == (
            "explicit" if variant == "fgr" else "fast"), variant
    assert resolve_backend(PeepholeLSTMCell(I, H, variant="np"), "fused") == "fused"
    assert resolve_backend(GRUCell(I, H, reset_after=False), "auto") == "fast"
    assert resolve_backend(GRUCell(I, H), "auto") == "fast" and resolve_backend(GRUCell(I, H), "fused") == "fused"
    assert resolve_backend(LSTMCell(I, H), "explicit") == "explicit"
    with pytest.raises(ValueError, match=r"^model.backend=fused: PeepholeLSTMCell\(4, 6, recurrent_init='default', "
                                         r"forget_bias=1.0, variant='vanilla'\) has no torch kernel"):
        resolve_backend(PeepholeLSTMCell(I, H), "fused")
    with pytest.raises(ValueError, match="model.backend='cudnn'.*auto, explicit, fused"):
        resolve_backend(LSTMCell(I, H), "cudnn")


def test_fused_training_then_explicit_run_is_unchanged():
    """A model trained fused runs through the explicit path on the same tensors."""
    a, b = twin(LSTMCell, "fused", "explicit", num_layers=2)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    x = torch.randn(8, 2, I)
    for _ in range(3):
        opt.zero_grad()
        a(x)[0].square().mean().backward()
        opt.step()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x)[0], b(x)[0], atol=1e-5, rtol=1e-4)


def test_probes_give_total_gradient_wrt_hidden_state():
    """probe.grad == ∂L/∂h_t computed by retaining every h_t of a hand-run loop."""
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, H, backend="fused")
    cell = stack.layers[0].directions[0]
    x = torch.randn(6, 2, I)
    probes = []
    out, _, _ = stack(x, probes=probes)
    (grad,) = torch.autograd.grad(out[-1].sum() + out[2].square().sum(), [probes[0][1]])
    state, hs = cell.default_state(2), []
    for x_t in cell.input_projection(x).unbind(0):
        h, state = cell.step(x_t, state)
        h.retain_grad()
        hs.append(h)
    (hs[-1].sum() + hs[2].square().sum()).backward()
    torch.testing.assert_close(grad, torch.stack([h.grad for h in hs]))
    assert grad[3:5].abs().sum() > 0 and probes[0][0] == "layer0"


@pytest.mark.parametrize("cell", list(VARIANTS))
def test_auto_runs_each_lstm_variant_on_a_path_that_computes_it(cell):
    """`auto` runs every variant but fgr on the sequence kernel (C++ where it builds: asserted), deep and
    bidirectional, and it equals the variant's equations, forward and backward, on a padded batch."""
    from rnnbench.kernels import extension, fast_peephole

    a, b = twin(VARIANTS[cell], "explicit", "auto", num_layers=2, bidirectional=True)
    assert {p for l in b.layers for p in l.paths} == ({"explicit"} if cell == "peephole_fgr" else {"fast"})
    loops = []
    original = fast_peephole.PeepholeSequence.apply
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fast_peephole.PeepholeSequence, "apply", lambda *args: loops.append(args[8]) or original(*args))
        assert_same_run(a, b, torch.randn(9, 4, I), torch.tensor([9, 4, 7, 1]))
    if cell == "peephole_fgr":
        assert loops == []
    else:  # 2 layers x 2 directions, each on the C++ kernel where it builds
        expected = extension.load("peephole") if fast_peephole.cpp_available() else fast_peephole._PythonLoops
        assert len(loops) == 4 and all(l is expected for l in loops), loops


@pytest.mark.parametrize("variant", ["vanilla", "np", "cifg"])
def test_auto_lstm_elsewhere_falls_back_with_one_warning(variant):
    """A dtype the C++ kernel does not take (bfloat16 here; a CUDA device alike): np runs torch's LSTM
    kernel, the other variants the Python sequence kernel, with one warning, never a crash."""
    import warnings

    from rnnbench.modules import recurrent

    recurrent._warn_once_lstm_elsewhere.cache_clear()
    a, b = twin(functools.partial(PeepholeLSTMCell, variant=variant), "explicit", "auto")
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    x = torch.randn(5, 2, I, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="CPU only; torch.bfloat16 on cpu runs " +
                      ("torch's LSTM kernel" if variant == "np" else "the Python sequence kernel")):
        out = b(x)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b(x)
    torch.testing.assert_close(out, a(x)[0], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "cho"])
def test_auto_gru_runs_the_cpp_kernel_and_equals_the_equations(reset_after):
    """Both GRU forms under `auto`: the C++ kernel (where it builds), deep and bidirectional, padded."""
    from rnnbench.kernels import fast_gru

    a, b = twin(lambda i, h: GRUCell(i, h, reset_after=reset_after), "explicit", "auto", num_layers=2,
                bidirectional=True)
    assert {p for l in b.layers for p in l.paths} == {"fast"}
    if fast_gru.available():
        calls = []
        original = fast_gru.GRUSequence.apply
        with pytest.MonkeyPatch.context() as m:
            m.setattr(fast_gru.GRUSequence, "apply", lambda *args: calls.append(1) or original(*args))
            assert_same_run(a, b, torch.randn(9, 4, I), torch.tensor([9, 4, 7, 1]))
        assert len(calls) == 4  # 2 layers x 2 directions
    assert_same_run(a, b, torch.randn(9, 4, I))


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "cho"])
def test_auto_gru_elsewhere_falls_back_with_one_warning(reset_after):
    """A dtype the kernel does not take (bfloat16 here; a CUDA device alike) runs the next exact path."""
    import warnings

    from rnnbench.modules import recurrent

    recurrent._warn_once_gru_elsewhere.cache_clear()
    a, b = twin(lambda i, h: GRUCell(i, h, reset_after=reset_after), "explicit", "auto")
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    x = torch.randn(5, 2, I, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="CPU only; torch.bfloat16 on cpu runs " +
                      ("torch's GRU kernel" if reset_after else "the explicit path")):
        out = b(x)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b(x)
    torch.testing.assert_close(out, a(x)[0], atol=2e-2, rtol=2e-2)



def test_private_fused_kernels_keep_their_signature():
    # run_fused calls torch._VF directly (no public API runs torch's kernels on tensors a module does not
    # own): if torch renames or reorders them, this fails by name, against nn.LSTM / nn.GRU / nn.RNN
    from rnnbench.modules.recurrent import run_fused

    assert all(hasattr(torch._VF, name) for name in ("lstm", "gru", "rnn_tanh", "rnn_relu")), "torch._VF changed"
    torch.manual_seed(0)
    x, lengths = torch.randn(5, 3, 4), torch.tensor([5, 2, 4])
    for make, module in ((LSTMCell, torch.nn.LSTM), (GRUCell, torch.nn.GRU), (VanillaCell, torch.nn.RNN)):
        cell, reference = make(4, 6), module(4, 6)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, f"{name}_l0").copy_(getattr(cell, name))
        state = tuple(torch.randn(3, 6) for _ in cell.default_state(3))
        hx = tuple(s.unsqueeze(0) for s in state)
        out, _ = run_fused(cell, x, state)
        expected, _ = reference(x, hx if module is torch.nn.LSTM else hx[0])
        torch.testing.assert_close(out, expected)
        packed, _ = run_fused(cell, x, state, lengths)  # the packed-sequence form of the same kernel
        torch.testing.assert_close(packed[:, 0], out[:, 0])
        assert torch.all(packed[2:, 1] == 0)


def test_a_pyramid_residual_shortcut_is_the_mean_of_the_concatenated_pair():
    """Layer 2 of a residual pyramid reads the concatenated pair [h_2t, h_2t+1] and adds their mean (the
    shortcut of He et al. 2016 at the halved rate): built by hand from the layers, the same to the bit."""
    torch.manual_seed(0)
    stack = RecurrentStack(VanillaCell, 3, 4, num_layers=2, pyramid=True, residual=True).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    out, lengths, _ = stack(x)
    first, _ = stack.layers[0](x, None, None, None, name="layer0")                  # (6, 2, 4)
    pairs, _ = pyramid_reduce(first, None)                                          # (3, 2, 8)
    second, _ = stack.layers[1](pairs, None, None, None, name="layer1")             # (3, 2, 4)
    expected = second + 0.5 * (first[0::2] + first[1::2])
    assert torch.equal(out, expected)
    assert not torch.allclose(out, second + first[0::2] + first[1::2])  # a sum, not the mean, would differ


# ---- a cell with a matrix state, the gates a diagnostic pass records, devices, the layer's own defaults ----
def test_a_padded_batch_of_a_cell_with_a_matrix_state_equals_each_sequence_alone():
    """S6 (Gu & Dao 2023) carries (B, E, N) states: the step loop's freezing mask and the whole-sequence
    scan (`auto`) must both stop each sequence at its own end."""
    from rnnbench.modules.modern_cells import S6Cell

    torch.manual_seed(0)
    for backend in ("explicit", "auto"):
        stack = RecurrentStack(functools.partial(S6Cell, state_dim=3), I, H, backend=backend)
        assert stack.layers[0].paths == ["explicit" if backend == "explicit" else "sequence"]
        assert_padded_equals_alone(stack, torch.randn(7, 3, I), torch.tensor([7, 3, 5]))


def assert_padded_equals_alone(stack, x, lengths):
    """Outputs (zero past each end) and every final state of a padded batch, against each sequence alone."""
    out, _, final = stack(x, lengths)
    alone, alone_finals = run_alone(stack, x, lengths)
    for b, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[:L, b], alone[b], atol=1e-5, rtol=1e-4)
        assert out[L:, b].abs().sum() == 0
        for layer, ref_layer in zip(final, alone_finals[b]):
            for d, ref_d in zip(layer, ref_layer):
                for s, r in zip(d, ref_d):
                    torch.testing.assert_close(s[b], r, atol=1e-5, rtol=1e-4)


def test_a_diagnostic_pass_records_each_steps_gates_and_valid_step_mask():
    """Probes(record_gates=True): per layer and direction, every step's σ gates (the cell's own `step`
    reports) and the (B, 1) mask of the sequences still running at that step (None without padding)."""
    from rnnbench.modules.recurrent import Probes

    assert Probes().gates is None and Probes(record_gates=True).gates == {}
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, H, bidirectional=True)
    x, lengths = torch.randn(4, 2, I), torch.tensor([4, 2])
    probes = Probes(record_gates=True)
    stack(x, lengths, probes=probes)
    assert [name for name, _ in probes] == ["layer0", "layer0_reverse"] and list(probes.gates) == ["layer0", "layer0_reverse"]
    steps = probes.gates["layer0"]
    assert [mask[:, 0].tolist() for _, mask in steps] == [[True, True], [True, True], [True, False], [True, False]]  # t < L
    cell = stack.layers[0].directions[0]
    state = cell.default_state(2)
    for t, x_t in enumerate(cell.input_projection(x).unbind(0)):
        expected = {}
        _, state = cell.step(x_t, state, gates=expected)
        assert set(steps[t][0]) == {"input", "forget", "output"}
        for name, value in expected.items():  # the same for the sequence still running at t
            torch.testing.assert_close(steps[t][0][name][0], value[0])
    unpadded = Probes(record_gates=True)
    stack(x, probes=unpadded)
    assert all(mask is None for _, mask in unpadded.gates["layer0"])
    plain = []
    stack(x, probes=plain)  # a plain list collects the probes only
    assert len(plain) == 2


def test_a_stack_runs_on_the_device_of_its_input():
    """The meta device stands in for a GPU: states, masks and the reversal are made where x is (the lengths
    stay on the CPU, as pack_padded_sequence wants them)."""
    stack = RecurrentStack(LSTMCell, I, H, num_layers=2, bidirectional=True, backend="explicit").to("meta")
    out, _, final = stack(torch.zeros(7, 3, I, device="meta"), torch.tensor([7, 5, 2]))
    assert out.device.type == "meta" and {s.device.type for layer in final for d in layer for s in d} == {"meta"}
    x = torch.zeros(5, 2, 3, device="meta")
    assert reverse_padded(x, torch.tensor([5, 3])).device.type == "meta"
    blocks = RecurrentStack(LSTMCell, I, H, num_layers=2, block="residual_mlp", backend="explicit").to("meta")
    assert blocks(torch.zeros(7, 3, I, device="meta"), torch.tensor([7, 5, 2]))[0].device.type == "meta"
    paired = RecurrentStack(LSTMCell, I, H, num_layers=2, pyramid=True, pyramid_input=True, backend="explicit")
    out, out_lengths, _ = paired.to("meta")(torch.zeros(8, 3, I, device="meta"), torch.tensor([8, 5, 2]))
    assert out.device.type == "meta" and out.shape == (2, 3, H) and out_lengths.tolist() == [2, 2, 1]


def test_a_stacks_default_state_is_zeros_per_layer_and_direction():
    stack = RecurrentStack(LSTMCell, I, H, num_layers=2, bidirectional=True)
    state = stack.default_state(3, torch.device("meta"), torch.float64)
    assert [[[(tuple(s.shape), s.device.type, s.dtype) for s in d] for d in layer] for layer in state] == \
        [[[((3, H), "meta", torch.float64)] * 2] * 2] * 2
    assert all(not s.any() for layer in stack.default_state(3) for d in layer for s in d)


def test_the_fused_kernel_pads_outputs_to_the_batchs_length_when_every_sequence_is_shorter():
    torch.manual_seed(0)
    a, b = twin(LSTMCell, "explicit", "fused")
    x, lengths = torch.randn(7, 2, I), torch.tensor([5, 3])
    out, _, _ = b(x, lengths)
    assert out.shape == (7, 2, H) and out[5:].abs().max() == 0
    torch.testing.assert_close(out, a(x, lengths)[0], atol=1e-5, rtol=1e-4)


def test_a_layer_on_its_own_runs_one_direction_on_auto_and_names_its_probes_layer():
    from rnnbench.modules.recurrent import RecurrentLayer

    layer = RecurrentLayer(GRUCell, I, H)
    assert len(layer.directions) == 1 and layer.backend == "auto" and layer.paths == ["fast"]
    probes = []
    RecurrentLayer(GRUCell, I, H, bidirectional=True)(torch.randn(3, 2, I), probes=probes)
    assert [name for name, _ in probes] == ["layer", "layer_reverse"]


def test_detach_state_cuts_the_graph_and_keeps_the_nesting():
    from rnnbench.modules.recurrent import detach_state

    w = torch.ones(2, requires_grad=True)
    state = [[(w * 2, w * 3)], (w * 4,), None]
    cut = detach_state(state)
    assert type(cut) is list and type(cut[0]) is list and type(cut[0][0]) is tuple and type(cut[1]) is tuple
    assert cut[2] is None
    assert [s.tolist() for s in (*cut[0][0], *cut[1])] == [[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]
    assert not any(s.requires_grad for s in (*cut[0][0], *cut[1]))


def test_a_stack_refuses_a_bad_depth_dropout_or_block_by_name():
    RecurrentStack(LSTMCell, I, H, num_layers=2, dropout=0.0)  # the ends of what is allowed
    RecurrentStack(LSTMCell, I, H, num_layers=2, dropout=0.999)
    for kw, message in [({"num_layers": 0}, "model.num_layers=0 is not allowed: must be a positive integer (>= 1)"),
                        ({"dropout": 1.0}, "model.dropout=1.0: must be in [0, 1)"),
                        ({"dropout": -0.1}, "model.dropout=-0.1: must be in [0, 1)"),
                        ({"block": "mlp"}, "model.block='mlp' is not allowed: choose one of none, residual_mlp")]:
        with pytest.raises(ValueError) as refused:
            RecurrentStack(LSTMCell, I, H, **kw)
        assert str(refused.value) == message


def layer_inputs(stack):
    """Record what each layer of the stack reads (forward pre-hooks), in order."""
    seen = []
    for layer in stack.layers:
        layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


def test_a_residual_stack_adds_each_layers_input_to_its_output_from_the_second_layer_on():
    """He et al. 2016 as the stack's docstring says: layer l > 0 outputs layer(x) + x; the first layer none."""
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, H, H, num_layers=3, residual=True, backend="explicit")
    x = torch.randn(5, 2, H)
    out, _, _ = stack(x)
    expected = stack.layers[0](x)[0]  # no shortcut around the first layer
    for layer in stack.layers[1:]:
        expected = layer(expected)[0] + expected
    torch.testing.assert_close(out, expected)


def test_dropout_between_layers_drops_in_training_and_nowhere_in_evaluation():
    """nn.LSTM's rule: dropout on each layer's output but the last, inverted (kept values scaled by 1/(1-p))."""
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, 32, num_layers=2, dropout=0.5, backend="explicit")
    seen = layer_inputs(stack)
    x = torch.randn(6, 4, I)
    stack.eval()
    out_eval, _, _ = stack(x)
    first = stack.layers[0](x)[0]
    torch.testing.assert_close(seen[1], first)  # evaluation: the second layer reads the first's output as it is
    torch.testing.assert_close(out_eval, stack.layers[1](first)[0])  # and nothing after the last layer
    stack.train()
    seen.clear()
    stack(x)
    kept = seen[1] != 0
    assert 0.35 < kept.float().mean() < 0.65  # p = 0.5 of 768 values
    torch.testing.assert_close(seen[1][kept], 2 * first[kept])


@pytest.mark.parametrize("block", ["none", "residual_mlp"])
def test_a_stack_carries_its_state_from_one_call_to_the_next(block):
    """Truncated BPTT: the two halves of a sequence, the second from the first's final state, give the whole
    sequence's outputs and final state."""
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, H, num_layers=2, bidirectional=False, block=block, backend="explicit")
    x = torch.randn(8, 3, I)
    whole, _, final = stack(x)
    first, _, carried = stack(x[:4])
    second, _, final_2 = stack(x[4:], state=carried)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    for layer, layer_2 in zip(final, final_2):
        for s, t in zip(layer[0], layer_2[0]):
            torch.testing.assert_close(s, t)


def test_a_padded_batch_through_residual_mlp_blocks_equals_each_sequence_alone():
    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, H, num_layers=2, bidirectional=True, block="residual_mlp")
    assert (stack.hidden_size, stack.bidirectional, stack.block, stack.output_size) == (H, True, "residual_mlp", 2 * H)
    assert stack.blocks[0].mlp_in.out_features == 2 * 3 * 2 * H  # [W_gate; W_up], Griffin's ratio 3 by default
    assert_padded_equals_alone(stack, torch.randn(6, 3, I), torch.tensor([6, 2, 4]))
    assert_padded_equals_alone(stack, torch.randn(6, 2, I), torch.tensor([6, 4]))  # every length >= B, one < T
    probes = []
    stack(torch.randn(6, 2, I), probes=probes)  # a diagnostic pass reaches the layers inside the blocks
    assert [name for name, _ in probes] == ["layer0", "layer0_reverse", "layer1", "layer1_reverse"]


@pytest.mark.parametrize("make", [functools.partial(PeepholeLSTMCell, variant="np"), GRUCell,
                                  functools.partial(GRUCell, reset_after=False)], ids=["np", "gru", "gru_cho"])
def test_auto_elsewhere_keeps_the_lengths_of_a_padded_batch(make):
    """Where the C++ kernels do not run (bfloat16 here, a GPU alike), the path `auto` falls back to still
    stops each sequence at its end: zero outputs past it, the explicit path's values before it."""
    import warnings

    a, b = twin(make, "explicit", "auto")
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    x, lengths = torch.randn(6, 3, I, dtype=torch.bfloat16), torch.tensor([6, 2, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the one fallback warning, tested above
        out = b(x, lengths)[0]
    assert out[2:, 1].abs().sum() == 0 and out[4:, 2].abs().sum() == 0
    torch.testing.assert_close(out, a(x, lengths)[0], atol=2e-2, rtol=2e-2)
    if b.layers[0].directions[0].fused_mode is not None:  # np and torch's GRU form: torch's kernel, to the bit
        fused = twin(make, "explicit", "fused")[1].to(torch.bfloat16)
        torch.testing.assert_close(out, fused(x, lengths)[0], rtol=0, atol=0)


def test_each_path_runs_its_own_kernel_to_the_bit():
    """`fused` is torch's nn.LSTM kernel and `auto` a modern cell's whole-sequence form, bit for bit: a path
    that silently fell back to the step loop would compute the same function, not the same bits."""
    from rnnbench.modules.modern_cells import S6Cell

    torch.manual_seed(0)
    stack = RecurrentStack(LSTMCell, I, H, backend="fused")
    ref = torch.nn.LSTM(I, H)
    cell = stack.layers[0].directions[0]
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, name + "_l0").copy_(getattr(cell, name))
    x = torch.randn(40, 3, I)
    torch.testing.assert_close(stack(x)[0], ref(x)[0], rtol=0, atol=0)
    scan = RecurrentStack(functools.partial(S6Cell, state_dim=3), I, H)
    s6 = scan.layers[0].directions[0]
    expected, _ = s6.sequence(s6.input_projection(x), s6.default_state(3), None)
    torch.testing.assert_close(scan(x)[0], expected, rtol=0, atol=0)
