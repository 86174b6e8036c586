"""Small helpers shared by the energy models."""

import contextlib
import threading

import torch

from rnnkit._threads import threads_for_the_work

# The main thread's users of single_thread inside it, and the threads_for_the_work(1) the first of them entered.
_single = {"depth": 0, "held": None}


@contextlib.contextmanager
def single_thread():
    """Run a loop of tiny tensor operations on one CPU thread.

    Sequential samplers (asynchronous Hopfield updates, minibatch-10 contrastive divergence, Ising
    sweeps) issue thousands of operations on a few hundred to 10^5 numbers each. Intra-op threads gain
    little there, and on a busy machine, waiting for a descheduled helper thread made such loops
    10-50x slower (measured on a shared 2-core machine).

    Only the main thread changes the count, the first one in saving it and the last one out restoring it:
    torch.set_num_threads is process-wide for threads that start using torch meanwhile and per-thread
    (OpenMP) after, so a sampler in another thread left the main thread at 1 thread for good. Other
    threads run with the count as it is. The first one in takes the count through rnnkit._threads, as a training
    run or a word2vec fit in another thread does: a work started in a thread meanwhile read the main thread's 1 as
    its count of before and, ending last, left every thread started after on 1.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _single["depth"] == 0:
        held = threads_for_the_work(1)
        held.__enter__()
        _single["held"] = held
    _single["depth"] += 1
    try:
        yield
    finally:
        _single["depth"] -= 1
        if _single["depth"] == 0:
            held, _single["held"] = _single["held"], None
            held.__exit__(None, None, None)


def uniform(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """torch.rand for a Bernoulli draw u < p, its 0 (one draw in 2^24 in float32) taken as half its step (2^-25,
    2^-54 in float64): u < p turned any p > 0 (1e-30) on there, a floor of 6e-8 on the rate of every unlikely unit.
    Every other draw, and so the seeded numbers, stay as they were (as Ising's sweep)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return u.clamp_(min=torch.finfo(u.dtype).eps / 4)


def logmeanexp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.logsumexp(x, dim) - torch.log(torch.tensor(float(x.shape[dim]), dtype=x.dtype))
