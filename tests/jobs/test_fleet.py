"""Jobs over many streams (--streams / --plan): per-stream results, placement, bounded concurrency, the worst exit code."""

import json

import pytest
import torch

from lrstream.cli import main
from lrstream.data.factors import factor_versions
from lrstream.data.reports import read_reports
from lrstream.data.shards import write_hour
from lrstream.data.sources import iter_frames
from lrstream.data.versions import latest_version, load_version, publish_version
from lrstream.distributed.config import RetrainConfig
from lrstream.errors import EXIT_DATA, EXIT_DRIFT, EXIT_INTERNAL, EXIT_NOTHING, EXIT_OK, EXIT_USAGE, UsageError, worst_exit_code
from lrstream.jobs.fleet import FleetOptions, stream_entries
from lrstream.jobs.train import train_work
from lrstream.training.config import LearnConfig

HOURS = ["2026-05-01T00", "2026-05-01T01", "2026-05-01T02"]
TRAIN = ["--k", "2", "--m", "4", "--steps", "20", "--batch-size", "4", "--hours", f"{HOURS[0]},{HOURS[1]}"]


def _ingest(root, stream, hours=HOURS, height=16):
    for i, h in enumerate(hours):
        src = f"synthetic://?frames=8&height={height}&width=12&channels=2&seed=3&start={8 * i}"
        write_hour(str(root), stream, h, iter_frames(src), src)


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory):
    """Streams a and b (three hours each) and c, whose second hour has another frame shape: the bad stream."""
    root = tmp_path_factory.mktemp("fleet")
    _ingest(root, "a")
    _ingest(root, "b")
    _ingest(root, "c", hours=HOURS[:1])
    _ingest(root, "c", hours=HOURS[1:], height=12)
    return str(root)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_worst_exit_code_follows_the_documented_order():
    assert worst_exit_code([EXIT_OK, EXIT_NOTHING, EXIT_DRIFT]) == EXIT_DRIFT
    assert worst_exit_code([EXIT_DRIFT, EXIT_USAGE]) == EXIT_USAGE
    assert worst_exit_code([EXIT_USAGE, EXIT_DATA, EXIT_NOTHING]) == EXIT_DATA
    assert worst_exit_code([EXIT_DATA, EXIT_INTERNAL]) == EXIT_INTERNAL
    assert worst_exit_code([EXIT_OK, 130]) == 130  # a signal's code counts as the worst
    assert worst_exit_code([]) == EXIT_OK


def test_stream_lists_and_plans(tmp_path):
    assert stream_entries("a, b,c", None) == [("a", {}), ("b", {}), ("c", {})]
    plan = tmp_path / "plan.yaml"
    plan.write_text("streams:\n  - a\n  - {stream: b, k: 5, hours: [2026-05-01T00]}\n")
    assert stream_entries(None, str(plan)) == [("a", {}), ("b", {"k": 5, "hours": ["2026-05-01T00"]})]
    for bad in ("a,a", ",", "a,b/c"):
        with pytest.raises(UsageError):
            stream_entries(bad, None)
    plan.write_text("streams: []\n")
    with pytest.raises(UsageError, match="non-empty"):
        stream_entries(None, str(plan))


def test_placement_follows_the_stream_size_unless_forced(fleet_root):
    cfg = RetrainConfig(learn=LearnConfig(k=2, m=4, batch_size=4), workers=3, cpus_per_worker=2.0)
    selection = {"hours": HOURS[:2]}  # a: 16 frames of 16 x 12 x 2 bytes = 6,144 bytes
    small = train_work(fleet_root, "a", cfg, selection, FleetOptions(single_max_mb=0.01))
    assert small.placement == "single" and small.args[2].workers == 1 and small.num_cpus == 2.0 and small.info["frames_bytes"] == 6144
    large = train_work(fleet_root, "a", cfg, selection, FleetOptions(single_max_mb=0.005))
    assert large.placement == "parallel" and large.args[2].workers == 3 and large.num_cpus == 0.0  # its actors hold the CPUs
    assert train_work(fleet_root, "a", cfg, selection, FleetOptions(placement="parallel")).placement == "parallel"
    missing = train_work(fleet_root, "nosuch", cfg, selection, FleetOptions(placement="auto"))
    assert missing.placement == "single"  # sizing failed: the stream's own task reports why


def test_usage_errors_of_the_stream_flags(fleet_root, tmp_path, capsys):
    assert main(["train", "--root", fleet_root, *TRAIN]) == EXIT_USAGE  # no stream at all
    assert main(["train", "--root", fleet_root, "--stream", "a", "--streams", "a,b", *TRAIN]) == EXIT_USAGE
    plan = tmp_path / "plan.yaml"
    plan.write_text("streams:\n  - {stream: a, no_such_option: 1}\n")
    assert main(["train", "--root", fleet_root, "--plan", str(plan), *TRAIN]) == EXIT_USAGE
    assert "no_such_option" in capsys.readouterr().err


def test_train_then_evaluate_three_streams_on_ray_one_of_them_bad(fleet_root, ray_local, tmp_path, capsys):
    # One task at a time: the tasks' [started, finished] intervals must not overlap.
    code = main(["train", "--root", fleet_root, "--streams", "a,b,c", "--max-concurrent", "1", *TRAIN, "--json"])
    doc = _last_json(capsys)
    assert code == EXIT_DATA and doc["exit_code"] == EXIT_DATA and doc["exit_codes"] == {"3": 1, "0": 2}
    by = {r["stream"]: r for r in doc["results"]}
    assert by["a"]["ok"] and by["b"]["ok"] and not by["c"]["ok"] and by["c"]["type"] == "DataError"
    assert latest_version(fleet_root, "a") == by["a"]["version"] == 1 and latest_version(fleet_root, "b") == 1
    assert latest_version(fleet_root, "c") is None  # nothing published for the bad stream
    spans = sorted((r["started_at"], r["finished_at"]) for r in doc["results"])
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))

    # c gets a sketch of its first hour's shape, so evaluating its second hour is bad data (3);
    # a evaluates its newest unseen hour, b is pinned by the plan to a hour it trained on (still fine).
    assert main(["train", "--root", fleet_root, "--stream", "c", *TRAIN[:-2], "--hours", HOURS[0], "--no-ray"]) == EXIT_OK
    capsys.readouterr()
    plan = tmp_path / "eval.yaml"
    plan.write_text(f"streams:\n  - a\n  - {{stream: b, hour: '{HOURS[0]}', sample: 4}}\n  - {{stream: c, hour: '{HOURS[1]}'}}\n")
    code = main(["evaluate", "--root", fleet_root, "--plan", str(plan), "--json"])
    out = capsys.readouterr()
    doc = json.loads(out.out.strip().splitlines()[-1])
    by = {r["stream"]: r for r in doc["results"]}
    assert code == EXIT_DATA and by["c"]["exit_code"] == EXIT_DATA and by["a"]["ok"] and by["b"]["ok"]
    assert by["a"]["hour"] == HOURS[2] and by["b"]["hour"] == HOURS[0] and by["b"]["sample"] == 4
    assert [r["hour"] for r in read_reports(fleet_root, "a")] == [HOURS[2]] and read_reports(fleet_root, "c") == []
    for name in "abc":
        assert f"stream {name}: " in out.err  # one result line per stream

    # A drift (5) is worse than nothing to do (4): b gets a broken sketch, an unknown stream has nothing.
    good = load_version(fleet_root, "b")
    values = torch.zeros_like(good.values)
    values[0, :2] = 1.0  # sees two rows of A: far worse than random
    publish_version(fleet_root, "b", good.with_values(values))
    code = main(["evaluate", "--root", fleet_root, "--streams", "b,nosuch", "--hour", HOURS[2], "--json"])
    doc = _last_json(capsys)
    assert code == EXIT_DRIFT and doc["exit_codes"] == {"5": 1, "4": 1}
    assert doc["results"][0]["result"]["drift"] is True  # the drifting row still comes back


def test_apply_many_streams_in_process(fleet_root, capsys):
    if latest_version(fleet_root, "a") is None:  # run alone, without the Ray test before it
        assert main(["train", "--root", fleet_root, "--stream", "a", *TRAIN, "--no-ray"]) == EXIT_OK
    code = main(["apply", "--root", fleet_root, "--streams", "a,nosuch", "--hour", HOURS[2], "--no-ray", "--json"])
    doc = _last_json(capsys)
    assert code == EXIT_NOTHING and doc["results"][0]["ok"] and doc["results"][1]["exit_code"] == EXIT_NOTHING
    assert factor_versions(fleet_root, "a", HOURS[2]) == [latest_version(fleet_root, "a")]
