"""Published baselines: the tensor-based dense sketch and IVY19 as published."""

import numpy as np
import pytest
import torch

import lrstream as L
from lrstream.errors import UsageError
from lrstream.training.baselines import ivy19, ivy19_config, tensor_sketch


def _shared_subspace(rng, N, n=60, d=40, r=8, noise=0.05):
    """Matrices whose energy lies in one r-dim column space (fixed by the seed 0), plus full-rank noise."""
    U = np.linalg.qr(np.random.default_rng(0).standard_normal((n, r)))[0]
    return np.stack([U @ (rng.standard_normal((r, d)) * np.logspace(0, -1, r)[:, None]) + noise * rng.standard_normal((n, d)) for _ in range(N)])


def test_tensor_sketch_is_the_top_eigenvectors_and_beats_random(rng):
    train = _shared_subspace(rng, 12)
    S = tensor_sketch(train, m=6)
    assert S.matrix.shape == (6, 60) and S.meta["kind"] == "tensor"
    # The reference: eigenvectors of sum_i A_i A_i^T in float64 numpy, each A_i scaled to sigma_1 = 1.
    scaled = [a / np.linalg.norm(a, 2) for a in train]
    _, V = np.linalg.eigh(sum(a @ a.T for a in scaled))
    overlap = np.abs(S.matrix.double().numpy() @ V[:, -6:])  # (6, 6): a signed permutation when the subspaces agree
    np.testing.assert_allclose(np.linalg.svd(overlap, compute_uv=False), 1.0, atol=1e-4)
    test = _shared_subspace(np.random.default_rng(1), 6)
    tensor_gap, random_gap = L.error_gap(S, test, 3), L.error_gap(L.sparse_random(60, 6, seed=0), test, 3)
    assert tensor_gap * 3 < random_gap
    with pytest.raises(UsageError):
        tensor_sketch(train, m=61)


def test_ivy19_is_the_published_setup_and_learns(rng):
    cfg = ivy19_config(3, 6, steps=60, seed=2)
    assert (cfg.optimizer, cfg.batch_size, cfg.route, cfg.kind) == ("sgd", 1, "power", "learned")
    A = rng.standard_normal((16, 60, 40)) * np.logspace(0, -1.5, 40)
    S = ivy19(A[:12], 3, 6, steps=60, seed=2, val_fraction=0.0)
    start = L.sparse_random(60, 6, seed=2)
    assert torch.equal(S.positions, start.positions)  # positions stay where the random CountSketch put them
    assert not torch.equal(S.values, start.values)
    assert S.meta["config"]["route"] == "power" and "NeurIPS 2019" in S.meta["method"]
    assert S.meta["training"]["loss_curve"][-1][1] < S.meta["training"]["loss_curve"][0][1] * 1.05
