"""This cluster's name and its drain flag, shared by the processes q2 forks from it."""

from __future__ import annotations

import multiprocessing
import socket

HOST = socket.gethostname()
# Set by spawner_cluster before q2 forks, so its pusher and workers inherit both.
CLUSTER_ID = ""
_drain = None


def cluster_id(host: str, pid: int) -> str:
    return f"{host}:{pid}"


def cluster_begin(pid: int) -> str:
    """Name this cluster and create the drain flag its forked processes will share."""
    global CLUSTER_ID, _drain
    CLUSTER_ID = cluster_id(HOST, pid)
    _drain = multiprocessing.get_context("fork").Event()
    return CLUSTER_ID


def drain_start() -> None:
    if _drain is not None:
        _drain.set()


def draining() -> bool:
    """True in a cluster that is stopping: take nothing new."""
    return _drain is not None and _drain.is_set()
