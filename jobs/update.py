"""Update job: `ray job submit --submission-id update-S-HOUR -- python -m jobs.update --root ROOT --stream S --hour HOUR`.

Same flags and exit codes as `lrstream update`: 0 folded (a new version), 2 the
current version keeps no update statistics (run a full retrain), 3 bad data
(a frame shape unlike the sketch's), 4 nothing to fold (no sketch, or the
hour is already folded).
"""

import sys

from lrstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["update", *sys.argv[1:]]))
