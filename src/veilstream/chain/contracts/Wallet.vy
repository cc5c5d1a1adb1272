# pragma version ==0.4.3
"""
@title Wallet
@notice A chequebook for every viewer. A viewer deposits once, then signs EIP-712 cheques
        (viewer, contentId, seeder, cumulativeAmount): one cumulative counter per
        (viewer, content, seeder). Cashing pays the amount not yet cashed, split by the
        registry's terms: the seeder share to the seeder, the rest to the creator. A
        content id of zero pays the named seeder (the beneficiary) in full.
@dev    Safety rules, each held by a test:
        - Cumulative amounts make replays and stale cheques worth nothing.
        - A cheque is never worth more than the deposit behind it: the rest is recorded as
          a shortfall and stays cashable if the viewer deposits again.
        - A withdrawal is time-locked (request, WITHDRAWAL_DELAY, execute) and cheques stay
          cashable meanwhile; execute pays what is left at that moment, and only within
          WITHDRAWAL_WINDOW after the lock ends: a request nobody acted on expires, so a
          payee never has to watch for a withdrawal announced long ago.
        - Credit needs a lane: `open_lanes` holds part of the deposit for one payee of one
          content until a time. A cheque is paid from its payee's lane first, then from
          the free deposit; nothing else can take what a lane holds (withdrawals take the
          free deposit only, and a lane is closed only after its time). So a payee may
          count on `guarantee()` = cashed + lane, whatever the viewer signs to anyone
          else: one deposit is never promised to two payees.
        - In a batch, a bad cheque is logged and skipped, never reverted: nothing in the
          per-cheque path can revert (amounts are bounded by deposits, which are bounded
          by the ether supply).
        - Payees are credited, not called: `claim` moves their earnings out. Every
          function that sends ether follows checks-effects-interactions and holds the
          re-entrancy lock.
        - Anyone may submit a batch: money only ever moves to the payees a viewer signed
          for, so the submitter gains nothing but the payees' thanks.
"""

interface Registry:
    def payout_terms(content_id: bytes32) -> (address, uint256): view

struct Cheque:
    viewer: address
    content_id: bytes32
    seeder: address
    cumulative_amount: uint256
    # The viewer's signature over the EIP-712 digest, split as ecrecover takes it.
    v: uint8
    r: bytes32
    s: bytes32

struct PendingWithdrawal:
    amount: uint256
    unlock_at: uint256

struct Lane:
    # Wei held for one payee of one content; it pays that payee's cheques first.
    amount: uint256
    # Held until then (unix s); after it the viewer may close the lane.
    until: uint256

# Cheques per cash() call: bounds the loop (about 60k gas per cheque at worst).
MAX_CHEQUES_PER_BATCH: constant(uint256) = 256
# Lanes per open_lanes() call: the payees a viewer meets in one go (Filecoin caps a
# payment channel's lanes per update in the same spirit).
MAX_LANES_PER_CALL: constant(uint256) = 16
BPS: constant(uint256) = 10_000
# secp256k1 order / 2: signatures with a higher s are the malleable twin (EIP-2).
SECP256K1_HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
CHEQUE_TYPEHASH: constant(bytes32) = keccak256(
    "Cheque(address viewer,bytes32 contentId,address seeder,uint256 cumulativeAmount)"
)
DOMAIN_NAME_HASH: constant(bytes32) = keccak256("Veilstream Wallet")
DOMAIN_VERSION_HASH: constant(bytes32) = keccak256("1")

# Why a cheque in a batch paid nothing (ChequeRejected.reason).
REJECT_NOT_NEWER: constant(uint8) = 1
REJECT_BAD_SIGNATURE: constant(uint8) = 2
REJECT_UNKNOWN_CONTENT: constant(uint8) = 3
# The zero address, or this contract: earnings credited there could never be claimed.
REJECT_BAD_PAYEE: constant(uint8) = 4

event Deposited:
    viewer: indexed(address)
    amount: uint256
    balance: uint256

event WithdrawalRequested:
    viewer: indexed(address)
    amount: uint256
    unlock_at: uint256

event WithdrawalCancelled:
    viewer: indexed(address)

event Withdrawn:
    viewer: indexed(address)
    amount: uint256

event ChequeCashed:
    viewer: indexed(address)
    content_id: indexed(bytes32)
    seeder: indexed(address)
    cumulative_amount: uint256
    paid: uint256
    seeder_part: uint256
    creator_part: uint256

event ChequeShortfall:
    viewer: indexed(address)
    content_id: indexed(bytes32)
    seeder: indexed(address)
    cumulative_amount: uint256
    unpaid: uint256

event ChequeRejected:
    viewer: indexed(address)
    content_id: indexed(bytes32)
    seeder: indexed(address)
    cumulative_amount: uint256
    reason: uint8

event Claimed:
    payee: indexed(address)
    amount: uint256

event LaneOpened:
    viewer: indexed(address)
    content_id: indexed(bytes32)
    payee: indexed(address)
    amount: uint256
    until: uint256

event LaneClosed:
    viewer: indexed(address)
    content_id: indexed(bytes32)
    payee: indexed(address)
    amount: uint256

REGISTRY: public(immutable(address))
WITHDRAWAL_DELAY: public(immutable(uint256))
WITHDRAWAL_WINDOW: public(immutable(uint256))
LANE_MIN_DURATION: public(immutable(uint256))
_CACHED_CHAIN_ID: immutable(uint256)
_CACHED_DOMAIN_SEPARATOR: immutable(bytes32)

# The free part of each viewer's deposit: what cheques fall back on and withdrawals take.
deposits: public(HashMap[address, uint256])
# viewer -> content id -> payee -> the lane held for that payee.
lanes: public(HashMap[address, HashMap[bytes32, HashMap[address, Lane]]])
# viewer -> what all its lanes hold together.
held: public(HashMap[address, uint256])
pending_withdrawals: public(HashMap[address, PendingWithdrawal])
# viewer -> content id -> seeder -> cumulative amount already paid out.
cashed: public(HashMap[address, HashMap[bytes32, HashMap[address, uint256]]])
# viewer -> content id -> seeder -> amount signed for but not covered by the deposit.
shortfall: public(HashMap[address, HashMap[bytes32, HashMap[address, uint256]]])
earnings: public(HashMap[address, uint256])


@deploy
def __init__(registry: address, withdrawal_delay: uint256, withdrawal_window: uint256, lane_min_duration: uint256):
    assert registry.is_contract, "wallet: registry is not a contract"
    assert withdrawal_window > 0, "wallet: withdrawal window is zero"
    REGISTRY = registry
    WITHDRAWAL_DELAY = withdrawal_delay
    WITHDRAWAL_WINDOW = withdrawal_window
    LANE_MIN_DURATION = lane_min_duration
    _CACHED_CHAIN_ID = chain.id
    _CACHED_DOMAIN_SEPARATOR = self._build_domain_separator()


@internal
@view
def _build_domain_separator() -> bytes32:
    return keccak256(
        abi_encode(
            EIP712_DOMAIN_TYPEHASH, DOMAIN_NAME_HASH, DOMAIN_VERSION_HASH, chain.id, self
        )
    )


@internal
@view
def _domain_separator() -> bytes32:
    # Recomputed after a chain split, so cheques of one fork are void on the other.
    if chain.id == _CACHED_CHAIN_ID:
        return _CACHED_DOMAIN_SEPARATOR
    return self._build_domain_separator()


@internal
@pure
def _digest(
    separator: bytes32, viewer: address, content_id: bytes32, seeder: address, amount: uint256
) -> bytes32:
    struct_hash: bytes32 = keccak256(abi_encode(CHEQUE_TYPEHASH, viewer, content_id, seeder, amount))
    return keccak256(concat(b"\x19\x01", separator, struct_hash))


@external
@view
def domain_separator() -> bytes32:
    return self._domain_separator()


@external
@view
def cheque_digest(viewer: address, content_id: bytes32, seeder: address, cumulative_amount: uint256) -> bytes32:
    """@notice The EIP-712 digest a viewer signs; off-chain code checks itself against it."""
    return self._digest(self._domain_separator(), viewer, content_id, seeder, cumulative_amount)


@internal
@view
def _signed_by_viewer(c: Cheque, separator: bytes32) -> bool:
    if c.viewer == empty(address):
        return False
    if c.v != 27 and c.v != 28:
        return False
    if convert(c.s, uint256) > SECP256K1_HALF_N:
        return False
    digest: bytes32 = self._digest(separator, c.viewer, c.content_id, c.seeder, c.cumulative_amount)
    return ecrecover(digest, c.v, c.r, c.s) == c.viewer


@internal
@view
def _payable_payee(payee: address) -> bool:
    # Earnings credited to the zero address, this wallet or the registry could never be claimed.
    return payee != empty(address) and payee != self and payee != REGISTRY


@internal
def _reject(c: Cheque, reason: uint8):
    log ChequeRejected(
        viewer=c.viewer,
        content_id=c.content_id,
        seeder=c.seeder,
        cumulative_amount=c.cumulative_amount,
        reason=reason,
    )


@internal
def _cash_one(c: Cheque, separator: bytes32) -> uint256:
    """@dev Never reverts: a bad cheque is logged and pays nothing."""
    if not self._payable_payee(c.seeder):
        self._reject(c, REJECT_BAD_PAYEE)
        return 0
    already: uint256 = self.cashed[c.viewer][c.content_id][c.seeder]
    if c.cumulative_amount <= already:
        self._reject(c, REJECT_NOT_NEWER)
        return 0
    if not self._signed_by_viewer(c, separator):
        self._reject(c, REJECT_BAD_SIGNATURE)
        return 0

    creator: address = c.seeder
    share: uint256 = BPS
    if c.content_id != empty(bytes32):
        creator, share = staticcall Registry(REGISTRY).payout_terms(c.content_id)
        if creator == empty(address):
            self._reject(c, REJECT_UNKNOWN_CONTENT)
            return 0

    owed: uint256 = c.cumulative_amount - already
    # The payee's lane first: it was held for exactly this; then the free deposit.
    in_lane: uint256 = self.lanes[c.viewer][c.content_id][c.seeder].amount
    from_lane: uint256 = min(owed, in_lane)
    available: uint256 = self.deposits[c.viewer]
    from_deposit: uint256 = min(owed - from_lane, available)
    paid: uint256 = from_lane + from_deposit
    # paid <= the viewer's deposit and lanes <= the ether supply, so none of this can overflow.
    seeder_part: uint256 = paid * share // BPS
    creator_part: uint256 = paid - seeder_part

    self.cashed[c.viewer][c.content_id][c.seeder] = already + paid
    if from_lane != 0:
        self.lanes[c.viewer][c.content_id][c.seeder].amount = in_lane - from_lane
        self.held[c.viewer] -= from_lane
    self.deposits[c.viewer] = available - from_deposit
    self.earnings[c.seeder] += seeder_part
    self.earnings[creator] += creator_part

    unpaid: uint256 = owed - paid
    if unpaid != 0 or self.shortfall[c.viewer][c.content_id][c.seeder] != 0:
        self.shortfall[c.viewer][c.content_id][c.seeder] = unpaid
    if unpaid != 0:
        log ChequeShortfall(
            viewer=c.viewer,
            content_id=c.content_id,
            seeder=c.seeder,
            cumulative_amount=c.cumulative_amount,
            unpaid=unpaid,
        )
    if paid != 0:
        log ChequeCashed(
            viewer=c.viewer,
            content_id=c.content_id,
            seeder=c.seeder,
            cumulative_amount=c.cumulative_amount,
            paid=paid,
            seeder_part=seeder_part,
            creator_part=creator_part,
        )
    return paid


@external
@payable
@nonreentrant
def deposit():
    assert msg.value > 0, "wallet: deposit of zero"
    balance: uint256 = self.deposits[msg.sender] + msg.value
    self.deposits[msg.sender] = balance
    log Deposited(viewer=msg.sender, amount=msg.value, balance=balance)


@external
@nonreentrant
def cash(cheques: DynArray[Cheque, MAX_CHEQUES_PER_BATCH]) -> uint256:
    """@notice Cash a batch; returns the total paid. Bad cheques are skipped and logged."""
    separator: bytes32 = self._domain_separator()
    total: uint256 = 0
    for c: Cheque in cheques:
        total += self._cash_one(c, separator)
    return total


@external
@nonreentrant
def request_withdrawal(amount: uint256):
    """@notice Starts (or restarts) the clock; replaces any earlier request."""
    assert amount > 0, "wallet: withdrawal of zero"
    assert amount <= self.deposits[msg.sender], "wallet: withdrawal above the deposit"
    unlock_at: uint256 = block.timestamp + WITHDRAWAL_DELAY
    self.pending_withdrawals[msg.sender] = PendingWithdrawal(amount=amount, unlock_at=unlock_at)
    log WithdrawalRequested(viewer=msg.sender, amount=amount, unlock_at=unlock_at)


@external
@nonreentrant
def cancel_withdrawal():
    assert self.pending_withdrawals[msg.sender].unlock_at != 0, "wallet: no withdrawal requested"
    self.pending_withdrawals[msg.sender] = empty(PendingWithdrawal)
    log WithdrawalCancelled(viewer=msg.sender)


@external
@nonreentrant
def execute_withdrawal() -> uint256:
    """@notice Pays the requested amount, or what cheques cashed meanwhile left of it."""
    request: PendingWithdrawal = self.pending_withdrawals[msg.sender]
    assert request.unlock_at != 0, "wallet: no withdrawal requested"
    assert block.timestamp >= request.unlock_at, "wallet: withdrawal is still time-locked"
    assert block.timestamp <= request.unlock_at + WITHDRAWAL_WINDOW, "wallet: the withdrawal request expired; request it again"
    amount: uint256 = min(request.amount, self.deposits[msg.sender])

    self.pending_withdrawals[msg.sender] = empty(PendingWithdrawal)
    self.deposits[msg.sender] -= amount
    log Withdrawn(viewer=msg.sender, amount=amount)

    if amount != 0:
        raw_call(msg.sender, b"", value=amount)
    return amount


@external
@nonreentrant
def open_lanes(content_id: bytes32, payees: DynArray[address, MAX_LANES_PER_CALL], amount: uint256, until: uint256):
    """
    @notice Hold `amount` for each payee's cheques on this content until `until`: a lane
            holding less is topped up from the free deposit, and its time is extended.
            Calling again with the same arguments changes nothing.
    """
    assert until >= block.timestamp + LANE_MIN_DURATION, "wallet: a lane must be held at least LANE_MIN_DURATION"
    available: uint256 = self.deposits[msg.sender]
    added: uint256 = 0
    for payee: address in payees:
        assert self._payable_payee(payee), "wallet: no lane for the zero address or a project contract"
        lane: Lane = self.lanes[msg.sender][content_id][payee]
        assert until >= lane.until, "wallet: a lane cannot be shortened"
        if lane.amount < amount:
            top_up: uint256 = amount - lane.amount
            assert top_up <= available, "wallet: the free deposit cannot cover these lanes"
            available -= top_up
            added += top_up
            lane.amount = amount
        lane.until = until
        self.lanes[msg.sender][content_id][payee] = lane
        log LaneOpened(viewer=msg.sender, content_id=content_id, payee=payee, amount=lane.amount, until=until)
    self.deposits[msg.sender] = available
    self.held[msg.sender] += added


@external
@nonreentrant
def close_lane(content_id: bytes32, payee: address) -> uint256:
    """@notice After its time, a lane's remainder goes back to the free deposit."""
    lane: Lane = self.lanes[msg.sender][content_id][payee]
    assert lane.until != 0, "wallet: no such lane"
    assert block.timestamp >= lane.until, "wallet: the lane is held until its time"
    self.lanes[msg.sender][content_id][payee] = empty(Lane)
    self.held[msg.sender] -= lane.amount
    self.deposits[msg.sender] += lane.amount
    log LaneClosed(viewer=msg.sender, content_id=content_id, payee=payee, amount=lane.amount)
    return lane.amount


@external
@view
def guarantee(viewer: address, content_id: bytes32, payee: address) -> (uint256, uint256, uint256):
    """
    @notice (a cumulative amount, a time, what is cashed): cheques from `viewer` to
            `payee` for this content are sure to be paid up to that amount if cashed
            before that time (the lane is not closed before it).
    """
    lane: Lane = self.lanes[viewer][content_id][payee]
    cashed: uint256 = self.cashed[viewer][content_id][payee]
    return cashed + lane.amount, lane.until, cashed


@external
@view
def guarantees(viewer: address, content_id: bytes32, payees: DynArray[address, MAX_LANES_PER_CALL]) -> DynArray[Lane, MAX_LANES_PER_CALL]:
    """@notice Each payee's lane (amount still held, until), in one call: a viewer about to open lanes."""
    out: DynArray[Lane, MAX_LANES_PER_CALL] = []
    for payee: address in payees:
        out.append(self.lanes[viewer][content_id][payee])
    return out


@external
@nonreentrant
def claim() -> uint256:
    """@notice Sends the caller everything cheques have credited to it."""
    amount: uint256 = self.earnings[msg.sender]
    assert amount != 0, "wallet: nothing to claim"
    self.earnings[msg.sender] = 0
    log Claimed(payee=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount
