"""deploy/: the KubeRay manifests pass KubeRay's own CRD schemas, and what those schemas cannot see holds.

The schemas (../shared/kuberay, checked by its validate.py) catch unknown
fields and wrong types. The rest is checked here: token authentication in
every container, worker groups that the autoscaler grows from 0, a GPU group
that asks Kubernetes for a GPU, drivers that fit on a head with no Ray CPUs,
entrypoints that name real jobs with flags the real CLI parser accepts (run
through the same two shells KubeRay and Ray run them through), the cron
order, and one Ray version across the Dockerfile, the image tags and the Ray
the tests run on.
"""

import fnmatch
import re
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KUBERAY = REPO / "deploy" / "kuberay"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
VALIDATE = Path(__file__).resolve().parents[2] / "shared" / "kuberay" / "validate.py"

# What a user exports before envsubst, as the manifests' usage comments say.
SAMPLE = {
    "ROOT": "s3://my-bucket/lrstream",
    "STREAM": "cam1",
    "HOUR": "2026-01-01T03",
    "SOURCE": "s3://my-bucket/incoming/cam1/2026-01-01T03.mp4",
    "INCOMING": "s3://my-bucket/incoming",
    "S3_ROLE_ARN": "arn:aws:iam::123456789012:role/lrstream-s3",
}
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# KubeRay's MaxRayCronJobNameLength and MaxRayJobNameLength (ray-operator/controllers/ray/utils/constant.go).
MAX_CRONJOB_NAME, MAX_RAYJOB_NAME = 36, 47
LONGEST_STREAM = 19  # what the manifests' comments promise


def _body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _comment_commands(path: Path) -> str:
    """The file's comments as shell text: the '#' gone, continued lines joined, runs of spaces made one."""
    text = "\n".join(line.lstrip()[1:] for line in path.read_text().splitlines() if line.lstrip().startswith("#"))
    return re.sub(r"[ \t]+", " ", re.sub(r"\\\n", " ", text))


def _envsubst_names(path: Path) -> list[str]:
    """The variables of the `envsubst '...' < deploy/kuberay/FILE` command in FILE's usage comment."""
    found = re.findall(r"envsubst '([^']*)' < deploy/kuberay/" + re.escape(path.name), path.read_text())
    assert len(found) == 1, f"{path.name}: its usage comment should show one envsubst command for this file, with the variables named"
    return PLACEHOLDER.findall(found[0])


def _substituted(path: Path) -> str:
    """The file as the usage comment's envsubst leaves it: only the named variables replaced."""
    names = set(_envsubst_names(path))
    return PLACEHOLDER.sub(lambda m: SAMPLE[m.group(1)] if m.group(1) in names else m.group(0), path.read_text())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(_substituted(path)) if d]


@pytest.fixture(scope="module")
def docs() -> list[tuple[Path, dict]]:
    assert MANIFESTS, f"no manifests under {KUBERAY}"
    return [(p, d) for p in MANIFESTS for d in _docs(p)]


@pytest.fixture(scope="module")
def cluster(docs) -> dict:
    clusters = [d for _, d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1, "deploy/kuberay/ should hold one RayCluster, the one every job selects"
    return clusters[0]


@pytest.fixture(scope="module")
def jobs(docs) -> list[tuple[str, str, dict]]:
    """(file, kind/name, RayJob spec) of every RayJob and every RayCronJob's job template."""
    out = []
    for path, d in docs:
        if d.get("kind") == "RayJob":
            out.append((path.name, f"RayJob/{d['metadata']['name']}", d["spec"]))
        elif d.get("kind") == "RayCronJob":
            out.append((path.name, f"RayCronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]))
    assert out
    return out


def _ray_pod_templates(cluster: dict) -> list[tuple[str, dict]]:
    spec = cluster["spec"]
    return [("head", spec["headGroupSpec"]["template"])] + [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]


def _pod_templates(cluster: dict, jobs) -> list[tuple[str, dict]]:
    return _ray_pod_templates(cluster) + [(f"{name} submitter", spec["submitterPodTemplate"]) for _, name, spec in jobs if "submitterPodTemplate" in spec]


def _containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _head_container(cluster: dict) -> dict:
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------- the schemas


# A misspelt field per manifest, and the CRD that validates it.
TYPOS = {
    "raycluster.yaml": (lambda d: d["spec"]["workerGroupSpecs"][0].update(minReplica=0), "minReplica", "ray.io_rayclusters.yaml"),
    "raycronjob-hourly.yaml": (lambda d: d["spec"]["jobTemplate"].update(entrypointNumCPUs=0), "entrypointNumCPUs", "ray.io_raycronjobs.yaml"),
}


@pytest.fixture(scope="module")
def validations(tmp_path_factory) -> dict[str, subprocess.CompletedProcess] | None:
    """validate.py over the manifests, and over copies of some with one misspelt field each.

    Loading KubeRay's CRDs is most of validate.py's time (seconds each), so the
    typo run uses a copy of validate.py beside only the CRDs the copies need,
    and the two runs go side by side.
    """
    if not VALIDATE.is_file():
        return None
    folder = tmp_path_factory.mktemp("typos")
    (folder / "crds").mkdir()
    shutil.copy(VALIDATE, folder / "validate.py")
    for name, (typo, _, crd) in TYPOS.items():
        documents = list(yaml.safe_load_all((KUBERAY / name).read_text()))
        typo(next(d for d in documents if str(d.get("apiVersion", "")).startswith("ray.io/")))
        (folder / name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
        shutil.copy(VALIDATE.parent / "crds" / crd, folder / "crds" / crd)
    runs = {"manifests": [VALIDATE, *MANIFESTS], "typos": [folder / "validate.py", *(folder / name for name in TYPOS)]}
    started = {key: subprocess.Popen([sys.executable, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for key, args in runs.items()}
    done = {}
    for key, proc in started.items():
        out, err = proc.communicate(timeout=120)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _validated(validations, key: str) -> subprocess.CompletedProcess:
    if validations is None:
        if not VALIDATE.parents[1].is_dir():
            # No shared folder beside this checkout at all (a bare clone elsewhere): the schemas are not
            # ours to vendor, so say loudly what was not checked; a shared folder without them still fails.
            pytest.skip(f"KubeRay schemas not checked: {VALIDATE.parents[1]} is absent (the shared folder beside the repository)")
        pytest.fail(f"{VALIDATE} is missing: the KubeRay schema check lives in the shared folder beside the repository (../shared/kuberay); check it out there")
    return validations[key]


def test_every_manifest_passes_kuberays_schemas(docs, validations):
    done = _validated(validations, "manifests")
    assert done.returncode == 0, done.stdout + done.stderr
    kuberay_docs = sum(1 for _, d in docs if str(d.get("apiVersion", "")).startswith("ray.io/"))
    assert f"{kuberay_docs} KubeRay documents checked, 0 problems" in done.stdout, done.stdout


@pytest.mark.parametrize("name", sorted(TYPOS))
def test_a_manifest_with_an_unknown_field_fails_validation(validations, name):
    done = _validated(validations, "typos")
    field = TYPOS[name][1]
    assert done.returncode != 0, done.stdout
    problems = [line for line in done.stdout.splitlines() if Path(line.split("[", 1)[0]).name == name]
    assert any(line.endswith(f"{field}: unknown field") for line in problems), done.stdout


def test_usage_comments_substitute_every_placeholder_and_nothing_else():
    for path in MANIFESTS:
        named = _envsubst_names(path)
        used = set(PLACEHOLDER.findall(_body(path.read_text())))
        assert set(named) == used, f"{path.name}: the usage comment's envsubst names {sorted(named)}, the manifest uses {sorted(used)}"
        assert used <= set(SAMPLE), f"{path.name}: placeholders without a sample value in this test: {sorted(used - set(SAMPLE))}"
        assert "${" not in _body(_substituted(path)), path.name


# ---------------------------------------------------------------- the cluster


def test_every_container_runs_with_token_auth(cluster, jobs):
    auth = cluster["spec"]["authOptions"]
    assert auth["mode"] == "token"
    for where, template in _pod_templates(cluster, jobs):
        for c in _containers(template):
            assert _env(c).get("RAY_AUTH_MODE") == "token", f"{where}: container {c['name']} lacks RAY_AUTH_MODE=token"
    assert _env(cluster["spec"]["autoscalerOptions"]).get("RAY_AUTH_MODE") == "token", "the autoscaler container lacks RAY_AUTH_MODE=token"
    # The Secret the cluster names is the one the usage comment tells the user to create from Ray's token.
    command = f'kubectl create secret generic {auth["secretName"]} --from-literal=auth_token="$(ray get-auth-token --generate)"'
    assert command in _comment_commands(KUBERAY / "raycluster.yaml"), f"raycluster.yaml's usage comment should show: {command}"


def test_ray_version_is_recent_enough_for_kuberay_token_auth(cluster):
    # KubeRay refuses authOptions.mode token below Ray 2.52.0 (and without a rayVersion at all).
    assert tuple(map(int, cluster["spec"]["rayVersion"].split("."))) >= (2, 52, 0)


def test_worker_groups_scale_from_zero_with_the_autoscaler(cluster):
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head must advertise no CPU, so that work goes to worker pods"
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 2
    for g in groups:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0 and g["maxReplicas"] > 0, g["groupName"]


def _gpus(container: dict) -> tuple[str | None, str | None]:
    res = container.get("resources", {})
    return res.get("limits", {}).get("nvidia.com/gpu"), res.get("requests", {}).get("nvidia.com/gpu")


def test_the_gpu_group_asks_kubernetes_and_ray_for_a_gpu(cluster):
    groups = cluster["spec"]["workerGroupSpecs"]
    gpu = [g for g in groups if _gpus(g["template"]["spec"]["containers"][0])[0] is not None]
    cpu = [g for g in groups if g not in gpu]
    assert len(gpu) == 1 and cpu, "one GPU worker group and at least one CPU group"
    (group,) = gpu
    limit, request = _gpus(group["template"]["spec"]["containers"][0])
    assert int(limit) >= 1 and request in (None, limit), "Kubernetes only schedules whole GPUs, and a request must equal the limit"
    # The autoscaler plans a new pod from rayStartParams: it must promise the GPUs the pod gets.
    assert group["rayStartParams"]["num-gpus"] == str(limit)
    assert group["template"]["spec"]["containers"][0]["image"].endswith("-gpu")
    for g in cpu:
        assert not g["template"]["spec"]["containers"][0]["image"].endswith("-gpu"), g["groupName"]
        assert "num-gpus" not in g["rayStartParams"], g["groupName"]


def test_every_container_states_cpu_and_memory(cluster, jobs):
    for where, template in _pod_templates(cluster, jobs):
        for c in _containers(template):
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: container {c['name']} has no cpu and memory {kind}"
    for where, template in _ray_pod_templates(cluster):
        res = template["spec"]["containers"][0]["resources"]
        # Ray counts a pod's CPUs and memory from its limits; a smaller request lets Kubernetes pack more than Ray plans for.
        assert res["requests"] == res["limits"], f"{where}: the Ray container's requests should equal its limits"
    res = cluster["spec"]["autoscalerOptions"]["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])


def test_s3_credentials_reach_every_ray_pod(docs, cluster):
    accounts = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "ServiceAccount"}
    for where, template in _ray_pod_templates(cluster):
        name = template["spec"].get("serviceAccountName")
        assert name in accounts, f"{where}: pods should run as the ServiceAccount defined beside the cluster, got {name!r}"
        assert accounts[name]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
        # Outside EKS the same pods read keys from a Secret when one exists; optional, so that IRSA alone still starts them.
        sources = template["spec"]["containers"][0].get("envFrom", [])
        assert any(s.get("secretRef", {}).get("optional") is True for s in sources), f"{where}: no optional Secret with S3 keys"


# ---------------------------------------------------------------- the jobs


def _cpus(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_jobs_run_on_the_cluster_with_drivers_on_worker_pods(cluster, jobs):
    name = cluster["metadata"]["name"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    cpu_pods = [_cpus(g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]) for g in cluster["spec"]["workerGroupSpecs"]]
    for file, job, spec in jobs:
        assert spec["clusterSelector"] == {"ray.io/cluster": name}, f"{job}: should select the RayCluster {name}"
        assert "rayClusterSpec" not in spec, job
        # KubeRay passes --entrypoint-num-cpus only above 0, and at 0 Ray pins the driver to the head, outside
        # any CPU accounting; with CPUs it must fit a worker pod, since the head advertises none.
        cpus = spec.get("entrypointNumCpus", 0)
        assert cpus >= 1, f"{job}: entrypointNumCpus {cpus}: the driver should hold a CPU (as `lrstream submit` does), not run on the head"
        assert cpus <= max(cpu_pods), f"{job}: entrypointNumCpus {cpus} fits no worker pod ({cpu_pods} CPUs), so the driver could never start"
        assert not spec.get("entrypointNumGpus") and not spec.get("entrypointResources"), job
        # KubeRay rejects backoffLimit > 0 with clusterSelector, and a TTL without shutdownAfterJobFinishes.
        assert spec["backoffLimit"] == 0, f"{job}: KubeRay refuses backoffLimit > 0 with clusterSelector"
        assert spec.get("shutdownAfterJobFinishes") is False and not spec.get("ttlSecondsAfterFinished"), job
        assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode", f"{job}: clusterSelector does not work in SidecarMode; the entrypoint is checked for K8sJobMode"
        assert spec["activeDeadlineSeconds"] > 0 and spec["preRunningDeadlineSeconds"] > 0, job


def test_names_fit_kuberays_limits_for_the_longest_stream():
    for path in MANIFESTS:
        for d in yaml.safe_load_all(path.read_text()):
            if not d or d.get("kind") not in ("RayJob", "RayCronJob"):
                continue
            name = d["metadata"]["name"].replace("${STREAM}", "s" * LONGEST_STREAM)
            limit = MAX_CRONJOB_NAME if d["kind"] == "RayCronJob" else MAX_RAYJOB_NAME
            assert len(name) <= limit, f"{path.name}: {name} is over KubeRay's {limit} characters"
            assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), f"{path.name}: {name} is not a DNS label"


SHIM = '#!/bin/sh\nprintf "%s\\0" "$@" > "$SHIM_OUT"\n'


def _driver_argv(entrypoint: str, tmp_path: Path) -> list[str]:
    """What `python` receives when KubeRay submits ``entrypoint`` (K8sJobMode) and Ray runs it.

    KubeRay pastes the entrypoint into the submitter's `bash -c "... ray job submit ... -- ENTRYPOINT ; ..."`;
    `ray job submit` joins the words it gets with shlex.join; the job supervisor runs that with a shell
    on the head. Here a `python` that records its arguments stands in for the real one in both shells.
    """
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=";&|")
    separators = [t for t in lexer if t and set(t) <= set(";&|")]
    assert not separators, f"unquoted {separators} would run part of {entrypoint!r} in the submitter pod, not in Ray"
    (tmp_path / "bin").mkdir(exist_ok=True)
    shim = tmp_path / "bin" / "python"
    shim.write_text(SHIM)
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "argv"
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "SHIM_OUT": str(out)}
    submitted = subprocess.run(["/bin/bash", "-ce", f"printf '%s\\0' {entrypoint}"], capture_output=True, env=env, check=True, timeout=30)
    words = submitted.stdout.decode().split("\0")[:-1]
    ran = subprocess.run(["/bin/sh", "-c", shlex.join(words)], capture_output=True, text=True, env=env, timeout=30)
    assert ran.returncode == 0 and out.exists(), f"{entrypoint!r} did not reach python: {ran.stderr}"
    return out.read_text().split("\0")[:-1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as in test_cluster.py
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _hour_ago() -> str:
    return (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H")


def _cli_command(module: str) -> str:
    source = REPO / "jobs" / f"{module}.py"
    assert source.is_file(), f"jobs/{module}.py does not exist"
    found = re.search(r"main\(\[\s*\"(\w+)\"", source.read_text())
    assert found, f"jobs/{module}.py does not forward to an lrstream command"
    return found.group(1)


def test_entrypoints_run_real_jobs_with_flags_the_cli_accepts(cluster, jobs, tmp_path):
    from lrstream.cli import _parse
    from lrstream.data.store import check_hour
    from lrstream.errors import UsageError

    dashboard = next(p["containerPort"] for p in _head_container(cluster)["ports"] if p["name"] == "dashboard")
    head_service = f"http://{cluster['metadata']['name']}-head-svc:{dashboard}"
    seen = set()
    for file, job, spec in jobs:
        before = _hour_ago()
        argv = _driver_argv(spec["entrypoint"], tmp_path)
        hours_now = {before, _hour_ago()}
        assert argv[:1] == ["-m"] and argv[1].startswith("jobs."), f"{job}: expected `python -m jobs.X ...`, got {argv}"
        module = argv[1].removeprefix("jobs.")
        command = _cli_command(module)
        try:
            args, _ = _parse([command, *argv[2:]])
        except UsageError as exc:
            pytest.fail(f"{job} ({file}): `lrstream {command}` rejects the entrypoint's flags: {exc}")
        seen.add(module)
        assert args.root == SAMPLE["ROOT"] and args.stream == SAMPLE["STREAM"], job
        if module == "retrain":
            continue
        check_hour(args.hour)
        # A RayCronJob's hour is the one that just ended, taken when it runs; a RayJob's is the one the user named.
        expected = hours_now if job.startswith("RayCronJob/") else {SAMPLE["HOUR"]}
        assert args.hour in expected, f"{job}: --hour {args.hour}, expected one of {sorted(expected)}"
        if module == "ingest":
            assert args.source.endswith(f"/{SAMPLE['STREAM']}/{args.hour}.mp4"), f"{job}: --source {args.source} is not this stream's clip of this hour"
        if module == "evaluate" and args.retrain_on_drift:
            # In a Ray job RAY_ADDRESS is the GCS address; the retrain must go to the dashboard, through the head's Service.
            assert args.address == head_service, f"{job}: --address {args.address}, expected {head_service}"
    assert seen == {"ingest", "retrain", "apply", "evaluate", "update"}


def test_cron_runs_ingest_apply_evaluate_hourly_and_retrain_nightly(docs):
    crons = {}
    for _, d in docs:
        if d.get("kind") == "RayCronJob":
            module = re.search(r"python -m jobs\.(\w+)", d["spec"]["jobTemplate"]["entrypoint"]).group(1)
            assert module not in crons, f"jobs.{module} is scheduled twice"
            assert d["spec"].get("timeZone") in ("UTC", "Etc/UTC"), f"{d['metadata']['name']}: hour labels are UTC, so the schedule must be"
            crons[module] = d["spec"]["schedule"].split()
    assert set(crons) == {"ingest", "apply", "evaluate", "update", "retrain"}
    minute = {}
    for module in ("ingest", "apply", "evaluate", "update"):
        fields = crons[module]
        assert len(fields) == 5 and fields[1:] == ["*"] * 4 and fields[0].isdigit(), f"{module} should run once an hour: {fields}"
        minute[module] = int(fields[0])
    assert minute["apply"] == minute["ingest"] + 10 and minute["evaluate"] == minute["apply"] + 10 < 60, minute
    assert minute["update"] == minute["evaluate"] + 10 < 60, minute  # evaluate scores the hour before the update folds it
    fields = crons["retrain"]
    assert len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit() and fields[2:] == ["*"] * 3, f"retrain should run once a night: {fields}"
    retrain = next(d for _, d in docs if d.get("kind") == "RayCronJob" and "jobs.retrain" in d["spec"]["jobTemplate"]["entrypoint"])
    assert "--last 24" in retrain["spec"]["jobTemplate"]["entrypoint"]
    hourly = [d for _, d in docs if d.get("kind") == "RayCronJob" and d is not retrain]
    # The next run of a kind starts an hour later: a deadline under an hour keeps two runs of one stream apart.
    assert all(d["spec"]["jobTemplate"]["activeDeadlineSeconds"] < 3600 for d in hourly)


# ---------------------------------------------------------------- the image


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _ray_version_of_dockerfile() -> str:
    (default,) = [a.split("=", 1)[1] for i, a in _dockerfile() if i == "ARG" and a.startswith("RAY_VERSION=")]
    return default


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage: named stages under their name, the last one under ''."""
    stages, name = {}, None
    for instr, args in _dockerfile():
        if instr == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages[name] = [(instr, args)]
        elif name is not None:
            stages[name].append((instr, args))
    return stages


def _env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for instr, args in stage:
        if instr == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args))
    return env


def test_dockerfile_builds_on_the_ray_the_tests_run_on():
    ray = _ray_version_of_dockerfile()
    assert ray == version("ray"), f"the image's Ray {ray} is not the Ray these tests run on ({version('ray')})"
    pinned = re.search(r"ray\[default\]==([\d.]+)", (REPO / "cluster.yaml").read_text()).group(1)
    assert ray == pinned, f"the image's Ray {ray} is not cluster.yaml's {pinned}"
    stages = _stages()
    bases = {name: stage[0][1].split()[0].replace("${RAY_VERSION}", ray) for name, stage in stages.items() if name}
    assert sorted(bases.values()) == [f"rayproject/ray:{ray}-py311", f"rayproject/ray:{ray}-py311-gpu"], bases
    cpu = next(name for name, base in bases.items() if not base.endswith("-gpu"))
    assert _env_of(stages[cpu])["LRSTREAM_TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu", "the CPU image must take the CPU build of torch"


def test_dockerfile_installs_the_project_and_its_jobs():
    final = _stages()[""]
    runs = " ".join(args for instr, args in final if instr == "RUN")
    torch_requirement = next(r for r in _pyproject()["dependencies"] if r.startswith("torch"))
    assert f'"{torch_requirement}"' in runs and "${LRSTREAM_TORCH_INDEX}" in runs, "torch comes first, from the flavour's index, under pyproject's bounds"
    assert '".[s3]"' in runs and '"ray[default]==${RAY_VERSION}"' in runs
    copied = [shlex.split(args)[-2] for instr, args in final if instr == "COPY"]
    assert {"lrstream/", "jobs/"} <= set(copied)
    (workdir,) = [args for instr, args in final if instr == "WORKDIR"]
    env = _env_of(final)
    assert env["RAY_AUTH_MODE"] == "token"
    # Ray starts a driver in a directory of its own; jobs/ is found through PYTHONPATH, wherever that is.
    assert workdir in env["PYTHONPATH"].split(":")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatchcase("/".join(parts[i : j + 1]), pat[3:]) for j in range(len(parts)) for i in range(j + 1))
        else:
            hit = any(fnmatch.fnmatchcase(p, pat) for p in prefixes)
        if hit:
            ignored = not keep
    return ignored


def test_dockerignore_sends_the_sources_and_nothing_heavy():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for path in ("pyproject.toml", "README.md", "lrstream/cli.py", "lrstream/data/store.py", "jobs/ingest.py"):
        assert not _ignored(path, patterns), f"{path} is copied by deploy/Dockerfile but left out of the build context"
    for path in (".venv/bin/python", ".git/HEAD", "tests/test_cli.py", "benchmarks/quality.json", "lrstream/__pycache__/cli.cpython-311.pyc"):
        assert _ignored(path, patterns), f"{path} would be sent to the image build"


def test_manifest_images_are_the_dockerfiles(cluster, jobs):
    ray = _ray_version_of_dockerfile()
    project = _pyproject()["version"]
    cpu_image = f"ghcr.io/lrstream/lrstream:{project}-ray{ray}"
    assert cluster["spec"]["rayVersion"] == ray
    for where, template in _pod_templates(cluster, jobs):
        for c in template["spec"]["containers"]:
            gpu = _gpus(c)[0] is not None
            assert c["image"] == cpu_image + ("-gpu" if gpu else ""), f"{where}: {c['image']}"
    # KubeRay's own default submitter takes the head's image, so that `ray job submit` speaks the cluster's Ray.
    assert _head_container(cluster)["image"] == cpu_image
