"""Every cell's hand-written one-step backward against autograd, in float64."""

import pytest
import torch

from rnnkit import CELLS


def make(name, D=4, H=5, **kw):
    torch.manual_seed(0)
    cell = CELLS[name](D, H, **kw).double()
    with torch.no_grad():  # non-trivial biases everywhere
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return cell


@pytest.mark.parametrize("name", list(CELLS))
def test_step_backward_matches_autograd(name):
    assert_step_backward_is_autograds(make(name))


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_step_backward_matches_autograd_where_alpha_is_not_one_half(learn_alpha):
    """Every other gradient test runs leaky at its default α = 0.5, where α = 1 - α: a step_backward with the two
    swapped (da = dh (1 - α)(1 - h̃²), or dh_{t-1}'s direct part dh α) passed them all. Per-unit α here."""
    alpha = [0.1, 0.3, 0.6, 0.8, 0.95]
    assert_step_backward_is_autograds(make("leaky", alpha=alpha, learn_alpha=learn_alpha))


def assert_step_backward_is_autograds(cell):
    B, H = 3, cell.hidden_size
    xw = cell.project_input(torch.randn(B, cell.input_size)).detach().requires_grad_()
    state = tuple(torch.randn(B, H, requires_grad=True) for _ in range(cell.num_states))
    P = tuple(p if p is None else p.detach().requires_grad_() for p in cell.rec_params())
    new, us, cache = cell.step(xw, state, P)
    dnew = tuple(torch.randn_like(s) for s in new)

    # autograd through the forward step
    inputs = [xw, *state, *(p for p in P if p is not None)]
    auto = torch.autograd.grad(sum((s * d).sum() for s, d in zip(new, dnew)), inputs)

    # hand-written: dxw, dstate_prev, and parameter grads assembled as the engine does
    dxw, dprev, dpres, dextras = cell.step_backward(dnew, cache, P)
    grads = {name: None for name in cell.REC_PARAMS}
    for (w, b), dpre, u in zip(cell.GEMMS, dpres, us):
        dW = dpre.t() @ u
        grads[w] = dW if grads[w] is None else grads[w] + dW
        if b is not None:
            grads[b] = dpre.sum(0)
    for ex, d in zip(cell.EXTRAS, dextras):
        grads[ex] = d
    hand = [dxw, *dprev, *(grads[n] for n, p in zip(cell.REC_PARAMS, P) if p is not None)]
    assert len(hand) == len(auto)
    for a, h in zip(auto, hand):
        torch.testing.assert_close(h, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CELLS))
def test_module_step_shapes(name):
    cell = make(name, D=3, H=6)
    new = cell(torch.randn(2, 3))  # h_t, or (h_t, c_t), as torch.nn's cells
    new = new if cell.num_states == 2 else (new,)
    assert len(new) == cell.num_states and all(s.shape == (2, 6) for s in new)
