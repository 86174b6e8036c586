"""Optimisers, gradient clipping and the learning-rate schedule of char-rnn and min-char-rnn.

adagrad (min-char-rnn):  m += g²;  θ -= lr g / (sqrt(m) + 1e-8)                       (torch's Adagrad)
rmsprop (char-rnn):      m = α m + (1-α) g², α = 0.95;  θ -= lr g / (sqrt(m) + 1e-8)   (as char-rnn's optim)
clip by value (char-rnn, min-char-rnn): g = clamp(g, -v, v)
clip by norm (deck 002): if ||g|| > c: g = g c / ||g||
decay (char-rnn): at the end of every epoch k >= decay_after, lr *= decay; so after e epochs
                  lr_e = lr · decay^max(0, e - max(decay_after, 1) + 1)
min-char-rnn puts Adagrad's 1e-8 inside the root, sqrt(m + 1e-8): an element whose gradients are far below
1e-4 moves by about lr · |g| / 1e-4 there and by up to lr here, in the first steps; otherwise the two agree.
"""

import math
import numbers

import torch

from rnnkit.errors import RnnkitError, finite_real, interrupt_behind, said

OPTIMIZERS = ("adam", "rmsprop", "adagrad", "sgd")


def make_optimizer(params, cfg):
    """The optimiser named by cfg.optimizer (a TrainConfig), in torch's fused form where it has one (Adam,
    Adagrad, SGD: one kernel over all parameters instead of a handful of ops per tensor; a 1x128 char LM's
    Adam step took 88 µs fused against 296 µs), else the multi-tensor (foreach) form. Same update rule."""
    params = list(params)
    name, lr, wd = cfg.optimizer, _rate("lr", cfg.lr), _rate("weight_decay", cfg.weight_decay)
    if name not in OPTIMIZERS:  # ('adamw' or 'Adam' was SGD, in silence)
        raise RnnkitError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")
    if name == "adam":
        return fused_or_not(torch.optim.Adam, params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return _made(torch.optim.RMSprop, params, lr=lr, alpha=0.95, eps=1e-8, weight_decay=wd, foreach=True)
    if name == "adagrad":
        return fused_or_not(torch.optim.Adagrad, params, lr=lr, eps=1e-8, weight_decay=wd)
    return fused_or_not(torch.optim.SGD, params, lr=lr, weight_decay=wd)


def _rate(name, v):
    """v, a finite number >= 0, or one error: torch's SGD took lr NaN (every weight NaN at the first step) and
    weight_decay NaN, its optimizers lr=True and inf, and a string failed in "'<=' not supported". A tensor of one
    float, which torch.optim takes as a rate, is checked by its value and given as it is."""
    x = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point() else v
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0 <= x < math.inf:
        raise RnnkitError(f"{name} must be a finite number >= 0, got {said(v)}")
    return v


def fused_or_not(Optimizer, params, **kw):
    """Optimizer(params, fused=True, **kw) where torch runs it (floating-point parameters on the CPU or a GPU),
    else the plain one."""
    params = [_listed(g) for g in params]
    tensors = _tensors(params)
    if tensors and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors):
        try:
            optimizer = _made(Optimizer, params, fused=True, **kw)
        except (RuntimeError, TypeError, ValueError):  # a torch without the fused kernel for this device
            pass
        else:
            optimizer.register_step_pre_hook(_unfused_if_sparse)
            return optimizer
    return _made(Optimizer, params, **kw)


def _made(Optimizer, params, **kw):
    """Optimizer(params, **kw), a Ctrl-C (or the command line's SIGTERM) that came meanwhile raised as the
    KeyboardInterrupt it is. The first optimizer a process makes imports torch._dynamo (1-2 s, hundreds of dataclasses
    made), and Python 3.10 and 3.11 raise an interrupt that comes while a class is made (in a field's __set_name__)
    as RuntimeError('Error calling __set_name__ ...') from it: fused_or_not took that for a torch without the fused
    kernel and made the plain optimizer, the Ctrl-C lost (the run trained on to its end), and RMSprop's ended in a
    traceback, exit 1, where the command says 'interrupted'."""
    try:
        return Optimizer(params, **kw)
    except Exception as e:
        if (interrupt := interrupt_behind(e)) is None:
            raise
        raise interrupt from None


def _unfused_if_sparse(optimizer, args, kwargs):
    """A group with a sparse gradient (nn.Embedding(sparse=True)) takes the plain step from then on, as torch's
    Adagrad and SGD do: their fused kernels refused it ("`fused` does not support sparse grad or complex param")."""
    for group in optimizer.param_groups:
        if group.get("fused") and any(p.grad is not None and p.grad.is_sparse for p in group["params"]):
            group["fused"] = False


def _listed(group):
    """A param group (a dict) with its params as a list, which a generator there would not be after _tensors read
    it; anything else as it is."""
    if not isinstance(group, dict) or "params" not in group:
        return group
    ps = group["params"]
    return {**group, "params": [ps] if isinstance(ps, torch.Tensor) else list(ps)}


def _tensors(params) -> list:
    """The parameters among what torch.optim takes: tensors, (name, tensor) pairs, or param groups of either (a
    no-decay group for the biases; they failed in "'dict' object has no attribute 'is_floating_point'")."""
    found = []
    for item in params:
        if isinstance(item, dict):
            found += _tensors(item.get("params", []))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            found.append(item[1])
        else:
            found.append(item)
    return found


def clip_gradients(params, clip_norm: float, clip_value: float) -> float:
    """Clip in place; returns the gradient norm before clipping (inf or NaN: the step must not be taken; the
    gradients are then left as they are, not scaled by a NaN factor). A limit of 0 is off."""
    for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
        # (NaN or a negative limit was off in silence, True clipped at 1, a string failed in "'>' not supported")
        # (an int past float's range, 10**400, raised math.isnan's OverflowError; inf is no limit, and taken)
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not (finite_real(v) or v == math.inf)
            or v < 0
        ):
            raise RnnkitError(f"{name} must be a number >= 0 (0: off), got {said(v)}")
    # one parameter, as torch's clip_grad_norm_ takes it (its rows were read, none with a gradient: norm 0, nothing
    # clipped)
    if isinstance(params, torch.Tensor):
        params = [params]
    params = [p for p in params if p.grad is not None]
    # the norm read once, as a float: each torch.isfinite(norm) tested was five more ops a step (abs, eq, ne, mul,
    # is_nonzero), and the clamps one op a parameter (10 for a 2-layer LSTM): a min-char-rnn step is about 1 ms
    grads = [p.grad for p in params]
    direct = _one_group(grads)
    with torch.no_grad():
        norm = _total_norm(grads) if direct else torch.nn.utils.get_total_norm(grads)
    value = float(norm)
    if not math.isfinite(value):  # the float32 sum of squares overflows from gradients of about 1e19 on
        norm = torch.nn.utils.get_total_norm([p.grad.double() for p in params])
        value = float(norm)
    if not math.isfinite(value):
        return value
    if clip_norm > 0 and direct:
        with torch.no_grad():  # clip_grads_with_norm_'s ops: coefficient min(1, c / (||g|| + 1e-6)), one mul
            torch._foreach_mul_(grads, torch.clamp(float(clip_norm) / (norm + 1e-6), max=1.0))
    elif clip_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, clip_norm, norm)
    # a limit at or past the largest value of a gradient's dtype clips nothing of it (finite here), and torch's clamp
    # refused to convert it: --clip-value 1e308 of float32 gradients stopped the run at its first step, "value cannot
    # be converted to type float without overflow" (clip_grad_value_'s own error); those gradients are left alone
    if clip_value > 0 and not direct:
        params = [p for p in params if clip_value < torch.finfo(p.grad.dtype).max]
    if clip_value > 0 and direct and clip_value < torch.finfo(grads[0].dtype).max:
        with torch.no_grad():
            torch._foreach_clamp_min_(grads, -float(clip_value))
            torch._foreach_clamp_max_(grads, float(clip_value))
    elif clip_value > 0 and not direct and params:
        torch.nn.utils.clip_grad_value_(params, clip_value)  # (one foreach clamp per device and dtype)
    return value


def _one_group(grads) -> bool:
    """Whether the gradients are plain tensors of one dtype on one CPU or GPU (a model's, as a rule): there torch's
    get_total_norm, clip_grads_with_norm_ and clip_grad_value_ run one foreach op over them all, which
    clip_gradients calls itself, the same ops on the same tensors (their grouping by device and dtype, and a no_grad
    entered by each, took 10-25 µs of a min-char-rnn step)."""
    if not grads or grads[0].device.type not in ("cpu", "cuda"):
        return False
    device, dtype = grads[0].device, grads[0].dtype
    return all(type(g) is torch.Tensor and g.device == device and g.dtype == dtype for g in grads)


def _total_norm(grads):
    """torch.nn.utils.get_total_norm (2-norm) of gradients of _one_group: its own two ops."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


def lr_at_epoch(cfg, epoch: int) -> float:
    """The learning rate after `epoch` completed epochs: char-rnn decays at the end of every epoch from
    lr_decay_after on (its check `epoch >= learning_rate_decay_after` after the epoch's last step). A fractional
    epoch (step / windows per epoch) counts its completed epochs: the rate of that point of the run."""
    # (2.5 decayed by 0.5 ** 1.5 where char-rnn's rate is 0.5 ** 1; -1, NaN and True were taken)
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real) or not 0 <= epoch < math.inf:
        raise RnnkitError(f"epoch must be a number >= 0 (the epochs completed), got {said(epoch)}")
    # a fractional lr_decay_after (char-rnn's check takes 1.5: the first decay at the end of epoch 2) decayed by
    # 0.5 ** 0.5 after epoch 1
    if cfg.lr_decay_after == math.inf:  # never (math.ceil(inf) failed in "OverflowError")
        return cfg.lr
    return cfg.lr * cfg.lr_decay ** max(0, math.floor(epoch) - max(math.ceil(cfg.lr_decay_after), 1) + 1)


def set_lr(optimizer, lr: float):
    _rate("lr", lr)
    for group in optimizer.param_groups:
        group["lr"] = lr
