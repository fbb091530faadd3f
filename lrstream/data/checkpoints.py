"""Training checkpoints: arrays plus a JSON state in a store folder, without pickle.

Layout of one run's checkpoints, in the folder ``store.run_dir(stream, run_id)``
(beside the stream's sketch versions):

    store.checkpoint_dir(RUN, 25)/params.npy, best_params.npy, opt.exp_avg.npy, ...
    store.checkpoint_dir(RUN, 25)/state.json      published last; names every array with its sha256

A checkpoint is complete once state.json exists, so a parameter server that
dies while writing one resumes from the previous one. Older checkpoints are
pruned after a newer one is complete.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import DataError
from .arrays import read_arrays, write_arrays
from .store import Store

STATE = "state.json"


def save_checkpoint(store: Store | str, folder: str, step: int, arrays: dict[str, np.ndarray], state: dict[str, Any], keep: int = 2) -> str:
    """Write checkpoint ``step`` under ``folder`` (state.json last), then prune all but the newest ``keep``; returns its path."""
    store = Store.of(store)
    path = store.checkpoint_dir(folder, step)
    entries = write_arrays(store, path, arrays)
    store.publish(f"{path}/{STATE}", json.dumps({"step": step, "arrays": entries, "state": state}, allow_nan=False).encode(), exclusive=False)
    complete = [s for s in store.checkpoint_steps(folder) if store.fs.exists(f"{store.checkpoint_dir(folder, s)}/{STATE}")]
    for old in complete[:-keep]:
        store.remove(store.checkpoint_dir(folder, old))
    return path


def load_latest_checkpoint(store: Store | str, folder: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
    """(step, arrays, state) of the newest complete, intact checkpoint under ``folder``, or None.

    A checkpoint whose state or arrays fail their checks is skipped in favour
    of the one before it: losing a few steps beats refusing to resume.
    """
    store = Store.of(store)
    for step in reversed(store.checkpoint_steps(folder)):
        path = store.checkpoint_dir(folder, step)
        try:
            raw = store.read_bytes(f"{path}/{STATE}")
            if raw is None:
                continue
            doc = json.loads(raw)
            return int(doc["step"]), read_arrays(store, path, doc["arrays"]), doc["state"]
        except (ValueError, KeyError, TypeError, AttributeError, DataError):
            continue
    return None
