"""Training an RBM by contrastive divergence: CD-k (Hinton 2002) and persistent CD-k (Tieleman 2008).

Deck 001, "Contrastive divergence": the log-likelihood gradient is a data term minus a model term,
    ∂ℓ/∂W = E_data[P(h|v) vᵀ] - E_model[P(h|v) vᵀ],
and CD-k estimates the model term from k Gibbs steps started at the data; PCD-k continues chains
kept from the previous update instead (scikit-learn's BernoulliRBM is PCD-1, chains = batch size).

One update, from a minibatch v0 (B, V):

    v0 ──> ph0 = P(h|v0) ──(CD: sample)──> h ──> v_1 ──> h_1 ... v_k ──> ph_k = P(h|v_k)
                           (PCD: h = chain)                                 PCD: chain = h_k
    g_W = ph0ᵀ v0 / B - ph_kᵀ v_k / Bc        g_b = mean(ph0 - ph_k)       g_c = mean(v0 - v_k)
    m <- momentum m + lr (g - weight_decay W);   W <- W + m                (b, c without decay)

The noise (uniforms, or normals for Gaussian visible samples) is drawn up front for a chunk of steps,
so the torch loop here and the compiled CPU loop (rbm_cd.c) consume identical random numbers. An update whose noise
is past STREAMED_PAST numbers (a huge k) draws its Gibbs steps' noise NOISE_PER_CHUNK numbers at a time instead, in
the torch loop (streamed_pass): memory stays bounded however large k is.
"""

import contextlib
from dataclasses import dataclass

import torch

from rnnkit.energy import _rbm_kernel
from rnnkit.energy._checks import (
    callback_or_none,
    generator_or_none,
    positive_float,
    positive_int,
    positive_size,
    whole_number,
)
from rnnkit.energy._checks import switch as check_switch
from rnnkit.energy._util import single_thread, uniform
from rnnkit.errors import RnnkitError, below, finite_real, fits_int64, said

NOISE_PER_CHUNK = 1 << 22  # random numbers drawn at once
# one update's noise past this many numbers (256 MB in float32: a huge k, Gibbs steps an update) is drawn
# NOISE_PER_CHUNK numbers at a time in the torch loop, as its steps need it: it was drawn whole, k·Bc·(V+H) numbers
# (--k 10^5 on 10 rows of 64 digits' pixels held 610 MB more, --k 10^7 could not start), where a step needs Bc·(V+H)
STREAMED_PAST = 1 << 26


class TrainingDiverged(RnnkitError):
    """The parameters became NaN or infinite: the learning rate is too high for the data."""

    def __init__(self, epoch: int, lr: float):
        self.epoch, self.lr = epoch, lr
        super().__init__(
            f"RBM training diverged in epoch {epoch + 1}: the weights became NaN or infinite; stopped; "
            f"try a lower learning rate than {lr:g}"
        )


def _finite(rbm) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in (rbm.W, rbm.b, rbm.c))


def _own_parameters(rbm) -> None:
    """W (H, V), b (H,), c (V,) of one dtype and device, each contiguous: a copy where one is not.

    A parameter assigned by hand (rbm.W = W.t()) may be a strided view; the compiled loop reads and writes
    the raw memory (rows of W), and a view stopped it at an assert, or under python -O read the wrong numbers.
    """
    H, V = rbm.num_hidden, rbm.num_visible
    for name, shape in (("W", (H, V)), ("b", (H,)), ("c", (V,))):
        p = getattr(rbm, name)
        if not isinstance(p, torch.Tensor) or tuple(p.shape) != shape:
            got = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise RnnkitError(f"rbm.{name} must have shape {shape} for {V} visible and {H} hidden units, got "
                              f"{got}; assign a tensor of that shape (or make a new RBM)")  # fmt: skip
        if (p.dtype, p.device) != (rbm.W.dtype, rbm.W.device):
            raise RnnkitError(f"rbm.{name} is {p.dtype} on {p.device} but rbm.W is {rbm.W.dtype} on "
                              f"{rbm.W.device}; assign it as .to(rbm.W)")  # fmt: skip
        if not p.is_contiguous():
            setattr(rbm, name, p.contiguous())


def _number(x) -> bool:
    return finite_real(x)


@dataclass
class RBMTrainConfig:
    epochs: int = 10
    batch_size: int = 10
    lr: float = 0.06
    k: int = 1  # Gibbs steps per update
    persistent: bool = True  # PCD-k; False: CD-k
    momentum: float = 0.0
    weight_decay: float = 0.0
    num_chains: int | None = None  # persistent chains; the batch size when None (as scikit-learn)
    shuffle: bool = True  # visit the data in a new order every epoch
    use_kernel: bool = True  # the compiled CPU loop for Bernoulli float32 models, when it builds

    NAMES = {"epochs": "epochs", "batch_size": "batch size", "lr": "learning rate", "k": "k",
             "momentum": "momentum", "weight_decay": "weight decay", "num_chains": "number of chains"}  # fmt: skip

    def check(self, names: dict | None = None) -> "RBMTrainConfig":
        """Each setting in range, or one RnnkitError naming it (names: field -> how to call it, e.g. its flag)."""
        name = {**self.NAMES, **(names or {})}
        # as Python ints: a narrow numpy type's arithmetic (np.int16 batch size) overflowed in fit's chunk sizes
        self.epochs = positive_int(name["epochs"], self.epochs)
        self.batch_size = positive_int(name["batch_size"], self.batch_size)
        # as Python floats: a Fraction lr, momentum or weight decay failed inside torch's update, "add_(): argument
        # 'alpha' must be Number, not Fraction"
        self.lr = positive_float(name["lr"], self.lr)
        if not whole_number(self.k) or self.k < 1:
            raise RnnkitError(
                f"{name['k']} (Gibbs steps per update) must be an integer >= 1, got {said(self.k)}"
            )
        self.k = int(self.k)
        if not _number(self.momentum) or not 0 <= self.momentum < 1:
            raise RnnkitError(f"{name['momentum']} must be in [0, 1), got {said(self.momentum)}")
        if not _number(self.weight_decay) or self.weight_decay < 0:
            raise RnnkitError(f"{name['weight_decay']} must be >= 0, got {said(self.weight_decay)}")
        self.momentum, self.weight_decay = float(self.momentum), float(self.weight_decay)
        # the decay alone, m <- momentum m - lr weight_decay W; W <- W + m, has the roots z of
        # z² - (1 + momentum - lr wd) z + momentum: inside the unit circle iff lr wd < 2 (1 + momentum). Past that W
        # swings from sign to sign growing, whatever the data: NaN in a long run (whose advice, a 10x lower lr, could
        # still be past it), log-likelihoods of -5e16 and exit 0 in a short one
        limit = 2 * (1 + self.momentum)
        if self.lr * self.weight_decay >= limit:
            raise RnnkitError(
                f"{name['weight_decay']} {self.weight_decay:g} with {name['lr']} {self.lr:g} grows the weights "
                f"without bound: the decay step overshoots where lr x weight decay >= 2 (1 + momentum) "
                f"({self.lr * self.weight_decay:g} here, {limit:g} the limit); give a {name['weight_decay']} below "
                f"{below(limit / self.lr)}, or a lower {name['lr']}"
            )
        for switch in ("persistent", "shuffle", "use_kernel"):  # (persistent="False", a config file's: PCD-k)
            check_switch(switch, getattr(self, switch))
        if self.num_chains is not None:
            self.num_chains = positive_size(name["num_chains"], self.num_chains)
            if not self.persistent:  # CD-k runs one chain per data row: the setting did nothing
                raise RnnkitError(f"{name['num_chains']} is for persistent CD (PCD-k); CD-k starts one chain "
                                  "at each row of the minibatch; leave it out or use persistent=True")  # fmt: skip
        else:  # the batch size is the number of chains (fit's state), which torch allocates; with num_chains given,
            # a batch size past the data's rows is one batch of them all, and any is taken
            fits_int64(name["batch_size"], self.batch_size)
        return self


@dataclass
class TrainState:
    velocity: tuple  # momentum buffers for W, b, c
    chain: torch.Tensor  # (Bc, H) persistent hidden states

    @classmethod
    def start(cls, rbm, num_chains: int) -> "TrainState":
        zeros = tuple(torch.zeros_like(p) for p in (rbm.W, rbm.b, rbm.c))
        return cls(zeros, rbm.W.new_zeros(num_chains, rbm.num_hidden))  # scikit-learn starts at h = 0


def draw_noise(rbm, steps: int, B: int, Bc: int, k: int, persistent: bool, generator=None):
    """(u0 (steps, B*H) or None for PCD, u (steps, k, Bc*(V+H))): per Gibbs step Bc*V visible
    numbers, then Bc*H hidden uniforms."""
    V, H = rbm.num_visible, rbm.num_hidden
    kw = dict(generator=generator, device=rbm.W.device, dtype=rbm.W.dtype)
    # (a uniform's 0 as half its step: _util.uniform)
    u0 = None if persistent else uniform((steps, B * H), **kw)
    u = uniform((steps, k, Bc * (V + H)), **kw)
    if rbm.visible == "gaussian":
        u[..., : Bc * V] = torch.randn(steps, k, Bc * V, **kw)
    return u0, u


def cd_gradient_from_noise(rbm, v0, chain, u0, u, k):
    """One CD-k (u0 given) or PCD-k (u0 None, chain given) gradient estimate: ((dW, db, dc), new chain)."""
    V, H = rbm.num_visible, rbm.num_hidden
    ph0 = rbm.hidden_probs(v0)
    h = chain if u0 is None else (u0.view(len(v0), H) < ph0).to(ph0.dtype)
    for _, u_t in zip(range(k), u):  # (u: (k, Bc*(V+H)), or its rows as they are drawn: _streamed_noise)
        n = len(h)
        v = rbm.visible_from_noise(h, u_t[: n * V].view(n, V))
        ph = rbm.hidden_probs(v)
        h = (u_t[n * V :].view(n, H) < ph).to(ph.dtype)
    dW = ph0.T @ v0 / len(v0) - ph.T @ v / len(v)
    return (dW, ph0.mean(0) - ph.mean(0), v0.mean(0) - v.mean(0)), h


@torch.no_grad()
def cd_gradient(rbm, v0, k=1, chain=None, generator=None):
    """A fresh CD-k gradient estimate (or PCD-k from `chain`) for data v0 (B, V): ((dW, db, dc), chain)."""
    if not whole_number(k) or k < 1:  # k = 0 left no negative phase to read
        raise RnnkitError(f"k (Gibbs steps) must be an integer >= 1, got {said(k)}")
    v0, generator = rbm.check(v0), generator_or_none(generator)
    chain = None if chain is None else rbm.check_hidden(chain, "persistent chain (hidden states)")
    B, Bc = len(v0), len(v0) if chain is None else len(chain)
    if k * Bc * (rbm.num_visible + rbm.num_hidden) > STREAMED_PAST:  # (its Gibbs noise as the steps need it)
        kw = dict(generator=generator, device=rbm.W.device, dtype=rbm.W.dtype)
        u0 = None if chain is not None else uniform((B * rbm.num_hidden,), **kw)
        return cd_gradient_from_noise(rbm, v0, chain, u0, _streamed_noise(rbm, Bc, k, generator), k)
    u0, u = draw_noise(rbm, 1, B, Bc, k, chain is not None, generator)
    return cd_gradient_from_noise(rbm, v0, chain, None if u0 is None else u0[0], u[0], k)


def apply_update(rbm, grads, state: TrainState, cfg: RBMTrainConfig) -> None:
    for p, g, m, decay in zip((rbm.W, rbm.b, rbm.c), grads, state.velocity, (cfg.weight_decay, 0.0, 0.0)):
        m.mul_(cfg.momentum).add_(g - decay * p, alpha=cfg.lr)
        p.add_(m)


def torch_pass(rbm, xs, u0, u, state: TrainState, cfg: RBMTrainConfig) -> None:
    """S updates from minibatches xs (S, B, V) with their noise; the specification of rbm_cd.c."""
    for s in range(len(xs)):
        grads, h = cd_gradient_from_noise(rbm, xs[s], state.chain, None if u0 is None else u0[s], u[s], cfg.k)
        apply_update(rbm, grads, state, cfg)
        if cfg.persistent:
            state.chain = h


def _streamed_noise(rbm, Bc: int, k: int, generator=None):
    """One update's Gibbs noise, u (k, Bc*(V+H)) as draw_noise's, row by row: NOISE_PER_CHUNK numbers drawn at once."""
    piece = max(1, NOISE_PER_CHUNK // (Bc * (rbm.num_visible + rbm.num_hidden)))
    for a in range(0, k, piece):
        yield from draw_noise(rbm, 1, 0, Bc, min(piece, k - a), True, generator)[1][0]


def streamed_pass(rbm, xs, state: TrainState, cfg: RBMTrainConfig, generator=None) -> None:
    """torch_pass for updates whose noise is too large to draw whole (past STREAMED_PAST numbers): each update's u0,
    then its Gibbs steps' noise as they need it."""
    B, H = xs.shape[1], rbm.num_hidden
    Bc = len(state.chain) if cfg.persistent else B
    kw = dict(generator=generator, device=rbm.W.device, dtype=rbm.W.dtype)
    for s in range(len(xs)):
        u0 = None if cfg.persistent else uniform((B * H,), **kw)
        noise = _streamed_noise(rbm, Bc, cfg.k, generator)
        grads, h = cd_gradient_from_noise(rbm, xs[s], state.chain, u0, noise, cfg.k)
        apply_update(rbm, grads, state, cfg)
        if cfg.persistent:
            state.chain = h


def choose_pass(rbm, cfg: RBMTrainConfig):
    """The compiled loop where it applies and builds, else the torch loop."""
    lib = _rbm_kernel.load() if cfg.use_kernel and _rbm_kernel.usable(rbm) else None
    if lib is None:
        return torch_pass
    return lambda *args: _rbm_kernel.cd_pass(lib, *args)


def _minibatches(x: torch.Tensor, B: int, steps_per_chunk: int):
    """Full minibatches in chunks (S, B, V), then the remainder as one minibatch (1, r, V)."""
    full = len(x) // B
    for a in range(0, full, steps_per_chunk):
        yield x[a * B : min(full, a + steps_per_chunk) * B].view(-1, B, x.shape[1])
    if len(x) % B:
        yield x[full * B :][None]


@torch.no_grad()
def fit(rbm, data, cfg: RBMTrainConfig, generator=None, callback=None):
    """Train `rbm` in place on data (n, V); `callback(epoch, rbm)` after each epoch.

    Raises TrainingDiverged (an RnnkitError) as soon as a parameter is NaN or infinite.
    """
    cfg.check()
    callback_or_none(callback, "callback(epoch, rbm)")
    generator_or_none(generator)
    if cfg.lr > torch.finfo(rbm.W.dtype).max:  # inf in the kernel; torch's add_(alpha=lr) raised deep inside
        raise RnnkitError(f"learning rate {cfg.lr:g} is beyond the range of {rbm.W.dtype} (the model's dtype, at "
                          f"most {torch.finfo(rbm.W.dtype).max:g}); give a lower one")  # fmt: skip
    num_chains = cfg.num_chains or cfg.batch_size
    tiny = rbm.W.device.type == "cpu" and cfg.batch_size * rbm.num_visible * rbm.num_hidden < 1 << 20
    with single_thread() if tiny else contextlib.nullcontext():
        _own_parameters(rbm)
        if not _finite(rbm):  # else reported as divergence in epoch 1, blaming the learning rate
            raise RnnkitError("the RBM's parameters (W, b, c) hold NaN or infinite values before training; "
                              "load finite ones or make a new RBM")  # fmt: skip
        x = rbm.check(data)
        state = TrainState.start(rbm, num_chains)
        run = choose_pass(rbm, cfg)
        noise_per_step = cfg.k * max(num_chains, cfg.batch_size) * (rbm.num_visible + 2 * rbm.num_hidden)
        chunk = NOISE_PER_CHUNK // noise_per_step + 1
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(x), generator=generator, device=x.device) if cfg.shuffle else None
            for xs in _minibatches(x if order is None else x[order], cfg.batch_size, chunk):
                S, B = xs.shape[:2]
                if noise_per_step > STREAMED_PAST:  # (chunk is 1 here)
                    streamed_pass(rbm, xs, state, cfg, generator)
                else:
                    noise = draw_noise(
                        rbm, S, B, num_chains if cfg.persistent else B, cfg.k, cfg.persistent, generator
                    )
                    run(rbm, xs, *noise, state, cfg)
                    del noise  # (not held while the next chunk's is drawn)
                if not _finite(rbm):
                    raise TrainingDiverged(epoch, cfg.lr)
            if callback:
                callback(epoch, rbm)
    return rbm
