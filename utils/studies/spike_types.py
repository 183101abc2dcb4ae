"""What a spike does to the test loss: the four kinds of the paper's Figure D1, by a stated rule.

The paper (v1, Appendix C) names four kinds of spike of a Transformer trained full batch on an
anchor-function task, by the training and test losses before and after it: *neutral* (both
resume their decline), *beneficial* (the test loss, high before, falls quickly after),
*malignant* (the training loss recovers, the test loss does not) and *catastrophic* (neither
recovers). It classifies its examples by eye, over thousands of steps. This module's rule is
ours (:func:`classify_spike`); a spike is one of the book's spikes on the training loss
(:mod:`utils.events.spikes`), with ``start``, ``peak`` and ``peak_loss``. *Before* is the median
over the :data:`WINDOW` steps before the start; *after* is the median over the :data:`WINDOW`
steps that end :data:`HORIZON` steps after the peak (or at the next spike's start, if that
comes first):

* **catastrophic**: the run diverged, or the training loss after is still above the geometric
  mean of its value before and the peak loss (it has not come back half-way, on a log scale);
* **undetermined**: the run ended before the after window closed (fewer than :data:`HORIZON`
  steps after the peak, and no later spike), or the next spike came within 2 :data:`WINDOW`
  steps of the peak;
* otherwise the test loss after is set against the test loss before: **beneficial** when
  after ≤ before / :data:`CHANGE`, **malignant** when after ≥ :data:`CHANGE` × before,
  **neutral** in between.

A first version judged "after" from the spike's end (the loss back under K × its trend). The
first probe of the anchor Transformer (a spike from 1e-6 whose loss was still at 2e-4, 400 steps
later, while its test loss had fallen 50-fold) showed that the end can lie beyond the run, so
the rule was changed to a fixed horizon before any sweep ran.

**The baseline.** The test loss drifts without any spike (it falls as training goes on, or
rises as the model overfits), so the same rule applied to calm stretches tells how often a
"beneficial" or "malignant" label would come without a spike (:func:`calm_labels`: pseudo-
spikes placed at random calm steps of the same run).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TYPES = ("neutral", "beneficial", "malignant", "catastrophic")
"""The paper's four kinds, in its order (Figure D1 a-d)."""
UNDETERMINED = "undetermined"
WINDOW = 20
"""Steps in the windows before the start and at the horizon."""
HORIZON = 300
"""Steps after the peak at which the after window ends."""
CHANGE = 2.0
"""The factor by which the test loss must fall (beneficial) or rise (malignant)."""


def _median(metrics: pd.DataFrame, column: str, lo: int, hi: int) -> float:
    """Median of ``column`` over the rows with lo ≤ step < hi (NaN when none)."""
    steps = metrics["step"].to_numpy()
    values = metrics[column].to_numpy(dtype=float)[(steps >= lo) & (steps < hi)]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def classify_spike(metrics: pd.DataFrame, spike, next_start: int | None = None, *,
                   window: int = WINDOW, horizon: int = HORIZON, change: float = CHANGE) -> dict:
    """The kind of ``spike`` (a :class:`~utils.events.spikes.Spike` of ``metrics["loss"]``) by
    the module's rule, with the medians it compared: ``type``, ``train_before``,
    ``test_before``, ``train_after``, ``test_after`` (losses; NaN where there is no window),
    ``after_step`` (where the after window ends, exclusive) and ``test_ratio`` = after / before.
    ``next_start``: the start of the run's next spike, if any. ``metrics`` holds ``step``,
    ``loss`` and ``test_loss``."""
    last = int(metrics["step"].iloc[-1])
    stop = spike.peak + horizon if next_start is None else min(spike.peak + horizon, next_start)
    out = {"start": spike.start, "peak": spike.peak, "end": spike.end,
           "peak_loss": spike.peak_loss,
           "train_before": _median(metrics, "loss", spike.start - window, spike.start),
           "test_before": _median(metrics, "test_loss", spike.start - window, spike.start),
           "train_after": math.nan, "test_after": math.nan, "after_step": stop,
           "test_ratio": math.nan}
    if spike.diverged:
        return {**out, "type": "catastrophic"}
    if stop > last + 1 or stop - spike.peak < 2 * window:
        return {**out, "type": UNDETERMINED}
    after = {col: _median(metrics, col, stop - window, stop) for col in ("loss", "test_loss")}
    out.update(train_after=after["loss"], test_after=after["test_loss"],
               test_ratio=after["test_loss"] / out["test_before"])
    if not after["loss"] <= math.sqrt(out["train_before"] * spike.peak_loss):
        return {**out, "type": "catastrophic"}
    ratio = out["test_ratio"]
    kind = ("beneficial" if ratio <= 1 / change else "malignant" if ratio >= change
            else "neutral")
    return {**out, "type": kind}


COLUMNS = ["start", "peak", "end", "peak_loss", "train_before", "test_before", "train_after",
           "test_after", "after_step", "test_ratio", "type"]


def classify_run(metrics: pd.DataFrame, spikes, **rule) -> pd.DataFrame:
    """:func:`classify_spike` for every spike of a run (each judged up to the next one's start):
    one row per spike."""
    nexts = [s.start for s in spikes[1:]] + [None]
    return pd.DataFrame([classify_spike(metrics, s, n, **rule) for s, n in zip(spikes, nexts)],
                        columns=COLUMNS)


def calm_starts(metrics: pd.DataFrame, spikes, n: int, rng, *, length: int,
                margin: int = WINDOW) -> list[int]:
    """Up to ``n`` steps t drawn by ``rng`` (sorted) at which a stretch [t − margin, t +
    length) touches no spike (from ``margin`` + ``length`` steps before its start to its end,
    or the run's end where it has none) and lies within the run."""
    steps = metrics["step"].to_numpy()
    if not len(steps):
        return []
    first, last = int(steps[0]), int(steps[-1])
    busy = [(s.start - margin - length, (s.end if s.end is not None else last) + margin)
            for s in spikes]
    calm = [t for t in range(first + margin, last - length + 2)
            if not any(lo <= t <= hi for lo, hi in busy)]
    if not calm:
        return []
    return sorted(int(t) for t in rng.choice(calm, size=min(n, len(calm)), replace=False))


PSEUDO_RISE = 5
"""Steps from a pseudo-spike's start to its peak (the anchor Transformer's spikes peak 3-5 steps
after their start)."""


def pseudo_label(metrics: pd.DataFrame, t: int, *, window: int = WINDOW,
                 horizon: int = HORIZON, change: float = CHANGE) -> str:
    """The rule's label at a pseudo-spike starting at step ``t`` and peaking
    :data:`PSEUDO_RISE` steps later at the largest loss on the way."""
    from utils.events.spikes import Spike

    loss = metrics.set_index("step")["loss"]
    peak = float(loss.loc[t:t + PSEUDO_RISE].max())
    pseudo = Spike(t, t, t + PSEUDO_RISE, t + PSEUDO_RISE, math.nan, math.nan, peak)
    return classify_spike(metrics, pseudo, window=window, horizon=horizon, change=change)["type"]


def calm_labels(metrics: pd.DataFrame, spikes, n: int, rng, *, window: int = WINDOW,
                horizon: int = HORIZON, change: float = CHANGE) -> pd.Series:
    """The rule's label (:func:`pseudo_label`) at ``n`` pseudo-spikes, their starts drawn by
    ``rng`` among the calm steps of the run (:func:`calm_starts`: the whole stretch the rule
    reads touches no spike): how often "beneficial" or "malignant" comes without a spike.
    Fewer than ``n`` labels where the run has fewer calm steps."""
    starts = calm_starts(metrics, spikes, n, rng, length=PSEUDO_RISE + horizon, margin=window)
    return pd.Series([pseudo_label(metrics, t, window=window, horizon=horizon, change=change)
                      for t in starts], dtype=object)


# ------------------------------------------------------------- the study: sweep "spike_types"

D_MODEL = 16
"""The model's width (the paper: Zhang et al.'s d_model = 400; see :func:`anchor_config`)."""
ANCHOR_RUN = dict(lr=3e-3, beta2=0.99, steps=1600, warmup=100)
"""The run of the study (the paper: β2 = 0.999, warm-up then cosine decay, η not given)."""
SEEDS = tuple(range(16))
LEAD = 40
"""Steps before a spike's start from which λ_grad(Ĥ) is replayed at every step."""
JUDGED = 20
"""λ_grad(Ĥ) "coincides" with a spike when it exceeds 2/η_t at a step of [start − 20, peak]
(the scoring module's horizon, :data:`utils.studies.scoring.JUDGED_HORIZON`)."""
CALM_FROM = 500
"""Calm pseudo-spikes start from this step on, past the first fast fall of both losses."""
CALM_LABELS, CALM_REPLAYS = 10, 2
"""Per seed: calm pseudo-spikes labelled by the rule; the first of them replayed for λ_grad(Ĥ)."""
CURVE_EVERY = 10
"""The run row keeps the training and test losses at every 10th step, for the chapter's plots."""


def anchor_config(n_layers: int = 4, **overrides):
    """The study's run: a pre-LN Transformer of ``n_layers`` layers, 4 heads, width
    :data:`D_MODEL` and MLP width 3 d (Zhang et al.'s ratio) on the 3x → x rule, 1,800 training
    and 200 test sequences (the paper's sizes), full batch, float32, :data:`ANCHOR_RUN`, with
    ``overrides``."""
    from utils.training.runs import RunConfig

    return RunConfig(**{
        "model": "transformer", "data": "anchor", "dtype": "float32", "track_every": 0,
        "model_kwargs": {"d_model": D_MODEL, "n_heads": 4, "n_layers": n_layers,
                         "d_ff": 3 * D_MODEL},
        "data_kwargs": {"rule": "3x_to_x", "n": 1800, "n_test": 200},
        "threads": 1, "progress": False, **ANCHOR_RUN, **overrides})


SEARCH = {"beta2": (0.999, 0.99), "lr": (1e-3, 3e-3, 1e-2)}
"""The search for a setting that spikes within the budget (sweep ``anchor_search``): the study's
run under each β2 × η, seed 0."""


def search_configs() -> list:
    """The configs of :data:`SEARCH`, β2 outer, η inner."""
    return [anchor_config(beta2=b, lr=lr) for b in SEARCH["beta2"] for lr in SEARCH["lr"]]


def search_rows(results) -> list[dict]:
    """Per run of the search: β2, η, its spikes (count, first start and the loss there), the
    final and smallest training loss and the final test loss."""
    rows = []
    for r in results:
        m, first = r.metrics, (r.spikes[0] if r.spikes else None)
        rows.append({"beta2": r.config.beta2, "lr": r.config.lr, "spikes": len(r.spikes),
                     "first_start": first.start if first else None,
                     "first_start_loss": first.start_loss if first else None,
                     "final_loss": float(m["loss"].iloc[-1]), "min_loss": float(m["loss"].min()),
                     "final_test_loss": float(m["test_loss"].iloc[-1])})
    return rows


def lambda_grad_window(base, lo: int, hi: int) -> pd.DataFrame:
    """λ_grad(Ĥ) at every step of [lo, hi] of ``base`` (a run with checkpoints), by replaying it
    from the checkpoint after update lo − 1 (:func:`utils.studies.interventions.checkpoint_at`)
    with ``grad_every=1``: columns ``step``, ``loss``, ``ratio_a`` and ``ratio_b`` (forms A, the
    paper's, and B over 2/η_t) and ``replay_diff``, the largest relative difference between the
    replayed losses and ``base``'s (0 when the replay is bit for bit, as it should be)."""
    from dataclasses import replace

    from utils.studies.interventions import checkpoint_at
    from utils.training.runs import lr_at, run

    config = replace(base.config, steps=hi, grad_every=1, measure=("lambda_grad",),
                     progress=False)
    replay = run(config, resume=checkpoint_at(base, max(lo - 1, 0)), spot_checks=False).metrics
    half_eta = np.array([lr_at(config, int(s)) / 2 for s in replay["step"]])
    loss = base.metrics.set_index("step")["loss"].reindex(replay["step"]).to_numpy()
    diff = np.abs(replay["loss"].to_numpy() - loss) / np.abs(loss)
    return pd.DataFrame({"step": replay["step"], "loss": replay["loss"],
                         "ratio_a": replay["lambda_grad_pre_a"].to_numpy() * half_eta,
                         "ratio_b": replay["lambda_grad_pre"].to_numpy() * half_eta,
                         "replay_diff": float(np.nanmax(diff)) if len(diff) else math.nan})


def coincidence(window: pd.DataFrame, start: int, peak: int, judged: int = JUDGED) -> dict:
    """λ_grad(Ĥ) around a spike (or a pseudo-spike) from :func:`lambda_grad_window`: the first
    step of [start − judged, peak] at which form A exceeds 2/η_t, relative to the start
    (``grad_lag``; NaN if none), and the largest ratio of each form before the start
    ([start − judged, start)) and over the rise ([start, peak]); the window itself as
    space-separated traces of form A's ratio and of the loss from step ``trace_from`` on."""
    steps = window["step"].to_numpy()
    before = (steps >= start - judged) & (steps < start)
    rise = (steps >= start) & (steps <= peak)
    above = steps[(before | rise) & (window["ratio_a"].to_numpy() > 1)]

    def top(col, mask):
        values = window[col].to_numpy()[mask]
        return float(np.nanmax(values)) if np.isfinite(values).any() else math.nan

    return {"grad_lag": int(above.min() - start) if len(above) else math.nan,
            "trace_from": int(steps[0]) if len(steps) else math.nan,
            "trace_ratio_a": " ".join(f"{x:.4g}" for x in window["ratio_a"]),
            "trace_loss": " ".join(f"{x:.4g}" for x in window["loss"]),
            "grad_a_before": top("ratio_a", before), "grad_a_rise": top("ratio_a", rise),
            "grad_b_before": top("ratio_b", before), "grad_b_rise": top("ratio_b", rise),
            "replay_diff": float(window["replay_diff"].iloc[0]) if len(window) else math.nan}


def type_rows(config, seeds) -> list[dict]:
    """The sweep's task (``trains=True``): for each seed, train ``config`` with checkpoints
    every 50 steps and take its :func:`seed_rows`."""
    from dataclasses import replace

    from utils.training.runs import run

    rows = []
    for seed in seeds:
        rows += seed_rows(run(replace(config, seed=int(seed)), checkpoint_every=50,
                              spot_checks=False))
    return rows


def seed_rows(base, calm_replays: int = CALM_REPLAYS) -> list[dict]:
    """Everything the study keeps of one run ``base`` (made with checkpoints): classify each
    spike (:func:`classify_run`), replay λ_grad(Ĥ) around it (:func:`lambda_grad_window`,
    :func:`coincidence`), and do the same at calm pseudo-spikes (:data:`CALM_LABELS` labelled,
    the first ``calm_replays`` of them replayed). Rows of ``kind`` "run" (spike count, final
    losses, the loss curves every :data:`CURVE_EVERY` steps), "spike", "calm" and "score"
    (λ_grad(Ĥ) > 2/η_t as an alarm on the ``steps`` replayed steps, scored by
    :func:`utils.studies.scoring.score_signal`)."""
    from utils.studies.scoring import JUDGED_HORIZON, score_signal

    m, seed, layers = base.metrics, base.config.seed, base.config.model_kwargs["n_layers"]
    common = {"seed": seed, "layers": layers}
    curve = m[m["step"] % CURVE_EVERY == 0]
    rows = [{**common, "kind": "run", "spikes": len(base.spikes),
             "final_loss": float(m["loss"].iloc[-1]),
             "final_test_loss": float(m["test_loss"].iloc[-1]),
             "min_loss": float(m["loss"].min()), "diverged_at": base.diverged_at,
             "seconds": base.seconds, "plain_step_s": base.timings.get("plain_step_s"),
             "curve_train": " ".join(f"{x:.4g}" for x in curve["loss"]),
             "curve_test": " ".join(f"{x:.4g}" for x in curve["test_loss"])}]
    windows = []
    for k, kind in classify_run(m, base.spikes).iterrows():
        window = lambda_grad_window(base, kind["start"] - LEAD, kind["peak"])
        windows.append(window)
        rows.append({**common, "kind": "spike", "index": k, **kind.to_dict(),
                     "start_loss": base.spikes[k].start_loss,
                     **coincidence(window, kind["start"], kind["peak"])})
    rng = np.random.default_rng([seed, layers])
    calm = m[m["step"] >= CALM_FROM]
    starts = calm_starts(calm, base.spikes, CALM_LABELS, rng, length=PSEUDO_RISE + HORIZON)
    for i, t in enumerate(starts):
        row = {**common, "kind": "calm", "index": i, "start": t, "peak": t + PSEUDO_RISE,
               "type": pseudo_label(m, t)}
        if i < calm_replays:
            window = lambda_grad_window(base, t - LEAD, t + PSEUDO_RISE)
            windows.append(window)
            row.update(coincidence(window, t, t + PSEUDO_RISE))
        rows.append(row)
    steps = np.unique(np.concatenate([w["step"].to_numpy() for w in windows])) \
        if windows else np.array([], dtype=int)
    ratio = (pd.concat(windows).drop_duplicates("step").set_index("step")["ratio_a"]
             .reindex(steps).to_numpy() if windows else np.array([]))
    score = score_signal(steps, ratio > 1, np.isfinite(ratio), base.spikes, JUDGED_HORIZON,
                         np.random.default_rng(seed))
    rows.append({**common, "kind": "score", "steps": len(steps), **score})
    return rows


# ------------------------------------------------------------------ the chapter's tables

COINCIDE_MIN = 0.9
"""Stated before the sweep ran: λ_grad(Ĥ) "coincides" with the spikes when it exceeds 2/η_t in
[start − :data:`JUDGED`, peak] of at least this share of them (the paper: all of them)."""
CALM_MAX = 0.1
"""... and in the same window of at most this share of the calm pseudo-spikes."""
DRIFT_P = 0.05
"""Spikes change the test loss beyond its drift when the share of beneficial or malignant
labels is larger at the spikes than at the calm pseudo-spikes, by a one-sided Fisher exact test
at this level."""


def _rows(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    return table[table["kind"] == kind]


def type_counts(table: pd.DataFrame) -> pd.DataFrame:
    """How often each kind (:data:`TYPES`, then undetermined) comes at the spikes and at the
    calm pseudo-spikes of the sweep's ``table``: counts and shares of the determined ones."""
    order = [*TYPES, UNDETERMINED]
    spikes = _rows(table, "spike")["type"].value_counts().reindex(order, fill_value=0)
    calm = _rows(table, "calm")["type"].value_counts().reindex(order, fill_value=0)
    out = pd.DataFrame({"spikes": spikes, "calm pseudo-spikes": calm})
    for col, label in (("spikes", "share of spikes"), ("calm pseudo-spikes", "share of calm")):
        determined = out[col].loc[list(TYPES)].sum()
        out[label] = out[col] / determined if determined else math.nan
        out.loc[UNDETERMINED, label] = math.nan
    out.index.name = "kind"
    return out


def coincidence_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind of spike, and for the replayed calm pseudo-spikes: how many, the share with
    λ_grad(Ĥ) (form A) above 2/η_t in [start − :data:`JUDGED`, peak] with its 95 % Wilson
    interval, the median lag of the first such step after the start, and the median of form A's
    largest ratio before the start and over the rise."""
    spikes = _rows(table, "spike")
    calm = _rows(table, "calm").dropna(subset=["grad_a_rise"])
    from utils.studies.scoring import wilson_interval

    groups = [(kind, spikes[spikes["type"] == kind]) for kind in (*TYPES, UNDETERMINED)]
    groups += [("all spikes", spikes), ("calm pseudo-spikes", calm)]
    rows = []
    for name, g in groups:
        k, n = int(g["grad_lag"].notna().sum()), len(g)
        low, high = wilson_interval(k, n)
        rows.append({"kind": name, "n": n, "coinciding": k,
                     "share": k / n if n else math.nan, "low": low, "high": high,
                     "median lag": float(g["grad_lag"].median()) if k else math.nan,
                     "median ratio before": float(g["grad_a_before"].median()) if n else math.nan,
                     "median ratio over the rise": float(g["grad_a_rise"].median())
                     if n else math.nan})
    return pd.DataFrame(rows).set_index("kind")


def lambda_grad_score(table: pd.DataFrame) -> dict:
    """λ_grad(Ĥ) > 2/η_t as an alarm on the replayed steps, pooled over seeds by the book's
    scoring module (:func:`utils.studies.scoring.pool`, with intervals): it is a hit only in
    [start − h, start), so a crossing at or after the start does not count."""
    from utils.studies.scoring import pool

    return pool(_rows(table, "score"), intervals=True)


def drift_test(table: pd.DataFrame) -> dict:
    """Beneficial or malignant labels among the determined spikes against the calm
    pseudo-spikes: counts, shares and the one-sided Fisher exact p-value that spikes carry
    them more often (scipy.stats.fisher_exact)."""
    from scipy.stats import fisher_exact

    def counts(rows):
        determined = rows[rows["type"].isin(TYPES)]
        changed = determined["type"].isin(("beneficial", "malignant")).sum()
        return int(changed), len(determined)

    ks, ns = counts(_rows(table, "spike"))
    kc, nc = counts(_rows(table, "calm"))
    p = (fisher_exact([[ks, ns - ks], [kc, nc - kc]], alternative="greater").pvalue
         if ns and nc else math.nan)
    return {"changed_spikes": ks, "determined_spikes": ns, "changed_calm": kc,
            "determined_calm": nc, "share_spikes": ks / ns if ns else math.nan,
            "share_calm": kc / nc if nc else math.nan, "p": float(p)}


def type_verdicts(table: pd.DataFrame, suffix: str = "") -> list:
    """The chapter's verdicts over the sweep's ``table`` (each name followed by ``suffix``, e.g.
    "_12_layers" for the second setting), each with what it would measure were the claim false:

    * ``every_kind_coincides`` (the paper): λ_grad(Ĥ) > 2/η_t in [start − 20, peak] at ≥
      :data:`COINCIDE_MIN` of the spikes (false: spikes with λ_grad(Ĥ) below 2/η throughout);
    * ``coincidence_is_specific`` (ours): at ≤ :data:`CALM_MAX` of the calm pseudo-spikes
      (false: λ_grad(Ĥ) above 2/η whether or not a spike comes);
    * ``four_kinds`` (the paper): each of the four kinds among the determined spikes;
    * ``spikes_change_generalisation`` (ours): beneficial or malignant more often at spikes
      than at calm pseudo-spikes (:func:`drift_test`, p < :data:`DRIFT_P`; false: the labels
      are the test loss's drift).
    """
    from utils.studies.verdicts import Verdict

    coin = coincidence_table(table)
    spikes, calm = coin.loc["all spikes"], coin.loc["calm pseudo-spikes"]
    per_kind = {f"share_{k}": float(coin.loc[k, "share"]) for k in TYPES if coin.loc[k, "n"]}
    counts = type_counts(table)["spikes"]
    drift = drift_test(table)
    return [
        Verdict("every_kind_coincides" + suffix,
                f"λ_grad(Ĥ) > 2/η within [start − {JUDGED}, peak] of ≥ {COINCIDE_MIN:.0%} of "
                "the spikes, of every kind", bool(spikes["share"] >= COINCIDE_MIN),
                {"share": float(spikes["share"]), "low": float(spikes["low"]),
                 "spikes": int(spikes["n"]), **per_kind}),
        Verdict("coincidence_is_specific" + suffix,
                f"... and of ≤ {CALM_MAX:.0%} of calm pseudo-spikes",
                bool(calm["share"] <= CALM_MAX),
                {"share": float(calm["share"]), "high": float(calm["high"]),
                 "windows": int(calm["n"])}),
        Verdict("four_kinds" + suffix, "all four kinds of spike occur",
                bool((counts.loc[list(TYPES)] > 0).all()),
                {k: int(counts.loc[k]) for k in (*TYPES, UNDETERMINED)}),
        Verdict("spikes_change_generalisation" + suffix,
                "beneficial or malignant more often at spikes than at calm pseudo-spikes",
                bool(drift["p"] < DRIFT_P),
                {k: drift[k] for k in ("share_spikes", "share_calm", "p")}),
    ]


def setting_table(config) -> pd.DataFrame:
    """The paper's Figure D1 setting beside ``config`` (the study's run, :func:`anchor_config`):
    one row per quantity. The paper's values are from its text (v1, Appendices C and D) and,
    for the widths, from Zhang et al.'s published configuration of the task."""
    k, d = config.model_kwargs, config.data_kwargs
    ours = {
        "task": f"anchor function, rule {d['rule'].replace('_to_', ' → ')}",
        "layers": f"{k['n_layers']}",
        "heads, width, MLP width": f"{k['n_heads']}, {k['d_model']}, {k['d_ff']}",
        "sequences (train / test)": f"{d['n']} / {d['n_test']}",
        "batch": "full batch",
        "loss": "cross-entropy on the target token (last position)",
        "optimizer": f"torch.optim.Adam, β = ({config.beta1:g}, {config.beta2:g}), "
                     f"ε = {config.eps:g}",
        "η and schedule": f"{config.lr:g}, linear warm-up over {config.warmup} steps, "
                          "then constant",
        "steps": f"{config.steps}",
        "precision": config.dtype,
    }
    paper = {
        "task": "anchor function, rule 3x → x",
        "layers": "4 and 12",
        "heads, width, MLP width": "not given (Zhang et al.'s task: 4, 400, 1,200)",
        "sequences (train / test)": "1800 / 200",
        "batch": "full batch",
        "loss": "cross-entropy",
        "optimizer": "Adam, β = (0.9, 0.999)",
        "η and schedule": "not given; linear warm-up, then cosine decay",
        "steps": "runs of 4,000 to 30,000 steps (Figure D1's axes)",
        "precision": "not given",
    }
    return pd.DataFrame({"the paper (Figure D1)": paper, "this chapter": ours}).rename_axis(
        "quantity")


def paper_comparison(table: pd.DataFrame, sustained: pd.DataFrame | None = None,
                     deep: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's numbers on its Transformers beside the book's: the spike-type sweep's
    ``table`` (4 layers), the same study on 12 layers ``deep`` (sweep "spike_types_12"; its rows
    say "not measured" without it) and the sustained-predictor sweep's ``sustained`` table
    (likewise; :func:`utils.studies.sustained.figure7_rows`)."""
    rows = {}
    for layers, t in ((4, table), (12, deep)):
        kinds_row = f"kinds of spike (Figure D1), {layers} layers"
        coincide_row = f"spikes with λ_grad(Ĥ) > 2/η (Figure D1), {layers} layers"
        paper_kinds = ("four: neutral, beneficial, malignant, catastrophic (one example each, "
                       "at 4 or 12 layers: the paper does not say which)")
        if t is None:
            missing = "not measured (the sweep 'spike_types_12' not given)"
            rows.update({kinds_row: (paper_kinds, missing), coincide_row: ("all", missing)})
            continue
        counts = type_counts(t)["spikes"]
        coin = coincidence_table(t).loc["all spikes"]
        kinds = ", ".join(f"{k} {int(counts.loc[k])}" for k in TYPES)
        rows[kinds_row] = (paper_kinds,
                           f"{kinds} (and {int(counts.loc[UNDETERMINED])} undetermined), "
                           f"{int((t['kind'] == 'run').sum())} seeds")
        rows[coincide_row] = ("all", f"{int(coin['coinciding'])} of {int(coin['n'])} "
                                     f"(95 % interval {coin['low']:.2f}-{coin['high']:.2f})")
    if sustained is None:
        rows.update({
            "‖v̂‖ decay rate before each spike (Figure 7)": (
                "≈ 0.999003 (β2 = 0.999)", "not measured (the sweep 'sustained' not given)"),
            "sustained predictor (Figure 7)": (
                "7 of 7 spikes, no false alarm", "not measured (the sweep 'sustained' not given)")})
    else:
        from utils.studies.sustained import figure7_rows

        rows.update(figure7_rows(sustained))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["the paper", "this book"]) \
        .rename_axis("quantity")


def depth_table(tables: dict) -> pd.DataFrame:
    """The study's numbers side by side for each setting: ``tables`` maps a label (e.g. "4
    layers") to its sweep's table. One row per quantity, as text: parameters, seeds, spikes,
    each kind's count, the coincidence with λ_grad(Ĥ) > 2/η (95 % Wilson interval), the same at
    the calm pseudo-spikes, the alarm's precision (matched chance) and recall, the median
    full-batch step on one core and the median final losses."""
    from utils.training.runs import parameter_count

    def column(t: pd.DataFrame, layers: int) -> dict:
        runs = _rows(t, "run")
        counts = type_counts(t)["spikes"]
        coin = coincidence_table(t)
        spikes, calm = coin.loc["all spikes"], coin.loc["calm pseudo-spikes"]
        score = lambda_grad_score(t)

        def share(row):
            return (f"{int(row['coinciding'])} of {int(row['n'])} "
                    f"({row['low']:.2f}-{row['high']:.2f})")
        return {
            "parameters": f"{parameter_count(anchor_config(layers)):,}",
            "seeds (spiking at least once)": f"{len(runs)} ({int((runs['spikes'] > 0).sum())})",
            "spikes": f"{int(counts.sum())}",
            **{f"  {k}": f"{int(counts.loc[k])}" for k in (*TYPES, UNDETERMINED)},
            "spikes with λ_grad(Ĥ) > 2/η in [start − 20, peak]": share(spikes),
            "calm pseudo-spikes with it": share(calm),
            "as an alarm: precision (chance), recall": (
                f"{score['precision']:.2f} ({score['chance_precision']:.2f}), "
                f"{score['recall']:.2f}"),
            "full-batch step, one core (s)": f"{runs['plain_step_s'].median():.3f}",
            "final training / test loss (median)": (
                f"{runs['final_loss'].median():.2g} / {runs['final_test_loss'].median():.2g}"),
        }

    out = {label: column(t, int(_rows(t, "run")["layers"].iloc[0]))
           for label, t in tables.items()}
    return pd.DataFrame(out).rename_axis("quantity")


def rise_factors(spikes: pd.DataFrame, over: int = JUDGED) -> pd.Series:
    """Per spike row of the sweep's table: form A's ratio at the start over its ratio ``over``
    steps earlier (from the replayed trace; NaN where either is missing or not positive)."""
    def factor(row):
        ratio = np.array(str(row["trace_ratio_a"]).split(), dtype=float)
        i = int(row["start"] - row["trace_from"])
        if not (0 <= i - over and i < len(ratio) and ratio[i - over] > 0 and ratio[i] > 0):
            return math.nan
        return float(ratio[i] / ratio[i - over])
    return spikes.apply(factor, axis=1)
