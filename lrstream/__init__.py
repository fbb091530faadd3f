"""lrstream: learned sketches for low-rank approximation of streaming matrices.

Public API (see README.md):

    sparse_random(n, m, seed=0)          CountSketch
    dense_random(n, m, seed=0)           Gaussian sketch
    learn(train, k, m, kind=..., ...)    learned / mixed-j / mixed-s sparse sketch
    scw(sketch, A, k)                    rank-k factors (L, R) inside rowspace(SA)
    error_gap(sketch, test, k)           mean SCW error minus mean optimum, sigma_1-normalised
    load_sketch(url) / sketch.save(url)  plain arrays + JSON, any fsspec URL
"""

from .errors import DataError, DriftError, LrstreamError, NothingToDoError, UsageError
from .learn import LearnConfig, learn
from .scw import GapReport, Prepared, error_gap, evaluate, prepare, scw, sketch_errors
from .sketch import DenseSketch, Sketch, SparseSketch, dense_random, mixed, random_half, sparse_random
from .sketch_io import load_sketch

__all__ = [
    "DataError",
    "DenseSketch",
    "DriftError",
    "GapReport",
    "LearnConfig",
    "LrstreamError",
    "NothingToDoError",
    "Prepared",
    "Sketch",
    "SparseSketch",
    "UsageError",
    "dense_random",
    "error_gap",
    "evaluate",
    "learn",
    "load_sketch",
    "mixed",
    "prepare",
    "random_half",
    "scw",
    "sketch_errors",
    "sparse_random",
]
