import os

# Token authentication stays on in every test, as in production. Ray reads
# RAY_AUTH_MODE once, when it is first imported, so it is set before any test
# module imports Ray (a local ray.init() creates ~/.ray/auth_token if missing).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def video():
    """Synthetic video as (train matrices (36, 144, 64) uint8, prepared test set of 12)."""
    from lrstream.data.sources import frames_to_matrices, synthetic_frames
    from lrstream.numerics.scw import prepare

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


def requires_cuda(test):
    """Mark a test ``gpu`` (``-m "not gpu"`` deselects it) and skip it where CUDA is absent."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


HOURS = ["2026-01-01T00", "2026-01-01T01", "2026-01-01T02"]


def ingest_hours(root, stream="cam", hours=HOURS, frames=14, height=20, width=24, channels=2):
    """Publish consecutive windows of one synthetic stream as hours (n = channels * height, d = width)."""
    from lrstream.data.shards import write_hour
    from lrstream.data.sources import iter_frames

    for i, h in enumerate(hours):
        src = f"synthetic://?frames={frames}&height={height}&width={width}&channels={channels}&seed=3&start={frames * i}"
        write_hour(str(root), stream, h, iter_frames(src), src)


def retrain_config(workers=2, dtype="float64", **kw):
    """A small, fast retrain: k=3, m=6, batches of 6, validation every 10 steps."""
    from lrstream.distributed.config import RetrainConfig
    from lrstream.training.config import LearnConfig

    learn = {key: kw.pop(key) for key in list(kw) if key in LearnConfig.__dataclass_fields__}
    lc = LearnConfig(**{"k": 3, "m": 6, "steps": 40, "batch_size": 6, "eval_every": 10, "seed": 1, "dtype": dtype, **learn})
    return RetrainConfig(learn=lc, workers=workers, checkpoint_every=kw.pop("checkpoint_every", 5), **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three published hours of stream "cam": 14 frames each of 2 x 20 x 24 (n = 40, d = 24)."""
    root = tmp_path_factory.mktemp("store")
    ingest_hours(root)
    return str(root)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module (4 logical CPUs: three actors fit on two cores)."""
    import ray

    from lrstream.distributed.runtime import init_ray

    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
