"""cluster.yaml starts a working, token-authenticated Ray cluster: checked on what Ray's own launcher and autoscaler would run on each node type.

No cluster is started: the config goes through Ray's prepare_config and
validate_config (what `ray up` does), and each node type's commands come from
Ray's AutoscalingConfig, the object the autoscaler reads them from.
"""

import copy
import os
import shlex
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
PYPROJECT = ROOT / "pyproject.toml"
NODE_TYPES = ("head", "cpu_worker", "gpu_worker")  # the autoscaling tests build these names in ray.cluster_utils.AutoscalingCluster
CPU_TORCH_INDEX = "download.pytorch.org/whl/cpu"
CONTROL = {";", "&&", "||", "|", "&"}


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def config(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw))  # merged with the AWS defaults, as `ray up` does
    validate_config(prepared)  # the schema check `ray up` runs next
    return prepared


@pytest.fixture(scope="module")
def autoscaling(raw):
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

    # AutoscalingConfig runs prepare_config + validate_config itself, so it takes the raw
    # config (preparing twice would prepend setup_commands to the setup lists twice).
    return AutoscalingConfig(copy.deepcopy(raw), skip_content_hash=True)


def node_setup(autoscaling, node_type):
    """The commands Ray runs on a fresh node of ``node_type`` before its start commands.

    Workers: what RayInstaller.install_ray (ray/autoscaler/v2/instance_manager/ray_installer.py,
    the v2 autoscaler, `ray up`'s default since Ray 2.50) passes to the NodeUpdater:
    get_initialization_commands + get_worker_setup_commands, where a node type's own
    worker_setup_commands replace setup_commands + worker_setup_commands altogether (the
    v1 StandardAutoscaler._get_node_type_specific_fields has the same rule). Head: `ray up`
    (get_or_create_head_node in ray/autoscaler/_private/commands.py) runs the global
    initialization_commands and head_setup_commands (= setup_commands + head_setup_commands
    after merge_setup_commands); no per-type list applies to the head. That branch is
    mirrored here, as commands.py has no function that returns it.
    """
    if node_type == autoscaling.get_config("head_node_type"):
        return autoscaling.get_config("initialization_commands", []) + autoscaling.get_head_setup_commands()
    return autoscaling.get_initialization_commands(node_type) + autoscaling.get_worker_setup_commands(node_type)


def node_start(autoscaling, node_type):
    if node_type == autoscaling.get_config("head_node_type"):
        return autoscaling.get_head_start_ray_commands()
    return autoscaling.get_worker_start_ray_commands()


def simple_commands(commands):
    """Each shell command line split into its simple commands (token lists), at ; && || | &."""
    out = []
    for line in commands:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current = []
        for token in lexer:
            if token in CONTROL:
                out.append(current)
                current = []
            else:
                current.append(token)
        out.append(current)
    return [c for c in out if c]


def pip_installs(commands):
    """Every `pip install` in order: (requirements, editable paths, index URLs)."""
    takes_value = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint", "-r", "--requirement"}
    installs = []
    for tokens in simple_commands(commands):
        if tokens[:2] == ["python", "-m"]:
            tokens = tokens[2:]
        if tokens[:2] not in (["pip", "install"], ["pip3", "install"]):
            continue
        reqs, editables, indexes = [], [], []
        args = iter(tokens[2:])
        for arg in args:
            name, _, inline = arg.partition("=")
            if arg in ("-e", "--editable"):
                editables.append(next(args))
            elif name in ("-i", "--index-url", "--extra-index-url"):
                indexes.append(inline or next(args))
            elif name in takes_value:
                if not inline:
                    next(args)
            elif not arg.startswith("-"):
                reqs.append(Requirement(arg))
        installs.append((reqs, editables, indexes))
    return installs


def installed_once(commands, package):
    """(position, requirement, index URLs) of the one pip install of ``package`` (none or a second one is a failure)."""
    found = [(i, r, idx) for i, (reqs, _, idx) in enumerate(pip_installs(commands)) for r in reqs if r.name == package]
    assert len(found) == 1, f"{package} installed {len(found)} times by {commands}"
    return found[0]


def project_requirements():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    deps = [Requirement(d) for d in project["dependencies"]]
    extras = {name: [Requirement(d) for d in reqs] for name, reqs in project["optional-dependencies"].items()}
    return deps, extras


def by_name(reqs, name):
    (req,) = [r for r in reqs if r.name == name]
    return req


def is_gpu(config, node_type):
    return config["available_node_types"][node_type]["resources"].get("GPU", 0) >= 1


def test_head_cpu_and_gpu_node_types_autoscale_from_zero(raw, config):
    # Stated in the file itself, not filled in by Ray: the autoscaling tests copy them.
    assert set(raw["available_node_types"]) == set(NODE_TYPES) and raw["head_node_type"] == "head"
    assert all(isinstance(raw["available_node_types"][t]["resources"], dict) for t in NODE_TYPES)
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0  # workers never land on the head; drivers need entrypoint_num_cpus >= 1 to leave it
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU", 0) >= 1]
    assert gpu and cpu
    for t in workers.values():
        assert t["min_workers"] == 0 and t["max_workers"] > 0
    assert config["idle_timeout_minutes"] > 0 and config["max_workers"] >= sum(t["max_workers"] for t in workers.values())


@pytest.mark.parametrize("node_type", NODE_TYPES)
def test_every_node_type_installs_ray_s3fs_torch_and_the_project(config, autoscaling, node_type):
    import ray

    commands = node_setup(autoscaling, node_type)
    ray_install = installed_once(commands, "ray")
    assert "default" in ray_install[1].extras and str(ray_install[1].specifier) == f"=={ray.__version__}"  # the cluster runs the client's Ray
    s3fs_install = installed_once(commands, "s3fs")
    _, extras = project_requirements()
    assert s3fs_install[1].specifier == by_name(extras["s3"], "s3fs").specifier  # the floor pyproject states
    projects = [i for i, (_, editables, _) in enumerate(pip_installs(commands)) if "~/lrstream" in editables]
    assert projects, commands
    assert config["file_mounts"]["~/lrstream"] == "."
    torch_install = installed_once(commands, "torch")  # one build, not the CPU one replaced by the CUDA one
    assert torch_install[0] < projects[0]  # torch first: installing the project must not pull a torch of its own
    if is_gpu(config, node_type):
        assert not any(CPU_TORCH_INDEX in c for c in commands)  # the CUDA build from PyPI, never the CPU build first
    else:
        assert any(CPU_TORCH_INDEX in url for url in torch_install[2])  # no multi-GB CUDA wheel on CPU-only nodes


def test_the_token_file_reaches_every_node_and_every_ray_start_uses_token_auth(config, autoscaling):
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    # `ray get-auth-token --generate` writes _get_default_token_path(), and `ray start` reads it there
    # when RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH are unset: the same file on the launching machine
    # (local side) and on the nodes (remote side; the head's autoscaler mounts its copy on workers).
    default = str(_get_default_token_path())
    mounts = [(remote, local) for remote, local in config["file_mounts"].items() if os.path.expanduser(remote) == default]
    assert mounts and os.path.expanduser(mounts[0][1]) == default
    for node_type in NODE_TYPES:
        commands = node_setup(autoscaling, node_type) + node_start(autoscaling, node_type)
        assert not any("RAY_AUTH_TOKEN=" in c for c in commands)  # the file travels, never the token in a command line
        starts = [c for c in simple_commands(node_start(autoscaling, node_type)) if "ray" in c and c[c.index("ray") + 1 :][:1] == ["start"]]
        assert starts
        for tokens in starts:
            assert "RAY_AUTH_MODE=token" in tokens[: tokens.index("ray")]


def test_the_dashboard_listens_on_the_head_loopback_only(config):
    (start,) = [c for c in simple_commands(config["head_start_ray_commands"]) if "--head" in c]
    hosts = [t.partition("=")[2] for t in start if t.startswith("--dashboard-host=")]
    hosts += [start[i + 1] for i, t in enumerate(start) if t == "--dashboard-host"]
    assert hosts == ["127.0.0.1"]  # reached through `ray dashboard cluster.yaml` (an SSH tunnel), so the token never crosses the network in plain HTTP
    assert not any("0.0.0.0" in c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"])


def test_bashrc_edits_are_idempotent(autoscaling, tmp_path):
    edits = sorted({c for t in NODE_TYPES for c in node_setup(autoscaling, t) if ".bashrc" in c})
    assert edits
    for n, command in enumerate(edits):
        home = tmp_path / f"home{n}"
        home.mkdir()
        (home / ".bashrc").write_text("# existing\n")
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for _ in range(2):  # setup reruns on every `ray up`
            subprocess.run(["bash", "-c", command], env=env, cwd=home, check=True, timeout=10)
        lines = (home / ".bashrc").read_text().splitlines()
        assert lines[0] == "# existing"
        assert all(lines.count(line) == 1 for line in lines), lines
    assert any("export RAY_AUTH_MODE=token" in c for c in edits)


def test_workers_have_an_instance_profile_and_the_head_keeps_rays(config):
    head = config["head_node_type"]
    for name, t in config["available_node_types"].items():
        profile = t["node_config"].get("IamInstanceProfile")
        if name == head:
            assert profile is None  # Ray then attaches ray-autoscaler-v1, which the autoscaler needs (aws/config.py _configure_iam_role)
        else:
            assert profile and (":instance-profile/" in profile.get("Arn", "") or profile.get("Name"))


def test_the_project_is_synced_without_ignored_files(config):
    assert ".gitignore" in config["rsync_filter"]  # no .venv or build outputs shipped to every node


def test_pyproject_floors():
    deps, extras = project_requirements()
    ray_req = by_name(deps, "ray")
    assert "default" in ray_req.extras and str(ray_req.specifier) == ">=2.52"  # token authentication
    assert str(by_name(deps, "fsspec").specifier) == ">=2024.12"
    assert str(by_name(extras["s3"], "s3fs").specifier) == ">=2025.7"  # exclusive create ("xb") silently overwrote small objects before
    for req in (ray_req, by_name(deps, "fsspec"), by_name(extras["s3"], "s3fs")):
        try:
            have = version(req.name)
        except PackageNotFoundError:
            continue  # s3fs is an extra, absent here
        assert req.specifier.contains(have, prereleases=True), (req, have)


def test_a_broken_config_is_rejected(raw):
    from jsonschema.exceptions import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(raw)
    broken["available_node_types"]["cpu_worker"]["max_workers"] = "many"
    with pytest.raises(ValidationError):
        validate_config(prepare_config(broken))
