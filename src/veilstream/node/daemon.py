"""`veil up`: one long-running node per vault that plays every role for its user.

The `Node` is the composition root: it holds the vault's node lock (one node per vault),
unlocks the identity, opens the chain, seeds every content the vault holds behind a market
service (selling the keys of the user's own contents), answers grants, watches the chain,
cashes through one Cashier, and serves the HTTP API — all under one AsyncExitStack and
TaskGroup. A signal stops it: no more peers, what is owed cashed, the ledger flushed.

    with Node.open(home, config, passphrase) as node:   # sync: lock, unlock, chain, offers
        run(node.serve(stop, on_ready))                 # async: swarm, API, upkeep
        report = node.finish()                          # sync: anchor, cash, claim

Files under the vault: `node/api-token` (0600, new at every start), `node/node.json`
(where the API is, while the node runs), `logs/node.log` (rotated; scrubbed of secrets),
`node/feed-cursor.json` (where the feed catches up from after a restart; node/feed.py),
`node/streams.json` (the streams to open again at the next start; node/kept_streams.py).

Contents come and go while it runs: `publish` (an upload, through node/publishing.py) ends in
`add_content`, which seeds it at once; `remove_content` stops seeding one and removes it from
the vault (refused while a stream of it is open or cheques for it are uncashed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import secrets
import socket
import time
from contextlib import AsyncExitStack, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from veilstream.atomic import replace_file
from veilstream.chain import ChequeLedger, open_chain
from veilstream.errors import VeilError
from veilstream.market import messages
from veilstream.content import PublishError, PublishOptions, parse_content_id
from veilstream.market.lanes import NoCover
from veilstream.market.stream import BudgetSpent
from veilstream.node.api import allowed_hosts, create_app
from veilstream.node.config import Config
from veilstream.node.feed import FeedKeeper, live_summary
from veilstream.node.hints import magnet_hints
from veilstream.node.kept_streams import KeptStream, KeptStreams
from veilstream.node.limits import NodeLimits
from veilstream.node.live import Live
from veilstream.node.local_tracker import LocalTracker, local_tracker_port
from veilstream.node.publishing import QUEUED, SEEDING, PublishJob, Publishes, publish_into_vault
from veilstream.node.selling import Seller
from veilstream.node.session import Sessions, UnlockThrottle
from veilstream.node.units import parse_amount
from veilstream.node.watching import Viewing, paid_for
from veilstream.swarm import UT_METADATA, ExtensionRegistry, SwarmNode
from veilstream.vault import Vault

log = logging.getLogger("veilstream.node")

NODE_LOCK = "node"
TOKEN_FILE = Path("node") / "api-token"
INFO_FILE = Path("node") / "node.json"
PAUSED_FILE = Path("node") / "paused.json"  # content ids the user paused: they stay paused across restarts
LOG_FILE = Path("logs") / "node.log"
# After a stop, open responses get this long to end: a live-events client that stopped
# reading would otherwise hold the shutdown forever.
API_DRAIN_S = 3.0
WALLET_LOCK_WAIT_S = 60.0  # another process of this vault is sending: each send holds the lock for one RPC round


class NodeError(VeilError):
    pass


class NotFound(NodeError):
    http_status = 404


class Conflict(NodeError):
    http_status = 409


@dataclass(frozen=True)
class Ready:
    """What a started node tells its user."""

    api_url: str
    swarm_address: tuple[str, int]
    contents: int


class _SecretScrubber(logging.Filter):
    """No key, passphrase, mnemonic or token reaches the log, whatever a message quotes."""

    def __init__(self, secrets_: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets_ if len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = message
        for secret in self._secrets:
            scrubbed = scrubbed.replace(secret, "[secret]")
        if scrubbed != message or record.exc_info:
            if record.exc_info:  # a traceback's text may quote a secret too: render it here, scrubbed
                text = logging.Formatter().formatException(record.exc_info)
                for secret in self._secrets:
                    text = text.replace(secret, "[secret]")
                scrubbed = f"{scrubbed}\n{text}"
                record.exc_info = None
                record.exc_text = None
            record.msg, record.args = scrubbed, None
        return True


class _ApiServer(uvicorn.Server):
    def capture_signals(self):  # the node handles signals itself and stops the server
        return nullcontext()


class Node:
    def __init__(self, home: Path, config: Config) -> None:
        self.home = Path(home)
        self.config = config
        self.settings = config["node"]
        self.started_at = time.time()
        self._stack = ExitStack()
        self.seller: Seller | None = None
        self.swarm: SwarmNode | None = None
        self.limits: NodeLimits | None = None
        self.api_url: str | None = None
        self._api_hosts: frozenset[str] = frozenset()
        self._token = secrets.token_urlsafe(32)
        self._stop: asyncio.Event | None = None
        self.viewings: dict[str, Viewing] = {}  # content id → its paid stream
        self._viewing_locks: dict[str, ExitStack] = {}
        self._content_locks: dict[str, ExitStack] = {}  # content id → this node's hold on it
        self._metadata: dict[str, dict[str, Any] | None] = {}  # content id → what its encrypted metadata says
        self._group: asyncio.TaskGroup | None = None  # while serving: where publishes run
        self._publishing: asyncio.Lock | None = None  # one publish encrypts at a time (they are CPU bound)
        self.publishes = Publishes(lambda view: self.live.publish("publish", view))
        self.kept_streams = KeptStreams(self.home)
        # ids from the start time (µs): an id a client kept from an earlier run is always older
        self.live = Live(self.settings.events_kept, first_id=time.time_ns() // 1000)
        self.api_port = 0
        settings = self.settings
        self.sessions = Sessions(idle_s=settings.session_idle_s, max_s=settings.session_max_s,
                                 kept=settings.sessions_kept)
        self.unlock_throttle = UnlockThrottle(free_failures=settings.unlock_free_failures,
                                              base_delay_s=settings.unlock_base_delay_s,
                                              max_delay_s=settings.unlock_max_delay_s)

    # -- opening (sync) ---------------------------------------------------------------------
    @classmethod
    def open(cls, home: Path, config: Config, passphrase: str) -> Node:
        node = cls(home, config)
        try:
            node._open(passphrase)
        except BaseException:
            node.close()
            raise
        return node

    def _open(self, passphrase: str) -> None:
        vault = Vault.open(self.home)
        self._stack.enter_context(vault.hold(NODE_LOCK, "veil up"))  # a second node of this vault is refused
        unlocked = vault.unlock(passphrase)
        identity = unlocked.identity()
        self.secrets = [passphrase, identity.mnemonic, self._token,
                        *(key.hex() for key in (identity.wallet_key, identity.nostr_key, identity.x25519_key,
                                                identity.creator_seed))]
        self._start_log(self.secrets)
        settings = self.settings
        client = open_chain(self.home / "chain", identity.wallet, rpc_url=settings.chain_rpc_url or None,
                            deployment_path=Path(settings.chain_deployment) if settings.chain_deployment else None,
                            client_settings=self.config["chain"])
        self._stack.callback(client.close)
        client.sender_lock = lambda address: unlocked.hold(f"wallet-{address.lower()}", "veil up",
                                                           wait_s=WALLET_LOCK_WAIT_S)
        self.client = client
        ledger = ChequeLedger(self.home / "chain" / "cheques.sqlite")
        self._stack.callback(ledger.close)
        self.vault, self.identity, self.ledger = unlocked, identity, ledger
        self.local_tracker = LocalTracker(local_tracker_port()) if settings.local_tracker else None
        self.trackers = [*settings.trackers, *([self.local_tracker.url] if self.local_tracker else [])]
        self.seller = Seller(unlocked, identity, client, ledger, self.config["market"],
                             trackers=self.trackers, on_fatal=self._fatal)
        self.roles: dict[str, str] = {}
        self._stack.callback(self._release_contents)
        paused = self._read_paused()
        for held in unlocked.contents():
            self._hold(held.content_id)
            offer = self.seller.offer(held.content_id, keys=held.role == "creator")
            offer.paused = held.content_id in paused
            self.roles[held.content_id] = held.role
            self._metadata[held.content_id] = self._read_metadata(held.content_id, held.role, offer.torrent)
        self.feed = FeedKeeper.open(self.home, identity.nostr_pubkey, self.config["social"], self._stack)
        self.feed.subscribe(lambda event: self.live.publish("feed", live_summary(event)))
        replace_file(self.home / TOKEN_FILE, (self._token + "\n").encode(), mode=0o600)
        self.wallet_address = identity.wallet_address
        log.info("node opened: %d contents, wallet %s", len(self.roles), identity.wallet_address)

    def _start_log(self, secrets_: list[str]) -> None:
        path = self.home / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=self.settings.log_max_bytes,
                                                       backupCount=self.settings.log_files_kept, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_SecretScrubber(secrets_))
        loggers = [logging.getLogger("veilstream"), logging.getLogger("uvicorn.error")]
        for logger in loggers:
            logger.addHandler(handler)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)

        def stop_log() -> None:
            for logger in loggers:
                logger.removeHandler(handler)
            handler.close()

        self._stack.callback(stop_log)

    def _fatal(self) -> None:  # the seller cannot go on (a full disk, say): stop the node
        if self._stop is not None:
            self._stop.set()

    # -- running (async) --------------------------------------------------------------------
    async def serve(self, stop: asyncio.Event, on_ready=lambda ready: None) -> None:
        """Run every role until `stop` is set (or a fatal error sets it)."""
        self._stop = stop
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.seller.on_loop_error)
        registry = ExtensionRegistry((UT_METADATA, messages.MARKET_EXTENSION))
        async with AsyncExitStack() as stack:
            self.swarm = await stack.enter_async_context(SwarmNode(self.config["swarm"], registry=registry))
            self.limits = NodeLimits(self.home, self.swarm, lambda cid: cid in self.roles or cid in self.viewings)
            self.seller.start(self.swarm, loop)
            api_socket = self._bind_api()
            stack.callback(api_socket.close)
            host, port = api_socket.getsockname()[:2]
            self._api_hosts = allowed_hosts(self.settings.api_host, port)
            self.api_port = port
            shown_host = f"[{host}]" if ":" in host else host
            self.api_url = f"http://{shown_host}:{port}"
            app = create_app(self)
            server = _ApiServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                               timeout_graceful_shutdown=API_DRAIN_S))
            group = self._group = await stack.enter_async_context(asyncio.TaskGroup())
            self._publishing = asyncio.Lock()
            api = group.create_task(server.serve(sockets=[api_socket]), name="node-api")
            cashier = group.create_task(self.seller.cashier.supervise(), name="node-cashier")
            feed = group.create_task(self.feed.run(), name="node-feed")
            if self.local_tracker is not None:
                stack.push_async_callback(_cancelled, group.create_task(self.local_tracker.run(), name="node-tracker"))
            while not server.started:
                if api.done():
                    break
                await asyncio.sleep(0.01)
            if api.done():  # the server gave up at start: its error leaves with the group
                cashier.cancel()
                feed.cancel()
                return
            self._write_info()
            stack.callback(self._remove_info)
            on_ready(Ready(self.api_url, self.swarm.listen_address, len(self.roles)))
            log.info("node up: API %s, peers at %s:%d", self.api_url, *self.swarm.listen_address)
            resuming = group.create_task(self._resume_streams(), name="node-resume-streams")
            interval = self.settings.poll_interval_s
            while not stop.is_set():
                self.seller.poll(loop.time())
                self.live.look(self.status())
                try:
                    async with asyncio.timeout(interval):
                        await stop.wait()
                except TimeoutError:
                    pass
            log.info("node stopping")
            self.publishes.cancel_all()  # each gives up at its next slice, leaving nothing behind
            self.live.hub.close()  # open event streams end, so the API server can stop
            server.should_exit = True
            cashier.cancel()  # what is left is cashed after the loop, in `finish`
            feed.cancel()  # it writes its cursor on the way out
            resuming.cancel()
            for cid in list(self.viewings):
                await self.stop_stream(cid, forget=False)  # open again at the next start
            await self.seller.stop()

    def _bind_api(self) -> socket.socket:
        host, port = self.settings.api_host, self.settings.api_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise NodeError(f"the API cannot listen on {host}:{port}: {exc.strerror} (set node.api_port in "
                            "config.toml or pass --api-port; 0 takes any free port)") from None
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _write_info(self) -> None:
        info = {"pid": os.getpid(), "api_url": self.api_url, "started_at": self.started_at}
        replace_file(self.home / INFO_FILE, json.dumps(info).encode(), mode=0o600)

    def _remove_info(self) -> None:
        try:
            (self.home / INFO_FILE).unlink()
        except FileNotFoundError:
            pass

    # -- the API's view ----------------------------------------------------------------------
    @property
    def api_hosts(self) -> frozenset[str]:
        return self._api_hosts

    @property
    def api_token(self) -> str:
        return self._token

    # -- watching ------------------------------------------------------------------------------
    async def start_stream(self, content: str, budget: str | None, *, kept: KeptStream | None = None) -> dict[str, Any]:
        """Open a paid stream of `content` (id or magnet) spending at most `budget`; it is
        opened again at every start until stopped (`kept`: the one opened before, resumed
        with what its budget has left)."""
        cid = parse_content_id(content)
        if cid in self.viewings:
            return self.viewings[cid].stats()
        if cid in self.roles:
            raise Conflict(f"this node holds {cid[:16]}… whole and seeds it: `veil open` decrypts it with the keys "
                           "the vault holds")
        signed_now = paid_for(self.ledger, self.client, self.wallet_address, bytes.fromhex(cid))
        budget_wei = kept.budget_left(signed_now) if kept else parse_amount(budget) if budget else None
        if kept and not budget_wei:
            self.kept_streams.forget(cid)
            log.info("the stream of %s… had spent its budget: not resumed", cid[:16])
            return {"content_id": cid, "open": False, "resumed": False}
        trackers, peers = magnet_hints(content)
        locks = ExitStack()
        locks.enter_context(self.vault.hold_content(cid, "veil up"))
        try:
            viewing = await Viewing.start(self.swarm, self.vault, self.identity, self.client, self.ledger, cid,
                                          peers=peers, trackers=[*trackers, *self.trackers],
                                          budget_wei=budget_wei, stall_timeout_s=self.settings.media_stall_timeout_s)
        except BaseException:
            locks.close()
            raise
        self.viewings[cid] = viewing
        self._viewing_locks[cid] = locks
        if kept is None:
            self.kept_streams.keep(cid, KeptStream(content, viewing.budget_wei, signed_now))
        log.info("%s %s… within %d wei", "resumed the stream of" if kept else "streaming", cid[:16], viewing.budget_wei)
        return viewing.stats()

    async def _resume_streams(self) -> None:
        """Open again the streams the user had open when the node last stopped (or died)."""
        for cid, kept in list(self.kept_streams.streams.items()):
            try:
                await self.start_stream(kept.content, None, kept=kept)
            except VeilError as exc:  # kept: the next start tries again, or the user stops it
                log.warning("the stream of %s… could not be resumed: %s", cid[:16], exc)

    def viewing(self, content_id: str) -> Viewing:
        cid = parse_content_id(content_id)
        viewing = self.viewings.get(cid)
        if viewing is None:
            raise NotFound(f"no stream of {cid[:16]}… is open: start one with a budget (POST /api/v1/streams)")
        return viewing

    async def stop_stream(self, content_id: str, *, forget: bool = True) -> dict[str, Any]:
        """Stop a stream; `forget`: for good (else it is resumed at the next start)."""
        cid = parse_content_id(content_id)
        if forget and cid not in self.viewings and self.kept_streams.forget(cid):
            return {"content_id": cid, "open": False, "resumed": False}  # one that could not be resumed
        viewing = self.viewing(content_id)
        if forget:
            self.kept_streams.forget(cid)
        cid = viewing.torrent.content_id
        stats = viewing.stats()
        try:
            await viewing.aclose(self.swarm)
        finally:
            del self.viewings[cid]
            self._viewing_locks.pop(cid).close()
        log.info("stream of %s… stopped after paying %d wei", cid[:16], stats["paid_wei"])
        return stats

    # -- seeding ---------------------------------------------------------------------------
    def _offer_of(self, content_id: str):
        cid = parse_content_id(content_id)
        offer = self.seller.offers.get(bytes.fromhex(cid))
        if offer is None:
            raise NotFound(f"this node does not hold {cid[:16]}… (`veil list` shows what the vault holds)")
        return offer

    async def pause(self, content_id: str) -> dict[str, Any]:
        """Stop seeding a content (and selling its keys), now and after restarts."""
        offer = await self.seller.pause(self._offer_of(content_id).torrent.info_hash)
        self._write_paused()
        log.info("paused %s…", offer.torrent.content_id[:16])
        return self._content_status(offer)

    def resume(self, content_id: str) -> dict[str, Any]:
        offer = self.seller.resume(self._offer_of(content_id).torrent.info_hash)
        self._write_paused()
        log.info("resumed %s…", offer.torrent.content_id[:16])
        return self._content_status(offer)

    def _hold(self, cid: str) -> None:
        """This node holds the content (one process at a time works on it) until it removes it."""
        locks = ExitStack()
        locks.enter_context(self.vault.hold_content(cid, "veil up"))
        self._content_locks[cid] = locks

    def _release_contents(self) -> None:
        for locks in self._content_locks.values():
            locks.close()
        self._content_locks.clear()

    async def add_content(self, content_id: str, role: str = "creator") -> dict[str, Any]:
        """Seed a content the vault now holds (with its keys on sale if `role` is the
        creator's), at once, without a restart; registers it on chain if need be."""
        cid = parse_content_id(content_id)
        if cid in self.roles:
            raise Conflict(f"this node seeds {cid[:16]}… already")
        self._hold(cid)
        try:
            def prepare():
                offer = self.seller.prepare(cid, keys=role == "creator")
                return offer, self._read_metadata(cid, role, offer.torrent)

            try:  # on the chain thread: the offer may register the content, in order with this account's other sends
                future = self.seller.cashier.send(prepare)
            except RuntimeError:  # its worker is shut: the node is stopping
                raise NodeError("the node is stopping: it seeds nothing new") from None
            offer, self._metadata[cid] = await asyncio.wrap_future(future)
            self.seller.add(offer)
        except BaseException:
            self._content_locks.pop(cid).close()
            raise
        self.roles[cid] = role
        log.info("seeding %s… (%s)", cid[:16], role)
        return self._content_status(offer)

    async def remove_content(self, content_id: str) -> dict[str, Any]:
        """Stop seeding a content and remove its ciphertext and torrent from the vault (its
        keys stay, as `veil rm` keeps them). Refused while a stream of it is open, or while
        cheques for it are uncashed: cash them first (`POST /api/v1/wallet/cash`)."""
        cid = parse_content_id(content_id)
        if cid in self.viewings:
            raise Conflict(f"a stream of {cid[:16]}… is open: stop it first (DELETE /api/v1/streams/{cid})")
        offer = self._offer_of(cid)
        owed = self.seller.cashier.uncashed_wei_of(offer.torrent.info_hash)
        if owed:
            raise Conflict(f"cheques worth {owed} wei for {cid[:16]}… are not cashed yet: cash them first "
                           "(POST /api/v1/wallet/cash), then remove it")
        await self.seller.drop(offer.torrent.info_hash)
        del self.roles[cid]
        self._metadata.pop(cid, None)
        self._write_paused()
        try:
            freed = await asyncio.to_thread(self.vault.remove, cid)  # still held: nobody else writes it meanwhile
        finally:
            self._content_locks.pop(cid).close()
        log.info("removed %s…: %d bytes freed", cid[:16], freed)
        return {"content_id": cid, "removed": True, "freed_bytes": freed}

    # -- publishing ------------------------------------------------------------------------
    def publish(self, job: PublishJob, source: Path, options: PublishOptions, scratch: ExitStack) -> None:
        """Publish the uploaded `source` as this node's content, off the loop, then seed it;
        `scratch` (the upload's directory) is closed when it ends, however it ends."""
        if self._group is None:
            scratch.close()
            raise NodeError("the node is not serving yet")
        work = self._publish(job, source, options, scratch)
        try:
            self._group.create_task(work, name=f"publish-{job.publish_id}")
        except RuntimeError:  # the task group is closing: the node stops
            work.close()
            scratch.close()
            raise NodeError("the node is stopping: it publishes nothing new") from None
        job.enter(QUEUED)

    async def _publish(self, job: PublishJob, source: Path, options: PublishOptions, scratch: ExitStack) -> None:
        try:
            with scratch:
                async with self._publishing:
                    done = await asyncio.to_thread(publish_into_vault, self.vault, self.identity, source, options,
                                                   purpose="veil up", on_stage=job.enter, on_bytes=job.advance)
            job.enter(SEEDING)
            try:
                await self.add_content(done.torrent.content_id, "creator")
            except VeilError as exc:
                raise PublishError(f"published as {done.torrent.content_id} but not seeded: {exc} (a restart of the "
                                   "node seeds it)") from None
            job.finish(done.summary())
            log.info("published %s as %s…%s", job.name, done.torrent.content_id[:16],
                     " (remuxed to faststart)" if done.remuxed else "")
        except VeilError as exc:
            job.fail(str(exc))
            log.info("publish %s of %s failed: %s", job.publish_id, job.name, exc)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the node: it is logged, the publish failed
            log.exception("publish %s of %s failed", job.publish_id, job.name)
            job.fail(f"internal error ({type(exc).__name__}); see the node's log")

    # -- what it holds ---------------------------------------------------------------------
    def contents(self) -> list[dict[str, Any]]:
        return [self._content_detail(offer) for offer in list(self.seller.offers.values())]

    def content(self, content_id: str) -> dict[str, Any]:
        return self._content_detail(self._offer_of(content_id))

    def _content_detail(self, offer) -> dict[str, Any]:
        """A content's status, with what its public manifest says and (for the creator, who
        holds its metadata key) what its encrypted metadata says; for a seeder, None."""
        torrent = offer.torrent
        manifest = torrent.manifest
        return {**self._content_status(offer), "slices": torrent.piece_count, "slice_size": torrent.piece_length,
                "ciphertext_bytes": torrent.length, "suite": manifest.suite.value,
                "price_per_slice_wei": manifest.terms.price_per_slice_wei,
                "seeder_share_bps": manifest.terms.seeder_share_bps, "creator": "0x" + manifest.creator_address.hex(),
                "magnet": torrent.magnet, "metadata": self._metadata.get(torrent.content_id)}

    def _read_metadata(self, cid: str, role: str, torrent) -> dict[str, Any] | None:
        """What a content's encrypted metadata says, read once when the node takes it up."""
        if role != "creator":
            return None  # a seeder holds no metadata key: the torrent says nothing of what it carries
        try:
            key = self.vault.keyring(cid).metadata_key
            meta = torrent.manifest.metadata(key) if key else None
        except VeilError as exc:
            log.warning("the metadata of %s… cannot be read: %s", cid[:16], exc)
            return None
        if meta is None:
            return None
        return {"name": meta.name, "mime_type": meta.mime_type, "size": meta.size, "duration_s": meta.duration_s}

    def _read_paused(self) -> set[str]:
        try:
            ids = json.loads((self.home / PAUSED_FILE).read_text())
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): nothing is paused", self.home / PAUSED_FILE, exc)
            return set()
        return {i for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()

    def _write_paused(self) -> None:
        ids = sorted(o.torrent.content_id for o in self.seller.offers.values() if o.paused)
        replace_file(self.home / PAUSED_FILE, json.dumps(ids).encode(), mode=0o600)

    @staticmethod
    def media_status(error: VeilError) -> int:
        """The HTTP status for a stream that cannot go on: 402 when money ran out."""
        if isinstance(error, (BudgetSpent, NoCover)) or isinstance(error.__cause__, NoCover):
            return 402
        return getattr(error, "http_status", 503)

    # -- what it is doing -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        seller, swarm = self.seller, self.swarm
        cashier = seller.cashier
        contents = [self._content_status(offer) for offer in seller.offers.values()]
        listen = swarm.listen_address if swarm is not None else None
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "wallet": self.wallet_address,
            "api_url": self.api_url,
            "swarm": {"listen": f"{listen[0]}:{listen[1]}" if listen else None,
                      "peers": sum(c["peers"] for c in contents)},
            "chain": {"endpoint": self.settings.chain_rpc_url or "embedded",
                      "answers": cashier.chain_down_since is None,
                      "uncashed_wei": cashier.uncashed_wei, "uncashed_cheques": cashier.uncashed_cheques,
                      "paid_wei": cashier.paid_wei, "batches_cashed": cashier.batches_cashed},
            "contents": contents,
            "earned_wei": sum(c["earned_wei"] for c in contents),
            "streams": [viewing.stats() for viewing in self.viewings.values()],
            "limits": self.limits.view() if self.limits is not None else None,
            "feed": self.feed.status(),
            "tracker": self.local_tracker.status() if self.local_tracker is not None else None,
        }

    def _content_status(self, offer) -> dict[str, Any]:
        service = offer.service
        cid = offer.torrent.content_id
        return {
            "content_id": cid,
            "role": self.roles.get(cid, "seeder"),
            "sells_keys": offer.agent is not None,
            "paused": offer.paused,
            "peers": service.content.peers if service else 0,
            "bytes_served": service.stats.bytes_served if service else 0,
            "cheques_accepted": service.stats.cheques_accepted if service else 0,
            "earned_wei": service.earned_wei if service else 0,
            "keys_released": service.stats.keys_released if service else 0,
        }

    # -- stopping (sync) --------------------------------------------------------------------
    def finish(self) -> int:
        """Anchor the audit heads, cash what is owed, claim; returns what was claimed."""
        return self.seller.finish()

    @property
    def fatal(self) -> list[VeilError]:
        return self.seller.fatal if self.seller is not None else []

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()


def read_info(home: Path) -> dict[str, Any] | None:
    """Where the running node's API is (None if no node wrote it)."""
    try:
        return json.loads((Path(home) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def read_token(home: Path) -> str | None:
    try:
        return (Path(home) / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
