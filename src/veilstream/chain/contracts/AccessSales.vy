# pragma version ==0.4.3
"""
@title AccessSales
@notice Buy a range of slices (or the whole content) in one transaction. The payment,
        price * count * (1 - seeder share), is held until the content's key agent posts
        the key sealed to the buyer (`KeyIssued`), then credited to the creator; if no key
        comes before the deadline, the buyer takes the payment back.
@dev    A grant moves OPEN -> ISSUED or OPEN -> REFUNDED, never back: post_key only
        before the deadline, refund only after it, so the two cannot both happen.
        The buyer sends exactly the price in force: a price change between signing and
        mining makes the purchase revert instead of charging a different amount.
"""

interface Registry:
    def sale_terms(content_id: bytes32) -> (address, address, uint256, uint256, uint256): view

BPS: constant(uint256) = 10_000
# A sealed range key: up to 2*log2(2**32) tree nodes of 32 bytes plus sealing overhead.
MAX_SEALED_KEY_BYTES: constant(uint256) = 4096

GRANT_OPEN: constant(uint8) = 1
GRANT_ISSUED: constant(uint8) = 2
GRANT_REFUNDED: constant(uint8) = 3

struct Grant:
    buyer: address
    content_id: bytes32
    first_slice: uint256
    slice_count: uint256
    amount: uint256
    deadline: uint256
    state: uint8

event GrantOpened:
    grant_id: indexed(uint256)
    content_id: indexed(bytes32)
    buyer: indexed(address)
    first_slice: uint256
    slice_count: uint256
    amount: uint256
    deadline: uint256

event KeyIssued:
    grant_id: indexed(uint256)
    content_id: indexed(bytes32)
    buyer: indexed(address)
    sealed_key: Bytes[MAX_SEALED_KEY_BYTES]

event Refunded:
    grant_id: indexed(uint256)
    buyer: indexed(address)
    amount: uint256

event Claimed:
    payee: indexed(address)
    amount: uint256

REGISTRY: public(immutable(address))
KEY_DEADLINE: public(immutable(uint256))

grants: public(HashMap[uint256, Grant])
grant_count: public(uint256)
earnings: public(HashMap[address, uint256])


@deploy
def __init__(registry: address, key_deadline: uint256):
    assert registry.is_contract, "sales: registry is not a contract"
    assert key_deadline > 0, "sales: key deadline is zero"
    REGISTRY = registry
    KEY_DEADLINE = key_deadline


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
    assert first_slice < total and slice_count <= total - first_slice, "sales: range outside the content"
    # price < 2**128, slice_count <= 2**32, BPS < 2**14: the product fits in uint256.
    return price * slice_count * (BPS - share) // BPS


@external
@payable
@nonreentrant
def buy(content_id: bytes32, first_slice: uint256, slice_count: uint256) -> uint256:
    amount: uint256 = self._quote(content_id, first_slice, slice_count)
    assert msg.value == amount, "sales: value is not the price"

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
    )
    log GrantOpened(
        grant_id=grant_id,
        content_id=content_id,
        buyer=msg.sender,
        first_slice=first_slice,
        slice_count=slice_count,
        amount=amount,
        deadline=deadline,
    )
    return grant_id


@external
@nonreentrant
def post_key(grant_id: uint256, sealed_key: Bytes[MAX_SEALED_KEY_BYTES]):
    grant: Grant = self.grants[grant_id]
    assert grant.state == GRANT_OPEN, "sales: grant is not open"
    assert block.timestamp <= grant.deadline, "sales: key deadline has passed"
    assert len(sealed_key) != 0, "sales: empty key"
    creator: address = empty(address)
    agent: address = empty(address)
    price: uint256 = 0
    share: uint256 = 0
    total: uint256 = 0
    creator, agent, price, share, total = staticcall Registry(REGISTRY).sale_terms(grant.content_id)
    assert msg.sender == agent, "sales: only the content's key agent may post its keys"

    self.grants[grant_id].state = GRANT_ISSUED
    self.earnings[creator] += grant.amount
    log KeyIssued(grant_id=grant_id, content_id=grant.content_id, buyer=grant.buyer, sealed_key=sealed_key)


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
