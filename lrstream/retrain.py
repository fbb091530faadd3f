"""Data-parallel retraining: W gradient workers and one parameter server.

The math is :mod:`lrstream.learn`'s, unchanged. At step t every worker w
computes, at the current parameters theta_{t-1}, the loss and gradient sums
over its local minibatch B_{w,t}; the parameter server forms

    g_t = sum_w grad_sum_w / sum_w |B_{w,t}|        (the mean over the union of the batches)

and takes one optimiser step (Adam by default). Because a step's loss is a
sum of per-matrix terms, g_t is exactly the gradient a single process takes
on the union of the batches, so W workers reproduce ``learn`` fed the same
batches, up to floating-point summation order.

Data plane: the training frames (the selected hours, in order) are cut into
W contiguous, nearly equal shares of rows; worker w reads only the Arrow
parts holding its share. Its minibatch at step t is a pure function of
(seed, w, t) (:class:`Schedule`), so a replaced worker, or a parameter server
resumed from a checkpoint, replays exactly the batches it would have seen:
fault recovery does not change the result. With W = 1 the schedule is the
one ``learn`` uses on an in-memory tensor.

Roles are plain classes (:class:`GradientWorker`, :class:`ParameterServer`);
:mod:`lrstream.raylib` makes them Ray actors in one place, and
:class:`RetrainLoop` drives them through a small executor so that tests can
run everything in-process, one step at a time. Errors cross actor
boundaries as data (``{"ok": False, "exit_code": ..., "error": ...}``).
"""

from __future__ import annotations

import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ._checks import check_rank, resolve_device
from .checkpoint import load_latest_checkpoint, save_checkpoint
from .errors import EXIT_INTERNAL, DataError, LrstreamError, NothingToDoError, UsageError
from .inits import recency_weights, spectral_gram
from .learn import LearnConfig, Progress, Stepper, _normalize_batch, batch_gradient, finish_sketch, fit_config, initial_sketch, structure_config, tensor_start
from .losses import sketch_loss
from .reader import hour_info, read_rows, select_hours
from .scw import prepare, sketch_errors
from .sketch import DenseSketch, SparseSketch, sparse_random
from .sketch_store import publish_version, version_url
from .storage import check_stream, url_to_fs

MODES = ("sync", "async")


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class RetrainConfig:
    """How a retrain runs; the optimisation itself is ``learn`` (a :class:`LearnConfig`).

    ``learn.batch_size`` is the global batch per step, split over the workers
    (sync mode). In async mode each worker's local batch is one step and a
    gradient computed more than ``staleness`` versions ago is dropped.
    """

    learn: LearnConfig
    workers: int = 2
    mode: str = "sync"
    staleness: int = 2
    checkpoint_every: int = 25
    gray: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None
    startup_timeout: float = 300.0
    max_worker_failures: int = 8

    def validate(self) -> "RetrainConfig":
        # The driver may have no GPU while its workers do: check the device where it is used.
        replace(self.learn, device="cpu").validate()
        if self.learn.device not in ("cpu", "cuda"):
            raise UsageError(f"device must be cpu or cuda, got {self.learn.device!r}")
        if self.learn.positions:
            # The greedy search is sequential over rows of A; a dense tensor start is a sum over matrices, so workers share it out.
            raise UsageError("retrain starts sparse sketches from a CountSketch; greedy positions (positions=True) are available through lrstream.learn")
        if self.learn.start == "spectral" and len(self.learn.powers) * len(self.learn.half_lives) > 1:
            # Choosing among candidates needs every fold's Gram per candidate; the workers send one Gram sum.
            raise UsageError("retrain takes one power and one half-life for init='spectral' (e.g. --power 2 --half-life 0.25); choosing among several by forward validation is available through lrstream.learn")
        if self.learn.refit:
            raise UsageError("retrain validates on the newest hour and keeps the best step; refit=True is available through lrstream.learn")
        if self.learn.loss == "wfro":
            raise UsageError("retrain supports the fro and v losses (wfro needs a weight matrix; use lrstream.learn)")
        if self.workers < 1:
            raise UsageError(f"workers must be >= 1, got {self.workers}")
        if self.mode not in MODES:
            raise UsageError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "sync" and self.learn.batch_size < self.workers:
            raise UsageError(f"batch size {self.learn.batch_size} is smaller than the {self.workers} workers it is split over")
        if self.staleness < 0 or self.checkpoint_every < 1 or self.max_worker_failures < 0:
            raise UsageError("staleness and max_worker_failures must be >= 0, checkpoint_every >= 1")
        if self.cpus_per_worker <= 0 or (self.gpus_per_worker is not None and self.gpus_per_worker < 0):
            raise UsageError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
        return self


# ------------------------------------------------------------------ data plane


@dataclass(frozen=True)
class Segment:
    """Rows [lo, hi) of one hour."""

    hour: str
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class DataPlan:
    """Which rows train and validate, and which worker reads which."""

    stream: str
    train_hours: tuple[str, ...]
    val_hours: tuple[str, ...]
    validation: str  # "hour", "slice" or "none"
    frame_shape: tuple[int, ...]
    n: int
    d: int
    train: tuple[tuple[Segment, ...], ...]  # per worker
    val: tuple[tuple[Segment, ...], ...]  # per worker

    @property
    def train_frames(self) -> int:
        return sum(s.rows for share in self.train for s in share)

    @property
    def val_frames(self) -> int:
        return sum(s.rows for share in self.val for s in share)

    def train_positions(self) -> list[np.ndarray]:
        """Each worker's training rows as indices into all training rows in time order (shares are contiguous cuts of it)."""
        sizes = [sum(s.rows for s in share) for share in self.train]
        starts = np.cumsum([0, *sizes])
        return [np.arange(starts[r], starts[r] + sizes[r]) for r in range(len(sizes))]

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "train_hours": list(self.train_hours),
            "val_hours": list(self.val_hours),
            "validation": self.validation,
            "frame_shape": list(self.frame_shape),
            "train_frames": self.train_frames,
            "val_frames": self.val_frames,
        }


def split_rows(segments: Sequence[Segment], parts: int) -> tuple[tuple[Segment, ...], ...]:
    """Cut the concatenated rows of ``segments`` into ``parts`` contiguous shares of sizes differing by at most 1."""
    total = sum(s.rows for s in segments)
    bounds = [total * p // parts for p in range(parts + 1)]
    shares = []
    for p in range(parts):
        lo, hi, offset, share = bounds[p], bounds[p + 1], 0, []
        for s in segments:
            a, b = max(lo - offset, 0), min(hi - offset, s.rows)
            if a < b:
                share.append(Segment(s.hour, s.lo + a, s.lo + b))
            offset += s.rows
        shares.append(tuple(share))
    return tuple(shares)


def matrix_shape(frame_shape: Sequence[int], gray: bool) -> tuple[int, int]:
    """(n, d) of the matrices made from frames of ``frame_shape`` (H, W[, C])."""
    H, W = int(frame_shape[0]), int(frame_shape[1])
    C = int(frame_shape[2]) if len(frame_shape) > 2 else 1
    return (H, W) if gray else (C * H, W)


def plan_data(
    root: str,
    stream: str,
    workers: int,
    *,
    hours: Sequence[str] | None = None,
    last: int | None = None,
    start: str | None = None,
    end: str | None = None,
    val_fraction: float = 0.1,
    gray: bool = False,
) -> DataPlan:
    """Select the training hours and hold out validation data.

    With two or more hours the newest is held out whole (early stopping then
    favours the sketch that generalises forward in time, as evaluation will
    ask of it); with a single hour its last ``val_fraction`` of rows is.
    ``val_fraction = 0`` trains on everything without validation.
    """
    chosen = select_hours(root, stream, hours=hours, last=last, start=start, end=end)
    infos = [hour_info(root, stream, h) for h in chosen]
    shape = infos[0].frame_shape
    for info in infos[1:]:
        if info.frame_shape != shape:
            raise DataError(f"hour {info.hour} of stream {stream} has frames of shape {tuple(info.frame_shape)}, hour {infos[0].hour} {tuple(shape)}: one sketch needs one frame shape")
    rows = {i.hour: i.rows for i in infos}
    if val_fraction <= 0:
        train_segs, val_segs, validation = [Segment(h, 0, rows[h]) for h in chosen], [], "none"
    elif len(chosen) >= 2:
        train_segs, val_segs, validation = [Segment(h, 0, rows[h]) for h in chosen[:-1]], [Segment(chosen[-1], 0, rows[chosen[-1]])], "hour"
    else:
        h, total = chosen[0], rows[chosen[0]]
        n_val = int(round(total * val_fraction))
        if total < 2 or n_val == 0:
            train_segs, val_segs, validation = [Segment(h, 0, total)], [], "none"
        else:
            train_segs, val_segs, validation = [Segment(h, 0, total - n_val)], [Segment(h, total - n_val, total)], "slice"
    n_train = sum(s.rows for s in train_segs)
    if n_train < workers:
        raise DataError(f"too few frames: {n_train} training frame(s) in {', '.join(s.hour for s in train_segs)} cannot feed {workers} worker(s)")
    n, d = matrix_shape(shape, gray)
    val_share = split_rows(val_segs, workers) if val_segs else tuple(() for _ in range(workers))
    return DataPlan(
        stream=stream,
        train_hours=tuple(s.hour for s in train_segs),
        val_hours=tuple(s.hour for s in val_segs if s.hour not in {t.hour for t in train_segs}),
        validation=validation,
        frame_shape=tuple(shape),
        n=n,
        d=d,
        train=split_rows(train_segs, workers),
        val=val_share,
    )


def local_batch_sizes(batch_size: int, workers: int) -> list[int]:
    """Split the global batch over the workers: sizes differ by at most 1, larger ones first."""
    return [batch_size // workers + (1 if w < batch_size % workers else 0) for w in range(workers)]


def rank_seed(seed: int, rank: int) -> int:
    return seed + 1_000_003 * rank


class Schedule:
    """Minibatch indices of one worker as a pure function of the step.

    Epoch e is the e-th seeded permutation of the worker's N rows, cut into
    floor(N / b) batches of b rows (the remainder is dropped, as in
    ``learn``); step t (1-based) takes batch (t - 1) mod floor(N / b) of
    epoch (t - 1) // floor(N / b). For rank 0 this is exactly ``learn``'s
    order on an in-memory tensor.
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


def global_batches(shares: Sequence[torch.Tensor], cfg: LearnConfig, steps: int) -> list[torch.Tensor]:
    """The batches, in order, of a single process that reproduces sync training on ``shares``.

    Step t's batch is the workers' local batches concatenated in rank order:
    feeding these to ``learn`` gives the data-parallel result.
    """
    sizes = local_batch_sizes(cfg.batch_size, len(shares))
    schedules = [Schedule(s.shape[0], b, rank_seed(cfg.seed, r)) for r, (s, b) in enumerate(zip(shares, sizes))]
    return [torch.cat([s[sch.indices(t)] for s, sch in zip(shares, schedules)]) for t in range(1, steps + 1)]


def load_segments(root: str, stream: str, segments: Sequence[Segment], gray: bool) -> torch.Tensor:
    """The raw float32 matrices (N, n, d) of some segments, in order."""
    if not segments:
        return torch.zeros(0)
    return torch.cat([read_rows(root, stream, s.hour, s.lo, s.hi, gray) for s in segments])


# ------------------------------------------------------------------ roles


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, LrstreamError):
        return {"ok": False, "exit_code": exc.exit_code, "error": str(exc), "type": exc.__class__.__name__}
    return {"ok": False, "exit_code": EXIT_INTERNAL, "error": f"{exc.__class__.__name__}: {exc}", "type": "internal"}


def raise_failure(result: dict[str, Any]) -> None:
    """Turn an error that crossed an actor boundary as data back into the typed exception."""
    if result.get("ok", True):
        return
    cls = {c.__name__: c for c in (UsageError, DataError, NothingToDoError)}.get(result.get("type"), LrstreamError)
    exc = cls(result["error"])
    if cls is LrstreamError:
        exc.exit_code = int(result.get("exit_code", EXIT_INTERNAL))
    raise exc


def _sketch_arrays(sketch: SparseSketch | DenseSketch) -> dict[str, Any]:
    """A sketch as plain arrays for a worker; a dense S travels as its one-row blocks, the form workers compute with."""
    if isinstance(sketch, DenseSketch):
        sketch = sketch.as_blocks()
    return {"positions": sketch.positions.numpy(), "values": sketch.values.numpy(), "trainable": sketch.trainable.numpy(), "m": sketch.m}


class GradientWorker:
    """Holds one share of the training (and validation) rows; computes gradient and loss sums.

    The share is read once, through the shard reader, and kept normalised to
    sigma_1 = 1 in memory; a replacement worker re-reads the same rows.
    """

    def __init__(self, root: str, stream: str, rank: int, train: Sequence[Segment], val: Sequence[Segment], cfg: LearnConfig, batch: int, gray: bool = False):
        self.rank, self.cfg, self.error = rank, cfg, None
        t0 = time.perf_counter()
        try:
            self.device = resolve_device(cfg.device)
            self.train = _normalize_batch(load_segments(root, stream, train, gray).to(cfg.torch_dtype)).to(self.device)  # (N_w, n, d)
            val_raw = load_segments(root, stream, val, gray).to(cfg.torch_dtype)
            self.val = _normalize_batch(val_raw).to(self.device) if val_raw.numel() else None  # (V_w, n, d)
            self.sketch = initial_sketch(self.train.shape[-2], structure_config(cfg))  # values arrive as parameters
            self.schedule = Schedule(self.train.shape[0], batch, rank_seed(cfg.seed, rank))
        except Exception as exc:  # reported by ready(), so the driver sees it as data
            self.error = _failure(exc)
        self.load_seconds = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        if self.error is not None:
            return self.error
        return {"ok": True, "rank": self.rank, "frames": int(self.train.shape[0]), "val_frames": 0 if self.val is None else int(self.val.shape[0]), "device": str(self.device), "load_seconds": self.load_seconds, "pid": os.getpid()}

    def gram(self, power: float = 2.0, weights: np.ndarray | None = None) -> dict[str, Any]:
        """sum_i w_i (A_i A_i^T)^{power/2} (n, n) over this worker's training rows, float64: its share of a tensor or spectral start."""
        if self.error is not None:
            return self.error
        try:
            return {"ok": True, "gram": spectral_gram(self.train, power, None if weights is None else torch.from_numpy(np.asarray(weights))).cpu().numpy()}
        except Exception as exc:
            return _failure(exc)

    def gradient(self, step: int, params: np.ndarray) -> dict[str, Any]:
        """Loss and gradient sums of this worker's batch for ``step`` at ``params``."""
        if self.error is not None:
            return self.error
        try:
            t0 = time.perf_counter()
            A = self.train[self.schedule.indices(step).to(self.train.device)]  # (b, n, d)
            loss_sum, grad_sum, count = batch_gradient(self.sketch, torch.from_numpy(np.asarray(params)), A, self.cfg)
            return {"ok": True, "rank": self.rank, "step": step, "loss_sum": loss_sum, "grad_sum": grad_sum.numpy(), "count": count, "seconds": time.perf_counter() - t0}
        except Exception as exc:
            return _failure(exc)

    def _values(self, params: np.ndarray) -> torch.Tensor:
        p = torch.from_numpy(np.asarray(params)).to(self.sketch.values.dtype)
        return self.sketch.values.masked_scatter(self.sketch.trainable, p)  # (c, n)

    def validation(self, params: np.ndarray) -> dict[str, Any]:
        """Sum of the training loss over this worker's validation rows at ``params``."""
        if self.error is not None:
            return self.error
        if self.val is None:
            return {"ok": True, "loss_sum": 0.0, "count": 0}
        try:
            values, total, cfg = self._values(params), 0.0, self.cfg
            with torch.no_grad():
                for i in range(0, self.val.shape[0], cfg.batch_size):
                    total += float(sketch_loss(self.sketch, self.val[i : i + cfg.batch_size], cfg.k, cfg.loss, values, cfg.route, None, cfg.power_iters).sum())
            return {"ok": True, "loss_sum": total, "count": int(self.val.shape[0])}
        except Exception as exc:
            return _failure(exc)

    def val_errors(self, sketch: dict[str, Any], k: int, baseline_seed: int) -> dict[str, Any]:
        """Sums over this worker's validation rows of the SCW errors of ``sketch``, of a sparse random sketch of the same m, and of the optimum."""
        if self.error is not None:
            return self.error
        if self.val is None:
            return {"ok": True, "sketch": 0.0, "sparse_random": 0.0, "optimal": 0.0, "count": 0}
        try:
            final = SparseSketch(torch.as_tensor(sketch["positions"]), torch.as_tensor(sketch["values"]), torch.as_tensor(sketch["trainable"]), int(sketch["m"]))
            baseline = sparse_random(final.n, final.m, seed=baseline_seed)
            prep = prepare(self.val.cpu())
            return {
                "ok": True,
                "sketch": float(sketch_errors(final, prep.matrices, k).sum()),
                "sparse_random": float(sketch_errors(baseline, prep.matrices, k).sum()),
                "optimal": float(prep.optimal_errors(k).sum()),
                "count": int(self.val.shape[0]),
            }
        except Exception as exc:
            return _failure(exc)


class ParameterServer:
    """Owns the parameters, the optimiser state and the training record; checkpoints them.

    ``version`` is the number of optimiser steps taken. Constructed again
    after a crash (Ray's ``max_restarts``) with the same arguments, it resumes
    from the newest checkpoint under ``checkpoint_url``.
    """

    def __init__(self, cfg: LearnConfig, n: int, checkpoint_url: str | None = None, checkpoint_every: int = 25, staleness: int = 2):
        self.cfg, self.checkpoint_url, self.checkpoint_every, self.staleness = cfg, checkpoint_url, checkpoint_every, staleness
        sketch = initial_sketch(n, structure_config(cfg))  # a data-dependent start comes later, through seed_start
        self.stepper = Stepper(sketch.values[sketch.trainable], cfg)
        self.progress = Progress(cfg, self.stepper.params)
        self.busy_seconds = 0.0
        self.critical_seconds = 0.0
        self.dropped = 0
        self.restored_from: int | None = None
        if checkpoint_url is not None:
            found = load_latest_checkpoint(checkpoint_url)
            if found is not None:
                self._restore(*found)

    # -- state

    @property
    def version(self) -> int:
        return self.stepper.step_count

    def params(self) -> np.ndarray:
        return self.stepper.params.detach().numpy().copy()

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "stopped": self.progress.stopped, "restored_from": self.restored_from, "busy_seconds": self.busy_seconds, "critical_seconds": self.critical_seconds, "dropped": self.dropped, "pid": os.getpid()}

    # -- steps

    def _step(self, grad: torch.Tensor, loss: float) -> None:
        self.stepper.apply(grad)
        self.progress.record_step(self.version, loss)
        if self.checkpoint_url is not None and self.version % self.checkpoint_every == 0:
            self.checkpoint()

    def apply(self, *results: dict[str, Any]) -> dict[str, Any]:
        """Sync step: average the workers' results for step version+1 (weighted by batch size) and step."""
        t0 = time.perf_counter()
        for r in results:
            if not r.get("ok"):
                return r
        if any(r["step"] != self.version + 1 for r in results):
            # Gradients for another step (e.g. computed before this server resumed from a checkpoint).
            return {"ok": True, "applied": False, "version": self.version}
        count = sum(r["count"] for r in results)
        self.critical_seconds += max(r.get("seconds", 0.0) for r in results)  # the slowest worker bounds the step
        grad = torch.from_numpy(np.sum([r["grad_sum"] for r in results], axis=0)) / count  # (p,)
        self._step(grad, sum(r["loss_sum"] for r in results) / count)
        self.busy_seconds += time.perf_counter() - t0
        return {"ok": True, "applied": True, "version": self.version, "count": count}

    def push(self, result: dict[str, Any], read_version: int) -> dict[str, Any]:
        """Async step: apply one worker's gradient unless it is more than ``staleness`` versions old."""
        t0 = time.perf_counter()
        if not result.get("ok"):
            return result
        if self.version - read_version > self.staleness:
            self.dropped += 1
            return {"ok": True, "applied": False, "version": self.version}
        self._step(torch.from_numpy(result["grad_sum"]) / result["count"], result["loss_sum"] / result["count"])
        self.busy_seconds += time.perf_counter() - t0
        return {"ok": True, "applied": True, "version": self.version, "count": result["count"]}

    def record_val(self, step: int, *results: dict[str, Any]) -> dict[str, Any]:
        """Record the validation loss (mean over all workers' rows) after ``step`` steps."""
        for r in results:
            if not r.get("ok"):
                return r
        count = sum(r["count"] for r in results)
        if count == 0:
            return {"ok": True, "stop": False}
        if self.progress.val_curve and self.progress.val_curve[-1][0] >= step:
            return {"ok": True, "stop": self.progress.stopped}  # already recorded (a replay after a restart)
        stop = self.progress.record_val(step, sum(r["loss_sum"] for r in results) / count, self.stepper.params)
        if self.checkpoint_url is not None:
            self.checkpoint()  # early-stopping state must survive a restart too
        return {"ok": True, "stop": stop}

    def seed_start(self, values: np.ndarray) -> dict[str, Any]:
        """Start from parameters the driver computed from the data (a tensor start).

        Only a fresh server takes them: once it has stepped or resumed from a
        checkpoint, the start is already in its state. They are checkpointed
        at once, so a restart resumes from them, not from the placeholder.
        """
        if self.version > 0 or self.restored_from is not None:
            return {"ok": True, "seeded": False}
        # A writable copy: arrays from Ray's object store are read-only, which torch.from_numpy warns about.
        self.stepper = Stepper(torch.from_numpy(np.array(values)).to(self.stepper.params.dtype), self.cfg)
        self.progress = Progress(self.cfg, self.stepper.params)
        if self.checkpoint_url is not None:
            self.checkpoint()
        return {"ok": True, "seeded": True}

    def result(self, seconds: float, validated: bool) -> dict[str, Any]:
        params, info = self.progress.final(self.stepper.params, self.version, seconds, validated)
        return {"params": params.numpy(), "info": info}

    # -- checkpoints

    def checkpoint(self) -> None:
        opt = self.stepper.opt.state_dict()
        arrays = {"params": self.params(), "best_params": self.progress.best_params.numpy()}
        for key, value in opt["state"].get(0, {}).items():
            arrays[f"opt.{key}"] = value.detach().numpy()
        state = {"version": self.version, "progress": self.progress.state(), "param_groups": opt["param_groups"], "dropped": self.dropped, "config": asdict(self.cfg)}
        save_checkpoint(self.checkpoint_url, self.version, arrays, state)

    def _restore(self, step: int, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        opt_state = {key[4:]: torch.from_numpy(arr.copy()) for key, arr in arrays.items() if key.startswith("opt.")}
        self.stepper.load_state_dict({"params": torch.from_numpy(arrays["params"].copy()), "opt": {"state": {0: opt_state} if opt_state else {}, "param_groups": state["param_groups"]}, "step": step})
        self.progress.load_state(state["progress"], torch.from_numpy(arrays["best_params"].copy()))
        self.dropped = int(state.get("dropped", 0))
        self.restored_from = step


# ------------------------------------------------------------------ execution


class InProcess:
    """Runs the roles as plain objects in this process: calls return values, not references."""

    actor_errors: tuple[type[BaseException], ...] = ()

    def create(self, cls, args: tuple, **_options):
        return cls(*args)

    def call(self, actor, method: str, *args):
        return getattr(actor, method)(*args)

    def get(self, ref, timeout: float | None = None):
        return ref

    def wait_one(self, refs: list):
        return refs[0]

    def kill(self, actor) -> None:
        pass


class OnRay:
    """Runs the roles as Ray actors; arguments that are object references are passed through, not fetched."""

    def __init__(self):
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        self.ray = ray
        self.actor_errors = (RayActorError, ActorDiedError, ActorUnavailableError)

    def create(self, cls, args: tuple, **options):
        from .raylib import remote

        return remote(cls, **options).remote(*args)

    def call(self, actor, method: str, *args):
        return getattr(actor, method).remote(*args)

    def get(self, ref, timeout: float | None = None):
        return self.ray.get(ref, timeout=timeout)

    def wait_one(self, refs: list):
        done, _ = self.ray.wait(refs, num_returns=1)
        return done[0]

    def kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass


@dataclass
class LoopStats:
    steps: int = 0
    frames: int = 0
    worker_restarts: int = 0
    ps_restarts: int = 0
    replayed_steps: int = 0
    dropped: int = 0
    seconds: float = 0.0
    ps_seconds: float = 0.0
    events: list[str] = field(default_factory=list)


class RetrainLoop:
    """The driver: one :meth:`step` is one optimiser step (plus validation when due).

    It holds no training state of its own (the parameter server does), so
    after any failure it re-reads the server's version and carries on from
    there: dead workers are replaced with fresh actors reading the same share,
    a restarted server has resumed from its checkpoint, and the steps since are
    replayed with the same batches.
    """

    def __init__(self, exe, make_ps: Callable[[], Any], make_worker: Callable[[int], Any], cfg: RetrainConfig, log: Callable[[str], None] | None = None):
        self.exe, self.cfg, self.make_worker = exe, cfg, make_worker
        self.log = log or (lambda msg: None)
        self.stats = LoopStats()
        self.ps = make_ps()
        self.workers = [make_worker(r) for r in range(cfg.workers)]
        self.version = 0
        self.stopped = False
        self._t0 = time.perf_counter()

    # -- start-up and recovery

    def wait_ready(self) -> list[dict[str, Any]]:
        try:
            infos = [self.exe.get(self.exe.call(w, "ready"), timeout=self.cfg.startup_timeout) for w in self.workers]
        except Exception as exc:
            if exc.__class__.__name__ == "GetTimeoutError":
                need = f"{self.cfg.cpus_per_worker:g} CPU" + (f" and {self.cfg.gpus_per_worker:g} GPU" if self.cfg.gpus_per_worker else "")
                raise UsageError(f"{self.cfg.workers} workers needing {need} each were not all placed within {self.cfg.startup_timeout:g} s; the cluster is too small (use fewer --workers)") from None
            raise
        for info in infos:
            raise_failure(info)
        status = self.exe.get(self.exe.call(self.ps, "status"))
        self.version, self.stopped = status["version"], status["stopped"]
        if status["restored_from"] is not None:
            self.log(f"parameter server resumed from the checkpoint at step {status['restored_from']}")
        return infos

    def seed_start(self, fit: LearnConfig, positions: Sequence[np.ndarray] | None = None) -> None:
        """A data-dependent (tensor or spectral) start: the workers' Gram sums added up, its top-m eigenvectors sent to the server.

        A spectral start weighs each training row by its recency, so it needs
        every worker's ``positions`` (indices into all training rows in time
        order). Validated at step 0, as :func:`lrstream.learn` does, so
        training never returns a sketch worse on validation than its start.
        """
        if fit.start not in ("tensor", "spectral"):
            return
        if fit.start == "tensor":
            calls = [self.exe.call(w, "gram") for w in self.workers]
        else:
            if positions is None:
                raise UsageError("a spectral start needs the workers' row positions")
            total = sum(len(p) for p in positions)
            weights = recency_weights(total, fit.half_lives[0]).numpy()  # (N,)
            calls = [self.exe.call(w, "gram", fit.powers[0], weights[pos]) for w, pos in zip(self.workers, positions)]
        shares = [self.exe.get(call) for call in calls]
        for share in shares:
            raise_failure(share)
        start = tensor_start(torch.from_numpy(np.sum([share["gram"] for share in shares], axis=0)), fit)  # (n, n) summed
        out = self.exe.get(self.exe.call(self.ps, "seed_start", start.values[start.trainable].numpy()))
        raise_failure(out)
        if out["seeded"]:
            self.validate()

    def _replace_worker(self, rank: int) -> None:
        self.stats.worker_restarts += 1
        if self.stats.worker_restarts > self.cfg.max_worker_failures:
            raise LrstreamError(f"workers failed {self.stats.worker_restarts} times; giving up (last: rank {rank})")
        self.exe.kill(self.workers[rank])
        self.workers[rank] = self.make_worker(rank)
        raise_failure(self.exe.get(self.exe.call(self.workers[rank], "ready"), timeout=self.cfg.startup_timeout))
        self.stats.events.append(f"worker {rank} replaced")
        self.log(f"worker {rank} died; replaced it (it re-reads the same share)")

    def _recover(self, refs: Sequence) -> None:
        for rank, ref in enumerate(refs):
            try:
                self.exe.get(ref)
            except self.exe.actor_errors:
                self._replace_worker(rank)
        for _ in range(60):  # a restarting server queues calls; a dead one fails them
            try:
                status = self.exe.get(self.exe.call(self.ps, "status"))
                break
            except self.exe.actor_errors:
                time.sleep(1.0)
        else:
            raise LrstreamError("the parameter server did not come back after a failure")
        if status["version"] < self.version:
            self.stats.ps_restarts += 1
            self.stats.replayed_steps += self.version - status["version"]
            self.stats.events.append(f"parameter server resumed at step {status['version']} (was at {self.version})")
            self.log(f"parameter server restarted; resuming from its checkpoint at step {status['version']}")
        self.version, self.stopped = status["version"], status["stopped"]

    # -- the loop

    def done(self) -> bool:
        budget = self.cfg.learn.time_budget
        return self.stopped or self.version >= self.cfg.learn.steps or (budget is not None and time.perf_counter() - self._t0 > budget)

    def step(self) -> dict[str, Any]:
        """One synchronous step; returns the server's answer ({"version", "applied", ...})."""
        exe, step = self.exe, self.version + 1
        params = exe.call(self.ps, "params")  # a reference: workers fetch it from the object store
        grads = [exe.call(w, "gradient", step, params) for w in self.workers]
        try:
            out = exe.get(exe.call(self.ps, "apply", *grads))
        except exe.actor_errors:
            self._recover(grads)
            return {"ok": True, "applied": False, "version": self.version}
        raise_failure(out)
        self.version = out["version"]
        if out["applied"]:
            self.stats.steps += 1
            self.stats.frames += out["count"]
            if self.version % self.cfg.learn.eval_every == 0 or self.version == self.cfg.learn.steps:
                self.validate()
        return out

    def validate(self) -> None:
        """Validation loss at the current parameters, recorded by the server (which decides early stopping)."""
        exe = self.exe
        params = exe.call(self.ps, "params")
        vals = [exe.call(w, "validation", params) for w in self.workers]
        try:
            out = exe.get(exe.call(self.ps, "record_val", self.version, *vals))
        except exe.actor_errors:
            self._recover(vals)
            return
        raise_failure(out)
        self.stopped = out["stop"]

    def run_async(self) -> None:
        """Asynchronous training: each worker's gradient is one step, applied as it arrives."""
        exe = self.exe
        local_step = [0] * len(self.workers)
        read_version: dict[int, int] = {}
        pending: dict[Any, int] = {}

        def issue(rank: int) -> None:
            local_step[rank] += 1
            read_version[rank] = self.version
            pending[exe.call(self.workers[rank], "gradient", local_step[rank], exe.call(self.ps, "params"))] = rank

        for rank in range(len(self.workers)):
            issue(rank)
        while not self.done():
            ref = exe.wait_one(list(pending))
            rank = pending.pop(ref)
            try:
                out = exe.get(exe.call(self.ps, "push", ref, read_version[rank]))
            except exe.actor_errors:
                self._recover([ref])
                issue(rank)
                continue
            raise_failure(out)
            before, self.version = self.version, out["version"]
            if out["applied"]:
                self.stats.steps += 1
                self.stats.frames += out["count"]
                if self.version // self.cfg.learn.eval_every > before // self.cfg.learn.eval_every or self.version == self.cfg.learn.steps:
                    self.validate()
            issue(rank)
        for ref in pending:  # let in-flight work finish before the actors go away
            try:
                exe.get(ref)
            except exe.actor_errors:
                pass

    def run(self, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=self.cfg.learn.steps, initial=self.version, disable=not progress, file=sys.stderr, desc=f"retrain {self.cfg.learn.kind} W={self.cfg.workers}")
        if self.cfg.mode == "async":
            self.run_async()
        else:
            while not self.done():
                before = self.version
                self.step()
                bar.update(self.version - before)
        bar.close()
        self.stats.seconds = time.perf_counter() - self._t0
        status = self.exe.get(self.exe.call(self.ps, "status"))
        self.stats.ps_seconds, self.stats.dropped = status["busy_seconds"], status["dropped"]

    def result(self, validated: bool) -> dict[str, Any]:
        return self.exe.get(self.exe.call(self.ps, "result", self.stats.seconds, validated))

    def val_errors(self, sketch: SparseSketch, k: int, baseline_seed: int) -> dict[str, float]:
        arrays = _sketch_arrays(sketch)
        outs = [self.exe.get(self.exe.call(w, "val_errors", arrays, k, baseline_seed)) for w in self.workers]
        for out in outs:
            raise_failure(out)
        return {key: sum(o[key] for o in outs) for key in ("sketch", "sparse_random", "optimal", "count")}

    def shutdown(self) -> None:
        for actor in [*self.workers, self.ps]:
            self.exe.kill(actor)


# ------------------------------------------------------------------ the job


@dataclass(frozen=True)
class RetrainResult:
    version: int
    url: str
    sketch: SparseSketch
    val_gap: float | None
    val_gap_sparse_random: float | None
    plan: DataPlan
    stats: LoopStats
    run_id: str

    def summary(self) -> dict[str, Any]:
        info = self.sketch.meta.get("training", {})
        ratio = None if not self.val_gap or self.val_gap_sparse_random is None else self.val_gap_sparse_random / self.val_gap
        return {
            "stream": self.plan.stream,
            "version": self.version,
            "url": self.url,
            "kind": self.sketch.meta.get("kind"),
            "k": self.sketch.meta.get("k"),
            "m": self.sketch.m,
            "n": self.plan.n,
            "d": self.plan.d,
            **self.plan.describe(),
            "val_gap": self.val_gap,
            "val_gap_sparse_random": self.val_gap_sparse_random,
            "val_ratio": ratio,
            "steps": info.get("steps"),
            "best_step": info.get("best_step"),
            "seconds": self.stats.seconds,
            "steps_per_second": self.stats.steps / self.stats.seconds if self.stats.seconds else None,
            "frames_per_second": self.stats.frames / self.stats.seconds if self.stats.seconds else None,
            "ps_share": self.stats.ps_seconds / self.stats.seconds if self.stats.seconds else None,
            "worker_restarts": self.stats.worker_restarts,
            "ps_restarts": self.stats.ps_restarts,
            "dropped_gradients": self.stats.dropped,
            "run_id": self.run_id,
        }


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def run_url(root: str, stream: str, run_id: str) -> str:
    """Where a run keeps its checkpoints (beside the versions; removed once the version is published)."""
    return f"{root.rstrip('/')}/sketches/stream={check_stream(stream)}/_runs/run={run_id}"


def build_loop(root: str, stream: str, cfg: RetrainConfig, plan: DataPlan, *, use_ray: bool = True, run_id: str | None = None, log=None) -> tuple[RetrainLoop, str]:
    """Create the parameter server and the workers for ``plan`` (Ray actors, or in-process objects)."""
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    ckpt = run_url(root, stream, run_id)
    fit = fit_config(cfg.learn)
    sizes = local_batch_sizes(fit.batch_size, cfg.workers) if cfg.mode == "sync" else [max(1, fit.batch_size // cfg.workers)] * cfg.workers
    exe = OnRay() if use_ray else InProcess()
    worker_opts: dict[str, Any] = {"num_cpus": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        worker_opts["num_gpus"] = cfg.gpus_per_worker
    # The server restarts in place (same arguments, so it finds its checkpoints); workers are replaced by the loop.
    ps_opts = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0}

    def make_ps():
        return exe.create(ParameterServer, (fit, plan.n, ckpt, cfg.checkpoint_every, cfg.staleness), **ps_opts)

    def make_worker(rank: int):
        return exe.create(GradientWorker, (root, stream, rank, plan.train[rank], plan.val[rank], fit, sizes[rank], cfg.gray), **worker_opts)

    return RetrainLoop(exe, make_ps, make_worker, cfg, log), run_id


def retrain(
    root: str,
    stream: str,
    cfg: RetrainConfig,
    *,
    hours: Sequence[str] | None = None,
    last: int | None = None,
    start: str | None = None,
    end: str | None = None,
    address: str | None = None,
    use_ray: bool = True,
    publish: bool = True,
    log: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Learn a sketch for ``stream`` from its stored hours with W workers and publish it as a new version.

    Returns the new version with its validation gap (mean SCW error minus
    mean optimal error over the held-out rows, each scaled to sigma_1 = 1)
    next to a sparse random sketch's.
    """
    cfg.validate()
    log = log or (lambda msg: None)
    if use_ray:
        from .raylib import init_ray

        init_ray(address, num_cpus=max(os.cpu_count() or 1, math.ceil(cfg.workers * cfg.cpus_per_worker)))
        if cfg.gpus_per_worker is None:
            gpus = _cluster_gpus()
            if gpus >= 1:
                cfg = replace(cfg, gpus_per_worker=min(1.0, gpus / cfg.workers), learn=replace(cfg.learn, device="cuda"))
    plan = plan_data(root, stream, cfg.workers, hours=hours, last=last, start=start, end=end, val_fraction=cfg.learn.val_fraction, gray=cfg.gray)
    check_rank(cfg.learn.k, n=plan.n, d=plan.d)
    log(f"training on {plan.train_frames} frames of {len(plan.train_hours)} hour(s), validating on {plan.val_frames} ({plan.validation}); {cfg.workers} workers, {cfg.mode}")
    loop, run_id = build_loop(root, stream, cfg, plan, use_ray=use_ray, log=log)
    try:
        fit = fit_config(cfg.learn)
        loop.wait_ready()
        loop.seed_start(fit, plan.train_positions())
        loop.run(progress=bool(cfg.learn.progress))
        out = loop.result(validated=plan.val_frames > 0)
        base = initial_sketch(plan.n, structure_config(fit))
        if fit.kind == "dense":
            base = replace(base, meta={**base.meta, "init": fit.start})
        fitted = base.with_values(base.values.masked_scatter(base.trainable, torch.from_numpy(np.array(out["params"]))))
        info = {**out["info"], "workers": cfg.workers, "mode": cfg.mode, "run_id": run_id}
        sketch = finish_sketch(fitted, cfg.learn, plan.n, plan.d, info)
        gaps = loop.val_errors(sketch, cfg.learn.k, baseline_seed=cfg.learn.seed + 101) if plan.val_frames else None
    finally:
        loop.shutdown()
    val_gap = val_random = None
    if gaps and gaps["count"]:
        val_gap = (gaps["sketch"] - gaps["optimal"]) / gaps["count"]
        val_random = (gaps["sparse_random"] - gaps["optimal"]) / gaps["count"]
    meta = {
        "data": {**plan.describe(), "gray": cfg.gray},
        "val_gap": val_gap,
        "val_gap_sparse_random": val_random,
        "retrain": {key: value for key, value in asdict(cfg).items() if key != "learn"},
    }
    version, url = 0, ""
    if publish:
        version = publish_version(root, stream, sketch, meta)
        url = version_url(root, stream, version)
        fs, path = url_to_fs(run_url(root, stream, run_id))
        if fs.exists(path):
            fs.rm(path, recursive=True)  # the checkpoints served their purpose
        runs = path.rsplit("/", 1)[0]
        if fs.exists(runs) and not fs.ls(runs, detail=False):
            fs.rmdir(runs)  # no other run is in flight
    sketch = replace(sketch, meta={**sketch.meta, **meta, "version": version})
    return RetrainResult(version, url, sketch, val_gap, val_random, plan, loop.stats, run_id)
