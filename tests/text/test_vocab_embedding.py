import re

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


def test_word_vocabulary_refuses_a_str_but_a_character_vocabulary_takes_one():
    words = Vocabulary.build("the cat sat on the mat".split())
    assert words.encode(["the", "cat"]) == [1, 2]
    with pytest.raises(
        RnnkitError, match=r"list of tokens, not a str: split the text first \(text\.split\(\)\)"
    ):
        words.encode("the cat")  # once every character, each <unk>
    chars = Vocabulary.build("hello world")
    assert chars.encode("hello") == chars.encode(list("hello"))
    with pytest.raises(RnnkitError, match="Vocabulary.build"):
        Vocabulary(["a", "b"])


@pytest.mark.parametrize("ids", [[-1], [6], [1, 99], [1.0], [True], np.array([False, True])])
def test_decode_refuses_ids_outside_the_vocabulary(ids):
    # a bool (a mask, ids == 3, given for the ids) decoded as ids 0 and 1 in silence
    vocab = Vocabulary.build("the cat sat on the mat".split())  # 6 ids with <unk>
    with pytest.raises(RnnkitError, match=r"not token ids of this vocabulary: .*0\.\.5"):
        vocab.decode(ids)  # -1 once decoded silently to the last token
    assert vocab.decode(np.array([1, 2])) == vocab.decode(torch.tensor([1, 2])) == ["the", "cat"]


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


def test_embedding_backward_adds_each_positions_gradient_into_its_ids_row():
    """x_t = W e_{id_t}, so dL/dW = Σ_t g_t e_{id_t}^T: each row of the weight gets the gradients of the positions
    holding its id, added up (id 1, three times here), and the rows of ids not used get none; checked against the
    one-hot product. Its weight starts as torch.nn.Embedding's, N(0, 1)."""
    torch.manual_seed(0)
    emb, ids = Embedding(6, 3), torch.tensor([[1, 4, 1], [0, 1, 5]])
    g = torch.randn(2, 3, 3)
    (emb(ids) * g).sum().backward()
    want = one_hot(ids, 6).reshape(-1, 6).T @ g.reshape(-1, 3)  # (V, E): Σ_t e_{id_t} g_t^T, as rows
    torch.testing.assert_close(emb.weight.grad, want)
    assert not emb.weight.grad[[2, 3]].any()
    w = Embedding(1000, 100).weight.detach()
    assert abs(float(w.mean())) < 0.01 and abs(float(w.std()) - 1) < 0.01


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_ids_of_any_integer_dtype_select_their_rows(dtype):
    """uint8 ids (bytes, a character vocabulary) indexed the weight as a boolean mask: the rows of the non-zero ids'
    positions came back (ids 1 2 3 4 0 gave rows 0 1 2 3), or a mask-shape IndexError; int8 and int16 were torch's
    IndexError, and one_hot failed in scatter for all three."""
    torch.manual_seed(0)
    emb, ids = Embedding(5, 3), torch.tensor([[1, 2, 3, 4, 0], [4, 4, 0, 1, 2]])
    assert torch.equal(emb(ids.to(dtype)), emb.weight[ids])
    assert torch.equal(emb(ids[0].to(dtype)), emb.weight[ids[0]])
    assert torch.equal(one_hot(ids.to(dtype), 5), one_hot(ids, 5))


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64])
def test_ids_of_wide_unsigned_dtypes_are_checked_and_select_their_rows(dtype):
    """uint16, uint32 and uint64 ids (np.fromfile of a token file, an array of ids from numpy) failed in the range check
    with torch's NotImplementedError '"min_all" not implemented for 'UInt32'', in one_hot and Embedding alike."""
    torch.manual_seed(0)
    emb, ids = Embedding(5, 3), np.array([[1, 2, 3, 4, 0], [4, 4, 0, 1, 2]])
    assert torch.equal(emb(ids.astype(dtype)), emb.weight[ids])
    assert torch.equal(one_hot(ids.astype(dtype), 5), one_hot(ids, 5))
    for bad in (5, np.iinfo(dtype).max):  # (uint64's largest is -1 as an int64: refused, not row 4)
        with pytest.raises(RnnkitError, match=r"0\.\.4"):
            emb(np.array([1, bad], dtype=dtype))
        with pytest.raises(RnnkitError, match=r"0\.\.4"):
            one_hot(np.array([1, bad], dtype=dtype), 5)


@pytest.mark.parametrize(
    "ids, message",
    [([-1], r"0\.\.3"), ([4], r"0\.\.3"), ([1.0, 2.7], "integer tensor")],
)
def test_one_hot_and_embedding_refuse_bad_ids(ids, message):
    ids = torch.tensor(ids)
    with pytest.raises(RnnkitError, match=message):
        one_hot(ids, 4)
    with pytest.raises(RnnkitError, match=message):
        Embedding(4, 2)(ids)  # id -1 once gave row 3
    assert torch.equal(one_hot([1, 2], 4), one_hot(torch.tensor([1, 2]), 4))  # a list is fine


def test_an_empty_list_of_ids_is_no_ids():
    """one_hot([], V) and Embedding(V, E)([]) (an empty sentence's ids) were refused as 'ids must be an integer tensor
    (torch.long), got torch.float32': torch (and numpy) make an empty list floats."""
    emb = Embedding(4, 2)
    assert one_hot([], 4).shape == (0, 4) and one_hot(np.array([]), 4).shape == (0, 4)
    assert emb([]).shape == (0, 2) and emb([[], []]).shape == (2, 0, 2)
    with pytest.raises(RnnkitError, match="integer tensor"):
        emb(torch.tensor([]))  # a float tensor is still refused, empty or not


@pytest.mark.parametrize("size", [2.0, 2.5, -1, True, "4", None])
def test_a_vocabulary_or_embedding_size_that_is_no_whole_number_is_one_line(size):
    """Embedding(4.0, 2) failed inside torch ('empty(): argument 'size' failed to unpack ...'), Embedding(True, 2) with
    'empty() takes 1 positional argument but 2 were given', Embedding(4, -2) 'negative dimension'; one_hot(ids, 2.5)
    in torch.zeros, one_hot(ids, '4') in a comparison, and one_hot([0], True) ran as V = 1."""
    with pytest.raises(RnnkitError, match="V \\(the vocabulary size\\) must be an integer >= 0, got"):
        one_hot([0], size)
    with pytest.raises(RnnkitError, match="V \\(the vocabulary size\\) must be an integer >= 0, got"):
        Embedding(size, 2)
    with pytest.raises(RnnkitError, match="E \\(the embedding size\\) must be an integer >= 0, got"):
        Embedding(4, size)
    assert one_hot([1], np.int64(3)).shape == (1, 3) and one_hot([1], torch.tensor(3)).shape == (1, 3)
    assert Embedding(np.int64(4), torch.tensor(2)).weight.shape == (4, 2)


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


def test_one_hot_follows_torchs_default_dtype_and_embedding_takes_lists():
    """one_hot was float32 under a float64 default (a float64 model then refused it, as Embedding's output
    was float64); Embedding took tensors only (a list of ids: AttributeError)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert one_hot([0, 2], 4).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)
    assert (
        one_hot([0, 2], 4).dtype == torch.float32
        and one_hot([1], 3, dtype=torch.float16).dtype == torch.float16
    )
    emb = Embedding(4, 2)
    torch.testing.assert_close(emb([1, 3]), emb(torch.tensor([1, 3])))
    torch.testing.assert_close(emb(np.array([1, 3])), emb.weight[[1, 3]])


def test_vocabulary_max_size_below_one_is_refused():
    """max_size=0 (or -1) came back as a vocabulary of one id, <unk>: more ids than asked for."""
    for max_size in (0, -1, 2.5):
        with pytest.raises(
            RnnkitError, match=r"max_size .* must be an integer >= 1 \(or None for no limit\), got"
        ):
            Vocabulary.build("a a b".split(), max_size=max_size)
    assert Vocabulary.build("a a b".split(), max_size=1).itos == ["<unk>"]
    assert Vocabulary.build("a a b".split(), max_size=1, unk=False).itos == ["a"]


def test_document_word_matrix_refuses_ids_that_are_not_word_ids():
    """0.5 was counted as word 0 (fromiter truncates); -1 and V were scipy index errors."""
    for docs in ([[0.5, 1]], [[-1, 2]], [[3]]):
        with pytest.raises(RnnkitError, match="word ids must be whole numbers in 0..2"):
            document_word_matrix(docs, 3)
    assert document_word_matrix([[], [np.int32(2), 2]], 3).toarray().tolist() == [[0, 0, 0], [0, 0, 2]]


def test_saved_vocabularies_and_word_pairs_read_as_utf8_whatever_the_locale(tmp_path):
    """save wrote UTF-8 but load read the locale's encoding: cp1252 or Latin-1 turned 'café' into 'cafÃ©'
    (every such word then <unk>), ASCII refused the file it had just written."""
    import os
    import pathlib
    import subprocess
    import sys

    import rnnkit

    Vocabulary.build(["café", "naïve", "café"]).save(tmp_path / "v.json")
    (tmp_path / "pairs.txt").write_text("café\tnaïve\t5\ncafé\tthé\t7\n", encoding="utf-8")
    code = (
        "import sys, numpy as np; from rnnkit.text import Vocabulary, WordVectors\n"
        "assert Vocabulary.load(sys.argv[1]).itos == ['<unk>', 'caf\\xe9', 'na\\xefve']\n"
        "wv = WordVectors(['caf\\xe9', 'na\\xefve', 'th\\xe9'], np.eye(3) + 0.5)\n"
        "assert wv.evaluate_similarity(sys.argv[2])[1] == 2\n"
    )
    root = str(pathlib.Path(rnnkit.__file__).parents[1])
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.json"), str(tmp_path / "pairs.txt")],
                          env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")  # fmt: skip
    assert done.returncode == 0, done.stderr[-500:]


def test_a_vocabulary_of_counts_from_numpy_saves_and_loads(tmp_path):
    """Counts from np.unique (a dict of numpy int64) failed twice: a plain dict has no most_common (an
    AttributeError, though a Mapping is what the constructor asks for), and numpy's int64 is no JSON number (save
    raised TypeError: Object of type int64 is not JSON serializable)."""
    import numpy as np

    tokens, counts = np.unique(np.array("a b a c a b".split()), return_counts=True)
    vocab = Vocabulary(dict(zip(tokens, counts)))
    assert vocab.itos == ["<unk>", "a", "b", "c"] and vocab.counts == [0, 3, 2, 1]
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == vocab.itos and again.counts == vocab.counts


def test_a_vocabulary_file_an_editor_saved_with_a_byte_order_mark_loads(tmp_path):
    """A vocabulary edited and saved by an editor that writes a UTF-8 byte-order mark (Windows' Notepad before 2019)
    was refused: 'cannot read vocabulary ...: Unexpected UTF-8 BOM (decode using utf-8-sig)'. The mark is dropped,
    as the corpora's and every other text file's is."""
    vocab = Vocabulary.build(["café", "😀", "café"])
    vocab.save(tmp_path / "v.json")
    (tmp_path / "v.json").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "v.json").read_bytes())
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == vocab.itos == ["<unk>", "café", "😀"] and again.counts == vocab.counts


@pytest.mark.parametrize(
    "damage, said",
    [
        ({"itos": "abc"}, r"its itos must be a list of tokens \(str\), got 'abc'"),
        ({"itos": ["<unk>", "a", "a"]}, "the token 'a' is in it twice"),
        ({"counts": [1, 2]}, "its counts must be a list of 3 numbers, one per token"),
        ({"unk": "yes"}, "its unk must be true"),
        ({"itos": ["a", "<unk>", "b"]}, r"its unk must be true \(with '<unk>' as token 0\)"),
    ],
)
def test_a_damaged_vocabulary_file_is_one_line_naming_the_file(tmp_path, damage, said):
    """A str as itos loaded as one token per character, a repeated token kept the last id (encode and decode
    disagreed), an unk that was no bool was read as True: all without a word."""
    import json

    good = Vocabulary.build("a b b".split()).to_dict()
    (tmp_path / "v.json").write_text(json.dumps({**good, **damage}))
    with pytest.raises(RnnkitError, match=f"^cannot read vocabulary {tmp_path / 'v.json'}: {said}"):
        Vocabulary.load(tmp_path / "v.json")


@pytest.mark.parametrize("unk", [-1, 2, 1.5, "False", None, float("inf"), 2**40])
def test_vocabulary_unk_that_is_no_switch_is_refused(unk):
    """unk=-1 or 2 built counts misaligned with the ids (a token's count overwritten by <unk>'s), 2**40 a
    MemoryError, "False" (a config file's string) a vocabulary with <unk>."""
    with pytest.raises(RnnkitError, match="unk must be True or False"):
        Vocabulary.build("a a b".split(), unk=unk)
    assert Vocabulary.build("a a b".split(), unk=np.bool_(False)).itos == ["a", "b"]
    assert Vocabulary.build("a a b".split(), unk=0).counts == [2, 1]


@pytest.mark.parametrize("min_freq", [float("nan"), float("inf"), "2", None, True])
def test_vocabulary_min_freq_that_is_no_number_is_refused(min_freq):
    """nan (or inf) kept no token, a vocabulary of <unk> alone, in silence; "2" failed with "'<' not supported"."""
    with pytest.raises(RnnkitError, match="min_freq must be a number >= 1"):
        Vocabulary.build("a a b".split(), min_freq=min_freq)
    assert Vocabulary.build("a a b".split(), min_freq=np.int64(2)).itos == ["<unk>", "a"]


@pytest.mark.parametrize("k", [1.5, "2", True])
def test_svd_k_that_is_no_whole_number_is_refused_in_one_line(k):
    """k=1.5 failed in scikit-learn ("The 'n_components' parameter of TruncatedSVD must be an int", not the k given
    here), k='2' with "'<=' not supported", and k=True factorised with one dimension in silence."""
    D = document_word_matrix([[0, 1], [1, 2], [2, 0], [0, 0]], 3)
    with pytest.raises(
        RnnkitError, match=r"^k must be an integer in 1\.\.3 for a 4 x 3 document-word matrix"
    ):
        svd_embeddings(D, k)
    assert svd_embeddings(D, np.int64(2))[0].shape == (4, 2)


@pytest.mark.parametrize("n, d", [(6, 4), (4, 6), (5, 5)])
def test_svd_k_of_the_matrixs_rank_factorises_it_exactly_and_past_it_is_refused(n, d):
    """k = min(n, d) is the whole factorisation (U V = D to rounding), which the randomized solver gives; it was
    refused (k in 1..min(n, d) - 1). k past n gave n columns, not k, in silence: refused."""
    docs = [list(np.random.default_rng(i).integers(0, d, 8)) for i in range(n)]
    D = document_word_matrix(docs, d)
    U, V = svd_embeddings(D, min(n, d))
    assert U.shape == (n, min(n, d)) and V.shape == (min(n, d), d)
    np.testing.assert_allclose(U @ V, D.toarray(), atol=1e-12)
    with pytest.raises(RnnkitError, match=rf"^k must be an integer in 1\.\.{min(n, d)} for a {n} x {d} "):
        svd_embeddings(D, min(n, d) + 1)


@pytest.mark.parametrize("tokens", [[1, 2, 2], [("a", "b"), ("a", "b")], ["a", None]])
def test_save_refuses_a_vocabulary_that_load_would_refuse(tmp_path, tokens):
    """A vocabulary of tokens other than str (ids, tuples, a None) saved without a word into a file that load then
    refused: 'its itos must be a list of tokens (str) ...; save one with Vocabulary.save', which was how it was made."""
    with pytest.raises(RnnkitError, match=r"cannot save a vocabulary of tokens other than str \(such as "):
        Vocabulary.build(tokens).save(tmp_path / "v.json")
    assert not (tmp_path / "v.json").exists()


def test_a_token_with_a_lone_surrogate_saves_and_loads(tmp_path):
    """a token of bytes read with errors='surrogateescape' ('\\udce9'): save failed in UTF-8's encoder with a
    traceback (surrogates not allowed); JSON's \\udce9 escape keeps it, and load gives the same vocabulary."""
    v = Vocabulary.build(["caf\udce9", "a", "a", "é"])
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").itos == v.itos


def test_a_token_with_a_surrogate_pair_is_refused_by_save(tmp_path):
    """'\\ud83d\\ude00', two code points (text decoded with errors='surrogatepass'), written as JSON's escapes, loaded
    as the one character '😀': another token, in silence (or a vocabulary load refused, where both were in it)."""
    with pytest.raises(
        RnnkitError, match=r"cannot save the token '\\ud83d\\ude00': JSON reads its surrogate pair"
    ):
        Vocabulary.build(["\ud83d\ude00", "a"]).save(tmp_path / "v.json")
    assert not (tmp_path / "v.json").exists()


def test_decode_of_one_id_alone_is_a_list_of_one():
    """decode(torch.tensor(1)) or of a numpy scalar failed with a bare TypeError ("'int' object is not iterable")."""
    v = Vocabulary.build("a b".split())
    for one in (torch.tensor(1), np.int64(1), 1):
        assert v.decode(one) == ["a"]
    with pytest.raises(RnnkitError, match="not token ids of this vocabulary"):
        v.decode(torch.tensor(7))


def test_character_tokens_are_lower_cased_with_lower():
    """tokenize(text, "char", lower=True) left the characters as they were ('T', 'B'): lower had no effect at the
    character level, in silence, where the word level lower-cases (and an n-gram char model's --lower does)."""
    assert tokenize("To Be", "char", lower=True) == ["t", "o", " ", "b", "e"]
    assert tokenize("To Be", "char") == ["T", "o", " ", "B", "e"]
    assert tokenize("To Be", "word", lower=True) == ["to", "be"]


@pytest.mark.parametrize("count", ["3", float("nan"), -2, float("inf"), None])
def test_counts_that_are_no_counts_are_refused(count):
    """A count that is no number failed inside Counter.most_common ("'<' not supported between instances of 'str'
    and 'int'"); NaN or a negative count built a vocabulary whose <unk> counted nan or -2 occurrences in silence."""
    with pytest.raises(
        RnnkitError, match=rf"counts must be numbers >= 0 .*got {re.escape(repr(count))} for 'b'"
    ):
        Vocabulary({"a": 3, "b": count})
    assert Vocabulary({"a": np.int64(3), "b": 0, "c": 2.5}).counts == [0.0, 3, 2.5]


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_one_hot_is_made_on_its_ids_device_as_torchs_is(device):
    ids = torch.tensor([[0, 3], [2, 1]], device=device)
    with torch.device("meta"):  # another default device: F.one_hot's result stays beside its ids
        x = one_hot(ids, 4)
    assert x.device == ids.device and torch.equal(x, torch.nn.functional.one_hot(ids, 4).float())
    assert torch.equal(one_hot(ids, 4), torch.nn.functional.one_hot(ids, 4).float())


def test_a_vocabulary_of_float32_counts_saves_and_loads(tmp_path):
    """Counts as numpy float32 (weighted counts, a column of a float32 table) were kept as they came, and save raised
    "TypeError: Object of type float32 is not JSON serializable" (numpy's int64 counts were made ints already)."""
    import numpy as np

    vocab = Vocabulary({"a": np.float32(3.5), "b": np.float32(2), "c": 1})
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == ["<unk>", "a", "b", "c"] and again.counts == vocab.counts == [0.0, 3.5, 2.0, 1]


@pytest.mark.parametrize("seed", [-1, "a", True, 2**32])
def test_svd_seed_that_is_no_seed_is_refused_naming_it(seed):
    """seed=-1 or 'a' failed in scikit-learn naming its own parameter ("The 'random_state' parameter of TruncatedSVD
    must be an int in the range [0, 4294967295] ..."), and seed=True ran as seed 1 in silence."""
    D = document_word_matrix([[0, 1], [1, 2], [2, 0], [0, 0]], 3)
    with pytest.raises(RnnkitError, match=r"^seed must"):
        svd_embeddings(D, 2, seed=seed)
    assert np.array_equal(svd_embeddings(D, 2, seed=np.int64(1))[0], svd_embeddings(D, 2, seed=1)[0])


@pytest.mark.parametrize("big", [2**63, np.uint64(2**63), 10**400])
def test_sizes_past_a_64_bit_integer_are_refused_in_one_line(big):
    """Embedding's V or E and one_hot's V of 2**63 or more failed in torch ("Overflow when unpacking long long")."""
    for call, name in [(lambda: Embedding(big, 3), "V"), (lambda: Embedding(3, big), "E"),
                       (lambda: one_hot(torch.tensor([0]), big), "V")]:  # fmt: skip
        with pytest.raises(
            RnnkitError, match=rf"{name} \(the .* is too large \(past a 64-bit integer, 2\^63\)"
        ):
            call()


def test_unknown_lists_each_unknown_token_once_in_order():
    vocab = Vocabulary.build("a b".split())
    assert vocab.unknown(["x", "a", "y", "x", "<unk>", "y"]) == ["x", "y"]
