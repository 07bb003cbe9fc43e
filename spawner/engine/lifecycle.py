"""This cluster's name and its drain flag, shared by the processes q2 forks from it."""

from __future__ import annotations

import multiprocessing
import os
import socket

# The machine this process runs on, as attempts and cluster heartbeats name it. SPAWNER_HOST overrides
# the host name, so several "machines" can share one box (the fault-injection suite runs three).
HOST = os.environ.get("SPAWNER_HOST") or socket.gethostname()
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
