"""`Recurrent`: a cell run over time by the engine, stacked, bidirectional, with skip connections.

    layer 0:   x_t ──► cell ──► h_t^1 ──(dropout)──► layer 1 ──► h_t^2 ──► ... ──► out_t
    skip_input:   x_t is also fed to every layer above the first: input^ℓ = [h^{ℓ-1}, x]
    residual:     out^ℓ = h^ℓ + out^{ℓ-1} for ℓ > 0
                  (deck 000's skip connections that ease the optimisation of deep RNNs, Graves et al. 2013 and
                  Pascanu et al. 2014; its "Other Ideas" skip connections through time, t-d -> t, are not these)
    bidirectional: a second cell reads the sequence backwards; outputs concatenated [→h, ←h]
    conditioning on v (B, C) (deck 000): as an extra input at every step (W_vh v, computed once per
    sequence and added to each step's input projection), as the initial state h_0 = tanh(W_vs v + b),
    or both. W_vh, W_vs: one per layer·direction; an lstm's c_0 is then 0; a `state` given to forward
    takes the place of this h_0 (W_vs is then unused, and with cond_mode="state" cond may be left out).

Shapes (batch-first unless `batch_first=False`): x (B, T, D) -> out (B, T, H·dirs); state as
torch.nn: h, or (h, c) for lstm, each (num_layers·dirs, B, H). Variable lengths: `lengths` (B,), or x a
PackedSequence (out is then packed too). An lstm with `proj_size=P` (torch.nn.LSTM's option; cell LSTMP)
outputs and feeds back h of P units: out (B, T, P·dirs), h (num_layers·dirs, B, P), c as before.
"""

import contextlib
import inspect
import math
import numbers
import os
import re
import sys
import threading
import warnings
import weakref

import numpy as np
import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn import functional as F
from torch.nn.utils import stateless as _stateless
from torch.nn.utils._named_member_accessor import NamedMemberAccessor
from torch.nn.utils._named_member_accessor import swap_tensor as _swap_tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells import CELLS, LSTMP
from rnnkit.cells._base import (
    AUTOCAST_DTYPES,
    SCRIPT_ERROR,
    OwnParametersModule,
    _OwnParameters,
    affine_input,
    autocast_off,
    autocast_on,
    cell_class,
    check_drawn,
    check_listed,
    fx_call,
    joined,
    make_fx_tracing,
    plain_ops_only,
)
from rnnkit.cells._base import Cell as BaseCell
from rnnkit.engine import BACKENDS, HALF, GradProbe, native_fits, refuse_jit_trace, resolve_backend, run
from rnnkit.engine.compiled import transformed
from rnnkit.errors import RnnkitError, count_error, fits_int64, said, switch, user_stacklevel

TORCH_MODES = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}


_NATIVE_DTYPES = (torch.float32, torch.float64)
_BUILT_IN_CELLS = frozenset(CELLS.values()) | {LSTMP}
_PLAIN = (torch.Tensor, nn.Parameter)  # what the native loop reads the memory of (not a tensor subclass)


_NATIVE = []  # rnnkit.engine.native, once imported


def _native():
    """rnnkit.engine.native, imported on first use (as resolve_backend imports it)."""
    from rnnkit.engine import native

    _NATIVE[:] = [native]
    return native


def _check_alpha(label, a, H):
    """A leaky cell's fixed α (the buffer alpha_fixed) set by hand held to what __init__ and load_state_dict take:
    a number or H values (shape (), (1,) or (H,)), each in (0, 1]. Another shape failed inside torch ('The expanded
    size of the tensor (4) must match the existing size (5)'), and α = 1.5, 0 or NaN ran in silence: units that blow
    up, freeze or give NaN. Its values are read at every call (one aminmax, about 3 µs), on the CPU and outside graph
    makers and transforms: a write through .data (cell.alpha.data.fill_(2.0)) leaves _version as it was, and a check
    read once per version ran that α in silence."""
    if a.shape not in ((), (1,), (H,)):
        raise RnnkitError(f"{label} has shape {tuple(a.shape)}, but a leaky cell of {H} units needs a number or {H} "
                          f"values, one per unit: shape (), (1,) or ({H},); give it a tensor of that shape")  # fmt: skip
    if type(a) not in _PLAIN or not a.is_cpu or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if plain_ops_only() or make_fx_tracing():
        return
    lo, hi = torch.aminmax(a.detach().reshape(-1)) if a.numel() else (a.new_ones(()), a.new_ones(()))
    if not (lo.item() > 0 and hi.item() <= 1):  # (NaN: both False)
        bad = a.detach().reshape(-1)
        bad = bad[~((bad > 0) & (bad <= 1))][0].item()
        raise RnnkitError(f"leaky alpha must lie in (0, 1], got {bad:g} in {label}")


def _same_input(got, x, kw):
    """Whether a cell's forward pre-hook, called with args (x,) (and kwargs {} where kw), returned them as they were:
    x, (x,), or ((x,), {}) (what torch would give the cell in its input's place otherwise)."""
    if kw:
        if not (isinstance(got, tuple) and len(got) == 2 and not got[1]):
            return False
        got = got[0]
    return got is x or (isinstance(got, tuple) and len(got) == 1 and got[0] is x)


def _hooked(cell):
    """Whether a cell has torch hooks of its own (see Recurrent._cell_hooks)."""
    return bool(
        cell._forward_pre_hooks or cell._forward_hooks or cell._backward_hooks or cell._backward_pre_hooks
    )


# the pieces of Recurrent.forward's full path that its fast path runs otherwise or not at all: a subclass redefining
# one (a learned initial state in _initial_state), or a layer given one of its own, takes the full path
_FULL_PATH_PIECES = (
    "_check_input",
    "_cell_hooks",
    "_mask",
    "_initial_state",
    "_probes",
    "_project",
    "_dropout",
)


_PIECES = frozenset(_FULL_PATH_PIECES)


def _own_pieces(cls):
    """Whether a subclass of Recurrent redefines a piece of forward's full path (_FULL_PATH_PIECES)."""
    return any(getattr(cls, name) is not getattr(Recurrent, name) for name in _FULL_PATH_PIECES)


_MISSING = object()


class _NoTorchWeights(AttributeError, RnnkitError):
    """all_weights of a layer of a cell torch.nn lacks: an AttributeError to hasattr and inspect, an RnnkitError's
    one line to the reader."""


def _own_params(cell):
    """(W_xh, b_xh, *REC_PARAMS) of a cell whose input_affine and rec_params are Cell's (they read these
    attributes), taken from its _parameters: the same tensors, without nn.Module.__getattr__'s way to each (about
    1 µs a name, a third of a one-step call's Python). None where that doesn't hold or one lives elsewhere (a weight
    pruning computes, held as a plain attribute) or the cell holds an input_affine or rec_params of its own (set on
    it: mock.patch.object): ask the cell then."""
    cls = type(cell)
    if cls.input_affine is not BaseCell.input_affine or cls.rec_params is not BaseCell.rec_params:
        return None
    if "input_affine" in cell.__dict__ or "rec_params" in cell.__dict__:
        return None
    own, got = cell._parameters, []
    for name in ("W_xh", "b_xh", *cls.REC_PARAMS):  # (a loop: a generator and any() took twice as long)
        p = dict.get(own, name, _MISSING)
        if p is _MISSING:
            return None
        got.append(p)
    return tuple(got)


def _widened(tensors):
    """Each half-type tensor (float16, bfloat16) of tensors (or None) in float32, its gradient cast back by autograd."""
    return tuple(t.float() if t is not None and t.dtype in HALF else t for t in tensors)


def _narrowed(got, half):
    """A layer's (out, state) in float32 cast back to its half type, as forward casts them."""
    out, state = got
    return out.to(half), (tuple(s.to(half) for s in state) if isinstance(state, tuple) else state.to(half))


def _conditioning(w, cond, half):
    """w(cond), W v + b of a conditioning Linear; for a half layer (half: its dtype) in float32, as its input
    projection: a bfloat16 W_vh v rounded once added its error to every step's pre-activation (a 200-step layer's
    outputs 2.0e-3 off float64's, 1.6e-3 its float32 copy's cast)."""
    if half is None:
        return w(cond)
    b = None if w.bias is None else w.bias.float()
    return F.linear(cond.float(), w.weight.float(), b)


def _input_affine(cell):
    """cell.input_affine(), unless a subclass overrides project_input below where input_affine is defined
    (then its projection is its own: the native engine calls project_input as it is)."""
    return cell.input_affine() if _affine_projects(type(cell)) else None


def _affine_projects(cls):
    """Whether cls's project_input is its input_affine's (see _input_affine). Asked of the class's MRO once (3 µs a
    call, every layer call); a class whose methods are replaced afterwards (cls.project_input = ...) is asked again:
    the answer is kept with the two functions it was read from. A constant of a graph torch.compile traces (as
    cells._base._math_class): dynamo traced the cache and guarded on it, empty on the first call and filled by it, so
    the second call of a model compiled first in a process compiled it all again ("not _AFFINE_PROJECTS")."""
    fns = (cls.project_input, cls.input_affine)
    got = _AFFINE_PROJECTS.get(cls)
    if got is not None and got[0]() is fns[0] and got[1]() is fns[1]:
        return got[2]
    mro = cls.__mro__
    owner = {name: next(k for k in mro if name in vars(k)) for name in ("project_input", "input_affine")}
    answer = issubclass(owner["input_affine"], owner["project_input"])
    # (the functions weakly: one calling super() holds cls in its __class__ cell, and the entry kept its key alive)
    with contextlib.suppress(TypeError):  # (a builtin can't be: asked again at the next call)
        _AFFINE_PROJECTS[cls] = weakref.ref(fns[0]), weakref.ref(fns[1]), answer
    return answer


_affine_projects._dynamo_marked_constant = True
# cell class -> (project_input, input_affine as read, weakly; _affine_projects' answer); weak, as cells._base._math_of
_AFFINE_PROJECTS = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _quiet(message):
    """Ignore the warnings whose text starts with `message` (a regex) inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message)
        yield


def _check_init_state(cell, Hout, H) -> None:
    """A layer starts from zeros of (B, Hout) and (B, H) where no state is given, as torch.nn's RNNs, never from the
    cell's init_state (what cell(x_t) starts from): a cell of one's own whose init_state gives another start (c_0 =
    1) ran from zeros in silence, and one whose c is wider than H failed inside its own step. Said in one line."""
    if type(cell).init_state in (BaseCell.init_state, LSTMP.init_state):
        return
    start = tuple(cell.init_state(1))
    shapes, given = [(1, Hout), (1, H)][: cell.num_states], [tuple(s.shape) for s in start]
    if given == shapes and (cell.W_xh.is_meta or not any(s.any() for s in start)):
        return
    got = " and ".join(f"{tuple(s.shape)}" + ("" if s.is_meta or not s.any() else " not all zero") for s in start)  # fmt: skip
    fix = "give the start as layer(x, state)" if given == shapes else "a state of another width runs one step at a time, cell(x_t, state)"  # fmt: skip
    raise RnnkitError(f"{type(cell).__name__}.init_state gives {got} for a batch of 1, but a layer starts from zeros "
                      f"of {' and '.join(map(str, shapes))}, as torch.nn's RNNs: {fix}")  # fmt: skip


def _check_cell_options(Cell, cell, options) -> None:
    """One line for an option the cell does not take (Recurrent("gru", 3, 4, alpha=0.3) ended in the bare
    "GRU.__init__() got an unexpected keyword argument 'alpha'"), naming the options it does take."""
    try:
        params = inspect.signature(Cell.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    own = [n for n, p in params.items() if n not in ("self", "input_size", "hidden_size", "bias", "device", "dtype")
           and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    unknown = [k for k in options if k not in params or k not in own]
    if unknown:
        k, name = unknown[0], cell if isinstance(cell, str) else Cell.__name__
        takes = f"it takes {', '.join(own)}" if own else "it takes none of its own"
        whose = {"forget_bias": "the lstm's", "alpha": "the leaky cell's", "learn_alpha": "the leaky cell's"}
        raise RnnkitError(f"the {name} cell has no option {k!r} ({takes})"
                          + (f"; {k} is {whose[k]}" if k in whose else ""))  # fmt: skip


def _takes_option(Cell, name) -> bool:
    """Whether the cell class's __init__ takes the option `name` (or any, **kwargs)."""
    try:
        params = inspect.signature(Cell.__init__).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _own_proj_size(Cell, cell, input_size, hidden_size, bias, options, given) -> int:
    """The proj_size of a subclass of LSTMP that sets it in its __init__, read from one cell made on the meta device
    (no memory, no draw): given none, it was 'proj_size must be an integer in [1, hidden_size), got 0', given one,
    'the cell has no option 'proj_size''."""
    _check_cell_options(Cell, cell, options)
    with torch.device("meta"):
        own = Cell(input_size, hidden_size, bias=bias, **options).proj_size
    if given is not None and given != own:
        raise RnnkitError(
            f"proj_size={given!r}, but {Cell.__name__} sets its own, {own}, in its __init__; leave it out"
        )
    return own


def _takes_factory_kwargs(Cell) -> bool:
    """Whether the cell class takes device= and dtype= (rnnkit's cells; a cell of one's own may not)."""
    try:
        params = inspect.signature(Cell.__init__).parameters
    except (TypeError, ValueError):
        return False
    return {"device", "dtype"} <= params.keys()


def _autocast_casts(a, b):
    """Whether torch.autocast is on and casts between the dtypes of a and b (float32, float16, bfloat16: the
    loop runs in its weights' dtype, see engine._no_autocast); float64 meets a one-line error as without it."""
    return autocast_on(a.device) and {a.dtype, b.dtype} <= AUTOCAST_DTYPES


def _weight_shapes(cell):
    """(name, shape) of a cell's weights as built: what `_check_weights` holds them to."""
    names = ("W_xh", "b_xh", *type(cell).REC_PARAMS)
    # and the cell's other parameters (MUT1's and MUT2's W_xp, leaky's alpha_logit)
    names += tuple(n for n in cell._parameters if n not in names)
    return tuple((n, getattr(cell, n).shape) for n in names if getattr(cell, n, None) is not None)


def _check_state_type(state, num_states):
    """A state that isn't a tensor (or a tuple (h, c) of tensors) said in one line, not an AttributeError."""
    given = state if isinstance(state, tuple | list) else (state,)
    if not all(isinstance(s, torch.Tensor) for s in given):
        # (h, None), h given without c: "(or None for zeros)" below read as if c could be None there
        missing = [part for part, s in zip("hc", given) if s is None]
        if num_states == len(given) == 2 and len(missing) == 1 and all(isinstance(s, torch.Tensor | None) for s in given):  # fmt: skip
            raise RnnkitError(f"state {missing[0]} is None: give both h and c, as torch.nn.LSTM takes them "
                              f"({missing[0]} of zeros for a start at zeros), or state=None for zeros of both")  # fmt: skip
        what = "a tuple (h, c) of tensors" if num_states == 2 else "a tensor h"
        got = ", ".join(type(s).__name__ for s in given)
        # [(h0, c0), (h1, c1)]: one (h, c) per layer (Keras's way); torch.nn's h and c hold every layer
        pairs = num_states == 2 and all(isinstance(s, tuple | list) and len(s) == 2 for s in given)
        hint = "; one (h, c) per layer? h and c are each one tensor (layers, B, H): torch.stack the layers'"
        hint = hint if pairs else ""
        raise RnnkitError(f"state must be {what} (or None for zeros), got {got}{hint}")
    for s, name in zip(given, "hc"):
        _refuse_layout(s, "state must be dense tensors,", "make them dense (.to_dense())")
        # layer(x, lengths): the lengths by position took the state's place, and were said to be a state of the
        # wrong shape ("got (2,)") or count ("a tuple (h, c), got one tensor")
        if not (s.is_floating_point() or s.is_complex()):
            looks = s.dim() <= 1 and len(given) == 1
            hint = (
                "; lengths go by name: layer(x, lengths=lengths) (the second argument is the state)"
                if looks
                else ""
            )
            raise RnnkitError(
                f"state {name} is {s.dtype} of shape {tuple(s.shape)}, not floating-point numbers{hint}"
            )


def _check_float(x, name):
    """An input of integers (token ids the embedding was forgotten for) or complex numbers said in one line, before
    its sizes: (B, T) ids read as one sequence (T, D) were 'input size is T', (B,) ids into step 'x_t has B
    features'."""
    if not x.is_floating_point():
        hint = (
            "take its real part or split it into two features" if x.is_complex() else "embed token ids first"
        )
        raise RnnkitError(f"{name} must be a floating-point tensor, got {x.dtype}; {hint}")


def _refuse_layout(t, what, fix):
    """A sparse or nested tensor said in one line: torch's errors came from deep inside the layer ("unsupported
    memory format option Contiguous", "NestedTensorImpl doesn't support sizes", "Could not run 'aten::min' with
    arguments from the 'SparseCPU' backend")."""
    if t.is_nested:
        raise RnnkitError(f"{what} got a nested tensor; {fix}")
    if t.layout != torch.strided:
        raise RnnkitError(f"{what} got {t.layout}; {fix}")


def _check_cond_type(cond):
    if cond is not None and not isinstance(cond, torch.Tensor):
        raise RnnkitError(
            f"cond must be a tensor (B, C), got {type(cond).__name__}; make it with torch.as_tensor"
        )
    # (a nested one failed at its shape, "NestedTensorImpl doesn't support sizes"; a sparse one computes as dense)
    if cond is not None and cond.is_nested:
        raise RnnkitError(
            "cond must be a dense tensor, got a nested tensor; stack the vectors: torch.stack(vs)"
        )


# .on: a build on the meta device bounded as a real one (charlm's _model_of_no_memory)
meta_bounded = threading.local()


def check_layers_fit(L: int, H: int, layer_bytes: int | None = None, device=None, held: str = "W_hh alone"):
    """num_layers whose weights can't fit this machine's memory, in one line before any layer is made:
    --num-layers 10**20 made layers (each small enough to allocate) until the machine ran out, a hang. The bound: each
    layer's H x H W_hh alone, in float32 (CharLM's), or `layer_bytes` a layer holds at least, `held` (Recurrent's: its
    W_hh in its dtype, both directions). The memory: the host's, or the GPU's where `device` is one with more. (One layer
    too big is its allocation's error; a model built on the meta device, holding no memory, is not bounded, except
    where meta_bounded.on.)"""
    if L == 1:
        return
    try:
        device = torch.device(device) if device is not None else torch.get_default_device()
    except (RuntimeError, TypeError):  # (not a device: said where the weights are made)
        return
    if device.type == "meta" and not getattr(meta_bounded, "on", False):
        return
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if device.type == "cuda" and torch.cuda.is_available():
        total = max(total, torch.cuda.get_device_properties(device).total_memory)
    need = L * (H * H * 4 if layer_bytes is None else layer_bytes)
    if need > total:
        try:
            gib = f"{need / 2**30:,.0f}"
        except OverflowError:  # (past float's range, num_layers 10**400: "integer division result too large")
            gib = f"about 10^{math.floor(math.log10(need) - 30 * math.log10(2))}"
        raise RnnkitError(f"num_layers {L} of hidden_size {H} need at least {gib} GiB of weights (each "
                          f"layer's {held}), more than this machine's {total / 2**30:,.1f} GiB; choose fewer "
                          "layers or units")  # fmt: skip


class Recurrent(OwnParametersModule):
    """A stack of recurrent layers of one cell type.

    Args:
        cell: a name in `rnnkit.CELLS` (or a Cell class).
        input_size, hidden_size, num_layers: sizes D, H, L.
        bidirectional: add a reverse-time cell per layer.
        dropout: dropout on the outputs of every layer but the last (training only).
        bias: False for cells without biases (torch.nn's bias); the initial state of cond_mode "state" keeps its b.
        skip_input: feed the input x to every layer.  residual: add the output of the layer below to each layer's
        own from the second on (out^ℓ = h^ℓ + out^{ℓ-1}: the output below without its dropout or the skipped x); both do
        nothing with num_layers=1.
        cond_size, cond_mode: a fixed vector v (B, C) per sequence; "input", "state" or "both".
        backend: "autograd", "python", "native" or None (the fastest available).
        batch_first: False for (T, B, D) tensors, as torch.nn's default.
        proj_size: for lstm, project h_t to this many units (torch.nn.LSTM's proj_size; 0 or None: none).
        device, dtype: where and in what type the parameters live (torch.nn's factory arguments).
        **cell_kwargs: passed to the cell (forget_bias for lstm; alpha, learn_alpha for leaky).
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
                 bias=True, skip_input=False, residual=False, cond_size=0, cond_mode="input",
                 backend=None, batch_first=True, proj_size=0, device=None, dtype=None, **cell_kwargs):  # fmt: skip
        super().__init__()
        object.__setattr__(self, "_parameters", _OwnParameters(self))
        if "nonlinearity" in cell_kwargs:  # torch.nn.RNN's option: a cell of its own here
            phi = cell_kwargs.pop("nonlinearity")
            if cell not in ("rnn_tanh", "rnn_relu") or phi not in ("tanh", "relu"):
                raise RnnkitError(f"nonlinearity={phi!r} is torch.nn.RNN's option; here the cell names it: "
                                  "Recurrent('rnn_tanh', ...) or Recurrent('rnn_relu', ...)")  # fmt: skip
            # rnn_tanh is torch.nn.RNN's default, which nonlinearity="relu" changes; rnn_relu named relu itself
            # (its "tanh" built a tanh layer in silence, where rnnkit.cells.RNNReLU(..., nonlinearity="tanh") refuses)
            if cell == "rnn_relu" and phi == "tanh":
                raise RnnkitError("Recurrent('rnn_relu', ..., nonlinearity='tanh') names two nonlinearities; "
                                  "Recurrent('rnn_tanh', ...) for tanh, or leave nonlinearity out")  # fmt: skip
            cell = f"rnn_{phi}"
        Cell = CELLS.get(cell) if isinstance(cell, str) else cell
        if Cell is None:
            raise RnnkitError(f"unknown cell {cell!r}; choose one of: {', '.join(CELLS)}")
        if not (isinstance(Cell, type) and issubclass(Cell, BaseCell)):
            hint = (f"the class, type(cell) = {type(cell).__name__}" if isinstance(cell, BaseCell)
                    else "Recurrent.from_torch(m) converts a torch.nn module" if isinstance(cell, type | nn.Module)
                    else "Recurrent('lstm', input_size, hidden_size, ...): the cell comes first")  # fmt: skip
            # (a module's repr is many lines where it holds a submodule: a cell with a LayerNorm, an nn.Sequential)
            shown = repr(cell) if "\n" not in repr(cell) else f"a {type(cell).__name__}"
            raise RnnkitError(f"cell must be a name in rnnkit.CELLS ({', '.join(CELLS)}) or a Cell class, got "
                              f"{shown}; {hint}")  # fmt: skip
        # (a numpy integer too, np.int64 from an array's shape or a parameter grid: it was said not to be one)
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise count_error(name, v)
            fits_int64(name, v)  # (a size of 2**63: "Overflow when unpacking long long" in torch)
        input_size, hidden_size, num_layers = int(input_size), int(hidden_size), int(num_layers)
        # a switch that is not one (batch_first="False" from a config file) was taken for its truth value: the
        # layout, or bias, bidirectional, ..., silently the opposite of what was meant
        flags = dict(bidirectional=bidirectional, bias=bias, batch_first=batch_first, skip_input=skip_input,
                     residual=residual)  # fmt: skip
        for name, v in flags.items():
            switch(name, v)
        bidirectional, bias, batch_first, skip_input, residual = (bool(v) for v in flags.values())
        if proj_size is None:  # a config's (and Keras') word for "no projection"
            proj_size = 0
        # False or 0.0 passed for "none" (falsy, so never checked) and came back as layer.proj_size
        none = not isinstance(proj_size, bool) and isinstance(proj_size, numbers.Integral) and proj_size == 0
        projected = issubclass(Cell, LSTMP)  # (a subclass of it too: an orthogonal W_hh of one's own)
        if projected and not _takes_option(Cell, "proj_size"):  # (one that sets it in its own __init__)
            proj_size = _own_proj_size(
                Cell, cell, input_size, hidden_size, bias, cell_kwargs, None if none else proj_size
            )
        elif not none or projected:
            if not (projected or Cell is CELLS["lstm"]):
                hint = (", a subclass of LSTM without a projection: subclass rnnkit.cells.LSTMP for one"
                        if issubclass(Cell, CELLS["lstm"]) else "")  # fmt: skip
                raise RnnkitError(f"proj_size is an option of the lstm cell, not of {cell if isinstance(cell, str) else Cell.__name__!r}{hint}")  # fmt: skip
            if (
                isinstance(proj_size, bool)
                or not isinstance(proj_size, numbers.Integral)
                or not 0 < proj_size < hidden_size
            ):
                raise RnnkitError(f"proj_size must be an integer in [1, hidden_size) = [1, {hidden_size}), "
                                  f"got {said(proj_size)}")  # fmt: skip
            Cell, cell_kwargs = Cell if projected else LSTMP, {**cell_kwargs, "proj_size": int(proj_size)}
        proj_size = int(proj_size)
        if isinstance(cond_size, bool) or not isinstance(cond_size, numbers.Integral) or cond_size < 0:
            raise RnnkitError(
                f"cond_size must be an integer >= 0 (0: no conditioning), got {said(cond_size)}"
            )
        cond_size = int(fits_int64("cond_size", cond_size))
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise RnnkitError(
                f"dropout must be a number in [0, 1] (the probability of zeroing), got {said(dropout)}"
            )
        if dropout > 0 and num_layers == 1:  # torch.nn's RNNs warn the same
            warnings.warn(f"dropout={dropout} does nothing with num_layers=1: it applies between layers only "
                          "(add a dropout layer after this one instead)", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        for name, given in (
            ("skip_input", skip_input),
            ("residual", residual),
        ):  # as dropout's, not a word else
            if given and num_layers == 1:
                warnings.warn(f"{name}=True does nothing with num_layers=1: it joins layers (from the second on), "
                              "and this one has no layer above the first", UserWarning, stacklevel=user_stacklevel())  # fmt: skip
        if cond_mode not in ("input", "state", "both"):
            raise RnnkitError(f"cond_mode must be 'input', 'state' or 'both', got {cond_mode!r}")
        if cond_mode != "input" and not cond_size:
            raise RnnkitError(f"cond_mode={cond_mode!r} needs cond_size (the width C of the vector v)")
        if backend not in (None, *BACKENDS):
            raise RnnkitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} "
                              "(or None for the fastest)")  # fmt: skip
        self.cell_name = cell if isinstance(cell, str) else Cell.__name__
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.dropout, self.backend = bidirectional, dropout, backend
        self.skip_input, self.residual, self.batch_first = skip_input, residual, batch_first
        self.cond_size, self.cond_mode = cond_size, cond_mode
        self.proj_size, self.bias = proj_size, bias
        self.dirs = 2 if bidirectional else 1
        H, dirs = hidden_size, self.dirs
        Hout = self.output_size
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            # (a name, dtype="float64", failed with an AttributeError)
            raise RnnkitError(f"dtype must be a floating-point type (a torch.dtype: torch.float32, torch.float64, "
                              f"...), got {dtype!r}")  # fmt: skip
        # a cell that takes torch's factory arguments draws its weights there, as torch.nn does: a draw in float32
        # cast to float64 after gave other weights than torch.nn.GRU(..., dtype=torch.float64) for the same seed
        factory = {"device": device, "dtype": dtype} if _takes_factory_kwargs(Cell) else {}
        _check_cell_options(Cell, cell, cell_kwargs)
        # (a cell of one's own may take no bias, __init__(self, input_size, hidden_size): passed bias=True, given or
        # not, it failed in "TypeError: __init__() got an unexpected keyword argument 'bias'", check_cell so too)
        if _takes_option(Cell, "bias"):
            factory["bias"] = bias
        elif not bias:
            raise RnnkitError(f"{Cell.__name__}'s __init__ takes no bias, so bias=False can't reach it: give it one "
                              "(__init__(self, input_size, hidden_size, bias=True), passed on to Cell.__init__), or "
                              "leave bias out")  # fmt: skip
        # (num_layers 10**9 or np.int64(2**62) built layers until the memory ran out, a hang; rnnkit's own cells hold
        # an H x Hout W_hh each, any cell at least its module: an empty nn.Module's Python objects take 2,048 bytes
        # (tracemalloc, Python 3.11), a cell of one unit 2,857; 1 KiB leaves room for a Python whose objects are
        # smaller, so no model that fits is refused)
        w_hh = H * Hout * (dtype or torch.get_default_dtype()).itemsize
        w_hh = w_hh if Cell in CELLS.values() or Cell is LSTMP else 0
        check_layers_fit(num_layers, H, dirs * max(w_hh, 1024), device,
                         "W_hh alone" if w_hh >= 1024 else "cell module alone")  # fmt: skip
        self.cells = nn.ModuleList()  # index ℓ·dirs + direction
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else Hout * dirs + (input_size if skip_input else 0)
            for _ in range(dirs):
                self.cells.append(Cell(d_in, H, **factory, **cell_kwargs))
        if self.cells[0].output_size != Hout:  # a cell of one's own whose h_t is narrower than H (as LSTMP's)
            raise RnnkitError(f"{Cell.__name__}'s h_t has {self.cells[0].output_size} units, but a layer feeds back "
                              f"and outputs proj_size or hidden_size = {Hout}; only the lstm's proj_size makes h_t "
                              "narrower than H")  # fmt: skip
        _check_init_state(self.cells[0], Hout, H)
        n = num_layers * dirs
        # drawn in dtype= too (cast after, a float64 layer's held float32 values; reset_parameters drew others)
        linear = {"device": device, "dtype": dtype}
        if cond_size and cond_mode in ("input", "both"):
            self.W_vh = nn.ModuleList(
                nn.Linear(cond_size, Cell.gates * H, bias=False, **linear) for _ in range(n)
            )
        if cond_size and cond_mode in ("state", "both"):
            self.W_vs = nn.ModuleList(nn.Linear(cond_size, Hout, **linear) for _ in range(n))
        self.num_states = Cell.num_states
        self.cells[0].rec_params()  # a REC_PARAMS attribute a cell of one's own never created, said here
        check_drawn(self.cells[0])  # (so too weights it never drew)
        check_listed(self.cells[0])  # (and parameters it doesn't list)
        self._weight_shapes = [_weight_shapes(c) for c in self.cells]
        if device is not None or dtype is not None:  # the conditioning weights, a cell of one's own
            self.to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Draw every weight afresh as at construction (torch.nn's RNNs have this method too)."""
        for cell in self.cells:
            cell.reset_parameters()
        for name in ("W_vh", "W_vs"):
            for lin in getattr(self, name, ()):
                lin.reset_parameters()

    @property
    def output_size(self) -> int:
        """Width of h_t per direction: hidden_size, or proj_size for an lstm with a projection."""
        return self.proj_size or self.hidden_size

    def extra_repr(self):
        """As torch.nn.LSTM prints itself: the cell, D, H, then the options that differ from the defaults."""
        s = f"{self.cell_name!r}, {self.input_size}, {self.hidden_size}"
        defaults = (("num_layers", 1), ("bidirectional", False), ("dropout", 0.0), ("skip_input", False),
                    ("residual", False), ("cond_size", 0), ("backend", None), ("batch_first", True),
                    ("proj_size", 0))  # fmt: skip
        for name, default in defaults:
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        if self.cond_size:
            s += f", cond_mode={self.cond_mode!r}"
        if not self.cells[0].bias:
            s += ", bias=False"
        return s

    # --- forward ---------------------------------------------------------------------------
    def forward(
        self,
        x=None,
        state=None,
        lengths=None,
        cond=None,
        probe=None,
        *_onnx,
        hx=None,
        input=None,
        _sorted=None,
    ):
        """out, state = layer(x, state=None, lengths=None, cond=None).

        probe: a `GradProbe` (watches layer 0, forward direction) or a list, one per layer·direction in h_n's
        order (layer 0 forward, layer 0 reverse, layer 1 forward, ...); its records are (T, B, H) time-major, also
        for a batch_first layer.
        x may also be a `PackedSequence` (as for torch.nn's RNNs): then out is one too, in the same order;
        or one unbatched sequence (T, D), as torch.nn's RNNs take it: then out is (T, H·dirs) and the state
        tensors (num_layers·dirs, H). input, hx: x and the state under torch.nn's names for them
        (`lstm(input=x, hx=(h, c))`). (_sorted: a PackedSequence's sorted_indices, see _dropout.)
        lengths: a tensor, an array or a list of whole numbers. Under torch.compile give a tensor or an array, not
        a list of np.uint64 scalars: torch's own guards fail on those (torch 2.13), before rnnkit can say so.
        """
        if type(x) is torch.Tensor and not (lengths is not None or cond is not None or probe is not None or _onnx
                                            or hx is not None or input is not None):  # fmt: skip
            got = self._forward_fast(x, state)
            if got is not None:
                return got
        refuse_jit_trace()  # before the native projection, whose output the tracer can't see either
        if is_fx_symbolic_tracing():  # (one call_module node, as FX records torch.nn's RNNs)
            given = dict(x=x, state=state, lengths=lengths, cond=cond, probe=probe, hx=hx, input=input)
            traced = fx_call(self, given, Recurrent)
            if traced is not None:
                return traced
        # torch.onnx.export(layer, ..., dynamo=False) passes the defaults of hx, input and _sorted by position:
        # *_onnx takes them, so that refuse_jit_trace above names the exporter that works instead of a TypeError
        if _onnx:
            n = 6 + len(_onnx)
            raise TypeError(f"Recurrent.forward() takes from 1 to 6 positional arguments but {n} were given")
        if input is not None:
            if x is not None:
                raise RnnkitError("give the input as x or as input (torch.nn's name), not both")
            x = input
        if x is None:
            raise RnnkitError("no input: call layer(x) with x of shape (B, T, D), or (T, D) for one sequence")
        if hx is not None:
            if state is not None:
                raise RnnkitError("give the initial state as state or as hx (torch.nn's name), not both")
            state = hx
        if isinstance(x, PackedSequence):
            return self._forward_packed(x, state, lengths, cond, probe)
        if isinstance(x, torch.Tensor):
            _refuse_layout(x, "input must be a dense tensor,", "pad the sequences (torch.nn.utils.rnn.pad_sequence) "
                           "and give their lengths, or pack them" if x.is_nested else "x.to_dense()")  # fmt: skip
        if isinstance(x, torch.Tensor) and x.dim() == 2:
            return self._forward_unbatched(x, state, lengths, cond, probe)
        xs = self._check_input(x)  # (T, B, D)
        self._cell_hooks(x)
        T, B = xs.shape[:2]
        mask = self._mask(lengths, T, B, xs)
        # the padding is never read, as with pack_padded_sequence: NaN or inf there would reach the weight
        # gradients (0·NaN in dW_xh = Σ dxwᵀ x) and more
        if mask is not None:
            xs = xs.masked_fill(mask == 0, 0)
        state0 = self._initial_state(state, cond, B, xs)
        half = self._half_type()
        # a float16 or bfloat16 layer runs in float32 (see _project), its results cast back
        if half is not None:
            xs, state0 = xs.float(), tuple(s.float() for s in state0)
            mask = None if mask is None else mask.float()
        probes = self._probes(probe)
        conditioned = "W_vh" in self._modules  # not hasattr: a miss on a Module raises, 3 µs
        below, prev, finals = xs, None, []
        # (self.cells: a miss through nn.Module.__getattr__, 1 µs a time; and ModuleList's [i] another 1 µs)
        cells = list(self._modules["cells"])
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.dirs):
                i = layer * self.dirs + d
                cell = cells[i]
                # (T, B, G·H): all steps in one GEMM; a conditioning term adds to xw after any tanh in it
                self._check_weights(i, cell)
                xw, P, fold = self._project(cell, below, raw_ok=not conditioned, half=half)
                if conditioned:
                    xw = xw + _conditioning(self.W_vh[i], cond, half)[None]  # once per sequence, over T
                s0 = tuple(s[i] for s in state0)
                # the last layer's outputs straight in the caller's layout, contiguous (B, T, H) on every backend
                # (no transpose and copy after, in the layer or in a Linear after it; and dropout after the layer,
                # which fills its mask in memory order, draws the same mask for a seed on every backend)
                bf = (
                    self.batch_first and layer == self.num_layers - 1 and self.dirs == 1 and not self.residual
                )
                hs, sT = run(cell, xw, s0, P, mask, d == 1, self.backend, probes[i], batch_first=bf, check=False,
                             inner=layer < self.num_layers - 1, **fold)  # fmt: skip
                outs.append(hs)
                finals.append(sT)
            out = outs[0] if self.dirs == 1 else joined(torch.cat, outs, dim=-1)  # (T, B, H·dirs)
            if self.residual and prev is not None:
                out = out + prev
            prev = out
            if layer < self.num_layers - 1:
                below = self._dropout(out, mask, _sorted) if self.dropout else out
                if self.skip_input:
                    below = joined(torch.cat, (below, xs), dim=-1)
        out = out.transpose(0, 1) if self.batch_first and not bf else out  # bf: written (B, T, H) already
        # (a stack even of one layer's: a tensor of its own, as torch.nn's h_n, which h_n.detach_() and h_n.mul_(2)
        # before backward take; a view of the final state refused both)
        stacked = tuple(joined(torch.stack, [f[k] for f in finals]) for k in range(self.num_states))
        if half is not None:
            out, stacked = out.to(half), tuple(s.to(half) for s in stacked)
        return out, (stacked if self.num_states == 2 else stacked[0])

    def _half_type(self):
        """The layer's dtype where it is float16 or bfloat16 (its first cell's, which every cell shares:
        _check_weights), else None."""
        lead = next(iter(self._modules["cells"]))
        w = lead._parameters.get("W_xh")
        w = lead.weight_like() if w is None else w
        return w.dtype if w is not None and w.dtype in HALF else None

    def _forward_fast(self, x, state):
        """forward where nothing is asked of it but the loop: no gradient recorded (sampling, evaluation under
        torch.no_grad, a decoder stepped token by token), no lengths, cond or probe, one direction, a plain stack of
        rnnkit's own cells (no hooks, no parametrizations, no dropout drawn) on the native backend, in a layer whose class
        redefines none of the full path's pieces (_FULL_PATH_PIECES), the state None or
        of the right shapes. The same calls, in the same order, as the full path below, without its per-call questions
        that can't change the answer here (some 40 µs of a 70 µs one-step call of a small GRU). None where anything
        else holds: the full path runs then, and says what is wrong where something is. A float16 or bfloat16 layer
        runs as the full path runs it: x, the state and the weights cast to float32 once, outputs and states cast back
        (the same bits; a one-step call of a bfloat16 1x128 LSTM took 3x float32's time on the full path)."""
        if torch.is_grad_enabled() or x.dim() != 3 or not x.is_cpu:
            return None
        half = x.dtype if x.dtype in HALF else None
        if half is None and x.dtype not in _NATIVE_DTYPES:
            return None
        if self.dirs != 1 or self.backend not in (None, "native") or self.cond_size or self.skip_input:
            return None
        if self.residual or (self.training and self.dropout) or x.is_nested or x.layout is not torch.strided:
            return None
        if type(self) is not Recurrent and _own_pieces(type(self)):
            return None
        if not _PIECES.isdisjoint(self.__dict__):  # one set on the layer itself
            return None
        # (every graph maker, transform and autocast: the full path's own handling of each; before x's sizes are
        # read, which torch.jit.trace warns of as a tensor turned into a Python boolean)
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or plain_ops_only() or make_fx_tracing():
            return None
        if x.shape[-1] != self.input_size or 0 in x.shape:
            return None
        if torch.is_autocast_enabled("cpu"):
            return None
        native = _NATIVE[0] if _NATIVE else _native()
        cells = list(self._modules["cells"])
        # (a subclass that only draws its weights otherwise computes as its base, cell_class: the full path ran it)
        kinds = [cell_class(type(cell)) for cell in cells]
        for cell, kind in zip(cells, kinds):
            if kind not in native.CELL_IDS or _hooked(cell):
                return None
        lead = cells[0]._parameters.get("W_xh")
        if lead is None or lead.dtype != x.dtype or not lead.is_cpu:
            return None
        n, B = self.num_layers, x.shape[0 if self.batch_first else 1]
        if state is not None:
            state = state if isinstance(state, tuple | list) else (state,)
            if len(state) != self.num_states:
                return None
            for s, w in zip(state, (self.output_size, self.hidden_size)):
                if type(s) is not torch.Tensor or s.shape != (n, B, w) or s.dtype != x.dtype or not s.is_cpu:
                    return None
                if s.is_nested or s.layout is not torch.strided:
                    return None
        if native.load() is None:  # (the full path says why, once)
            return None
        widths = (self.output_size, self.hidden_size)[: self.num_states]
        if half is not None:  # (as forward: in float32, see _project)
            x, state = x.float(), None if state is None else tuple(s.float() for s in state)
        if x.shape[1 if self.batch_first else 0] < 8:  # (short: _project's F.linear, see there)
            got = self._forward_stack(native, cells, kinds, x, state, widths, half)
            if got is not False:
                return got if got is None or half is None else _narrowed(got, half)
        below = x.transpose(0, 1).contiguous() if self.batch_first else x.contiguous()  # (T, B, D)
        finals, short = [], below.shape[0] < 8
        for i, cell in enumerate(cells):
            self._check_weights(i, cell)
            if short:  # (nothing kept for a backward: no xw._rnnkit_rebuild)
                got = _own_params(cell)
                W, b, *P = got if got is not None else (*_input_affine(cell), *cell.rec_params())
                if half is not None:
                    W, b, *P = _widened((W, b, *P))
                xw = affine_input(below, W, b, cell.tanh_tail, cell.input_identity)
                fold = {}
            else:
                xw, P, fold = self._project(cell, below, half=half)
            # (a weight of a tensor subclass makes xw one, or is one of P: the python loop's, see native.unsupported)
            if type(xw) is not torch.Tensor:
                return None
            for p in P:
                if p is not None and type(p) not in _PLAIN:
                    return None
            xbias = fold.get("xbias")
            P = (*P, xbias) if xbias is not None else tuple(P)
            s0 = tuple(x.new_zeros((B, w)) for w in widths) if state is None else tuple(s[i] for s in state)
            bf = self.batch_first and i == n - 1  # the last layer's outputs in the caller's layout, as below
            raw, xt = fold.get("raw_tail", False), fold.get("xtilde")
            below, sT = native.forward_only(kinds[i], None, False, bf, raw, xw, xt, s0, P)
            finals.append(sT)
        stacked = tuple(torch.stack([f[k] for f in finals]) for k in range(self.num_states))
        got = below, (stacked if self.num_states == 2 else stacked[0])
        return got if half is None else _narrowed(got, half)

    def _forward_stack(self, native, cells, kinds, x, state, widths, half=None):
        """_forward_fast's loop over the layers of a short sequence as one engine call (native.forward_stack: per
        layer xw = linear(below, W_xh, b_xh) and the loop, then h_n stacked; the same calls on the same tensors as
        the loop in _forward_fast, without its Python per layer). None where a weight is not a plain tensor (the
        python loop's, see native.unsupported); False where a cell's projection is more than x W_xhᵀ + b (MUT1's
        tanh(x̃), x̃ = x): _forward_fast's own loop then. half: a float16 or bfloat16 layer's dtype, x and the state
        given in float32: the weights are read in float32 (the results are returned in float32)."""
        ids, Ws, bs, Ps = [], [], [], []
        for i, (cell, kind) in enumerate(zip(cells, kinds)):
            if cell.tanh_tail or cell.input_identity is not None:
                return False
            self._check_weights(i, cell)
            got = _own_params(cell)
            W, b, *P = got if got is not None else (*_input_affine(cell), *cell.rec_params())
            for p in (W, b, *P):
                if p is not None and type(p) not in _PLAIN:
                    return None
            if half is not None:  # (x and the state are float32 already)
                W, b, *P = _widened((W, b, *P))
            ids.append(native.CELL_IDS[kind])
            Ws.append(W)
            bs.append(b)
            Ps.append(native._flat_params(kind, P, self.hidden_size) if cell.EXTRAS else P)
        states = [] if state is None else list(state)
        got = native.load().forward_stack(
            ids, x, self.batch_first, Ws, bs, Ps, states, widths, self.batch_first
        )
        native.keep_plans_soon()
        return got[0], (tuple(got[1:]) if self.num_states == 2 else got[1])

    def _cell_hooks(self, x):
        """torch's per-call hooks of the cells. The layer runs a cell's equations in one engine call per sequence,
        never as cell(x_t) step by step, so a cell's hooks would not fire by themselves. Its forward pre-hooks
        (what torch.nn.utils.prune and the old weight_norm and spectral_norm recompute a weight with, from
        weight_orig) run here, once per layer call, before its weights are read, with the layer's input as the
        args. Forward and backward hooks, which expect the cell's own output of one step, are refused, and so is a
        pre-hook's new input (its return value, which torch would give a cell in its input's place)."""
        for i, cell in enumerate(self._modules["cells"]):
            if cell._forward_hooks or cell._backward_hooks or cell._backward_pre_hooks:
                raise RnnkitError(
                    f"layer.cells[{i}] has a forward or backward hook, which would never fire: the layer runs its "
                    "cells' equations in one engine call per sequence, not cell(x_t) step by step; hook the layer "
                    "itself (register_forward_hook on it), or record dL/dh_t with rnnkit.GradProbe"
                )
            for key, hook in list(cell._forward_pre_hooks.items()):
                kw = key in cell._forward_pre_hooks_with_kwargs
                got = hook(cell, (x,), {}) if kw else hook(cell, (x,))
                # (a hook returning (2 * x,) ran, and its input was dropped in silence: the layer computed from x)
                if got is not None and not _same_input(got, x, kw):
                    raise RnnkitError(
                        f"layer.cells[{i}] has a forward pre-hook that returns a new input, which the layer can't "
                        "use: it runs its cells' equations in one engine call per sequence, not cell(x_t); change "
                        "the input with a pre-hook on the layer itself (layer.register_forward_pre_hook)"
                    )

    def _project(self, cell, xs, raw_ok=True, half=None):
        """(xw, P, fold): cell.project_input(xs), the recurrent parameters cell.rec_params(), and what
        `run` needs to know of a projection the loop finishes (its xbias, raw_tail).

        half: the layer's dtype, float16 or bfloat16, with xs in float32: the weights are read in float32 (one cast
        per call, autograd casting their gradients back), so that the projection and the loop run in float32 on every
        backend, as torch.nn.LSTM computes its gates in float32 (in bfloat16 a 200-step lstm's outputs came 5.5e-3 off
        float64's, torch.nn.LSTM's 2.6e-3, every step's GEMMs and gate math rounded to 8 bits).

        The native engine runs the plain projection in its recycled buffers and leaves b_xh to the loop:
        where b_xh and b_hh add to the same pre-activation (Elman, leaky, LSTM), the loop adds b_xh + b_hh
        (autograd hands both biases the loop's Σ dxw); in gru_cho and MUT1-3 the loop adds b_xh itself and
        sums its gradient as it goes; MUT1's tanh(x̃) is taken in the loop too (raw_ok: nothing is added to
        xw in between), and where x̃ = x (D = H) the loop reads x where it is instead of a copy in xw. The same
        function, with one pass less over the (T, B, G·H) projection forward and one less over its gradient
        backward."""
        P = cell.rec_params()
        parametrized = "parametrizations" in cell._modules
        if parametrized:  # (checked as computed, before b_hh + b_xh are folded below)
            i = next(i for i, c in enumerate(self._modules["cells"]) if c is cell)
            self._check_computed(i, cell, zip(type(cell).REC_PARAMS, P))
        if half is not None:
            P = _widened(P)
        # long enough to pay; under torch.autocast the projection is an F.linear like any other (in bfloat16
        # or float16), so that every backend gets the same xw; and under torch.compile, which compiles F.linear
        # with what is around it (the loop is an operator there, engine/compiled.py), without asking T (a guard
        # that compiled a third graph for lengths under 8)
        long = not torch.compiler.is_compiling() and xs.shape[0] >= 8 and not autocast_on(xs.device)
        affine = _input_affine(cell) if long else None
        if half is not None and affine is not None:
            affine = _widened(affine)
        # a W or b of a tensor subclass (a wrapper, a tagged tensor) makes xw one, which the engine leaves to the
        # python loop (native.unsupported); the native projection read its memory ('data is not allocated yet')
        plain = affine is not None and all(
            type(t) in (torch.Tensor, nn.Parameter) for t in affine if t is not None
        )
        # a cell of one's own whose states its traced kernels don't take (an LSTMP subclass's h_t, proj_size wide):
        # python, as run sends it at T < 8 (asked here without the widths, its trace's sample step failed in torch's
        # 'The size of tensor a (4) must match the size of tensor b (12)')
        fits = not plain or type(cell) in _BUILT_IN_CELLS or self._native_fits(cell, P)
        chosen = resolve_backend(self.backend, cell, xs, P, fits=fits) if plain else None
        if chosen == "native":
            from rnnkit.engine.native import folds_input_bias, loop_adds_input_bias, project

            W, b = affine
            # (the native projection reads W as (G, D); MUT1's and MUT2's with D ≠ H hold W_xp's rows too: their
            # parts are held to their shapes, the whole was held to W_xh's and refused)
            if parametrized:
                xp = getattr(cell, "W_xp", None)
                parts = (("W_xh", W),) if xp is None else (("W_xh", cell.W_xh), ("W_xp", xp))
                self._check_computed(i, cell, parts)
            native = {"resolved": "native"}  # run need not ask again (resolve_backend, 3 µs)
            ident = -1 if cell.input_identity is None else cell.input_identity
            if folds_input_bias(cell) and b is not None and P[1] is not None:
                return project(xs, W, None), (P[0], P[1] + b, *P[2:]), native
            if loop_adds_input_bias(cell):
                raw = raw_ok and cell.tanh_tail > 0
                if raw and ident == W.shape[0]:  # MUT1's x̃ = x, the last block: the loop reads x in place
                    xw, xt = project(xs, W, None, pass_x=True)
                    return xw, P, dict(native, xbias=b, raw_tail=True, xtilde=xt)
                return (
                    project(xs, W, None, 0 if raw else cell.tanh_tail, ident),
                    P,
                    dict(native, xbias=b, raw_tail=raw),
                )
            return project(xs, W, b, cell.tanh_tail, ident), P, native
        # (python: run need not ask again, which keys a cell of one's own by all it reads a second time)
        fold = {"resolved": "python"} if chosen == "python" else {}
        if affine is None:
            affine = _input_affine(cell)
            affine = _widened(affine) if half is not None and affine is not None else affine
        if affine is None:  # a projection of the cell's own: rebuilt from xw itself (saved_input)
            # (in the cell's own dtype: its weights are read there)
            xw = cell.project_input(xs) if half is None else cell.project_input(xs.to(half)).float()
            return xw, P, fold
        W, b = affine
        tail, ident = cell.tanh_tail, cell.input_identity
        xw = affine_input(xs, W, b, tail, ident)  # cell.project_input(xs), its weights taken once
        # higher-order gradients (engine.reference): xw again from the tensors of THIS call, not from the cell's
        # attributes at backward time (functional_call has put the module's own back by then)
        xw._rnnkit_rebuild = (lambda xs, W, b: affine_input(xs, W, b, tail, ident)), (xs, W, b)
        return xw, P, fold

    def _native_fits(self, cell, P):
        """engine.native_fits for this layer's cell, from the widths its xw and states will have."""
        kind = cell_class(cell)
        widths = (kind.gates * self.hidden_size, (self.output_size, self.hidden_size)[: kind.num_states])
        return native_fits(kind, None, None, P, widths)

    def _check_weights(self, i, cell):
        """A weight replaced by one of another shape (layer.weight_hh_l0 = ..., functional_call, cells[i].W_hh = ...)
        is refused in one line: the native loop trusts the shapes and read past the tensor (NaN, no error); one
        of another dtype or device than the cell's others too (torch's error from inside a matmul, else), and a cell
        of another dtype or device than the first. Only
        the cell's own parameters are read (1 µs), and a weight held as a plain attribute (del cell.W_hh;
        cell.W_hh = W * mask, pruning's computed W_hh): a weight a parametrization computes is neither, and
        reading it would compute it again."""
        shapes = self.__dict__.get("_weight_shapes")
        if shapes is None:  # a layer pickled before they were kept
            shapes = self._weight_shapes = [_weight_shapes(c) for c in self.cells]
        own, dtype, seen, plain = cell._parameters, None, None, {}
        for name, want in shapes[i]:
            p = own.get(name)
            # (W * mask set by hand went unchecked: the native loop read past one of another shape in silence)
            if p is None and name not in own and isinstance(q := cell.__dict__.get(name), torch.Tensor):
                p = plain[name] = q
            if p is None:
                # a matrix set to None (a bias None is no bias): the native loop ran on without it, NaN
                if name in own and len(want) == 2:
                    raise RnnkitError(f"{self._weight_label(i, cell, name)} is None, but this layer's {self.cell_name} "
                                      f"cell needs {tuple(want)}; give it a tensor of that shape")  # fmt: skip
                continue
            seen = p
            if p.shape != want:
                raise RnnkitError(f"{self._weight_label(i, cell, name)} has shape {tuple(p.shape)}, but this layer's "
                                  f"{self.cell_name} cell needs {tuple(want)}; give it a tensor of that shape")  # fmt: skip
            if dtype is not None and p.dtype != dtype:
                raise self._odd_dtype(i, cell, [n for n, _ in shapes[i]])
            dtype = p.dtype
        # a buffer rnnkit's cell reads as a weight (leaky's fixed α) of another dtype (a float64 one from numpy):
        # "expected scalar type Float but found Double" from inside the engine, or a matmul's error, else
        if dtype is not None and type(cell) in _BUILT_IN_CELLS:
            # (and leaky's fixed α made an nn.Parameter, to learn α itself: it leaves the buffers, α = 2 ran)
            extra = (
                cell._buffers
                if "alpha_fixed" not in own
                else {**cell._buffers, "alpha_fixed": own["alpha_fixed"]}
            )
            for name, p in extra.items():
                if p is not None and p.dtype != dtype:
                    raise RnnkitError(f"{self._weight_label(i, cell, name)} is {p.dtype} but the cell's weights are "
                                      f"{dtype}; give it a tensor of their dtype (or convert the whole layer: "
                                      f"layer.to({p.dtype}))")  # fmt: skip
                if name == "alpha_fixed" and p is not None:
                    _check_alpha(self._weight_label(i, cell, name), p, cell.hidden_size)
        # one weight moved alone (all of them: leaky's alpha_logit, mut1's W_xp): a W_hh on meta gave wrong numbers
        # (torch's linear of a cpu and a meta tensor is a cpu one); native read its memory as the CPU's
        devices, own = {}, {**own, **plain} if plain else own
        # leaky's fixed α, read as a weight is by every loop (on meta: torch's 'Tensor on device cpu is not on the
        # expected device meta!' naming no tensor, and the native loop's many-line 'its data is not allocated yet';
        # the native loop reads its memory as the CPU's)
        if cell._buffers and type(cell) in _BUILT_IN_CELLS:
            own = {**own, **cell._buffers}
        # (all on the CPU, the common case: is_cpu alone, a third of the time of .device)
        for p in own.values():
            if p is not None and not p.is_cpu:
                for name, p in own.items():
                    if p is not None:
                        devices.setdefault(p.device, name)
                break
        if len(devices) > 1:
            lead = self._modules["cells"][0]._parameters.get("W_xh")
            where = next(iter(devices)) if lead is None else lead.device
            name = next(n for d, n in devices.items() if d != where)
            raise RnnkitError(f"{self._weight_label(i, cell, name)} is on {own[name].device} but the cell's other "
                              f"weights are on {where}; move it there (or move the whole layer: layer.to(...))")  # fmt: skip
        # a cell converted or moved alone (layer.cells[1].double()): torch's error from inside a matmul, else
        lead = self._modules["cells"][0]._parameters.get("W_xh") if i and seen is not None else None
        if lead is not None and (seen.dtype, seen.device) != (lead.dtype, lead.device):
            raise RnnkitError(f"layer.cells[{i}] is {seen.dtype} on {seen.device} but layer.cells[0] is {lead.dtype} "
                              f"on {lead.device}; convert or move the whole layer (layer.to(...)), not one cell")  # fmt: skip

    def _odd_dtype(self, i, cell, names):
        """_check_weights' line for a cell whose weights differ in dtype, naming the one that differs from the most of
        them (the first of a tie): it named the second weight read where the first, W_xh, was the odd one ('b_xh is
        torch.float32 but the cell's other weights are torch.bfloat16', of a float32 cell with a bfloat16 W_xh)."""
        own = {n: cell._parameters[n] if n in cell._parameters else cell.__dict__.get(n) for n in names}
        weights = [(n, p) for n, p in own.items() if isinstance(p, torch.Tensor)]
        dtypes = [p.dtype for _, p in weights]
        most = max(dtypes, key=dtypes.count)  # (max keeps the first of equal counts)
        name, p = next((n, p) for n, p in weights if p.dtype != most)
        return RnnkitError(f"{self._weight_label(i, cell, name)} is {p.dtype} but the cell's other weights are {most}; "
                           f"give it a tensor of their dtype (or convert the whole layer: layer.to({p.dtype}))")  # fmt: skip

    def _check_computed(self, i, cell, weights):
        """The weights a parametrization computed for this call ((name, tensor) pairs: rec_params' P, the native
        projection's W_xh), held to the shapes _check_weights holds parameters to: one of another shape
        (register_parametrization(..., unsafe=True)) was read past its end by the native loops in silence, torch's
        matmul error from inside on the others. (Not to their dtype: under torch.autocast a parametrization's
        matmul gives bfloat16, which the loops take.)"""
        shapes = dict(self._weight_shapes[i])
        for name, p in weights:
            if p is not None and name in shapes and p.shape != shapes[name]:
                raise RnnkitError(f"{self._weight_label(i, cell, name)}, as its parametrization computes it, has "
                                  f"shape {tuple(p.shape)}, but this layer's {self.cell_name} cell needs "
                                  f"{tuple(shapes[name])}; make the parametrization keep its shape")  # fmt: skip

    def _weight_label(self, i, cell, name):
        """layer.cells[i].W_hh, with torch.nn's name beside it where it has one: "(weight_hh_l0)"."""
        slots = self._torch_slots() if cell.torch_mode is not None else ()
        alias = next((f" ({n})" for n, c, a in slots if c is cell and a == name), "")
        return f"layer.cells[{i}].{name}{alias}"

    def _forward_unbatched(self, x, state, lengths, cond, probe):
        """One sequence (T, D) run as a batch of one; state tensors (num_layers·dirs, H), cond (C,)."""
        if x.shape[0] == 0:  # said here, in the caller's shape
            raise RnnkitError(f"input has no time steps: shape {tuple(x.shape)} (T, D)")
        _check_float(x, "input")  # (B, T) token ids: before the size, which named T as D
        if x.shape[1] != self.input_size:
            raise RnnkitError(f"input size is {x.shape[1]} but the layer expects {self.input_size}: one sequence "
                              f"(T, D) = (T, {self.input_size}), got {tuple(x.shape)}")  # fmt: skip
        b = 0 if self.batch_first else 1
        if state is not None:
            _check_state_type(state, self.num_states)
            given = state if isinstance(state, tuple | list) else (state,)
            n = self.num_layers * self.dirs
            want = [(n, self.output_size), (n, self.hidden_size)][: len(given)]
            if any(tuple(s.shape) != w for s, w in zip(given, want)):  # said in the caller's shapes
                shapes = ", ".join(str(tuple(s.shape)) for s in given)
                # (h's width is proj_size where there is one: it read "(num_layers*dirs, H) = (1, 2), (1, 4)")
                forms = ("(num_layers*dirs, proj_size)", "(num_layers*dirs, H)")[: len(want)]
                form, sep = (
                    (" and ".join(forms), " and ") if self.proj_size else ("(num_layers*dirs, H)", ", ")
                )
                raise RnnkitError(f"for one unbatched sequence (T, D) the state must be {form} = "
                                  f"{sep.join(map(str, want))}, got {shapes}")  # fmt: skip
            state = (
                tuple(s.unsqueeze(1) for s in given)
                if isinstance(state, tuple | list)
                else state.unsqueeze(1)
            )
        if lengths is not None:
            try:  # torch's own errors else ("new(): invalid data type 'str'"), where a batch gets _mask's line
                lengths = _as_lengths(lengths)
            except (TypeError, ValueError, RuntimeError):
                raise RnnkitError(
                    f"for one unbatched sequence (T, D) lengths is one integer, got {lengths!r:.60}"
                ) from None
            if lengths.numel() != 1:
                raise RnnkitError(f"for one unbatched sequence (T, D) lengths is one number, got shape "
                                  f"{tuple(lengths.shape)}")  # fmt: skip
            lengths = lengths.reshape(1)
        _check_cond_type(cond)
        # (a layer without conditioning given cond: the batched call's line, not "cond must have shape (C,) = (0,)",
        # which a cond of shape (0,) then met with that line anyway)
        if (self.cond_size and (cond is not None or self._needs_cond(state))) and (
            cond is None or cond.shape not in ((self.cond_size,), (1, self.cond_size))
        ):
            raise RnnkitError(f"for one unbatched sequence (T, D) cond must have shape (C,) = ({self.cond_size},), "
                              f"got {None if cond is None else tuple(cond.shape)}")  # fmt: skip
        cond = cond.unsqueeze(0) if cond is not None and cond.dim() == 1 else cond
        out, state = self.forward(x.unsqueeze(b), state, lengths, cond, probe)
        return out.squeeze(b), (
            tuple(s.squeeze(1) for s in state) if self.num_states == 2 else state.squeeze(1)
        )

    def __prepare_scriptable__(self):
        """torch.jit.script calls this on every module of a model before compiling it: refused in one line
        (TorchScript can't compile forward's signature, let alone the loop)."""
        raise RnnkitError(SCRIPT_ERROR)

    def flatten_parameters(self):
        """No-op, for code written for torch.nn's RNNs (which compact their weights for cuDNN here)."""

    def _dropout(self, out, mask, order):
        """Dropout between layers on out (T, B, ·). For a PackedSequence (order: its sorted_indices, or the batch
        in order where it has none), drawn as torch.nn draws it, over the packed outputs alone (the valid steps, time-major,
        the batch longest first): the same seed gives torch.nn's masks, and leaves the generator where it does."""
        # (on the meta device there are no values to draw over: shapes alone)
        if order is None or not (self.training and 0 < self.dropout < 1) or out.is_meta:
            return F.dropout(out, self.dropout, self.training)
        T, B = out.shape[:2]
        order = order.to(out.device)
        valid = torch.ones(T, B, dtype=torch.bool, device=out.device) if mask is None else mask[..., 0] != 0
        valid = valid[:, order]  # in the packed order: row t holds the batch_sizes[t] longest first
        # the valid rows' places once, as numbers: a boolean index put back (index_put) ran a nonzero in its graph,
        # which under torch.compile warned "Backend compiler `inductor` failed with aten.nonzero" and "Error detected
        # in IndexPutBackward0" at every compile; nonzero here is one graph break, as torch.nn's packing has
        places = valid.reshape(-1).nonzero().squeeze(1)  # (n,) of T·B
        flat = out[:, order].reshape(T * B, -1)
        kept = F.dropout(flat.index_select(0, places), self.dropout)
        with autocast_off(out):  # (see joined)
            dropped = flat.new_zeros(flat.shape).index_copy(0, places, kept).reshape(out.shape)
        return dropped[:, torch.argsort(order)]

    def _forward_packed(self, packed, state, lengths, cond, probe):
        """torch.nn's interface for packed batches: unpacked into padded steps with their lengths (the
        batch in its original order, as the state is), run, and packed again like the input."""
        if lengths is not None:
            raise RnnkitError(
                "give lengths or a PackedSequence, not both: a PackedSequence carries its lengths"
            )
        if packed.data.dim() != 2:  # (padded, it was read as one unbatched sequence, or failed inside torch)
            raise RnnkitError(f"a PackedSequence must hold data of shape (sum of the lengths, D), got shape "
                              f"{tuple(packed.data.shape)}: pack sequences of shape (T, D) (s.unsqueeze(-1) for "
                              "one number a step)")  # fmt: skip
        if packed.data.is_meta and packed.sorted_indices is not None:
            # shapes alone, as torch.nn's RNNs give them: pad_packed_sequence reads the order's values, which a meta
            # tensor holds none of ("Cannot copy out of meta tensor"); the batch in packed order has the same shapes
            out, state = self._forward_packed(
                PackedSequence(packed.data, packed.batch_sizes), state, None, cond, probe
            )
            return PackedSequence(
                out.data, out.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            ), state
        # torch's packing ops have no torch.func rule nor forward-mode AD formula ("Cannot access data pointer of
        # Tensor that doesn't have storage" under grad, jacrev, jvp; NotImplementedError under forward_ad): there
        # the same copies as plain indexing (transformed: plain_ops_only as it is, also while dynamo traces)
        plain = transformed()
        pad = _pad_plain if plain else pad_packed_sequence
        with autocast_off(packed.data):  # (see joined)
            padded, lengths = pad(packed, batch_first=self.batch_first)
        order = packed.sorted_indices
        if order is None:  # packed from a batch sorted already
            order = torch.arange(padded.shape[0 if self.batch_first else 1])
        out, state = self.forward(padded, state, lengths, cond, probe, _sorted=order)
        if packed.sorted_indices is not None:  # the order the packed data follows
            order = packed.sorted_indices
            out, lengths = out.index_select(0 if self.batch_first else 1, order), lengths[order.cpu()]
        if plain:
            data = _pack_plain(out, packed.batch_sizes, self.batch_first)
        else:
            with autocast_off(out):
                data = pack_padded_sequence(out, lengths, batch_first=self.batch_first).data
        return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), state

    def step(self, x_t, state=None, cond=None, *, hx=None):
        """One time step for a (B, D) input (sampling loops): returns (out_t (B, H·dirs), state). Like
        torch.nn's cells it also takes one unbatched (D,) input: out_t (H·dirs,), state tensors (layers, H), and the
        state as hx= (torch.nn's name, as forward takes it). Stepping T times, the state fed back, gives forward's
        outputs and final state over the T steps. In training mode the dropout between layers draws a new mask at
        every step, as forward draws one per step and unit (the same distribution, not the same masks for a seed as
        forward over the whole sequence); call layer.eval() to step without dropout. Each step is a call of the
        layer, its hooks run as at any call (with x_t as a sequence of one step)."""
        if hx is not None:
            if state is not None:
                raise RnnkitError("give the state as state or as hx (torch.nn's name), not both")
            state = hx
        if self.dirs == 2:
            raise RnnkitError(
                "a bidirectional layer reads the whole sequence; it cannot run one step at a time"
            )
        if not isinstance(x_t, torch.Tensor) or x_t.dim() not in (1, 2):
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise RnnkitError(f"step takes one time step x_t of shape (B, D) or (D,), got {got}")
        _check_float(x_t, "x_t")  # (B,) token ids: before the size, which named B as D
        if x_t.shape[-1] != self.input_size:  # said here, in the step's shapes
            raise RnnkitError(f"x_t has {x_t.shape[-1]} features but the layer expects {self.input_size}: x_t (B, D) or "
                              f"(D,) with D = {self.input_size}")  # fmt: skip
        # (called as a module, not self.forward: the layer's hooks, a pre-hook scaling the input say, were skipped,
        # and stepping gave other outputs than forward over the sequence)
        if x_t.dim() == 1:  # one sequence's step: the unbatched (T, D) form with T = 1
            out, state = self(x_t.unsqueeze(0), state, cond=cond)
            return out.squeeze(0), state
        out, state = self(x_t.unsqueeze(1 if self.batch_first else 0), state, cond=cond)
        return out.squeeze(1 if self.batch_first else 0), state

    # --- checks and set-up -------------------------------------------------------------------
    def _check_input(self, x):
        if not isinstance(x, torch.Tensor):
            raise RnnkitError(f"input must be a torch.Tensor, got {type(x).__name__}")
        layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
        if x.dim() != 3:
            raise RnnkitError(
                f"input must have 3 dimensions {layout} (or 2 for one sequence (T, D)), got shape {tuple(x.shape)}"
            )
        _check_float(x, "input")
        if x.shape[-1] != self.input_size:
            raise RnnkitError(f"input size is {x.shape[-1]} but the layer expects {self.input_size} {layout}")
        # (not ModuleList's [0] nor nn.Module.__getattr__ for W_xh: 2 µs)
        lead = next(iter(self._modules["cells"]))
        w = lead._parameters.get("W_xh")
        if w is None and "W_xh" not in lead._parameters:  # parametrized: computed once, in the run
            w = lead.weight_like()
        if w is None:  # set to None: said in _check_weights' line
            self._check_weights(0, lead)
        # (both conversions named, as torch.nn's RNNs name them: "convert one" named neither)
        if x.device != w.device:
            raise RnnkitError(f"input is on {x.device} but the layer's weights are on {w.device}; move the input "
                              f"(x.to('{w.device}')) or the layer (layer.to('{x.device}'))")  # fmt: skip
        if x.dtype != w.dtype and not _autocast_casts(x, w):
            raise RnnkitError(f"input is {x.dtype} but the layer's weights are {w.dtype}; convert the input "
                              f"(x.to({w.dtype})) or the layer (layer.to({x.dtype}))")  # fmt: skip
        steps = x.shape[1 if self.batch_first else 0]
        if steps == 0:
            raise RnnkitError(f"input has no time steps: shape {tuple(x.shape)} {layout}")
        if isinstance(steps, torch.SymInt) and torch.compiler.is_exporting():
            # a dynamic T (torch.export.Dim, from 0 unless given a min): the check above ran while tracing only, and
            # the program failed deep in its scan at T = 0 ("select(): index 0 out of range"); this runs with it
            torch._assert_async(torch.scalar_tensor(steps) > 0, "rnnkit: input has no time steps (T = 0)")
        return x.transpose(0, 1).contiguous() if self.batch_first else x.contiguous()

    def _mask(self, lengths, T, B, xs):
        if lengths is None:
            return None
        try:
            lengths = _as_lengths(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise RnnkitError(
                f"lengths must be integers, one per sequence ({B},), got {lengths!r:.60}"
            ) from None
        _refuse_layout(lengths, "lengths must be a dense tensor,", "lengths.to_dense()")
        if lengths.device.type == "meta" and xs.device.type != "meta":
            raise RnnkitError("lengths is a meta tensor, which holds no values; give the lengths on the CPU or the "
                              f"input's device ({xs.device})")  # fmt: skip
        if lengths.shape == (0,) and B == 0:  # [] for an empty batch: as_tensor makes it float
            lengths = lengths.long()
        # (a complex tensor is not floating point: min() below failed with "min_all" not implemented)
        integer = not (lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool)
        if lengths.shape != (B,) or not integer:
            # (a float one, as torch.nn's pack_padded_sequence takes it, cut to integers there: the fix named)
            fix = "; give them as integers, lengths.long()" if lengths.is_floating_point() else ""
            raise RnnkitError(
                f"lengths must be an integer tensor of shape ({B},), got {lengths.dtype} {tuple(lengths.shape)}{fix}"
            )
        wide = lengths.dtype == torch.uint64  # (long() wraps its values from 2**63 on to negatives)
        lengths = lengths.long()  # torch has no min() of uint16-64 ("min_all" not implemented for 'UInt32')
        # checked in eager mode: in a graph being compiled, exported or traced by make_fx (torch.compile,
        # torch.export, torch.func.linearize) and on the meta device the values aren't known; an empty batch has none
        values = None if torch.compiler.is_compiling() else _values(lengths)  # (dynamo can't trace _values)
        if B and torch.compiler.is_compiling() and not transformed():
            # in a compiled or exported graph the check runs with the graph (a length of 0 gave zeros, one past T
            # ran T steps, in silence; torch.onnx drops it); not under vmap, where the assert has no batching rule
            ok = ((lengths >= 1) & (lengths <= T)).all()
            torch._assert_async(ok, "rnnkit: lengths must lie in [1, T] (T: the time dimension of the input)")
        if B and values is not None and values.device.type != "meta":
            lo, hi = int(values.min()), int(values.max())
            if wide and lo < 0:  # said as given: 2**64 - 1 was "got values from -1 to 3"
                lo, hi = min(v % 2**64 for v in values.tolist()), max(v % 2**64 for v in values.tolist())
            if lo < 1 or hi > T:
                raise RnnkitError(
                    f"lengths must lie in [1, {T}] (the time dimension), got values from {lo} to {hi}"
                )
        steps = torch.arange(T, device=xs.device)[:, None]
        return (steps < lengths.to(xs.device)[None, :]).to(xs.dtype)[..., None]  # (T, B, 1)

    def _needs_cond(self, state):
        """Whether a call must give cond: a conditioned layer needs v, except with cond_mode="state" where a state is
        given, which takes the place of h_0 = tanh(W_vs v + b) (a truncated-BPTT loop or a sampler stepping with the
        state carried had to give v again at every call, for nothing)."""
        return bool(self.cond_size) and not (self.cond_mode == "state" and state is not None)

    def _initial_state(self, state, cond, B, xs):
        n, H = self.num_layers * self.dirs, self.hidden_size
        shapes = [(n, B, self.output_size), (n, B, H)][: self.num_states]  # h, and c of an lstm
        _check_cond_type(cond)
        if cond is not None or self._needs_cond(state):
            if not self.cond_size:
                raise RnnkitError("cond was given but the layer was built with cond_size=0; build it with "
                                  "cond_size=C (the size of v) to condition on v, or leave cond out")  # fmt: skip
            if cond is None or cond.shape != (B, self.cond_size):
                got = "none: give the vector v, layer(x, cond=v)" if cond is None else tuple(cond.shape)
                raise RnnkitError(f"cond must have shape ({B}, {self.cond_size}), got {got}")
            if cond.device != xs.device or (cond.dtype != xs.dtype and not _autocast_casts(cond, xs)):
                raise RnnkitError(f"cond is {cond.dtype} on {cond.device} but input is {xs.dtype} on {xs.device}; "
                                  "convert one (cond.to(x))")  # fmt: skip
            # a conditioning weight or bias converted alone (layer.W_vh[1].double()): torch's error from a matmul, else;
            # one of another shape (functional_call, layer.W_vs[0].weight = ...): torch's error, the native loop's of
            # xw's columns, or a W_vh of one row added to every gate's column in silence
            rows = {"W_vh": self._modules["cells"][0].gates * H, "W_vs": self.output_size}
            for name in ("W_vh", "W_vs"):
                for k, m in enumerate(self._modules.get(name) or ()):
                    want = (rows[name], self.cond_size)
                    for part, w, shape in (("", m.weight, want), (".bias", m.bias, want[:1])):
                        if (w is None and not part) or (w is not None and tuple(w.shape) != shape):
                            got = "is None" if w is None else f"has shape {tuple(w.shape)}"
                            raise RnnkitError(f"layer.{name}[{k}]{part} {got}, but this layer needs {shape}; give it "
                                              "a tensor of that shape")  # fmt: skip
                        if w is None or (
                            w.device == xs.device and (w.dtype == xs.dtype or _autocast_casts(w, xs))
                        ):
                            continue
                        raise RnnkitError(f"layer.{name}[{k}]{part} is {w.dtype} on {w.device} but input is {xs.dtype} "
                                          f"on {xs.device}; convert or move the whole layer (layer.to(...)), not one "
                                          "part")  # fmt: skip
        if state is None:
            zeros = tuple(xs.new_zeros(shape) for shape in shapes)
            if "W_vs" in self._modules:
                h0 = torch.stack([torch.tanh(_conditioning(w, cond, self._half_type())) for w in self.W_vs])
                return (h0, *zeros[1:])
            return zeros
        _check_state_type(state, self.num_states)
        got = f"a {type(state).__name__} of {len(state)}" if isinstance(state, tuple | list) else "one tensor"
        state = state if isinstance(state, tuple | list) else (state,)
        what = "a tuple (h, c)" if self.num_states == 2 else "h"
        if len(state) != self.num_states:
            # one state per layer (Keras's way): torch.nn's is one tensor of them all, as torch.stack makes it
            layers = self.num_layers * self.dirs
            per_layer = self.num_states == 1 and len(state) == layers > 1
            hint = (
                f" (one per layer? h is one tensor ({layers}, B, H): torch.stack them)" if per_layer else ""
            )
            raise RnnkitError(f"state for {self.cell_name} must be {what}, got {got}{hint}")
        for s, shape, name in zip(state, shapes, ("h", "c")):
            if tuple(s.shape) != shape:
                width = "proj_size" if self.proj_size and name == "h" else "H"
                hint = ""
                if s.dim() == 3 and s.shape[1] == xs.shape[0] != B and (s.shape[0], s.shape[2]) == shape[::2]:
                    # its batch is x's time axis: x in the other layout (a decoder's (1, B, D) step read as B = 1)
                    hint = (f"; x was read as {'(B, T, D)' if self.batch_first else '(T, B, D)'} (T = {xs.shape[0]}, "
                            f"B = {B}) since the layer has batch_first={self.batch_first}: for x of shape "
                            f"{'(T, B, D)' if self.batch_first else '(B, T, D)'} make it with "
                            f"batch_first={not self.batch_first}")  # fmt: skip
                raise RnnkitError(
                    f"state {name} must have shape (num_layers*dirs, B, {width}) = {shape}, got {tuple(s.shape)}{hint}"
                )
            if s.device != xs.device or (s.dtype != xs.dtype and not _autocast_casts(s, xs)):
                raise RnnkitError(f"state {name} is {s.dtype} on {s.device} but input is {xs.dtype} on {xs.device}; "
                                  f"convert one ({name}.to(x))")  # fmt: skip
        return tuple(state)

    def _probes(self, probe):
        n = self.num_layers * self.dirs
        if probe is not None and torch.compiler.is_exporting():
            # (a program of forward ops: a probe passed to export recorded nothing, in silence)
            warnings.warn("a GradProbe records in eager code and under torch.compile, not in a torch.export "
                          "program (which holds no backward): export without it", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
            return [None] * n
        if probe is None or isinstance(probe, GradProbe):
            return [probe] + [None] * (n - 1)
        # anything else failed with "object of type 'type' has no len()" (GradProbe without its parentheses) or,
        # a list holding something else, an AttributeError from inside backward
        bad = [
            p
            for p in (probe if isinstance(probe, list | tuple) else [probe])
            if not isinstance(p, GradProbe | None)
        ]
        if bad:
            got = (
                "the class GradProbe: give an instance, GradProbe()"
                if bad[0] is GradProbe
                else type(bad[0]).__name__
            )
            raise RnnkitError(f"probe must be an rnnkit.GradProbe, or a list of them (or None), one per layer and "
                              f"direction ({n}); got {got}")  # fmt: skip
        if len(probe) != n:
            raise RnnkitError(f"give one probe per layer and direction ({n}), got {len(probe)}")
        return list(probe)

    # --- converters ---------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, m, backend=None):
        """The same function as a torch.nn.RNN/LSTM/GRU, with every weight copied (weights m ties stay tied).

        Copies, so that m and the layer train apart (a check of one against the other trains both side by side);
        in `model.rnn = Recurrent.from_torch(model.rnn)`, build the optimizer after the swap: one built before
        holds m's old Parameters and steps them, never the layer's."""
        if not isinstance(m, nn.RNNBase) or m.mode not in TORCH_MODES:
            # (a class of torch's name from elsewhere, torch.ao's quantized LSTM, was "got LSTM"; a wrapper: torch.compile's,
            # DataParallel, DDP)
            kind = m if isinstance(m, type) else type(m)  # (the class itself was 'got builtins.type')
            got = kind.__name__ if kind.__module__.startswith("torch.nn.") else f"{kind.__module__}.{kind.__name__}"  # fmt: skip
            inner = next((a for a in ("_orig_mod", "module") if isinstance(getattr(m, a, None), nn.Module)), None)  # fmt: skip
            hint = f"; give the module it wraps, m.{inner}" if inner else ""
            if kind is m:
                torch_nn = kind.__module__.startswith("torch.nn.")
                got = f"the class {'torch.nn.' if torch_nn else ''}{got}"
                if issubclass(kind, nn.RNNBase):
                    hint = f"; give a module of it, m = {'nn.' if torch_nn else ''}{kind.__name__}(...)"
            elif isinstance(m, nn.RNNCellBase):
                # one step: rnnkit's cell of the same function takes its state_dict (the README's way for torch's cells)
                name = next(
                    (n for c, n in ((nn.GRUCell, "GRU"), (nn.LSTMCell, "LSTM")) if isinstance(m, c)), None
                )
                name = name or ("RNNReLU" if getattr(m, "nonlinearity", None) == "relu" else "RNNTanh")
                bias = "" if m.bias else ", bias=False"
                hint = (f", which runs one step: rnnkit.cells.{name}({m.input_size}, {m.hidden_size}{bias}) is that "
                        "step, taking its weights with cell.load_state_dict(m.state_dict())")  # fmt: skip
            raise RnnkitError(f"from_torch takes torch.nn.RNN, LSTM or GRU, got {got}{hint}")
        # a subclass's (or the module's own) forward computes something else: only the weights carry over
        base = next(c for c in type(m).__mro__ if c.__module__ == nn.RNNBase.__module__)
        if "forward" in vars(m) or type(m).forward is not base.forward:
            who = "m" if "forward" in vars(m) else f"{type(m).__module__}.{type(m).__qualname__}"
            warnings.warn(f"from_torch: {who} defines a forward of its own; only its weights are converted, and the "
                          f"layer computes torch.nn.{base.__name__}'s function", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
        p = next(m.parameters())
        if p.is_complex():  # (torch.nn runs complex sequences on the CPU; rnnkit's cells and loops are real)
            raise RnnkitError(f"from_torch: m's weights are {p.dtype}; rnnkit's cells compute in real numbers: convert "
                              "a real module (m.float()), or keep torch.nn's for complex sequences")  # fmt: skip
        # one weight of another dtype or device was cast to the first's in silence (a float64 W_hh's bits lost),
        # where m itself refuses to run
        other = next(
            ((n, q) for n, q in m.named_parameters() if (q.dtype, q.device) != (p.dtype, p.device)), None
        )
        if other is not None:
            raise RnnkitError(f"from_torch: m.{other[0]} is {other[1].dtype} on {other[1].device} but m's first weight "
                              f"is {p.dtype} on {p.device}, a module torch.nn refuses to run; give m one dtype and "
                              f"device (m.to({p.dtype}))")  # fmt: skip
        # forget_bias None: reset_parameters draws the forget bias as torch does; a one-layer m's dropout was warned
        # of by torch when m was made (said again here, a filter of torch's warning did not hold it); the weights
        # drawn here are thrown away by the copy, the global generator left as it was (a model swapping in
        # from_torch(self.rnn) drew its other weights, dropout masks and batches otherwise than torch.nn's)
        with _quiet(r"dropout=.* does nothing with num_layers=1"), torch.random.fork_rng(devices=[]):
            layer = cls(TORCH_MODES[m.mode], m.input_size, m.hidden_size, m.num_layers, m.bidirectional,
                        m.dropout, m.bias, backend=backend, batch_first=m.batch_first,
                        proj_size=getattr(m, "proj_size", 0),
                        **({"forget_bias": None} if m.mode == "LSTM" else {}))  # fmt: skip
        layer.to(device=p.device, dtype=p.dtype)
        _refuse_reparametrized(m, [name for name, _ in layer._torch_names()], "from_torch", "m")
        _warn_of_hooks(m, "from_torch: m", "the layer", f"torch.nn.{base.__name__}")
        _copy_weights(m, layer)
        return layer.train(m.training)  # an eval() module converts to one in eval mode (no dropout)

    def to_torch(self) -> nn.RNNBase:
        """A torch.nn.RNN/LSTM/GRU with the same weights (for the cells torch has)."""
        mode = self.cells[0].torch_mode
        if mode is None:
            raise RnnkitError(
                f"torch.nn has no {self.cell_name} cell (it has rnn_tanh, rnn_relu, lstm and gru)"
            )
        Module = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(mode, nn.RNN)
        # (a subclass keeps its base's torch_mode: one with a step of its own gave torch's function in silence)
        base, redefined = _redefined(type(self.cells[0]))
        if redefined:
            raise RnnkitError(f"to_torch: {type(self.cells[0]).__name__} redefines {', '.join(redefined)} of rnnkit's "
                              f"{base.__name__}, so torch.nn.{Module.__name__} would compute another function; "
                              "torch.nn has no such cell")  # fmt: skip
        # (skip_input and residual join layers: with one layer they do nothing, and torch.nn computes its function)
        joins = ("skip_input", "residual") if self.num_layers > 1 else ()
        extras = [name for name in (*joins, "cond_size") if getattr(self, name)]
        if extras:
            raise RnnkitError(f"torch.nn's RNNs have no {' or '.join(extras)}: this {self.cell_name} layer has "
                              "no torch.nn equivalent")  # fmt: skip
        for i, cell in enumerate(self.cells):
            _refuse_reparametrized(
                cell, ["W_xh", "W_hh", "b_xh", "b_hh", "W_hr"], "to_torch", f"layer.cells[{i}]"
            )
        # a subclass's forward (out * 3) or the layer's hooks compute something else: only the weights carry over
        if "forward" in vars(self) or type(self).forward is not Recurrent.forward:
            who = (
                "the layer"
                if "forward" in vars(self)
                else f"{type(self).__module__}.{type(self).__qualname__}"
            )
            warnings.warn(f"to_torch: {who} defines a forward of its own; only its weights are converted, and the "
                          f"module computes torch.nn.{Module.__name__}'s function", UserWarning,
                          stacklevel=user_stacklevel())  # fmt: skip
        _warn_of_hooks(self, "to_torch: the layer", "the module", f"torch.nn.{Module.__name__}")
        kw = {"nonlinearity": "relu" if mode == "RNN_RELU" else "tanh"} if Module is nn.RNN else {}
        kw.update({"proj_size": self.proj_size} if self.proj_size else {})
        p = self.cells[0].W_xh
        # (said when self was made; the generator left as it was, as in from_torch)
        with (
            _quiet(r"dropout option adds dropout after all but last recurrent layer"),
            torch.random.fork_rng(devices=[]),
        ):
            m = Module(self.input_size, self.hidden_size, self.num_layers, bias=self.cells[0].bias,
                       batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional, **kw)  # fmt: skip
        m.to(device=p.device, dtype=p.dtype)
        _copy_weights(self, m)
        return m.train(self.training)

    def __setstate__(self, state):
        """OwnParametersModule's, with what a layer pickled by an older rnnkit lacks: proj_size (0: it had none)
        and bias (its cells'); forward failed 'no attribute output_size' without them."""
        super().__setstate__(state)
        self.__dict__.setdefault("proj_size", 0)
        self.__dict__.setdefault("bias", self.cells[0].bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """nn.Module's, with the layout in the state_dict's metadata (bidirectional: what cells.1 is), for the load."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", {}).get(prefix[:-1])
        if meta is not None:
            meta["bidirectional"] = self.bidirectional

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """nn.Module's, after renaming torch.nn's keys (_load_torch_state_dict). Not a registered pre-hook: that is a
        bound method in the module, which pickles as getattr, and a saved layer could not be loaded with
        torch.load(weights_only=True) whatever safe_globals allowed (torch.nn's RNNs can)."""
        self._load_torch_state_dict(self, state_dict, prefix)
        self._check_layout(state_dict, prefix, local_metadata, errors)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def _check_layout(self, state_dict, prefix, local_metadata, errors):
        """cells.i is layer i // 2, direction i % 2 in a bidirectional layer, layer i in another: a bidirectional
        layer's state_dict loaded into a 2-layer one (D = H: the same keys and shapes) in silence, its reverse cell
        taken for layer 1, where torch.nn's keys (weight_ih_l0_reverse, weight_ih_l1) don't fit. Said as torch's size
        mismatches are, where a key would so land in a cell of another layer or direction (cells.0 never does)."""
        given = local_metadata.get("bidirectional")
        if given is None or bool(given) == self.bidirectional:
            return  # (a state_dict saved before, or a plain dict: not known)
        taken = [
            i
            for i in range(1, len(self.cells))
            if any(k.startswith(f"{prefix}cells.{i}.") for k in state_dict)
        ]
        if not taken:
            return
        i, way = taken[0], ("forward", "reverse")[taken[0] % 2]
        theirs, ours = (f"layer {i // 2}'s {way} cell", f"layer {i}'s") if given else (
            f"layer {i}'s cell", f"layer {i // 2}'s {way} one")  # fmt: skip
        was, now = ("bidirectional", "unidirectional") if given else ("unidirectional", "bidirectional")
        errors.append(f"{prefix}cells.{i} in this state_dict is {theirs} (a {was} layer's), where this {now} layer's "
                      f"cells.{i} is {ours}; build the layer with bidirectional={bool(given)} to load it")  # fmt: skip

    def _load_torch_state_dict(self, module, state_dict, prefix, *_):
        """_load_from_state_dict's renaming (a pre-hook in layers saved before): a state_dict of the
        torch.nn.RNN/LSTM/GRU that `to_torch` gives (keys weight_ih_l0, ...) loads too, its keys renamed to this
        layer's (cells.0.W_xh, ...). Each torch name goes to its own cell's key (not to the one name
        named_parameters keeps of a Parameter: a tied weight's second torch name, weight_hh_l0_reverse, was left
        over, "Missing key(s): cells.1.W_hh"); one for a weight computed from others (a parametrization, pruning:
        no key of that name) is said in one line, not a bare KeyError."""
        if self.cells[0].torch_mode is None:
            return
        # any part of them is renamed (strict=False)
        given = [slot for slot in self._torch_slots() if prefix + slot[0] in state_dict]
        index = {id(cell): i for i, cell in enumerate(self.cells)}
        for name, cell, attr in given:  # (all checked before any is renamed: see below)
            i = index[id(cell)]
            if attr not in cell._parameters:
                raise RnnkitError(f"load_state_dict: {name} is torch.nn's name for layer.cells[{i}].{attr}, which is "
                                  "computed from other parameters (a parametrization or pruning) and takes no weight; "
                                  "load the state_dict before reparametrizing the cell, or remove that first")  # fmt: skip
        # (checked in the loop that renamed, a refusal at cells[1] left cells[0] the torch names it was given, and the
        # next load's errors named them: "Missing key(s): weight_hh_l0" for a dict of the layer's own keys)
        for name, cell, attr in given:
            ours = f"{prefix}cells.{index[id(cell)]}.{attr}"
            if ours not in state_dict:
                state_dict[ours] = state_dict.pop(prefix + name)
                # the cell's load names the key as given in its errors ("size mismatch for weight_hh_l0 (here
                # cells.0.W_hh)"): it named only its own, a key the caller never wrote
                cell.__dict__.setdefault("_torch_keys", {})[attr] = prefix + name
        # a torch-named dict's missing keys by torch.nn's names: "Missing key(s): cells.1.W_hh" named a key the
        # caller never wrote
        for name, cell, attr in self._torch_slots() if given else ():
            if f"{prefix}cells.{index[id(cell)]}.{attr}" not in state_dict:
                cell.__dict__.setdefault("_torch_keys", {}).setdefault(attr, prefix + name)

    def __getattr__(self, name):
        """torch.nn's names for the weights (weight_ih_l0, weight_hh_l1_reverse, bias_hh_l0, weight_hr_l0), for
        the cells torch has: this layer's own parameters under those names (the same tensors, so
        nn.init.orthogonal_(layer.weight_hh_l0) initialises cells[0].W_hh, as code written for torch.nn does)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            slot = self._torch_slot(name)
            if slot is not None:
                return getattr(*slot)
            # (all_weights' property's AttributeError for a cell torch.nn lacks)
            cells = self.__dict__.get("_modules", {}).get("cells")
            if name == "all_weights" and cells and cells[0].torch_mode is None:
                raise _NoTorchWeights(f"all_weights lists torch.nn's weights; torch.nn has no {self.cell_name} cell "
                                      "(use named_parameters())") from None  # fmt: skip
            # (torch.nn's weight_hh_l0 of a leaky or mut1 layer: "'Recurrent' object has no attribute", no way on)
            if (
                cells
                and cells[0].torch_mode is None
                and re.fullmatch(r"(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?", name)
            ):
                raise _NoTorchWeights(f"{name} is torch.nn's name for a weight; torch.nn has no {self.cell_name} cell: "
                                      "this layer's weights are its cells' (cells[0].W_xh, cells[0].W_hh, ...; "
                                      "named_parameters() lists them)") from None  # fmt: skip
            raise

    def __setattr__(self, name, value):
        """layer.weight_hh_l0 = nn.Parameter(...) replaces cells[0].W_hh, as it replaces torch.nn.LSTM's weight.
        A plain tensor takes the parameter's place as torch.func.functional_call puts it there (in _parameters,
        where torch.nn.LSTM keeps weight_hh_l0): functional_call(layer, {"weight_hh_l0": t, ...}, x) with a
        torch.nn model's keys failed ("cannot assign 'torch.FloatTensor' as parameter 'W_hh'"). From anywhere
        else, as torch.nn.LSTM, a plain tensor is refused: it took the weight's place and never trained."""
        slot = self._torch_slot(name)
        if slot is None:
            return super().__setattr__(name, value)
        # (sys._getframe is a graph break under torch.compile, where functional_call's swap is traced: not asked)
        swapping = not torch.compiler.is_compiling() and sys._getframe(1).f_code is _swap_tensor.__code__
        # functional_call's swap of a tied weight, in and back: the other slots that hold it too (see _functional_ties)
        slots = [slot, *self._functional_ties(name, *slot)] if swapping else [slot]
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            # the user's own code: torch.nn's error, not a weight that silently stops training (a plain tensor is
            # not among parameters() to train); not asked under torch.compile (fullgraph=True failed)
            if not torch.compiler.is_compiling() and not swapping:
                raise TypeError(f"cannot assign '{value.type()}' as parameter '{name}' (torch.nn.Parameter or None "
                                f"expected): layer.{name} = nn.Parameter(t), or copy into it with torch.no_grad()")  # fmt: skip
            for cell, attr in slots:
                # (a weight computed by pruning or a parametrization: set as functional_call sets the cell's own key,
                # else it took a _parameters entry beside the computed one: pruning's hook then failed, in every
                # later call too, and a parametrized weight ignored the tensor in silence)
                if attr in cell._parameters:
                    cell._parameters[attr] = value
                else:
                    setattr(cell, attr, value)
        else:
            for cell, attr in slots:
                setattr(cell, attr, value)

    def _functional_ties(self, name, cell, attr):
        """The other (cell, attribute) slots that torch.func.functional_call(layer, {name: t}, ...) puts t in with
        torch.nn's key `name`, and puts the weight back in after: where the weight is tied (one Parameter in two
        slots: from_torch of a GRU whose weight_hh_l0_reverse is weight_hh_l0), functional_call (tie_weights=True,
        its default) replaces every name of it that named_parameters(remove_duplicate=False) lists, and that lists
        the layer's own names (cells.0.W_hh, cells.1.W_hh), not torch.nn's: t took one slot, the old weight stayed
        in the other in silence (torch.nn.GRU replaces both). Read from functional_call's frames: its tie_weights
        and the keys it was given (a slot given a key of its own keeps what that key gives it). Under torch.compile,
        which can't read frames, only the named slot is replaced: give a tied weight's own key (cells.0.W_hh) there.
        A torch.nn key given with the layer's own key of the same slot is refused (see below)."""
        frame, prefix = sys._getframe(3), ""
        # the key as given: with the path to this layer in a bigger model too
        if frame.f_code is _ACCESSOR_SWAP_CODE:
            full = frame.f_locals.get("name", "")
            prefix = full[: -len(name)] if isinstance(full, str) and full.endswith(name) else ""
        for _ in range(6):
            frame = frame.f_back
            if frame is None:
                return []
            if frame.f_code is _REPARAMETRIZE_CODE:
                break
        else:
            return []
        scope = frame.f_locals
        keys = scope.get("untied_parameters_and_buffers") or {}
        index = {id(c): i for i, c in enumerate(self.cells)}
        own = f"{prefix}cells.{index[id(cell)]}.{attr}"
        if own in keys:
            # two keys for one slot: the second swap took the first's tensor for the weight and put it back after,
            # so the layer kept a plain tensor for good (not trained, other numbers). Said at this swap, which is
            # then never undone (functional_call undoes the ones before it)
            raise RnnkitError(f"functional_call got {prefix}{name} and {own} (or a key tied to it): torch.nn's name "
                              "and the layer's own for one weight; give the weights under one of the two")  # fmt: skip
        if not scope.get("tie_weights"):
            return []
        held = cell._parameters.get(attr)
        if held is None:  # computed (pruning, a parametrization): not a Parameter that other slots could hold
            return []
        return [
            (c, a)
            for n, c, a in self._torch_slots()
            if c._parameters.get(a) is held
            and (c, a) != (cell, attr)
            and prefix + n not in keys
            and f"{prefix}cells.{index[id(c)]}.{a}" not in keys
        ]

    def _alias_message(self, name):
        """For torch.nn's weight name `name` of this layer: why torch's utilities cannot take it (else None)."""
        slot = self._torch_slot(name) if isinstance(name, str) else None
        if slot is None:
            return None
        cell, attr = slot
        i = next(i for i, c in enumerate(self.cells) if c is cell)
        return (
            f"{name} is torch.nn's name for layer.cells[{i}].{attr}, not a parameter of the layer itself: apply "
            f"torch.nn.utils.prune, weight_norm, spectral_norm or parametrizations to (layer.cells[{i}], '{attr}')"
        )

    def _torch_slot(self, name):
        """(cell, attribute) that torch.nn's weight name `name` stands for, or None."""
        if not name.startswith(("weight_", "bias_")):
            return None
        cells = self.__dict__.get("_modules", {}).get("cells")  # none yet while __init__ runs
        if not cells or cells[0].torch_mode is None:
            return None
        return next(
            ((cell, attr) for torch_name, cell, attr in self._torch_slots() if torch_name == name), None
        )

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """As torch.nn's RNNs give it: per layer and direction, [weight_ih, weight_hh, bias_ih, bias_hh]
        (without the biases for bias=False; weight_hr last with proj_size). The cells torch has only: for another
        an AttributeError (hasattr False, getattr's default, inspect.getmembers) that is an RnnkitError too."""
        if self.cells[0].torch_mode is None:
            # (Python takes a property's AttributeError to __getattr__, which says it: see there)
            raise AttributeError("all_weights")
        return self._per_cell(self._flat_weights)

    @property
    def mode(self) -> str | None:
        """torch.nn.RNNBase's mode ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"); None for a cell torch.nn lacks, as a
        subclass of one of torch's cells with a step of its own is (to_torch refuses it)."""
        mode = self.cells[0].torch_mode
        return None if mode is None or _redefined(type(self.cells[0]))[1] else mode

    @property
    def nonlinearity(self) -> str:
        """torch.nn.RNN's nonlinearity, "tanh" or "relu", of an rnn_tanh or rnn_relu layer (code written for torch.nn
        reads it, rnn.nonlinearity); like torch.nn.LSTM and GRU, other layers have no such attribute."""
        mode = self.mode
        if mode not in ("RNN_TANH", "RNN_RELU"):
            raise AttributeError("nonlinearity")  # (nn.Module.__getattr__ then says it has no such attribute)
        return mode[4:].lower()

    @property
    def _flat_weights_names(self) -> list[str]:
        """torch.nn's weight names in its order, read by code written against torch.nn.RNNBase internals."""
        return [name for name, _ in self._torch_names()] if self.cells[0].torch_mode else []

    @property
    def _flat_weights(self) -> list[nn.Parameter]:
        """The weights named by _flat_weights_names, as torch.nn.RNNBase keeps them (read-only here)."""
        return [p for _, p in self._torch_names()] if self.cells[0].torch_mode else []

    @property
    def _all_weights(self) -> list[list[str]]:
        """_flat_weights_names per layer and direction, as torch.nn.RNNBase's _all_weights."""
        return self._per_cell(self._flat_weights_names)

    def _per_cell(self, items):
        """A list in torch.nn's order (one block per layer and direction) cut into those blocks."""
        n = len(items) // len(self.cells)
        return [items[i : i + n] for i in range(0, len(items), n)] if items else []

    def __dir__(self):
        """torch.nn's weight names too (weight_hh_l0, ...), for completion in a shell or notebook."""
        return [*super().__dir__(), *self._flat_weights_names]

    def _torch_names(self):
        """(torch.nn's name, parameter) in torch.nn's order."""
        for name, cell, attr in self._torch_slots():
            yield name, getattr(cell, attr)

    def _torch_slots(self):
        """(torch.nn's name, cell, the cell's attribute) in torch.nn's order."""
        for i, cell in enumerate(self.cells):
            sfx = f"l{i // self.dirs}" + ("_reverse" if i % self.dirs else "")
            yield f"weight_ih_{sfx}", cell, "W_xh"
            yield f"weight_hh_{sfx}", cell, "W_hh"
            if cell.bias:
                yield f"bias_ih_{sfx}", cell, "b_xh"
                yield f"bias_hh_{sfx}", cell, "b_hh"
            if self.proj_size:
                yield f"weight_hr_{sfx}", cell, "W_hr"


# torch's private functions whose frames _functional_ties reads (torch is pinned; another torch that lacks them
# leaves a tied weight's torch.nn key to replace its one slot, as under torch.compile, instead of failing to import)
_ACCESSOR_SWAP_CODE = getattr(getattr(NamedMemberAccessor, "swap_tensor", None), "__code__", None)
_REPARAMETRIZE_CODE = getattr(  # functional_call's (a contextmanager)
    getattr(getattr(_stateless, "_reparametrize_module", None), "__wrapped__", None), "__code__", None
)


def _as_lengths(lengths):
    """torch.as_tensor(lengths), numpy's unsigned integers among them too: torch refuses np.uint64(5) and
    [np.uint64(5), ...] ("an integer is required"), which were then said not to be integers; and an array of
    negative strides, a read-only one or one of another byte order (a copy, in this machine's). In eager code a
    0-d integer array in a list ([np.array(5), ...]) and a numpy array of dtype object holding integers (pandas'
    values) are read as their integers, which torch.as_tensor refuses; other values (2.5, "a", None) stay refused."""
    if isinstance(lengths, list | tuple):
        lengths = [_integer(v) for v in lengths]
        if not torch.compiler.is_compiling() and any(isinstance(v, np.ndarray) for v in lengths):
            # an array left (np.array(2.5), np.array([5])) is no length: torch.as_tensor warned before its refusal
            raise TypeError("lengths holds an array of no integer")
        # (dynamo sees a numpy integer as an ndarray: torch.as_tensor of a list of them failed deep in dynamo)
        scalar = (int, torch.Tensor, np.ndarray, np.generic)
        if lengths and torch.compiler.is_compiling() and all(isinstance(v, scalar) for v in lengths):
            # one tensor a length: torch.as_tensor of the list fixed its values in a compiled graph, which was
            # compiled again for every new list of lengths
            return torch.stack(
                [torch.tensor(v) if isinstance(v, int) else torch.as_tensor(v) for v in lengths]
            )
    elif isinstance(lengths, numbers.Integral) and not isinstance(lengths, bool):
        lengths = int(lengths)
    elif isinstance(lengths, np.ndarray) and not torch.compiler.is_compiling():
        # np.sort(l)[::-1]: torch.as_tensor takes no negative strides (dynamo, compiling, reads arrays itself) nor
        # another byte order (a file's big-endian '>i4'); and it warns of a read-only array (np.broadcast_to's,
        # np.load(mmap_mode="r")'s) as if written to
        odd = any(s < 0 for s in lengths.strides) or not lengths.flags.writeable or not lengths.dtype.isnative
        lengths = lengths.astype(lengths.dtype.newbyteorder("=")) if odd else lengths
        if lengths.dtype == object:
            values = [_integer(v) for v in lengths.flat]
            if all(type(v) is int for v in values):  # (not True, which is an int too)
                lengths = np.array(values).reshape(lengths.shape)
    return torch.as_tensor(lengths)


def _integer(v):
    """v as a Python int where it is an integer (numpy's too, a 0-d integer array in eager code), else v."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if (
        not torch.compiler.is_compiling()
        and isinstance(v, np.ndarray)
        and v.ndim == 0
        and v.dtype.kind in "iu"
    ):
        return int(v)
    return v


def _pad_plain(packed, batch_first):
    """pad_packed_sequence(packed, batch_first) in plain indexing (see Recurrent._forward_packed): the padded batch
    in the sequences' own order, padding 0, and their lengths."""
    data, sizes = packed.data, packed.batch_sizes
    rows, steps = torch.arange(int(sizes[0])), torch.cumsum(sizes, 0) - sizes  # (B,), each step's first row
    valid = rows[None, :] < sizes[:, None]  # (T, B), the batch longest first
    where = torch.where(valid, steps[:, None] + rows[None, :], data.shape[0])  # (a padded slot: the zero row)
    padded = torch.cat((data, data.new_zeros(1, *data.shape[1:])))[where.to(data.device)]  # (T, B, ...)
    lengths = valid.sum(0)
    if packed.unsorted_indices is not None:
        padded, lengths = padded[:, packed.unsorted_indices], lengths[packed.unsorted_indices.cpu()]
    return (padded.transpose(0, 1) if batch_first else padded), lengths


def _pack_plain(out, sizes, batch_first):
    """pack_padded_sequence(out, lengths, batch_first).data in plain indexing, out's batch in the packed order
    (longest first) of batch_sizes `sizes`."""
    out = out.transpose(0, 1) if batch_first else out  # (T, B, ...)
    steps = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    rows = torch.arange(len(steps)) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    return out[steps.to(out.device), rows.to(out.device)]


def _values(t):
    """The plain tensor holding t's values, or None where they can't be read: under make_fx tracing (its proxies
    fail on int(), "trying to get value out of a tracing tensor": a deep traceback from torch.func.linearize), and
    a FakeTensor's (FakeTensorMode: FakeTensorProp, FLOPs counted without data), which raised
    DataDependentOutputException, as a meta tensor's values are not read either.
    Under vmap that is the tensor vmap wraps, all its rows at once (lengths given per sample were not checked:
    a length of 0 gave zeros, one past T ran T steps, in silence)."""
    if make_fx_tracing():
        return None
    f = torch._C._functorch
    while f.is_functorch_wrapped_tensor(t):
        t = f.get_unwrapped(t)
    return None if is_fake(t) else t


# what a cell's function is made of: a subclass of one of rnnkit's cells that redefines one computes another
_FUNCTION = ("step", "step_backward", "project_input", "input_affine", "init_state", "output_size", "gates",
             "num_states", "REC_PARAMS", "GEMMS", "EXTRAS", "tanh_tail", "input_identity")  # fmt: skip


def _redefined(cls):
    """(the rnnkit cell class that cls is or subclasses, the names in _FUNCTION that cls defines otherwise)."""
    base = next(c for c in cls.__mro__ if c.__module__.startswith("rnnkit.cells."))
    return base, [name for name in _FUNCTION if getattr(cls, name) != getattr(base, name)]


def _copy_weights(src, dst):
    """Copy every weight by torch.nn's name from src to dst (a torch.nn RNN and a Recurrent, either way), frozen
    ones staying frozen. A Parameter that src holds under two names (tied layers or directions) becomes one
    Parameter of dst's too: two copies trained apart, and a torch.nn optimizer's state (one entry per Parameter)
    no longer fits."""
    names = [name for name, _ in (src if isinstance(src, Recurrent) else dst)._torch_names()]
    first = {}
    for name in names:
        theirs = getattr(src, name)
        if id(theirs) in first:
            setattr(dst, name, getattr(dst, first[id(theirs)]))
            continue
        first[id(theirs)] = name
        with torch.no_grad():  # frozen weights stay frozen
            getattr(dst, name).copy_(theirs).requires_grad_(theirs.requires_grad)


def _warn_of_hooks(m: nn.Module, who: str, made: str, function: str):
    """A UserWarning naming m's hooks (a forward hook doubling the output), which a conversion does not carry over:
    they are m's, not its weights, and were lost in silence. `who`: 'from_torch: m'; `made`: what the conversion
    makes; `function`: what that computes."""
    hooks = [(len(getattr(m, attr, None) or ()), what) for attr, what in (
        ("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook"),
        ("_backward_pre_hooks", "backward pre-hook"), ("_backward_hooks", "backward hook"))]  # fmt: skip
    hooks = [f"{'a' if n == 1 else n} {what}{'' if n == 1 else 's'}" for n, what in hooks if n]
    if hooks:
        it = "it" if len(hooks) == 1 and hooks[0].startswith("a ") else "them"
        warnings.warn(f"{who} has {' and '.join(hooks)}, which {'is' if it == 'it' else 'are'} not carried over; "
                      f"{made} computes {function}'s function without {it} (register {it} on {made})", UserWarning,
                      stacklevel=user_stacklevel())  # fmt: skip


def _refuse_reparametrized(m, names, what, label):
    """A weight computed from others (parametrizations.weight_norm, orthogonal, pruning, the old weight_norm and
    spectral_norm hooks) would be copied as it was last computed, a plain weight from then on: from_torch and
    to_torch refuse. m: the module that holds the weights; label: what the user calls it."""
    from torch.nn.utils import parametrize, prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooks = {h.name: h for h in m._forward_pre_hooks.values() if isinstance(h, (WeightNorm, SpectralNorm))}
    pruned = {h._tensor_name for h in m._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)}
    for name in names:
        if name in pruned:
            how, undo = "pruning: weight_orig times a mask", f"torch.nn.utils.prune.remove({label}, '{name}')"
        elif name in hooks:
            kind = "weight_norm" if isinstance(hooks[name], WeightNorm) else "spectral_norm"
            how, undo = kind, f"torch.nn.utils.remove_{kind}({label}, '{name}')"
        elif parametrize.is_parametrized(m, name):
            how, undo = (
                "a parametrization",
                f"torch.nn.utils.parametrize.remove_parametrizations({label}, '{name}')",
            )
        else:
            continue
        shown = name if label == "m" else f"{label}.{name}"
        raise RnnkitError(
            f"{what}: {shown} is computed from other parameters ({how}), which the copy would take once as it "
            f"is now and then train as a plain weight; make it a plain weight first: {undo}"
        )
