"""Every way a ranking service can fail, and what each client makes of it.

Each test runs with ``RankingClient`` and ``AsyncRankingClient`` (``client_kind``) and,
where the wire format matters (error bodies, response shapes), with both protocols.
Retries never sleep (``fast_retries``) except in the tests that prove ``Retry-After``
is honoured and that a ``202 Accepted`` is polled. Every client carries a fake key,
and every error is checked not to mention it.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from typing import Any

import pytest

import faultserver as fs
import nimrank.client
from faultserver import EitherClient, FaultServer
from nimrank import (
    AuthenticationError,
    BadRequestError,
    RankingConnectionError,
    RankingError,
    RankingTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
)

MakeClient = Callable[..., EitherClient]

FAKE_KEY = "nvapi-fake-0000-fault-tests-not-a-real-key"
QUERY = "What is the GPU memory bandwidth of H100 SXM?"
PASSAGES = [
    "The Hopper GPU is paired with the Grace CPU over a 900GB/s interconnect.",
    "A100 provides up to 20X higher performance over the prior generation.",
    "Accelerated servers with H100 deliver 3 TB/s of memory bandwidth per GPU.",
]
# Nine distinct passages in batches of three; passage 4 (batch 2) is the one
# the fault server is told to answer badly.
NINE = [f"passage {i} about GPU memory" for i in range(9)]
NINE[4] = "passage 4 about GPU memory, POISON"


@pytest.fixture
def connect(
    fault_server: FaultServer, make_client: MakeClient, fast_retries: RetryPolicy
) -> Callable[..., EitherClient]:
    """A client of the test's kind for the fault server: fake key, instant retries."""

    def build(protocol: str = "nim", **options: Any) -> EitherClient:
        settings: dict[str, Any] = {
            "base_url": fault_server.url,
            "protocol": protocol,
            "api_key": FAKE_KEY,
            "retry_policy": fast_retries,
            "max_retries": 3,
        }
        return make_client(**{**settings, **options})

    return build


def assert_no_key(error: BaseException) -> None:
    """Neither the error nor anything chained to it mentions the key or its scheme."""
    seen: BaseException | None = error
    while seen is not None:
        text = f"{seen} {seen!r} {getattr(seen, 'url', '')}"
        assert FAKE_KEY not in text
        assert "Bearer" not in text
        seen = seen.__cause__ or seen.__context__


def count_poisoned(server: FaultServer) -> int:
    return sum("POISON" in " ".join(r.passages) for r in server.ranking_requests)


# -- error statuses --------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_raises_authentication_error_without_retrying(
    status: int, fault_server: FaultServer, connect: Callable[..., EitherClient], wire_protocol: str
) -> None:
    fault_server.add_rule(fs.error(status, "Authentication failed: invalid API key"))
    client = connect(wire_protocol)

    with pytest.raises(AuthenticationError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert caught.value.status_code == status
    assert caught.value.server_message == "Authentication failed: invalid API key"
    assert caught.value.passages == (0, 1, 2)
    assert len(fault_server.requests) == 1
    assert_no_key(caught.value)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_bad_request_carries_the_server_message_and_is_not_retried(
    status: int, fault_server: FaultServer, connect: Callable[..., EitherClient], wire_protocol: str
) -> None:
    message = f"passages[1].text: input too long for the model (HTTP {status} case)"
    fault_server.add_rule(fs.error(status, message))
    client = connect(wire_protocol)

    with pytest.raises(BadRequestError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert caught.value.status_code == status
    assert caught.value.server_message == message
    assert message in str(caught.value)
    assert (
        caught.value.url
        == f"{fault_server.url}/{'ranking' if wire_protocol == 'nim' else 'rerank'}"
    )
    assert len(fault_server.requests) == 1
    assert_no_key(caught.value)


async def test_openai_style_error_body_gives_its_message(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    # The LiteLLM proxy wraps errors as {"error": {"message": ...}}.
    fault_server.add_rule(fs.error(400, "model nvidia-rerank not found", family="openai"))

    with pytest.raises(BadRequestError) as caught:
        await connect("cohere").rank(QUERY, PASSAGES)

    assert caught.value.server_message == "model nvidia-rerank not found"


async def test_rate_limit_raises_after_every_retry(
    fault_server: FaultServer, connect: Callable[..., EitherClient], wire_protocol: str
) -> None:
    fault_server.add_rule(fs.rate_limited("0"))
    client = connect(wire_protocol, max_retries=2)

    with pytest.raises(RateLimitError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert caught.value.status_code == 429
    assert "after 2 retries" in str(caught.value)
    assert len(fault_server.requests) == 3
    assert_no_key(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_error_is_retried_then_raised(
    status: int, fault_server: FaultServer, connect: Callable[..., EitherClient], wire_protocol: str
) -> None:
    fault_server.add_rule(fs.error(status, "upstream inference failed"))
    client = connect(wire_protocol, max_retries=2)

    with pytest.raises(ServerError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert caught.value.status_code == status
    assert caught.value.server_message == "upstream inference failed"
    assert len(fault_server.requests) == 3
    assert_no_key(caught.value)


@pytest.mark.parametrize(
    "transient",
    [fs.rate_limited("0"), fs.error(503, "warming up"), fs.drop_connection()],
    ids=["429", "503", "dropped"],
)
async def test_transient_failure_then_success_gives_the_full_ranking(
    transient: fs.Action,
    fault_server: FaultServer,
    connect: Callable[..., EitherClient],
    wire_protocol: str,
) -> None:
    client = connect(wire_protocol, max_batch_size=3)
    clean = await client.rank(QUERY, NINE)
    fault_server.reset()
    fault_server.add_rule(transient, match=fs.passages_include("POISON"), times=1)

    assert await client.rank(QUERY, NINE) == clean
    assert len(fault_server.ranking_requests) == 4  # three batches, one of them twice


# -- transport failures ------------------------------------------------------------------


async def test_slow_reply_raises_timeout_error_after_retrying(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    fault_server.add_rule(fs.slow(5.0))
    client = connect(timeout=0.2, max_retries=1)

    with pytest.raises(RankingTimeoutError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert "0.2s" in str(caught.value)
    assert caught.value.passages == (0, 1, 2)
    assert len(fault_server.requests) == 2
    assert_no_key(caught.value)


async def test_dropped_connection_raises_connection_error_after_retrying(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    fault_server.add_rule(fs.drop_connection())
    client = connect(max_retries=2)

    with pytest.raises(RankingConnectionError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert "after 2 retries" in str(caught.value)
    assert len(fault_server.requests) == 3
    assert_no_key(caught.value)


async def test_closed_port_raises_connection_error(
    make_client: MakeClient, fast_retries: RetryPolicy
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=FAKE_KEY,
        retry_policy=fast_retries,
        max_retries=1,
    )

    with pytest.raises(RankingConnectionError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert f"127.0.0.1:{port}/v1/ranking" in str(caught.value)
    assert_no_key(caught.value)


# -- bodies that cannot be trusted -------------------------------------------------------

MALFORMED = {
    "not-json": (fs.raw_body('{"rankings": [{"index": 0, "lo'), "Body starts"),
    "wrong-shape": (fs.wrong_shape(), "expected a list under"),
    "missing-index": (fs.missing_index(), "have no score"),
    "repeated-index": (fs.repeated_index(), "more than once"),
    "index-out-of-range": (fs.index_out_of_range(), "out of range"),
    "bool-index": (fs.bool_index(), "not an integer"),
    "nan-score": (fs.nan_score(), "not finite"),
    "repeated-key": (
        fs.raw_body('{"rankings": [{"index": 0, "logit": 1, "index": 1}], "results": []}'),
        "appears more than once",
    ),
    "deep-nesting": (fs.raw_body("[" * 100_000), "nested too deeply"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_body_names_the_failed_batch_and_is_not_retried(
    case: str, fault_server: FaultServer, connect: Callable[..., EitherClient], wire_protocol: str
) -> None:
    action, complaint = MALFORMED[case]
    fault_server.add_rule(action, match=fs.passages_include("POISON"))
    client = connect(wire_protocol, max_batch_size=3)

    with pytest.raises(ResponseFormatError) as caught:
        await client.rank(QUERY, NINE)

    assert "batch 2 of 3" in str(caught.value)
    assert complaint in str(caught.value)
    assert caught.value.passages == (3, 4, 5)
    assert count_poisoned(fault_server) == 1
    assert_no_key(caught.value)


@pytest.mark.parametrize(
    ("fatal", "raised"),
    [(fs.error(401, "invalid key"), AuthenticationError), (fs.nan_score(), ResponseFormatError)],
    ids=["401", "nan-score"],
)
async def test_a_batch_failing_for_good_stops_the_others_retrying(
    fatal: fs.Action,
    raised: type[RankingError],
    fault_server: FaultServer,
    connect: Callable[..., EitherClient],
) -> None:
    # Batch 1 keeps failing slowly (and would retry 20 times); batch 2 fails at once.
    passages = ["FLAKY one", "FLAKY two", "FATAL three", "FATAL four"]
    fault_server.add_rule(
        fs.delayed(0.05, fs.error(503, "busy")), match=fs.passages_include("FLAKY")
    )
    fault_server.add_rule(fatal, match=fs.passages_include("FATAL"))
    client = connect(max_batch_size=2, max_retries=20)

    with pytest.raises(raised) as caught:
        await client.rank(QUERY, passages)

    assert caught.value.passages == (2, 3)
    flaky = [r for r in fault_server.ranking_requests if "FLAKY one" in r.passages]
    assert len(flaky) <= 2


async def test_list_models_failure_names_no_passages(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    fault_server.add_rule(fs.error(403, "not entitled"), match=fs.path_endswith("/models"))

    with pytest.raises(AuthenticationError) as caught:
        await connect().list_models()

    assert caught.value.passages == ()
    assert "the model list" in str(caught.value)
    assert_no_key(caught.value)


@pytest.mark.parametrize(
    "body", ['"string"', '{"data": "abc"}', '{"data": [{"id": "a", "id": "b"}]}', "[" * 100_000]
)
async def test_a_model_list_of_the_wrong_shape_is_a_response_format_error(
    body: str, fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    fault_server.add_rule(fs.raw_body(body), match=fs.path_endswith("/models"))

    with pytest.raises(ResponseFormatError, match="Unusable model list"):
        await connect().list_models()


# -- waits that must really happen -------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_is_honoured(
    form: str, fault_server: FaultServer, make_client: MakeClient
) -> None:
    # No backoff of its own: only the server's Retry-After can make the client wait.
    policy = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=10)
    retry_after = "1" if form == "seconds" else fs.http_date(2)  # a date: 1 to 2 s away
    fault_server.add_rule(fs.rate_limited(retry_after), times=1)
    client = make_client(base_url=fault_server.url, retry_policy=policy)

    ranked = await client.rank(QUERY, PASSAGES)

    first, second = fault_server.requests
    assert second.started - first.started >= 0.9
    assert ranked[0].index == 2


async def test_accepted_request_is_polled_until_its_result_is_ready(
    fault_server: FaultServer, connect: Callable[..., EitherClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client polls NVCF's status URL; point it at the fault server instead.
    monkeypatch.setattr(nimrank.client, "nvcf_status_url", fault_server.status_url)
    fault_server.add_rule(fs.accepted(polls=2, request_id="req-42"), times=1)
    client = connect()
    # Only the hosted catalog is polled: stand the fault server in for it.
    client.client.endpoints = dataclasses.replace(client.client.endpoints, hosted=True)

    ranked = await client.rank(QUERY, PASSAGES)

    assert ranked[0].index == 2
    assert sorted(p.index for p in ranked) == [0, 1, 2]
    log = fault_server.requests
    assert [(r.method, r.path) for r in log] == [
        ("POST", "/v1/ranking"),
        ("GET", f"{fs.STATUS_PATH}req-42"),
        ("GET", f"{fs.STATUS_PATH}req-42"),
    ]
    # NVCF needs the key on the poll as well.
    assert all(r.authorization_is(f"Bearer {FAKE_KEY}") for r in log)


async def test_polling_gives_up_after_the_timeout_without_retrying(
    fault_server: FaultServer, connect: Callable[..., EitherClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nimrank.client, "nvcf_status_url", fault_server.status_url)
    # Still running at every poll the client has time for.
    fault_server.add_rule(fs.accepted(polls=1000, request_id="req-slow"), times=1)
    client = connect(timeout=0.5)
    client.client.endpoints = dataclasses.replace(client.client.endpoints, hosted=True)

    with pytest.raises(RankingTimeoutError, match="accepted"):
        await client.rank(QUERY, PASSAGES)

    assert [r.method for r in fault_server.requests].count("POST") == 1


async def test_accepted_answer_from_a_self_hosted_server_is_not_polled(
    fault_server: FaultServer, connect: Callable[..., EitherClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polling would send the key to NVCF because a server that is not NVIDIA's said so.
    monkeypatch.setattr(nimrank.client, "nvcf_status_url", fault_server.status_url)
    fault_server.add_rule(fs.accepted(polls=2, request_id="req-43"), times=1)
    client = connect()

    with pytest.raises(ResponseFormatError):
        await client.rank(QUERY, PASSAGES)

    assert [r.method for r in fault_server.requests] == ["POST"]


async def test_a_key_echoed_in_an_error_body_is_masked(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    fault_server.add_rule(fs.respond(400, {"detail": f"bad header: Bearer {FAKE_KEY}"}), times=1)
    client = connect()

    with pytest.raises(BadRequestError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert FAKE_KEY not in str(caught.value)
    assert FAKE_KEY not in caught.value.server_message
    assert "Bearer ***" in str(caught.value)


# -- redirects ---------------------------------------------------------------------------


async def test_a_redirect_is_not_followed_and_the_error_names_the_new_place(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    # httpx would strip only Authorization on a cross-origin redirect, so a proxy
    # token in extra_headers would travel on: nothing is sent to the new place.
    with FaultServer() as elsewhere:
        fault_server.add_rule(
            fs.respond(307, headers={"Location": f"{elsewhere.url}/ranking?key=s3cret"}),
            times=1,
        )
        client = connect(extra_headers={"X-Proxy-Token": "fake-proxy-token"})

        with pytest.raises(BadRequestError) as caught:
            await client.rank(QUERY, PASSAGES)

        assert caught.value.status_code == 307
        assert f"redirected to {elsewhere.url}/ranking?key=***" in str(caught.value)
        assert "s3cret" not in str(caught.value)
        assert len(fault_server.ranking_requests) == 1  # not retried either
        assert elsewhere.requests == []


async def test_a_key_in_the_base_url_query_is_masked_in_errors_and_repr(
    fault_server: FaultServer, connect: Callable[..., EitherClient]
) -> None:
    # Some gateways take their key as a query parameter; the request keeps it.
    fault_server.add_rule(fs.respond(400, {"detail": "bad request"}), times=1)
    client = connect(base_url=f"{fault_server.url}?api-key=fake-query-secret&v=2")

    with pytest.raises(BadRequestError) as caught:
        await client.rank(QUERY, PASSAGES)

    assert "fake-query-secret" not in str(caught.value)
    assert "fake-query-secret" not in (caught.value.url or "")
    assert "api-key=***&v=***" in str(caught.value)
    assert "fake-query-secret" not in repr(client.client)
    assert fault_server.requests[0].url_query == "api-key=fake-query-secret&v=2"
