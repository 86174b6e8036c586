"""Restricted Boltzmann machine (Smolensky 1986; Hinton 2002); deck 001, "Restricted Boltzmann machines".

    Bernoulli visible:  E(v, h) = -c·v - b·h - hᵀ W v           v ∈ {0,1}^V
    Gaussian visible:   E(v, h) = ½‖v - c‖² - b·h - hᵀ W v      v ∈ R^V, unit variance (standardise data)
    hidden units h ∈ {0,1}^H; W (H, V) holds deck 001's ω_ij on the edge (h_i, v_j) (scikit-learn's
    components_), b is the hidden bias and c the visible bias, as in the deck.

    P(h_i = 1 | v) = σ(b_i + Σ_j W_ij v_j)
    P(v_j = 1 | h) = σ(c_j + Σ_i W_ij h_i)        or, Gaussian,  v | h ~ N(c + Wᵀh, I)
    F(v) = -log Σ_h exp(-E(v, h)) = -c·v - Σ_i softplus(b_i + W_i·v)        (Bernoulli)
                                  = ½‖v - c‖² - Σ_i softplus(b_i + W_i·v)   (Gaussian)
    p(v) = exp(-F(v)) / Z

Training (CD-k, PCD-k) is in rbm_train.py; exact answers for tiny models in rbm_exact.py; AIS in ais.py.
Shapes: v (B, V), h (B, H).
"""

import numbers

import numpy as np
import torch
from torch import nn
from torch.nn.functional import softplus

from rnnkit.energy import ais, rbm_exact, rbm_train
from rnnkit.energy._checks import (
    _first_bad,
    as_matrix,
    choice,
    drawn_weights,
    finite_float,
    generator_or_none,
    positive_int,
    positive_size,
    sampler_dtype,
    switch,
    units_match,
    whole_number,
)
from rnnkit.energy._util import single_thread, uniform
from rnnkit.errors import RnnkitError, said

VISIBLE_TYPES = ("bernoulli", "gaussian")
LOG_PARTITION_METHODS = ("auto", "exact", "ais")


def _number(name: str, value) -> float:
    """One number (a 0-d tensor too), or one RnnkitError: ais.log_partition's (estimate, standard error) given
    whole as log_Z failed in Python's "unsupported operand type(s) for -: 'float' and 'tuple'"."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (
        isinstance(value, np.ndarray) and value.size == 1
    ):
        value = value.item()  # (a 0-d tensor or array, as np.array(-3.0))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = (
            "; ais.log_partition returns (estimate, standard error): pass its [0]"
            if isinstance(value, tuple)
            else ""
        )
        raise RnnkitError(f"{name} must be a number, got {type(value).__name__} {value!r:.60}{hint}")
    try:
        return float(value)
    except OverflowError:  # (a Python int past float's range, 10**400: "int too large to convert to float")
        raise RnnkitError(
            f"{name} {value!r:.30} is past float's range; give a number a float holds"
        ) from None


class RBM(nn.Module):
    """An RBM with V visible and H hidden units; parameters are buffers W (H, V), b (H,), c (V,).

    Args:
        num_visible, num_hidden: V and H.
        visible: "bernoulli" or "gaussian" (unit variance).
        init_scale: W starts as N(0, init_scale²), as scikit-learn's (0.01); biases start at 0.
    """

    def __init__(self, num_visible, num_hidden, visible="bernoulli", init_scale=0.01, generator=None,
                 device=None, dtype=None):  # fmt: skip
        super().__init__()
        self.num_visible = positive_size("number of visible units", num_visible)
        self.num_hidden = positive_size("number of hidden units", num_hidden)
        self.visible = choice("visible units", visible, VISIBLE_TYPES)
        dtype = sampler_dtype("an RBM", dtype)  # as torch.nn's modules: float32 unless set otherwise
        init_scale = finite_float("init_scale (the standard deviation of W)", init_scale)
        generator_or_none(generator)
        W = torch.randn(num_hidden, num_visible, generator=generator, device=device, dtype=dtype) * init_scale
        self.register_buffer("W", drawn_weights("init_scale (the standard deviation of W)", W, init_scale))
        self.register_buffer("b", torch.zeros(num_hidden, device=device, dtype=dtype))
        self.register_buffer("c", torch.zeros(num_visible, device=device, dtype=dtype))

    def check(self, v, name="data", binary=False) -> torch.Tensor:
        """Data as a (B, V) tensor of the model's dtype and device; Bernoulli data in [0, 1].

        A 1-D vector is one sample, (1, V); lists, arrays and any numeric dtype are accepted."""
        sampler_dtype("an RBM", self.W.dtype)  # (one made float32, then .to(torch.bfloat16))
        x = as_matrix(v, name).to(self.W)
        units_match(name, x, self.num_visible)
        if not torch.isfinite(x).all():
            raise RnnkitError(f"{name} contain NaN or infinite values")
        if binary and not ((x == 0) | (x == 1)).all():
            raise RnnkitError(f"{name} must be binary (0 or 1) here; found {_first_bad(x, (x == 0) | (x == 1)):g} "
                              "(threshold probabilities first: (x > 0.5).float())")  # fmt: skip
        if self.visible == "bernoulli" and ((x < 0) | (x > 1)).any():
            raise RnnkitError(f"{name} for Bernoulli visible units must lie in [0, 1] (scale them first)")
        return x

    def check_hidden(self, h, name="hidden states") -> torch.Tensor:
        """Hidden states (or probabilities) as a (B, H) tensor of the model's dtype and device, in [0, 1]."""
        sampler_dtype("an RBM", self.W.dtype)
        x = as_matrix(h, name).to(self.W)
        units_match(name, x, self.num_hidden)
        if not torch.isfinite(x).all():
            raise RnnkitError(f"{name} contain NaN or infinite values")
        if ((x < 0) | (x > 1)).any():
            raise RnnkitError(f"{name} must lie in [0, 1] (binary states or probabilities)")
        return x

    # Conditionals and sampling. hidden_probs, visible_mean and visible_from_noise are the unchecked
    # building blocks of the training loops: they take (B, V) / (B, H) tensors of the model's dtype.
    # sample_hidden, sample_visible, gibbs and free_energy check their input (a 1-D state is one sample).
    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v @ self.W.T + self.b)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        pre = h @ self.W + self.c
        return torch.sigmoid(pre) if self.visible == "bernoulli" else pre

    def visible_from_noise(self, h: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A visible sample given uniforms (Bernoulli) or standard normals (Gaussian) of shape (B, V)."""
        mean = self.visible_mean(h)
        return (noise < mean).to(mean.dtype) if self.visible == "bernoulli" else mean + noise

    def _sample_hidden(self, v: torch.Tensor, generator=None) -> torch.Tensor:
        p = self.hidden_probs(v)
        return (uniform(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)

    def _sample_visible(self, h: torch.Tensor, generator=None) -> torch.Tensor:
        shape, kw = (len(h), self.num_visible), dict(generator=generator, device=h.device, dtype=h.dtype)
        noise = uniform(shape, **kw) if self.visible == "bernoulli" else torch.randn(shape, **kw)
        return self.visible_from_noise(h, noise)

    def _gibbs(self, v: torch.Tensor, steps: int, generator=None) -> torch.Tensor:
        for _ in range(steps):
            v = self._sample_visible(self._sample_hidden(v, generator), generator)
        return v

    def sample_hidden(self, v, generator=None) -> torch.Tensor:
        """h ~ P(h | v) for visible states v (B, V) -> (B, H); a 1-D v is one state -> (1, H)."""
        return self._sample_hidden(self.check(v, "visible states"), generator_or_none(generator))

    def sample_visible(self, h, generator=None) -> torch.Tensor:
        """v ~ P(v | h) for hidden states h (B, H) -> (B, V); a 1-D h is one state -> (1, V)."""
        return self._sample_visible(self.check_hidden(h), generator_or_none(generator))

    def gibbs(self, v, steps: int = 1, generator=None) -> torch.Tensor:
        """`steps` rounds of v -> h -> v from visible states (B, V) -> (B, V); a 1-D v -> (1, V)."""
        if not whole_number(steps) or steps < 0:
            raise RnnkitError(f"Gibbs steps must be an integer >= 0, got {said(steps)}")
        return self._gibbs(self.check(v, "visible states"), steps, generator_or_none(generator))

    @torch.no_grad()
    def sample(self, num_samples=None, steps=1000, init=None, generator=None):
        """Gibbs chains from noise (num_samples of them) or from data rows (init).

        Returns (samples (B, V), visible means of the last step (B, V)).
        """
        positive_int("steps", steps)
        generator_or_none(generator)
        if (
            init is not None and num_samples is not None
        ):  # (the count was dropped in silence: init's rows ran)
            raise RnnkitError("give num_samples (chains from noise) or init (chains from its rows), not both: "
                              "sample(init=x) runs one chain a row of x")  # fmt: skip
        if init is None:
            shape = (positive_size("number of samples", num_samples), self.num_visible)
            kw = dict(generator=generator, device=self.W.device, dtype=self.W.dtype)
            init = (
                torch.rand(shape, **kw).round() if self.visible == "bernoulli" else torch.randn(shape, **kw)
            )
        with single_thread():  # small operations, one after another
            v = self._gibbs(self.check(init, "initial states"), steps - 1, generator)
            h = self._sample_hidden(v, generator)
            return self._sample_visible(h, generator), self.visible_mean(h)

    # Scores.
    def free_energy(self, v) -> torch.Tensor:
        """F(v) (B,) for visible states (B, V), checked as `check` does (a 1-D v is one state -> (1,))."""
        return self._free_energy(self.check(v, "visible states"))

    def _free_energy(self, v: torch.Tensor) -> torch.Tensor:
        hidden_term = softplus(v @ self.W.T + self.b).sum(-1)
        if self.visible == "bernoulli":
            return -v @ self.c - hidden_term
        return 0.5 * ((v - self.c) ** 2).sum(-1) - hidden_term

    @torch.no_grad()
    def transform(self, v) -> torch.Tensor:
        """Hidden probabilities P(h = 1 | v) as features (scikit-learn's BernoulliRBM.transform)."""
        return self.hidden_probs(self.check(v))

    @torch.no_grad()
    def reconstruction_error(self, v) -> float:
        """Mean over samples and units of (v - E[v | h = P(h | v)])², a deterministic up-down pass."""
        x = self.check(v)
        return ((x - self.visible_mean(self.hidden_probs(x))) ** 2).mean().item()

    @torch.no_grad()
    def pseudo_likelihood(self, v, per_unit: bool = False, chunk_elements: int = 1 << 24) -> torch.Tensor:
        """Exact pseudo-log-likelihood of binary data, (B,): Σ_j log P(v_j | v_-j), all V terms.

        log P(v_j | v_-j) = log σ(F(v with v_j flipped) - F(v)). Normalisation: per_unit=False gives
        the total over the V units; per_unit=True divides by V (a per-bit log-probability, comparable
        across image sizes). scikit-learn's score_samples instead flips one random unit per sample and
        multiplies by V (scikit-learn issue 23179): an unbiased but noisy estimate of the total.
        """
        if self.visible != "bernoulli":
            raise RnnkitError("pseudo-likelihood is defined here for Bernoulli visible units only")
        per_unit, chunk_elements = (
            switch("per_unit", per_unit),
            positive_int("chunk_elements", chunk_elements),
        )
        x = self.check(v, binary=True)
        rows = max(1, chunk_elements // (self.num_visible * self.num_hidden))
        out = torch.cat([self._pseudo_likelihood(x[a : a + rows]) for a in range(0, len(x), rows)])
        return out / self.num_visible if per_unit else out

    def _pseudo_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.W.T + self.b  # (B, H)
        sign = 1 - 2 * x  # +1 where a flip turns a unit on, -1 where off; (B, V)
        flipped = pre[:, None, :] + sign[..., None] * self.W.T  # (B, V, H) pre-activations after each flip
        dF = -sign * self.c - (softplus(flipped) - softplus(pre)[:, None, :]).sum(-1)  # F(flipped) - F(v)
        return torch.nn.functional.logsigmoid(dF).sum(-1)

    def log_partition(self, method="auto", **ais_options) -> float:
        """log Z by `method`: "exact" (V or H <= 20, enumerated), "ais" (annealed importance sampling,
        with ais_options), or "auto": exact when V or H is small enough to enumerate, else AIS."""
        choice("method", method, LOG_PARTITION_METHODS)
        if method == "exact" and ais_options:  # (dropped in silence)
            raise RnnkitError(f"log_partition('exact') takes no AIS options, got {', '.join(sorted(ais_options))}; "
                              "they are for method='ais' (or 'auto' where the model is too big to enumerate)")  # fmt: skip
        if method == "exact" or (method == "auto" and rbm_exact.can_enumerate(self)):
            return rbm_exact.log_partition(self)
        return ais.log_partition(self, **ais_options)[0]

    @torch.no_grad()
    def log_likelihood(self, v, log_Z=None) -> float:
        """Mean log p(v) = -F(v) - log Z (a density for Gaussian visible units). Bernoulli data must be binary:
        for grey values in (0, 1) -F(v) - log Z is the log-probability of nothing (binarise them first)."""
        x = self.check(v, binary=self.visible == "bernoulli")
        log_Z = self.log_partition() if log_Z is None else _number("log_Z", log_Z)
        return -self._free_energy(x).mean().item() - log_Z

    def fit(self, data, config=None, generator=None, callback=None) -> "RBM":
        """Train by CD-k or PCD-k (rbm_train.py); config: an RBMTrainConfig (by default the settings of
        scikit-learn's RBM example: PCD-1, lr 0.06, batch 10, 10 epochs). Each call starts its persistent chains at
        h = 0 and its momentum at 0, as scikit-learn's fit does: 20 calls of one epoch train worse than one call of
        20 epochs (PCD's chains restart); to look at the model between epochs, give callback(epoch, rbm)."""
        config = rbm_train.RBMTrainConfig() if config is None else config
        if not isinstance(config, rbm_train.RBMTrainConfig):
            raise RnnkitError(
                f"config must be an RBMTrainConfig, got {type(config).__name__}; "
                "for a dict of settings pass RBMTrainConfig(**settings)"
            )
        return rbm_train.fit(self, data, config, generator, callback)

    # Converters to and from scikit-learn's BernoulliRBM.
    @classmethod
    def from_sklearn(cls, estimator) -> "RBM":
        """The RBM of a fitted scikit-learn BernoulliRBM: W = components_ (H, V), b = intercept_hidden_ (H,),
        c = intercept_visible_ (V,), in its dtype (float64: its weights exactly)."""
        names = ("components_", "intercept_hidden_", "intercept_visible_")
        if not all(hasattr(estimator, name) for name in names):
            fix = "fit it first" if hasattr(estimator, "n_components") else "give one, fitted"
            raise RnnkitError(f"from_sklearn takes a fitted scikit-learn BernoulliRBM (with {', '.join(names)}), "
                              f"got {type(estimator).__name__} without them; {fix}")  # fmt: skip
        W, b, c = (torch.as_tensor(getattr(estimator, name)) for name in names)
        if W.dim() != 2 or b.shape != W.shape[:1] or c.shape != W.shape[1:]:
            raise RnnkitError(f"from_sklearn: components_ {tuple(W.shape)} must be (H, V) with intercept_hidden_ "
                              f"(H,) and intercept_visible_ (V,), got {tuple(b.shape)} and {tuple(c.shape)}")  # fmt: skip
        rbm = cls(W.shape[1], W.shape[0], dtype=W.dtype)
        for name, value in (("W", W), ("b", b), ("c", c)):
            getattr(rbm, name).copy_(value)
        return rbm

    def to_sklearn(self, **params):
        import numpy as np
        from sklearn.neural_network import BernoulliRBM

        if self.visible != "bernoulli":
            raise RnnkitError("scikit-learn's BernoulliRBM has Bernoulli visible units only")
        est = BernoulliRBM(n_components=self.num_hidden, **params)
        est.components_ = self.W.cpu().double().numpy().copy()
        est.intercept_hidden_ = self.b.cpu().double().numpy().copy()
        est.intercept_visible_ = self.c.cpu().double().numpy().copy()
        est.h_samples_ = np.zeros((est.batch_size, self.num_hidden))
        est.n_features_in_ = self.num_visible
        est._n_features_out = self.num_hidden
        return est
