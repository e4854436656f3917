"""Which failures are retried, and how long to wait first. Pure: the clients sleep.

Retried: 429, 500, 502, 503, 504, connection errors and timeouts. Not retried:
any other status (a 400 will not get better by asking again) and a malformed
body. The wait is the server's ``Retry-After`` (``retry-after-ms``, seconds or
an HTTP date) capped at ``max_retry_after``, else exponential backoff from
``initial_delay`` doubling up to ``max_delay``, with jitter so that batches
that failed together do not all come back at the same instant.

A failure also says something about the replica that answered, for a client
with a fleet of them: :class:`Outcome` (a 429 throttles the replica, a 502,
503, 504 or a connection error ejects it).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from .validation import check_number

__all__ = [
    "RETRYABLE_STATUSES",
    "Outcome",
    "RetryPolicy",
    "outcome_for_status",
    "parse_retry_after",
]

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that eject the replica that answered (a fleet's ``Outcome.FAILED``).
_EJECTING_STATUSES = frozenset({502, 503, 504})


class Outcome(enum.Enum):
    """What a leased request says about its replica (see ``nimrank.fleet``)."""

    OK = "ok"
    """The replica answered (any status but 429, 502, 503, 504): it is alive."""
    FAILED = "failed"
    """Connection error, timeout, 502, 503 or 504: eject the replica."""
    THROTTLED = "throttled"
    """429: keep this replica out of the choice for ``retry_after`` seconds."""
    ABANDONED = "abandoned"
    """No answer to judge by (the caller was cancelled): only frees the slot."""


def outcome_for_status(status: int) -> Outcome:
    """The :class:`Outcome` of a request that got an HTTP answer with ``status``."""
    if status == 429:
        return Outcome.THROTTLED
    return Outcome.FAILED if status in _EJECTING_STATUSES else Outcome.OK


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries a failed request.

    Attributes:
        max_retries: retries after the first attempt (0: never retry).
        initial_delay: backoff before the first retry, in seconds.
        max_delay: the longest backoff, in seconds.
        max_retry_after: the longest wait a ``Retry-After`` header may ask for;
            a longer request is shortened to this.
        jitter: the backoff is multiplied by a random factor in ``[1 - jitter, 1]``.

    ``RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)`` never
    waits, which keeps retry tests instant.
    """

    max_retries: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError(f"max_retries must be an int, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("initial_delay", "max_delay", "max_retry_after"):
            # check_number refuses NaN, which would otherwise reach time.sleep().
            if check_number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= check_number("jitter", self.jitter) <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def with_retries(self, max_retries: int) -> RetryPolicy:
        """The same policy with another ``max_retries``."""
        return replace(self, max_retries=max_retries)

    def asked_wait(self, retry_after: str | None, *, now: datetime | None = None) -> float | None:
        """The seconds a ``Retry-After`` value asks for, capped at ``max_retry_after``;
        ``None`` when there is none or it cannot be read."""
        asked = parse_retry_after(retry_after, now=now) if retry_after else None
        return None if asked is None else min(asked, self.max_retry_after)

    def delay(
        self,
        attempt: int,
        retry_after: str | None = None,
        *,
        now: datetime | None = None,
        rand: float | None = None,
    ) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry).

        Args:
            attempt: which retry this is, from 1.
            retry_after: the value of the response's ``Retry-After`` header
                (or ``retry-after-ms`` prefixed with ``"ms:"``), if any.
            now: the current time, for HTTP-date values (default: the clock).
            rand: a number in [0, 1) for the jitter (default: random).
        """
        asked = self.asked_wait(retry_after, now=now)
        if asked is not None:
            return asked
        # The exponent is bounded: 2.0 ** 1024 overflows, and a client may allow
        # that many retries. Any initial_delay over a nanosecond times 2 ** 64 is
        # centuries, past any max_delay.
        backoff = min(self.initial_delay * 2.0 ** min(attempt - 1, 64), self.max_delay)
        factor = 1 - self.jitter * (random.random() if rand is None else rand)
        return backoff * factor


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks for, or ``None`` if it cannot be read.

    Accepts a number of seconds (``"2"``, ``"1.5"``), an HTTP date, or
    ``"ms:<milliseconds>"`` for the ``retry-after-ms`` header some servers send.
    """
    value = value.strip()
    try:
        seconds = float(value[3:]) / 1000 if value.startswith("ms:") else float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            # OverflowError: a year such as 99999999999999999999.
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or inf: not a wait
        return None
    return max(seconds, 0.0)
