"""The training core shared by every driver: batch order, gradient and loss sums, the optimiser, the record.

The objective over matrices A_i (each scaled to sigma_1 = 1) is

    L(S) = mean_i loss(A_i - SCW(S, A_i, k)),

minimised over the trainable values p of S (:meth:`SparseSketch.params`).
Training is data-parallel by construction: W :class:`Worker` objects each
hold a contiguous share of the training matrices and return loss and
gradient *sums* over their minibatch; one :class:`Server` forms

    g_t = sum_w grad_sum_w / sum_w |B_{w,t}|

(the mean over the union of the batches, exactly what one process would
take on it) and steps the optimiser. ``learn`` runs them in this process
with W = 1; the Ray retrain runs the same classes as actors. A worker's
minibatch at step t is a pure function of (seed, rank, t)
(:class:`Schedule`), so a replaced worker or a resumed server replays
exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..errors import DataError, UsageError
from ..numerics.checks import as_batch, resolve_device
from ..numerics.greedy import GreedyShare
from ..numerics.linalg import normalize_batch
from ..numerics.losses import sketch_loss
from ..numerics.scoring import sparse_baseline
from ..numerics.scw import prepare, sketch_errors
from ..numerics.sketch import SparseSketch, sketch_from_arrays
from ..numerics.spectral import SpectralShare
from .config import LearnConfig


def local_batch_sizes(batch_size: int, workers: int) -> list[int]:
    """Split the global batch over the workers: sizes differ by at most 1, larger ones first."""
    return [batch_size // workers + (1 if w < batch_size % workers else 0) for w in range(workers)]


def rank_seed(seed: int, rank: int) -> int:
    return seed + 1_000_003 * rank


class Schedule:
    """Minibatch indices of one worker as a pure function of the step.

    Epoch e is the e-th seeded permutation of the worker's N rows, cut into
    floor(N / b) batches of b rows (the remainder is dropped); step t
    (1-based) takes batch (t - 1) mod floor(N / b) of epoch (t - 1) // floor(N / b).
    """

    def __init__(self, frames: int, batch: int, seed: int):
        if frames < 1 or batch < 1:
            raise UsageError("a schedule needs at least one frame and a batch of at least one")
        self.frames, self.batch, self.seed = frames, min(batch, frames), seed
        self.per_epoch = frames // self.batch
        self._gen = torch.Generator().manual_seed(seed)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, j = divmod(step - 1, self.per_epoch)
        if epoch < self._epoch:  # going back (a resume): replay the generator from the start
            self._gen, self._epoch = torch.Generator().manual_seed(self.seed), -1
        while self._epoch < epoch:
            self._perm = torch.randperm(self.frames, generator=self._gen)
            self._epoch += 1
        return self._perm[j * self.batch : (j + 1) * self.batch]


def holdout(count: int, val_fraction: float, val_split: str | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices into ``count`` matrices in time order, both ascending.

    ``val_split="last"`` holds out the newest ``val_fraction`` (time-ordered
    data: validate on the future, as deployment will); otherwise a random
    subset seeded by ``seed``. Training keeps time order either way, which recency
    weights (the spectral start) need.
    """
    n_val = int(round(count * val_fraction))
    everything = torch.arange(count)
    if count < 2 or n_val == 0:
        return everything, everything[:0]
    if val_split == "last":
        return everything[:-n_val], everything[-n_val:]
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed + 7))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def batch_gradient(sketch: SparseSketch, params: torch.Tensor, A: torch.Tensor, cfg: LearnConfig, weight: torch.Tensor | None = None) -> tuple[float, torch.Tensor, int]:
    """Loss sum, gradient sum (p,) and count over one batch of normalised matrices A (b, n, d).

    Sums, not means, let a server average batches of different sizes exactly.
    """
    p = params.detach().to(A.device, A.dtype).requires_grad_(True)
    per_matrix = sketch_loss(sketch, A, cfg.k, cfg.loss, sketch.values_from(p), cfg.route, weight, cfg.power_iters)  # (b,)
    total = per_matrix.sum()
    (grad,) = torch.autograd.grad(total, p)
    return float(total.detach()), grad.detach().to("cpu", cfg.torch_dtype), int(A.shape[0])


def loss_sum(sketch: SparseSketch, params: torch.Tensor, data: torch.Tensor, cfg: LearnConfig, weight: torch.Tensor | None = None) -> float:
    """The training loss summed over ``data`` (V, n, d) at ``params``, in batches: the one validation loss."""
    total = 0.0
    with torch.no_grad():
        values = sketch.values_from(params.to(data.device, data.dtype))
        for i in range(0, data.shape[0], cfg.batch_size):
            total += float(sketch_loss(sketch, data[i : i + cfg.batch_size], cfg.k, cfg.loss, values, cfg.route, weight, cfg.power_iters).sum())
    return total


class Stepper:
    """Optimiser state for the trainable values; one :meth:`apply` is one step on the schedule of ``cfg``."""

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


class Progress:
    """The training record: loss curves, the best validated parameters, early stopping, the time budget.

    A validation loss counts as better if it beats the best by 1e-7;
    ``cfg.patience`` evaluations without improvement stop training.
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

    def record_val(self, step: int, loss: float, params: torch.Tensor) -> bool:
        """Record the validation loss after ``step`` steps; returns True when training should stop."""
        if self.val_curve and self.val_curve[-1][0] >= step:
            return self.stopped  # already recorded (a replay after a restart)
        self.val_curve.append([step, loss])
        if loss < self.best_loss - 1e-7:
            self.best_loss, self.best_params, self.best_step, self.stale = loss, params.detach().clone(), step, 0
        else:
            self.stale += 1
            self.stopped = self.stale >= self.cfg.patience
        return self.stopped

    def final(self, params: torch.Tensor, steps: int, seconds: float, validated: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """(parameters to keep, training info): the best validated ones, else the last."""
        use_best = validated and bool(self.val_curve)
        info = {
            "steps": steps,
            "best_step": self.best_step if use_best else steps,
            "val_loss": self.best_loss if use_best else None,
            "train_seconds": seconds,
            "loss_curve": self.curve,
            "val_curve": self.val_curve,
        }
        return (self.best_params if use_best else params.detach().clone()), info

    def state(self) -> dict[str, Any]:
        """JSON-ready state (the best parameters travel separately as an array)."""
        return {"best_loss": self.best_loss if math.isfinite(self.best_loss) else None, "best_step": self.best_step, "stale": self.stale, "curve": self.curve, "val_curve": self.val_curve, "stopped": self.stopped}

    def load_state(self, state: dict[str, Any], best_params: torch.Tensor) -> None:
        self.best_loss = math.inf if state["best_loss"] is None else float(state["best_loss"])
        self.best_step, self.stale, self.stopped = int(state["best_step"]), int(state["stale"]), bool(state["stopped"])
        self.curve, self.val_curve = [list(x) for x in state["curve"]], [list(x) for x in state["val_curve"]]
        self.best_params = best_params.detach().clone()


def normalized(A, name: str, cfg: LearnConfig) -> torch.Tensor:
    """Raw matrices (N, n, d) as ``cfg``'s dtype, each scaled to sigma_1 = 1 (estimated)."""
    return normalize_batch(as_batch(A, name).to(cfg.torch_dtype))


def stream_batches(source: Iterable, n: int | None, cfg: LearnConfig) -> Iterator[torch.Tensor]:
    """Re-iterate ``source`` epoch after epoch, normalising each batch; stops if an epoch is empty."""
    while True:
        empty = True
        for batch in source:
            A = as_batch(batch, "training batch")
            if n is not None and A.shape[-2] != n:
                raise DataError(f"training batch has n={A.shape[-2]} rows, expected {n}")
            empty = False
            yield normalize_batch(A.to(cfg.torch_dtype))
        if empty:
            return


class Worker:
    """One share of the training (and validation) matrices, normalised, on the worker's device.

    Args:
        train: (N_w, n, d) normalised training matrices, or None when batches
            come from ``batches`` (an iterable source read epoch by epoch).
        val: (V_w, n, d) normalised validation matrices, or None.
        rows: time positions of the ``train`` rows among all training rows (for recency weights).
        cfg: the fit configuration; ``batch`` the local batch size; ``rank`` seeds the schedule.
    """

    def __init__(self, train, val, rows, cfg: LearnConfig, batch: int, rank: int = 0, weight=None, batches: Iterator[torch.Tensor] | None = None):
        self.rank, self.cfg = rank, cfg
        self.device = resolve_device(cfg.device)
        self.train = None if train is None else train.to(self.device)
        self.val = None if val is None or not val.numel() else val.to(self.device)
        self.rows = torch.as_tensor(rows, dtype=torch.long) if rows is not None else None
        self.weight = None if weight is None else torch.as_tensor(np.asarray(weight), dtype=cfg.torch_dtype, device=self.device)
        self.batches = batches
        self.schedule = Schedule(self.train.shape[0], batch, rank_seed(cfg.seed, rank)) if self.train is not None else None
        self.sketch: SparseSketch | None = None
        self._spectral = self._greedy = None

    def ready(self) -> dict[str, Any]:
        frames = 0 if self.train is None else int(self.train.shape[0])
        return {"rank": self.rank, "frames": frames, "val_frames": 0 if self.val is None else int(self.val.shape[0]), "device": str(self.device), "pid": os.getpid()}

    def set_sketch(self, arrays: dict[str, Any]) -> int:
        """Take the sketch's structure (positions, trainable mask, fixed values); its trainable values arrive with each call."""
        self.sketch = sketch_from_arrays("sparse", int(arrays["m"]), int(arrays["n"]), arrays)
        return int(self.sketch.trainable.sum())

    def gradient(self, step: int, params: np.ndarray) -> dict[str, Any]:
        """Loss and gradient sums of this worker's batch for ``step`` at ``params``; {"exhausted": True} when a one-pass source ran out."""
        t0 = time.perf_counter()
        if self.batches is not None:
            A = next(self.batches, None)
            if A is None:
                return {"rank": self.rank, "step": step, "exhausted": True}
            A = A.to(self.device)
        else:
            A = self.train[self.schedule.indices(step).to(self.train.device)]  # (b, n, d)
        loss, grad, count = batch_gradient(self.sketch, torch.from_numpy(np.array(params)), A, self.cfg, self.weight)
        return {"rank": self.rank, "step": step, "loss_sum": loss, "grad_sum": grad.numpy(), "count": count, "seconds": time.perf_counter() - t0}

    def validation(self, params: np.ndarray) -> dict[str, Any]:
        """The training loss summed over this worker's validation rows at ``params``."""
        if self.val is None:
            return {"loss_sum": 0.0, "count": 0}
        return {"loss_sum": loss_sum(self.sketch, torch.from_numpy(np.array(params)), self.val, self.cfg, self.weight), "count": int(self.val.shape[0])}

    def val_errors(self, arrays: dict[str, Any], k: int) -> dict[str, Any]:
        """Sums over the validation rows of the SCW errors of a finished sketch, of the sparse random baseline, and of the optimum."""
        if self.val is None:
            return {"sketch": 0.0, "sparse_random": 0.0, "optimal": 0.0, "count": 0}
        final = sketch_from_arrays(arrays["type"], int(arrays["m"]), int(arrays["n"]), arrays)
        prep = prepare(self.val.cpu())
        return {
            "sketch": float(sketch_errors(final, prep.matrices, k).sum()),
            "sparse_random": float(sketch_errors(sparse_baseline(final.n, final.m), prep.matrices, k).sum()),
            "optimal": float(prep.optimal_errors(k).sum()),
            "count": int(self.val.shape[0]),
        }

    # The data-dependent starts: this share's part of each sum (numerics.spectral, numerics.greedy).

    def _spectral_share(self) -> SpectralShare:
        if self._spectral is None:
            self._spectral = SpectralShare(self.train, self.rows, self.cfg.batch_size)
        return self._spectral

    def _greedy_share(self) -> GreedyShare:
        if self._greedy is None:
            self._greedy = GreedyShare(self.train.cpu(), self.rows)
        return self._greedy

    def spectral_gram(self, power, half_life, total):
        return self._spectral_share().gram(power, half_life, total)

    def spectral_fold_grams(self, power, plan):
        return {key: g.cpu() for key, g in self._spectral_share().fold_grams(power, plan).items()}

    def spectral_fold_errors(self, candidates, plan):
        return self._spectral_share().fold_errors({key: torch.as_tensor(S) for key, S in candidates.items()}, plan)

    def greedy_row_norms(self, pick):
        return self._greedy_share().row_norms(torch.as_tensor(pick))

    def greedy_begin(self, pick, first, signs, grid, k):
        return self._greedy_share().begin(torch.as_tensor(pick), torch.as_tensor(first), torch.as_tensor(signs), grid, k)

    def greedy_step(self, commit, column):
        return self._greedy_share().step(commit, column)
