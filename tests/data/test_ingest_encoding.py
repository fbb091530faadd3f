"""How parts are encoded: zstd at a fast level by default, any zstd or lz4 level and none on request, a pool of encode threads, old hours still read."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from lrstream.data.shards import ZSTD_LEVEL, WriteOptions, iter_hour_frames, read_manifest, write_hour
from lrstream.data.sources import iter_frames, synthetic_frames
from lrstream.data.store import Store
from lrstream.errors import UsageError

H = "2026-11-22T07"
SYN = "synthetic://?frames=23&height=24&width=32&seed=4"
LZ4_MAGIC, ZSTD_MAGIC = b"\x04\x22\x4d\x18", b"\x28\xb5\x2f\xfd"  # frame headers of the codecs Arrow IPC uses
LEGACY = Path(__file__).parent / "legacy" / "root"


def parts(root: Path, stream: str) -> list[Path]:
    doc = read_manifest(str(root), stream, H)
    return [root / "frames" / f"stream={stream}" / f"hour={H}" / f["path"] for f in doc["files"]]


def frames(root: Path, stream: str, hour: str = H) -> np.ndarray:
    return np.concatenate([f for f, _ in iter_hour_frames(str(root), stream, hour)])


def test_default_is_fast_zstd_and_other_codecs_and_levels_stay_selectable(tmp_path):
    assert WriteOptions().compression == "zstd" and WriteOptions().level == ZSTD_LEVEL < 0
    want = (np.arange(10 * 48 * 64 * 3) // 7 % 5).astype(np.uint8).reshape(10, 48, 64, 3)  # frames the codecs can shrink
    np.save(tmp_path / "f.npy", want)
    src = str(tmp_path / "f.npy")
    cases = {"default": ({}, "zstd", ZSTD_LEVEL), "zstd1": ({"compression": "zstd", "compression_level": 1}, "zstd", 1), "lz4": ({"compression": "lz4"}, "lz4", 1), "lz4hc": ({"compression": "lz4", "compression_level": 9}, "lz4", 9), "none": ({"compression": "none"}, "none", None)}
    for stream, (opts, codec, level) in cases.items():
        write_hour(str(tmp_path / "root"), stream, H, iter_frames(src), src, WriteOptions(rows_per_shard=4, **opts))
        np.testing.assert_array_equal(frames(tmp_path / "root", stream), want)
        doc = read_manifest(str(tmp_path / "root"), stream, H)
        assert (doc["compression"], doc["compression_level"]) == (codec, level)
        data = [p.read_bytes() for p in parts(tmp_path / "root", stream)]
        assert len(data) == 3
        magic = {"lz4": LZ4_MAGIC, "zstd": ZSTD_MAGIC, "none": None}[codec]
        for d in data:
            assert (magic in d) if magic else (LZ4_MAGIC not in d and ZSTD_MAGIC not in d)
    sizes = {s: sum(p.stat().st_size for p in parts(tmp_path / "root", s)) for s in cases}
    assert max(sizes[s] for s in cases if s != "none") < sizes["none"]


def test_hours_written_before_the_fast_default_still_read(tmp_path):
    """The committed legacy hour (zstd at Arrow's level 1, one record batch per part, no compression_level in its manifest) reads back unchanged next to new hours."""
    root = tmp_path / "root"
    shutil.copytree(LEGACY, root)
    old = read_manifest(str(root), "cam", "2026-01-01T00")
    assert old["compression"] == "zstd" and "compression_level" not in old
    assert all(ZSTD_MAGIC in (root / "frames" / "stream=cam" / "hour=2026-01-01T00" / f["path"]).read_bytes() for f in old["files"])
    np.testing.assert_array_equal(frames(root, "cam", "2026-01-01T00"), synthetic_frames(5, 4, 6, 2, seed=1))
    for hour, opts in ((H, {}), ("2026-11-22T08", {"compression": "lz4"})):  # the new default and lz4, beside the old hour
        write_hour(str(root), "cam", hour, iter_frames(SYN), SYN, WriteOptions(**opts))
        np.testing.assert_array_equal(frames(root, "cam", hour), synthetic_frames(23, 24, 32, seed=4))
    np.testing.assert_array_equal(frames(root, "cam", "2026-01-01T00"), synthetic_frames(5, 4, 6, 2, seed=1))


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_parts_encoded_in_a_pool_keep_their_order_and_checksums(tmp_path, threads):
    write_hour(str(tmp_path), "cam", H, iter_frames(SYN), SYN, WriteOptions(rows_per_shard=2, encode_threads=threads))
    doc = read_manifest(str(tmp_path), "cam", H)
    assert [f["path"].rsplit("/", 1)[1] for f in doc["files"]] == [f"part-{i:05d}.arrow" for i in range(12)]
    assert [f["first_index"] for f in doc["files"]] == list(range(0, 23, 2)) and [f["rows"] for f in doc["files"]] == [2] * 11 + [1]
    for entry, path in zip(doc["files"], parts(tmp_path, "cam")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"] and path.stat().st_size == entry["bytes"]
    got = list(iter_hour_frames(str(tmp_path), "cam", H))
    np.testing.assert_array_equal(np.concatenate([f for f, _ in got]), synthetic_frames(23, 24, 32, seed=4))
    assert np.concatenate([i for _, i in got]).tolist() == list(range(23))


class _FailingFile:
    """A part file whose second write fails, as on a full disk: the error comes from inside an encode thread."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            raise OSError("disk full")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("rows_per_shard", [1, 4])
def test_a_failing_encode_thread_publishes_nothing_and_removes_its_attempt(tmp_path, monkeypatch, rows_per_shard):
    real = Store.open_write
    monkeypatch.setattr(Store, "open_write", lambda self, path: _FailingFile(real(self, path)) if path.endswith("part-00003.arrow") else real(self, path))
    with pytest.raises(OSError, match="disk full"):
        write_hour(str(tmp_path), "cam", H, iter_frames(SYN), SYN, WriteOptions(rows_per_shard=rows_per_shard))
    hour_dir = tmp_path / "frames" / "stream=cam" / f"hour={H}"
    assert read_manifest(str(tmp_path), "cam", H) is None
    assert not hour_dir.exists() or not list(hour_dir.glob("attempt=*"))
    monkeypatch.setattr(Store, "open_write", real)
    assert write_hour(str(tmp_path), "cam", H, iter_frames(SYN), SYN).status == "ingested"


def test_a_failing_source_stops_the_encode_threads_and_removes_its_attempt(tmp_path):
    def frames():
        yield from list(iter_frames(SYN))[:9]
        raise OSError("camera gone")

    with pytest.raises(OSError, match="camera gone"):
        write_hour(str(tmp_path), "cam", H, frames(), SYN, WriteOptions(rows_per_shard=2))
    hour_dir = tmp_path / "frames" / "stream=cam" / f"hour={H}"
    assert read_manifest(str(tmp_path), "cam", H) is None
    assert not hour_dir.exists() or not list(hour_dir.glob("attempt=*"))


@pytest.mark.parametrize(
    "opts,message",
    [
        ({"encode_threads": 0}, "encode_threads"),
        ({"compression": "none", "compression_level": 1}, "takes no level"),
        ({"compression": "zstd", "compression_level": 23}, "zstd level must be in"),
        ({"compression": "lz4", "compression_level": 0}, "lz4 level must be in"),
        ({"compression": "gzip"}, "compression must be one of"),
    ],
)
def test_bad_encode_options_are_usage_errors(opts, message):
    with pytest.raises(UsageError, match=message):
        WriteOptions(**opts).validate()


def test_parts_of_several_record_batches_read_like_one(tmp_path, monkeypatch):
    """Large frames leave in batches of about BATCH_BYTES, so a part holds several record batches; every reader sees the same rows."""
    import pyarrow.dataset as ds
    from pyarrow import ipc

    import lrstream.data.shards as shards

    monkeypatch.setattr(shards, "BATCH_BYTES", 2 * 24 * 32 * 3)  # two frames a batch
    write_hour(str(tmp_path), "cam", H, iter_frames(SYN), SYN, WriteOptions(rows_per_shard=5))
    paths = parts(tmp_path, "cam")
    assert [ipc.open_file(str(p)).num_record_batches for p in paths] == [3] * 4 + [2]
    want = synthetic_frames(23, 24, 32, seed=4)
    np.testing.assert_array_equal(frames(tmp_path, "cam"), want)
    table = ds.dataset([str(p) for p in paths], format="ipc").to_table()
    np.testing.assert_array_equal(table.column("frame").combine_chunks().to_numpy_ndarray(), want)
    assert table.column("frame_index").to_pylist() == list(range(23))
    some = shards.read_rows_at(str(tmp_path), "cam", H, [0, 3, 4, 9, 22])
    np.testing.assert_array_equal(some.column("frame").combine_chunks().to_numpy_ndarray(), want[[0, 3, 4, 9, 22]])
    rows = np.concatenate([f for f, _ in iter_hour_frames(str(tmp_path), "cam", H, rows=(3, 12))])
    np.testing.assert_array_equal(rows, want[3:12])


def test_video_frames_decode_to_the_pixels_of_to_ndarray():
    """decode_rgb (one reused converter) gives exactly frame.to_ndarray(format="rgb24")."""
    import av

    from lrstream.data.datasets import sample_video_path
    from lrstream.data.sources import DECODER_SETTINGS, decode_rgb

    with av.open(sample_video_path()) as c:
        got = [(f.pts, a) for (f, a), _ in zip(decode_rgb(c), range(12))]
        ctx = c.streams.video[0].codec_context
        assert DECODER_SETTINGS["thread_type"] == "SLICE" and ctx.thread_type == av.codec.context.ThreadType.SLICE  # (thread_count 0 reads back as ffmpeg's pick)
    with av.open(sample_video_path()) as c:
        want = [(f.pts, f.to_ndarray(format="rgb24")) for f, _ in zip(c.decode(video=0), range(12))]
    assert [p for p, _ in got] == [p for p, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert a.shape == (720, 1280, 3) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
