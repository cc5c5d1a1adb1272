"""The market across real processes: `veil devnet` (anvil), a creator's `veil serve --keys`,
a viewer's `veil play` by magnet with only a peer address, what the viewer's cheques commit
(`veil wallet balance`, `veil wallet history`), then the creator's exit, which leaves cheques
worth less than their gas in the ledger, `veil wallet cash --all`, `veil earnings` and
`veil wallet claim`. Every byte is checked; the money is read back on chain."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

from cli_harness import (PASS, VEIL, chain_flags, content_id_of, free_port, new_vault, ok, require_anvil, start,
                         start_devnet, stop, veil, veil_env)
from veilstream.vault import Vault


def new_vaults(*homes: Path) -> None:
    for home in homes:
        new_vault(home)


def published_and_funded(creator: Path, viewer: Path, movie: Path, price: str, chain: list[str]) -> str:
    """The creator publishes `movie` at `price` (registered on chain); the viewer deposits 0.1 ETH.
    Returns the content id."""
    ok(veil(creator, "wallet", "faucet", "1", *chain))
    published = ok(veil(creator, "publish", str(movie), "--slice-size", "64KiB", "--price", price, *chain))
    ok(veil(viewer, "wallet", "faucet", "1", *chain))
    ok(veil(viewer, "wallet", "deposit", "0.1", *chain))
    return content_id_of(published)


def test_serve_play_earn_across_processes(tmp_path):
    require_anvil()
    creator, viewer = tmp_path / "creator", tmp_path / "viewer"
    new_vaults(creator, viewer)
    port, directory = free_port(), tmp_path / "devnet"
    chain = chain_flags(port, directory)
    devnet, _ = start_devnet(creator, port, directory)
    server = None
    try:
        movie = tmp_path / "movie.bin"
        movie.write_bytes(os.urandom(700_000))
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        published = ok(veil(creator, "publish", str(movie), "--slice-size", "64KiB", "--price", "1000000000000wei",
                            "--seeder-share", "2000", *chain))
        cid = content_id_of(published)
        assert "registered" in published and "not registered" not in published  # at once: nobody can squat it
        ok(veil(viewer, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "deposit", "0.1", *chain))

        # the creator also seeds its ciphertext to plain peers (a new seeder or a buyer fetches it)
        server, banner = start(creator, "serve", cid, "--keys", "--serve-plain", *chain, ready="magnet ")
        address = re.search(r"serving [0-9a-f]{64} on ([\d.]+:\d+)", banner)[1]
        magnet = re.search(r"magnet (\S+)", banner)[1]

        # a budget of 3 slices stops the play with the plaintext written so far kept in --out
        out = tmp_path / "played.bin"
        short = veil(viewer, "play", magnet, "--out", str(out), "--budget", "3000000000000wei", *chain)
        assert short.returncode == 1 and "Traceback" not in short.stderr, short.stderr
        assert "the budget of 0.000003 ETH is spent at slice" in short.stderr, short.stderr
        kept = int(re.search(r"keeps the first ([\d,]+) bytes", short.stderr)[1].replace(",", ""))
        assert 0 < kept <= 3 * (64 * 1024 - 16) and out.read_bytes() == movie.read_bytes()[:kept]
        # the same command goes on from there (the magnet's x.pe names the peer) and pays only for the rest
        played = veil(viewer, "play", magnet, "--out", str(out), *chain)
        ok(played)
        assert f"resuming {out} after slice" in played.stderr
        assert out.read_bytes() == movie.read_bytes()
        slices = -(-700_000 // (64 * 1024 - 16))
        assert re.search(rf"{slices} slices verified and decrypted", played.stderr)
        assert "0.000008 ETH in cheques" in played.stderr  # 11 slices × 10¹² wei in all, 3 paid before

        # a finished output is not overwritten silently; --force replaces it, and watching again is free
        refused = veil(viewer, "play", magnet, "--out", str(out), *chain)
        assert refused.returncode == 1 and "exists" in refused.stderr and "--force" in refused.stderr
        again = veil(viewer, "play", magnet, "--out", str(out), "--force", *chain)
        ok(again)
        assert out.read_bytes() == movie.read_bytes()
        assert re.search(r"paid\s+0 ETH in cheques", again.stderr)  # the keys are in the vault, the slices on disk
        balance = ok(veil(viewer, "wallet", "balance", *chain))
        assert re.search(r"committed in cheques\s+0\.000011 ETH signed, not yet cashed", balance)
        assert re.search(rf"0\.000011 ETH for {cid[:16]}", balance)
        history = ok(veil(viewer, "wallet", "history", *chain))
        creator_address = Vault.open(creator).public_identity()["wallet_address"]
        assert re.search(rf"paid in cheques\s+│?\s*{cid[:16]}…\s+│?\s*{creator_address}\s+│?\s*0\.000011 ETH\s+│?\s*"
                         r"0 ETH cashed", history), history

        # a FIFO is written to, never replaced by a file
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(fifo.read_bytes()))
        reader.start()
        ok(veil(viewer, "play", magnet, "--out", str(fifo), *chain))
        reader.join(timeout=30)
        assert bytes(received) == movie.read_bytes() and stat.S_ISFIFO(fifo.stat().st_mode)

        # from the feed to play: the creator posts a card, the viewer plays it by a prefix of its id
        # (the machine's one local relay carries it), and the play leaves a view the creator counts
        ok(veil(creator, "post", cid, "--title", "A movie", "--no-previews"))
        cards = json.loads(ok(veil(viewer, "feed", "--json")))["cards"]
        card = next(c for c in cards if c["content_id"] == cid)
        by_card = veil(viewer, "play", card["id"][:12], "--peer", address, "--out", str(tmp_path / "card.bin"), *chain)
        ok(by_card)
        assert (tmp_path / "card.bin").read_bytes() == movie.read_bytes()
        counted = json.loads(ok(veil(creator, "feed", "--json")))["cards"]
        assert next(c for c in counted if c["id"] == card["id"])["counts"]["views"] == 1

        # Ctrl-C says where it stopped, with no traceback (no peer answers here: it waits)
        waiting = subprocess.Popen([*VEIL, "play", cid, "--peer", "127.0.0.1:9",
                                    "--out", str(tmp_path / "cut.bin"), *chain], stderr=subprocess.PIPE, text=True,
                                   env=veil_env(viewer))
        banner = waiting.stderr.readline()
        assert banner.startswith("asking 1 peers and 0 trackers"), banner
        waiting.send_signal(signal.SIGINT)
        _, rest = waiting.communicate(timeout=60)
        assert waiting.returncode == 130, rest
        assert "interrupted before the content's metadata arrived; nothing was paid" in rest and "Traceback" not in rest

        # a second viewer buys a range on chain instead; the serving key agent answers
        buyer = tmp_path / "buyer"
        new_vaults(buyer)
        ok(veil(buyer, "wallet", "faucet", "1", *chain))
        ok(veil(buyer, "fetch", magnet, "--peer", address))  # the ciphertext and torrent, into the vault
        bought = ok(veil(buyer, "buy", cid, "--first", "2", "--count", "3", *chain))
        assert "grant" in bought and "checked against the commitments" in bought
        ring = Vault.open(buyer).unlock(PASS).keyring(cid)
        assert sorted(leaf for n in ring.nodes for leaf in range(n.first_leaf, n.end_leaf)) == [2, 3, 4]

        # the holder streams: its own keys for [2, 5), the seeder's share only for those slices
        ok(veil(buyer, "wallet", "deposit", "0.1", *chain))
        held = veil(buyer, "play", cid, "--peer", address, "--out", str(tmp_path / "held.bin"), *chain)
        ok(held)
        assert (tmp_path / "held.bin").read_bytes() == movie.read_bytes()
        assert "for 3 slices" in held.stderr
        assert "0.0000086 ETH in cheques" in held.stderr  # 8 × 10¹² + 3 × 10¹² × 20%
        spent = json.loads(ok(veil(buyer, "wallet", "history", "--json", *chain)))
        # newest first: the cheques of the stream (for the granted slices a direct one), then the grant
        assert {(r["kind"], r["content_id"], r["amount_wei"], r["cashed_wei"]) for r in spent[:2]} == {
            ("paid in cheques", cid, 8_000_000_000_000, 0), ("paid in cheques", "00" * 32, 600_000_000_000, 0)}
        assert [(r["kind"], r["content_id"], r["amount_wei"], r["state"]) for r in spent[2:]] == [
            ("bought a grant", cid, 2_400_000_000_000, "settled")]

        bad = veil(viewer, "play", cid, "--out", str(tmp_path / "x"), *chain)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr and "--peer" in bad.stderr

        # a third vault fetches the ciphertext now, and buys while the creator's node is down
        late = tmp_path / "late"
        new_vaults(late)
        ok(veil(late, "wallet", "faucet", "1", *chain))
        ok(veil(late, "fetch", magnet, "--peer", address))

        stopped = stop(server)
        server = None
        # cheques: 11 + 8.6 slices' worth, all to the creator (it seeds), less than their gas
        assert re.search(r"cashed and claimed 0 ETH \(0 cash batches, 1 audit anchors; gas paid ~0\.\d+ ETH\)",
                         stopped), stopped  # the audit head went on chain at exit
        assert re.search(r"left uncashed: 0\.0000196 ETH in 3 cheques \(gas ~0\.\d+ ETH would cost more than "
                         r"they are worth\); they stay in the ledger", stopped), stopped
        assert "left unclaimed: 0.0000024 ETH of earnings" in stopped  # the sale: 3 × 10¹² × 80%
        cashed = ok(veil(creator, "wallet", "cash", "--all", *chain))
        assert re.search(r"cashed 3 cheques for 0\.0000196 ETH; gas paid ~0\.\d+ ETH$", cashed.strip()), cashed
        earned = ok(veil(creator, "earnings", *chain))
        assert re.search(r"0\.000011 ETH\s+│?\s*0\.000011 ETH", earned) or earned.count("0.000011 ETH") >= 2
        assert re.search(r"claimed 0\.000022 ETH; gas paid ~0\.\d+ ETH", ok(veil(creator, "wallet", "claim", "--all",
                                                                                   *chain)))
        assert re.search(r"committed in cheques\s+0 ETH", ok(veil(viewer, "wallet", "balance", *chain)))

        # no key agent: the purchase waits; `veil grants` collects the keys once the agent is back
        waited = veil(late, "buy", cid, "--wait", "1", *chain)
        assert waited.returncode == 1 and "Traceback" not in waited.stderr
        assert "`veil grants` collects them once posted" in waited.stderr and "refunds" in waited.stderr
        unopened = veil(late, "open", cid, "--out", str(tmp_path / "late.bin"))
        assert unopened.returncode == 1 and "Traceback" not in unopened.stderr
        assert "waiting for the key agent until" in ok(veil(late, "grants", *chain))
        server, _ = start(creator, "serve", cid, "--keys", *chain, ready="magnet ")
        collected = ok(veil(late, "grants", "--wait", "60", *chain))
        assert "keys checked and kept in the vault" in collected, collected
        ok(veil(late, "open", cid, "--out", str(tmp_path / "late.bin")))  # bought nodes that cover every slice
        assert (tmp_path / "late.bin").read_bytes() == movie.read_bytes()
        stop(server)
        server = None

        # a purchase never answered is refunded after its deadline (the devnet's clock moves on)
        unanswered = veil(late, "buy", cid, "--first", "0", "--count", "1", "--wait", "0", *chain)
        assert unanswered.returncode == 1 and "grant 3" in unanswered.stdout  # grants 1 and 2 were bought above
        assert "chain time is now" in ok(veil(late, "chain", "advance", "2h", *chain))
        refunded = ok(veil(late, "grants", *chain))
        assert "no keys by the deadline: 0.0000008 ETH refunded now" in " ".join(refunded.split()), refunded
    finally:
        if server is not None:
            server.kill()
        stop(devnet)


def read_until(process: subprocess.Popen, ready: str, seen: list[str]) -> None:
    for line in process.stdout:
        seen.append(line)
        if ready in line:
            return
    raise AssertionError("the process ended:\n" + "".join(seen))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.strip()
    assert result.returncode != 0 and err.startswith("error: ") and "\n" not in err, result.stderr + result.stdout
    return err


def test_one_serve_of_two_contents_and_one_process_per_content(tmp_path):
    """One `veil serve A B` serves both on one port; a viewer plays each. While a process of
    a vault works on a content, another of the same vault is refused in one line naming it."""
    require_anvil()
    creator, viewer = tmp_path / "creator", tmp_path / "viewer"
    new_vaults(creator, viewer)
    port, directory = free_port(), tmp_path / "devnet"
    chain = chain_flags(port, directory)
    devnet, _ = start_devnet(creator, port, directory)
    server = first = None
    try:
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        movies, cids = [], []
        for name in ("a", "b"):
            movie = tmp_path / f"{name}.bin"
            movie.write_bytes(os.urandom(200_000))
            published = ok(veil(creator, "publish", str(movie), "--slice-size", "64KiB", "--price", "1000000000000wei",
                                *chain))
            movies.append(movie)
            cids.append(content_id_of(published))
        ok(veil(viewer, "wallet", "faucet", "1", *chain))
        ok(veil(viewer, "wallet", "deposit", "0.1", *chain))

        server, banner = start(creator, "serve", *cids, "--keys", *chain, ready="magnet ")
        seen = [banner]
        read_until(server, "magnet ", seen)
        banner = "".join(seen)
        addresses = set(re.findall(r"serving [0-9a-f]{64} on ([\d.]+:\d+) and selling keys", banner))
        assert len(addresses) == 1  # one port for both
        magnets = re.findall(r"magnet (\S+)", banner)
        assert len(magnets) == 2 and all(cid in magnet for cid, magnet in zip(cids, magnets, strict=True))

        for movie, magnet in zip(movies, magnets, strict=True):
            out = tmp_path / f"played-{movie.name}"
            ok(veil(viewer, "play", magnet, "--out", str(out), *chain))
            assert out.read_bytes() == movie.read_bytes()

        # the creator's vault: the serving process holds both contents
        again = one_line_error(veil(creator, "serve", cids[1], *chain))
        assert re.search(rf"content {cids[1][:16]}… is in use by `veil serve` \(pid {server.pid}, since \d\d:\d\d\); "
                         "wait for it or stop it", again)
        assert f"pid {server.pid}" in one_line_error(veil(creator, "play", cids[0], "--peer", "127.0.0.1:9",
                                                          "--out", str(tmp_path / "x"), *chain))

        # two plays of one content in one vault: the first waits on a peer that never speaks
        silent = socket.create_server(("127.0.0.1", 0))
        with silent:
            hint = f"127.0.0.1:{silent.getsockname()[1]}"
            first = subprocess.Popen([*VEIL, "play", cids[0], "--peer", hint, "--out",
                                      str(tmp_path / "first.bin"), *chain], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=veil_env(viewer))
            lock = viewer / "locks" / f"content-{cids[0]}.lock"
            wait_for_file(lock, f'"pid": {first.pid}', first)  # another process's state: no event to await
            second = veil(viewer, "play", cids[0], "--peer", hint, "--out", str(tmp_path / "second.bin"), *chain)
            assert re.search(rf"content {cids[0][:16]}… is in use by `veil play` \(pid {first.pid}, since ",
                             one_line_error(second))
            assert not (tmp_path / "second.bin").exists()
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=60)
            first = None

        stopped = stop(server)
        server = None
        assert "stopped; cashed and claimed" in stopped
        with socket.create_server(("127.0.0.1", 0)) as taken:
            where = f"127.0.0.1:{taken.getsockname()[1]}"
            assert one_line_error(veil(creator, "serve", *cids, "--listen", where, *chain)).startswith(
                f"error: {where} is in use")
    finally:
        for process in (server, first):
            if process is not None:
                process.kill()
        stop(devnet)


def wait_for_file(path: Path, text: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else ""):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never named {text}"
        time.sleep(0.05)


def test_a_serve_whose_disk_fills_up_stops_in_one_line(tmp_path, small_disk):
    """The audit log or the ledger cannot keep a key release or a cheque: the serve stops (it
    would serve unpaid, or sell keys off the books), cashes what it kept and says why in one
    line; the viewer's play ends too, without a traceback."""
    require_anvil()
    creator, viewer = small_disk.path / "creator", tmp_path / "viewer"
    new_vaults(creator, viewer)
    port, directory = free_port(), tmp_path / "devnet"
    chain = chain_flags(port, directory)
    devnet, _ = start_devnet(viewer, port, directory)
    server = None
    try:
        movie = tmp_path / "movie.bin"
        movie.write_bytes(os.urandom(200_000))
        cid = published_and_funded(creator, viewer, movie, "1000000000000wei", chain)
        server, banner = start(creator, "serve", cid, "--keys", *chain, ready="magnet ")
        magnet = re.search(r"magnet (\S+)", banner)[1]
        small_disk.fill()

        played = veil(viewer, "play", magnet, "--out", str(tmp_path / "out.bin"), *chain)
        assert played.returncode != 0 and "Traceback" not in played.stderr
        out, _ = server.communicate(timeout=120)  # it stops by itself
        server = None
        assert "Traceback" not in out
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: stopped serving: no space left on the disk of "), out
    finally:
        if server is not None:
            server.kill()
        small_disk.free()
        stop(devnet)


def test_a_chain_outage_is_one_line_and_loses_no_cheque(tmp_path):
    """The chain goes away under a serving creator: one line says so (not one every poll),
    the exit says what stays uncashed, and once the chain is back `wallet cash` cashes it."""
    creator, viewer = tmp_path / "creator", tmp_path / "viewer"
    new_vaults(creator, viewer)
    port, directory = free_port(), tmp_path / "devnet"
    chain = chain_flags(port, directory)
    devnet, _ = start_devnet(creator, port, directory)
    server = None
    try:
        movie = tmp_path / "movie.bin"
        movie.write_bytes(os.urandom(300_000))
        cid = published_and_funded(creator, viewer, movie, "0.0001eth", chain)
        server, banner = start(creator, "serve", cid, "--keys", *chain, ready="magnet ")
        ok(veil(viewer, "play", re.search(r"magnet (\S+)", banner)[1], "--out", str(tmp_path / "o.bin"), *chain))
        stop(devnet)  # the chain is gone; the serve polls it every 2 s
        devnet = None
        deadline = time.monotonic() + 30
        seen = []
        for line in server.stdout:  # the outage is said once, as soon as the serve meets it
            seen.append(line)
            if "does not answer" in line or time.monotonic() > deadline:
                break
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=120)
        server = None
        out = "".join(seen) + rest
        assert out.count("does not answer") == 2, out  # the outage, then the exit
        assert "Traceback" not in out and "refused the transaction" not in out
        assert re.search(r"error: stopped; the chain at http://127\.0\.0\.1:\d+ does not answer \(connection refused\): "
                         r"0\.0005 ETH in 1 cheque stay in the ledger", out), out

        devnet, _ = start_devnet(creator, port, directory)
        assert re.search(r"cashed 1 cheque for 0\.0005 ETH", ok(veil(creator, "wallet", "cash", "--all", *chain)))
    finally:
        if server is not None:
            server.kill()
        if devnet is not None:
            stop(devnet)
