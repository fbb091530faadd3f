"""How a distributed retrain runs; the optimisation itself is a :class:`~lrstream.training.config.LearnConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError
from ..training.config import LearnConfig

MODES = ("sync", "async")


@dataclass(frozen=True)
class RetrainConfig:
    """Workers, transport and fault tolerance around one ``LearnConfig``.

    ``learn.batch_size`` is the global batch per step, split over the workers
    (sync mode). In async mode each worker's local batch is one step and a
    gradient computed more than ``staleness`` versions ago is dropped.
    """

    learn: LearnConfig
    workers: int = field(default=2, metadata={"help": "gradient workers (Ray actors)"})
    mode: str = field(default="sync", metadata={"help": "synchronous steps, or asynchronous with bounded staleness", "choices": MODES})
    staleness: int = field(default=2, metadata={"help": "async: drop gradients more than this many versions old"})
    checkpoint_every: int = field(default=25, metadata={"help": "parameter-server checkpoint interval (steps)"})
    gray: bool = field(default=False, metadata={"help": "frames as (H, W) luminance instead of (C*H, W)"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs each worker asks Ray for"})
    gpus_per_worker: float | None = field(default=None, metadata={"help": "GPUs each worker asks Ray for (default: 1 with --device cuda, else 0); the request is what makes an autoscaler start a GPU node"})
    startup_timeout: float = field(default=300.0, metadata={"help": "seconds to wait for the workers to be placed"})
    max_worker_failures: int = field(default=8, metadata={"help": "worker replacements before the job gives up"})

    def validate(self) -> "RetrainConfig":
        # The driver may have no GPU while its workers do: the device is checked where it is used.
        self.learn.validate(check_device=False)
        if self.learn.device not in ("cpu", "cuda"):
            raise UsageError(f"device must be cpu or cuda, got {self.learn.device!r}")
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
