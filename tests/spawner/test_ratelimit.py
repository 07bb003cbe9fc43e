"""Rate limits, pure: the requests-per-minute cap is never exceeded (properties), and the small rules."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from spawner.core import ratelimit, rules, scheduling
from spawner.states import RUN_ACTIVE, AttemptStatus, RunStatus

EXAMPLES = settings(max_examples=150, deadline=None)
TYPES = ("api", "cli")


def windows_ok(starts: list[float], rpm: int, window: float = 60.0) -> bool:
    """Every window (t - window, t] holds at most `rpm` starts (checking t at each start suffices)."""
    return all(sum(1 for s in starts if t - window < s <= t) <= rpm for t in starts)


@EXAMPLES
@given(
    rpm=st.integers(1, 6),
    offsets=st.lists(st.floats(-59.9, 120, allow_nan=False), max_size=20),
    now=st.floats(0, 100, allow_nan=False),
)
def test_next_request_at_keeps_every_minute_within_the_cap(rpm, offsets, now):
    history: list[float] = []
    for offset in offsets:  # a history that itself respects the cap (made by the same rule)
        history.append(ratelimit.next_request_at(history, rpm, now + offset))
    assert windows_ok(history, rpm)
    t = ratelimit.next_request_at(history, rpm, now)
    assert t >= now
    assert windows_ok([*history, t], rpm)
    if t > now:  # nothing earlier would do: `now` itself, and just before t
        assert not windows_ok([*history, now], rpm)
        assert not windows_ok([*history, t - 1e-6], rpm) or t - 1e-6 < now


@EXAMPLES
@given(st.data())
def test_the_scheduler_never_starts_more_than_rpm_runs_of_a_type_in_any_minute(data):
    """Random batches driven to the end with random clocks and outcomes: the starts it decides, with
    those already made, never put more than `rpm` starts of a type into any 60 s window."""
    n = data.draw(st.integers(1, 25))
    kind = {f"t{i}": data.draw(st.sampled_from(TYPES)) for i in range(n)}
    rpm = data.draw(st.dictionaries(st.sampled_from(TYPES), st.integers(1, 5), min_size=1))
    stagger = data.draw(st.dictionaries(st.sampled_from(TYPES), st.sampled_from([0.0, 2.0, 15.0])))
    # Starts made before this batch (another batch of the same type), within the last minute.
    made = {t: sorted(data.draw(st.lists(st.floats(-59, 0), max_size=cap))) for t, cap in rpm.items()}
    runs = [
        scheduling.RunView(key=k, status=RunStatus.PENDING, agent_type=kind[k], order=i) for i, k in enumerate(kind)
    ]
    status = {r.key: r.status for r in runs}
    starts = {t: list(times) for t, times in made.items()}
    next_start: dict[str, float] = {}
    now = 0.0
    for _ in range(6 * n + 10):
        limits = scheduling.Limits(
            max_parallel=data.draw(st.integers(1, 8)),
            type_stagger=stagger,
            type_next_start=next_start,
            type_rpm=rpm,
            type_starts={t: [s for s in times if s > now - 60] for t, times in starts.items()},
        )
        views = [scheduling.RunView(**{**r.__dict__, "status": status[r.key]}) for r in runs]
        decision = scheduling.decide(views, limits, now)
        next_start = decision.type_next_start
        for key, not_before in decision.start:
            assert not_before >= now
            status[key] = RunStatus.QUEUED
            if kind[key] in rpm:
                starts[kind[key]].append(not_before)
        if decision.finished:
            break
        active = [k for k, s in status.items() if s in RUN_ACTIVE]
        for key in data.draw(st.lists(st.sampled_from(active), unique=True)) if active else []:
            status[key] = data.draw(st.sampled_from([RunStatus.SUCCEEDED, RunStatus.FAILED]))
        now += data.draw(st.sampled_from([0.0, 0.5, 3.0, 20.0, 61.0]))
    for agent_type, cap in rpm.items():
        assert windows_ok(starts[agent_type], cap), (agent_type, cap, sorted(starts[agent_type]))
    counts = Counter(kind.values())
    assert all(counts[t] >= 0 for t in TYPES)


def test_a_rpm_cap_spreads_a_burst_over_minutes():
    runs = [scheduling.RunView(key=f"t{i}", status=RunStatus.PENDING, agent_type="api", order=i) for i in range(5)]
    decision = scheduling.decide(runs, scheduling.Limits(max_parallel=5, type_rpm={"api": 2}), 100.0)
    assert [t for _, t in decision.start] == [100.0, 100.0, 160.0, 160.0, 220.0]


def test_a_tpm_cap_holds_starts_until_the_tokens_leave_the_minute():
    runs = [scheduling.RunView(key="a", status=RunStatus.PENDING, agent_type="api")]
    limits = scheduling.Limits(max_parallel=1, type_tpm={"api": 1000}, type_tokens={"api": [(90.0, 600), (95.0, 500)]})
    assert scheduling.decide(runs, limits, 100.0).start == [("a", 150.0)]
    assert ratelimit.tokens_wait_until([(90.0, 600)], 1000, 100.0) == 100.0


def test_retry_after_reads_seconds_and_dates_and_falls_back():
    assert ratelimit.retry_after_seconds("2", 0) == 2
    assert ratelimit.retry_after_seconds("1.5", 0) == 1.5
    assert ratelimit.retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10
    assert ratelimit.retry_after_seconds(None, 0) == ratelimit.DEFAULT_WAIT
    assert ratelimit.retry_after_seconds("soon", 0) == ratelimit.DEFAULT_WAIT
    assert ratelimit.retry_after_seconds("-5", 0) == 0
    assert ratelimit.retry_after_seconds("99999999", 0) == ratelimit.MAX_ADVISED


def test_a_cli_rate_limit_is_its_exit_code_or_its_pattern_in_a_failed_run():
    rl = ratelimit.cli_rate_limited
    assert rl(exit_code=75, output_tail="", pattern="", exit_codes=[75])
    assert rl(exit_code=1, output_tail="Error: 429 Too Many Requests", pattern=r"429|rate.?limit", exit_codes=[])
    assert not rl(exit_code=0, output_tail="rate limit", pattern="rate limit", exit_codes=[]), "it succeeded"
    assert not rl(exit_code=1, output_tail="syntax error", pattern="rate limit", exit_codes=[75])
    assert not rl(exit_code=1, output_tail="x", pattern="(", exit_codes=[])
    assert ratelimit.advised_in_text("Rate limited. Please try again in 20s.") == 20
    assert ratelimit.advised_in_text("retry after 1.5 minutes") == 90
    assert ratelimit.advised_in_text("retry-after: 500ms") == 0.5
    assert ratelimit.advised_in_text("quota exceeded") is None


def test_rate_limit_waits_are_bounded_by_count_and_total():
    wait = ratelimit.rate_limit_wait
    assert wait(advised=2, waits_so_far=0, waited_so_far=0, max_waits=3, max_total=60) == 2
    assert wait(advised=None, waits_so_far=0, waited_so_far=0, max_waits=3, max_total=60) == ratelimit.DEFAULT_WAIT
    assert wait(advised=2, waits_so_far=3, waited_so_far=6, max_waits=3, max_total=60) is None
    assert wait(advised=30, waits_so_far=1, waited_so_far=40, max_waits=3, max_total=60) is None
    # Each wait is cut to the cap, the default one too (a CLI that advises nothing).
    assert wait(advised=None, waits_so_far=0, waited_so_far=0, max_waits=3, max_total=60, max_one=5) == 5
    assert wait(advised=90, waits_so_far=0, waited_so_far=0, max_waits=3, max_total=600, max_one=5) == 5


def test_a_rate_limited_attempt_follows_after_its_wait_and_spends_no_retry():
    common = {"batch_running": True, "cancel_requested": False, "backoff_base": 1, "backoff_cap": 60}
    limited = AttemptStatus.RATE_LIMITED
    assert rules.retry_delay(attempt_status=limited, attempt_number=5, retries=0, rate_limit_wait=2, **common) == 2
    assert (
        rules.retry_delay(attempt_status=limited, attempt_number=1, retries=3, rate_limit_wait=None, **common) is None
    )
    assert rules.run_status_after(limited) == RunStatus.FAILED
    # Two rate-limited attempts, then a failure: with retries: 1, the failure still has its retry.
    failed = AttemptStatus.FAILED
    assert rules.retry_delay(attempt_status=failed, attempt_number=3, retries=1, handed_back=2, **common) == 1
    assert rules.retry_delay(attempt_status=failed, attempt_number=4, retries=1, handed_back=2, **common) is None


def test_a_start_scheduled_a_window_ahead_is_counted_with_float_rounding():
    """Found by the property above: 64.26513026362227 - 60 < 4.265130263622275, yet 4.265130263622275
    + 60 is not above 64.26513026362227 in floats; both sides of the check use the same arithmetic."""
    now = 4.265130263622275
    later = ratelimit.next_request_at([], 1, now + 60.0)
    assert ratelimit.next_request_at([later], 1, now) > now
    assert windows_ok([later, ratelimit.next_request_at([later], 1, now)], 1)
