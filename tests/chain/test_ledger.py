"""The cheque ledger keeps the newest verified cheque per relationship."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import ChainError, Cheque, ChequeError, ChequeLedger, Direction, SignedCheque

from .conftest import World


def test_the_ledger_keeps_the_newest_verified_cheque_and_knows_what_is_uncashed(chain: World, tmp_path):
    ledger = ChequeLedger(tmp_path / "cheques.sqlite")
    domain = chain.base.cheque_domain
    cheques = [chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, n) for n in (10, 30, 20)]
    kept = [ledger.record(domain, c, Direction.RECEIVED) for c in cheques]
    assert kept == [True, True, False]
    assert ledger.latest(domain, Direction.RECEIVED) == [cheques[1]]
    assert ledger.latest(domain, Direction.ISSUED) == []

    forged = SignedCheque(Cheque(chain.viewer.address, chain.content_id, chain.seeder.address, 99), cheques[0].signature)
    with pytest.raises(ChequeError):
        ledger.record(domain, forged, Direction.RECEIVED)

    other = chain.viewer2.sign_cheque(keccak(b"elsewhere"), Account.create().address, 5)
    ledger.record(domain, other, Direction.RECEIVED)
    pending = {p.signed.cheque.viewer: p.uncashed for p in ledger.pending(chain.base)}
    assert pending == {chain.viewer.address: 30, chain.viewer2.address: 5}

    chain.seeder.cash([cheques[1]])
    pending = {p.signed.cheque.viewer: p.uncashed for p in ledger.pending(chain.base)}
    assert pending == {chain.viewer2.address: 5}
    ledger.close()


def test_a_full_disk_refuses_a_cheque_in_one_error_and_keeps_the_ledger_whole(chain: World, small_disk):
    ledger = ChequeLedger(small_disk.path / "cheques.sqlite")
    domain = chain.base.cheque_domain
    first = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 10)
    assert ledger.record(domain, first, Direction.RECEIVED)
    small_disk.fill()
    with pytest.raises(ChainError, match=r"no space left on the disk of the cheque ledger .*the cheque was not recorded"):
        for n in range(30, 2_000):  # SQLite's write-ahead log has room for a few: until the disk says no
            ledger.record(domain, chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, n), Direction.RECEIVED)
    small_disk.free()
    latest = ledger.latest(domain, Direction.RECEIVED)[0].cheque.cumulative_amount
    assert ledger.record(domain, chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 5_000), Direction.RECEIVED)
    assert ledger.latest(domain, Direction.RECEIVED)[0].cheque.cumulative_amount == 5_000 > latest >= 10
    ledger.close()
