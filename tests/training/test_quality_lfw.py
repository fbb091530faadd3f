"""Learning quality on a second real dataset (scikit-image's LFW faces, as mosaics) and out of distribution."""

import numpy as np
import pytest

import lrstream as L
from lrstream.data.datasets import lfw_mosaics, lfw_split, resize, video_matrices
from lrstream.training.baselines import ivy19, tensor_sketch

K, M = 5, 10


@pytest.fixture(scope="module")
def faces():
    train_images, test_images = lfw_split()
    return lfw_mosaics(48, train_images, seed=0), L.prepare(lfw_mosaics(16, test_images, seed=1))


def test_mosaics_are_distinct_real_images():
    train_images, test_images = lfw_split()
    assert train_images.shape == (150, 25, 25) and test_images.shape == (50, 25, 25)
    mosaic = lfw_mosaics(1, test_images, seed=3)[0]
    tiles = mosaic.reshape(8, 25, 6, 25).transpose(0, 2, 1, 3).reshape(48, 25, 25)
    for t in tiles:  # every tile is one of the held-out images, untouched
        assert np.abs(test_images - t).reshape(50, -1).max(1).min() < 1e-6
    assert len({t.tobytes() for t in tiles}) == 48


def test_faces_our_sketches_beat_ivy19_and_tensor(faces):
    train, test = faces
    random_gap = L.error_gap(L.sparse_random(200, M, seed=0), test, K)
    positions = L.learn(train, K, M, steps=150, positions=True)
    ivy = ivy19(train, K, M, steps=60)
    assert L.error_gap(positions, test, K) * 1.5 < L.error_gap(ivy, test, K)
    assert L.error_gap(positions, test, K) * 3 < random_gap
    dense = L.learn(train, K, M, kind="dense", steps=150)
    assert L.error_gap(dense, test, K) <= L.error_gap(tensor_sketch(train, M), test, K)


def test_out_of_distribution_mixed_keeps_its_guarantee(faces):
    # Trained on video frames, tested on faces: the mixed sketch is never worse than its random half.
    video = resize(video_matrices(pool=4, gray=True), 200, 150)[:40]
    for kind in ("mixed-j", "mixed-s"):
        S = L.learn(video, K, M, kind=kind, steps=60)
        assert L.error_gap(S, faces[1], K) <= L.error_gap(L.random_half(S), faces[1], K) + 1e-12
