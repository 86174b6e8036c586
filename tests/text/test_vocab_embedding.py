import numpy as np
import pytest
import torch

from rnnkit.errors import RnnkitError
from rnnkit.text import Embedding, Vocabulary, document_word_matrix, one_hot, svd_embeddings, tokenize


def test_tokenisers():
    assert tokenize("To be", "char") == ["T", "o", " ", "b", "e"]
    assert tokenize("To be, or not.", "word", lower=True, punctuation=True) == [
        "to",
        "be",
        ",",
        "or",
        "not",
        ".",
    ]
    assert tokenize("To be, or", "word") == ["To", "be,", "or"]
    with pytest.raises(RnnkitError):
        tokenize("x", "sentence")


def test_vocabulary_unk_min_freq_max_size_and_json(tmp_path):
    vocab = Vocabulary.build("a a a b b c d".split(), min_freq=2)
    assert vocab.itos == ["<unk>", "a", "b"]
    assert vocab.encode(["a", "c", "zzz"]) == [1, 0, 0]
    assert vocab.counts == [2, 3, 2]  # <unk> stands for c and d
    assert len(Vocabulary.build("a a a b b c".split(), max_size=2)) == 2
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == vocab.itos and again.decode([1, 2]) == ["a", "b"]
    strict = Vocabulary.build("a b".split(), unk=False)
    with pytest.raises(RnnkitError, match="zzz"):
        strict.encode(["a", "zzz"])


def test_one_hot_times_W_selects_a_column_equal_to_the_embedding_lookup():
    torch.manual_seed(0)
    V, E = 7, 3
    emb = Embedding(V, E)
    ids = torch.tensor([[0, 3, 6], [2, 2, 5]])  # (B, T)
    W = emb.weight.T  # deck 002's W is E x V
    x = one_hot(ids, V)  # (B, T, V)
    assert torch.equal(x.sum(-1), torch.ones(2, 3))
    assert torch.allclose(x @ W.T, emb(ids))  # W e_j = column j of W
    assert torch.equal((W @ one_hot(torch.tensor(4), V)), W[:, 4])


def test_svd_factorises_the_document_word_matrix():
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(0, 5, 20)) for _ in range(6)] + [
        list(rng.integers(5, 10, 20)) for _ in range(6)
    ]
    D = document_word_matrix(docs, 10)
    assert D.shape == (12, 10) and D.sum() == 240
    U, Vt = svd_embeddings(D, k=2)
    assert U.shape == (12, 2) and Vt.shape == (2, 10)
    exact = np.linalg.svd(D.toarray(), compute_uv=False)
    err = np.linalg.norm(D.toarray() - U @ Vt)
    assert err == pytest.approx(np.sqrt(np.sum(exact[2:] ** 2)), rel=1e-3)  # the best rank-2 error
    # the two topics separate: documents of the same topic have closer embeddings
    cos = (U / np.linalg.norm(U, axis=1, keepdims=True)) @ (U / np.linalg.norm(U, axis=1, keepdims=True)).T
    assert cos[:6, :6].mean() > cos[:6, 6:].mean() + 0.3
    with pytest.raises(RnnkitError):
        svd_embeddings(D, k=50)
