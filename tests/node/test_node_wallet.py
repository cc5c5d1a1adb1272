"""The wallet through the node's API, against real `veil up` processes on one devnet (anvil):
a viewer's node deposits, asks for a withdrawal (time-locked), cancels it, streams a paid
content; the creator's node shows the cheques it holds, what it earned per content (as
`veil wallet pending` and `history` say), cashes them with their gas. A viewer who asks to
withdraw has its cheques cashed by the creator's node before the time-lock ends, so the
withdrawal cannot take what it owed. Bad amounts, no token and a chain gone answer in words."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli_harness import chain_flags, content_id_of, free_port, new_vault, ok, require_anvil, start, start_devnet, stop_all, veil
from veilstream.chain import ChainClient
from veilstream.vault import Vault

SLICE = 16 * 1024
SLICES = 6
PRICE_WEI = 10**15  # 0.001 ETH a slice: a stream's cheques are worth their gas, and far below the threshold
CASH_THRESHOLD_WEI = 10**18  # the creator's node cashes by no threshold here: only when asked or when due
WAIT_S = 60.0


class NodeApi:
    def __init__(self, home: Path, banner: str) -> None:
        self.url = re.search(r"API (http://\S+)/api/v1", banner)[1]
        self.token = (home / "node" / "api-token").read_text().strip()

    def call(self, method: str, path: str, body=None, *, token: str | None = "", timeout_s: float = 120):
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(f"{self.url}/api/v1/{path}", method=method, headers=headers,
                                         data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, body=None, **kwargs):
        status, raw = self.call(method, path, body, **kwargs)
        return status, json.loads(raw)

    def ok(self, method: str, path: str, body=None) -> dict:
        status, answer = self.json(method, path, body)
        assert status in (200, 201), (status, answer)
        return answer


class ChainLink:
    """The TCP path from a node to the devnet, which a test can cut (connections refused) or
    stall (connections taken, nothing answered): the chain going away as a node meets it."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.stalled = False
        self.held = 0  # connections taken while stalled
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        self.stalled = False
        if self._listener is None:
            self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
            self._spawn(self._accept, self._listener)

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        self._drop()

    def stall(self) -> None:
        self.stalled, self.held = True, 0
        self._drop()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _drop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            self._keep(near)
            if self.stalled:
                self.held += 1
                continue  # held open, never answered
            try:
                far = socket.create_connection(self.target)
            except OSError:
                near.close()
                continue
            self._keep(far)
            self._spawn(self._pump, near, far)
            self._spawn(self._pump, far, near)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def wait_for(condition, what: str, timeout_s: float = WAIT_S):
    """The condition's value once it holds, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)


def wei(amount: dict) -> int:
    assert set(amount) == {"wei", "ether"} and isinstance(amount["wei"], str), amount
    return int(amount["wei"])


def node_flags(rpc_url: str, directory: Path, *extra: str) -> list[str]:
    return ["up", "--api-port", "0", "--set", f"node.chain_rpc_url={rpc_url}",
            "--set", f"node.chain_deployment={directory / 'devnet.json'}", *extra]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    require_anvil()
    tmp = tmp_path_factory.mktemp("wallet")
    creator, viewer, payer = tmp / "creator", tmp / "viewer", tmp / "payer"
    for home in (creator, viewer, payer):
        new_vault(home)
    port, directory = free_port(), tmp / "devnet"
    chain = chain_flags(port, directory)
    devnet, _ = start_devnet(creator, port, directory)
    processes = [devnet]
    link = ChainLink(port)
    try:
        plaintext = os.urandom(SLICES * (SLICE - 16) - 100)
        (tmp / "movie.bin").write_bytes(plaintext)
        ok(veil(creator, "wallet", "faucet", "1", *chain))
        published = ok(veil(creator, "publish", str(tmp / "movie.bin"), "--slice-size", "16KiB",
                            "--price", f"{PRICE_WEI}wei", *chain))
        for home in (viewer, payer):
            ok(veil(home, "wallet", "faucet", "1", *chain))
            ok(veil(home, "wallet", "deposit", "0.05", *chain))
        creator_node, creator_banner = start(
            creator, *node_flags(f"http://127.0.0.1:{port}", directory,
                                 "--set", f"market.cash_threshold_wei={CASH_THRESHOLD_WEI}"), ready="API ")
        processes.append(creator_node)
        # The viewer's node reaches the chain through a link the last test cuts; it gives up on
        # a silent chain after 3 s.
        viewer_node, viewer_banner = start(viewer, *node_flags(link.url, directory, "--set", "chain.rpc_timeout_s=3"),
                                           ready="API ")
        processes.append(viewer_node)
        peers_at = re.search(r"peers at (\S+:\d+)", creator_banner)[1]
        yield dict(
            chain=chain, link=link, plaintext=plaintext, cid=content_id_of(published),
            magnet=re.search(r"(magnet:\?\S+)", published)[1] + f"&x.pe={peers_at}",
            creator_home=creator, viewer_home=viewer, payer_home=payer, tmp=tmp,
            creator=NodeApi(creator, creator_banner), viewer=NodeApi(viewer, viewer_banner),
            observer=ChainClient.connect(f"http://127.0.0.1:{port}", directory / "devnet.json"),
            address={home.name: Vault.open(home).public_identity()["wallet_address"] for home in (creator, viewer, payer)},
        )
    finally:
        stop_all(processes)
        link.close()


ROUTES = [("GET", "wallet"), ("POST", "wallet/deposit"), ("POST", "wallet/withdrawals"),
          ("POST", "wallet/withdrawals/execute"), ("DELETE", "wallet/withdrawals"), ("GET", "wallet/pending"),
          ("POST", "wallet/cash"), ("POST", "wallet/claim"), ("GET", "wallet/history"), ("GET", "earnings")]


@pytest.mark.parametrize("method,path", ROUTES)
def test_the_wallet_answers_only_with_the_token(net, method, path):
    for token in (None, "not-the-token"):
        status, answer = net["viewer"].json(method, path, {"amount": "1000wei"}, token=token)
        assert status == 401 and "API token" in answer["error"]
    assert net["observer"].pending_withdrawal(net["address"]["viewer"]) is None  # nothing was done


def test_a_deposit_moves_the_deposit_and_the_balance(net):
    viewer = net["viewer"]
    before = viewer.ok("GET", "wallet")
    assert before["address"] == net["address"]["viewer"]
    done = viewer.ok("POST", "wallet/deposit", {"amount": "0.01"})
    assert wei(done["deposited"]) == 10**16 and done["deposited"]["ether"] == "0.01 ETH"
    assert wei(done["deposit"]) == wei(before["deposit"]) + 10**16 and wei(done["gas"]) > 0
    after = viewer.ok("GET", "wallet")
    assert wei(after["deposit"]) == wei(done["deposit"]) == net["observer"].deposit_of(net["address"]["viewer"])
    assert wei(after["balance"]) == wei(before["balance"]) - 10**16 - wei(done["gas"])
    for text, amount in (("5000gwei", 5000 * 10**9), ("1000wei", 1000)):  # the CLI's units
        assert wei(viewer.ok("POST", "wallet/deposit", {"amount": text})["deposited"]) == amount
    assert wei(viewer.ok("GET", "wallet")["deposit"]) == wei(after["deposit"]) + 5000 * 10**9 + 1000


@pytest.mark.parametrize("path,body,status,says", [
    ("wallet/deposit", {"amount": "-1"}, 400, "negative"),
    ("wallet/deposit", {"amount": "0.0.1"}, 400, "not an amount"),
    ("wallet/deposit", {"amount": "1.5wei"}, 400, "whole number of wei"),
    ("wallet/deposit", {"amount": 5}, 400, "as a string"),  # 5 ether or 5 wei? refused, not guessed
    ("wallet/deposit", {}, 400, "as a string"),
    ("wallet/deposit", {"amount": "0"}, 400, "more than 0"),
    ("wallet/deposit", {"amount": "1000"}, 400, "not enough ether in the account"),
    ("wallet/withdrawals", {"amount": "-0.1"}, 400, "negative"),
    ("wallet/withdrawals", {"amount": "1000"}, 400, "free deposit is"),
    ("wallet/withdrawals", {"amount": "0"}, 400, "more than 0"),
])
def test_a_bad_amount_is_refused_in_words_and_changes_nothing(net, path, body, status, says):
    viewer, me = net["viewer"], net["address"]["viewer"]
    deposit = net["observer"].deposit_of(me)
    code, answer = viewer.json("POST", path, body)
    assert code == status and says in answer["error"], answer
    assert "Traceback" not in answer["error"]
    assert net["observer"].deposit_of(me) == deposit and net["observer"].pending_withdrawal(me) is None


def test_a_withdrawal_is_time_locked_then_cancelled(net):
    viewer, observer, me = net["viewer"], net["observer"], net["address"]["viewer"]
    status, asked = viewer.json("POST", "wallet/withdrawals", {"amount": "0.001"})
    assert status == 201, asked
    try:
        pending = asked["withdrawal"]
        unlock_at = observer.pending_withdrawal(me).unlock_at
        assert wei(pending["amount"]) == 10**15 and pending["unlock_at"] == unlock_at and not pending["executable"]
        delay = observer.deployment.settings.withdrawal_delay_s
        assert delay - 10 <= pending["seconds_left"] <= delay and wei(asked["gas"]) > 0
        shown = viewer.ok("GET", "wallet")["withdrawal"]
        assert shown["unlock_at"] == unlock_at and 0 < shown["seconds_left"] <= pending["seconds_left"]

        code, answer = viewer.json("POST", "wallet/withdrawals/execute")  # too early
        assert code == 409 and "time-locked" in answer["error"] and "in 2" in answer["error"], answer
        code, answer = viewer.json("POST", "wallet/withdrawals", {"amount": "0.002"})  # one at a time
        assert code == 409 and "already requested" in answer["error"]
        assert observer.pending_withdrawal(me).amount == 10**15
    finally:
        cancelled = viewer.ok("DELETE", "wallet/withdrawals")
    assert cancelled["cancelled"] is True and wei(cancelled["gas"]) > 0
    assert observer.pending_withdrawal(me) is None and viewer.ok("GET", "wallet")["withdrawal"] is None
    for method, path in (("DELETE", "wallet/withdrawals"), ("POST", "wallet/withdrawals/execute")):
        code, answer = viewer.json(method, path)
        assert code == 409 and "no withdrawal requested" in answer["error"]


def stream_all(net) -> int:
    """The viewer's node streams the whole content through /media; returns what it paid."""
    viewer, cid = net["viewer"], net["cid"]
    status, opened = viewer.json("POST", "streams", {"content": net["magnet"]})
    assert status == 201, opened
    try:
        status, data = viewer.call("GET", f"contents/{cid}/media")
        assert status == 200 and data == net["plaintext"]
    finally:
        stopped = viewer.ok("DELETE", f"streams/{cid}")
    assert stopped["paid_wei"] == SLICES * PRICE_WEI
    return stopped["paid_wei"]


def held_from(pending: dict, viewer: str) -> list[dict]:
    return [cheque for cheque in pending["cheques"] if cheque["viewer"] == viewer]


def cli_history(home: Path, chain: list[str]) -> list[dict]:
    return json.loads(ok(veil(home, "wallet", "history", "--json", *chain)))


def test_a_paid_stream_leaves_cheques_the_creator_shows_earns_and_cashes(net):
    creator, viewer, cid, observer = net["creator"], net["viewer"], net["cid"], net["observer"]
    me, them = net["address"]["creator"], net["address"]["viewer"]
    paid = stream_all(net)

    # the creator's node holds the viewer's cheques, uncashed (below its threshold), due by their lane's time
    pending = wait_for(lambda: (p := creator.ok("GET", "wallet/pending"))
                       and sum(wei(c["uncashed"]) for c in held_from(p, them)) == paid and p, "the cheques arrive")
    [held] = held_from(pending, them)
    assert held["content_id"] == cid and held["payee"] == me and wei(held["signed"]) == paid
    lane = observer.guarantee(them, cid, me)
    assert held["due_by"] == lane.until - 1800 and held["seconds_left"] > 0  # the margin: MarketSettings' 30 min

    # as `veil wallet pending` and `veil wallet history` say, per content: earned, cashed, pending
    cli_pending = ok(veil(net["creator_home"], "wallet", "pending", *net["chain"]))
    assert re.search(rf"{them}\s.*{cid[:16]}….*0\.006 ETH", cli_pending), cli_pending
    earned_rows = [r for r in cli_history(net["creator_home"], net["chain"])
                   if r["kind"] == "earned in cheques" and r["content_id"] == cid]
    earnings = creator.ok("GET", "earnings")
    [content] = [c for c in earnings["contents"] if c["content_id"] == cid]
    assert content["role"] == "creator"
    assert wei(content["earned"]) == sum(r["amount_wei"] for r in earned_rows)
    assert wei(content["cashed"]) == sum(r["cashed_wei"] for r in earned_rows)
    assert wei(content["pending"]) == wei(content["earned"]) - wei(content["cashed"]) >= paid
    # the creator seeds its own content: the seeder share and the creator's part are both its own
    share = observer.content(cid).seeder_share_bps
    for part in ("earned", "pending"):
        assert wei(content["as_seeder"][part]) + wei(content["as_creator"][part]) == wei(content[part])
    assert wei(content["as_seeder"]["earned"]) == wei(content["earned"]) * share // 10_000
    assert viewer.ok("GET", "wallet")["committed"]["contents"] == [{"content_id": cid, "amount": {
        "wei": str(paid), "ether": "0.006 ETH"}}]

    # cash now: the cheques are paid on chain, with the gas it cost
    before = observer.cashed(them, cid, me)
    cashed = creator.ok("POST", "wallet/cash")
    assert cashed["cheques_cashed"] >= 1 and wei(cashed["gas"]) > 0 and not cashed["failures"]
    assert {(c["viewer"], c["content_id"], c["payee"]) for c in cashed["cashed"]} >= {(them, cid, me)}
    assert observer.cashed(them, cid, me) == paid and wei(cashed["paid"]) >= paid - before
    assert held_from(creator.ok("GET", "wallet/pending"), them) == []
    [content] = [c for c in creator.ok("GET", "earnings")["contents"] if c["content_id"] == cid]
    assert wei(content["pending"]) == 0 and wei(content["cashed"]) == wei(content["earned"])
    assert viewer.ok("GET", "wallet")["committed"]["contents"] == []

    # the histories list the transactions, with their gas
    transactions = creator.ok("GET", "wallet/history")["transactions"]
    by_hash = {t["tx_hash"]: t for t in transactions}
    for tx_hash in cashed["tx_hashes"]:
        assert by_hash[tx_hash]["kind"] == "cheques cashed" and wei(by_hash[tx_hash]["gas"]) > 0
    assert sum(wei(by_hash[tx_hash]["gas"]) for tx_hash in cashed["tx_hashes"]) == wei(cashed["gas"])
    assert "content registered" in {t["kind"] for t in transactions}
    history = viewer.ok("GET", "wallet/history")
    kinds = {t["kind"] for t in history["transactions"]}
    assert {"lanes opened", "deposit"} <= kinds and all(wei(t["gas"]) > 0 for t in history["transactions"])
    [spent] = [e for e in history["entries"] if e["kind"] == "paid in cheques" and e["content_id"] == cid]
    assert spent["counterparty"] == me and wei(spent["amount"]) == wei(spent["cashed"]) == paid

    # and claim the earnings to the account
    unclaimed = wei(creator.ok("GET", "earnings")["unclaimed"])
    assert unclaimed >= paid
    balance = observer.balance(me)
    claimed = creator.ok("POST", "wallet/claim", {"ignore_gas": True})
    assert wei(claimed["claimed"]) == unclaimed and wei(claimed["gas"]) > 0
    assert observer.balance(me) == balance + unclaimed - wei(claimed["gas"]) and observer.earnings(me) == 0
    status, answer = creator.json("POST", "wallet/claim")
    assert status == 409 and "nothing to claim" in answer["error"]


def test_a_withdrawal_request_makes_the_node_cash_that_viewers_cheques_before_the_time_lock_ends(net):
    # runs after the others: it moves the devnet's clock a day on
    creator, observer, cid, chain = net["creator"], net["observer"], net["cid"], net["chain"]
    payer_home, payer, me = net["payer_home"], net["address"]["payer"], net["address"]["creator"]
    ok(veil(payer_home, "play", net["magnet"], "--out", str(net["tmp"] / "played.bin"), "--no-view", *chain))
    owed = SLICES * PRICE_WEI
    wait_for(lambda: sum(wei(c["uncashed"]) for c in held_from(creator.ok("GET", "wallet/pending"), payer)) == owed,
             "the creator's node holds the payer's cheques")
    assert observer.cashed(payer, cid, me) == 0  # below the threshold: the node keeps them for later

    deposit = observer.deposit_of(payer)  # the free part, beside the lane held for the creator
    lane = observer.lane(payer, cid, me)
    asked = ok(veil(payer_home, "wallet", "withdraw", "request", "all", *chain))
    assert "execute it in 24h" in asked
    request = observer.pending_withdrawal(payer)
    assert request.amount == deposit

    # the node saw the request on chain and cashed what the payer owed, long before the unlock
    wait_for(lambda: observer.cashed(payer, cid, me) == owed, "the node cashes the payer's cheques")
    assert observer.timestamp() < request.unlock_at
    assert held_from(creator.ok("GET", "wallet/pending"), payer) == []
    cash = next(t for t in creator.ok("GET", "wallet/history")["transactions"] if t["kind"] == "cheques cashed")
    assert wei(cash["amount"]) == owed and wei(cash["gas"]) > 0 and cash["when"] < request.unlock_at  # the newest

    # past the lock (and the lane's time): the payer takes back what it did not owe, no more
    ok(veil(payer_home, "chain", "advance", "25h", *chain))
    closed = ok(veil(payer_home, "wallet", "lanes", "--close", *chain))
    assert re.search(r"returned ([\d.]+) ETH", closed)
    assert "withdrew" in ok(veil(payer_home, "wallet", "withdraw", "execute", *chain))
    [withdrawn] = [e.args["amount"] for e in observer.events(names=["Withdrawn"]).events if e.args["viewer"] == payer]
    assert withdrawn == request.amount  # the free deposit it asked for, all of it
    assert observer.deposit_of(payer) == lane.amount - owed  # what the lane held beyond the cheques is the payer's
    assert observer.cashed(payer, cid, me) == owed and observer.shortfall(payer, cid, me) == 0
    earned = [r for r in cli_history(net["creator_home"], chain) if r["kind"] == "earned in cheques"
              and r["counterparty"] == payer]
    assert [(r["amount_wei"], r["cashed_wei"]) for r in earned] == [(owed, owed)]


def test_a_chain_that_does_not_answer_is_a_503_in_words_and_the_api_stays_up(net):
    # runs last: it cuts the viewer's node off the chain, then joins it again
    viewer, link = net["viewer"], net["link"]
    link.stall()  # the chain takes the connection and says nothing
    try:
        outcome = {}
        asking = threading.Thread(target=lambda: outcome.update(answer=viewer.json("GET", "wallet")))
        asking.start()
        try:
            wait_for(lambda: link.held, "the node asks the silent chain")
            status, health = viewer.json("GET", "health", token=None, timeout_s=5)  # not held up behind it
            assert status == 200 and health == {"status": "ok"}
            assert viewer.json("GET", "streams", timeout_s=5)[0] == 200
            assert asking.is_alive()  # the wallet still waits for the chain meanwhile
        finally:
            link.cut()  # now nothing listens: refused at once
            asking.join(timeout=60)
        status, answer = outcome["answer"]
        assert status == 503 and "does not answer" in answer["error"], answer
        for method, path, body in (("POST", "wallet/deposit", {"amount": "0.001"}), ("GET", "earnings", None)):
            status, answer = viewer.json(method, path, body)
            assert status == 503 and "does not answer (connection refused)" in answer["error"], (path, answer)
    finally:
        link.restore()
    wait_for(lambda: viewer.json("GET", "wallet")[0] == 200, "the wallet answers again")
