"""`lrstream` commands as Ray jobs: submit, attach, follow the logs, and hand back the driver's own exit code.

``ray job submit`` exits 1 for any failed job (0 at once with ``--no-wait``),
so cron never sees 5 for drift. :func:`run_job` submits through the
dashboard's job API, streams the job's logs and ends with the code the
driver process exited with: Ray 2.60 records it as ``driver_exit_code`` in
the job's details (the job supervisor's ``Popen.returncode``). Only where a
server leaves it out (an older Ray) is it read from the failure message
("... failed with exit code N"). A stopped job, or a driver that died
without a code (killed by a signal, its node lost), is exit 1.

Submission ids make cron fires idempotent, and a failed one retryable:
an id that SUCCEEDED is not run again (exit 0); one that is PENDING or
RUNNING is attached to; one that FAILED or was STOPPED returns its old code
unless ``retry``, which deletes the old job and submits again under the
same id. :func:`submit_retrain` (evaluate's ``--retrain-on-drift``) submits
the same way, without waiting, or runs a local child process when there is
no dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import EXIT_INTERNAL, CommandFailed, LrstreamError, UsageError

# Beyond Ray's own default excludes (.git, .venv, venv, __pycache__) and every .gitignore.
EXCLUDES = ["*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"]
MEANING = {1: "internal error", 2: "bad usage", 3: "bad input data", 4: "nothing to do", 5: "drift"}
_QUIET = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk", "ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir", "ray._private.authentication.http_token_authentication")
_AUTH_HINT = "set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


def dashboard_address(address: str | None = None) -> str | None:
    """``address`` or $RAY_ADDRESS when it is a dashboard URL (http:// or https://), without a trailing slash; else None."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return address.rstrip("/") if address and address.startswith(("http://", "https://")) else None


def entrypoint(argv: list[str]) -> str:
    """The shell command a job runs: the lrstream CLI of the cluster's Python (the working dir's lrstream/ first, when one is uploaded)."""
    return "python -m lrstream.cli " + shlex.join(argv)


def _one_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


class Jobs:
    """The job API of one Ray dashboard; Ray's errors come out as lrstream's one-line errors."""

    def __init__(self, address: str):
        for name in _QUIET:  # packaging chatter and auth warnings: the one-line errors below say what matters
            logging.getLogger(name).setLevel(logging.ERROR)
        self.address = address
        # Ray's client takes $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS over its address argument; inside a Ray job
        # the latter is the GCS address. Hide both while it resolves the address, so ``address`` is the one used.
        hidden = {name: os.environ.pop(name) for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if name in os.environ}
        try:
            from ray.job_submission import JobSubmissionClient

            self.client = JobSubmissionClient(address)
        except Exception as exc:
            raise self._error(exc) from None
        finally:
            os.environ.update(hidden)

    def _error(self, exc: Exception) -> LrstreamError:
        from ray.exceptions import AuthenticationError

        if isinstance(exc, AuthenticationError):
            return UsageError(f"the Ray dashboard at {self.address} refused the request ({_one_line(exc.message)}): {_AUTH_HINT}")
        if isinstance(exc, (OSError, ConnectionError)):  # requests' ConnectionError is an OSError
            return LrstreamError(f"cannot reach the Ray dashboard at {self.address}: {_one_line(exc)}")
        if isinstance(exc, (TypeError, ValueError)) and not isinstance(exc, LrstreamError):
            return UsageError(f"Ray dashboard {self.address}: {_one_line(exc)}")
        return LrstreamError(f"Ray dashboard {self.address}: {exc.__class__.__name__}: {_one_line(exc)}")

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except Exception as exc:
            raise self._error(exc) from None

    def info(self, submission_id: str):
        """The job's JobDetails, None when the dashboard has no job with this id."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "status code 404" in str(exc):
                return None
            raise self._error(exc) from None
        except Exception as exc:
            raise self._error(exc) from None

    def logs(self, submission_id: str) -> str:
        return self._call("get_job_logs", submission_id) or ""

    def delete(self, submission_id: str) -> None:
        self._call("delete_job", submission_id)

    def submit(self, argv: list[str], submission_id: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0, working_dir: str | None = None) -> str | None:
        """Submit ``argv`` (an lrstream command line); the submission id, or None when a job with ``submission_id`` already exists.

        The driver holds ``num_cpus`` CPUs (and ``num_gpus`` GPUs) while it
        runs, so it is scheduled on a node that has them (a worker node the
        autoscaler starts, when the head advertises no CPU).
        """
        runtime_env = {"working_dir": working_dir, "excludes": EXCLUDES} if working_dir else None
        try:
            return self.client.submit_job(
                entrypoint=entrypoint(argv), submission_id=submission_id, runtime_env=runtime_env,
                entrypoint_num_cpus=num_cpus or None, entrypoint_num_gpus=num_gpus or None,
            )  # fmt: skip
        except Exception as exc:
            if submission_id is not None and "already exists" in str(exc):
                return None
            raise self._error(exc) from None

    def follow(self, submission_id: str, write: Callable[[str], None], skip: str = "", patience: float = 30.0) -> tuple[Any, str]:
        """Poll the job until it ends, writing its new log output as it comes; returns (JobDetails, this run's log text).

        ``skip`` is an earlier run's log under the same id (Ray appends to
        it), left out when the new log starts with it. Losing the dashboard
        for longer than ``patience`` seconds is an error; the job goes on.
        """
        shown, delay, lost = 0, 0.2, None
        while True:
            try:
                details = self.info(submission_id)
                text = self.logs(submission_id)
                lost = None
            except LrstreamError as exc:
                lost = lost or time.monotonic()
                if time.monotonic() - lost > patience:
                    raise LrstreamError(f"lost the Ray dashboard while following job {submission_id}, which may still be running (run the same command again to attach): {exc}") from None
                time.sleep(1.0)
                continue
            if details is None:
                raise LrstreamError(f"job {submission_id} disappeared from the Ray dashboard at {self.address} (deleted by someone else?)")
            text = text[len(skip) :] if skip and text.startswith(skip) else text
            if len(text) > shown:
                write(text[shown:])
                shown, delay = len(text), 0.2
            if details.status.is_terminal():
                return details, text
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def outcome(details) -> tuple[int, str]:
    """The exit code a finished job stands for, and what happened in a few words."""
    status = str(getattr(details.status, "value", details.status))
    if status == "SUCCEEDED":
        return 0, "succeeded"
    if status == "STOPPED":
        return EXIT_INTERNAL, "was stopped"
    code = getattr(details, "driver_exit_code", None)
    if code is None:  # a server that does not report driver_exit_code (Ray before 2.10 or so)
        found = re.search(r"failed with exit code (-?\d+)", details.message or "")
        code = int(found.group(1)) if found else None
    if code is None:
        return EXIT_INTERNAL, f"failed without a driver exit code ({_one_line(details.message or 'no message')})"
    if code < 0:
        return EXIT_INTERNAL, f"failed: the driver was killed by signal {-code}"
    return code, f"failed: the driver exited with {code}" + (f" ({MEANING[code]})" if code in MEANING else "")


def _settle(details, margin: float = 4.0) -> None:
    """Wait until the job ended ``margin`` seconds ago (by this machine's clock, at most ``margin``) before deleting and reusing its id.

    Ray 2.60's job manager watches a job until about a second after it
    ends (JOB_MONITOR_LOOP_PERIOD_S); a job submitted under the same id
    while the old watch runs is marked FAILED ("Job supervisor actor died").
    """
    ended = (details.end_time or 0) / 1000.0
    time.sleep(min(margin, max(0.0, ended + margin - time.time())))


def _driver_error(text: str) -> str:
    """The driver's last `lrstream: ...error...` line, '' if none."""
    lines = [line.strip() for line in text.splitlines() if line.startswith("lrstream: ") and "error" in line]
    return lines[-1] if lines else ""


def _driver_json(text: str) -> dict | None:
    """The driver's own --json object: its log's last line, when that is one."""
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    try:
        doc = json.loads(last)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def run_job(
    address: str, argv: list[str], submission_id: str | None = None, retry: bool = False, num_cpus: float = 1.0, num_gpus: float = 0.0,
    working_dir: str | None = None, wait: bool = True, log: Callable[[str], None] = lambda msg: None, write: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run ``argv`` as a Ray job on the dashboard at ``address`` and return {submission_id, status, exit_code, address, action, ...}.

    ``action`` is "submitted", "attached" (the id was pending or running),
    "retried", "already succeeded" or "not re-run". A job that did not end
    with exit 0 raises CommandFailed with the driver's code and this result.
    """
    write = write or (lambda text: (sys.stderr.write(text), sys.stderr.flush()))
    jobs = Jobs(address)
    out: dict[str, Any] = {"submission_id": submission_id, "status": None, "exit_code": None, "address": address, "action": "submitted", "entrypoint": entrypoint(argv)}
    details = jobs.info(submission_id) if submission_id else None
    skip = ""
    if details is not None:
        status = details.status.value
        out["status"] = status
        if status == "SUCCEEDED":
            log(f"job {submission_id} already succeeded; not run again")
            return {**out, "action": "already succeeded", "exit_code": 0}
        if not details.status.is_terminal():
            out["action"] = "attached"
            log(f"job {submission_id} is {status}: following it")
        else:
            code, what = outcome(details)
            if not retry:
                reason = _driver_error(jobs.logs(submission_id))
                raise CommandFailed(
                    f"job {submission_id} ran before and {what}{f' [{reason}]' if reason else ''}; not run again: pass --retry to delete it and run it again",
                    code, {**out, "action": "not re-run", "exit_code": code},
                )  # fmt: skip
            _settle(details)
            skip = jobs.logs(submission_id)
            jobs.delete(submission_id)
            out["action"] = "retried"
            log(f"job {submission_id} {what}: deleted it, submitting it again (--retry)")
            details = None
    if details is None:
        new = jobs.submit(argv, submission_id, num_cpus=num_cpus, num_gpus=num_gpus, working_dir=working_dir)
        if new is None:  # another submitter took the id between our look and our submit
            out["action"] = "attached"
            log(f"job {submission_id} was just submitted by someone else: following it")
        else:
            submission_id = out["submission_id"] = new
            log(f"submitted job {new} to {address}: {out['entrypoint']}")
    if not wait:
        details = jobs.info(submission_id)
        return {**out, "status": details.status.value if details is not None else "PENDING"}
    details, text = jobs.follow(submission_id, write, skip=skip)
    code, what = outcome(details)
    out.update(status=details.status.value, exit_code=code)
    result = _driver_json(text)
    if result is not None:
        out["result"] = result
    if code != 0:
        raise CommandFailed(f"job {submission_id} {what}", code, out)
    log(f"job {submission_id} succeeded")
    return out


def submit_retrain(argv: list[str], submission_id: str, address: str | None = None) -> dict[str, Any]:
    """Start the retraining that ``argv`` (an `lrstream train` command line) describes.

    With a Ray dashboard address (``address`` or $RAY_ADDRESS, http://...) it
    is submitted as a Ray job under ``submission_id`` (one CPU for its
    driver), not waited for; Ray refuses a second job with the same id, so
    a repeated cron fire retrains once. Otherwise it runs here, in a child
    process, its output going to stderr.
    """
    url = dashboard_address(address)
    if url:
        new = Jobs(url).submit(argv, submission_id)
        return {"mode": "ray job", "submission_id": submission_id, "status": "submitted" if new else "already submitted"}
    proc = subprocess.run([sys.executable, "-m", "lrstream.cli", *argv], stdout=sys.stderr, stdin=subprocess.DEVNULL, check=False)
    return {"mode": "local", "submission_id": submission_id, "status": "done" if proc.returncode == 0 else "failed", "exit_code": proc.returncode}
