"""Runs any cell over a sequence, forward and backward. Three backends give the same numbers:

- `autograd`: a plain loop through autograd (the reference);
- `python`:   hand-written BPTT, time loop in Python; any device and dtype;
- `native`:   the same BPTT with the time loop in C++ (built on first use); CPU float32/float64.

`run(...)` picks `native` when it is available and applies, else `python`. Tensors of a half type (float16,
bfloat16) run in float32 on every backend (`_in_float32`), outputs and gradients cast back to their dtypes.

Higher-order gradients (backward with create_graph=True) work on all three: `python` and `native`
then compute their gradients through a rerun of the forward as an autograd loop
(`reference.higher_order_grads`), since their hand-written BPTT reads caches that carry no graph.
"""

import contextlib
import functools
import operator
import warnings

import torch
from torch._ops import _len_torch_dispatch_stack_pre_dispatch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import _disable_current_modes, _len_torch_dispatch_stack

from rnnkit.cells._base import Cell, autocast_on, cell_class, make_fx_tracing, plain_ops_only, recording
from rnnkit.engine import compiled
from rnnkit.engine.python import PythonRecurrence
from rnnkit.engine.python import forward_only as python_forward_only
from rnnkit.engine.reference import autograd_loop, scan_loop
from rnnkit.errors import RnnkitError, count_error, user_stacklevel

BACKENDS = ("autograd", "python", "native")
HALF = (torch.float16, torch.bfloat16)  # run in float32 (_in_float32)
TRACE_ERROR = (
    "torch.jit.trace can't record rnnkit's recurrent loop (it runs outside the ops the tracer sees, so the "
    "trace would replay garbage; torch.jit is deprecated): use torch.export.export(model, (x,)) or "
    "torch.compile(model)"
)

ONNX_TRACE_ERROR = (
    "torch.onnx.export(..., dynamo=False) traces the model with torch.jit, which can't record rnnkit's recurrent "
    "loop (it runs outside the ops the tracer sees): export with torch.onnx.export(model, (x,), dynamo=True), "
    "which goes through torch.export"
)


def refuse_jit_trace():
    """torch.jit.trace records torch ops only: the native loop's outputs would become constants of the trace
    (the python loop's length T too), a program that silently computes something else. So it is refused; under
    torch.onnx.export's old exporter (dynamo=False), which traces so, the line names the ONNX exporter that works."""
    if torch.jit.is_tracing():
        raise RnnkitError(ONNX_TRACE_ERROR if torch.onnx.is_in_onnx_export() else TRACE_ERROR)


class GradProbe:
    """Observes dL/dh_t: after backward, `probe.dh` is (T, B, H) (H: h_t's width, proj_size for an lstm with one),
    the total gradient reaching h_t at every step: how gradients vanish or explode over time (deck 002). Row t is
    input position t in either direction (the reverse direction reaches h_t in the order T-1 .. 0); where a sequence
    has ended (t >= its length) the state passes through unchanged, and so row t holds the gradient it carries:
    dL/dh_T forward, dL/dh_0 in reverse. A step the pass doesn't reach records 0. One record per run and backward
    pass, also for a second-order pass (through a gradient taken with create_graph=True), which reaches h_t along
    two paths; several passes accumulate in `probe.history` (runs sharing the probe in one pass, truncated BPTT's
    chunks say, in the order backward reaches them: the last run first; `probe.history.clear()` drops them), `dh`
    being the latest record (of a lone run: its own; of chunks: the first chunk's). An unbatched sequence (T, D)
    records (T, 1, H). A pass records only where gradients flow: a run none of whose inputs or weights needs one (a
    frozen first layer of a stack fed data) records nothing, as `retain_grad` of such a tensor gets nothing. Under vmap and batched gradients (is_grads_batched,
    jacobian(vectorize=True)) it records nothing (with a warning): those gradients are not plain tensors.

    `keep`: the most records `history` holds, the oldest dropped first (`GradProbe(keep=1)`: one probe reused at
    every training step holds only the latest); None keeps them all, and says so once they pass 1 GiB."""

    WARN_BYTES = 2**30

    def __init__(self, keep: int | None = None):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise count_error("GradProbe(keep=...) (records kept)", keep, " (or None: all)")
        self.dh, self.history, self._pass, self.keep, self._warned = None, [], (None, {}), keep, False
        self._held = 0  # at least history's bytes: those last summed and each record's since

    def record(self, dh, call=None):
        """Add dh as this pass's record; `call` names the run it comes from: a second record of the same run in
        the same pass (the other path of a second-order pass) is added to the first, never one of another run
        sharing the probe (truncated BPTT chunks, a layer used twice in one graph)."""
        if _batched(dh):
            warn_batched()
            return
        dh, now = dh.detach(), torch._C._current_graph_task_id()
        if now == -1 or now != self._pass[0]:
            self._pass = (now, {})
        # the other path of the same pass (second order: see above) is added to this pass's record of the run
        # wherever it is: records of runs sharing the probe come interleaved (run 2, run 1, run 1, run 2), and adding
        # only to the record right before left partial ones
        ours = self._pass[1].get(call) if now != -1 and call is not None else None
        i = next((i for i, r in enumerate(self.history) if r is ours), None) if ours is not None else None
        # its record dropped by `keep` since (a newer run's came after it): its other path stays out too (appended,
        # it was a partial record kept in the newer one's place)
        if ours is not None and i is None:
            return
        if i is not None:
            dh = self.history[i] = self.history[i] + dh
        else:
            self.history.append(dh)
            self._bound()
        # dh the latest record: the one added to may be an older run's (python and native left dh the last chunk's)
        self._pass[1][call], self.dh = dh, self.history[-1]

    def _bound(self):
        """history within `keep`; without one, a word once it holds more than WARN_BYTES (a probe given to every
        training step keeps every step's dh: 100k steps of (100, 32, 512) float32 are 650 GB)."""
        if self.keep is not None:
            del self.history[: -self.keep]
        elif not self._warned:
            # summed every 16 records (the sum runs over all of them), and at once where the bytes summed last and
            # every record's since would pass the bound (history.clear() or del only hold less): every 16 alone said
            # it late, records of (1000, 64, 1024) float32 passing 1 GiB at the 5th and said at the 16th, 3.9 GiB
            # held; as many records as the latest, records of varying sizes late (3 of 300 bytes and one of 200
            # passing 1000 bytes said at the 16th)
            last = self.history[-1]
            self._held += last.nelement() * last.element_size()
            if len(self.history) % 16 and self._held <= self.WARN_BYTES:
                return
            held = self._held = sum(r.nelement() * r.element_size() for r in self.history)
            if held > self.WARN_BYTES:
                self._warned = True
                warnings.warn(
                    f"rnnkit GradProbe holds {len(self.history)} records of dL/dh_t ({held / 2**30:.1f} GiB) in "
                    "probe.history: give a fresh GradProbe() to each step, call probe.history.clear(), or make it "
                    "GradProbe(keep=1) to hold only the latest", RuntimeWarning, stacklevel=2)  # fmt: skip


def warn_batched():
    """GradProbe's word where it records nothing (see there)."""
    _warn_once("rnnkit GradProbe records nothing under vmap or batched gradients (is_grads_batched, "
               "jacobian(vectorize=True)); take the gradients one at a time to see dL/dh_t")  # fmt: skip


class _Call:
    """A probe as one run sees it: its records name the run (see GradProbe.record)."""

    def __init__(self, probe):
        self.probe = probe

    def record(self, dh):
        self.probe.record(dh, call=self)


def _batched(t) -> bool:
    """Whether t is a batched gradient (is_grads_batched) or we are inside vmap."""
    return torch._C._functorch.is_legacy_batchedtensor(t) or in_vmap()


def in_vmap() -> bool:
    """Whether we are inside torch.func.vmap."""
    # outside every torch.func transform, asked without _in_vmap: its decorator imports torch._dynamo on its
    # first call, 2-3 s at the first backward of a process on the python backend
    if not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active():
        return False
    return _in_vmap()


# (dynamo can't trace the question: a warning each time it was compiled as a frame). torch's own lazy form of
# torch.compiler.disable: that one imports torch._dynamo where it decorates, 3 s of every `import rnnkit`
@torch._disable_dynamo
def _in_vmap() -> bool:
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    vmap = torch._C._functorch.TransformType.Vmap
    return any(i.key() == vmap for i in retrieve_all_functorch_interpreters())


_warned = set()


def _warn_once(msg):
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=user_stacklevel())


def resolve_backend(backend, cell, xw, P=None, fits=True):
    """The backend that will actually run: `native` falls back to `python` (warning once) where it can't;
    inside torch.func transforms and forward-mode AD every backend runs as `autograd`, plain torch ops that
    those know (the hand-written BPTT is an autograd.Function without vmap or jvp rule). fits=False (see
    native_fits): sizes the native loop doesn't take, `python` quietly, whose checks say what is wrong."""
    if backend not in (None, *BACKENDS):
        raise RnnkitError(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or None for the fastest)"
        )
    if plain_ops_only():
        # not under torch.compile (which reads as a transform here): its unrolled loop for python is documented, and
        # warnings.warn is a graph break there, which failed torch.compile(layer, fullgraph=True)
        if backend in ("python", "native") and not torch.compiler.is_compiling():
            _warn_once(f"rnnkit {backend} backend inside a torch.func transform or forward-mode AD: using the "
                       "autograd backend")  # fmt: skip
        return "autograd"
    if backend in ("autograd", "python"):
        return backend
    if not fits:
        return "python"
    from rnnkit.engine import native

    reason = native.unsupported(cell, xw, P)
    if reason is None:
        return "native"
    if backend == "native" and reason != "quiet":
        if not native.build_failed(reason) or _said_build_failed(reason):
            _warn_once(f"rnnkit native backend unavailable ({reason}); using the python backend")
    elif backend is None and native.build_failed(reason):  # the default too: 2-3x slower deserves a word
        warn_build_failed(reason)
    return "python"


def _said_build_failed(reason):
    """True the first time a failed build (reason) is to be said, whichever of its two lines says it: a process
    whose layers took the default backend and asked for native was told of the one failure twice."""
    key = ("build failed", reason)  # (kept in _warned: clearing that, as the tests do, says it again)
    if key in _warned:
        return False
    _warned.add(key)
    return True


def warn_build_failed(reason):
    """The default backend's word, once, on an extension that failed to build (also from compiled.native_ready:
    dynamo drops a warnings.warn it traces, and a compiled model ran the python loop in silence)."""
    if _said_build_failed(reason):
        _warn_once(f"rnnkit native backend unavailable ({reason}); using the python backend, 2-3x slower on "
                   "small models (or set RNNKIT_NATIVE=0 to choose python quietly)")  # fmt: skip


def native_fits(cell, xw, state0, P, widths=None):
    """Whether the sizes fit what the native loop reads: rnnkit's own cells are checked by check_inputs; a cell of
    one's own (traced, native.traced_id) needs an xw of gates·H columns and states H wide, H = U's columns.
    widths: (xw's width, the states' widths) in place of xw and state0, for a caller that asks before it has made
    them (Recurrent's projection)."""
    from rnnkit.engine import native

    if cell in native.CELL_IDS:
        return True
    # no recurrent product (IndRNN's u ⊙ h_{t-1}): no size is amiss; a form native.unsupported says why it won't run
    if not cell.GEMMS:
        return True
    name = cell.GEMMS[0][0]
    i = cell.REC_PARAMS.index(name) if name in cell.REC_PARAMS else len(P)
    U = P[i] if i < len(P) else None  # (too few parameters: python's checks say so)
    if not isinstance(U, torch.Tensor) or U.dim() != 2:
        return False
    H = U.shape[1]
    width, states = widths if widths is not None else (xw.shape[-1], [s.shape[-1] for s in state0])
    return width == cell.gates * H and all(w == H for w in states)


def _no_autocast(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, **fold):
    """`run` under torch.autocast: autocast would run the step's GEMMs in bfloat16/float16 while the state
    and the pointwise math stay in float32 (a dtype clash inside the step), and a recurrence compounds the
    rounding of every step. So the loop runs with autocast off, in the dtype of its parameters (float32;
    float16 and bfloat16 ones in float32 too, _in_float32), and returns that dtype; the layers around it still run under autocast. Parameters of mixed dtypes (a bfloat16
    b_hh beside a float32 W_hh) run in the dtype they promote to, each cast to it (the loops failed inside on them)."""
    floats = [p.dtype for p in P if p is not None and p.is_floating_point()]
    dtype = functools.reduce(torch.promote_types, floats) if floats else xw.dtype

    def cast(t):
        return t if t is None or not t.is_floating_point() else t.to(dtype)

    with torch.autocast(xw.device.type, enabled=False):
        fold = {k: cast(v) if isinstance(v, torch.Tensor) else v for k, v in fold.items()}
        return run(cell, cast(xw), tuple(cast(s) for s in state0), tuple(cast(p) for p in P), cast(mask), reverse,
                   backend, probe, batch_first, check=False, **fold)  # fmt: skip


def _in_float32(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, **fold):
    """`run` of float16 or bfloat16 tensors: the loop (recurrent GEMMs, gate math, caches, BPTT) runs in float32 on
    every backend, as torch.nn.LSTM's oneDNN loop computes its gates, and the outputs and final state are cast back
    to their dtypes once; autograd casts each gradient back to its tensor's dtype (.float()'s backward). In bfloat16
    a 200-step lstm's outputs came 5.5e-3 off float64's (torch.nn.LSTM: 2.6e-3), and the loop's rounding grows with
    T. The caches are float32: twice a half loop's memory."""

    def wide(t):
        return t.float() if isinstance(t, torch.Tensor) and t.dtype in HALF else t

    fold = {k: wide(v) for k, v in fold.items()}
    hs, state = run(cell, wide(xw), tuple(wide(s) for s in state0), tuple(wide(p) for p in P), wide(mask), reverse,
                    backend, probe, batch_first, check=False, **fold)  # fmt: skip
    return hs.to(xw.dtype), tuple(s.to(s0.dtype) for s, s0 in zip(state, state0))


def _check_sizes(cell, xw, states, P, xtilde):
    """The widths a cell of these states has: xw's G·H, the state widths and every parameter's shape, read off
    the cell itself built on the meta device (no memory). The native loop trusts them: a W_hh or xw of
    another width, or an LSTM's c wider than h, read and wrote past its buffers. A cell built otherwise (one
    of the user's own, with other arguments) is left to its step functions. Under torch.compile (where building
    the cell is a graph break) from the sizes alone, a constant of the graph, where they are static: skipped there,
    an LSTM's c wider than h gave NaN and one narrower corrupted the heap ("malloc(): unaligned tcache chunk")."""
    X, widths = xw.shape[2], tuple(s.shape[1] for s in states)
    shapes = tuple(None if p is None else tuple(p.shape) for p in P)
    if torch.compiler.is_dynamo_compiling():
        # dynamo shows a symbolic size as an int, which it can't hand to _size_error (torch.compile(dynamic=True), or a
        # second width, failed "assume_constant_result argument conversion failed"): the widths are made numbers,
        # operator.index guarding each (a new width compiles again; T and B stay symbolic)
        X, widths = operator.index(X), tuple(operator.index(w) for w in widths)
        shapes = tuple(None if s is None else tuple(operator.index(d) for d in s) for s in shapes)
    elif torch.compiler.is_compiling() and not all(
        isinstance(d, int) for d in (X, *widths, *(d for s in shapes if s is not None for d in s))
    ):
        return  # (symbolic sizes, torch.export's: the check would fix them)
    error = _size_error(cell, X, widths, shapes, xtilde is not None)
    if error is not None:
        raise RnnkitError(error.replace("{xw}", str(tuple(xw.shape))))


def _size_error(cell, X, widths, shapes, split) -> str | None:
    """_check_sizes' line ({xw} for xw's shape), or None: from xw's columns X, the state widths and the parameters'
    shapes (split: MUT1's x̃ given apart)."""
    from rnnkit.cells import CELLS, LSTMP

    h, c = widths[0], widths[-1]
    if cell is LSTMP and not 0 < h < c:  # (h of 0 units skipped the checks below: xw was read as 4c wide)
        return (f"run(LSTMP): state (h, c) widths [{h}, {c}]: h, c's projection, must be narrower and at least 1 "
                "wide")  # fmt: skip
    if h == 0 or c == 0:  # no units: nothing to read, and xw must have no columns (the native loop returned
        if X != 0:  # dxw's columns unwritten, memory as it was, where the others fail)
            return f"run({cell.__name__}): xw must be (T, B, 0) for a state of 0 units, got {{xw}}"
        return None
    build = (lambda: cell(1, c, proj_size=h)) if cell is LSTMP else (lambda: cell(1, c))
    # built outside torch.func's transforms: under vmap its weight draws failed ("vmap: called random operation
    # while in randomness error mode"), where the loops themselves run; and outside the modes torch.export traces
    # with (fake tensors, the graph's proxies): leaky's check of its alpha (a CPU tensor of its own) was traced as
    # data-dependent there, and every export of run(leaky, ...) failed ("Could not guard on data-dependent expression")
    # (only where one is on: the context costs more than the question)
    traced = _len_torch_dispatch_stack() or _len_torch_dispatch_stack_pre_dispatch()
    untraced = _disable_current_modes() if traced else contextlib.nullcontext()
    try:
        with untraced, torch.device("meta"), torch._C._DisableFuncTorch():
            model = build()
    except Exception:  # noqa: BLE001  (a cell of the user's own with other arguments)
        if cell in CELLS.values():
            raise
        return None
    name, H = cell.__name__, model.hidden_size
    want, got = [model.output_size, model.hidden_size][: cell.num_states], list(widths)
    if want != got:
        what = "(h, c)" if cell.num_states == 2 else "h"
        return f"run({name}): state {what} widths {got} don't fit one cell; {want} would"
    want = model.gates * H - (H if split else 0)  # MUT1's x̃ = x given apart
    if X != want:
        return f"run({name}): xw must be (T, B, {want}) for H = {H} (the cell's {model.gates}·H), got {{xw}}"
    for param, p in zip(cell.REC_PARAMS, shapes):
        ours = getattr(model, param)
        if p is not None and param not in cell.EXTRAS and ours is not None and p != tuple(ours.shape):
            return (f"run({name}): P's {param} must be {tuple(ours.shape)} for H = {H}, got {p}; give P in "
                    "cell.REC_PARAMS order")  # fmt: skip
    return None


_size_error._dynamo_marked_constant = True  # (as compiled.native_ready: called once while dynamo traces)


def check_inputs(cell, xw, state0, P, mask, xtilde=None):
    """A one-line error for what `run` can't run: the loops would fail deep inside, read a mask (T, B) over
    the wrong axis, or (native) read a parameter's memory as another's. Returns the mask as (T, B, 1)."""
    name = cell.__name__
    if not isinstance(xw, torch.Tensor) or xw.dim() != 3:
        got = tuple(xw.shape) if isinstance(xw, torch.Tensor) else type(xw).__name__
        raise RnnkitError(f"run({name}): xw must be the time-major input projection (T, B, G·H), got {got}")
    if not xw.is_floating_point():  # (torch's "expected m1 and m2 to have the same dtype" from inside a loop)
        raise RnnkitError(f"run({name}): xw is {xw.dtype}; give floating-point tensors (e.g. xw.float())")
    T, B = xw.shape[:2]
    if T == 0:  # (every loop failed on it deep inside: "stack expects a non-empty TensorList")
        raise RnnkitError(
            f"run({name}): xw has no time steps: shape {tuple(xw.shape)} (T, B, G·H); run at least one"
        )
    # a bare tensor h passed these checks as (h,) but reached the loops as it was: a traceback from inside them
    if not isinstance(state0, tuple | list):
        got = f"one {type(state0).__name__}" + (
            f" {tuple(state0.shape)}" if isinstance(state0, torch.Tensor) else ""
        )
        raise RnnkitError(f"run({name}): state0 must be a tuple of {cell.num_states} tensor(s) (B, H), got {got}; "
                          "give (h,) for one state")  # fmt: skip
    states = tuple(state0)
    if len(states) != cell.num_states or not all(
        isinstance(s, torch.Tensor) and s.dim() == 2 for s in states
    ):
        raise RnnkitError(f"run({name}): state0 must be a tuple of {cell.num_states} tensor(s) (B, H)")
    if any(s.shape[0] not in (B, 1) for s in states):
        raise RnnkitError(f"run({name}): state0 {[tuple(s.shape) for s in states]} has another batch than xw "
                          f"{tuple(xw.shape)} (T, B, G·H)")  # fmt: skip
    if len(P) != len(cell.REC_PARAMS):
        raise RnnkitError(f"run({name}): P must hold {len(cell.REC_PARAMS)} tensors, {', '.join(cell.REC_PARAMS)} "
                          f"(cell.rec_params()), got {len(P)}")  # fmt: skip
    params, widths = dict(zip(cell.REC_PARAMS, P)), {s.shape[1] for s in states}
    # the shapes the native loop trusts of rnnkit's cells; a cell of one's own: its step functions say what they
    # take (an EXTRAS parameter need not be one per unit, a GEMM may read another vector than a state)
    if cell in compiled.native.CELL_IDS:
        for W_name, b_name in cell.GEMMS:
            W, b = params[W_name], params.get(b_name)
            if isinstance(W, torch.Tensor) and W.dim() == 2 and W.shape[1] not in widths:
                # (a matrix: the state may be what is wrong, an LSTMP's h0 of width H for proj_size, not W)
                shapes = [tuple(s.shape) for s in states]
                raise RnnkitError(f"run({name}): P's {W_name} {tuple(W.shape)} reads a state of width {W.shape[1]}, "
                                  f"and state0 is {shapes}: give a state of that width, or P in cell.REC_PARAMS "
                                  "order")  # fmt: skip
            if not isinstance(W, torch.Tensor) or W.dim() != 2:
                got = tuple(W.shape) if isinstance(W, torch.Tensor) else W
                raise RnnkitError(f"run({name}): P's {W_name} must be a matrix (N, K) with K a state width "
                                  f"{sorted(widths)}, got {got}; give P in cell.REC_PARAMS order")  # fmt: skip
            if b is not None and (not isinstance(b, torch.Tensor) or tuple(b.shape) != (W.shape[0],)):
                got = tuple(b.shape) if isinstance(b, torch.Tensor) else b
                raise RnnkitError(f"run({name}): P's {b_name} must be ({W.shape[0]},) for {W_name} {tuple(W.shape)}, "
                                  f"got {got}; give P in cell.REC_PARAMS order")  # fmt: skip
        for extra in cell.EXTRAS:
            e = params[extra]
            if not isinstance(e, torch.Tensor) or tuple(e.shape) != (states[0].shape[1],):
                got = tuple(e.shape) if isinstance(e, torch.Tensor) else e
                raise RnnkitError(
                    f"run({name}): P's {extra} must be ({states[0].shape[1]},), one per unit, got {got}"
                )
        _check_sizes(cell, xw, states, P, xtilde)
    tensors = [xw, *states, *(p for p in P if p is not None)]
    # (autocast lets the dtypes differ, the loop casts them, never the devices: the loops read one device's memory;
    # nor to whole numbers or complex ones, which the cast leaves: torch's 'mat1 and mat2 must have the same dtype'
    # from inside the python loop, and the native one took an integer state cast to float in silence)
    mixed = any(t.dtype != xw.dtype for t in tensors) and (
        not autocast_on(xw.device) or not all(t.is_floating_point() for t in tensors)
    )
    if mixed or any(t.device != xw.device for t in tensors):
        kinds = sorted({f"{t.dtype} on {t.device}" for t in tensors})
        raise RnnkitError(
            f"run({name}): xw, state0 and P must share one dtype and device, got {', '.join(kinds)}"
        )
    return _checked_mask(name, mask, T, B, xw.device)


def _check_probe(name, probe):
    """A one-line error for a probe that is no GradProbe: it failed only in backward, from inside the loop's
    backward or a hook ("GradProbe.record() missing 1 required positional argument", "'list' object has no
    attribute 'record'")."""
    if probe is None or isinstance(probe, GradProbe):
        return
    got = "the class GradProbe: give an instance, GradProbe()" if probe is GradProbe else type(probe).__name__
    raise RnnkitError(
        f"run({name}): probe must be an rnnkit.GradProbe (or None), one for the loop, got {got}"
    )


def _check_folded(cell, xw, states, xbias, raw_tail, xtilde):
    """A one-line error for a part of the projection handed to the native loop (see `run`) that it can't take:
    the loop of gru_cho and mut1-3 read xbias as b_xh (G·H,) whatever its size (past its end, a smaller one),
    and other cells ignored it, as they ignore raw_tail (MUT1's only): their outputs without it, in silence."""
    from rnnkit.engine import native

    name = cell.__name__
    if xbias is not None:
        if not native.loop_adds_input_bias(cell):
            raise RnnkitError(f"run({name}): xbias is the input bias b_xh that the loop of gru_cho and mut1-3 adds; "
                              f"{name}'s belongs in xw")  # fmt: skip
        width = xw.shape[2] + (states[0].shape[1] if xtilde is not None else 0)  # x̃'s block given apart
        if not isinstance(xbias, torch.Tensor) or tuple(xbias.shape) != (width,):
            got = tuple(xbias.shape) if isinstance(xbias, torch.Tensor) else type(xbias).__name__
            raise RnnkitError(f"run({name}): xbias must be ({width},), one per column of xw, got {got}")
        if xbias.device != xw.device or (xbias.dtype != xw.dtype and not autocast_on(xw.device)):
            raise RnnkitError(f"run({name}): xbias must be {xw.dtype} on {xw.device} as xw, got {xbias.dtype} on "
                              f"{xbias.device}")  # fmt: skip
    if raw_tail and cell is not native.CELLS["mut1"]:
        raise RnnkitError(f"run({name}): raw_tail is MUT1's (its x̃ block given before its tanh)")


def _checked_mask(name, mask, T, B, device):
    """The mask as (T, B, 1), or a one-line error: read over the wrong axis otherwise, and on another device than
    xw's a torch error from inside the python loop, or (native) its memory read as the CPU's."""
    if mask is None:
        return None
    # (each size compared by itself: dynamo, under torch.compile(dynamic=True) with T = B = H, found (3, 3, 1) not in
    # ((T, B), (T, B, 1)) once _check_sizes had made H, and with it T and B, a number, and took the raise)
    fits = (
        isinstance(mask, torch.Tensor) and mask.dim() in (2, 3) and mask.shape[0] == T and mask.shape[1] == B
    )
    if not (fits and (mask.dim() == 2 or mask.shape[2] == 1)):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise RnnkitError(
            f"run({name}): mask must be (T, B, 1) (or (T, B)) = ({T}, {B}, 1) of 0/1, got {got}"
        )
    if mask.device != device:
        raise RnnkitError(
            f"run({name}): mask is on {mask.device} but xw is on {device}; move it (mask.to(xw.device))"
        )
    _check_mask_values(name, mask)
    return mask.reshape(T, B, 1)


def _check_mask_values(name, mask):
    """A one-line error for a mask holding other values than 0 and 1, which every loop took as a step in silence
    (h_t = m·step + (1 - m)·h_{t-1}: 0.5, 2, -1 or NaN). Read on the CPU in eager mode only: elsewhere the read is a
    device sync, and a graph being compiled, exported or traced by make_fx (a fake tensor) holds no values."""
    if mask.device.type != "cpu" or torch.compiler.is_compiling() or make_fx_tracing():
        return
    f, at = torch._C._functorch, None
    while f.is_functorch_wrapped_tensor(
        mask
    ):  # (under vmap: every sample's values at once, no (t, b) to name)
        mask, at = f.get_unwrapped(mask), ""
    if is_fake(mask):
        return
    bad = (mask != 0) & (mask != 1)  # (NaN too)
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
        at = f" at (t, b) = {where[:2]}" if at is None else ""
        raise RnnkitError(f"run({name}): mask must hold only 0 and 1 (1 a step of the sequence, 0 padding); got "
                          f"{mask[where].item()}{at}; build it from lengths: (torch.arange(T)[:, None] < "
                          "lengths).to(xw.dtype)")  # fmt: skip


def exporting_any_length(xw):
    """Whether torch.export (non-strict, its default) traces this with the time dimension (xw's first) dynamic: T is
    then a SymInt. (Strict export's dynamo shows every size as an int, and torch warns from inside a scan it traces:
    there the Python loop stays, for a static T; a static T non-strict too, plain ops any runtime knows.)"""
    return torch.compiler.is_exporting() and not isinstance(xw.shape[0], int)


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
    check=True,
    resolved=None,
    inner=False,
):
    """Run `cell` (a Cell class or instance) over xw.

    Shapes: xw (T, B, G·H) time-major input projection; state0 tuple of (B, H); P the recurrent
    parameters in `cell.REC_PARAMS` order; mask (T, B, 1) (or (T, B)) of 0/1 or None. These are checked
    (`check_inputs`; check=False skips it for callers that build them right, as Recurrent does).
    xw at masked steps must be finite (Recurrent zeroes them): 0·NaN is NaN, which reaches the gradients.
    Returns hs (T, B, H), or with batch_first (B, T, H) contiguous (the native backend writes it so, the
    others copy), and the final state tuple.
    Native backend only (Recurrent's projection, see `native.loop_adds_input_bias`): xbias, the input bias
    b_xh that xw leaves out and the loop adds; raw_tail, MUT1's x̃ block given before its tanh; xtilde (T, B, H),
    with raw_tail, that block when it is the layer's input itself (D = H; xw then (T, B, 2H)).
    resolved: "native" (or "python") where the caller has just had resolve_backend answer so for this cell and an
    input of xw's kind (Recurrent's projection, which asks it first), not asked again. inner: hs feeds only the next layer (see
    native.NativeRecurrence), which may then keep it once with the loop's states.
    """
    refuse_jit_trace()
    # a cell with torch.nn.utils.parametrizations is an instance of a class torch made for it (ParametrizedLSTM): the
    # cell it was (its parameters are computed, P holds them), which the native loop runs as any other
    if check and not (isinstance(cell, Cell) or isinstance(cell, type) and issubclass(cell, Cell)):
        named = f" (rnnkit.CELLS[{cell!r}] for that name)" if isinstance(cell, str) else ""
        raise RnnkitError(f"run: cell must be a Cell class or instance{named}, got {type(cell).__name__}")
    cell = cell_class(cell)
    if check:
        mask = check_inputs(cell, xw, state0, P, mask, xtilde)
        _check_probe(cell.__name__, probe)
        _check_folded(cell, xw, state0, xbias, raw_tail, xtilde)
        # a copy, which the loops keep for backward: the caller's own mask changed in place in between (refilled
        # for the next batch) would change the gradient (Recurrent, check=False, makes a new one every call)
        mask = None if mask is None else mask.clone()
    if autocast_on(xw.device):  # the loop runs in its parameters' dtype, see _no_autocast
        return _no_autocast(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, xbias=xbias,
                            raw_tail=raw_tail, xtilde=xtilde, inner=inner)  # fmt: skip
    if xw.dtype in HALF:  # the loop runs in float32, see _in_float32
        return _in_float32(run, cell, xw, state0, P, mask, reverse, backend, probe, batch_first, xbias=xbias,
                           raw_tail=raw_tail, xtilde=xtilde, inner=inner)  # fmt: skip
    # a cell of one's own given sizes its trace doesn't take: python's checks say what is wrong (asked before tracing
    # it: the trace's sample step, at H = U's columns, failed first with torch's error on shapes the user never gave)
    fits = native_fits(cell, xw, state0, P)
    if xbias is None and not raw_tail and xtilde is None:
        cid = compiled.wanted(cell, xw, backend, probe, P, fits)
        if cid is not None:  # torch.compile: one operator
            return compiled.run(cell, xw, state0, P, mask, reverse, batch_first, cid)
    if exporting_any_length(xw) and xbias is None and not raw_tail:
        # torch.export with a dynamic T: one scan (a loop of T Python steps fixes T); a GradProbe records nothing
        # in an exported program (Recurrent says so and passes none)
        hs, state = scan_loop(cell, xw, state0, P, mask, reverse)
        return (hs.transpose(0, 1).contiguous() if batch_first else hs), state
    probe = None if probe is None else _Call(probe)  # (this run's records: see GradProbe.record)
    if resolved == "python":
        chosen = "python"
    else:
        chosen = (
            "native" if resolved == "native" and fits else resolve_backend(backend, cell, xw, P, fits=fits)
        )
    if chosen == "native":
        from rnnkit.engine.native import NativeRecurrence, forward_only

        P = (*P, xbias) if xbias is not None else tuple(P)
        tensors = (xw, *state0, *P)
        grad = any(t is not None and t.requires_grad for t in (*tensors, xtilde))
        if not (recording() and grad):  # (torch.inference_mode() under enable_grad records nothing)
            return forward_only(cell, mask, reverse, batch_first, raw_tail, xw, xtilde, state0, P)
        hs, *state = NativeRecurrence.apply(
            cell, mask, reverse, probe, batch_first, raw_tail, inner, len(state0), xw, xtilde, *tensors[1:]
        )
        return hs, tuple(state)
    if xbias is not None or raw_tail or xtilde is not None:
        raise ValueError(f"xbias, raw_tail and xtilde are for the native backend, not {chosen}")
    if chosen == "autograd":
        hs, state = autograd_loop(cell, xw, state0, P, mask, reverse, probe)
    else:  # a state0 of batch 1 is broadcast (as the other backends do); expand's backward sums its gradient
        state0 = tuple(s.expand(xw.shape[1], -1) for s in state0)
        if recording() and any(t is not None and t.requires_grad for t in (xw, *state0, *P)):
            hs, *state = PythonRecurrence.apply(cell, mask, reverse, probe, len(state0), xw, *state0, *P)
        else:
            hs, state = python_forward_only(cell, mask, reverse, xw, state0, P)
    return (hs.transpose(0, 1).contiguous() if batch_first else hs), tuple(state)  # as native writes it
