"""The capacity model's projection (benchmarks/capacity.py: project), on made-up measurements: pure arithmetic, no measuring."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "capacity.py")
_spec = importlib.util.spec_from_file_location("capacity_model", _PATH)
capacity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(capacity)


def measured(ingest=0.01, apply=0.02, numerics=0.012, shard_read=0.005, per_sample=0.05, per_hour=0.2, per_hour_frame=0.0001, frames=2_000_000, factors=60_000, raw=2_764_800):
    return {
        "resolution": {"height": 720, "width": 1280, "channels": 3},
        "cpu_s_per_frame": {"ingest": ingest, "apply": apply, "apply_numerics": numerics, "shard_read": shard_read},
        "evaluate": {"per_sampled_frame_cpu_s": per_sample, "per_hour_frame_cpu_s": per_hour_frame, "per_hour_cpu_s": per_hour},
        "train": {"load_cpu_s_per_frame": 0.1, "step_cpu_s": 0.25, "val_cpu_s_per_frame": 0.01, "final_val_cpu_s_per_frame": 1.0, "eval_every": 25},
        "bytes_per_frame": {"raw": raw, "frames": frames, "factors": factors},
        "bytes_per_hour": {"report": 10_000},
        "bytes_per_retrain": {"sketch": 50_000},
        "requests": {
            "put_fixed_per_hour": {"ingest": 1, "apply": 1, "evaluate": 1},
            "get_fixed_per_hour": {"ingest": 1, "apply": 7, "evaluate": 7},
            "put_fixed_per_retrain": 7,
            "puts_per_checkpoint": 6,
            "checkpoints_per_validation": 2,
            "checkpoint_every": 25,
            "get_fixed_per_retrain": 6,
        },
    }


def only_ingest(cpu: float) -> dict:
    """Measurements where ingest is the only steady CPU cost."""
    return measured(ingest=cpu, apply=0.0, numerics=0.0, per_sample=0.0, per_hour=0.0, per_hour_frame=0.0, shard_read=0.0)


def test_doubling_streams_doubles_cores_nodes_storage_and_requests():
    m = measured()
    one = capacity.project(m, 5000, 1.0, 720, 1280)
    two = capacity.project(m, 10000, 1.0, 720, 1280)
    for stage in ("ingest", "apply", "evaluate", "steady_total"):
        assert two["cores"][stage] == pytest.approx(2 * one["cores"][stage])
    assert one["cpu_nodes"] <= two["cpu_nodes"] <= 2 * one["cpu_nodes"]
    assert two["cpu_nodes"] == math.ceil(two["cores"]["steady_total"] / 16)
    assert two["retrain"]["window_cores"] == pytest.approx(2 * one["retrain"]["window_cores"])
    assert two["storage"]["per_day_bytes"]["factors"] == pytest.approx(2 * one["storage"]["per_day_bytes"]["factors"])
    assert two["requests"]["puts_per_s"]["total"] == pytest.approx(2 * one["requests"]["puts_per_s"]["total"])
    # Cores that fill whole nodes exactly: doubling the streams doubles the nodes.
    exact = only_ingest(0.016)
    assert capacity.project(exact, 1000, 1.0, 720, 1280, utilization=1.0)["cpu_nodes"] == 1
    assert capacity.project(exact, 2000, 1.0, 720, 1280, utilization=1.0)["cpu_nodes"] == 2


def test_nodes_are_the_ceiling_of_cores_over_cores_per_node():
    exact = only_ingest(0.016)  # 1000 streams at 1 frame/s: 16 cores at full utilisation
    p = capacity.project(exact, 1000, 1.0, 720, 1280, utilization=1.0, cpu_per_node=16)
    assert p["cores"]["steady_total"] == pytest.approx(16.0)
    assert p["cpu_nodes"] == 1  # exactly full: no extra node for floating-point dust
    assert capacity.project(only_ingest(0.01601), 1000, 1.0, 720, 1280, utilization=1.0)["cpu_nodes"] == 2
    assert capacity.project(exact, 1000, 1.0, 720, 1280, utilization=0.5)["cpu_nodes"] == 2  # 32 cores
    assert capacity.project(exact, 1000, 1.0, 720, 1280, utilization=0.6)["cpu_nodes"] == math.ceil(16 / 0.6 / 16)
    assert capacity.project(exact, 1, 1.0, 720, 1280)["cpu_nodes"] == 1  # any work at all needs a node
    none = capacity.project(exact, 0, 1.0, 720, 1280)
    assert none["cpu_nodes"] == 0 and none["retrain"]["window_nodes"] == 0


def test_storage_per_day_and_over_the_retention_window():
    m = measured(frames=2_000_000, factors=60_000)
    p = capacity.project(m, 100, 2.0, 720, 1280, retention_days=30)
    frames_per_day = 100 * 2.0 * 86400
    s = p["storage"]
    assert s["per_day_bytes"]["frame_shards"] == pytest.approx(frames_per_day * 2_000_000)
    assert s["per_day_bytes"]["factors"] == pytest.approx(frames_per_day * 60_000)
    assert s["retention_bytes"]["frame_shards"] == pytest.approx(30 * frames_per_day * 2_000_000)
    assert s["retention_bytes"]["factors"] == pytest.approx(30 * frames_per_day * 60_000)
    assert s["retention_bytes"]["reports_and_sketches"] == pytest.approx(30 * 100 * (24 * 10_000 + 50_000))
    assert s["write_bytes_per_s"] == pytest.approx(200 * (2_000_000 + 60_000))
    assert s["frame_shards_over_factors"] == pytest.approx(2_000_000 / 60_000)


def test_resolution_scales_cpu_and_frames_with_pixels_and_factors_with_n_plus_d():
    m = measured()
    base = capacity.project(m, 1000, 1.0, 720, 1280)
    hd = capacity.project(m, 1000, 1.0, 1080, 1920)
    assert hd["pixel_scale"] == pytest.approx(2.25)
    assert hd["cores"]["ingest"] == pytest.approx(2.25 * base["cores"]["ingest"])
    assert hd["cores"]["apply"] == pytest.approx(2.25 * base["cores"]["apply"])
    assert hd["storage"]["bytes_per_frame"]["frame_shards"] == pytest.approx(2.25 * 2_000_000)
    assert hd["storage"]["bytes_per_frame"]["factors"] == pytest.approx(60_000 * (3 * 1080 + 1920) / (3 * 720 + 1280))
    assert hd["retrain"]["cpu_s_per_retrain"] == pytest.approx(2.25 * base["retrain"]["cpu_s_per_retrain"])


def test_evaluation_is_hourly_and_pays_for_the_parts_its_sample_opens():
    m = measured(per_sample=0.05, per_hour=0.2, per_hour_frame=0.0001, shard_read=0.005)
    p = capacity.project(m, 1, 1.0, 720, 1280, sample=32, rows_per_shard=32)
    opened = capacity.expected_rows_read(3600, 32, 32)
    assert p["evaluate_rows_opened_per_hour"] == pytest.approx(opened)
    assert p["evaluate_cpu_s_per_hour_per_stream"] == pytest.approx(0.2 + 3600 * 0.0001 + 32 * 0.05 + opened * 0.005)
    assert p["cores"]["evaluate"] == pytest.approx(p["evaluate_cpu_s_per_hour_per_stream"] / 3600 / 0.6)


def test_expected_rows_read():
    assert capacity.expected_rows_read(132, 32, 200) == 132  # the sample is the whole hour
    assert capacity.expected_rows_read(3200, 32, 1) == pytest.approx(32)  # one row opens one whole part
    assert capacity.expected_rows_read(100, 10, 100) == 100
    assert capacity.expected_rows_read(0, 32, 32) == 0
    a, b = capacity.expected_rows_read(3600, 32, 8), capacity.expected_rows_read(3600, 32, 32)
    assert 8 * 32 * 0.9 < a < b < 32 * 32  # more samples open more parts; at most one part each
    assert capacity.expected_rows_read(64, 32, 33) == 64  # 33 rows cannot fit in one 32-row part


def test_requests_count_parts_manifests_and_the_retrains_checkpoints():
    p = capacity.project(measured(), 3600, 1.0, 720, 1280, rows_per_shard=32, rows_per_part=64, train_steps=300)
    q = p["requests"]
    assert q["frame_parts_per_hour_per_stream"] == math.ceil(3600 / 32) == 113
    assert q["factor_parts_per_hour_per_stream"] == math.ceil(3600 / 64) == 57
    assert q["parts_written_per_s"] == pytest.approx(3600 * (113 + 57) / 3600)
    assert q["puts_per_s"]["ingest"] == pytest.approx(114)
    assert q["puts_per_s"]["apply"] == pytest.approx(58)
    assert q["puts_per_retrain"] == 7 + 6 * 2 * 12
    assert q["puts_per_s"]["retrain"] == pytest.approx(3600 * (7 + 144) / 86400)


def test_retrain_cost_window_and_gpu_option():
    m = measured()
    p = capacity.project(m, 1000, 1.0, 720, 1280, train_frames=240, val_frames=24, train_steps=300, retrain_window_hours=6, utilization=0.5)
    r = p["retrain"]
    assert r["validations"] == 12
    assert r["cpu_s_per_retrain"] == pytest.approx(0.1 * 264 + 0.25 * 300 + 0.01 * 24 * 12 + 1.0 * 24)
    assert r["window_cores"] == pytest.approx(1000 * r["cpu_s_per_retrain"] / (6 * 3600) / 0.5)
    assert r["average_cores"] == pytest.approx(r["window_cores"] / 4)
    assert r["memory_gb_per_retrain"] == pytest.approx(264 * 3 * 720 * 1280 * 4 / 1e9)
    assert r["cpu_s_per_frame_served"] == pytest.approx(r["cpu_s_per_retrain"] / 86400)
    assert p["gpu"] is None
    # GPU apply: the slower of the GPU time and the host-to-device copy, the apply's I/O left on CPUs.
    g = capacity.project(m, 1000, 1.0, 720, 1280, gpu_apply_ms=0.5, h2d_gbps=25.0, utilization=0.5)["gpu"]
    assert g["h2d_ms_per_frame"] == pytest.approx(2_764_800 / 25e9 * 1e3)
    assert g["gpu_ms_per_frame"] == 0.5
    assert g["gpus"] == pytest.approx(1000 * 0.5e-3 / 0.5) and g["gpu_nodes"] == 1
    assert g["apply_io_cpu_s_per_frame"] == pytest.approx(0.02 - 0.012)
    fast = capacity.project(m, 1000, 1.0, 720, 1280, gpu_apply_ms=0.001, h2d_gbps=25.0)["gpu"]
    assert fast["gpu_ms_per_frame"] == pytest.approx(fast["h2d_ms_per_frame"])
    two_per_node = capacity.project(m, 10000, 1.0, 720, 1280, gpu_apply_ms=0.5, gpus_per_node=2, utilization=0.5)["gpu"]
    assert two_per_node["gpus"] == pytest.approx(10.0) and two_per_node["gpu_nodes"] == 5


def test_bad_inputs_are_refused():
    for kwargs in ({"utilization": 0.0}, {"utilization": 1.5}, {"cpu_per_node": 0}):
        with pytest.raises(ValueError):
            capacity.project(measured(), 10, 1.0, 720, 1280, **kwargs)
    with pytest.raises(ValueError):
        capacity.project(measured(), 10, 0.0, 720, 1280)
