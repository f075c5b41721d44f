"""Spreading a batch of CPU work over the machine's cores, for work done in C code that releases the GIL.

cryptography verifies a signature without holding the GIL (it does not release it while signing), so the
signatures of a batch of CSRs can be checked on every core at once; Python code in `fn` still runs one thread
at a time. The calling thread takes a share itself and waits for the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A share smaller than this costs more in thread hand-offs than it saves.
MIN_SHARE = 16


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


CORES = _cores()


def _new_pool() -> ThreadPoolExecutor:
    # Its own pool, separate from trustlists.blocking's: engine calls already run on that one, and a task must
    # never wait for a worker of the pool it runs on. Threads are made on first use.
    return ThreadPoolExecutor(max_workers=max(1, CORES - 1), thread_name_prefix="otpki-cpu")


_helpers = _new_pool()


def _after_fork_in_child() -> None:
    # A forked child has none of the parent's threads, but the pool would believe it does and never run a task.
    global _helpers
    _helpers = _new_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _apply(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]


def map_over_cores(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """[fn(item) for item in items], the items split into one share per core (only for GIL-free work)."""
    shares = min(CORES, len(items) // MIN_SHARE)
    if shares <= 1:
        return _apply(fn, items)
    size = -(-len(items) // shares)
    chunks = [items[start:start + size] for start in range(0, len(items), size)]
    others = [_helpers.submit(_apply, fn, chunk) for chunk in chunks[1:]]
    results = _apply(fn, chunks[0])
    for future in others:
        results += future.result()
    return results
