"""Cells of one's own traced and compiled to native kernels (rnnkit.engine.traced), tested without the engine: the
kernels are called through ctypes one batch row at a time, as the engine will call them, and must give what the
cell's own step and step_backward give (float64 to rounding, float32 to 1e-5: the float kernels use fast exp and
tanh). Cells outside what the native loop can fuse are refused in one line that says so."""

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from rnnkit.cells import CELLS
from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.engine import traced
from rnnkit.engine.traced import Untraceable, trace_cell
from rnnkit.errors import RnnkitError

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}
KERNEL = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64
)


# --- cells of one's own -------------------------------------------------------------------------------


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
    """An Elman unit with one learned scalar gain (as in tests/cells/test_own_cell.py)."""

    REC_PARAMS = ("W_hh", "b_hh", "g")
    EXTRAS = ("g",)
    step = staticmethod(gain_step)
    step_backward = staticmethod(gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.g = nn.Parameter(torch.tensor(1.3))
        self.reset_parameters()


class LeakyAlpha(Cell):
    """h_t = (1 - α) ⊙ h_{t-1} + α ⊙ tanh(xw_t + h_{t-1} W_hhᵀ + b_hh), α a learned (H,) Parameter."""

    REC_PARAMS = ("W_hh", "b_hh", "alpha")
    EXTRAS = ("alpha",)

    @staticmethod
    def step(xw_t, state, P):
        (h_prev,) = state
        W_hh, b_hh, alpha = P
        hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
        h_t = (1 - alpha) * h_prev + alpha * hc
        return (h_t,), (h_prev,), (hc, h_prev, alpha)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh_t,), (hc, h_prev, alpha) = dstate, cache
        da = dh_t * alpha * (1 - hc * hc)
        dalpha = (dh_t * (hc - h_prev)).sum(0)
        return da, (dh_t * (1 - alpha) + da @ P[0],), (da,), (dalpha,)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (H, H)), ("b_hh", (H,) if bias else None))
        self.reset_parameters()
        self.alpha = nn.Parameter(torch.rand(H))


class CIFG(Cell):
    """An LSTM with coupled input and forget gates (i = 1 - f): xw_t = [a_f, a_g, a_o]; the gates kept as one
    (B, 3H) cache value that backward slices."""

    gates, num_states = 3, 2

    @staticmethod
    def step(xw_t, state, P):
        h_prev, c_prev = state
        a_f, a_g, a_o = (xw_t + linear(h_prev, P[0], P[1])).chunk(3, dim=1)
        f_t, g_t, o_t = torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c_t = f_t * c_prev + (1 - f_t) * g_t
        tanh_c = torch.tanh(c_t)
        return (o_t * tanh_c, c_t), (h_prev,), (torch.cat((f_t, g_t, o_t), dim=1), c_prev, tanh_c)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh_t, dc_t), (gates, c_prev, tanh_c) = dstate, cache
        H = dh_t.shape[1]
        f_t, g_t, o_t = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
        dc = dc_t + dh_t * o_t * (1 - tanh_c * tanh_c)
        da_f = dc * (c_prev - g_t) * f_t * (1 - f_t)
        da_g = dc * (1 - f_t) * (1 - g_t * g_t)
        da_o = dh_t * tanh_c * o_t * (1 - o_t)
        da = torch.cat((da_f, da_g, da_o), dim=1)
        return da, (da @ P[0], dc * f_t), (da,), ()

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (3 * H, H)), ("b_hh", (3 * H,) if bias else None))
        self.reset_parameters()


class TorchGRU(Cell):
    """torch.nn.GRU's form: the reset gate multiplies W_hn h_{t-1} + b_hn, so dpre (r ⊙ da_n in its block) is
    not dxw."""

    gates = 3

    @staticmethod
    def step(xw_t, state, P):
        (h_prev,) = state
        H = h_prev.shape[1]
        hw = linear(h_prev, P[0], P[1])
        r_t = torch.sigmoid(xw_t[:, :H] + hw[:, :H])
        z_t = torch.sigmoid(xw_t[:, H : 2 * H] + hw[:, H : 2 * H])
        h_n = hw[:, 2 * H :]
        n_t = torch.tanh(xw_t[:, 2 * H :] + r_t * h_n)
        h_t = (1 - z_t) * n_t + z_t * h_prev
        return (h_t,), (h_prev,), (r_t, z_t, n_t, h_n, h_prev)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh_t,), (r_t, z_t, n_t, h_n, h_prev) = dstate, cache
        da_n = torch.ops.aten.tanh_backward(dh_t * (1 - z_t), n_t)
        da_z = torch.ops.aten.sigmoid_backward(dh_t * (h_prev - n_t), z_t)
        da_r = torch.ops.aten.sigmoid_backward(da_n * h_n, r_t)
        dpre = torch.cat((da_r, da_z, da_n * r_t), dim=1)
        return torch.cat((da_r, da_z, da_n), dim=1), (dh_t * z_t + dpre @ P[0],), (dpre,), ()

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (3 * H, H)), ("b_hh", (3 * H,) if bias else None))
        self.reset_parameters()


class ReluRNN(Cell):
    """h_t = max(0, xw_t + h_{t-1} W_hhᵀ) without a recurrent bias; backward masks with (h_t > 0)."""

    @staticmethod
    def step(xw_t, state, P):
        (h_prev,) = state
        h_t = torch.relu(xw_t + linear(h_prev, P[0], P[1]))
        return (h_t,), (h_prev,), (h_t,)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh_t,), (h_t,) = dstate, cache
        da = dh_t * (h_t > 0).to(dh_t.dtype)
        return da, (da @ P[0],), (da,), ()

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (H, H)), ("b_hh", (H,) if bias else None))
        self.reset_parameters()


class EveryOp(Cell):
    """Nonsense math that uses every op the kernels know, forward and backward (step_backward need not be step's
    derivative here: the kernels are checked against each function by itself). xw_t = [a, b] (2 blocks), a
    per-unit vector v (2H,) and a scalar s, both EXTRAS."""

    gates = 2
    REC_PARAMS = ("W_hh", "b_hh", "v", "s")
    EXTRAS = ("v", "s")

    @staticmethod
    def step(xw_t, state, P):
        (h_prev,) = state
        W, b, v, s = P
        H = h_prev.shape[1]
        pre = xw_t + linear(h_prev, W, b) * v.unsqueeze(0).expand(xw_t.shape[0], -1)
        a, c = torch.split(pre, [H, H], dim=1)
        e1 = torch.clamp(a, min=-1.5, max=1.5)
        e2 = torch.where(c > 0, torch.sqrt(c.abs() + 1), torch.exp(c) - 1)
        e3 = torch.minimum(e1, e2) + torch.maximum(a, -e2) * torch.tensor(0.25)
        e4 = torch.rsqrt(a * a + 1) + torch.reciprocal(2 + c.abs()) - torch.log(a * a + 1)
        e5 = a.pow(2) * 0.1 + (c**3) * 0.01 + (a.abs() + 1).pow(1.5) / 7
        h_t = (
            torch.tanh(e3 + e4 - e5 / 3 + s * torch.sigmoid(a))
            + torch.relu(-c) * 0.1
            - torch.full_like(a, 0.2)
        )
        return (h_t,), (h_prev,), (h_t.clone(), torch.cat((a, c.detach()), dim=1), v)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh,), (h_t, ac, v) = dstate, cache
        H = dh.shape[1]
        a, c = ac[:, :H], ac[:, H:]
        mask = (a >= 0) & (c < 1)
        m2 = (a != 0) | (a <= -1)
        da = dh * mask.to(dh.dtype) + torch.where(~m2, dh * 0.5, dh.neg()) + torch.where(a.eq(h_t), 1.0, 0.0)
        da = (
            torch.ops.aten.threshold_backward(da, a, 0.3)
            + torch.ops.aten.tanh_backward(dh, h_t)
            + torch.ops.aten.sigmoid_backward(dh, torch.sigmoid(c))
        )
        da = da.clamp_min(-5).clamp_max(5) + (a - dh).sub(h_t, alpha=2) + torch.add(a, dh, alpha=0.5)
        da = da - torch.rsub(c, 1.0, alpha=2) / (1 + h_t * h_t)
        da = da * (a.gt(h_t) | torch.logical_not(c.lt(0.2))).float() - P[3]
        dpre = torch.cat((da, dh * c), dim=1)
        dh_prev = torch.zeros_like(dh) + dpre @ P[0] + torch.ones_like(dh) * 0.1
        return dpre * v, (dh_prev,), (dpre,), ((dpre * ac).sum(0), (da * a).sum())

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (2 * H, H)), ("b_hh", (2 * H,)))
        self.v, self.s = nn.Parameter(torch.rand(2 * H) + 0.5), nn.Parameter(torch.tensor(0.7))
        self.reset_parameters()


# --- the harness: the kernels, row by row ---------------------------------------------------------------


def _call(address, ins, outs, H):
    """One kernel over every row, each row in two calls (units [0, H//2) and [H//2, H)). ins, outs: (tensor or
    None, per_row) pairs; a per-row tensor is passed at the address of its row, a parameter as it is."""
    B = next(t.shape[0] for t, per_row in ins if per_row)
    fn = KERNEL(address)
    for b in range(B):
        ptrs = []
        for items in (ins, outs):
            arr = (ctypes.c_void_p * len(items))()
            for i, (t, per_row) in enumerate(items):
                if t is not None:
                    arr[i] = t.data_ptr() + (b * t.stride(0) * t.element_size() if per_row else 0)
            ptrs.append(arr)
        for j0, j1 in ((0, H // 2), (H // 2, H)):
            fn(ptrs[0], ptrs[1], H, j0, j1)


def check_kernels(cls, H, P, dtype, B=3, seed=0):
    """The traced kernels of cls against its torch step and step_backward on random tensors; returns Traced."""
    g = torch.Generator().manual_seed(seed)
    P = [None if p is None else p.detach().to(dtype) for p in P]
    tr = trace_cell(cls, H, P, dtype)
    n, sfx = cls.num_states, "f32" if dtype == torch.float32 else "f64"
    xw = torch.randn(B, cls.gates * H, generator=g, dtype=dtype)
    state = tuple(torch.randn(B, H, generator=g, dtype=dtype) for _ in range(n))
    dstate = tuple(torch.randn(B, H, generator=g, dtype=dtype) for _ in range(n))
    U = P[tr.u_param]
    state_t, _, cache = cls.step(xw, state, P)
    back = cls.step_backward(dstate, cache, P)

    # forward: pre without the bias; states and cache buffers out
    pre = state[0] @ U.t()
    new = [torch.full((B, H), float("nan"), dtype=dtype) for _ in range(n)]
    bufs = [torch.full((B, k * H), float("nan"), dtype=dtype) for k in tr.cache_blocks]
    params = [(p, False) for p in P]
    ins = [(xw, True), (pre, True), *[(s, True) for s in state], *params]
    _call(getattr(tr, f"fwd_{sfx}"), ins, [(t, True) for t in [*new, *bufs]], H)
    for got, want in zip(new, state_t):
        torch.testing.assert_close(got, want, **TOL[dtype])
    kept = [
        *(p for p in P if p is not None),
        *state,
    ]  # (read where they are: the parameters, the loop's states)
    rows = [c for c in cache if not any(c is k for k in kept)]
    assert len(rows) == len(bufs)
    for got, want in zip(bufs, rows):
        torch.testing.assert_close(got, want.expand(B, -1), **TOL[dtype])

    # backward, from the kernel's own cache; dL/dc updated in place, as the engine does
    dxw = torch.full_like(xw, float("nan"))
    dpre = None if tr.dpre_is_dxw else torch.full((B, tr.Gp * H), float("nan"), dtype=dtype)
    dh_prev = torch.full((B, H), float("nan"), dtype=dtype)
    dc = [dstate[1].clone()] if n == 2 else []
    accs = [torch.zeros(k * H, dtype=dtype) for _, k in tr.extras]
    ins = [(dstate[0], True), *[(t, True) for t in dc], *[(t, True) for t in bufs], *params,
           *[(t, True) for t in state]]  # fmt: skip
    outs = [(dxw, True), (dpre, True), (dh_prev, True), *[(t, True) for t in dc], *[(a, False) for a in accs]]
    _call(getattr(tr, f"bwd_{sfx}"), ins, outs, H)
    dxw_t, dprev, dpres, dextras = back
    torch.testing.assert_close(dxw, dxw_t, **TOL[dtype])
    dpre = dxw if tr.dpre_is_dxw else dpre
    torch.testing.assert_close(dpre, dpres[0], **TOL[dtype])
    torch.testing.assert_close(dh_prev + dpre @ U, dprev[0], **TOL[dtype])
    for got, want in zip(dc, dprev[1:]):
        torch.testing.assert_close(got, want, **TOL[dtype])
    for (i, _), acc, want in zip(tr.extras, accs, dextras):
        torch.testing.assert_close(
            acc.sum_to_size(P[i].shape) if P[i].dim() else acc.sum(), want, **TOL[dtype]
        )
    return tr


def params_of(cell):
    return [None if p is None else p.detach() for p in cell.rec_params()]


# --- what traces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("Cls", [GainRNN, LeakyAlpha, CIFG, TorchGRU, EveryOp], ids=lambda c: c.__name__)
def test_a_cell_of_ones_own_runs_as_its_torch_step(Cls, dtype):
    torch.manual_seed(0)
    cell = Cls(2, 5)
    tr = check_kernels(Cls, 5, params_of(cell), dtype)
    assert tr.G == Cls.gates and tr.n_states == Cls.num_states and tr.u_param == 0 and tr.b_param == 1
    assert tr.dpre_is_dxw == (Cls not in (TorchGRU, EveryOp))
    assert tr.extras == {GainRNN: ((2, 1),), LeakyAlpha: ((2, 1),), EveryOp: ((2, 2), (3, 1))}.get(Cls, ())
    if Cls in (
        CIFG,
        EveryOp,
    ):  # the gates as one (B, 3H) buffer; a parameter in the cache is read from P, and
        assert tr.cache_blocks == {CIFG: (3, 1), EveryOp: (1, 2)}[Cls]  # c_{t-1} where the loop keeps it


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_cell_without_a_recurrent_bias_reads_no_bias(dtype):
    """bias=False: P holds None, the step's GEMM is a plain mm, b_param is -1; the mask (h_t > 0) is cast."""
    torch.manual_seed(0)
    cell = ReluRNN(2, 4, bias=False)
    tr = check_kernels(ReluRNN, 4, params_of(cell), dtype)
    assert tr.b_param == -1 and "in3" not in tr.source.split("void bwd")[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["rnn_tanh", "rnn_relu", "lstm", "gru", "leaky"])
def test_rnnkits_own_cells_trace_as_if_they_were_ones_own(name, dtype):
    torch.manual_seed(0)
    cell = CELLS[name](2, 4)
    P = params_of(cell)
    if name == "leaky":
        P[2] = torch.rand(4)  # α as the engine receives it: a tensor of H values
    tr = check_kernels(CELLS[name], 4, P, dtype)
    assert tr.dpre_is_dxw == (name != "gru")
    assert tr.extras == (((2, 1),) if name == "leaky" else ())
    if name == "leaky":
        assert tr.cache_blocks == (1,)  # h̃; h_{t-1} is read where the loop keeps it, α from P


def on_values(fn, back, values, dtype, dh=None):
    """(native, torch) for h_t = fn(pre) and da = back(dh_t, pre) of a ReluRNN-like cell, one row whose pre is values
    (W_hh, b_hh and h_{t-1} zero): the kernels on the edges of each op's range (NaN, inf, overflow, denormals)."""

    def step(xw_t, state, P):
        return (fn(xw_t + linear(state[0], P[0], P[1])),), (state[0],), (xw_t.clone(),)

    def step_backward(dstate, cache, P):
        da = back(dstate[0], cache[0])
        return da, (da @ P[0],), (da,), ()

    Cls = type(
        "OnValues", (ReluRNN,), dict(step=staticmethod(step), step_backward=staticmethod(step_backward))
    )
    H = len(values)
    P = [torch.zeros(H, H, dtype=dtype), torch.zeros(H, dtype=dtype)]
    tr = trace_cell(Cls, H, P, dtype)
    sfx = "f32" if dtype == torch.float32 else "f64"
    xw, h0 = torch.tensor([values], dtype=dtype), torch.zeros(1, H, dtype=dtype)
    dh = torch.ones_like(xw) if dh is None else torch.tensor([dh], dtype=dtype)
    (h_t,), _, cache = Cls.step(xw, (h0,), P)
    h, buf, da = (torch.full_like(xw, 7.0) for _ in range(3))
    params = [(p, False) for p in P]
    _call(getattr(tr, f"fwd_{sfx}"), [(xw, True), (torch.zeros_like(xw), True), (h0, True), *params],
          [(h, True), (buf, True)], H)  # fmt: skip
    _call(
        getattr(tr, f"bwd_{sfx}"),
        [(dh, True), (buf, True), *params],
        [(da, True), (None, True), (torch.empty_like(h0), True)],
        H,
    )
    return (h, da), (h_t, Cls.step_backward((dh,), cache, P)[0])


class SumOfTheLastButOne(LeakyAlpha):
    """dα summed over the rows as d.sum(-2): the rows' dim counted from the end, one of the two forms of an EXTRAS
    gradient (d.sum(0)) the kernels sum."""

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh_t,), (hc, h_prev, _) = dstate, cache
        da, dprev, dpres, _ = LeakyAlpha.step_backward(dstate, cache, P)
        return da, dprev, dpres, ((dh_t * (hc - h_prev)).sum(-2),)


def test_an_extras_gradient_summed_over_dim_minus_two():
    tr = check_kernels(SumOfTheLastButOne, 5, params_of(SumOfTheLastButOne(2, 5)), torch.float64)
    assert tr.extras == ((2, 1),)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exp_overflows_and_underflows_where_torchs_does(dtype):
    """float32 exp(88.5) is 2.7e38 and exp(-95) a denormal in torch; the float kernels' exp gave inf and 0 past
    [-87.3, 88.3] (fexp saturates there for the sigmoid), so log(1 + exp(x)) was inf at 88.5 where torch gives 88.5."""
    values = [88.0, 88.4, 88.5, 88.7, 88.73, 89.0, -87.0, -87.5, -95.0, -100.0, -103.0, -104.0, 1e30, NAN]
    got, want = on_values(lambda a: torch.log(1 + torch.exp(a)) + torch.exp(a), lambda dh, a: dh * torch.exp(a),
                          values, dtype)  # fmt: skip
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype], equal_nan=True)
        assert torch.equal(g == 0, w == 0)  # (a denormal is not 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tanh_keeps_the_sign_of_zero_as_torchs(dtype):
    """torch.tanh(-0.0) is -0.0, so 1 / tanh(-x) at x = 0 is -inf; the float kernels' tanh (fastmath.h tanh_) gave
    +0.0 there, and +inf (its sign taken by x < 0, false for -0.0)."""
    values = [0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30, 0.5, -0.5, 0.7, -0.7, 20.0, -20.0, INF, -INF, NAN]
    got, want = on_values(lambda a: 1 / torch.tanh(-a), lambda dh, a: dh * torch.tanh(-a), values, dtype)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype], equal_nan=True)
        assert torch.equal(g.signbit(), w.signbit())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_nan_bound_of_clamp_gives_nan_as_in_torch(dtype):
    """torch.clamp(x, min=nan) is NaN, and so are clamp_min and clamp_max with a NaN bound (a number or a tensor, here
    log(-1)); the kernels' selects (x < lo ? lo : x) kept x unclamped."""
    values = [1.0, -1.0, 0.0, 2.5, INF, -INF, NAN, 1e30]
    nan_t = lambda a: torch.log(-1 - a.abs())  # noqa: E731  (NaN, as a tensor)
    fn = lambda a: a.clamp(min=NAN) + a.clamp(max=NAN) + a.clamp(-1, NAN) + a.clamp_min(nan_t(a))  # noqa: E731
    back = lambda dh, a: dh.clamp_max(nan_t(a)) + torch.clamp(dh, min=nan_t(a), max=a)  # noqa: E731
    got, want = on_values(fn, back, values, dtype)
    for g, w in zip(got, want):
        assert w.isnan().all()
        torch.testing.assert_close(g, w, **TOL[dtype], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_power_of_minus_one_half_is_torchs_rsqrt(dtype):
    """torch computes x ** -0.5 as rsqrt(x): NaN for -inf, -inf for -0.0 (here -x of x = 0); std::pow gave 0 and inf."""
    values = [-INF, 0.0, 4.0, INF, NAN, 1e-30]
    got, want = on_values(lambda a: a**-0.5 + (-a) ** -0.5, lambda dh, a: dh * (-a) ** -0.5, values, dtype)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype], equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_power_of_minus_two_is_torchs_one_over_the_square(dtype):
    """torch computes x ** -2 as 1 / (x x): 0 where x x overflows (1e20 in float32, 1e160 in float64), where
    std::pow gave a denormal (1e-40, 1e-320), and 1 ulp off it for a quarter of ordinary values."""
    big = 1e160 if dtype == torch.float64 else 1e20
    values = [big, -big, 3.0, 7.3, 1.1, 0.0, INF, NAN, *torch.linspace(0.1, 9.0, 24).tolist()]
    got, want = on_values(lambda a: a**-2, lambda dh, a: dh * a**-2.0, values, dtype)
    for g, w in zip(got, want):
        assert torch.equal(g == 0, w == 0)
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sigmoid_backward_multiplies_in_torchs_order(dtype):
    """aten.sigmoid_backward(g, y) is (g (1 - y)) y in torch: with y = 1e30 and g = 0 that is 0, where g ((1 - y) y)
    overflowed in float32 (0 · inf: NaN); and a denormal g gave ±inf for torch's ±1e20."""
    big = 1e300 if dtype == torch.float64 else 1e30
    values, dh = [big, -big, big, 0.5], [0.0, 0.0, 1e-41, 1.0]
    got, want = on_values(torch.exp, torch.ops.aten.sigmoid_backward, values, dtype, dh=dh)
    torch.testing.assert_close(got[1], want[1], **TOL[dtype], equal_nan=True)
    assert (want[1][0, :2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_comparisons_at_a_tie_and_the_masks_made_of_them_as_torchs(dtype):
    """Each comparison at its tie (pre = 0 exactly, as relu's output is in half its units): >= and >, <= and <, ==
    and != differ only there, and so does threshold_backward's x <= threshold (torch's relu backward: the gradient
    is 0 at 0); the logical ops on such masks, a float read as a bool (true for a negative one too), x ** -1 and a
    -inf constant. Each mask weighs a power of 2 in da, so one that differs in one unit is seen."""
    values = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0, -0.25]

    def fn(a):
        return torch.where(a > 0, a, float("-inf")) + (a + 3) ** -1

    def back(dh, a):
        masks = (a >= 0, a > 0, a <= 0, a < 0, a == 0, a != 0, torch.logical_and(a >= 0, a <= 0),
                 torch.logical_or(a > 0, a < 0), a.bool())  # fmt: skip
        da = torch.ops.aten.threshold_backward(dh, a, 0.0)
        for k, m in enumerate(masks):
            da = da + dh * m.to(dh.dtype) * 2.0 ** (k + 1)
        return da

    got, want = on_values(fn, back, values, dtype)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


# --- what is refused ----------------------------------------------------------------------------------


class LayerNormRNN(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        a = xw_t + linear(state[0], P[0], P[1])
        h_t = torch.tanh(a - a.mean(1, keepdim=True))
        return (h_t,), (state[0],), (h_t,)


class Branchy(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        a = xw_t + linear(state[0], P[0], P[1])
        h_t = torch.tanh(a) if bool((a > 0).any()) else torch.relu(a)
        return (h_t,), (state[0],), (h_t,)


class Doubled(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        u = 2 * state[0]
        h_t = torch.relu(xw_t + linear(u, P[0], P[1]))
        return (h_t,), (u,), (h_t,)


class Bare(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        return torch.relu(xw_t + linear(state[0], P[0], P[1])), (state[0],), ()


class InPlace(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        h_t = torch.relu(xw_t + linear(state[0], P[0], P[1])).mul_(2)
        return (h_t,), (state[0],), (h_t,)


class TwoProducts(ReluRNN):
    @staticmethod
    def step(xw_t, state, P):
        h_t = torch.relu(xw_t + linear(state[0], P[0], P[1]) @ P[0])
        return (h_t,), (state[0],), (h_t,)


class ScaledAlphaGrad(LeakyAlpha):
    @staticmethod
    def step_backward(dstate, cache, P):
        da, dprev, dpres, (dalpha,) = LeakyAlpha.step_backward(dstate, cache, P)
        return da, dprev, dpres, (dalpha * cache[2],)


class NoProductInBackward(LeakyAlpha):
    @staticmethod
    def step_backward(dstate, cache, P):
        da, _, dpres, dextras = LeakyAlpha.step_backward(dstate, cache, P)
        return da, (dstate[0] * (1 - cache[2]),), dpres, dextras


class OtherProductInBackward(LeakyAlpha):
    """dstate_prev[0] with a product of another value than dpres[0] (2 da, where dpres[0] is da): the engine's GEMM
    forms dpres[0] U, so the native loop would give dh_{t-1} the product da U, which the python loop doesn't."""

    @staticmethod
    def step_backward(dstate, cache, P):
        da, _, dpres, dextras = LeakyAlpha.step_backward(dstate, cache, P)
        return da, (dstate[0] * (1 - cache[2]) + (2 * da) @ P[0],), dpres, dextras


class MatrixAfterFour(LeakyAlpha):
    """Its recurrent matrix after four other parameters: the loop registered it and refused it there, in words that
    named nothing ("rnnkit native: a traced cell's sizes are out of range")."""

    REC_PARAMS = ("alpha", "a2", "a3", "a4", "W_hh", "b_hh")
    EXTRAS = ("alpha", "a2", "a3", "a4")

    @staticmethod
    def step(xw_t, state, P):
        return LeakyAlpha.step(xw_t, state, (*P[4:], P[0]))

    @staticmethod
    def step_backward(dstate, cache, P):
        da, (dh_prev,), dpres, (dalpha,) = LeakyAlpha.step_backward(dstate, cache, (*P[4:], P[0]))
        zero = (dstate[0] * 0).sum(0)
        return da, (dh_prev,), dpres, (dalpha, zero, zero, zero)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.a2, self.a3, self.a4 = (nn.Parameter(torch.rand(hidden_size)) for _ in range(3))


class OneValueAlpha(LeakyAlpha):
    """α of shape (1,), one value that broadcasts over the units: neither a vector of units nor a scalar to the
    kernels, refused in words that named the trace's placeholder ("makes a tensor of shape (1,) (arg3_1), not rows of
    a multiple of H = 4 units") and not the parameter."""

    @staticmethod
    def step_backward(dstate, cache, P):
        da, dprev, dpres, (dalpha,) = LeakyAlpha.step_backward(dstate, cache, P)
        return da, dprev, dpres, (dalpha.sum().reshape(1),)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.alpha = nn.Parameter(torch.rand(1))


@pytest.mark.parametrize(
    "Cls, said",
    [
        (LayerNormRNN, re.escape("LayerNormRNN.step uses aten.mean.dim (a reduction over units), which the native "
                                 "loop can't fuse; it runs on the python loop")),
        (Branchy, r"Branchy.step can't be traced on fake tensors \(.*control flow on a tensor's value\?\), so the "
                  "native loop can't fuse it; it runs on the python loop"),
        (InPlace, r"InPlace.step uses aten.mul_.Tensor \(an in-place op\), which the native loop can't fuse"),
        (TwoProducts, r"TwoProducts.step uses aten.mm.default \(a matrix product other than the recurrent GEMM "
                      r"h_\{t-1\} Uᵀ\), which the native loop can't fuse; it runs on the python loop"),
        (ScaledAlphaGrad, r"ScaledAlphaGrad.step_backward uses a sum over rows \(sum_1\) in aten.mul.Tensor, which "
                          "the native loop can't fuse"),
        (NoProductInBackward, r"NoProductInBackward.step_backward's dstate_prev\[0\] is not dpres\[0\] U \(\+ the "
                              r"other terms\), the product the native loop forms with its GEMM; it runs on the python"),
        (OtherProductInBackward, r"OtherProductInBackward.step_backward's dstate_prev\[0\] is not dpres\[0\] U "
                                 r"\(\+ the other terms\), the product the native loop forms with its GEMM"),
        (Doubled, r"Doubled.step's us\[0\] is not h_\{t-1\} \(state\[0\]\) itself, the vector the native loop "
                  "multiplies by Uᵀ; it runs on the python loop"),
        (MatrixAfterFour, r"MatrixAfterFour's W_hh is REC_PARAMS\[4\], and the native loop takes its recurrent matrix "
                          r"among the first 4 parameters; it runs on the python loop"),
        (OneValueAlpha, re.escape("OneValueAlpha.step takes alpha of shape (1,), not a vector of units (or a scalar) "
                                  "beside its one recurrent matrix, which the native loop can't fuse")),
    ],
)  # fmt: skip
def test_a_cell_outside_what_the_native_loop_fuses_is_refused_in_one_line(Cls, said):
    cell = Cls(2, 4)
    with pytest.raises(Untraceable, match=said) as e:
        trace_cell(Cls, 4, params_of(cell), torch.float64)
    assert "\n" not in str(e.value)
    with pytest.raises(Untraceable, match=said):  # the refusal is kept too
        trace_cell(Cls, 4, params_of(cell), torch.float64)


def test_a_cell_of_dependent_recurrent_products_traces_into_staged_kernels():
    """gru_cho: r from h_{t-1} W_hrzᵀ, then (r ⊙ h_{t-1}) W_hhᵀ: two forward kernels (gates and u, then h̃ and h_t)
    around the engine's GEMMs, and two backward ones (da_h̃, then da_r and dh_prev's direct part), da_rz W_hrz
    left to the GEMM that adds into dh_prev."""
    Cls = CELLS["gru_cho"]
    t = trace_cell(Cls, 4, params_of(Cls(2, 4)), torch.float64)
    assert isinstance(t, traced.Staged)
    assert [a != 0 for k in t.fwd for a in k] == [False, False, True, True, True, True]
    assert all(a != 0 for k in t.bwd for a in k) and len(t.bwd) == 2
    (u0, _, blocks0, src0, f0, b0, *_), (u1, _, blocks1, src1, f1, b1, *_) = t.gemms
    assert (u0, blocks0, src0, f0, b0) == (0, 2, -1, 1, -1)  # on h_{t-1}; into dh_prev
    assert (u1, blocks1, f1, b1) == (1, 1, 2, 1) and src1 >= 0  # on a buffer (u); read by the second kernel


class FourProducts(Cell):
    gates = 1
    REC_PARAMS = ("W_a", "W_b", "W_c", "W_d")
    GEMMS = (("W_a", None), ("W_b", None), ("W_c", None), ("W_d", None))

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, *((n, (H, H)) for n in self.REC_PARAMS))
        self.reset_parameters()

    @staticmethod
    def step(xw_t, state, P):
        (h,) = state
        h_t = torch.tanh(xw_t + sum(h @ W.t() for W in P))
        return (h_t,), (h,) * 4, (h_t,)

    @staticmethod
    def step_backward(dstate, cache, P):
        da = dstate[0] * (1 - cache[0] * cache[0])
        return da, (sum(da @ W for W in P),), (da,) * 4, ()


class TwiceByOneMatrix(Cell):
    """Two GEMMS entries, and step_backward multiplies by W_b twice (dpre_1 and 2 dpre_1: two products; the same
    product written twice is one, traced)."""

    gates = 1
    REC_PARAMS = ("W_a", "W_b")
    GEMMS = (("W_a", None), ("W_b", None))

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_a", (hidden_size, hidden_size)), ("W_b", (hidden_size, hidden_size)))
        self.reset_parameters()

    @staticmethod
    def step(xw_t, state, P):
        (h,) = state
        u = torch.sigmoid(h @ P[0].t()) * h
        h_t = torch.tanh(xw_t + u @ P[1].t())
        return (h_t,), (h, u), (h_t, u)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh,), (h_t, _) = dstate, cache
        da = dh * (1 - h_t * h_t)
        return da, ((da @ P[1]) * ((2 * da) @ P[1]),), (da, da), ()


class OtherOperand(TwiceByOneMatrix):
    """TwiceByOneMatrix's weights, and us[1] is 2u where the step multiplies u by W_bᵀ: the python loop's dW_b is
    Σ dpreᵀ us[1], the engine's would be Σ dpreᵀ u, the vector its GEMM multiplied (half of it)."""

    @staticmethod
    def step(xw_t, state, P):
        (h,) = state
        s = torch.sigmoid(h @ P[0].t())
        u = s * h
        h_t = torch.tanh(xw_t + u @ P[1].t())
        return (h_t,), (h, 2 * u), (h_t, s, h)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh,), (h_t, s, h) = dstate, cache
        da = dh * (1 - h_t * h_t)
        du = da @ P[1]
        ds = du * h * s * (1 - s)
        return da, (du * s + ds @ P[0],), (ds, da), ()


class OneValueGain(Cell):
    """Two GEMMS entries and a gain g of shape (1,) (see OneValueAlpha)."""

    gates = 1
    REC_PARAMS = ("W_a", "W_b", "g")
    GEMMS = (("W_a", None), ("W_b", None))
    EXTRAS = ("g",)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_a", (hidden_size, hidden_size)), ("W_b", (hidden_size, hidden_size)))
        self.reset_parameters()
        self.g = nn.Parameter(torch.rand(1))

    @staticmethod
    def step(xw_t, state, P):
        (h,) = state
        u = torch.sigmoid(h @ P[0].t()) * h
        h_t = torch.tanh(xw_t + u @ P[1].t()) * P[2]
        return (h_t,), (h, u), (h_t, u)

    @staticmethod
    def step_backward(dstate, cache, P):
        (dh,), (h_t, _) = dstate, cache
        return dh, (dh @ P[1],), (dh, dh), ((dh * h_t).sum().reshape(1),)


@pytest.mark.parametrize(
    "Cls, said",
    [
        (FourProducts, r"FourProducts has 4 GEMMS entries, and the native loop runs a cell of one's own with at most 3 "
                       r"recurrent products; it runs on the python loop"),
        (TwiceByOneMatrix, r"TwiceByOneMatrix.step_backward uses aten.mm.default \(a matrix product other than the "
                           r"recurrent GEMMs dpre_k U_k, each once, on a row of H units\), which the native loop can't "
                           r"fuse"),
        (OneValueGain, re.escape("OneValueGain.step takes g of shape (1,), not a vector of units (or a scalar) beside "
                                 "its recurrent matrices, which the native loop can't fuse")),
        (OtherOperand, re.escape("OtherOperand.step's us[1] is not the vector it multiplies by W_bᵀ, which the native "
                                 "loop can't fuse; it runs on the python loop")),
    ],
)  # fmt: skip
def test_a_cell_of_several_products_outside_what_the_native_loop_stages_is_refused(Cls, said):
    with pytest.raises(Untraceable, match=said) as e:
        trace_cell(Cls, 4, params_of(Cls(2, 4)), torch.float64)
    assert "\n" not in str(e.value)


def test_a_malformed_step_is_said_as_the_loops_say_it():
    """check_step's own error, unchanged: not an Untraceable that would hide it behind the python loop."""
    with pytest.raises(RnnkitError, match=r"Bare.step must return state_t as a tuple of 1 tensor\(s\)"):
        trace_cell(Bare, 4, params_of(Bare(2, 4)), torch.float64)


# --- caches -------------------------------------------------------------------------------------------


def test_a_second_trace_is_a_dict_look_up_and_the_library_is_reused_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(traced, "_traced", {})
    P = params_of(GainRNN(2, 6))
    t0 = time.perf_counter()
    first = trace_cell(GainRNN, 6, P, torch.float32)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert trace_cell(GainRNN, 6, P, torch.float32) is first
    assert time.perf_counter() - t0 < 1e-3 < took
    built = sorted(os.listdir(tmp_path / "rnnkit_traced"))
    assert [f.rsplit(".", 1)[1] for f in built] == ["cpp", "so"]

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(traced, "_traced", {})  # a fresh process: traced again, the .so taken from disk
    monkeypatch.setattr(traced, "run_compiler", no_compiler)
    again = trace_cell(GainRNN, 6, P, torch.float32)
    assert again is not first and again.source == first.source and again.fwd_f32 == first.fwd_f32
    assert sorted(os.listdir(tmp_path / "rnnkit_traced")) == built


def test_a_changed_header_compiles_the_kernels_again(tmp_path, monkeypatch):
    """The kernels include csrc/fastmath.h (exp, tanh, log, ...), but the library was keyed by the generated source,
    flags and compiler only: after an rnnkit whose fastmath.h changed (a fix to its log, say), every cached cell
    kept running the kernels of the old one. The key holds the headers too, as the engine's build folder does."""
    import shutil as sh

    from rnnkit.engine import native

    csrc = tmp_path / "csrc"
    sh.copytree(native.CSRC, csrc)
    monkeypatch.setattr(native, "CSRC", csrc)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    P = params_of(ReluRNN(2, 4))
    for n in (1, 2):
        monkeypatch.setattr(traced, "_traced", {})
        trace_cell(ReluRNN, 4, P, torch.float64)
        assert len(list((tmp_path / "cache" / "rnnkit_traced").glob("*.so"))) == n
        with open(csrc / "fastmath.h", "a") as f:
            f.write("\n// a later rnnkit's fastmath.h\n")


def test_no_compiler_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setattr(traced, "_traced", {})
    with pytest.raises(
        Untraceable, match=r"ReluRNN's kernels can't be compiled: no C\+\+ compiler .*python loop"
    ):
        trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    assert os.listdir(tmp_path / "rnnkit_traced") == []


def test_a_cache_that_cant_be_written_is_refused_naming_the_fix(tmp_path, monkeypatch):
    """A cell of one's own whose kernels are not in a cache that can't be written (the engine loaded from a shared or
    read-only one) was said as "can't be compiled: '.../rnnkit_traced' (Permission denied)", naming no way on."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(traced, "_traced", {})

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", dir)

    monkeypatch.setattr(traced.tempfile, "mkstemp", read_only)
    with pytest.raises(Untraceable, match=r"^ReluRNN's kernels can't be compiled: '.*rnnkit_traced' \(Permission "
                                          r"denied\); set TORCH_EXTENSIONS_DIR to a writable folder; it runs on the "
                                          r"python loop$"):  # fmt: skip
        trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)


def test_a_kernels_folder_that_links_to_a_missing_folder_is_named_with_its_fix(tmp_path, monkeypatch):
    """The kernels' folder in the cache a link to a folder that isn't there (a cache copied with its links): said as
    "can't be compiled: '.../rnnkit_traced' (File exists); set TORCH_EXTENSIONS_DIR to a writable folder", which it
    was. The reason names the link and where it points, as the engine's build does."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(traced, "_traced", {})
    gone = tmp_path / "gone"
    (tmp_path / "rnnkit_traced").symlink_to(gone)
    with pytest.raises(Untraceable, match=rf"^ReluRNN's kernels can't be compiled: .*; {tmp_path / 'rnnkit_traced'} "
                                          rf"is a link to {gone}, which is not there: create that folder or set "
                                          r"TORCH_EXTENSIONS_DIR to another; it runs on the python loop$"):  # fmt: skip
        trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    gone.mkdir()  # the fix it names (in a later process: a reason is kept for the process)
    monkeypatch.setattr(traced, "_traced", {})
    trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    assert len(list(gone.glob("*.so"))) == 1


@pytest.mark.parametrize("line", ["{cxx} -w", "FOO=1 {cxx}"])
def test_a_cxx_with_arguments_is_refused_as_the_engine_build_refuses_it(tmp_path, monkeypatch, line):
    """torch's build quotes CXX into its compile line (shlex.join): one program's name, so CXX='g++ -w' builds no
    engine (0575f1b), but the kernels split CXX into words and built with it: one CXX built one and not the other.
    The kernels run CXX as one program's name too, refused with the engine build's line; the compiler alone builds."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    cxx = shutil.which("c++") or "c++"
    monkeypatch.setenv("CXX", line.format(cxx=cxx))
    monkeypatch.setattr(traced, "_traced", {})
    with pytest.raises(Untraceable, match=r"^ReluRNN's kernels can't be compiled: torch's build runs CXX='.*' as "
                                          r"one program's name \(not as a command line: no arguments, no VAR=value\); "
                                          r"set CXX to the compiler alone, its name or path; it runs on the python "
                                          r"loop$"):  # fmt: skip
        trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    monkeypatch.setenv("CXX", cxx)
    monkeypatch.setattr(traced, "_traced", {})
    got = trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    assert got.fwd_f64 and got.bwd_f64
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++") + " -w")  # (no compiler there: said so)
    monkeypatch.setattr(traced, "_traced", {})
    with pytest.raises(
        Untraceable, match=r"kernels can't be compiled: no C\+\+ compiler '.*no-such-c\+\+ -w'"
    ):
        trace_cell(ReluRNN, 5, params_of(ReluRNN(2, 5)), torch.float64)


def test_a_failing_compiler_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # (runs, says nothing, fails)
    monkeypatch.setattr(traced, "_traced", {})
    with pytest.raises(
        Untraceable, match=r"^ReluRNN's kernels don't compile \(exit status 1\); it runs on the python"
    ):
        trace_cell(ReluRNN, 4, params_of(ReluRNN(2, 4)), torch.float64)
    assert os.listdir(tmp_path / "rnnkit_traced") == []


def _a_traced_library(tmp_path, monkeypatch):
    """The kernel library of a trace of ReluRNN, built in tmp_path's cache (nothing kept from other tests)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(traced, "_traced", {})
    monkeypatch.setattr(traced, "_libs", {})
    traced.trace_cell(ReluRNN, 4, [torch.randn(4, 4), torch.randn(4)], torch.float64)
    (good,) = (tmp_path / "rnnkit_traced").glob("*.so")
    return good


def test_a_damaged_library_in_the_cache_is_built_again(tmp_path, monkeypatch):
    """A cached kernel library that doesn't load (cut short on a full disk) failed the layer with ctypes' OSError
    ("file too short"); it is removed and compiled again (here: the library of a trace, as the rebuild gives it)."""
    good = _a_traced_library(tmp_path, monkeypatch)
    cut = tmp_path / "cut.so"
    cut.write_bytes(good.read_bytes()[:100])
    lib = traced._load_library(str(cut), lambda: str(good))
    assert hasattr(lib, "rnnkit_traced_fwd_f32") and not cut.exists()


def test_a_library_cut_in_half_is_built_again_not_a_bus_error(tmp_path, monkeypatch):
    """A kernel library cut short past its ELF header (half of it: a full disk, a cache copied in part) loaded
    with its segments mapped past the file's end, and the process died of SIGBUS ("Fatal Python error: Bus
    error"); the header's sizes are checked first, and it is removed and built again as one that doesn't load."""
    good = _a_traced_library(tmp_path, monkeypatch)
    cut = tmp_path / "cut.so"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert traced._whole_elf(str(good)) and not traced._whole_elf(str(cut))
    code = (f"from rnnkit.engine import traced; lib = traced._load_library({str(cut)!r}, lambda: {str(good)!r}); "
            "print(hasattr(lib, 'rnnkit_traced_fwd_f32'))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr[-500:]
    assert not cut.exists()


def test_a_library_of_another_elf_class_is_left_to_cdll_not_rebuilt(tmp_path):
    """A 32-bit platform's library (ELF class 1: armv7, i686) was read as an ELF64 header cut short: every load
    removed the cached library and compiled it again. Only an ELF64 header is checked; another class, or another
    format (macOS's Mach-O), is CDLL's to load or refuse; an ELF header itself cut short is no whole library."""
    elf32 = (
        b"\x7fELF\x01\x01\x01"
        + bytes(9)
        + struct.pack("<HHIIIIIHHHHHH", 3, 3, 1, 0, 52, 0, 0, 52, 32, 0, 40, 0, 0)
    )
    for name, data, whole in [("elf32.so", elf32 + bytes(200), True), ("tiny32.so", elf32, True),
                              ("macho.so", b"\xcf\xfa\xed\xfe" + bytes(60), True),
                              ("cut.so", b"\x7fELF\x02\x01", False), ("magic.so", b"\x7fEL", True)]:  # fmt: skip
        (tmp_path / name).write_bytes(data)
        assert traced._whole_elf(str(tmp_path / name)) is whole, name


def test_a_damaged_library_in_a_cache_that_cant_be_written_is_refused_in_one_line(tmp_path, monkeypatch):
    """Where the damaged library can't be removed (a read-only or shared cache), the layer's forward failed with
    os.remove's traceback (OSError: [Errno 30] Read-only file system); now the cell runs on the python loop, the
    reason naming the library and the fix."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(traced, "_traced", {})
    monkeypatch.setattr(traced, "_libs", {})
    P = [torch.randn(4, 4), torch.randn(4)]
    traced.trace_cell(ReluRNN, 4, P, torch.float64)
    (so,) = (tmp_path / "rnnkit_traced").glob("*.so")
    other = tmp_path / "other"  # (another path: this process has the first one loaded, and dlopen reuses it)
    (other / "rnnkit_traced").mkdir(parents=True)
    (other / "rnnkit_traced" / so.name).write_bytes(so.read_bytes()[:100])
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(other))

    def read_only(path, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(traced.os, "remove", read_only)
    monkeypatch.setattr(traced, "_traced", {})
    monkeypatch.setattr(traced, "_libs", {})
    with pytest.raises(Untraceable, match=r"^ReluRNN's kernels in .*\.so don't load and can't be built again "
                                          r"there \(Read-only file system\); set TORCH_EXTENSIONS_DIR to a "
                                          r"writable folder .*; it runs on the python loop$"):  # fmt: skip
        traced.trace_cell(ReluRNN, 4, P, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_over_its_whole_range_as_torchs(dtype):
    """The float kernels' log is rnnkit's own vectorised one (fastmath.h, flog; std::log ran one value at a time):
    torch's values from subnormals to the largest float, 0 to -inf, a negative x, inf and NaN as torch gives them."""
    tiny = [1e-45, 3e-42, 1.1e-38, 1.2e-38]  # subnormals, and both sides of the smallest normal float
    values = [*tiny, 1e-30, 1e-7, 0.1, 0.5, 0.7071, 0.7072, 0.99999, 1.0, 1.00001, 1.5, 2.0, 3.0, 10.0, 1e7, 3.4e38,
              0.0, -0.0, -1.0, INF, -INF, NAN]  # fmt: skip
    values += torch.logspace(-37, 37, 301, dtype=torch.float64).tolist()
    got, want = on_values(torch.log, lambda dh, a: dh / a, values, dtype)
    torch.testing.assert_close(got[0], want[0], rtol=2e-7 if dtype == torch.float32 else 1e-12, atol=0,
                               equal_nan=True)  # fmt: skip
    torch.testing.assert_close(got[1], want[1], **TOL[dtype], equal_nan=True)
