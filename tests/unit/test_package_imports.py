"""``import nimrank`` is lazy (PEP 562): each public name loads its module on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nimrank


def _modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def test_import_nimrank_loads_neither_the_client_nor_its_http_stack() -> None:
    loaded = _modules_after("import nimrank")
    assert "nimrank" in loaded
    assert not loaded & {"nimrank.client", "nimrank.server", "nimrank.cli", "httpcore", "aiohttp"}


def test_the_errors_load_without_the_client() -> None:
    loaded = _modules_after("from nimrank import RankingError")
    assert "nimrank.errors" in loaded
    assert "nimrank.client" not in loaded


def test_the_clients_do_not_load_the_server_the_cli_or_aiohttp() -> None:
    loaded = _modules_after("from nimrank import AsyncRankingClient, RankingClient")
    assert {"nimrank.client", "nimrank.async_client"} <= loaded
    assert not loaded & {"nimrank.server", "nimrank.cli", "aiohttp"}


def test_the_sync_client_loads_neither_asyncio_nor_the_fleet() -> None:
    # A sync program pays for neither; a client with several replicas loads the fleet.
    loaded = _modules_after("from nimrank import RankingClient; RankingClient(base_url='http://h')")
    assert "nimrank.client" in loaded
    assert not loaded & {"asyncio", "nimrank.async_client", "nimrank.fleet", "nimrank.replicas"}
    fleet = _modules_after(
        "from nimrank import RankingClient; RankingClient(base_url=['http://a', 'http://b'])"
    )
    assert "nimrank.fleet" in fleet


@pytest.mark.parametrize("name", nimrank.__all__)
def test_every_public_name_resolves_and_is_listed(name: str) -> None:
    assert getattr(nimrank, name) is not None
    assert name in dir(nimrank)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'RankingClinet'"):
        nimrank.RankingClinet  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(nimrank, "client_pair_typo")


def test_the_lazy_table_names_exactly_the_public_names() -> None:
    assert {*nimrank._HOMES, "__version__"} == set(nimrank.__all__)
