"""Shared by the interop suite: which peer versions ran, and the server they talk to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

import pytest

from nimrank.server import RankingServer

# Nothing may leave this machine: LiteLLM fetches its model price list from the
# internet at import unless told to use its bundled copy, and Haystack sends
# usage telemetry unless it is off. Both read these when first imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

#: The peers, by distribution name (see tests/interop/requirements-peers.txt).
PEERS = (
    "langchain-nvidia-ai-endpoints",
    "llama-index-postprocessor-nvidia-rerank",
    "nvidia-haystack",
    "litellm",
)
#: Fake, and says so: the server is started requiring it, so every peer must send it.
FAKE_KEY = "nvapi-fake-interop"


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer, None where it is not installed."""
    found: dict[str, str | None] = {}
    for name in PEERS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the peer versions at the top of the run, so a report says what was tested."""
    versions = peer_versions()
    if not any(versions.values()):
        return []  # the main .venv: no peers, nothing to report
    return [
        "interop peers: "
        + ", ".join(f"{name} {found or '(not installed)'}" for name, found in versions.items())
    ]


@pytest.fixture(scope="module")
def nim_server() -> Iterator[RankingServer]:
    """The embedded server on loopback, requiring the fake key like the hosted API."""
    with RankingServer(api_key=FAKE_KEY) as server:
        yield server
