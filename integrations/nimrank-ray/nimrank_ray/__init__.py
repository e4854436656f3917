"""Rerank a Ray Dataset through nimrank: ``from nimrank_ray import rerank_dataset``.

Each row holds a query and a list of passages; an actor pool of
``nimrank.AsyncRankingClient`` instances adds the passages' scores (input
order) and their ranking (indices, best first), ranking many rows at once in
every actor. ``Reranker`` is the actor class, for pipelines that call
``map_batches`` themselves.
"""

from __future__ import annotations

from .reranker import Reranker, rerank_dataset

__all__ = ["Reranker", "rerank_dataset"]
