"""Ingest throughput: frames/s and MB/s into Arrow shards, side by side with PyAV's decode-only speed.

Sources: the bigbuckbunny clip (132 frames 1280x720) and a synthetic 1080p
stream. For each: decode-only speed and ingest speed (decode + validate +
encode + checksum + write + publish) with the default settings (zstd at a
fast level), with zstd at Arrow's level 1, lz4 and none, plus shard size
against raw size. Decode-only decodes exactly as ingest does
(``lrstream.data.sources.decode_rgb``: DECODER_SETTINGS, one reused RGB
converter); "decode, naive" (``frame.to_ndarray(format="rgb24")``, a new
converter per frame) is shown for reference. For the synthetic stream,
decode-only is the generator's own speed. After one untimed warm-up run
each, the modes run interleaved, ``--rounds`` times, in a rotating order,
so a load change on a shared machine hits them alike; each row is the
median of its runs, and the ratio is median ingest over median
decode-only frames/s. Prints a table and writes JSON (default
benchmarks/ingest.json) with the load average.

    python benchmarks/ingest.py [--rounds 3] [--synthetic-frames 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import av

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import write_report  # noqa: E402

from lrstream.data.datasets import sample_video_path
from lrstream.data.shards import WriteOptions, write_hour
from lrstream.data.sources import DECODER_SETTINGS, decode_rgb, iter_frames

DEFAULT = WriteOptions()
CODECS = {  # mode -> (compression, level); the first is the default
    f"ingest {DEFAULT.compression} {DEFAULT.level}": (DEFAULT.compression, DEFAULT.level),
    "ingest zstd 1": ("zstd", 1),  # Arrow's own zstd level, the default before
    "ingest lz4": ("lz4", None),
    "ingest none": ("none", None),
}


def decode_only(url: str, naive: bool = False) -> tuple[int, int, float, float]:
    """(frames, raw bytes, seconds, shard/raw = None) of decoding alone, as ingest decodes (or with a fresh converter per frame)."""
    t = time.perf_counter()
    n = nbytes = 0
    if url.startswith("synthetic://"):
        for fr in iter_frames(url):
            n, nbytes = n + 1, nbytes + fr.array.nbytes
    else:
        with av.open(url) as c:
            if naive:
                stream = c.streams.video[0]
                for name, value in DECODER_SETTINGS.items():
                    setattr(stream.codec_context, name, value)
                arrays = (frame.to_ndarray(format="rgb24") for frame in c.decode(stream))
            else:
                arrays = (arr for _, arr in decode_rgb(c))
            for arr in arrays:
                n, nbytes = n + 1, nbytes + arr.nbytes
    return n, nbytes, time.perf_counter() - t, None


def ingest(url: str, compression: str, level: int | None) -> tuple[int, int, float, float]:
    root = tempfile.mkdtemp(prefix="lrstream-bench-")
    try:
        t = time.perf_counter()
        res = write_hour(root, "bench", "2026-01-01T00", iter_frames(url), url, WriteOptions(compression=compression, compression_level=level))
        secs = time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return res.rows, res.raw_bytes, secs, res.bytes / res.raw_bytes


def measure(label: str, url: str, rounds: int) -> list[dict]:
    modes = {"decode only": lambda: decode_only(url), **{m: (lambda c=c: ingest(url, *c)) for m, c in CODECS.items()}}
    if not url.startswith("synthetic://"):
        modes["decode, naive"] = lambda: decode_only(url, naive=True)  # frame.to_ndarray(format="rgb24"): for reference, not the ratio's base
    names = list(modes)
    runs: dict[str, list] = {m: [] for m in names}
    for m in names:  # one untimed warm-up run each (imports, first-touch memory, the codecs' first contexts)
        modes[m]()
    for r in range(rounds):
        for m in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            runs[m].append(modes[m]())
    rows = []
    for m in names:
        n, nbytes, _, shard = runs[m][0]
        fps = [run[0] / run[2] for run in runs[m]]
        secs = statistics.median(run[2] for run in runs[m])
        rows.append({"source": label, "mode": m, "frames": n, "seconds": secs, "frames_per_s": statistics.median(fps), "mb_per_s": nbytes / 1e6 / secs, "shard_over_raw": shard, "runs_frames_per_s": fps})
    base = rows[0]["frames_per_s"]
    for row in rows[1:]:
        if row["mode"].startswith("ingest"):
            row["ratio_to_decode"] = row["frames_per_s"] / base
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--synthetic-frames", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "ingest.json"))
    args = ap.parse_args()
    sources = {
        "bigbuckbunny 1280x720": sample_video_path(),
        "synthetic 1920x1080": f"synthetic://?frames={args.synthetic_frames}&height=1080&width=1920&seed=0",
    }
    load_before = os.getloadavg()
    rows = []
    print(f"{'source':<24}{'mode':<18}{'frames':>7}{'frames/s':>10}{'MB/s raw':>10}{'shard/raw':>10}{'x decode':>10}")
    for label, url in sources.items():
        for row in measure(label, url, args.rounds):
            rows.append(row)
            shard = "" if row["shard_over_raw"] is None else f"{row['shard_over_raw']:.3f}"
            ratio = f"{row['ratio_to_decode']:.2f}" if "ratio_to_decode" in row else ""
            print(f"{label:<24}{row['mode']:<18}{row['frames']:>7}{row['frames_per_s']:>10.1f}{row['mb_per_s']:>10.1f}{shard:>10}{ratio:>10}", flush=True)
    load_after = os.getloadavg()
    bbb = {r["mode"]: r for r in rows if r["source"].startswith("bigbuckbunny")}
    default = next(iter(CODECS))
    ratio = bbb[default]["ratio_to_decode"]
    print(f"bigbuckbunny: {default} (the default) / PyAV decode = {ratio:.2f} (medians of {args.rounds} interleaved rounds); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    write_report(
        args.out,
        "ingest",
        rows,
        ratio=ratio,
        ratio_is=f"bigbuckbunny ingest with the default settings (zstd level {DEFAULT.level}, {DEFAULT.rows_per_shard} rows per shard, {DEFAULT.encode_threads} encode threads) over PyAV decode-only frames/s (decoded as ingest decodes), medians of {args.rounds} interleaved rounds",
        decoder_settings=DECODER_SETTINGS,
        load_average={"before": load_before, "after": load_after},
        note="decode only and ingest use the same decoder settings and rgb24 conversion; decode only uses about one core, ingest one decoding thread plus the encode threads; synthetic 'decode only' is the generator's own speed; ingest of one stream runs in one process (one Ray actor)",
    )


if __name__ == "__main__":
    main()
