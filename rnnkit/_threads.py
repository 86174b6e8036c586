"""torch's thread count set for one piece of work (a training run, a command's --threads) and put back after it.

torch's count is per thread, and a thread started later takes the count last set: a run started in a thread while
another held its count read that count as "before", and, ending last, put it back for good (every thread started
after ran on it). So the works under way in this process are counted, and each puts back, as it ends, the count of
before the first of them."""

import contextlib
import os
import threading

_held, _lock = {"works": 0, "before": None}, threading.Lock()
# .works: this thread's works under way (one inside another: a run's log callback)
_nested = threading.local()


@contextlib.contextmanager
def threads_for_the_work(n: int = 0):
    """torch.set_num_threads(n) for the block (0: the count as it is), the count of before the first of the works
    under way put back after it (in the thread that ran the block, and for threads started after); a work inside
    another of the same thread puts back the count it found, the outer one's."""
    import torch

    mine = torch.get_num_threads()
    _nested.works = getattr(_nested, "works", 0) + 1
    with _lock:
        if not _held["works"]:
            _held["before"] = torch.get_num_threads()
        _held["works"] += 1
        before = _held["before"]
    try:
        if n:
            torch.set_num_threads(n)
        yield
    finally:
        # one fewer, not the depth found: works ended out of their order (an ExitStack, generators) set the depth
        # found by the last to start, which stayed, and the thread's later works put back the count they found
        _nested.works = max(getattr(_nested, "works", 0) - 1, 0)  # (0: closed in another thread)
        with _lock:
            _held["works"] -= 1
            torch.set_num_threads(mine if _nested.works else before)


def _after_fork():
    """A child forked while another thread held _lock (a work putting its count back, set_num_threads under it)
    inherited it held by a thread it doesn't have: its first run or --threads command waited forever. The child takes
    a fresh lock, and counts only the works of the thread that forked it (the others' threads are not in it)."""
    global _lock
    _lock = threading.Lock()
    _held["works"] = getattr(_nested, "works", 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
