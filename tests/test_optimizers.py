"""The library optimizers and the clipper: our wiring calls the libraries' own classes, and the
state readers give each optimizer's D, checked against its own next step."""
from unittest import mock

import pytest
import torch

from conftest import tiny_mlp_problem
from utils.training.optimizers import (build_clipper, build_optimizer, read_spam_state,
                                       read_stableadamw_state, state_reader)
from utils.training.runs import RunConfig, run

FAST = dict(model="mlp", model_kwargs={"width": 8}, data="sin", data_kwargs={"n_points": 32},
            lr=0.01, steps=6, track_every=0, progress=False)


def _library_classes():
    from adam_atan2_pytorch import AdamAtan2
    from optimi import StableAdamW
    from pytorch_optimizer import SPAM

    return {"stableadamw": StableAdamW, "spam": SPAM, "adam_atan2": AdamAtan2}


@pytest.mark.parametrize("name", ["stableadamw", "spam", "adam_atan2"])
def test_a_run_steps_the_librarys_own_optimizer(name):
    """run() trains with the library's class: its step() is called once per update (a spy
    that forwards to the real method), and the parameters move."""
    cls = _library_classes()[name]
    config = RunConfig(**FAST, optimizer=name)
    assert type(build_optimizer(config, [torch.zeros(2, requires_grad=True)])) is cls
    real = cls.step
    with mock.patch.object(cls, "step", autospec=True, side_effect=real) as spy:
        result = run(config)
    assert spy.call_count == config.steps
    assert result.metrics["loss"].iloc[-1] < result.metrics["loss"].iloc[0]


def test_zclip_clips_through_the_library_before_every_step():
    """clip="zclip" calls zclip.ZClip.step(model) once per update, before Adam's step, and a
    gradient far above its running mean is scaled down by the library."""
    from zclip import ZClip

    config = RunConfig(**FAST, clip="zclip")
    assert type(build_clipper(config)) is ZClip
    assert build_clipper(RunConfig(**FAST)) is None
    calls = []
    real_clip, real_step = ZClip.step, torch.optim.Adam.step

    def clip(self, model):
        calls.append("clip")
        return real_clip(self, model)

    def step(self, *a, **k):
        calls.append("step")
        return real_step(self, *a, **k)

    with mock.patch.object(ZClip, "step", clip), mock.patch.object(torch.optim.Adam, "step", step):
        run(config)
    assert calls == ["clip", "step"] * config.steps
    # the library scales a spike of the gradient norm after its warm-up
    model = torch.nn.Linear(3, 1, bias=False)
    z = ZClip(warmup_steps=5, max_grad_norm=None)
    for _ in range(10):
        model.weight.grad = torch.ones_like(model.weight) * (1 + 0.01 * torch.rand(1))
        z.step(model)
    model.weight.grad = torch.full_like(model.weight, 100.0)
    z.step(model)
    assert float(model.weight.grad.norm()) < 10.0


def _train(opt, model, loss_fn, steps):
    params = dict(model.named_parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()


def _next_step(opt, model, loss_fn):
    """Take one more step; return (θ_{t+1} − θ_t flat, the gradient list it used)."""
    params = dict(model.named_parameters())
    before = torch.cat([p.detach().reshape(-1).clone() for p in params.values()])
    opt.zero_grad()
    loss_fn(params).backward()
    grads = [p.grad.detach().clone() for p in params.values()]
    opt.step()
    after = torch.cat([p.detach().reshape(-1) for p in params.values()])
    return after - before, grads


def test_stableadamw_state_is_the_d_of_its_update():
    """After a step of optimi.StableAdamW, −η/max(1, RMS) m̂ D per tensor, with m̂ and D from
    read_stableadamw_state, is the step it took."""
    from optimi import StableAdamW

    model, loss_fn = tiny_mlp_problem()
    opt = StableAdamW(model.parameters(), lr=0.02, betas=(0.9, 0.999), eps=1e-8,
                      weight_decay=0.0)
    _train(opt, model, loss_fn, 12)
    delta, grads = _next_step(opt, model, loss_fn)
    state = read_stableadamw_state(opt)
    assert state.step == 13
    v_hat = state.v_hat
    expected, i = [], 0
    for g in grads:
        n = g.numel()
        rms = float((g.reshape(-1) ** 2 / v_hat[i:i + n].clamp_min(1e-16)).mean().sqrt())
        expected.append(-0.02 / max(1.0, rms) * state.m_hat[i:i + n] * state.preconditioner[i:i + n])
        i += n
    torch.testing.assert_close(delta, torch.cat(expected), rtol=1e-9, atol=1e-14)


def test_spam_state_is_the_d_of_its_update():
    """After a step of pytorch_optimizer.SPAM (past its warm-up, before its first reset),
    −η m̂ D from read_spam_state is the step it took."""
    from pytorch_optimizer import SPAM

    model, loss_fn = tiny_mlp_problem()
    opt = SPAM(model.parameters(), lr=0.02, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    _train(opt, model, loss_fn, 30)
    delta, _ = _next_step(opt, model, loss_fn)
    state = read_spam_state(opt)
    assert state.step == 31
    torch.testing.assert_close(delta, state.update, rtol=1e-9, atol=1e-14)


def test_adam_atan2_and_gd_have_no_preconditioner_to_read():
    assert state_reader(RunConfig(optimizer="adam_atan2")) is None
    assert state_reader(RunConfig(optimizer="gd")) is None
    result = run(RunConfig(**{**FAST, "track_every": 3}, optimizer="adam_atan2",
                           measure=("lambda_max_H", "lambda_max_pre")))
    m = result.metrics
    assert m["lambda_max_H"].notna().sum() == 2 and "lambda_max_pre" not in m


def test_library_state_readers_refuse_an_optimizer_before_its_first_step():
    from optimi import StableAdamW
    from pytorch_optimizer import SPAM

    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="no state yet"):
        read_stableadamw_state(StableAdamW(p, lr=0.1))
    with pytest.raises(ValueError, match="no state yet"):
        read_spam_state(SPAM(p, lr=0.1))


def test_tracked_runs_of_the_preconditioned_libraries_measure_lambda_max_pre():
    for name in ("stableadamw", "spam"):
        result = run(RunConfig(**{**FAST, "track_every": 3}, optimizer=name,
                               measure=("lambda_max_pre",)), spot_checks=False)
        assert result.metrics["lambda_max_pre"].notna().sum() == 2


def test_bad_clip_and_resume_with_a_clipper_are_refused():
    with pytest.raises(ValueError, match="clip must be one of"):
        RunConfig(**FAST, clip="norm").validate()
    base = run(RunConfig(**FAST, clip="zclip"), checkpoint_steps={3})
    with pytest.raises(ValueError, match="resume: a checkpoint does not hold the state"):
        run(RunConfig(**FAST, clip="zclip"), resume=base.checkpoints[3])
