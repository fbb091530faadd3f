"""Starting an `lrstream` command as a Ray job (or, without a dashboard, as a local child process)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Any


def submit_retrain(argv: list[str], submission_id: str, address: str | None = None) -> dict[str, Any]:
    """Start the retraining that ``argv`` (an `lrstream train` command line) describes.

    With a Ray dashboard address (``address`` or $RAY_ADDRESS, http://...) it
    is submitted as a Ray job under ``submission_id``; Ray refuses a second
    job with the same id, so a repeated cron fire retrains once. Otherwise it
    runs here, in a child process, its output going to stderr.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(address)
        try:
            client.submit_job(entrypoint="lrstream " + shlex.join(argv), submission_id=submission_id)
        except Exception as exc:  # Ray reports a duplicate id as a plain RuntimeError/ValueError
            if "already exists" not in str(exc):
                raise
            return {"mode": "ray job", "submission_id": submission_id, "status": "already submitted"}
        return {"mode": "ray job", "submission_id": submission_id, "status": "submitted"}
    proc = subprocess.run([sys.executable, "-m", "lrstream.cli", *argv], stdout=sys.stderr, stdin=subprocess.DEVNULL, check=False)
    return {"mode": "local", "submission_id": submission_id, "status": "done" if proc.returncode == 0 else "failed", "exit_code": proc.returncode}
