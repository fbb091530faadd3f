"""``learn``: the in-process driver of the training core (Indyk, Vakilian & Yuan, NeurIPS 2019, and its successors).

The objective, the kinds and the starts are described in
:mod:`lrstream.training.core` and :mod:`lrstream.training.sketches`:

* ``learned``: every value of a CountSketch trained (``positions=True``: its
  nonzeros first placed by the greedy search of Li et al., ICLR 2023);
* ``mixed-j``: ceil(m/2) learned rows trained jointly with floor(m/2) fixed
  random rows; ``mixed-s``: the learned half trained alone, the random rows
  appended. Both are never worse than their random half (the worst-case
  guarantee, :func:`lrstream.numerics.sketch.mixed`);
* ``dense``: every entry of an m x n S, started from the training data's
  top-m subspace (``init="tensor"``, Liu et al., ICLR 2023), its recency- and
  spectrum-weighted form chosen by forward validation (``init="spectral"``),
  or a Gaussian.

``learn`` builds W in-process workers over the matrices it is given and runs
the same :class:`~lrstream.training.loop.TrainLoop` as the Ray retrain; there
is no second training loop.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import replace

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..numerics.checks import as_batch, check_rank
from ..numerics.losses import check_loss
from ..numerics.sketch import Sketch
from .config import LearnConfig
from .core import Worker, holdout, local_batch_sizes, normalized, stream_batches
from .loop import InProcess, LoopOptions, TrainLoop, train_and_refit
from .server import Server
from .sketches import finish_sketch, fit_config

_STREAM_START_MATRICES = 64  # a data-dependent start on a streamed source uses its first batches


def _shares(count: int, workers: int) -> list[torch.Tensor]:
    """W contiguous, nearly equal cuts of range(count), as the Ray retrain cuts the training rows."""
    bounds = [count * w // workers for w in range(workers + 1)]
    return [torch.arange(bounds[w], bounds[w + 1]) for w in range(workers)]


def _first_matrices(batches, count: int) -> torch.Tensor:
    """The first ``count`` matrices of an endless batch stream (fewer if an epoch is shorter)."""
    got, total = [], 0
    for A in batches:
        got.append(A)
        total += A.shape[0]
        if total >= count:
            break
    return torch.cat(got)[:count]


def _loop(fit: LearnConfig, n: int, train: torch.Tensor | None, held: torch.Tensor | None, workers: int, weight, batches=None, validate: bool = True) -> TrainLoop:
    """An in-process loop over W workers holding contiguous shares of ``train`` and of ``held`` (validated on unless ``validate`` is False)."""
    sizes = local_batch_sizes(fit.batch_size, workers)
    tr_cuts = _shares(0 if train is None else train.shape[0], workers)
    val_cuts = _shares(0 if held is None else held.shape[0], workers)

    def make_worker(rank: int) -> Worker:
        val = None if held is None else held[val_cuts[rank]]
        rows = tr_cuts[rank]
        return Worker(None if train is None else train[rows], val, rows, fit, sizes[rank], rank, weight, batches)

    return TrainLoop(InProcess(), fit, n, LoopOptions(workers=workers, validate=validate), make_worker, lambda params: Server(fit, params))


def learn(
    train,
    k: int | None = None,
    m: int | None = None,
    kind: str | None = None,
    loss: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    *,
    weight=None,
    val=None,
    config: LearnConfig | None = None,
    workers: int = 1,
    **options,
) -> Sketch:
    """Learn a sketch S (m, n) for rank-k SCW on matrices like ``train``.

    Args:
        train: (N, n, d) numpy array or torch tensor of raw matrices (uint8
            frames are fine), or an iterable of such batches that can be
            iterated repeatedly (one pass = one epoch). Each matrix is scaled
            to sigma_1 = 1 here.
        k: target rank.
        m: sketch rows.
        kind: "learned", "mixed-j", "mixed-s" or "dense".
        loss: "fro" (default), "v" or "wfro" (then ``weight`` (n, d) is required).
        steps: optimiser steps (each on ``batch_size`` matrices).
        seed: fixes the initial CountSketch, the random half and the data order.
        device: "cpu" or "cuda".
        val: optional held-out matrices for early stopping; by default a
            ``val_fraction`` of an in-memory ``train`` is held out: a seeded
            random subset, or with ``val_split="last"`` its last matrices
            (time-ordered data such as video: the sketch is then chosen by
            how it does on later frames, as in deployment).
            With ``refit=True`` validation only chooses the step count t*;
            the sketch is then trained again on all matrices for t* steps,
            from a start recomputed on all of them (twice the training
            time; positions=True runs the greedy search again).
        workers: train as W data-parallel workers would, in this process: the
            training matrices are cut into W contiguous shares, each with its
            own batch order, and every start is summed over the shares. The
            Ray retrain with W workers computes exactly this (up to summation
            order), which is how the two are tested against each other.
        config: a full :class:`LearnConfig`. Arguments given explicitly (not
            None) and keyword ``options`` (any other LearnConfig field)
            override it; without a config, k and m are required and the rest
            take LearnConfig's defaults (kind "learned", loss "fro", 300
            steps, seed 0, cpu).

    Returns:
        The sketch with the best validation loss, its metadata holding the
        config and the training curves.
    """
    unknown = set(options) - set(LearnConfig.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown learn option(s): {', '.join(sorted(unknown))}")
    given = {"k": k, "m": m, "kind": kind, "loss": loss, "steps": steps, "seed": seed, "device": device}
    fields = {**{name: v for name, v in given.items() if v is not None}, **options}
    if config is not None:
        cfg = replace(config, **fields)
    elif k is None or m is None:
        raise UsageError("learn needs k and m (or a LearnConfig)")
    else:
        cfg = LearnConfig(**fields)
    cfg.validate()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a positive integer, got {workers!r}")

    in_memory = isinstance(train, (np.ndarray, torch.Tensor))
    held = None if val is None else normalized(val, "val", cfg)
    if in_memory:
        data = normalized(train, "train", cfg)
        n, d = data.shape[-2:]
        if val is None:
            tr_idx, val_idx = holdout(data.shape[0], cfg.val_fraction, cfg.val_split, cfg.seed)
            tr, held = data[tr_idx], (data[val_idx] if val_idx.numel() else None)
        else:  # an explicit validation set: every training matrix trains
            tr = data
        everything = data if val is None else torch.cat([tr, held])  # refit's data, in time order; an explicit val counts as the newest
    else:
        it = iter(train)
        first = next(it, None)
        if first is None:
            raise DataError("the training data is empty")
        n, d = as_batch(first, "training batch").shape[-2:]
        # A one-shot iterator (a generator) gives one epoch: put back the batch
        # that was read to learn the shape. Re-iterables are re-read each epoch.
        source = itertools.chain([first], it) if it is train else train
        if cfg.data_dependent and it is train:
            raise UsageError(f"a sketch started by {cfg.start!r} reads the data twice: pass an array or a re-iterable source, not a one-shot iterator")
        if cfg.refit:
            raise UsageError("refit=True trains again on all the data: pass the training matrices as an array")
        if workers > 1:
            raise UsageError("workers > 1 splits the training matrices into shares: pass them as an array")
        tr = _first_matrices(stream_batches(source, n, cfg), _STREAM_START_MATRICES) if cfg.data_dependent else None
    if held is not None and tuple(held.shape[-2:]) != (n, d):
        raise DataError(f"validation matrices are {tuple(held.shape[-2:])}, training matrices ({n}, {d})")
    check_rank(cfg.k, n=n, d=d)
    check_loss(cfg.loss, weight, n, d)
    if cfg.refit and held is None:
        raise UsageError("refit=True needs validation data to choose the number of steps (val_fraction > 0 or val=...)")
    if in_memory and tr.shape[0] < workers:
        raise DataError(f"too few matrices: {tr.shape[0]} training matrices cannot feed {workers} workers")

    def build(fit: LearnConfig, refit: bool) -> TrainLoop:
        if refit:
            return _loop(fit, n, everything, held, workers, weight, validate=False)
        return _loop(fit, n, tr, held, workers, weight, None if in_memory else stream_batches(source, n, fit))

    fit = fit_config(cfg)
    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    loop, fitted, info = train_and_refit(build, fit, cfg.refit, progress)
    loop.shutdown()
    return finish_sketch(fitted, cfg, n, d, {**info, **({"workers": workers} if workers > 1 else {})})
