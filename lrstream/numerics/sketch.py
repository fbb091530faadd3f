"""Sketching matrices S (m x n): sparse (CountSketch-like) and dense.

A sparse sketch stores, for each of its ``c`` blocks, one nonzero per column:
``positions[b, i]`` in [0, m) is the row (bucket) that column i lands in and
``values[b, i]`` its value. A plain CountSketch or a learned sketch has c = 1;
a mixed sketch has c = 2, a learned block on rows [0, m/2) and a fixed random
block on rows [m/2, m). ``trainable`` marks which entries learning may change.

SA is the signed scatter-add ``(SA)[positions[b, i]] += values[b, i] * A[i]``
over all blocks. It is computed as one GEMM with the explicit (m, n) S,
built from the (c, n) arrays on each call: for the m <= a few hundred of
sketching, a GEMM reads A once at full memory bandwidth, while a row
scatter-add (the O(nnz(A)) flop count) is several times slower in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UsageError


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _check_dims(n: int, m: int) -> None:
    if int(n) < 1 or int(m) < 1:
        raise UsageError(f"sketch dimensions must be positive, got n={n}, m={m}")


class _SparseApply(torch.autograd.Function):
    """SA for a sparse S, with a gradient for the values only.

    d(SA)[pos_i] / d v_i = A_i, so dL/dv_i = sum_batch <G[pos_i], A_i> with G
    the gradient w.r.t. SA. Taking it from the (n, m) product A G^T costs one
    GEMM instead of materialising a gathered (n, d) copy of G.
    """

    @staticmethod
    def forward(ctx, A, positions, values, m):
        # For the small m of sketching, one GEMM with the explicit (m, n) S
        # reads A once at full bandwidth; a scatter-add over rows (the
        # O(nnz) way) is ~4x slower on CPU and GPU alike because it first
        # writes a scaled copy of A.
        n = A.shape[-2]
        S = A.new_zeros(m, n)  # (m, n)
        cols = torch.arange(n, device=A.device)
        for b in range(positions.shape[0]):
            S.index_put_((positions[b], cols), values[b], accumulate=True)
        ctx.save_for_backward(A, positions)
        return S @ A  # (..., m, d)

    @staticmethod
    def backward(ctx, G):
        A, positions = ctx.saved_tensors
        if not ctx.needs_input_grad[2]:
            return None, None, None, None
        AG = A @ G.mT  # (..., n, m)
        AG = AG.reshape(-1, *AG.shape[-2:]).sum(0)  # (n, m)
        gv = AG.gather(1, positions.mT).mT  # (c, n)
        return None, None, gv, None


@dataclass(frozen=True, eq=False)
class SparseSketch:
    """S with ``c`` nonzeros per column, stored as (c, n) positions and values.

    Attributes:
        positions: (c, n) int64, values in [0, m).
        values: (c, n) float.
        trainable: (c, n) bool, True where learning may update the value.
        m: number of rows of S.
        meta: JSON-ready metadata (kind, k, loss, seed, training info...).
    """

    positions: torch.Tensor
    values: torch.Tensor
    trainable: torch.Tensor
    m: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.positions.ndim != 2 or self.values.shape != self.positions.shape or self.trainable.shape != self.positions.shape:
            raise UsageError("sparse sketch needs positions, values and trainable of one shape (c, n)")
        if self.positions.numel() and (int(self.positions.min()) < 0 or int(self.positions.max()) >= self.m):
            raise UsageError(f"sparse sketch positions must lie in [0, {self.m})")

    @property
    def n(self) -> int:
        return int(self.positions.shape[1])

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "sparse"))

    def apply(self, A: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """SA for A of shape (..., n, d) -> (..., m, d).

        ``values`` overrides the stored values (learning passes its parameter
        here so that autograd sees it).
        """
        vals = self.values if values is None else values
        vals = vals.to(device=A.device, dtype=A.dtype)
        return _SparseApply.apply(A, self.positions.to(A.device), vals, self.m)

    def to_dense(self) -> torch.Tensor:
        """The explicit (m, n) matrix; for inspection and tests only."""
        S = torch.zeros(self.m, self.n, dtype=self.values.dtype)
        cols = torch.arange(self.n)
        for b in range(self.positions.shape[0]):
            S.index_put_((self.positions[b], cols), self.values[b], accumulate=True)
        return S

    def rows(self, lo: int, hi: int) -> "SparseSketch":
        """The sub-sketch made of rows [lo, hi): the blocks whose positions fall there."""
        blocks = [b for b in range(self.positions.shape[0]) if bool(((self.positions[b] >= lo) & (self.positions[b] < hi)).all())]
        if not blocks:
            raise UsageError(f"no block of this sketch lies in rows [{lo}, {hi})")
        idx = torch.tensor(blocks)
        return SparseSketch(self.positions[idx] - lo, self.values[idx].clone(), self.trainable[idx].clone(), hi - lo, dict(self.meta))

    def with_values(self, values: torch.Tensor, **meta: Any) -> "SparseSketch":
        return replace(self, values=values.detach().cpu().clone(), meta={**self.meta, **meta})

    # Training optimises only the trainable entries, as one flat vector p (trainable.sum(),);
    # these two methods are the only place that packs and unpacks it.

    def params(self) -> torch.Tensor:
        """The trainable values as a flat vector p: (trainable.sum(),)."""
        return self.values[self.trainable]

    def values_from(self, params: torch.Tensor) -> torch.Tensor:
        """The (c, n) values with the trainable ones replaced by ``params``; differentiable in ``params``.

        Computed on ``params``' device and dtype, so autograd and the GPU see one tensor.
        """
        base = self.values.to(device=params.device, dtype=params.dtype)
        return base.masked_scatter(self.trainable.to(params.device), params)  # (c, n)

    def with_params(self, params: torch.Tensor, **meta: Any) -> "SparseSketch":
        """This sketch with its trainable values set to ``params`` (stored on the CPU, in the sketch's dtype)."""
        return self.with_values(self.values_from(params.detach().cpu().to(self.values.dtype)), **meta)


@dataclass(frozen=True, eq=False)
class DenseSketch:
    """A dense (m, n) sketch, e.g. i.i.d. Gaussian."""

    matrix: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2:
            raise UsageError("dense sketch matrix must be 2-D (m, n)")

    @property
    def m(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "dense"))

    def apply(self, A: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """SA for A of shape (..., n, d) -> (..., m, d)."""
        S = (self.matrix if values is None else values).to(device=A.device, dtype=A.dtype)
        return S @ A

    def to_dense(self) -> torch.Tensor:
        return self.matrix

    def as_blocks(self) -> SparseSketch:
        """The same S as m one-row blocks (block b fills row b), all trainable: the form training computes with."""
        m, n = self.matrix.shape
        positions = torch.arange(m).unsqueeze(1).expand(m, n).contiguous()  # (m, n)
        return SparseSketch(positions, self.matrix, torch.ones(m, n, dtype=torch.bool), m, dict(self.meta))

    def with_values(self, values: torch.Tensor, **meta: Any) -> "DenseSketch":
        return replace(self, matrix=values.detach().cpu().clone(), meta={**self.meta, **meta})


Sketch = SparseSketch | DenseSketch


def sparse_random(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> SparseSketch:
    """CountSketch: column i has one nonzero, a random sign in a random row h(i).

    Deterministic from ``seed``. E[S^T S] = I, and it is a subspace embedding
    for m = O(k^2) (Clarkson-Woodruff 2013).
    """
    _check_dims(n, m)
    g = _generator(seed)
    pos = torch.randint(0, int(m), (1, int(n)), generator=g)
    signs = torch.randint(0, 2, (1, int(n)), generator=g).to(dtype) * 2 - 1
    return SparseSketch(pos, signs, torch.zeros(1, int(n), dtype=torch.bool), int(m), {"kind": "sparse_random", "seed": int(seed)})


def dense_random(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> DenseSketch:
    """Gaussian sketch with i.i.d. N(0, 1/m) entries, deterministic from ``seed``."""
    _check_dims(n, m)
    g = _generator(seed)
    S = torch.randn(int(m), int(n), generator=g, dtype=dtype) / float(m) ** 0.5
    return DenseSketch(S, {"kind": "dense_random", "seed": int(seed)})


def learnable_sparse(n: int, m: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> SparseSketch:
    """A CountSketch whose values are all trainable: the IVY19 starting point."""
    base = sparse_random(n, m, seed, dtype)
    return replace(base, trainable=torch.ones_like(base.trainable), meta={"kind": "learned", "seed": int(seed)})


def mixed(learned: SparseSketch, m_random: int, seed: int = 0, kind: str = "mixed-j") -> SparseSketch:
    """Stack ``learned`` (rows [0, m_l)) on a fixed CountSketch (rows [m_l, m_l + m_random)).

    rowspace(S_random A) is contained in rowspace(S_mixed A), and the SCW
    error is monotone in the row space, so the mixed sketch is never worse
    than its random half alone: the worst-case guarantee.
    """
    if learned.positions.shape[0] != 1:
        raise UsageError("the learned half of a mixed sketch must have one block")
    rnd = sparse_random(learned.n, m_random, seed, learned.values.dtype)
    pos = torch.cat([learned.positions, rnd.positions + learned.m])
    vals = torch.cat([learned.values, rnd.values])
    train = torch.cat([learned.trainable, torch.zeros_like(rnd.trainable)])
    meta = {**learned.meta, "kind": kind, "random_seed": int(seed), "m_learned": learned.m}
    return SparseSketch(pos, vals, train, learned.m + int(m_random), meta)


def random_half(sketch: SparseSketch) -> SparseSketch:
    """The fixed random rows of a mixed sketch, as a sketch of their own."""
    m_l = int(sketch.meta.get("m_learned", 0))
    if not m_l:
        raise UsageError(f"sketch of kind {sketch.kind!r} has no random half")
    sub = sketch.rows(m_l, sketch.m)
    return replace(sub, meta={"kind": "sparse_random", "seed": sketch.meta.get("random_seed")})


# ------------------------------------------------------------------ plain-array form (for storage and transport)

SPARSE_ARRAYS = ("positions", "values", "trainable")
DENSE_ARRAYS = ("matrix",)


def sketch_arrays(sketch: Sketch) -> tuple[str, dict[str, np.ndarray]]:
    """(type, arrays): "sparse" with int64 positions, values and bool trainable (c, n), or "dense" with matrix (m, n)."""
    if isinstance(sketch, SparseSketch):
        return "sparse", {
            "positions": sketch.positions.cpu().numpy().astype(np.int64),
            "values": sketch.values.detach().cpu().numpy(),
            "trainable": sketch.trainable.cpu().numpy().astype(np.bool_),
        }
    return "dense", {"matrix": sketch.matrix.detach().cpu().numpy()}


def sketch_from_arrays(type_: str, m: int, n: int, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Sketch:
    """The inverse of :func:`sketch_arrays`, checking shapes, ranges and finiteness (DataError otherwise)."""
    meta = dict(meta or {})
    if type_ == "dense":
        mat = np.asarray(arrays["matrix"])
        if mat.shape != (m, n) or not np.isfinite(mat).all():
            raise DataError(f"dense sketch is inconsistent: shape {mat.shape}, expected ({m}, {n}), or non-finite")
        return DenseSketch(torch.from_numpy(mat.copy()), meta)
    if type_ != "sparse":
        raise DataError(f"unknown sketch type {type_!r}")
    pos, vals, train = (np.asarray(arrays[name]) for name in SPARSE_ARRAYS)
    if pos.ndim != 2 or pos.shape[1] != n or vals.shape != pos.shape or train.shape != pos.shape:
        raise DataError("sparse sketch has inconsistent array shapes")
    if pos.size and (pos.min() < 0 or pos.max() >= m):
        raise DataError(f"sparse sketch has positions outside [0, {m})")
    if not np.isfinite(vals).all():
        raise DataError("sparse sketch has non-finite values")
    return SparseSketch(torch.from_numpy(pos.astype(np.int64)), torch.from_numpy(vals.copy()), torch.from_numpy(train.astype(np.bool_)), int(m), meta)
