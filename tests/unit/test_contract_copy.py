"""The vendored NIM contract is the one the project started from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "tests" / "contract" / "nim-ranking-openapi.yaml"
SEED = REPO.parent / "shared" / "seeds" / "nim-ranking-openapi.yaml"


def test_vendored_contract_is_an_openapi_document_for_the_ranking_path() -> None:
    contract = yaml.safe_load(VENDORED.read_text(encoding="utf-8"))
    assert contract["openapi"].startswith("3.")
    assert "/v1/ranking" in contract["paths"]


@pytest.mark.skipif(not SEED.is_file(), reason="shared/seeds is not beside this clone")
def test_vendored_contract_matches_the_seed() -> None:
    vendored = yaml.safe_load(VENDORED.read_text(encoding="utf-8"))
    assert vendored == yaml.safe_load(SEED.read_text(encoding="utf-8"))
