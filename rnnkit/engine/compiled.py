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
is then a plain F.linear that inductor compiles with the rest. A cell of one's own goes as the id its traced kernels
are registered under (native.traced_id): `_own_id` traces them from the parameters' shapes while dynamo traces the
model, a call dynamo makes eagerly (as native_ready's) on a thread of its own, out of dynamo's fake tensors; the
fake functions size its caches from the traced layout (the extension's cache_widths of that id). A cell that doesn't
trace is left to dynamo, which unrolls the python loop (with the reason where backend="native" was asked for).
The graph holds the id: where what the kernels bake in changes afterwards (a global number the step reads), the
operator says so instead of running the old kernels (torch._dynamo.reset() compiles anew). torch.export keeps plain torch ops (a program
that needs no rnnkit to run; with a dynamic T, one scan: reference.scan_loop), and so does a GradProbe (its records are Python side effects a graph drops).
"""

import concurrent.futures
import functools

import torch
from torch import Tensor

from rnnkit.cells._base import plain_ops_only
from rnnkit.engine import native
from rnnkit.engine.reference import autograd_loop, higher_order_grads
from rnnkit.errors import RnnkitError

CELL_OF_ID = {i: cell for cell, i in native.CELL_IDS.items()}


def native_ready() -> bool | str:
    """Whether the extension is built and loaded (building it on first call); a constant of the compiled graph.
    Called eagerly, it gives the warning of a failed build, which dynamo dropped where resolve_backend gives it.
    A bad setting (RNNKIT_GEMM=fast) is its one-line message, which `wanted` has the graph raise: raised here, inside
    dynamo's call, it came out as an InternalTorchDynamoError after dynamo's own traceback."""
    try:
        loaded = native.load()
    except RnnkitError as e:
        return str(e)
    if loaded is not None:
        return True
    if native.build_failed(native._reason):
        from rnnkit.engine import warn_build_failed

        warn_build_failed(native._reason)
    return False


# torch.compiler.assume_constant_result(native_ready): dynamo calls it once while tracing instead of tracing into
# the build. The decorator does only this, but imports dynamo to do it: a second (1 s) on every `import rnnkit`.
native_ready._dynamo_marked_constant = True


def transformed() -> bool:
    """plain_ops_only() as it is, not as dynamo traces it (there it reads True in any compiled graph): whether the
    graph is traced inside torch.func.grad, vmap, jvp or forward-mode AD, where the operator has no rule and the
    loop must run as plain torch ops. A constant of the graph, as native_ready."""
    return plain_ops_only()


transformed._dynamo_marked_constant = True


def _own_id(cell, shapes, dtype) -> int | str:
    """native.traced_id of a cell of one's own from its parameters' shapes: the id its traced kernels are registered
    under, or the one-line reason it runs on the python loop. A constant of the graph, as native_ready: dynamo calls
    it once while tracing (the trace, make_fx and a C++ compile, runs eagerly) instead of tracing into it. On a
    thread of its own: dynamo's fake tensors and shape environment, which are the calling thread's, took in the
    sample step's ops (a guard of the trace's own shapes failed the graph's)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(native.traced_id_of_shapes, cell, shapes, dtype).result()


_own_id._dynamo_marked_constant = True


def own_cell_id(cell, xw, P) -> int | str | None:
    """_own_id for a cell of one's own run on xw with parameters P under torch.compile; None where a parameter's
    shape is symbolic (the kernels are traced for fixed sizes) or it is no float (the kernels read floats)."""
    if not all(p is None or all(isinstance(d, int) for d in p.shape) for p in P):
        return None
    # a boolean mask: the trace, which samples every parameter as a float of its shape, failed in the step
    if not all(p is None or p.is_floating_point() for p in P):
        return None  # (the python loop runs it, as eagerly)
    return _own_id(cell, tuple(None if p is None else tuple(p.shape) for p in P), xw.dtype)


def wanted(cell, xw, backend, probe, P=None, fits=False) -> int | None:
    """The cell id `run` should take the operator with, or None: inside torch.compile (not torch.export), where
    `native` would run. A cell of one's own (P its parameters, fits: engine.native_fits) goes as its traced id."""
    if not (
        torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and backend in (None, "native")
        and not transformed()
    ):
        return None
    # a device or dtype the loop doesn't run (float16): with backend="native", eager code's line (dynamo drops the
    # warning resolve_backend gives, and the python loop ran in silence)
    kind = native.unsupported_kind(xw.device.type, xw.dtype)
    if kind is not None and backend == "native":
        _unavailable(kind)
    ready = kind is None and probe is None and xw.shape[1] > 0 and native_ready()
    # a bad setting: the graph refuses to run, as eager code does (raised while tracing, dynamo skipped the frame and
    # traced the autograd loop, in silence), with the line as the lengths' check says it
    if isinstance(ready, str):
        torch._assert_async(xw.new_zeros((), dtype=torch.bool), f"rnnkit: {ready}")
        return None
    if not ready:
        return None
    if cell in native.CELL_IDS:
        return native.CELL_IDS[cell]
    if P is None or not fits:
        return None
    got = own_cell_id(cell, xw, P)
    # ("quiet": nothing to say, as resolve_backend says nothing of it eagerly; a cell of no units said
    # 'unavailable (quiet)' here)
    if isinstance(got, str) and got != "quiet" and backend == "native":
        _unavailable(got)
    return got if isinstance(got, int) else None


def _unavailable(reason) -> bool:
    """resolve_backend's line for backend="native" and a cell of one's own that doesn't trace, said eagerly: a
    constant of the graph, as native_ready (dynamo drops a warnings.warn it traces, and there resolve_backend, which
    reads a transform under torch.compile, says nothing: a model only ever run compiled ran the python loop in
    silence)."""
    from rnnkit.engine import _warn_once

    _warn_once(f"rnnkit native backend unavailable ({reason}); using the python backend")
    return True


_unavailable._dynamo_marked_constant = True


def run(cell, xw, state0, P, mask, reverse, batch_first, cid=None):
    """hs, state_T of `cell` over xw through the operator (engine.run's contract, without xbias or raw x̃).
    P goes as the parameters present and their places in cell.REC_PARAMS (no bias: a None, which a custom op's
    autograd can't pair with a gradient). cid: the cell's id (`wanted`'s; a cell of one's own: its traced id)."""
    given = [k for k, p in enumerate(P) if p is not None]
    P = [P[k] for k in given]
    # the caches only where a backward will read them
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (xw, *state0, *P))
    n = len(state0)
    cid = native.CELL_IDS[cell] if cid is None else cid
    out = recurrence(cid, xw, list(state0), P, given, mask, reverse, keep, batch_first)
    return out[0], tuple(out[1 : 1 + n])


def _cell(cell: int):
    """The class of a cell id: rnnkit's own, or a traced cell of one's own (native.traced_cell)."""
    return CELL_OF_ID[cell] if cell in CELL_OF_ID else native.traced_cell(cell)


def _all_params(cell: int, P, given):
    """The cell's REC_PARAMS in order, None where absent."""
    full = [None] * len(_cell(cell).REC_PARAMS)
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
    full, cls = _all_params(cell, P, given), _cell(cell)
    if cell not in CELL_OF_ID and native.traced_id(cls, full, xw) != cell:
        # (what the kernels bake in changed since dynamo traced the graph: a global number the step reads, say)
        raise RnnkitError(f"{cls.__name__}'s step functions or the numbers they read changed since torch.compile "
                          "traced them; call torch._dynamo.reset() to compile it again")  # fmt: skip
    out, _, _ = native._run_forward(
        cls, mask, reverse, batch_first, False, xw, None, state0, full, keep, cell
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
    flat = native._flat_params(_cell(cell), _all_params(cell, P, given), H)
    m = None if mask is None else mask.reshape(T, B).to(dhs.dtype).contiguous()  # as _run_forward's
    dstate = [d.contiguous() for d in dstate]
    # contiguous: a saved-tensor hook's unpack may hand them back with other strides (see NativeRecurrence.backward)
    saved = [t.contiguous() for t in saved]
    # (need [], every gradient: the operator's backward is asked for all its P)
    out = native.load().backward(cell, saved, X, flat, m, reverse, dhs.contiguous(), dstate, False, batch_first,
                                 False, False, [])  # fmt: skip
    native.keep_plans_soon()
    n = len(dstate)
    dP = out[2 + n : 2 + n + len(flat)]
    grads = [torch.zeros_like(flat[k]) if dP[k] is None else dP[k] for k in given]
    if cell not in CELL_OF_ID:  # a traced cell's EXTRAS gradient comes as (H,): back to its parameter's shape
        grads = [
            g.reshape(p.shape) if g.numel() == p.numel() else g.sum_to_size(p.shape) for g, p in zip(grads, P)
        ]
    return [out[0], *out[2 : 2 + n], *grads]


@recurrence_backward.register_fake
def _(cell, saved, X, P, given, mask, reverse, dhs, dstate, batch_first):
    T, B, H = saved[0].shape[0] - 1, saved[0].shape[1], saved[0].shape[2]
    c = _cell(cell)
    alpha = c.REC_PARAMS.index("alpha") if "alpha" in c.EXTRAS and cell in CELL_OF_ID else -1
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
    # run again for its caches; xw and state_0 also for a create_graph=True backward (see _backward), which alone
    # reads them where keep is set (AOTAutograd's backward graph then saves no more than before)
    ctx.save_for_backward(mask, *P, xw, *state0, *(output[1 + len(state0) :] if keep else ()))


def _backward(ctx, grads):
    mask, *rest = ctx.saved_tensors
    n, k = ctx.n, len(ctx.p_shapes)
    P, xw, state0, saved = list(rest[:k]), rest[k], list(rest[k + 1 : k + 1 + n]), rest[k + 1 + n :]
    dhs, *dstate = grads[: 1 + n]
    # create_graph=True: where the operator runs in eager autograd (torch.compile(backend="eager"); AOTAutograd
    # traces backward without grad mode, and refuses a double backward of its own)
    if torch.is_grad_enabled():
        return None, *_differentiable(ctx, mask, xw, state0, P, dhs, dstate), None, None, None, None, None
    if not ctx.keep:
        saved = recurrence(ctx.cell, xw, state0, P, ctx.given, mask, ctx.reverse, True, ctx.batch_first)[
            1 + n :
        ]
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


def _differentiable(ctx, mask, xw, state0, P, dhs, dstate):
    """dxw, [dstate_0...], [dP...] that differentiate again, as NativeRecurrence._differentiable gives them: the
    C++ BPTT reads caches that carry no graph (recurrence_backward has no derivative: "no autograd formula was
    registered"), so the same function is run again as a plain autograd loop on the saved inputs and differentiated
    with create_graph=True (reference.higher_order_grads)."""
    cls, T, B = _cell(ctx.cell), xw.shape[0], xw.shape[1]

    def rerun(xw, *tensors):
        full = _all_params(ctx.cell, tensors[len(state0) :], ctx.given)
        m = None if mask is None else mask.reshape(T, B, 1)
        hs, state = autograd_loop(cls, xw, tensors[: len(state0)], full, m, ctx.reverse)
        return (hs.transpose(0, 1) if ctx.batch_first else hs, *state)

    got = higher_order_grads([xw, *state0, *P], rerun, (dhs, *dstate))
    return got[0], got[1 : 1 + len(state0)], got[1 + len(state0) :]


recurrence.register_autograd(_backward, setup_context=_setup_context)
