"""A progress bar on stderr for commands that may take a while."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, TextIO

__all__ = ["ProgressBar", "progress_bar"]

#: A progress bar appears only for a call still running after this long.
_PROGRESS_AFTER_SECONDS: Final = 0.5
_PROGRESS_TICK_SECONDS: Final = 0.1
_BAR_WIDTH: Final = 30


class ProgressBar:
    """A one-line progress bar on a terminal, drawn only once a call is slow.

    Nothing is drawn during the first ``delay`` seconds, so quick calls stay
    silent; after that a ticker thread redraws ``[####....] done/total
    texts  3.2s`` in place. ``close`` erases the line.
    """

    def __init__(self, total: int, stream: TextIO, *, delay: float = _PROGRESS_AFTER_SECONDS):
        self.total = total
        self.done = 0
        self._stream = stream
        self._delay = delay
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._drawn = False
        self._thread = threading.Thread(target=self._tick, name="nimrank-progress", daemon=True)
        self._thread.start()

    def update(self, done: int, total: int) -> None:
        """``done`` of ``total`` scored; fits ``RankingClient.rank(progress=...)``.

        Called from the client's worker threads: two plain assignments, read
        by the drawing thread, need no lock.
        """
        self.total = total
        self.done = min(total, done)

    def _tick(self) -> None:
        if self._stop.wait(self._delay):
            return
        while not self._stop.is_set():
            self._draw()
            self._stop.wait(_PROGRESS_TICK_SECONDS)

    def _draw(self) -> None:
        share = self.done / self.total if self.total else 1.0
        filled = round(_BAR_WIDTH * share)
        elapsed = time.monotonic() - self._started
        line = (
            f"\r[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] "
            f"{self.done}/{self.total} texts scored  {elapsed:.1f}s"
        )
        try:
            self._stream.write(line)
            self._stream.flush()
        except (OSError, ValueError):
            self._stop.set()  # the terminal went away; ranking goes on
            return
        self._drawn = True

    def close(self) -> None:
        """Stop drawing and erase the bar."""
        self._stop.set()
        self._thread.join()
        if self._drawn:
            try:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
            except (OSError, ValueError):
                pass


@contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[ProgressBar | None]:
    """A ``ProgressBar`` on stderr while the block runs, or ``None`` when not ``enabled``."""
    if not enabled:
        yield None
        return
    bar = ProgressBar(total, sys.stderr)
    try:
        yield bar
    finally:
        bar.close()
