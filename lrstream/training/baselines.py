"""Published sketches that lrstream's learned sketches are compared against.

* :func:`tensor_sketch`: the "tensor-based" dense sketch of Liu, Xiao, Ding
  & Yang (ICLR 2023). With the training matrices A_i (n, d), each scaled to
  sigma_1 = 1, S = U_m^T, where U_m holds the top-m left singular vectors of
  the concatenation [A_1, ..., A_N] (n, N d), i.e. the top-m eigenvectors of
  sum_i A_i A_i^T. It needs no gradient steps, but it is a dense m x n
  matrix (m n multiply-adds per column of A, against n for a CountSketch).
* :func:`ivy19`: Indyk, Vakilian & Yuan (NeurIPS 2019) as published: the
  values of a CountSketch at fixed random positions, trained by SGD with
  batch size 1 through the unrolled power-method SVD (lrstream's defaults
  instead use Adam, batches of 8 and the exact eigen-solver gradient).
* :func:`li23`: Li, Lin, Liu, Vakilian & Woodruff (ICLR 2023): positions and
  starting values from the greedy search (:func:`lrstream.numerics.greedy.greedy_positions`,
  one sampled training matrix, 10 values in [-1, 1], as in their code), then
  the values trained as IVY19.
* :func:`one_shot_one_vec` and :func:`few_shot_sgd`: Indyk, Wagner &
  Woodruff (NeurIPS 2021). 1Shot1Vec keeps a CountSketch's random positions
  and sets the value of column i to u_i, the i-th entry of the top left
  singular vector of one training matrix, so each bucket sums its rows along
  the dominant direction instead of with random signs. FewShotSGD trains the
  values on a few training matrices against the subspace-embedding loss
  sum_j ||(S U_j)^T (S U_j) - I_k||_F^2, U_j (n, k) the top-k left singular
  vectors of A_j: cheap, since S U_j is only (m, k).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import UsageError
from ..numerics.checks import as_batch
from ..numerics.linalg import normalize_batch
from ..numerics.sketch import DenseSketch, SparseSketch, learnable_sparse
from ..numerics.starts import top_subspace
from .config import LearnConfig
from .learn import learn


def tensor_sketch(train, m: int, batch_size: int = 8) -> DenseSketch:
    """S (m, n) = the top-m left singular vectors of the sigma_1-normalised training matrices, concatenated.

    Args:
        train: (N, n, d) raw matrices (uint8 frames are fine).
        m: sketch rows, 1 <= m <= n.
    """
    A = normalize_batch(as_batch(train, "train").to(torch.float32))  # (N, n, d), each sigma_1 = 1
    S = top_subspace(A, m, batch_size).to(torch.float32)  # (m, n)
    return DenseSketch(S, {"kind": "tensor", "m": m, "n": A.shape[-2], "method": "Liu, Xiao, Ding & Yang, ICLR 2023"})


def ivy19_config(k: int, m: int, steps: int = 1000, seed: int = 0, **options) -> LearnConfig:
    """The published IVY19 training setup as a :class:`LearnConfig`."""
    return LearnConfig(k=k, m=m, kind="learned", steps=steps, seed=seed, optimizer="sgd", batch_size=1, route="power", **options)


def ivy19(train, k: int, m: int, steps: int = 1000, seed: int = 0, **options) -> SparseSketch:
    """IVY19 as published: CountSketch values at fixed random positions, SGD, batch 1, power-method SVD."""
    sketch = learn(train, config=ivy19_config(k, m, steps, seed, **options))
    return sketch.with_values(sketch.values, method="Indyk, Vakilian & Yuan, NeurIPS 2019 (values only, SGD, batch 1, power method)")


def li23(train, k: int, m: int, steps: int = 1000, seed: int = 0, samples: int = 1, **options) -> SparseSketch:
    """Li et al. (ICLR 2023): greedy positions and values, then the values trained as IVY19 (SGD, batch 1, power method).

    ``steps=0`` returns the greedy sketch itself.
    """
    cfg = replace(ivy19_config(k, m, steps, seed), positions=True, greedy_samples=samples, **options)
    sketch = learn(train, config=cfg)
    return sketch.with_values(sketch.values, method="Li, Lin, Liu, Vakilian & Woodruff, ICLR 2023 (greedy positions, IVY19 values)")


def one_shot_one_vec(train, m: int, seed: int = 0, index: int = 0) -> SparseSketch:
    """1Shot1Vec (Indyk, Wagner & Woodruff, NeurIPS 2021): random positions, values = the top left singular vector of one training matrix."""
    A = as_batch(train, "train")
    if not 0 <= index < A.shape[0]:
        raise UsageError(f"index {index} is outside the {A.shape[0]} training matrices")
    U, _, _ = torch.linalg.svd(A[index].to(torch.float64), full_matrices=False)  # (n, r)
    u = U[:, 0] * A.shape[-2] ** 0.5  # (n,), scaled to entries of RMS 1 like a CountSketch's
    return learnable_sparse(A.shape[-2], m, seed=seed).with_values(u[None].float(), method="1Shot1Vec (Indyk, Wagner & Woodruff, NeurIPS 2021)")


def few_shot_sgd(train, k: int, m: int, shots: int = 3, steps: int = 200, lr: float = 0.05, seed: int = 0) -> SparseSketch:
    """FewShotSGD (Indyk, Wagner & Woodruff, NeurIPS 2021): CountSketch values trained on ``shots`` matrices.

    Minimises sum_j ||(S U_j)^T (S U_j) - I_k||_F^2 with Adam, U_j (n, k) the
    top-k left singular vectors of the j-th sampled training matrix, from a
    random CountSketch; positions stay fixed.
    """
    A = as_batch(train, "train")
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(A.shape[0], generator=g)[: max(1, min(int(shots), A.shape[0]))]
    U = torch.stack([torch.linalg.svd(A[i].to(torch.float64), full_matrices=False)[0][:, :k] for i in pick.tolist()]).float()  # (s, n, k)
    base = learnable_sparse(A.shape[-2], m, seed=seed)
    values = base.values.clone().requires_grad_(True)
    opt = torch.optim.Adam([values], lr=lr)
    eye = torch.eye(k)
    for _ in range(int(steps)):
        SU = base.apply(U, values)  # (s, m, k)
        loss = (SU.mT @ SU - eye).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return base.with_values(values, k=k, method="FewShotSGD (Indyk, Wagner & Woodruff, NeurIPS 2021)")
