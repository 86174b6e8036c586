import errno
import hashlib
import os
import socket
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit._io import UMASK
from rnnkit.data import corpus as corpus_mod
from rnnkit.data.bptt import StreamBatches, eval_streams, split
from rnnkit.data.corpus import encode, load_corpus, load_file, token_dtype
from rnnkit.errors import RnnkitError


def test_load_file_round_trips_any_language(tmp_path):
    text = "Grüße, 世界! Ça va?\nπ ≈ 3.14159\n" * 3
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    c = load_file(path)
    assert c.chars == sorted(set(text))
    assert c.tokens.dtype == np.uint8
    assert "".join(c.chars[i] for i in c.tokens) == text


def test_a_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello\r\nworld\r\n".encode())  # as Windows' Notepad saves
    c = load_file(path)
    assert "".join(c.chars[i] for i in c.tokens) == "hello\r\nworld\r\n"


def test_chunked_reading_and_memmap(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 5)  # characters split across chunks
    text = "añb€c😀d" * 20
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    c = load_file(path, memmap_path=tmp_path / "tokens.npy")
    assert isinstance(c.tokens, np.memmap)
    assert "".join(c.chars[i] for i in c.tokens) == text
    c = load_file(
        path, memmap_path=str(tmp_path / "tokens2.npy")
    )  # a str, as open() takes: an AttributeError
    assert isinstance(c.tokens, np.memmap) and "".join(c.chars[i] for i in c.tokens) == text


def test_a_memmap_path_given_is_kept_whatever_its_name(tmp_path):
    """load_file told its own temporary token file by its name, rnnkit-tokens-...: a memmap_path the caller gave
    under that name was deleted as one."""
    path = tmp_path / "u.txt"
    path.write_text("hello world\n")
    given = tmp_path / "rnnkit-tokens-mine.npy"
    c = load_file(path, memmap_path=given)
    assert given.exists() and np.array_equal(np.load(given), c.tokens)


def test_a_memmap_path_given_again_leaves_the_corpus_that_maps_it_as_it_was(tmp_path):
    """load_file wrote the tokens into memmap_path in place: given again (a second corpus, a cell run again), it
    truncated the file an earlier Corpus still mapped, whose tokens became the new corpus's in silence ('abab...'
    read 'baba...'), or, of a shorter text, a Bus error at its first read past the new file's end. The tokens are
    written to a file of their own that replaces memmap_path once whole."""
    (tmp_path / "a.txt").write_text("ab" * 500)
    (tmp_path / "c.txt").write_text("dc" * 500)
    given = tmp_path / "tokens.npy"
    a = load_file(tmp_path / "a.txt", memmap_path=given)
    c = load_file(tmp_path / "c.txt", memmap_path=given)
    assert "".join(a.chars[i] for i in a.tokens) == "ab" * 500  # (read 'ba' * 500 in silence)
    assert "".join(c.chars[i] for i in c.tokens) == "dc" * 500
    (tmp_path / "short.txt").write_text("xy")
    short = load_file(tmp_path / "short.txt", memmap_path=given)
    assert "".join(a.chars[i] for i in a.tokens[-4:]) == "abab"  # (a Bus error)
    assert np.array_equal(np.load(given), short.tokens) and sorted(os.listdir(tmp_path)) == [
        "a.txt", "c.txt", "short.txt", "tokens.npy"]  # fmt: skip
    assert oct(os.stat(given).st_mode & 0o777) == oct(0o666 & ~UMASK)
    assert short.tokens.filename == str(given)  # (named the temporary file, gone)
    with pytest.raises(IsADirectoryError, match=f"Is a directory: '{tmp_path}'$"):
        load_file(tmp_path / "a.txt", memmap_path=tmp_path)


def test_a_memmap_path_that_is_the_text_itself_is_refused(tmp_path):
    """load_file(path, memmap_path=path), or a link to it, replaced the user's text by the .npy of its tokens in
    silence (os.replace once they were written): it is refused in one line, the text left as it was."""
    text = tmp_path / "a.txt"
    text.write_text("ab" * 50)
    (tmp_path / "link.npy").symlink_to(text)
    said = r"^memmap_path .* is the corpus .*a.txt itself, which its tokens would replace"
    for given in (text, tmp_path / "link.npy"):
        with pytest.raises(RnnkitError, match=said):
            load_file(text, memmap_path=given)
    assert text.read_text() == "ab" * 50 and sorted(os.listdir(tmp_path)) == ["a.txt", "link.npy"]


def test_big_files_are_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "MEMMAP_BYTES", 10)
    path = tmp_path / "big.txt"
    path.write_text("abcabcabcabc" * 10)
    c = load_file(path)
    assert isinstance(c.tokens, np.memmap) and "".join(c.chars[i] for i in c.tokens[:6]) == "abcabc"


def test_token_dtype_is_compact():
    assert token_dtype(200) == np.uint8 and token_dtype(300) == np.uint16 and token_dtype(70000) == np.int32
    # the bounds: 256 indices (0..255) fit a byte, 65,536 two
    assert [token_dtype(v) for v in (256, 257, 65536, 65537)] == [np.uint8, np.uint16, np.uint16, np.int32]


def test_bad_utf8_names_the_byte_offset(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("héllo ".encode() + b"\xff rest")
    with pytest.raises(RnnkitError, match="byte offset 7"):
        load_file(path)


def test_bad_utf8_after_a_character_split_across_chunks_names_its_byte_offset(tmp_path, monkeypatch):
    """The offset counts the bytes of a character a chunk's end split (held by the decoder) once: 'h' + 'é' cut
    after its first byte, then 0xff, is byte 3 of the file."""
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 2)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"h\xc3\xa9\xff")
    with pytest.raises(RnnkitError, match="invalid byte at byte offset 3\\)"):
        load_file(path)


def test_a_file_that_ends_inside_a_character_is_not_utf8(tmp_path):
    """A UTF-8 file cut inside its last character (a copy cut short): b'abc\\xc3' is no UTF-8 text, as bytes.decode
    says (the incomplete character at byte 3), not the text 'abc' with the byte dropped."""
    path = tmp_path / "cut.txt"
    path.write_bytes(b"abc\xc3")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    with pytest.raises(RnnkitError, match="is not UTF-8 text \\(invalid byte at byte offset 3\\)"):
        load_file(path)


def test_binary_file(tmp_path):
    path = tmp_path / "bin.dat"
    path.write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(RnnkitError, match="binary.*offset 3"):
        load_file(path)


def test_a_gzip_file_is_read_as_the_text_it_holds(tmp_path, monkeypatch):
    """`rnnkit train FILE.gz` (and eval): a gzip file was 'looks binary (NUL byte at byte offset 9)', where the text
    commands read it (shared/data's Multi30k is shipped so). Its text now, chunk by chunk (a character split across
    chunks too), and a damaged one is one line."""
    import gzip

    text = "ça va, the quick brown fox\n" * 300
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(text.encode()))
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 7)
    plain, packed = load_file(tmp_path / "t.txt"), load_file(tmp_path / "t.txt.gz")
    assert packed.chars == plain.chars and np.array_equal(packed.tokens, plain.tokens)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(text.encode())[:60])
    with pytest.raises(RnnkitError, match=r"cut.gz is a damaged gzip file \(Compressed file ended"):
        load_file(tmp_path / "cut.gz")


@pytest.mark.parametrize(
    "encoding, name",
    [("utf-16", "UTF-16"), ("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE"), ("utf-32", "UTF-32"),
     ("utf-32-le", "UTF-32LE")],
)  # fmt: skip
def test_utf16_and_utf32_text_is_named_not_called_binary(tmp_path, encoding, name):
    """A text file saved as "Unicode" by a Windows tool was called binary ("give a text file")."""
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox\n" * 20, encoding=encoding)
    with pytest.raises(
        RnnkitError, match=rf"is {name} text, not UTF-8; convert it to UTF-8: iconv -f {name} "
    ):
        load_file(path)


def test_missing_and_empty(tmp_path):
    with pytest.raises(RnnkitError, match="not found"):
        load_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(RnnkitError, match="empty"):
        load_file(tmp_path / "empty.txt")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_pipe_or_device_is_named_not_called_missing(tmp_path):
    """/dev/stdin, a shell's <(...) or a named pipe exists but is no regular file, which the two passes over the
    text need: it was "not found; give a text file"."""
    import os

    os.mkfifo(tmp_path / "pipe")
    for path in (tmp_path / "pipe", "/dev/null"):
        with pytest.raises(RnnkitError, match=r"is not a regular file \(a pipe or a device\).*save the text"):
            load_file(path, what="file")


def test_default_corpus_is_the_standard_library(monkeypatch):
    monkeypatch.setattr(corpus_mod, "STDLIB_CHARS", 200_000)
    c = load_corpus(None)
    assert (
        c.name == "stdlib"
        and len(c.tokens) == 200_000
        and "def" in "".join(c.chars[i] for i in c.tokens[:5000])
    )
    assert c.vocab_size < 100  # ASCII only


def test_a_default_corpus_below_100_000_characters_is_read_not_said_missing(monkeypatch):
    """stdlib_text(limit) with a limit under 100,000 (or STDLIB_CHARS lowered so, for a quick corpus) said 'the
    standard library's source is not installed': its check of an installed stdlib counted the characters read up to
    the limit."""
    monkeypatch.setattr(corpus_mod, "STDLIB_CHARS", 5_000)
    c = load_corpus(None)
    assert c.name == "stdlib" and len(c.tokens) == 5_000
    assert corpus_mod.stdlib_text(20_000) == corpus_mod.stdlib_text(200_000)[:20_000]


def test_a_memmap_path_given_with_the_default_corpus_holds_its_tokens(tmp_path, monkeypatch):
    """load_corpus(None, memmap_path=...) kept the built-in corpus in RAM and wrote no file, where the module says
    the tokens are written to memmap_path when it is given (as a file's are)."""
    monkeypatch.setattr(corpus_mod, "STDLIB_CHARS", 20_000)
    given = tmp_path / "tokens.npy"
    c, ram = load_corpus(None, memmap_path=given), load_corpus(None)
    assert isinstance(c.tokens, np.memmap) and given.is_file() and c.name == "stdlib"
    assert c.chars == ram.chars and np.array_equal(np.load(given), ram.tokens)
    assert np.asarray(c.tokens).dtype == ram.tokens.dtype


def test_shakespeare_download_is_checked_and_cached(tmp_path, monkeypatch):
    src = tmp_path / "input.txt"
    src.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_URL", src.as_uri())
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_SHA256", hashlib.sha256(src.read_bytes()).hexdigest())
    c = load_corpus("shakespeare")
    assert c.name == "shakespeare" and len(c.tokens) == len(src.read_text())
    assert (tmp_path / "cache" / "rnnkit" / "tinyshakespeare.txt").is_file()
    # as any file the user writes (mkstemp's 0600 kept the others of a shared cache from it)
    assert (tmp_path / "cache" / "rnnkit" / "tinyshakespeare.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_SHA256", "0" * 64)  # a wrong download is refused
    (tmp_path / "cache" / "rnnkit" / "tinyshakespeare.txt").unlink()
    with pytest.raises(RnnkitError, match="sha256"):
        load_corpus("shakespeare")


def test_shakespeare_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(RnnkitError, match=r"put char-rnn's .* at .*tinyshakespeare.txt"):
        load_corpus("shakespeare")


def test_shakespeare_without_a_home_says_what_to_set(tmp_path, monkeypatch):
    """HOME unset for a user without a home in the password database (a container's `docker run -u 1234`):
    `rnnkit train shakespeare` ended in pathlib's traceback, "RuntimeError: Could not determine home directory."."""
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("XDG_CACHE_HOME", "HOME", "RNNKIT_DATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(RnnkitError, match="home directory.*set XDG_CACHE_HOME .* or give --data-dir"):
        load_corpus("shakespeare")


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    """XDG_CACHE_HOME=cache kept the download in ./cache/rnnkit of every folder run from; the XDG spec says a
    relative path is to be ignored: ~/.cache it is."""
    from rnnkit.data.corpus import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    assert cache_dir() == tmp_path / ".cache" / "rnnkit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rnnkit"


def test_shakespeare_from_data_dir(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("ROMEO:\nBut soft!\n")
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path))
    assert len(load_corpus("shakespeare").tokens) == len("ROMEO:\nBut soft!\n")


def test_stream_batches_follow_the_diagram():
    tokens = np.arange(103, dtype=np.int32)
    b = StreamBatches(tokens, batch_size=4, seq_len=5)  # L = 25 per stream, 5 windows
    assert len(b) == 5
    w0, w1 = b.window(0), b.window(1)
    assert w0.xs.shape == (4, 5) and w0.xs.dtype.is_floating_point is False
    assert w0.xs[1].tolist() == [25, 26, 27, 28, 29]  # stream 1 starts at L
    assert w1.xs[1].tolist() == [30, 31, 32, 33, 34]  # window 1 continues stream 1
    assert (w0.ys == w0.xs + 1).all()


def test_eval_streams_keep_the_ragged_end():
    b = eval_streams(np.arange(23), batch_size=8, seq_len=5)  # 4 streams of 5
    assert sum(w.ys.numel() for w in b) == b.B * b.L
    assert (b.B, b.L) == (4, 5)  # (streams of at least T: 8 of 2 characters each passed the line above)


def test_too_short_for_one_window_says_the_minimum():
    with pytest.raises(RnnkitError, match="at least 2,501"):
        StreamBatches(np.zeros(100, dtype=np.uint8), batch_size=50, seq_len=50)


def test_split_is_first_and_last():
    train, val = split(np.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_split_holds_out_the_nearest_whole_number_of_characters():
    """val_frac 0.29 of 10 characters holds out round(2.9) = 3, as load_data's message counts them (int() held out 2)."""
    train, val = split(np.arange(10), 0.29)
    assert train.tolist() == list(range(7)) and val.tolist() == [7, 8, 9]


def test_windows_are_int64_as_plain_torch_takes_targets_and_one_hot_indices():
    """Window documents xs and ys as int64: torch's cross_entropy refuses int32 targets ("expected target dtype to
    be Long") and one_hot int32 indices, so a loop of one's own on the windows needs them so."""
    w = StreamBatches(np.arange(103, dtype=np.uint8), batch_size=4, seq_len=5).window(1)
    assert w.xs.dtype == w.ys.dtype == torch.int64
    F.cross_entropy(torch.zeros(20, 103), w.ys.flatten())
    assert F.one_hot(w.xs, 103).shape == (4, 5, 103)


def test_the_window_after_the_last_is_out_of_range_not_the_dropped_partial_one():
    """window(len(b)) is an IndexError as any index past the end: for training batches it would be the partial last
    window that training drops (2 characters of 27 a stream), or an empty one where T divides L."""
    for n, left in [(110, 2), (103, 0)]:  # L = 27 or 25 a stream, T = 5: 5 windows either way
        b = StreamBatches(np.arange(n), batch_size=4, seq_len=5)
        assert len(b) == 5 and b.L % b.T == left
        with pytest.raises(IndexError, match="window 5 out of range: there are 5"):
            b.window(5)


def test_a_validation_split_too_small_names_val_frac_not_the_corpus():
    """--val-frac 1e-6 of a million characters holds out 1: it said "the corpus (1,000,000 characters) is too short
    for a validation split; use --val-frac 0", though a larger --val-frac is the fix."""
    with pytest.raises(RnnkitError, match=r"--val-frac 1e-06 holds out 1 of the corpus's 1,000,000 characters.*"
                                          r"larger --val-frac \(at least 2e-06\), or 0"):  # fmt: skip
        split(np.zeros(1_000_000, dtype=np.uint8), 1e-6)


def test_split_refuses_a_val_frac_that_is_no_number_in_one_line():
    """split(tokens, "0.1") (a config's string) and split(tokens, None) failed in "TypeError: '<=' not supported
    between instances of 'float' and 'str'"; True was said as "got True" but is no fraction either."""
    tokens = np.arange(100)
    for bad in ("0.1", None, True, float("nan"), 1.0, -0.1):
        with pytest.raises(RnnkitError, match=r"--val-frac must be a number in \[0, 1\), got"):
            split(tokens, bad)
    assert [len(part) for part in split(tokens, np.float32(0.1))] == [90, 10]


def test_encode_takes_a_vocabulary_in_any_order():
    """encode(text, chars) searched chars as if sorted by code point: a vocabulary in another order (["c", "b", "a"])
    failed with "characters the model never saw: ''", naming none; its indices are given now, as for a sorted one."""
    assert encode("abca", ["c", "b", "a"]).tolist() == [2, 1, 0, 2]
    assert encode("héllo", ["o", "é", "l", "h"]).tolist() == [3, 1, 2, 2, 0]
    assert encode("abca", ["a", "b", "c"]).tolist() == [0, 1, 2, 0]
    with pytest.raises(RnnkitError, match="characters the model never saw: 'x'"):
        encode("axb", ["b", "a"])


def test_encode_rejects_unknown_characters():
    with pytest.raises(RnnkitError, match="never saw"):
        encode("abz", ["a", "b"])


def test_encode_holds_a_block_of_code_points_not_17_bytes_a_character(monkeypatch):
    """encode searched the sorted vocabulary for every character (np.searchsorted): int64 indices, the table gathered
    at them and the code points, 17 bytes a character at the peak (270 MB for a 16 MB chunk of a corpus; a 50 MB
    corpus loaded in 3.5 s, 574 MB peak RSS, 0.6 s and 336 MB now). A table from code point to index is read a block
    of ENCODE_BLOCK characters at a time: the tokens (1 byte each) and one block's code points besides."""
    import tracemalloc

    monkeypatch.setattr(corpus_mod, "ENCODE_BLOCK", 1 << 14, raising=False)
    text = "héllo, wörld 😀\n" * 100_000
    chars = sorted(set(text))
    tracemalloc.start()
    try:
        tokens = encode(text, chars)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(text)  # (17 * len(text) before)
    assert tokens.dtype == np.uint8 and "".join(chars[i] for i in tokens) == text
    # a character listed twice: its first index
    assert encode("abba", ["b", "a", "b"]).tolist() == [1, 0, 0, 1]
    with pytest.raises(RnnkitError, match="never saw: '😀'"):
        encode("a" * 40_000 + "😀", ["a"])  # in a later block, past the table's last code point


def test_unknown_carriage_returns_are_named_as_windows_line_ends():
    """A text with \\r\\n line ends read by a model trained on \\n ones got the bare list of unseen characters, '\\r',
    which reads as nothing; the line now says what it is and how to convert."""
    from rnnkit.models.charlm import encode as encode_ids

    with pytest.raises(RnnkitError, match="Windows line ends.*dos2unix"):
        encode("a\r\nb", ["\n", "a", "b"])
    with pytest.raises(RnnkitError, match="Windows line ends.*dos2unix"):
        encode_ids("a\r\nb", ["\n", "a", "b"], "text")
    with pytest.raises(RnnkitError, match=r"never saw: 'z'; use only characters of its vocabulary$"):
        encode("a\nz", ["\n", "a"])


def test_unknown_carriage_returns_alone_are_named_as_old_mac_line_ends():
    """A text whose line ends are \\r alone (classic Mac OS, an Excel for Mac CSV) was said to have Windows line ends,
    to convert with dos2unix, which leaves a lone \\r as it is; with no \\n in it, it is told mac2unix. Eval reads the
    file's characters (sorted: \\n before \\r), a prime is read after a newline put before it."""
    from rnnkit.cli.charlm import context
    from rnnkit.models.charlm import encode as encode_ids

    chars = ["\n", "a", "b"]
    for read in (
        lambda t: encode(t, chars),
        lambda t: encode_ids(t, chars, "text"),
        lambda t: context(t, chars, "p"),
    ):
        with pytest.raises(RnnkitError, match=r"line ends are \\r alone.*mac2unix") as lone:
            read("a\rb\r")
        assert "Windows" not in str(lone.value)
    # eval's: the characters of a file with \r\n line ends, and of one with \r alone, with its kinds of line ends
    with pytest.raises(RnnkitError, match="Windows line ends.*dos2unix"):
        encode_ids("ab\r\n", chars, "f.txt")
    with pytest.raises(RnnkitError, match=r"\\r alone.*mac2unix"):
        encode_ids("ab\r", chars, "f.txt")


LINE_ENDS = {  # a text's line ends: what the error of its unseen \r must say of them, and the fix
    "only \r\n": ("a\r\nb\r\n", r"Windows line ends, \\r\\n, .*: convert them, e\.g\. dos2unix\)"),
    "only \r": ("a\rb\r", r"line ends are \\r alone, .*: convert them, e\.g\. mac2unix, or tr"),
    "\n and \r alone": ("a\nb\rc\n", r"line ends are \\n, with \\r alone, .*: convert the \\r, e\.g\. mac2unix, or tr"),
    "\r\n and \n": ("a\r\nb\nc\r\n", r"Windows line ends, \\r\\n, .*: convert them, e\.g\. dos2unix\)"),
    "\r\n and \r alone": ("a\r\nb\rc\r\n", r"line ends are Windows' \\r\\n, and \\r alone.*: convert both, e\.g\. dos2unix, then mac2unix\)"),
    "all three": ("\na\r\nb\rc", r"line ends are Windows' \\r\\n, and \\r alone.*: convert both, e\.g\. dos2unix, then mac2unix\)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", LINE_ENDS)
def test_unknown_carriage_returns_among_other_line_ends_are_named_as_they_are(kind, tmp_path, monkeypatch):
    """A text of \\n line ends with \\r alone among them (or of \\r\\n ones with \\r alone) was said to have Windows line
    ends, to convert with dos2unix, which leaves a lone \\r as it is: encode('a\\nb\\rc\\n', ['\\n', 'a', 'b', 'c'])
    said '(the text has Windows line ends, \\r\\n, ...: convert them, e.g. dos2unix)'. Each says what the text has and
    what converts it; eval, which reads the file's characters, says the same of the file."""
    from rnnkit.cli.charlm import _chars_and_line_ends, context
    from rnnkit.data.corpus import load_file
    from rnnkit.models.charlm import encode as encode_ids

    monkeypatch.setattr("rnnkit.data.corpus.ENCODE_BLOCK", 2)  # eval's file read in blocks: a pair across two
    text, said = LINE_ENDS[kind]
    chars = ["\n", "a", "b", "c"]
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode())
    for read in (
        lambda: encode(text, chars),
        lambda: encode_ids(text, chars, "text"),
        lambda: context(text, chars, "p"),
        lambda: encode_ids(_chars_and_line_ends(load_file(path, what="file")), chars, "f.txt"),
    ):
        with pytest.raises(RnnkitError, match=said):
            read()


def test_unknown_combining_marks_are_named_as_another_normal_form():
    """A text whose accented letters are decomposed (NFD: 'e' + U+0301, as a copy from a PDF or a macOS file name
    gives) read by a model trained on composed ones (NFC: 'é') was told it held an unseen character shown as a bare
    accent on a quote (U+0301), and the reverse an unseen 'é' of a model that knows 'e' and the accent; the line
    now names the mark and the normal form to convert to."""
    from rnnkit.models.charlm import encode as encode_ids

    nfc, nfd = ["\n", "c", "a", "f", "e", "é"], ["\n", "c", "a", "f", "e", "\u0301"]
    for enc in (lambda t, c: encode(t, c), lambda t, c: encode_ids(t, c, "TEXT")):
        with pytest.raises(RnnkitError, match=r"U\+0301 is a combining mark.*composed \(NFC\).*"
                                              r"unicodedata.normalize\('NFC', text\)"):  # fmt: skip
            enc("cafe\u0301", nfc)
        with pytest.raises(RnnkitError, match=r"decomposed \(NFD\).*unicodedata.normalize\('NFD', text\)"):
            enc("café", nfd)
        with pytest.raises(RnnkitError, match=r"never saw: 'z'; (use only characters of its vocabulary|remove or "
                                              r"replace them)$"):  # fmt: skip
            enc("cafz", nfc)


def test_unknown_marks_that_show_nothing_are_named_by_their_escapes():
    """The emoji variation selector U+FE0F ('❤️' of a social-media text, where the model knew '❤' alone) was quoted as
    it is, 'never saw: '️'', an invisible character between quotes, and a lone accent (U+0301) sat on the quote;
    they are written as repr writes U+200D, with the visible characters as they were."""
    from rnnkit.models.charlm import encode as encode_ids

    chars = ["\n", "丁", "❤"]
    for enc in (lambda t: encode(t, chars), lambda t: encode_ids(t, chars, "TEXT")):
        with pytest.raises(RnnkitError, match=r"never saw: '\\ufe0f'; "):
            enc("丁❤\ufe0f")
        with pytest.raises(RnnkitError, match=r"never saw: 'x\\u0301\\u200d\\ufe0f😀\\U000e0100'; "):
            enc("丁x\u0301\u200d\ufe0f😀\U000e0100")


def test_unknown_marks_are_looked_up_in_a_big_vocabulary_once(monkeypatch):
    """normal_form_hint decomposed every known character again for each unseen combining mark: 112 marks against a
    vocabulary of 70,001 CJK characters took 1.6 s of the error (7.8 million decompositions). The known characters are
    decomposed once; the hint is the same."""
    import unicodedata

    chars = ["\n", "é", *map(chr, range(0x4E00, 0x4E00 + 3000))]
    text = "丁e" + "".join(
        map(chr, range(0x300, 0x370))
    )  # e (unseen) and 112 marks, U+0301 (in é) among them
    calls, normalize = [], unicodedata.normalize
    monkeypatch.setattr(unicodedata, "normalize", lambda form, s: calls.append(s) or normalize(form, s))
    with pytest.raises(RnnkitError, match=r"U\+0301 is a combining mark.*composed \(NFC\)"):
        encode(text, chars)
    assert len(calls) <= 2 * (len(chars) + 113), len(calls)


def test_shakespeare_sources_say_what_is_wrong(tmp_path, monkeypatch):
    """A --data-dir without the file is an error (a typo must not download); a stale cache copy is named; a
    folder called shakespeare (a run folder) does not stand in for the dataset."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    monkeypatch.setattr(corpus_mod, "SHAKESPEARE_URL", (tmp_path / "missing.txt").as_uri())
    with pytest.raises(
        RnnkitError, match="--data-dir .*nonexistent does not exist; give the folder that holds"
    ):
        load_corpus("shakespeare", data_dir=tmp_path / "nonexistent")  # (it said the folder "holds no" file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RnnkitError, match="--data-dir .*empty holds no tinyshakespeare.txt"):
        load_corpus("shakespeare", data_dir=tmp_path / "empty")
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(RnnkitError, match="--data-dir .*notes.txt is a file; give the folder that holds"):
        load_corpus("shakespeare", data_dir=tmp_path / "empty" / "notes.txt")
    stale = tmp_path / "cache" / "rnnkit" / "tinyshakespeare.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("not the play\n")
    with pytest.raises(RnnkitError, match="tinyshakespeare.txt is not char-rnn's Tiny Shakespeare"):
        load_corpus("shakespeare")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_text("ROMEO:\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shakespeare").mkdir()  # e.g. --out shakespeare
    assert load_corpus("shakespeare", data_dir="data").name == "shakespeare"


def test_stream_batches_check_their_sizes_and_tokens():
    """B or T of 0 divided by zero, B < 0 asked for 'at least -4 characters', float tokens were truncated to
    ids silently and a window past the end was empty."""
    toks = np.arange(100, dtype=np.uint8)
    for call, message in [
        (lambda: StreamBatches(toks, 0, 5), r"batch size \(streams\) must be an integer >= 1, got 0"),
        (lambda: StreamBatches(toks, -1, 5), "got -1"),
        (lambda: StreamBatches(toks, 2, 0), r"seq_len \(window length\) must be an integer >= 1"),
        (lambda: eval_streams(toks, 4, 0), "seq_len"),
        (lambda: StreamBatches(np.linspace(0, 3, 100), 2, 5), "integer token ids, got float64"),
    ]:
        with pytest.raises(RnnkitError, match=message):
            call()
    batches = StreamBatches(list(range(100)), 2, 5)  # a list of ids works as an array
    assert batches.window(0).xs.tolist() == [[0, 1, 2, 3, 4], [49, 50, 51, 52, 53]]
    with pytest.raises(IndexError, match="window 1000 out of range: there are 9"):
        batches.window(1000)


def test_stream_batches_take_narrow_numpy_sizes_as_python_ints():
    """B and T of a narrow numpy integer type (np.int8 from an array or a parameter grid) took the window arithmetic
    into that type: (k + 1) * T wrapped (a last window of 0 characters, a NaN validation) and the text's length
    overflowed it (OverflowError in eval_streams)."""
    toks = np.arange(1001) % 7
    for B, T in [(np.int8(1), np.int8(70)), (np.int8(100), np.int8(3)), (np.uint8(3), np.int16(200))]:
        got = eval_streams(toks, B, T)
        want = eval_streams(toks, int(B), int(T))
        assert (got.B, got.T, got.L, len(got)) == (want.B, want.T, want.L, len(want))
        assert all(type(n) is int for n in (got.B, got.T, got.L))
        assert [w.xs.tolist() for w in got] == [w.xs.tolist() for w in want]
    assert [w.xs.shape[1] for w in StreamBatches(toks[:101], 1, np.int8(70), ragged=True)] == [70, 30]


@pytest.mark.parametrize(
    "now", ["abc", "abc" * 30, "abc" * 19 + "xyz"], ids=["shorter", "longer", "new characters"]
)
def test_a_file_that_changes_while_read_is_refused(tmp_path, monkeypatch, now):
    """load_file reads the file twice (its characters, then its tokens). A file written to in between (a text
    still downloading, a log) was misread: shorter left its last tokens as np.empty made them (ids past the
    vocabulary, read as text in silence), longer failed in numpy's broadcast, new characters were 'never seen'."""
    path = tmp_path / "t.txt"
    path.write_text("abc" * 20)
    read, passes = corpus_mod._read_chunks, []

    def second_pass_sees_another_file(p):
        passes.append(p)
        if len(passes) == 2:
            p.write_text(now)
        yield from read(p)

    monkeypatch.setattr(corpus_mod, "_read_chunks", second_pass_sees_another_file)
    with pytest.raises(RnnkitError, match=r"t\.txt changed while it was read .*no program is writing to"):
        load_file(path)


def test_a_window_index_is_an_integer_taken_as_a_python_int():
    """window(True) was window 1, and a narrow numpy index wrapped k * T (np.int8(30) * 5)."""
    b = StreamBatches(np.arange(2000, dtype=np.int64) % 7, batch_size=2, seq_len=5)
    assert np.array_equal(b.window(np.int8(30)).xs, b.window(30).xs)
    with pytest.raises(TypeError, match="window index must be an integer, got True"):
        b.window(True)


@pytest.mark.parametrize("name", ["default", "stdlib"])
def test_a_file_called_default_or_stdlib_is_that_file(tmp_path, monkeypatch, name):
    """`rnnkit train default` with a text file ./default trained on the standard library's source in silence (the
    names stood for the built-in corpus whatever the folder held); a file of the name is read, as ./shakespeare is."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text("abcab\n" * 50)
    got = load_corpus(name)
    assert got.chars == ["\n", "a", "b", "c"]


@pytest.mark.parametrize("given", [False, True])
def test_a_memory_mapped_corpus_with_no_room_on_disk_is_one_line(tmp_path, monkeypatch, given):
    # a sparse token file mapped on a full disk (a small tmpfs /tmp) died of SIGBUS at the first token written
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(corpus_mod, "MEMMAP_BYTES", 10)
    monkeypatch.setattr(corpus_mod.os, "posix_fallocate", full, raising=False)
    monkeypatch.setattr(corpus_mod.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "big.txt"
    path.write_text("abc" * 100)
    tokens = tmp_path / "tokens.npy"
    with pytest.raises(RnnkitError, match=r"no room for the tokens of corpus .*big.txt \(300 bytes\) in .*\(No space "
                       r"left on device\); free space there, or (give a memmap_path|set TMPDIR)"):  # fmt: skip
        load_file(path, memmap_path=tokens if given else None)
    assert not tokens.exists() and not any((tmp_path / "tmp").iterdir())


def test_a_shakespeare_download_cut_short_is_one_line(tmp_path, monkeypatch):
    # a connection closed before Content-Length's bytes came: http.client's IncompleteRead traceback
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1115394\r\n\r\nFirst Citizen:\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    monkeypatch.setattr(
        corpus_mod, "SHAKESPEARE_URL", f"http://127.0.0.1:{server.getsockname()[1]}/input.txt"
    )
    with pytest.raises(RnnkitError, match=r"cannot download Tiny Shakespeare \(the connection closed after 15 bytes"
                       r" of the file\); put char-rnn's"):  # fmt: skip
        load_corpus("shakespeare")
    server.close()
    assert list((tmp_path / "cache" / "rnnkit").iterdir()) == []  # (no partial file left)


def test_encode_names_bytes_that_were_not_utf8():
    """Text holding a lone surrogate (Python's stand-in for a byte that is not UTF-8, as in a command line or a file
    read with errors='surrogateescape') failed deep inside with "UnicodeEncodeError: 'utf-32-le' codec can't encode
    character '\\udcff'"; it is an unseen character now, its byte named."""
    with pytest.raises(
        RnnkitError, match=r"never saw: '\\udcff'.*stands for the byte 0xff: the text is not UTF-8"
    ):
        encode("a\udcffb", ["a", "b"])
    with pytest.raises(RnnkitError, match=r"never saw: '\\ud800'"):
        encode("a\ud800", ["a"])
