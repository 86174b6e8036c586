"""Smoke tests of every text subcommand, in-process through the dispatcher on tiny files."""

import pytest

from rnnkit.cli import main

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
    assert capsys.readouterr().out.splitlines()[-2:] == ["allowed: AABEA", "not allowed: ABBA"]
    assert main(["markov", "stationary"]) == 0
    assert main(["markov", "check"]) == 2


def _one_error_line(capsys, message):
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and message in err and err.count("\n") == 1, err


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
    assert main(["ngram", "train", str(tiny), "--out", str(model), "--discount", "3"]) == 2
    _one_error_line(capsys, "discount must be between 0 and 1")
    bare = tmp_path / "bare"  # numpy adds .npz: the command says so, and score finds it by either name
    assert main(["ngram", "train", str(tiny), "--out", str(bare)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("bare.npz")
    assert main(["ngram", "score", str(bare), "ab"]) == 0


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, corpus, capsys):
    for command in (["word2vec", str(corpus), "--dry-run"], ["tfidf", "index", str(corpus)]):
        assert main([*command, "--out", str(corpus)]) == 2
        _one_error_line(capsys, "is a file; give a folder")  # the only line: no progress bar, no training


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--negative", "-1"], "negative (noise words per pair) must be >= 0"),
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
    _one_error_line(capsys, "malformed word2vec file")


def test_tfidf_search_without_documents_json(tmp_path, corpus, capsys):
    index = tmp_path / "idx"
    assert main(["tfidf", "index", str(corpus), "--out", str(index)]) == 0
    (index / "documents.json").unlink()
    capsys.readouterr()
    assert main(["tfidf", "search", str(index), "cat"]) == 2
    _one_error_line(capsys, "documents.json")
