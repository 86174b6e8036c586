"""Bag of words and TF-IDF (deck 003), with cosine-similarity search of documents.

    TF(x, d)      how prevalent term x is in document d:  "count" c(x, d),  "frequency" c(x, d) / |d|,
                  or "log" 1 + log c(x, d)
    IDF(x)        = 1 + log(N / df(x))                 N documents, df(x) of them contain x   (deck 003)
                  = 1 + log((1 + N) / (1 + df(x)))     with smooth_idf (as if one extra document held every term)
    TFIDF(x, d)   = TF(x, d) × IDF(x), each document vector then scaled to unit length (norm="l2")

With the same tokens, tf="count" or "log" (sublinear_tf) and the same smooth_idf and norm, the vectors equal
scikit-learn's `TfidfVectorizer`'s.
"""

import array
import hashlib
import io
import json
import math
import numbers
import pathlib
import unicodedata
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from rnnkit._io import atomic_open, bar_options, check_save_path, is_zip, refuse_empty, write_text
from rnnkit.errors import RnnkitError, count_error, switch
from rnnkit.text.vocab import _WORD_AND_PUNCT, word_tokenize


def _not_str(value, what: str, fix: str) -> None:
    """Refuse one str where a list is meant: iterating it would give characters (as scikit-learn refuses)."""
    if isinstance(value, str):
        raise RnnkitError(f"{what}, not a str: {fix}")


def term_counts(tokens: list[str]) -> Counter:
    """The bag of words: term -> count c(x, d)."""
    _not_str(tokens, "term_counts takes a list of tokens", "split the text first (text.split())")
    return Counter(tokens)


def term_frequencies(tokens: list[str]) -> dict[str, float]:
    """term -> c(x, d) / |d|, |d| = Σ_x c(x, d): any iterable of tokens (a generator has no len)."""
    _not_str(tokens, "term_frequencies takes a list of tokens", "split the text first (text.split())")
    counts = Counter(tokens)
    total = sum(counts.values())
    return {x: c / total for x, c in counts.items()}


@dataclass
class TfidfConfig:
    tf: str = "count"  # "count", "frequency" or "log"
    smooth_idf: bool = False  # False: IDF exactly as deck 003 writes it
    norm: str | None = "l2"  # "l2" or None
    lower: bool = True
    stop_words: bool = False  # drop scikit-learn's English stop-word list
    stem: bool = False  # Snowball (Porter 2) stemmer


class Analyzer:
    """text -> terms: lower-case, compose (NFC), split words and punctuation, drop punctuation (tokens without a
    letter or digit) and stop words, stem. `marks` False: split words at their combining marks too, as an index saved
    by an older rnnkit was built ('हिन्दी' the terms 'ह', 'न', 'द'); `nfc` False: terms as the text spells them, as
    an index built by an older rnnkit of decomposed text holds them ('e\u0301te\u0301' beside 'été')."""

    marks = nfc = True  # (an analyzer pickled before it had the attributes)

    def __init__(self, config: TfidfConfig, marks: bool = True, nfc: bool = True):
        self.config, self.marks, self.nfc = config, marks, nfc
        self.stop_words = frozenset()
        if config.stop_words:  # (imported here: scikit-learn takes a second or two, which every command paid)
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            self.stop_words = ENGLISH_STOP_WORDS
        self.stemmer, self.stems = None, {}
        if config.stem:
            import snowballstemmer

            self.stemmer = snowballstemmer.stemmer("english")

    def __call__(self, text: str) -> list[str]:
        if not isinstance(text, str):  # (a table's empty cell, NaN, failed in str.lower; bytes in re)
            decode = (
                "; decode it first, e.g. data.decode('utf-8')" if isinstance(text, bytes | bytearray) else ""
            )
            raise RnnkitError(
                f"documents and queries must be str, got {type(text).__name__} {text!r:.60}{decode}"
            )
        text = text.lower() if self.config.lower else text
        if self.nfc and not text.isascii():  # one term of equal spellings: 'été' and 'e\u0301te\u0301'
            text = unicodedata.normalize("NFC", text)
        if self.marks:
            tokens = word_tokenize(text, lower=False, punctuation=True)
        else:
            tokens = _WORD_AND_PUNCT.findall(text)
        terms = [t for t in tokens if any(c.isalnum() for c in t)]  # __init__ is a word, "," and "_" are not
        if self.config.stop_words:
            terms = [t for t in terms if t.lower() not in self.stop_words]
        return self._stemmed(terms) if self.stemmer else terms

    def _stemmed(self, terms: list[str]) -> list[str]:
        """Each term's stem, each distinct term stemmed once (the pure-Python Snowball stemmer on every token took
        6/7 of `tfidf index --stem`'s time: 20 s of PTB's 887k tokens, 10k distinct words)."""
        stems = self.__dict__.setdefault("stems", {})  # (an analyzer pickled before it had them)
        missing = [t for t in dict.fromkeys(terms) if t not in stems]
        stems.update(zip(missing, self.stemmer.stemWords(missing)))
        return [stems[t] for t in terms]


class _NewerIndex(RnnkitError):
    """An index saved by a newer rnnkit: said as it is, not as an index that can't be read."""


class TfidfIndex:
    """Fit IDF on a collection of documents; turn documents and queries into sparse TF-IDF rows; search.

    Columns are the terms in alphabetical order (`self.terms`).
    """

    def __init__(self, config: TfidfConfig | None = None):
        if config is not None and not isinstance(config, TfidfConfig):  # (a dict: "has no attribute 'tf'")
            fix = ": TfidfIndex(TfidfConfig(**config))" if isinstance(config, dict) else ""
            raise RnnkitError(f"TfidfIndex takes a TfidfConfig (or None), got {type(config).__name__}{fix}")
        self.config = config or TfidfConfig()
        if self.config.tf not in ("count", "frequency", "log") or self.config.norm not in ("l2", None):
            raise RnnkitError(f"bad TF-IDF config {self.config}; tf: count|frequency|log, norm: l2|None")
        # plain bools: save() writes the config as JSON, which has no numpy bool_
        flags = ("smooth_idf", "lower", "stop_words", "stem")
        for k in flags:  # (taken for their truth value: smooth_idf="False", a config file's string, smoothed)
            switch(f"TF-IDF config: {k}", getattr(self.config, k))
        self.config = replace(self.config, **{k: bool(getattr(self.config, k)) for k in flags})
        self.analyzer = Analyzer(self.config)

    def _fitted(self) -> None:
        """One RnnkitError unless the index holds documents (fit or load)."""
        if getattr(self, "column", None) is None:
            raise RnnkitError(
                "this TF-IDF index holds no documents yet: call fit(documents) first, or TfidfIndex.load one"
            )

    def counts(self, docs: list[str], terms: list[list[str]] | None = None) -> sp.csr_matrix:
        """Bag-of-words count matrix (N, |terms|); terms not in the index are dropped."""
        self._fitted()
        _not_str(docs, "TfidfIndex.counts takes a list of documents", "wrap one document in a list ([text])")
        terms = terms if terms is not None else [self.analyzer(doc) for doc in docs]
        rows, cols = [], []
        for i, doc_terms in enumerate(terms):
            ids = [self.column[t] for t in doc_terms if t in self.column]
            rows += [i] * len(ids)
            cols += ids
        C = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(terms), len(self.terms)))
        C.sum_duplicates()
        return C

    def fit(self, docs: list[str], progress: bool = False) -> "TfidfIndex":
        _not_str(docs, "TfidfIndex.fit takes a list of documents", "wrap one document in a list ([text])")
        docs = docs if isinstance(docs, list) else list(docs)  # a numpy array's truth value is an error
        if not docs:
            raise RnnkitError("no documents to index; give at least one non-empty document")
        # (the split of a loaded older index, which load sets, is not for new documents)
        analyzer = Analyzer(self.config)
        # each document's terms counted under the bar, as ids in the order the terms first come (their columns,
        # the alphabetical order, known only at the end: the counting after the bar took twice the analysis's time)
        # (one flat array of 4-byte ids: an int64 array per document cost 8 bytes a token and ~100 a document)
        first_seen, ids, lengths = {}, array.array("i"), []
        for doc in tqdm(docs, desc="tf-idf", unit=" docs", **bar_options(progress)):
            doc_terms = analyzer(doc)
            ids.extend([first_seen.setdefault(t, len(first_seen)) for t in doc_terms])
            lengths.append(len(doc_terms))
        if not first_seen:  # (said before any attribute changes: a fitted index refitted so kept its old one)
            dropped = "punctuation and stop words" if self.config.stop_words else "punctuation"
            raise RnnkitError(
                f"the documents hold no terms (with {dropped} dropped); give documents with words"
            )
        # (set here, once every document is read: its terms were set before the check above, and an index that
        # failed to refit had no terms but its old matrix, which search failed on and save wrote)
        self.analyzer, self.terms = analyzer, sorted(first_seen)
        self.column = {t: j for j, t in enumerate(self.terms)}
        column = np.fromiter(map(self.column.__getitem__, first_seen), np.int32, len(first_seen))
        # the rows as CSR directly, each token a 1 its duplicates then summed in place (the COO of every token,
        # int64 rows and columns, and its conversion peaked at 5.5 times the matrix: 260 MB for the 47 MB of PTB 5 times over)
        cols = column[np.frombuffer(ids, np.int32)]
        del ids
        indptr = np.concatenate(([0], np.cumsum(lengths)))
        C = sp.csr_matrix((np.ones(len(cols)), cols, indptr), shape=(len(docs), len(self.terms)))
        del cols
        C.sum_duplicates()  # (as counts() builds it)
        N, df = C.shape[0], np.bincount(C.indices, minlength=C.shape[1])
        self.idf = 1 + (np.log((1 + N) / (1 + df)) if self.config.smooth_idf else np.log(N / df))
        self.matrix = self.weigh(C, lengths)
        return self

    def weigh(self, C: sp.csr_matrix, lengths=None) -> sp.csr_matrix:
        """TF(x, d) × IDF(x), then each row scaled to unit L2 norm.

        lengths: |d| of each document, its terms the index lacks included (default: the row sums of C,
        which leave them out); only tf="frequency" reads them."""
        X = C.astype(np.float64)
        if self.config.tf == "log":
            X.data = 1 + np.log(X.data)
        elif self.config.tf == "frequency":
            lengths = np.asarray(X.sum(axis=1)).ravel() if lengths is None else np.asarray(lengths)
            X = sp.diags(1 / np.maximum(lengths, 1)) @ X
        X = sp.csr_matrix(X @ sp.diags(self.idf))
        if self.config.norm == "l2":
            norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
            X = sp.csr_matrix(sp.diags(1 / np.where(norms > 0, norms, 1)) @ X)
        return X

    def transform(self, docs: list[str]) -> sp.csr_matrix:
        _not_str(docs, "TfidfIndex.transform takes a list of documents", "wrap one query in a list ([query])")
        terms = [self.analyzer(doc) for doc in docs]  # |d| counts the terms the index lacks too
        return self.weigh(self.counts(docs, terms), [len(t) for t in terms])

    def search(self, query: str, top: int = 10) -> list[tuple[int, float]]:
        """Documents by cosine similarity to the query: [(document index, cosine)], best first; equal cosines (to 12
        decimals) in document order."""
        if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
            raise count_error("top (how many documents to return)", top)
        q = self.transform([query])
        if q.nnz == 0:
            if (
                self.config.stop_words
                and not self.analyzer(query)
                and Analyzer(replace(self.config, stop_words=False), self.analyzer.marks, self.analyzer.nfc)(
                    query
                )
            ):
                # (it said no term is in the index, as if the words were missing from the documents)
                raise RnnkitError(f"the query {query!r} holds only stop words, which this index drops (it was built "
                                  "with stop_words, --stop-words); try other words")  # fmt: skip
            from rnnkit.data.corpus import bytes_hint  # (a Latin-1 terminal's 'café', read 'caf\udce9')

            raise RnnkitError(
                f"no term of the query {query!r} is in the index; try other words{bytes_hint(query)}"
            )
        cos = (self.matrix @ q.T).toarray().ravel()
        if self.config.norm is None:  # cosine needs unit vectors
            norms = np.sqrt(np.asarray(self.matrix.multiply(self.matrix).sum(axis=1)).ravel())
            cos = cos / np.where(norms > 0, norms, 1) / np.sqrt(q.multiply(q).sum())
        # equal cosines by document order: a document and itself three times over (one direction, its norm rounded
        # otherwise) ranked by their last bits, the repeated one first as often as not
        best = np.argsort(-np.round(cos, 12), kind="stable")[:top]
        return [(int(i), float(cos[i])) for i in best if cos[i] > 0]

    def save(self, directory) -> None:
        """tfidf.npz (the matrix), then index.json (config, terms, IDF and the sha256 of that tfidf.npz: a save
        stopped between the two leaves a pair that load refuses, not a new matrix read with old terms)."""
        self._fitted()
        d = check_save_path(directory, folder=True)
        npz = io.BytesIO()
        sp.save_npz(npz, self.matrix)
        self.sha256 = hashlib.sha256(npz.getvalue()).hexdigest()
        meta = json.dumps({"config": asdict(self.config), "terms": self.terms, "idf": self.idf.tolist(),
                           "tfidf_sha256": self.sha256, "word_marks": self.analyzer.marks})  # fmt: skip
        d.mkdir(exist_ok=True)  # the JSON first: a failure there wrote no half index
        with atomic_open(d / "tfidf.npz", "wb") as f:  # each file whole or the old one (rnnkit._io)
            f.write(npz.getvalue())
        write_text(d / "index.json", meta)

    @classmethod
    def load(cls, directory) -> "TfidfIndex":
        refuse_empty(directory, "the folder that `rnnkit tfidf index --out` wrote (`.` for this folder)")
        d = pathlib.Path(directory)
        # (said in Python's words: "cannot read a TF-IDF index in ix: [Errno 2] No such file or directory:
        # 'ix/index.json'", and "[Errno 20] Not a directory" for a file)
        if not d.is_dir():
            said = f"{d} is a file" if d.exists() else f"{d} not found"
            raise RnnkitError(f"{said}; give the folder that `rnnkit tfidf index --out` wrote")
        try:
            meta = json.loads((d / "index.json").read_text(encoding="utf-8-sig"))  # (a BOM: no edit)
            # an option no rnnkit so far saves is a newer one's (TfidfConfig's TypeError said to build an index)
            config = meta["config"]
            newer = (
                [k for k in config if k not in {f.name for f in fields(TfidfConfig)}]
                if isinstance(config, dict)
                else []
            )
            if newer:
                raise _NewerIndex(f"{d} is a TF-IDF index of a newer rnnkit (its config holds "
                                  f"{', '.join(map(repr, newer))}, which this one does not know); upgrade rnnkit to "
                                  "search it")  # fmt: skip
            index = cls(TfidfConfig(**config))
            npz = (d / "tfidf.npz").read_bytes()  # (missing, or unreadable: said as it was)
            if not is_zip(io.BytesIO(npz)):  # np.load would offer to unpickle it
                raise ValueError("its tfidf.npz is not a numpy .npz archive (damaged or replaced)")
            index.sha256 = meta.get("tfidf_sha256")  # None in an index saved without it
            if index.sha256 not in (None, hashlib.sha256(npz).hexdigest()):
                raise ValueError("its tfidf.npz is not the one its index.json was saved with (a save that "
                                 "stopped between the two files, or a file copied from another index)")  # fmt: skip
            index.matrix = sp.load_npz(io.BytesIO(npz)).tocsr()
            terms, idf = meta["terms"], meta["idf"]  # "terms": "abc" read as the terms a, b and c
            if (
                not isinstance(terms, list)
                or not all(isinstance(t, str) for t in terms)
                or len(set(terms)) < len(terms)
            ):
                raise ValueError(f"its terms must be a list of distinct terms (str), got {terms!r:.60}")
            if (
                not isinstance(idf, list)
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in idf
                )
            ):  # (NaN, which json reads, or <= 0: every cosine NaN or <= 0, and search listed nothing, exit 0)
                raise ValueError(f"its idf must be a list of numbers > 0, one per term, got {idf!r:.60}")
            index.terms, index.idf = terms, np.array(idf, dtype=float)
            if index.matrix.shape[1] != len(index.terms) or len(index.idf) != len(index.terms):
                raise ValueError(f"{index.matrix.shape[1]} columns and {len(index.idf)} idf values for "
                                 f"{len(index.terms)} terms")  # fmt: skip
        except _NewerIndex:
            raise
        # (zipfile's NotImplementedError, RuntimeError: a byte of the .npz made another compression or 'encrypted')
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, NotImplementedError,
                RuntimeError) as e:  # fmt: skip
            why = e  # an OSError not as "[Errno 2] No such file or directory: 'ix/index.json'"
            if isinstance(e, OSError) and e.strerror:
                name = pathlib.Path(e.filename or "").name
                missing = isinstance(e, FileNotFoundError) and name
                why = f"it holds no {name}" if missing else f"{name}: {e.strerror}" if name else e.strerror
            raise RnnkitError(
                f"cannot read a TF-IDF index in {d}: {why}; build one with `rnnkit tfidf index`"
            ) from None
        # an index saved before words kept their combining marks (no word_marks; none in its terms) is searched as
        # it was built: queries analysed the new way missed its terms ('हिन्दी' was 'ह', 'न', 'द' there)
        marks = meta.get("word_marks", any(unicodedata.category(c)[0] == "M" for t in index.terms for c in t))
        # one built before terms were composed (NFC) whose terms are not all composed analyses queries as it was built;
        # so does one saved before word_marks (older still): its split at the marks left no mark in its terms, but
        # composing a query made 'de\u0301cor' the term 'décor' where the index holds 'de' and 'cor'
        nfc = "word_marks" in meta and all(
            t.isascii() or unicodedata.is_normalized("NFC", t) for t in index.terms
        )
        index.analyzer = Analyzer(index.config, marks=bool(marks), nfc=nfc)
        index.column = {t: j for j, t in enumerate(index.terms)}
        return index
