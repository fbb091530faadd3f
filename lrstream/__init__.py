"""lrstream: learned sketches for low-rank approximation of streaming matrices.

Public API (see README.md):

    sparse_random(n, m, seed=0)            CountSketch
    dense_random(n, m, seed=0)             Gaussian sketch
    learn(train, k, m, kind=..., ...)      learned / mixed-j / mixed-s / dense sketch
    scw(sketch, A, k)                      rank-k factors (L, R) inside rowspace(SA)
    error_gap(sketch, test, k)             mean SCW error minus mean optimum, sigma_1-normalised
    save_sketch(sketch, url) / load_sketch(url)   plain arrays + JSON, any fsspec URL
    apply_sketch(sketch, frames, k)        what ``lrstream apply`` stores: float16 L, R and each frame's error
    reconstruct(L, R, frame_shape)         stored factors back to a uint8 (H, W, C) frame

The package is the pipeline, one folder a stage: ``numerics`` (torch only),
``training`` (the one training core and its in-process driver), ``data``
(the Store and everything stored), ``distributed`` (the only package that
imports Ray) and ``jobs`` (what the CLI runs). Persistence is imported on
first use, so importing the numerics never loads storage code.
"""

from .errors import DataError, DriftError, LrstreamError, NothingToDoError, UsageError
from .numerics.apply import FrameFactors, apply_sketch
from .numerics.scw import GapReport, Prepared, error_gap, evaluate, prepare, scw, sketch_errors
from .numerics.sketch import DenseSketch, Sketch, SparseSketch, dense_random, mixed, random_half, sparse_random
from .training.config import LearnConfig
from .training.learn import learn

_LAZY = {"load_sketch": "lrstream.data.sketches", "save_sketch": "lrstream.data.sketches", "reconstruct": "lrstream.data.factors"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lrstream' has no attribute {name!r}")


__all__ = [
    "DataError",
    "DenseSketch",
    "DriftError",
    "FrameFactors",
    "GapReport",
    "LearnConfig",
    "LrstreamError",
    "NothingToDoError",
    "Prepared",
    "Sketch",
    "SparseSketch",
    "UsageError",
    "apply_sketch",
    "dense_random",
    "error_gap",
    "evaluate",
    "learn",
    "load_sketch",
    "mixed",
    "prepare",
    "random_half",
    "reconstruct",
    "save_sketch",
    "scw",
    "sketch_errors",
    "sparse_random",
]
