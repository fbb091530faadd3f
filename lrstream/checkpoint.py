"""Training checkpoints: arrays plus a JSON state, on any fsspec URL, without pickle.

Layout of one run's checkpoints (the run folder lives beside the sketch versions):

    RUN/step=00000025/params.npy, best_params.npy, opt.exp_avg.npy, ...
    RUN/step=00000025/state.json      written last; names every array with its sha256

A checkpoint is complete once state.json exists, so a parameter server that
dies while writing one resumes from the previous one. Older checkpoints are
pruned after a newer one is complete.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import DataError
from .sketch_io import read_array, write_arrays
from .storage import numbered_children, url_to_fs

STATE = "state.json"


def _steps(fs, root: str) -> list[int]:
    return numbered_children(fs, root, "step=")


def save_checkpoint(url: str, step: int, arrays: dict[str, np.ndarray], state: dict[str, Any], keep: int = 2) -> str:
    """Write checkpoint ``step`` under ``url`` (state.json last), then prune all but the newest ``keep``."""
    fs, root = url_to_fs(url)
    folder = f"{root}/step={step:08d}"
    entries = write_arrays(fs, folder, arrays)
    with fs.open(f"{folder}/{STATE}", "w") as f:
        json.dump({"step": step, "arrays": entries, "state": state}, f, allow_nan=False)
    complete = [s for s in _steps(fs, root) if fs.exists(f"{root}/step={s:08d}/{STATE}")]
    for old in complete[:-keep]:
        fs.rm(f"{root}/step={old:08d}", recursive=True)
    return folder


def load_latest_checkpoint(url: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
    """(step, arrays, state) of the newest complete, intact checkpoint under ``url``, or None.

    A checkpoint whose state or arrays fail their checks is skipped in favour
    of the one before it: losing a few steps beats refusing to resume.
    """
    fs, root = url_to_fs(url)
    for step in reversed(_steps(fs, root)):
        folder = f"{root}/step={step:08d}"
        try:
            with fs.open(f"{folder}/{STATE}", "r") as f:
                doc = json.load(f)
            arrays = {name: read_array(fs, folder, name, entry) for name, entry in doc["arrays"].items()}
            return int(doc["step"]), arrays, doc["state"]
        except (FileNotFoundError, ValueError, KeyError, TypeError, DataError):
            continue
    return None
