"""Frame and matrix sources: video files, images, .npy/.csv arrays, a synthetic stream.

This is the data plane's input side. It knows nothing of sketches: it turns
URLs into uint8 frames (N, H, W, C) or float matrices, and every failure
(missing, undecodable, non-finite or empty input) into a one-line
:class:`~lrstream.errors.DataError`, exit code 3.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import fsspec
import fsspec.implementations.local
import numpy as np

from ..errors import DataError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(url: str, mode: str = "rb"):
    try:
        return fsspec.open(url, mode).open()
    except FileNotFoundError:
        raise DataError(f"source not found: {url}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot open source {url}: {exc}") from None


def read_video(url: str, max_frames: int | None = None) -> np.ndarray:
    """Decode a video (any container ffmpeg reads) into RGB uint8 frames (N, H, W, 3)."""
    frames = []
    for fr in _iter_video(url):
        frames.append(fr.array)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise DataError(f"video {url} has no frames")
    return np.stack(frames)


def read_image(url: str) -> np.ndarray:
    """Read a PNG/JPEG/... image as uint8 (H, W, C) (C = 1 for grayscale, 3 for colour)."""
    from PIL import Image, UnidentifiedImageError

    with _open(url) as f:
        try:
            img = Image.open(io.BytesIO(f.read()))
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"cannot decode image {url}: {exc}") from None
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def read_matrix(url: str) -> np.ndarray:
    """Read one matrix (n, d) or a stack (N, n, d) from .npy, .csv or an image file.

    .npy is read with ``allow_pickle=False``; an image becomes a (C*H, W)
    matrix with its channels stacked as rows, like video frames.
    """
    suffix = os.path.splitext(url.split("?")[0])[1].lower()
    if suffix == ".npy":
        arr = read_array_file(url)
    elif suffix == ".csv":
        with _open(url) as f:
            try:
                arr = np.loadtxt(io.TextIOWrapper(f), delimiter=",", ndmin=2)
            except ValueError as exc:
                raise DataError(f"cannot read {url} as numeric CSV: {exc}") from None
    elif suffix in IMAGE_SUFFIXES:
        arr = frames_to_matrices(read_image(url)[None])[0]
    else:
        raise UsageError(f"unsupported input type {suffix or '(none)'} for {url}; use .npy, .csv or an image")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{url} holds {arr.dtype} data, not numbers")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(f"{url} must hold a non-empty (n, d) or (N, n, d) array, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{url} contains NaN or Inf")
    return arr


def frames_to_matrices(frames: np.ndarray, gray: bool = False) -> np.ndarray:
    """(N, H, W, C) frames -> (N, C*H, W) matrices with channels stacked as rows.

    With ``gray``, colour frames become luminance (ITU-R BT.601) (N, H, W).
    The dtype is kept (uint8 stays uint8); conversion to float is the consumer's.
    """
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4:
        raise DataError(f"frames must be (N, H, W[, C]), got shape {frames.shape}")
    if gray:
        if frames.shape[-1] == 1:
            return frames[..., 0]
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (frames[..., :3].astype(np.float32) @ weights).astype(np.float32)
    N, H, W, C = frames.shape
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)).reshape(N, C * H, W)


def iter_synthetic_frames(n_frames: int, height: int = 72, width: int = 128, channels: int = 3, seed: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """Frames of a deterministic moving-texture video, one uint8 (H, W, C) at a time.

    A smooth random texture (a few random 2-D sinusoids per channel) drifts
    with a constant velocity under a slowly varying illumination, so
    consecutive frames share structure the way real footage does. Frame t of
    the stream depends only on (seed, t), so ``start`` windows of one stream
    concatenate into the same video.
    """
    if n_frames < 0 or height < 1 or width < 1 or channels < 1:
        raise UsageError("synthetic stream needs n_frames >= 0 and positive height, width, channels")
    rng = np.random.default_rng(seed)
    n_waves = 6
    freq = rng.uniform(0.5, 4.0, size=(channels, n_waves, 2))  # cycles per frame size
    phase = rng.uniform(0, 2 * np.pi, size=(channels, n_waves))
    amp = rng.uniform(0.3, 1.0, size=(channels, n_waves))
    velocity = rng.uniform(-1.5, 1.5, size=2)  # pixels per frame
    y = np.arange(height, dtype=np.float64) / height  # (H,)
    x = np.arange(width, dtype=np.float64) / width  # (W,)
    for t in range(start, start + n_frames):
        dy, dx = velocity * t / np.array([height, width])
        light = 0.8 + 0.2 * np.sin(2 * np.pi * t / 97.0)
        out = np.empty((height, width, channels), dtype=np.uint8)
        for c in range(channels):
            # sin(a + b) = sin a cos b + cos a sin b makes every wave a rank-2
            # outer product, so a frame is one (H, 2w) @ (2w, W) product
            # instead of w full-size sin evaluations.
            ay = 2 * np.pi * np.outer(y + dy, freq[c, :, 0])  # (H, w)
            bx = 2 * np.pi * np.outer(x + dx, freq[c, :, 1]) + phase[c]  # (W, w)
            left = np.concatenate([np.sin(ay), np.cos(ay)], axis=1) * np.concatenate([amp[c], amp[c]])  # (H, 2w)
            right = np.concatenate([np.cos(bx), np.sin(bx)], axis=1)  # (W, 2w)
            img = (left @ right.T / amp[c].sum() + 1.0) * 0.5 * light  # (H, W)
            out[:, :, c] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
        yield out


def synthetic_frames(n_frames: int, height: int = 72, width: int = 128, channels: int = 3, seed: int = 0, start: int = 0) -> np.ndarray:
    """The synthetic stream of :func:`iter_synthetic_frames` as one array (n_frames, H, W, C)."""
    frames = list(iter_synthetic_frames(n_frames, height, width, channels, seed, start))
    return np.stack(frames) if frames else np.zeros((0, height, width, channels), np.uint8)


# ----------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Frame:
    """One frame of a source, or the reason it could not be read.

    array: (H, W[, C]) pixels, None if it never decoded; seconds: time from
    the start of the source when the container knows it; problem: why the
    frame is unusable (the writer quarantines it); raw: the undecodable bytes.
    """

    index: int
    array: np.ndarray | None
    seconds: float | None = None
    problem: str | None = None
    raw: bytes | None = None
    origin: str | None = None


SYNTHETIC_SCHEME = "synthetic"


def parse_synthetic(url: str) -> dict:
    """synthetic://?frames=120&height=144&width=256&channels=3&seed=0&start=0 -> keyword arguments."""
    q = parse_qs(urlparse(url).query)
    allowed = {"frames": 120, "height": 144, "width": 256, "channels": 3, "seed": 0, "start": 0}
    unknown = set(q) - set(allowed)
    if unknown:
        raise UsageError(f"unknown synthetic stream parameter(s): {', '.join(sorted(unknown))}")
    try:
        return {k: int(q[k][0]) if k in q else v for k, v in allowed.items()}
    except ValueError:
        raise UsageError(f"synthetic stream parameters must be integers: {url}") from None


# How videos are decoded, pinned rather than left to PyAV's defaults (which
# these are): ffmpeg's slice threads, as many as it likes (0 = auto). Frame
# threading ("AUTO") decodes faster on idle cores; ingest leaves them to its
# encode threads. benchmarks/ingest.py decodes through decode_rgb too.
DECODER_SETTINGS = {"thread_type": "SLICE", "thread_count": 0}


def decode_rgb(container) -> Iterator[tuple[object, np.ndarray]]:
    """(PyAV frame, RGB uint8 (H, W, 3)) for each frame of the container's first video stream.

    One converter serves every frame: ``frame.to_ndarray(format="rgb24")``
    builds a new swscale context (and its threads) per frame, which cost
    about 1 ms of CPU a 720p frame here, a third of decoding it. Same pixels.
    """
    from av.video.reformatter import VideoReformatter

    stream = container.streams.video[0]
    for name, value in DECODER_SETTINGS.items():
        setattr(stream.codec_context, name, value)
    rgb = VideoReformatter()
    for frame in container.decode(stream):
        yield frame, rgb.reformat(frame, format="rgb24").to_ndarray()


def _iter_video(url: str) -> Iterator[Frame]:
    import av

    fs, path = fsspec.core.url_to_fs(url)
    local = isinstance(fs, fsspec.implementations.local.LocalFileSystem)
    with contextlib.nullcontext(path) if local else _open(url) as f:  # a local file by name: ffmpeg reads it without Python (and the GIL)
        try:
            with av.open(f) as container:
                for i, (frame, arr) in enumerate(decode_rgb(container)):
                    yield Frame(i, arr, None if frame.time is None else float(frame.time), origin=url)
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            raise DataError(f"cannot decode video {url}: {exc.__class__.__name__}") from None


def _iter_image_dir(url: str) -> Iterator[Frame]:
    fs, path = fsspec.core.url_to_fs(url)
    names = sorted(p for p in fs.ls(path, detail=False) if os.path.splitext(p)[1].lower() in IMAGE_SUFFIXES)
    if not names:
        raise DataError(f"folder {url} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for i, name in enumerate(names):
        origin = fs.unstrip_protocol(name)
        try:
            yield Frame(i, read_image(origin), origin=origin)
        except DataError as exc:
            with fs.open(name, "rb") as f:
                raw = f.read()
            yield Frame(i, None, problem=str(exc), raw=raw, origin=origin)


def _iter_npy(url: str) -> Iterator[Frame]:
    arr = read_array_file(url)
    if arr.ndim not in (3, 4):
        raise DataError(f"{url} must hold frames (N, H, W) or (N, H, W, C), got shape {arr.shape}")
    for i in range(arr.shape[0]):
        yield Frame(i, np.asarray(arr[i]), origin=url)


def read_array_file(url: str) -> np.ndarray:
    """np.load without pickle from any fsspec URL; a one-line DataError if unreadable."""
    with _open(url) as f:
        try:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"cannot read {url} as .npy: {exc}") from None


def iter_frames(url: str) -> Iterator[Frame]:
    """Frames of one hour's input, in order, without loading a video whole.

    ``url`` is a video file (any container ffmpeg reads), a folder of images,
    a .npy stack (N, H, W[, C]), or ``synthetic://?frames=..&height=..``.
    Lazy: nothing is opened before the first frame is asked for, so a writer
    that finds the hour already published never touches the source.
    Undecodable single images come back as frames with a ``problem``; an
    undecodable video or a missing source raises DataError.
    """
    if url.startswith(SYNTHETIC_SCHEME + "://"):
        kw = parse_synthetic(url)
        frames = iter_synthetic_frames(kw["frames"], kw["height"], kw["width"], kw["channels"], kw["seed"], kw["start"])
        for i, frame in enumerate(frames):
            yield Frame(i, frame, float(i), origin=url)
        return
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise DataError(f"source not found: {url}")
    if fs.isdir(path):
        yield from _iter_image_dir(url)
    elif path.lower().endswith(".npy"):
        yield from _iter_npy(url)
    else:
        yield from _iter_video(url)
