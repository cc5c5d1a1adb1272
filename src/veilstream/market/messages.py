"""The market's messages on the wire, as a sans-IO codec.

They ride the BEP 10 extension protocol under one extension name, `MARKET_EXTENSION`; each
payload is a bencoded dict with a version `v` and a type `t`. A peer that does not speak
the extension never sees them, so plain BitTorrent peers keep working for ciphertext.
Decoding checks every field's type and size; anything else is a `MarketProtocolError`,
which costs the sender its connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from veilstream.chain.cheque import WIRE_BYTES, SignedCheque
from veilstream.chain.errors import ChainError
from veilstream.content import bencode
from veilstream.market.errors import MarketProtocolError
from veilstream.market.key_session import SIGNATURE_BYTES, KeyDelivery, SessionOffer

MARKET_EXTENSION = "veilstream_market"
VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024  # a key delivery holds ≤ 2·log2(n) nodes + proof: a few KiB
MAX_SEALED_BYTES = 64 * 1024
MAX_ERROR_TEXT_BYTES = 512
MAX_SLICE_INDEX = 2**40  # 16 KiB slices of a 16 PiB file: far past anything real
MAX_GRANTS_PER_CLAIM = 64  # each is one chain lookup for the seeder


@dataclass(frozen=True)
class TermsMessage:
    price_per_slice_wei: int
    seeder_share_bps: int
    payee: bytes  # the address cheques to this peer must name as seeder (20 bytes)
    credit_window_slices: int
    chain_id: int
    wallet_contract: bytes  # 20 bytes: cheques are signed for this Wallet contract
    serves_keys: bool = False
    key_agent: bytes = b""  # 20 bytes when `serves_keys`: the address that signs its key deliveries


@dataclass(frozen=True)
class ChequeMessage:
    cheque: SignedCheque


@dataclass(frozen=True)
class SessionMessage:
    offer: SessionOffer


@dataclass(frozen=True)
class KeyRequest:
    first: int
    end: int


@dataclass(frozen=True)
class SealedKeys:
    first: int
    end: int
    sealed: bytes
    signature: bytes = b""  # the key agent's, over (content, first, end, sealed)


@dataclass(frozen=True)
class GrantClaim:
    """The viewer holds these on-chain grants (AccessSales) for the content: it has paid
    the creator's part of those slices, and pays seeders only their share of them."""

    grant_ids: tuple[int, ...]


@dataclass(frozen=True)
class LanesOpened:
    """The viewer has (re)opened lanes in the Wallet: look up this payee's cover again."""


@dataclass(frozen=True)
class MarketRefusal:
    """The peer refused a request; `code` says which kind, `text` says why."""

    code: int
    text: str


class RefusalCode:
    PAYMENT_NEEDED = 1
    BAD_CHEQUE = 2
    NO_KEYS = 3
    BAD_REQUEST = 4
    GRANT_REFUSED = 5  # this seeder does not honour the grant: pay it as for any slice
    SESSION_EXPIRED = 6  # the key session ran out: offer a fresh one and ask again
    NO_COVER = 7  # no lane holds the viewer's deposit for this payee: open one, then say so


Message = TermsMessage | ChequeMessage | SessionMessage | KeyRequest | SealedKeys | GrantClaim | LanesOpened | MarketRefusal


def encode(message: Message) -> bytes:
    if type(message) is ChequeMessage:  # one a slice: written straight out (the same canonical bencode)
        raw = message.cheque.to_bytes()
        return b"d1:c%d:%s1:t6:cheque1:vi%dee" % (len(raw), raw, VERSION)
    body: dict[bytes, object] = {b"v": VERSION}
    match message:
        case TermsMessage():
            body |= {b"t": b"terms", b"price": message.price_per_slice_wei.to_bytes(32, "big"),
                     b"share": message.seeder_share_bps, b"payee": message.payee,
                     b"window": message.credit_window_slices, b"chain": message.chain_id,
                     b"wallet": message.wallet_contract, b"keys": int(message.serves_keys)}
            if message.key_agent:
                body[b"agent"] = message.key_agent
        case ChequeMessage():
            body |= {b"t": b"cheque", b"c": message.cheque.to_bytes()}
        case SessionMessage():
            o = message.offer
            body |= {b"t": b"session", b"content": o.content_id, b"key": o.session_key,
                     b"exp": o.expires_at, b"sig": o.signature}
        case KeyRequest():
            body |= {b"t": b"key_request", b"first": message.first, b"end": message.end}
        case SealedKeys():
            body |= {b"t": b"keys", b"first": message.first, b"end": message.end, b"sealed": message.sealed,
                     b"sig": message.signature}
        case GrantClaim():
            body |= {b"t": b"grants", b"ids": list(message.grant_ids)}
        case LanesOpened():
            body |= {b"t": b"lanes"}
        case MarketRefusal():
            body |= {b"t": b"refusal", b"code": message.code, b"text": message.text.encode()[:MAX_ERROR_TEXT_BYTES]}
        case _:
            raise TypeError(f"not a market message: {message!r}")
    return bencode.encode(body)


def decode(payload: bytes) -> Message:
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MarketProtocolError("market message too large")
    try:
        body = bencode.decode(payload)
    except bencode.BencodeError as exc:
        raise MarketProtocolError(f"market message is not bencoded: {exc}") from None
    if not isinstance(body, dict):
        raise MarketProtocolError("market message is not a dictionary")
    if body.get(b"v") != VERSION:
        raise MarketProtocolError(f"market protocol version {body.get(b'v')!r} is not {VERSION}")
    kind = body.get(b"t")
    fields = _Fields(body)
    if kind == b"terms":
        return TermsMessage(
            price_per_slice_wei=int.from_bytes(fields.raw(b"price", 32), "big"),
            seeder_share_bps=fields.int(b"share", 10_000),
            payee=fields.raw(b"payee", 20),
            credit_window_slices=fields.int(b"window", MAX_SLICE_INDEX),
            chain_id=fields.int(b"chain", 2**64),
            wallet_contract=fields.raw(b"wallet", 20),
            serves_keys=bool(fields.int(b"keys", 1)),
            key_agent=fields.raw(b"agent", 20) if b"agent" in body else b"",
        )
    if kind == b"cheque":
        try:
            return ChequeMessage(SignedCheque.from_bytes(fields.raw(b"c", WIRE_BYTES)))
        except ChainError as exc:
            raise MarketProtocolError(f"malformed cheque: {exc}") from None
    if kind == b"session":
        return SessionMessage(SessionOffer(
            fields.raw(b"content", 32), fields.raw(b"key", 32), fields.int(b"exp", 2**63), fields.raw(b"sig", SIGNATURE_BYTES)
        ))
    if kind == b"key_request":
        first, end = fields.int(b"first", MAX_SLICE_INDEX), fields.int(b"end", MAX_SLICE_INDEX)
        if end <= first:
            raise MarketProtocolError("key request for an empty range")
        return KeyRequest(first, end)
    if kind == b"keys":
        first, end = fields.int(b"first", MAX_SLICE_INDEX), fields.int(b"end", MAX_SLICE_INDEX)
        sealed = fields.bytes(b"sealed", MAX_SEALED_BYTES)
        signature = fields.raw(b"sig", SIGNATURE_BYTES)
        if end <= first:
            raise MarketProtocolError("key delivery for an empty range")
        return SealedKeys(first, end, sealed, signature)
    if kind == b"grants":
        ids = body.get(b"ids")
        if (not isinstance(ids, list) or not 0 < len(ids) <= MAX_GRANTS_PER_CLAIM
                or not all(isinstance(i, int) and 0 <= i < 2**256 for i in ids)):
            raise MarketProtocolError("a grant claim needs 1 to 64 grant ids")
        return GrantClaim(tuple(ids))
    if kind == b"lanes":
        return LanesOpened()
    if kind == b"refusal":
        return MarketRefusal(fields.int(b"code", 255), fields.bytes(b"text", MAX_ERROR_TEXT_BYTES).decode(errors="replace"))
    raise MarketProtocolError(f"unknown market message type {kind!r}")


class _Fields:
    def __init__(self, body: dict) -> None:
        self._body = body

    def int(self, name: bytes, maximum: int) -> int:
        value = self._body.get(name)
        if not isinstance(value, int) or not 0 <= value <= maximum:
            raise MarketProtocolError(f"market field {name.decode()} missing or out of range")
        return value

    def bytes(self, name: bytes, max_length: int) -> bytes:
        value = self._body.get(name)
        if not isinstance(value, bytes) or len(value) > max_length:
            raise MarketProtocolError(f"market field {name.decode()} missing or too long")
        return value

    def raw(self, name: bytes, length: int) -> bytes:
        value = self._body.get(name)
        if not isinstance(value, bytes) or len(value) != length:
            raise MarketProtocolError(f"market field {name.decode()} must be {length} bytes")
        return value


def encode_delivery(delivery: KeyDelivery) -> bytes:
    """The plaintext inside a sealed key delivery."""
    body: dict[bytes, object] = {
        b"first": delivery.first, b"end": delivery.end,
        b"nodes": [[h, j, key] for h, j, key in delivery.nodes], b"proof": list(delivery.proof),
    }
    if delivery.metadata_key:
        body[b"meta"] = delivery.metadata_key
    return bencode.encode(body)


def decode_delivery(plaintext: bytes) -> KeyDelivery:
    try:
        body = bencode.decode(plaintext)
    except bencode.BencodeError:
        raise MarketProtocolError("a key delivery's contents are not bencoded") from None
    fields = _Fields(body if isinstance(body, dict) else {})
    first, end = fields.int(b"first", MAX_SLICE_INDEX), fields.int(b"end", MAX_SLICE_INDEX)
    raw_nodes, raw_proof = body.get(b"nodes"), body.get(b"proof")
    if not isinstance(raw_nodes, list) or not isinstance(raw_proof, list) or len(raw_nodes) > 256 or len(raw_proof) > 256:
        raise MarketProtocolError("a key delivery lacks its node or proof lists")
    nodes = []
    for node in raw_nodes:
        if not (isinstance(node, list) and len(node) == 3 and isinstance(node[0], int) and isinstance(node[1], int)
                and isinstance(node[2], bytes) and 0 <= node[0] <= 64 and 0 <= node[1] < 2**64 and len(node[2]) == 32):
            raise MarketProtocolError("a key delivery holds a malformed key node")
        nodes.append((node[0], node[1], node[2]))
    if not all(isinstance(p, bytes) and len(p) == 32 for p in raw_proof):
        raise MarketProtocolError("a key delivery holds a malformed proof hash")
    meta = body.get(b"meta")
    if meta is not None and (not isinstance(meta, bytes) or len(meta) != 32):
        raise MarketProtocolError("a key delivery holds a malformed metadata key")
    return KeyDelivery(first, end, tuple(nodes), tuple(raw_proof), meta)
