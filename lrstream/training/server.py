"""The parameter server's logic: parameters, optimiser, training record, and how results are averaged.

``version`` is the number of optimiser steps taken. Sync steps average the
workers' sums for step version+1 (weighted by batch size); async pushes
apply one worker's gradient unless it is more than ``staleness`` versions
old. Subclasses add persistence by overriding :meth:`Server.saved`
(the distributed parameter server checkpoints there).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from .config import LearnConfig
from .core import Progress, Stepper


class Server:
    """Owns the trainable parameters (p,), the optimiser state and the :class:`Progress` record."""

    def __init__(self, cfg: LearnConfig, params: np.ndarray, staleness: int = 2):
        self.cfg, self.staleness = cfg, staleness
        # A writable copy: arrays from Ray's object store are read-only, which torch.from_numpy warns about.
        self.stepper = Stepper(torch.from_numpy(np.array(params)), cfg)
        self.progress = Progress(cfg, self.stepper.params)
        self.busy_seconds = 0.0
        self.critical_seconds = 0.0  # the slowest worker's gradient time, summed over sync steps
        self.dropped = 0
        self.exhausted = False
        self.restored_from: int | None = None

    @property
    def version(self) -> int:
        return self.stepper.step_count

    def params(self) -> np.ndarray:
        return self.stepper.params.detach().numpy().copy()

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "stopped": self.progress.stopped or self.exhausted, "restored_from": self.restored_from, "busy_seconds": self.busy_seconds, "critical_seconds": self.critical_seconds, "dropped": self.dropped, "pid": os.getpid()}

    def saved(self, after_validation: bool = False) -> None:
        """Hook after a step or a validation; the in-process server keeps nothing."""

    def _step(self, grad: torch.Tensor, loss: float) -> None:
        self.stepper.apply(grad)
        self.progress.record_step(self.version, loss)
        self.saved()

    def apply(self, *results: dict[str, Any]) -> dict[str, Any]:
        """Sync step: average the workers' results for step version+1 and step once."""
        t0 = time.perf_counter()
        if any(r.get("exhausted") for r in results):
            self.exhausted = True  # a one-pass source ran out: training ends here, as learn on a generator does
            return {"applied": False, "version": self.version}
        if any(r["step"] != self.version + 1 for r in results):
            # Gradients for another step (e.g. computed before this server resumed from a checkpoint).
            return {"applied": False, "version": self.version}
        count = sum(r["count"] for r in results)
        self.critical_seconds += max(r.get("seconds", 0.0) for r in results)  # the slowest worker bounds the step
        grad = torch.from_numpy(np.sum([r["grad_sum"] for r in results], axis=0)) / count  # (p,)
        self._step(grad, sum(r["loss_sum"] for r in results) / count)
        self.busy_seconds += time.perf_counter() - t0
        return {"applied": True, "version": self.version, "count": count}

    def push(self, result: dict[str, Any], read_version: int) -> dict[str, Any]:
        """Async step: apply one worker's gradient unless it is more than ``staleness`` versions old."""
        t0 = time.perf_counter()
        if self.version - read_version > self.staleness:
            self.dropped += 1
            return {"applied": False, "version": self.version}
        self._step(torch.from_numpy(np.array(result["grad_sum"])) / result["count"], result["loss_sum"] / result["count"])
        self.busy_seconds += time.perf_counter() - t0
        return {"applied": True, "version": self.version, "count": result["count"]}

    def record_val(self, step: int, *results: dict[str, Any]) -> dict[str, Any]:
        """Record the validation loss (mean over all workers' rows) after ``step`` steps."""
        count = sum(r["count"] for r in results)
        if count == 0:
            return {"stop": False}
        stop = self.progress.record_val(step, sum(r["loss_sum"] for r in results) / count, self.stepper.params)
        self.saved(after_validation=True)  # early-stopping state must survive a restart too
        return {"stop": stop}

    def result(self, seconds: float, validated: bool) -> dict[str, Any]:
        params, info = self.progress.final(self.stepper.params, self.version, seconds, validated)
        return {"params": params.numpy(), "info": info}
