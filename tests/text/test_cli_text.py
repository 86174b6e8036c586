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
