"""What the market's asyncio drivers (stream.py, service.py) share: the cores' timers, kept
by name on the event loop, and chain calls run as supervised work on worker threads.

A chain call (a lane lookup, a grant lookup, opening lanes) blocks, so it runs on a
thread (`asyncio.to_thread`) inside a task the driver keeps and cancels when it closes:
no orphan work. Its result goes back to the core. A failure of an expected kind (the chain
unreachable or refusing, a timeout, a network error) is logged and goes back to the core
as a failure; anything else is a bug (or a write the answer led to that failed, say the
audit log's on a full disk), handed to `on_bug`, which makes the driver's owner see it:
the paid stream raises it to its player, a service to the event loop's exception handler
(where `veil serve` stops on it, as for any callback of the loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from veilstream.chain.errors import ChainError
from veilstream.market.errors import MarketError

log = logging.getLogger("veilstream.market")

# What a chain call may fail with and the market lives through (the chain's own errors
# include ChainUnavailable; OSError covers refused connections and the transports' timeouts).
EXPECTED_CHAIN_FAILURES = (ChainError, MarketError, TimeoutError, OSError)


class Timers:
    """A core's timers by name: starting one replaces the one of that name."""

    def __init__(self, fire: Callable[[Hashable], None]) -> None:
        self._fire = fire
        self._handles: dict[Hashable, asyncio.TimerHandle] = {}

    def start(self, name: Hashable, delay_s: float) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()
        self._handles[name] = asyncio.get_running_loop().call_later(max(0.0, delay_s), self._fired, name)

    def cancel(self, name: Hashable) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _fired(self, name: Hashable) -> None:
        self._handles.pop(name, None)
        self._fire(name)


class Waiters:
    """`wait_until(predicate)` for a driver's users: each predicate is checked when the driver
    says something changed (`check`), never by polling; `fail` ends every wait with an error."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future]] = []

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        if predicate():
            return
        future = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiting.append(entry)
        try:
            await future
        finally:
            self._waiting.remove(entry)

    def __bool__(self) -> bool:  # anyone waiting? (the upload gate asks per block: a cheap no)
        return bool(self._waiting)

    def check(self) -> None:
        for predicate, future in list(self._waiting):
            if not future.done() and predicate():
                future.set_result(None)

    def fail(self, error: BaseException) -> None:
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(error)


class ChainWork:
    """Blocking chain calls as tasks this object keeps (and cancels on `close`)."""

    def __init__(self, on_bug: Callable[[str, BaseException], None]) -> None:
        self._on_bug = on_bug
        self._tasks: set[asyncio.Task] = set()

    def run(self, what: str, call: Callable, *args, done: Callable, failed: Callable[[Exception], None]) -> None:
        """Run `call(*args)` on a worker thread; then `done(result)` on the loop, or
        `failed(error)` for an expected failure."""
        task = asyncio.get_running_loop().create_task(self._run(what, call, args, done, failed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, what: str, call: Callable, args: tuple, done: Callable, failed: Callable) -> None:
        try:
            try:
                result = await asyncio.to_thread(call, *args)
            except EXPECTED_CHAIN_FAILURES as exc:
                log.warning("%s failed: %s", what, exc)
                failed(exc)
                return
            done(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, in the call or in the core fed its result (or a write it made)
            self._on_bug(what, exc)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def close(self) -> list[asyncio.Task]:
        """Cancel the calls under way; returns their tasks (`aclose` waits for them)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        return tasks

    async def aclose(self) -> None:
        """Cancel the calls under way and wait until their tasks have ended (a thread already
        inside a chain call finishes it; its answer goes nowhere)."""
        tasks = self.close()
        if tasks:
            await asyncio.wait(tasks)
