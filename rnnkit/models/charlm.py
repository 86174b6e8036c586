"""Character language model: char-rnn and min-char-rnn (decks 002 and 004).

    x_t = E[c_t]            (embedding, or the one-hot column of W_xh as in min-char-rnn)
    h_t = cell(x_t, h_prev) (rnnkit Recurrent: lstm, gru, rnn_tanh, ... stacked num_layers deep)
    y_t = W_hy h_t + b_y    (B, T, V) logits of the next character
    p_t = softmax(y_t),     loss = -1/(B T) Σ log p_t[c_{t+1}]   (nats per character)

The loss is the mean over the characters, deck 003's L = 1/τ Σ_t l_t; deck 004's J = Σ_t J^(t) and min-char-rnn's
loss (deck 002) sum over the window instead, T times this: min-char-rnn's iteration-0 loss -log(1/V)·seq_length is
about log V here (an untrained default model over V = 65 characters: 4.175 nats, log 65 = 4.174).

One interface for the training loop, `forward(batch) -> (logits, loss)`. For truncated BPTT
the model carries its hidden state from one window to the next, detached (`self.state`;
`reset_state()` starts afresh). Sampling and completion feed the state back one character at a
time (T = 1 calls); known text (a prime, a context, a text scored) is read in chunks of _CHUNK
characters (fewer of a vocabulary over 256: _CHUNK_LOGITS logits a chunk), one call each, the state carried.
"""

import collections
import functools
import inspect
import math
import numbers
import re
import types
import weakref
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit.data.corpus import bytes_hint, line_ends_hint, normal_form_hint, quoted_chars
from rnnkit.errors import RnnkitError, TooLarge, finite_real, fits_int64, said, switch
from rnnkit.layers.recurrent import check_layers_fit, meta_bounded
from rnnkit.models.config import CharLMConfig
from rnnkit.text.lmscore import perplexity

_CHUNK = 4096  # characters of known text a call (prime, log_probs): 1 MB of float32 logits for 64 characters
# logits of known text a call at most: _CHUNK characters of a vocabulary of up to 256, fewer of a bigger one (4096 of
# 10,000 characters held 164 MB of logits a call, and their float64 log-softmax 655 MB more)
_CHUNK_LOGITS = 1 << 20
# seconds before beam_complete draws its bar: a short completion (--length 40) says nothing
PROGRESS_DELAY = 1.0

TORCH_RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}


def _eval_view(module: nn.Module) -> nn.Module:
    """The module in eval mode without changing it: a copy of it and of each module inside, each in eval mode, that
    holds the same parameters, buffers and hooks (its own dicts' entries, not copies of the tensors). Setting eval mode
    on the model itself (model.eval(), then its modes put back) switched dropout off under a thread that trained the
    same model meanwhile, and a train() from that thread switched it on under the sampling one."""
    view = object.__new__(type(module))
    view.__dict__.update(module.__dict__)
    view.__dict__["training"] = False
    view.__dict__["_modules"] = {k: None if m is None else _eval_view(m) for k, m in module._modules.items()}
    # a forward (pre-)hook gets the module itself, not the view, as it does in eval mode: one that kept its output on
    # the module (setattr(module, 'last', out)) lost it with the view, one that looked modules up by identity missed
    # (under the same ids: the with_kwargs and always_called flags, keyed by them, still hold)
    for hooks in ("_forward_hooks", "_forward_pre_hooks"):
        if hooks in module.__dict__:
            view.__dict__[hooks] = _HooksOf(module, module.__dict__[hooks])
    # the view is called through _view_call, where torch's global forward (pre-)hooks get the module itself too (a
    # weak reference: no cycle of the view and its call); module.compile()'s call, the module's own bound _call_impl,
    # would run the module itself, in its mode
    view.__dict__["_compiled_call_impl"] = functools.partial(_view_call, weakref.ref(view), module)
    return view


def _hook_of(module, hook, _view, *args):
    """`hook` called with `module` where nn.Module calls it with the module's _eval_view."""
    return hook(module, *args)


class _HooksOf:
    """A module's forward (pre-)hooks as its _eval_view calls them (len and items, what nn.Module reads), each with the
    module itself: its own dict read at each call, so a hook removed or added while sampling (a one-shot hook that
    removes its handle) is so in the view too, as in eval mode (a copy of the dict called a removed hook on at each
    step, and never one added). torch's global ones likewise (_view_call)."""

    def __init__(self, module: nn.Module, hooks: dict):
        self._module, self._hooks = module, hooks

    def __len__(self) -> int:
        return len(self._hooks)

    def items(self):
        # list() copies the dict in one step, as torch's (*d.items(),) does: a hook registered meanwhile by another
        # thread broke the loop over the live dict ('OrderedDict mutated during iteration')
        return [(k, functools.partial(_hook_of, self._module, h)) for k, h in list(self._hooks.items())]


_GLOBAL_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks")


def _view_call(view, module, *args, **kwargs):
    """A call of an _eval_view (nn.Module's __call__ calls it for the view): nn.Module._call_impl on the view, as it
    was, where no global forward (pre-)hook is registered; else that same code, run with torch's module namespace in
    which those two dicts read as _HooksOf of the module: a global hook got the view's copy of the module, which a
    hook that looked modules up by identity (names of model.named_modules()) missed, where eval mode gives the
    module itself. Backward hooks are the view's (sampling runs under no_grad: none is called)."""
    view, torch_globals = view(), torch.nn.modules.module.__dict__
    impl = type(view)._call_impl
    # (a _call_impl with a closure, as another torch may write it, can't be rebuilt on a namespace: hooks get the view)
    plain = impl is nn.Module._call_impl and not impl.__code__.co_freevars
    if not plain or not any(torch_globals.get(name) for name in _GLOBAL_HOOKS):
        return impl(view, *args, **kwargs)
    namespace = dict(torch_globals)
    for name in _GLOBAL_HOOKS:
        namespace[name] = _HooksOf(module, torch_globals[name])
    call = types.FunctionType(impl.__code__, namespace, impl.__name__, impl.__defaults__)
    call.__kwdefaults__ = impl.__kwdefaults__
    return call(view, *args, **kwargs)


def _inference(fn):
    """fn under torch.no_grad() and in eval mode (dropout off), as char-rnn's sample.lua and Keras' predict run: a
    model left in train mode sampled, scored and completed with dropout, drawing on the global RNG, so a seeded
    generator did not reproduce. A model in train mode runs as its _eval_view, its own mode and its modules' left
    alone: threads that sample, score or train the model at once each keep theirs. A model in eval mode runs as it
    is (a part of it left in train mode too)."""

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        with torch.no_grad():
            return fn(_eval_view(self) if self.training else self, *args, **kwargs)

    return run


def detach(state):
    """The state cut from its graph. One made under torch.inference_mode() (an evaluation calling model(batch)) is
    copied out of it where autograd runs: the next training window failed ("Inference tensors cannot be saved for
    backward"), where one made under torch.no_grad() trains on. Under torch.compile, which can't trace the question
    (a graph break; fullgraph=True failed), every state is copied by `_thaw`."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(detach(s) for s in state)
    if torch.compiler.is_compiling():
        return state.detach() if torch.compiler.is_exporting() else _thaw(state.detach())
    thaw = state.is_inference() and not torch.is_inference_mode_enabled()
    return state.clone() if thaw else state.detach()


@torch.library.custom_op("rnnkit::thaw", mutates_args=())
def _thaw(state: torch.Tensor) -> torch.Tensor:
    """A copy of the state for a compiled graph, one AOTAutograd can't drop: a plain clone it took as free to recompute,
    and saved the input for backward instead, an inference tensor after an evaluation under torch.inference_mode()."""
    return state.clone()


@_thaw.register_fake
def _(state):
    return torch.empty_like(state)


def _torch_recurrent(cfg: CharLMConfig, input_size: int) -> nn.Module:
    if cfg.cell not in TORCH_RNNS:
        raise ValueError(f"torch.nn has no '{cfg.cell}' layer; torch_rnn supports {sorted(TORCH_RNNS)}")
    kw = {"nonlinearity": cfg.cell[4:]} if cfg.cell.startswith("rnn_") else {}
    dropout = cfg.dropout if cfg.num_layers > 1 else 0.0  # between layers only, as rnnkit's Recurrent
    # (as ints: torch.nn refused a numpy integer, "hidden_size should be of type int, got: int64", which CharLM
    # checks as a count and rnnkit's Recurrent takes; the sizes are checked before this is called)
    rnn = TORCH_RNNS[cfg.cell](
        input_size, int(cfg.hidden_size), int(cfg.num_layers), batch_first=True, dropout=dropout, **kw
    )
    fb = cfg.forget_bias
    if cfg.cell == "lstm" and fb is not None:  # (None: torch's draw, as rnnkit's LSTM takes it)
        # checked as rnnkit's LSTM checks it: NaN made every output NaN, a string failed in the assignment below
        if not finite_real(fb):
            raise RnnkitError(f"lstm forget_bias must be a finite number (or None: drawn as the other biases), got "
                              f"{said(fb)}")  # fmt: skip
        # (past its dtype's largest value: torch's "cannot be converted ... without overflow", as rnnkit's LSTM says)
        top = torch.finfo(rnn.bias_ih_l0.dtype).max
        if abs(fb) > top:
            raise RnnkitError(f"lstm forget_bias {fb:g} is past the largest value of its bias's dtype, "
                              f"{str(rnn.bias_ih_l0.dtype).removeprefix('torch.')} ({top:.6g}); give a smaller one")  # fmt: skip
        # gate order i, f, g, o: the forget-gate bias is the second quarter
        H = cfg.hidden_size
        with torch.no_grad():
            for name, b in rnn.named_parameters():
                if name.startswith("bias_ih"):
                    b[H : 2 * H] = float(fb)  # (an int past 64 bits, 2**63, failed in torch's unpacking)
                elif name.startswith("bias_hh"):
                    b[H : 2 * H] = 0.0
    return rnn


class CharLM(nn.Module):
    """Embedding (or one-hot) -> Recurrent -> Linear, over a vocabulary of V characters.

    Shapes:
        batch.xs, batch.ys: (B, T) int64 character indices; logits: (B, T, V).
    """

    def __init__(self, cfg: CharLMConfig):
        super().__init__()
        self.cfg = cfg
        # (vocab_size 0: CharLMConfig's placeholder, training sets it)
        V = _check_count(cfg.vocab_size, "vocab_size", 1, size=True)
        E = _check_count(cfg.embedding_size, "embedding_size", 0, size=True)
        # (the dropout below asked num_layers > 1 first: None failed with "'>' not supported"; and torch_rnn's
        # torch.nn.LSTM took hidden_size=True, an int, for one unit)
        L = _check_count(cfg.num_layers, "num_layers", 1)  # (too many: check_layers_fit says it)
        H = _check_count(cfg.hidden_size, "hidden_size", 1, size=True)
        # (one layer's dropout is only self.drop's, which took True for p = 1, every output zeroed in training)
        p = cfg.dropout
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise RnnkitError(
                f"dropout must be a number in [0, 1] (the probability of zeroing), got {said(p)}"
            )
        # (taken for its truth value: torch_rnn="False", a config file's string, built the model on torch.nn)
        switch("torch_rnn", cfg.torch_rnn)
        # (as Python ints: numpy's int64 sizes wrapped around in its product, L·H·H·4 of 2 layers of 2^31 units read
        # as 0, and the layers were built until the memory ran out)
        check_layers_fit(L, H)
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        input_size = E if E > 0 else V
        if cfg.torch_rnn:
            self.rnn = _torch_recurrent(cfg, input_size)
        else:
            from rnnkit import CELLS
            from rnnkit.layers import Recurrent

            if cfg.cell not in CELLS:
                raise RnnkitError(f"unknown cell {cfg.cell!r}; choose one of: {', '.join(CELLS)}")
            takes_bias = "forget_bias" in inspect.signature(CELLS[cfg.cell]).parameters
            self.rnn = Recurrent(
                cfg.cell, input_size, cfg.hidden_size, num_layers=cfg.num_layers,
                dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,  # between layers; self.drop after the last
                backend=cfg.backend, **({"forget_bias": cfg.forget_bias} if takes_bias else {}),
            )  # fmt: skip
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, V)  # W_hy, b_y
        self.state = None  # carried across truncated-BPTT windows

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """nn.Module's, with the cell and whether torch.nn runs it in the state_dict's metadata, for the load."""
        super()._save_to_state_dict(destination, prefix, keep_vars)
        meta = getattr(destination, "_metadata", {}).get(prefix[:-1])
        if meta is not None:
            meta.update(cell=self.cfg.cell, torch_rnn=bool(self.cfg.torch_rnn))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """nn.Module's, after renaming an rnnkit model's layer keys (rnn.cells.0.W_xh) to torch.nn's (rnn.weight_ih_l0)
        for a torch_rnn model: it refused them ("Missing key(s): rnn.weight_ih_l0, ..."), where an rnnkit model takes
        torch.nn's. A model of another cell is refused here where torch.nn runs either (rnnkit's cells say it
        themselves): an rnn_relu model's weights loaded into an rnn_tanh one in silence."""
        given = local_metadata.get("cell")
        theirs = local_metadata.get("torch_rnn")
        if isinstance(given, str) and given != self.cfg.cell and (self.cfg.torch_rnn or theirs):
            errors.append(f"this state_dict is a {given!r} model's, where this model's cell is {self.cfg.cell!r}; build "
                          f"it with cell={given!r} to load it")  # fmt: skip
        if self.cfg.torch_rnn:
            torch_names = {"W_xh": "weight_ih", "W_hh": "weight_hh", "b_xh": "bias_ih", "b_hh": "bias_hh"}
            ours = re.compile(re.escape(prefix) + r"rnn\.cells\.(\d+)\.(W_xh|W_hh|b_xh|b_hh)")
            for key in [k for k in state_dict if ours.fullmatch(k)]:
                i, name = ours.fullmatch(key).groups()
                new = f"{prefix}rnn.{torch_names[name]}_l{i}"
                if new not in state_dict:
                    state_dict[new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def inputs(self, xs: torch.Tensor) -> torch.Tensor:
        """(B, T) indices -> (B, T, D): an embedding lookup, or one-hot vectors (min-char-rnn)."""
        if self.embedding is not None:
            return self.embedding(xs)
        return F.one_hot(xs, self.cfg.vocab_size).to(
            self.head.weight.dtype
        )  # the model's dtype (float64 too)

    def run(self, xs: torch.Tensor, state=None):
        """(B, T) indices and a state -> (B, T, V) logits and the final state."""
        _check_tensor(xs, "run's xs", "a (B, T) tensor of character indices")
        _check_range(xs, self.cfg.vocab_size, "run's xs")
        if isinstance(xs, torch.Tensor) and xs.dim() in (1, 2):  # (1: one stream unbatched, its state (L, H))
            self._check_state(state, xs.shape[0] if xs.dim() == 2 else None, "run")
        return self._run(xs, state)

    def _run(self, xs, state=None):
        """run without its check, for the loops below (their ids are checked once, up front)."""
        hs, state = self.rnn(self.inputs(_as_ids(xs)), state)  # (B, T, H)
        return self.head(self.drop(hs)), state

    def reset_state(self):
        self.state = None

    def forward(self, batch):
        """Training interface: carry the state across windows; loss in nats per character."""
        if not (hasattr(batch, "xs") and hasattr(batch, "ys")):
            raise RnnkitError(f"CharLM(batch) takes a window of (B, T) character indices and their next characters, "
                              f"rnnkit.data.bptt.Window(xs, ys), got a {type(batch).__name__}; for the logits of xs "
                              "alone use model.run(xs)")  # fmt: skip
        _check_window(batch.xs, batch.ys)
        V = self.cfg.vocab_size
        if not _traced():  # (asked once for both windows' ids)
            _check_read(batch.xs, V, "CharLM(batch)'s xs")
            # (a target of -100 is cross_entropy's ignore_index: padding the loss leaves out, as torch's users pad
            # targets)
            _check_read(batch.ys, V, "CharLM(batch)'s ys", ignore=_IGNORE)
        state = detach(self.state)
        if state is not None and _batch_of(state) != batch.xs.shape[0]:
            state = None  # a different number of streams: start afresh
        elif state is not None:  # where the model is now (model.double() or .to(device) after a window)
            state = _moved(state, self.head.weight)
        logits, state = self._run(batch.xs, state)
        self.state = detach(state)
        loss = F.cross_entropy(logits.flatten(0, 1), _as_ids(batch.ys).flatten())
        return logits, loss

    # ---- sampling, scoring, completion: one character a call, known text in chunks ----------
    def _check_ids(self, ids, what) -> list:
        """ids as a list of ints, each a character index in [0, V), or one error: text must be encoded first
        (`encode(text, chars, ...)`). Takes a list, a numpy array or an integer tensor."""
        V = self.cfg.vocab_size
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool or ids.dim() != 1:
                raise RnnkitError(f"{what} takes character indices, a list or a 1-D integer tensor, got a "
                                  f"{ids.dtype} tensor of shape {tuple(ids.shape)}")  # fmt: skip
            ids = ids.tolist()
        elif isinstance(ids, Iterable) and not isinstance(ids, str):
            ids = list(ids)  # a generator is read once, here: the checks below read it twice
        fix = "; encode text with rnnkit.models.charlm.encode(text, chars, ...)"
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise RnnkitError(f"{what} takes character indices (ints), got {_quoted(ids)}{fix}")
        odd = next(
            (i for i, c in enumerate(ids) if isinstance(c, bool) or not isinstance(c, numbers.Integral)), None
        )
        if odd is not None:  # (which one: a long list's quoted start showed only ints)
            raise RnnkitError(f"{what} takes character indices (ints), got {_quoted(ids)}, whose item {odd:,} is "
                              f"{_quoted(ids[odd])}{fix}")  # fmt: skip
        bad = [int(c) for c in ids if not 0 <= c < V]
        if bad:
            raise RnnkitError(f"{what}: indices {bad[:5]} lie outside the vocabulary [0, {V}){_ENCODE_FIX}")
        return [int(c) for c in ids]

    def _check_state(self, state, B, what) -> None:
        """A state given to run, step or prime of the shape this model makes for B streams, (num_layers, B, H) (an
        LSTM's h and c each; B None: run's one unbatched stream, (num_layers, H)), or one line: a state of another
        number of streams (prime's one, to step B characters) was the layer's error advising batch_first=False, which
        a CharLM does not take, and on torch.nn torch's RuntimeError ('Expected hidden size ...'). Anything else is
        left to the layer's own errors."""
        parts = state if isinstance(state, tuple) else (state,)
        if state is None or not all(isinstance(s, torch.Tensor) for s in parts):
            return
        L, H = self.cfg.num_layers, self.cfg.hidden_size
        want = (L, H) if B is None else (L, B, H)
        got = next((tuple(s.shape) for s in parts if tuple(s.shape) != want), None)
        if got is not None:
            n = "one unbatched stream (xs of shape (T,))" if B is None else f"{B} stream{'s' * (B != 1)}"
            axes = "(num_layers, hidden_size)" if B is None else "(num_layers, streams, hidden_size)"
            raise RnnkitError(f"{what}: the state given has shape {got}, where this model's for {n} is {want} {axes}; "
                              "give the state a call with as many streams returned, or None to start from a zero "
                              "state")  # fmt: skip

    @_inference
    def step(self, c_t: int | torch.Tensor, state=None):
        """One step: character index (or (B,) indices) -> (B, V) log-probabilities, new state."""
        xs = torch.as_tensor(c_t)
        if xs.is_floating_point() or xs.is_complex() or xs.dtype == torch.bool or xs.dim() > 1:
            raise RnnkitError(f"step takes a character index or a (B,) tensor of them, got {_quoted(c_t)}")
        self._check_ids(xs.reshape(-1).tolist(), "step")
        self._check_state(state, xs.numel(), "step")
        return self._step(xs, state)

    def _step(self, c_t, state, least=torch.float32):
        """step without its checks, for the loops below (their ids are checked once, up front); log-probabilities
        in `least` precision at least (beam_complete's float64, as log_probs reads them)."""
        xs = torch.as_tensor(c_t, dtype=torch.long, device=self.head.weight.device).reshape(-1, 1)  # (B, 1)
        logits, state = self._run(xs, state)
        y = logits[:, -1]  # float32 at least (a half-precision model too), float64 for a float64 model
        return F.log_softmax(y.to(torch.promote_types(y.dtype, least)), dim=-1), state

    def _feed(self, ids, state=None):
        """Run known characters through the model, _CHUNK of them a call (a (1, n) window, the state carried):
        one engine call a character took 0.4 ms each, 7 minutes to score a 1 MB text. Fewer a call where V is over
        256, so that a call's (1, n, V) logits hold _CHUNK_LOGITS at most: n = 4096 of a vocabulary of 10,000 CJK
        characters, emoji and the like held 782 MB at the peak of scoring a text (46 MB at V = 100), its peak growing
        with V. Yields each chunk's (1, n, V) logits and the state after it."""
        n = max(1, min(_CHUNK, _CHUNK_LOGITS // self.cfg.vocab_size))
        for i in range(0, len(ids), n):
            xs = torch.tensor([ids[i : i + n]], dtype=torch.long, device=self.head.weight.device)
            logits, state = self._run(xs, state)
            yield logits, state

    def _prime(self, ids, state=None, least=torch.float32):
        ((logits, state),) = collections.deque(self._feed(ids, state), maxlen=1)  # the last chunk's
        y = logits[:, -1]
        return F.log_softmax(y.to(torch.promote_types(y.dtype, least)), dim=-1), state

    @_inference
    def prime(self, ids: list, state=None):
        """Feed a prefix (in chunks of _CHUNK characters); returns the log-probabilities after it and the state."""
        ids = self._check_ids(ids, "prime")
        _need_context(ids, "prime")
        self._check_state(state, 1, "prime")
        return self._prime(ids, state)

    @_inference
    def sample(self, ids: list, length: int, temperature=1.0, top_k=0, greedy=False, generator=None) -> list:
        """Continue `ids` by `length` characters: p ∝ exp(y / temperature), or argmax if greedy."""
        return list(self.iter_sample(ids, length, temperature, top_k, greedy, generator))

    @_inference
    def iter_sample(self, ids: list, length: int, temperature=1.0, top_k=0, greedy=False, generator=None):
        """sample()'s ids one at a time, as each is drawn (`rnnkit sample` prints them as they come); the
        arguments are checked and the context read at the call, before the first id is asked for. Each draw runs
        as sample() does (no_grad, eval mode), and between draws the caller's own modes hold."""
        ids = self._check_ids(ids, "sample")
        _need_context(ids, "sample")
        length, top_k = _check_count(length, "length", 0), _check_count(top_k, "top_k", 0)
        # (taken for its truth value: greedy="False", a config file's string, gave the argmax text, None a sample)
        switch("greedy", greedy)
        if not greedy:
            if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
                raise RnnkitError(f"temperature must be a number > 0, got {said(temperature)}")
            if not temperature > 0:  # (NaN too)
                raise RnnkitError(
                    f"temperature must be > 0, got {said(temperature)}; for the most probable text use greedy"
                )
            # (a Python int past float's range, 10**400, raised float's OverflowError; inf samples uniformly)
            try:
                temperature = float(temperature)
            except OverflowError:
                raise RnnkitError(f"temperature {temperature} is past float's range; give inf to sample uniformly, "
                                  "or a smaller one") from None  # fmt: skip
            # (a seed given as the generator failed at the first draw, inside torch: "must be torch.Generator, not int")
            if generator is not None and not isinstance(generator, torch.Generator):
                raise RnnkitError(f"generator must be a torch.Generator (or None), got {_type_name(generator)}; for "
                                  "a seed give generator=torch.Generator().manual_seed(seed)")  # fmt: skip
        # in float64, as beam_complete (beam 1) reads them: float32 rounded logits 0 and 1e-8 to one log-probability,
        # a tie that greedy gave to the less probable first character, and top_k=1 (or a temperature near 0) to either
        logp, state = self._prime(ids, least=torch.float64)
        pick = functools.partial(self._draw, temperature=temperature, top_k=top_k, greedy=greedy,
                                 generator=generator, least=torch.float64)  # fmt: skip
        return self._drawn(pick, logp, state, len(ids), length)

    @staticmethod
    def _drawn(pick, logp, state, n, length):
        """The generator of iter_sample (n: characters read so far, for _check_drawable's message). A generator
        holds no no_grad or eval mode across its yields: each draw takes them anew (_draw)."""
        for t in range(length):
            c, logp, state = pick(logp, state, n + t)
            yield c

    @_inference
    def _draw(self, logp, state, n, temperature, top_k, greedy, generator, least):
        """One character drawn from log p (its n-th), and the model stepped on it."""
        _check_drawable(logp, n)
        if greedy:
            c = int(logp.argmax(-1))
        else:
            # from the top, in float64: a tiny temperature can't overflow, nor be a denormal that flushes to 0
            y = logp[0].double() - logp[0].max()
            # the top k picked before the division: at temperature=inf all would tie at -0.0
            drop = y < y.topk(top_k).values[-1] if top_k and top_k < y.numel() else None
            y = y / max(temperature, 1e-300)
            if drop is not None:
                y = y.masked_fill(drop, -math.inf)
            p = F.softmax(y, -1)
            if generator is not None and generator.device != p.device:
                p = p.to(generator.device)  # (a CPU generator, a GPU model: multinomial refused)
            c = int(torch.multinomial(p, 1, generator=generator))
        return (c, *self._step(c, state, least))

    @_inference
    def log_probs(self, ids: list, context: list) -> list:
        """log p(c_t | context, c_<t) for each character of `ids` (nats), read in chunks of _CHUNK characters."""
        context = self._check_ids(context, "log_probs context")
        _need_context(context, "log_probs")
        ids = self._check_ids(ids, "log_probs")
        if not ids:
            return []
        # the logits at position j of context + ids[:-1] predict ids[j - first]
        out, start, first = [], 0, len(context) - 1
        for logits, _ in self._feed(context + ids[:-1]):
            rows = logits[0, max(first - start, 0) :]  # those of this chunk that predict one of ids
            k = len(out)
            picked = torch.tensor(ids[k : k + len(rows)], dtype=torch.long, device=rows.device)[:, None]
            # in float64: a float32 log-softmax's rounding, ~1e-7 a character, summed to 1e-5 nats over 300
            out += F.log_softmax(rows.double(), dim=-1).gather(1, picked)[:, 0].tolist()
            start += logits.shape[1]
        return out

    @_inference
    def beam_complete(self, ids: list, length: int, beam: int = 1, progress: bool = False):
        """The most probable continuation of `length` characters (deck 004's argmax completion).

        Beam search keeps the K best partial continuations by total log-probability; the K
        beams advance together as a batch of K streams, one character per step. `progress`: a bar on stderr of
        the characters chosen, once the search has run for a second (`rnnkit complete --length 100000`).
        Returns (ids, log p in nats); iter_complete gives the ids as the search settles them.
        """
        found = self.iter_complete(ids, length, beam, progress)
        seq = []
        while True:
            try:
                seq.append(next(found))
            except StopIteration as done:
                return seq, done.value

    @_inference
    def iter_complete(self, ids: list, length: int, beam: int = 1, progress: bool = False):
        """beam_complete's ids one at a time, each as soon as the search has settled it: once every beam kept
        descends from one beam of that step, no later step can change it (with beam 1, at once), so that `rnnkit
        complete` prints its text as it is found and a huge --length runs in bounded memory until stopped (it kept
        every step's beams to the end, then printed: --length 2^63-1 printed nothing and grew until memory was
        gone). The generator's return value (StopIteration.value) is the log p of the whole continuation. The
        arguments are checked and the context read at the call, before the first id is asked for."""
        ids = self._check_ids(ids, "beam_complete")
        _need_context(ids, "beam_complete")
        length, beam = _check_count(length, "length", 0), _check_count(beam, "beam", 1)
        # (its bar's len(range(length)) overflowed, a traceback; no list holds so many steps)
        fits_int64("length", length)
        logp, state = self._prime(ids, least=torch.float64)  # (1, V)
        return self._searched(logp, state, len(ids), length, beam, progress)

    def _searched(self, logp, state, n, length, beam, progress):
        """The generator of iter_complete (n: characters read so far, for _check_drawable's message)."""
        # the steps not settled yet, each as (beam it came from, character) per beam kept, read back from the best
        # at the end: copying every beam's characters at each step made a long search quadratic (--beam 5, 40,000
        # characters: 13.3 s); and for each, the set of its beams that a beam kept now descends from (only shrinks)
        back, live = collections.deque(), collections.deque()
        scores = torch.zeros(1, dtype=torch.float64, device=logp.device)  # summed in float64, as score's fsum
        bar = dict(
            desc="complete", unit=" chars", unit_scale=True, delay=PROGRESS_DELAY, **bar_options(progress)
        )
        for k in tqdm(range(length), **bar):
            rows, cols, scores, logp, state = self._beam_step(scores, logp, state, beam, n + k)
            back.append((rows, cols))
            live.append(set(range(len(rows))))
            for j in range(len(back) - 1, 0, -1):  # each older step's beams, until one is as it was
                parents = {back[j][0][b] for b in live[j]}
                if parents == live[j - 1]:
                    break
                live[j - 1] = parents
            while live and len(live[0]) == 1:  # one beam of the oldest step left: its character is settled
                (b,) = live.popleft()
                yield back.popleft()[1][b]
        best = int(scores.argmax())
        seq, b = [], best
        for rows, cols in reversed(back):
            seq.append(cols[b])
            b = rows[b]
        yield from reversed(seq)
        return float(scores[best])

    @_inference
    def _beam_step(self, scores, logp, state, beam, n):
        """One step of the beam search: the `beam` best of every kept beam's continuations by one character."""
        _check_drawable(logp, n)
        total = scores[:, None] + logp.double()  # (K, V)
        V = total.shape[1]
        # a stable sort: ties go to the earlier beam and the lower character, as argmax's (topk's order is unspecified);
        # of the candidates at or above the beam-th largest only, which are the sorted K·V's first `beam` in their
        # order (a sort of all K·V took 6.2 ms a step at V = 10,000, beam 5: 60% of complete's time)
        flat = total.flatten()
        top = (flat >= flat.topk(beam).values[-1]).nonzero()[:, 0] if beam < flat.numel() else None
        values, indices = (flat if top is None else flat[top]).sort(descending=True, stable=True)
        values, indices = values[:beam], (indices if top is None else top[indices])[:beam]
        rows, cols = indices // V, indices % V
        state = _select(state, rows)
        logp, state = self._step(cols, state, torch.float64)
        return rows.tolist(), cols.tolist(), values, logp, state


def _type_name(v) -> str:
    """v's type as a message names it: with its module where it is no builtin (numpy's Generator was 'got Generator'
    in 'generator must be a torch.Generator ..., got Generator', as if it were one)."""
    t = type(v)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _quoted(v, most=60) -> str:
    """repr(v), its start only where it is long, with its length: text or floats given as indices were quoted whole,
    a 100,000-character error line for sample("ab" * 50_000, 3)."""
    r = repr(v)
    if len(r) <= most:
        return r
    if not hasattr(v, "__len__"):
        return r[:most] + "..."
    return f"{r[:most]}... ({len(v):,} {'characters' if isinstance(v, str) else 'items'})"


def _as_ids(t):
    """Character indices as the int64 that one_hot and cross_entropy take: a corpus's own uint8, uint16 or int32
    tokens (torch.from_numpy(corpus.tokens[...])) failed inside torch ('one_hot is only applicable to index tensor
    of type LongTensor'; an embedding took int32 but not uint8). Other kinds are left to torch's own error."""
    if isinstance(t, torch.Tensor) and t.dtype != torch.long and not (t.is_floating_point() or t.is_complex()
                                                                      or t.dtype == torch.bool):  # fmt: skip
        return t.long()
    return t


# the fix of an index outside the vocabulary: ids of another vocabulary (another run's, or a text's own)
_ENCODE_FIX = (
    "; give the indices of the model's own vocabulary: encode(text, chars, ...) from rnnkit.models.charlm, with the "
    "chars load_run gives"
)


_IGNORE = -100  # F.cross_entropy's ignore_index: a target the loss leaves out (padding)


def _check_range(ids, V: int, what: str, ignore=None) -> None:
    """Integer ids each in [0, V) or `ignore`, or one line naming the first outside, V and the fix: one past the
    vocabulary was torch's IndexError from deep in the embedding ('index out of range in self') or one_hot's
    RuntimeError ('Class values must be smaller than num_classes'), a target cross_entropy's ('Target 9 is out of
    bounds'), and on a GPU a device-side assert. Read as recurrent.py reads a leaky α: on plain tensors, outside graph
    makers and transforms; other kinds and dtypes are left to torch's own errors, and so are ids on a GPU (reading
    them here would wait for the GPU at every training window: torch's device-side assert says it there)."""
    if not _traced():
        _check_read(ids, V, what, ignore)


def _traced() -> bool:
    """Whether ids can't be read here: inside a tracer, torch.compile, a torch.func transform or make_fx."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    from rnnkit.cells._base import make_fx_tracing, plain_ops_only

    return plain_ops_only() or make_fx_tracing()


def _check_read(ids, V: int, what: str, ignore=None) -> None:
    """_check_range where ids can be read (not _traced(), asked by the caller)."""
    if (
        type(ids) is not torch.Tensor
        or ids.is_floating_point()
        or ids.is_complex()
        or ids.dtype == torch.bool
        or not ids.numel()
        or ids.device.type != "cpu"
    ):
        return
    # over the ids as they are (integers: no graph to detach from; int64 not copied): at every training window, xs
    # and ys, the detach, the flattening view and .long() took 2 of the check's 7 µs
    lo, hi = torch.aminmax(ids if ids.dtype == torch.long else ids.long())
    if lo.item() < 0 or hi.item() >= V:
        flat = ids.detach().reshape(-1).long()
        below = (flat < 0) if ignore is None else (flat < 0) & (flat != ignore)
        outside = flat[below | (flat >= V)]
        if not outside.numel():  # (no id outside but `ignore`)
            return
        bad = int(outside[0])
        raise RnnkitError(f"{what}: character index {bad} lies outside the vocabulary of {V} characters (indices 0 "
                          f"to {V - 1}){_ENCODE_FIX}")  # fmt: skip


def _check_window(xs, ys) -> None:
    """xs and ys of one shape (B, T): ys of another shape with as many elements (ys.T) was flattened to xs's length and
    scored against the wrong characters in silence, and 1-D xs failed inside cross_entropy."""
    for name, t in (("xs", xs), ("ys", ys)):
        _check_tensor(t, f"CharLM(batch)'s {name}", "a (B, T) tensor of character indices")
    shape = tuple(getattr(xs, "shape", ()))
    if len(shape) != 2:
        raise RnnkitError(f"CharLM(batch) takes xs of shape (B, T) (streams, characters), got xs of shape {shape}; "
                          "for one stream give xs.unsqueeze(0) and ys.unsqueeze(0)")  # fmt: skip
    if tuple(getattr(ys, "shape", ())) != shape:
        raise RnnkitError(f"CharLM(batch) takes ys of xs's shape (each next character), got ys of shape "
                          f"{tuple(getattr(ys, 'shape', ()))} for xs of shape {shape}")  # fmt: skip


def _check_tensor(t, what, takes) -> None:
    """t a torch tensor, or one line naming its type and the conversion: a list of lists was 'xs of shape ()' (a list
    has no shape) with the advice xs.unsqueeze(0), a numpy array (a user's own np.reshape of a corpus's tokens) torch's
    TypeError from deep in one_hot or the embedding ('must be Tensor, not numpy.ndarray')."""
    if not isinstance(t, torch.Tensor):
        raise RnnkitError(
            f"{what} must be {takes}, got a {_type_name(t)}; convert it with torch.as_tensor(...)"
        )


def _check_drawable(logp, n) -> None:
    """One line for log-probabilities that are NaN (a state overflowed to inf: an rnn_relu or a float16 model over a
    long prime; or weights of NaN): sample failed in torch.multinomial ('probability tensor contains either inf, nan
    or element < 0'), and greedy and beam_complete wrote character 0 again and again in silence (argmax of NaN)."""
    if bool(logp.isnan().any()):
        raise RnnkitError(f"the model's log-probabilities are NaN after {n:,} characters (its state overflowed to inf, "
                          "or its weights hold NaN): no character can be chosen from them; give a shorter context, "
                          "or use a model whose state stays finite")  # fmt: skip


def _check_count(n, name, least, size=False) -> int:
    """n as an int (a numpy integer too), or one error; a size (of a weight) below 2^63 too: 2**63 failed in torch's
    empty() with "Overflow when unpacking long long". (A length or beam is any: a sample's runs until stopped.)"""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < least:
        raise RnnkitError(f"{name} must be an integer >= {least}, got {said(n)}")
    return int(fits_int64(name, n) if size else n)


def _need_context(ids, what):
    if len(ids) == 0:
        raise RnnkitError(
            f"{what} needs at least one character of context: the model predicts from its input"
        )


def encode(text: str, chars: list, what: str) -> list:
    """Character indices of `text` in the vocabulary `chars`; one error naming the unseen characters (the first 40,
    and how many more)."""
    if not isinstance(text, str):
        decode = "; decode it first, e.g. data.decode('utf-8')" if isinstance(text, bytes | bytearray) else ""
        raise RnnkitError(f"{what} must be text (a str), got {type(text).__name__}{decode}")
    index = {c: i for i, c in enumerate(chars)}
    unseen = sorted({c for c in text if c not in index})
    if unseen:  # (the first 40: a text in another script quoted its thousands, a 9,000-character line)
        more = f" and {len(unseen) - 40:,} more" if len(unseen) > 40 else ""
        raise RnnkitError(
            f"{what} has characters the model never saw: {quoted_chars(''.join(unseen[:40]))}{more}; remove or replace them"
            f"{line_ends_hint(unseen, chars, text)}{normal_form_hint(unseen, chars)}{bytes_hint(unseen)}"
        )
    return [index[c] for c in text]


def load_run(run):
    """(model in eval mode, vocabulary) of a run folder (its best.pt, else latest.pt) or a checkpoint file.

    Loading never runs code from the file (torch.load with weights_only=True); a damaged or inconsistent
    checkpoint is one RnnkitError naming the file."""
    import json

    from rnnkit import CELLS
    from rnnkit.train.checkpoint import (
        _instead,
        hollow_weights,
        load_checkpoint,
        malformed_weights,
        mismatch,
        resolve,
    )
    from rnnkit.train.config import RunConfig

    ckpt, path = load_checkpoint(run), resolve(run)
    bad = f"{path} is not a usable rnnkit checkpoint"
    missing = [key for key in ("config", "chars", "model") if key not in ckpt]
    if missing:
        raise RnnkitError(f"{bad}: it has no {' or '.join(missing)}; retrain or use another file")
    try:
        cfg = RunConfig.from_dict(json.loads(ckpt["config"]))
    except (TypeError, ValueError, AttributeError) as e:  # not JSON, not a dict, unknown keys
        option = re.match(r"unknown option (\S+);", str(e)) if isinstance(e, RnnkitError) else None
        if option:  # (its format version this one's: an option added since, which no version bump marks)
            raise RnnkitError(f"{path} was saved by a newer rnnkit (its config holds {option[1]}, which this one "
                              "does not know); upgrade rnnkit to read it") from None  # fmt: skip
        raise RnnkitError(f"{bad}: its config cannot be read ({str(e).splitlines()[0][:100]})") from None
    for key, what in (("batch_size", "number of streams"), ("seq_len", "window length")):
        n = getattr(cfg.data, key)  # (eval reads its windows with them: an error named no file)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise RnnkitError(f"{bad}: its config's data.{key} {n!r} is no {what} (an integer >= 1)")
    if cfg.model.cell not in CELLS:
        raise RnnkitError(
            f"{bad}: its cell {cfg.model.cell!r} is not one of this rnnkit's ({', '.join(CELLS)})"
        )
    chars = list(ckpt["chars"]) if isinstance(ckpt["chars"], str) else ckpt["chars"]  # saved as one string
    if (
        not isinstance(chars, list | tuple)
        or not all(isinstance(c, str) and len(c) == 1 for c in chars)
        or len(set(chars)) != len(chars)
    ):
        raise RnnkitError(f"{bad}: its vocabulary is malformed (not a list of distinct single characters)")
    if len(chars) != cfg.model.vocab_size:
        raise RnnkitError(f"{bad}: its vocabulary ({len(chars)} characters) does not match its model "
                          f"({cfg.model.vocab_size} characters)")  # fmt: skip
    _check_vocab_json(path, chars)
    state = ckpt["model"] if isinstance(ckpt["model"], dict) else {}  # (not a dict: said by load_state_dict)
    malformed = malformed_weights(state)
    if malformed:  # (an int key: load_state_dict's "'int' object has no attribute 'startswith'")
        raise RnnkitError(f"{bad}: {malformed}; {_instead(path)}")
    try:  # its random initial weights are overwritten: the caller's stream (torch.manual_seed, then sampling)
        with torch.random.fork_rng(devices=[]):  # is left as it was
            misfit = weights_misfit(cfg.model, state) if state else None
            if state:
                model = None if misfit else CharLM(cfg.model)
            else:  # no weights to load ({}, or no mapping): load_state_dict says so below, of a model that holds
                # no memory (built for real, a config's hidden_size 10**6 was 'out of memory: an allocation of
                # 14,901.2 GiB failed; choose smaller sizes', and sizes the memory holds were allocated and drawn)
                model, misfit = _model_of_no_memory(cfg.model)
    except (RnnkitError, ValueError, TypeError) as e:  # sizes or a dropout no training run saves
        raise RnnkitError(f"{bad}: its config makes no model ({str(e).splitlines()[0][:100]})") from None
    if misfit:
        raise RnnkitError(f"{bad}: its weights do not fit its config ({misfit})")
    hollow = hollow_weights(state)
    if hollow:  # (meta or sparse: load_state_dict's line, cut, named neither)
        raise RnnkitError(f"{bad}: {hollow}; {_instead(path)}")
    complex_ = [name for name, w in state.items() if isinstance(w, torch.Tensor) and w.is_complex()]
    if complex_:  # load_state_dict kept the real part, with only torch's warning
        raise RnnkitError(
            f"{bad}: its weights {', '.join(complex_[:3])} are complex numbers; a model's are real"
        )
    whole = [n for n, w in state.items() if isinstance(w, torch.Tensor) and not w.is_floating_point()]
    if whole:  # load_state_dict copied integers or bools (w > 0) into the model in silence
        raise RnnkitError(f"{bad}: its weights {', '.join(whole[:3])} are {state[whole[0]].dtype} (whole numbers "
                          "or bools); a model's are floating-point")  # fmt: skip
    try:
        model.load_state_dict(ckpt["model"])
    # missing, unexpected or misshapen weights; ValueError: a value a cell refuses (a leaky α outside (0, 1])
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise RnnkitError(f"{bad}: its weights do not fit its config ({mismatch(e)})") from None
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if broken:  # training never saves such weights: the file was damaged or made elsewhere
        raise RnnkitError(f"{bad}: its weights {', '.join(broken[:3])} hold NaN or infinite values")
    model.run_config = cfg  # the whole run's settings (eval reads its validation windows from them)
    return model.eval(), list(chars)


def _model_of_no_memory(cfg: CharLMConfig):
    """(model, None): CharLM(cfg) on the meta device, for a checkpoint that holds no weights to load, whose
    load_state_dict then says what it lacks; or (None, why) for sizes no tensor holds (weights_misfit's line). Its
    checks are a real model's, in their order, the number of layers bounded by the memory as there (a meta build of
    10**9 layers is as long as a real one's)."""
    meta_bounded.on = True
    try:
        with torch.device("meta"):
            return CharLM(cfg), None
    except RuntimeError as e:  # ('Storage size calculation overflowed', hidden_size 2**31: 4H x H rows)
        return None, f"its sizes make no model: {str(e).splitlines()[0][:80]}"
    finally:
        meta_bounded.on = False


def weights_misfit(cfg: CharLMConfig, state: dict) -> str | None:
    """The first of the model's weights that `state` lacks or holds in another shape, or None; read off the model
    built on the meta device (no memory), before the real one: a checkpoint's config of sizes its weights don't have
    (hidden_size 10**6, damaged or edited) allocated that model first, 11 TB, and the command said 'out of memory;
    choose smaller sizes' of options the user never gave. A num_layers past the count of its weights is said first:
    100,000 layers took 20-30 s to build, even on the meta device."""
    L = cfg.num_layers
    if isinstance(L, int) and L > len(state):
        return f"num_layers {L} needs a layer's weights for each, it holds {len(state)} tensors in all"
    try:
        with torch.device("meta"):
            want = CharLM(cfg).state_dict()
    # sizes no tensor holds (hidden_size 10**9: 'Storage size calculation overflowed'; 10**19, past 2^63 rows:
    # 'Overflow when unpacking long long', a TypeError, which ended in torch's traceback)
    except (RuntimeError, TypeError, TooLarge) as e:  # (TooLarge: a size of 2^63 or more, said by CharLM)
        # (torch's lines cut at 80 characters; rnnkit's own one whole: it was cut mid-word, "...2^63); giv")
        said = str(e) if isinstance(e, TooLarge) else str(e).splitlines()[0][:80]
        return f"its sizes make no model: {said}"
    for name, w in want.items():
        if name not in state:
            return f"it lacks {name}"
        if isinstance(state[name], torch.Tensor) and state[name].shape != w.shape:
            return (f"size mismatch for {name}: copying a param with shape {tuple(state[name].shape)} from checkpoint, "
                    f"the shape in the model of its config is {tuple(w.shape)}")  # fmt: skip
    return None


def _check_vocab_json(path, chars):
    """The checkpoint's vocabulary is the model's (the one it was trained on, in its order); the run folder's
    vocab.json is a copy written for reading. One that differs (edited, or from another run) was ignored in
    silence: a user who edited it took it to matter. It is said in one warning naming the file. Only beside a
    run's own checkpoints (best.pt, latest.pt): a model.pt copied into a folder with a vocab.json of its own (a
    tokenizer's) has nothing to do with that file."""
    import json
    import warnings

    from rnnkit.errors import user_stacklevel

    vocab = path.parent / "vocab.json"
    if path.name not in ("best.pt", "latest.pt"):
        return
    try:
        given = json.loads(vocab.read_text(encoding="utf-8-sig"))  # (an editor's byte-order mark is no edit)
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        given = None
    if given != list(chars):
        warnings.warn(f"{vocab} differs from the vocabulary saved in {path.name}, which the model was trained on and "
                      "which is used (vocab.json is a copy for reading: editing it changes nothing; delete or "
                      "restore it)", stacklevel=user_stacklevel())  # fmt: skip


def score_text(model, chars, text: str, what: str = "TEXT") -> dict:
    """log p(text) = Σ_t log p(c_t | c_<t), in nats. The model predicts each character from the one before
    it, so the first character of `text` is predicted from a newline, fed from a zero state (the start of a
    line, if the model knows a newline); a model without one takes the text's first character as context
    only and scores the rest (`first_is_context` in the result). what: the text's name in an error."""
    if not isinstance(text, str):
        raise RnnkitError(f"score_text scores a str, got {type(text).__name__} {_quoted(text)}")
    V = model.cfg.vocab_size
    if len(chars) != V or len(set(chars)) != len(chars):
        raise RnnkitError(f"chars must be the model's vocabulary, {V} distinct characters (load_run gives both), "
                          f"got {len(chars)} ({len(set(chars))} distinct)")  # fmt: skip
    ids = encode(text, chars, what)
    newline = "\n" in chars
    context, scored = ([chars.index("\n")], ids) if newline else (ids[:1], ids[1:])
    if not scored:
        need = (
            "some text"
            if newline
            else "at least 2 characters (this model knows no newline: the first is context)"
        )
        # (of several texts, which: 'TEXT 2 of 3 ('a')', as encode names it)
        named = f"TEXT {text!r}" if what == "TEXT" else what
        raise RnnkitError(f"{named} has nothing to score; give {need}")
    logps = model.log_probs(scored, context)
    nan = next((i for i, x in enumerate(logps) if math.isnan(x)), None)
    if nan is not None:  # (a log_prob of nan, ranked by `rnnkit score` among the others: their order broke)
        raise RnnkitError(f"{what}: the model's log-probabilities are NaN from its character {nan + 1 + (not newline):,} "
                          "on (its state overflowed to inf, or its weights hold NaN): it has no score; score a shorter "
                          "text, or use a model whose state stays finite")  # fmt: skip
    log_prob = math.fsum(logps) + 0.0  # (+ 0.0: a certain text read -0.0000 nats)
    nats = 0.0 - log_prob
    n = len(scored)
    # the keys of rnnkit.text.LMScore.as_dict("char") (importing rnnkit.text here would load scipy: +1 s a command)
    return {
        "text": text,
        "log_prob": log_prob,
        "nats": nats,
        "chars": n,
        "first_is_context": not newline,
        "nats_per_char": nats / n,
        "bits_per_char": nats / n / math.log(2),
        "perplexity": perplexity(nats / n),
    }


def _moved(state, w):
    """The state in w's dtype and on its device; a tensor already there is itself, as Tensor.to returns it, without
    the call (1.5-2 µs of every training window)."""
    if isinstance(state, tuple):
        return tuple(_moved(s, w) for s in state)
    return state if state.dtype == w.dtype and state.device == w.device else state.to(w)


def _batch_of(state) -> int:
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def _select(state, rows):
    """Keep the beams `rows` of a state of shape (num_layers, K, H)."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]
