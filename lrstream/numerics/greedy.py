"""Greedy CountSketch positions (Li, Lin, Liu, Vakilian & Woodruff, ICLR 2023, "Learning the Positions in CountSketch").

Visit the columns of S in a
random order; the first m take distinct rows; every later column i tries
every row j and every value g on a grid and keeps the pair that minimises
the rank-k SCW error on sampled training matrices.

The greedy step is evaluated without recomputing SCW for each of the m x G
candidates. All candidates for column i only change row j of SA by g a_i^T
(a_i = row i of A), so every candidate row space lies in the (m+1)-dim span
of the rows of SA and a_i. With B (d, m+1) an orthonormal basis of that span,
X = SA B and y = a_i B its coordinates, and M = (A B)^T (A B):

  ||A - [A P]_k||_F^2 = ||A||_F^2 - sum of the k largest eigenvalues of Q^T M Q,

where Q ((m+1), r) is an orthonormal basis of rowspace(X + g e_j y^T). Each
candidate then costs O(m^3) instead of O(n d m), and one column costs one
(n, d) x (d, m+1) product per sampled matrix.

The sampled matrices may sit in shares (one per worker): every candidate's
error is a sum over them, so each share scores the candidates on its own
samples (:class:`GreedyShare`) and :func:`greedy_from` adds the scores,
picks the winner and tells every share to commit it. :func:`greedy_positions`
is the one-share case.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .starts import Gather, local_gather


def _candidate_losses(X: torch.Tensor, y: torch.Tensor, M: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """-(sum of the top-k eigenvalues of Q^T M Q) for every (row j, value g); shape (m, G).

    X (m, r) and y (r,) are coordinates in an orthonormal basis of dimension
    r = m + 1; M (r, r) is the Gram matrix of A in that basis.
    """
    m, r = X.shape
    G = grid.shape[0]
    cand = X.expand(m, G, m, r).clone()  # (m, G, m, r): candidate (j, g) adds g y to row j
    idx = torch.arange(m)
    cand[idx, :, idx, :] += grid[None, :, None] * y  # (m, G, r)
    _, s, Vh = torch.linalg.svd(cand, full_matrices=False)  # Vh (m, G, m, r)
    keep = (s > s[..., :1] * (r * torch.finfo(s.dtype).eps * 10)).to(X.dtype)  # (m, G, m)
    Q = Vh.mT * keep.unsqueeze(-2)  # (m, G, r, m)
    K = Q.mT @ M @ Q  # (m, G, m, m)
    top = torch.linalg.eigvalsh(K)[..., -k:].sum(-1)  # (m, G)
    return -top


class GreedyShare:
    """Some of the training matrices, A (N_s, n, d) scaled to sigma_1 = 1, at positions ``rows`` (N_s,) of all N.

    It holds the sampled matrices among them and their current SA; the
    search itself runs in :func:`greedy_from`.
    """

    def __init__(self, A: torch.Tensor, rows: torch.Tensor):
        self.A, self.rows = A, torch.as_tensor(rows, dtype=torch.long)
        self.S = self.SA = self.grid = None
        self.k = 0

    def row_norms(self, pick: torch.Tensor) -> torch.Tensor:
        """sum over this share's sampled matrices of each row's squared norm: (n,) float64."""
        return self._local(pick).to(torch.float64).square().sum((0, 2))

    def _local(self, pick: torch.Tensor) -> torch.Tensor:
        where = {int(r): i for i, r in enumerate(self.rows.tolist())}
        return self.A[[where[int(r)] for r in pick.tolist() if int(r) in where]]  # (s, n, d), in pick order

    def begin(self, pick: torch.Tensor, first: torch.Tensor, signs: torch.Tensor, grid: int, k: int) -> int:
        """Take the sampled matrices of this share; rows [0, m) of SA hold the first m columns. Returns how many samples it holds."""
        self.S = self._local(pick).to(torch.float64)  # (s, n, d)
        m = first.shape[0]
        self.SA = torch.zeros(self.S.shape[0], m, self.S.shape[-1], dtype=torch.float64)  # (s, m, d)
        self.SA[:, torch.arange(m)] = self.S[:, first] * signs[:, None]
        self.grid = torch.linspace(-1.0, 1.0, int(grid), dtype=torch.float64)  # (G,)
        self.k = k
        return int(self.S.shape[0])

    def step(self, commit: tuple[int, int, float] | None, column: int | None) -> torch.Tensor | None:
        """Commit the previous column's choice (i, j, g): row j of SA += g a_i; then score column ``column``: (m, G)."""
        if commit is not None:
            i, j, g = commit
            self.SA[:, j] += g * self.S[:, i]
        if column is None:
            return None
        total = torch.zeros(self.SA.shape[1], self.grid.shape[0], dtype=torch.float64)  # (m, G)
        for t in range(self.S.shape[0]):
            a = self.S[t, column]  # (d,)
            B, _ = torch.linalg.qr(torch.cat([self.SA[t], a[None]]).mT)  # (d, m+1)
            AB = self.S[t] @ B  # (n, m+1)
            total += _candidate_losses(self.SA[t] @ B, a @ B, AB.mT @ AB, self.grid, self.k)
        return total


def greedy_from(gather: Gather, total: int, n: int, m: int, k: int, *, samples: int = 1, grid: int = 10, seed: int = 0, order: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (n,) and values (n,) of the greedy search over shares reached through ``gather`` (GreedyShare's methods).

    ``total`` matrices in all; the sampled ones, the visiting order and the
    first m signs are drawn here from ``seed``, so the result does not depend
    on how the matrices are split (up to the order the shares' scores add in).
    """
    if order not in ("random", "norm"):
        raise UsageError(f"unknown order {order!r}; choose random or norm")
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(total, generator=g)[: max(1, min(int(samples), total))]
    if order == "random":
        visit = torch.randperm(n, generator=g)
    else:
        visit = torch.argsort(sum(gather("row_norms", pick)), descending=True)
    pos = torch.zeros(n, dtype=torch.long)
    val = torch.zeros(n, dtype=torch.float64)
    first = visit[:m]
    pos[first] = torch.arange(m)
    val[first] = torch.randint(0, 2, (m,), generator=g).to(torch.float64) * 2 - 1
    gather("begin", pick, first, val[first], grid, k)
    values_grid = torch.linspace(-1.0, 1.0, int(grid), dtype=torch.float64)  # (G,)
    commit = None
    for i in visit[m:].tolist():
        # One round trip per column: the previous column's choice travels with the request to score this one.
        scores = [s for s in gather("step", commit, i) if s is not None]
        j, gi = divmod(int(torch.argmin(sum(scores))), values_grid.shape[0])
        pos[i], val[i] = j, values_grid[gi]
        commit = (i, j, float(val[i]))
    return pos, val


def greedy_positions(
    A: torch.Tensor, m: int, k: int, *, samples: int = 1, grid: int = 10, seed: int = 0, order: str = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy position (and value) search for a CountSketch; returns positions (n,) and values (n,).

    Args:
        A: (N, n, d) training matrices, scaled to sigma_1 = 1.
        m, k: sketch rows and target rank.
        samples: training matrices the error is averaged over (the paper uses 1).
        grid: number of candidate values, evenly spaced in [-1, 1] (the paper's 10).
        seed: fixes the sampled matrices, the visiting order and the first m values.
        order: "random" (the paper's default) or "norm" (decreasing total row norm).
    """
    N, n, d = A.shape
    if not 1 <= k <= m <= min(n, d):
        raise UsageError(f"need 1 <= k <= m <= min(n, d); got k={k}, m={m}, n={n}, d={d}")
    return greedy_from(local_gather([GreedyShare(A, torch.arange(N))]), N, n, m, k, samples=samples, grid=grid, seed=seed, order=order)
