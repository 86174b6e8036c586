"""The `native` backend: the same BPTT as `python`, with the time loop in C++ (rnnkit/engine/csrc).

Per step it runs the recurrent GEMM(s) into preallocated buffers (the BLAS inside libtorch) and ONE
fused hand-written loop for the pointwise math; after the loop, the weight gradients are one GEMM
per recurrent matrix, as in the python backend:

    forward:   for t in order:             state_t = cell(xw[t], state_{t-1})            (C++)
    backward:  for t in reversed(order):   dh = dstate_h + m_t ⊙ dhs[t];  step backward   (C++)
               dU_k = Σ_t dpre_k,tᵀ u_k,t                                                   (one GEMM)

The extension is compiled on first use with torch.utils.cpp_extension (ninja) and cached in torch's
extensions directory ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), so later runs only
load it. If it cannot be built or loaded, `unsupported()` says why and the engine uses `python`, warning once.
Set RNNKIT_NATIVE=0 to switch it off (these settings are read once, at the engine's first use in a process:
set later, they are not seen). RNNKIT_GEMM picks how the float32 GEMMs run: `auto` (default: the
first GEMM of each shape times MKL's sgemm (also on the transposed problem), oneDNN's matmul and, for the
per-step weights, MKL's packed GEMM, and keeps the fastest, since which wins depends on the CPU), or `blas`,
`dnnl`, `packed`, `own`. torch runs oneDNN's float32 matmul only on CPUs with AVX-512 (or AVX-NE-CONVERT);
elsewhere it is not offered and `dnnl` runs as `blas`.
On CPUs with AVX-512 the per-step GEMMs of a thread's own rows or units also have rnnkit's own kernel
(csrc/kernel.h), which `auto` takes per shape where a first timing finds it 5% faster than MKL's packed GEMM
(the narrow steps of small cells) and `own` forces (elsewhere `own` runs as `packed` on a thread's own rows
or units and as `blas` on the whole batch's step; `dnnl` too runs MKL's packed GEMM on a thread's own rows or units).
Threads split the work of the time loop in one of two ways: when the recurrent weights fit in a core's L2
cache, each of torch's threads runs the whole loop on its own rows of the batch with its own packed copy of
the weights (no barrier at all); else, from 8 steps on, the hidden units are split, each thread keeping its
slice of the weights for the whole loop (csrc/split.h; gated cells from 256 units; RNNKIT_SPLIT=0 turns that
off and lets the BLAS thread each step's GEMM instead). Past L2 which of the two wins depends on the cache
below it (rows on an AMD Zen 4 with 32 MB of L3, units on a Sapphire Rapids): the first forward of a
(cell, B up to a power of 2, H, threads) times both, four loops, and keeps the faster with the GEMM choices
(csrc/engine.cpp, split_key). RNNKIT_ROW_THREADS=N splits the rows whatever
the weights' size, over at most N threads (and no more than torch's threads, nor one per 4 rows; 1: never;
default auto). From 8 steps on a call prepares its per-step weights anew (a copy, a packed form: the
weights may have changed since the last call), at about the cost of writing them out once. At a small batch that
cost outweighed what it saved until a few dozen steps (batch-1 inference of 8-30 steps with MBs of recurrent
weights ran at 0.2-0.8x torch.nn), so past 1 MB of recurrent weights a call of 8-63 steps at a batch of up to 4
times both ways once per (cell, B up to a power of 2, H, threads, steps' octave), the forward and the backward each
their own, and keeps the faster with the GEMM choices (csrc/engine.cpp, prepare_key; bench/RESULTS.md's short
calls; AMD EPYC, 2 threads, B1 no_grad: a 1x1024 tanh RNN at 8 steps 0.59 ms, torch.nn 0.70 ms; a 1x1000 GRU 1.2
ms, torch.nn 2.1 ms). The big buffers (states, caches, outputs, gradients, and the
layer's input projection, `project`) are recycled between calls (csrc/pool.h) instead of faulting fresh
pages in every step; `release_memory()` hands the idle ones back.

The GEMM options give the same numbers only up to float rounding, and a timing can pick either of two that run
about as fast, so a choice timed afresh in every process made the same command with the same seed give other
bits now and then, and `--resume` other weights than the uninterrupted run. The choices are therefore kept
in a file beside the build, one per CPU model (its family and model number, not only the
name a VM shows; RNNKIT_GEMM_PLANS names another file; empty (or blank) or /dev/null: keep none, time in every process): a process takes the choices that processes before it timed. Processes started together
before the file holds a shape's choice (a DDP job's ranks, say) time their own; under
torch.use_deterministic_algorithms(True) nothing is timed and every process makes the same fixed choices.
Delete the file to time them again (after a BLAS upgrade, say).

A cell of one's own runs here too where its step and step_backward trace into per-unit kernels (traced.py:
make_fx, then C++ emitted and compiled in a fraction of a second, cached); `traced_id` registers them with the
loop once per class, parameter shapes and dtype (csrc/cells_traced.h), and `unsupported` gives the reason for one
that doesn't trace, which the python loop then runs.

The loops run without the GIL, as torch's ops do: other Python threads go on meanwhile.
"""

import atexit
import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import pathlib
import platform
import shutil
import sys
import threading
import time
import warnings
import weakref

import torch
from torch.autograd import forward_ad

from rnnkit._io import write_text
from rnnkit._native_build import (
    _folder,
    build,
    build_tag,
    cpu_tag,
    flocked,
    switch,
    switched_off,
    vector_flags,
)
from rnnkit.cells import CELLS, LSTMP
from rnnkit.cells._base import (
    affine_input,
    autocast_on,
    bias_grad,
    cell_class,
    make_fx_tracing,
    recording,
    tanh_of_tail,
)
from rnnkit.engine.reference import autograd_loop, higher_order_grads, restored_input, saved_input
from rnnkit.errors import RnnkitError, user_stacklevel

CELL_IDS = {CELLS[name]: i for i, name in enumerate(
    ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_cho", "mut1", "mut2", "mut3", "leaky"))} | {LSTMP: 9}  # fmt: skip
CSRC = pathlib.Path(__file__).with_name("csrc")
_ext, _reason = None, None
_load_lock = threading.Lock()


def _sources_hash(flags: list[str]) -> str:
    """The build folder's hash (see build_tag) of the sources: *.cpp, *.h and *.c only, not an editor's swap
    file (a full rebuild each time one came and went) nor a folder (which failed every forward)."""
    return build_tag(
        flags, sorted(f for f in CSRC.iterdir() if f.suffix in (".cpp", ".h", ".c") and f.is_file())
    )


def load():
    """The compiled extension (built once, then cached), or None; the reason is in `_reason`."""
    if _ext is not None or _reason is not None:
        return _ext
    with _load_lock:  # threads calling first at once: one loads it (and applies the settings), once
        return _load()


def _load():
    global _ext, _reason, _kept
    if _ext is not None or _reason is not None:
        return _ext
    if off := switched_off():  # before anything reads the sources, or the settings only the engine reads
        _ext, _reason = None, off
        return None
    given = os.environ.get("RNNKIT_GEMM", "auto")
    # any case, and empty for auto, as the other RNNKIT_ switches take theirs
    mode = given.strip().lower() or "auto"
    if mode not in ("auto", "blas", "dnnl", "packed", "own"):
        raise RnnkitError(f"RNNKIT_GEMM={given!r} is not a GEMM library; set auto, blas, dnnl, packed or own")
    rows, split = _row_threads(), switch("RNNKIT_SPLIT")  # (a mistake is told before a minute's build)
    from torch.utils import cpp_extension

    name, flags = vector_flags(
        "rnnkit_native", ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
    )
    try:
        name = f"{name}_{_sources_hash(flags)}"
    except OSError as e:
        _ext, _reason = None, f"could not read the native engine's sources in {CSRC}: {type(e).__name__}: {e}"
        return None
    sources, include = [str(CSRC / "engine.cpp")], [str(CSRC)]
    ext, reason = build(
        "the native engine",
        name,
        lambda: cpp_extension.load(
            name,
            sources,
            extra_cflags=[*flags, "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            extra_include_paths=include,
        ),
    )
    if ext is not None:  # set up before other threads see it (load's unlocked check)
        ext.set_row_threads(rows)
        ext.set_gemm(mode)
        ext.set_split(int(split))
        ext.add_gemm_plans(_read_plans(plan_file(ext)))
        _kept = ext.gemm_plan_count()
    _ext, _reason = ext, reason
    return _ext


MAX_ROW_THREADS = 4096


def _row_threads() -> int:
    """RNNKIT_ROW_THREADS: 0 for auto, else N. Only ASCII digits: str.isdigit took '²' (then int() failed with a
    traceback), and 20 digits overflowed the extension's int64 (a TypeError from pybind)."""
    value = os.environ.get("RNNKIT_ROW_THREADS", "auto")
    rows = value.strip()
    if rows.lower() in ("auto", ""):  # (empty: unset, as RNNKIT_SPLIT= is)
        return 0
    if rows.isascii() and rows.isdigit() and 1 <= int(rows) <= MAX_ROW_THREADS:
        return int(rows)
    raise RnnkitError(f"RNNKIT_ROW_THREADS={value!r} is not a thread count; set auto or a whole number from 1 "
                      f"to {MAX_ROW_THREADS}")  # fmt: skip


_kept, _kept_lock = 0, threading.Lock()  # how many choices this process knew when it last wrote the file
_written_at, _at_exit = -math.inf, None  # keep_plans's last run (time.monotonic); the pid whose exit runs it
PLAN_WRITE_EVERY = 1.0  # seconds: the loops write new choices at most this often (and at exit)


def _new_locks():
    """A child forked while another thread held a lock (inside load(), say) inherits it held, by a thread it
    doesn't have: its first forward waited forever (traced_id's, tracing a cell of one's own, too). The child starts
    with fresh ones."""
    global _load_lock, _kept_lock, _traced_lock
    _load_lock, _kept_lock, _traced_lock = threading.Lock(), threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks)


# what tells CPUs apart for the GEMM choices: the model name alone ("AMD EPYC" in a VM) was the key, and a
# Zen 4 and a Zen 5 (twice the GEMM rate, other choices) shared one file through a shared build cache
PLAN_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "CPU implementer", "CPU part")


def plan_file(ext=None) -> pathlib.Path | None:
    """The file of GEMM choices of this build on this CPU model (see the module's docstring), or None."""
    given = os.environ.get("RNNKIT_GEMM_PLANS")
    if given is not None:  # blank as empty: none (' ' was a file of that name in every working directory)
        return _given_plan_file(given) if given.strip() else None
    tag = hashlib.sha256(f"{cpu_tag(*PLAN_CPU_FIELDS)} {platform.machine()}".encode()).hexdigest()[:10]
    return pathlib.Path((ext or _ext).__file__).with_name(f"gemm_plans_{tag}.json")


def _given_plan_file(given: str) -> pathlib.Path | None:
    """RNNKIT_GEMM_PLANS's file, or None (with a warning, once) where it can't be one: a folder, or a file in a
    folder that isn't there, was ignored in silence (and a folder got <folder>.lock made beside it). /dev/null: none.
    A name that can't even be looked at (too long, in a folder one may not search, a ~user that isn't one) raised
    from every forward, OSError or RuntimeError, a traceback through the layer."""
    try:
        return _plan_path(given, pathlib.Path(given).expanduser())
    except (OSError, RuntimeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).rstrip(".")
        _warn_plans(f"RNNKIT_GEMM_PLANS={given!r} can't be looked up ({why}); name a file you can write")
        return None


def _plan_path(given: str, path: pathlib.Path) -> pathlib.Path | None:
    """_given_plan_file's checks of the file it names."""
    if path.is_dir():
        _warn_plans(
            f"RNNKIT_GEMM_PLANS={given!r} is a folder; name a file (such as {path / 'gemm_plans.json'})"
        )
        return None
    if path.exists() and not path.is_file():  # /dev/null, a FIFO: the write renamed a file over it (as root)
        if path.samefile(os.devnull):  # for none, as an empty value says
            return None
        _warn_plans(f"RNNKIT_GEMM_PLANS={given!r} is not a regular file; name one (such as gemm_plans.json)")
        return None
    if not path.parent.is_dir():
        _warn_plans(f"RNNKIT_GEMM_PLANS={given!r} is not in a folder ({path.parent} is missing or a file); create "
                    "the folder or name a file in another")  # fmt: skip
        return None
    return path


_plan_warnings = set()


def _warn_plans(problem: str) -> None:
    """Warn once per process that the GEMM choices can't be kept: they are timed again in every process."""
    if problem not in _plan_warnings:
        _plan_warnings.add(problem)
        warnings.warn(f"rnnkit: {problem}, or set it empty to keep none; meanwhile the GEMM choices are timed "
                      "again in every process", RuntimeWarning, stacklevel=user_stacklevel())  # fmt: skip


def _read_plans(path) -> list:
    """The kept choices, [(key, option), ...]: a key is 10 integers within int64, an option one of 0..4. None from
    a file that is missing or damaged (they are timed), and an entry that isn't one is left out (one bad entry
    discarded the whole file; 100000 nested '[' raised RecursionError from every forward)."""
    try:
        plans = json.loads(path.read_text(encoding="utf-8")) if path is not None else []
    except (OSError, ValueError, RecursionError):
        return []
    good = []
    for entry in plans if isinstance(plans, list) else []:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)):
            continue
        key, option = entry
        numbers = [*key, option]
        if all(type(v) is int for v in numbers) and len(key) == 10 and all(abs(v) < 2**62 for v in key):
            if 0 <= option <= 4:
                good.append((key, option))
    return good


def keep_plans_soon() -> None:
    """keep_plans, from the loops: at most once a PLAN_WRITE_EVERY seconds, the rest at exit. Shapes that vary call
    after call (lengths of every batch) time a new choice on many calls, and the file, rewritten whole each time,
    took more than half of 600 calls' time (5.3 s of 9.3, an lstm 16→32 of random B and T)."""
    global _at_exit
    if _ext.gemm_plan_count() == _kept:  # nothing new (every call but a first of a shape)
        return
    if time.monotonic() - _written_at >= PLAN_WRITE_EVERY:
        keep_plans()
    elif _at_exit != os.getpid():  # once a process (a forked child's own: see below)
        _at_exit = os.getpid()
        atexit.register(keep_plans)
        # a multiprocessing worker (fork, forkserver: a DataLoader's, a Pool's) ends in os._exit, past atexit, and
        # the choices of its last second were lost; its own exit runs multiprocessing's finalizers
        mp = sys.modules.get("multiprocessing")
        if mp is not None and mp.parent_process() is not None:
            from multiprocessing import util

            util.Finalize(None, keep_plans, exitpriority=0)


def keep_plans() -> None:
    """Add the choices timed since the last call to the file (merged with what other processes added)."""
    global _kept, _written_at
    if _ext.gemm_plan_count() == _kept:  # nothing new (every call but a first of a shape): no lock taken
        return
    _written_at = time.monotonic()
    with _kept_lock:
        n = _ext.gemm_plan_count()
        if n == _kept or (path := plan_file()) is None:
            return
        _kept = n
        path = pathlib.Path(os.path.realpath(path))  # through a link, its file (the rename replaced the link)
        try:
            # a file the user named and made read-only stays as it is: the rename below replaced it all the same
            # (the one beside the build is rewritten as before: another user's, in a cache they share)
            if os.environ.get("RNNKIT_GEMM_PLANS") and path.exists() and not os.access(path, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            lock = path.with_name(path.name + ".lock")
            # a folder in place of the lock (or of the file beside the build: RNNKIT_GEMM_PLANS's is warned of), mkdir
            # or a bad copy of the cache: every write failed on it, the choices timed again in every process
            for folder in (lock, *([] if os.environ.get("RNNKIT_GEMM_PLANS") else [path])):
                if _folder(str(folder)):
                    print(f"rnnkit: removing the folder {folder}, in the place of a file of the GEMM choices",
                          file=sys.stderr)  # fmt: skip
                    shutil.rmtree(folder)
            with flocked(lock):  # processes adding at once lose nothing
                # a temporary file of this one is a write cut short (a process killed in it): every writer holds
                # this lock, so none is in progress; they piled up beside the build, one a kill
                for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
                    stale.unlink(missing_ok=True)
                kept = {tuple(key): option for key, option in _read_plans(path)}
                for key, option in _ext.gemm_plans():
                    kept.setdefault(tuple(key), option)  # another process's choice stands: later ones read it
                write_text(path, json.dumps([[list(k), v] for k, v in sorted(kept.items())]) + "\n")
        except OSError as e:
            # a read-only cache beside the build: the choices are timed again in every process
            if given := os.environ.get("RNNKIT_GEMM_PLANS"):  # a file the user named: say so
                _warn_plans(f"RNNKIT_GEMM_PLANS={given!r} can't be written ({e.strerror or e}); name a file you "
                            "can write")  # fmt: skip


def release_memory() -> int:
    """Hand every idle recycled buffer back to the system (as torch.cuda.empty_cache does for its cache); returns
    the bytes released. The pool keeps idle at most 1.25x the most memory the loops used at once, that bound taken
    between 64 MB and 1 GB (csrc/pool.h), so this is for a process that ran a big model and goes on with other
    work."""
    return 0 if _ext is None else _ext.release_memory()  # nothing to release before the extension has run


def _plain(*tensors):
    """Whether the gradients handed to a backward are plain tensors whose memory the C++ code can read: not
    the batched ones of `torch.autograd.grad(..., is_grads_batched=True)` or `jacobian(vectorize=True)`, nor
    those of torch.func.jvp or grad (a backward of a graph built outside them), nor dual tensors of forward-mode
    AD (a gradient's tangent: the C++ code read the primal and the tangent came out None, in silence): for
    these backward computes in torch ops instead (as for create_graph=True), which carry them."""
    f = torch._C._functorch
    dual = getattr(forward_ad, "_current_level", -1) >= 0
    return all(
        t is None
        or not (
            f.is_legacy_batchedtensor(t)
            or f.is_functorch_wrapped_tensor(t)
            or (dual and forward_ad.unpack_dual(t).tangent is not None)
        )
        for t in tensors
    )


def build_failed(reason):
    """Whether `reason` (from unsupported) is that the extension could not be built or loaded, not a tensor it
    doesn't run or a switch (RNNKIT_NATIVE=0)."""
    return _ext is None and reason == _reason and not reason.startswith("switched off")


def unsupported(cell, xw, P=None):
    """None if the native backend can run this, else a short reason ("quiet" = no warning).

    P: the recurrent parameters (a cell instance gives its own): a cell of one's own runs natively where its step
    functions trace into the loop's kernels (see traced_id), which they depend on."""
    given, cell = cell, cell_class(cell)  # (see engine.run)
    if type(xw) not in (torch.Tensor, torch.nn.Parameter):  # FakeTensor under torch.export, other subclasses
        if isinstance(
            xw, torch._subclasses.FakeTensor
        ):  # a trace (torch.export): its program is torch's ops, as
            return "quiet"  # the README says; backend="native" warned in a non-strict export only, strict said nothing
        return f"{type(xw).__name__} tensors (the native loop reads a plain tensor's memory)"
    # a recurrent weight of one (W_hh a wrapper or tagged tensor) too: 'data is not allocated yet' from inside the loop
    odd = next(
        (p for p in P or () if p is not None and type(p) not in (torch.Tensor, torch.nn.Parameter)), None
    )
    if odd is not None:
        if isinstance(odd, torch._subclasses.FakeTensor):
            return "quiet"
        return f"{type(odd).__name__} tensors (the native loop reads a plain tensor's memory)"
    if make_fx_tracing():
        # make_fx on real tensors: its graph holds the ops the dispatcher saw, and the loop's work is none of them
        # (the graph replayed the empty buffers the loop had filled: out 1e34 off)
        return "make_fx tracing (its graph records torch's ops, and the native loop runs none)"
    kind = unsupported_kind(xw.device.type, xw.dtype)
    if kind is not None:
        return kind
    if xw.dim() == 3 and 0 in xw.shape[:2]:
        return "quiet"  # an empty batch: nothing to run fast; python's loop passes it through
    # no recurrent product (IndRNN's u ⊙ h_{t-1}): said before load, which built the extension for it (a minute, by
    # default, for a cell it never runs) and traced it at every forward (40 µs)
    if cell not in CELL_IDS and not cell.GEMMS:
        return _no_product(cell)
    if load() is None:
        return _reason
    if cell not in CELL_IDS:  # a cell of one's own: traced into kernels, or run by the python loop
        # (under torch.compile the operator runs a traced cell, engine.compiled.wanted; here it was declined, or
        # the cell doesn't trace, and dynamo unrolls python's loop)
        if torch.compiler.is_compiling():
            from rnnkit.engine import compiled

            got = compiled.own_cell_id(cell, xw, P) if P is not None else None
            if isinstance(got, str):
                return got
            return (f"{cell.__name__} is a cell of one's own, which the native loop runs under torch.compile only "
                    "as the rnnkit::recurrence operator (not with a GradProbe)")  # fmt: skip
        if P is None and isinstance(given, torch.nn.Module):
            P = given.rec_params()
        if P is None:
            return (
                f"{cell.__name__} is not one of rnnkit's cells, and no parameters were given to trace it with"
            )
        got = traced_id(cell, P, xw)
        # taken once by the loop's cell_id that follows in this forward (run), not keyed again (weakly: see _traced)
        _last.answer = weakref.ref(cell), _shapes(P), xw.dtype, got
        return got if isinstance(got, str) else None
    return None


# this thread's last answer of unsupported for a cell of one's own: (cell, shapes, dtype, traced_id's answer)
_last = threading.local()


def _shapes(P):
    return tuple(None if p is None else tuple(p.shape) for p in P)


def unsupported_kind(device_type, dtype):
    """unsupported's reason for tensors of this device type and dtype, or None (also said under torch.compile:
    engine.compiled.wanted)."""
    if device_type != "cpu":
        return f"{device_type} tensors (the native backend is CPU-only)"
    # (float16 and bfloat16 reach the loop as float32: engine._in_float32)
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return f"dtype {dtype} (the native backend runs float32 and float64, float16 and bfloat16 in float32)"
    return None


# held weakly, the classes: a factory making a cell class per call (class Mine(Cell) inside a function) leaked one
# per call, with all its functions read (the loop keeps only what it was registered with, a few hundred bytes)
_traced = (
    weakref.WeakKeyDictionary()
)  # cell class -> {(its parameters' shapes, dtype, ...) -> cell id, or why not}
_traced_cells = weakref.WeakValueDictionary()  # cell id -> the class traced_id registered under it
_traced_lock = threading.Lock()


def _traced_key(cell, P, xw):
    from rnnkit.engine.traced import baked  # (the functions and the Python numbers their kernels hold)

    return _shapes(P), xw.dtype, *baked(cell)


# kernels traced for one cell class at most (its shapes and dtypes, and the Python numbers its step functions read):
# a number changed at every call (a temperature swept in a loop) compiled and loaded a library each, without bound
# (40 calls: 15 s and 40 libraries); past the limit the class runs on the python loop for any new key
RETRACE_LIMIT = 16


def traced_id(cell, P, xw):
    """The native loop's id for a cell of one's own, its step and step_backward traced into kernels (traced.py)
    and registered with the loop once per class and shapes; or the one-line reason it runs on the python loop."""
    key = _traced_key(cell, P, xw)
    known = _traced.get(cell, {})
    # (a reason is kept by the key without the tensors' bytes, last in it: the python loop runs the cell whatever
    # they hold, where a tensor changed at every call was traced again at every call)
    got = known.get(key)
    if got is None:
        got = known.get(key[:-1])
    if got is not None:
        return got
    from rnnkit.engine import traced

    with _traced_lock:
        known = _traced.setdefault(cell, {})
        got = known[key] if key in known else known.get(key[:-1])
        if got is not None:
            return got
        kernels = sum(isinstance(v, int) for v in known.values())
        if (
            kernels >= RETRACE_LIMIT
        ):  # (a number the step reads, changed at every call: a compile and a library each)
            got = (f"{cell.__name__} was traced into {kernels} sets of kernels (a Python number its step functions "
                   "read, or its shapes, changed as often), each compiled and loaded for good; it runs on the python "
                   "loop for any other: make such a number a parameter (an EXTRAS entry) or keep it fixed")  # fmt: skip
            known[key[:-1]] = got
            return got
        got = _trace(traced, cell, P, xw)
        known[key[:-1] if isinstance(got, str) else key] = got
        if isinstance(got, int):
            _traced_cells[got] = cell
        return got


def fingerprint(source: str) -> int:
    """A traced cell's name in the plan table (split_key): 60 bits of its kernels' source's hash, the same in
    every process that traces the same math, where its cell id is the order of tracing in one process."""
    return int(hashlib.sha256(source.encode()).hexdigest()[:15], 16)


def _no_product(cell) -> str:
    return (f"{cell.__name__} has no GEMMS entry (a recurrent product u Uᵀ + b), and the native loop runs cells "
            "of recurrent products; it runs on the python loop")  # fmt: skip


def _trace(traced, cell, P, xw):
    if not cell.GEMMS:
        return _no_product(cell)
    U = P[cell.REC_PARAMS.index(cell.GEMMS[0][0])]
    if U is None or U.dim() != 2:
        return f"{cell.__name__}'s first recurrent matrix (GEMMS) is not a matrix, which the native loop needs; it runs on the python loop"
    H = U.shape[1]
    # no units (xw of no columns): nothing to run fast, and the tracer counts every value in blocks of H units
    # (U.shape[0] % H raised ZeroDivisionError out of run); python's loop passes it through, as an empty batch
    if H == 0:
        return "quiet"
    try:
        t = traced.trace_cell(cell, H, list(P), xw.dtype)
    except traced.Untraceable as e:
        return str(e)
    extras = [(i, b) for i, b in t.extras]
    try:
        if isinstance(t, traced.Staged):
            return load().register_staged(
                t.n_states, t.G, list(t.cache_blocks), [i for i, _ in extras], [b for _, b in extras],
                [int(x) for g in t.gemms for x in g], t.dhw_blocks, [a for k in t.fwd for a in k],
                [a for k in t.bwd for a in k], len(P), fingerprint(t.source),
            )  # fmt: skip
        return load().register_traced(
            t.n_states, t.G, t.Gp, t.u_param, t.b_param, t.dpre_is_dxw, list(t.cache_blocks),
            [i for i, _ in extras], [b for _, b in extras], [t.fwd_f32, t.bwd_f32, t.fwd_f64, t.bwd_f64], len(P),
            fingerprint(t.source),
        )  # fmt: skip
    except RuntimeError as e:  # (more buffers and parameters than the loop passes a kernel, say)
        return f"{cell.__name__}: {str(e).splitlines()[0]}; it runs on the python loop"


def traced_id_of_shapes(cell, shapes, dtype):
    """traced_id from the parameters' shapes alone (None for an absent one) and the dtype: what the kernels are
    keyed by. The sample step runs on parameters drawn here, as traced_id's first call runs it on the first ones
    given (for torch.compile, which has no real tensors to give: compiled.own_cell_id)."""
    rnd = torch.Generator().manual_seed(0)
    P = [None if s is None else torch.rand(s, generator=rnd, dtype=dtype) * 0.5 + 0.25 for s in shapes]
    return traced_id(cell, P, torch.empty(0, dtype=dtype))


def traced_cell(cid):
    """The class of the cell of one's own registered as cid (traced_id)."""
    return _traced_cells[cid]


def cell_id(cell, P, xw):
    """The native loop's id of cell (a class): rnnkit's own, or a cell of one's own as traced (traced_id), taken
    once from this thread's last `unsupported` where that was of this cell and shapes (resolve_backend's, just
    before the loop in the same forward: a key reads every number the step reads, an array of 10**6 twice a forward)."""
    got = CELL_IDS.get(cell)
    if got is not None:
        return got
    last, _last.answer = getattr(_last, "answer", None), None
    if (
        last is not None
        and last[0]() is cell
        and last[1:3] == (_shapes(P), xw.dtype)
        and isinstance(last[3], int)
    ):
        return last[3]
    return traced_id(cell, P, xw)


def _flat_params(cell, P, H):
    """Contiguous recurrent parameters; a leaky unit's α spread to (H,)."""
    P = [None if p is None else p.detach().contiguous() for p in P]
    if cell.EXTRAS and cell in CELL_IDS:
        i = cell.REC_PARAMS.index("alpha")
        P[i] = P[i].expand(H).contiguous()
    return P


def _run_forward(cell, mask, reverse, batch_first, raw, xw, xt, state0, P, keep, cid=None):
    """The C++ loop forward: (its outputs [hs, state_T..., saved...], the (T, B) mask, the flat parameters). cid: the
    cell's id (cell_id), where the caller has it already."""
    T, B = xw.shape[:2]
    m = None if mask is None else mask.reshape(T, B).to(xw.dtype).contiguous()
    flat = _flat_params(cell, P, state0[0].shape[1])
    xt = None if xt is None else xt.detach().contiguous()
    out = load().forward(
        cell_id(cell, P, xw) if cid is None else cid, xw.contiguous(), [s.contiguous() for s in state0], flat, m, reverse, keep, batch_first, raw,
        xt,
    )  # fmt: skip
    keep_plans_soon()
    return out, m, flat


def forward_only(cell, mask, reverse, batch_first, raw, xw, xt, state0, P):
    """NativeRecurrence's forward where no gradient is asked for (sampling, evaluation): the C++ loop keeps no
    caches and the call skips autograd.Function's bookkeeping (a third of a one-step call at H = 128)."""
    out, _, _ = _run_forward(cell, mask, reverse, batch_first, raw, xw, xt, state0, P, keep=False)
    return out[0], tuple(out[1:])


class NativeRecurrence(torch.autograd.Function):
    """hs, *state_T = f(xw, *state_0, *P): PythonRecurrence's contract, the time loop in C++.

    batch_first: hs is written (B, T, H) straight away (and dL/dhs read so), sparing the layer's last
    transpose and its copy both ways. P may end with a gated cell's input bias and raw may be set, see
    `loop_adds_input_bias`; xt (T, B, H) or None: MUT1's x̃ when it is the layer's input itself (raw; xw then
    holds only [z, r]), which the loop reads in place, its gradient a tensor of its own. inner: hs is read only by
    the layer above (Recurrent's lower layers), which saves it for its own backward: without a mask, time-major, it
    is then a view of the states the loop saves (h_1..h_T) instead of a copy of them, kept once, where that lies
    64-byte aligned; such a view can't be changed in place."""

    @staticmethod
    def forward(ctx, cell, mask, reverse, probe, batch_first, raw, inner, n_state, xw, xt, *tensors):
        state0, P = tensors[:n_state], tensors[n_state:]
        keep = any(ctx.needs_input_grad[8:])
        ctx.cell_id = cell_id(cell, P, xw)  # (a cell of one's own: its traced kernels' id, kept for backward)
        out, m, flat = _run_forward(
            cell, mask, reverse, batch_first, raw, xw, xt, state0, P, keep, ctx.cell_id
        )
        ctx.cell, ctx.mask, ctx.reverse, ctx.probe, ctx.n_state = cell, m, reverse, probe, n_state
        ctx.batch_first, ctx.raw, ctx.xt, ctx.X = batch_first, raw, xt is not None, xw.shape[2]
        ctx.shapes = [None if p is None else p.shape for p in P]
        ctx.state_shapes = [s.shape for s in state0]  # h and c differ in width in lstmp
        # the inputs (for higher-order gradients; the parameters as the loop read them) and the loop's states and
        # caches, all through save_for_backward: freed once backward has run, seen by saved-tensor hooks
        # (save_on_cpu, torch.utils.checkpoint), and checked for in-place changes when unpacked (below)
        ctx.n_tensors = len(tensors)
        ctx.save_for_backward(*saved_input(ctx, xw), xt, *tensors, *out[1 + n_state :])
        if inner and keep and m is None and not batch_first:  # hs[t] = h_t = HH[t + 1] (reverse: HH[t])
            hs = out[1 + n_state].narrow(0, 0 if reverse else 1, xw.shape[0])
            # (64-byte aligned, as the loop's own buffers are: at another alignment, B·H·itemsize = 56 bytes, MKL's
            # GEMM of the layer above summed in another order, and evaluation gave other last bits than training)
            if hs.data_ptr() % 64 == 0:
                out[0] = hs
        return tuple(out[: 1 + n_state])

    @staticmethod
    def backward(ctx, dhs, *dstateT):
        # raises torch's own error if an input was changed in place since forward (a weight by an optimizer
        # step, say), as torch.nn's RNNs do; and the parameters are the saved ones, not the module's now (a
        # hook that saves copies keeps those of forward time, as autograd's own graph does)
        # unpacked once: torch.utils.checkpoint (non-reentrant) lets each saved tensor be unpacked once only, and
        # _differentiable below needs them too (a second ctx.saved_tensors failed there with a CheckpointError)
        all_saved = ctx.saved_tensors
        rest = all_saved[ctx.n_in + 1 :]  # (after xw's and xt)
        # contiguous: an unpack hook may hand them back with other strides (the C++ loop reads their memory as laid
        # out by forward: gradients 1.3 off, in silence)
        tensors, saved = rest[: ctx.n_tensors], [t.contiguous() for t in rest[ctx.n_tensors :]]
        HH = saved[0]
        flat = _flat_params(ctx.cell, tensors[ctx.n_state :], ctx.state_shapes[0][1])
        T, B, H = HH.shape[0] - 1, HH.shape[1], HH.shape[2]
        if dhs is None:
            dhs = HH.new_zeros((B, T, H) if ctx.batch_first else (T, B, H))
        dstateT = [
            HH.new_zeros(s) if d is None else d.contiguous() for d, s in zip(dstateT, ctx.state_shapes)
        ]
        if torch.is_grad_enabled() or not _plain(dhs, *dstateT):  # create_graph=True, or batched gradients
            return (None,) * 8 + NativeRecurrence._differentiable(ctx, all_saved, dhs, dstateT)
        probe, n = ctx.probe, ctx.n_state
        needs = ctx.needs_input_grad[8 + 2 + n :]  # (the others' GEMMs not run: a frozen W_hh)
        out = load().backward(
            ctx.cell_id, saved, ctx.X, flat, ctx.mask, ctx.reverse, dhs.contiguous(), dstateT,
            probe is not None, ctx.batch_first, ctx.raw, ctx.xt, list(needs),
        )  # fmt: skip
        keep_plans_soon()
        dxw, dxt, dstate0, dP = out[0], out[1], out[2 : 2 + n], out[2 + n : 2 + n + len(flat)]
        if probe is not None:
            probe.record(out[-1])
        # (a traced cell's EXTRAS gradient comes as (H,): a (1, H) parameter's is the same numbers, reshaped; one of
        # the parameter's shape as it is, no view: autograd may then keep it as .grad without a copy)
        dP = [(g if g.shape == s else g.reshape(s) if g.numel() == s.numel() else g.sum_to_size(s))
              if need and g is not None else None for g, s, need in zip(dP, ctx.shapes, needs)]  # fmt: skip
        return (None, None, None, None, None, None, None, None, dxw, dxt, *dstate0, *dP)

    @staticmethod
    def _differentiable(ctx, saved, dhs, dstateT):
        """Gradients of (xw, xt, *state_0, *P) that differentiate again: the same function as a plain
        autograd loop on the saved inputs (`saved`: ctx.saved_tensors as backward unpacked them), put back in
        the cell's own form first (what the loop folds in: x̃ read in place, MUT1's tanh(x̃), the input bias
        b_xh), see higher_order_grads."""
        xt, tensors = saved[ctx.n_in], saved[ctx.n_in + 1 : ctx.n_in + 1 + ctx.n_tensors]
        xw, n, cell = restored_input(ctx, saved[: ctx.n_in]), ctx.n_state, ctx.cell

        def rerun(xw, xt, *tensors):
            state0, P = tuple(tensors[:n]), tensors[n:]
            xbias = P[len(cell.REC_PARAMS)] if len(P) > len(cell.REC_PARAMS) else None
            P = P[: len(cell.REC_PARAMS)]
            full = xw if xt is None else torch.cat((xw, xt), dim=-1)
            if ctx.raw:
                full = tanh_of_tail(full, state0[0].shape[1])
            if xbias is not None:
                full = full + xbias
            mask = None if ctx.mask is None else ctx.mask[..., None]  # (T, B, 1), as the layer gave it
            hs, state = autograd_loop(cell, full, state0, P, mask, ctx.reverse, ctx.probe)
            return (hs.transpose(0, 1) if ctx.batch_first else hs, *state)

        args = ([xw, xt, *tensors], rerun, (dhs, *dstateT), ctx.needs_input_grad[8:])
        # the loop ran with autocast off (engine._no_autocast), and so does its rerun: a create_graph=True backward
        # inside torch.autocast reran it with bfloat16 GEMMs, gradients 0.5% off those of one outside
        if autocast_on(xw.device):
            with torch.autocast(xw.device.type, enabled=False):
                return tuple(higher_order_grads(*args))
        return tuple(higher_order_grads(*args))


class NativeProjection(torch.autograd.Function):
    """xw = x W_xhᵀ + b for all steps (F.linear's function) with its buffers recycled by the extension.

    tail n > 0: the last n columns pass through tanh before b is added (Cell.tanh_tail, MUT1).
    ident c >= 0: columns [c, c + D) of xw are x itself and W holds only the other rows (Cell.input_identity:
    MUT1/MUT2 with x̃_t = x_t); without a GEMM for them.
    pass_x: returns (xw, x) for a loop that reads x itself as an extra block (MUT1's x̃ = x, see
    NativeRecurrence): backward adds that block's gradient to dx with the GEMM's own accumulation."""

    @staticmethod
    def forward(ctx, x, W, b, tail, ident, pass_x):
        shape, Win, bin = x.shape, W, b
        # (of x detached: a view of x made here, saved, failed backward after x changed in place with torch's 'A view
        # was created in no_grad mode ...' where its 'modified by an inplace operation' is due; detach shares x's version)
        x2 = x.detach().reshape(-1, shape[-1]).contiguous()
        W = W.detach().contiguous()
        b = None if b is None else b.detach().contiguous()
        G = W.shape[0] + (shape[-1] if ident >= 0 else 0)
        xw, t = load().project(x2, W, b, [*shape[:-1], G], tail, ident)
        keep_plans_soon()
        ctx.save_for_backward(x2, W, t, x, Win, bin)
        ctx.tail, ctx.pass_x = tail, pass_x
        ctx.shape, ctx.has_b, ctx.ident = shape, b is not None, ident
        ctx.b_shape = None if b is None else b.shape
        return (xw, x2.view(shape)) if pass_x else xw

    @staticmethod
    def backward(ctx, dxw, dx0=None):
        x2, W, t, x, Win, b = ctx.saved_tensors
        if torch.is_grad_enabled() or not _plain(dxw, dx0):  # create_graph=True or batched: in torch ops
            return NativeProjection._differentiable(ctx, x, Win, b, dxw, dx0)
        # (contiguous as unpacked: see NativeRecurrence.backward)
        x2, W, t = (None if a is None else a.contiguous() for a in (x2, W, t))
        need = ctx.needs_input_grad
        if dx0 is not None:
            dx0 = dx0.reshape(x2.shape).contiguous()
        dx, dW, db = load().project_backward(
            dxw.reshape(-1, dxw.shape[-1]).contiguous(), x2, W, need[0], need[1], need[2] and ctx.has_b, t,
            ctx.ident, dx0 if need[0] else None,
        )  # fmt: skip
        keep_plans_soon()
        if need[2]:  # (Σ dxw, in a 2-D bias's shape too)
            db = bias_grad(db, ctx.b_shape)
        return (dx.view(ctx.shape) if need[0] else None, dW if need[1] else None,
                db if need[2] else None, None, None, None)  # fmt: skip

    @staticmethod
    def _differentiable(ctx, x, W, b, dxw, dx0):
        def rerun(x, W, b):
            pre = projection_reference(x, W, b, ctx.tail, ctx.ident)
            return (pre, x) if ctx.pass_x else (pre,)

        return (*higher_order_grads([x, W, b], rerun, (dxw, dx0), ctx.needs_input_grad[:3]), None, None, None)


def projection_reference(x, W, b, tail=0, ident=-1):
    """NativeProjection's function in differentiable torch ops (for higher-order gradients)."""
    return affine_input(x, W, b, tail, None if ident < 0 else ident)


def folds_input_bias(cell):
    """Whether the cell's b_hh (P[1]) adds to the same pre-activation as the projection's bias b_xh, so that
    the loop can add b_xh + b_hh and the projection run without a bias (not gru: b_hn sits behind r)."""
    cls = cell_class(cell)  # (see engine.run)
    return cls in (CELLS["rnn_tanh"], CELLS["rnn_relu"], CELLS["lstm"], CELLS["leaky"], LSTMP)


def loop_adds_input_bias(cell):
    """Whether the loop adds the cell's input bias b_xh itself, handed to it after the recurrent parameters
    (gru_cho, mut1-3, whose b_xh has no b_hh beside it to fold into), so that the projection runs without a
    bias and the loop sums its gradient as it goes. MUT1's x̃ block can also come raw (run's raw_tail):
    the loop takes its tanh, and the projection becomes a plain GEMM."""
    cls = cell_class(cell)  # (see engine.run)
    return cls in (CELLS["gru_cho"], CELLS["mut1"], CELLS["mut2"], CELLS["mut3"])


def project(x, W, b, tail=0, ident=-1, pass_x=False):
    """F.linear(x, W, b) for the native backend: x (..., D), W (G, D), b (G,) or None; tail, ident, pass_x: see
    NativeProjection. xw carries how to compute it again (see engine.reference.saved_input)."""
    with contextlib.nullcontext() if recording() else torch.no_grad():  # (see cells._base.recording)
        out = NativeProjection.apply(x, W, b, tail, ident, pass_x)
    xw = out[0] if pass_x else out
    xw._rnnkit_rebuild = (lambda x, W, b: projection_reference(x, W, b, tail, ident)), (x, W, b)
    return out
