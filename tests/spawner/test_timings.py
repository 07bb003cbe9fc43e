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
