"""Evaluate job: `ray job submit --submission-id eval-S-HOUR -- python -m jobs.evaluate --root ROOT --stream S --hour HOUR`.

Same flags and exit codes as `lrstream evaluate`: 0 evaluated (or already
evaluated), 3 bad data, 4 nothing to evaluate (no sketch, no new hour),
5 drift (the sketch lost to sparse random; cron can retrain on it).
"""

import sys

from lrstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
