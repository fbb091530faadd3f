"""Typed errors shared by every layer, each carrying the exit code of DESIGN.md.

The numerics raise these (they subclass ValueError / LookupError where that is
the natural Python type) so that callers can catch them without knowing the
CLI; the CLI maps ``exit_code`` onto the process status and prints one line.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NOTHING = 4
EXIT_DRIFT = 5

# A job over many streams exits with its worst stream's code, worst first:
# a bug (1), then bad data (3) and bad configuration (2), which need a person;
# drift (5), which a retrain fixes; nothing to do (4), which is benign; done (0).
SEVERITY = (EXIT_INTERNAL, EXIT_DATA, EXIT_USAGE, EXIT_DRIFT, EXIT_NOTHING, EXIT_OK)


def worst_exit_code(codes) -> int:
    """The most severe of ``codes`` by :data:`SEVERITY` (a code outside it, e.g. a signal's, counts as the worst); 0 for none."""
    rank = {code: i for i, code in enumerate(SEVERITY)}
    return min(codes, key=lambda c: rank.get(c, -1), default=EXIT_OK)


class LrstreamError(Exception):
    """Base class: a failure the user can act on, reported in one line."""

    exit_code = EXIT_INTERNAL


class UsageError(LrstreamError, ValueError):
    """Bad arguments or configuration (exit 2)."""

    exit_code = EXIT_USAGE


class DataError(LrstreamError, ValueError):
    """Input data is corrupt, of the wrong shape, non-finite or empty (exit 3)."""

    exit_code = EXIT_DATA


class NothingToDoError(LrstreamError, LookupError):
    """There is nothing to work on: no sketch, no new hour (exit 4)."""

    exit_code = EXIT_NOTHING


class DriftError(LrstreamError):
    """The learned sketch lost to random sketches (exit 5)."""

    exit_code = EXIT_DRIFT


class CommandFailed(LrstreamError):
    """A job that finished with a failure (drift, a partly failed ingest, a target not met) but still has a JSON-ready result.

    The CLI prints ``message`` as its one error line, exits with ``exit_code``
    and, with ``--json``, still prints ``result`` as the last line of stdout.
    """

    def __init__(self, message: str, exit_code: int, result: dict):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result
