"""Exact answers for tiny models by enumerating every binary state, in float64.

    log Z = log Σ_x exp(-E(x))          summed in chunks, so 2^20 states never sit in memory at once

These are the ground truth the samplers and the contrastive-divergence gradients are tested against.
"""

import torch

from rnnkit.errors import RnnkitError

MAX_BITS = 20
CHUNK = 1 << 14


def check_bits(n: int, what: str, fix: str = "use AIS instead") -> None:
    if n > MAX_BITS:
        raise RnnkitError(f"exact enumeration of {what} needs at most {MAX_BITS} units, got {n}; {fix}")


def binary_states(n: int, start: int = 0, stop: int | None = None, device=None, dtype=torch.float64):
    """States start..stop-1 of {0,1}^n as rows (count, n); bit j of the index is unit j."""
    index = torch.arange(start, 2**n if stop is None else stop, device=device)
    return ((index[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


def state_index(x: torch.Tensor) -> torch.Tensor:
    """The inverse of binary_states: rows of bits (B, n) -> indices (B,)."""
    weights = 2 ** torch.arange(x.shape[-1], device=x.device)
    return (x.long() * weights).sum(-1)


def log_sum_exp_states(log_weight, n: int, device=None) -> torch.Tensor:
    """log Σ_x exp(log_weight(x)) over x ∈ {0,1}^n, where log_weight maps (count, n) -> (count,)."""
    check_bits(n, "the states")
    parts = [
        torch.logsumexp(log_weight(binary_states(n, a, min(a + CHUNK, 2**n), device)), 0)
        for a in range(0, 2**n, CHUNK)
    ]
    return torch.logsumexp(torch.stack(parts), 0)


def log_probs_states(log_weight, n: int, device=None) -> torch.Tensor:
    """Normalised log-probabilities of all 2^n states, (2^n,) indexed as binary_states; the states in chunks,
    as log_sum_exp_states (all 2^20 at once held ~0.5 GB of states and temporaries for an 8 MB answer)."""
    check_bits(n, "the states")
    logw = torch.cat(
        [log_weight(binary_states(n, a, min(a + CHUNK, 2**n), device)) for a in range(0, 2**n, CHUNK)]
    )
    return logw - torch.logsumexp(logw, 0)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) = Σ p log(p / q) for two distributions over the same states."""
    return kl_divergence_log(p, q.log())


def kl_divergence_log(p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(p || q) from log q: finite where q underflows exp (log q < -745 in float64), as kl_divergence is not."""
    mask = p > 0
    return (p[mask] * (p[mask].log() - log_q[mask])).sum().item()
