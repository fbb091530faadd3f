"""A trained sketch's life: its start, the form training computes with, and the finished sketch.

Training always works on a :class:`~lrstream.numerics.sketch.SparseSketch`:
a dense (m, n) S is trained as m one-row blocks (block b fills row b), so one
loop serves every kind. Starts (DESIGN.md, :mod:`lrstream.numerics.starts`):

* ``random``: a CountSketch (sparse kinds) or a Gaussian (dense);
* ``greedy``: the CountSketch of the greedy position search (positions=True);
* ``tensor``: the top-m eigenvectors of sum_i A_i A_i^T;
* ``spectral``: the top-m eigenvectors of sum_i w_i (A_i A_i^T)^{p/2}, with
  (p, h) chosen by forward validation when several are given.

Data-dependent starts are sums over matrices, so :func:`start_sketch` takes
them from shares of the training matrices through a ``gather`` (one share
in process, or one per Ray worker): the result does not depend on the split
beyond summation order.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch

from ..errors import UsageError
from ..numerics.greedy import GreedyShare, greedy_from
from ..numerics.sketch import DenseSketch, Sketch, SparseSketch, learnable_sparse, mixed
from ..numerics.spectral import SpectralShare, fold_plan, select_spectral_from
from ..numerics.starts import Gather, local_gather, top_eigenvectors
from .config import LearnConfig


def fit_config(cfg: LearnConfig) -> LearnConfig:
    """The configuration the optimiser actually runs: mixed-S learns its learned half alone."""
    if cfg.kind == "mixed-s":
        return replace(cfg, kind="learned", m=cfg.m_learned, k=min(cfg.k, cfg.m_learned))
    return cfg


def dense_as_blocks(S: torch.Tensor, cfg: LearnConfig, **meta: Any) -> SparseSketch:
    """A dense (m, n) S as m one-row blocks, rows scaled to entries of RMS 1 (the row space is unchanged)."""
    n = S.shape[1]
    S = S * (n**0.5 / S.norm(dim=1, keepdim=True).clamp_min(1e-30))
    return DenseSketch(S.to(cfg.torch_dtype), {"kind": "dense", "seed": cfg.seed, "init": cfg.start, **meta}).as_blocks()


def start_sketch(n: int, cfg: LearnConfig, total: int = 0, spectral: Gather | None = None, greedy: Gather | None = None) -> SparseSketch:
    """The starting point of training, in training form.

    Args:
        n: rows of the matrices.
        cfg: the fit configuration (:func:`fit_config`).
        total: how many training matrices the shares hold together.
        spectral, greedy: gathers over the shares, with the method names of
            :class:`~lrstream.numerics.spectral.SpectralShare` and
            :class:`~lrstream.numerics.greedy.GreedyShare`; needed when
            ``cfg.data_dependent``.
    """
    if cfg.data_dependent and (spectral is None or greedy is None or total < 1):
        raise UsageError(f"a sketch started by {cfg.start!r} needs the training data")
    if cfg.kind == "dense":
        if cfg.start == "tensor":
            return dense_as_blocks(top_eigenvectors(sum(spectral("gram", 2.0, None, total)), cfg.m), cfg)
        if cfg.start == "spectral":
            S, record = select_spectral_from(spectral, fold_plan(total, cfg.k, cfg.m, cfg.powers, cfg.half_lives, cfg.start_folds))
            return dense_as_blocks(S, cfg, spectral=record)
        g = torch.Generator().manual_seed(int(cfg.seed))
        return dense_as_blocks(torch.randn(cfg.m, n, generator=g, dtype=torch.float64), cfg)
    base = learnable_sparse(n, cfg.m_learned, seed=cfg.seed, dtype=cfg.torch_dtype)
    if cfg.positions:
        pos, val = greedy_from(greedy, total, n, cfg.m_learned, min(cfg.k, cfg.m_learned), samples=cfg.greedy_samples, seed=cfg.seed)
        base = replace(base, positions=pos.unsqueeze(0), values=val.unsqueeze(0).to(cfg.torch_dtype), meta={**base.meta, "positions": "greedy"})
    if cfg.kind == "mixed-j":
        return mixed(base, cfg.m - cfg.m_learned, seed=cfg.seed + 1, kind="mixed-j")
    return base


def initial_sketch(n: int, cfg: LearnConfig, data: torch.Tensor | None = None) -> SparseSketch:
    """:func:`start_sketch` on matrices in memory: ``data`` (N, n, d), scaled to sigma_1 = 1, in time order."""
    if data is None:
        return start_sketch(n, cfg)
    rows = torch.arange(data.shape[0])
    return start_sketch(n, cfg, data.shape[0], local_gather([SpectralShare(data, rows, cfg.batch_size)]), local_gather([GreedyShare(data, rows)]))


def finish_sketch(sketch: SparseSketch, cfg: LearnConfig, n: int, d: int, info: dict[str, Any]) -> Sketch:
    """The final sketch: the random half appended for mixed-S, the config and training record in its metadata.

    A dense sketch, trained as m one-row blocks, comes back as a :class:`DenseSketch`.
    """
    if cfg.kind == "mixed-s":
        sketch = mixed(sketch, cfg.m - cfg.m_learned, seed=cfg.seed + 1, kind="mixed-s")
    meta = {
        **sketch.meta,
        "kind": cfg.kind,
        "n": int(n),
        "d": int(d),
        "k": cfg.k,
        "m": cfg.m,
        "loss": cfg.loss,
        "seed": cfg.seed,
        "config": asdict(cfg),
        "training": info,
    }
    if cfg.kind == "dense":
        return DenseSketch(sketch.to_dense().to(torch.float32), meta)
    return SparseSketch(sketch.positions, sketch.values, sketch.trainable, sketch.m, meta)
