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


NAME_MAX = 200


def name_error(name: str) -> str:
    """Why a cluster name cannot be used ('' if it can): it names the cluster in the registry and on
    attempts, so it is short, printable and has no spaces."""
    if len(name) > NAME_MAX:
        return f"SPAWNER_CLUSTER_NAME is {len(name)} characters; the limit is {NAME_MAX}"
    if not name.isprintable() or any(c.isspace() for c in name):
        return f"SPAWNER_CLUSTER_NAME {name!r} has spaces or unprintable characters; use letters, digits, - _ . :"
    return ""


def cluster_begin(pid: int) -> str:
    """Name this cluster (SPAWNER_CLUSTER_NAME, else host:pid) and create the drain flag its forked
    processes will share. Raises ValueError for a name that cannot be used."""
    global CLUSTER_ID, _drain
    name = os.environ.get("SPAWNER_CLUSTER_NAME", "").strip() or cluster_id(HOST, pid)
    if problem := name_error(name):
        raise ValueError(problem)
    CLUSTER_ID = name
    _drain = multiprocessing.get_context("fork").Event()
    return CLUSTER_ID


def drain_start() -> None:
    if _drain is not None:
        _drain.set()


def draining() -> bool:
    """True in a cluster that is stopping: take nothing new."""
    return _drain is not None and _drain.is_set()
