"""The review state: each reviewer's latest decision; the owner's approval counts only if set so."""

from __future__ import annotations

from spawner.core.review import summarise

OWNER, ANN, BOB = 1, 2, 3


def test_the_owner_alone_does_not_approve_by_default():
    s = summarise([(OWNER, "own", "approve")], owner_id=OWNER)
    assert (s.state, s.counted, s.approved_by, s.not_counted) == ("pending", 0, ["own"], ["own"])
    assert s.progress == "0 of 1 approval needed"


def test_the_owner_counts_when_the_setting_says_so():
    assert summarise([(OWNER, "own", "approve")], owner_id=OWNER, owner_counts=True).state == "approved"


def test_one_approval_by_someone_else_approves():
    s = summarise([(OWNER, "own", "approve"), (ANN, "ann", "approve")], owner_id=OWNER)
    assert (s.state, s.counted, s.approved_by) == ("approved", 1, ["own", "ann"])
    assert s.progress == "1 of 1 approval needed"


def test_two_approvals_needed():
    one = summarise([(ANN, "ann", "approve")], owner_id=OWNER, needed=2)
    two = summarise([(ANN, "ann", "approve"), (BOB, "bob", "approve")], owner_id=OWNER, needed=2)
    assert (one.state, one.progress) == ("pending", "1 of 2 approvals needed")
    assert (two.state, two.progress) == ("approved", "2 of 2 approvals needed")


def test_a_reviewers_latest_decision_counts_and_changes_requested_holds():
    s = summarise([(ANN, "ann", "approve"), (BOB, "bob", "request_changes")], owner_id=OWNER)
    assert (s.state, s.changes_by) == ("changes_requested", ["bob"])
    s = summarise(
        [(ANN, "ann", "approve"), (BOB, "bob", "request_changes"), (BOB, "bob", "approve"), (BOB, "bob", "comment")],
        owner_id=OWNER,
    )
    assert (s.state, s.counted, s.approved_by) == ("approved", 2, ["ann", "bob"])
    s = summarise([(ANN, "ann", "approve"), (ANN, "ann", "request_changes")], owner_id=OWNER)
    assert (s.state, s.approved_by) == ("changes_requested", [])


def test_a_batch_from_the_command_line_has_no_owner_to_exclude():
    assert summarise([(ANN, "ann", "approve")], owner_id=None).state == "approved"
