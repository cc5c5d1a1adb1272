"""The cheque ledger keeps the newest verified cheque per relationship."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import Cheque, ChequeError, ChequeLedger, Direction, SignedCheque

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
