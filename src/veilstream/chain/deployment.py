"""Where the contracts live on one chain, and the settings they were deployed with."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from veilstream.chain.embedded import atomic_write_text
from veilstream.chain.errors import ChainError

DEPLOYMENT_FORMAT = 2  # 2: lanes in the Wallet, proven registration


@dataclass(frozen=True)
class ChainSettings:
    """Every tunable of the contracts, fixed at deployment."""

    # A viewer's withdrawal waits this long, so payees can cash outstanding cheques first
    # (Swarm's chequebook uses a similar hard deposit timeout, a day by default).
    withdrawal_delay_s: int = 24 * 3600
    # An unlocked withdrawal must be executed within this long, or it lapses: payees need
    # not watch for requests made long ago.
    withdrawal_window_s: int = 7 * 24 * 3600
    # A lane (part of a deposit held for one payee) is held at least this long, so a
    # payee always has time to cash against it.
    lane_min_duration_s: int = 2 * 3600
    # A bought grant waits this long for its key before the buyer may take the money back.
    key_deadline_s: int = 3600
    # After its keys are posted, a grant's payment waits this long for the buyer to prove a
    # bad delivery (or to confirm) before the creator is credited.
    dispute_window_s: int = 24 * 3600
    # A new seeder share applies this long after the creator sets it, so seeders can cash
    # what they served under the old one.
    terms_delay_s: int = 24 * 3600

    def __post_init__(self) -> None:
        for name in ("withdrawal_delay_s", "withdrawal_window_s", "lane_min_duration_s", "key_deadline_s",
                     "dispute_window_s", "terms_delay_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ChainError(f"{name} must be a non-negative whole number of seconds")
        if self.key_deadline_s == 0 or self.withdrawal_window_s == 0 or self.dispute_window_s == 0:
            raise ChainError("key_deadline_s, withdrawal_window_s and dispute_window_s must be positive")


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    registry: str
    wallet: str
    access_sales: str
    anchor: str
    # The block the contracts were deployed in: where an event cursor starts.
    block: int
    settings: ChainSettings = field(default_factory=ChainSettings)
    rpc_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("registry", "wallet", "access_sales", "anchor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not is_address(value):
                raise ChainError(f"deployment: {name} {value!r} is not an address")
            object.__setattr__(self, name, to_checksum_address(value))

    @property
    def addresses(self) -> dict[str, str]:
        return {
            "ContentRegistry": self.registry,
            "Wallet": self.wallet,
            "AccessSales": self.access_sales,
            "Anchor": self.anchor,
        }

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["format"] = DEPLOYMENT_FORMAT
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> Deployment:
        try:
            if doc.get("format") != DEPLOYMENT_FORMAT:
                raise ChainError(
                    f"the deployment is format {doc.get('format')!r}, this node needs {DEPLOYMENT_FORMAT}: its "
                    "contracts are from another Veilstream version; start a new chain (move its directory aside)")
            return cls(
                chain_id=int(doc["chain_id"]),
                registry=doc["registry"],
                wallet=doc["wallet"],
                access_sales=doc["access_sales"],
                anchor=doc["anchor"],
                block=int(doc["block"]),
                settings=ChainSettings(**doc["settings"]),
                rpc_url=doc.get("rpc_url"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f"malformed deployment: {exc}") from None

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            doc = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ChainError(f"no deployment file at {path} (`veil devnet` writes one)") from None
        except (OSError, ValueError) as exc:
            raise ChainError(f"cannot read deployment file {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise ChainError(f"{path} is not a deployment file")
        return cls.from_json(doc)
