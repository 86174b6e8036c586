"""Hopfield network (Hopfield 1982); deck 001, "Associative memories".

    E = -1/2 Σ_ij w_ij s_i s_j + Σ_i θ_i s_i                      s ∈ {-1, +1}^N
    s_i <- +1 if Σ_j w_ij s_j >= θ_i, else -1                      (update rule)
    w_ij = (1/n) Σ_μ ξ_i^μ ξ_j^μ,  w_ii = 0                         (Hebbian; n patterns, the deck's scale)
    w_ij += (1/N) (ξ_i ξ_j - ξ_i h_ji - h_ij ξ_j),  h_ij = Σ_{k≠i,j} w_ik ξ_k    (Storkey 1997, per pattern)

Asynchronous mode updates one unit at a time in a random order; flipping s_i by Δ changes the energy by
ΔE = -Δ (h_i - θ_i) <= 0, so E never increases and the state ends at a fixed point. Synchronous mode updates
all units at once; E can then rise, and with symmetric weights the state ends in a fixed point or a 2-cycle
(Goles-Chacc, Fogelman-Soulié, Pellegrin 1985), which is detected and reported.

Shapes: the functions run M independent networks at once, each on B states.
    weights (M, N, N)   thresholds (M, N)   states (M, B, N)   energies (M, B, U), one column per update
`Hopfield` is the single-network front end (M = 1). A cue may hold 0 for an unknown unit (a partial cue).
"""

from dataclasses import dataclass

import torch
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit.energy._checks import (
    as_spins,
    choice,
    float_dtype,
    fraction,
    generator_or_none,
    positive_int,
    positive_size,
    switch,
    units_match,
)
from rnnkit.energy._util import single_thread
from rnnkit.errors import RnnkitError

FIXED_POINT, TWO_CYCLE, UNFINISHED = 0, 1, 2
STATUS_NAMES = ("fixed point", "2-cycle", "unfinished")
STATUS_PLURALS = ("fixed points", "2-cycles", "unfinished")


def hebbian(patterns: torch.Tensor) -> torch.Tensor:
    """(M, P, N) ±1 patterns -> (M, N, N) weights, w = ξᵀξ / P with a zero diagonal.

    In place: the quotient and W - diag_embed(diag W) made three more (M, N, N) tensors, 1.6 GB at their peak for
    the 400 MB of N = 10,000 float32 weights (the same values: x - 0 is x, d - d is 0)."""
    W = patterns.transpose(1, 2) @ patterns
    W /= patterns.shape[1]
    W.diagonal(dim1=1, dim2=2).zero_()
    return W


def storkey(patterns: torch.Tensor) -> torch.Tensor:
    """(M, P, N) -> (M, N, N): Storkey's incremental rule, one pattern at a time.

    With w_ii = 0 the excluded terms fold in: ξ_i h_ji + h_ij ξ_j = ξ_i h_j + h_i ξ_j - 2 w_ij.
    """
    M, P, N = patterns.shape
    W = patterns.new_zeros(M, N, N)
    for mu in range(P):
        xi = patterns[:, mu, :, None]  # (M, N, 1)
        h = W @ xi  # (M, N, 1) local fields
        # (ξ hᵀ + h ξᵀ) as one sum, its own transpose: subtracted one after the other they left W asymmetric
        # by rounding (6e-8 in float32), where the energy's descent needs w_ij = w_ji
        W = W + (xi @ xi.mT - (xi @ h.mT + h @ xi.mT) + 2 * W) / N
        W = W - torch.diag_embed(torch.diagonal(W, dim1=1, dim2=2))
    return W


RULES = {"hebbian": hebbian, "storkey": storkey}


def energy(W: torch.Tensor, theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E = -1/2 sᵀ W s + θᵀ s for states (M, B, N) -> (M, B)."""
    return -0.5 * ((s @ W) * s).sum(-1) + (s * theta[:, None]).sum(-1)


ROWS_PER_BLOCK = 1024  # of W, in _tie_safe


def _tie_safe(W: torch.Tensor, theta: torch.Tensor):
    """float64 weights and the thresholds less a rounding tolerance per unit, (M, N, N) and (M, N).

    Ties are common (Hebbian fields are multiples of 1/P) and the rule sends them to +1. In float32 a
    tied field drifts to ±1e-7 as flips accumulate, and the unit then flips back and forth instead of
    settling; comparing with θ - tol keeps every tie a tie. Float32 weights are rounded already (1/P is
    not a binary fraction unless P is a power of 2): a tied field reads up to eps/2 Σ_j |w_ij| off, so
    the tolerance is at least float32's eps times that sum.
    """
    eps = max(1e-9, torch.finfo(W.dtype).eps)
    W, theta = W.double(), theta.double()
    # one per unit: the largest row's (θ_0 = 1e10 made it 10 for every unit, a field of -2 read as a tie)
    # Σ_j |w_ij| a block of rows at a time: W.abs() whole was a second float64 (M, N, N), 800 MB for N = 10,000 and the
    # peak of a recall (each row's sum is the same, bit for bit)
    row_sums = torch.cat([rows.abs().sum(-1) for rows in W.split(ROWS_PER_BLOCK, dim=-2)], -1)
    tol = eps * (1 + row_sums + theta.abs())  # (M, N)
    return W, theta - tol


def _updated(h: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """The update rule: +1 where h >= θ (ties included), else -1."""
    return torch.where(h >= threshold, 1.0, -1.0).to(h.dtype)


def run_async(W, theta, s, max_sweeps=100, generator=None, record=True, progress=False):
    """Asynchronous dynamics until a whole sweep changes nothing.

    Each sweep visits the units in a fresh random order, one unit at a time; all B states (of all M
    networks) visit the same unit at the same moment, so a step reads one column of the local fields
    h = s W. The fields follow every flip (W is symmetric, so flipping unit i of a state by Δ adds
    Δ W[i] to that state's fields): a step costs O(N) per flip and O(B) otherwise.

    Returns (states (M, B, N), energies (M, B, U) or None, status (M, B), sweeps run); status is
    FIXED_POINT for every state the rule leaves as it is when the run ends (reached in the last allowed
    sweep too), UNFINISHED for the others. `progress`: a bar on stderr of the units updated, their rate, and how many
    states the last sweep moved (`rnnkit hopfield recall`; 10,000 units took 80 s with none).
    """
    M, B, N = s.shape
    dtype, (W, threshold) = s.dtype, _tie_safe(W, theta)
    s = s.to(torch.float64, copy=True)  # updated in place: .double() of float64 cues is the caller's
    fields = s @ W  # (M, B, N)
    E = energy(W, theta.double(), s)
    trace = [E.clone()] if record else None
    changed = torch.ones(M, B, dtype=torch.bool, device=s.device)
    sweeps = 0
    bar = tqdm(desc="recall", unit=" units", unit_scale=True, **bar_options(progress))
    with single_thread(), bar:
        while changed.any() and sweeps < max_sweeps:
            changed.zero_()
            for i in torch.randperm(N, generator=generator, device=s.device).tolist():
                h = fields[:, :, i]  # (M, B)
                delta = _updated(h, threshold[:, i, None]) - s[:, :, i]
                m, b = delta.nonzero(as_tuple=True)
                if len(m):
                    if record:  # ΔE = -Δ (h_i - θ_i)
                        E -= delta * (h - theta[:, i, None])
                    fields.index_put_((m, b), delta[m, b, None] * W[m, i], accumulate=True)
                    s[:, :, i] += delta
                    changed[m, b] = True
                if record:
                    trace.append(E.clone())
                bar.update()
            sweeps += 1
            if not bar.disable:
                bar.set_postfix_str(f"sweep {sweeps} moved {int(changed.sum()):,} of {M * B:,} states", False)
    if changed.any():  # the budget ended the run: a state that moved in its last sweep may have landed on a
        # fixed point there; it has converged if the rule flips no unit now (what one more sweep would find)
        changed &= (_updated(fields, threshold[:, None]) != s).any(-1)
    status = torch.where(changed, UNFINISHED, FIXED_POINT)
    return s.to(dtype), (torch.stack(trace, -1).to(dtype) if record else None), status, sweeps


def run_sync(W, theta, s, max_steps=100, record=True):
    """Synchronous dynamics until a fixed point (s_t+1 = s_t) or a 2-cycle (s_t+1 = s_t-1).

    A state stops moving once it is classified; the others go on. Same returns as `run_async`; when the
    budget ends the run, a state the rule leaves as it is counts as FIXED_POINT and one it brings back in two
    updates as TWO_CYCLE, however late it got there.
    """
    M, B, N = s.shape
    dtype, (W, threshold), theta = s.dtype, _tie_safe(W, theta), theta.double()
    s = s.double()
    status = torch.full((M, B), UNFINISHED, device=s.device)
    trace = [energy(W, theta, s)] if record else None
    previous, steps = None, 0
    while (status == UNFINISHED).any() and steps < max_steps:
        new = _updated(s @ W, threshold[:, None])
        active = status == UNFINISHED
        fixed = active & (new == s).all(-1)
        back = (new == previous).all(-1) if previous is not None else torch.zeros_like(fixed)
        status[fixed], status[active & back & ~fixed] = FIXED_POINT, TWO_CYCLE
        previous, s = s, torch.where((status == UNFINISHED)[..., None], new, s)
        steps += 1
        if record:
            trace.append(energy(W, theta, s))
    active = status == UNFINISHED
    if active.any():  # the budget ended the run: a state may be on a fixed point or a 2-cycle already, which
        # the loop would see only a step or two later; say what each is now (the states stay as they are)
        once = _updated(s @ W, threshold[:, None])
        twice = _updated(once @ W, threshold[:, None])
        fixed = active & (once == s).all(-1)
        status[fixed], status[active & ~fixed & (twice == s).all(-1)] = FIXED_POINT, TWO_CYCLE
    return s.to(dtype), (torch.stack(trace, -1).to(dtype) if record else None), status, steps


@dataclass
class RecallResult:
    """Final states (B, N); energies (B, U) after every update; status (B,) indexes STATUS_NAMES."""

    states: torch.Tensor
    energies: torch.Tensor | None
    status: torch.Tensor
    steps: int  # sweeps (async) or synchronous steps

    def summary(self) -> str:
        counts = torch.bincount(self.status.flatten().cpu(), minlength=len(STATUS_NAMES))
        names = zip(counts.tolist(), STATUS_NAMES, STATUS_PLURALS)
        # (with thousands separators, as the commands' other counts: '1,000 patterns ...: 1000 unfinished')
        return ", ".join(f"{n:,} {name if n == 1 else plural}" for n, name, plural in names if n)


def _check_thresholds(thresholds, num_units: int) -> torch.Tensor:
    """θ as a float64 vector (N,) of finite numbers, or one RnnkitError."""
    if isinstance(thresholds, (str, bytes)):
        raise RnnkitError(f"thresholds must be {num_units} numbers (a list, array or tensor), got a string")
    try:
        theta = torch.as_tensor(thresholds, dtype=torch.float64)
    except OverflowError:
        # (a Python int past float's range, 10**400: torch's "int too large to convert to float")
        raise RnnkitError("thresholds contain a number past float's range; give finite numbers") from None
    except (TypeError, ValueError, RuntimeError):
        raise RnnkitError(
            f"thresholds must be {num_units} numbers, got {type(thresholds).__name__}"
        ) from None
    if theta.numel() != num_units:
        raise RnnkitError(f"thresholds need one value per unit: {num_units}, got {theta.numel()}")
    # (2, 2) for 4 units was read row by row: a table, not a (1, N) row
    if sum(d > 1 for d in theta.shape) > 1:
        raise RnnkitError(
            f"thresholds must be a vector of {num_units} numbers, got shape {tuple(theta.shape)}"
        )
    if not torch.isfinite(theta).all():
        raise RnnkitError("thresholds contain NaN or infinite values; give finite numbers")
    return theta.reshape(num_units)


class Hopfield:
    """A Hopfield network of `num_units` ±1 units; `store` patterns, then `recall` from cues.

    Args:
        num_units: N.
        rule: "hebbian" or "storkey".
        thresholds: θ (N,), zero by default.
    Shapes: patterns and cues (B, N); cues may hold 0 for unknown units.
    """

    def __init__(self, num_units: int, rule: str = "hebbian", thresholds=None, device=None, dtype=None):
        self.num_units = positive_size("number of units N", num_units)
        self.rule = choice("rule", rule, RULES)
        dtype = float_dtype(dtype)  # as torch.nn's modules: float32 unless set otherwise
        if torch.finfo(dtype).eps > torch.finfo(torch.float32).eps:
            raise RnnkitError(f"a Hopfield network keeps its weights in float32 or float64, got {dtype}: rounded to "
                              f"its steps ({torch.finfo(dtype).eps:g}) the weights move a field by more than the "
                              "rule tells apart (1/P for Hebbian), and recall leaves units against their field; "
                              "use dtype=torch.float32")  # fmt: skip
        self.W = torch.zeros(num_units, num_units, device=device, dtype=dtype)
        self.theta = torch.zeros(num_units, device=device, dtype=dtype)
        if thresholds is not None:
            self.theta = _check_thresholds(thresholds, num_units).to(device=device, dtype=dtype)
            if not torch.isfinite(self.theta).all():  # 1e39 is inf in float32: NaN ties, -inf thresholds
                raise RnnkitError(f"thresholds must be finite in {dtype} (|θ| at most {torch.finfo(dtype).max:.3g}), "
                                  f"got |θ| up to {_check_thresholds(thresholds, num_units).abs().max().item():g}")  # fmt: skip

    def store(self, patterns) -> "Hopfield":
        xi = as_spins(patterns).to(self.W)
        units_match("patterns", xi, self.num_units)
        self.W = RULES[self.rule](xi[None])[0]
        return self

    def energy(self, states) -> torch.Tensor:
        s = as_spins(states, "states", allow_zero=True).to(self.W)
        units_match("states", s, self.num_units)
        return energy(self.W[None], self.theta[None], s[None])[0]

    def recall(
        self, cues, mode="async", max_steps=100, generator=None, record=True, progress=False
    ) -> RecallResult:
        """Run the dynamics from each cue. max_steps counts sweeps (async) or synchronous updates. progress: a bar
        on stderr of the units updated (async)."""
        s = as_spins(cues, "cues", allow_zero=True).to(self.W)
        units_match("cues", s, self.num_units)
        choice("mode", mode, ("async", "sync"))
        positive_int("max_steps", max_steps)
        generator_or_none(generator)
        record = switch("record", record)  # (record="False" recorded)
        progress = switch("progress", progress)
        if mode == "async":
            out = run_async(self.W[None], self.theta[None], s[None], max_steps, generator, record, progress)
        else:
            out = run_sync(self.W[None], self.theta[None], s[None], max_steps, record)
        states, energies, status, steps = out
        return RecallResult(states[0], None if energies is None else energies[0], status[0], steps)


def random_patterns(count: int, num_units: int, generator=None, device=None, batch=()) -> torch.Tensor:
    """Independent ±1 patterns with equal odds: (*batch, count, num_units)."""
    generator_or_none(generator)
    # (-1 failed in torch "Trying to create tensor with negative dimension", 2.5 or "3" in randint's overloads)
    count, num_units = (
        positive_size("count (of patterns)", count),
        positive_size("number of units", num_units),
    )
    bits = torch.randint(0, 2, (*batch, count, num_units), generator=generator, device=device)
    return bits.float() * 2 - 1


def _as_tensor(x, name: str) -> torch.Tensor:
    """Tensors as they are (batches (M, P, N) too); lists and arrays as `store` reads them, (P, N) of ±1 or 0."""
    return x if isinstance(x, torch.Tensor) else as_spins(x, name, allow_zero=True)


def corrupt(patterns, noise: float, generator=None, erase: bool = False) -> torch.Tensor:
    """Flip (or, with erase, zero out: a partial cue) round(noise * N) random units of each pattern.

    patterns: a tensor (..., P, N), or a list or array of ±1 rows as `Hopfield.store` takes them."""
    # (a list failed "'list' object has no attribute 'shape'", an array inside torch.where)
    patterns = _as_tensor(patterns, "patterns")
    N = patterns.shape[-1]
    k = round(fraction("noise", noise) * N)
    erase = switch("erase", erase)  # (erase="False" zeroed the units it was to flip)
    u = torch.rand(patterns.shape, generator=generator_or_none(generator), device=patterns.device)
    hit = u.argsort(-1).argsort(-1) < k  # exactly k units per pattern
    return torch.where(hit, torch.zeros_like(patterns) if erase else -patterns, patterns)


def overlap(states, patterns) -> torch.Tensor:
    """m = s·ξ / N for (..., B, N) states and (..., P, N) patterns -> (..., B, P), in the wider of their dtypes
    (a float64 network's states against random_patterns' float32 ones failed in matmul: 'double != float')."""
    states, patterns = _as_tensor(states, "states"), _as_tensor(patterns, "patterns")  # (lists: no .dtype)
    dtype = torch.promote_types(states.dtype, patterns.dtype)
    return states.to(dtype) @ patterns.to(dtype).mT / patterns.shape[-1]
