"""A random mix of deposits, lanes, cheques (fresh, replayed, forged, oversized), cashes,
withdrawals and claims, checked step by step against a plain-Python model of the rules:
every wei is where the model says, and the Wallet always holds exactly what it owes."""

from __future__ import annotations

import random

import pytest

from veilstream.chain import Cheque, SignedCheque

from .conftest import SEEDER_SHARE_BPS, World

STEPS = 30
UNIT = 10**15


class Model:
    def __init__(self, world: World):
        self.world = world
        self.deposits = {c.address: world.base.deposit_of(c.address) for c in world.clients()}
        self.earnings = {c.address: 0 for c in world.clients()}
        self.cashed: dict[tuple, int] = {}
        self.signed: dict[tuple, int] = {}
        self.lanes: dict[tuple, int] = {}
        self.creator = world.creator.address

    def cash(self, cheques: list[tuple[SignedCheque, bool]]) -> int:
        total = 0
        for signed, genuine in cheques:
            c = signed.cheque
            key = c.key
            already = self.cashed.get(key, 0)
            if c.cumulative_amount <= already or not genuine:
                continue
            share = 10_000 if not any(c.content_id) else SEEDER_SHARE_BPS
            creator = c.seeder if not any(c.content_id) else self.creator
            owed = c.cumulative_amount - already
            from_lane = min(owed, self.lanes.get(key, 0))
            from_deposit = min(owed - from_lane, self.deposits[c.viewer])
            paid = from_lane + from_deposit
            self.lanes[key] = self.lanes.get(key, 0) - from_lane
            self.deposits[c.viewer] -= from_deposit
            self.cashed[key] = already + paid
            seeder_part = paid * share // 10_000
            self.earnings[c.seeder] += seeder_part
            self.earnings[creator] += paid - seeder_part
            total += paid
        return total

    def check(self) -> None:
        base = self.world.base
        for address, amount in self.deposits.items():
            assert base.deposit_of(address) == amount, address
        for address, amount in self.earnings.items():
            assert base._view(base.wallet.functions.earnings(address)) == amount, address
        for key, amount in self.cashed.items():
            assert base.cashed(*key) == amount
        for key, amount in self.lanes.items():
            lane = base.lane(*key)
            assert (lane.amount if lane else 0) == amount, key
            ceiling = base.guarantee(*key).ceiling_wei
            assert ceiling == self.cashed.get(key, 0) + amount
        self.world.assert_wallet_solvent()


def self_lane(model: Model, key: tuple) -> int:
    return model.lanes.get(key, 0)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_keep_every_wei_accounted_for(chain: World, seed: int):
    rng = random.Random(seed)
    model = Model(chain)
    viewers = [chain.viewer, chain.viewer2, chain.stranger]
    payees = [chain.seeder.address, chain.seeder2.address, chain.creator.address]
    contents = [chain.content_id, bytes(32)]
    issued: list[tuple[SignedCheque, bool]] = []

    for _step in range(STEPS):
        op = rng.choice(["deposit", "lane", "sign", "sign", "cash", "cash", "withdraw", "claim"])
        viewer = rng.choice(viewers)
        if op == "deposit":
            amount = rng.randint(1, 50) * UNIT
            viewer.deposit(amount)
            model.deposits[viewer.address] += amount
        elif op == "lane":
            content, payee = rng.choice(contents), rng.choice(payees)
            key = (viewer.address, content, payee)
            target = rng.randint(1, 40) * UNIT
            top_up = max(0, target - self_lane(model, key))
            if top_up <= model.deposits[viewer.address]:
                viewer.open_lanes(content, [payee], target, chain.base.timestamp() + 10 * chain.settings.lane_min_duration_s)
                model.lanes[key] = max(target, self_lane(model, key))
                model.deposits[viewer.address] -= top_up
        elif op == "sign":
            key = (viewer.address, rng.choice(contents), rng.choice(payees))
            amount = model.signed.get(key, 0) + rng.choice([1, UNIT, 30 * UNIT, 10**20])
            model.signed[key] = amount
            signed = viewer.sign_cheque(key[1], key[2], amount)
            issued.append((signed, True))
            if rng.random() < 0.3:  # a forgery riding along: amount raised, signature kept
                forged = SignedCheque(Cheque(*key, amount + 1), signed.signature)
                issued.append((forged, False))
        elif op == "cash" and issued:
            batch = rng.sample(issued, k=min(len(issued), rng.randint(1, 6)))  # replays and re-orders
            expected = model.cash(batch)
            result = chain.stranger.cash([signed for signed, _ in batch])
            assert result.paid == expected
        elif op == "withdraw":
            deposit = model.deposits[viewer.address]
            if deposit:
                viewer.request_withdrawal(rng.randint(1, deposit))
                requested = viewer.pending_withdrawal().amount
                chain.advance(chain.settings.withdrawal_delay_s)
                extra = [c for c in issued if c[0].cheque.viewer == viewer.address][-3:]
                if extra:  # payees race the withdrawal
                    expected = model.cash(extra)
                    assert chain.seeder.cash([s for s, _ in extra]).paid == expected
                receipt = viewer.execute_withdrawal()
                withdrawn = min(requested, model.deposits[viewer.address])
                assert receipt.named("Withdrawn")[0].args["amount"] == withdrawn
                model.deposits[viewer.address] -= withdrawn
        elif op == "claim":
            payee = rng.choice([chain.seeder, chain.seeder2, chain.creator])
            if model.earnings[payee.address]:
                assert payee._amount(payee._send(payee.wallet.functions.claim()), "Claimed") == model.earnings[payee.address]
                model.earnings[payee.address] = 0
        model.check()
