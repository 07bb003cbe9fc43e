"""Scheduling: which runs start now, which are skipped or cancelled, and how a batch ends. One rule a test."""

from __future__ import annotations

import pytest

from spawner.core import scheduling
from spawner.core.scheduling import Limits, RunView
from spawner.states import BatchStatus, RunStatus

NOW = 1_000.0
PENDING, QUEUED, RUNNING = RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING
SUCCEEDED, FAILED = RunStatus.SUCCEEDED, RunStatus.FAILED


def run(key, status=PENDING, *deps, priority=1, agent_type="shell", order=0) -> RunView:
    return RunView(key=key, status=status, priority=priority, depends_on=deps, agent_type=agent_type, order=order)


def started(runs, now=NOW, **limits) -> list[str]:
    limits.setdefault("max_parallel", 10)
    return [key for key, _ in scheduling.decide(runs, Limits(**limits), now).start]


# --- starting runs ----------------------------------------------------------------


def test_it_starts_p0_before_p1_before_p2():
    runs = [run("low", priority=2), run("mid", priority=1), run("top", priority=0)]
    assert started(runs, max_parallel=1) == ["top"]
    assert started(runs, max_parallel=2) == ["top", "mid"]
    assert started(runs, max_parallel=3) == ["top", "mid", "low"]


def test_it_breaks_a_priority_tie_by_plan_order():
    runs = [run("b", order=2), run("c", order=3), run("a", order=1)]
    assert started(runs, max_parallel=2) == ["a", "b"]


def test_runs_start_now_when_nothing_asks_them_to_wait():
    decision = scheduling.decide([run("a"), run("b")], Limits(max_parallel=2), NOW)
    assert decision.start == [("a", NOW), ("b", NOW)]
    assert not decision.finished and decision.outcome is None


def test_it_starts_no_more_than_max_parallel():
    runs = [run(k) for k in "abcde"]
    assert started(runs, max_parallel=3) == ["a", "b", "c"]


def test_queued_and_running_runs_count_against_max_parallel():
    runs = [run("q", QUEUED), run("r", RUNNING), run("a"), run("b")]
    assert started(runs, max_parallel=3) == ["a"]


def test_it_starts_nothing_while_every_slot_is_taken():
    runs = [run("q", QUEUED), run("r", RUNNING), run("a")]
    assert started(runs, max_parallel=2) == []


def test_finished_runs_free_their_slots():
    runs = [run("done", SUCCEEDED), run("broke", FAILED), run("a"), run("b")]
    assert started(runs, max_parallel=2) == ["a", "b"]


def test_a_run_waits_until_its_dependencies_succeed():
    assert started([run("a", RUNNING), run("b", PENDING, "a")]) == []
    assert started([run("a", SUCCEEDED), run("b", PENDING, "a")]) == ["b"]


def test_a_run_waits_for_every_one_of_its_dependencies():
    runs = [run("a", SUCCEEDED), run("b", QUEUED), run("c", PENDING, "a", "b")]
    assert started(runs) == []


# --- agent type caps and stagger --------------------------------------------------


def test_a_type_cap_counts_active_runs_of_other_batches():
    runs = [run("a", agent_type="claude"), run("b", agent_type="claude")]
    limits = {"type_caps": {"claude": 2}}
    assert started(runs, **limits, type_active={"claude": 1}) == ["a"]
    assert started(runs, **limits, type_active={"claude": 2}) == []


def test_a_type_cap_limits_starts_within_one_decision():
    runs = [run(k, agent_type="claude") for k in "abc"]
    assert started(runs, type_caps={"claude": 2}) == ["a", "b"]


def test_a_capped_type_does_not_hold_up_other_types():
    runs = [
        run("c1", agent_type="claude", priority=0),
        run("c2", agent_type="claude", priority=0),
        run("s1", agent_type="shell", priority=2),
    ]
    assert started(runs, type_caps={"claude": 1}) == ["c1", "s1"]


def test_a_type_without_a_cap_is_limited_only_by_max_parallel():
    runs = [run(k, agent_type="shell") for k in "abcd"]
    assert started(runs, max_parallel=3, type_caps={"claude": 1}, type_active={"shell": 50}) == ["a", "b", "c"]


def test_a_spawn_stagger_gives_each_start_of_a_type_a_later_time():
    runs = [run(k, agent_type="claude") for k in "abc"] + [run("s", agent_type="shell")]
    decision = scheduling.decide(runs, Limits(max_parallel=4, type_stagger={"claude": 5.0}), NOW)
    assert decision.start == [("a", NOW), ("b", NOW + 5), ("c", NOW + 10), ("s", NOW)]
    assert decision.type_next_start == {"claude": NOW + 15}


def test_a_stagger_continues_from_the_last_start_of_that_type():
    limits = Limits(max_parallel=2, type_stagger={"claude": 5.0}, type_next_start={"claude": NOW + 3})
    decision = scheduling.decide([run("a", agent_type="claude")], limits, NOW)
    assert decision.start == [("a", NOW + 3)]
    assert decision.type_next_start == {"claude": NOW + 8}


def test_a_stagger_that_has_already_passed_starts_the_run_now():
    limits = Limits(max_parallel=2, type_stagger={"claude": 5.0}, type_next_start={"claude": NOW - 60})
    decision = scheduling.decide([run("a", agent_type="claude")], limits, NOW)
    assert decision.start == [("a", NOW)]


def test_a_decision_leaves_the_limits_it_was_given_untouched():
    limits = Limits(max_parallel=2, type_stagger={"claude": 5.0}, type_next_start={"claude": NOW})
    scheduling.decide([run("a", agent_type="claude")], limits, NOW)
    assert limits.type_next_start == {"claude": NOW}


# --- failed dependencies ----------------------------------------------------------


@pytest.mark.parametrize("dead", [FAILED, RunStatus.TIMED_OUT, RunStatus.LOST, RunStatus.CANCELLED, RunStatus.SKIPPED])
def test_a_dependency_that_did_not_succeed_skips_its_dependents_transitively(dead):
    runs = [run("a", dead), run("b", PENDING, "a"), run("c", PENDING, "b"), run("free")]
    decision = scheduling.decide(runs, Limits(max_parallel=5), NOW)
    assert decision.skip == ["b", "c"]
    assert [key for key, _ in decision.start] == ["free"]


def test_skips_reach_through_a_chain_listed_in_any_order():
    runs = [run("d", PENDING, "c"), run("c", PENDING, "b"), run("b", PENDING, "a"), run("a", FAILED)]
    assert sorted(scheduling.decide(runs, Limits(max_parallel=5), NOW).skip) == ["b", "c", "d"]


def test_one_failed_dependency_is_enough_to_skip_a_run():
    runs = [run("a", SUCCEEDED), run("b", FAILED), run("c", PENDING, "a", "b")]
    assert scheduling.decide(runs, Limits(max_parallel=5), NOW).skip == ["c"]


def test_a_dependency_still_at_work_skips_nothing():
    runs = [run("a", RUNNING), run("b", PENDING, "a")]
    assert scheduling.decide(runs, Limits(max_parallel=5), NOW).skip == []


def test_under_the_continue_policy_other_runs_go_on_after_a_failure():
    runs = [run("a", FAILED), run("b", RUNNING), run("c")]
    decision = scheduling.decide(runs, Limits(max_parallel=5), NOW)
    assert decision.cancel == [] and [key for key, _ in decision.start] == ["c"]


# --- stopping a batch -------------------------------------------------------------


@pytest.mark.parametrize("failure", [FAILED, RunStatus.TIMED_OUT, RunStatus.LOST])
def test_fail_fast_cancels_every_run_not_yet_finished(failure):
    runs = [run("ok", SUCCEEDED), run("bad", failure), run("q", QUEUED), run("r", RUNNING), run("p")]
    decision = scheduling.decide(runs, Limits(max_parallel=5, fail_fast=True), NOW)
    assert decision.cancel == ["q", "r", "p"]
    assert decision.start == [] and decision.skip == []
    assert (decision.finished, decision.outcome) == (True, BatchStatus.FAILED)


def test_fail_fast_does_nothing_special_while_nothing_failed():
    runs = [run("ok", SUCCEEDED), run("r", RUNNING), run("p")]
    decision = scheduling.decide(runs, Limits(max_parallel=5, fail_fast=True), NOW)
    assert decision.cancel == [] and [key for key, _ in decision.start] == ["p"]


def test_fail_fast_is_not_set_off_by_a_cancelled_or_skipped_run():
    runs = [run("c", RunStatus.CANCELLED), run("s", RunStatus.SKIPPED), run("p")]
    decision = scheduling.decide(runs, Limits(max_parallel=5, fail_fast=True), NOW)
    assert decision.cancel == [] and [key for key, _ in decision.start] == ["p"]


def test_a_cancel_request_cancels_every_unfinished_run():
    runs = [run("ok", SUCCEEDED), run("q", QUEUED), run("r", RUNNING), run("p"), run("d", PENDING, "p")]
    decision = scheduling.decide(runs, Limits(max_parallel=5, cancel_requested=True), NOW)
    assert decision.cancel == ["q", "r", "p", "d"]
    assert decision.start == [] and decision.skip == []
    assert (decision.finished, decision.outcome) == (True, BatchStatus.CANCELLED)


# --- sequential mode --------------------------------------------------------------


def test_sequential_mode_starts_one_run_at_a_time_whatever_max_parallel_says():
    runs = [run("a", order=0), run("b", order=1)]
    assert started(runs, max_parallel=8, sequential=True) == ["a"]


def test_sequential_mode_follows_plan_order_not_priority():
    runs = [run("urgent", priority=0, order=2), run("first", priority=2, order=0), run("x", order=1)]
    assert started(runs, sequential=True) == ["first"]


def test_sequential_mode_waits_while_a_run_is_active():
    runs = [run("a", RUNNING, order=0), run("b", order=1)]
    assert started(runs, sequential=True) == []


def test_sequential_mode_waits_for_a_capped_type_rather_than_leave_plan_order():
    runs = [run("a", agent_type="claude", order=0), run("b", agent_type="shell", order=1)]
    limits = {"type_caps": {"claude": 1}, "type_active": {"claude": 1}}
    assert started(runs, sequential=True, **limits) == []


# --- how a batch ends -------------------------------------------------------------


def test_a_batch_is_not_finished_while_a_run_is_pending_or_active():
    for status in (PENDING, QUEUED, RUNNING):
        runs = [run("a", SUCCEEDED), run("b", status)]
        decision = scheduling.decide(runs, Limits(max_parallel=1, type_caps={"shell": 0}), NOW)
        assert not decision.finished and decision.outcome is None


@pytest.mark.parametrize(
    ("statuses", "outcome"),
    [
        ([SUCCEEDED, SUCCEEDED], BatchStatus.SUCCEEDED),
        ([SUCCEEDED, FAILED], BatchStatus.PARTIAL),
        ([SUCCEEDED, RunStatus.SKIPPED], BatchStatus.PARTIAL),
        ([FAILED, RunStatus.SKIPPED], BatchStatus.FAILED),
        ([RunStatus.TIMED_OUT, RunStatus.LOST], BatchStatus.FAILED),
    ],
)
def test_a_finished_batch_succeeded_partly_succeeded_or_failed(statuses, outcome):
    runs = [run(f"r{i}", status) for i, status in enumerate(statuses)]
    decision = scheduling.decide(runs, Limits(max_parallel=2), NOW)
    assert (decision.finished, decision.outcome) == (True, outcome)


def test_a_batch_finishes_when_skipping_leaves_nothing_to_run():
    runs = [run("a", SUCCEEDED), run("b", FAILED), run("c", PENDING, "b")]
    decision = scheduling.decide(runs, Limits(max_parallel=2), NOW)
    assert decision.skip == ["c"]
    assert (decision.finished, decision.outcome) == (True, BatchStatus.PARTIAL)
