"""Fuzz target: arbitrary bytes into every parser the market and its neighbours expose to
a peer, a tracker or a key agent — decrypted manifest metadata, cheques (wire and JSON),
market messages and key deliveries, key-session offers, delivery signatures, the
tracker's HTTP request head and announce response, the tracker's own state, DHT KRPC.

Each may refuse its input only with its layer's error; anything else is a bug. Run by
test_fuzz_market.py through atheris:

    python tests/market/fuzz_market.py -max_total_time=60 [corpus_dir]
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from veilstream.chain.cheque import SignedCheque
    from veilstream.chain.errors import ChainError
    from veilstream.content.manifest import ManifestError, Metadata
    from veilstream.market import messages
    from veilstream.market.errors import MarketProtocolError, PaymentRefused
    from veilstream.market.key_session import SessionOffer, delivery_signer
    from veilstream.swarm.dht import DhtCore
    from veilstream.swarm.errors import TrackerError
    from veilstream.swarm.tracker import TrackerState, parse_announce_response, parse_request_head

CONTENT = bytes(range(32))


def feed_metadata(data: bytes) -> None:
    try:
        Metadata.from_bytes(data)
    except ManifestError:
        pass


def feed_cheque(data: bytes) -> None:
    try:
        SignedCheque.from_bytes(data)
    except ChainError:
        pass
    if data.count(b"[") + data.count(b"{") > 64:  # json's own recursion is not what is fuzzed here
        return
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    try:
        SignedCheque.from_json(doc) if isinstance(doc, dict) else None
    except ChainError:
        pass


def feed_market(data: bytes) -> None:
    try:
        message = messages.decode(data)
    except MarketProtocolError:
        message = None
    if isinstance(message, messages.SessionMessage):
        try:
            message.offer.check(message.offer.content_id, 0)
        except PaymentRefused:
            pass
    try:
        messages.decode_delivery(data)
    except MarketProtocolError:
        pass
    if len(data) >= 65 + 32 + 32:
        offer = SessionOffer(data[:32], data[32:64], int.from_bytes(data[64:72], "big"), data[72:137])
        try:
            offer.viewer()
        except PaymentRefused:
            pass
    try:
        delivery_signer(CONTENT, 0, 1, data[65:], data[:65])
    except PaymentRefused:
        pass


def feed_tracker(data: bytes) -> None:
    try:
        parse_announce_response(data)
    except TrackerError:
        pass
    try:
        _method, _path, query = parse_request_head(data)
    except ValueError:
        return
    TrackerState().announce(query, "127.0.0.1", 0.0)  # answers anything with a bencoded reply


def feed_dht(data: bytes) -> None:
    DhtCore(b"n" * 20, secret=b"s" * 16).receive(data, ("127.0.0.1", 6881), 0.0)


def test_one_input(data: bytes) -> None:
    feed_metadata(data)
    feed_cheque(data)
    feed_market(data)
    feed_tracker(data)
    feed_dht(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
