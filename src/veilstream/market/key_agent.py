"""The key agent: releases slice keys against cheques, sealed to the viewer's session.

It holds the creator's content keys (or a delegate's copy). For each (viewer, content) it
keeps a `KeyAgentAccount`: cheques to every seeder count toward what the viewer has paid,
each only up to the cover the chain guarantees its payee (the viewer's lane for it), and
keys are released only while that covers every key released but the credit window. Which
covers it needs it says (`covers_wanted`); the node looks them up and hands them back
(`set_cover`). Every release is appended to the audit log before the keys leave, and the
books are rebuilt from it on start: a viewer's cheques are cumulative, so an agent that
forgot what it released would take a returning viewer's old payments as credit for new
keys. What the chain shows cashed is a floor under that (`released_floor`), in case an
older log was restored.

Sessions belong to the connection that presented them (a `channel`): a replayed offer on
another connection cannot redirect this one's keys, and a connection cannot go back to
an older offer. The agent is a plain object fed messages; the node's transport delivers
them and sends the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass

from veilstream.chain.cheque import ChequeDomain, SignedCheque, checksum_address
from veilstream.chain.client import Guarantee
from veilstream.content import ContentKeys, Torrent, nodes_for_range
from veilstream.content import merkle
from veilstream.content.unseal import all_commitments
from veilstream.market import messages
from veilstream.market.audit import PAID_BY_CHEQUES, AuditLog
from veilstream.market.credit import ZERO_ADDRESS, KeyAgentAccount
from veilstream.market.errors import PaymentRefused
from veilstream.market.key_session import KeyDelivery, SessionOffer, seal_to_session, sign_delivery
from veilstream.market.settings import MarketSettings


@dataclass
class _Offering:
    torrent: Torrent
    keys: ContentKeys
    commitments: merkle.MerkleTree  # the key-commitment tree, built once: proofs are lookups


class KeyAgent:
    def __init__(
        self,
        domain: ChequeDomain,
        audit: AuditLog,
        settings: MarketSettings = MarketSettings(),
        clock: Callable[[], float] | None = None,
        *,
        signing_key: bytes,
        unpayable: Collection[str] = (),
        released_floor: Callable[[str, bytes], int] | None = None,
    ) -> None:
        import time

        from veilstream.identity.keys import evm_address_of_key

        self._signing_key = signing_key  # the agent's wallet key: it signs every delivery
        self.address = evm_address_of_key(signing_key)
        self.on_release: Callable[[bytes], None] | None = None  # called with the audit head
        self.domain = domain
        self.audit = audit
        self.settings = settings
        self._clock = clock or time.time
        # Addresses the chain never pays (the zero address, the project's contracts).
        self.unpayable = frozenset({ZERO_ADDRESS, domain.wallet, *(checksum_address(a) for a in unpayable)})
        self.released_floor = released_floor  # (viewer, content id) → keys taken as released (from the chain)
        self._offerings: dict[bytes, _Offering] = {}
        self._accounts: dict[tuple[str, bytes], KeyAgentAccount] = {}
        self._sessions: dict[tuple[Hashable, bytes], tuple[str, SessionOffer]] = {}  # (channel, content) → session

    def offer(self, torrent: Torrent, keys: ContentKeys) -> None:
        """Sell keys for this content."""
        commitments = merkle.MerkleTree(all_commitments(keys.tree_root, torrent.piece_count))
        if commitments.root != torrent.manifest.key_root:
            raise PaymentRefused("these keys do not match the content's key commitments")
        self._offerings[torrent.info_hash] = _Offering(torrent, keys, commitments)

    def account(self, viewer: str, content_id: bytes) -> KeyAgentAccount:
        key = (viewer, content_id)
        if key not in self._accounts:
            offering = self._offering(content_id)
            account = self._accounts[key] = KeyAgentAccount(
                viewer, content_id, offering.torrent.manifest.terms.price_per_slice_wei,
                self.settings.credit_window_slices, self.domain.verify, margin_s=self.settings.lane_cash_margin_s,
                unpayable=self.unpayable,
                released_floor=self.released_floor(viewer, content_id) if self.released_floor else 0,
            )
            for release in self.audit.releases_to(viewer, content_id.hex()):  # earlier sessions' releases
                if release.paid_by == PAID_BY_CHEQUES:
                    account.released.update(range(release.first, release.end))
            account.take_floor()
        return self._accounts[key]

    def creator_of(self, content_id: bytes) -> str:
        return checksum_address(self._offering(content_id).torrent.manifest.creator_address)

    def covers_wanted(self, viewer: str, content_id: bytes) -> list[str]:
        """Payees whose cover this viewer's book needs and does not have: the creator's
        (the lane that backs the window) and every payee its cheques name."""
        account = self.account(viewer, content_id)
        wanted = account.payees_without_cover()
        creator = self.creator_of(content_id)
        if creator not in account.covers and creator not in wanted:
            wanted.insert(0, creator)
        return wanted

    def set_cover(self, viewer: str, content_id: bytes, payee: str, cover: Guarantee) -> None:
        self.account(viewer, content_id).set_cover(payee, cover)

    def offering(self, content_id: bytes) -> _Offering:
        """What this agent sells of a content: its torrent, keys and commitment tree."""
        return self._offering(content_id)

    def _offering(self, content_id: bytes) -> _Offering:
        offering = self._offerings.get(content_id)
        if offering is None:
            raise PaymentRefused("this key agent does not sell keys for that content")
        return offering

    def offers(self, content_id: bytes) -> bool:
        return content_id in self._offerings

    def delivery(self, content_id: bytes, first: int, end: int) -> KeyDelivery:
        """The node keys opening slices [first, end), their commitment proof, the metadata key."""
        offering = self._offering(content_id)
        nodes = nodes_for_range(offering.keys.tree_root, first, end)
        return KeyDelivery(
            first, end, tuple((n.height, n.index, n.key) for n in nodes),
            tuple(offering.commitments.range_proof(first, end)), offering.keys.metadata_key,
        )

    def record_release(self, buyer: str, content_id: bytes, first: int, end: int, paid_wei: int,
                       paid_by: str = PAID_BY_CHEQUES) -> bytes:
        """Append a release to the audit log (before the keys leave); returns the new head."""
        head = self.audit.append(buyer, content_id.hex(), first, end, paid_wei, paid_by)
        if self.on_release is not None:
            self.on_release(head)
        return head

    # -- messages ----------------------------------------------------------------
    def on_session(self, offer: SessionOffer, channel: Hashable, *, now: float | None = None) -> str:
        """Take a viewer's session key for the connection `channel`; returns the viewer's
        address. A connection keeps one viewer and moves only to newer offers. `now` (unix
        s): a caller without IO passes its own; else the agent's clock is read."""
        self._offering(offer.content_id)
        viewer = offer.check(offer.content_id, int(self._clock() if now is None else now))
        held = self._sessions.get((channel, offer.content_id))
        if held is not None:
            if held[0] != viewer:
                raise PaymentRefused("a connection cannot change viewer")
            if offer.expires_at <= held[1].expires_at and offer != held[1]:
                raise PaymentRefused("an older key-session offer than the one this connection holds")
        self._sessions[(channel, offer.content_id)] = (viewer, offer)
        return viewer

    def forget(self, viewer: str, content_id: bytes) -> None:
        """Drop a viewer's book; it is rebuilt from the audit log if the viewer returns
        (its cheques come again with its next key request)."""
        self._accounts.pop((viewer, content_id), None)

    def end_channel(self, channel: Hashable) -> None:
        """The connection closed: forget its sessions."""
        for key in [k for k in self._sessions if k[0] == channel]:
            del self._sessions[key]

    def on_cheque(self, signed: SignedCheque) -> bool:
        return self.account(signed.cheque.viewer, signed.cheque.content_id).accept(signed)

    def on_key_request(self, channel: Hashable, content_id: bytes, first: int, end: int, *,
                       now: float | None = None) -> messages.SealedKeys | messages.MarketRefusal:
        """Answer a key request on `channel` with sealed keys, or a refusal saying what is
        missing. `now` as for `on_session`."""
        now = self._clock() if now is None else now
        try:
            offering = self._offering(content_id)
            count = offering.torrent.piece_count
            if not 0 <= first < end <= count or end - first > self.settings.max_slices_per_key_request:
                return messages.MarketRefusal(messages.RefusalCode.BAD_REQUEST, f"no slices [{first}, {end}) to sell")
            held = self._sessions.get((channel, content_id))
            if held is None:
                return messages.MarketRefusal(messages.RefusalCode.BAD_REQUEST, "open a key session first")
            viewer, session = held
            if int(now) >= session.expires_at:
                return messages.MarketRefusal(messages.RefusalCode.SESSION_EXPIRED, "the key session expired: offer a new one")
            account = self.account(viewer, content_id)
            slices = range(first, end)
            account.record_release(slices, now)  # raises PaymentRefused when not covered
        except PaymentRefused as exc:
            return messages.MarketRefusal(messages.RefusalCode.PAYMENT_NEEDED, str(exc))
        self.record_release(viewer, content_id, first, end, account.counted_wei(now))
        sealed = seal_to_session(session, messages.encode_delivery(self.delivery(content_id, first, end)))
        signature = sign_delivery(self._signing_key, content_id, first, end, sealed)
        return messages.SealedKeys(first, end, sealed, signature)
