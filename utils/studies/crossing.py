"""The paper's Figure 5 (and D5, D9): the crossing, the spike, the refill of v, and ε (chapter 2).

The paper (v1, §5.1, Appendix D and E) trains a two-layer network of width 1,000 on 200 points
of a 50-dimensional target y = w*ᵀx + xᵀdiag(v*)x with label noise 0.1, full-batch Adam at
η = 0.02, and reads one run: λ_max(H) settles; λ_max(Ĥ) crosses 2/η at epoch 179, five steps
before the spike (184), which starts when λ_grad(Ĥ) crosses; the loss falls again at 206;
‖g‖ ≪ ‖√v̂‖ and v decays at β2 before the spike; the top eigenvectors of H barely move between
steps and the gradient turns toward them at the spike; λ_update(Ĥ) crosses after λ_grad(Ĥ);
ε raised to 0.1 at the onset removes the spike, and ε = 0.1 or v clipped below at 10⁻² from
the start remove spikes at the price of slower convergence.

:func:`spike_summary` reads the first spike of a run by these rules, fixed before the sweep ran
(chapter 4's rules for crossings and matching, :mod:`utils.studies.onset`):

* the **calm stretch** is the :data:`CALM` steps before the spike's onset window
  [start − LEAD, start] (fewer when the run is younger);
* the crossing **leading into** the spike is the λ_max(Ĥ) crossing that is still going on at
  (or ended within the onset window before) the spike's start; its lead is start − its start;
* λ_grad(Ĥ) **matches** the spike when it is above 2/η somewhere in the onset window; its
  **early** crossings are those that start in the calm stretch;
* decay rates are least-squares fits of log Σv over the calm stretch, per parameter tensor,
  for the raw v (which Adam's update decays by β2) and for v̂ (which Adam divides by).

:func:`remedy_runs` runs the paper's three remedies from the same seed (Figure 5(f), D9) and
:func:`branch_summary` reads them.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from utils.curvature.tracker import uncertified_steps
from utils.events.spikes import sustained_crossings
from utils.studies.ensemble import share_verdict
from utils.studies.interventions import Intervention, SetHyperparameter, checkpoint_at
from utils.studies.onset import LEAD, WARMUP, crossings_after_warmup
from utils.studies.paper import PaperStatement, seed_statements
from utils.studies.quadratic import (MUCH_SMALLER, decay_tolerance_text, decays_at,
                                     fitted_rate)
from utils.studies.verdicts import Verdict
from utils.training.runs import RunConfig, run

CALM = 100
"""The calm stretch: the 100 steps before a spike's onset window."""
FEW_STEPS = 20
""""A few steps": λ_max(Ĥ)'s crossing leads the spike by at most 20 steps (the paper: 5)."""
SETTLED = 0.05
""""λ_max(H) quickly stabilizes": it changes by at most 5 % over the calm stretch."""
RECOVERY, RECOVERY_FACTOR = 22, 2.0
"""The paper's loss falls again 22 steps after the onset (184 → 206): ours within a factor 2."""
DRIFT = 0.99
""""Consecutive top eigenvectors' cosine ≈ 1": its median over the calm stretch ≥ 0.99."""
ALIGN_RISE = 0.2
""""cos(g, top eigenvector) rises at the spike": its largest value from the start to the peak
exceeds its median over the calm stretch by at least 0.2."""
EPS_RAISED, V_CLIP = 0.1, 1e-2
"""The paper's remedies: ε = 0.1, and v clipped from below at 10⁻²."""
HORIZON = 100
"""A branch forked at the onset runs 100 steps past it."""
SPIKE_FACTOR = 10.0
"""A branch "still spikes" when its loss rises to 10 × its loss at the fork (the book's K)."""


class VClip(Intervention):
    """v clipped from below at ``floor``: after each step of the real ``torch.optim.Adam``,
    ``exp_avg_sq`` is raised to at least ``floor`` (so v̂ = v/(1 − β2^t) ≥ floor too)."""

    name = "v_clip"

    def __init__(self, floor: float):
        self.floor = float(floor)

    def prepare(self, opt, params):
        self.params = list(params.values())
        return opt

    @torch.no_grad()
    def after_step(self, opt):
        for p in self.params:
            opt.state[p]["exp_avg_sq"].clamp_min_(self.floor)


def spike_summary(result) -> dict:
    """The first spike of ``result`` (after :data:`~utils.studies.onset.WARMUP`) read by the
    module's rules; NaN where the run has no such spike or quantity. Keys: ``n_spikes``,
    ``spike_start``, ``spike_peak``, ``recovery`` (peak − start), ``max_lead`` (λ_max(Ĥ)'s
    crossing leading into the spike), ``grad_matched`` (1/0), ``grad_lead``, ``early_grad``
    (λ_grad crossings in the calm stretch), ``update_after_grad`` (λ_update's crossing in the
    window minus λ_grad's), ``h_change`` (λ_max(H)'s max/min − 1 over the calm stretch),
    ``h_over_threshold`` (its largest value after the warm-up over 2/η), ``g_over_sqrt_v`` (at
    the last tracked step before the start),
    ``v_rate_worst`` and ``v_hat_rate_worst`` (the block whose rate is farthest from β2, as
    that rate), ``drift_h`` and ``align_rise``."""
    m, cfg = result.metrics, result.config
    threshold = 2.0 / cfg.lr
    spikes = [s for s in result.spikes if s.start > WARMUP]
    out = dict.fromkeys(["spike_start", "spike_peak", "recovery", "max_lead", "grad_matched",
                         "grad_lead", "early_grad", "update_after_grad", "h_change",
                         "h_over_threshold", "g_over_sqrt_v", "v_rate_worst",
                         "v_hat_rate_worst", "drift_h", "align_rise"], math.nan)
    out["n_spikes"] = len(spikes)
    out["uncertified_steps"] = uncertified_steps(m)
    if "lambda_max_H" in m:
        after = m[m["step"] > WARMUP]["lambda_max_H"]
        out["h_over_threshold"] = float(after.max() / threshold) if len(after) else math.nan
    if not spikes:
        return out
    s = spikes[0]
    out.update(spike_start=s.start, spike_peak=s.peak, recovery=s.peak - s.start)
    lo, hi = s.start - LEAD, s.start
    calm = m[(m["step"] >= max(WARMUP + 1, lo - CALM)) & (m["step"] < lo)]
    leading = [c for c in crossings_after_warmup(m, "lambda_max_pre", threshold)
               if c.start <= hi and c.end >= lo]
    if leading:
        out["max_lead"] = hi - leading[-1].start
    grad = crossings_after_warmup(m, "lambda_grad_pre_a", threshold)
    matched = [c for c in grad if c.start <= hi and c.end >= lo]
    out["grad_matched"] = float(bool(matched))
    out["early_grad"] = sum(1 for c in grad if lo - CALM <= c.start < lo)
    if matched:
        out["grad_lead"] = hi - matched[-1].start
        if "lambda_update_pre" in m:
            upd = [c for c in sustained_crossings(m["lambda_update_pre"], m["step"], threshold)
                   if lo <= c.start <= s.peak or c.start <= hi <= c.end]
            if upd:
                out["update_after_grad"] = upd[0].start - matched[-1].start
    if len(calm) >= 3:
        if "lambda_max_H" in calm:
            h = calm["lambda_max_H"]
            out["h_change"] = float(h.max() / h.min() - 1)
        if "cos_top_consecutive_H" in calm:
            out["drift_h"] = float(calm["cos_top_consecutive_H"].median())
        out["v_rate_worst"], out["v_hat_rate_worst"] = worst_decay_rates(calm, cfg.beta2)
        if "cos_grad_top_H" in m:
            during = m[(m["step"] >= s.start) & (m["step"] <= s.peak)]["cos_grad_top_H"]
            out["align_rise"] = float(during.max() - calm["cos_grad_top_H"].median())
    if "sqrt_v_hat_norm" in m:   # the last tracked step before the start (t − 1 when every step is)
        before = m[(m["step"] < s.start) & m["sqrt_v_hat_norm"].notna()].tail(1)
        if len(before):
            out["g_over_sqrt_v"] = float(before["grad_norm"].iloc[0]
                                         / before["sqrt_v_hat_norm"].iloc[0])
    return out


def worst_decay_rates(stretch, beta2: float) -> tuple[float, float]:
    """(raw v, v̂): over the rows of ``stretch`` (one per step, consecutive; untracked rows NaN),
    the least-squares decay rate of Σv per parameter tensor (from ``sqrt_v_hat_norm.<name>``:
    Σv̂ = ‖√v̂‖², Σv = Σv̂ (1 − β2^t)), and of each the tensor's rate farthest from ``beta2``;
    NaN where nothing was recorded."""
    blocks = [c for c in stretch if c.startswith("sqrt_v_hat_norm.")]
    if not blocks:
        return math.nan, math.nan
    bias = 1.0 - beta2 ** stretch["step"].to_numpy(dtype=float)
    hat = [fitted_rate(stretch[b].to_numpy() ** 2) for b in blocks]
    raw = [fitted_rate(stretch[b].to_numpy() ** 2 * bias) for b in blocks]
    worst = lambda rates: max(rates, key=lambda r: abs(r - beta2) if math.isfinite(r) else -1)  # noqa
    return worst(raw), worst(hat)


def remedy_runs(config: RunConfig, base, start: float) -> dict:
    """The paper's remedies for the run ``base`` of ``config`` (made with checkpoints), whose
    first spike starts at ``start`` (NaN: no spike; the onset branch is then not run), each
    untracked: ``eps_onset`` (ε raised to 0.1 after update start − 1, for :data:`HORIZON`
    steps), ``eps_start`` (ε = 0.1 from the first step) and ``v_clip`` (v ≥ 10⁻² from the first
    step, :class:`VClip`). Returns name -> :class:`~utils.training.runs.RunResult`."""
    quiet = dict(measure=(), track_every=0, progress=False)
    runs = {}
    if math.isfinite(start):
        fork = checkpoint_at(base, int(start) - 1)
        runs["eps_onset"] = run(replace(config, steps=min(config.steps, int(start) + HORIZON),
                                        **quiet), resume=fork, spot_checks=False,
                                intervention=SetHyperparameter("eps_onset", "eps", EPS_RAISED))
    runs["eps_start"] = run(replace(config, eps=EPS_RAISED, **quiet), spot_checks=False)
    runs["v_clip"] = run(replace(config, **quiet), intervention=VClip(V_CLIP), spot_checks=False)
    return runs


def branch_summary(base, runs: dict, start: float) -> dict:
    """The remedies' numbers: ``eps_onset_rise``, the largest loss after ε is raised at the
    onset over the loss at the onset; ``eps_start_spikes`` and ``vclip_spikes``, the spikes of
    the runs remedied from the start; ``eps_start_slowdown`` and ``vclip_slowdown``, their loss
    over the default run's at the step before its spike (NaN without a spike)."""
    out = dict.fromkeys(["eps_onset_rise", "eps_start_slowdown", "vclip_slowdown"], math.nan)
    if "eps_onset" in runs:
        loss = runs["eps_onset"].metrics["loss"].to_numpy()
        out["eps_onset_rise"] = float(np.max(loss) / loss[0]) if len(loss) else math.nan
    out["eps_start_spikes"] = len(runs["eps_start"].spikes)
    out["vclip_spikes"] = len(runs["v_clip"].spikes)
    if math.isfinite(start):
        ref = base.metrics.set_index("step")["loss"].loc[int(start) - 1]
        for key, name in (("eps_start_slowdown", "eps_start"), ("vclip_slowdown", "v_clip")):
            loss = runs[name].metrics.set_index("step")["loss"]
            out[key] = float(loss.loc[int(start) - 1] / ref)
    return out


def figure5_rows(config: RunConfig, seeds) -> list[dict]:
    """The chapter sweep's task (``trains=True``): for each seed, the default run with
    checkpoints, its :func:`spike_summary` and the remedies' :func:`branch_summary`."""
    rows = []
    for seed in seeds:
        cfg = replace(config, seed=int(seed), progress=False)
        base = run(cfg, checkpoint_every=10, spot_checks=False)
        summary = spike_summary(base)
        start = summary["spike_start"]
        rows.append({"seed": int(seed), **summary,
                     **branch_summary(base, remedy_runs(cfg, base, start), start)})
    return rows


def figure5_statements(table: pd.DataFrame, beta2: float = 0.999,
                       default_seed: int = 0) -> list[PaperStatement]:
    """The rows of chapter 2's "paper vs book" table from the stored sweep (one
    :func:`figure5_rows` row per seed); a seed without a spike has NaN quantities, which fail
    their tolerance. "Our default run" is seed ``default_seed`` of the sweep."""
    row = seed_statements(table, default_seed)

    return [
        row("5.1", "Fig. 5(b)", "λ_max(H) quickly stabilizes",
            "λ_max(H)'s max/min − 1 over the calm stretch", "h_change", f"≤ {SETTLED:g}",
            lambda x: x <= SETTLED, digits=2),
        row("5.2", "Fig. 5(b)", "λ_max(Ĥ) surpasses 2/η (epoch 179) a few steps before the "
            "spike (184)", "steps from λ_max(Ĥ)'s crossing into the spike to its start",
            "max_lead", f"0 to {FEW_STEPS}", lambda x: 0 <= x <= FEW_STEPS),
        row("5.3a", "Fig. 5(b)", "the spike occurs when λ_grad(Ĥ) exceeds 2/η",
            "1 if λ_grad(Ĥ) is above 2/η in the onset window, else 0", "grad_matched", "1",
            lambda x: x >= 1, digits=2),
        row("5.3b", "Fig. 5(b)", "… precisely then (not before)",
            "λ_grad(Ĥ) crossings in the calm stretch before the onset", "early_grad", "0",
            lambda x: x == 0, digits=2),
        row("5.4", "Fig. 5(a)", "the loss resumes its descent at epoch 206, 22 steps after the "
            "onset", "steps from the spike's start to its peak", "recovery",
            f"within a factor {RECOVERY_FACTOR:g} of {RECOVERY}",
            lambda x: RECOVERY / RECOVERY_FACTOR <= x <= RECOVERY * RECOVERY_FACTOR),
        row("5.5", "Fig. 5(a, c)", "before the spike ‖g‖ (≈ 1e-2) ≪ ‖√v̂‖",
            "‖g‖/‖√v̂‖ the step before the start", "g_over_sqrt_v", f"< {MUCH_SMALLER:g}",
            lambda x: x < MUCH_SMALLER, digits=2),
        row("5.6", "Fig. 5(c)", "v decays exponentially at rate β2 before the spike",
            "Σv's decay rate over the calm stretch, the block farthest from β2", "v_rate_worst",
            decay_tolerance_text(), lambda x: decays_at(x, beta2), digits=4),
        row("5.7", "Fig. 5(d)", "the cosine between H's top eigenvectors at consecutive epochs "
            "approaches 1", "its median over the calm stretch", "drift_h", f"≥ {DRIFT:g}",
            lambda x: x >= DRIFT, digits=3),
        row("5.8", "Fig. 5(d)", "the gradient aligns with the top eigenvector at the spike",
            "max of cos(g, top of H) from start to peak − its calm median", "align_rise",
            f"≥ {ALIGN_RISE:g}", lambda x: x >= ALIGN_RISE, digits=2),
        row("D5", "Fig. D5(b)", "λ_update(Ĥ) exceeds 2/η after λ_grad(Ĥ)",
            "λ_update's crossing − λ_grad's (steps)", "update_after_grad", "> 0",
            lambda x: x > 0),
        row("5.9", "Fig. 5(f), D9(a)", "ε raised to 0.1 at the spike's onset removes it",
            "largest loss of the next 100 steps / the loss at the onset", "eps_onset_rise",
            f"< {SPIKE_FACTOR:g} (no spike)", lambda x: x < SPIKE_FACTOR, digits=2),
        row("D9a", "Fig. D9(b)", "ε = 0.1 from the start: no spikes",
            "spikes of that run", "eps_start_spikes", "0", lambda x: x == 0, digits=2),
        row("D9b", "Fig. D9(b)", "v clipped below at 1e-2 from the start: no spikes",
            "spikes of that run", "vclip_spikes", "0", lambda x: x == 0, digits=2),
        row("D9c", "Fig. D9(b)", "… at the price of slower convergence (ε = 0.1)",
            "its loss / Adam's, the step before Adam's spike", "eps_start_slowdown", "> 1",
            lambda x: x > 1, digits=2),
        row("D9d", "Fig. D9(b)", "… at the price of slower convergence (v ≥ 1e-2)",
            "its loss / Adam's, the step before Adam's spike", "vclip_slowdown", "> 1",
            lambda x: x > 1, digits=2),
    ]


def stricter_verdicts(table: pd.DataFrame, beta2: float = 0.999) -> list[Verdict]:
    """Our tests beyond the paper: λ_max(H) < 2/η at every tracked step after the warm-up (the
    book's earlier chapter 2; the paper says only that λ_max(H) settles), and v̂, which Adam
    divides by, decays at β2 (the paper speaks of v; v̂ decays faster while the bias correction
    still changes). Each holds for the ensemble in at least 75 % of the seeds with a spike
    (:func:`~utils.studies.ensemble.share_verdict`)."""
    rows = table[table["n_spikes"] > 0]
    return [share_verdict("beyond_raw_curvature_below", "(ours, beyond the paper) λ_max(H) < "
                          "2/η at every tracked step after the warm-up",
                          rows["h_over_threshold"] < 1),
            share_verdict("beyond_v_hat_decays_at_beta2", "(ours, beyond the paper) v̂, which "
                          "Adam divides by, decays at β2 before the spike ("
                          + decay_tolerance_text() + ")",
                          rows["v_hat_rate_worst"].map(lambda a: decays_at(a, beta2)))]
