"""Fuzzing what peers, trackers and key agents can send: decrypted metadata, cheques (wire
and JSON), market messages and key deliveries, key-session offers and delivery
signatures, the tracker's HTTP request head, its announce response and its state, DHT
KRPC. Each parser refuses bad input only with its layer's error.

One bounded hypothesis pass each in `make test`; with VEIL_FUZZ_SECONDS set (`make fuzz`)
each hypothesis pass repeats until that many seconds have gone by and the atheris target
runs that long."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veilstream.chain.cheque import Cheque, ChequeDomain, SignedCheque
from veilstream.chain.errors import ChainError
from veilstream.content import bencode
from veilstream.content.manifest import ManifestError, Metadata
from veilstream.market import messages
from veilstream.market.errors import MarketProtocolError, PaymentRefused
from veilstream.market.key_session import SessionOffer, ViewerKeySession, delivery_signer, sign_delivery
from veilstream.swarm.dht import DhtCore
from veilstream.swarm import TrackerError
from veilstream.swarm.tracker import TrackerState, parse_announce_response, parse_request_head

FUZZ_SECONDS = float(os.environ.get("VEIL_FUZZ_SECONDS") or 0)
EXAMPLES = 200 if not FUZZ_SECONDS else 3000
RULES = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
DOMAIN = ChequeDomain(31337, "0x" + "11" * 20)
VIEWER = Account.from_key(b"\x05" * 32)
CONTENT = bytes(range(32))
SEED_CHEQUE = DOMAIN.sign(VIEWER, Cheque(VIEWER.address, CONTENT, "0x" + "22" * 20, 10**15))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
bencoded = st.recursive(
    st.integers() | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=12), children, max_size=5),
    max_leaves=15,
)


def repeated(test):
    """Run a hypothesis test once, or for VEIL_FUZZ_SECONDS in fresh passes."""
    def run():
        deadline = time.monotonic() + FUZZ_SECONDS
        test()
        while time.monotonic() < deadline:
            test()
    run.__name__ = test.__name__
    return run


def mutated(seed: bytes):
    @st.composite
    def make(draw) -> bytes:
        raw = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(raw)))
            action = draw(st.sampled_from(["flip", "insert", "delete"]))
            if action == "flip" and position < len(raw):
                raw[position] ^= 1 << draw(st.integers(0, 7))
            elif action == "insert":
                raw[position:position] = draw(st.binary(min_size=1, max_size=8))
            elif position < len(raw):
                del raw[position]
        return bytes(raw)
    return make()


# -- decrypted manifest metadata ----------------------------------------------------------

META = Metadata("movie.mp4", "video/mp4", 1234, 30.5).to_bytes()


@RULES
@given(st.one_of(st.binary(max_size=200), mutated(META),
                 st.dictionaries(st.sampled_from(["name", "mime_type", "size", "duration_s", "x"]), json_values)
                 .map(lambda d: json.dumps(d).encode())))
def _metadata(raw):
    try:
        meta = Metadata.from_bytes(raw)
    except ManifestError:
        return
    assert Metadata.from_bytes(meta.to_bytes()) == meta


test_fuzz_metadata = repeated(_metadata)


def test_oversized_numbers_in_metadata_are_refused_not_raised():
    for raw in (b'{"name":"a","mime_type":"b","size":1e999}', b'{"name":"a","mime_type":"b","size":1,"duration_s":1e999}',
                b'{"name":"a","mime_type":"b","size":-1}', b'[' * 100_000, b'{"name":"a","mime_type":"b","size":true}'):
        try:
            Metadata.from_bytes(raw)
        except ManifestError:
            continue
        raise AssertionError(f"accepted {raw[:40]!r}")


# -- cheques ------------------------------------------------------------------------------


@RULES
@given(st.one_of(st.binary(min_size=169, max_size=169), mutated(SEED_CHEQUE.to_bytes()), st.binary(max_size=300)))
def _cheque_bytes(raw):
    try:
        cheque = SignedCheque.from_bytes(raw)
    except ChainError:
        return
    assert SignedCheque.from_bytes(cheque.to_bytes()) == cheque
    try:
        DOMAIN.verify(cheque)
    except ChainError:
        return
    assert cheque.cheque.viewer == VIEWER.address  # only the viewer's own signature verifies


test_fuzz_cheque_wire = repeated(_cheque_bytes)


@RULES
@given(st.one_of(json_values, st.fixed_dictionaries({k: json_values for k in SEED_CHEQUE.to_json()}),
                 st.builds(lambda k, v: {**SEED_CHEQUE.to_json(), k: v}, st.sampled_from(sorted(SEED_CHEQUE.to_json())),
                           json_values)))
def _cheque_json(doc):
    try:
        cheque = SignedCheque.from_json(doc)
    except ChainError:
        return
    assert SignedCheque.from_json(cheque.to_json()) == cheque


test_fuzz_cheque_json = repeated(_cheque_json)


# -- market messages, key sessions and deliveries ----------------------------------------

SESSION = ViewerKeySession(VIEWER.key, CONTENT, 2_000_000_000)
SEED_MESSAGES = [messages.encode(m) for m in (
    messages.SessionMessage(SESSION.offer), messages.ChequeMessage(SEED_CHEQUE), messages.KeyRequest(0, 4),
    messages.SealedKeys(0, 4, b"s" * 80, b"g" * 65), messages.GrantClaim((1, 2)), messages.LanesOpened(),
    messages.TermsMessage(10**12, 2000, b"p" * 20, 2, 31337, b"w" * 20, True, b"a" * 20), messages.MarketRefusal(1, "no"))]


@RULES
@given(st.one_of(st.binary(max_size=300), st.sampled_from(SEED_MESSAGES).flatmap(mutated),
                 bencoded.map(bencode.encode)))
def _market_message(raw):
    try:
        message = messages.decode(raw)
    except MarketProtocolError:
        return
    assert messages.decode(messages.encode(message)) == message
    if isinstance(message, messages.SessionMessage):
        try:
            viewer = message.offer.check(message.offer.content_id, 0)
        except PaymentRefused:
            return
        assert viewer == VIEWER.address or message.offer != SESSION.offer


test_fuzz_market_messages = repeated(_market_message)


@RULES
@given(st.one_of(st.binary(max_size=300), bencoded.map(bencode.encode)))
def _delivery(raw):
    try:
        messages.decode_delivery(raw)
    except MarketProtocolError:
        pass


test_fuzz_key_delivery_contents = repeated(_delivery)


@RULES
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1),
       st.one_of(st.binary(min_size=65, max_size=65), mutated(SESSION.offer.signature)))
def _session_offer(content, key, expires, signature):
    try:
        viewer = SessionOffer(content, key, expires, signature).viewer()
    except PaymentRefused:
        return
    assert viewer.startswith("0x") and len(viewer) == 42


test_fuzz_session_offer_recovery = repeated(_session_offer)

AGENT_KEY = b"\x09" * 32
SEALED = b"sealed keys" * 5
SIGNATURE = sign_delivery(AGENT_KEY, CONTENT, 0, 4, SEALED)


@RULES
@given(st.one_of(st.binary(max_size=80), mutated(SIGNATURE)), st.binary(max_size=80))
def _delivery_signer(signature, sealed):
    try:
        signer = delivery_signer(CONTENT, 0, 4, sealed, signature)
    except PaymentRefused:
        return
    if (signature, sealed) != (SIGNATURE, SEALED):
        assert signer != Account.from_key(AGENT_KEY).address  # nothing else passes as the agent's


test_fuzz_delivery_signature_recovery = repeated(_delivery_signer)


# -- the tracker ------------------------------------------------------------------------

REQUEST = (b"GET /announce?info_hash=%12%34" + b"a" * 18 + b"&peer_id=" + b"p" * 20 +
           b"&port=6881&left=0&numwant=5&event=started HTTP/1.1\r\nHost: x\r\n\r\n")
RESPONSE = bencode.encode({b"interval": 60, b"peers": b"\x7f\x00\x00\x01\x1a\xe1", b"complete": 1})


@RULES
@given(st.one_of(st.binary(max_size=300), mutated(REQUEST)))
def _tracker_request(raw):
    try:
        _method, _path, query = parse_request_head(raw)
    except ValueError:
        return
    answer = bencode.decode(TrackerState().announce(query, "127.0.0.1", 0.0))
    assert b"interval" in answer or b"failure reason" in answer


test_fuzz_tracker_request = repeated(_tracker_request)


@RULES
@given(st.one_of(st.binary(max_size=300), mutated(RESPONSE), bencoded.map(bencode.encode)))
def _announce_response(raw):
    try:
        response = parse_announce_response(raw)
    except TrackerError:
        return
    assert response.interval_s > 0 and all(0 < port < 65536 for _, port in response.peers)


test_fuzz_announce_response = repeated(_announce_response)


# -- DHT KRPC ---------------------------------------------------------------------------

QUERY = bencode.encode({b"t": b"aa", b"y": b"q", b"q": b"get_peers", b"a": {b"id": b"i" * 20, b"info_hash": b"h" * 20}})


@RULES
@given(st.one_of(st.binary(max_size=300), mutated(QUERY), bencoded.map(bencode.encode)))
def _krpc(raw):
    answer, _reply = DhtCore(b"n" * 20, secret=b"s" * 16).receive(raw, ("127.0.0.1", 6881), 0.0)
    if answer is not None:
        assert isinstance(bencode.decode(answer), dict)


test_fuzz_dht_krpc = repeated(_krpc)


# -- the same parsers under atheris ----------------------------------------------------------


def test_fuzz_atheris_target(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate([META, SEED_CHEQUE.to_bytes(), json.dumps(SEED_CHEQUE.to_json()).encode(), REQUEST,
                              RESPONSE, QUERY, *SEED_MESSAGES]):
        (corpus / f"seed{i}").write_bytes(seed)
    seconds = int(FUZZ_SECONDS) if FUZZ_SECONDS else 4
    target = Path(__file__).with_name("fuzz_market.py")
    done = subprocess.run(
        [sys.executable, str(target), f"-max_total_time={seconds}", "-rss_limit_mb=2048", str(corpus)],
        capture_output=True, text=True, timeout=seconds + 300,  # instrumenting the package is slow on a loaded machine
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr


def test_cheque_amounts_in_json_are_whole_numbers_only():
    """Found by the fuzz test: an amount of 1e999 escaped as OverflowError; 1.5 was cut to 1."""
    for amount in (float("inf"), 1e999, 1.5, True, "1e3", "-5", None):
        try:
            SignedCheque.from_json({**SEED_CHEQUE.to_json(), "cumulative_amount": amount})
        except ChainError:
            continue
        raise AssertionError(f"accepted {amount!r}")
    assert SignedCheque.from_json(SEED_CHEQUE.to_json()) == SEED_CHEQUE
