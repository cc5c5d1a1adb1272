"""The embedded chain keeps its state on disk: a restart keeps balances, history and block
numbers; a torn journal tail is dropped, a corrupt middle refused; one process at a time."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import ChainClient, ChainError, ChainSettings
from veilstream.chain.embedded import JOURNAL_NAME, EmbeddedChain

from .conftest import fake_info

ETHER = 10**18
SETTINGS = ChainSettings(withdrawal_delay_s=100, key_deadline_s=60, terms_delay_s=50)
VIEWER = Account.from_key(keccak(b"embedded viewer"))
CREATOR = Account.from_key(keccak(b"embedded creator"))


def populate(directory) -> dict:
    with ChainClient.embedded(directory, VIEWER, SETTINGS) as viewer:
        viewer.dev.fund(VIEWER.address, 10 * ETHER)
        viewer.dev.fund(CREATOR.address, 10 * ETHER)
        creator = viewer.with_account(CREATOR)
        info, cid = fake_info(CREATOR.address, b"persisted content")
        creator.register(info, price_per_slice=10, seeder_share_bps=1_000, slice_count=5)
        viewer.deposit(2 * ETHER)
        viewer.request_withdrawal(ETHER)
        unlock_at = viewer.pending_withdrawal().unlock_at
        viewer.dev.advance_time(SETTINGS.withdrawal_delay_s)
        viewer.cash([viewer.sign_cheque(cid, CREATOR.address, 1000)])
        return {
            "cid": cid,
            "deployment": viewer.deployment,
            "block": viewer.block_number(),
            "timestamp": viewer.timestamp(),
            "balance": viewer.balance(),
            "deposit": viewer.deposit_of(),
            "unlock_at": unlock_at,
            "events": viewer.events().events,
        }


def test_a_restart_keeps_balances_history_and_block_numbers(tmp_path):
    before = populate(tmp_path)
    with ChainClient.embedded(tmp_path, VIEWER) as viewer:
        assert viewer.deployment == before["deployment"]
        assert viewer.block_number() == before["block"]
        assert viewer.timestamp() == before["timestamp"]
        assert viewer.balance() == before["balance"]
        assert viewer.deposit_of() == before["deposit"] == 2 * ETHER - 1000
        assert viewer.events().events == before["events"]
        assert viewer.content(before["cid"]).creator == CREATOR.address
        # Time-locks count on from the replayed chain time: the lock opened before the restart.
        assert viewer.timestamp() >= before["unlock_at"]
        viewer.execute_withdrawal()
        assert viewer.deposit_of() == ETHER - 1000
    with ChainClient.embedded(tmp_path, VIEWER) as viewer:
        assert viewer.deposit_of() == ETHER - 1000
        assert viewer.pending_withdrawal() is None


def test_a_torn_last_journal_line_is_dropped(tmp_path):
    before = populate(tmp_path)
    journal = tmp_path / JOURNAL_NAME
    intact = journal.read_bytes()
    journal.write_bytes(intact + b"0badc0de {\"op\": \"tx\", \"ts\": 1, \"raw\": \"0x")
    with ChainClient.embedded(tmp_path, VIEWER) as viewer:
        assert viewer.block_number() == before["block"]
    assert journal.read_bytes() == intact


def test_a_corrupt_journal_line_in_the_middle_is_refused(tmp_path):
    populate(tmp_path)
    journal = tmp_path / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"op"', b'"oq"', 1)
    journal.write_bytes(b"".join(lines))
    with pytest.raises(ChainError, match="corrupt at line 4"):
        EmbeddedChain(tmp_path)


def test_one_process_owns_a_chain_directory(tmp_path):
    with EmbeddedChain(tmp_path):
        with pytest.raises(ChainError, match="open in another process"):
            EmbeddedChain(tmp_path)
    EmbeddedChain(tmp_path).close()


def test_snapshots_are_refused_on_a_journaled_chain(tmp_path):
    with EmbeddedChain(tmp_path) as chain:
        with pytest.raises(ChainError, match="in-memory"):
            chain.snapshot()


class FullDisk:
    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")


def test_a_journal_write_failure_stops_the_chain_instead_of_diverging(tmp_path):
    with ChainClient.embedded(tmp_path, VIEWER, SETTINGS) as client:
        client.dev.fund(VIEWER.address, ETHER)
        chain = client.dev.embedded
        journal, chain._journal = chain._journal, FullDisk()
        with pytest.raises(ChainError, match="No space left on device.*not kept"):
            client.deposit(1)
        with pytest.raises(ChainError, match="stopped"):
            client.deposit_of()
        chain._journal = journal
    with ChainClient.embedded(tmp_path, VIEWER) as client:
        assert client.balance() == ETHER
        assert client.deposit_of() == 0
