"""Associative memories and energy-based models of deck 001: the file list is the map.

hopfield.py    Hopfield network: Hebbian and Storkey rules, asynchronous and synchronous recall
capacity.py    the capacity experiment: recall against the load P/N, spurious states
boltzmann.py   Boltzmann machine with optional hidden units, persistent Gibbs chains
rbm.py         restricted Boltzmann machine, Bernoulli or Gaussian visible units
rbm_train.py   CD-k and persistent CD-k; rbm_cd.c is the compiled twin of its loop (_rbm_kernel.py)
rbm_exact.py   exact log Z, log-likelihood gradient and CD-k expectation of tiny RBMs
ais.py         annealed importance sampling of log Z for larger RBMs
dbn.py         greedy layer-wise stacking of RBMs into a deep belief network
ising.py       2-D Ising model: checkerboard Metropolis and heat bath, many temperatures at once
exact.py       enumeration of binary states (float64)
digits.py      scikit-learn's 8x8 digits in [0, 1]
patterns_io.py ±1 patterns from a text file, images or digits, for Hopfield recall
plots.py       the figures (PNG); imported on demand, so the models never need matplotlib
"""

from rnnkit.energy.boltzmann import BoltzmannMachine
from rnnkit.energy.capacity import CapacityConfig, capacity_experiment
from rnnkit.energy.dbn import DBN
from rnnkit.energy.hopfield import Hopfield, RecallResult
from rnnkit.energy.ising import Ising
from rnnkit.energy.rbm import RBM
from rnnkit.energy.rbm_train import RBMTrainConfig

__all__ = [
    "DBN",
    "RBM",
    "BoltzmannMachine",
    "CapacityConfig",
    "Hopfield",
    "Ising",
    "RBMTrainConfig",
    "RecallResult",
    "capacity_experiment",
]
