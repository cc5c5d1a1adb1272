"""Market failures: a counterparty that does not pay, lies about keys, or breaks the protocol."""

from __future__ import annotations

from veilstream.errors import VeilError
from veilstream.swarm import RemoteProtocolError


class MarketError(VeilError):
    """A payment or key exchange failed for a reason a user can act on."""


class PaymentRefused(MarketError):
    """A cheque was refused: forged, stale, for another relationship, or not enough."""


class MarketProtocolError(RemoteProtocolError):
    """A peer sent a malformed or out-of-order market message; its connection is closed."""
