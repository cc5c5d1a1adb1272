"""Every tunable of the chain *client*, in one frozen structure (after libtorrent's
settings_pack): how long it waits for an endpoint and how it asks. Units are in the names.

Not the contracts' settings: those (`deployment.ChainSettings`) are fixed at deployment and
the same for every client of a deployment; these are each process's own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from veilstream.chain.errors import ChainError


@dataclass(frozen=True)
class ChainClientSettings:
    # One JSON-RPC request (requests' timeout, per socket operation): a public endpoint
    # answers in well under a second; past this it is reported unavailable.
    rpc_timeout_s: float = 30.0
    # A sent transaction's receipt: an auto-mining node (embedded, anvil) has it at once,
    # a real chain may take a while (L1 blocks come every 12 s, a busy mempool holds longer).
    receipt_timeout_s: float = 120.0
    receipt_poll_s: float = 0.05  # how often the receipt is asked for: 50 ms adds little to an instant receipt
    max_log_range_blocks: int = 5_000  # blocks per eth_getLogs: public endpoints cap ranges (10,000 is a common cap)
    deploy_funds_wei: int = 10**17  # what a fresh deployer is given for the gas of the four contracts, with room

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_s"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise ChainError(f"{item.name} must be a positive number of seconds")
            elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ChainError(f"{item.name} must be a positive whole number")

    def but(self, **changes) -> ChainClientSettings:
        """A copy with `changes` applied (CLI flags override the defaults this way)."""
        return replace(self, **changes)
