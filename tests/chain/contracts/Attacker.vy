# pragma version ==0.4.3
"""
A hostile contract for the re-entrancy tests. It acts as a viewer, a payee or a buyer;
when ether arrives it calls back into the contract that sent it (once), and records
whether that nested call went through.
"""

interface Wallet:
    def deposit(): payable
    def request_withdrawal(amount: uint256): nonpayable
    def execute_withdrawal() -> uint256: nonpayable
    def claim() -> uint256: nonpayable

interface Sales:
    def buy(content_id: bytes32, first_slice: uint256, slice_count: uint256, one_time_key: Bytes[64]) -> uint256: payable
    def refund(grant_id: uint256) -> uint256: nonpayable
    def claim() -> uint256: nonpayable

MODE_NONE: constant(uint8) = 0
MODE_WITHDRAW: constant(uint8) = 1
MODE_CLAIM: constant(uint8) = 2
MODE_REFUND: constant(uint8) = 3
MODE_REJECT: constant(uint8) = 4

wallet: public(address)
sales: public(address)
mode: public(uint8)
strict: public(bool)
grant_id: public(uint256)
reentry_attempts: public(uint256)
reentry_succeeded: public(bool)
received: public(uint256)


@deploy
def __init__(wallet: address, sales: address):
    self.wallet = wallet
    self.sales = sales


@external
def set_mode(mode: uint8, strict: bool):
    self.mode = mode
    self.strict = strict


@external
@payable
def deposit():
    extcall Wallet(self.wallet).deposit(value=msg.value)


@external
def request_withdrawal(amount: uint256):
    extcall Wallet(self.wallet).request_withdrawal(amount)


@external
def execute_withdrawal():
    extcall Wallet(self.wallet).execute_withdrawal()


@external
def claim_wallet():
    extcall Wallet(self.wallet).claim()


@external
def claim_sales():
    extcall Sales(self.sales).claim()


@external
@payable
def buy(content_id: bytes32, first_slice: uint256, slice_count: uint256, one_time_key: Bytes[64]):
    self.grant_id = extcall Sales(self.sales).buy(content_id, first_slice, slice_count, one_time_key, value=msg.value)


@external
def refund():
    extcall Sales(self.sales).refund(self.grant_id)


@external
@payable
def __default__():
    assert self.mode != MODE_REJECT, "attacker: rejecting ether"
    self.received += msg.value
    if self.reentry_attempts != 0 or self.mode == MODE_NONE:
        return
    self.reentry_attempts += 1
    ok: bool = False
    if self.mode == MODE_WITHDRAW:
        ok = raw_call(self.wallet, method_id("execute_withdrawal()"), revert_on_failure=False)
    elif self.mode == MODE_CLAIM:
        ok = raw_call(msg.sender, method_id("claim()"), revert_on_failure=False)
    elif self.mode == MODE_REFUND:
        ok = raw_call(
            self.sales,
            concat(method_id("refund(uint256)"), convert(self.grant_id, bytes32)),
            revert_on_failure=False,
        )
    if ok:
        self.reentry_succeeded = True
    if self.strict:
        assert ok, "attacker: re-entry refused"
