"""Apply job: `ray job submit --submission-id apply-S-HOUR -- python -m jobs.apply --root ROOT --stream S --hour HOUR --workers W`.

Same flags and exit codes as `lrstream apply`: 0 applied (or already
applied: a re-run is a no-op), 2 bad usage (the hour holds another
version's factors and --force was not given), 3 bad data (shape unlike the
sketch's, corrupt shard), 4 nothing to apply (no sketch, no such hour). The
factor workers run as Ray actors of the cluster the job was submitted to.
"""

import sys

from lrstream.cli import main

if __name__ == "__main__":
    sys.exit(main(["apply", *sys.argv[1:]]))
