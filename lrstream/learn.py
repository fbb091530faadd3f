"""Learning sketch values by gradient descent (Indyk, Vakilian & Yuan, NeurIPS 2019).

The training objective over matrices A_i (each scaled to sigma_1 = 1) is

    L(S) = mean_i loss(A_i - SCW(S, A_i, k)),

minimised over the nonzero values of a sparse S whose positions stay fixed
(random CountSketch buckets). Kinds, all with m rows:

* ``learned``: every value of a CountSketch trained.
* ``mixed-j``: ceil(m/2) learned rows trained jointly with floor(m/2) fixed
  random rows (the loss sees the whole sketch).
* ``mixed-s``: ceil(m/2) rows learned alone, then floor(m/2) random rows appended.
* ``dense``: every entry of a dense m x n S trained, started from the
  top-m subspace of the training data (``init="tensor"``, the sketch of Liu
  et al., ICLR 2023), from the recency- and spectrum-weighted subspace that
  forward validation picks (``init="spectral"``, see
  :func:`lrstream.inits.select_spectral`; for time-ordered data), or from a
  Gaussian (``init="random"``).

``positions=True`` (sparse kinds) places each CountSketch nonzero by the
greedy search of Li et al. (ICLR 2023) before the values are trained; see
:mod:`lrstream.inits`. Data-dependent starting points are validated at step
0 too, so training never returns a sketch worse on validation than its start.

Mixed sketches are never worse than their random half (see :func:`lrstream.sketch.mixed`).

The loop is split so that the distributed trainer reuses it exactly:
:func:`batch_gradient` is a pure function (sketch, values, batch) -> (loss sum,
gradient sum, count), and :class:`Stepper` owns the optimiser and applies one
averaged gradient per step. ``learn`` is the single-process driver.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable

import numpy as np
import torch

from ._checks import as_batch, check_rank, resolve_device
from .errors import DataError, UsageError
from .inits import gram_sum, greedy_positions, select_spectral, top_eigenvectors
from .linalg import normalize_by_sigma1, sigma1_estimate
from .losses import ROUTES, check_loss, sketch_loss
from .sketch import DenseSketch, SparseSketch, learnable_sparse, mixed

KINDS = ("learned", "mixed-j", "mixed-s", "dense")
INITS = ("random", "tensor", "spectral")
VAL_SPLITS = ("random", "last")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
_DEFAULT_LR = {"adam": 0.05, "sgd": 1.0}
# A dense sketch starts with entries of RMS 1 (rows scaled by sqrt(n)); its
# start from the data's top subspace is already close to a good optimum, so
# steps are kept small relative to the entries.
_DENSE_LR = {"adam": 0.002, "sgd": 0.05}
# float64 costs about 2x; it makes runs reproducible to ~1e-12 across batch splits
# (float32 summation order alone moves Adam trajectories by ~1e-5).
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class LearnConfig:
    """Everything that determines a training run; saved with the sketch.

    Defaults were chosen on video frames (bigbuckbunny, k=10, m=20) and need
    no tuning for sigma_1-normalised data.
    """

    k: int
    m: int
    kind: str = "learned"
    loss: str = "fro"
    steps: int = 300
    batch_size: int = 8
    optimizer: str = "adam"
    lr: float | None = None
    lr_schedule: str = "cosine"
    min_lr_fraction: float = 0.05
    val_fraction: float = 0.1
    eval_every: int = 25
    patience: int = 6
    seed: int = 0
    route: str = "exact"
    power_iters: int = 20
    device: str = "cpu"
    progress: bool | None = None
    time_budget: float | None = None
    dtype: str = "float32"
    init: str | None = None
    positions: bool = False
    greedy_samples: int = 2
    val_split: str = "random"
    refit: bool = False
    powers: tuple[float, ...] = (2.0, 1.5, 1.0)
    half_lives: tuple[float | None, ...] = (None, 1.0, 0.5, 0.25)
    start_folds: int = 3

    def __post_init__(self) -> None:
        # A config read back from JSON carries lists; keep the frozen config hashable and comparable.
        object.__setattr__(self, "powers", tuple(self.powers))
        object.__setattr__(self, "half_lives", tuple(self.half_lives))

    def validate(self) -> "LearnConfig":
        check_rank(self.k)
        if self.m < 2 and self.kind != "learned":
            raise UsageError("mixed sketches need m >= 2")
        if self.k > self.m:
            raise UsageError(f"k={self.k} exceeds the sketch size m={self.m}")
        for name, value, allowed in (
            ("kind", self.kind, KINDS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("lr_schedule", self.lr_schedule, SCHEDULES),
            ("route", self.route, ROUTES),
            ("dtype", self.dtype, DTYPES),
            ("val_split", self.val_split, VAL_SPLITS),
        ):
            if value not in allowed:
                raise UsageError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1 or self.patience < 1 or self.power_iters < 1:
            raise UsageError("steps must be >= 0; batch_size, eval_every, patience and power_iters >= 1")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise UsageError(f"time_budget must be positive seconds, got {self.time_budget}")
        if self.init is not None and self.init not in INITS:
            raise UsageError(f"unknown init {self.init!r}; choose one of {', '.join(INITS)}")
        if self.init in ("tensor", "spectral") and self.kind != "dense":
            raise UsageError(f"init={self.init!r} is for kind='dense'; sparse kinds start from a CountSketch (or positions=True)")
        if not self.powers or not all(isinstance(p, (int, float)) and 0 < p <= 4 for p in self.powers):
            raise UsageError(f"powers must be one or more numbers in (0, 4], got {list(self.powers)}")
        if not self.half_lives or not all(h is None or (isinstance(h, (int, float)) and h > 0) for h in self.half_lives):
            raise UsageError(f"half_lives must be one or more positive fractions of the training window or None, got {list(self.half_lives)}")
        if self.start_folds < 1:
            raise UsageError(f"start_folds must be >= 1, got {self.start_folds}")
        if self.positions and self.kind == "dense":
            raise UsageError("positions=True is for sparse kinds; a dense sketch has no positions")
        if self.greedy_samples < 1:
            raise UsageError(f"greedy_samples must be >= 1, got {self.greedy_samples}")
        if self.lr is not None and not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        resolve_device(self.device)
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return (_DENSE_LR if self.kind == "dense" else _DEFAULT_LR)[self.optimizer]

    @property
    def start(self) -> str:
        """How the sketch starts: "tensor", "spectral", "random" or "greedy" (positions=True)."""
        if self.kind == "dense":
            return self.init or "tensor"
        return "greedy" if self.positions else "random"

    @property
    def data_dependent(self) -> bool:
        """Whether the starting sketch is computed from the training data."""
        return self.start in ("tensor", "spectral", "greedy")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def m_learned(self) -> int:
        return self.m if self.kind == "learned" else self.m - self.m // 2


def _dense_as_blocks(S: torch.Tensor, cfg: LearnConfig, **meta: Any) -> SparseSketch:
    """A dense (m, n) S as a sparse sketch with m blocks (block b holds row b), so one training loop serves both."""
    n = S.shape[1]
    S = S * (n**0.5 / S.norm(dim=1, keepdim=True).clamp_min(1e-30))  # rows scaled to entries of RMS 1; the row space is unchanged
    return DenseSketch(S.to(cfg.torch_dtype), {"kind": "dense", "seed": cfg.seed, "init": cfg.start, **meta}).as_blocks()


def tensor_start(gram: torch.Tensor, cfg: LearnConfig) -> SparseSketch:
    """The dense start from sum_i A_i A_i^T (n, n), or its spectral form sum_i w_i (A_i A_i^T)^{p/2}, however it was assembled (one process or many workers)."""
    return _dense_as_blocks(top_eigenvectors(gram, cfg.m), cfg)


def structure_config(cfg: LearnConfig) -> LearnConfig:
    """A config whose start has the same positions and trainable mask as ``cfg``'s but needs no data.

    For processes that hold the sketch's structure while its values arrive as
    parameters (retrain's workers and server, before the driver seeds a
    data-dependent start).
    """
    return replace(cfg, init="random") if cfg.kind == "dense" and cfg.start in ("tensor", "spectral") else cfg


def initial_sketch(n: int, cfg: LearnConfig, data: torch.Tensor | None = None) -> SparseSketch:
    """The starting point of training.

    A CountSketch for the learned rows (its positions and values from the
    greedy search when ``cfg.positions``), plus the fixed random rows for
    mixed-J; for ``dense``, the top-m subspace of ``data`` or a Gaussian.
    ``data`` (N, n, d), scaled to sigma_1 = 1, is needed when
    ``cfg.data_dependent``.
    """
    if cfg.data_dependent and data is None:
        raise UsageError(f"a sketch started by {cfg.start!r} needs the training data in memory")
    if cfg.kind == "dense":
        if cfg.start == "tensor":
            return tensor_start(gram_sum(data), cfg)
        if cfg.start == "spectral":
            S, record = select_spectral(data, cfg.k, cfg.m, cfg.powers, cfg.half_lives, cfg.start_folds)
            return _dense_as_blocks(S, cfg, spectral=record)
        g = torch.Generator().manual_seed(int(cfg.seed))
        return _dense_as_blocks(torch.randn(cfg.m, n, generator=g, dtype=torch.float64), cfg)
    base = learnable_sparse(n, cfg.m_learned, seed=cfg.seed, dtype=cfg.torch_dtype)
    if cfg.positions:
        pos, val = greedy_positions(data, cfg.m_learned, min(cfg.k, cfg.m_learned), samples=cfg.greedy_samples, seed=cfg.seed)
        base = replace(base, positions=pos.unsqueeze(0), values=val.unsqueeze(0).to(cfg.torch_dtype), meta={**base.meta, "positions": "greedy"})
    if cfg.kind == "mixed-j":
        return mixed(base, cfg.m - cfg.m_learned, seed=cfg.seed + 1, kind="mixed-j")
    return base


def batch_gradient(
    sketch: SparseSketch, params: torch.Tensor, A: torch.Tensor, cfg: LearnConfig, weight: torch.Tensor | None = None
) -> tuple[float, torch.Tensor, int]:
    """Loss sum and gradient sum over one batch of normalised matrices A (b, n, d).

    ``params`` are the trainable values (sketch.trainable.sum(),). Returning
    sums (not means) lets a parameter server average gradients from batches
    of different sizes exactly: grad_mean = sum_w grad_sum_w / sum_w count_w.
    """
    p = params.detach().to(A.device, A.dtype).requires_grad_(True)
    values = sketch.values.to(A.device, A.dtype).masked_scatter(sketch.trainable.to(A.device), p)  # (c, n)
    per_matrix = sketch_loss(sketch, A, cfg.k, cfg.loss, values, cfg.route, weight, cfg.power_iters)  # (b,)
    total = per_matrix.sum()
    (grad,) = torch.autograd.grad(total, p)
    return float(total.detach()), grad.detach().to("cpu", cfg.torch_dtype), int(A.shape[0])


class Stepper:
    """Optimiser state for the trainable values; one call to :meth:`apply` is one step.

    The learning rate follows the schedule of ``cfg`` over ``cfg.steps``.
    """

    def __init__(self, params: torch.Tensor, cfg: LearnConfig):
        self.cfg = cfg
        self.params = params.detach().clone().to(cfg.torch_dtype).requires_grad_(True)
        lr = cfg.learning_rate
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam([self.params], lr=lr)
        else:
            self.opt = torch.optim.SGD([self.params], lr=lr, momentum=0.9)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        base = self.cfg.learning_rate
        if self.cfg.lr_schedule == "constant" or self.cfg.steps <= 1:
            return base
        floor = base * self.cfg.min_lr_fraction
        t = min(step, self.cfg.steps) / self.cfg.steps
        return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * t))

    def apply(self, grad_mean: torch.Tensor) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        self.params.grad = grad_mean.to(self.params.dtype).clone()
        self.opt.step()
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params.detach().clone(), "opt": self.opt.state_dict(), "step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.params.copy_(state["params"])
        self.opt.load_state_dict(state["opt"])
        self.step_count = int(state["step"])


def _normalize_batch(A: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scale each matrix to sigma_1 = 1 (estimated; see :func:`sigma1_estimate`)."""
    s1 = torch.cat([sigma1_estimate(A[i : i + chunk]) for i in range(0, A.shape[0], chunk)])  # (N,)
    return normalize_by_sigma1(A, s1)


def _split(train: torch.Tensor, cfg: LearnConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    N = train.shape[0]
    n_val = int(round(N * cfg.val_fraction))
    if N < 2 or n_val == 0:
        return train, None
    if cfg.val_split == "last":  # time-ordered data: validate on the future, as deployment will
        return train[:-n_val], train[-n_val:]
    g = torch.Generator().manual_seed(cfg.seed + 7)
    perm = torch.randperm(N, generator=g)
    keep = perm[n_val:]
    if cfg.start == "spectral":  # its recency weights read the matrices in time order
        keep = keep.sort().values
    return train[keep], train[perm[:n_val]]


def _batches_from_tensor(train: torch.Tensor, cfg: LearnConfig) -> Iterable[torch.Tensor]:
    """Endless seeded minibatches: a fresh permutation each epoch."""
    g = torch.Generator().manual_seed(cfg.seed)
    N = train.shape[0]
    b = min(cfg.batch_size, N)
    while True:
        perm = torch.randperm(N, generator=g)
        for i in range(0, N - b + 1, b):
            yield train[perm[i : i + b]]


def _batches_from_iterable(source: Iterable, n: int | None, dtype: torch.dtype = torch.float32) -> Iterable[torch.Tensor]:
    """Re-iterate ``source`` epoch after epoch, normalising each batch; stops if an epoch is empty."""
    while True:
        empty = True
        for batch in source:
            A = as_batch(batch, "training batch")
            if n is not None and A.shape[-2] != n:
                raise DataError(f"training batch has n={A.shape[-2]} rows, expected {n}")
            empty = False
            yield _normalize_batch(A.to(dtype))
        if empty:
            return


def _first_matrices(batches: Iterable[torch.Tensor], count: int) -> torch.Tensor:
    """The first ``count`` matrices of an endless batch stream (fewer if an epoch is shorter)."""
    got: list[torch.Tensor] = []
    total = 0
    for A in batches:
        got.append(A)
        total += A.shape[0]
        if total >= count:
            break
    return torch.cat(got)[:count]


def _mean_loss(sketch: SparseSketch, values: torch.Tensor, data: torch.Tensor, cfg: LearnConfig, weight, device) -> float:
    total = 0.0
    with torch.no_grad():
        for i in range(0, data.shape[0], cfg.batch_size):
            A = data[i : i + cfg.batch_size].to(device)
            total += float(sketch_loss(sketch, A, cfg.k, cfg.loss, values.to(device), cfg.route, weight, cfg.power_iters).sum())
    return total / data.shape[0]


class Progress:
    """The training record: loss curves, the best validated parameters, early stopping.

    Shared by the single-process loop and the parameter server so both stop,
    and keep the same best sketch, by the same rule: a validation loss counts
    as better if it beats the best by 1e-7; ``cfg.patience`` evaluations
    without improvement stop training.
    """

    def __init__(self, cfg: LearnConfig, params: torch.Tensor):
        self.cfg = cfg
        self.best_loss = math.inf
        self.best_params = params.detach().clone()
        self.best_step = 0
        self.stale = 0
        self.curve: list[list[float]] = []
        self.val_curve: list[list[float]] = []
        self.stopped = False

    def record_step(self, step: int, loss: float) -> None:
        self.curve.append([step, loss])

    def due_validation(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == self.cfg.steps

    def record_val(self, step: int, loss: float, params: torch.Tensor) -> bool:
        """Record the validation loss after ``step`` steps; returns True when training should stop."""
        self.val_curve.append([step, loss])
        if loss < self.best_loss - 1e-7:
            self.best_loss, self.best_params, self.best_step, self.stale = loss, params.detach().clone(), step, 0
        else:
            self.stale += 1
            self.stopped = self.stale >= self.cfg.patience
        return self.stopped

    def final(self, params: torch.Tensor, steps: int, seconds: float, validated: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """(parameters to keep, training info): the best validated ones, else the last."""
        chosen = self.best_params if validated and self.val_curve else params.detach().clone()
        info = {
            "steps": steps,
            "best_step": self.best_step if validated and self.val_curve else steps,
            "val_loss": self.best_loss if validated and self.val_curve else None,
            "train_seconds": seconds,
            "loss_curve": self.curve,
            "val_curve": self.val_curve,
        }
        return chosen, info

    def state(self) -> dict[str, Any]:
        """JSON-ready state (the best parameters travel separately as an array)."""
        return {"best_loss": self.best_loss if math.isfinite(self.best_loss) else None, "best_step": self.best_step, "stale": self.stale, "curve": self.curve, "val_curve": self.val_curve, "stopped": self.stopped}

    def load_state(self, state: dict[str, Any], best_params: torch.Tensor) -> None:
        self.best_loss = math.inf if state["best_loss"] is None else float(state["best_loss"])
        self.best_step, self.stale, self.stopped = int(state["best_step"]), int(state["stale"]), bool(state["stopped"])
        self.curve, self.val_curve = [list(x) for x in state["curve"]], [list(x) for x in state["val_curve"]]
        self.best_params = best_params.detach().clone()


def _fit(sketch: SparseSketch, batches: Iterable[torch.Tensor], val: torch.Tensor | None, cfg: LearnConfig, weight) -> tuple[SparseSketch, dict[str, Any]]:
    device = resolve_device(cfg.device)
    w = None if weight is None else torch.as_tensor(weight, dtype=cfg.torch_dtype, device=device)
    stepper = Stepper(sketch.values[sketch.trainable], cfg)
    progress = Progress(cfg, stepper.params)
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    from tqdm.auto import tqdm  # only the driver reports progress

    bar = tqdm(total=cfg.steps, disable=not show, file=sys.stderr, desc=f"learn {cfg.kind} k={cfg.k} m={sketch.m}")
    t0 = time.perf_counter()
    it = iter(batches)
    if val is not None and cfg.data_dependent:
        progress.record_val(0, _mean_loss(sketch, sketch.values, val, cfg, w, device), stepper.params)
    for step in range(1, cfg.steps + 1):
        if cfg.time_budget is not None and time.perf_counter() - t0 > cfg.time_budget:
            break
        A = next(it, None)
        if A is None:
            break
        loss_sum, grad_sum, count = batch_gradient(sketch, stepper.params, A.to(device), cfg, w)
        stepper.apply(grad_sum / count)
        progress.record_step(step, loss_sum / count)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / count:.4g}")
        if val is not None and progress.due_validation(step):
            values = sketch.values.masked_scatter(sketch.trainable, stepper.params.detach())
            if progress.record_val(step, _mean_loss(sketch, values, val, cfg, w, device), stepper.params):
                break
    bar.close()
    params, info = progress.final(stepper.params, stepper.step_count, time.perf_counter() - t0, val is not None)
    return sketch.with_values(sketch.values.masked_scatter(sketch.trainable, params)), info


def finish_sketch(sketch: SparseSketch, cfg: LearnConfig, n: int, d: int, info: dict[str, Any]) -> SparseSketch | DenseSketch:
    """Turn the fitted sketch into the final one: append the random half for mixed-S, record config and training.

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


def fit_config(cfg: LearnConfig) -> LearnConfig:
    """The configuration the optimiser actually runs: mixed-S learns its learned half alone."""
    if cfg.kind == "mixed-s":
        return replace(cfg, kind="learned", m=cfg.m_learned, k=min(cfg.k, cfg.m_learned))
    return cfg


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
    **options,
) -> SparseSketch:
    """Learn a sparse sketch S (m, n) for rank-k SCW on matrices like ``train``.

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

    if isinstance(train, (np.ndarray, torch.Tensor)):
        data = _normalize_batch(as_batch(train, "train").to(cfg.torch_dtype))
        n, d = data.shape[-2:]
        if val is None:
            tr, held = _split(data, cfg)
        else:  # an explicit validation set: every training matrix trains
            tr, held = data, _normalize_batch(as_batch(val, "val").to(cfg.torch_dtype))
        batches_factory = lambda: _batches_from_tensor(tr, cfg)  # noqa: E731
    else:
        it = iter(train)
        first = next(it, None)
        if first is None:
            raise DataError("the training data is empty")
        n, d = as_batch(first, "training batch").shape[-2:]
        held = None if val is None else _normalize_batch(as_batch(val, "val").to(cfg.torch_dtype))
        # A one-shot iterator (a generator) gives one epoch: put back the batch
        # that was read to learn the shape. Re-iterables are re-read each epoch.
        source = itertools.chain([first], it) if it is train else train
        batches_factory = lambda: _batches_from_iterable(source, n, cfg.torch_dtype)  # noqa: E731
    if held is not None and tuple(held.shape[-2:]) != (n, d):
        raise DataError(f"validation matrices are {tuple(held.shape[-2:])}, training matrices ({n}, {d})")
    check_rank(cfg.k, n=n, d=d)
    check_loss(cfg.loss, weight, n, d)

    init_data = None
    if cfg.data_dependent:
        # In-memory data is used whole; a stream lends its first batches (up to 64 matrices).
        if isinstance(train, (np.ndarray, torch.Tensor)):
            init_data = tr
        elif it is train:
            raise UsageError(f"a sketch started by {cfg.start!r} reads the data twice: pass an array or a re-iterable source, not a one-shot iterator")
        else:
            init_data = _first_matrices(batches_factory(), 64)
    if cfg.refit and not isinstance(train, (np.ndarray, torch.Tensor)):
        raise UsageError("refit=True trains again on all the data: pass the training matrices as an array")
    if cfg.refit and held is None:
        raise UsageError("refit=True needs validation data to choose the number of steps (val_fraction > 0 or val=...)")
    fit = fit_config(cfg)
    fitted, info = _fit(initial_sketch(n, fit, init_data), batches_factory(), held, fit, weight)
    if cfg.refit:
        # A split of ``train`` refits on it whole, in its (time) order; an explicit ``val`` counts as the newest data.
        fitted, info = _refit(data if val is None else torch.cat([tr, held]), fit, info, weight)
    return finish_sketch(fitted, cfg, n, d, info)


def _refit(data: torch.Tensor, fit: "LearnConfig", selection: dict[str, Any], weight) -> tuple[SparseSketch, dict[str, Any]]:
    """Train again on every matrix (training and validation) for the step count that validation chose.

    The validation set only picks t* = the best step; the final sketch then
    sees all the data, the most recent matrices included, from a start
    recomputed on all of it. t* = 0 returns that start. The learning-rate
    schedule spans the t* steps, as it would in a run of that length.
    """
    steps = int(selection["best_step"])
    fit = replace(fit, steps=steps)
    start = initial_sketch(data.shape[-2], fit, data if fit.data_dependent else None)
    fitted, info = _fit(start, _batches_from_tensor(data, fit), None, fit, weight)
    return fitted, {**info, "refit": {"steps": steps, "matrices": int(data.shape[0])}, "selection": selection}
