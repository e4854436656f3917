"""``RankingOptions``: one frozen, validated value; every default written once."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from nimrank import (
    DEFAULT_OPTIONS,
    OptionValues,
    RankingClient,
    RankingOptions,
    RetryPolicy,
    describe_option,
)

ROOT = Path(__file__).resolve().parents[2]


def test_option_values_name_exactly_the_fields_with_the_same_types() -> None:
    # The TypedDict that types the constructors' keywords cannot drift from the value.
    fields = {f.name: f.type for f in dataclasses.fields(RankingOptions)}
    keys = typing.get_type_hints(OptionValues)
    assert set(keys) == set(fields)
    hints = typing.get_type_hints(RankingOptions)
    for name in fields:
        assert keys[name] == hints[name], name


def test_every_option_has_a_description() -> None:
    for f in dataclasses.fields(RankingOptions):
        assert describe_option(f.name).strip()


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_OPTIONS.max_batch_size = 4  # type: ignore[misc]


def test_replace_checks_the_new_value_and_leaves_the_old_one() -> None:
    options = RankingOptions(max_batch_size=8)
    with pytest.raises(ValueError, match="max_batch_size"):
        options.replace(max_batch_size=0)
    assert options.replace(max_batch_size=4).max_batch_size == 4
    assert options.max_batch_size == 8


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_batchsize"):
        RankingOptions(max_batchsize=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="max_batchsize"):
        RankingClient(base_url="http://127.0.0.1:9/v1", max_batchsize=3)  # type: ignore[call-arg]


def test_a_retry_policys_count_is_kept_when_max_retries_is_not_given() -> None:
    options = RankingOptions(retry_policy=RetryPolicy(max_retries=10))
    assert options.effective_retry_policy.max_retries == 10
    assert options.replace(max_retries=1).effective_retry_policy.max_retries == 1


def test_extra_headers_are_copied_and_read_only() -> None:
    headers = {"X-Gateway": "token-1"}
    options = RankingOptions(extra_headers=headers)
    headers["X-Gateway"] = "changed"
    assert options.extra_headers["X-Gateway"] == "token-1"
    with pytest.raises(TypeError):
        options.extra_headers["X-Other"] = "x"  # type: ignore[index]


def test_secrets_stay_out_of_repr() -> None:
    options = RankingOptions(api_key="nvapi-fake-secret", extra_headers={"X-Token": "tok-secret"})
    assert "secret" not in repr(options)


def test_pickling_drops_the_key_and_keeps_the_rest() -> None:
    options = RankingOptions(
        api_key="nvapi-fake-secret", base_url="http://127.0.0.1:9/v1", max_batch_size=7
    )
    data = pickle.dumps(options)
    assert b"nvapi-fake-secret" not in data
    back = pickle.loads(data)
    assert back.api_key is None
    assert back == options.replace(api_key=None)


def test_copies_keep_the_key() -> None:
    options = RankingOptions(api_key="nvapi-fake-secret")
    assert copy.deepcopy(options).api_key == "nvapi-fake-secret"
    assert copy.copy(options) is options


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e300, 86_401.0])
def test_a_timeout_past_a_day_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        RankingOptions(timeout=timeout)


def test_the_defaults_are_the_documented_ones() -> None:
    assert (DEFAULT_OPTIONS.max_batch_size, DEFAULT_OPTIONS.max_concurrency) == (64, 8)
    assert DEFAULT_OPTIONS.timeout == 60.0
    assert DEFAULT_OPTIONS.effective_retry_policy.max_retries == 3


def test_a_misspelt_option_fails_mypy_strict(tmp_path: Path) -> None:
    snippet = tmp_path / "typo.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from nimrank import AsyncRankingClient, RankingClient, RankingOptions

            RankingClient(base_url="http://127.0.0.1:8000/v1", max_batchsize=3)
            AsyncRankingClient(max_batch_size="3")
            RankingOptions(timout=1.0)
            RankingClient(RankingOptions(), max_batch_size=3)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(ROOT / "shared_client"), "PATH": ""},
        check=False,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert 'Unexpected keyword argument "max_batchsize"' in out
    assert 'Argument "max_batch_size" to "AsyncRankingClient" has incompatible type "str"' in out
    assert 'Unexpected keyword argument "timout"' in out
    # The correct line type-checks: exactly the three errors above.
    assert "Found 3 errors" in out, out
