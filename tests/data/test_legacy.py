"""What the flat-layout code (before the restructure, commit e8b3a5b) stored still loads, and new versions go beside it.

``tests/data/legacy/root`` was written by that code: a mixed sparse sketch
(v=1), a dense one (v=2, LATEST) and one published hour of the synthetic
stream in three shards.
"""

import shutil
from pathlib import Path

import numpy as np
import torch

import lrstream as L
from lrstream.data.reader import HourReader
from lrstream.data.shards import iter_hour_frames, list_hours
from lrstream.data.sources import synthetic_frames
from lrstream.data.versions import latest_version, list_versions, load_version, publish_version

LEGACY = Path(__file__).parent / "legacy" / "root"


def test_old_sketches_hours_and_pointer_load_unchanged(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(LEGACY, root)  # a copy: the test publishes beside it
    assert list_versions(str(root), "cam") == [1, 2] and latest_version(str(root), "cam") == 2
    mixed, dense = load_version(str(root), "cam", 1), load_version(str(root), "cam")
    want = L.mixed(L.sparse_random(16, 3, seed=5), 2, seed=6)
    assert torch.equal(mixed.to_dense(), want.to_dense()) and torch.equal(mixed.trainable, want.trainable) and mixed.meta["version"] == 1
    assert torch.equal(dense.matrix, L.dense_random(16, 4, seed=7).matrix) and dense.meta["k"] == 2
    assert list_hours(str(root), "cam") == ["2026-01-01T00"]
    frames = np.concatenate([f for f, _ in iter_hour_frames(str(root), "cam", "2026-01-01T00")])
    np.testing.assert_array_equal(frames, synthetic_frames(5, 4, 6, 2, seed=1))
    assert HourReader(str(root), "cam", ["2026-01-01T00"]).load().shape == (5, 8, 6)
    assert publish_version(str(root), "cam", dense) == 3 and latest_version(str(root), "cam") == 3
