"""Original-versus-approximation pictures: per row the original, its low-rank approximation and the amplified residual.

:func:`draw_comparison` is what ``lrstream show`` (one stored frame) and
``lrstream factorize --picture`` (one matrix, one row per method) draw. The
layout is computed in pixels (:func:`comparison_size`), not left to
matplotlib, so the PNG's size and every panel's box are known in advance:
tests crop panels by their boxes, and a 1280x720 frame triple stays
readable (panels 480 px wide) while the PNG stays small (under MAX_BYTES,
through a colour palette where true colour would not be).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

MAX_PANEL = 480  # px: the longer side of a panel; 1280x720 frames show at 480x270 (3/8 scale)
MAX_PANEL_AREA = 160_000  # px^2 of one panel in a one-row picture (480x270 fits); r rows get 1/sqrt(r) of it each
MIN_PANEL = 240  # px: narrower frames (a 24x20 test stream) are enlarged by a whole factor up to this width; columns are never narrower
GAP = 12  # px between panels and around the figure
TITLE = 34  # px above each row of panels: two lines of 8 pt panel titles
SUPTITLE = 22  # px per line of the figure title (10 pt)
DPI = 100  # the layout is in pixels; dpi only sets how large the points of the fonts are
BACKGROUND = (0, 0, 0)  # the residual panel's lowest step: black, so anything visible there is error
MAX_BYTES = 300_000  # a PNG larger than this in true colour is written with a 256-colour palette
RESIDUAL_CMAP = "magma"  # dark purple to light yellow at full scale
RESIDUAL_LEVELS = 16  # the residual is shown in whole 16ths of full scale, the lowest as BACKGROUND


Row = tuple[str, np.ndarray, np.ndarray, str]  # (label, original, approximation, caption)


@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a comparison picture: its ``size`` (width, height) and each panel's box (x0, y0, x1, y1), rows top down."""

    size: tuple[int, int]
    panels: list[list[tuple[int, int, int, int]]]
    panel: tuple[int, int]  # (width, height) of every panel


def panel_size(shape: Sequence[int], rows: int = 1) -> tuple[int, int]:
    """(width, height) in pixels of each panel of a ``rows``-row picture of images of ``shape`` (H, W[, C]) (laid out as :func:`display_image` shows them).

    Large images shrink to MAX_PANEL on their longer side and MAX_PANEL_AREA
    / sqrt(rows) in area: rows are there to be compared with each other, so
    a three-method picture gets smaller panels and stays a few hundred KB.
    """
    H, W = _display_hw(shape)
    scale = min(MAX_PANEL / max(H, W), (MAX_PANEL_AREA / rows**0.5 / (H * W)) ** 0.5)
    if scale >= 1:  # whole-factor enlargement to MIN_PANEL wide (titles fit), drawn as whole pixels, so small frames stay crisp
        scale = float(max(1, min(MIN_PANEL // W, MAX_PANEL // max(H, W))))
    return max(1, round(W * scale)), max(1, round(H * scale))


def comparison_size(shape: Sequence[int], rows: int, title_lines: int = 1) -> Layout:
    """The layout of ``rows`` rows of three panels of images of ``shape`` (H, W[, C]) under a title of ``title_lines`` lines."""
    pw, ph = panel_size(shape, rows)
    col = max(pw, MIN_PANEL)  # a narrow panel (a 176 px frame) is centred in a column wide enough for its titles
    top = GAP + SUPTITLE * title_lines
    width = 3 * col + 4 * GAP
    height = top + rows * (TITLE + ph + GAP)
    panels = []
    for r in range(rows):
        y0 = top + r * (TITLE + ph + GAP) + TITLE
        x0s = [GAP + c * (col + GAP) + (col - pw) // 2 for c in range(3)]
        panels.append([(x0, y0, x0 + pw, y0 + ph) for x0 in x0s])
    return Layout((width, height), panels, (pw, ph))


def _display_hw(shape: Sequence[int]) -> tuple[int, int]:
    H, W = int(shape[0]), int(shape[1])
    C = int(shape[2]) if len(shape) > 2 else 1
    return (H, W) if C in (1, 3) else (C * H, W)


def display_image(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W) gray or (H, W, 3) colour as shown; (H, W, 1) becomes (H, W); any other channel count
    is shown as its matrix (C*H, W), channels stacked as rows, the layout the sketches approximate."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        return img[..., 0]
    if img.ndim == 3 and img.shape[-1] != 3:
        return np.ascontiguousarray(img.transpose(2, 0, 1)).reshape(-1, img.shape[1])
    if img.ndim not in (2, 3):
        raise DataError(f"a picture panel needs an image (H, W[, C]), got shape {img.shape}")
    return img


def residual_image(original: np.ndarray, approx: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(magnitude (h, w) float32 in [0, 1], gain, p99): |original - approx| amplified for display.

    The magnitude is the largest absolute difference over the channels, in
    float (uint8 subtraction would wrap). ``gain`` maps its 99th percentile
    to full scale, so the few worst pixels saturate and the typical error is
    visible; the percentile is floored at one gray level so an almost exact
    approximation is not blown up to full scale by rounding noise. An exact
    one is all zero. h, w are those of :func:`display_image`.
    """
    a, b = display_image(original).astype(np.float32), display_image(approx).astype(np.float32)
    if a.shape != b.shape:
        raise DataError(f"original {a.shape} and approximation {b.shape} differ in shape")
    mag = np.abs(a - b)
    if mag.ndim == 3:
        mag = mag.max(axis=-1)
    p99 = float(np.percentile(mag, 99))
    gain = 1.0 / max(p99, 1.0)
    return np.clip(mag * gain, 0.0, 1.0), 255.0 * gain, p99


def _resized(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` (h, w[, 3]), uint8 or float, at ``size`` (width, height): area-averaged when shrunk (no ringing
    to mistake for error), whole pixels when enlarged. Done here rather than by matplotlib so panels are drawn 1:1."""
    from PIL import Image

    if img.shape[1::-1] == tuple(size):
        return img
    shrink = size[0] < img.shape[1]
    pil = Image.fromarray(img.astype(np.float32) if img.dtype != np.uint8 else img)
    return np.asarray(pil.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.NEAREST))


def _residual_rgb(mag: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) of a magnitude in [0, 1]: RESIDUAL_LEVELS steps of the colormap, the lowest BACKGROUND.

    Whole steps rather than a continuous map: the panel reads as "about this
    many 16ths of full scale", and a few hundred colours of noise would make it
    the largest part of the PNG.
    """
    import matplotlib

    colors = (255 * matplotlib.colormaps[RESIDUAL_CMAP].resampled(RESIDUAL_LEVELS)(np.arange(RESIDUAL_LEVELS))[:, :3]).round().astype(np.uint8)
    colors[0] = BACKGROUND  # below 1/16 of full scale: nothing to see
    return colors[np.minimum((mag * RESIDUAL_LEVELS).astype(np.int64), RESIDUAL_LEVELS - 1)]


def _gray_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def draw_comparison(rows: Sequence[Row], path: str, title: str = "") -> Layout:
    """Write a PNG with one row of three panels per entry of ``rows``: original, approximation, amplified residual.

    Args:
        rows: (label, original, approximation, caption) each; original and
            approximation are uint8 of one shape, (H, W) or (H, W, C); every
            row has the same shape. label and caption title the approximation
            panel (e.g. "svd", "rel. error 0.081").
        path: a local path or fsspec URL for the PNG.
        title: the figure's title; may hold several lines.

    Returns the :class:`Layout`: the PNG's size and each panel's box.
    """
    import fsspec
    import matplotlib

    matplotlib.use("Agg")  # no display: the picture only goes to a file
    import matplotlib.pyplot as plt

    if not rows:
        raise DataError("a comparison picture needs at least one row")
    shape = np.asarray(rows[0][1]).shape
    for label, original, approx, _ in rows:
        if np.asarray(original).shape != shape or np.asarray(approx).shape != shape:
            raise DataError(f"row {label!r}: original {np.asarray(original).shape} and approximation {np.asarray(approx).shape} must both be {shape}")
    lines = title.count("\n") + 1 if title else 0
    layout = comparison_size(shape, len(rows), lines)
    W, H = layout.size
    C = shape[2] if len(shape) > 2 else 1
    stacked = "original" if C in (1, 3) else f"original ({C} channels stacked as rows)"
    fig = plt.figure(figsize=(W / DPI, H / DPI), dpi=DPI, facecolor="white")
    try:
        if title:
            fig.text(0.5, 1 - GAP / 2 / H, title, ha="center", va="top", fontsize=10)
        for (label, original, approx, caption), boxes in zip(rows, layout.panels):
            mag, gain, p99 = residual_image(original, approx)
            panels = [
                (_gray_rgb(_resized(display_image(original), layout.panel)), stacked),
                (_gray_rgb(_resized(display_image(approx), layout.panel)), f"{label}\n{caption}" if caption else label),
                (_residual_rgb(_resized(mag, layout.panel)), f"|residual| x{gain:.3g}\n(full scale = p99 = {p99:.3g} levels)"),
            ]
            for (img, name), (x0, y0, x1, y1) in zip(panels, boxes):
                # Axes placed in pixels (figure fractions of the exact size), each image pixel one screen pixel.
                ax = fig.add_axes((x0 / W, 1 - y1 / H, (x1 - x0) / W, (y1 - y0) / H))
                ax.imshow(img, aspect="auto", interpolation="nearest")
                ax.set_axis_off()
                ax.set_title(name, fontsize=8, pad=3)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]  # (H, W, 3): the figure is opaque, alpha adds only bytes
    finally:
        plt.close(fig)
    if rgb.shape[:2] != (H, W):
        raise RuntimeError(f"matplotlib drew {rgb.shape[1]}x{rgb.shape[0]} px, the layout is {W}x{H}")
    with fsspec.open(path, "wb") as f:
        f.write(_png_bytes(rgb))
    return layout


def _png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) as a PNG: true colour, or, where that exceeds MAX_BYTES, an adaptive 256-colour palette.

    PIL rather than savefig: RGB instead of RGBA and the zlib optimiser. A
    detailed 1280x720 frame triple is ~650 KB in true colour and ~220 KB
    as PNG8 (median cut, no dithering), at a mean colour error of ~2 gray
    levels, well below the errors the picture is about; the residual panel
    is computed from the exact arrays before any of this.
    """
    import io

    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb))
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    if out.tell() <= MAX_BYTES:
        return out.getvalue()
    out = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()
