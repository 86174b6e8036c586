"""Runs any cell over a sequence, forward and backward. Three backends give the same numbers:

- `autograd`: a plain loop through autograd (the reference);
- `python`:   hand-written BPTT, time loop in Python; any device and dtype;
- `native`:   the same BPTT with the time loop in C++ (built on first use); CPU float32/float64.

`run(...)` picks `native` when it is available and applies, else `python`.

Higher-order gradients (backward with create_graph=True) work on all three: `python` and `native`
then compute their gradients through a rerun of the forward as an autograd loop
(`reference.higher_order_grads`), since their hand-written BPTT reads caches that carry no graph.
"""

import warnings

import torch

from rnnkit.cells._base import plain_ops_only
from rnnkit.engine.python import PythonRecurrence
from rnnkit.engine.reference import autograd_loop
from rnnkit.errors import RnnkitError

BACKENDS = ("autograd", "python", "native")
TRACE_ERROR = (
    "torch.jit.trace can't record rnnkit's recurrent loop (it runs outside the ops the tracer sees, so the "
    "trace would replay garbage; torch.jit is deprecated): use torch.export.export(model, (x,)) or "
    "torch.compile(model)"
)


def refuse_jit_trace():
    """torch.jit.trace records torch ops only: the native loop's outputs would become constants of the trace
    (the python loop's length T too), a program that silently computes something else. So it is refused."""
    if torch.jit.is_tracing():
        raise RnnkitError(TRACE_ERROR)


class GradProbe:
    """Observes dL/dh_t: after backward, `probe.dh` is (T, B, H), the total gradient reaching h_t
    at every step (time-major, as the engine runs). The gradient-flow diagnostics read it.
    Several backward passes accumulate in `probe.history`."""

    def __init__(self):
        self.dh, self.history = None, []

    def record(self, dh):
        self.dh = dh.detach()
        self.history.append(self.dh)


_warned = set()


def _warn_once(msg):
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def resolve_backend(backend, cell, xw):
    """The backend that will actually run: `native` falls back to `python` (warning once) where it can't;
    inside torch.func transforms and forward-mode AD every backend runs as `autograd`, plain torch ops that
    those know (the hand-written BPTT is an autograd.Function without vmap or jvp rule)."""
    if backend not in (None, *BACKENDS):
        raise RnnkitError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or None for the fastest)"
        )
    if plain_ops_only():
        if backend in ("python", "native"):
            _warn_once(f"rnnkit {backend} backend inside a torch.func transform or forward-mode AD: using the "
                       "autograd backend")  # fmt: skip
        return "autograd"
    if backend in ("autograd", "python"):
        return backend
    from rnnkit.engine import native

    reason = native.unsupported(cell, xw)
    if reason is None:
        return "native"
    if backend == "native" and reason != "quiet":
        _warn_once(f"rnnkit native backend unavailable ({reason}); using the python backend")
    elif backend is None and native.build_failed(reason):  # the default too: 2-3x slower deserves a word
        _warn_once(f"rnnkit native backend unavailable ({reason}); using the python backend, 2-3x slower on "
                   "small models. Install a C++ compiler (and ninja), or set RNNKIT_NATIVE=0 to choose python quietly")  # fmt: skip
    return "python"


def _no_autocast(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, **fold):
    """`run` under torch.autocast: autocast would run the step's GEMMs in bfloat16/float16 while the state
    and the pointwise math stay in float32 (a dtype clash inside the step), and a recurrence compounds the
    rounding of every step. So the loop runs with autocast off, in the dtype of its parameters (float32),
    and returns that dtype; the layers around it still run under autocast."""
    dtype = next((p.dtype for p in P if p is not None), xw.dtype)

    def cast(t):
        return t if t is None or not t.is_floating_point() else t.to(dtype)

    with torch.autocast(xw.device.type, enabled=False):
        fold = {k: cast(v) if isinstance(v, torch.Tensor) else v for k, v in fold.items()}
        return run(cell, cast(xw), tuple(cast(s) for s in state0), P, cast(mask), reverse, backend, probe,
                   batch_first, **fold)  # fmt: skip


def run(
    cell,
    xw,
    state0,
    P,
    mask=None,
    reverse=False,
    backend=None,
    probe=None,
    batch_first=False,
    *,
    xbias=None,
    raw_tail=False,
    xtilde=None,
):
    """Run `cell` (a Cell class or instance) over xw.

    Shapes: xw (T, B, G·H) time-major input projection; state0 tuple of (B, H); P the recurrent
    parameters in `cell.REC_PARAMS` order; mask (T, B, 1) of 0/1 or None.
    Returns hs (T, B, H), or (B, T, H) with batch_first (the native backend writes it so; the others
    return a transposed view), and the final state tuple.
    Native backend only (Recurrent's projection, see `native.loop_adds_input_bias`): xbias, the input bias
    b_xh that xw leaves out and the loop adds; raw_tail, MUT1's x̃ block given before its tanh; xtilde (T, B, H),
    with raw_tail, that block when it is the layer's input itself (D = H; xw then (T, B, 2H)).
    """
    refuse_jit_trace()
    cell = cell if isinstance(cell, type) else type(cell)
    if torch.is_autocast_enabled(xw.device.type):  # the loop runs in its parameters' dtype, see _no_autocast
        return _no_autocast(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, xbias=xbias,
                            raw_tail=raw_tail, xtilde=xtilde)  # fmt: skip
    chosen = resolve_backend(backend, cell, xw)
    if chosen == "native":
        from rnnkit.engine.native import NativeRecurrence, forward_only

        P = (*P, xbias) if xbias is not None else tuple(P)
        tensors = (xw, *state0, *P)
        grad = any(t is not None and t.requires_grad for t in (*tensors, xtilde))
        if not (torch.is_grad_enabled() and grad):
            return forward_only(cell, mask, reverse, batch_first, raw_tail, xw, xtilde, state0, P)
        hs, *state = NativeRecurrence.apply(
            cell, mask, reverse, probe, batch_first, raw_tail, len(state0), xw, xtilde, *tensors[1:]
        )
        return hs, tuple(state)
    if xbias is not None or raw_tail or xtilde is not None:
        raise ValueError(f"xbias, raw_tail and xtilde are for the native backend, not {chosen}")
    if chosen == "autograd":
        hs, state = autograd_loop(cell, xw, state0, P, mask, reverse, probe)
    else:
        hs, *state = PythonRecurrence.apply(cell, mask, reverse, probe, len(state0), xw, *state0, *P)
    return (hs.transpose(0, 1) if batch_first else hs), tuple(state)
