"""How many CPU threads torch should use for a job: a short measurement rather than torch's default.

torch's default (one thread per core) is a poor choice in two common cases: small networks, whose
matrix products are too small to split (a 2-D toy MLP ran 25x slower with the default than with one
thread), and shared machines, where a second busy process makes every extra thread wait (an MNIST
U-Net ran 12x slower beside one other 2-thread job). :func:`choose_threads` times a few repetitions
of one unit of the job's work with each candidate thread count, alternating, and keeps the fastest;
a tie (within 10%) goes to fewer threads, which leaves the machine to its other users.

Floating-point sums may be split differently with another thread count, so a result is bit-for-bit
reproducible only with the same count: pass ``--threads N`` to pin it (a resumed training run reuses
the count stored in its checkpoint).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

__all__ = ["choose_threads", "thread_candidates", "set_threads"]


def thread_candidates(limit: Optional[int] = None) -> Tuple[int, ...]:
    """The thread counts worth trying on this machine: 1 and the number of cores (at most ``limit``, default 4)."""
    cores = os.cpu_count() or 1
    top = min(cores, limit or 4)
    return (1,) if top <= 1 else (1, top)


def set_threads(n: int) -> int:
    """Set torch's intra-op threads to ``n``; returns ``n``."""
    torch.set_num_threads(int(n))
    return int(n)


def choose_threads(work: Callable[[], None], candidates: Optional[Sequence[int]] = None, repeats: int = 3,
                   budget_s: float = 20.0) -> Tuple[int, Dict[int, float]]:
    """The fastest thread count for ``work`` (one unit of the job, e.g. one training step), and the timings.

    Each candidate runs ``work`` once to warm up, then ``repeats`` times, the candidates alternating so that a
    change of the machine's load affects them alike; the median seconds per unit decide. Measuring stops early
    once ``budget_s`` seconds have passed. Leaves torch set to the chosen count.

    Returns:
        ``(threads, {threads: median seconds})``.
    """
    candidates = tuple(candidates or thread_candidates())
    before = torch.get_num_threads()
    times: Dict[int, list] = {n: [] for n in candidates}
    start = time.perf_counter()
    try:
        for n in candidates:  # warm-up: allocator, kernels, caches
            torch.set_num_threads(n)
            work()
        for _ in range(repeats):
            for n in candidates:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                work()
                times[n].append(time.perf_counter() - t0)
            if time.perf_counter() - start > budget_s:
                break
    except BaseException:
        torch.set_num_threads(before)
        raise
    median = {n: sorted(v)[len(v) // 2] for n, v in times.items() if v}
    best = min(median, key=median.get)
    for n in sorted(median):  # the fewest threads within 10% of the best
        if median[n] <= 1.1 * median[best]:
            best = n
            break
    torch.set_num_threads(best)
    return best, median
