"""What the market reads off the chain before and while it trades.

- `registered_record`: a content's registry record, refused unless its creator (and key
  commitment root) is the manifest's: a record someone else made pays someone else.
- `cashed_floor`: what each viewer's cheques for a content have had cashed, summed over
  payees: a key agent counts that many keys as released whatever its log says.
- `ChainWatch`: the events a payee acts on at once — a viewer asking to withdraw, a cut of
  the seeder share scheduled or dropped — polled from a cursor.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from veilstream.chain.cheque import checksum_address
from veilstream.chain.client import ChainClient, ChainEvent, ContentRecord
from veilstream.content import Torrent
from veilstream.market.errors import MarketError


class RegistrationError(MarketError):
    """The content is not registered on chain, or registered to someone else."""


def registered_record(client: ChainClient, torrent: Torrent, *, required: bool = True) -> ContentRecord | None:
    """The content's registry record, checked against the manifest. None if unregistered
    and not `required`."""
    record = client.content(torrent.info_hash)
    if record is None:
        if required:
            raise RegistrationError(f"{torrent.content_id[:16]}… is not registered on this chain: its payments "
                                    "could not be split; the creator registers it (`veil publish` does)")
        return None
    creator = checksum_address(torrent.manifest.creator_address)
    if record.creator != creator:
        raise RegistrationError(f"{torrent.content_id[:16]}… is registered to {record.creator}, not to its creator "
                                f"{creator}: refusing to pay or serve for it")
    if any(record.key_root) and record.key_root != torrent.manifest.key_root:
        raise RegistrationError("the registry's key-commitment root is not the manifest's: refusing it")
    return record


def cashed_floor(client: ChainClient, content_id: bytes) -> dict[str, int]:
    """viewer → wei its cheques for `content_id` have had cashed, over every payee."""
    totals: dict[str, int] = defaultdict(int)
    for event in client.events(names=["ChequeCashed"]).events:
        if bytes(event.args["content_id"]) == content_id:
            totals[event.args["viewer"]] += int(event.args["paid"])
    return dict(totals)


@dataclass(frozen=True)
class WithdrawalRequested:
    viewer: str
    amount: int
    unlock_at: int


@dataclass(frozen=True)
class ShareChange:
    content_id: bytes
    scheduled_bps: int | None  # None: a scheduled change was dropped
    effective_at: int | None


WATCHED = ("WithdrawalRequested", "SeederShareScheduled", "SeederShareCancelled")


class ChainWatch:
    """Polls the events a payee must act on, oldest first, from where it last stopped."""

    def __init__(self, client: ChainClient, content_ids: set[bytes] | None = None) -> None:
        self.client = client
        self.content_ids = content_ids
        self._cursor = client.block_number() + 1  # what happened before we started is read directly

    def poll(self) -> list[WithdrawalRequested | ShareChange]:
        page = self.client.events(self._cursor, names=WATCHED)
        self._cursor = page.cursor
        return [change for change in map(self._read, page.events) if change is not None]

    def _read(self, event: ChainEvent) -> WithdrawalRequested | ShareChange | None:
        args = event.args
        if event.name == "WithdrawalRequested":
            return WithdrawalRequested(args["viewer"], int(args["amount"]), int(args["unlock_at"]))
        content_id = bytes(args["content_id"])
        if self.content_ids is not None and content_id not in self.content_ids:
            return None
        if event.name == "SeederShareScheduled":
            return ShareChange(content_id, int(args["seeder_share_bps"]), int(args["effective_at"]))
        return ShareChange(content_id, None, None)
