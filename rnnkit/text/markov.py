"""Markov chains as probabilistic finite-state machines (deck 004).

States s_1 .. s_K, each emitting a symbol; a start distribution π_0 and a transition table

    P[i, j] = P(s_t = j | s_{t-1} = i),      Σ_j P[i, j] = 1.

A string is allowed when some path emits it with every transition (and the start) of non-zero
probability. The stationary distribution π solves π = π P, Σ π = 1 (the left eigenvector of P for
eigenvalue 1; for a chain with several closed classes, the long-run distribution from π_0).

The two deck-004 machines are presets: `abe_machine()` (P(A | E) = 0.8, P(B | B) = 0) and
`i_before_e_machine()` ("i" before "e", except after "c", over the alphabet {a, b, c, e, i}).
"""

import itertools
import numbers
from collections.abc import Mapping

import numpy as np
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit.errors import RnnkitError, check_seed, finite_real, fits_int64, said

ESTIMATE_CHUNK = 1 << 20  # symbols counted at a time where estimate() draws a bar
GTH_BLOCK = 64  # states censored at a time in stationary() (_gth)


class MarkovChain:
    """A probabilistic finite-state machine.

    Args:
        states: state names.
        P: (K, K) transition table, rows sum to 1.
        start: (K,) start distribution π_0; uniform over the states when None.
        emits: state -> the symbol it writes (identity when None); several states may write one symbol.
    """

    def __init__(self, states: list[str], P, start=None, emits: dict[str, str] | None = None):
        self.states = list(states)
        K = len(self.states)
        if K == 0:  # the uniform start was a ZeroDivisionError
            raise RnnkitError("a Markov chain needs at least one state; got none")
        try:
            self.P = np.asarray(P, dtype=np.float64)
        # numpy's "inhomogeneous shape" or "could not convert" named no table; OverflowError: an int past float's range
        except (TypeError, ValueError, OverflowError):
            hint = "; for a table {state: {next state: p}} use MarkovChain.from_table(table)"
            raise RnnkitError(f"the transition table must be {K} x {K}, non-negative, rows summing to 1, got "
                              f"{P!r:.60}{hint if isinstance(P, Mapping) else ''}") from None  # fmt: skip
        twice = [s for i, s in enumerate(self.states) if s in self.states[:i]]
        if twice:  # (a row of P each, which emits and estimate could not tell apart)
            raise RnnkitError(f"state {twice[0]!r} is named twice; every state needs a name of its own")
        # ("ab": "'str' object has no attribute 'get'")
        if emits is not None and not isinstance(emits, Mapping):
            raise RnnkitError(
                f"emits must be a dict {{state: symbol it writes}} (or None), got {emits!r:.60}"
            )
        stray = [s for s in (emits or {}) if s not in self.states]
        if stray:  # ignored: the state meant (a typo's) wrote its own name
            raise RnnkitError(f"emits names {stray[0]!r}, which is not a state; its keys must be among "
                              f"{', '.join(map(repr, self.states))}")  # fmt: skip
        try:
            self.start = np.full(K, 1.0 / K) if start is None else np.asarray(start, dtype=np.float64)
        except (TypeError, ValueError):  # numpy's "could not convert string to float: 'b'" named no option
            hint = ""
            if isinstance(start, str) and start in self.states:
                hint = f"; to start in state {start!r}: start={[float(s == start) for s in self.states]}"
            elif isinstance(start, Mapping):
                hint = f"; in the order of the states: {[start.get(s, 0.0) for s in self.states]}"
            raise RnnkitError(f"the start distribution must have {K} non-negative entries summing to 1, got "
                              f"{start!r:.60}{hint}") from None  # fmt: skip
        self.emits = [(emits or {}).get(s, s) for s in self.states]
        if self.P.shape != (K, K) or np.any(self.P < 0) or not np.allclose(self.P.sum(axis=1), 1):
            raise RnnkitError(f"the transition table must be {K} x {K}, non-negative, rows summing to 1")
        if self.start.shape != (K,) or np.any(self.start < 0) or not np.isclose(self.start.sum(), 1):
            raise RnnkitError(f"the start distribution must have {K} non-negative entries summing to 1")
        # rows within isclose of 1 (0.333333 three times) made numpy's choice in sample() refuse them
        self.P, self.start = self.P / self.P.sum(axis=1, keepdims=True), self.start / self.start.sum()

    @classmethod
    def from_table(cls, table: dict[str, dict[str, float]], **kwargs) -> "MarkovChain":
        """Build from {state: {next state: probability}}; missing entries are 0."""
        states = list(table)
        unknown = list(dict.fromkeys(b for a in states for b, p in table[a].items() if p and b not in table))
        if unknown:  # dropped, its row summed to less than 1: "rows summing to 1" hid the name
            raise RnnkitError(f"next state(s) {', '.join(map(repr, unknown))} have no row of their own; every "
                              f"next state must be one of the states {', '.join(map(repr, states))}")  # fmt: skip
        P = [[table[a].get(b, 0.0) for b in states] for a in states]
        return cls(states, P, **kwargs)

    @classmethod
    def estimate(
        cls, sequences, smoothing: float = 0.0, starts=None, progress: bool = False
    ) -> "MarkovChain":
        """Maximum likelihood (plus `smoothing` pseudo-counts): P[i, j] = c(i j) / c(i •).

        π_0 counts the first symbol of each sequence, or the symbols in `starts` when given (e.g. the
        first character of each line of one long text). `progress`: a bar on stderr of the symbols counted
        (`rnnkit markov --text` of a big file), ESTIMATE_CHUNK at a time.
        """
        if isinstance(sequences, str):
            raise RnnkitError("MarkovChain.estimate takes a list of sequences, not one str: wrap it ([text])")
        # (finite_real, not np.isfinite: a Fraction, or an int past 2^64, was numpy's TypeError "ufunc 'isfinite' not
        # supported for the input types"; np.longdouble('1e400'), finite as itself, was float inf, a table of NaN)
        if (
            isinstance(smoothing, bool)  # (True ran as 1 pseudo-count)
            or not isinstance(smoothing, numbers.Real)
            or not (finite_real(smoothing) and smoothing >= 0)
        ):
            raise RnnkitError(
                f"smoothing (pseudo-counts per transition) must be >= 0 and finite, got {said(smoothing)}"
            )
        # (Fraction(1, 10**400) was float 0: no pseudo-counts, the unseen transitions it was to allow impossible)
        if smoothing > 0 and float(smoothing) == 0:
            raise RnnkitError(f"smoothing {said(smoothing)} is too small: it is 0 as a float; give 1e-300 or more, "
                              "or 0 for none")  # fmt: skip
        # (a str read in place: as a list of its characters it cost 8 bytes a character, 1.1 GB for a 112 MB text)
        sequences = [s if isinstance(s, str) else list(s) for s in sequences if len(s) > 0]
        if not sequences:
            raise RnnkitError("cannot estimate a Markov chain from an empty corpus")
        try:
            states = set().union(*sequences)
        except TypeError:  # (Python's "unhashable type: 'list'": sequences of sequences)
            raise RnnkitError("the symbols of the sequences must be hashable (str, numbers, tuples); a sequence of "
                              "lists holds none: give sequences of symbols") from None  # fmt: skip
        try:
            states = sorted(states)
        except (
            TypeError
        ):  # symbols of several kinds ('<' not supported between 'NoneType' and 'str'): as first seen
            states = list(dict.fromkeys(itertools.chain.from_iterable(sequences)))
        starts = [s[0] for s in sequences] if starts is None else list(starts)
        try:
            unknown = not starts or not set(starts) <= set(states)
        except TypeError:  # (an unhashable start: no symbol)
            unknown = True
        if unknown:
            raise RnnkitError("the start symbols must be symbols of the sequences")
        idx, K = {s: i for i, s in enumerate(states)}, len(states)
        C = np.full((K, K), float(smoothing))
        bar = dict(desc="counting transitions", unit=" symbols", unit_scale=True, **bar_options(progress))
        # the sequences as one stream of ids, read a piece at a time, each after the id before it
        lengths = [len(s) for s in sequences]
        begins = np.zeros(sum(lengths), bool)
        # a sequence's first symbol: no transition into it from the one before (another sequence's last)
        begins[np.cumsum(lengths[:-1], dtype=np.int64)] = True
        symbols, prev = map(idx.__getitem__, itertools.chain.from_iterable(sequences)), np.zeros(0, np.int64)
        with tqdm(total=len(begins), **bar) as bar:
            for i in range(0, len(begins), ESTIMATE_CHUNK):
                ids = np.fromiter(itertools.islice(symbols, ESTIMATE_CHUNK), np.int64)
                run, into = np.concatenate([prev, ids]), ~begins[i - len(prev) + 1 : i + len(ids)]
                pairs, c = np.unique((run[:-1] * K + run[1:])[into], return_counts=True)  # i K + j, c(i j)
                C[pairs // K, pairs % K] += c
                prev = ids[-1:]
                bar.update(len(ids))
        with np.errstate(over="ignore"):
            rows = C.sum(axis=1, keepdims=True)
        if not np.isfinite(rows).all():  # (smoothing 1e308: a row summed to inf, its P 0 or NaN)
            raise RnnkitError(f"smoothing {said(float(smoothing), '')} is too large: a state's {K:,} pseudo-counts sum "
                              "past float's range; give a smaller one")  # fmt: skip
        P = np.where(
            rows > 0, C / np.where(rows > 0, rows, 1), 1.0 / len(states)
        )  # a dead end restarts uniformly
        first = np.bincount([idx[x] for x in starts], minlength=len(states))
        return cls(states, P, start=first / first.sum())

    @property
    def separator(self) -> str:
        """What a text of the chain's symbols holds between two of them: nothing for a chain of characters (every
        symbol it writes one character), one space for a chain over words (estimated from lists of words), as
        NGramLM's word models write theirs. sample() joins its symbols with it; log_prob, allows and why_not read a
        str given to a chain over words (a symbol of several characters) as its words, split at white space."""
        return "" if all(isinstance(e, str) and len(e) == 1 for e in self.emits) else " "

    def _symbols(self, string) -> list:
        """The symbols of `string`: a str's characters (its words, to a chain over words), a list's items."""
        words = any(isinstance(e, str) and len(e) > 1 for e in self.emits)  # (not a chain over numbers)
        if not (isinstance(string, str) and words):
            return list(string)
        # (split at white space, a word 'new york' was 'new', 'york': its own sample not allowed)
        spaced = next((e for e in self.emits if isinstance(e, str) and any(c.isspace() for c in e)), None)
        if spaced is not None:
            raise RnnkitError(f"a str can't be read as this chain's words: its word {spaced!r} holds white space; "
                              f"give the words as a list ([{spaced!r}, ...])")  # fmt: skip
        return string.split()

    def sample(self, length: int, seed: int = 0) -> str:
        """A string of `length` symbols: s_1 ~ π_0, s_t ~ P[s_{t-1}, :]; "" for length 0. A chain over words writes
        them one space apart ('the cat sat'); iter_sample gives the words themselves."""
        other = next((e for e in self.emits if not isinstance(e, str)), None)
        if (
            other is not None
        ):  # ("".join's TypeError, after the draws: 'sequence item 0: expected str instance')
            raise RnnkitError(f"sample joins the symbols into one str, and this chain writes {other!r} "
                              f"({type(other).__name__}); for its symbols use list(chain.iter_sample(length)), for "
                              "state ids chain.simulate(length)")  # fmt: skip
        return self.separator.join(self.iter_sample(length, seed))

    def iter_sample(self, length: int, seed: int = 0):
        """sample()'s symbols one at a time, as each is drawn (the CLI prints them as they come)."""
        _check_length(length, "sample length")
        return self._drawn(int(length), np.random.default_rng(check_seed(seed, "seed")))

    def _drawn(self, length: int, rng):
        p = self.start  # s_1 ~ π_0, then s_t ~ P[s_{t-1}, :]
        for _ in range(length):
            s = rng.choice(len(self.states), p=p)
            p = self.P[s]
            yield self.emits[s]

    def simulate(self, steps: int, seed: int = 0) -> np.ndarray:
        """State ids of one long run of `steps` states (vectorised by inverse-CDF sampling); empty for 0."""
        _check_length(steps, "simulate steps")
        fits_int64("simulate steps", steps)  # (one array of draws: "Maximum allowed dimension exceeded")
        if steps == 0:
            return np.empty(0, np.int64)
        rng = np.random.default_rng(check_seed(seed, "seed"))
        cdf, u = np.cumsum(self.P, axis=1), rng.random(steps)
        cdf /= cdf[:, -1:]  # ends at exactly 1 > u: a sum rounded below 1 let u pass the last state of P > 0
        s = np.empty(steps, np.int64)
        s[0] = rng.choice(len(self.states), p=self.start)
        for t in range(1, steps):
            s[t] = min(np.searchsorted(cdf[s[t - 1]], u[t], side="right"), len(self.states) - 1)
        return s

    def log_prob(self, string) -> float:
        """log P(string) summed over every state path that emits it (forward algorithm); -inf if none."""
        symbols = self._symbols(string)
        if not symbols:
            return 0.0
        alpha = self.start * self._emits(symbols[0])
        log_scale = 0.0
        for x in symbols[1:]:
            alpha = (alpha @ self.P) * self._emits(x)
            z = alpha.sum()
            if z == 0:
                return float("-inf")
            log_scale, alpha = log_scale + np.log(z), alpha / z
        z = alpha.sum()
        return float(log_scale + np.log(z)) if z > 0 else float("-inf")

    def allows(self, string) -> bool:
        """True when the machine can write `string`."""
        return self.log_prob(string) > float("-inf")

    def why_not(self, string, starts: str = "the chain never starts with") -> str | None:
        """None when the machine can write `string`, else why not: a symbol it never writes, a first
        symbol it cannot start with (said as `starts` {symbol!r}), or the first symbol it cannot write
        after the ones before."""
        symbols = self._symbols(string)
        alphabet = list(dict.fromkeys(self.emits))
        unknown = [x for x in dict.fromkeys(symbols) if x not in alphabet]
        if unknown:
            reason = (f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not among "
                      f"its symbols {_show(alphabet)}")  # fmt: skip
            for case in (str.upper, str.lower) if all(isinstance(x, str) for x in symbols) else ():
                if all(case(x) in alphabet for x in symbols) and "".join(symbols) != case("".join(symbols)):
                    cased = [case(x) for x in symbols]  # (words as given: 'the cat', or a list of them)
                    listed = self.separator and not isinstance(string, str)
                    tried = cased if listed else self.separator.join(cased)
                    reason += f"; they are {case.__name__} case: try {tried!r}"
                    break
            from rnnkit.data.corpus import bytes_hint  # (a Latin-1 terminal's 'café', read 'caf\udce9')

            return reason + bytes_hint([x for x in unknown if isinstance(x, str)])
        if not symbols:
            return None
        alpha = self.start * self._emits(symbols[0])
        if alpha.sum() == 0:
            first = dict.fromkeys(e for e, p in zip(self.emits, self.start) if p > 0)
            return f"{starts} {symbols[0]!r}; the first symbol can be {_show(list(first))}"
        for i, x in enumerate(symbols[1:], 1):
            alpha = (alpha @ self.P) * self._emits(x)
            if alpha.sum() == 0:
                return f"it cannot write {x!r} after {_joined(symbols[:i])}"
            alpha = alpha / alpha.sum()
        return None

    def _emits(self, symbol: str) -> np.ndarray:
        return np.array([e == symbol for e in self.emits], dtype=np.float64)

    def stationary(self) -> np.ndarray:
        """π with π P = π, Σ π = 1: the fraction of the time the chain spends in each state in the long run,
        π = lim_n (1/n) Σ_{t<n} π_0 P^t.

        An irreducible chain has only this one π, whatever π_0 (P^T's eigenvector for eigenvalue 1). A chain
        with several closed classes of states (once in one, it never leaves) has many, and no eigenvector
        picks the right one (a mixture of the classes with negative weights came back); π_0 picks it here:
        each class's own π, weighted by the chance of ending up in that class. Computed exactly, however
        slowly the chain mixes (links of 1e-25): the classes are P's strongly connected components, each
        closed one's π by GTH state reduction, the chances of ending in each by the same reduction of the
        transient states, all without subtractions (Grassmann, Taksar & Heyman 1985).
        """
        from scipy.sparse.csgraph import connected_components  # (scipy.sparse: already loaded by rnnkit.text)

        P = self.P / self.P.sum(axis=1, keepdims=True)
        K = len(self.states)
        _, label = connected_components(P > 0, directed=True, connection="strong")
        exits = np.zeros(label.max() + 1, bool)
        np.logical_or.at(exits, label, ((P > 0) & (label[:, None] != label[None, :])).any(axis=1))
        mass = _absorbed(P, self.start, [k for k in range(K) if exits[label[k]]])
        pi = np.zeros(K)
        for c in np.flatnonzero(~exits):
            members = np.flatnonzero(label == c)
            pi[members] = mass[members].sum() * _gth(P[np.ix_(members, members)])
        return pi / pi.sum()


def _absorbed(P: np.ndarray, start: np.ndarray, transient: list[int], block: int = GTH_BLOCK) -> np.ndarray:
    """π_0's mass moved off the transient states onto the closed classes: eliminating a state k moves its mass,
    and every path through it, to the other states by k's exits P[k, j] / Σ_{j != k} P[k, j] (no subtraction).

    Blocked, as _gth is: `block` transient states are eliminated at a time, updating their own rows and the later
    states' columns of them as each goes, and the rows after them (the later transient states and the mass, one
    more row) once, by one product with the block's exits (1,500 transient states took 15 s one at a time)."""
    order = np.concatenate([transient, np.setdiff1d(np.arange(len(P)), transient)]).astype(np.intp)
    n = len(transient)  # rows of Q: the transient states, then the mass (closed states' rows are never read)
    Q = np.vstack([P[np.ix_(order[:n], order)], start[None, order]])
    for lo in range(0, n, block):
        hi = min(lo + block, n)  # the block lo:hi; the rows R = hi: (later states, the mass) updated after it
        for k in range(lo, hi):
            Q[k, k] = 0.0
            Q[k] /= Q[k].sum()  # > 0: a transient state has an exit; row k now holds k's exits
            Q[k + 1 : hi] += np.outer(Q[k + 1 : hi, k], Q[k])
            Q[hi:, k + 1 : hi] += np.outer(Q[hi:, k], Q[k, k + 1 : hi])  # R's columns of the ones to go
            Q[k + 1 : hi, k] = 0.0
        Q[hi:, hi:] += Q[hi:, lo:hi] @ Q[lo:hi, hi:]  # every path through the block at once (:lo are 0)
        Q[hi:, lo:hi] = 0.0
    mass = np.zeros(len(P))
    mass[order] = Q[-1]
    return mass


def _gth(P: np.ndarray, block: int = GTH_BLOCK) -> np.ndarray:
    """The stationary π of an irreducible chain P by GTH state reduction: states n-1 .. 1 are censored in turn
    (P[i, j] += P[i, n] P[n, j] / Σ_{j<n} P[n, j]), then π rebuilt from state 0; no subtraction, so links of
    1e-300 give π to a few ulps (P's diagonal is never read).

    Blocked, as LU is: `block` states are censored at a time, their rows and columns updated as each goes, and the
    states before them once, by one product P[:lo, lo:n] @ P[lo:n, :lo] of the censored states' columns and rows
    (sums of products >= 0, as before: K^3/3 products in a GEMM, where a rank-1 update of the K x K table a state
    took 46 s for the 3,000 characters of a Chinese text)."""
    P = P.copy()
    n = len(P)
    while n > 1:  # states lo .. n-1 censored now, the ones before them (R = :lo) updated once after
        lo = max(1, n - block)
        for k in range(n - 1, lo - 1, -1):
            P[:k, k] /= P[k, :k].sum()
            P[lo:k, :k] += np.outer(P[lo:k, k], P[k, :k])  # the block's rows still to censor
            P[:lo, lo:k] += np.outer(P[:lo, k], P[k, lo:k])  # R's columns of them
        P[:lo, :lo] += P[:lo, lo:n] @ P[lo:n, :lo]  # R x R: every censored state's path at once
        n = lo
    pi = np.zeros(len(P))
    pi[0] = 1.0
    for j in range(1, len(P)):
        pi[j] = pi[:j] @ P[:j, j]
    return pi / pi.sum()


def _check_length(n, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise RnnkitError(f"{what} must be an integer >= 0, got {said(n)}")


def _joined(symbols: list) -> str:
    """Symbols written so far, for a message: 'AAB' where each is one character, else their list ['the', 'cat'] (a
    chain over words or numbers: 'thecat', and ''.join's TypeError for numbers)."""
    if all(isinstance(x, str) and len(x) == 1 for x in symbols):
        return repr("".join(symbols))
    return repr(list(symbols))


def _show(symbols: list[str], limit: int = 20) -> str:
    """Symbols for a message: "A B E", or quoted when some are white space, longer than one character or no str."""
    plain = all(isinstance(x, str) and len(x) == 1 and not x.isspace() for x in symbols)
    shown = (" " if plain else ", ").join(symbols[:limit] if plain else map(repr, symbols[:limit]))
    return shown + (f" … ({len(symbols)} in all)" if len(symbols) > limit else "")


def abe_machine() -> MarkovChain:
    """Deck 004's A/B/E machine: P(A | E) = 0.8, P(B | B) = 0.

    The deck's figure is not in the text; we take the transitions its examples imply: "AABEA" is
    allowed, "ABBA" (B->B, B->A) and "ABAEEAAEABEEEE..." (B->A, E->E) are not. So B only moves to E,
    and E moves to A (0.8) or B (0.2). A's row is our choice.
    """
    table = {"A": {"A": 0.4, "B": 0.3, "E": 0.3}, "B": {"E": 1.0}, "E": {"A": 0.8, "B": 0.2}}
    return MarkovChain.from_table(table)


def i_before_e_machine() -> MarkovChain:
    """Deck 004's "i before e, except after c" machine over the alphabet {a, b, c, e, i}.

    A first-order chain over letters cannot see two letters back, so "i" and "e" get two states each:
    plain ("i", "e") and after-c ("ci", "ce"). Forbidden: "ei" unless after c, and "cie" (state ci -> e).
    From every state the allowed next letters are equally likely.
    """
    letters = ["a", "b", "c", "e", "i"]
    states = ["a", "b", "c", "e", "i", "ce", "ci"]

    def target(state: str, letter: str) -> str | None:
        if state == "c" and letter in "ei":
            return "c" + letter
        if (state == "e" and letter == "i") or (state == "ci" and letter == "e"):
            return None
        return letter

    table = {}
    for s in states:
        nxt = [target(s, x) for x in letters if target(s, x) is not None]
        table[s] = {t: 1.0 / len(nxt) for t in nxt}
    start = [0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]
    return MarkovChain.from_table(table, start=start, emits={"ce": "e", "ci": "i"})


PRESETS = {"abe": abe_machine, "i-before-e": i_before_e_machine}
