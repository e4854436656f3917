"""OpenTelemetry spans of ranking calls, when the application uses OpenTelemetry.

Each ``rank`` call of either client is one span, with one child per batch::

    nimrank.rank     model, protocol, url.full (masked), passages in and sent, batches
    └── nimrank.batch   (one per batch request)  passages in the batch, retries,
                        attempts, http.response.status_code, error.type on failure

A failed span has status ERROR, ``error.type`` (the error's class name, e.g.
``ServerError``) and the exception recorded (a cancelled one has
``nimrank.cancelled`` instead); each retry is an event
``nimrank.retry`` on its batch. URLs are masked as in error messages
(``?api-key=***``), and no request body or header is ever recorded.

nimrank never imports OpenTelemetry itself: spans are made only once the
application has imported ``opentelemetry.trace`` (configuring a tracer provider
does), so a program that does not trace pays neither the import nor more than a
dictionary look-up per call. The client's side of this module is two context
managers, :func:`call_span` and :meth:`CallTrace.batch`, and two notes the
shared code makes while a batch runs, :func:`record_status` and
:func:`record_retry`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._version import __version__
from .endpoints import display_url

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span
    from opentelemetry.util.types import AttributeValue

    Attributes = dict[str, AttributeValue]

__all__ = ["CallTrace", "call_span", "record_retry", "record_status", "tracing_enabled"]

#: The instrumentation scope of nimrank's spans.
TRACER_NAME = "nimrank"


def tracing_enabled() -> bool:
    """Whether calls make spans: the application has imported ``opentelemetry.trace``."""
    return sys.modules.get("opentelemetry.trace") is not None


class CallTrace:
    """The span of one ranking call; :meth:`batch` makes each of its batches' spans.

    This base is what a call gets when OpenTelemetry is not in use: no spans.
    """

    def batch(self, index: int, passages: int) -> AbstractContextManager[None]:
        """A span for batch ``index`` (of ``passages`` texts) while the block runs.

        Enter it where the batch runs: on the sync client's worker thread it
        makes the call's span the parent there too.
        """
        return _NO_SPAN


_NO_SPAN: AbstractContextManager[None] = nullcontext()
_UNTRACED: AbstractContextManager[CallTrace] = nullcontext(CallTrace())


def call_span(
    client: str,
    *,
    model: str,
    protocol: str,
    url: str,
    passages: int,
    sent: int,
    batches: int,
) -> AbstractContextManager[CallTrace]:
    """The span ``nimrank.rank`` of one call, current while the block runs.

    Args:
        client: the client's class name.
        model: the model ranked with.
        protocol: ``"nim"`` or ``"cohere"``.
        url: the ranking URL; masked here (only its shown form is recorded).
        passages: passages in the input.
        sent: distinct texts the call sends (after dedupe and chunking).
        batches: requests the call sends.
    """
    if not tracing_enabled():
        return _UNTRACED
    shown = display_url(url)
    where: Attributes = {"url.full": shown}
    try:
        parts = urlsplit(shown)
        if parts.hostname:
            where["server.address"] = parts.hostname
        if parts.port is not None:
            where["server.port"] = parts.port
    except ValueError:  # a URL that does not parse is still shown, masked
        pass
    attributes: Attributes = {
        "nimrank.client": client,
        "nimrank.model": model,
        "nimrank.protocol": protocol,
        **where,
        "nimrank.passages": passages,
        "nimrank.passages_sent": sent,
        "nimrank.batches": batches,
    }
    return _call_span(attributes, {"http.request.method": "POST", **where})


class _TracedCall(CallTrace):
    def __init__(self, parent: Context, request: Attributes) -> None:
        self._parent = parent
        self._request = request

    def batch(self, index: int, passages: int) -> AbstractContextManager[None]:
        attributes: Attributes = {
            **self._request,
            "nimrank.batch.index": index,
            "nimrank.batch.passages": passages,
        }
        return _batch_span(self._parent, attributes)


class _Batch:
    """What the shared code notes about the batch running in this context."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.retries = 0
        self.status: int | None = None


_RUNNING_BATCH: ContextVar[_Batch | None] = ContextVar("nimrank_batch", default=None)


def record_status(status: int) -> None:
    """Note the HTTP status of the running batch's final response."""
    batch = _RUNNING_BATCH.get()
    if batch is not None:
        batch.status = status


def record_replica(url: str) -> None:
    """Note which replica of a fleet (its masked URL) the running batch was last sent to."""
    batch = _RUNNING_BATCH.get()
    if batch is not None:
        batch.span.set_attribute("url.full", url)


def record_retry(retry: int, error: Exception, wait: float) -> None:
    """Note that the running batch retries (``retry`` of the policy's) after ``error``."""
    batch = _RUNNING_BATCH.get()
    if batch is None:
        return
    batch.retries = retry
    event: Attributes = {"nimrank.retry": retry, "error.type": type(error).__name__}
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        event["http.response.status_code"] = status
    event["nimrank.retry.wait_seconds"] = wait
    batch.span.add_event("nimrank.retry", event)


@contextmanager
def _call_span(attributes: Attributes, request: Attributes) -> Iterator[CallTrace]:
    from opentelemetry import context

    with _span("nimrank.rank", attributes) as span:
        try:
            yield _TracedCall(context.get_current(), request)
        except BaseException as exc:
            _failed(span, exc)
            raise


@contextmanager
def _batch_span(parent: Context, attributes: Attributes) -> Iterator[None]:
    from opentelemetry import context

    # A worker thread starts with an empty context: the call's is made current
    # there (in the call's own thread or task this changes nothing).
    token = context.attach(parent)
    try:
        with _span("nimrank.batch", attributes) as span:
            batch = _Batch(span)
            running = _RUNNING_BATCH.set(batch)
            try:
                yield
            except BaseException as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(status, int):
                    batch.status = status
                _failed(span, exc)
                raise
            finally:
                _RUNNING_BATCH.reset(running)
                span.set_attribute("nimrank.retries", batch.retries)
                span.set_attribute("nimrank.attempts", batch.retries + 1)
                if batch.status is not None:
                    span.set_attribute("http.response.status_code", batch.status)
    finally:
        context.detach(token)


def _span(name: str, attributes: Attributes) -> AbstractContextManager[Span]:
    from opentelemetry import trace

    tracer = trace.get_tracer(TRACER_NAME, __version__)
    # Failures are recorded by _failed, which also sets error.type.
    return tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    )


def _failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (nimrank's messages carry no secret).

    A cancelled task (an async batch stopped because another failed) is not
    itself an error: it is marked ``nimrank.cancelled``.
    """
    import asyncio  # here: a sync program need not load it to be traced

    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, asyncio.CancelledError):
        span.set_attribute("nimrank.cancelled", True)
        return
    span.set_attribute("error.type", type(exc).__name__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
