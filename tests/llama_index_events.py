"""Watching LlamaIndex's instrumentation from a test: the ``Recorder`` event handler.

The ``recorder`` and ``spans`` fixtures in ``tests/conftest.py`` attach a
``Recorder`` or a ``SimpleSpanHandler`` to LlamaIndex's root dispatcher for the
length of one test. This module imports llama_index, so only the LlamaIndex
tests (and those fixtures, when used) import it.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent


class Recorder(BaseEventHandler):
    """Keeps every instrumentation event it sees."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this handler under."""
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Keep ``event``."""
        self.events.append(event)

    def rerank_events(self) -> list[BaseEvent]:
        """The ``ReRankStartEvent`` and ``ReRankEndEvent`` seen, in order."""
        return [e for e in self.events if isinstance(e, (ReRankStartEvent, ReRankEndEvent))]
