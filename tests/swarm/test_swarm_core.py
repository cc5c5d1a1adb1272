"""The protocol core without sockets: two cores (or a core and a scripted peer) joined
in memory. Whole transfers by torrent and by magnet, and every kind of bad peer: each
costs the peer its connection (and a ban where it lied about data), never the node, and
no unverified byte is stored."""

import typing

from veilstream.content.merkle import block_hashes
from veilstream.swarm import wire
from veilstream.swarm.connection import PeerConnection
from veilstream.swarm.extensions import ExtensionHandshake, ExtensionRegistry, MetadataMessage
from veilstream.swarm.node import new_peer_id
from veilstream.swarm.settings import SwarmSettings
from veilstream.swarm.memory_store import MemoryPieceStore
from veilstream.swarm.swarm import (
    DownloadComplete,
    ExtensionMessageReceived,
    MAX_QUEUED_UPLOAD_REQUESTS,
    MetadataReceived,
    PeerDropped,
    Swarm,
    SwarmFailed,
)
from veilstream.swarm.errors import PieceStorageError

from .conftest import ciphertext, connect, leecher_core, seeder_core


def events_of(core, kind):
    return [e for e in core.take_events() if isinstance(e, kind)]


def test_full_transfer_by_torrent(content):
    seeder, leecher = seeder_core(content), leecher_core(content)
    connect(leecher, seeder).pump()
    assert leecher.finished and leecher.store.complete
    assert leecher.store.contents() == ciphertext(content)
    assert leecher.wasted_bytes == 0 and seeder.uploaded_bytes == content.torrent.length


def test_full_transfer_by_magnet_fetches_metadata_and_piece_layer(content):
    seeder, leecher = seeder_core(content), leecher_core(content, magnet=True)
    connect(leecher, seeder).pump()
    events = leecher.take_events()
    assert any(isinstance(e, MetadataReceived) and e.torrent.content_id == content.torrent.content_id for e in events)
    assert any(isinstance(e, DownloadComplete) for e in events)
    assert leecher.store.contents() == ciphertext(content)


def test_single_piece_content_by_magnet(one_piece_content):
    seeder, leecher = seeder_core(one_piece_content), leecher_core(one_piece_content, magnet=True)
    connect(leecher, seeder).pump()
    assert leecher.finished


def test_streaming_window_fetches_the_seek_target_first(content):
    settings = SwarmSettings(stream_window_bytes=2 * content.torrent.piece_length)
    seeder, leecher = seeder_core(content), leecher_core(content, settings=settings)
    leecher.seek(10 * content.torrent.piece_length + 5)
    connect(leecher, seeder).pump()
    verified = [e.index for e in leecher.take_events() if type(e).__name__ == "PieceVerified"]
    assert verified[:2] == [10, 11]


def test_every_message_the_parser_yields_has_a_row_in_the_dispatch_table(content):
    kinds = set(typing.get_args(wire.Message)) | {wire.Handshake}
    assert set(seeder_core(content)._handlers) == kinds


# -- a scripted peer -----------------------------------------------------------------------


class Scripted:
    """A hand-driven peer connected to `core` (which it dialled)."""

    def __init__(self, core, conn=7, peer_id=b"-XX0000-hostilepeer!"):
        self.core, self.conn = core, conn
        self.wire = PeerConnection(core.wire_hash, peer_id, outbound=True)
        core.connection_made(conn, ("127.0.0.1", 9000 + conn), outbound=False, now=0.0)
        self.received = []
        self.flush()

    def flush(self, now=0.0):
        out = self.wire.take_output()
        if out and self.conn in self.core.peers:
            self.core.data_received(self.conn, b"".join(bytes(c) for c in out), now)
        back = self.core.output_for(self.conn, 1 << 22) if self.conn in self.core.peers else []
        if back:
            self.received += self.wire.receive_data(b"".join(bytes(c) for c in back))
        return self

    def send(self, *messages, now=0.0):
        for m in messages:
            self.wire.send(m)
        return self.flush(now)

    def raw(self, data, now=0.0):
        self.core.data_received(self.conn, data, now)
        return self

    def of(self, kind):
        return [m for m in self.received if isinstance(m, kind)]

    @property
    def dropped(self):
        return self.conn not in self.core.peers


def full_bitfield(torrent):
    n = torrent.piece_count
    return bytes([0xFF] * (n // 8) + ([(0xFF << (8 - n % 8)) & 0xFF] if n % 8 else []))


def test_a_peer_sending_a_bad_block_is_banned_and_nothing_is_stored(content):
    leecher = leecher_core(content)
    liar = Scripted(leecher).send(wire.Bitfield(full_bitfield(content.torrent)), wire.Unchoke())
    requests = liar.of(wire.Request)
    assert requests
    piece0 = [r for r in requests if r.index == requests[0].index]
    data = ciphertext(content)
    pl = content.torrent.piece_length
    for r in piece0:
        block = bytearray(data[r.index * pl + r.begin : r.index * pl + r.begin + r.length])
        if r.begin == 0:
            block[0] ^= 0xFF  # one flipped byte
        liar.send(wire.Piece(r.index, r.begin, bytes(block)))
        if liar.dropped:
            break
    assert liar.dropped
    dropped = events_of(leecher, PeerDropped)
    assert dropped and dropped[0].banned and "bad block" in dropped[0].reason
    assert leecher.store.have_count == 0
    assert leecher.store.contents() == bytes(content.torrent.length)  # not one unverified byte stored
    # the ban holds: the same peer id is refused on reconnection
    again = Scripted(leecher, conn=8)
    assert again.dropped
    # and an honest seeder still completes the download
    seeder = seeder_core(content)
    connect(leecher, seeder, conn_a=9).pump()
    assert leecher.finished


def deliver_hashes(core, queued):
    """What a transport with `hash_offload` does once a thread has hashed the pieces."""
    while queued:
        index, buffer = queued.pop(0)
        core.piece_hashed(index, block_hashes(buffer), 0.0)


def test_pieces_hashed_off_the_event_loop_count_exactly_as_inline_ones(content):
    settings = SwarmSettings(stream_window_bytes=content.torrent.piece_length)  # the rest is bulk
    seeder, leecher = seeder_core(content), leecher_core(content, settings=settings)
    queued = []
    leecher.hash_offload = lambda index, buffer: queued.append((index, buffer))
    link = connect(leecher, seeder)
    link.pump()
    assert queued and not leecher.finished  # waiting on the hashes
    while queued:
        deliver_hashes(leecher, queued)
        link.pump()
    assert leecher.finished
    assert leecher.store.contents() == ciphertext(content)


def test_a_bad_block_hashed_off_the_event_loop_still_bans_its_sender(content):
    settings = SwarmSettings(stream_window_bytes=content.torrent.piece_length)
    leecher = leecher_core(content, settings=settings)
    queued = []
    leecher.hash_offload = lambda index, buffer: queued.append((index, buffer))
    liar = Scripted(leecher).send(wire.Bitfield(full_bitfield(content.torrent)), wire.Unchoke())
    target = 5  # outside the streaming window: hashed elsewhere
    requests = [r for r in liar.of(wire.Request) if r.index == target]
    assert requests
    data = ciphertext(content)
    pl = content.torrent.piece_length
    for r in requests:
        block = bytearray(data[r.index * pl + r.begin : r.index * pl + r.begin + r.length])
        if r.begin == 0:
            block[0] ^= 0xFF
        liar.send(wire.Piece(r.index, r.begin, bytes(block)))
    assert [index for index, _ in queued] == [target] and not liar.dropped
    deliver_hashes(leecher, queued)
    assert liar.dropped
    dropped = events_of(leecher, PeerDropped)
    assert dropped and dropped[0].banned and "bad block" in dropped[0].reason
    assert leecher.store.have_count == 0


def test_out_of_range_and_oversized_requests_drop_the_peer(content):
    torrent = content.torrent
    for bad in (wire.Request(torrent.piece_count, 0, 16384),
                wire.Request(0, torrent.piece_length - 100, 16384),
                wire.Request(0, -1 & 0xFFFFFFFF, 10)):
        seeder = seeder_core(content)
        peer = Scripted(seeder).send(wire.Interested())
        assert peer.of(wire.Unchoke)
        peer.send(bad)
        assert peer.dropped, bad
    seeder = seeder_core(content)
    peer = Scripted(seeder).send(wire.Interested())
    oversized = wire._HEADER.pack(13, wire.REQUEST) + wire._TRIPLE.pack(0, 0, 32768)
    peer.raw(oversized)
    assert peer.dropped


def test_a_request_flood_drops_the_peer(content):
    seeder = seeder_core(content)
    peer = Scripted(seeder).send(wire.Interested())
    flood = wire.encode(wire.Request(0, 0, 16384)) * (MAX_QUEUED_UPLOAD_REQUESTS + 1)
    peer.raw(flood)
    assert peer.dropped
    assert "flood" in events_of(seeder, PeerDropped)[0].reason


def test_requests_while_choked_are_ignored(content):
    seeder = seeder_core(content, SwarmSettings(upload_slots=0))
    peer = Scripted(seeder).send(wire.Interested(), wire.Request(0, 0, 16384))
    assert not peer.dropped and not peer.of(wire.Piece)


def test_malformed_bytes_cost_only_that_connection(content):
    seeder = seeder_core(content)
    good = Scripted(seeder, conn=1, peer_id=b"-XX0000-goodpeer0001").send(wire.Interested())
    bad = Scripted(seeder, conn=2, peer_id=b"-XX0000-badpeer00002")
    bad.raw(b"\xff\xff\xff\xff" + b"junk")
    assert bad.dropped and not good.dropped
    good.send(wire.Request(0, 0, 16384))
    assert good.of(wire.Piece)


def test_a_handshake_for_another_content_is_dropped(content):
    seeder = seeder_core(content)
    seeder.connection_made(3, ("127.0.0.1", 1), outbound=False, now=0.0)
    stranger = PeerConnection(b"z" * 20, new_peer_id(), outbound=True)
    seeder.data_received(3, b"".join(stranger.take_output()), 0.0)
    assert 3 not in seeder.peers


def test_unrequested_data_floods_are_dropped(content):
    leecher = leecher_core(content)
    peer = Scripted(leecher).send(wire.Bitfield(full_bitfield(content.torrent)))  # choking us: nothing asked
    block = wire.encode(wire.Piece(0, 0, bytes(16384)))
    peer.raw(block * (16 * 1024 * 1024 // 16384 + 2))
    assert peer.dropped and leecher.store.have_count == 0


def test_a_peer_vanishing_mid_piece_hands_its_requests_to_another(content):
    leecher = leecher_core(content)
    flaky = Scripted(leecher, conn=5).send(wire.Bitfield(full_bitfield(content.torrent)), wire.Unchoke())
    first = flaky.of(wire.Request)[0]
    data = ciphertext(content)
    pl = content.torrent.piece_length
    flaky.send(wire.Piece(first.index, first.begin, data[first.index * pl + first.begin:][: first.length]))
    leecher.connection_lost(5, now=1.0)
    seeder = seeder_core(content)
    connect(leecher, seeder, conn_a=6).pump()
    assert leecher.finished
    assert leecher.store.contents() == data


def test_a_timed_out_request_is_asked_again(content):
    settings = SwarmSettings(request_timeout_s=5.0)
    leecher = leecher_core(content, settings=settings)
    silent = Scripted(leecher, conn=5).send(wire.Bitfield(full_bitfield(content.torrent)), wire.Unchoke())
    asked = len(silent.of(wire.Request))
    assert asked
    leecher.tick(10.0)  # past the timeout: cancelled, the peer is snubbed
    silent.flush(10.0)
    assert len(silent.of(wire.Cancel)) == asked
    seeder = seeder_core(content)
    link = connect(leecher, seeder, conn_a=6, now=10.0)
    link.pump()
    assert leecher.finished


def test_metadata_that_does_not_hash_to_the_content_id_bans_the_peer(content):
    leecher = leecher_core(content, magnet=True)
    liar = Scripted(leecher)
    fake_info = content.torrent.info_bytes.replace(b"piece length", b"piece lengtH")
    ext = ExtensionHandshake({"ut_metadata": 3}, len(fake_info), None, "liar", 100)
    liar.send(wire.Extended(0, ext.encode()))
    asks = [m for m in liar.of(wire.Extended) if m.ext_id == 3]
    assert asks, "the leecher should ask for metadata"
    ours = leecher.registry.ids["ut_metadata"]
    liar.send(wire.Extended(ours, MetadataMessage(1, 0, len(fake_info), fake_info).encode()))
    assert liar.dropped
    assert events_of(leecher, PeerDropped)[0].banned
    assert leecher.torrent is None


def test_bad_blocks_from_several_peers_are_traced_by_block_hashes(content):
    """Two peers share a piece; one lies. The piece fails; its block hashes (from a third
    peer, proven against the piece hash) name the liar, and only the liar is banned."""
    torrent, data, pl = content.torrent, ciphertext(content), content.torrent.piece_length
    leecher = leecher_core(content, settings=SwarmSettings(request_queue_depth_blocks=2))
    honest = Scripted(leecher, conn=1, peer_id=b"-XX0000-honest000001").send(wire.Bitfield(full_bitfield(torrent)), wire.Unchoke())
    liar = Scripted(leecher, conn=2, peer_id=b"-XX0000-liar00000002").send(wire.Bitfield(full_bitfield(torrent)), wire.Unchoke())
    helper_core = seeder_core(content)
    helper = Scripted(leecher, conn=3, peer_id=b"-XX0000-helper000003").send(wire.Bitfield(full_bitfield(torrent)))
    target = honest.of(wire.Request)[0].index
    for _ in range(10):  # deliver blocks of `target` from both until it completes
        for peer, lie in ((honest, False), (liar, True)):
            for r in [r for r in peer.of(wire.Request) if r.index == target]:
                block = bytearray(data[r.index * pl + r.begin:][: r.length])
                if lie:
                    block[1] ^= 1
                peer.received.remove(r)
                peer.send(wire.Piece(r.index, r.begin, bytes(block)))
    ask = helper.flush().of(wire.HashRequest)
    assert ask, "the leecher should ask a third peer for block hashes"
    answer = helper_core.hash_server.answer(ask[0])
    helper.send(wire.Hashes(ask[0].pieces_root, ask[0].base_layer, ask[0].index, ask[0].length, ask[0].proof_layers, answer))
    assert liar.dropped and not honest.dropped and not helper.dropped
    assert leecher.store.have[target] == 0


def test_extension_messages_reach_the_application_and_unknown_ones_are_ignored(content):
    registry = ExtensionRegistry()
    registry.register("veil_terms")
    seeder = Swarm(content.torrent.info_hash, peer_id=new_peer_id(), registry=registry, torrent=content.torrent,
                   store=MemoryPieceStore.for_seeding(content.torrent, ciphertext(content)))
    peer = Scripted(seeder)
    peer.send(wire.Extended(0, ExtensionHandshake({"veil_terms": 9, "lt_donthave": 7}).encode()))
    our_id = registry.ids["veil_terms"]
    peer.send(wire.Extended(our_id, b"hello"), wire.Extended(200, b"nobody home"))
    got = events_of(seeder, ExtensionMessageReceived)
    assert [(e.name, e.payload) for e in got] == [("veil_terms", b"hello")]
    seeder.send_extension(peer.conn, "veil_terms", b"reply")
    peer.flush()
    assert wire.Extended(9, b"reply") in peer.received and not peer.dropped


def test_upload_slots_are_bounded_with_one_optimistic_unchoke(content):
    seeder = seeder_core(content, SwarmSettings(upload_slots=2))
    peers = [Scripted(seeder, conn=i, peer_id=b"-XX0000-peer%08d" % i).send(wire.Interested()) for i in range(1, 6)]
    assert sum(1 for p in peers if p.wire.peer_choking is False) == 2
    seeder.tick(100.0)  # a rechoke round: still two (the best one plus an optimistic)
    for p in peers:
        p.flush(100.0)
    assert sum(1 for p in peers if p.wire.peer_choking is False) == 2


def test_a_full_disk_fails_the_download_clearly(content):
    class FullDisk(MemoryPieceStore):
        def write_verified_piece(self, index, data):
            raise PieceStorageError("disk full while writing test; free some space")

    torrent = content.torrent
    store = FullDisk(torrent, bytearray(torrent.length), bytearray(torrent.piece_count))
    leecher = Swarm(torrent.info_hash, peer_id=new_peer_id(), torrent=torrent, store=store)
    connect(leecher, seeder_core(content)).pump()
    failed = events_of(leecher, SwarmFailed)
    assert failed and "disk full" in str(failed[0].error)
    assert not leecher.finished
