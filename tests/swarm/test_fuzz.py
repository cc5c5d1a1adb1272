"""Fuzzing the wire parser and the protocol core. Brief by default (part of `make test`);
`VEIL_FUZZ_SECONDS=300 make fuzz` runs the atheris target that long."""

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veilstream.swarm import wire
from veilstream.swarm.connection import PeerConnection
from veilstream.swarm.errors import RemoteProtocolError
from veilstream.swarm.extensions import ExtensionHandshake, MetadataMessage
from veilstream.swarm.node import new_peer_id

from .conftest import seeder_core

FUZZ_SECONDS = float(os.environ.get("VEIL_FUZZ_SECONDS", "4"))
EXAMPLES = 300 if "VEIL_FUZZ_SECONDS" not in os.environ else 5000

frames = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda kind, body: len(body).to_bytes(4, "big")[:3] + bytes([0]) + bytes([kind]) + body,
              st.integers(0, 30), st.binary(max_size=64)),
    st.builds(lambda kind, body: (1 + len(body)).to_bytes(4, "big") + bytes([kind]) + body,
              st.integers(0, 30), st.binary(max_size=64)),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames, max_size=8))
def test_fuzz_parser_raises_only_remote_protocol_errors(chunks):
    parser = wire.MessageParser()
    try:
        for chunk in chunks:
            parser.feed(chunk)
    except RemoteProtocolError:
        pass


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames, max_size=8))
def test_fuzz_a_seeder_core_never_raises(content, chunks):
    core = seeder_core(content)
    core.connection_made(1, ("127.0.0.1", 1), outbound=False, now=0.0)
    dialer = PeerConnection(core.wire_hash, new_peer_id(), outbound=True)
    core.data_received(1, b"".join(dialer.take_output()), 0.0)
    for i, chunk in enumerate(chunks):
        core.data_received(1, chunk, float(i))
    core.output_for(1, 1 << 20)
    core.tick(1000.0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_extension_payloads_fail_only_as_protocol_errors(payload):
    for decode in (ExtensionHandshake.decode, MetadataMessage.decode):
        try:
            decode(payload)
        except RemoteProtocolError:
            pass


def test_fuzz_atheris_target(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [wire.encode(wire.Request(0, 0, 16384)), wire.encode(wire.Bitfield(b"\xff")),
             wire.encode(wire.Extended(0, ExtensionHandshake({"ut_metadata": 2}, 500).encode())),
             wire.encode(wire.HashRequest(bytes(32), 0, 0, 2, 0)), wire.encode(wire.Piece(0, 0, b"x" * 100))]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    target = Path(__file__).with_name("fuzz_wire.py")
    done = subprocess.run(
        [sys.executable, str(target), f"-max_total_time={int(FUZZ_SECONDS)}", "-rss_limit_mb=2048", str(corpus)],
        capture_output=True, text=True, timeout=FUZZ_SECONDS + 120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr
