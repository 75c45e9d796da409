"""nats-py beside trio: an asyncio loop on a thread of its own, and one way to hand it work.

nats-py is an asyncio library and the gateway is a trio program. Rather than run a second event loop
on trio's thread, the NATS client lives on its own thread with its own asyncio loop; a trio task hands
it one coroutine at a time (`await bridge.run(fn, *args)`) and sleeps on a trio.Event that the asyncio
side sets, through the trio token, when the coroutine is done. The handoff is bounded: each trio task
has at most one coroutine in flight on the loop, and a cancelled trio task cancels its coroutine.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading

import trio


class BridgeClosed(RuntimeError):
    """The asyncio loop was closed under a call (the process is stopping)."""


class AsyncioThread:
    """An asyncio event loop running on a daemon thread until `close()`."""

    def __init__(self, name: str = "nats-asyncio"):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            try:
                loop.run_forever()
            finally:
                _cancel_all(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()

    def close(self) -> None:
        """Stop the loop (its pending tasks cancelled) and wait for the thread."""
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self._thread = None

    async def run(self, fn, *args):
        """Run `fn(*args)` (an async function of asyncio) on the loop; its result, or its exception."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        if self.loop is None or self.loop.is_closed() or self._thread is None:
            raise BridgeClosed("the asyncio loop is not running")
        future = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)

        def wake(_future) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()  # the coroutine stops at its next await; nobody waits for it any more
            raise
        if future.cancelled():
            raise BridgeClosed("the asyncio loop stopped before the call finished")
        return future.result()

    def run_blocking(self, fn, *args, timeout: float | None = None):
        """From a plain thread (not the loop's): run `fn(*args)` on the loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(timeout)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


@contextlib.asynccontextmanager
async def open_asyncio_thread(name: str = "nats-asyncio"):
    """A started AsyncioThread for the body of the `async with`; closed after it, whatever happens."""
    bridge = AsyncioThread(name)
    await trio.to_thread.run_sync(bridge.start)
    try:
        yield bridge
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(bridge.close)
