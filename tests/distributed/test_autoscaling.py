"""Ray's real autoscaler (ray.cluster_utils.AutoscalingCluster, fake node provider) grows and shrinks a cluster built from cluster.yaml's node types.

The node types are cluster.yaml's, scaled to fit 2 cores: each worker type
keeps its resource names (CPU, GPU) with 1 CPU per node, the head
advertises CPU 0 and every worker type starts from min_workers 0. The
GPU of the fake gpu_worker is a declared resource only; torch there sees no
CUDA, so the retrain's workers fall back to the CPU and the driver says so once.

AutoscalingCluster runs `ray stop --force` when it starts and stops, so this
module shares nothing Ray-based with the others.
"""

import copy
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from ray.cluster_utils import AutoscalingCluster

from lrstream.data.shards import write_hour
from lrstream.data.sources import iter_frames
from lrstream.data.versions import latest_version, load_version
from lrstream.distributed.config import RetrainConfig
from lrstream.jobs.train import run_train
from lrstream.training.config import LearnConfig

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
HOURS = ["2026-06-01T00", "2026-06-01T01"]
IDLE_SECONDS = 6  # cluster.yaml waits 5 minutes; the test cannot


def _scaled_node_types() -> dict:
    """cluster.yaml's worker node types with 1 CPU each (GPUs kept), min 0, at most 2 nodes a type."""
    doc = yaml.safe_load(CLUSTER_YAML.read_text())
    head = doc["head_node_type"]
    assert doc["available_node_types"][head]["resources"] == {"CPU": 0}
    types = {}
    for name, spec in doc["available_node_types"].items():
        if name == head:
            continue
        assert spec["min_workers"] == 0
        resources = {**spec["resources"], "CPU": 1}
        types[name] = {"resources": resources, "node_config": {}, "min_workers": 0, "max_workers": min(2, spec["max_workers"])}
    assert {"cpu_worker", "gpu_worker"} <= set(types)
    return types


class _Cluster(AutoscalingCluster):
    """AutoscalingCluster with its base config written here: the Ray wheel does not ship the example.yaml it reads."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = {
            "cluster_name": "lrstream-fake",
            "max_workers": sum(t["max_workers"] for t in worker_node_types.values()),
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True},
            "available_node_types": {**copy.deepcopy(worker_node_types), "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0}},
            "head_node_type": "ray.head.default",
            "auth": {},
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": IDLE_SECONDS / 60,
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        }
        config.update(config_kwargs)
        return config


@pytest.fixture(scope="module")
def cluster():
    import ray

    # Token auth stays on (conftest sets RAY_AUTH_MODE=token before Ray is imported; Ray reads it
    # once). The token is Ray's default file, the one every process of this test finds.
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    if not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run(["ray", "get-auth-token", "--generate"], check=True, capture_output=True)
    saved = {key: os.environ.get(key) for key in ("RAY_ADDRESS",)}
    os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()  # a Ray an earlier module's CLI call left connected dies with `ray stop --force`
    c = _Cluster(head_resources={"CPU": 0}, worker_node_types=_scaled_node_types())
    c.start()
    try:
        # The fake provider puts the head at port 6379; "auto" could pick another cluster on this machine.
        ray.init(address=f"{ray.util.get_node_ip_address()}:6379", include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield ray
    finally:
        ray.shutdown()
        c.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("store")  # the fake nodes share this machine's disk
    for i, h in enumerate(HOURS):
        src = f"synthetic://?frames=8&height=12&width=10&channels=2&seed=5&start={8 * i}"
        write_hour(str(base), "cam", h, iter_frames(src), src)
    return str(base)


def _workers(ray) -> list[dict]:
    """Alive nodes other than the head (the head has no CPU)."""
    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _cfg(**kw) -> RetrainConfig:
    learn = LearnConfig(k=2, m=4, steps=10, batch_size=4, eval_every=5, seed=0)
    return RetrainConfig(learn=learn, checkpoint_every=5, startup_timeout=120.0, **kw)


def test_a_retrain_starts_worker_nodes_from_zero_and_idle_ones_go(cluster, root):
    assert _workers(cluster) == []  # min_workers 0: nothing runs before a job asks
    lines = []
    out = run_train(root, "cam", _cfg(workers=2), hours=HOURS, device="cpu", log=lines.append)
    assert out["version"] == 1 == latest_version(root, "cam")
    assert load_version(root, "cam").meta["retrain"]["workers"] == 2
    started = _workers(cluster)
    # Two 1-CPU gradient workers: the autoscaler started two cpu_worker nodes (the head has CPU 0).
    assert len(started) == 2 and all(n["Resources"].get("GPU", 0) == 0 for n in started)
    _wait(lambda: _workers(cluster) == [], 90, "the idle worker nodes to be removed")


def test_gpu_workers_start_a_gpu_node_and_fall_back_to_the_cpu_once(cluster, root):
    lines = []
    # As `lrstream train --gpus-per-worker 1` asks: device auto becomes CUDA, each worker asks Ray for a GPU.
    out = run_train(root, "cam", _cfg(workers=1, gpus_per_worker=1.0), hours=HOURS, log=lines.append)
    assert out["version"] == 2
    gpu_nodes = [n for n in _workers(cluster) if n["Resources"].get("GPU", 0) >= 1]
    assert len(gpu_nodes) == 1 and not [n for n in _workers(cluster) if not n["Resources"].get("GPU")]
    fallbacks = [line for line in lines if "run on the CPU" in line]
    assert len(fallbacks) == 1 and "1 of 1 workers" in fallbacks[0] and "sees no CUDA" in fallbacks[0]
    assert load_version(root, "cam", 2).meta["retrain"]["gpus_per_worker"] == 1.0
