"""The chain layer: Vyper contracts, their compiled artifacts, a typed web3 client, and an
embedded EVM that keeps its state on disk.

Contracts (contracts/*.vy): ContentRegistry (terms per content id), Wallet (deposits and
EIP-712 cheques split on chain), AccessSales (buy a range; the key agent posts the sealed
key or the buyer is refunded), Anchor (Merkle roots). The rest of Veilstream talks to them
only through `ChainClient`; `open_chain` picks the embedded chain or an RPC endpoint.
`ChainSettings` are the contracts' (fixed at deployment), `ChainClientSettings` a client's
own (timeouts, log ranges).
"""

from veilstream.chain.cheque import Cheque, ChequeDomain, SignedCheque, content_id_bytes
from veilstream.chain.client import (
    AnchorKind,
    CashResult,
    ClaimResult,
    ChainClient,
    ChainEvent,
    ContentRecord,
    DeliveryNode,
    DevControls,
    EventPage,
    Grant,
    GrantState,
    Guarantee,
    Lane,
    PendingWithdrawal,
    Receipt,
    RejectReason,
    SealedDelivery,
    SentTransaction,
)
from veilstream.chain.client_settings import ChainClientSettings
from veilstream.chain.deployment import ChainSettings, Deployment
from veilstream.chain.devnet import Devnet, open_chain
from veilstream.chain.errors import ChainError, ChainUnavailable, ChequeError, ContractRevert
from veilstream.chain.ledger import ChequeLedger, Direction, PendingCheque, RecordedCheque

__all__ = [
    "AnchorKind",
    "CashResult",
    "ClaimResult",
    "ChainClient",
    "ChainClientSettings",
    "ChainError",
    "ChainEvent",
    "ChainSettings",
    "ChainUnavailable",
    "Cheque",
    "ChequeDomain",
    "ChequeError",
    "ChequeLedger",
    "ContentRecord",
    "ContractRevert",
    "Deployment",
    "DeliveryNode",
    "DevControls",
    "Devnet",
    "Direction",
    "EventPage",
    "Grant",
    "GrantState",
    "Guarantee",
    "Lane",
    "PendingCheque",
    "RecordedCheque",
    "PendingWithdrawal",
    "Receipt",
    "RejectReason",
    "SealedDelivery",
    "SentTransaction",
    "SignedCheque",
    "content_id_bytes",
    "open_chain",
]
