"""Who may do what, defined once. Teams grant the permissions in the admin.

- launch (and so retry and re-run): `spawner.add_batch`
- cancel a batch or a run: `spawner.cancel_batch`, or owning the batch
- run an admin-only agent type (the shell): staff
- see the clusters and drain one: staff or superuser
- assign and resolve escalations: `spawner.resolve_escalation`
- review a batch's combined result: `spawner.review_batch`

Superusers have every permission. The writes call `require(actor, may_...)`; an actor of None is
the local command line, whose user already has the server's shell, and may do anything.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from spawner.errors import NotAllowed

LAUNCH = "spawner.add_batch"
CANCEL = "spawner.cancel_batch"
RESOLVE_ESCALATION = "spawner.resolve_escalation"
REVIEW = "spawner.review_batch"


def _active(user) -> bool:
    return user is not None and user.is_authenticated and user.is_active


def may_launch(user) -> bool:
    return _active(user) and user.has_perm(LAUNCH)


def may_cancel(user, batch=None) -> bool:
    """Any batch with the cancel permission; one's own batches without it."""
    if not _active(user):
        return False
    owns = batch is not None and batch.owner_id is not None and batch.owner_id == user.id
    return owns or user.has_perm(CANCEL)


def may_run_admin_only(user) -> bool:
    return _active(user) and user.is_staff


def may_manage_clusters(user) -> bool:
    """See the clusters and tell one to drain: staff (an API token below `admin` never acts as staff)."""
    return _active(user) and user.is_staff


def may_resolve_escalations(user) -> bool:
    return _active(user) and user.has_perm(RESOLVE_ESCALATION)


def may_review(user) -> bool:
    return _active(user) and user.has_perm(REVIEW)


REFUSALS: dict[Callable[..., bool], str] = {
    may_launch: "you need the permission to launch batches",
    may_cancel: "you need the permission to cancel batches (or to own this one)",
    may_run_admin_only: "only an admin may run this agent type",
    may_manage_clusters: "only an admin may see the clusters and drain one",
    may_resolve_escalations: "you need the permission to assign and resolve escalations",
    may_review: "you need the permission to review results",
}

# What a page shows a reader (see the `data-may` attribute in base.html).
TOKENS: dict[str, Callable[..., bool]] = {
    "launch": may_launch,
    "cancel": may_cancel,
    "admin": may_run_admin_only,
    "resolve": may_resolve_escalations,
    "review": may_review,
}


def token_acts_as(user, scope: str):
    """The person as an API token of this scope lets them act (REST API and MCP): `read` and `launch`
    tokens never act as staff, so they cannot run admin-only agent types; `admin` acts as the person."""
    if scope == "admin" or user is None or not user.is_staff:
        return user
    narrowed = copy.copy(user)
    narrowed.is_staff = False
    return narrowed


def require(user, may: Callable[..., bool], *args) -> None:
    """Raise NotAllowed (with the reason) unless `user` may; None is the local command line."""
    if user is None:
        return
    if not may(user, *args):
        raise NotAllowed(REFUSALS[may])


def granted(user) -> list[str]:
    """The names of what this user may do everywhere (cancelling one's own batch is per batch)."""
    return [name for name, may in TOKENS.items() if may(user)]


def admin_only_refusal(user, runs: Iterable) -> str:
    """Running an admin-only agent type again needs an admin, as launching it did; '' if allowed."""
    if user is None or may_run_admin_only(user):
        return ""
    names = sorted({r.agent_type.name for r in runs if r.agent_type.admin_only})
    return f"only an admin may run {', '.join(names)} again" if names else ""


def retry_needs(run) -> str:
    """The rights (names in TOKENS) a person's retry of `run` needs: launching, and an admin for an
    admin-only agent type (as launching it did)."""
    return "launch admin" if run.agent_type.admin_only else "launch"


def may_retry_run(user, run) -> bool:
    """A person's retry of one run: the launch permission, and an admin for an admin-only type."""
    return may_launch(user) and not admin_only_refusal(user, [run])


class May(dict):
    """What one reader may do on one page, for the templates: `may.launch`, and `may.why.launch`
    (the reason it is refused, to show in place of the button). A dict, so a page's context and the
    live relay's (one per kind of reader) carry the same thing."""

    @property
    def key(self) -> str:
        """A short name for this set of rights: readers with the same one may share live fragments."""
        return "".join("1" if self[name] else "0" for name in sorted(self) if name != "why")


def page_may(user, batch=None) -> May:
    """Everything the dashboard's buttons ask about, for one reader (and one batch, for cancelling)."""
    found = May(
        launch=may_launch(user),
        cancel=may_cancel(user, batch),
        admin=may_run_admin_only(user),
        resolve=may_resolve_escalations(user),
        review=may_review(user),
    )
    found["why"] = {name: REFUSALS[TOKENS[name]] for name in TOKENS if not found[name]}
    return found


def allows(may: dict, needs: str) -> bool:
    """Whether every right named in `needs` ("resolve launch") is granted in `may`."""
    return all(may.get(name, False) for name in needs.split())
