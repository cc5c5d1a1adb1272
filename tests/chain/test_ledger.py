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


def test_history_is_newest_first_and_an_older_ledger_opens_with_its_rows(tmp_path):
    """A ledger written before rows carried their time opens, keeps its cheques, and lists
    them after the timed ones."""
    import sqlite3

    from veilstream.chain import ChequeDomain

    domain = ChequeDomain(chain_id=31337, wallet="0x" + "22" * 20)
    viewer, seeder = Account.create(), Account.create().address
    old = domain.sign(viewer, Cheque(viewer.address, keccak(b"old"), seeder, 7))
    path = tmp_path / "cheques.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE cheques (chain_id INTEGER NOT NULL, wallet TEXT NOT NULL, direction TEXT NOT NULL, "
                   "viewer TEXT NOT NULL, content_id BLOB NOT NULL, seeder TEXT NOT NULL, amount TEXT NOT NULL, "
                   "signature BLOB NOT NULL, PRIMARY KEY (chain_id, wallet, direction, viewer, content_id, seeder))")
        db.execute("INSERT INTO cheques VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (domain.chain_id, domain.wallet, "issued",
                   viewer.address, keccak(b"old"), seeder, "7", old.signature))
    ledger = ChequeLedger(path)
    first = domain.sign(viewer, Cheque(viewer.address, keccak(b"first"), seeder, 1))
    second = domain.sign(viewer, Cheque(viewer.address, keccak(b"second"), seeder, 2))
    ledger.record(domain, first, Direction.ISSUED)
    ledger.record(domain, second, Direction.RECEIVED)
    history = ledger.history(domain)
    assert [h.signed for h in history] == [second, first, old]
    assert [h.direction for h in history] == [Direction.RECEIVED, Direction.ISSUED, Direction.ISSUED]
    assert history[0].recorded_at >= history[1].recorded_at and history[2].recorded_at is None
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
