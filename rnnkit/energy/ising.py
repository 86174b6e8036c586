"""2-D Ising model on an L x L square lattice with periodic boundaries (Ising 1925); deck 001, "Ising model".

    H(σ) = -J Σ_<ij> σ_i σ_j - h Σ_i σ_i          σ_i ∈ {-1, +1}, each nearest-neighbour bond once
    P_T(σ) = exp(-H(σ) / T) / Z_T                  (k_B = 1, the deck's μ = 1, β = 1/T)

Flipping σ_i costs ΔE = 2 σ_i (J n_i + h), with n_i the sum of its four neighbours.
    Metropolis:  accept the flip with probability min(1, exp(-ΔE / T)), and 1/2 where ΔE = 0
    heat bath:   σ_i = +1 with probability σ(2 (J n_i + h) / T)          (Gibbs sampling)
The lattice is a checkerboard: a site's neighbours all have the other colour, so each colour updates in
parallel, exactly as sequential single-site updates would (L must be even to keep that on a torus).
A free flip (ΔE = 0) is taken with probability 1/2, not 1, which keeps detailed balance (both states are
equally likely): at h = 0, with certain acceptance, a state whose every site has n_i = 0 (width-1 stripes;
half of a 2 x 2 lattice's states) flips whole colours back and forth forever at e = 0 whatever T is, and
a chain that never enters those states can't leave the rest: the averages came out wrong (2 x 2 at T = 2.269:
<e> = -1.79 where the exact value is -1.70).
Far above T_c (T > 8|J| + 2|h| over ln(1/0.9), 76 for J = 1, h = 0) Metropolis takes over 90% of every flip,
so its checkerboard sweeps turn near-deterministic, every site flipping sweep after sweep, and the averages come out
wrong (32 x 32 at T = 1000: <e> = -0.022 where it is -0.002; heat bath takes each flip with probability about 1/2
there and reads -0.0016): such temperatures warn, naming the heat bath.
All temperatures run in one batch: spins (T, L, L). Below 2^20 spins a CPU run keeps to one thread: an
operation on ~10^5 spins gains little from a second thread, and on a busy machine it lost 50x.

Observables per temperature, N = L² sites, m = Σσ / N and e = H / N per sweep:
    <|m|>,  <e>,   C = N (<e²> - <e>²) / T²,   χ = N (<m²> - <|m|>²) / T
For J = 1, h = 0 Onsager's exact T_c = 2 / ln(1 + √2) ≈ 2.269 and, below it, |m| = (1 - sinh(2/T)^-4)^(1/8).
"""

import contextlib
import math
import numbers
import warnings

import torch
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit.energy._checks import (
    choice,
    float_dtype,
    generator_or_none,
    positive_float,
    positive_int,
    positive_size,
    whole_number,
)
from rnnkit.energy._util import single_thread
from rnnkit.energy.exact import binary_states
from rnnkit.errors import RnnkitError, said, user_stacklevel

UPDATES = ("metropolis", "heat-bath")


def onsager_tc(J: float = 1.0) -> float:
    """T_c = 2J / ln(1 + √2) of the ferromagnet (J > 0) on the infinite square lattice (Onsager 1944)."""
    if isinstance(J, numbers.Real) and not isinstance(J, bool) and J < 0:
        # (-2.27 was returned, and onsager_magnetisation then 0 at every temperature)
        raise RnnkitError(f"onsager_tc is the ferromagnet's (J > 0), got J = {J!r}: the antiferromagnet of the square "
                          f"lattice orders at onsager_tc({-J!r}), its staggered magnetisation onsager_magnetisation"
                          f"(T, {-J!r}); its uniform one is 0")  # fmt: skip
    return 2 * positive_float("J", J) / math.log(1 + math.sqrt(2))


def onsager_magnetisation(T: float, J: float = 1.0) -> float:
    """Spontaneous magnetisation of the infinite lattice (Onsager 1944, Yang 1952); 0 above T_c."""
    T = one_temperature(T)
    if T >= onsager_tc(J):
        return 0.0
    x = 2 * J / T
    csch = -2 * math.exp(-x) / math.expm1(-2 * x)  # 1 / sinh(x), which overflowed below T = 0.0028 J
    return (1 - csch**4) ** 0.125


def check_temperatures(temperatures) -> torch.Tensor:
    # (True, or a bool tensor, ran at T = 1: a switch taken for a temperature, as one_temperature refuses it)
    if isinstance(temperatures, bool) or str(getattr(temperatures, "dtype", "")) in ("torch.bool", "bool"):
        raise RnnkitError(f"temperatures must be positive numbers, got {said(temperatures)}")
    try:
        t = torch.as_tensor(temperatures, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise RnnkitError(f"temperatures must be positive numbers, got {said(temperatures)}") from None
    if t.numel() == 0 or not torch.isfinite(t).all() or (t <= 0).any():
        raise RnnkitError(f"temperatures must be positive numbers, got {t.tolist()}")
    return t


def one_temperature(T) -> float:
    """One positive finite temperature, checked as `Ising` checks its temperatures."""
    if isinstance(T, bool) or not isinstance(T, numbers.Real):
        raise RnnkitError(f"the temperature T must be one positive number, got {T!r}")
    return check_temperatures(T).item()


def check_coupling(J, h) -> tuple[float, float]:
    """Finite floats J and h, or one RnnkitError."""
    try:
        if any(
            isinstance(v, bool | str | bytes) for v in (J, h)
        ):  # float("3") and float(True) ran as numbers
            raise TypeError
        J, h = float(J), float(h)
    except (TypeError, ValueError, OverflowError):  # (OverflowError: an int past float's range, 10**400)
        raise RnnkitError(f"coupling J and field h must be finite numbers, got J={J!r}, h={h!r}") from None
    if not (math.isfinite(J) and math.isfinite(h)):
        raise RnnkitError(f"coupling J and field h must be finite numbers, got J={J}, h={h}")
    return J, h


def neighbour_sum(s: torch.Tensor) -> torch.Tensor:
    """n_i for spins (..., L, L) on a torus."""
    return s.roll(1, -1) + s.roll(-1, -1) + s.roll(1, -2) + s.roll(-1, -2)


def energy_per_site(s: torch.Tensor, J: float, h: float) -> torch.Tensor:
    """H / N for spins (..., L, L): each bond counted once through the right and down neighbours."""
    bonds = s * (s.roll(-1, -1) + s.roll(-1, -2))
    return (-J * bonds - h * s).mean((-2, -1))


class Ising:
    def __init__(self, size, temperatures, J=1.0, h=0.0, update="metropolis", start="ordered",
                 generator=None, device=None, dtype=None):  # fmt: skip
        self.size = positive_size("lattice size L", size)
        if size % 2:
            raise RnnkitError(
                f"lattice size L must be even for the checkerboard update, got {said(size, '')}"
            )
        dtype = float_dtype(dtype)  # as torch.nn's modules: float32 unless set otherwise
        if torch.finfo(dtype).eps > torch.finfo(torch.float32).eps:  # uniforms in steps of 2^-8 (bfloat16)
            raise RnnkitError(f"the Ising sampler runs in float32 or float64, got {dtype}: its uniforms (steps of "
                              f"{torch.finfo(dtype).eps:g}) take unlikely flips too often and T loses digits")  # fmt: skip
        T = check_temperatures(temperatures)
        self.T = T.to(device=device, dtype=dtype)
        if not torch.isfinite(self.T).all() or (self.T <= 0).any():  # 1e-50 is 0 in float32, 1e39 inf
            raise RnnkitError(f"temperatures must be positive numbers that {dtype} holds (about 1e-38 to 3e38 in "
                              f"float32), got {T.tolist()}")  # fmt: skip
        self.J, self.h = check_coupling(J, h)
        if not math.isfinite(torch.tensor(4 * abs(self.J) + abs(self.h), dtype=dtype).item()):  # J n_i + h
            raise RnnkitError(f"coupling J and field h must keep the local field J n_i + h (up to 4 |J| + |h|) "
                              f"within {dtype} (about 3e38 in float32), got J={self.J:g}, h={self.h:g}")  # fmt: skip
        self.update = choice("update", update, UPDATES)
        dE_max = 2 * (4 * abs(self.J) + abs(self.h))  # the costliest flip
        hot = [t for t in T.tolist() if dE_max > 0 and math.exp(-dE_max / t) > 0.9]
        if self.update == "metropolis" and hot:
            warnings.warn(f"Metropolis at T = {min(hot):g}{' and up' if len(hot) > 1 else ''} takes over 90% of every "
                          "flip: its checkerboard sweeps flip nearly every site each time and the averages come out "
                          "wrong; use update='heat-bath' (--update heat-bath) there",
                          stacklevel=user_stacklevel())  # fmt: skip
        self.generator = generator_or_none(generator)  # (a seed failed only at the first sweep)
        shape = (len(self.T), size, size)
        if choice("start", start, ("ordered", "random")) == "ordered":
            # no stripes at low T; along h, since against it below T_c the phase is metastable and stays
            self.spins = torch.full(shape, -1.0 if self.h < 0 else 1.0, device=device, dtype=dtype)
        else:
            self.spins = torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
        ij = torch.arange(size, device=device)
        self.colours = [((ij[:, None] + ij[None]) % 2 == colour) for colour in (0, 1)]  # (L, L) masks

    def sweep(self) -> None:
        """One update of every site: the two checkerboard colours in turn."""
        T = self.T[:, None, None]
        for mask in self.colours:
            s = self.spins
            field = self.J * neighbour_sum(s) + self.h
            u = torch.rand(s.shape, generator=self.generator, device=s.device, dtype=s.dtype)
            # rand's 0 (one draw in 2^24 in float32) as half its step: u < p took any p > 0 there, a floor of 6e-8
            # on the rate of every unlikely flip (at very low T); now p under 3e-8 is below the uniform's resolution
            u = u.clamp_(min=torch.finfo(s.dtype).eps / 4)
            if self.update == "metropolis":
                accept = torch.where(field == 0, 0.5, torch.exp(-2 * self.spins * field / T))
                flip = mask & (u < accept)
                self.spins = torch.where(flip, -self.spins, self.spins)
            else:
                new = torch.where(u < torch.sigmoid(2 * field / T), 1.0, -1.0).to(self.spins.dtype)
                self.spins = torch.where(mask, new, self.spins)

    def run(self, sweeps: int, burn_in: int, progress: bool = False, interruptible: bool = False) -> dict:
        """`burn_in` sweeps to equilibrate, then `sweeps` measured ones: observables (T,) as float64. `progress`: a
        bar on stderr of the sweeps (burn-in and measured), their rate and an ETA (`rnnkit ising sweep`).
        `interruptible`: a Ctrl-C (KeyboardInterrupt) once two or more sweeps are measured ends the run there, with
        the averages of those; `self.measured` is how many sweeps the last run measured, `self.interrupted` the
        KeyboardInterrupt that ended it (or None), for the caller to raise again once the averages are kept."""
        positive_int("sweeps", sweeps)
        if not whole_number(burn_in) or burn_in < 0:
            raise RnnkitError(f"burn-in (sweeps) must be an integer >= 0, got {said(burn_in)}")
        small = self.spins.device.type == "cpu" and self.spins.numel() < 1 << 20
        # the sweeps' m and e, MEASURED_AT_ONCE sweeps at a time, each full block then kept as its moments only
        # (every sweep's two (T,) tensors were kept to the end: 1.1 KB a sweep, a GB for a million sweeps, and a huge
        # --sweeps grew until memory was gone)
        m, e, blocks = [], [], []
        self.measured, self.interrupted = 0, None
        bar = tqdm(total=burn_in + sweeps, desc="ising", unit=" sweeps", **bar_options(progress))
        try:
            with bar, single_thread() if small else contextlib.nullcontext():
                for _ in range(burn_in):
                    self.sweep()
                    bar.update()
                for _ in range(sweeps):
                    self.sweep()
                    m_t, e_t = self.spins.mean((-2, -1)), energy_per_site(self.spins, self.J, self.h)
                    m.append(m_t)
                    e.append(e_t)
                    self.measured += 1
                    bar.update()
                    if len(e) == MEASURED_AT_ONCE:
                        blocks.append(_moments(m, e))  # (kept before m and e are emptied: a Ctrl-C between
                        m, e = [], []  # the two finds the block's sweeps in one place, never in none)
        except KeyboardInterrupt as stop:
            if not interruptible or self.measured < 2:
                raise
            self.interrupted = stop  # (a SIGTERM the CLI raises as one, to end as terminated)
            # (a sweep's m appended, its e not; or its block kept, m and e not yet emptied)
            kept = self.measured - sum(b[0] for b in blocks)
            del m[kept:], e[kept:]
        if m:
            blocks.append(_moments(m, e))
        return _observed(_combined(blocks), self.T.double(), self.size**2)


# sweeps whose m and e are kept as they are, at most: past it the averages are combined from blocks of this many
# (Chan et al.'s pairwise formula for the variance), equal to one pass over them all to float64's rounding
MEASURED_AT_ONCE = 1 << 16


def _moments(m: list, e: list) -> tuple:
    """(sweeps, <|m|>, <m²>, <e>, Var e) of per-sweep series m, e (lists of (T,) tensors), in float64."""
    m, e = torch.stack(m).double(), torch.stack(e).double()
    return len(m), m.abs().mean(0), (m**2).mean(0), e.mean(0), e.var(0, correction=0)


def _combined(blocks: list) -> tuple:
    """The moments of all the blocks' sweeps together (one block: its own, as they are)."""
    if len(blocks) == 1:
        return blocks[0]
    n = sum(b[0] for b in blocks)
    mean = [sum(b[0] * b[k] for b in blocks) / n for k in (1, 2, 3)]
    var = sum(b[0] * (b[4] + (b[3] - mean[2]) ** 2) for b in blocks) / n
    return n, *mean, var


def _observed(moments: tuple, T: torch.Tensor, N: int) -> dict:
    """The averages and fluctuations, (T,) each, of `moments` (_moments') at temperatures T, N sites."""
    _, abs_m, m2, e, var_e = moments
    return {
        "temperature": T,
        "abs_magnetisation": abs_m,
        "energy": e,
        "specific_heat": N * var_e / T**2,
        "susceptibility": N * (m2 - abs_m**2) / T,
    }


def exact_averages(size: int, T: float, J: float = 1.0, h: float = 0.0) -> dict:
    """<|m|> and <e> by enumerating all 2^(L²) states; L <= 4."""
    positive_int("lattice size L", size)
    T = one_temperature(T)
    J, h = check_coupling(J, h)
    if size * size > 16:
        raise RnnkitError("exact Ising averages enumerate 2^(L²) states: L <= 4")
    s = binary_states(size * size).view(-1, size, size) * 2 - 1
    e = energy_per_site(s, J, h)
    # above the ground state's energy: -E / T of the ground states overflowed to inf below T ~ 3e-307, p NaN
    p = torch.softmax(-(e - e.min()) * size * size / T, 0)
    return {"abs_magnetisation": (p * s.mean((-2, -1)).abs()).sum().item(), "energy": (p * e).sum().item()}
