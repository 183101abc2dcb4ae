"""Fork a run and change one thing: the causal test of the book's thesis.

    base = run(config, checkpoint_every=10)                 # the unperturbed run, with checkpoints
    fork = checkpoint_at(base, config, step=1200)           # Adam's state after update 1200
    control = run(config, resume=fork)                      # reproduces the original bit for bit
    floored = run(config, resume=fork, intervention=VHatFloor())

An :class:`Intervention` acts on the real ``torch.optim.Adam`` at the fork (``prepare``) and
after each of its steps (``after_step``); only :class:`FrozenPreconditioner` replaces the
optimizer, by :class:`FrozenPreconditionerAdam`, whose update is written out below.

Branches (the issue's list; all start from the same checkpoint):

* ``control``: nothing changes; it must reproduce the original trajectory.
* ``v_floor``: v̂ = v/(1−β2^t), the second moment Adam divides by, never falls after the fork
  (:class:`VHatFloor`), so D = 1/(√v̂+ε) is non-increasing and λ_max(Ĥ) cannot grow by v's
  decay.
* ``v_floor_raw``: the raw ``exp_avg_sq`` never falls below its value at the fork
  (:class:`RawVFloor`, the book's first floor, kept as a labelled variant): v̂ still falls by the
  bias correction's own decline, 1 − β2^t rising towards 1.
* ``d_frozen``: the preconditioner D fixed at its fork value while m keeps its momentum.
* ``eps_raised``: ε raised so that c·λ_max(H)/ε < 2/η (λ_max(Ĥ) ≤ c λ_max(H)/ε).
* ``lr_lowered``: η lowered by the factor that puts the largest λ_max(Ĥ) of the control before
  its spike back under 2/η.
* ``random_kick``: the parameters moved at the fork, in a random direction, by the largest
  distance between the control and the v̂-floor branch before the control's spike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
import torch

from utils.curvature.adam_state import momentum_factor, read_adam_state
from utils.training.runs import Checkpoint, RunConfig, RunResult, find_events, run
from utils.validation import check_number


class FrozenPreconditionerAdam(torch.optim.Optimizer):
    """Adam with its preconditioner frozen: m keeps its momentum, D stays at D0.

        m_t = β1 m_{t-1} + (1-β1) g_t,      θ_{t+1} = θ_t − η m_t / (1-β1^t) / denom0,

    with ``denom0`` = sqrt(v̂_{t0}) + ε from Adam's state at the fork (so D0 = 1/denom0). The
    operations are those of ``torch.optim.Adam``'s single-tensor update (``lerp_`` for m,
    ``addcdiv_`` for θ), so where v would not change, the two agree to rounding.
    """

    def __init__(self, params, *, lr: float, beta1: float, exp_avg, denom, step: int):
        params = list(params)
        super().__init__(params, dict(lr=lr, beta1=beta1))
        for p, m, d in zip(params, exp_avg, denom):
            self.state[p] = {"exp_avg": m.clone(), "denom": d.clone(), "step": int(step)}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, beta1 = group["lr"], group["beta1"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                step_size = lr / (1 - beta1 ** state["step"])
                p.addcdiv_(state["exp_avg"], state["denom"], value=-step_size)


@dataclass(frozen=True)
class FrozenState:
    """What the curvature tracker reads of :class:`FrozenPreconditionerAdam`: D0 and c_t."""

    step: int
    m: torch.Tensor
    v: torch.Tensor
    preconditioner: torch.Tensor
    beta1: float

    @property
    def c(self) -> float:
        return momentum_factor(self.beta1, self.step)


class Intervention:
    """One change made at the fork. ``prepare`` acts on the restored optimizer and parameters
    (and returns the optimizer to train with); ``after_step`` runs after each optimizer step;
    ``state`` is what the curvature tracker reads (Adam's own state by default)."""

    name = "control"

    def prepare(self, opt, params: dict):
        return opt

    def after_step(self, opt) -> None:
        pass

    def state(self, opt):
        return read_adam_state(opt)


class VHatFloor(Intervention):
    """v̂ = v/(1−β2^t), the bias-corrected second moment that ``torch.optim.Adam`` divides by,
    never decreases after the fork: after each step, ``exp_avg_sq`` is raised elementwise to
    (1−β2^t)·v̂ of the previous step (after its own clamp; at the fork, Adam's own). So the D =
    1/(√v̂+ε) that :func:`~utils.curvature.adam_state.read_adam_state` reads is non-increasing
    from the fork, element by element.

    Within one step Adam divides by its own, not yet clamped v̂_t ≥ β2·v̂_{t−1}·(1−β2^{t−1})/(1−β2^t):
    one step's decay at most, a factor ≤ β2^(−1/2) on D (0.05 % at β2 = 0.999), never carried
    to the next step.
    """

    name = "v_floor"

    def prepare(self, opt, params):
        ps = list(params.values())
        self.beta2 = opt.param_groups[0]["betas"][1]
        step = int(opt.state[ps[0]]["step"])
        check_number("the fork's step", step, low=1, integer=True)
        correction = 1 - self.beta2 ** step
        self.v_hat = {p: opt.state[p]["exp_avg_sq"] / correction for p in ps}
        return opt

    @torch.no_grad()
    def after_step(self, opt):
        for p, v_hat in self.v_hat.items():
            state = opt.state[p]
            correction = 1 - self.beta2 ** int(state["step"])
            v = state["exp_avg_sq"]
            torch.maximum(v, v_hat * correction, out=v)
            torch.div(v, correction, out=v_hat)


class RawVFloor(Intervention):
    """The raw ``exp_avg_sq`` never falls below its value at the fork (elementwise max with the
    fork's copy after each step). A labelled variant, the book's first floor: Adam divides by
    v̂ = v/(1−β2^t), which still falls as 1 − β2^t rises, by 2-3 % over 10 steps and 14-23 %
    over 400 where β2^t ≈ 0.5, so D can still grow under it."""

    name = "v_floor_raw"

    def prepare(self, opt, params):
        self.floor = {p: opt.state[p]["exp_avg_sq"].clone() for p in params.values()}
        return opt

    @torch.no_grad()
    def after_step(self, opt):
        for p, floor in self.floor.items():
            torch.maximum(opt.state[p]["exp_avg_sq"], floor, out=opt.state[p]["exp_avg_sq"])


class FrozenPreconditioner(Intervention):
    """D fixed at its fork value, m keeps its momentum (:class:`FrozenPreconditionerAdam`)."""

    name = "d_frozen"

    def prepare(self, opt, params):
        group = opt.param_groups[0]
        beta1, beta2 = group["betas"]
        ps = list(params.values())
        step = int(opt.state[ps[0]]["step"])
        bc2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = [(opt.state[p]["exp_avg_sq"].sqrt() / bc2_sqrt).add_(group["eps"]) for p in ps]
        self.beta1 = beta1
        self.v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in ps])
        self.d = torch.cat([1.0 / d.reshape(-1) for d in denom])
        return FrozenPreconditionerAdam(ps, lr=group["lr"], beta1=beta1,
                                        exp_avg=[opt.state[p]["exp_avg"] for p in ps],
                                        denom=denom, step=step)

    def state(self, opt):
        ps = [p for g in opt.param_groups for p in g["params"]]
        step = opt.state[ps[0]]["step"]
        m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in ps])
        return FrozenState(step, m, self.v, self.d, self.beta1)


class SetHyperparameter(Intervention):
    """Set ``eps`` or ``lr`` of every parameter group at the fork to ``value``."""

    def __init__(self, name: str, key: str, value: float):
        self.name, self.key, self.value = name, key, float(value)

    def prepare(self, opt, params):
        for group in opt.param_groups:
            group[self.key] = self.value
        return opt


class RandomKick(Intervention):
    """The parameters moved at the fork by ``size`` (Euclidean norm over all of them) in a
    uniformly random direction drawn under ``seed``; Adam's state is left as it was."""

    name = "random_kick"

    def __init__(self, size: float, seed: int = 0):
        self.size, self.seed = float(check_number("size", size, low=0)), int(seed)

    @torch.no_grad()
    def prepare(self, opt, params):
        gen = torch.Generator().manual_seed(self.seed)
        ps = list(params.values())
        z = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps]
        norm = math.sqrt(sum(float((x ** 2).sum()) for x in z))
        for p, x in zip(ps, z):
            p.add_(x.to(p.device), alpha=self.size / norm)
        return opt


class Recorded(Intervention):
    """``inner``, with the flat parameter vector kept after every step (``trajectory``: step
    -> tensor (n,)), to measure how far two branches drift apart."""

    def __init__(self, inner: Intervention):
        self.inner, self.name, self.trajectory = inner, inner.name, {}

    def prepare(self, opt, params):
        self.params = list(params.values())
        return self.inner.prepare(opt, params)

    def after_step(self, opt):
        self.inner.after_step(opt)
        step = int(next(iter(opt.state.values()))["step"])
        self.trajectory[step] = torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

    def state(self, opt):
        return self.inner.state(opt)


BRANCHES = ("control", "v_floor", "v_floor_raw", "d_frozen", "eps_raised", "lr_lowered",
            "random_kick")
"""The branches run from every fork, in this order (later ones use the control's and the v
floor's measurements to size their change)."""
LAGS = ("previous_end", "crossing-50", "crossing-10", "crossing", "start")
"""Where the forks are taken, relative to each spike: at the end of the previous spike (v just
refilled), 50 and 10 steps before the crossing of 2/η by λ_max(Ĥ) that precedes the spike, at
that crossing, and at the spike's start."""
MARGIN = 1.1
"""ε and η are changed so that the bound they control sits 10 % below 2/η."""


def fork_steps(result, spike, previous_end: int | None) -> dict[str, int] | None:
    """The fork step of each lag (:data:`LAGS`) for ``spike`` of ``result``, or None when no
    crossing of 2/η by λ_max(Ĥ) begins between ``previous_end`` and the spike's start. Steps
    are clipped to [previous_end, start] and to ≥ 1; the first spike (``previous_end`` None)
    has no "previous_end" lag. ``result`` must have measured λ_max(Ĥ)."""
    from utils.events.spikes import sustained_crossings

    m = result.metrics.dropna(subset=["lambda_max_pre"])
    lo = previous_end or 1
    crossings = [c for c in sustained_crossings(m["lambda_max_pre"], m["step"], result.threshold)
                 if lo <= c.start <= spike.start]
    if not crossings:
        return None
    cross = crossings[-1].start
    raw = {"previous_end": lo, "crossing-50": cross - 50, "crossing-10": cross - 10,
           "crossing": cross, "start": spike.start}
    if previous_end is None:   # the first spike: no refill of v to fork at
        del raw["previous_end"]
    return {k: int(min(max(v, lo, 1), spike.start)) for k, v in raw.items()}


def checkpoint_at(base: RunResult, step: int) -> Checkpoint:
    """Adam's state after update ``step`` of ``base`` (a run made with checkpoints): the
    nearest stored checkpoint at or before ``step``, replayed up to it (bit for bit)."""
    check_number("step", step, low=0, high=len(base.metrics), integer=True)
    stored = max(s for s in base.checkpoints if s <= step)
    if stored == step:
        return base.checkpoints[step]
    replay = run(replace(base.config, steps=step, progress=False), resume=base.checkpoints[stored],
                 checkpoint_steps={step}, spot_checks=False)
    return replay.checkpoints[step]


def branch_row(base: RunResult, fork: int, result: RunResult, change: float | None) -> dict:
    """One branch from the fork after update ``fork`` of ``base``: whether it spiked (the book's
    rule, on the base's losses up to the fork followed by the branch's; a spike counts when its
    peak comes after the fork), the largest loss over the loss at the fork, and the largest
    λ_max(Ĥ), λ_grad(Ĥ) and λ_max(H) over the branch, each over 2/η."""
    threshold = base.threshold
    history = base.metrics[base.metrics["step"] <= fork]
    losses = pd.concat([history[["step", "loss"]], result.metrics[["step", "loss"]]])
    spikes, _ = find_events(losses, base.config)
    late = [s for s in spikes if s.peak > fork]
    m = result.metrics

    def peak(col):
        return float(m[col].max()) / threshold if col in m and m[col].notna().any() else math.nan

    return {"fork_step": fork, "steps": int(m["step"].max() - fork) if len(m) else 0,
            "spiked": bool(late), "spike_start": late[0].start if late else None,
            "max_loss_ratio": float(m["loss"].max() / history["loss"].iloc[-1]),
            "max_lambda_max_pre": peak("lambda_max_pre"),
            "max_lambda_grad_pre": peak("lambda_grad_pre"),
            "max_lambda_max_H": peak("lambda_max_H"), "change": change,
            "diverged": result.diverged_at is not None}


def run_branches(base: RunResult, fork: int, until: int, seed: int = 0,
                 keep: bool = False) -> list[dict] | tuple[list[dict], dict]:
    """Every branch of :data:`BRANCHES` from the fork after update ``fork`` of ``base``, each run
    to step ``until``; one :func:`branch_row` per branch with its ``branch`` name.

    The control and the v̂ floor run first. ε is then raised to MARGIN × c·λ_max(H)·η/2, with
    λ_max(H) the largest over the control before its spike (so that c λ_max(H)/ε sits 10 %
    under 2/η), and η lowered by MARGIN × (the largest λ_max(Ĥ) of the control before its
    spike)/(2/η) where that exceeds 1. The random kick has the largest distance between the
    control's and the v̂ floor's parameters before the control's spike. With ``keep``, also
    returns the branches' :class:`~utils.training.runs.RunResult` by name.
    """
    config = replace(base.config, steps=until, progress=False)
    start = checkpoint_at(base, fork)

    def branch(intervention):
        return run(config, resume=start, intervention=intervention, spot_checks=False)

    control, floored = Recorded(Intervention()), Recorded(VHatFloor())
    results = {"control": branch(control), "v_floor": branch(floored),
               "v_floor_raw": branch(RawVFloor()), "d_frozen": branch(FrozenPreconditioner())}
    c_row = branch_row(base, fork, results["control"], None)
    horizon = c_row["spike_start"] if c_row["spiked"] else until
    before = results["control"].metrics
    before = before[before["step"] <= max(horizon, fork + 1)]
    lam_h = float(before["lambda_max_H"].max())
    lam_pre = float(before["lambda_max_pre"].max())
    c = momentum_factor(base.config.beta1, max(start.step, 1))
    eps = MARGIN * c * lam_h * base.config.lr / 2
    lr = base.config.lr / max(1.0, MARGIN * lam_pre * base.config.lr / 2)
    kick = max((float((control.trajectory[s] - floored.trajectory[s]).norm())
                for s in control.trajectory if s <= horizon and s in floored.trajectory),
               default=0.0)
    results["eps_raised"] = branch(SetHyperparameter("eps_raised", "eps", eps))
    results["lr_lowered"] = branch(SetHyperparameter("lr_lowered", "lr", lr))
    results["random_kick"] = branch(RandomKick(kick, seed=seed))
    changes = {"control": None, "v_floor": None, "v_floor_raw": None, "d_frozen": None,
               "eps_raised": eps, "lr_lowered": lr, "random_kick": kick}
    rows = [{"branch": name, **branch_row(base, fork, results[name], changes[name])}
            for name in BRANCHES]
    return (rows, results) if keep else rows


INTERVENTION_CHAPTERS = ("01_v_decay", "02_lambda_max_crossing", "transformer_mod11")
"""The settings forked: chapter 1's MLP, chapter 2's network (the paper's Figure 5: width
1,000 on the 50-dimensional quadratic target, the setting of the paper's own intervention, ε
raised at the spike's onset) and the one-layer Transformer on (a + b) mod 11
(:data:`utils.studies.settings.TRANSFORMER`, the book's Transformer until the anchor-function
models land). Chapter 3's CNN of the paper's Figure 6 is not forked: at 1.6 s per tracked step a
single fork of seven branches over the horizon costs about 25 min on 2 cores."""
ARCHITECTURES = {"01_v_decay": "mlp", "02_lambda_max_crossing": "fnn_fig5",
                 "transformer_mod11": "transformer"}
"""The ``architecture`` label of each forked setting in the sweep's table."""
FORKED_SPIKES = {"mlp": 2, "fnn_fig5": 1, "transformer": 1}
"""Spikes forked per seed (the first ones preceded by a crossing), set by the sweep's budget."""
HORIZON = 400
"""Every branch runs to 400 steps after the original spike's start, long enough to tell a
prevented spike from a delayed one (the raw-v floor delayed the MLP's spikes by 150-280 steps)."""
TRACK_EVERY = 5


def intervention_config(chapter: str, **overrides) -> RunConfig:
    """The chapter's default run (:func:`~utils.studies.settings.chapter_config`), measuring
    λ_max(H), λ_max(Ĥ) and λ_grad(Ĥ) every :data:`TRACK_EVERY` steps, which every branch needs."""
    from utils.studies.settings import chapter_config

    return chapter_config(chapter, **{"measure": ("lambda_max_H", "lambda_max_pre", "lambda_grad"),
                                      "track_every": TRACK_EVERY, "progress": False, **overrides})


def setting_label(config: RunConfig) -> str:
    """The :data:`ARCHITECTURES` label of a config built by :func:`intervention_config`."""
    for chapter, label in ARCHITECTURES.items():
        reference = intervention_config(chapter)
        if (config.model, config.data) == (reference.model, reference.data):
            return label
    raise ValueError(f"config must be one of the forked settings {list(ARCHITECTURES)}, "
                     f"got model {config.model!r} on data {config.data!r}")


def fork_rows(config: RunConfig, seeds) -> list[dict]:
    """The intervention sweep's task (``trains=True``): for each seed, train ``config`` with
    checkpoints, fork before each of its first :data:`FORKED_SPIKES` spikes that follow a
    crossing of 2/η, at every lag (:func:`fork_steps`), and run every branch to
    :data:`HORIZON` steps past the spike's start. One row per (seed, spike, lag, branch)."""
    from utils.events.spikes import sustained_crossings

    rows, architecture = [], setting_label(config)
    for seed in seeds:
        cfg = replace(config, seed=int(seed))
        base = run(cfg, checkpoint_every=50, spot_checks=False)
        m = base.metrics.dropna(subset=["lambda_grad_pre"])
        grad_crossings = [c.start for c in sustained_crossings(m["lambda_grad_pre"], m["step"],
                                                               base.threshold)]
        previous_end, forked = None, 0
        for k, spike in enumerate(base.spikes):
            lags = fork_steps(base, spike, previous_end)
            previous_end = spike.end
            if lags is None or forked == FORKED_SPIKES[architecture]:
                continue
            forked += 1
            crossing = lags["crossing"]
            grad = [c for c in grad_crossings if crossing - 50 <= c <= spike.peak]
            for lag, step in lags.items():
                for row in run_branches(base, step, spike.start + HORIZON, seed=k):
                    rows.append({"seed": int(seed), "architecture": architecture, "spike": k,
                                 "original_start": spike.start, "crossing": crossing,
                                 "grad_crossing": grad[0] if grad else None, "lag": lag,
                                 **row})
            if spike.end is None:
                break
    return rows


PREVENTION_LAGS = ("previous_end", "crossing-50", "crossing-10")
"""The lags at least 10 steps before the crossing, at which the verdicts ask a v̂ floor to
prevent the spike."""
CONTROL_MIN, PREVENT_MIN = 0.9, 0.8
"""Stated before the sweep ran: the control must spike in ≥ 90 % of forks; a v̂ floor at a lag
of :data:`PREVENTION_LAGS` must prevent the spike (none within the horizon) in ≥ 80 % of the
forks whose control spiked."""


def spike_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per branch and lag: the forks, the share in which the branch spiked within the horizon,
    with its 95 % Wilson interval (:func:`~utils.studies.scoring.wilson_interval`), and the
    median step of that spike relative to the control's start of the same fork (positive:
    delayed)."""
    from utils.studies.scoring import wilson_interval

    control = table[table["branch"] == "control"].set_index(["architecture", "seed", "spike", "lag"])
    rows = []
    for (branch, lag), g in table.groupby(["branch", "lag"], sort=False):
        k, n = int(g["spiked"].sum()), len(g)
        low, high = wilson_interval(k, n)
        starts = g.set_index(["architecture", "seed", "spike", "lag"])["spike_start"]
        delay = (starts - control["spike_start"].reindex(starts.index)).dropna()
        rows.append({"branch": branch, "lag": lag, "forks": n, "spiked": k,
                     "spike_rate": k / n if n else math.nan,
                     "ci95_low": low, "ci95_high": high,
                     "median_delay_steps": float(delay.median()) if len(delay) else math.nan})
    out = pd.DataFrame(rows)
    out["branch"] = pd.Categorical(out["branch"], BRANCHES, ordered=True)
    out["lag"] = pd.Categorical(out["lag"], LAGS, ordered=True)
    return out.sort_values(["branch", "lag"]).set_index(["branch", "lag"])


FORK = ["architecture", "seed", "spike", "lag"]
"""The columns that name one fork."""


def judged_forks(table: pd.DataFrame, lags=LAGS) -> pd.DataFrame:
    """The rows of the forks at ``lags`` whose control spiked (the forks a branch can prevent
    a spike in), indexed by :data:`FORK`, with ``prevented`` (the branch did not spike within
    the horizon) and ``delay`` (its spike's start minus the control's; NaN where it did not
    spike)."""
    t = table[table["lag"].isin(lags)].set_index(FORK)
    control = t[t["branch"] == "control"]
    spiked = control["spiked"].astype(bool).reindex(t.index).fillna(False).to_numpy()
    t = t[spiked]
    return t.assign(prevented=~t["spiked"].astype(bool),
                    delay=t["spike_start"] - control["spike_start"].reindex(t.index))


def early_prevented(table: pd.DataFrame, branch: str) -> tuple[float, int]:
    """(share, forks): among the forks at :data:`PREVENTION_LAGS` whose control spiked, the
    share in which ``branch`` did not spike within the horizon, pooled over every fork."""
    g = judged_forks(table, PREVENTION_LAGS)
    g = g[g["branch"] == branch]
    return (float(g["prevented"].mean()) if len(g) else math.nan), len(g)


def intervention_verdicts(table: pd.DataFrame) -> list:
    """The chapter's verdicts over all forks (thresholds :data:`CONTROL_MIN`,
    :data:`PREVENT_MIN`, stated before the sweep).

    ``control_reproduces_the_spike``: the control spikes in ≥ 90 % of forks; if forking itself
    changed the run (a broken replay), it would not.
    ``v_floor_prevents_the_spike``: among forks at least 10 steps before the crossing whose
    control spiked, the v̂ floor branch (:class:`VHatFloor`) has no spike within the horizon in
    ≥ 80 %. If the decay of v̂ were not what carries λ_max(Ĥ) to 2/η, stopping it would not
    matter and the branch would spike like the control.
    ``random_kick_does_not_prevent``: a random kick of the v̂ floor's size prevents the spike
    in fewer forks than the v̂ floor (so that a prevention is not the effect of any
    perturbation of that size); fails if kicks prevent as often.
    """
    from utils.studies.verdicts import Verdict

    control = table[table["branch"] == "control"]["spiked"]
    floor, n_floor = early_prevented(table, "v_floor")
    kick, _ = early_prevented(table, "random_kick")
    return [
        Verdict("control_reproduces_the_spike",
                f"the unchanged branch spikes in ≥ {CONTROL_MIN:.0%} of forks",
                float(control.mean()) >= CONTROL_MIN,
                {"forks": int(len(control)), "share_spiked": float(control.mean())}),
        Verdict("v_floor_prevents_the_spike",
                f"a v̂ floor ≥ 10 steps before the crossing prevents the spike in ≥ {PREVENT_MIN:.0%} of forks",
                n_floor > 0 and floor >= PREVENT_MIN,
                {"forks": n_floor, "share_prevented": floor}),
        Verdict("random_kick_does_not_prevent",
                "a random kick of the same size prevents fewer spikes than the v̂ floor",
                n_floor > 0 and kick < floor,
                {"share_prevented_by_kick": kick, "share_prevented_by_v_floor": floor}),
    ]


def prevented_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Per branch (rows) and lag (columns): the share of the forks whose control spiked in
    which the branch did not spike within the horizon."""
    t = judged_forks(table).reset_index()
    out = t.pivot_table(index="branch", columns="lag", values="prevented", aggfunc="mean",
                        observed=False)
    return out.reindex(index=[b for b in BRANCHES if b != "control"],
                       columns=[l for l in LAGS if l in out.columns])


def prevented_up_to_crossing(table: pd.DataFrame, branch: str) -> float:
    """The mean over the lags up to the crossing (:data:`PREVENTION_LAGS` and ``crossing``) of
    :func:`prevented_shares` for ``branch``: the one number the introduction and chapter 5 quote
    for a branch "before the crossing"."""
    shares = prevented_shares(table)
    lags = [lag for lag in (*PREVENTION_LAGS, "crossing") if lag in shares.columns]
    return float(shares.loc[branch, lags].mean())


EFFECT_BRANCHES = ("v_floor", "v_floor_raw", "random_kick")
"""The branches :func:`architecture_effects` sets side by side: the v̂ floor, its raw-v variant
and the random kick of the v̂ floor's size."""


def architecture_effects(table: pd.DataFrame, branches=EFFECT_BRANCHES) -> pd.DataFrame:
    """Per architecture and branch, over the forks at :data:`PREVENTION_LAGS` whose control
    spiked: the forks, the share in which the branch prevented the spike (no spike within the
    horizon) with its 95 % Wilson interval, and the median delay in steps of the spikes that
    still came, against the control's start of the same fork (NaN where none came)."""
    from utils.studies.scoring import wilson_interval

    early = judged_forks(table, PREVENTION_LAGS)
    rows = []
    for (arch, branch), g in early[early["branch"].isin(branches)].groupby(
            ["architecture", "branch"], sort=False):
        n, k = len(g), int(g["prevented"].sum())
        low, high = wilson_interval(k, n)
        delay = g["delay"].dropna()
        rows.append({"architecture": arch, "branch": branch, "forks": n, "prevented": k,
                     "share_prevented": k / n if n else math.nan,
                     "ci95_low": low, "ci95_high": high,
                     "median_delay_steps": float(delay.median()) if len(delay) else math.nan})
    out = pd.DataFrame(rows)
    out["branch"] = pd.Categorical(out["branch"], list(branches), ordered=True)
    return out.sort_values(["architecture", "branch"]).set_index(["architecture", "branch"])


def lag_offsets(table: pd.DataFrame) -> pd.Series:
    """Median steps from the λ_max(Ĥ) crossing to each lag's fork, to the λ_grad(Ĥ) crossing
    and to the spike's start, over the forked spikes (negative: before the crossing)."""
    spikes = table.drop_duplicates(["architecture", "seed", "spike", "lag"])
    out = {lag: float((g["fork_step"] - g["crossing"]).median())
           for lag, g in spikes.groupby("lag", sort=False)}
    once = spikes.drop_duplicates(["architecture", "seed", "spike"])
    out["lambda_grad crossing"] = float((once["grad_crossing"] - once["crossing"]).median())
    out["spike start"] = float((once["original_start"] - once["crossing"]).median())
    order = [l for l in LAGS if l in out] + ["lambda_grad crossing", "spike start"]
    return pd.Series(out).reindex(order)
