"""Top-k singular values and the Eckart-Young optimum, without a full SVD.

Evaluation needs, per frame A (n x d), sigma_1(A) (the scale of the headline
metric) and the optimum ||A - [A]_k||_F. A full SVD costs O(n d min(n, d));
for a 2160 x 1280 video frame that is most of a second, a hundred times and
more the SCW apply being scored. Both quantities depend only on the top-k
singular triplets, which a block Krylov method finds in a few passes over A.

Randomized block Krylov iteration (Musco & Musco, "Randomized Block Krylov
Methods for Stronger and Faster Approximate Singular Value Decomposition",
NeurIPS 2015, Algorithm 2; the block Lanczos of Golub & Underwood 1977 with a
random start; Halko, Martinsson & Tropp, SIAM Review 2011, section 4), in the
row space (right singular vectors), b = k + oversample, q = iters:

1. Q_0 = orth(A^T Omega) (d, b) with Omega (n, b) a seeded sparse sign
   matrix: a gather of a few rows of A, no pass (see :func:`_start`).
2. For j = 0 .. q-1: Y_j = A Q_j (n, b); Q_{j+1} = orth(A^T Y_j) made
   orthogonal to Q_0 .. Q_j (block classical Gram-Schmidt twice, then QR).
   Then Y_q = A Q_q. The basis Q = [Q_0 .. Q_q] (d, K), K = b (q + 1), spans
   the Krylov space {p(A^T A) A^T Omega : deg p <= q}, and Y = A Q comes
   with it: 2q + 1 passes over A in all.
3. Rayleigh-Ritz: the top-k eigenvectors W_k of (A Q)^T (A Q) (K x K, solved
   in float64) give the Ritz vectors V = Q W_k (d, k), made orthonormal in float64.
4. One float64 pass over A, a block of rows at a time: sigma_1 = ||A v_1||
   (all values ||A V|| for :func:`top_singular`) and the residual below.

Error. Musco & Musco (Theorem 1) bound every Ritz value theta_i <= sigma_i
after q = O(log(d) / sqrt(eps)) steps by |theta_i^2 - sigma_i^2| <= eps
sigma_{k+1}^2, gap-free; with a gap the Lanczos analysis (Saad 1980) gives an
error decaying like 1 / T_q(1 + 2 gamma_i)^2, T_q the Chebyshev polynomial,
gamma_i = sigma_i^2 / sigma_{b+1}^2 - 1: exponential in q sqrt(gamma_i), where
subspace iteration (HMT Algorithm 4.4) gains q gamma_i, about twice the passes.

Precision. The 2q + 1 passes over A, the cost, run in float32 (uint8 and
float64 inputs are copied to float32 a chunk of frames at a time). Ritz
values and the optimum are second order in the subspace angle, so a float32
subspace is accurate enough; the float32 rounding E of A V, though, would
enter the values to first order (1e-6 relative seen on a binary image), so
sigma_1 = ||A v_1|| is recomputed in float64. The optimum is

    opt = ||A - (A V) V^T||_F   (V orthonormal, d x k),

the residual formed explicitly and summed in float64, never as
sqrt(||A||_F^2 - sum theta_i^2), which cancels catastrophically when A is
nearly of rank k. For any orthonormal V it is an upper bound on the optimum
(Eckart-Young), and its excess is second order in the angle between V and
the top-k singular subspace. A V is taken from the float32 passes: its
rounding E enters only as ||E||_F^2 ~ (1e-7 ||A||_F)^2, since the residual
is orthogonal to V. Where the residual itself is about that small (A of
rank about k, where V's float32 angle is the whole residual), one float64
subspace step refines V and A V is recomputed in float64 (``_TRUST``).

Defaults (oversample=6, iters=4: b = 16 for k = 10, 9 passes) are the
cheapest found on 2160 x 1280 bigbuckbunny frames with sigma_1, the top-10
values and the optimum within 1e-6 relative of float64 ``svdvals``: worst
over 33 frames 6e-14 (sigma_1), 1.4e-9 (values), 1.2e-10 (optimum); 5e-8
and 3e-9 for k = 20. iters=3 (7 passes) misses it (1-3e-6 in sigma_10), and
b = 16 is where float32 GEMMs are most efficient on the CPUs measured. On
scikit-image photographs the worst is 1.5e-7 (hubble_deep_field); flat
spectra (textures: grass, gravel, sigma_2 .. sigma_12 within 25%) converge
slower, 3e-4 in sigma_10 at iters=4 but 3e-8 at iters=6. Cost: 9 float32
passes and one float64 pass, about 15 ms per 2160 x 1280 frame on 2 CPU
cores, against 0.3-1 s for ``svdvals`` and 3.2 ms for the SCW apply at
m = 20. When the Krylov space would be at least as large as min(n, d)
(small matrices, or k near min(n, d)), the exact float64 SVD is cheaper and
is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError, UsageError
from .checks import check_rank

OVERSAMPLE = 6
ITERS = 4
ZETA = 8  # nonzeros per column of the sparse sign start
CHUNK = 8  # float32 matrices per batch
CONVERT_CHUNK = 2  # other dtypes: matrices per batch, copied into one reused float32 buffer (a small buffer page-faults less)
_ROW_BLOCK_BYTES = 1 << 22  # float64 row block of the final pass: small enough to stay in cache
_TRUST = 1e-3  # below this fraction of ||A||_F the float32 A V is replaced by a float64 one in the residual


@dataclass(frozen=True, eq=False)
class TopK:
    """The top-k singular values and right singular vectors of each matrix.

    Attributes:
        values: (..., k) float64, descending, each <= the exact sigma_i (Ritz values).
        V: (..., d, k) float64, orthonormal columns (zero past the numerical rank).
    """

    values: torch.Tensor
    V: torch.Tensor

    @property
    def sigma1(self) -> torch.Tensor:
        """sigma_1 of each matrix: (...,) float64."""
        return self.values[..., 0]


def _as_stack(A, check_finite: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(..., n, d) array-like -> ((N, n, d) tensor in its own dtype, leading shape)."""
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(np.ascontiguousarray(A))
    elif not isinstance(A, torch.Tensor):
        raise UsageError(f"A must be a numpy array or a torch tensor, got {type(A).__name__}")
    if A.ndim < 2:
        raise UsageError(f"A must have shape (..., n, d), got {tuple(A.shape)}")
    if A.is_complex():
        raise UsageError("A must be real")
    if A.numel() == 0:
        raise DataError(f"A is empty (shape {tuple(A.shape)})")
    if A.dtype == torch.bool:
        A = A.to(torch.uint8)
    if check_finite and A.is_floating_point():
        lo, hi = torch.aminmax(A)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            raise DataError("A contains NaN or Inf")
    lead = tuple(A.shape[:-2])
    return A.reshape(-1, *A.shape[-2:]), lead


def _check_params(k: int, n: int, d: int, oversample: int, iters: int) -> int:
    k = check_rank(k, n=n, d=d)
    for name, v in (("oversample", oversample), ("iters", iters)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
            raise UsageError(f"{name} must be a non-negative integer, got {v!r}")
    return k


def _start(A: torch.Tensor, b: int, seed: int, zeta: int = ZETA) -> torch.Tensor:
    """Orthonormal start block Q_0 = orth(A^T Omega) (c, d, b) for a seeded sparse sign Omega (n, b).

    Each column of Omega has ``zeta`` entries +-1 on distinct rows (sparse sign
    embedding, Martinsson & Tropp 2020, section 9.2; zeta = 8 as Tropp et al. 2019
    recommend), the same for every matrix: A^T Omega gathers zeta * b rows of A, a
    start one Krylov degree above a Gaussian (d, b) block for a few percent of a pass.
    """
    c, n, d = A.shape
    g = torch.Generator().manual_seed(int(seed))
    z = min(zeta, n)
    rows = torch.stack([torch.randperm(n, generator=g)[:z] for _ in range(b)]).mT.to(A.device)  # (z, b): distinct rows per column
    signs = (torch.randint(0, 2, (z, 1, b, 1), generator=g) * 2 - 1).to(dtype=A.dtype, device=A.device)
    Z = A.index_select(1, rows[0]) * signs[0]  # (c, b, d)
    for r in range(1, z):
        Z.addcmul_(A.index_select(1, rows[r]), signs[r])
    return torch.linalg.qr(Z.mT)[0]


def _orth_against(Z: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (c, d, b) of the part of Z (c, d, b) orthogonal to the orthonormal P (c, d, j).

    Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005), then
    QR. Where Z had (numerically) lower rank than b, QR completes the block
    with normalised rounding noise, which is not orthogonal to P: those blocks
    get one more round, so the basis stays orthonormal to float32 precision.
    """
    norms = torch.linalg.vector_norm(Z, dim=-2)  # (c, b)
    for _ in range(2):
        Z = Z - P @ (P.mT @ Z)
    Q, R = torch.linalg.qr(Z)
    if bool((R.diagonal(dim1=-2, dim2=-1).abs() <= 1e-3 * norms).any()):
        Q = torch.linalg.qr(Q - P @ (P.mT @ Q))[0]
    return Q


def _krylov(A: torch.Tensor, b: int, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block Krylov basis of A (c, n, d) float32: (Q (c, d, K), Y = A Q (c, n, K)), K = b (q + 1).

    Both are filled block by block in place: views of the leading columns
    serve the projections, with no concatenation (fresh allocations page-fault).
    """
    c, n, d = A.shape
    K = b * (q + 1)
    Q = A.new_empty(c, d, K)
    Y = A.new_empty(c, n, K)
    Q[..., :b] = _start(A, b, seed)
    for j in range(q + 1):
        lo, hi = j * b, (j + 1) * b
        Y[..., lo:hi].baddbmm_(A, Q[..., lo:hi], beta=0)  # A Q_j, written in place
        if j < q:
            Q[..., hi : hi + b] = _orth_against(A.mT @ Y[..., lo:hi], Q[..., :hi])
    return Q, Y


def _orthonormalizer(G: torch.Tensor) -> torch.Tensor:
    """T (c, r, r) float64 with X T orthonormal, from the Gram G = X^T X (c, r, r) of nearly orthonormal columns X.

    Cholesky (T = L^-T) in the usual case G = I + O(1e-7). A degenerate basis (a
    zero or very low-rank matrix, where QR completes a null block with arbitrary
    unit vectors) falls back to T = P diag(D)^(-1/2) from G = P D P^T with D < 1/2
    dropped (zero columns): D is then near 0, 1 or 2, nothing ill-conditioned is inverted.
    """
    G = G.double()
    L, info = torch.linalg.cholesky_ex(G)
    if bool((info == 0).all()) and bool((L.diagonal(dim1=-2, dim2=-1) > 0.5).all()):
        eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device).expand_as(G)
        return torch.linalg.solve_triangular(L, eye, upper=False).mT
    D, P = torch.linalg.eigh(G)
    return P * torch.where(D > 0.5, D.clamp_min(0.5).rsqrt(), torch.zeros_like(D)).unsqueeze(-2)


def _ritz(A32: torch.Tensor, k: int, b: int, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k Ritz vectors of A (c, n, d) float32 on its block Krylov space: (V (c, d, k) orthonormal in float64, Y ~ A V (c, n, k)).

    The K x K Rayleigh-Ritz problem is formed from float32 products and solved
    in float64; Y carries the float32 rounding of the passes (first order in
    the values, which :func:`_row_pass` therefore recomputes in float64).
    """
    Q, Y = _krylov(A32, b, q, seed)  # (c, d, K), (c, n, K)
    T = _orthonormalizer(Q.mT @ Q)  # (Q T) orthonormal, A (Q T) = Y T
    _, W = torch.linalg.eigh(T.mT @ (Y.mT @ Y).double() @ T)  # ascending
    TW = (T @ W[..., -k:].flip(-1)).to(A32.dtype)  # (c, K, k)
    V, Y = (Q @ TW).double(), (Y @ TW).double()  # (c, d, k), (c, n, k)
    T = _orthonormalizer(V.mT @ V)  # k x k: V orthonormal to float64 precision
    return V @ T, Y @ T


def _exact(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same (V, A V) from the float64 SVD, for matrices too small for a Krylov space to pay."""
    U, s, Vh = torch.linalg.svd(A.double(), full_matrices=False)
    return Vh[..., :k, :].mT, U[..., :k] * s[..., None, :k]


def _row_pass(A: torch.Tensor, V: torch.Tensor, Y: torch.Tensor | None, residual: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One float64 pass over A (c, n, d) (any dtype) with V (c, d, k) orthonormal float64, a block of rows at a time.

    Without Y: A V in float64, returning ((A V)^T (A V) (c, k, k), ||A - (A V) V^T||_F^2
    (c,)). With Y (A V from the float32 passes): (||A v_1||^2 (c, 1, 1), ||A - Y V^T||_F^2).
    The residual (zeros without ``residual``) is formed in place in one reused float64 buffer.
    """
    c, n, d = A.shape
    rows = min(n, max(1, _ROW_BLOCK_BYTES // (8 * d))) if A.device.type == "cpu" else n  # on a GPU, fewer launches matter more
    buf = torch.empty(rows, d, dtype=torch.float64, device=A.device)
    grams, res2 = [], []
    for f in range(c):
        w = V[f] if Y is None else V[f, :, 0].contiguous()  # (d, k) or (d,)
        vt = V[f].mT.contiguous()  # (k, d)
        ys, parts = [], []
        for i in range(0, n, rows):
            a = buf[: min(rows, n - i)].copy_(A[f, i : i + rows])  # (r, d) float64
            ys.append(a @ w if Y is None else torch.mv(a, w))
            if residual:
                a.addmm_(ys[-1] if Y is None else Y[f, i : i + rows], vt, alpha=-1)
                flat = a.view(-1)
                parts.append(torch.dot(flat, flat))
        y = torch.cat(ys).reshape(n, -1)  # (n, k) or (n, 1): A V or A v_1 in float64
        grams.append(y.mT @ y)
        res2.append(torch.stack(parts).sum() if residual else y.new_zeros(()))
    return torch.stack(grams), torch.stack(res2)


def _float64_step(A: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """One subspace iteration step in float64, V <- orth(A^T A V), for matrices whose residual is tiny.

    The float32 subspace is off by an angle of about 1e-7, for A of rank <= k the
    whole residual; one float64 step shrinks it by (sigma_{k+1} / sigma_k)^2.
    """
    out = []
    for a, v in zip(A, V):
        a = a.to(torch.float64)  # (n, d): a rare path, a full copy is fine
        out.append(torch.linalg.qr(a.mT @ (a @ v))[0])
    return torch.stack(out)


def _vectors(A: torch.Tensor, k: int, oversample: int, iters: int, seed: int, chunk: int | None = None):
    """Yield (A chunk, V (c, d, k) float64 orthonormal, Y ~ A V (c, n, k) float64) over chunks of ``chunk`` matrices of A (N, n, d)."""
    N, n, d = A.shape
    chunk = chunk or (CHUNK if A.dtype == torch.float32 else CONVERT_CHUNK)
    b = min(k + oversample, d)
    exact = b * (iters + 1) >= min(n, d)
    buf = None
    for i in range(0, N, chunk):
        a = A[i : i + chunk]
        if exact:
            V, Y = _exact(a, k)
        else:
            if a.dtype == torch.float32:
                a32 = a
            else:  # one reused float32 buffer: fresh large allocations cost page faults on every chunk
                if buf is None:
                    buf = torch.empty((min(chunk, N), n, d), dtype=torch.float32, device=A.device)
                a32 = buf[: a.shape[0]].copy_(a)
            V, Y = _ritz(a32, k, b, iters, seed)
        yield a, V, Y


def _top_body(A: torch.Tensor, k: int, oversample: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (N, n, d) -> (values (N, k), V (N, d, k)), float64: values are the singular values of A V, from a float64 pass."""
    values, Vs = [], []
    for a, V, _ in _vectors(A, k, oversample, iters, seed):
        gram, _ = _row_pass(a, V, None, residual=False)
        theta2, W = torch.linalg.eigh(gram)  # a second, k x k Rayleigh-Ritz step
        values.append(theta2.flip(-1).clamp_min(0).sqrt())
        Vs.append(V @ W.flip(-1))
    return torch.cat(values), torch.cat(Vs)


def _optimal_body(A: torch.Tensor, k: int, oversample: int, iters: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (N, n, d) -> (sigma1 (N,), opt (N,)), float64."""
    s1, opt = [], []
    for a, V, Y in _vectors(A, k, oversample, iters, seed):
        gram, res2 = _row_pass(a, V, Y, residual=True)
        # Y's float32 rounding E adds ||E||^2 ~ (1e-7 ||A||_F)^2 to res2 (the residual is
        # orthogonal to V), and V's float32 angle adds (1e-7 sigma)^2: negligible unless the
        # residual is about that small (A of rank about k), where one float64 subspace step
        # and A V in float64 follow. ||A||^2 = res2 + ||Y||^2 up to that rounding.
        redo = res2 < _TRUST**2 * (res2 + Y.square().sum((-2, -1)))
        if bool(redo.any()):
            res2[redo] = _row_pass(a[redo], _float64_step(a[redo], V[redo]), None, residual=True)[1]
        s1.append(gram[:, 0, 0].sqrt())
        opt.append(res2.sqrt())
    return torch.cat(s1), torch.cat(opt)


def top_singular(A, k: int, oversample: int = OVERSAMPLE, iters: int = ITERS, seed: int = 0, check_finite: bool = True) -> TopK:
    """Top-k singular values and right singular vectors by randomized block Krylov iteration.

    Args:
        A: (..., n, d) numpy array or torch tensor of any real dtype (uint8
            frames too); converted to float32 a chunk of frames at a time for
            the passes over it.
        k: 1 <= k <= min(n, d).
        oversample: extra block columns, b = k + oversample.
        iters: Krylov steps q; 2q + 1 passes over A.
        seed: seeds the sparse sign start (the same for every matrix): results are deterministic.
        check_finite: scan A for NaN/Inf first (DataError).

    Returns:
        :class:`TopK` with values (..., k) float64 descending and V (..., d, k) float64.

    See the module docstring for the method (Musco & Musco 2015), its error and
    the float32/float64 split. Raises UsageError on bad arguments, DataError on
    empty or non-finite data.
    """
    X, lead = _as_stack(A, check_finite)
    k = _check_params(k, X.shape[-2], X.shape[-1], oversample, iters)
    with torch.no_grad():
        values, V = _top_body(X, k, int(oversample), int(iters), int(seed))
    return TopK(values.reshape(*lead, k), V.reshape(*lead, X.shape[-1], k))


def optimal_errors(A, k: int, oversample: int = OVERSAMPLE, iters: int = ITERS, seed: int = 0, check_finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma_1(A) and the optimum ||A - [A]_k||_F of each matrix, without a full SVD.

    opt = ||A - (A V) V^T||_F with V (d, k) the orthonormal top-k Ritz vectors
    of :func:`top_singular`, the residual formed explicitly and summed in
    float64 (not sqrt(||A||^2 - sum sigma_i^2), which cancels). It is an upper
    bound on the Eckart-Young optimum sqrt(sum_{i>k} sigma_i^2), tight to second
    order in the angle between V and the top-k right singular subspace.

    Args:
        A: (..., n, d), any real dtype; see :func:`top_singular` for the other arguments.

    Returns:
        (sigma1 (...,), opt (...,)), both float64, unnormalised; a zero matrix gives (0, 0).
    """
    X, lead = _as_stack(A, check_finite)
    k = _check_params(k, X.shape[-2], X.shape[-1], oversample, iters)
    with torch.no_grad():
        s1, opt = _optimal_body(X, k, int(oversample), int(iters), int(seed))
    return s1.reshape(lead), opt.reshape(lead)
