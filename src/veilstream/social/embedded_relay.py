"""An embedded Nostr relay: the `nostr-relay` package's server in a child process.

The parent binds and listens on the socket itself and hands the descriptor to the child,
so the address is known and connectable before the child starts: clients queue in the
backlog until the relay accepts, and no port can be taken by someone else in between.
The child exits when its stdin closes, so it never outlives the process that started it,
even one killed with SIGKILL.

One relay process owns a data directory at a time. `nostr-relay` keeps its events in
SQLite through SQLAlchemy: the file itself survives two writers, but the relay does not:
it migrates the schema at every start (two starts on a fresh store race on CREATE TABLE),
replaces a replaceable event by read-then-delete-then-insert in a deferred transaction (a
second writer turns that into "database is locked" refusals), and pushes a new event only
to its own subscribers. So the owner holds an exclusive `flock` on `owner.lock` (shared
with its child, so the lock lasts as long as either lives, and the kernel drops it when
both are gone, even killed), and advertises where it listens in `owner.json`; anyone else
wanting that store reads `store_owner(data_dir)` and talks to that relay instead.

Run as `python -m veilstream.social.embedded_relay CONFIG FD` (the parent does that).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from veilstream.atomic import replace_file
from veilstream.social.errors import SocialError
from veilstream.social.settings import SocialSettings

DEFAULT_PORT = 7447  # where every command on the machine looks for the local relay (node/relays.py)
STARTUP_TIMEOUT_S = SocialSettings.relay_startup_timeout_s  # for callers that take a bare default (node/relays.py)
LOCK_FILE = "owner.lock"
OWNER_FILE = "owner.json"
# The relay child needs nothing of ours: it gets an environment with only these, so no
# secret a command holds in its environment (VEIL_PASSPHRASE) reaches a long-lived server.
CHILD_ENVIRONMENT = ("PATH", "PYTHONPATH", "PYTHONHOME", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE")

_CONFIG = """\
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{database}
  num_concurrent_adds: {concurrent_adds}
  validators:
    - nostr_relay.validators.is_not_too_large
    - nostr_relay.validators.is_signed
max_event_size: {max_content}
relay_name: veilstream embedded relay
relay_description: the default relay of a Veilstream node
subscription_limit: {subscription_limit}
max_limit: {max_filter_limit}
message_timeout: {idle_timeout:g}
logging:
  version: 1
  formatters:
    simple:
      format: "%(asctime)s %(name)s %(levelname)s %(message)s"
  handlers:
    file:
      class: logging.FileHandler
      filename: {log}
      formatter: simple
  root:
    level: WARNING
    handlers: [file]
  loggers:
    nostr_relay:
      level: WARNING
      handlers: [file]
      propagate: false
"""


@dataclass(frozen=True)
class RelayOwner:
    """The relay process that owns a data directory, as it advertised itself."""

    url: str  # "" while it is still starting
    pid: int
    shared: bool  # a long-running relay for everyone (`veil relay`), not one command's own


class RelayStoreBusy(SocialError):
    """Another process's relay owns the data directory."""

    def __init__(self, data_dir: Path, owner: RelayOwner) -> None:
        self.data_dir = data_dir
        self.owner = owner
        where = f" at {owner.url}" if owner.url else ""
        super().__init__(f"the relay store {data_dir} is in use by the relay{where} (process {owner.pid or '?'})")


def _try_lock(data_dir: Path) -> int | None:
    """An fd holding the store's exclusive lock, or None when another process holds it."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SocialError(f"cannot use {data_dir} for the relay's data: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _advertised(data_dir: Path) -> RelayOwner:
    try:
        data = json.loads((data_dir / OWNER_FILE).read_text())
        return RelayOwner(str(data["url"]), int(data["pid"]), bool(data["shared"]))
    except (OSError, ValueError, KeyError, TypeError):
        return RelayOwner("", 0, False)  # the owner has not written it yet


def store_owner(data_dir: str | Path) -> RelayOwner | None:
    """Who runs the relay on `data_dir` now, or None when nobody does."""
    data_dir = Path(data_dir)
    if not (data_dir / LOCK_FILE).exists():
        return None
    fd = _try_lock(data_dir)
    if fd is not None:
        os.close(fd)
        return None
    return _advertised(data_dir)


class EmbeddedRelay:
    """A relay storing its events under `data_dir`; use as a context manager.

    `shared` marks a relay that others may use for as long as it runs (`veil relay`);
    a command's own relay is not shared: it stops when the command ends. Starting raises
    `RelayStoreBusy` when another process's relay owns `data_dir`. `startup_timeout_s`
    overrides `settings`.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        shared: bool = False,
        settings: SocialSettings = SocialSettings(),
        startup_timeout_s: float | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.shared = shared
        if startup_timeout_s is not None:
            settings = settings.but(relay_startup_timeout_s=startup_timeout_s)
        self.settings = settings
        self.startup_timeout_s = settings.relay_startup_timeout_s
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._lock: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise SocialError("the embedded relay is not running")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # where a local client connects
        return f"ws://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "relay.log"

    def start(self) -> EmbeddedRelay:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SocialError(f"cannot use {self.data_dir} for the relay's data: {exc.strerror}") from exc
        self._lock = _try_lock(self.data_dir)
        if self._lock is None:
            raise RelayStoreBusy(self.data_dir, _advertised(self.data_dir))
        try:
            return self._start_owned()
        except BaseException:
            self.stop()
            raise

    def _start_owned(self) -> EmbeddedRelay:
        (self.data_dir / OWNER_FILE).unlink(missing_ok=True)  # a crashed owner's, naming a dead address
        config_path = self.data_dir / "relay.yaml"
        config_path.write_text(
            _CONFIG.format(
                database=(self.data_dir / "relay.sqlite3").resolve(),
                log=self.log_path.resolve(),
                max_content=self.settings.relay_max_content_chars,
                concurrent_adds=self.settings.relay_concurrent_adds,
                subscription_limit=self.settings.relay_subscription_limit,
                max_filter_limit=self.settings.relay_max_filter_limit,
                idle_timeout=self.settings.relay_idle_timeout_s,
            )
        )
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.requested_port))
        except OSError as exc:
            listener.close()
            raise SocialError(f"cannot listen on {self.host}:{self.requested_port} for the relay: {exc.strerror}") from exc
        listener.listen(self.settings.relay_listen_backlog)
        self._socket = listener
        self.port = listener.getsockname()[1]
        with open(self.data_dir / "relay.stderr", "wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "veilstream.social.embedded_relay", str(config_path), str(listener.fileno())],
                pass_fds=[listener.fileno(), self._lock],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=self.data_dir,
                start_new_session=True,  # Ctrl-C goes to the parent, which stops the child in order
                env={name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ},
            )
        # Advertised once listening: a client connecting now waits in the backlog, not in vain.
        owner = {"url": self.url, "pid": os.getpid(), "shared": self.shared}
        replace_file(self.data_dir / OWNER_FILE, json.dumps(owner).encode(), 0o644)
        return self

    def wait(self) -> int:
        """Block until the relay process exits (it should not, before `stop`); its exit code."""
        if self._process is None:
            raise SocialError("the embedded relay is not running")
        return self._process.wait()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the relay completes a WebSocket handshake (or fail with its error output)."""
        from veilstream.social.relay_client import RelayConnection

        async def handshake() -> None:
            open_timeout = timeout or self.startup_timeout_s
            async with RelayConnection(self.url, settings=self.settings, open_timeout=open_timeout):
                pass

        try:
            asyncio.run(handshake())
        except SocialError as exc:
            raise SocialError(f"the embedded relay did not start: {exc}; {self._stderr_tail()}") from exc

    def _stderr_tail(self) -> str:
        try:
            tail = (self.data_dir / "relay.stderr").read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            return ""
        return " | ".join(tail)

    def stop(self) -> None:
        if self._process is not None:
            if self._process.stdin:
                self._process.stdin.close()  # the child's signal to exit
            try:
                self._process.wait(timeout=self.settings.relay_stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._lock is not None:
            (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> EmbeddedRelay:
        self.start()
        try:
            self.wait_ready(self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _exit_when_parent_goes() -> None:
    import threading

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _serve(config_path: str, fd: int) -> None:
    _exit_when_parent_goes()
    import nostr_relay
    import uvicorn
    from alembic import config as alembic_config
    from nostr_relay.config import Config

    Config.load(config_path)
    alembic_ini = os.path.join(os.path.dirname(nostr_relay.__file__), "alembic.ini")
    alembic_config.main([f"-c{alembic_ini}", "-q", "upgrade", "head"])  # creates or migrates the relay's tables
    from nostr_relay.web import create_app

    app = create_app(config_path)
    uvicorn.Server(uvicorn.Config(app, fd=fd, log_level="warning", lifespan="on", ws_max_size=1 << 20)).run()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
