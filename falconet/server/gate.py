"""Bounded concurrency for inference: N workers, a bounded wait queue, and an honest 503.

Inference is CPU work, so it runs in a thread pool off the event loop (onnxruntime, OpenVINO,
LiteRT, PIL and numpy release the GIL). At most ``workers`` jobs run at once; up to ``queue_size``
more wait for a slot, so a burst is absorbed instead of failing. Past that, or after waiting
``queue_timeout_s``, the request is refused with 503 + Retry-After: a client learns at once that
the server is saturated instead of hanging until its own timeout.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from falconet.server.errors import UnavailableError

T = TypeVar("T")


class InferenceGate:
    def __init__(self, workers: int = 1, queue_size: int = 64, queue_timeout_s: float = 30.0,
                 retry_after_s: int = 1, on_wait: Callable[[float], None] | None = None,
                 on_reject: Callable[[str], None] | None = None) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.workers = workers
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(workers)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="falconet-infer")
        self._on_wait = on_wait
        self._on_reject = on_reject

    def _reject(self, reason: str, message: str) -> UnavailableError:
        if self._on_reject:
            self._on_reject(reason)
        return UnavailableError(message, retry_after_s=self.retry_after_s)

    async def _acquire(self) -> None:
        if self._slots.locked() and self.waiting >= self.queue_size:
            raise self._reject("queue_full", f"The server is busy: {self.running} inferences running and "
                                             f"{self.waiting} waiting (queue size {self.queue_size}). Retry shortly.")
        self.waiting += 1
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise self._reject("queue_timeout", f"The request waited {self.queue_timeout_s:g} s for an inference "
                                                f"slot without getting one. Retry shortly.") from None
        finally:
            self.waiting -= 1
        if self._on_wait:
            self._on_wait(time.perf_counter() - start)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread once a slot is free (or raise 503)."""
        await self._acquire()
        self.running += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, *args)

        def release(_: Any) -> None:
            # Released when the job really ends, even if the client went away and the request was
            # cancelled: a cancelled request must not let more jobs than workers run at once.
            self.running -= 1
            self._slots.release()

        future.add_done_callback(release)
        return await asyncio.shield(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
