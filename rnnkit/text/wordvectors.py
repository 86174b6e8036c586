"""Word vectors once trained: similarity, nearest neighbours, analogies, evaluation, and the word2vec
text and binary file formats (the ones gensim's `KeyedVectors.load_word2vec_format` reads).

    similarity(a, b) = cos(x_a, x_b) = x_a·x_b / (|x_a| |x_b|)
    analogy a - b + c:  argmax_w cos(x_w, x̂_a - x̂_b + x̂_c) over w ∉ {a, b, c}   (x̂ = x / |x|)
                        (3CosAdd; most_similar(positive, negative) as gensim's, and its 3CosMul)

Formats:  text:    "V E\\n" then "word x_1 ... x_E\\n" per word
          binary:  "V E\\n" then "word " + E little-endian float32 + "\\n" per word
"""

import codecs
import contextlib
import hashlib
import json
import math
import numbers
import pathlib
import re
import warnings
import zlib

import numpy as np

from rnnkit._io import atomic_open, check_save_path, read_bytes, refuse_empty
from rnnkit.errors import RnnkitError, count_error


def file_record(path) -> dict:
    """The size and sha256 of a vectors file, as `rnnkit word2vec` records them in config.json ("files"), written
    last: a run stopped between its files leaves a record that the others, or an old one, do not match."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def _folder_record(folder: pathlib.Path) -> dict:
    """config.json's record of the folder's vectors files ({} where there is none: a folder written before it, or
    files of others); "files": null, which `rnnkit word2vec` writes before its vectors files, is a run that stopped
    while writing them (refused: a new vectors file may have the size of the old one it replaced)."""
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    if isinstance(meta, dict) and "files" in meta and meta["files"] is None:
        raise RnnkitError(_two_runs(folder, None))
    record = meta.get("files") if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else {}


class WordVectors:
    """words (V,) and vectors (V, E); row i is the vector of words[i]. Kept in float32, as the word2vec formats
    store them."""

    def __init__(self, words: list[str], vectors: np.ndarray):
        self.words = list(words)
        # a torch tensor, an Embedding's weight: numpy refused one that requires grad, one on a GPU, a bfloat16 one
        if hasattr(vectors, "detach"):
            vectors = vectors.detach().cpu().float().numpy()
        with np.errstate(over="ignore"):  # said below, in one line
            self.vectors = np.asarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise RnnkitError(
                f"vectors must be a ({len(self.words)}, E) matrix, one row per word, got shape "
                f"{self.vectors.shape}; transpose it if its columns are the words"
            )
        first = {w: i for i, w in reversed(list(enumerate(self.words)))}  # a word's first row
        if len(first) < len(
            self.words
        ):  # as gensim: the first vector of a word is kept, a repeat dropped (the
            keep = sorted(first.values())  # index took the last, and a repeat came up as its own neighbour)
            dropped = len(self.words) - len(keep)
            example = next(w for i, w in enumerate(self.words) if first[w] != i)
            warnings.warn(f"{dropped} repeated word(s) (such as {example!r}): the first vector of each is kept",
                          stacklevel=2)  # fmt: skip
            self.words, self.vectors = [self.words[i] for i in keep], self.vectors[keep]
        if not np.isfinite(self.vectors).all():
            row = int(np.flatnonzero(~np.isfinite(self.vectors).all(axis=1))[0])
            raise RnnkitError(f"the vector of {self.words[row]!r} is not finite in float32 (NaN, or beyond "
                              "±3.4e38); word vectors must be finite numbers")  # fmt: skip
        self.index = {w: i for i, w in enumerate(self.words)}
        # |x|² summed in float64 (in float32 it overflows past |x| = 1.8e19), row by row: no float64 copy of them all
        norms = np.sqrt(np.einsum("ve,ve->v", self.vectors, self.vectors, dtype=np.float64))[:, None]
        # divided in float64, some rows at a time (no float64 copy of them all): a norm cast to float32 became inf past
        # 3.4e38 (a unit vector of 0) and was rounded among its subnormals (a unit vector longer than 1)
        norms[norms == 0] = 1
        self.unit = np.empty_like(self.vectors)
        for i in range(0, len(self.vectors), 4096):
            self.unit[i : i + 4096] = self.vectors[i : i + 4096] / norms[i : i + 4096]

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __len__(self) -> int:
        """The number of words, V (as len() of gensim's KeyedVectors: it was 'object of type ... has no len()')."""
        return len(self.words)

    def __getitem__(self, word) -> np.ndarray:
        """The vector (E,) of a word, or the vectors (n, E) of a list of words (as gensim's KeyedVectors gives them)."""
        if isinstance(word, list):  # (a list is no word: it was 'unhashable type' from the lookup)
            return self.vectors[self._ids(word)]
        return self.vectors[self._ids([word])[0]]

    def _ids(self, words: list[str]) -> list[int]:
        missing = [w for w in words if w not in self.index]
        if missing:
            # (the vocabulary is case-sensitive: 'King' where the vectors hold 'king' said only "unknown word")
            folded = {}
            for w in self.words:
                folded.setdefault(w.casefold() if isinstance(w, str) else w, w)
            near = [folded.get(w.casefold() if isinstance(w, str) else w) for w in missing]
            hint = ", ".join(f"{n!r} for {w!r}" for w, n in zip(missing, near) if n is not None)
            from rnnkit.data.corpus import bytes_hint  # (a Latin-1 terminal's 'café', read 'caf\udce9')

            raise RnnkitError(
                f"unknown word(s) {', '.join(map(repr, missing))}: not in the {len(self.words)}-word vocabulary"
                + (f" (words are case-sensitive; it holds {hint})" if hint else "")
                + bytes_hint("".join(w for w in missing if isinstance(w, str)))
            )
        return [self.index[w] for w in words]

    def similarity(self, a: str, b: str) -> float:
        i, j = self._ids([a, b])
        return float(self.unit[i] @ self.unit[j])

    def nearest(self, query: np.ndarray, topn: int = 10, exclude=()) -> list[tuple[str, float]]:
        """The topn words w of largest cos(x_w, query), best first; `exclude`: words (or their row ids) never listed."""
        _check_topn(topn)
        E = self.vectors.shape[1]
        if hasattr(query, "detach"):  # a torch tensor (numpy's @ refused it: "unsupported operand")
            query = query.detach().cpu().double().numpy()
        if isinstance(query, str) or np.shape(query) != (E,):
            raise RnnkitError(
                f"nearest takes a vector of {E} numbers, got {query!r:.40}; for a word use neighbours(word)"
            )
        if not np.isfinite(query).all():  # every cosine came back NaN, listed as if they were scores
            raise RnnkitError("nearest takes a finite vector; the query holds NaN or infinite values")
        # scaled to its largest entry first, in float64: numpy's norm of a float32 query overflowed past |q| = 1.8e19
        # (every cosine 0) and underflowed below 1e-19 (cosines of 1e-18)
        q = np.asarray(query, dtype=np.float64)
        q = q / max(np.abs(q).max(initial=0.0), np.finfo(np.float64).tiny)
        # the unit query in the vectors' float32: a float64 one made @ copy all of them to float64 on every query
        cos = self.unit @ (q / max(np.linalg.norm(q), 1e-12)).astype(self.unit.dtype)
        return self._best(cos, topn, exclude)

    def _best(self, score: np.ndarray, topn: int, exclude) -> list[tuple[str, float]]:
        """The topn words of largest score (V,), best first, none of `exclude` (words or row ids)."""
        keep = np.ones(len(score), bool)
        ids = [self._ids([x])[0] if isinstance(x, str) else x for x in exclude]  # words gave an IndexError
        bad = [
            i
            for i in ids
            if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < len(score)
        ]
        if bad:
            raise RnnkitError(f"exclude takes words, or row ids 0..{len(score) - 1}; got {bad[0]!r}")
        keep[ids] = False  # never listed, however large topn is
        ids = np.flatnonzero(keep)
        best = ids[np.argsort(-score[ids], kind="stable")[:topn]]
        return [(self.words[i], float(score[i])) for i in best]

    def neighbours(self, word: str, topn: int = 10) -> list[tuple[str, float]]:
        (i,) = self._ids([word])
        return self.nearest(self.unit[i], topn, exclude=[i])

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """Words w nearest to a - b + c (king - man + woman -> queen)."""
        ids = self._ids([a, b, c])
        return self.nearest(self.unit[ids[0]] - self.unit[ids[1]] + self.unit[ids[2]], topn, exclude=ids)

    def most_similar(self, positive=(), negative=(), topn: int = 10) -> list[tuple[str, float]]:
        """3CosAdd, as gensim's most_similar: the words w of largest cos(x_w, Σ_p x̂_p - Σ_n x̂_n), none of those
        given; most_similar(["king", "woman"], ["man"]) is analogy("king", "man", "woman")."""
        ids, P = self._query_words(positive, negative)
        return self.nearest(self.unit[ids[:P]].sum(0) - self.unit[ids[P:]].sum(0), topn, exclude=ids)

    def most_similar_cosmul(self, positive=(), negative=(), topn: int = 10) -> list[tuple[str, float]]:
        """3CosMul (Levy & Goldberg 2014), as gensim's most_similar_cosmul: the words w of largest
        Π_p c(w, p) / (Π_n c(w, n) + 1e-6), c = (1 + cos) / 2 in [0, 1], none of those given."""
        _check_topn(topn)
        ids, P = self._query_words(positive, negative)
        c = (1 + self.unit @ self.unit[ids].T) / 2  # (V, P + N)
        return self._best(c[:, :P].prod(1) / (c[:, P:].prod(1) + 1e-6), topn, ids)

    def _query_words(self, positive, negative) -> tuple[list[int], int]:
        """The rows of the positive words then the negative ones (a str: one word; None: none, as gensim's default),
        and how many are positive."""
        given = (positive, negative)
        positive, negative = ([] if w is None else [w] if isinstance(w, str) else list(w) for w in given)
        if any(hasattr(w, "shape") for w in [*given, *positive, *negative]):  # (it was 'unhashable type')
            raise RnnkitError("most_similar takes words, not vectors: for a vector x use nearest(x)")
        if not positive and not negative:
            raise RnnkitError("most_similar needs a word: give positive=[...] and/or negative=[...] words")
        return self._ids(positive + negative), len(positive)

    # ---- evaluation ---------------------------------------------------------------------------------
    # Both evaluations match words case-insensitively, as gensim's (case_insensitive=True): a word of the test file
    # takes the vector of its first (most frequent) cased form in the vocabulary, "king" that of "King" when it comes
    # first. `restrict` (a set of words, gensim's restrict_vocab) limits both the words looked up and the answers.
    def _folded(self, restrict: set | None):
        """Per row its case-folded word; per case-folded word its first row in `restrict`; whether each row is in it."""
        folded = [w.casefold() for w in self.words]
        allowed = np.array([restrict is None or w in restrict for w in self.words], bool)
        first = {}
        for i in np.flatnonzero(allowed)[::-1]:
            first[folded[i]] = int(i)
        return folded, first, allowed

    def evaluate_similarity(self, path, restrict: set | None = None) -> tuple[float, int]:
        """Spearman ρ between cosines and human scores over the word pairs we know; (ρ, pairs used)."""
        _, first, _ = self._folded(restrict)
        cos, human = [], []
        for n, line in enumerate(_lines(path), 1):
            parts = line.split("\t") if "\t" in line else line.split()  # (MEN's columns: spaces)
            if line.startswith("#") or len(parts) < 3:
                continue
            a, b = parts[0].casefold(), parts[1].casefold()
            if a in first and b in first:
                try:  # (SimLex-999's third column, its part of speech 'A', was float's ValueError; NaN a NaN ρ)
                    score = float(parts[2])
                except ValueError:
                    score = math.nan
                if not math.isfinite(score):
                    raise RnnkitError(f"{path}, line {n}: its third column {parts[2]!r} is no score; give lines "
                                      "'word1<TAB>word2<TAB>score' (cut other columns out first)")  # fmt: skip
                cos.append(float(self.unit[first[a]] @ self.unit[first[b]]))
                human.append(score)
        from scipy.stats import spearmanr  # (imported here: scipy.stats takes half a second)

        return (float(spearmanr(cos, human).statistic) if len(cos) > 1 else float("nan")), len(cos)

    def evaluate_analogies(self, path, restrict: set | None = None) -> tuple[float, int]:
        """Accuracy on "a b c d" questions (b - a + c = d) whose four words we know; (accuracy, questions).
        The answer is the nearest word in `restrict` that is no cased form of a, b or c; right if a form of d."""
        folded, first, allowed = self._folded(restrict)
        forms = {}  # the rows of each case-folded word
        for i, w in enumerate(folded):
            forms.setdefault(w, []).append(i)
        quads = []
        for line in _lines(path):
            words = line.casefold().split()
            if line.startswith(":") or len(words) != 4:
                continue
            if all(w in first for w in words):
                quads.append(words)
        if not quads:
            return float("nan"), 0
        outside = np.flatnonzero(~allowed)
        correct = 0
        # b - a + c for 512 questions at once, against the words in blocks: their cosines in one buffer of 64 MB (a
        # (512, V) block of all words took 6 GB for GoogleNews's 3 million; fewer questions a product, 16 at 1 million
        # words, read all V vectors for so few: 1.5x the time there)
        rows = min(512, len(quads))
        cols = min(len(self.words), max(1, (64 << 20) // (4 * rows)))
        buffer = np.empty(rows * cols, self.unit.dtype)
        for chunk in (quads[i : i + rows] for i in range(0, len(quads), rows)):
            ids = np.array([[first[w] for w in q] for q in chunk])
            target = self.unit[ids[:, 1]] - self.unit[ids[:, 0]] + self.unit[ids[:, 2]]
            masked = np.array([(r, i) for r, q in enumerate(chunk) for w in q[:3] for i in forms[w]]).T
            top, best = self._nearest_allowed(target, outside, masked, buffer, cols)
            correct += int(sum(np.isfinite(t) and folded[i] == q[3] for t, i, q in zip(top, best, chunk)))
        return correct / len(quads), len(quads)

    def _nearest_allowed(self, target, outside, masked, buffer, cols):
        """(cosine, row) of the word nearest each row of target (n, E), taking the words `cols` at a time into
        buffer: none of `outside`, nor column i of row r for (r, i) in masked (2, m). A cosine of -inf: no word."""
        n = len(target)
        top, best = np.full(n, -np.inf, self.unit.dtype), np.zeros(n, np.int64)
        for j in range(0, len(self.words), cols):
            block = self.unit[j : j + cols]
            cos = np.matmul(target, block.T, out=buffer[: n * len(block)].reshape(n, len(block)))
            lo, hi = np.searchsorted(outside, [j, j + len(block)])
            cos[:, outside[lo:hi] - j] = -np.inf
            here = (masked[1] >= j) & (masked[1] < j + len(block))
            cos[masked[0, here], masked[1, here] - j] = -np.inf
            i = cos.argmax(1)
            value = cos[np.arange(n), i]
            better = value > top  # (a tie: the earlier word, as one argmax over all words)
            top[better], best[better] = value[better], i[better] + j
        return top, best

    # ---- word2vec formats ---------------------------------------------------------------------------
    def save(self, path, binary: bool = False) -> None:
        """word2vec's text or binary format, as gensim reads and writes them: a "V E" header line, then per word
        the word, a space and its E numbers (text: 9 significant digits, which give each float32 back exactly;
        binary: 4 E bytes little-endian, then a newline). A path ending .gz or .bz2 is compressed so, as gensim
        writes and reads one (it was written plain under that name, which gensim then failed to read)."""
        V, E = self.vectors.shape
        if V == 0 or E == 0:  # (written, its header '0 3' made a file load refuses: it promises no vectors)
            raise RnnkitError(f"cannot save {V} words of {E} numbers each in word2vec format, which holds at least one "
                              "vector of at least one number")  # fmt: skip
        others = [w for w in self.words if not isinstance(w, str)]
        if others:  # (Word2Vec trains on tokens of any kind: ints failed in the check below)
            other = others[0]
            raise RnnkitError(f"cannot save the word {other!r} ({type(other).__name__}) in word2vec format: words must "
                              "be str; make them so first (WordVectors([str(w) for w in wv.words], wv.vectors))")  # fmt: skip
        # (a form feed or a vertical tab, which word2vec.c keeps in a word and both formats read back, was refused)
        bad = next((w for w in self.words if not w or any(c in w for c in " \t\n\r")), None)
        if bad is not None:  # the file would not read back, here or in gensim
            raise RnnkitError(f"cannot save the word {bad!r} in word2vec format, where a space ends the word: "
                              "words must be non-empty, without spaces, tabs or newlines (join phrases with _)")  # fmt: skip
        lone = next(
            (w for w in self.words if not w.isascii() and any("\ud800" <= c <= "\udfff" for c in w)), None
        )
        if lone is not None:  # (bytes read with errors='surrogateescape': a traceback from UTF-8's encoder)
            raise RnnkitError(f"cannot save the word {lone!r} in word2vec format: UTF-8, the format's, has no code "
                              "for its lone surrogate (of bytes read with errors='surrogateescape'); read the text in "
                              "its own encoding, or with errors='replace'")  # fmt: skip
        check_save_path(path)
        with atomic_open(path, "wb") as raw, _packed(raw, path) as f:  # (failed: the old file as it was)
            f.write(f"{V} {E}\n".encode())
            for w, x in zip(self.words, self.vectors):
                if binary:
                    f.write(w.encode() + b" " + x.astype("<f4").tobytes() + b"\n")
                else:
                    f.write((w + " " + " ".join(f"{v:.9g}" for v in x.tolist()) + "\n").encode())

    @classmethod
    def load(cls, path, binary: bool | None = None, unicode_errors: str = "strict") -> "WordVectors":
        """Read either format, compressed with gzip or bzip2 or not (as gensim reads a .gz or .bz2); `binary=None`
        guesses from the file. Words are UTF-8; `unicode_errors` ("strict", "replace", "ignore", as gensim's) says
        what becomes of a word that is not (word2vec.c cuts words at 100 bytes, inside a character's bytes); a binary
        file's word with a space ('new york', which gensim writes as it is) is one error whatever it says (where no
        other word is odd, as a file of another encoding's are). `path`
        may also be the folder that `rnnkit word2vec --out` writes: its vectors.bin is read (vectors.txt with
        `binary=False`, or where there is no vectors.bin), checked against the sizes and sha256 its config.json
        records (a folder without them loads as before)."""
        if unicode_errors not in ("strict", "replace", "ignore"):
            raise RnnkitError(f"unicode_errors must be strict, replace or ignore, got {unicode_errors!r}")
        refuse_empty(
            path, "a word2vec file or the folder that `rnnkit word2vec --out` wrote (`.` for this folder)"
        )
        path = pathlib.Path(path)
        record = {}
        if path.is_dir():
            names = {True: ["vectors.bin"], False: ["vectors.txt"]}.get(
                binary, ["vectors.bin", "vectors.txt"]
            )
            found = next((path / n for n in names if (path / n).is_file()), None)
            if found is None:
                raise RnnkitError(
                    f"{path} is a folder without {' or '.join(names)}; give a word2vec file or the folder "
                    "that `rnnkit word2vec --out` wrote"
                )
            folder, path, record = path, found, _folder_record(path)
            # the files beside it by their sizes (the one read by its sha256, below): a run stopped after vectors.txt
            # left the new one beside the old vectors.bin and config.json, which were read in silence
            for name, want in record.items():
                if name != path.name and isinstance(want, dict) and (folder / name).is_file():
                    if (folder / name).stat().st_size != want.get("size"):
                        raise RnnkitError(_two_runs(folder, name))
        packer = None
        try:  # the header line, then the rest: no second copy of the file (data.partition(b"\n") made one)
            if path.is_file():
                packer, opener = _packer(path)
                with opener(path, "rb") as f:
                    header = f.readline()
                    # a plain file's rest unbuffered, in one read: read() after readline() joined the buffered bytes
                    # to the others, a second copy of the file at the peak (a 286 MB file took 590 MB to load)
                    rest = f.read() if packer else _read_from(path, len(header))
            else:  # a pipe or a device: its first line may never end (/dev/zero)
                header, _, rest = read_bytes(path, text=False).partition(b"\n")
        except (OSError, EOFError, zlib.error) as e:
            if isinstance(e, FileNotFoundError):  # (as a missing run or text file is said, naming the fix)
                raise RnnkitError(f"vectors {path} not found; give a word2vec file or the folder that `rnnkit "
                                  "word2vec --out` wrote") from None  # fmt: skip
            # (a damaged gzip or bzip2 file: an OSError without strerror, an EOFError or zlib's error)
            why = getattr(e, "strerror", None) or str(e)
            why += f" (a damaged {packer} file?)" if packer else ""
            raise RnnkitError(f"cannot read vectors {path}: {why}") from None
        want = record.get(path.name)
        if isinstance(want, dict):  # (hashed in two parts: header + rest would copy the file)
            h = hashlib.sha256(header)
            h.update(rest)
            if len(header) + len(rest) != want.get("size") or h.hexdigest() != want.get("sha256"):
                raise RnnkitError(_two_runs(path.parent, path.name))
        header = header.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark (an editor's): no text
        try:
            V, E = _header(header.removesuffix(b"\n"), rest)
            if V < 1 or E < 1:
                raise ValueError(
                    f"its header '{V} {E}' promises no vectors (V words of E numbers, both >= 1)"
                )
            # its first line "word x_1 ... x_E" makes it text: all of the first 5 were asked, and a word with a
            # space among them ('new york 0.1 ...') made a text file binary, 'N bytes follow the last of the 4
            # vectors; is it binary?', and with --format text 'try --format binary'
            looks_text = _is_text(rest, E)
            wrong = None  # read in the wrong format, a file gives garbage vectors or a puzzling error
            cut = False  # a binary file cut short in its first records, guessed text: said if the text fails
            if binary is None:
                binary = not looks_text and _is_binary(rest, V, E)
                cut = not binary and not looks_text
            elif binary and looks_text:
                wrong = ("binary", "text")
            elif not binary and not looks_text and _is_binary(rest, V, E):
                wrong = ("text", "binary")
            if not wrong:
                read = _read_binary if binary else _read_text
                try:
                    words, vectors = read(rest, V, E, unicode_errors)
                except (
                    ValueError
                ) as e:  # (it was 'header says 4 words, file has 1 lines' of 3 binary vectors)
                    if cut and _is_binary(rest, V, E, cut=True):
                        raise ValueError(f"{e} (or is it a binary file cut short, or of fewer vectors than its header "
                                         "says? --format binary reads it as binary)") from None  # fmt: skip
                    raise
        except (ValueError, UnicodeDecodeError) as e:
            raise RnnkitError(
                f"malformed word2vec file {path}: {e}; expected a 'V E' header then V vectors"
            ) from None
        if wrong:
            raise RnnkitError(f"{path} is not in word2vec {wrong[0]} format; try --format {wrong[1]}")
        # the file's bytes, read: held while the unit vectors were made, they were one file's size more at the peak
        del rest
        return cls(words, vectors)


def _check_topn(topn) -> None:
    if isinstance(topn, bool) or not isinstance(topn, numbers.Integral) or topn < 1:
        raise count_error("topn (how many words to list)", topn)


def _packed(raw, path):
    """A stream that compresses into the open file raw where path ends .gz or .bz2 (as gensim's save), else raw."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0)
    if suffix == ".bz2":
        import bz2

        return bz2.BZ2File(raw, "wb")
    return contextlib.nullcontext(raw)


def _packed_stream(header: bytes) -> str:
    """What to say of compressed vectors read from a pipe or a device (<(curl ... .bin.gz)), which _packer, reading a
    file's first bytes again, does not open; else "" (a file's were opened by it)."""
    packer = "gzip" if header[:2] == b"\x1f\x8b" else "bzip2" if header[:3] == b"BZh" else None
    if packer is None:
        return ""
    return (f"; it is {packer} data from a pipe or a device: give the file itself, or decompress it into the pipe "
            f"({'zcat' if packer == 'gzip' else 'bzcat'} FILE)")  # fmt: skip


def _packer(path):
    """("gzip", gzip.open) or ("bzip2", bz2.open) for a compressed file, by its first bytes, else (None, open): gensim
    reads a .gz or .bz2 (GoogleNews-vectors-negative300.bin.gz), here 'its first line is binary data'. (No header
    'V E' starts with these bytes.)"""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b":
        import gzip

        return "gzip", gzip.open
    if magic == b"BZh":
        import bz2

        return "bzip2", bz2.open
    return None, open


def _read_from(path, start: int) -> bytes:
    """A file's bytes from `start` to its end."""
    with open(path, "rb", buffering=0) as f:
        f.seek(start)
        return f.readall()


def _lines(path) -> list[str]:
    """The lines of a UTF-8 pairs or questions file, its byte-order mark (an editor's) dropped: it was read as part of
    the first word, whose line was skipped in silence; a file in another encoding is one line, not a
    UnicodeDecodeError naming no file. A line ends at a newline (\\r\\n and \\r one), as gensim's evaluations read
    their files (in binary, line by line), not at str.splitlines' U+2028, U+0085 or form feed inside a line, which
    made 'a b\\u2028c d' two lines of no question."""
    refuse_empty(path, "a UTF-8 text file of word pairs or questions")
    try:
        return read_bytes(path).decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    except UnicodeDecodeError as e:
        raise RnnkitError(f"cannot read {path}: {e}; give a UTF-8 text file") from None


def _two_runs(folder: pathlib.Path, name: str | None) -> str:
    why = (f"its {name} is not the one its config.json was written with (a run stopped while writing them, or a file "
           "copied from another run)" if name else "a run stopped while writing them (its config.json says so)")  # fmt: skip
    return (f"{folder} holds files of two runs: {why}; run `rnnkit word2vec` into it again, or give the one vectors "
            "file you trust by its path")  # fmt: skip


def _header(header: bytes, rest: bytes) -> tuple[int, int]:
    """V and E of the first line "V E", or a ValueError that shows the line read instead (a corpus, another
    command's output: its raw bytes were shown, "invalid literal for int() with base 10: b'PK\\x03\\x04...'")."""
    try:
        V, E = (int(x) for x in header.split())
    except ValueError:
        if not header.strip() and not rest.strip():
            raise ValueError("it is empty, with no 'V E' header") from None
        # a 'V E' header ended by a \r alone: the whole file one line ('its first line is binary data', of text)
        if re.fullmatch(rb" *[0-9]+ +[0-9]+ *", header.partition(b"\r")[0]):
            raise ValueError("its line ends are \\r alone, as classic Mac OS wrote them, where the format's lines end "
                             "at \\n; convert them, e.g. mac2unix, or tr '\\r' '\\n'") from None  # fmt: skip
        line = header[:40].decode("utf-8", "replace").strip()
        shown = repr(line) if line.isprintable() else "binary data"
        raise ValueError(
            f"its first line is {shown}, not the 'V E' header (number of words, dimension)"
            + _no_header(header, rest)
            + _packed_stream(header)
        ) from None
    return V, E


def _no_header(header: bytes, rest: bytes) -> str:
    """Where the first line is a vector "word x_1 ... x_E" (GloVe's files have no header; gensim reads them with
    no_header=True), the header line to add; else ""."""
    try:
        parts = header.decode("utf-8").rstrip().split(" ")
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return ""
    if len(parts) < 2:
        return ""
    end = len(rest)  # (blank lines at the end not counted; no stripped copy of the file)
    while end and rest[end - 1 : end].isspace():
        end -= 1
    V = 1 + (rest.count(b"\n", 0, end) + 1 if end else 0)
    return f"; no header line (as GloVe writes)? add the line '{V} {len(parts) - 1}' at its top"


def _numbers(fields: list[bytes]) -> bool:
    try:
        [float(v) for v in fields]
    except ValueError:
        return False
    return True


def _is_text(rest: bytes, E: int) -> bool:
    """Whether the first record is a text line "word x_1 ... x_E": a word, then E numbers that end the line (a word
    with a space, 'new york 0.1 ...', as gensim writes it, is still text: the reader names its line).

    Raw float32 bytes (zero vectors are all NUL bytes) almost never split so.
    """
    end = rest.find(b"\n")
    # (a word of other bytes than UTF-8's, as word2vec.c may write, is said when read)
    parts = rest[: len(rest) if end < 0 else end].rstrip().split(b" ")
    return len(parts) >= E + 1 and _numbers(parts[-E:])


# the bytes of numbers written as text ('-1.5e-05', 'nan', 'inf', a decimal comma) and of the white space between them
_NUMBER_TEXT = re.compile(rb"[0-9.,+\-eEnNaAiIfFtTyY \t\n\r\x0b\x0c]*")


def _utf8(raw: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw)  # (not final: a character cut at the end)
    except UnicodeDecodeError:
        return False
    return True


def _reads_as_text(raw: bytes) -> bool:
    """Whether bytes read as a vector are UTF-8 text (a character cut at their end, white space), as a text file's
    line read across its lines is: a few in a hundred vectors of one number, about none of more, are."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(raw)  # (not final: a character cut at the end)
    except UnicodeDecodeError:
        return False
    return "".join(text.split()).isprintable()


def _is_binary(rest: bytes, V: int, E: int, records: int = 5, cut: bool = False) -> bool:
    """Whether the first records are binary: "word " (no space or newline: word2vec.c's words have none, but may hold
    a form feed or a vertical tab, and gensim's a tab or a CR, which made its file not binary) then exactly 4 E bytes,
    not all of them those of numbers written as text: a text file whose first line is not "word x_1 ... x_E" (two
    spaces in a row, '1,5'), its numbers 4 E bytes long, read as such records and loaded as garbage (b'1.0 ' is
    1.5e-19). A word vector's float32 numbers are not: the last byte of one, its sign and exponent, is a digit, a
    sign, a point, white space or a letter of 'e', 'nan' or 'inf' only where 0 < x < 4.9e-4, 8 <= x < 32 or
    x >= 2048 (that of a negative number or 0 never). `cut`: also where the file ends in its first records, after
    vectors none of which is UTF-8 (a binary file cut short, or of fewer vectors than its header says)."""
    pos, text, utf8 = 0, True, False  # whether every vector read is text
    tab = some_text = False  # whether a word holds a tab or a CR; whether a vector reads as text
    # whether every vector reads as text; whether one holds a line end and numbers no word vector's; whether one holds
    # a number past 2^30, as a float's last byte of a letter from 'O' on makes it (b'none' 7.0e22, b'null' 1.1e27)
    all_text, line_end, huge = True, False, False
    for k in range(min(V, records)):
        space = rest.find(b" ", pos)
        word = rest[pos:space].lstrip(b"\n")  # the newline after the previous vector, if written
        if space < 0 or not word or b"\n" in word or space + 1 + 4 * E > len(rest):
            if cut and k > 0 and not utf8 and (space < 0 or space + 1 + 4 * E > len(rest)):
                return True
            # binary still where a word of two ('new york') put the vector's last bytes before the next word and
            # its newline (_read_binary says so; this file was read as text, 'line 2 has 1 numbers')
            return (
                space > 0
                and k > 0
                and not text
                and not (tab and some_text)
                and not (all_text and (line_end or huge))
                and _odd(word)
                and _spaced_word(rest, pos - 4 * E, E, "") is not None
            )
        vector = rest[space + 1 : space + 1 + 4 * E]
        text = text and _NUMBER_TEXT.fullmatch(vector) is not None
        tab = tab or b"\t" in word or b"\r" in word
        as_text = _reads_as_text(vector)
        some_text, all_text = some_text or as_text, all_text and as_text
        line_end = line_end or (b"\n" in vector or b"\r" in vector) and _numbers_like(vector) < E
        huge = huge or as_text and bool((np.abs(np.frombuffer(vector, "<f4")) > 2.0**30).any())
        utf8 = utf8 or (cut and _utf8(vector))
        pos = space + 1 + 4 * E
    # a word with a tab or a CR among vectors that read as text, or vectors that all read as text, one holding a line
    # end and numbers no word vector's (b'N/A\r' 6e-31, b'\r\ncd' 2e22): a text file's line (no 'word x_1 ... x_E')
    # read across; a word vector's bytes read so almost never (none of 300,000 files of 1 to 5 words of one number).
    # Or one holding a number past 2^30, no line end: a text field of 4 E bytes ending in a letter ('2 1\nab none\n'),
    # which a word vector's numbers (|x| <= 2^30, as _numbers_like has them) never are
    return not text and not (tab and some_text) and not (all_text and (line_end or huge))


def _word(raw: bytes, i: int, errors: str) -> str:
    """Vector i's word from its bytes, or a ValueError that names it: a word of the C tool, cut at 100 bytes inside
    a character, or of a corpus in another encoding, was 'can't decode byte 0xbf in position 5' of no word."""
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        word = raw.decode("utf-8", "backslashreplace")
        word = repr(word if len(word) <= 40 else word[:40] + "...")
        raise ValueError(f"the word of vector {i + 1}, {word}, is not UTF-8 ({e.reason} at byte {e.start}: word2vec.c "
                         "cuts words at 100 bytes, inside a character, or its corpus was in another encoding); load "
                         "it with unicode_errors='replace' (--unicode-errors replace) or 'ignore'") from None  # fmt: skip


def _read_text(rest: bytes, V: int, E: int, errors: str = "strict"):
    """Line by line into a (V, E) float32 array: a list of V E Python floats took 3 times the file's size."""
    lines = rest.count(b"\n") + 1  # those of rest.split(b"\n") (not splitlines: a word may hold \x85 or \x0c)
    if not rest[rest.rfind(b"\n") + 1 :].strip():  # the last line's newline
        lines -= 1
    if lines < V:
        raise ValueError(f"header says {V} words, file has {lines} lines")
    _check_size(rest, V, E, 2 * E)  # " x" per number at least
    words, vectors, pos = [], np.empty((V, E), np.float32), 0
    for n in range(2, V + 2):
        end = rest.find(b"\n", pos)
        end = len(rest) if end < 0 else end
        parts = rest[pos:end].rstrip().split(b" ")
        if (
            b"" in parts and len(parts) - parts.count(b"") == E + 1
        ):  # ('has 3 numbers', or 'is 'the ' one word?')
            raise ValueError(_space_too_many(n))
        if len(parts) != E + 1:
            spaced = (
                b" ".join(parts[: len(parts) - E]).decode("utf-8", "replace") if len(parts) > E + 1 else ""
            )
            if _numbers(parts[1 : len(parts) - E]):  # 'the 1 2 3' under '2 2': no word with a space
                spaced = ""
            raise ValueError(f"line {n} has {len(parts) - 1} numbers, expected {E}" + (
                f" (is {spaced!r} one word? the format holds no word with a space)" if " " in spaced else ""))  # fmt: skip
        words.append(_word(parts[0], n - 2, errors))
        try:
            with np.errstate(over="ignore"):  # past float32's ±3.4e38: said by WordVectors, in one line
                vectors[n - 2] = [float(v) for v in parts[1:]]
        except ValueError:  # (it was float's "could not convert string to float: b'0,5'", of no line)
            bad = next(v for v in parts[1:] if not _numbers([v]))
            if not bad:
                raise ValueError(_space_too_many(n)) from None
            bad = bad.decode("utf-8", "replace")
            raise ValueError(f"line {n}: {bad if len(bad) <= 40 else bad[:40] + '...'!r} is no number (numbers are "
                             "written as -0.25 or 1.5e-05, with a point)") from None  # fmt: skip
        pos = end + 1
    # (a vector past the V-th, a word appended by hand under the old header, was dropped in silence)
    tail = rest[pos:]
    if tail.strip():
        line = V + 2 + tail[: len(tail) - len(tail.lstrip())].count(b"\n")
        raise ValueError(f"lines follow the last of its {V} vectors (line {line} on); is the header's count of words "
                         "right?")  # fmt: skip
    return words, vectors


def _space_too_many(n: int) -> str:
    return (f"line {n} has a space too many (two in a row, or one at its start): the format puts one space between "
            "its word and each number")  # fmt: skip


def _check_size(rest: bytes, V: int, E: int, least: int) -> None:
    """A ValueError where V vectors of `least` bytes each can't fit in the file: a header of sizes past the file
    ('17 1000000000', damaged) allocated the (V, E) array first, 63 GB, and said 'out of memory'."""
    if V * least > len(rest):
        raise ValueError(f"its header '{V} {E}' promises {V:,} vectors of {E:,} numbers, more than its "
                         f"{len(rest):,} bytes hold")  # fmt: skip


# control characters no word holds (a form feed or a vertical tab may: word2vec.c splits at space, tab and newline);
# bytes, as UTF-8 puts none of them inside another character
_CONTROL = re.compile(rb"[\x00-\x0a\x0d-\x1f\x7f]")


def _odd(raw: bytes) -> bool:
    """Whether a binary record's word is no word: not UTF-8, or holding a control character (two scans in C for
    the usual word)."""
    if _CONTROL.search(raw):
        return True
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _numbers_like(raw: bytes) -> int:
    """How many of the float32 numbers in `raw` look like a word vector's: 0, or 2^-30 <= |x| <= 2^30."""
    x = np.abs(np.frombuffer(raw[: len(raw) // 4 * 4], "<f4"))
    return int(((x == 0) | ((x >= 2.0**-30) & (x <= 2.0**30))).sum())


def _no_vector(raw: bytes) -> bool:
    """Whether the float32 numbers in `raw` are no word vector's, small or not: one is inf, NaN, past 2^30 or
    subnormal, or their sizes (0 aside) span more than 2^40. A vector of numbers all below 2^-30 (1e-11 each) is a
    small vector, not bytes shifted off their floats."""
    x = np.abs(np.frombuffer(raw[: len(raw) // 4 * 4], "<f4"))
    if not np.isfinite(x).all() or (x > 2.0**30).any():
        return True
    x = x[x > 0]
    return x.size > 0 and (x.min() < 2.0**-126 or x.max() > 2.0**40 * x.min())


def _spaced_word(rest: bytes, start: int, E: int, word: str, newline: bool = False) -> str | None:
    """'new york' where a binary file held that word (gensim writes it as it is): the reader ends the word at its
    space, 'new', reads its vector (at `start` of `rest`) from 'york ' on, and the next word begins with the
    vector's last bytes, no UTF-8 or holding a control character (_odd). The whole word ('new york'), where the
    vector read begins with a rest of a word and a space, and the record read past them ends before a word that is
    not _odd; else None. (A vector alone may begin so, one in a few hundred: a word of word2vec.c's cut at 100
    bytes inside a character, which is not UTF-8, is then told by its cut character still there. In word2vec.c's
    layout, `newline` after each vector, the word's vector read so ends at a newline, where a word is read past one.
    In gensim's, none: both readings of the bytes hold, so the numbers tell them apart. A word's vector read from
    'york ' on has a number of text and the others shifted off their 4 bytes, far out of a word vector's range; a
    vector that begins as text holds word-vector numbers as read, and read past its text and space, shifted, not:
    None then, where it was 'new york' about one time in 400 files whose one odd word's oddity is in its first bytes.)"""
    cut = rest.find(b" ", start, start + 4 * E)
    if cut <= start:
        return None
    try:
        tail = rest[start:cut].decode("utf-8")
    except UnicodeDecodeError:
        return None
    after = cut + 1 + 4 * E  # where the word's vector ends, read past its rest and space
    if newline and rest[after : after + 1] != b"\n":
        return None
    if not newline and _numbers_like(rest[start : start + 4 * E]) == E > _numbers_like(rest[cut + 1 : after]):
        if _no_vector(rest[cut + 1 : after]):  # (numbers merely small are a small vector's: 'new york' still)
            return None  # numbers as a word vector's as read, not read past the text: a good vector
    space = rest.find(b" ", after)
    following = rest[after:space].lstrip(b"\n") if space > after else b""
    return f"{word} {tail}" if tail.isprintable() and following and not _odd(following) else None


def _read_binary(rest: bytes, V: int, E: int, errors: str = "strict"):
    _check_size(rest, V, E, 4 * E)  # 4 bytes per number
    words, vectors, pos = [], np.empty((V, E), np.float32), 0
    first, unexplained, bad = None, False, None  # the first record read as 'new york'; another odd word
    # the first vector's end: a newline there is word2vec.c's layout (no word holds one)
    after = rest.find(b" ") + 1 + 4 * E
    newline = rest[after : after + 1] == b"\n"
    for i in range(V):
        space = rest.find(b" ", pos)
        if space < 0:  # (rest.index said "subsection not found")
            raise ValueError(f"file ends after {i} of its {V} vectors")
        raw = rest[pos:space].lstrip(b"\n")
        try:  # (decoded once here: _word's again cost the check below)
            word, odd = raw.decode("utf-8"), _CONTROL.search(raw) is not None
        except UnicodeDecodeError:
            word, odd = None, True
        spaced = _spaced_word(rest, pos - 4 * E, E, words[-1], newline) if i and odd else None
        # said after the last vector, where no other word is odd: a file of control characters or another
        # encoding in its words (gensim reads them) holds some after a vector that begins as text, one in 400
        first = first or (spaced and (i, spaced))
        # (a tab or a CR alone is a word as gensim writes it, no other encoding's: it vouches for no 'new york')
        unexplained = unexplained or (
            odd and not spaced and (word is None or _CONTROL.search(raw.translate(None, b"\t\r")) is not None)
        )
        if word is None and spaced:  # not UTF-8: said below where the file is no 'new york'
            try:
                word = _word(raw, i, errors)
            except ValueError as e:
                word, bad = raw.decode("utf-8", "replace"), bad or e
        words.append(_word(raw, i, errors) if word is None else word)
        end = space + 1 + 4 * E
        if end > len(rest):
            raise ValueError(f"file ends inside the vector of word {i + 1} of {V}")
        vectors[i] = np.frombuffer(rest[space + 1 : end], dtype="<f4")
        pos = end
    if first and not unexplained:
        raise ValueError(f"vector {first[0]}'s word may be {first[1]!r}: a binary file ends a word at its first "
                         "space, so its vector was read from the word's rest, and this format holds no word with a "
                         "space; write such words without one (new_york), or use the text format")  # fmt: skip
    if bad:
        raise bad
    if rest[pos:].strip():  # a binary file ends after its V-th vector (and a newline)
        more = len(rest) - pos
        if _is_binary(rest[pos:], 1, E):  # (a vector appended under the old header was 'is it binary?')
            raise ValueError(f"{more} bytes of more vectors follow the last of its {V}; is the header's count of "
                             "words right?")  # fmt: skip
        raise ValueError(f"{more} bytes follow the last of the {V} vectors; is it binary?")
    return words, vectors
