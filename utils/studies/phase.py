"""Where in (β1, β2) Adam spikes: the phase diagram of the 1-D quadratic, and its boundary.

Tang, Chen & Liu (2026) run Adam on L(x) = x²/2 (η = 0.1, ε = 1e-30, x0 = 1, m0 = v0 = 0,
250,000 updates, the first half discarded) over a grid of δ = 1 − β1 and γ = 1 − β2, and fit
the boundary between spiky and calm runs as γ ≈ 15.6 δ^3.07 (:data:`TANG_FITS`).

The runs are elementwise, so :func:`adam_quadratic` runs the whole grid as one tensor: Adam's
update written out (the one place the book re-implements it, since ``torch.optim.Adam`` takes
one (β1, β2) per parameter group; tests/test_phase.py checks it against ``torch.optim.Adam``
step by step). Each run is judged **spiky** when, after the discarded half, its loss reaches
K = 10 times the median of its previous W = 50 losses at least once: the detection rule of the
book's one spike definition (:mod:`utils.events.spikes`), applied online without its event
bookkeeping (an event whose loss settles at a higher level never closes, and would mark a
calm second half as spiky), with no float floor (the
quadratic's loss subtracts nothing, as in Chapter 0). The rule is applied to the log-loss
2 log|x| − log 2 (the median commutes with the logarithm, so it is the same rule): converging
runs take x below 1e-162, where x²/2 itself underflows to 0 in float64 and a "spike" from 0
would be an artifact of the representation. A run whose loss becomes non-finite is spiky too
(it diverged). :func:`fit_boundary` fits γ = C δ^p through the boundary of the spiky region at small γ
(large β2), the one the v-decay mechanism predicts and Tang et al. fit. Spiky points beyond it,
at small δ and large γ, sit where β1² > β2, the known region where Adam is unstable for another
reason (:func:`momentum_unstable`); they are shown, not fitted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from utils.events.spikes import SPIKE_FACTOR, SPIKE_WINDOW
from utils.validation import check_number

TANG_FITS = {"quadratic": (15.6, 3.07), "transformer": (2.21, 0.93)}
"""Tang, Chen & Liu's boundaries γ = C δ^p, as (C, p): the quadratic, and a modular-division
Transformer."""
TANG_SETTING = {"lr": 0.1, "eps": 1e-30, "x0": 1.0, "steps": 250_000}
"""Their quadratic's setting (the first half of the updates is discarded)."""
DELTA_RANGE = (1e-3, 0.2)
GAMMA_RANGE = (5e-4, 0.3)


def momentum_unstable(deltas, gammas) -> np.ndarray:
    """β1² > β2 at each (δ, γ) of the grid, shape (nδ, nγ)."""
    b1 = 1 - np.asarray(deltas, dtype=float)[:, None]
    return b1 ** 2 > 1 - np.asarray(gammas, dtype=float)[None, :]


def above_boundary(grid: PhaseGrid, fit: "BoundaryFit") -> np.ndarray:
    """The grid points above the fitted boundary (γ > C δ^p), shape (nδ, nγ)."""
    return grid.gammas[None, :] > fit.gamma(grid.deltas)[:, None]


def log_grid(n: int, low: float, high: float) -> np.ndarray:
    """``n`` log-spaced values from ``low`` to ``high`` (both included)."""
    check_number("n", n, low=2, integer=True)
    return np.geomspace(low, high, n)


@dataclass(frozen=True)
class PhaseGrid:
    """A phase diagram: ``deltas`` (nδ,) and ``gammas`` (nγ,) and, per grid point (nδ, nγ),
    ``spikes`` (detections after the discarded half, counting a divergence as one), whether it
    ``diverged``, and its ``final_loss``. ``spiky`` is spikes > 0. A grid built from seeds
    (:func:`grid_from_table`) also has ``share``, the share of seeds that spiked."""

    deltas: np.ndarray
    gammas: np.ndarray
    spikes: np.ndarray
    diverged: np.ndarray
    final_loss: np.ndarray
    share: np.ndarray | None = None

    @property
    def spiky(self) -> np.ndarray:
        return self.spikes > 0


def adam_quadratic(deltas, gammas, *, lr: float = 0.1, eps: float = 1e-30, x0: float = 1.0,
                   steps: int = 250_000, discard: float = 0.5, factor: float = SPIKE_FACTOR,
                   window: int = SPIKE_WINDOW, progress: bool = True) -> PhaseGrid:
    """Adam on L = x²/2 at every (δ, γ) of the grid at once, float64, with the spiky/calm
    criterion of the module docstring applied online to the updates after the first
    ``discard`` share. Returns a :class:`PhaseGrid`."""
    check_number("lr", lr, low=0, low_open=True)
    check_number("eps", eps, low=0)
    check_number("steps", steps, low=2 * window, integer=True)
    check_number("discard", discard, low=0, high=1, high_open=True)
    d = torch.as_tensor(np.asarray(deltas, dtype=float))
    g = torch.as_tensor(np.asarray(gammas, dtype=float))
    for name, values in (("deltas", d), ("gammas", g)):
        if not bool(((values > 0) & (values < 1)).all()):
            raise ValueError(f"{name} must lie in (0, 1), got {values.tolist()}")
    beta1 = (1 - d)[:, None].expand(len(d), len(g)).clone()
    beta2 = (1 - g)[None, :].expand(len(d), len(g)).clone()
    x = torch.full_like(beta1, x0)
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    pow1, pow2 = torch.ones_like(x), torch.ones_like(x)
    history = torch.full((window, *x.shape), math.nan, dtype=x.dtype)
    spikes = torch.zeros(x.shape, dtype=torch.long)
    above = torch.zeros(x.shape, dtype=torch.bool)
    diverged = torch.zeros(x.shape, dtype=torch.bool)
    first = int(discard * steps)
    for t in tqdm(range(1, steps + 1), disable=not progress, mininterval=1.0,
                  desc=f"Adam on x²/2, {len(d)}×{len(g)} grid"):
        loss = 2 * x.abs().log() - math.log(2)       # log(x²/2), finite down to x ~ 5e-324
        if t > first - window:   # the trend needs the W losses before the judged half
            if t > first:
                trend = history.nanmedian(dim=0).values
                now = loss >= math.log(factor) + trend   # loss ≥ K × trend, in logs
                spikes += (now & ~above & ~diverged).long()
                above = now
                bad = ~torch.isfinite(x) & ~diverged
                spikes += bad.long()
                diverged |= bad
            history[t % window] = loss
        grad = x                                     # dL/dx; in torch.optim.Adam's order:
        m = torch.lerp(m, grad, 1 - beta1)           # exp_avg.lerp_(grad, 1 - β1)
        v = v * beta2 + (1 - beta2) * grad * grad    # exp_avg_sq.mul_(β2).addcmul_(g, g, 1 - β2)
        pow1, pow2 = pow1 * beta1, pow2 * beta2      # β^t by products: the same bits on
        step_size = lr / (1 - pow1)                  # every CPU (a vectorised pow need not be)
        denom = v.sqrt() / (1 - pow2).sqrt() + eps
        x = x - step_size * (m / denom)              # param.addcdiv_(m, denom, -step_size)
    final = (0.5 * x * x).numpy()
    return PhaseGrid(np.asarray(deltas, dtype=float), np.asarray(gammas, dtype=float),
                     spikes.numpy(), diverged.numpy(), final)


@dataclass(frozen=True)
class BoundaryFit:
    """γ = C δ^p fitted through the boundary points (``deltas``, ``gammas``: where the
    classification changes along γ at each δ), with 95 % intervals for C and p from the grid's
    resolution (each boundary point redrawn uniformly, in log, within its grid cell)."""

    C: float
    p: float
    C_low: float
    C_high: float
    p_low: float
    p_high: float
    deltas: np.ndarray
    gammas: np.ndarray
    spiky_below: bool

    def gamma(self, delta):
        """The fitted boundary γ(δ)."""
        return self.C * np.asarray(delta, dtype=float) ** self.p


def boundary_points(grid: PhaseGrid, spiky_below: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per δ, the cell [γ_{k−1}, γ_k] of the best split of its row into spiky for γ < γ_k and
    calm above (``spiky_below``, the side the mechanism predicts: v that forgets slowly; or the
    reverse), the split with the fewest misclassified grid points (ties: the smallest k), for
    the rows where that split beats calling the whole row one phase. Returns (δ, γ_low,
    γ_high, spiky_below)."""
    spiky = grid.spiky
    n = spiky.shape[1]
    below = bool(spiky_below)
    first = spiky if below else ~spiky          # the phase expected at small γ
    ds, lo, hi = [], [], []
    for i, row in enumerate(first):
        errors = [int((~row[:k]).sum() + row[k:].sum()) for k in range(1, n)]
        k = int(np.argmin(errors)) + 1
        if errors[k - 1] < min(int((~row).sum()), int(row.sum())):
            ds.append(grid.deltas[i])
            lo.append(grid.gammas[k - 1])
            hi.append(grid.gammas[k])
    return np.array(ds), np.array(lo), np.array(hi), below


def fit_boundary(grid: PhaseGrid, draws: int = 2000, seed: int = 0,
                 spiky_below: bool = True) -> BoundaryFit:
    """Fit log γ* = log C + p log δ (``scipy.stats.linregress``) through the geometric middle of
    each boundary cell, and the 95 % intervals of C and p over ``draws`` redraws of every
    boundary point uniformly in log within its cell. ValueError when fewer than 3 columns hold
    a boundary."""
    from scipy.stats import linregress

    ds, lo, hi, below = boundary_points(grid, spiky_below)
    if len(ds) < 3:
        raise ValueError(f"the grid has a boundary in {len(ds)} columns of δ; a fit needs 3")
    x = np.log(ds)
    mid = linregress(x, 0.5 * (np.log(lo) + np.log(hi)))
    rng = np.random.default_rng(seed)
    fits = [linregress(x, rng.uniform(np.log(lo), np.log(hi))) for _ in range(draws)]
    slopes = np.array([f.slope for f in fits])
    intercepts = np.exp([f.intercept for f in fits])
    p_lo, p_hi = np.percentile(slopes, [2.5, 97.5])
    c_lo, c_hi = np.percentile(intercepts, [2.5, 97.5])
    return BoundaryFit(float(np.exp(mid.intercept)), float(mid.slope), float(c_lo), float(c_hi),
                       float(p_lo), float(p_hi), ds, np.sqrt(lo * hi), below)


# ------------------------------------------------------------------ the Transformer's grid

TRANSFORMER_GRID = 12
"""Points per axis of the Transformer's grid (log-spaced over DELTA_RANGE × GAMMA_RANGE)."""
TRANSFORMER_STEPS = 1500
TRANSFORMER_SEEDS = (0, 1, 2)


def transformer_config(delta: float, gamma: float, steps: int = TRANSFORMER_STEPS):
    """The book's one-layer Transformer (:data:`utils.studies.settings.TRANSFORMER`) at
    β1 = 1 − δ, β2 = 1 − γ, untracked (the grid needs the loss only), for ``steps`` steps."""
    from utils.studies.settings import TRANSFORMER, chapter_config

    return chapter_config(TRANSFORMER, beta1=1 - float(delta), beta2=1 - float(gamma),
                          steps=steps, track_every=0, measure=(), progress=False)


def transformer_configs(n: int = TRANSFORMER_GRID) -> list:
    """The grid's configs, δ-major: every (δ, γ) of two n-point log grids."""
    return [transformer_config(d, g) for d in log_grid(n, *DELTA_RANGE)
            for g in log_grid(n, *GAMMA_RANGE)]


def phase_rows(results) -> list[dict]:
    """The sweep's evaluate function: per run, δ, γ, the counted spikes (the book's rule),
    whether it diverged, and its final loss."""
    rows = []
    for r in results:
        rows.append({"delta": round(1 - r.config.beta1, 12),
                     "gamma": round(1 - r.config.beta2, 12), "n_spikes": len(r.spikes),
                     "diverged": r.diverged_at is not None,
                     "final_loss": float(r.metrics["loss"].iloc[-1])})
    return rows


def grid_from_table(table, seed=None) -> PhaseGrid:
    """A :class:`PhaseGrid` from the phase sweep's rows (one seed, or, with ``seed`` None, a
    point counted spiky when most of its seeds spiked)."""
    rows = table if seed is None else table[table["seed"] == seed]
    spiky = rows.assign(spiky=(rows["n_spikes"] > 0) | rows["diverged"].astype(bool))
    agg = spiky.groupby(["delta", "gamma"]).agg(spiky=("spiky", "mean"),
                                                diverged=("diverged", "mean"),
                                                final_loss=("final_loss", "median"))
    deltas = np.sort(agg.index.get_level_values("delta").unique().to_numpy())
    gammas = np.sort(agg.index.get_level_values("gamma").unique().to_numpy())
    shape = (len(deltas), len(gammas))
    pick = lambda c: agg[c].unstack("gamma").reindex(index=deltas, columns=gammas).to_numpy()
    return PhaseGrid(deltas, gammas, (pick("spiky") > 0.5).astype(int).reshape(shape),
                     pick("diverged") > 0.5, pick("final_loss"), pick("spiky"))


def seed_fits(table) -> "pd.DataFrame":
    """The boundary fitted on each seed's grid of the phase sweep: one row per seed with C, p
    and their grid-resolution intervals (NaN where a seed's grid has too few boundary
    columns)."""
    import pandas as pd

    rows = []
    for seed in sorted(table["seed"].unique()):
        try:
            f = fit_boundary(grid_from_table(table, seed))
            rows.append({"seed": int(seed), "C": f.C, "p": f.p, "C_low": f.C_low,
                         "C_high": f.C_high, "p_low": f.p_low, "p_high": f.p_high,
                         "columns": len(f.deltas)})
        except ValueError:
            rows.append({"seed": int(seed), "columns": 0})
    return pd.DataFrame(rows).set_index("seed")


def fit_summary(fit: BoundaryFit, seeds=None) -> dict:
    """{"C": .., "p": ..} with their intervals: the grid resolution's, widened to the range
    of the per-seed fits when ``seeds`` (:func:`seed_fits`) is given."""
    out = {"C": fit.C, "p": fit.p, "C_low": fit.C_low, "C_high": fit.C_high,
           "p_low": fit.p_low, "p_high": fit.p_high, "boundary_columns": len(fit.deltas),
           "spiky_below": fit.spiky_below}
    if seeds is not None and seeds["C"].notna().any():
        out.update(C_low=min(out["C_low"], seeds["C"].min()),
                   C_high=max(out["C_high"], seeds["C"].max()),
                   p_low=min(out["p_low"], seeds["p"].min()),
                   p_high=max(out["p_high"], seeds["p"].max()))
    return out


BOUNDARY_CELLS = 1.0
"""Our tolerance (stated when the comparison of C and p gave way to that of the boundaries):
a reference boundary agrees with ours when, at every δ where ours was measured, it lies within
this many grid cells (in log γ) of our boundary's cell."""


def boundary_agreement(grid: PhaseGrid, reference: tuple[float, float],
                       spiky_below: bool = True) -> dict:
    """How far the boundary γ = C δ^p of ``reference`` (C, p) lies from ours, column by column
    over the δ where ours was measured (:func:`boundary_points`): in grid cells of log γ
    outside our boundary's cell (0 inside it), the largest over the columns, and the columns.
    C and p of a fit are strongly correlated when δ spans a decade far from 1, so two fits can
    differ in both and still draw the same line where it was measured: this compares lines."""
    ds, lo, hi, _ = boundary_points(grid, spiky_below)
    c, p = reference
    ref = np.log(c * ds ** p)
    cell = float(np.mean(np.diff(np.log(grid.gammas))))
    off = np.maximum(0.0, np.maximum(np.log(lo) - ref, ref - np.log(hi))) / cell
    return {"columns": int(len(ds)), "max_cells_off": float(off.max()) if len(off) else math.nan,
            "median_cells_off": float(np.median(off)) if len(off) else math.nan}


def phase_verdicts(quadratic: dict, transformer: dict, agreement: dict | None = None) -> list:
    """The chapter's verdicts from the two fits (:func:`fit_summary` dicts) and, for the
    quadratic, the agreement of Tang et al.'s boundary with ours (:func:`boundary_agreement`).

    ``<grid>_has_a_boundary``: at least 3 columns of δ hold a boundary, with the spiky side at
    small γ (large β2), as Tang et al. found; false on a grid that is all one phase, or spiky
    at large γ. ``<grid>_exponent_as_tang``: our interval for p excludes 0 (the exponent is
    determined) and holds Tang et al.'s exponent; false when our boundary bends differently,
    or when the interval spans 0 and so determines nothing (reported as undetermined).
    ``quadratic_boundary_as_tang``: at every δ where our quadratic's boundary was measured,
    Tang et al.'s line lies within :data:`BOUNDARY_CELLS` grid cell of ours; false where it
    runs elsewhere.
    """
    from utils.studies.verdicts import Verdict

    out = []
    for name, fit, (c, p) in (("quadratic", quadratic, TANG_FITS["quadratic"]),
                              ("transformer", transformer, TANG_FITS["transformer"])):
        out.append(Verdict(f"{name}_has_a_boundary",
                           f"the {name}'s grid has a boundary in ≥ 3 columns, spiky at small γ",
                           fit["boundary_columns"] >= 3 and fit.get("spiky_below", True),
                           {"columns": fit["boundary_columns"]}))
        determined = not fit["p_low"] <= 0 <= fit["p_high"]
        out.append(Verdict(f"{name}_exponent_as_tang",
                           f"our interval for p excludes 0 and holds Tang et al.'s exponent {p}",
                           determined and fit["p_low"] <= p <= fit["p_high"],
                           {"p": fit["p"], "p_low": fit["p_low"], "p_high": fit["p_high"],
                            "determined": determined}))
    if agreement is not None:
        out.append(Verdict("quadratic_boundary_as_tang",
                           f"Tang et al.'s quadratic boundary lies within {BOUNDARY_CELLS:g} grid "
                           "cell of ours at every measured δ",
                           agreement["columns"] > 0
                           and agreement["max_cells_off"] <= BOUNDARY_CELLS,
                           dict(agreement)))
    return out
