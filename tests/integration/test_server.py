"""`nimrank serve` over real loopback HTTP: every endpoint, every refusal, the plumbing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimrank.cli import main
from nimrank.server import (
    MODEL_DESCRIPTION,
    VLM_MODEL_ID,
    RankingServer,
    faults,
    image_logit,
    score,
    sigmoid,
)
from seed_examples import NVIDIA_RERANK_PASSAGES as SEED_PASSAGES
from seed_examples import QUERY as SEED_QUERY

URL_LINE = re.compile(r"listening on (http://\S+/v1) \(lexical BM25 stand-in\)")


@pytest.fixture
def server() -> Iterator[RankingServer]:
    with RankingServer() as running:
        yield running


@pytest.fixture
def client(server: RankingServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def nim_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "nvidia/llama-3.2-nv-rerankqa-1b-v2",
        "query": {"text": SEED_QUERY},
        "passages": [{"text": text} for text in SEED_PASSAGES],
    }
    body.update(changes)
    return body


def rerank_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "rerank-test", "query": SEED_QUERY, "documents": SEED_PASSAGES}
    body.update(changes)
    return body


def assert_nim_error(reply: httpx.Response, status: int, fragment: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == status
    assert body["object"] == "error"
    assert body["title"]
    assert body["detail"] == body["message"]
    assert fragment in body["detail"]


# --------------------------------------------------------------------------- NIM /v1/ranking


def test_ranking_returns_every_index_once_sorted_by_logit(client: httpx.Client) -> None:
    reply = client.post("/ranking", json=nim_body())
    assert reply.status_code == 200
    rankings = reply.json()["rankings"]
    assert sorted(r["index"] for r in rankings) == [0, 1, 2]
    logits = [r["logit"] for r in rankings]
    assert logits == sorted(logits, reverse=True)
    assert all(isinstance(x, float) and math.isfinite(x) for x in logits)
    assert set(reply.json()) == {"rankings"}


def test_ranking_puts_the_h100_passage_first_on_the_seed_example(client: httpx.Client) -> None:
    rankings = client.post("/ranking", json=nim_body()).json()["rankings"]
    assert [r["index"] for r in rankings] == [2, 0, 1]


def test_ranking_breaks_ties_by_index(client: httpx.Client) -> None:
    passages = [{"text": "lemon cake"}, {"text": ""}, {"text": "apple pie"}, {"text": "tea"}]
    rankings = client.post("/ranking", json=nim_body(passages=passages)).json()["rankings"]
    assert [r["index"] for r in rankings] == [0, 2, 3, 1]


def test_ranking_scores_do_not_depend_on_the_batch(client: httpx.Client) -> None:
    def logits(passages: Sequence[str]) -> dict[str, float]:
        body = nim_body(passages=[{"text": text} for text in passages])
        rankings = client.post("/ranking", json=body).json()["rankings"]
        return {passages[r["index"]]: r["logit"] for r in rankings}

    together = logits(SEED_PASSAGES)
    split = logits(SEED_PASSAGES[:1]) | logits(SEED_PASSAGES[1:][::-1])
    assert together == split


def test_hosted_catalog_path_serves_ranking(client: httpx.Client) -> None:
    reply = client.post("/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking", json=nim_body())
    assert reply.status_code == 200
    assert reply.json()["rankings"][0]["index"] == 2


def test_ranking_accepts_512_passages(client: httpx.Client) -> None:
    passages = [{"text": f"passage {i} about memory"} for i in range(512)]
    reply = client.post("/ranking", json=nim_body(passages=passages))
    assert reply.status_code == 200
    assert len(reply.json()["rankings"]) == 512


def test_ranking_accepts_explicit_and_absent_truncate(client: httpx.Client) -> None:
    for truncate in ["END", "NONE"]:
        assert client.post("/ranking", json=nim_body(truncate=truncate)).status_code == 200
    assert client.post("/ranking", json=nim_body()).status_code == 200


def test_truncate_end_cuts_long_passages_silently(
    server: RankingServer, client: httpx.Client
) -> None:
    server.configure(max_passage_tokens=10)
    late_match = " ".join(["filler"] * 10 + ["bandwidth"])
    early_match = " ".join(["bandwidth"] + ["filler"] * 10)
    body = nim_body(passages=[{"text": late_match}, {"text": early_match}])
    rankings = client.post("/ranking", json=body).json()["rankings"]
    by_index = {r["index"]: r["logit"] for r in rankings}
    assert by_index[0] == -5.0  # the matching word was past the cut
    assert by_index[1] > -5.0


def test_truncate_none_refuses_an_over_long_passage(
    server: RankingServer, client: httpx.Client
) -> None:
    server.configure(max_passage_tokens=10)
    passages = [{"text": "short one"}, {"text": " ".join(["word"] * 11)}]
    reply = client.post("/ranking", json=nim_body(passages=passages, truncate="NONE"))
    assert_nim_error(reply, 400, "Input length 11 exceeds maximum allowed token size 10")
    assert "passages[1]" in reply.json()["detail"]
    at_limit = [{"text": " ".join(["word"] * 10)}]
    assert client.post("/ranking", json=nim_body(passages=at_limit, truncate="NONE")).is_success


NIM_REFUSALS: list[tuple[str, Any, str]] = [
    ("array body", [1, 2], "Request body must be a JSON object, got array"),
    ("string body", "hello", "Request body must be a JSON object, got string"),
    (
        "model missing",
        {k: v for k, v in nim_body().items() if k != "model"},
        "model: field required",
    ),
    ("model not a string", nim_body(model=7), "model: expected a string, got integer"),
    (
        "query missing",
        {k: v for k, v in nim_body().items() if k != "query"},
        "query: field required",
    ),
    ("query as a string", nim_body(query="gpu"), 'query: expected an object like {"text": "..."}'),
    ("query text missing", nim_body(query={}), "query.text: field required"),
    ("query text not a string", nim_body(query={"text": 3}), "query.text: expected a string"),
    ("query extra field", nim_body(query={"text": "a", "lang": "en"}), "query.lang: unknown field"),
    ("query empty", nim_body(query={"text": ""}), "query.text: must not be empty"),
    ("query whitespace", nim_body(query={"text": " \n\t"}), "query.text: must not be empty"),
    (
        "passages missing",
        {k: v for k, v in nim_body().items() if k != "passages"},
        "passages: field required",
    ),
    ("passages not a list", nim_body(passages={"text": "a"}), "passages: expected an array"),
    ("passages empty", nim_body(passages=[]), "passages: must contain at least 1 passage"),
    ("passage as a string", nim_body(passages=["plain"]), "passages[0]: expected an object"),
    (
        "passage with an unknown field",
        nim_body(passages=[{"text": "a"}, {"content": "b"}]),
        "passages[1].content: unknown field",
    ),
    ("passage without text", nim_body(passages=[{}]), "passages[0].text: field required"),
    (
        "passage text null",
        nim_body(passages=[{"text": None}]),
        "passages[0].text: expected a string, got null",
    ),
    (
        "too many passages",
        nim_body(passages=[{"text": "x"}] * 513),
        "passages: at most 512 passages are allowed per request, got 513",
    ),
    (
        "unknown field top_n",
        nim_body(top_n=3),
        "top_n: unknown field, expected one of model, query, passages, truncate",
    ),
    (
        "truncate unknown",
        nim_body(truncate="START"),
        'truncate: expected one of NONE, END, got "START"',
    ),
    ("truncate lowercase", nim_body(truncate="end"), "truncate: expected one of NONE, END"),
    ("truncate number", nim_body(truncate=1), "truncate: expected one of NONE, END, got integer"),
    # The contract's truncate is a string enum: null is not one of its values.
    ("truncate null", nim_body(truncate=None), "truncate: expected one of NONE, END, got null"),
]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [pytest.param(body, fragment, id=name) for name, body, fragment in NIM_REFUSALS],
)
def test_ranking_refuses_invalid_requests(client: httpx.Client, body: Any, fragment: str) -> None:
    assert_nim_error(client.post("/ranking", json=body), 400, fragment)


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b'{"model": "m",', b"\xff\xfe\x00garbage", b"[" * 100_000]
)
def test_ranking_refuses_a_body_that_is_not_json(client: httpx.Client, raw: bytes) -> None:
    reply = client.post("/ranking", content=raw, headers={"content-type": "application/json"})
    assert_nim_error(reply, 400, "Request body is not valid JSON")


def test_max_passages_is_configurable(server: RankingServer, client: httpx.Client) -> None:
    server.configure(max_passages=2)
    assert_nim_error(client.post("/ranking", json=nim_body()), 400, "at most 2 passages")


# --------------------------------------------------------------------------- Cohere / Jina /rerank


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_rerank_paths_answer_in_the_cohere_shape(server: RankingServer, path: str) -> None:
    reply = httpx.post(server.base_url + path, json=rerank_body())
    assert reply.status_code == 200
    body = reply.json()
    assert body["model"] == "rerank-test"
    results = body["results"]
    assert [r["index"] for r in results] == [2, 0, 1]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    assert body["usage"]["total_tokens"] > 0


def test_rerank_score_is_the_sigmoid_of_the_nim_logit(client: httpx.Client) -> None:
    logits = {
        r["index"]: r["logit"] for r in client.post("/ranking", json=nim_body()).json()["rankings"]
    }
    results = client.post("/rerank", json=rerank_body()).json()["results"]
    for result in results:
        assert result["relevance_score"] == sigmoid(logits[result["index"]])


def test_rerank_top_n_cuts_the_results(client: httpx.Client) -> None:
    results = client.post("/rerank", json=rerank_body(top_n=2)).json()["results"]
    assert [r["index"] for r in results] == [2, 0]
    everything = client.post("/rerank", json=rerank_body(top_n=50)).json()["results"]
    assert len(everything) == 3


def test_rerank_returns_documents_only_when_asked(client: httpx.Client) -> None:
    results = client.post("/rerank", json=rerank_body(return_documents=True)).json()["results"]
    assert all(r["document"]["text"] == SEED_PASSAGES[r["index"]] for r in results)
    results = client.post("/rerank", json=rerank_body(return_documents=False)).json()["results"]
    assert all("document" not in r for r in results)


def test_rerank_accepts_text_objects_and_ignores_unknown_fields(client: httpx.Client) -> None:
    body = rerank_body(
        documents=[{"text": SEED_PASSAGES[0]}, SEED_PASSAGES[1], {"text": SEED_PASSAGES[2]}],
        truncate="END",
        max_chunks_per_doc=10,
        rank_fields=["text"],
    )
    reply = client.post("/rerank", json=body)
    assert reply.status_code == 200
    assert reply.json()["results"][0]["index"] == 2


def test_rerank_without_model_reports_the_served_model(client: httpx.Client) -> None:
    body = {"query": "memory", "documents": ["memory"]}
    assert client.post("/rerank", json=body).json()["model"] == "nimrank/lexical-bm25"


def test_rerank_cuts_long_documents_instead_of_refusing(
    server: RankingServer, client: httpx.Client
) -> None:
    server.configure(max_passage_tokens=5)
    body = rerank_body(documents=[" ".join(["memory"] * 50)], return_documents=True)
    reply = client.post("/rerank", json=body)
    assert reply.status_code == 200
    assert reply.json()["results"][0]["document"]["text"] == " ".join(["memory"] * 5)


RERANK_REFUSALS: list[tuple[str, Any, str]] = [
    ("array body", ["a"], "body must be a JSON object"),
    ("query missing", {"documents": ["a"]}, "query is required"),
    ("query not a string", rerank_body(query={"text": "a"}), "query must be a string, got object"),
    ("query empty", rerank_body(query="  "), "query must not be empty"),
    ("documents missing", {"query": "a"}, "documents is required"),
    ("documents not a list", rerank_body(documents="a"), "documents must be an array"),
    ("documents empty", rerank_body(documents=[]), "list of documents must not be empty"),
    ("document a number", rerank_body(documents=["a", 5]), "documents[1] must be a string"),
    ("document without text", rerank_body(documents=[{"title": "a"}]), "documents[0] must be"),
    ("top_n a string", rerank_body(top_n="2"), "top_n must be an integer, got string"),
    ("top_n a boolean", rerank_body(top_n=True), "top_n must be an integer, got boolean"),
    ("top_n zero", rerank_body(top_n=0), "top_n must be at least 1"),
    ("return_documents a string", rerank_body(return_documents="yes"), "must be a boolean"),
    ("model a number", rerank_body(model=5), "model must be a string"),
    (
        "too many documents",
        rerank_body(documents=["a"] * 1001),
        "at most 1000 are allowed, got 1001",
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [pytest.param(body, fragment, id=name) for name, body, fragment in RERANK_REFUSALS],
)
def test_rerank_refuses_invalid_requests(client: httpx.Client, body: Any, fragment: str) -> None:
    reply = client.post("/rerank", json=body)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    payload = reply.json()
    assert set(payload) == {"message"}
    assert payload["message"].startswith("invalid request: ")
    assert fragment in payload["message"]


def test_rerank_refuses_a_body_that_is_not_json(client: httpx.Client) -> None:
    reply = client.post("/rerank", content=b"query=a")
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["message"]


# ----------------------------------------------------------------------- models, health, routing


def test_models_lists_the_lexical_stand_in(client: httpx.Client) -> None:
    reply = client.get("/models")
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    model, vlm = body["data"]
    assert model["id"] == "nimrank/lexical-bm25"
    assert model["object"] == "model"
    assert model["owned_by"] == "nimrank"
    assert model["type"] == "ranking"
    assert model["description"] == MODEL_DESCRIPTION
    assert "lexical bm25 stand-in" in model["description"].lower()
    assert "not from a neural" in model["description"]
    # The image-and-text model, labelled as a stand-in too.
    assert vlm["id"] == "nvidia/llama-nemotron-rerank-vl-1b-v2"
    assert vlm["type"] == "ranking-vlm"
    assert "stand-in" in vlm["description"]


def test_models_lists_no_vlm_model_when_told_not_to() -> None:
    with RankingServer(vlm_model=None) as server:
        ids = [model["id"] for model in httpx.get(f"{server.url}/models").json()["data"]]
    assert ids == ["nimrank/lexical-bm25"]


def test_models_lists_the_configured_id() -> None:
    with RankingServer(model="local/test-model") as server:
        assert httpx.get(f"{server.url}/models").json()["data"][0]["id"] == "local/test-model"


@pytest.mark.parametrize(("path", "status"), [("/health/ready", "ready"), ("/health/live", "live")])
def test_health_endpoints_answer(client: httpx.Client, path: str, status: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 200
    assert reply.json() == {"status": status}


def test_query_strings_and_trailing_slashes_are_ignored(client: httpx.Client) -> None:
    assert client.get("/health/ready?verbose=1").status_code == 200
    assert client.get("/models/").status_code == 200


def test_head_has_headers_but_no_body(client: httpx.Client) -> None:
    reply = client.head("/health/ready")
    assert reply.status_code == 200
    assert reply.content == b""
    assert int(reply.headers["content-length"]) == len(b'{"status":"ready"}')


def test_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    assert_nim_error(client.post("/rankings", json=nim_body()), 404, "Not found: /v1/rankings")
    assert_nim_error(client.get("/"), 404, "Not found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/ranking", "POST"),
        ("PUT", "/ranking", "POST"),
        ("DELETE", "/models", "GET, HEAD"),
        ("POST", "/health/ready", "GET, HEAD"),
        ("PURGE", "/ranking", "POST"),
    ],
)
def test_wrong_method_is_a_json_405(
    client: httpx.Client, method: str, path: str, allow: str
) -> None:
    reply = client.request(method, path, content=b'{"x": 1}')
    assert_nim_error(reply, 405, f"Method {method} not allowed")
    assert reply.headers["allow"] == allow


def test_wrong_method_on_rerank_uses_the_cohere_error_shape(client: httpx.Client) -> None:
    reply = client.get("/rerank")
    assert reply.status_code == 405
    assert set(reply.json()) == {"message"}


# --------------------------------------------------------------------------- HTTP plumbing


def test_keep_alive_reuses_one_connection_even_after_errors(
    server: RankingServer, client: httpx.Client
) -> None:
    assert client.post("/ranking", json=nim_body()).status_code == 200
    assert client.post("/ranking", json=nim_body(passages=[])).status_code == 400
    assert client.get("/nowhere").status_code == 404
    assert client.post("/ranking", json=nim_body()).status_code == 200
    peers = {request.peer for request in server.requests}
    assert len(server.requests) == 4
    assert len(peers) == 1


def _raw_exchange(server: RankingServer, payload: bytes) -> bytes:
    """Send raw bytes, read until the server closes or 2 s pass."""
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_pipelined_requests_each_get_an_exact_content_length(server: RankingServer) -> None:
    body = json.dumps(nim_body(passages=[])).encode()
    request = (
        b"POST /v1/ranking HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    closing = b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = _raw_exchange(server, request + closing)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert json.loads(rest[:length])["status"] == 400
    second = rest[length:]
    assert second.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in second
    assert second.endswith(b'{"status":"live"}')


def test_chunked_request_bodies_are_read(server: RankingServer) -> None:
    body = json.dumps(nim_body()).encode()
    half = len(body) // 2
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
    )
    raw = _raw_exchange(
        server,
        b"POST /v1/ranking HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["rankings"][0]["index"] == 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Content-Length: banana\r\n", b"400"),
        (b"Content-Length: -5\r\n", b"400"),
        (b"Content-Length: 999999999999\r\n", b"413"),
        (b"Transfer-Encoding: chunked\r\n", b"400"),
    ],
)
def test_unreadable_bodies_get_a_json_error_and_a_closed_connection(
    server: RankingServer, headers: bytes, status: bytes
) -> None:
    raw = _raw_exchange(
        server, b"POST /v1/ranking HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nzz\r\n\r\n"
    )
    assert raw.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in raw
    assert b'"object":"error"' in raw


def test_malformed_request_lines_get_json_not_html(server: RankingServer) -> None:
    for request in [b"NONSENSE\r\n\r\n", b"GET /v1/models HTTP/9.9\r\n\r\n"]:
        raw = _raw_exchange(server, request)
        assert raw.startswith(b"HTTP/1.1 4"), raw
        assert b"application/json" in raw
        assert b"<html" not in raw.lower()


def test_parallel_requests_are_served_at_once() -> None:
    latency = 0.2
    with (
        RankingServer(latency_ms=latency * 1000) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        replies: list[int] = []

        def call() -> None:
            replies.append(http.post("/ranking", json=nim_body()).status_code)

        threads = [threading.Thread(target=call) for _ in range(8)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert replies == [200] * 8
        # Served one by one this would take 8 x 200 ms; allow a slow machine 4x.
        assert elapsed < 4 * latency
        assert server.max_in_flight >= 2


def test_per_passage_cost_adds_up(server: RankingServer, client: httpx.Client) -> None:
    server.configure(latency_ms=20, per_passage_ms=4)
    passages = [{"text": f"memory {i}"} for i in range(50)]
    started = time.perf_counter()
    assert client.post("/ranking", json=nim_body(passages=passages)).status_code == 200
    assert time.perf_counter() - started >= 0.2 * 0.95  # 20 ms + 50 x 4 ms


def test_refusals_and_health_skip_the_simulated_latency(
    server: RankingServer, client: httpx.Client
) -> None:
    server.configure(latency_ms=5000)
    started = time.perf_counter()
    assert client.post("/ranking", json=nim_body(passages=[])).status_code == 400
    assert client.get("/health/ready").status_code == 200
    assert time.perf_counter() - started < 2.5


# --------------------------------------------------------------------------- request log, faults


def test_request_log_records_method_path_headers_and_body(
    server: RankingServer, client: httpx.Client
) -> None:
    client.post(
        "/ranking?trace=1",
        json=nim_body(),
        headers={"Authorization": "Bearer nvapi-secret", "X-Api-Key": "k-123", "X-Trace": "t"},
    )
    client.post("/ranking", content=b"not json")
    first, second = server.requests
    assert first.method == "POST"
    assert first.path == "/v1/ranking"
    assert first.status == 200
    assert first.body == nim_body()
    assert first.headers["x-trace"] == "t"
    assert first.headers["authorization"] == "Bearer ***"
    assert first.headers["x-api-key"] == "***"
    assert "nvapi-secret" not in repr(first)
    assert first.authorization_is("Bearer nvapi-secret")
    assert not first.authorization_is("Bearer other")
    assert first.started <= first.finished
    assert second.body is None
    assert second.status == 400
    assert not second.authorization_is("Bearer nvapi-secret")


def test_a_request_is_in_the_log_by_the_time_its_reply_arrives(
    server: RankingServer, client: httpx.Client
) -> None:
    for count in range(1, 41):
        client.post("/ranking", json=nim_body(query={"text": f"query {count}"}))
        assert len(server.requests) == count
        assert server.requests[-1].body["query"]["text"] == f"query {count}"
    # Sequential requests never overlap, even though the reply is written last.
    assert server.max_in_flight == 1


def test_request_log_keeps_only_the_most_recent() -> None:
    with RankingServer(log_size=3) as server, httpx.Client(base_url=server.url) as http:
        for i in range(5):
            http.get(f"/health/live?i={i}")
        assert len(server.requests) == 3
        server.reset()
        assert server.requests == []


def test_log_requests_prints_one_line_per_request_without_secrets() -> None:
    stream = io.StringIO()
    with RankingServer(log_requests=True, log_stream=stream) as server:
        httpx.post(
            f"{server.url}/ranking", json=nim_body(), headers={"Authorization": "Bearer s3cret"}
        )
        httpx.get(f"{server.url}/health/ready")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("nimrank serve: POST /v1/ranking -> 200 (3 passages")
    assert lines[1].startswith("nimrank serve: GET /v1/health/ready -> 200")
    assert "s3cret" not in stream.getvalue()


def test_injected_faults_answer_the_next_requests_then_stop(
    server: RankingServer, client: httpx.Client
) -> None:
    server.inject_fault(503, headers={"Retry-After": "0"}, times=2)
    assert client.get("/health/ready").status_code == 200  # GETs are not affected
    for _ in range(2):
        reply = client.post("/ranking", json=nim_body())
        assert reply.status_code == 503
        assert reply.headers["retry-after"] == "0"
        assert reply.json()["status"] == 503
    assert client.post("/ranking", json=nim_body()).status_code == 200
    assert [r.status for r in server.requests] == [200, 503, 503, 200]


def test_injected_faults_can_carry_any_body_and_target_one_path(
    server: RankingServer, client: httpx.Client
) -> None:
    server.inject_fault(200, body=b"{not json", path="/v1/rerank")
    server.inject_fault(200, body={"rankings": [{"index": 9, "logit": 1.0}]}, path="/v1/ranking")
    assert client.post("/ranking", json=nim_body()).json() == {
        "rankings": [{"index": 9, "logit": 1.0}]
    }
    assert client.post("/rerank", json=rerank_body()).content == b"{not json"
    assert client.post("/rerank", json=rerank_body()).status_code == 200


# --------------------------------------------------------------------------- lifecycle


def test_url_points_at_v1_on_loopback(server: RankingServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.port > 0


def test_port_is_unknown_before_start() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = RankingServer().port


def test_stop_closes_kept_alive_connections_and_is_idempotent() -> None:
    server = RankingServer().start()
    http = httpx.Client(base_url=server.url, timeout=2)
    assert http.get("/health/live").status_code == 200
    server.stop()
    server.stop()
    with pytest.raises(httpx.TransportError):
        http.get("/health/live")
    http.close()
    server.start()  # a stopped server can start again (on a new free port)
    try:
        assert httpx.get(f"{server.url}/health/live").status_code == 200
    finally:
        server.stop()


# --------------------------------------------------------------------------- command line


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*args, "serve", "--port", "0", "--latency-ms", "1"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    found = URL_LINE.search(line)
    if found is None:
        process.kill()
        pytest.fail(f"no listening line from {args}: {line!r}")
    return process, found.group(1)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_python_m_nimrank_serve_answers_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    process, url = _start_cli(sys.executable, "-m", "nimrank")
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health/ready", timeout=5).json() == {"status": "ready"}
        assert httpx.post(f"{url}/ranking", json=nim_body(), timeout=5).status_code == 200
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        rest = process.stderr.read()
        assert "nimrank serve: stopped" in rest
        assert "Traceback" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_nimrank_console_script_serves() -> None:
    script = Path(sys.executable).with_name("nimrank")
    if not script.exists():
        pytest.skip("the nimrank console script is not installed next to this python")
    process, url = _start_cli(str(script))
    try:
        assert httpx.get(f"{url}/models", timeout=5).json()["data"][0]["id"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve", "--port", "70000"],
        ["serve", "--latency-ms", "-1"],
        ["serve", "--per-passage-ms", "nan"],
        ["serve", "--latency-ms", "inf"],
        ["serve", "--max-passages", "0"],
        ["bogus"],
    ],
)
def test_cli_refuses_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_cli_serve_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2  # a usage error (issue 14), not a bug
    assert f"nimrank serve: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# --------------------------------------------------------------------------- hostile input
# Issue 11, items 17-20: each of these was accepted (or unbounded) by the old server.


def _exchange_half_closed(server: RankingServer, payload: bytes) -> bytes:
    """Send raw bytes, then close our sending side (EOF), and read the whole answer."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _chunked_post(size_line: bytes, body: bytes) -> bytes:
    return (
        b"POST /v1/ranking HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size_line
        + b"\r\n"
        + body
        + b"\r\n0\r\n\r\n"
    )


@pytest.mark.parametrize("spelling", ["-1", "0x{n:x}", "{n_under}", "+{n:x}", " {n:x}"])
def test_chunk_sizes_are_plain_hex_digits_only(server: RankingServer, spelling: str) -> None:
    # A valid body behind the bad size line: a lenient parser (int(x, 16), or
    # read(-1) reading to EOF) would have ranked it.
    body = json.dumps(nim_body()).encode()
    n_under = "_".join(f"{len(body):x}")
    size_line = spelling.format(n=len(body), n_under=n_under).encode()
    raw = _exchange_half_closed(server, _chunked_post(size_line, body))
    assert raw.startswith(b"HTTP/1.1 400"), raw[:80]
    assert b"Malformed chunked" in raw
    assert b"Connection: close" in raw


def test_a_chunk_without_its_closing_crlf_is_refused(server: RankingServer) -> None:
    body = json.dumps(nim_body()).encode()
    payload = _chunked_post(f"{len(body) - 2:x}".encode(), body)  # size 2 short
    assert _exchange_half_closed(server, payload).startswith(b"HTTP/1.1 400")


def test_a_chunked_body_past_the_limit_is_refused_before_it_is_sent(server: RankingServer) -> None:
    payload = b"POST /v1/ranking HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4000001\r\n"
    assert _raw_exchange(server, payload).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: xchunkedx\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 0x5\r\n",
        b" Content-Length: 5\r\n",
        b"Content-Length : 5\r\n",
    ],
)
def test_ambiguous_framing_is_a_400_and_nothing_smuggled_runs(
    server: RankingServer, framing: bytes
) -> None:
    smuggled = b"GET /v1/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    payload = b"POST /v1/ranking HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n" + smuggled
    raw = _exchange_half_closed(server, payload)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:80]
    assert raw.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert all(request.path != "/v1/health/live" for request in server.requests)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/models HTTP/1.1\nHost: x\n\n",  # bare LF line endings
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  # obsolete line folding
        b"GET /v1/models HTTP/1.1\r\nHost: x\x00y\r\n\r\n",  # a NUL in a value
        b"GET /v1/mo dels HTTP/1.1\r\n\r\n",
        b"GET http://elsewhere/v1/models HTTP/1.1\r\n\r\n",
        b"GET /v1/models HTTP/2.0\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused(server: RankingServer, head: bytes) -> None:
    raw = _exchange_half_closed(server, head)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:80]
    assert b'"status":400' in raw


def test_a_huge_body_of_tiny_values_is_refused_before_decoding() -> None:
    # 8 MiB of "[]," would be 2.8 million lists once decoded (the 63 MiB case of
    # the issue was 1.7 GB); the scan refuses it without building one.
    body = b'{"model":"m","query":{"text":"q"},"passages":[' + b"[]," * ((8 << 20) // 3) + b"[]]"
    with RankingServer() as server:
        started = time.monotonic()
        reply = httpx.post(f"{server.url}/ranking", content=body, timeout=30)
        elapsed = time.monotonic() - started
    assert_nim_error(reply, 413, "JSON values")
    assert elapsed < 10


def test_a_large_body_with_commas_inside_strings_is_still_served(client: httpx.Client) -> None:
    # Brackets and commas in passage texts are not JSON values: 2 MiB of them pass.
    text = "GPU, memory, [bandwidth], {H100}, " * 60_000
    reply = client.post("/ranking", json=nim_body(passages=[{"text": text}, {"text": "cake"}]))
    assert reply.status_code == 200, reply.text[:200]
    assert [r["index"] for r in reply.json()["rankings"]] == [0, 1]


def test_idle_connections_are_closed_after_idle_timeout() -> None:
    with RankingServer(idle_timeout=0.3) as server:
        idle = socket.create_connection((server.host, server.port), timeout=5)
        started = time.monotonic()
        with idle:
            assert idle.recv(1) == b""  # the server closed it
        assert 0.2 < time.monotonic() - started < 3


def test_at_the_connection_cap_the_longest_idle_connection_makes_room() -> None:
    with RankingServer(max_connections=2) as server:
        first = socket.create_connection((server.host, server.port), timeout=5)
        time.sleep(0.05)
        second = socket.create_connection((server.host, server.port), timeout=5)
        time.sleep(0.05)
        try:
            # Two idle connections fill the cap; a real request still gets in.
            reply = httpx.get(f"{server.url}/health/ready", timeout=5)
            assert reply.status_code == 200
            assert first.recv(1) == b""  # the oldest idle one was closed for it
        finally:
            first.close()
            second.close()


def test_at_the_connection_cap_with_every_connection_busy_a_new_one_gets_a_503() -> None:
    with RankingServer(max_connections=2) as server:
        server.inject_delay(1.0, times=2)
        results: list[int] = []

        def slow_call() -> None:
            results.append(httpx.post(f"{server.url}/ranking", json=nim_body()).status_code)

        threads = [threading.Thread(target=slow_call) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        reply = httpx.get(f"{server.url}/health/ready", timeout=5)
        for thread in threads:
            thread.join()
    assert reply.status_code == 503
    assert "Too many connections" in reply.json()["detail"]
    assert results == [200, 200]


def test_log_requests_escapes_control_characters_in_the_path() -> None:
    stream = io.StringIO()
    with RankingServer(log_requests=True, log_stream=stream) as server:
        raw = _raw_exchange(server, b"GET /v1/\x1b[2J\x1b]0;owned\x07 HTTP/1.1\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400")
    line = stream.getvalue()
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "/v1/\\x1b[2J\\x1b]0;owned\\x07" in line


# --------------------------------------------------------------------------- capacity


def _concurrent_posts(server: RankingServer, count: int) -> list[int]:
    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            replies = await asyncio.gather(
                *(http.post("/ranking", json=nim_body()) for _ in range(count))
            )
        return [reply.status_code for reply in replies]

    return asyncio.run(run())


def test_capacity_serves_n_requests_at_once_and_queues_the_rest() -> None:
    with RankingServer(capacity=2, latency_ms=100) as server:
        started = time.monotonic()
        statuses = _concurrent_posts(server, 6)
        elapsed = time.monotonic() - started
        assert statuses == [200] * 6
        assert server.max_in_service == 2  # never more in service than the capacity
        assert server.max_in_flight > 2  # the others waited for a slot
    assert elapsed >= 0.29  # three rounds of 100 ms, not one


def test_without_capacity_every_request_is_served_at_once() -> None:
    with RankingServer(latency_ms=100) as server:
        assert _concurrent_posts(server, 6) == [200] * 6
        assert server.max_in_service == 6


def test_capacity_leaves_health_probes_alone() -> None:
    with RankingServer(capacity=1, latency_ms=500) as server:
        server.inject_delay(0.0)  # any rule: the queue is the point
        slow = threading.Thread(target=lambda: _concurrent_posts(server, 1))
        slow.start()
        time.sleep(0.1)
        started = time.monotonic()
        assert httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.3
        slow.join()


@pytest.mark.parametrize("capacity", [0, -1, True])
def test_capacity_must_be_positive(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        RankingServer(capacity=capacity)


def test_cli_serve_takes_capacity() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "nimrank", "serve", "--port=0", "--capacity=1", "--latency-ms=200"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found = URL_LINE.search(process.stderr.readline())
    assert found is not None
    url = found.group(1)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:

            def call() -> None:
                http.post("/ranking", json=nim_body())

            threads = [threading.Thread(target=call) for _ in range(2)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert time.monotonic() - started >= 0.39  # one after the other
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


# --------------------------------------------------------------------------- fault rules


def test_a_trickled_reply_arrives_whole_one_byte_at_a_time(server: RankingServer) -> None:
    server.add_rule(faults.trickled(0.002, faults.respond(200, {"rankings": []})), times=1)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/ranking HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        reads: list[bytes] = []
        while not b"".join(reads).endswith(b'{"rankings": []}'):
            chunk = sock.recv(65536)
            assert chunk
            reads.append(chunk)
    assert len(reads) > 20  # it came in pieces, not in one send


def test_rules_match_in_order_and_count_their_uses(server: RankingServer) -> None:
    server.add_rule(faults.error(503, "first"), match=faults.nth(1))
    rule = server.add_rule(faults.error(429, "limited"), times=2)
    statuses = [httpx.post(f"{server.url}/ranking", json=nim_body()).status_code for _ in range(4)]
    assert statuses == [503, 429, 429, 200]
    assert rule.used == 2
    assert server.pending_faults == 0


# --------------------------------------------------------------------------- VLM passages

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
OTHER = b"\xff\xd8\xff another image"


def _data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _vlm_body(passages: list[dict[str, Any]], model: str = VLM_MODEL_ID) -> dict[str, Any]:
    return {"model": model, "query": {"text": "memory bandwidth"}, "passages": passages}


def test_the_vlm_model_scores_text_image_and_both(client: httpx.Client) -> None:
    passages = [
        {"image": _data_url(PNG)},
        {"text": "memory bandwidth", "image": _data_url(OTHER, "jpeg")},
        {"text": "memory bandwidth"},
    ]
    reply = client.post("/ranking", json=_vlm_body(passages))
    assert reply.status_code == 200, reply.text
    logits = {r["index"]: r["logit"] for r in reply.json()["rankings"]}
    text_only = score("memory bandwidth", "memory bandwidth")
    assert logits[0] == image_logit(PNG)  # image only: the image term alone
    assert logits[1] == text_only + image_logit(OTHER)
    assert logits[2] == text_only
    assert -1 <= image_logit(PNG) < 1


def test_image_scores_are_stable_and_differ_between_images(client: httpx.Client) -> None:
    body = _vlm_body([{"image": _data_url(PNG)}, {"image": _data_url(OTHER)}])
    first = client.post("/ranking", json=body).json()
    assert client.post("/ranking", json=body).json() == first
    assert image_logit(PNG) != image_logit(OTHER)


@pytest.mark.parametrize(
    ("passage", "fragment"),
    [
        ({"image": "https://example.com/cat.png"}, "base64 data URL"),
        ({"image": "data:text/plain;base64,aGk="}, "base64 data URL"),
        ({"image": "data:image/png;base64,@@@"}, "base64 data URL"),
        ({"image": "data:image/png;base64,aGk"}, "not valid base64"),
        ({"image": 7}, "expected a string"),
        ({"image": _data_url(PNG), "text": None}, "expected a string, got null"),
        ({}, "field required (or image)"),
    ],
)
def test_bad_image_passages_are_refused(
    client: httpx.Client, passage: dict[str, Any], fragment: str
) -> None:
    reply = client.post("/ranking", json=_vlm_body([passage]))
    assert_nim_error(reply, 400, fragment)


def test_a_text_model_refuses_images_naming_the_vlm_model(client: httpx.Client) -> None:
    reply = client.post("/ranking", json=_vlm_body([{"image": _data_url(PNG)}], model="m"))
    assert_nim_error(reply, 400, "does not take images")
    assert VLM_MODEL_ID in reply.json()["detail"]


def test_the_cohere_route_refuses_image_documents_with_a_422(client: httpx.Client) -> None:
    documents = [{"text": "memory", "image": _data_url(PNG)}]
    reply = client.post("/rerank", json=rerank_body(documents=documents))
    assert reply.status_code == 422
    assert "text only" in reply.json()["message"]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_with_few_file_descriptors_idle_connections_neither_starve_requests_nor_spin() -> None:
    # The server may open 100 descriptors; 200 idle clients connect. It must keep
    # answering real requests and must not burn CPU in a failing accept loop.
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100)); "
        "from nimrank.cli import main; main(['serve', '--port', '0'])"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    found = URL_LINE.search(process.stderr.readline())
    assert found is not None, "the server did not start"
    url = found.group(1)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        cpu_before = _cpu_seconds(process.pid)
        time.sleep(1.0)
        assert _cpu_seconds(process.pid) - cpu_before < 0.3  # no spinning accept loop
        reply = httpx.post(f"{url}/ranking", json=nim_body(), timeout=10)
        assert reply.status_code == 200
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_health_probes_do_not_count_as_in_service() -> None:
    with RankingServer(capacity=1, latency_ms=300) as server:
        slow = threading.Thread(target=lambda: _concurrent_posts(server, 1))
        slow.start()
        time.sleep(0.1)
        for _ in range(3):
            assert httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200
        slow.join()
        assert server.max_in_service == 1
