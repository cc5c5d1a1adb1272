# pragma version ==0.4.3
"""
@title AccessSales
@notice Buy a range of slices (or the whole content) in one transaction. The payment,
        price * count * (1 - seeder share), is held until the content's key agent posts
        the range's keys, sealed to a one-time key the buyer named (`KeyIssued`), and then
        for DISPUTE_WINDOW more: within it the buyer may prove a bad delivery and is
        refunded; after it (or once the buyer confirms) the creator is credited. If no key
        comes before the deadline, the buyer takes the payment back.
@dev    A delivery is checkable on chain. Its nodes are a dyadic partition of the whole
        key-commitment tree, in order: the subtrees inside the range carry a node key of
        the GGM key tree (sealed) and their commitment subtree root, those outside their
        root only; `post_key` checks that the roots rebuild the registered key root, so
        the agent is bound to one root per node. A node opens at most 2**MAX_NODE_HEIGHT
        slices, so a dispute can afford to derive every slice key under it (HMAC-SHA256
        steps), hash their commitments and compare with the node's root.
        Sealing: the agent's ephemeral key E and the buyer's one-time key B give the
        shared point e·B = b·E; its address S is the secret, and word i of the delivery is
        masked with keccak256(S, grant id, i). In a dispute the buyer reveals b (one-time:
        it opens this grant only); the contract checks b·G is B's address and computes
        b·E's address with the ecrecover precompile (ecrecover(0, v, x, x·b mod n) is the
        address of b times the point with x-coordinate x).
        States: OPEN -> ISSUED -> SETTLED, ISSUED -> REFUNDED (a proven bad delivery),
        OPEN -> REFUNDED (no key by the deadline). Never back, never twice.
        The buyer sends exactly the price in force: a price change between signing and
        mining makes the purchase revert instead of charging a different amount.
"""

interface Registry:
    def sale_terms(content_id: bytes32) -> (address, address, uint256, uint256, uint256): view
    def key_root(content_id: bytes32) -> bytes32: view

BPS: constant(uint256) = 10_000
# The dyadic partition of a tree of 2**32 leaves around one range has at most 2*32 outside
# subtrees; inside, a range of MAX_GRANT_SLICES needs at most that / 4096 + 2*12 nodes.
MAX_DELIVERY_NODES: constant(uint256) = 160
MAX_NODE_HEIGHT: constant(uint256) = 12
MAX_NODE_LEAVES: constant(uint256) = 4096  # 2**MAX_NODE_HEIGHT: a dispute derives up to this many keys
MAX_GRANT_SLICES: constant(uint256) = 65536
MAX_TREE_HEIGHT: constant(uint256) = 33

GRANT_OPEN: constant(uint8) = 1
GRANT_ISSUED: constant(uint8) = 2
GRANT_REFUNDED: constant(uint8) = 3
GRANT_SETTLED: constant(uint8) = 4

SECP256K1_N: constant(uint256) = 115792089237316195423570985008687907852837564279074904382605163141518161494337
SECP256K1_GX: constant(uint256) = 55066263022277343669578718895168534326250603453777594175500187360389116729240
# HMAC-SHA256 pads for a 32-byte key (its other 32 bytes of block are zero: pad bytes only).
IPAD: constant(uint256) = 24520677720843429619109149766545674604221879105665060620120429554616898041398  # 0x36 × 32
OPAD: constant(uint256) = 41775969450325843054778551454114853029415053291133066241686657759717678144604  # 0x5c × 32
COMMITMENT_TAG: constant(Bytes[28]) = b"veilstream/key-commitment/v1"
METADATA_WORD: constant(uint256) = max_value(uint256)  # the mask index of the sealed metadata key

struct Grant:
    buyer: address
    content_id: bytes32
    first_slice: uint256
    slice_count: uint256
    amount: uint256
    deadline: uint256
    state: uint8
    # The address of the buyer's one-time key: the keys are sealed to it.
    one_time_key: address
    issued_at: uint256
    # keccak256 of what the agent posted: a dispute quotes it back.
    delivery: bytes32

struct Node:
    height: uint256
    index: uint256
    # The root of the key-commitment subtree under this node.
    root: bytes32
    # Inside the range: the node's key of the key tree, masked; outside: zero.
    sealed_key: bytes32
    inside: bool

event GrantOpened:
    grant_id: indexed(uint256)
    content_id: indexed(bytes32)
    buyer: indexed(address)
    first_slice: uint256
    slice_count: uint256
    amount: uint256
    deadline: uint256
    one_time_key: Bytes[64]

event KeyIssued:
    grant_id: indexed(uint256)
    content_id: indexed(bytes32)
    buyer: indexed(address)
    ephemeral_key: Bytes[33]
    nodes: DynArray[Node, MAX_DELIVERY_NODES]
    sealed_metadata_key: bytes32

event Disputed:
    grant_id: indexed(uint256)
    buyer: indexed(address)
    amount: uint256
    node: uint256

event Settled:
    grant_id: indexed(uint256)
    creator: indexed(address)
    amount: uint256

event Refunded:
    grant_id: indexed(uint256)
    buyer: indexed(address)
    amount: uint256

event Claimed:
    payee: indexed(address)
    amount: uint256

REGISTRY: public(immutable(address))
KEY_DEADLINE: public(immutable(uint256))
DISPUTE_WINDOW: public(immutable(uint256))

grants: public(HashMap[uint256, Grant])
grant_count: public(uint256)
earnings: public(HashMap[address, uint256])


@deploy
def __init__(registry: address, key_deadline: uint256, dispute_window: uint256):
    assert registry.is_contract, "sales: registry is not a contract"
    assert key_deadline > 0, "sales: key deadline is zero"
    assert dispute_window > 0, "sales: dispute window is zero"
    REGISTRY = registry
    KEY_DEADLINE = key_deadline
    DISPUTE_WINDOW = dispute_window


@external
@view
def quote(content_id: bytes32, first_slice: uint256, slice_count: uint256) -> uint256:
    """@notice What buy() must be sent for this range now."""
    return self._quote(content_id, first_slice, slice_count)


@internal
@view
def _quote(content_id: bytes32, first_slice: uint256, slice_count: uint256) -> uint256:
    creator: address = empty(address)
    agent: address = empty(address)
    price: uint256 = 0
    share: uint256 = 0
    total: uint256 = 0
    creator, agent, price, share, total = staticcall Registry(REGISTRY).sale_terms(content_id)
    assert creator != empty(address), "sales: unknown content"
    assert slice_count > 0, "sales: empty range"
    assert slice_count <= MAX_GRANT_SLICES, "sales: buy at most MAX_GRANT_SLICES slices at once"
    assert first_slice < total and slice_count <= total - first_slice, "sales: range outside the content"
    # price < 2**128, slice_count <= 2**32, BPS < 2**14: the product fits in uint256.
    return price * slice_count * (BPS - share) // BPS


@external
@payable
@nonreentrant
def buy(content_id: bytes32, first_slice: uint256, slice_count: uint256, one_time_key: Bytes[64]) -> uint256:
    """@notice `one_time_key`: the 64-byte public key the keys are to be sealed to."""
    amount: uint256 = self._quote(content_id, first_slice, slice_count)
    assert msg.value == amount, "sales: value is not the price"
    assert len(one_time_key) == 64, "sales: a one-time key is 64 bytes"

    grant_id: uint256 = self.grant_count + 1
    self.grant_count = grant_id
    deadline: uint256 = block.timestamp + KEY_DEADLINE
    self.grants[grant_id] = Grant(
        buyer=msg.sender,
        content_id=content_id,
        first_slice=first_slice,
        slice_count=slice_count,
        amount=amount,
        deadline=deadline,
        state=GRANT_OPEN,
        one_time_key=convert(convert(slice(keccak256(one_time_key), 12, 20), bytes20), address),
        issued_at=0,
        delivery=empty(bytes32),
    )
    log GrantOpened(
        grant_id=grant_id,
        content_id=content_id,
        buyer=msg.sender,
        first_slice=first_slice,
        slice_count=slice_count,
        amount=amount,
        deadline=deadline,
        one_time_key=one_time_key,
    )
    return grant_id


@internal
@pure
def _tree_height(leaf_count: uint256) -> uint256:
    """Height of the smallest tree with at least `leaf_count` leaves."""
    height: uint256 = 0
    for _: uint256 in range(MAX_TREE_HEIGHT):
        if (1 << height) >= leaf_count:
            break
        height += 1
    return height


@internal
@pure
def _check_delivery(first: uint256, end: uint256, total: uint256, key_root: bytes32,
                    nodes: DynArray[Node, MAX_DELIVERY_NODES]):
    """The nodes tile the padded tree in order, each wholly inside or outside [first,
    end), those inside no higher than MAX_NODE_HEIGHT, and their roots rebuild key_root."""
    depth: uint256 = self._tree_height(total)
    heights: uint256[MAX_DELIVERY_NODES] = empty(uint256[MAX_DELIVERY_NODES])
    indices: uint256[MAX_DELIVERY_NODES] = empty(uint256[MAX_DELIVERY_NODES])
    hashes: bytes32[MAX_DELIVERY_NODES] = empty(bytes32[MAX_DELIVERY_NODES])
    top: uint256 = 0
    cursor: uint256 = 0
    for node: Node in nodes:
        assert node.height <= depth, "sales: a delivery node above the tree"
        start: uint256 = node.index << node.height
        assert start == cursor, "sales: delivery nodes do not tile the tree in order"
        stop: uint256 = start + (1 << node.height)
        cursor = stop
        if node.inside:
            assert first <= start and stop <= end, "sales: a key node outside the range"
            assert node.height <= MAX_NODE_HEIGHT, "sales: a key node opens more than MAX_NODE_LEAVES slices"
        else:
            assert stop <= first or start >= end, "sales: a subtree without its key inside the range"
            assert node.sealed_key == empty(bytes32), "sales: a key outside the range"
        height: uint256 = node.height
        index: uint256 = node.index
        digest: bytes32 = node.root
        for _: uint256 in range(MAX_TREE_HEIGHT):
            if top == 0 or heights[top - 1] != height or index % 2 != 1 or indices[top - 1] != index - 1:
                break
            top -= 1
            digest = sha256(concat(hashes[top], digest))
            height += 1
            index = index // 2
        heights[top] = height
        indices[top] = index
        hashes[top] = digest
        top += 1
    assert cursor == 1 << depth, "sales: delivery nodes do not cover the tree"
    assert top == 1 and hashes[0] == key_root, "sales: the delivery does not rebuild the key-commitment root"


@external
@nonreentrant
def post_key(grant_id: uint256, ephemeral_key: Bytes[33], nodes: DynArray[Node, MAX_DELIVERY_NODES],
             sealed_metadata_key: bytes32):
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_OPEN, "sales: grant is not open"
    assert block.timestamp <= grant.deadline, "sales: key deadline has passed"
    assert len(ephemeral_key) == 33, "sales: an ephemeral key is 33 bytes"
    creator: address = empty(address)
    agent: address = empty(address)
    price: uint256 = 0
    share: uint256 = 0
    total: uint256 = 0
    creator, agent, price, share, total = staticcall Registry(REGISTRY).sale_terms(grant.content_id)
    assert msg.sender == agent, "sales: only the content's key agent may post its keys"
    key_root: bytes32 = staticcall Registry(REGISTRY).key_root(grant.content_id)
    self._check_delivery(grant.first_slice, grant.first_slice + grant.slice_count, total, key_root, nodes)

    self.grants[grant_id].state = GRANT_ISSUED
    self.grants[grant_id].issued_at = block.timestamp
    self.grants[grant_id].delivery = keccak256(abi_encode(ephemeral_key, nodes, sealed_metadata_key))
    log KeyIssued(grant_id=grant_id, content_id=grant.content_id, buyer=grant.buyer, ephemeral_key=ephemeral_key,
                  nodes=nodes, sealed_metadata_key=sealed_metadata_key)


@internal
@view
def _times(scalar: uint256, x: uint256, odd: bool) -> address:
    """The address of scalar·P, P the curve point with x-coordinate x and a y of that parity."""
    v: uint256 = 27
    if odd:
        v = 28
    return ecrecover(empty(bytes32), v, x, uint256_mulmod(x, scalar, SECP256K1_N))


@internal
@pure
def _child(parent: bytes32, bit: uint256) -> bytes32:
    """HMAC-SHA256(parent, bit): the key tree's step (content/keytree.py)."""
    key: uint256 = convert(parent, uint256)
    message: bytes1 = 0x00
    if bit == 1:
        message = 0x01
    inner: bytes32 = sha256(concat(convert(key ^ IPAD, bytes32), convert(IPAD, bytes32), message))
    return sha256(concat(convert(key ^ OPAD, bytes32), convert(OPAD, bytes32), inner))


@internal
@pure
def _commitment_root(node_key: bytes32, height: uint256) -> bytes32:
    """The key-commitment subtree root of every slice key under a node of the key tree."""
    layer: bytes32[MAX_NODE_LEAVES] = empty(bytes32[MAX_NODE_LEAVES])
    layer[0] = node_key
    width: uint256 = 1
    for _: uint256 in range(height, bound=MAX_NODE_HEIGHT):
        for k: uint256 in range(width, bound=MAX_NODE_LEAVES // 2):
            i: uint256 = width - 1 - k  # from the end: each parent is read before its slots are written
            parent: bytes32 = layer[i]
            layer[2 * i + 1] = self._child(parent, 1)
            layer[2 * i] = self._child(parent, 0)
        width = width * 2
    for i: uint256 in range(width, bound=MAX_NODE_LEAVES):
        layer[i] = sha256(concat(COMMITMENT_TAG, layer[i]))
    for _: uint256 in range(height, bound=MAX_NODE_HEIGHT):
        width = width // 2
        for i: uint256 in range(width, bound=MAX_NODE_LEAVES // 2):
            layer[i] = sha256(concat(layer[2 * i], layer[2 * i + 1]))
    return layer[0]


@external
@nonreentrant
def dispute(grant_id: uint256, one_time_secret: uint256, ephemeral_key: Bytes[33],
            nodes: DynArray[Node, MAX_DELIVERY_NODES], sealed_metadata_key: bytes32, position: uint256) -> uint256:
    """
    @notice Prove that node `position` of the delivery does not open what its root
            commits to: the buyer reveals its one-time secret, the contract unseals the
            node key and rebuilds its commitments. Refunds the buyer; reverts if the key is good.
    """
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_ISSUED, "sales: grant is not issued"
    assert msg.sender == grant.buyer, "sales: only the buyer disputes"
    assert block.timestamp <= grant.issued_at + DISPUTE_WINDOW, "sales: the dispute window has passed"
    assert keccak256(abi_encode(ephemeral_key, nodes, sealed_metadata_key)) == grant.delivery, \
        "sales: not the delivery that was posted"
    assert one_time_secret != 0 and one_time_secret < SECP256K1_N, "sales: not a secret key"
    assert self._times(one_time_secret, SECP256K1_GX, False) == grant.one_time_key, \
        "sales: not the grant's one-time key"
    assert position < len(nodes), "sales: no such node"
    node: Node = nodes[position]
    assert node.inside, "sales: that node carries no key"

    prefix: uint256 = convert(slice(ephemeral_key, 0, 1), uint256)
    x: uint256 = convert(extract32(ephemeral_key, 1), uint256)
    shared: address = empty(address)
    if (prefix == 2 or prefix == 3) and x != 0 and x < SECP256K1_N:
        shared = self._times(one_time_secret, x, prefix == 3)
    mask: bytes32 = keccak256(abi_encode(shared, grant_id, position))
    node_key: bytes32 = convert(convert(node.sealed_key, uint256) ^ convert(mask, uint256), bytes32)
    assert self._commitment_root(node_key, node.height) != node.root, "sales: the delivered key is good"

    self.grants[grant_id].state = GRANT_REFUNDED
    log Disputed(grant_id=grant_id, buyer=grant.buyer, amount=grant.amount, node=position)
    if grant.amount != 0:
        raw_call(grant.buyer, b"", value=grant.amount)
    return grant.amount


@internal
def _settle(grant_id: uint256, grant: Grant):
    creator: address = empty(address)
    agent: address = empty(address)
    price: uint256 = 0
    share: uint256 = 0
    total: uint256 = 0
    creator, agent, price, share, total = staticcall Registry(REGISTRY).sale_terms(grant.content_id)
    self.grants[grant_id].state = GRANT_SETTLED
    self.earnings[creator] += grant.amount
    log Settled(grant_id=grant_id, creator=creator, amount=grant.amount)


@external
@nonreentrant
def confirm(grant_id: uint256):
    """@notice The buyer found the keys good: the creator is credited now."""
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_ISSUED, "sales: grant is not issued"
    assert msg.sender == grant.buyer, "sales: only the buyer confirms"
    self._settle(grant_id, grant)


@external
@nonreentrant
def settle(grant_id: uint256):
    """@notice After the dispute window anyone may credit the creator."""
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_ISSUED, "sales: grant is not issued"
    assert block.timestamp > grant.issued_at + DISPUTE_WINDOW, "sales: the dispute window is still open"
    self._settle(grant_id, grant)


@external
@nonreentrant
def refund(grant_id: uint256) -> uint256:
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_OPEN, "sales: grant is not open"
    assert msg.sender == grant.buyer, "sales: only the buyer is refunded"
    assert block.timestamp > grant.deadline, "sales: key deadline not reached"

    self.grants[grant_id].state = GRANT_REFUNDED
    log Refunded(grant_id=grant_id, buyer=grant.buyer, amount=grant.amount)
    if grant.amount != 0:
        raw_call(grant.buyer, b"", value=grant.amount)
    return grant.amount


@external
@nonreentrant
def claim() -> uint256:
    amount: uint256 = self.earnings[msg.sender]
    assert amount != 0, "sales: nothing to claim"
    self.earnings[msg.sender] = 0
    log Claimed(payee=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount
