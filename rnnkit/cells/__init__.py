"""One time step per file. `CELLS` maps a name to its class: adding a cell = one file + one entry."""

from rnnkit.cells.check import check_cell
from rnnkit.cells.elman import RNNReLU, RNNTanh
from rnnkit.cells.gru import GRU
from rnnkit.cells.gru_cho import GRUCho
from rnnkit.cells.leaky import Leaky
from rnnkit.cells.lstm import LSTM
from rnnkit.cells.lstmp import LSTMP
from rnnkit.cells.mut1 import MUT1
from rnnkit.cells.mut2 import MUT2
from rnnkit.cells.mut3 import MUT3

CELLS = {
    "rnn_tanh": RNNTanh,
    "rnn_relu": RNNReLU,
    "lstm": LSTM,
    "gru": GRU,
    "gru_cho": GRUCho,
    "mut1": MUT1,
    "mut2": MUT2,
    "mut3": MUT3,
    "leaky": Leaky,
}

# Not a cell of the lectures, so not in CELLS: torch.nn.LSTM's proj_size, `Recurrent("lstm", ..., proj_size=P)`.
__all__ = ["CELLS", "LSTMP", "check_cell"]
