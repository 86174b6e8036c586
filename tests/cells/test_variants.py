"""Conventions the lectures disagree on, and the choices documented in the cell files."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from rnnkit import CELLS, Recurrent
from rnnkit.cells._base import TanhTail
from rnnkit.errors import RnnkitError


def test_gru_cho_z_convention_is_the_same_model():
    """h = z⊙h_prev + (1-z)⊙h̃ (ours, decks 002/003) equals h = (1-u)⊙h_prev + u⊙h̃ (deck 000)
    with u computed from negated z-weights."""
    torch.manual_seed(1)
    D, H, B = 3, 4, 2
    cell = CELLS["gru_cho"](D, H)
    x, h = torch.randn(B, D), torch.randn(B, H)
    (ours,), _, _ = cell.step(cell.project_input(x), (h,), cell.rec_params())

    W_xr, W_xz, W_xh = cell.W_xh.split(H)
    b_r, b_z, b_h = cell.b_xh.split(H)
    W_hr, W_hz = cell.W_hrz.split(H)
    r = torch.sigmoid(x @ W_xr.t() + h @ W_hr.t() + b_r)
    u = torch.sigmoid(x @ (-W_xz).t() + h @ (-W_hz).t() - b_z)  # the update gate of deck 000
    h_tilde = torch.tanh(x @ W_xh.t() + (r * h) @ cell.W_hh.t() + b_h)
    deck000 = (1 - u) * h + u * h_tilde
    torch.testing.assert_close(ours, deck000)


def test_mut1_mut2_projection_only_when_sizes_differ():
    for name in ("mut1", "mut2"):
        assert CELLS[name](5, 5).W_xp is None
        assert CELLS[name](3, 5).W_xp.shape == (5, 3)


def test_mut1_equals_paper_when_sizes_match():
    torch.manual_seed(2)
    H, B = 4, 3
    cell = CELLS["mut1"](H, H)
    x, h = torch.randn(B, H), torch.randn(B, H)
    (ours,), _, _ = cell.step(cell.project_input(x), (h,), cell.rec_params())
    W_xz, W_xr = cell.W_xh.split(H)
    b_z, b_r, b_h = cell.b_xh.split(H)
    z = torch.sigmoid(x @ W_xz.t() + b_z)
    r = torch.sigmoid(x @ W_xr.t() + h @ cell.W_hr.t() + b_r)
    paper = torch.tanh((r * h) @ cell.W_hh.t() + torch.tanh(x) + b_h) * z + h * (1 - z)
    torch.testing.assert_close(ours, paper)


def test_leaky_alpha_one_is_elman():
    torch.manual_seed(3)
    leaky = Recurrent("leaky", 3, 4, alpha=1.0, backend="python")
    elman = Recurrent("rnn_tanh", 3, 4, backend="python")
    elman.load_state_dict({k: v for k, v in leaky.state_dict().items() if "alpha" not in k})
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(leaky(x)[0], elman(x)[0])


def test_leaky_learned_alpha_gets_gradient():
    layer = Recurrent("leaky", 3, 4, learn_alpha=True, alpha=0.3, backend="python")
    torch.testing.assert_close(layer.cells[0].alpha, torch.full((4,), 0.3))
    layer(torch.randn(2, 5, 3))[0].sum().backward()
    assert layer.cells[0].alpha_logit.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["python", "autograd"])
def test_leaky_learned_alpha_near_1_gets_gradient_in_half_precision(dtype, backend):
    """A learned α = σ(a) above about 0.9998 is 1 in float16 and bfloat16, and σ's backward, computed from that
    output (α (1 - α) = 0), gave a a gradient of exactly 0: a unit started at alpha=1.0 (or trained that near it)
    never moved again. σ is taken in float32, the gradient that of the float32 layer (to half precision)."""
    grads = {}
    for dt in (dtype, torch.float32):
        torch.manual_seed(0)
        layer = Recurrent("leaky", 3, 4, learn_alpha=True, alpha=1.0, backend=backend).to(dt)
        x = torch.randn(2, 5, 3).to(dt)  # (the same x: randn draws otherwise in another dtype)
        layer(x)[0].float().square().sum().backward()
        grads[dt] = layer.cells[0].alpha_logit.grad.float()
        assert layer.cells[0].alpha.dtype == dt
    assert bool((grads[dtype] != 0).all())
    torch.testing.assert_close(grads[dtype], grads[torch.float32], rtol=0.1, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_leaky_learned_alpha_driven_to_saturation_still_gets_gradient_on_every_backend(dtype):
    """Four SGD steps at lr 1e4 took alpha_logit to about 1e4, where σ(a) is 1 and σ's backward α (1 - α) is 0: α = 1
    (or, below about -104, 0) and a gradient of exactly 0 on every backend, units frozen for good. a is held where σ(a) < 1 (and > 0), its
    gradient straight through: α just below 1, the gradient not 0, the same on every backend."""
    got = {}
    for backend in ("autograd", "python", "native"):
        torch.manual_seed(0)
        layer = Recurrent("leaky", 3, 4, learn_alpha=True, backend=backend, dtype=dtype)
        x = torch.randn(2, 5, 3, dtype=dtype)
        opt = torch.optim.SGD(layer.parameters(), lr=1e4)
        for _ in range(4):
            opt.zero_grad()
            layer(x)[0].sum().backward()
            opt.step()
        cell = layer.cells[0]
        with torch.no_grad():
            cell.alpha_logit[-1] = -1e4  # (and the other end: σ(a) = 0)
        opt.zero_grad()
        layer(x)[0].sum().backward()
        assert bool((cell.alpha_logit[:3].abs() > 100).all())
        assert bool(((cell.alpha > 0) & (cell.alpha < 1)).all())
        assert bool((cell.alpha_logit.grad != 0).all())
        got[backend] = cell.alpha_logit.grad
    for backend in ("python", "native"):
        torch.testing.assert_close(got[backend], got["autograd"])


def test_lstm_forget_bias_default_one():
    cell = CELLS["lstm"](3, 4)
    torch.testing.assert_close(cell.b_xh[4:8] + cell.b_hh[4:8], torch.ones(4))
    cell = CELLS["lstm"](3, 4, forget_bias=0.0)
    torch.testing.assert_close(cell.b_xh[4:8] + cell.b_hh[4:8], torch.zeros(4))


def test_lstm_forget_bias_not_a_number_is_one_line():
    """A string failed in fill_ with torch's many-line TypeError; NaN made every output NaN, in silence."""
    for forget_bias in ("1.0", float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=r"^lstm forget_bias must be a finite number .*got"):
            Recurrent("lstm", 3, 4, forget_bias=forget_bias)


def test_lstm_forget_bias_past_its_dtypes_largest_value_is_one_line():
    """1e308 failed in reset_parameters' assignment to a float32 bias, torch's "RuntimeError: value cannot be converted
    to type float without overflow" (rnnkit train said it as its sizes' error); a float64 cell takes it."""
    f32 = dict(dtype=torch.float32)
    for make in (
        lambda: CELLS["lstm"](3, 4, forget_bias=-1e308, **f32),
        lambda: Recurrent("lstm", 3, 4, forget_bias=1e39, **f32),
    ):
        with pytest.raises(ValueError, match=r"^lstm forget_bias -?1e\+(308|39) is past the largest value of its "
                           r"bias's dtype, float32 \(3.40282e\+38\)"):  # fmt: skip
            make()
    cell = CELLS["lstm"](3, 4, forget_bias=1e308, dtype=torch.float64)
    assert torch.equal(cell.b_xh[4:8], torch.full((4,), 1e308, dtype=torch.float64))
    assert torch.equal(CELLS["lstm"](3, 4, forget_bias=3e38, **f32).b_xh[4:8], torch.full((4,), 3e38, **f32))


def test_lstm_forget_bias_past_its_dtypes_largest_value_is_one_line_when_reset_in_another_dtype():
    """A float64 cell takes forget_bias 1e308; made float32 (.float()) and reset, it failed in reset_parameters'
    assignment, torch's "RuntimeError: value cannot be converted to type float without overflow": the check was made
    at construction only. The reset says the one line, its weights left as they were."""
    cell = CELLS["lstm"](3, 4, forget_bias=1e308, dtype=torch.float64).float()
    before = {k: v.clone() for k, v in cell.state_dict().items()}
    with pytest.raises(ValueError, match=r"^lstm forget_bias 1e\+308 is past the largest value of its bias's dtype, "
                       r"float32 \(3.40282e\+38\); give a smaller one$"):  # fmt: skip
        cell.reset_parameters()
    assert all(torch.equal(before[k], v) for k, v in cell.state_dict().items())


@pytest.mark.parametrize("forget_bias", [np.float32(2.0), np.float16(2.0), Fraction(2), np.int64(2)])
def test_lstm_forget_bias_of_a_numpy_scalar_is_taken(forget_bias):
    """A number of a parameter grid (np.arange(..., dtype=np.float32)) or a Fraction passed the check and failed in
    reset_parameters: "TypeError: can't assign a numpy.float32 to a torch.FloatTensor"."""
    for make in (
        lambda: CELLS["lstm"](3, 4, forget_bias=forget_bias),
        lambda: Recurrent("lstm", 3, 4, forget_bias=forget_bias).cells[0],
    ):
        cell = make()
        assert torch.equal(cell.b_xh[4:8], torch.full((4,), 2.0)) and cell.forget_bias == 2.0
        cell.reset_parameters()
        assert torch.equal(cell.b_xh[4:8], torch.full((4,), 2.0))


def test_lstm_forget_bias_without_a_bias_is_one_line():
    """bias=False has no forget-gate bias to set: forget_bias=2.0 was ignored in silence, and the repr showed it.
    The default (1.0) and None are taken, as from_torch of a bias-free torch.nn.LSTM gives None."""
    for make in (lambda **kw: CELLS["lstm"](3, 4, **kw), lambda **kw: Recurrent("lstm", 3, 4, **kw)):
        with pytest.raises(
            ValueError, match=r"^lstm forget_bias=2.0 sets the forget gate's bias, and bias=False"
        ):
            make(bias=False, forget_bias=2.0)
        make(bias=False), make(bias=False, forget_bias=None), make(bias=False, forget_bias=1.0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("D", [3, 5])  # 3: x̃ = W_xp x_t (one GEMM for all blocks); 5 = H: x̃ = x_t
@pytest.mark.parametrize("name", ["mut1", "mut2"])
def test_mut_projection_is_the_papers(name, D, bias):
    """The one-GEMM projection of MUT1/MUT2 (tanh(x̃) + b_h written in place for MUT1) equals the
    blocks of the paper: [z, r, h] = [W_z x, W_r x, tanh(x̃)] + b (MUT1), [W_z x, x̃, W_h x] + b (MUT2);
    float64 gradcheck through it."""
    torch.manual_seed(0)
    cell = CELLS[name](D, 5, bias=bias).double()
    xs = torch.randn(4, 2, D, dtype=torch.float64, requires_grad=True)
    H = 5
    xt = cell.x_tilde(xs)
    a = xs @ cell.W_xh.t()
    want = (
        torch.cat((a, torch.tanh(xt)), -1) if name == "mut1" else torch.cat((a[..., :H], xt, a[..., H:]), -1)
    )
    want = want if cell.b_xh is None else want + cell.b_xh
    torch.testing.assert_close(cell.project_input(xs), want, rtol=1e-12, atol=1e-12)
    params = [p for p in (cell.W_xh, cell.W_xp, cell.b_xh) if p is not None]
    torch.autograd.gradcheck(lambda x, *p: cell.project_input(x), (xs, *params))
    g = torch.randn_like(want)
    got = torch.autograd.grad(cell.project_input(xs), [xs, *params], g)
    ref = torch.autograd.grad(want, [xs, *params], g)
    for u, v in zip(got, ref):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("D", [64, 7])
def test_mut1_without_autograd_projects_as_with_it_bit_for_bit(D, monkeypatch):
    """Where autograd records nothing (no_grad, inference_mode) MUT1's tanh(x̃) + b_h is written in place by plain ops,
    not through TanhTail (an autograd.Function: 20-30 µs of a 70 µs step at H = 64): the same bits, stepped and run."""
    torch.manual_seed(0)
    cell, layer = CELLS["mut1"](D, 64), Recurrent("mut1", D, 64)
    x, h = torch.randn(3, D), torch.randn(3, 64)
    xs = torch.randn(2, 9, D)
    want, (want_out, want_h) = cell(x, h), layer(xs)
    monkeypatch.setattr(TanhTail, "apply", None)  # (not called where nothing records)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            assert torch.equal(cell(x, h), want)
            out, h_n = layer(xs)
            assert torch.equal(out, want_out) and torch.equal(h_n, want_h)


@pytest.mark.parametrize("shape", [(1, 18), (1, 1)])
@pytest.mark.parametrize("create_graph", [False, True])
def test_affine_input_with_a_tanh_tail_gives_a_two_dimensional_bias_its_gradient_in_its_shape(
    shape, create_graph
):
    """The python backend's projection with a tanh tail (TanhTail) took a bias of F.linear's broadcast shapes
    (1, G) or (1, 1) forward, but its backward returned Σ g as (G,), which autograd refused ('returned an invalid
    gradient at index 1 - got [18] but expected shape compatible with [1, 18]'), and under create_graph read b's
    tail as b[-n:], its rows. Against F.linear and torch.tanh under autograd, to the second derivative."""
    from rnnkit.cells._base import affine_input

    torch.manual_seed(0)
    D, G, n = 6, 18, 5
    x = torch.randn(9, 4, D, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G, D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    pre = torch.nn.functional.linear(x, W)
    want = torch.cat((pre[..., :-n], torch.tanh(pre[..., -n:])), dim=-1) + b
    got = affine_input(x, W, b, n)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(9, 4, G, dtype=torch.float64)
    dgot = torch.autograd.grad(got, (x, W, b), g, create_graph=create_graph)
    dwant = torch.autograd.grad(want, (x, W, b), g, create_graph=create_graph)
    for u, v in zip(dgot, dwant):
        assert u.shape == v.shape
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    if create_graph:
        d2got = torch.autograd.grad(sum((u * u).sum() for u in dgot), (x, W))
        d2want = torch.autograd.grad(sum((v * v).sum() for v in dwant), (x, W))
        for u, v in zip(d2got, d2want):
            torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_leaky_reset_parameters_puts_a_learned_alpha_back():
    """reset_parameters() drew the weights afresh but left a learned α where training had taken it."""
    layer = Recurrent("leaky", 3, 4, alpha=0.3, learn_alpha=True)
    with torch.no_grad():
        layer.cells[0].alpha_logit.add_(2.0)
    layer.reset_parameters()
    torch.testing.assert_close(layer.cells[0].alpha, torch.full((4,), 0.3))
    assert "cells.0.alpha_logit_init" not in layer.state_dict()  # (checkpoints keep their keys)


@pytest.mark.parametrize("learned_first", [False, True])
@pytest.mark.parametrize("strict", [True, False])
def test_leaky_state_dict_of_a_fixed_alpha_loads_into_a_learned_one_and_back(learned_first, strict):
    """A state_dict of a layer with a fixed α (the buffer alpha_fixed) did not load into one learning α (the
    Parameter alpha_logit), nor the reverse (fine-tuning α after training with it fixed): strict=True failed on
    missing and unexpected keys, strict=False left α at its start in silence. α is carried over, σ(a) = α."""
    torch.manual_seed(0)
    kw = [{"alpha": [0.1, 0.2, 0.5, 0.9]}, {"learn_alpha": True}]
    src = Recurrent("leaky", 3, 4, num_layers=2, **kw[learned_first])
    dst = Recurrent("leaky", 3, 4, num_layers=2, **kw[not learned_first])
    if learned_first:  # α where training took it
        with torch.no_grad():
            src.cells[1].alpha_logit.copy_(torch.tensor([-3.0, -1.0, 0.5, 2.0]))
    keys = dst.load_state_dict(src.state_dict(), strict=strict)
    assert (keys.missing_keys, keys.unexpected_keys) == ([], [])
    assert sorted(dst.state_dict()) == sorted(
        Recurrent("leaky", 3, 4, num_layers=2, **kw[not learned_first]).state_dict()
    )
    for a, b in zip(src.cells, dst.cells):
        torch.testing.assert_close(b.alpha, a.alpha)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(dst(x)[0], src(x)[0])
    bad = Recurrent("leaky", 3, 4, alpha=0.3).state_dict()
    bad["cells.0.alpha_fixed"][0] = 1.5  # (hand-made: refused into a learned α too)
    with pytest.raises(
        ValueError, match=r"^leaky alpha must lie in \(0, 1\], got 1.5 in the state_dict's cells.0"
    ):
        Recurrent("leaky", 3, 4, learn_alpha=True).load_state_dict(bad)


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_after_deferred_initialisation(learn_alpha):
    """Built on the meta device, then to_empty() and reset_parameters() (deferred initialisation, as for torch.nn
    modules): α was left as the uninitialised memory to_empty() gives (garbage, NaN outputs), where every weight
    was drawn as at construction. reset_parameters() now puts α back to the alpha given, fixed or learned."""
    torch.manual_seed(0)
    ref = Recurrent("leaky", 3, 4, num_layers=2, alpha=[0.1, 0.2, 0.3, 0.4], learn_alpha=learn_alpha)
    with torch.device("meta"):
        layer = Recurrent("leaky", 3, 4, num_layers=2, alpha=[0.1, 0.2, 0.3, 0.4], learn_alpha=learn_alpha)
    layer = layer.to_empty(device="cpu")
    with torch.no_grad():  # (what to_empty's memory may hold)
        for t in (*layer.parameters(), *layer.buffers()):
            t.fill_(float("nan"))
    torch.manual_seed(0)
    layer.reset_parameters()
    for (name, a), (_, b) in zip(
        (*ref.named_parameters(), *ref.named_buffers()), (*layer.named_parameters(), *layer.named_buffers())
    ):
        assert torch.equal(a, b), name
    layer.double().reset_parameters()  # in the layer's dtype
    torch.testing.assert_close(layer.cells[1].alpha, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(), (1,)])
@pytest.mark.parametrize("parameter", [False, True])
def test_leaky_reset_parameters_of_a_fixed_alpha_set_as_a_number(shape, parameter):
    """A fixed α set by hand as one number, shape () or (1,) (a buffer, or a Parameter to learn α itself), runs; then
    reset_parameters() failed, "output with shape [] doesn't match the broadcast shape [4]". It puts the alpha
    given back: as that number, or a buffer replaced by the per-unit values."""
    for given in (0.3, [0.1, 0.2, 0.3, 0.4]):
        cell = CELLS["leaky"](3, 4, alpha=given)
        a = torch.full(shape, 0.25)
        cell.alpha_fixed = torch.nn.Parameter(a) if parameter else a
        if parameter and given != 0.3:
            with pytest.raises(ValueError, match=r"^cell.alpha_fixed has shape .* can't hold the 4 values"):
                cell.reset_parameters()
            continue
        cell.reset_parameters()
        torch.testing.assert_close(cell.alpha.expand(4), torch.tensor(given).expand(4), rtol=0, atol=0)
        assert cell(torch.randn(2, 3)).shape == (2, 4)


def test_leaky_alpha_tensor_made_on_meta_is_said_so():
    """A per-unit α made under `with torch.device("meta")` (deferred initialisation) has no values: it was refused as
    of the wrong shape, "must be a number or 4 values, ... got tensor(..., device='meta', size=(4,))"."""
    with (
        torch.device("meta"),
        pytest.raises(ValueError, match=r"alpha is a tensor on the meta device.*no values"),
    ):
        Recurrent("leaky", 3, 4, alpha=torch.full((4,), 0.3))
    with torch.device("meta"):  # (made on the CPU: taken, and reset_parameters puts it back after to_empty)
        layer = Recurrent("leaky", 3, 4, alpha=torch.full((4,), 0.3, device="cpu"))
    layer.to_empty(device="cpu").reset_parameters()
    assert torch.equal(layer.cells[0].alpha, torch.full((4,), 0.3))


def test_leaky_learn_alpha_not_a_switch_is_one_line():
    """learn_alpha="False" (a config file's string) was taken for True: α learned, in silence."""
    with pytest.raises(ValueError, match=r"^leaky learn_alpha must be True or False, got 'False'$"):
        Recurrent("leaky", 3, 4, learn_alpha="False")
    assert Recurrent("leaky", 3, 4, learn_alpha=1).cells[0].learn_alpha is True


def test_leaky_alpha_of_another_length_is_one_line():
    """A tensor of another length than H (or a string) got torch's error from inside expand()."""
    assert Recurrent("leaky", 3, 4, alpha=[0.1, 0.2, 0.3, 0.4]).cells[0].alpha.shape == (4,)
    for alpha, got in (
        (torch.tensor([0.1, 0.5]), r"shape \(2,\)"),
        ("0.5", "'0.5'"),
        (torch.ones(2, 4), r"shape \(2, 4\)"),
    ):
        with pytest.raises(ValueError, match=rf"^leaky alpha must be a number or 4 values.*got {got}$"):
            Recurrent("leaky", 3, 4, alpha=alpha)


def test_a_leaky_subclass_may_draw_its_alpha_in_reset_parameters():
    """Leaky's __init__ called reset_parameters before it had made α, so a subclass that draws α there (a spread of
    time constants) failed when built, with "'Spread' object has no attribute 'learn_alpha'"; the same seed still
    draws the same weights."""

    class Spread(CELLS["leaky"]):
        def reset_parameters(self):
            super().reset_parameters()
            with torch.no_grad():
                self.alpha_logit.uniform_(-3.0, 0.0)

    torch.manual_seed(0)
    cell = Spread(3, 4, learn_alpha=True)
    torch.manual_seed(0)
    plain = CELLS["leaky"](3, 4, learn_alpha=True)
    assert bool(((cell.alpha > 0.04) & (cell.alpha < 0.5)).all())
    for name in ("W_xh", "W_hh", "b_xh", "b_hh"):
        torch.testing.assert_close(getattr(cell, name), getattr(plain, name), rtol=0, atol=0)


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_given_as_a_tensor_that_requires_grad_is_taken_as_its_value(learn_alpha):
    """A tensor α that requires grad (an nn.Parameter, a slice of another model's) stayed in the cell's buffers as a
    node of the caller's graph: copy.deepcopy of the cell failed ("Only Tensors created explicitly by the user ...")
    and the cell's backward sent gradients into the caller's tensor."""
    import copy

    given = torch.full((4,), 0.3, requires_grad=True)
    layer = Recurrent("leaky", 3, 4, alpha=given, learn_alpha=learn_alpha, backend="python")
    copy.deepcopy(layer)
    layer(torch.randn(2, 5, 3))[0].sum().backward()
    assert given.grad is None
    torch.testing.assert_close(layer.cells[0].alpha.detach(), torch.full((4,), 0.3))


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_built_on_meta_gets_its_alpha_back_from_reset_parameters(learn_alpha):
    """Built on the meta device, moved with to_empty() and drawn with reset_parameters() (torch's way of building a
    model without memory first), α was whatever the new memory held (3.4e4 for α = 0.3, outside (0, 1]): to_empty()
    keeps no buffer's values, and reset_parameters() put α back from one."""
    alpha = [0.1, 0.2, 0.3, 1.0]
    with torch.device("meta"):
        cell = CELLS["leaky"](3, 4, alpha=alpha, learn_alpha=learn_alpha)
    cell = cell.to_empty(device="cpu")
    cell.reset_parameters()
    want = CELLS["leaky"](3, 4, alpha=alpha, learn_alpha=learn_alpha).alpha
    torch.testing.assert_close(cell.alpha.detach(), want.detach(), rtol=0, atol=0)


def test_leaky_built_on_meta_prints():
    """repr(cell) read α's values with .item(), which a meta tensor has not: print(model) of a model built on the
    meta device failed ("Tensor.item() cannot be called on meta tensors")."""
    with torch.device("meta"):
        assert repr(CELLS["leaky"](3, 4, alpha=0.25)) == "Leaky(3, 4, alpha=0.25)"
        assert repr(CELLS["leaky"](3, 4, alpha=[0.1, 0.2, 0.3, 0.4])) == "Leaky(3, 4, alpha=per unit)"


def test_leaky_repr_shows_the_alpha_given():
    """The repr showed α after its cast (alpha=0.299805 for 0.3 in float16), and with learn_alpha not the α it
    starts from; a fixed α loaded from another cell's state_dict is shown as loaded."""
    assert repr(CELLS["leaky"](3, 4, alpha=0.3, dtype=torch.float16)) == "Leaky(3, 4, alpha=0.3)"
    assert repr(CELLS["leaky"](3, 4, alpha=0.3).to(torch.bfloat16)) == "Leaky(3, 4, alpha=0.3)"
    assert (
        repr(CELLS["leaky"](3, 4, alpha=0.3, learn_alpha=True)) == "Leaky(3, 4, alpha=0.3, learn_alpha=True)"
    )
    cell = CELLS["leaky"](3, 4, alpha=0.3)
    cell.load_state_dict(CELLS["leaky"](3, 4, alpha=0.25).state_dict())
    assert repr(cell) == "Leaky(3, 4, alpha=0.25)"


def test_leaky_repr_of_a_fixed_alpha_set_as_a_number():
    """A fixed α set by hand as one number, shape () (which the cell and a layer run, as they take (1,) and (H,)):
    repr(cell) and print(model) failed, "IndexError: invalid index of a 0-dim tensor"."""
    cell = CELLS["leaky"](3, 4, alpha=0.3)
    cell.alpha_fixed = torch.tensor(0.25)
    assert repr(cell) == "Leaky(3, 4, alpha=0.25)"
    cell.alpha_fixed = torch.tensor([0.5])
    assert repr(cell) == "Leaky(3, 4, alpha=0.5)"
    layer = Recurrent("leaky", 3, 4, alpha=0.3)
    layer.cells[0].alpha_fixed = torch.tensor(0.25)
    assert "Leaky(3, 4, alpha=0.25)" in repr(layer)


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_is_checked_in_the_dtype_given(learn_alpha):
    """An α that is 0 in the cell's dtype is refused; the check read the default dtype (float32), not dtype=:
    Leaky(3, 4, alpha=1e-8, dtype=torch.float16) ran with α = 0 in silence (units that never move), and
    alpha=1e-50 with dtype=torch.float64, a float64 α > 0, was refused."""
    with pytest.raises(ValueError, match=r"^leaky alpha must lie in \(0, 1\]"):
        CELLS["leaky"](3, 4, alpha=1e-8, learn_alpha=learn_alpha, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"^leaky alpha must lie in \(0, 1\]"):
        Recurrent("leaky", 3, 4, alpha=1e-8, learn_alpha=learn_alpha, dtype=torch.float16)
    assert bool(
        (CELLS["leaky"](3, 4, alpha=1e-8, learn_alpha=learn_alpha, dtype=torch.bfloat16).alpha > 0).all()
    )
    alpha = CELLS["leaky"](3, 4, alpha=1e-50, learn_alpha=learn_alpha, dtype=torch.float64).alpha
    torch.testing.assert_close(
        alpha.detach(), torch.full((4,), 1e-50, dtype=torch.float64), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("alpha", [True, False, torch.ones(4, dtype=torch.bool)])
def test_leaky_alpha_of_bools_is_refused(alpha):
    """alpha=True ran as α = 1 (a plain tanh RNN; learn_alpha=True meant, perhaps), as forget_bias=True is refused;
    False said "must lie in (0, 1]" of a switch."""
    with pytest.raises(ValueError, match=r"^leaky alpha must be a number or 4 values.*got "):
        Recurrent("leaky", 3, 4, alpha=alpha)


@pytest.mark.parametrize("bad", [1.5, 0.0, -0.25, float("nan"), 1e-8])
def test_leaky_alpha_outside_zero_one_is_refused_by_load_state_dict(bad):
    """Leaky refuses α outside (0, 1] when built, but a state_dict's alpha_fixed of 1.5 or NaN (damaged or
    hand-made) loaded in silence: units that blow up, or NaN from the first step. It is the same one line,
    naming the key; 1e-8 is 0 in the cell's float16 (loaded into a layer too)."""
    cell = CELLS["leaky"](3, 4, alpha=0.3, dtype=torch.float16)
    state = cell.state_dict()
    state["alpha_fixed"] = torch.tensor([0.5, bad, 0.5, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^leaky alpha must lie in \(0, 1\].* got .* alpha_fixed"):
        cell.load_state_dict(state)
    torch.testing.assert_close(cell.alpha, torch.full((4,), 0.3, dtype=torch.float16))
    layer = Recurrent("leaky", 3, 4, alpha=0.3)
    state = layer.state_dict()
    state["cells.0.alpha_fixed"] = torch.full((4,), 2.0 if bad == 1e-8 else bad)
    with pytest.raises(ValueError, match=r"cells\.0\.alpha_fixed$"):
        layer.load_state_dict(state)
    state["cells.0.alpha_fixed"] = torch.full((4,), 2)  # (integers are copied in as their values)
    with pytest.raises(ValueError, match=r"got 2 in the state_dict's cells\.0\.alpha_fixed$"):
        layer.load_state_dict(state)
    layer.load_state_dict(Recurrent("leaky", 3, 4, alpha=1.0).state_dict())  # α = 1 (Elman) loads
    assert bool((layer.cells[0].alpha == 1).all())


@pytest.mark.parametrize(("alpha", "dtype"), [(1e-39, torch.float32), (1e-310, torch.float64)])
def test_leaky_learned_alpha_that_sigma_makes_0_is_refused(alpha, dtype):
    """A learned α = σ(a) below about 1e-38 (float32) is 0 where the fixed α is not: Leaky(3, 4, alpha=1e-39,
    learn_alpha=True).alpha was 0, units frozen with a gradient of 0 in silence; now the one line of a bad α."""
    with pytest.raises(
        ValueError, match=r"^leaky alpha must lie in \(0, 1\] and, learned as σ\(a\), be above 0"
    ):
        CELLS["leaky"](3, 4, alpha=alpha, learn_alpha=True, dtype=dtype)
    assert bool((CELLS["leaky"](3, 4, alpha=alpha, dtype=dtype).alpha > 0).all())  # fixed: as given


@pytest.mark.parametrize(("alpha", "dtype"), [(1e-39, torch.float32), (1e-310, torch.float64)])
def test_leaky_fixed_alpha_that_sigma_makes_0_is_refused_into_a_learned_one(alpha, dtype):
    """A fixed α of 1e-39 (float32) is α; loaded into a cell learning α, σ(logit α) is 0: the state_dict loaded, and
    the layer ran with α = 0, units frozen with a gradient of 0 in silence, where Leaky(alpha=1e-39,
    learn_alpha=True) is refused; the state_dict is refused in the same line."""
    state = Recurrent("leaky", 3, 4, alpha=alpha, dtype=dtype).state_dict()
    layer = Recurrent("leaky", 3, 4, learn_alpha=True, dtype=dtype)
    with pytest.raises(
        ValueError,
        match=r"^leaky alpha must lie in \(0, 1\] and, learned as σ\(a\), be above 0 in torch.float\d+; got "
        r"1e-\d+ in the state_dict's cells.0.alpha_fixed",
    ):
        layer.load_state_dict(state)
    state["cells.0.alpha_fixed"].fill_(1e-30 if dtype == torch.float32 else 1e-300)  # (σ(logit α) > 0: loads)
    layer.load_state_dict(state)
    assert bool((layer.cells[0].alpha > 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_leaky_fixed_alpha_1_of_half_precision_loads_into_a_learned_one_as_init_makes_it(dtype):
    """A float16 or bfloat16 fixed α = 1 (Elman) loaded into a cell learning α was clamped to 1 - 1e-4 in its own
    dtype, where that is 1: alpha_logit = logit 1 = inf, a unit that never moves (σ's gradient 0) and NaN under
    SGD's weight decay (inf - inf). It is clamped in float64, alpha_logit that of Leaky(alpha=1.0, learn_alpha=True)."""
    state = Recurrent("leaky", 3, 4, alpha=1.0, dtype=dtype).state_dict()
    layer = Recurrent("leaky", 3, 4, learn_alpha=True)
    layer.load_state_dict(state)
    want = Recurrent("leaky", 3, 4, alpha=1.0, learn_alpha=True).cells[0].alpha_logit
    torch.testing.assert_close(layer.cells[0].alpha_logit, want, rtol=0, atol=0)


def test_leaky_learned_alpha_that_sigma_makes_0_names_alpha_logit_when_loaded_fixed():
    """a learned α whose σ(alpha_logit) is no α (alpha_logit NaN; -200, whose σ was 0, is now held at float32's
    smallest α, as the learned layer runs it), loaded into a fixed-α layer: the error named cells.0.alpha_fixed, a
    key the state_dict doesn't have."""
    src = Recurrent("leaky", 3, 4, learn_alpha=True, dtype=torch.float32)
    with torch.no_grad():
        src.cells[0].alpha_logit.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"got nan in the state_dict's σ\(cells\.0\.alpha_logit\)$"):
        Recurrent("leaky", 3, 4, dtype=torch.float32).load_state_dict(src.state_dict())


def test_leaky_cell_called_alone_holds_its_fixed_alpha_as_a_layer_does():
    """A leaky cell called on its own (cell(x_t), not inside Recurrent) ran a fixed α of 2 or NaN in silence (|h| 1.8),
    a float64 α gave float64 states and one of another shape failed in a broadcast inside the step; each is the
    layer's one line, naming cell.alpha_fixed."""
    x = torch.randn(2, 3, dtype=torch.float32)  # (these tests run in float64 by default)
    cases = [
        (
            lambda c: c.alpha_fixed.fill_(2.0),
            r"^leaky alpha must lie in \(0, 1\], got 2 in cell\.alpha_fixed$",
        ),
        (lambda c: c.alpha_fixed.data.fill_(float("nan")), r"got nan in cell\.alpha_fixed$"),
        (
            lambda c: setattr(
                c, "alpha_fixed", torch.nn.Parameter(torch.full((4,), 1.5, dtype=torch.float32))
            ),
            r"got 1\.5 in cell",
        ),
        (
            lambda c: setattr(c, "alpha_fixed", torch.full((4,), 0.5, dtype=torch.float64)),
            r"^cell\.alpha_fixed is torch\.float64 but the cell's weights are torch\.float32",
        ),
        (
            lambda c: c.register_buffer("alpha_fixed", torch.full((5,), 0.5, dtype=torch.float32)),
            r"^cell\.alpha_fixed has shape \(5,\), but a leaky cell of 4 units needs .* \(\), \(1,\) or \(4,\)",
        ),
    ]
    for spoil, message in cases:
        cell = Recurrent("leaky", 3, 4, dtype=torch.float32).cells[0]
        spoil(cell)
        with pytest.raises(RnnkitError, match=message):
            cell(x)
        with pytest.raises(RnnkitError, match=message):
            cell(x[0])  # one unbatched step too
    cell = Recurrent("leaky", 3, 4, alpha=1.0, dtype=torch.float32).cells[0]
    assert cell(x).shape == (2, 4)  # α = 1 (Elman) runs, as a learned α does
    assert Recurrent("leaky", 3, 4, learn_alpha=True, dtype=torch.float32).cells[0](x).shape == (2, 4)


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_that_a_conversion_makes_0_is_refused(learn_alpha):
    """Recurrent('leaky', 3, 4, alpha=1e-8, learn_alpha=True).half() gave α = 0 (units frozen, a gradient of 0) in
    silence, where building it with dtype=torch.float16 is refused; .half(), .to(torch.float16) and .float() of a
    float64 α of 1e-50 are refused in the same words, the cell left as it was; conversions that keep α > 0 run."""
    layer = Recurrent("leaky", 3, 4, alpha=1e-8, learn_alpha=learn_alpha, dtype=torch.float32)
    for convert in (
        lambda m: m.half(),
        lambda m: m.to(torch.float16),
        lambda m: m.to(dtype=torch.float16),
        lambda m: torch.nn.Sequential(m).half(),
    ):
        with pytest.raises(
            ValueError,
            match=r"^leaky alpha must lie in \(0, 1\] and be above 0 in torch.float16, .* got 1e-08",
        ):
            convert(layer)
        assert layer.cells[0].alpha.dtype == torch.float32 and bool((layer.cells[0].alpha > 0).all())
    assert bool((layer.bfloat16().cells[0].alpha > 0).all())  # (bfloat16 has float32's range)
    tiny = Recurrent("leaky", 3, 4, alpha=1e-50, learn_alpha=learn_alpha, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"above 0 in torch.float32, .* got 1e-50, which is 0 there"):
        tiny.float()
    half = Recurrent("leaky", 3, 4, alpha=0.3, learn_alpha=learn_alpha).half()
    torch.testing.assert_close(half.cells[0].alpha.detach(), torch.full((4,), 0.3, dtype=torch.float16))
    assert Recurrent("leaky", 3, 4, alpha=1e-8, learn_alpha=learn_alpha).to("meta").cells[0].alpha.is_meta


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_that_is_0_in_the_cells_dtype_is_named_so(learn_alpha):
    """alpha=1e-8 in a float16 cell (0 there) was refused with "leaky alpha must lie in (0, 1], got 1e-08", which
    1e-8 does; the line now says it is 0 in float16 and what to do, as .half() of such a cell says, and so does
    load_state_dict."""
    zero = r"^leaky alpha must lie in \(0, 1\] and be above 0 in torch.float16, the cell's dtype; got 1e-08"
    with pytest.raises(ValueError, match=zero + r", which is 0 there .*wider dtype$"):
        CELLS["leaky"](3, 4, alpha=[0.5, 1e-8, 0.5, 0.5], learn_alpha=learn_alpha, dtype=torch.float16)
    cell = CELLS["leaky"](3, 4, alpha=0.3, dtype=torch.float16)
    state = cell.state_dict()
    state["alpha_fixed"] = torch.tensor([0.5, 1e-8, 0.5, 0.5], dtype=torch.float64)
    with pytest.raises(ValueError, match=zero + r" in the state_dict's alpha_fixed, which is 0 there"):
        cell.load_state_dict(state)


def test_leaky_cell_called_alone_holds_its_learned_alpha_as_a_layer_does():
    """A leaky cell learning α, called on its own, ran a float64 alpha_logit in a float32 cell in silence (float64
    states) and one of 5 values in a cell of 4 failed inside the step ("The size of tensor a (5) must match ..."),
    where a layer refuses both in one line; the cell now says the same, naming cell.alpha_logit."""
    x = torch.randn(2, 3, dtype=torch.float32)  # (these tests run in float64 by default)
    cases = [
        (
            torch.zeros(4, dtype=torch.float64),
            r"^cell\.alpha_logit is torch\.float64 but the cell's weights are ",
        ),
        (
            torch.zeros(5, dtype=torch.float32),
            r"^cell\.alpha_logit has shape \(5,\), but a leaky cell of 4 units",
        ),
    ]
    for logit, message in cases:
        cell = Recurrent("leaky", 3, 4, learn_alpha=True, dtype=torch.float32).cells[0]
        cell.alpha_logit = torch.nn.Parameter(logit)
        with pytest.raises(RnnkitError, match=message):
            cell(x)
        with pytest.raises(RnnkitError, match=message):
            cell(x[0])


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_given_survives_a_conversion_to_float64(learn_alpha):
    """A layer made in the default float32 and converted, Recurrent('leaky', ..., alpha=0.3).double(), ran at
    α = 0.30000001192 (σ(a) = 0.30000000275 learned): float32's 0.3 widened, outputs 1.5e-8 off a float64 leaky
    layer of α = 0.3 (as dtype=torch.float64 makes it). α still the one given takes its value in the new dtype."""
    want = CELLS["leaky"](3, 4, alpha=0.3, learn_alpha=learn_alpha, dtype=torch.float64).alpha.detach()
    for layer in (
        Recurrent("leaky", 3, 4, alpha=0.3, learn_alpha=learn_alpha, dtype=torch.float32).double(),
        Recurrent("leaky", 3, 4, alpha=0.3, learn_alpha=learn_alpha, dtype=torch.float32).to(torch.float64),
    ):
        assert torch.equal(layer.cells[0].alpha.detach(), want)
    cell = CELLS["leaky"](3, 4, alpha=0.3, learn_alpha=learn_alpha, dtype=torch.float32)
    with torch.no_grad():  # an α changed since (trained, loaded) is converted as it is
        (cell.alpha_logit if learn_alpha else cell.alpha_fixed).mul_(1.1)
    name = "alpha_logit" if learn_alpha else "alpha_fixed"
    old = getattr(cell, name).detach().clone()
    assert torch.equal(getattr(cell.double(), name).detach(), old.double())
