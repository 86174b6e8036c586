"""A cell of one's own under torch.compile (rnnkit/engine/compiled.py): where its step functions trace into the native
loop's kernels (rnnkit/engine/traced.py) the compiled graph calls the `rnnkit::recurrence` operator with its traced
id, as for rnnkit's cells, and gives the eager native loop's numbers; one that doesn't trace is still compiled (dynamo
unrolls the python loop) with its numbers, and with the reason where backend="native" was asked for."""

import warnings

import pytest
import torch

from rnnkit import Recurrent
from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.engine import compiled, native
from rnnkit.errors import RnnkitError

pytestmark = [
    pytest.mark.skipif(native.load() is None, reason="the native engine could not be built here"),
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf"),  # (dynamo's own)
]
OP = "rnnkit.recurrence.default"


def own_cell(name):
    """rnnkit's cell `name` written as one's own: a subclass defining step and step_backward (the built-in ones, so
    the math is the same), which the engine knows only by tracing them (as bench/engine.py's own_cell)."""
    base = native.CELLS[name]
    body = {"step": staticmethod(base.step), "step_backward": staticmethod(base.step_backward)}
    return type(f"Own{base.__name__}", (base,), {**body, "__module__": __name__})


OWN = {name: own_cell(name) for name in ("lstm", "gru_cho", "leaky")}


def _recording():
    """aot_eager (the compiled graph's own forward and backward) that keeps the graphs dynamo hands it."""
    graphs = []
    aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        graphs.append(gm)
        return aot_eager(gm, example_inputs)

    return backend, graphs


def _ops(graphs):
    return [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]


def _layer_and_loss(Cls, dtype, bidirectional=True, backend=None):
    torch.manual_seed(0)
    layer = Recurrent(Cls, 3, 5, bidirectional=bidirectional, backend=backend).to(dtype)
    x = torch.randn(3, 6, 3, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([6, 3, 1])

    def loss(x):
        out, state = layer(x, lengths=lengths)
        state = state if isinstance(state, tuple) else (state,)
        return out.square().sum() + sum(s.sin().sum() for s in state)

    return layer, x, loss


def _compiled_and_eager(layer, x, loss, fullgraph=True):
    backend, graphs = _recording()
    torch._dynamo.reset()
    inputs = [x, *layer.parameters()]
    y = torch.compile(loss, backend=backend, fullgraph=fullgraph)(x)
    got = [y, *torch.autograd.grad(y, inputs)]
    y = loss(x)
    want = [y, *torch.autograd.grad(y, inputs)]
    return got, want, graphs


@pytest.mark.parametrize("name", ["lstm", "gru_cho"])
def test_a_traced_cell_of_ones_own_runs_the_operator_under_compile(name):
    """Bidirectional with variable lengths, float64: the eager native loop's outputs and every gradient, and the graph
    calls the operator once per direction with the cell's traced id (not a step per time step)."""
    Cls = OWN[name]
    layer, x, loss = _layer_and_loss(Cls, torch.float64)
    got, want, graphs = _compiled_and_eager(layer, x, loss)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert _ops(graphs).count(OP) == 2, _ops(graphs)
    ids = [v for v in native._traced.get(Cls, {}).values() if isinstance(v, int)]
    assert ids and native.traced_cell(ids[0]) is Cls


def test_float32():
    """float32 (kernels of their own) of an lstm in one direction."""
    layer, x, loss = _layer_and_loss(OWN["lstm"], torch.float32, bidirectional=False)
    got, want, graphs = _compiled_and_eager(layer, x, loss)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert _ops(graphs).count(OP) == 1, _ops(graphs)


def gain_step(xw_t, state, P):
    """h_t = h_{t-1} + α ⊙ (tanh(s · (xw_t + h_{t-1} W_hhᵀ + b_hh)) - h_{t-1}): α of shape (1, H), s one scalar."""
    (h_prev,) = state
    W_hh, b_hh, alpha, s = P
    z = xw_t + linear(h_prev, W_hh, b_hh)
    hc = torch.tanh(s * z)
    return (h_prev + alpha * (hc - h_prev),), (h_prev,), (hc, h_prev, z)


def gain_step_backward(dstate, cache, P):
    (dh_t,), (hc, h_prev, z) = dstate, cache
    _, _, alpha, s = P
    dy = dh_t * alpha * (1 - hc * hc)
    da = dy * s
    dalpha, ds = (dh_t * (hc - h_prev)).sum(0, keepdim=True), (dy * z).sum()
    return da, (dh_t * (1 - alpha) + da @ P[0],), (da,), (dalpha, ds)


class RowAlphaGain(Cell):
    REC_PARAMS = ("W_hh", "b_hh", "alpha", "s")
    EXTRAS = ("alpha", "s")
    step = staticmethod(gain_step)
    step_backward = staticmethod(gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (H, H)), ("b_hh", (H,) if bias else None))
        self.reset_parameters()
        self.alpha = torch.nn.Parameter(torch.rand(1, H) * 0.6 + 0.2)
        self.s = torch.nn.Parameter(torch.tensor(0.8))


def test_extras_of_shape_1_by_h_and_of_none_under_compile():
    """α (1, H) named alpha, as the built-in leaky cell's (H,) one, and a scalar s: the operator's gradients have
    their parameters' shapes (its fake function sized α's as the built-in cell's (H,)) and s's is the sum over
    every unit, as the eager native loop gives them."""
    layer, x, loss = _layer_and_loss(RowAlphaGain, torch.float64)
    got, want, graphs = _compiled_and_eager(layer, x, loss)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert _ops(graphs).count(OP) == 2, _ops(graphs)


@pytest.mark.parametrize("name", sorted(OWN))
def test_opcheck_of_a_traced_cell(name):
    """torch.library.opcheck with a traced cell's id: the fake functions give the shapes of its caches (the traced
    layout's widths) and of its parameters' gradients, and the registered backward runs; with a mask and without (a
    traced cell's caches at the steps a mask skips were left unwritten, and opcheck's runs differed there)."""
    torch.manual_seed(0)
    cell = OWN[name](3, 4, **({"learn_alpha": True} if name == "leaky" else {})).double()
    T, B, H = 5, 3, 4
    X = cell.gates * H
    xw = torch.randn(T, B, X, dtype=torch.float64, requires_grad=True)
    state0 = [torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(cell.num_states)]
    params = cell.rec_params()
    given = [k for k, p in enumerate(params) if p is not None]
    P = [params[k].detach().clone().requires_grad_() for k in given]
    cid = native.traced_id(type(cell), params, xw)
    assert isinstance(cid, int), cid
    mask = (torch.arange(T)[:, None] < torch.tensor([T, 2, 1])[None, :]).double()[..., None]
    for m in (None, mask):
        torch.library.opcheck(compiled.recurrence, (cid, xw, state0, P, given, m, False, True, False))


def centred_step(xw_t, state, P):
    """Layer-normalised pre-activations: a mean over the units, which no per-unit kernel computes."""
    (h_prev,) = state
    a = xw_t + linear(h_prev, *P)
    h_t = torch.tanh(a - a.mean(1, keepdim=True))
    return (h_t,), (h_prev,), (h_t,)


def centred_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    dz = dh_t * (1 - h_t * h_t)
    da = dz - dz.mean(1, keepdim=True)
    return da, (da @ P[0],), (da,), ()


CompiledCentred = type(
    "CompiledCentred",
    (native.CELLS["rnn_tanh"],),
    {"step": staticmethod(centred_step), "step_backward": staticmethod(centred_step_backward)},
)


def test_a_cell_that_does_not_trace_is_compiled_as_the_python_loop():
    """No operator (dynamo unrolls the python loop), autograd's numbers, and with backend="native" the line that
    says why."""
    layer, x, loss = _layer_and_loss(CompiledCentred, torch.float64, bidirectional=False, backend="native")
    with pytest.warns(RuntimeWarning, match=r"native backend unavailable \(CompiledCentred.step .*mean"):
        got, _, graphs = _compiled_and_eager(layer, x, loss, fullgraph=False)
    assert graphs and OP not in _ops(graphs)
    layer, x, loss = _layer_and_loss(CompiledCentred, torch.float64, bidirectional=False, backend="autograd")
    y = loss(x)
    want = [y, *torch.autograd.grad(y, [x, *layer.parameters()])]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_the_compiled_call_itself_says_why_a_cell_does_not_trace():
    """backend="native" under torch.compile: the line came only from an eager call, as dynamo drops a warnings.warn
    it traces; a model only ever run compiled ran the python loop in silence."""
    Cls = type("CentredCompiledOnly", (CompiledCentred,), {})
    layer, x, loss = _layer_and_loss(Cls, torch.float64, bidirectional=False, backend="native")
    torch._dynamo.reset()
    with pytest.warns(RuntimeWarning, match=r"native backend unavailable \(CentredCompiledOnly.step .*mean"):
        torch.compile(loss, backend="aot_eager")(x)


def test_a_cell_of_ones_own_of_no_units_is_compiled_without_a_word(monkeypatch):
    """H = 0 with backend="native" under torch.compile: the tracer's "quiet" (nothing to run fast, as eagerly) was
    said as a reason, 'rnnkit native backend unavailable (quiet); using the python backend'; now nothing is said, as
    eagerly, and the empty outputs and gradients come back."""
    from rnnkit import engine

    monkeypatch.setattr(engine, "_warned", set())
    Cls, P = OWN["lstm"], (torch.zeros(0, 0), torch.zeros(0))
    xw = torch.randn(3, 2, 0, requires_grad=True)
    state = (torch.zeros(2, 0), torch.zeros(2, 0))
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hs, final = torch.compile(
            lambda xw: engine.run(Cls, xw, state, P, backend="native"), backend="eager"
        )(xw)
    hs.sum().backward()
    assert hs.shape == (3, 2, 0) and [f.shape for f in final] == [(2, 0)] * 2 and xw.grad.shape == xw.shape


SCALE = 1.0


def scaled_step(xw_t, state, P):
    (h_prev,) = state
    h_t = torch.tanh(SCALE * (xw_t + linear(h_prev, *P)))
    return (h_t,), (h_prev,), (h_t,)


def scaled_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    da = SCALE * dh_t * (1 - h_t * h_t)
    return da, (da @ P[0],), (da,), ()


CompiledScaled = type(
    "CompiledScaled",
    (native.CELLS["rnn_tanh"],),
    {"step": staticmethod(scaled_step), "step_backward": staticmethod(scaled_step_backward)},
)


def test_a_number_the_kernels_baked_in_changed_after_compiling_is_said_so(monkeypatch):
    """The graph holds the traced id of the kernels with SCALE baked in: after SCALE changes the operator refuses to
    run them (the python loop, eagerly, reads the new value), and compiled anew it gives eager's numbers again."""
    layer, x, loss = _layer_and_loss(CompiledScaled, torch.float64, bidirectional=False)
    got, want, graphs = _compiled_and_eager(layer, x, loss)
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    assert OP in _ops(graphs)
    f = torch.compile(loss, backend="aot_eager", fullgraph=True)
    f(x)
    monkeypatch.setitem(globals(), "SCALE", 2.0)
    with pytest.raises(RnnkitError, match=r"CompiledScaled.s step functions .* changed"):
        f(x)
    got, want, _ = _compiled_and_eager(layer, x, loss)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_a_new_length_does_not_compile_again():
    """As for rnnkit's cells: the second length makes T symbolic (the fake functions size the traced cell's caches in
    it), and later lengths reuse that graph."""
    torch.manual_seed(0)
    layer = Recurrent(OWN["gru_cho"], 4, 6)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    f = torch.compile(lambda x: layer(x)[0].sum(), backend=backend, fullgraph=True)
    for T in (5, 9, 3):
        x = torch.randn(2, T, 4, requires_grad=True)
        y = f(x)
        y.backward()
        torch.testing.assert_close(y, layer(x)[0].sum())
    assert len(graphs) == 2
    assert _ops(graphs[-1:]).count(OP) == 1
