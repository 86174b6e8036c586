"""Run configuration: one dataclass per component, nested in a RunConfig, saved beside every run.

Overrides are typed; an unknown key is an error. Presets (rnnkit.presets) are small dicts of overrides.
"""

import dataclasses
import numbers
import os
from dataclasses import dataclass, field

from rnnkit.errors import RnnkitError, below, check_seed, count_error, finite_real, said
from rnnkit.models.config import CharLMConfig

MAX_THREADS = 1024  # torch itself crashes on absurd counts (100,000)


@dataclass
class DataConfig:
    corpus: str | None = None  # a text file, 'shakespeare', or None for the standard library's source
    data_dir: str | None = (
        None  # folder holding a local tinyshakespeare.txt (else RNNKIT_DATA, cache, download)
    )
    val_frac: float = 0.05  # last fraction of the corpus held out for validation
    seq_len: int = 50  # T: characters per window (the truncation of BPTT)
    batch_size: int = 50  # B: parallel streams


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | rmsprop (char-rnn) | adagrad (min-char-rnn) | sgd
    lr: float = 2e-3
    lr_decay: float = 1.0  # multiply the rate by this at the end of every epoch from lr_decay_after on
    lr_decay_after: int = 10
    clip_norm: float = 0.0  # rescale the gradient if its norm exceeds this (0 = off)
    # clamp every gradient element of the window's mean loss to [-v, v] (0 = off); char-rnn's 5 clamps the
    # gradient of its loss summed over the window's steps: 5 / seq_len here (the char-rnn preset's 0.1)
    clip_value: float = 5.0
    weight_decay: float = 0.0  # L2: wd·θ added to the clipped gradient by the optimizer (not AdamW's decay)
    max_steps: int = 0  # 0 = no limit
    max_epochs: float = 50.0
    time_budget: float = 0.0  # minutes of training; 0 = no limit
    seed: int = 1337
    eval_every: int = 200  # steps between validations and checkpoints
    sample_every: int = 500  # steps between printed samples (0 = never)
    sample_length: int = 200
    sample_temperature: float = 0.8
    threads: int = 0  # torch threads; 0 = torch's default


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: CharLMConfig = field(default_factory=CharLMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        cfg = cls()
        cfg.update(d)
        return cfg

    def update(self, d: dict):
        """Apply nested overrides {'model': {'hidden_size': 256}, ...}; unknown keys are errors."""
        for section, values in d.items():
            if section not in ("data", "model", "train"):
                raise RnnkitError(f"unknown config section '{section}'; use data, model or train")
            part = getattr(self, section)
            names = {f.name for f in dataclasses.fields(part)}
            if not isinstance(values, dict):
                raise RnnkitError(f"config section '{section}' must be a mapping of options, got {values!r}")
            for key, value in values.items():
                if key not in names:
                    raise RnnkitError(f"unknown option {section}.{key}; known: {', '.join(sorted(names))}")
                setattr(part, key, value)


KINDS = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
# the float options that 0 turns off
ZERO_IS_NO_LIMIT = ("max_epochs", "time_budget", "clip_norm", "clip_value")


def _check_types(cfg: RunConfig):
    """Every option of the kind its field declares (a config from Python or a config.json, where nothing
    parsed it as the command line's flags are): 12.5 hidden units or a seed of 1.5 were taken as they came."""
    for section in ("data", "model", "train"):
        part = getattr(cfg, section)
        for f in dataclasses.fields(part):
            value, kinds = getattr(part, f.name), getattr(f.type, "__args__", (f.type,))
            ok = (value is None and type(None) in kinds) or any(
                isinstance(value, k)
                and not (isinstance(value, bool) and k is not bool)
                or (k is float and isinstance(value, int) and not isinstance(value, bool))
                for k in kinds
                if k is not type(None)
            )
            if not ok and (number := _as_number(value, kinds)) is not None:
                # a Real > 0 below float's least (Fraction(1, 10**400)) reads as 0, which is no limit to these: a run
                # of max_epochs 1/10^400, one step, had none (elsewhere 0 is as near as a float gets, as before)
                if number == 0 and value != 0 and f.name in ZERO_IS_NO_LIMIT:
                    raise RnnkitError(f"option {section}.{f.name} {said(value)} is too small for a float: it reads as 0, "
                                      "which is no limit; give 1e-300 or more, or 0 for none")  # fmt: skip
                setattr(part, f.name, number)
            elif not ok:
                want = " or ".join(KINDS.get(k, "none") for k in kinds)
                raise RnnkitError(f"option {section}.{f.name} must be {want}, got {said(value)}")


def _as_number(value, kinds):
    """A numpy (or other numbers.Real) scalar as the Python int or float its field declares, else None:
    np.int64(64) from np.arange was refused as 'must be a whole number', and config.json can't hold it."""
    if isinstance(value, bool):  # (an int to Python, not a number here)
        return None
    if int in kinds and isinstance(value, numbers.Integral):
        return int(value)
    if float in kinds and isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # (a Fraction past float's range, kept as given: validate says it in one line)
            return value
    return None


def _dtype_name() -> str:
    import torch

    return str(torch.get_default_dtype()).removeprefix("torch.")


def _largest() -> float:
    """The largest value of the dtype the model is built in (torch's default: float32)."""
    import torch

    return torch.finfo(torch.get_default_dtype()).max


def validate(cfg: RunConfig):
    """Reject impossible settings up front, each with one line."""
    from rnnkit import CELLS

    _check_types(cfg)
    m, d, t = cfg.model, cfg.data, cfg.train
    for name, value in [
        ("--lr", t.lr), ("--lr-decay", t.lr_decay), ("--clip-norm", t.clip_norm), ("--clip-value", t.clip_value),
        ("--weight-decay", t.weight_decay), ("--max-epochs", t.max_epochs), ("--time-budget", t.time_budget),
        ("--dropout", m.dropout), ("--forget-bias", m.forget_bias), ("--val-frac", d.val_frac),
        ("sample temperature", t.sample_temperature),
    ]:  # fmt: skip
        if not finite_real(value):  # (types checked above: bools refused there)
            raise RnnkitError(f"{name} must be a finite number, got {said(value, '')}")
    if m.backend not in (None, "autograd", "python", "native"):
        raise RnnkitError(f"unknown --backend '{m.backend}'; choose autograd, python or native")
    check_seed(t.seed)
    if t.threads > MAX_THREADS:
        raise RnnkitError(
            f"--threads must be at most {MAX_THREADS}, got {said(t.threads, '')} (this machine has {os.cpu_count()} CPUs)"
        )
    if m.cell not in CELLS:
        raise RnnkitError(f"unknown --cell '{m.cell}'; choose one of {', '.join(sorted(CELLS))}")
    for name, value in [
        ("--hidden-size", m.hidden_size), ("--num-layers", m.num_layers),
        ("--seq-len", d.seq_len), ("--batch-size", d.batch_size),
    ]:  # fmt: skip
        if value < 1:
            raise count_error(name, value)
    for name, value in [
        ("--embedding-size", m.embedding_size), ("--max-steps", t.max_steps), ("--max-epochs", t.max_epochs),
        ("--time-budget", t.time_budget), ("--clip-norm", t.clip_norm), ("--clip-value", t.clip_value),
        ("--sample-every", t.sample_every), ("--threads", t.threads), ("--weight-decay", t.weight_decay),
        ("sample length", t.sample_length), ("--lr-decay-after", t.lr_decay_after),
    ]:  # fmt: skip
        if value < 0:
            raise RnnkitError(f"{name} must be >= 0, got {said(value, '')}")
    if t.lr <= 0:
        raise RnnkitError(f"--lr must be > 0, got {said(t.lr, '')}")
    if not 0 < t.lr_decay <= 1:
        raise RnnkitError(f"--lr-decay must be in (0, 1], got {said(t.lr_decay, '')}")
    if not 0 <= m.dropout < 1:
        raise RnnkitError(f"--dropout must be in [0, 1), got {said(m.dropout, '')}")
    # (1e308, past float32's largest value, was said as the sizes' error: "--hidden-size 8 and --embedding-size 0
    # make no model: a weight would be larger than any tensor")
    if m.cell == "lstm" and abs(m.forget_bias) > _largest():
        raise RnnkitError(f"--forget-bias must lie in [-{_largest():.6g}, {_largest():.6g}], the range of the model's "
                          f"{_dtype_name()} weights, got {m.forget_bias:g}")  # fmt: skip
    if t.eval_every <= 0:
        raise count_error("--eval-every", t.eval_every)
    if t.optimizer not in ("adam", "rmsprop", "adagrad", "sgd"):
        raise RnnkitError(f"unknown --optimizer '{t.optimizer}'; choose adam, rmsprop, adagrad or sgd")
    # sgd's step θ <- θ - lr (g + wd θ) = (1 - lr wd) θ - lr g: from lr wd = 2 on, the decay alone grows θ from sign
    # to sign whatever the data (adam, rmsprop and adagrad scale the whole step), and the blow-up's advice, set
    # --clip-norm, could not help: the decay is added to the clipped gradient. (A decaying lr only lowers lr wd.)
    if t.optimizer == "sgd" and t.lr * t.weight_decay >= 2:
        factor = 1 - t.lr * t.weight_decay
        raise RnnkitError(f"--weight-decay {t.weight_decay:g} with --optimizer sgd at --lr {t.lr:g} grows the weights "
                          f"without bound: each step multiplies them by 1 - lr x weight decay = {factor:g}, -1 or "
                          f"below, whatever the data; give a --weight-decay below {below(2 / t.lr)}, or a lower --lr")  # fmt: skip
    if t.sample_temperature <= 0:
        raise RnnkitError("sample temperature must be > 0")
