"""A cell of one's own on the native loop: its step and step_backward traced into kernels (rnnkit/engine/traced.py)
that the C++ loop runs as it runs rnnkit's cells (csrc/cells_traced.h). Checked against the autograd loop through
the cell's own step: outputs, final states and every gradient, with lengths, both directions, stacked layers and
an initial state; gradcheck in float64; float32 at a size where threads split the rows; and a cell the tracer
can't take runs on the python loop, said only where backend="native" was asked for."""

import os
import pickle
import random
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from rnnkit import GradProbe, Recurrent
from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.engine import native, run, traced


def leaky_step(xw_t, state, P):
    """h̃ = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh);  h_t = h_{t-1} + α ⊙ (h̃ - h_{t-1}), α learned as it is."""
    (h_prev,) = state
    W_hh, b_hh, alpha = P
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (h_prev + alpha * (hc - h_prev),), (h_prev,), (hc, h_prev, alpha)


def leaky_step_backward(dstate, cache, P):
    (dh_t,), (hc, h_prev, alpha) = dstate, cache
    da = dh_t * alpha * (1 - hc * hc)
    return da, (dh_t * (1 - alpha) + da @ P[0],), (da,), ((dh_t * (hc - h_prev)).sum(0),)


class OwnLeaky(Cell):
    """Leaky units with α a plain parameter, one per unit (an EXTRAS gradient summed over the batch)."""

    REC_PARAMS = ("W_hh", "b_hh", "alpha")
    EXTRAS = ("alpha",)
    step = staticmethod(leaky_step)
    step_backward = staticmethod(leaky_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(
            self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,) if bias else None)
        )
        self.alpha = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        nn.init.uniform_(self.alpha, 0.2, 0.8)


def cifg_step(xw_t, state, P):
    """The coupled-gate LSTM (CIFG): i = 1 - f.  f, g, o from xw_t + h_{t-1} W_hhᵀ + b_hh; c_t = f c + (1-f) g."""
    h_prev, c_prev = state
    W_hh, b_hh = P
    H = h_prev.shape[1]
    a = xw_t + linear(h_prev, W_hh, b_hh)
    f, g, o = torch.sigmoid(a[:, :H]), torch.tanh(a[:, H : 2 * H]), torch.sigmoid(a[:, 2 * H :])
    c_t = f * c_prev + (1 - f) * g
    th = torch.tanh(c_t)
    return (o * th, c_t), (h_prev,), (f, g, o, th, c_prev)


def cifg_step_backward(dstate, cache, P):
    (dh_t, dc_t), (f, g, o, th, c_prev) = dstate, cache
    dc = dc_t + dh_t * o * (1 - th * th)
    da = torch.cat((dc * (c_prev - g) * f * (1 - f), dc * (1 - f) * (1 - g * g), dh_t * th * o * (1 - o)), 1)
    return da, (da @ P[0], dc * f), (da,), ()


class CIFG(Cell):
    gates, num_states = 3, 2
    step = staticmethod(cifg_step)
    step_backward = staticmethod(cifg_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (3 * H, H)), ("b_hh", (3 * H,) if bias else None))
        self.reset_parameters()


def gru_step(xw_t, state, P):
    """torch.nn.GRU's form, written as one's own: the reset gate after W_hn h, so dpre is not dxw."""
    (h_prev,) = state
    x_r, x_z, x_n = xw_t.chunk(3, 1)
    h_r, h_z, h_n = linear(h_prev, *P).chunk(3, 1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h_prev,), (h_prev,), (r, z, n, h_n, h_prev)


def gru_step_backward(dstate, cache, P):
    (dh_t,), (r, z, n, h_n, h_prev) = dstate, cache
    da_n = dh_t * (1 - z) * (1 - n * n)
    da_r = da_n * h_n * r * (1 - r)
    da_z = dh_t * (h_prev - n) * z * (1 - z)
    dpre = torch.cat((da_r, da_z, da_n * r), 1)
    return torch.cat((da_r, da_z, da_n), 1), (dh_t * z + dpre @ P[0],), (dpre,), ()


class OwnGRU(Cell):
    gates = 3
    step = staticmethod(gru_step)
    step_backward = staticmethod(gru_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (3 * H, H)), ("b_hh", (3 * H,) if bias else None))
        self.reset_parameters()


def relu_step(xw_t, state, P):
    """An Elman ReLU unit; without a bias its GEMM is a plain mm."""
    (h_prev,) = state
    h_t = torch.relu(xw_t + linear(h_prev, *P))
    return (h_t,), (h_prev,), (h_t,)


def relu_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    da = dh_t * (h_t > 0)
    return da, (da @ P[0],), (da,), ()


class OwnReLU(Cell):
    step = staticmethod(relu_step)
    step_backward = staticmethod(relu_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(
            self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,) if bias else None)
        )
        self.reset_parameters()


def norm_step(xw_t, state, P):
    """Layer-normalised pre-activations: a mean over the units, which no per-unit kernel computes."""
    (h_prev,) = state
    a = xw_t + linear(h_prev, *P)
    a = a - a.mean(1, keepdim=True)
    h_t = torch.tanh(a)
    return (h_t,), (h_prev,), (h_t,)


def norm_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    dz = dh_t * (1 - h_t * h_t)
    da = dz - dz.mean(1, keepdim=True)
    return da, (da @ P[0],), (da,), ()


class Centred(OwnReLU):
    step = staticmethod(norm_step)
    step_backward = staticmethod(norm_step_backward)


OWN = {"leaky": OwnLeaky, "cifg": CIFG, "gru": OwnGRU, "relu": OwnReLU}


def _run_layer(Cls, backend, dtype, bias=True, B=4, T=6, H=5, bidirectional=True, lengths=True):
    torch.manual_seed(0)
    layer = Recurrent(Cls, 3, H, num_layers=2, bidirectional=bidirectional, bias=bias, backend=backend).to(
        dtype
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(B, T, 3, dtype=dtype, requires_grad=True)
    D = 2 if bidirectional else 1
    h0 = torch.randn(2 * D, B, H, dtype=dtype, requires_grad=True)
    state = (h0, torch.randn_like(h0).requires_grad_()) if Cls.num_states == 2 else h0
    given = torch.tensor([T, 2, T - 1, 1][:B]) if lengths else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the native loop runs it: no word of a fallback
        out, final = layer(x, state, lengths=given)
    finals = final if isinstance(final, tuple) else (final,)
    (out.square().sum() + sum((f * f.detach().sin()).sum() for f in finals)).backward()
    leaves = [x, *(state if isinstance(state, tuple) else (state,)), *layer.parameters()]
    return [out, *finals, *(t.grad for t in leaves)]


def _native_is_autograd(Cls):
    """Cls on the native loop gives the autograd loop's outputs, final states and gradients (float64)."""
    want = _run_layer(Cls, "autograd", torch.float64)
    got = _run_layer(Cls, "native", torch.float64)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OWN))
@pytest.mark.parametrize("bias", [True, False])
def test_a_cell_of_ones_own_runs_natively_with_autograds_gradients(name, bias):
    Cls = OWN[name]
    want = _run_layer(Cls, "autograd", torch.float64, bias)
    got = _run_layer(Cls, "native", torch.float64, bias)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    ids = list(native._traced.get(Cls, {}).values())
    assert ids and all(isinstance(v, int) for v in ids), ids  # traced, not the python loop


@pytest.mark.parametrize("name", sorted(OWN))
def test_gradcheck_of_the_native_loop_on_a_traced_cell(name):
    """T=4, B=3, a non-zero initial state, the gradient through the final state too, forward and reverse."""
    Cls = OWN[name]
    torch.manual_seed(1)
    cell = Cls(2, 3).double()
    xw = torch.randn(4, 3, Cls.gates * 3, dtype=torch.float64, requires_grad=True)
    state = tuple(torch.randn(3, 3, dtype=torch.float64, requires_grad=True) for _ in range(Cls.num_states))
    P = tuple(p.detach().clone().requires_grad_() for p in cell.rec_params())
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=torch.float64).unsqueeze(-1)
    for reverse in (False, True):

        def f(xw, *tensors, reverse=reverse):
            hs, final = run(Cls, xw, tensors[: Cls.num_states], tensors[Cls.num_states :], mask=mask,
                            reverse=reverse, backend="native")  # fmt: skip
            return hs, *final

        assert torch.autograd.gradcheck(f, (xw, *state, *P))


@pytest.mark.parametrize("name", sorted(OWN))
def test_float32_at_a_size_where_threads_split_the_rows(name):
    """B = 16 rows over torch's threads, H = 64, T = 20: native against the python loop of the same hand-written
    BPTT, within float32's tolerance (the kernels' exp and tanh are the fast ones of rnnkit's own cells)."""
    Cls = OWN[name]
    got = _run_layer(Cls, "native", torch.float32, B=16, T=20, H=64, lengths=False)
    want = _run_layer(Cls, "python", torch.float32, B=16, T=20, H=64, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)  # (1 of 4096 gradients was 2.3e-5 off)


def test_evaluation_one_step_and_gradprobe_run_natively():
    """No gradient (the loop keeps no caches), one step at a time with the state fed back, and a GradProbe's
    dL/dh_t, each as the autograd loop gives them."""
    torch.manual_seed(0)
    layers = {be: Recurrent(CIFG, 3, 4, backend=be).double() for be in ("autograd", "native")}
    layers["native"].load_state_dict(layers["autograd"].state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        full = {be: m(x) for be, m in layers.items()}
        stepped = {}
        for be, m in layers.items():
            state, outs = None, []
            for t in range(5):
                out, state = m(x[:, t : t + 1], state)
                outs.append(out)
            stepped[be] = torch.cat(outs, 1)
    torch.testing.assert_close(full["native"][0], full["autograd"][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stepped["native"], full["autograd"][0], rtol=1e-10, atol=1e-12)
    probes = {}
    for be, m in layers.items():
        probe = GradProbe()
        m(x, probe=probe)[0].sum().backward()
        probes[be] = probe.dh
    torch.testing.assert_close(probes["native"], probes["autograd"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["relu", "cifg"])
def test_a_cell_of_ones_own_of_no_units_runs_as_the_python_loop(name):
    """H = 0 (xw of no columns, the states (B, 0), as the built-in cells run natively): the tracer's U.shape[0] % H
    raised ZeroDivisionError out of run, with backend="native" and by default; now python's loop runs it, quietly,
    and its empty outputs and gradients come back."""
    Cls = OWN[name]
    P = [torch.zeros(0, 0), torch.zeros(0)]
    xw = torch.randn(3, 2, 0, requires_grad=True)
    state = tuple(torch.zeros(2, 0, requires_grad=True) for _ in range(Cls.num_states))
    for backend in ("native", None):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hs, final = run(Cls, xw, state, P, backend=backend)
        hs.sum().backward()
        assert hs.shape == (3, 2, 0) and [f.shape for f in final] == [(2, 0)] * Cls.num_states
        assert xw.grad.shape == xw.shape and all(s.grad.shape == (2, 0) for s in state)


def test_a_cell_the_tracer_cannot_take_runs_on_the_python_loop():
    """A mean over the units (layer normalisation) is no per-unit kernel: the python loop runs it, quietly by default
    and with one line naming why where backend="native" was asked for; the numbers are autograd's either way."""
    want = _run_layer(Centred, "autograd", torch.float64, lengths=False)
    got = _run_layer(Centred, None, torch.float64, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    layer = Recurrent(Centred, 3, 4, backend="native")
    with pytest.warns(RuntimeWarning, match=r"native backend unavailable \(Centred.step .*mean.*python"):
        layer(torch.randn(2, 3, 3))


def ind_step(xw_t, state, P):
    """IndRNN (Li et al. 2018): h_t = relu(xw_t + u ⊙ h_{t-1}), no recurrent product."""
    (h_prev,), (u,) = state, P
    h_t = torch.relu(xw_t + u * h_prev)
    return (h_t,), (), (h_t, h_prev, u)


def ind_step_backward(dstate, cache, P):
    (dh_t,), (h_t, h_prev, u) = dstate, cache
    da = torch.where(h_t > 0, dh_t, 0.0)
    return da, (da * u,), (), ((da * h_prev).sum(0),)


class IndRNN(Cell):
    REC_PARAMS, GEMMS, EXTRAS = ("u",), (), ("u",)
    step = staticmethod(ind_step)
    step_backward = staticmethod(ind_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.u = nn.Parameter(torch.linspace(0.2, 0.9, hidden_size))
        self.reset_parameters()


def test_a_cell_without_a_recurrent_product_says_so_where_native_was_asked_for():
    """No GEMMS entry (IndRNN's u ⊙ h_{t-1}): backend="native" ran the python loop without a word (taken for sizes
    the loop can't take, where python's checks say what is wrong: none was), where the README promises one line
    naming why; the default stays quiet, the numbers autograd's."""
    want = _run_layer(IndRNN, "autograd", torch.float64)
    got = _run_layer(IndRNN, None, torch.float64)  # (quiet: _run_layer takes a warning for an error)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    layer = Recurrent(IndRNN, 3, 4, backend="native")
    said = r"native backend unavailable \(IndRNN has no GEMMS entry .*python loop\)"
    with pytest.warns(RuntimeWarning, match=said):
        layer(torch.randn(2, 3, 3))


def test_a_cell_without_a_recurrent_product_builds_and_traces_nothing_by_default(monkeypatch):
    """The default backend asked native for a cell without GEMMS (which it never runs): the first forward built the
    extension (57 s where it was not built yet) and every forward traced its step's key (40 µs a forward)."""

    def refused(*a, **k):
        raise AssertionError("the native engine was asked to load or trace a cell it never runs")

    monkeypatch.setattr(native, "load", refused)
    monkeypatch.setattr(native, "traced_id", refused)
    layer = Recurrent(IndRNN, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, h = layer(torch.randn(2, 3, 3))
    assert out.shape == (2, 3, 4)  # (backend="native" still says why: the test above)


def batch_gain_step(xw_t, state, P):
    """h_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh) ⊙ k · B / (B + 1): the batch size B read as a number."""
    (h_prev,) = state
    W_hh, b_hh, k = P
    B = h_prev.shape[0]
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (hc * k * (B / (B + 1)),), (h_prev,), (hc,)


def batch_gain_step_backward(dstate, cache, P):
    (dh_t,), (hc,) = dstate, cache
    W_hh, _, k = P
    f = dh_t.shape[0] / (dh_t.shape[0] + 1)
    da = dh_t * k * f * (1 - hc * hc)
    return da, (da @ W_hh,), (da,), ((dh_t * hc * f).sum(0),)


class BatchGain(OwnLeaky):
    REC_PARAMS = ("W_hh", "b_hh", "k")
    EXTRAS = ("k",)
    step = staticmethod(batch_gain_step)
    step_backward = staticmethod(batch_gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        Cell.__init__(self, input_size, hidden_size, bias)
        recurrent_weights(
            self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,) if bias else None)
        )
        self.k = nn.Parameter(torch.linspace(0.5, 1.5, hidden_size))
        self.reset_parameters()

    def reset_parameters(self):
        Cell.reset_parameters(self)


def test_a_step_reading_the_batch_size_runs_on_the_python_loop():
    """The kernels are traced once, on a sample of 2 rows, for every batch: a step that reads the batch size as a
    number (h_prev.shape[0]) had it baked in as 2, and ran natively with it at every other batch size (outputs and
    gradients 14 off at 5 rows, in silence). A step whose kernels differ on 3 rows runs on the python loop."""
    want = _run_layer(BatchGain, "autograd", torch.float64, lengths=False)
    got = _run_layer(BatchGain, None, torch.float64, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    layer = Recurrent(BatchGain, 3, 4, backend="native")
    with pytest.warns(
        RuntimeWarning, match=r"native backend unavailable \(BatchGain's step functions read the batch"
    ):
        layer(torch.randn(5, 3, 3))


def branching_cell(name, halved):
    """A BatchGain whose h_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh) ⊙ k is halved where halved(B) holds: a branch on
    the batch size B."""

    def step(xw_t, state, P):
        (h_prev,) = state
        W_hh, b_hh, k = P
        f = 0.5 if halved(h_prev.shape[0]) else 1.0
        hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
        return (hc * k * f,), (h_prev,), (hc,)

    def step_backward(dstate, cache, P):
        (dh_t,), (hc,) = dstate, cache
        W_hh, _, k = P
        f = 0.5 if halved(dh_t.shape[0]) else 1.0
        da = dh_t * k * f * (1 - hc * hc)
        return da, (da @ W_hh,), (da,), ((dh_t * hc * f).sum(0),)

    return type(
        name, (BatchGain,), {"step": staticmethod(step), "step_backward": staticmethod(step_backward)}
    )


SingleRow = branching_cell("SingleRow", lambda B: B == 1)
ManyRows = branching_cell("ManyRows", lambda B: B > 4)


@pytest.mark.parametrize("Cls, B", [(SingleRow, 1), (ManyRows, 8)])
def test_a_step_branching_on_the_batch_size_runs_on_the_python_loop(Cls, B):
    """A step that branches on B == 1 traces alike on the samples of 2 and 3 rows; run natively on one row, it took
    the branch of many (outputs 2x off, in silence). One that branches on B > 4 traced alike on 1, 2 and 3 rows
    and ran natively with the small batches' branch at 8 rows (outputs 0.97 off). Their kernels differ on 1 row,
    and on the sample of 67 rows: the python loop runs them."""
    want = _run_layer(Cls, "autograd", torch.float64, B=B, lengths=False)
    got = _run_layer(Cls, None, torch.float64, B=B, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    layer = Recurrent(Cls, 3, 4, backend="native")
    with pytest.warns(
        RuntimeWarning, match=rf"native backend unavailable \({Cls.__name__}'s step functions read the batch"
    ):
        layer(torch.randn(B, 3, 3))


def kept_step(xw_t, state, P):
    """Only the units a boolean buffer keeps are updated: h_t = where(keep, tanh(...), h_{t-1})."""
    (h_prev,) = state
    W_hh, b_hh, keep = P
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (torch.where(keep, hc, h_prev),), (h_prev,), (hc,)


def kept_step_backward(dstate, cache, P):
    (dh_t,), (hc,) = dstate, cache
    W_hh, _, keep = P
    da = torch.where(keep, dh_t, 0.0) * (1 - hc * hc)
    return da, (da @ W_hh + torch.where(keep, 0.0, dh_t),), (da,), (torch.zeros(keep.shape),)


class Kept(OwnReLU):
    REC_PARAMS = ("W_hh", "b_hh", "keep")
    EXTRAS = ("keep",)
    step = staticmethod(kept_step)
    step_backward = staticmethod(kept_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.register_buffer("keep", torch.arange(hidden_size) % 2 == 0)


def test_a_boolean_buffer_among_the_parameters_runs_on_the_python_loop():
    """The trace cast every parameter to the run's dtype, so its sample step failed on a boolean mask: the default
    backend raised torch's "where expected condition to be a boolean tensor, but got ... Float" where the python and
    autograd loops ran the cell (the kernels read parameters as floats: it is the python loop's)."""
    want = _run_layer(Kept, "autograd", torch.float64)
    got = _run_layer(Kept, None, torch.float64)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # torch.compile first (a class of its own: nothing traced yet): the trace drew its sample parameters from their
    # shapes alone, all floats, and the sample step's RuntimeError came out of dynamo (InternalTorchDynamoError)
    layer = Recurrent(type("KeptCompiled", (Kept,), {}), 3, 4)
    x = torch.randn(2, 3, 3)
    torch._dynamo.reset()
    got = torch.compile(layer, backend="aot_eager")(x)[0]
    layer.backend = "native"
    with pytest.warns(
        RuntimeWarning, match=r"unavailable \(KeptCompiled's keep is torch.bool, .*python loop"
    ):
        torch.testing.assert_close(got, layer(x)[0], rtol=1e-6, atol=1e-6)


def cast_cell(dtype):
    """tanh rounded to dtype and back, with a float32 torch.where(c, 1.0, 0.1) beside it."""

    def step(xw_t, state, P):
        (h_prev,) = state
        y = torch.tanh(xw_t + linear(h_prev, *P))
        y = y.to(dtype).to(xw_t.dtype) * torch.where(y > 0, 1.0, 0.1)
        return (y,), (h_prev,), (y,)

    def step_backward(dstate, cache, P):
        (dh_t,), (y,) = dstate, cache
        da = dh_t * (1 - y * y)
        return da, (da @ P[0],), (da,), ()

    fns = {"step": staticmethod(step), "step_backward": staticmethod(step_backward)}
    return type("Cast", (OwnReLU,), fns)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_cast_to_a_narrower_float_rounds_as_the_python_loop_does(dtype):
    """y.to(bfloat16) in a float64 step was computed in double (the cast dropped: outputs 2e-3 off, gradients 3e-2);
    float32 values (a cast, torch.where of two Python numbers) are now rounded as torch rounds them, and a
    bfloat16 one keeps the cell on the python loop."""
    Cls = cast_cell(dtype)
    want = _run_layer(Cls, "python", torch.float64, lengths=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (bfloat16: a fallback, said)
        got = _run_layer(Cls, None, torch.float64, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def filled_step(xw_t, state, P):
    """tanh scaled by constants made in another dtype than the step's: full_like(y, 0.1, dtype=torch.float32),
    scalar_tensor(0.3, dtype=torch.float32) and full_like(y, 2.7, dtype=torch.int64) (which holds 2)."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P))
    k = torch.full_like(y, 0.1, dtype=torch.float32) + torch.scalar_tensor(0.3, dtype=torch.float32)
    return (y * k + y * torch.full_like(y, 2.7, dtype=torch.int64),), (h_prev,), (y,)


def filled_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = torch.full_like(y, 0.1, dtype=torch.float32) + torch.scalar_tensor(0.3, dtype=torch.float32)
    da = dh_t * (k + 2) * (1 - y * y)
    return da, (da @ P[0],), (da,), ()


class Filled(OwnReLU):
    step = staticmethod(filled_step)
    step_backward = staticmethod(filled_step_backward)


def test_a_constant_made_in_another_dtype_is_held_as_torch_holds_it():
    """full_like and scalar_tensor of another dtype than the step's: the kernels held the Python number as given
    (0.1 where torch holds float32's 0.100000001, 2.7 where an int64 tensor holds 2): the outputs 1e-9 off in
    float64, and wholly off with the integer."""
    want = _run_layer(Filled, "python", torch.float64, lengths=False)
    got = _run_layer(Filled, "native", torch.float64, lengths=False)
    assert isinstance(next(iter(native._traced[Filled].values())), int)  # ran natively
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-13)


def row_alpha_step(xw_t, state, P):
    """Leaky units with α of shape (1, H)."""
    return leaky_step(xw_t, state, P)


def row_alpha_step_backward(dstate, cache, P):
    (dh_t,), (hc, h_prev, alpha) = dstate, cache
    da = dh_t * alpha * (1 - hc * hc)
    return da, (dh_t * (1 - alpha) + da @ P[0],), (da,), ((dh_t * (hc - h_prev)).sum(0, keepdim=True),)


class RowAlpha(OwnLeaky):
    step = staticmethod(row_alpha_step)
    step_backward = staticmethod(row_alpha_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.alpha = nn.Parameter(torch.rand(1, hidden_size) * 0.6 + 0.2)


def test_an_extras_parameter_of_shape_1_by_h():
    """α (1, H), its gradient d.sum(0, keepdim=True): the kernels summed it as (H,) and backward failed ('size
    {[1, 5]} is not expandable to size {[5]}'); the python loop ran it."""
    want = _run_layer(RowAlpha, "autograd", torch.float64)
    got = _run_layer(RowAlpha, "native", torch.float64)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def gains_step(xw_t, state, P):
    """[a_1, a_2] = s · v ⊙ (xw_t + h_{t-1} W_hhᵀ + b_hh);  h_t = tanh(a_1) ⊙ σ(a_2): v a gain per unit of both
    blocks (2H,), s one scalar gain, both EXTRAS."""
    (h_prev,) = state
    W_hh, b_hh, v, s = P
    H = h_prev.shape[1]
    z = xw_t + linear(h_prev, W_hh, b_hh)
    a = s * v * z
    t, g = torch.tanh(a[:, :H]), torch.sigmoid(a[:, H:])
    return (t * g,), (h_prev,), (z, t, g)


def gains_step_backward(dstate, cache, P):
    (dh_t,), (z, t, g) = dstate, cache
    _, _, v, s = P
    da = torch.cat((dh_t * g * (1 - t * t), dh_t * t * g * (1 - g)), 1)
    dz = da * v * s
    return dz, (dz @ P[0],), (dz,), ((da * z * s).sum(0), (da * z * v).sum())


class Gains(Cell):
    gates = 2
    REC_PARAMS = ("W_hh", "b_hh", "v", "s")
    EXTRAS = ("v", "s")
    step = staticmethod(gains_step)
    step_backward = staticmethod(gains_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (2 * H, H)), ("b_hh", (2 * H,) if bias else None))
        self.v, self.s = nn.Parameter(torch.empty(2 * H)), nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        nn.init.uniform_(self.v, 0.5, 1.5)
        nn.init.constant_(self.s, 0.8)


def test_extras_of_two_blocks_beside_a_scalar_one():
    """v (2H,) and s (): s's gradient is the sum of a row value of 2 blocks (the kernels add every block of it, not
    the first), and its accumulator comes after v's 2H numbers (the loop points each one past the widths before it)."""
    _native_is_autograd(Gains)
    ids = list(native._traced.get(Gains, {}).values())
    assert ids and all(isinstance(v, int) for v in ids), ids  # traced, not the python loop


SCALE = 1.0


def scaled_step(xw_t, state, P):
    """tanh(a) · SCALE, SCALE a global the caller changes between runs."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P)) * SCALE
    return (y,), (h_prev,), (y,)


def scaled_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    da = dh_t * SCALE * (1 - (y / SCALE) ** 2)
    return da, (da @ P[0],), (da,), ()


class Scaled(OwnReLU):
    step = staticmethod(scaled_step)
    step_backward = staticmethod(scaled_step_backward)


def test_a_global_number_or_a_replaced_step_is_traced_again():
    """The kernels bake in what the trace saw: a global Python number changed between runs, or a class whose step
    and step_backward were replaced, ran the old kernels (outputs 0.5-1.2 off) where the python loop ran the new."""
    global SCALE
    Cls = type("Scaled", (Scaled,), {})
    try:
        for scale in (1.0, 0.5):
            SCALE = scale
            _native_is_autograd(Cls)
    finally:
        SCALE = 1.0
    Cls.step, Cls.step_backward = staticmethod(relu_step), staticmethod(relu_step_backward)
    _native_is_autograd(Cls)


def test_a_number_changed_at_every_call_stops_tracing_after_the_limit(monkeypatch):
    """A global number the step reads, changed at every call (a temperature swept in a loop), traced and compiled the
    class again each time, a library loaded for good each (40 values: 15 s, 40 libraries). Past
    native.RETRACE_LIMIT kernels of the class a new value runs on the python loop (said where backend="native" was
    asked for), with the same numbers; the values traced before keep their kernels."""
    global SCALE
    monkeypatch.setattr(native, "RETRACE_LIMIT", 2)
    Cls = type("Scaled", (Scaled,), {})
    try:
        for scale in (1.0, 0.5):
            SCALE = scale
            _native_is_autograd(Cls)
        libs = len(traced._libs)
        SCALE = 0.25
        P = [
            torch.randn(5, 5, dtype=torch.float64),
            torch.randn(5, dtype=torch.float64),
        ]  # (H = 5 as _run_layer)
        why = native.traced_id(Cls, P, torch.empty(0, dtype=torch.float64))
        assert (
            isinstance(why, str)
            and "Scaled was traced into 2 sets of kernels" in why
            and "python loop" in why
        )
        want = _run_layer(Cls, "autograd", torch.float64)
        for g, w in zip(_run_layer(Cls, None, torch.float64), want, strict=True):  # (the default: quietly)
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        assert len(traced._libs) == libs
        SCALE = 0.5
        assert isinstance(native.traced_id(Cls, P, torch.empty(0, dtype=torch.float64)), int)
    finally:
        SCALE = 1.0


def dot_t_step(xw_t, state, P):
    """An Elman tanh unit written h @ W.T + b: W.T is a permute, not t."""
    (h_prev,) = state
    W_hh, b_hh = P
    h_t = torch.tanh(xw_t + h_prev @ W_hh.T + b_hh)
    return (h_t,), (h_prev,), (h_t,)


def dot_t_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    da = dh_t * (1 - h_t * h_t)
    return da, (da @ P[0],), (da,), ()


def test_a_step_whose_code_was_replaced_in_place_is_traced_again():
    """IPython's %autoreload applies an edited file to the functions already defined by swapping their __code__, the
    step's or a helper's it calls: the same function objects, so the native loop kept running the old kernels (a tanh
    unit edited into a ReLU one: outputs 0.3 off) where the python loop ran the new code."""

    def step(xw_t, state, P):
        (h_prev,) = state
        h_t = torch.tanh(xw_t + linear(h_prev, *P))
        return (h_t,), (h_prev,), (h_t,)

    Cls = type(
        "Edited", (OwnReLU,), dict(step=staticmethod(step), step_backward=staticmethod(dot_t_step_backward))
    )
    _native_is_autograd(Cls)
    step.__code__ = relu_step.__code__
    Cls.step_backward = staticmethod(relu_step_backward)
    _native_is_autograd(Cls)
    Cls.step, Cls.step_backward = staticmethod(_shifted_step), staticmethod(dot_t_step_backward)
    _native_is_autograd(Cls)
    code = _shift.__code__
    _shift.__code__ = (lambda a: a + 0.5).__code__
    try:
        _native_is_autograd(Cls)
    finally:
        _shift.__code__ = code


def _shifted_step(xw_t, state, P):
    (h_prev,) = state
    h_t = torch.tanh(_shift(xw_t + linear(h_prev, *P)))
    return (h_t,), (h_prev,), (h_t,)


def _shift(a):
    return a


class DotT(OwnReLU):
    step = staticmethod(dot_t_step)
    step_backward = staticmethod(dot_t_step_backward)


def test_the_recurrent_product_written_with_w_dot_t_runs_natively():
    """h @ W.T traced as aten.permute, which the tracer took for a reshape that mixes units: the python loop ran it."""
    want = _run_layer(DotT, "autograd", torch.float64)
    got = _run_layer(DotT, "native", torch.float64)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


class Knobs(OwnReLU):
    """A cell whose scale is a class attribute, Knobs.K, read by its step through the class's name."""

    K = 1.0


KNOBS = {"k": 1.0}


def knob_step(xw_t, state, P):
    """tanh(a) · Knobs.K · KNOBS["k"] · _gain(): numbers read through a class, a dict and a helper's global."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P)) * (Knobs.K * KNOBS["k"] * _gain())
    return (y,), (h_prev,), (y,)


def knob_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = Knobs.K * KNOBS["k"] * _gain()
    da = dh_t * k * (1 - (y / k) ** 2)
    return da, (da @ P[0],), (da,), ()


GAIN = 1.0


def _gain():
    return GAIN


Knobs.step, Knobs.step_backward = staticmethod(knob_step), staticmethod(knob_step_backward)


@pytest.mark.parametrize("knob", ["class attribute", "dict entry", "global of a helper"])
def test_a_number_read_through_a_class_a_dict_or_a_helper_is_traced_again(knob):
    """Knobs.K, KNOBS["k"] or a helper's global changed between runs: only the step's own globals and closures
    were in the kernels' key, and the native loop ran the old kernels (outputs 0.7 off, gradients 10) where the
    python loop read the new number."""
    global GAIN
    Cls = type("Knobs", (Knobs,), {})
    try:
        for value in (1.0, 0.5):
            if knob == "class attribute":
                Knobs.K = value
            elif knob == "dict entry":
                KNOBS["k"] = value
            else:
                GAIN = value
            _native_is_autograd(Cls)
    finally:
        Knobs.K, KNOBS["k"], GAIN = 1.0, 1.0, 1.0


CONFIG = types.SimpleNamespace(scale=1.0)


class Settings:
    """A configuration class: its attribute scale, read by a helper that step passes the class to."""

    scale = 1.0


def _scaled(a, cfg):
    """cfg.scale · a: the attribute read by the helper, of whatever step passes it."""
    return cfg.scale * a


def passed_step(xw_t, state, P):
    """tanh(a) · CONFIG.scale · Settings.scale, each read by _scaled of the object step passes it."""
    (h_prev,) = state
    y = _scaled(_scaled(torch.tanh(xw_t + linear(h_prev, *P)), CONFIG), Settings)
    return (y,), (h_prev,), (y,)


def passed_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    s = _scaled(_scaled(1.0, CONFIG), Settings)
    da = dh_t * s * (1 - (y / s) ** 2)
    return da, (da @ P[0],), (da,), ()


@pytest.mark.parametrize("knob", ["namespace", "class"])
def test_a_number_a_helper_reads_of_an_object_step_passes_it_is_traced_again(knob):
    """_scaled(a, CONFIG) with def _scaled(a, cfg): return cfg.scale * a: the key read the attributes of CONFIG that
    step's own code names, and scale is named by the helper only; CONFIG.scale changed between runs ran the old
    kernels (outputs 0.75 off) where the python loop read the new."""
    fns = {"step": staticmethod(passed_step), "step_backward": staticmethod(passed_step_backward)}
    Cls = type("Passed", (OwnReLU,), fns)
    holder = CONFIG if knob == "namespace" else Settings
    try:
        for value in (1.0, 0.5):
            holder.scale = value
            _native_is_autograd(Cls)
    finally:
        CONFIG.scale = Settings.scale = 1.0


class Grows:
    """A configuration whose __getattr__ makes a new, empty one for any name it lacks (as auto-vivifying configs do),
    counting its reads: past 100,000 the walk is reading what it made itself."""

    reads = 0

    def __init__(self, **numbers):
        self.__dict__.update(numbers)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        Grows.reads += 1
        if Grows.reads > 100_000:
            raise RuntimeError("the key's walk read 100,000 attributes a __getattr__ made")
        return Grows()


GROWS = Grows(scale=1.0)


def test_a_config_whose_getattr_makes_attributes_is_keyed_in_a_bounded_walk():
    """GROWS.scale read by step, GROWS a config whose __getattr__ makes a child for every name it lacks: the key read
    every name any function reached names on each child, DEPTH levels down, 10 million objects and 48 s before
    a first step; the walk stops at 4096 as a container's does, and GROWS.scale is keyed."""

    def step(xw_t, state, P):
        (h_prev,) = state
        return (torch.tanh(xw_t + linear(h_prev, *P)) * GROWS.scale,), (h_prev,), (h_prev,)

    fns = {"step": staticmethod(step), "step_backward": staticmethod(relu_step_backward)}
    Grows.reads = 0
    key = traced.baked(type("Grown", (OwnReLU,), fns))
    assert ("scale", 1.0) in key[2], key[2]


class Dataset:
    """A user's object of a number step reads (scale) and a property that raises until it is loaded."""

    scale = 1.0

    @property
    def size(self):
        raise RuntimeError("Dataset.size: call load() first")


DATASET = Dataset()


def test_a_property_that_raises_of_a_name_a_helper_names_is_no_error_of_the_key():
    """step reads DATASET.scale and calls a helper whose a.size(1) names size: the key read DATASET.size too, for
    every name any function reached, and the property's RuntimeError failed the native forward of a cell that reads
    no such thing (f164ec3 read only step's own names). A property that raises is no number of the key."""

    def helper(a):
        return a * a.size(1) / a.size(1)

    def step(xw_t, state, P):
        (h_prev,) = state
        return (helper(torch.tanh(xw_t + linear(h_prev, *P))) * DATASET.scale,), (h_prev,), (h_prev,)

    fns = {"step": staticmethod(step), "step_backward": staticmethod(relu_step_backward)}
    key = traced.baked(type("Loaded", (OwnReLU,), fns))
    assert ("scale", 1.0) in key[2], key[2]


def test_a_recurrent_matrix_of_the_wrong_shape_fails_as_on_the_python_loop():
    """W_hh given transposed, (H, 3H): the trace's sample step, at H = its 3H columns, failed first with torch's
    'The expanded size of the tensor (4) must match ...' about shapes the user never gave; now the python loop
    runs it and says what is wrong, as with backend="python"."""
    torch.manual_seed(0)
    W, b = CIFG(3, 4).double().rec_params()
    xw, state = torch.randn(5, 2, 12, dtype=torch.float64), (torch.zeros(2, 4, dtype=torch.float64),) * 2
    errors = []
    for backend in ("python", "native"):
        with pytest.raises(RuntimeError) as e:
            run(CIFG, xw, state, (W.t(), b), backend=backend)
        errors.append(str(e.value))
    assert errors[1] == errors[0], errors


def test_a_state_of_another_width_than_the_recurrent_matrix_reads_fails_as_on_the_python_loop():
    """A c_0 6 wide beside an h_0 and a W_hh of 4 (the xw of 4·3 columns right): the native loop reads every state H
    wide, so the python loop runs it and says what is wrong, as with backend="python" (native_fits reads the
    states' widths; run natively it raised nothing, c_0 read as 4 wide)."""
    torch.manual_seed(0)
    W, b = CIFG(3, 4).double().rec_params()
    xw = torch.randn(5, 2, 12, dtype=torch.float64)
    state = (torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 6, dtype=torch.float64))
    errors = []
    for backend in ("python", "native"):
        with pytest.raises(RuntimeError) as e:
            run(CIFG, xw, state, (W, b), backend=backend)
        errors.append(str(e.value))
    assert errors[1] == errors[0], errors


NP_SCALE = np.float64(1.0)


def np_scaled_step(xw_t, state, P):
    """tanh(a) · NP_SCALE, a numpy number (np.sqrt(2.0) is one)."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P)) * NP_SCALE
    return (y,), (h_prev,), (y,)


def np_scaled_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    da = dh_t * NP_SCALE * (1 - (y / NP_SCALE) ** 2)
    return da, (da @ P[0],), (da,), ()


@pytest.mark.parametrize("kind", [np.float64, np.float32])
def test_a_global_numpy_number_is_traced_again(kind):
    """A numpy number is no int, float or bool: changed between runs, the native loop ran the kernels of the old one
    (outputs 0.7 off) where the python loop read the new."""
    global NP_SCALE
    fns = {"step": staticmethod(np_scaled_step), "step_backward": staticmethod(np_scaled_step_backward)}
    Cls = type("NpScaled", (OwnReLU,), fns)
    try:
        for scale in (1.0, 0.5):
            NP_SCALE = kind(scale)
            _native_is_autograd(Cls)
    finally:
        NP_SCALE = np.float64(1.0)


class Scaler:
    """step and step_backward as methods of an object holding the scale k."""

    def __init__(self, k):
        self.k = k

    def step(self, xw_t, state, P):
        (h_prev,) = state
        y = torch.tanh(xw_t + linear(h_prev, *P)) * self.k
        return (y,), (h_prev,), (y,)

    def step_backward(self, dstate, cache, P):
        (dh_t,), (y,) = dstate, cache
        da = dh_t * self.k * (1 - (y / self.k) ** 2)
        return da, (da @ P[0],), (da,), ()


def test_a_number_of_the_object_a_bound_step_belongs_to_is_traced_again():
    """step = staticmethod(scaler.step): scaler.k changed between runs, the native loop ran the old kernels
    (outputs 0.7 off; the key held the bound method, the same object) where the python loop read the new k."""
    scaler = Scaler(1.0)
    fns = {"step": staticmethod(scaler.step), "step_backward": staticmethod(scaler.step_backward)}
    Cls = type("Bound", (OwnReLU,), fns)
    for k in (1.0, 0.5):
        scaler.k = k
        _native_is_autograd(Cls)


DEEP = 1.0


def _gain4():
    return DEEP


def _gain3():
    return _gain4()


def _gain2():
    return _gain3()


def _gain1():
    return _gain2()


def deep_step(xw_t, state, P, k=1.0):
    """tanh(a) · k · DEEP, k a default argument and DEEP a global read four helpers down."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P)) * (k * _gain1())
    return (y,), (h_prev,), (y,)


def deep_step_backward(dstate, cache, P, k=1.0):
    (dh_t,), (y,) = dstate, cache
    s = k * _gain1()
    da = dh_t * s * (1 - (y / s) ** 2)
    return da, (da @ P[0],), (da,), ()


@pytest.mark.parametrize("knob", ["global four helpers down", "default argument"])
def test_a_number_read_deep_in_helpers_or_as_a_default_is_traced_again(knob):
    """The key followed three calls from step: a global read by a helper's helper's helper's helper, changed between
    runs, ran the old kernels (outputs 10 off) where the python loop read the new; so did a default argument
    changed in place (__defaults__)."""
    global DEEP
    fns = {"step": staticmethod(deep_step), "step_backward": staticmethod(deep_step_backward)}
    Cls = type("Deep", (OwnReLU,), fns)
    try:
        for value in (1.0, 0.5):
            if knob == "default argument":
                deep_step.__defaults__ = deep_step_backward.__defaults__ = (value,)
            else:
                DEEP = value
            _native_is_autograd(Cls)
    finally:
        DEEP, deep_step.__defaults__, deep_step_backward.__defaults__ = 1.0, (1.0,), (1.0,)


class Holder:
    """A plain object holding k."""

    def __init__(self, k):
        self.k = k


def _nested():
    return {"cell": {"k": 1.0}, "obj": Holder(1.0), "rows": [[1.0]], "array": np.ones(3), "held": Holder(1.0)}


NESTED = _nested()


def _set(where, value):
    if where == "dict in a dict":
        NESTED["cell"]["k"] = value
    elif where == "object in a dict":
        NESTED["obj"].k = value
    elif where == "list in a list":
        NESTED["rows"][0][0] = value
    elif where == "numpy array":
        NESTED["array"][1] = value
    else:
        NESTED["held"].k = value


def _gain_cell(name, gain):
    """A cell of one's own h_t = tanh(xw_t + W_hh h_prev + b) · k, k = gain() read by its step and its backward (a
    number the kernels bake in, wherever gain finds it)."""

    def step(xw_t, state, P):
        (h_prev,) = state
        y = torch.tanh(xw_t + linear(h_prev, *P)) * gain()
        return (y,), (h_prev,), (y,)

    def step_backward(dstate, cache, P):
        (dh_t,), (y,) = dstate, cache
        k = gain()
        da = dh_t * k * (1 - (y / k) ** 2)
        return da, (da @ P[0],), (da,), ()

    return type(name, (OwnReLU,), {"step": staticmethod(step), "step_backward": staticmethod(step_backward)})


@pytest.mark.parametrize(
    "where", ["dict in a dict", "object in a dict", "list in a list", "numpy array", "getattr"]
)
def test_a_number_in_a_container_in_a_container_is_traced_again(where):
    """NESTED["cell"]["k"], NESTED["obj"].k, NESTED["rows"][0][0], float(NESTED["array"][1]) or getattr(obj, "k")
    changed between runs (nothing else in NESTED): only a container's own numbers were in the key (no array's, no
    attribute named by a string), and the native loop ran the old kernels (outputs 10 off)."""
    get = {
        "dict in a dict": lambda: NESTED["cell"]["k"],
        "object in a dict": lambda: NESTED["obj"].k,
        "list in a list": lambda: NESTED["rows"][0][0],
        "numpy array": lambda: float(NESTED["array"][1]),
        "getattr": lambda: getattr(NESTED["held"], "k"),  # noqa: B009
    }[where]

    Cls = _gain_cell("Nested", get)
    try:
        for value in (1.0, 0.5):
            _set(where, value)
            _native_is_autograd(Cls)
    finally:
        NESTED.update(_nested())


def test_a_tensor_the_step_holds_in_a_closure_is_said_so():
    """A tensor read from a closure (or a global) is no argument the trace can follow: the python loop runs it (and
    sees its later changes), saying why; the words were fake mode's 'Please convert all Tensors to FakeTensors
    first ...' with a guess of 'control flow on a tensor's value?'."""
    k = torch.tensor(0.7, dtype=torch.float64)

    def step(xw_t, state, P):
        (h_prev,) = state
        y = torch.tanh(xw_t + linear(h_prev, *P)) * k
        return (y,), (h_prev,), (y,)

    def step_backward(dstate, cache, P):
        (dh_t,), (y,) = dstate, cache
        da = dh_t * k * (1 - (y / k) ** 2)
        return da, (da @ P[0],), (da,), ()

    Cls = type("Held", (OwnReLU,), {"step": staticmethod(step), "step_backward": staticmethod(step_backward)})
    layer = Recurrent(Cls, 3, 4, backend="native").double()
    with pytest.warns(RuntimeWarning, match=r"Held.step uses a tensor that is none of its arguments"):
        layer(torch.randn(2, 3, 3, dtype=torch.float64))
    k.fill_(0.3)
    want = _run_layer(Cls, "autograd", torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = _run_layer(Cls, None, torch.float64)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_a_tensor_the_step_holds_changed_at_every_call_is_not_traced_again(monkeypatch):
    """A step using a closure's tensor k runs on the python loop whatever k holds; keyed by k's bytes, a k changed
    at every call (an annealed temperature) was traced again at every forward, 11 ms where the call takes 1, and
    each value kept a cache entry: as many entries as calls."""
    k = torch.tensor(0.7, dtype=torch.float64)

    def step(xw_t, state, P):
        (h_prev,) = state
        return (torch.tanh(xw_t + linear(h_prev, *P)) * k,), (h_prev,), (h_prev,)

    Cls = type("Annealed", (OwnReLU,), {"step": staticmethod(step)})
    traces = []
    real = traced._trace_and_compile
    monkeypatch.setattr(traced, "_trace_and_compile", lambda *a: traces.append(1) or real(*a))
    layer = Recurrent(Cls, 3, 4).double()
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    outs = []
    for value in (0.5, 0.4, 0.3):
        k.fill_(value)
        outs.append(layer(x)[0])
        layer.backend = "python"
        torch.testing.assert_close(outs[-1], layer(x)[0], rtol=0, atol=0)
        layer.backend = None
    assert len(traces) == 1 and len(native._traced[Cls]) == 1, (traces, native._traced[Cls])


def test_a_tensor_both_step_functions_read_is_keyed_once(monkeypatch):
    """The key is taken twice a forward: a tensor step and step_backward both read was read out twice each time
    (7 us a forward of a tensor of one number); once, through numpy (2 us where torch's view took 4)."""
    k = torch.tensor(0.7)

    def step(xw_t, state, P):
        (h_prev,) = state
        return (torch.tanh(xw_t + linear(h_prev, *P)) * float(k),), (h_prev,), (h_prev,)

    def step_backward(dstate, cache, P):
        return relu_step_backward(dstate, cache, P) if float(k) else None

    keyed = []
    real = traced._tensor_key
    monkeypatch.setattr(traced, "_tensor_key", lambda v: keyed.append(v) or real(v))
    fns = {"step": staticmethod(step), "step_backward": staticmethod(step_backward)}
    key = traced.baked(type("OnceKeyed", (OwnReLU,), fns))
    assert len(keyed) == 1 and keyed[0] is k, keyed
    bf16 = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)  # (numpy has no bfloat16)
    assert real(bf16) == ("torch.bfloat16", (2,), bf16.view(torch.int16).numpy().tobytes())
    assert real(torch.arange(6.0).reshape(2, 3).T)[2] == torch.arange(6.0).reshape(2, 3).T.numpy().tobytes()
    assert traced.baked(type("OnceKeyed", (OwnReLU,), fns))[-1] == key[-1]


def relu_leaky_step(xw_t, state, P):
    """OwnLeaky's step with ReLU for tanh: the same parameters and shapes, other math (other kernels)."""
    (h_prev,) = state
    W_hh, b_hh, alpha = P
    hc = torch.relu(xw_t + linear(h_prev, W_hh, b_hh))
    return (h_prev + alpha * (hc - h_prev),), (h_prev,), (hc, h_prev, alpha)


def relu_leaky_step_backward(dstate, cache, P):
    (dh_t,), (hc, h_prev, alpha) = dstate, cache
    da = dh_t * alpha * (hc > 0)
    return da, (dh_t * (1 - alpha) + da @ P[0],), (da,), ((dh_t * (hc - h_prev)).sum(0),)


class OwnReluLeaky(OwnLeaky):
    step = staticmethod(relu_leaky_step)
    step_backward = staticmethod(relu_leaky_step_backward)


def test_two_cells_of_ones_own_of_one_shape_each_time_their_split():
    """Past L2 the forward times rows against units once per cell and shape and keeps the choice (in the plans
    file too). Every cell of one's own had one key there (its id's class, traced: 10), so the second of two with
    the same shapes took the first one's choice; the key now holds a fingerprint of its kernels' source, the same
    in every process (where the cell id is the order of tracing)."""
    ext = native.load()
    H = 768
    if ext is None or torch.get_num_threads() < 2:
        pytest.skip("no native extension, or one thread: nothing to split")
    if np.prod([H, H, 4]) <= __import__("ctypes").CDLL(None).sysconf(191):
        pytest.skip("the weights fit in this CPU's L2: rows split the loop without a timing")
    if (
        os.environ.get("RNNKIT_GEMM", "auto") != "auto"
        or os.environ.get("RNNKIT_ROW_THREADS", "auto") != "auto"
    ):
        pytest.skip("RNNKIT_GEMM or RNNKIT_ROW_THREADS set: the split is not timed")
    keys = set()
    for Cls in (OwnLeaky, OwnReluLeaky):
        torch.manual_seed(0)
        layer = Recurrent(Cls, 8, H, backend="native")
        with torch.no_grad():
            layer(torch.randn(32, 8, 8))
        keys |= {tuple(k) for k, _ in ext.gemm_plans() if k[0] == 10 and k[8] == -3 and k[2] == H}
    assert len(keys) == 2 and all(k[5] != 0 for k in keys), keys


def noisy_step(xw_t, state, P):
    """An Elman step with noise of its own: h_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh + 0.1 ε), ε ~ N(0, 1)."""
    (h_prev,) = state
    W_hh, b_hh = P
    h = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh) + 0.1 * torch.randn_like(xw_t))
    return (h,), (h_prev,), (h,)


def noisy_step_backward(dstate, cache, P):
    (dh,), (h,) = dstate, cache
    da = dh * (1 - h * h)
    return da, (da @ P[0],), (da,), ()


class Noisy(Cell):
    REC_PARAMS = ("W_hh", "b_hh")
    step = staticmethod(noisy_step)
    step_backward = staticmethod(noisy_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(
            self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,) if bias else None)
        )
        self.reset_parameters()


def test_tracing_a_cell_leaves_the_global_generator_as_it_was():
    """The trace's sample step ran the cell's step once, drawing from the global generator where the step draws
    (noise of its own): the first run of a seeded model on the default backend (which then runs the python loop,
    the draw being no op the kernels fuse) gave other numbers than the python backend with the same seed."""
    torch.manual_seed(0)
    layer, x = Recurrent(Noisy, 3, 4), torch.randn(2, 5, 3)
    outs = []
    for backend in (None, "python"):
        layer.backend = backend
        torch.manual_seed(1)
        outs.append(layer(x)[0])
    assert torch.equal(*outs)


def test_a_cell_class_made_per_call_goes_with_its_last_cell():
    """The caches of the native loop (native._traced, _traced_cells, traced._traced) and of the layer (same_math's,
    _affine_projects') kept every cell class they saw, with all it reads: a factory making a class per call
    (class OwnLeaky(Cell) inside a function) leaked one per call, with its closure. They hold classes weakly."""
    import gc
    import weakref

    def make(alpha):
        class Made(OwnLeaky):
            @staticmethod
            def step(xw_t, state, P):
                return leaky_step(xw_t, state, (*P[:2], P[2] * alpha))

            @staticmethod
            def step_backward(dstate, cache, P):
                return leaky_step_backward(dstate, cache, (*P[:2], P[2] * alpha))

        return Made

    made = []
    for alpha in (0.5, 0.25):
        Made = make(alpha)
        layer = Recurrent(Made, 3, 4, backend="native")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # natively: no warning of the python loop
            layer(torch.randn(2, 5, 3))[0].sum().backward()
        assert isinstance(native.traced_id(Made, layer.cells[0].rec_params(), torch.empty(0)), int)
        made.append(weakref.ref(Made))
        del Made, layer
    gc.collect()
    assert [m() for m in made] == [None, None]


def test_a_cell_class_whose_step_reads_the_class_goes_with_its_last_cell():
    """A step reading its own class (Made.GAIN, Made through the factory's closure) put the class itself and the
    functions closing over it in the key of the weak caches' entry for that class (native._traced, traced._traced):
    the entry held its own key alive, and a factory leaked every class it made, with its traced kernels' entries.
    The key holds the functions and classes it reads weakly."""
    import gc
    import weakref

    def make(gain):
        class Made(OwnLeaky):
            GAIN = gain

            @staticmethod
            def step(xw_t, state, P):
                return leaky_step(xw_t, state, (*P[:2], P[2] * Made.GAIN))

            @staticmethod
            def step_backward(dstate, cache, P):
                return leaky_step_backward(dstate, cache, (*P[:2], P[2] * Made.GAIN))

        return Made

    made, outs = [], []
    for gain in (0.5, 0.25):
        Made = make(gain)
        torch.manual_seed(0)
        layer = Recurrent(Made, 3, 4, backend="native")
        x = torch.randn(2, 5, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # natively: no warning of the python loop
            outs.append(layer(x)[0].detach())
        layer.backend = "python"  # each class's own GAIN, its kernels not another's:
        torch.testing.assert_close(outs[-1], layer(x)[0].detach())
        made.append(weakref.ref(Made))
        del Made, layer
    gc.collect()
    assert [m() for m in made] == [None, None]


def test_a_cell_class_calling_super_in_project_input_goes_with_its_last_cell():
    """The layer's _affine_projects kept the class's project_input and input_affine with its answer, in an entry
    keyed weakly by the class: one calling super() holds the class in its __class__ cell, and the entry kept its own
    key alive, a factory leaking every class it made. The functions are held weakly."""
    import gc
    import weakref

    def make():
        class Made(OwnLeaky):
            def project_input(self, x):
                return super().project_input(x) * 2

        return Made

    made = []
    for _ in range(2):
        Made = make()
        layer = Recurrent(Made, 3, 4)
        x = torch.randn(2, 5, 3)
        with torch.no_grad():
            out = layer(x)[0]
            layer.backend = "autograd"  # (the cell's own projection, times 2, on every backend)
            torch.testing.assert_close(out, layer(x)[0])
        made.append(weakref.ref(Made))
        del Made, layer
    gc.collect()
    assert [m() for m in made] == [None, None]


GAINS = np.ones(300)
TABLE = [1.0] * 300


def big_step(xw_t, state, P):
    """tanh(a) · GAINS[0] · TABLE[0]: numbers read from an array and a list of more than 256 entries."""
    (h_prev,) = state
    k = float(GAINS[0]) * TABLE[0]
    y = torch.tanh(xw_t + linear(h_prev, *P)) * k
    return (y,), (h_prev,), (y,)


def big_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = float(GAINS[0]) * TABLE[0]
    da = dh_t * k * (1 - (y / k) ** 2)
    return da, (da @ P[0],), (da,), ()


def test_numbers_of_a_big_array_or_list_are_traced_again():
    """The key of the kernels left out an array or a list of more than 256 entries: GAINS[0] or TABLE[0] changed
    between runs and the native loop ran the old kernels (outputs 0.55 off) where the python loop read the new."""
    fns = {"step": staticmethod(big_step), "step_backward": staticmethod(big_step_backward)}
    Cls = type("Big", (OwnReLU,), fns)
    try:
        _native_is_autograd(Cls)
        GAINS[0] = 0.5
        _native_is_autograd(Cls)
        TABLE[0] = 2.0
        _native_is_autograd(Cls)
    finally:
        GAINS[0], TABLE[0] = 1.0, 1.0


TABLE_OF_MANY = np.ones(10**6)
LIST_OF_MANY = [1.0] * 70_000


def many_step(xw_t, state, P):
    """tanh(a) · TABLE_OF_MANY[3] · LIST_OF_MANY[3]: numbers read from an array and a list of many entries."""
    (h_prev,) = state
    k = float(TABLE_OF_MANY[3]) * LIST_OF_MANY[3]
    y = torch.tanh(xw_t + linear(h_prev, *P)) * k
    return (y,), (h_prev,), (y,)


def many_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = float(TABLE_OF_MANY[3]) * LIST_OF_MANY[3]
    da = dh_t * k * (1 - (y / k) ** 2)
    return da, (da @ P[0],), (da,), ()


def test_numbers_of_a_long_array_or_list_are_keyed_again_only_where_they_changed(monkeypatch):
    """The kernels' key hashed every array a step reads at each forward (9 ms for float(TABLE[3]) of 10**6 numbers,
    where the call takes 17 us), and left out a list of more than 65,536 entries: LIST[3] changed and the native
    loop ran the old kernels (0.6 off). An array or list is keyed again where it changed since the last call, a
    kept copy compared; a change to either is seen."""
    import hashlib

    fns = {"step": staticmethod(many_step), "step_backward": staticmethod(many_step_backward)}
    Cls = type("Many", (OwnReLU,), fns)
    digests = []
    blake2b = hashlib.blake2b
    monkeypatch.setattr(hashlib, "blake2b", lambda *a, **k: digests.append(1) or blake2b(*a, **k))
    try:
        _native_is_autograd(Cls)
        digests.clear()
        with torch.no_grad():
            for _ in range(3):
                Recurrent(Cls, 3, 5, backend="native")(torch.randn(2, 4, 3))
        assert digests == []  # unchanged: no digest of 10**6 numbers taken again
        TABLE_OF_MANY[3] = 0.5
        _native_is_autograd(Cls)
        LIST_OF_MANY[3] = 2.0
        _native_is_autograd(Cls)
    finally:
        TABLE_OF_MANY[3], LIST_OF_MANY[3] = 1.0, 1.0


SCALE_TENSOR = torch.tensor(1.0)
GAIN_TENSOR = torch.ones(300)


def tensor_scaled_step(xw_t, state, P):
    """tanh(a) · float(SCALE_TENSOR) · GAIN_TENSOR.tolist()[3]: a tensor's numbers read as Python numbers."""
    (h_prev,) = state
    k = float(SCALE_TENSOR) * GAIN_TENSOR.tolist()[3]
    y = torch.tanh(xw_t + linear(h_prev, *P)) * k
    return (y,), (h_prev,), (y,)


def tensor_scaled_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = float(SCALE_TENSOR) * GAIN_TENSOR.tolist()[3]
    da = dh_t * k * (1 - (y / k) ** 2)
    return da, (da @ P[0],), (da,), ()


def test_a_tensor_read_as_a_number_is_traced_again():
    """float(SCALE) of a 0-dim tensor (or .item(), or T.tolist()) is a number the trace bakes in, and the key left
    tensors out: SCALE.fill_(2.0), or another tensor bound to SCALE, and the native loop ran the old kernels
    (outputs 1.9 off) where the python loop read the new, in silence. A tensor is keyed by its numbers."""
    global SCALE_TENSOR
    fns = {
        "step": staticmethod(tensor_scaled_step),
        "step_backward": staticmethod(tensor_scaled_step_backward),
    }
    Cls = type("TensorScaled", (OwnReLU,), fns)
    try:
        _native_is_autograd(Cls)
        SCALE_TENSOR.fill_(2.0)  # in place
        _native_is_autograd(Cls)
        SCALE_TENSOR = torch.tensor(0.5)  # another tensor
        _native_is_autograd(Cls)
        GAIN_TENSOR[3] = 3.0  # one of many
        _native_is_autograd(Cls)
    finally:
        SCALE_TENSOR = torch.tensor(1.0)
        GAIN_TENSOR[3] = 1.0


INDEXED_TENSOR = torch.ones(10**4)


def indexed_step(xw_t, state, P):
    """tanh(a) · INDEXED_TENSOR[3]: a global's tensor in the step's ops (the python loop runs it)."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P)) * INDEXED_TENSOR[3]
    return (y,), (h_prev,), (y,)


def indexed_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    k = INDEXED_TENSOR[3]
    return dh_t * k * (1 - (y / k) ** 2), (dh_t @ P[0],), (dh_t,), ()


@pytest.mark.parametrize("T", [4, 12])
def test_a_forward_keys_each_big_array_or_tensor_once(monkeypatch, T):
    """A forward keyed what a cell of one's own reads twice (resolve_backend's look, then the loop's), and an array both
    functions read twice each time: TABLE_OF_MANY (10**6 numbers) was compared 4 times a forward (3.5 ms where the
    forward takes 0.7), a tensor twice, also where the python loop runs the cell; each is compared once."""
    real, seen = traced._big_key, []
    monkeypatch.setattr(traced, "_big_key", lambda v, key: seen.append(id(v)) or real(v, key))
    for step, backward in [(many_step, many_step_backward), (tensor_scaled_step, tensor_scaled_step_backward),
                           (indexed_step, indexed_step_backward)]:  # fmt: skip
        Cls = type("Keyed", (OwnReLU,), {"step": staticmethod(step), "step_backward": staticmethod(backward)})
        layer, x = Recurrent(Cls, 3, 5), torch.randn(2, T, 3)
        layer(x)
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                seen.clear()
                layer(x)
                assert seen and len(seen) == len(set(seen)), step.__name__


def widened_step(xw_t, state, P):
    """tanh(a) computed as (y.double() + 1e8) - 1e8 cast back: float64 inside the step of a float32 run."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P))
    return (((y.double() + 1e8) - 1e8).to(y.dtype),), (h_prev,), (y,)


def widened_step_backward(dstate, cache, P):
    (dh_t,), (y,) = dstate, cache
    da = dh_t * (1 - y * y)
    return da, (da @ P[0],), (da,), ()


class Widened(OwnReLU):
    step = staticmethod(widened_step)
    step_backward = staticmethod(widened_step_backward)


def test_float64_inside_the_step_of_a_float32_run_is_not_run_in_float():
    """The float kernels computed a float64 value of a float32 run (x.double()) in float: (y.double() + 1e8) - 1e8
    read 0 where the python loop gives y, in silence. Such a step runs on the python loop, said where
    backend="native" was asked for; float64 runs stay native."""
    want = _run_layer(Widened, "python", torch.float32, lengths=False)
    got = _run_layer(Widened, None, torch.float32, lengths=False)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    layer = Recurrent(Widened, 3, 4, backend="native")
    with pytest.warns(RuntimeWarning, match=r"Widened.step computes in torch.float64 .* in a float32 run"):
        layer(torch.randn(2, 3, 3))
    _native_is_autograd(Widened)


SHIFT, TWICE = 1.0, None  # options the step reads where set (None: not)


def optional_shift_step(xw_t, state, P):
    """tanh(a) + SHIFT where SHIFT is set, + 2 TWICE where TWICE is: no derivative of either in step_backward."""
    (h_prev,) = state
    hc = torch.tanh(xw_t + linear(h_prev, *P))
    y = hc if SHIFT is None else hc + SHIFT
    y = y if TWICE is None else y + 2 * TWICE
    return (y,), (h_prev,), (hc,)


def optional_shift_step_backward(dstate, cache, P):
    (dh_t,), (hc,) = dstate, cache
    da = dh_t * (1 - hc * hc)
    return da, (da @ P[0],), (da,), ()


def test_an_option_set_to_none_or_not_is_traced_again():
    """The key held the numbers a step reads but not None: SHIFT = 1.0 and TWICE = None, then SHIFT = None and
    TWICE = 1.0, were one key (1.0), and the native loop ran the old kernels (outputs 1.6 off) in silence."""
    global SHIFT, TWICE
    fns = {
        "step": staticmethod(optional_shift_step),
        "step_backward": staticmethod(optional_shift_step_backward),
    }
    Cls = type("OptionalShift", (OwnReLU,), fns)
    try:
        _native_is_autograd(Cls)
        SHIFT, TWICE = None, 1.0
        _native_is_autograd(Cls)
    finally:
        SHIFT, TWICE = 1.0, None


def kept_gain_step(xw_t, state, P):
    """tanh(a) · g, g a 0-dim parameter the step keeps in its cache as itself."""
    (h_prev,) = state
    W_hh, b_hh, g = P
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (hc * g,), (h_prev,), (hc, g)


def kept_gain_step_backward(dstate, cache, P):
    (dh_t,), (hc, g) = dstate, cache
    da = dh_t * g * (1 - hc * hc)
    return da, (da @ P[0],), (da,), ((dh_t * hc).sum(),)


class KeptGain(OwnReLU):
    REC_PARAMS = ("W_hh", "b_hh", "g")
    EXTRAS = ("g",)
    step = staticmethod(kept_gain_step)
    step_backward = staticmethod(kept_gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.g = nn.Parameter(torch.tensor(0.8))


def test_a_scalar_parameter_kept_in_the_cache_runs_natively():
    """A 0-dim parameter kept in the cache as itself was refused as 'a 0-dim tensor in cache[1], which the native
    loop can't keep per row' (the python loop ran it), where the kernels read a parameter kept so from P."""
    _native_is_autograd(KeptGain)
    ids = list(native._traced.get(KeptGain, {}).values())
    assert ids and all(isinstance(v, int) for v in ids), ids


DRAW = {"random": lambda: random.random(), "numpy": lambda: float(np.random.rand())}


def stochastic_step(xw_t, state, P, draw=DRAW["random"]):
    """h_t = tanh(a), or h_{t-1} kept with probability 0.1 (a step skipped at random, drawn in Python)."""
    (h_prev,) = state
    hc = torch.tanh(xw_t + linear(h_prev, *P))
    return (hc if draw() < 0.9 else h_prev + 0 * hc,), (h_prev,), (hc,)


@pytest.mark.parametrize("generator", sorted(DRAW))
def test_a_step_drawing_python_random_numbers_runs_on_the_python_loop(generator):
    """random.random() < 0.9 in step took one branch in the sample step, and the native loop took it at every step
    of every run (two seeds, one output) where the python loop draws at each; a drawn number was said as 'reads the
    batch size'. A step that draws from Python's or numpy's generator runs on the python loop, said where
    backend="native" was asked for, and the trace leaves the generators as they were."""

    def step(xw_t, state, P):
        return stochastic_step(xw_t, state, P, DRAW[generator])

    fns = {"step": staticmethod(step), "step_backward": staticmethod(relu_step_backward)}
    Cls = type(f"Stochastic_{generator}", (OwnReLU,), fns)  # (a name of its own: the line is said once)
    torch.manual_seed(0)
    layers = {be: Recurrent(Cls, 3, 4, backend=be).double() for be in ("python", None)}
    layers[None].load_state_dict(layers["python"].state_dict())
    x = torch.randn(2, 40, 3, dtype=torch.float64)
    with torch.no_grad():
        outs = {}
        for be, layer in layers.items():
            random.seed(0)
            np.random.seed(0)
            outs[be] = layer(x)[0]
    torch.testing.assert_close(outs[None], outs["python"], rtol=0, atol=0)
    with pytest.warns(
        RuntimeWarning, match=r"Stochastic_\w+'s step functions draw from Python's or numpy's random"
    ):
        Recurrent(Cls, 3, 5, backend="native")(torch.randn(2, 3, 3))


def _draws_beside(monkeypatch, where, name):
    """A new cell of one's own (a subclass of OwnReLU called `name`) traced, seeded, checked against autograd, while
    another thread draws from Python's, numpy's and torch's generators at each call of traced.<where>; the class
    and those draws."""
    import threading

    real, drawn = getattr(traced, where), []

    def wrapped(*args):
        t = threading.Thread(target=lambda: drawn.append((random.random(), np.random.rand(), torch.rand(()))))
        t.start()
        t.join()
        return real(*args)

    monkeypatch.setattr(traced, where, wrapped)
    Cls = type(name, (OwnReLU,), {})
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    _native_is_autograd(Cls)
    return Cls, drawn


def test_draws_of_other_threads_while_the_kernels_compile_stay_theirs(monkeypatch):
    """The first trace of a cell of one's own watched Python's, numpy's and torch's generators until its kernels were
    compiled and loaded (0.4-0.6 s without the GIL): another thread's draws meanwhile (a data thread's
    random.shuffle) were taken for the step's, the cell refused for good ('draws from Python's or numpy's random
    generator', the python loop), and that thread's generators set back, its numbers drawn again. Only the steps
    run in the trace are watched."""
    Cls, drawn = _draws_beside(monkeypatch, "_compiled", "DrawnBeside")
    assert drawn and all(isinstance(v, int) for v in native._traced[Cls].values())  # traced, not refused
    # the other thread's draws stand: the next draws here are new numbers, not those again
    assert (random.random(), np.random.rand()) != drawn[0][:2] and torch.rand(()) != drawn[0][2]


def test_draws_of_other_threads_while_the_steps_are_traced_stay_theirs(monkeypatch):
    """The traces (make_fx, on fake tensors: 0.05-0.08 s for a step and its backward at 3 batch sizes) ran inside
    the watch of the generators: a data thread's draws meanwhile got the cell refused for good (4 of 6 runs drawing
    every 0.1 s) and were set back. Only the steps' calls on real tensors are watched."""
    Cls, drawn = _draws_beside(monkeypatch, "_trace", "DrawnWhileTraced")
    assert drawn and all(isinstance(v, int) for v in native._traced[Cls].values())  # traced, not refused
    assert (random.random(), np.random.rand()) != drawn[-1][:2] and torch.rand(()) != drawn[-1][2]


def test_draws_of_other_threads_while_the_first_make_fx_imports_torch_dynamo_stay_theirs():
    """A process's first make_fx imports torch._inductor and torch._dynamo (about 2 s), which ran inside the watch
    of the generators: a data thread's draws meanwhile got the cell refused for good ('draws from Python's or numpy's
    random generator', the python loop) and were set back. The imports are made before the watch."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, random, sys, threading, torch\nfrom rnnkit.cells import CELLS\n"
        "from rnnkit.cells._base import linear\nfrom rnnkit.engine import native\ndrawn = []\n"
        "class Draw(importlib.abc.MetaPathFinder):\n    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch._inductor' and not drawn:\n"
        "            t = threading.Thread(target=lambda: drawn.append(random.random()))\n"
        "            t.start()\n            t.join()\n"
        "sys.meta_path.insert(0, Draw())\n"
        "def step(xw_t, state, P):\n    y = torch.tanh(xw_t + linear(state[0], *P)) * 1.5\n"
        "    return (y,), (state[0],), (y,)\n"
        "def step_backward(dstate, cache, P):\n    da = dstate[0] * 1.5 * (1 - (cache[0] / 1.5) ** 2)\n"
        "    return da, (da @ P[0],), (da,), ()\n"
        "fns = {'step': staticmethod(step), 'step_backward': staticmethod(step_backward)}\n"
        "Cls = type('Scaled', (CELLS['rnn_tanh'],), fns)\nrandom.seed(0)\n"
        "print(native.unsupported(Cls, torch.zeros(5, 2, 8), [torch.randn(8, 8), torch.zeros(8)]), len(drawn),\n"
        "      random.random() != drawn[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["None", "1", "True"], out.stdout + out.stderr


OWN_GENERATORS = {
    "random.Random": lambda: random.Random(0),
    "np.random.default_rng": lambda: np.random.default_rng(0),
    "np.random.RandomState": lambda: np.random.RandomState(0),
}
OWN_RNG = {}  # the step's own generator


def own_rng_step(xw_t, state, P):
    """stochastic_step drawing from a generator of its own: OWN_RNG["rng"].random() (RandomState's .rand())."""
    rng = OWN_RNG["rng"]
    draw = rng.rand if isinstance(rng, np.random.RandomState) else rng.random
    return stochastic_step(xw_t, state, P, draw)


@pytest.mark.parametrize("kind", sorted(OWN_GENERATORS))
def test_a_step_drawing_from_a_generator_of_its_own_runs_on_the_python_loop(kind):
    """A step drawing from its own generator (RNG = random.Random(0), np.random.default_rng(0)) had the sample
    step's draw baked in, as from the global ones: a RandomState's ran natively, one branch at every step (outputs
    0.96 off), the others fell back as 'reads the batch size' with their generator drawn on by the trace (the first
    run 1.1 off the python loop's from the same seed). It runs on the python loop, the generator left as it was."""
    fns = {"step": staticmethod(own_rng_step), "step_backward": staticmethod(relu_step_backward)}
    Cls = type(f"OwnRng_{kind.replace('.', '_')}", (OwnReLU,), fns)
    torch.manual_seed(0)
    layers = {be: Recurrent(Cls, 3, 4, backend=be).double() for be in ("python", None)}
    layers[None].load_state_dict(layers["python"].state_dict())
    x = torch.randn(2, 40, 3, dtype=torch.float64)
    with torch.no_grad():
        outs = {}
        for be, layer in layers.items():
            OWN_RNG["rng"] = OWN_GENERATORS[kind]()
            outs[be] = layer(x)[0]
    torch.testing.assert_close(outs[None], outs["python"], rtol=0, atol=0)
    with pytest.warns(
        RuntimeWarning, match=rf"{Cls.__name__}'s step functions draw from Python's or numpy's"
    ):
        Recurrent(Cls, 3, 5, backend="native")(torch.randn(2, 3, 3))


CAST = torch.float32  # the dtype the step rounds its output to


def cast_to_global_step(xw_t, state, P):
    """tanh(a) rounded to CAST and back."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P))
    return (y.to(CAST).to(y.dtype),), (h_prev,), (y,)


def test_a_global_dtype_the_step_reads_is_traced_again():
    """CAST = torch.float32, then torch.bfloat16 or torch.float64: a dtype was no part of the kernels' key, and the
    native loop ran the float32 rounding in silence (outputs 2e-3 off the python loop's, 4e-8 in float64)."""
    global CAST
    fns = {"step": staticmethod(cast_to_global_step), "step_backward": staticmethod(widened_step_backward)}
    Cls = type("CastToGlobal", (OwnReLU,), fns)
    torch.manual_seed(0)
    layer = Recurrent(Cls, 3, 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    try:
        for CAST in (torch.float32, torch.bfloat16, torch.float64):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (bfloat16: the python loop, said)
                layer.backend, got = None, layer(x)[0]
            layer.backend, want = "python", layer(x)[0]
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=str(CAST))
    finally:
        CAST = torch.float32


ADJACENCY = torch.eye(20).to_sparse()  # a sparse tensor the step names


def sparse_named_step(xw_t, state, P):
    """An Elman tanh unit whose step names a sparse tensor (its mixing skipped where it is not (H, H))."""
    (h_prev,) = state
    y = torch.tanh(xw_t + linear(h_prev, *P))
    y = torch.sparse.mm(ADJACENCY, y.T).T if ADJACENCY.shape[0] == y.shape[1] else y
    return (y,), (h_prev,), (y,)


@pytest.mark.parametrize("kind", ["sparse", "sparse_csr", "meta"])
def test_a_tensor_without_numbers_to_read_is_keyed_by_its_kind(kind):
    """A sparse tensor of more than 256 entries the step names (or a CSR or meta one) failed every forward in the
    kernels' key since tensors are keyed by their bytes: 'nbytes is not defined for sparse tensors', where it ran
    before. It is keyed by its kind; the cell runs as before."""
    global ADJACENCY
    fns = {"step": staticmethod(sparse_named_step), "step_backward": staticmethod(widened_step_backward)}
    Cls = type(f"SparseNamed_{kind}", (OwnReLU,), fns)
    dense = torch.eye(20)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (CSR: torch's 'support is in beta state')
            ADJACENCY = dense.to_sparse_csr() if kind == "sparse_csr" else dense.to_sparse()
        ADJACENCY = dense.to("meta") if kind == "meta" else ADJACENCY
        layer = Recurrent(Cls, 3, 4).double()
        x = torch.randn(2, 5, 3, dtype=torch.float64)
        got = layer(x)[0]
        layer.backend = "python"
        torch.testing.assert_close(got, layer(x)[0], rtol=1e-12, atol=1e-12)
    finally:
        ADJACENCY = torch.eye(20).to_sparse()


class _PropertyGains:
    """Settings whose gains are properties: each read makes a new array (np.array of a list entry)."""

    def __init__(self):
        self.values = [1.0, 1.0, 1.0, 1.0]

    @property
    def a(self):
        return np.array([self.values[0]])

    @property
    def b(self):
        return np.array([self.values[1]])

    @property
    def c(self):
        return np.array([self.values[2]])

    @property
    def d(self):
        return np.array([self.values[3]])


PROPERTY_GAINS = _PropertyGains()


def _property_gain():
    return (
        float(PROPERTY_GAINS.a[0])
        * float(PROPERTY_GAINS.b[0])
        * float(PROPERTY_GAINS.c[0])
        * float(PROPERTY_GAINS.d[0])
    )


def test_arrays_a_property_makes_at_each_read_are_each_keyed():
    """A walk keys an array once (an array both functions read was compared twice), by its id: an array a property
    makes at each read, freed once keyed, gave its id to the next one made, which was taken for it and left out of
    the key; PROPERTY_GAINS.d changed, the native loop ran the old kernels (outputs 0.86 off). Each is kept, and keyed."""
    Cls = _gain_cell("PropertyGains", _property_gain)
    try:
        for values in (
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 0.5, 1.0],
            [1.0, 1.0, 0.5, 0.25],
            [0.5, 1.0, 1.0, 1.0],
        ):
            PROPERTY_GAINS.values = values
            _native_is_autograd(Cls)
    finally:
        PROPERTY_GAINS.values = [1.0, 1.0, 1.0, 1.0]


_TRACE_FAILS = []  # the exception the next trace of Interrupted's step raises (a list: no number the kernels key)


def interrupted_step(xw_t, state, P):
    # (the trace's fake tensors, not the python loop's)
    if _TRACE_FAILS and type(state[0]) is not torch.Tensor:
        raise _TRACE_FAILS.pop()
    return leaky_step(xw_t, state, P)


class Interrupted(OwnLeaky):
    step = staticmethod(interrupted_step)


CUT_SHORT = [
    KeyboardInterrupt(),
    [MemoryError(), MemoryError()],  # (twice: the trace's second try fails too)
    [RecursionError(), RecursionError()],
]


@pytest.mark.parametrize("error", CUT_SHORT)
def test_a_trace_cut_short_is_raised_and_traced_again_at_the_next_call(error):
    """A Ctrl-C during a cell's first trace (in torch's lazy import of torch._dynamo, which left "module
    'torch._dynamo' has no attribute 'utils'") was kept as the cell's reason for good: the rest of the process ran it
    on the python loop, warned as untraceable. It is raised, nothing kept, and the next call traces and runs natively."""
    native._traced.pop(Interrupted, None)
    traced._traced.pop(Interrupted, None)
    layer, x = Recurrent(Interrupted, 3, 4, backend="native"), torch.randn(2, 5, 3)
    errors = error if isinstance(error, list) else [error]
    _TRACE_FAILS.extend(errors)
    with pytest.raises(type(errors[0])):
        layer(x)
    assert not _TRACE_FAILS and not native._traced.get(Interrupted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the native loop runs it: no word of a fallback
        out, _ = layer(x)
    assert isinstance(next(iter(native._traced[Interrupted].values())), int)  # ran natively
    layer.backend = "python"
    torch.testing.assert_close(out, layer(x)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "error",
    [
        AttributeError("module 'torch._dynamo' has no attribute 'utils'"),
        ImportError("cannot import name 'utils' from partially initialized module 'torch._dynamo'"),
        MemoryError(),
        OSError(24, "Too many open files"),
    ],
)
def test_a_trace_that_fails_once_of_no_steps_making_is_tried_again_at_once(error):
    """An error of no step's making in the first trace (torch._dynamo left half imported by a Ctrl-C; memory) is
    retried at once: the forward runs natively, raising nothing and warning of no fallback."""
    native._traced.pop(Interrupted, None)
    traced._traced.pop(Interrupted, None)
    layer, x = Recurrent(Interrupted, 3, 4, backend="native"), torch.randn(2, 5, 3)
    _TRACE_FAILS.append(error)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = layer(x)
    assert not _TRACE_FAILS
    assert isinstance(next(iter(native._traced[Interrupted].values())), int)  # ran natively
    layer.backend = "python"
    torch.testing.assert_close(out, layer(x)[0], rtol=1e-6, atol=1e-6)


def pickling_step(xw_t, state, P):
    pickle.dumps(state[0])  # (a debug dump: fine on a tensor, an AttributeError on the trace's fake one)
    return leaky_step(xw_t, state, P)


class Pickling(OwnLeaky):
    step = staticmethod(pickling_step)


def test_a_step_whose_trace_raises_an_attribute_error_every_time_runs_on_the_python_loop():
    """A step that pickles its state runs on real tensors, and its trace fails every time with AttributeError ("Can't
    pickle local object ..." of the fake tensor): every forward raised it since d237182, where it ran on the python
    loop with the one-line reason before. It runs on the python loop again, the reason kept."""
    layer, x = Recurrent(Pickling, 3, 4, backend="native"), torch.randn(2, 5, 3)
    with pytest.warns(RuntimeWarning, match="Pickling.step can't be traced on fake tensors .AttributeError"):
        out, _ = layer(x)
    assert isinstance(next(iter(native._traced[Pickling].values())), str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again, _ = layer(x)
    layer.backend = "python"
    torch.testing.assert_close(out, layer(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def gru_twice_step_backward(dstate, cache, P):
    """gru_step_backward with dpre written twice, once for dpres and once in dh_prev's product: the same value."""
    (dh_t,), (r, z, n, h_n, h_prev) = dstate, cache
    da_n = dh_t * (1 - z) * (1 - n * n)
    da_r = da_n * h_n * r * (1 - r)
    da_z = dh_t * (h_prev - n) * z * (1 - z)
    dh_prev = dh_t * z + torch.cat((da_r, da_z, da_n * r), 1) @ P[0]
    return torch.cat((da_r, da_z, da_n), 1), (dh_prev,), (torch.cat((da_r, da_z, da_n * r), 1),), ()


class GRUTwice(OwnGRU):
    step_backward = staticmethod(gru_twice_step_backward)


def test_a_dpre_computed_twice_runs_natively():
    """The tracer knows a value by its node: equal computations are one (it said 'dstate_prev[0] is not dpres[0] U'
    and ran the python loop)."""
    got = _run_layer(GRUTwice, "native", torch.float64)
    ids = list(native._traced.get(GRUTwice, {}).values())
    assert ids and all(isinstance(v, int) for v in ids), ids
    for g, w in zip(got, _run_layer(GRUTwice, "autograd", torch.float64), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


class SignedZeros(Cell):
    """h_t = tanh(xw + pre) + clamp(1 / (-0.0 h_{t-1}), -1, 1) - clamp(1 / (0.0 h_{t-1}), -1, 1): the reciprocals of
    the signed zeros are -inf and inf (for h > 0), so h_t = tanh(xw + pre) - 2 sign(h_{t-1}); the two taken as one, 0."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(
            self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,) if bias else None)
        )
        self.reset_parameters()

    @staticmethod
    def step(xw_t, state, P):
        (h,), (W_hh, b_hh) = state, P
        a = torch.tanh(xw_t + linear(h, W_hh, b_hh))
        h_t = a + torch.clamp(1 / (h * -0.0), -1, 1) - torch.clamp(1 / (h * 0.0), -1, 1)
        return (h_t,), (h,), (a,)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh,), (a,) = dstate, cache
        da = dh * (1 - a * a)
        return da, (da @ P[0],), (da,), ()


def test_equal_computations_merged_are_only_those_of_the_same_numbers():
    """x * -0.0 and x * 0.0 are two values (0.0 == -0.0 merged them: the native loop's outputs 2.4 off the python
    loop's); two random draws are two, and a graph that changes a tensor in place is kept as traced."""
    torch.manual_seed(0)
    layer = Recurrent(SignedZeros, 3, 4, backend="native")
    x = torch.randn(2, 3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the native loop runs it
        out = layer(x)[0]
    layer.backend = "python"
    torch.testing.assert_close(out, layer(x)[0], rtol=1e-6, atol=1e-6)

    def draws(x):
        return torch.rand_like(x), torch.rand_like(x)

    def in_place(x):
        a = x * 2
        x.mul_(3)
        return a, x * 2

    for fn, kept in ((draws, "rand_like"), (in_place, "mul.Tensor")):
        gm = traced._merged(make_fx(fn, tracing_mode="fake")(torch.ones(2, 3)))
        assert sum(kept in str(nd.target) for nd in gm.graph.nodes) == 2, gm.graph
