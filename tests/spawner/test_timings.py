"""Timings: honest figures from measured durations."""

from __future__ import annotations

import pytest

from spawner.core.timings import busy_seconds, figures


def test_busy_time_is_the_union_of_intervals_and_skips_idle_gaps():
    assert busy_seconds([(0, 2), (1, 3), (10, 11)]) == 4
    assert busy_seconds([(0, 5), (1, 2)]) == 5
    assert busy_seconds([]) == 0


def test_speedup_is_work_over_wall_and_efficiency_is_against_what_was_available():
    f = figures(wall=2.0, durations={"a": 2, "b": 2, "c": 2, "d": 2}, deps={k: () for k in "abcd"}, capacity=4)
    assert f["speedup"] == 4.0
    assert f["efficiency"] == 1.0


def test_a_chain_cannot_be_sped_up_so_its_efficiency_is_judged_against_one():
    f = figures(wall=4.0, durations={"a": 2, "b": 2}, deps={"a": (), "b": ("a",)}, capacity=8)
    assert f["critical_path_seconds"] == 4
    assert f["speedup"] == 1.0 and f["efficiency"] == 1.0


def test_slots_bound_the_available_parallelism():
    f = figures(wall=4.0, durations={k: 2 for k in "abcd"}, deps={k: () for k in "abcd"}, capacity=2)
    assert f["speedup"] == 2.0
    assert f["efficiency"] == pytest.approx(1.0)


def test_no_work_gives_no_ratio_instead_of_dividing_by_zero():
    f = figures(wall=0.0, durations={"a": 0}, deps={"a": ()}, capacity=3)
    assert f["speedup"] is None and f["efficiency"] is None


# --- one set of definitions: wall (busy), since launch, idle, work, own pass, measured speedup ---

from spawner.core.timings import Attempt, measure, run_elapsed, speedup  # noqa: E402

DEPS = {"a": (), "b": ()}


def test_a_retry_after_an_idle_gap_counts_in_wall_and_work_but_the_gap_is_idle():
    # a: 0-4 s; b fails 0-2 s; the batch ends at 4 s; a person retries b at 30 s, it runs 30-34 s.
    attempts = [
        Attempt("a", queued=0, started=0, finished=4),
        Attempt("b", queued=0, started=0, finished=2),
        Attempt("b", queued=30, started=30, finished=34, by_person=True),
    ]
    m = measure(launched=0, end=34, attempts=attempts, deps=DEPS, capacity=2, closed=[(4, 30)])
    assert m.since_launch == 34
    assert m.wall == 8  # 0-4 and 30-34
    assert m.idle == 26
    assert m.wall + m.idle == m.since_launch
    assert m.work == 10  # every attempt: 4 + 2 + 4
    assert m.left_out == 0


def test_the_own_pass_leaves_out_a_persons_retry_and_its_idle_gap():
    attempts = [
        Attempt("a", queued=0, started=0, finished=4),
        Attempt("b", queued=0, started=0, finished=2),
        Attempt("b", queued=30, started=30, finished=34, by_person=True),
    ]
    m = measure(launched=0, end=34, attempts=attempts, deps=DEPS, capacity=2, own_pass=True, closed=[(4, 30)])
    assert m.wall == 4 and m.since_launch == 4 and m.idle == 0
    assert m.work == 6
    assert (m.left_out, m.left_out_work) == (1, 4)


def test_an_automatic_retry_is_part_of_the_batchs_own_pass():
    attempts = [
        Attempt("a", queued=0, started=0, finished=1),
        Attempt("a", queued=1, started=3, finished=5),  # after a 2 s backoff: still busy
    ]
    m = measure(launched=0, end=5, attempts=attempts, deps={"a": ()}, capacity=1, own_pass=True)
    assert m.wall == 5 and m.idle == 0 and m.work == 3 and m.left_out == 0


def test_the_wall_starts_at_launch_and_a_running_batch_counts_up_to_now():
    attempts = [Attempt("a", queued=1, started=2, finished=None)]
    m = measure(launched=0, end=10, attempts=attempts, deps={"a": ()}, capacity=1)
    assert m.wall == 10 and m.since_launch == 10 and m.work == 8


def test_an_attempt_that_never_started_adds_no_work():
    attempts = [Attempt("a", queued=0, started=None, finished=3)]
    m = measure(launched=0, end=3, attempts=attempts, deps={"a": ()}, capacity=1)
    assert m.work == 0 and m.wall == 3 and m.parallelism == 0 and m.efficiency is None


def test_stored_figures_are_the_measure():
    attempts = [Attempt("a", queued=0, started=0, finished=2), Attempt("b", queued=0, started=0, finished=2)]
    stored = measure(launched=0, end=2, attempts=attempts, deps=DEPS, capacity=2).stored()
    assert stored == {
        "wall_seconds": 2.0,
        "sum_seconds": 4.0,
        "critical_path_seconds": 2.0,
        "speedup": 2.0,
        "efficiency": 1.0,
    }


def test_measured_speedup_is_sequential_wall_over_parallel_wall():
    assert speedup(sequential_wall=12.0, parallel_wall=4.0) == 3.0
    assert speedup(sequential_wall=4.0, parallel_wall=5.0) == 0.8
    assert speedup(sequential_wall=None, parallel_wall=4.0) is None
    assert speedup(sequential_wall=3.0, parallel_wall=0.0) is None


def test_a_running_run_counts_its_ended_attempts_and_the_current_one_so_far():
    assert run_elapsed(recorded=2.0, started=100.0, now=103.5, running=True) == 5.5
    assert run_elapsed(recorded=None, started=100.0, now=101.0, running=True) == 1.0
    assert run_elapsed(recorded=2.0, started=100.0, now=200.0, running=False) == 2.0
    assert run_elapsed(recorded=None, started=None, now=1.0, running=False) is None


def test_the_engines_own_pauses_are_busy_only_an_ended_batch_is_idle():
    # Sequential: a ends at 2, the engine queues b at 2.1; the batch closes at 4.2.
    attempts = [Attempt("a", queued=0, started=0.1, finished=2), Attempt("b", queued=2.1, started=2.1, finished=4)]
    m = measure(launched=0, end=4.2, attempts=attempts, deps=DEPS, capacity=1)
    assert m.wall == 4.2 and m.since_launch == 4.2 and m.idle == 0


def test_a_person_retrying_while_the_batch_still_runs_is_left_out_of_its_own_pass():
    attempts = [
        Attempt("a", queued=0, started=0, finished=6),
        Attempt("b", queued=0, started=0, finished=1),
        Attempt("b", queued=2, started=2, finished=9, by_person=True),  # the batch had not ended yet
    ]
    own = measure(launched=0, end=9, attempts=attempts, deps=DEPS, capacity=2, own_pass=True)
    assert own.wall == 6 and own.left_out == 1 and own.left_out_work == 7
    everything = measure(launched=0, end=9, attempts=attempts, deps=DEPS, capacity=2)
    assert everything.wall == 9 and everything.idle == 0 and everything.work == 14


def test_idle_only_counts_inside_the_batchs_life():
    m = measure(launched=10, end=20, attempts=[], deps={}, capacity=1, closed=[(5, 12), (18, 30)])
    assert m.idle == 4 and m.wall == 6
