"""The quadratic's phase diagram (utils.studies.phase): the vectorised Adam, the criterion, the
fit."""
import numpy as np
import pytest
import torch

from utils.studies.phase import PhaseGrid, adam_quadratic, boundary_points, fit_boundary, log_grid
from utils.events.spikes import _running_median

PAIRS = [(0.2, 5e-4), (0.05, 0.01), (0.001, 0.3), (0.01, 0.002)]


def torch_adam_losses(delta, gamma, steps, lr=0.1, eps=1e-30):
    x = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    opt = torch.optim.Adam([x], lr=lr, betas=(1 - delta, 1 - gamma), eps=eps)
    losses = []
    for _ in range(steps):
        loss = 0.5 * x * x
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.array(losses), float(x)


@pytest.mark.parametrize("delta,gamma", PAIRS)
def test_the_grid_is_torch_adam_elementwise(delta, gamma):
    """The whole-grid update equals torch.optim.Adam's, run by run, over the first 200 steps
    (later the spiky runs are chaotic, so rounding differences grow)."""
    grid = adam_quadratic([delta], [gamma], steps=200, window=10, progress=False)
    _, x = torch_adam_losses(delta, gamma, 200)
    assert grid.final_loss[0, 0] == pytest.approx(0.5 * x * x, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("delta,gamma,spiky", [(0.14, 0.005, True), (0.001, 0.02, True),
                                                (0.05, 0.01, False), (0.001, 0.3, False)])
def test_online_criterion_is_the_books_detection_rule(delta, gamma, spiky):
    """On torch.optim.Adam's loss series (runs whose loss stays above float64's underflow, both
    outcomes present): spiky online exactly when some step after the discarded half has
    loss ≥ 10 × the median of its previous 50 (utils.events.spikes' running median): the detection
    rule of the book's detector, without its event bookkeeping (an event whose loss settles at
    a higher level never closes, which would mark a calm second half as spiky)."""
    steps = 6000
    grid = adam_quadratic([delta], [gamma], steps=steps, progress=False)
    losses, _ = torch_adam_losses(delta, gamma, steps)
    assert losses.min() > 0
    trend = _running_median(losses, 50)
    half = steps // 2
    offline = bool((losses[half:] >= 10 * trend[half:]).any())
    assert bool(grid.spiky[0, 0]) == offline == spiky


def synthetic_grid(C=2.0, p=1.5, n=20, noise=0):
    deltas, gammas = log_grid(n, 1e-3, 0.2), log_grid(n, 5e-4, 0.3)
    spiky = gammas[None, :] < C * deltas[:, None] ** p
    return PhaseGrid(deltas, gammas, spiky.astype(int), np.zeros_like(spiky), np.ones(spiky.shape))


def test_the_fit_recovers_a_known_boundary_within_its_interval():
    fit = fit_boundary(synthetic_grid())
    assert fit.spiky_below
    assert fit.p_low <= 1.5 <= fit.p_high and fit.C_low <= 2.0 <= fit.C_high
    assert fit.p == pytest.approx(1.5, abs=0.1)
    flipped = synthetic_grid()
    flipped = PhaseGrid(flipped.deltas, flipped.gammas, 1 - flipped.spikes, flipped.diverged,
                        flipped.final_loss)
    assert not fit_boundary(flipped, spiky_below=False).spiky_below
    with pytest.raises(ValueError, match="a fit needs 3"):    # no spiky region at small γ
        fit_boundary(flipped)


def test_no_boundary_no_fit_and_bad_grids_are_refused():
    flat = synthetic_grid(C=1e-9)              # calm everywhere
    assert len(boundary_points(flat)[0]) == 0
    with pytest.raises(ValueError, match="a fit needs 3"):
        fit_boundary(flat)
    with pytest.raises(ValueError, match="deltas must lie in"):
        adam_quadratic([0.0], [0.1], steps=200, progress=False)
    with pytest.raises(ValueError, match="steps"):
        adam_quadratic([0.1], [0.1], steps=10, progress=False)


def test_phase_verdicts_fail_where_their_claim_is_false():
    from utils.studies.phase import TANG_FITS, boundary_agreement, fit_summary, phase_verdicts

    tang_grid = synthetic_grid(*TANG_FITS["quadratic"], n=30)
    tang = fit_summary(fit_boundary(tang_grid))
    other_grid = synthetic_grid(2.0, 1.5, n=30)
    other = fit_summary(fit_boundary(other_grid))
    near = fit_summary(fit_boundary(synthetic_grid(*TANG_FITS["transformer"], n=30)))
    agrees = boundary_agreement(tang_grid, TANG_FITS["quadratic"])
    assert agrees["max_cells_off"] == 0.0
    good = {v.name: v.passed for v in phase_verdicts(tang, near, agrees)}
    assert good["quadratic_has_a_boundary"] and good["quadratic_exponent_as_tang"]
    assert good["quadratic_boundary_as_tang"] and good["transformer_exponent_as_tang"]
    elsewhere = boundary_agreement(other_grid, TANG_FITS["quadratic"])
    assert elsewhere["max_cells_off"] > 1
    bad = {v.name: v.passed for v in phase_verdicts(other, other, elsewhere)}
    assert not bad["quadratic_exponent_as_tang"] and not bad["transformer_exponent_as_tang"]
    assert not bad["quadratic_boundary_as_tang"]
    flat = dict(tang, boundary_columns=2)
    assert not {v.name: v.passed for v in phase_verdicts(flat, near)}["quadratic_has_a_boundary"]
    # an exponent whose interval spans 0 determines nothing: undetermined, not "as Tang"
    vague = dict(near, p=0.0, p_low=-0.47, p_high=1.21)
    verdict = {v.name: v for v in phase_verdicts(tang, vague)}["transformer_exponent_as_tang"]
    assert not verdict.passed and verdict.numbers["determined"] is False


def test_stored_phase_table_covers_the_grid():
    """data/sweeps/phase.csv.gz holds every grid point under every seed with provenance (its
    runs' first steps are recomputed in tests/test_stored_prefixes.py)."""
    from utils.studies.phase import TRANSFORMER_GRID, TRANSFORMER_SEEDS
    from utils.book.sweeps import PROVENANCE_COLUMNS, load_sweep

    stored = load_sweep("phase")
    assert len(stored) == TRANSFORMER_GRID ** 2 * len(TRANSFORMER_SEEDS)
    assert set(PROVENANCE_COLUMNS) <= set(stored.columns)
    assert not stored["commit"].str.endswith("-dirty").any()
