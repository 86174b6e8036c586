"""LSTM with a projection (torch.nn.LSTM's proj_size; cell LSTMP): hand-written backward against autograd,
gradcheck of the engine, parity with torch.nn.LSTM(proj_size=P), conversion both ways, errors."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import GradProbe, Recurrent
from rnnkit.cells import LSTMP
from rnnkit.engine import native, run
from rnnkit.errors import RnnkitError

# torch.nn.LSTM's own note that its proj_size path has no oneDNN kernel (the reference side, not rnnkit)
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
NATIVE = pytest.param(
    "native",
    marks=pytest.mark.skipif(
        native.unsupported(LSTMP, torch.zeros(1)) is not None, reason="no native backend here"
    ),
)
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def engine_inputs(T=4, B=3, D=3, H=5, Pr=2, lengths=None):
    torch.manual_seed(0)
    cell = LSTMP(D, H, proj_size=Pr).double()
    xw = cell.project_input(torch.randn(T, B, D, dtype=torch.float64)).detach().requires_grad_()
    state0 = tuple(torch.randn(B, n, dtype=torch.float64, requires_grad=True) for n in (Pr, H))
    P = tuple(p.detach().requires_grad_() for p in cell.rec_params())
    mask = None
    if lengths is not None:
        mask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).double()[..., None]
    return cell, xw, state0, P, mask


def test_step_backward_matches_autograd():
    cell, xw, state0, P, _ = engine_inputs()
    new, us, cache = cell.step(xw[0], state0, P)
    dnew = tuple(torch.randn_like(s) for s in new)
    auto = torch.autograd.grad(sum((s * d).sum() for s, d in zip(new, dnew)), [xw, *state0, *P])
    dxw, dprev, dpres, _ = cell.step_backward(dnew, cache, P)
    (da, dh), (h_prev, u) = dpres, us
    # dW_hh, db_hh, dW_hr as the engine forms them
    hand = [dxw, *dprev, da.t() @ h_prev, da.sum(0), dh.t() @ u]
    torch.testing.assert_close(hand[0], auto[0][0], rtol=1e-12, atol=1e-12)
    for h, a in zip(hand[1:], auto[1:]):
        torch.testing.assert_close(h, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["autograd", "python", NATIVE])
@pytest.mark.parametrize("reverse,lengths", [(False, None), (True, [4, 2, 1])])
def test_gradcheck(backend, reverse, lengths):
    cell, xw, state0, P, mask = engine_inputs(lengths=lengths)

    def f(xw, h0, c0, *P):
        hs, state = run(cell, xw, (h0, c0), P, mask, reverse, backend)
        return (hs, *state)  # through the outputs and the final state (h, c)

    assert gradcheck(f, (xw, *state0, *P), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["python", NATIVE])
def test_gradgradcheck(backend):
    cell, xw, state0, P, mask = engine_inputs(T=3, B=2, H=3, lengths=[3, 1])

    def f(xw, h0, c0, *P):
        hs, state = run(cell, xw, (h0, c0), P, mask, True, backend)
        return (hs, *state)

    assert gradgradcheck(f, (xw, *state0, *P), eps=1e-6, atol=1e-5)


def run_torch(m, x, state, lengths):
    if lengths is None:
        return m(x, state)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, st = m(packed, state)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, st


@pytest.mark.parametrize("backend", ["python", "autograd", None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layers,bidir,lengths", [(1, False, None), (2, True, [7, 3, 5, 1])])
def test_parity_with_torch(layers, bidir, lengths, dtype, backend):
    torch.manual_seed(0)
    B, T, D, H, Pr = 4, 7, 5, 6, 3
    ref = nn.LSTM(D, H, layers, batch_first=True, bidirectional=bidir, proj_size=Pr).to(dtype)
    ours = Recurrent.from_torch(ref, backend=backend)
    n = layers * (2 if bidir else 1)
    x, h0, c0 = (torch.randn(*shape, dtype=dtype) for shape in ((B, T, D), (n, B, Pr), (n, B, H)))
    results = []
    for m in (ref, ours):
        xi, hi, ci = (t.clone().requires_grad_() for t in (x, h0, c0))
        if m is ref:
            out, (h, c) = run_torch(m, xi, (hi, ci), lengths)
        else:
            out, (h, c) = m(xi, (hi, ci), lengths=None if lengths is None else torch.tensor(lengths))
        assert out.shape == (B, T, Pr * n // layers) and h.shape == (n, B, Pr) and c.shape == (n, B, H)
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        loss = (out * g).sum() + (2 * h).sum() + (3 * c).sum()
        params = [p for _, p in (m.named_parameters() if m is ref else ours._torch_names())]
        results.append((out, h, c, *torch.autograd.grad(loss, [xi, hi, ci, *params])))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOL[dtype])


def test_round_trip_keeps_every_weight():
    ref = nn.LSTM(3, 6, 2, bidirectional=True, proj_size=2)
    ours = Recurrent.from_torch(ref)
    assert ours.proj_size == 2 and ours.output_size == 2 and "proj_size=2" in repr(ours)
    back = ours.to_torch()
    assert back.proj_size == 2 and back.batch_first is False
    sd_ref, sd_back = ref.state_dict(), back.state_dict()
    assert sd_ref.keys() == sd_back.keys()
    for k in sd_ref:
        assert torch.equal(sd_ref[k], sd_back[k]), k


def test_layer_options_with_projection():
    """Stacked with skip_input, residual and conditioning on the state: every backend the same numbers."""
    kw = dict(num_layers=2, skip_input=True, residual=True, cond_size=2, cond_mode="both", proj_size=2)
    x, v = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    results = []
    for backend in ("autograd", "python", None):  # None: native where it builds
        torch.manual_seed(0)
        layer = Recurrent("lstm", 4, 5, backend=backend, **kw).double()
        probe = GradProbe()
        out, (h, c) = layer(x, cond=v, lengths=torch.tensor([5, 2, 4]), probe=probe)
        assert out.shape == (3, 5, 2) and h.shape == (2, 3, 2) and c.shape == (2, 3, 5)
        (out.square().sum() + h.sum() + c.sum()).backward()
        assert probe.dh.shape == (5, 3, 2)
        results.append([out, h, c, probe.dh, *(p.grad for p in layer.parameters())])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_unbatched_and_step():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, proj_size=2, batch_first=True)
    ours = Recurrent.from_torch(ref)
    x = torch.randn(6, 3)
    out, (h, c) = ours(x)
    out_ref, (h_ref, c_ref) = ref(x)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close((h, c), (h_ref, c_ref))
    y, state = ours.step(x[None, 0])
    torch.testing.assert_close(y[0], out_ref[0])


def test_errors_are_one_line():
    with pytest.raises(RnnkitError, match="proj_size is an option of the lstm cell"):
        Recurrent("gru", 3, 4, proj_size=2)
    with pytest.raises(RnnkitError, match=r"proj_size must be an integer in \[1, hidden_size\)"):
        Recurrent("lstm", 3, 4, proj_size=4)
    with pytest.raises(RnnkitError, match=r"proj_size must be an integer"):
        Recurrent(LSTMP, 3, 4)
    layer = Recurrent("lstm", 3, 4, proj_size=2)
    x = torch.randn(2, 5, 3)
    with pytest.raises(RnnkitError, match=r"state h must have shape .* = \(1, 2, 2\), got \(1, 2, 4\)"):
        layer(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(RnnkitError, match=r"state c must have shape .*B, H\) = \(1, 2, 4\), got \(1, 2, 2\)"):
        layer(x, (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)))


def test_the_cell_refuses_a_proj_size_of_true_in_one_line():
    """True is an int (isinstance(True, int)): LSTMP(3, 4, proj_size=True) passed the check and failed in torch.empty
    with "empty() takes 1 positional argument but 2 were given" (Recurrent refused it already)."""
    with pytest.raises(
        ValueError, match=r"^proj_size must be an integer in \[1, hidden_size\) = \[1, 4\), got True$"
    ):
        LSTMP(3, 4, proj_size=True)


@pytest.mark.parametrize("hidden_size", [None, "4", [4]])
def test_the_cell_names_a_hidden_size_that_is_no_number(hidden_size):
    """LSTMP compared proj_size with hidden_size before checking it: None or "4" failed with "'<' not supported
    between instances of 'int' and 'NoneType'", where LSTM(3, None) names hidden_size."""
    with pytest.raises(ValueError, match=r"^hidden_size must be an integer >= 1, got"):
        LSTMP(3, hidden_size, proj_size=2)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_proj_size_none_means_none_and_is_kept_as_0(cell):
    """proj_size=None (a config's "no projection") was taken as falsy and kept as None in layer.proj_size, and
    False or 0.0 the same, where every other size refuses a bool or a float; None is now 0, the others refused."""
    layer = Recurrent(cell, 3, 4, proj_size=None)
    assert layer.proj_size == 0 and type(layer.proj_size) is int
    assert Recurrent(cell, 3, 4, proj_size=np.int64(0)).proj_size == 0
    for bad in (False, 0.0):
        with pytest.raises(RnnkitError, match=r"proj_size"):
            Recurrent(cell, 3, 4, proj_size=bad)


def test_proj_size_on_a_cell_class_names_the_class():
    """It said "not of <class 'mymodule.Peephole'>" (the class's repr) for a cell given as a class."""
    from rnnkit.cells import GRU

    class Mine(GRU):
        pass

    with pytest.raises(RnnkitError, match=r"^proj_size is an option of the lstm cell, not of 'Mine'$"):
        Recurrent(Mine, 3, 4, proj_size=2)


def test_the_cell_takes_torch_names_for_its_projection_too():
    """The cell knew torch.nn's names weight_ih, weight_hh, bias_ih, bias_hh but not weight_hr (torch.nn.LSTM's
    weight_hr_l0): torch.func.functional_call(cell, {..., "weight_hr": W}, x) set an attribute the cell never read and
    ran its own W_hr in silence (h = 0.08 for a W of zeros), load_state_dict refused the dict ("Missing key(s): W_hr.
    Unexpected key(s): weight_hr") and cell.weight_hr was an AttributeError."""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, proj_size=2)
    cell = LSTMP(3, 4, proj_size=2)
    sd = {k.removesuffix("_l0"): v for k, v in ref.state_dict().items()}  # weight_ih, ..., weight_hr
    x = torch.randn(5, 3)
    zero = {**sd, "weight_hr": torch.zeros(2, 4)}
    assert torch.func.functional_call(cell, zero, (x,))[0].abs().max() == 0
    cell.load_state_dict(sd)
    assert cell.weight_hr is cell.W_hr and torch.equal(cell.W_hr, ref.weight_hr_l0)
    out, _ = ref(x[:1])
    torch.testing.assert_close(cell(x[0])[0], out[0])
    assert not hasattr(rnnkit.cells.LSTM(3, 4), "weight_hr")  # the cell without a projection has none


@pytest.mark.parametrize("backend", ["python", NATIVE])
def test_a_layer_takes_a_subclass_of_the_projected_cell(backend):
    """A subclass of LSTMP (an orthogonal W_hh drawn in reset_parameters) could not make a layer:
    Recurrent(Mine, 3, 4, proj_size=2) was refused ("proj_size is an option of the lstm cell, not of 'Mine'") and
    without proj_size the cell refused its 0 ("proj_size must be an integer in [1, hidden_size)"). It runs now as
    LSTMP does, with torch.nn.LSTM(proj_size)'s numbers, and converts to it."""

    class Mine(LSTMP):
        def reset_parameters(self):
            super().reset_parameters()
            nn.init.orthogonal_(self.W_hh)

    torch.manual_seed(0)
    layer = Recurrent(Mine, 3, 4, num_layers=2, proj_size=2, backend=backend).double()
    assert all(type(c) is Mine for c in layer.cells) and layer.proj_size == 2
    ref = layer.to_torch()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, (h, c) = layer(x)
    out_ref, (h_ref, c_ref) = ref(x)
    assert out.shape == (2, 5, 2)
    torch.testing.assert_close((out, h, c), (out_ref, h_ref, c_ref), rtol=1e-12, atol=1e-12)
    with pytest.raises(RnnkitError, match=r"^proj_size must be an integer in \[1, hidden_size\)"):
        Recurrent(Mine, 3, 4)


@pytest.mark.parametrize("backend", [None, "native"])
def test_a_subclass_of_the_projected_cell_with_its_own_step_runs_a_sequence_of_8_steps(backend):
    """A subclass of LSTMP with step functions of its own (a cell of one's own, which the native loop traces) failed
    on a sequence of 8 steps or more, with and without gradients: Recurrent(Own, 2, 3, proj_size=1)(x (1, 8, 2))
    raised torch's 'The size of tensor a (4) must match the size of tensor b (12)' from the trace's sample step,
    where 7 steps ran (on the python loop, whose states may be of two widths). Found by a random search of layer
    configurations (helper h416)."""

    class Own(LSTMP):
        step = staticmethod(LSTMP.step)
        step_backward = staticmethod(LSTMP.step_backward)

    torch.manual_seed(0)
    layer = Recurrent(Own, 2, 3, proj_size=1, backend=backend, dtype=torch.float64)
    ref = Recurrent("lstm", 2, 3, proj_size=1, backend="autograd", dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(1, 8, 2, dtype=torch.float64, requires_grad=True)
    got, want = layer(x), ref(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.autograd.grad(got[0].sum(), [x, *layer.parameters()])
    torch.testing.assert_close(
        g, torch.autograd.grad(want[0].sum(), [x, *ref.parameters()]), rtol=1e-12, atol=1e-12
    )
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_an_unbatched_state_of_the_wrong_width_names_proj_size():
    """For one sequence (T, D) a wrong state was said to need "(num_layers*dirs, H) = (1, 2), (1, 4)": h's width
    called H where H is 4 and h has proj_size = 2 units (the batched line names proj_size)."""
    layer = Recurrent("lstm", 3, 4, proj_size=2)
    x = torch.randn(5, 3)
    with pytest.raises(
        RnnkitError,
        match=r"^for one unbatched sequence \(T, D\) the state must be \(num_layers\*dirs, proj_size\) and "
        r"\(num_layers\*dirs, H\) = \(1, 2\) and \(1, 4\), got \(1, 4\), \(1, 4\)$",
    ):
        layer(x, (torch.zeros(1, 4), torch.zeros(1, 4)))


def test_proj_size_on_a_subclass_of_the_lstm_cell_names_lstmp():
    """A subclass of rnnkit's LSTM given proj_size was said not to be an lstm cell ("proj_size is an option of the
    lstm cell, not of 'Mine'"); the projection is LSTMP's, which a subclass can take (see above)."""
    from rnnkit.cells import LSTM

    class Mine(LSTM):
        pass

    with pytest.raises(
        RnnkitError,
        match=r"^proj_size is an option of the lstm cell, not of 'Mine', a subclass of LSTM without a projection: "
        r"subclass rnnkit\.cells\.LSTMP for one$",
    ):
        Recurrent(Mine, 3, 4, proj_size=2)


def test_a_subclass_of_the_projected_cell_that_sets_proj_size_itself_makes_a_layer():
    """A subclass of LSTMP whose __init__ sets proj_size (no such option of its own) could make no layer: without
    proj_size 'proj_size must be an integer in [1, hidden_size) = [1, 4), got 0', with it 'the P2 cell has no option
    'proj_size' (it takes none of its own)'. The layer now reads the cell's own proj_size."""

    class P2(LSTMP):
        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias=bias, proj_size=2)

    torch.manual_seed(0)
    for given in ({}, {"proj_size": 2}):
        layer = Recurrent(P2, 3, 4, num_layers=2, **given).double()
        assert layer.proj_size == 2 and all(type(c) is P2 for c in layer.cells)
        x = torch.randn(2, 5, 3, dtype=torch.float64)
        out, (h, c) = layer(x)
        assert out.shape == (2, 5, 2)
        out_ref, (h_ref, c_ref) = layer.to_torch()(x)
        torch.testing.assert_close((out, h, c), (out_ref, h_ref, c_ref), rtol=1e-12, atol=1e-12)
    with pytest.raises(
        RnnkitError, match=r"^proj_size=3, but P2 sets its own, 2, in its __init__; leave it out$"
    ):
        Recurrent(P2, 3, 4, proj_size=3)
