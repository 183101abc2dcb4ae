"""Chaos, stated and tested: the "another machine" switch changes a run's trajectory but not its
first steps, and batched seeds follow their single runs over a prefix and part after it."""
import numpy as np
import pytest
import torch

from utils.studies.settings import chapter_config
from utils.training.models import PERTURB_ENV, build_model, perturb_initial, perturbation_scale
from utils.training.runs import run
from utils.training.seeds import run_seeds

PREFIX = 100
"""Steps over which two paths of the same run are asserted to agree (to 1e-9 relative)."""


def untracked(chapter="01_v_decay"):
    """A chapter's default run without curvature measurements (the training alone)."""
    return chapter_config(chapter, progress=False, track_every=0, measure=())


def relative_gap(a, b):
    return np.abs(a - b) / np.abs(a)


def test_the_switch_perturbs_every_parameter_by_about_its_size(monkeypatch):
    plain = build_model("mlp", seed=3, in_dim=2, out_dim=1, width=8)
    monkeypatch.setenv(PERTURB_ENV, "1e-12")
    moved = build_model("mlp", seed=3, in_dim=2, out_dim=1, width=8)
    again = build_model("mlp", seed=3, in_dim=2, out_dim=1, width=8)
    for p, q, r in zip(plain.parameters(), moved.parameters(), again.parameters()):
        assert torch.equal(q, r)                     # reproducible under the switch
        nonzero = p != 0
        gap = ((q - p).abs() / p.abs())[nonzero]
        assert gap.max() < 1e-10 and gap.median() > 1e-14
    # float32 keeps no 1e-12: the switch moves such parameters by about one unit in the last place
    p32 = torch.nn.Linear(50, 50).weight.detach().clone()
    m = torch.nn.Linear(50, 50)
    with torch.no_grad():
        m.weight.copy_(p32)
    perturb_initial(m, seed=0)
    changed = (m.weight != p32).float().mean()
    assert 0.2 < changed < 1.0


@pytest.mark.parametrize("value", ["yes", "-1e-12", "0.5", "nan"])
def test_a_bad_switch_value_names_the_variable_and_the_range(monkeypatch, value):
    monkeypatch.setenv(PERTURB_ENV, value)
    with pytest.raises(ValueError, match=rf"{PERTURB_ENV} must be a relative size in \[0, 0.001\]"):
        perturbation_scale()


def test_the_switch_keeps_the_first_steps_and_moves_the_spikes(monkeypatch):
    """Chapter 1's run under the switch: within 1e-9 of the plain run over the first steps,
    and spikes at other steps afterwards, as on another CPU (so a check that passes under the
    switch does not need the plain trajectory)."""
    config = untracked()
    plain = run(config, spot_checks=False)
    monkeypatch.setenv(PERTURB_ENV, "1e-12")
    moved = run(config, spot_checks=False)
    a, b = plain.metrics["loss"].to_numpy(), moved.metrics["loss"].to_numpy()
    assert relative_gap(a[:PREFIX], b[:PREFIX]).max() < 1e-9
    assert plain.spikes and moved.spikes
    assert [s.start for s in plain.spikes] != [s.start for s in moved.spikes]


def test_batched_seeds_follow_their_single_runs_over_a_prefix_and_part_after_it():
    """Seed batching (vmap, the chapter sweeps' path) against the run trained alone (the live
    runs' path): the same to 1e-9 over the first PREFIX steps, then different samples of the
    same process (other spike steps), so one path's numbers are not the other's."""
    config = untracked()
    single = run(config, spot_checks=False)
    batched = run_seeds(config, [config.seed, config.seed + 1])[0]
    a, b = single.metrics["loss"].to_numpy(), batched.metrics["loss"].to_numpy()
    assert relative_gap(a[:PREFIX], b[:PREFIX]).max() < 1e-9
    assert relative_gap(a, b).max() > 1e-3
    assert [s.start for s in single.spikes] != [s.start for s in batched.spikes]
