"""Rate limits, pure: when the next request may start, whether an agent hit a limit, how long to wait.

A rate limit is not a failure: the run waits the advised delay and tries again without spending
a retry. The waits are bounded (a count and a total), so a limit that never lifts ends the run.

Pure functions: the clock, the history and the settings are arguments, never read here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from email.utils import parsedate_to_datetime

WINDOW = 60.0  # requests and tokens per minute
DEFAULT_WAIT = 30.0  # when nothing advises a delay
MAX_ADVISED = 3600.0  # a Retry-After beyond this is taken as this


def next_request_at(starts: Iterable[float], rpm: int | None, now: float, window: float = WINDOW) -> float:
    """The earliest time >= now at which one more request keeps every `window` at most `rpm` starts.

    `starts` are the times of the requests already made or scheduled (future ones included)."""
    if not rpm:
        return now
    recent = sorted(s for s in starts if s > now - window)

    def fits(t: float) -> bool:
        # Every window (u - window, u] that holds t must have room: check u = t and each later start.
        # (`s - window < t`, not `s < t + window`: the same float arithmetic as the count below.)
        ends = [t] + [s for s in recent if t < s and s - window < t]
        return all(sum(1 for s in recent if u - window < s <= u) < rpm for u in ends)

    # Room appears only at `now` or as a start leaves the window (at s + window).
    for t in sorted({now} | {_after(s, window) for s in recent if s + window > now}):
        if fits(t):
            return t
    return _after(max(recent), window)  # unreachable: after the last start leaves, there is room


def _after(s: float, window: float) -> float:
    """The first time at which `s` is out of the window (s + window, nudged past float rounding)."""
    t = s + window
    while t - window < s:
        t = math.nextafter(t, math.inf)
    return t


def tokens_wait_until(used: Iterable[tuple[float, int]], tpm: int | None, now: float, window: float = WINDOW) -> float:
    """The earliest time >= now when the tokens used in the last `window` fall below `tpm`.

    `used` is (when, tokens) of calls already answered: tokens are known only once a call ends, so
    this holds the next start back after a burst rather than predicting one."""
    if not tpm:
        return now
    recent = sorted((t, n) for t, n in used if t > now - window)
    total = sum(n for _, n in recent)
    if total < tpm:
        return now
    for t, n in recent:
        total -= n
        if total < tpm:
            return t + window
    return now


def retry_after_seconds(value: str | None, now: float, default: float = DEFAULT_WAIT) -> float:
    """Seconds a `Retry-After` header (delta seconds or an HTTP date) advises; `default` if absent or unreadable."""
    if value is None or not str(value).strip():
        return default
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
    if seconds != seconds:  # NaN
        return default
    return min(max(0.0, seconds), MAX_ADVISED)


_ADVISED = re.compile(
    r"(?:retry|try again)[^0-9\n]{0,40}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|secs|seconds?|m|min|mins|minutes?)\b",
    re.IGNORECASE,
)


def advised_in_text(text: str) -> float | None:
    """A delay a CLI printed ("retry after 20s", "try again in 1 minute"), in seconds, or None."""
    found = None
    for match in _ADVISED.finditer(text):
        found = match
    if not found:
        return None
    number, unit = float(found.group(1)), found.group(2).lower()
    if unit.startswith("ms") or unit.startswith("milli"):
        number /= 1000
    elif unit.startswith("m"):
        number *= 60
    return min(number, MAX_ADVISED)


def cli_rate_limited(*, exit_code: int | None, output_tail: str, pattern: str, exit_codes: Sequence[int]) -> bool:
    """Whether a CLI agent's end was a rate limit, as its agent type says one looks.

    An exit code listed in `exit_codes` is one; so is `pattern` (a regular expression, case-insensitive)
    found in the end of its output, when it did not exit 0."""
    if exit_code is not None and exit_code in exit_codes:
        return True
    if not pattern or exit_code == 0:
        return False
    try:
        return re.search(pattern, output_tail, re.IGNORECASE | re.MULTILINE) is not None
    except re.error:
        return False


def rate_limit_wait(
    *,
    advised: float | None,
    waits_so_far: int,
    waited_so_far: float,
    max_waits: int,
    max_total: float,
    max_one: float = MAX_ADVISED,
) -> float | None:
    """Seconds to wait before the next attempt of a rate-limited run, or None once the waits are spent.

    The advised delay (DEFAULT_WAIT when none), at most `max_one`. At most `max_waits` waits and
    `max_total` seconds in all per run: a limit that never lifts ends the run."""
    delay = min(DEFAULT_WAIT if advised is None else max(0.0, advised), max_one)
    if waits_so_far >= max_waits or waited_so_far + delay > max_total:
        return None
    return delay
