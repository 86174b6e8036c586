"""A cell of one's own, as a contributor writes one (one file, the equations, step and step_backward): checked
when its class is defined, run by every backend with the right gradients, and a one-line warning where
backend="native" was asked for (the native loop runs rnnkit's cells only)."""

import warnings

import pytest
import torch
from torch import nn

from rnnkit import Recurrent
from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.engine import run
from rnnkit.errors import RnnkitError


def gain_step(xw_t, state, P):
    """h_t = tanh(g · (xw_t + h_{t-1} W_hhᵀ + b_hh)), g one scalar gain."""
    (h_prev,) = state
    W_hh, b_hh, g = P
    a_t = xw_t + linear(h_prev, W_hh, b_hh)
    h_t = torch.tanh(g * a_t)
    return (h_t,), (h_prev,), (h_t, a_t)


def gain_step_backward(dstate, cache, P):
    """da_t = dh_t ⊙ (1 - h_t²) g;  dg = Σ dh_t ⊙ (1 - h_t²) ⊙ a_t;  dh_{t-1} = da_t W_hh."""
    (dh_t,), (h_t, a_t) = dstate, cache
    W_hh, _, g = P
    dz = dh_t * (1 - h_t * h_t)
    da_t = dz * g
    return da_t, (da_t @ W_hh,), (da_t,), ((dz * a_t).sum(),)


class GainRNN(Cell):
    """An Elman unit with one learned scalar gain: an EXTRAS parameter that is not one value per unit."""

    REC_PARAMS = ("W_hh", "b_hh", "g")
    EXTRAS = ("g",)
    step = staticmethod(gain_step)
    step_backward = staticmethod(gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.g = nn.Parameter(torch.tensor(1.3))
        self.reset_parameters()


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_cell_of_ones_own_runs_on_every_backend(backend):
    """Recurrent and engine.run take it (engine.run asked an EXTRAS parameter to be one per unit, the native
    loop's rule for rnnkit's cells); backend="native" says once that the python loop runs it instead."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    grads = {}
    for be in ("autograd", backend):
        torch.manual_seed(0)
        layer = Recurrent(GainRNN, 3, 4, num_layers=2, bidirectional=True, backend=be).double()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            layer(x, lengths=torch.tensor([5, 3]))[0].pow(2).sum().backward()
        said = [str(w.message) for w in seen]
        assert said == (["rnnkit native backend unavailable (GainRNN is not one of rnnkit's cells, which the native "
                         "loop runs); using the python backend"] if be == "native" else [])  # fmt: skip
        grads[be] = [p.grad for p in layer.parameters()]
    for a, b in zip(grads["autograd"], grads[backend]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    cell = GainRNN(3, 4).double()
    xw = cell.project_input(x.transpose(0, 1))
    hs, _ = run(
        cell, xw, cell.init_state(2), cell.rec_params(), backend="python" if backend == "native" else backend
    )
    assert hs.shape == (5, 2, 4)


def test_a_parameter_the_engine_cannot_differentiate_is_refused_when_the_class_is_defined():
    """In REC_PARAMS but neither in GEMMS nor in EXTRAS: python and native gave it no gradient (None), without a
    word, while autograd gave one."""
    with pytest.raises(RnnkitError, match="GainTypo: REC_PARAMS g in neither GEMMS .* nor EXTRAS"):

        class GainTypo(GainRNN):
            EXTRAS = ()


def test_more_than_two_states_is_refused_when_the_class_is_defined():
    """A third state failed deep inside the layer (not enough values to unpack) and the cell's step dropped it."""
    with pytest.raises(RnnkitError, match=r"Tri.num_states = 3: .* one state \(h_t\) or two \(h_t, c_t\)"):

        class Tri(GainRNN):
            num_states = 3


def test_a_cell_step_takes_torch_names_for_its_arguments():
    """cell(input=x, hx=(h, c)), as torch.nn.LSTMCell takes them."""
    from rnnkit.cells import CELLS

    torch.manual_seed(0)
    cell, x = CELLS["lstm"](3, 4), torch.randn(2, 3)
    state = (torch.randn(2, 4), torch.randn(2, 4))
    for a, b in zip(cell(input=x, hx=state), cell(x, state)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RnnkitError, match="as state or as hx"):
        cell(x, state, hx=state)


def test_a_cell_whose_h_is_narrower_than_H_is_refused_by_the_layer():
    """Cell.output_size is the width of h_t (LSTMP's projection); a layer takes it from proj_size or hidden_size,
    so a cell of one's own with another one failed inside a matmul."""

    class Narrow(GainRNN):
        @property
        def output_size(self):
            return 2

    with pytest.raises(RnnkitError, match="Narrow's h_t has 2 units, but a layer feeds back and outputs"):
        Recurrent(Narrow, 3, 5)
