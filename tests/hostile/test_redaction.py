"""redaction.py: every secret a client holds, in every spelling, and the log filter (items 3, 5)."""

from __future__ import annotations

import gc
import logging

import pytest

from nimrank.redaction import LOGGERS, MASK, SecretFilter, Secrets, protect_logs, url_secrets

KEY = "nvapi-Redact/Me-5550123"


def test_the_longest_secret_is_masked_whole() -> None:
    secrets = Secrets([KEY, KEY[:10]])
    assert secrets.mask(f"a {KEY} b {KEY[:10]} c") == f"a {MASK} b {MASK} c"


def test_short_values_are_not_secrets() -> None:
    # "X-Debug: 1" must not turn every 1 in every message into ***.
    assert Secrets(["1", "abc"]).mask("1 abc 2") == "1 abc 2"
    assert not Secrets(["1"])


def test_url_secrets_are_the_userinfo_and_the_query_values_raw_and_decoded() -> None:
    found = set(url_secrets("http://me:p%40ss@h/v1?api-key=k%2Fey&version=2&BARE")) - {""}
    assert {"me", "p%40ss", "p@ss", "k%2Fey", "k/ey", "2", "BARE"} <= found


def test_the_repr_of_secrets_shows_none_of_them() -> None:
    assert KEY not in repr(Secrets([KEY]))


def test_records_of_child_loggers_at_every_level_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = Secrets([KEY])
    protect_logs(secrets)
    with caplog.at_level(logging.DEBUG):
        for name in LOGGERS:
            logging.getLogger(name).debug("value %s", KEY)
            logging.getLogger(name).error("escaped %s", KEY.replace("/", "\\/"))
    assert len(caplog.records) == 2 * len(LOGGERS)
    assert KEY not in caplog.text
    assert "5550123" not in caplog.text


def test_the_filter_changes_nothing_else_in_the_logging_config() -> None:
    before = {
        name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name in LOGGERS
        for logger in [logging.getLogger(name)]
    }
    protect_logs(Secrets([KEY]))
    protect_logs(Secrets([KEY]))  # idempotent: one filter per logger
    after = {
        name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name in LOGGERS
        for logger in [logging.getLogger(name)]
    }
    assert after == before
    for name in LOGGERS:
        assert sum(isinstance(f, SecretFilter) for f in logging.getLogger(name).filters) == 1


def test_a_client_that_is_gone_is_no_longer_masked(caplog: pytest.LogCaptureFixture) -> None:
    other = "gone-secret-424242"
    protect_logs(Secrets([other]))
    gc.collect()
    with caplog.at_level(logging.INFO):
        logging.getLogger("nimrank").info("value %s", other)
    assert other in caplog.text  # nothing holds those secrets any more: no cost, no mask
