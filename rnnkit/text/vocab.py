"""Tokenisers and the vocabulary: text -> tokens -> integer ids.

    characters:  "To be" -> ['T', 'o', ' ', 'b', 'e']
    words:       "To be, or not." -> ['to', 'be', ',', 'or', 'not', '.']   (lower=True, punctuation=True)

A `Vocabulary` maps each kept token to an id 0..V-1; id 0 is `<unk>`, which stands for every token
that was rarer than `min_freq`, fell past `max_size`, or was never seen.
"""

import functools
import itertools
import json
import math
import pathlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from numbers import Integral, Real

from rnnkit._io import check_save_path, refuse_empty, write_text
from rnnkit.errors import RnnkitError, count_error, said, switch

UNK = "<unk>"
_WORD_AND_PUNCT = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def refuse_surrogate_pairs(tokens) -> None:
    """A token holding a high surrogate before a low one ('\\ud83d\\ude00', text decoded with errors='surrogatepass')
    is written by JSON as two escapes, which it reads back as one character ('😀'): another token in silence (or a
    load refused where both were kept). One line instead."""
    pair = next((t for t in tokens if isinstance(t, str) and _SURROGATE_PAIR.search(t)), None)
    if pair is not None:
        raise RnnkitError(f"cannot save the token {pair!r}: JSON reads its surrogate pair back as one character, "
                          "another token (text decoded with errors='surrogatepass'?); decode the text as UTF-8 or "
                          "UTF-16 first")  # fmt: skip


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def char_tokenize(text: str) -> list[str]:
    """Every character is a token, whitespace included."""
    return list(text)


@functools.cache
def _word_and_punct_marks() -> re.Pattern:
    """_WORD_AND_PUNCT with the combining marks (Unicode category M: Devanagari's vowel signs and virama, an accent
    of decomposed text) inside words, which \\w lacks: 'हिन्दी' was split into 'ह', 'ि', 'न', ... (built on first use:
    the marks lie in U+0300..U+1FFFF and U+E0100..U+E01EF)."""
    ranges = []  # as ranges a-b: a class of 2,400 single characters matched 4-5 times slower
    for c in itertools.chain(range(0x300, 0x20000), range(0xE0000, 0xE1000)):
        if unicodedata.category(chr(c))[0] == "M":
            if ranges and ranges[-1][1] == c - 1:
                ranges[-1][1] = c
            else:
                ranges.append([c, c])
    w = "[\\w" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]"
    return re.compile(rf"\w{w}*(?:'\w{w}*)?|[^\w\s]")


def word_tokenize(text: str, lower: bool = False, punctuation: bool = False) -> list[str]:
    """Split on whitespace; with `punctuation`, also split punctuation marks off as their own tokens (a word's
    combining marks stay in it)."""
    if lower:
        text = text.lower()
    if not punctuation:
        return text.split()
    return (_WORD_AND_PUNCT if text.isascii() else _word_and_punct_marks()).findall(text)


def tokenize(text: str, level: str = "word", lower: bool = False, punctuation: bool = False) -> list[str]:
    """Tokenise at `level` "char" or "word"; `lower` lower-cases at either level."""
    if level == "char":  # (lower was ignored here, in silence: 'T' stayed 'T')
        return char_tokenize(text.lower() if lower else text)
    if level == "word":
        return word_tokenize(text, lower=lower, punctuation=punctuation)
    raise RnnkitError(f"unknown token level {level!r}; use 'char' or 'word'")


def _plain(count):
    """A count as a Python int or float, which JSON writes (numpy's int64 or float32 it does not)."""
    return int(count) if isinstance(count, Integral) else float(count)


class Vocabulary:
    """Token <-> id. Ids are assigned by descending count (ties: first seen), after `<unk>` = 0.

    Args:
        counts: token -> count; tokens with count < min_freq are dropped.
        min_freq: the smallest count a token needs to get its own id.
        max_size: at most this many ids in all (`<unk>` included); None for no limit.
        unk: include the `<unk>` token (id 0). Without it, encoding an unknown token is an error.
    """

    def __init__(self, counts: Counter, min_freq: int = 1, max_size: int | None = None, unk: bool = True):
        if not isinstance(counts, Mapping):
            raise RnnkitError(
                f"Vocabulary takes token counts (a Counter), not a {type(counts).__name__}: "
                "to count a list of tokens use Vocabulary.build(tokens)"
            )
        # ("3" failed inside most_common, "'<' not supported"; NaN or -2 gave <unk> a count of nan or -2 in silence)
        bad = next(
            (
                t
                for t, c in counts.items()
                if isinstance(c, bool) or not isinstance(c, Real) or not 0 <= c < math.inf
            ),
            None,
        )
        if bad is not None:
            raise RnnkitError(f"counts must be numbers >= 0 (how often each token occurs), got {counts[bad]!r} for "
                              f"{bad!r}")  # fmt: skip
        # (NaN or inf kept no token, in silence: a vocabulary of <unk> alone; "2" failed with "'<' not supported")
        if isinstance(min_freq, bool) or not isinstance(min_freq, Real) or not 1 <= min_freq < float("inf"):
            raise RnnkitError(
                f"min_freq must be a number >= 1 (the count a token needs), got {said(min_freq)}"
            )
        # unk=-1 or 2 built counts one id off the tokens (<unk>'s written over a token's), "False" an <unk>
        switch("unk", unk)
        unk = bool(unk)
        # a Counter's most_common (a plain dict of counts has none); numpy's int64 or float32 counts are no JSON numbers
        kept = [(t, _plain(c)) for t, c in Counter(counts).most_common()
                if c >= min_freq and not (unk and t == UNK)]  # fmt: skip
        if max_size is not None:
            if isinstance(max_size, bool) or not isinstance(max_size, Integral) or max_size < 1:
                # 0 or -1 gave a vocabulary of one id (<unk>), more than asked for; 2.5 a slicing TypeError
                raise count_error(
                    "max_size (ids in all, <unk> included)", max_size, " (or None for no limit)"
                )
            kept = kept[: max_size - int(unk)]
        self.unk = unk
        self.itos = ([UNK] if unk else []) + [t for t, _ in kept]
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.counts = [0] * int(unk) + [c for _, c in kept]
        if unk:  # <unk> counts every occurrence of the tokens it replaces
            total = sum(counts.values())
            self.counts[0] = _plain(total) - sum(self.counts)

    @classmethod
    def build(cls, tokens: Iterable[str], **kwargs) -> "Vocabulary":
        """Count `tokens` and keep those that pass min_freq / max_size."""
        return cls(Counter(tokens), **kwargs)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The tokens (in order, each once) that have no id of their own."""
        return list(dict.fromkeys(t for t in tokens if t not in self.stoi))

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; unknown tokens become `<unk>` (or raise when the vocabulary has none).

        A str is a sequence of characters: only a vocabulary of single characters takes one.
        """
        if isinstance(tokens, str) and not all(len(t) == 1 for t in self.itos if t != UNK):
            raise RnnkitError(
                "Vocabulary.encode takes a list of tokens, not a str: split the text first (text.split())"
            )
        tokens = list(tokens)
        if not self.unk:
            missing = self.unknown(tokens)
            if missing:
                raise RnnkitError(
                    f"unknown tokens {missing[:5]} not in the vocabulary; retrain or use unk=True"
                )
            return [self.stoi[t] for t in tokens]
        return [self.stoi.get(t, 0) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The tokens of a sequence of ids (a list, a 1-D array or tensor); one id alone (an int, a 0-d tensor or a
        numpy scalar, which failed with "'int' object is not iterable") gives a list of one."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids  # numpy or torch: plain ints
        ids = [ids] if isinstance(ids, Integral) else list(ids)
        bad = [
            i for i in ids if isinstance(i, bool) or not (isinstance(i, Integral) and 0 <= i < len(self.itos))
        ]
        if bad:
            raise RnnkitError(
                f"ids {bad[:5]} are not token ids of this vocabulary: give whole numbers in 0..{len(self.itos) - 1}"
            )
        return [self.itos[i] for i in ids]

    def to_dict(self) -> dict:
        return {"itos": self.itos, "counts": self.counts, "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        """The vocabulary of `to_dict`; a ValueError names what a damaged one holds instead."""
        itos, counts, unk = d["itos"], d["counts"], d["unk"]
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):  # "abc": tokens a, b, c
            raise ValueError(f"its itos must be a list of tokens (str), got {itos!r:.60}")
        if not isinstance(counts, list) or len(counts) != len(itos):
            raise ValueError(
                f"its counts must be a list of {len(itos)} numbers, one per token, got {counts!r:.60}"
            )
        if not isinstance(unk, bool) or unk and itos[:1] != [UNK]:  # unknown tokens were read as token 0
            raise ValueError(f"its unk must be true (with {UNK!r} as token 0) or false, got {unk!r}")
        seen = set()
        twice = next((t for t in itos if t in seen or seen.add(t)), None)
        if twice is not None:  # stoi kept the last id, decode(encode(t)) gave t from the first
            raise ValueError(f"the token {twice!r} is in it twice")
        vocab = cls.__new__(cls)
        vocab.itos, vocab.counts, vocab.unk = list(d["itos"]), list(d["counts"]), bool(d["unk"])
        vocab.stoi = {t: i for i, t in enumerate(vocab.itos)}
        return vocab

    def save(self, path) -> None:
        others = [t for t in self.itos if not isinstance(t, str)]
        if others:  # (written, it made a file load refuses)
            other = others[0]
            raise RnnkitError(f"cannot save a vocabulary of tokens other than str (such as {other!r}, a "
                              f"{type(other).__name__}): its file holds str tokens; build it of str tokens")  # fmt: skip
        check_save_path(path)
        text = json.dumps(self.to_dict(), ensure_ascii=False)
        if not text.isascii() and re.search("[\ud800-\udfff]", text):
            # a lone surrogate (U+D800..U+DFFF), which UTF-8 has none of: as JSON's \ud800 (ensure_ascii), which
            # load reads back as the same token (a pair of them it doesn't: refused)
            refuse_surrogate_pairs(self.itos)
            text = json.dumps(self.to_dict())
        write_text(path, text)

    @classmethod
    def load(cls, path) -> "Vocabulary":
        refuse_empty(path, "a file that Vocabulary.save wrote")
        try:
            # (utf-8-sig: a byte-order mark an editor wrote failed as 'Unexpected UTF-8 BOM', as JSON it is not)
            return cls.from_dict(json.loads(pathlib.Path(path).read_text(encoding="utf-8-sig")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RnnkitError(f"cannot read vocabulary {path}: {e}; save one with Vocabulary.save") from None
