"""n-gram language models of any order, with add-k or interpolated (modified) Kneser-Ney smoothing.

An n-gram model predicts token w from the n-1 tokens before it, h = w_{i-n+1} .. w_{i-1}:

    add-k:   P(w | h) = (c(h w) + k) / (c(h) + k V)

    interpolated Kneser-Ney (Chen & Goodman 1998), recursively down to the uniform distribution:
             P_m(w | h) = max(c_m(h w) - D_m, 0) / c_m(h•)  +  D_m N1+(h•) / c_m(h•) · P_{m-1}(w | h')
             P_0(w)     = 1 / V
    where h' drops the first token of h, c_n are raw counts, c_m (m < n) are continuation counts
    N1+(•h w) (how many distinct tokens precede h w; 1 for the m-gram the text begins with if none does),
    c_m(h•) = Σ_w c_m(h w), N1+(h•) = #{w: c_m(h w) > 0}, and D_m = n1 / (n1 + 2 n2) from the
    counts-of-counts, kept within [0.05, 0.95] (or a fixed discount). A context never seen backs off entirely: P_m(w | h) = P_{m-1}(w | h').
    modified Kneser-Ney (Chen & Goodman 1998): D depends on the count, D1, D2 or D3+, and the weight of
    P_{m-1} becomes Σ_w D(c_m(h w)) / c_m(h•) so that P_m still sums to 1.

The text is one stream (words: each line ends in `<eos>`); the first tokens use the shorter history
they have, a training text's counted after a line end where it holds one (it starts a line, as the CLI reads
every text). A literal `<eos>` in a word text (`<EOS>` with lower) is that token, a line end, and is written
back as a newline; a literal `<unk>` is the unknown word (as PTB's text writes it). Counting is vectorised as a trie in numpy: the m-gram ending at position i gets the id
of the pair (id of its (m-1)-gram prefix, last token), found by sorting the keys prefix_id · V + w.
"""

import functools
import itertools
import json
import math
import numbers
import os
import pathlib
import re
import zipfile
import zlib
from collections import Counter, defaultdict

import numpy as np
from tqdm import tqdm

from rnnkit._io import atomic_open, bar_options, check_save_path, is_zip, refuse_empty
from rnnkit.errors import RnnkitError, check_seed, count_error, finite_real, fits_int64, said, switch
from rnnkit.text.lmscore import LMScore, pick_next
from rnnkit.text.vocab import UNK, Vocabulary, refuse_surrogate_pairs, tokenize

EOS = "<eos>"
OPTIONS = ("n", "smoothing", "k", "discount", "level", "lower", "min_freq")  # saved in every model's meta
SCORE_CHUNK = 1 << 18  # tokens scored at a time where score() draws a bar (about 0.1 s each)
# characters of a long line split into words at a time, cut at white space (a text of one line, as text8 is, was one
# list of all its words)
WORD_PIECE = 1 << 20
# the least memory an n-gram of a fitted model takes: its key, count, suffix and continuation count, int64 each (55
# bytes measured with the per-context totals and the counting's temporaries)
NGRAM_BYTES = 32
# what np.load and reading the arrays raise on a file that is not one of our models (zipfile's NotImplementedError
# and RuntimeError: a byte of a member's entry changed to another compression method, or to 'encrypted')
_NOT_A_MODEL = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def text_tokens(text: str, level: str, lower: bool = False) -> list[str]:
    """Characters, or words with `<eos>` for each newline (an unfinished last line gets none; a word `<eos>` in
    the text is the same token, a line end); lower-cased with `lower` at either level (characters were left as
    they were: --lower had no effect on a char model)."""
    # (a list of lines was a char model of whole lines, bytes one of byte values)
    if not isinstance(text, str):
        fix = {
            list: "; join its lines first: '\\n'.join(lines)",
            bytes: "; decode it first: data.decode('utf-8')",
        }
        raise RnnkitError(f"text must be a str, got {type(text).__name__}{fix.get(type(text), '')}")
    if level == "char":
        return list(text.lower() if lower else text)
    lines = text.split("\n")
    tokens = [t for line in lines[:-1] for t in [*tokenize(line, "word", lower=lower), EOS]]
    return tokens + tokenize(lines[-1], "word", lower=lower)


def _char_ids(text: str, vocab: Vocabulary, dtype=np.int32) -> np.ndarray:
    """The ids (int32, or dtype) of text's characters, looked up by code point (UTF-32) in numpy; a character with no
    id of its own is <unk>'s 0. list(text) took 8 bytes a character and the list of ids 8 more (36 past id 255)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    table = np.zeros(int(codes.max(initial=0)) + 1, dtype)
    for t, i in vocab.stoi.items():
        if len(t) == 1 and ord(t) < len(table):
            table[ord(t)] = i
    return table[codes]


_SPACE = re.compile(r"\s")  # (str.split's white space: \s is str.isspace, character for character)


def _word_lines(text: str, lower: bool = False):
    """text_tokens(text, "word", lower) a line at a time: each line's words, with <eos> where a newline ends it, found
    in place (not text.split("\n")'s list of lines); a line longer than WORD_PIECE characters in pieces cut at white
    space (words of their own either way, and lower-cased alike)."""
    start, size = 0, len(text)
    while start <= size:
        end = text.find("\n", start)
        end = size if end < 0 else end
        while end - start > WORD_PIECE and (cut := _SPACE.search(text, start + WORD_PIECE, end)):
            yield tokenize(text[start : cut.start()], "word", lower=lower)
            start = cut.start()
        tokens = tokenize(text[start:end], "word", lower=lower)
        if end < size:
            tokens.append(EOS)
        yield tokens
        start = end + 1


def _word_ids(text: str, lower: bool, ids_of, dtype) -> np.ndarray:
    """The ids of text_tokens(text, "word", lower) in one array (dtype), each line's words turned into ids by
    ids_of(tokens) as the line is read: the list of the text's words took ~60 bytes a word, its ids 8 to 36 more."""
    return np.fromiter(itertools.chain.from_iterable(map(ids_of, _word_lines(text, lower))), dtype)


def _first_seen(text: str, lower: bool) -> tuple[np.ndarray, Counter]:
    """A word text's tokens numbered as first seen (int32), and Counter(text_tokens(text, "word", lower)): the same
    counts in the same order (a token's first occurrence), from a bincount of the numbers."""
    number = defaultdict(itertools.count().__next__)  # token -> its number, given where it is first seen
    ids = _word_ids(text, lower, functools.partial(map, number.__getitem__), np.int32)
    return ids, Counter(dict(zip(number, np.bincount(ids, minlength=len(number)).tolist())))


def _keys(x: np.ndarray, prev_gram, V: int) -> np.ndarray:
    """The keys of the m-grams ending at positions m-1 .. len(x)-1: (id of the (m-1)-gram before x[i]) · V + x[i]
    (x itself for m = 1); prev_gram: the ids of the (m-1)-grams ending at m-2 .. len(x)-1."""
    if prev_gram is None:
        return x.astype(np.int64)
    key = prev_gram[:-1].astype(np.int64)
    key *= V
    key += x[len(x) - len(key) :]
    return key


def _unique(key: np.ndarray, gid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(key, return_inverse=True, return_counts=True) (the sorted keys, their counts, each key's index in
    them, as `gid`), in about 17 bytes a key where np.unique took 41."""
    perm = np.argsort(key)
    ordered = key[perm]
    size = len(key)
    del key  # (the caller's: passed as _unique(_keys(...)))
    first = np.empty(size, bool)  # where a new key starts in the sorted ones
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    keys = ordered[first]
    del ordered
    starts = np.flatnonzero(first)
    count = np.diff(starts, append=size).astype(np.int64)
    ids = np.cumsum(first, dtype=gid)
    ids -= 1
    del first
    inverse = np.empty(size, gid)
    inverse[perm] = ids
    return keys, count, inverse


def _memory() -> int | None:
    """This machine's memory and swap in bytes (None where its memory can't be read): the counts of the lower orders
    are swapped out while the higher ones are counted, so a fit that fits in the two together runs to its end (the
    memory alone refused such fits, which ran before)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + _swap()
    except (ValueError, OSError, AttributeError):
        return None


def _swap(meminfo="/proc/meminfo") -> int:
    """The swap space in bytes, Linux's SwapTotal (0 where there is none, or no /proc/meminfo)."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    return int(line.split()[1]) * 1024  # (kB)
    except (OSError, ValueError, IndexError):
        pass
    return 0


_FITTED = ("keys", "count", "cont", "total", "mass", "raw_total", "D")  # what fit_ids sets (with fit's vocab)


def _least(m: int, top: int, k: int, held: int) -> int:
    """The fewest n-grams of orders 1..top, where orders 1..m hold `held` and order m `k` distinct ones: an m-gram
    that occurs past the text's first m tokens extends to an (m+1)-gram, so each order holds at most one distinct
    n-gram fewer than the one below (once every m-gram is distinct, each higher order as many as the text's tokens)."""
    rest = top - m
    return held + (rest * k - rest * (rest + 1) // 2 if rest < k else k * (k - 1) // 2)


def _fits(m, top, k, held) -> bool:
    total = _memory()
    return total is None or NGRAM_BYTES * _least(m, top, k, held) <= total


def _too_many(n, m, top, k, held, tokens):
    """n so large that the n-grams of its orders can't fit in memory: -n 1000 of Tiny Shakespeare (1.1 MB) grew past
    8 GB in 131 s (every order past ~10 holds about as many n-grams as the text has characters: memory ~ n x the
    text's length), and ran on until the allocator or the system's out-of-memory killer stopped it."""

    def size(b):
        return f"{b / 2**30:,.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.1f} MiB"

    need, total = NGRAM_BYTES * _least(m, top, k, held), _memory()
    raise RnnkitError(f"n = {n} (the n-gram order) counts orders up to {top:,} of a text of {tokens:,} tokens, at "
                      f"least {_least(m, top, k, held):,} n-grams ({k:,} at order {m:,} alone): {size(need)} or "
                      f"more, and this machine has {size(total)}; give a smaller n")  # fmt: skip


def _number(x) -> bool:
    """A real number but a bool ('0.5', a config file's string, failed in numpy's isfinite; True ran as 1)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _options(meta: dict) -> dict:
    """A saved model's options as NGramLM takes them: every file holds k, and one saved by an older rnnkit may hold a
    discount its smoothing did not use (ignored then: add-k's), or one discount with modified-kneser-ney, which
    made it kneser-ney's model, bit for bit (read so)."""
    options = {k: v for k, v in meta.items() if k != "vocab"}
    if options["smoothing"] != "add-k":
        options["k"] = None
    elif options["discount"] is not None:
        options["discount"] = None
    if options["smoothing"] == "modified-kneser-ney" and options["discount"] is not None:
        options["smoothing"] = "kneser-ney"
    return options


class NGramLM:
    """An n-gram language model over characters or words.

    Args:
        n: order (1 = unigram).
        smoothing: "kneser-ney", "modified-kneser-ney" or "add-k".
        k: the add-k pseudo-count (add-k only; None: 1).
        discount: a fixed discount D for every order (kneser-ney only); None estimates D_m = n1 / (n1 + 2 n2).
        level: "char" or "word"; lower: lower-case the text; min_freq: rarer tokens become `<unk>` (a word
            model's `<eos>` keeps its id: the line end is no rare word).
    """

    def __init__(
        self, n: int, smoothing="kneser-ney", k=None, discount=None, level="char", lower=False, min_freq=1
    ):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise count_error("n (the n-gram order)", n)
        # (2**64 was taken and fitted, then scoring failed in numpy: "Python int too large to convert to C long")
        fits_int64("n (the n-gram order)", n)
        if smoothing not in ("kneser-ney", "modified-kneser-ney", "add-k"):
            raise RnnkitError(
                f"unknown smoothing {smoothing!r}; use kneser-ney, modified-kneser-ney or add-k"
            )
        # options the smoothing does not use were ignored in silence (modified-kneser-ney with one discount for every
        # count is kneser-ney's model, bit for bit), as the CLI refuses them
        if smoothing != "add-k" and k is not None:
            raise RnnkitError(
                f"k is the add-k pseudo-count, not used by smoothing={smoothing!r}; "
                "leave it out or use smoothing='add-k'"
            )
        if smoothing == "add-k" and discount is not None:
            raise RnnkitError(
                "discount is for Kneser-Ney smoothing, not smoothing='add-k'; leave it out or use k"
            )
        if smoothing == "modified-kneser-ney" and discount is not None:
            raise RnnkitError(
                "discount fixes one discount for every count, which makes modified-kneser-ney plain kneser-ney; "
                "give smoothing='kneser-ney' with it, or leave it out to estimate D1, D2 and D3+"
            )
        k = 1.0 if k is None else k
        # (a string failed with "'<' not supported", True ran as 1; lower="False", a config file's string, lower-cased)
        if isinstance(k, bool) or not isinstance(k, numbers.Real):
            raise RnnkitError(f"k (add-k's pseudo-count) must be a number, got {said(k)}")
        if not (finite_real(k) and k > 0) and smoothing == "add-k":  # (10**400: past float)
            raise RnnkitError(f"add-k needs a finite k > 0, got {said(k, '')}")
        # (a Real > 0 below float's least, Fraction(1, 10**400), made add-0 of float(k))
        if smoothing == "add-k" and float(k) == 0:
            raise RnnkitError(f"add-k's k {said(k)} is too small: it is 0 as a float; give 1e-300 or more")
        if discount is not None and (isinstance(discount, bool) or not isinstance(discount, numbers.Real)):
            raise RnnkitError(
                f"the Kneser-Ney discount must be a number between 0 and 1, got {said(discount)}"
            )
        if discount is not None and not 0 <= discount <= 1:  # D > 1 or D < 0: P no longer sums to 1
            raise RnnkitError(
                f"the Kneser-Ney discount must be between 0 and 1, got {said(discount, '')}; "
                "leave it out to estimate it"
            )
        if level not in ("char", "word"):
            raise RnnkitError(f"unknown token level {level!r}; use 'char' or 'word'")
        switch("lower", lower)
        # said here, not at fit (NaN: a model of <unk> alone), as Vocabulary says it
        if isinstance(min_freq, bool) or not isinstance(min_freq, numbers.Real) or not 1 <= min_freq < np.inf:
            raise RnnkitError(
                f"min_freq must be a number >= 1 (the count a token needs), got {said(min_freq)}"
            )
        # plain Python numbers: save() writes them as JSON, which has no numpy int64, float32 or bool_
        self.n, self.smoothing, self.k = int(n), smoothing, float(k)
        self.discount = None if discount is None else float(discount)
        self.level, self.lower = level, bool(lower)
        self.min_freq = int(min_freq) if isinstance(min_freq, numbers.Integral) else float(min_freq)

    # ---- training ---------------------------------------------------------------------------------
    def fit(self, text: str, progress: bool = False) -> "NGramLM":
        if not isinstance(text, str):
            text_tokens(text, self.level)  # (its error)
        if self.level == "char":  # counted and encoded as the str it is: list(text) took 8 bytes a character
            tokens = text.lower() if self.lower else text
            counts = Counter(tokens)
        else:  # numbered line by line as read, and counted from the numbers: the list of words was ~60 bytes a word
            first, counts = _first_seen(text, self.lower)
            tokens = [first]  # (taken by _ids: not held here while fit_ids counts)
            del first
        if not counts:
            raise RnnkitError("empty training text; give a corpus with at least one token")
        # (put back with the counts where fit_ids refuses the text: a model fitted before read its old counts
        # through the new text's ids, another vocabulary, and scored wrong numbers in silence)
        kept = {"vocab": vars(self)["vocab"]} if "vocab" in vars(self) else {}
        self.vocab = Vocabulary(counts, min_freq=self.min_freq)
        if EOS in counts and EOS not in self.vocab:  # the line end is no rare word (it was scored as <unk>)
            d = self.vocab.to_dict()
            d["itos"].append(EOS)
            d["counts"] = [d["counts"][0] - counts[EOS], *d["counts"][1:], counts[EOS]]
            self.vocab = Vocabulary.from_dict(d)
        try:
            # (not the list of ids Vocabulary.encode makes: 36 bytes a word past id 255; passed, not kept here, so
            # that fit_ids frees them once it has put the line end before them)
            return self.fit_ids(self._ids(tokens, counts), progress)
        except BaseException:  # (fit_ids has put its counts back: n too large for memory, a MemoryError, ^C)
            self.__dict__.pop("vocab", None)
            self.__dict__.update(kept)
            raise

    def _ids(self, tokens, counts: Counter) -> np.ndarray:
        """fit's ids (int32) of its tokens: a str of characters, or [the words numbered as first seen] (taken out of
        the list), the numbers of the tokens of counts (_first_seen's) in its order."""
        if isinstance(tokens, str):
            return _char_ids(tokens, self.vocab)
        first = tokens.pop()
        table = np.fromiter(map(self.vocab.stoi.get, counts, itertools.repeat(0)), np.int32, len(counts))
        return table[first]

    def fit_ids(self, x: np.ndarray, progress: bool = False) -> "NGramLM":
        """Count every m-gram, m = 1..n, of the id stream x (ids < len(self.vocab)); `self.vocab` must be set
        (as `fit` sets it from a text). x starts a line: where it holds the line end (<eos>, a char model's
        '\n'), its first m-grams are counted after one, as score, sample and complete read a text after one (the
        CLI's default), the line end before it not counted itself. They were counted after nothing, and with
        discount 0 a text that begins as the training text does, read after a line end, was at log p = -inf."""
        if getattr(self, "vocab", None) is None:
            raise RnnkitError("fit_ids counts ids of a vocabulary: set model.vocab first (or call fit(text))")
        x = self._check_ids(x, "fit_ids's x", cast=False)  # (counted in its own dtype: int32 from fit)
        if not len(x):  # (numpy's IndexError deep in the counting, the model left half counted)
            raise RnnkitError("fit_ids's x holds no token ids; give at least one (as fit needs a token)")
        line_end = EOS if self.level == "word" else "\n"
        after = self.vocab.stoi.get(line_end) if line_end in self.vocab else None
        if after is not None and np.any(x == after):  # (a model that knows no line end reads after nothing)
            x = np.concatenate([np.array([after], x.dtype), x])
        else:
            after = None
        # (a fit's counts and statistics, put back where _too_many refuses n, and where the counting fails, a
        # MemoryError past that bound, the fewest n-grams, or is interrupted: a model fitted before still scores; it
        # was left half counted, score's IndexError)
        before = {a: vars(self)[a] for a in _FITTED if a in vars(self)}
        try:
            return self._count(x, after, progress)
        except BaseException:
            for a in _FITTED:
                setattr(self, a, before[a]) if a in before else self.__dict__.pop(a, None)
            raise

    def _count(self, x: np.ndarray, after, progress: bool) -> "NGramLM":
        """fit_ids' counting of x (after: the line end's id x starts with, or None) and its statistics."""
        V = len(self.vocab)
        self.keys, self.count, self.cont = [None], [None], [None]
        if x.dtype == np.uint64:  # (uint64 plus the int64 keys is float64)
            x = x.astype(np.int64)
        gid = np.int32 if len(x) < 2**31 else np.int64  # an m-gram's id is below len(x)
        prev_gram = None  # ids of the (m-1)-grams ending at positions m-2 .. len(x)-1
        bar = dict(desc="counting n-grams", unit=" orders", **bar_options(progress))
        # no m-grams past m = len(x) + 1, the first order with none: the orders past it are not counted (each cost
        # ~ len(x), and a model file's arrays: -n 1000000 of a 2,400-character text ran for minutes)
        top, held = min(self.n, len(x) + 1), 0
        for _m in tqdm(range(1, top + 1), **bar):
            # the m-grams end at positions i = m-1 .. len(x)-1: key (id of the (m-1)-gram ending at i-1) · V + x[i],
            # a slice, not a full-length context array and mask (an order's temporaries were ~90 bytes a token)
            keys, cnt, gram = _unique(_keys(x, prev_gram, V), gid)  # (the keys freed in _unique once sorted)
            suffix = np.zeros(len(keys), np.int64)  # the (m-1)-gram that drops the first token
            if prev_gram is not None:
                suffix[gram] = prev_gram[1:]
            held += len(keys)
            if not _fits(_m, top, len(keys), held):
                _too_many(self.n, _m, top, len(keys), held, len(x))
            self.keys.append(keys)
            self.count.append(cnt)
            if _m == 1 and after is not None:  # x's history, not a token of it (its unigram key is its id)
                self.count[1][np.searchsorted(self.keys[1], after)] -= 1
            if _m > 1:  # N1+(• g) of order m-1 now, its suffixes not kept for every order
                self._continuation(_m - 1, suffix)
            prev_gram = gram
        self.cont.append(self.count[-1])
        self._statistics()
        return self

    def _continuation(self, m: int, suffix: np.ndarray) -> None:
        """cont[m], N1+(• g): distinct (m+1)-grams whose suffix is g (suffix: each (m+1)-gram's)."""
        cont = np.bincount(suffix, minlength=len(self.keys[m]))
        # the m-gram the text begins with, if nowhere else, has no token before it: its raw count, 1 (it
        # had 0, and P = 0 with discount 0: the training text's first token or n-gram at log p = -inf)
        cont = np.where(cont > 0, cont, self.count[m])
        # a text shorter than n tokens has no (m+1)-grams: order m is its top order, with raw counts
        self.cont.append(cont if len(suffix) else self.count[m])

    def _statistics(self) -> None:
        """Per order: context totals c(h•), the discounted mass Σ_w D(c(h w)) of each context, discounts."""
        V = len(self.vocab)
        self.total, self.mass, self.raw_total, self.D = [None], [None], [None], [None]
        for m in range(1, self._orders() + 1):
            c = self.cont[m]
            h = self.keys[m] // V
            size = 1 if m == 1 else len(self.keys[m - 1])
            self.D.append(self._discounts(c))
            self.total.append(np.bincount(h, weights=c, minlength=size))
            self.mass.append(np.bincount(h, weights=self.D[m][np.minimum(c, 3)], minlength=size))
            self.raw_total.append(np.bincount(h, weights=self.count[m], minlength=size))

    def _check_counts(self) -> None:
        """A ValueError unless the arrays are as fit_ids counts them: per order m, the m-grams' keys (context id · V
        + token) increasing and below (number of (m-1)-grams) · V, their counts >= 1 and continuation counts >= 0,
        all whole numbers of one length. Keys out of order or range (a file made by hand, or another program's)
        were looked up wrong in silence, and float or negative arrays failed inside numpy."""
        V, top = len(self.vocab), self._orders()
        if top < self.n and len(self.keys[top]):  # orders left out past one with no m-grams only
            raise ValueError(f"it lacks the {top + 1}-gram arrays")
        for m in range(1, top + 1):
            keys, count, cont = self.keys[m], self.count[m], self.cont[m]
            size = 1 if m == 1 else len(self.keys[m - 1])
            if not (
                all(a.ndim == 1 and a.dtype.kind in "iu" and len(a) == len(keys) for a in (keys, count, cont))
                and (len(keys) == 0 or keys[0] >= 0 and keys[-1] < size * V and np.all(np.diff(keys) > 0))
                and np.all(count >= 1)
                and np.all(cont >= 0)
            ):
                raise ValueError(f"its {m}-gram arrays are not those of a counted text")
            self.keys[m], self.count[m] = keys.astype(np.int64), count.astype(np.int64)
            self.cont[m] = self.count[m] if m == top else cont.astype(np.int64)

    def _older_counts(self) -> bool:
        """Bring the counts of a file an older rnnkit wrote to fit_ids' now (load); False where they can't be. Before
        6807c96 the m-gram the text begins with, if preceded nowhere, had continuation count 0 (its raw count, 1,
        since): set back exactly. Before 3615df4 a text holding a line end was counted from its start after nothing,
        not after one (one m-gram fewer an order: Σ c(2-grams) = Σ c(1-grams) - 1, where fit_ids' are equal): with
        --discount 0 its first words were at log p = -inf where a model trained now gives them P > 0."""
        for m in range(1, self._orders()):
            self.cont[m] = np.where(self.cont[m] > 0, self.cont[m], self.count[m])
        line_end = self.vocab.stoi.get(EOS if self.level == "word" else "\n")
        if line_end is None or self._orders() < 2 or self._lookup(1, np.array(0), np.array(line_end)) < 0:
            return True  # (a text of no line end: counted so then as now)
        return self.count[2].sum() == self.count[1].sum()

    def _discounts(self, c: np.ndarray) -> np.ndarray:
        """D(c) for c = 0, 1, 2, 3+ from the counts-of-counts n_r = #{m-grams with count r}.

        Kneser-Ney: D = n1 / (n1 + 2 n2) for every c > 0. Modified (Chen & Goodman 1998), with
        Y = n1 / (n1 + 2 n2): D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3.
        Each is kept within [0.05, c - 0.05] (0.95, 1.95, 2.95 at most): D = 0 would leave no mass to back off
        with, D = c none to the m-gram itself, as counts-of-counts of a small or odd text give (n2 = 0: D = 1);
        Y is 0.5 where n1 = n2 = 0. On PTB's 5-grams it moved D5 from 0.9616 to 0.95.
        """
        if self.discount is not None:
            return np.array([0.0, *[float(self.discount)] * 3])
        n = [np.sum(c == r) for r in range(5)]
        Y = n[1] / (n[1] + 2 * n[2]) if n[1] + n[2] > 0 else 0.5
        if self.smoothing != "modified-kneser-ney":
            return np.array([0.0, *[float(np.clip(Y, 0.05, 0.95))] * 3])
        D = [r - (r + 1) * Y * n[r + 1] / n[r] if n[r] > 0 else Y for r in (1, 2, 3)]
        return np.array([0.0, *(float(np.clip(d, 0.05, r)) for r, d in zip((0.95, 1.95, 2.95), D))])

    def _orders(self) -> int:
        """The orders counted: n, or fewer where the text has no m-grams (nor longer ones) past an order m, the
        last one counted (empty). The orders past it would back off to it, and so the same probabilities."""
        return len(self.keys) - 1

    def _fitted(self) -> None:
        """One RnnkitError unless the model has counted a text (fit, fit_ids or load)."""
        if getattr(self, "keys", None) is None or getattr(self, "vocab", None) is None:
            raise RnnkitError(
                "this n-gram model is not trained yet: call fit(text) first, or NGramLM.load a saved model"
            )

    # ---- probabilities ----------------------------------------------------------------------------
    def _lookup(self, m: int, h: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Id of the m-gram (context id h, token w), or -1 where it was never seen."""
        key = np.where(h >= 0, h * len(self.vocab) + w, -1)
        keys = self.keys[m]
        if len(keys) == 0:  # no m-gram at all: the training text had fewer than m tokens
            return np.full(key.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where((h >= 0) & (keys[pos] == key), pos, -1)

    def _lookup_all(self, m: int, h: np.ndarray, w: np.ndarray) -> np.ndarray:
        """_lookup of one context h (shape (1,)) with every token w = 0..V-1: the m-grams of h are the keys h · V .. h · V
        + V - 1, one block of the sorted keys, found with two binary searches (V of them, each step of a sample: 2.4
        ms a word of a PTB 5-gram, 12 ms with 57k words)."""
        V, keys = len(self.vocab), self.keys[m]
        g = np.full(len(w), -1, np.int64)
        if h[0] >= 0 and len(keys):
            lo, hi = np.searchsorted(keys, [h[0] * V, (h[0] + 1) * V])
            g[keys[lo:hi] - h[0] * V] = np.arange(lo, hi)
        return g

    def _contexts(self, x: np.ndarray) -> list[np.ndarray]:
        """ctx[m][i] = id of the (m-1)-gram x[i-m+1 : i] before position i, or -1 (m = 1..n)."""
        ctxs, ctx = [None], np.zeros(len(x), np.int64)
        for m in range(1, self._orders() + 1):
            ctxs.append(ctx)
            gram = self._lookup(m, ctx, x)
            ctx = np.concatenate([[-1], gram[:-1]])
        return ctxs

    def _prob(
        self, ctxs: list[np.ndarray], w: np.ndarray, order: np.ndarray, log: bool = False, lookup=None
    ) -> np.ndarray:
        """P(w | context) with context ids ctxs[m] (broadcast against w); `order` caps the history. log: log P, where
        add-k's quotient falls below float64's normal range (k = 5e-324: 0, log -inf) log(c + k) - log(c_h + k V).
        lookup: the m-grams' ids (self._lookup, or _lookup_all for one context and every token)."""
        lookup = lookup or self._lookup
        V = len(self.vocab)
        p = np.full(np.broadcast(ctxs[1], w).shape, 1.0 / V)  # P_0
        exact = np.full(p.shape, np.nan)  # add-k's log P where its quotient is not a normal float64
        for m in range(1, self._orders() + 1):
            if len(self.keys[m]) == 0:  # no m-grams (nor longer ones): back off to order m - 1
                break
            h, g = ctxs[m], lookup(m, ctxs[m], w)
            if self.smoothing == "add-k":
                c, c_h = self.count[m][g] * (g >= 0), self.raw_total[m][np.maximum(h, 0)] * (h >= 0)
                k = self.k  # (c + k) / (c_h + k V), divided by k where k V overflows (k = 1e308: 0/inf was 0)
                p_m = (c + k) / (c_h + k * V) if np.isfinite(k * V) else (c / k + 1) / (c_h / k + V)
                p = np.where(order == m, p_m, p)
                tiny = (order == m) & (p_m < np.finfo(np.float64).tiny)
                if log and tiny.any():
                    exact = np.where(tiny, np.log(c + k) - np.log(c_h + k * V), exact)
                continue
            c, total = self.cont[m][g] * (g >= 0), self.total[m][np.maximum(h, 0)]
            seen = (h >= 0) & (total > 0) & (m <= order)
            D, mass = self.D[m][np.minimum(c, 3)], self.mass[m][np.maximum(h, 0)]
            p_m = (np.maximum(c - D, 0) + mass * p) / np.where(seen, total, 1)
            p = np.where(seen, p_m, p)
        if not log:
            return p
        with np.errstate(divide="ignore"):  # p = 0 (no smoothing, an unseen n-gram): -inf, said by the caller
            return np.where(np.isnan(exact), np.log(p), exact)

    def log_probs(self, x: np.ndarray, history: np.ndarray | None = None) -> np.ndarray:
        """log P(x_i | x_<i) in nats for each i, each token seeing up to n-1 tokens back (history first)."""
        self._fitted()
        history = np.zeros(0, np.int64) if history is None else self._check_ids(history, "history")
        full = np.concatenate([history, self._check_ids(x, "x")]).astype(np.int64)
        order = np.minimum(np.arange(len(full)) + 1, self.n)
        return self._prob(self._contexts(full), full, order, log=True)[len(history) :]

    def _check_ids(self, ids, name: str, cast: bool = True) -> np.ndarray:
        """ids as a 1-D integer array, each a token id 0..V-1 (int64 with `cast`, else in their own integer type)."""
        ids, V = np.asarray(ids), len(self.vocab)
        if ids.ndim != 1 or ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= V):
            raise RnnkitError(
                f"{name} must be a 1-D array of integer token ids in 0..{V - 1} for this {V}-token vocabulary; "
                "turn text into ids with model.encode(text)"
            )
        if not cast:
            return ids if ids.size else ids.astype(np.int64)
        return ids.astype(np.int64, copy=False)  # uint64 ids plus int64 keys would be float64

    def next_distribution(self, history: list[int]) -> np.ndarray:
        """P(w | history) for every w in the vocabulary; it sums to 1."""
        self._fitted()
        history = self._check_ids(history, "history")
        h = np.array(history[-(self.n - 1) :] if self.n > 1 else [], np.int64)
        ctxs = self._contexts(np.concatenate([h, [0]]))
        ctxs = [None] + [c[-1:] for c in ctxs[1:]]
        order = np.array(min(len(h) + 1, self.n))
        return self._prob(ctxs, np.arange(len(self.vocab)), order, lookup=self._lookup_all)

    # ---- the language-model interface: score, complete, sample --------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """The ids (int64) of text's tokens, an unknown one <unk>'s 0: in numpy, as fit reads its text (the lists of
        tokens and of ids took ~90 bytes a word, 24 a character)."""
        self._fitted()
        return self._encode(text, np.int64)

    def _encode(self, text: str, dtype) -> np.ndarray:
        """encode(text) in dtype (score's int32: log_probs reads each part of it as int64)."""
        # (a text that is no str: its error; a vocabulary without <unk>: its error for unknown tokens)
        if not isinstance(text, str) or not self.vocab.unk:
            return np.array(self.vocab.encode(text_tokens(text, self.level, self.lower)), dtype)
        if self.level == "char":
            return _char_ids(text.lower() if self.lower else text, self.vocab, dtype)
        stoi, zeros = self.vocab.stoi, itertools.repeat(0)
        return _word_ids(text, self.lower, lambda tokens: map(stoi.get, tokens, zeros), dtype)

    def decode(self, ids) -> str:
        """Characters as they are; words one space apart, each <eos> a newline with no space beside it."""
        self._fitted()
        tokens = self.vocab.decode(ids)
        if self.level == "char":
            return "".join(tokens)
        parts = []
        for t in tokens:
            parts.append("\n" if t == EOS else t if not parts or parts[-1] == "\n" else " " + t)
        return "".join(parts)

    def score(self, text: str, context: str = "", progress: bool = False) -> LMScore:
        """log P(text | context) in nats over the tokens of `text`. `progress`: a bar on stderr of the tokens
        scored (`rnnkit ngram eval` of a big file), which reads them SCORE_CHUNK at a time, each with the n-1
        tokens before it: the same log p's, summed as one array."""
        self._fitted()
        ids = np.int32 if len(self.vocab) <= 2**31 else np.int64
        x = self._encode(text, ids)
        if len(x) == 0:
            raise RnnkitError("nothing to score: the text has no tokens")
        # (not context + x in one array, and each part's log p's written in place, not concatenated at the end: two
        # copies of the text's ids and of its log p's; the sum is of the same array)
        before, k = self._encode(context, ids), self.n - 1
        log_p = np.empty(len(x))
        bar = dict(desc="scoring", unit=f" {self.level}s", unit_scale=True, **bar_options(progress))
        with tqdm(total=len(x), **bar) as bar:
            for i in range(0, len(x), SCORE_CHUNK):
                # the k tokens before x[i] (all of them where there are fewer: as one call reads it)
                history = x[max(0, i - k) : i]
                if i < k:  # context's before x's
                    history = np.concatenate([before[max(0, len(before) + i - k) :], history])
                part = log_p[i : i + SCORE_CHUNK]
                part[:] = self.log_probs(x[i : i + SCORE_CHUNK], history)
                bar.update(len(part))
        return LMScore(float(log_p.sum()), len(x))

    def generate(self, prefix: str, length: int, alpha: float | None = 1.0, seed: int = 0) -> str:
        """Continue `prefix` by `length` tokens: sampled from p^α (deck 004), or greedy when alpha is None.

        `<unk>` is never written: it stands for every rare word at once, so it is masked out and the
        others renormalised (as word LMs usually sample); after a history that only rare tokens followed
        (all the mass on `<unk>`, with discount=0) the next token is drawn given a shorter history.
        """
        return "".join(self.iter_generate(prefix, length, alpha, seed))

    def iter_generate(self, prefix: str, length: int, alpha: float | None = 1.0, seed: int = 0):
        """generate()'s text one token at a time, as each is drawn ("".join of it is generate()'s): the CLI
        prints it as it comes, and memory stays flat (only the last N-1 ids are kept) however long it runs."""
        self._fitted()
        if not self.knows_tokens():
            raise RnnkitError(f"the model knows no {self.level} but <unk> ({self._why_no_tokens()})")
        if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
            raise RnnkitError(f"length must be an integer >= 0, got {said(length)}")
        if alpha is not None and not (finite_real(alpha) and alpha > 0):
            raise RnnkitError(
                f"alpha (the sharpening power) must be a number > 0, or None for greedy; got {said(alpha)}"
            )
        rng = np.random.default_rng(check_seed(seed, "seed"))
        # (as a float: a Fraction, a Real a float holds, made alpha·log p an array of objects, which np.exp can't take)
        given, alpha = alpha, None if alpha is None else float(alpha)
        if alpha == 0:  # a Real > 0 below float's least (Fraction(1, 10**400)): 0·(-inf) in pick_next, NaN
            raise RnnkitError(f"alpha {said(given)} is too small: it is 0 as a float; give 1e-300 or more, "
                              "or None for greedy")  # fmt: skip
        return self._drawn(list(self.encode(prefix)), int(length), alpha, rng)

    def _drawn(self, ids: list, length: int, alpha, rng):
        """The generator of iter_generate: each token's text as decode() writes it after the ones before."""
        n = self._orders() - 1  # the history the model reads
        ids, line_start = ids[max(len(ids) - n, 0) :] if n else [], True
        for _ in range(length):
            # k tokens of history; fewer where <unk> takes all the mass
            for k in range(n, -1, -1):
                p = self.next_distribution(ids[max(len(ids) - k, 0) :])
                if not self.vocab.unk or p.sum() > p[0]:
                    break
            if self.vocab.unk and p.sum() > p[0]:  # id 0 is <unk>
                p[0] = 0.0
                p = p / p.sum()
            c = pick_next(p, alpha, rng)
            ids.append(c)
            if len(ids) > n:
                del ids[0]
            token = self.vocab.itos[c]
            if self.level == "char":
                yield token
            else:  # as decode(): words one space apart, each <eos> a newline with no space beside it
                yield "\n" if token == EOS else token if line_start else " " + token
                line_start = token == EOS

    def knows_tokens(self) -> bool:
        """Whether the vocabulary has a token to write besides <unk> (and a word model's <eos>)."""
        return any(t not in (UNK, EOS) for t in self.vocab.itos)

    def _why_no_tokens(self) -> str:
        """The end of iter_generate's line for a model that knows no token, why and the fix: its min_freq dropped
        them, or its text held none (blank lines, or only the word <unk>: 'a lower --min-freq' at min_freq 1)."""
        if self.min_freq > 1 and self.vocab.counts[0] > 0:
            return f"every one was rarer than its min_freq {self.min_freq}); train it again with a lower --min-freq"
        return (f"its training text holds no {self.level} but line ends and <unk>); train it on a text with "
                f"{self.level}s")  # fmt: skip

    def complete(self, prefix: str, length: int) -> str:
        """Greedy completion: repeatedly append argmax_w P(w | prefix so far)."""
        return self.generate(prefix, length, alpha=None)

    def sample(self, length: int, prefix: str = "", temperature: float = 1.0, seed: int = 0) -> str:
        """`length` tokens after `prefix`, sampled from p^(1/temperature): 1 samples the model, lower is greedier."""
        if not (finite_real(temperature) and temperature > 0):
            raise RnnkitError(
                f"temperature must be a number > 0, got {said(temperature)}; for greedy text use complete()"
            )
        # alpha = 1/temperature, past float64 for a temperature that small: inf, said below (of a numpy scalar without
        # numpy's overflow warning; a Real > 0 that is 0 as a float, Fraction(1, 10**400), is no ZeroDivisionError)
        try:
            with np.errstate(over="ignore"):
                alpha = 1.0 / temperature
        except ZeroDivisionError:
            alpha = math.inf
        if not finite_real(alpha):  # (np.longdouble's 1/1e-320 is finite, a float's inf)
            raise RnnkitError(
                f"temperature {said(temperature, '')} is too small: 1/temperature is beyond float64; give 1e-300 or "
                "more, or use complete() for greedy text"
            )
        return self.generate(prefix, length, alpha=alpha, seed=seed)

    # ---- save / load ------------------------------------------------------------------------------
    def save(self, path) -> None:
        self._fitted()
        path = check_save_path(path)
        arrays = {
            f"{name}{m}": getattr(self, name)[m]
            for m in range(1, self._orders() + 1)
            for name in ("keys", "count")
        }
        arrays.update({f"cont{m}": self.cont[m] for m in range(1, self._orders())})
        meta = {k: getattr(self, k) for k in OPTIONS}
        meta["vocab"] = self.vocab.to_dict()
        refuse_surrogate_pairs(self.vocab.itos)  # (JSON's escapes: read back as one character, another token)
        with atomic_open(path, "wb") as f:  # a failed write leaves the old model as it was
            np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path) -> "NGramLM":
        refuse_empty(path, "a model file that NGramLM.save or `rnnkit ngram train --out` wrote (.npz)")
        path = pathlib.Path(path)
        if not path.exists() and path.with_name(path.name + ".npz").exists():  # saved without the ending
            path = path.with_name(path.name + ".npz")
        try:
            with open(path, "rb") as f:
                zipped = is_zip(f)
        except OSError as e:
            raise RnnkitError(
                f"cannot read n-gram model {path}: {e.strerror}; train one with `rnnkit ngram train`"
            ) from None
        not_a_model = f"{path} is not an rnnkit n-gram model (an .npz written by `rnnkit ngram train --out`)"
        if not zipped:  # np.load would read it as .npy, or offer to unpickle it
            raise RnnkitError(not_a_model)
        # every save writes every option: one missing took its default (a word model read as a char one)
        lacks = newer = []
        current = True
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                lacks = [k for k in (*OPTIONS, "vocab") if k not in meta] if isinstance(meta, dict) else []
                # an option every rnnkit so far saves none of: a newer one's (TypeError from cls(**meta) before)
                newer = [k for k in meta if k not in (*OPTIONS, "vocab")] if isinstance(meta, dict) else []
                if not lacks and not newer:
                    model = cls(**_options(meta))
                    model.vocab = Vocabulary.from_dict(meta["vocab"])
                    model.keys, model.count = [None], [None]
                    for m in range(1, model.n + 1):  # up to its first order with no m-grams (see _orders)
                        model.keys.append(z[f"keys{m}"])
                        model.count.append(z[f"count{m}"])
                        if not len(model.keys[m]) or f"keys{m + 1}" not in z.files:
                            break
                    top = model._orders()
                    model.cont = [None] + [z[f"cont{m}"] for m in range(1, top)] + [model.count[top]]
            if not lacks and not newer:
                model._check_counts()
                current = model._older_counts()
                model._statistics()
                # a char model saved with lower by an older rnnkit, whose lower left a char model's text as it was
                # (a character lower-casing changes in its vocabulary): scored so, not against text lower-cased
                if model.lower and model.level == "char" and any(t.lower() != t for t in model.vocab.itos):
                    model.lower = False
        except _NOT_A_MODEL:
            raise RnnkitError(not_a_model) from None
        if newer:
            raise RnnkitError(f"{path} is an n-gram model of a newer rnnkit (its meta holds "
                              f"{', '.join(map(repr, newer))}, which this one does not know); upgrade rnnkit to "
                              "read it")  # fmt: skip
        if lacks:
            raise RnnkitError(f"{not_a_model[:-1]}; its meta lacks {', '.join(lacks)})")
        if not current:
            raise RnnkitError(f"{path} was written by an older rnnkit, which counted the text's start after nothing, "
                              "not after a line end as every text is read now (with --discount 0 a text starting as "
                              "the training text does was at log p = -inf); train it again with `rnnkit ngram "
                              "train`")  # fmt: skip
        return model
