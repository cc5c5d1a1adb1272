"""GET /wallet under many clients: one chain read serves every caller that comes while it
runs and for a second after; a send of the node's drops it; a failure is never reused."""

import asyncio
import threading

import pytest

from veilstream.node.routes.wallet import _SharedRead


def test_callers_at_once_share_one_read_and_a_change_makes_a_new_one():
    calls = []
    gate = threading.Event()

    def work():
        calls.append(1)
        gate.wait(5)
        return len(calls)

    async def main():
        shared = _SharedRead(fresh_s=60)
        waiting = [asyncio.ensure_future(shared.get(work)) for _ in range(10)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*waiting) == [1] * 10
        assert await shared.get(work) == 1  # still fresh
        shared.changed()
        assert await shared.get(work) == 2

    asyncio.run(main())
    assert len(calls) == 2


def test_a_failure_reaches_every_waiting_caller_and_is_not_kept():
    outcomes = iter([RuntimeError("chain down"), "fine"])

    def work():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def main():
        shared = _SharedRead(fresh_s=60)
        with pytest.raises(RuntimeError, match="chain down"):
            await shared.get(work)
        assert await shared.get(work) == "fine"

    asyncio.run(main())


def test_a_caller_that_goes_away_leaves_the_others_their_answer():
    gate = threading.Event()

    def work():
        gate.wait(5)
        return "view"

    async def main():
        shared = _SharedRead(fresh_s=60)
        first, second = asyncio.ensure_future(shared.get(work)), asyncio.ensure_future(shared.get(work))
        await asyncio.sleep(0)
        first.cancel()
        gate.set()
        assert await second == "view"
        assert first.cancelled()

    asyncio.run(main())
