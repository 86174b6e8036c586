"""Annealed importance sampling (Neal 2001) of an RBM's log partition function (Salakhutdinov & Murray 2008).

A path of models p_β from a base model A (W = 0, b = 0, visible bias c_A: independent units whose Z_A is
known) to the target B (β = 1), parameters interpolated linearly:

    W_β = β W,   b_β = β b,   c_β = (1 - β) c_A + β c,       0 = β_0 < β_1 < ... < β_K = 1
    log Z_A = Σ_j softplus(c_A,j) + H log 2            (Bernoulli visible)
            = (V/2) log 2π + H log 2                   (Gaussian visible)

Each chain starts with an exact sample of A and alternates a weight update and a Gibbs step that keeps
p_βk invariant:  log w += F_βk-1(v) - F_βk(v);   v ~ T_βk(v).   Then log Z_B ≈ log Z_A + log mean exp(log w).
Everything runs in float64; chains run in parallel. The estimate is unbiased in Z, so in log Z it tends
to fall short a little when the weights are spread; the returned spread says how much to trust it.
"""

import math

import torch
from torch.nn.functional import softplus
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit.energy._checks import generator_or_none, positive_size
from rnnkit.energy._util import logmeanexp, single_thread, uniform
from rnnkit.errors import RnnkitError


def _free_energy(v, x, c, gaussian: bool):
    """F(v) from the hidden pre-activations x = v Wᵀ + b (B, H)."""
    return (0.5 * ((v - c) ** 2).sum(-1) if gaussian else -v @ c) - softplus(x).sum(-1)


def _gibbs_step(v, x, W, c, gaussian: bool, generator, beta=1.0):
    """v -> h -> v' at (β W, c), from v's pre-activations x = β (v Wᵀ + b) (shared with F(v))."""
    kw = dict(generator=generator, device=v.device, dtype=v.dtype)
    ph = torch.sigmoid(x)
    h = (uniform(ph.shape, **kw) < ph).to(v.dtype)
    mean = beta * (h @ W) + c
    if gaussian:
        return mean + torch.randn(mean.shape, **kw)
    return (uniform(mean.shape, **kw) < torch.sigmoid(mean)).to(v.dtype)


def base_visible_bias(rbm, data=None) -> torch.Tensor:
    """c_A: the data's marginals (logits of smoothed means for Bernoulli units, means for Gaussian)."""
    if data is None:
        return torch.zeros(rbm.num_visible, dtype=torch.float64, device=rbm.W.device)
    x = rbm.check(data).double()  # a 1-D state is one row: len(data) counted its V units as rows
    mean = x.mean(0)
    if rbm.visible == "gaussian":
        return mean
    p = (mean * len(x) + 1) / (len(x) + 2)
    return torch.log(p) - torch.log1p(-p)


@torch.no_grad()
def log_partition(rbm, num_chains=100, num_betas=2000, data=None, generator=None, progress=False):
    """Returns (log Z estimate, its standard error from the spread of the importance weights). `progress`: a bar
    of the temperatures on stderr (`rnnkit rbm train`; 784 x 500 units at 2,000 temperatures take half a minute)."""
    if positive_size("number of AIS chains", num_chains) < 2:  # one weight has no spread: std() gave NaN
        raise RnnkitError(
            "AIS needs at least 2 chains: its standard error is the spread of their weights; got 1"
        )
    positive_size("number of AIS temperatures", num_betas)
    generator_or_none(generator)
    gaussian = rbm.visible == "gaussian"
    W, b, c = rbm.W.double(), rbm.b.double(), rbm.c.double()
    c_A = base_visible_bias(rbm, data)
    V, H, device = rbm.num_visible, rbm.num_hidden, rbm.W.device
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    if gaussian:
        log_Z_A = 0.5 * V * math.log(2 * math.pi) + H * math.log(2)
        v = c_A + torch.randn(num_chains, V, **kw)
    else:
        log_Z_A = softplus(c_A).sum().item() + H * math.log(2)
        v = (uniform((num_chains, V), **kw) < torch.sigmoid(c_A)).double()

    log_w = torch.zeros(num_chains, **{k: kw[k] for k in ("device", "dtype")})
    betas = torch.linspace(0, 1, num_betas + 1).tolist()
    bar = tqdm(total=num_betas, desc="AIS", unit=" temperatures", **bar_options(progress))
    with bar, single_thread():
        # v's pre-activation at β is β (v Wᵀ + b), so one product a = v Wᵀ + b gives both F_βk-1(v) and F_βk(v)
        # and the Gibbs step's p(h | v), and h W_βk = β_k (h W): two products a temperature, and W_β never made
        for beta_prev, beta in zip(betas, betas[1:]):
            a = v @ W.T + b  # (chains, H)
            c_prev, c_b = (1 - beta_prev) * c_A + beta_prev * c, (1 - beta) * c_A + beta * c
            x = beta * a
            log_w += _free_energy(v, beta_prev * a, c_prev, gaussian) - _free_energy(v, x, c_b, gaussian)
            v = _gibbs_step(v, x, W, c_b, gaussian, generator, beta)
            bar.update()
    estimate = log_Z_A + logmeanexp(log_w).item()
    w = torch.exp(log_w - log_w.max())
    std_error = (w.std() / w.mean() / math.sqrt(num_chains)).item()  # relative error of Z ≈ error of log Z
    return estimate, std_error
