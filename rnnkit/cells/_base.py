"""What every cell shares: parameters laid out as the engine expects them.

A cell computes ONE time step and knows nothing about time (equinox, flax). The engine
(`rnnkit.engine`) runs it over a sequence:

    xw = project_input(x)                 # all T steps at once: one GEMM       (T, B, G·H)
    for t:  state_t, us_t, cache_t = step(xw[t], state_{t-1}, P)
    for t reversed:  dxw_t, dstate_{t-1}, dpre_t, dextra_t = step_backward(dstate_t, cache_t, P)
    dU_k = Σ_t dpre_k,tᵀ u_k,t            # after the loop: one GEMM per recurrent matrix

`P` are the recurrent parameters named in `REC_PARAMS`. Each entry (U, b) of `GEMMS` is a
recurrent product pre_k = u_k Uᵀ + b that `step` forms from a vector u_k it returns in `us`
(h_{t-1}, r ⊙ h_{t-1}, ...); `step_backward` returns dL/dpre_k, and the engine turns those into
weight gradients with one large GEMM each. `EXTRAS` name parameters whose gradient is not a
GEMM (a leaky unit's α): `step_backward` returns their per-step gradient and the engine sums it.
"""

import contextlib
import inspect
import math
import numbers
import sys
import threading
import warnings
import weakref

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torch.nn import functional as F
from torch.nn.utils import stateless as _stateless
from torch.nn.utils._named_member_accessor import NamedMemberAccessor
from torch.nn.utils._named_member_accessor import swap_tensor as _swap_tensor
from torch.nn.utils.parametrize import register_parametrization as _register_parametrization

from rnnkit.errors import RnnkitError, count_error, fits_int64, switch

SCRIPT_ERROR = (
    "torch.jit.script can't compile rnnkit's cells and layers (their loop is a call TorchScript can't see "
    "into; torch.jit is deprecated): use torch.export.export(model, (x,)) or torch.compile(model)"
)


def fx_call(module, kwargs, base):
    """Under torch.fx.symbolic_trace (FX proxies among the arguments), the call recorded as one call_module node,
    as FX records torch.nn's modules (torch.nn.LSTM, LSTMCell): the traced model calls the module itself. None
    where no argument is a proxy. FX traced into rnnkit's cells and layers instead, whose checks failed on the
    proxies ("input must be a torch.Tensor, got Proxy"), so a model holding one could not be traced at all
    (create_feature_extractor, FX quantization). The module traced as the root itself can't be a call of
    itself: refused in one line. (Asked only where is_fx_symbolic_tracing(): a dict of the arguments costs.)

    base: the rnnkit class whose forward is running (Cell, Recurrent). FX, which doesn't take rnnkit's modules
    for leaves, has already traced what the module's own call runs around it: its hooks, and a subclass's forward
    that calls this one. A call of the module would run those again (a hook's `out * 2` doubled twice, a
    subclass's `x * 2` twice): there the node calls base.forward alone (fx_forward)."""
    proxy = next((a for a in torch.utils._pytree.tree_leaves(kwargs) if isinstance(a, torch.fx.Proxy)), None)
    if proxy is None:
        return None
    tracer, name = proxy.tracer, type(module).__name__
    if module is tracer.root:
        raise RnnkitError(f"torch.fx.symbolic_trace can't trace into rnnkit's {name} (its loop and checks need real "
                          f"tensors): trace a model that holds it, where it is one call of the {name}, as torch.nn's "
                          "RNNs are; or use torch.export.export(model, (x,))")  # fmt: skip
    given = {k: v for k, v in kwargs.items() if v is not None}
    if "probe" in given:  # (FX failed on it: "NotImplementedError: argument of type: <class 'GradProbe'>")
        raise RnnkitError(f"torch.fx.symbolic_trace can't keep a GradProbe in a traced model (its hooks need the "
                          f"{name}'s real steps): trace the model without probe=, and run it with one")  # fmt: skip
    path = tracer.path_of_module(module)
    if type(module).forward is base.forward and not _forward_hooks(module):
        return tracer.create_proxy("call_module", path, (), given)
    layer = tracer.create_proxy("get_attr", path, (), {})  # (the module itself, not a call of it)
    return tracer.create_proxy("call_function", fx_forward, (layer,), given)


def _forward_hooks(module) -> bool:
    """Whether module's call runs forward hooks (its own or global ones) around its forward."""
    from torch.nn.modules import module as hooks

    return bool(module._forward_hooks or module._forward_pre_hooks or hooks._global_forward_hooks
                or hooks._global_forward_pre_hooks)  # fmt: skip


def fx_forward(module, **kwargs):
    """Cell.forward or Recurrent.forward of module alone, without its hooks or a subclass's forward around it:
    what a model traced by torch.fx.symbolic_trace calls where those were traced already (see fx_call)."""
    from rnnkit.layers.recurrent import Recurrent  # (which imports this module)

    return (Recurrent if isinstance(module, Recurrent) else Cell).forward(module, **kwargs)


@contextlib.contextmanager
def _quiet_trace():
    """Silences torch.jit.trace's TracerWarnings (a shape check's bools: the sizes are fixed in the trace anyway)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


_ABSENT = object()


def own(module, name):
    """module.<name>, read from its parameters where it is one: nn.Module.__getattr__ takes 0.9 µs a read, 4 µs of
    a cell's 35 µs step (B = 1, H = 64). Anything else (a parametrized or pruned weight, a buffer) as getattr."""
    p = module._parameters.get(name, _ABSENT)
    return getattr(module, name) if p is _ABSENT else p


def linear(u, W, b=None):
    """u Wᵀ + b for a (B, ·) batch: the recurrent GEMM of one step."""
    return u @ W.t() if b is None else torch.addmm(b, u, W.t())


def _torch_name(ours: str) -> property:
    """The property of a Cell that torch.nn's cell's name for its weight `ours` is (see Cell.weight_ih)."""

    def get(self):
        if (
            type(self).torch_mode is None
        ):  # then nn.Module's __getattr__: a parameter of that name, or its error
            raise AttributeError(ours)
        return getattr(self, ours)

    return property(get, doc=f"torch.nn's name for this cell's {ours}, for the cells torch.nn has")


class _AliasError(KeyError, RnnkitError):
    """A KeyError (what torch's utilities and dict users catch) whose message reads as one line."""

    def __str__(self):
        return str(self.args[0])


class _OwnParameters(dict):
    """A layer's or a cell's own parameters (nn.Module._parameters). torch.nn's weight names (weight_hh_l0 of a
    layer, weight_hh of a cell) name the cells' parameters (W_hh) and are not entries here: torch's utilities that
    reach into _parameters by name (prune, the old weight_norm and spectral_norm) failed on them with a bare
    KeyError: 'weight_hh_l0'. They get one line (the owner's _alias_message) naming the parameter to apply them to
    instead."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def __missing__(self, key):
        message = self.owner._alias_message(key)
        raise _AliasError(message) if message else KeyError(key)

    def __contains__(self, key):
        """torch.nn.utils.parametrize.register_parametrization (parametrizations.weight_norm, orthogonal, ...) asks
        `name in module._parameters` and, for weight_hh_l0, raised a ValueError with the whole layer's repr in it
        and no word of the cell: it gets the one line (a ValueError too). Everyone else gets dict's answer."""
        if super().__contains__(key):
            return True
        # (nn.Module.__getattr__ asks on every layer.cells; dynamo asks too, and can't trace sys._getframe)
        torch_name = isinstance(key, str) and key.startswith(("weight_", "bias_"))
        if not torch_name or torch.compiler.is_compiling():
            return False
        if sys._getframe(1).f_code is _register_parametrization.__code__:
            message = self.owner._alias_message(key)
            if message:
                raise _AliasError(message)
        return False

    def __delitem__(self, key):
        if key not in self and self.owner._alias_message(key):
            raise _AliasError(self.owner._alias_message(key))
        super().__delitem__(key)


_converting = threading.local()  # .fn: the conversion an OwnParametersModule._apply checked, while it runs


class OwnParametersModule(nn.Module):
    """What a cell and a layer share as modules answering to torch.nn's weight names (weight_hh, weight_hh_l0) for
    parameters of their own: their _parameters is an _OwnParameters (set by the subclass's __init__), whose one
    lines come from the subclass's _alias_message(name)."""

    def register_parameter(self, name, param):
        """nn.Module's, refusing <torch name>_orig: torch.nn.utils.prune registers it (weight_hh_orig,
        weight_hh_l0_orig) before it finds that the name is not the module's own parameter, and would leave the
        module half pruned; it gets the module's one line instead."""
        if name.endswith("_orig") and (message := self._alias_message(name[: -len("_orig")])):
            raise _AliasError(message)
        super().register_parameter(name, param)

    def _apply(self, fn, recurse=True):
        """nn.Module's (.to, .double, .type, ...), refusing a conversion to a complex dtype, as __init__ refuses
        dtype=torch.complex64: layer.to(torch.complex64) made complex weights in silence that no call could run (a real
        input was told to convert, a complex one to be real). The new dtype is read from fn of an empty tensor of the
        first weight's, once per conversion: the modules inside (a layer's cells) take the outer one's reading (each
        read it again: layer.to('cpu') of a 2-layer LSTM took 56 µs, 47 so, 38 without the check)."""
        outer = getattr(_converting, "fn", None)
        if outer is fn:
            return super()._apply(fn, recurse)
        p = next((q for q in self.parameters() if q.is_floating_point()), None)
        if p is not None:
            try:
                dtype = fn(p.detach().new_empty(0)).dtype
            except Exception:  # noqa: BLE001  (a conversion that fails on it fails below, in its own words)
                dtype = p.dtype
            if isinstance(dtype, torch.dtype) and dtype.is_complex:
                raise RnnkitError(f"rnnkit's cells compute in real numbers: {type(self).__name__} can't be converted to "
                                  f"{dtype}; keep it in a floating-point dtype (torch.float32, torch.float64, ...) and "
                                  "give a complex input as two real features (torch.view_as_real(x).flatten(-2))")  # fmt: skip
        _converting.fn = fn
        try:
            return super()._apply(fn, recurse)
        finally:
            _converting.fn = outer

    def __getstate__(self):
        """The parameters as a plain dict (see __setstate__): a weights_only load allows no _OwnParameters."""
        return {**super().__getstate__(), "_parameters": dict(self._parameters)}

    def __setstate__(self, state):
        super().__setstate__(state)
        object.__setattr__(self, "_parameters", _OwnParameters(self))
        self._parameters.update(state["_parameters"])


class Cell(OwnParametersModule):
    """Base of every cell: input weights W_xh (gates·H, D), bias b_xh, and the recurrent part.

    A cell of one's own (the README points here) sets `gates`, `num_states`, REC_PARAMS, GEMMS, EXTRAS, creates
    its parameters in __init__ and gives two pure functions of one step (see the module docstring):

        step(xw_t, state, P) -> (state_t, us, cache)
            xw_t (B, gates·H) this step's input projection; state and state_t tuples of num_states tensors
            (B, ·), h_t first (the output); P the parameters in REC_PARAMS order; us one vector u_k (B, ·) per
            GEMMS entry (U_k, b_k), the one the step multiplies as u_k U_kᵀ + b_k; cache what backward needs.
        step_backward(dstate_t, cache, P) -> (dxw_t, dstate_prev, dpres, dextras)
            dstate_t the total dL/dstate_t (tuple); dxw_t (B, gates·H); dstate_prev a tuple like state;
            dpres one dL/dpre_k (B, ·) per GEMMS entry (the engine makes dU_k, db_k of them after the loop);
            dextras one gradient per EXTRAS parameter, for this step (the engine sums them over time), shaped as
            the parameter (summed over the batch).
    A step that never reads xw_t (a cell driven by its state alone) gives W_xh, b_xh and the layer's input a zero
    gradient on every backend, not None, as torch.nn's RNNs give a weight whose gradient is zero; so too a parameter
    in REC_PARAMS that step does not read.
    Both are pure functions, staticmethods of the class. What they return is checked at the first step of every run
    of a cell of one's own (the form and shapes, in one line each: check_step); whether step_backward is the
    derivative of step, rnnkit.cells.check_cell(MyCell) checks against autograd.
    """

    gates = 1  # blocks of H in the input projection
    num_states = 1  # 1: h_t only; 2: (h_t, c_t)
    REC_PARAMS = ("W_hh", "b_hh")
    GEMMS = (("W_hh", "b_hh"),)
    EXTRAS = ()
    torch_mode = None  # name of the torch.nn recurrent module with the same function, if any
    tanh_tail = 0  # columns at the end of the projection that pass through tanh before the bias (MUT1)
    input_identity = None  # first column of a block that is the input itself (MUT1/MUT2 with D = H)
    _checked_steps = False  # whether the loops check what step and step_backward return (set per class below)

    def __init_subclass__(cls, **kwargs):
        """A cell of one's own is checked when its class is defined, in one line each: the engine would
        otherwise leave a parameter it doesn't know how to differentiate without a gradient (no error), or
        fail deep inside with a third state."""
        super().__init_subclass__(**kwargs)
        _check_declarations(cls)
        # (not `in (1, 2)` alone: 2.0 passed, and the layer failed deep inside slicing with it)
        if type(cls.num_states) is not int or cls.num_states not in (1, 2):
            raise RnnkitError(f"{cls.__name__}.num_states = {cls.num_states!r}: the engine and the layers run cells of "
                              "one state (h_t) or two (h_t, c_t)")  # fmt: skip
        gemms = {name for pair in cls.GEMMS for name in pair if name is not None}
        both = [name for name in cls.EXTRAS if name in gemms]
        if both:  # (its gradient would come twice: the engine's GEMM after the loop and step_backward's)
            raise RnnkitError(f"{cls.__name__}: {', '.join(both)} in both GEMMS and EXTRAS; a parameter is one or the "
                              "other: GEMMS for a recurrent product u Uᵀ + b, EXTRAS for one whose gradient "
                              "step_backward returns")  # fmt: skip
        covered = gemms | set(cls.EXTRAS)
        missing = [name for name in cls.REC_PARAMS if name not in covered]
        if missing:
            raise RnnkitError(f"{cls.__name__}: REC_PARAMS {', '.join(missing)} in neither GEMMS (a recurrent product "
                              "u Uᵀ + b) nor EXTRAS (a gradient step_backward returns): the engine would give them "
                              "no gradient; list each in one of them")  # fmt: skip
        # what step and step_backward return is checked at the first step of every run (check_step): rnnkit's
        # own cells are held to it by their tests instead, and their loops pay nothing for it
        cls._checked_steps = not cls.__module__.startswith("rnnkit.cells.")

    def __prepare_scriptable__(self):
        """torch.jit.script calls this on every module of a model before compiling it: refused in one line."""
        raise RnnkitError(SCRIPT_ERROR)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        object.__setattr__(
            self, "_parameters", _OwnParameters(self)
        )  # torch.nn's names: one line (see there)
        # (True is an int: width 1; np.int64, an array's shape or a parameter grid's, was said not to be one)
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
                raise count_error(name, size)
            fits_int64(name, size)  # (2**63: "Overflow when unpacking long long" in torch's empty())
        input_size, hidden_size = int(input_size), int(hidden_size)
        # as Recurrent says it: bias="False" (a config file's string) built the biases, in silence
        switch("bias", bias)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        H, G = hidden_size, self.gates
        self.W_xh = nn.Parameter(undrawn(self, (G * H, input_size)))
        self.b_xh = nn.Parameter(undrawn(self, (G * H,))) if bias else None

    def _place(self, device=None, dtype=None) -> None:
        """torch.nn's factory arguments (`LSTM(64, 128, device=..., dtype=torch.float64)`): the parameters and buffers
        moved there before reset_parameters draws them, as torch.nn's cells create theirs there (a draw in the default
        dtype, cast after, gives other weights than torch's for the same seed). Each cell's __init__ calls it last
        before reset_parameters."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch.dtype (torch.float32, torch.float64, ...), got "
                             f"{dtype!r}")  # fmt: skip
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """nn.Module's, with the cell's kind (its name in rnnkit.CELLS: cell_kind) in the state_dict's metadata, for
        the load (_check_kind)."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", {}).get(prefix[:-1])
        kind = cell_kind(self)
        if meta is not None and kind is not None:
            meta["cell"] = kind

    def _check_kind(self, state_dict, prefix, local_metadata, errors):
        """An rnn_relu cell's weights loaded into an rnn_tanh cell (the same keys and shapes) in silence, and with
        strict=False a gru_cho's W_xh and b_xh into a gru (or a leaky cell's into an rnn_tanh): another function run
        on them. Said as torch's size mismatches are, where the state_dict's metadata names another kind (one saved
        before, a plain dict or torch.nn's has none: loaded as before)."""
        given, kind = local_metadata.get("cell"), cell_kind(self)
        if not isinstance(given, str) or kind is None or given == kind:
            return
        if not any(k.startswith(prefix) for k in state_dict):
            return
        from rnnkit.cells import CELLS

        where = prefix[:-1] or "this cell"
        cls = f" (rnnkit.cells.{CELLS[given].__name__})" if given in CELLS else ""
        errors.append(f"the weights for {where} in this state_dict are a {given!r} cell's, where {where} is a "
                      f"{kind!r} cell ({type(self).__name__}); build it with cell={given!r}{cls} to load them")  # fmt: skip

    def _load_from_state_dict(self, state_dict, prefix, *args):
        """nn.Module's, after renaming the keys of torch.nn.LSTMCell/GRUCell/RNNCell (weight_ih, weight_hh, bias_ih,
        bias_hh) to this cell's (W_xh, ...) where torch has the cell: `cell.load_state_dict(torch_cell.state_dict())`
        of code ported from torch loads, as a layer loads torch.nn.LSTM's weight_ih_l0 (it failed with a three-line
        RuntimeError). Not a registered pre-hook, which would pickle as a bound method (see Recurrent's)."""
        if self.torch_mode is not None:
            pairs = list(self._torch_pairs().items())
            renamed = False
            for theirs, ours in pairs:
                # (not into a weight the cell lacks, a bias of bias=False: torch's error then named b_xh, b_hh as
                # unexpected, keys the caller never wrote, where a layer names bias_ih_l0)
                if (
                    prefix + theirs in state_dict
                    and prefix + ours not in state_dict
                    and getattr(self, ours) is not None
                ):
                    state_dict[prefix + ours] = state_dict.pop(prefix + theirs)
                    self.__dict__.setdefault("_torch_keys", {})[ours] = prefix + theirs
                    renamed = True
            for theirs, ours in pairs if renamed else ():  # a torch-named dict's missing keys: torch's names
                if prefix + ours not in state_dict:
                    self.__dict__["_torch_keys"].setdefault(ours, prefix + theirs)
        given, errors = self.__dict__.pop("_torch_keys", {}), args[-1]  # (a torch key renamed: by its name)
        missing, n = args[-3], len(errors)
        self._check_kind(state_dict, prefix, args[0], errors)
        super()._load_from_state_dict(state_dict, prefix, *args)
        missing[:] = [given.get(k[len(prefix) :], k) if k.startswith(prefix) else k for k in missing]
        for k in range(n, len(errors)):
            for ours, theirs in given.items():
                errors[k] = errors[k].replace(
                    f" for {prefix}{ours}:", f" for {theirs} (here {prefix}{ours}):"
                )

    def __setattr__(self, name, value):
        """cell.weight_hh = nn.Parameter(...) replaces W_hh, as it replaces torch.nn.LSTMCell's weight; a plain tensor
        takes its place only from torch.func.functional_call(cell, torch_cell.state_dict(), x), whose keys set
        attributes the cell never read: it ran its own weights, in silence. From anywhere else a plain tensor is
        refused, as torch's cells refuse it (it would take the weight's place and never train)."""
        ours = self._torch_alias(name)
        if ours is None:
            return super().__setattr__(name, value)
        # (reading frames is a graph break under torch.compile, where functional_call's swap is traced: not asked)
        swapping = not torch.compiler.is_compiling() and sys._getframe(1).f_code is _swap_tensor.__code__
        if swapping and ours in _functional_keys(sys._getframe(2), name):
            # (the second swap took the first's tensor for the weight and put it back after: kept for good)
            raise RnnkitError(f"functional_call got {name} and {ours}: torch.nn's name and the cell's own for one "
                              "weight; give the weights under one of the two")  # fmt: skip
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            if not swapping and not torch.compiler.is_compiling():
                raise TypeError(f"cannot assign '{value.type()}' as parameter '{name}' (torch.nn.Parameter or None "
                                f"expected): cell.{name} = nn.Parameter(t), or copy into it with torch.no_grad()")  # fmt: skip
            if ours in self._parameters:
                self._parameters[ours] = value
                return
        setattr(self, ours, value)

    # torch.nn's cell's names for the weights, for the cells torch has: this cell's own parameters under those names,
    # as a layer has weight_ih_l0 (the same tensors: code written for torch.nn.LSTMCell, nn.init.orthogonal_(
    # cell.weight_hh), initialises W_hh). Properties, not a __getattr__, which every read of a parameter goes through
    weight_ih, weight_hh, bias_ih, bias_hh = (_torch_name(ours) for ours in ("W_xh", "W_hh", "b_xh", "b_hh"))

    def _alias_message(self, name):
        """For torch.nn's weight name `name` of this cell: why torch's utilities cannot take it (else None)."""
        ours = self._torch_alias(name) if isinstance(name, str) else None
        if ours is None:
            return None
        return (f"{name} is torch.nn's name for this cell's {ours}, not a parameter of its own: apply "
                f"torch.nn.utils.prune, weight_norm, spectral_norm or parametrizations to (cell, '{ours}')")  # fmt: skip

    def _torch_alias(self, name):
        """The cell's own name (W_xh, ...) of torch.nn's cell's weight `name`, for a cell torch has; else None."""
        if type(self).torch_mode is None or not name.startswith(("weight_", "bias_")):
            return None
        return self._torch_pairs().get(name)

    def _torch_pairs(self) -> dict:
        """torch.nn's name -> the cell's own, for the weights this cell has (weight_hr -> W_hr: LSTMP's projection,
        torch.nn.LSTM's weight_hr_l0)."""
        own = ("W_xh", "b_xh", *type(self).REC_PARAMS)
        return {theirs: ours for theirs, ours in zip(TORCH_NAMES, TORCH_ORDER) if ours in own}

    @classmethod
    def from_torch(cls, m: nn.Module) -> "Cell":
        """rnnkit's cell of torch.nn.RNNCell, LSTMCell or GRUCell m's function, holding copies of its weights, on its
        device and in its dtype, frozen ones frozen, in its train or eval mode (the RNG left as it was); to_torch goes
        back. Called on Cell, the class follows m (RNNCell's nonlinearity too); on a cell class, m must be of its kind."""
        from rnnkit.cells import CELLS

        kind = next((k for k, (M, kw) in TORCH_CELLS.items() if type(m) is M and getattr(m, "nonlinearity", None)
                     == kw.get("nonlinearity")), None)  # fmt: skip
        if kind is None:
            raise RnnkitError(f"from_torch takes torch.nn.RNNCell, LSTMCell or GRUCell, got {type(m).__name__}; a "
                              "torch.nn.RNN, LSTM or GRU converts with rnnkit.Recurrent.from_torch")  # fmt: skip
        if cls is not Cell and cell_kind(cls) != kind:
            raise RnnkitError(f"{cls.__name__}.from_torch: m is a torch.nn.{type(m).__name__} of the {kind} cell; use "
                              f"rnnkit.cells.{CELLS[kind].__name__}.from_torch(m), or Cell.from_torch(m)")  # fmt: skip
        from rnnkit.layers.recurrent import _takes_option  # (rnnkit.layers imports the cells)

        p, Made = m.weight_ih, CELLS[kind] if cls is Cell else cls
        # forget_bias None, as Recurrent.from_torch gives it: reset_parameters draws the forget gate's bias as
        # torch.nn.LSTMCell does (the default 1.0 set it to 1, and the repr said so of torch's drawn bias)
        options = {"forget_bias": None} if kind == "lstm" and _takes_option(Made, "forget_bias") else {}
        # (its draw is copied over: the caller's stream goes on as it was)
        with torch.random.fork_rng(devices=[]):
            cell = Made(m.input_size, m.hidden_size, bias=m.bias, device=p.device, dtype=p.dtype, **options)
        for theirs, ours in cell._torch_pairs().items():
            _copy_weight(getattr(m, theirs), getattr(cell, ours))
        return cell.train(m.training)

    def to_torch(self) -> nn.Module:
        """torch.nn's cell of this cell's function (RNNCell, LSTMCell, GRUCell), holding copies of its weights, on its
        device and in its dtype, frozen ones frozen, in its train or eval mode (a layer's: Recurrent.to_torch)."""
        kind = cell_kind(self)
        if kind not in TORCH_CELLS or getattr(self, "proj_size", 0):
            raise RnnkitError(f"torch.nn has no cell of {type(self).__name__}'s function; to_torch converts rnn_tanh, "
                              "rnn_relu, lstm and gru cells (torch.nn.LSTMCell has no proj_size)")  # fmt: skip
        pairs = self._torch_pairs()
        computed = next((ours for ours in pairs.values() if ours not in self._parameters and own(self, ours) is not None), None)  # fmt: skip
        if computed:
            raise RnnkitError(f"to_torch: {computed} is computed from other parameters (a parametrization or pruning), "
                              "which the copy would take once as it is now; remove that first")  # fmt: skip
        Module, kw = TORCH_CELLS[kind]
        p = self.weight_like()
        with torch.random.fork_rng(devices=[]):
            m = Module(self.input_size, self.hidden_size, self.bias, device=p.device, dtype=p.dtype, **kw)
        for theirs, ours in pairs.items():
            _copy_weight(getattr(self, ours), getattr(m, theirs))
        return m.train(self.training)

    def extra_repr(self) -> str:
        """Sizes as torch.nn prints them: `LSTM(64, 128)`, `Leaky(64, 128, alpha=0.5)`."""
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def reset_parameters(self) -> None:
        """U(-1/√H, 1/√H) for every weight named W_* or b_* and every matrix and bias in GEMMS, as torch.nn does. A
        parameter in EXTRAS or of another name (a leaky unit's α) is the cell's own to draw: a cell with one overrides
        this method (calling it first), or sets it in __init__. (GEMMS: a cell of one's own whose recurrent matrix is
        named U kept torch.empty's memory; EXTRAS: a per-unit W_diag set in __init__ was drawn over.)"""
        bound = 1.0 / math.sqrt(self.hidden_size)
        gemms = {name for pair in self.GEMMS for name in pair if name is not None}
        for name, p in self.named_parameters():
            # (under torch.nn.utils.parametrizations, W_hh's are parametrizations.W_hh.original*: drawn, as torch.nn's)
            name = name.split(".")[1] if name.startswith("parametrizations.") else name
            drawn = name.startswith(("W_", "b_")) or name in gemms  # not a leaky unit's α
            if drawn and name not in self.EXTRAS:
                nn.init.uniform_(p, -bound, bound)

    def project_input(self, xs):
        """The input term of every gate for all steps at once: (T, B, D) -> (T, B, gates·H)."""
        W, b = self.input_affine()
        return affine_input(xs, W, b, self.tanh_tail, self.input_identity)

    def input_affine(self):
        """(W, b): project_input(xs) = xs Wᵀ + b (one GEMM for all steps), except that
        - with `input_identity` = c the columns [c, c + D) are xs itself and W has no rows for them,
        - the last `tanh_tail` columns pass through tanh before b is added (MUT1's tanh(x̃_t)).
        None if the cell's projection is not of that form. The native engine runs it in recycled buffers."""
        return own(self, "W_xh"), own(self, "b_xh")

    def weight_like(self) -> torch.Tensor:
        """A weight of the cell, for its device and dtype, read without computing one that is parametrized: a step's
        checks computed a spectral_norm'd W_xh (or leaky's W_hh) once more, its power iteration run twice a step."""
        for name in ("W_xh", "W_hh"):
            p = self._parameters.get(name)
            if p is not None:
                return p
        return own(self, "W_xh")

    @property
    def output_size(self) -> int:
        """Width of h_t, the state fed back and the output: H (a projection's P in LSTMP)."""
        return self.hidden_size

    def rec_params(self) -> tuple:
        try:
            return tuple([own(self, name) for name in self.REC_PARAMS])
        except AttributeError:  # (nn.Module's "'X' object has no attribute 'b_hh'", deep in a forward)
            missing = next((name for name in self.REC_PARAMS if not hasattr(self, name)), None)
            if missing is None:
                raise
            raise RnnkitError(f"{type(self).__name__} has no {missing}, which REC_PARAMS names: create it in __init__ "
                              "(recurrent_weights(self, (name, shape), ...); None for a bias it doesn't have)") from None  # fmt: skip

    def init_state(self, batch: int, dtype=None, device=None) -> tuple:
        p = self.W_xh
        z = torch.zeros(batch, self.hidden_size, dtype=dtype or p.dtype, device=device or p.device)
        return tuple(z.clone() for _ in range(self.num_states))

    # --- one step, as pure functions (set by each cell file) -----------------------------------
    @staticmethod
    def step(xw_t, state, P):  # -> (state_t, us, cache)
        raise NotImplementedError("a cell gives step(xw_t, state, P) -> (state_t, us, cache) as a staticmethod of its "
                                  "class (see rnnkit.cells._base.Cell); this one has none")  # fmt: skip

    @staticmethod
    def step_backward(dstate_t, cache, P):  # -> (dxw_t, dstate_prev, dpres, dextras)
        raise NotImplementedError("a cell gives step_backward(dstate_t, cache, P) -> (dxw_t, dstate_prev, dpres, "
                                  "dextras) as a staticmethod of its class (see rnnkit.cells._base.Cell); this one has "
                                  "none")  # fmt: skip

    def forward(self, x_t=None, state=None, *_onnx, hx=None, input=None):
        """One step for a (B, D) input, as torch.nn's cells: returns h_t (B, H) for the one-state cells (as
        nn.RNNCell, nn.GRUCell), the tuple (h_t, c_t) for lstm and lstmp (as nn.LSTMCell). state: the same, a
        one-tuple (h_t,), or None (zeros). Also one unbatched step: x_t (D,), the states (·,). input, hx: x_t
        and state under torch.nn's names for them (`cell(input=x, hx=(h, c))`)."""
        if is_fx_symbolic_tracing():  # (one call_module node, as FX records torch.nn's cells)
            traced = fx_call(self, dict(x_t=x_t, state=state, hx=hx, input=input), Cell)
            if traced is not None:
                return traced
        # torch.onnx.export(cell, ..., dynamo=False) passes the defaults of hx and input by position (a TypeError
        # before): *_onnx takes them there; elsewhere an extra positional argument is Python's TypeError as before
        if _onnx and not (torch.onnx.is_in_onnx_export() and all(a is None for a in _onnx)):
            n = 3 + len(_onnx)
            raise TypeError(
                f"{type(self).__name__}.forward() takes from 1 to 3 positional arguments but {n} were given"
            )
        if input is not None:
            if x_t is not None:
                raise RnnkitError("give the input as x_t or as input (torch.nn's name), not both")
            x_t = input
        if hx is not None:
            if state is not None:
                raise RnnkitError("give the state as state or as hx (torch.nn's name), not both")
            state = hx
        unbatched = isinstance(x_t, torch.Tensor) and x_t.dim() == 1
        # (torch.jit.trace hands out sizes as tensors: the shape checks and MUT1/MUT2's projection made Python bools
        # of them, a TracerWarning each, where torch's cells trace silently)
        with _quiet_trace() if torch.jit.is_tracing() else contextlib.nullcontext():
            x_t, state = self._checked_step(x_t, state, unbatched)
            if state is None:
                state = self.init_state(x_t.shape[0], x_t.dtype, x_t.device)
            xw_t, P = self.project_input(x_t), self.rec_params()
        got = self._step_checked(xw_t, state, P) if self._checked_steps else self.step(xw_t, state, P)
        new = got[0]
        new = tuple([s[0] for s in new]) if unbatched else tuple(new)
        return new if self.num_states == 2 else new[0]

    def _step_checked(self, xw_t, state, P):
        """step of a cell of one's own, checked as the loops check its first step: what it returns (check_step), and
        that it leaves its inputs as they were (check_unchanged). A step writing into h_{t-1} in place changed the
        caller's own state tensor in silence (cell(x_t, h): h halved), or ended in torch's 'a leaf Variable that
        requires grad is being used in an in-place operation' for an h that requires grad, naming neither."""
        cls, names = cell_class(self), ("xw_t", "state", "P")
        # (version counters are no values of a graph torch.compile traces: not read there, as in the autograd loop)
        seen = None if torch.compiler.is_compiling() else versions(xw_t=xw_t, state=state, P=P)
        try:
            got = self.step(xw_t, state, P)
        except RuntimeError:
            if seen is not None and (
                refused := refused_in_place(cls, "step", self.step, (xw_t, state, P), names)
            ):
                raise refused from None
            raise
        if seen is not None:
            check_unchanged(cls, "step", seen)
        check_step(cls, got, xw_t, state, P)
        return got

    def _checked_step(self, x_t, state, unbatched):
        """(x_t, state) as (B, D) and a tuple of (B, ·), or a one-line error naming what is wrong: the step's
        own ops would fail deep inside, or (a 1-D x_t read as a batch) compute something else."""
        name, D = type(self).__name__, self.input_size
        if not isinstance(x_t, torch.Tensor):
            raise RnnkitError(f"{name}: x_t must be a tensor (B, {D}), got {type(x_t).__name__}")
        if not x_t.is_floating_point():  # (before the sizes: (B,) token ids were "x_t must be (B, D)")
            raise RnnkitError(f"{name}: x_t is {x_t.dtype}; give a floating-point tensor (token ids: embed them first, "
                              "with torch.nn.Embedding; other numbers: x_t.float())")  # fmt: skip
        if x_t.dim() not in (1, 2) or x_t.shape[-1] != D:
            raise RnnkitError(f"{name} runs one step: x_t must be (B, {D}), or ({D},) for one sequence, got shape "
                              f"{tuple(x_t.shape)}; a sequence (B, T, D) runs with rnnkit.Recurrent")  # fmt: skip
        W = self.weight_like()
        if x_t.device != W.device or (
            x_t.dtype != W.dtype and not (autocast_on(x_t.device) and {x_t.dtype, W.dtype} <= AUTOCAST_DTYPES)
        ):
            raise RnnkitError(f"{name}: x_t is {x_t.dtype} on {x_t.device} but the cell's weights are {W.dtype} "
                              f"on {W.device}; move one to the other (cell.to(x_t) or x_t.to(...))")  # fmt: skip
        x_t = x_t[None] if unbatched else x_t
        if state is None:
            return x_t, None
        given = tuple(state) if isinstance(state, tuple | list) else (state,)
        widths = (self.output_size, self.hidden_size)[: self.num_states]
        # a decoder's state fed back: the checks below took 6 µs of a 26 µs rnn_tanh step
        if len(given) == len(widths) and _state_fits(given, widths, x_t, unbatched):
            return x_t, tuple([s[None] for s in given]) if unbatched else given
        lead = () if unbatched else (x_t.shape[0],)

        # (built where an error says it: dynamo cannot trace str() of a symbolic batch size, a second batch size under
        # torch.compile, and fullgraph=True failed there)
        def want():
            return " and ".join(str((*lead, w)) for w in widths)

        what = "(h, c)" if self.num_states == 2 else "h"
        if len(given) != self.num_states or not all(isinstance(s, torch.Tensor) for s in given):
            # (the types where the count is right: "got 2 item(s)" of an LSTM's (None, None) named no fault)
            got = (
                f"{len(given)} item(s)"
                if len(given) != self.num_states
                else ", ".join(type(s).__name__ for s in given)
            )
            raise RnnkitError(f"{name}: state must be {what}, tensors of shape {want()}; got {got}")
        if any(tuple(s.shape) != (*lead, w) for s, w in zip(given, widths)):
            got = ", ".join(str(tuple(s.shape)) for s in given)
            raise RnnkitError(f"{name}: state must be {what} of shape {want()} for x_t {tuple(x_t.shape)[-len(lead) - 1:]}"
                              f", got {got}")  # fmt: skip
        autocast = autocast_on(x_t.device)  # the step's ops cast, as in torch.nn's cells

        def clash(s):
            return s.device != x_t.device or (
                s.dtype != x_t.dtype and not (autocast and {s.dtype, x_t.dtype} <= AUTOCAST_DTYPES)
            )

        if any(clash(s) for s in given):  # said which of h and c, and the fix, as Recurrent says it
            s, part = next((s, part) for s, part in zip(given, "hc") if clash(s))
            raise RnnkitError(f"{name}: state {part} is {s.dtype} on {s.device} but x_t is {x_t.dtype} on "
                              f"{x_t.device}; convert one ({part}.to(x_t))")  # fmt: skip
        return x_t, tuple(s[None] for s in given) if unbatched else given


def _state_fits(given, widths, x_t, unbatched) -> bool:
    """Whether every tensor of the state is (B, w) ((w,) for an unbatched step) in x_t's dtype and on its device:
    Cell._checked_step's common case in one loop, without the closures and generators that say what is wrong."""
    B, dtype, device = x_t.shape[0], x_t.dtype, x_t.device
    for s, w in zip(given, widths):
        shape = (w,) if unbatched else (B, w)
        if not isinstance(s, torch.Tensor) or s.dtype != dtype or s.device != device or s.shape != shape:
            return False
    return True


def _check_declarations(cls):
    """A cell class's REC_PARAMS, GEMMS, EXTRAS, gates, step and step_backward, each said in one line where it
    can't be what the engine reads: the python loop failed deep inside on a GEMMS name missing from REC_PARAMS
    ("tuple.index(x): x not in tuple"), a string for REC_PARAMS was read letter by letter, and a step written as a
    plain method ran in a layer (which calls it on the class) but not in cell(x_t), which passed the cell as xw_t."""
    name = cls.__name__
    for attr in ("REC_PARAMS", "EXTRAS"):
        names = getattr(cls, attr)
        if isinstance(names, str):
            raise RnnkitError(f"{name}: {attr} must be a tuple of names, got the string {names!r}; write "
                              f"({names!r},)")  # fmt: skip
        if not isinstance(names, tuple | list) or not all(isinstance(n, str) for n in names):
            raise RnnkitError(f"{name}: {attr} must be a tuple of names (strings), got {names!r}")
    pairs = cls.GEMMS
    if not isinstance(pairs, tuple | list) or not all(
        isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], str | None)
        for p in pairs
    ):
        raise RnnkitError(f"{name}: GEMMS must be a tuple of pairs (U, b), names of REC_PARAMS (b None for a product "
                          f"without bias), got {pairs!r}")  # fmt: skip
    for attr, names in (
        ("GEMMS", [n for pair in pairs for n in pair if n is not None]),
        ("EXTRAS", cls.EXTRAS),
    ):
        stray = [n for n in names if n not in cls.REC_PARAMS]
        if stray:
            raise RnnkitError(f"{name}: {attr} names {', '.join(stray)}, which is not in REC_PARAMS "
                              f"({', '.join(cls.REC_PARAMS)}): P holds REC_PARAMS only; add it there (a bias the cell "
                              "may lack as well: rec_params() gives None for it), or leave it out")  # fmt: skip
    if isinstance(cls.gates, bool) or not isinstance(cls.gates, int) or cls.gates < 1:
        raise RnnkitError(f"{name}.gates = {cls.gates!r}: the number of H-wide blocks of the input projection, "
                          "an integer >= 1")  # fmt: skip
    for attr in ("step", "step_backward"):
        if inspect.isfunction(vars(cls).get(attr)):
            raise RnnkitError(f"{name}.{attr} is a plain function in the class body, which cell(x_t) would call "
                              f"with the cell as its first argument: make it a staticmethod ({attr} = "
                              f"staticmethod(f), or @staticmethod above def {attr})")  # fmt: skip


def _what(x):
    """How a value that should have been a tuple reads in an error: "a Tensor (2, 4)", "3 item(s)"."""
    if isinstance(x, torch.Tensor):
        return f"a Tensor {tuple(x.shape)}"
    return f"{len(x)} item(s)" if isinstance(x, tuple | list) else f"a {type(x).__name__}"


def _check_tensors(where, what, got, want):
    """got, a tuple of tensors of the shapes in want (None: any), or a one-line error naming the first that isn't.
    what: (the name of the tuple, a function of the index giving what the entry is for, the rule its shape follows)."""
    name, label, rule = what
    for k, (g, w) in enumerate(zip(got, want)):
        if not isinstance(g, torch.Tensor):
            raise RnnkitError(f"{where} returned {name}[{k}]{label(k)} as a {type(g).__name__}; it must be a tensor"
                              f"{'' if w is None else f' {w}'}")  # fmt: skip
        if w is not None and tuple(g.shape) != w:
            raise RnnkitError(
                f"{where} returned {name}[{k}] of shape {tuple(g.shape)}{label(k)}; it must be {w}{rule}"
            )


def _per_gemm(cell, where, what, got, P, B, width, kind, meaning):
    """One tensor (B, width(U_k)) per GEMMS entry (U_k, b_k), or a one-line error."""
    pairs = cell.GEMMS
    if not isinstance(got, tuple | list) or len(got) != len(pairs):
        names = ", ".join(w for w, _ in pairs)
        n = f"{len(pairs)} GEMMS entr{'y' if len(pairs) == 1 else 'ies'}"
        raise RnnkitError(f"{where} returned {_what(got) if not isinstance(got, tuple | list) else len(got)} "
                          f"{kind} in {what} for {n} ({names}): return one {meaning} per entry, in GEMMS order")  # fmt: skip
    Us = [P[cell.REC_PARAMS.index(w)] for w, _ in pairs]
    # (a vector of units named there, IndRNN's u ⊙ h_{t-1}: U.shape[1] failed here in a bare IndexError, every backend)
    for (name, _), U in zip(pairs, Us):
        if isinstance(U, torch.Tensor) and U.dim() != 2:
            raise RnnkitError(f"{cell.__name__}: GEMMS names {name} of shape {tuple(U.shape)}, not a matrix (N, K): a "
                              "GEMMS entry (U, b) is a recurrent product u Uᵀ + b; a parameter whose gradient "
                              "step_backward returns (a vector of units, one per h_{t-1} unit) goes in EXTRAS")  # fmt: skip
    want = [(B, width(U)) if isinstance(U, torch.Tensor) else None for U in Us]
    label = lambda k: f" for {pairs[k][0]} {tuple(Us[k].shape)}" if want[k] is not None else ""  # noqa: E731
    _check_tensors(where, (what, label, ""), got, want)


def check_step(cell, got, xw_t, state, P):
    """What a cell of one's own's step returned, checked at the first step of a run (Cell._checked_steps): a
    one-line error naming what is of the wrong form, instead of a failure deep in the loops (too many values to
    unpack, shapes that can't be multiplied) or wrong numbers in silence (a bare h_t read as a tuple of rows)."""
    where, n, B = f"{cell.__name__}.step", cell.num_states, xw_t.shape[0]
    if not isinstance(got, tuple | list) or len(got) != 3:
        raise RnnkitError(f"{where} must return (state_t, us, cache), got {_what(got)}")
    new, us, _ = got
    if not isinstance(new, tuple | list) or len(new) != n:
        hint = "; return (h_t,), not h_t" if n == 1 and isinstance(new, torch.Tensor) else ""
        raise RnnkitError(f"{where} must return state_t as a tuple of {n} tensor(s) (B, ·), h_t first, got "
                          f"{_what(new)}{hint}")  # fmt: skip
    _check_tensors(where, ("state_t", lambda k: "", " as the state it was given (B, ·)"), new,
                   [(B, s.shape[-1]) for s in state])  # fmt: skip
    # (a float32 h_t in a float64 run failed at the next step's matmul in the loops, and ran natively in silence)
    for k, (s, s0) in enumerate(zip(new, state)):
        if s.dtype != s0.dtype and not autocast_on(xw_t.device):
            raise RnnkitError(f"{where} returned state_t[{k}] in {s.dtype} for a state in {s0.dtype}; the loops feed "
                              f"it back as the state, which keeps its dtype: compute it in {s0.dtype} (no .float() "
                              "or .double() of it), or make the layer that dtype")  # fmt: skip
    _per_gemm(cell, where, "us", us, P, B, lambda U: U.shape[1], "vector(s)", "u_k (B, K) (the vector the step "
              "multiplies as u_k U_kᵀ + b_k)")  # fmt: skip
    # (a float32 u_k beside a float64 U_k failed after the loop, in the python loop's dU_k = Σ dpreᵀ u: "expected m1
    # and m2 to have the same dtype")
    for k, ((name, _), u) in enumerate(zip(cell.GEMMS, us)):
        U = P[cell.REC_PARAMS.index(name)]
        if isinstance(U, torch.Tensor) and u.dtype != U.dtype and not autocast_on(xw_t.device):
            raise RnnkitError(f"{where} returned us[{k}] in {u.dtype} for {name} in {U.dtype}; return the vector it "
                              f"multiplies by {name}ᵀ itself, in {U.dtype}")  # fmt: skip


def versions(**groups):
    """[(name, tensor, its version counter)] of the tensors in groups (name: a tensor or a tuple of them): what
    check_unchanged reads after a cell of one's own's first step or step_backward. Nothing is copied. Inference
    tensors (torch.inference_mode) have no version counter: left out, as nothing could tell a change of theirs."""
    seen = []
    for name, group in groups.items():
        items = group if isinstance(group, tuple | list) else (group,)
        for k, t in enumerate(items):
            if isinstance(t, torch.Tensor) and not t.is_inference():
                seen.append((f"{name}[{k}]" if items is group else name, t, t._version))
    return seen


def check_unchanged(cell, fn_name, seen):
    """A one-line error where a cell of one's own's step or step_backward changed one of its inputs in place (at the
    first step of every run, as check_step; check_cell does the same): the python loop reuses them, and one such
    step_backward changed the caller's own gradient (dL/dc_T) in silence, or failed deep inside on an expanded one."""
    for name, t, version in seen:
        if t._version != version:
            raise changed_in_place(cell, fn_name, name)


def changed_in_place(cell, fn_name, name) -> RnnkitError:
    """check_unchanged's one line (also where torch refused the change itself: a view of unbind's, under grad)."""
    return RnnkitError(f"{cell.__name__}.{fn_name} changed its input {name} in place: step and step_backward must "
                       "be pure functions (the engine keeps and reuses their inputs); write a new tensor (d = d_t + "
                       "..., not d_t.add_(...) or d_t += ...)")  # fmt: skip


def refused_in_place(cls, fn_name, fn, args, names):
    """Where fn failed, fn run again on detached copies of its arguments, without gradients: if it changes one of
    those in place, the error of one line that names it (else None). check_cell's step takes leaves that require
    grad, and so does the autograd loop's (the parameters, an initial state given), on which torch refuses
    s.mul_(...) itself: they ended in torch's 'a leaf Variable that requires grad is being used in an in-place
    operation', naming neither the function nor the input."""

    def copy(a):
        if isinstance(a, tuple | list):
            return tuple(map(copy, a))
        return a.detach().clone() if isinstance(a, torch.Tensor) else a

    copies = tuple(map(copy, args))
    seen = versions(**dict(zip(names, copies)))
    try:
        with torch.no_grad():
            fn(*copies)
    except Exception:  # noqa: BLE001  (it fails otherwise: the first error is the one to see)
        return None
    try:
        check_unchanged(cls, fn_name, seen)
    except RnnkitError as e:
        return e
    return None


def check_step_backward(cell, got, dstate, P, xw_width):
    """What a cell of one's own's step_backward returned, checked at the first step of the backward loop (see
    check_step): a missing dpres left a weight gradient as the loop's empty buffer, whatever the memory held, and a
    missing dextras failed in torch with "expected Variable or None (got int)"; a dextra of a broadcastable shape
    was summed to the parameter's by autograd (3x a scalar's gradient from a (3,) one)."""
    where, n, B = f"{cell.__name__}.step_backward", cell.num_states, dstate[0].shape[0]
    if not isinstance(got, tuple | list) or len(got) != 4:
        raise RnnkitError(f"{where} must return (dxw_t, dstate_prev, dpres, dextras), got {_what(got)}")
    dxw, dprev, dpres, dextras = got
    if not isinstance(dxw, torch.Tensor) or tuple(dxw.shape) != (B, xw_width):
        got_ = tuple(dxw.shape) if isinstance(dxw, torch.Tensor) else f"a {type(dxw).__name__}"
        raise RnnkitError(
            f"{where} returned dxw_t of shape {got_}; it must be {(B, xw_width)}, as xw_t (B, gates·H)"
        )
    if not isinstance(dprev, tuple | list) or len(dprev) != n:
        raise RnnkitError(f"{where} must return dstate_prev as a tuple of {n} tensor(s), as the state (B, ·), got "
                          f"{_what(dprev)}")  # fmt: skip
    _check_tensors(
        where, ("dstate_prev", lambda k: "", " as the state (B, ·)"), dprev, [tuple(d.shape) for d in dstate]
    )
    # (as check_step's state_t: a float64 dh_{t-1} in a float32 run failed at the next step's da @ W_hh, "expected
    # m1 and m2 to have the same dtype", and a bfloat16 one ran, every gradient rounded to it: 1e-3 off, in silence)
    for k, (d, d0) in enumerate(zip(dprev, dstate)):
        if d.dtype != d0.dtype and not autocast_on(d0.device):
            raise RnnkitError(f"{where} returned dstate_prev[{k}] in {d.dtype} for a state gradient in {d0.dtype}; "
                              f"the loops feed it back as the next step's dstate_t, which keeps its dtype: compute "
                              f"it in {d0.dtype} (no .float(), .half() or .double() of it)")  # fmt: skip
    _per_gemm(
        cell,
        where,
        "dpres",
        dpres,
        P,
        B,
        lambda U: U.shape[0],
        "gradient(s)",
        "dL/dpre_k (B, N) (U_k: (N, K))",
    )
    extras = cell.EXTRAS
    if not isinstance(dextras, tuple | list) or len(dextras) != len(extras):
        n_ = _what(dextras) if not isinstance(dextras, tuple | list) else len(dextras)
        raise RnnkitError(f"{where} returned {n_} gradient(s) in dextras for {len(extras)} EXTRAS "
                          f"entr{'y' if len(extras) == 1 else 'ies'} ({', '.join(extras)}): return this step's "
                          "gradient of each, in EXTRAS order, shaped as the parameter")  # fmt: skip
    for k, (d, e) in enumerate(zip(dextras, extras)):
        p = P[cell.REC_PARAMS.index(e)]
        if isinstance(p, torch.Tensor) and (not isinstance(d, torch.Tensor) or d.shape != p.shape):
            got_ = f"shape {tuple(d.shape)}" if isinstance(d, torch.Tensor) else f"a {type(d).__name__}"
            raise RnnkitError(f"{where} returned dextras[{k}] of {got_} for {e} {tuple(p.shape)}; it must be "
                              f"{tuple(p.shape)}, this step's gradient summed over the batch")  # fmt: skip
    # (a boolean mask among the EXTRAS has no gradient to round: its dextra is not looked at)
    floats = [isinstance(P[cell.REC_PARAMS.index(e)], torch.Tensor) and P[cell.REC_PARAMS.index(e)].is_floating_point()
              for e in extras]  # fmt: skip
    _check_not_narrower(where, dstate[0], [("dxw_t", dxw), *((f"dpres[{k}]", d) for k, d in enumerate(dpres)),
                                           *((f"dextras[{k}]", d) for k, d in enumerate(dextras) if floats[k])])  # fmt: skip


def _check_not_narrower(where, dstate_t, named):
    """A one-line error where a gradient step_backward returned is in a dtype narrower than the run's (a bfloat16
    dxw_t in a float32 run: the loops took it, every gradient rounded to bfloat16, 2e-3 off, in silence). A wider one
    (float64) is rounded back as it is stored: no loss."""
    run = dstate_t.dtype
    for name, d in named:
        narrow = d.dtype != run and torch.promote_types(d.dtype, run) != d.dtype
        if narrow and not autocast_on(dstate_t.device):
            raise RnnkitError(f"{where} returned {name} in {d.dtype} in a {run} run, every gradient through it rounded "
                              f"to {d.dtype}: compute it in {run} (no .half() or .to({d.dtype}) of it)")  # fmt: skip


AUTOCAST_DTYPES = {torch.float32, torch.float16, torch.bfloat16}  # what torch.autocast casts between


def autocast_on(device):
    """Whether torch.autocast is on for tensors on `device`: torch.is_autocast_enabled, but False for a device
    type autocast has no mode for (meta tensors, which torch asks about first: it raised "unknown device type
    for autocast" there, where torch.nn's RNNs run)."""
    kind = device.type
    return _autocast_available(kind) and torch.is_autocast_enabled(kind)


# torch.amp.is_autocast_available without its Python frame around torch's own function (asked a few times a layer call)
_autocast_available = getattr(torch._C, "_is_autocast_available", None) or torch.amp.is_autocast_available


def cell_class(cell):
    """The class of a cell (or the class itself), the one it had before torch.nn.utils.parametrizations swapped it
    for a class of torch's (ParametrizedLSTM): torch's type_before_parametrizations, without its attribute lookup
    that fails through nn.Module.__getattr__ on every cell (2 µs, a few times a call: one-step inference). A
    subclass of one of rnnkit's cells that changes none of its math is that cell (see same_math)."""
    if isinstance(cell, type):
        return _math_class(cell)
    parametrized = isinstance(cell._modules.get("parametrizations"), nn.ModuleDict)
    cls = type(cell).__bases__[0] if parametrized else type(cell)
    return _math_class(cls)


def _math_class(cls):
    """same_math(cls), cached in _math_of. A constant of a graph torch.compile traces (as engine.compiled's
    native_ready): dynamo traced the cache and guarded on it, empty on the first call and filled by it, so the
    second call of every compiled model compiled it all again (its guard "not _math_of" failed). A base is kept with
    the names each class on the way to it defined, as read: a class given a step since (`Doubled.step = ...` in a
    notebook, after a first run) is read again (its base's function ran on every backend, in silence)."""
    got = _math_of.get(cls, False)
    if got is None:
        return cls
    if got is not False:
        base, names, c = *got, cls
        for defined in names:
            if vars(c).keys() != defined:
                break
            c = c.__bases__[0]
        else:
            return base
    return same_math(cls)


_math_class._dynamo_marked_constant = True


# What a subclass of one of rnnkit's cells may define and still compute as that cell: its step, step_backward,
# declarations and projection are the base's own.
SAME_MATH = frozenset(("__init__", "reset_parameters", "extra_repr", "__module__", "__qualname__", "__doc__",
                       "__annotations__", "__firstlineno__", "__static_attributes__", "__dict__", "__weakref__",
                       "_checked_steps"))  # fmt: skip
# class -> (same_math(class), the names each class from it to there defined), None for itself: weak (a factory
# making a cell class per call leaked one per call)
_math_of = weakref.WeakKeyDictionary()


def same_math(cls):
    """rnnkit's own cell class that cls computes as, where cls subclasses it defining only what SAME_MATH names (a
    cell that draws its weights another way: `class Ortho(LSTM)` with an orthogonal W_hh in reset_parameters);
    else cls. Such a subclass ran on the python loop, 2-4x slower, with a warning that it "is not one of
    rnnkit's cells", which the native loop runs: the engine keyed on the exact class."""
    from rnnkit.cells import CELLS, LSTMP

    # rnnkit's own classes, not what else CELLS holds: a subclass registered there to be used by name computes as
    # its base still (it was taken for one of rnnkit's cells, and traced as a cell of its own)
    own = {c for c in (*CELLS.values(), LSTMP) if c.__module__.startswith("rnnkit.cells.")}
    c, names = cls, []
    while c not in own and len(c.__bases__) == 1 and set(vars(c)) <= SAME_MATH:
        names.append(frozenset(vars(c)))
        c = c.__bases__[0]
    _math_of[cls] = (c, tuple(names)) if c in own and c is not cls else None
    return c if c in own else cls


# rnnkit's name of a cell -> the torch.nn cell of its function and that cell's options
TORCH_CELLS = {
    "rnn_tanh": (nn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTMCell, {}),
    "gru": (nn.GRUCell, {}),
}


def _copy_weight(w, into) -> None:
    """into.copy_(w) (None: a bias the cells lack), frozen where w is."""
    if w is not None:
        with torch.no_grad():
            into.copy_(w).requires_grad_(w.requires_grad)


def cell_kind(cell):
    """The name in rnnkit.CELLS of the rnnkit cell that `cell` computes as (cell_class: a parametrized cell, a subclass
    that only draws its weights another way), "lstm" for LSTMP; None for a cell of one's own."""
    from rnnkit.cells import CELLS, LSTMP

    cls = cell_class(cell)
    if cls is LSTMP:
        return "lstm"
    if not cls.__module__.startswith("rnnkit.cells."):
        return None
    return next((name for name, c in CELLS.items() if c is cls), None)


def plain_ops_only():
    """Whether this runs inside a torch.func transform (grad, vmap, jacrev, ...) or a forward-mode AD level
    (torch.autograd.forward_ad): there rnnkit's autograd.Functions, which have no vmap or jvp rule, can't run
    and plain torch ops take their place."""
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return (peek is not None and peek() is not None) or getattr(forward_ad, "_current_level", -1) >= 0


def recording() -> bool:
    """Whether autograd records what runs now: grad mode on, outside torch.inference_mode(), which records nothing
    even under torch.enable_grad() (there an autograd.Function saving its tensors failed with torch's "Inference
    tensors cannot be saved for backward"). Not asked under torch.compile: dynamo can't trace the question."""
    return torch.is_grad_enabled() and (
        torch.compiler.is_compiling() or not torch.is_inference_mode_enabled()
    )


def make_fx_tracing():
    """Whether make_fx traces this (a proxy dispatch mode, also under torch.func.linearize): its graph records
    torch's ops on proxies, whose values can't be read and which see no work done outside torch's ops."""
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None


def joined(op, tensors, dim=0):
    """op(tensors, dim) for op torch.cat or torch.stack, also under torch.autocast where the tensors hold a half type
    other than autocast's own (a layer kept in bfloat16 under autocast(dtype=float16), an input in float16 under
    bfloat16): autocast joins tensors in float32 if one is, else in its own dtype, and on the other half type raised
    "Unexpected floating ScalarType in at::autocast::prioritize" from inside torch, where torch.nn's RNNs run. They
    are joined in the dtype they promote to, autocast's own choice wherever it had one."""
    if not autocast_on(tensors[0].device):
        return op(tensors, dim=dim)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    with autocast_off(tensors[0]):
        return op([t.to(dtype) for t in tensors], dim=dim)


def autocast_off(t):
    """A context that turns torch.autocast off for t's device where it is on: for ops that move values without
    computing (packing, index_put), which autocast joins as torch.cat (see `joined`) and which then failed on a
    half type other than its own; they keep their tensors' dtype either way."""
    return torch.autocast(t.device.type, enabled=False) if autocast_on(t.device) else contextlib.nullcontext()


def tanh_of_tail(pre, n):
    """pre with tanh taken of its last n columns, out of place (TanhTail's function in plain ops)."""
    return torch.cat((pre[..., :-n], torch.tanh(pre[..., -n:])), dim=-1)


def affine_input(xs, W, b, tail=0, ident=None):
    """xs Wᵀ + b, with the columns [ident, ident + D) xs itself (W has no rows for them) and the last `tail`
    columns through tanh before b is added: what `Cell.input_affine` describes."""
    if ident is None and not tail:
        if b is None:  # as rows: without b, torch's matmul folds a 3-D xs or not by W.requires_grad, as below
            return F.linear(xs.reshape(-1, xs.shape[-1]), W).view(*xs.shape[:-1], W.shape[0])
        return F.linear(xs, W, b)
    # as rows (T·B, D): torch's matmul of a 3-D xs folds it into one GEMM or not by whether W records gradients
    # (MUT1's W = cat(W_xh, W_xp) does only when recording), and evaluation gave other bits than training at B = 1
    pre = F.linear(xs.reshape(-1, xs.shape[-1]), W).view(*xs.shape[:-1], W.shape[0])
    if ident is not None:  # x itself as the block [c, c + D)
        # (MUT1's x̃ = x is the last block: no slices of pre, which autograd records twice, one of them empty)
        parts = (pre, xs) if ident == pre.shape[-1] else (pre[..., :ident], xs, pre[..., ident:])
        pre = joined(torch.cat, parts, dim=-1)
    kept = outputs_kept()
    # (torch.jit.trace records TanhTail as a Python op, which the traced module can't run: "inplace TanhTail not
    # supported in the JIT", also in torch.onnx.export with dynamo=False)
    if tail and (kept or plain_ops_only() or torch.jit.is_tracing()):
        pre = tanh_of_tail(pre, tail)
        return pre if b is None else pre + b
    if tail and not recording():  # TanhTail's ops without an autograd.Function (20-30 µs of a step)
        pre[..., -tail:].tanh_()
        return pre if b is None else pre.add_(b)
    if tail:
        return TanhTail.apply(pre, tail, b)
    if b is None:
        return pre
    return pre + b if kept else pre.add_(b)  # in place on the concatenation: one pass less


def outputs_kept():
    """Whether a Python dispatch mode sees the ops run here (selective activation checkpointing, whose policy keeps
    the outputs of the ops it names, a GEMM's or a cat's, and hands the same tensors back when backward runs the
    forward again). Such an output must not be changed in place after: the rerun got the changed one and changed
    it again (MUT1's tanh taken twice, silently wrong gradients; torch's check of kept tensors misses a GEMM's
    output, which F.linear returns as an _unsafe_view). Not asked under torch.compile (dynamo can't trace the
    question; plain_ops_only() reads True there, and the graph is functionalized)."""
    return not torch.compiler.is_compiling() and torch._C._len_torch_dispatch_stack() > 0


def bias_grad(db, shape):
    """db (G,), the Σ over rows of a bias added to every row of G columns, summed to the bias's shape: (G,) as it is,
    or one of F.linear's broadcast shapes, (1,), (1, G) or (1, 1). Of a 2-D bias, autograd refused the (G,) one
    ('invalid gradient at index 2 - got [G]'), in TanhTail and NativeProjection."""
    return db if db.shape == shape else db.view(*[1] * (len(shape) - 1), -1).sum_to_size(shape)


class TanhTail(torch.autograd.Function):
    """xw[..., -n:] <- tanh(xw[..., -n:]), then xw += b (b: (G,) or None; F.linear's (1, G) or (1, 1) too), in place
    on the GEMM's output: MUT1's tanh(x̃_t) + b_h block without concatenating a separate tanh term.

    Backward: dL/d(pre) = g, times (1 - tanh²) on the last n columns; db = Σ g over rows. Under
    backward(create_graph=True) it reads tanh from the output (xw - b), so that it differentiates again."""

    @staticmethod
    def forward(ctx, xw, n, b):
        t = torch.tanh(xw[..., -n:])
        xw[..., -n:] = t
        if b is not None:
            xw.add_(b)
        ctx.mark_dirty(xw)
        ctx.save_for_backward(t, xw, b)
        ctx.n = n
        return xw

    @staticmethod
    def backward(ctx, g):
        t, out, b = ctx.saved_tensors
        n = ctx.n
        db = bias_grad(g.reshape(-1, g.shape[-1]).sum(0), b.shape) if ctx.needs_input_grad[2] else None
        if torch.is_grad_enabled():  # t from the output, which autograd can differentiate
            t = out[..., -n:] if b is None else out[..., -n:] - b[..., -n:]
            return torch.cat((g[..., :-n], g[..., -n:] * (1 - t * t)), dim=-1), None, db
        dpre = g.clone()
        dpre[..., -n:].mul_(1 - t * t)
        return dpre, None, db


TORCH_ORDER = ("W_xh", "W_hh", "b_xh", "b_hh", "W_hr")
TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")  # torch.nn's for TORCH_ORDER


def _functional_keys(frame, name) -> dict:
    """The keys torch.func.functional_call was given, read from its frames above `frame` (torch's swap_tensor of
    torch.nn key `name`), without the path to the cell in a bigger model; {} where there is none."""
    prefix = ""
    for _ in range(6):
        if frame is None:
            return {}
        if frame.f_code is _ACCESSOR_SWAP_CODE:  # the key as given: with the path to the cell
            full = frame.f_locals.get("name", "")
            prefix = full[: -len(name)] if isinstance(full, str) and full.endswith(name) else ""
        if frame.f_code is _REPARAMETRIZE_CODE:
            keys = frame.f_locals.get("untied_parameters_and_buffers") or {}
            return {k[len(prefix) :]: v for k, v in keys.items() if k.startswith(prefix)}
        frame = frame.f_back
    return {}


# torch's private functions whose frames _functional_keys reads (see the layer's _functional_ties)
_ACCESSOR_SWAP_CODE = getattr(getattr(NamedMemberAccessor, "swap_tensor", None), "__code__", None)
_REPARAMETRIZE_CODE = getattr(
    getattr(getattr(_stateless, "_reparametrize_module", None), "__wrapped__", None), "__code__", None
)


def undrawn(cell: Cell, shape) -> torch.Tensor:
    """A parameter's tensor before reset_parameters draws it: for a cell of one's own NaN, not torch.empty's memory, so
    that one left undrawn is seen (check_drawn), as torch's deterministic mode fills torch.empty with NaN; rnnkit's own
    cells draw theirs, and take torch.empty (the fill cost 20% of building a 2x2048 lstm layer)."""
    return torch.full(shape, math.nan) if type(cell)._checked_steps else torch.empty(shape)


def check_drawn(cell: Cell) -> None:
    """A one-line error where a cell of one's own holds a parameter that is all NaN, as Cell.__init__ and
    recurrent_weights make them: its __init__ never called reset_parameters, or that left one undrawn. Such a cell
    ran on torch.empty's memory (NaN, 1e37), NaN from the first step with no word of why."""
    from torch._subclasses.fake_tensor import is_fake

    if not type(cell)._checked_steps:  # (rnnkit's own cells draw theirs)
        return
    names = [n for n, p in cell.named_parameters()
             if p.is_floating_point() and p.numel() and not p.is_meta and not is_fake(p) and bool(p.isnan().all())]  # fmt: skip
    if names:
        raise RnnkitError(f"{type(cell).__name__}'s {', '.join(names)} {'was' if len(names) == 1 else 'were'} never "
                          "drawn (still NaN, as Cell.__init__ and recurrent_weights make them): end __init__ with "
                          "self.reset_parameters(), which draws W_xh, b_xh and every W_*, b_* and GEMMS parameter; "
                          "one of another name (an EXTRAS parameter) is the cell's own to draw there")  # fmt: skip


def check_listed(cell: Cell) -> None:
    """A one-line error where a cell of one's own (a Cell subclass of its own, whose projection and rec_params are
    Cell's) holds a parameter that is neither W_xh, b_xh nor in REC_PARAMS: P never gives it to step and
    step_backward, and it never trained (no gradient), or a step that unpacks it failed deep in the loop."""
    cls = type(cell)
    rnnkits = [k for k in cls.__mro__[1:] if issubclass(k, Cell) and k.__module__.startswith("rnnkit.cells.")]
    if not cls._checked_steps or rnnkits != [Cell]:
        return  # (rnnkit's cells, and one's own subclass of them, hold parameters of their own: leaky's alpha_logit)
    if any(getattr(cls, f) is not getattr(Cell, f) for f in ("project_input", "input_affine", "rec_params")):
        return  # (a projection, or recurrent parameters, computed of its own may read them)
    listed = {"W_xh", "b_xh", *cls.REC_PARAMS}
    names = [n for n, _ in cell.named_parameters() if n not in listed]
    if names:
        what = f"a parameter {names[0]}" if len(names) == 1 else f"parameters {', '.join(names)}"
        raise RnnkitError(f"{cls.__name__} has {what} that REC_PARAMS does not list: step and step_backward get only "
                          "REC_PARAMS (in P), so it never reaches them and never trains; add it to REC_PARAMS and to "
                          "GEMMS (a recurrent product u Uᵀ + b) or EXTRAS (a gradient step_backward returns)")  # fmt: skip


def recurrent_weights(cell: Cell, *shapes_and_names):
    """Create the recurrent parameters `name: shape` on `cell` (None shape = absent bias). A cell torch.nn has
    lists its parameters in torch.nn's order (TORCH_ORDER): code that pairs parameters by position, such as
    vector_to_parameters(parameters_to_vector(lstm.parameters()), layer.parameters()) or an optimizer state
    of a torch.nn model, then gives the same weights, not b_xh's values in W_hh."""
    for name, shape in shapes_and_names:  # (torch.empty(*()) of a 0-dim one failed: "missing ... 'size'")
        setattr(cell, name, nn.Parameter(undrawn(cell, shape)) if shape is not None else None)
    if cell.torch_mode is not None:
        params = cell._parameters
        rank = {name: i for i, name in enumerate(TORCH_ORDER)}
        for name in sorted(params, key=lambda n: rank.get(n, len(TORCH_ORDER))):
            params[name] = params.pop(name)
