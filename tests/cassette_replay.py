"""Replaying the hand-written vcrpy cassettes in ``cassettes/`` (see its README).

``REPLAY`` never records (``record_mode="none"``) and matches on method, URL and
JSON body, so a test passes only if the client sends exactly the recorded
request; anything else raises vcrpy's ``CannotOverwriteExistingCassetteException``.
"""

from __future__ import annotations

from pathlib import Path

import vcr  # type: ignore[import-untyped]

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"

REPLAY = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "uri", "body"],
    # Never written while record_mode is "none"; here so a re-recording keeps no key.
    filter_headers=["authorization"],
)
