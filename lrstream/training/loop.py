"""The controller loop both drivers run: one :meth:`TrainLoop.step` is one optimiser step.

The loop holds no training state of its own: the server does (its
``version`` is the step count), the workers hold the data. It reaches them
only through an executor: :class:`InProcess` calls plain objects here (the
single-process ``learn``, and tests that step a run one iteration at a
time); :class:`lrstream.distributed.runtime.OnRay` calls Ray actors. After
an actor failure it re-reads the server's version and carries on: dead
workers are replaced by fresh ones reading the same share, a restarted
server has resumed from its checkpoint, and the steps since are replayed
with the same batches.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from ..errors import LrstreamError, UsageError
from ..numerics.sketch import Sketch, SparseSketch, sketch_arrays
from .config import LearnConfig
from .sketches import start_sketch


class InProcess:
    """Runs the roles as plain objects in this process: calls return values, not references."""

    actor_errors: tuple[type[BaseException], ...] = ()

    def create(self, cls, args: tuple, **_options):
        return cls(*args)

    def call(self, actor, method: str, *args):
        return getattr(actor, method)(*args)

    def result(self, ref, timeout: float | None = None):
        return ref

    def wait_one(self, refs: list):
        return refs[0]

    def kill(self, actor) -> None:
        pass


@dataclass(frozen=True)
class LoopOptions:
    """How the loop drives its workers (the optimisation is the LearnConfig's)."""

    workers: int = 1
    mode: str = "sync"
    startup_timeout: float = 300.0
    max_worker_failures: int = 8
    placement: str = ""  # what one worker asks the cluster for, for the error when they cannot all be placed
    validate: bool = True  # False (a refit): no validation, no early stopping; the last parameters are kept


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


def validation_due(cfg: LearnConfig, before: int, after: int) -> bool:
    """Whether a validation falls in steps (before, after]: a multiple of eval_every was crossed, or the last step reached."""
    return after // cfg.eval_every > before // cfg.eval_every or (after == cfg.steps and before < after)


def _transport(sketch: Sketch) -> dict[str, Any]:
    """A sketch as plain arrays plus its type and size, the form it crosses to a worker in."""
    kind, arrays = sketch_arrays(sketch)
    return {"type": kind, "m": sketch.m, "n": sketch.n, **arrays}


class TrainLoop:
    """Drives W workers and one server through ``exe``.

    Args:
        exe: an executor (:class:`InProcess` or OnRay).
        fit: the fit configuration (:func:`lrstream.training.sketches.fit_config`).
        n: rows of the training matrices.
        options: workers, mode, start-up and failure limits.
        make_worker: rank -> a worker (a :class:`~lrstream.training.core.Worker` or an actor of one).
        make_server: start parameters (p,) -> a server (a :class:`~lrstream.training.server.Server` or an actor).
    """

    def __init__(self, exe, fit: LearnConfig, n: int, options: LoopOptions, make_worker: Callable[[int], Any], make_server: Callable[[np.ndarray], Any], log: Callable[[str], None] | None = None):
        self.exe, self.fit, self.n, self.options = exe, fit, n, options
        self.make_worker, self.make_server = make_worker, make_server
        self.log = log or (lambda msg: None)
        self._fallback_told = False
        self.stats = LoopStats()
        self.workers = [make_worker(r) for r in range(options.workers)]
        self.ps = None
        self.start: SparseSketch | None = None
        self.frames = self.val_frames = 0
        self.version = 0
        self.stopped = False
        self._t0 = time.perf_counter()

    # -- start-up

    def gather(self, method: str, *args) -> list:
        """``method`` on every worker, results in rank order; a failure reported as data is raised here, typed."""
        refs = [self.exe.call(w, method, *args) for w in self.workers]
        return [self.exe.result(ref) for ref in refs]

    def wait_ready(self) -> list[dict[str, Any]]:
        try:
            infos = [self.exe.result(self.exe.call(w, "ready"), timeout=self.options.startup_timeout) for w in self.workers]
        except Exception as exc:
            if exc.__class__.__name__ == "GetTimeoutError":
                raise UsageError(f"{self.options.workers} workers needing {self.options.placement or 'their resources'} each were not all placed within {self.options.startup_timeout:g} s; the cluster is too small (use fewer --workers)") from None
            raise
        fallen = [i for i in infos if i.get("fallback")]
        if fallen and not self._fallback_told:  # once per run, not once per worker or replacement
            self._fallback_told = True
            self.log(f"{len(fallen)} of {len(infos)} workers run on the CPU: {fallen[0]['fallback']}")
        self.frames = sum(i["frames"] for i in infos)
        self.val_frames = sum(i["val_frames"] for i in infos)
        return infos

    def begin(self) -> None:
        """Compute the start from the workers' shares, hand its structure to every worker, create the server.

        A data-dependent start is validated at step 0, so training never
        returns a sketch worse on validation than its start.
        """
        self.start = start_sketch(
            self.n, self.fit, self.frames,
            spectral=lambda method, *args: self.gather(f"spectral_{method}", *args),
            greedy=lambda method, *args: self.gather(f"greedy_{method}", *args),
        )  # fmt: skip
        self.gather("set_sketch", _transport(self.start))
        self.ps = self.make_server(self.start.params().numpy())
        status = self.exe.result(self.exe.call(self.ps, "status"))
        self.version, self.stopped = status["version"], status["stopped"]
        if status["restored_from"] is not None:
            self.log(f"parameter server resumed from the checkpoint at step {status['restored_from']}")
        elif self.fit.data_dependent and self.options.validate:
            self.validate()
        self._t0 = time.perf_counter()

    # -- recovery

    def _replace_worker(self, rank: int) -> None:
        self.stats.worker_restarts += 1
        if self.stats.worker_restarts > self.options.max_worker_failures:
            raise LrstreamError(f"workers failed {self.stats.worker_restarts} times; giving up (last: rank {rank})")
        self.exe.kill(self.workers[rank])
        self.workers[rank] = self.make_worker(rank)
        self.exe.result(self.exe.call(self.workers[rank], "ready"), timeout=self.options.startup_timeout)
        self.exe.result(self.exe.call(self.workers[rank], "set_sketch", _transport(self.start)))
        self.stats.events.append(f"worker {rank} replaced")
        self.log(f"worker {rank} died; replaced it (it re-reads the same share)")

    def _recover(self, refs) -> None:
        for rank, ref in enumerate(refs):
            try:
                self.exe.result(ref)
            except self.exe.actor_errors:
                self._replace_worker(rank)
        for _ in range(60):  # a restarting server queues calls; a dead one fails them
            try:
                status = self.exe.result(self.exe.call(self.ps, "status"))
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
        budget = self.fit.time_budget
        return self.stopped or self.version >= self.fit.steps or (budget is not None and time.perf_counter() - self._t0 > budget)

    def _applied(self, out: dict[str, Any], before: int) -> None:
        self.version = out["version"]
        if out["applied"]:
            self.stats.steps += 1
            self.stats.frames += out["count"]
            if self.options.validate and validation_due(self.fit, before, self.version):
                self.validate()
        elif self.options.mode == "sync":
            self.stopped = self.exe.result(self.exe.call(self.ps, "status"))["stopped"]

    def step(self) -> dict[str, Any]:
        """One synchronous step; returns the server's answer ({"version", "applied", ...})."""
        exe, before = self.exe, self.version
        params = exe.call(self.ps, "params")  # on Ray a reference: workers fetch it from the object store
        grads = [exe.call(w, "gradient", before + 1, params) for w in self.workers]
        try:
            out = exe.result(exe.call(self.ps, "apply", *grads))
        except exe.actor_errors:
            self._recover(grads)
            return {"applied": False, "version": self.version}
        self._applied(out, before)
        return out

    def validate(self) -> None:
        """Validation loss at the current parameters, recorded by the server (which decides early stopping)."""
        exe = self.exe
        params = exe.call(self.ps, "params")
        vals = [exe.call(w, "validation", params) for w in self.workers]
        try:
            out = exe.result(exe.call(self.ps, "record_val", self.version, *vals))
        except exe.actor_errors:
            self._recover(vals)
            return
        self.stopped = self.stopped or out["stop"]

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
                out = exe.result(exe.call(self.ps, "push", ref, read_version[rank]))
            except exe.actor_errors:
                self._recover([ref])
                issue(rank)
                continue
            self._applied(out, self.version)
            issue(rank)
        for ref in pending:  # let in-flight work finish before the actors go away
            try:
                exe.result(ref)
            except exe.actor_errors:
                pass

    def run(self, progress: bool = False) -> None:
        from tqdm.auto import tqdm  # only the driver reports progress

        bar = tqdm(total=self.fit.steps, initial=self.version, disable=not progress, file=sys.stderr, desc=f"train {self.fit.kind} k={self.fit.k} m={self.fit.m} W={len(self.workers)}")
        if self.options.mode == "async":
            self.run_async()
        else:
            while not self.done():
                before = self.version
                self.step()
                bar.update(self.version - before)
        bar.close()
        self.stats.seconds = time.perf_counter() - self._t0
        status = self.exe.result(self.exe.call(self.ps, "status"))
        self.stats.ps_seconds, self.stats.dropped = status["busy_seconds"], status["dropped"]

    def train(self, progress: bool = False) -> None:
        """Start-up, start and steps: the whole run."""
        self.wait_ready()
        self.begin()
        self.run(progress)

    def result(self, validated: bool | None = None) -> dict[str, Any]:
        validated = self.options.validate and self.val_frames > 0 if validated is None else validated
        return self.exe.result(self.exe.call(self.ps, "result", self.stats.seconds, validated))

    def fitted(self) -> tuple[SparseSketch, dict[str, Any]]:
        """The trained sketch (the best validated parameters, else the last) in training form, and the training record."""
        out = self.result()
        return self.start.with_params(torch.from_numpy(np.array(out["params"]))), out["info"]

    def val_errors(self, sketch: Sketch, k: int) -> dict[str, float]:
        """Sums over all validation rows of the errors of ``sketch``, of the sparse random baseline and of the optimum."""
        outs = self.gather("val_errors", _transport(sketch), k)
        return {key: sum(o[key] for o in outs) for key in ("sketch", "sparse_random", "optimal", "count")}

    def shutdown(self) -> None:
        for actor in [*self.workers, *([self.ps] if self.ps is not None else [])]:
            self.exe.kill(actor)


def train_and_refit(build: Callable[[LearnConfig, bool], TrainLoop], fit: LearnConfig, refit: bool, progress: bool = False) -> tuple[TrainLoop, SparseSketch, dict[str, Any]]:
    """Train on the split data; with ``refit``, train again on all of it for the step count validation chose.

    ``build(fit, refit)`` makes a loop over the training shares (refit=False)
    or one that trains on every matrix, validation ones included, without
    validating (True). The refit starts from a start recomputed on all the
    data; its learning-rate schedule spans the chosen t* steps, as a run of
    that length would; t* = 0 returns that start. The first loop is shut down
    before the refit's starts, so a cluster sized for W workers runs both.
    Returns the last loop (still up: its workers hold the validation rows,
    for scoring), the sketch and its record.
    """
    loop = build(fit, False)
    try:
        loop.train(progress)
        fitted, info = loop.fitted()
        if refit:
            steps = int(info["best_step"])
            loop.shutdown()
            loop = build(replace(fit, steps=steps), True)
            loop.train(progress)
            fitted, refit_info = loop.fitted()
            info = {**refit_info, "refit": {"steps": steps, "matrices": loop.frames}, "selection": info}
    except BaseException:
        loop.shutdown()
        raise
    return loop, fitted, info
