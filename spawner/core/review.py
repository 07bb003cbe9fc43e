"""A combined result's review state: who approved, how many approvals count, what is still needed.

Each reviewer's latest approve or request changes counts (comments do not). One request for changes
outstanding makes the state "changes requested"; otherwise the result is approved once enough
approvals count. By default the batch's owner's own approval does not count: someone else signs off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

APPROVE = "approve"
REQUEST_CHANGES = "request_changes"


@dataclass(frozen=True)
class ReviewSummary:
    state: str  # approved, changes_requested or pending
    needed: int  # approvals required
    counted: int  # approvals that count
    approved_by: list[str] = field(default_factory=list)  # every approver, in order of approval
    not_counted: list[str] = field(default_factory=list)  # approvers whose approval does not count
    changes_by: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return {"approved": "approved", "changes_requested": "changes requested"}.get(self.state, "pending")

    @property
    def progress(self) -> str:
        """ "1 of 1 approvals needed" style: how far the approvals are."""
        return f"{min(self.counted, self.needed)} of {self.needed} approval{'s' if self.needed != 1 else ''} needed"


def summarise(
    decisions: list[tuple[int, str, str]], *, owner_id: int | None, needed: int = 1, owner_counts: bool = False
) -> ReviewSummary:
    """`decisions`: (author id, author name, decision) in the order they were made, comments included."""
    latest: dict[int, tuple[str, str]] = {}
    for author_id, name, decision in decisions:
        if decision in (APPROVE, REQUEST_CHANGES):
            latest.pop(author_id, None)  # keep the order of each author's latest decision
            latest[author_id] = (name, decision)
    needed = max(1, needed)
    approvers = [(a, name) for a, (name, d) in latest.items() if d == APPROVE]
    counting = [name for a, name in approvers if owner_counts or owner_id is None or a != owner_id]
    not_counted = [name for a, name in approvers if not (owner_counts or owner_id is None or a != owner_id)]
    changes_by = [name for name, d in latest.values() if d == REQUEST_CHANGES]
    if changes_by:
        state = "changes_requested"
    elif len(counting) >= needed:
        state = "approved"
    else:
        state = "pending"
    return ReviewSummary(
        state=state,
        needed=needed,
        counted=len(counting),
        approved_by=[name for _, name in approvers],
        not_counted=not_counted,
        changes_by=changes_by,
    )
