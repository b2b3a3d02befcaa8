"""Settles taken off the caller's critical path: one daemon thread per engine, a bounded queue.

A guarded call on a network store (Redis) sends two scripts: the reserve,
which must answer before the model is called, and the settle, which only
lowers the reservation to what the call really used. Until it lands, the
lease holds the *larger* amount (the worst case reserved), so a caller need
not wait for it: ``Engine.end`` runs the end flow up to its first store
operation in the caller (pricing, no I/O) and hands the flow, with that
operation, to the ``Settler``, whose thread carries it out with the sync
driver and runs the rest of the flow: a store fault is thrown into it and
spools the settle exactly as an inline one would (``flows._settle_or_spool``),
and the call's record reaches ``on_record`` from that thread once its
outcome ("settled", "late", "replay", "spooled") is known.

One thread, first in first out: settles land in the order calls ended.
Reads that must see them (``Engine.status``, ``reset``, ``replay_spool``,
``Engine.drain``, the process's exit) call ``drain`` first: a barrier that
waits for what was handed over before it, not for later ones. The queue is
bounded: when it is full the caller settles inline (backpressure), so a
store slower than the callers cannot grow memory. A process killed with
settles queued leaves their leases to expire by themselves (``lease_ttl``),
holding the reserved worst case: spent budget is never understated.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from typing import Any

from .drivers import SyncDriver
from .ops import Flow, Op, Settle

__all__ = ["DEFAULT_QUEUE", "Settler"]

logger = logging.getLogger("budgetguard")

#: settles that may wait for the thread before callers settle inline
DEFAULT_QUEUE = 1024
#: seconds the process's exit waits for queued settles (each bounded by the store's timeout)
EXIT_WAIT = 10.0
#: seconds an idle thread waits for work before it stops (started again by the next settle)
IDLE_EXIT = 2.0

_Item = tuple[Flow[Any], Op]


class Settler:
    """A daemon thread that runs handed-over flows to their end, in order; ``drain`` waits for them."""

    def __init__(self, driver: SyncDriver, maxsize: int = DEFAULT_QUEUE) -> None:
        self.driver = driver
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize)
        self._lock = threading.Lock()  # counts handed over; guards starting the thread
        self._done = threading.Condition(threading.Lock())
        self._submitted = 0
        self._finished = 0
        self._thread: threading.Thread | None = None
        self._registered = False  # the exit's drain
        self._pid = os.getpid()
        self.inline = 0  # settles run in the caller because the queue was full (backpressure)

    @property
    def idle(self) -> bool:
        """Nothing handed over is still under way (a read without the lock: a hint, not a barrier)."""
        return self._finished >= self._submitted

    def hand_over(self, flow: Flow[Any]) -> Any:
        """Run ``flow`` up to its first operation here, and the rest in the thread.

        Returns the flow's value if it needed no store operation; else ``None``
        once the thread has it, or the value of running it here when the queue
        is full.
        """
        try:
            op = flow.send(None)
        except StopIteration as stop:
            return stop.value
        if self.take(flow, op):
            return None
        return self.driver.resume(flow, op)

    def take(self, flow: Flow[Any], op: Op) -> bool:
        """Queue ``flow``, which has just yielded ``op``, for the thread; False to run it in the caller.

        Only a settle the store is expected to take goes: not a spool write (the
        call's reserve was spooled, or the store is known to be down), which is
        local and, from many callers, faster in their threads than one after
        another in this one; nor anything when the queue is full (backpressure).
        """
        if type(op) is not Settle or self.driver.state.breaker.is_open():
            return False
        if self._pid != os.getpid():
            self._forked()
        with self._lock:
            try:
                self._queue.put_nowait((flow, op))
            except queue.Full:
                self.inline += 1
                return False
            self._submitted += 1
            if self._thread is None:
                self._start()
            return True

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every settle handed over before this call has run; False if ``timeout`` ran out."""
        if self._pid != os.getpid():
            return True  # a forked child: what the parent queued is the parent's to wait for
        target = self._submitted
        if self._finished >= target:
            return True
        if self._thread is not None and self._thread is threading.current_thread():
            return False  # the thread itself (an on_record callback reading status): it cannot wait
        with self._done:
            return self._done.wait_for(lambda: self._finished >= target, timeout)

    def _start(self) -> None:
        """Start the thread (under ``_lock``); it stops by itself once idle for ``IDLE_EXIT`` seconds."""
        thread = threading.Thread(
            target=_work, args=(weakref.ref(self), self._queue), name="budgetguard-settler", daemon=True
        )
        self._thread = thread
        thread.start()
        if not self._registered:
            self._registered = True
            atexit.register(_drain_at_exit, weakref.ref(self))

    def _forked(self) -> None:
        """In a child process (``os.fork``): the parent's thread is not here, nor are its settles."""
        self._lock = threading.Lock()
        self._done = threading.Condition(threading.Lock())
        self._queue = queue.Queue(self._queue.maxsize)
        self._submitted = self._finished = 0
        self._thread = None
        self._pid = os.getpid()

    def _idle_exit(self) -> bool:
        """The thread found nothing to do for a while: stop it, unless an item just arrived."""
        with self._lock:
            if not self._queue.empty():
                return False
            self._thread = None
            return True

    def _run(self, item: _Item) -> None:
        flow, op = item
        try:
            self.driver.resume(flow, op)
        except Exception:  # no caller is left to hear it; the lease expires with the reserved amount
            logger.warning(
                "budgetguard: a background settle failed; its lease expires by itself", exc_info=True
            )
        finally:
            with self._done:
                self._finished += 1
                self._done.notify_all()


def _work(ref: weakref.ReferenceType[Settler], items: queue.Queue[_Item]) -> None:
    """The thread: holds the settler only while it runs an item, so an unused engine can be freed."""
    while True:
        try:
            item = items.get(timeout=IDLE_EXIT)
        except queue.Empty:
            settler = ref()
            if settler is None or settler._idle_exit():
                return
            continue
        settler = ref()
        if settler is None:
            return
        settler._run(item)
        del settler, item


def _drain_at_exit(ref: weakref.ReferenceType[Settler]) -> None:
    settler = ref()
    if settler is not None and not settler.drain(EXIT_WAIT):
        logger.warning("budgetguard: exiting with background settles unfinished; their leases expire")
