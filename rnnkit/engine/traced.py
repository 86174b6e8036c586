"""A cell of one's own run natively: its step and step_backward traced into aten graphs and compiled to C++.

The native loop runs rnnkit's built-in cells with hand-written pointwise kernels. A cell of one's own (see
rnnkit.cells._base.Cell) gives the same two pure functions of one step, and for most cells they are pointwise
math around ONE recurrent product pre = h_{t-1} Uᵀ (+ b). Here they are read like a small compiler does:

    trace    make_fx records step and step_backward on fake sample tensors (aten ops, no values)
    analyse  every value becomes, per unit j, a list of C expressions, one per block of H units: a row value
             (B, k·H) is k scalars at unit j; slices, splits and cats only re-index those blocks
    emit     one C++ loop over the units j of one batch row, for float and for double
    compile  the system compiler, cached on disk by a hash of the source; loaded with ctypes

The engine does the GEMMs itself: forward hands the kernel pre without bias (the kernel adds b where the step
used addmm), and backward's kernel leaves out the dpre U term of dh_{t-1}, which the engine adds with its
GEMM. A cell outside that form (another matrix product, a reduction over units, control flow on values)
raises Untraceable with a one-line reason, and the engine keeps it on the python loop.

v2, a cell of several GEMMS entries (up to 3) whose products depend on each other, as gru_cho and mut1-3: the reset
gate r comes from h_{t-1} W_1ᵀ, then (r ⊙ h_{t-1}) W_2ᵀ. Every statement gets a stage, the number of products its
value waits for (a product is one stage past its operand), and each function is cut into one kernel per stage
(_Staged), the engine's GEMMs between them, as the built-in cells_gated.h runs GEMM, pointwise, GEMM, pointwise:

    forward   stage s: the GEMMs whose operand stage s-1 stored (pre_k = u_k U_kᵀ; u_k is h_{t-1} or a buffer kept
              per step, for dU_k), then kernel s; stage 0's kernel only where an operand is no state (mut3's
              tanh(h_{t-1})); the last stage writes the states
    backward  stage s: the products dpre_k U_k that pointwise math reads (gru_cho's du = da_h̃ W_hh), then kernel s;
              after the last one, dh_{t-1} += dpre_k U_k for the products that only add into it; dU_k, db_k after
              the loop from dpre_k, kept in dxw (where dxw's blocks are it) or in dhw
A value a later kernel needs is read from where an earlier one stored it (a cache buffer, dxw, dhw), else computed
again. Each product U_k is used once per function, on a row of H units (forward) or on dpres[k] (backward).

Kernel ABI (per batch row, units j in [j0, j1); element (block k, unit j) of a row value is ptr[k*H + j]):
    fwd in  = [xw, pre, state_0, (state_1), P_0 .. P_{n-1}]     out = [state_t_0, (state_t_1), cache buffers]
    bwd in  = [dstate_0, (dstate_1), cache buffers, P_0 .., state_0, (state_1)]
                                                                out = [dxw, dpre, dstate_prev_0, (dstate_prev_1),
                                                                       one accumulator per EXTRAS entry (+=)]
A cache element that is a state the step was given (h_{t-1}, c_{t-1}) is no buffer: backward reads it where the
loop keeps every step's state (the last inputs of bwd).

v2 kernels (fwd{s}, bwd{s} per stage s; a later stage reads what an earlier one stored through out, as loaded):
    fwd in  = [xw, state_0, (state_1), P_0 .. P_{n-1}, pre_0 .. pre_{g-1}]
                                                   out = [state_t_0, (state_t_1), buffers: caches and operands u_k]
    bwd in  = [dstate_0, (dstate_1), buffers, P_0 .., state_0, (state_1), dpre_0 U_0 .. (the products read)]
                                                   out = [dxw, dhw, dstate_prev_0 less the products that only add into
                                                          it, (dstate_prev_1), one accumulator per EXTRAS entry (+=)]
"""

import collections
import contextlib
import ctypes
import enum
import functools
import hashlib
import math
import operator
import os
import random
import re
import struct
import sys
import tempfile
import threading
import types
import weakref
from dataclasses import dataclass
from numbers import Number

import numpy as np
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from rnnkit._native_build import _cxx_command, _dangling_link, cxx_line_fix, run_compiler
from rnnkit.cells._base import check_step, check_step_backward

FALLBACK = "which the native loop can't fuse; it runs on the python loop"


class Untraceable(Exception):
    """A cell the native loop can't run: str(e) is the one-line reason."""


@dataclass(frozen=True)
class Traced:
    """A traced cell: the generated source, its layout (see the module docstring) and the kernels' addresses."""

    source: str
    n_states: int
    G: int
    Gp: int
    u_param: int
    b_param: int
    cache_blocks: tuple
    dpre_is_dxw: bool
    extras: tuple
    fwd_f32: int = 0
    bwd_f32: int = 0
    fwd_f64: int = 0
    bwd_f64: int = 0


@dataclass(frozen=True)
class Staged:
    """A traced cell of several recurrent products (v2, see the module docstring): one kernel per stage.

    gemms: per GEMMS entry (U's index in P, its bias's or -1, blocks of its pre row, its operand: -1 h_{t-1} or a
    buffer, the forward kernel it runs before, the backward kernel it runs before (-1: after the last, into
    dh_prev; -2: none), where its dpre is kept (0 dxw, 1 dhw), its first block there). fwd, bwd: per stage the
    kernels' addresses (float, double), (0, 0) for a stage with no kernel."""

    source: str
    n_states: int
    G: int
    cache_blocks: tuple
    extras: tuple
    gemms: tuple
    dhw_blocks: int
    fwd: tuple
    bwd: tuple


# cls -> {(H, G, shapes of P, dtype, ...) -> Traced, or the Untraceable it raised}: weak, as native's caches
_traced = weakref.WeakKeyDictionary()
_libs = {}  # path of a loaded .so -> its ctypes handle (kept alive: the engine holds its function addresses)


def trace_cell(cls, H: int, P: list, dtype) -> Traced:
    """The compiled kernels of cls for hidden size H, parameters P (in REC_PARAMS order, None for an absent bias)
    and dtype (Traced, or Staged for several GEMMS entries); traced once per key, then a dict look-up. Raises
    Untraceable where the cell is outside what the native loop fuses."""
    key = (H, cls.gates, tuple(None if p is None else tuple(p.shape) for p in P), dtype, *baked(cls))
    known = _traced.setdefault(cls, {})
    hit = known.get(key)
    if hit is None:
        try:
            hit = known[key] = _trace_and_compile(cls, H, P, dtype)
        except Untraceable as e:
            known[key] = Untraceable(str(e))  # (not e, whose traceback's frames hold cls)
            raise
    if isinstance(hit, Untraceable):
        raise Untraceable(str(hit))
    return hit


@contextlib.contextmanager
def _no_python_draws(name, generators=()):
    """Python's and numpy's global generators, and generators (the step's own: random.Random(0),
    np.random.default_rng(0)), as they were after; a step that drew from one raises Untraceable: the kernels bake in
    the one number drawn in the sample step (t * random.uniform(0.5, 1.5)) or the branch it took (random.random() <
    0.9: the native loop always took it, where the python loop draws at every step)."""
    said = (f"{name}'s step functions draw from Python's or numpy's random generator (random.random(), "
            "np.random.rand()), which the kernels would bake in as one number; it runs on the python loop")  # fmt: skip
    kept = [(random, random.getstate()), (np.random, np.random.get_state())]
    kept += [(g, _state(g)) for g in generators]
    try:
        yield
    except (
        Exception
    ):  # (the draw is said first: a number drawn anew makes every trace another, 'the batch size')
        if _drew(kept):
            raise Untraceable(said) from None
        raise
    except BaseException:
        _drew(kept)
        raise
    if _drew(kept):
        raise Untraceable(said)


def _drew(kept) -> bool:
    """Whether a generator of kept, (generator, its state) pairs, moved from its state; each is set back to it."""
    drew = False
    for g, state in kept:
        now = _state(g)
        drew = drew or not _same(now, state)
        if isinstance(g, np.random.Generator):
            g.bit_generator.state = state
        else:
            (g.setstate if hasattr(g, "setstate") else g.set_state)(state)
    return drew


def _state(g):
    """A generator's state: Python's random (or a random.Random), numpy's global one (or a RandomState), a
    np.random.Generator."""
    if isinstance(g, np.random.Generator):
        return g.bit_generator.state
    return g.getstate() if hasattr(g, "getstate") else g.get_state()


def _same(a, b) -> bool:
    """Whether two generator states (tuples, dicts, arrays of them) are equal."""
    if isinstance(a, dict | tuple | list):
        keys = a.keys() if isinstance(a, dict) else range(len(a))
        return type(a) is type(b) and len(a) == len(b) and all(_same(a[k], b[k]) for k in keys)
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


GENERATORS = (random.Random, np.random.Generator, np.random.RandomState)


def _generators(cls):
    """The random generators of the step's own that baked's walk reaches (RNG = random.Random(0) a global, self.rng
    of a bound step): a draw from one was baked into the kernels as one number, as from the global ones."""
    numbers = _walk((cls.step, cls.step_backward))
    return [g for g in numbers.generators if not isinstance(g, random.SystemRandom)]  # (no state to read)


def baked(cls):
    """What a trace bakes into its kernels beyond shapes: the two functions themselves (a class whose step was
    replaced ran the old kernels), their code and their helpers' (IPython's %autoreload swaps it in place), and the
    Python numbers (strings, functions) they read (a global SCALE changed between runs: the python
    loop reads the new value, the kernels kept the old one): from their globals, closures and bound objects (self.k
    of a bound method given as step), from the attributes they name of an object found there (a class attribute
    MyCell.K, a module's config.K, and theirs: SETTINGS.candidate.scale; named by any function reached, see _walk),
    from a dict, list or tuple found there (CFG["k"]), from their default arguments, and likewise in the functions
    they call (a helper reading a global), DEPTH calls and attributes down; and the class's layout (_layout)."""
    fns = (cls.step, cls.step_backward)
    numbers = _walk(fns)
    return (*map(_weak, fns), tuple(map(_weak, numbers)), _layout(cls), tuple(numbers.tensors))


def _walk(fns):
    """baked's walk: the functions and what they read (_numbers), then the objects found on the way (a class, a
    module, a configuration), each read for the attributes that any function the walk reached names: a helper
    reading cfg.scale of the CONFIG that step passes it (scaled(a, CONFIG)) names scale, which step's own code
    doesn't, and CONFIG.scale changed between runs ran the old kernels (outputs 0.75 off) where the python loop read
    the new. A method found on an object names more: the objects are read again with those, until none is new."""
    numbers, seen = _Found(), _Seen()
    for fn in fns:
        _numbers(fn, numbers, seen, DEPTH)
    read = None
    while numbers.objects and read != numbers.names:
        read = set(numbers.names)
        names = tuple(sorted(read))
        k = 0
        while k < len(numbers.objects):  # (reading one may find more)
            v, depth = numbers.objects[k]
            _attributes(v, names, numbers, seen, depth)
            k += 1
    return numbers


def _weak(x):
    """x as baked's key holds it: a function, method, partial or class by a weak reference (equal while it lives, as
    it is to itself: they compare by identity), a tuple's entries so (a dict's (key, value)); anything else as it is.
    The key is held in the caches' entry of the cell class, weakly keyed (native._traced, _traced): a step reading its
    own class (Made.K, Made through a factory's closure) put the class in its own entry's key, and every class a
    factory made stayed alive."""
    if isinstance(x, tuple):
        return tuple(map(_weak, x))
    if isinstance(x, types.MethodType):  # (made anew at each read of a classmethod): its object and function
        return _weak(x.__func__), _weak(x.__self__)
    return weakref.ref(x) if isinstance(x, types.FunctionType | functools.partial | type) else x


class _Seen(set):
    """The ids (and (id, names)) baked's walk has been through, with the objects themselves, kept alive until the walk
    ends: an array a property makes at each read (CFG.gain), freed once keyed, gave its id to the next one made, which
    was then taken as seen and left out of the key (a change to it unseen, the native loop ran the old kernels)."""

    def __init__(self):
        super().__init__()
        self.objects = []

    def see(self, key, v):
        self.add(key)
        self.objects.append(v)


class _Found(list):
    """The numbers baked found, and apart, last in its key, the keys of the tensors they read (tensors): a cell the
    python loop runs whatever those hold is kept by the key without them (native.traced_id), not traced again at
    every change (k.fill_ of a closure's tensor at every call: 11 ms a call where it takes 1, an entry each)."""

    def __init__(self):
        super().__init__()
        self.tensors, self.generators = [], []  # (generators: see _generators)
        # (what the functions name, and the objects to read for those names: see _walk)
        self.names, self.objects = set(), []


DEPTH = 8  # calls and attributes followed from step (a global read 4 helpers down was missed at 3: outputs 10 off)


def _layout(cls):
    """What the trace reads of the class besides its functions: a class whose GEMMS, EXTRAS or gates changed in
    place is traced again."""
    return repr((cls.gates, cls.num_states, cls.REC_PARAMS, cls.GEMMS, cls.EXTRAS))


def _keyed(x) -> bool:
    """A value the kernels' key holds as it is: a Python number or numpy's (SCALE = np.sqrt(2.0), an np.float64: its
    changes were missed), not a tensor; a string (MODE = "plain", which the step branches on: its changes were
    missed too); an enum member (KIND = Kind.PLAIN, which the step branches on: its changes were missed, the native
    loop ran the old kernels); a function or other callable, by identity (SQUASH = torch.tanh, then torch.sigmoid);
    None, which holds its place (SHIFT = 1.0 and TWICE = None, then SHIFT = None and TWICE = 1.0, an option the step
    branches on set or not, were one key: 1.0; the native loop ran the old kernels); a dtype (y.to(CAST): CAST =
    torch.bfloat16 after torch.float32 ran the float32 rounding, outputs 2e-3 off)."""
    if x is None or isinstance(x, Number | str | enum.Enum | torch.dtype):
        return True
    try:  # (a callable frozen dataclass holding a list raises here; its attributes are read instead)
        return callable(x) and hash(x) is not None
    except TypeError:
        return False


def _numbers(fn, numbers, seen, depth):
    """The Python numbers (strings, functions) fn reads through its globals and closure (see baked), appended to
    numbers."""
    while isinstance(fn, functools.partial):  # (its own arguments are in the key with it)
        numbers += [a for a in (*fn.args, *fn.keywords.values()) if _keyed(a)]
        fn = fn.func
    owner = getattr(fn, "__self__", None)  # a bound method's object: self.k is read through it
    fn = getattr(fn, "__func__", fn)  # (a bound or static method)
    code = getattr(fn, "__code__", None)
    if code is None or id(fn) in seen or depth < 0 or _library(fn):
        return
    seen.see(id(fn), fn)
    numbers.append(code)  # (%autoreload edits a function in place: a new __code__, the same function object)
    glob, names = getattr(fn, "__globals__", {}), _names(code)
    numbers.names.update(names)
    found = [glob[n] for n in names if n in glob]
    found += [*(fn.__defaults__ or ()), *(fn.__kwdefaults__ or {}).values()]  # (def step(..., k=0.5))
    found += [_contents(c) for c in fn.__closure__ or ()]
    found += [] if owner is None else [owner]
    for v in found:
        if _keyed(v):
            numbers.append(v)
        _value(v, names, numbers, seen, depth)


def _value(v, names, numbers, seen, depth):
    """The numbers (strings, functions) a value step reads holds (names: the names its code reads), appended to
    numbers: those a function, a container, a numpy array or an object holds (CFG["cell"]["k"], OBJS["cell"].k,
    ROWS[0][0]: a container's containers were not read; float(A) of an array A changed in place)."""
    if type(v) in FUNCTIONS:
        _numbers(v, numbers, seen, depth - 1)
    elif isinstance(v, np.ndarray):  # (float(A), A[0]: a mutable array's numbers, which the trace bakes in)
        if (
            id(v) in seen
        ):  # (once: an array both functions read was keyed twice, 10**6 numbers compared twice)
            return
        seen.see(id(v), v)
        if v.size <= 256:
            numbers.append((v.dtype.str, v.shape, v.tobytes()))
        elif not v.dtype.hasobject:  # a bigger one by a digest (one of H = 512 per-unit gains was left out: a
            # change to it went unseen, the native loop ran the old kernels in silence)
            numbers.append(_big_key(v, _digest))
    elif isinstance(v, torch.Tensor):
        # (float(S), S.item() of a 0-dim one, T.tolist(): numbers the trace bakes in; S.fill_(3.0) or another S
        # between runs went unseen, the native loop ran the old kernels in silence)
        if id(v) in seen:  # (once: a tensor both functions read was keyed twice)
            return
        seen.see(id(v), v)
        try:
            key = _tensor_key(v) if v.numel() <= 256 else _big_key(v, _tensor_key)
        # (a sparse one of more than 256 entries, a meta one: no bytes to compare, and 'nbytes is not defined for
        # sparse tensors' failed every forward)
        except (RuntimeError, TypeError):
            key = _tensor_key(v)
        numbers.tensors.append(key)
    elif isinstance(v, dict | list | tuple):  # (an OrderedDict, a defaultdict, a namedtuple: ROW[0])
        if id(v) in seen or depth < 0 or len(seen) > 4096:
            return
        seen.see(id(v), v)
        if len(v) > 256:  # its numbers only, not what its entries hold (TABLE[0] of 300 was left out: unseen)
            numbers.append(_big_key(v, _entries))
            return
        for k, x in v.items() if isinstance(v, dict) else enumerate(v):
            if _keyed(x):
                numbers.append((k, x))
            _value(x, names, numbers, seen, depth - 1)
    elif isinstance(v, GENERATORS):  # (its state's numbers are no key: a step drawing from it is not traced)
        numbers.generators.append(v)
    elif _object(v):  # a class, a module: what the functions name of it, once they are all found (_walk)
        numbers.objects.append((v, depth))


def _digest(v):
    """A big array's key: its dtype, shape and a digest of its bytes."""
    digest = hashlib.blake2b(memoryview(np.ascontiguousarray(v)).cast("B"), digest_size=16).digest()
    return v.dtype.str, v.shape, digest


def _entries(v):
    """A long list's, tuple's or dict's key: its numbers (strings, functions) with their indices or keys."""
    items = v.items() if isinstance(v, dict) else enumerate(v)
    return _Hashed((k, x) for k, x in items if _keyed(x))


def _tensor_key(v):
    """A tensor's key: its dtype, shape and bytes (a digest of them past 256 numbers)."""
    try:
        raw = _bytes_of(v)
    except (RuntimeError, TypeError):  # (a sparse, meta or nested tensor: no numbers to read as Python's)
        return str(v.dtype), None if v.is_nested else tuple(v.shape), str(v.layout)
    return str(v.dtype), tuple(v.shape), raw.tobytes() if v.numel() <= 256 else _digest(raw)[2]


def _bytes_of(v):
    """A tensor's bytes as a flat uint8 array (numpy has no bfloat16: its bytes through torch, 3 us where numpy's
    view takes 1 at every call)."""
    try:
        return v.numpy(force=True).reshape(-1).view(np.uint8)
    except TypeError:
        return v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


class _Hashed(tuple):
    """A tuple whose hash is taken once: the kernels' look-up hashed a key of 60,000 numbers at every call."""

    def __hash__(self):
        if "hash" not in self.__dict__:
            self.__dict__["hash"] = tuple.__hash__(self)
        return self.__dict__["hash"]


# id -> (the value, or a weak reference to an array; a copy as it was; its key): the arrays, lists and dicts of more
# than 256 entries a step read, its key computed again only where one changed since (each forward hashed them all:
# 9 ms for float(TABLE[3]) of an array of 10**6 numbers, 26 ms for a list of 60,000, where a step of none takes
# 17 us; and a list of more than 65,536 was left out, a change to it unseen). The last BIG_KEPT are kept.
_big = collections.OrderedDict()
_big_lock = threading.Lock()
BIG_KEPT = 8
BIG_COPIED = 1 << 24  # bytes: a bigger array is not copied, its digest taken at each call


def _new_lock():
    """A child forked while another thread keyed an array (_big_key: numpy lets other threads run as it compares)
    inherits _big_lock held, by a thread it doesn't have: its first forward of such a cell waited forever (as
    native's locks: native._new_locks). The child starts with a fresh one."""
    global _big_lock
    _big_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def _big_key(v, key):
    """key(v), v an array, tensor or container of more than 256 entries, reused while v is the one seen last time and
    unchanged: a copy is kept and compared (an array's bytes by numpy, 0.3 ms for 10**6 float64 where the digest
    took 9; a list's entries by identity first, 0.04 ms for 60,000)."""
    array = isinstance(v, np.ndarray | torch.Tensor)
    if array and v.nbytes > BIG_COPIED:
        return key(v)
    flat = (lambda a: a.reshape(-1).view(np.uint64 if a.nbytes % 8 == 0 else np.uint8)) if array else None
    now = (np.ascontiguousarray(v) if isinstance(v, np.ndarray) else _bytes_of(v)) if array else None
    with _big_lock:
        hit = _big.get(id(v))
        if hit is not None and (hit[0]() if array else hit[0]) is v:
            held = hit[1]
            same = (
                (now.dtype, now.shape) == (held.dtype, held.shape) and np.array_equal(flat(now), flat(held))
                if array
                else type(held).__eq__(held, v) is True  # (a subclass's own __eq__ not asked)
            )
            if same:
                _big.move_to_end(id(v))
                return hit[2]
    got = key(v)
    # (a list or dict is held, so that its id is not another's; an array weakly, its copy being as big)
    held = (
        (weakref.ref(v), now.copy())
        if array
        else (v, list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
    )
    with _big_lock:
        _big[id(v)] = (*held, got)
        _big.move_to_end(id(v))
        while len(_big) > BIG_KEPT:
            _big.popitem(last=False)
    return got


def _object(v):
    """Whether v is an object whose attributes the key reads: a class, a module, a configuration of the user's, an
    object of a library's class (argparse's Namespace, SimpleNamespace: they hold the user's numbers)."""
    # (a str or a float has no __module__ to tell a library's by)
    plain = (Number, str, torch.Tensor, types.BuiltinFunctionType)
    if v is None or isinstance(v, plain):
        return False
    return not (_library(v) and (callable(v) or isinstance(v, types.ModuleType)))


def _attributes(v, names, numbers, seen, depth):
    """The numbers (strings, functions) of the attributes of v that names name, and of theirs, depth levels down
    (SETTINGS.candidate.scale: only SETTINGS' own were read), appended to numbers."""
    # (as a container's entries: an object whose __getattr__ makes a new one for any name, read for every name any
    # function reached names, was 10 million objects, 48 s and gigabytes, DEPTH levels down)
    if (id(v), names) in seen or depth < 0 or len(seen) > 4096:
        return
    seen.see((id(v), names), v)  # (step_backward may name others of its attributes)
    _numbers(_call(v), numbers, seen, depth - 1)
    for n in names:
        # (names come from every function reached: a helper's a.size(1) read DATA.size, a property raising 'load()
        # first', and the native forward failed in it; one that raises holds no number step can read)
        try:
            x = getattr(v, n, None)
        except Exception:  # noqa: BLE001
            continue
        if _keyed(x):
            numbers.append((n, x))
        _value(x, names, numbers, seen, depth - 1)


def _call(v):
    """What an object called as a function runs (TILT(x): its __call__, an nn.Module's forward), whose numbers
    (self.k) the key holds too; None for a class or an object that is no function."""
    if isinstance(v, type) or not callable(v):
        return None
    return getattr(v, "forward" if isinstance(v, torch.nn.Module) else "__call__", None)


FUNCTIONS = (types.FunctionType, types.MethodType, functools.partial, staticmethod, classmethod)


def _library(v):
    """Whether v is torch's, numpy's or the standard library's (a module, a function): no number of the user's."""
    name = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
    return isinstance(name, str) and name.split(".")[0] in LIBRARIES


LIBRARIES = {"torch", "numpy", "builtins", *sys.stdlib_module_names}


@functools.lru_cache(maxsize=1024)
def _names(code):
    """The names code and the code objects nested in it (a lambda or def inside step) read, in order (no dunders)."""
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        names.update(k for k in c.co_consts if isinstance(k, str) and k.isidentifier())  # (getattr(CFG, "k"))
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return tuple(sorted(n for n in names if not n.startswith("__")))


def _contents(c):
    try:
        return c.cell_contents
    except ValueError:  # (an empty cell)
        return None


# --- trace --------------------------------------------------------------------------------------------


def _trace_and_compile(cls, H, P, dtype):
    """Sample one step on real tensors (checked as the loops check them), trace both functions, emit, compile."""
    name, n, G = cls.__name__, cls.num_states, cls.gates
    if not cls.GEMMS:
        raise Untraceable(f"{name} has no GEMMS entry, and the native loop runs cells of recurrent products; it "
                          "runs on the python loop")  # fmt: skip
    for param, p in zip(cls.REC_PARAMS, P):  # (cast to dtype below, a boolean mask failed the sample step)
        if p is not None and not p.is_floating_point():
            raise Untraceable(f"{name}'s {param} is {p.dtype}, and the native loop's kernels read every parameter as "
                              f"{dtype}; it runs on the python loop")  # fmt: skip
    P = [None if p is None else p.detach().to(dtype) for p in P]
    generators = _generators(cls)

    @contextlib.contextmanager
    def watched():
        """The generators as they were after: a step that draws (noise, dropout of its own) advanced torch's in the
        sample step, and the first run of a seeded model differed from the python loop's with the same seed; one
        drawing from Python's or numpy's is refused. Only around the steps' sample calls: the traces (make_fx on
        fake tensors draws nothing) and the compile are no step's draws, and another thread's meanwhile (a data
        thread's random.shuffle) was set back, to be drawn again, and taken for the step's (8 of 8 runs drawing every
        1 ms refused where the traces were watched too, 0.07-0.24 s)."""
        with torch.random.fork_rng(devices=[]), _no_python_draws(name, generators):
            yield

    def analysed(B):
        """(source, layout) of the kernels, traced on a sample of B rows."""
        rnd = torch.Generator().manual_seed(0)
        xw_t = torch.randn(B, G * H, generator=rnd, dtype=dtype)
        state = tuple(torch.randn(B, H, generator=rnd, dtype=dtype) for _ in range(n))
        dstate = tuple(torch.randn(B, H, generator=rnd, dtype=dtype) for _ in range(n))
        with watched():  # (the calls on real tensors; their traces, on fake ones, draw no number here)
            got = cls.step(xw_t, state, P)
            check_step(cls, got, xw_t, state, P)
        if not isinstance(got[2], tuple | list):
            raise Untraceable(f"{name}.step returns its cache as a {type(got[2]).__name__}, not a tuple of row tensors "
                              "the native loop can keep; it runs on the python loop")  # fmt: skip
        cache = tuple(got[2])
        for i, c in enumerate(cache):  # (a 0-dim parameter kept as itself is read from P: no row to keep)
            if not isinstance(c, torch.Tensor) or c.dim() == 0 and not any(c is p for p in P):
                what = "a 0-dim tensor" if isinstance(c, torch.Tensor) else f"a {type(c).__name__}"
                raise Untraceable(f"{name}.step keeps {what} in cache[{i}], which the native loop can't keep per row; "
                                  "it runs on the python loop")  # fmt: skip
        with watched():
            back = cls.step_backward(dstate, got[2], P)
            check_step_backward(cls, back, dstate, P, G * H)

        present = [p for p in P if p is not None]
        shared = [any(c is p for p in present) for c in cache]  # a parameter kept as itself: no buffer
        cache_in = tuple(c if s else c.clone() for c, s in zip(cache, shared))

        def step(*flat):
            new, us, cache_t = cls.step(flat[0], tuple(flat[1 : 1 + n]), _with_none(P, flat[1 + n :]))
            return [*new, *us, *cache_t]

        def step_backward(*flat):
            m = len(cache)
            out = cls.step_backward(tuple(flat[:n]), tuple(flat[n : n + m]), _with_none(P, flat[n + m :]))
            dxw, dprev, dpres, dextras = out
            return [dxw, *dprev, *dpres, *dextras]

        fwd = _trace(step, f"{name}.step", [xw_t, *state, *present])
        bwd = _trace(step_backward, f"{name}.step_backward", [*dstate, *cache_in, *present])
        return (_Analysis if len(cls.GEMMS) == 1 else _Staged)(cls, H, P).run(fwd, bwd, cache)

    source, layout = analysed(2)
    # the kernels run any batch: a step that reads its size as a number (h.shape[0], baked into them at the
    # sample's 2 rows) ran natively with that number at every other batch size (outputs 14 off at 5 rows), in
    # silence; one that branches on B == 1 traces alike on 2 and 3 rows and took the branch of many on one row, in
    # silence; and one on B > 4 (0.97 off at 8 rows) alike on 1-3 rows: 67 rows too (a branch past 67 is not seen: the
    # README says so and names backend='python')
    if any(analysed(B)[0] != source for B in (3, 1, 67)):
        raise Untraceable(f"{name}'s step functions read the batch size (B = h.shape[0] as a number), which the "
                          "native loop's kernels, traced once for every batch, can't follow; it runs on the python "
                          "loop")  # fmt: skip
    if len(cls.GEMMS) == 1:
        return _compile_and_load((source, layout), name)
    names = [f"{k}{s}" for k, n in (("fwd", layout["n_fwd"]), ("bwd", layout["n_bwd"])) for s in range(n)]
    fns = _load_symbols(source, name, [f"rnnkit_traced_{k}_{t}" for k in names for t in ("f32", "f64")])
    kernel = {k: tuple(fns.get(f"rnnkit_traced_{k}_{t}", 0) for t in ("f32", "f64")) for k in names}
    return Staged(source=source, **{k: v for k, v in layout.items() if k not in ("n_fwd", "n_bwd")},
                  fwd=tuple(kernel[f"fwd{s}"] for s in range(layout["n_fwd"])),
                  bwd=tuple(kernel[f"bwd{s}"] for s in range(layout["n_bwd"])))  # fmt: skip


def _with_none(P, given):
    """P in REC_PARAMS order with the traced tensors in place of the present ones (None stays None)."""
    it = iter(given)
    return [None if p is None else next(it) for p in P]


def _trace(fn, where, args):
    """fn's aten graph on fake tensors; a failure (control flow on a value: no value to branch on) refused. An
    ImportError, AttributeError, MemoryError, RecursionError or OSError may say nothing of the step (an import cut
    short by Ctrl-C in torch's lazy imports, "module 'torch._dynamo' has no attribute 'utils'"; memory): the trace is
    tried once more, and one that fails again is the step's (pickle.dumps(h) of a fake tensor: an AttributeError),
    refused as the others, but memory or recursion, raised as it is, not kept as the cell's reason."""
    try:  # (fails with GuardOnDataDependentSymNode, DataDependentOutputException, an op fake tensors can't run)
        try:
            return _merged(make_fx(fn, tracing_mode="fake")(*args))
        except (ImportError, AttributeError, MemoryError, RecursionError, OSError):
            return _merged(make_fx(fn, tracing_mode="fake")(*args))
    except (MemoryError, RecursionError):
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        # (fake mode's words for a real tensor among the ops)
        if "convert all Tensors to FakeTensors" in first:
            raise Untraceable(f"{where} uses a tensor that is none of its arguments (a global's or a closure's), which "
                              "kernels would bake in as it is now; make it a parameter named in REC_PARAMS to run "
                              "natively; it runs on the python loop") from None  # fmt: skip
        raise Untraceable(f"{where} can't be traced on fake tensors ({type(e).__name__}: {first}; control flow on a "
                          "tensor's value?), so the native loop can't fuse it; it runs on the python loop") from None  # fmt: skip


def _merged(gm):
    """gm with its equal computations merged into one node: the analysis knows a value by its node, so a
    step_backward that wrote dpre twice, once returned in dpres and once in dstate_prev's product
    (torch.cat((da_r, da_z, da_n * r), 1) @ U), was refused as 'dstate_prev[0] is not dpres[0] U', which it is. Two
    nodes are one where they call the same op on the same nodes and the same Python numbers, of the same type and
    sign (x * -0.0 is not x * 0.0: 1 / it is -inf, not inf; torch.fx's CSEPass took them as one, 0.0 == -0.0, and
    the kernels gave the python loop's numbers 2.4 off); a random op (two rand_like are two draws) is never merged,
    and a graph that changes a tensor in place (add_, copy_, out=) is kept as traced: a value read before and after
    the change is two values (the analysis refuses such a graph, as it did). Nothing merged: gm as it was."""
    nodes = [nd for nd in gm.graph.nodes if nd.op == "call_function"]
    if any(isinstance(nd.target, torch._ops.OpOverload) and nd.target._schema.is_mutable for nd in nodes):
        return gm
    first, merged = {}, False
    for nd in nodes:
        op = nd.target
        if op is not operator.getitem and (
            not isinstance(op, torch._ops.OpOverload) or torch.Tag.nondeterministic_seeded in op.tags
        ):
            continue
        key = (op, _same_key(nd.args), _same_key(nd.kwargs))
        if key in first:
            nd.replace_all_uses_with(first[key])
            gm.graph.erase_node(nd)
            merged = True
        else:
            first[key] = nd
    if merged:
        gm.recompile()
    return gm


def _same_key(a):
    """A node's argument as a key equal only for the same value: a Python number by its type and its float's bits
    (0.0 == -0.0 == False, and 1 == 1.0 == True, are different arguments), containers by their items; a node by
    itself. Anything unhashable (no such aten argument is known) is a key equal to nothing."""
    if isinstance(a, list | tuple):
        return type(a), tuple(_same_key(x) for x in a)
    if isinstance(a, dict):
        return dict, tuple((k, _same_key(v)) for k, v in a.items())
    if isinstance(a, float):
        return float, struct.pack("<d", a)
    try:
        hash(a)
    except TypeError:
        return object()
    return type(a), a


# --- analyse ------------------------------------------------------------------------------------------


@dataclass
class Val:
    """A value at unit j: kind "row" (B, k·H), "unit" (k·H,) or "scalar" (one value for all units), with one C
    expression per block; or a marker: "list" (a split), "U" / "Ut" (the recurrent matrix, its transpose), "dU"
    (dpre U), "sum0" / "sum" (a sum over rows / over everything: an EXTRAS gradient)."""

    kind: str
    blocks: list
    boolean: bool = False
    node: object = None  # for "dU": dpre's node; for "dprev": the same


LITERAL_OPS = {"ones_like.default": 1.0, "zeros_like.default": 0.0}
SAME = {"clone.default", "alias.default", "detach.default", "lift_fresh_copy.default", "contiguous.default"}
UNIT_REDUCTIONS = {"mean", "var", "std", "amax", "amin", "max", "min", "norm", "logsumexp", "softmax",
                   "_softmax", "log_softmax", "_log_softmax", "prod", "var_mean", "cumsum", "linalg_vector_norm",
                   "native_layer_norm", "argmax", "any", "all"}  # fmt: skip
PRODUCTS = {"mm", "bmm", "matmul", "addmm", "baddbmm", "dot", "mv", "linear", "einsum", "addmv"}
RESHAPES = {"view", "expand", "unsqueeze", "reshape", "_unsafe_view", "permute", "transpose", "flatten", "squeeze",
            "select", "index", "gather", "flip", "roll", "_reshape_alias", "as_strided", "narrow"}  # fmt: skip


def _why(packet, nd):
    """A few words on why an op of this family can't be fused per unit."""
    if packet in UNIT_REDUCTIONS or packet == "sum":
        dims = nd.args[1] if len(nd.args) > 1 else [-1]
        dims = [dims] if isinstance(dims, int) else dims if isinstance(dims, list | tuple) else [-1]
        rank = nd.args[0].meta["val"].dim()
        return " (a reduction over units)" if {-1, rank - 1} & set(dims) else " (a reduction over rows)"
    if packet in PRODUCTS or packet == "t":
        return " (a matrix product other than the recurrent GEMM)"
    if packet in RESHAPES:
        return " (a reshape or index that mixes units or rows)"
    if packet.endswith("_"):
        return " (an in-place op)"
    return ""


class _Analysis:
    """Walks the two graphs, turning each node into a Val and each computed block into one C statement."""

    def __init__(self, cls, H, P):
        self.cls, self.H, self.P = cls, H, P
        self.U_name, b = cls.GEMMS[0]
        self.u = cls.REC_PARAMS.index(self.U_name)
        self.b = -1 if b is None or P[cls.REC_PARAMS.index(b)] is None else cls.REC_PARAMS.index(b)
        U = P[self.u]
        if U is None or U.dim() != 2 or U.shape[1] != H or U.shape[0] % H:
            got = "None" if U is None else f"of shape {tuple(U.shape)}"
            raise Untraceable(f"{cls.__name__}'s {self.U_name} is {got}, not (k·H, H) with H = {H}, the matrix the "
                              "native loop multiplies h_{t-1} by; it runs on the python loop")  # fmt: skip
        if self.u >= 4:  # (as _Staged says it: the loop refused it when registered, "sizes are out of range")
            raise Untraceable(f"{cls.__name__}'s {self.U_name} is REC_PARAMS[{self.u}], and the native loop takes its "
                              "recurrent matrix among the first 4 parameters; it runs on the python loop")  # fmt: skip
        self.Gp, self.dtype = U.shape[0] // H, U.dtype

    def run(self, fwd, bwd, cache):
        """(source, layout): both kernels from both graphs."""
        fwd_body, slots, cache_blocks = self.forward(fwd)
        bwd_body, dpre_is_dxw, extras = self.backward(bwd, len(cache), slots, len(cache_blocks))
        layout = dict(n_states=self.cls.num_states, G=self.cls.gates, Gp=self.Gp, u_param=self.u, b_param=self.b,
                      cache_blocks=tuple(cache_blocks), dpre_is_dxw=dpre_is_dxw, extras=tuple(extras))  # fmt: skip
        return _emit(fwd_body, bwd_body), layout

    def forward(self, gm):
        """in = [xw, pre, state..., P...]; out = [state_t..., cache buffers...]. Also where each cache element
        goes: ("buf", buffer), ("param", its index in P) or ("state", s): state[s] itself, which the loop keeps."""
        n = self.cls.num_states
        self.begin(f"{self.cls.__name__}.step")
        phs = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
        self.env = {phs[0]: self.load("row", 0, phs[0])}
        self.env.update({phs[1 + s]: self.load("row", 2 + s, phs[1 + s]) for s in range(n)})
        self.h_prev = phs[1]
        params = self.bind_params(phs[1 + n :], 2 + n)
        if _outputs(gm)[n] is not self.h_prev:
            raise Untraceable(f"{self.where}'s us[0] is not h_{{t-1}} (state[0]) itself, the vector the native loop "
                              "multiplies by Uᵀ; it runs on the python loop")  # fmt: skip
        outs = self.walk(gm)
        stores, cache_blocks, slots = [self.store(s, outs[s]) for s in range(n)], [], {}
        states = {phs[1 + s]: s for s in range(n)}
        for i, c in enumerate(outs[n + 1 :]):
            if c in params:  # the parameter itself: backward reads it from P
                slots[i] = ("param", params[c])
                continue
            if (
                c in states
            ):  # h_{t-1} or c_{t-1} itself: backward reads the loop's own (a copy cost an LSTM 3%)
                slots[i] = ("state", states[c])
                continue
            slots[i] = ("buf", len(cache_blocks))
            stores.append(self.store(n + len(cache_blocks), c))
            cache_blocks.append(self.width(c))
        return self.finish(stores), slots, cache_blocks

    def backward(self, gm, m, slots, n_bufs):
        """in = [dstate..., cache buffers..., P...]; out = [dxw, dpre, dstate_prev..., accumulators...], with
        dstate_prev[0] less its dpre U term. Also whether dpre is dxw, and the accumulators' layout."""
        cls, n = self.cls, self.cls.num_states
        self.begin(f"{cls.__name__}.step_backward")
        phs = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
        self.env = {phs[s]: self.load("row", s, phs[s]) for s in range(n)}
        by_index = {i: nd for nd, i in self.bind_params(phs[n + m :], n + n_bufs).items()}
        for i, (
            kind,
            k,
        ) in slots.items():  # a buffer, the parameter itself (the Val of its placeholder), a state
            ph = phs[n + i]
            if kind == "param":
                self.env[ph] = self.env[by_index[k]]
            else:
                self.env[ph] = self.load("row", n + k if kind == "buf" else n + n_bufs + len(self.P) + k, ph)
        outs = self.walk(gm)
        dxw, dprev, dpre, dextras = outs[0], outs[1 : 1 + n], outs[1 + n], outs[2 + n :]
        h_term = self.env[dprev[0]]
        if h_term.kind not in ("dU", "dprev") or h_term.node is not dpre:
            raise Untraceable(f"{self.where}'s dstate_prev[0] is not dpres[0] U (+ the other terms), the product the "
                              "native loop forms with its GEMM; it runs on the python loop")  # fmt: skip
        stores = [self.store(0, dxw)] + ([] if dpre is dxw else [self.store(1, dpre)])
        stores.append((2, ["T(0)"] if h_term.kind == "dU" else h_term.blocks, "="))
        stores += [self.store(2 + s, dprev[s]) for s in range(1, n)]
        extras = []
        for e, (i, acc) in enumerate(self.extras_summed(dextras)):
            stores.append((2 + n + e, acc, "+="))
            extras.append((i, len(acc)))
        return self.finish(stores), dpre is dxw, extras

    def extras_summed(self, dextras):
        """(index in P, the blocks its accumulator adds per unit) of each EXTRAS gradient, which must be d.sum(0) of
        a row value d (an (H,) parameter) or d.sum() (a 0-dim one: its blocks summed)."""
        for name, d in zip(self.cls.EXTRAS, dextras):
            i = self.cls.REC_PARAMS.index(name)
            if self.P[i] is None:  # a parameter the cell doesn't have (None, as an absent bias): no gradient
                continue
            v = self.env[d]
            want = "sum" if self.P[i].dim() == 0 else "sum0"
            if v.kind != want:
                how = "d.sum()" if want == "sum" else "d.sum(0)"
                raise Untraceable(f"{self.where}'s gradient of {name} is not {how} of a row value d, the one form "
                                  "of an EXTRAS gradient the native loop sums; it runs on the python loop")  # fmt: skip
            yield i, [" + ".join(v.blocks)] if want == "sum" else v.blocks

    # -- bookkeeping --

    def begin(self, where):
        self.where, self.lines, self.ins, self.count, self.memo = where, [], set(), 0, {}

    def load(self, kind, i, node):
        """The blocks of input pointer i, loaded at unit j (a 0-dim parameter: its one value)."""
        self.ins.add(i)
        if kind == "scalar":
            return Val("scalar", [f"in{i}[0]"])
        return Val(kind, [self.let(f"in{i}[{k} * H + j]") for k in range(self.width(node))])

    def bind_params(self, phs, base):
        """Placeholders of the present parameters; returns {node: index in REC_PARAMS}."""
        present = [i for i, p in enumerate(self.P) if p is not None]
        found = {}
        for nd, i in zip(phs, present):
            found[nd] = i
            p = self.P[i]
            if i == self.u:
                self.env[nd] = Val("U", [])
            # (one of (1,) or (H + 1,): said naming it, where width() named the trace's placeholder, arg3_1)
            elif p.dim() > 0 and (p.shape[:-1].numel() != 1 or p.shape[-1] % self.H):
                raise Untraceable(f"{self.where} takes {self.cls.REC_PARAMS[i]} of shape {tuple(p.shape)}, not a "
                                  f"vector of units (or a scalar) beside its one recurrent matrix, {FALLBACK}")  # fmt: skip
            else:
                self.env[nd] = self.load("scalar" if self.P[i].dim() == 0 else "unit", base + i, nd)
        return found

    def said(self, a):
        """A marked value in words: "the recurrent matrix W_hh", "a sum over rows (sum_1)"."""
        v = self.env[a]
        return (
            f"the recurrent matrix {self.U_name}"
            if v.kind in ("U", "Ut")
            else f"{_MARKERS[v.kind]} ({a.name})"
        )

    def let(self, expr, boolean=False):
        """A local holding expr (one block of one value), named in order; an expr already held is that local (the
        same value computed twice, `u = r * h` returned while the product read `(r * h) @ W.t()`, is one value)."""
        name = self.memo.get((expr, boolean))
        if name is None:
            self.count += 1
            self.lines.append(f"const {'bool' if boolean else 'T'} v{self.count} = {expr};")
            name = self.memo[expr, boolean] = f"v{self.count}"
        return name

    def width(self, node):
        """Blocks of H in a tensor value (1 for a 0-dim one); refuses other shapes."""
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise Untraceable(f"{self.where} computes {node.name}, not a tensor, {FALLBACK}")
        if val.dim() == 0:
            return 1
        w = val.shape[-1]
        if val.dim() > 2 or w % self.H:
            raise Untraceable(f"{self.where} makes a tensor of shape {tuple(val.shape)} ({node.name}), not rows "
                              f"of a multiple of H = {self.H} units, {FALLBACK}")  # fmt: skip
        return w // self.H

    def store(self, o, node):
        """out[o] = the value of node, in as many blocks as its tensor has."""
        return o, self.arg(node, self.width(node), "an output"), "="

    def finish(self, stores):
        """The loop body: every load and statement, then every store (after all loads: out may alias in)."""
        body = list(self.lines)
        for o, blocks, how in stores:
            body += [f"out{o}[{k} * H + j] {how} {b};" for k, b in enumerate(blocks)]
        return sorted(self.ins), sorted({o for o, _, _ in stores}), body

    # -- the walk --

    def walk(self, gm):
        """Every node's Val, in graph order; returns the output nodes."""
        for nd in gm.graph.nodes:
            if nd.op == "output":
                return _outputs(gm)
            if nd.op == "placeholder":
                continue
            if nd.op == "get_attr":
                t = getattr(gm, nd.target)
                if not isinstance(t, torch.Tensor) or t.numel() != 1:
                    raise Untraceable(f"{self.where} uses a constant of many values ({nd.name}), {FALLBACK}")
                self.env[nd] = Val("scalar", [_literal(t.item())], t.dtype == torch.bool)
                continue
            if nd.target is operator.getitem:
                self.env[nd] = self.env[nd.args[0]].blocks[nd.args[1]]
                continue
            if not isinstance(nd.target, torch._ops.OpOverload):
                raise Untraceable(f"{self.where} calls {nd.target}, {FALLBACK}")
            self.env[nd] = self.op(nd)

    def arg(self, a, n, user):
        """a (a node or a Python number) as n blocks; None for anything else."""
        if not isinstance(a, torch.fx.Node):
            return [_literal(a)] * n if isinstance(a, int | float) else None
        v = self.env[a]
        if v.kind in _MARKERS:
            raise Untraceable(f"{self.where} uses {self.said(a)} in {user}, {FALLBACK}")
        if len(v.blocks) == n:
            return v.blocks
        if v.kind == "scalar":
            return v.blocks * n
        raise Untraceable(f"{self.where} broadcasts {a.name} across blocks of units, {FALLBACK}")

    def op(self, nd):
        op, args = nd.target, nd.args
        packet, overload = op._overloadpacket.__name__, op._overloadname
        name = f"{packet}.{overload}"
        vals = [self.env[a] for a in nd.all_input_nodes]
        kinds = {v.kind for v in vals}
        kind = (
            "row" if "row" in kinds else "unit" if "unit" in kinds else "scalar"
        )  # what the result varies in
        if vals and vals[0].kind == "U" and _swaps(name, args):  # U.t(), U.T (a permute), U.transpose(0, 1)
            return Val("Ut", [])
        if name in ("mm.default", "addmm.default"):
            return self.gemm(nd, name)
        marked = [a for a in args[:2] if isinstance(a, torch.fx.Node) and self.env[a].kind in ("dU", "dprev")]
        if name == "add.Tensor" and len(marked) == 1 and nd.kwargs.get("alpha", 1) == 1:  # dpre U + the rest
            dU, other = marked[0], args[1] if args[0] is marked[0] else args[0]
            rest = self.arg(other, 1, "aten.add.Tensor")
            if self.env[dU].kind == "dprev":
                rest = [self.let(f"{self.env[dU].blocks[0]} + {rest[0]}")]
            return Val("dprev", rest, node=self.env[dU].node)
        # (keepdim or not: a (1, H) parameter's gradient is d.sum(0, keepdim=True), native.py reshapes it)
        if name == "sum.dim_IntList" and list(args[1]) in ([0], [-2]):
            if vals[0].kind == "row" and args[0].meta["val"].dim() == 2:
                return Val("sum0", vals[0].blocks)
        if name == "sum.default" and vals[0].kind == "row":
            return Val("sum", vals[0].blocks)
        if name in SAME and vals:
            return vals[0]
        for a in nd.all_input_nodes:  # the recurrent matrix, dpre U or a sum over rows, elsewhere
            if self.env[a].kind in _MARKERS:
                raise Untraceable(f"{self.where} uses {self.said(a)} in aten.{name}, {FALLBACK}")
        structural = self.structural(nd, name, vals, kind)
        if structural is not None:
            return structural
        if not _known(name):
            raise Untraceable(f"{self.where} uses aten.{name}{_why(packet, nd)}, {FALLBACK}")
        n = self.width(nd) if kind != "scalar" else 1
        dtype = nd.meta["val"].dtype
        boolean, narrow = dtype == torch.bool, dtype == torch.float32 and self.dtype == torch.float64
        ins = [self.arg(a, n, f"aten.{name}") for a in args]
        # float32 inside a float64 step (torch.where(c, 1.0, 0.1), x.float()): rounded as torch rounds it
        if narrow:
            ins = [x if x is None or isinstance(a, bool) or isinstance(a, torch.fx.Node) and self.env[a].boolean
                   else [f"T(float({e}))" for e in x] for a, x in zip(args, ins)]  # fmt: skip
        exprs = _pointwise(name, nd, ins)
        if exprs is None:
            raise Untraceable(f"{self.where} uses aten.{name} in a form the kernels don't know, {FALLBACK}")
        if not boolean and dtype not in (torch.float32, torch.float64):  # (bfloat16, float16: not rounded)
            raise Untraceable(f"{self.where} computes in {dtype} ({nd.name}), {FALLBACK}")
        # x.double() in a float32 run: the float kernels ran it in float ((x.double() + 1e8) - 1e8 read 0 where the
        # python loop gives x, in silence)
        if dtype == torch.float64 != self.dtype:
            raise Untraceable(
                f"{self.where} computes in torch.float64 ({nd.name}) in a float32 run, {FALLBACK}"
            )
        if narrow:
            exprs = [f"T(float({e}))" for e in exprs]
        return Val(kind, [self.let(e, boolean) for e in exprs], boolean)

    def gemm(self, nd, name):
        """The recurrent GEMM: h_{t-1} t(U) in step (pre, plus b for addmm), dpre U in step_backward."""
        a, b = nd.args[-2], nd.args[-1]
        kw = {k: v for k, v in nd.kwargs.items() if v != 1}
        if name == "mm.default" and self.env[b].kind == "U" and self.where.endswith("backward"):
            if self.env[a].kind == "row" and not kw:
                return Val("dU", [], node=a)
        if self.env[b].kind == "Ut" and a is self.h_prev and not kw and not self.where.endswith("backward"):
            self.ins.add(1)
            pre = [self.let(f"in1[{k} * H + j]") for k in range(self.Gp)]
            if name == "addmm.default":
                pre = [self.let(f"{c} + {p}") for c, p in zip(self.arg(nd.args[0], self.Gp, "addmm"), pre)]
            return Val("row", pre)
        raise Untraceable(f"{self.where} uses aten.{name} (a matrix product other than the recurrent GEMM "
                          f"{'dpre U' if self.where.endswith('backward') else 'h_{t-1} Uᵀ'}), {FALLBACK}")  # fmt: skip

    def structural(self, nd, name, vals, kind):
        """Ops that only pick or join blocks (no statement), or make constants; None for others."""
        args, H = nd.args, self.H
        if name in LITERAL_OPS or name == "full_like.default":
            fill, dtype = LITERAL_OPS.get(name, args[1] if len(args) > 1 else None), nd.meta["val"].dtype
            return Val(vals[0].kind, [_literal(_held(fill, dtype))] * self.width(nd), dtype == torch.bool)
        if name == "scalar_tensor.default":
            dtype = nd.meta["val"].dtype
            return Val("scalar", [_literal(_held(args[0], dtype))], dtype == torch.bool)
        if name in ("unsqueeze.default", "expand.default", "view.default", "_unsafe_view.default"):
            src, out = args[0].meta["val"], nd.meta["val"]
            same = src.shape == out.shape or name == "expand.default" or args[1] in (0, -out.dim())
            if same and vals[0].kind != "scalar" and out.dim() <= 2 and src.shape[-1] == out.shape[-1]:
                return vals[0]  # the same units: a vector as rows, or a view that changes nothing
            return None
        if name in ("slice.Tensor", "split.Tensor", "split_with_sizes.default", "cat.default"):
            at = 2 if name.startswith("split") else 1
            dim = args[at] if len(args) > at else 0
            src = (args[0][0] if name == "cat.default" else args[0]).meta["val"]
            if dim not in (src.dim() - 1, -1):
                if name == "slice.Tensor" and args[2] == 0 and args[3] >= src.shape[dim]:  # (x[:, ...])
                    return vals[0]
                raise Untraceable(f"{self.where} picks or joins rows ({nd.name}), {FALLBACK}")
            if name == "cat.default":
                return Val(kind, [b for a in args[0] for b in self.env[a].blocks], vals[0].boolean)
            w = src.shape[-1]
            if name == "slice.Tensor":
                start, end = (args[2] if len(args) > 2 else 0), (args[3] if len(args) > 3 else w)
                start, end = [min(max(x + w if x < 0 else x, 0), w) for x in (start, end)]
                if (len(args) > 4 and args[4] != 1) or start % H or end % H:
                    raise Untraceable(f"{self.where} slices units {start}:{end} ({nd.name}), not whole blocks of "
                                      f"H = {H}, {FALLBACK}")  # fmt: skip
                return Val(vals[0].kind, vals[0].blocks[start // H : end // H], vals[0].boolean)
            sizes = [args[1]] * -(-w // args[1]) if name == "split.Tensor" else list(args[1])
            if name == "split.Tensor":
                sizes[-1] = w - args[1] * (len(sizes) - 1)
            if any(s % H for s in sizes):
                raise Untraceable(
                    f"{self.where} splits into widths {sizes}, not blocks of H = {H}, {FALLBACK}"
                )
            edges = [sum(sizes[:i]) // H for i in range(len(sizes) + 1)]
            v = vals[0]
            return Val("list", [Val(v.kind, v.blocks[a:b], v.boolean) for a, b in zip(edges, edges[1:])])
        return None


# --- v2: cells of several dependent recurrent products (gru_cho, mut1-3) --------------------------------

_VAR = re.compile(r"\bv(\d+)\b")
_PTR = re.compile(r"\b(in|out)(\d+)\[")


class _Staged(_Analysis):
    """The analysis of a cell of several GEMMS entries: every statement gets a stage, the number of recurrent
    products its value waits for (a GEMM's result is one stage past its operand), and the step is cut into one
    kernel per stage, the engine's GEMMs between them. A value a later kernel needs is read from where an
    earlier one stored it (a cache buffer, dxw, dhw), else computed again (pointwise, cheap)."""

    def __init__(self, cls, H, P):
        self.cls, self.H, self.P = cls, H, P
        if len(cls.GEMMS) > 3:
            raise Untraceable(f"{cls.__name__} has {len(cls.GEMMS)} GEMMS entries, and the native loop runs a cell "
                              "of one's own with at most 3 recurrent products; it runs on the python loop")  # fmt: skip
        self.gemms = []  # (U's index in P, its bias's or -1, blocks of H in its pre row)
        for U_name, b in cls.GEMMS:
            u = cls.REC_PARAMS.index(U_name)
            U = P[u]
            if U is None or U.dim() != 2 or U.shape[1] != H or U.shape[0] % H:
                got = "None" if U is None else f"of shape {tuple(U.shape)}"
                raise Untraceable(f"{cls.__name__}'s {U_name} is {got}, not (k·H, H) with H = {H}, a matrix the "
                                  "native loop multiplies a row of H units by; it runs on the python loop")  # fmt: skip
            if u >= 4:
                raise Untraceable(f"{cls.__name__}'s {U_name} is REC_PARAMS[{u}], and the native loop takes the "
                                  "recurrent matrices among the first 4 parameters; it runs on the python loop")  # fmt: skip
            bi = -1 if b is None or P[cls.REC_PARAMS.index(b)] is None else cls.REC_PARAMS.index(b)
            self.gemms.append((u, bi, U.shape[0] // H))
        if len({g[0] for g in self.gemms}) < len(self.gemms):
            raise Untraceable(f"{cls.__name__}'s GEMMS name one matrix twice, {FALLBACK}")
        biases = [g[1] for g in self.gemms if g[1] >= 0]
        if len(set(biases)) < len(biases):  # (the engine's db_k = Σ dpre_k would keep one entry's sum)
            raise Untraceable(f"{cls.__name__}'s GEMMS name one bias twice, {FALLBACK}")
        self.dtype = P[self.gemms[0][0]].dtype
        self.U_name = cls.GEMMS[0][0]

    # -- bookkeeping: every statement with its stage and the statements it reads --

    def begin(self, where):
        super().begin(where)
        self.defs, self.stage, self.bools = {}, {}, set()

    def let(self, expr, boolean=False, stage=None):
        held = self.memo.get((expr, boolean))
        if held is not None and (stage is None or self.stage[held] == stage):
            return held
        if held is not None:  # (the same text at another stage: a local of its own)
            del self.memo[expr, boolean]
        name = super().let(expr, boolean)
        deps = [f"v{d}" for d in _VAR.findall(expr)]
        self.defs[name] = (self.lines[-1], deps)
        self.stage[name] = self.stage_of(expr) if stage is None else stage
        if boolean:
            self.bools.add(name)
        return name

    def stage_of(self, expr):
        return max((self.stage[f"v{d}"] for d in _VAR.findall(expr)), default=0)

    def said(self, a):
        v = self.env[a]
        if v.kind in ("U", "Ut"):
            return f"the recurrent matrix {self.cls.GEMMS[v.node][0]}"
        return super().said(a)

    def bind_params(self, phs, base):
        found = {}
        mats = {g[0]: k for k, g in enumerate(self.gemms)}
        present = [i for i, p in enumerate(self.P) if p is not None]
        for nd, i in zip(phs, present):
            found[nd] = i
            p = self.P[i]
            if i in mats:
                self.env[nd] = Val("U", [], node=mats[i])
            # (one of (1,) or (H + 1,): said naming it, where width() named the trace's placeholder, arg3_1)
            elif p.dim() > 0 and (p.shape[:-1].numel() != 1 or p.shape[-1] % self.H):
                raise Untraceable(f"{self.where} takes {self.cls.REC_PARAMS[i]} of shape {tuple(p.shape)}, not a "
                                  f"vector of units (or a scalar) beside its recurrent matrices, {FALLBACK}")  # fmt: skip
            else:
                self.env[nd] = self.load("scalar" if p.dim() == 0 else "unit", base + i, nd)
        return found

    # -- the walk: GEMMs as stage boundaries --

    def op(self, nd):
        name = f"{nd.target._overloadpacket.__name__}.{nd.target._overloadname}"
        vals = [self.env[a] for a in nd.all_input_nodes]
        if vals and vals[0].kind == "U" and _swaps(name, nd.args):
            return Val("Ut", [], node=vals[0].node)
        if name in ("mm.default", "addmm.default"):
            return self.gemm(nd, name)
        pair = [a for a in nd.args[:2]]
        marked = [a for a in pair if isinstance(a, torch.fx.Node) and self.env[a].kind in ("dU", "dprev")]
        if name == "add.Tensor" and marked and nd.kwargs.get("alpha", 1) == 1:  # dpre U + the rest
            terms, rest = [], []
            for a in pair:
                if a in marked:
                    terms += self.env[a].node
                    rest += self.env[a].blocks
                else:
                    rest += self.arg(a, 1, "aten.add.Tensor")
            if len(rest) > 1:
                rest = [self.let(" + ".join(rest))]
            return Val("dprev", rest, node=terms)
        return super().op(nd)

    def gemm(self, nd, name):
        """Forward: u U_kᵀ (+ b_k for addmm), read from the engine's GEMM; backward: dpre_k U_k, read from the
        engine's GEMM where pointwise math uses it, or left to the GEMM that adds into dh_prev (terminal)."""
        a, b = nd.args[-2], nd.args[-1]
        kw = {k: v for k, v in nd.kwargs.items() if v != 1}
        va, vb = self.env[a], self.env[b]
        back = self.where.endswith("backward")
        one = not kw and va.kind == "row" and len(va.blocks) == 1
        if back and name == "mm.default" and vb.kind == "U" and vb.node not in self.ops and not kw \
                and va.kind == "row" and len(va.blocks) == self.gemms[vb.node][2]:  # fmt: skip
            g = vb.node
            self.ops[g] = a
            if nd in self.terminal:
                return Val("dU", [], node=[g])
            st = self.gstage[g] = 1 + max(self.stage_of(e) for e in va.blocks)
            return Val("row", [self.let(f"in{self.res_ptr + g}[j]", stage=st)])
        if not back and vb.kind == "Ut" and one and vb.node not in self.ops:
            g = vb.node
            self.ops[g] = a
            st = self.gstage[g] = 1 + self.stage_of(va.blocks[0])
            pre = [self.let(f"in{self.res_ptr + g}[{k} * H + j]", stage=st) for k in range(self.gemms[g][2])]
            if name == "addmm.default":
                pre = [self.let(f"{c} + {p}") for c, p in zip(self.arg(nd.args[0], len(pre), "addmm"), pre)]
            return Val("row", pre)
        what = "dpre_k U_k" if back else "u_k U_kᵀ"
        raise Untraceable(f"{self.where} uses aten.{name} (a matrix product other than the recurrent GEMMs {what}, "
                          f"each once, on a row of H units), {FALLBACK}")  # fmt: skip

    # -- cutting into kernels --

    def kernels(self, stores, last, needed):
        """stores: (out pointer, block, expression, how, final, loadable); each goes into the first needed
        kernel at or after its stage (final ones into the last). Returns one (ins, outs, body) per kernel, None
        for a kernel with nothing to do."""
        placed = {s: [] for s in range(last + 1)}
        for st in stores:
            s = last if st[4] else min(k for k in needed if k >= min(self.stage_of(st[2]), last))
            placed[s].append(st)
        out, stored = [], {}
        for s in range(last + 1):
            if s not in needed:
                out.append(None)
                continue
            need, todo = set(), [v for st in placed[s] for v in (f"v{d}" for d in _VAR.findall(st[2]))]
            while todo:
                v = todo.pop()
                if v in need:
                    continue
                need.add(v)
                if v not in stored:
                    todo += self.defs[v][1]
            body = [f"const T {v} = {stored[v]};" if v in stored else self.defs[v][0]
                    for v in sorted(need, key=lambda v: int(v[1:]))]  # fmt: skip
            body += [f"out{o}[{k} * H + j] {how} {e};" for o, k, e, how, _, _ in placed[s]]
            for o, k, e, how, _, loadable in placed[s]:
                if loadable and how == "=" and _VAR.fullmatch(e) and e not in self.bools:
                    stored.setdefault(e, f"out{o}[{k} * H + j]")
            text = "\n".join(body)
            ins = sorted({int(i) for w, i in _PTR.findall(text) if w == "in"})
            outs = sorted({int(i) for w, i in _PTR.findall(text) if w == "out"})
            out.append((ins, outs, body))
        return out

    def run(self, fwd, bwd, cache):
        fwd_kernels, slots, bufs, srcs = self.forward(fwd)
        bwd_kernels, places, dhw_blocks, extras = self.backward(bwd, len(cache), slots, len(bufs))
        gemms = tuple((u, b, gp, srcs[g], self.fstage[g], self.bstage.get(g, -2), *places[g])
                      for g, (u, b, gp) in enumerate(self.gemms))  # fmt: skip
        layout = dict(n_states=self.cls.num_states, G=self.cls.gates, cache_blocks=tuple(bufs), extras=tuple(extras),
                      gemms=gemms, dhw_blocks=dhw_blocks, n_fwd=len(fwd_kernels), n_bwd=len(bwd_kernels))  # fmt: skip
        return _emit_staged(fwd_kernels, bwd_kernels), layout

    def forward(self, gm):
        """in = [xw, state..., P..., pre_0 ..]; out = [state_t..., buffers...]: the cache buffers and the GEMMs'
        operands other than h_{t-1} (kept per step: dU_k = Σ dpre_kᵀ u_k)."""
        cls, n, G = self.cls, self.cls.num_states, len(self.gemms)
        self.begin(f"{cls.__name__}.step")
        self.ops, self.gstage = {}, {}
        phs = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
        self.res_ptr = 1 + n + len(self.P)
        self.env = {phs[0]: self.load("row", 0, phs[0])}
        self.env.update({phs[1 + s]: self.load("row", 1 + s, phs[1 + s]) for s in range(n)})
        self.h_prev = phs[1]
        params = self.bind_params(phs[1 + n :], 1 + n)
        outs = self.walk(gm)
        news, us, cache = outs[:n], outs[n : n + G], outs[n + G :]
        for g in range(G):
            U = cls.GEMMS[g][0]
            if g not in self.ops:
                raise Untraceable(f"{self.where} never multiplies by {U}ᵀ, {FALLBACK}")
            if us[g] is not self.ops[g] and self.env[us[g]].blocks != self.env[self.ops[g]].blocks:
                raise Untraceable(
                    f"{self.where}'s us[{g}] is not the vector it multiplies by {U}ᵀ, {FALLBACK}"
                )
        self.fstage = dict(self.gstage)
        bufs, index, stores = [], {}, []

        def buffer(node):
            if node not in index:
                index[node] = len(bufs)
                bufs.append(self.width(node))
                blocks = self.arg(node, bufs[-1], "an output")
                stores.extend((n + index[node], k, e, "=", False, True) for k, e in enumerate(blocks))
            return index[node]

        srcs, needed = [], {max(self.fstage.values())}
        for g in range(G):
            a = self.ops[g]
            if a is self.h_prev:
                srcs.append(-1)
            elif a in phs:
                raise Untraceable(f"{self.where} multiplies {a.name} by {cls.GEMMS[g][0]}ᵀ, and the native loop "
                                  f"multiplies h_{{t-1}} or a value the step computes, {FALLBACK}")  # fmt: skip
            else:
                srcs.append(buffer(a))
                needed.add(self.fstage[g] - 1)
        states, slots = {phs[1 + s]: s for s in range(n)}, {}
        for i, c in enumerate(cache):
            if c in params:
                slots[i] = ("param", params[c])
            elif c in states:
                slots[i] = ("state", states[c])
            else:
                slots[i] = ("buf", buffer(c))
        for s in range(n):
            stores += [(s, k, e, "=", True, False) for k, e in enumerate(self.arg(news[s], 1, "an output"))]
        kernels = self.kernels(stores, max(self.fstage.values()), needed)
        return kernels, slots, bufs, srcs

    def backward(self, gm, m, slots, n_bufs):
        """in = [dstate..., buffers..., P..., state..., dpre_k U_k of the GEMMs read pointwise]; out = [dxw, dhw,
        dstate_prev[0] less its terminal dpre U terms, (dstate_prev[1]), accumulators...]."""
        cls, n, G = self.cls, self.cls.num_states, len(self.gemms)
        self.begin(f"{cls.__name__}.step_backward")
        self.ops, self.gstage = {}, {}
        phs = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
        outs = _outputs(gm)
        dxw, dprev, dpres, dextras = outs[0], outs[1 : 1 + n], outs[1 + n : 1 + n + G], outs[1 + n + G :]

        def terminal(nd):  # a product that only adds into dstate_prev[0], once (p + p: the GEMM adds p once)
            users = list(nd.users)
            if len(users) != 1:
                return False
            u = users[0]
            if u.op == "output":
                return nd is dprev[0] and sum(o is nd for o in outs) == 1
            add = u.target is torch.ops.aten.add.Tensor and u.kwargs.get("alpha", 1) == 1
            return add and list(u.args[:2]).count(nd) == 1 and terminal(u)

        self.terminal = {nd for nd in gm.graph.nodes if nd.op == "call_function" and terminal(nd)}
        self.res_ptr = n + n_bufs + len(self.P) + n
        self.env = {phs[s]: self.load("row", s, phs[s]) for s in range(n)}
        by_index = {i: nd for nd, i in self.bind_params(phs[n + m :], n + n_bufs).items()}
        for i, (kind, k) in slots.items():
            ph = phs[n + i]
            if kind == "param":
                self.env[ph] = self.env[by_index[k]]
            else:
                self.env[ph] = self.load("row", n + k if kind == "buf" else n + n_bufs + len(self.P) + k, ph)
        self.walk(gm)
        self.bstage = dict(self.gstage)
        v_dxw = self.arg(dxw, self.cls.gates, "dxw")
        h_term = self.env[dprev[0]]
        terms = h_term.node if h_term.kind in ("dU", "dprev") else []
        direct = h_term.blocks if h_term.kind in ("dU", "dprev") else self.arg(dprev[0], 1, "dstate_prev[0]")
        places, dhw, stores = [], 0, []
        for g, (_, _, gp) in enumerate(self.gemms):
            blocks = self.arg(dpres[g], gp, f"dpres[{g}]")
            if g in self.ops and self.env[self.ops[g]].blocks != blocks:
                raise Untraceable(f"{self.where} multiplies a value other than dpres[{g}] by {cls.GEMMS[g][0]}, "
                                  f"{FALLBACK}")  # fmt: skip
            col = next((c for c in range(len(v_dxw) - gp + 1) if v_dxw[c : c + gp] == blocks), None)
            if col is None:
                places.append((1, dhw))
                stores += [(1, dhw + k, e, "=", False, True) for k, e in enumerate(blocks)]
                dhw += gp
            else:
                places.append((0, col))
        stores = [(0, k, e, "=", False, True) for k, e in enumerate(v_dxw)] + stores
        stores.append((2, 0, direct[0] if direct else "T(0)", "=", True, False))
        for s in range(1, n):
            stores += [
                (2 + s, k, e, "=", True, False) for k, e in enumerate(self.arg(dprev[s], 1, "an output"))
            ]
        extras = []
        for e, (i, acc) in enumerate(self.extras_summed(dextras)):
            stores += [(2 + n + e, k, x, "+=", False, False) for k, x in enumerate(acc)]
            extras.append((i, len(acc)))
        last = max(self.bstage.values(), default=0)
        needed = {last} | {s - 1 for s in self.bstage.values()}
        for g in terms:
            self.bstage[g] = -1
        return self.kernels(stores, last, needed), places, dhw, extras


def _swaps(name, args):
    """Whether the op transposes a matrix: t, permute (1, 0), transpose (0, 1)."""
    if name == "permute.default":
        return [d % 2 for d in args[1]] == [1, 0]
    return name == "t.default" or name == "transpose.int" and {args[1] % 2, args[2] % 2} == {0, 1}


def _outputs(gm):
    """The nodes a traced function returned, flat (see the wrappers in _trace_and_compile)."""
    return list(next(nd for nd in gm.graph.nodes if nd.op == "output").args[0])


_MARKERS = {"list": "a split's list", "U": "the recurrent matrix", "Ut": "the recurrent matrix",
            "dU": "dpre U", "dprev": "dstate_prev[0]", "sum0": "a sum over rows", "sum": "a full sum"}  # fmt: skip


def _literal(x):
    """A Python number as a C++ constant of type T (or bool)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float) and not math.isfinite(x):
        return "T(NAN)" if math.isnan(x) else ("T(INFINITY)" if x > 0 else "T(-INFINITY)")
    if not isinstance(x, int | float):
        raise Untraceable(f"a constant {x!r} the native loop can't hold, {FALLBACK}")
    return f"T({x!r})"


def _held(x, dtype):
    """A Python number as a tensor of dtype holds it: full_like(x, 0.1, dtype=torch.float32) in a float64 step is
    0.1 rounded to float32, and 2.7 is 2 in an integer one (the kernels held 0.1 and 2.7: the step's numbers 1e-9 or
    wholly off)."""
    if not isinstance(x, int | float):
        return x
    try:
        return torch.tensor(x, dtype=dtype).item()
    except (RuntimeError, TypeError, ValueError, OverflowError):  # (NaN as an integer, say: kept as given)
        return x


def _pow(a, e):
    """x ** e for a Python exponent, as products where torch's result is exact; ** 0.5 and ** -0.5 as torch's sqrt
    and rsqrt (-inf ** -0.5 is NaN and -0.0 ** -0.5 is -inf in torch, 0 and inf by std::pow); ** -2 as torch's
    1 / (x x) (1e20 ** -2 is 0 in float32 there, x x overflowing; std::pow gave the denormal 1e-40, and 1 ulp
    off a quarter of the time)."""
    return {2: f"{a} * {a}", 3: f"{a} * {a} * {a}", 1: a, 0.5: f"std::sqrt({a})", -0.5: f"T(1) / std::sqrt({a})",
            -1: f"T(1) / {a}", -2: f"T(1) / ({a} * {a})"}.get(e, f"std::pow({a}, T({e!r}))")  # fmt: skip


UNARY = {
    "neg": "-{0}", "sigmoid": "rnnkit::sigmoid({0})", "tanh": "rnnkit::tanh_({0})", "relu": "t_relu({0})",
    "exp": "t_exp({0})", "log": "t_log({0})", "sqrt": "std::sqrt({0})", "rsqrt": "T(1) / std::sqrt({0})",
    "reciprocal": "T(1) / {0}", "abs": "std::abs({0})", "logical_not": "!{0}", "bitwise_not": "!{0}",
}  # fmt: skip
BINARY = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "rsub": "{1} - {0}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "gt": "{0} > {1}", "lt": "{0} < {1}", "ge": "{0} >= {1}", "le": "{0} <= {1}", "eq": "{0} == {1}",
    "ne": "{0} != {1}", "minimum": "t_min({0}, {1})", "maximum": "t_max({0}, {1})",
    "logical_and": "{0} && {1}", "logical_or": "{0} || {1}", "bitwise_and": "{0} && {1}",
    "bitwise_or": "{0} || {1}", "sigmoid_backward": "{0} * (T(1) - {1}) * {1}",
    "tanh_backward": "{0} * (T(1) - {1} * {1})", "clamp_min": "t_lo({0}, {1})",
    "clamp_max": "t_hi({0}, {1})",
}  # fmt: skip
SPECIAL = {"pow.Tensor_Scalar", "where.self", "threshold_backward.default", "clamp.default", "clamp.Tensor",
           "_to_copy.default"}  # fmt: skip


def _known(name):
    """Whether name is a pointwise op the kernels can write."""
    packet, overload = name.split(".")
    plain = overload in ("default", "Tensor", "Scalar")
    return name in SPECIAL or plain and (packet in UNARY or packet in BINARY)


def _pointwise(name, nd, args):
    """The C expressions of a pointwise op, one per block; None if the op is not one the kernels know."""
    alpha = nd.kwargs.get("alpha", nd.args[2] if name.startswith("rsub") and len(nd.args) > 2 else 1)
    if alpha != 1 and name.split(".")[0] in ("add", "sub", "rsub"):
        if isinstance(alpha, torch.fx.Node):
            return None
        scaled = 0 if name.startswith("rsub") else 1  # rsub(x, y, alpha) = y - alpha x
        args = list(args[:2])
        args[scaled] = [f"{_literal(alpha)} * {b}" for b in args[scaled]]
    packet, overload = name.split(".")
    if overload in ("default", "Tensor", "Scalar") and packet in UNARY and len(args) == 1:
        return [UNARY[packet].format(a) for a in args[0]]
    if overload in ("default", "Tensor", "Scalar") and packet in BINARY and len(args) >= 2:
        if packet in ("bitwise_and", "bitwise_or") and nd.meta["val"].dtype != torch.bool:
            return None
        return [f"({BINARY[packet].format(a, b)})" for a, b in zip(args[0], args[1])]
    if name == "pow.Tensor_Scalar" and isinstance(nd.args[1], int | float):
        return [f"({_pow(a, nd.args[1])})" for a in args[0]]
    if name == "where.self":
        return [f"({c} ? {a} : {b})" for c, a, b in zip(*args[:3])]
    if name == "threshold_backward.default":
        return [f"({x} <= {t} ? T(0) : {g})" for g, x, t in zip(*args[:3])]
    if name in ("clamp.default", "clamp.Tensor"):
        lo, hi = (args + [None, None])[1:3]
        out = args[0]
        if lo is not None:
            out = [f"t_lo({a}, {b})" for a, b in zip(out, lo)]
        if hi is not None:
            out = [f"t_hi({a}, {b})" for a, b in zip(out, hi)]
        return out
    if name == "_to_copy.default" and set(nd.kwargs) <= {"dtype", "layout", "device"}:
        src, dst = nd.args[0].meta["val"].dtype, nd.meta["val"].dtype
        if src == torch.bool or src.is_floating_point and (dst == torch.bool or dst.is_floating_point):
            cast = "T({0})" if src == torch.bool else "({0} != T(0))" if dst == torch.bool else "{0}"
            return [cast.format(a) for a in args[0]]
    return None


# --- emit ---------------------------------------------------------------------------------------------

PREAMBLE = """#include "fastmath.h"
// Generated by rnnkit.engine.traced from a cell's step and step_backward: one batch row, units [j0, j1).
#include <cmath>
#include <cstdint>

namespace {
// fexp saturates past [-87.3, 88.3] (0 and inf, for a saturated sigmoid), where expf still gives 2.7e38 at 88.5
// and denormals down to -103.9: squared from x / 2, exp is torch's over the whole range (a few ulp).
inline float t_exp(float x) {
  const float h = rnnkit::fexp(0.5f * x);
  return x != x ? x : h * h;
}
inline double t_exp(double x) { return std::exp(x); }
inline float t_log(float x) { return rnnkit::flog(x); }  // (vectorised; std::log ran one value at a time)
inline double t_log(double x) { return std::log(x); }
template <class T> inline T t_relu(T x) { return x < T(0) ? T(0) : x; }
template <class T> inline T t_min(T a, T b) { return a != a || b != b ? a + b : (a < b ? a : b); }
template <class T> inline T t_max(T a, T b) { return a != a || b != b ? a + b : (a > b ? a : b); }
// clamp's bounds: a NaN bound gives NaN, as torch's clamp, clamp_min and clamp_max do (not x unclamped)
template <class T> inline T t_lo(T a, T lo) { return lo != lo ? lo : (a < lo ? lo : a); }
template <class T> inline T t_hi(T a, T hi) { return hi != hi ? hi : (a > hi ? hi : a); }
"""


def _kernel(name, ins, outs, body):
    """One templated loop over the units of a row; every input of unit j is read before any output is written."""
    lines = [
        f"template <class T>\nvoid {name}(const T* const* in, T* const* out, int64_t H, int64_t j0, int64_t j1) {{"
    ]
    lines += [f"  const T* in{i} = in[{i}];" for i in ins] + [f"  T* out{o} = out[{o}];" for o in outs]
    lines += ["  (void)H;", "  RNNKIT_SIMD", "  for (int64_t j = j0; j < j1; ++j) {"]
    lines += [f"    {s}" for s in body] + ["  }", "}"]
    return "\n".join(lines)


def _emit(fwd, bwd):
    """The source: the two kernels as templates, and their four extern "C" entry points."""
    parts = [PREAMBLE, _kernel("fwd", *fwd), "", _kernel("bwd", *bwd), "}  // namespace", ""]
    for kind in ("fwd", "bwd"):
        for T, sfx in (("float", "f32"), ("double", "f64")):
            parts.append(f'extern "C" void rnnkit_traced_{kind}_{sfx}(const {T}* const* in, {T}* const* out, '
                         f"int64_t H, int64_t j0, int64_t j1) {{ {kind}<{T}>(in, out, H, j0, j1); }}")  # fmt: skip
    return "\n".join(parts) + "\n"


def _emit_staged(fwd, bwd):
    """The source of a staged cell: one templated kernel per stage and its two extern "C" entry points."""
    parts, entries = [PREAMBLE], []
    for kind, kernels in (("fwd", fwd), ("bwd", bwd)):
        for s, k in enumerate(kernels):
            if k is None:
                continue
            parts += [_kernel(f"{kind}{s}", *k), ""]
            for T, sfx in (("float", "f32"), ("double", "f64")):
                entries.append(f'extern "C" void rnnkit_traced_{kind}{s}_{sfx}(const {T}* const* in, {T}* const* '
                               f"out, int64_t H, int64_t j0, int64_t j1) {{ {kind}{s}<{T}>(in, out, H, j0, j1); }}")  # fmt: skip
    return "\n".join([*parts, "}  // namespace", "", *entries]) + "\n"


# --- compile and load ---------------------------------------------------------------------------------


def compile_flags():
    """The compiler and its flags: the native engine's (fast math without errno, the CPU's vector width)."""
    from rnnkit._native_build import vector_flags
    from rnnkit.engine.native import CSRC

    base = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-shared", "-fPIC", "-std=c++17"]
    return os.environ.get("CXX", "c++"), [*vector_flags("x", base)[1], f"-I{CSRC}"]


def _compile_and_load(kernels, name):
    """The kernels compiled (once: cached on disk by a hash of source, flags and compiler) and loaded."""
    source, layout = kernels
    fns = _load_symbols(
        source, name, [f"rnnkit_traced_{k}_{s}" for k in ("fwd", "bwd") for s in ("f32", "f64")]
    )
    return Traced(source=source, **layout, **{k[len("rnnkit_traced_") :]: v for k, v in fns.items()})


def _load_symbols(source, name, symbols):
    """{symbol: its address} of those of symbols the source defines, compiled and loaded (see _compile_and_load)."""
    from rnnkit.engine.native import CSRC

    cxx, flags = compile_flags()
    digest = hashlib.sha256("\0".join([source, *flags, cxx]).encode())
    # and the headers it includes (fastmath.h): those of a later rnnkit compile it again
    for header in sorted(CSRC.glob("*.h")):
        digest.update(b"\0" + header.read_bytes())
    digest = digest.hexdigest()[:20]
    try:
        stem = f"traced_{digest}"
        so = _compiled(source, cxx, flags, stem, name)
    except OSError as e:  # (no such compiler, a build folder that can't be written)
        compiler = e.filename in (None, cxx, *(_cxx_command() or [])[:1])
        if compiler and (line := cxx_line_fix()):  # CXX='g++ -w': the engine's build says the same
            raise Untraceable(
                f"{name}'s kernels can't be compiled: {line}; it runs on the python loop"
            ) from None
        what = f"no C++ compiler {cxx!r}" if compiler else f"{e.filename!r}"
        fix = "" if compiler else "; set TORCH_EXTENSIONS_DIR to a writable folder"  # (a read-only cache)
        if not compiler and (link := _dangling_link(e.filename)):  # (File exists: a writable folder, said so)
            fix = (f"; {link} is a link to {os.readlink(link)}, which is not there: create that folder or set "
                   "TORCH_EXTENSIONS_DIR to another")  # fmt: skip
        raise Untraceable(f"{name}'s kernels can't be compiled: {what} ({e.strerror}){fix}; it runs on the python "
                          "loop") from None  # fmt: skip
    try:
        lib = _libs.get(so) or _libs.setdefault(
            so, _load_library(so, lambda: _compiled(source, cxx, flags, stem, name))
        )
    except OSError as e:  # a damaged library that can't be removed (a read-only or shared cache)
        raise Untraceable(f"{name}'s kernels in {so} don't load and can't be built again there "
                          f"({e.strerror or e}); set TORCH_EXTENSIONS_DIR to a writable folder that libraries load from (not "
                          "mounted noexec); it runs on the python loop") from None  # fmt: skip
    return {s: ctypes.cast(getattr(lib, s), ctypes.c_void_p).value for s in symbols if f" {s}(" in source}


def _load_library(so, rebuild):
    """ctypes' handle of the library at so; one that doesn't load (a copy cut short, a disk error: the cache is
    written by rename, whole or not at all) is removed and built again, once."""
    try:
        if not _whole_elf(
            so
        ):  # (CDLL maps it as its header says, and reading past the end killed the process)
            raise OSError(f"{so} is cut short")
        return ctypes.CDLL(so)
    except OSError:
        os.remove(so)
        return ctypes.CDLL(rebuild())


def _whole_elf(path) -> bool:
    """Whether the file at path holds every part of it that its ELF header names (its loaded segments and its
    section table): a library cut short (a full disk, a cache copied in part) loaded by CDLL died of SIGBUS ("Fatal
    Python error: Bus error") where an OSError would have rebuilt it. Not an ELF64 file (another platform's, or no
    library at all): True, CDLL says."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(64)
            if head[:4] != b"\x7fELF" or (len(head) > 5 and (head[4] != 2 or head[5] not in (1, 2))):
                return True  # (a 32-bit platform's ELF32 was taken for a cut ELF64: rebuilt at every load)
            if len(head) < 64:  # an ELF header cut short is no whole library
                return False
            end = "<" if head[5] == 1 else ">"
            phoff, shoff = struct.unpack(end + "QQ", head[32:48])
            phentsize, phnum, shentsize, shnum = struct.unpack(end + "HHHH", head[54:62])
            if phoff + phnum * phentsize > size or shoff + shnum * shentsize > size:
                return False
            f.seek(phoff)
            table = f.read(phnum * phentsize)
    except OSError:
        return True  # unreadable: CDLL's own error
    for k in range(phnum):  # Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(end + "IIQQQQ", table, k * phentsize)
        if p_type == 1 and p_offset + p_filesz > size:  # PT_LOAD
            return False
    return True


def _compiled(source, cxx, flags, stem, name):
    """Path of the .so of source: reused if there, else compiled into a temporary file and renamed into place
    (atomic: processes building the same one at once each rename a whole library)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        folder = os.path.join(root, "rnnkit_traced")
        os.makedirs(folder, exist_ok=True)
    else:
        from torch.utils.cpp_extension import _get_build_directory

        folder = _get_build_directory("rnnkit_traced", False)
    so = os.path.join(folder, f"{stem}.so")
    if os.path.exists(so):
        return so
    fd, cpp = tempfile.mkstemp(prefix=f"{stem}_", suffix=".cpp", dir=folder)
    tmp = cpp[:-4] + ".so"
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        # CXX is one program's name, as torch's build runs it (quoted into its compile line): the engine and the
        # kernels build with the same CXX or neither does ('g++ -w' built the kernels alone)
        command = _cxx_command() or [cxx]  # (None: a quote left open, under a torch that doesn't quote CXX)
        done = run_compiler([*command, *flags, cpp, "-o", tmp])
        if done.returncode:
            said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            first = next((s for s in said if "error" in s), said[0])
            raise Untraceable(f"{name}'s kernels don't compile ({first}); it runs on the python loop")
        os.replace(tmp, so)
        os.replace(cpp, so[:-3] + ".cpp")  # (kept beside it, to read)
    finally:
        for leftover in (cpp, tmp):
            if os.path.exists(leftover):
                os.remove(leftover)
    return so
