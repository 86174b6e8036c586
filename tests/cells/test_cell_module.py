"""A cell module run by hand, one step at a time (as torch.nn.LSTMCell/GRUCell/RNNCell are): the same numbers as
torch's cells, one unbatched step as they take it, and a one-line error for a wrong input or state."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from rnnkit.cells import CELLS, LSTMP
from rnnkit.errors import RnnkitError

TORCH_CELLS = {"rnn_tanh": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def copy_from(cell, m):
    """rnnkit's cell with the weights of torch's `m` (same layout: W_xh = weight_ih, ...)."""
    with torch.no_grad():
        cell.W_xh.copy_(m.weight_ih), cell.W_hh.copy_(m.weight_hh)
        cell.b_xh.copy_(m.bias_ih), cell.b_hh.copy_(m.bias_hh)
    return cell


@pytest.mark.parametrize("name", list(TORCH_CELLS))
def test_steps_by_hand_equal_torch_cells_batched_and_unbatched(name):
    torch.manual_seed(0)
    m = TORCH_CELLS[name](4, 5)
    cell = copy_from(CELLS[name](4, 5), m)
    x = torch.randn(6, 3, 4)
    state, want = None, None
    for x_t in x:
        state = cell(x_t, state)
        want = m(x_t, want)
        # what torch's cell returns: h_t, or the tuple (h_t, c_t) for the LSTM
        assert type(state) is type(want) and (name != "lstm" or len(state) == 2)
    torch.testing.assert_close(state, want)
    one = cell(x[0, 0])  # unbatched: (D,) in, (H,) states out, as torch's cells
    want = m(x[0, 0])
    torch.testing.assert_close(one, want)
    h = lambda s: s[0] if name == "lstm" else s  # noqa: E731
    batch_of_one = cell(x[1, :1], tuple(s[None] for s in one) if name == "lstm" else one[None])
    torch.testing.assert_close(h(cell(x[1, 0], one)), h(batch_of_one)[0])
    if name != "lstm":  # a one-tuple (h_t,) is taken as the state too
        torch.testing.assert_close(cell(x[1], (state,)), cell(x[1], state))


@pytest.mark.parametrize("name", list(TORCH_CELLS))
@pytest.mark.parametrize("bias", [True, False])
def test_a_torch_cells_state_dict_loads(name, bias):
    """cell.load_state_dict(torch_cell.state_dict()) of code ported from torch.nn.LSTMCell/GRUCell/RNNCell failed
    with a three-line RuntimeError (missing W_xh, ..., unexpected weight_ih, ...): torch's keys are taken as the
    cell's, as a layer takes torch.nn.LSTM's weight_ih_l0; a cell torch has not (gru_cho) still refuses them."""
    torch.manual_seed(0)
    m, cell = TORCH_CELLS[name](4, 5, bias=bias), CELLS[name](4, 5, bias=bias)
    cell.load_state_dict(m.state_dict())
    x = torch.randn(3, 4)
    want, got = m(x), cell(x)
    for a, b in zip(want if name == "lstm" else (want,), got if name == "lstm" else (got,)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        CELLS["gru_cho"](4, 5).load_state_dict(nn.GRUCell(4, 5).state_dict())


@pytest.mark.parametrize("name", list(TORCH_CELLS))
def test_a_torch_cells_biases_into_a_cell_without_them_are_named_as_given(name):
    """torch.nn.LSTMCell(4, 5)'s state_dict into a cell with bias=False: the error named the keys "b_xh", "b_hh" as
    unexpected, the cell's names for weights it lacks and keys the caller never wrote (a layer names torch.nn.LSTM's
    bias_ih_l0). They are left under torch's names."""
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "bias_ih", "bias_hh"\.') as e:
        CELLS[name](4, 5, bias=False).load_state_dict(TORCH_CELLS[name](4, 5).state_dict())
    assert "b_xh" not in str(e.value)


@pytest.mark.parametrize("name", list(TORCH_CELLS))
def test_functional_call_with_a_torch_cells_keys_runs_those_weights(name):
    """torch.func.functional_call(cell, torch_cell.state_dict(), x) with torch.nn.LSTMCell's keys (weight_ih, ...)
    set attributes the cell never read: it ran its own weights, in silence. A cell torch has takes torch's names
    for its weights, as a layer takes weight_ih_l0: read (cell.weight_hh is cells' W_hh), replaced by a Parameter,
    and put in place by functional_call, which puts the cell's own back after; a plain tensor set by hand is
    refused as torch's cells refuse it, and torch's key given with the cell's own for one weight in one line."""
    torch.manual_seed(0)
    m, cell = TORCH_CELLS[name](4, 5), CELLS[name](4, 5)
    x, own = torch.randn(3, 4), dict(cell.named_parameters())
    want = m(x)
    got = torch.func.functional_call(cell, dict(m.named_parameters()), (x,))
    for a, b in zip(want if name == "lstm" else (want,), got if name == "lstm" else (got,)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert dict(cell.named_parameters()) == own and cell.weight_hh is cell.W_hh and cell.bias_ih is cell.b_xh
    new = nn.Parameter(torch.zeros_like(cell.W_hh))
    cell.weight_hh = new
    assert cell.W_hh is new and "weight_hh" not in dict(cell.named_parameters())
    with pytest.raises(TypeError, match="cannot assign 'torch.[A-Za-z]*Tensor' as parameter 'weight_hh'"):
        cell.weight_hh = torch.zeros_like(cell.W_hh)
    with pytest.raises(
        RnnkitError, match="functional_call got weight_ih and W_xh: torch.nn's name and the cell's"
    ):
        torch.func.functional_call(cell, {"weight_ih": m.weight_ih, "W_xh": m.weight_ih}, (x,))
    assert cell.W_xh is own["W_xh"] and cell.W_hh is new
    with pytest.raises(
        RnnkitError, match=r"weight_hh is torch.nn's name for this cell's W_hh, .* \(cell, 'W_hh'\)"
    ):
        prune.l1_unstructured(cell, "weight_hh", 0.5)  # (it registered weight_hh_orig, then failed)
    assert list(dict(cell.named_parameters())) == list(own)


@pytest.mark.parametrize(
    "apply",
    [
        lambda cell: torch.nn.utils.weight_norm(cell, "weight_hh"),
        lambda cell: torch.nn.utils.spectral_norm(cell, "weight_hh"),
        lambda cell: torch.nn.utils.parametrizations.weight_norm(cell, "weight_hh"),
    ],
    ids=["weight_norm", "spectral_norm", "parametrizations"],
)
def test_reparametrizing_a_torch_name_of_a_cell_says_which_parameter(apply):
    """The old weight_norm and spectral_norm of (cell, "weight_hh") ended in a bare KeyError: 'weight_hh' from inside
    torch, parametrizations' in a ValueError with no word of W_hh; prune, and all of them on a layer's
    weight_hh_l0, said in one line which parameter to give them. The cell says so too, and is left as it was."""
    import warnings

    cell = CELLS["lstm"](3, 4)
    before = dict(cell.named_parameters())
    with warnings.catch_warnings(), pytest.raises(RnnkitError, match=r"weight_hh is torch.nn's name for this "
                                                  r"cell's W_hh, .* \(cell, 'W_hh'\)$"):  # fmt: skip
        warnings.simplefilter("ignore", FutureWarning)  # (the old weight_norm's deprecation)
        apply(cell)
    assert dict(cell.named_parameters()) == before and not cell._forward_pre_hooks


def test_a_saved_cell_loads_with_weights_only():
    import io

    cell = CELLS["gru"](3, 4)
    buf = io.BytesIO()
    torch.save(cell, buf)
    with torch.serialization.safe_globals([CELLS["gru"]]):
        other = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    x = torch.randn(2, 3)
    torch.testing.assert_close(other(x), cell(x))
    with pytest.raises(RnnkitError, match=r"\(cell, 'W_hh'\)"):
        other._parameters["weight_hh"]


@pytest.mark.parametrize("name", [*CELLS, "lstmp"])
def test_wrong_input_or_state_is_one_line(name):
    cell = LSTMP(4, 6, proj_size=3) if name == "lstmp" else CELLS[name](4, 6)
    ok = cell(torch.randn(2, 4))
    ok = ok if cell.num_states == 2 else (ok,)
    assert ok[0].shape == (2, cell.output_size)
    bad = [
        (lambda: cell(torch.randn(2, 5)), r"x_t must be \(B, 4\), or \(4,\) .*got shape \(2, 5\)"),
        (lambda: cell(torch.randn(2, 3, 4)), r"one step.*\(2, 3, 4\).*rnnkit.Recurrent"),  # a sequence
        (lambda: cell(torch.ones(2, 4, dtype=torch.long)), "x_t is torch.int64; give a floating-point"),
        (lambda: cell(torch.randn(2, 4).float()), "x_t is torch.float32 .* weights are torch.float64"),
        (lambda: cell([[0.0] * 4]), "x_t must be a tensor"),
        (
            lambda: cell(torch.randn(2, 4), tuple(torch.zeros(3, s.shape[1]) for s in ok)),
            r"state must be .*\(3,",
        ),
        (lambda: cell(torch.randn(2, 4), (*ok, ok[0])), r"state must be .*got \d item"),
        # the right count of things that are not tensors: was "got 2 item(s)" for an LSTM, which takes 2
        (lambda: cell(torch.randn(2, 4), (None,) * len(ok)), r"state must be .*got NoneType(, NoneType)?$"),
        (lambda: cell(torch.randn(2, 4), [[0.0] * 6] * len(ok)), r"state must be .*got list(, list)?$"),
        (
            lambda: cell(torch.randn(2, 4), tuple(s.float() for s in ok)),
            r"state h is torch.float32 on cpu but x_t is torch.float64 on cpu; convert one \(h.to\(x_t\)\)$",
        ),
        (  # which of h and c (an LSTM's c alone; for a one-state cell, h again)
            lambda: cell(torch.randn(2, 4), (*ok[:-1], ok[-1].float())),
            rf"state {'hc'[len(ok) - 1]} is torch.float32 .*; convert one \({'hc'[len(ok) - 1]}.to\(x_t\)\)$",
        ),
        (
            lambda: cell(torch.randn(4), ok),
            r"state must be .* of shape \(\d,\)",
        ),  # unbatched step, batched state
    ]
    for call, message in bad:
        with pytest.raises(RnnkitError, match=message):
            call()


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("sizes", [(True, 4), (4, True), (0, 4), (4, 2.0)])
def test_sizes_that_are_not_positive_integers_are_refused(name, sizes):
    """As Recurrent refuses them: True was taken as an int, a cell of width 1."""
    with pytest.raises(ValueError, match="must be an integer >= 1, got"):
        CELLS[name](*sizes)


@pytest.mark.parametrize("name", list(CELLS))
def test_a_bias_that_is_not_a_switch_is_refused(name):
    """As Recurrent refuses it: bias="False" (a config file's string) built the biases, in silence, and bias=None
    built none while the cell kept None for its bias flag."""
    for bias in ("False", None, 2):
        with pytest.raises(ValueError, match=f"^bias must be True or False, got {bias!r}$"):
            CELLS[name](3, 4, bias=bias)
    assert CELLS[name](3, 4, bias=0).bias is False  # 0 and 1 as torch.nn takes them


def test_fx_symbolic_trace_keeps_a_cell_as_one_call():
    """As torch.nn.LSTMCell, a cell in a model traced by torch.fx.symbolic_trace is one call_module node (FX traced into
    it and failed: "x_t must be a tensor (B, 4), got Proxy"); a cell traced as the root is refused in one line."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), CELLS["gru"](4, 6))
    graph = torch.fx.symbolic_trace(model)
    assert [n.target for n in graph.graph.nodes if n.op == "call_module"] == ["0", "1"]
    x = torch.randn(3, 4)
    torch.testing.assert_close(graph(x), model(x))
    with pytest.raises(RnnkitError, match=r"torch.fx.symbolic_trace can't trace into rnnkit's LSTM"):
        torch.fx.symbolic_trace(CELLS["lstm"](4, 6))


def test_fx_symbolic_trace_runs_a_subclass_forward_once():
    """A cell's subclass whose forward calls the cell's: FX traced that forward, and one call of the cell there
    ran it again (x + 1 and · 2 twice), with the cell's argument names, which the subclass's forward may not take."""
    torch.manual_seed(0)

    class Shifted(type(CELLS["gru"](4, 6))):
        def forward(self, x, h=None):
            return super().forward(x + 1, h) * 2

    model = nn.Sequential(nn.Linear(4, 4), Shifted(4, 6))
    graph = torch.fx.symbolic_trace(model)
    x = torch.randn(3, 4)
    torch.testing.assert_close(graph(x), model(x))


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning"
)
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_onnx_export_of_a_cell_reaches_the_exporter(name):
    """torch.onnx.export(cell, ..., dynamo=False) passes the defaults of forward's keyword-only arguments (hx,
    input) by position: forward failed with 'takes from 1 to 3 positional arguments but 5 were given'. A cell's
    step is plain torch ops, which that exporter records: the export goes through (here, without the onnx package,
    to the exporter's own word that onnx is not installed)."""
    import io

    cell = CELLS[name](4, 6)
    try:
        torch.onnx.export(cell, (torch.randn(2, 4),), io.BytesIO(), dynamo=False)
    except torch.onnx.OnnxExporterError as e:
        assert "onnx is not installed" in str(e)
    with pytest.raises(
        TypeError, match="positional"
    ):  # outside an export, no more positional arguments than before
        cell(torch.randn(2, 4), None, None)


def test_reset_parameters_draws_a_parametrized_weight_as_torch_does():
    """Under torch.nn.utils.parametrizations (weight_norm, orthogonal) a weight's parameters are
    parametrizations.W_hh.original*, which reset_parameters skipped (not named W_*): the weight stayed as it was,
    where torch.nn's RNNs draw their originals again."""
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    cell, m = CELLS["rnn_tanh"](3, 4), nn.RNN(3, 4)
    parametrizations.weight_norm(cell, "W_hh")
    parametrizations.weight_norm(m, "weight_hh_l0")
    m.load_state_dict(dict(zip(m.state_dict(), cell.state_dict().values())))
    torch.manual_seed(1)
    cell.reset_parameters()
    torch.manual_seed(1)
    m.reset_parameters()
    for (name, p), q in zip(cell.named_parameters(), m.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


class _Scale(nn.Module):
    """b = 1 · original, a new tensor at each use, no right_inverse."""

    def forward(self, x):
        return x * 1.0


@pytest.mark.parametrize("how", ["prune", "parametrize"])
def test_reset_parameters_keeps_the_forget_bias_of_a_pruned_or_parametrized_bias(how):
    """Under torch.nn.utils.prune or parametrize, b_xh is computed at each use (from b_xh_orig, or from
    parametrizations.b_xh.original): LSTM.reset_parameters wrote the forget bias into that computed tensor, so the
    next forward read a uniform draw there instead of 1.0. It is written where the values are kept, which is where
    reset_parameters draws them, as torch.nn's does."""
    from torch.nn.utils import parametrize, prune

    torch.manual_seed(0)
    cell = CELLS["lstm"](3, 4)
    if how == "prune":
        prune.l1_unstructured(cell, "b_xh", amount=0.25)
        prune.l1_unstructured(cell, "b_hh", amount=0.25)
    else:
        parametrize.register_parametrization(cell, "b_xh", _Scale())
    cell.reset_parameters()
    cell(torch.randn(2, 3))  # (prune recomputes b_xh from b_xh_orig before a forward)
    kept = cell.b_xh_mask[4:8].bool() if how == "prune" else torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(cell.b_xh[4:8][kept], torch.ones(int(kept.sum())))
    assert (cell.b_xh[4:8][~kept] == 0).all()
    if how == "prune":
        assert (cell.b_hh[4:8] == 0).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("D", [3, 4])
def test_jit_trace_of_a_mut1_step_runs(D):
    """torch.jit.trace of one step (what torch.onnx.export with dynamo=False records): MUT1's projection ran its
    in-place TanhTail autograd.Function, which the tracer records as a Python op: the trace failed its own check and
    the traced cell with "inplace TanhTail not supported in the JIT". Traced, it runs tanh as plain ops."""
    torch.manual_seed(0)
    cell, x, h = CELLS["mut1"](D, 4), torch.randn(2, D), torch.randn(2, 4)
    traced = torch.jit.trace(cell, (x, h))
    x2, h2 = torch.randn(2, D, requires_grad=True), torch.randn(2, 4)
    want = cell(x2, h2)
    got = traced(x2, h2)
    torch.testing.assert_close(got, want)
    wants = torch.autograd.grad(want.sum(), (x2, *cell.parameters()))
    gots = torch.autograd.grad(got.sum(), (x2, *cell.parameters()))
    for a, b in zip(gots, wants):
        torch.testing.assert_close(a, b)


def test_device_and_dtype_factory_arguments_as_torch_cells():
    """torch.nn's cells take device= and dtype= (torch.nn.LSTMCell(4, 5, dtype=torch.float64)); rnnkit's cells raised
    "got an unexpected keyword argument 'dtype'". The parameters are drawn in that dtype, on that device: the same
    seed gives torch's cell's weights, which a draw in float32 cast after would not."""
    for name, torch_cell in TORCH_CELLS.items():
        kw = dict(forget_bias=None) if name == "lstm" else {}
        torch.manual_seed(0)
        cell = CELLS[name](4, 5, dtype=torch.float32, **kw)
        torch.manual_seed(0)
        m = torch_cell(4, 5, dtype=torch.float32)
        for (pname, p), q in zip(cell.named_parameters(), m.parameters()):
            assert p.dtype == torch.float32
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=pname)
        x = torch.randn(3, 4, dtype=torch.float32)
        torch.testing.assert_close(cell(x), m(x))
    for name in [*CELLS, "lstmp"]:
        kw = dict(dtype=torch.float16, device="cpu")
        cell = LSTMP(4, 6, proj_size=3, **kw) if name == "lstmp" else CELLS[name](4, 6, **kw)
        assert {t.dtype for t in (*cell.parameters(), *cell.buffers())} == {torch.float16}, name
        assert cell(torch.randn(2, 4, dtype=torch.float16))[0].dtype == torch.float16
        meta = (
            LSTMP(4, 6, proj_size=3, device="meta") if name == "lstmp" else CELLS[name](4, 6, device="meta")
        )
        assert {t.device.type for t in meta.parameters()} == {"meta"}, name
    for dtype in ("float64", torch.int64):
        with pytest.raises(ValueError, match=r"^dtype must be a floating-point torch.dtype .*got"):
            CELLS["gru"](4, 5, dtype=dtype)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", list(CELLS))
def test_jit_trace_of_a_step_is_silent_as_torch_cells(name):
    """torch.jit.trace hands out sizes as tensors: the cell's checks of x_t's and the state's shapes (and MUT1/MUT2's
    projection) turned them into Python bools and strings, a TracerWarning each (up to 10 a trace), where torch's
    cells trace silently; with warnings as errors (pytest here) a user's trace of a cell failed."""
    torch.manual_seed(0)
    cell = CELLS[name](4, 4)
    for x in (torch.randn(2, 4), torch.randn(4)):
        state = tuple(s.detach() for s in cell(x)) if name == "lstm" else cell(x).detach()
        for args in ((x,), (x, state)):
            traced = torch.jit.trace(cell, args)
            got, want = traced(*args), cell(*args)
            torch.testing.assert_close(got, want)


def test_nonlinearity_as_torch_rnn_cell_takes_it():
    """torch.nn.RNNCell(D, H, bias, nonlinearity="relu"): here the class names the nonlinearity, and the option was
    "got an unexpected keyword argument 'nonlinearity'". The one the class computes is taken (by name or, as torch
    orders it, after bias); another is refused in one line naming the class that computes it."""
    torch.manual_seed(0)
    m = nn.RNNCell(4, 5, True, "relu")
    cell = copy_from(CELLS["rnn_relu"](4, 5, True, "relu"), m)
    x = torch.randn(3, 4)
    torch.testing.assert_close(cell(x, cell(x)), m(x, m(x)))
    assert CELLS["rnn_tanh"](4, 5, nonlinearity="tanh").torch_mode == "RNN_TANH"
    with pytest.raises(RnnkitError, match=r"^nonlinearity='relu' .* rnnkit.cells.RNNReLU\(4, 5, \.\.\.\)"):
        CELLS["rnn_tanh"](4, 5, nonlinearity="relu")
    with pytest.raises(RnnkitError, match=r"^nonlinearity='tanh' .* rnnkit.cells.RNNTanh\(4, 5, \.\.\.\)"):
        CELLS["rnn_relu"](4, 5, nonlinearity="tanh")
    with pytest.raises(
        RnnkitError, match=r"^nonlinearity='sigmoid' .*RNNTanh or RNNReLU \('tanh' or 'relu'\)$"
    ):
        CELLS["rnn_tanh"](4, 5, nonlinearity="sigmoid")


def test_nonlinearity_is_read_as_from_torch_rnn_cell():
    """torch.nn.RNNCell has .nonlinearity ("tanh" or "relu"), which code written for it reads (a gain for an init,
    nn.init.calculate_gain(cell.nonlinearity)); the Elman cells had none ("'RNNTanh' object has no attribute
    'nonlinearity'"), where Recurrent has it. A subclass with a step of its own has none, as Recurrent's."""
    from rnnkit.cells import RNNReLU, RNNTanh

    for name, phi in (("rnn_tanh", "tanh"), ("rnn_relu", "relu")):
        assert CELLS[name](3, 4).nonlinearity == nn.RNNCell(3, 4, nonlinearity=phi).nonlinearity == phi

    class Ortho(RNNReLU):
        def reset_parameters(self):
            super().reset_parameters()

    class Doubled(RNNTanh):
        @staticmethod
        def step(xw_t, state, P):
            return RNNTanh.step(2 * xw_t, state, P)

    assert Ortho(3, 4).nonlinearity == "relu"
    assert not hasattr(Doubled(3, 4), "nonlinearity") and not hasattr(CELLS["gru"](3, 4), "nonlinearity")


@pytest.mark.parametrize("name", list(CELLS))
def test_numpy_integer_sizes_are_sizes(name):
    """np.int64(4) (from an array's shape or a parameter grid) was refused: 'hidden_size must be a positive integer,
    got np.int64(4)'. It builds the cell a Python int builds, its sizes kept as ints."""
    torch.manual_seed(0)
    want = CELLS[name](3, 4)
    torch.manual_seed(0)
    got = CELLS[name](np.int64(3), np.int64(4))
    assert (type(got.input_size), type(got.hidden_size)) == (int, int)
    for (n, p), (_, q) in zip(got.named_parameters(), want.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert LSTMP(np.int64(3), np.int64(4), proj_size=np.int64(2)).proj_size == 2


@pytest.mark.parametrize("shape", [(3, 4), (3,)])
def test_token_ids_into_a_cell_are_told_to_be_embedded(shape):
    """Token ids into a cell were told 'give a floating-point tensor (e.g. x_t.float())', the wrong fix for ids, and
    (B,) ids got the size error of a (B, D) step first."""
    with pytest.raises(RnnkitError, match=r"GRU: x_t is torch\.int64; .*token ids: embed them first"):
        CELLS["gru"](4, 5)(torch.randint(0, 4, shape))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_a_step_by_hand_compiles_in_one_graph_at_a_new_batch_size(name):
    # the state check built its error's shape string on every call, str() of a shape, which dynamo can't trace where
    # the batch is symbolic: torch.compile(decoder, fullgraph=True) of a loop of cell steps failed at a second batch
    # size ("Failed to trace builtin operator `str`")
    torch.manual_seed(0)
    cell = CELLS[name](3, 4)

    def decode(x, state):
        for x_t in x.unbind(1):
            state = cell(x_t, state)
        return state

    compiled = torch.compile(decode, fullgraph=True, backend="eager")
    for B in (2, 3):
        x, state = torch.randn(B, 3, 3), cell.init_state(B)
        torch.testing.assert_close(compiled(x, state), decode(x, state))


@pytest.mark.parametrize("name", list(TORCH_CELLS))
@pytest.mark.parametrize("unbatched", [False, True])
def test_a_step_with_its_state_fed_back_checks_it_in_one_loop(name, unbatched):
    """A decoder's step (the state fed back) read each weight through nn.Module.__getattr__ (5 reads) and checked the
    state with the error's closures and generators: 10 µs of a 26 µs rnn_tanh step at B = 1, H = 64. Same numbers."""
    import sys

    from rnnkit.cells import _base

    torch.manual_seed(0)
    m = TORCH_CELLS[name](4, 5)
    cell = copy_from(CELLS[name](4, 5), m)
    x = torch.randn(4) if unbatched else torch.randn(3, 4)
    state, want = cell(x), m(x)
    calls, files = [], (_base.__file__, nn.Module.__getattr__.__code__.co_filename)

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename in files:
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        state = cell(x, state)
    finally:
        sys.setprofile(None)
    assert calls.count("__getattr__") == 0 and not {"<genexpr>", "want", "clash"} & set(calls), calls
    torch.testing.assert_close(state, m(x, want), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_trace_of_a_leaky_step_learning_alpha_passes_its_check():
    """torch.jit.trace checks a trace by tracing again under torch.no_grad(): a learned α = σ(a) took its
    straight-through ops with gradients and two plain ones without, so the trace of a leaky cell with
    learn_alpha=True failed, 'TracingCheckError: Graphs differed across invocations!', where every other cell (and
    torch's) traces. Traced, α takes the straight-through ops: the same values and gradients as the cell's."""
    torch.manual_seed(0)
    cell = CELLS["leaky"](3, 4, alpha=[0.1, 0.2, 0.3, 0.4], learn_alpha=True)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    traced = torch.jit.trace(cell, (x, h))
    x2, h2 = torch.randn(5, 3, requires_grad=True), torch.randn(5, 4)
    want, got = cell(x2, h2), traced(x2, h2)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got.sum(), (x2, *cell.parameters())),
                    torch.autograd.grad(want.sum(), (x2, *cell.parameters()))):  # fmt: skip
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("weight", ["W_xh", "W_hh"])
@pytest.mark.parametrize("name", ["gru", "leaky"])
def test_a_parametrized_weight_is_computed_once_a_step(name, weight):
    """A step's checks read W_xh (leaky's W_hh too) for its dtype and device, computing a parametrized one each time:
    spectral_norm's power iteration ran two or three times a step where torch.nn's cells run it once."""
    from torch.nn.utils import parametrize

    class Counted(nn.Module):
        calls = 0

        def forward(self, W):
            Counted.calls += 1
            return 2 * W

    cell = CELLS[name](3, 4, **({"learn_alpha": True} if name == "leaky" else {}))
    plain = {k: v.clone() for k, v in cell.state_dict().items()}
    parametrize.register_parametrization(cell, weight, Counted())
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    Counted.calls = 0
    got = cell(x, h)
    assert Counted.calls == 1
    ref = CELLS[name](3, 4, **({"learn_alpha": True} if name == "leaky" else {}))
    ref.load_state_dict({**plain, weight: 2 * plain[weight]})
    torch.testing.assert_close(got, ref(x, h), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_cell_converts_to_and_from_torchs_cell(name, bias):
    """A layer had Recurrent.to_torch/from_torch, a cell neither (as the project's style asks of a cell torch has):
    torch.nn.GRUCell().load_state_dict(cell.state_dict()) fails on rnnkit's names (W_xh), so an rnnkit cell had no way
    to torch's. cell.to_torch() and Cell.from_torch(m) (or CELL.from_torch(m)) copy every weight, dtype, device, frozen
    weights and train mode, drawing nothing from the caller's RNG; another function is refused in one line."""
    from rnnkit.cells._base import Cell

    torch.manual_seed(0)
    cell = CELLS[name](3, 4, bias=bias, dtype=torch.float64).eval()
    cell.W_hh.requires_grad_(False)
    rng = torch.random.get_rng_state()
    m = cell.to_torch()
    back, same = Cell.from_torch(m), type(cell).from_torch(m)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert type(m) is {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}.get(name, torch.nn.RNNCell)
    assert getattr(m, "nonlinearity", name[4:]) == name[4:] and m.bias == bias and not m.training
    assert m.weight_hh.dtype == torch.float64 and not m.weight_hh.requires_grad and m.weight_ih.requires_grad
    assert type(back) is type(cell) is type(same) and not back.W_hh.requires_grad and not back.training
    x = torch.randn(2, 3, dtype=torch.float64)
    for other in (m, back):
        got, want = other(x), cell(x)
        for g, w in zip(got if name == "lstm" else (got,), want if name == "lstm" else (want,)):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    wrong = "rnn_tanh" if name != "rnn_tanh" else "rnn_relu"
    with pytest.raises(
        RnnkitError,
        match=rf"^{type(CELLS[wrong](3, 4)).__name__}.from_torch: m is a torch.nn.\w+ of the {name} cell",
    ):
        CELLS[wrong].from_torch(m)
    with pytest.raises(RnnkitError, match=r"^torch.nn has no cell of MUT1's function"):
        CELLS["mut1"](3, 4).to_torch()


@pytest.mark.parametrize("bias", [True, False])
def test_an_lstm_cell_from_torch_draws_its_forget_bias_as_torchs_cell_on_reset(bias):
    """Cell.from_torch(nn.LSTMCell) kept forget_bias=1.0, where Recurrent.from_torch(nn.LSTM) gives None: the cell's
    reset_parameters (model.apply of it, a re-initialisation) set the forget gate's bias to 1 where torch's cell draws
    it, and its repr, LSTM(3, 4), said a forget bias of 1 it never had. It now draws as torch.nn.LSTMCell, seed for
    seed, as the layer does."""
    from rnnkit.cells._base import Cell

    m = nn.LSTMCell(3, 4, bias=bias)
    for cell in (Cell.from_torch(m), CELLS["lstm"].from_torch(m)):
        assert cell.forget_bias is None and "forget_bias=None" in repr(cell)
        torch.manual_seed(3)
        m.reset_parameters()
        torch.manual_seed(3)
        cell.reset_parameters()
        for name, w in m.state_dict().items():
            assert torch.equal(getattr(cell, name), w), name


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_number_past_floats_range_is_refused_in_one_line_by_the_cells(value):
    """A Python int is a Real: LSTM(3, 4, forget_bias=10**400) raised a bare "OverflowError: int too large to convert
    to float" from math.isfinite, and Leaky's alpha=10**400 from torch.as_tensor; each says the option in one line."""
    with pytest.raises(ValueError, match="forget_bias must be a finite number"):
        CELLS["lstm"](3, 4, forget_bias=value)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\]"):
        CELLS["leaky"](3, 4, alpha=value)


def test_an_int_forget_bias_past_64_bits_is_set_as_its_float():
    """forget_bias=2**63, finite and below float32's largest value, failed in reset_parameters' assignment with
    torch's "Overflow when unpacking long long" (an int is kept as given, for the repr); it is set as float(2**63)."""
    cell = CELLS["lstm"](3, 4, forget_bias=2**63)
    assert cell.b_xh[4:8].tolist() == [float(torch.tensor(float(2**63)))] * 4
    assert cell.b_hh[4:8].tolist() == [0.0] * 4


@pytest.mark.parametrize("big", [2**63, np.uint64(2**63), 10**400])
def test_sizes_past_a_64_bit_integer_are_refused_in_one_line(big):
    """input_size, hidden_size or Recurrent's cond_size of 2**63 or more failed in torch's empty() with "Overflow
    when unpacking long long"."""
    from rnnkit.layers import Recurrent

    calls = {"input_size": lambda: CELLS["lstm"](big, 4), "hidden_size": lambda: CELLS["gru"](3, big),
             "cond_size": lambda: Recurrent("lstm", 3, 4, cond_size=big)}  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(RnnkitError, match=name + r" \S+.* is too large \(past a 64-bit integer, 2\^63\)"):
            call()
    with pytest.raises(RnnkitError, match=r"hidden_size \S+.* is too large"):
        Recurrent("rnn_tanh", 3, big)
