"""The `python` backend: backpropagation through time written out, the time loop in Python.

Forward (time-major inside; `order` is 0..T-1, or T-1..0 for the reverse direction):

    state = state_0
    for t in order:
        new, us, cache = step(xw[t], state, P)              # one recurrent GEMM (or two, three)
        state = m_t ⊙ new + (1 - m_t) ⊙ state               # m_t = [t < length]: padding keeps the state
        hs[t] = m_t ⊙ new_h                                 # outputs past a sequence's end are 0

Backward, the same loop run backwards (Werbos 1990; deck 002 "BPTT"):

    dstate = dL/dstate_T
    for t in reversed(order):
        dh = dstate_h + m_t ⊙ dhs[t]                        # total dL/dh_t: from above and from t+1
        dxw[t], dstate_prev, dpre[t], dextra = step_backward(m_t ⊙ dstate, cache_t, P)
        dstate = dstate_prev + (1 - m_t) ⊙ dstate
    dU_k = Σ_t dpre_k[t]ᵀ u_k[t]                            # ONE GEMM per recurrent matrix, after the loop

The input projection xw = x W_xhᵀ + b is outside this function, so autograd computes dW_xh and dx
from dxw as one GEMM each. Runs on any device and dtype.
"""

import contextlib

import torch

from rnnkit.cells._base import autocast_on, check_step, check_step_backward, check_unchanged, versions
from rnnkit.engine.reference import autograd_loop, higher_order_grads, restored_input, saved_input


def _order(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def forward_loop(cell, xw, state0, P, mask, reverse, keep):
    """Run the cell over xw (T, B, G·H). Returns hs (T, B, H), final state, and what backward needs."""
    T, B = xw.shape[:2]
    H = state0[0].shape[1]
    hs = xw.new_empty(T, B, H)
    state, caches, us = state0, [None] * T, [[None] * T for _ in cell.GEMMS]
    # (T, B, 1): padded steps by a select, see autograd_loop (0·inf where a padded step overflowed)
    live = None if mask is None else mask != 0
    check = cell._checked_steps  # (a cell of one's own: its first step's outputs, see check_step)
    for t in _order(T, reverse):
        # a padded step runs on a zero state, see autograd_loop: its caches and us then hold no inf of the state kept
        # there, which the step's zero gradients multiplied into NaN (dU = Σ dpreᵀ u, dxw, the EXTRAS' gradients)
        run_on = state if mask is None else tuple(torch.where(live[t], s, 0) for s in state)
        seen = versions(xw_t=xw, state=run_on, P=P) if check else None
        got = cell.step(xw[t], run_on, P)
        if check:
            check_unchanged(cell, "step", seen)
            check_step(cell, got, xw[t], run_on, P)
            check = False
        new, u_t, cache = got
        if mask is not None:
            new = tuple(torch.where(live[t], n, s) for n, s in zip(new, state))
        hs[t] = new[0] if mask is None else torch.where(live[t], new[0], 0)
        if keep:
            caches[t] = cache
            for k, u in enumerate(u_t):
                us[k][t] = u
        state = new
    if not keep:
        return hs, state, caches, None
    stacked = [torch.stack(u) for u in us]
    # a cache that is a step's u (Elman's h_t is the next step's h_prev, GRU keeps its h_prev) becomes a view of
    # the stacked us: saved for backward once, not twice (rnn_tanh kept 1.7x, gru 1.13x what torch.nn keeps)
    view = {id(u): s[t] for u_k, s in zip(us, stacked) for t, u in enumerate(u_k)}
    caches = [
        tuple(view.get(id(c), c) for c in cache) if isinstance(cache, tuple) else cache for cache in caches
    ]
    return hs, state, caches, stacked


def backward_loop(cell, dhs, dstateT, caches, us, P, mask, reverse, probe, xw_width=None, needs=None):
    """BPTT: returns dxw (T, B, G·H), dstate_0, and the gradients of the recurrent parameters P. xw_width: G·H,
    which a cell of one's own's dxw_t is held to (see check_step_backward); needs: which of P want a gradient
    (None: all), the others' None and their GEMMs not run."""
    T, B = dhs.shape[:2]
    G = [u.shape[-1] for u in us]
    dxw = None
    dpres = [dhs.new_empty(T, B, P[cell.REC_PARAMS.index(w)].shape[0]) for w, _ in cell.GEMMS]
    dextras = [0 for _ in cell.EXTRAS]
    dh_record = dhs.new_empty(dhs.shape) if probe is not None else None
    dstate = dstateT
    # a select: a padded step's output is 0 whatever came before, so a NaN of dL/dout there reaches nothing
    live = None if mask is None else mask != 0
    check = cell._checked_steps and xw_width is not None
    for t in reversed(_order(T, reverse)):
        dh = dstate[0] + (dhs[t] if mask is None else torch.where(live[t], dhs[t], 0))
        if dh_record is not None:
            dh_record[t] = dh
        dnew = dpass = (dh, *dstate[1:])
        # selects, not m·d and (1 - m)·d: 0·inf is NaN, and an inf (or NaN) dh reaching a padded step made the
        # step's gradients NaN and, through them, the state passed on (c's too)
        if mask is not None:
            dnew = tuple(torch.where(live[t], d, 0) for d in dnew)
        seen = versions(dstate_t=dnew, cache=caches[t], P=P) if check else None
        got = cell.step_backward(dnew, caches[t], P)
        if check:
            check_unchanged(cell, "step_backward", seen)
            check_step_backward(cell, got, dnew, P, xw_width)
            check = False
        dxw_t, dprev, dpre, dextra = got
        # no gradient of a padded step's input, see autograd_loop (0·NaN where W_hh holds inf)
        if mask is not None:
            dxw_t = torch.where(live[t], dxw_t, 0)
        if dxw is None:
            dxw = dhs.new_empty(T, B, dxw_t.shape[1])
        dxw[t] = dxw_t
        for k, d in enumerate(dpre):
            dpres[k][t] = d
        for k, d in enumerate(dextra):
            if d is not None:  # (an EXTRAS parameter the cell doesn't have, None as a bias: no gradient)
                dextras[k] = dextras[k] + d
        dstate = dprev if mask is None else tuple(torch.where(live[t], a, b) for a, b in zip(dprev, dpass))
    if probe is not None:
        probe.record(dh_record)
    return dxw, dstate, _param_grads(cell, P, dpres, us, G, dextras, needs)


def _param_grads(cell, P, dpres, us, G, dextras, needs=None):
    """dU_k = Σ_t dpre_kᵀ u_k as one GEMM; db_k = Σ dpre_k; extras summed over steps. Only those `needs` asks for
    (a frozen W_hh's GEMM is as long as the loop's own recurrent products)."""
    grads = [None] * len(P)
    needs = [True] * len(P) if needs is None else needs
    for (w, b), dpre, u, g in zip(cell.GEMMS, dpres, us, G):
        dpre2 = dpre.flatten(
            0, -2
        )  # (T·B, width): flatten, not reshape(-1, ·), which B = H = 0 left ambiguous
        i = cell.REC_PARAMS.index(w)
        if needs[i]:
            dW = dpre2.t() @ u.reshape(dpre2.shape[0], g)
            grads[i] = dW if grads[i] is None else grads[i] + dW
        if b is not None and P[cell.REC_PARAMS.index(b)] is not None and needs[cell.REC_PARAMS.index(b)]:
            j = cell.REC_PARAMS.index(b)  # (a bias of two entries: the sums added, as U's products are)
            db = _shaped(dpre2.sum(0), P[j].shape)
            grads[j] = db if grads[j] is None else grads[j] + db
    for name, d in zip(cell.EXTRAS, dextras):
        i = cell.REC_PARAMS.index(name)
        grads[i] = d.to(P[i].dtype) if isinstance(d, torch.Tensor) and P[i] is not None else d
    return grads


def _shaped(db, shape):
    """db = Σ dpre (G·H,) as a bias of that shape takes it, as the native loop gives it: a (1, G·H) one's the same
    numbers (its (G·H,) failed in torch's 'returned an invalid gradient ... expected shape compatible with [1, 8]'),
    a (1,) or 0-dim one's summed."""
    if db.shape == shape:
        return db
    return db.reshape(shape) if db.numel() == shape.numel() else db.sum_to_size(shape)


def _flat_tuples(caches):
    """Whether every step's cache is a tuple of tensors (or None) of one length: what save_for_backward takes."""
    lengths = {len(c) if isinstance(c, tuple) else -1 for c in caches}
    tensors = all(c is None or isinstance(c, torch.Tensor) for cache in caches for c in cache)
    return len(lengths) <= 1 and -1 not in lengths and tensors


def forward_only(cell, mask, reverse, xw, state0, P):
    """PythonRecurrence's forward where no gradient is asked for (no_grad, inference_mode: evaluation, sampling):
    one step's caches held at a time. (Inside an autograd.Function's forward grad mode is always off and
    needs_input_grad says only what requires grad, so the Function kept every step's caches there.)"""
    hs, state, _, _ = forward_loop(cell, xw, state0, P, mask, reverse, keep=False)
    return hs, tuple(s.clone() for s in state)  # (as PythonRecurrence: T = 0 would hand back state0 itself)


def _rng_state(device):
    """torch's generators as a cell of one's own's step finds them (the CPU's, and a CUDA device's): the draws of
    a step that draws (zoneout's masks), which the rerun of backward(create_graph=True) makes again (see _replayed).
    None under torch.compile, which runs the autograd loop (and would trace the read)."""
    if torch.compiler.is_compiling():
        return None
    return torch.get_rng_state(), device, torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replayed(rng):
    """The forward's generators (_rng_state) while the rerun runs, and the caller's back after, as
    torch.utils.checkpoint replays them: the rerun drew new masks, and its gradients were those of another forward
    (3.7 off backward's own for a zoneout cell), and moved the caller's generator on."""
    if rng is None:
        yield
        return
    cpu, device, cuda = rng
    with torch.random.fork_rng(devices=[device] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


class PythonRecurrence(torch.autograd.Function):
    """hs, *state_T = f(xw, *state_0, *P) with the hand-written backward above."""

    @staticmethod
    def forward(ctx, cell, mask, reverse, probe, n_state, xw, *tensors):
        state0, P = tensors[:n_state], tensors[n_state:]
        keep = torch.is_grad_enabled() or any(ctx.needs_input_grad[5:])
        ctx.rng = _rng_state(xw.device) if keep and cell._checked_steps else None
        hs, state, caches, us = forward_loop(cell, xw, state0, P, mask, reverse, keep=keep)
        ctx.cell, ctx.mask, ctx.reverse, ctx.probe, ctx.n_state = cell, mask, reverse, probe, n_state
        ctx.shape, ctx.n_tensors, ctx.n_us = hs.shape, len(tensors), len(us) if keep else 0
        ctx.xw_width, ctx.device = xw.shape[2], xw.device
        # the inputs (for higher-order gradients; the parameters as the loop read them) and every step's cache, all
        # through save_for_backward: freed once backward has run, seen by saved-tensor hooks (save_on_cpu,
        # torch.utils.checkpoint), and checked for in-place changes when unpacked (below). A cell of the user's
        # own whose caches are not flat tuples of tensors, one length every step, keeps them as they are.
        flat_ok = keep and _flat_tuples(caches)
        ctx.caches = caches if keep and not flat_ok else None
        flat = [c for cache in caches for c in cache] if flat_ok else []
        ctx.per_step = len(flat) // max(len(caches), 1)
        ctx.save_for_backward(*saved_input(ctx, xw), *tensors, *(us if keep else ()), *flat)
        return (hs, *(s.clone() for s in state))  # clones: the caches may hold the same tensors

    @staticmethod
    def backward(ctx, dhs, *dstateT):
        # the loop ran with autocast off (engine._no_autocast), and so does its BPTT: a loss.backward() called inside
        # torch.autocast ran its GEMMs in bfloat16, rounding dL/dh_t at every step (gradients 0.5% off float32's)
        if autocast_on(ctx.device):
            with torch.autocast(ctx.device.type, enabled=False):
                return PythonRecurrence._backward(ctx, dhs, *dstateT)
        return PythonRecurrence._backward(ctx, dhs, *dstateT)

    @staticmethod
    def _backward(ctx, dhs, *dstateT):
        # unpacking raises torch's own error if an input was changed in place since forward (a weight by an
        # optimizer step, the initial state), as torch.nn's RNNs do: the loop below reads P and the caches, the
        # saved ones (a hook that saves copies keeps those of forward time, as autograd's own graph does)
        saved = ctx.saved_tensors
        xw, rest = saved[: ctx.n_in], saved[ctx.n_in :]  # (xw, or what computes it again: saved_input)
        n, k = ctx.n_tensors, ctx.per_step
        tensors, us, flat = rest[:n], rest[n : n + ctx.n_us], rest[n + ctx.n_us :]
        caches = ctx.caches or (
            [tuple(flat[i : i + k]) for i in range(0, len(flat), k)] if k else [()] * ctx.shape[0]
        )
        cell, P = ctx.cell, tensors[ctx.n_state :]
        if dhs is None:
            dhs = us[0].new_zeros(ctx.shape)
        dstateT = tuple(torch.zeros_like(dhs[0]) if d is None else d for d in dstateT)
        from rnnkit.engine import _batched

        # backward(create_graph=True): gradients that differentiate again; batched gradients (is_grads_batched,
        # jacobian(vectorize=True)) too, as the native loop does: the loop below writes each step into buffers made
        # like dhs, which are autograd's plain zeros where only the final state's gradient is batched (vmap refused)
        if torch.is_grad_enabled() or any(_batched(d) for d in (dhs, *dstateT)):
            xw, n = restored_input(ctx, xw), ctx.n_state

            def rerun(xw, *tensors):
                hs, state = autograd_loop(
                    cell, xw, tuple(tensors[:n]), tensors[n:], ctx.mask, ctx.reverse, ctx.probe
                )
                return (hs, *state)

            with _replayed(ctx.rng):
                grads = higher_order_grads([xw, *tensors], rerun, (dhs, *dstateT), ctx.needs_input_grad[5:])
            return (None,) * 5 + tuple(grads)
        needs = ctx.needs_input_grad[6 + ctx.n_state :]  # (P's: a frozen W_hh's GEMM is not run)
        dxw, dstate0, dP = backward_loop(
            cell, dhs, dstateT, caches, us, P, ctx.mask, ctx.reverse, ctx.probe, ctx.xw_width, needs
        )
        dP = [None if p is None or not p.requires_grad else g for p, g in zip(P, dP)]
        return (None, None, None, None, None, dxw, *dstate0, *dP)
