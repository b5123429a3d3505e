"""The cells against their equations (the papers each cell class cites), written out independently here."""

import functools

import pytest
import torch

from rnnbench.modules.cells import (CELLS, LSTM_VARIANTS, ArjovskyLSTMCell, Cell, GRUCell, LSTMCell, PeepholeLSTMCell,
                                    VanillaCell)

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


@pytest.mark.parametrize("gain", [0.5, 1.5, 2.0])
def test_recurrent_gain_sets_the_spectral_norm_of_an_orthogonal_u(gain):
    for name in ("vanilla", "lstm", "gru", "peephole", "lstm_arjovsky"):
        glorot = {"glorot": False} if name == "lstm_arjovsky" else {}  # Glorot draws U itself
        cell = CELLS[name](I, 16, recurrent_init="orthogonal", recurrent_gain=gain, **glorot)
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
        assert block.abs().max() <= bound and block.max() > 0.9 * bound and block.min() < -0.9 * bound  # U(±bound)
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
    # Glorot's draw replaces U after the gain has scaled it: a gain would silently do nothing
    with pytest.raises(ValueError, match=r"^cell.recurrent_gain=0.5 is not allowed with cell.glorot=true \(Glorot "
                                         r"initialises U too\): leave it at 1.0, or cell.glorot=false$"):
        ArjovskyLSTMCell(I, H, recurrent_gain=0.5)


# ------------------------------------------------------------------------------------------------
# The shared interface: sizes, defaults, the state, the σ gates reported, re-initialising, the repr


def test_a_size_is_a_positive_integer_named_in_its_message():
    assert VanillaCell(1, 1).step(torch.zeros(2, 1), (torch.zeros(2, 1),))[0].shape == (2, 1)  # 1 is a size
    for args, message in [((I, 0), "hidden_size=0"), ((0, H), "input_size=0"), ((True, H), "input_size=True")]:
        with pytest.raises(ValueError, match=rf"^{message} is not allowed: must be a positive integer \(>= 1\)$"):
            VanillaCell(*args)


class UsersCell(Cell):  # a cell of a user's own, on the base class's defaults
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)


def test_a_users_cell_on_the_base_defaults_gets_torchs_init_and_no_gain():
    torch.manual_seed(0)
    cell = UsersCell(I, 16)
    assert (cell.input_size, cell.hidden_size, cell.recurrent_init, cell.recurrent_gain) == (I, 16, "default", 1.0)
    bound = 16 ** -0.5  # torch's U(-1/sqrt(H), 1/sqrt(H)) on every weight and bias
    for p in cell.parameters():
        assert p.abs().max() <= bound and p.max() > 0.5 * bound and p.min() < -0.5 * bound


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_identity_init_puts_an_identity_in_every_gate_block(name):
    cell = CELLS[name](I, H, recurrent_init="identity")
    for block in cell.weight_hh.detach().chunk(cell.gates, dim=0):
        torch.testing.assert_close(block, torch.eye(H))


@pytest.mark.parametrize("cls", [LSTMCell, PeepholeLSTMCell, ArjovskyLSTMCell])
def test_the_forget_bias_is_one_by_default_and_the_other_gate_biases_stay_drawn(cls):
    """Jozefowicz et al. 2015's b_f = 1; only the forget block is set, the other blocks keep torch's draw
    (glorot off: the Arjovsky cell's own init zeroes them)."""
    torch.manual_seed(0)
    cell = cls(I, H, **({"glorot": False} if cls is ArjovskyLSTMCell else {}))
    total = (cell.bias_ih + cell.bias_hh).detach()
    torch.testing.assert_close(total[H:2 * H], torch.ones(H))
    bound = H ** -0.5
    for k in (0, 2, 3):  # i, g, o: drawn, in U(±1/sqrt(H)), in both vectors
        for bias in (cell.bias_ih, cell.bias_hh):
            block = bias.detach()[k * H:(k + 1) * H]
            assert block.abs().max() <= bound and block.abs().min() > 0
    assert torch.equal(cell.bias_hh.detach()[H:2 * H], torch.zeros(H))
    assert PeepholeLSTMCell(I, H).recurrent_gain == 1.0


@pytest.mark.parametrize("name,make", ALL_CELLS, ids=[n for n, _ in ALL_CELLS])
def test_the_default_state_has_one_b_by_h_entry_per_state_name_on_the_asked_device_and_dtype(name, make):
    cell = make(I, H)
    expected = {"peephole_fgr": ("h", "c", "gates")}.get(name, ("h",) if "vanilla" in name or "gru" in name
                                                                 else ("h", "c"))
    assert cell.state_names == expected
    state = cell.default_state(B)
    widths = [3 * H if n == "gates" else H for n in expected]  # fgr carries i, f, o of the step before
    assert [tuple(s.shape) for s in state] == [(B, w) for w in widths]
    assert all(not s.any() for s in state)  # zeros (the Arjovsky cell's learned state starts at zero)
    meta = cell.default_state(B, torch.device("meta"), torch.float64)
    assert {(s.device.type, s.dtype) for s in meta} == {("meta", torch.float64)}
    out, final = cell.double()(torch.randn(5, B, I, dtype=torch.float64))  # no state given: x's dtype
    assert out.dtype == torch.float64 and {s.dtype for s in final} == {torch.float64}
    out, _ = cell.to("meta")(torch.zeros(5, B, I, device="meta", dtype=torch.float64))  # and x's device
    assert out.device.type == "meta"


def lstm_gates_by_hand(cell, x, h0, c0):
    """σ gates of one step of torch's LSTM equations (i, f, o), V_o c_t added for the Arjovsky cell's o."""
    W, U = blocks(cell.weight_ih, 4), blocks(cell.weight_hh, 4)
    b = blocks(cell.bias_ih + cell.bias_hh, 4)
    a = [x @ W[k].T + h0 @ U[k].T + b[k] for k in range(4)]
    i, f = sig(a[0]), sig(a[1])
    c = f * c0 + i * torch.tanh(a[2])
    if getattr(cell, "cell_to_output", False):
        a[3] = a[3] + c @ cell.cell_output.T
    return {"input": i, "forget": f, "output": sig(a[3])}


@pytest.mark.parametrize("make", [LSTMCell, ArjovskyLSTMCell, functools.partial(ArjovskyLSTMCell, cell_to_output=False)],
                         ids=["lstm", "lstm_arjovsky", "lstm_arjovsky_no_v_o"])
def test_an_lstm_reports_its_input_forget_and_output_gates(make):
    cell = randomise(make(I, H))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    gates = {}
    cell.step(cell.input_projection(x[None])[0], (h0, c0), gates=gates)
    expected = lstm_gates_by_hand(cell, x, h0, c0)
    assert set(gates) == set(expected) == set(cell.gate_activations)
    for name in expected:
        torch.testing.assert_close(gates[name], expected[name], msg=name)


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_a_peephole_variant_reports_the_sigmoid_gates_it_has(variant):
    """Greff et al.'s variants: a removed gate is not reported, cifg's f = 1 - i is not a σ gate of its own."""
    cell = randomise(PeepholeLSTMCell(I, H, variant=variant))
    x, h0, c0 = torch.randn(B, I), torch.randn(B, H), torch.randn(B, H)
    gates_prev = torch.rand(B, 3 * H)
    state = (h0, c0, gates_prev) if variant == "fgr" else (h0, c0)
    gates = {}
    cell.step(cell.input_projection(x[None])[0], state, gates=gates)
    present = {"nig": ("forget", "output"), "nfg": ("input", "output"), "cifg": ("input", "output"),
               "nog": ("input", "forget")}.get(variant, ("input", "forget", "output"))
    assert tuple(gates) == present and cell.gate_activations == present
    if variant == "fgr":  # the reference gives i, f, o of this step
        _, _, ifo = greff_reference(variant, cell, x, h0, c0, gates_prev)
        for name, value in zip(("input", "forget", "output"), ifo.chunk(3, dim=1)):
            torch.testing.assert_close(gates[name], value, msg=name)


@pytest.mark.parametrize("reset_after", [True, False])
def test_a_gru_reports_its_reset_and_update_gates(reset_after):
    cell = randomise(GRUCell(I, H, reset_after=reset_after))
    x, h0 = torch.randn(B, I), torch.randn(B, H)
    gates = {}
    cell.step(cell.input_projection(x[None])[0], (h0,), gates=gates)
    Wr, Wz, _ = blocks(cell.weight_ih, 3)
    Ur, Uz, _ = blocks(cell.weight_hh, 3)
    br, bz, _ = blocks(cell.bias_ih + cell.bias_hh, 3)
    assert list(gates) == ["reset", "update"] == list(cell.gate_activations)
    torch.testing.assert_close(gates["reset"], sig(x @ Wr.T + h0 @ Ur.T + br))
    torch.testing.assert_close(gates["update"], sig(x @ Wz.T + h0 @ Uz.T + bz))


@pytest.mark.parametrize("make", [ArjovskyLSTMCell, functools.partial(PeepholeLSTMCell, variant="fgr"),
                                  PeepholeLSTMCell], ids=["lstm_arjovsky", "peephole_fgr", "peephole"])
def test_reinitialising_a_cell_keeps_its_parameter_objects(make):
    """reset_parameters draws again into the same tensors: an optimiser holding them still trains the cell."""
    cell = make(I, H)
    before = dict(cell.named_parameters())
    cell.reset_parameters()
    after = dict(cell.named_parameters())
    assert list(after) == list(before) and all(after[n] is before[n] for n in before)


def test_the_arjovsky_cell_without_v_o_still_draws_glorot():
    cell = ArjovskyLSTMCell(I, 64, cell_to_output=False)
    assert not hasattr(cell, "cell_output")
    bound = (6 / 128) ** 0.5
    assert all(u.abs().max() <= bound for u in blocks(cell.weight_hh.detach(), 4))


def test_a_cell_names_its_options_in_its_repr():
    """What `print(model)` and the backend's error message show."""
    assert VanillaCell(I, H).extra_repr() == "4, 5, recurrent_init='default'"
    assert VanillaCell(I, H, recurrent_gain=0.5).extra_repr() == "4, 5, recurrent_init='default', recurrent_gain=0.5"
    assert LSTMCell(I, H, forget_bias=2.0).extra_repr() == "4, 5, recurrent_init='default', forget_bias=2.0"
    assert PeepholeLSTMCell(I, H, variant="nig").extra_repr() == \
        "4, 5, recurrent_init='default', forget_bias=1.0, variant='nig'"
    assert GRUCell(I, H, reset_after=False).extra_repr() == "4, 5, recurrent_init='default', reset_after=False"
    assert ArjovskyLSTMCell(I, H).extra_repr() == ("4, 5, recurrent_init='default', forget_bias=1.0, glorot=True, "
                                                   "cell_to_output=True, learned_initial_state=True")


def test_the_arjovsky_cell_without_a_learned_state_starts_from_zeros_on_the_asked_device_and_dtype():
    cell = ArjovskyLSTMCell(I, H, learned_initial_state=False)
    state = cell.default_state(B, torch.device("meta"), torch.float64)
    assert [(tuple(s.shape), s.device.type, s.dtype) for s in state] == [((B, H), "meta", torch.float64)] * 2
    assert all(not s.any() for s in cell.default_state(B))
