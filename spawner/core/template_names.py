"""Which saved template a person means by a name: `NAME` (a global one, else the only one so
named) or `OWNER/NAME`. Pure: the command line asks it about rows from the database or the API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    id: int
    name: str
    owner: str | None  # None: a global template


class NotOne(ValueError):
    """No template, or several, answer to the name: the message says which and what to write."""


def pick(wanted: str, candidates: Iterable[Candidate]) -> Candidate:
    owner, _, name = wanted.rpartition("/")
    found = [c for c in candidates if c.name == name and (not owner or c.owner == owner)]
    if len(found) > 1:
        found = [c for c in found if c.owner is None] or found
    if not found:
        raise NotOne(f"no template named {wanted!r}")
    if len(found) > 1:
        owners = ", ".join(f"{c.owner}/{name}" for c in found if c.owner)
        raise NotOne(f"several templates are named {name!r}: say whose ({owners})")
    return found[0]
