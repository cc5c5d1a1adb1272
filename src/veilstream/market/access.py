"""Access sales: a buyer pays on chain for a range of slices in one transaction; the key
agent answers on chain (`KeyIssued`) with the range's keys sealed to the buyer.

The buyer's wallet public key is recovered from the signature of its own `buy`
transaction, so a purchase needs nothing but that transaction: the agent seals to it with
ECIES (ephemeral secp256k1 ECDH, HKDF-SHA256, ChaCha20-Poly1305) and only the buyer's
wallet key opens it. The delivery carries the commitment proof, so the buyer checks every
key before use, exactly as a streamed delivery is checked.
"""

from __future__ import annotations

import logging

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account.typed_transactions import TypedTransaction

from veilstream.chain.client import ChainClient, GrantState
from veilstream.chain.errors import ChainError
from veilstream.content import KeyRing, Torrent
from veilstream.content.keytree import TreeNode
from veilstream.content.unseal import verify_range_keys
from veilstream.identity.keys import evm_address
from veilstream.market import messages
from veilstream.market.audit import PAID_BY_GRANT
from veilstream.market.errors import MarketError
from veilstream.market.key_agent import KeyAgent
from veilstream.market.stream import HeldGrants

log = logging.getLogger("veilstream.market")

SEAL_INFO = b"veilstream wallet seal v1"
EPHEMERAL_KEY_BYTES = 33
MAX_SEALED_KEY_BYTES = 4096  # AccessSales.vy's limit


class AccessError(MarketError):
    """A purchase's keys could not be issued or opened."""


def _seal_key(shared: bytes, ephemeral: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=SEAL_INFO + ephemeral).derive(shared)


def seal_to_wallet(public_key_xy: bytes, payload: bytes) -> bytes:
    """ECIES to a 64-byte secp256k1 public key: ephemeral key (33) ‖ ciphertext ‖ tag."""
    ephemeral = coincurve.PrivateKey()
    ephemeral_public = ephemeral.public_key.format(compressed=True)
    shared = ephemeral.ecdh(coincurve.PublicKey(b"\x04" + public_key_xy).format())
    return ephemeral_public + ChaCha20Poly1305(_seal_key(shared, ephemeral_public)).encrypt(bytes(12), payload, ephemeral_public)


def open_with_wallet(wallet_key: bytes, sealed: bytes) -> bytes:
    ephemeral_public = sealed[:EPHEMERAL_KEY_BYTES]
    try:
        shared = coincurve.PrivateKey(wallet_key).ecdh(ephemeral_public)
        return ChaCha20Poly1305(_seal_key(shared, ephemeral_public)).decrypt(
            bytes(12), sealed[EPHEMERAL_KEY_BYTES:], ephemeral_public)
    except (InvalidTag, ValueError):
        raise AccessError("the issued key does not open with this wallet: not sealed to you") from None


def sender_public_key(client: ChainClient, tx_hash: bytes) -> bytes:
    """The 64-byte public key that signed a (typed, EIP-1559) transaction."""
    tx = client.w3.eth.get_transaction(tx_hash)
    fields = {k: tx[k] for k in ("type", "chainId", "nonce", "maxPriorityFeePerGas", "maxFeePerGas", "gas", "to",
                                 "value", "input", "accessList") if k in tx}
    fields["data"] = fields.pop("input")
    signing_hash = TypedTransaction.from_dict(fields).hash()

    def word(value) -> bytes:
        return value.to_bytes(32, "big") if isinstance(value, int) else bytes(value).rjust(32, b"\0")

    parity = int(tx["y_parity"] if "y_parity" in tx else tx["yParity"] if "yParity" in tx else tx["v"])
    signature = word(tx["r"]) + word(tx["s"]) + bytes([parity])
    public = coincurve.PublicKey.from_signature_and_message(signature, signing_hash, hasher=None)
    return public.format(compressed=False)[1:]


class GrantResponder:
    """The key agent's watch on AccessSales: every open grant for a content it sells gets
    its keys, sealed to the buyer and posted on chain (`KeyIssued`)."""

    def __init__(self, client: ChainClient, agent: KeyAgent) -> None:
        self.client = client
        self.agent = agent
        self._cursor: int | None = None
        self.issued: list[int] = []

    def poll(self) -> list[int]:
        """Answer the grants opened since the last poll; returns the grant ids answered."""
        page = self.client.events(self._cursor, names=["GrantOpened"])
        self._cursor = page.cursor
        answered = []
        for event in page.events:
            content_id = bytes(event.args["content_id"])
            if not self.agent.offers(content_id):
                continue
            grant = self.client.grant(event.args["grant_id"])
            if grant is None or grant.state is not GrantState.OPEN:
                continue
            try:
                self._answer(grant, event.tx_hash)
                answered.append(grant.grant_id)
            except (AccessError, ChainError, ValueError) as exc:  # one bad grant must not hold up the rest
                log.warning("grant %s not answered: %s", grant.grant_id, exc)
        self.issued += answered
        return answered

    def _answer(self, grant, tx_hash: bytes) -> None:
        public = sender_public_key(self.client, tx_hash)
        if evm_address(public) != grant.buyer:
            raise AccessError("the buy transaction was not signed by the grant's buyer")
        first, end = grant.first_slice, grant.first_slice + grant.slice_count
        delivery = self.agent.delivery(grant.content_id, first, end)
        sealed = seal_to_wallet(public, messages.encode_delivery(delivery))
        if len(sealed) > MAX_SEALED_KEY_BYTES:
            raise AccessError(f"the sealed keys ({len(sealed)} bytes) exceed the contract's {MAX_SEALED_KEY_BYTES}")
        # The keys leave in the transaction: logged once it is mined (the chain's KeyIssued
        # is the record meanwhile), so a post that fails leaves no release in the log.
        self.client.post_key(grant.grant_id, sealed)
        self.agent.record_release(grant.buyer, grant.content_id, first, end, grant.amount, PAID_BY_GRANT)


def issued_keys(client: ChainClient, wallet_key: bytes, grant_id: int, torrent: Torrent) -> KeyRing | None:
    """The buyer's side: the keys posted for `grant_id`, opened and checked against the
    content's key commitments; None while none is posted yet."""
    for event in client.events(names=["KeyIssued"]).events:
        if event.args["grant_id"] != grant_id:
            continue
        delivery = messages.decode_delivery(open_with_wallet(wallet_key, bytes(event.args["sealed_key"])))
        nodes = [TreeNode(h, j, k) for h, j, k in delivery.nodes]
        verify_range_keys(torrent, nodes, list(delivery.proof))  # raises WrongKeyError
        return KeyRing(tuple(nodes), delivery.metadata_key)
    return None


def held_grants(client: ChainClient, wallet_key: bytes, buyer: str, torrent: Torrent) -> HeldGrants | None:
    """Every grant `buyer` holds for this content with its keys issued: the granted ranges
    and their keys (each delivery checked against the commitments), or None if none."""
    ids, ranges, nodes, metadata_key = [], [], [], None
    for event in client.events(names=["GrantOpened"]).events:
        if bytes(event.args["content_id"]) != torrent.info_hash or event.args["buyer"] != buyer:
            continue
        grant = client.grant(event.args["grant_id"])
        if grant is None or grant.state is not GrantState.ISSUED:
            continue
        ring = issued_keys(client, wallet_key, grant.grant_id, torrent)
        if ring is None:
            continue
        ids.append(grant.grant_id)
        ranges.append((grant.first_slice, grant.first_slice + grant.slice_count))
        nodes.extend(ring.nodes)
        metadata_key = metadata_key or ring.metadata_key
    if not ids:
        return None
    return HeldGrants(tuple(ids), tuple(ranges), KeyRing(tuple(nodes), metadata_key))
