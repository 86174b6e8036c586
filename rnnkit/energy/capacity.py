"""Capacity of a Hopfield network: how many random patterns P can N units recall?

For each N and load α = P/N, M networks each store P random ±1 patterns (M chosen so that every point
averages at least `min_patterns` recalls); each network runs asynchronously from its own patterns
(optionally corrupted) and from random states. Recorded per point:

    mean overlap        m = s·ξ/N of the final state with the pattern it started from
    recalled            fraction of patterns ending with < 1 % of bits wrong   (m > 0.98)
    perfect             fraction ending exactly on the pattern                  (m = 1)
    unfinished          fraction of patterns not at a fixed point when the last allowed sweep ends
    spurious            fraction of random starts that reach a fixed point away from every ±pattern
                        (max |m| <= 0.98)
    mixture             ... of those, mixture states: within 1 % of the bits of sgn(Σ m_μ ξ^μ) over their
                        2 to 7 largest overlaps m_μ (built from a few patterns); the rest are spin-glass
                        states, correlated with no few patterns (see _mixture)
    three_mixture       ... and among the mixtures, symmetric 3-mixtures sgn(±ξ1 ± ξ2 ± ξ3), whose
                        three overlaps are 1/2 (Amit, Gutfreund, Sompolinsky 1985)
    starts_unfinished   fraction of random starts not at a fixed point after `max_sweeps`
    spurious_of_settled spurious / (1 - starts_unfinished): the share among the starts that settled

Theory: retrieval collapses near α_c ≈ 0.138 (Amit, Gutfreund, Sompolinsky 1985); a stored pattern is a
fixed point with high probability below P = N / (2 ln N), and all of them at once below N / (4 ln N)
(McEliece et al. 1987); `perfect` is per pattern, so the first bound is the one drawn.
"""

import math
import numbers
import time
from dataclasses import dataclass

import torch

from rnnkit.energy._checks import choice, fraction, positive_int, whole_number
from rnnkit.energy.hopfield import RULES, UNFINISHED, corrupt, overlap, random_patterns, run_async
from rnnkit.errors import RnnkitError, said

ALPHA_C = 0.138
RECALL_OVERLAP = 0.98  # < 1 % of the bits wrong: (1 - m) / 2 < 0.01


@dataclass
class CapacityConfig:
    sizes: tuple = (100, 200, 500, 1000)
    loads: tuple = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.13, 0.14, 0.15, 0.16, 0.18, 0.20, 0.22, 0.25)
    rule: str = "hebbian"
    cue_noise: float = 0.0  # fraction of bits flipped in each starting pattern
    random_starts: int = 32  # per network, to count spurious states
    min_patterns: int = 200  # recalls averaged per point
    max_sweeps: int = 200  # async dynamics settle in 45 to 75 sweeps at N = 1000 (15 to 43 at 500); 20 left half the starts moving
    seed: int = 0

    def check(self) -> "CapacityConfig":
        for field in ("sizes", "loads"):
            value = getattr(self, field)
            if hasattr(value, "tolist"):  # a tensor's numbers as Python's (tensor(0.1) was refused)
                value = value.tolist()
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise RnnkitError(
                    f"{field} must be a list of numbers, got {value!r}; e.g. {field}=({value!r},)"
                )
            # kept as a tuple: a generator was used up by these checks, and the experiment ran no point ([])
            setattr(self, field, tuple(value))
        for n in self.sizes:
            if positive_int("N", n) < 2:
                raise RnnkitError(
                    f"sizes N must be 2 or more (one unit has no weights: W's diagonal is zero), got {said(n, '')}"
                )
        for load in self.loads:
            if isinstance(load, bool) or not isinstance(load, numbers.Real) or not 0 < load <= 1:
                raise RnnkitError(f"loads P/N must be in (0, 1], got {said(load, '')}")
        choice("rule", self.rule, RULES)
        fraction("cue noise", self.cue_noise)
        positive_int("random starts", self.random_starts)
        positive_int("min patterns", self.min_patterns)
        positive_int("max sweeps", self.max_sweeps)
        # torch.Generator.manual_seed's range; '0' or 1.5 failed inside it with 'expected a long'
        if not whole_number(self.seed) or not -(2**63) <= self.seed < 2**64:
            raise RnnkitError(
                f"seed must be an integer (a torch.Generator seed, below 2^64), got {said(self.seed)}"
            )
        return self


MIXTURE_MAX = 7  # patterns in a mixture state, at most


def _mixture(states: torch.Tensor, patterns: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Whether states (M, R, N) are mixture states of their k = 2..7 largest overlaps m (M, R, P):
    within 1 % of the bits (overlap > RECALL_OVERLAP) of sgn(Σ_{μ in the top k} m_μ ξ^μ).

    A mixture state is built from a few patterns, s = sgn(Σ_μ a_μ ξ^μ) (symmetric ones, a_μ = ±1 for an odd
    number of patterns, have overlaps 1/2, 3/8, 5/16 for 3, 5, 7); a spin-glass state is correlated with no
    finite number of them, its overlaps O(1/√N) with every pattern (Amit, Gutfreund, Sompolinsky 1985, 1987;
    Hertz, Krogh, Palmer 1991, ch. 2). A threshold on the overlaps cannot tell them apart at finite N: a fixed
    point's overlaps with the patterns it is not built from spread as sqrt(r / N) with r = 4 to 14 (N = 500 to
    1000, P/N = 0.02 to 0.2, random starts), not 1/√N, so its largest few reach 0.2 to 0.5 and nearly every
    such state had two or more >= max(0.2, 3/√N), the rule used before. Measured there, a spin-glass state's
    overlap with the sign of its top 2 to 9 patterns is 0.46 to 0.94, a mixture state's (3-, 5- and
    7-mixtures relaxed at P/N = 0.01 to 0.03) above 0.98; above P/N ≈ 0.03 the 3-mixtures are no longer
    stable (AGS 1987) and random starts end on spin-glass states.

    Two limits (found reviewing the rule): with P <= 7 patterns every spurious fixed point counts as a mixture
    (a fixed point is s ≈ sgn(Σ_μ m_μ ξ^μ) over all of them, and k reaches P; with finitely many patterns every
    spurious state is a mixture of them, as theory says), and near P ≈ 10 the cut at k = 7 is arbitrary: at
    N = 500, P = 10 the number of patterns a spurious state needs runs 3 to 10 with no gap, and some states of
    a spin-glass-like overlap profile (0.44, 0.42, 0.32, ... over 7 patterns) reach the rule at k = 7.
    """
    M, R, P = m.shape
    found = torch.zeros(M, R, dtype=torch.bool, device=m.device)
    order = m.abs().argsort(-1, descending=True)
    for k in range(2, min(MIXTURE_MAX, P) + 1):
        top = order[..., :k]
        weights = torch.zeros_like(m).scatter(-1, top, m.gather(-1, top))  # m_μ for the top k, 0 elsewhere
        mix = torch.sign(weights @ patterns.to(m.dtype))  # (M, R, N)
        found |= (mix * states).mean(-1) > RECALL_OVERLAP
    return found


def _three_mixture(m: torch.Tensor, N: int) -> torch.Tensor:
    """Whether |overlaps| m (..., P) look like sgn(±ξ1 ± ξ2 ± ξ3): three of them 1/2 within the
    random spread (2/√N, at least 0.1) and none of the others above 1/4."""
    if m.shape[-1] < 3:
        return torch.zeros(m.shape[:-1], dtype=torch.bool, device=m.device)
    top = m.topk(min(4, m.shape[-1]), -1).values
    near_half = ((top[..., :3] - 0.5).abs() < max(0.1, 2 / math.sqrt(N))).all(-1)
    return near_half & (top[..., 3] < 0.25 if top.shape[-1] == 4 else True)


def classify_random_starts(states: torch.Tensor, patterns: torch.Tensor, finished: torch.Tensor) -> dict:
    """Fractions of random starts (M, R, N) that reached a spurious fixed point, a mixture or a symmetric
    3-mixture among those, or no fixed point yet, against the stored patterns (M, P, N)."""
    signed = overlap(states, patterns)  # (M, R, P)
    m, N = signed.abs(), states.shape[-1]
    spurious = finished & (m.max(-1).values <= RECALL_OVERLAP)
    mixture = spurious & _mixture(states.to(signed.dtype), patterns, signed)
    found = states[spurious]  # (K, N)
    distinct = torch.unique(found * found[:, :1], dim=0)  # s and -s are one attractor
    return {
        "spurious": spurious.float().mean().item(),
        "spurious_of_settled": (spurious.sum() / finished.sum().clamp(min=1)).item(),
        "mixture": mixture.float().mean().item(),
        "three_mixture": (mixture & _three_mixture(m, N)).float().mean().item(),
        "distinct_spurious": int(distinct.shape[0]),
        "starts_unfinished": (~finished).float().mean().item(),
    }


def networks_per_point(N: int, load: float, min_patterns: int) -> int:
    """M: how many networks of N units, each storing P = round(load N) patterns, make min_patterns recalls."""
    return math.ceil(min_patterns / max(1, round(load * N)))


def capacity_point(N: int, load: float, cfg: CapacityConfig, generator=None, device=None) -> dict:
    """Store P = round(load N) patterns in M networks and recall; one row of the capacity table."""
    start = time.perf_counter()
    P = max(1, round(load * N))
    M = networks_per_point(N, load, cfg.min_patterns)
    patterns = random_patterns(P, N, generator, device, batch=(M,))  # (M, P, N)
    W = RULES[cfg.rule](patterns)
    cues = corrupt(patterns, cfg.cue_noise, generator) if cfg.cue_noise else patterns
    starts = random_patterns(cfg.random_starts, N, generator, device, batch=(M,))
    theta = torch.zeros(M, N, device=device)
    s0 = torch.cat([cues, starts], 1)  # (M, P + R, N)
    states, _, status, sweeps = run_async(W, theta, s0, cfg.max_sweeps, generator, record=False)
    m = (states[:, :P] * patterns).sum(-1) / N  # (M, P) overlap with the own pattern
    return {
        "N": N,
        "P": P,
        "load": P / N,
        "networks": M,
        "mean_overlap": m.mean().item(),
        "recalled": (m > RECALL_OVERLAP).float().mean().item(),
        "perfect": (m == 1).float().mean().item(),
        "unfinished": (status[:, :P] == UNFINISHED).float().mean().item(),
        **classify_random_starts(states[:, P:], patterns, status[:, P:] != UNFINISHED),
        "sweeps": sweeps,
        "seconds": time.perf_counter() - start,
    }


def capacity_experiment(cfg: CapacityConfig | None = None, device=None, progress=None) -> list[dict]:
    """One row per (N, load); `progress(row)` is called after each."""
    cfg = (cfg or CapacityConfig()).check()
    generator = torch.Generator(device=device or "cpu").manual_seed(cfg.seed)
    rows = []
    for N in cfg.sizes:
        for load in cfg.loads:
            rows.append(capacity_point(N, load, cfg, generator, device))
            if progress:
                progress(rows[-1])
    return rows


def crossing(xs, ys, level: float) -> float | None:
    """The first x where y falls through `level` (or down onto it), linearly interpolated; None if it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 >= level > y1 or y0 > level == y1:  # 0.6, 0.5 at the last load: half recalled there, not "none"
            return x0 + (y0 - level) * (x1 - x0) / (y0 - y1)
    return None


def crossings(rows: list[dict]) -> list[dict]:
    """Per N: where recall (< 1 % errors), perfect recall and the mean overlap fall through 1/2,
    beside α_c and the perfect-recall bound 1 / (2 ln N)."""
    out = []
    for N in sorted({r["N"] for r in rows}):
        mine = sorted((r for r in rows if r["N"] == N), key=lambda r: r["load"])
        loads = [r["load"] for r in mine]
        out.append(
            {
                "N": N,
                "recalled_half": crossing(loads, [r["recalled"] for r in mine], 0.5),
                "perfect_half": crossing(loads, [r["perfect"] for r in mine], 0.5),
                "overlap_half": crossing(loads, [r["mean_overlap"] for r in mine], 0.5),
                "alpha_c": ALPHA_C,
                "perfect_bound": 1 / (2 * math.log(N)) if N > 1 else None,
            }
        )
    return out
