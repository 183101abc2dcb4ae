"""The paper's Figure 4: a spike needs λ_grad above 2/η; λ_max above 2/η is not enough (chapter 4).

The paper (v1, §4.3, Appendix E) trains a two-layer tanh network on 20 points of sin x + sin 4x,
full batch: gradient descent (width 20, η = 0.08) in panels (a, b) and Adam (width 100,
η = 0.01) in panels (c, d). Its spikes there are rises of a few per cent of the loss, so the
chapter counts them with the book's detector at a stated factor (the runs' ``spike_factor``).

The rules, fixed before the sweep ran:

* a **crossing** is an interval in which a quantity stayed above 2/η (the book's hysteresis,
  :func:`~utils.events.spikes.sustained_crossings`); crossings that start in the first
  :data:`WARMUP` steps are not counted (the paper: in the first epochs both quantities exceed
  2/η while the loss falls fast, and no spike follows);
* a crossing **matches** a spike when the crossing's interval meets the spike's onset window
  [start − :data:`LEAD`, start]: the quantity was above 2/η at some step of the
  :data:`LEAD` steps up to the spike's start, never later;
* **recall**: the share of spikes that a crossing matches; **precision**: the share of
  crossings that match a spike;
* **chance**: the precision of the same crossings moved to random places in the run
  (:data:`CHANCE_DRAWS` draws under a fixed seed).

These rules read the paper's statements ("a spike only when λ_grad(Ĥ) > 2/η"). Our stricter
test, whether λ_grad(Ĥ) warns better than chance, is scored by the book's one set of rules
(:mod:`utils.studies.scoring`, chapters 6 and 9's): every step above 2/η is an alarm, a hit
in [start − h, start) with h = :data:`~utils.studies.scoring.JUDGED_HORIZON`, alarms inside
spikes dropped, matched chance, counts pooled over seeds (:func:`scored_counts`).
:func:`decomposition` shows, one difference at a time, how the chapter's former rule for that
test (crossings, the onset window, a share of seeds) turns into the book's.

λ_grad is the paper's form (A), gᵀĤg/‖g‖² (``lambda_grad_pre_a``); with gradient descent
(D = I, c = 1) it is λ_grad(H). Form (B) (``lambda_grad_pre``) is scored beside it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.curvature.tracker import uncertified_steps
from utils.events.spikes import Crossing, score_predictor, sustained_crossings
from utils.studies.paper import PaperStatement, seed_value
from utils.studies.scoring import JUDGED_HORIZON, pool, pooled_difference, score_signal
from utils.studies.verdicts import Verdict

WARMUP = 20
"""Crossings that start in the first 20 steps are not counted."""
LEAD = 10
"""The onset window: the 10 steps up to a spike's start."""
CHANCE_DRAWS = 200
MIN_GAP = 20
"""λ_max(H) "already exceeds 2/η while the loss continues to decrease": the first crossing
comes at least 20 steps (twice :data:`LEAD`) before the next spike's start."""
COLUMNS = {"lambda_max": ("lambda_max_pre", "lambda_max_H"),
           "lambda_grad": ("lambda_grad_pre_a",), "lambda_grad_b": ("lambda_grad_pre",)}
"""Each scored quantity and the metric column that holds it (the first present)."""


def crossings_after_warmup(metrics, column: str, threshold: float) -> list[Crossing]:
    """The sustained crossings of ``column`` above ``threshold`` that start after
    :data:`WARMUP`."""
    m = metrics.dropna(subset=[column])
    return [c for c in sustained_crossings(m[column], m["step"], threshold) if c.start > WARMUP]


def scores(crossings: list[Crossing], spikes) -> tuple[float, float]:
    """(recall, precision) of ``crossings`` as alarms of ``spikes`` under the module's
    matching rule (:func:`~utils.events.spikes.score_predictor` with ``overlap``); NaN where
    undefined."""
    score = score_predictor(crossings, list(spikes), max_lead=LEAD, overlap=True)
    return score.recall, score.precision


def chance_precision(crossings: list[Crossing], spikes, first: int, last: int,
                     seed: int = 0) -> float:
    """The mean precision of the same crossings (their durations kept) each moved to a
    uniformly random start in [first, last], over :data:`CHANCE_DRAWS` draws."""
    if not crossings or not spikes or last <= first:
        return math.nan
    rng = np.random.default_rng(seed)
    durations = [c.end - c.start for c in crossings]
    values = []
    for _ in range(CHANCE_DRAWS):
        starts = rng.integers(first, last + 1, size=len(durations))
        moved = [Crossing(int(s), int(s + d)) for s, d in zip(starts, durations)]
        values.append(scores(moved, spikes)[1])
    return float(np.mean(values))


VARIANTS = {
    "inside_incl_w10": dict(horizon=LEAD, count_inside=True, include_start=True),
    "inside_w10": dict(horizon=LEAD, count_inside=True),
    "w10": dict(horizon=LEAD),
    "book": dict(horizon=JUDGED_HORIZON),
}
"""The step-alarm rules :func:`scored_counts` records, from the chapter's former window to the
book's rule (``book``): alarms inside spikes counted as false and the window [start − 10,
start]; the window [start − 10, start); alarms inside spikes dropped; h = 20."""
SCORED_SIGNALS = ("lambda_grad", "lambda_max")
COUNTS = ("hits", "alarms", "warned", "spikes", "false_alarms", "calm_steps", "chance_precision")


def scored_counts(result) -> dict:
    """The step-alarm counts of λ_grad(Ĥ) (form A) and λ_max(Ĥ) above 2/η on one run under each
    rule of :data:`VARIANTS`: ``<signal>_<variant>_<count>`` for the counts of
    :data:`COUNTS` (matched chance on the measured steps, scored by the same rule), and
    ``<signal>_<variant>_leads``."""
    m, spikes = result.metrics, list(result.spikes)
    steps = m["step"].to_numpy()
    out = {}
    for i, q in enumerate(SCORED_SIGNALS):
        column = next((c for c in COLUMNS[q] if c in m and m[c].notna().any()), None)
        values = (m[column].to_numpy(dtype=float) if column else np.full(len(m), np.nan))
        fired = np.nan_to_num(values, nan=-np.inf) > 2.0 / result.config.lr
        for j, (name, rule) in enumerate(VARIANTS.items()):
            row = score_signal(steps, fired, np.isfinite(values), spikes, rng=np.random.default_rng(
                [result.config.seed, i, j]), **rule)
            out.update({f"{q}_{name}_{c}": row[c] for c in (*COUNTS, "leads")})
    return out


def scored_rows(table: pd.DataFrame, signal: str, variant: str = "book") -> pd.DataFrame:
    """The seeds' :func:`scored_counts` for ``signal`` under ``variant`` as rows of the book's
    scoring tables (one per seed, with ``signal``, ``seed``, ``default`` and ``horizon``), as
    :func:`~utils.studies.scoring.pool` and :func:`~utils.studies.scoring.pooled_difference`
    take them."""
    key = f"{signal}_{variant}"
    rows = pd.DataFrame({c: table[f"{key}_{c}"].to_numpy() for c in COUNTS})
    rows["leads"] = table[f"{key}_leads"].to_numpy()
    rows["steps"] = table["n_steps"].to_numpy() if "n_steps" in table else 0
    return rows.assign(signal=signal, seed=table["seed"].to_numpy(), architecture="fig4",
                       setting="full batch", default=True, horizon=JUDGED_HORIZON)


def pooled_counts(table: pd.DataFrame, signal: str, variant: str = "book",
                  intervals: bool = False) -> dict:
    """:func:`~utils.studies.scoring.pool` of the seeds' :func:`scored_counts` for ``signal``
    under ``variant``: the book's pooled precision, recall and matched-chance precision."""
    return pool(scored_rows(table, signal, variant), intervals=intervals)


def onset_summary(result) -> dict:
    """One run of Figure 4 read by the module's rules: ``n_spikes``, ``uncertified_steps``
    (tracked λ_max that the solver could not certify); for each quantity of
    :data:`COLUMNS` its crossings (``n_<q>_crossings``), ``recall_<q>`` and
    ``precision_<q>``; λ_grad's ``chance_precision_grad``; and, from the first λ_max crossing,
    ``first_max_crossing``, ``gap_to_spike`` (steps to the next spike's start, to the run's
    end if none; NaN without a crossing) and ``loss_ratio_over_gap`` (the loss at the end of
    that gap over the loss at the crossing)."""
    m, spikes, lr = result.metrics, list(result.spikes), result.config.lr
    threshold = 2.0 / lr
    out = {"optimizer": result.config.optimizer, "n_spikes": len(spikes), "n_steps": len(m),
           "diverged": result.diverged_at is not None, "uncertified_steps": uncertified_steps(m),
           **scored_counts(result)}
    crossings = {}
    for q, columns in COLUMNS.items():
        column = next((c for c in columns if c in m and m[c].notna().any()), None)
        crossings[q] = [] if column is None else crossings_after_warmup(m, column, threshold)
        recall, precision = scores(crossings[q], spikes)
        out.update({f"n_{q}_crossings": len(crossings[q]), f"recall_{q}": recall,
                    f"precision_{q}": precision})
    steps = m["step"].to_numpy()
    out["chance_precision_grad"] = chance_precision(crossings["lambda_grad"], spikes,
                                                    WARMUP + 1, int(steps[-1]),
                                                    seed=result.config.seed)
    first = crossings["lambda_max"][0].start if crossings["lambda_max"] else None
    out.update(first_max_crossing=math.nan, gap_to_spike=math.nan, loss_ratio_over_gap=math.nan)
    if first is not None:
        later = [s.start for s in spikes if s.start >= first]
        end = later[0] if later else int(steps[-1])
        loss = m.set_index("step")["loss"]
        out.update(first_max_crossing=first, gap_to_spike=end - first,
                   loss_ratio_over_gap=float(loss.loc[end] / loss.loc[first]))
    return out


def figure4_rows(results) -> list[dict]:
    """The chapter sweep's evaluate: one :func:`onset_summary` row per seed."""
    return [onset_summary(r) for r in results]


def _applicable(table, column, condition):
    """(the stored values of ``column`` for the seeds meeting ``condition``, their count)."""
    rows = table[condition(table)]
    return rows[column].to_numpy(dtype=float), len(rows)


def figure4_statements(adam, gd, default_seed: int = 0) -> list[PaperStatement]:
    """The rows of chapter 4's "paper vs book" table from the stored sweep: ``adam`` and
    ``gd`` hold one :func:`onset_summary` row per seed (with a ``seed`` column). A statement
    about an event is judged over the seeds that have it (their count is in the quantity's
    name); "our default run" is seed ``default_seed`` of the sweep."""
    def default(table, column):
        return seed_value(table, column, default_seed)

    n = len(gd)
    crossed = lambda t: t["first_max_crossing"].notna()      # noqa: E731
    spiked = lambda t: t["n_spikes"] > 0                      # noqa: E731
    gaps, n_crossed = _applicable(gd, "gap_to_spike", crossed)
    ratios, _ = _applicable(gd, "loss_ratio_over_gap", crossed)
    gd_recall, n_gd_spiked = _applicable(gd, "recall_lambda_grad", spiked)
    per_spike = (adam["n_lambda_max_crossings"] / adam["n_spikes"]).where(adam["n_spikes"] > 0)
    adam_recall, n_adam_spiked = _applicable(adam, "recall_lambda_grad", spiked)
    default_per_spike = (default(adam, "n_lambda_max_crossings") / default(adam, "n_spikes")
                         if default(adam, "n_spikes") > 0 else math.nan)
    return [
        PaperStatement("4.1a", "Fig. 4(a, b)", "GD: λ_max(H) exceeds 2/η (epoch 416) with no "
                       "spike; the spike comes 164 epochs later (580)",
                       f"steps from λ_max(H)'s first crossing to the next spike's start, "
                       f"over the {n_crossed} of {n} seeds where it crosses",
                       default(gd, "gap_to_spike"), gaps, f"≥ {MIN_GAP}",
                       lambda x: x >= MIN_GAP),
        PaperStatement("4.1b", "Fig. 4(a)", "GD: the loss continues to decrease while λ_max(H) "
                       "> 2/η", "loss at the end of that gap / loss at the crossing",
                       default(gd, "loss_ratio_over_gap"), ratios, "< 1", lambda x: x < 1),
        PaperStatement("4.2", "Fig. 4(a, b)", "GD: the spike occurs only when λ_grad(H) also "
                       "exceeds 2/η", f"share of spikes matched by a λ_grad(H) crossing, over "
                       f"the {n_gd_spiked} of {n} seeds with a spike",
                       default(gd, "recall_lambda_grad"), gd_recall, "= 1 (every spike)",
                       lambda x: x >= 1),
        PaperStatement("4.3", "Fig. 4(c, d)", "Adam: 7 spikes, while λ_max(Ĥ) exceeds 2/η at 10 "
                       "different times (λ_max alone is insufficient)",
                       f"λ_max(Ĥ) crossings per spike, over the {n_adam_spiked} of {n} seeds "
                       "with a spike (the paper: 10/7 = 1.4)", default_per_spike,
                       per_spike.dropna().to_numpy(), "> 1", lambda x: x > 1, digits=2),
        PaperStatement("4.4", "Fig. 4(c, d)", "Adam: spikes occur only when λ_grad(Ĥ) > 2/η",
                       f"share of spikes matched by a λ_grad(Ĥ) crossing (form A), over the "
                       f"{n_adam_spiked} of {n} seeds with a spike",
                       default(adam, "recall_lambda_grad"), adam_recall, "= 1 (every spike)",
                       lambda x: x >= 1),
    ]


def forms_table(adam):
    """λ_grad(Ĥ)'s two forms side by side over the seeds with a spike: the median (over seeds)
    of crossings, recall and precision, for form (A), the paper's, and form (B)."""
    rows = adam[adam["n_spikes"] > 0]
    out = {}
    for name, q in (("(A) gᵀĤg/‖g‖², the paper's", "lambda_grad"),
                    ("(B) c(Dg)ᵀH(Dg)/(gᵀDg)", "lambda_grad_b"),
                    ("λ_max(Ĥ)", "lambda_max")):
        out[name] = {"crossings": rows[f"n_{q}_crossings"].median(),
                     "recall": rows[f"recall_{q}"].median(),
                     "precision": rows[f"precision_{q}"].median()}
    return pd.DataFrame(out).T.round(3)


def stricter_verdicts(adam) -> list[Verdict]:
    """Our tests beyond the paper, on Adam's stored seeds, scored by the book's one set of rules
    (:func:`pooled_counts`, the ``book`` rule: counts pooled over every seed) and judged by the
    book's one rule on 95 % bootstrap intervals over seeds: λ_grad(Ĥ) > 2/η is more precise than
    the same number of random alarms on the measured steps (``beyond_grad_beats_chance``), and
    more precise than λ_max(Ĥ) > 2/η (``beyond_grad_more_precise``: their paired difference
    above 0). If λ_grad(Ĥ) carried no information about the spikes, its precision would sit at
    chance and neither would hold."""
    grad_rows, max_rows = scored_rows(adam, "lambda_grad"), scored_rows(adam, "lambda_max")
    grad = pool(grad_rows, intervals=True)
    difference = pooled_difference(pd.concat([grad_rows, max_rows]), "lambda_grad",
                                   "lambda_max", "precision")
    return [Verdict.judged("beyond_grad_beats_chance", "(ours, beyond the paper) λ_grad(Ĥ) > "
                           "2/η is more precise than random alarms at its own count, pooled "
                           "over seeds", grad["precision"], grad["precision_low"],
                           grad["precision_high"], grad["chance_precision"], ">"),
            Verdict.judged("beyond_grad_more_precise", "(ours, beyond the paper) λ_grad(Ĥ) > "
                           "2/η is more precise than λ_max(Ĥ) > 2/η, pooled over seeds",
                           *difference, 0.0, ">",
                           {"precision_grad": grad["precision"],
                            "precision_max": pool(max_rows)["precision"]})]


def decomposition(adam) -> pd.DataFrame:
    """How the chapter's former test of λ_grad(Ĥ) against chance becomes the book's one rule,
    one difference at a time, on Adam's stored seeds: the precision of λ_grad(Ĥ)'s alarms, the
    chance precision it is compared with, and whether it beats it, under

    1. the former rule: each crossing one alarm, a hit when it meets [start − 10, start],
       chance the same crossings moved at random, the median over the seeds with a spike
       (and the share of those seeds in which it beats chance);
    2. the same crossings, pooled over every seed;
    3. every step above 2/η an alarm, alarms inside a spike false, window [start − 10, start];
    4. the window [start − 10, start);
    5. alarms inside a spike neither hits nor false alarms;
    6. h = 20: the book's rule, the one chapters 6 and 9 score with."""
    spiked = adam[adam["n_spikes"] > 0]
    beats = (spiked["precision_lambda_grad"] > spiked["chance_precision_grad"]).mean()
    n = adam["n_lambda_grad_crossings"].to_numpy(dtype=float)
    hits = np.nan_to_num(adam["precision_lambda_grad"].to_numpy(dtype=float)) * n
    chance = np.nan_to_num(adam["chance_precision_grad"].to_numpy(dtype=float)) * n
    rows = [{"rule": "1. crossings, [start − 10, start], median over seeds with a spike "
                     "(the former rule)",
             "precision": float(spiked["precision_lambda_grad"].median()),
             "chance precision": float(spiked["chance_precision_grad"].median()),
             "beats chance": f"in {beats:.0%} of {len(spiked)} seeds"},
            {"rule": "2. the same crossings, pooled over every seed",
             "precision": float(hits.sum() / n.sum()) if n.sum() else math.nan,
             "chance precision": float(chance.sum() / n.sum()) if n.sum() else math.nan}]
    labels = {"inside_incl_w10": "3. every step above 2/η an alarm, alarms inside a spike false",
              "inside_w10": "4. the window [start − 10, start)",
              "w10": "5. alarms inside a spike neither hit nor false",
              "book": f"6. h = {JUDGED_HORIZON}: the book's rule (chapters 6 and 9)"}
    for variant, label in labels.items():
        p = pooled_counts(adam, "lambda_grad", variant)
        rows.append({"rule": label, "precision": p["precision"],
                     "chance precision": p["chance_precision"]})
    out = pd.DataFrame(rows).set_index("rule")
    pooled = out.index[1:]
    out.loc[pooled, "beats chance"] = [("yes" if a > b else "no")
                                       for a, b in zip(out.loc[pooled, "precision"],
                                                       out.loc[pooled, "chance precision"])]
    return out
