"""Boltzmann machine (Ackley, Hinton, Sejnowski 1985); deck 001, "Boltzmann machines".

    E(x) = -1/2 Σ_ij w_ij x_i x_j - Σ_i b_i x_i      x ∈ {0,1}^N, w symmetric, w_ii = 0   (θ_i = -b_i)
    p(x) = exp(-E(x)) / Z
    P(x_i = 1 | x_-i) = σ(Σ_j w_ij x_j + b_i)                                      (Gibbs sampling)

Units 0..V-1 are visible, V..N-1 hidden. The log-likelihood of visible data has the gradient
    ∂ log p(v) / ∂w_ij = <x_i x_j>_data - <x_i x_j>_model        (positive minus negative phase)
The positive phase clamps v to the data and samples the hidden units; the negative phase reads
persistent Gibbs chains that run freely between updates (Tieleman 2008). For N <= 20 the partition
function, the visible distribution and the KL divergence to a target are exact (`rnnkit.energy.exact`).

Shapes: states (B, N); data (B, V).
"""

import torch

from rnnkit.energy import exact
from rnnkit.energy._checks import (
    as_bits,
    callback_or_none,
    drawn_weights,
    finite_float,
    generator_or_none,
    positive_float,
    positive_int,
    positive_size,
    sampler_dtype,
    units_match,
    whole_number,
)
from rnnkit.energy._util import single_thread, uniform
from rnnkit.errors import RnnkitError, fits_int64, said


class BoltzmannMachine:
    """A Boltzmann machine of V visible and H hidden units; W (N, N) symmetric with zero diagonal, b (N,).

    Args:
        num_visible, num_hidden: V and H (N = V + H).
        init_scale: each weight w_ij = w_ji (i ≠ j) starts as N(0, init_scale²), as RBM's W; biases start at 0.
    """

    def __init__(self, num_visible, num_hidden=0, init_scale=0.01, generator=None, device=None, dtype=None):
        self.num_visible = positive_size("number of visible units", num_visible)
        if not whole_number(num_hidden) or num_hidden < 0:  # 0 is a model of visible units only (the default)
            raise RnnkitError(f"number of hidden units must be an integer >= 0, got {said(num_hidden)}")
        self.num_hidden = int(fits_int64("number of hidden units", num_hidden))
        N = self.num_visible + self.num_hidden
        dtype = sampler_dtype(
            "a Boltzmann machine", dtype
        )  # as torch.nn's modules: float32 unless set otherwise
        init_scale = finite_float("init_scale (the standard deviation of the weights)", init_scale)
        # one draw per pair above the diagonal, mirrored: (A + Aᵀ) gave std √2 · init_scale
        generator_or_none(generator)
        W = (torch.randn(N, N, generator=generator, device=device, dtype=dtype) * init_scale).triu(1)
        drawn_weights("init_scale (the standard deviation of the weights)", W, init_scale)
        self.W = W + W.T  # symmetric, zero diagonal
        self.b = torch.zeros(N, device=device, dtype=dtype)
        self.chains = None  # persistent negative-phase states

    @property
    def num_units(self) -> int:
        return self.num_visible + self.num_hidden

    def energy(self, x) -> torch.Tensor:
        """E(x) for 0/1 states (B, N) -> (B,); a 1-D state is one row -> (1,)."""
        x = as_bits(x, "states").to(self.W)
        units_match("states", x, self.num_units)
        return -0.5 * ((x @ self.W) * x).sum(-1) - x @ self.b

    def gibbs_sweep(self, x: torch.Tensor, units=None, generator=None) -> torch.Tensor:
        """Resample each unit in `units` (all by default) in turn from P(x_i = 1 | x_-i); in place.

        x: 0/1 states (B, N), a tensor of the model's dtype and device (a 1-D state is one row)."""
        N = self.num_units
        if not isinstance(x, torch.Tensor) or x.dtype != self.W.dtype or x.device != self.W.device:
            what = f"{x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise RnnkitError(f"states are resampled in place: give a tensor of the model's {self.W.dtype} on "
                              f"{self.W.device}, got {what}; e.g. torch.as_tensor(x, dtype=bm.W.dtype)")  # fmt: skip
        units_match("states", as_bits(x, "states"), N)
        generator_or_none(generator)
        if isinstance(units, torch.Tensor):  # torch.arange(V, N): its entries, 0-d tensors, were no index
            units = units.tolist()
        try:
            units = range(N) if units is None else list(units)
        except TypeError:  # one unit: an index, or not one (a float), refused below
            units = [units]
        for i in units:
            if not whole_number(i) or not 0 <= i < N:
                raise RnnkitError(f"units must be unit indices in 0..{N - 1}, got {said(i)}")
        self._gibbs_sweep(x if x.dim() == 2 else x[None], units, generator)
        return x

    def _gibbs_sweep(self, x: torch.Tensor, units=None, generator=None) -> torch.Tensor:
        """gibbs_sweep unchecked, for the samplers' loops: x (B, N) of the model's dtype and device."""
        for i in units if units is not None else range(self.num_units):
            p = torch.sigmoid(x @ self.W[:, i] + self.b[i])
            u = uniform(p.shape, generator=generator, device=x.device, dtype=x.dtype)
            x[:, i] = (u < p).to(x.dtype)
        return x

    def random_states(self, count: int, generator=None) -> torch.Tensor:
        """`count` uniformly random 0/1 states (count, N)."""
        if not whole_number(count) or count < 0:  # (-1, 2.5: torch's own error on a shape)
            raise RnnkitError(f"count must be an integer >= 0 (the number of states), got {said(count)}")
        count = int(fits_int64("count (the number of states)", count))
        shape, generator = (count, self.num_units), generator_or_none(generator)
        return torch.randint(0, 2, shape, generator=generator, device=self.W.device).to(self.W.dtype)

    def sample(self, num_chains: int, sweeps: int, generator=None) -> torch.Tensor:
        """Independent chains from random states after `sweeps` full sweeps: (num_chains, N)."""
        x = self.random_states(positive_size("number of chains", num_chains), generator)
        with single_thread():
            for _ in range(positive_int("sweeps", sweeps)):
                self._gibbs_sweep(x, generator=generator)
        return x

    def positive_states(self, v, sweeps: int, generator=None) -> torch.Tensor:
        """Visible units clamped to 0/1 data v (B, V), hidden units Gibbs-sampled for `sweeps` sweeps: (B, N)."""
        v = as_bits(v, "visible data").to(self.W)
        units_match("visible data", v, self.num_visible)
        return self._positive_states(v, positive_int("sweeps", sweeps), generator)

    def _positive_states(self, v: torch.Tensor, sweeps: int, generator=None) -> torch.Tensor:
        x = torch.cat([v, self.random_states(len(v), generator)[:, self.num_visible :]], 1)
        hidden = range(self.num_visible, self.num_units)
        for _ in range(sweeps if self.num_hidden else 0):
            self._gibbs_sweep(x, hidden, generator)
        return x

    def fit(
        self,
        data,
        epochs=50,
        lr=0.05,
        batch_size=100,
        num_chains=100,
        sweeps=1,
        positive_sweeps=5,
        generator=None,
        callback=None,
    ) -> "BoltzmannMachine":
        """Stochastic gradient ascent on the log-likelihood; `callback(epoch)` after each epoch."""
        callback_or_none(callback, "callback(epoch)")
        generator_or_none(generator)
        v = as_bits(data).to(self.W)
        units_match("data", v, self.num_visible)
        lr, batch_size = positive_float("learning rate", lr), positive_int("batch size", batch_size)
        # finite as a Python float, beyond float32's: its first update made the weights NaN
        if lr > torch.finfo(self.W.dtype).max:
            raise RnnkitError(f"learning rate {lr:g} is beyond the range of {self.W.dtype} (the model's dtype, at "
                              f"most {torch.finfo(self.W.dtype).max:g}); give a lower one")  # fmt: skip
        positive_int("sweeps (Gibbs sweeps of the free chains per update)", sweeps)
        positive_int("positive_sweeps (Gibbs sweeps of the clamped hidden units)", positive_sweeps)
        if self.chains is None or len(self.chains) != num_chains:
            self.chains = self.random_states(positive_size("number of chains", num_chains), generator)
        with single_thread():
            for epoch in range(positive_int("epochs", epochs)):
                order = torch.randperm(len(v), generator=generator, device=v.device)
                for start in range(0, len(v), batch_size):
                    batch = v[order[start : start + batch_size]]
                    pos = self._positive_states(batch, positive_sweeps, generator)
                    for _ in range(sweeps):
                        self._gibbs_sweep(self.chains, generator=generator)
                    self.update(pos, self.chains, lr)
                if callback:
                    callback(epoch)
        return self

    def update(self, pos: torch.Tensor, neg: torch.Tensor, lr: float) -> None:
        """w += lr (<x xᵀ>_pos - <x xᵀ>_neg) off the diagonal, b += lr (<x>_pos - <x>_neg).

        dW is made symmetric: a float32 pᵀp of unit probabilities (mean-field statistics) is not symmetric to the
        bit (B, N = 100, 10), and W drifted from symmetric; of 0/1 states it is, and ½(dW + dWᵀ) is dW to the bit."""
        dW = pos.T @ pos / len(pos) - neg.T @ neg / len(neg)
        dW = 0.5 * (dW + dW.T)
        self.W += lr * (dW - torch.diag(torch.diagonal(dW)))
        self.b += lr * (pos.mean(0) - neg.mean(0))

    # Exact answers by enumeration (N <= 20), float64.
    def _check_enumerable(self) -> None:
        """One line where N > 20: exact.check_bits's 'use AIS instead' is for RBMs (ais.py), not this model."""
        exact.check_bits(self.num_units, f"the states of {self.num_visible} visible and {self.num_hidden} hidden "
                         "units", "a Boltzmann machine's log Z, log-likelihood and KL are exact only here (AIS "
                         "estimates an RBM's): keep V + H <= 20")  # fmt: skip

    def _log_weight(self, x: torch.Tensor) -> torch.Tensor:
        W, b = self.W.double(), self.b.double()
        return 0.5 * ((x @ W) * x).sum(-1) + x @ b

    def log_partition(self) -> float:
        self._check_enumerable()
        return exact.log_sum_exp_states(self._log_weight, self.num_units, self.W.device).item()

    def visible_log_probs(self) -> torch.Tensor:
        """log p(v) for all 2^V visible states (index bit j = unit j), hidden units summed out."""
        self._check_enumerable()
        logp = exact.log_probs_states(self._log_weight, self.num_units, self.W.device)
        return torch.logsumexp(logp.view(2**self.num_hidden, 2**self.num_visible), 0)

    def log_likelihood(self, data) -> float:
        """Mean exact log p(v) of the data."""
        v = as_bits(data)
        units_match("data", v, self.num_visible)
        return self.visible_log_probs()[exact.state_index(v).to(self.W.device)].mean().item()

    def kl_from(self, target) -> float:
        """KL(target || model) over the 2^V visible states; target (2^V,) a probability vector (tensor,
        array or list) indexed as binary_states."""
        p = self.check_distribution(target)
        return exact.kl_divergence_log(p, self.visible_log_probs())  # q = exp(log q) underflowed to 0: KL inf

    def check_distribution(self, target, name="target") -> torch.Tensor:
        """A probability vector over the 2^V visible states as float64 on the model's device."""
        self._check_enumerable()
        try:
            p = torch.as_tensor(target, dtype=torch.float64, device=self.W.device)
        except (TypeError, ValueError, RuntimeError):
            raise RnnkitError(
                f"{name} must be a vector of probabilities, got {type(target).__name__}"
            ) from None
        n = 2**self.num_visible
        if p.shape != (n,):
            raise RnnkitError(
                f"{name} must hold one probability per visible state, shape ({n},) for {self.num_visible} "
                f"visible units, got shape {tuple(p.shape)}"
            )
        if not torch.isfinite(p).all() or (p < 0).any():
            raise RnnkitError(f"{name} probabilities must be finite and >= 0")
        total = p.sum().item()
        if abs(total - 1) > 1e-4:
            raise RnnkitError(
                f"{name} probabilities must sum to 1, got {total:g}; divide counts by their total"
            )
        return p / total  # within 1e-4 of 1 (rounded numbers): KL(p || q) grew by (1 + KL) (total - 1)
