"""Key sessions: deliveries open only with the session key, which the viewer then forgets."""

import os

import pytest
from eth_account import Account

from veilstream.market.errors import MarketError, PaymentRefused
from veilstream.market.key_session import SessionOffer, ViewerKeySession, seal_to_session

CONTENT = os.urandom(32)


def test_offer_names_its_signer_and_seals_to_it():
    wallet = Account.create()
    session = ViewerKeySession(wallet.key, CONTENT, expires_at=2_000)
    assert session.offer.check(CONTENT, now=1_000) == wallet.address
    sealed = seal_to_session(session.offer, b"slice keys")
    assert session.open(sealed) == b"slice keys"
    assert b"slice keys" not in sealed


def test_after_close_past_deliveries_cannot_be_opened():
    session = ViewerKeySession(Account.create().key, CONTENT, expires_at=2_000)
    sealed = seal_to_session(session.offer, b"slice keys")
    session.close()
    with pytest.raises(MarketError, match="closed"):
        session.open(sealed)


def test_each_session_has_its_own_key():
    wallet = Account.create()
    a, b = ViewerKeySession(wallet.key, CONTENT, 2_000), ViewerKeySession(wallet.key, CONTENT, 2_000)
    assert a.offer.session_key != b.offer.session_key
    with pytest.raises(PaymentRefused):
        b.open(seal_to_session(a.offer, b"for a only"))


@pytest.mark.parametrize("tamper", ["key", "expiry", "content", "signature"])
def test_tampered_offers_do_not_verify_as_the_viewer(tamper):
    wallet = Account.create()
    offer = ViewerKeySession(wallet.key, CONTENT, 2_000).offer
    forged = {
        "key": SessionOffer(offer.content_id, os.urandom(32), offer.expires_at, offer.signature),
        "expiry": SessionOffer(offer.content_id, offer.session_key, 9_999, offer.signature),
        "content": SessionOffer(os.urandom(32), offer.session_key, offer.expires_at, offer.signature),
        "signature": SessionOffer(offer.content_id, offer.session_key, offer.expires_at, os.urandom(65)),
    }[tamper]
    try:
        signer = forged.viewer()
    except PaymentRefused:
        return
    assert signer != wallet.address


def test_expired_or_foreign_offers_are_refused():
    offer = ViewerKeySession(Account.create().key, CONTENT, 2_000).offer
    with pytest.raises(PaymentRefused, match="expired"):
        offer.check(CONTENT, now=2_000)
    with pytest.raises(PaymentRefused, match="another content"):
        offer.check(os.urandom(32), now=1_000)


@pytest.mark.parametrize("session_key", [bytes(32), b"\x01" + bytes(31)])  # low-order X25519 points
def test_an_offer_whose_session_key_nothing_can_be_sealed_to_is_refused(session_key):
    """A viewer signing a low-order point as its session key: the offer is refused when it
    arrives, before a key agent logs a release it could never deliver."""
    from veilstream.identity import sign_digest
    from veilstream.market.key_session import _offer_digest

    wallet = Account.create()
    offer = SessionOffer(CONTENT, session_key, 2_000, sign_digest(wallet.key, _offer_digest(CONTENT, session_key, 2_000)))
    assert offer.viewer() == wallet.address  # a valid signature: only the key is wrong
    with pytest.raises(PaymentRefused, match="session key"):
        offer.check(CONTENT, now=1_000)
