"""Errors of the chain layer: each says what went wrong and what to do next."""

from __future__ import annotations

from veilstream.errors import VeilError


class ChainError(VeilError):
    """A chain operation failed for a reason the user can act on."""


class ContractRevert(ChainError):
    """A contract refused a call; the message is the contract's own reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChequeError(ChainError):
    """A cheque is malformed, or its signature is not the viewer's."""


class ChainUnavailable(ChainError):
    """The chain endpoint cannot be reached, or holds no Veilstream contracts."""

    http_status = 503  # the node's API: the chain, not the request, is at fault
