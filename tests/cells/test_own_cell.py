"""A cell of one's own, as a contributor writes one (one file, the equations, step and step_backward): checked
when its class is defined and run by every backend with the right gradients (the native loop through its traced
kernels, tests/engine/test_native_own_cell.py)."""

import re
import warnings

import pytest
import torch
from torch import nn

from rnnkit import CELLS, Recurrent
from rnnkit.cells import check_cell
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
    loop's rule for rnnkit's cells); a scalar EXTRAS parameter traces into the native loop too."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    grads = {}
    for be in ("autograd", backend):
        torch.manual_seed(0)
        layer = Recurrent(GainRNN, 3, 4, num_layers=2, bidirectional=True, backend=be).double()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            layer(x, lengths=torch.tensor([5, 3]))[0].pow(2).sum().backward()
        assert [str(w.message) for w in seen] == []  # (native: traced into the loop's kernels, no fallback)
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


def test_a_parameter_in_both_gemms_and_extras_is_refused_when_the_class_is_defined():
    """A name in both was accepted: the engine's GEMM after the loop and step_backward's EXTRAS gradient would
    each give it one (check_cell kept only the latter)."""
    with pytest.raises(RnnkitError, match="GainTwice: W_hh in both GEMMS and EXTRAS"):

        class GainTwice(GainRNN):
            EXTRAS = ("g", "W_hh")


def test_more_than_two_states_is_refused_when_the_class_is_defined():
    """A third state failed deep inside the layer (not enough values to unpack) and the cell's step dropped it."""
    with pytest.raises(RnnkitError, match=r"Tri.num_states = 3: .* one state \(h_t\) or two \(h_t, c_t\)"):

        class Tri(GainRNN):
            num_states = 3

    # 2.0 == 2 passed, and the layer failed deep inside: "slice indices must be integers or None ..."
    with pytest.raises(RnnkitError, match=r"Two.num_states = 2.0: .* one state \(h_t\) or two \(h_t, c_t\)"):

        class Two(GainRNN):
            num_states = 2.0


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


@pytest.mark.parametrize("start", ["ones", "wide"])
def test_a_cell_whose_init_state_is_not_the_layers_zeros_is_refused_by_the_layer(start):
    """cell(x_t) starts from the cell's init_state, a layer from zeros of (B, output_size) and (B, hidden_size): a
    cell of one's own starting elsewhere (c_0 = 1) ran from zeros in a layer, in silence, and one whose c is wider
    than H (2H) failed inside its own step on the c of H units the layer gave it."""

    class Started(CELLS["lstm"]):
        def init_state(self, batch, dtype=None, device=None):
            h, c = super().init_state(batch, dtype, device)
            if start == "ones":
                return h, c + 1
            return h, torch.cat((c, c), 1)

    with pytest.raises(RnnkitError, match="Started.init_state gives .* but a layer starts from zeros of"):
        Recurrent(Started, 3, 4)
    Recurrent("lstm", 3, 4, proj_size=2)  # (LSTMP's init_state is the layer's zeros)


def _layer_loss(Cls, backend, H=4):
    """Recurrent(Cls) over a small batch, forward and backward."""
    torch.manual_seed(0)
    layer = Recurrent(Cls, 3, H, backend=backend)
    layer(torch.randn(2, 5, 3))[0].pow(2).sum().backward()
    return layer


def _bare_h(xw_t, state, P):
    (h_t,), us, cache = gain_step(xw_t, state, P)
    return h_t, us, cache


def _no_us(xw_t, state, P):
    new, _, cache = gain_step(xw_t, state, P)
    return new, (), cache


def _wide_h(xw_t, state, P):
    (h_t,), us, cache = gain_step(xw_t, state, P)
    return (torch.cat((h_t, h_t), 1),), us, cache


def _backward(change):
    """gain_step_backward with its result (dxw, dstate_prev, dpres, dextras) passed through change."""
    return staticmethod(lambda dstate, cache, P: change(*gain_step_backward(dstate, cache, P)))


MALFORMED = {
    "step returns h_t, not (h_t,)": (
        dict(step=staticmethod(_bare_h)),
        r"GainBad.step must return state_t as a tuple of 1 tensor\(s\) .* got a Tensor",
    ),
    "step returns no us": (
        dict(step=staticmethod(_no_us)),
        r"GainBad.step returned 0 vector\(s\) in us for 1 GEMMS entry .*W_hh",
    ),
    "step returns h_t too wide": (
        dict(step=staticmethod(_wide_h)),
        r"GainBad.step returned state_t\[0\] of shape \(2, 8\); it must be \(2, 4\)",
    ),
    "two states declared, one returned": (
        dict(num_states=2, step=staticmethod(lambda xw_t, state, P: gain_step(xw_t, state[:1], P))),
        r"GainBad.step must return state_t as a tuple of 2 tensor\(s\) .* got 1",
    ),
    "step_backward returns 3 items": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp, dpre))),
        r"GainBad.step_backward must return \(dxw_t, dstate_prev, dpres, dextras\), got 3 item",
    ),
    "dxw too wide": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (torch.cat((dxw, dxw), 1), dp, dpre, de))),
        r"GainBad.step_backward returned dxw_t of shape \(2, 8\); it must be \(2, 4\)",
    ),
    "dstate_prev a bare tensor": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp[0], dpre, de))),
        r"GainBad.step_backward must return dstate_prev as a tuple of 1 tensor\(s\)",
    ),
    "dstate_prev narrow": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, (dp[0][:, :2],), dpre, de))),
        r"GainBad.step_backward returned dstate_prev\[0\] of shape \(2, 2\); it must be \(2, 4\)",
    ),
    "no dpres": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp, (), de))),
        r"GainBad.step_backward returned 0 gradient\(s\) in dpres for 1 GEMMS entry",
    ),
    "dpre narrow": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp, (dpre[0][:, :2],), de))),
        r"GainBad.step_backward returned dpres\[0\] of shape \(2, 2\) for W_hh \(4, 4\); it must be \(2, 4\)",
    ),
    "no dextras": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp, dpre, ()))),
        r"GainBad.step_backward returned 0 gradient\(s\) in dextras for 1 EXTRAS entry .*g",
    ),
    "dextra per unit for a scalar": (
        dict(step_backward=_backward(lambda dxw, dp, dpre, de: (dxw, dp, dpre, (de[0].expand(3),)))),
        r"GainBad.step_backward returned dextras\[0\] of shape \(3,\) for g \(\); it must be \(\)",
    ),
}


@pytest.mark.parametrize("backend", ["autograd", "python"])
@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_step_or_step_backward_of_the_wrong_form_is_said_in_one_line_at_its_first_step(what, backend):
    """What step and step_backward return is checked at a cell of one's own's first step: the loops failed deep
    inside (too many values to unpack, shapes that cannot be multiplied, "expected Variable or None (got int)"),
    or gave wrong numbers in silence: no dpres left the weight gradient as the loop's empty buffer (whatever the
    memory held), a bare h_t made cell(x_t) return the first row of the batch. (autograd runs no step_backward.)"""
    attrs, message = MALFORMED[what]
    Bad = type("GainBad", (GainRNN,), attrs)
    if backend == "autograd" and "step_backward" in attrs:
        _layer_loss(Bad, backend)
        return
    with pytest.raises(RnnkitError, match=message):
        _layer_loss(Bad, backend)
    if "step" in attrs or "num_states" in attrs:  # the module's own step too
        with pytest.raises(
            RnnkitError, match=message.replace(r"\(2, 8\)", r"\(1, 8\)").replace(r"\(2, 4\)", r"\(1, 4\)")
        ):
            Bad(3, 4)(torch.randn(1, 3), None if Bad.num_states == 1 else (torch.zeros(1, 4),) * 2)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("what", ["state_t", "us"])
def test_a_step_returning_its_state_in_another_dtype_is_said_in_one_line_at_its_first_step(backend, what):
    """A float64 run whose step returns h_t in float32 (a .float() left in it): the autograd and python loops failed
    at the second step inside the step's own matmul ("mat1 and mat2 must have the same dtype"), while the native
    loop ran it in silence, the state rounded to float32 and fed back in float64; a float32 u_k failed after the
    python loop, in its dU_k ("expected m1 and m2 to have the same dtype"). Every backend says so at the first
    step, as it says a state of the wrong shape."""

    def to_float(xw_t, state, P):
        (h_t,), (u,), cache = gain_step(xw_t, state, P)
        if what == "state_t":
            return (h_t.float(),), (u,), cache
        return (h_t,), (u.float(),), cache

    Bad = type("GainBad", (GainRNN,), dict(step=staticmethod(to_float)))
    layer = Recurrent(Bad, 3, 4, backend=backend, dtype=torch.float64)
    said = "a state in" if what == "state_t" else "W_hh in"
    with pytest.raises(RnnkitError, match=rf"GainBad.step returned {what}\[0\] in torch.float32 for {said} "
                                          r"torch.float64"):  # fmt: skip
        layer(torch.randn(2, 5, 3, dtype=torch.float64))[0].pow(2).sum().backward()


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("cast", [torch.float64, torch.bfloat16])
def test_a_step_backward_returning_its_dstate_prev_in_another_dtype_is_said_in_one_line(backend, cast):
    """A float32 run whose step_backward returns dh_{t-1} in float64 failed at the next step inside its own
    da_t @ W_hh ("expected m1 and m2 to have the same dtype, but got: double != float"), and one returning it in
    bfloat16 ran, every gradient rounded to bfloat16 (x's 9e-4 off), in silence. Both say so, as check_step says a
    state_t of another dtype; check_cell too."""

    def cast_back(dstate, cache, P):
        dxw, (dh_prev,), dpres, dextras = gain_step_backward(dstate, cache, P)
        return dxw, (dh_prev.to(cast),), dpres, dextras

    Bad = type("GainBad", (GainRNN,), dict(step_backward=staticmethod(cast_back)))
    layer = Recurrent(Bad, 3, 4, backend=backend, dtype=torch.float32)
    with pytest.raises(RnnkitError, match=rf"^GainBad.step_backward returned dstate_prev\[0\] in {cast} for a state "
                                          r"gradient in torch.float32; .*compute it in torch.float32"):  # fmt: skip
        layer(torch.randn(2, 5, 3, dtype=torch.float32))[0].pow(2).sum().backward()
    if cast == torch.bfloat16:  # (check_cell runs in float64: a float64 dh_{t-1} is right there)
        with pytest.raises(
            RnnkitError, match=r"^GainBad.step_backward returned dstate_prev\[0\] in torch.bfloat16"
        ):
            check_cell(Bad)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("which", ["dxw_t", "dpres[0]", "dextras[0]"])
def test_a_step_backward_returning_a_gradient_in_a_narrower_dtype_is_said_in_one_line(backend, which):
    """A bfloat16 dxw_t, dpre or dextra in a float32 run (a .to(torch.bfloat16) left in step_backward) ran in silence,
    every gradient through it rounded to bfloat16 (1.6e-3 to 3.8e-3 off, a leaky cell of one's own). It is said at the first
    backward step; a float64 one, rounded back to float32 as it is stored, still runs."""

    def back(cast):
        def cast_back(dstate, cache, P):
            dxw, dprev, (dpre,), (dg,) = gain_step_backward(dstate, cache, P)
            if which == "dxw_t":
                dxw = dxw.to(cast)
            elif which == "dpres[0]":
                dpre = dpre.to(cast)
            else:
                dg = dg.to(cast)
            return dxw, dprev, (dpre,), (dg,)

        return staticmethod(cast_back)

    x = torch.randn(2, 5, 3, dtype=torch.float32)
    Bad = type("GainBad", (GainRNN,), dict(step_backward=back(torch.bfloat16)))
    layer = Recurrent(Bad, 3, 4, backend=backend, dtype=torch.float32)
    with pytest.raises(RnnkitError, match=rf"^GainBad.step_backward returned {re.escape(which)} in torch.bfloat16 in "
                                          r"a torch.float32 run, .*compute it in torch.float32"):  # fmt: skip
        layer(x)[0].pow(2).sum().backward()
    Wide = type("GainWide", (GainRNN,), dict(step_backward=back(torch.float64)))
    layer = Recurrent(Wide, 3, 4, backend=backend, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (native: it runs on the python loop, said so)
        layer(x)[0].pow(2).sum().backward()
    assert layer.cells[0].W_hh.grad.dtype == torch.float32


def diag_step(xw_t, state, P):
    """IndRNN (Li et al. 2018): h_t = relu(xw_t + u ⊙ h_{t-1}), u one recurrent weight per unit."""
    (h_prev,), (u,) = state, P
    h_t = torch.relu(xw_t + u * h_prev)
    return (h_t,), (h_prev,), (h_t, h_prev)


class DiagInGemms(Cell):
    """IndRNN with its vector u listed in GEMMS, as if it were a recurrent matrix (it belongs in EXTRAS)."""

    REC_PARAMS = ("u",)
    GEMMS = (("u", None),)
    step = staticmethod(diag_step)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.u = nn.Parameter(torch.rand(hidden_size))
        self.reset_parameters()


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_gemms_entry_that_is_no_matrix_is_said_in_one_line_at_its_first_step(backend):
    """A vector u of shape (H,) named in GEMMS: every backend, and cell(x_t), failed in the check of the first step
    itself, a bare 'IndexError: tuple index out of range' (reading U.shape[1]); it is said naming u and EXTRAS."""
    said = r"DiagInGemms: GEMMS names u of shape \(4,\), not a matrix \(N, K\): .* goes in EXTRAS"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (native: the python loop runs it, which says so)
        with pytest.raises(RnnkitError, match=said):
            _layer_loss(DiagInGemms, backend)
    with pytest.raises(RnnkitError, match=said):
        DiagInGemms(3, 4)(torch.randn(2, 3))


def test_a_name_in_GEMMS_or_EXTRAS_that_is_not_in_REC_PARAMS_is_refused_when_the_class_is_defined():
    """The python loop failed on it with "tuple.index(x): x not in tuple" (autograd ran: P has no such entry)."""
    with pytest.raises(RnnkitError, match=r"NoBias: GEMMS names b_hh, which is not in REC_PARAMS \(W_hh\)"):

        class NoBias(GainRNN):
            REC_PARAMS = ("W_hh",)
            GEMMS = (("W_hh", "b_hh"),)
            EXTRAS = ()

    with pytest.raises(
        RnnkitError, match=r"GainS: REC_PARAMS must be a tuple of names, got the string 'W_hh'"
    ):

        class GainS(GainRNN):
            REC_PARAMS = "W_hh"


def test_a_step_written_as_a_plain_method_is_refused_when_the_class_is_defined():
    """A `def step(xw_t, state, P)` in the class body ran in the layer (which calls it on the class) but not in
    cell(x_t), which passed the cell as xw_t: "takes 3 positional arguments but 4 were given"."""
    with pytest.raises(RnnkitError, match=r"Plain.step is a plain function .* staticmethod"):

        class Plain(GainRNN):
            step = gain_step


def test_a_REC_PARAMS_attribute_the_cell_never_created_is_said_when_the_layer_is_built():
    """nn.Module's "'Forgot' object has no attribute 'b_hh'" came at the first forward."""

    class Forgot(GainRNN):
        def __init__(self, input_size, hidden_size, bias=True):
            Cell.__init__(self, input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)))
            self.g = nn.Parameter(torch.tensor(1.0))

    with pytest.raises(
        RnnkitError, match=r"Forgot has no b_hh, which REC_PARAMS names: create it in __init__"
    ):
        Recurrent(Forgot, 3, 4)


def test_a_cell_whose_weights_were_never_drawn_is_said_when_the_layer_is_built():
    """A cell of one's own whose __init__ forgot self.reset_parameters() ran on torch.empty's memory: NaN (or 1e37)
    weights, NaN outputs from the first step, no word of why. So too a parameter made by recurrent_weights that its
    own reset_parameters leaves undrawn (a per-unit peephole weight in EXTRAS). Both are one line when the layer is
    built, and in check_cell."""

    class NoReset(GainRNN):
        def __init__(self, input_size, hidden_size, bias=True):
            Cell.__init__(self, input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.g = nn.Parameter(torch.tensor(1.3))

    class Undrawn(GainRNN):  # g made as the GEMMS weights are, and left to reset_parameters, which forgets it
        def __init__(self, input_size, hidden_size, bias=True):
            Cell.__init__(self, input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)), ("g", ()))
            self.reset_parameters()

    for Cls, names in ((NoReset, "W_xh, b_xh, W_hh, b_hh"), (Undrawn, "g")):
        with pytest.raises(RnnkitError, match=rf"{Cls.__name__}'s {names} (was|were) never drawn") as got:
            Recurrent(Cls, 3, 4)
        assert "\n" not in str(got.value) and "reset_parameters" in str(got.value)
        with pytest.raises(RnnkitError, match=rf"{Cls.__name__}'s {names} (was|were) never drawn"):
            check_cell(Cls)
    Recurrent(GainRNN, 3, 4)  # (drawn: built as before)


def test_a_parameter_REC_PARAMS_does_not_list_is_said_when_the_layer_is_built():
    """step and step_backward get only REC_PARAMS in P: a parameter of the cell not listed there (a layer norm's β
    left out, a torch.nn.LayerNorm held as a submodule) never reached them. A step that unpacks it failed at the first
    forward in "ValueError: not enough values to unpack (expected 4, got 3)", 13 frames deep in the tracer; one that
    doesn't read it left it without a gradient, untrained, in silence."""

    class Beta(GainRNN):
        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            self.beta = nn.Parameter(torch.zeros(hidden_size))

    class Held(GainRNN):
        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            self.ln = nn.LayerNorm(hidden_size)

    for Cls, names in ((Beta, "a parameter beta"), (Held, "parameters ln.weight, ln.bias")):
        with pytest.raises(
            RnnkitError, match=rf"{Cls.__name__} has {names} that REC_PARAMS does not list"
        ) as got:
            Recurrent(Cls, 3, 4)
        assert "\n" not in str(got.value) and "EXTRAS" in str(got.value)

    class Projected(Beta):  # (a projection of its own may read it: not asked)
        def project_input(self, xs):
            return super().project_input(xs) + self.beta

    Recurrent(Projected, 3, 4)
    Recurrent(GainRNN, 3, 4)


def test_a_cell_whose_init_takes_no_bias_runs_in_a_layer_and_check_cell():
    """A cell of one's own written as __init__(self, input_size, hidden_size) (the README asks no bias option of it)
    built by itself, but Recurrent passed it bias=True, given or not: "TypeError: NoBias.__init__() got an unexpected
    keyword argument 'bias'", and check_cell, which builds such layers, failed so too. bias=False, which it can't take,
    is one line."""

    class NoBias(GainRNN):
        def __init__(self, input_size, hidden_size):
            super().__init__(input_size, hidden_size)

    check_cell(NoBias)
    out, _ = Recurrent(NoBias, 3, 4, num_layers=2)(torch.randn(2, 5, 3))
    assert out.shape == (2, 5, 4)
    with pytest.raises(
        RnnkitError, match=r"NoBias's __init__ takes no bias, so bias=False can't reach it"
    ) as got:
        Recurrent(NoBias, 3, 4, bias=False)
    assert "\n" not in str(got.value)


def _softsign_step(xw_t, state, P):
    """h_t = a_t / (1 + |a_t|), a_t = xw_t + h_{t-1} W_hhᵀ + b_hh."""
    (h_prev,) = state
    a_t = xw_t + linear(h_prev, *P)
    return (a_t / (1 + a_t.abs()),), (h_prev,), (a_t,)


def _softsign_step_backward_wrong(dstate, cache, P):
    """softsign' = 1 / (1 + |a|)², written without its square: off by a factor 1 + |a|."""
    (dh_t,), (a_t,) = dstate, cache
    da_t = dh_t / (1 + a_t.abs())
    return da_t, (da_t @ P[0],), (da_t,), ()


def test_check_cell_names_the_gradient_a_slightly_wrong_step_backward_gets_wrong():
    """A cell of one's own whose step_backward is not quite the derivative of its step trained with its gradients
    in silence on the python backend; rnnkit.cells.check_cell compares it with autograd, one step and a sequence."""
    from rnnkit.cells import check_cell

    class Softsign(Cell):
        step = staticmethod(_softsign_step)
        step_backward = staticmethod(_softsign_step_backward_wrong)

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.reset_parameters()

    before = torch.random.get_rng_state()
    with pytest.raises(RnnkitError, match=r"Softsign: the gradient of dxw_t \(one step\) differs from autograd's .* "
                                          r"fix step_backward"):  # fmt: skip
        check_cell(Softsign)
    check_cell(GainRNN, 2, 3)
    check_cell("leaky", learn_alpha=True)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream as it was


@pytest.mark.parametrize("name", sorted(CELLS))
def test_check_cell_passes_rnnkits_own_cells(name):
    from rnnkit.cells import check_cell

    check_cell(name)


def masked_step(xw_t, state, P):
    """Only the units a boolean buffer keeps move: h_t = where(keep, tanh(xw_t + h_{t-1} W_hhᵀ + b_hh), h_{t-1})."""
    (h_prev,) = state
    W_hh, b_hh, keep = P
    hc = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (torch.where(keep, hc, h_prev),), (h_prev,), (hc,)


def masked_step_backward(dstate, cache, P, kept_units_pass=True):
    (dh_t,), (hc,) = dstate, cache
    W_hh, _, keep = P
    da = torch.where(keep, dh_t, 0.0) * (1 - hc * hc)
    dh_prev = da @ W_hh + (torch.where(keep, 0.0, dh_t) if kept_units_pass else 0.0)
    return da, (dh_prev,), (da,), (torch.zeros(keep.shape),)


class Masked(Cell):
    """A boolean buffer among the recurrent parameters (EXTRAS: it has no gradient), which the loops run with."""

    REC_PARAMS = ("W_hh", "b_hh", "keep")
    EXTRAS = ("keep",)
    step = staticmethod(masked_step)
    step_backward = staticmethod(masked_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.register_buffer("keep", torch.arange(hidden_size) % 2 == 0)
        self.reset_parameters()


def test_check_cell_takes_a_boolean_buffer_among_the_parameters():
    """check_cell made every recurrent parameter require grad and failed on the mask in torch's "only Tensors of
    floating point dtype can require gradients", where every backend runs the cell; it checks the rest, and still
    names a term the backward leaves out."""
    check_cell(Masked)
    Wrong = type("Wrong", (Masked,), {"step_backward": staticmethod(
        lambda dstate, cache, P: masked_step_backward(dstate, cache, P, kept_units_pass=False))})  # fmt: skip
    with pytest.raises(
        RnnkitError, match=r"^Wrong: the gradient of the state's entry 0 at t-1 .* fix step_backward"
    ):
        check_cell(Wrong)


def test_a_recurrent_matrix_of_another_name_than_W_is_drawn_by_reset_parameters():
    """reset_parameters drew the weights named W_* and b_* only: a cell of one's own naming its recurrent matrix U
    (as papers often do), listed in GEMMS, kept torch.empty's memory as its initial weights, whatever it held."""

    class UCell(GainRNN):
        REC_PARAMS = ("U", "c", "g")
        GEMMS = (("U", "c"),)

        def __init__(self, input_size, hidden_size, bias=True):
            Cell.__init__(self, input_size, hidden_size, bias)
            self.U = nn.Parameter(torch.full((hidden_size, hidden_size), float("nan")))
            self.c = nn.Parameter(torch.full((hidden_size,), float("nan")))
            self.g = nn.Parameter(torch.tensor(1.0))
            self.reset_parameters()

    torch.manual_seed(0)
    cell = UCell(3, 16)
    for p in (cell.U.detach(), cell.c.detach()):
        assert bool(p.isfinite().all()) and float(p.abs().max()) <= 16**-0.5 and float(p.std()) > 0
    assert cell.g.item() == 1.0  # (not in GEMMS: the cell's own to draw)


def test_check_cell_names_step_us_beside_dpres_for_a_wrong_weight_gradient():
    """dU_k = dpre_kᵀ u_k: a step returning h_t in us where h_{t-1} belongs gave a wrong W_hh gradient, which
    check_cell told the user to fix in step_backward, whose dpres were right."""
    from rnnkit.cells import check_cell

    def h_t_as_u(xw_t, state, P):
        new, _, cache = gain_step(xw_t, state, P)
        return new, new, cache

    Wrong = type("GainWrongU", (GainRNN,), dict(step=staticmethod(h_t_as_u)))
    with pytest.raises(RnnkitError, match=r"GainWrongU: the gradient of W_hh \(one step\) differs .*: fix "
                                          r"step_backward's dpres or the u_k that step returns in us for W_hh$"):  # fmt: skip
        check_cell(Wrong)


def test_an_EXTRAS_parameter_named_W_is_the_cells_own_to_draw():
    """reset_parameters drew every parameter named W_* or b_*, an EXTRAS one too (an IndRNN's per-unit recurrent
    weight W_diag, a gain W_g): the value the cell gave it in __init__ became U(-1/√H, 1/√H), in silence, where the
    README says an EXTRAS parameter is the cell's own to draw."""

    class NamedGain(GainRNN):
        REC_PARAMS = ("W_hh", "b_hh", "W_g")
        EXTRAS = ("W_g",)

        def __init__(self, input_size, hidden_size, bias=True):
            Cell.__init__(self, input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.W_g = nn.Parameter(torch.tensor(1.3))
            self.reset_parameters()

    cell = NamedGain(3, 4)
    assert cell.W_g.detach().item() == pytest.approx(1.3)
    W_hh = cell.W_hh.detach()
    assert float(W_hh.abs().max()) <= 0.5 and float(W_hh.std()) > 0  # (the GEMMS matrix drawn)


def optional_gain_step(xw_t, state, P):
    """h_t = tanh(g ⊙ (xw_t + h_{t-1} W_hhᵀ + b_hh)), or without g where the cell has none."""
    (h_prev,) = state
    W_hh, b_hh, g = P
    a_t = xw_t + linear(h_prev, W_hh, b_hh)
    h_t = torch.tanh(a_t if g is None else g * a_t)
    return (h_t,), (h_prev,), (h_t, a_t)


def optional_gain_step_backward(dstate, cache, P):
    (dh_t,), (h_t, a_t) = dstate, cache
    W_hh, _, g = P
    dz = dh_t * (1 - h_t * h_t)
    da_t = dz if g is None else dz * g
    return da_t, (da_t @ W_hh,), (da_t,), (None if g is None else (dz * a_t).sum(0),)


class OptionalGain(Cell):
    """A per-unit gain g that the cell may not have (gain=False: None, as an absent bias is)."""

    REC_PARAMS = ("W_hh", "b_hh", "g")
    EXTRAS = ("g",)
    step = staticmethod(optional_gain_step)
    step_backward = staticmethod(optional_gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, gain=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.g = nn.Parameter(torch.rand(hidden_size) + 0.5) if gain else None
        self.reset_parameters()


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("gain", [True, False])
def test_an_extras_parameter_the_cell_does_not_have_is_none_as_an_absent_bias(backend, gain):
    """gain=False: python's BPTT failed summing its gradient ("unsupported operand type(s) for +: 'int' and
    'NoneType'"), and so did check_cell; the trace failed on it too (a KeyError from inside the analysis)."""
    from rnnkit.cells import check_cell

    check_cell(OptionalGain, gain=gain)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    grads = {}
    for be in ("autograd", backend):
        torch.manual_seed(0)
        layer = Recurrent(OptionalGain, 3, 4, bidirectional=True, backend=be, gain=gain).double()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (native: traced into the loop's kernels, no fallback)
            layer(x, lengths=torch.tensor([5, 3]))[0].pow(2).sum().backward()
        grads[be] = [p.grad for p in layer.parameters()]
    for a, b in zip(grads["autograd"], grads[backend], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_a_state0_of_batch_one_is_broadcast_for_a_cell_of_ones_own(lengths):
    """run takes state0 (1, H) for a batch of B on every backend; with a cell of one's own the autograd loop handed
    the step a state of one row, and the check of its first step failed: "GainRNN.step returned us[0] of shape
    (1, 4) for W_hh (4, 4); it must be (3, 4)" (as under backward(create_graph=True), which reruns that loop)."""
    torch.manual_seed(0)
    cell = GainRNN(3, 4).double()
    xw = cell.project_input(torch.randn(5, 3, 3, dtype=torch.float64)).detach().requires_grad_()
    mask = None if lengths is None else (torch.arange(5)[:, None] < torch.tensor(lengths)).double()[..., None]
    h0 = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    P = [p.detach().requires_grad_() for p in cell.rec_params()]
    results = {}
    for backend in ("autograd", "python", "native"):
        hs, (h_T,) = run(cell, xw, (h0,), P, mask, backend=backend)
        loss = (
            hs * torch.linspace(-1, 1, hs.numel(), dtype=hs.dtype).reshape(hs.shape)
        ).sum() + h_T.sin().sum()
        grads = torch.autograd.grad(loss, (xw, h0, *P), create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in grads), (xw, h0, *P))
        results[backend] = (hs, h_T, *grads, *second)
    for backend in ("python", "native"):
        for a, b in zip(results["autograd"], results[backend], strict=True):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def autonomous_step(xw_t, state, P):
    """h_t = tanh(h_{t-1} W_hhᵀ + b_hh): xw_t is not read (a cell driven by its initial state alone)."""
    (h_prev,) = state
    h_t = torch.tanh(linear(h_prev, *P))
    return (h_t,), (h_prev,), (h_t,)


def autonomous_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    da = dh_t * (1 - h_t * h_t)
    return torch.zeros_like(da), (da @ P[0],), (da,), ()


class Autonomous(Cell):
    step = staticmethod(autonomous_step)
    step_backward = staticmethod(autonomous_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.reset_parameters()


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_step_that_does_not_read_xw_gives_the_input_weights_zeros_on_every_backend(backend):
    """The input projection is in the layer's graph, its gradient zero: python and native gave W_xh, b_xh and x
    zeros (step_backward's dxw_t), the autograd backend None, so AdamW decayed W_xh on the one and not on the
    other. Zeros on every backend, as torch.nn's RNNs give a weight whose gradient is zero."""
    torch.manual_seed(0)
    layer = Recurrent(Autonomous, 3, 4, backend=backend).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.full((1, 2, 4), 0.5, dtype=torch.float64)
    out, h = layer(x, h0)
    (out.pow(2).sum() + h.sum()).backward()
    for g in (layer.cells[0].W_xh.grad, layer.cells[0].b_xh.grad, x.grad):
        assert g is not None and not g.any()
    assert layer.cells[0].W_hh.grad.any()


def idle_gain_step(xw_t, state, P):
    """h_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh): the gain g (EXTRAS, one per unit) is not read on this path."""
    (h_prev,) = state
    h_t = torch.tanh(xw_t + linear(h_prev, P[0], P[1]))
    return (h_t,), (h_prev,), (h_t,)


def idle_gain_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    da = dh_t * (1 - h_t * h_t)
    return da, (da @ P[0],), (da,), ((0 * da).sum(0),)  # (zeros, in the form the native loop sums)


class IdleGain(GainRNN):
    step = staticmethod(idle_gain_step)
    step_backward = staticmethod(idle_gain_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.g = nn.Parameter(torch.ones(hidden_size))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_extras_parameter_step_does_not_read_gets_zeros_on_every_backend(backend, reverse):
    """An EXTRAS parameter that step leaves out (its step_backward's gradient zeros): python and native gave g.grad
    zeros, the autograd backend None (AdamW decayed g on the one and not on the other). Zeros on every backend, as
    for a step that does not read xw_t."""
    torch.manual_seed(0)
    layer = Recurrent(IdleGain, 3, 4, backend=backend, bidirectional=reverse).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    layer(x, lengths=torch.tensor([5, 2]))[0].pow(2).sum().backward()
    for cell in layer.cells:
        assert cell.g.grad is not None and not cell.g.grad.any()
        assert cell.W_hh.grad.any()


def cumulative_step(xw_t, state, P):
    """a_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh);  c_t = c_{t-1} + a_t;  h_t = tanh(c_t)."""
    h_prev, c_prev = state
    a_t = torch.tanh(xw_t + linear(h_prev, *P))
    c_t = c_prev + a_t
    return (torch.tanh(c_t), c_t), (h_prev,), (torch.tanh(c_t), a_t)


def cumulative_step_backward_in_place(dstate, cache, P):
    """The right derivative, but dc_t.add_(...) writes into the caller's dL/dc_t."""
    (dh_t, dc_t), (h_t, a_t) = dstate, cache
    dc = dc_t.add_(dh_t * (1 - h_t * h_t))
    da = dc * (1 - a_t * a_t)
    return da, (da @ P[0], dc), (da,), ()


def cumulative_cell():
    """A new class each call (a test changes its step_backward): the cell of cumulative_step, its step_backward the
    one that writes in place."""

    class Cumulative(Cell):
        num_states = 2
        step = staticmethod(cumulative_step)
        step_backward = staticmethod(cumulative_step_backward_in_place)

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.reset_parameters()

    return Cumulative


def test_check_cell_names_an_input_step_backward_changes_in_place():
    """The functions must be pure; a step_backward adding into its dstate_t in place passed check_cell (its numbers
    are right), then on the python backend changed the caller's gradient in silence, or failed deep inside on an
    expanded one (a loss c_T.sum(): "more than one element of the written-to tensor refers to a single memory
    location"). check_cell says which input it changed (version counters: nothing copied)."""
    from rnnkit.cells import check_cell

    Cumulative = cumulative_cell()
    with pytest.raises(
        RnnkitError, match=r"Cumulative.step_backward changed its input dstate_t\[1\] in place: .*pure"
    ):
        check_cell(Cumulative)

    def pure(dstate, cache, P):
        return cumulative_step_backward_in_place((dstate[0], dstate[1].clone()), cache, P)

    Cumulative.step_backward = staticmethod(pure)
    check_cell(Cumulative)


@pytest.mark.parametrize("where", ["state[1]", "xw_t", "P[0]"])
def test_check_cell_names_an_input_step_changes_in_place(where):
    """A step writing into its c_{t-1}, xw_t or W_hh in place: check_cell, whose one step takes leaves that require
    grad, ended in torch's 'a leaf Variable that requires grad is being used in an in-place operation', naming neither
    step nor the input, where the layer's first step names both."""
    from rnnkit.cells import check_cell

    def step(xw_t, state, P):
        {"state[1]": state[1], "xw_t": xw_t, "P[0]": P[0]}[where].mul_(1.0)
        return cumulative_step(xw_t, state, P)

    Cumulative = cumulative_cell()
    Cumulative.step = staticmethod(step)
    with pytest.raises(
        RnnkitError, match=rf"^Cumulative.step changed its input {re.escape(where)} in place: .*pure"
    ):
        check_cell(Cumulative)


def test_a_step_backward_changing_its_input_in_place_is_named_at_its_first_step():
    """Without check_cell: the python loop checks a cell of one's own's first step as it checks what it returns: the
    caller's dL/dc_T was changed in silence (a loss on c_T)."""

    Cumulative = cumulative_cell()
    torch.manual_seed(0)
    layer = Recurrent(Cumulative, 3, 4, backend="python")
    out, (h, c) = layer(torch.randn(2, 5, 3))
    dc = torch.randn_like(c)
    with pytest.raises(
        RnnkitError, match=r"Cumulative.step_backward changed its input dstate_t\[1\] in place"
    ):
        torch.autograd.backward([out, c], [torch.ones_like(out), dc])


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_cell_of_ones_own_runs_under_inference_mode(backend):
    """torch.inference_mode() (evaluation, serving): the python loop's check of the first step read the version
    counters of its inputs, which inference tensors don't have, and failed with torch's "Inference tensors do not
    track version counter" where no_grad and the other loops ran."""
    torch.manual_seed(0)
    layer = Recurrent(GainRNN, 3, 4, backend=backend)
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        want = layer(x)[0]
    with torch.inference_mode():
        got = layer(x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("what, value", [("batch", 0), ("steps", 0), ("batch", 2.5), ("steps", True)])
def test_check_cell_of_no_rows_or_steps_is_one_line(what, value):
    """check_cell(cell, batch=0) failed in an IndexError traceback from inside (the lengths of its sequence check),
    steps=0 in the layer's 'input has no time steps', a number check_cell's caller never gave; both name the
    argument."""
    from rnnkit.cells import check_cell

    with pytest.raises(RnnkitError, match=rf"^check_cell's {what} must be an integer >= 1, got {value!r}$"):
        check_cell("gru", **{what: value})


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("grad", [True, False])
def test_a_step_changing_its_xw_t_in_place_is_one_line_on_every_backend(backend, grad):
    """xw_t.mul_(1.0) in a step: the python and native loops named it, the autograd loop under grad ended in torch's
    'Output 0 of UnbindBackward0 is a view and is being modified inplace' traceback."""

    def step(xw_t, state, P):
        (h_prev,) = state
        xw_t.mul_(1.0)
        h_t = torch.tanh(xw_t + linear(h_prev, *P))
        return (h_t,), (h_prev,), (h_t,)

    class InPlace(Cell):
        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.reset_parameters()

    InPlace.step = staticmethod(step)

    def step_backward(dstate, cache, P):
        (dh_t,), (h_t,) = dstate, cache
        da = dh_t * (1 - h_t * h_t)
        return da, (da @ P[0],), (da,), ()

    InPlace.step_backward = staticmethod(step_backward)
    x = torch.randn(2, 4, 3, requires_grad=grad)
    with pytest.raises(RnnkitError, match=r"^InPlace.step changed its input xw_t in place: .*pure functions"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (native: the python loop's, with a warning that it falls back)
            Recurrent(InPlace, 3, 5, backend=backend)(x)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("where", ["state[1]", "P[1]"])
def test_a_step_changing_a_parameter_or_a_given_state_in_place_is_one_line_on_every_backend(backend, where):
    """b_hh.mul_(1.0), or c_{t-1}.mul_(1.0) of an initial state that requires grad, in a step: the python and native
    loops named it, the autograd loop ended in torch's 'a leaf Variable (or a view of one) that requires grad is
    being used in an in-place operation', naming neither step nor the input (as check_cell did before c3f54cb)."""

    def step(xw_t, state, P):
        {"state[1]": state[1], "P[1]": P[1]}[where].mul_(1.0)
        return cumulative_step(xw_t, state, P)

    Cumulative = cumulative_cell()
    Cumulative.step = staticmethod(step)
    h0, c0 = (torch.zeros(1, 2, 5, requires_grad=True) for _ in range(2))
    with pytest.raises(
        RnnkitError,
        match=rf"^Cumulative.step changed its input {re.escape(where)} in place: .*pure functions",
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (native: the python loop's, with a warning that it falls back)
            Recurrent(Cumulative, 3, 5, backend=backend)(torch.randn(2, 4, 3), (h0, c0))


def test_a_step_changing_a_half_type_extras_parameter_in_place_is_refused_by_the_autograd_loop():
    """g.mul_(1.0) in a step, g a bfloat16 EXTRAS parameter: the autograd loop (since f868689) handed the steps a copy
    of g cast from float32, and such a step ran on in silence, where in float32 torch refuses it (a leaf changed in
    place) and the python loop names it. It is the python loop's line (the steps read the layer's float32 copy of g
    now: a half layer computes in float32)."""

    class InPlaceGain(GainRNN):
        @staticmethod
        def step(xw_t, state, P):
            P[2].mul_(1.0)
            return gain_step(xw_t, state, P)

    layer = Recurrent(InPlaceGain, 3, 4, backend="autograd").to(torch.bfloat16)
    with pytest.raises(
        RnnkitError, match=r"^InPlaceGain.step changed its input P\[2\] in place: .*pure functions"
    ):
        layer(torch.randn(2, 5, 3, dtype=torch.bfloat16))


def broadcast_bias_step(xw_t, state, P):
    """h_t = tanh(a_g) ⊙ σ(a_s), [a_g, a_s] = xw_t + h_{t-1} W_hhᵀ + b_hh; b_hh of any shape that broadcasts."""
    (h_prev,) = state
    H = h_prev.shape[1]
    a = xw_t + linear(h_prev, *P)
    g, s = torch.tanh(a[:, :H]), torch.sigmoid(a[:, H:])
    return (g * s,), (h_prev,), (g, s)


def broadcast_bias_step_backward(dstate, cache, P):
    (dh_t,), (g, s) = dstate, cache
    da = torch.cat((dh_t * s * (1 - g * g), dh_t * g * s * (1 - s)), 1)
    return da, (da @ P[0],), (da,), ()


def broadcast_bias_cell(shape):
    """A cell of one's own whose GEMMS bias b_hh has shape(H): (1, 2H) as Keras and numpy code keep a bias, (1,) or
    () one value for every unit."""

    class BroadcastBias(Cell):
        gates = 2
        step = staticmethod(broadcast_bias_step)
        step_backward = staticmethod(broadcast_bias_step_backward)

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            H = hidden_size
            recurrent_weights(self, ("W_hh", (2 * H, H)), ("b_hh", shape(H)))
            self.reset_parameters()

    return BroadcastBias


BIAS_SHAPES = {"row": lambda H: (1, 2 * H), "one": lambda H: (1,), "scalar": lambda H: ()}


@pytest.mark.parametrize("shape", sorted(BIAS_SHAPES))
def test_a_gemms_bias_that_broadcasts_gets_its_own_shape_of_gradient_on_every_backend(shape):
    """A GEMMS bias of shape (1, G·H) failed on the python loop in torch's 'Function PythonRecurrenceBackward returned
    an invalid gradient at index 4 - got [8] but expected shape compatible with [1, 8]' (its db = Σ dpre kept the
    row's shape, (G·H,)), where the autograd and native loops gave it its gradient. Every backend gives each its
    gradient, of its shape (a (1,) one runs on the python loop where native is asked: a tensor of one value); a 0-dim
    one, recurrent_weights(self, ("b_hh", ())), failed in torch.empty's TypeError 'missing 1 required positional
    arguments: "size"'."""
    Cls = broadcast_bias_cell(BIAS_SHAPES[shape])
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    got = {}
    for backend in ("autograd", "python", "native"):
        torch.manual_seed(0)
        layer = Recurrent(Cls, 2, 4, bidirectional=True, backend=backend).double()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (native, (1,): the python loop's, said in a warning)
            out, h_T = layer(x, lengths=torch.tensor([5, 2, 4]))
        (out.pow(2).sum() + h_T.sin().sum()).backward()
        got[backend] = [out, *(p.grad for p in layer.parameters())]
    for backend in ("python", "native"):
        for g, w in zip(got[backend], got["autograd"], strict=True):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", sorted(BIAS_SHAPES))
def test_check_cell_takes_a_gemms_bias_that_broadcasts(shape):
    """check_cell added db = Σ dpre as the row's (G·H,) and then failed a right step_backward: 'the gradient of b_hh
    (one step) has shape (8,), autograd's (1, 8)' (and (1,)); it sums db to the bias's shape, as the loops do."""
    from rnnkit.cells import check_cell

    check_cell(broadcast_bias_cell(BIAS_SHAPES[shape]))


def zoneout_step(xw_t, state, P):
    """Zoneout (Krueger et al. 2016): h_t = m ⊙ h_{t-1} + (1 - m) ⊙ tanh(xw_t + h_{t-1} W_hhᵀ + b), m ~ B(0.3)."""
    (h_prev,) = state
    hc = torch.tanh(xw_t + linear(h_prev, *P))
    m = (torch.rand_like(h_prev) < 0.3).to(h_prev.dtype)
    return (m * h_prev + (1 - m) * hc,), (h_prev,), (m, hc)


def zoneout_step_backward(dstate, cache, P):
    (dh_t,), (m, hc) = dstate, cache
    da = dh_t * (1 - m) * (1 - hc * hc)
    return da, (dh_t * m + da @ P[0],), (da,), ()


class Zoneout(Cell):
    step = staticmethod(zoneout_step)
    step_backward = staticmethod(zoneout_step_backward)

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
        self.reset_parameters()


def test_check_cell_passes_a_step_that_draws_and_still_names_a_wrong_backward():
    """A zoneout step draws its masks: check_cell ran the autograd and python layers from other states of torch's
    generator, other masks, and refused a right step_backward ('the gradient of the input x (a sequence) differs
    from autograd's ... by up to 0.541: fix step_backward'). Both run from one state; a wrong one is still named."""
    state = torch.get_rng_state()
    check_cell(Zoneout)
    assert torch.equal(torch.get_rng_state(), state)

    def wrong(dstate, cache, P):  # (the zoned units' dh_{t-1} left out)
        dxw, (dh_prev,), dpres, dextras = zoneout_step_backward(dstate, cache, P)
        return dxw, (dh_prev - dstate[0] * cache[0],), dpres, dextras

    with pytest.raises(RnnkitError, match=r"ZoneoutWrong: the gradient of .* differs from autograd's"):
        check_cell(type("ZoneoutWrong", (Zoneout,), dict(step_backward=staticmethod(wrong))))


def test_create_graph_through_a_step_that_draws_replays_the_forwards_draws():
    """backward(create_graph=True) runs the forward again (higher_order_grads): a zoneout step drew new masks
    there, and its gradients were those of another forward (3.7 off the first-order ones of the same forward,
    and of the autograd backend), with the caller's generator moved on by the draws. The rerun draws what the
    forward drew, and the generator is left as the forward left it (as torch.utils.checkpoint replays it)."""
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    got = {}
    for backend, create_graph in (("autograd", False), ("python", False), ("python", True)):
        torch.manual_seed(0)
        layer = Recurrent(Zoneout, 3, 4, backend=backend).double()
        xs = x.clone().requires_grad_()
        out = layer(xs)[0]
        grads = torch.autograd.grad(out.sin().sum(), [xs, *layer.parameters()], create_graph=create_graph)
        got[backend, create_graph] = [out, *grads, torch.rand(3)]
    for want in (got["autograd", False], got["python", False]):
        for g, w in zip(got["python", True], want, strict=True):
            torch.testing.assert_close(g.detach(), w, rtol=1e-10, atol=1e-12)


def _lstm_step_c32(xw_t, state, P):
    """The LSTM's step, its cache keeping c_{t-1} in float32 ("to save memory"): df_t = dc ⊙ c_{t-1} rounded."""
    from rnnkit.cells.lstm import lstm_step

    new, us, (i_t, f_t, g_t, o_t, c_prev, tanh_c) = lstm_step(xw_t, state, P)
    return new, us, (i_t, f_t, g_t, o_t, c_prev.float(), tanh_c)


def test_check_cell_names_a_step_backward_that_is_only_float32_accurate():
    """check_cell compared with rtol 1e-7, atol 1e-9, where a right step_backward agrees to 1e-15 in float64: an LSTM
    of one's own whose cache kept c_{t-1} in float32 passed for every seed, its float64 gradients 1e-8 off autograd's
    (a term rounded to float32, which a float32 run can't tell from rounding), though rnnkit's own cells are held to
    1e-12 (test_step_backward)."""
    from rnnkit.cells import LSTM
    from rnnkit.cells.lstm import lstm_step_backward

    C32 = type(
        "C32",
        (LSTM,),
        dict(step=staticmethod(_lstm_step_c32), step_backward=staticmethod(lstm_step_backward)),
    )
    for seed in (0, 1):
        with pytest.raises(RnnkitError, match=r"^C32: the gradient of .* differs from autograd's through step by up to "
                                              r"[0-9.]+e-0[89] .*: fix step_backward$"):  # fmt: skip
            check_cell(C32, seed=seed)
    check_cell("lstm", 5, 1, batch=1, steps=12)
    check_cell("leaky", 2, 6, learn_alpha=True, alpha=0.999, steps=12)


def _sqrt_step(xw_t, state, P):
    """h_t = √a_t, a_t = xw_t + h_{t-1} W_hhᵀ + b_hh: NaN where a_t < 0."""
    (h_prev,) = state
    h_t = torch.sqrt(xw_t + linear(h_prev, *P))
    return (h_t,), (h_prev,), (h_t,)


def _sqrt_step_backward(dstate, cache, P):
    """da_t = dh_t / (2 h_t): the right derivative, where the step is defined."""
    (dh_t,), (h_t,) = dstate, cache
    da = dh_t / (2 * h_t)
    return da, (da @ P[0],), (da,), ()


def test_check_cell_names_a_step_that_returns_nan_not_its_step_backward():
    """A step that is NaN at check_cell's random inputs (√ of a negative pre-activation) with the right derivative:
    check_cell said 'Sqrt: the gradient of dxw_t (one step) differs from autograd's through step by up to nan
    (autograd's largest nan): fix step_backward', both sides NaN, and sent the user to the function that is right."""

    class Sqrt(Cell):
        step = staticmethod(_sqrt_step)
        step_backward = staticmethod(_sqrt_step_backward)

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            recurrent_weights(self, ("W_hh", (hidden_size, hidden_size)), ("b_hh", (hidden_size,)))
            self.reset_parameters()

    with pytest.raises(RnnkitError, match=r"^Sqrt.step returned NaN in state_t\[0\] \(one step\) from finite inputs "
                                          r"\(check_cell's .*: make step finite for every input .*\)$"):  # fmt: skip
        check_cell(Sqrt)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_check_cell_runs_under_no_grad_and_inference_mode(mode):
    """check_cell called inside torch.no_grad() or torch.inference_mode() (an evaluation script's) failed in torch's
    'element 0 of tensors does not require grad and does not have a grad_fn', naming nothing: it differentiates
    tensors of its own, whatever the caller's mode, which it leaves as it was."""
    from rnnkit.cells import LSTM
    from rnnkit.cells.lstm import lstm_step, lstm_step_backward

    def doubled(dstate, cache, P):
        dxw, dprev, dpres, dextras = lstm_step_backward(dstate, cache, P)
        return 2 * dxw, dprev, dpres, dextras

    Doubled = type(
        "Doubled", (LSTM,), dict(step=staticmethod(lstm_step), step_backward=staticmethod(doubled))
    )
    with mode():
        check_cell("gru")
        with pytest.raises(RnnkitError, match=r"^Doubled: the gradient of dxw_t \(one step\) differs"):
            check_cell(Doubled)
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (mode is torch.inference_mode)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("unbatched", [False, True])
def test_a_step_changing_its_state_in_place_is_one_line_in_a_one_step_call(grad, unbatched):
    """cell(x_t, (h, c)) as torch.nn's cells are called: a step writing into c_{t-1} in place halved the caller's c
    in silence (the layers name it at their first step), or ended in torch's 'a leaf Variable that requires grad is
    being used in an in-place operation' for a c that requires grad."""

    def step(xw_t, state, P):
        state[1].mul_(0.5)
        return cumulative_step(xw_t, state, P)

    Cumulative = cumulative_cell()
    Cumulative.step = staticmethod(step)
    cell = Cumulative(3, 4)
    lead = () if unbatched else (2,)
    h, c = torch.zeros(*lead, 4), torch.ones(*lead, 4, requires_grad=grad)
    with pytest.raises(
        RnnkitError, match=r"^Cumulative.step changed its input state\[1\] in place: .*pure functions"
    ):
        cell(torch.randn(*lead, 3), (h, c))
    Cumulative.step = staticmethod(cumulative_step)  # the same call of a pure step: as before
    h_t, c_t = cell(torch.randn(*lead, 3), (h, torch.ones(*lead, 4)))
    assert h_t.shape == c_t.shape == (*lead, 4)


class _Normed(GainRNN):
    """A cell holding a submodule: its repr is many lines."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)
        self.norm = nn.LayerNorm(hidden_size)


@pytest.mark.parametrize(
    "given, said",
    [
        (
            lambda: _Normed(3, 4),
            r"check_cell takes a Cell class, not a cell: check_cell\(type\(cell\)\) \(_Normed\), .*",
        ),
        (
            lambda: "lsmt",
            r"check_cell: unknown cell 'lsmt'; choose one of: rnn_tanh, .*leaky, or give a Cell class",
        ),
        (
            lambda: nn.LSTM(3, 4),
            r"check_cell takes a Cell class or a name in rnnkit.CELLS, got a torch\.nn\..*\.LSTM",
        ),
        (
            lambda: nn.LSTM,
            r"check_cell takes a Cell class or a name in rnnkit.CELLS, got torch\.nn\.modules\.rnn\.LSTM",
        ),
    ],
)
def test_check_cell_of_something_else_than_a_cell_class_is_one_line_naming_the_fix(given, said):
    """A cell itself (check_cell(MyCell(3, 4))) was said as its repr, many lines for one holding a submodule and with
    no word of the fix; torch.nn's LSTM read as 'got LSTM(3, 4)', as rnnkit's own; a name that is not one listed none."""
    with pytest.raises(RnnkitError, match=rf"^{said}$"):
        check_cell(given())


def test_a_cell_given_to_the_layer_instead_of_its_class_is_one_line():
    """Recurrent(MyCell(3, 4), 3, 4) of a cell holding a submodule said the cell as its repr, four lines."""
    with pytest.raises(RnnkitError, match=r"^cell must be a name in rnnkit.CELLS \(.*\) or a Cell class, got a _Normed; "
                                          r"the class, type\(cell\) = _Normed$"):  # fmt: skip
        Recurrent(_Normed(3, 4), 3, 4)
