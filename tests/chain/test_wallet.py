"""Wallet (chequebook): deposits, cheques cashed in batches and split on chain, and the
time-locked withdrawal. Hostile paths first."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from veilstream.chain import (
    ChainClient,
    Cheque,
    ChequeDomain,
    ContractRevert,
    RejectReason,
    SignedCheque,
)
from veilstream.chain.cheque import SECP256K1_N, ZERO_CONTENT_ID

from .conftest import SEEDER_SHARE_BPS, VIEWER_DEPOSIT, World, fake_info

BPS = 10_000
MILLI = 10**15


def split(amount: int, share_bps: int = SEEDER_SHARE_BPS) -> tuple[int, int]:
    seeder = amount * share_bps // BPS
    return seeder, amount - seeder


def wallet_earnings(world: World, who: ChainClient | str) -> int:
    address = who if isinstance(who, str) else who.address
    return world.base._view(world.base.wallet.functions.earnings(address))


# -- replayed, stale and re-ordered cheques ----------------------------------------------


def test_a_replayed_cheque_pays_nothing(chain: World):
    cheque = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 5 * MILLI)
    first = chain.seeder.cash([cheque])
    assert first.paid == 5 * MILLI

    replay = chain.stranger.cash([cheque])
    assert replay.paid == 0
    assert [reason for _, reason in replay.rejected] == [RejectReason.NOT_NEWER]
    assert chain.base.deposit_of(chain.viewer.address) == VIEWER_DEPOSIT - 5 * MILLI
    chain.assert_wallet_solvent()


def test_the_same_cheque_twice_in_one_batch_pays_once(chain: World):
    cheque = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 3 * MILLI)
    result = chain.seeder.cash([cheque, cheque, cheque])
    assert result.paid == 3 * MILLI
    assert len(result.rejected) == 2


def test_a_stale_cheque_after_a_newer_one_pays_nothing(chain: World):
    old = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 1 * MILLI)
    new = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 4 * MILLI)
    assert chain.seeder.cash([new]).paid == 4 * MILLI
    stale = chain.seeder.cash([old])
    assert stale.paid == 0
    assert stale.rejected[0][1] == RejectReason.NOT_NEWER
    assert chain.base.cashed(chain.viewer.address, chain.content_id, chain.seeder.address) == 4 * MILLI


@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_reordering_a_batch_never_pays_more_than_the_newest_cheque(chain: World, order: str):
    cheques = [chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, n * MILLI) for n in (1, 2, 3)]
    if order == "newest first":
        cheques.reverse()
    result = chain.seeder.cash(cheques)
    assert result.paid == 3 * MILLI
    assert len(result.rejected) == (0 if order == "oldest first" else 2)
    assert chain.base.cashed(chain.viewer.address, chain.content_id, chain.seeder.address) == 3 * MILLI


# -- forged cheques ----------------------------------------------------------------------


def _resigned(domain: ChequeDomain, signer, cheque: Cheque) -> SignedCheque:
    """Sign `cheque` with `signer` even if it is not the viewer (a forgery)."""
    from eth_account.messages import encode_typed_data

    from veilstream.chain.cheque import EIP712_TYPES

    message = encode_typed_data(
        domain_data=domain.typed_domain(), message_types=EIP712_TYPES, message_data=cheque.typed_message()
    )
    sig = Account.sign_message(message, signer.key)
    return SignedCheque(cheque, sig.r.to_bytes(32, "big") + sig.s.to_bytes(32, "big") + bytes([sig.v]))


def test_forged_cheques_pay_nothing_and_never_block_the_batch(chain: World):
    domain = chain.base.cheque_domain
    viewer = chain.viewer.address
    good = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, 2 * MILLI)
    # A stranger signs a cheque drawn on the viewer's deposit.
    forged = _resigned(domain, chain.stranger.account, Cheque(viewer, chain.content_id, chain.stranger.address, MILLI))
    # The viewer's real signature, with the payee, amount or content changed afterwards.
    real = chain.viewer.sign_cheque(chain.content_id, chain.seeder2.address, MILLI)
    payee_swapped = SignedCheque(Cheque(viewer, chain.content_id, chain.stranger.address, MILLI), real.signature)
    amount_raised = SignedCheque(Cheque(viewer, chain.content_id, chain.seeder2.address, 10 * MILLI), real.signature)
    other_content = SignedCheque(Cheque(viewer, keccak(b"other"), chain.seeder2.address, MILLI), real.signature)
    # A signature claimed for a richer viewer.
    victim_swapped = SignedCheque(
        Cheque(chain.viewer2.address, chain.content_id, chain.seeder2.address, MILLI), real.signature
    )
    garbage = SignedCheque(Cheque(viewer, chain.content_id, chain.stranger.address, MILLI), bytes(64) + b"\x1b")
    good2 = chain.viewer2.sign_cheque(chain.content_id, chain.seeder2.address, MILLI)

    batch = [good, forged, payee_swapped, amount_raised, other_content, victim_swapped, garbage, good2]
    result = chain.stranger.cash(batch)

    assert result.paid == 3 * MILLI
    assert [reason for _, reason in result.rejected] == [RejectReason.BAD_SIGNATURE] * 6
    assert wallet_earnings(chain, chain.stranger) == 0
    seeder_part, _ = split(2 * MILLI)
    assert wallet_earnings(chain, chain.seeder) == seeder_part
    chain.assert_wallet_solvent()


def test_a_malleated_signature_is_refused(chain: World):
    """EIP-2: (r, n - s, v ^ 1) recovers the same key; only the low-s form is accepted."""
    honest = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, MILLI)
    s = int.from_bytes(honest.s, "big")
    twin = SignedCheque(
        honest.cheque, honest.r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - honest.v])
    )
    result = chain.seeder.cash([twin])
    assert result.paid == 0 and result.rejected[0][1] == RejectReason.BAD_SIGNATURE
    bad_v = SignedCheque(honest.cheque, honest.signature[:64] + bytes([honest.v - 27]))
    assert chain.seeder.cash([bad_v]).rejected[0][1] == RejectReason.BAD_SIGNATURE
    assert chain.seeder.cash([honest]).paid == MILLI


# -- cross-chain and cross-contract cheques ------------------------------------------------


def test_the_domain_matches_the_contract_and_the_chain_id_is_read_not_assumed(chain: World):
    expected_id = 131277322940537 if chain.kind == "embedded" else 31337
    assert chain.base.chain_id == expected_id
    assert chain.base.w3.eth.chain_id == chain.base.cheque_domain.chain_id
    wallet = chain.base.wallet.functions
    assert bytes(wallet.domain_separator().call()) == chain.base.cheque_domain.separator
    cheque = Cheque(chain.viewer.address, chain.content_id, chain.seeder.address, 12345)
    on_chain = bytes(wallet.cheque_digest(*cheque.typed_message().values()).call())
    assert on_chain == chain.base.cheque_domain.digest(cheque)


def test_a_cheque_signed_for_another_chain_pays_nothing(chain: World):
    foreign = ChequeDomain(chain.base.chain_id + 1, chain.base.deployment.wallet)
    cheque = foreign.sign(chain.viewer.account, Cheque(chain.viewer.address, chain.content_id, chain.seeder.address, MILLI))
    result = chain.seeder.cash([cheque])
    assert result.paid == 0 and result.rejected[0][1] == RejectReason.BAD_SIGNATURE


def test_a_cheque_signed_for_another_wallet_contract_pays_nothing(chain: World):
    other = ChainClient.deploy(chain.base.w3, chain.stranger.account, chain.settings)
    other_viewer = ChainClient(chain.base.w3, other, chain.viewer.account)
    other_viewer.deposit(VIEWER_DEPOSIT)
    # Signed for the test deployment, presented to the second one, where the viewer
    # also has a deposit.
    cheque = chain.viewer.sign_payment(chain.seeder.address, MILLI)
    result = other_viewer.with_account(chain.seeder.account).cash([cheque])
    assert result.paid == 0 and result.rejected[0][1] == RejectReason.BAD_SIGNATURE
    assert other_viewer.deposit_of() == VIEWER_DEPOSIT


# -- overspending and shortfalls -------------------------------------------------------------


def test_a_cheque_above_the_deposit_pays_what_is_left_and_records_the_shortfall(chain: World):
    deposit = chain.base.deposit_of(chain.viewer2.address)
    cheque = chain.viewer2.sign_cheque(chain.content_id, chain.seeder.address, deposit + 7)
    result = chain.seeder.cash([cheque])
    assert result.paid == deposit
    assert result.shortfalls[0].args["unpaid"] == 7
    assert chain.base.shortfall(chain.viewer2.address, chain.content_id, chain.seeder.address) == 7
    assert chain.base.deposit_of(chain.viewer2.address) == 0

    # The rest stays cashable once the viewer deposits again; the shortfall clears.
    chain.viewer2.deposit(100)
    again = chain.seeder.cash([cheque])
    assert again.paid == 7
    assert chain.base.shortfall(chain.viewer2.address, chain.content_id, chain.seeder.address) == 0
    assert chain.base.deposit_of(chain.viewer2.address) == 93
    chain.assert_wallet_solvent()


def test_cheques_to_several_payees_never_draw_more_than_the_deposit(chain: World):
    deposit = chain.base.deposit_of(chain.viewer2.address)
    to_seeder = chain.viewer2.sign_cheque(chain.content_id, chain.seeder.address, deposit * 3 // 4)
    to_seeder2 = chain.viewer2.sign_cheque(chain.content_id, chain.seeder2.address, deposit * 3 // 4)
    direct = chain.viewer2.sign_payment(chain.stranger.address, deposit)
    result = chain.stranger.cash([to_seeder, to_seeder2, direct])
    assert result.paid == deposit
    assert chain.base.deposit_of(chain.viewer2.address) == 0
    assert len(result.shortfalls) == 2
    chain.assert_wallet_solvent()


def test_a_viewer_without_deposit_pays_nothing(chain: World):
    cheque = chain.stranger.sign_cheque(chain.content_id, chain.seeder.address, MILLI)
    result = chain.seeder.cash([cheque])
    assert result.paid == 0
    assert result.shortfalls[0].args["unpaid"] == MILLI
    assert not result.cashed


# -- the withdraw/cash race -------------------------------------------------------------------


def test_cheques_stay_cashable_while_a_withdrawal_waits(chain: World):
    viewer = chain.viewer
    viewer.request_withdrawal(VIEWER_DEPOSIT)
    pending = viewer.pending_withdrawal()
    assert pending.amount == VIEWER_DEPOSIT
    assert pending.unlock_at >= chain.base.timestamp() + chain.settings.withdrawal_delay_s - 1
    assert viewer.cheque_cover(viewer.address) == 0

    with pytest.raises(ContractRevert, match="time-locked"):
        viewer.execute_withdrawal()

    # Payees see the request and cash before the lock opens.
    cheque = viewer.sign_cheque(chain.content_id, chain.seeder.address, 300 * MILLI)
    assert chain.seeder.cash([cheque]).paid == 300 * MILLI

    chain.advance(chain.settings.withdrawal_delay_s)
    before = viewer.balance()
    receipt = viewer.execute_withdrawal()
    withdrawn = receipt.named("Withdrawn")[0].args["amount"]
    assert withdrawn == VIEWER_DEPOSIT - 300 * MILLI
    gas_cost = receipt.gas_used * viewer.w3.eth.get_transaction_receipt(receipt.tx_hash)["effectiveGasPrice"]
    assert viewer.balance() == before + withdrawn - gas_cost
    assert viewer.deposit_of() == 0
    assert viewer.pending_withdrawal() is None

    # A cheque that arrives after the withdrawal bounces: it is recorded, not paid.
    late = viewer.sign_cheque(chain.content_id, chain.seeder.address, 400 * MILLI)
    result = chain.seeder.cash([late])
    assert result.paid == 0 and result.shortfalls[0].args["unpaid"] == 100 * MILLI
    chain.assert_wallet_solvent()


def test_cashing_after_the_lock_opens_but_before_execution_still_pays(chain: World):
    chain.viewer.request_withdrawal(VIEWER_DEPOSIT // 2)
    chain.advance(chain.settings.withdrawal_delay_s + 5)
    cheque = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, VIEWER_DEPOSIT * 3 // 4)
    assert chain.seeder.cash([cheque]).paid == VIEWER_DEPOSIT * 3 // 4
    receipt = chain.viewer.execute_withdrawal()
    assert receipt.named("Withdrawn")[0].args["amount"] == VIEWER_DEPOSIT // 4
    chain.assert_wallet_solvent()


def test_a_new_request_restarts_the_clock_and_cancel_stops_it(chain: World):
    viewer = chain.viewer
    viewer.request_withdrawal(MILLI)
    chain.advance(chain.settings.withdrawal_delay_s - 100)
    viewer.request_withdrawal(2 * MILLI)  # cannot be used to shorten the wait
    chain.advance(150)
    with pytest.raises(ContractRevert, match="time-locked"):
        viewer.execute_withdrawal()
    viewer.cancel_withdrawal()
    assert viewer.pending_withdrawal() is None
    with pytest.raises(ContractRevert, match="no withdrawal requested"):
        viewer.execute_withdrawal()
    with pytest.raises(ContractRevert, match="no withdrawal requested"):
        viewer.cancel_withdrawal()


@pytest.mark.parametrize("amount", [0, VIEWER_DEPOSIT + 1])
def test_withdrawal_requests_outside_the_deposit_are_refused(chain: World, amount: int):
    with pytest.raises(ContractRevert):
        chain.viewer.request_withdrawal(amount)


def test_a_withdrawal_request_nobody_executed_expires(chain: World):
    """The attack: a viewer requests a withdrawal, streams a month later on credit, then
    executes the old request and the payees' cheques bounce. Now an unlocked request
    must be executed within WITHDRAWAL_WINDOW, or it lapses."""
    viewer = chain.viewer
    viewer.request_withdrawal(VIEWER_DEPOSIT)
    chain.advance(chain.settings.withdrawal_delay_s + chain.settings.withdrawal_window_s + 1)
    with pytest.raises(ContractRevert, match="request expired"):
        viewer.execute_withdrawal()
    assert viewer.deposit_of() == VIEWER_DEPOSIT
    cheque = viewer.sign_cheque(chain.content_id, chain.seeder.address, 5 * MILLI)
    assert chain.seeder.cash([cheque]).paid == 5 * MILLI
    viewer.request_withdrawal(MILLI)  # a fresh request starts the clock again
    chain.advance(chain.settings.withdrawal_delay_s)
    assert viewer.execute_withdrawal().named("Withdrawn")[0].args["amount"] == MILLI


# -- lanes: one deposit is never promised to two payees --------------------------------------


def lane_until(chain: World, factor: int = 2) -> int:
    return chain.base.timestamp() + factor * chain.settings.lane_min_duration_s


def test_a_payee_is_paid_from_its_lane_whatever_the_viewer_signs_to_others(chain: World):
    """The attack: a viewer signs cheques to many payees at once for more than its
    deposit, and its own payees cash first. A payee that served against its lane is
    paid in full all the same: nobody else's cheque can draw on that lane."""
    viewer = chain.viewer2  # deposit: 10 MILLI
    deposit = viewer.deposit_of()
    honest = chain.seeder.address
    viewer.open_lanes(chain.content_id, [honest], 4 * MILLI, lane_until(chain))
    assert viewer.deposit_of() == deposit - 4 * MILLI and viewer.held_of() == 4 * MILLI
    promised = viewer.guarantee(viewer.address, chain.content_id, honest)
    assert (promised.ceiling_wei, promised.cashed_wei) == (4 * MILLI, 0)

    puppets = [Account.create().address for _ in range(10)]
    over = [viewer.sign_cheque(chain.content_id, p, deposit) for p in puppets]  # 10 × the whole deposit
    chain.stranger.cash(over)
    assert viewer.deposit_of() == 0  # the free deposit is gone to the puppets' cheques

    owed = viewer.sign_cheque(chain.content_id, honest, 4 * MILLI)
    assert chain.seeder.cash([owed]).paid == 4 * MILLI
    assert viewer.guarantee(viewer.address, chain.content_id, honest).ceiling_wei == 4 * MILLI
    chain.assert_wallet_solvent(tuple(puppets))


def test_a_lane_pays_first_then_the_free_deposit(chain: World):
    viewer = chain.viewer2
    deposit = viewer.deposit_of()
    viewer.open_lanes(chain.content_id, [chain.seeder.address], 2 * MILLI, lane_until(chain))
    result = chain.seeder.cash([viewer.sign_cheque(chain.content_id, chain.seeder.address, 3 * MILLI)])
    assert result.paid == 3 * MILLI
    assert viewer.lane(viewer.address, chain.content_id, chain.seeder.address).amount == 0
    assert viewer.deposit_of() == deposit - 3 * MILLI
    chain.assert_wallet_solvent()


def test_a_withdrawal_takes_only_the_free_deposit(chain: World):
    viewer = chain.viewer2
    deposit = viewer.deposit_of()
    viewer.open_lanes(chain.content_id, [chain.seeder.address, chain.seeder2.address], 3 * MILLI, lane_until(chain))
    with pytest.raises(ContractRevert, match="above the deposit"):
        viewer.request_withdrawal(deposit)
    viewer.request_withdrawal(deposit - 6 * MILLI)
    chain.advance(chain.settings.withdrawal_delay_s)
    viewer.execute_withdrawal()
    for seeder in (chain.seeder, chain.seeder2):
        cheque = viewer.sign_cheque(chain.content_id, seeder.address, 3 * MILLI)
        assert seeder.cash([cheque]).paid == 3 * MILLI
    chain.assert_wallet_solvent()


def test_a_lane_is_held_until_its_time_then_returns_to_the_deposit(chain: World):
    viewer = chain.viewer2
    deposit = viewer.deposit_of()
    until = lane_until(chain)
    viewer.open_lanes(chain.content_id, [chain.seeder.address], 5 * MILLI, until)
    chain.seeder.cash([viewer.sign_cheque(chain.content_id, chain.seeder.address, MILLI)])
    with pytest.raises(ContractRevert, match="held until its time"):
        viewer.close_lane(chain.content_id, chain.seeder.address)
    with pytest.raises(ContractRevert, match="cannot be shortened"):
        viewer.open_lanes(chain.content_id, [chain.seeder.address], 5 * MILLI, until - 1)
    chain.advance(until - chain.base.timestamp())
    receipt = viewer.close_lane(chain.content_id, chain.seeder.address)
    assert receipt.named("LaneClosed")[0].args["amount"] == 4 * MILLI
    assert viewer.deposit_of() == deposit - MILLI and viewer.held_of() == 0
    with pytest.raises(ContractRevert, match="no such lane"):
        viewer.close_lane(chain.content_id, chain.seeder.address)
    chain.assert_wallet_solvent()


def test_opening_lanes_tops_up_and_is_idempotent(chain: World):
    viewer = chain.viewer2
    deposit = viewer.deposit_of()
    until = lane_until(chain)
    payees = [chain.seeder.address, chain.seeder2.address]
    viewer.open_lanes(chain.content_id, payees, 2 * MILLI, until)
    viewer.open_lanes(chain.content_id, payees, 2 * MILLI, until)
    assert viewer.deposit_of() == deposit - 4 * MILLI
    chain.seeder.cash([viewer.sign_cheque(chain.content_id, chain.seeder.address, MILLI)])
    viewer.open_lanes(chain.content_id, payees, 2 * MILLI, until + 10)  # the cashed part is held again
    assert viewer.lane(viewer.address, chain.content_id, chain.seeder.address).amount == 2 * MILLI
    assert viewer.guarantee(viewer.address, chain.content_id, chain.seeder.address).ceiling_wei == 3 * MILLI
    assert viewer.deposit_of() == deposit - 5 * MILLI
    with pytest.raises(ContractRevert, match="cannot cover"):
        viewer.open_lanes(chain.content_id, payees, deposit, until + 10)
    chain.assert_wallet_solvent()


@pytest.mark.parametrize("payee", ["zero", "wallet", "registry"])
def test_no_lane_and_no_payment_for_an_address_that_cannot_claim(chain: World, payee: str):
    address = {"zero": "0x" + "00" * 20, "wallet": chain.base.deployment.wallet,
               "registry": chain.base.deployment.registry}[payee]
    with pytest.raises(ContractRevert, match="zero address or a project contract"):
        chain.viewer.open_lanes(chain.content_id, [address], MILLI, lane_until(chain))
    result = chain.seeder.cash([chain.viewer.sign_cheque(chain.content_id, address, MILLI)])
    assert result.paid == 0 and result.rejected[0][1] == RejectReason.BAD_PAYEE


def test_a_lane_must_be_held_long_enough_to_cash_against(chain: World):
    with pytest.raises(ContractRevert, match="at least LANE_MIN_DURATION"):
        chain.viewer.open_lanes(chain.content_id, [chain.seeder.address], MILLI,
                                chain.base.timestamp() + chain.settings.lane_min_duration_s // 2)


# -- re-entrancy ------------------------------------------------------------------------------

MODE_WITHDRAW, MODE_CLAIM, MODE_REJECT = 1, 2, 4


@pytest.mark.parametrize("strict", [False, True])
def test_reentering_execute_withdrawal_is_refused(chain: World, attacker, strict: bool):
    fns = attacker.functions
    chain.send(chain.stranger, fns.deposit(), value=MILLI)
    chain.send(chain.stranger, fns.request_withdrawal(MILLI))
    chain.advance(chain.settings.withdrawal_delay_s)
    chain.send(chain.stranger, fns.set_mode(MODE_WITHDRAW, strict))
    if strict:
        # The attacker insists on its nested call: the whole withdrawal reverts instead.
        with pytest.raises(Exception):
            chain.send(chain.stranger, fns.execute_withdrawal())
        assert chain.base.deposit_of(attacker.address) == MILLI
    else:
        chain.send(chain.stranger, fns.execute_withdrawal())
        assert fns.reentry_attempts().call() == 1
        assert fns.reentry_succeeded().call() is False
        assert fns.received().call() == MILLI
        assert chain.base.deposit_of(attacker.address) == 0
    chain.assert_wallet_solvent(extra=(attacker.address,))


def test_reentering_claim_is_refused(chain: World, attacker):
    fns = attacker.functions
    cheque = chain.viewer.sign_payment(attacker.address, 5 * MILLI)
    assert chain.seeder.cash([cheque]).paid == 5 * MILLI
    chain.send(chain.stranger, fns.set_mode(MODE_CLAIM, False))
    chain.send(chain.stranger, fns.claim_wallet())
    assert fns.reentry_attempts().call() == 1
    assert fns.reentry_succeeded().call() is False
    assert fns.received().call() == 5 * MILLI
    assert wallet_earnings(chain, attacker.address) == 0
    chain.assert_wallet_solvent(extra=(attacker.address,))


def test_a_payee_that_rejects_ether_blocks_nobody_else(chain: World, attacker):
    chain.send(chain.stranger, attacker.functions.set_mode(MODE_REJECT, False))
    to_attacker = chain.viewer.sign_cheque(chain.content_id, attacker.address, MILLI)
    to_seeder = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, MILLI)
    assert chain.seeder.cash([to_attacker, to_seeder]).paid == 2 * MILLI
    assert chain.seeder.claim() == split(MILLI)[0]
    with pytest.raises(Exception):
        chain.send(chain.stranger, attacker.functions.claim_wallet())
    chain.assert_wallet_solvent(extra=(attacker.address,))


# -- arithmetic edges -------------------------------------------------------------------------


def test_the_largest_cheque_amount_pays_the_deposit_without_overflow(chain: World):
    huge = chain.viewer2.sign_cheque(chain.content_id, chain.seeder.address, 2**256 - 1)
    result = chain.seeder.cash([huge])
    assert result.paid == chain_deposit(chain)
    assert result.shortfalls[0].args["unpaid"] == 2**256 - 1 - chain_deposit(chain)
    # And nothing more can come out of it.
    assert chain.seeder.cash([huge]).paid == 0
    chain.assert_wallet_solvent()


def chain_deposit(chain: World) -> int:
    from .conftest import VIEWER2_DEPOSIT

    return VIEWER2_DEPOSIT


@pytest.mark.parametrize("share", [0, 1, 5_000, 9_999, 10_000])
def test_the_split_rounds_in_the_creators_favour_and_loses_no_wei(chain: World, share: int):
    info, cid = fake_info(chain.creator.address, f"split {share}".encode())
    chain.creator.register(info, price_per_slice=1, seeder_share_bps=share, slice_count=10)
    amounts = [1, 2, 3, 9_999, 10_001]
    total = 0
    for n, amount in enumerate(amounts):
        total += amount
        cheque = chain.viewer.sign_cheque(cid, chain.seeder.address, total)
        result = chain.seeder.cash([cheque])
        event = result.cashed[0].args
        assert event["seeder_part"] == amount * share // BPS
        assert event["seeder_part"] + event["creator_part"] == amount == result.paid, n
    chain.assert_wallet_solvent()


def test_a_cheque_for_the_zero_content_id_pays_the_beneficiary_in_full(chain: World):
    cheque = chain.viewer.sign_payment(chain.seeder2.address, 9 * MILLI)
    assert cheque.cheque.content_id == ZERO_CONTENT_ID
    result = chain.stranger.cash([cheque])
    assert result.cashed[0].args["seeder_part"] == 9 * MILLI
    assert wallet_earnings(chain, chain.seeder2) == 9 * MILLI
    assert wallet_earnings(chain, chain.creator) == 0


def test_cheques_for_unknown_content_or_an_unusable_payee_are_rejected(chain: World):
    unknown = chain.viewer.sign_cheque(keccak(b"never registered"), chain.seeder.address, MILLI)
    zero_payee = chain.viewer.sign_cheque(chain.content_id, "0x" + "00" * 20, MILLI)
    wallet_payee = chain.viewer.sign_payment(chain.base.deployment.wallet, MILLI)
    good = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, MILLI)
    result = chain.seeder.cash([unknown, zero_payee, wallet_payee, good])
    assert [r for _, r in result.rejected] == [
        RejectReason.UNKNOWN_CONTENT,
        RejectReason.BAD_PAYEE,
        RejectReason.BAD_PAYEE,
    ]
    assert result.paid == MILLI


def test_a_full_batch_of_distinct_cheques_is_paid(chain: World):
    seeders = [Account.create().address for _ in range(40)]
    cheques = [chain.viewer.sign_cheque(chain.content_id, seeder, MILLI) for seeder in seeders]
    result = chain.seeder.cash(cheques)
    assert result.paid == 40 * MILLI and not result.rejected
    chain.assert_wallet_solvent(extra=tuple(seeders))


# -- the happy path, end to end -----------------------------------------------------------------


def test_cashing_splits_by_the_registered_terms_and_payees_claim(chain: World):
    amount = 10 * MILLI
    cheque = chain.viewer.sign_cheque(chain.content_id, chain.seeder.address, amount)
    chain.creator.cash([cheque])  # the creator may cash too
    seeder_part, creator_part = split(amount)
    assert chain.seeder.earnings() == seeder_part
    assert chain.creator.earnings() == creator_part

    before = chain.seeder.balance()
    claimed = chain.seeder.claim()
    assert claimed == seeder_part
    assert chain.seeder.earnings() == 0
    assert chain.seeder.balance() > before  # minus gas
    with pytest.raises(ContractRevert, match="nothing to claim"):
        chain.seeder._send(chain.seeder.wallet.functions.claim())
    chain.assert_wallet_solvent()


def test_deposits_of_zero_and_plain_ether_transfers_are_refused(chain: World):
    with pytest.raises(ContractRevert, match="deposit of zero"):
        chain.viewer.deposit(0)
    with pytest.raises(ContractRevert):
        chain.viewer.transfer(chain.base.deployment.wallet, MILLI)
    with pytest.raises(Exception):
        chain.viewer.cash([])
