"""Cells of one's own with several dependent recurrent products (traced v2): gru_cho and mut1-3 written as a user
writes them, a Cell subclass with its own step and step_backward (the built-in functions, so the same math), run
natively as staged kernels (rnnkit/engine/traced.py, csrc/cells_traced.h: fwd_staged, bwd_staged). Checked against
the autograd loop and against the built-in cell: outputs, final states and every gradient (parameters, input,
initial state) with lengths, both directions and 2 layers in float64; gradcheck; float32; the rows split over
threads or not."""

import argparse
import collections
import contextlib
import dataclasses
import enum
import warnings

import pytest
import torch

from rnnkit import Recurrent
from rnnkit.cells import CELLS
from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.cells.check import check_cell
from rnnkit.engine import native, run
from rnnkit.engine.traced import Untraceable, trace_cell

NAMES = ("gru_cho", "mut1", "mut2", "mut3")


def own(name):
    """rnnkit's cell `name` written as one's own: a subclass the engine knows only by tracing its step functions."""
    base = CELLS[name]
    body = {"step": staticmethod(base.step), "step_backward": staticmethod(base.step_backward)}
    return type(f"Own{base.__name__}", (base,), {**body, "__module__": __name__})


OWN = {name: own(name) for name in NAMES}


def reset_before_step(xw_t, state, P):
    """A GRU whose reset gate acts on h_{t-1} before its matrix, written from scratch: r, z from h_{t-1} W_gᵀ + b_g,
    h̃ = tanh(xw_h + (r ⊙ h_{t-1}) W_hᵀ), h_t = (1 - z) h̃ + z h_{t-1}."""
    (h,) = state
    W_g, b_g, W_h = P
    H = h.shape[1]
    g = torch.sigmoid(xw_t[:, : 2 * H] + linear(h, W_g, b_g))
    r, z = g.split(H, 1)
    u = r * h
    n = torch.tanh(xw_t[:, 2 * H :] + u @ W_h.t())
    return ((1 - z) * n + z * h,), (h, u), (g, n, h)


def reset_before_step_backward(dstate, cache, P):
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)
    du = da_n @ P[2]
    da_g = torch.cat((du * h * r * (1 - r), dh * (h - n) * z * (1 - z)), 1)
    return torch.cat((da_g, da_n), 1), (dh * z + du * r + da_g @ P[0],), (da_g, da_n), ()


class ResetBefore(Cell):
    """Written as a user writes a cell: its own parameters (a recurrent bias on the gates' GEMM), step and
    step_backward."""

    gates = 3
    REC_PARAMS = ("W_g", "b_g", "W_h")
    GEMMS = (("W_g", "b_g"), ("W_h", None))
    step = staticmethod(reset_before_step)
    step_backward = staticmethod(reset_before_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_g", (2 * H, H)), ("b_g", (2 * H,) if bias else None), ("W_h", (H, H)))
        self.reset_parameters()


def scaled_step(xw_t, state, P):
    """ResetBefore with the candidate's product scaled by 0.5: its dpre (0.5 da_n) is no block of dxw (a buffer of
    its own, dhw), and pointwise math reads dpre W_h."""
    (h,) = state
    W_g, b_g, W_h = P
    H = h.shape[1]
    g = torch.sigmoid(xw_t[:, : 2 * H] + linear(h, W_g, b_g))
    r, z = g.split(H, 1)
    u = r * h
    n = torch.tanh(xw_t[:, 2 * H :] + 0.5 * (u @ W_h.t()))
    return ((1 - z) * n + z * h,), (h, u), (g, n, h)


def scaled_step_backward(dstate, cache, P):
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)
    dpre = 0.5 * da_n
    du = dpre @ P[2]
    da_g = torch.cat((du * h * r * (1 - r), dh * (h - n) * z * (1 - z)), 1)
    return torch.cat((da_g, da_n), 1), (dh * z + du * r + da_g @ P[0],), (da_g, dpre), ()


class ScaledCandidate(ResetBefore):
    step = staticmethod(scaled_step)
    step_backward = staticmethod(scaled_step_backward)


def scaled_update_step(xw_t, state, P):
    """ResetBefore with the update gate's recurrent term scaled by 0.5: the gates' dpre is [da_r, 0.5 da_z], whose
    first block is dxw's first and whose second is not dxw's second, so it is no slice of dxw (dhw keeps it)."""
    (h,) = state
    W_g, b_g, W_h = P
    H = h.shape[1]
    p = linear(h, W_g, b_g)
    g = torch.sigmoid(xw_t[:, : 2 * H] + torch.cat((p[:, :H], 0.5 * p[:, H:]), 1))
    r, z = g.split(H, 1)
    u = r * h
    n = torch.tanh(xw_t[:, 2 * H :] + u @ W_h.t())
    return ((1 - z) * n + z * h,), (h, u), (g, n, h)


def scaled_update_step_backward(dstate, cache, P):
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)
    du = da_n @ P[2]
    da_r, da_z = du * h * r * (1 - r), dh * (h - n) * z * (1 - z)
    dpre = torch.cat((da_r, 0.5 * da_z), 1)
    return torch.cat((da_r, da_z, da_n), 1), (dh * z + du * r + dpre @ P[0],), (dpre, da_n), ()


class ScaledUpdate(ResetBefore):
    step = staticmethod(scaled_update_step)
    step_backward = staticmethod(scaled_update_step_backward)


def reset_lstm_step(xw_t, state, P):
    """An LSTM whose output gate reads (r ⊙ h_{t-1}) W_oᵀ, r a fourth gate: two states, two dependent products."""
    h, c = state
    W_g, W_o = P
    H = h.shape[1]
    a = xw_t[:, : 4 * H] + h @ W_g.t()
    i, f, r = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H]), torch.sigmoid(a[:, 3 * H :])
    g = torch.tanh(a[:, 2 * H : 3 * H])
    c_t = f * c + i * g
    u = r * h
    o = torch.sigmoid(xw_t[:, 4 * H :] + u @ W_o.t())
    tc = torch.tanh(c_t)
    return (o * tc, c_t), (h, u), (i, f, g, r, o, tc, c, h)


def reset_lstm_step_backward(dstate, cache, P):
    (dh, dc), (i, f, g, r, o, tc, c, h) = dstate, cache
    da_o = dh * tc * o * (1 - o)
    dc_t = dc + dh * o * (1 - tc * tc)
    du = da_o @ P[1]
    da = torch.cat(
        (dc_t * g * i * (1 - i), dc_t * c * f * (1 - f), dc_t * i * (1 - g * g), du * h * r * (1 - r)), 1
    )
    return torch.cat((da, da_o), 1), (du * r + da @ P[0], dc_t * f), (da, da_o), ()


class ResetLSTM(Cell):
    gates, num_states = 5, 2
    REC_PARAMS = ("W_g", "W_o")
    GEMMS = (("W_g", None), ("W_o", None))
    step = staticmethod(reset_lstm_step)
    step_backward = staticmethod(reset_lstm_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_g", (4 * H, H)), ("W_o", (H, H)))
        self.reset_parameters()


def _run_layer(
    Cls, backend, dtype, B=4, T=6, H=5, D=3, lengths=True, bidirectional=True, layers=2, bias=True
):
    torch.manual_seed(0)
    layer = Recurrent(Cls, D, H, num_layers=layers, bidirectional=bidirectional, bias=bias, backend=backend)
    layer = layer.to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(B, T, D, dtype=dtype, requires_grad=True)
    h0 = torch.randn(layers * (2 if bidirectional else 1), B, H, dtype=dtype, requires_grad=True)
    state = (h0, torch.randn_like(h0).requires_grad_()) if getattr(Cls, "num_states", 1) == 2 else (h0,)
    given = torch.tensor(([T, 2, T - 1, 1] * B)[:B]) if lengths else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the native loop runs it: no word of a fallback
        out, final = layer(x, state if len(state) == 2 else h0, lengths=given)
    finals = final if isinstance(final, tuple) else (final,)
    (out.square().sum() + sum((f * f.detach().sin()).sum() for f in finals)).backward()
    return [out, *finals, x.grad, *(s.grad for s in state), *(p.grad for p in layer.parameters())]


def test_a_cell_of_two_states_and_two_products():
    """c_t read and dc_prev written in place by the last backward stage: the autograd loop's numbers, gradcheck."""
    got = _run_layer(ResetLSTM, "native", torch.float64)
    _ran_natively(ResetLSTM)
    want = _run_layer(ResetLSTM, "autograd", torch.float64)
    _same(got, want)
    torch.manual_seed(2)
    cell = ResetLSTM(2, 3).double()
    xw = torch.randn(4, 3, 15, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(3, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    P = tuple(p.detach().clone().requires_grad_() for p in cell.rec_params())
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.float64).unsqueeze(-1)

    def f(xw, h0, c0, *P):
        hs, final = run(ResetLSTM, xw, (h0, c0), P, mask=mask, backend="native")
        return hs, *final

    assert torch.autograd.gradcheck(f, (xw, *state, *P))


def _same(got, want):
    """Every output, final state and gradient of _run_layer equal to float64 round-off."""
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def _ran_natively(Cls):
    ids = list(native._traced.get(Cls, {}).values())
    assert ids and all(isinstance(v, int) for v in ids), ids  # traced, not the python loop


@pytest.mark.parametrize("name", NAMES)
def test_an_own_cell_of_two_products_matches_autograd_and_the_builtin_cell(name):
    Cls = OWN[name]
    got = _run_layer(Cls, None, torch.float64)  # (the default backend: native)
    _ran_natively(Cls)
    for other in (_run_layer(Cls, "autograd", torch.float64), _run_layer(name, "native", torch.float64)):
        _same(got, other)


@pytest.mark.parametrize("bias", [True, False])
def test_a_cell_written_from_scratch_with_a_bias_on_its_first_product(bias):
    got = _run_layer(ResetBefore, "native", torch.float64, bias=bias)
    _ran_natively(ResetBefore)
    want = _run_layer(ResetBefore, "autograd", torch.float64, bias=bias)
    _same(got, want)


def test_a_dpre_that_is_no_block_of_dxw():
    t = trace_cell(
        ScaledCandidate, 4, [p.detach() for p in ScaledCandidate(3, 4).rec_params()], torch.float64
    )
    assert t.dhw_blocks == 1 and t.gemms[1][5:7] == (1, 1)  # read by the second kernel, kept in dhw
    got = _run_layer(ScaledCandidate, "native", torch.float64)
    _ran_natively(ScaledCandidate)
    want = _run_layer(ScaledCandidate, "autograd", torch.float64)
    _same(got, want)


def test_a_dpre_whose_first_block_only_is_one_of_dxw():
    """The gates' dpre [da_r, 0.5 da_z] begins as dxw does: it is kept in dhw, not read from dxw's blocks (where its
    second would be da_z: W_g's and b_g's gradients of z and dh_prev off)."""
    t = trace_cell(ScaledUpdate, 4, [p.detach() for p in ScaledUpdate(3, 4).rec_params()], torch.float64)
    assert t.dhw_blocks == 2 and t.gemms[0][6:8] == (1, 0)  # in dhw, from its first block
    got = _run_layer(ScaledUpdate, "native", torch.float64)
    _ran_natively(ScaledUpdate)
    want = _run_layer(ScaledUpdate, "autograd", torch.float64)
    _same(got, want)


@pytest.mark.parametrize("name", [*NAMES, "reset_before", "scaled"])
def test_gradcheck_of_the_staged_kernels(name):
    """T=4, B=3, a non-zero initial state, padded steps, the gradient through the final state, both directions."""
    Cls = {"reset_before": ResetBefore, "scaled": ScaledCandidate}.get(name) or OWN[name]
    torch.manual_seed(1)
    cell = Cls(3, 3).double()
    xw = torch.randn(4, 3, Cls.gates * 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    P = tuple(p.detach().clone().requires_grad_() for p in cell.rec_params())
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=torch.float64).unsqueeze(-1)
    for reverse in (False, True):

        def f(xw, h0, *P, reverse=reverse):
            hs, final = run(Cls, xw, (h0,), P, mask=mask, reverse=reverse, backend="native")
            return hs, *final

        assert torch.autograd.gradcheck(f, (xw, h0, *P))
    _ran_natively(Cls)


@contextlib.contextmanager
def threads(n, rows, split):
    """torch's threads, the extension's row threads (1: one loop over all rows, the BLAS threading each step's
    GEMMs; more: the rows split) and its unit split."""
    before = torch.get_num_threads()
    ext = native.load()
    torch.set_num_threads(n)
    ext.set_row_threads(rows), ext.set_split(split)
    try:
        yield
    finally:
        ext.set_row_threads(0), ext.set_split(1)
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rows, split", [(1, 1), (3, 1), (1, 0)])
def test_float32_against_the_builtin_cell_with_rows_split_or_not(name, rows, split):
    """B = 16 rows, H = 64, T = 20 (prepared per-step weights): float32 to 1e-5 of the built-in cell (whose loop
    adds b_xh itself, a different order of the same sums), with the rows split over 3 threads or one loop."""
    with threads(3, rows, split):
        got = _run_layer(OWN[name], "native", torch.float32, B=16, T=20, H=64, lengths=False)
        want = _run_layer(name, "native", torch.float32, B=16, T=20, H=64, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * w.abs().max().item())


@pytest.mark.parametrize("rows", [1, 3])
def test_float64_with_lengths_and_the_rows_split_or_not(rows):
    """Long enough (T = 12, B = 12) for prepared weights and threads, with padded rows: the autograd loop's numbers."""
    with threads(3, rows, 1):
        got = _run_layer(OWN["mut3"], "native", torch.float64, B=12, T=12, H=8)
    want = _run_layer(OWN["mut3"], "autograd", torch.float64, B=12, T=12, H=8)
    _same(got, want)


def test_evaluation_and_one_step_at_a_time():
    """No gradient (the loop keeps one slot of each buffer), and one step at a time with the state fed back (no
    prepared weights): the autograd loop's outputs."""
    torch.manual_seed(0)
    layers = {be: Recurrent(OWN["mut3"], 3, 4, backend=be).double() for be in ("autograd", "native")}
    layers["native"].load_state_dict(layers["autograd"].state_dict())
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    with torch.no_grad():
        full = {be: m(x)[0] for be, m in layers.items()}
        state, outs = None, []
        for t in range(9):
            out, state = layers["native"](x[:, t : t + 1], state)
            outs.append(out)
    _ran_natively(OWN["mut3"])
    torch.testing.assert_close(full["native"], full["autograd"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat(outs, 1), full["autograd"], rtol=1e-10, atol=1e-12)


def twice_step_backward(dstate, cache, P):
    """ResetBefore's backward with the gates' product added twice into dh_{t-1} (p + p, a wrong gradient the
    engine must follow as the python loop does)."""
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)
    du = da_n @ P[2]
    da_g = torch.cat((du * h * r * (1 - r), dh * (h - n) * z * (1 - z)), 1)
    p = da_g @ P[0]
    return torch.cat((da_g, da_n), 1), (dh * z + du * r + (p + p),), (da_g, da_n), ()


class ProductTwice(ResetBefore):
    step_backward = staticmethod(twice_step_backward)


def test_a_product_added_twice_into_dh_prev():
    """p + p, p = da_g W_g: the engine's GEMM added p into dh_{t-1} once (gradients up to 0.4 off the python loop's);
    it is read by the kernel and added there, twice."""
    got = _run_layer(ProductTwice, "native", torch.float64)
    _ran_natively(ProductTwice)
    want = _run_layer(ProductTwice, "python", torch.float64)
    _same(got, want)


class Settings:
    """A configuration object of the user's, read as SETTINGS.candidate.scale."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class Kind(enum.Enum):
    """What the candidate is, an enum member the step branches on."""

    SQUASH = "squash"
    PLAIN = "plain"


MODE = "squash"  # a string the step branches on
KIND = Kind.SQUASH  # an enum member the step branches on
SQUASH = torch.tanh  # the candidate's activation, a function
SETTINGS = Settings(candidate=Settings(scale=1.0))
ARGS = argparse.Namespace(gain=1.0)  # (what argparse's parse_args gives)
LEVELS = collections.OrderedDict(k=1.0)  # (a subclass of dict)
ROW = collections.namedtuple("Row", "k")(1.0)  # (a subclass of tuple, read as ROW[0])
NESTED = {"candidate": {"scale": [1.0]}}  # a dict in a dict, read as NESTED["candidate"]["scale"][0]


class Tilt:
    """An object called as a function: x · k."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return x * self.k


class TiltModule(torch.nn.Module):
    """The same as an nn.Module (forward, called through nn.Module's __call__)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


TILT, TILT_MODULE = Tilt(1.0), TiltModule(1.0)


def _k():
    return SETTINGS.candidate.scale * ARGS.gain * LEVELS["k"] * ROW[0] * NESTED["candidate"]["scale"][0]


def knobbed_step(xw_t, state, P):
    """ResetBefore whose candidate is SQUASH(k a) (MODE "squash") or k a, k = SETTINGS.candidate.scale · ARGS.gain
    · LEVELS["k"] · ROW[0] · TILT.k · TILT_MODULE.k."""
    (h,) = state
    W_g, b_g, W_h = P
    H = h.shape[1]
    g = torch.sigmoid(xw_t[:, : 2 * H] + linear(h, W_g, b_g))
    r, z = g.split(H, 1)
    u = r * h
    a = TILT(TILT_MODULE(_k() * (xw_t[:, 2 * H :] + u @ W_h.t())))
    n = SQUASH(a) if MODE == "squash" and KIND is Kind.SQUASH else a
    return ((1 - z) * n + z * h,), (h, u), (g, n, h)


def knobbed_step_backward(dstate, cache, P):
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    plain = MODE != "squash" or KIND is not Kind.SQUASH
    slope = 1 if plain else 1 - n * n if SQUASH is torch.tanh else n * (1 - n)
    da_n = TILT(TILT_MODULE(dh * (1 - z) * slope * _k()))
    du = da_n @ P[2]
    da_g = torch.cat((du * h * r * (1 - r), dh * (h - n) * z * (1 - z)), 1)
    return torch.cat((da_g, da_n), 1), (dh * z + du * r + da_g @ P[0],), (da_g, da_n), ()


class Knobbed(ResetBefore):
    step = staticmethod(knobbed_step)
    step_backward = staticmethod(knobbed_step_backward)


def _turn(knob, second):
    global MODE, SQUASH, ROW, KIND
    if knob == "a string":
        MODE = "plain" if second else "squash"
    elif knob == "an enum member":
        KIND = Kind.PLAIN if second else Kind.SQUASH
    elif knob == "a function":
        SQUASH = torch.sigmoid if second else torch.tanh
    elif knob == "an attribute's attribute":
        SETTINGS.candidate.scale = 0.5 if second else 1.0
    elif knob == "a namespace's attribute":
        ARGS.gain = 0.5 if second else 1.0
    elif knob == "an OrderedDict's entry":
        LEVELS["k"] = 0.5 if second else 1.0
    elif knob == "a dict's dict's list's item":
        NESTED["candidate"]["scale"][0] = 0.5 if second else 1.0
    elif knob == "a namedtuple's item":
        ROW = ROW._replace(k=0.5 if second else 1.0)
    elif knob == "a callable object's attribute":
        TILT.k = 0.5 if second else 1.0
    elif knob == "an nn.Module's attribute":
        TILT_MODULE.k = 0.5 if second else 1.0


@pytest.mark.parametrize(
    "knob",
    [
        "a string",
        "an enum member",
        "a function",
        "an attribute's attribute",
        "a namespace's attribute",
        "an OrderedDict's entry",
        "a namedtuple's item",
        "a dict's dict's list's item",
        "a callable object's attribute",
        "an nn.Module's attribute",
    ],
)
def test_what_the_step_reads_besides_numbers_is_traced_again(knob):
    """A knob changed between runs (MODE = "plain", KIND = Kind.PLAIN of an enum, SQUASH = torch.sigmoid,
    SETTINGS.candidate.scale = 0.5, ARGS.gain = 0.5 of an argparse.Namespace, a standard library class's object,
    LEVELS["k"] = 0.5 of an OrderedDict, ROW[0] of a namedtuple, NESTED["candidate"]["scale"][0] of a list in a dict
    in a dict, TILT.k of an object the step calls, TILT_MODULE.k of an nn.Module's forward), which the kernels' key
    missed: the native loop ran the old kernels (outputs 0.3-1.1 off) where the python loop read the new."""
    Cls = type("Knobbed", (Knobbed,), {})
    try:
        for second in (False, True):
            _turn(knob, second)
            got = _run_layer(Cls, "native", torch.float64, layers=1)
            want = _run_layer(Cls, "autograd", torch.float64, layers=1)
            _same(got, want)
    finally:
        _turn(knob, False)
    _ran_natively(Cls)


@dataclasses.dataclass(frozen=True)
class Gain:
    """A callable frozen dataclass holding a list: hash() of it raises TypeError."""

    k: float
    sizes: list

    def __call__(self, x):
        return x * self.k


GAIN = Gain(0.5, [1, 2])


def gained_step(xw_t, state, P):
    (new,), us, cache = reset_before_step(xw_t, state, P)
    return (GAIN(new),), us, cache


def gained_step_backward(dstate, cache, P):
    return reset_before_step_backward((GAIN(dstate[0]),), cache, P)


class Gained(ResetBefore):
    step = staticmethod(gained_step)
    step_backward = staticmethod(gained_step_backward)


def test_a_callable_object_that_cant_be_hashed():
    """The kernels' key holds a callable the step reads as itself (fix of 3b9cceb): one whose hash raises (a frozen
    dataclass holding a list) failed every forward with TypeError: unhashable type: 'list'."""
    got = _run_layer(Gained, "native", torch.float64, layers=1)
    _ran_natively(Gained)
    want = _run_layer(Gained, "python", torch.float64, layers=1)
    _same(got, want)


def shared_bias_step(xw_t, state, P):
    """r = σ(xw_r + h_{t-1} W_1ᵀ + b), h_t = tanh(xw_h + (r ⊙ h_{t-1}) W_2ᵀ + b): one bias b on both products."""
    (h,) = state
    W_1, W_2, b = P
    H = h.shape[1]
    r = torch.sigmoid(xw_t[:, :H] + linear(h, W_1, b))
    u = r * h
    n = torch.tanh(xw_t[:, H:] + linear(u, W_2, b))
    return (n,), (h, u), (r, n, h)


def shared_bias_step_backward(dstate, cache, P):
    (dh,), (r, n, h) = dstate, cache
    da_n = dh * (1 - n * n)
    du = da_n @ P[1]
    da_r = du * h * r * (1 - r)
    return torch.cat((da_r, da_n), 1), (du * r + da_r @ P[0],), (da_r, da_n), ()


class SharedBias(Cell):
    gates = 2
    REC_PARAMS = ("W_1", "W_2", "b")
    GEMMS = (("W_1", "b"), ("W_2", "b"))
    step = staticmethod(shared_bias_step)
    step_backward = staticmethod(shared_bias_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_1", (H, H)), ("W_2", (H, H)), ("b", (H,) if bias else None))
        self.reset_parameters()


def test_a_bias_named_by_two_gemms_entries():
    """b on both products: its gradient is Σ dpre_1 + Σ dpre_2, and the python loop kept the last entry's sum alone
    (0.4 off autograd's), as the engine's db_k would, and check_cell took the right step_backward for a wrong one;
    both sum them (as for a matrix), and the native loop leaves such a cell to the python loop."""
    check_cell(SharedBias)
    P = [p.detach().double() for p in SharedBias(3, 4).rec_params()]
    with pytest.raises(Untraceable, match="GEMMS name one bias twice"):
        trace_cell(SharedBias, 4, P, torch.float64)
    got = _run_layer(SharedBias, "python", torch.float64, layers=1)
    want = _run_layer(SharedBias, "autograd", torch.float64, layers=1)
    _same(got, want)


def inline_step(xw_t, state, P):
    """ScaledCandidate written inline: the product reads (r * h) @ W_hᵀ while the step returns r * h computed again."""
    (h,) = state
    W_g, b_g, W_h = P
    H = h.shape[1]
    g = torch.sigmoid(xw_t[:, : 2 * H] + linear(h, W_g, b_g))
    r, z = g.split(H, 1)
    n = torch.tanh(xw_t[:, 2 * H :] + 0.5 * ((r * h) @ W_h.t()))
    return ((1 - z) * n + z * h,), (h, r * h), (g, n, h)


def inline_step_backward(dstate, cache, P):
    (dh,), (g, n, h) = dstate, cache
    H = dh.shape[1]
    r, z = g[:, :H], g[:, H:]
    da_n = dh * (1 - z) * (1 - n * n)
    du = (0.5 * da_n) @ P[2]
    da_g = torch.cat((du * h * r * (1 - r), dh * (h - n) * z * (1 - z)), 1)
    return torch.cat((da_g, da_n), 1), (dh * z + du * r + da_g @ P[0],), (da_g, 0.5 * da_n), ()


class Inline(ResetBefore):
    step = staticmethod(inline_step)
    step_backward = staticmethod(inline_step_backward)


def test_a_value_computed_twice_is_one_value():
    """u = r * h returned beside (r * h) @ W_hᵀ, and dpres (0.5 da_n,) beside (0.5 da_n) @ W_h: the two copies had
    two names, and the cell was left to the python loop ("us[1] is not the vector it multiplies by W_hᵀ")."""
    got = _run_layer(Inline, "native", torch.float64)
    _ran_natively(Inline)
    want = _run_layer(Inline, "autograd", torch.float64)
    _same(got, want)
