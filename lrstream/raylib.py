"""The one place where lrstream touches Ray's runtime: start/connect, make actors remote.

Actors are plain classes elsewhere (tests run them in-process); this module
turns them into Ray actors and starts a local Ray when no cluster address is
given, so every job also runs on a laptop.
"""

from __future__ import annotations

import os
from typing import Any


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
