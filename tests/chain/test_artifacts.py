"""The committed compiled contracts are exactly what the Vyper sources compile to."""

from __future__ import annotations

import json

import pytest

from veilstream.chain import ChainError, artifacts


def test_committed_artifacts_match_the_sources():
    committed = json.loads(artifacts.ARTIFACTS_PATH.read_text())
    fresh = artifacts.build_all()
    assert committed["compiler"] == fresh["compiler"]
    for name in artifacts.CONTRACT_NAMES:
        assert committed["contracts"][name] == fresh["contracts"][name], (
            f"{name}: run `python -m veilstream.chain.compile`"
        )


def test_an_artifact_whose_source_changed_is_refused(monkeypatch):
    artifacts.load.cache_clear()
    monkeypatch.setattr(artifacts, "source_digest", lambda name: "0" * 64)
    try:
        with pytest.raises(ChainError, match="changed since it was compiled"):
            artifacts.load("Wallet")
    finally:
        artifacts.load.cache_clear()
