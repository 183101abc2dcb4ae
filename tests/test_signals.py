"""The signals recorded during training (utils.training.signals) and mini-batch runs
(utils.training.runs)."""
import copy
import math
from dataclasses import replace

import pytest
import torch

from utils.curvature.adam_state import read_adam_state
from utils.training.runs import RunConfig, build_data, build_problem, minibatch, run
from utils.training.signals import COLUMNS, SignalRecorder


def quadratic_loop(steps=25, lr=0.05, n=6, critical_evals=40, seed=0):
    """A manual Adam loop on L = θᵀAθ/2 with the recorder attached, yielding per step what the
    recorder returned and what the closed forms say."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    a = q @ torch.diag(torch.logspace(-1, 1, n, dtype=torch.float64)) @ q.T
    theta = torch.nn.Parameter(torch.randn(n, generator=gen, dtype=torch.float64))
    params = {"theta": theta}

    def loss_fn(p):
        return 0.5 * p["theta"] @ a @ p["theta"]

    opt = torch.optim.Adam([theta], lr=lr, betas=(0.9, 0.99), eps=1e-8)
    rec = SignalRecorder(critical_evals=critical_evals)
    prev = None
    for t in range(1, steps + 1):
        g = torch.autograd.grad(loss_fn(params), theta)[0]
        theta.grad = g.clone()
        v_prev = opt.state[theta]["exp_avg_sq"].clone() if t > 1 else None
        before = rec.before_update(t, params, [g], opt)
        start = theta.detach().clone()
        opt.step()
        after = rec.after_update(t, params, opt, loss_fn)
        state = read_adam_state(opt)
        step = theta.detach() - start
        expected = {"stableadamw_rms": float((g ** 2 / state.v_hat.clamp_min(1e-16)).mean().sqrt())}
        u = step / lr
        expected["critical_step"] = float(2 * (-g @ u) / (u @ a @ u)) / lr
        if v_prev is not None:
            expected["spam_ratio"] = float((g ** 2 / v_prev).max())
        if prev is not None:
            d_prev, c_prev, step_prev = prev
            expected["secant"] = c_prev * float(step_prev @ a @ step_prev) / float(
                (step_prev ** 2 / d_prev).sum())
        prev = (state.preconditioner, state.c, step)
        yield t, {**before, **after}, expected


def test_recorded_signals_match_their_closed_forms_on_a_quadratic():
    checked = set()
    for t, got, expected in quadratic_loop():
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-6 if name != "critical_step" else 1e-4), \
                (t, name)
            checked.add(name)
        if t == 1:
            assert math.isnan(got["spam_ratio"]) and math.isnan(got["secant"])
    assert checked == {"stableadamw_rms", "critical_step", "spam_ratio", "secant"}


def test_bias_corrected_v_is_what_optimi_stableadamw_keeps():
    """The recorder's StableAdamW term uses v̂_t = v_t / (1 − β2^t) of torch.optim.Adam; optimi
    keeps exactly that (it updates with a debiased β2), fed the same gradients."""
    from optimi import StableAdamW

    gen = torch.Generator().manual_seed(3)
    a = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
    adam = torch.optim.Adam([a], lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    stable = StableAdamW([b], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for t in range(1, 30):
        g = torch.randn(50, generator=gen, dtype=torch.float64) * (1 + 10 * (t == 20))
        a.grad, b.grad = g.clone(), g.clone()
        adam.step()
        stable.step()
        v_hat = read_adam_state(adam).v_hat
        torch.testing.assert_close(stable.state[b]["exp_avg_sq"], v_hat, rtol=1e-10, atol=0)


def test_a_run_with_the_recorder_has_its_columns_and_an_unchanged_path():
    config = RunConfig(model="mlp", model_kwargs={"width": 8}, data="sin",
                       data_kwargs={"n_points": 32}, lr=0.01, steps=40, track_every=5,
                       measure=("lambda_max_pre", "lambda_grad"), progress=False)
    plain = run(config, spot_checks=False)
    recorder = SignalRecorder()
    watched = run(config, signals=recorder, spot_checks=False)
    assert set(COLUMNS) <= set(watched.metrics)
    assert watched.metrics["loss"].tolist() == plain.metrics["loss"].tolist()
    assert watched.metrics["critical_forwards"].max() <= 7
    assert set(recorder.seconds) == {"spam", "secant", "stableadamw", "critical_step"}
    assert {"plain_step_s", "tracked_step_s"} <= set(watched.timings)
    with pytest.raises(ValueError, match="critical_evals"):
        SignalRecorder(critical_evals=1)
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        run(replace(config, optimizer="gd"), signals=recorder)


MINI = RunConfig(model="mlp", model_kwargs={"width": 8}, data="sin", data_kwargs={"n_points": 40},
                 lr=0.01, steps=30, track_every=4, measure=("lambda_max_pre", "lambda_grad"),
                 batch_size=8, progress=False)


def test_minibatches_are_drawn_per_step_and_replayed_on_resume():
    full = run(MINI, checkpoint_steps=(12,), spot_checks=False)
    m = full.metrics
    assert "batch_loss" in m and (m["batch_loss"] != m["loss"]).any()
    resumed = run(MINI, resume=full.checkpoints[12], spot_checks=False)
    assert resumed.metrics["loss"].tolist() == m["loss"].iloc[12:].tolist()
    model, _ = build_problem(MINI)
    data = build_data(MINI)
    params = dict(model.named_parameters())
    with torch.no_grad():
        losses = [float(minibatch(MINI, model, data, step)(params)) for step in (5, 5, 6)]
    assert losses[0] == losses[1] != losses[2]


def test_bad_batch_sizes_are_refused_before_training():
    with pytest.raises(ValueError, match=r"batch_size must be in \[0, 40\]"):
        run(replace(MINI, batch_size=41))
    with pytest.raises(ValueError, match="batch_size"):
        replace(MINI, batch_size=-1).validate()
    with pytest.raises(ValueError, match="batch_size: the quadratic"):
        RunConfig(model="quadratic", batch_size=4).validate()
    from utils.training.seeds import run_seeds

    with pytest.raises(ValueError, match="batch_size: seed batching"):
        run_seeds(MINI, [0, 1])


def test_a_fixed_evaluation_batch_carries_the_loss_and_the_curvature():
    """``eval_size``: the loss column and λ_grad(Ĥ) are those of the first m samples at θ_t;
    ``grad_on_batch`` adds λ_grad(Ĥ) on the step's own batch, with the same v̂_t."""
    from utils.curvature.hvp import LossHessian, loss_of_params
    from utils.curvature.preconditioned import gradient_curvatures
    from utils.training.losses import loss_for

    config = replace(MINI, eval_size=16, track_every=0, grad_every=1, measure=("lambda_grad",),
                     grad_on_batch=True, steps=6)
    result = run(config, checkpoint_steps=(4, 5), spot_checks=False)
    m = result.metrics.set_index("step")
    model, _ = build_problem(config)
    data = build_data(config)
    params = dict(model.named_parameters())
    with torch.no_grad():                    # θ_5, the point of step 5
        for name, p in params.items():
            p.copy_(result.checkpoints[4].params[name])
    eval_loss = loss_of_params(model, loss_for(data.info), data.inputs[:16], data.targets[:16])
    with torch.no_grad():
        assert m.loc[5, "loss"] == pytest.approx(float(eval_loss(params)), rel=1e-12)
    opt = torch.optim.Adam(params.values(), lr=config.lr, betas=(config.beta1, config.beta2),
                           eps=config.eps)
    opt.load_state_dict(copy.deepcopy(result.checkpoints[5].optimizer))   # v̂_5, with g_5
    state = read_adam_state(opt)
    for loss_fn, prefix in ((eval_loss, ""), (minibatch(config, model, data, 5), "batch_")):
        expected = gradient_curvatures(LossHessian(loss_fn, params), state.preconditioner,
                                       state.c, raw=False)
        assert m.loc[5, f"{prefix}lambda_grad_pre_a"] == pytest.approx(
            expected["lambda_grad_pre_a"], rel=1e-9)
    assert m["lambda_grad_pre_a"].ne(m["batch_lambda_grad_pre_a"]).all()
    plain = run(replace(config, grad_on_batch=False), spot_checks=False).metrics
    assert plain["loss"].tolist() == pytest.approx(m["loss"].tolist(), rel=1e-12)
    assert "batch_lambda_grad_pre_a" not in plain


def test_bad_evaluation_settings_are_refused_before_training():
    with pytest.raises(ValueError, match=r"eval_size must be in \[0, 40\]"):
        run(replace(MINI, eval_size=41))
    with pytest.raises(ValueError, match="eval_size: a fixed evaluation batch"):
        replace(MINI, batch_size=0, eval_size=8).validate()
    with pytest.raises(ValueError, match="grad_on_batch"):
        replace(MINI, batch_size=0, grad_on_batch=True).validate()
    with pytest.raises(ValueError, match="grad_on_batch"):
        replace(MINI, measure=("lambda_max_pre",), grad_on_batch=True).validate()


def test_moment_norms_follow_adams_v_hat_of_the_embedding_and_each_value_projection():
    from utils.training.signals import MomentNorms, attention_blocks

    config = RunConfig(model="transformer", data="modular_addition", data_kwargs={"modulus": 5},
                       model_kwargs={"d_model": 8, "n_heads": 2, "n_layers": 2}, lr=0.01,
                       steps=3, track_every=0, progress=False)
    result = run(config, checkpoint_steps=(3,), signals=MomentNorms(), spot_checks=False)
    m = result.metrics
    assert [c for c in m if c.startswith("v_norm_")] == ["v_norm_embedding", "v_norm_wv_0",
                                                        "v_norm_wv_1"]
    state = result.checkpoints[3].optimizer["state"]
    names = list(dict(result.model.named_parameters()))
    v = state[names.index("blocks.1.attn.qkv.weight")]["exp_avg_sq"][16:24]
    assert m["v_norm_wv_1"].iloc[-1] == pytest.approx(float(v.norm()) / (1 - 0.999 ** 3))
    with pytest.raises(ValueError, match="attention_blocks"):
        attention_blocks({"w": torch.zeros(2)})
