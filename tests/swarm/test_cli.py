"""`veil seed`, `veil fetch`, `veil tracker` as a user runs them: real processes. A fetch
killed with SIGKILL resumes, fetching only what is missing and re-checking what is on
disk; bad input gets one clear line, never a traceback."""

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from cli_harness import veil_env
from veilstream.content import bencode
from veilstream.swarm import SwarmNode, run
from veilstream.swarm.storage import PieceStore, bytes_to_bits

from .conftest import WAIT_S, wait_for

VEIL = [str(Path(sys.executable).parent / "veil")]  # the installed console script


def env(tmp_path):
    return veil_env(tmp_path / "home", passphrase=None, extra={"COLUMNS": "2000", "NO_COLOR": "1"})


async def veil(tmp_path, *args):
    return await asyncio.create_subprocess_exec(
        *VEIL, *args, env=env(tmp_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def resumed_pieces(resume: Path, count: int) -> int:
    try:
        body = bencode.decode(resume.read_bytes())
    except (OSError, bencode.BencodeError):
        return 0
    return sum(bytes_to_bits(body[b"have"], count) or b"")


def partial_copy(content, directory: Path, keep: int) -> Path:
    """The ciphertext with every piece from `keep` on spoiled: a seeder of it offers only
    the first `keep` pieces (the rest fail verification)."""
    directory.mkdir()
    raw = bytearray(content.ciphertext_path.read_bytes())
    for index in range(keep, content.torrent.piece_count):
        raw[index * content.torrent.piece_length] ^= 0xFF
    path = directory / content.torrent.name
    path.write_bytes(bytes(raw))
    return path


def test_a_fetch_killed_with_sigkill_resumes_with_only_what_is_missing(content, tmp_path):
    torrent, pl = content.torrent, content.torrent.piece_length
    keep = 12
    half = partial_copy(content, tmp_path / "half", keep)
    out = tmp_path / "out"
    resume = out / (torrent.name + ".resume")

    async def main():
        # 1. a seeder holding only the first `keep` pieces; the fetch stalls after them
        async with SwarmNode() as partial:
            partial.seed(PieceStore.for_seeding(torrent, half))
            host, port = partial.listen_address
            proc = await veil(tmp_path, "fetch", str(content.torrent_path), "--peer", f"{host}:{port}", "--out", str(out))
            try:
                await wait_for(lambda: resumed_pieces(resume, torrent.piece_count) == keep, what="the resume file to record the first pieces")
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not (out / torrent.name).exists() and (out / (torrent.name + ".part")).exists()
        # 2. spoil one resumed piece on disk: it must be re-verified, found bad, fetched again
        with open(out / (torrent.name + ".part"), "r+b") as f:
            f.seek(3 * pl + 7)
            f.write(b"\x00\x01\x02")
        # 3. restart against a full seeder: only the missing pieces move
        async with SwarmNode() as full:
            seeder = full.seed(PieceStore.for_seeding(torrent, content.ciphertext_path))
            host, port = full.listen_address
            proc = await veil(tmp_path, "fetch", str(content.torrent_path), "--peer", f"{host}:{port}", "--out", str(out))
            async with asyncio.timeout(WAIT_S):
                stdout, stderr = await proc.communicate()
            assert proc.returncode == 0, stderr.decode()
            missing = [3] + list(range(keep, torrent.piece_count))
            expected = sum(min(pl, torrent.length - i * pl) for i in missing)
            assert seeder.swarm.uploaded_bytes == expected
        text = stdout.decode()
        assert f"({keep - 1} resumed from disk, {torrent.piece_count - keep + 1} fetched)" in text, text
        assert (out / torrent.name).read_bytes() == content.ciphertext_path.read_bytes()
        assert not resume.exists()

    run(main())


def test_seed_and_fetch_by_magnet_through_the_cli(content, tmp_path):
    async def main():
        seeder = await veil(tmp_path, "seed", str(content.torrent_path), "--listen", "127.0.0.1:0")
        try:
            async with asyncio.timeout(WAIT_S):
                line = b""
                while b"x.pe=" not in line:
                    line = await seeder.stdout.readline()
                    assert line, (await seeder.stderr.read()).decode()
            magnet = re.search(r"magnet:\S+", line.decode())[0]
            assert content.torrent.content_id in magnet
            fetch = await veil(tmp_path, "fetch", magnet, "--out", str(tmp_path / "got"))
            async with asyncio.timeout(WAIT_S):
                stdout, stderr = await fetch.communicate()
            assert fetch.returncode == 0, stderr.decode()
            assert "0 resumed from disk" in stdout.decode()
        finally:
            seeder.send_signal(signal.SIGINT)
            async with asyncio.timeout(WAIT_S):
                await seeder.communicate()
        assert (tmp_path / "got" / content.torrent.name).read_bytes() == content.ciphertext_path.read_bytes()
        assert (tmp_path / "got" / f"{content.torrent.content_id}.torrent").is_file()

    run(main())


async def fetch_fails(tmp_path, *args) -> str:
    """A `veil fetch` that must end on its own, well within WAIT_S, with one error line."""
    proc = await veil(tmp_path, "fetch", *args)
    async with asyncio.timeout(WAIT_S):
        stdout, stderr = await proc.communicate()
    err = stderr.decode().strip()  # the progress line leaves a blank line behind
    assert proc.returncode == 1, err + stdout.decode()
    assert "Traceback" not in err and err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_fetch_that_finds_no_peer_gives_up_cleanly(content, tmp_path):
    # no --timeout: the only peer given cannot be reached, so nobody is left to wait for
    err = run(fetch_fails(tmp_path, content.torrent.content_id, "--peer", "127.0.0.1:9", "--out", str(tmp_path / "o")))
    assert f"no peer given has {content.torrent.content_id[:16]}…" in err


def test_a_content_no_peer_has_is_one_line_not_a_hang(content, tmp_path):
    unknown = "ab" * 32

    async def main():
        async with SwarmNode() as seeder:  # a real seeder, of another content: it refuses the handshake
            seeder.seed(PieceStore.for_seeding(content.torrent, content.ciphertext_path))
            host, port = seeder.listen_address
            return await fetch_fails(tmp_path, unknown, "--peer", f"{host}:{port}", "--out", str(tmp_path / "o"))

    assert f"no peer given has {unknown[:16]}…" in run(main())


def test_a_fetch_gives_up_after_the_timeout_without_progress_and_keeps_what_arrived(content, tmp_path):
    torrent, keep = content.torrent, 12
    half = partial_copy(content, tmp_path / "half", keep)

    async def main():
        async with SwarmNode() as partial:  # stays connected, but has nothing more to give after `keep` pieces
            partial.seed(PieceStore.for_seeding(torrent, half))
            host, port = partial.listen_address
            return await fetch_fails(tmp_path, str(content.torrent_path), "--peer", f"{host}:{port}",
                                     "--out", str(tmp_path / "out"), "--timeout", "2")

    err = run(main())
    assert f"no peer sent a new piece of {torrent.content_id[:16]}… within 2 s (1 connected)" in err
    assert "what arrived is kept" in err and "--timeout 0 waits forever" in err
    assert resumed_pieces(tmp_path / "out" / (torrent.name + ".resume"), torrent.piece_count) == keep


def test_a_fetch_waits_a_bounded_time_by_default():
    import inspect

    from veilstream.node.cli.swarm_cmds import FETCH_STALL_S, fetch

    assert inspect.signature(fetch).parameters["timeout"].default.default == FETCH_STALL_S
    assert 0 < FETCH_STALL_S <= 300


@pytest.mark.parametrize("args, message", [
    (["fetch", "magnet:?xt=urn:btih:abc", "--peer", "127.0.0.1:1", "--out", "o"], "no v2"),
    (["fetch", "0" * 64, "--out", "o"], "no way to find peers"),
    (["fetch", "0" * 64, "--peer", "localhost", "--out", "o"], "HOST:PORT"),
    (["fetch", "nope.torrent", "--peer", "127.0.0.1:1", "--out", "o"], "no such torrent file"),
    (["seed", "missing-thing"], "neither a .torrent file"),
    (["seed", "CONTENT", "--listen", "127.0.0.1:99999"], "HOST:PORT"),
    (["fetch", "0" * 64, "--peer", "127.0.0.1:1"], "no vault"),
])
def test_bad_input_is_one_clear_line(content, tmp_path, args, message):
    args = [str(content.torrent_path) if a == "CONTENT" else a for a in args]

    async def main():
        proc = await veil(tmp_path, *args)
        async with asyncio.timeout(WAIT_S):
            stdout, stderr = await proc.communicate()
        return proc.returncode, stderr.decode()

    code, err = run(main())
    assert code != 0 and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["seed", "CONTENT"], ["tracker"], ["fetch", "CONTENT", "--peer", "127.0.0.1:9",
                                                                       "--out", "o"]])
def test_a_port_in_use_is_one_line(content, tmp_path, command):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        where = f"127.0.0.1:{taken.getsockname()[1]}"
        args = [str(content.torrent_path) if a == "CONTENT" else a for a in command]

        async def main():
            proc = await veil(tmp_path, *args, "--listen", where)
            async with asyncio.timeout(WAIT_S):
                _, stderr = await proc.communicate()
            return proc.returncode, stderr.decode().strip()

        code, err = run(main())
    assert code == 1 and err.startswith(f"error: {where} is in use") and "\n" not in err, err


def test_a_corrupt_torrent_file_is_refused(content, tmp_path):
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(content.torrent_path.read_bytes()[:-10])

    async def main():
        proc = await veil(tmp_path, "seed", str(bad))
        async with asyncio.timeout(WAIT_S):
            _, stderr = await proc.communicate()
        return proc.returncode, stderr.decode()

    code, err = run(main())
    assert code == 1 and "not a torrent file" in err and "Traceback" not in err


def test_fetch_into_the_vault_then_seed_from_it_by_content_id(content, tmp_path):
    """Without --out a fetch resumes in the vault's home and lands in the vault as a
    seeder's content; `veil seed CONTENT_ID` then serves it, no keys involved."""
    async def main():
        init = await asyncio.create_subprocess_exec(
            *VEIL, "init", env={**env(tmp_path), "VEIL_PASSPHRASE": "pw long enough"}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(120):
            _, err = await init.communicate()
        assert init.returncode == 0, err.decode()
        async with SwarmNode() as node:
            node.seed(PieceStore.for_seeding(content.torrent, content.ciphertext_path))
            host, port = node.listen_address
            proc = await veil(tmp_path, "fetch", content.torrent.magnet, "--peer", f"{host}:{port}")
            async with asyncio.timeout(WAIT_S):
                stdout, stderr = await proc.communicate()
            assert proc.returncode == 0, stderr.decode()
        home = tmp_path / "home"
        held = home / "content" / content.torrent.content_id
        assert (held / content.torrent.name).read_bytes() == content.ciphertext_path.read_bytes()
        assert not (home / "partial" / content.torrent.content_id).exists()
        seeder = await veil(tmp_path, "seed", content.torrent.content_id)
        try:
            async with asyncio.timeout(WAIT_S):
                line = b""
                while b"x.pe=" not in line:
                    line = await seeder.stdout.readline()
                    assert line, (await seeder.stderr.read()).decode()
        finally:
            seeder.send_signal(signal.SIGINT)
            async with asyncio.timeout(WAIT_S):
                await seeder.communicate()
        assert not (home / "keys").exists() or not any((home / "keys").iterdir())

    run(main())
