"""`lrstream submit` against a real token-authenticated Ray head: the driver's own exit code, ids that run once, --retry, one-line errors.

One head for the module, started with `ray start --head` in a temp dir of
its own (so a plain `ray.init()` elsewhere on this machine does not find
it: that looks in /tmp/ray/ray_current_cluster) and its own session, which
teardown kills by process group (`ray stop` would stop every Ray here).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from conftest import ingest_hours, retrain_config

from lrstream.cli import main
from lrstream.data.shards import list_hours
from lrstream.data.versions import load_version, publish_version
from lrstream.distributed.retrain import retrain

REPO = str(Path(__file__).resolve().parents[2])
HOURS = ["2026-03-01T00", "2026-03-01T01", "2026-03-01T02", "2026-03-01T03"]
SYNTHETIC = "synthetic://?frames=6&height=16&width=12&seed=0"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _refresh_ray_auth() -> None:
    """Make this process's Ray read RAY_AUTH_MODE / RAY_AUTH_TOKEN again: it caches both (a fresh `lrstream submit` process reads them once)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(20):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def head():
    """(dashboard URL, env for `lrstream submit` processes); this process's env points at the head while the module runs."""
    temp = tempfile.mkdtemp(prefix="lrsray", dir="/tmp")  # short: Ray's socket paths live under it
    token = os.urandom(32).hex()
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=f"{bin_dir}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0")
    # Every port of its own: another head on this machine holds Ray's defaults (10001 for the client server, 52365 for the agent, ...).
    names = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port", "--node-manager-port", "--object-manager-port")  # fmt: skip
    ports = dict(zip(names, _free_ports(len(names))))
    dashboard = ports["--dashboard-port"]
    cmd = [os.path.join(bin_dir, "ray"), "start", "--head", "--num-cpus", "2", *(f"{name}={port}" for name, port in ports.items()),
           "--dashboard-host", "127.0.0.1", "--include-dashboard=true", "--temp-dir", temp, "--disable-usage-stats"]  # fmt: skip
    with open(os.path.join(temp, "start.log"), "w") as out:
        start = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert start.wait(timeout=120) == 0, Path(temp, "start.log").read_text()
        mp = pytest.MonkeyPatch()
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(name, raising=False)
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", token)
        _refresh_ray_auth()
        try:
            yield f"http://127.0.0.1:{dashboard}", env
        finally:
            mp.undo()
            _refresh_ray_auth()
    finally:
        _kill_group(start.pid)  # the daemons `ray start` left behind share its session and process group
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with four hours of stream "cam" (8 frames of 2 x 10 x 12) and sketch version 1 trained on the first three."""
    root = tmp_path_factory.mktemp("trained")
    ingest_hours(root, "cam", HOURS, frames=8, height=10, width=12, channels=2)
    retrain(str(root), "cam", retrain_config(workers=1), end=HOURS[2], use_ray=False)
    return root


def submit(capsys, url, *argv):
    """`lrstream submit --address URL --working-dir REPO --json ARGV` in this process: (exit code, its JSON object, stderr)."""
    code = main(["submit", "--address", url, "--working-dir", REPO, "--json", *argv])
    out, err = capsys.readouterr()
    assert out.strip(), (code, out, err)
    return code, json.loads(out.strip().splitlines()[-1]), err


def runs_of(url, submission_id):
    """How often the job's driver ran under this id: Ray appends every run to the same log."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url).get_job_logs(submission_id).count(f"Running entrypoint for job {submission_id}")


def test_ingest_exits_0_and_a_succeeded_id_does_not_run_again(head, tmp_path, capsys):
    url, _ = head
    root = str(tmp_path / "root")
    ingest = ["--submission-id", "ingest-cam-0", "--", "ingest", "--root", root, "--stream", "cam", "--hour", HOURS[0], "--source", SYNTHETIC, "--json"]
    code, doc, _ = submit(capsys, url, "--no-wait", *ingest)
    assert code == 0 and doc["action"] == "submitted" and doc["status"] in ("PENDING", "RUNNING") and doc["exit_code"] is None
    code, doc, err = submit(capsys, url, *ingest)  # the same id while it runs: follow it to its end
    assert code == 0, err
    assert doc["submission_id"] == "ingest-cam-0" and doc["action"] == "attached" and doc["status"] == "SUCCEEDED" and doc["exit_code"] == 0 and doc["address"] == url
    assert doc["result"]["status"] == "ingested" and doc["result"]["rows"] == 6  # the driver's own --json object
    assert "Running entrypoint for job ingest-cam-0" in err and "ingested: 6 frames" in err  # the job's log, streamed to stderr
    assert list_hours(root, "cam") == [HOURS[0]]
    code, doc, err = submit(capsys, url, *ingest)
    assert code == 0 and doc["action"] == "already succeeded" and doc["exit_code"] == 0 and "already succeeded" in err
    assert runs_of(url, "ingest-cam-0") == 1


def test_nothing_to_do_exits_4_keeps_its_code_and_retry_runs_it_again(head, trained, tmp_path, capsys):
    url, _ = head
    root = tmp_path / "root"
    ingest_hours(root, "cam", HOURS, frames=8, height=10, width=12, channels=2)  # the hours, no sketch yet
    evaluate = ["--submission-id", "eval-cam-3", "--", "evaluate", "--root", str(root), "--stream", "cam", "--hour", HOURS[3], "--json"]
    code, doc, err = submit(capsys, url, *evaluate)
    assert code == 4 and doc["exit_code"] == 4 and doc["status"] == "FAILED"
    assert "no sketch yet" in err and err.strip().splitlines()[-1] == "lrstream: error: job eval-cam-3 failed: the driver exited with 4 (nothing to do)"
    code, doc, err = submit(capsys, url, *evaluate)  # the same id again: its old code, not run again
    assert code == 4 and doc["action"] == "not re-run"
    (line,) = [line for line in err.splitlines() if line.startswith("lrstream: error")]
    assert "--retry" in line and "no sketch yet" in line
    assert runs_of(url, "eval-cam-3") == 1
    shutil.copytree(trained / "sketches", root / "sketches")  # fix the input, then retry
    code, doc, err = submit(capsys, url, "--retry", *evaluate)
    assert code == 0, err
    assert doc["action"] == "retried" and doc["status"] == "SUCCEEDED" and doc["result"]["hour"] == HOURS[3] and doc["result"]["drift"] is False
    assert err.count("Running entrypoint for job eval-cam-3") == 1  # only the new run's log is streamed
    assert runs_of(url, "eval-cam-3") == 2


def test_drift_is_the_exit_code_of_the_submit_process(head, trained, tmp_path):
    url, env = head
    root = tmp_path / "root"
    shutil.copytree(trained, root)
    good = load_version(str(root), "cam")
    values = torch.zeros_like(good.values)
    values[0, :2] = 1.0  # a sketch that sees two rows of A: far worse than random
    publish_version(str(root), "cam", good.with_values(values))
    cmd = [sys.executable, "-m", "lrstream.cli", "submit", "--submission-id", "eval-drift", "--working-dir", REPO, "--", "evaluate", "--root", str(root), "--stream", "cam"]
    proc = subprocess.run(cmd, env={**env, "RAY_ADDRESS": url}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "drift: stream cam" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "lrstream: error: job eval-drift failed: the driver exited with 5 (drift)"


def test_connection_and_auth_errors_are_one_line(head, tmp_path, capfd, monkeypatch):
    url, env = head
    argv = ["--", "evaluate", "--root", str(tmp_path), "--stream", "cam"]
    proc = subprocess.run([sys.executable, "-m", "lrstream.cli", "submit", "--address", f"http://127.0.0.1:{_free_ports(1)[0]}", *argv], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "cannot reach the Ray dashboard" in proc.stderr
    capfd.readouterr()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a GCS address, not the dashboard's (and nothing there)
    assert main(["submit", *argv]) == 2
    assert capfd.readouterr().err.strip() == "lrstream: error: no Ray dashboard to submit to: pass --address http://HEAD:8265 or set RAY_ADDRESS to it ($RAY_ADDRESS is 127.0.0.1:1)"
    # Below, --address wins over $RAY_ADDRESS (Ray's own client would take the variable).
    try:
        monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-token")
        _refresh_ray_auth()
        assert main(["submit", "--address", url, "--submission-id", "never", *argv]) == 2
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token sent at all
        _refresh_ray_auth()
        assert main(["submit", "--address", url, *argv]) == 2
    finally:
        monkeypatch.undo()  # back to the module's token
        _refresh_ray_auth()
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("lrstream: error: the Ray dashboard at") and "RAY_AUTH_MODE=token" in line for line in err), err
