"""cluster.yaml is a valid Ray cluster launcher config with autoscaling CPU and GPU worker types."""

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(yaml.safe_load(CLUSTER.read_text()))  # merged with the AWS defaults, as `ray up` does
    validate_config(prepared)  # the schema check `ray up` runs next
    return prepared


def test_head_cpu_and_gpu_node_types_autoscale_from_zero(config):
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0  # workers never land on the head
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU", 0) >= 1]
    assert gpu and cpu
    for t in workers.values():
        assert t["min_workers"] == 0 and t["max_workers"] > 0
    assert config["idle_timeout_minutes"] > 0 and config["max_workers"] >= sum(t["max_workers"] for t in workers.values())


def test_setup_installs_the_project_and_keeps_token_auth(config):
    commands = " ".join(config["setup_commands"])
    assert "pip install" in commands and "~/lrstream" in commands and "s3fs" in commands
    assert any(v == "." for v in config["file_mounts"].values())
    assert all("RAY_AUTH_MODE=token" in c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c)


def test_a_broken_config_is_rejected():
    from jsonschema.exceptions import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(CLUSTER.read_text())
    raw["available_node_types"]["cpu_worker"]["max_workers"] = "many"
    with pytest.raises(ValidationError):
        validate_config(prepare_config(raw))
