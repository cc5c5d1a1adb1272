"""`ChainClient`: every chain operation Veilstream performs, typed, over web3.py.

No ABI or raw log leaves this module: callers pass and get back Python values (addresses
as EIP-55 strings, content ids as 32 bytes, amounts in wei) and typed records.

    client = ChainClient.embedded(home / "chain" / "embedded", identity.wallet)
    client = ChainClient.connect("http://127.0.0.1:8545", deployment, identity.wallet)

Transactions are signed locally by the client's account and sent raw, the same way on
every chain; a contract's refusal comes back as `ContractRevert` with its reason, found
by the gas estimate before anything is sent. The nonce is the account's pending count;
processes sharing an account serialize nonce-pick and send through `sender_lock`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from veilstream.chain import artifacts
from veilstream.chain.cheque import (
    ZERO_CONTENT_ID,
    Cheque,
    ChequeDomain,
    SignedCheque,
    checksum_address,
    content_id_bytes,
)
from veilstream.chain.client_settings import ChainClientSettings
from veilstream.chain.deployment import ChainSettings, Deployment
from veilstream.chain.embedded import EmbeddedChain
from veilstream.chain.errors import ChainError, ChainUnavailable, ContractRevert

# Where the manifest starts in a Veilstream info dict (ContentRegistry.CREATOR_MARK).
MANIFEST_MARK = b"10:veilstreamd7:creator20:"
DEPLOYMENT_FILE = "deployment.json"


class RejectReason(IntEnum):
    """Why Wallet.cash paid nothing for a cheque (the contract's REJECT_* codes)."""

    NOT_NEWER = 1
    BAD_SIGNATURE = 2
    UNKNOWN_CONTENT = 3
    BAD_PAYEE = 4  # the zero address or the Wallet itself


class GrantState(IntEnum):
    NONE = 0
    OPEN = 1
    ISSUED = 2  # keys posted; the payment waits out the dispute window
    REFUNDED = 3
    SETTLED = 4  # the creator was credited


class AnchorKind(IntEnum):
    AUDIT_LOG = 1
    FEED_BATCH = 2


@dataclass(frozen=True)
class ChainEvent:
    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    block_number: int
    gas_used: int
    events: tuple[ChainEvent, ...]
    fee_wei: int = 0  # what the sender paid for the gas

    def named(self, name: str) -> list[ChainEvent]:
        return [e for e in self.events if e.name == name]


@dataclass(frozen=True)
class CashResult:
    receipt: Receipt
    paid: int
    cashed: tuple[ChainEvent, ...]
    shortfalls: tuple[ChainEvent, ...]
    rejected: tuple[tuple[tuple[str, bytes, str], RejectReason], ...]


@dataclass(frozen=True)
class ClaimResult:
    amount: int
    receipts: tuple[Receipt, ...]

    @property
    def fee_wei(self) -> int:
        return sum(r.fee_wei for r in self.receipts)


@dataclass(frozen=True)
class ContentRecord:
    content_id: bytes
    creator: str
    key_agent: str
    price_per_slice: int
    seeder_share_bps: int  # in force now
    slice_count: int
    card_hash: bytes
    scheduled_seeder_share_bps: int | None
    share_effective_at: int | None
    key_root: bytes = bytes(32)


@dataclass(frozen=True)
class Grant:
    grant_id: int
    buyer: str
    content_id: bytes
    first_slice: int
    slice_count: int
    amount: int
    deadline: int
    state: GrantState
    one_time_key: str = ""  # the address of the key the grant's keys are sealed to
    issued_at: int = 0


@dataclass(frozen=True)
class DeliveryNode:
    """One subtree of a grant's delivery (AccessSales.Node): inside the range it carries
    the masked key-tree node key; every one carries its key-commitment subtree root."""

    height: int
    index: int
    root: bytes
    sealed_key: bytes = bytes(32)
    inside: bool = False


@dataclass(frozen=True)
class SealedDelivery:
    ephemeral_key: bytes  # 33 bytes, compressed
    nodes: tuple[DeliveryNode, ...]
    sealed_metadata_key: bytes = bytes(32)

    def as_contract_args(self) -> tuple:
        return (self.ephemeral_key, [(n.height, n.index, n.root, n.sealed_key, n.inside) for n in self.nodes],
                self.sealed_metadata_key)


@dataclass(frozen=True)
class SentTransaction:
    """Who sent a mined transaction and what its gas cost them."""

    sender: str
    fee_wei: int
    block_number: int


@dataclass(frozen=True)
class PendingWithdrawal:
    amount: int
    unlock_at: int


@dataclass(frozen=True)
class Guarantee:
    """What the Wallet promises one payee of one viewer's cheques for one content:
    cheques are paid up to `ceiling_wei` (cumulative, like the cheques) while the lane is
    held, until `until` (unix s). No lane: a ceiling of what is already cashed."""

    ceiling_wei: int
    until: int
    cashed_wei: int = 0


@dataclass(frozen=True)
class Lane:
    amount: int
    until: int


@dataclass(frozen=True)
class EventPage:
    events: list[ChainEvent]
    cursor: int  # pass back to continue after these events


@dataclass
class DevControls:
    """What only a development chain allows: free ether, time travel, snapshots."""

    kind: str  # "embedded" or "anvil"
    w3: Web3
    embedded: EmbeddedChain | None = None
    _owner: Any = field(default=None, repr=False)
    client_settings: ChainClientSettings = ChainClientSettings()

    def fund(self, address: str, wei: int) -> None:
        address = checksum_address(address)
        if self.embedded is not None:
            faucet = self.embedded.faucet_account
            tx = {
                "to": address,
                "value": int(wei),
                "gas": 21_000,
                "nonce": self.w3.eth.get_transaction_count(faucet.address, "pending"),
                "chainId": self.w3.eth.chain_id,
                "maxFeePerGas": 2 * self._base_fee() + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            tx_hash = self.w3.eth.send_raw_transaction(faucet.sign_transaction(tx).raw_transaction)
            _wait_receipt(self.w3, tx_hash, self.client_settings)
        else:
            balance = self.w3.eth.get_balance(address)
            self._rpc("anvil_setBalance", [address, hex(balance + int(wei))])

    def _base_fee(self) -> int:
        return int(self.w3.eth.get_block("latest").get("baseFeePerGas") or 0)

    def advance_time(self, seconds: int) -> int:
        """Move block time forward and mine a block; returns the new block's time."""
        if self.embedded is not None:
            return self.embedded.advance_time(seconds)
        self._rpc("evm_increaseTime", [int(seconds)])
        self._rpc("evm_mine", [])
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def snapshot(self) -> Any:
        if self.embedded is not None:
            return self.embedded.snapshot()
        return self._rpc("evm_snapshot", [])

    def revert(self, snapshot: Any) -> None:
        if self.embedded is not None:
            self.embedded.revert(snapshot)
            return
        if not self._rpc("evm_revert", [snapshot]):
            raise ChainError("anvil refused to revert to the snapshot")

    def _rpc(self, method: str, params: list) -> Any:
        response = self.w3.provider.make_request(method, params)
        if "error" in response:
            raise ChainError(f"{method}: {response['error']}")
        return response["result"]


def _wait_receipt(w3: Web3, tx_hash: bytes, client_settings: ChainClientSettings) -> Any:
    try:
        return w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=client_settings.receipt_timeout_s, poll_latency=client_settings.receipt_poll_s
        )
    except TimeExhausted:
        raise ChainError(
            f"transaction {HexBytes(tx_hash).to_0x_hex()} not mined after {client_settings.receipt_timeout_s:.0f}s"
        ) from None
    except (Web3Exception, OSError) as exc:
        raise _unavailable(exc, w3) from None


def _revert_reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    for prefix in ("execution reverted: ", "execution reverted:"):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    return text.strip().strip("'\"") or "the contract refused the call"


def _plain(value: Any) -> Any:
    if isinstance(value, HexBytes | bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


class ChainClient:
    """One account's view of one Veilstream deployment.

    `client_settings` are this client's own tunables (timeouts, log ranges); the contracts'
    settings are the deployment's (`deployment.settings`).
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        account: LocalAccount | None = None,
        *,
        dev: DevControls | None = None,
        embedded: EmbeddedChain | None = None,
        client_settings: ChainClientSettings = ChainClientSettings(),
    ) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.dev = dev
        self.client_settings = client_settings
        self._embedded = embedded
        # address → a context held from picking a transaction's nonce until it is sent, so
        # that two processes (or threads) sending from one account never pick the same one
        self.sender_lock: Callable[[str], AbstractContextManager[Any]] | None = None
        self.chain_id = self._call_rpc(lambda: w3.eth.chain_id)
        if self.chain_id != deployment.chain_id:
            raise ChainError(
                f"the deployment is for chain {deployment.chain_id} but the endpoint is chain "
                f"{self.chain_id}: wrong --chain-rpc or deployment file"
            )
        self.registry = self._contract("ContentRegistry", deployment.registry)
        self.wallet = self._contract("Wallet", deployment.wallet)
        self.sales = self._contract("AccessSales", deployment.access_sales)
        self.anchors = self._contract("Anchor", deployment.anchor)
        self._by_address = {
            c.address: (name, c)
            for name, c in (
                ("ContentRegistry", self.registry),
                ("Wallet", self.wallet),
                ("AccessSales", self.sales),
                ("Anchor", self.anchors),
            )
        }
        self._read_specs: dict[tuple[str, str], tuple[bytes, list[str], list[str]]] = {}
        self._topics: dict[tuple[str, bytes], Any] = {}
        for address, (_name, contract) in self._by_address.items():
            for entry in contract.abi:
                if entry.get("type") == "event":
                    event = contract.events[entry["name"]]()
                    self._topics[(address, bytes(HexBytes(event.topic)))] = event
        # The domain's chain id is the one the endpoint reports, never an assumed one.
        self.cheque_domain = ChequeDomain(self.chain_id, deployment.wallet)

    # -- constructors ------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        rpc_url: str,
        deployment: Deployment | Path | str | None = None,
        account: LocalAccount | None = None,
        *,
        client_settings: ChainClientSettings = ChainClientSettings(),
    ) -> ChainClient:
        """A client of any EVM JSON-RPC endpoint holding a Veilstream deployment."""
        w3 = connect_rpc(rpc_url, client_settings)
        if deployment is None:
            raise ChainError(
                f"no deployment known for {rpc_url}: pass --chain-deployment FILE "
                "(`veil devnet` writes one)"
            )
        if not isinstance(deployment, Deployment):
            deployment = Deployment.load(Path(deployment))
        if not w3.eth.get_code(deployment.wallet):
            raise ChainUnavailable(
                f"no Wallet contract at {deployment.wallet} on {rpc_url}: "
                "the chain was reset or the deployment file is for another chain"
            )
        return cls(w3, deployment, account, dev=_dev_controls_for(w3, client_settings), client_settings=client_settings)

    @classmethod
    def embedded(
        cls,
        directory: Path | None,
        account: LocalAccount | None = None,
        settings: ChainSettings | None = None,
        *,
        client_settings: ChainClientSettings = ChainClientSettings(),
    ) -> ChainClient:
        """The in-process chain kept in `directory` (created and deployed on first use, with
        the contracts' `settings`; None: in memory). Close it with `close()`."""
        chain = EmbeddedChain(directory)
        try:
            path = chain.directory / DEPLOYMENT_FILE if chain.directory is not None else None
            if path is not None and path.exists():
                deployment = Deployment.load(path)
                if not chain.w3.eth.get_code(deployment.wallet):
                    raise ChainError(
                        f"{path} names contracts that the journal in {chain.directory} does not "
                        "hold; move the directory aside to start a new chain"
                    )
            else:
                deployment = cls.deploy_fresh(
                    chain.w3, chain.deployer_account, settings or ChainSettings(), client_settings=client_settings
                )
                if path is not None:
                    deployment.save(path)
            dev = DevControls("embedded", chain.w3, embedded=chain, client_settings=client_settings)
            return cls(chain.w3, deployment, account, dev=dev, embedded=chain, client_settings=client_settings)
        except BaseException:
            chain.close()
            raise

    def with_account(self, account: LocalAccount | None) -> ChainClient:
        """The same chain and deployment, acting as another account."""
        other = object.__new__(ChainClient)
        other.__dict__.update(self.__dict__)
        other.account = account
        return other

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.close()

    def __enter__(self) -> ChainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def deploy_fresh(
        w3: Web3,
        funder: LocalAccount,
        settings: ChainSettings | None = None,
        *,
        client_settings: ChainClientSettings = ChainClientSettings(),
    ) -> Deployment:
        """Deploy from a new account that `funder` pays for: the contracts' addresses (and so
        the cheques' EIP-712 domain) differ from every other chain's, so a cheque signed on
        one development chain is void on any other."""
        from eth_account import Account

        deployer = Account.create()
        _transact(w3, funder, None, to=deployer.address, value=client_settings.deploy_funds_wei,
                  chain_id=w3.eth.chain_id, client_settings=client_settings)
        return ChainClient.deploy(w3, deployer, settings, client_settings=client_settings)

    @staticmethod
    def deploy(
        w3: Web3,
        deployer: LocalAccount,
        settings: ChainSettings | None = None,
        *,
        client_settings: ChainClientSettings = ChainClientSettings(),
    ) -> Deployment:
        """Deploy the four contracts (with the contracts' `settings`); returns where they are."""
        settings = settings or ChainSettings()
        chain_id = w3.eth.chain_id
        first_block = w3.eth.block_number + 1

        def create(name: str, *args: Any) -> str:
            artifact = artifacts.load(name)
            factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
            receipt = _transact(w3, deployer, factory.constructor(*args), chain_id=chain_id,
                                client_settings=client_settings)
            return receipt["contractAddress"]

        registry = create("ContentRegistry", settings.terms_delay_s)
        wallet = create("Wallet", registry, settings.withdrawal_delay_s, settings.withdrawal_window_s,
                        settings.lane_min_duration_s)
        sales = create("AccessSales", registry, settings.key_deadline_s, settings.dispute_window_s)
        anchor = create("Anchor")
        return Deployment(
            chain_id=chain_id,
            registry=registry,
            wallet=wallet,
            access_sales=sales,
            anchor=anchor,
            block=first_block,
            settings=settings,
        )

    # -- plumbing ----------------------------------------------------------------------

    def _contract(self, name: str, address: str):
        return self.w3.eth.contract(address=address, abi=artifacts.load(name).abi)

    def _call_rpc(self, fn):
        try:
            return fn()
        except ContractLogicError as exc:
            raise ContractRevert(_revert_reason(exc)) from None
        except (Web3Exception, OSError) as exc:
            raise _unavailable(exc, self.w3) from None
        except Exception as exc:
            if type(exc).__name__ == "TransactionFailed":  # the embedded EVM's revert of a call
                raise ContractRevert(_revert_reason(exc)) from None
            raise

    def _view(self, fn) -> Any:
        return self._call_rpc(fn.call)

    def _read(self, contract, name: str, *args: Any) -> Any:
        """A view call on the hot paths (a payee looks up lanes as viewers come): the ABI
        encoded here and one raw `eth_call`, a quarter of web3's contract-call cost."""
        if not isinstance(self.w3.provider, HTTPProvider):  # in process: web3's own path (eth-tester wants a sender)
            return self._view(getattr(contract.functions, name)(*args))
        key = (contract.address, name)
        spec = self._read_specs.get(key)
        if spec is None:
            entry = next(e for e in contract.abi if e.get("type") == "function" and e["name"] == name)
            inputs = [_abi_type(i) for i in entry["inputs"]]
            outputs = [_abi_type(o) for o in entry["outputs"]]
            selector = keccak(f"{name}({','.join(inputs)})".encode())[:4]
            spec = self._read_specs[key] = (selector, inputs, outputs)
        selector, inputs, outputs = spec
        data = "0x" + (selector + abi_encode(inputs, list(args))).hex()
        try:
            response = self.w3.provider.make_request("eth_call", [{"to": contract.address, "data": data}, "latest"])
        except (Web3Exception, OSError) as exc:
            raise _unavailable(exc, self.w3) from None
        if "error" in response:
            message = str(response["error"].get("message", response["error"]))
            if "revert" in message.lower():
                raise ContractRevert(_revert_reason(ValueError(message)))
            raise ChainUnavailable(f"chain request failed: {message}")
        values = abi_decode(outputs, bytes(HexBytes(response["result"])))
        return values[0] if len(values) == 1 else values

    @property
    def address(self) -> str:
        return self._require_account().address

    def _require_account(self) -> LocalAccount:
        if self.account is None:
            raise ChainError("this chain client has no account to sign with")
        return self.account

    def _send(self, fn, value: int = 0, to: str | None = None) -> Receipt:
        account = self._require_account()
        held = self.sender_lock(account.address) if self.sender_lock is not None else nullcontext()
        raw = _transact(self.w3, account, fn, value=value, chain_id=self.chain_id, to=to, held=held,
                        client_settings=self.client_settings)
        return self._receipt(raw)

    def _receipt(self, raw: Any) -> Receipt:
        return Receipt(
            tx_hash=bytes(raw["transactionHash"]),
            block_number=int(raw["blockNumber"]),
            gas_used=int(raw["gasUsed"]),
            fee_wei=int(raw["gasUsed"]) * int(raw.get("effectiveGasPrice") or 0),
            events=tuple(e for e in (self._decode(log) for log in raw["logs"]) if e is not None),
        )

    def _decode(self, log: Any) -> ChainEvent | None:
        if not log["topics"]:
            return None
        address = to_checksum_address(log["address"])
        event = self._topics.get((address, bytes(log["topics"][0])))
        if event is None:
            return None
        decoded = event.process_log(log)
        return ChainEvent(
            contract=self._by_address[address][0],
            name=decoded["event"],
            args={k: _plain(v) for k, v in decoded["args"].items()},
            block_number=int(log["blockNumber"]),
            tx_hash=bytes(log["transactionHash"]),
            log_index=int(log["logIndex"]),
        )

    # -- chain -------------------------------------------------------------------------

    def block_number(self) -> int:
        return self._call_rpc(lambda: self.w3.eth.block_number)

    def timestamp(self) -> int:
        """The latest block's time: what the contracts compare deadlines with."""
        return int(self._call_rpc(lambda: self.w3.eth.get_block("latest"))["timestamp"])

    def block_timestamp(self, block_number: int) -> int:
        return int(self._call_rpc(lambda: self.w3.eth.get_block(int(block_number)))["timestamp"])

    def transaction(self, tx_hash: bytes) -> SentTransaction:
        """The sender and the fee of a mined transaction (one of `events()`'s, say)."""
        tx = self._call_rpc(lambda: self.w3.eth.get_transaction(HexBytes(tx_hash)))
        receipt = self._call_rpc(lambda: self.w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        fee = int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice") or 0)
        return SentTransaction(to_checksum_address(tx["from"]), fee, int(receipt["blockNumber"]))

    def gas_price(self) -> int:
        """What a transaction sent now pays per gas: the latest base fee plus the tip, as
        web3 builds this client's transactions (eth_gasPrice on a chain without base fees)."""
        block = self._call_rpc(lambda: self.w3.eth.get_block("latest"))
        if block.get("baseFeePerGas") is None:
            return int(self._call_rpc(lambda: self.w3.eth.gas_price))
        return int(block["baseFeePerGas"]) + int(self._call_rpc(lambda: self.w3.eth.max_priority_fee))

    def _estimate(self, fn) -> int:
        return int(self._call_rpc(lambda: fn.estimate_gas({"from": self.address})))

    def balance(self, address: str | None = None) -> int:
        who = checksum_address(address) if address else self.address
        return self._call_rpc(lambda: self.w3.eth.get_balance(who))

    def transfer(self, to: str, wei: int) -> Receipt:
        """A plain ether transfer from this client's account."""
        return self._send(None, value=wei, to=checksum_address(to))

    # -- registry ----------------------------------------------------------------------

    def register(
        self,
        info: bytes,
        *,
        price_per_slice: int,
        seeder_share_bps: int,
        slice_count: int,
        card_hash: bytes = bytes(32),
        key_agent: str | None = None,
    ) -> Receipt:
        """Register the content whose bencoded info dict is `info` (its SHA-256 is the
        content id). The contract reads the creator out of the manifest in it and takes
        the registration only from that address."""
        manifest_at = bytes(info).rfind(MANIFEST_MARK)
        if manifest_at < 0:
            raise ChainError("not a Veilstream info dict: no manifest to prove the creator with")
        return self._send(
            self.registry.functions.register(
                bytes(info),
                manifest_at,
                checksum_address(key_agent) if key_agent else self.address,
                int(price_per_slice),
                int(seeder_share_bps),
                int(slice_count),
                bytes(card_hash),
            )
        )

    def set_terms(self, content_id: bytes | str, *, price_per_slice: int, seeder_share_bps: int) -> Receipt:
        fn = self.registry.functions.set_terms(
            content_id_bytes(content_id), int(price_per_slice), int(seeder_share_bps)
        )
        return self._send(fn)

    def set_key_agent(self, content_id: bytes | str, key_agent: str) -> Receipt:
        fn = self.registry.functions.set_key_agent(content_id_bytes(content_id), checksum_address(key_agent))
        return self._send(fn)

    def set_card(self, content_id: bytes | str, card_hash: bytes) -> Receipt:
        return self._send(self.registry.functions.set_card(content_id_bytes(content_id), bytes(card_hash)))

    def content(self, content_id: bytes | str) -> ContentRecord | None:
        """The registered record, or None for an unknown id."""
        cid = content_id_bytes(content_id)
        raw = self._read(self.registry, "content", cid)
        creator = to_checksum_address(raw[0])
        if int(creator, 16) == 0:
            return None
        share_now = self._read(self.registry, "seeder_share_bps", cid)
        effective_at = int(raw[8])
        scheduled = effective_at != 0 and effective_at > self.timestamp()
        return ContentRecord(
            content_id=cid,
            creator=creator,
            key_agent=to_checksum_address(raw[1]),
            price_per_slice=int(raw[2]),
            seeder_share_bps=int(share_now),
            slice_count=int(raw[4]),
            card_hash=bytes(raw[5]),
            key_root=bytes(raw[6]),
            scheduled_seeder_share_bps=int(raw[7]) if scheduled else None,
            share_effective_at=effective_at if scheduled else None,
        )

    # -- wallet ------------------------------------------------------------------------

    def deposit(self, wei: int) -> Receipt:
        return self._send(self.wallet.functions.deposit(), value=int(wei))

    def deposit_of(self, viewer: str | None = None) -> int:
        who = checksum_address(viewer) if viewer else self.address
        return self._read(self.wallet, "deposits", who)

    def request_withdrawal(self, wei: int) -> Receipt:
        return self._send(self.wallet.functions.request_withdrawal(int(wei)))

    def cancel_withdrawal(self) -> Receipt:
        return self._send(self.wallet.functions.cancel_withdrawal())

    def execute_withdrawal(self) -> Receipt:
        return self._send(self.wallet.functions.execute_withdrawal())

    def pending_withdrawal(self, viewer: str | None = None) -> PendingWithdrawal | None:
        who = checksum_address(viewer) if viewer else self.address
        amount, unlock_at = self._read(self.wallet, "pending_withdrawals", who)
        return PendingWithdrawal(int(amount), int(unlock_at)) if unlock_at else None

    def cheque_cover(self, viewer: str) -> int:
        """The free part of `viewer`'s deposit less any withdrawal under way: what it can
        still hold in lanes. (No payee counts on it: payees count on their lanes.)"""
        deposit = self.deposit_of(viewer)
        pending = self.pending_withdrawal(viewer)
        return max(0, deposit - (pending.amount if pending else 0))

    def held_of(self, viewer: str | None = None) -> int:
        """What `viewer`'s lanes hold together."""
        who = checksum_address(viewer) if viewer else self.address
        return self._read(self.wallet, "held", who)

    def open_lanes(self, content_id: bytes | str, payees: Sequence[str], amount_wei: int, until: int) -> Receipt:
        """Hold `amount_wei` of this account's deposit for each payee's cheques on the
        content until `until` (topping up lanes that hold less)."""
        fn = self.wallet.functions.open_lanes(
            content_id_bytes(content_id), [checksum_address(p) for p in payees], int(amount_wei), int(until))
        return self._send(fn)

    def close_lane(self, content_id: bytes | str, payee: str) -> Receipt:
        return self._send(self.wallet.functions.close_lane(content_id_bytes(content_id), checksum_address(payee)))

    def lane(self, viewer: str, content_id: bytes | str, payee: str) -> Lane | None:
        amount, until = self._read(self.wallet, "lanes", checksum_address(viewer), content_id_bytes(content_id),
                                   checksum_address(payee))
        return Lane(int(amount), int(until)) if until else None

    def lanes_of(self, viewer: str, content_id: bytes | str, payees: Sequence[str]) -> list[Lane | None]:
        """Each payee's lane for the content, in one call (None: no lane)."""
        raw = self._read(self.wallet, "guarantees", checksum_address(viewer), content_id_bytes(content_id),
                         [checksum_address(p) for p in payees])
        return [Lane(int(amount), int(until)) if until else None for amount, until in raw]

    def guarantee(self, viewer: str, content_id: bytes | str, payee: str) -> Guarantee:
        """What the chain promises `payee` of `viewer`'s cheques for the content."""
        cid, who, to = content_id_bytes(content_id), checksum_address(viewer), checksum_address(payee)
        ceiling, until, cashed = self._read(self.wallet, "guarantee", who, cid, to)
        return Guarantee(int(ceiling), int(until), int(cashed))

    def sign_cheque(self, content_id: bytes | str, seeder: str, cumulative_amount: int) -> SignedCheque:
        """A cheque from this client's account (the viewer) in this deployment's domain."""
        account = self._require_account()
        cheque = Cheque(account.address, content_id_bytes(content_id), seeder, int(cumulative_amount))
        return self.cheque_domain.sign(account, cheque)

    def sign_payment(self, beneficiary: str, cumulative_amount: int) -> SignedCheque:
        """A cheque with content id zero: pays `beneficiary` in full."""
        return self.sign_cheque(ZERO_CONTENT_ID, beneficiary, cumulative_amount)

    def cash(self, cheques: Sequence[SignedCheque]) -> CashResult:
        if not cheques:
            raise ChainError("no cheques to cash")
        receipt = self._send(self.wallet.functions.cash([c.as_contract_tuple() for c in cheques]))
        cashed = tuple(receipt.named("ChequeCashed"))
        rejected = tuple(
            (
                (e.args["viewer"], e.args["content_id"], e.args["seeder"]),
                RejectReason(e.args["reason"]),
            )
            for e in receipt.named("ChequeRejected")
        )
        return CashResult(
            receipt=receipt,
            paid=sum(e.args["paid"] for e in cashed),
            cashed=cashed,
            shortfalls=tuple(receipt.named("ChequeShortfall")),
            rejected=rejected,
        )

    def estimate_cash_gas(self, cheques: Sequence[SignedCheque]) -> int:
        """The gas `cash(cheques)` would use now (eth_estimateGas, from this account)."""
        return self._estimate(self.wallet.functions.cash([c.as_contract_tuple() for c in cheques]))

    def cashed(self, viewer: str, content_id: bytes | str, seeder: str) -> int:
        return self._read(self.wallet, "cashed", checksum_address(viewer), content_id_bytes(content_id),
                          checksum_address(seeder))

    def shortfall(self, viewer: str, content_id: bytes | str, seeder: str) -> int:
        fn = self.wallet.functions.shortfall(
            checksum_address(viewer), content_id_bytes(content_id), checksum_address(seeder)
        )
        return self._view(fn)

    def earnings(self, payee: str | None = None) -> int:
        """Credited and not yet claimed, in the Wallet and in AccessSales together."""
        who = checksum_address(payee) if payee else self.address
        return self._view(self.wallet.functions.earnings(who)) + self._view(self.sales.functions.earnings(who))

    def claim(self) -> int:
        """Move every credited earning to this account; returns the amount."""
        return self.claim_earnings().amount

    def claim_earnings(self) -> ClaimResult:
        """`claim`, with the receipts (what the gas cost)."""
        receipts = tuple(self._send(fn) for fn in self._claims())
        return ClaimResult(sum(self._amount(r, "Claimed") for r in receipts), receipts)

    def estimate_claim_gas(self) -> int:
        """The gas `claim()` would use now (0: nothing to claim)."""
        return sum(self._estimate(fn) for fn in self._claims())

    def _claims(self) -> list:
        me = self.address
        return [contract.functions.claim() for contract in (self.wallet, self.sales)
                if self._view(contract.functions.earnings(me))]

    def payout_terms(self, content_id: bytes | str) -> tuple[str, int]:
        """(creator, seeder share in force) of a content, as Wallet.cash splits a cheque;
        the zero address for an unknown one."""
        creator, share = self._view(self.registry.functions.payout_terms(content_id_bytes(content_id)))
        return to_checksum_address(creator), int(share)

    @staticmethod
    def _amount(receipt: Receipt, event: str) -> int:
        return sum(e.args["amount"] for e in receipt.named(event))

    # -- access sales ------------------------------------------------------------------

    def quote(self, content_id: bytes | str, first_slice: int, slice_count: int) -> int:
        fn = self.sales.functions.quote(content_id_bytes(content_id), int(first_slice), int(slice_count))
        return self._view(fn)

    def buy(self, content_id: bytes | str, first_slice: int, slice_count: int, one_time_key: bytes, *,
            value: int | None = None) -> int:
        """Buy a range, its keys to be sealed to `one_time_key` (64 bytes, the public half of
        a key made for this purchase); returns the grant id. `value` defaults to the quote."""
        cid = content_id_bytes(content_id)
        if value is None:
            value = self.quote(cid, first_slice, slice_count)
        fn = self.sales.functions.buy(cid, int(first_slice), int(slice_count), bytes(one_time_key))
        receipt = self._send(fn, value=value)
        return int(receipt.named("GrantOpened")[0].args["grant_id"])

    def post_key(self, grant_id: int, delivery: SealedDelivery) -> Receipt:
        return self._send(self.sales.functions.post_key(int(grant_id), *delivery.as_contract_args()))

    def dispute(self, grant_id: int, one_time_secret: int, delivery: SealedDelivery, position: int) -> Receipt:
        """Prove node `position` of the delivery bad (reverts if it is good); refunds the buyer."""
        return self._send(self.sales.functions.dispute(int(grant_id), int(one_time_secret),
                                                       *delivery.as_contract_args(), int(position)))

    def confirm(self, grant_id: int) -> Receipt:
        return self._send(self.sales.functions.confirm(int(grant_id)))

    def settle(self, grant_id: int) -> Receipt:
        return self._send(self.sales.functions.settle(int(grant_id)))

    def refund(self, grant_id: int) -> Receipt:
        return self._send(self.sales.functions.refund(int(grant_id)))

    def grant(self, grant_id: int) -> Grant | None:
        raw = self._view(self.sales.functions.grants(int(grant_id)))
        if int(raw[6]) == 0:
            return None
        return Grant(
            grant_id=int(grant_id),
            buyer=to_checksum_address(raw[0]),
            content_id=bytes(raw[1]),
            first_slice=int(raw[2]),
            slice_count=int(raw[3]),
            amount=int(raw[4]),
            deadline=int(raw[5]),
            state=GrantState(int(raw[6])),
            one_time_key=to_checksum_address(raw[7]),
            issued_at=int(raw[8]),
        )

    def delivery(self, grant_id: int) -> SealedDelivery | None:
        """What the key agent posted for a grant (its KeyIssued event), or None."""
        grant = self.grant(grant_id)
        if grant is None or not grant.issued_at:
            return None
        for event in self.events(names=["KeyIssued"]).events:
            if event.args["grant_id"] == grant_id:
                return SealedDelivery(
                    bytes(event.args["ephemeral_key"]),
                    tuple(DeliveryNode(int(n["height"]), int(n["index"]), bytes(n["root"]), bytes(n["sealed_key"]),
                                       bool(n["inside"])) for n in event.args["nodes"]),
                    bytes(event.args["sealed_metadata_key"]))
        return None

    # -- anchors -----------------------------------------------------------------------

    def anchor(self, kind: int, root: bytes) -> int:
        """Post a Merkle root; returns its sequence number for (this account, kind)."""
        return int(self.post_anchor(kind, root).named("Anchored")[0].args["seq"])

    def post_anchor(self, kind: int, root: bytes) -> Receipt:
        """`anchor`, returning the receipt."""
        return self._send(self.anchors.functions.post(int(kind), bytes(root)))

    def latest_anchor(self, poster: str, kind: int) -> tuple[bytes, int]:
        who = checksum_address(poster)
        root = self._view(self.anchors.functions.latest(who, int(kind)))
        seq = self._view(self.anchors.functions.count(who, int(kind)))
        return bytes(root), int(seq)

    # -- events ------------------------------------------------------------------------

    def events(
        self,
        cursor: int | None = None,
        *,
        names: Iterable[str] | None = None,
        to_block: int | None = None,
    ) -> EventPage:
        """Every Veilstream event from block `cursor` (default: the deployment block) to
        `to_block` (default: latest), oldest first, and the cursor to continue from."""
        start = self.deployment.block if cursor is None else int(cursor)
        end = self.block_number() if to_block is None else int(to_block)
        wanted = set(names) if names is not None else None
        found: list[ChainEvent] = []
        addresses = list(self._by_address)
        while start <= end:
            stop = min(end, start + self.client_settings.max_log_range_blocks - 1)
            query = {"fromBlock": start, "toBlock": stop, "address": addresses}
            logs = self._call_rpc(lambda q=query: self.w3.eth.get_logs(q))
            for log in logs:
                event = self._decode(log)
                if event is not None and (wanted is None or event.name in wanted):
                    found.append(event)
            start = stop + 1
        found.sort(key=lambda e: (e.block_number, e.log_index))
        return EventPage(found, max(start, end + 1))


def _abi_type(entry: dict) -> str:
    """An ABI entry's type as eth-abi names it (a struct is a tuple of its fields)."""
    if entry["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in entry["components"]) + ")" + entry["type"][len("tuple"):]
    return entry["type"]


def connect_rpc(rpc_url: str, client_settings: ChainClientSettings = ChainClientSettings()) -> Web3:
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError(f"--chain-rpc wants an http(s) URL, got {rpc_url!r}")
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": client_settings.rpc_timeout_s}))
    try:
        w3.eth.chain_id  # noqa: B018 - the first request proves the endpoint answers
    except Exception as exc:  # requests raises its own hierarchy; any failure means "down"
        raise ChainUnavailable(f"cannot reach the chain at {rpc_url}: {type(exc).__name__}") from None
    return w3


def _dev_controls_for(w3: Web3, client_settings: ChainClientSettings) -> DevControls | None:
    try:
        version = str(w3.client_version)
    except Exception:
        return None
    return DevControls("anvil", w3, client_settings=client_settings) if version.lower().startswith("anvil") else None


def _transact(
    w3: Web3,
    account: LocalAccount,
    fn: Any,
    *,
    value: int = 0,
    chain_id: int,
    to: str | None = None,
    held: AbstractContextManager[Any] | None = None,
    client_settings: ChainClientSettings = ChainClientSettings(),
) -> Any:
    """Estimate (surfacing a revert reason), sign locally, send raw, wait for the receipt.
    `fn` is a contract call or constructor; None sends plain ether to `to`. `held` is
    entered from picking the nonce until the node has the transaction (not while mining)."""
    base: dict[str, Any] = {"from": account.address, "value": int(value), "chainId": chain_id}
    if fn is not None and isinstance(w3.provider, HTTPProvider) and getattr(fn, "address", None):
        return _transact_batched(w3, account, fn, base, held, client_settings)
    try:
        with held or nullcontext():
            base["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
            if fn is not None:
                built = fn.build_transaction(base)
            else:
                built = {**base, "to": to}
                built["gas"] = w3.eth.estimate_gas(built)
                base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
                built["maxPriorityFeePerGas"] = w3.eth.max_priority_fee
                built["maxFeePerGas"] = 2 * base_fee + built["maxPriorityFeePerGas"]
            signed = account.sign_transaction(built)
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    except ContractLogicError as exc:
        raise ContractRevert(_revert_reason(exc)) from None
    except Exception as exc:
        raise _classify(exc, w3) from None
    receipt = _wait_receipt(w3, tx_hash, client_settings)
    if int(receipt["status"]) != 1:
        raise ChainError(
            f"transaction {HexBytes(tx_hash).to_0x_hex()} reverted on chain "
            "(the state changed between estimate and mining); try again"
        )
    return receipt


def _transact_batched(w3: Web3, account: LocalAccount, fn: Any, base: dict[str, Any],
                      held: AbstractContextManager[Any] | None, client_settings: ChainClientSettings) -> Any:
    """`_transact` of a contract call over JSON-RPC in three requests, not web3's eight: the
    nonce, the gas estimate, the fee and the base fee in one batch; the raw transaction;
    the receipt. Every viewer opens lanes before its first slice, on a busy machine too:
    web3's own path costs some 20 ms of CPU a transaction (formatting, validation, a
    request each), this one about a third of it. The fee is what web3 would fill in."""
    call = {"from": account.address, "to": fn.address, "data": fn._encode_transaction_data(),
            "value": hex(int(base["value"]))}
    try:
        with held or nullcontext():
            nonce, gas, tip, block = _answers(w3, w3.provider.make_batch_request([
                ("eth_getTransactionCount", [account.address, "pending"]), ("eth_estimateGas", [call]),
                ("eth_maxPriorityFeePerGas", []), ("eth_getBlockByNumber", ["latest", False])]))
            tip = int(tip, 16)
            transaction = {**call, "value": int(base["value"]), "chainId": base["chainId"], "nonce": int(nonce, 16),
                           "gas": int(gas, 16), "maxPriorityFeePerGas": tip,
                           "maxFeePerGas": 2 * int(block.get("baseFeePerGas") or "0x0", 16) + tip}
            signed = account.sign_transaction(transaction)
            (tx_hash,) = _answers(w3, [w3.provider.make_request(
                "eth_sendRawTransaction", [HexBytes(signed.raw_transaction).to_0x_hex()])])
    except ChainError:
        raise
    except Exception as exc:
        raise _classify(exc, w3) from None
    receipt = _wait_receipt(w3, HexBytes(tx_hash), client_settings)
    if int(receipt["status"]) != 1:
        raise ChainError(
            f"transaction {HexBytes(tx_hash).to_0x_hex()} reverted on chain "
            "(the state changed between estimate and mining); try again"
        )
    return receipt


def _answers(w3: Web3, responses: Any) -> list[Any]:
    """The results of raw JSON-RPC responses, in order; a revert or a refusal raised as
    the ChainError `_transact` raises for it."""
    if not isinstance(responses, list):  # a batch refused whole answers with one error
        responses = [responses]
    results = []
    for response in responses:
        error = response.get("error")
        if error is not None:
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            if "revert" in message.lower():
                raise ContractRevert(_revert_reason(ValueError(message)))
            raise _classify(ValueError(message), w3)
        results.append(response["result"])
    return results


def _unavailable(exc: Exception, w3: Web3 | None) -> ChainUnavailable:
    """A request that got no answer: say which endpoint, and why in a few words."""
    import requests

    endpoint = getattr(getattr(w3, "provider", None), "endpoint_uri", None) or "the chain"
    if isinstance(exc, requests.exceptions.Timeout):
        return ChainUnavailable(f"the chain at {endpoint} does not answer (timed out)")
    if isinstance(exc, requests.exceptions.ConnectionError):
        refused = "refused" in str(exc).lower()
        return ChainUnavailable(f"the chain at {endpoint} does not answer ({'connection refused' if refused else 'unreachable'})")
    return ChainUnavailable(f"chain request failed: {exc}")


def _classify(exc: Exception, w3: Web3 | None = None) -> ChainError:
    """Turn a node's refusal into a ChainError that says what happened."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return _unavailable(exc, w3)
    text = str(exc)
    lowered = text.lower()
    if "execution reverted" in lowered or type(exc).__name__ == "TransactionFailed":
        return ContractRevert(_revert_reason(exc))
    if any(p in lowered for p in ("insufficient funds", "enough balance", "enough funds", "cannot afford")):
        return ChainError("not enough ether in the account for this amount plus gas")
    if isinstance(exc, ChainError):
        return exc
    from eth_utils import ValidationError as EthValidationError

    if isinstance(exc, Web3Exception | ValueError | OSError | EthValidationError):
        return ChainError(f"the chain refused the transaction: {text}")
    raise exc
