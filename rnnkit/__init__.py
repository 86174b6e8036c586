"""rnnkit: recurrent neural networks as the lectures teach them, with hand-written BPTT."""

from rnnkit.cells import CELLS
from rnnkit.engine import GradProbe
from rnnkit.layers import Recurrent

__version__ = "0.1.0"
__all__ = ["CELLS", "GradProbe", "Recurrent"]
