"""The paper's sustained spike predictor on mini-batches (its Figure 7), scaled to 2 cores.

**The paper** (v1, §5.3 and Appendix D): an 8-layer Transformer of about 10M parameters on
900k sequences of a compositional anchor task, batch 2,048, a linear warm-up then a cosine
decay, β = (0.9, 0.999). Seven spikes. Before each, ‖v̂‖ of the embedding and of W_V in every
attention layer decays "at a rate of approximately 0.999003 (close to β2)". Single crossings
λ_grad(Ĥ_t) > 2/η happen without spikes; the *sustained spike predictor*
min(λ_grad(Ĥ_{t−1}), λ_grad(Ĥ_t), λ_grad(Ĥ_{t+1})) > 2/η "demonstrates perfect correspondence
with loss spike occurrences".

**The rules, fixed before the sweep ran** (ours where the paper is silent):

* a spike is one of the book's spikes (:mod:`utils.events.spikes`) on the loss of a fixed
  evaluation batch (``RunConfig.eval_size`` training sequences, the ``loss`` column), not on each
  step's own batch loss, which jumps from batch to batch;
* λ_grad(Ĥ_t) is the paper's form A, c gᵀ D H g / ‖g‖², against 2/η_t, measured every step both
  on the step's own mini-batch (the batch Adam stepped on: ``batch_lambda_grad_pre_a``) and on
  the evaluation batch (``lambda_grad_pre_a``), each with Adam's v̂_t; ``ratio`` = λ_grad η_t / 2;
* the **single** rule fires at t when the ratio exceeds 1; the **sustained** rule fires at t + 1
  when the ratios at t − 1, t and t + 1 all exceed 1 (it needs λ_grad(Ĥ_{t+1}), known at step
  t + 1: an alarm is raised no earlier than its inputs are known);
* the baseline "loss rose last step" fires at t when the evaluation loss rose from t − 1 to t;
* alarms are scored by the book's one scoring module (:mod:`utils.studies.scoring`) at its
  horizon, pooled over seeds with bootstrap intervals;
* **the decay before a spike**: a least-squares line through log ‖v̂_t‖ of each block over the
  :data:`FIT` steps that end at the spike's start gives the per-step rate ρ = e^slope. Its
  *β2-share* r = log ρ / log β2 is 1 when v̂ only decays (g² ≪ v̂) and ≈ 1 − ⟨g²/v̂⟩ when the
  gradient still feeds it; r ≥ :data:`DECAY_SHARE` means g² ≤ 0.2 v̂ on average. The same fit at
  calm steps (no spike within :data:`FIT` + the horizon) is the baseline.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

D_MODEL = 16
"""Width of the scaled model (the paper's is not given; about 10M parameters at 8 layers)."""
N_LAYERS = 8
N_TRAIN = 1000
"""Training sequences of the compositional rule (the paper: 900k)."""
BATCH = 128
"""Mini-batch size (the paper: 2,048)."""
EVAL = 256
"""The fixed evaluation batch: the first EVAL training sequences."""
FIG7_RUN = dict(lr=3e-3, beta2=0.99, steps=2500, warmup=100, schedule="cosine",
                decay_steps=10000)
"""η, β2, steps and schedule of the study's runs: a linear warm-up of 100 steps, then the first
2,400 steps of a cosine decay to η/10 at step 10,000 (the search behind them: the chapter)."""
SEEDS = tuple(range(8))
MEASURE_FROM = 500
"""λ_grad(Ĥ) is measured every step from this step on (:func:`measured_run`); before it the
runs train without measurements, which cost three times a step."""
FIT = 50
"""Steps before a spike's start over which the decay of ‖v̂‖ is fitted."""
DECAY_SHARE = 0.8
"""The β2-share r = log ρ / log β2 above which a block's ‖v̂‖ decays at β2's rate."""
CALM_FITS = 4
"""Calm fits per seed (the baseline of the decay)."""
CURVE_EVERY = 10
"""Every how many steps the stored curves keep a value."""
SIGNALS = {"sustained_batch": ("batch_lambda_grad_pre_a", "sustained"),
           "single_batch": ("batch_lambda_grad_pre_a", "single"),
           "sustained_eval": ("lambda_grad_pre_a", "sustained"),
           "single_eval": ("lambda_grad_pre_a", "single"),
           "loss_rose": ("loss", "rose")}
"""The scored alarms: signal -> (column, rule)."""


def fig7_config(**overrides):
    """The study's run: a pre-LN Transformer of :data:`N_LAYERS` layers, 4 heads, width
    :data:`D_MODEL` and MLP width 3 d on the compositional anchor rule, :data:`N_TRAIN` sequences,
    mini-batches of :data:`BATCH`, evaluation batch :data:`EVAL`, float32, :data:`FIG7_RUN`,
    λ_grad(Ĥ) every step on both batches, with ``overrides``."""
    from utils.training.runs import RunConfig

    return RunConfig(**{
        "model": "transformer", "data": "anchor", "dtype": "float32", "track_every": 0,
        "model_kwargs": {"d_model": D_MODEL, "n_heads": 4, "n_layers": N_LAYERS,
                         "d_ff": 3 * D_MODEL},
        "data_kwargs": {"rule": "composition", "n": N_TRAIN},
        "batch_size": BATCH, "eval_size": EVAL, "grad_every": 1, "measure": ("lambda_grad",),
        "grad_on_batch": True, "threads": 1, "progress": False, **FIG7_RUN, **overrides})


SEARCH = {"n": (8000, N_TRAIN), "decay_steps": (0, FIG7_RUN["decay_steps"])}
"""The search for a setting that spikes within the budget (sweep ``sustained_search``): the
study's run unmeasured for 3,000 steps under each data size × cosine horizon (0: the run's own
length), seed 0."""
SEARCH_STEPS = 3000


def search_configs() -> list:
    """The runs of :data:`SEARCH`: unmeasured (no λ_grad(Ĥ)), :data:`SEARCH_STEPS` steps."""
    return [fig7_config(steps=SEARCH_STEPS, decay_steps=d, grad_every=0, grad_on_batch=False,
                        data_kwargs={"rule": "composition", "n": n})
            for n in SEARCH["n"] for d in SEARCH["decay_steps"]]


def search_rows(results) -> list[dict]:
    """Per search run: its data size and cosine horizon, its spikes (count, first start and the
    loss there), its smallest and final evaluation losses and its last η."""
    rows = []
    for r in results:
        m, first = r.metrics, (r.spikes[0] if r.spikes else None)
        rows.append({"n": r.config.data_kwargs["n"],
                     "decay_steps": r.config.decay_steps or r.config.steps,
                     "spikes": len(r.spikes), "first_start": first.start if first else None,
                     "first_start_loss": first.start_loss if first else None,
                     "min_loss": float(m["loss"].min()), "final_loss": float(m["loss"].iloc[-1]),
                     "final_lr": float(m["lr"].iloc[-1])})
    return rows


# --------------------------------------------------------------------------- the alarms

def ratios(metrics: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` (a λ_grad(Ĥ) column) over 2/η_t, per row of ``metrics`` (η_t: its ``lr``
    column, which runs with a warm-up have)."""
    return metrics[column].to_numpy(dtype=float) * metrics["lr"].to_numpy(dtype=float) / 2.0


def alarms(metrics: pd.DataFrame, column: str, rule: str):
    """(fired, eligible): bool arrays over the rows of ``metrics`` (consecutive steps) for
    ``rule`` on ``column`` (module docstring): "single", "sustained" or "rose". Eligible: the steps where the rule's inputs
    are all finite."""
    if rule == "rose":
        loss = metrics[column].to_numpy(dtype=float)
        prev = np.r_[np.nan, loss[:-1]]
        return loss > prev, np.isfinite(loss) & np.isfinite(prev)
    ratio = ratios(metrics, column)
    above, finite = ratio > 1, np.isfinite(ratio)
    if rule == "single":
        return above, finite
    if rule != "sustained":
        raise ValueError(f"rule must be 'single', 'sustained' or 'rose', got {rule!r}")
    # the alarm at row i (step t + 1) needs rows i − 2, i − 1 and i above
    fired = np.zeros(len(ratio), dtype=bool)
    eligible = np.zeros(len(ratio), dtype=bool)
    fired[2:] = above[2:] & above[1:-1] & above[:-2]
    eligible[2:] = finite[2:] & finite[1:-1] & finite[:-2]
    return fired, eligible


def sustained_ratio(metrics: pd.DataFrame, column: str) -> np.ndarray:
    """The paper's sustained predictor over 2/η_t, min(ratio_{t−1}, ratio_t, ratio_{t+1}), at
    row t (NaN at the first and last rows), for the figures."""
    ratio = ratios(metrics, column)
    out = np.full(len(ratio), np.nan)
    out[1:-1] = np.minimum(np.minimum(ratio[:-2], ratio[1:-1]), ratio[2:])
    return out


# ------------------------------------------------------------------------------ the decay

def decay_rate(metrics: pd.DataFrame, column: str, end: int, fit: int = FIT) -> float:
    """ρ = e^slope of the least-squares line through log ``column`` over the ``fit`` steps
    before step ``end`` ([end − fit, end)); NaN if fewer than half of them are positive and
    finite."""
    window = metrics[(metrics["step"] >= end - fit) & (metrics["step"] < end)]
    y = window[column].to_numpy(dtype=float)
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < max(2, fit // 2):
        return math.nan
    slope = np.polyfit(window["step"].to_numpy(dtype=float)[ok], np.log(y[ok]), 1)[0]
    return float(math.exp(slope))


def block_columns(metrics: pd.DataFrame) -> list[str]:
    """The ‖v̂‖ columns of a run (:class:`utils.training.signals.MomentNorms`)."""
    return [c for c in metrics if c.startswith("v_norm_")]


def decay_fits(metrics: pd.DataFrame, end: int, beta2: float, fit: int = FIT) -> dict:
    """The decay of every block before step ``end``: ``rate_<block>`` (ρ) and the median over
    the blocks of the β2-share r = log ρ / log β2 (``share``), with its minimum."""
    rates = {c[len("v_norm_"):]: decay_rate(metrics, c, end, fit) for c in block_columns(metrics)}
    shares = np.array([math.log(r) / math.log(beta2) for r in rates.values()
                       if math.isfinite(r) and r > 0])
    return {**{f"rate_{b}": r for b, r in rates.items()},
            "share": float(np.median(shares)) if len(shares) else math.nan,
            "share_min": float(shares.min()) if len(shares) else math.nan}


# ------------------------------------------------------------------------ one seed's rows

def measured_run(config, measure_from: int = MEASURE_FROM):
    """Train ``config`` with the per-block ‖v̂‖ recorded (:class:`utils.training.signals.
    MomentNorms`), measuring λ_grad(Ĥ) only from step ``measure_from`` on: the steps before it
    run without measurements (no Hessian-vector product) and hand a checkpoint to the measured
    rest, which continues bit for bit (:func:`utils.training.runs.run` with ``resume``). The
    result holds the whole run: its metrics (λ_grad columns NaN before ``measure_from``), its
    spikes on the whole evaluation loss, and both parts' seconds summed."""
    from dataclasses import replace

    from utils.training.runs import find_events, run
    from utils.training.signals import MomentNorms
    from utils.validation import check_number

    check_number("measure_from", measure_from, low=1, high=config.steps, integer=True)
    plain = replace(config, grad_every=0, grad_on_batch=False)
    if measure_from == 1:
        return run(config, signals=MomentNorms(), spot_checks=False)
    first = run(replace(plain, steps=measure_from - 1), checkpoint_steps=(measure_from - 1,),
                signals=MomentNorms(), spot_checks=False)
    if first.diverged_at is not None:
        return first
    rest = run(config, resume=first.checkpoints[measure_from - 1], signals=MomentNorms(),
               spot_checks=False)
    rest.metrics = pd.concat([first.metrics, rest.metrics], ignore_index=True)
    rest.spikes, rest.excluded = find_events(rest.metrics, config)
    rest.seconds += first.seconds
    return rest


def run_rows(config, seeds) -> list[dict]:
    """The sweep's task (``trains=True``): each seed's :func:`measured_run` of ``config``, and
    its :func:`seed_rows`."""
    from dataclasses import replace

    return [row for seed in seeds
            for row in seed_rows(measured_run(replace(config, seed=int(seed))))]


LEAD = 50
"""Steps before a spike's start from which its stored traces begin."""
CALM_RISE = 15
"""A calm window's "rise": the window judged at a calm step t is [t − h, t + CALM_RISE], about a
spike's start-to-peak."""
PREFIXES = {"batch": "batch_lambda_grad_pre_a", "eval": "lambda_grad_pre_a"}
"""Where λ_grad(Ĥ) was measured -> its column."""


def window_flags(metrics: pd.DataFrame, start: int, hi: int) -> dict:
    """Whether λ_grad(Ĥ) exceeded 2/η_t in the window [start − the judged horizon, hi], on
    each batch: ``single_<where>`` (some step above), ``sustained_<where>``
    (the sustained predictor above at some step t of it, which uses t + 1), ``lag_<where>`` (the
    first step above, minus ``start``; negative before it) and ``max_ratio_<where>``. NaN where
    the window was not measured throughout."""
    from utils.studies.scoring import JUDGED_HORIZON

    lo = start - JUDGED_HORIZON
    steps = metrics["step"].to_numpy()
    window = (steps >= lo) & (steps <= hi)
    out = {}
    for where, column in PREFIXES.items():
        ratio = ratios(metrics, column)
        if not window.any() or not np.isfinite(ratio[window]).all():
            out.update({f"single_{where}": math.nan, f"sustained_{where}": math.nan,
                        f"lag_{where}": math.nan, f"max_ratio_{where}": math.nan})
            continue
        above = steps[window][ratio[window] > 1]
        sustained = sustained_ratio(metrics, column)[window]
        out.update({f"single_{where}": float(len(above) > 0),
                    f"sustained_{where}": float(bool((sustained > 1).any())),
                    f"lag_{where}": float(above[0] - start) if len(above) else math.nan,
                    f"max_ratio_{where}": float(np.max(ratio[window]))})
    return out


def _trace(values) -> str:
    return " ".join(f"{x:.4g}" for x in values)


def seed_rows(result) -> list[dict]:
    """What the study keeps of one run:

    * a "run" row: spike count, times, and every :data:`CURVE_EVERY` steps the evaluation loss,
      both λ_grad ratios and the ‖v̂‖ of every block;
    * one "spike" row per spike: its steps and losses, the decay fits before it
      (:func:`decay_fits`), :func:`window_flags` over [start − h, peak], and every step's
      evaluation loss and both ratios from :data:`LEAD` steps before the start to 5 after the
      peak (``trace_from``, ``trace_loss``, ``trace_batch``, ``trace_eval``);
    * :data:`CALM_FITS` "calm" rows: the same fits and flags at calm steps t (no spike within
      :data:`FIT` before to the horizon after), over [t − h, t + :data:`CALM_RISE`];
    * one "score" row per signal of :data:`SIGNALS` (:func:`utils.studies.scoring.
      score_signal`), scored over the measured steps against the spikes whose judged window lies
      in them (the others are counted in the run row's ``unscored_spikes``), with every step at
      which it fired (``fired_steps``) and the alarms inside spikes (``inside_alarms``).
    """
    from utils.studies.scoring import JUDGED_HORIZON, score_signal
    from utils.studies.spike_types import calm_starts

    m, config = result.metrics, result.config
    seed, beta2 = config.seed, config.beta2
    common = {"seed": seed, "architecture": "anchor_transformer", "setting": "fig7"}
    curve = m[m["step"] % CURVE_EVERY == 0]
    rows = [{**common, "kind": "run", "spikes": len(result.spikes), "steps": len(m),
             "diverged_at": result.diverged_at, "seconds": result.seconds,
             "min_loss": float(m["loss"].min()), "final_loss": float(m["loss"].iloc[-1]),
             **{f"curve_{c}": _trace(values) for c, values in (
                 ("loss", curve["loss"]),
                 ("ratio_batch", ratios(curve, "batch_lambda_grad_pre_a")),
                 ("ratio_eval", ratios(curve, "lambda_grad_pre_a")),
                 *((c, curve[c]) for c in block_columns(m)))}}]
    for k, spike in enumerate(result.spikes):
        span = m[(m["step"] >= spike.start - LEAD) & (m["step"] <= spike.peak + 5)]
        rows.append({**common, "kind": "spike", "index": k, "start": spike.start,
                     "peak": spike.peak, "end": spike.end, "start_loss": spike.start_loss,
                     "peak_loss": spike.peak_loss, **decay_fits(m, spike.start, beta2),
                     **window_flags(m, spike.start, spike.peak),
                     "trace_from": int(span["step"].iloc[0]), "trace_loss": _trace(span["loss"]),
                     "trace_batch": _trace(ratios(span, "batch_lambda_grad_pre_a")),
                     "trace_eval": _trace(ratios(span, "lambda_grad_pre_a"))})
    rng = np.random.default_rng([seed, 7])
    for i, t in enumerate(calm_starts(m[m["step"] > FIT], result.spikes, CALM_FITS, rng,
                                      length=JUDGED_HORIZON, margin=FIT)):
        rows.append({**common, "kind": "calm", "index": i, "start": t,
                     **decay_fits(m, t, beta2), **window_flags(m, t, t + CALM_RISE)})
    first = measured_from(m)
    scored = m[m["step"] >= first]                # every signal over the measured steps
    judged = [s for s in result.spikes if s.start - JUDGED_HORIZON >= first]
    rows[0]["unscored_spikes"] = len(result.spikes) - len(judged)
    steps = scored["step"].to_numpy()
    inside = np.zeros(len(steps), dtype=bool)
    for s in judged:
        inside |= (steps >= s.start) & (steps <= (s.end if s.end is not None else steps[-1]))
    for name, (column, rule) in SIGNALS.items():
        fired, eligible = alarms(scored, column, rule)
        rows.append({**common, "kind": "score", "signal": name, "default": True,
                     "horizon": JUDGED_HORIZON, "steps": len(scored),
                     **score_signal(steps, fired, eligible, judged, JUDGED_HORIZON,
                                    np.random.default_rng([seed, len(name)])),
                     "inside_alarms": int((fired & inside).sum()),
                     "fired_steps": " ".join(map(str, steps[fired]))})
    return rows


def measured_from(metrics: pd.DataFrame) -> int:
    """The first step at which λ_grad(Ĥ) was measured on the step's batch (the run's first step
    where it never was)."""
    measured = metrics["step"][metrics["batch_lambda_grad_pre_a"].notna()]
    return int(measured.iloc[0]) if len(measured) else int(metrics["step"].iloc[0])


# ------------------------------------------------------------------ the chapter's tables

def score_table(table: pd.DataFrame) -> pd.DataFrame:
    """Each signal of :data:`SIGNALS` pooled over the seeds (:func:`utils.studies.scoring.pool`,
    with intervals): one row per signal."""
    from utils.studies.scoring import pool

    scores = table[table["kind"] == "score"]
    return pd.DataFrame({name: pool(scores[scores["signal"] == name], intervals=True)
                         for name in SIGNALS}).T


def decay_table(table: pd.DataFrame) -> pd.DataFrame:
    """The β2-share of the decay before spikes and at calm steps: count, median, quartiles and
    the share of fits at or above :data:`DECAY_SHARE` with its Wilson interval."""
    from utils.studies.scoring import wilson_interval

    out = {}
    for kind, label in (("spike", "before spikes"), ("calm", "at calm steps")):
        share = table.loc[table["kind"] == kind, "share"].dropna()
        k = int((share >= DECAY_SHARE).sum())
        low, high = wilson_interval(k, len(share))
        out[label] = {"fits": len(share), "median": share.median(),
                      "q25": share.quantile(0.25), "q75": share.quantile(0.75),
                      "at_beta2": k / len(share) if len(share) else math.nan,
                      "low": low, "high": high}
    return pd.DataFrame(out).T


def coincidence_table(table: pd.DataFrame) -> pd.DataFrame:
    """At spikes ([start − h, peak]) and at calm steps ([t − h, t + :data:`CALM_RISE`]): how
    many were measured (``n``), and the share where the sustained predictor and where a single
    crossing exceeded 2/η_t, on the step's batch and on the evaluation batch, with the Wilson
    interval of the sustained share on the step's batch; the median first-crossing lag (steps
    from the start, on the step's batch)."""
    from utils.studies.scoring import wilson_interval

    out = {}
    for kind, label in (("spike", "spikes"), ("calm", "calm steps")):
        rows = table[(table["kind"] == kind)].dropna(subset=["sustained_batch"])
        k = int(rows["sustained_batch"].sum())
        low, high = wilson_interval(k, len(rows))
        out[label] = {"n": len(rows), "sustained_batch": k / len(rows) if len(rows) else math.nan,
                      "low": low, "high": high,
                      "single_batch": rows["single_batch"].mean(),
                      "sustained_eval": rows["sustained_eval"].mean(),
                      "single_eval": rows["single_eval"].mean(),
                      "median_lag_batch": rows["lag_batch"].median()}
    return pd.DataFrame(out).T


def correspondence(table: pd.DataFrame, signal: str = "sustained_batch") -> dict:
    """The share of ``signal``'s alarms that fall at spikes (in [start − h, end]: hits and
    alarms inside a spike) among all its alarms on the measured steps, pooled over the seeds
    with a bootstrap interval over seeds: the paper's "no false alarm" is a share of 1."""
    from utils.studies.scoring import pooled_ratio

    rows = table[(table["kind"] == "score") & (table["signal"] == signal)]
    at_spikes = rows["hits"] + rows["inside_alarms"]
    share, low, high = pooled_ratio(at_spikes, rows["alarms"] + rows["inside_alarms"])
    return {"share": share, "low": low, "high": high, "alarms": int(rows["alarms"].sum()
                                                                   + rows["inside_alarms"].sum()),
            "at_spikes": int(at_spikes.sum())}


COINCIDE_MIN = 0.9
"""The paper's "perfect correspondence", as a bar: the sustained predictor above 2/η at ≥ this
share of the spikes, and ≥ this share of its alarms at spikes; and for our stricter reading,
pooled precision and recall of its warnings (before the start) ≥ this."""
SHARE_MIN = 0.8
"""The share of spikes before which ‖v̂‖ decays at β2's rate (β2-share ≥ :data:`DECAY_SHARE`)
for the paper's decay claim to hold."""
SPECIFIC_P = 0.05
"""The one-sided Fisher test's level for "the decay comes before spikes more than at calm
steps"."""


def decay_specificity(table: pd.DataFrame) -> dict:
    """Fits at β2's rate before spikes against at calm steps: both shares and the one-sided
    Fisher exact test that spikes have the larger share (scipy.stats.fisher_exact)."""
    from scipy.stats import fisher_exact

    counts, shares = [], []
    for kind in ("spike", "calm"):
        share = table.loc[table["kind"] == kind, "share"].dropna()
        k = int((share >= DECAY_SHARE).sum())
        counts.append((k, len(share) - k))
        shares.append(k / len(share) if len(share) else math.nan)
    p = fisher_exact(counts, alternative="greater")[1] if all(sum(c) for c in counts) \
        else math.nan
    return {"share_spikes": shares[0], "share_calm": shares[1], "p": float(p)}


def sustained_verdicts(table: pd.DataFrame) -> list:
    """The chapter's verdicts over the sweep's ``table``, each with what it would measure were
    the claim false:

    * ``sustained_coincides`` (the paper): the sustained predictor on the step's batch exceeds
      2/η_t within [start − h, peak] of ≥ :data:`COINCIDE_MIN` of the spikes (false: spikes
      with no sustained crossing);
    * ``sustained_coincides_eval`` (ours): the same with λ_grad(Ĥ) on the evaluation batch,
      the batch whose loss the spikes are detected on;
    * ``sustained_no_false_alarm`` (the paper): ≥ :data:`COINCIDE_MIN` of its alarms fall at
      spikes (:func:`correspondence`; false: sustained crossings where no spike follows);
    * ``sustained_warns`` (ours, stricter): scored as a warning (a hit only before the start),
      pooled precision and recall ≥ :data:`COINCIDE_MIN` (false: it fires late or falsely);
    * ``sustained_fewer_false_alarms`` (the paper: single crossings also come without spikes):
      false alarms per 1,000 calm steps of single crossings minus those of the sustained rule,
      the bootstrap interval above 0 (false: the interval reaches 0);
    * ``sustained_beats_loss_rose`` (ours): its warning F1 exceeds that of "loss rose last
      step", the interval above 0;
    * ``v_decays_at_beta2`` (the paper): ‖v̂‖ decays at β2's rate (median β2-share over the
      blocks ≥ :data:`DECAY_SHARE`) before ≥ :data:`SHARE_MIN` of the spikes (false: the
      gradient still feeds v̂ before spikes);
    * ``decay_is_specific`` (ours): that decay comes before spikes more often than at calm
      steps (one-sided Fisher, p < :data:`SPECIFIC_P`; false: v̂ decays whether or not a spike
      follows).
    """
    from utils.studies.scoring import pooled_difference
    from utils.studies.verdicts import Verdict

    scores = score_table(table)
    s = scores.loc["sustained_batch"]
    rows = table[table["kind"] == "score"]
    coin = coincidence_table(table).loc["spikes"]
    corr = correspondence(table)
    fewer = pooled_difference(rows, "single_batch", "sustained_batch", "false_alarms_per_1000")
    f1_gain = pooled_difference(rows, "sustained_batch", "loss_rose", "f1")
    before = decay_table(table).loc["before spikes"]
    specific = decay_specificity(table)
    return [
        Verdict("sustained_coincides",
                f"the sustained predictor exceeds 2/η within [start − h, peak] of ≥ "
                f"{COINCIDE_MIN:.0%} of the spikes",
                bool(coin["sustained_batch"] >= COINCIDE_MIN),
                {"share": float(coin["sustained_batch"]), "low": float(coin["low"]),
                 "spikes": int(coin["n"])}),
        Verdict("sustained_coincides_eval",
                "... and so does the predictor on the evaluation batch",
                bool(coin["sustained_eval"] >= COINCIDE_MIN),
                {"share": float(coin["sustained_eval"]), "spikes": int(coin["n"])}),
        Verdict("sustained_no_false_alarm",
                f"≥ {COINCIDE_MIN:.0%} of its alarms fall at spikes",
                bool(corr["share"] >= COINCIDE_MIN),
                {k: corr[k] for k in ("share", "low", "high", "alarms")}),
        Verdict("sustained_warns",
                f"as a warning before the start: pooled precision and recall ≥ {COINCIDE_MIN}",
                bool(s["precision"] >= COINCIDE_MIN and s["recall"] >= COINCIDE_MIN),
                {"precision": float(s["precision"]), "recall": float(s["recall"]),
                 "spikes": int(s["spikes"]), "alarms": int(s["alarms"])}),
        Verdict("sustained_fewer_false_alarms",
                "fewer false alarms per 1,000 calm steps than single crossings (interval above 0)",
                bool(fewer[1] > 0), dict(zip(("difference", "low", "high"), fewer))),
        Verdict("sustained_beats_loss_rose",
                "its warning F1 exceeds 'loss rose last step' (interval above 0)",
                bool(f1_gain[1] > 0), dict(zip(("difference", "low", "high"), f1_gain))),
        Verdict("v_decays_at_beta2",
                f"‖v̂‖ decays at β2's rate before ≥ {SHARE_MIN:.0%} of the spikes",
                bool(before["at_beta2"] >= SHARE_MIN),
                {"share": float(before["at_beta2"]), "low": float(before["low"]),
                 "fits": int(before["fits"]), "median_share": float(before["median"])}),
        Verdict("decay_is_specific",
                "that decay comes before spikes more often than at calm steps",
                bool(specific["p"] < SPECIFIC_P), specific),
    ]


def figure7_rows(table: pd.DataFrame) -> dict:
    """The paper's Figure 7 numbers beside the sweep's ``table``: quantity -> (the paper, this
    book), for :func:`utils.studies.spike_types.paper_comparison`."""
    scores = score_table(table)
    spikes = table[table["kind"] == "spike"]
    beta2 = json_beta2(table)
    rates = spikes.filter(like="rate_").stack()
    s = scores.loc["sustained_batch"]
    coin = coincidence_table(table).loc["spikes"]
    corr = correspondence(table)
    seeds = int((table["kind"] == "run").sum())
    return {
        "‖v̂‖ decay rate before each spike (Figure 7)": (
            "≈ 0.999003 (β2 = 0.999), embedding and W_V",
            f"median {rates.median():.4f} (quartiles {rates.quantile(0.25):.4f}-"
            f"{rates.quantile(0.75):.4f}; β2 = {beta2:g}) over {len(spikes)} spikes × "
            f"{spikes.filter(like='rate_').shape[1]} blocks"),
        "sustained predictor (Figure 7)": (
            "7 of 7 spikes, no false alarm",
            f"above 2/η in [start − 20, peak] at {int(round(coin['sustained_batch'] * coin['n']))}"
            f" of {int(coin['n'])} spikes; {corr['at_spikes']} of its {corr['alarms']} alarms at "
            f"spikes; warned before the start: {int(round(s['recall'] * s['spikes']))} of "
            f"{int(s['spikes'])}; {seeds} seeds"),
    }


def json_beta2(table: pd.DataFrame) -> float:
    """β2 of the sweep's runs, read from its stored ``config`` column (the study's own where the
    table has none)."""
    import json

    if "config" in table and table["config"].notna().any():
        return float(json.loads(table["config"].dropna().iloc[0])["beta2"])
    return float(FIG7_RUN["beta2"])


PAPER_FIG7 = dict(d_model=320, n_heads=8, n_layers=8, d_ff=1280, n=900_000, batch=2048,
                  lr=1e-3, beta2=0.999, warmup=1000, steps=35_000)
"""The paper's Figure 7 setting as far as it is given (v1, Appendix D): 8 layers, about 10M
parameters (width 320 and MLP width 1,280 give 9.9M), 900k sequences of a compositional anchor
task, batch 2,048, β = (0.9, 0.999), a linear warm-up then a cosine decay, about 35,000
iterations (its Figure 7's axis). η, the warm-up's length and the width are not given; these
are ours. The model predicts the last token only (the book's Transformer), where the paper
trains next-token prediction on every position."""


def paper_config(device: str = "cuda", **overrides):
    """:func:`fig7_config` at the paper's Figure 7 scale (:data:`PAPER_FIG7`) on ``device``,
    the cosine decaying to η/10 at the last step, λ_grad(Ĥ) on both batches every step;
    ``overrides``: :data:`PAPER_FIG7`'s keys (to shrink it for a test) or RunConfig fields."""
    p = {**PAPER_FIG7, **{k: v for k, v in overrides.items() if k in PAPER_FIG7}}
    fields = {k: v for k, v in overrides.items() if k not in PAPER_FIG7}
    return fig7_config(**{
        "model_kwargs": {k: p[k] for k in ("d_model", "n_heads", "n_layers", "d_ff")},
        "data_kwargs": {"rule": "composition", "n": p["n"]},
        "batch_size": p["batch"], "eval_size": p["batch"], "lr": p["lr"],
        "beta2": p["beta2"], "warmup": p["warmup"], "steps": p["steps"],
        "schedule": "cosine", "decay_steps": 0, "device": device, "progress": True,
        **fields})


def setting_table(config=None) -> pd.DataFrame:
    """The study's setting (``config``, default :func:`fig7_config`) beside the paper's Figure 7
    (:data:`PAPER_FIG7` holds what the paper gives and what we chose for its GPU run)."""
    from utils.training.runs import parameter_count

    config = config or fig7_config()
    k = config.model_kwargs
    rows = {
        "task": ("a compositional anchor rule (Zhang et al. 2025), next-token prediction",
                 "the compositional rule of utils.training.anchor (two anchors, shifts "
                 "composed), the last token predicted"),
        "model": ("8-layer Transformer, about 10M parameters",
                  f"{k['n_layers']}-layer pre-LN Transformer, width {k['d_model']}, "
                  f"{k['n_heads']} heads, MLP width {k['d_ff']}: "
                  f"{parameter_count(config):,} parameters"),
        "data": ("900,000 sequences", f"{config.data_kwargs['n']:,} sequences"),
        "batch": ("2,048", f"{config.batch_size} (evaluation batch: the first "
                           f"{config.eval_size} training sequences, fixed)"),
        "optimizer": ("Adam, β1 = 0.9, β2 = 0.999",
                      f"torch.optim.Adam, β1 = {config.beta1:g}, β2 = {config.beta2:g}"),
        "schedule": ("linear warm-up, then cosine decay; η not given",
                     f"η = {config.lr:g} after a linear warm-up of {config.warmup} steps, then "
                     f"cosine decay to η/10 at step {config.decay_steps or config.steps:,}"),
        "steps": ("about 35,000 (Figure 7's axis)",
                  f"{config.steps:,}; λ_grad(Ĥ) every step from step {MEASURE_FROM}"),
        "precision": ("not given", config.dtype),
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=["the paper (Figure 7)",
                                                                 "this chapter"]) \
        .rename_axis("")
