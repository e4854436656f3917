"""Haystack integration of nimrank: ``NIMRanker``.

>>> from haystack_integrations.components.rankers.nimrank import NIMRanker
"""

# Without its framework this package is useless: say which distribution brings
# it rather than leave a bare ModuleNotFoundError from deep inside the adapter.
try:
    import haystack  # noqa: F401
except ModuleNotFoundError as exc:
    raise ImportError(
        "haystack_integrations.components.rankers.nimrank needs haystack-ai, which is not "
        "installed: pip install nimrank-haystack"
    ) from exc

from .ranker import NIMRanker

__all__ = ["NIMRanker"]
