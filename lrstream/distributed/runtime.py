"""lrstream's Ray runtime: start or join a cluster, make plain classes remote, carry errors as data.

Roles are plain classes elsewhere (tests and ``learn`` run them in-process);
:func:`as_actor` turns one into a Ray actor class whose failures come back as
data (``{"ok": False, "exit_code": ..., "error": ..., "type": ...}``), never
as pickled exceptions, and :class:`OnRay` is the executor the training loop
drives actors with. With no cluster address a local Ray starts, so every job
also runs on a laptop.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from ..errors import EXIT_INTERNAL, DataError, DriftError, LrstreamError, NothingToDoError, UsageError


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or $RAY_ADDRESS), else start a local Ray; a no-op if already connected."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(address=address, **kwargs)


def remote(cls, **options):
    """``ray.remote(cls)`` with actor options (num_cpus, num_gpus, max_restarts, ...)."""
    import ray

    return ray.remote(**options)(cls) if options else ray.remote(cls)


# ------------------------------------------------------------------ errors as data

_TYPED = {c.__name__: c for c in (UsageError, DataError, NothingToDoError, DriftError)}


def failure(exc: BaseException, **context: Any) -> dict[str, Any]:
    """An exception as plain data; ``context`` (e.g. stream, hour) is kept beside it."""
    if isinstance(exc, LrstreamError):
        return {"ok": False, **context, "exit_code": exc.exit_code, "error": str(exc), "type": exc.__class__.__name__}
    return {"ok": False, **context, "exit_code": EXIT_INTERNAL, "error": f"{exc.__class__.__name__}: {exc}", "type": "internal"}


def is_failure(result: Any) -> bool:
    return isinstance(result, dict) and result.get("ok") is False


def raise_failure(result: Any) -> Any:
    """Raise the typed exception a failure carries; any other result is returned unchanged."""
    if not is_failure(result):
        return result
    cls = _TYPED.get(result.get("type"), LrstreamError)
    exc = cls(result["error"])
    if cls is LrstreamError:
        exc.exit_code = int(result.get("exit_code", EXIT_INTERNAL))
    raise exc


def reporting(cls):
    """A subclass of ``cls`` whose constructor and public methods report failures as data instead of raising.

    A failed constructor is kept and returned by every later call, so the
    driver sees it (typed, one line) on its first call, usually ``ready``.
    """

    def wrap(fn):
        def method(self, *args, **kwargs):
            if self._failure is not None:
                return self._failure
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                return failure(exc)

        method.__name__, method.__doc__ = fn.__name__, fn.__doc__
        return method

    def __init__(self, *args, **kwargs):
        self._failure = None
        try:
            cls.__init__(self, *args, **kwargs)
        except Exception as exc:
            self._failure = failure(exc)

    body = {name: wrap(fn) for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}
    return type(cls.__name__, (cls,), {"__init__": __init__, "__doc__": cls.__doc__, "__module__": cls.__module__, **body})


class OnRay:
    """The training loop's executor on Ray: actors, references passed through unfetched, failures raised typed."""

    def __init__(self):
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        self.ray = ray
        self.actor_errors = (RayActorError, ActorDiedError, ActorUnavailableError)

    def create(self, cls, args: tuple, **options):
        return remote(reporting(cls), **options).remote(*args)

    def call(self, actor, method: str, *args):
        return getattr(actor, method).remote(*args)

    def result(self, ref, timeout: float | None = None):
        return raise_failure(self.ray.get(ref, timeout=timeout))

    def wait_one(self, refs: list):
        done, _ = self.ray.wait(refs, num_returns=1)
        return done[0]

    def kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
