"""``RankingClients``: the sync/async client pair every adapter holds.

One lifecycle for all adapters: both clients are made lazily from one
``RankingOptions`` value, made again when the options change (the old ones
closed), and closed by one ``close()`` / ``aclose()``.
"""

from __future__ import annotations

import threading
from typing import Any

from .async_client import AsyncRankingClient
from .client import RankingClient
from .options import DEFAULT_OPTIONS, RankingOptions

__all__ = ["RankingClients"]


class RankingClients:
    """A ``RankingClient`` and an ``AsyncRankingClient`` built from the same options.

    Example::

        clients = RankingClients(RankingOptions(base_url="http://localhost:8000/v1"))
        clients.sync.rank(query, passages)          # from sync code
        await clients.async_.rank(query, passages)  # from asyncio code
        clients.options = clients.options.replace(max_batch_size=64)  # rebuilt on next use
        clients.close()

    Thread-safe: pipelines run sync components on worker threads.
    """

    def __init__(self, options: RankingOptions = DEFAULT_OPTIONS) -> None:
        if not isinstance(options, RankingOptions):
            raise TypeError(f"options must be a nimrank.RankingOptions, got {options!r}")
        self._options = options
        self._sync: RankingClient | None = None
        self._async: AsyncRankingClient | None = None
        self._lock = threading.Lock()

    @property
    def options(self) -> RankingOptions:
        """The options both clients are made from."""
        return self._options

    @options.setter
    def options(self, options: RankingOptions) -> None:
        if not isinstance(options, RankingOptions):
            raise TypeError(f"options must be a nimrank.RankingOptions, got {options!r}")
        with self._lock:
            if options == self._options:
                return
            self._options = options
            old_sync, self._sync = self._sync, None
            old_async, self._async = self._async, None
        if old_sync is not None:
            old_sync.close()
        if old_async is not None:
            old_async.discard()

    def update(self, **changes: Any) -> None:
        """Apply ``changes`` to the options (checked first: a bad value changes nothing)."""
        self.options = self._options.replace(**changes)

    @property
    def sync(self) -> RankingClient:
        """The synchronous client, made on first use (this also checks the key and URL)."""
        with self._lock:
            if self._sync is None:
                self._sync = RankingClient(self._options)
            return self._sync

    @property
    def async_(self) -> AsyncRankingClient:
        """The asyncio client, made on first use; it serves every event loop."""
        with self._lock:
            if self._async is None:
                self._async = AsyncRankingClient(self._options)
            return self._async

    def check(self) -> None:
        """Make both clients now, so that a missing key or bad URL fails here."""
        self.sync  # noqa: B018
        self.async_  # noqa: B018

    def close(self) -> None:
        """Close the sync client and the async client's pools (later use reopens them)."""
        with self._lock:
            sync, async_ = self._sync, self._async
        if sync is not None:
            sync.close()
        if async_ is not None:
            async_.discard()

    async def aclose(self) -> None:
        """Close both; the async client's pool of the running loop is awaited closed."""
        with self._lock:
            async_ = self._async
        if async_ is not None:
            await async_.aclose()
        self.close()

    def __repr__(self) -> str:
        return f"RankingClients({self._options!r})"
