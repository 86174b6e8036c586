import re
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from rnnkit.errors import RnnkitError
from rnnkit.text import Word2Vec, WordVectors, w2v_native
from rnnkit.text.word2vec import negative_sampling_loss_grads, softmax_loss_grads


def test_full_softmax_gradients_match_autograd():
    torch.manual_seed(0)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    V_out = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 6, 3, 1])
    J, dh, dV = softmax_loss_grads(h.detach(), V_out.detach(), target)
    J_ref = torch.nn.functional.cross_entropy(h @ V_out.T, target, reduction="sum")
    J_ref.backward()
    assert J.item() == pytest.approx(J_ref.item())
    torch.testing.assert_close(dh, h.grad)
    torch.testing.assert_close(dV, V_out.grad)


def test_full_softmax_loss_of_a_confident_miss_is_finite():
    """J was -log of the softmax probability, which underflows to 0 in float32 for a score 200 below the best:
    the loss read inf (and loss_is_finite() False) where cross-entropy is 200 nats."""
    h, V_out, target = torch.tensor([[10.0]]), torch.tensor([[10.0], [-10.0], [0.0]]), torch.tensor([1])
    J, dh, _ = softmax_loss_grads(h, V_out, target)
    assert J.item() == pytest.approx(
        torch.nn.functional.cross_entropy(h @ V_out.T, target, reduction="sum").item()
    )
    assert dh.item() == pytest.approx(20.0)


def test_negative_sampling_gradients_match_autograd():
    torch.manual_seed(1)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(5, 3, dtype=torch.float64)
    mask[2, 1] = 0
    J, dh, dv = negative_sampling_loss_grads(h.detach(), v.detach(), mask)
    s = torch.einsum("bke,be->bk", v, h)
    sign = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    J_ref = -(torch.nn.functional.logsigmoid(s * sign) * mask).sum()
    J_ref.backward()
    assert J.item() == pytest.approx(J_ref.item())
    torch.testing.assert_close(dh, h.grad)
    torch.testing.assert_close(dv, v.grad)


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("update", ["word2vec", "gradient"])
def test_cbow_moves_its_context_vectors_by_the_rule_asked_for(mean, update):
    """CBOW's context vectors moved by the exact gradient only, (1/m) dJ/dh each with the mean: m times less than
    word2vec.c's and gensim's step, which learned visibly worse vectors at their settings (PTB, WordSim-353
    Spearman 0.10 against gensim's 0.16). cbow_update="word2vec" (the default) moves each by dJ/dh with the mean and
    by dJ/dh / m with the sum, as they do; "gradient" by dJ/du_c, checked here against autograd."""
    g = torch.Generator().manual_seed(0)
    V, E, lr = 6, 4, 0.1
    m = Word2Vec(
        model="cbow", loss="softmax", backend="torch", dimension=E, cbow_mean=mean, cbow_update=update
    )
    m.U, m.V_out = torch.randn(V, E, generator=g), torch.randn(V, E, generator=g)
    w, ctx = torch.tensor([0, 1, 2]), torch.tensor([[1, 2, 3, 4], [0, 5, -1, -1], [3, -1, -1, -1]])
    U = m.U.clone().double().requires_grad_()
    J_sum, U_expected = 0.0, m.U.double().clone()
    for p in range(3):
        rows = ctx[p][ctx[p] >= 0]
        n = len(rows)
        h = (U[rows].sum(0) / (n if mean else 1)).detach().requires_grad_()
        J = torch.nn.functional.cross_entropy((h @ m.V_out.double().T)[None], w[p : p + 1])
        (dh,) = torch.autograd.grad(J, h)
        step = 1.0 if mean else 1.0 / n  # word2vec.c's (gensim's cbow_mean=0: the error over m)
        U_expected.index_add_(0, rows, dh.expand(n, E), alpha=-lr * step)
        J_sum = J_sum + torch.nn.functional.cross_entropy(
            ((U[rows].sum(0) / (n if mean else 1)) @ m.V_out.double().T)[None], w[p : p + 1]
        )
    if update == "gradient":
        (dU,) = torch.autograd.grad(J_sum, U)
        U_expected = U.detach() - lr * dU
    m._step(w, ctx, lr, False)
    torch.testing.assert_close(m.U.double(), U_expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mean", [True, False])
def test_cbow_with_word2vecs_update_trains_a_tiny_vocabulary_on_the_torch_backend(mean):
    """word2vec's rule moves each of a row's m context vectors by the whole dJ/dh (the mean; the sum moves the output
    vectors by m times a pair's): batches of 256 rows, the floor for pairs, summed m times a pair's updates per word
    on a 3-word vocabulary, and the default settings diverged ('loss rose from 3.02 to inf'). Such a row counts as
    m pairs in the batch now."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.integers(0, 3, 10)] for _ in range(300)]
    m = Word2Vec(model="cbow", backend="torch", min_count=1, dimension=10, epochs=3, sample=0, cbow_mean=mean)
    assert m.fit(sentences).loss_is_finite() and m.loss_history[-1] < m.loss_history[0]
    assert m._batch_pairs() == 256 // 10  # rows of 10 context slots (window 5)


def test_the_cbow_options_are_refused_without_cbow(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    for flags in (["--cbow-sum"], ["--cbow-update", "gradient"]):
        r = subprocess.run([sys.executable, "-m", "rnnkit", "word2vec", str(corpus), "--out", str(tmp_path / "o"),
                            *flags], capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"rnnkit: error: {flags[0]} is an option of CBOW; add --model cbow or leave it out"
        ], r.stderr
    with pytest.raises(RnnkitError, match="cbow_update must be word2vec or gradient, got 'exact'"):
        Word2Vec(cbow_update="exact")


def planted_corpus(seed=0, groups=5, size=4, sentences=600, length=8):
    """Words g{k}w{i}; each sentence uses the words of one group only."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sentences):
        k = rng.integers(groups)
        out.append([f"g{k}w{i}" for i in rng.integers(size, size=length)])
    return out


@pytest.mark.parametrize(
    "model, loss",
    [("skip-gram", "negative"), ("cbow", "negative"), ("skip-gram", "softmax"), ("cbow", "softmax")],
)
def test_finds_the_planted_neighbours(model, loss):
    config = dict(
        model=model, loss=loss, dimension=16, window=3, min_count=1, epochs=5, sample=0, batch_size=64
    )
    config["backend"] = "torch"  # the native loop has its own tests below
    config["alpha"] = 0.05 if loss == "negative" else 0.1
    w2v = Word2Vec(**config).fit(planted_corpus())
    assert w2v.loss_is_finite() and w2v.loss_history[-1] < w2v.loss_history[0]
    for k in range(5):
        near = [w for w, _ in w2v.wv.neighbours(f"g{k}w0", topn=3)]
        assert all(w.startswith(f"g{k}") for w in near), (k, near)


def test_seeded_runs_are_reproducible():
    config = dict(dimension=8, window=2, min_count=1, epochs=1, batch_size=64, sample=1e-2, backend="torch")
    a = Word2Vec(**config, seed=3).fit(planted_corpus()).wv.vectors
    b = Word2Vec(**config, seed=3).fit(planted_corpus()).wv.vectors
    c = Word2Vec(**config, seed=4).fit(planted_corpus()).wv.vectors
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_seed_draws_the_initial_vectors_and_the_windows(monkeypatch):
    """The seed seeds both generators: torch's, which draws the initial vectors u ~ (U[0, 1) - 0.5) / E (word2vec.c's
    init, read here after a run at a rate of 1e-30, which leaves them as they were), and numpy's, which draws the
    windows and the order of the pairs. Another seed draws other vectors and other pairs; the same seed the same."""
    drawn, pairs = [], Word2Vec._pairs
    monkeypatch.setattr(Word2Vec, "_pairs", lambda self, *a: drawn.append(pairs(self, *a)) or drawn[-1])
    config = dict(min_count=1, dimension=8, epochs=1, sample=0, alpha=1e-30, min_alpha=0, backend="torch")
    U = [Word2Vec(**config, seed=seed).fit(planted_corpus()).U for seed in (3, 3, 4)]
    assert torch.equal(U[0], U[1]) and not torch.equal(U[0], U[2])
    x = U[0] * 8  # E u: uniform on [-0.5, 0.5), of standard deviation 1 / sqrt(12)
    assert 0.49 < x.abs().max() <= 0.5 and abs(float(x.std()) * 12**0.5 - 1) < 0.1
    same, other = (all(np.array_equal(a, b) for a, b in zip(drawn[0], d)) for d in drawn[1:])
    assert same and not other


def test_analogy_similarity_and_unknown_words():
    words = ["king", "queen", "man", "woman", "apple"]
    X = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1], [5, -3, -3]], dtype=np.float32)
    wv = WordVectors(words, X)
    assert wv.analogy("king", "man", "woman")[0][0] == "queen"
    assert wv.similarity("man", "man") == pytest.approx(1.0)
    with pytest.raises(RnnkitError, match="'pear'"):
        wv.neighbours("pear")


def test_excluded_words_are_never_listed_however_large_topn():
    words = ["king", "queen", "man", "woman"]
    wv = WordVectors(words, np.random.default_rng(0).standard_normal((4, 5)))
    assert [w for w, _ in wv.neighbours("king", topn=10)] == [w for w, _ in wv.neighbours("king", topn=3)]
    assert sorted(w for w, _ in wv.neighbours("king", topn=10)) == ["man", "queen", "woman"]
    assert [w for w, _ in wv.analogy("king", "man", "woman", topn=4)] == ["queen"]


def test_the_given_words_are_never_listed_by_most_similar_or_cosmul_however_large_topn():
    """most_similar and most_similar_cosmul leave out every word given, positive and negative (as gensim's), even where
    topn asks for the whole vocabulary: a word given as negative is still a word of the list's vocabulary."""
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(12)]
    wv = WordVectors(words, rng.standard_normal((12, 5)))
    for positive, negative in [(["w3", "w5"], ["w7"]), (["w0"], ["w1", "w2"]), ([], ["w4"])]:
        for method in (wv.most_similar, wv.most_similar_cosmul):
            listed = [w for w, _ in method(positive, negative, topn=12)]
            assert sorted(listed) == sorted(set(words) - {*positive, *negative}), (method.__name__, listed)


def test_words_of_equal_cosine_are_listed_in_the_vocabularys_order():
    """Words whose vectors point the same way tie: they are listed in the order of the vocabulary (its more frequent
    word first), as evaluate_analogies' argmax takes the earlier of tied words, whatever the number of words (numpy's
    default sort, not stable, mixes tied entries past 16)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4))[rng.permutation(np.repeat(np.arange(10), 4))]  # 40 words, 4 a vector
    wv = WordVectors([f"w{i}" for i in range(40)], X)
    for listed in (wv.nearest(X[0] + 0.1 * X[1], topn=40), wv.neighbours("w5", topn=39)):
        order = [(-score, int(w[1:])) for w, score in listed]
        assert order == sorted(order)


def test_neighbours_and_analogy_list_gensims_default_counts():
    """Without topn, neighbours, most_similar and most_similar_cosmul list 10 words (gensim's topn=10) and analogy its
    one answer (the word of a - b + c)."""
    wv = WordVectors([f"w{i}" for i in range(20)], np.random.default_rng(2).standard_normal((20, 4)))
    assert len(wv.neighbours("w0")) == len(wv.most_similar("w0")) == len(wv.most_similar_cosmul("w0")) == 10
    assert len(wv.nearest(wv["w0"])) == 10 and len(wv.analogy("w0", "w1", "w2")) == 1


def test_a_list_of_words_gives_their_vectors_as_rows():
    """wv[["queen", "king"]] (as gensim's KeyedVectors takes it) was 'unhashable type: list' from the lookup."""
    words = ["king", "queen", "man", "woman"]
    wv = WordVectors(words, np.random.default_rng(0).standard_normal((4, 5)))
    np.testing.assert_array_equal(wv[["queen", "king"]], np.stack([wv["queen"], wv["king"]]))
    assert wv[[]].shape == (0, 5)
    with pytest.raises(RnnkitError, match="unknown word.*'pear'"):
        wv[["king", "pear"]]


def test_an_unknown_word_held_in_another_case_is_named():
    """The vocabulary is case-sensitive: 'King' where the vectors hold 'king' said only "unknown word"."""
    wv = WordVectors(["king", "Paris", "man"], np.random.default_rng(0).standard_normal((3, 5)))
    with pytest.raises(
        RnnkitError, match=r"case-sensitive; it holds 'king' for 'King', 'Paris' for 'paris'\)$"
    ):
        wv[["King", "paris", "pear"]]
    with pytest.raises(RnnkitError, match=r"unknown word\(s\) 'pear': not in the 3-word vocabulary$"):
        wv["pear"]


def test_nearest_excludes_words_or_row_ids():
    """exclude took row ids only: words (as gensim's most_similar takes) ended in an IndexError traceback."""
    words = ["king", "queen", "man", "woman"]
    wv = WordVectors(words, np.random.default_rng(0).standard_normal((4, 5)))
    by_id = wv.nearest(wv["king"], exclude=[0, 2])
    assert wv.nearest(wv["king"], exclude=["king", "man"]) == by_id
    assert wv.nearest(wv["king"], exclude=np.array([0, 2])) == by_id
    assert sorted(w for w, _ in by_id) == ["queen", "woman"]
    with pytest.raises(RnnkitError, match="unknown word.*'pear'"):
        wv.nearest(wv["king"], exclude=["pear"])
    for bad in (4, -1, 1.0):
        with pytest.raises(RnnkitError, match=r"exclude takes words, or row ids 0\.\.3; got"):
            wv.nearest(wv["king"], exclude=[bad])


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_formats_round_trip_and_load_in_gensim(tmp_path, binary):
    rng = np.random.default_rng(0)
    words = [
        "the",
        "caf\u00e9",
        "<unk>",
        "N",
        "a\x85b",
        "c\u2028d",
        "e\x1cf",
    ]  # not white space in the format
    wv = WordVectors(words, rng.standard_normal((7, 5)).astype(np.float32) / 3)
    path = tmp_path / ("v.bin" if binary else "v.txt")
    wv.save(path, binary=binary)
    again = WordVectors.load(path)  # text split by str.splitlines broke at \x85; 6 digits lost float32 bits
    assert again.words == wv.words
    np.testing.assert_array_equal(again.vectors, wv.vectors)
    gensim_models = pytest.importorskip("gensim.models", reason="gensim is not installed (dev extra)")
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == wv.words
    np.testing.assert_allclose(kv["caf\u00e9"], wv["caf\u00e9"], rtol=1e-5)


@pytest.mark.parametrize("word", ["two words", "", "tab\there", "new\nline"])
def test_save_refuses_words_the_format_cannot_hold(tmp_path, word):
    """Saved, they made files that neither WordVectors.load nor gensim reads back."""
    wv = WordVectors([word, "ok"], np.ones((2, 3), np.float32))
    for binary in (False, True):
        with pytest.raises(RnnkitError, match="words must be non-empty, without spaces, tabs or newlines"):
            wv.save(tmp_path / "v", binary=binary)
    assert not (tmp_path / "v").exists()


def test_save_refuses_a_word_with_a_lone_surrogate(tmp_path):
    """A word of bytes read with errors='surrogateescape' ('caf\\udce9'): UTF-8 has no code for it, and save failed in
    its encoder with a traceback; it is one line naming the word, and no file is written."""
    wv = WordVectors(["caf\udce9", "ok"], np.ones((2, 3), np.float32))
    for binary in (False, True):
        with pytest.raises(RnnkitError, match=r"cannot save the word 'caf\\udce9' in word2vec format: UTF-8"):
            wv.save(tmp_path / "v", binary=binary)
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("header", ["0 5", "-1 5", "3 0"])
def test_a_header_without_vectors_is_named(tmp_path, header):
    (tmp_path / "v.txt").write_text(header + "\n")
    with pytest.raises(RnnkitError, match=f"its header '{header}' promises no vectors"):
        WordVectors.load(tmp_path / "v.txt")


@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_a_window_wider_than_the_corpus_takes_whole_sentences_at_once(model):
    """The pairs were listed for each distance 1..window: window=10**9 (the whole sentence, as gensim users set
    it) on a 6-word corpus ran ~10 us per empty distance, about three hours, and CBOW's padded rows of 2·window
    contexts would not fit in memory. Distances beyond the corpus have no pairs."""
    sentences = [["a", "b", "c", "d"], ["c", "a"]]
    w = Word2Vec(model=model, window=10**9, min_count=1, sample=0, dimension=4, epochs=1)
    centres, contexts = w.fit(sentences)._pairs(*w._encode(sentences))
    if model == "skip-gram":  # every ordered pair of each sentence
        assert len(centres) == 4 * 3 + 2 * 1
    else:  # a row per word, its sentence's other words
        assert len(centres) == 6 and sorted((contexts >= 0).sum(1).tolist()) == [1, 1, 3, 3, 3, 3]


def test_subsampling_that_leaves_no_pairs_says_so():
    sentences = [["héllo", "wörld", "日本"], ["日本", "héllo"], ["wörld", "日本", "héllo"]]
    with pytest.raises(RnnkitError, match=r"no \(centre, context\) pairs left after subsampling .* sample 0"):
        Word2Vec(dimension=4, min_count=1, epochs=1).fit(sentences)
    Word2Vec(dimension=4, min_count=1, epochs=1, sample=0).fit(sentences)


def test_a_refit_that_fails_leaves_the_model_as_it_was():
    """A refit that failed (no pairs after subsampling; too few words) left the failed corpus's vocab, counts and U
    beside the old wv: vocab.itos was the 3 new words and U (3, 4) while wv held the 100 old words."""
    m = Word2Vec(dimension=4, min_count=1, epochs=1, backend="torch")
    m.fit([[f"w{i}" for i in range(j, j + 10)] for j in range(0, 100, 10)])
    before = {k: getattr(m, k) for k in ("wv", "vocab", "counts", "U", "V_out", "loss_history")}
    U = m.U.clone()
    for sentences, said in [
        (
            [["héllo", "wörld", "日本"], ["日本", "héllo"], ["wörld", "日本", "héllo"]],
            "left after subsampling",
        ),
        ([["a", "a"]], "only 1 word"),
    ]:
        with pytest.raises(RnnkitError, match=said):
            m.fit(sentences)
        assert all(getattr(m, k) is v for k, v in before.items())
        assert torch.equal(m.U, U) and m.vocab.itos == m.wv.words and np.array_equal(m.wv.vectors, U.numpy())
    untrained = Word2Vec(min_count=1)  # a first fit that fails: still untrained
    with pytest.raises(RnnkitError):
        untrained.fit([["a"]])
    with pytest.raises(AttributeError, match="not trained yet"):
        untrained.vocab  # noqa: B018


def test_a_build_vocab_that_fails_leaves_the_model_as_it_was():
    """build_vocab called alone (not through fit) on a trained model replaced vocab before failing 'only 1 word(s)
    occur ...': vocab was the failed corpus's 1 word beside the 100 words of wv and counts; on a model not trained
    it was left with a vocab. Both are as they were now, as after a fit that fails."""
    m = Word2Vec(dimension=4, min_count=1, epochs=1, backend="torch")
    m.fit([[f"w{i}" for i in range(j, j + 10)] for j in range(0, 100, 10)])
    before = {k: getattr(m, k) for k in ("wv", "vocab", "counts", "U", "V_out", "loss_history")}
    for sentences, said in [
        ([["a", "a"]], "only 1 word"),
        ([[]], "only 0 word"),
        ([[["a"]]], "a word is a list"),
    ]:
        with pytest.raises(RnnkitError, match=said):
            m.build_vocab(sentences)
        assert all(getattr(m, k) is v for k, v in before.items()) and len(m.vocab) == 100
    untrained = Word2Vec(min_count=1)
    with pytest.raises(RnnkitError, match="only 1 word"):
        untrained.build_vocab([["a"]])
    with pytest.raises(AttributeError, match="not trained yet"):
        untrained.vocab  # noqa: B018
    m.build_vocab([["a", "b", "a"]])  # one that succeeds sets both
    assert m.vocab.itos == ["a", "b"] and m.counts.tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    "sentences, said",
    [(["the cat", "a dog"], "not str"), ("the cat", "not str"), ([b"the cat"], "not bytes")],
)
def test_build_vocab_refuses_sentences_that_are_not_lists_of_words_as_fit_does(sentences, said):
    """build_vocab called alone counted a str sentence's characters as words (['t', ' ', 'a', 'h', ...]) and a bytes
    one's byte values (116, 32, ...), in silence, where fit refuses both in one line. It says so as fit does now."""
    m = Word2Vec(min_count=1)
    with pytest.raises(RnnkitError, match=f"^Word2Vec.build_vocab takes sentences as lists of words, {said}"):
        m.build_vocab(sentences)
    assert not hasattr(m, "vocab")
    with pytest.raises(RnnkitError, match=f"^Word2Vec.fit takes sentences as lists of words, {said}"):
        m.fit(sentences)
    m.build_vocab(iter([iter(["a", "b"]), ("b", "c")]))  # any iterables of words, as before
    assert m.vocab.itos == ["b", "a", "c"]


@pytest.mark.parametrize("E", [1, 4, 50])
def test_binary_files_whose_first_vectors_are_zero_are_read_as_binary(tmp_path, E):
    # zero vectors are NUL bytes, valid UTF-8: the format is guessed from the records, not the encoding
    vectors = np.zeros((4, E), np.float32)
    vectors[2:] = np.random.default_rng(0).standard_normal((2, E))
    wv = WordVectors(["<pad>", "<unk>", "the", "of"], vectors)
    for binary in (True, False):
        wv.save(tmp_path / "v", binary=binary)
        for guess in (None, binary):
            again = WordVectors.load(tmp_path / "v", binary=guess)
            assert again.words == wv.words
            np.testing.assert_allclose(again.vectors, vectors, rtol=1e-5)


def test_malformed_vector_files(tmp_path):
    bad = tmp_path / "bad.txt"
    for content in ["not a header\n", "2 3\nthe 1 2 3\n", "1 3\nthe 1 2\n", ""]:
        bad.write_text(content)
        with pytest.raises(RnnkitError, match="malformed"):
            WordVectors.load(bad)
    with pytest.raises(RnnkitError, match="missing.txt not found; give a word2vec file"):
        WordVectors.load(tmp_path / "missing.txt")


def test_a_file_that_is_not_word_vectors_is_said_so_in_words(tmp_path):
    # a corpus, a binary file or another command's output (a checkpoint, an n-gram .npz: zip archives) was
    # "invalid literal for int() with base 10: b'PK\\x03\\x04-\\x00...'", the first line's raw bytes
    bad = tmp_path / "bad"
    for content, said in [
        (b"First Citizen:\nBefore we proceed\n", "its first line is 'First Citizen:', not the 'V E' header"),
        (b"PK\x03\x04-\x00\x00\x00\x08\x00!\x00+,\xacA\xff\xff\n", "its first line is binary data, not the"),
        (b"", "it is empty, with no 'V E' header"),
    ]:
        bad.write_bytes(content)
        with pytest.raises(RnnkitError, match=f"^malformed word2vec file {bad}: {re.escape(said)}") as e:
            WordVectors.load(bad)
        assert "\\x" not in str(e.value) and "invalid literal" not in str(e.value)


def test_word_vectors_check_shapes_and_topn():
    X = np.random.default_rng(0).normal(size=(4, 3))
    wv = WordVectors(list("abcd"), X)
    with pytest.raises(
        RnnkitError, match=r"\(4, E\) matrix, one row per word, got shape \(3, 4\); transpose"
    ):
        WordVectors(list("abcd"), X.T)  # once scored silently
    for topn in (0, -1):
        with pytest.raises(
            RnnkitError, match=r"topn \(how many words to list\) must be an integer >= 1, got"
        ):
            wv.neighbours("a", topn=topn)  # topn=-1 once dropped the last neighbour
    for query in ("a", np.ones(4)):
        with pytest.raises(RnnkitError, match="a vector of 3 numbers"):
            wv.nearest(query)
    for bad in (np.nan, np.inf):  # every cosine was NaN, listed as scores
        with pytest.raises(RnnkitError, match="finite vector"):
            wv.nearest(np.array([1.0, bad, 0.0]))
    assert [w for w, _ in wv.neighbours("a", topn=10)] == [w for w, _ in wv.neighbours("a", topn=3)]


def test_bad_corpora():
    with pytest.raises(RnnkitError, match="empty"):
        Word2Vec(min_count=1).fit([[], []])
    with pytest.raises(RnnkitError, match="at least 2"):
        Word2Vec(min_count=1).fit([["a"], ["a", "a"]])
    with pytest.raises(RnnkitError, match="no \\(centre"):
        Word2Vec(min_count=1, sample=0).fit([["a"], ["b"]])
    with pytest.raises(RnnkitError):
        Word2Vec(model="glove")


@pytest.mark.parametrize("sentences", ["the cat sat on the mat", ["the cat sat on the mat"] * 20])
def test_str_sentences_are_refused(sentences):
    # iterating a str gives characters: it would silently train character vectors
    with pytest.raises(RnnkitError, match=r"lists of words, not str: .*s\.split\(\)"):
        Word2Vec(min_count=1, backend="torch").fit(sentences)


@pytest.mark.parametrize("wrap", [lambda s: [s], lambda s: [[w] for w in s]])
def test_sentences_nested_one_level_too_deep_are_named(wrap):
    """fit([sentences]) (a list of lists of words as one sentence) was Counter's 'TypeError: unhashable type:
    'list'' from inside Vocabulary.build."""
    sentences = [["the", "cat", "sat"], ["on", "the", "mat"]] * 10
    with pytest.raises(RnnkitError, match=r"a word is a list \(\['.*\), not a str: .*one level too deep"):
        Word2Vec(min_count=1, backend="torch").fit(wrap(sentences))


@pytest.mark.parametrize("kind", [np.array, tuple, iter])
def test_sentences_as_arrays_tuples_or_iterators_train_as_lists(kind):
    """A numpy array of words per sentence failed with numpy's 'truth value of an array ... is ambiguous';
    iterators were read up by the vocabulary count, leaving 'no (centre, context) pairs: every sentence has a
    single known word'."""
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 10]
    config = dict(min_count=1, dimension=4, epochs=1, backend="torch")
    expected = Word2Vec(**config).fit(words).wv.vectors
    np.testing.assert_array_equal(Word2Vec(**config).fit([kind(s) for s in words]).wv.vectors, expected)


def test_a_numpy_integer_seed_trains_as_the_same_int_does():
    """seed=np.int64(3) (np.arange(5) of seeds) passed the check as a whole number, then fit failed in torch's
    manual_seed with 'TypeError: an integer is required'."""
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 10]
    config = dict(min_count=1, dimension=4, epochs=1, backend="torch", sample=0)
    expected = Word2Vec(**config, seed=3).fit(words).wv.vectors
    np.testing.assert_array_equal(Word2Vec(**config, seed=np.int64(3)).fit(words).wv.vectors, expected)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_narrow_numpy_integer_sizes_train_as_python_ints(backend):
    """Sizes of a narrow numpy type (np.int8 epochs, batch size) took numpy's arithmetic of that type into fit:
    'OverflowError: Python integer 1397 out of bounds for int8' (pairs x epochs), or an overflowing sum."""
    if backend == "native" and _native_skip_reason():
        pytest.skip(_native_skip_reason())
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 20]
    config = dict(min_count=1, dimension=4, epochs=2, batch_size=100, window=100, negative=3, workers=1)
    common = dict(backend=backend, sample=0)
    expected = Word2Vec(**config, **common).fit(words).wv.vectors
    narrow = {name: np.int8(value) for name, value in config.items()}
    np.testing.assert_array_equal(Word2Vec(**narrow, **common).fit(words).wv.vectors, expected)


def test_overrides_apply_on_top_of_a_config():
    from rnnkit.text import Word2VecConfig

    w2v = Word2Vec(Word2VecConfig(window=3), dimension=7)
    assert (w2v.config.dimension, w2v.config.window) == (7, 3)
    with pytest.raises(RnnkitError, match="--dimension must be an integer >= 1"):
        Word2Vec(Word2VecConfig(), dimension=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"negative": -1}, "negative"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"sample": -1e-3}, "sample"),
        ({"min_alpha": -1.0}, "min-alpha"),
        ({"min_alpha": 0.5}, "min-alpha"),  # above alpha: the rate would grow
        ({"window": 2.5}, "window"),
        ({"dimension": 4.5}, "dimension"),
        ({"bogus": 1}, "Word2VecConfig"),
        ({"alpha": "0.1"}, "--alpha must be a number"),  # these four were TypeErrors and ValueErrors
        ({"sample": None}, "--sample must be a number"),
        ({"seed": -1}, "--seed must be a whole number >= 0"),
        ({"seed": 1.5}, "--seed must be a whole number >= 0"),
        ({"dimension": True}, "--dimension must be a whole number"),  # True is an int: 1-dimensional vectors
        ({"epochs": True}, "--epochs must be a whole number"),
        ({"cbow_mean": "False"}, "cbow_mean must be True or False"),  # taken for its truth value: the mean
        ({"cbow_mean": None}, "cbow_mean must be True or False"),  # the sum, in silence
        ({"seed": 2**64}, "--seed must be a whole number >= 0 and < 2\\*\\*32"),  # fit: torch's ValueError
    ],
)
def test_bad_sizes_and_rates(bad, message):
    with pytest.raises(RnnkitError, match=message):
        Word2Vec(**bad)


def test_an_alpha_or_sample_that_is_0_as_a_float_is_refused_in_one_line():
    """alpha and sample were checked > 0 as the number given and then used as its float, 0 for one below float's
    least: alpha=Fraction(1, 10**400) trained at a learning rate of 0.0 (the vectors as drawn), and sample=Fraction(1,
    10**400) or np.longdouble('1e-400') made the subsampling threshold sT = 0 (numpy's 'divide by zero encountered in
    divide', a traceback under -W error), where 0 is refused (alpha) or turns subsampling off (sample)."""
    from fractions import Fraction

    for tiny in (Fraction(1, 10**400), np.longdouble("1e-400")):
        with pytest.raises(
            RnnkitError, match=r"^--alpha .* is too small: it is 0 as a float; give 1e-300 or more$"
        ):
            Word2Vec(alpha=tiny, min_alpha=0)
        with pytest.raises(RnnkitError, match=r"^--sample .* is too small: it is 0 as a float, which turns "
                           "subsampling off; give 1e-300 or more, or 0 for none$"):  # fmt: skip
            Word2Vec(sample=tiny)
    # a tiny number a float holds, and 0, as before
    assert Word2Vec(alpha=1e-300, min_alpha=0, sample=1e-300).config.sample == 1e-300
    assert Word2Vec(sample=0, min_alpha=Fraction(1, 10**400)).config.sample == 0


def test_no_negative_samples_is_refused_for_negative_sampling_only():
    # K = 0 noise words would only pull every (centre, context) pair together: nothing is learnt
    with pytest.raises(
        RnnkitError, match="--negative .* must be an integer >= 1 for negative sampling, got 0"
    ):
        Word2Vec(negative=0)
    w2v = Word2Vec(dimension=4, min_count=1, epochs=1, negative=0, loss="softmax", backend="torch")
    assert w2v.fit(planted_corpus()).loss_is_finite()  # the full softmax samples no noise words


def test_a_text_file_read_as_binary_is_not_binary(tmp_path):
    rng = np.random.default_rng(0)
    WordVectors(["the", "cat", "sat"], rng.normal(size=(3, 5))).save(tmp_path / "v.txt")
    with pytest.raises(RnnkitError, match="not in word2vec binary format; try --format text"):
        WordVectors.load(tmp_path / "v.txt", binary=True)
    # text lines of 3 numbers under a header of 2: text, whose reader names the line (it was '8 bytes follow the last
    # of the 2 vectors; is it binary?', and with --format text 'not in word2vec text format; try --format binary')
    (tmp_path / "odd.txt").write_text("2 2\nthe 1 2 3\ncat 4 5 6\ndog 7 8 9\n")
    with pytest.raises(RnnkitError, match="not in word2vec binary format; try --format text"):
        WordVectors.load(tmp_path / "odd.txt", binary=True)
    with pytest.raises(RnnkitError, match=r"line 2 has 3 numbers, expected 2; expected"):
        WordVectors.load(tmp_path / "odd.txt", binary=False)


def _traced_peak(compute):
    """compute()'s value and the peak of the memory Python allocated (tracemalloc) while it ran."""
    tracemalloc.start()
    try:
        value = compute()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _said_as_text(tmp_path, cases):
    """Each (data, said): the file loaded with the format guessed and as text is refused in a line matching said."""
    for data, said in cases:
        (tmp_path / "v.txt").write_bytes(data)
        for binary in (None, False):
            with pytest.raises(RnnkitError, match=said):
                WordVectors.load(tmp_path / "v.txt", binary)


def _loads_as_binary(tmp_path, x):
    """x (2, E) float32, the vectors of words ab and cd in a binary file (with and without a newline after each
    vector), loads as itself with the format guessed."""
    for newline in (b"", b"\n"):
        (tmp_path / "v.bin").write_bytes(
            f"2 {x.shape[1]}\n".encode()
            + b"".join(w + b" " + v.tobytes() + newline for w, v in zip([b"ab", b"cd"], x))
        )
        wv = WordVectors.load(tmp_path / "v.bin")
        assert wv.words == ["ab", "cd"] and np.array_equal(wv.vectors, x)


def test_a_text_file_whose_first_line_is_malformed_is_not_loaded_as_binary_garbage(tmp_path):
    """A text line that is not 'word x_1 ... x_E' (two spaces in a row, a decimal comma) whose numbers are 4 E bytes
    long reads as a binary record: '1 2\\nab 1.0  2.0\\n' loaded in silence as 'ab' with (1.5e-19, 6.3e-10), the
    floats of b'1.0 ' and b' 2.0', and with --format text was 'not in word2vec text format; try --format binary'.
    The bytes of numbers written as text are no word vector's float32 numbers: it is text, and its line is said.
    (Line 2 was 'line 2 has 3 numbers, expected 2', an empty field counted, and "could not convert string to float:
    b'1,50'" of no line before test_a_text_line_of_a_space_too_many_or_no_number_is_named.)"""
    _said_as_text(
        tmp_path,
        [
            (b"1 2\nab 1.0  2.0\n", r"line 2 has a space too many"),
            (b"2 2\nab 1.0  2.0\ncd 3.5 4.5\n", r"line 2 has a space too many"),
            (b"1 2\nab 1,50 2,5\n", r"line 2: '1,50' is no number"),
        ],
    )
    # a binary file of vectors of the same sizes still is one
    x = np.array([[0.5, -1.25], [3.0, 0.0]], "<f4")
    _loads_as_binary(tmp_path, x)


def test_a_text_line_of_one_number_that_is_no_number_is_not_loaded_as_binary_garbage(tmp_path):
    """E = 1: a text line whose field is no number ('N/A', 'abc') or missing ('ab ' then CRLF) reads as a binary record
    of 4 bytes: b'N/A\r' (CRLF), b'abc\n' or b'\r\ncd' (a line read across). They loaded in silence as 5.9e-31,
    1.1e-32 and 2.7e+23, and with --format text were 'not in word2vec text format; try --format binary' (gensim
    refuses the line: 'invalid vector on line 0'). Bytes that all read as text, one a line end, whose numbers are no
    word vector's are a text line read across: it is text, and its line is said."""
    _said_as_text(
        tmp_path,
        [
            (b"2 1\r\nab N/A\r\ncd 2.0\r\n", r"line 2: 'N/A' is no number"),
            (b"1 1\nab abc\n", r"line 2: 'abc' is no number"),
            (b"2 1\r\nab \r\ncdef 2.5\r\n", r"line 2 has 0 numbers, expected 1"),
        ],
    )
    # binary files of one number a word whose bytes hold a newline or a CR still are binary (both layouts)
    x = np.array([[0.25], [-1.5]], "<f4")
    x[0].view(np.uint8)[0], x[1].view(np.uint8)[1] = 0x0A, 0x0D
    _loads_as_binary(tmp_path, x)


def test_a_text_field_of_four_letters_is_not_loaded_as_binary_garbage(tmp_path):
    """E = 1: a text line whose field is 4 bytes of letters and no line end ('none', 'null', 'cdef') is a binary record
    of 4 bytes too: '2 1\\nab none\\ncd null\\n' loaded in silence as (7.0e+22, 1.1e+27) (the float32 numbers of
    b'none', b'null'), and with --format text was 'not in word2vec text format; try --format binary' (gensim's text
    reader refuses the line). Bytes that all read as text, one of a number past 2^30 (a float's last byte a letter from
    'O' on), which no word vector holds, are a text line: it is read as text, and its line is said."""
    _said_as_text(
        tmp_path,
        [
            (b"2 1\nab none\ncd null\n", r"line 2: 'none' is no number"),
            (b"2 1\r\nab cdef\r\ngh ijkl\r\n", r"line 2: 'cdef' is no number"),
            (b"1 1\nab true\n", r"line 2: 'true' is no number"),
        ],
    )
    # binary files of one number a word whose bytes read as text still are binary (both layouts), and --format binary
    # reads such a text file's bytes as asked
    x = np.frombuffer(b"ab1>xyz@", "<f4").reshape(
        2, 1
    )  # (0.17 and 3.9: bytes of text, a word vector's numbers)
    _loads_as_binary(tmp_path, x)
    (tmp_path / "v.txt").write_bytes(b"1 1\nab none\n")
    assert WordVectors.load(tmp_path / "v.txt", binary=True).vectors[0, 0] == np.frombuffer(b"none", "<f4")[0]


def test_a_text_file_of_classic_mac_line_ends_is_said_so_not_binary_data(tmp_path):
    """A word2vec text file whose line ends are \\r alone (classic Mac OS's), '3 1\\ra 0.5\\rb -1\\rc 2\\r', is one line
    to the format (gensim's reader, too, ends lines at \\n and refuses it): it was 'its first line is binary data, not
    the 'V E' header', of a text file. It is said what it is, and how to convert it."""
    for data in (b"3 1\ra 0.5\rb -1\rc 2\r", b"2 3\ra 1 2 3\rb 4 5 6"):
        (tmp_path / "v.txt").write_bytes(data)
        for binary in (None, False, True):
            with pytest.raises(
                RnnkitError, match=r"line ends are \\r alone, .*; convert them, e\.g\. mac2unix"
            ):
                WordVectors.load(tmp_path / "v.txt", binary)


def _native_skip_reason():
    # Builds the loop on first use (about a minute on a fresh machine, cached after): CI exercises it.
    return None if w2v_native.load() is not None else f"native word2vec loop unavailable: {w2v_native.reason}"


native = pytest.mark.skipif(_native_skip_reason() is not None, reason=str(_native_skip_reason()))


@native
@pytest.mark.parametrize(
    "cbow, mean, update",
    [(False, True, "word2vec"), (True, True, "word2vec"), (True, True, "gradient"), (True, False, "word2vec"),
     (True, False, "gradient")],
)  # fmt: skip
def test_native_loop_equals_pair_by_pair_reference(cbow, mean, update):
    g = torch.Generator().manual_seed(0)
    V, E, K, P = 12, 6, 3, 20
    U, V_out = torch.randn(V, E, generator=g) * 0.3, torch.randn(V, E, generator=g) * 0.3
    centres = torch.randint(V, (P,), generator=g)
    contexts = torch.randint(V, (P, 4), generator=g) if cbow else torch.randint(V, (P,), generator=g)
    if cbow:
        contexts[::3, 2:] = -1  # short windows are padded
    negatives = torch.stack([torch.randperm(V, generator=g)[:K] for _ in range(P)])
    alpha, min_alpha, seen, expected = 0.1, 0.001, 5, 40
    U_ref, V_ref = U.clone(), V_out.clone()
    for p in range(P):  # the reference: the batched gradient, one pair at a time
        lr = alpha - (alpha - min_alpha) * min((seen + p) / expected, 1.0)
        rows = contexts[p][contexts[p] >= 0] if cbow else centres[p : p + 1]
        m = len(rows)
        a = 1.0 / m if cbow and mean else 1.0  # h = Σ a u_c
        b = a if update == "gradient" else 1.0 if mean else 1.0 / m  # u_c -= lr b dh (word2vec.c, gensim)
        target = centres[p] if cbow else contexts[p]
        targets = torch.cat([target[None], negatives[p]])
        mask = torch.cat([torch.ones(1), (negatives[p] != target).float()])[None]
        _, dh, dv = negative_sampling_loss_grads((a * U_ref[rows]).sum(0)[None], V_ref[targets][None], mask)
        V_ref.index_add_(0, targets, dv[0], alpha=-lr)
        U_ref.index_add_(0, rows, (b * dh).expand(len(rows), E), alpha=-lr)
    w2v_native.load().sgns_pairs(
        U,
        V_out,
        centres,
        contexts,
        negatives,
        alpha,
        min_alpha,
        seen,
        expected,
        mean,
        update == "gradient",
        1,
    )
    torch.testing.assert_close(U, U_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(V_out, V_ref, rtol=1e-4, atol=1e-5)


def _sgns_arguments(**changes):
    U, V_out = torch.randn(5, 4), torch.zeros(5, 4)
    centres, contexts, negatives = (
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 2, 3]),
        torch.tensor([[4], [3], [2]]),
    )
    given = dict(U=U, V_out=V_out, centres=centres, contexts=contexts, negatives=negatives) | changes
    return [*given.values(), 0.1, 0.0, 0, 3, True, False, 1]


@native
@pytest.mark.parametrize(
    "changes",
    [
        {"centres": torch.tensor([0, 1, 2], dtype=torch.int32)},  # aborted the process in a worker thread
        {"U": torch.randn(4, 5).T},  # a view read as raw memory: wrong rows, silently
        {"negatives": torch.tensor([[4], [5], [2]])},  # row 5 of 5: written past the end of V_out
        {"contexts": torch.tensor([1, -1, 3])},  # -1 pads CBOW's windows only: read before U
        {"U": torch.randn(5, 4, dtype=torch.float64)},
        {"V_out": torch.zeros(5, 4, device="meta")},  # no memory (or a GPU's): aborted in a thread
        {"negatives": torch.tensor([[4], [3]])},  # fewer rows than pairs
    ],
)
def test_the_native_loop_refuses_arguments_it_would_misread(changes):
    """sgns_pairs read its tensors' raw memory unchecked: a wrong dtype threw inside a worker thread, which killed
    the process (std::terminate); a strided view or an index out of range read or wrote the wrong memory."""
    with pytest.raises(RuntimeError, match="sgns_pairs: "):
        w2v_native.load().sgns_pairs(*_sgns_arguments(**changes))


@native
@pytest.mark.parametrize("cbow", [False, True])
def test_the_native_loops_threads_run_every_pair(cbow):
    """workers > 1 splits the pairs among threads (Hogwild): every pair must run, in one thread or another. Pairs whose
    words are all different (pair p: rows 5p..5p+4) share no row, so no thread's update meets another's: the vectors
    after 2 or 4 workers are those of 1 worker, bit for bit (pair p's rate follows seen + p in any thread)."""
    P, E = 8, 4
    words = torch.arange(5 * P).view(P, 5)
    centres, negatives = words[:, 0].contiguous(), words[:, 3:].contiguous()
    contexts = words[:, 1:3].contiguous() if cbow else words[:, 1].contiguous()
    start = torch.randn(5 * P, E, generator=torch.Generator().manual_seed(0)) * 0.3
    done = []
    for workers in (1, 2, 4):
        U, V_out = start.clone(), start.flip(0).contiguous()
        w2v_native.load().sgns_pairs(
            U, V_out, centres, contexts, negatives, 0.1, 0.001, 3, 20, True, False, workers
        )
        assert not torch.equal(U, start) and not torch.equal(V_out, start.flip(0))
        done.append((U, V_out))
    for U, V_out in done[1:]:
        assert torch.equal(U, done[0][0]) and torch.equal(V_out, done[0][1])


@native
def test_native_training_finds_the_planted_neighbours_reproducibly():
    config = dict(dimension=16, window=3, min_count=1, epochs=5, sample=0, alpha=0.05, backend="native")
    w2v = Word2Vec(**config).fit(planted_corpus())
    assert np.array_equal(w2v.wv.vectors, Word2Vec(**config).fit(planted_corpus()).wv.vectors)
    for k in range(5):
        assert all(w.startswith(f"g{k}") for w, _ in w2v.wv.neighbours(f"g{k}w0", topn=3))


@native
def test_more_workers_than_pairs_train_instead_of_crashing_the_process():
    """The native loop started `workers` threads whatever the number of pairs: workers=2**62 on a tiny corpus
    aborted the process ('terminate called without an active exception': a thread could not start, and the
    std::threads started before it were destroyed unjoined), and 2**63 was a TypeError of the binding (int64).
    Threads beyond the pairs of a call had none to do: it starts at most one per pair."""
    script = (
        "from rnnkit.text import Word2Vec\n"
        "for workers in (2**63, 2**62):\n"
        "    Word2Vec(min_count=1, sample=0, dimension=4, epochs=1, backend='native', workers=workers).fit(\n"
        "        [['a', 'b', 'c', 'a', 'b']])\n"
        "print('trained')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert (done.returncode, done.stdout) == (0, "trained\n"), done.stderr[-2000:]


def _fake_loop_on_two_chunks(monkeypatch, sgns_pairs):
    """fit with `sgns_pairs` standing in for the compiled loop, on 2 epochs of 2 chunks of pairs (>100k each)."""
    monkeypatch.setattr(Word2Vec, "_native", lambda self: type("Loop", (), {"sgns_pairs": sgns_pairs})())
    sentences = planted_corpus(sentences=2000, length=20)  # 40k words, about 180k pairs an epoch
    return Word2Vec(min_count=1, sample=0, dimension=4, epochs=2, window=3, backend="native").fit(sentences)


def test_the_native_loop_runs_while_the_next_chunk_and_epoch_are_drawn(monkeypatch):
    """The native backend drew each 100k-pair chunk's negatives, and each epoch's pairs, while the compiled loop
    waited, and the loop held the GIL: on PTB an epoch's draws took 0.75 s beside the loop's 1.1 s (1 worker), so
    2 workers ran 1.27x as fast as 1 (gensim 1.85x). The next chunk's negatives and the next epoch's pairs are now
    drawn in threads while the loop runs a chunk (without the GIL)."""
    drawn, pairs = [], []
    negatives, all_pairs = Word2Vec._negatives, Word2Vec._pairs
    monkeypatch.setattr(Word2Vec, "_negatives", lambda self, B: drawn.append(B) or negatives(self, B))
    monkeypatch.setattr(Word2Vec, "_pairs", lambda self, *a: pairs.append(1) or all_pairs(self, *a))
    seen = []

    def sgns_pairs(U, V_out, w, ctx, neg, *rest):  # the first chunk: wait (2 s at most) for the next's draws
        deadline = time.monotonic() + 2
        while not seen and (len(drawn), len(pairs)) < (3, 2) and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append((len(drawn), len(pairs)))

    _fake_loop_on_two_chunks(monkeypatch, sgns_pairs)
    # chunk 0: the loss probe's and its own negatives, chunk 1's; epoch 1's pairs (epoch 0's drawn in fit)
    assert seen[0] == (3, 2)


def test_the_native_backends_rate_runs_on_across_an_epochs_chunks(monkeypatch):
    """The compiled loop runs pair p of a call at α - (α - α_min) min((seen + p) / expected, 1): an epoch of more than
    one chunk (100k pairs) must hand each chunk the pairs seen before it, so that the rate decays over the epoch's
    pairs and the last pair ends at min_alpha, not start every chunk where its epoch starts."""
    calls = []  # (seen, pairs, expected) of each call

    def sgns_pairs(loop, U, V_out, w, ctx, neg, alpha, min_alpha, seen, expected, *rest):  # (a loop's method)
        calls.append((seen, len(w), expected))

    _fake_loop_on_two_chunks(monkeypatch, sgns_pairs)
    i = 0
    for epoch in range(2):  # epoch e: from e / 2 of its own pairs' count times 2 (expected) to (e + 1) / 2
        seen, _, expected = calls[i]
        assert seen == epoch * expected // 2 and expected % 2 == 0
        while seen < (epoch + 1) * expected // 2:
            assert calls[i][0::2] == (seen, expected), (epoch, calls)
            seen, i = seen + calls[i][1], i + 1
        assert seen == (epoch + 1) * expected // 2  # the last epoch's last pair at min_alpha
    assert i == len(calls) > 2  # (more than one chunk an epoch)


def test_ctrl_c_in_the_native_loop_leaves_no_thread_running(monkeypatch):
    calls = []

    def sgns_pairs(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fake_loop_on_two_chunks(monkeypatch, sgns_pairs)
    assert [t.name for t in threading.enumerate() if t.name.startswith("word2vec")] == []


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_float64_as_torchs_default_dtype(backend):
    """With float64 as torch's default dtype the native backend aborted the process (its loop reads float32)
    and the torch backend failed on a mix of dtypes; word vectors are float32, as word2vec.c keeps them."""
    if backend == "native" and _native_skip_reason():
        pytest.skip(_native_skip_reason())
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        sentences = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 20]
        for model in ("skip-gram", "cbow"):
            w = Word2Vec(model=model, backend=backend, dimension=8, min_count=1, epochs=1).fit(sentences)
            assert w.U.dtype == torch.float32 and w.wv.vectors.dtype == np.float32
    finally:
        torch.set_default_dtype(old)


def test_word_vectors_must_be_finite_in_float32():
    """1e39 overflowed to inf in float32 and every cosine with it became NaN, with only a numpy warning."""
    with pytest.raises(RnnkitError, match="the vector of 'b' is not finite in float32"):
        WordVectors(["a", "b"], np.array([[1.0, 0.0], [1e39, 1.0]]))


@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_batched_path_on_a_tiny_vocabulary_learns_instead_of_diverging(model):
    """The torch path summed a batch of 2048 pairs' gradients per word: with 9 words each moved by ~200 times
    the learning rate at once and the loss went 3.7 -> 931 (the native loop: 3.6 -> 2.2). Its batches now hold
    at most 16 pairs a word on average."""
    sentences = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "sat", "on", "a", "log"]] * 50
    m = Word2Vec(dimension=8, min_count=1, epochs=5, window=2, backend="torch", sample=0, model=model)
    m.fit(sentences)
    assert m.loss_is_finite() and m.loss_history[-1] < 0.8 * m.loss_history[0]


def test_each_checkout_and_environment_builds_the_native_loop_into_its_own_folder(tmp_path, monkeypatch):
    """The native loop's build folder had one fixed name for every checkout and virtual environment, and torch's
    build.ninja holds their paths: each one's load rebuilt it. Its name now carries a hash of its source, the
    source's path, the flags and torch's place."""
    import shutil

    import torch

    name, flags = w2v_native._name_and_flags()
    assert w2v_native._name_and_flags() == (name, flags) and name.startswith("rnnkit_word2vec")
    copy = tmp_path / "w2v_native.py"
    shutil.copy(w2v_native.__file__, copy)
    with monkeypatch.context() as m:
        m.setattr(w2v_native, "__file__", str(copy))
        assert w2v_native._name_and_flags()[0] != name  # another checkout
        copy.write_text(copy.read_text() + "\n")
        assert w2v_native._name_and_flags()[0] != name
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "venv" / "torch" / "__init__.py"))
    assert w2v_native._name_and_flags()[0] != name  # another virtual environment


def test_auto_warns_once_when_the_native_loop_cannot_be_built(monkeypatch):
    """backend 'auto' ran the batched torch path, several times slower, without a word when the loop could not
    be built: one warning per process names the cause and the fix; backend 'torch' and RNNKIT_NATIVE=0 are
    quiet."""
    monkeypatch.setattr(w2v_native, "load", lambda: None)
    monkeypatch.setattr(
        w2v_native, "reason", "could not build the word2vec loop: c++: not found; install ..."
    )
    monkeypatch.setattr(w2v_native, "_warned", False)
    with pytest.warns(
        RuntimeWarning, match="native word2vec unavailable .*c\\+\\+: not found.*RNNKIT_NATIVE=0"
    ):
        assert Word2Vec(backend="auto").resolved_backend() == "torch"
    assert Word2Vec(backend="auto").resolved_backend() == "torch"  # once (warnings are errors here)
    monkeypatch.setattr(w2v_native, "_warned", False)
    assert Word2Vec(backend="torch").resolved_backend() == "torch"
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    monkeypatch.setattr(w2v_native, "reason", "switched off by RNNKIT_NATIVE=0")
    assert Word2Vec(backend="auto").resolved_backend() == "torch"


def test_backend_native_where_the_loop_is_off_names_the_flag_and_the_switch(monkeypatch):
    """backend 'native' asked for where the loop can't run said "...: switched off by RNNKIT_NATIVE=0, or use
    backend 'torch'": a reason run into the fix, the command line's flag unnamed, and not a word of unsetting the
    switch that was the reason."""
    monkeypatch.setattr(w2v_native, "load", lambda: None)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    monkeypatch.setattr(w2v_native, "reason", "switched off by RNNKIT_NATIVE=0")
    with pytest.raises(RnnkitError) as e:
        Word2Vec(backend="native").resolved_backend()
    assert str(e.value) == (
        "native word2vec unavailable (switched off by RNNKIT_NATIVE=0); use backend 'torch' (--backend torch), "
        "or unset RNNKIT_NATIVE"
    )
    monkeypatch.delenv("RNNKIT_NATIVE")  # unset after load() gave its reason, which it keeps: the same line
    with pytest.raises(RnnkitError, match=r"\(--backend torch\), or unset RNNKIT_NATIVE$"):
        Word2Vec(backend="native").resolved_backend()
    monkeypatch.setattr(w2v_native, "reason", "could not build the word2vec loop: c++: not found")
    with pytest.raises(RnnkitError, match=r"c\+\+: not found\); use backend 'torch' \(--backend torch\)$"):
        Word2Vec(backend="native").resolved_backend()


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_learning_rate_decays_over_each_epochs_own_pairs_to_min_alpha(backend, monkeypatch):
    """The rate's schedule divided the pairs seen by the first epoch's count times the epochs, but each epoch
    draws its own windows and subsampling: with fewer pairs in the later epochs training ended at several times
    min_alpha (with more, it ran its last pairs at min_alpha). Epoch e now decays linearly over its own pairs from
    alpha - (alpha - min_alpha) e / E to the next epoch's start, as gensim's schedule does."""
    batches = []  # (rate at a batch's first pair, rate after its last pair)
    E, alpha, min_alpha = 4, 0.05, 0.001

    def rate(seen, expected):
        return alpha - (alpha - min_alpha) * min(seen / expected, 1.0)

    class Recorder:  # stands in for the compiled loop, whose pair p runs at rate(seen + p, expected)
        def sgns_pairs(self, U, V_out, w, ctx, neg, alpha, min_alpha, seen, expected, *rest):
            batches.append((rate(seen, expected), rate(seen + len(w), expected)))

    def step(self, w, ctx, lr, need_loss, neg=None):
        if lr:  # not the native path's loss probe (rate 0)
            batches.append((lr, None))
        return 0.0 if need_loss else None

    monkeypatch.setattr(Word2Vec, "_step", step)
    monkeypatch.setattr(Word2Vec, "_native", lambda self: Recorder() if backend == "native" else None)
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.integers(20, size=rng.integers(2, 9))] for _ in range(40)]
    Word2Vec(min_count=1, epochs=E, alpha=alpha, min_alpha=min_alpha, batch_size=16, backend=backend).fit(
        sentences
    )
    first = np.array([b[0] for b in batches])
    assert np.all(np.diff(first) < 0)  # never rises
    for e in range(E):  # each epoch starts where the schedule says
        assert np.isclose(first, alpha - (alpha - min_alpha) * e / E, rtol=1e-12).any()
    if backend == "native":  # and the last pair ends it at min_alpha
        assert batches[-1][1] == pytest.approx(min_alpha, rel=1e-12)


def _cased_vectors(seed=0):
    """A vocabulary with cased forms (GoogleNews-like), most frequent first: 'King' before 'king', ..."""
    words = ["the", "King", "king", "man", "Man", "woman", "queen", "Queen", "Paris", "paris", "France",
             "berlin", "Germany", "KING", "apple", "Apple"]  # fmt: skip
    return WordVectors(words, np.random.default_rng(seed).standard_normal((len(words), 6)).astype(np.float32))


def test_analogies_and_similarity_match_cased_vocabularies_case_insensitively_as_gensim(tmp_path):
    """Only the test file's words were lower-cased: 'King' and 'France' were never found (questions silently
    skipped), or a question got the vectors of the rarer lower-case forms; gensim matches both sides
    case-insensitively (its case_insensitive=True default), taking a word's most frequent cased form."""
    gensim_models = pytest.importorskip("gensim.models", reason="gensim is not installed (dev extra)")
    wv = _cased_vectors()
    kv = gensim_models.KeyedVectors(6)
    kv.add_vectors(wv.words, wv.vectors)
    folded = sorted({w.lower() for w in wv.words})
    rng = np.random.default_rng(1)
    quads = [rng.choice(folded, 4, replace=False) for _ in range(300)]
    questions = tmp_path / "questions.txt"
    questions.write_text(": all\n" + "".join(" ".join(q).upper() + "\n" for q in quads))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b.upper()}\t{rng.random()}\n" for a, b, _, _ in quads[:40]))
    for n in (len(wv.words), 10):
        acc, count = wv.evaluate_analogies(questions, restrict=set(wv.words[:n]))
        score, sections = kv.evaluate_word_analogies(str(questions), restrict_vocab=n)
        assert count == len(sections[-1]["correct"]) + len(sections[-1]["incorrect"]) > 0
        assert acc == pytest.approx(score)
        rho, used = wv.evaluate_similarity(pairs, restrict=set(wv.words[:n]))
        _, spearman, oov = kv.evaluate_word_pairs(str(pairs), restrict_vocab=n)
        assert used == round(40 * (1 - oov / 100)) and rho == pytest.approx(spearman.statistic)


def test_restrict_limits_the_analogy_answers_too(tmp_path):
    """restrict limited which questions were asked, not which words could answer: a word outside it (another
    model's vocabulary, when comparing two) still won the question."""
    words = ["king", "queen", "man", "woman", "queenly"]
    X = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 1.1]], dtype=np.float32)
    wv = WordVectors(words, X)
    path = tmp_path / "questions.txt"
    path.write_text(": family\nman king woman queen\n")
    assert wv.evaluate_analogies(path) == (0.0, 1)  # 'queenly' is nearer
    assert wv.evaluate_analogies(path, restrict=set(words[:4])) == (1.0, 1)


def test_a_folder_of_both_formats_loads_its_binary_file_unless_text_is_asked_for(tmp_path):
    """A folder that `rnnkit word2vec --out` wrote holds vectors.bin and vectors.txt: load(folder) reads vectors.bin,
    load(folder, binary=False) vectors.txt (told apart here by different vectors, with no config.json to check)."""
    rng = np.random.default_rng(0)
    binary, text = (WordVectors(["the", "cat"], rng.standard_normal((2, 3))) for _ in range(2))
    binary.save(tmp_path / "vectors.bin", binary=True)
    text.save(tmp_path / "vectors.txt")
    assert np.array_equal(WordVectors.load(tmp_path).vectors, binary.vectors)
    assert np.array_equal(WordVectors.load(tmp_path, binary=True).vectors, binary.vectors)
    assert np.array_equal(WordVectors.load(tmp_path, binary=False).vectors, text.vectors)


def test_a_save_into_a_missing_folder_names_the_file_asked_for(tmp_path):
    """The error named the temporary file the write begins with (v.txt.x1y2z3.tmp), which the user never asked for."""
    wv = WordVectors(["a", "b"], np.ones((2, 3), np.float32))
    path = tmp_path / "missing" / "v.txt"
    with pytest.raises(
        RnnkitError, match=f"^cannot save {re.escape(str(path))}: the folder .*missing does not"
    ) as e:
        wv.save(path)
    assert ".tmp" not in str(e.value)


@pytest.mark.parametrize("cut, message", [(2, "file ends inside the vector of word 10 of 10"),
                                          (16, "file ends after 9 of its 10 vectors")])  # fmt: skip
def test_a_truncated_binary_file_says_where_it_ends(tmp_path, cut, message):
    """Cut between two vectors (a copy or download that stopped), it was 'malformed ...: subsection not found'."""
    path = tmp_path / "v.bin"
    WordVectors([f"w{i}" for i in range(10)], np.ones((10, 3), np.float32)).save(path, binary=True)
    path.write_bytes(path.read_bytes()[:-cut])  # the last record is "w9 " + 12 bytes + "\n": 16 bytes
    for binary in (None, True):
        with pytest.raises(RnnkitError, match=f"malformed word2vec file {re.escape(str(path))}: {message};"):
            WordVectors.load(path, binary)


@pytest.mark.parametrize(
    "binary, header", [(False, b"2 1000000000"), (True, b"2 1000000000"), (True, b"100000000000 3")]
)
def test_a_header_of_sizes_past_the_file_is_one_line_not_out_of_memory(tmp_path, binary, header):
    """A damaged header ('17 1000000000' for '17 8') allocated the (V, E) array before reading a vector: 7.5 GB
    for 2 words, said by the command line as 'out of memory ... choose smaller sizes' (numpy's MemoryError)."""
    path = tmp_path / "v"
    WordVectors(["a", "b"], np.ones((2, 3), np.float32)).save(path, binary=binary)
    path.write_bytes(header + path.read_bytes()[3:])
    with pytest.raises(
        RnnkitError, match=f"its header '{header.decode()}' promises .* more than its .* bytes hold"
    ):
        WordVectors.load(path, binary)


def test_a_save_through_a_symbolic_link_writes_the_file_it_points_to(tmp_path):
    """The rename that makes a save whole put a file in the link's place: the link was gone, and the file it
    pointed to (kept elsewhere, shared) kept the old vectors."""
    store = tmp_path / "store"
    store.mkdir()
    WordVectors(["a"], np.zeros((1, 2), np.float32)).save(store / "v.txt")
    link = tmp_path / "v.txt"
    link.symlink_to(store / "v.txt")
    WordVectors(["b"], np.ones((1, 2), np.float32)).save(link)
    assert link.is_symlink() and WordVectors.load(store / "v.txt").words == ["b"]
    assert sorted(p.name for p in store.iterdir()) == ["v.txt"]


def test_a_save_over_a_folder_names_the_folder(tmp_path):
    """The rename's error named the temporary file (Is a directory: '.../v.txt.x1y2z3.tmp' -> '.../v.txt'), and the
    command line's one line named only that file."""
    (tmp_path / "v.txt").mkdir()
    with pytest.raises(
        RnnkitError, match=f"^cannot save {re.escape(str(tmp_path / 'v.txt'))}: it is a folder"
    ):
        WordVectors(["a"], np.ones((1, 3), np.float32)).save(tmp_path / "v.txt")
    assert [p.name for p in tmp_path.iterdir()] == ["v.txt"]


def test_a_text_file_saved_with_a_byte_order_mark_reads(tmp_path):
    """A vectors file saved by a Windows editor starts with a UTF-8 byte-order mark: its header read as 'binary
    data, not the V E header', where every other text file rnnkit reads takes the mark as no part of the text."""
    path = tmp_path / "v.txt"
    path.write_bytes("\ufeff2 3\nthe 1 2 3\ncafé 4 5 6\n".encode())
    wv = WordVectors.load(path)
    assert wv.words == ["the", "café"] and wv["café"].tolist() == [4, 5, 6]


def test_vectors_whose_norm_overflows_float32_keep_their_direction():
    """|x|² was summed in float32: past about 1.8e19 it overflowed (a RuntimeWarning), the unit vector became 0 and
    every cosine with that word read 0."""
    wv = WordVectors(["a", "b", "c"], np.array([[2e19, 0], [1, 0], [0, 1]], np.float32))
    assert wv.similarity("a", "b") == pytest.approx(1.0) and wv.similarity("a", "c") == 0.0
    assert wv.neighbours("a", 1)[0][0] == "b"


def test_a_repeated_word_keeps_its_first_vector_as_gensim_does(tmp_path):
    """A vectors file with a word twice: the index took the last row and the other came up as the word's own
    nearest neighbour; gensim keeps the first vector and drops the repeat, with a warning."""
    path = tmp_path / "v.txt"
    path.write_text("3 2\ncat 1 0\ndog 0 1\ncat 0.9 0.1\n")
    with pytest.warns(UserWarning, match=r"1 repeated word\(s\) \(such as 'cat'\): the first vector"):
        wv = WordVectors.load(path)
    assert wv.words == ["cat", "dog"]
    np.testing.assert_array_equal(wv["cat"], [1, 0])
    assert [w for w, _ in wv.neighbours("cat", 5)] == ["dog"]


def test_a_text_file_loads_in_about_twice_its_size_of_memory(tmp_path):
    """Its lines became lists of Python floats (32 bytes a number written in about 10): loading took 6 times the
    file's size, 6 GB for a GoogleNews-sized file. Now read line by line into a float32 array."""
    path = tmp_path / "v.txt"
    rng = np.random.default_rng(0)
    WordVectors([f"w{i}" for i in range(500)], rng.standard_normal((500, 100)).astype(np.float32)).save(path)
    wv, peak = _traced_peak(lambda: WordVectors.load(path))
    assert wv.vectors.shape == (500, 100) and peak < 3 * path.stat().st_size


def test_a_file_with_a_number_beyond_float32_is_one_error_without_a_numpy_warning(tmp_path):
    """Its 1e39 overflowed float32 in the read with numpy's 'RuntimeWarning: overflow encountered in cast' before
    the one line that names the word (as the constructor's own cast does, the read says it once)."""
    path = tmp_path / "v.txt"
    path.write_text("2 2\na 1 0\nb 1e39 1\n")
    with pytest.raises(RnnkitError, match="the vector of 'b' is not finite in float32"):
        WordVectors.load(path)


def test_nearest_takes_a_torch_vector():
    """nearest(torch tensor), a vector from a model's embedding, failed in numpy's @ ("unsupported operand")."""
    wv = WordVectors(["a", "b", "c"], np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32))
    assert wv.nearest(torch.tensor([1.0, 0.5]), 2) == wv.nearest(np.array([1.0, 0.5]), 2)


@pytest.mark.parametrize("scale", [2e19, 1e-30, 1e-36])
def test_nearest_reads_the_direction_of_a_query_whose_float32_norm_overflows_or_underflows(scale):
    """nearest divided the query by numpy's norm, summed in its float32: a query past |q| = 1.8e19 (a large word's
    own vector, as vectors past it are taken) overflowed to inf (a RuntimeWarning, then every cosine 0), and one
    below 1e-19 underflowed to 0, which the 1e-12 floor turned into cosines of 1e-18."""
    wv = WordVectors(["a", "b", "c"], np.array([[1, 0.1], [0, 1], [-1, 0]], np.float32))
    got = wv.nearest(np.array([scale, 0.1 * scale], np.float32), 3)
    assert [w for w, _ in got] == ["a", "b", "c"]
    np.testing.assert_allclose(
        [cos for _, cos in got], [1, 0.1 / np.hypot(1, 0.1), -1 / np.hypot(1, 0.1)], rtol=1e-6
    )


def test_nearest_makes_no_float64_copy_of_the_vectors():
    """nearest's query in float64 (4dfd367) made `unit @ q` copy every vector to float64 on each query: 2x the
    vectors' memory and 27x the time (a 400,000 x 100 vocabulary: 0.71 s a neighbours for 0.026)."""
    wv = WordVectors([f"w{i}" for i in range(20_000)], np.random.default_rng(0).standard_normal((20_000, 50)))
    near, peak = _traced_peak(lambda: wv.neighbours("w5", topn=3))
    assert peak < wv.unit.nbytes  # (a float64 copy alone is twice it)
    cos = wv.unit @ wv.unit[5].astype(np.float64)
    cos[5] = -np.inf
    assert [w for w, _ in near] == [f"w{i}" for i in np.argsort(-cos, kind="stable")[:3]]


@pytest.mark.parametrize("x", [3e38, 1e-40])
def test_vectors_whose_norm_is_past_float32s_range_keep_their_direction(x):
    """The unit vectors divided by the norms cast to float32: a norm past float32's largest number (a vector of
    entries 3e38) became inf (a RuntimeWarning) and its unit vector 0, every cosine with it 0; a norm among float32's
    subnormals (entries 1e-40) was rounded off, its unit vector longer than 1 and cosines up to 1.41."""
    wv = WordVectors(["a", "b", "c"], np.array([[x, x], [1, 1], [1, 0]], np.float32))
    assert wv.similarity("a", "b") == pytest.approx(1.0, abs=1e-6)
    assert wv.similarity("a", "c") == pytest.approx(2**-0.5, abs=1e-6)
    np.testing.assert_allclose(np.linalg.norm(wv.unit, axis=1), 1, atol=1e-6)


@pytest.mark.parametrize("counts", [[10**9] + [1] * 500_000, [5000, 700, 90, 12, 1]])
def test_negatives_are_drawn_from_the_unigram_distribution_to_the_three_quarters(counts):
    """Negatives came from a table of a million slots, each word at least one: in a vocabulary of many rare words each
    rare word's share was rounded up to a slot, and here the rare words were drawn 35% of the time for their 8%."""
    m = Word2Vec(negative=5)
    m.counts, m.generator = np.array(counts, np.float64), torch.Generator().manual_seed(0)
    m._noise_distribution()
    draws = m._negatives(100_000).numpy().ravel()
    p = m.counts**0.75 / (m.counts**0.75).sum()
    assert abs((draws > 0).mean() - p[1:].sum()) < 0.005  # the 500,000 rare words' share, about 0.082
    if len(counts) == 5:  # a chi-square test over the words: p > 0.001 but once in a thousand seeds
        observed = np.bincount(draws, minlength=len(p))
        chi2 = ((observed - p * len(draws)) ** 2 / (p * len(draws))).sum()
        assert chi2 < 18.5  # the 0.999 quantile of chi-square with 4 degrees of freedom


@pytest.mark.parametrize("counts", [[100, 100, 1, 1], [40, 30, 20, 10, 3, 2, 1], [7, 7, 7]])
def test_the_noise_alias_table_holds_the_unigram_distribution_to_the_three_quarters_exactly(counts):
    """Walker's alias table gives word j slot j's share keep_j and every slot i aliased to it its share 1 - keep_i, of
    V equal slots: P(j) = (keep_j + Σ_{i: alias_i = j} (1 - keep_i)) / V must be count_j^0.75 / Σ_k count_k^0.75
    exactly (to rounding). Vocabularies of several frequent words, whose slots fall below one as they fill others'."""
    m = Word2Vec(negative=5)
    m.counts = np.array(counts, np.float64)
    m._noise_distribution()
    keep, alias = m.noise_keep.numpy(), m.noise_alias.numpy()
    P = (keep + np.bincount(alias, weights=1 - keep, minlength=len(counts))) / len(counts)
    np.testing.assert_allclose(P, m.counts**0.75 / (m.counts**0.75).sum(), rtol=1e-12, atol=1e-15)
    assert ((0 <= keep) & (keep <= 1)).all()


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_each_epoch_draws_its_own_pairs(backend, monkeypatch):
    """Each epoch subsamples and draws its windows anew, as word2vec.c and gensim do: three epochs, three draws of
    pairs, each another (a torch run that kept epoch 0's pairs for epoch 1 would draw two)."""
    drawn, pairs = [], Word2Vec._pairs
    monkeypatch.setattr(Word2Vec, "_pairs", lambda self, *a: drawn.append(pairs(self, *a)) or drawn[-1])
    Word2Vec(min_count=1, dimension=4, epochs=3, backend=backend).fit(planted_corpus())
    assert len(drawn) == 3
    assert not any(np.array_equal(a[0], b[0]) for i, a in enumerate(drawn) for b in drawn[i + 1 :])


def test_the_torch_backends_negative_sampling_step_is_sgd_on_the_gradient_of_the_batchs_loss():
    """One step of the batched torch path moves U and V_out by -lr times the gradient of the batch's loss
    J = Σ_b [-log σ(u_{w_b}·v_{c_b}) - Σ_k log σ(-u_{w_b}·v_{n_bk})] (a negative equal to its target left out), rows
    shared by pairs moved by the sum of their gradients: checked against autograd, for U and V_out both."""
    g = torch.Generator().manual_seed(0)
    V, E, lr = 7, 4, 0.1
    m = Word2Vec(model="skip-gram", backend="torch", dimension=E, negative=2)
    m.U, m.V_out = torch.randn(V, E, generator=g), torch.randn(V, E, generator=g)
    w, ctx = torch.tensor([0, 1, 0, 3]), torch.tensor([1, 2, 4, 1])
    neg = torch.tensor([[5, 6], [2, 5], [6, 3], [0, 0]])  # pair 1's 2 is its target, left out
    U, V_out = m.U.double().requires_grad_(), m.V_out.double().requires_grad_()
    s_pos = (U[w] * V_out[ctx]).sum(1)
    s_neg = (U[w][:, None, :] * V_out[neg]).sum(2)
    J = (
        -torch.nn.functional.logsigmoid(s_pos).sum()
        - (torch.nn.functional.logsigmoid(-s_neg) * (neg != ctx[:, None])).sum()
    )
    dU, dV = torch.autograd.grad(J, (U, V_out))
    m._step(w, ctx, lr, False, neg)
    torch.testing.assert_close(m.U.double(), (U - lr * dU).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.V_out.double(), (V_out - lr * dV).detach(), rtol=1e-5, atol=1e-6)


def test_save_refuses_words_that_are_not_str(tmp_path):
    """Word2Vec trains on tokens of any kind (ids as ints, here), and saving its vectors then failed inside the check
    of the words' characters: "TypeError: argument of type 'int' is not iterable"."""
    wv = (
        Word2Vec(min_count=1, backend="torch", epochs=1, dimension=4).fit([[1, 2, 3, 4], [2, 3, 4, 5]] * 5).wv
    )
    for binary in (False, True):
        with pytest.raises(
            RnnkitError, match=r"cannot save the word 2 \(int\) in word2vec format: words must be str"
        ):
            wv.save(tmp_path / "v", binary=binary)
    assert not (tmp_path / "v").exists()
    with pytest.raises(RnnkitError, match=r"cannot save the word None \(NoneType\)"):
        WordVectors(["a", None], np.ones((2, 3), np.float32)).save(tmp_path / "v")


@pytest.mark.parametrize("score", ["A", "nan"])
def test_a_word_pairs_file_whose_third_column_is_no_score_is_named(tmp_path, score):
    """SimLex-999's file (word1, word2, POS, score, ...) given as it is failed with float's "could not convert
    string to float: 'A'", naming neither the file nor the column; a NaN score gave a NaN ρ in silence."""
    wv = WordVectors(["old", "new", "cat"], np.eye(3, dtype=np.float32))
    path = tmp_path / "pairs.tsv"
    path.write_text(f"word1\tword2\tPOS\tSimLex999\nold\tnew\t{score}\t1.58\ncat\tnew\tN\t0.5\n")
    with pytest.raises(RnnkitError, match=rf"pairs.tsv, line 2: its third column '{score}' is no score"):
        wv.evaluate_similarity(path)


def test_a_word_pairs_file_of_spaces_reads_as_one_of_tabs(tmp_path):
    """MEN's file separates its columns by spaces: every line was skipped as one of fewer than 3 columns, and the
    result was (nan, 0) in silence."""
    wv = WordVectors(
        ["sun", "sunlight", "cat", "dog"], np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    )
    rows = [("sun", "sunlight", "50.0"), ("cat", "dog", "40.0"), ("sun", "cat", "2.0")]
    (tmp_path / "tabs.txt").write_text("".join("\t".join(r) + "\n" for r in rows))
    (tmp_path / "spaces.txt").write_text("".join(" ".join(r) + "\n" for r in rows))
    want = wv.evaluate_similarity(tmp_path / "tabs.txt")
    assert want[1] == 3 and wv.evaluate_similarity(tmp_path / "spaces.txt") == want


@pytest.mark.parametrize("sentences", [b"the cat sat on the mat", [b"the cat sat on the mat"] * 20])
def test_bytes_sentences_are_refused(sentences):
    """Lines read from a file opened in binary mode: iterating bytes gives byte values, and Word2Vec trained vectors
    of the numbers 32, 97, 116, ... in silence where str was refused."""
    with pytest.raises(RnnkitError, match=r"lists of words, not bytes: decode them first"):
        Word2Vec(min_count=1, backend="torch").fit(sentences)


def test_vectors_from_a_device_or_an_endless_pipe_are_refused(pipe, monkeypatch):
    """WordVectors.load('/dev/zero') (`rnnkit neighbours /dev/zero the`) read its first line to an end that never
    came, the memory filled. A pipe or a device is read up to STREAM_BYTES, then refused in one line; a pipe of
    vectors still loads."""
    monkeypatch.setattr("rnnkit._io.STREAM_BYTES", 1 << 20, raising=False)
    endless = pipe(b"\0" * 65536, 64)  # 4 MiB without a newline
    with pytest.raises(
        RnnkitError, match=r"is a pipe or a device that gave more than 1,048,576 bytes without an end"
    ):
        WordVectors.load(endless)
    wv = WordVectors.load(pipe(b"2 2\ncat 1 0\ndog 0 1\n", 1))
    assert wv.words == ["cat", "dog"] and wv.vectors.tolist() == [[1, 0], [0, 1]]


def test_training_whose_vectors_blow_up_but_stay_finite_is_said_to_diverge():
    """The divergence check read the vectors' finiteness only: the torch backend on 3 words (cbow, alpha 0.05) took
    the loss from 3.0 to 2.8e34 a pair and returned its vectors in silence. The loss at the end of
    training is now read too: past 10 times its start (that of V_out = 0, which predicts nothing), it diverged."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.integers(0, 3, 10)] for _ in range(300)]
    m = Word2Vec(model="cbow", backend="torch", min_count=1, dimension=10, epochs=3, alpha=0.05, sample=0,
                 cbow_update="gradient")  # fmt: skip
    with pytest.raises(
        RnnkitError,
        match=r"training diverged: its loss rose from 3\.\d+ to \d\.\de\+\d\d a pair; give a smaller",
    ):  # (figures not pinned: they follow the order of the random draws, which other tests check)
        m.fit(sentences)
    assert not hasattr(m, "wv")


@pytest.mark.parametrize("end, diverged", [(9.0, False), (11.0, True)])
def test_a_loss_that_ends_past_ten_times_its_start_is_said_to_diverge(end, diverged, monkeypatch):
    """fit reads the loss at the end against its start (that of V_out = 0, which predicts nothing): past 10 times it,
    training diverged, however finite the vectors; below it, it trained. Each step's loss here is 1 a pair, the one at
    the end (rate 0) `end`."""
    monkeypatch.setattr(Word2Vec, "_step", lambda self, w, ctx, lr, need_loss, neg=None: (
        float(len(w)) * (1.0 if lr else end) if need_loss else None))  # fmt: skip
    m = Word2Vec(min_count=1, dimension=4, epochs=1, sample=0, backend="torch")
    sentences = [s.split() for s in ["the cat sat on the mat", "a dog sat on a log"]]
    if diverged:
        with pytest.raises(RnnkitError, match=r"training diverged: its loss rose from 1 to 11 a pair; give"):
            m.fit(sentences)
    else:
        assert m.fit(sentences).loss_history[-1] == end


@pytest.mark.parametrize("tail, line", [("dog 7 8 9\n", 4), ("dog 7 8 9", 4), ("\n \ndog 7 8 9\n\n", 6)])
def test_a_text_file_with_more_vectors_than_its_header_says_is_refused(tmp_path, tail, line):
    """A text file of 3 vectors under a header of 2 (a word appended by hand, the header left): the third was
    dropped in silence, where a binary file with bytes past its V-th vector is refused; blank lines at the end
    still read."""
    path = tmp_path / "v.txt"
    path.write_text("2 3\nthe 1 2 3\ncat 4 5 6\n" + tail)
    with pytest.raises(RnnkitError, match=rf"^malformed word2vec file .*v.txt: lines follow the last of its 2 "
                                          rf"vectors \(line {line} on\); is the header's count of words right\?"):  # fmt: skip
        WordVectors.load(path)
    path.write_text("2 3\nthe 1 2 3\ncat 4 5 6\n\n \n")
    assert WordVectors.load(path).words == ["the", "cat"]


def test_evaluation_files_with_a_byte_order_mark_or_not_utf8(tmp_path):
    """A pairs or questions file saved with a byte-order mark (a Windows editor's): the mark was read as part of
    the first word, whose line was skipped as one of unknown words in silence (2 pairs of 3 scored, 0 questions of
    1); a file not in UTF-8 (Latin-1) was a UnicodeDecodeError naming no file."""
    wv = WordVectors(["café", "tea", "cup", "mug"], np.random.default_rng(0).normal(size=(4, 3)))
    pairs, questions = tmp_path / "pairs.txt", tmp_path / "questions.txt"
    text = "café\ttea\t8.0\ntea\tcup\t3.0\ncup\tmug\t9.5\n"
    pairs.write_bytes(text.encode())
    want = wv.evaluate_similarity(pairs)
    pairs.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert want[1] == 3 and wv.evaluate_similarity(pairs) == want
    questions.write_bytes("\ufeffcafé tea cup mug\n".encode())
    assert wv.evaluate_analogies(questions)[1] == 1
    for path, evaluate in [(pairs, wv.evaluate_similarity), (questions, wv.evaluate_analogies)]:
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(
            RnnkitError, match=rf"^cannot read {re.escape(str(path))}: .*; give a UTF-8 text file$"
        ):
            evaluate(path)


def test_evaluation_files_end_a_line_at_a_newline_only_as_gensim_reads_them(tmp_path):
    """gensim's evaluate_word_analogies and evaluate_word_pairs read their files line by line in binary: a line ends
    at b'\\n' only, and its words are split at white space, U+2028, U+0085 and a form feed among it. str.splitlines
    ended a line at those too: 'king man queen woman\\u2028# note' (6 words, no question to gensim) was a question and
    a line of no question, 'paris france rome\\u2028italy' two lines of no question: 1 question scored of gensim's 2."""
    rng = np.random.default_rng(0)
    wv = WordVectors(
        ["king", "man", "queen", "woman", "paris", "france", "rome", "italy"], rng.normal(size=(8, 5))
    )
    text = "king man queen woman\u2028# note\r\nparis france rome\u2028italy\nman king woman\x85queen\n: x\x0cy\n"
    (tmp_path / "q.txt").write_text(text, encoding="utf-8", newline="")
    want = [q for q in (line.lower().split() for line in text.split("\n")) if len(q) == 4]  # gensim's
    assert len(want) == 2 and wv.evaluate_analogies(tmp_path / "q.txt")[1] == 2
    pairs = "king\tqueen\t8.5\nman\twoman\t7.0\x0c\nparis\u2028france 6\r\nrome\titaly\t5.5\n"
    (tmp_path / "p.txt").write_text(pairs, encoding="utf-8", newline="")
    assert wv.evaluate_similarity(tmp_path / "p.txt")[1] == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_word_vectors_of_an_embedding_layers_weight(dtype):
    """WordVectors(vocab.itos, embedding.weight), the vectors a model learnt: a weight that requires grad failed in
    numpy ("Can't call numpy() on Tensor that requires grad"), a bfloat16 one with "Got unsupported ScalarType
    BFloat16", where nearest takes a torch vector."""
    from rnnkit.text import Embedding

    emb = Embedding(3, 4).to(dtype)
    wv = WordVectors(["the", "cat", "sat"], emb.weight)
    assert wv.vectors.dtype == np.float32 and wv.vectors.shape == (3, 4)
    np.testing.assert_array_equal(wv.vectors, emb.weight.detach().float().numpy())
    assert wv.neighbours("cat", 1)[0][0] in ("the", "sat")


@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_a_window_wider_than_the_sentences_reaches_across_the_longest_sentence_only(model):
    """window=10**6 (whole sentences, as gensim users set it) was cut to the corpus's length, not the longest
    sentence's: on 400 sentences of 5 words CBOW's rows held 2 · 1,999 slots for the 8 a centre can have (32 MB for
    128 kB; 6.4 GB on 4,000 sentences of 10 words), and skip-gram listed pairs for each of 1,999 distances, 4 with
    any (the corpus's length squared: 2 s an epoch on 20,000 words, hours on a million)."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.integers(0, 50, 5)] for _ in range(400)]
    w = Word2Vec(model=model, window=10**6, min_count=1, sample=0, dimension=4, epochs=1)
    w.build_vocab(sentences)
    w.rng = np.random.default_rng(0)
    centres, contexts = w._pairs(*w._encode(sentences))
    if model == "skip-gram":  # every ordered pair of each sentence
        assert len(centres) == 400 * 5 * 4
    else:  # a row per word, its sentence's 4 other words
        assert contexts.shape == (2000, 8) and ((contexts >= 0).sum(1) == 4).all()


@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_each_centre_takes_a_window_drawn_from_1_to_window_on_both_sides_within_its_sentence(model):
    """word2vec.c's reduced window: each centre draws b uniformly from 1..window and takes the words at distances 1..b
    on both sides, not past its sentence's first or last word. Each word of this corpus occurs once, so a pair's words
    give their positions: a centre's contexts must be exactly those at -b..-1 and 1..b within its sentence, with b
    (the farthest taken; 30-word sentences leave room on one side at least) taking each of 1..5 about 1/5 of the
    time; a centre with no context (a sentence of one word) has no pair."""
    sentences = [[f"s{k}w{i}" for i in range(30)] for k in range(12)] + [["alone"]]
    w = Word2Vec(model=model, window=5, min_count=1, sample=0, dimension=4, epochs=1)
    w.build_vocab(sentences)
    w.rng = np.random.default_rng(0)
    centres, contexts = w._pairs(*w._encode(sentences))
    where = {i: tuple(int(x) for x in s[1:].split("w")) for i, s in enumerate(w.vocab.itos) if s != "alone"}
    taken = {}  # centre -> the offsets of its contexts
    if model == "skip-gram":
        for c, x in zip(centres.tolist(), contexts.tolist()):
            assert where[c][0] == where[x][0]  # (KeyError: "alone" in a pair)
            taken.setdefault(c, []).append(where[x][1] - where[c][1])
    else:  # a row a centre: slots -reach..-1, 1..reach (reach 5), -1 where unused
        offsets = [*range(-5, 0), *range(1, 6)]
        assert contexts.shape[1] == 10 and len(set(centres.tolist())) == len(centres)
        for c, row in zip(centres.tolist(), contexts.tolist()):
            taken[c] = [o for o, x in zip(offsets, row) if x >= 0]
            assert all(where[x] == (where[c][0], where[c][1] + o) for o, x in zip(offsets, row) if x >= 0)
    assert sorted(taken) == sorted(where)  # every word of a sentence of two or more is a centre
    reach = []
    for c, got in taken.items():
        b, at = max(map(abs, got)), where[c][1]
        assert sorted(got) == [o for o in range(-b, b + 1) if o and 0 <= at + o < 30], (c, got)
        reach.append(b)
    assert sorted(set(reach)) == [1, 2, 3, 4, 5] and all(40 <= reach.count(b) <= 110 for b in range(1, 6))


@pytest.mark.parametrize("words, shape", [([], (0, 3)), (["the", "cat"], (2, 0))])
def test_save_refuses_vectors_of_no_words_or_no_numbers(tmp_path, words, shape):
    """They were saved under the header '0 3' or '2 0', which load refuses as one that promises no vectors: a file
    written without a word that neither load nor the command line read back."""
    wv = WordVectors(words, np.zeros(shape, np.float32))
    for binary in (False, True):
        with pytest.raises(
            RnnkitError, match=rf"cannot save {shape[0]} words of {shape[1]} numbers each in word2vec "
        ):
            wv.save(tmp_path / "v", binary=binary)
    assert not (tmp_path / "v").exists()


def test_a_seed_past_32_bits_is_refused_not_run_as_its_low_32_bits():
    """torch's generator keeps a seed's low 32 bits: seed 2**32 + 3 drew the initial vectors and every noise word of
    seed 3 (the same U before training), in silence, where the command line's --seed is refused past 2^32."""
    with pytest.raises(
        RnnkitError, match=r"--seed must be a whole number >= 0 and < 2\*\*32 .*got 4294967299"
    ):
        Word2Vec(seed=2**32 + 3)
    Word2Vec(seed=2**32 - 1)


@pytest.mark.parametrize("binary", [False, True])
def test_vectors_compressed_with_gzip_or_bzip2_load_as_gensim_loads_them(tmp_path, binary):
    """A .bin.gz (GoogleNews-vectors-negative300.bin.gz), which gensim reads, was 'its first line is binary data';
    a damaged one is one line too."""
    import bz2
    import gzip

    wv = WordVectors(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2))
    wv.save(tmp_path / "v", binary=binary)
    raw = (tmp_path / "v").read_bytes()
    for name, packed in [("v.gz", gzip.compress(raw)), ("v.bz2", bz2.compress(raw))]:
        (tmp_path / name).write_bytes(packed)
        again = WordVectors.load(tmp_path / name)
        assert again.words == wv.words
        np.testing.assert_array_equal(again.vectors, wv.vectors)
    gz = gzip.compress(raw)
    garbled = gz[:10] + bytes(255 - b for b in gz[10:])
    for packed in [gz[:-12], garbled, bz2.compress(raw)[:-8]]:
        (tmp_path / "bad").write_bytes(packed)
        with pytest.raises(RnnkitError, match=r"cannot read vectors .*bad: .*(gzip|bzip2)"):
            WordVectors.load(tmp_path / "bad")


@pytest.mark.parametrize("binary", [False, True])
def test_vectors_saved_under_a_gz_or_bz2_name_are_compressed_so(tmp_path, binary):
    """save('v.bin.gz') wrote the plain format under that name, which gensim (opening by the name) failed to read;
    it is compressed as the name says now, and reads back here and in gensim (where importable)."""
    import bz2
    import gzip

    wv = WordVectors(["a", "é", "c"], np.arange(6, dtype=np.float32).reshape(3, 2) / 7)
    wv.save(tmp_path / "plain", binary=binary)
    for name, unpack in [("v.bin.gz", gzip.decompress), ("v.bin.BZ2", bz2.decompress)]:
        wv.save(tmp_path / name, binary=binary)
        assert unpack((tmp_path / name).read_bytes()) == (tmp_path / "plain").read_bytes()
        again = WordVectors.load(tmp_path / name)
        assert again.words == wv.words
        np.testing.assert_array_equal(again.vectors, wv.vectors)
    try:
        from gensim.models import KeyedVectors
    except ImportError:
        return
    theirs = KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin.gz"), binary=binary)
    np.testing.assert_array_equal(theirs["é"], wv.vectors[1])


@pytest.mark.parametrize("end", [b"\n", b"", b"\n\n \n"])
def test_a_vectors_file_without_its_header_line_is_told_the_header_to_add(tmp_path, end):
    """GloVe's files have no 'V E' line (gensim reads them with no_header=True): the error said only that the first
    line was no header; it now gives the one to add, which then loads."""
    glove = tmp_path / "glove.txt"
    glove.write_bytes(
        b"the 0.418 0.24968 -0.41242\n, 0.013441 0.23682 -0.16899\n\xc3\xa9t\xc3\xa9 1 2 3" + end
    )
    with pytest.raises(
        RnnkitError, match=r"no header line \(as GloVe writes\)\? add the line '3 3' at its top"
    ):
        WordVectors.load(glove)
    glove.write_bytes(b"3 3\n" + glove.read_bytes())
    assert WordVectors.load(glove).words == ["the", ",", "\u00e9t\u00e9"]


def _analogy_questions(tmp_path, wv, quads):
    """A questions file of the word ids `quads` (w{i}), and how many of them the reference, one question at a time,
    answers right."""
    questions = tmp_path / "q.txt"
    questions.write_text(": all\n" + "".join(" ".join(f"w{i}" for i in q) + "\n" for q in quads))
    want = 0
    for a, b, c, d in quads:
        cos = wv.unit @ (wv.unit[b] - wv.unit[a] + wv.unit[c])
        cos[[a, b, c]] = -np.inf
        want += int(cos.argmax() == d)
    return questions, want


def test_analogy_evaluation_scores_in_chunks_of_bounded_memory(tmp_path):
    """It scored 512 questions against every word at once: a (512, V) float32 block, 6 GB for GoogleNews's 3 million
    words (here 100,000 words: 200 MB, two of them alive at once). Now one buffer of about 64 MB, same accuracy."""
    V = 100_000
    rng = np.random.default_rng(0)
    wv = WordVectors([f"w{i}" for i in range(V)], rng.standard_normal((V, 4)).astype(np.float32))
    quads = rng.integers(0, V, (600, 4))
    questions, want = _analogy_questions(tmp_path, wv, quads)
    (accuracy, n), peak = _traced_peak(lambda: wv.evaluate_analogies(questions))
    assert n == 600 and accuracy == want / 600
    assert peak < 150e6, peak  # (was 270 MB; now the 64 MB buffer and the dictionaries of 100,000 words)


def test_softmax_training_that_diverges_is_told_a_fix_it_can_use():
    """The full softmax (torch backend only) that diverged was told to use the native backend, which refuses it
    ('runs negative sampling only'); a smaller batch is what trains it."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{x}" for x in rng.zipf(1.5, rng.integers(1, 30)) % 40] for _ in range(60)]
    options = dict(loss="softmax", window=10**6, sample=0, epochs=2, dimension=7, min_count=1)
    with pytest.raises(RnnkitError, match=r"diverged: .*; or a --batch-size below 640, the batch here") as e:
        Word2Vec(**options).fit(sentences)
    assert "--backend native" not in str(e.value)
    m = Word2Vec(**options, batch_size=64).fit(sentences)
    assert m.loss_history[-1] < m.loss_history[0]


def test_analogy_evaluation_keeps_512_questions_a_product_for_a_large_vocabulary(tmp_path, monkeypatch):
    """The 64 MB buffer held fewer questions for a larger vocabulary (16 a product at 1 million words, 5 for
    GoogleNews's 3 million), each product reading all V vectors for so few: 1 million words of 300, 2048 questions,
    23.9 s on one thread. The words are now taken in blocks, 512 questions a product (15.8 s); the same answers as
    one question at a time."""
    V = 50_000  # (327 questions a product before)
    rng = np.random.default_rng(1)
    wv = WordVectors([f"w{i}" for i in range(V)], rng.standard_normal((V, 16)).astype(np.float32))
    quads = rng.integers(0, V, (600, 4))
    a, b, c = (wv.unit[quads[:300, k]] for k in range(3))
    quads[:300, 3] = (wv.unit @ (b - a + c).T).argmax(0)  # half of them answered right (a, b or c, some)
    questions, want = _analogy_questions(tmp_path, wv, quads)
    rows, matmul = [], np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b, **k: rows.append(len(a)) or matmul(a, b, **k))
    accuracy, n = wv.evaluate_analogies(questions)
    assert n == 600 and accuracy == want / 600 and want > 0
    assert set(rows) == {512, 88}, sorted(set(rows))


def test_softmax_divergence_names_the_batch_that_ran():
    """'a smaller --batch-size (2048 here)' where 40 words capped the batches at 640 pairs: --batch-size 1024 or
    700 diverged the same (3.69 -> 3.25e+27). The hint names the batch that ran (256, below it, trains)."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{x}" for x in rng.zipf(1.5, rng.integers(1, 30)) % 40] for _ in range(60)]
    options = dict(loss="softmax", window=10**6, sample=0, epochs=2, dimension=7, min_count=1)
    for size in (2048, 1024):
        with pytest.raises(
            RnnkitError, match=rf"or a --batch-size below 640, the batch here \(--batch-size {size}, "
        ):
            Word2Vec(**options, batch_size=size).fit(sentences)
    with pytest.raises(RnnkitError, match=r"or a --batch-size below 512: this torch"):
        Word2Vec(**options, batch_size=512).fit(sentences)
    m = Word2Vec(**options, batch_size=256).fit(sentences)
    assert m.loss_history[-1] < m.loss_history[0]


def test_compressed_vectors_from_a_pipe_are_named(tmp_path):
    """Compressed vectors are known by their first bytes in a file, but from a pipe or a device (<(curl ... .bin.gz))
    they were only 'its first line is binary data, not the 'V E' header'; the line now says what they are."""
    import gzip
    import os
    import threading

    wv = WordVectors(["a", "b", "c"], np.arange(6, dtype=np.float32).reshape(3, 2))
    wv.save(tmp_path / "v", binary=True)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(gzip.compress((tmp_path / "v").read_bytes()),))
    writer.start()
    try:
        with pytest.raises(
            RnnkitError, match=r"binary data, .*; it is gzip data from a pipe or a device: give the "
        ):
            WordVectors.load(fifo)
    finally:
        writer.join()


def test_word2vec_batch_size_help_states_the_cap_that_runs():
    """word2vec --help said the torch backend's batch holds at most 16 pairs a word of the vocabulary, but it never
    falls below 256 pairs: a 9-word corpus at --batch-size 2048 ran batches of 256 (28 a word, not 144). The help
    says 'at most 16 a word of the vocabulary or 256, whichever is more'."""
    from rnnkit.cli import build_parser

    (text,) = [
        a.help for a in build_parser().commands["word2vec"]._actions if "--batch-size" in a.option_strings
    ]
    sentences = [[f"w{i}" for i in range(9)]] * 4
    m = Word2Vec(min_count=1, epochs=1, dimension=4, sample=0, batch_size=2048, backend="torch").fit(
        sentences
    )
    assert m._batch_pairs() == max(256, 16 * 9) == 256
    assert "16 a word of the vocabulary or 256, whichever is more" in " ".join(text.split())


@pytest.mark.parametrize("binary", [True, False])
def test_a_word_that_is_not_utf8_is_named_and_loads_with_unicode_errors(tmp_path, binary):
    """word2vec.c cuts a word at 100 bytes, inside a character: such a file (or one of a latin-1 corpus) did not load,
    'malformed ...: can't decode byte 0xbf in position 5' of no word (its binary file was guessed to be text).
    Now the error names the word and unicode_errors (gensim's), which loads it."""
    raw = [b"the", b"caf\xe9", ("é" * 50).encode()[:99]]
    x = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    if binary:
        body = b"".join(w + b" " + v.astype("<f4").tobytes() + b"\n" for w, v in zip(raw, x))
    else:
        body = b"".join(w + b" " + b" ".join(b"%f" % f for f in v) + b" \n" for w, v in zip(raw, x))
    path = tmp_path / "v"
    path.write_bytes(b"3 2\n" + body)
    with pytest.raises(
        RnnkitError, match=r"the word of vector 2, 'caf\\\\xe9', is not UTF-8 .*unicode_errors='replace'"
    ):
        WordVectors.load(path)
    wv = WordVectors.load(path, unicode_errors="replace")
    assert wv.words == ["the", "caf\ufffd", "é" * 49 + "\ufffd"]
    np.testing.assert_array_equal(wv.vectors, x)
    assert WordVectors.load(path, binary, "ignore").words == ["the", "caf", "é" * 49]


@pytest.mark.parametrize("binary, most", [(False, 1.8), (True, 4.7)])
def test_load_frees_the_file_read_before_the_unit_vectors_are_made(tmp_path, binary, most):
    """The file's bytes were held while the unit vectors were made (one file's size more at the peak), and a plain
    file's read() after its header line joined the buffered bytes to the others (a second copy): 100k x 300 loaded
    in 590 MB from text (286 MB), 422 MB from binary (121 MB), a numpy reader and the constructor in 305 MB.
    Peaks here: text 2.37 -> 1.38 times the file's size, binary 5.2 -> 4.2 times the vectors' (unit vectors and a
    float64 block of 4096 rows of them included)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "v"
    WordVectors([f"w{i}" for i in range(5000)], rng.standard_normal((5000, 100)).astype(np.float32)).save(
        path, binary
    )
    wv, peak = _traced_peak(lambda: WordVectors.load(path))
    assert peak < most * (wv.vectors.nbytes if binary else path.stat().st_size)


def test_most_similar_and_cosmul_take_positive_and_negative_words_as_gensim():
    """gensim's wv.most_similar(positive=["king", "woman"], negative=["man"]) and most_similar_cosmul (3CosMul) were
    an AttributeError: only analogy(a, b, c), one word of each, was there. Checked against numpy (and gensim: the
    same words and scores to 1e-6 on PTB skip-gram vectors)."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    X = rng.standard_normal((40, 6)).astype(np.float32) * rng.uniform(0.1, 5, (40, 1)).astype(np.float32)
    wv, U = WordVectors(words, X), X / np.linalg.norm(X, axis=1, keepdims=True)
    for pos, neg in [([3, 11], [7]), ([1, 2, 5], [8, 9]), ([4], [])]:
        given = [words[i] for i in pos + neg]
        cos = U @ (U[pos].sum(0) - U[neg].sum(0))
        cos /= np.linalg.norm(U[pos].sum(0) - U[neg].sum(0))
        c = (1 + U @ U[pos + neg].T) / 2
        mul = c[:, : len(pos)].prod(1) / (c[:, len(pos) :].prod(1) + 1e-6)
        for got, score in [(wv.most_similar, cos), (wv.most_similar_cosmul, mul)]:
            score[pos + neg] = -np.inf
            best = np.argsort(-score)[:5]
            out = got([words[i] for i in pos], [words[i] for i in neg], topn=5)
            assert [w for w, _ in out] == [words[i] for i in best] and not set(given) & {w for w, _ in out}
            np.testing.assert_allclose([s for _, s in out], score[best], rtol=1e-5)
    assert wv.most_similar(["w3", "w11"], ["w7"], 3) == wv.analogy("w3", "w7", "w11", 3)
    assert wv.most_similar("w4", topn=39) == wv.neighbours("w4", 39)  # a str is one word; all the others
    assert len(wv) == 40  # gensim's len(wv) was "object of type 'WordVectors' has no len()"
    with pytest.raises(RnnkitError, match="unknown word.*'nope'"):
        wv.most_similar(["w1"], ["nope"])
    with pytest.raises(RnnkitError, match="most_similar needs a word"):
        wv.most_similar_cosmul()


def test_most_similar_takes_none_as_gensim_and_names_a_vector_given_for_a_word():
    """gensim's signature is most_similar(positive=None, negative=None): most_similar(None, ["w1"]) was 'TypeError:
    'NoneType' object is not iterable', and a vector for a word (gensim takes one) 'unhashable type:
    'numpy.ndarray''."""
    X = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    wv = WordVectors([f"w{i}" for i in range(6)], X)
    assert wv.most_similar(None, ["w1"], 3) == wv.most_similar(negative=["w1"], topn=3)
    assert wv.most_similar_cosmul(["w2"], None, 3) == wv.most_similar_cosmul(["w2"], topn=3)
    for positive in (X[2], [X[2]]):
        with pytest.raises(RnnkitError, match=r"takes words, not vectors: for a vector x use nearest\(x\)"):
            wv.most_similar(positive)


def test_a_binary_file_with_more_vectors_than_its_header_says_names_the_count(tmp_path):
    """A vector appended under the old header ('2 2' over 3 vectors) read '... 14 bytes follow the last of the 2
    vectors; is it binary?' of a binary file; its text twin names the header's count, and so does it now."""
    rng = np.random.default_rng(0)
    WordVectors(["the", "cat", "sat"], rng.normal(size=(3, 2))).save(tmp_path / "v.bin", binary=True)
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "v.bin").write_bytes(b"2 2" + data[3:])
    with pytest.raises(
        RnnkitError, match="14 bytes of more vectors follow the last of its 2; is the header's count"
    ):
        WordVectors.load(tmp_path / "v.bin")


@pytest.mark.parametrize("binary", [None, False])
def test_a_text_file_with_a_word_of_two_words_is_text_and_says_which_line(tmp_path, binary):
    """gensim writes the word 'new york' as it is: read, its text file was guessed binary ('81 bytes follow the last
    of the 4 vectors; is it binary?'), and with --format text it said 'not in word2vec text format; try --format
    binary'. The first line is text, so the file is, and the line that is not is named."""
    path = tmp_path / "v.txt"
    path.write_text(
        "4 3\nthe 0.12573022 -0.13210486 0.64042264\nnew york 0.104900114 -0.5356694 0.36159506\n"
        "cat 1.304 0.94708097 -0.70373523\ndog -1.2654215 -0.62327445 0.04132598\n"
    )
    with pytest.raises(RnnkitError, match=r"line 3 has 4 numbers, expected 3 \(is 'new york' one word\?"):
        WordVectors.load(path, binary)
    with pytest.raises(RnnkitError, match="not in word2vec binary format; try --format text"):
        WordVectors.load(path, binary=True)


@pytest.mark.parametrize("binary", [None, False])
def test_a_text_file_whose_first_word_has_a_space_is_text_and_says_which_line(tmp_path, binary):
    """'new york' on the first line (10 numbers a word): guessed binary, '... bytes of more vectors follow the last of
    its 3; is the header's count of words right?', and with --format text 'not in word2vec text format; try --format
    binary'. A first line that ends in E numbers after its word is text, and the line is named."""
    x = np.random.default_rng(0).standard_normal((3, 10))
    lines = [w + " " + " ".join(f"{v:.6f}" for v in r) for w, r in zip(["new york", "the", "cat"], x)]
    (tmp_path / "v.txt").write_text("3 10\n" + "\n".join(lines) + "\n")
    with pytest.raises(RnnkitError, match=r"line 2 has 11 numbers, expected 10 \(is 'new york' one word\?"):
        WordVectors.load(tmp_path / "v.txt", binary)


def test_a_binary_file_with_a_form_feed_in_a_word_is_binary(tmp_path):
    """word2vec.c splits words on space, tab and newline only: a word with a form feed or a vertical tab (a corpus's
    page break) is its own, written so in its binary file, which gensim reads. Guessed not binary (its check split the
    word on any white space), it was 'malformed ...: line 2 has 1 numbers, expected 3'."""
    x = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    words = [b"the", b"page\x0cbreak", b"v\x0bt"]
    data = b"3 2\n" + b"".join(w + b" " + v.astype("<f4").tobytes() + b"\n" for w, v in zip(words, x))
    (tmp_path / "v.bin").write_bytes(data)
    wv = WordVectors.load(tmp_path / "v.bin")
    assert wv.words == ["the", "page\x0cbreak", "v\x0bt"]
    np.testing.assert_array_equal(wv.vectors, x)


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_a_binary_file_cut_short_in_its_first_vectors_says_to_read_it_as_binary(tmp_path, newline):
    """A binary file that ends within its first 5 records (a header of 4 over 3 vectors, a download cut after 2 of
    GoogleNews's 3 million) is guessed text, and was 'header says 4 words, file has 1 lines' or 'line 2 has 1
    numbers, expected 4', of a file that is binary (--format binary says where it ends)."""
    x = np.random.default_rng(0).normal(0, 0.3, (3, 4)).astype("<f4")
    records = b"".join(w + b" " + v.tobytes() + newline for w, v in zip([b"the", b"cat", b"dog"], x))
    for data in [b"4 4\n" + records, b"3 4\n" + records[:-6], b"3000000 4\n" + records]:
        (tmp_path / "v.bin").write_bytes(data)
        with pytest.raises(
            RnnkitError, match=r"\(or is it a binary file cut short, .*--format binary reads it as"
        ):
            WordVectors.load(tmp_path / "v.bin")
        with pytest.raises(RnnkitError, match=r"file ends|more than its \d+ bytes hold"):
            WordVectors.load(tmp_path / "v.bin", binary=True)
    (tmp_path / "v.txt").write_bytes(b"3 2\nthe 1 2\ncat 3 4\n")  # a text file of fewer lines: said as before
    with pytest.raises(RnnkitError, match=r"header says 3 words, file has 2 lines; expected"):
        WordVectors.load(tmp_path / "v.txt")


def test_a_text_line_of_a_space_too_many_or_no_number_is_named(tmp_path):
    """A text file's line with two spaces in a row was 'line 3 has 3 numbers, expected 2' (the empty field counted as a
    number), or 'is 'cat ' one word?' after the word, and a number with a decimal comma "could not convert string to
    float: b'0,5'", of no line (gensim: 'invalid vector on line 1'; 'could not convert string to float: '0,5'')."""
    for line, said in [
        (
            b"cat 1.0  2.0",
            r"line 3 has a space too many \(two in a row, or one at its start\): the format puts one space",
        ),
        (b"cat  1.0 2.0", "line 3 has a space too many"),
        (b" cat 1.0 2.0", "line 3 has a space too many"),
        (
            b"cat 1.0 0,5",
            r"line 3: '0,5' is no number \(numbers are written as -0.25 or 1.5e-05, with a point\)",
        ),
        (b"cat \xd9\xa3 2", r"line 3: '\u0663' is no number"),
        (b"cat 1 " + b"9" * 60 + b"x", r"line 3: '9{40}\.\.\.' is no number"),
    ]:
        (tmp_path / "v.txt").write_bytes(b"2 2\nthe 0.5 1.5\n" + line + b"\n")
        with pytest.raises(RnnkitError, match=said):
            WordVectors.load(tmp_path / "v.txt")
    (tmp_path / "v.txt").write_bytes(b"2 2\nthe 0.5 1.5\ncat 1 2 3\n")  # a number too many: said as before
    with pytest.raises(RnnkitError, match="line 3 has 3 numbers, expected 2;"):
        WordVectors.load(tmp_path / "v.txt")


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_a_binary_file_with_a_tab_or_a_cr_in_a_word_is_binary(tmp_path, newline):
    """gensim writes a word as it is, a tab or a CR in it too, and reads it back from its binary file; guessed not
    binary (a binary word held no tab or CR), that file was 'header says 4 words, file has 1 lines' (word2vec.c's
    layout: 'line 2 has 1 numbers, expected 3'), where --format binary read it. A text file's line read across its
    lines, its tab in a 'word' of vectors that read as text, is still not binary."""
    x = np.array([[0.5, -1.25, 0.1], [0.3, 0.2, -0.7], [1.0, 0.0, -2.0], [-0.4, 0.9, 0.25]], "<f4")
    for odd in [b"a\tb", b"a\rb", b"ab\r", b"\tab"]:
        words = [b"the", odd, b"cat", b"dog"]
        data = b"4 3\n" + b"".join(w + b" " + v.tobytes() + newline for w, v in zip(words, x))
        (tmp_path / "v.bin").write_bytes(data)
        wv = WordVectors.load(tmp_path / "v.bin")
        assert wv.words == [w.decode() for w in words] and np.array_equal(wv.vectors, x)
    (tmp_path / "v.txt").write_bytes(b"2 1\nkjf\rq\t0.073713 \ng1 0.233216 1.5 \n")
    with pytest.raises(RnnkitError, match="line 2 has 0 numbers, expected 1"):
        WordVectors.load(tmp_path / "v.txt")


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_a_word_of_two_words_beside_a_word_with_a_tab_is_still_said(tmp_path, newline):
    """A word with a tab or a CR, gensim's as it writes it (7622e55), is no evidence of a file of odd words: beside
    one, a true 'new york' loaded 'new' with 'york' and shifted bytes for its vector and '?\x00\x00\ufffd?cat' for
    'cat' (where fd471ed's guess refused the file as text)."""
    x = np.arange(1, 16, dtype="<f4").reshape(5, 3) / 4
    for words in ([b"the", b"new york", b"cat", b"a\tb", b"dog"], [b"the", b"new york", b"cat", b"a\rb"]):
        data = f"{len(words)} 3\n".encode() + b"".join(
            w + b" " + v.tobytes() + newline for w, v in zip(words, x)
        )
        (tmp_path / "v.bin").write_bytes(data)
        for binary in (None, True):
            with pytest.raises(RnnkitError, match="vector 2's word may be 'new york'"):
                WordVectors.load(tmp_path / "v.bin", binary=binary, unicode_errors="replace")


@pytest.mark.parametrize("binary", [False, True])
def test_words_with_a_form_feed_or_a_vertical_tab_save_and_load_back(tmp_path, binary):
    """Such a word of word2vec.c's file (loaded) was refused by save, 'where a space ends the word', though both
    formats, here and in gensim, read it back."""
    wv = WordVectors(["the", "page\x0cbreak", "v\x0bt", "\x0cx\x0b"], np.eye(4, 3, dtype=np.float32))
    wv.save(tmp_path / "v", binary=binary)
    again = WordVectors.load(tmp_path / "v")
    assert again.words == wv.words
    np.testing.assert_array_equal(again.vectors, wv.vectors)
    gensim_models = pytest.importorskip("gensim.models", reason="gensim is not installed (dev extra)")
    assert (
        gensim_models.KeyedVectors.load_word2vec_format(str(tmp_path / "v"), binary=binary).index_to_key
        == wv.words
    )


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=native)])
@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_pairs_are_held_as_int16_or_int32_with_the_same_training(model, backend, monkeypatch):
    """Every epoch's (centre, context) pairs were int64 arrays, 16 bytes a pair and 55 at their making: 300 MB a
    million words of corpus (PTB four times over peaked at 1.37 GB, now 1.0 GB). They are int32 below 2^31 words and
    positions, int16 below 2^15 words, widened a chunk at a time where used: the vectors are the int64 pairs' to the
    bit."""
    import rnnkit.text.word2vec as w2v

    sentences = [
        s.split() for s in ["the cat sat on the mat", "a dog sat on a log", "the dog and the cat"] * 20
    ]
    kw = dict(model=model, backend=backend, dimension=8, epochs=2, min_count=1, seed=1, workers=1)
    w = Word2Vec(**kw).fit(sentences)
    centres, contexts = w._pairs(*w._encode(sentences))
    assert centres.dtype == contexts.dtype == np.int16
    monkeypatch.setattr(w2v, "_word_dtype", lambda n: np.int64)
    monkeypatch.setattr(w2v, "_index_dtype", lambda n: np.int64)
    wide = Word2Vec(**kw).fit(sentences)
    assert wide._pairs(*wide._encode(sentences))[0].dtype == np.int64
    assert torch.equal(w.U, wide.U) and w.loss_history == wide.loss_history


# gensim's records, and word2vec.c's (a newline after each vector)
@pytest.mark.parametrize("newline", [b"", b"\n"])
@pytest.mark.parametrize("errors", ["strict", "replace", "ignore"])
def test_a_binary_file_with_a_word_of_two_words_says_so(tmp_path, newline, errors):
    """gensim writes the word 'new york' as it is, and a binary file ends a word at its space: 'new' took 'york '
    and the first bytes of its vector for numbers, and the next word began with the vector's last bytes. Where
    those were ASCII (':\\x00\\x00P@' here) the file loaded in silence, 'new' with the vector (2.9e+26, 2.0,
    8.8e-44, -4.3e-37) and ':\\x00\\x00P@café' for 'café'; where not, the word was said to be no UTF-8
    ('word2vec.c cuts words at 100 bytes'), with the advice to load it with unicode_errors='replace', which
    loaded the same garbage. A binary file of word2vec.c's (newlines) was read as text: 'line 2 has 1 numbers'."""
    for vector in ([0.75, -0.5, 1e-3, 3.25], [0.75, -0.5, 0.2, -0.6]):  # last bytes ASCII; not UTF-8
        x = np.array([[1.0, 2.0, 3.0, 4.0], vector, [-1.0, 0.5, 0.25, 2.0]], dtype="<f4")
        records = [w.encode() + b" " + v.tobytes() + newline for w, v in zip(["the", "new york", "café"], x)]
        (tmp_path / "v.bin").write_bytes(b"3 4\n" + b"".join(records))
        for binary in (None, True):
            with pytest.raises(RnnkitError, match=r"vector 2's word may be 'new york'.* no word"):
                WordVectors.load(tmp_path / "v.bin", binary, unicode_errors=errors)


def test_a_cut_word_after_a_vector_that_reads_as_text_is_no_word_of_two(tmp_path):
    """A vector may begin with bytes of text and a space (b'ab c', one in a few hundred), and word2vec.c's next word
    be cut at 100 bytes inside a character: that file is no 'new york' (the cut word read past b'c ' is still not
    UTF-8): said as before, and read with unicode_errors='replace'."""
    first = np.frombuffer(b"ab c" + np.array([1.0, 2.0], "<f4").tobytes(), "<f4")
    cut = "é".encode() * 49 + b"\xc3"  # 99 bytes, its last character cut
    data = b"2 3\n" + b"the " + first.tobytes() + b"\n" + cut + b" " + np.ones(3, "<f4").tobytes() + b"\n"
    (tmp_path / "v.bin").write_bytes(data)
    with pytest.raises(RnnkitError, match="the word of vector 2, .* is not UTF-8"):
        WordVectors.load(tmp_path / "v.bin")
    wv = WordVectors.load(tmp_path / "v.bin", unicode_errors="replace")
    assert wv.words == ["the", "é" * 49 + "\ufffd"] and np.array_equal(wv.vectors[0], first)


@native
def test_a_model_trained_on_the_native_backend_pickles_and_copies():
    """pickle.dumps and copy.deepcopy of a Word2Vec trained by the compiled loop failed with "TypeError: cannot
    pickle 'module' object" (the loop kept as self.native). The copy holds the same vectors, and trains again."""
    import copy
    import pickle

    config = dict(dimension=8, window=2, min_count=1, epochs=1, sample=0, backend="native")
    w2v = Word2Vec(**config).fit(planted_corpus())
    for again in (pickle.loads(pickle.dumps(w2v)), copy.deepcopy(w2v)):
        assert np.array_equal(again.wv.vectors, w2v.wv.vectors)
        assert np.array_equal(again.fit(planted_corpus()).wv.vectors, w2v.wv.vectors)


def test_what_fit_makes_asked_before_fit_says_to_fit():
    """Word2Vec().wv (gensim's habit: model.wv.most_similar) was "AttributeError: 'Word2Vec' object has no attribute
    'wv'", and loss_is_finite() the same of loss_history, where NGramLM and TfidfIndex say to call fit first."""
    with pytest.raises(AttributeError, match=r"^this Word2Vec is not trained yet, so it has no wv: call fit"):
        Word2Vec().wv.most_similar("king")
    with pytest.raises(AttributeError, match="has no loss_history: call fit"):
        Word2Vec().loss_is_finite()
    assert not hasattr(Word2Vec(), "wv") and not hasattr(Word2Vec(), "no_such_name")


# a control character; words of Latin-1
@pytest.mark.parametrize("odd, other", [(b"a\x00b948", b"q\x01"), (b"\xe9cole", b"caf\xe9")])
def test_a_file_of_odd_words_after_a_vector_that_reads_as_text_loads_as_gensim_reads_it(tmp_path, odd, other):
    """A vector may begin with bytes of text and a space (b'ri ', one in a few hundred), and the next word hold a
    control character or be of another encoding near its start, as gensim writes and reads them: read past b'ri ',
    its rest ('948', 'ole') was a clean word, and this good file was refused, 'vector 1's word may be 'the ri''.
    Where another word is odd too, that is the file's nature: it loads as before (not UTF-8: said, or replaced)."""
    first = np.frombuffer(b"ri \xc2" + np.array([1.0, 2.0], "<f4").tobytes(), "<f4")
    vectors = np.stack([first, np.ones(3, "<f4"), -np.ones(3, "<f4")]).astype("<f4")
    data = b"3 3\n" + b"".join(w + b" " + v.tobytes() for w, v in zip([b"the", odd, other], vectors))
    (tmp_path / "v.bin").write_bytes(data)
    errors = "strict" if odd.isascii() else "replace"
    wv = WordVectors.load(tmp_path / "v.bin", unicode_errors=errors)
    assert wv.words == ["the", odd.decode("utf-8", "replace"), other.decode("utf-8", "replace")]
    assert np.array_equal(wv.vectors[0], first) and np.array_equal(wv.vectors[2], -np.ones(3))
    if not odd.isascii():
        with pytest.raises(RnnkitError, match=r"the word of vector 2, '\\\\xe9cole', is not UTF-8"):
            WordVectors.load(tmp_path / "v.bin")


def test_a_word2vec_c_file_of_one_odd_word_after_a_vector_that_reads_as_text_loads(tmp_path):
    """word2vec.c writes a newline after each vector: a word of two ('new york') read as 'new' ends its vector read
    past 'york ' at that newline, where a word of its own (b'a\\x00b948', after a vector that begins b'ri ') is read
    past one. That good file, its one odd word, was refused: "vector 1's word may be 'the ri'"."""
    first = np.frombuffer(b"ri \xc2" + np.array([1.0, 2.0], "<f4").tobytes(), "<f4")
    vectors = np.stack([first, np.ones(3, "<f4")]).astype("<f4")
    records = [w + b" " + v.tobytes() + b"\n" for w, v in zip([b"the", b"a\x00b948"], vectors)]
    (tmp_path / "v.bin").write_bytes(b"2 3\n" + b"".join(records))
    wv = WordVectors.load(tmp_path / "v.bin")
    assert wv.words == ["the", "a\x00b948"] and np.array_equal(wv.vectors[0], first)


def test_a_gensim_file_of_one_odd_word_after_a_vector_that_reads_as_text_loads(tmp_path):
    """gensim writes no newline after a vector: a vector that begins with text and a space (b'ri ', b'u4\xc2\xbd ',
    about one in 400) read past it, as a word of two ('new york') is, ends in the next word, and where that word's
    only oddity (a control character, a Latin-1 byte) lay in the bytes read past, the file of that one odd word was
    refused: "vector 1's word may be 'the ri'" (17 of 20,000 random files; gensim loads them). The numbers tell the
    readings apart now: as read, a word vector's; read past the text, shifted, far out of range. A true 'new york'
    is said as before (test_a_binary_file_with_a_word_of_two_words_says_so)."""
    text_first = [
        (b"ri \xc2" + np.array([1.0, 2.0], "<f4").tobytes(), b"a\x00b948"),
        (b"u4\xc3\xbd \xcb\xe4>", b"ge\x1ezqlr12"),  # (-0.0953, 0.4469), drawn from N(0, 0.3^2)
        (b"Y \x9a\xbdC\xdb/\xbe", b"\xe9cole"),  # (-0.0753, -0.1717)
    ]
    for first, odd in text_first:
        E = len(first) // 4
        vectors = np.stack([np.frombuffer(first, "<f4"), np.ones(E, "<f4"), -np.ones(E, "<f4")]).astype("<f4")
        data = f"3 {E}\n".encode() + b"".join(
            w + b" " + v.tobytes() for w, v in zip([b"the", odd, b"cat"], vectors)
        )
        (tmp_path / "v.bin").write_bytes(data)
        wv = WordVectors.load(tmp_path / "v.bin", unicode_errors="replace")
        assert wv.words == ["the", odd.decode("utf-8", "replace"), "cat"]
        assert np.array_equal(wv.vectors, vectors)


def test_a_word_of_two_words_with_a_small_vector_is_still_said(tmp_path):
    """A true 'new 2024' (or 'new YORK') whose vector is small, numbers all below 2^-30 (1e-11 each), was taken for
    a good 'new' whose vector begins as text: read as 'new', the vector ('2024' is 1.7e-07, then bytes shifted) was
    within 2^-30..2^30, read past the text not, and the file loaded 'new' with that garbage and the word '-\\x1eh\\u066ccat'
    for 'cat' in silence (strict too), or said the next word is not UTF-8, 'load it with unicode_errors='replace'',
    which loaded the garbage. Numbers merely small are a small vector's: said as 'may be ...' again."""
    for tail, vector in ((b"2024", "699e302d1e68d9ac"), (b"YORK", "16f3b02bcbebb9ab")):
        x = np.stack([np.ones(2), np.frombuffer(bytes.fromhex(vector), "<f4"), -np.ones(2)]).astype("<f4")
        records = [w + b" " + v.tobytes() for w, v in zip([b"the", b"new " + tail, b"cat"], x)]
        (tmp_path / "v.bin").write_bytes(b"3 2\n" + b"".join(records))
        for errors in ("strict", "replace"):
            with pytest.raises(RnnkitError, match=f"vector 2's word may be 'new {tail.decode()}'"):
                WordVectors.load(tmp_path / "v.bin", unicode_errors=errors)


def test_fits_overlapping_in_threads_put_back_the_thread_count_of_before_both(monkeypatch):
    """fit read torch's thread count as it started, ran on 1 thread and put its reading back as it ended: a fit
    started in a thread while another held 1 read 1 (a new thread takes the count last set) and, ending last, left
    every thread started after on 1 (a fresh thread's torch.get_num_threads() 1 where 2 was set before). The count of
    before the first of the works under way is put back (rnnkit._threads)."""
    threads = torch.get_num_threads()
    entered = {"a": threading.Event(), "b": threading.Event()}
    a_out = threading.Event()
    epoch = Word2Vec._epoch

    def held_epoch(self, *args):  # a holds until b has started, b until a has ended
        name = threading.current_thread().name
        entered[name].set()
        (entered["b"] if name == "a" else a_out).wait(30)
        return epoch(self, *args)

    def fit(name):
        try:
            Word2Vec(min_count=1, epochs=1, sample=0, dimension=4, backend="torch").fit([["a", "b", "c"]] * 5)
        finally:
            if name == "a":
                a_out.set()

    monkeypatch.setattr(Word2Vec, "_epoch", held_epoch)
    torch.set_num_threads(2)
    try:
        a = threading.Thread(target=fit, args=("a",), name="a")
        a.start()
        assert entered["a"].wait(30)
        b = threading.Thread(target=fit, args=("b",), name="b")
        b.start()
        a.join(60), b.join(60)
        assert entered["b"].is_set() and a_out.is_set()
        seen = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert (torch.get_num_threads(), seen) == (2, [2])
    finally:
        torch.set_num_threads(threads)


def _pairs_as_listed_in_full(w, ids, sent):
    """The (centre, context) pairs of _pairs made the plain way, with the same draws in the same order: every
    position's pairs listed for each distance, each list shuffled through a permutation of its length."""
    c, rng = w.config, w.rng
    if c.sample > 0:
        f, sT = w.counts[ids], c.sample * w.counts.sum()
        keep = rng.random(len(ids)) < (np.sqrt(f / sT) + 1) * sT / f
        ids, sent = ids[keep], sent[keep]
    b, n = rng.integers(1, c.window + 1, len(ids)), len(ids)
    reach = max(1, min(c.window, int(np.bincount(sent).max(initial=1)) - 1))
    if c.model == "cbow":
        rows = np.full((n, 2 * reach), -1, np.int64)
        for k, o in enumerate([*range(-reach, 0), *range(1, reach + 1)]):
            for a in range(max(0, -o), n - max(0, o)):
                if sent[a] == sent[a + o] and abs(o) <= b[a]:
                    rows[a, k] = ids[a + o]
        has = np.flatnonzero((rows >= 0).any(1))
        has = has[rng.permutation(len(has))]
        return ids[has], rows[has]
    centre = [p + a for o in range(1, reach + 1) for a in (0, o) for p in range(n - o)
              if sent[p] == sent[p + o] and o <= b[p + a]]  # fmt: skip
    context = [p + (o - a) for o in range(1, reach + 1) for a in (0, o) for p in range(n - o)
               if sent[p] == sent[p + o] and o <= b[p + a]]  # fmt: skip
    order = rng.permutation(len(centre))
    return ids[np.array(centre)[order]], ids[np.array(context)[order]]


@pytest.mark.parametrize("model", ["skip-gram", "cbow"])
def test_the_pairs_are_made_in_place_in_little_more_memory_than_they_take(model, monkeypatch):
    """_pairs listed the pairs' positions for each distance, joined them, shuffled an index of them and gathered
    the words: 30 bytes a pair at the peak for 8 bytes of pairs (int32), 110 bytes a word of PTB (196 MB of 1.8M
    words); CBOW made every word's row of 2·window contexts, then the copy of the kept ones. The pairs are now made
    in place, a piece of the corpus at a time, and shuffled as rows: the same draws, the same pairs."""
    from rnnkit.text import word2vec

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 300, 40_000)]  # each 0.3 % of the words: 15 % subsampled
    cut = np.sort(rng.choice(len(words), 2_000, replace=False))
    sentences = [s.tolist() for s in np.split(np.array(words, dtype=object), cut)]
    monkeypatch.setattr(
        word2vec, "DRAW_CHUNK", 1_000, raising=False
    )  # pieces: 40 of them, of a sentence's middle
    w = Word2Vec(model=model, min_count=1, window=5, sample=1e-3, dimension=4, epochs=1)
    w.build_vocab(sentences)
    ids, sent = w._encode(sentences)
    w.rng = np.random.default_rng(3)
    (centres, contexts), peak = _traced_peak(lambda: w._pairs(ids, sent))
    w.rng = np.random.default_rng(3)
    want_centres, want_contexts = _pairs_as_listed_in_full(w, ids, sent)
    np.testing.assert_array_equal(centres, want_centres)
    np.testing.assert_array_equal(contexts, want_contexts)
    held = centres.nbytes + contexts.nbytes
    assert peak < held + 20 * len(ids), f"{peak:,} bytes to make {held:,} bytes of {len(centres):,} pairs"


def test_the_corpus_is_encoded_into_arrays_without_a_list_of_ids_and_in_int16_below_32768_words():
    """_encode made a list of each sentence's ids (8 bytes a word) before its int32 array (17 bytes a word at the
    peak here), and the pairs, the largest arrays, took the ids' int32 for PTB's 10,000 words: the ids are read
    straight into an array now, int16 below 2^15 words (half the pairs' memory), the words left out (rarer than
    min_count) as before."""
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.integers(0, 1_200, rng.integers(0, 40))] for _ in range(2_000)]
    w = Word2Vec(min_count=30, dimension=4, epochs=1)  # 768 words of 1,200 kept
    w.build_vocab(sentences)
    (ids, sent), peak = _traced_peak(lambda: w._encode(sentences))
    words = sum(map(len, sentences))
    assert peak < 14 * words, f"{peak:,} bytes to encode {words:,} words"
    kept = [(w.vocab.stoi[x], k) for k, s in enumerate(sentences) for x in s if x in w.vocab.stoi]
    assert 500 < len(w.vocab) < len(set(x for s in sentences for x in s)) and ids.dtype == np.int16
    np.testing.assert_array_equal(ids, [i for i, _ in kept])
    np.testing.assert_array_equal(sent, [k for _, k in kept])
    big = Word2Vec(min_count=1)
    big.build_vocab([[f"w{i}" for i in range(2**15 + 1)]])
    assert big._encode([["w0", "w32768"]])[0].tolist() == [0, 32768]  # past int16: int32


@native
def test_the_native_loop_takes_epochs_whose_pair_count_is_past_64_bits(monkeypatch):
    """--epochs 2**63 - 1 (train until stopped, as train's --max-steps 0) ended in pybind11's "TypeError: sgns_pairs():
    incompatible function arguments" at the first chunk: the schedule's count of pairs, epochs x pairs an epoch, was
    past a 64-bit integer. It is taken at 2**63 - 1, where lr = α to float32's precision, as it is: the first chunk
    moves the vectors as one of --epochs 10**9 does."""
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 10]
    config = dict(min_count=1, dimension=4, backend="native", sample=0, workers=1, seed=3)
    ext, calls = w2v_native.load(), []

    class Stop(Exception):
        pass

    class Once:
        def sgns_pairs(self, *args):
            ext.sgns_pairs(*args)
            calls.append((args[8], args[0].clone()))  # expected, U after the chunk
            raise Stop

    monkeypatch.setattr(Word2Vec, "_native", lambda self: Once())
    for epochs in (2**63 - 1, 10**9):
        with pytest.raises(Stop):
            Word2Vec(**config, epochs=epochs).fit(words)
    (huge, U), (billion, want) = calls
    assert huge == 2**63 - 1 and billion % 10**9 == 0
    assert torch.equal(U, want)


def test_workers_the_system_cannot_start_are_one_line(tmp_path, monkeypatch, capsys):
    """--workers 2**31 ended in a traceback where the system could not start so many threads (its limit, or their
    stacks' memory): "RuntimeError: the word2vec loop could not start thread 225 of 339 (Resource temporarily
    unavailable); use fewer workers". It is one line naming --workers, exit 2; the loop's other errors are as they were."""
    from rnnkit.cli import main

    class Failing:
        def __init__(self, message):
            self.message = message

        def sgns_pairs(self, *args):
            raise RuntimeError(self.message)

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 10)
    args = ["word2vec", str(corpus), "--out", str(tmp_path / "out"), "--min-count", "1", "--dimension", "4"]
    start = "the word2vec loop could not start thread 225 of 339 (Resource temporarily unavailable)"
    monkeypatch.setattr(Word2Vec, "_native", lambda self: Failing(start + "; use fewer workers"))
    assert main([*args, "--workers", str(2**31)]) == 2
    (line,) = [
        line for line in capsys.readouterr().err.splitlines() if not line.startswith("word2vec:")
    ]  # (its bar)
    assert line.startswith(
        f"rnnkit: error: --workers {2**31}: {start}; give fewer --workers (this machine has "
    )
    monkeypatch.setattr(Word2Vec, "_native", lambda self: Failing("sgns_pairs: a word index outside [0, 9)"))
    with pytest.raises(RuntimeError, match="a word index outside"):
        main(args)


def test_a_subsampling_threshold_past_floats_range_keeps_every_word_without_a_warning():
    """sample=1e308 (--sample 1e308) warned "overflow encountered in scalar multiply" (numpy's, said by the command
    line as 'rnnkit: warning: ...'), a RuntimeWarning raised under -W error, where the threshold times the corpus's
    count overflowed: it keeps every word, as sample 0 (off) does, in silence now."""
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 10]
    config = dict(min_count=1, dimension=4, epochs=1, backend="torch", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = Word2Vec(**config, sample=1e308).fit(words).wv.vectors
    np.testing.assert_array_equal(huge, Word2Vec(**config, sample=1e300).fit(words).wv.vectors)


@pytest.mark.parametrize("sample", [np.float64(1e308), np.float32(3e38)])
def test_a_subsampling_threshold_given_as_a_numpy_scalar_past_the_products_range_keeps_every_word_in_silence(
    sample,
):
    """The threshold times the corpus's count is a Python float (6dde087), the threshold as well: one given as a
    numpy scalar still warned "overflow encountered in scalar multiply" (np.float64(1e308), np.float32(3e38), whose
    product with a float stays a float32), raised under -W error."""
    words = [s.split() for s in ["the cat sat on the mat", "the dog sat on the log"] * 10]
    config = dict(min_count=1, dimension=4, epochs=1, backend="torch", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        huge = Word2Vec(**config, sample=sample).fit(words).wv.vectors
    np.testing.assert_array_equal(huge, Word2Vec(**config, sample=1e308).fit(words).wv.vectors)


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_number_past_floats_range_is_refused_in_one_line_by_word2vec(value):
    """A Python int is a Real: Word2Vec(alpha=10**400) or sample=10**400 raised a bare "OverflowError: int too large
    to convert to float" from math.isfinite; each says the option in one line."""
    with pytest.raises(RnnkitError, match="--alpha"):
        Word2Vec(alpha=value)
    with pytest.raises(RnnkitError, match="--sample"):
        Word2Vec(sample=value)
