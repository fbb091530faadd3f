import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def video():
    """Synthetic video as (train matrices (36, 144, 64) uint8, prepared test set of 12)."""
    from lrstream.scw import prepare
    from lrstream.sources import frames_to_matrices, synthetic_frames

    A = frames_to_matrices(synthetic_frames(48, 48, 64, seed=0))  # (48, 144, 64) uint8
    return A[:36], prepare(A[36:])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def reference_scw_error(S: np.ndarray, A: np.ndarray, k: int) -> float:
    """Textbook SCW in float64 numpy: SVD-based basis of rowspace(SA), then [AQ]_k Q^T."""
    B = S.astype(np.float64) @ A.astype(np.float64)
    _, s, Vt = np.linalg.svd(B, full_matrices=False)
    tol = s.max(initial=0) * max(B.shape) * np.finfo(np.float64).eps if s.size else 0
    Q = Vt[s > tol].T if s.size and s.max() > 0 else np.zeros((A.shape[1], 0))
    AQ = A @ Q
    if Q.shape[1] == 0:
        return float(np.linalg.norm(A))
    U, sv, Wt = np.linalg.svd(AQ, full_matrices=False)
    kk = min(k, sv.size)
    approx = (U[:, :kk] * sv[:kk]) @ Wt[:kk] @ Q.T
    return float(np.linalg.norm(A - approx))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
