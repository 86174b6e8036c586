"""Deep belief network by greedy layer-wise training (Hinton, Osindero, Teh 2006).

Deck 001 shows deep Boltzmann machines; a stack of RBMs trained one layer at a time is the practical
first step towards them. Layer l is an RBM whose visible units are the hidden probabilities of layer
l-1 on the data:

    x_0 = data (B, V)      x_l = P(h_l = 1 | x_l-1) = σ(b_l + x_l-1 W_lᵀ)      (B, H_l)

The first RBM may have Gaussian visible units; the others are Bernoulli (they see probabilities).
`transform` gives the top layer's probabilities, or all layers side by side, as features.
"""

import torch

from rnnkit.energy._checks import callback_or_none, choice, positive_size
from rnnkit.energy.rbm import RBM
from rnnkit.energy.rbm_train import RBMTrainConfig
from rnnkit.errors import RnnkitError, said


class DBN:
    def __init__(self, sizes, visible="bernoulli", generator=None, device=None, dtype=None):
        """sizes: [V, H_1, H_2, ...], at least one hidden layer; dtype: torch's default unless given."""
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise RnnkitError(f"DBN sizes must be a list [V, H_1, ...] of layer sizes, got {said(sizes)}")
        if len(sizes) < 2:
            raise RnnkitError(f"a DBN needs the visible size and at least one hidden size, got {list(sizes)}")
        for n in sizes:
            positive_size("layer size", n)
        self.rbms = [
            RBM(
                n_in,
                n_out,
                visible if i == 0 else "bernoulli",
                generator=generator,
                device=device,
                dtype=dtype,
            )
            for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))
        ]

    def fit(self, data, configs=None, generator=None, callback=None) -> "DBN":
        """Train layer by layer; configs: one RBMTrainConfig, or one per layer. callback(layer, epoch, rbm)."""
        callback_or_none(callback, "callback(layer, epoch, rbm)")
        configs = RBMTrainConfig() if configs is None else configs  # [] is a wrong count, not the default
        configs = configs if isinstance(configs, (list, tuple)) else [configs] * len(self.rbms)
        if len(configs) != len(self.rbms):
            raise RnnkitError(f"got {len(configs)} training configs for {len(self.rbms)} layers")
        x = data
        for layer, (rbm, cfg) in enumerate(zip(self.rbms, configs)):
            hook = (lambda epoch, r, layer=layer: callback(layer, epoch, r)) if callback else None
            rbm.fit(x, cfg, generator, hook)
            x = rbm.transform(x)
        return self

    @torch.no_grad()
    def transform(self, data, layers="top") -> torch.Tensor:
        """Features: the top layer's hidden probabilities, or (layers="all") every layer's, concatenated."""
        choice("layers", layers, ("top", "all"))
        features, x = [], data
        for rbm in self.rbms:
            x = rbm.transform(x)
            features.append(x)
        return features[-1] if layers == "top" else torch.cat(features, 1)
