"""`check_cell`: whether a cell's hand-written step_backward is the derivative of its step, against autograd.

rnnkit's own cells are held to it by tests/cells/test_step_backward.py; a cell of one's own, written outside
rnnkit, had nothing to tell a slightly wrong backward (a derivative off by a factor, a term left out) from a right
one: the python backend trained with its gradients in silence. check_cell is that test, in one call.
"""

import numbers

import torch

from rnnkit.cells._base import (
    Cell,
    check_drawn,
    check_listed,
    check_step,
    check_step_backward,
    check_unchanged,
    refused_in_place,
    versions,
)
from rnnkit.errors import RnnkitError


def _differs(name, what, hand, auto, rtol, atol, fix="step_backward"):
    """A one-line error if the hand-written gradient `hand` is not autograd's `auto` (None: no gradient, zeros)."""
    if auto is None and hand is None:
        return
    if auto is None:
        auto = torch.zeros_like(hand)
    if hand is None:
        hand = torch.zeros_like(auto)
    if hand.shape != auto.shape:
        raise RnnkitError(f"{name}: the gradient of {what} has shape {tuple(hand.shape)}, autograd's "
                          f"{tuple(auto.shape)}")  # fmt: skip
    err, scale = (
        (hand - auto).abs().max().item() if hand.numel() else 0.0,
        auto.abs().max().item() if auto.numel() else 0.0,
    )
    if not err <= atol + rtol * scale:  # (NaN too)
        raise RnnkitError(f"{name}: the gradient of {what} differs from autograd's through step by up to {err:.3g} "
                          f"(autograd's largest {scale:.3g}): fix {fix}")  # fmt: skip


def _finite(name, tensors):
    """A one-line error naming step where what it computed from check_cell's finite inputs holds a NaN or an inf: the
    gradients through it are NaN on both sides, and the comparison said 'fix step_backward' of a right one (the
    derivative of a sqrt or log step, where its argument went negative)."""
    for label, t in tensors:
        if not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(t.isnan().any()) else "inf"
            raise RnnkitError(f"{name}.step returned {bad} in {label} from finite inputs (check_cell's random xw_t, "
                              "state and parameters), where no gradient can be compared: make step finite for "
                              "every input (a sqrt or log of a value that can be negative, a division by one that "
                              "can be 0)")  # fmt: skip


def _pure(cls, fn_name, fn, args):
    """fn(*args), with a one-line error where it changed a tensor among its arguments in place (its version counter
    moved: nothing is copied). On the python backend such a step_backward changed the caller's own gradient tensor
    in silence (dc_t.add_(...) on dL/dc_T), or failed deep inside on an expanded one (a loss c_T.sum())."""
    names = ("xw_t", "state", "P") if fn_name == "step" else ("dstate_t", "cache", "P")
    seen = versions(**dict(zip(names, args)))
    try:
        got = fn(*args)
    except RuntimeError:
        # (torch refuses x.add_(...) of a leaf that requires grad itself: its own message named no input)
        if (refused := refused_in_place(cls, fn_name, fn, args, names)) is not None:
            raise refused from None
        raise
    check_unchanged(cls, fn_name, seen)
    return got


def check_cell(
    cell, input_size=3, hidden_size=4, *, batch=3, steps=5, seed=0, rtol=1e-10, atol=1e-12, **cell_kwargs
):
    """Check a cell's step_backward against autograd through its step, in float64; raise an RnnkitError naming the
    first gradient that differs, else return None.

    cell: a Cell class (or a name in rnnkit.CELLS), built as cell(input_size, hidden_size, **cell_kwargs) with
    every parameter moved off its initial value (a bias of zeros hides the terms it multiplies). Two checks:
    - one step: dxw_t, each dstate_prev, and every recurrent parameter's gradient as the engine assembles it
      (dU_k = dpre_kᵀ u_k, db_k = Σ dpre_k, the dextras), against torch.autograd.grad through step;
    - a sequence of `steps` steps, both directions, a second sequence shorter (lengths), from a random initial
      state: the python backend (the hand-written BPTT) against the autograd backend, every gradient, each run
      from the same state of torch's generator (a step that draws, zoneout's masks, draws the same in both): it
      catches a cache that a later step changes in place, which one step can't show.
    step or step_backward changing one of its own inputs in place (dc_t.add_(...)) is an error of its own: they must
    be pure functions.
    The caller's random number generator is left as it was.
    rtol, atol: a gradient differs where max |hand - autograd| > atol + rtol · max |autograd|. A right step_backward
    agrees to about 1e-15 in float64 (rnnkit's own cells: 2e-14 at most, H up to 64, 40 steps); 1e-10 still tells a
    backward that computes in float32 (a cache kept in float32: 1e-8 off), which 1e-7 let pass."""
    from rnnkit.cells import CELLS
    from rnnkit.layers import Recurrent

    Cls = CELLS.get(cell) if isinstance(cell, str) else cell
    if not (isinstance(Cls, type) and issubclass(Cls, Cell)):
        # (a cell itself was said as its repr, many lines for one holding a submodule, with no word of the fix)
        if isinstance(cell, Cell):
            raise RnnkitError(f"check_cell takes a Cell class, not a cell: check_cell(type(cell)) "
                              f"({type(cell).__name__}), its options as keyword arguments; it builds and checks cells "
                              "of its own")  # fmt: skip
        if isinstance(cell, str):
            raise RnnkitError(f"check_cell: unknown cell {cell!r}; choose one of: {', '.join(CELLS)}, or give a Cell "
                              "class")  # fmt: skip
        kind = cell if isinstance(cell, type) else type(cell)
        got, shown = f"{kind.__module__}.{kind.__qualname__}", repr(cell)
        if not isinstance(cell, type):  # (a torch.nn module's repr, a 2-D array's: many lines)
            one_line = len(shown) <= 80 and "\n" not in shown and not isinstance(cell, torch.nn.Module)
            got = shown if one_line else f"a {got}"
        raise RnnkitError(f"check_cell takes a Cell class or a name in rnnkit.CELLS, got {got}")
    name = Cls.__name__
    # (batch=0 failed in an IndexError from the lengths made below, steps=0 in the layer's 'input has no time steps')
    for what, n in (("batch", batch), ("steps", steps)):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise RnnkitError(f"check_cell's {what} must be an integer >= 1, got {n!r}")
    # (its own tensors, differentiated whatever the caller's mode: under torch.no_grad() or inference_mode() it failed
    # in torch's 'element 0 of tensors does not require grad and does not have a grad_fn', naming nothing)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(seed)
        model = Cls(input_size, hidden_size, **cell_kwargs)
        check_drawn(model)  # (before the noise below: a NaN weight failed as a gradient that differs)
        check_listed(model)
        model = model.double()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
        _one_step(model, name, batch, rtol, atol)
        _sequence(Recurrent, Cls, model, name, input_size, hidden_size, batch, steps, rtol, atol, cell_kwargs)


def _one_step(model, name, B, rtol, atol):
    from rnnkit.engine.python import _shaped

    Cls = type(model)
    xw = model.project_input(torch.randn(B, model.input_size, dtype=torch.float64)).detach().requires_grad_()
    state = tuple(torch.randn_like(s).requires_grad_() for s in model.init_state(B))
    # (a boolean mask among them, a buffer the loops run with, has no gradient: requires_grad_() failed on it, in
    # torch's "only Tensors of floating point dtype can require gradients")
    P = tuple(
        p if p is None else p.detach().requires_grad_(p.is_floating_point()) for p in model.rec_params()
    )
    got = _pure(Cls, "step", Cls.step, (xw, state, P))
    check_step(Cls, got, xw, state, P)
    new, us, cache = got
    _finite(name, [(f"state_t[{k}] (one step)", s) for k, s in enumerate(new)])
    dnew = tuple(torch.randn_like(s) for s in new)
    inputs = [xw, *state, *(p for p in P if p is not None and p.requires_grad)]
    auto = torch.autograd.grad(sum((s * d).sum() for s, d in zip(new, dnew)), inputs, allow_unused=True)
    back = _pure(Cls, "step_backward", Cls.step_backward, (dnew, cache, P))
    check_step_backward(Cls, back, dnew, P, xw.shape[1])
    dxw, dprev, dpres, dextras = back
    grads = dict.fromkeys(Cls.REC_PARAMS)
    for (w, b), dpre, u in zip(Cls.GEMMS, dpres, us):
        dW = dpre.t() @ u
        grads[w] = dW if grads[w] is None else grads[w] + dW
        if b is not None and P[Cls.REC_PARAMS.index(b)] is not None:
            # (a (1, G·H) bias's of its own shape, as the loops give it)
            db = _shaped(dpre.sum(0), P[Cls.REC_PARAMS.index(b)].shape)
            grads[b] = db if grads[b] is None else grads[b] + db
    for extra, d in zip(Cls.EXTRAS, dextras):
        grads[extra] = d
    hand = [("dxw_t (one step)", dxw, "step_backward")]
    hand += [(f"the state's entry {k} at t-1 (dstate_prev[{k}], one step)", d, "step_backward")
             for k, d in enumerate(dprev)]  # fmt: skip
    # dU_k = dpre_kᵀ u_k: a wrong u_k in step's us (h_t for h_{t-1}) gives a wrong dU_k as a wrong dpre_k does
    Us = {w for w, _ in Cls.GEMMS}
    hand += [(f"{n} (one step)", grads[n], f"step_backward's dpres or the u_k that step returns in us for {n}"
              if n in Us else "step_backward") for n, p in zip(Cls.REC_PARAMS, P)
             if p is not None and p.requires_grad]  # fmt: skip
    for (what, h, fix), a in zip(hand, auto):
        _differs(name, what, h, a, rtol, atol, fix)


def _sequence(Recurrent, Cls, model, name, D, H, B, T, rtol, atol, cell_kwargs):
    x = torch.randn(B, T, D, dtype=torch.float64)
    lengths = torch.full((B,), T)
    lengths[-1] = max(1, T // 2)
    state = None
    grads = {}
    draws = torch.get_rng_state()  # each backend's steps draw the same (a zoneout step's masks)
    for backend in ("autograd", "python"):
        layer = Recurrent(Cls, D, H, bidirectional=True, backend=backend, **cell_kwargs).double()
        for cell in layer.cells:
            cell.load_state_dict(model.state_dict())
        if state is None:
            state = tuple(torch.randn(2, B, s.shape[1], dtype=torch.float64) for s in model.init_state(1))
        s0 = tuple(s.clone().requires_grad_() for s in state)
        xs = x.clone().requires_grad_()
        torch.set_rng_state(draws)
        out, sT = layer(xs, s0 if Cls.num_states == 2 else s0[0], lengths=lengths)
        sT = sT if isinstance(sT, tuple) else (sT,)
        _finite(name, [("the layer's output (a sequence)", out), *((f"the final state's entry {k} (a sequence)", s)
                                                                  for k, s in enumerate(sT))])  # fmt: skip
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum()
        loss = loss + sum((s * s.detach().cos()).sum() for s in sT)
        loss.backward()
        grads[backend] = [("the input x (a sequence)", xs.grad)]
        grads[backend] += [(f"the initial state's entry {k} (a sequence)", s.grad) for k, s in enumerate(s0)]
        grads[backend] += [(f"{n} (a sequence)", p.grad) for n, p in layer.named_parameters()]
    for (what, h), (_, a) in zip(grads["python"], grads["autograd"]):
        _differs(name, what, h, a, rtol, atol)
