"""Access sales: a buyer pays on chain for a range of slices in one transaction; the key
agent answers on chain (`KeyIssued`) with the range's keys sealed to a one-time key the
buyer named in its purchase. The payment waits out a dispute window: a buyer who got bad
keys proves it on chain and is refunded; one who got good keys confirms (or lets the
window pass) and the creator is credited.

The delivery is built so the contract can check it (AccessSales.vy says how):

- its nodes are the dyadic subtrees of the key-commitment tree in order, those inside the
  range each opening at most `MAX_NODE_HEIGHT` levels of slices (a dispute re-derives
  them all), each with its commitment subtree root; `post_key` checks the roots rebuild
  the registered key root;
- sealing (`identity.WordSealer`): the agent's ephemeral secp256k1 key e, the buyer's
  one-time key B = b·G; the secret is the address of e·B = b·E, and word i is masked with
  keccak256(S, grant, i).

The one-time secret opens this grant only; the buyer keeps it (sealed in its vault) to
open the keys again or to prove them bad.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from veilstream.chain.client import ChainClient, DeliveryNode, Grant, GrantState, SealedDelivery
from veilstream.chain.errors import ChainError
from veilstream.content import KeyRing, Torrent
from veilstream.content import merkle
from veilstream.content.crypto import key_commitment
from veilstream.content.keytree import SequentialLeafKeys, TreeNode, range_cover
from veilstream.identity import WordOpener, WordSealer, generate_secp256k1_secret, secp256k1_public_key
from veilstream.identity.keys import evm_address
from veilstream.market.audit import PAID_BY_GRANT
from veilstream.market.errors import MarketError
from veilstream.market.key_agent import KeyAgent
from veilstream.market.stream import HeldGrants

log = logging.getLogger("veilstream.market")

MAX_NODE_HEIGHT = 12  # AccessSales.MAX_NODE_HEIGHT
METADATA_WORD = 2**256 - 1  # the mask index of the sealed metadata key


class AccessError(MarketError):
    """A purchase's keys could not be issued or opened."""


class BadDelivery(AccessError):
    """The keys posted for a grant do not open what they commit to: `position` is the node
    to prove it with (`ChainClient.dispute`)."""

    def __init__(self, grant_id: int, position: int, why: str) -> None:
        super().__init__(f"the keys posted for grant {grant_id} are bad ({why}): dispute them for a refund")
        self.grant_id = grant_id
        self.position = position


@dataclass(frozen=True)
class OneTimeKey:
    """A key made for one purchase: its public half goes into `buy`, its secret opens that
    grant's keys (and proves them bad in a dispute)."""

    secret: int

    @classmethod
    def generate(cls) -> OneTimeKey:
        return cls(generate_secp256k1_secret())

    @property
    def public(self) -> bytes:
        return secp256k1_public_key(self.secret)


def delivery_layout(first: int, end: int, slice_count: int) -> list[tuple[int, int, bool]]:
    """(height, index, inside) of a delivery's nodes, in order: the range's cover split to
    at most MAX_NODE_HEIGHT, and the subtrees around it."""
    width = merkle.next_power_of_two(slice_count)
    depth = width.bit_length() - 1
    inside = []
    for height, index in range_cover(first, end, depth):
        if height <= MAX_NODE_HEIGHT:
            inside.append((height, index, True))
        else:
            shift = height - MAX_NODE_HEIGHT
            inside += [(MAX_NODE_HEIGHT, (index << shift) + k, True) for k in range(1 << shift)]
    outside = [(h, j, False) for h, j in merkle.outside_subtrees(first, end, width)]
    return sorted(inside + outside, key=lambda node: node[1] << node[0])


def seal_delivery(keys: TreeNode, commitments: merkle.MerkleTree, metadata_key: bytes | None, grant: Grant,
                  one_time_key: bytes) -> SealedDelivery:
    """The agent's side: the grant's range sealed to the buyer's one-time key."""
    sealer = WordSealer(one_time_key, context=grant.grant_id)
    nodes = []
    end = grant.first_slice + grant.slice_count
    for position, (height, index, inside) in enumerate(delivery_layout(grant.first_slice, end, commitments.leaf_count)):
        root = commitments.levels[height][index]
        sealed = sealer.seal(position, keys.descendant(height, index).key) if inside else bytes(32)
        nodes.append(DeliveryNode(height, index, root, sealed, inside))
    meta = sealer.seal(METADATA_WORD, metadata_key) if metadata_key else bytes(32)
    return SealedDelivery(sealer.ephemeral_key, tuple(nodes), meta)


def commitment_root(node: TreeNode) -> bytes:
    """The key-commitment subtree root of every slice key under a key-tree node."""
    walker = SequentialLeafKeys(node)
    return merkle.root([key_commitment(walker.key(i)) for i in range(1 << node.height)])


def open_delivery(secret: int, grant: Grant, delivery: SealedDelivery, torrent: Torrent | None) -> KeyRing:
    """The buyer's side: the grant's keys, each node checked against the commitment root
    the contract made the agent stand by (the metadata key against the torrent's
    metadata, if given). Raises `BadDelivery` naming the node to dispute."""
    opener = WordOpener(secret, delivery.ephemeral_key, context=grant.grant_id)  # no point: opens as the contract does
    nodes = []
    for position, node in enumerate(delivery.nodes):
        if not node.inside:
            continue
        key = TreeNode(node.height, node.index, opener.open(position, node.sealed_key))
        if node.height > MAX_NODE_HEIGHT or commitment_root(key) != node.root:
            raise BadDelivery(grant.grant_id, position, f"node ({node.height}, {node.index}) fails its commitments")
        nodes.append(key)
    meta = delivery.sealed_metadata_key
    metadata_key = opener.open(METADATA_WORD, meta) if any(meta) else None
    if metadata_key is not None and torrent is not None:
        try:
            torrent.manifest.metadata(metadata_key)
        except Exception:  # noqa: BLE001 - a wrong metadata key is not what was bought: keep the slices
            log.warning("grant %s came with a metadata key that does not open the metadata", grant.grant_id)
            metadata_key = None
    return KeyRing(tuple(nodes), metadata_key)


class GrantResponder:
    """The key agent's watch on AccessSales: every open grant for a content it sells gets
    its keys, sealed to the buyer's one-time key and posted on chain (`KeyIssued`)."""

    def __init__(self, client: ChainClient, agent: KeyAgent) -> None:
        self.client = client
        self.agent = agent
        self._cursor: int | None = None
        self.issued: list[int] = []

    def poll(self) -> list[int]:
        """Answer the grants opened since the last poll; returns the grant ids answered."""
        page = self.client.events(self._cursor, names=["GrantOpened"])
        self._cursor = page.cursor
        answered = []
        for event in page.events:
            content_id = bytes(event.args["content_id"])
            if not self.agent.offers(content_id):
                continue
            try:
                grant = self.client.grant(event.args["grant_id"])
                if grant is None or grant.state is not GrantState.OPEN:
                    continue
                self._answer(grant, bytes(event.args["one_time_key"]))
                answered.append(grant.grant_id)
            except (AccessError, ChainError, ValueError) as exc:  # one bad grant must not hold up the rest
                log.warning("grant %s not answered: %s", event.args["grant_id"], exc)
        self.issued += answered
        return answered

    def _answer(self, grant: Grant, one_time_key: bytes) -> None:
        if len(one_time_key) != 64 or evm_address(one_time_key) != grant.one_time_key:
            raise AccessError("the grant's one-time key is not the one it was bought with")
        offering = self.agent.offering(grant.content_id)
        delivery = seal_delivery(offering.keys.tree_root, offering.commitments, offering.keys.metadata_key, grant,
                                 one_time_key)
        # The keys leave in the transaction: logged once it is mined (the chain's KeyIssued
        # is the record meanwhile), so a post that fails leaves no release in the log.
        self.client.post_key(grant.grant_id, delivery)
        first, end = grant.first_slice, grant.first_slice + grant.slice_count
        self.agent.record_release(grant.buyer, grant.content_id, first, end, grant.amount, PAID_BY_GRANT)


def issued_keys(client: ChainClient, secret: int, grant_id: int, torrent: Torrent) -> KeyRing | None:
    """The buyer's side: the keys posted for `grant_id`, opened and checked; None while
    none is posted yet. Raises `BadDelivery` if they are bad (dispute them)."""
    grant = client.grant(grant_id)
    if grant is None or grant.state not in (GrantState.ISSUED, GrantState.SETTLED):
        return None
    delivery = client.delivery(grant_id)
    if delivery is None:
        return None
    return open_delivery(secret, grant, delivery, torrent)


def dispute_delivery(client: ChainClient, secret: int, bad: BadDelivery) -> int:
    """Prove the bad node on chain; returns the refund."""
    delivery = client.delivery(bad.grant_id)
    receipt = client.dispute(bad.grant_id, secret, delivery, bad.position)
    return sum(e.args["amount"] for e in receipt.named("Disputed"))


def held_grants(client: ChainClient, secret_for: Callable[[int], int | None], buyer: str,
                torrent: Torrent) -> HeldGrants | None:
    """Every grant `buyer` holds for this content with its keys issued and good: the
    granted ranges and their keys, or None if none. `secret_for(grant_id)` is the grant's
    one-time secret (None: not this vault's purchase)."""
    ids, ranges, nodes, metadata_key = [], [], [], None
    for event in client.events(names=["GrantOpened"]).events:
        if bytes(event.args["content_id"]) != torrent.info_hash or event.args["buyer"] != buyer:
            continue
        secret = secret_for(event.args["grant_id"])
        if secret is None:
            continue
        try:
            ring = issued_keys(client, secret, event.args["grant_id"], torrent)
        except BadDelivery as bad:
            log.warning("%s", bad)
            continue
        if ring is None:
            continue
        grant = client.grant(event.args["grant_id"])
        ids.append(grant.grant_id)
        ranges.append((grant.first_slice, grant.first_slice + grant.slice_count))
        nodes.extend(ring.nodes)
        metadata_key = metadata_key or ring.metadata_key
    if not ids:
        return None
    return HeldGrants(tuple(ids), tuple(ranges), KeyRing(tuple(nodes), metadata_key))


@dataclass(frozen=True)
class GrantOutcome:
    """Where one of the buyer's purchases stands after `collect_grant` acted on it."""

    grant: Grant
    keys: KeyRing | None = None  # checked against the commitments: the vault keeps them
    refunded_wei: int = 0  # came back now (a refund after the deadline, or a bad delivery proven)
    disputed: bool = False

    @property
    def waiting(self) -> bool:
        return self.grant.state == GrantState.OPEN and self.keys is None and not self.refunded_wei


def collect_grant(client: ChainClient, secret: int, grant_id: int, torrent: Torrent, now: int) -> GrantOutcome:
    """The buyer's side of a purchase, acted on: good keys are taken and confirmed (the
    creator is paid now), bad ones proven on chain (refunded), and a grant left without
    keys past its deadline refunded. `now` is the chain's time."""
    grant = client.grant(grant_id)
    if grant is None:
        raise AccessError(f"grant {grant_id} does not exist on this chain")
    if grant.state == GrantState.OPEN:
        if now <= grant.deadline:
            return GrantOutcome(grant)
        receipt = client.refund(grant_id)
        refunded = sum(e.args["amount"] for e in receipt.named("Refunded")) or grant.amount
        return GrantOutcome(client.grant(grant_id), refunded_wei=refunded)
    if grant.state not in (GrantState.ISSUED, GrantState.SETTLED):
        return GrantOutcome(grant)
    try:
        ring = issued_keys(client, secret, grant_id, torrent)
    except BadDelivery as bad:
        if grant.state != GrantState.ISSUED:
            raise AccessError(f"{bad}; but the dispute window has closed") from None
        refunded = dispute_delivery(client, secret, bad)
        return GrantOutcome(client.grant(grant_id), refunded_wei=refunded, disputed=True)
    if ring is not None and grant.state == GrantState.ISSUED:
        client.confirm(grant_id)  # the keys are good: the creator is paid now, not after the dispute window
        grant = client.grant(grant_id)
    return GrantOutcome(grant, keys=ring)


def grants_bought(client: ChainClient, buyer: str, content_id: bytes | None = None) -> list[int]:
    """The ids of the grants `buyer` opened (for one content, or all), oldest first."""
    return [int(e.args["grant_id"]) for e in client.events(names=["GrantOpened"]).events
            if e.args["buyer"] == buyer and (content_id is None or bytes(e.args["content_id"]) == content_id)]
