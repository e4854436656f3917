"""What `nimrank serve` answers, as pure functions (no sockets, no clocks).

:func:`dispatch` maps ``(method, path, raw body)`` to a :class:`Reply`; the
HTTP layer in :mod:`nimrank.server.app` only reads bytes and writes them
back. Keeping this sans-IO lets the validation rules be fuzzed without a
server.

Two wire families are served, each with its own error convention:

* NVIDIA NIM ``POST /v1/ranking`` (and the hosted catalog's
  ``/v1/retrieval/<org>/<model>/reranking``). Validation is strict like a
  real NIM: unknown fields are refused, so a client that sends ``top_n`` to
  NIM learns it here rather than in production. Errors are a
  problem-details body as NVIDIA's hosted endpoints send it
  (``{"status", "title", "detail"}``) plus the ``{"object": "error",
  "message"}`` pair that self-hosted NIM containers use, so a parser
  written for either finds the message.
* Cohere/Jina style ``POST /v1/rerank``, ``/v2/rerank`` and ``/rerank``.
  Unknown fields are ignored (vLLM and LiteLLM accept extras). Errors are
  Cohere's ``{"message": "..."}``.

Everything else (models, health, 404, 405) uses the NIM error shape: this is
a NIM stand-in first.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal

from nimrank.server.scoring import image_logit, prepare_query, score_prepared, sigmoid

__all__ = [
    "DEFAULT_MODEL_ID",
    "MAX_JSON_VALUES",
    "MODEL_DESCRIPTION",
    "VLM_MODEL_DESCRIPTION",
    "VLM_MODEL_ID",
    "NotJson",
    "Reply",
    "ServerSettings",
    "allowed_methods",
    "cohere_error",
    "dispatch",
    "nim_error",
    "parse_json",
    "rank_nim",
    "rerank",
]

DEFAULT_MODEL_ID: Final = "nimrank/lexical-bm25"

MODEL_DESCRIPTION: Final = (
    "Lexical BM25 stand-in served by `nimrank serve` for demos and tests: scores come "
    "from word overlap, not from a neural cross-encoder reranker."
)

VLM_MODEL_ID: Final = "nvidia/llama-nemotron-rerank-vl-1b-v2"
"""The image-and-text (``ranking-vlm``) model the server lists; only it takes images."""

VLM_MODEL_DESCRIPTION: Final = (
    "Lexical stand-in for NVIDIA's VLM reranker, served by `nimrank serve`: a passage's "
    "logit is its text's BM25 score plus a stable value derived from the SHA-256 of its "
    "image bytes (image-only passages: the image term only). Not a neural model."
)

MAX_JSON_VALUES: Final = 100_000
"""Most JSON arrays, objects and list items a large request body may hold.

Counted on the raw bytes before decoding, so a 63 MiB body of ``[],[],...``
(20 million empty lists, ~1.7 GB once decoded) is refused at the cost of one
scan; 1,000 documents with metadata stay far below it."""

_LARGE_BODY: Final = 1 << 20
"""Bodies up to this size are decoded directly: they cannot decode to much."""

NIM_FIELDS: Final = ("model", "query", "passages", "truncate")
TRUNCATE_MODES: Final = ("NONE", "END")


@dataclass(frozen=True)
class ServerSettings:
    """Behaviour knobs of the stand-in server.

    Attributes:
        model: model id listed by ``GET /v1/models``. Requests may name any
            model; it is a stand-in.
        latency_ms: simulated GPU cost per scoring request.
        per_passage_ms: simulated GPU cost per scored passage.
        max_passages: NIM's cap on passages per ``/v1/ranking`` request.
        max_documents: cap on documents per ``/rerank`` request.
        max_passage_tokens: longest passage, in whitespace-separated words;
            longer ones are cut (``truncate=END``) or refused (``NONE``).
        vlm_model: id of the image-and-text model also listed (None: only
            ``model``); requests naming it may send image passages.
        shuffle_rankings: send NIM rankings in a seeded random order rather
            than best first (the contract promises no order), so a client
            matching scores by position instead of ``index`` gets caught.
        rerank_scores: ``"sigmoid"`` (Cohere-like, in (0, 1)) or ``"logit"``
            (the raw NIM logit, as the LiteLLM proxy sends for NIM models)
            for ``relevance_score`` on the ``/rerank`` routes.
    """

    model: str = DEFAULT_MODEL_ID
    latency_ms: float = 0.0
    per_passage_ms: float = 0.0
    max_passages: int = 512
    max_documents: int = 1000
    max_passage_tokens: int = 512
    vlm_model: str | None = VLM_MODEL_ID
    shuffle_rankings: bool = False
    rerank_scores: Literal["sigmoid", "logit"] = "sigmoid"

    def __post_init__(self) -> None:
        for latency in (self.latency_ms, self.per_passage_ms):
            if not (math.isfinite(latency) and latency >= 0):
                raise ValueError(f"simulated latencies must be finite and >= 0, got {latency}")
        if min(self.max_passages, self.max_documents, self.max_passage_tokens) < 1:
            raise ValueError("limits must be >= 1")
        if self.rerank_scores not in ("sigmoid", "logit"):
            raise ValueError(
                f"rerank_scores must be 'sigmoid' or 'logit', got {self.rerank_scores!r}"
            )

    def simulated_seconds(self, passages: int) -> float:
        """Simulated GPU time for one request scoring ``passages`` passages."""
        return (self.latency_ms + self.per_passage_ms * passages) / 1000.0


@dataclass(frozen=True)
class Reply:
    """One HTTP response, ready to encode (or a scripted misbehaviour).

    Attributes:
        status: HTTP status code.
        body: JSON-serialisable payload, or raw ``bytes`` sent as they are.
        headers: extra response headers (Content-Length is added later,
            Content-Type too unless given).
        passages: passages scored; drives the simulated GPU latency.
        delay: seconds to wait before answering (the request stays in flight).
        drop: close the connection without sending a byte.
        trickle: send the reply one byte at a time, this many seconds apart
            (a server that dribbles; the headers come the same way).
    """

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    passages: int = 0
    delay: float = 0.0
    drop: bool = False
    trickle: float = 0.0


class _Invalid(Exception):
    """A request the server refuses; its message goes into the error body."""


class _Unsupported(_Invalid):
    """A well-formed request asking for what the route cannot do (a 422)."""


class NotJson:
    """Stands for a request body that is not JSON, with the decoder's complaint."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# --------------------------------------------------------------------------- errors


def nim_error(status: int, detail: str) -> Reply:
    """An error in the NIM shape: problem details plus the container's message."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return Reply(
        status,
        {
            "object": "error",
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "message": detail,
        },
    )


def cohere_error(status: int, message: str) -> Reply:
    """An error in the Cohere shape, ``{"message": ...}``."""
    return Reply(status, {"message": message})


# --------------------------------------------------------------------------- helpers


def too_many_values(raw: bytes) -> bool:
    """Whether a large body holds more than :data:`MAX_JSON_VALUES` arrays, objects and items.

    Brackets and commas inside strings are not counted: strings are blanked
    first (a passage full of commas is one value).
    """
    if len(raw) <= _LARGE_BODY:
        return False
    skeleton = _JSON_STRING.sub(b"", raw)
    return skeleton.count(b",") + skeleton.count(b"[") + skeleton.count(b"{") > MAX_JSON_VALUES


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def parse_json(raw: bytes) -> Any:
    """Decode a request body; a :class:`NotJson` if it is not JSON."""
    if not raw.strip():
        return NotJson("the body is empty")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; RecursionError
        # comes from absurdly nested arrays.
        return NotJson(str(exc) or type(exc).__name__)


def _kind(value: object) -> str:
    """JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fit(text: str, max_words: int, *, refuse: bool, where: str) -> str:
    """Apply the passage length limit: cut at ``max_words`` or refuse."""
    if len(text) <= max_words:  # every word takes a character: cannot be too long
        return text
    words = text.split()
    if len(words) <= max_words:
        return text
    if refuse:
        raise _Invalid(
            f"Input length {len(words)} exceeds maximum allowed token size {max_words} "
            f'({where}; truncate="NONE", tokens counted as whitespace-separated words)'
        )
    return " ".join(words[:max_words])


# A passage to score: its text and/or its decoded image bytes.
_Passage = tuple[str | None, bytes | None]


def _ranked(query: str, passages: Sequence[_Passage]) -> list[tuple[int, float]]:
    """(index, logit) pairs, best first, ties by index (a stable order).

    A passage's logit is its text's score (when it has a text) plus its
    image's term (when it has an image): see :func:`scoring.image_logit`.
    """
    prepared = prepare_query(query)
    logits = [
        (0.0 if text is None else score_prepared(prepared, text))
        + (0.0 if image is None else image_logit(image))
        for text, image in passages
    ]
    return sorted(enumerate(logits), key=lambda pair: (-pair[1], pair[0]))


_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,([A-Za-z0-9+/=\s]*)")


def _decode_image(value: object, where: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL, or a refusal saying why."""
    if not isinstance(value, str):
        raise _Invalid(
            f"{where}: expected a string (a data:image/...;base64, URL), got {_kind(value)}"
        )
    matched = _DATA_URL.fullmatch(value)
    if matched is None:
        raise _Invalid(f"{where}: expected a base64 data URL, data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode("".join(matched.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"{where}: the data URL is not valid base64") from None
    if not data:
        raise _Invalid(f"{where}: the image is empty")
    return data


# --------------------------------------------------------------------------- NIM


def _nim_text_object(value: object, where: str) -> str:
    """Validate ``{"text": str}`` and return the text."""
    if not isinstance(value, dict):
        raise _Invalid(f'{where}: expected an object like {{"text": "..."}}, got {_kind(value)}')
    for key in value:
        if key != "text":
            raise _Invalid(f"{where}.{key}: unknown field, expected one of text")
    if "text" not in value:
        raise _Invalid(f"{where}.text: field required")
    text = value["text"]
    if not isinstance(text, str):
        raise _Invalid(f"{where}.text: expected a string, got {_kind(text)}")
    return text


def _nim_passage(value: object, where: str, *, images: bool, model: str) -> _Passage:
    """Validate a passage, ``{"text": str}``, and with a VLM model ``{"image": url}`` or both."""
    if type(value) is dict and len(value) == 1 and type(value.get("text")) is str:
        return value["text"], None  # the common case, checked in one go
    if not isinstance(value, dict):
        raise _Invalid(f'{where}: expected an object like {{"text": "..."}}, got {_kind(value)}')
    if "image" in value and not images:
        raise _Invalid(
            f"{where}.image: model {model!r} does not take images; image passages need "
            f"a ranking-vlm model ({VLM_MODEL_ID})"
        )
    allowed = ("text", "image") if images else ("text",)
    for key in value:
        if key not in allowed:
            raise _Invalid(f"{where}.{key}: unknown field, expected one of {', '.join(allowed)}")
    if "text" not in value and "image" not in value:
        raise _Invalid(f"{where}.text: field required" + (" (or image)" if images else ""))
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise _Invalid(f"{where}.text: expected a string, got {_kind(text)}")
    if "text" in value and text is None:
        raise _Invalid(f"{where}.text: expected a string, got null")
    image = _decode_image(value["image"], f"{where}.image") if "image" in value else None
    return text, image


def _validate_nim(body: object, settings: ServerSettings) -> tuple[str, list[_Passage]]:
    """Check a ``/v1/ranking`` body; return the query and the passages to score."""
    if isinstance(body, NotJson):
        raise _Invalid(f"Request body is not valid JSON: {body.reason}")
    if not isinstance(body, dict):
        raise _Invalid(f"Request body must be a JSON object, got {_kind(body)}")
    for key in body:
        if key not in NIM_FIELDS:
            raise _Invalid(f"{key}: unknown field, expected one of {', '.join(NIM_FIELDS)}")
    for key in ("model", "query", "passages"):
        if key not in body:
            raise _Invalid(f"{key}: field required")
    if not isinstance(body["model"], str):
        raise _Invalid(f"model: expected a string, got {_kind(body['model'])}")
    # Absent means END; an explicit null is refused, as the contract's string enum says.
    truncate = body.get("truncate", "END")
    if truncate not in TRUNCATE_MODES:
        shown = json.dumps(truncate) if isinstance(truncate, str) else _kind(truncate)
        raise _Invalid(f"truncate: expected one of NONE, END, got {shown}")
    query = _nim_text_object(body["query"], "query")
    if not query.strip():
        raise _Invalid("query.text: must not be empty or whitespace-only")
    passages = body["passages"]
    if not isinstance(passages, list):
        raise _Invalid(f"passages: expected an array of passages, got {_kind(passages)}")
    if not passages:
        raise _Invalid("passages: must contain at least 1 passage")
    if len(passages) > settings.max_passages:
        raise _Invalid(
            f"passages: at most {settings.max_passages} passages are allowed per request, "
            f"got {len(passages)}"
        )
    images = settings.vlm_model is not None and body["model"] == settings.vlm_model
    checked: list[_Passage] = []
    for position, passage in enumerate(passages):
        where = f"passages[{position}]"
        text, image = _nim_passage(passage, where, images=images, model=body["model"])
        if text is not None:
            text = _fit(text, settings.max_passage_tokens, refuse=truncate == "NONE", where=where)
        checked.append((text, image))
    return query, checked


def rank_nim(body: object, settings: ServerSettings, seed: int = 0) -> Reply:
    """Answer NIM ``POST /v1/ranking``: ``{"rankings": [{"index", "logit"}]}``.

    Best first, unless ``settings.shuffle_rankings``: then in an order
    shuffled by ``seed`` (reproducible, rarely the input order).
    """
    try:
        query, passages = _validate_nim(body, settings)
    except _Invalid as exc:
        return nim_error(400, str(exc))
    rankings = [{"index": index, "logit": logit} for index, logit in _ranked(query, passages)]
    if settings.shuffle_rankings:
        random.Random(seed).shuffle(rankings)
    return Reply(200, {"rankings": rankings}, passages=len(passages))


# --------------------------------------------------------------------------- Cohere / Jina


def _validate_rerank(
    body: object, settings: ServerSettings
) -> tuple[str, list[str], int | None, bool, str | None]:
    """Check a ``/rerank`` body; return query, documents, top_n, return_documents, model."""
    if isinstance(body, NotJson):
        raise _Invalid(f"invalid request: body is not valid JSON: {body.reason}")
    if not isinstance(body, dict):
        raise _Invalid(f"invalid request: body must be a JSON object, got {_kind(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _Invalid(f"invalid request: model must be a string, got {_kind(model)}")
    if "query" not in body:
        raise _Invalid("invalid request: query is required")
    query = body["query"]
    if not isinstance(query, str):
        raise _Invalid(f"invalid request: query must be a string, got {_kind(query)}")
    if not query.strip():
        raise _Invalid("invalid request: query must not be empty")
    if "documents" not in body:
        raise _Invalid("invalid request: documents is required")
    documents = body["documents"]
    if not isinstance(documents, list):
        raise _Invalid(f"invalid request: documents must be an array, got {_kind(documents)}")
    if not documents:
        raise _Invalid("invalid request: list of documents must not be empty")
    if len(documents) > settings.max_documents:
        raise _Invalid(
            f"invalid request: too many documents, at most {settings.max_documents} are "
            f"allowed, got {len(documents)}"
        )
    texts = []
    for position, document in enumerate(documents):
        if isinstance(document, dict) and "image" in document:
            raise _Unsupported(
                f"invalid request: documents[{position}] has an image; the /rerank "
                "(Cohere/Jina) protocol takes text only. Send image passages to NIM "
                f"/v1/ranking with a ranking-vlm model ({VLM_MODEL_ID})"
            )
        if isinstance(document, dict) and isinstance(document.get("text"), str):
            text = document["text"]
        elif isinstance(document, str):
            text = document
        else:
            raise _Invalid(
                f"invalid request: documents[{position}] must be a string or an object "
                f'with a string "text" field, got {_kind(document)}'
            )
        texts.append(_fit(text, settings.max_passage_tokens, refuse=False, where=""))
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool)):
        raise _Invalid(f"invalid request: top_n must be an integer, got {_kind(top_n)}")
    if top_n is not None and top_n < 1:
        raise _Invalid(f"invalid request: top_n must be at least 1, got {top_n}")
    return_documents = body.get("return_documents")
    if return_documents is not None and not isinstance(return_documents, bool):
        raise _Invalid(
            f"invalid request: return_documents must be a boolean, got {_kind(return_documents)}"
        )
    return query, texts, top_n, bool(return_documents), model


def rerank(body: object, settings: ServerSettings) -> Reply:
    """Answer Cohere/Jina ``POST /rerank``.

    ``{"model", "results": [{"index", "relevance_score"[, "document"]}],
    "usage": {"total_tokens"}}``; ``relevance_score`` is the sigmoid of the
    NIM logit, so both families rank identically.
    """
    try:
        query, texts, top_n, return_documents, model = _validate_rerank(body, settings)
    except _Invalid as exc:
        return cohere_error(422 if isinstance(exc, _Unsupported) else 400, str(exc))
    ranked = _ranked(query, [(text, None) for text in texts])
    if top_n is not None:
        ranked = ranked[:top_n]
    results: list[dict[str, Any]] = []
    for index, logit in ranked:
        relevance = sigmoid(logit) if settings.rerank_scores == "sigmoid" else logit
        result: dict[str, Any] = {"index": index, "relevance_score": relevance}
        if return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    # Whitespace words of every (query, document) pair: what a cross-encoder reads.
    query_words = len(query.split())
    total_tokens = sum(query_words + len(text.split()) for text in texts)
    payload = {
        "model": model if model else settings.model,
        "results": results,
        "usage": {"total_tokens": total_tokens},
    }
    return Reply(200, payload, passages=len(texts))


# --------------------------------------------------------------------------- the rest


def list_models(settings: ServerSettings) -> Reply:
    """Answer ``GET /v1/models``: the text model, then the VLM one (clearly labelled).

    Each entry says its ``type``: ``ranking`` (text) or ``ranking-vlm`` (text
    and images), as NVIDIA's catalog distinguishes them.
    """
    listed = [(settings.model, "ranking", MODEL_DESCRIPTION)]
    if settings.vlm_model is not None and settings.vlm_model != settings.model:
        listed.append((settings.vlm_model, "ranking-vlm", VLM_MODEL_DESCRIPTION))
    models = [
        {
            "id": model_id,
            "object": "model",
            "created": 0,
            "owned_by": "nimrank",
            "type": kind,
            "description": description,
            "max_passages": settings.max_passages,
            "max_passage_tokens": settings.max_passage_tokens,
        }
        for model_id, kind, description in listed
    ]
    return Reply(200, {"object": "list", "data": models})


_Handler = Callable[[object, ServerSettings], Reply]

# path -> (error family, {method: handler}); a handler takes the parsed body.
_NIM = "nim"
_COHERE = "cohere"
_ROUTES: dict[str, tuple[str, dict[str, _Handler]]] = {
    "/v1/ranking": (_NIM, {"POST": rank_nim}),
    "/v1/rerank": (_COHERE, {"POST": rerank}),
    "/v2/rerank": (_COHERE, {"POST": rerank}),
    "/rerank": (_COHERE, {"POST": rerank}),
    "/v1/models": (_NIM, {"GET": lambda _body, settings: list_models(settings)}),
    "/v1/health/ready": (_NIM, {"GET": lambda _body, _settings: Reply(200, {"status": "ready"})}),
    "/v1/health/live": (_NIM, {"GET": lambda _body, _settings: Reply(200, {"status": "live"})}),
}
# NVIDIA's hosted catalog serves each reranker at its own URL.
_HOSTED_RANKING = re.compile(r"/v1/retrieval/[^/]+/[^/]+/reranking")


def _route(path: str) -> tuple[str, dict[str, _Handler]] | None:
    if len(path) > 1:
        path = path.rstrip("/")
    found = _ROUTES.get(path)
    if found is None and _HOSTED_RANKING.fullmatch(path):
        found = _ROUTES["/v1/ranking"]
    return found


def allowed_methods(path: str) -> list[str]:
    """Methods served at ``path`` (HEAD wherever GET is); empty if unknown."""
    found = _route(path)
    if found is None:
        return []
    methods = list(found[1])
    if "GET" in methods:
        methods.append("HEAD")
    return methods


def dispatch(
    method: str, path: str, body: object, settings: ServerSettings, *, seed: int = 0
) -> Reply:
    """Answer one request.

    Args:
        method: HTTP method.
        path: request path without the query string.
        body: the body as :func:`parse_json` decoded it (a :class:`NotJson`
            when it is not JSON); ignored by routes that take no body.
        settings: the server's current settings.
        seed: seeds the order of shuffled rankings (``shuffle_rankings``).

    Never raises for any input: bad input becomes a 4xx :class:`Reply`.
    """
    found = _route(path)
    if found is None:
        return nim_error(404, f"Not found: {path}")
    family, handlers = found
    handler = handlers.get("GET" if method == "HEAD" else method)
    if handler is None:
        allowed = ", ".join(allowed_methods(path))
        message = f"Method {method} not allowed on {path}; allowed: {allowed}"
        reply = cohere_error(405, message) if family == _COHERE else nim_error(405, message)
        return Reply(reply.status, reply.body, {"Allow": allowed})
    if handler is rank_nim:
        return rank_nim(body, settings, seed)
    return handler(body, settings)
