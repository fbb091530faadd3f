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
"""

from __future__ import annotations

import torch

from ._checks import as_batch
from .errors import UsageError
from .learn import LearnConfig, _normalize_batch, learn
from .sketch import DenseSketch, SparseSketch


def tensor_sketch(train, m: int, batch_size: int = 8) -> DenseSketch:
    """S (m, n) = the top-m left singular vectors of the sigma_1-normalised training matrices, concatenated.

    Args:
        train: (N, n, d) raw matrices (uint8 frames are fine).
        m: sketch rows, 1 <= m <= n.
    """
    A = as_batch(train, "train")
    n = A.shape[-2]
    if not 1 <= m <= n:
        raise UsageError(f"m={m} must lie in [1, n={n}]")
    gram = torch.zeros(n, n, dtype=torch.float64)  # (n, n) = sum_i A_i A_i^T
    for i in range(0, A.shape[0], batch_size):
        X = _normalize_batch(A[i : i + batch_size].to(torch.float32)).to(torch.float64)  # (b, n, d)
        gram += (X @ X.mT).sum(0)
    _, U = torch.linalg.eigh(gram)  # ascending
    S = U[:, -m:].flip(-1).mT.contiguous().to(torch.float32)  # (m, n)
    return DenseSketch(S, {"kind": "tensor", "m": m, "n": n, "method": "Liu, Xiao, Ding & Yang, ICLR 2023"})


def ivy19_config(k: int, m: int, steps: int = 1000, seed: int = 0, **options) -> LearnConfig:
    """The published IVY19 training setup as a :class:`LearnConfig`."""
    return LearnConfig(k=k, m=m, kind="learned", steps=steps, seed=seed, optimizer="sgd", batch_size=1, route="power", **options)


def ivy19(train, k: int, m: int, steps: int = 1000, seed: int = 0, **options) -> SparseSketch:
    """IVY19 as published: CountSketch values at fixed random positions, SGD, batch 1, power-method SVD."""
    sketch = learn(train, config=ivy19_config(k, m, steps, seed, **options))
    return sketch.with_values(sketch.values, method="Indyk, Vakilian & Yuan, NeurIPS 2019 (values only, SGD, batch 1, power method)")
