"""The engine's named rules, one test per rule, with plain data."""

from __future__ import annotations

from spawner.core import rules
from spawner.core.rules import Severity
from spawner.states import AttemptStatus, BatchStatus, RunStatus

SUCCEEDED, FAILED, LOST, CANCELLED = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.LOST, RunStatus.CANCELLED


def retry(**overrides):
    args = dict(
        attempt_status=AttemptStatus.FAILED,
        attempt_number=1,
        retries=2,
        batch_running=True,
        cancel_requested=False,
        backoff_base=2.0,
        backoff_cap=300.0,
    )
    return rules.retry_delay(**{**args, **overrides})


def test_backoff_doubles_from_the_base_and_stops_at_the_cap():
    assert [rules.backoff_delay(n, base=2.0, cap=10.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 10.0]


def test_a_failed_attempt_with_retries_left_is_retried_after_its_backoff():
    assert retry(attempt_number=1) == 2.0
    assert retry(attempt_number=2) == 4.0


def test_the_last_allowed_attempt_is_not_retried():
    assert retry(attempt_number=3, retries=2) is None


def test_timeouts_and_lost_workers_are_retried_like_failures():
    assert retry(attempt_status=AttemptStatus.TIMED_OUT) == 2.0
    assert retry(attempt_status=AttemptStatus.LOST) == 2.0


def test_a_success_or_a_cancel_is_never_retried():
    assert retry(attempt_status=AttemptStatus.SUCCEEDED) is None
    assert retry(attempt_status=AttemptStatus.CANCELLED) is None


def test_nothing_is_retried_once_the_batch_has_ended_or_is_being_cancelled():
    assert retry(batch_running=False) is None
    assert retry(cancel_requested=True) is None


def test_under_fail_fast_a_failure_fails_the_batch_even_if_others_succeeded():
    assert rules.batch_outcome([SUCCEEDED, FAILED], cancel_requested=False, fail_fast=True) == BatchStatus.FAILED
    assert rules.batch_outcome([SUCCEEDED, FAILED], cancel_requested=False, fail_fast=False) == BatchStatus.PARTIAL


def test_a_cancel_request_wins_over_every_other_outcome():
    assert rules.batch_outcome([SUCCEEDED], cancel_requested=True, fail_fast=True) == BatchStatus.CANCELLED


def test_a_race_succeeds_with_one_winner():
    assert rules.batch_outcome([SUCCEEDED, CANCELLED], cancel_requested=False, fail_fast=False, race=True) == (
        BatchStatus.SUCCEEDED
    )


def test_a_batch_with_no_success_failed():
    assert rules.batch_outcome([FAILED, LOST], cancel_requested=False, fail_fast=False) == BatchStatus.FAILED


def test_a_failed_p0_escalates_a_p1_warns_and_a_p2_is_a_note():
    assert rules.failure_severity(priority=0, status=FAILED) == Severity.ESCALATE
    assert rules.failure_severity(priority=1, status=RunStatus.TIMED_OUT) == Severity.WARN
    assert rules.failure_severity(priority=2, status=FAILED) == Severity.NOTE


def test_a_lost_run_goes_to_a_person_whatever_its_priority():
    assert rules.failure_severity(priority=2, status=LOST) == Severity.ESCALATE


def test_a_success_or_a_decision_to_stop_is_not_a_failure():
    assert rules.failure_severity(priority=0, status=SUCCEEDED) == Severity.NONE
    assert rules.failure_severity(priority=0, status=CANCELLED) == Severity.NONE
    assert rules.failure_severity(priority=0, status=RunStatus.SKIPPED) == Severity.NONE


def test_a_hand_back_spends_no_retry():
    # retries: 0; attempt 1 was handed back, attempt 2 fails: that is the first real failure.
    assert retry(attempt_status=AttemptStatus.HANDED_BACK, attempt_number=1, handed_back=1, retries=0) == 0.0
    assert retry(attempt_status=AttemptStatus.FAILED, attempt_number=2, handed_back=1, retries=0) is None
    assert retry(attempt_status=AttemptStatus.FAILED, attempt_number=2, handed_back=1, retries=1) == 2.0


def test_a_hand_back_in_a_closed_batch_cancels_the_run():
    assert retry(attempt_status=AttemptStatus.HANDED_BACK, handed_back=1, batch_running=False) is None
    assert rules.run_status_after(AttemptStatus.HANDED_BACK) == RunStatus.CANCELLED
    assert rules.run_status_after(AttemptStatus.SUCCEEDED) == RunStatus.SUCCEEDED
    assert rules.run_status_after(AttemptStatus.TIMED_OUT) == RunStatus.TIMED_OUT
