"""Gate statistics (Karpathy, Johnson & Fei-Fei 2015): per layer and gate, the mean activation and the
fractions of left- (< 0.1) and right-saturated (> 0.9) values on the probe batch, overall and per unit,
taken on the temporal profile's explicit forward pass; off for cells without gates."""

from __future__ import annotations

import pytest
import torch

from rnnbench.modules.cells import LSTM_VARIANTS, GRUCell, LSTMCell, PeepholeLSTMCell, VanillaCell
from rnnbench.modules.diagnostics import gate_scalars, temporal_profile
from rnnbench.modules.models import SequenceModel
from rnnbench.run.train import TrainSettings, Trainer
from rnnbench.tasks.adding import AddingTask
from rnnbench.tasks.base import Batch, IOSpec

SPEC = IOSpec(input_kind="continuous", input_size=3, output_size=1, output_kind="sequence", loss_kind="regression")


def mse(outputs, batch):
    return torch.nn.functional.mse_loss(outputs, batch.targets)


def reference_lstm_gates(cell: LSTMCell, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """i, f, o of torch.nn.LSTM's equations, step by step from the cell's tensors: each (T, B, H)."""
    H = cell.hidden_size
    h = c = torch.zeros(x.shape[1], H, dtype=x.dtype)
    out = {"input": [], "forget": [], "output": []}
    for x_t in x:
        a = x_t @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        i, f, g, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.tanh(a[:, 2 * H:3 * H]), \
            torch.sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        for name, value in (("input", i), ("forget", f), ("output", o)):
            out[name].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def expected_stats(g: torch.Tensor, valid: torch.Tensor) -> dict:
    """The statistics of gate values g (T, B, H) over the valid (T, B) steps."""
    values = g[valid]                                                            # (n, H)
    unit_left, unit_right = (values < 0.1).double().mean(0), (values > 0.9).double().mean(0)
    return {"mean": values.mean().item(), "left_saturated": unit_left.mean().item(),
            "right_saturated": unit_right.mean().item(), "unit_left": unit_left.tolist(),
            "unit_right": unit_right.tolist()}


@pytest.mark.parametrize("scale", [1.0, 8.0])  # 8: most gates saturated, both ways
def test_lstm_gate_statistics_equal_the_equations_on_a_padded_batch(scale):
    torch.manual_seed(0)
    model = SequenceModel(SPEC, LSTMCell, 6).double()
    cell = model.stack.layers[0].directions[0]
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(scale)
    T, B = 9, 5
    x = torch.randn(T, B, 3, dtype=torch.double)
    lengths = torch.tensor([9, 4, 7, 1, 9])
    batch = Batch(inputs=x, targets=torch.randn(B, 1, dtype=torch.double), lengths=lengths)
    stats = temporal_profile(model, mse, batch)["gates"]["layer0"]
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)                  # (T, B)
    reference = reference_lstm_gates(cell, x)
    assert list(stats) == ["input", "forget", "output"]
    for gate, g in reference.items():
        want = expected_stats(g, valid)
        for key in ("mean", "left_saturated", "right_saturated"):
            assert stats[gate][key] == pytest.approx(want[key], abs=1e-12), (gate, key)
        assert stats[gate]["unit_left"] == pytest.approx(want["unit_left"], abs=1e-12)
        assert stats[gate]["unit_right"] == pytest.approx(want["unit_right"], abs=1e-12)
    if scale == 8.0:
        assert max(stats[g]["left_saturated"] + stats[g]["right_saturated"] for g in stats) > 0.5, stats
        assert all(sum(stats[g][side] for g in stats) > 0 for side in ("left_saturated", "right_saturated"))


def test_gru_gates_are_reset_and_update_and_nan_inputs_give_nan_means():
    torch.manual_seed(0)
    model = SequenceModel(SPEC, GRUCell, 4)
    x = torch.randn(6, 3, 3)
    x[2, 1, 0] = float("nan")
    batch = Batch(inputs=x, targets=torch.zeros(3, 1))
    stats = temporal_profile(model, mse, batch)["gates"]["layer0"]
    assert list(stats) == ["reset", "update"]
    assert all(stats[g]["mean"] != stats[g]["mean"] for g in stats)  # NaN propagates, is not hidden
    assert all(0 <= stats[g]["left_saturated"] <= 1 for g in stats)  # NaN compares false: never saturated


def test_recording_the_gates_changes_nothing_the_model_computes():
    torch.manual_seed(0)
    task = AddingTask(seq_len=12, batch_size=8, val_size=16, seed=0)
    model = SequenceModel(task.spec, PeepholeLSTMCell, 8)
    with_gates = temporal_profile(model, task.loss, task.probe_batch(), gate_stats=True)
    without = temporal_profile(model, task.loss, task.probe_batch(), gate_stats=False)
    assert "gates" in with_gates and "gates" not in without
    assert with_gates["layers"] == without["layers"] and with_gates["loss"] == without["loss"]


@pytest.mark.parametrize("variant", list(LSTM_VARIANTS))
def test_every_lstm_variant_reports_its_own_sigmoid_gates(variant):
    torch.manual_seed(0)
    model = SequenceModel(SPEC, lambda i, h: PeepholeLSTMCell(i, h, variant=variant), 4, num_layers=2,
                          bidirectional=True)
    batch = Batch(inputs=torch.randn(5, 2, 3), targets=torch.zeros(2, 1))
    gates = temporal_profile(model, mse, batch)["gates"]
    want = {"nig": ["forget", "output"], "nfg": ["input", "output"], "cifg": ["input", "output"],
            "nog": ["input", "forget"]}.get(variant, ["input", "forget", "output"])
    assert list(gates) == ["layer0", "layer0_reverse", "layer1", "layer1_reverse"]
    assert all(list(by_gate) == want for by_gate in gates.values())
    assert all(len(s["unit_left"]) == 4 for by_gate in gates.values() for s in by_gate.values())


def test_cells_without_gates_have_no_gate_statistics():
    model = SequenceModel(SPEC, VanillaCell, 4)
    profile = temporal_profile(model, mse, Batch(inputs=torch.randn(5, 2, 3), targets=torch.zeros(2, 1)))
    assert "gates" not in profile


def test_the_trainer_records_gate_statistics_with_each_profile():
    class Sink:
        profiles: list = []

        def log(self, row):
            pass

        def log_profile(self, step, profile):
            self.profiles.append(profile)

    torch.manual_seed(0)
    task = AddingTask(seq_len=10, batch_size=8, val_size=16, seed=0)
    model = SequenceModel(task.spec, LSTMCell, 8)
    sink = Sink()
    settings = TrainSettings(max_steps=4, log_every=2, eval_every=2, profile_every=2, progress=False)
    Trainer(model, task, torch.optim.Adam(model.parameters()), None, settings, [sink]).fit()
    assert [p["step"] for p in sink.profiles] == [0, 2, 4]  # at initialisation too
    assert all(set(p["gates"]["layer0"]) == {"input", "forget", "output"} for p in sink.profiles)
    scalars = gate_scalars(sink.profiles[-1]["gates"])
    assert set(scalars) == {f"gates/layer0/{g}/{k}" for g in ("input", "forget", "output")
                            for k in ("mean", "left_saturated", "right_saturated")}


def test_the_wandb_mirror_gets_the_gate_scalars_of_a_profile():
    from rnnbench.records.wandb_sink import WandbTrainerSink

    class Recorded:
        def __init__(self):
            self.rows = []

        def log(self, row, step):
            self.rows.append((step, row))

        def log_profile(self, step, layers):
            pass

    torch.manual_seed(0)
    task = AddingTask(seq_len=8, batch_size=8, val_size=8, seed=0)
    profile = temporal_profile(SequenceModel(task.spec, GRUCell, 4), task.loss, task.probe_batch())
    recorded = Recorded()
    WandbTrainerSink(recorded).log_profile(7, {**profile, "step": 7})
    gates = [row for step, row in recorded.rows if step == 7 and any(k.startswith("gates/") for k in row)]
    assert gates == [gate_scalars(profile["gates"])]
    assert gates[0]["gates/layer0/update/mean"] == profile["gates"]["layer0"]["update"]["mean"]
