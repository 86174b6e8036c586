import json
import shutil
import tracemalloc

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from rnnkit.errors import RnnkitError
from rnnkit.text import TfidfConfig, TfidfIndex, term_counts, term_frequencies, word_tokenize

DOCS = [
    "The cat sat on the mat.",
    "The dog sat on the log, and the dog barked.",
    "Cats and dogs are running; a cat runs fast!",
    "Stock markets fell as investors sold shares.",
    "The market for shares rallied.",
]


def test_bag_of_words():
    assert term_counts("a b a".split()) == {"a": 2, "b": 1}
    assert term_frequencies("a b a b".split()) == {"a": 0.5, "b": 0.5}
    for f in (term_counts, term_frequencies):
        with pytest.raises(RnnkitError, match=r"list of tokens, not a str"):
            f("the cat")  # once counted characters


def test_term_frequencies_of_a_generator_of_tokens():
    # len(tokens) failed: TypeError: object of type 'generator' has no len()
    assert term_frequencies(t for t in "a b a c".split()) == {"a": 0.5, "b": 0.25, "c": 0.25}
    assert term_frequencies(iter([])) == {}


def test_a_bare_str_is_refused_as_scikit_learn_does():
    with pytest.raises(RnnkitError, match=r"fit takes a list of documents, not a str: .*\[text\]"):
        TfidfIndex().fit("the cat sat on the mat")  # once 22 one-character documents
    index = TfidfIndex().fit(DOCS)
    for f in (index.transform, index.counts):
        with pytest.raises(RnnkitError, match="list of documents, not a str"):
            f("cat sat")
    assert index.transform(["cat sat"]).shape == (1, len(index.terms))


@pytest.mark.parametrize("top", [0, -1, 1.5])
def test_search_refuses_top_below_one(top):
    with pytest.raises(
        RnnkitError, match=r"top \(how many documents to return\) must be an integer >= 1, got"
    ):
        TfidfIndex().fit(DOCS).search("cat", top=top)  # top=-1 once dropped the last hit


def test_idf_is_the_decks_formula():
    index = TfidfIndex(TfidfConfig(norm=None)).fit(DOCS)
    j = index.column["the"]  # in 3 of 5 documents
    assert index.idf[j] == pytest.approx(1 + np.log(5 / 3))
    smooth = TfidfIndex(TfidfConfig(smooth_idf=True)).fit(DOCS)
    assert smooth.idf[j] == pytest.approx(1 + np.log(6 / 4))


@pytest.mark.parametrize(
    "tf, smooth, norm", [("count", False, "l2"), ("count", True, "l2"), ("log", True, None)]
)
@pytest.mark.parametrize("stop_words, stem", [(False, False), (True, True)])
def test_equals_scikit_learn(tf, smooth, norm, stop_words, stem):
    index = TfidfIndex(
        TfidfConfig(tf=tf, smooth_idf=smooth, norm=norm, stop_words=stop_words, stem=stem)
    ).fit(DOCS)
    sk = TfidfVectorizer(analyzer=index.analyzer, smooth_idf=smooth, norm=norm, sublinear_tf=tf == "log")
    expected = sk.fit_transform(DOCS)
    assert list(sk.get_feature_names_out()) == index.terms
    np.testing.assert_allclose(index.matrix.toarray(), expected.toarray(), rtol=1e-12)
    query = ["cats and the dog"]
    np.testing.assert_allclose(index.transform(query).toarray(), sk.transform(query).toarray(), rtol=1e-12)


def test_stemming_and_stop_words():
    index = TfidfIndex(TfidfConfig(stop_words=True, stem=True)).fit(DOCS)
    assert "the" not in index.column and "cat" in index.column and "cats" not in index.column
    assert "run" in index.column  # running, runs -> run


def test_each_distinct_word_is_stemmed_once(monkeypatch):
    """The Snowball stemmer (pure Python) ran on every token: 6/7 of `tfidf index --stem`'s time on PTB (20 s for 3 s
    without it); each distinct word is stemmed once now, to the same terms."""
    import snowballstemmer

    real, seen = snowballstemmer.stemmer("english"), []

    class Counting:
        def stemWord(self, word):
            seen.append(word)
            return real.stemWord(word)

        def stemWords(self, words):
            return [self.stemWord(w) for w in words]

    monkeypatch.setattr(snowballstemmer, "stemmer", lambda language: Counting())
    docs = DOCS * 3
    index = TfidfIndex(TfidfConfig(stem=True)).fit(docs)
    words = [w for d in docs for w in TfidfIndex().analyzer(d)]
    assert sorted(seen) == sorted(set(words))
    assert index.terms == sorted({real.stemWord(w) for w in words})
    assert index.transform(["running cats quickly"]).nnz == 2  # 'quickly', one new word, stemmed once more
    assert len(seen) == len(set(words)) + 1


def test_search_ranks_by_cosine_and_round_trips(tmp_path):
    index = TfidfIndex(TfidfConfig(stop_words=True, stem=True)).fit(DOCS)
    hits = index.search("share market")
    assert {hits[0][0], hits[1][0]} == {3, 4} and hits[0][1] >= hits[1][1] > 0
    index.save(tmp_path / "idx")
    again = TfidfIndex.load(tmp_path / "idx")
    assert again.search("share market") == hits
    with pytest.raises(RnnkitError, match="no term"):
        index.search("zebra")
    with pytest.raises(RnnkitError):
        TfidfIndex().fit([])
    with pytest.raises(RnnkitError):
        TfidfIndex.load(tmp_path / "missing")


def test_search_of_an_index_without_norm_gives_the_cosines():
    """With norm=None the rows are not unit vectors: search divides by both norms, the document's and the query's,
    so that it gives cosines (a query equal to a document: 1); without the query's norm it gave numbers past 1."""
    index = TfidfIndex(TfidfConfig(norm=None)).fit(DOCS)
    X, q = index.matrix.toarray(), index.transform(["the dog barked at the cat"]).toarray()[0]
    want = X @ q / np.linalg.norm(X, axis=1) / np.linalg.norm(q)
    hits = index.search("the dog barked at the cat")
    assert hits and all(score == pytest.approx(want[i]) for i, score in hits)
    assert index.search(DOCS[1])[0] == (1, pytest.approx(1.0))


def test_fit_holds_a_few_bytes_a_token_not_a_coo_of_every_token():
    """fit kept an int64 array per document and built the COO of every token (int64 rows and columns, float64
    ones) before summing them: 54 bytes a token at its peak here, `tfidf index` of PTB 5 times over 428 MB of RSS
    for a 47 MB matrix. Now 4-byte ids in one array, summed in the CSR itself: under 20 bytes a token."""
    docs = [" ".join(f"w{(i + j % 20) % 500}" for j in range(200)) for i in range(500)]  # 100,000 tokens
    baseline = TfidfIndex(TfidfConfig(tf="log")).fit(docs[:5])  # (imports and caches outside the measure)
    tracemalloc.start()
    try:
        index = TfidfIndex(TfidfConfig(tf="log")).fit(docs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert index.matrix.nnz == 500 * 20 and baseline.matrix.nnz == 5 * 20
    assert np.allclose(
        index.matrix.sum(axis=1), index.matrix[:1].sum()
    )  # the same 20 counts of 10 each a row
    assert peak < 20 * 100_000, peak


def test_equal_cosines_rank_in_document_order():
    """A document and the same document three (or seven) times over point one way, their cosines equal but for the
    rounding of their norms: the repeated one was ranked first in 170 of 900 such pairs of PTB's lines (its 'the
    senate bill ... abuses' and it seven times: 0.40824829046386313 over 0.408248290463863 for 'the senate')."""
    line = "the senate bill would force the cftc to suspend dual trading if an exchange ca n't show that its oversight"
    for k in (3, 5, 7):
        index = TfidfIndex().fit([line, " ".join([line] * k), "zzz qqq"])
        for query in ("the senate", "dual trading", "the"):
            assert [i for i, _ in index.search(query)] == [0, 1], (k, query)


def test_frequency_tf_divides_by_the_whole_document_length_unknown_terms_included():
    # TF(x, d) = c(x, d) / |d|: a new document's words that the index lacks still count in |d|
    index = TfidfIndex(TfidfConfig(tf="frequency", norm=None)).fit(["cat dog", "dog fish"])
    row = index.transform(["cat zebra zebra dog"]).toarray()[0]
    expected = np.array([1 / 4, 1 / 4, 0]) * index.idf  # columns cat, dog, fish
    np.testing.assert_allclose(row, expected)
    # the indexed documents themselves are unchanged
    np.testing.assert_allclose(index.transform(["cat dog", "dog fish"]).toarray(), index.matrix.toarray())


def test_an_index_without_documents_says_so(tmp_path):
    """search, transform or save before fit were AttributeErrors ('column', 'matrix')."""
    index = TfidfIndex()
    for call in (lambda: index.search("cat"), lambda: index.transform(["cat"]), lambda: index.save(tmp_path)):
        with pytest.raises(RnnkitError, match="holds no documents yet: call fit"):
            call()


def test_numpy_bools_in_the_config_save_and_load(tmp_path):
    """smooth_idf=np.bool_(True) indexed fine, then save() failed ('Object of type bool is not JSON
    serializable') after writing tfidf.npz beside the old index.json."""
    config = TfidfConfig(smooth_idf=np.bool_(True), stop_words=np.bool_(False))
    index = TfidfIndex(config).fit(DOCS)
    index.save(tmp_path)
    again = TfidfIndex.load(tmp_path)
    assert again.config.smooth_idf is True
    assert abs(again.matrix - index.matrix).max() == 0


def test_documents_as_a_numpy_array_index_as_a_list_does():
    """A numpy array of documents (scikit-learn's vectorizers take one) failed in fit with numpy's 'The truth value
    of an array with more than one element is ambiguous'."""
    expected = TfidfIndex().fit(DOCS)
    index = TfidfIndex().fit(np.array(DOCS))
    assert index.terms == expected.terms
    np.testing.assert_array_equal(index.matrix.toarray(), expected.matrix.toarray())
    np.testing.assert_array_equal(
        index.transform(np.array(DOCS[:2])).toarray(), expected.matrix.toarray()[:2]
    )
    with pytest.raises(RnnkitError, match="no documents"):
        TfidfIndex().fit(np.array([], dtype=str))


def test_words_that_begin_with_an_underscore_are_terms():
    """Words such as __init__ or _private were dropped as if punctuation (their first character is not
    alphanumeric), so searching for one said no term of the query is in the index; scikit-learn keeps them."""
    docs = ["call __init__ first", "the _private helper", "snake_case names"]
    index = TfidfIndex().fit(docs)
    assert {"__init__", "_private", "snake_case"} <= set(index.terms)
    assert "_" not in index.analyzer("a _ b , c")  # a lone underscore is punctuation
    assert index.search("__init__")[0][0] == 0


def test_a_words_combining_marks_stay_in_it():
    """Python's \\w has no combining marks (Devanagari's vowel signs and virama, the accent of decomposed text), so
    'हिन्दी' was indexed as the terms 'ह', 'न', 'द' and a query of another word sharing a letter ('किन्नर') found it
    at cosine 0.31; 'e\\u0301te\\u0301' (été decomposed) was 'e' and 'te'."""
    assert word_tokenize("हिन्दी भाषा, e\u0301te\u0301!", punctuation=True) == [
        "हिन्दी",
        "भाषा",
        ",",
        "e\u0301te\u0301",
        "!",
    ]
    index = TfidfIndex().fit(["हिन्दी भाषा बहुत सुंदर है", "अंग्रेज़ी भाषा"])
    assert "हिन्दी" in index.terms and "ह" not in index.terms
    assert index.search("हिन्दी")[0][0] == 0
    with pytest.raises(RnnkitError, match="no term of the query"):
        index.search("किन्नर")


def test_an_index_saved_before_words_kept_their_marks_is_searched_as_it_was_built(tmp_path, monkeypatch):
    """An index saved by an older rnnkit, whose analyzer split words at every combining mark ('हिन्दी' its terms
    'ह', 'न', 'द'), analysed queries the new way: 'हिन्दी' was 'no term of the query is in the index' though a
    document held it. Such an index (no word_marks in its index.json, no mark in its terms) analyses queries as
    it was built: the old cosines; one saved now keeps the marks."""
    import re

    from rnnkit.text import tfidf

    docs = ["हिन्दी भाषा बहुत सुंदर है", "अंग्रेज़ी भाषा", "the quick fox"]
    old_split = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # the analyzer's split before marks stayed in words
    with monkeypatch.context() as m:
        m.setattr(tfidf, "word_tokenize", lambda text, lower, punctuation: old_split.findall(text.lower()))
        old = TfidfIndex().fit(docs)
        want = old.search("हिन्दी भाषा")
        old.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "index.json").read_text())
    meta.pop("word_marks", None)
    (tmp_path / "old" / "index.json").write_text(json.dumps(meta))
    assert "ह" in meta["terms"]
    got = TfidfIndex.load(tmp_path / "old").search("हिन्दी भाषा")
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([c for _, c in got], [c for _, c in want], rtol=1e-12)
    TfidfIndex().fit(docs).save(tmp_path / "new")
    new = TfidfIndex.load(tmp_path / "new")
    assert "हिन्दी" in new.terms and new.search("हिन्दी")[0][0] == 0


def test_a_query_of_stop_words_alone_says_so():
    """An index built with stop_words (--stop-words) and a query of stop words only ("the of"): it said no term of
    the query is in the index, as if the documents lacked them; a query of words the documents lack still says
    that."""
    index = TfidfIndex(TfidfConfig(stop_words=True)).fit(["the cat sat", "of mice and men"])
    with pytest.raises(RnnkitError, match="the query 'The of' holds only stop words, which this index drops"):
        index.search("The of")
    with pytest.raises(RnnkitError, match="no term of the query 'zebra' is in the index"):
        index.search("zebra")
    with pytest.raises(RnnkitError, match="no term of the query 'the' is in the index"):
        TfidfIndex().fit(["a cat"]).search("the")  # (no stop words dropped: the documents lack it)


def test_a_matrix_file_that_is_no_npz_is_not_offered_to_unpickle(tmp_path):
    """np.load reads a file that is not a zip archive as .npy or else as a pickle: a damaged or replaced tfidf.npz
    said 'This file contains pickled (object) data. If you trust the file you can load it unsafely'."""
    TfidfIndex().fit(DOCS).save(tmp_path)
    (tmp_path / "tfidf.npz").write_bytes(b"\x80\x04not an archive at all")
    with pytest.raises(RnnkitError, match=r"tfidf\.npz is not a numpy \.npz archive") as e:
        TfidfIndex.load(tmp_path)
    assert "pickle" not in str(e.value)


def test_a_matrix_file_whose_zip64_end_record_is_damaged_is_no_npz(tmp_path):
    """zipfile.is_zipfile raised on it, and load said zipfile's 'zipfiles that span multiple disks are not
    supported' of the index."""
    import io

    import torch

    TfidfIndex().fit(DOCS).save(tmp_path)
    buf = io.BytesIO()
    torch.save({"x": 1}, buf)  # a zip with zip64 records
    data = buf.getvalue()
    at = data.rfind(b"PK\x06\x07")
    (tmp_path / "tfidf.npz").write_bytes(data[: at + 5] + b"\xdc" + data[at + 6 :])
    with pytest.raises(RnnkitError, match=r"tfidf\.npz is not a numpy \.npz archive"):
        TfidfIndex.load(tmp_path)


def test_a_mixed_index_from_two_saves_is_refused_in_one_line(tmp_path):
    """tfidf.npz and index.json are each written whole, one after the other: a save stopped between them left the
    new matrix beside the old terms, config and IDF, read without a word wherever the term counts agreed (here
    --tf log documents searched with count queries)."""
    TfidfIndex(TfidfConfig(tf="count")).fit(DOCS).save(tmp_path / "old")
    TfidfIndex(TfidfConfig(tf="log")).fit(DOCS).save(tmp_path / "new")
    shutil.copy(tmp_path / "new" / "tfidf.npz", tmp_path / "old" / "tfidf.npz")
    with pytest.raises(RnnkitError, match="its tfidf.npz is not the one its index.json was saved with"):
        TfidfIndex.load(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "index.json").read_text())
    del meta["tfidf_sha256"]  # an index saved before the check: read as before
    (tmp_path / "old" / "index.json").write_text(json.dumps(meta))
    assert TfidfIndex.load(tmp_path / "old").sha256 is None


@pytest.mark.parametrize(
    "terms, idf, message",
    [
        ("abc", None, r"its terms must be a list of distinct terms \(str\), got 'abc'"),
        (["a", "a", "b"], None, r"its terms must be a list of distinct terms \(str\), got \['a', 'a', 'b'\]"),
        ([1, 2, 3], None, r"its terms must be a list of distinct terms \(str\), got \[1, 2, 3\]"),
        (
            None,
            ["x", "y", "z"],
            r"its idf must be a list of numbers > 0, one per term, got \['x', 'y', 'z'\]",
        ),
        # NaN (json reads it) or <= 0: every cosine NaN or <= 0, and search listed nothing, exit 0
        (
            None,
            [float("nan")] * 3,
            r"its idf must be a list of numbers > 0, one per term, got \[nan, nan, nan\]",
        ),
        (
            None,
            [-1.0, 1.0, 1.0],
            r"its idf must be a list of numbers > 0, one per term, got \[-1\.0, 1\.0, 1\.0\]",
        ),
        (
            None,
            [1.0, 1.0, float("inf")],
            r"its idf must be a list of numbers > 0, one per term, got \[1\.0, 1\.0, inf\]",
        ),
        (None, [1.0, 1.0], r"3 columns and 2 idf values for 3 terms"),  # it said '3 columns for 3 terms'
    ],
)
def test_an_index_json_with_malformed_terms_or_idf_is_refused_in_one_line(tmp_path, terms, idf, message):
    """A damaged index.json whose "terms" was "abc" (3 characters for 3 columns) loaded, its terms a, b and c; one
    with a term twice kept the last column for it; idf of strings failed in search (TypeError: can't get common type for non-numeric array)."""
    TfidfIndex().fit(["cat dog", "dog fish"]).save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    meta["terms"] = meta["terms"] if terms is None else terms
    meta["idf"] = meta["idf"] if idf is None else idf
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(RnnkitError, match=rf"cannot read a TF-IDF index in .*: {message}; build one") as e:
        TfidfIndex.load(tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("flag", ["smooth_idf", "lower", "stop_words", "stem"])
@pytest.mark.parametrize("value", ["False", None, 2])
def test_config_switches_that_are_no_switch_are_refused(flag, value):
    """The switches were taken for their truth value: smooth_idf="False" (a config file's string) smoothed the IDF,
    None turned lower-casing off, in silence."""
    with pytest.raises(RnnkitError, match=f"{flag} must be True or False"):
        TfidfIndex(TfidfConfig(**{flag: value}))


@pytest.mark.parametrize("bad", [float("nan"), None, b"a dog", ["a", "dog"]])
def test_a_document_or_query_that_is_no_str_is_refused_in_one_line(bad):
    """A document of another type (a table's empty cell read as NaN, bytes, a list of words) failed in fit with
    "'float' object has no attribute 'lower'" or re's 'cannot use a string pattern on a bytes-like object', and a
    query likewise in search (search(['cat']), search(b'cat')): each is one line naming the type."""
    with pytest.raises(RnnkitError, match=rf"^documents and queries must be str, got {type(bad).__name__}"):
        TfidfIndex().fit([DOCS[0], bad])
    index = TfidfIndex().fit(DOCS)
    with pytest.raises(RnnkitError, match=rf"^documents and queries must be str, got {type(bad).__name__}"):
        index.search(bad)
    with pytest.raises(RnnkitError, match="^documents and queries must be str"):
        index.transform([bad])


@pytest.mark.parametrize("config", [{"tf": "log"}, "log"])
def test_a_config_that_is_no_tfidf_config_is_refused_in_one_line(config):
    """TfidfIndex({'tf': 'log'}) (a config file's dict) failed with "AttributeError: 'dict' object has no attribute
    'tf'"; it is one line naming the type and the way to make one."""
    with pytest.raises(RnnkitError, match=r"^TfidfIndex takes a TfidfConfig \(or None\), got (dict|str)"):
        TfidfIndex(config)


@pytest.mark.parametrize(
    "at, byte", [(10, 99), (8, 1)]
)  # its compression method (99: unknown), its flags (1: encrypted)
def test_a_matrix_file_whose_member_entry_has_a_byte_changed_is_one_line(tmp_path, at, byte):
    """zipfile raised NotImplementedError ('That compression method is not supported') or RuntimeError ('... is
    encrypted, password required for extraction') from TfidfIndex.load, a traceback from tfidf search."""
    TfidfIndex().fit(DOCS).save(tmp_path)
    data = bytearray((tmp_path / "tfidf.npz").read_bytes())
    data[data.rfind(b"PK\x01\x02") + at] = byte  # the last member's central directory entry
    (tmp_path / "tfidf.npz").write_bytes(bytes(data))
    meta = json.loads((tmp_path / "index.json").read_text())
    meta.pop("tfidf_sha256")  # (an index saved without it: else the checksum says it first)
    (tmp_path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(RnnkitError, match="cannot read a TF-IDF index in"):
        TfidfIndex.load(tmp_path)


def test_an_index_pickled_before_its_analyzer_had_marks_still_searches():
    """An index pickled whole before the analyzer had its `marks` (a joblib cache, a pickled pipeline) has no such
    attribute: every search ended in an AttributeError; it analyses as one made now."""
    import pickle

    index = TfidfIndex().fit(["हिन्दी भाषा", "the quick fox"])
    del index.analyzer.__dict__["marks"]
    old = pickle.loads(pickle.dumps(index))
    assert old.search("हिन्दी")[0][0] == 0


def test_composed_and_decomposed_spellings_of_a_word_are_one_term(tmp_path, monkeypatch):
    """'été' typed (composed, NFC) and 'e\\u0301te\\u0301' (decomposed, NFD: text from macOS, a PDF) look alike but
    were two terms: a query typed on a keyboard said 'no term of the query is in the index' of documents written the
    other way, and a document holding both counted each once. Text is composed (NFC) first; an index built before of
    decomposed text (its terms not all composed) analyses queries as it was built."""
    import unicodedata

    nfd = [unicodedata.normalize("NFD", d) for d in ("un été à Genève", "l'hiver à Genève", "the quick fox")]
    index = TfidfIndex().fit(nfd + ["été, Été"])
    assert "été" in index.terms and "e\u0301te\u0301" not in index.terms
    assert [i for i, _ in index.search("été")] == [3, 0]
    assert index.counts(["Genève genève " + nfd[1]])[0, index.column["genève"]] == 3
    assert index.search("ÉTÉ") == index.search(unicodedata.normalize("NFD", "été"))
    with monkeypatch.context() as m:  # an index built by an older rnnkit: the terms as the text spells them
        m.setattr(unicodedata, "normalize", lambda form, text: text)
        old = TfidfIndex().fit(nfd)
        want = old.search(nfd[0])
        old.save(tmp_path / "old")
    assert "e\u0301te\u0301" in old.terms
    got = TfidfIndex.load(tmp_path / "old").search(nfd[0])
    assert got == want and [i for i, _ in got] == [0, 1]
    TfidfIndex().fit(nfd).save(tmp_path / "new")
    assert TfidfIndex.load(tmp_path / "new").search("Été")[0][0] == 0


def test_an_index_saved_before_word_marks_is_not_composed_either(tmp_path, monkeypatch):
    """An index saved before word_marks (whose analyzer split words at combining marks and composed nothing) of
    decomposed text holds 'de' and 'cor' for 'de\\u0301cor', all of them composed: its queries were composed (NFC)
    first, 'décor' then, and the old index's own text said 'no term of the query is in the index'. It is searched
    as it was built: the old cosines."""
    import re
    import unicodedata

    from rnnkit.text import tfidf

    docs = [unicodedata.normalize("NFD", d) for d in ("le décor d'été", "un hiver", "the quick fox")]
    old_split = re.compile(r"\w+(?:'\w+)?|[^\w\s]")  # the analyzer's split before marks stayed in words
    with monkeypatch.context() as m:
        m.setattr(tfidf, "word_tokenize", lambda text, lower, punctuation: old_split.findall(text.lower()))
        m.setattr(unicodedata, "normalize", lambda form, text: text)
        old = TfidfIndex().fit(docs)
        want = old.search(docs[0])
        old.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "index.json").read_text())
    del meta["word_marks"]
    (tmp_path / "old" / "index.json").write_text(json.dumps(meta))
    assert "cor" in meta["terms"] and "décor" not in meta["terms"]
    got = TfidfIndex.load(tmp_path / "old").search(docs[0])
    assert got == want and got[0][0] == 0


def test_an_index_of_a_newer_rnnkit_is_one_line_saying_so(tmp_path):
    """An index whose config holds an option no rnnkit so far saves (a newer one's) was 'cannot read a TF-IDF index
    in D: TfidfConfig.__init__() got an unexpected keyword argument 'sublinear'; build one with `rnnkit tfidf
    index`'; it says a newer rnnkit built it. A config that is no dict is still unreadable."""
    TfidfIndex().fit(["the cat sat", "a dog"]).save(tmp_path / "i")
    meta = json.loads((tmp_path / "i" / "index.json").read_text())
    meta["config"]["sublinear"] = True
    (tmp_path / "i" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(RnnkitError, match=r"i is a TF-IDF index of a newer rnnkit \(its config holds 'sublinear', "
                       r"which this one does not know\); upgrade rnnkit to search it$"):  # fmt: skip
        TfidfIndex.load(tmp_path / "i")
    meta["config"] = "tf"
    (tmp_path / "i" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(RnnkitError, match="cannot read a TF-IDF index in"):
        TfidfIndex.load(tmp_path / "i")


@pytest.mark.parametrize("docs", [["...", "!"], ["a dog", None]])
def test_a_refit_that_fails_leaves_the_index_as_it_was(tmp_path, docs):
    """fit(['...']) on a fitted index said 'the documents hold no terms' after setting its terms to []: the old
    matrix stayed, search('cat') failed in scipy ('axis 1 index 1 exceeds matrix dimension 0') and save wrote an
    index of no terms and 2 columns. A failed fit now changes nothing."""
    index = TfidfIndex().fit(["the cat", "a dog"])
    before = index.search("cat")
    with pytest.raises(RnnkitError):
        index.fit(docs)
    assert index.terms == ["a", "cat", "dog", "the"] and index.search("cat") == before
    index.save(tmp_path / "ix")
    assert TfidfIndex.load(tmp_path / "ix").search("cat") == before


def test_search_returns_at_most_top_documents():
    index = TfidfIndex().fit(DOCS)
    every = index.search("the cat sat on shares", top=len(DOCS))
    assert sorted(i for i, _ in every) == [0, 1, 2, 3, 4]
    for top in (1, 2, 3, 4):
        assert index.search("the cat sat on shares", top=top) == every[:top]


def test_without_lower_terms_keep_their_case_and_stop_words_go_in_any_case():
    """lower=False keeps 'Cats' and 'cat' as two terms; a stop word goes whatever its case ('The', 'THE')."""
    index = TfidfIndex(TfidfConfig(lower=False, stop_words=True)).fit(DOCS + ["THE END"])
    assert {"Cats", "cat", "Stock", "END"} <= set(index.terms)
    assert not {"The", "the", "THE", "cats", "stock"} & set(index.terms)


def test_stop_words_are_scikit_learns_english_list():
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    index = TfidfIndex(TfidfConfig(stop_words=True))
    assert index.analyzer(" ".join(sorted(ENGLISH_STOP_WORDS)) + " zebra") == ["zebra"]


def test_a_loaded_index_analyses_queries_with_the_config_it_was_built_with(tmp_path):
    """A loaded index reads a query as the one saved does: its own lower, stop words and stemming."""
    index = TfidfIndex(TfidfConfig(tf="log", lower=False, stop_words=True, stem=True)).fit(DOCS)
    index.save(tmp_path / "idx")
    again = TfidfIndex.load(tmp_path / "idx")
    assert again.config == index.config
    queries = ["The Cats running", "the MARKET for shares", "dogs barked and the cat ran"]
    for query in queries:
        assert again.analyzer(query) == index.analyzer(query)
        assert abs(again.transform([query]) - index.transform([query])).max() == 0
        assert again.search(query) == index.search(query)


def test_a_query_of_punctuation_alone_says_no_term_not_stop_words():
    """With stop_words, a query that has no term even with its stop words kept ('?!', '...') says that no term of it
    is in the index, not that it holds only stop words."""
    index = TfidfIndex(TfidfConfig(stop_words=True)).fit(DOCS)
    for query in ("?!", "...", ""):
        with pytest.raises(RnnkitError, match=r"^no term of the query .* is in the index; try other words"):
            index.search(query)
    with pytest.raises(RnnkitError, match="holds only stop words"):
        index.search("the, and a")
