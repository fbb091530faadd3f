"""Classic tools: truncated SVD, gradient U.V, masked completion, against exact references."""

import numpy as np
import pytest
import torch

from lrstream.errors import DataError, UsageError
from lrstream.numerics.factorize import complete_matrix, soft_impute, truncated_svd, uv_factorize

data = pytest.importorskip("skimage.data")


def lowrank(rng, n, d, r, noise=0.0):
    return rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + noise * rng.standard_normal((n, d))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_truncated_svd_is_eckart_young(rng, dtype):
    A = rng.standard_normal((50, 30)).astype(dtype)
    res = truncated_svd(A, 6)
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    expected = np.sqrt((s[6:] ** 2).sum())
    assert res.optimal_error == pytest.approx(expected, rel=1e-10)
    assert res.fro_error == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-10)
    assert res.L.shape == (50, 6) and res.R.shape == (6, 30) and res.L.dtype == torch.from_numpy(A).dtype


def test_uv_factorize_reaches_the_svd_optimum(rng):
    A = lowrank(rng, 200, 150, 5, noise=0.05)
    res = uv_factorize(A, 5)
    assert res.fro_error <= 1.02 * res.optimal_error
    assert res.compression_ratio == pytest.approx(200 * 150 / (5 * 350))
    direct = np.abs(A - (res.L @ res.R).numpy())
    assert res.mean_percent_error == pytest.approx(100 * direct.mean() / np.abs(A).mean(), rel=1e-6)
    assert set(res.metrics()) >= {"fro_error", "relative_error", "optimal_error", "compression_ratio", "mean_percent_error"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("solver", ["gd", "als"])
@pytest.mark.parametrize("image", ["camera", "coins"])
def test_uv_defaults_reach_the_optimum_on_photographs(image, solver, dtype):
    A = getattr(data, image)().astype(dtype)  # (512, 512) and (303, 384) uint8 photographs
    res = uv_factorize(A, 20, solver=solver)
    assert res.fro_error <= 1.01 * res.optimal_error
    assert res.L.dtype == torch.from_numpy(A).dtype and res.L.shape == (A.shape[0], 20)
    # the range-finder start is far from it: the iterations do the work
    assert res.start_relative_error * np.linalg.norm(A.astype(np.float64)) > 1.2 * res.optimal_error and res.steps > 3


def test_uv_from_a_random_start_and_adam_still_run():
    A = data.camera()[::4, ::4].astype(np.float64)  # (128, 128)
    res = uv_factorize(A, 10, init="random")
    assert res.fro_error <= 1.01 * res.optimal_error and res.start_relative_error > 0.99
    old = uv_factorize(A, 10, solver="adam", steps=50)
    assert old.steps == 50 and old.fro_error > res.fro_error


def test_completion_is_close_to_soft_impute_on_a_photograph():
    A = data.camera()[::2, ::2].astype(np.float64)  # (256, 256)
    mask = np.random.default_rng(0).random(A.shape) < 0.5
    heldout = lambda Z: np.linalg.norm((Z - A)[~mask]) / np.linalg.norm(A[~mask])  # noqa: E731  (on the never-observed entries)
    res = complete_matrix(np.where(mask, A, np.nan), mask, 20)  # unobserved entries NaN
    ours = heldout((res.L @ res.R).numpy())
    s1 = np.linalg.svd(np.where(mask, A, 0), compute_uv=False)[0]
    Z, best = None, np.inf
    for lam in s1 * np.geomspace(0.1, 0.003, 5):  # soft-impute's warm-started path, lam picked on the truth: favours the reference
        L, R = soft_impute(A, mask, lam, start=Z)
        Z = L @ R
        best = min(best, heldout(Z.numpy()))
    assert ours <= 1.05 * best, (ours, best)


def test_zero_matrix_metrics_are_defined():
    res = uv_factorize(np.zeros((10, 8)), 2, steps=10)
    assert res.relative_error == 0.0 and res.mean_percent_error == 0.0


def test_completion_recovers_a_low_rank_matrix(rng):
    B = lowrank(rng, 120, 100, 3)
    mask = rng.random(B.shape) < 0.5
    A = B.copy()
    A[~mask] = np.nan  # unobserved entries may be anything, NaN included
    res = complete_matrix(A, mask, 3)
    assert res.heldout_relative_error < 0.05
    assert res.observed == int(mask.sum()) and 0 < res.heldout < res.observed
    # entries never observed are recovered too
    full = (res.L @ res.R).numpy()
    assert np.linalg.norm((full - B)[~mask]) / np.linalg.norm(B[~mask]) < 0.05


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda A, M: truncated_svd(A, 0), UsageError),
        (lambda A, M: truncated_svd(A, 31), UsageError),
        (lambda A, M: truncated_svd(np.ones((2, 3, 4)), 1), UsageError),
        (lambda A, M: truncated_svd(np.full((3, 3), np.nan), 1), DataError),
        (lambda A, M: uv_factorize(A, 2, steps=0), UsageError),
        (lambda A, M: uv_factorize(A, 2, solver="newton"), UsageError),
        (lambda A, M: uv_factorize(A, 2, init="svd"), UsageError),
        (lambda A, M: uv_factorize(A, 2, solver="als", lr=0.1), UsageError),
        (lambda A, M: uv_factorize(A, 2, tol=-1), UsageError),
        (lambda A, M: uv_factorize(np.full((4, 4), np.inf), 2), DataError),
        (lambda A, M: complete_matrix(A, M, 2, solver="gd"), UsageError),
        (lambda A, M: soft_impute(A, M, -1.0), UsageError),
        (lambda A, M: soft_impute(A, np.zeros_like(M), 1.0), DataError),
        (lambda A, M: complete_matrix(A, M[:, :5], 2), UsageError),
        (lambda A, M: complete_matrix(np.where(M, np.nan, A), M, 2), DataError),
        (lambda A, M: complete_matrix(A, np.zeros_like(M), 2), DataError),
        (lambda A, M: complete_matrix(A, M, 2, holdout=1.0), UsageError),
    ],
)
def test_bad_inputs(rng, call, error):
    A = rng.standard_normal((40, 30))
    M = rng.random((40, 30)) < 0.5
    with pytest.raises(error):
        call(A, M)
