"""Small helpers shared by the energy models."""

import contextlib

import torch


@contextlib.contextmanager
def single_thread():
    """Run a loop of tiny tensor operations on one CPU thread.

    Sequential samplers (asynchronous Hopfield updates, minibatch-10 contrastive divergence, Ising
    sweeps) issue thousands of operations on a few hundred to 10^5 numbers each. Intra-op threads gain
    little there, and on a busy machine, waiting for a descheduled helper thread made such loops
    10-50x slower (measured on a shared 2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def logmeanexp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.logsumexp(x, dim) - torch.log(torch.tensor(float(x.shape[dim]), dtype=x.dtype))
