"""Corpora for character language models, as compact token arrays.

A corpus is a text file (UTF-8, any language) or a built-in name:

    (none)       the Python standard library's own source: a deterministic selection of its
                 ASCII modules, a few MB, present on every machine (it plays the part of the
                 lectures' Linux-kernel example, offline)
    shakespeare  Tiny Shakespeare (1,115,394 chars; karpathy/char-rnn data/tinyshakespeare/input.txt),
                 looked up in --data-dir / RNNKIT_DATA, then the user's cache, then downloaded once
                 and checked against its sha256

The text is read in chunks and turned into one token per character, stored as uint8 / uint16 /
int32 (whatever the vocabulary needs), so a corpus costs 1-4 bytes per character in memory, or
nothing for files over 64 MB or when `memmap_path` is given (the tokens are then written to a
file and memory-mapped).
"""

import codecs
import errno
import gzip
import hashlib
import http.client
import os
import pathlib
import shlex
import sys
import sysconfig
import tempfile
import unicodedata
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

from rnnkit._io import UMASK, refuse_empty
from rnnkit.errors import RnnkitError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
STDLIB_CHARS = 3_000_000  # size of the built-in default corpus
CHUNK_BYTES = 1 << 24
MEMMAP_BYTES = 64 << 20  # bigger files keep their tokens in a memory-mapped file, not in RAM
ENCODE_BLOCK = 1 << 20  # characters encode reads at a time (their code points: 4 bytes each)


@dataclass
class Corpus:
    """A corpus as tokens: `tokens[i]` is the index of character i in `chars` (sorted)."""

    name: str
    chars: list  # the vocabulary: every character that occurs, sorted by code point
    tokens: np.ndarray  # (N,) uint8/uint16/int32, possibly memory-mapped

    @property
    def vocab_size(self) -> int:
        return len(self.chars)


def token_dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def encode(text: str, chars: list) -> np.ndarray:
    """Characters -> token indices through a table from code point to index, ENCODE_BLOCK characters at a time (no
    Python loop); `chars` in any order. (A binary search of the sorted vocabulary, np.searchsorted, took 80% of the
    3.5 s of loading a 50 MB corpus, and its int64 indices 17 bytes a character at the peak: 270 MB a chunk.)"""
    points = np.array([ord(c) for c in chars], dtype=np.int64)
    table = np.full(int(points.max(initial=-1)) + 2, -1, dtype=np.int32)  # code point -> index; -1: unseen
    table[points[::-1]] = np.arange(len(chars), dtype=np.int32)[::-1]  # (a character listed twice: its first)
    tokens = np.empty(len(text), dtype=token_dtype(len(chars)))
    for i in range(0, len(text), ENCODE_BLOCK):
        # (a lone surrogate: one more unseen character)
        part = text[i : i + ENCODE_BLOCK].encode("utf-32-le", "surrogatepass")
        codes = np.frombuffer(part, dtype=np.uint32)
        idx = table[np.minimum(codes, len(table) - 1)]  # (the table's last entry, past every character: -1)
        if (idx < 0).any():
            unseen = sorted(set(text) - set(chars))  # (not set(chars) built again for each character)
            raise RnnkitError(
                f"characters the model never saw: {quoted_chars(''.join(unseen))}; use only characters of its vocabulary"
                f"{line_ends_hint(unseen, chars, text)}{normal_form_hint(unseen, chars)}{bytes_hint(unseen)}"
            )
        tokens[i : i + len(codes)] = idx
    return tokens


def quoted_chars(chars: str) -> str:
    """repr(chars) for an error line, with the marks that show nothing by themselves (Unicode categories Mn and Me:
    the variation selector U+FE0F of an emoji such as '❤️', a combining accent U+0301) written as escapes, as repr
    writes U+200D: 'never saw: '️'' named an invisible character between quotes, of a text whose hearts the model
    knew without it, and an accent sat on the quote."""
    return "".join(
        (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        if unicodedata.category(c) in ("Mn", "Me")
        else c
        for c in repr(chars)
    )


def line_ends_hint(unseen, chars, text) -> str:
    """What to say of a '\\r' a model trained on '\\n' line ends never saw: the text has Windows line ends (every '\\r'
    before a '\\n'), or, where it holds no '\\n' at all, classic Mac OS's '\\r' alone (an Excel for Mac CSV), which
    dos2unix leaves as they are (it said 'Windows line ends ... dos2unix' of them too); '\\r' alone among '\\n' line
    ends, or among '\\r\\n' ones, was said to be Windows line ends too, which dos2unix left as they were. `text`: what
    was read (eval's: the file's characters and one of each kind of line end it holds, see cli.charlm.cmd_eval)."""
    if "\r" not in unseen or "\n" not in chars:
        return ""
    crlf = text.count("\r\n")
    if crlf == text.count("\r"):  # (some \n alone too: Windows' \r\n all the same, which dos2unix converts)
        return " (the text has Windows line ends, \\r\\n, and the model knows \\n only: convert them, e.g. dos2unix)"
    if "\n" not in text:
        return (
            " (the text's line ends are \\r alone, as classic Mac OS wrote them, and the model knows \\n only: "
            "convert them, e.g. mac2unix, or tr '\\r' '\\n')"
        )
    if not crlf:
        return (
            " (the text's line ends are \\n, with \\r alone, as classic Mac OS wrote them, among them, and the model "
            "knows \\n only: convert the \\r, e.g. mac2unix, or tr '\\r' '\\n')"
        )
    return (
        " (the text's line ends are Windows' \\r\\n, and \\r alone, as classic Mac OS wrote them, among them, and the "
        "model knows \\n only: convert both, e.g. dos2unix, then mac2unix)"
    )


def bytes_hint(unseen) -> str:
    """What to say of the stand-ins U+DC80..U+DCFF that Python decodes a command line's bytes that are not UTF-8
    into (a Latin-1 terminal's 'café' is b'caf\\xe9', read 'caf\\udce9'): 'never saw '\\udce9'' named a character
    no one typed. `unseen`: characters, or tokens of any length (a word model's unknown words: 'ord() expected a
    character, but string of length 5 found')."""
    raw = [ord(c) - 0xDC00 for c in "".join(unseen) if 0xDC80 <= ord(c) <= 0xDCFF]
    if not raw:
        return ""
    return (f" (\\u{raw[0] + 0xDC00:x} stands for the byte 0x{raw[0]:x}: the text is not UTF-8; set the terminal to "
            "UTF-8, or convert the text, e.g. with iconv)")  # fmt: skip


def normal_form_hint(unseen, chars) -> str:
    """What to say of unseen characters the model knows in another Unicode normal form: a combining mark (U+0301)
    of a text in decomposed form (NFD) where the model knows composed letters (NFC), or a composed letter whose
    parts the model knows. Shown bare, the mark sat on the quote before it, which reads as nothing."""
    known = set(chars)
    marks = [c for c in unseen if unicodedata.combining(c)]
    # the marks the known characters hold decomposed, found once (each mark read every known character decomposed:
    # 112 unseen marks against a vocabulary of 70,001 characters took 1.6 s of the error)
    if marks:
        inside = set().union(*(unicodedata.normalize("NFD", k) for k in known if not k.isascii()))
        marks = [c for c in marks if c in inside]
    if marks:
        return (f" (U+{ord(marks[0]):04X} is a combining mark: the text writes accented letters decomposed (NFD), the "
                "model knows them composed (NFC); convert it, e.g. unicodedata.normalize('NFC', text))")  # fmt: skip
    if any(
        unicodedata.normalize("NFD", c) != c and set(unicodedata.normalize("NFD", c)) <= known for c in unseen
    ):
        return (" (the text writes accented letters composed (NFC), the model knows them decomposed (NFD); convert "
                "it, e.g. unicodedata.normalize('NFD', text))")  # fmt: skip
    return ""


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16 or UTF-32 (what Windows tools write as "Unicode") by the file's byte-order mark, or by the NUL bytes
    that such a file of mostly ASCII text holds at fixed places; None for anything else."""
    for bom, name in [(codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")]:  # fmt: skip
        if head.startswith(bom):
            return name
    head = head[:256][: min(len(head), 256) // 4 * 4]
    for name, width in [("UTF-32", 4), ("UTF-16", 2)]:
        for text, order in [(0, "LE"), (width - 1, "BE")]:  # where the ASCII byte sits
            if head and all((b != 0) == (i % width == text) for i, b in enumerate(head)):
                return name + order  # without a mark, iconv's UTF-16 and UTF-32 read big-endian
    return None


UNMARKED_UNITS = 8  # the fewest UTF-16 characters that _unmarked_utf16 judges by
# the blocks of a language's text without a byte-order mark: (first, last) code points, and its script (None: white
# space, digits and punctuation that any script's text holds, and ASCII's letters)
_TEXT_BLOCKS = [(0x09, 0x0D, None), (0x20, 0x7E, None), (0xA0, 0xBF, None), (0xC0, 0x24F, "Latin"),
                (0x370, 0x3FF, "Greek"), (0x400, 0x52F, "Cyrillic"), (0x590, 0x5FF, "Hebrew"),
                (0x600, 0x6FF, "Arabic"), (0x900, 0xDFF, "Indic"), (0xE00, 0xE7F, "Thai"), (0x2000, 0x206F, None),
                (0x3000, 0x303F, None), (0x3040, 0x30FF, "CJK"), (0x4E00, 0x9FFF, "CJK"), (0xAC00, 0xD7A3, "Hangul"),
                (0xFF00, 0xFFEF, None)]  # fmt: skip


def _unmarked_utf16(head: bytes) -> str | None:
    """UTF-16LE or UTF-16BE for the first bytes `head` of a file that is no UTF-8 text (a NUL byte, or bytes not
    UTF-8) and that read as UTF-16 without a byte-order mark give text of one script, with white space, digits,
    punctuation and ASCII: Chinese, Japanese or Russian text, which has too few ASCII characters for _wide_encoding's
    NULs at fixed places. Binary data gives control characters, other blocks, several scripts or lone surrogates
    there; ASCII strings between NULs (a symbol table) hold no other byte; Latin-1 or GBK text has no NUL, and its
    spaces, accents or second bytes give the same. None for anything else."""
    head = head[:256]
    try:
        head.decode("utf-8")
        if b"\0" not in head:
            return None  # UTF-8 text
    except UnicodeDecodeError as e:
        if b"\0" not in head and e.start >= len(head) - 3 and e.reason == "unexpected end of data":
            return None  # UTF-8 text whose character the 256 bytes cut
    head = head[: len(head) // 2 * 2]
    if len(head) < 2 * UNMARKED_UNITS or not head.translate(None, bytes(range(0x20, 0x7F)) + b"\0\t\n\r"):
        return None
    found = []
    for order in ("LE", "BE"):
        try:  # a surrogate pair the 256 bytes cut is left out
            text = codecs.getincrementaldecoder(f"utf-16-{order.lower()}")().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        scripts = set()
        for c in text:
            block = next((b for b in _TEXT_BLOCKS if b[0] <= ord(c) <= b[1]), None)
            if block is None or not (c.isprintable() or c in "\t\n\r"):
                break
            scripts.add(block[2])
        else:  # without a NUL (a space, a line end), CJK punctuation, kana or a full-width form: Shift-JIS, EUC-KR
            wide_marks = any("\u3000" <= c < "\u3100" or c >= "\uff00" for c in text)
            if len(scripts - {None}) == 1 and (b"\0" in head or wide_marks):
                found.append(order)
    return f"UTF-16{found[0]}" if len(found) == 1 else None


def refuse_wide(path, head: bytes) -> None:
    """One error for a file whose first bytes `head` are UTF-16 or UTF-32 text (which the NUL bytes of its ASCII
    characters made look binary), naming the iconv line that converts it; UTF-16 without a byte-order mark of
    text that is mostly not ASCII (Chinese, Japanese) is said to look like it (it was 'binary', or 'not UTF-8')."""
    wide, unmarked = _wide_encoding(head), ""
    if not wide and (wide := _unmarked_utf16(head)):
        unmarked = " without a byte-order mark"
    if wide:
        raise RnnkitError(f"{path} {'looks like' if unmarked else 'is'} {wide} text{unmarked}, not UTF-8; convert "
                          f"it to UTF-8: iconv -f {wide} -t UTF-8 {shlex.quote(str(path))} > NEW_FILE")  # fmt: skip


def not_utf8(path, at: int) -> RnnkitError:
    """The error for a text file that is not UTF-8 (its first bad byte at offset `at`), said alike by train and eval
    and by the text commands (rnnkit.cli.text.read_text)."""
    return RnnkitError(f"{path} is not UTF-8 text (invalid byte at byte offset {at}); convert it to UTF-8")


def is_gzip(path) -> bool:
    """Whether the file starts with gzip's magic bytes (shared/data's Multi30k is shipped so)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _read_chunks(path: pathlib.Path):
    """Yield the file's text chunk by chunk (a gzip file's: the text it holds); bad UTF-8, binary input or a damaged
    gzip file is one clear error (a .gz was 'looks binary (NUL byte at byte offset 9)')."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    gz = is_gzip(path)
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        while True:
            try:
                raw = f.read(CHUNK_BYTES)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # (a truncated or damaged .gz)
                raise RnnkitError(
                    f"{path} is a damaged gzip file ({e}); give a UTF-8 text file or its whole .gz"
                ) from None
            if offset == 0:
                refuse_wide(path, raw)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise RnnkitError(
                    f"{path} looks binary (NUL byte at byte offset {offset + nul}); give a text file"
                )
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise not_utf8(path, offset - pending + e.start) from None
            if offset == 0 and text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark says how the file is encoded; it is not part of the text
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


def load_file(path, name=None, memmap_path=None, what="corpus") -> Corpus:
    """Read a UTF-8 text file into a Corpus: pass 1 finds the vocabulary, pass 2 writes the tokens.
    what: the file's role in error messages ("corpus" for training, else a file given to another command)."""
    refuse_empty(path, f"a text file for the {what}")
    path = pathlib.Path(path)
    if path.is_dir():
        raise RnnkitError(f"{what} {path} is a folder; give one text file (join several with cat)")
    # /dev/stdin, <(...): the text is read twice (the vocabulary, then the tokens)
    if path.exists() and not path.is_file():
        raise RnnkitError(
            f"{what} {path} is not a regular file (a pipe or a device); save the text to a file first"
        )
    if not path.is_file():
        hint = (
            "a text file, 'shakespeare', or nothing for the built-in corpus"
            if what == "corpus"
            else "a text file"
        )
        raise RnnkitError(f"{what} {path} not found; give {hint}")
    vocab, n = set(), 0
    for text in _read_chunks(path):
        vocab.update(text)
        n += len(text)
    if n == 0:
        raise RnnkitError(f"{what} {path} is empty; give a text file with some text in it")
    chars = sorted(vocab)
    dtype = token_dtype(len(chars))
    # (anonymous: made here; told by its name, a memmap_path the caller gave named rnnkit-tokens-... was deleted)
    # (a .gz: by the characters it holds, not its compressed size)
    anonymous = memmap_path is None and (n if is_gzip(path) else path.stat().st_size) > MEMMAP_BYTES
    if anonymous:
        memmap_path = _anonymous_file()
    given = None if memmap_path is None or anonymous else pathlib.Path(os.path.realpath(memmap_path))
    # (the text itself, or a link to it: replaced by its tokens in silence)
    if given is not None and given.is_file() and os.path.samefile(given, path):
        raise RnnkitError(f"memmap_path {memmap_path} is the {what} {path} itself, which its tokens would replace; "
                          "give another file for them (e.g. tokens.npy)")  # fmt: skip
    if given is not None:
        # written to a file of its own that replaces memmap_path once whole: written in place, a memmap_path given
        # again (another corpus, or the same file) truncated the file an earlier Corpus still maps, whose tokens
        # became the new ones in silence, or a Bus error at its first read past the new file's end
        memmap_path = _file_beside(given, memmap_path)
    try:
        if memmap_path is not None:
            memmap_path = pathlib.Path(memmap_path)
            tokens = _open_memmap(memmap_path, dtype, n, path, what, anonymous)
            if anonymous:
                _unlink_quietly(memmap_path)  # the mapping stays valid; the file vanishes with the process
        else:
            tokens = np.empty(n, dtype=dtype)
        _write_tokens(tokens, path, chars, what)
        if given is not None:
            try:  # (the mode of the file it replaces, else as any file the user writes; mkstemp's is 0600)
                mode = os.stat(given).st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o666 & ~UMASK
            os.chmod(memmap_path, mode)
            os.replace(memmap_path, given)
            tokens.filename = str(given)  # (np.memmap's name of its file: the temporary one, gone)
    except BaseException:
        if given is not None:
            _unlink_quietly(memmap_path)
        raise
    return Corpus(name or str(path), chars, tokens)


def _write_tokens(tokens, path, chars, what) -> None:
    """Pass 2 of load_file: the file's tokens into `tokens`, of the length pass 1 counted."""
    i = 0
    for text in _read_chunks(path):
        # a file written to meanwhile (a text still downloading, a log): longer failed in numpy's broadcast, new
        # characters were 'never seen', and shorter left the last tokens as np.empty made them, read as text
        if i + len(text) > len(tokens):
            raise _changed(path, what)
        try:
            tokens[i : i + len(text)] = encode(text, chars)
        except RnnkitError:  # characters the first pass did not see
            raise _changed(path, what) from None
        i += len(text)
    if i != len(tokens):
        raise _changed(path, what)


def _file_beside(target: pathlib.Path, given) -> pathlib.Path:
    """A new, empty file in target's folder, named after it (a folder at target is said up front, as open() says it:
    its rename failed once the whole corpus was read, naming the new file)."""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(given))
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=target.name[:200] + ".", suffix=".tmp")
    except OSError as e:  # a missing folder: named by the path given, not the temporary one
        e.filename = str(given)
        raise
    os.close(fd)
    return pathlib.Path(name)


def _changed(path, what) -> RnnkitError:
    return RnnkitError(f"{what} {path} changed while it was read (it is read twice: its characters, then its "
                       "tokens); give a file no program is writing to (a copy of it)")  # fmt: skip


def _open_memmap(memmap_path: pathlib.Path, dtype, n: int, path, what, anonymous: bool) -> np.ndarray:
    """A memory-mapped (n,) token file whose blocks are reserved on disk first: a mapping of a file with no room
    for it (a full disk, a small tmpfs /tmp) killed the process with SIGBUS at the first token written ('Bus
    error', no message). anonymous: a file load_file made (in TMPDIR), not the caller's memmap_path."""
    try:
        tokens = np.lib.format.open_memmap(memmap_path, mode="w+", dtype=dtype, shape=(n,))
        if hasattr(os, "posix_fallocate"):  # (none on macOS or Windows: mapped as it was)
            fd = os.open(memmap_path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            except OSError as e:  # a file system that can't reserve blocks (ZFS: EINVAL) is left as it is
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            finally:
                os.close(fd)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # (a missing folder: said as it was)
            raise
        _unlink_quietly(memmap_path)  # (a file of the size with no blocks behind it)
        where = (
            "set TMPDIR to a folder with room" if anonymous else "give a memmap_path in a folder with room"
        )
        raise RnnkitError(f"no room for the tokens of {what} {path} ({n * np.dtype(dtype).itemsize:,} bytes) in "
                          f"{memmap_path.parent} ({e.strerror}); free space there, or {where}") from None  # fmt: skip
    return tokens


def _anonymous_file() -> pathlib.Path:
    fd, name = tempfile.mkstemp(prefix="rnnkit-tokens-", suffix=".npy")
    os.close(fd)
    return pathlib.Path(name)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:  # Windows keeps mapped files; the temporary folder is cleaned eventually
        pass


def stdlib_text(limit=None) -> str:
    """The standard library's top-level ASCII modules in sorted order, up to `limit` characters."""
    limit = limit or STDLIB_CHARS
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts, n = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="ascii")
        except (UnicodeDecodeError, OSError):
            continue  # non-ASCII modules would only add rare characters to the vocabulary
        parts.append(f"# ---- {path.name} ----\n{text}\n")
        n += len(parts[-1])
        if n >= limit:
            break
    # (a stdlib of under 100,000 characters is not there; a limit below that said so of one that is)
    if n < min(limit, 100_000):
        raise RnnkitError(
            f"the standard library's source is not installed at {root}; name a text file to train on"
        )
    return "".join(parts)[:limit]


def cache_dir() -> pathlib.Path:
    try:  # (no HOME, and no home in the password database: a container's `docker run -u 1234`)
        # a relative XDG_CACHE_HOME is ignored, as the XDG spec says (it kept the file in every folder run from)
        given = os.environ.get("XDG_CACHE_HOME", "")
        base = given if os.path.isabs(given) else pathlib.Path.home() / ".cache"
    except RuntimeError as e:
        raise RnnkitError(
            f"no cache folder: {str(e).rstrip('.').lower()} (HOME is unset); set XDG_CACHE_HOME (or HOME) to a "
            f"writable folder, or give --data-dir (or RNNKIT_DATA) with {SHAKESPEARE_FILE} in it"
        ) from None
    return pathlib.Path(base) / "rnnkit"


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _local_copy(folder) -> pathlib.Path | None:
    folder = pathlib.Path(folder).expanduser()
    return next((folder / n for n in (SHAKESPEARE_FILE, "input.txt") if (folder / n).is_file()), None)


def shakespeare_path(data_dir=None) -> pathlib.Path:
    """Local copy (data_dir, RNNKIT_DATA), else the cache, else download once and check its sha256.

    A --data-dir given must hold the file: a typo says so instead of downloading. Local copies are taken as
    they are (a user's own edition); the cached download is checked."""
    if data_dir is not None:
        if not str(data_dir).strip():  # "$DATA" unset in a script: not a folder, and no reason to download
            raise RnnkitError(
                "--data-dir is empty; give the folder that holds tinyshakespeare.txt, or leave it out"
            )
        found = _local_copy(data_dir)
        folder = pathlib.Path(data_dir).expanduser()
        if (
            found is None and not folder.is_dir()
        ):  # (a typo said the folder "holds no" file, as if it were there)
            what = "is a file" if folder.exists() else "does not exist"
            raise RnnkitError(f"--data-dir {data_dir} {what}; give the folder that holds {SHAKESPEARE_FILE}")
        if found is None:
            raise RnnkitError(
                f"--data-dir {data_dir} holds no {SHAKESPEARE_FILE} (nor input.txt); give the folder that has it"
            )
        return found
    env = os.environ.get("RNNKIT_DATA")
    if env and (found := _local_copy(env)):
        return found
    target = cache_dir() / SHAKESPEARE_FILE
    stale = ""
    if target.is_file():
        if sha256(target) == SHAKESPEARE_SHA256:
            return target
        stale = f"{target} is not char-rnn's Tiny Shakespeare (wrong sha256); "
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    except OSError as e:
        raise RnnkitError(
            f"cannot use the cache folder {target.parent} ({e.strerror}); set XDG_CACHE_HOME or give --data-dir"
        ) from None
    print(f"rnnkit: downloading Tiny Shakespeare (1.1 MB, once) from {SHAKESPEARE_URL}", file=sys.stderr)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as r:
            f.write(r.read())
        if sha256(tmp) != SHAKESPEARE_SHA256:
            raise RnnkitError(
                f"downloaded Tiny Shakespeare has the wrong sha256; put char-rnn's input.txt at {target}"
            )
        # as any file the user writes: mkstemp's 0600 kept the others of a shared cache (XDG_CACHE_HOME) from it
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, target)
    # (a connection cut mid-file is http.client's IncompleteRead, no OSError: a traceback, "IncompleteRead(15 bytes
    # read, 1115379 more expected)")
    except (OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e.__class__.__name__
        if isinstance(e, http.client.IncompleteRead):
            reason = f"the connection closed after {len(e.partial):,} bytes of the file"
        where = f" ({env} has none)" if env else ""
        raise RnnkitError(
            f"{stale}cannot download Tiny Shakespeare ({reason}); put char-rnn's data/tinyshakespeare/input.txt "
            f"at {target}, or {SHAKESPEARE_FILE} in a folder given as --data-dir or RNNKIT_DATA{where}"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_corpus(corpus=None, data_dir=None, memmap_path=None) -> Corpus:
    """A corpus by name or path: None -> the standard library's source; 'shakespeare'; or a file."""
    # (a file of the name, ./default or ./stdlib, is that file, as ./shakespeare is: it was the built-in corpus)
    if corpus in (None, "") or (corpus in ("stdlib", "default") and not pathlib.Path(corpus).is_file()):
        text = stdlib_text()
        # (its tokens to the file asked for, as a file's are: the corpus was kept in RAM in silence)
        if memmap_path is not None:
            with tempfile.TemporaryDirectory(prefix="rnnkit-stdlib-") as folder:
                source = pathlib.Path(folder, "stdlib.txt")
                source.write_text(text, encoding="utf-8", newline="")
                return load_file(source, name="stdlib", memmap_path=memmap_path)
        chars = sorted(set(text))
        return Corpus("stdlib", chars, encode(text, chars))
    if corpus == "shakespeare" and not pathlib.Path(corpus).is_file():  # (a run folder may be called so)
        return load_file(shakespeare_path(data_dir), name="shakespeare", memmap_path=memmap_path)
    return load_file(corpus, memmap_path=memmap_path)
