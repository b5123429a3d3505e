"""The cells against their equations (the papers each cell class cites), written out independently here."""

import functools

import pytest
import torch

from rnnbench.modules.cells import CELLS, LSTM_VARIANTS, ArjovskyLSTMCell, GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell

torch.manual_seed(0)
B, I, H = 3, 4, 5


def randomise(cell):
    """Random parameters of a larger scale than the init, so every term matters."""
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    return cell


def sig(x):
    return 1 / (1 + torch.exp(-x))


def blocks(w, n):
    return w.chunk(n, dim=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_vanilla_step_is_elman_equation(nonlinearity):
    cell = randomise(VanillaCell(I, H, nonlinearity))
    x, h0 = torch.randn(B, I), torch.randn(B, H)
    h, _ = cell.step(cell.input_projection(x[None])[0], (h0,))
    pre = x @ cell.weight_ih.T + h0 @ cell.weight_hh.T + cell.bias_ih + cell.bias_hh
    expected = torch.tanh(pre) if nonlinearity == "tanh" else pre.clamp(min=0)
    torch.testing.assert_close(h, expected)


def lstm_reference(cell, x, h0, c0, peephole=False):
    Wi, Wf, Wg, Wo = blocks(cell.weight_ih, 4)
    Ui, Uf, Ug, Uo = blocks(cell.weight_hh, 4)
    b = cell.bias_ih + cell.bias_hh
    bi, bf, bg, bo = blocks(b, 4)
    pi, pf, po = cell.peephole if peephole else torch.zeros(3, H)
    i = sig(x @ Wi.T + h0 @ Ui.T + pi * c0 + bi)
    f = sig(x @ Wf.T + h0 @ Uf.T + pf * c0 + bf)
    g = torch.tanh(x @ Wg.T + h0 @ Ug.T + bg)
    c = f * c0 + i * g
    o = sig(x @ Wo.T + h0 @ Uo.T + po * c + bo)  # peephole: o sees c_t, not c_{t-1}
    return o * torch.tanh(c), c


@pytest.mark.parametrize("cls,peephole", [(LSTMCell, False), (PeepholeLSTMCell, True)])
def test_lstm_steps_are_their_equations(cls, peephole):
    cell = randomise(cls(I, H))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    h, (h_state, c) = cell.step(cell.input_projection(x[None])[0], (h0, c0))
    h_ref, c_ref = lstm_reference(cell, x, h0, c0, peephole)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    assert h_state is h


def test_peephole_output_gate_sees_new_cell_state():
    """Changing p_o must change h_t through c_t: zeroing c_{t-1} alone would not silence it."""
    cell = randomise(PeepholeLSTMCell(I, H))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.zeros(B, H)
    h1, _ = cell.step(cell.input_projection(x[None])[0], (h0, c0))
    with torch.no_grad():
        cell.peephole[2] += 1.0
    h2, _ = cell.step(cell.input_projection(x[None])[0], (h0, c0))
    assert not torch.allclose(h1, h2)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_step_is_its_equation(reset_after):
    cell = randomise(GRUCell(I, H, reset_after=reset_after))
    x, h0 = torch.randn(B, I), torch.randn(B, H)
    h, _ = cell.step(cell.input_projection(x[None])[0], (h0,))
    Wr, Wz, Wn = blocks(cell.weight_ih, 3)
    Ur, Uz, Un = blocks(cell.weight_hh, 3)
    bir, biz, bin_ = blocks(cell.bias_ih, 3)
    bhr, bhz, bhn = blocks(cell.bias_hh, 3)
    r = sig(x @ Wr.T + bir + h0 @ Ur.T + bhr)
    z = sig(x @ Wz.T + biz + h0 @ Uz.T + bhz)
    if reset_after:   # cuDNN / torch.nn.GRU
        n = torch.tanh(x @ Wn.T + bin_ + r * (h0 @ Un.T + bhn))
    else:             # Cho et al. 2014
        n = torch.tanh(x @ Wn.T + bin_ + (r * h0) @ Un.T + bhn)
    torch.testing.assert_close(h, (1 - z) * n + z * h0)


def test_gru_forms_are_different_functions():
    a = randomise(GRUCell(I, H, reset_after=True))
    b = GRUCell(I, H, reset_after=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, B, I)
    assert (a(x)[0] - b(x)[0]).abs().max() > 1e-3


def test_gru_reset_after_matches_torch_gru_cell():
    cell = randomise(GRUCell(I, H))
    ref = torch.nn.GRUCell(I, H)
    ref.load_state_dict(cell.state_dict())
    x, h0 = torch.randn(B, I), torch.randn(B, H)
    torch.testing.assert_close(cell.step(cell.input_projection(x[None])[0], (h0,))[0], ref(x, h0))


ALL_CELLS = [
    ("vanilla_tanh", functools.partial(VanillaCell, nonlinearity="tanh")),
    ("vanilla_relu", functools.partial(VanillaCell, nonlinearity="relu")),
    ("lstm", LSTMCell),
    ("peephole", PeepholeLSTMCell),
    ("gru", GRUCell),
    ("gru_cho", functools.partial(GRUCell, reset_after=False)),
    ("lstm_arjovsky", ArjovskyLSTMCell),
] + [(f"peephole_{v}", functools.partial(PeepholeLSTMCell, variant=v)) for v in LSTM_VARIANTS if v != "vanilla"]


@pytest.mark.parametrize("name,make", ALL_CELLS, ids=[n for n, _ in ALL_CELLS])
def test_gradcheck_float64(name, make):
    cell = randomise(make(3, 4)).double()
    x = torch.randn(4, 2, 3, dtype=torch.double, requires_grad=True)
    state = tuple(torch.randn_like(s).requires_grad_() for s in cell.default_state(2, dtype=torch.double))
    params = tuple(cell.parameters())

    def run(x, *args):
        n = len(state)
        out, final = cell(x, tuple(args[:n]))
        return (out,) + final

    assert torch.autograd.gradcheck(run, (x,) + state, eps=1e-6, atol=1e-5)
    # parameters too: gradcheck through a functional call
    names = [n for n, _ in cell.named_parameters()]

    def run_params(*ps):
        out, _ = torch.func.functional_call(cell, dict(zip(names, ps)), (x.detach(), state))
        return out

    assert torch.autograd.gradcheck(run_params, tuple(p.detach().requires_grad_() for p in params),
                                    eps=1e-6, atol=1e-5)


def test_identity_init_is_irnn():
    cell = VanillaCell(I, H, nonlinearity="relu", recurrent_init="identity")
    torch.testing.assert_close(cell.weight_hh.detach(), torch.eye(H))
    assert cell.bias_ih.abs().sum() == 0 and cell.bias_hh.abs().sum() == 0


@pytest.mark.parametrize("name", ["vanilla", "lstm", "gru"])
def test_orthogonal_init_gives_orthogonal_blocks(name):
    cell = CELLS[name](I, 16, recurrent_init="orthogonal")
    for block in cell.weight_hh.detach().chunk(cell.gates, dim=0):
        torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)


@pytest.mark.parametrize("gain", [0.5, 1.5])
def test_recurrent_gain_sets_the_spectral_norm_of_an_orthogonal_u(gain):
    for name in ("vanilla", "lstm", "gru"):
        cell = CELLS[name](I, 16, recurrent_init="orthogonal", recurrent_gain=gain)
        for block in cell.weight_hh.detach().chunk(cell.gates, dim=0):
            torch.testing.assert_close(torch.linalg.svdvals(block), torch.full((16,), gain), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    plain = VanillaCell(I, H).weight_hh.detach()
    torch.manual_seed(0)
    torch.testing.assert_close(VanillaCell(I, H, recurrent_gain=gain).weight_hh.detach(), gain * plain)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.5])
def test_tanh_rnn_jacobian_obeys_pascanu_bound(gain):
    # ‖∂h_t/∂h_k‖₂ ≤ (‖U‖₂ · max|tanh′|)^{t-k} = gain^{t-k} (Pascanu et al. 2013, eq. 7).
    torch.manual_seed(0)
    cell = VanillaCell(I, 16, recurrent_init="orthogonal", recurrent_gain=gain).double()
    x_proj = cell.input_projection(torch.randn(12, 1, I, dtype=torch.float64)).detach()

    def run(h0):
        state = (h0.unsqueeze(0),)
        for x_t in x_proj.unbind(0):
            _, state = cell.step(x_t, state)
        return state[0].squeeze(0)

    jacobian = torch.autograd.functional.jacobian(run, torch.zeros(16, dtype=torch.float64))
    assert torch.linalg.matrix_norm(jacobian, ord=2) <= gain ** 12 * (1 + 1e-9)


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 2.5])
def test_forget_gate_bias(forget_bias):
    for cls in (LSTMCell, PeepholeLSTMCell):
        cell = cls(I, H, forget_bias=forget_bias)
        total = (cell.bias_ih + cell.bias_hh)[H:2 * H]
        torch.testing.assert_close(total.detach(), torch.full((H,), forget_bias))


def test_bad_cell_options_are_named():
    with pytest.raises(ValueError, match="nonlinearity='sigmoid'.*tanh, relu"):
        VanillaCell(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="recurrent_init='eye'.*default, orthogonal, identity"):
        LSTMCell(I, H, recurrent_init="eye")


# -- the LSTM variants of Greff et al. 2016 ------------------------------------------------------
def greff_reference(variant, cell, x, h0, c0, gates_prev):
    """One step of Greff et al. 2016's equations (§II, §III), written from the paper: a_* = W_* x + R_* y
    + b_*; the variant is one change to the vanilla (peephole) LSTM. Parameters by gate name."""
    def by_gate(t, names):
        return dict(zip(names, t.chunk(len(names), dim=0)))

    W, U = by_gate(cell.weight_ih, cell.gate_names), by_gate(cell.weight_hh, cell.gate_names)
    b = by_gate(cell.bias_ih + cell.bias_hh, cell.gate_names)
    a = {k: x @ W[k].T + h0 @ U[k].T + b[k] for k in cell.gate_names}
    p = dict(zip(cell.peephole_names, cell.peephole)) if cell.peephole_names else {}
    if variant == "fgr":  # a_j += Σ_k R_jk k_{t-1}, j, k ∈ {i, f, o}
        R = cell.gate_recurrence
        prev = dict(zip("ifo", gates_prev.chunk(3, dim=1)))
        for row, j in enumerate("ifo"):
            for col, k in enumerate("ifo"):
                a[j] = a[j] + prev[k] @ R[row * H:(row + 1) * H, col * H:(col + 1) * H].T
    peep = lambda k, c: p[k] * c if k in p else 0  # noqa: E731
    i = 1 if variant == "nig" else sig(a["i"] + peep("i", c0))
    if variant == "nfg":
        f = 1
    elif variant == "cifg":
        f = 1 - i
    else:
        f = sig(a["f"] + peep("f", c0))
    g = a["g"] if variant == "niaf" else torch.tanh(a["g"])
    c = f * c0 + i * g
    o = 1 if variant == "nog" else sig(a["o"] + peep("o", c))
    h = o * (c if variant == "noaf" else torch.tanh(c))
    return h, c, (torch.cat([i, f, o], dim=1) if variant == "fgr" else None)


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_variant_step_is_its_equation(variant):
    cell = randomise(PeepholeLSTMCell(I, H, variant=variant))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    gates_prev = torch.rand(B, 3 * H)  # gate activations of t-1, in (0, 1)
    state = (h0, c0, gates_prev) if variant == "fgr" else (h0, c0)
    h, new_state = cell.step(cell.input_projection(x[None])[0], state)
    h_ref, c_ref, gates_ref = greff_reference(variant, cell, x, h0, c0, gates_prev)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(new_state[1], c_ref)
    assert new_state[0] is h
    if variant == "fgr":
        torch.testing.assert_close(new_state[2], gates_ref)


def test_vanilla_variant_is_the_peephole_equations():
    cell = randomise(PeepholeLSTMCell(I, H, variant="vanilla"))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    h, (_, c) = cell.step(cell.input_projection(x[None])[0], (h0, c0))
    h_ref, c_ref = lstm_reference(cell, x, h0, c0, peephole=True)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


# Per variant: the weight row blocks (gates) present, the peephole rows, the H x H gate-recurrence blocks.
VARIANT_LAYOUT = {
    "vanilla": ("ifgo", "ifo", 0), "nig": ("fgo", "fo", 0), "nfg": ("igo", "io", 0), "nog": ("ifg", "if", 0),
    "niaf": ("ifgo", "ifo", 0), "noaf": ("ifgo", "ifo", 0), "np": ("ifgo", "", 0), "cifg": ("igo", "io", 0),
    "fgr": ("ifgo", "ifo", 9),
}


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_variant_has_exactly_the_parameters_its_equations_use(variant):
    gates, peepholes, recurrence_blocks = VARIANT_LAYOUT[variant]
    cell = PeepholeLSTMCell(I, H, variant=variant)
    assert cell.gate_names == tuple(gates) and cell.peephole_names == tuple(peepholes)
    G = len(gates)
    # W (G·H x I), U (G·H x H), two biases (torch's layout), a peephole vector per gate, R_jk (H x H)
    expected = G * H * (I + H + 2) + len(peepholes) * H + recurrence_blocks * H * H
    assert sum(p.numel() for p in cell.parameters()) == expected
    shapes = {n: tuple(p.shape) for n, p in cell.named_parameters()}
    assert shapes["weight_ih"] == (G * H, I) and shapes["weight_hh"] == (G * H, H)
    assert ("peephole" in shapes) == bool(peepholes) and ("gate_recurrence" in shapes) == bool(recurrence_blocks)
    # and every one of them is used: each gets a nonzero gradient (fgr's R from the second step on)
    out, _ = randomise(cell)(torch.randn(3, B, I))
    out.square().sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad.abs().sum() > 0, name


def test_vanilla_variant_keeps_the_peephole_cells_parameters_and_numbers():
    """cell=peephole must stay what it was: names, shapes and the values a seed draws."""
    torch.manual_seed(3)
    default = PeepholeLSTMCell(I, H)
    torch.manual_seed(3)
    vanilla = PeepholeLSTMCell(I, H, variant="vanilla")
    assert [(n, p.shape) for n, p in default.named_parameters()] == [
        ("weight_ih", (4 * H, I)), ("weight_hh", (4 * H, H)), ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,)),
        ("peephole", (3, H))]
    for (n, p), (_, q) in zip(default.named_parameters(), vanilla.named_parameters()):
        assert torch.equal(p, q), n


def test_np_variant_is_torch_lstm():
    """No peepholes: LSTMCell's parameters, torch.nn.LSTM's function, and the fused kernel serves it."""
    cell = randomise(PeepholeLSTMCell(I, H, variant="np"))
    assert cell.fused_mode == "lstm"
    assert {n: p.shape for n, p in cell.named_parameters()} == {n: p.shape for n, p in LSTMCell(I, H).named_parameters()}
    ref = torch.nn.LSTM(I, H)
    ref.load_state_dict({f"{n}_l0": p for n, p in cell.state_dict().items()})
    x = torch.randn(6, B, I)
    out, (h, c) = cell(x)
    ref_out, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(c, c_ref[0])


@pytest.mark.parametrize("variant", [v for v in LSTM_VARIANTS if v != "np"])
def test_no_torch_kernel_claims_a_variant(variant):
    assert PeepholeLSTMCell(I, H, variant=variant).fused_mode is None


def test_fgr_reads_the_previous_gates():
    """FGR: zero previous gates at t = 0 (R has no effect on the first step), R matters from t = 2."""
    cell = randomise(PeepholeLSTMCell(I, H, variant="fgr"))
    assert torch.equal(cell.default_state(B)[2], torch.zeros(B, 3 * H))
    x = torch.randn(2, B, I)
    out, _ = cell(x)
    with torch.no_grad():
        cell.gate_recurrence.add_(1.0)
    out2, _ = cell(x)
    torch.testing.assert_close(out2[0], out[0])
    assert (out2[1] - out[1]).abs().max() > 1e-3


@pytest.mark.parametrize("forget_bias", [1.0, 2.5])
def test_variant_gate_biases(forget_bias):
    """The forget gate starts at σ(forget_bias) wherever it is learned; CIFG's f = 1 - σ(a_i) = σ(-a_i)
    starts there too (b_i = -forget_bias); NFG has no forget gate to bias."""
    for variant in LSTM_VARIANTS:
        cell = PeepholeLSTMCell(I, H, forget_bias=forget_bias, variant=variant)
        total = dict(zip(cell.gate_names, (cell.bias_ih + cell.bias_hh).detach().chunk(cell.gates)))
        if "f" in total:
            torch.testing.assert_close(total["f"], torch.full((H,), forget_bias))
        if variant == "cifg":
            torch.testing.assert_close(total["i"], torch.full((H,), -forget_bias))
        elif "i" in total:  # random, as torch's init draws it
            assert total["i"].abs().max() <= 2 / H ** 0.5 and total["i"].std() > 0


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match=r"cell.variant='cfig' is not allowed: choose one of vanilla, nig, nfg, nog, "
                                         r"niaf, noaf, np, cifg, fgr"):
        PeepholeLSTMCell(I, H, variant="cfig")


# ------------------------------------------------------------------------------------------------
# Arjovsky et al. 2016's LSTM (their code's models.py `LSTM`)


def test_arjovsky_lstm_step_is_their_equations_with_v_o_on_the_new_cell_state():
    cell = randomise(ArjovskyLSTMCell(I, H))
    x, h, c = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    W, U = blocks(cell.weight_ih, 4), blocks(cell.weight_hh, 4)
    b = blocks(cell.bias_ih + cell.bias_hh, 4)
    pre = [x @ W[k].T + h @ U[k].T + b[k] for k in range(4)]
    i, f, g = sig(pre[0]), sig(pre[1]), torch.tanh(pre[2])
    c_new = f * c + i * g
    o = sig(pre[3] + c_new @ cell.cell_output.T)
    h_new, (_, c_out) = cell.step(cell.input_projection(x[None])[0], (h, c))
    torch.testing.assert_close(c_out, c_new)
    torch.testing.assert_close(h_new, o * torch.tanh(c_new))


def test_arjovsky_lstm_init_is_glorot_per_gate_block_with_only_the_forget_bias_set():
    cell = ArjovskyLSTMCell(I, 64, forget_bias=1.0)
    for block, bound in [*((w, (6 / (I + 64)) ** 0.5) for w in blocks(cell.weight_ih, 4)),
                         *((u, (6 / 128) ** 0.5) for u in blocks(cell.weight_hh, 4)), (cell.cell_output, (6 / 128) ** 0.5)]:
        assert block.abs().max() <= bound and block.abs().max() > 0.9 * bound  # uniform on the whole range
    bias = blocks((cell.bias_ih + cell.bias_hh).detach(), 4)
    assert [float(b.abs().max()) for b in (bias[0], bias[2], bias[3])] == [0.0, 0.0, 0.0]
    assert torch.equal(bias[1], torch.ones(64)) and torch.equal(cell.initial_state, torch.zeros(2, 64))


def test_arjovsky_lstm_learns_its_initial_state_and_with_every_switch_off_is_the_lstm():
    cell = ArjovskyLSTMCell(I, H)
    h0, c0 = cell.default_state(B)
    assert h0.shape == (B, H) and h0._base is not None  # the parameter itself, broadcast over the batch
    out, _ = cell(torch.randn(6, B, I), cell.default_state(B))
    out.sum().backward()
    assert cell.initial_state.grad.abs().sum() > 0
    torch.manual_seed(1)
    plain = ArjovskyLSTMCell(I, H, glorot=False, cell_to_output=False, learned_initial_state=False)
    torch.manual_seed(1)
    lstm = LSTMCell(I, H)
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in lstm.named_parameters()]
    x = torch.randn(6, B, I)
    torch.testing.assert_close(plain(x, plain.default_state(B))[0], lstm(x, lstm.default_state(B))[0], rtol=0, atol=0)
    assert plain.fused_mode == "lstm" and cell.fused_mode is None


def test_arjovsky_lstm_parameter_count_is_the_lstms_plus_v_o_and_the_initial_state():
    cell = ArjovskyLSTMCell(I, H)
    assert sum(p.numel() for p in cell.parameters()) == 4 * H * (I + H) + 2 * 4 * H + H * H + 2 * H
    with pytest.raises(ValueError, match="cell.recurrent_init='orthogonal' is not allowed with cell.glorot=true"):
        ArjovskyLSTMCell(I, H, recurrent_init="orthogonal")
