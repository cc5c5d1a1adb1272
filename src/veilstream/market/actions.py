"""What the market's cores ask their drivers to do: one vocabulary for both sides.

`ViewerCore` (viewer.py) and `SellerCore` (seller.py) are fed inputs — swarm events
already received, `now`, lookup results, timer firings — and answer with a list of these
small immutable records, like the events of h11's `_events.py`. A driver (stream.py,
service.py) carries them out in order: the order matters (a cheque is kept, `ChequeSigned`,
before the `Send` that carries it goes out). Nothing here touches a socket or a clock.

Times (`StartTimer.at_s`) are in the clock the core was fed `now` in: unix seconds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from veilstream.chain.cheque import SignedCheque
from veilstream.chain.client import Guarantee
from veilstream.market import messages


# -- the wire -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Send `message` on the market extension to connection `conn`."""

    conn: int
    message: messages.Message


@dataclass(frozen=True)
class Drop:
    """Close connection `conn`: the peer broke the market protocol."""

    conn: int
    reason: str


@dataclass(frozen=True)
class ResumeUploads:
    """The upload gate may now say yes to `conn`: ask it again for the blocks it holds."""

    conn: int


@dataclass(frozen=True)
class LimitFetching:
    """Fetch no piece at or past `end_piece` (the viewer pays what it fetches)."""

    end_piece: int


# -- timers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartTimer:
    """Call the core's `timer_fired(name, now)` at `at_s`; a timer of the same name is replaced."""

    name: Hashable
    at_s: float


@dataclass(frozen=True)
class CancelTimer:
    name: Hashable


# -- the chain ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LookUpCover:
    """Read the lane `viewer` holds for `payee` (`Guarantee`); answer with `cover_looked_up`."""

    viewer: str
    content_id: bytes
    payee: str


@dataclass(frozen=True)
class LookUpGrants:
    """Read the grants `grant_ids` on chain for the claim `claim` made on `conn`; answer
    with `grants_looked_up(conn, claim, grants)`."""

    conn: int
    claim: tuple[int, ...]
    grant_ids: tuple[int, ...]


@dataclass(frozen=True)
class OpenLanes:
    """Hold lanes of the viewer's deposit for `payees` (LaneOpener.open); answer with
    `lanes_opened(content_id, payees held)` or `lanes_failed(content_id, error)`."""

    content_id: bytes
    payees: tuple[str, ...]
    want_wei: int
    signed_before: dict[str, int] = field(hash=False)  # payee → what earlier sessions signed it


# -- what the application hears -----------------------------------------------------------------
@dataclass(frozen=True)
class ChequeSigned:
    """The viewer signed `cheque` (keep it durably: the `Send` that carries it follows)."""

    cheque: SignedCheque


@dataclass(frozen=True)
class ChequeAccepted:
    """A payee took `cheque`: it raised what it is paid (keep it for cashing)."""

    cheque: SignedCheque


@dataclass(frozen=True)
class CoverFound:
    """The chain's promise to this payee, looked up (say, to cash before the lane's time)."""

    viewer: str
    content_id: bytes
    payee: str
    cover: Guarantee


@dataclass(frozen=True)
class KeysArrived:
    """Checked keys for slices [first, end) are in: a player waiting for one may go on."""

    first: int
    end: int


@dataclass(frozen=True)
class Fail:
    """The stream cannot go on; `error` says why (a `StreamError`)."""

    error: Exception


Action = (Send | Drop | ResumeUploads | LimitFetching | StartTimer | CancelTimer | LookUpCover | LookUpGrants
          | OpenLanes | ChequeSigned | ChequeAccepted | CoverFound | KeysArrived | Fail)
