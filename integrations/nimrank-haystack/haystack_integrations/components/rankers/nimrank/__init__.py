"""Haystack integration of nimrank: ``NIMRanker``.

>>> from haystack_integrations.components.rankers.nimrank import NIMRanker
"""

from .ranker import NIMRanker

__all__ = ["NIMRanker"]
