"""`veil devnet`: one chain for several nodes on this machine.

Starts anvil on loopback with a state file (so balances, contracts and history survive a
restart), deploys the contracts the first time only, and writes the endpoint and the
addresses to a deployment file that other nodes read (`--chain-deployment FILE`).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import replace
from pathlib import Path

from eth_account import Account

from veilstream.chain.anvil import ANVIL_DEV_KEY, Anvil
from veilstream.chain.client import ChainClient, connect_rpc
from veilstream.chain.client_settings import ChainClientSettings
from veilstream.chain.deployment import ChainSettings, Deployment
from veilstream.chain.errors import ChainError

DEFAULT_PORT = 8545
STATE_FILE = "anvil-state.json"
DEPLOYMENT_FILE = "devnet.json"
LOG_FILE = "anvil.log"
LOCK_FILE = "lock"


class Devnet:
    def __init__(
        self,
        directory: Path,
        *,
        port: int = DEFAULT_PORT,
        settings: ChainSettings | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port = port
        self.settings = settings or ChainSettings()
        self.anvil: Anvil | None = None
        self.deployment: Deployment | None = None
        self.deployed_now = False
        self._lock_fd: int | None = None

    @property
    def deployment_path(self) -> Path:
        return self.directory / DEPLOYMENT_FILE

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def start(self) -> Deployment:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ChainError(f"a devnet already runs from {self.directory}") from None
        self.anvil = Anvil(port=self.port, state_path=self.state_path, log_path=self.directory / LOG_FILE)
        self.anvil.start()
        try:
            self.deployment = self._deploy_once()
        except BaseException:
            self.stop()
            raise
        return self.deployment

    def _deploy_once(self) -> Deployment:
        assert self.anvil is not None
        w3 = connect_rpc(self.anvil.url)
        if self.deployment_path.exists():
            known = Deployment.load(self.deployment_path)
            if known.chain_id == w3.eth.chain_id and w3.eth.get_code(known.wallet):
                if known.rpc_url != self.anvil.url:
                    known = replace(known, rpc_url=self.anvil.url)
                    known.save(self.deployment_path)
                return known
        deployment = ChainClient.deploy_fresh(w3, Account.from_key(ANVIL_DEV_KEY), self.settings)
        deployment = replace(deployment, rpc_url=self.anvil.url)
        deployment.save(self.deployment_path)
        self.deployed_now = True
        return deployment

    def stop(self) -> None:
        """Stop anvil; it writes its state file on the way out."""
        if self.anvil is not None:
            self.anvil.stop()
            self.anvil = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def wait(self) -> int:
        """Block until anvil exits (Ctrl-C reaches us, then stop())."""
        if self.anvil is None or self.anvil.process is None:
            raise ChainError("the devnet is not running")
        return self.anvil.process.wait()

    def __enter__(self) -> Devnet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_chain(
    chain_dir: Path,
    account=None,
    *,
    rpc_url: str | None = None,
    deployment_path: Path | None = None,
    client_settings: ChainClientSettings = ChainClientSettings(),
) -> ChainClient:
    """The chain a node uses: an RPC endpoint if one is named (with the deployment file
    that says where the contracts are), else the embedded chain under `chain_dir`."""
    if rpc_url is None and deployment_path is None:
        return ChainClient.embedded(Path(chain_dir) / "embedded", account, client_settings=client_settings)
    deployment = Deployment.load(Path(deployment_path)) if deployment_path else None
    if deployment is None:
        candidate = Path(chain_dir) / "devnet" / DEPLOYMENT_FILE
        if candidate.exists():
            found = Deployment.load(candidate)
            if found.rpc_url == rpc_url:
                deployment = found
    url = rpc_url or (deployment.rpc_url if deployment else None)
    if url is None:
        raise ChainError("the deployment file names no RPC endpoint: pass --chain-rpc URL")
    return ChainClient.connect(url, deployment, account, client_settings=client_settings)
