"""The embedded chain: an in-process EVM (py-evm through eth-tester) kept on disk.

py-evm keeps its state in memory, so persistence is a journal of what changed the chain:
every raw transaction that was mined, and every empty block, each with the timestamp of
its block. Opening a directory replays the journal onto the same genesis, which rebuilds
the same balances, history and block numbers (an event cursor stays valid across
restarts). Each journal line carries a CRC and is flushed and fsynced before the sender
gets its transaction hash back; a torn last line (a crash mid-write) belongs to a
transaction nobody was told about, so it is dropped on open.

Block time follows the wall clock (plus any `advance_time`), like a real chain that mines
on demand. One process owns a directory at a time (an advisory lock); nodes in separate
processes share a chain through an RPC endpoint instead (`veil devnet`).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from veilstream.atomic import replace_file
from veilstream.chain.errors import ChainError

JOURNAL_FORMAT = 1
JOURNAL_NAME = "journal.log"
GENESIS_NAME = "genesis.json"
LOCK_NAME = "lock"
# eth-tester's genesis funds accounts whose private keys are 1, 2, 3, ...
FAUCET_KEY = (1).to_bytes(32, "big")
DEPLOYER_KEY = (2).to_bytes(32, "big")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file or nothing (world-readable: deployment files are public)."""
    replace_file(path, text.encode(), 0o644)


def _encode_entry(entry: dict[str, Any]) -> bytes:
    body = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode_entry(line: bytes) -> dict[str, Any] | None:
    """The entry, or None if the line is torn or corrupt."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        entry = json.loads(body)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


class EmbeddedChain:
    """An EVM in this process. `directory=None` keeps it in memory only (tests)."""

    def __init__(self, directory: Path | None = None) -> None:
        from eth_tester import PyEVMBackend

        self.directory = Path(directory) if directory is not None else None
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._journal = None
        self._broken: str | None = None
        self._offset_s = 0
        genesis_ts = int(time.time())
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._acquire_directory()
            genesis_ts = self._load_or_create_genesis(genesis_ts)
        params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": genesis_ts})
        self.tester = _tester_class()(_backend_class()(genesis_parameters=params))
        if self.directory is not None:
            self._replay()
            self._journal = open(self.directory / JOURNAL_NAME, "ab")  # noqa: SIM115
        self.tester.on_send = self.send_raw_transaction
        self.w3 = Web3(_ClockedProvider(self))

    # -- lifecycle ---------------------------------------------------------------------

    def _acquire_directory(self) -> None:
        assert self.directory is not None
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ChainError(
                f"the embedded chain in {self.directory} is open in another process; "
                "to share one chain between nodes run `veil devnet` and pass --chain-rpc"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> EmbeddedChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_or_create_genesis(self, now: int) -> int:
        assert self.directory is not None
        path = self.directory / GENESIS_NAME
        if path.exists():
            try:
                doc = json.loads(path.read_text())
                if doc["format"] != JOURNAL_FORMAT:
                    raise ChainError(f"{path}: unknown journal format {doc['format']}")
                return int(doc["genesis_timestamp"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ChainError(f"{path} is corrupt ({exc}); move the directory aside") from None
        if (self.directory / JOURNAL_NAME).exists():
            raise ChainError(f"{self.directory} has a journal but no genesis; move it aside")
        atomic_write_text(path, json.dumps({"format": JOURNAL_FORMAT, "genesis_timestamp": now}))
        return now

    def _replay(self) -> None:
        assert self.directory is not None
        path = self.directory / JOURNAL_NAME
        if not path.exists():
            return
        with open(path, "rb") as fh:
            lines = fh.readlines()
        good_bytes = 0
        for number, line in enumerate(lines, start=1):
            entry = _decode_entry(line)
            if entry is None:
                if number == len(lines):
                    # A torn tail: written by a crash before anyone was told it happened.
                    with open(path, "r+b") as fh:
                        fh.truncate(good_bytes)
                        os.fsync(fh.fileno())
                    break
                raise ChainError(f"{path} is corrupt at line {number}; move the directory aside")
            try:
                self._apply(entry)
            except ChainError:
                raise
            except Exception as exc:
                raise ChainError(f"{path}: replaying line {number} failed: {exc}") from None
            good_bytes += len(line)
        latest = self._latest_timestamp()
        self._offset_s = max(0, latest - int(time.time()))

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry.get("op")
        self._set_pending_timestamp(int(entry["ts"]))
        if op == "tx":
            self._send_unrecorded(entry["raw"])
        elif op == "mine":
            self.tester.mine_blocks(1)
        else:
            raise ChainError(f"unknown journal entry {op!r}")

    def _record(self, entry: dict[str, Any]) -> None:
        if self._journal is None:
            return
        try:
            self._journal.write(_encode_entry(entry))
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except (OSError, ValueError) as exc:
            # Memory now holds a block the journal does not: refuse to go on from there.
            reason = getattr(exc, "strerror", None) or str(exc)
            self._broken = f"could not write {self.directory / JOURNAL_NAME} ({reason})"
            raise ChainError(f"{self._broken}; the last transaction was not kept: restart") from None

    def check_usable(self) -> None:
        if self._broken:
            raise ChainError(f"the embedded chain stopped: {self._broken}; restart")

    # -- time --------------------------------------------------------------------------

    @property
    def _evm(self):
        return self.tester.backend.chain

    def now(self) -> int:
        return int(time.time()) + self._offset_s

    def _latest_timestamp(self) -> int:
        return int(self.tester.get_block_by_number("latest")["timestamp"])

    def _set_pending_timestamp(self, ts: int) -> None:
        header = self._evm.header
        if ts < header.timestamp:
            # The pending header is made one second after its parent at the latest.
            latest = self._latest_timestamp()
            if ts <= latest:
                raise ChainError(f"block time {ts} is not after the latest block ({latest})")
        if ts != header.timestamp:
            self._evm.header = header.copy(timestamp=ts)

    def _next_timestamp(self) -> int:
        return max(self._latest_timestamp() + 1, self.now())

    def _mine_empty(self, ts: int) -> None:
        self._set_pending_timestamp(ts)
        self.tester.mine_blocks(1)
        self._record({"op": "mine", "ts": ts})

    def catch_up_clock(self) -> None:
        """Mine an empty block if the latest block is older than the clock, so that calls
        and gas estimates see the time the next transaction will be mined at."""
        with self._lock:
            if self._latest_timestamp() < self.now():
                self._mine_empty(self.now())

    def advance_time(self, seconds: int) -> int:
        """Move the clock forward and mine a block at the new time; returns it."""
        if seconds < 0:
            raise ChainError("time only moves forward")
        with self._lock:
            # Relative to chain time, which runs ahead of the wall clock when several
            # blocks are mined within one second.
            ts = max(self.now(), self._latest_timestamp()) + int(seconds)
            self._offset_s = ts - int(time.time())
            ts = self._next_timestamp()
            self._mine_empty(ts)
            return ts

    def _send_unrecorded(self, raw_hex: str) -> Any:
        from eth_tester import EthereumTester

        return EthereumTester.send_raw_transaction(self.tester, raw_hex)

    def send_raw_transaction(self, raw: str | bytes) -> Any:
        """Mine one raw transaction at the clock's time; journaled before it returns."""
        raw_hex = raw if isinstance(raw, str) else "0x" + bytes(raw).hex()
        with self._lock:
            ts = self._next_timestamp()
            self._set_pending_timestamp(ts)
            result = self._send_unrecorded(raw_hex)
            self._record({"op": "tx", "ts": ts, "raw": raw_hex})
            return result

    # -- development helpers -----------------------------------------------------------

    @property
    def faucet_account(self) -> LocalAccount:
        return Account.from_key(FAUCET_KEY)

    @property
    def deployer_account(self) -> LocalAccount:
        return Account.from_key(DEPLOYER_KEY)

    def snapshot(self) -> tuple[bytes, int]:
        if self.directory is not None:
            raise ChainError("snapshots are for in-memory chains: a journal cannot be rewound")
        with self._lock:
            return (self.tester.take_snapshot(), self._offset_s)

    def revert(self, snapshot: tuple[bytes, int]) -> None:
        if self.directory is not None:
            raise ChainError("snapshots are for in-memory chains: a journal cannot be rewound")
        with self._lock:
            self.tester.revert_to_snapshot(snapshot[0])
            self._offset_s = snapshot[1]


# Gas limit over what one execution used: the 63/64 rule withholds gas from nested calls,
# so a limit of exactly the gas used can run out; a quarter more plus a constant is ample
# for these contracts (the tests would see an out-of-gas failure as a reverted receipt).
ESTIMATE_HEADROOM_NUM, ESTIMATE_HEADROOM_DEN, ESTIMATE_HEADROOM_GAS = 5, 4, 25_000


def _backend_class():
    from eth.vm.spoof import SpoofTransaction
    from eth_abi import abi
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.main import _execute_and_revert_transaction
    from eth_tester.exceptions import TransactionFailed

    class _Backend(PyEVMBackend):
        """eth-tester's py-evm backend with a one-execution gas estimate.

        eth-tester estimates by bisection, running the transaction a dozen times; a batch
        of cheques takes about a second per run in py-evm, so that is what a cash paid."""

        def estimate_gas(self, transaction, block_number="latest"):
            limit = self._max_available_gas()
            unsigned = self._get_normalized_and_unsigned_evm_transaction(
                {**transaction, "gas": limit}, block_number
            )
            spoofed = SpoofTransaction(unsigned, from_=transaction["from"])
            computation = _execute_and_revert_transaction(self.chain, spoofed, block_number)
            if computation.is_error:
                message = str(computation._error)
                if self.is_eip838_error(computation._error):
                    try:
                        message = abi.decode(["string"], computation._error.args[0][4:])[0]
                    except Exception:  # undecodable reason: keep the raw error text
                        pass
                raise TransactionFailed(message)
            used = limit - computation.get_gas_remaining()
            return min(limit, used * ESTIMATE_HEADROOM_NUM // ESTIMATE_HEADROOM_DEN + ESTIMATE_HEADROOM_GAS)

    return _Backend


def _tester_class():
    from eth_tester import EthereumTester

    class _Tester(EthereumTester):
        """Sends go through the owning EmbeddedChain (block time, journal) once set."""

        on_send = None

        def send_raw_transaction(self, raw_transaction_hex):
            if self.on_send is not None:
                return self.on_send(raw_transaction_hex)
            return super().send_raw_transaction(raw_transaction_hex)

    return _Tester


class _ClockedProvider(EthereumTesterProvider):
    """eth-tester's provider, serialized, with gas estimates taken at the clock's time."""

    def __init__(self, chain: EmbeddedChain) -> None:
        super().__init__(chain.tester)
        self._chain = chain

    def make_request(self, method, params):  # type: ignore[override]
        with self._chain._lock:
            self._chain.check_usable()
            if method == "eth_estimateGas":
                self._chain.catch_up_clock()
            return super().make_request(method, params)
