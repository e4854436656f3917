"""Where requests go: the URL rules for every form of ``base_url`` a user may pass.

Pure functions, no I/O. The rules, once:

* ``base_url=None`` with the NIM protocol: NVIDIA's hosted catalog. Ranking goes
  to the per-model URL ``https://ai.api.nvidia.com/v1/retrieval/<org>/<slug>/reranking``
  (the slug is the model name with ``.`` replaced by ``_``); models are listed
  at ``https://integrate.api.nvidia.com/v1/models``.
* A base URL on NVIDIA's hosted API (``https://integrate.api.nvidia.com/v1``, the
  default of NVIDIA's own integrations) means the hosted catalog as well.
* A full endpoint URL (its path ends in the protocol's endpoint, e.g.
  ``/ranking``, ``/reranking``, ``/rerank``, or holds ``/retrieval/``) is used
  exactly as given.
* Anything else is a base URL: a trailing slash is dropped, ``/v1`` is added when
  the path does not already end in a version segment (``/v1``, ``/v2`` ...), and
  the protocol's endpoint is appended: ``http://localhost:8000`` ->
  ``http://localhost:8000/v1/ranking``. A query string is kept on every URL
  derived from it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

__all__ = [
    "HOSTED_MODELS_URL",
    "HOSTED_RANKING_ROOT",
    "Endpoints",
    "display_url",
    "hosted_ranking_url",
    "is_full_endpoint",
    "is_hosted_nvidia",
    "nvcf_status_url",
    "resolve_endpoints",
]

HOSTED_RANKING_ROOT = "https://ai.api.nvidia.com/v1/retrieval"
HOSTED_MODELS_URL = "https://integrate.api.nvidia.com/v1/models"
NVCF_STATUS_ROOT = "https://api.nvcf.nvidia.com/v2/nvcf/pexec/status"

_VERSION_SEGMENT = re.compile(r"/v\d+$")
# Hosts of NVIDIA's hosted API: a key is required there, and a 202 may need polling.
_HOSTED_SUFFIX = ".api.nvidia.com"
# Endpoints of other NIM services that people paste as a base URL (NVIDIA's own
# classes warn about them too): the base URL is the part before.
_OTHER_ENDPOINTS: Final = ("/rankings", "/embeddings", "/completions")


@dataclass(frozen=True)
class Endpoints:
    """The resolved URLs of one client."""

    ranking_url: str
    models_url: str
    hosted: bool

    @property
    def ready_url(self) -> str:
        """NIM's readiness check beside the model list: ``.../v1/health/ready``."""
        parts = urlsplit(self.models_url)
        return urlunsplit(parts._replace(path=parts.path.removesuffix("/models") + "/health/ready"))


def hosted_ranking_url(model: str) -> str:
    """The hosted catalog's reranking URL for ``model``.

    >>> hosted_ranking_url("nvidia/llama-3.2-nv-rerankqa-1b-v2")
    'https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking'
    """
    org, slash, name = model.strip().partition("/")
    if not slash:
        # A bare name is taken to be one of NVIDIA's own models.
        org, name = "nvidia", org
    if not org or not name:
        raise ValueError(f"model must look like 'org/name', got {model!r}")
    return f"{HOSTED_RANKING_ROOT}/{org}/{name.replace('.', '_')}/reranking"


def nvcf_status_url(request_id: str) -> str:
    """Where to poll a hosted request that was answered with ``202 Accepted``."""
    return f"{NVCF_STATUS_ROOT}/{request_id}"


def is_hosted_nvidia(url: str) -> bool:
    """Whether ``url`` points at NVIDIA's hosted API (which needs a key)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == _HOSTED_SUFFIX[1:] or host.endswith(_HOSTED_SUFFIX)


def resolve_endpoints(
    base_url: str | None,
    *,
    model: str,
    endpoint: str,
    full_url_markers: tuple[str, ...],
    hosted_catalog: bool = False,
) -> Endpoints:
    """Resolve the ranking and models URLs for a protocol.

    Args:
        base_url: what the user passed (``None`` for the hosted catalog).
        model: the model id (used for the hosted per-model URL).
        endpoint: the protocol's path segment, ``"ranking"`` or ``"rerank"``.
        full_url_markers: path endings (or ``/infix/`` parts) that mark a URL
            as a complete endpoint to be used as given.
        hosted_catalog: the protocol is NIM's, so a base URL on NVIDIA's
            hosted API means the per-model hosted catalog URL.
    """
    if base_url is None:
        return Endpoints(hosted_ranking_url(model), HOSTED_MODELS_URL, hosted=True)

    if not isinstance(base_url, str):
        raise TypeError(f"base_url must be a string or None, got {type(base_url).__name__}")
    parts = _checked_url(base_url)
    path = parts.path.rstrip("/")
    hosted = is_hosted_nvidia(base_url)

    if any(_matches(path, marker) for marker in full_url_markers):
        ranking_url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        if hosted:
            models_url = HOSTED_MODELS_URL
        else:
            models_url = _with_path(parts, _version_root(path) + "/models")
        return Endpoints(ranking_url, models_url, hosted)

    if hosted and hosted_catalog:
        # NVIDIA's API base (https://integrate.api.nvidia.com/v1, the default of
        # NVIDIA's own integrations) serves no /ranking: its rerankers live at
        # their per-model URLs, so the base means "the hosted catalog".
        return Endpoints(hosted_ranking_url(model), HOSTED_MODELS_URL, hosted=True)
    root = path if _VERSION_SEGMENT.search(path) else path + "/v1"
    return Endpoints(
        ranking_url=_with_path(parts, f"{root}/{endpoint}"),
        models_url=HOSTED_MODELS_URL if hosted else _with_path(parts, f"{root}/models"),
        hosted=hosted,
    )


def display_url(url: str) -> str:
    """``url`` with its userinfo and query values masked, for messages and reprs.

    A gateway may take its key in the query string (``?api-key=...``, or a bare
    ``?KEY``) or in the userinfo (``http://user:KEY@host``); the request keeps
    it, what people read does not. Read by hand, not by ``urlsplit``: a URL
    that does not parse (a ``/`` in an unencoded password) is masked too.
    """
    head, _, query = url.partition("#")[0].partition("?")
    scheme, sep, rest = head.partition("://")
    at = rest.rfind("@")
    if sep and at >= 0:
        user, colon, _ = rest[:at].partition(":")
        shown = f"{user}:***" if colon and "/" not in user else "***"
        head = f"{scheme}://{shown}@{rest[at + 1 :]}"
    if not query:
        return head
    masked = "&".join(
        f"{name}=***" if equals else "***"
        for name, equals, _ in (pair.partition("=") for pair in query.split("&"))
        if name or equals
    )
    return f"{head}?{masked}"


def _checked_url(base_url: str) -> SplitResult:
    """``base_url`` split, or a ``ValueError`` that says why it is not a usable URL.

    Checked here, at construction: otherwise the first call fails with httpx's
    ``InvalidURL`` (``http://127.0.0.1:80:80/v1``). The message shows the URL
    masked, as every message does.
    """
    example = "an http(s) URL such as 'http://localhost:8000/v1'"
    try:
        parts = urlsplit(base_url.strip())
        _ = parts.port  # raises for '80:80', 'abc', 99999
        httpx.URL(base_url.strip())
    except (ValueError, httpx.InvalidURL):
        # Not shown: where a URL does not parse, nobody can tell its secrets apart.
        raise ValueError(
            f"base_url must be {example}; the one given is not a valid URL "
            "(check the host, the port, and that a password in it is percent-encoded)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be {example}, got {display_url(base_url)!r}")
    path = parts.path.rstrip("/")
    if path.endswith(_OTHER_ENDPOINTS):
        warnings.warn(
            f"base_url {display_url(base_url)!r} ends in another service's endpoint "
            f"({path[path.rindex('/') :]}); pass the base URL before it, such as "
            "'http://host:8000/v1'. Requests will go to a path that does not exist.",
            UserWarning,
            stacklevel=2,
        )
    return parts


def is_full_endpoint(url: str, full_url_markers: tuple[str, ...]) -> bool:
    """Whether ``url``'s path marks it as a complete endpoint of a protocol."""
    try:
        path = urlsplit(url.strip()).path.rstrip("/")
    except ValueError:  # resolve_endpoints says what is wrong with it
        return False
    return any(_matches(path, marker) for marker in full_url_markers)


def _matches(path: str, marker: str) -> bool:
    # "/retrieval/" style markers may stand anywhere; the others must end the path.
    return marker in path + "/" if marker.endswith("/") else path.endswith(marker)


def _version_root(path: str) -> str:
    """The ``.../v1`` prefix of a full endpoint path, or ``/v1`` when it has none."""
    match = re.search(r"^(.*?/v\d+)(/|$)", path)
    return match.group(1) if match else "/v1"


def _with_path(parts: SplitResult, path: str) -> str:
    # The query stays: a gateway's key or API version applies to every URL under it.
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
