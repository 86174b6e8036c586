"""Exact quantities of tiny RBMs by enumeration, in float64: the ground truth for CD, PCD and AIS.

log Z = log Σ_v exp(-F(v))                                      enumerate v (Bernoulli, V <= 20)
      = log Σ_h exp(b·h + Σ_j softplus(c_j + (Wᵀh)_j))          enumerate h (Bernoulli, H <= 20)
      = log Σ_h exp(b·h + ½‖c + Wᵀh‖² - ½‖c‖²) + (V/2) log 2π    enumerate h (Gaussian, H <= 20)

∂ log-likelihood / ∂W = E_data[P(h=1|v) vᵀ] - E_model[P(h=1|v) vᵀ]       (b and c alike)
CD-k replaces the model by q_k = q_0 Tᵏ: the data distribution after k Gibbs steps, where
T(v'|v) = Σ_h P(h|v) P(v'|h). As k grows, q_k -> p_model and CD-k -> the exact gradient.
"""

import math

import torch
from torch.nn.functional import logsigmoid, softplus

from rnnkit.energy import exact
from rnnkit.energy._checks import whole_number
from rnnkit.errors import RnnkitError, said


def _params(rbm):
    return rbm.W.double(), rbm.b.double(), rbm.c.double()


def can_enumerate(rbm) -> bool:
    return min(rbm.num_visible if rbm.visible == "bernoulli" else math.inf, rbm.num_hidden) <= exact.MAX_BITS


def log_partition(rbm) -> float:
    W, b, c = _params(rbm)
    V, H, device = rbm.num_visible, rbm.num_hidden, rbm.W.device
    if rbm.visible == "bernoulli" and V <= min(H, exact.MAX_BITS) or H > exact.MAX_BITS:
        if rbm.visible != "bernoulli":
            raise RnnkitError(
                "exact log Z of a Gaussian RBM enumerates hidden states: needs H <= 20; use AIS"
            )
        return exact.log_sum_exp_states(lambda v: v @ c + softplus(v @ W.T + b).sum(-1), V, device).item()
    if rbm.visible == "bernoulli":
        return exact.log_sum_exp_states(lambda h: h @ b + softplus(h @ W + c).sum(-1), H, device).item()
    gauss = 0.5 * V * math.log(2 * math.pi) - 0.5 * (c @ c).item()
    return (
        exact.log_sum_exp_states(lambda h: h @ b + 0.5 * ((h @ W + c) ** 2).sum(-1), H, device).item() + gauss
    )


def _bernoulli_visible(rbm, what: str, limit: int = exact.MAX_BITS) -> None:
    if rbm.visible != "bernoulli" or rbm.num_visible > limit:
        raise RnnkitError(f"{what} enumerates visible states: needs Bernoulli visible units and V <= {limit}")


def visible_probs(rbm) -> torch.Tensor:
    """p(v) of all 2^V visible states (index bit j = unit j), (2^V,)."""
    _bernoulli_visible(rbm, "the visible distribution")
    W, b, c = _params(rbm)
    return exact.log_probs_states(
        lambda v: v @ c + softplus(v @ W.T + b).sum(-1), rbm.num_visible, rbm.W.device
    ).exp()


def statistics(rbm, weights: torch.Tensor, v: torch.Tensor):
    """Weighted sufficient statistics (E[P(h|v) vᵀ] (H, V), E[P(h|v)] (H,), E[v] (V,)); weights sum to 1."""
    W, b, _ = _params(rbm)
    ph = torch.sigmoid(v @ W.T + b)
    return (weights[:, None] * ph).T @ v, weights @ ph, weights @ v


def data_distribution(rbm, data: torch.Tensor) -> torch.Tensor:
    """The empirical distribution q_0 of binary data over the 2^V visible states."""
    _bernoulli_visible(rbm, "the data distribution")
    data = rbm.check(data, binary=True)  # x.long() below read 0.9 as 0: grey data were all-zero states
    index = exact.state_index(data).to(rbm.W.device)
    return torch.bincount(index, minlength=2**rbm.num_visible).double() / len(data)


def exact_gradient(rbm, data):
    """(dW, db, dc) of the mean exact log-likelihood of binary data, float64."""
    _bernoulli_visible(rbm, "the exact gradient")
    states = exact.binary_states(rbm.num_visible, device=rbm.W.device)
    pos = statistics(rbm, data_distribution(rbm, data), states)
    neg = statistics(rbm, visible_probs(rbm), states)
    return tuple(p - n for p, n in zip(pos, neg))


def transition_matrix(rbm) -> torch.Tensor:
    """T[v, v'] = Σ_h P(h|v) P(v'|h) over the 2^V visible states, (2^V, 2^V); needs V + H <= 24."""
    ph, pv = _conditionals(rbm)
    return ph @ pv


def _conditionals(rbm):
    """P(h|v) (2^V, 2^H) and P(v'|h) (2^H, 2^V): T = P(h|v) P(v'|h)."""
    _bernoulli_visible(rbm, "the Gibbs transition matrix", 12)
    if rbm.num_visible + rbm.num_hidden > 24:
        raise RnnkitError("the Gibbs transition matrix needs V + H <= 24")
    W, b, c = _params(rbm)
    vs = exact.binary_states(rbm.num_visible, device=rbm.W.device)
    hs = exact.binary_states(rbm.num_hidden, device=rbm.W.device)
    pre_h, pre_v = vs @ W.T + b, hs @ W + c  # (2^V, H), (2^H, V)
    log_ph = logsigmoid(pre_h) @ hs.T + logsigmoid(-pre_h) @ (1 - hs).T  # log P(h|v)  (2^V, 2^H)
    log_pv = logsigmoid(pre_v) @ vs.T + logsigmoid(-pre_v) @ (1 - vs).T  # log P(v'|h) (2^H, 2^V)
    return log_ph.exp(), log_pv.exp()


def _gibbs_steps(q: torch.Tensor, T: torch.Tensor, k: int) -> torch.Tensor:
    """q Tᵏ by repeated squaring, each power put back on the simplex: T's rows sum to 1 only within rounding
    (1 + 3e-17), and matrix_power's Tᵏ grew as (1 + 3e-17)ᵏ (5% off at k = 10^15; k >= 2^63 it can't take)."""
    k = int(k)
    while k:
        if k & 1:
            q = q @ T
            q = q / q.sum()
        k >>= 1
        if k:
            T = T @ T
            T = T / T.sum(1, keepdim=True)
    return q


def cd_gradient_expected(rbm, data, k: int):
    """The expectation of the CD-k gradient (dW, db, dc) from binary data, float64."""
    if not whole_number(k) or k < 1:
        raise RnnkitError(f"k (Gibbs steps) must be an integer >= 1, got {said(k)}")
    states = exact.binary_states(rbm.num_visible, device=rbm.W.device)
    q = data_distribution(rbm, data)
    pos = statistics(rbm, q, states)
    neg = statistics(rbm, _visible_after(rbm, q, int(k)), states)
    return tuple(p - n for p, n in zip(pos, neg))


def _visible_after(rbm, q: torch.Tensor, k: int) -> torch.Tensor:
    """q Tᵏ the cheaper way: k steps q <- (q P(h|v)) P(v'|h) at 2^(V+H+2) flops each, or T (2^(2V+H+1) flops to
    build) squared log2(k) times (2^(3V+1) each). Squaring alone took rbm cd-check --visible-units 12
    --hidden-units 12 113 s for k = 1 ... 128 (a (4096, 4096) product per squaring); it is for very large k."""
    ph, pv = _conditionals(rbm)
    V, H = rbm.num_visible, rbm.num_hidden
    if k * 2 ** (V + H + 1) > 2 ** (2 * V + H) + k.bit_length() * 2 ** (3 * V):
        return _gibbs_steps(q, ph @ pv, k)
    for _ in range(k):
        q = (q @ ph) @ pv
        q = q / q.sum()  # on the simplex, as _gibbs_steps
    return q
