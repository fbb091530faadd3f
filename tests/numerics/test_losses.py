"""Losses and their gradients: agreement with autograd references, finiteness on degenerate data."""

import pytest
import torch

import lrstream as L
from lrstream.numerics.linalg import row_space_basis, top_k_projector
from lrstream.numerics.losses import sketch_loss
from lrstream.training.config import LearnConfig
from lrstream.training.core import batch_gradient
from lrstream.training.sketches import initial_sketch


@pytest.fixture(autouse=True)
def float64_default():
    """Gradient checks need float64; restore the default so other modules are unaffected."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _learnable(n, m, seed=0):
    S = L.sparse_random(n, m, seed=seed)
    return L.SparseSketch(S.positions, S.values.double(), torch.ones_like(S.trainable), m)


def test_row_space_basis_gradient_matches_qr_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    C = torch.randn(30, 30, generator=g)
    C = C @ C.T

    def f(B):
        Q = row_space_basis(B)
        return ((Q @ Q.mT) * C).sum()

    def f_qr(B):
        Q, _ = torch.linalg.qr(B.mT)
        return ((Q @ Q.mT) * C).sum()

    B = torch.randn(2, 6, 30, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(f, (B,))
    g1 = torch.autograd.grad(f(B), B)[0]
    g2 = torch.autograd.grad(f_qr(B), B)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-9)


def test_top_k_projector_gradcheck():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(7, 7, generator=g)
    M0 = torch.randn(7, 7, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda M: (top_k_projector(M @ M.mT, 3) * W).sum(), (M0,))


@pytest.mark.parametrize("loss", ["fro", "v", "wfro"])
def test_exact_gradient_matches_finite_differences(loss):
    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 24, 10, generator=g)
    S = _learnable(24, 6)
    W = torch.rand(24, 10, generator=g) + 0.1
    v0 = S.values.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: sketch_loss(S, A, 3, loss, v, weight=W).sum(), (v0,), atol=1e-6)


def test_fro_identity_route_equals_residual_route():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 30, 12, generator=g)
    S = _learnable(30, 8)
    ones = torch.ones(30, 12)
    v = S.values.clone().requires_grad_(True)
    l1 = sketch_loss(S, A, 4, "fro", v)
    l2 = sketch_loss(S, A, 4, "wfro", v, weight=ones)
    torch.testing.assert_close(l1, l2)
    g1 = torch.autograd.grad(l1.sum(), v)[0]
    g2 = torch.autograd.grad(l2.sum(), v)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-9)


def degenerate_batch():
    g = torch.Generator().manual_seed(4)
    n, d = 32, 16
    Q1, _ = torch.linalg.qr(torch.randn(n, d, generator=g))
    Q2, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    repeated = Q1 @ Q2  # all singular values equal to 1
    lowrank = torch.randn(n, 2, generator=g) @ torch.randn(2, d, generator=g)  # zero singular values
    ties = Q1 @ torch.diag(torch.tensor([3.0, 3.0, 3.0, 2.0, 2.0] + [1.0] * (d - 5))) @ Q2
    zero = torch.zeros(n, d)
    dup_rows = torch.randn(1, d, generator=g).repeat(n, 1)
    return torch.stack([repeated, lowrank, ties, zero, dup_rows])


@pytest.mark.parametrize("route", ["exact", "power"])
@pytest.mark.parametrize("loss", ["fro", "v", "wfro"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_on_degenerate_matrices(route, loss, dtype):
    A = degenerate_batch().to(dtype)
    S = _learnable(A.shape[1], 8, seed=5)
    W = torch.ones(A.shape[1:], dtype=dtype)
    v = S.values.to(dtype).clone().requires_grad_(True)
    out = sketch_loss(S, A, 3, loss, v, route=route, weight=W)
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), v)
    assert torch.isfinite(grad).all()


def test_power_route_agrees_with_exact_route_on_well_conditioned_case():
    g = torch.Generator().manual_seed(6)
    n, d, k, m = 60, 30, 3, 8
    U, _ = torch.linalg.qr(torch.randn(n, d, generator=g))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    s = torch.tensor([2.0**-i for i in range(d)])  # well separated singular values
    A = (U * s) @ V.T
    A = A / torch.linalg.matrix_norm(A, ord=2)
    S = _learnable(n, m, seed=7)
    exact = sketch_loss(S, A[None], k, "fro", route="exact")
    power = sketch_loss(S, A[None], k, "fro", route="power", power_iters=60)
    assert float((exact - power).abs().max()) < 1e-3


def test_batch_gradient_sums_over_the_batch():
    g = torch.Generator().manual_seed(8)
    A = torch.randn(4, 20, 9, generator=g).float()
    cfg = LearnConfig(k=2, m=6, kind="mixed-j")
    S = initial_sketch(20, cfg)
    p = S.values[S.trainable]
    assert p.numel() == 20  # only the learned half is a parameter
    l_all, g_all, c_all = batch_gradient(S, p, A, cfg)
    l_a, g_a, c_a = batch_gradient(S, p, A[:1], cfg)
    l_b, g_b, c_b = batch_gradient(S, p, A[1:], cfg)
    assert c_all == c_a + c_b == 4
    assert l_all == pytest.approx(l_a + l_b, rel=1e-5)
    torch.testing.assert_close(g_all, g_a + g_b, rtol=1e-4, atol=1e-6)
