"""The native loop as a PyTorch operator, `rnnkit::recurrence`, for code under `torch.compile`.

Dynamo traces Python: left to itself it unrolled the time loop into T copies of the cell's step, compiled
anew for every new sequence length (half a minute to a minute each at T = 30-50 on this 2-core machine) and
ran the unrolled graph slower than the eager native loop. As an operator (torch.library.custom_op) the loop is
one opaque node of the graph: dynamo and AOTAutograd see only its output shapes (the `fake` functions below,
symbolic in T and B, so a second length turns T dynamic instead of compiling a third graph), and the compiled
graph calls the same C++ forward and backward as eager code does (native.py), with the BPTT written out:

    forward:   [hs, state_T..., HH, (CC), caches...] = recurrence(cell, xw, state_0, P, mask, ...)
    backward:  [dxw, dstate_0..., dP...] = recurrence_backward(cell, [HH, (CC), caches...], ..., dhs, dstate_T)

`run` (engine/__init__.py) takes this path inside torch.compile where the native backend would run eagerly
(CPU, float32 or float64, one of rnnkit's cells, the extension built, no GradProbe); the layer's input projection
is then a plain F.linear that inductor compiles with the rest. torch.export keeps plain torch ops (a program
that needs no rnnkit to run), and so does a GradProbe (its records are Python side effects a graph drops).
"""

import functools

import torch
from torch import Tensor

from rnnkit.cells._base import plain_ops_only
from rnnkit.engine import native

CELL_OF_ID = {i: cell for cell, i in native.CELL_IDS.items()}


def native_ready() -> bool:
    """Whether the extension is built and loaded (building it on first call); a constant of the compiled graph."""
    return native.load() is not None


# torch.compiler.assume_constant_result(native_ready): dynamo calls it once while tracing instead of tracing into
# the build. The decorator does only this, but imports dynamo to do it: a second (1 s) on every `import rnnkit`.
native_ready._dynamo_marked_constant = True


def transformed() -> bool:
    """plain_ops_only() as it is, not as dynamo traces it (there it reads True in any compiled graph): whether the
    graph is traced inside torch.func.grad, vmap, jvp or forward-mode AD, where the operator has no rule and the
    loop must run as plain torch ops. A constant of the graph, as native_ready."""
    return plain_ops_only()


transformed._dynamo_marked_constant = True


def wanted(cell, xw, backend, probe) -> bool:
    """Whether `run` should take the operator: inside torch.compile (not torch.export), where `native` would run."""
    return (
        torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and backend in (None, "native")
        and probe is None
        and cell in native.CELL_IDS
        and xw.device.type == "cpu"
        and xw.dtype in (torch.float32, torch.float64)
        and xw.shape[1] > 0
        and not transformed()
        and native_ready()
    )


def run(cell, xw, state0, P, mask, reverse, batch_first):
    """hs, state_T of `cell` over xw through the operator (engine.run's contract, without xbias or raw x̃).
    P goes as the parameters present and their places in cell.REC_PARAMS (no bias: a None, which a custom op's
    autograd can't pair with a gradient)."""
    given = [k for k, p in enumerate(P) if p is not None]
    P = [P[k] for k in given]
    # the caches only where a backward will read them
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (xw, *state0, *P))
    n = len(state0)
    out = recurrence(native.CELL_IDS[cell], xw, list(state0), P, given, mask, reverse, keep, batch_first)
    return out[0], tuple(out[1 : 1 + n])


def _all_params(cell: int, P, given):
    """The cell's REC_PARAMS in order, None where absent."""
    full = [None] * len(CELL_OF_ID[cell].REC_PARAMS)
    for k, p in zip(given, P):
        full[k] = p
    return full


@functools.cache
def _cache_blocks(cell: int) -> tuple[int, ...]:
    """The widths of forward's caches in units of c_t's width (each cache is k·HC wide: k·H where h and c are one
    state; sizes may be symbolic under dynamic shapes, so the C++ side is asked at width 1)."""
    return tuple(native.load().cache_widths(cell, 1, 1, False))


@torch.library.custom_op("rnnkit::recurrence", mutates_args=(), device_types="cpu")
def recurrence(
    cell: int,
    xw: Tensor,
    state0: list[Tensor],
    P: list[Tensor],
    given: list[int],
    mask: Tensor | None,
    reverse: bool,
    keep: bool,
    batch_first: bool,
) -> list[Tensor]:
    """[hs, state_T..., and with keep what backward reads: HH (T+1, B, H), (CC,) caches (T, B, w)...].
    P: the cell's recurrent parameters present, `given` their places in its REC_PARAMS."""
    full = _all_params(cell, P, given)
    out, _, _ = native._run_forward(
        CELL_OF_ID[cell], mask, reverse, batch_first, False, xw, None, state0, full, keep
    )
    return list(out)


@recurrence.register_fake
def _(cell, xw, state0, P, given, mask, reverse, keep, batch_first):
    T, B = xw.shape[:2]
    H, HC = state0[0].shape[1], state0[-1].shape[1]  # h_t's and c_t's widths (the same but in lstmp)
    out = [
        xw.new_empty((B, T, H) if batch_first else (T, B, H)),
        *(xw.new_empty((B, s.shape[1])) for s in state0),
    ]
    if keep:
        out += [xw.new_empty((T + 1, B, s.shape[1])) for s in state0]  # HH, (CC)
        out += [xw.new_empty((T, B, k * HC)) for k in _cache_blocks(cell)]
    return out


@torch.library.custom_op("rnnkit::recurrence_backward", mutates_args=(), device_types="cpu")
def recurrence_backward(
    cell: int,
    saved: list[Tensor],
    X: int,
    P: list[Tensor],
    given: list[int],
    mask: Tensor | None,
    reverse: bool,
    dhs: Tensor,
    dstate: list[Tensor],
    batch_first: bool,
) -> list[Tensor]:
    """BPTT: [dxw (T, B, X), dstate_0..., dP for each P (α of a leaky unit spread to (H,))]."""
    T, B, H = saved[0].shape[0] - 1, saved[0].shape[1], saved[0].shape[2]
    flat = native._flat_params(CELL_OF_ID[cell], _all_params(cell, P, given), H)
    m = None if mask is None else mask.reshape(T, B).to(dhs.dtype).contiguous()  # as _run_forward's
    dstate = [d.contiguous() for d in dstate]
    out = native.load().backward(cell, saved, X, flat, m, reverse, dhs.contiguous(), dstate, False, batch_first,
                                 False, False)  # fmt: skip
    native.keep_plans()
    n = len(dstate)
    dP = out[2 + n : 2 + n + len(flat)]
    grads = [torch.zeros_like(flat[k]) if dP[k] is None else dP[k] for k in given]
    return [out[0], *out[2 : 2 + n], *grads]


@recurrence_backward.register_fake
def _(cell, saved, X, P, given, mask, reverse, dhs, dstate, batch_first):
    T, B, H = saved[0].shape[0] - 1, saved[0].shape[1], saved[0].shape[2]
    c = CELL_OF_ID[cell]
    alpha = c.REC_PARAMS.index("alpha") if "alpha" in c.EXTRAS else -1
    dP = [p.new_empty((H,) if k == alpha else p.shape) for k, p in zip(given, P)]
    return [dhs.new_empty((T, B, X)), *(d.new_empty(d.shape) for d in dstate), *dP]


def _setup_context(ctx, inputs, output):
    cell, xw, state0, P, given, mask, reverse, keep, batch_first = inputs
    # no zeros for the outputs backward gets no gradient of: the caches, megabytes, never differentiated (and hs or
    # a final state the loss does not read: _backward takes None for those)
    ctx.set_materialize_grads(False)
    ctx.cell, ctx.given, ctx.reverse, ctx.keep, ctx.batch_first = cell, given, reverse, keep, batch_first
    ctx.n, ctx.X, ctx.state_shapes, ctx.p_shapes = (
        len(state0),
        xw.shape[2],
        [s.shape for s in state0],
        [p.shape for p in P],
    )
    # without keep (run asks for it where a gradient is wanted; a caller of the operator may not), the forward is
    # run again for its caches
    ctx.save_for_backward(mask, *P, *(output[1 + len(state0) :] if keep else (xw, *state0)))


def _backward(ctx, grads):
    mask, *rest = ctx.saved_tensors
    P, saved = list(rest[: len(ctx.p_shapes)]), rest[len(ctx.p_shapes) :]
    n = ctx.n
    if not ctx.keep:
        xw, state0 = saved[0], list(saved[1:])
        saved = recurrence(ctx.cell, xw, state0, P, ctx.given, mask, ctx.reverse, True, ctx.batch_first)[
            1 + n :
        ]
    dhs, *dstate = grads[: 1 + n]
    HH = saved[0]
    T, B, H = HH.shape
    T = T - 1
    if dhs is None:
        dhs = HH.new_zeros((B, T, H) if ctx.batch_first else (T, B, H))
    dstate = [HH.new_zeros((B, s[1])) if d is None else d for d, s in zip(dstate, ctx.state_shapes)]
    out = recurrence_backward(
        ctx.cell, list(saved), ctx.X, P, ctx.given, mask, ctx.reverse, dhs, dstate, ctx.batch_first
    )
    dstate0 = [
        d.sum_to_size(s) for d, s in zip(out[1 : 1 + n], ctx.state_shapes)
    ]  # a state0 of batch 1: summed
    dP = [g.sum_to_size(s) for g, s in zip(out[1 + n :], ctx.p_shapes)]  # α: (H,) back to its own shape
    return None, out[0], dstate0, dP, None, None, None, None, None


recurrence.register_autograd(_backward, setup_context=_setup_context)
