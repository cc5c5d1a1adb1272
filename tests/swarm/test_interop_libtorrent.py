"""Interop with a real BitTorrent client (libtorrent 2.1, Python binding), both ways and
by torrent file and by magnet link: the bytes end identical. libtorrent answers about a
second after `connect_peer`; that is its latency, not ours."""

import asyncio

import libtorrent as lt
import pytest

from veilstream.swarm import SwarmNode, run
from veilstream.swarm.storage import PieceStore

from .conftest import WAIT_S, wait_for


def lt_session() -> lt.session:
    return lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,  # TCP only: what we speak
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert_category.error | lt.alert_category.status,
    })


def holds_copy(handle, path, published) -> bool:
    """libtorrent says it seeds and its file holds the content: it reports seeding before its
    disk thread has always written the file (seen once in CI), so both are waited for."""
    return (handle.status().is_seeding and path.is_file()
            and path.read_bytes() == published.ciphertext_path.read_bytes())


def add(ses, published, save_path, magnet):
    if magnet:
        params = lt.parse_magnet_uri(published.torrent.magnet)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(str(published.torrent_path))
    params.save_path = str(save_path)
    return ses.add_torrent(params)


@pytest.mark.parametrize("by_magnet", [False, True], ids=["torrent", "magnet"])
def test_veil_fetches_from_a_libtorrent_seeder(content, tmp_path, by_magnet):
    ses = lt_session()
    handle = add(ses, content, content.ciphertext_path.parent, magnet=False)

    async def main():
        await wait_for(lambda: handle.status().is_seeding, what="libtorrent to check its copy")
        async with SwarmNode() as node:
            fetch = node.fetch(content.torrent.info_hash if by_magnet else content.torrent, tmp_path / "veil")
            fetch.add_peer("127.0.0.1", ses.listen_port())
            async with asyncio.timeout(WAIT_S):
                path = await fetch.completed()
            assert path.read_bytes() == content.ciphertext_path.read_bytes()
            assert not [d for d in fetch.dropped if d.banned]

    run(main())


@pytest.mark.parametrize("by_magnet", [False, True], ids=["torrent", "magnet"])
def test_libtorrent_fetches_from_a_veil_seeder(content, tmp_path, by_magnet):
    ses = lt_session()

    async def main():
        async with SwarmNode() as node:
            node.seed(PieceStore.for_seeding(content.torrent, content.ciphertext_path))
            handle = add(ses, content, tmp_path / "lt", magnet=by_magnet)
            handle.connect_peer(node.listen_address)
            copy = tmp_path / "lt" / content.torrent.name
            await wait_for(lambda: holds_copy(handle, copy, content), what="libtorrent to download and write the file")
            assert node.internal_errors == 0

    run(main())


def test_a_single_piece_content_interops_by_magnet(one_piece_content, tmp_path):
    ses = lt_session()

    async def main():
        async with SwarmNode() as node:
            node.seed(PieceStore.for_seeding(one_piece_content.torrent, one_piece_content.ciphertext_path))
            handle = add(ses, one_piece_content, tmp_path / "lt", magnet=True)
            handle.connect_peer(node.listen_address)
            copy = tmp_path / "lt" / one_piece_content.torrent.name
            await wait_for(lambda: holds_copy(handle, copy, one_piece_content),
                           what="libtorrent to download and write the file")

    run(main())
