"""An embedded Nostr relay: the `nostr-relay` package's server in a child process.

The parent binds and listens on the socket itself and hands the descriptor to the child,
so the address is known and connectable before the child starts: clients queue in the
backlog until the relay accepts, and no port can be taken by someone else in between.
The child exits when its stdin closes, so it never outlives the process that started it,
even one killed with SIGKILL.

Run as `python -m veilstream.social.embedded_relay CONFIG FD` (the parent does that).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from veilstream.social.errors import SocialError

DEFAULT_PORT = 7447
STARTUP_TIMEOUT_S = 60.0
MAX_CONTENT_CHARS = 60_000  # nostr-relay checks content length; our own frame limit is 64 KiB

_CONFIG = """\
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{database}
  num_concurrent_adds: 2
  validators:
    - nostr_relay.validators.is_not_too_large
    - nostr_relay.validators.is_signed
max_event_size: {max_content}
relay_name: veilstream embedded relay
relay_description: the default relay of a Veilstream node
subscription_limit: 64
max_limit: 10000
message_timeout: 3600
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


class EmbeddedRelay:
    """A relay on 127.0.0.1 storing its events under `data_dir`; use as a context manager."""

    def __init__(self, data_dir: str | Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise SocialError("the embedded relay is not running")
        return f"ws://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "relay.log"

    def start(self) -> EmbeddedRelay:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "relay.yaml"
        config_path.write_text(
            _CONFIG.format(
                database=(self.data_dir / "relay.sqlite3").resolve(),
                log=self.log_path.resolve(),
                max_content=MAX_CONTENT_CHARS,
            )
        )
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.requested_port))
        except OSError as exc:
            listener.close()
            raise SocialError(f"cannot listen on {self.host}:{self.requested_port} for the relay: {exc.strerror}") from exc
        listener.listen(512)
        self._socket = listener
        self.port = listener.getsockname()[1]
        with open(self.data_dir / "relay.stderr", "wb") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "veilstream.social.embedded_relay", str(config_path), str(listener.fileno())],
                pass_fds=[listener.fileno()],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=self.data_dir,
            )
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until the relay completes a WebSocket handshake (or fail with its error output)."""
        from veilstream.social.relay_client import RelayConnection

        async def handshake() -> None:
            async with RelayConnection(self.url, open_timeout=timeout):
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
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> EmbeddedRelay:
        self.start()
        try:
            self.wait_ready()
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
