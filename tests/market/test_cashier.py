"""The cashier on the embedded chain: batches once the threshold is passed and a batch is
worth its gas, anchors the audit head, settles the rest on close; a deadline has cheques
cashed whatever the gas; every wei signed ends up cashed and split."""

from hashlib import sha256
from dataclasses import replace

import pytest
from eth_account import Account

from veilstream.chain.client import AnchorKind, ChainClient
from veilstream.chain.errors import ChainUnavailable
from veilstream.chain.ledger import ChequeLedger
from veilstream.market.cashier import Cashier
from veilstream.market.settings import MarketSettings

ETHER = 10**18
PRICE = 10**15
GAS_IGNORED = replace(MarketSettings(), min_cash_gain_ratio=0.0)  # for the tests of what is not the gas rule


@pytest.fixture(scope="module")
def chain():
    client = ChainClient.embedded(None)
    yield client
    client.close()


def info_naming(creator: str) -> tuple[bytes, bytes]:
    """The smallest info dict laid out as a Veilstream torrent's, naming `creator`."""
    info = b"d10:veilstreamd7:creator20:" + bytes.fromhex(creator[2:]) + b"13:creator nostr32:" + bytes(32) + \
        b"8:key root32:" + bytes(32) + b"ee"
    return info, sha256(info).digest()


def actors(chain):
    """A registered content's creator, a seeder, and a viewer with a deposit."""
    creator, seeder, viewer = Account.create(), Account.create(), Account.create()
    for who in (creator, seeder, viewer):
        chain.dev.fund(who.address, ETHER)
    info, content = info_naming(creator.address)
    chain.with_account(creator).register(info, price_per_slice=PRICE, seeder_share_bps=2_500, slice_count=100)
    chain.with_account(viewer).deposit(ETHER // 10)
    return creator, seeder, viewer, content


def test_threshold_batches_anchor_and_close(chain, tmp_path):
    creator, seeder, viewer, content = actors(chain)
    settings = replace(GAS_IGNORED, cash_threshold_wei=5 * PRICE, audit_anchor_every_entries=2)
    cashier = Cashier(chain.with_account(seeder), ChequeLedger(tmp_path / "cheques.sqlite"), settings)
    viewer_chain = chain.with_account(viewer)
    for n in range(1, 13):
        cashier.on_cheque(viewer_chain.sign_cheque(content, seeder.address, n * PRICE))
        if n == 5:
            cashier._worker.submit(lambda: None).result()  # let the first batch land
            assert cashier.batches_cashed == 1
            assert chain.cashed(viewer.address, content, seeder.address) == 5 * PRICE
    cashier.on_audit_head(b"\x01" * 32, entries=1)
    cashier.on_audit_head(b"\x02" * 32, entries=2)  # every 2nd entry is anchored
    claimed = cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == 12 * PRICE
    assert claimed == 12 * PRICE * 2_500 // 10_000  # the seeder's share; the rest is the creator's
    assert chain.earnings(creator.address) == 12 * PRICE - claimed
    assert chain.latest_anchor(seeder.address, AnchorKind.AUDIT_LOG)[0] == b"\x02" * 32
    assert cashier.anchors_posted == 1 and not cashier.failures


def test_a_batch_that_failed_is_cashed_again(chain, tmp_path):
    """A cash transaction that fails (the chain was down) is handed over again, not
    forgotten until the next run."""
    _creator, seeder, viewer, content = actors(chain)
    payee = chain.with_account(seeder)
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(GAS_IGNORED, cash_threshold_wei=PRICE))
    real_cash = payee.cash
    outage = [True]

    def flaky(cheques):
        if outage[0]:
            raise ChainUnavailable("the chain is down")
        return real_cash(cheques)
    payee.cash = flaky
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(content, seeder.address, 3 * PRICE))
    cashier._worker.submit(lambda: None).result()
    assert chain.cashed(viewer.address, content, seeder.address) == 0 and cashier.uncashed_wei == 3 * PRICE
    outage[0] = False
    cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == 3 * PRICE
    assert cashier.failures == ["the chain is down"]


# -- the gas rule --------------------------------------------------------------------------------
# The embedded chain's gas price (about 1 gwei) makes a cash cost some 10¹⁴ wei: a micro-payment
# of 10¹² wei is far below its gas, and 0.05 ETH far above.
SMALL = 10**12


def wait(cashier) -> None:
    cashier._worker.submit(lambda: None).result()


def test_a_batch_not_worth_its_gas_is_held_back_reported_and_kept(chain, tmp_path):
    _creator, seeder, viewer, content = actors(chain)
    ledger = ChequeLedger(tmp_path / "cheques.sqlite")
    payee = chain.with_account(seeder)
    cashier = Cashier(payee, ledger, replace(MarketSettings(), cash_threshold_wei=1))
    cheque = chain.with_account(viewer).sign_cheque(content, seeder.address, 3 * SMALL)
    gas_wei = payee.estimate_cash_gas([cheque]) * payee.gas_price()
    assert 3 * SMALL * 2_500 // 10_000 < MarketSettings().min_cash_gain_ratio * gas_wei  # not worth it
    cashier.on_cheque(cheque)  # past the threshold: the rule is asked, and says no
    wait(cashier)
    assert chain.cashed(viewer.address, content, seeder.address) == 0
    held = cashier.held_back
    assert (held.amount_wei, held.cheques) == (3 * SMALL, 1)
    assert gas_wei // 2 < held.gas_wei < 2 * gas_wei
    assert cashier.close() == 0 and cashier.batches_cashed == 0 and cashier.gas_paid_wei == 0
    assert cashier.held_back.amount_wei == 3 * SMALL and not cashier.failures
    assert [p.uncashed for p in ledger.pending(payee)] == [3 * SMALL]  # kept for a later run


def test_a_big_batch_is_cashed_and_claimed_and_its_gas_counted(chain, tmp_path):
    creator, seeder, viewer, content = actors(chain)
    payee = chain.with_account(seeder)
    before = payee.balance()
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(MarketSettings(), cash_threshold_wei=1))
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(content, seeder.address, 5 * 10**16))
    wait(cashier)
    assert chain.cashed(viewer.address, content, seeder.address) == 5 * 10**16 and cashier.held_back is None
    claimed = cashier.close()
    assert claimed == 5 * 10**16 * 2_500 // 10_000 and cashier.unclaimed is None
    assert cashier.gas_paid_wei > 0 and payee.balance() == before + claimed - cashier.gas_paid_wei


DUE = 2 * 10**15  # its seeder's share (25%) is a few times a cash's gas on the embedded chain, not ten


def test_a_lane_about_to_end_is_cashed_at_a_thin_margin_in_this_run_and_the_next(chain, tmp_path):
    """A held-back cheque is cashed a margin before the lane it counts on ends, even if it
    brings in only a few times its gas: told of the lane while serving, or reading it from
    chain when a later run starts with the ledger."""
    _creator, seeder, viewer, content = actors(chain)
    second_viewer = Account.create()
    chain.dev.fund(second_viewer.address, ETHER)
    chain.with_account(second_viewer).deposit(ETHER // 10)
    payee, margin = chain.with_account(seeder), MarketSettings().lane_cash_margin_s
    until = chain.timestamp() + chain.deployment.settings.lane_min_duration_s + 60
    for who in (viewer, second_viewer):
        chain.with_account(who).open_lanes(content, [seeder.address], 10 * DUE, until)
    clock = [float(until - margin - 10)]
    ledger = ChequeLedger(tmp_path / "cheques.sqlite")
    cashier = Cashier(payee, ledger, replace(MarketSettings(), cash_threshold_wei=1), clock=lambda: clock[0])
    for who in (viewer, second_viewer):
        cashier.on_cheque(chain.with_account(who).sign_cheque(content, seeder.address, DUE))
    cashier.note_cover(viewer.address, content, seeder.address, chain.guarantee(viewer.address, content, seeder.address))
    wait(cashier)
    assert cashier.held_back.cheques == 1 and cashier.held_back.due_by == until - margin  # the first one
    clock[0] += 10  # the margin before the lane's end is reached
    cashier.tick()
    cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == DUE  # worth a few times its gas, not ten
    assert chain.cashed(second_viewer.address, content, seeder.address) == 0  # nobody said when its lane ends
    assert cashier.held_back.cheques == 1 and cashier.held_back.due_by is None
    assert cashier.unclaimed.amount_wei == DUE * 2_500 // 10_000  # a claim has no deadline: held back

    later = Cashier(payee, ledger, MarketSettings(), clock=lambda: clock[0])  # the next run reads the lane
    later.tick()
    claimed = later.close()  # two cheques' shares together are worth claiming now
    assert chain.cashed(second_viewer.address, content, seeder.address) == DUE
    assert claimed == 2 * (DUE * 2_500 // 10_000) and later.gas_paid_wei > 0


def test_a_cheque_worth_less_than_its_gas_is_not_cashed_even_when_due(chain, tmp_path):
    """A lane about to end makes a cheque due, but one worth less than the gas of cashing it
    is cheaper lost: it stays in the ledger, said as held back with its deadline."""
    _creator, seeder, viewer, content = actors(chain)
    payee, margin = chain.with_account(seeder), MarketSettings().lane_cash_margin_s
    until = chain.timestamp() + chain.deployment.settings.lane_min_duration_s + 60
    chain.with_account(viewer).open_lanes(content, [seeder.address], 10 * SMALL, until)
    clock = [float(until - margin)]
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(MarketSettings(), cash_threshold_wei=1),
                      clock=lambda: clock[0])
    cashier.on_cheque(chain.with_account(viewer).sign_cheque(content, seeder.address, 2 * SMALL))
    cashier.note_cover(viewer.address, content, seeder.address, chain.guarantee(viewer.address, content, seeder.address))
    cashier.tick()
    cashier.close()
    assert chain.cashed(viewer.address, content, seeder.address) == 0 and cashier.gas_paid_wei == 0
    assert cashier.held_back.cheques == 1 and cashier.held_back.amount_wei == 2 * SMALL


def test_what_an_earlier_run_cashed_does_not_count_as_brought_in(chain, tmp_path):
    """A viewer paid before and that was cashed; its next cheque brings in only the new part,
    however large its cumulative amount: the lane's lookup tells the cashier what is cashed."""
    _creator, seeder, viewer, content = actors(chain)
    payee, viewer_chain = chain.with_account(seeder), chain.with_account(viewer)
    payee.cash([viewer_chain.sign_cheque(content, seeder.address, 5 * 10**16)])  # an earlier run's
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(MarketSettings(), cash_threshold_wei=1))
    cashier.note_cover(viewer.address, content, seeder.address, chain.guarantee(viewer.address, content, seeder.address))
    cashier.on_cheque(viewer_chain.sign_cheque(content, seeder.address, 5 * 10**16 + SMALL))
    wait(cashier)
    assert cashier.uncashed_wei == SMALL and cashier.held_back.amount_wei == SMALL
    assert cashier.batches_cashed == 0  # no gas spent to cash 10¹² wei
    cashier.shutdown()


def test_a_bug_in_chain_work_stops_the_supervising_node_at_once_and_a_chain_outage_does_not(chain, tmp_path):
    """The cashier's thread is watched by `supervise()` in the node's task group: a bug (not a
    ChainError) in a cash transaction ends the group with that bug as soon as it happens; the
    chain being away is only logged, and the cheques stay to be cashed later."""
    import asyncio

    creator, seeder, viewer, content = actors(chain)
    payee = chain.with_account(seeder)
    cashier = Cashier(payee, ChequeLedger(tmp_path / "cheques.sqlite"), replace(GAS_IGNORED, cash_threshold_wei=PRICE))
    viewer_chain = chain.with_account(viewer)
    failures = iter([ChainUnavailable("the chain at http://x does not answer"), ZeroDivisionError("a bug")])

    def failing_cash(cheques):
        raise next(failures)

    payee.cash = failing_cash

    async def node() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(cashier.supervise())
            cashier.on_cheque(viewer_chain.sign_cheque(content, seeder.address, PRICE))  # outage: logged, kept
            await asyncio.to_thread(cashier._worker.submit(lambda: None).result)
            assert cashier.idle  # reaps what the worker finished
            assert cashier.chain_down_since is not None and cashier.uncashed_wei == PRICE
            cashier.on_cheque(viewer_chain.sign_cheque(content, seeder.address, 2 * PRICE))  # the bug
            await asyncio.Event().wait()  # only the group's failure ends this

    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(asyncio.wait_for(node(), 30))
    assert [type(e) for e in caught.value.exceptions] == [ZeroDivisionError]
    cashier.shutdown()
