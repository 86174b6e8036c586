"""Smoke tests of every text subcommand, in-process through the dispatcher on tiny files."""

import io
import json
import os
import pathlib
import re
import shutil
import sys

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.errors import RnnkitError

CORPUS = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\nthe market fell\n" * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


def test_word2vec_and_neighbours(tmp_path, corpus, capsys):
    out = tmp_path / "w2v"
    assert main(["word2vec", str(corpus), "--out", str(out), "--dry-run", "--dimension", "8"]) == 0
    assert (out / "vectors.txt").exists() and (out / "vectors.bin").exists()
    assert main(["neighbours", str(out / "vectors.bin"), "cat", "--topn", "2"]) == 0
    assert main(["neighbours", str(out / "vectors.txt"), "--analogy", "cat", "dog", "log"]) == 0
    assert main(["neighbours", str(out / "vectors.txt"), "zebra"]) == 2
    assert "'zebra'" in capsys.readouterr().err
    capsys.readouterr()
    # the folder that word2vec --out wrote stands for its vectors (binary, or text with --format text)
    for args in ([], ["--format", "text"]):
        assert main(["neighbours", str(out), "cat", "--topn", "2", *args]) == 0
        assert capsys.readouterr().out.startswith("cat:\n")
    assert main(["neighbours", str(tmp_path), "cat"]) == 2
    _one_error_line(
        capsys, f"{tmp_path} is a folder without vectors.bin or vectors.txt; give a word2vec file"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("3 4\nthe 1 2\n")
    assert main(["neighbours", str(bad), "the"]) == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["word2vec", str(empty), "--out", str(out)]) == 2


def test_ngram_commands(tmp_path, corpus, capsys):
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3", "--dry-run"]) == 0
    assert main(["ngram", "score", str(model), "the cat", "zzz", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()[-2:]
    assert '"rank": 1' in lines[0] and '"text": "the cat"' in lines[0] and '"unknown": ["z"]' in lines[1]
    assert main(["ngram", "eval", str(model), str(corpus)]) == 0
    assert main(["ngram", "sample", str(model), "--length", "20", "--prime", "the"]) == 0
    assert main(["ngram", "complete", str(model), "the c", "--length", "5"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("the c")
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "0"]) == 2
    assert main(["ngram", "score", str(tmp_path / "missing.npz"), "x"]) == 2


def test_tfidf_commands(tmp_path, corpus, capsys):
    index = tmp_path / "idx"
    assert (
        main(["tfidf", "index", str(corpus), "--out", str(index), "--stop-words", "--stem", "--dry-run"]) == 0
    )
    assert main(["tfidf", "search", str(index), "markets"]) == 0
    assert "the market fell" in capsys.readouterr().out
    assert main(["tfidf", "search", str(index), "zebra"]) == 2


def test_markov_commands(capsys):
    assert main(["markov", "sample", "--preset", "i-before-e", "--length", "12"]) == 0
    assert main(["markov", "check", "AABEA", "ABBA"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "allowed: AABEA",
        "not allowed: ABBA  (it cannot write 'B' after 'AB')",
    ]
    assert main(["markov", "stationary"]) == 0
    assert main(["markov", "check"]) == 2


def _one_error_line(capsys, message):
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and message in err and err.count("\n") == 1, err


def test_gzip_text_is_read_as_the_text_it_holds(tmp_path, corpus, capsys):
    """shared/data's Multi30k is shipped as .gz: `ngram train train.de.gz` (and eval, tfidf index, markov --text)
    said 'cannot read ...: 'utf-8' codec can't decode byte 0x8b in position 1'; they read the text it holds now."""
    import gzip

    packed = tmp_path / "corpus.txt.gz"
    packed.write_bytes(gzip.compress(corpus.read_bytes()[:700]) + gzip.compress(corpus.read_bytes()[700:]))
    for source, model in ((corpus, "plain.npz"), (packed, "packed.npz")):
        assert main(["ngram", "train", str(source), "--out", str(tmp_path / model), "-n", "3"]) == 0
        assert main(["ngram", "eval", str(tmp_path / "plain.npz"), str(source), "--json"]) == 0
        assert main(["markov", "--text", str(source), "stationary"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (tmp_path / "plain.npz").read_bytes() == (tmp_path / "packed.npz").read_bytes()
    evals = [json.loads(line) for line in out if line.startswith("{")]
    assert evals[0]["log_prob"] == evals[1]["log_prob"]
    stationary = [line for line in out if "\t" in line]
    assert stationary and stationary[: len(stationary) // 2] == stationary[len(stationary) // 2 :]
    assert main(["ngram", "train", str(packed), "--out", str(tmp_path / "dry.npz"), "--dry-run"]) == 0
    assert main(["tfidf", "index", str(packed), "--out", str(tmp_path / "idx")]) == 0
    assert main(["tfidf", "search", str(tmp_path / "idx"), "market", "--top", "1"]) == 0
    assert "corpus.txt.gz:4  the market fell" in capsys.readouterr().out
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(packed.read_bytes()[:40])
    assert main(["ngram", "train", str(damaged), "--out", str(tmp_path / "d.npz")]) == 2
    _one_error_line(capsys, f"cannot read {damaged}: it is a damaged gzip file")


def test_text_files_are_read_as_the_character_models_read_them(tmp_path, capsys):
    """A UTF-8 byte-order mark was the first word's first character ('\\ufeffthe', another word than 'the'); a
    UTF-16 file of ASCII text (NUL bytes between its letters) and a binary file were counted as text."""
    from rnnkit.text.ngram import NGramLM

    text, model = tmp_path / "bom.txt", tmp_path / "m.npz"
    text.write_bytes("\ufeffthe cat\nthe dog\n".encode())
    assert main(["ngram", "train", str(text), "--out", str(model), "--level", "word", "-n", "2"]) == 0
    assert "\ufeffthe" not in NGramLM.load(model).vocab.to_dict()["itos"]
    capsys.readouterr()
    text.write_text("the cat\nthe dog\n", encoding="utf-16-le")
    assert main(["ngram", "train", str(text), "--out", str(model)]) == 2
    _one_error_line(capsys, "is UTF-16LE text, not UTF-8; convert it to UTF-8: iconv -f UTF-16LE -t UTF-8")
    text.write_bytes(b"the cat\x00\x01\x02 dog")
    assert main(["ngram", "train", str(text), "--out", str(model)]) == 2
    _one_error_line(capsys, "looks binary (a NUL byte at character 7)")


def test_ngram_train_makes_the_out_folder_and_a_short_text_scores(tmp_path, capsys):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ab")
    model = tmp_path / "new" / "folder" / "m.npz"
    assert main(["ngram", "train", str(tiny), "--out", str(model), "-n", "5"]) == 0
    assert main(["ngram", "score", str(model), "ab", "ba"]) == 0
    assert "log p" in capsys.readouterr().out
    assert main(["ngram", "train", str(tiny), "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, "is a folder")
    assert main(["ngram", "train", str(tiny), "--out", str(tiny / "m.npz")]) == 2
    _one_error_line(capsys, "is a file, not a folder")
    assert main(["ngram", "sample", str(model), "--temperature", "nan"]) == 2
    _one_error_line(capsys, "--temperature must be a finite number > 0")
    # 1/temperature overflowed: the error named 'alpha (the sharpening power)', no option of the command's
    assert main(["ngram", "sample", str(model), "--temperature", "1e-320"]) == 2
    _one_error_line(capsys, "temperature 1e-320 is too small: 1/temperature is beyond float64; give 1e-300")
    # ... and it names the command for greedy text, not NgramLM's complete() method
    assert main(["ngram", "sample", str(model), "--temperature", "5e-324"]) == 2
    _one_error_line(capsys, "give 1e-300 or more, or use `rnnkit ngram complete` for greedy text")
    assert main(["ngram", "train", str(tiny), "--out", str(model), "--discount", "3"]) == 2
    _one_error_line(capsys, "discount must be between 0 and 1")
    bare = tmp_path / "bare"  # numpy adds .npz: the command says so, and score finds it by either name
    assert main(["ngram", "train", str(tiny), "--out", str(bare)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("bare.npz")
    assert main(["ngram", "score", str(bare), "ab"]) == 0


def test_word2vec_reads_one_sentence_a_line_as_gensim_does_not_a_sentence_at_each_line_separator(tmp_path):
    """word2vec split its corpus with str.splitlines, which also ends a line at U+2028, U+2029, U+0085, a form feed,
    a vertical tab and \x1c-\x1e: a line 'the cat\u2028sat on' was two sentences, no window across them, where
    word2vec.c, gensim's LineSentence (and ngram and tfidf) read one line. Its vectors are those of the sentences
    text.split('\\n') now (CRLF is one line end, as read_text reads it)."""
    from rnnkit.text import Word2Vec, WordVectors

    words = "the cat sat on a mat dog ran far".split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, 6)) for _ in range(40)]
    seps = ["\u2028", "\x0c", "\x85", " "]
    text = "\r\n".join(line.replace(" ", seps[i % 4], 1) for i, line in enumerate(lines)) + "\r\n"
    (tmp_path / "c.txt").write_text(text, encoding="utf-8", newline="")
    flags = ["--min-count", "1", "--dimension", "4", "--sample", "0", "--epochs", "1", "--backend", "torch"]
    assert main(["word2vec", str(tmp_path / "c.txt"), "--out", str(tmp_path / "w"), *flags]) == 0
    config = dict(min_count=1, dimension=4, sample=0, epochs=1, backend="torch")
    want = Word2Vec(**config).fit([line.split() for line in text.replace("\r\n", "\n").split("\n")]).wv
    got = WordVectors.load(tmp_path / "w" / "vectors.bin")
    assert got.words == want.words and np.array_equal(got.vectors, want.vectors)


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, corpus, capsys):
    for command in (["word2vec", str(corpus), "--dry-run"], ["tfidf", "index", str(corpus)]):
        assert main([*command, "--out", str(corpus)]) == 2
        _one_error_line(capsys, "is a file; give a folder")  # the only line: no progress bar, no training


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--negative", "-1"],
            "--negative (noise words per pair) must be an integer >= 1 for negative sampling",
        ),
        (["--alpha", "0"], "alpha (the learning rate) must be a number > 0"),
    ],
)
def test_word2vec_bad_sizes(tmp_path, corpus, capsys, flags, message):
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), "--dry-run", *flags]) == 2
    _one_error_line(capsys, message)


def test_neighbours_format_flag(tmp_path, capsys):
    import numpy as np

    from rnnkit.text import WordVectors

    vectors = np.zeros((3, 4), np.float32)
    vectors[2] = 1
    WordVectors(["<pad>", "the", "of"], vectors).save(tmp_path / "v.bin", binary=True)
    for fmt in ("auto", "binary"):
        assert main(["neighbours", str(tmp_path / "v.bin"), "of", "--format", fmt, "--topn", "5"]) == 0
        assert "of" not in capsys.readouterr().out.splitlines()[1:]  # never its own neighbour
    assert main(["neighbours", str(tmp_path / "v.bin"), "of", "--format", "text"]) == 2
    _one_error_line(capsys, "v.bin is not in word2vec text format; try --format binary")


def test_neighbours_and_analogy_list_what_the_python_api_lists_with_topn(tmp_path, capsys):
    """`neighbours --topn 3` lists WordVectors.neighbours(word, 3) and `--analogy A B C --topn 2` its analogy(A, B, C,
    2), in order (a mutant that passed the analogy 10 whatever --topn said passed every test: their vocabularies had
    fewer words than 10 to list)."""
    from rnnkit.text import WordVectors

    words = [f"w{i}" for i in range(16)]
    vectors = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    WordVectors(words, vectors).save(tmp_path / "v.txt")
    wv = WordVectors.load(tmp_path / "v.txt")
    assert main(["neighbours", str(tmp_path / "v.txt"), "w1", "w2", "--topn", "3"]) == 0
    expected = [
        line for w in ("w1", "w2") for line in [f"{w}:", *(f"  {c:.4f}  {n}" for n, c in wv.neighbours(w, 3))]
    ]
    assert capsys.readouterr().out.splitlines() == expected
    assert main(["neighbours", str(tmp_path / "v.txt"), "--analogy", "w3", "w4", "w5", "--topn", "2"]) == 0
    expected = ["w3 - w4 + w5:", *(f"  {c:.4f}  {n}" for n, c in wv.analogy("w3", "w4", "w5", 2))]
    assert capsys.readouterr().out.splitlines() == expected


def test_neighbours_unicode_errors_flag_reads_a_word_cut_inside_a_character(tmp_path, capsys):
    """A binary file of word2vec.c with a word cut at 100 bytes inside a character did not load, nor had a flag to."""
    path = tmp_path / "v.bin"
    path.write_bytes(b"2 1\nthe \x00\x00\x80\x3f\ncaf\xc3 \x00\x00\x80\x3f\n")
    assert main(["neighbours", str(path), "the"]) == 2
    _one_error_line(capsys, "the word of vector 2, 'caf\\\\xc3', is not UTF-8")
    assert main(["neighbours", str(path), "the", "--unicode-errors", "replace"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "  1.0000  caf\ufffd"


def test_tfidf_index_counts_under_its_bar_and_saves_under_a_second_one(tmp_path, corpus, capsys, monkeypatch):
    """tfidf index's bar covered the analysis alone: the counting (a Python pass over every token) and the save
    (compressing tfidf.npz) came after its 100%, the command silent for seconds (12 MB of documents: 3 s of counting
    and 2 s of saving after the bar). The terms are counted as each document is analysed, and a second bar,
    'saving', covers the three files; the index is the one counts() builds."""
    from rnnkit.text import TfidfIndex

    counts = TfidfIndex.counts
    monkeypatch.setattr(TfidfIndex, "counts", lambda *a: pytest.fail("counted after the bar"))
    assert main(["tfidf", "index", str(corpus), "--out", str(tmp_path / "index")]) == 0
    bars = [line.split("|")[0] for line in capsys.readouterr().err.splitlines() if "%|" in line]
    assert bars == ["tf-idf:   0%", "tf-idf: 100%", "saving:   0%", "saving: 100%"], bars
    index, docs = TfidfIndex.load(tmp_path / "index"), CORPUS.strip().split("\n")
    assert abs(index.weigh(counts(index, docs)) - index.matrix).max() == 0


def test_ngram_train_saves_its_model_under_a_bar_after_the_counting(tmp_path, corpus, capsys):
    """ngram train's bar ended at the counting, and the save (np.savez_compressed of every order's arrays) ran after
    its 100% with nothing said: 3.3 s for a word 5-gram model of a generated 4 MB file, 4.7 s for a char 7-gram one.
    A second bar, 'saving', covers the model file, as tfidf index's covers its files (and word2vec's its vectors:
    test_word2vec_bar_in_a_log_writes_no_line_per_epoch)."""
    from rnnkit.text import NGramLM

    assert main(["ngram", "train", str(corpus), "--out", str(tmp_path / "m.npz"), "-n", "3"]) == 0
    out, err = capsys.readouterr()
    bars = [line.split("|")[0] for line in err.splitlines() if "%|" in line]
    assert bars == ["counting n-grams:   0%", "counting n-grams: 100%", "saving:   0%", "saving: 100%"], bars
    lm = NGramLM.load(tmp_path / "m.npz")
    assert out.endswith(f"-> {tmp_path / 'm.npz'}\n") and lm.score("the cat").log_prob < 0


def test_each_tfidf_flag_given_reaches_the_option_of_its_name_and_search_ranks_as_the_python_api(
    tmp_path, capsys
):
    """`tfidf index --smooth-idf` sets the index's smooth_idf and `tfidf search --top 3` lists 3 documents, as
    TfidfIndex of the same options fitted to the same documents ranks them (mutants that dropped --smooth-idf or
    --top passed every test: no test indexed with the one or searched a corpus of more than --top matches)."""
    from rnnkit.text import TfidfConfig, TfidfIndex

    lines = [
        f"the {a} {b} sat on the mats"
        for a in ("cat", "dog", "cats", "market")
        for b in ("fell", "rose", "ran")
    ]
    (tmp_path / "d.txt").write_text("\n".join(lines) + "\n")
    index = tmp_path / "idx"
    flags = ["--tf", "log", "--smooth-idf", "--stop-words", "--stem"]
    assert main(["tfidf", "index", str(tmp_path / "d.txt"), "--out", str(index), *flags]) == 0
    config = TfidfConfig(tf="log", smooth_idf=True, stop_words=True, stem=True)
    assert TfidfIndex.load(index).config == config
    ref = TfidfIndex(config).fit(lines)
    capsys.readouterr()
    query = "cats fell on the mat"
    assert main(["tfidf", "search", str(index), query, "--top", "3"]) == 0
    expected = [
        f"{r}. {cos:.4f}  d.txt:{i + 1}  {lines[i]}" for r, (i, cos) in enumerate(ref.search(query, 3), 1)
    ]
    assert capsys.readouterr().out.splitlines() == expected


def test_tfidf_index_dry_run_indexes_the_first_100_documents(tmp_path, capsys):
    """--dry-run indexes the first 100 documents, as its help says (a mutant that indexed every one passed every
    test: none gave --dry-run more than 100)."""
    from rnnkit.text import TfidfIndex

    (tmp_path / "d.txt").write_text("".join(f"document number {i}\n" for i in range(150)))
    assert main(["tfidf", "index", str(tmp_path / "d.txt"), "--out", str(tmp_path / "idx"), "--dry-run"]) == 0
    assert TfidfIndex.load(tmp_path / "idx").matrix.shape[0] == 100
    names = [d["name"] for d in json.loads((tmp_path / "idx" / "documents.json").read_text())["documents"]]
    assert names == [f"d.txt:{n}" for n in range(1, 101)]


def test_tfidf_search_without_documents_json(tmp_path, corpus, capsys):
    index = tmp_path / "idx"
    assert main(["tfidf", "index", str(corpus), "--out", str(index)]) == 0
    (index / "documents.json").unlink()
    capsys.readouterr()
    assert main(["tfidf", "search", str(index), "cat"]) == 2
    _one_error_line(capsys, "documents.json")


# ---- fixes from a new user's review, one test each ------------------------------------------------------


def test_markov_options_go_before_or_after_the_action_and_each_action_has_help(capsys):
    assert main(["markov", "check", "--preset", "i-before-e", "bieb", "cie"]) == 0
    assert main(["markov", "--preset", "i-before-e", "check", "bieb"]) == 0
    assert main(["markov", "check", "bieb", "--preset", "i-before-e"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "allowed: bieb",
        "not allowed: cie  (it cannot write 'e' after 'ci')",
        "allowed: bieb",
        "allowed: bieb",
    ]
    for action, words in [("sample", "--length"), ("check", "case-sensitive"), ("stationary", "π P = π")]:
        with pytest.raises(SystemExit):
            main(["markov", action, "--help"])
        out = capsys.readouterr().out
        assert f"usage: rnnkit markov {action}" in out and words in out and "--preset" in out
    with pytest.raises(SystemExit):
        main(["markov", "--help"])
    out = capsys.readouterr().out
    assert all(a in out for a in ("sample", "check", "stationary"))


def test_markov_preset_and_text_on_either_side_of_the_action_conflict(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("ab\n")
    assert main(["markov", "--text", str(text), "check", "--preset", "abe", "ab"]) == 2
    _one_error_line(capsys, "give --preset or --text, not both")


def test_markov_empty_text_is_an_error_not_the_preset(capsys):
    # --text '' (an unset shell variable) sampled the abe preset, exit 0, as if no --text were given
    for argv in (["markov", "sample", "--text", ""], ["markov", "--text", "", "stationary"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (
            err
            == "rnnkit: error: --text is empty; give a text file, or leave --text out for the abe preset\n"
        )
    assert main(["markov", "--preset", "abe", "check", "--text", "", "AB"]) == 2
    _one_error_line(capsys, "give --preset or --text, not both")


def test_markov_sample_refuses_extra_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["markov", "sample", "extra"])
    assert e.value.code == 2 and "unrecognized arguments: extra" in capsys.readouterr().err


def test_markov_not_allowed_says_why(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be, that is the question.\nWhether tis nobler in the mind\n")
    assert main(["markov", "--text", str(text), "check", "the", "Whether", "To be", "Tq"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"not allowed: the  (no line of {text} starts with 't'; the first symbol can be T W)",
        "allowed: Whether",  # any line start may start, not only the file's first character
        "allowed: To be",
        "not allowed: Tq  (it cannot write 'q' after 'T')",
    ]
    assert main(["markov", "check", "abe", "ABE"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "not allowed: abe  ('a', 'b', 'e' are not among its symbols A B E; they are upper case: try 'ABE')",
        "allowed: ABE",
    ]
    with pytest.raises(SystemExit):
        main(["markov", "check", "--help"])
    assert "'the' is allowed when some line of the file" in capsys.readouterr().out


def test_markov_text_shows_a_bar_of_symbols_counted_in_pieces_as_in_one(tmp_path, capsys, monkeypatch):
    """markov --text of a big file counted its transitions with nothing on stderr (4 MB: seconds of a blank
    terminal, growing with the file), where ngram train draws a bar. A bar of the symbols counted now, the text
    counted a piece at a time, each with the symbol before it: the counts of a plain loop over its pairs."""
    import collections

    import numpy as np

    from rnnkit.text import markov

    text = "the cat sat\nan ox ran far\nat a tarn\n" * 7
    (tmp_path / "t.txt").write_text(text)
    monkeypatch.setattr(markov, "ESTIMATE_CHUNK", 5, raising=False)  # pieces shorter than a line
    assert main(["markov", "--text", str(tmp_path / "t.txt"), "stationary"]) == 0
    out, err = capsys.readouterr()
    assert "counting transitions: 100%" in err and "symbols/s" in err
    pairs, states = collections.Counter(zip(text, text[1:])), sorted(set(text))
    C = np.array([[pairs[a, b] for b in states] for a in states], float)
    pi = np.linalg.matrix_power(C / C.sum(1, keepdims=True), 200)[0]  # (an aperiodic, irreducible chain)
    assert [line.split("\t") for line in out.splitlines()] == [
        [repr(s), f"{p:.6f}"] for s, p in zip(states, pi)
    ]


def test_markov_check_help_says_what_a_dead_end_allows(tmp_path, capsys):
    """'!' ends the file and is found nowhere else: the chain restarts there at any character (sample writes "!a"),
    so check allows "ab!a", whose pair "!a" the file never holds, while its help said every pair occurs in the
    file. The help now says so."""
    text = tmp_path / "t.txt"
    text.write_text("abc\nab!")
    assert main(["markov", "--text", str(text), "check", "ab!a", "a!"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "allowed: ab!a",
        "not allowed: a!  (it cannot write '!' after 'a')",
    ]
    with pytest.raises(SystemExit):
        main(["markov", "check", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "a character that nothing follows in the file" in help_ and "moves to any character" in help_


def test_neighbours_binary_format_on_a_text_file_is_one_clear_error(tmp_path, capsys):
    import numpy as np

    from rnnkit.text import WordVectors

    rng = np.random.default_rng(0)
    WordVectors(["the", "cat", "sat", "zebra"], rng.normal(size=(4, 6))).save(tmp_path / "v.txt")
    assert main(["neighbours", str(tmp_path / "v.txt"), "the", "--format", "binary"]) == 2
    _one_error_line(capsys, "v.txt is not in word2vec binary format; try --format text")  # and no warning
    assert main(["neighbours", str(tmp_path / "v.txt"), "the", "--topn", "1"]) == 0


def test_ngram_model_that_is_not_one_is_one_line_without_numpy_words(tmp_path, corpus, capsys):
    assert main(["ngram", "eval", str(corpus), str(corpus)]) == 2
    _one_error_line(
        capsys, f"{corpus} is not an rnnkit n-gram model (an .npz written by `rnnkit ngram train --out`)"
    )
    import numpy as np

    np.savez(tmp_path / "other.npz", a=np.arange(3))  # an .npz, but not ours
    assert main(["ngram", "score", str(tmp_path / "other.npz"), "x"]) == 2
    err = capsys.readouterr().err
    assert "is not an rnnkit n-gram model" in err and "pickle" not in err


@pytest.mark.parametrize(
    "flag", ["--dimension", "--window", "--min-count", "--epochs", "--batch-size", "--workers"]
)
def test_word2vec_names_the_size_that_is_wrong(tmp_path, corpus, capsys, flag):
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), flag, "0"]) == 2
    _one_error_line(capsys, f"{flag} must be an integer >= 1, got 0")


def test_word2vec_negative_zero_is_refused_for_negative_sampling(tmp_path, corpus, capsys):
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), "--negative", "0"]) == 2
    _one_error_line(
        capsys, "--negative (noise words per pair) must be an integer >= 1 for negative sampling, got 0"
    )
    args = ["--loss", "softmax", "--dimension", "4", "--min-count", "1", "--epochs", "1"]
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), *args]) == 0  # softmax needs none


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--smoothing", "add-k", "--discount", "0.5"],
            "--discount is for Kneser-Ney smoothing, not --smoothing add-k",
        ),
        (["--k", "0.5"], "--k is the add-k pseudo-count, not used by --smoothing kneser-ney"),
        (["--smoothing", "modified-kneser-ney", "--k", "2"], "not used by --smoothing modified-kneser-ney"),
        # (one D for every count: the model was kneser-ney's with that D, bit for bit, in silence)
        (
            ["--smoothing", "modified-kneser-ney", "--discount", "0.5"],
            "--discount fixes one discount for every count, which makes modified-kneser-ney plain kneser-ney",
        ),
    ],
)
def test_ngram_train_refuses_options_of_another_smoothing(tmp_path, corpus, capsys, flags, message):
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), *flags]) == 2
    _one_error_line(capsys, message)
    assert not model.exists()
    for ok in (["--smoothing", "add-k", "--k", "0.5"], ["--discount", "0.5"]):
        assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "2", *ok]) == 0


def test_analogy_with_an_unknown_word_prints_nothing_before_the_error(tmp_path, corpus, capsys):
    import numpy as np

    from rnnkit.text import WordVectors

    WordVectors(["king", "man", "woman", "queen"], np.eye(4)).save(tmp_path / "v.txt")
    assert main(["neighbours", str(tmp_path / "v.txt"), "--analogy", "king", "zebra", "woman"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'zebra'" in captured.err


def test_ngram_complete_and_sample_never_write_unk(tmp_path, capsys):
    corpus = tmp_path / "rare.txt"  # after "the" a rare word, i.e. <unk>, is the likeliest next word
    corpus.write_text("".join(f"the w{i} sat\n" for i in range(30)) + "the cat sat\nthe cat sat\n")
    model = tmp_path / "m.npz"
    assert (
        main(
            [
                "ngram",
                "train",
                str(corpus),
                "--out",
                str(model),
                "-n",
                "2",
                "--level",
                "word",
                "--min-freq",
                "2",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["ngram", "complete", str(model), "the", "--length", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cat sat") and "<unk>" not in out
    assert main(["ngram", "sample", str(model), "--length", "200", "--temperature", "5"]) == 0
    assert "<unk>" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "given",
    [
        {"--order": 2, "--smoothing": "add-k", "--k": 0.5, "--level": "word", "--min-freq": 2},
        {"--order": 3, "--smoothing": "kneser-ney", "--discount": 0.25, "--level": "char", "--min-freq": 3},
        {"--order": 3, "--smoothing": "modified-kneser-ney", "--level": "word", "--min-freq": 1},
    ],
)
def test_each_ngram_train_flag_given_reaches_the_option_of_its_name(tmp_path, capsys, given):
    """`ngram train --lower` lower-cases the corpus, `--k 0.5` sets add-k's k, and so on: the saved model holds each
    flag's value under the option of its name and scores as NGramLM of the same options fitted to the same text (a
    mutant that dropped --lower passed every test: no test trained a model with it)."""
    from rnnkit.text.ngram import NGramLM

    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS.replace("the cat", "The Cat").replace("dog", "DOG"))
    model = tmp_path / "m.npz"
    flags = [str(a) for kv in given.items() for a in kv]
    assert main(["ngram", "train", str(corpus), "--out", str(model), *flags, "--lower"]) == 0
    lm = NGramLM.load(model)
    options = {flag[2:].replace("-", "_"): value for flag, value in given.items()}
    assert {name: getattr(lm, "n" if name == "order" else name) for name in options} == options and lm.lower
    n, smoothing = options.pop("order"), options.pop("smoothing")
    ref = NGramLM(n, smoothing, **options, lower=True)
    ref.fit(corpus.read_text())
    cat = "cat" if lm.level == "word" else "c"
    assert lm.vocab.itos == ref.vocab.itos and cat in lm.vocab and cat.upper() not in lm.vocab
    for text in ("the cat sat", "a dog and the mat"):
        assert lm.score(text, "\n").log_prob == ref.score(text, "\n").log_prob


def test_ngram_score_json_has_the_keys_of_rnnkit_score(tmp_path, corpus, capsys):
    import json

    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "the cat", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    charlm_keys = {
        "rank",
        "text",
        "log_prob",
        "nats",
        "chars",
        "nats_per_char",
        "bits_per_char",
        "perplexity",
    }
    assert charlm_keys <= set(r) and r["chars"] == 7 and r["nats"] == pytest.approx(-r["log_prob"])
    assert r["bits_per_char"] == pytest.approx(r["nats_per_char"] / 0.6931471805599453)
    assert main(["ngram", "eval", str(model), str(corpus), "--json"]) == 0
    assert {"file", "chars", "nats_per_char", "bits_per_char"} <= set(json.loads(capsys.readouterr().out))
    words = tmp_path / "w.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(words), "-n", "2", "--level", "word"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(words), "the cat", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["words"] == 2 and {"nats_per_word", "bits_per_word", "log_prob", "nats"} <= set(r)


def test_a_word_models_text_is_scored_as_a_sentences_start(tmp_path, capsys):
    """A word model scored, sampled and completed a text after no context: its first word was scored by
    Kneser-Ney's continuation counts, not as a sentence's first word, as a char model's starts a line."""
    import json

    from rnnkit.text import NGramLM

    (tmp_path / "c.txt").write_text("the cat sat\nthe dog sat\na cat ran\n" * 5)
    model = tmp_path / "w.npz"
    assert (
        main(["ngram", "train", str(tmp_path / "c.txt"), "--out", str(model), "-n", "3", "--level", "word"])
        == 0
    )
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "the cat sat", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["log_prob"]
    lm = NGramLM.load(model)
    assert (
        got == pytest.approx(lm.score("the cat sat", "\n").log_prob)
        and got > lm.score("the cat sat").log_prob
    )
    assert main(["ngram", "complete", str(model), "a", "--length", "2"]) == 0
    assert capsys.readouterr().out == "a cat ran\n"


def test_ngram_eval_shows_a_bar_of_tokens_and_scores_in_pieces_as_in_one(tmp_path, capsys, monkeypatch):
    """ngram eval of a big file scored it with nothing on stderr (6.4 MB: 5.5 s of a blank terminal); a bar of
    tokens now, the file read a piece at a time, each after the n-1 tokens before it: the log p of one call."""
    import json

    from rnnkit.text import NGramLM, ngram

    text = "the cat sat on a mat\nthe dog ran far\na cat ran\n" * 20
    (tmp_path / "c.txt").write_text(text)
    model = str(tmp_path / "m.npz")
    assert main(["ngram", "train", str(tmp_path / "c.txt"), "--out", model, "-n", "3"]) == 0
    capsys.readouterr()
    # pieces shorter than the text, and than n-1 at the start
    monkeypatch.setattr(ngram, "SCORE_CHUNK", 7, raising=False)
    assert main(["ngram", "eval", model, str(tmp_path / "c.txt"), "--json"]) == 0
    out, err = capsys.readouterr()
    lm = NGramLM.load(model)
    whole = lm.log_probs(lm.encode(text), lm.encode("\n")).sum()
    assert json.loads(out)["log_prob"] == float(whole) and "scoring: 100%" in err and "chars/s" in err


@pytest.mark.parametrize("level", ["word", "char"])
def test_ngram_eval_reads_its_file_as_score_reads_a_text(tmp_path, capsys, level):
    """ngram eval scored its file after no context, the first token by the lower order's continuation counts, where
    fit counts the training text after a line end and score reads a text after one: a file of 'the cat ran' read
    perplexity 3.58 in eval and 2.38 in score (a word bigram model). Both read it at a line's start."""
    import json

    (tmp_path / "c.txt").write_text("the cat sat\nthe dog ran\na cat ran\n")
    (tmp_path / "t.txt").write_text("the cat ran\n")
    model = str(tmp_path / "m.npz")
    assert main(["ngram", "train", str(tmp_path / "c.txt"), "--out", model, "-n", "2", "--level", level]) == 0
    capsys.readouterr()
    assert main(["ngram", "eval", model, str(tmp_path / "t.txt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert main(["ngram", "score", model, "the cat ran\n", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert evaluated["log_prob"] == pytest.approx(scored["log_prob"], rel=1e-12)
    assert evaluated["perplexity"] == pytest.approx(scored["perplexity"], rel=1e-12)
    # in the model's own unit, as score says it: a word model's words, nats_per_word, bits_per_word
    assert set(evaluated) == {"file", *scored} - {"rank", "text", "unknown"} and f"{level}s" in evaluated


@pytest.mark.parametrize("level", ["word", "char"])
def test_a_model_that_knows_no_line_end_reads_its_text_after_no_context(tmp_path, capsys, level):
    """A text of no newline gives a model no <eos> (nor "\\n"), and the line start the CLI puts before a text was
    encoded as <unk>: the first token was scored as after a rare one (-8.92 nats for -5.55 here, a word model of min_freq 2)."""
    import json

    from rnnkit.text import NGramLM

    (tmp_path / "c.txt").write_text(
        ("the cat sat on the mat " * 30) + " ".join(f"rare{i} {chr(0x100 + i)}" for i in range(40))
    )
    model = tmp_path / "m.npz"
    args = ["ngram", "train", str(tmp_path / "c.txt"), "--out", str(model), "-n", "3", "--level", level]
    assert main([*args, "--min-freq", "2"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "rare7 cat sat", "--json"]) == 0
    lm = NGramLM.load(model)
    assert json.loads(capsys.readouterr().out)["log_prob"] == pytest.approx(
        lm.score("rare7 cat sat").log_prob
    )


def test_count_options_say_at_least_one(tmp_path, corpus, capsys):
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "2"]) == 0
    capsys.readouterr()
    assert main(["ngram", "sample", str(model), "--length", "0"]) == 2
    _one_error_line(capsys, "--length must be an integer >= 1, got 0")


@pytest.mark.parametrize(
    "args, out",
    [
        (["markov", "--length", "10", "sample"], 10),
        (["markov", "--seed", "3", "sample"], 30),
        (["markov", "--seed", "3", "--length", "7", "sample"], 7),
        (["markov", "sample", "--length", "7", "--seed", "3"], 7),
    ],
)
def test_markov_sample_options_go_before_or_after_the_action(args, out, capsys):
    assert main(args) == 0
    assert len(capsys.readouterr().out.strip()) == out
    seeded = [["markov", "--seed", "3", "sample"], ["markov", "sample", "--seed", "3"]]
    assert main(seeded[0]) == 0 and main(seeded[1]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second


@pytest.mark.parametrize("action", [["check", "AB"], ["stationary"]])
def test_markov_sample_options_before_another_action_are_refused(action, capsys):
    assert main(["markov", "--length", "5", *action]) == 2
    _one_error_line(capsys, f"--length is for markov sample, not markov {action[0]}")


@pytest.mark.parametrize(
    "args",
    [
        ["markov", "sample", "--bogus"],
        ["markov", "check", "--bogus"],
        ["markov", "stationary", "--bogus"],
        ["ngram", "score", "m", "t", "--bogus"],
        ["ngram", "train", "c", "--out", "m", "--bogus"],
        ["tfidf", "search", "i", "q", "--bogus"],
    ],
)
def test_each_action_parser_is_known_for_its_own_usage(args):
    from rnnkit.cli import build_parser

    parsed, extra = build_parser().parse_known_args(args)
    assert extra == ["--bogus"] and parsed._parser.prog == f"rnnkit {args[0]} {args[1]}"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["word2vec", "{corpus}", "--out", "{out}", "--dimension", "0"],
            "--dimension must be an integer >= 1",
        ),
        (
            ["word2vec", "{corpus}", "--out", "{out}", "--dry-run", "--epochs", "0"],
            "--epochs must be an integer >= 1",
        ),
        (
            ["word2vec", "{corpus}", "--out", "{out}", "--loss", "softmax", "--negative", "3"],
            "--negative is the number of noise words of --loss negative, not used by --loss softmax",
        ),  # fmt: skip
        (
            ["ngram", "train", "{corpus}", "--out", "{out}/m.npz", "-n", "0"],
            "-n/--order (the n-gram order) must be an integer >= 1",
        ),
        (
            ["ngram", "train", "{corpus}", "--out", "{out}/m.npz", "--min-freq", "0"],
            "--min-freq must be an integer >= 1",
        ),
        (
            ["ngram", "train", "{corpus}", "--out", "{out}/m.npz", "--level", "word", "--min-freq", "500"],
            "the model knows no word but <unk> (none occurs 500 times",
        ),  # fmt: skip
    ],
)
def test_bad_text_options_name_the_flag_and_make_no_out_folder(args, message, tmp_path, corpus, capsys):
    out = tmp_path / "new"
    assert main([a.format(corpus=corpus, out=out) for a in args]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after ngram's counting bar, if any
    assert err.startswith("rnnkit: error: ") and message in err, err
    assert not out.exists()


def test_ngram_model_that_knows_only_unk_refuses_to_sample(tmp_path, capsys):
    from rnnkit.text import NGramLM

    lm = NGramLM(2, level="word", min_freq=5).fit("a b\n")
    lm.save(tmp_path / "m.npz")
    for args in (["sample", str(tmp_path / "m.npz")], ["complete", str(tmp_path / "m.npz"), "a"]):
        assert main(["ngram", *args]) == 2
        _one_error_line(capsys, "the model knows no word but <unk>")


def test_dry_run_shrinks_only_options_not_given(tmp_path, corpus, capsys):
    import json

    out = tmp_path / "w"
    assert (
        main(
            ["word2vec", str(corpus), "--out", str(out), "--dry-run", "--dimension", "4", "--min-count", "2"]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["min_count"], config["epochs"], config["backend"]) == (2, 1, "torch")


def test_counts_are_plural_and_have_thousands_separators(tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("a")
    assert main(["ngram", "train", str(one), "--out", str(tmp_path / "m.npz"), "--level", "char"]) == 0
    assert "model, 2 tokens," in capsys.readouterr().out  # <unk> and a
    words = tmp_path / "words.txt"
    words.write_text(" ".join(f"w{i}" for i in range(1100)) + "\n")
    assert (
        main(["ngram", "train", str(words), "--out", str(tmp_path / "m.npz"), "--level", "word", "-n", "1"])
        == 0
    )
    assert "model, 1,102 tokens," in capsys.readouterr().out  # the words, <unk> and <eos>
    args = ["--out", str(tmp_path / "w"), "--dry-run", "--dimension", "2", "--window", "1"]
    assert main(["word2vec", str(words), *args]) == 0
    assert "1,100 words x 2 dimensions" in capsys.readouterr().out


def test_ngram_train_of_an_order_whose_counts_cannot_fit_in_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """-n 1000 of Tiny Shakespeare grew past 8 GB in 131 s (every order past ~10 holds about as many n-grams as the
    text has characters: memory ~ n x its length) and ran on until the allocator or the out-of-memory killer stopped
    it. The counting stops at the first order that shows the n-grams can't fit, in one line naming n; here on a
    machine of 1 MB, where a 3-gram model of the same text fits."""
    from rnnkit.text import ngram

    monkeypatch.setattr(ngram, "_memory", lambda: 2**20, raising=False)
    text = tmp_path / "t.txt"
    draw = np.random.default_rng(0).integers(0, 26, 1500)
    text.write_text("".join(chr(97 + int(i)) for i in draw))  # (its 4-grams nearly all distinct)
    out = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(out), "-n", "200"]) == 2
    err = capsys.readouterr().err.splitlines()  # (below the counting's bar)
    said = "rnnkit: error: n = 200 (the n-gram order) counts orders up to 200 of a text of 1,500 tokens, at least "
    assert err[-1].startswith(said), err
    assert "and this machine has 1.0 MiB; give a smaller n" in err[-1], err
    assert not out.exists()
    assert main(["ngram", "train", str(text), "--out", str(out), "-n", "3"]) == 0


def test_ngram_train_of_an_order_past_a_64_bit_integer_is_one_line(tmp_path, capsys):
    """-n 18446744073709551616 trained and saved a model whose `ngram score` was a numpy traceback."""
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    out = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(out), "-n", str(2**64)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["rnnkit: error: -n/--order (the n-gram order) 18446744073709551616 is too large (past a 64-bit "
                   "integer, 2^63); give a smaller one"], err  # fmt: skip
    assert not out.exists()


def test_ngram_train_counts_the_swap_with_the_memory(tmp_path, capsys, monkeypatch):
    """The counts of the lower orders are swapped out while the higher ones are counted, so a fit that fits in memory
    and swap together runs to its end, as it did before the bound: on a machine of 1 MiB and 1 GiB of swap, -n 200
    of 1,500 random letters (3.0 MiB of n-grams at least) was refused, 'this machine has 1.0 MiB'."""
    import os

    from rnnkit.text import ngram

    pages = {"SC_PHYS_PAGES": 2**20 // 4096, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    monkeypatch.setattr(ngram, "_swap", lambda: 2**30, raising=False)
    text = tmp_path / "t.txt"
    draw = np.random.default_rng(0).integers(0, 26, 1500)
    text.write_text("".join(chr(97 + int(i)) for i in draw))
    assert main(["ngram", "train", str(text), "--out", str(tmp_path / "m.npz"), "-n", "200"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(ngram, "_swap", lambda: 0)  # (no swap: refused as before)
    assert main(["ngram", "train", str(text), "--out", str(tmp_path / "m2.npz"), "-n", "200"]) == 2
    err = capsys.readouterr().err.splitlines()  # (below the counting's bar)
    assert err[-1].endswith("3.0 MiB or more, and this machine has 1.0 MiB; give a smaller n"), err
    monkeypatch.undo()  # (Linux's SwapTotal, read from its /proc/meminfo)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:           1024 kB\nSwapFree:    1048576 kB\nSwapTotal:    1048576 kB\n")
    assert ngram._swap(meminfo) == 2**30
    assert ngram._swap(tmp_path / "none") == 0  # (no /proc/meminfo: the memory alone)


def test_ngram_train_refuses_an_empty_out(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be\n" * 20)
    assert main(["ngram", "train", str(text), "--out", ""]) == 2
    assert "--out is empty; give a file name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "first, again, written",
    [
        # (word2vec writes config.json first, marking its vectors files as being written, then again last)
        (["word2vec", "{c}", "--out", "{o}", "--dry-run"], ["--dimension", "30"], "config.json"),
        (["ngram", "train", "{c}", "--out", "{o}/m.npz", "-n", "2"], ["-n", "4"], "m.npz"),
        (["tfidf", "index", "{c}", "--out", "{o}"], ["--stem"], "tfidf.npz"),
    ],
)
def test_a_full_disk_leaves_the_old_files_and_says_so_in_one_line(tmp_path, corpus, capsys, monkeypatch, first,
                                                                    again, written):  # fmt: skip
    """A write that fails (a full disk, a file-size limit) leaves the files of the last run as they were (they
    were truncated: word2vec's vectors, the n-gram model) and is one line naming the file (was a traceback)."""
    import errno

    from rnnkit import _io

    out = tmp_path / "out"
    args = [a.format(c=corpus, o=out) for a in first]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    capsys.readouterr()
    assert main(args + again) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rnnkit")]  # not the bars
    assert len(err) == 1 and "No space left on device" in err[0] and written in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # and no temporary files left


def test_tfidf_search_refuses_documents_of_another_index(tmp_path, corpus, capsys):
    index = tmp_path / "idx"
    assert main(["tfidf", "index", str(corpus), "--out", str(index)]) == 0
    (index / "documents.json").write_text("[]")
    assert main(["tfidf", "search", str(index), "cat"]) == 2
    assert "lists 0 documents for the index's" in capsys.readouterr().err


def test_tfidf_search_names_the_line_of_the_file(tmp_path, capsys):
    """Blank lines were dropped before the lines were numbered: the text of line 3 was named file:2."""
    docs = tmp_path / "docs.txt"
    docs.write_text("the cat sat\n\nthe dog barked\r\ncats and dogs\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 0
    assert main(["tfidf", "search", str(tmp_path / "idx"), "dog barked"]) == 0
    assert "docs.txt:3  the dog barked" in capsys.readouterr().out


def test_ngram_json_of_a_text_of_probability_zero_is_valid_json(tmp_path, capsys, recwarn):
    """An unsmoothed model (--discount 0) gives an unseen bigram p = 0: json.dumps wrote -Infinity, which is
    not JSON, and numpy warned 'divide by zero'. The infinite values are null; the text output says inf."""
    import json

    corpus, unseen = tmp_path / "c.txt", tmp_path / "u.txt"
    corpus.write_text("abab abab\nbaba\n")
    unseen.write_text("bbbb\n")
    model = str(tmp_path / "m.npz")
    assert main(["ngram", "train", str(corpus), "--out", model, "-n", "2", "--discount", "0"]) == 0
    capsys.readouterr()
    assert main(["ngram", "eval", model, str(unseen), "--json"]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert result["perplexity"] is None and result["log_prob"] is None and result["chars"] == 5
    assert main(["ngram", "score", model, "bb", "ba", "--json"]) == 0
    rows = [
        json.loads(line, parse_constant=lambda c: pytest.fail(c))
        for line in capsys.readouterr().out.split("\n")[:-1]
    ]
    assert (
        [r["text"] for r in rows] == ["ba", "bb"] and rows[1]["log_prob"] is None and rows[0]["log_prob"] < 0
    )
    assert main(["ngram", "eval", model, str(unseen)]) == 0
    assert "inf nats/char" in capsys.readouterr().out
    assert not [w for w in recwarn if "divide by zero" in str(w.message)]


@pytest.mark.parametrize(
    "command",
    [["word2vec", "{one}", "--dry-run"], ["tfidf", "index", "{empty}"], ["tfidf", "index", "{missing}"]],
)
def test_a_command_that_fails_on_its_input_leaves_no_empty_out_folder(tmp_path, capsys, command):
    (tmp_path / "one.txt").write_text("a\nb\n")  # no sentence of two words: no pairs
    (tmp_path / "empty.txt").write_text("")
    files = {name: str(tmp_path / f"{name}.txt") for name in ("one", "empty", "missing")}
    out = tmp_path / "out"
    assert main([*(a.format(**files) for a in command), "--out", str(out)]) == 2
    assert not out.exists()
    out.mkdir()  # a folder that was there before stays
    assert main([*(a.format(**files) for a in command), "--out", str(out)]) == 2
    assert out.is_dir()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--backend", "native", "--batch-size", "64"], "--batch-size has no effect on the native backend"),
        (["--backend", "torch", "--workers", "2"], "--workers has no effect on the torch backend"),
        (["--dry-run", "--workers", "2"], "--workers has no effect on the torch backend"),
        # (it said to add --backend native, which refuses --loss softmax)
        (
            ["--loss", "softmax", "--workers", "2"],
            "on the torch backend, the one --loss softmax runs on; leave it out",
        ),
    ],
)
def test_word2vec_refuses_an_option_its_backend_ignores(tmp_path, corpus, capsys, flags, message):
    """--batch-size 1 and 4096 gave byte-identical native vectors; --workers 2 changed nothing in torch."""
    from rnnkit.text import w2v_native

    if "native" in flags and w2v_native.load() is None:
        pytest.skip("the native word2vec loop does not build here")
    capsys.readouterr()  # (a first build's "compiling ..." line, on a fresh machine: not the command's)
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), *flags]) == 2
    _one_error_line(capsys, message)
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), "--dry-run", "--workers", "1"]) == 0


def test_char_ngram_sample_and_complete_start_a_line_as_score_reads_it(tmp_path, capsys):
    # ngram score reads a char model's text after a newline (as rnnkit score, sample and complete do), but
    # ngram complete read its PREFIX, and sample its --prime, from no context: 'a' at the start of a line went
    # on as 'a' anywhere does ('aY'), and a sample without --prime began as the text does anywhere
    corpus = tmp_path / "lines.txt"
    corpus.write_text("aX\n" * 20 + "qaY\n" * 60)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3"]) == 0
    capsys.readouterr()
    assert main(["ngram", "complete", str(model), "a", "--length", "2"]) == 0
    assert capsys.readouterr().out == "aX\n\n"
    for seed in range(5):  # nearly greedy: the likeliest first character of a line, not of the whole text
        assert (
            main(
                ["ngram", "sample", str(model), "--length", "1", "--temperature", "0.05", "--seed", str(seed)]
            )
            == 0
        )
        assert capsys.readouterr().out == "q\n"


@pytest.mark.parametrize("name, said", [("missing.txt", "missing.txt not found"), ("empty.txt", "is empty")])
def test_word2vec_reads_its_corpus_before_compiling_its_loop(tmp_path, capsys, monkeypatch, name, said):
    # a first run compiled the native loop (about a minute) and only then said the corpus was missing or empty
    from rnnkit.text import w2v_native

    def no_compile():
        raise AssertionError("compiled the native loop before reading the corpus")

    monkeypatch.setattr(w2v_native, "load", no_compile)
    (tmp_path / "empty.txt").write_text("")
    assert main(["word2vec", str(tmp_path / name), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and said in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, value, said",
    [
        # past 2^63: torch's 'Overflow when unpacking long long' (a TypeError) or numpy's 'high is out of bounds for
        # int64' (a ValueError), each a traceback from inside fit
        ("--dimension", str(10**30), "--dimension 1000000000000000000000000000000 is too large"),
        ("--window", str(10**30), "--window 1000000000000000000000000000000 is too large"),
        ("--negative", str(10**30), "--negative 1000000000000000000000000000000 is too large"),
        ("--epochs", str(10**30), "--epochs 1000000000000000000000000000000 is too large"),
        # beyond float32: torch's 'value cannot be converted to type float without overflow' at the first step
        ("--alpha", "1e39", "--alpha 1e+39 is beyond the range of float32"),
        # under 2^63 but past any memory: torch's 'Storage size calculation overflowed', a traceback
        ("--dimension", str(2**62), "out of memory: an allocation of memory failed"),
    ],
)
def test_word2vec_sizes_past_any_machine_are_one_line(tmp_path, corpus, capsys, option, value, said):
    out = tmp_path / "w2v"
    assert main(["word2vec", str(corpus), "--out", str(out), "--dry-run", option, value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"rnnkit: error: {said}") and not any("Traceback" in line for line in err)
    assert not out.exists()


def test_out_of_memory_in_word2vec_names_its_own_sizes(tmp_path, corpus, capsys, monkeypatch):
    """The out-of-memory line named the character model's --hidden-size/--num-layers and --seq-len, options word2vec
    does not have; it names word2vec's sizes, and another command's --help. (Raised by hand, as for train.)"""
    import rnnkit.text

    def too_big(*a, **k):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)")

    monkeypatch.setattr(rnnkit.text.Word2Vec, "__init__", too_big)
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "w"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("rnnkit: error: out of memory: an allocation of 74.5 GiB failed")
        and err.count("\n") == 1
    )
    assert "--dimension, --batch-size, or a larger --min-count" in err and "--hidden-size" not in err
    monkeypatch.setattr(rnnkit.text.TfidfIndex, "fit", too_big)
    assert main(["tfidf", "index", str(corpus), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "the options of `rnnkit tfidf --help` that set them" in err and "--hidden-size" not in err


@pytest.mark.parametrize(
    "command, out",
    [
        (["word2vec", "{c}", "--dry-run"], "{o}"),
        (["ngram", "train", "{c}"], "{o}/m.npz"),
        (["ngram", "train", "{c}"], "{o}/new/m.npz"),
        (["tfidf", "index", "{c}"], "{o}/new"),
    ],
)
def test_an_out_folder_it_cannot_write_in_is_one_line_before_any_work(tmp_path, corpus, capsys, monkeypatch,
                                                                      command, out):  # fmt: skip
    """An --out folder that exists but can't be written in passed the checks: the command trained, counted or
    indexed, then failed naming a temporary file (Permission denied: .../vectors.txt.x1y2z3.tmp)."""
    import os

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)  # root may write there all the same: os.access reads the mode bits as a user's would
    monkeypatch.setattr(
        os, "access", lambda p, mode, **k: not mode & os.W_OK or bool(os.stat(p).st_mode & 0o222)
    )
    args = [a.format(c=corpus) for a in command] + ["--out", out.format(o=folder)]
    assert main(args) == 2
    captured = capsys.readouterr()
    said = f"cannot write --out {args[-1]}: the folder {folder} is not writable; give another --out"
    assert captured.err == f"rnnkit: error: {said}\n"
    assert not list(folder.iterdir())


def test_ngram_train_out_with_a_trailing_slash_is_a_folder_not_a_file(tmp_path, corpus, capsys):
    """--out models/ (a folder that is not there yet) wrote the file models.npz beside it."""
    out = tmp_path / "models"
    assert main(["ngram", "train", str(corpus), "--out", f"{out}/"]) == 2
    _one_error_line(capsys, f"--out {out}/ is a folder; give a file name, e.g. {out / 'model.npz'}")
    assert not list(tmp_path.glob("models*"))


@pytest.mark.parametrize(
    "text, flags, dropped",
    [(". , !\n-- ;\n", [], "(with punctuation dropped)"),
     ("the a an\nof the\n", ["--stop-words"], "(with punctuation and stop words dropped)")],
)  # fmt: skip
def test_tfidf_index_of_documents_without_terms_says_what_was_dropped(tmp_path, capsys, text, flags, dropped):
    # documents of punctuation alone, indexed without --stop-words, were said to hold no terms 'after stop words'
    docs = tmp_path / "docs.txt"
    docs.write_text(text)
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "index"), *flags]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err == f"rnnkit: error: the documents hold no terms {dropped}; give documents with words"
    assert not (tmp_path / "index").exists()


def test_word2vec_that_diverges_names_alpha(tmp_path, corpus, capsys):
    # said 'the vector of 'the' is not finite in float32 ...; word vectors must be finite numbers': a word, not
    # the learning rate that made the vectors overflow
    out = tmp_path / "w2v"
    argv = [
        "word2vec",
        str(corpus),
        "--out",
        str(out),
        *"--dry-run --dimension 8 --epochs 2 --alpha 1e20".split(),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert err.startswith("rnnkit: error: word2vec training diverged: the word vectors became NaN or infinite; "
                          "give a smaller --alpha (the learning rate, 1e+20 here; default 0.025)"), err  # fmt: skip
    # (a dry run trains on the torch backend, whose batches add up a word's updates: a few words' vocabulary
    # diverged there where the native backend trains, and the line did not name it)
    assert "; or the native backend (--backend native)" in err, err
    assert not out.exists()


def test_tfidf_search_refuses_documents_written_with_another_index(tmp_path, corpus, capsys):
    """documents.json is written after the index: an index stopped before it kept the old documents.json, whose
    names and previews were shown for the new index's documents wherever the counts agreed."""
    for name, tf in (("old", "count"), ("new", "log")):
        assert main(["tfidf", "index", str(corpus), "--out", str(tmp_path / name), "--tf", tf]) == 0
    shutil.copy(tmp_path / "old" / "documents.json", tmp_path / "new" / "documents.json")
    capsys.readouterr()  # the indexes' progress bars
    assert main(["tfidf", "search", str(tmp_path / "new"), "cat"]) == 2
    _one_error_line(capsys, "documents.json: it was written with another tfidf.npz")


def test_a_command_that_writes_files_whose_output_is_closed_says_so(tmp_path, corpus, capsys, monkeypatch):
    """`rnnkit ngram train ... | head`: a command that writes files stopped at the first line it could not print
    and exited 0 in silence, its model perhaps never saved. It says so in one line and exits 2; a command that only
    prints (`neighbours ... | head`) still exits 0, as `sample | head` does."""
    import errno
    import io
    import sys

    class Closed(io.TextIOBase):
        def write(self, s):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    # (the command said with its action: it was `rnnkit ngram`)
    for args, code in [(["ngram", "train", str(corpus), "--out", str(tmp_path / "m.npz")], 2),
                       (["tfidf", "index", str(corpus), "--out", str(tmp_path / "ix")], 2),
                       (["word2vec", str(corpus), "--out", str(tmp_path / "w"), "--dry-run"], 2),
                       (["markov", "sample", "--preset", "abe", "--length", "5"], 0)]:  # fmt: skip
        closed = Closed()
        monkeypatch.setattr(sys, "stdout", closed)
        got = main(args)
        if sys.stdout is not closed:  # /dev/null, put there so that Python's flush at exit says nothing
            sys.stdout.close()
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert got == code, err
        named = " ".join(args[: 1 if args[0] == "word2vec" else 2])
        said = f"rnnkit: error: the output was closed (its reader went away) before `rnnkit {named}` finished"
        assert (said in err) == (code == 2), err


def test_tfidf_index_of_a_folder_skips_an_empty_file_as_a_blank_line(tmp_path, capsys):
    """One empty .txt file among a folder's documents stopped the whole index ('docs/b.txt is empty; give a file
    with text'), where a file of one document a line skips its blank lines; the empty file is skipped."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("the cat sat\n")
    (docs / "b.txt").write_text("")
    (docs / "c.txt").write_text(" \n")
    (docs / "d.txt").write_text("a dog ran\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 0
    assert "2 documents" in capsys.readouterr().out
    assert main(["tfidf", "search", str(tmp_path / "idx"), "dog"]) == 0
    assert "d.txt" in capsys.readouterr().out
    (docs / "a.txt").write_text("")
    (docs / "d.txt").write_text("")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx2")]) == 2
    assert "no documents to index" in capsys.readouterr().err


def test_tfidf_index_of_an_empty_documents_name_is_refused(tmp_path, capsys, monkeypatch):
    """An empty DOCUMENTS ("$DOCS" unset in a script) is '.' to pathlib: the current folder's .txt files were indexed
    in silence, exit 0; it is one line, as an empty CORPUS is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("the cat sat\n")
    assert main(["tfidf", "index", "", "--out", str(tmp_path / "idx")]) == 2
    _one_error_line(
        capsys, "DOCUMENTS is empty; give a folder of .txt files, or a text file of one document a line"
    )
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("name", ["", " "])
@pytest.mark.parametrize(
    "action", [["score", "the"], ["eval", "FILE"], ["sample", "--length", "3"], ["complete", "the"]]
)
def test_ngram_of_an_empty_model_name_is_refused_not_read_as_the_current_folder(
    tmp_path, corpus, capsys, monkeypatch, action, name
):
    """An empty MODEL ("$MODEL" unset in a script) is '.' to pathlib: `rnnkit ngram score '' the` said 'cannot read
    n-gram model .: Is a directory', a '.' never typed (and ' ', 'cannot read n-gram model  : No such file or
    directory'); it is one line, as an empty VECTORS, INDEX or RUN is."""
    monkeypatch.chdir(tmp_path)
    args = [str(corpus) if a == "FILE" else a for a in action]
    assert main(["ngram", args[0], name, *args[1:]]) == 2
    _one_error_line(capsys, "MODEL is empty; give a model file that `rnnkit ngram train --out` wrote (.npz)")


def test_neighbours_and_tfidf_search_of_an_empty_name_are_refused(tmp_path, corpus, capsys, monkeypatch):
    """An empty VECTORS or INDEX ("$VECTORS" unset in a script) is '.' to pathlib: in the folder word2vec or tfidf
    index wrote, its vectors or index were read in silence, exit 0; each is one line, as an empty CORPUS is."""
    out = tmp_path / "out"
    assert main(["word2vec", str(corpus), "--out", str(out), "--dry-run", "--dimension", "4"]) == 0
    assert main(["tfidf", "index", str(corpus), "--out", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(out)
    assert main(["neighbours", "", "cat"]) == 2
    _one_error_line(
        capsys, "VECTORS is empty; give a word2vec file, or the folder that `rnnkit word2vec --out`"
    )
    assert main(["tfidf", "search", "", "cat"]) == 2
    _one_error_line(
        capsys, "INDEX is empty; give the folder that `rnnkit tfidf index --out` wrote (`.` for this"
    )


def test_tfidf_index_of_a_folder_skips_a_subfolder_named_txt(tmp_path, capsys):
    """A subfolder whose name ends in .txt (notes.txt/) was read as a document and stopped the whole index: 'cannot
    read docs/notes.txt: [Errno 21] Is a directory'; the index reads the folder's .txt files, and skips it."""
    docs = tmp_path / "docs"
    (docs / "notes.txt").mkdir(parents=True)
    (docs / "a.txt").write_text("the cat sat\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 0
    assert "1 document," in capsys.readouterr().out
    (docs / "a.txt").unlink()
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx2")]) == 2
    _one_error_line(capsys, f"{docs} holds no .txt file")


def test_tfidf_index_of_a_folder_skips_hidden_files_as_the_shells_glob_does(tmp_path, capsys):
    """macOS's AppleDouble file ._a.txt beside a.txt (a folder on a shared or FAT drive, unpacked from a Mac's tar) was
    read as a document and stopped the whole index: 'docs/._a.txt looks binary (a NUL byte at character 0)'; hidden
    files are skipped, as the shell's *.txt skips them."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("the cat sat\n")
    (docs / "._a.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (docs / ".notes.txt").write_text("the dog barked\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 0
    assert "1 document," in capsys.readouterr().out
    assert main(["tfidf", "search", str(tmp_path / "idx"), "cat"]) == 0
    assert "a.txt" in capsys.readouterr().out


@pytest.mark.skipif(sys.getfilesystemencoding() != "utf-8", reason="a name of bytes that are not UTF-8")
def test_tfidf_index_of_a_file_named_in_latin_1_names_it_by_its_bytes(tmp_path, capsys):
    """A .txt file whose name is no UTF-8 (Latin-1 'caf\\xe9.txt' from an old archive; Python reads it with a lone
    surrogate) stopped the index at documents.json, its last file: 'the output holds characters ('\\udce9') that its
    encoding, utf-8, can't write; set PYTHONIOENCODING=utf-8', which no setting fixed, tfidf.npz and index.json
    written and search refusing them ('cannot read .../documents.json'). The name is written as ls -b shows it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / os.fsdecode(b"caf\xe9.txt")).write_text("hello world\n")
    (docs / "b.txt").write_text("other text\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["tfidf", "search", str(tmp_path / "idx"), "hello"]) == 0
    assert capsys.readouterr().out == "1. 0.7071  caf\\xe9.txt  hello world \n"  # (its newline a space)
    lines = tmp_path / os.fsdecode(b"caf\xe9 lines.txt")  # a file of one document a line, named so too
    lines.write_text("hello world\nother text\n")
    assert main(["tfidf", "index", str(lines), "--out", str(tmp_path / "idx2")]) == 0
    capsys.readouterr()
    assert main(["tfidf", "search", str(tmp_path / "idx2"), "hello"]) == 0
    assert "caf\\xe9 lines.txt:1" in capsys.readouterr().out


@pytest.mark.skipif(sys.getfilesystemencoding() != "utf-8", reason="a name of bytes that are not UTF-8")
def test_a_file_named_in_latin_1_is_written_by_its_bytes_on_a_strict_utf8_stdout(tmp_path, monkeypatch):
    """Where stdout is strict UTF-8 (en_US.UTF-8, PYTHONIOENCODING=utf-8; C.UTF-8 is not), a corpus named in Latin-1
    ('caf\\xe9.txt', read 'caf\\udce9.txt') stopped `rnnkit ngram train` at its last line, its model written, exit 2:
    'the output holds characters ('\\udce9') ...; convert the text, e.g. with iconv' (and `rnnkit train` before its
    first step). The command line writes the name's bytes as they are, as on a C-locale stdout."""
    corpus = tmp_path / os.fsdecode(b"caf\xe9.txt")
    corpus.write_text(CORPUS)
    model = tmp_path / os.fsdecode(b"caf\xe9.npz")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.argv", ["rnnkit", "ngram", "train", str(corpus), "--out", str(model), "-n", "2"])
    assert main() == 0
    assert out.buffer.getvalue().endswith(b"n-grams -> " + os.fsencode(model) + b"\n")
    assert out.errors == "strict"  # (put back)


def test_tfidf_index_of_a_folder_without_txt_files_says_so(tmp_path, capsys):
    """A folder whose documents are not .txt files directly in it (.md, .tsv, or .txt in subfolders) was told
    'no documents to index; give at least one non-empty document', though its files are not empty."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("the cat sat\n")
    (docs / "sub" / "b.txt").write_text("the dog barked\n")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "idx")]) == 2
    _one_error_line(
        capsys, f"{docs} holds no .txt file (tfidf index reads the .txt files directly in a folder"
    )
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize(
    "document", [{"preview": "a cat"}, {"name": "d:1"}, "d:1", None, {"name": None, "preview": ""}]
)
def test_tfidf_search_of_documents_json_with_a_damaged_document_is_one_line(
    tmp_path, corpus, capsys, document
):
    """A document without its name or preview, or that is no object (documents.json damaged or edited), ended
    the search in a KeyError or TypeError traceback as its results were printed."""
    index = tmp_path / "idx"
    assert main(["tfidf", "index", str(corpus), "--out", str(index)]) == 0
    docs = json.loads((index / "documents.json").read_text())
    docs["documents"][0] = document
    (index / "documents.json").write_text(json.dumps(docs))
    capsys.readouterr()
    assert main(["tfidf", "search", str(index), "cat"]) == 2
    _one_error_line(capsys, "documents.json: a document in it is")


@pytest.mark.parametrize("name", ["index.json", "documents.json"])
def test_tfidf_search_reads_a_file_saved_again_with_a_byte_order_mark(tmp_path, corpus, capsys, name):
    """index.json or documents.json opened and saved unchanged by an editor that writes a UTF-8 byte-order mark was
    refused ('Unexpected UTF-8 BOM'), where config.json and vocab.json are read as utf-8-sig."""
    index = tmp_path / "idx"
    assert main(["tfidf", "index", str(corpus), "--out", str(index)]) == 0
    capsys.readouterr()
    assert main(["tfidf", "search", str(index), "market"]) == 0
    want = capsys.readouterr().out
    f = index / name
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert main(["tfidf", "search", str(index), "market"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == want


def test_a_command_without_stderr_runs(tmp_path, corpus, monkeypatch):
    """Started with stderr closed (`2>&-`, pythonw: sys.stderr is None), `ngram train` stopped in its progress bar's
    first write (tqdm's AttributeError), exit 1 and nothing said: every command's bars and warnings go nowhere."""
    monkeypatch.setattr("sys.stderr", None)
    assert main(["ngram", "train", str(corpus), "--out", str(tmp_path / "m.npz"), "-n", "2"]) == 0
    assert (tmp_path / "m.npz").is_file()
    sys.stderr.close()  # (the null device main opened: the process's own until it exits)


@pytest.mark.parametrize(
    "argv", [["markov", "sample", "--length", "5"], ["ngram", "sample", "MODEL", "--length", "5"]]
)
def test_a_sample_without_stdout_runs(tmp_path, corpus, monkeypatch, argv):
    """Started with stdout closed (`>&-`, pythonw: sys.stdout is None), the samplers stopped with a traceback,
    'NoneType' object has no attribute 'isatty' (print_pieces), exit 1, where every other command's print() writes
    nowhere: their text goes nowhere too."""
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "2"]) == 0
    monkeypatch.setattr("sys.stdout", None)
    assert main([str(model) if word == "MODEL" else word for word in argv]) == 0
    sys.stdout.close()  # (the null device main opened: the process's own until it exits)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["markov", "--text", "TEXT", "sample", "--length", "40"], True),
        (["ngram", "sample", "MODEL", "--length", "40"], True),
        (["ngram", "sample", "MODEL", "--length", "40", "--prime", "thé"], False),
    ],
)
def test_a_sample_its_output_cannot_write_ends_its_line_before_the_error(
    tmp_path, monkeypatch, capsys, argv, line
):
    """Sampled to an ASCII stdout (PYTHONIOENCODING=ascii), the text before the first 'é' stayed on an open line and
    the error line was written after it: 'la cafrnnkit: error: the output holds characters ...' on a terminal and in
    a 2>&1 log. The text ends its line first; a --prime the output can't write leaves no empty line."""
    text = tmp_path / "fr.txt"
    text.write_text("le café est très bon et le thé aussi.\n" * 30)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(model), "-n", "3"]) == 0
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding="ascii"))
    capsys.readouterr()
    assert main([{"TEXT": str(text), "MODEL": str(model)}.get(word, word) for word in argv]) == 2
    assert "its encoding, ascii, can't write" in capsys.readouterr().err
    sys.stdout.flush()
    written = buffer.getvalue()
    assert (written.endswith(b"\n") and written.count(b"\n") == 1) if line else written == b"", written


def test_progress_bars_in_a_log_are_whole_lines(tmp_path, corpus, capsys):
    """With stderr no terminal (`2> log.txt`, `| tee`; capsys here) each bar's updates were written as '\\r' and the
    bar again, run together on one line of the log. They are whole lines: the bar's start and end."""
    for argv in (
        ["ngram", "train", str(corpus), "--out", str(tmp_path / "m"), "-n", "3"],
        ["tfidf", "index", str(corpus), "--out", str(tmp_path / "index")],
        ["markov", "--text", str(corpus), "stationary"],
        ["word2vec", str(corpus), "--out", str(tmp_path / "w2v"), "--dimension", "8", "--epochs", "1"],
    ):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "\r" not in err and err.endswith("\n"), err
        # (the bar's lines: a first use's build of the word2vec loop may say a line of its own, waiting for another)
        bars = [line for line in err.splitlines() if "%|" in line]
        assert " 0%|" in bars[0] and "100%|##########|" in bars[-1], err


def test_word2vec_bar_in_a_log_writes_no_line_per_epoch(tmp_path, corpus, capsys):
    # in a log (2> log.txt) the bar wrote a line at every epoch (--epochs 30: 32 lines in 10 s), where the README
    # and every other bar write one every 30 s: the start and the end here
    argv = ["word2vec", str(corpus), "--out", str(tmp_path / "w2v"), "--dimension", "8", "--epochs", "6"]
    assert main(argv) == 0
    bars = [line for line in capsys.readouterr().err.splitlines() if "%|" in line]
    assert len(bars) == 4 and " 0%|" in bars[0] and "100%|##########|" in bars[1], bars
    assert [line.split("|")[0] for line in bars[2:]] == ["saving:   0%", "saving: 100%"], bars  # its vectors


def test_a_pipe_or_device_of_binary_data_or_without_end_is_refused(tmp_path, pipe, capsys, monkeypatch):
    """A text file that is a device or a pipe (/dev/zero, /dev/urandom, `yes |`) was read to its end, which never
    came: the machine's memory filled, then 'out of memory ...; choose smaller sizes' (or the process was killed).
    Such input is read up to its first NUL byte, or up to STREAM_BYTES; a pipe of text still reads (<(zcat ...))."""
    monkeypatch.setattr("rnnkit._io.STREAM_BYTES", 1 << 20, raising=False)
    for argv in (
        ["ngram", "train", "{}", "--out", str(tmp_path / "m")],
        ["markov", "sample", "--text", "{}"],
    ):
        zeros = str(pipe(b"\0" * 65536, 64))
        assert main([a.format(zeros) for a in argv]) == 2
        _one_error_line(
            capsys, f"{zeros} is a pipe or a device that gives binary data (a NUL byte at byte 0)"
        )
    endless = str(pipe(b"the cat sat on the mat\n" * 5000, 40))  # 4.6 MB
    assert main(["ngram", "train", endless, "--out", str(tmp_path / "m"), "-n", "1"]) == 2
    _one_error_line(
        capsys, f"{endless} is a pipe or a device that gave more than 1,048,576 bytes without an end"
    )
    assert main(["ngram", "train", str(pipe(CORPUS.encode(), 1)), "--out", str(tmp_path / "m")]) == 0


def test_a_pipe_of_utf16_text_is_named_with_its_iconv_line(tmp_path, pipe, capsys):
    """`iconv -t UTF-16 ... | rnnkit ngram train /dev/stdin`: the reader of pipes stopped at the first NUL byte of its
    ASCII characters and called it binary data, where a UTF-16 file (and such a pipe before) is named with the iconv
    line that converts it."""
    wide = str(pipe(CORPUS.encode("utf-16"), 1))
    assert main(["ngram", "train", wide, "--out", str(tmp_path / "m")]) == 2
    _one_error_line(
        capsys, f"{wide} is UTF-16 text, not UTF-8; convert it to UTF-8: iconv -f UTF-16 -t UTF-8"
    )


@pytest.mark.parametrize("tail", ["", "é", "模", "😀"])
def test_a_dry_run_reads_the_start_of_its_corpus_only(tmp_path, capsys, monkeypatch, tail):
    """--dry-run (the first 20k characters) read the whole corpus into memory first: 690 MB of memory for a 232 MB
    corpus, a smoke test that a corpus of several GB ran out of memory on. It reads the first 4 x 20k bytes (UTF-8's
    most for 20k characters), a character cut at their end left out."""
    import numpy as np

    import rnnkit._io
    from rnnkit.cli.text import DRY_RUN_CHARS
    from rnnkit.text import NGramLM

    text = ("a" * (4 * DRY_RUN_CHARS - 1) + tail + "the cat sat\n") * 3
    corpus = tmp_path / "big.txt"
    corpus.write_text(text, encoding="utf-8")
    read = []

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

        def read(self, *args):
            read.append(len(data := self.f.read(*args)))
            return data

    monkeypatch.setattr(rnnkit._io, "open", lambda *a, **k: Spy(open(*a, **k)), raising=False)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "2", "--dry-run"]) == 0
    assert sum(read) <= 4 * DRY_RUN_CHARS
    want = NGramLM(2).fit(text[:DRY_RUN_CHARS])
    got = NGramLM.load(model)
    assert got.vocab.itos == want.vocab.itos and all(
        np.array_equal(a, b) for a, b in zip(got.keys, want.keys)
    )


def test_ngram_score_names_the_text_with_nothing_to_score(tmp_path, corpus, capsys):
    """Of several texts, one of no tokens (an empty or blank one, a variable unset) stopped the command with
    'nothing to score: the text has no tokens', not saying which; it is named as rnnkit score names it."""
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "--level", "word", "-n", "2"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "the cat", "  ", "a dog"]) == 2
    _one_error_line(capsys, "TEXT 2 of 3 ('  ') has no word to score; give some text")
    assert main(["ngram", "score", str(model), ""]) == 2
    _one_error_line(capsys, "TEXT has no word to score; give some text")


@pytest.mark.parametrize(
    "command, given, written",
    [
        (["word2vec", "{given}", "--dry-run", "--out", "{out}"], "vectors.txt", "vectors.txt"),
        (["word2vec", "{given}", "--dry-run", "--out", "{out}"], "config.json", "config.json"),
        (["ngram", "train", "{given}", "--dry-run", "--out", "{out}/lm"], "lm.npz", "lm.npz"),
        (["tfidf", "index", "{given}", "--out", "{out}"], "documents.json", "documents.json"),
        (["tfidf", "index", "{given}", "--out", "{out}"], "docs", "documents.json"),
    ],
)
def test_an_input_that_an_output_would_overwrite_is_refused_before_any_work(
    tmp_path, capsys, command, given, written
):
    """`rnnkit word2vec out/vectors.txt --out out` wrote its vectors over the corpus it had read: the corpus lost.
    An output that is the input file (its name, a link to it, a .txt of a folder of documents) is one line first."""
    out = tmp_path / "out"
    out.mkdir()
    source = out / written
    source.write_text(CORPUS)
    if given == "docs":  # a document of the folder is a link to the file the index writes
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "a.txt").symlink_to(source)
        given = tmp_path / "docs"
    else:
        given = out / given
    assert main([a.format(given=given, out=out) for a in command]) == 2
    _one_error_line(capsys, f"would overwrite {'the document ' if given.is_dir() else ''}")
    assert source.read_text() == CORPUS and sorted(p.name for p in out.iterdir()) == [written]


JAPANESE = "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で泣いていた。\n"
CHINESE = "中文文本没有字节顺序标记，一行很长的文字，没有换行符号和空格。"  # no ASCII: no NUL in UTF-16


@pytest.mark.parametrize(
    "text, encoding",
    [(JAPANESE * 4, "utf-16-le"), (CHINESE * 8, "utf-16-le"), (CHINESE * 8, "utf-16-be"),
     ("Привет, мир! Это текст по-русски.\n" * 8, "utf-16-le")],
)  # fmt: skip
def test_utf16_without_a_byte_order_mark_of_text_not_ascii_is_named(tmp_path, capsys, text, encoding):
    """UTF-16 without a byte-order mark of Japanese, Chinese or Russian text (too few ASCII characters for the NULs
    of ASCII's UTF-16 at fixed places) was 'binary', or 'not UTF-8' with the codec's words: it is named, with the
    iconv line, by the text commands and the character models' reader alike."""
    from rnnkit.data.corpus import load_file
    from rnnkit.errors import RnnkitError

    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode(encoding))
    name = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
    said = f"looks like {name} text without a byte-order mark, not UTF-8; convert it to UTF-8: iconv -f {name} -t UTF-8"
    assert main(["ngram", "train", str(path), "--out", str(tmp_path / "m")]) == 2
    _one_error_line(capsys, said)
    with pytest.raises(RnnkitError, match=said):
        load_file(path)


def test_binary_and_other_encodings_keep_their_error(tmp_path, capsys):
    """Binary files and text of an 8-bit or a double-byte encoding are not said to be UTF-16 without a mark."""
    import gzip
    import random

    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00\x1f\xf3\xffa"
    noise = random.Random(0).randbytes(4096)
    for data, said in [(png, "binary"), (gzip.compress(png), "binary"), (noise, "rnnkit: error: "),
                       ((JAPANESE * 4).encode("shift_jis"), "is not UTF-8 text (invalid byte at byte offset 0)"),
                       ((CHINESE * 8).encode("gbk"), "is not UTF-8 text (invalid byte at byte offset 0)"),
                       ("café crème brûlée à la française\n".encode("latin-1") * 8, "is not UTF-8 text (invalid byte "
                        "at byte offset 3); convert it to UTF-8")]:  # fmt: skip
        (path := tmp_path / "corpus.txt").write_bytes(data)
        assert main(["ngram", "train", str(path), "--out", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err
        assert said in err and "UTF-16" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_missing_file_or_one_not_utf8_is_said_as_train_and_eval_say_it(tmp_path, capsys, corpus, bom):
    """The text commands said these in Python's words: 'cannot read c.txt: [Errno 2] No such file or directory:
    'c.txt'; give a UTF-8 text file' and 'cannot read c.txt: 'utf-8' codec can't decode byte 0xe9 in position 3:
    invalid continuation byte; give a UTF-8 text file', where train and eval (load_file) say 'corpus c.txt not
    found; give a text file' and 'c.txt is not UTF-8 text (invalid byte at byte offset 3); convert it to UTF-8'."""
    from rnnkit.data.corpus import load_file
    from rnnkit.errors import RnnkitError

    missing, latin = tmp_path / "nowhere.txt", tmp_path / "latin.txt"
    latin.write_bytes(bom + "the café\n".encode("latin-1"))
    said = f"{latin} is not UTF-8 text (invalid byte at byte offset {len(bom) + 7}); convert it to UTF-8"
    with pytest.raises(RnnkitError, match=re.escape(said)):
        load_file(latin)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "--dry-run"]) == 0
    capsys.readouterr()
    for argv in (["ngram", "train", "{}", "--out", str(tmp_path / "m2")], ["ngram", "eval", str(model), "{}"],
                 ["markov", "sample", "--text", "{}"], ["tfidf", "index", "{}", "--out", str(tmp_path / "ix")],
                 ["word2vec", "{}", "--out", str(tmp_path / "w")]):  # fmt: skip
        assert main([a.format(missing) for a in argv]) == 2
        _one_error_line(capsys, f"rnnkit: error: {missing} not found; give a text file\n")
        assert main([a.format(latin) for a in argv]) == 2
        _one_error_line(capsys, f"rnnkit: error: {said}\n")


def test_neighbours_of_missing_vectors_names_the_fix(tmp_path, capsys):
    # it was 'cannot read vectors v.txt: No such file or directory', the only missing input said without a fix
    for name in ("v.txt", "v.bin.gz"):
        assert main(["neighbours", str(tmp_path / name), "cat"]) == 2
        _one_error_line(capsys, f"rnnkit: error: vectors {tmp_path / name} not found; give a word2vec file or the "
                        "folder that `rnnkit word2vec --out` wrote")  # fmt: skip


def test_a_word_of_bytes_that_are_not_utf8_is_said_so(tmp_path, capsys):
    """A Latin-1 terminal's 'café' reaches the command as 'caf\\udce9' (b'caf\\xe9'): neighbours said "unknown
    word(s) 'caf\\udce9'" and tfidf search "no term of the query 'caf\\udce9' is in the index", a character no one
    typed, where sample, score and complete say what it stands for."""
    (tmp_path / "v.txt").write_text("2 2\ncafé 1 0\ntea 0 1\n")
    (tmp_path / "docs.txt").write_text("café au lait\ntea for two\n")
    assert main(["tfidf", "index", str(tmp_path / "docs.txt"), "--out", str(tmp_path / "ix")]) == 0
    capsys.readouterr()
    said = "(\\udce9 stands for the byte 0xe9: the text is not UTF-8; set the terminal to UTF-8"
    for argv in (
        ["neighbours", str(tmp_path / "v.txt"), "caf\udce9"],
        ["tfidf", "search", str(tmp_path / "ix"), "caf\udce9"],
    ):
        assert main(argv) == 2
        _one_error_line(capsys, said)


def test_a_path_option_given_as_one_word_expands_a_tilde(tmp_path, capsys, monkeypatch):
    """`--out=~/m.npz` (the shell expands ~ only at a word's start) made a folder named '~' in the current one and
    said '-> ~/m.npz', read as the home folder; `--text=~/c.txt` was 'not found'."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    (home / "c.txt").write_text(CORPUS)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert main(["ngram", "train", str(home / "c.txt"), "--out=~/m.npz", "-n", "2"]) == 0
    assert main(["tfidf", "index", str(home / "c.txt"), "--out=~/ix"]) == 0
    assert main(["markov", "--text=~/c.txt", "stationary"]) == 0
    assert (home / "m.npz").is_file() and (home / "ix" / "index.json").is_file()
    assert not (work / "~").exists() and f"-> {home / 'm.npz'}" in capsys.readouterr().out


def test_tfidf_search_of_no_index_says_what_it_was_given(tmp_path, corpus, capsys):
    """A missing index folder, a file, or a folder without an index were said in Python's words: 'cannot read a
    TF-IDF index in ix: [Errno 2] No such file or directory: 'ix/index.json'; build one ...' ([Errno 20] Not a
    directory for a file)."""
    missing, folder = tmp_path / "ix", tmp_path / "docs"
    folder.mkdir()
    for given, said in [(missing, f"{missing} not found; give the folder that `rnnkit tfidf index --out` wrote"),
                        (corpus, f"{corpus} is a file; give the folder that `rnnkit tfidf index --out` wrote"),
                        (folder, f"cannot read a TF-IDF index in {folder}: it holds no index.json; build one")]:  # fmt: skip
        assert main(["tfidf", "search", str(given), "cat"]) == 2
        _one_error_line(capsys, f"rnnkit: error: {said}")


@pytest.mark.parametrize("command", [["word2vec"], ["ngram", "train"]])
def test_a_folder_given_as_the_corpus_is_said_as_a_folder(tmp_path, capsys, command):
    # "cannot read D: [Errno 21] Is a directory: 'D'; give a UTF-8 text file"; train and eval say it so
    folder = tmp_path / "texts"
    folder.mkdir()
    assert main([*command, str(folder), "--out", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, f"{folder} is a folder; give one text file")


def test_word2vec_takes_min_alpha_so_an_alpha_below_its_default_can_run(tmp_path, corpus, capsys):
    """--alpha below 1e-4 (min_alpha's default) was refused as '--min-alpha ... must lie in [0, alpha = 5e-05]', a
    flag the command did not have: no such rate could run. --min-alpha is an option, as the config's field."""
    out = tmp_path / "w"
    argv = ["word2vec", str(corpus), "--out", str(out), "--dry-run", "--dimension", "4", "--alpha", "5e-5"]
    assert main(argv) == 2
    _one_error_line(
        capsys, "--min-alpha (the final learning rate) must lie in [0, alpha = 5e-05], got 0.0001"
    )
    assert main([*argv, "--min-alpha", "1e-6"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["alpha"], config["min_alpha"]) == (5e-5, 1e-6)


def test_each_word2vec_flag_given_reaches_the_option_of_its_name_and_trains_as_the_python_api(
    tmp_path, capsys
):
    """`word2vec --cbow-sum` sets cbow_mean False, `--cbow-update gradient` cbow_update, `--lower` lower-cases the
    sentences, and so on: config.json holds each flag's value under the option of its name, and the vectors are those
    Word2Vec(config) trains on the same sentences (a mutant that dropped --cbow-sum, --cbow-update or --lower passed
    every test: the smoke tests ran with none of them)."""
    from dataclasses import asdict

    from rnnkit.text import Word2Vec, Word2VecConfig
    from rnnkit.text.wordvectors import WordVectors

    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS.replace("the cat", "The cat").replace("dog sat", "Dog sat"))
    given = {"--model": "cbow", "--cbow-update": "gradient", "--dimension": 6, "--window": 2, "--sample": 0.0,
             "--alpha": 0.05, "--min-alpha": 0.001, "--seed": 7, "--min-count": 2, "--epochs": 2,
             "--backend": "torch", "--batch-size": 64, "--negative": 3}  # fmt: skip
    flags = [str(a) for kv in given.items() for a in kv]
    assert main(["word2vec", str(corpus), "--out", str(tmp_path / "o"), *flags, "--cbow-sum", "--lower"]) == 0
    options = Word2VecConfig(**{flag[2:].replace("-", "_"): v for flag, v in given.items()}, cbow_mean=False)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "files"} == asdict(options)
    ref = Word2Vec(options).fit([line.lower().split() for line in corpus.read_text().split("\n")])
    wv = WordVectors.load(tmp_path / "o" / "vectors.txt")
    assert wv.words == ref.wv.words and "the" in wv.words and "The" not in wv.words
    np.testing.assert_array_equal(wv.vectors, ref.wv.vectors)


@pytest.mark.parametrize("target", ["loop", "nowhere/x"])
def test_an_out_that_is_a_link_to_nothing_says_so(tmp_path, corpus, capsys, target):
    """--out a symbolic link whose target is missing (a run folder moved away) or a loop of links was said as
    'cannot make the --out folder OUT: File exists', of a path `ls` shows no folder at; the line names the link."""
    link = tmp_path / "loop"
    link.symlink_to(tmp_path / target)
    for command in (["word2vec", str(corpus), "--dry-run"], ["tfidf", "index", str(corpus)],
                    ["hopfield", "recall", "--units", "16"]):  # fmt: skip
        assert main([*command, "--out", str(link)]) == 2
        _one_error_line(
            capsys, f"--out {link} is a symbolic link to {tmp_path / target}, which leads to no folder"
        )


@pytest.mark.parametrize(
    ("fails", "rerun"),
    [("vectors.bin", ["8"]), ("vectors.bin", ["4", "--seed", "1"]), ("record", ["8"]), ("marker", ["8"])],
)
def test_a_word2vec_run_stopped_in_an_old_out_folder_is_not_read_as_one_run(
    tmp_path, corpus, capsys, fails, rerun
):
    """A rerun into an --out that failed part-way (a full disk at vectors.bin or at config.json) left its new
    vectors.txt beside the old files, and the folder was read in silence as the old vectors (V, 4), vectors.txt being
    (V, 8). config.json is written first without the files' record ("files": null), last with each vectors file's
    size and sha256, and load refuses a folder they don't fit; a run that stopped at the first wrote nothing."""
    import errno
    from unittest import mock

    from rnnkit.text import WordVectors

    out = tmp_path / "w"
    argv = ["word2vec", str(corpus), "--out", str(out), "--dry-run", "--dimension"]
    assert main([*argv, "4"]) == 0
    old = WordVectors.load(out).vectors
    assert old.shape[1] == 4  # a whole folder reads
    save, write_text = WordVectors.save, sys.modules["rnnkit.cli.text"].write_text

    def full():
        return OSError(errno.ENOSPC, "No space left on device")

    def save_full(self, path, binary=False):
        if pathlib.Path(path).name == fails:
            raise full()
        save(self, path, binary)

    def write_full(path, text):
        if (fails, '"sha256"' in text) in (("record", True), ("marker", False)):
            raise full()
        write_text(path, text)

    with (
        mock.patch.object(WordVectors, "save", save_full),
        mock.patch("rnnkit.cli.text.write_text", write_full),
    ):
        assert main([*argv, *rerun]) == 2
    capsys.readouterr()
    if fails == "marker":  # nothing written: the old folder as it was
        assert (WordVectors.load(out).vectors == old).all()
        assert (WordVectors.load(out, binary=False).vectors == old).all()
        return
    assert WordVectors.load(out / "vectors.txt").vectors.shape[1] == int(rerun[0])  # each file is whole
    for args in ([], ["--format", "text"], ["--format", "binary"]):
        assert main(["neighbours", str(out), "cat", *args]) == 2
        _one_error_line(capsys, f"{out} holds files of two runs: ")
    # a vectors.bin of the same size from another run: its sha256 tells
    assert main([*argv, "4"]) == 0
    other = tmp_path / "other"
    assert main([*argv, "4", "--seed", "1", "--out", str(other)]) == 0
    shutil.copy(other / "vectors.bin", out / "vectors.bin")
    with pytest.raises(RnnkitError, match="holds files of two runs: its vectors.bin is not the one"):
        WordVectors.load(out)
    # a folder without the record (written before it, or by others: gensim's files, a config.json of theirs) reads
    (out / "config.json").write_text(json.dumps({"dimension": 4}))
    assert WordVectors.load(out).vectors.shape[1] == 4
    (out / "config.json").write_text("[1, 2]")
    assert WordVectors.load(out).vectors.shape[1] == 4
    (out / "config.json").unlink()
    assert WordVectors.load(out, binary=False).vectors.shape[1] == 4


def test_ngram_score_notes_the_unknown_tokens_of_its_context(tmp_path, corpus, capsys):
    """A --context with tokens the model doesn't know was scored after <unk> in silence, where TEXT's unknown
    tokens are listed in a note; the note lists the context's first."""
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "the cat", "--context", "zq"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("'the cat'  (unknown, scored as <unk>: ['z', 'q'])")
    assert main(["ngram", "score", str(model), "the q", "--context", "zq", "--json"]) == 0
    assert '"unknown": ["z", "q"]' in capsys.readouterr().out
    assert main(["ngram", "score", str(model), "the cat", "--context", "the "]) == 0
    assert "unknown" not in capsys.readouterr().out


@pytest.mark.parametrize("level", ["char", "word"])
def test_samples_are_printed_as_drawn_so_a_huge_length_shows_text_and_ctrl_c_keeps_it(
    tmp_path, monkeypatch, level, ctrl_c_after
):
    # markov/ngram sample kept every token and printed them all at the end: --length 10**20 printed nothing and grew
    # in memory until stopped. Now each token is written as it is drawn, holding only the model's history.
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat\n" * 10)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3", "--level", level]) == 0
    for args in (
        ["markov", "sample"],
        ["ngram", "sample", str(model)],
        ["ngram", "complete", str(model), "the"],
    ):
        out = ctrl_c_after(300)
        monkeypatch.setattr(sys, "stdout", out)
        with pytest.raises(KeyboardInterrupt):
            main([*args, "--length", str(10**20)])
        monkeypatch.undo()
        assert len(out.text) >= 300 and out.text.endswith("\n"), args  # the line ended


@pytest.mark.parametrize("level", ["char", "word"])
def test_streamed_samples_are_the_texts_of_the_python_api(tmp_path, capsys, level):
    from rnnkit.cli.text import _after
    from rnnkit.text.markov import PRESETS
    from rnnkit.text.ngram import NGramLM

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat\nthe\n" * 10)
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "3", "--level", level]) == 0
    lm = NGramLM.load(model)
    capsys.readouterr()
    for seed in range(3):
        for prime in ("", "the", "sat\n"):
            main(["ngram", "sample", str(model), "--length", "40", "--seed", str(seed), "--prime", prime])
            assert capsys.readouterr().out == _after(lm, prime, lm.sample(40, "\n" + prime, 1.0, seed)) + "\n"
            assert "".join(lm.iter_generate("\n" + prime, 40, 0.5, seed)) == lm.sample(
                40, "\n" + prime, 2.0, seed
            )
        main(["markov", "sample", "--length", "40", "--seed", str(seed)])
        assert capsys.readouterr().out == PRESETS["abe"]().sample(40, seed) + "\n"


def test_an_out_that_is_a_device_or_a_pipe_is_refused(tmp_path, corpus, capsys):
    """`ngram train c.txt --out /dev/null` saved the model as /dev/null.npz (as root: a new file among the devices),
    exit 0; a FIFO as --out was replaced by the model. Both are one line now, and the folder commands say what the
    path is rather than 'is a file'."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for out, kind in (("/dev/null", "a device, not a file"), (str(fifo), "a pipe (FIFO), not a file")):
        assert main(["ngram", "train", str(corpus), "--out", out]) == 2
        _one_error_line(capsys, f"--out {out} is {kind}; give a file name, e.g. model.npz")
        assert main(["tfidf", "index", str(corpus), "--out", out]) == 2
        _one_error_line(capsys, f"--out {out} is {kind}; give a folder")
    assert fifo.exists() and not fifo.is_file() and not pathlib.Path("/dev/null.npz").exists()


def test_ngram_score_and_markov_check_say_a_text_that_is_not_utf8(tmp_path, capsys):
    """A Latin-1 terminal's 'café' reaches Python as 'caf\\udce9': ngram score listed '\\udce9' among the unknown
    tokens and markov check among the symbols it lacks, without the hint that sample, score and complete give."""
    text = tmp_path / "c.txt"
    text.write_text("the cat sat\non the mat\n")
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(model)]) == 0
    hint = "(\\udce9 stands for the byte 0xe9: the text is not UTF-8"
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "caf\udce9"]) == 0
    assert hint in capsys.readouterr().out
    from rnnkit.text.markov import PRESETS  # (markov check prints its reason beside the STRING, as typed)

    assert hint in PRESETS["abe"]().why_not("caf\udce9")
    assert main(["ngram", "score", str(model), "cat"]) == 0 and "stands for" not in capsys.readouterr().out


def test_ngram_score_of_a_word_model_lists_unknown_words_and_says_bytes_that_are_not_utf8(tmp_path, capsys):
    """A word model's score of a text with a word it never saw ended in a traceback, "TypeError: ord() expected a
    character, but string of length 5 found": the hint for bytes that are not UTF-8 read the unknown tokens as
    characters. It lists the words, and says a word's byte that is not UTF-8 ('caf\\udce9'), as a char model does."""
    text = tmp_path / "c.txt"
    text.write_text("the cat sat\nthe dog sat\n")
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(model), "--level", "word", "-n", "2"]) == 0
    capsys.readouterr()
    assert main(["ngram", "score", str(model), "the zebra sat"]) == 0
    out = capsys.readouterr().out
    assert (
        out.endswith("'the zebra sat'  (unknown, scored as <unk>: ['zebra'])\n") and "stands for" not in out
    )
    assert main(["ngram", "score", str(model), "the caf\udce9 sat"]) == 0
    assert (
        "<unk>: ['caf\\udce9']) (\\udce9 stands for the byte 0xe9: the text is not UTF-8"
        in capsys.readouterr().out
    )


def test_output_of_bytes_that_are_not_utf8_names_the_bytes_not_an_encoding(tmp_path, corpus, capsys):
    """Where stdout is strict UTF-8 (PYTHONIOENCODING=utf-8, a program's stream) a Latin-1 terminal's 'caf\\udce9'
    could not be written, and the line said 'set PYTHONIOENCODING=utf-8', the setting it failed under. It says what
    the byte is now: main's error for a text that is the command's data (ngram complete's), and markov check's
    answer, its own report written as say() writes it (escaped), in its reason."""
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(corpus), "--out", str(model), "-n", "2"]) == 0
    capsys.readouterr()
    assert main(["ngram", "complete", str(model), "caf\udce9", "--length", "3"]) == 2
    _one_error_line(
        capsys, "can't write; \\udce9 stands for the byte 0xe9: the text is not UTF-8; set the terminal"
    )
    assert main(["markov", "check", "caf\udce9"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("not allowed: caf\\udce9  (") and "\\udce9 stands for the byte 0xe9" in said, said


def test_a_bad_count_is_worded_one_way_by_every_command(tmp_path, capsys):
    """--length 0 was 'must be > 0' (sample), 'must be >= 1' (ngram, markov) and 'must be a positive integer'
    (hopfield's --max-steps): one wording now, errors.count_error's."""
    missing = str(tmp_path / "none")
    for args, flag in [
        (["sample", missing, "--length", "0"], "--length"),
        (["ngram", "sample", missing, "--length", "0"], "--length"),
        (["markov", "sample", "--length", "0"], "--length"),
        (["hopfield", "recall", "--max-steps", "0", "--out", missing], "--max-steps"),
    ]:
        assert main(args) == 2
        _one_error_line(capsys, f"{flag} must be an integer >= 1, got 0")


def test_markov_checks_its_options_before_reading_the_text(tmp_path, capsys):
    """`markov --text big.txt sample --length 0` (and `check` without a STRING) read and counted the whole file (its
    bar) before refusing; a missing file was said first. Both are checked before any work now."""
    assert main(["markov", "--text", str(tmp_path / "none.txt"), "sample", "--length", "0"]) == 2
    _one_error_line(capsys, "--length must be an integer >= 1, got 0")
    assert main(["markov", "--text", str(tmp_path / "none.txt"), "check"]) == 2
    _one_error_line(capsys, "markov check needs at least one STRING to check")


def test_an_out_whose_written_file_is_a_folder_a_device_or_a_pipe_is_refused(tmp_path, corpus, capsys):
    """`ngram train c.txt --out m` writes m.npz: where m.npz was a folder the command failed once its work was done
    ('Is a directory: m.npz'), and a FIFO m.npz or a link to /dev/null was replaced by the model, where --out m.npz
    itself is refused (so word2vec's and tfidf index's files in their --out folder); through a link to /dev/null the
    device itself was replaced by a regular file (as root). One line before any work now."""
    (tmp_path / "m.npz").mkdir()
    os.mkfifo(tmp_path / "f.npz")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "d.npz").symlink_to(
        tmp_path / "pipe"
    )  # (as a link to /dev/null: the old code replaced the device)
    (tmp_path / "w" / "vectors.txt").mkdir(parents=True)
    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "index.json")
    cases = [
        (["ngram", "train", str(corpus)], "m", "m.npz", "a folder"),
        (["ngram", "train", str(corpus)], "f", "f.npz", "a pipe (FIFO), not a file"),
        (["ngram", "train", str(corpus)], "d", "d.npz", "a pipe (FIFO), not a file"),
        (["word2vec", str(corpus), "--backend", "torch"], "w", "w/vectors.txt", "a folder"),
        (["tfidf", "index", str(corpus)], "t", "t/index.json", "a pipe (FIFO), not a file"),
    ]
    for args, out, written, kind in cases:
        out, written = tmp_path / out, tmp_path / written
        assert main([*args, "--out", str(out)]) == 2
        _one_error_line(
            capsys, f"--out {out}: it writes {written}, which is {kind}; remove it or give another --out"
        )
    assert (
        (tmp_path / "d.npz").is_symlink()
        and not (tmp_path / "pipe").is_file()
        and not (tmp_path / "f.npz").is_file()
    )
    assert not (tmp_path / "t" / "index.json").is_file()


def test_ngram_train_of_a_text_with_no_words_does_not_say_lower_min_freq(tmp_path, capsys):
    """`ngram train unk.txt --level word` of a text of only the word <unk> said 'with --min-freq 1 the model knows
    no word but <unk> (none occurs 1 times in unk.txt); lower --min-freq': it has no word to keep at any --min-freq."""
    (tmp_path / "unk.txt").write_text("<unk> <unk>\n\n<unk>\n")
    args = [
        "ngram",
        "train",
        str(tmp_path / "unk.txt"),
        "--out",
        str(tmp_path / "m.npz"),
        "--level",
        "word",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the counting bar
    assert err.startswith("rnnkit: error: ") and err.endswith(
        "unk.txt holds no word but line ends and <unk>; give a text with words"
    ), err


@pytest.mark.parametrize("command", ["ngram", "tfidf", "word2vec"])
def test_a_summary_naming_an_out_in_another_language_is_escaped_on_an_ascii_stdout(
    tmp_path, monkeypatch, command
):
    """On an ASCII stdout (PYTHONIOENCODING=ascii, a C locale without UTF-8 mode) ngram train, tfidf index and word2vec
    wrote their model to an --out named 'résumé' and then failed at the summary line naming it: 'the output holds
    characters ('\\xe9') ...', exit 2, for a command whose work was done. The name is written escaped, exit 0."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20, encoding="utf-8")
    folder = tmp_path / "résumé"
    argv = {
        "ngram": ["ngram", "train", str(corpus), "--out", str(folder), "-n", "2"],
        "tfidf": ["tfidf", "index", str(corpus), "--out", str(folder)],
        "word2vec": ["word2vec", str(corpus), "--out", str(folder), "--dimension", "4", "--epochs", "1",
                     "--min-count", "1", "--workers", "1"],
    }[command]  # fmt: skip
    assert main(argv) == 0
    assert "r\\xe9sum\\xe9" in out.buffer.getvalue().decode("ascii")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("résumé")]  # (ngram's: résumé.npz)


@pytest.mark.parametrize("encoding", ["cp1251", "koi8-r"])
def test_a_summary_naming_an_out_in_another_language_is_escaped_on_a_code_page_stdout(
    tmp_path, monkeypatch, encoding
):
    """On a stdout of an 8-bit code page without 'é' (cp1251, a Russian Windows' redirected output; koi8-r) the
    escaped line was refused again: the encoder's error names such a codec 'charmap', which is Latin-1 and keeps
    'é', and ngram train exited 2 with its model written. The line is escaped in the stream's own encoding."""
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20, encoding="utf-8")
    assert main(["ngram", "train", str(corpus), "--out", str(tmp_path / "résumé"), "-n", "2"]) == 0
    assert "r\\xe9sum\\xe9" in out.buffer.getvalue().decode(encoding)


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell's >&-")
def test_a_command_without_stdout_writes_any_character_nowhere_in_a_c_locale(tmp_path):
    """With stdout closed (`>&-`) main puts the null device there; opened in the locale's encoding, ASCII under
    LC_ALL=C, markov stationary of a text of 'é' stopped, 'the output holds characters ('\\xe8') that its encoding,
    ANSI_X3.4-1968, can't write', exit 2, where print() to no stdout had written nothing, exit 0."""
    import subprocess

    text = tmp_path / "fr.txt"
    text.write_text("café crème brûlée\n" * 10, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONIOENCODING", "LC_", "LANG"))}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONPATH=str(pathlib.Path(__file__).parents[2]))
    command = f'exec "{sys.executable}" -m rnnkit markov stationary --text "{text}" >&-'
    done = subprocess.run(
        ["sh", "-c", command], env=env, capture_output=False, stderr=subprocess.PIPE, text=True
    )
    assert done.returncode == 0, done.stderr


def test_markov_text_finds_its_line_starts_in_place_not_in_a_list_of_its_lines(tmp_path, capsys, monkeypatch):
    """markov --text takes the first character of each line as the chain's starts: found through text.split("\\n")
    they cost a str of every line, 49 bytes a line on top of the text (495 MB at the peak of a 112 MB text, 371 MB
    now). The starts are as before: each non-empty line's first character."""
    import tracemalloc

    from rnnkit.cli.text import line_starts
    from rnnkit.text import markov

    monkeypatch.setattr(markov, "ESTIMATE_CHUNK", 1 << 10, raising=False)
    text = "ab\n\nba\n" * 50_000  # 350,000 characters, 150,000 lines
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    assert line_starts("ab\n\nba\n\u00e9\n") == ["a", "b", "\u00e9"]
    (tmp_path / "w.txt").write_text("ab\n", encoding="utf-8")
    # (its imports, not measured)
    assert main(["markov", "--text", str(tmp_path / "w.txt"), "stationary"]) == 0
    capsys.readouterr()
    tracemalloc.start()
    try:
        assert main(["markov", "--text", str(tmp_path / "c.txt"), "stationary"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * len(text), f"{peak:,} bytes for a text of {len(text):,} characters"
    chain = markov.MarkovChain.estimate([text], starts=[line[0] for line in text.split("\n") if line])
    assert capsys.readouterr().out == "".join(
        f"{s!r}\t{p:.6f}\n" for s, p in zip(chain.states, chain.stationary())
    )


def test_word2vec_holds_its_words_as_one_str_each_and_lets_go_of_them_once_encoded(tmp_path, capsys):
    """The command split each line into a list of new str, about 60 bytes for each word of the corpus beside the
    list's 8 (110 MB of PTB's train file twice over, 1.8M words), and held them and the text to the end of the
    training, beside the pairs: each word is one shared str now, and fit lets go of the lists once it has the ids.
    The vectors are those of Word2Vec.fit on the lines split."""
    import tracemalloc

    from rnnkit.text import Word2Vec, WordVectors

    rng = np.random.default_rng(0)
    lines = [" ".join(f"word{i}" for i in rng.integers(0, 400, rng.integers(1, 30))) for _ in range(4_000)]
    text = "\n".join(lines) + "\n"
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    (tmp_path / "w.txt").write_text("\n".join(lines[:100]), encoding="utf-8")
    flags = ["--epochs", "1", "--dimension", "4", "--min-count", "1", "--backend", "torch", "--seed", "3"]
    assert main(["word2vec", str(tmp_path / "w.txt"), "--out", str(tmp_path / "w"), *flags]) == 0  # (imports)
    tracemalloc.start()
    try:
        assert main(["word2vec", str(tmp_path / "c.txt"), "--out", str(tmp_path / "out"), *flags]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    words = len(text.split())
    assert peak < 70 * words, f"{peak:,} bytes for {words:,} words"  # (its pairs about 25 of them)
    want = Word2Vec(epochs=1, dimension=4, min_count=1, backend="torch", seed=3).fit(
        [line.split() for line in text.split("\n")]
    )
    got = WordVectors.load(tmp_path / "out" / "vectors.bin")
    assert got.words == want.wv.words and np.array_equal(got.vectors, want.wv.vectors)


def _printed_in(monkeypatch, encoding, *commands):
    """What the commands (each an argv, each exit 0) print on a stdout in `encoding`, decoded."""
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding=encoding))
    for argv in commands:
        assert main([str(a) for a in argv]) == 0
    sys.stdout.flush()
    return out.getvalue().decode(encoding)


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_ngram_scores_on_an_output_without_their_characters_are_written_in_escapes(
    tmp_path, monkeypatch, encoding
):
    """ngram score (--json too) of a Chinese text and ngram eval of a file named in Chinese scored it, then stopped on
    an ASCII or cp1252 output, 'the output holds characters ('\\u4e2d\\u6587') ...', exit 2, with no score, as rnnkit
    score and eval did before f1269fe. Their lines are written as rnnkit score's: JSON's escapes (read back as the same
    text), repr's for the quoted text, say()'s for the file's name. ngram sample's text itself is still refused."""
    text = tmp_path / "中文.txt"
    text.write_text("中文 café 世界 🙂\n" * 30, encoding="utf-8")
    model = tmp_path / "m.npz"
    assert main(["ngram", "train", str(text), "--out", str(model), "-n", "3"]) == 0

    def stdout_of(*args):
        return _printed_in(monkeypatch, encoding, args)

    rows = [
        json.loads(line)
        for line in stdout_of("ngram", "score", model, "中文 🙂", "café", "--json").splitlines()
    ]
    assert {r["text"] for r in rows} == {"中文 🙂", "café"}
    assert "'\\u4e2d\\u6587 \\U0001f642'" in stdout_of("ngram", "score", model, "中文 🙂", "café")
    assert stdout_of("ngram", "eval", model, text).startswith(f"{str(text)[:-6]}\\u4e2d\\u6587.txt: ")
    assert json.loads(stdout_of("ngram", "eval", model, text, "--json"))["file"] == str(text)


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_tfidf_search_results_on_an_output_without_their_characters_are_written_in_escapes(
    tmp_path, monkeypatch, encoding
):
    """tfidf search of documents named or written in Chinese found them, then stopped on an ASCII or cp1252 output at
    the first result, 'the output holds characters ('\\u6587\\u6863') ...', exit 2. Its result lines are its own
    report, written as say() writes them: the characters the output lacks escaped."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "文档.txt").write_text("中文 世界 café\n", encoding="utf-8")
    (docs / "b.txt").write_text("hello world\n", encoding="utf-8")
    assert main(["tfidf", "index", str(docs), "--out", str(tmp_path / "index")]) == 0
    lines = _printed_in(
        monkeypatch, encoding, ["tfidf", "search", tmp_path / "index", "café world"]
    ).splitlines()
    assert len(lines) == 2 and "\\u6587\\u6863.txt  \\u4e2d\\u6587 \\u4e16\\u754c caf" in lines[1]


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_neighbours_on_an_output_without_their_characters_are_written_in_escapes(
    tmp_path, monkeypatch, encoding
):
    """neighbours of a word of vectors of Chinese and accented words found them, then stopped on an ASCII or
    cp1252 output at the first word it lacks, 'the output holds characters ('\\u4e2d\\u6587') ...', exit 2 (the
    analogy's head line, 'café - ...', on ASCII before any result). Its lines are its own report, written as say()
    writes them: the characters the output lacks escaped."""
    vectors = tmp_path / "v.txt"
    vectors.write_text("4 2\n中文 1 0\ncafé 0.9 0.1\nthé 0 1\n世界 1 1\n", encoding="utf-8")
    printed = _printed_in(
        monkeypatch, encoding, ["neighbours", vectors, "中文", "--topn", "1"],
        ["neighbours", vectors, "中文", "thé", "café", "--analogy", "--topn", "1"],
    )  # fmt: skip
    e = "\\xe9" if encoding == "ascii" else "é"
    assert printed.splitlines() == [
        "\\u4e2d\\u6587:",
        f"  0.9939  caf{e}",
        f"\\u4e2d\\u6587 - th{e} + caf{e}:",
        "  0.3577  \\u4e16\\u754c",
    ]


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_markov_check_and_stationary_on_an_output_without_their_characters_are_written_in_escapes(
    tmp_path, monkeypatch, encoding
):
    """markov check of a string of Chinese and markov stationary of a text of Chinese and emoji worked out their
    answer, then stopped on an ASCII or cp1252 output at the first line holding a character it lacks ('the output
    holds characters ('\\u4e2d\\u6587') ...', exit 2), stationary with half its table written. Their lines are their
    own report, written as say() writes them; markov sample's text itself is still refused."""
    text = tmp_path / "t.txt"
    text.write_text("中文é🙂\n" * 5, encoding="utf-8")
    printed = _printed_in(
        monkeypatch,
        encoding,
        ["markov", "--text", text, "check", "中文", "文中"],
        ["markov", "--text", text, "stationary"],
    )
    e = "\\xe9" if encoding == "ascii" else "é"
    lines = printed.splitlines()
    assert lines[:2] == ["allowed: \\u4e2d\\u6587", f"not allowed: \\u6587\\u4e2d  (no line of {text} starts with "
                         "'\\u6587'; the first symbol can be \\u4e2d)"]  # fmt: skip
    assert [line.split("\t")[0] for line in lines[2:]] == [
        "'\\n'",
        f"'{e}'",
        "'\\u4e2d'",
        "'\\u6587'",
        "'\\U0001f642'",
    ]


@pytest.mark.parametrize(
    "command, unit",
    [
        (["ngram", "sample", "{model}", "--length", "30", "--seed", "2"], "chars"),
        (["ngram", "complete", "{model}", "a", "--length", "30"], "chars"),
        (["ngram", "sample", "{words}", "--length", "30", "--seed", "2"], "words"),
        (["markov", "sample", "--length", "30", "--seed", "2"], "symbols"),
    ],
)
def test_ngram_and_markov_samples_show_a_bar_where_their_text_goes_elsewhere_than_a_terminal(
    tmp_path, capsys, monkeypatch, command, unit
):
    """`ngram sample MODEL --length 100000000 > out.txt` (and ngram complete, markov sample) ran for hours with nothing
    on screen: each has rnnkit sample's bar on stderr where stdout is no terminal (on one the text is its own
    progress), after PROGRESS_DELAY seconds, and writes the same text with it."""
    import rnnkit.cli

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the log\n" * 5)
    paths = {"model": tmp_path / "m.npz", "words": tmp_path / "w.npz"}
    assert main(["ngram", "train", str(corpus), "--out", str(paths["model"]), "-n", "3"]) == 0
    assert main(["ngram", "train", str(corpus), "--out", str(paths["words"]), "--level", "word"]) == 0
    command = [a.format(**{k: str(v) for k, v in paths.items()}) for a in command]
    capsys.readouterr()
    assert main(command) == 0
    text, err = capsys.readouterr()
    assert err == ""  # a short one says nothing
    monkeypatch.setattr(rnnkit.cli, "PROGRESS_DELAY", 0.0)
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert out == text
    last = err.splitlines()[-1]
    assert last.startswith(f"{command[0]} {command[1]}: 100%") and "30.0/30.0" in last and f"{unit}/s" in last
