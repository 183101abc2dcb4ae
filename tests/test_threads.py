"""The thread cap of the test tier (utils.training.threads)."""
import pytest
import torch

from utils.training.threads import MAX_THREADS_ENV, max_threads, set_threads


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_unset_a_run_takes_what_it_asks(monkeypatch):
    monkeypatch.delenv(MAX_THREADS_ENV, raising=False)
    assert max_threads() is None
    assert set_threads(2) == 2 and torch.get_num_threads() == 2


def test_the_cap_lowers_and_never_raises(monkeypatch):
    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    assert set_threads(2) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(MAX_THREADS_ENV, "4")
    assert set_threads(2) == 2 and torch.get_num_threads() == 2


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_bad_cap_names_the_variable_and_the_range(monkeypatch, raw):
    monkeypatch.setenv(MAX_THREADS_ENV, raw)
    with pytest.raises(ValueError, match=f"{MAX_THREADS_ENV} must be an integer >= 1"):
        set_threads(2)


def test_a_run_honours_the_cap(monkeypatch):
    from utils.training.runs import RunConfig, run

    monkeypatch.setenv(MAX_THREADS_ENV, "1")
    run(RunConfig(model="quadratic", steps=2, threads=2, track_every=0))
    assert torch.get_num_threads() == 1
