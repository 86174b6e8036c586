"""One exception type for bad input: its message is one line that names the problem and the fix.

It subclasses ValueError, so library callers can catch the usual exception; the command line
catches it and prints the line without a traceback.
"""

import math
import numbers
import os
import sys
from decimal import Decimal


def user_stacklevel() -> int:
    """warnings.warn's stacklevel for the caller's own line: the first frame outside rnnkit and torch (a layer's
    forward runs under torch.nn.Module's call). A fixed stacklevel pointed inside rnnkit (engine/__init__.py,
    layers/recurrent.py) for a warning raised some calls deeper than its author counted."""
    inside = [os.path.dirname(os.path.abspath(sys.modules[__package__].__file__)) + os.sep]
    if "torch" in sys.modules:
        inside.append(os.path.dirname(os.path.abspath(sys.modules["torch"].__file__)) + os.sep)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(tuple(inside)):
        frame, level = frame.f_back, level + 1
    return level


def interrupt_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (a Ctrl-C, or the command line's SIGTERM) that `e` was raised from, or None. Python 3.10
    and 3.11 raise an interrupt that comes while a class is made (a field's __set_name__: the hundreds of
    dataclasses that torch._dynamo, matplotlib and others make as they are imported, a command's first seconds) as
    RuntimeError('Error calling __set_name__ ...') from it."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__
    return None


class RnnkitError(ValueError):
    """Bad input from the user: a one-line message naming what is wrong and what to do."""


def finite_real(value) -> bool:
    """A real number, not a bool, that is finite as a float. math.isfinite alone raised OverflowError ("int too
    large to convert to float") for a Python int past float's range (10**400, -10**400) or such a Fraction, where
    each check meant to say the bad number in one line; such a number is not finite here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def said(value, spec: str = "r") -> str:
    """A user's value as an error message shows it: f"{value!r}" (spec "r") or f"{value}" (spec ""). An integer past
    str()'s 4,300 digits (10**5000) failed while its own message was formatted, and the caller got Python's "Exceeds
    the limit (4300 digits) for integer string conversion; use sys.set_int_max_str_digits()", the wrong fix; such a
    number is said by its bits ('an integer of 16,610 bits'), a Fraction of such an integer so too."""
    try:
        return repr(value) if spec == "r" else format(value, spec)
    except ValueError as e:
        if "string conversion" not in str(e):
            raise
    if isinstance(value, numbers.Integral):
        return f"{'a negative' if value < 0 else 'an'} integer of {abs(int(value)).bit_length():,} bits"
    if isinstance(value, numbers.Rational):
        bits = max(abs(int(value.numerator)).bit_length(), int(value.denominator).bit_length())
        return f"{'a negative' if value < 0 else 'a'} {type(value).__name__} of {bits:,}-bit terms"
    return f"a {type(value).__name__} past str()'s 4,300 digits"


def count_error(name: str, value, note: str = "") -> RnnkitError:
    """A bad count (a length, a size, a number of steps), in the one wording of every command: it was said 'must be
    > 0' (sample), 'must be >= 1' (ngram, markov, word2vec) and 'must be a positive integer' (the energy commands)."""
    return RnnkitError(f"{name} must be an integer >= 1{note}, got {said(value)}")


class TooLarge(RnnkitError):
    """A size or count of 2^63 or more (fits_int64's): its own class, so that the training command can say it as
    its flags' line ('--hidden-size ... make no model')."""


def fits_int64(name: str, value):
    """value, a whole number already checked, or TooLarge where it is 2^63 or more, in Word2Vec's wording: a size or
    count that torch or numpy allocates is a 64-bit signed integer there, and past it failed deep inside them with a
    traceback ("Overflow when unpacking long long", "Storage size calculation overflowed", numpy's "Maximum allowed
    dimension exceeded"). A number past str()'s 4,300 digits is said by its bits."""
    if value < 2**63:
        return value
    # (in full, as Word2Vec's and the energy commands' line; past str()'s 4,300 digits by its bits, said's words)
    shown = said(int(value), "").removeprefix("an integer ")
    raise TooLarge(f"{name} {shown} is too large (past a 64-bit integer, 2^63); give a smaller one")


def below(limit: float) -> str:
    """A limit > 0 said to 4 significant digits, rounded down, for an advice 'give a value below it': rounded to the
    nearest (:.4g) 66.67 said the limit 66.666...; 66.668, below what it said, was refused by the same line."""
    said = float(f"{limit:.4g}")
    # one unit of the limit's 4th digit lower (Decimal: its exponent exact); said's was a digit too high where :.4g
    # rounded up to a power of ten, 9.99975 to 10: 'below 9.99', where 9.999 is taken
    if said > limit:
        said -= 10.0 ** (Decimal(limit).adjusted() - 3)
    return f"{said:.4g}"


def check_seed(seed, name="--seed"):
    """Seeds in [0, 2^32); None: no seed given. torch's CPU generator (a Mersenne twister) keeps only the low
    32 bits of the 64 it accepts, so 0 and 2^32 would give the same numbers; numpy refuses negative seeds.
    One rule for every command. Returns the seed."""
    import numbers

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise RnnkitError(f"{name} must be a whole number in [0, 2^32), got {said(seed)}")
    if seed is not None and not 0 <= seed < 2**32:
        raise RnnkitError(
            f"{name} must lie in [0, 2^32) (torch's generator keeps 32 bits; one range for every command), got {said(seed, '')}"
        )
    return seed


def switch(name: str, value) -> bool:
    """True or False (0, 1 and numpy's bools too, np.True_ from an array or a sweep's grid): a string such as
    "False", a config file's, was taken for its truth value, the opposite of what it says."""
    import numbers

    import numpy as np

    if not (isinstance(value, bool | np.bool_) or (isinstance(value, numbers.Integral) and value in (0, 1))):
        raise RnnkitError(f"{name} must be True or False, got {said(value)}")
    return bool(value)
