"""The training configuration: everything that determines a run, saved with every sketch.

Fields with a fixed set of values carry it as ``metadata["choices"]`` and
every field its one-line ``metadata["help"]``: :meth:`LearnConfig.validate`
checks the choices, and the CLI builds its flags (choices and defaults)
from the same fields, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..errors import UsageError
from ..numerics.checks import check_rank, resolve_device
from ..numerics.losses import LOSSES, ROUTES

KINDS = ("learned", "mixed-j", "mixed-s", "dense")
INITS = ("random", "tensor", "spectral")
VAL_SPLITS = ("random", "last")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
# float64 costs about 2x; it makes runs reproducible to ~1e-12 across batch splits
# (float32 summation order alone moves Adam trajectories by ~1e-5).
DTYPES = ("float32", "float64")
_DEFAULT_LR = {"adam": 0.05, "sgd": 1.0}
# A dense sketch starts with entries of RMS 1 (rows scaled by sqrt(n)); its
# start from the data's top subspace is already close to a good optimum, so
# steps are kept small relative to the entries.
_DENSE_LR = {"adam": 0.002, "sgd": 0.05}


def _opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class LearnConfig:
    """Everything that determines a training run; saved with the sketch.

    Defaults were chosen on video frames (bigbuckbunny, k=10, m=20) and need
    no tuning for sigma_1-normalised data.
    """

    k: int = field(metadata={"help": "target rank"})
    m: int = field(metadata={"help": "sketch rows"})
    kind: str = _opt("learned", "sketch kind (dense: all m x n entries, started from the training data's top-m subspace)", KINDS)
    loss: str = _opt("fro", "training loss (wfro needs a weight matrix W of shape (n, d))", LOSSES)
    steps: int = _opt(300, "optimiser steps")
    batch_size: int = _opt(8, "matrices per step (split over the workers)")
    optimizer: str = _opt("adam", "optimiser", OPTIMIZERS)
    lr: float | None = _opt(None, "learning rate (default: the optimiser's own, smaller for dense sketches)")
    lr_schedule: str = _opt("cosine", "learning-rate schedule over the steps", SCHEDULES)
    min_lr_fraction: float = _opt(0.05, "cosine: the final learning rate as a fraction of the first")
    val_fraction: float = _opt(0.1, "share of the matrices held out for validation (0: none)")
    eval_every: int = _opt(25, "validate every N steps")
    patience: int = _opt(6, "stop after N validations without improvement")
    seed: int = _opt(0, "fixes the starting sketch, the random rows and the data order")
    route: str = _opt("exact", "gradient route: exact eigen-solves, or the papers' unrolled power method", ROUTES)
    power_iters: int = _opt(20, "power route: iterations per singular vector")
    device: str = _opt("cpu", "torch device of the numerics")
    progress: bool | None = _opt(None, "show a progress bar (default: when stderr is a terminal)")
    time_budget: float | None = _opt(None, "stop after this many seconds")
    dtype: str = _opt("float32", "training precision", DTYPES)
    init: str | None = _opt(None, "dense start: the top-m subspace (tensor, the default), its weighted form (spectral), or a Gaussian", INITS)
    positions: bool = _opt(False, "sparse kinds: place the nonzeros by the greedy search of Li et al. before the values train")
    greedy_samples: int = _opt(2, "greedy positions: training matrices the search averages over")
    val_split: str | None = _opt(None, "which matrices validate: a seeded random subset, or the newest (default: random for learn, the newest hour for retrain)", VAL_SPLITS)
    refit: bool = _opt(False, "after validation picks the step count, train again on all the matrices for that many steps")
    powers: tuple[float, ...] = _opt((2.0, 1.5, 1.0), "spectral: candidate powers of each matrix's singular values")
    half_lives: tuple[float | None, ...] = _opt((None, 1.0, 0.5, 0.25), "spectral: candidate half-lives (fractions of the training window; None: no decay)")
    start_folds: int = _opt(3, "spectral: forward-validation folds that choose among the candidates")

    def __post_init__(self) -> None:
        # A config read back from JSON carries lists; keep the frozen config hashable and comparable.
        object.__setattr__(self, "powers", tuple(self.powers))
        object.__setattr__(self, "half_lives", tuple(self.half_lives))

    def validate(self, check_device: bool = True) -> "LearnConfig":
        """Raise UsageError on any inconsistent field; returns self.

        ``check_device=False`` skips the device check, for a driver that
        plans work for other machines (its workers may have the GPU it lacks).
        """
        check_rank(self.k)
        if self.m < 2 and self.kind != "learned":
            raise UsageError("mixed sketches need m >= 2")
        if self.k > self.m:
            raise UsageError(f"k={self.k} exceeds the sketch size m={self.m}")
        for f in fields(self):
            allowed = f.metadata.get("choices")
            value = getattr(self, f.name)
            if allowed is not None and value is not None and value not in allowed:
                raise UsageError(f"unknown {f.name} {value!r}; choose one of {', '.join(allowed)}")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1 or self.patience < 1 or self.power_iters < 1:
            raise UsageError("steps must be >= 0; batch_size, eval_every, patience and power_iters >= 1")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise UsageError(f"time_budget must be positive seconds, got {self.time_budget}")
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
        if check_device:
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


def field_default(cls, name: str) -> Any:
    """The declared default of a dataclass field (for flags that mirror it)."""
    return next(f.default for f in fields(cls) if f.name == name)


def field_choices(cls, name: str) -> tuple | None:
    return next(f.metadata.get("choices") for f in fields(cls) if f.name == name)


def field_help(cls, name: str) -> str | None:
    return next(f.metadata.get("help") for f in fields(cls) if f.name == name)
