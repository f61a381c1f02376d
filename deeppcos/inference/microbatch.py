"""Adaptive micro-batching: concurrent requests share one model call.

A prediction costs mostly fixed per-call work (building frames, one XGBoost and one Keras call
per model), not per-patient work: one patient takes about as long as fifty. The service's
requests therefore hand their parsed, validated inputs to one scoring thread — from the event
loop (``Arrival.enqueue``, a future to await) or from a request thread (``Arrival.submit``,
which blocks) — and the scorer takes every job waiting in the queue, scores them as one batch
and hands each request its own rows back.

The wait is adaptive and bounded: the scorer waits for more jobs (at most ``max_wait_s``) only
while requests that have arrived are still being parsed — under no load a request is scored at
once, under load the queue fills while the previous batch is scored and no one waits at all.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MicroBatcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Job(Generic[Item, Result]):
    item: Item
    size: int
    future: Future[Result] = field(default_factory=Future)


class MicroBatcher(Generic[Item, Result]):
    """Score items in batches on one thread: ``score_batch(items) -> results`` (same order).

    A request announces itself before it parses its input, so the scorer knows whether
    waiting can pay, then submits::

        with batcher.arrival() as arrival:
            item = parse(request)
            result = arrival.submit(item, size=len(item))

    ``submit`` blocks until the item's result is ready and re-raises the exception its scoring
    raised (a failing batch is re-scored item by item, so one bad item fails only its own
    request). ``max_size`` bounds the patients in one batch; a larger request is scored alone.
    """

    def __init__(
        self,
        score_batch: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_wait_s: float = 0.002,
        max_size: int = 2048,
        name: str = "deeppcos-microbatch",
    ) -> None:
        self._score_batch = score_batch
        self.max_wait_s = max_wait_s
        self.max_size = max_size
        self._queue: queue.SimpleQueue[_Job[Item, Result] | None] = queue.SimpleQueue()
        self._pending = 0  # requests announced by arrival() that have not submitted yet
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- the request side -----------------------------------------------------------------

    def arrival(self) -> Arrival[Item, Result]:
        """A request on its way: a context manager whose ``submit`` scores its item."""
        return Arrival(self)

    def submit(self, item: Item, size: int = 1) -> Result:
        """Score one item without announcing it first (no scorer wait is spent on it)."""
        return self._enqueue(item, size).result()

    def _enqueue(self, item: Item, size: int) -> Future[Result]:
        job: _Job[Item, Result] = _Job(item, size)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _announce(self, delta: int) -> None:
        with self._pending_lock:
            self._pending += delta

    # --- the scoring thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            self._score(batch)

    def _gather(self, first: _Job[Item, Result]) -> list[_Job[Item, Result]]:
        batch, size = [first], first.size
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                # Wait only while a request that has arrived is still on its way.
                remaining = deadline - time.monotonic()
                if self._pending <= 0 or remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            if size + job.size > self.max_size:
                self._queue.put(job)  # too big for this batch: it leads the next one
                break
            batch.append(job)
            size += job.size
        return batch

    def _score(self, batch: list[_Job[Item, Result]]) -> None:
        try:
            results = self._score_batch([job.item for job in batch])
        except Exception as exc:  # every waiting request gets an answer, never a hang
            if len(batch) > 1:
                # One bad item must not fail its neighbours: score each alone to find it.
                for job in batch:
                    self._score([job])
                return
            batch[0].future.set_exception(exc)
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)


class Arrival(Generic[Item, Result]):
    """One request between its arrival and its submission (see :class:`MicroBatcher`)."""

    def __init__(self, batcher: MicroBatcher[Item, Result]) -> None:
        self._batcher = batcher
        self._announced = False

    def __enter__(self) -> Arrival[Item, Result]:
        self._batcher._announce(+1)
        self._announced = True
        return self

    def submit(self, item: Item, size: int = 1) -> Result:
        """Queue the item and wait for its result (on a request thread)."""
        return self.enqueue(item, size).result()

    def enqueue(self, item: Item, size: int = 1) -> Future[Result]:
        """Queue the item; its result arrives in the future (for a request on an event loop,
        which awaits it rather than blocking)."""
        # No longer "on its way" before it is queued: otherwise the scorer, woken by the put,
        # could still count it as arriving and wait for it in vain (the bounded wait, every
        # time, for a lone client).
        self.withdraw()
        return self._batcher._enqueue(item, size)

    def __exit__(self, *exc: object) -> None:
        self.withdraw()  # a request that failed before submitting is no longer on its way

    def withdraw(self) -> None:
        """Not coming after all (or handed to another path): the scorer stops waiting for it."""
        if self._announced:
            self._announced = False
            self._batcher._announce(-1)
