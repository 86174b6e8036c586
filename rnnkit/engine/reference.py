"""The `autograd` backend: a plain loop through autograd. The reference the others are checked against.

It calls the same one-step forward functions as the other backends but lets autograd build the
backward, so it checks every hand-written `*_step_backward` and the engine's BPTT.

Under `torch.autocast` the loop runs with autocast off, in float32 (engine._no_autocast), but its backward is
autograd's own, run in whatever autocast state `backward()` is called in: a loss.backward() called inside the
autocast block runs the backward's GEMMs in bfloat16, gradients about 0.7% off those of a backward outside it
(the python and native loops, whose BPTT turns autocast off, give the same bits either way). Call backward outside
the block, as torch's autocast documentation asks; outside it the three backends agree to float32 rounding.

float16 and bfloat16 tensors reach it in float32 (engine._in_float32, the layer's _project), as they reach the
other loops: it is the reference in float32 for them too.
"""

import threading
import warnings

import torch
from torch.autograd import Variable

from rnnkit.cells._base import (
    changed_in_place,
    check_step,
    check_unchanged,
    refused_in_place,
    versions,
)
from rnnkit.errors import RnnkitError


def autograd_loop(cell, xw, state0, P, mask, reverse, probe=None):
    T, B = xw.shape[:2]
    order = range(T - 1, -1, -1) if reverse else range(T)
    # a state0 of batch 1 broadcast, as the python loop does: a cell of one's own's step returned one row for it,
    # which its first step's check refused ("us[0] of shape (1, H) ...; it must be (B, H)")
    outs, state = [None] * T, tuple(s.expand(B, -1) if s.shape[0] != B else s for s in state0)
    hooks, raws = [None] * T, [None] * T
    # one view per step, taken once: xw[t] in the loop would make each step's backward write its gradient into
    # a (T, B, G) zero tensor of its own, T² memory and time under create_graph (1.7 GB at T=2000, B=2, H=8)
    xw_t = xw.unbind(0)
    # padded steps by a select, not s + m·(n - s) and m·h: a padded step's candidate n is discarded, and one that
    # overflowed to inf (a growing relu state, float16) made the kept state NaN (0·inf), its output too
    live = None if mask is None else mask != 0
    check = cell._checked_steps  # (a cell of one's own: its first step's outputs, see check_step)
    for t in order:
        # a padded step runs on a zero state (its result is discarded): the state kept there may be inf (a relu state
        # that overflowed at the sequence's last step), and the step's zero gradient times it made every weight
        # gradient NaN, where torch.nn's packed run has no padded steps
        run_on = state if mask is None else tuple(torch.where(live[t], s, 0) for s in state)
        # and its xw_t gets no gradient, as in torch.nn's packed run, which takes no step there: the step's zero
        # gradient times its pre-activation, NaN where the zero state met an inf in W_hh (0·inf), was NaN in dxw
        x_t = xw_t[t] if mask is None else torch.where(live[t], xw_t[t], xw_t[t].detach())
        # (not while torch.compile traces the loop: version counters are no values of its graph, and reading them
        # there failed in dynamo)
        seen = (
            versions(xw_t=xw if mask is None else x_t, state=run_on, P=P)
            if check and not torch.compiler.is_compiling()
            else None
        )
        try:
            got = cell.step(x_t, run_on, P)
        except (
            RuntimeError
        ) as e:  # xw_t.mul_(...) under grad: torch's 'Output 0 of UnbindBackward0 is a view and is
            if check and "modified inplace" in str(
                e
            ):  # being modified inplace' traceback, as python's one line
                raise changed_in_place(cell, "step", "xw_t") from None
            # (a parameter, or an initial state given, is a leaf that requires grad: torch refused b_hh.mul_(...) in
            # its own 'a leaf Variable that requires grad is being used in an in-place operation', naming neither)
            if check and not torch.compiler.is_compiling():
                refused = refused_in_place(cell, "step", cell.step, (x_t, run_on, P), ("xw_t", "state", "P"))
                if refused is not None:
                    raise refused from None
            raise
        if check:
            if seen is not None:
                check_unchanged(cell, "step", seen)
            check_step(cell, got, x_t, run_on, P)
            check = False
        new = raw = got[0]
        if mask is not None:
            new = tuple(torch.where(live[t], n, s) for n, s in zip(new, state))
        outs[t] = new[0] if mask is None else torch.where(live[t], new[0], 0)
        if probe is not None and new[0].requires_grad:
            hooks[t] = new[0]
            # the step's own h_t too, where lengths keep a select of it: a second-order pass reaches h_t also through
            # what its backward saved of it (tanh's output, rnn_tanh's h_t), which the select doesn't see
            raws[t] = raw[0] if mask is not None and raw[0].requires_grad else None
        state = new
    if probe is not None:
        _watch(probe, hooks, raws, live, [s for s in state[1:] if s.requires_grad])
    return _tied_to_input(cell, xw, torch.stack(outs), state, P)


def _tied_to_input(cell, xw, hs, state, P):
    """hs and state, tied to xw and P by an exact zero for a cell of one's own: one whose step never reads xw_t
    (driven by its state alone) left W_xh, b_xh and x without a gradient (None) here, while the python and native
    loops give them zeros (its dxw_t); so did one whose step never reads an EXTRAS parameter, to which they give the
    zeros its step_backward returns (a gain g that step leaves out: g.grad None here, zeros there). Zeros here too,
    as torch.nn's RNNs give a weight of their graph whose gradient is zero (AdamW decays it: it skips a None). The
    sum of an empty slice (not 0·xw: 0·inf is NaN); rnnkit's own cells read xw_t and all their parameters."""
    if not cell._checked_steps:
        return hs, state
    tied = [t for t in (xw, *P) if isinstance(t, torch.Tensor) and t.requires_grad]
    if tied:
        zero = sum((t[:0] if t.dim() else t.reshape(1)[:0]).sum() for t in tied)  # (views: no copy of xw)
        hs, state = hs + zero, tuple(s + zero for s in state)
    return hs, state


def scan_loop(cell, xw, state0, P, mask, reverse):
    """The autograd loop as one scan (torch's prototype `scan` operator): what torch.export records where the time
    dimension is dynamic (torch.export.Dim), where the Python loop above fixed T to the example input's length
    ("your code specialized it to be a constant") and the export failed. The same steps, masks and order:

        (state_t, out_t) = combine(state_{t-1}, (xw_t, live_t)),  t = 0..T-1 (T-1..0 reversed)"""
    from torch._higher_order_ops.scan import scan

    B = xw.shape[1]
    # the carry keeps one shape and dtype: a state of batch 1 is broadcast first (as the python backend does)
    init = tuple(s.expand(B, -1).clone() for s in state0)
    xs = (xw,) if mask is None else (xw, mask != 0)

    def combine(state, inputs):  # (scan forbids outputs that alias inputs or each other: hence the clones)
        live = inputs[1] if mask is not None else None  # (a padded step on a zero state: see autograd_loop)
        run_on = state if live is None else tuple(torch.where(live, s, 0) for s in state)
        # and its xw_t no gradient (0·NaN where the zero state met an inf in W_hh), as in autograd_loop
        x_t = inputs[0] if live is None else torch.where(live, inputs[0], inputs[0].detach())
        new = tuple(cell.step(x_t, run_on, P)[0])
        if mask is not None:
            return tuple(torch.where(live, n, s) for n, s in zip(new, state)), torch.where(live, new[0], 0)
        new = tuple(n.clone() if any(n is s for s in state) else n for n in new)
        return new, new[0].clone()

    with (
        warnings.catch_warnings()
    ):  # torch's own, from inside scan: its dynamo reads .grad of every tensor it is
        # given, and what it imports uses torch.jit
        warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning)
        warnings.filterwarnings("ignore", "`torch.jit.script_method` is deprecated", DeprecationWarning)
        _trace_afresh(scan)
        state, hs = scan(combine, init, xs, reverse=reverse)
    return _tied_to_input(cell, xw, hs, tuple(state), P)


def _trace_afresh(scan):
    """Drop what dynamo compiled for scan's inner function (torch.compile'd by scan, cached by its code object) in
    an earlier trace: its guards, read on this export's symbolic sizes, fixed them to the sizes that trace had (a
    batch static in a first export failed a second export with it dynamic: "your code specialized it to be a
    constant (3)")."""
    consts = getattr(getattr(scan, "__code__", None), "co_consts", ())  # (torch's private names, looked up
    code = next(
        (c for c in consts if getattr(c, "co_name", None) == "run_flattened_scan"), None
    )  # defensively)
    reset_code = getattr(torch._dynamo.eval_frame, "reset_code", None)
    if code is not None and reset_code is not None:
        reset_code(code)


PROBE_COMPILE_ERROR = (
    "a GradProbe records dL/dh_t with autograd hooks on the loop's states, which a graph compiled by torch.compile "
    "doesn't keep: compile without fullgraph=True (the probed loop then runs eagerly) or probe outside torch.compile"
)


def _watch(probe, hs, raws=None, live=None, also=()):
    """Record dL/dh_t of every step into probe, once per backward pass: one hook on all the steps, called when
    the pass has computed every gradient it needs; a step it doesn't reach (a loss on c_T alone misses h_T)
    gets None, recorded as 0. (A hook per step recorded only once all had fired in one pass: nothing for such
    a pass, and the next pass's record then mixed both.) raws: with lengths, the step's own h_t of each step,
    whose gradient is recorded where the sequence is live (live[t]), hs's (the state carried) where it has ended.
    also: the run's other final states (c_T): a pass that reaches the run there alone (a loss on c_T of one step)
    records zeros, as the python and native loops do, where no hook fired and nothing was recorded."""
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        # hooks on a compiled graph's steps recorded dL/dout_t, not dL/dh_t. Dynamo takes this raise for a graph
        # break: the loop around it runs eagerly (the probe records what it should), and fullgraph=True says why
        raise RnnkitError(PROBE_COMPILE_ERROR)
    from rnnkit.engine import in_vmap, warn_batched

    # a forward under vmap: its batched states are in no graph that a backward outside vmap reaches (there
    # nothing was recorded, in silence). (Not asked while dynamo traces: it can't trace the question.)
    if not torch.compiler.is_compiling() and in_vmap():
        warn_batched()
        return
    watched = [t for t, h in enumerate(hs) if h is not None]  # (the steps whose h_t needs a gradient)
    if not watched:
        return
    shape, like = hs[watched[0]].shape, {"dtype": hs[watched[0]].dtype, "device": hs[watched[0]].device}
    own = [t for t in watched if raws is not None and raws[t] is not None]
    T = len(hs)  # (the hook below must hold neither list: their tensors hold it, a cycle gc can't see)

    def hook(grads):  # (holds no tensor of the graph: the graph would then hold itself)
        got, mine = dict(zip(watched, grads)), dict(zip(own, grads[len(watched) : len(watched) + len(own)]))
        zero = torch.zeros(shape, **like)
        dh = [zero if got.get(t) is None else got[t] for t in range(T)]
        for t, g in mine.items():
            if g is not None:
                dh[t] = torch.where(live[t], g, dh[t])
        probe.record(torch.stack(dh))

    tensors = [hs[t] for t in watched] + [raws[t] for t in own] + list(also)
    _hook_all(tensors, hook)


# (not traced by dynamo: after the graph break _watch raises under torch.compile, the probed loop runs eagerly and
# dynamo took this function as a frame of its own, where it can't trace threading.Lock)
@torch._disable_dynamo
def _hook_all(tensors, fn):
    """torch.autograd.graph.register_multi_grad_hook(tensors, fn, mode="all") without its reference cycle: fn gets
    the gradients of a backward pass that reaches any of the tensors (None where it misses one) once the pass is over
    (a callback the first hook queues). torch's hooks hold the tensors' grad_fns, which hold the hooks, a cycle
    through C++ that gc can't see: every probed run kept its graph for good, with backward or without. These hold
    no node of the graph."""
    n, passes, lock = len(tensors), {}, threading.Lock()

    def hook_of(i):
        def hook(grad):
            task = torch._C._current_graph_task_id()
            with lock:
                got = passes.get(task)
                if got is None:
                    got = passes[task] = [None] * n
                    Variable._execution_engine.queue_callback(lambda: fn(passes.pop(task)))
                got[i] = grad

        return hook

    for i, t in enumerate(tensors):
        t.register_hook(hook_of(i))


def higher_order_grads(inputs, outputs_fn, grads_out, needs=None):
    """Gradients that can be differentiated again, for `backward(create_graph=True)`.

    The hand-written BPTT of the `python` and `native` backends reads values cached by the forward pass,
    which carry no graph, so its gradients are right but constant to autograd: a second derivative through
    them would silently miss every term of d(cache)/d(input). Where a higher-order gradient is asked for,
    the backends call this instead: `outputs_fn(*inputs)` reruns the forward as a plain autograd loop on `inputs`
    (the Function's own saved inputs, still attached to the caller's graph), and autograd differentiates it
    with create_graph=True. Costs one more forward; first-order backward passes never come here.

    Inside torch.func.grad, vjp or jvp (a backward of a graph built outside them: `jvp(lambda v:
    torch.autograd.grad(out, x, v), ...)`) ordinary autograd records nothing, so the rerun is differentiated by
    torch.func.vjp instead (the rerun had no graph: every gradient came back None, "the differentiated Tensor
    appears to not have been used in the graph"). needs: the Function's needs_input_grad for `inputs` (there the
    inputs' requires_grad can't tell: xw rebuilt inside such a transform has none).

    inputs: tensors or None; returns one gradient (or None) per input."""
    if needs is not None and _no_recording():
        return _functional_grads(inputs, outputs_fn, grads_out, needs)
    with torch.enable_grad():
        # the rerun reads aliases of the inputs, at which autograd.grad stops: taken with respect to the inputs
        # themselves it ran on through their history wherever that reached another input (an initial state from
        # an earlier run of the same W_hh: that run's backward inside this one, its part of dW_hh counted twice)
        inputs = [t.view_as(t) if t is not None and t.requires_grad else t for t in inputs]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        outs = outputs_fn(*inputs)
        pairs = [(o, g) for o, g in zip(outs, grads_out) if g is not None and o.requires_grad]
        got = torch.autograd.grad(
            [o for o, _ in pairs], wanted, [g for _, g in pairs], create_graph=True, allow_unused=True
        ) if pairs and wanted else [None] * len(wanted)  # fmt: skip
    it = iter(got)
    return [next(it) if t is not None and t.requires_grad else None for t in inputs]


def _no_recording():
    """Whether a torch.func.grad/vjp/jacrev or jvp/jacfwd level is active: there ops on tensors from outside the
    transform record no graph for ordinary autograd, even under torch.enable_grad() (vmap alone records)."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    recording_off = (TransformType.Grad, TransformType.Jvp)
    return any(i.key() in recording_off for i in retrieve_all_functorch_interpreters())


def _functional_grads(inputs, outputs_fn, grads_out, needs):
    """higher_order_grads through torch.func.vjp (see there)."""
    idx = [i for i, (t, n) in enumerate(zip(inputs, needs)) if n and t is not None]
    if not idx:
        return [None] * len(inputs)

    def f(*wanted):
        args = list(inputs)
        for i, w in zip(idx, wanted):
            args[i] = w
        return tuple(outputs_fn(*args))

    outs, vjp_fn = torch.func.vjp(f, *(inputs[i] for i in idx))
    cotangents = tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outs, grads_out))
    got, out = vjp_fn(cotangents), [None] * len(inputs)
    for i, g in zip(idx, got):
        out[i] = g
    return out


def saved_input(ctx, xw):
    """The tensors a loop Function saves (save_for_backward, first) of its input xw for higher_order_grads: where
    xw carries `_rnnkit_rebuild` (set on Recurrent's projection: (f, tensors) with xw = f(*tensors), the layer
    input and the weights, kept alive anyway), those tensors, else xw itself. Through save_for_backward, never
    an attribute of ctx: a graph kept after its backward (a loss kept in a list) must not hold them."""
    ctx.rebuild, tensors = getattr(xw, "_rnnkit_rebuild", (None, (xw,)))
    ctx.n_in = len(tensors)
    return tuple(tensors)


def restored_input(ctx, saved):
    """xw for higher_order_grads from saved_input's tensors (as unpacked): the saved xw, or computed again
    (attached to the caller's graph, also where backward runs without grad mode: under batched gradients, see
    native._plain)."""
    if ctx.rebuild is None:
        return saved[0]
    with torch.enable_grad():
        return ctx.rebuild(*saved)
