"""A check that code closes what it opens, shared by the adapters' integration tests."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def no_unclosed_connections() -> Iterator[None]:
    """Fail if a socket or transport opened inside is left for the garbage collector."""
    gc.collect()  # earlier tests' garbage is not this block's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()  # what nobody closed warns when it is collected
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
