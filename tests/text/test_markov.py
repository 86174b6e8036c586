from fractions import Fraction

import numpy as np
import pytest

from rnnkit.errors import RnnkitError
from rnnkit.text import MarkovChain, abe_machine, i_before_e_machine


def test_abe_machine_is_decks_example():
    m = abe_machine()
    A, B, E = (m.states.index(s) for s in "ABE")
    assert m.P[E, A] == 0.8 and m.P[B, B] == 0
    assert m.allows("AABEA")
    assert not m.allows("ABBA")
    assert not m.allows("ABAEEAAEABEEEEAAABEEAAB")
    assert all(m.allows(m.sample(30, seed=s)) for s in range(5))


def test_i_before_e_except_after_c():
    m = i_before_e_machine()
    for word in ["bieb", "ceib", "abiec", "cei"]:
        assert m.allows(word), word
    for word in ["beib", "cie", "aciea"]:
        assert not m.allows(word), word
    s = m.sample(500, seed=0)
    assert set(s) <= set("abcei") and m.allows(s)
    assert "cie" not in s


def test_stationary_distribution_matches_a_long_simulation():
    for m in (abe_machine(), i_before_e_machine()):
        pi = m.stationary()
        assert pi @ m.P == pytest.approx(pi) and pi.sum() == pytest.approx(1)
        visits = np.bincount(m.simulate(100_000, seed=1), minlength=len(m.states)) / 100_000
        np.testing.assert_allclose(visits, pi, atol=0.01)


def test_stationary_distribution_of_a_chain_with_two_closed_classes():
    """{a, d} and {b, c} never reach each other: eigenvalue 1 is double, and the eigenvector taken gave
    [0.364, 0, 0, 0.636] whatever the start (for other tables, negative entries). The answer is the long-run
    distribution from the start distribution."""
    P = np.array([[0.3, 0.0, 0.0, 0.7], [0.0, 0.36, 0.64, 0.0], [0.0, 0.02, 0.98, 0.0], [0.4, 0.0, 0.0, 0.6]])
    for start in ([0.25] * 4, [0.5, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]):
        pi = MarkovChain(list("abcd"), P, start=start).stationary()
        x, total = np.array(start), np.zeros(4)
        for _ in range(20_000):  # the Cesàro average of π_0 P^t
            total, x = total + x, x @ P
        np.testing.assert_allclose(pi, total / total.sum(), atol=1e-3)
        assert (pi >= 0).all() and pi @ P == pytest.approx(pi)
    periodic = MarkovChain(list("ab"), [[0.0, 1.0], [1.0, 0.0]], start=[1.0, 0.0])
    np.testing.assert_allclose(periodic.stationary(), [0.5, 0.5])


def test_stationary_distribution_of_a_chain_that_mixes_slowly():
    """π was π_0 L^(2^60) for the lazy chain L = (I + P) / 2: a chain that mixes in more than ~1e18 steps had
    not reached its limit (two states, P(x -> y) = 1e-20, P(y -> x) = 3e-20: [0.9943, 0.0057] for (0.75, 0.25)).
    Exact answers: two states π = (b, a) / (a + b); a transient state leaking into two closed classes in the
    ratio 1 : 3 puts its mass there as 1 : 3."""
    for a, b in [(1e-20, 3e-20), (1e-300, 3e-300), (1e-25, 0.5)]:
        m = MarkovChain(["x", "y"], [[1 - a, a], [b, 1 - b]], start=[1.0, 0.0])
        np.testing.assert_allclose(m.stationary(), np.array([b, a]) / (a + b), rtol=1e-14)
    leak = MarkovChain(list("abcd"), [[1, 1e-30, 3e-30, 0], [0, 1, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]],
                       start=[1.0, 0, 0, 0])  # fmt: skip
    np.testing.assert_allclose(leak.stationary(), [0, 0.25, 0.375, 0.375], rtol=1e-14)
    blocks = np.array([[0.5, 0.5, 1e-25, 0], [0.5, 0.5, 0, 0], [0, 0, 0.2, 0.8], [1e-25, 0, 0.6, 0.4]])
    pi = MarkovChain(list("abcd"), blocks, start=[1.0, 0, 0, 0]).stationary()  # (a <-> d: as often each way)
    np.testing.assert_allclose(pi, [4 / 15, 4 / 15, 3 / 15, 4 / 15], rtol=1e-14)


def test_stationary_distribution_of_many_states_censors_them_in_blocks():
    """stationary() censored one state at a time by a rank-1 update of the whole table: K^3/3 products outside any
    GEMM, 46 s for the 3,000 characters of a Chinese text (`rnnkit markov --text FILE stationary`, silent after its
    bar; minutes for 5,000). It censors GTH_BLOCK states at a time, the states before them updated once by a GEMM:
    the same π as one state at a time (to rounding, every sum of terms >= 0), links of 1e-300 included."""
    from rnnkit.text import markov

    def one_at_a_time(P):  # GTH as Grassmann, Taksar & Heyman write it
        P = P.copy()
        for n in range(len(P) - 1, 0, -1):
            P[:n, n] /= P[n, :n].sum()
            P[:n, :n] += np.outer(P[:n, n], P[n, :n])
        pi = np.zeros(len(P))
        pi[0] = 1.0
        for j in range(1, len(P)):
            pi[j] = pi[:j] @ P[:j, j]
        return pi / pi.sum()

    rng = np.random.default_rng(0)
    for K in (1, 2, 3, 7, 20):
        ring = np.roll(np.eye(K), 1, axis=1)  # irreducible whatever the rest
        P = ring + rng.random((K, K)) * (rng.random((K, K)) < 0.3) * 10.0 ** rng.integers(-300, 1, (K, K))
        P /= P.sum(axis=1, keepdims=True)
        for block in (1, 2, 3, 64):
            np.testing.assert_allclose(markov._gth(P, block), one_at_a_time(P), rtol=1e-13, atol=0)
    K, outer = 640, np.outer
    P = rng.random((K, K))
    P /= P.sum(axis=1, keepdims=True)
    products = []  # the work done a product at a time, outside a GEMM

    def counted(a, b):
        products.append(np.size(a) * np.size(b))
        return outer(a, b)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(markov.np, "outer", counted)
        pi = MarkovChain([str(i) for i in range(K)], P).stationary()
    np.testing.assert_allclose(pi, one_at_a_time(P), rtol=1e-12)
    assert sum(products) < K**2 * markov.GTH_BLOCK, sum(products) / K**3  # one at a time: K^3 / 3


def test_stationary_distribution_of_many_transient_states_eliminates_them_in_blocks():
    """The transient states' mass was moved on one state at a time, a rank-1 update of every later state's row:
    n^2 K / 2 products outside any GEMM, 15 s for 1,500 transient states. They go GTH_BLOCK at a time now, the
    later rows updated once by a GEMM: gambler's ruin (p = 0.6, absorbing 0 and N) ends at N from state i with
    probability (1 - (q/p)^i) / (1 - (q/p)^N), every boundary of the blocks crossed on the way."""
    from rnnkit.text import markov

    N, p, outer = 400, 0.6, np.outer
    P = np.zeros((N + 1, N + 1))
    P[0, 0] = P[N, N] = 1.0
    for i in range(1, N):
        P[i, i + 1], P[i, i - 1] = p, 1 - p
    r = (1 - p) / p
    products = []

    def counted(a, b):
        products.append(np.size(a) * np.size(b))
        return outer(a, b)

    for i in (1, 7, 64, 65, 200, N - 1):
        start = np.zeros(N + 1)
        start[i] = 1.0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(markov.np, "outer", counted)
            pi = MarkovChain([str(s) for s in range(N + 1)], P, start=start).stationary()
        ruin, win = (r**i - r**N) / (1 - r**N), (1 - r**i) / (1 - r**N)
        np.testing.assert_allclose(pi[[0, N]], [ruin, win], rtol=1e-12)
        assert not pi[1:N].any()
    n = N - 1  # one at a time: n^2 (N + 1) / 2 products a call
    assert sum(products) / 6 < n * (N + 1) * markov.GTH_BLOCK, sum(products) / 6 / (n**2 * (N + 1) / 2)


def test_estimate_recovers_the_table():
    m = abe_machine()
    learned = MarkovChain.estimate([m.sample(20_000, seed=2)])
    order = [learned.states.index(s) for s in m.states]
    np.testing.assert_allclose(learned.P[np.ix_(order, order)], m.P, atol=0.02)


def test_log_prob_of_one_symbol_is_its_start_probability():
    """log P(s_1) = log π_0(s_1): the forward pass's last normaliser is the whole probability of a one-symbol string
    (of a longer one, 1), so leaving it out gave 0 (P = 1) for every single symbol, and no test saw it."""
    m = MarkovChain(["a", "b"], [[0.5, 0.5], [0.9, 0.1]], start=[0.25, 0.75])
    assert m.log_prob("b") == pytest.approx(np.log(0.75))
    assert m.log_prob("a") == pytest.approx(np.log(0.25))
    assert m.log_prob("ba") == pytest.approx(np.log(0.75 * 0.9))


def test_bad_tables():
    with pytest.raises(RnnkitError):
        MarkovChain(["a", "b"], [[0.5, 0.4], [1, 0]])
    with pytest.raises(RnnkitError):
        MarkovChain.estimate([])
    with pytest.raises(RnnkitError, match="non-negative"):  # sums to 1, but P('A') would be 1.5
        MarkovChain(["A", "B"], [[0.5, 0.5], [0.5, 0.5]], start=[1.5, -0.5])


@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
def test_estimate_counts_in_pieces_the_pairs_within_each_sequence(chunk, monkeypatch):
    """estimate counts the sequences as one stream, ESTIMATE_CHUNK symbols at a time under its bar: every pair
    within a sequence, across the pieces, and none from one sequence's end to the next one's start."""
    from collections import Counter

    from rnnkit.text import markov

    monkeypatch.setattr(markov, "ESTIMATE_CHUNK", chunk, raising=False)
    seqs, states = ["abca", "", "c", "bbacab", ["a", "c"]], ["a", "b", "c"]
    pairs = Counter(p for s in seqs for p in zip(s, s[1:]))
    C = np.array([[pairs[a, b] + 0.5 for b in states] for a in states])
    chain = MarkovChain.estimate(seqs, smoothing=0.5)
    np.testing.assert_array_equal(chain.P, C / C.sum(1, keepdims=True))
    np.testing.assert_array_equal(chain.start, [0.5, 0.25, 0.25])


def test_estimate_refuses_one_str_and_negative_smoothing():
    # a bare str would make each letter a sequence of its own: no transitions, a uniform table
    with pytest.raises(RnnkitError, match=r"list of sequences, not one str: wrap it \(\[text\]\)"):
        MarkovChain.estimate("AABEAABEE")
    assert MarkovChain.estimate(["AABEAABEE"]).P[1].tolist() == [0.0, 0.0, 1.0]  # B -> E
    for smoothing in (-1, float("nan")):
        with pytest.raises(RnnkitError, match="smoothing"):
            MarkovChain.estimate(["AB", "BA"], smoothing=smoothing)


def test_zero_and_negative_lengths():
    m = abe_machine()
    assert m.sample(0) == "" and len(m.sample(1)) == 1
    assert m.simulate(0).shape == (0,)
    for bad in (-2, 1.5):
        with pytest.raises(RnnkitError, match="sample length must be an integer >= 0"):
            m.sample(bad)
        with pytest.raises(RnnkitError, match="simulate steps must be an integer >= 0"):
            m.simulate(bad)


def test_why_not_names_the_reason():
    m = abe_machine()
    assert m.why_not("AABEA") is None and m.why_not("") is None
    assert m.why_not("ABBA") == "it cannot write 'B' after 'AB'"
    assert "they are upper case: try 'ABE'" in m.why_not("abe")
    assert m.why_not("AXA") == "'X' is not among its symbols A B E"
    assert i_before_e_machine().why_not("cie") == "it cannot write 'e' after 'ci'"
    chain = MarkovChain.estimate(["ab\nba\n"], starts="ab")  # a text whose lines start with a and b
    assert chain.allows("ba") and chain.why_not("\nab") == (
        "the chain never starts with '\\n'; the first symbol can be a b"
    )
    with pytest.raises(RnnkitError, match="start symbols"):
        MarkovChain.estimate(["ab"], starts="c")


def test_a_table_naming_an_unknown_next_state_says_which():
    # the entry was dropped and the row summed to 0.5: the error spoke of rows summing to 1
    with pytest.raises(RnnkitError, match=r"next state\(s\) 'c' have no row of their own; .* 'a', 'b'"):
        MarkovChain.from_table({"a": {"a": 0.5, "c": 0.5}, "b": {"a": 1.0}})
    assert MarkovChain.from_table({"a": {"a": 1.0, "z": 0.0}}).P.tolist() == [[1.0]]  # a zero entry: harmless


def test_estimate_refuses_a_smoothing_that_is_not_a_number():
    with pytest.raises(RnnkitError, match="smoothing"):  # was numpy's TypeError from isfinite
        MarkovChain.estimate(["AB"], smoothing="1")
    with pytest.raises(RnnkitError, match="smoothing"):  # ran as 1 pseudo-count in silence
        MarkovChain.estimate(["AB"], smoothing=True)


def test_estimate_takes_any_real_smoothing_a_float_holds_and_refuses_the_others_in_one_line():
    """smoothing was checked by np.isfinite, which fails on a Fraction or an int past 2^64 (numpy's TypeError "ufunc
    'isfinite' not supported for the input types"), and used as its float: np.longdouble('1e400') passed as finite
    and was inf, 1e308 summed to an infinite row (numpy's overflow and divide warnings, then 'the transition table
    must be 2 x 2, ...'), and Fraction(1, 10**400) was 0 pseudo-counts, the unseen transitions impossible."""
    seqs = ["AB", "BA", "AAB"]
    want = MarkovChain.estimate(seqs, smoothing=0.5).P
    for half in (Fraction(1, 2), np.float32(0.5), np.longdouble("0.5")):
        np.testing.assert_array_equal(MarkovChain.estimate(seqs, smoothing=half).P, want)
    assert MarkovChain.estimate(seqs, smoothing=2**64).allows("BB")
    for big in (10**400, Fraction(10**400), np.longdouble("1e400")):
        with pytest.raises(
            RnnkitError, match=r"^smoothing \(pseudo-counts per transition\) must be >= 0 and finite"
        ):
            MarkovChain.estimate(seqs, smoothing=big)
    with pytest.raises(RnnkitError, match=r"^smoothing 1e\+308 is too large: a state's 2 pseudo-counts sum past "
                       "float's range; give a smaller one$"):  # fmt: skip
        MarkovChain.estimate(seqs, smoothing=1e308)
    for tiny in (Fraction(1, 10**400), np.longdouble("1e-400")):
        with pytest.raises(
            RnnkitError, match=r"is too small: it is 0 as a float; give 1e-300 or more, or 0 for none$"
        ):
            MarkovChain.estimate(seqs, smoothing=tiny)
    assert MarkovChain.estimate(seqs, smoothing=1e-300).allows("BB")


def test_rows_rounded_to_six_digits_still_sample():
    """A table of 0.333333s passed the 'sums to 1' check but sample() died in numpy's choice
    ('Probabilities do not sum to 1'); the rows are renormalised once accepted."""
    third = 0.333333
    chain = MarkovChain.from_table(
        {"a": {"a": third, "b": third, "c": third}, "b": {"a": 1.0}, "c": {"b": 0.5, "c": 0.5}},
        start=[third, third, third],
    )
    assert len(chain.sample(50)) == 50
    np.testing.assert_allclose(chain.P.sum(axis=1), 1, rtol=0, atol=1e-15)
    assert chain.P[0, 0] == pytest.approx(1 / 3)


def test_simulate_never_enters_a_state_of_probability_zero(monkeypatch):
    """A row whose cumulative sum rounds to just below 1 (ten times 0.1: 0.9999999999999999) and ends in a state of
    probability 0: a uniform draw above that sum (about 1e-16 per step) landed past the end, and the cap at the last
    state entered the impossible state. Here every draw is the largest double below 1."""
    P = np.tile([0.1] * 10 + [0.0], (11, 1))
    m = MarkovChain([str(i) for i in range(11)], P, start=[1.0] + [0.0] * 10)
    assert np.cumsum(m.P[0])[-1] < 1
    real = np.random.default_rng

    class HighDraws:
        def __init__(self, seed):
            self.rng = real(seed)

        def random(self, n):
            return np.full(n, 1 - 2.0**-53)

        def choice(self, *args, **kwargs):
            return self.rng.choice(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", HighDraws)
    assert set(m.simulate(20).tolist()) == {0, 9}


def test_a_chain_without_states_or_with_emits_of_no_state_says_so():
    """MarkovChain([], []) (and from_table({})) was a ZeroDivisionError from the uniform start; an emits key that
    is not a state (a typo: 'b' for 'B') was ignored, the state writing its own name."""
    with pytest.raises(RnnkitError, match="a Markov chain needs at least one state; got none"):
        MarkovChain([], [])
    with pytest.raises(RnnkitError, match="a Markov chain needs at least one state"):
        MarkovChain.from_table({})
    with pytest.raises(
        RnnkitError, match=r"emits names 'b', which is not a state; its keys must be among 'A', 'B'"
    ):
        MarkovChain(["A", "B"], [[0.5, 0.5], [1, 0]], emits={"A": "x", "b": "y"})
    assert MarkovChain(["A", "B"], [[0.5, 0.5], [1, 0]], emits={"A": "x", "B": "x"}).emits == ["x", "x"]


@pytest.mark.parametrize("emits", ["ab", ["a", "b"], 3])
def test_emits_that_is_no_mapping_is_one_line(emits):
    """emits="ab" (the symbols in order, meant) failed with AttributeError "'str' object has no attribute 'get'"."""
    with pytest.raises(RnnkitError, match="emits must be a dict"):
        MarkovChain(["a", "b"], [[0.5, 0.5], [1.0, 0.0]], emits=emits)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", 2**32])
def test_a_seed_that_is_no_seed_is_refused_naming_it(seed):
    """sample and simulate passed seed to numpy: -1 or 1.5 got numpy's 'expected non-negative integer' or a
    SeedSequence TypeError, which don't name the argument, and True ran as seed 1."""
    m = abe_machine()
    for run in (m.sample, m.simulate):
        with pytest.raises(RnnkitError, match=r"^seed must"):
            run(5, seed=seed)
    assert m.sample(5, seed=np.int64(3)) == m.sample(5, seed=3)


def test_a_state_named_twice_is_refused():
    """Two states of one name got a row of P each, which emits, estimate and the printed chain can't tell apart."""
    with pytest.raises(RnnkitError, match="state 'a' is named twice"):
        MarkovChain(["a", "b", "a"], np.full((3, 3), 1 / 3))


@pytest.mark.parametrize(
    ("start", "said"),
    [
        ("b", r"'b'; to start in state 'b': start=\[0.0, 1.0\]$"),
        ({"a": 0.5, "b": 0.5}, r"\{'a': 0.5, 'b': 0.5\}; in the order of the states: \[0.5, 0.5\]$"),
    ],
)
def test_a_start_that_is_no_distribution_is_refused_in_one_line(start, said):
    """start='b' (the start state, meant) failed in numpy with "could not convert string to float: 'b'", and a dict
    of probabilities with "float() argument must be ... not 'dict'", neither naming start."""
    with pytest.raises(
        RnnkitError,
        match=r"^the start distribution must have 2 non-negative entries summing to 1, got " + said,
    ):
        MarkovChain(["a", "b"], [[0.5, 0.5], [0.2, 0.8]], start=start)


@pytest.mark.parametrize(
    ("P", "said"),
    [
        ([[1.0], [0.5, 0.5]], r"\[\[1.0\], \[0.5, 0.5\]\]$"),
        ([["x", "y"], [0.5, 0.5]], r"\[\['x', 'y'\], \[0.5, 0.5\]\]$"),
        (
            {"a": {"b": 1.0}, "b": {"a": 1.0}},
            r"\{'a': \{'b': 1.0\}, .*; for a table .*MarkovChain.from_table\(table\)$",
        ),
    ],
)
def test_a_transition_table_that_is_no_matrix_is_refused_in_one_line(P, said):
    """A ragged table failed in numpy with 'setting an array element with a sequence. The requested array has an
    inhomogeneous shape', one of strings with 'could not convert string to float', and a {state: {next: p}} table
    (from_table's) with "float() argument must be ... not 'dict'", none naming the table."""
    with pytest.raises(
        RnnkitError,
        match=r"^the transition table must be 2 x 2, non-negative, rows summing to 1, got " + said,
    ):
        MarkovChain(["a", "b"], P)


def test_a_chain_over_numbers_or_words_samples_and_says_why_not_in_one_line():
    """A chain of states 0, 1 (or estimated from lists of numbers) failed in sample after its draws with "TypeError:
    sequence item 0: expected str instance, int found", and why_not with "object of type 'int' has no len()" or the
    join's TypeError; a chain over words said 'after 'thethe''. sample names what gives the symbols now, why_not
    lists them."""
    chain = MarkovChain([0, 1], [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(RnnkitError, match=r"writes 0 \(int\); for its symbols use list\(chain\.iter_sample"):
        chain.sample(3)
    assert list(chain.iter_sample(3, seed=0)) in ([0, 1, 0], [1, 0, 1])
    assert chain.why_not([2]) == "2 is not among its symbols 0, 1"
    assert chain.why_not([0, 0]) == "it cannot write 0 after [0]"
    words = MarkovChain.estimate([["the", "cat", "the", "dog"]])
    assert words.why_not(["the", "cat", "cat"]) == "it cannot write 'cat' after ['the', 'cat']"
    assert abe_machine().why_not("ABBA") == "it cannot write 'B' after 'AB'"  # one character each: as before


def test_estimate_takes_symbols_of_several_kinds_and_says_unhashable_ones():
    """Symbols of two kinds (None marking an end beside str) failed with "TypeError: '<' not supported between
    instances of 'NoneType' and 'str'", and a sequence of lists with "unhashable type: 'list'". The first are states in
    the order first seen now, the second one line."""
    chain = MarkovChain.estimate([["a", None, "b"], ["b", "a"]])
    assert chain.states == ["a", None, "b"]
    assert chain.P[0].tolist() == [0.0, 1.0, 0.0] and chain.log_prob(["b", "a", None]) == pytest.approx(
        np.log(0.5)
    )
    with pytest.raises(RnnkitError, match="symbols of the sequences must be hashable"):
        MarkovChain.estimate([[[1], [2]]])


def test_a_chain_over_words_writes_them_one_space_apart_and_reads_its_own_samples():
    """A chain estimated from lists of words joined its sample with nothing, 'thecatsatonthematonthe', which its own
    allows() refused (a str was read as characters), and why_not's case hint said "try 'thecat'". Words are one space
    apart now, as NGramLM's word models write theirs, a str is read back as its words, and a chain of characters is
    as before."""
    sentences = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "sat"]]
    chain = MarkovChain.estimate(sentences)
    words = list(chain.iter_sample(8, seed=0))  # the words themselves
    assert len(words) == 8 and set(words) <= set(sentences[0] + sentences[1])
    assert chain.sample(8, seed=0) == " ".join(words) and chain.separator == " "
    assert chain.allows(chain.sample(8, seed=0))
    assert chain.log_prob("the cat") == chain.log_prob(["the", "cat"])
    assert chain.log_prob("the cat") == pytest.approx(np.log(1 / 2 * 1 / 2))  # π_0(the) P(cat | the)
    assert chain.why_not("the cat on") == "it cannot write 'on' after ['the', 'cat']"
    assert chain.why_not("THE CAT").endswith("they are lower case: try 'the cat'")
    assert chain.why_not(["THE", "CAT"]).endswith("they are lower case: try ['the', 'cat']")
    characters = MarkovChain.estimate(["the cat sat"])
    for m in (abe_machine(), i_before_e_machine(), characters):  # characters: as before
        assert m.separator == "" and m.sample(30, seed=3) == "".join(m.iter_sample(30, seed=3))
    assert characters.allows("the cat") and characters.log_prob("the cat") < 0


def test_a_chain_over_words_that_hold_spaces_refuses_to_split_a_str():
    """A str given to a chain over words is split at white space (962ac16), so a chain over 'new york' refused its
    own sample: sample 'new york big big big new york is', allows() False, why_not "'new', 'york' are not among its
    symbols". Such a chain can't read a str: one line that says to give the words as a list; a list reads as before."""
    chain = MarkovChain.estimate([["new york", "is", "big"], ["is", "new york", "big"]])
    text = chain.sample(6, seed=0)
    for read in (chain.log_prob, chain.allows, chain.why_not):
        with pytest.raises(
            RnnkitError, match=r"its word 'new york' holds white space; give the words as a list"
        ):
            read(text)
    words = list(chain.iter_sample(6, seed=0))
    assert " ".join(words) == text and chain.allows(words) and chain.why_not(words) is None


def test_estimate_counts_a_text_in_place_not_as_a_list_of_its_characters(monkeypatch):
    """A str sequence (rnnkit markov --text's whole file) is read as it is: copied into a list of its characters it
    cost 8 bytes a character (a pointer each), 1.1 GB of memory for a 112 MB text."""
    import tracemalloc

    from rnnkit.text import markov

    monkeypatch.setattr(markov, "ESTIMATE_CHUNK", 1 << 10, raising=False)
    text = "the quick brown fox jumps over the lazy dog\n" * 5_000  # 220,000 characters
    tracemalloc.start()
    try:
        chain = MarkovChain.estimate([text], starts=["t"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(text), f"{peak:,} bytes for a text of {len(text):,} characters"
    a, b = chain.states.index("t"), chain.states.index("h")
    assert chain.P[a, b] == 1.0 and chain.start[a] == 1.0


def test_a_number_past_floats_range_in_the_table_is_refused_in_one_line():
    """A Python int past float's range in P (10**400) failed in np.asarray with a bare "OverflowError: int too large
    to convert to float"; it is the table's one line, as inf is."""
    for P in ([[10**400, 0.5], [0.5, 0.5]], [[-(10**400), 0.5], [0.5, 0.5]]):
        with pytest.raises(RnnkitError, match="the transition table must be 2 x 2"):
            MarkovChain(["a", "b"], P)


@pytest.mark.parametrize("big", [2**63, 10**400])
def test_simulate_steps_past_a_64_bit_integer_are_refused_in_one_line(big):
    """simulate(2**63) failed in numpy with "Maximum allowed dimension exceeded" (its draws are one array); a sample
    of any length is drawn one symbol at a time, and taken as before."""
    chain = MarkovChain(["a", "b"], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(
        RnnkitError, match=r"simulate steps \S+.* is too large \(past a 64-bit integer, 2\^63\)"
    ):
        chain.simulate(big)
    assert len(list(zip(range(3), chain.iter_sample(big)))) == 3


def test_simulate_maps_a_draw_of_exactly_0_to_the_first_state_of_probability_above_0(monkeypatch):
    """Inverse-CDF sampling takes state j for cdf[j-1] <= u < cdf[j]: u = 0.0, which numpy's random() can draw, is
    the first state whose P > 0, never a state of probability 0 before it (cdf 0 there too)."""
    m = MarkovChain(
        ["a", "b", "c"], [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], start=[0.0, 1.0, 0.0]
    )
    real = np.random.default_rng

    class ZeroDraws:
        def __init__(self, seed):
            self.rng = real(seed)

        def random(self, n):
            return np.zeros(n)

        def choice(self, *args, **kwargs):
            return self.rng.choice(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", ZeroDraws)
    assert m.simulate(6).tolist() == [1, 2, 1, 2, 1, 2]


def test_estimate_restarts_uniformly_from_a_symbol_nothing_follows():
    """A symbol that only ends the sequences has no transitions counted: its row is uniform (a dead end restarts
    uniformly), not a self-loop or a row of zeros."""
    chain = MarkovChain.estimate(["ab", "aab"])
    assert chain.states == ["a", "b"]
    np.testing.assert_array_equal(chain.P, [[1 / 3, 2 / 3], [0.5, 0.5]])


def test_a_chain_over_words_reads_a_str_split_at_any_white_space():
    """A str given to a chain over words is its words split as str.split() splits: at tabs, newlines and runs of
    spaces too (split(' ') made 'the\\tcat' one word, and '' a word between two spaces)."""
    chain = MarkovChain.estimate([["the", "cat", "sat"], ["the", "dog", "sat"]])
    want = chain.log_prob(["the", "cat", "sat"])
    assert want == pytest.approx(np.log(1 * 1 / 2 * 1))
    for text in ("the\tcat sat", "the  cat\nsat", " the cat sat\n"):
        assert chain.log_prob(text) == want and chain.allows(text) and chain.why_not(text) is None


def test_sample_and_simulate_depend_on_their_seed():
    m = abe_machine()
    assert m.sample(40, seed=0) == m.sample(40, seed=0) != m.sample(40, seed=1)
    assert (
        m.simulate(40, seed=0).tolist() == m.simulate(40, seed=0).tolist() != m.simulate(40, seed=1).tolist()
    )
