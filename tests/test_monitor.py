"""The spike monitor: its λ_grad(Ĥ) is the tracker's, its secant the exact directional
curvature on a quadratic, its D Adam's own (AdamW, two groups), its TensorBoard file holds
every scalar, its fallback product agrees, and bad input is refused by name."""
import math

import pytest
import torch

from utils.curvature.adam_state import read_adam_state
from utils.curvature.preconditioned import gradient_curvatures
from utils.curvature.hvp import LossHessian, loss_of_params
from utils.training.losses import mse
from utils.monitor import AlarmRule, SpikeMonitor


def mlp_problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).double()
    return model, (x, y)


def loss_fn(model, batch):
    x, y = batch
    return mse(model(x), y)


def train(model, opt, monitor, batch, steps, check=None):
    for _ in range(steps):
        opt.zero_grad()
        loss = monitor.loss_fn(model, batch)
        loss.backward()
        monitor.observe(batch, loss=loss)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        row = monitor.after_step()
        if check is not None:
            check(row, before)


def test_lambda_grad_is_the_trackers_on_the_chapter_1_model():
    """On chapter 1's MLP (full batch), the monitor's λ_grad(Ĥ) at every measured step equals
    gradient_curvatures on the Hessian at θ_t with D_t read from torch.optim.Adam after the
    step, which is what the tracker measures."""
    from utils.studies.settings import chapter_config
    from utils.training.runs import build_data, build_model_for

    config = chapter_config("01_v_decay")
    data = build_data(config)
    model = build_model_for(config, data)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    monitor = SpikeMonitor(model, opt, loss_fn, every=5, dtype=torch.float64)
    batch = (data.inputs, data.targets)
    compared = []

    def check(row, before):
        if row["step"] % 5:
            return
        h = LossHessian(loss_of_params(model, mse, *batch), before)
        state = read_adam_state(opt)
        want = gradient_curvatures(h, state.preconditioner, state.c)
        assert row["lambda_grad_pre"] == pytest.approx(want["lambda_grad_pre"], rel=1e-9)
        assert row["lambda_grad_pre_a"] == pytest.approx(want["lambda_grad_pre_a"], rel=1e-9)
        compared.append(row["step"])

    train(model, opt, monitor, batch, 30, check)
    assert compared == [5, 10, 15, 20, 25, 30]


class Quadratic(torch.nn.Module):
    """L(θ) = ½ θᵀAθ for a fixed SPD A (the batch is ignored)."""

    def __init__(self, n=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
        self.register_buffer("a", q @ torch.diag(torch.logspace(-1, 1, n, dtype=torch.float64)) @ q.T)
        self.theta = torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))

    def forward(self, _batch):
        return 0.5 * self.theta @ self.a @ self.theta


def test_secant_is_the_exact_directional_curvature_on_a_quadratic():
    model = Quadratic()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    monitor = SpikeMonitor(model, opt, lambda m, b: m(b), every=100)
    previous = {}

    def check(row, before):
        theta = before["theta"]
        if previous:
            dtheta = theta - previous["theta"]
            d, c = previous["d"], previous["c"]
            want = c * float(dtheta @ model.a @ dtheta) / float((dtheta ** 2 / d).sum())
            assert row["secant"] == pytest.approx(want, rel=1e-9)
            previous["checked"] = previous.get("checked", 0) + 1
        else:
            assert math.isnan(row["secant"])
        state = read_adam_state(opt)
        previous.update(theta=theta, d=state.preconditioner, c=state.c)

    train(model, opt, monitor, None, 12, check)
    assert previous["checked"] == 11


def test_adamw_with_two_groups_gives_adams_d():
    """AdamW with two parameter groups (weight decay on one): the D the monitor uses for a
    step is the preconditioner utils.curvature.adam_state reads after it."""
    model, batch = mlp_problem()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": weights, "weight_decay": 0.1},
                             {"params": biases, "weight_decay": 0.0}], lr=0.01)
    monitor = SpikeMonitor(model, opt, loss_fn, every=3, dtype=torch.float64)
    for _ in range(8):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        monitor.observe(batch)
        d, c, t, _, _ = monitor.preconditioner(monitor._flat_grad())
        opt.step()
        monitor.after_step()
        state = read_adam_state(opt)
        torch.testing.assert_close(d, state.preconditioner, rtol=1e-12, atol=0)
        assert (c, t) == (state.c, state.step)


def test_tensorboard_file_holds_every_logged_scalar_and_the_csv_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, batch = mlp_problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = SpikeMonitor(model, opt, loss_fn, every=4, lambda_max=True,
                           csv_path=tmp_path / "monitor.csv", log_dir=tmp_path / "tb")
    train(model, opt, monitor, batch, 12)
    report = monitor.close()
    assert report["steps"] == 12 and report["overhead_ratio"] > 1
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    logged = {k for r in monitor.rows for k, v in r.items()
              if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
    assert tags == {f"monitor/{k}" for k in logged}
    for key in ("lambda_grad_pre", "lambda_max_pre", "update_rms/0.weight"):
        assert [e.step for e in events.Scalars(f"monitor/{key}")] == [4, 8, 12]
    assert len(events.Scalars("monitor/secant")) == 11
    import pandas as pd

    table = pd.read_csv(tmp_path / "monitor.csv")
    assert list(table["step"]) == list(range(1, 13))
    assert table["lambda_max_pre"].notna().sum() == 3
    assert (table["lambda_max_pre"].dropna() >= table["lambda_grad_pre"].dropna() - 1e-6).all()


def test_finite_difference_fallback_is_taken_once_said_and_recorded(monkeypatch):
    """An out-of-memory error in the double backward pass switches the monitor to finite
    differences once, with a warning and a note, and each row records its product; the values
    agree with the double backward ones."""
    import utils.curvature.hvp

    model, batch = mlp_problem()
    ref_model, _ = mlp_problem()
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (model, ref_model)]
    ref = SpikeMonitor(ref_model, opts[1], loss_fn, every=2, hvp="autograd", dtype=torch.float64)
    train(ref_model, opts[1], ref, batch, 6)
    real = utils.curvature.hvp.LossHessian._double_backward

    def oom(self, vectors):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monitor = SpikeMonitor(model, opts[0], loss_fn, every=2, dtype=torch.float64)
    monkeypatch.setattr(utils.curvature.hvp.LossHessian, "_double_backward", oom)
    with pytest.warns(RuntimeWarning, match="finite differences"):
        train(model, opts[0], monitor, batch, 6)
    monkeypatch.setattr(utils.curvature.hvp.LossHessian, "_double_backward", real)
    measured = [r for r in monitor.rows if r["step"] % 2 == 0]
    assert [r["hvp"] for r in measured] == ["finite_difference"] * 3
    assert len(monitor.notes) == 1
    for a, b in zip(measured, [r for r in ref.rows if r["step"] % 2 == 0]):
        assert a["lambda_grad_pre"] == pytest.approx(b["lambda_grad_pre"], rel=1e-5)


def test_a_bfloat16_model_is_measured_in_float32():
    model, (x, y) = mlp_problem()
    model = model.to(torch.bfloat16)
    batch = (x.to(torch.bfloat16), y.to(torch.bfloat16))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = SpikeMonitor(model, opt, loss_fn, every=2)
    assert monitor.dtype == torch.float32
    train(model, opt, monitor, batch, 4)
    assert all(math.isfinite(r["lambda_grad_pre"]) for r in monitor.rows if r["step"] % 2 == 0)


def test_the_alarm_fires_by_its_rule():
    model, batch = mlp_problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = SpikeMonitor(model, opt, loss_fn, every=1,
                           alarm=AlarmRule("lambda_grad_pre", threshold=1e-9, sustain=2))
    train(model, opt, monitor, batch, 4)
    assert [r["alarm"] for r in monitor.rows] == [False, True, True, True]
    with pytest.raises(ValueError, match="alarm signal must be one of"):
        AlarmRule("loss")


@pytest.mark.parametrize("make, match", [
    (lambda m: dict(optimizer=torch.optim.SGD(m.parameters(), lr=0.1)),
     "optimizer must be a torch.optim.Adam or torch.optim.AdamW"),
    (lambda m: dict(optimizer=torch.optim.Adam(
        [{"params": [m[0].weight], "betas": (0.9, 0.99)}, {"params": [m[0].bias]}], lr=0.1)),
     "every parameter group must share betas and eps"),
    (lambda m: dict(optimizer=torch.optim.Adam(
        [{"params": [m[0].weight], "eps": 1e-6}, {"params": [m[0].bias]}], lr=0.1)),
     "every parameter group must share betas and eps"),
    (lambda m: dict(every=0), "every must be"),
    (lambda m: dict(eval_batch=(torch.zeros(2, 3, dtype=torch.float64),) * 2,
                    loss_fn=lambda model, b: (model(b[0]) - 1) ** 2),
     "loss_fn must return a scalar tensor"),
    (lambda m: dict(hvp="fd"), "hvp must be one of"),
])
def test_bad_input_is_refused_by_name(make, match):
    model = torch.nn.Sequential(torch.nn.Linear(3, 1)).double()
    kwargs = dict(optimizer=torch.optim.Adam(model.parameters(), lr=0.1), loss_fn=loss_fn)
    kwargs.update(make(model))
    with pytest.raises(ValueError, match=match):
        SpikeMonitor(model, kwargs.pop("optimizer"), kwargs.pop("loss_fn"), **kwargs)


def test_a_model_without_trainable_parameters_and_a_vector_loss_are_refused():
    model = torch.nn.Linear(3, 1).double()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameter"):
        SpikeMonitor(model, torch.optim.Adam(model.parameters(), lr=0.1), loss_fn)
    model, batch = mlp_problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    monitor = SpikeMonitor(model, opt, lambda m, b: (m(b[0]) - b[1]) ** 2)
    loss_fn(model, batch).backward()
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor"):
        monitor.observe(batch)


def test_the_g2_over_v_summaries_of_a_large_model_come_from_a_fixed_sample(monkeypatch):
    """Above STATS_SAMPLE coordinates the summaries are exact on a sample drawn once (the same
    coordinates at every measured step), and the sample's median lies near the whole model's;
    at or below it they are the whole model's."""
    import utils.monitor
    from utils.curvature.adam_state import g2_over_v_statistics

    model, batch = mlp_problem()
    n = sum(p.numel() for p in model.parameters())          # 81
    monkeypatch.setattr(utils.monitor, "STATS_SAMPLE", 40)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    monitor = SpikeMonitor(model, opt, loss_fn, every=2, dtype=torch.float64)
    seen = []

    def check(row, before):
        if row["step"] % 2 == 0:
            g, v_prev = monitor._flat_grad(), monitor._state(key=None)[0]
            # the state now holds this step's v: undo the update to get v_{t-1}
            beta2 = opt.param_groups[0]["betas"][1]
            v_prev = (v_prev - (1 - beta2) * g * g) / beta2
            idx = monitor._sample
            seen.append(idx.clone())
            want = g2_over_v_statistics(g[idx], v_prev[idx])
            assert row["g2_over_v_median"] == pytest.approx(want["g2_over_v_median"], rel=1e-9)
            whole = g2_over_v_statistics(g, v_prev)
            rank = float((g * g / v_prev < row["g2_over_v_median"]).double().mean())
            assert 0.25 < rank < 0.75, (rank, whole)

    train(model, opt, monitor, batch, 6, check=check)
    assert len(seen) == 3 and all(torch.equal(s, seen[0]) for s in seen)
    assert len(seen[0]) == 40 and len(set(seen[0].tolist())) == 40 and int(seen[0].max()) < n
    # at STATS_SAMPLE = n, every coordinate: no sample is drawn
    monkeypatch.setattr(utils.monitor, "STATS_SAMPLE", n)
    model, batch = mlp_problem()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    whole = SpikeMonitor(model, opt, loss_fn, every=2, dtype=torch.float64)
    train(model, opt, whole, batch, 4)
    assert whole._sample is None and math.isfinite(whole.rows[-1]["g2_over_v_median"])
