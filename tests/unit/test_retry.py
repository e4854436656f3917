"""Retry policy: which statuses retry, how long to wait, and what is refused."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimrank import RetryPolicy
from nimrank.retry import RETRYABLE_STATUSES, parse_retry_after

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
ALMOST_ONE = 1 - 1e-12


def test_only_rate_limits_and_transient_server_errors_retry() -> None:
    assert frozenset({429, 500, 502, 503, 504}) == RETRYABLE_STATUSES
    for status in (400, 401, 403, 404, 408, 413, 422, 501):
        assert status not in RETRYABLE_STATUSES


def test_default_policy_is_openai_like() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.max_delay) == (3, 0.5, 8.0)
    assert (policy.max_retry_after, policy.jitter) == (60.0, 0.25)


# -- backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (40, 8.0)]
)
def test_backoff_doubles_up_to_the_cap(attempt: int, delay: float) -> None:
    assert RetryPolicy().delay(attempt, rand=0.0) == delay


@pytest.mark.parametrize(("attempt", "backoff"), [(1, 0.5), (3, 2.0), (9, 8.0)])
def test_jitter_shortens_the_backoff_by_at_most_a_quarter(attempt: int, backoff: float) -> None:
    policy = RetryPolicy()
    assert policy.delay(attempt, rand=0.0) == backoff
    assert policy.delay(attempt, rand=0.5) == pytest.approx(backoff * 0.875)
    assert policy.delay(attempt, rand=ALMOST_ONE) == pytest.approx(backoff * 0.75)


@settings(max_examples=200)
@given(
    attempt=st.integers(min_value=1, max_value=5000),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    initial=st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=30)),
    cap=st.floats(min_value=0, max_value=120),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_backoff_stays_within_the_jitter_range_for_any_attempt(
    attempt: int, rand: float, initial: float, cap: float, jitter: float
) -> None:
    # A client configured with thousands of retries must not overflow on 2 ** attempt.
    policy = RetryPolicy(initial_delay=initial, max_delay=cap, jitter=jitter)
    backoff = float(min(Fraction(initial) * 2 ** (attempt - 1), Fraction(cap)))
    delay = policy.delay(attempt, rand=rand)
    assert math.isfinite(delay)
    assert backoff * (1 - jitter) - 1e-9 <= delay <= backoff + 1e-9


def test_random_jitter_stays_in_range() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(2) for _ in range(200)]
    assert all(0.75 <= delay <= 1.0 for delay in delays)


def test_no_jitter_means_exact_backoff() -> None:
    policy = RetryPolicy(jitter=0)
    assert [policy.delay(a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]


@given(
    attempt=st.integers(min_value=1, max_value=100),
    retry_after=st.one_of(st.none(), st.sampled_from(["0", "5", "120", "ms:900", "soon"])),
)
def test_instant_policy_never_waits(attempt: int, retry_after: str | None) -> None:
    # The switch the test suites use to make retries instant.
    policy = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)
    assert policy.delay(attempt, retry_after, now=NOW) == 0.0


# -- Retry-After ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        (" 3 ", 3.0),
        ("-5", 0.0),
        ("-inf", 0.0),  # negative: retry now, like "-5"
        ("ms:1500", 1.5),
        ("ms:0", 0.0),
        ("ms:250.5", 0.2505),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wed, 01 Jan 2025 12:00:30 +0000", 30.0),
        ("Wed, 01 Jan 2025 13:00:30 +0100", 30.0),
        ("Wed, 01 Jan 2025 12:00:30", 30.0),  # no zone: taken as UTC
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),  # in the past: retry now
        ("Tue, 31 Dec 2024 12:00:00 GMT", 0.0),
    ],
)
def test_retry_after_values_are_read(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "soon", "ms:", "ms:abc", "nan", "inf", "1e400", "Someday, 99 Foo 2025"]
)
def test_unreadable_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_http_date_is_measured_from_now() -> None:
    later = format_datetime(NOW + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(later, now=NOW) == 42.0
    assert parse_retry_after(later, now=NOW + timedelta(seconds=40)) == 2.0


@pytest.mark.parametrize(("value", "delay"), [("7", 7.0), ("ms:1500", 1.5), ("0", 0.0)])
def test_server_asked_wait_replaces_the_backoff(value: str, delay: float) -> None:
    # Even on a late attempt whose backoff would be 8 s.
    assert RetryPolicy().delay(6, value, now=NOW, rand=0.0) == delay


def test_http_date_wait_is_used_with_a_fixed_clock() -> None:
    assert RetryPolicy().delay(1, "Wed, 01 Jan 2025 12:00:10 GMT", now=NOW, rand=0.0) == 10.0


def test_past_http_date_means_retry_now() -> None:
    assert RetryPolicy().delay(4, "Wed, 01 Jan 2025 11:00:00 GMT", now=NOW, rand=0.0) == 0.0


@pytest.mark.parametrize("value", ["soon", "nan", "", "ms:x"])
def test_unreadable_retry_after_falls_back_to_backoff(value: str) -> None:
    assert RetryPolicy().delay(3, value, now=NOW, rand=0.0) == 2.0


@pytest.mark.parametrize(
    ("value", "delay"),
    [("120", 60.0), ("ms:3600000", 60.0), ("Wed, 01 Jan 2025 13:00:00 GMT", 60.0), ("59", 59.0)],
)
def test_server_asked_wait_is_capped_by_max_retry_after(value: str, delay: float) -> None:
    assert RetryPolicy().delay(1, value, now=NOW, rand=0.0) == delay


def test_max_retry_after_is_configurable() -> None:
    assert RetryPolicy(max_retry_after=5).delay(1, "30", rand=0.0) == 5.0


# -- the policy's own arguments -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_retries": -1}, ValueError),
        ({"max_retries": True}, TypeError),
        ({"max_retries": 1.0}, TypeError),
        ({"max_retries": "3"}, TypeError),
        ({"initial_delay": -0.1}, ValueError),
        ({"max_delay": -1}, ValueError),
        ({"max_retry_after": -1}, ValueError),
        ({"initial_delay": math.nan}, ValueError),
        ({"max_delay": math.nan}, ValueError),
        ({"max_retry_after": math.nan}, ValueError),
        ({"initial_delay": "0.5"}, TypeError),
        ({"max_delay": None}, TypeError),
        ({"jitter": -0.1}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"jitter": math.nan}, ValueError),
        ({"jitter": "0.1"}, TypeError),
    ],
)
def test_invalid_policy_is_refused_at_construction(
    options: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RetryPolicy(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize("jitter", [0, 0.0, 1, 1.0])
def test_jitter_bounds_are_inclusive(jitter: float) -> None:
    assert RetryPolicy(jitter=jitter).jitter == jitter


def test_with_retries_returns_a_copy() -> None:
    policy = RetryPolicy(initial_delay=0.1)
    changed = policy.with_retries(7)
    assert (changed.max_retries, changed.initial_delay) == (7, 0.1)
    assert policy.max_retries == 3
    with pytest.raises(ValueError, match="max_retries"):
        policy.with_retries(-1)


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_retries = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 01 Jan 10000 00:00:00 GMT",
        "1e400",
        "ms:1e400",
    ],
)
def test_an_absurd_retry_after_is_ignored_not_an_overflow(value: str) -> None:
    assert parse_retry_after(value) is None
    assert RetryPolicy(jitter=0).delay(1, value) == 0.5  # the backoff, not a crash
