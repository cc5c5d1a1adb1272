"""The key agent: releases slice keys against cheques, sealed to the viewer's session.

It holds the creator's content keys (or a delegate's copy). For each (viewer, content) it
keeps a `KeyAgentAccount`: cheques to every seeder count toward what the viewer has paid,
and keys are released only while that covers every key released but the credit window.
Every release is appended to the audit log before the keys leave, and the books are
rebuilt from it on start: a viewer's cheques are cumulative, so an agent that forgot what
it released would take a returning viewer's old payments as credit for new keys. The
agent is a plain object fed messages; the node's transport delivers them and sends the
answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from veilstream.chain.cheque import ChequeDomain, SignedCheque
from veilstream.content import ContentKeys, Torrent, nodes_for_range
from veilstream.content import merkle
from veilstream.content.unseal import all_commitments
from veilstream.market import messages
from veilstream.market.audit import PAID_BY_CHEQUES, AuditLog
from veilstream.market.credit import KeyAgentAccount
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
    ) -> None:
        import time

        self._signing_key = signing_key  # the agent's wallet key: it signs every delivery
        self.on_release: Callable[[bytes], None] | None = None  # called with the audit head
        self.domain = domain
        self.audit = audit
        self.settings = settings
        self._clock = clock or time.time
        self._offerings: dict[bytes, _Offering] = {}
        self._accounts: dict[tuple[str, bytes], KeyAgentAccount] = {}
        self._sessions: dict[tuple[str, bytes], SessionOffer] = {}

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
                self.settings.credit_window_slices, self.domain.verify,
            )
            for release in self.audit.releases_to(viewer, content_id.hex()):  # earlier sessions' releases
                if release.paid_by == PAID_BY_CHEQUES:
                    account.released.update(range(release.first, release.end))
        return self._accounts[key]

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
    def on_session(self, offer: SessionOffer) -> str:
        """Register a viewer's session key; returns the viewer's address."""
        self._offering(offer.content_id)
        viewer = offer.check(offer.content_id, int(self._clock()))
        self._sessions[(viewer, offer.content_id)] = offer
        return viewer

    def on_cheque(self, signed: SignedCheque) -> bool:
        return self.account(signed.cheque.viewer, signed.cheque.content_id).accept(signed)

    def on_key_request(self, viewer: str, content_id: bytes, first: int, end: int) -> messages.SealedKeys | messages.MarketRefusal:
        """Answer a key request with sealed keys, or a refusal saying what is missing."""
        try:
            offering = self._offering(content_id)
            count = offering.torrent.piece_count
            if not 0 <= first < end <= count or end - first > self.settings.max_slices_per_key_request:
                return messages.MarketRefusal(messages.RefusalCode.BAD_REQUEST, f"no slices [{first}, {end}) to sell")
            session = self._sessions.get((viewer, content_id))
            if session is None or int(self._clock()) >= session.expires_at:
                return messages.MarketRefusal(messages.RefusalCode.BAD_REQUEST, "open a key session first")
            account = self.account(viewer, content_id)
            slices = range(first, end)
            account.record_release(slices)  # raises PaymentRefused when not covered
        except PaymentRefused as exc:
            return messages.MarketRefusal(messages.RefusalCode.PAYMENT_NEEDED, str(exc))
        self.record_release(viewer, content_id, first, end, account.paid_wei)
        sealed = seal_to_session(session, messages.encode_delivery(self.delivery(content_id, first, end)))
        signature = sign_delivery(self._signing_key, content_id, first, end, sealed)
        return messages.SealedKeys(first, end, sealed, signature)
