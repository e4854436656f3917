"""Every client option and its default, written once.

``RankingOptions`` is a frozen, validated value: the clients are built from
one, the adapters spread its fields under their framework's names (reading
defaults and descriptions from here), and ``replace()`` derives a new one.
Validation is pure and runs once, when the value is made, before any I/O.

Options are plain data, so they travel to worker processes (Ray, Spark,
multiprocessing). The API key does not travel: pickling drops it, and the
client a worker builds reads it from that worker's environment.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypedDict

from .planning import PassageOptions
from .protocols import PROTOCOLS
from .retry import RetryPolicy
from .validation import check_int, check_number, check_replica_urls

__all__ = ["DEFAULT_OPTIONS", "OptionValues", "RankingOptions", "describe_option"]

Protocol = Literal["nim", "cohere"]
Truncate = Literal["NONE", "END"]
ScoreTransform = Literal["raw", "sigmoid"]
HttpTransport = Literal["httpx", "aiohttp"]

#: The longest ``timeout`` accepted: one day. Longer values overflow the
#: platform's lock and socket timeouts, and no ranking request needs them.
MAX_TIMEOUT = 86_400.0

_TRUNCATE_VALUES = (None, "NONE", "END")
_SCORE_TRANSFORMS = ("raw", "sigmoid")
_HTTP_TRANSPORTS = ("httpx", "aiohttp")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, kw_only=True)
class RankingOptions:
    """The options of a ranking client (see each field's description, or ``describe_option``).

    Example::

        options = RankingOptions(base_url="http://localhost:8000/v1", max_batch_size=64)
        client = RankingClient(options)
        faster = options.replace(max_concurrency=16)
    """

    model: str | None = field(
        default=None,
        metadata=_doc(
            "The ranking model. None: the first model a self-hosted service lists at "
            "/v1/models, or nvidia/llama-nemotron-rerank-1b-v2 on NVIDIA's hosted catalog."
        ),
    )
    # Stored as a tuple when a list is given (see _checked_base_url).
    base_url: str | Sequence[str] | None = field(
        default=None,
        metadata=_doc(
            "'http://host:8000/v1' for a self-hosted NIM, a full endpoint URL used as given, "
            "a list of replicas' URLs (balanced by the client), or None: $NVIDIA_BASE_URL, "
            "else $NVIDIA_API_URL, else NVIDIA's hosted catalog."
        ),
    )
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "The API key; None: NVIDIA_API_KEY / NVIDIA_NIM_API_KEY (nim) or the host's own "
            "variable (cohere); '': no key at all. Never shown, logged or pickled."
        ),
    )
    protocol: Protocol = field(
        default="nim",
        metadata=_doc(
            "'nim' for NIM's /v1/ranking; 'cohere' for the /v1/rerank API of Jina, Cohere, "
            "vLLM or a LiteLLM proxy (needs base_url)."
        ),
    )
    truncate: Truncate | None = field(
        default=None,
        metadata=_doc(
            "NIM's server-side truncation: 'END' cuts passages longer than the model's "
            "context, 'NONE' refuses them; None: the server's default."
        ),
    )
    max_batch_size: int = field(
        default=64, metadata=_doc("Passages per request (NIM accepts at most 512).")
    )
    max_concurrency: int = field(
        default=8,
        metadata=_doc(
            "Requests in flight at once, across all calls of a client (with a list of "
            "replicas: on each replica)."
        ),
    )
    timeout: float = field(
        default=60.0,
        metadata=_doc("Seconds one request may take, headers and body (at most one day)."),
    )
    max_retries: int | None = field(
        default=None,
        metadata=_doc(
            "Retries of a failed request (429, 5xx, timeouts, dropped connections); "
            "None: the retry policy's own count (3 by default)."
        ),
    )
    retry_policy: RetryPolicy = field(
        default_factory=RetryPolicy,
        metadata=_doc("Backoff settings, a nimrank.RetryPolicy."),
    )
    extra_headers: Mapping[str, str] = field(
        default_factory=dict,
        repr=False,
        metadata=_doc("Headers added to every request (never shown: they may hold tokens)."),
    )
    max_passage_chars: int | None = field(
        default=None,
        metadata=_doc(
            "Cut each passage to this many characters before sending (with chunking: the "
            "window size); None: send passages whole."
        ),
    )
    chunking: bool = field(
        default=False,
        metadata=_doc(
            "Score long passages as overlapping windows of max_passage_chars and keep each "
            "passage's best window."
        ),
    )
    chunk_overlap_chars: int | None = field(
        default=None, metadata=_doc("Overlap of the windows; None: a tenth of the window.")
    )
    max_chunks_per_doc: int | None = field(
        default=None, metadata=_doc("Score at most this many windows of one passage.")
    )
    score_transform: ScoreTransform = field(
        default="raw",
        metadata=_doc("'raw': the server's score (a NIM logit); 'sigmoid': mapped into (0, 1)."),
    )
    score_threshold: float | None = field(
        default=None,
        metadata=_doc("Drop passages scoring below this (after score_transform)."),
    )
    max_response_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata=_doc("The largest response body accepted for one request, decoded."),
    )
    http_transport: HttpTransport = field(
        default="aiohttp",
        metadata=_doc(
            "The async client's HTTP stack: 'aiohttp' (about a quarter of httpx's client CPU "
            "per request) or 'httpx' (httpcore over anyio). Same timeouts, limits, errors and "
            "bounds on both. The sync client always uses httpx."
        ),
    )

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            raise TypeError(f"model must be None or a string, got {self.model!r}")
        if self.model is not None and not self.model.strip():
            raise ValueError(f"model must be None or a non-empty string, got {self.model!r}")
        object.__setattr__(self, "base_url", _checked_base_url(self.base_url))
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise TypeError("api_key must be a string or None")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        if self.truncate not in _TRUNCATE_VALUES:
            raise ValueError(f"truncate must be 'NONE', 'END' or None, got {self.truncate!r}")
        if self.truncate is not None and self.protocol != "nim":
            raise ValueError(
                "truncate is NIM's server-side switch; for the cohere protocol "
                "use max_passage_chars (and chunking) instead"
            )
        if self.base_url is None and self.protocol != "nim":
            raise ValueError(
                "the cohere protocol needs a base_url, e.g. 'https://api.jina.ai/v1' for Jina "
                "or 'http://localhost:4000' for a LiteLLM proxy"
            )
        cap = PROTOCOLS[self.protocol].max_batch_size
        check_int("max_batch_size", self.max_batch_size, minimum=1, maximum=cap)
        check_int("max_concurrency", self.max_concurrency, minimum=1)
        timeout = check_number("timeout", self.timeout, positive=True)
        if not timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be at most {MAX_TIMEOUT:g} seconds, got {timeout}")
        object.__setattr__(self, "timeout", timeout)
        if self.max_retries is not None:
            check_int("max_retries", self.max_retries, minimum=0)
        if not isinstance(self.retry_policy, RetryPolicy):
            raise TypeError(
                f"retry_policy must be a nimrank.RetryPolicy, got {self.retry_policy!r}"
            )
        if not isinstance(self.extra_headers, Mapping):
            raise TypeError("extra_headers must be a mapping of header names to values")
        # A private read-only copy: a caller's dict changed later must not change us.
        object.__setattr__(self, "extra_headers", MappingProxyType(dict(self.extra_headers)))
        if self.score_transform not in _SCORE_TRANSFORMS:
            raise ValueError(
                f"score_transform must be 'raw' or 'sigmoid', got {self.score_transform!r}"
            )
        if self.score_threshold is not None:
            check_number("score_threshold", self.score_threshold)
        check_int("max_response_bytes", self.max_response_bytes, minimum=1024)
        if self.http_transport not in _HTTP_TRANSPORTS:
            raise ValueError(
                f"http_transport must be 'httpx' or 'aiohttp', got {self.http_transport!r}"
            )
        # Checked now, kept as a property: the value is derived, not stored.
        self.passage_options  # noqa: B018

    @functools.cached_property
    def passage_options(self) -> PassageOptions:
        """The client-side truncation and chunking settings, checked."""
        return PassageOptions.checked(
            self.max_passage_chars, self.chunking, self.chunk_overlap_chars, self.max_chunks_per_doc
        )

    @property
    def effective_retry_policy(self) -> RetryPolicy:
        """``retry_policy`` with ``max_retries`` applied when it is given."""
        if self.max_retries is None:
            return self.retry_policy
        return self.retry_policy.with_retries(self.max_retries)

    def replace(self, **changes: Any) -> RankingOptions:
        """A new value with ``changes`` applied and checked (this one is unchanged)."""
        return dataclasses.replace(self, **changes)

    # Immutable: copies are the value itself (and keep the key, unlike pickling).
    def __copy__(self) -> RankingOptions:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RankingOptions:
        return self

    def __getstate__(self) -> dict[str, Any]:
        # Plain data for worker processes; the key is read again on the worker.
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state["api_key"] = None
        state["extra_headers"] = dict(self.extra_headers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.__post_init__()


def _checked_base_url(base_url: object) -> str | tuple[str, ...] | None:
    """``base_url`` as stored: a string, ``None``, or a tuple of distinct replica URLs."""
    if base_url is None or isinstance(base_url, str):
        return base_url
    if not isinstance(base_url, (list, tuple)):
        raise TypeError(
            f"base_url must be a string, a list of replica URLs or None, got {base_url!r}"
        )
    return check_replica_urls(base_url)


#: The options with every default: adapters read their defaults from here.
DEFAULT_OPTIONS = RankingOptions()

_FIELDS = {f.name: f for f in dataclasses.fields(RankingOptions)}


def describe_option(name: str) -> str:
    """The one-line description of option ``name``, for adapters' field docs."""
    return str(_FIELDS[name].metadata["doc"])


class OptionValues(TypedDict, total=False):
    """``RankingOptions``' fields as keyword arguments, so client constructors type-check.

    A test checks that it names exactly the fields of ``RankingOptions``.
    """

    model: str | None
    base_url: str | Sequence[str] | None
    api_key: str | None
    protocol: Protocol
    truncate: Truncate | None
    max_batch_size: int
    max_concurrency: int
    timeout: float
    max_retries: int | None
    retry_policy: RetryPolicy
    extra_headers: Mapping[str, str]
    max_passage_chars: int | None
    chunking: bool
    chunk_overlap_chars: int | None
    max_chunks_per_doc: int | None
    score_transform: ScoreTransform
    score_threshold: float | None
    max_response_bytes: int
    http_transport: HttpTransport
