"""The chain client's own settings: checked when set, carried by every client made from one."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from veilstream.chain import AnchorKind, ChainClientSettings, ChainError

from .conftest import World


def test_the_defaults_are_the_clients_timeouts():
    settings = ChainClientSettings()
    assert (settings.rpc_timeout_s, settings.receipt_timeout_s, settings.receipt_poll_s) == (30, 120.0, 0.05)
    assert settings.max_log_range_blocks == 5_000 and settings.deploy_funds_wei == 10**17


@pytest.mark.parametrize(
    "change",
    [{"rpc_timeout_s": 0}, {"receipt_poll_s": -0.1}, {"max_log_range_blocks": 0}, {"max_log_range_blocks": 1.5},
     {"deploy_funds_wei": True}],
)
def test_a_bad_value_is_refused_with_its_name(change):
    (name,) = change
    with pytest.raises(ChainError, match=name):
        ChainClientSettings().but(**change)


def test_events_read_in_ranges_of_the_clients_size(chain: World):
    chain.agent.anchor(AnchorKind.AUDIT_LOG, keccak(b"x"))
    chain.viewer.deposit(5)
    whole = chain.base.events()
    narrow = chain.base.with_account(None)
    narrow.client_settings = ChainClientSettings(max_log_range_blocks=1)  # one eth_getLogs per block
    assert narrow.with_account(None).client_settings.max_log_range_blocks == 1
    paged = narrow.events()
    assert paged.events == whole.events and paged.cursor == whole.cursor
    assert len({e.block_number for e in paged.events}) > 1
