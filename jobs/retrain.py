"""Retrain job: `ray job submit --working-dir . -- python -m jobs.retrain --root ROOT --stream S --k K --m M --last N`.

Same flags and exit codes as `lrstream train`; inside a Ray job it joins the
job's cluster (RAY_ADDRESS is set by Ray) and asks it for one CPU (or GPU)
per worker, so an autoscaling cluster grows to fit; from cron it starts a
local Ray.
"""

import sys

from lrstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
