"""Rerank a Ray Dataset through nimrank: ``from nimrank_ray import rerank_dataset``.

Each row holds a query and a list of passages; an actor pool of
``nimrank.AsyncRankingClient`` instances adds the passages' scores (input
order) and their ranking (indices, best first), ranking many rows at once in
every actor. ``Reranker`` is the actor class, for pipelines that call
``map_batches`` themselves.
"""

from __future__ import annotations

# Without Ray this package is useless: say which distribution brings it rather
# than leave a bare ModuleNotFoundError from deep inside the module.
try:
    import ray  # noqa: F401
except ModuleNotFoundError as exc:
    raise ImportError(
        "nimrank_ray needs Ray Data, which is not installed: pip install nimrank-ray"
    ) from exc

from .reranker import Reranker, rerank_dataset

__all__ = ["Reranker", "rerank_dataset"]
