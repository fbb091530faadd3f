"""SCW, the optimum and the error gap against exact float64 references."""

import numpy as np
import pytest
import torch
from conftest import reference_scw_error, requires_cuda
from hypothesis import given, settings
from hypothesis import strategies as st

import lrstream as L
from lrstream.errors import DataError, UsageError
from lrstream.numerics.linalg import gram_basis


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimum_is_eckart_young(rng, dtype):
    A = rng.standard_normal((5, 60, 40)).astype(dtype)
    P = L.prepare(A)
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    s = s / s[:, :1]
    expected = np.sqrt((s[:, 7:] ** 2).sum(1))
    np.testing.assert_allclose(P.optimal_errors(7).numpy(), expected, rtol=1e-6)
    # normalisation: every prepared matrix has sigma_1 = 1
    np.testing.assert_allclose(np.linalg.norm(P.matrices.numpy().astype(np.float64), ord=2, axis=(1, 2)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scw_matches_reference(rng, dtype):
    A = rng.standard_normal((3, 80, 50))
    S = L.sparse_random(80, 12, seed=3)
    errs = L.sketch_errors(S, torch.from_numpy(A).to(dtype), 5)
    ref = [reference_scw_error(S.to_dense().numpy(), a, 5) for a in A]
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(errs.numpy(), ref, rtol=tol)
    Lf, Rf = L.scw(S, torch.from_numpy(A).to(dtype), 5)
    assert Lf.shape == (3, 80, 5) and Rf.shape == (3, 5, 50) and Lf.dtype == dtype
    direct = np.linalg.norm(A - (Lf @ Rf).double().numpy(), axis=(1, 2))
    np.testing.assert_allclose(direct, ref, rtol=10 * tol)


def test_scw_is_optimal_when_rowspace_holds_top_singular_vectors(rng):
    n, d, k = 70, 45, 4
    A = rng.standard_normal((n, k)) @ rng.standard_normal((k, d)) * 3 + 0.1 * rng.standard_normal((n, d))
    U, s, Vt = np.linalg.svd(A)
    # rows U_k^T give SA = Sigma_k V_k^T; extra random rows cannot hurt.
    S = np.vstack([U[:, :k].T, rng.standard_normal((3, n))])
    sk = L.DenseSketch(torch.from_numpy(S))
    err = float(L.sketch_errors(sk, A, k)[0])
    assert err == pytest.approx(np.sqrt((s[k:] ** 2).sum()), rel=1e-10)
    approx = L.scw(sk, A, k, product=True).numpy()
    np.testing.assert_allclose(approx, (U[:, :k] * s[:k]) @ Vt[:k], atol=1e-9)


def test_unbatched_input_gives_unbatched_factors(rng):
    A = rng.standard_normal((30, 20)).astype(np.float32)
    Lf, Rf = L.scw(L.sparse_random(30, 6), A, 3)
    assert Lf.shape == (30, 3) and Rf.shape == (3, 20)


def test_rank_deficient_sketches_and_frames_are_exact_and_finite(rng):
    n, d, k = 40, 30, 3
    A = np.zeros((4, n, d))
    A[0] = rng.standard_normal((n, d))
    A[1] = rng.standard_normal((n, 2)) @ rng.standard_normal((2, d))  # rank 2 < k
    A[2] = np.outer(rng.standard_normal(n), rng.standard_normal(d))  # rank 1: duplicate rows in SA
    # A[3] is all zero
    S = L.sparse_random(n, 15, seed=1)
    pos = S.positions.clone()
    pos[0, pos[0] >= 10] = 0  # buckets 10..14 empty
    S = L.SparseSketch(pos, S.values, S.trainable, 15)
    errs = L.sketch_errors(S, A, k).numpy()
    ref = [reference_scw_error(S.to_dense().numpy(), a, k) for a in A]
    assert np.isfinite(errs).all()
    np.testing.assert_allclose(errs, ref, atol=1e-9)
    assert errs[1] == pytest.approx(0, abs=1e-6) and errs[2] == pytest.approx(0, abs=1e-6) and errs[3] == 0
    Lf, Rf = L.scw(S, A, k)
    assert torch.isfinite(Lf).all() and torch.isfinite(Rf).all()
    gap = L.error_gap(S, A, k)
    assert np.isfinite(gap)


def test_more_rows_than_columns(rng):
    A = rng.standard_normal((50, 8))
    err = float(L.sketch_errors(L.dense_random(50, 12, seed=0), A, 3)[0])
    s = np.linalg.svd(A, compute_uv=False)
    assert err == pytest.approx(np.sqrt((s[3:] ** 2).sum()), rel=1e-8)  # SA spans all of R^8


def test_error_gap_is_mean_error_minus_mean_optimum(rng):
    A = rng.standard_normal((6, 50, 30)) * rng.uniform(0.1, 10, size=(6, 1, 1))
    S = L.sparse_random(50, 10, seed=2)
    k = 4
    An = A / np.linalg.norm(A, ord=2, axis=(1, 2))[:, None, None]
    errs = [reference_scw_error(S.to_dense().numpy(), a, k) for a in An]
    opt = [np.sqrt((np.linalg.svd(a, compute_uv=False)[k:] ** 2).sum()) for a in An]
    assert L.error_gap(S, A, k) == pytest.approx(np.mean(errs) - np.mean(opt), abs=1e-6)
    assert L.error_gap(S, L.prepare(A), k) == pytest.approx(L.error_gap(S, A, k), abs=1e-12)


def adversarial(rng, n, d, k):
    """A matrix whose energy sits in few rows, which a CountSketch may hash together."""
    A = 1e-3 * rng.standard_normal((n, d))
    rows = rng.choice(n, size=k + 2, replace=False)
    A[rows] += rng.standard_normal((k + 2, d)) * np.geomspace(10, 1, k + 2)[:, None]
    return A


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), which=st.sampled_from(["gaussian", "adversarial", "lowrank"]))
def test_mixed_never_worse_than_its_random_half(seed, which):
    rng = np.random.default_rng(seed)
    n, d, k, m = 48, 24, 3, 10
    if which == "gaussian":
        A = rng.standard_normal((n, d))
    elif which == "adversarial":
        A = adversarial(rng, n, d, k)
    else:
        A = rng.standard_normal((n, 2)) @ rng.standard_normal((2, d))
    # an arbitrary (even terrible) learned half must not break the guarantee
    learned = L.SparseSketch(torch.from_numpy(rng.integers(0, m // 2, (1, n))), torch.from_numpy(rng.standard_normal((1, n)) * 100).float(), torch.ones(1, n, dtype=torch.bool), m // 2)
    for kind in ("mixed-j", "mixed-s"):
        S = L.mixed(learned, m - m // 2, seed=seed, kind=kind)
        e_mixed = float(L.sketch_errors(S, A, k)[0])
        e_half = float(L.sketch_errors(L.random_half(S), A, k)[0])
        assert e_mixed <= e_half * (1 + 1e-9) + 1e-12


def test_bad_inputs_raise_clear_errors(rng):
    S = L.sparse_random(20, 5)
    with pytest.raises(DataError, match="n=30"):
        L.scw(S, rng.standard_normal((30, 10)), 2)
    with pytest.raises(UsageError, match="exceeds the sketch size"):
        L.scw(S, rng.standard_normal((20, 10)), 6)
    bad = rng.standard_normal((20, 10))
    bad[3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        L.error_gap(S, bad, 2)
    with pytest.raises(UsageError, match="shape"):
        L.scw(S, rng.standard_normal((2, 2, 20, 10)), 2)
    with pytest.raises(UsageError):
        L.sparse_random(0, 5)


def test_check_finite_off_skips_only_the_scan(rng):
    S = L.sparse_random(20, 5, seed=1)
    A = torch.from_numpy(rng.standard_normal((3, 20, 10)))
    for method in ("svd", "gram"):
        ref = L.scw(S, A, 2, product=True, method=method)
        torch.testing.assert_close(L.scw(S, A, 2, product=True, method=method, check_finite=False), ref, rtol=0, atol=0)
    A[1, 3, 3] = float("inf")
    with pytest.raises(DataError, match="NaN or Inf"):
        L.scw(S, A, 2, method="gram")
    with pytest.raises(torch.linalg.LinAlgError):  # unscanned, the Inf reaches the eigensolver
        L.scw(S, A, 2, method="gram", check_finite=False)


@requires_cuda
def test_cuda_matches_cpu(rng):
    A = torch.from_numpy(rng.standard_normal((4, 64, 48))).float()
    S = L.sparse_random(64, 10, seed=0)
    cpu = L.sketch_errors(S, A, 3)
    gpu = L.sketch_errors(S, A.cuda(), 3)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [L.sparse_random, L.dense_random])
def test_gram_path_matches_the_reference(rng, dtype, make):
    """The fast apply path (Gram-matrix orthonormalisation) against the float64 textbook SCW."""
    decay = np.logspace(0, -4, 60)  # a spectrum with a wide range, as in video frames
    A = rng.standard_normal((4, 90, 60)) * decay
    S = make(90, 12, seed=1)
    Lf, Rf = L.scw(S, torch.from_numpy(A).to(dtype), 5, method="gram")
    got = np.linalg.norm(A - (Lf @ Rf).double().numpy(), axis=(1, 2))
    ref = np.array([reference_scw_error(S.to_dense().double().numpy(), a, 5) for a in A])
    np.testing.assert_allclose(got, ref, rtol=1e-4 if dtype == torch.float32 else 1e-10)
    Q = gram_basis(S.apply(torch.from_numpy(A).to(dtype)))
    eye = torch.eye(12, dtype=dtype).expand(4, 12, 12)
    torch.testing.assert_close(Q.mT @ Q, eye, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)


def test_gram_basis_drops_dependent_and_empty_rows(rng):
    B = torch.from_numpy(rng.standard_normal((2, 6, 40)))
    B[:, 4] = 3 * B[:, 1]
    B[:, 5] = 0
    Q = gram_basis(B)
    assert torch.isfinite(Q).all()
    assert torch.allclose((Q.mT @ Q).diagonal(dim1=-2, dim2=-1).sum(-1), torch.full((2,), 4.0, dtype=B.dtype))  # rank 4
    torch.testing.assert_close(B @ Q @ Q.mT, B)  # spans the row space
    with pytest.raises(UsageError, match="unknown SCW method"):
        L.scw(L.sparse_random(40, 6), B[0].mT.contiguous(), 2, method="qr")
