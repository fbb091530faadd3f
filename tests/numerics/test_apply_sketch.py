"""The production apply (numerics.apply): SCW factors of uint8 frames in tiles, balanced for float16, errors of what is stored."""

import numpy as np
import pytest
import torch
from conftest import reference_scw_error, requires_cuda

import lrstream as L
from lrstream.errors import DataError, UsageError
from lrstream.numerics.apply import apply_sketch
from lrstream.numerics.sketch import learnable_sparse


@pytest.fixture(scope="module")
def frames():
    """Synthetic uint8 video frames as (12, 3*24, 40) matrices."""
    from lrstream.data.sources import frames_to_matrices, synthetic_frames

    return frames_to_matrices(synthetic_frames(12, 24, 40, seed=2))


def _residual64(A, f):
    P = f.L.double() @ f.R.double()  # (B, n, d)
    return torch.linalg.vector_norm(torch.as_tensor(A).double() - P, dim=(-2, -1))


@pytest.mark.parametrize("sketch", ["sparse", "dense", "mixed"])
def test_factors_are_scw_and_errors_are_the_stored_factors_residual(frames, sketch):
    n = frames.shape[1]
    S = {"sparse": L.sparse_random(n, 8, seed=1), "dense": L.dense_random(n, 8, seed=1), "mixed": L.mixed(learnable_sparse(n, 4, seed=1), 4, seed=2)}[sketch]
    f32 = apply_sketch(S, frames, 3, dtype="float32")
    ref = L.scw(S, frames.astype(np.float64), 3, product=True)  # (B, n, d) float64 reference
    assert torch.allclose(f32.L.double() @ f32.R.double(), ref, rtol=0, atol=1e-4 * float(np.abs(frames).max()))
    assert f32.L.dtype == torch.float32 and f32.L.shape == (12, n, 3) and f32.R.shape == (12, 3, frames.shape[2])
    for f in (f32, apply_sketch(S, frames, 3)):  # float16 by default
        exact = _residual64(frames, f)
        assert torch.allclose(f.errors, exact, rtol=1e-6, atol=0)
        assert torch.allclose(f.norms, torch.linalg.vector_norm(torch.as_tensor(frames).double(), dim=(-2, -1)), rtol=1e-9)
        assert torch.allclose(f.rel_errors, exact / f.norms)
    # Each frame's error equals the textbook float64 SCW error (rounding to float16 adds in quadrature: negligible).
    for i in range(3):
        ref_err = reference_scw_error(S.to_dense().double().numpy(), frames[i].astype(np.float64), 3)
        assert f32.errors[i].item() == pytest.approx(ref_err, rel=1e-5)


def test_uint8_and_float_input_tiles_and_batching_agree(frames):
    S = L.sparse_random(frames.shape[1], 8, seed=3)
    base = apply_sketch(S, frames, 3, dtype="float32")
    for other in (
        apply_sketch(S, frames.astype(np.float32), 3, dtype="float32"),
        apply_sketch(S, torch.from_numpy(frames), 3, dtype="float32", tile_rows=7),
        apply_sketch(S, frames, 3, dtype="float32", tile_rows=10_000),
    ):
        assert torch.allclose(other.L @ other.R, base.L @ base.R, rtol=0, atol=1e-3)
        assert torch.allclose(other.errors, base.errors, rtol=1e-6)
    single = apply_sketch(S, frames[4], 3, dtype="float32")  # (n, d) is a batch of one
    assert single.L.shape == (1, frames.shape[1], 3)
    assert torch.allclose(single.errors, base.errors[4:5], rtol=1e-6)


def test_float16_factors_are_balanced_and_close_to_float32(frames):
    S = L.sparse_random(frames.shape[1], 8, seed=3)
    f16, f32 = apply_sketch(S, frames, 3), apply_sketch(S, frames, 3, dtype="float32")
    assert f16.L.dtype == torch.float16 and f16.R.dtype == torch.float16
    # Balanced: column j of L and row j of R have the same norm, sqrt(sigma_j).
    assert torch.allclose(f32.L.norm(dim=-2), f32.R.norm(dim=-1), rtol=1e-4)
    # Rounding to float16 changes the product by about its unit roundoff, the error far less.
    scale = torch.linalg.vector_norm(f32.L @ f32.R, dim=(-2, -1))
    assert (torch.linalg.vector_norm(f16.L.float() @ f16.R.float() - f32.L @ f32.R, dim=(-2, -1)) / scale).max() < 2e-3
    assert torch.allclose(f16.errors, f32.errors, rtol=1e-3)


def test_real_frames_error_matches_float64_scw(frames):
    from lrstream.data.datasets import sample_video_path
    from lrstream.data.sources import frames_to_matrices, read_video

    path = sample_video_path()
    A = frames_to_matrices(read_video(path)[:2])  # (2, 2160, 1280) uint8: the real frame size
    S = L.sparse_random(A.shape[1], 20, seed=0)
    f = apply_sketch(S, A, 10)
    for i in range(2):
        assert f.errors[i].item() == pytest.approx(reference_scw_error(S.to_dense().double().numpy(), A[i].astype(np.float64), 10), rel=1e-5)
    assert float(f.L.abs().max()) < 1e3 and float(f.R.abs().max()) < 1e3  # far inside float16's range


def test_bad_input_is_refused_in_one_line(frames):
    S = L.sparse_random(frames.shape[1], 8, seed=3)
    with pytest.raises(DataError, match="learned for n="):
        apply_sketch(S, frames[:, :-1], 3)
    bad = frames.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        apply_sketch(S, bad, 3)
    with pytest.raises(UsageError, match="dtype"):
        apply_sketch(S, frames, 3, dtype="int8")
    with pytest.raises(UsageError, match="exceeds"):
        apply_sketch(S, frames, 9)
    with pytest.raises(DataError, match="overflow float16"):
        apply_sketch(S, frames.astype(np.float32) * 1e10, 3)
    assert torch.isfinite(apply_sketch(S, frames.astype(np.float32) * 1e10, 3, dtype="float32").errors).all()


@requires_cuda
def test_cuda_apply_matches_cpu(frames):
    S = L.sparse_random(frames.shape[1], 8, seed=3)
    cpu, gpu = apply_sketch(S, frames, 3, dtype="float32"), apply_sketch(S, frames, 3, dtype="float32", device="cuda")
    assert torch.allclose(gpu.errors, cpu.errors, rtol=1e-5)
    assert torch.allclose(gpu.L @ gpu.R, cpu.L @ cpu.R, rtol=0, atol=1e-2)

