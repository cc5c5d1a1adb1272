"""The two kinds of protocol failure (after h11), and the failures a user can act on.

`LocalProtocolError`: *this node* asked the protocol core to do something the protocol
forbids (a bug in the caller). `RemoteProtocolError`: *the peer* broke the protocol; it
costs the peer its connection, never the node. `SwarmError` and its subclasses are
`VeilError`s: disk full, no peers, a bad magnet link; the CLI prints them as one line.
"""

from __future__ import annotations

import errno
import os

from veilstream.errors import VeilError


class LocalProtocolError(Exception):
    """This node misused a protocol core (a bug in the caller, never the peer's fault)."""


class RemoteProtocolError(Exception):
    """A peer broke the protocol; the connection to it is closed."""

    def __init__(self, reason: str, *, ban: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ban = ban  # the peer lied about data (a bad block): never talk to it again


class SwarmError(VeilError):
    """A swarm operation failed for a reason outside the program (network, disk, input)."""


class PieceStorageError(SwarmError):
    """Local ciphertext storage failed (disk full, unreadable file, corrupt resume state)."""


class FetchError(SwarmError):
    """A download could not be completed (no peers, bad metadata, timed out)."""


class TrackerError(SwarmError):
    """A tracker could not be reached or answered with an error."""


class ListenError(SwarmError):
    """This node cannot accept connections where it was told to (the port is taken, say)."""

    @classmethod
    def of(cls, host: str, port: int, exc: OSError) -> ListenError:
        if exc.errno == errno.EADDRINUSE:
            return cls(f"{host}:{port} is in use (another program listens there): choose another port, or 0 for any")
        if exc.errno == errno.EADDRNOTAVAIL:
            return cls(f"cannot listen on {host}:{port}: this machine has no such address")
        return cls(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}")
