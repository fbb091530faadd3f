"""Ingest job: `ray job submit --working-dir . -- python -m jobs.ingest --root ROOT --stream S --hour H --source URL`.

Same flags and exit codes as `lrstream ingest`; inside a Ray job it joins the
job's cluster (RAY_ADDRESS is set by Ray), from cron it starts a local Ray.
"""

import sys

from lrstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
