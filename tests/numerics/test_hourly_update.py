"""The hourly update's numerics: folding hour by hour equals the decayed sum at once; mixed-dense random rows stay; zeros stay finite."""

import pytest
import torch

from lrstream.errors import DataError, UsageError
from lrstream.numerics.linalg import normalize_batch
from lrstream.numerics.starts import recency_weights, spectral_gram
from lrstream.numerics.update import UpdateStats, fold, hour_terms, refreshed_matrix, start_parameters, window_stats


def _hours(count=4, frames=5, n=12, d=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [normalize_batch(torch.randn(frames, n, d, generator=g, dtype=torch.float64)) for _ in range(count)]


def _empty(n, power, h):
    return UpdateStats(torch.zeros(n, n, dtype=torch.float64), 0.0, power, h, 0, "2026-01-01T00", 0)


@pytest.mark.parametrize("power,h", [(2.0, None), (2.0, 3.0), (1.0, 1.5)])
def test_fold_hour_by_hour_equals_the_decayed_sum_at_once(power, h):
    hours = _hours()
    stats = _empty(12, power, h)
    labels = ["2026-01-01T01", "2026-01-01T02", "2026-01-01T04", "2026-01-01T05"]  # a gap of 2 hours
    elapsed = [1, 1, 2, 1]
    for A, label, e in zip(hours, labels, elapsed):
        stats = fold(stats, hour_terms(A, power), A.shape[0], label, e)
    ages = [5 - 1, 5 - 2, 5 - 4, 0]  # hours back from the newest
    direct = sum((1.0 if h is None else 2.0 ** (-age / h)) * spectral_gram(A, power) for A, age in zip(hours, ages))
    weight = sum((1.0 if h is None else 2.0 ** (-age / h)) * A.shape[0] for A, age in zip(hours, ages))
    assert torch.allclose(stats.gram, direct, atol=1e-12, rtol=1e-12)
    assert stats.weight == pytest.approx(weight, rel=1e-12)
    assert (stats.hours, stats.frames, stats.last_hour) == (4, 20, "2026-01-01T05")
    back = UpdateStats.from_arrays(stats.arrays(), stats.record())
    assert torch.equal(back.gram, stats.gram) and back.record() == stats.record()


def test_window_stats_match_the_training_weights_and_convert_the_half_life():
    A = torch.cat(_hours(3, 4))
    rows = torch.arange(12)
    gather = lambda method, p, h, total: [spectral_gram(A[:5], p, recency_weights(total, h)[rows[:5]]), spectral_gram(A[5:], p, recency_weights(total, h)[rows[5:]])]  # noqa: E731
    meta = {"kind": "dense", "init": "spectral", "spectral": {"power": 1.5, "half_life": 0.5}}
    stats = window_stats(gather, meta, 12, 3, "2026-01-01T02")
    assert torch.allclose(stats.gram, spectral_gram(A, 1.5, recency_weights(12, 0.5)), atol=1e-12)
    assert stats.half_life_hours == 1.5 and stats.weight == pytest.approx(float(recency_weights(12, 0.5).sum()))
    assert start_parameters({"kind": "dense", "init": "tensor"}) == (2.0, None)
    assert start_parameters({"kind": "mixed-dense", "init": "random"}) is None and start_parameters({"kind": "learned"}) is None


def test_refresh_keeps_the_random_rows_of_a_mixed_dense_sketch():
    A = torch.cat(_hours(2))
    stats = fold(_empty(12, 2.0, None), hour_terms(A, 2.0), A.shape[0], "2026-01-01T01", 1)
    old = torch.randn(6, 12, generator=torch.Generator().manual_seed(1))
    new = refreshed_matrix(old, stats, m_learned=4)
    assert torch.equal(new[4:], old[4:])
    U = torch.linalg.eigh(stats.gram).eigenvectors[:, -4:]
    P = new[:4].double().mT @ torch.linalg.pinv(new[:4].double().mT)  # projector onto the learned rows' span
    assert torch.allclose(P @ U, U, atol=1e-8)
    assert torch.allclose(new[:4].norm(dim=1), torch.full((4,), 12**0.5, dtype=new.dtype), atol=1e-5)


def test_zero_frames_stay_finite_and_bad_inputs_are_refused():
    Z = normalize_batch(torch.zeros(3, 12, 9, dtype=torch.float64))
    for p in (2.0, 1.0):
        stats = fold(_empty(12, p, 2.0), hour_terms(Z, p), 3, "2026-01-01T01", 1)
        S = refreshed_matrix(torch.zeros(5, 12), stats)
        assert torch.isfinite(S).all() and stats.weight == 3
    with pytest.raises(UsageError):
        fold(stats, hour_terms(Z, 1.0), 3, "2026-01-01T01", 0)
    with pytest.raises(DataError):
        fold(stats, torch.zeros(4, 4, dtype=torch.float64), 3, "2026-01-01T02", 1)
    with pytest.raises(DataError):
        UpdateStats(torch.full((2, 2), float("nan"), dtype=torch.float64), 1.0, 2.0, None, 1, "x", 1)
    with pytest.raises(DataError):
        refreshed_matrix(torch.zeros(3, 7), stats)
