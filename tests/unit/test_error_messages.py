"""How failures are named: status to error class, and which passages a batch held."""

from __future__ import annotations

import pytest

from nimrank import errors
from nimrank.planning import describe_passages


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.AuthenticationError),
        (404, errors.BadRequestError),
        (413, errors.BadRequestError),
        (422, errors.BadRequestError),
        (429, errors.RateLimitError),
        (500, errors.ServerError),
        (502, errors.ServerError),
        (503, errors.ServerError),
        (504, errors.ServerError),
        (599, errors.ServerError),
    ],
)
def test_each_status_maps_to_its_error_class(
    status: int, error_class: type[errors.APIStatusError]
) -> None:
    assert errors.error_for_status(status)[0] is error_class


def test_hints_point_at_what_to_fix() -> None:
    assert "api_key" in errors.error_for_status(401)[1]
    assert "base_url" in errors.error_for_status(404)[1]
    assert errors.error_for_status(500)[1] == ""


@pytest.mark.parametrize(
    ("indices", "text"),
    [
        ([], "no passages"),
        ([7], "passage 7"),
        (list(range(32)), "passages 0-31"),
        ([0, 1, 2, 5, 9, 10], "passages 0-2, 5, 9-10"),
        (
            [0, 2, 4, 6, 8, 10, 12, 14],
            "passages 0, 2, 4, 6, 8, 10 ... (8 in all)",
        ),
    ],
)
def test_batches_are_described_by_runs_of_input_indices(indices: list[int], text: str) -> None:
    assert describe_passages(indices) == text
