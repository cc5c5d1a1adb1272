# pragma version ==0.4.3
"""
@title ContentRegistry
@notice One record per content id (the 32-byte BitTorrent v2 info-hash): who created it,
        which key agent sells its slice keys, and the terms every payment is split by.
@dev    Only the creator changes a record, and every change is an event. A change of the
        seeder share is time-locked by `TERMS_DELAY`: cheques already signed are split by
        the share in force when they are cashed, so seeders get a window to cash under
        the terms they served under before a cut takes effect.
        Registration is proven: the creator sends the torrent's info dict, whose SHA-256
        is the content id, and the contract reads the creator's address (and the
        key-commitment root) out of the manifest inside it. Only that address may
        register the id, so nobody can squat a creator's content. The manifest is the
        info dict's last key (`veilstream`, sorted last) and `creator` its first, so the
        bytes sit behind a fixed marker at an offset the caller names; only the creator
        writes its info dict, so no other bytes in it can pose as that marker.
"""

# Basis points in one whole.
BPS: constant(uint256) = 10_000
# Bounds that keep price * slices * BPS far inside uint256 (2**128 * 2**32 * 2**14).
MAX_PRICE_PER_SLICE: constant(uint256) = 2**128 - 1
MAX_SLICE_COUNT: constant(uint256) = 2**32
# A BEP 52 info dict of one file with the manifest is well under 1 KiB; this leaves room
# for long names and future fields.
MAX_INFO_BYTES: constant(uint256) = 16384
# Bencoded `10:veilstream` `d` `7:creator` `20:`, then the creator's address; then
# `13:creator nostr` `32:` and 32 bytes; then `8:key root` `32:` and the root.
CREATOR_MARK: constant(Bytes[26]) = b"10:veilstreamd7:creator20:"
NOSTR_MARK: constant(Bytes[19]) = b"13:creator nostr32:"
KEY_ROOT_MARK: constant(Bytes[13]) = b"8:key root32:"

struct Content:
    creator: address
    key_agent: address
    price_per_slice: uint256
    seeder_share_bps: uint256
    slice_count: uint256
    card_hash: bytes32
    # The Merkle root of the slice-key commitments, read from the manifest.
    key_root: bytes32
    # A scheduled seeder share and when it takes effect (0: nothing scheduled).
    next_seeder_share_bps: uint256
    share_effective_at: uint256

event ContentRegistered:
    content_id: indexed(bytes32)
    creator: indexed(address)
    key_agent: address
    price_per_slice: uint256
    seeder_share_bps: uint256
    slice_count: uint256
    card_hash: bytes32

event PriceChanged:
    content_id: indexed(bytes32)
    price_per_slice: uint256

event SeederShareScheduled:
    content_id: indexed(bytes32)
    seeder_share_bps: uint256
    effective_at: uint256

event SeederShareCancelled:
    content_id: indexed(bytes32)
    seeder_share_bps: uint256

event KeyAgentChanged:
    content_id: indexed(bytes32)
    key_agent: address

event CardChanged:
    content_id: indexed(bytes32)
    card_hash: bytes32

TERMS_DELAY: public(immutable(uint256))

_contents: HashMap[bytes32, Content]


@deploy
def __init__(terms_delay: uint256):
    TERMS_DELAY = terms_delay


@internal
@view
def _effective_share(c: Content) -> uint256:
    if c.share_effective_at != 0 and block.timestamp >= c.share_effective_at:
        return c.next_seeder_share_bps
    return c.seeder_share_bps


@internal
@view
def _owned(content_id: bytes32) -> Content:
    c: Content = self._contents[content_id]
    assert c.creator != empty(address), "registry: unknown content"
    assert c.creator == msg.sender, "registry: only the creator may change this content"
    return c


@internal
@pure
def _manifest_fields(info: Bytes[MAX_INFO_BYTES], manifest_at: uint256) -> (address, bytes32):
    """(creator, key root) read from the manifest at `manifest_at` in the info dict."""
    assert slice(info, manifest_at, 26) == CREATOR_MARK, "registry: no manifest at that offset of the info dict"
    creator: address = convert(convert(slice(info, manifest_at + 26, 20), bytes20), address)
    assert slice(info, manifest_at + 46, 19) == NOSTR_MARK, "registry: the manifest's fields are not in order"
    assert slice(info, manifest_at + 97, 13) == KEY_ROOT_MARK, "registry: the manifest's fields are not in order"
    key_root: bytes32 = extract32(info, manifest_at + 110)
    return creator, key_root


@external
def register(
    info: Bytes[MAX_INFO_BYTES],
    manifest_at: uint256,
    key_agent: address,
    price_per_slice: uint256,
    seeder_share_bps: uint256,
    slice_count: uint256,
    card_hash: bytes32,
) -> bytes32:
    """@notice Register the content whose info dict is `info`; returns its id (SHA-256 of `info`)."""
    content_id: bytes32 = sha256(info)
    creator: address = empty(address)
    key_root: bytes32 = empty(bytes32)
    creator, key_root = self._manifest_fields(info, manifest_at)
    assert creator == msg.sender, "registry: only the manifest's creator may register this content"
    assert self._contents[content_id].creator == empty(address), "registry: content id already registered"
    assert key_agent != empty(address), "registry: key agent is the zero address"
    assert price_per_slice <= MAX_PRICE_PER_SLICE, "registry: price per slice too large"
    assert seeder_share_bps <= BPS, "registry: seeder share above 10000 bps"
    assert slice_count > 0, "registry: slice count is zero"
    assert slice_count <= MAX_SLICE_COUNT, "registry: slice count too large"

    self._contents[content_id] = Content(
        creator=creator,
        key_agent=key_agent,
        price_per_slice=price_per_slice,
        seeder_share_bps=seeder_share_bps,
        slice_count=slice_count,
        card_hash=card_hash,
        key_root=key_root,
        next_seeder_share_bps=0,
        share_effective_at=0,
    )
    log ContentRegistered(
        content_id=content_id,
        creator=creator,
        key_agent=key_agent,
        price_per_slice=price_per_slice,
        seeder_share_bps=seeder_share_bps,
        slice_count=slice_count,
        card_hash=card_hash,
    )
    return content_id


@external
def set_terms(content_id: bytes32, price_per_slice: uint256, seeder_share_bps: uint256):
    """
    @notice The price applies at once (buyers pay an exact amount, so nobody is caught
            by it); a different seeder share applies after TERMS_DELAY.
    """
    c: Content = self._owned(content_id)
    assert price_per_slice <= MAX_PRICE_PER_SLICE, "registry: price per slice too large"
    assert seeder_share_bps <= BPS, "registry: seeder share above 10000 bps"

    # Fold a share that already took effect into the record before scheduling another.
    current_share: uint256 = self._effective_share(c)
    if c.share_effective_at > block.timestamp and seeder_share_bps != c.next_seeder_share_bps:
        # A change still waiting is dropped: say so, or watchers would wait for it.
        log SeederShareCancelled(content_id=content_id, seeder_share_bps=current_share)
    c.seeder_share_bps = current_share
    c.next_seeder_share_bps = 0
    c.share_effective_at = 0

    if price_per_slice != c.price_per_slice:
        c.price_per_slice = price_per_slice
        log PriceChanged(content_id=content_id, price_per_slice=price_per_slice)

    if seeder_share_bps != current_share:
        c.next_seeder_share_bps = seeder_share_bps
        c.share_effective_at = block.timestamp + TERMS_DELAY
        log SeederShareScheduled(
            content_id=content_id,
            seeder_share_bps=seeder_share_bps,
            effective_at=c.share_effective_at,
        )

    self._contents[content_id] = c


@external
def set_key_agent(content_id: bytes32, key_agent: address):
    c: Content = self._owned(content_id)
    assert key_agent != empty(address), "registry: key agent is the zero address"
    self._contents[content_id].key_agent = key_agent
    log KeyAgentChanged(content_id=content_id, key_agent=key_agent)


@external
def set_card(content_id: bytes32, card_hash: bytes32):
    c: Content = self._owned(content_id)
    self._contents[content_id].card_hash = card_hash
    log CardChanged(content_id=content_id, card_hash=card_hash)


@external
@view
def content(content_id: bytes32) -> Content:
    """@notice The stored record; `creator` is zero for an unknown id."""
    return self._contents[content_id]


@external
@view
def seeder_share_bps(content_id: bytes32) -> uint256:
    """@notice The seeder share in force now."""
    return self._effective_share(self._contents[content_id])


@external
@view
def payout_terms(content_id: bytes32) -> (address, uint256):
    """@notice (creator, seeder share in force); creator is zero for an unknown id."""
    c: Content = self._contents[content_id]
    return c.creator, self._effective_share(c)


@external
@view
def sale_terms(content_id: bytes32) -> (address, address, uint256, uint256, uint256):
    """@notice (creator, key agent, price per slice, seeder share in force, slice count)."""
    c: Content = self._contents[content_id]
    return c.creator, c.key_agent, c.price_per_slice, self._effective_share(c), c.slice_count


@external
@view
def key_root(content_id: bytes32) -> bytes32:
    """@notice The key-commitment root of the content's manifest (zero for an unknown id)."""
    return self._contents[content_id].key_root
