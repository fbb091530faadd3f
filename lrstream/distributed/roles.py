"""The retrain's roles over stored data: a gradient worker that reads its share, a server that checkpoints.

Both are the training core's plain classes (:class:`~lrstream.training.core.Worker`,
:class:`~lrstream.training.server.Server`) plus storage; :class:`~lrstream.distributed.runtime.OnRay`
makes them actors. Checkpoints (DESIGN.md) live under the run's folder:

    sketches/stream=S/_runs/run=ID/step=N/params.npy, best_params.npy, opt.*.npy, state.json

The server is constructed again after a crash (Ray's ``max_restarts``) with
the same arguments, so it finds its checkpoints and resumes from the newest
intact one; a fresh one starts from the start parameters it was given.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any, Sequence

import numpy as np
import torch

from ..data.checkpoints import load_latest_checkpoint, save_checkpoint
from ..data.selection import Segment, load_segments
from ..data.store import Store
from ..training.config import LearnConfig
from ..training.core import Worker, normalized
from ..training.server import Server
from .runtime import is_failure


class GradientWorker(Worker):
    """A :class:`Worker` whose share is read, once, from the stream's stored hours.

    ``positions`` are the time positions of its training rows among all the
    run's training rows; a replacement worker re-reads the same rows. With
    ``cpu_fallback`` (a Ray actor placed by its GPU request) a worker asked
    for CUDA on a node whose torch sees none (a GPU resource declared
    without a driver, a CPU-only wheel) trains on the CPU and says so in
    ``ready``, so the run finishes and the driver reports it once; in this
    process, CUDA asked for and absent stays a usage error.
    """

    def __init__(self, store: Store, stream: str, rank: int, train: Sequence[Segment], val: Sequence[Segment], positions, cfg: LearnConfig, batch: int, gray: bool = False, weight=None, cpu_fallback: bool = False):
        t0 = time.perf_counter()
        self.fallback = None
        if cpu_fallback and cfg.device.startswith("cuda") and not torch.cuda.is_available():
            self.fallback = f"asked for {cfg.device}, but torch {torch.__version__} on this node sees no CUDA device"
            cfg = replace(cfg, device="cpu")
        A = normalized(load_segments(store, stream, train, gray), "training share", cfg)  # (N_w, n, d)
        raw_val = load_segments(store, stream, val, gray)
        held = normalized(raw_val, "validation share", cfg) if raw_val.numel() else None  # (V_w, n, d)
        super().__init__(A, held, positions, cfg, batch, rank, weight)
        self.load_seconds = time.perf_counter() - t0

    def ready(self) -> dict[str, Any]:
        return {**super().ready(), "load_seconds": self.load_seconds, "fallback": self.fallback}


class ParameterServer(Server):
    """A :class:`Server` that checkpoints every ``checkpoint_every`` steps and after every validation."""

    def __init__(self, cfg: LearnConfig, params: np.ndarray, store: Store | None = None, folder: str | None = None, checkpoint_every: int = 25, staleness: int = 2):
        super().__init__(cfg, params, staleness)
        self.store, self.folder, self.checkpoint_every = store, folder, checkpoint_every
        if folder is not None:
            found = load_latest_checkpoint(store, folder)
            if found is not None:
                self._restore(*found)

    # A worker's failure reaches the server as data (its result was passed by reference): hand it back to the driver.

    def apply(self, *results):
        return next((r for r in results if is_failure(r)), None) or super().apply(*results)

    def push(self, result, read_version: int):
        return result if is_failure(result) else super().push(result, read_version)

    def record_val(self, step: int, *results):
        return next((r for r in results if is_failure(r)), None) or super().record_val(step, *results)

    def saved(self, after_validation: bool = False) -> None:
        if self.folder is not None and (after_validation or self.version % self.checkpoint_every == 0):
            self.checkpoint()

    def checkpoint(self) -> None:
        opt = self.stepper.opt.state_dict()
        arrays = {"params": self.params(), "best_params": self.progress.best_params.numpy()}
        for key, value in opt["state"].get(0, {}).items():
            arrays[f"opt.{key}"] = value.detach().numpy()
        state = {"version": self.version, "progress": self.progress.state(), "param_groups": opt["param_groups"], "dropped": self.dropped, "config": asdict(self.cfg)}
        save_checkpoint(self.store, self.folder, self.version, arrays, state)

    def _restore(self, step: int, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        opt_state = {key[4:]: torch.from_numpy(arr.copy()) for key, arr in arrays.items() if key.startswith("opt.")}
        with torch.no_grad():
            self.stepper.params.copy_(torch.from_numpy(arrays["params"].copy()))
        self.stepper.opt.load_state_dict({"state": {0: opt_state} if opt_state else {}, "param_groups": state["param_groups"]})
        self.stepper.step_count = step
        self.progress.load_state(state["progress"], torch.from_numpy(arrays["best_params"].copy()))
        self.dropped = int(state.get("dropped", 0))
        self.restored_from = step
