"""Forward-secret key delivery: keys are sealed to a per-session ephemeral X25519 key.

The viewer makes a fresh X25519 key pair for each viewing session and signs its public
half with its wallet key, binding it to the content and an expiry (a `SessionOffer`). The
key agent checks the signature (so it knows whose cheques pay for the keys) and seals each
delivery to the session key with a NaCl sealed box (itself an ephemeral-static X25519 box).
When the session ends the viewer drops the private half: a later theft of the viewer's
long-term keys or of recorded traffic opens none of the past deliveries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from veilstream.identity import (LEGACY_CONTEXT, SIGNATURE_BYTES, SealingError, SealingKey, SignatureError, open_sealed,
                                 recover_signer, seal_to, sign_digest)
from veilstream.market.errors import MarketError, PaymentRefused

OFFER_DOMAIN = b"veilstream key session v1"
# Deliveries are plain sealed boxes (their format predates sealing contexts): what a box is
# for (content, range) is bound by the agent's signature over it (`delivery_digest`).
DELIVERY_CONTEXT = LEGACY_CONTEXT


def _offer_digest(content_id: bytes, session_key: bytes, expires_at: int) -> bytes:
    return keccak(OFFER_DOMAIN + content_id + session_key + struct.pack(">Q", expires_at))


@dataclass(frozen=True)
class SessionOffer:
    """A viewer's signed ephemeral key for one content, valid until `expires_at` (unix s)."""

    content_id: bytes
    session_key: bytes
    expires_at: int
    signature: bytes

    def viewer(self) -> str:
        """The wallet address that signed the offer (raises `PaymentRefused` if none did)."""
        if len(self.signature) != SIGNATURE_BYTES or len(self.session_key) != 32 or len(self.content_id) != 32:
            raise PaymentRefused("malformed key-session offer")
        try:
            return recover_signer(_offer_digest(self.content_id, self.session_key, self.expires_at), self.signature)
        except SignatureError:
            raise PaymentRefused("key-session offer has an invalid signature") from None

    def check(self, content_id: bytes, now: int) -> str:
        if self.content_id != content_id:
            raise PaymentRefused("key-session offer is for another content")
        if now >= self.expires_at:
            raise PaymentRefused("key-session offer has expired")
        viewer = self.viewer()
        try:  # a low-order point: no delivery could be sealed to it (refused now, before any release)
            seal_to(self.session_key, b"", context=DELIVERY_CONTEXT)
        except SealingError:
            raise PaymentRefused("the offer's session key is not a key anything can be sealed to") from None
        return viewer


class ViewerKeySession:
    """The viewer's side: offer, open deliveries, then forget."""

    def __init__(self, wallet_key: bytes, content_id: bytes, expires_at: int) -> None:
        self._private: SealingKey | None = SealingKey.generate()
        session_key = self._private.public
        signature = sign_digest(wallet_key, _offer_digest(content_id, session_key, expires_at))
        self.offer = SessionOffer(content_id, session_key, expires_at, signature)

    def open(self, sealed: bytes) -> bytes:
        if self._private is None:
            raise MarketError("this key session is closed; its key is gone")
        try:
            return open_sealed(self._private, sealed, context=DELIVERY_CONTEXT)
        except SealingError:
            raise PaymentRefused("a key delivery does not open with this session's key") from None

    def close(self) -> None:
        """Forget the session's private key."""
        self._private = None

    def disclose(self) -> bytes:
        """The session's private key, for evidence against a cheating agent: it opens this
        session's deliveries and nothing else."""
        if self._private is None:
            raise MarketError("this key session is closed; its key is gone")
        return self._private.secret

    @property
    def closed(self) -> bool:
        return self._private is None


def seal_to_session(offer: SessionOffer, payload: bytes) -> bytes:
    return seal_to(offer.session_key, payload, context=DELIVERY_CONTEXT)


DELIVERY_DOMAIN = b"veilstream key delivery v1"


def delivery_digest(content_id: bytes, first: int, end: int, sealed: bytes) -> bytes:
    return keccak(DELIVERY_DOMAIN + content_id + struct.pack(">QQ", first, end) + keccak(sealed))


def sign_delivery(agent_key: bytes, content_id: bytes, first: int, end: int, sealed: bytes) -> bytes:
    """The key agent's signature over what it sent: with the session key disclosed, anyone
    can open the delivery, see the keys and check them against the public commitments."""
    return sign_digest(agent_key, delivery_digest(content_id, first, end, sealed))


def delivery_signer(content_id: bytes, first: int, end: int, sealed: bytes, signature: bytes) -> str:
    if len(signature) != SIGNATURE_BYTES:
        raise PaymentRefused("key delivery signature is malformed")
    try:
        return recover_signer(delivery_digest(content_id, first, end, sealed), signature)
    except SignatureError:
        raise PaymentRefused("key delivery signature does not verify") from None

@dataclass(frozen=True)
class KeyDelivery:
    """Tree-node keys for a contiguous range of slices, with the commitment range proof."""

    first: int
    end: int
    nodes: tuple[tuple[int, int, bytes], ...] = field(repr=False)  # (height, index, key)
    proof: tuple[bytes, ...] = ()
    metadata_key: bytes | None = field(default=None, repr=False)
