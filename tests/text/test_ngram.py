import collections
import io
import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest

from rnnkit.errors import RnnkitError
from rnnkit.text import NGramLM

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog.\n" * 3


def test_kneser_ney_matches_a_hand_computed_example():
    # "abac", bigrams ab, ba, ac; vocabulary <unk> a b c (V = 4); D = 0.5.
    # continuation counts N1+(•a) = N1+(•b) = N1+(•c) = 1, so P_1(w) = (max(1 - .5, 0) + .5·3·(1/4)) / 3
    lm = NGramLM(2, discount=0.5).fit("abac")
    (a, b, c), unk = (lm.vocab.stoi[t] for t in "abc"), 0
    p1 = (0.5 + 0.5 * 3 / 4) / 3
    p_after_a = lm.next_distribution([a])
    assert p_after_a[b] == pytest.approx((0.5 + 0.5 * 2 * p1) / 2)  # c(ab) = 1, c(a•) = 2, N1+(a•) = 2
    assert p_after_a[a] == pytest.approx(0.5 * 2 * p1 / 2)
    assert p_after_a[unk] == pytest.approx(0.5 * 2 * (0.5 * 3 / 4 / 3) / 2)
    assert lm.next_distribution([c]) == pytest.approx(lm.next_distribution([]))  # unseen context backs off
    expected = (
        math.log(p1)
        + math.log((0.5 + 2 * 0.5 * p1) / 2)
        + math.log(0.5 + 0.5 * p1)
        + math.log((0.5 + p1) / 2)
    )
    assert lm.score("abac").log_prob == pytest.approx(expected)


def test_estimated_discounts_use_counts_of_counts():
    text = "".join(np.random.default_rng(0).choice(list("abcdefghijkl"), 5000))
    c = NGramLM(3).fit(text).count[3]
    n1, n2, n3, n4 = (np.sum(c == r) for r in (1, 2, 3, 4))
    Y = n1 / (n1 + 2 * n2)
    assert NGramLM(3).fit(text).D[3][1:] == pytest.approx([np.clip(Y, 0.05, 0.95)] * 3)
    expected = np.clip(
        [1 - 2 * Y * n2 / n1, 2 - 3 * Y * n3 / n2, 3 - 4 * Y * n4 / n3], 0.05, [0.95, 1.95, 2.95]
    )
    assert NGramLM(3, smoothing="modified-kneser-ney").fit(text).D[3][1:] == pytest.approx(expected)


def test_add_k_formula():
    lm = NGramLM(2, smoothing="add-k", k=0.5).fit("abab")
    V, a, b = len(lm.vocab), lm.vocab.stoi["a"], lm.vocab.stoi["b"]
    assert lm.next_distribution([a])[b] == pytest.approx((2 + 0.5) / (2 + 0.5 * V))
    assert lm.next_distribution([b])[a] == pytest.approx((1 + 0.5) / (1 + 0.5 * V))


def test_add_k_with_a_k_so_large_that_k_times_V_overflows():
    """k V = inf (k = 1e308, V = 5) made every P(w | h) = (c + k) / inf = 0 in silence: log p = -inf, perplexity
    inf. (c + k) / (c_h + k V) tends to 1 / V as k grows, and is that here."""
    for k in (1e307, 1e308, 1.7e308):
        lm = NGramLM(2, smoothing="add-k", k=k, level="word").fit("a b c a b\nb c a\n")
        V, a = len(lm.vocab), lm.vocab.stoi["a"]
        np.testing.assert_allclose(lm.next_distribution([a]), 1 / V, rtol=1e-15)
        np.testing.assert_allclose(
            lm.log_probs(np.array(lm.vocab.encode(["a", "b"]))), -np.log(V), rtol=1e-15
        )


def test_add_k_with_a_k_so_small_that_the_quotient_underflows():
    """(c + k) / (c_h + k V) of an unseen bigram underflowed to 0 for k = 5e-324 (log p = -inf, perplexity inf where
    log p is -745.5) and lost its bits below float64's normal range (k = 1e-320: 5e-4 off); there log p is
    log(c + k) - log(c_h + k V), from counts of our own."""
    text = "a b c a b\nb c a\n"
    for k in (5e-324, 1e-320, 1e-310, 1e-3):
        lm = NGramLM(2, smoothing="add-k", k=k, level="word").fit(text)
        V, toks = len(lm.vocab), lm.encode(text).tolist()
        pairs, hist = collections.Counter(zip(toks, toks[1:])), collections.Counter(toks[:-1])
        x = lm.vocab.encode(["a", "b", "c", "a", "a", "c", "b", "b"])
        want = [math.log(pairs[h, w] + k) - math.log(hist[h] + k * V) for h, w in zip(x, x[1:])]
        np.testing.assert_allclose(lm.log_probs(np.array(x))[1:], want, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney", "add-k"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_probabilities_sum_to_one_for_every_context(smoothing, n):
    lm = NGramLM(n, smoothing=smoothing).fit(TEXT)
    ids = range(len(lm.vocab))
    for length in range(n):
        for history in itertools.product(ids, repeat=length):
            p = lm.next_distribution(list(history))
            assert p.min() > 0 and p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney", "add-k"])
def test_next_distribution_searches_one_block_per_order(smoothing):
    """A context's m-grams are one block of the sorted keys: next_distribution (each step of sample and complete)
    binary-searched every one of the V tokens in each order's keys (2.4 ms a word of a PTB 5-gram, 12 ms with 57k
    words); two searches an order now, to the same probabilities bit for bit."""

    class Counting(np.ndarray):
        searched = 0

        def searchsorted(self, v, *args, **kwargs):
            Counting.searched += np.size(v)
            return np.asarray(self).searchsorted(v, *args, **kwargs)

    words = " ".join(f"w{i % 37} w{i % 11} w{i % 5}" for i in range(600))
    lm = NGramLM(3, smoothing, level="word").fit(words)
    V = len(lm.vocab)
    for history in ([], [lm.vocab.stoi["w3"]], list(lm.encode("w1 w2 w9")), [0, V - 1]):
        h = np.array(history[-2:], np.int64)
        ctxs = [None] + [c[-1:] for c in lm._contexts(np.concatenate([h, [0]]))[1:]]
        before = lm._prob(ctxs, np.arange(V), np.array(len(h) + 1))  # every token looked up, as it was
        lm.keys = [None] + [k.view(Counting) for k in lm.keys[1:]]
        Counting.searched = 0
        p = lm.next_distribution(history)
        assert Counting.searched <= 3 * (len(h) + 1) + 2 * 3 < V
        assert p.tobytes() == before.tobytes()
        lm.keys = [None] + [np.asarray(k) for k in lm.keys[1:]]


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney", "add-k"])
def test_stream_scores_agree_with_next_distribution(smoothing):
    lm = NGramLM(4, smoothing=smoothing).fit(TEXT)
    x = lm.encode("the cat sat on a log")
    lp = lm.log_probs(x)
    for i in [0, 1, 2, 5, len(x) - 1]:
        assert lp[i] == pytest.approx(np.log(lm.next_distribution(list(x[:i]))[x[i]]))


def test_score_units_and_higher_order_fits_better():
    held_out = "the dog sat on the mat."
    s1, s4 = NGramLM(1).fit(TEXT).score(held_out), NGramLM(4).fit(TEXT).score(held_out)
    assert s4.nats_per_token < s1.nats_per_token
    assert s4.bits_per_token == pytest.approx(s4.nats_per_token / math.log(2))
    assert s4.perplexity == pytest.approx(math.exp(-s4.log_prob / s4.tokens))
    assert s4.tokens == len(held_out)


def test_word_level_complete_and_sample_and_save(tmp_path):
    lm = NGramLM(3, level="word").fit(TEXT)
    assert lm.vocab.stoi["<eos>"] > 0
    assert lm.complete("a cat", 3) == "and a dog."
    assert lm.sample(20, seed=1) == lm.sample(20, seed=1)
    lm.save(tmp_path / "m.npz")
    again = NGramLM.load(tmp_path / "m.npz")
    assert again.score("a cat sat").log_prob == pytest.approx(lm.score("a cat sat").log_prob)


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney", "add-k"])
def test_a_text_shorter_than_the_order_backs_off(smoothing, tmp_path):
    # "ab" has no 3-, 4- or 5-grams: the 5-gram model backs off to its 2-grams, as a 2-gram model does
    lm, ref = NGramLM(5, smoothing).fit("ab"), NGramLM(2, smoothing).fit("ab")
    a, b = lm.vocab.stoi["a"], lm.vocab.stoi["b"]
    for history in ([], [a], [b, a]):
        p = lm.next_distribution(history)
        assert p.min() > 0 and p.sum() == pytest.approx(1.0, abs=1e-12)
        if len(history) < 2 or smoothing != "add-k":  # add-k: a longer, unseen context is uniform
            assert p == pytest.approx(ref.next_distribution(history))
    assert lm.score("ab").log_prob == pytest.approx(ref.score("ab").log_prob)
    lm.save(tmp_path / "m.npz")
    assert NGramLM.load(tmp_path / "m.npz").score("ba", "ab").log_prob == pytest.approx(
        lm.score("ba", "ab").log_prob
    )


@pytest.mark.parametrize("discount", [0.0, 1.0])
def test_fixed_discounts_at_the_ends_of_zero_to_one_sum_to_one(discount):
    lm = NGramLM(2, discount=discount, level="word").fit("a b a c a b b a c c a b\n")
    assert lm.next_distribution([lm.vocab.stoi["a"]]).sum() == pytest.approx(1.0)


def test_discount_zero_gives_every_token_of_the_training_text_a_probability(smoothing="kneser-ney"):
    """The m-gram a text begins with had continuation count 0 where nothing else precedes it (no token before the
    text's start): with discount 0 the training text's first token 'x', or 'cat' after 'the' (its bigram at the
    start), had P = 0, and the training text itself log p = -inf. Such an m-gram keeps its raw count, 1."""
    lm = NGramLM(2, smoothing=smoothing, discount=0).fit("xabab")
    # N1+(•x) = 1 (the start), N1+(•a) = 2, N1+(•b) = 1; then the bigrams' raw counts: c(xa)/c(x•) = 1, ...
    assert np.exp(lm.log_probs(lm.encode("xabab"))) == pytest.approx([1 / 4, 1, 1, 1, 1])
    text = "the cat sat\nthe dog sat\n"
    lm = NGramLM(3, smoothing=smoothing, discount=0, level="word").fit(text)
    # 'cat' after 'the', its bigram's one left neighbour the start, 'dog' after 'the' <eos>'s: 1/2 each
    assert np.exp(lm.log_probs(lm.encode(text)))[:2] == pytest.approx([1 / 6, 1 / 2])
    assert np.isfinite(lm.score(text).log_prob)


def test_bad_input():
    with pytest.raises(RnnkitError, match=r"^n \(the n-gram order\) must be an integer >= 1, got 0$"):
        NGramLM(0)
    for discount in (-0.5, 1.5, 3.0, float("nan")):
        with pytest.raises(RnnkitError, match="discount must be between 0 and 1"):
            NGramLM(2, discount=discount)
    with pytest.raises(RnnkitError, match="empty"):
        NGramLM(2).fit("")
    with pytest.raises(RnnkitError):
        NGramLM.load("/nonexistent/model.npz")
    with pytest.raises(RnnkitError, match="unknown token level 'chars'; use 'char' or 'word'"):
        NGramLM(2, level="chars")  # once silently a word model


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, float("nan"), float("inf")])
def test_sample_refuses_temperatures_that_are_not_positive(temperature):
    lm = NGramLM(3).fit("abracadabra abracadabra\n" * 5)
    with pytest.raises(RnnkitError, match="temperature must be a number > 0"):
        lm.sample(5, prefix="ab", temperature=temperature)
    with pytest.raises(RnnkitError, match="alpha"):
        lm.generate("ab", 5, alpha=-1.0)
    with pytest.raises(RnnkitError, match="length"):
        lm.generate("ab", -1)


@pytest.mark.parametrize("ids", [[1, 50], [1, -1], [1.7, 2.2], [[1, 2]]])
def test_log_probs_refuses_ids_outside_the_vocabulary(ids):
    lm = NGramLM(3).fit("abracadabra abracadabra\n" * 5)
    with pytest.raises(RnnkitError, match=r"1-D array of integer token ids in 0\.\.7 .*model\.encode"):
        lm.log_probs(np.array(ids))
    with pytest.raises(RnnkitError, match="history"):
        lm.log_probs(np.array([1, 2]), history=np.array([99]))


def test_generate_never_writes_unk_even_where_it_is_likeliest():
    text = "".join(f"the w{i} sat\n" for i in range(30)) + "the cat sat\nthe cat sat\n"
    lm = NGramLM(2, level="word", min_freq=2).fit(text)
    assert np.argmax(lm.next_distribution([lm.vocab.stoi["the"]])) == 0  # <unk> would win the argmax
    assert lm.complete("the", 2) == "cat sat"
    assert "<unk>" not in lm.sample(300, temperature=10.0)


def test_generate_never_writes_unk_after_a_context_only_unk_followed(smoothing="kneser-ney"):
    """With discount=0 a context followed only by rare tokens gives <unk> all its mass: the mask had nothing to
    renormalise, and <unk> was written. Such a step now backs off to a shorter history."""
    lm = NGramLM(3, smoothing=smoothing, discount=0, level="char", min_freq=2).fit("qxqyqwabab")
    assert lm.next_distribution(lm.encode("q"))[0] == 1.0
    for seed in range(3):
        assert "<unk>" not in lm.generate("q", 30, seed=seed)
    assert "<unk>" not in lm.complete("q", 10)


def test_model_load_of_other_files(tmp_path):
    (tmp_path / "t.txt").write_text("some text\n")
    for path in (tmp_path / "t.txt",):
        with pytest.raises(RnnkitError, match=r"is not an rnnkit n-gram model \(an \.npz") as e:
            NGramLM.load(path)
        assert "pickle" not in str(e.value)
    np.save(tmp_path / "a.npy", np.arange(3))
    with pytest.raises(RnnkitError, match="is not an rnnkit n-gram model"):
        NGramLM.load(tmp_path / "a.npy")
    with pytest.raises(RnnkitError, match="cannot read n-gram model .*: No such file"):
        NGramLM.load(tmp_path / "missing.npz")


def test_fit_ids_needs_a_vocabulary_and_ids_in_it():
    """fit_ids on a fresh model was an AttributeError on 'vocab'; float or out-of-range ids were counted."""
    with pytest.raises(RnnkitError, match="set model.vocab first"):
        NGramLM(3).fit_ids(np.array([1, 2]))
    m = NGramLM(3).fit("abc abd abc")
    for x in (np.array([1.5]), np.array([-1]), np.array([len(m.vocab)]), np.zeros((2, 2), np.int64)):
        with pytest.raises(RnnkitError, match="1-D array of integer token ids"):
            m.fit_ids(x)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.uint64])
def test_fit_ids_counts_ids_of_any_integer_dtype(dtype):
    """uint64 ids failed deep in the counting (TypeError: Cannot cast array data from dtype('float64') to
    dtype('int64')): int64 keys plus uint64 ids are float64 in numpy."""
    ref = NGramLM(3).fit(TEXT)
    x = ref.encode(TEXT)
    m = NGramLM(3)
    m.vocab = ref.vocab
    m.fit_ids(x.astype(dtype))
    np.testing.assert_array_equal(m.log_probs(x.astype(dtype)), ref.log_probs(x))
    np.testing.assert_array_equal(m.next_distribution(x[:5].astype(dtype)), ref.next_distribution(x[:5]))


def test_word_text_comes_back_without_spaces_beside_its_newlines():
    """Decoding joined the words with spaces and then turned <eos> into a newline: "dog \\n" and "\\n sat"."""
    lm = NGramLM(2, level="word").fit(TEXT)
    assert lm.decode(lm.encode("the cat sat\nthe dog\n")) == "the cat sat\nthe dog\n"
    assert lm.decode(lm.encode("\n\nthe cat")) == "\n\nthe cat"


def test_an_untrained_model_says_so_and_the_order_must_be_a_whole_number(tmp_path):
    """score, complete, encode or save before fit were AttributeErrors ('vocab', 'keys'); n=2.5 a TypeError."""
    m = NGramLM(2)
    for call in (lambda: m.score("ab"), lambda: m.complete("a", 2), lambda: m.sample(3), lambda: m.encode("a"),
                 lambda: m.next_distribution([]), lambda: m.save(tmp_path / "m.npz")):  # fmt: skip
        with pytest.raises(RnnkitError, match="not trained yet: call fit"):
            call()
    for n in (2.5, "3", True):
        with pytest.raises(RnnkitError, match=r"n \(the n-gram order\) must be an integer >= 1, got"):
            NGramLM(n)
    assert NGramLM(np.int64(2)).fit("abab").score("ab").tokens == 2


def test_lower_lower_cases_a_character_model_too():
    """lower=True (ngram train --lower) was ignored at the char level: 'A' and 'a' stayed two tokens."""
    m = NGramLM(2, level="char", lower=True).fit("AbAb\nab\n")
    assert "A" not in m.vocab and "a" in m.vocab
    assert m.score("AB").log_prob == m.score("ab").log_prob


def test_numpy_numbers_as_options_save_and_load(tmp_path):
    """n=np.int64(3) (a parameter grid's value), min_freq, a float32 discount or np.bool_ lower trained a model
    that save() could not write: 'Object of type int64 is not JSON serializable'."""
    options = dict(discount=np.float32(0.5), lower=np.bool_(True), min_freq=np.int64(1))
    m = NGramLM(np.int64(3), **options).fit("abcab")
    m.save(tmp_path / "m.npz")
    again = NGramLM.load(tmp_path / "m.npz")
    assert (again.n, again.discount, again.lower, again.min_freq) == (3, 0.5, True, 1)
    assert again.score("abc").log_prob == m.score("abc").log_prob
    # a float32 min_freq was kept as it came, and save failed: 'Object of type float32 is not JSON serializable'
    NGramLM(2, min_freq=np.float32(1.5)).fit("aabbc").save(tmp_path / "f.npz")
    assert NGramLM.load(tmp_path / "f.npz").min_freq == 1.5


@pytest.mark.parametrize("change", [lambda z: z["keys2"].astype(np.float64), lambda z: z["keys2"][:-1]])
def test_a_model_file_whose_arrays_do_not_fit_is_one_line(tmp_path, change):
    """Arrays of another layout (float keys, counts of another length: another version's file, or one made by hand)
    passed np.load and failed in the statistics after it, a TypeError or ValueError from np.bincount."""
    NGramLM(3).fit("the cat sat on the mat\n" * 5).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    arrays["keys2"] = change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RnnkitError, match=r"bad\.npz is not an rnnkit n-gram model"):
        NGramLM.load(tmp_path / "bad.npz")


def test_a_tiny_temperature_samples_among_the_likeliest_tokens():
    """1/temperature = 1e308 is finite, but alpha · log p overflowed to -inf for every token where no p is near 1
    (a uniform unigram model): numpy's overflow warnings, then 'ValueError: Probabilities contain NaN'."""
    lm = NGramLM(1).fit("abcdefghijklmnopqrstuvwxyz" * 3)
    assert len(lm.sample(5, prefix="a", temperature=1e-308)) == 5
    lm = NGramLM(1).fit("aab" * 10)
    assert lm.sample(8, temperature=1e-308) == "a" * 8  # the likeliest token only


@pytest.mark.parametrize(
    "option, said",
    [
        (dict(smoothing="add-k", k="3"), "k .* must be a number"),
        (dict(smoothing="add-k", k=True), "k .* must be a number"),
        (dict(smoothing="add-k", k=[1]), "k .* must be a number"),
        (dict(discount="0.5"), "discount must be a number between 0 and 1"),
        (dict(discount=True), "discount must be a number between 0 and 1"),
        (dict(lower="False"), "lower must be True or False"),
        (dict(lower=2), "lower must be True or False"),
        (dict(min_freq=float("nan")), "min_freq must be a number >= 1"),
        (dict(min_freq="2"), "min_freq must be a number >= 1"),
    ],
)
def test_options_of_another_kind_are_refused_when_the_model_is_made(option, said):
    """k='3' or discount='0.5' failed with "'<' not supported", k=True or discount=True ran as 1, lower='False' (a
    config file's string) lower-cased, min_freq=nan trained a model of <unk> alone: each is one line at NGramLM(...)."""
    with pytest.raises(RnnkitError, match=said):
        NGramLM(2, **option)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_generate_refuses_a_seed_that_is_no_seed_naming_it(seed):
    """generate passed seed to numpy, whose errors don't name it (-1, 1.5), and True ran as seed 1."""
    lm = NGramLM(2).fit("abcabd abc")
    with pytest.raises(RnnkitError, match=r"^seed must"):
        lm.generate("a", 5, seed=seed)
    with pytest.raises(RnnkitError, match=r"^seed must"):
        lm.sample(5, seed=seed)


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("text", [["the cat sat\n", "the mat\n"], b"the cat sat\n", None])
def test_text_that_is_no_str_is_refused_in_one_line(level, text):
    """fit(["the cat sat\\n", ...]) (a list of lines, as NLTK's fit takes) trained a character model on whole lines
    as its tokens and bytes on their byte values, in silence; a word model failed in str.split. Each is one line,
    in fit and in what encodes text (score, generate)."""
    with pytest.raises(RnnkitError, match=r"^text must be a str, got (list|bytes|NoneType)"):
        NGramLM(2, level=level).fit(text)
    lm = NGramLM(2, level=level).fit(TEXT)
    with pytest.raises(RnnkitError, match=r"^text must be a str"):
        lm.score(text)
    with pytest.raises(RnnkitError, match=r"^text must be a str"):
        lm.generate(text, 3)


def test_fit_ids_of_no_ids_is_refused_in_one_line_and_keeps_the_model():
    """fit_ids(np.array([], np.int64)) (an encoded text that came out empty) failed deep in the counting with numpy's
    'IndexError: boolean index did not match indexed array', and left the model half counted: its next score an
    'IndexError: list index out of range'. It is one line, as fit('') is, and the model keeps what it had counted."""
    lm = NGramLM(3).fit("abcab")
    before = lm.score("abc").log_prob
    with pytest.raises(RnnkitError, match="^fit_ids's x holds no token ids"):
        lm.fit_ids(np.array([], np.int64))
    assert lm.score("abc").log_prob == before


@pytest.mark.parametrize("value", ["0.5", None, True])
def test_a_temperature_or_alpha_that_is_no_number_is_refused_in_one_line(value):
    """sample(temperature='0.5') (a config file's string) and generate(alpha='2') failed in numpy with "ufunc 'isfinite'
    not supported for the input types", and True ran as 1: each is now the option's own line."""
    lm = NGramLM(2).fit("abcabd abc")
    if value is not None:  # alpha=None is greedy
        with pytest.raises(RnnkitError, match=r"^alpha \(the sharpening power\) must be a number > 0"):
            lm.generate("a", 3, alpha=value)
    with pytest.raises(RnnkitError, match=r"^temperature must be a number > 0"):
        lm.sample(3, temperature=value)


def test_a_word_model_keeps_its_line_end_whatever_min_freq():
    """<eos>, the line end the model adds itself, was dropped by min_freq as a rare word where the text had fewer
    lines than min_freq: every line end was scored as <unk> (a rare word's), and sample, which never writes <unk>,
    wrote no line end. It keeps its own id, and <unk> counts only the rare words."""
    lm = NGramLM(2, level="word", min_freq=3).fit("a a b\nb a q a b\n")
    assert "<eos>" in lm.vocab and lm.vocab.counts[lm.vocab.stoi["<eos>"]] == 2
    assert lm.vocab.counts[0] == 1  # q
    assert lm.vocab.unknown(["<eos>", "q"]) == ["q"]
    assert "\n" in lm.sample(50, seed=0)
    no_line_end = NGramLM(2, level="word", min_freq=3).fit("a a a b")
    assert no_line_end.vocab.itos == ["<unk>", "a"]


def test_a_file_whose_zip64_end_record_is_damaged_is_not_a_model(tmp_path):
    """zipfile.is_zipfile raised BadZipFile ('zipfiles that span multiple disks are not supported') on it: a
    traceback from NGramLM.load."""
    import torch

    buf = io.BytesIO()
    torch.save({"x": 1}, buf)  # a zip with zip64 records
    data = buf.getvalue()
    at = data.rfind(b"PK\x06\x07")
    (tmp_path / "bad.npz").write_bytes(data[: at + 5] + b"\xdc" + data[at + 6 :])
    with pytest.raises(RnnkitError, match=r"bad\.npz is not an rnnkit n-gram model"):
        NGramLM.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "at, byte", [(10, 99), (8, 1)]
)  # its compression method (99: unknown), its flags (1: encrypted)
def test_a_model_file_whose_member_entry_has_a_byte_changed_is_one_line(tmp_path, at, byte):
    """A byte changed in a member's central directory entry: zipfile raised NotImplementedError ('That compression
    method is not supported') or RuntimeError ("File 'keys1.npy' is encrypted, password required for extraction")
    as the arrays were read, a traceback from every ngram command."""
    NGramLM(2).fit("the cat sat on the mat\n").save(tmp_path / "m.npz")
    data = bytearray((tmp_path / "m.npz").read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last member's
    data[entry + at] = byte
    (tmp_path / "m.npz").write_bytes(bytes(data))
    with pytest.raises(RnnkitError, match=r"m\.npz is not an rnnkit n-gram model"):
        NGramLM.load(tmp_path / "m.npz")


@pytest.mark.parametrize(
    "name, change",
    [
        ("keys2", lambda a: a[::-1].copy()),  # out of order: looked up wrong in silence
        ("keys2", lambda a: a + 10**9),  # past the contexts' range: every 2-gram unseen, in silence
        ("keys1", lambda a: a[:0]),  # no unigrams, 2-grams of contexts that are none
        ("count2", lambda a: -a),  # IndexError inside the statistics
        (
            "cont1",
            lambda a: a.astype(np.float64),
        ),  # IndexError: arrays used as indices must be of integer type
        ("count2", lambda a: a.astype(np.int8) * 100),  # wrapped to negatives
    ],
)
def test_a_model_file_whose_counts_are_not_a_texts_is_one_line(tmp_path, name, change):
    """Arrays made by hand or by another program: keys out of order or range scored every text otherwise in
    silence (perplexity 409 for 2.4), float or negative counts failed inside numpy with an IndexError."""
    NGramLM(3).fit("the cat sat on the mat\n" * 5).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    arrays[name] = change(arrays[name])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RnnkitError, match=r"bad\.npz is not an rnnkit n-gram model"):
        NGramLM.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("key", ["level", "n", "smoothing", "lower"])
def test_a_model_file_whose_meta_lacks_an_option_is_one_line(tmp_path, key):
    """A meta without "level" (edited, or written by another program) loaded a word model as a char model: it
    scored every text by its characters, all <unk>, in silence. Every save writes every option."""
    NGramLM(2, level="word").fit("the cat sat on the mat\n" * 5).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    del meta[key]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RnnkitError, match=rf"bad\.npz is not an rnnkit n-gram model .*its meta lacks {key}"):
        NGramLM.load(tmp_path / "bad.npz")


def test_a_model_file_of_a_newer_rnnkit_is_one_line_saying_so(tmp_path):
    """A model whose meta holds an option no rnnkit so far saves (a newer one's) was 'not an rnnkit n-gram model
    (an .npz written by `rnnkit ngram train --out`)', which it is: it says a newer rnnkit wrote it."""
    NGramLM(2, level="word").fit("the cat sat on the mat\n" * 5).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "interpolation": "stupid-backoff"}))
    np.savez(tmp_path / "new.npz", **arrays)
    with pytest.raises(RnnkitError, match=r"new\.npz is an n-gram model of a newer rnnkit \(its meta holds "
                       r"'interpolation', which this one does not know\); upgrade rnnkit"):  # fmt: skip
        NGramLM.load(tmp_path / "new.npz")


@pytest.mark.parametrize("level, want", [("word", np.log(1 / 2)), ("char", np.log(1 / 4))])
def test_a_text_that_begins_as_the_training_text_is_scored_after_a_line_end(level, want):
    """ngram score reads a text after a line end (<eos>, '\\n'), and fit counted the training text's start after
    nothing: with --discount 0, 'hello world' where 'hello' only ever starts the training text was at log p = -inf.
    fit counts the text as starting a line: P(hello | <eos>) = 1/2 (of <eos> hello, <eos> foo), then each next word
    the one seen (a char model: P(h | \\n) = 1/2, P(w | 'o ') = 1/2, 'foo bar' having 'o b')."""
    text = "hello world\nfoo bar\n"
    lm = NGramLM(3, discount=0, level=level).fit(text)
    assert lm.score("hello world", "\n").log_prob == pytest.approx(want)
    assert lm.score("foo bar", "\n").log_prob == pytest.approx(want)  # (the same, a line's start)
    if level == "word":  # a text of no line end is read after nothing, as before
        assert np.isfinite(
            NGramLM(3, discount=0, level=level).fit("hello world").score("hello world").log_prob
        )


def test_save_refuses_a_token_of_a_surrogate_pair(tmp_path):
    """a token of two surrogates ('\\ud83d\\ude00', text decoded with errors='surrogatepass') was saved as JSON's two
    escapes, which load read back as the one character '😀': another model vocabulary in silence, as Vocabulary.save
    refuses; a lone surrogate still round-trips."""
    lm = NGramLM(2, level="word").fit("a \ud83d\ude00 b a b")
    with pytest.raises(
        RnnkitError, match=r"^cannot save the token '\\ud83d\\ude00': JSON reads its surrogate pair"
    ):
        lm.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    lone = NGramLM(2, level="word").fit("a caf\udce9 b a b")
    lone.save(tmp_path / "lone.npz")
    assert NGramLM.load(tmp_path / "lone.npz").vocab.itos == lone.vocab.itos


def test_a_char_model_saved_with_lower_before_it_lower_cased_scores_as_it_was_trained(tmp_path):
    """A char model trained with lower=True (ngram train --lower) by an older rnnkit kept the text's case (95ee0ec:
    lower had no effect on a char model) and was saved with lower true: its vocabulary holds 'T'. Read now, the
    text was lower-cased before scoring against those counts: 'The Cat' -11.9 nats where the file gave -7.5, in
    silence. Such a model scores texts as it was trained, case kept; one trained now lower-cases as before."""
    text = "The Cat sat on The Mat\nA Dog and The Cat\n"
    as_trained = NGramLM(2, level="char").fit(text)
    as_trained.save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as z:  # the older file: the same counts, its meta saying lower
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "lower": True}))
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    old = NGramLM.load(tmp_path / "old.npz")
    for s in ("The Cat", "the cat", "A Dog"):
        assert old.score(s).log_prob == as_trained.score(s).log_prob
    new = NGramLM(2, level="char", lower=True).fit(text)
    new.save(tmp_path / "new.npz")
    again = NGramLM.load(tmp_path / "new.npz")
    assert again.lower and again.score("The Cat").log_prob == again.score("the cat").log_prob


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney", "add-k"])
def test_an_order_far_past_the_texts_length_counts_no_empty_orders(smoothing, tmp_path):
    """-n 1000000 of a 2,400-character text ran for minutes (each order cost ~ the text's length, in fit, save,
    load and scoring, and the file held 3 arrays an order); the orders past the text's are not counted, the
    probabilities those of the order one past the text's length (the first with no m-grams)."""
    text = "abcab"
    lm, ref = NGramLM(10**4, smoothing).fit(text), NGramLM(len(text) + 1, smoothing).fit(text)
    for held_out, context in (("abcabcab", ""), ("ba", "abca"), ("cc", "")):
        assert lm.score(held_out, context).log_prob == ref.score(held_out, context).log_prob
    a, b, c = (lm.vocab.stoi[t] for t in "abc")
    for history in ([], [a], [a, b, c, a, b], [c, a, b, c, a, b, c, a]):
        np.testing.assert_array_equal(lm.next_distribution(history), ref.next_distribution(history))
    assert lm.sample(30, seed=3) == ref.sample(30, seed=3) and lm.complete("ab", 9) == ref.complete("ab", 9)
    lm.save(tmp_path / "m.npz")
    assert (tmp_path / "m.npz").stat().st_size < 20_000
    again = NGramLM.load(tmp_path / "m.npz")
    assert again.n == 10**4 and again.score("abcabcab").log_prob == ref.score("abcabcab").log_prob


def test_an_order_past_a_64_bit_integer_is_refused_where_it_is_given():
    """NGramLM(2**64) was taken, fitted and saved, and scoring it failed inside numpy ('Python int too large to
    convert to C long'); 2**63 - 1, the largest order numpy holds, scores as any order past the text's length."""
    text = "abcab"
    for n in (2**63, 2**64, 10**5000):
        with pytest.raises(
            RnnkitError, match=r"^n \(the n-gram order\) .* is too large \(past a 64-bit integer"
        ):
            NGramLM(n)
    lm, ref = NGramLM(2**63 - 1).fit(text), NGramLM(len(text) + 1).fit(text)
    assert lm.score("abcabcab", "ba").log_prob == ref.score("abcabcab", "ba").log_prob
    assert lm.complete("ab", 9) == ref.complete("ab", 9)


class _NoLineEnd:
    """A vocabulary as fit_ids saw one before 3615df4: no line end to count the text's start after."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __len__(self):
        return len(self.vocab)

    def __contains__(self, token):
        return False


@pytest.mark.parametrize("level", ["char", "word"])
def test_a_model_file_counted_as_an_older_rnnkit_counted_is_refused_or_read_as_now(level, tmp_path):
    """A model file of an rnnkit before 3615df4, which counted the text's start after nothing, loaded and gave the
    training text's first words P = 0 with --discount 0 ('hello world': log p = -inf, where a model trained now
    gives log(1/2)): it is refused in one line naming the fix. One of a text of no line end before 6807c96 (the
    first m-gram's continuation count 0, also -inf) is read with the counts of now, the same numbers."""
    text = "hello world\nfoo bar\n"
    old = NGramLM(3, discount=0, level=level)
    old.vocab = NGramLM(3, level=level).fit(text).vocab
    vocab, old.vocab = old.vocab, _NoLineEnd(old.vocab)
    tokens = list(text) if level == "char" else text.replace("\n", " <eos> ").split()
    old.fit_ids(np.array(vocab.encode(tokens)))
    old.vocab = vocab
    old.save(tmp_path / "old.npz")
    with pytest.raises(RnnkitError, match=r"^\S*old\.npz was written by an older rnnkit, .*; train it again with "
                       r"`rnnkit ngram train`$"):  # fmt: skip
        NGramLM.load(tmp_path / "old.npz")
    one_line = "hello world foo"  # no line end: counted as now, but for the first word's continuation count
    now = NGramLM(3, discount=0, level=level).fit(one_line)
    now.save(tmp_path / "now.npz")
    with np.load(tmp_path / "now.npz") as z:
        arrays = dict(z)
    first = now.vocab.stoi["h" if level == "char" else "hello"]
    arrays["cont1"][np.searchsorted(arrays["keys1"], first)] = 0  # as 6807c96's parent wrote it
    np.savez_compressed(tmp_path / "older.npz", **arrays)
    older = NGramLM.load(tmp_path / "older.npz")
    for s in ("hello world", "world foo", one_line):
        assert older.score(s).log_prob == now.score(s).log_prob > -np.inf


@pytest.mark.parametrize(
    "options, said",
    [
        (dict(smoothing="modified-kneser-ney", discount=0.5), "makes modified-kneser-ney plain kneser-ney"),
        (
            dict(smoothing="kneser-ney", k=2.0),
            "k is the add-k pseudo-count, not used by smoothing='kneser-ney'",
        ),
        (dict(smoothing="modified-kneser-ney", k=2.0), "not used by smoothing='modified-kneser-ney'"),
        (
            dict(smoothing="add-k", discount=0.5),
            "discount is for Kneser-Ney smoothing, not smoothing='add-k'",
        ),
    ],
)
def test_options_the_smoothing_does_not_use_are_refused_and_old_files_read_as_before(tmp_path, options, said):
    """NGramLM(3, smoothing='modified-kneser-ney', discount=0.5) used the one D = 0.5 for every count (kneser-ney's
    model; D[3] [0, 0.5, 0.5, 0.5]) and k= or add-k's discount= did nothing, in silence, where the CLI refuses each.
    A file saved so by an older rnnkit still loads, with its numbers."""
    with pytest.raises(RnnkitError, match=said):
        NGramLM(3, **options)
    text = "the cat sat on the mat\nthe dog sat\n"
    old = NGramLM(3, smoothing="kneser-ney" if "k" in options else options["smoothing"], level="word")
    old.__dict__.update(options, k=options.get("k", 1.0))  # as the older constructor kept them
    old.fit(text).save(tmp_path / "old.npz")
    again = NGramLM.load(tmp_path / "old.npz")
    assert again.score("the cat sat").log_prob == old.score("the cat sat").log_prob
    assert NGramLM(3, smoothing="add-k", level="word").k == 1.0  # k=None: add-one


@pytest.mark.parametrize("text", ["\n\n", "<unk> <unk>\n"])
def test_a_model_of_a_text_with_no_words_does_not_say_lower_min_freq(text):
    """A word model of blank lines (or of the word <unk> alone) said 'every one was rarer than its min_freq 1; train
    it again with a lower --min-freq', a fix there is none of. It names the text now; min_freq's case is as before."""
    lm = NGramLM(2, level="word").fit(text)
    with pytest.raises(
        RnnkitError, match=r"knows no word but <unk> \(its training text holds no word but line ends"
    ):
        lm.sample(3)
    with pytest.raises(
        RnnkitError, match=r"rarer than its min_freq 5\); train it again with a lower --min-freq"
    ):
        NGramLM(2, level="word", min_freq=5).fit("a b\n").sample(3)


def test_a_fit_refused_for_memory_keeps_the_model_fitted_before_whole(monkeypatch):
    """A fit whose n-grams can't fit in memory puts the counts of the model fitted before back; fit had already
    replaced the vocabulary by the new text's, so the old counts were read through other ids: 'the cat' scored
    -25.05 nats where the model fitted before (and one fitted afresh on its text) says -3.65."""
    from rnnkit.text import ngram

    a, b = "the cat sat on the mat\n" * 3, "zebra yak xylophone walrus vole " * 40
    lm, ref = NGramLM(n=3).fit(a), NGramLM(n=3).fit(a)
    monkeypatch.setattr(ngram, "_memory", lambda: 100)
    with pytest.raises(RnnkitError, match="give a smaller n"):
        lm.fit(b)
    assert lm.vocab.itos == ref.vocab.itos
    assert lm.score("the cat") == ref.score("the cat")
    fresh = NGramLM(n=3)
    with pytest.raises(RnnkitError, match="give a smaller n"):
        fresh.fit(b)
    assert getattr(fresh, "vocab", None) is None  # (as before any fit: fit_ids says to set it)


@pytest.mark.parametrize("error", [MemoryError, KeyboardInterrupt])
def test_a_fit_that_fails_while_counting_keeps_the_model_fitted_before_whole(monkeypatch, error):
    """A fit whose counting fails past the memory bound (a MemoryError: the bound is the fewest n-grams) or is
    interrupted (^C) puts the model fitted before back, as one refused for memory does: it was left half counted, the
    new text's vocabulary over one order of its counts, and score raised IndexError."""
    from rnnkit.text import ngram

    a, b = "the cat sat on the mat\n" * 3, "zebra yak xylophone walrus vole " * 40
    lm, ref, fresh = NGramLM(n=3).fit(a), NGramLM(n=3).fit(a), NGramLM(n=3)
    unique, calls = ngram._unique, []

    def failing(*args, **kwargs):  # (the second order's counting fails)
        calls.append(1)
        if len(calls) % 2 == 0:
            raise error
        return unique(*args, **kwargs)

    monkeypatch.setattr(ngram, "_unique", failing)
    for m in (lm, fresh):
        with pytest.raises(error):
            m.fit(b)
    monkeypatch.undo()
    assert lm.vocab.itos == ref.vocab.itos
    assert lm.score("the cat") == ref.score("the cat")
    assert not {"vocab", "keys", "count", "cont", "total"} & set(vars(fresh))


def test_a_char_fit_counts_in_about_40_bytes_a_character_not_100():
    """A char fit made list(text) (8 bytes a character), Vocabulary.encode's list of ids and an int64 array of them,
    and per order a full-length context array, its mask, two masked copies, their keys and np.unique's temporaries:
    its peak was ~92 bytes a character (a 28 MB text, 2.55 GB of RSS). Its ids come from the code points now (int32),
    and an order holds the ids of the order before, its keys and their sort; the model it fits is the same."""
    import tracemalloc

    text = "".join(f"{i * 7919 % 100003} the {i % 97} cat sat\n" for i in range(6000))  # (150k characters)
    tracemalloc.start()
    try:
        lm = NGramLM(5).fit(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 55 * len(text), f"{peak:,} bytes, {peak / len(text):.1f} a character"
    ids = np.array([lm.vocab.stoi[c] for c in "\n" + text])  # (counted after a line end)
    keys, counts = np.unique(np.lib.stride_tricks.sliding_window_view(ids, 5), axis=0, return_counts=True)
    assert len(lm.keys[5]) == len(keys) and sorted(lm.count[5].tolist()) == sorted(counts.tolist())


def test_a_word_fit_numbers_the_words_as_read_not_in_a_list_of_every_word():
    """A word fit made the list of every word of the text (a str and a pointer each, ~60 bytes a word; Python's
    list of lines beside it), counted it and looked every word up: Penn Treebank's train file 5 times (4.6M words)
    peaked at 594 MB of RSS, 128 bytes a word. The words are numbered line by line as they are read, into an int32
    array, and counted from it; the vocabulary and the n-grams are those of the words' list."""
    import tracemalloc

    words = [f"w{i * 7919 % 3001}" for i in range(40_000)] + ["Σίσυφος", "中文", "<unk>", "<EOS>"]
    text = "\n".join(" ".join(words[i : i + 20]) for i in range(0, len(words), 20)) + "\r\n\n the end"
    *lines, last = text.split("\n")
    tokens = [t for line in lines for t in [*line.split(), "<eos>"]] + last.split()
    tracemalloc.start()
    try:
        lm = NGramLM(3, level="word").fit(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 75 * len(tokens), f"{peak:,} bytes, {peak / len(tokens):.1f} a word"
    counts = collections.Counter(tokens)  # (ids by descending count, ties as first seen; <unk> is 0)
    assert lm.vocab.itos == ["<unk>", *sorted((t for t in counts if t != "<unk>"), key=lambda t: -counts[t])]
    assert lm.vocab.counts == [counts["<unk>"], *(counts[t] for t in lm.vocab.itos[1:])]
    trigrams = collections.Counter(zip(["<eos>", *tokens], tokens, tokens[1:]))  # (counted after a line end)
    assert sorted(lm.count[3].tolist()) == sorted(trigrams.values())


def test_a_long_line_is_split_into_words_in_pieces_as_it_is_whole(monkeypatch):
    """A line longer than WORD_PIECE characters is split into words a piece at a time, cut at white space: the same
    words, lower-cased alike (Greek's final sigma looks at the letters beside it), as text_tokens makes of it."""
    from rnnkit.text import ngram

    text = "ΟΔΥΣΣΕΥΣ  İstanbul\tσΣ a\u2028b\x1cc ΣΑΣ\r\n<EOS> x" * 5 + "\n\nΣ"
    want = {lower: NGramLM(3, level="word", lower=lower).fit(text) for lower in (False, True)}
    monkeypatch.setattr(ngram, "WORD_PIECE", 3)
    for lower, ref in want.items():
        words = [t for line in ngram._word_lines(text, lower) for t in line]
        assert words == ngram.text_tokens(text, "word", lower)
        lm = NGramLM(3, level="word", lower=lower).fit(text)
        assert lm.vocab.to_dict() == ref.vocab.to_dict()
        for m in (1, 2, 3):
            assert np.array_equal(lm.keys[m], ref.keys[m]) and np.array_equal(lm.count[m], ref.count[m])


@pytest.mark.parametrize("level, most", [("word", 30), ("char", 20)])
def test_score_reads_a_big_text_through_numpy_not_lists_of_tokens_and_ids(monkeypatch, level, most):
    """score encoded its text as the list of its tokens, a copy of that list and the list of their ids (~75 bytes a
    word, 24 a character), put the context's ids before them in another array and concatenated the parts' log p's:
    `rnnkit ngram eval` of PTB's train file 5 times peaked at 577 MB of RSS. The ids come from numpy as fit's do, the
    log p's are written into one array; the sum is bit for bit that of one log_probs call."""
    import tracemalloc

    from rnnkit.text import ngram

    monkeypatch.setattr(ngram, "SCORE_CHUNK", 2048)  # (a big text's parts: the parts' own arrays stay small)
    words = [f"w{i * 7919 % 3001}" for i in range(40_000)]
    text = "\n".join(" ".join(words[i : i + 20]) for i in range(0, len(words), 20)) + "\n中 <unk> É\r\n"
    lm = NGramLM(3, level=level).fit(text[:20_000])
    *lines, last = text.split("\n")
    tokens = [t for line in lines for t in [*line.split(), "<eos>"]] + last.split()
    tokens = list(text) if level == "char" else tokens
    ids = np.array([lm.vocab.stoi.get(t, 0) for t in tokens])
    tracemalloc.start()
    try:
        s = lm.score(text, "\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < most * len(tokens), f"{peak:,} bytes, {peak / len(tokens):.1f} a {level}"
    assert lm.encode(text).dtype == np.int64 and np.array_equal(lm.encode(text), ids)
    want = lm.log_probs(ids, lm.encode("\n")).sum()
    assert (s.tokens, s.log_prob.hex()) == (len(tokens), float(want).hex())


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_number_past_floats_range_is_refused_in_one_line_by_ngram(value):
    """A Python int is a Real: NGramLM(smoothing='add-k', k=10**400) passed 0 < k < inf and failed in float(k) with a
    bare "OverflowError: int too large to convert to float"; sample(temperature=10**400) and generate(alpha=10**400)
    failed in numpy's isfinite with "ufunc 'isfinite' not supported for the input types". Each is one line now, and a
    temperature of 2**64, which a float holds, samples (near uniformly) as 1e19 does."""
    with pytest.raises(RnnkitError, match="add-k needs a finite k > 0"):
        NGramLM(2, smoothing="add-k", k=value)
    lm = NGramLM(2).fit("abcabcabd")
    with pytest.raises(RnnkitError, match="temperature must be a number > 0"):
        lm.sample(3, temperature=value)
    with pytest.raises(RnnkitError, match="alpha .* must be a number > 0"):
        lm.generate("a", 3, alpha=value)
    assert lm.sample(20, temperature=2**64, seed=1) == lm.sample(20, temperature=float(2**64), seed=1)


def test_generate_takes_an_alpha_of_any_real_a_float_holds():
    """alpha=Fraction(1, 3), a Real that finite_real takes (4771df8), reached pick_next as a Fraction: alpha·log p was
    an array of objects and np.exp failed with "TypeError: loop of ufunc does not support argument 0 of type float
    which has no callable exp method". It samples as its float does (np.float32's too, as before)."""
    lm = NGramLM(2).fit("abcabcabd")
    for alpha in (Fraction(1, 3), np.float32(0.5), np.int64(2), 2**64):
        assert lm.generate("a", 20, alpha=alpha, seed=1) == lm.generate("a", 20, alpha=float(alpha), seed=1)


@pytest.mark.parametrize(
    "tiny", [Fraction(1, 10**400), np.longdouble("1e-400")], ids=["Fraction", "longdouble"]
)
def test_a_positive_number_that_is_0_as_a_float_is_refused_in_one_line(tiny):
    """A Real > 0 below float's least passed the checks of k, alpha and temperature, which read it exactly, and was
    then taken as its float, 0: add-k with k = 0 (-inf scores, NaN after an unseen history), generate's
    0·(-inf) = NaN ('ValueError: Probabilities contain NaN'), and sample's 1.0 / temperature a ZeroDivisionError
    (of a Fraction; a numpy scalar's 1/temperature overflowed with numpy's warning, an error under -W error, or
    was said as alpha, which the caller never gave). Each is one line naming the number as too small."""
    with pytest.raises(
        RnnkitError, match=r"add-k's k .* is too small: it is 0 as a float; give 1e-300 or more$"
    ):
        NGramLM(2, smoothing="add-k", k=tiny)
    lm = NGramLM(2).fit("abcabcabd")
    with pytest.raises(
        RnnkitError, match=r"^alpha .* is too small: it is 0 as a float; give 1e-300 or more, or None"
    ):
        lm.generate("a", 3, alpha=tiny)
    for temperature in (tiny, np.float64(1e-320), np.longdouble("1e-320")):
        with pytest.raises(
            RnnkitError, match=r"^temperature .* is too small: 1/temperature is beyond float64"
        ):
            lm.sample(3, temperature=temperature)
    assert lm.sample(20, temperature=np.float32(0.3), seed=1) == lm.generate("", 20, 1.0 / np.float32(0.3), 1)


def _drawn(lm, prefix, length, alpha, seed):
    """generate's reference: each token from P(w | the last n-1 ids) of next_distribution, <unk> left out and the
    rest renormalised, its argmax (alpha None) or pick_next's draw."""
    from rnnkit.text.lmscore import pick_next

    ids, out, rng = list(lm.encode(prefix)), [], np.random.default_rng(seed)
    for _ in range(length):
        p = lm.next_distribution(ids[max(len(ids) - (lm.n - 1), 0) :] if lm.n > 1 else [])
        p[0] = 0.0
        ids.append(int(np.argmax(p)) if alpha is None else pick_next(p / p.sum(), alpha, rng))
        out.append(ids[-1])
    return lm.decode(out)


def test_complete_and_generate_read_the_whole_prefix_however_short():
    """complete appends argmax_w P(w | the n-1 tokens before) at each step, generate draws from it: a prefix of
    fewer than n-1 tokens is all history (ids[len(ids) - (n-1):] of 'ec' and n = 4 was ids[-1:], 'c' alone:
    complete('ec', 3) was complete('c', 3), 'aab', where P(c | ec) = 0.29 is the likeliest), and the history grows
    to n-1 tokens as they are written; complete is greedy, not a sample."""
    text = "".join(np.random.default_rng(0).choice(list("abcde"), 400, p=[0.4, 0.2, 0.2, 0.1, 0.1]))
    for n in (2, 3, 4):
        lm = NGramLM(n).fit(text)
        for prefix in ("", "a", "ec", "bdca"):
            assert lm.complete(prefix, 20) == _drawn(lm, prefix, 20, None, 0), (n, prefix)
            assert lm.generate(prefix, 20, 0.7, seed=3) == _drawn(lm, prefix, 20, 0.7, 3), (n, prefix)
    lm = NGramLM(4).fit(text)
    assert lm.complete("ec", 1) == "c" and lm.complete("c", 1) == "a"
    # (a sample of this model is no argmax chain)
    assert lm.complete("", 20) != lm.generate("", 20, alpha=1.0)


@pytest.mark.parametrize("smoothing", ["kneser-ney", "modified-kneser-ney"])
def test_discounts_of_counts_no_m_gram_has_are_y_a_half_where_n1_and_n2_are_0(smoothing):
    """With n1 = n2 = 0 (every bigram of 'abab...' occurs 9 or 10 times) Y = n1 / (n1 + 2 n2) is taken as 0.5, as
    the docstring says, and a modified discount D_r whose n_r = 0 is Y: each 0.5 here (1.0, clipped to 0.95, and the
    bound 0.05 are what a Y of 1 or a D_r of 0 give)."""
    lm = NGramLM(2, smoothing).fit("ab" * 10)
    assert sorted(lm.count[2].tolist()) == [9, 10]
    assert lm.D[2].tolist() == [0.0, 0.5, 0.5, 0.5]
    lm = NGramLM(2, smoothing).fit("aaaaaabab")  # ab twice, ba once, aa 5 times: n1 = n2 = 1, n3 = n4 = 0
    assert sorted(lm.count[2].tolist()) == [1, 2, 5]
    Y = 1 / 3  # D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = Y (n3 = 0)
    want = [Y] * 3 if smoothing == "kneser-ney" else [1 - 2 * Y, 2 - 3 * Y * 0, Y]
    assert lm.D[2][1:] == pytest.approx(np.clip(want, 0.05, [0.95, 1.95, 2.95]))


def test_add_k_of_a_context_longer_than_the_text_is_uniform():
    """add-k reads the n-1 tokens before w however short the training text: a context of 2 tokens that 'ab' never
    had is (0 + k) / (0 + k V) = 1/V for every w (not the bigram's estimate, which a backoff would give)."""
    lm = NGramLM(5, "add-k").fit("ab")
    a, b = lm.vocab.stoi["a"], lm.vocab.stoi["b"]
    V = len(lm.vocab)
    np.testing.assert_allclose(lm.next_distribution([b, a]), 1 / V, rtol=1e-15)
    np.testing.assert_allclose(np.exp(lm.log_probs(np.array([a, b, a, b]))[2:]), 1 / V, rtol=1e-15)


def test_a_generated_word_text_starts_each_line_without_a_space():
    """generate writes its words as decode writes them: one space apart, and none after a line end (' the' began
    each line after the first)."""
    lm = NGramLM(3, level="word").fit(TEXT)
    for seed in range(3):
        s = lm.sample(40, seed=seed)
        assert "\n" in s and "\n " not in s and not s.startswith(" ")
        assert lm.decode(lm.encode(s)) == s


def test_a_word_model_with_lower_lower_cases_the_text_it_scores():
    """lower=True lower-cases the words of a text scored as those of the training text: 'The Cat' is 'the cat'."""
    lm = NGramLM(2, level="word", lower=True).fit("The cat sat\nthe Cat ran\n")
    assert "The" not in lm.vocab and "cat" in lm.vocab
    assert list(lm.encode("The CAT")) == list(lm.encode("the cat")) == lm.vocab.encode(["the", "cat"])
    assert lm.score("The CAT sat").log_prob == lm.score("the cat sat").log_prob


def test_fit_ids_of_ids_without_the_line_end_counts_them_after_nothing():
    """fit_ids counts x after a line end only where x holds one: a vocabulary that knows '\\n' and ids without it
    are counted from their start as they are (one more '\\n' before them was counted, and taken off again)."""
    ref = NGramLM(2).fit("ab\nba\n")
    m = NGramLM(2)
    m.vocab = ref.vocab
    x = np.array(ref.vocab.encode(list("abba")))
    m.fit_ids(x)
    assert m.keys[1].tolist() == sorted(set(x.tolist()))
    assert m.count[1].tolist() == [2, 2]
    assert sorted(m.count[2].tolist()) == [1, 1, 1]  # ab, bb, ba


def test_a_model_of_line_ends_alone_does_not_say_min_freq_whatever_min_freq():
    """A word model of blank lines knows no word whatever its min_freq: no word was rarer than it (<unk> counts
    none), so the error names the text, not min_freq, at min_freq 3 as at 1."""
    lm = NGramLM(2, level="word", min_freq=3).fit("\n\n\n\n")
    assert lm.vocab.counts[0] == 0
    with pytest.raises(RnnkitError, match=r"its training text holds no word but line ends and <unk>\)"):
        lm.sample(3)


@pytest.mark.parametrize("level, want", [("char", list("ab c\n")), ("word", ["ab", "c", "<eos>", "d"])])
def test_text_tokens_lower_cases_at_either_level(level, want):
    from rnnkit.text.ngram import text_tokens

    assert text_tokens("AB C\nD" if level == "word" else "AB C\n", level, lower=True) == want
    assert text_tokens("Ab", level) == (["A", "b"] if level == "char" else ["Ab"])


def test_a_tiny_temperature_samples_among_tokens_equally_likely():
    """p^(1/T) with T = 1e-308 leaves the likeliest tokens, each as likely as the others where they tie: a uniform
    unigram model's sample holds several of them, not the first one's argmax again and again."""
    lm = NGramLM(1).fit("abcd" * 10)
    for temperature in (1e-308, 1e-200):
        s = lm.sample(40, temperature=temperature, seed=0)
        assert len(set(s)) >= 3 and set(s) <= set("abcd")
