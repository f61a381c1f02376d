"""Dask clusters for the jobs that can spread over many processes (batch scoring, embedding
extraction): a client from an address, a scheduler file or ``local[:N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deeppcos.exceptions import ConfigError

__all__ = ["dask_client"]


def dask_client(client: Any, scheduler: str | None) -> tuple[Any, Any]:
    """(client, cluster to close or None) from a client, or a scheduler address, a scheduler
    file or ``local[:N]`` (a local cluster of N processes, one thread each)."""
    if client is not None:
        return client, None
    from deeppcos.extras import require

    require("distributed", "dask", f"a Dask cluster (--dask {scheduler})")
    from distributed import Client, LocalCluster

    assert scheduler is not None
    if scheduler.startswith("local"):
        _, _, count = scheduler.partition(":")
        if count and not count.isdigit():
            raise ConfigError(f"--dask {scheduler!r}: expected local or local:N (N workers)")
        cluster = LocalCluster(
            n_workers=int(count or 2), threads_per_worker=1, processes=True, dashboard_address=None
        )
        return Client(cluster), cluster
    if scheduler.endswith(".json") and Path(scheduler).is_file():
        return Client(scheduler_file=scheduler), None
    return Client(scheduler), None
