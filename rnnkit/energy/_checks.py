"""Input checks shared by the energy models: each failure is one RnnkitError line naming the fix."""

import numbers
from collections.abc import Sequence

import torch

from rnnkit.errors import RnnkitError, count_error, finite_real, fits_int64, said, switch  # noqa: F401 (switch: the energy models' import)


def whole_number(value) -> bool:
    """An integer, Python's or numpy's (np.int64 from an array's shape or a parameter grid); not a bool."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def positive_int(name: str, value) -> int:
    if not whole_number(value) or value <= 0:
        raise count_error(name, value)
    return int(value)


def positive_size(name: str, value) -> int:
    """positive_int for a size torch allocates (units, chains, rows), below 2^63: 2**63 hidden units or AIS chains
    failed inside torch with "Overflow when unpacking long long". (A count of steps or sweeps is only looped over:
    any is taken, as Hopfield's recall(max_steps=2**63), which stops when the state is stable.)"""
    return fits_int64(name, positive_int(name, value))


def callback_or_none(value, called: str):
    """A callback is None or callable: a mistake ('x', a result called too early: cb()) failed only after the first
    epoch's work, with Python's "'str' object is not callable"."""
    if value is not None and not callable(value):
        raise RnnkitError(f"callback must be a function called as {called} after each epoch, or None; got "
                          f"{type(value).__name__} {value!r:.40}")  # fmt: skip
    return value


def generator_or_none(generator):
    """A torch.Generator or None: a seed (3) or numpy's Generator failed at the first draw inside torch, with
    "rand() received an invalid combination of arguments" and its table of overloads (Ising's at its first sweep)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise RnnkitError(f"generator must be a torch.Generator (or None), got {type(generator).__name__} "
                          f"{generator!r:.40}; for a seed give generator=torch.Generator().manual_seed(seed)")  # fmt: skip
    return generator


def positive_float(name: str, value) -> float:
    if not finite_real(value) or value <= 0:
        raise RnnkitError(f"{name} must be a positive number, got {said(value)}")
    # (a Real > 0 below float's least, Fraction(1, 10**400), was 0.0: a Boltzmann machine trained at learning rate 0)
    if float(value) == 0:
        raise RnnkitError(f"{name} {said(value)} is too small: it is 0 as a float; give 1e-300 or more")
    return float(value)


def finite_float(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_complex:
        value = value.item()  # (a 0-d tensor, as torch.nn's init functions take a number)
    if not finite_real(value):
        raise RnnkitError(f"{name} must be a finite number, got {said(value)}")
    return float(value)


def drawn_weights(name: str, W: torch.Tensor, init_scale: float) -> torch.Tensor:
    """W drawn at init_scale, or one RnnkitError where the scale overflowed the dtype: a finite Python float
    (1e39) passes finite_float and drew weights of ±inf in float32, in silence."""
    if not torch.isfinite(W).all():
        raise RnnkitError(f"{name} {init_scale:g} is beyond the range of {W.dtype}: weights drawn at that scale "
                          f"overflow (largest {torch.finfo(W.dtype).max:.3g}); give a smaller one")  # fmt: skip
    return W


def fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise RnnkitError(f"{name} must be between 0 and 1, got {said(value)}")
    return float(value)


def choice(name: str, value, options) -> str:
    if value not in options:
        raise RnnkitError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


def _length(row) -> int | None:
    """The number of units in one row: a list, tuple, 1-D tensor or array; None for a number."""
    if isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
        return len(row)
    shape = getattr(row, "shape", None)
    return shape[0] if shape else None  # a 0-d tensor or array is one number


def float_dtype(dtype) -> torch.dtype:
    """A floating-point torch.dtype; None: torch's default (float32 unless set otherwise, as torch.nn's modules)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise RnnkitError(f"dtype must be a floating-point torch.dtype such as torch.float32 or torch.float64, "
                          f"got {dtype!r}")  # fmt: skip
    return dtype


def sampler_dtype(what: str, dtype) -> torch.dtype:
    """float_dtype for a model that samples: float32 or float64. Its uniforms u ~ U(0, 1) come in the model's dtype,
    and in bfloat16 in steps of 2^-8, so a unit of p = σ(-7) = 0.0009 switched on 3x too often (u < p), a flip of
    probability e^-8 10x; float16 skews every p under about 0.005 so."""
    dtype = float_dtype(dtype)
    if torch.finfo(dtype).eps > torch.finfo(torch.float32).eps:
        raise RnnkitError(f"{what} samples in float32 or float64, got {dtype}: its uniforms (steps of "
                          f"{torch.finfo(dtype).eps:g}) switch unlikely units on too often; use dtype=torch.float32")  # fmt: skip
    return dtype


def as_matrix(data, name: str) -> torch.Tensor:
    """A (rows, units) float tensor from a tensor, array or list of equal-length rows (lists, tuples, 1-D
    tensors or arrays: a list of patterns is stacked)."""
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        lengths = sorted({n for n in map(_length, data) if n is not None})
        if len(lengths) > 1:
            raise RnnkitError(
                f"{name} have mixed lengths {lengths}; every one needs the same number of units"
            )
    try:
        if isinstance(data, Sequence) and any(getattr(row, "ndim", 0) for row in data):
            # torch.as_tensor reads a list of tensors only when each is one number
            x = torch.stack([torch.as_tensor(row) for row in data])
        else:
            x = torch.as_tensor(data)
    except (ValueError, TypeError, RuntimeError) as e:
        raise RnnkitError(f"{name} could not be read as a matrix of numbers ({e})") from None
    if (
        x.is_meta
    ):  # (the checks below read values: "Tensor.item() cannot be called on meta tensors", deep inside)
        raise RnnkitError(f"{name} is a meta tensor, which holds no values; give them on the CPU or a GPU")
    shape = tuple(x.shape)  # as given: [] is (0,), not the (1, 0) of one empty row
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise RnnkitError(f"{name} must be a non-empty (rows, units) matrix, got shape {shape}")
    return x if x.is_floating_point() else x.float()


def _first_bad(x: torch.Tensor, ok: torch.Tensor) -> float:
    return x[~ok].flatten()[0].item()


def as_spins(data, name: str = "patterns", allow_zero: bool = False) -> torch.Tensor:
    """±1 patterns (0 also allowed for partial cues: an unknown unit)."""
    x = as_matrix(data, name)
    ok = (x == 1) | (x == -1) | ((x == 0) if allow_zero else False)
    if not ok.all():
        allowed = "-1, 0 (unknown) or +1" if allow_zero else "-1 or +1"
        raise RnnkitError(
            f"{name} must be binary ({allowed}); found {_first_bad(x, ok):g} (map 0/1 data with 2*x - 1)"
        )
    return x


def as_bits(data, name: str = "data") -> torch.Tensor:
    """0/1 data for binary units."""
    x = as_matrix(data, name)
    ok = (x == 0) | (x == 1)
    if not ok.all():
        raise RnnkitError(f"{name} must be binary (0 or 1); found {_first_bad(x, ok):g}")
    return x


def units_match(name: str, x: torch.Tensor, units: int) -> None:
    if x.shape[-1] != units:
        raise RnnkitError(f"{name} have {x.shape[-1]} units but the model has {units}")
