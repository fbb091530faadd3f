"""The show job: one stored frame next to its rank-k approximation from the stored factors, and the residual, as a PNG.

The original is the raw frame of the published hour (for a gray sketch its
luminance, the matrix the factors approximate); the approximation is L @ R
of the factors ``lrstream apply`` stored for that frame
(:func:`lrstream.data.factors.reconstruct`). The title carries the sketch
(kind, version, k, m), the frame's relative error as stored and the hour's
compression ratio; :mod:`lrstream.jobs.pictures` draws it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.factors import factor_versions, read_factors_manifest, read_frame_factors, reconstruct
from ..data.reader import read_frame
from ..data.sources import frames_to_matrices
from ..data.store import Store, check_hour
from ..errors import NothingToDoError, UsageError
from .pictures import draw_comparison


@dataclass(frozen=True)
class ShowJob:
    """Which stored frame ``lrstream show`` draws and where; the flags mirror these fields."""

    hour: str = field(metadata={"help": "hour label YYYY-MM-DDTHH of the frame"})
    frame: int = field(metadata={"help": "the frame's frame_index in that hour (as ingested; quarantined frames leave gaps)"})
    version: int | None = field(default=None, metadata={"help": "sketch version whose factors to show (default: the newest with stored factors for that hour)"})
    out: str | None = field(default=None, metadata={"help": "PNG path or fsspec URL (default: show-STREAM-HOUR-FRAME.png in the current directory)"})


def default_out(stream: str, hour: str, frame: int) -> str:
    return os.path.join(os.getcwd(), f"show-{stream}-{hour}-{frame}.png")


def _version(store: Store, stream: str, hour: str, version: int | None) -> tuple[int, dict[str, Any]]:
    """(version, its factors manifest): the one asked for, else the newest with factors for ``hour``; NothingToDoError if none."""
    if version is None:
        versions = factor_versions(store, stream, hour)
        if not versions:
            raise NothingToDoError(f"stream {stream} hour {hour} has no stored factors (run `lrstream apply --hour {hour}`)")
        version = versions[-1]
    doc = read_factors_manifest(store, stream, hour, int(version))
    if doc is None:
        raise NothingToDoError(f"stream {stream} hour {hour} has no factors for sketch version {version} (run `lrstream apply --hour {hour} --version {version}`)")
    return int(version), doc


def _as_shown(frame: np.ndarray, gray: bool) -> np.ndarray:
    """The raw frame (H, W, C) as the factors saw it, in uint8: (H, W) luminance for a gray sketch, else unchanged."""
    if not gray:
        return frame
    lum = frames_to_matrices(frame[None], gray=True)[0]  # (H, W), float32 for colour frames
    return np.clip(np.rint(lum), 0, 255).astype(np.uint8)


def run_show(store: Store | str, stream: str, job: ShowJob, log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """The ``show`` command: draw frame ``job.frame`` of ``job.hour`` next to its stored approximation; returns what was drawn.

    Errors: a malformed hour or a negative frame is a UsageError (exit 2);
    no factors for the hour (or the version), or no such frame, is a
    NothingToDoError (exit 4).
    """
    check_hour(job.hour)
    if int(job.frame) < 0:
        raise UsageError(f"--frame must be >= 0, got {job.frame}")
    store = Store.of(store)
    version, doc = _version(store, stream, job.hour, job.version)
    L, R, row = read_frame_factors(store, stream, job.hour, version, int(job.frame))  # L (n, k), R (k, d)
    gray = bool(doc.get("gray", False))
    approx = reconstruct(L, R, doc["frame_shape"], gray=gray)  # uint8 (H, W, C); (H, W, 1) when gray
    original = _as_shown(read_frame(store, stream, job.hour, int(job.frame)), gray)
    if gray:
        approx = approx[..., 0]
    k, m, kind, ratio = int(doc["k"]), int(doc["m"]), str(doc["kind"]), doc.get("ratio")
    rel = float(row["rel_error"])
    ratio_text = f"compression {ratio:.3g}x ({doc['dtype']} factors)" if ratio else f"{doc['dtype']} factors"
    title = (
        f"stream {stream}  hour {job.hour}  frame {job.frame}{'  (luminance)' if gray else ''}\n"
        f"{kind} sketch v{version}: k={k}, m={m}   rel. error {rel:.4g}   {ratio_text}"
    )
    out = job.out or default_out(stream, job.hour, int(job.frame))
    layout = draw_comparison([(f"rank-{k} approximation", original, approx, f"rel. error {rel:.4g}")], out, title)
    log(f"frame {job.frame} of stream {stream} hour {job.hour}: {kind} sketch v{version}, k={k}, m={m}, relative error {rel:.6g}; picture written to {out}")
    return {
        "path": out,
        "stream": stream,
        "hour": job.hour,
        "frame": int(job.frame),
        "version": version,
        "kind": kind,
        "k": k,
        "m": m,
        "gray": gray,
        "error": float(row["error"]),
        "rel_error": rel,
        "ratio": ratio,
        "size": list(layout.size),
    }
