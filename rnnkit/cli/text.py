"""Subcommands for the text tools: word2vec, neighbours, ngram, tfidf, markov."""

import codecs
import contextlib
import io
import json
import math
import os
import pathlib
import re
from dataclasses import asdict

from rnnkit._io import write_text
from rnnkit.cli import (
    check_writable,
    drawn_bar,
    finite_or_null,
    kind_of,
    made_out_folder,
    out_folder,
    print_pieces,
    refuse_overwrite,
    say,
    say_json,
)
from rnnkit.errors import RnnkitError, count_error, fits_int64

DRY_RUN_CHARS = 20_000
MARKOV_LENGTH = 30  # markov sample --length when not given


def add_commands(sub) -> None:
    p = sub.add_parser(
        "word2vec", help="train word vectors (CBOW or skip-gram) on a text file, one sentence a line"
    )
    p.add_argument("corpus", help="a UTF-8 text file (or one compressed with gzip), one sentence a line")
    p.add_argument("--out", required=True, help="folder for vectors.txt, vectors.bin and config.json")
    p.add_argument("--model", choices=["skip-gram", "cbow"], default="skip-gram",
                   help="skip-gram predicts each context word from the centre word; cbow the centre word from its "
                   "context")  # fmt: skip
    p.add_argument("--cbow-sum", action="store_true",
                   help="CBOW's h is the sum of the context vectors, as deck 003 writes it (default: their mean)")  # fmt: skip
    p.add_argument("--cbow-update", choices=["word2vec", "gradient"],
                   help="CBOW's context vectors move as word2vec.c and gensim move them (default), or by the exact "
                   "gradient of J (with the mean 1/m of word2vec's step; learns slower)")  # fmt: skip
    p.add_argument("--loss", choices=["negative", "softmax"], default="negative",
                   help="negative sampling (default), or the exact full softmax (small vocabularies)")  # fmt: skip
    p.add_argument("--negative", type=int,
                   help="noise words per pair for --loss negative, >= 1 (default: 5; not for --loss softmax)")  # fmt: skip
    for flag, kind, default, what in [
        ("--dimension", int, 100, "size of each word vector"),
        ("--window", int, 5, "most words on each side of the centre word (drawn from 1 to it per centre word)"),
        ("--sample", float, 1e-3, "subsampling threshold of frequent words (0: off)"),
        ("--alpha", float, 0.025, "initial learning rate"),
        # (--min-alpha: an --alpha below its default was refused naming it, a flag the command did not have)
        ("--min-alpha", float, 1e-4, "the learning rate at the end: --alpha decays linearly to it"),
        ("--seed", int, 0, "random seed in [0, 2^32)"),
    ]:  # fmt: skip
        p.add_argument(flag, type=kind, default=default, help=f"{what} (default: {default})")
    p.add_argument("--min-count", type=int, help="rarer words are dropped (default: 5; 1 with --dry-run)")
    p.add_argument("--epochs", type=int, help="passes over the corpus (default: 5; 1 with --dry-run)")
    p.add_argument("--backend", choices=["auto", "native", "torch"],
                   help="native: compiled per-pair loop (negative sampling); torch: batched minibatches "
                   "(default: auto; torch with --dry-run)")  # fmt: skip
    p.add_argument("--batch-size", type=int,
                   help="pairs per SGD step of the torch backend (default: 2048, at most 16 a word of the vocabulary or 256, whichever is more, a CBOW row of m context words counted as m pairs where it moves them by m times a pair's step; the native one takes pairs one by one)")  # fmt: skip
    p.add_argument("--workers", type=int,
                   help="threads of the native backend (default: 1; > 1: Hogwild, not bit-reproducible)")  # fmt: skip
    p.add_argument("--lower", action="store_true", help="lower-case the corpus")
    p.add_argument("--dry-run", action="store_true",
                   help="first 20k characters; one epoch, --min-count 1 and the torch backend unless given (smoke test)")  # fmt: skip
    p.set_defaults(func=cmd_word2vec)

    p = sub.add_parser("neighbours", help="nearest words of word vectors (word2vec text or binary format)")
    p.add_argument("vectors", help="a word2vec file, or the folder that `rnnkit word2vec --out` wrote")
    p.add_argument("words", nargs="+", metavar="WORD", help="words; with --analogy: A B C for A - B + C")
    p.add_argument("--topn", type=int, default=10, help="nearest words listed for each WORD (or the analogy)")
    p.add_argument("--analogy", action="store_true", help="the words nearest to A - B + C")
    p.add_argument("--format", choices=["auto", "text", "binary"], default="auto",
                   help="word2vec file format (default: guessed from the file)")  # fmt: skip
    p.add_argument("--unicode-errors", choices=["strict", "replace", "ignore"], default="strict",
                   help="a word that is not UTF-8 (word2vec.c cuts words at 100 bytes, inside a character): an "
                   "error (default), or its bad bytes replaced by U+FFFD or dropped, as gensim's unicode_errors")  # fmt: skip
    p.set_defaults(func=cmd_neighbours)

    ngram = sub.add_parser("ngram", help="n-gram language models").add_subparsers(
        dest="ngram", required=True, metavar="ACTION"
    )
    p = ngram.add_parser("train", help="count n-grams of a text file")
    p.add_argument("corpus", help="a UTF-8 text file (or one compressed with gzip)")
    p.add_argument("--out", required=True, help="model file (.npz)")
    p.add_argument(
        "-n", "--order", type=int, default=5, help="n: each token is predicted from the n-1 before it"
    )
    p.add_argument("--smoothing", choices=["kneser-ney", "modified-kneser-ney", "add-k"], default="kneser-ney",
                   help="interpolated Kneser-Ney (one discount per order), modified Kneser-Ney (D1, D2, D3+), or "
                   "add-k")  # fmt: skip
    p.add_argument("--k", type=float, default=None, help="add-k pseudo-count (add-k only; default: 1)")
    p.add_argument("--discount", type=float, default=None,
                   help="fixed discount in [0, 1] (kneser-ney only; default: estimated from the counts)")  # fmt: skip
    p.add_argument("--level", choices=["char", "word"], default="char",
                   help="tokens are characters, or words split at white space")  # fmt: skip
    p.add_argument("--lower", action="store_true", help="lower-case the corpus (words or characters)")
    p.add_argument(
        "--min-freq", type=int, default=1, help="tokens seen fewer times become <unk> (1 keeps every one)"
    )
    p.add_argument("--dry-run", action="store_true", help="the first 20k characters only (smoke test)")
    p.set_defaults(func=cmd_ngram_train, _parser=p)
    p = ngram.add_parser("score", help="log-probability of texts, ranked (as `rnnkit score` for the RNN LM)")
    p.add_argument("model", help="a model file that `rnnkit ngram train --out` wrote (.npz)")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts (quote each)")
    p.add_argument(
        "--context",
        default=None,
        help="text before each TEXT (default: a newline, the start of a line (<eos> to a word model), where the "
        "model knows one)",
    )
    p.add_argument("--json", action="store_true",
                   help="one JSON object per text, with the keys of `rnnkit score --json` but first_is_context (text, rank, log_prob, "
                   "nats, chars, nats_per_char, bits_per_char, perplexity; a word model says words, nats_per_word, "
                   "bits_per_word) and unknown: the tokens scored as <unk> (--context's first)")  # fmt: skip
    p.set_defaults(func=cmd_ngram_score, _parser=p)
    p = ngram.add_parser("eval", help="nats and bits per token of a text file",
                         description="The file is read at the start of a line (after a newline, <eos> to a word "
                         "model), as score reads a text.")  # fmt: skip
    p.add_argument("model", help="a model file that `rnnkit ngram train --out` wrote (.npz)")
    p.add_argument("file", help="a UTF-8 text file (or one compressed with gzip)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: file, log_prob, nats, chars (or words), nats_per_char, bits_per_char "
                   "(or _word), perplexity")  # fmt: skip
    p.set_defaults(func=cmd_ngram_eval, _parser=p)
    p = ngram.add_parser("sample", help="sample text (never <unk>)",
                         description="A char model's sample starts a line: it reads --prime (or nothing) after a "
                         "newline, as score reads a text.")  # fmt: skip
    p.add_argument("model", help="a model file that `rnnkit ngram train --out` wrote (.npz)")
    p.add_argument("--length", type=int, default=500, help="tokens to write")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="p ∝ p_model^(1/T): below 1 safer, above 1 more varied")  # fmt: skip
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--seed", type=int, default=0, help="random seed in [0, 2^32) (default: 0)")
    p.set_defaults(func=cmd_ngram_sample, _parser=p)
    p = ngram.add_parser("complete", help="greedy completion of a prefix (never <unk>)",
                         description="A char model reads PREFIX at the start of a line (after a newline), as score "
                         "reads a text.")  # fmt: skip
    p.add_argument("model", help="a model file that `rnnkit ngram train --out` wrote (.npz)")
    p.add_argument("prefix", help="text to continue (quote it)")
    p.add_argument("--length", type=int, default=40, help="tokens to add")
    p.set_defaults(func=cmd_ngram_complete, _parser=p)

    tfidf = sub.add_parser("tfidf", help="TF-IDF index and search").add_subparsers(
        dest="tfidf", required=True, metavar="ACTION"
    )
    p = tfidf.add_parser(
        "index", help="index documents: a folder of .txt files, or a file with one document a line"
    )
    p.add_argument(
        "documents",
        help="a folder of .txt files, one document each (those directly in it, not hidden), or a text file of one "
        "document a line (UTF-8, or one compressed with gzip)",
    )
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--tf", choices=["count", "frequency", "log"], default="count",
                   help="term frequency: the count c, c / the document's length, or 1 + log c")  # fmt: skip
    p.add_argument(
        "--smooth-idf", action="store_true", help="1 + log((1 + N) / (1 + df)) instead of 1 + log(N / df)"
    )
    p.add_argument("--stop-words", action="store_true", help="drop scikit-learn's English stop-word list")
    p.add_argument("--stem", action="store_true", help="reduce words to their Snowball (Porter 2) stems")
    p.add_argument("--dry-run", action="store_true", help="the first 100 documents only (smoke test)")
    p.set_defaults(func=cmd_tfidf_index, _parser=p)
    p = tfidf.add_parser("search", help="documents ranked by cosine similarity to a query")
    p.add_argument("index", help="the folder that `rnnkit tfidf index --out` wrote")
    p.add_argument("query", help="words to search for (quote them)")
    p.add_argument("--top", type=int, default=10, help="documents listed, the most similar first")
    p.set_defaults(func=cmd_tfidf_search, _parser=p)

    _add_markov(sub)


MARKOV_SOURCE = """\
The chain: --preset abe (deck 004's machine over the upper-case states A, B, E; the
default), --preset i-before-e ("i" before "e", except after "c", over the lower-case
letters a b c e i), or --text FILE: a chain of characters estimated from FILE, which
starts as the file's lines start and moves from character to character as the file
does. --preset and --text may go before or after the action."""

MARKOV_CHECK = """\
A STRING is allowed when some path of the chain writes it with every step of non-zero
probability: its first symbol must be one the chain can start with, and each next
symbol one it can move to from the one before. Symbols are case-sensitive: the abe
preset writes upper-case A B E, so 'abe' is not allowed but 'ABE' is. A --text chain
starts only as the file's lines start: 'the' is allowed when some line of the file
starts with 't' and each pair of neighbouring characters in 'the' occurs in the file,
but for one: a character that nothing follows in the file (its last one, found nowhere
else) is a dead end, from which the chain moves to any character, as sample does.
A STRING that is not allowed is printed with the reason.

"""


def _add_markov(sub) -> None:
    """`markov ACTION [options]`; the chain options (--preset, --text) go before or after the action."""
    import argparse

    def source_options(p) -> None:  # SUPPRESS: an option given at one level is not reset at the other
        source = p.add_mutually_exclusive_group()
        source.add_argument("--preset", choices=["abe", "i-before-e"], default=argparse.SUPPRESS,
                            help="one of deck 004's machines (default: abe)")  # fmt: skip
        source.add_argument("--text", metavar="FILE", default=argparse.SUPPRESS,
                            help="estimate a character chain from this file (UTF-8, or gzip of it) instead")  # fmt: skip

    def sample_options(p, note="") -> None:  # sample's own options, also accepted before the action
        p.add_argument("--length", type=int, default=argparse.SUPPRESS,
                       help=f"symbols to write (default: {MARKOV_LENGTH}){note}")  # fmt: skip
        p.add_argument(
            "--seed", type=int, default=argparse.SUPPRESS, help=f"random seed in [0, 2^32) (default: 0){note}"
        )

    kw = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    markov = sub.add_parser(
        "markov",
        help="Markov chains (deck 004): sample, check strings, stationary distribution",
        description="Markov chains as probabilistic finite-state machines (deck 004).\n\n" + MARKOV_SOURCE,
        **kw,
    )
    source_options(markov)
    sample_options(markov, "; sample only")
    actions = markov.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "sample",
        help="a string drawn from the chain",
        description="Write --length symbols: the first drawn from the start distribution, each next\n"
        "one from the transition table's row of the one before.\n\n" + MARKOV_SOURCE,
        **kw,
    )
    source_options(p)
    sample_options(p)
    p.set_defaults(_parser=p)
    p = actions.add_parser(
        "check",
        help="whether the chain can write each STRING, and if not, why",
        description=MARKOV_CHECK + MARKOV_SOURCE,
        **kw,
    )
    source_options(p)
    p.add_argument("strings", nargs="*", metavar="STRING", help="strings to check")
    p.set_defaults(_parser=p)
    p = actions.add_parser(
        "stationary",
        help="the stationary distribution of the states",
        description="The distribution π over the states with π P = π (the long-run share of time\n"
        "in each state), one state and its probability a line.\n\n" + MARKOV_SOURCE,
        **kw,
    )
    source_options(p)
    p.set_defaults(_parser=p)
    markov.set_defaults(func=cmd_markov)


def read_text(path, limit: int | None = None, empty: bool = False) -> str:
    """A UTF-8 text file, or one compressed with gzip, its byte-order mark dropped (it was the first word's first character); UTF-16 or UTF-32
    text and binary files are one error each, as the character models' corpora are (they were read as text). A file
    of white space alone is an error too, unless `empty`. `limit`: the first `limit` characters, of the file's first
    4 `limit` bytes only (a dry run read the whole corpus: 690 MB of memory for 20,000 characters of 232 MB)."""
    from rnnkit._io import read_bytes
    from rnnkit.data.corpus import not_utf8, refuse_wide

    most = None if limit is None else 4 * limit  # (UTF-8: at most 4 bytes a character)
    try:
        raw = read_bytes(path, most=most)  # a pipe or a device (/dev/zero) read without end
        cut = most is not None and len(raw) >= most  # the file goes on
        if raw[:2] == b"\x1f\x8b":  # gzip, as shared/data's Multi30k is shipped: its text
            raw = _gunzip(path, raw, most)
            cut = cut or most is not None and len(raw) >= most
        refuse_wide(path, raw[:256])
        if cut:  # a character cut at the end is left out
            decoder = codecs.getincrementaldecoder("utf-8")("ignore")
            decoder.decode(raw[-3:], final=False)
            raw = raw[: len(raw) - len(decoder.getstate()[0])]
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig").read()  # (universal newlines, as open)
    except IsADirectoryError:  # (said as train and eval say it, not "[Errno 21] Is a directory: '...'")
        raise RnnkitError(f"{path} is a folder; give one text file") from None
    # a missing file and one not UTF-8 as train and eval say them: they were Python's own words, "cannot read c.txt:
    # [Errno 2] No such file or directory: 'c.txt'" and "'utf-8' codec can't decode byte 0xe9 in position 3: ..."
    except FileNotFoundError:  # ('': an unset shell variable's "$CORPUS")
        said = f"{path} not found" if str(path).strip() else f"the file name is empty ({str(path)!r})"
        raise RnnkitError(f"{said}; give a text file") from None
    except UnicodeDecodeError as e:  # (its offset in the text after a byte-order mark)
        raise not_utf8(path, e.start + 3 * raw.startswith(codecs.BOM_UTF8)) from None
    except OSError as e:
        raise RnnkitError(f"cannot read {path}: {e.strerror or e}; give a UTF-8 text file") from None
    if "\0" in text:
        raise RnnkitError(
            f"{path} looks binary (a NUL byte at character {text.index(chr(0)):,}); give a text file"
        )
    text = text[:limit] if limit else text
    if not text.strip() and not empty:
        raise RnnkitError(f"{path} is empty; give a file with text")
    return text


def _gunzip(path, raw: bytes, most: int | None) -> bytes:
    """The text a gzip file holds (every member, as gunzip writes it), or its first `most` bytes from the start of
    the file `raw`. It was 'cannot read ...: 'utf-8' codec can't decode byte 0x8b in position 1'."""
    import gzip
    import zlib

    try:
        if most is None:
            return gzip.decompress(raw)
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, most)
    except (OSError, EOFError, zlib.error) as e:
        raise RnnkitError(f"cannot read {path}: it is a damaged gzip file ({e}); give a UTF-8 text file, or its "
                          "whole .gz") from None  # fmt: skip


def _not_empty(path: str, name: str, what: str) -> None:
    """An empty path ("$VECTORS" unset in a script) is '.' to pathlib: in a folder that holds one, the word vectors
    or the index there were read in silence; one line, as an empty CORPUS is."""
    if not path.strip():
        raise RnnkitError(f"{name} is empty; give {what} (`.` for this folder)")


def _positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, int) and value < 1:  # a count
            raise count_error(f"--{name.replace('_', '-')}", value)
        if not math.isfinite(value) or value <= 0:
            raise RnnkitError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")


def _out_file(path, make: bool = True) -> pathlib.Path:
    """--out as a file: a folder in its place is an error before any work starts; its folder is made now
    (make=False: later, with `out_folder(out.parent)`, once every other check has passed)."""
    if not str(path).strip():
        raise RnnkitError("--out is empty; give a file name, e.g. model.npz")
    out = pathlib.Path(path)
    if out.is_dir() or str(path).endswith(("/", os.sep)):  # models/ names a folder (pathlib drops the slash)
        raise RnnkitError(f"--out {path} is a folder; give a file name, e.g. {out / 'model.npz'}")
    # (`--out /dev/null`: the model was saved as /dev/null.npz, a new file among the devices, as root)
    if out.exists() and not out.is_file():
        raise RnnkitError(f"--out {path} is {kind_of(out)}; give a file name, e.g. model.npz")
    if out.parent.exists() and not out.parent.is_dir():
        raise RnnkitError(f"--out {out}: {out.parent} is a file, not a folder; give another path")
    check_writable(out, out.parent)
    if make:
        out_folder(out.parent)
    return out


def cmd_word2vec(args) -> int:
    from rnnkit.text import Word2Vec, Word2VecConfig
    from rnnkit.text.wordvectors import file_record

    if args.loss == "softmax" and args.negative is not None:
        raise RnnkitError(
            "--negative is the number of noise words of --loss negative, not used by --loss softmax; leave it out"
        )
    if args.model != "cbow" and (args.cbow_sum or args.cbow_update is not None):
        flag = "--cbow-sum" if args.cbow_sum else "--cbow-update"
        raise RnnkitError(f"{flag} is an option of CBOW; add --model cbow or leave it out")
    d = Word2VecConfig()
    given = {
        k: getattr(args, k)
        for k in ("model", "loss", "dimension", "window", "sample", "alpha", "min_alpha", "seed")
    }
    for name, default, dry in [("negative", d.negative, d.negative), ("min_count", d.min_count, 1),
                               ("epochs", d.epochs, 1), ("backend", d.backend, "torch"),
                               ("batch_size", d.batch_size, d.batch_size), ("workers", d.workers, d.workers)]:  # fmt: skip
        value = getattr(args, name)  # as given; else the --dry-run size; else the default
        given[name] = value if value is not None else dry if args.dry_run else default
    given["cbow_mean"], given["cbow_update"] = not args.cbow_sum, args.cbow_update or d.cbow_update
    config = Word2VecConfig(**given)
    w2v = Word2Vec(config)  # every option checked before --out is made
    written = [pathlib.Path(args.out) / name for name in ("vectors.txt", "vectors.bin", "config.json")]
    refuse_overwrite(args.out, written, [args.corpus], "CORPUS")
    # read before the backend is resolved: a first run compiles the native loop there (about a minute)
    text = read_text(args.corpus, DRY_RUN_CHARS if args.dry_run else None)
    backend = w2v.resolved_backend()
    name, why, other = {"native": ("batch_size", "it takes the pairs one by one", "torch"),
                        "torch": ("workers", "it steps its minibatches on one thread", "native")}[backend]  # fmt: skip
    value = getattr(args, name)
    if value is not None and (name, value) != ("workers", 1):  # as --negative above: no silent no-op
        flag = f"--{name.replace('_', '-')}"
        if config.loss == "softmax":  # (it said to add --backend native, which refuses --loss softmax)
            raise RnnkitError(f"{flag} has no effect on the torch backend, the one --loss softmax runs on; leave it "
                              "out (or use --loss negative with --backend native)")  # fmt: skip
        raise RnnkitError(f"{flag} has no effect on the {backend} backend ({why}); leave it out "
                          f"or add --backend {other}")  # fmt: skip
    with made_out_folder(args.out) as out:  # made before training; gone again if the corpus has no pairs
        # one sentence a line, a line as word2vec.c, gensim's LineSentence and ngram and tfidf end it: at a newline
        # (read_text makes \r\n and \r one), not at splitlines' U+2028, U+0085 or form feed inside a line
        # each word one str for all its occurrences (a dict's): split made a str of each, 60 bytes a word of the
        # corpus beside the list's 8 (110 MB of PTB twice over); and none of it held here while fit runs: the text
        # let go once split into lines, the sentences given as a generator, whose lists fit lets go of once encoded
        lines, shared = (line.lower() if args.lower else line for line in text.split("\n")), {}
        del text
        sentences = (list(map(shared.setdefault, words, words)) for words in map(str.split, lines))
        w2v.fit(sentences, progress=True)
        # config.json first without the files' record ("files": null), last with the size and sha256 of each vectors
        # file: load refuses a folder a run stopped in (the new vectors.txt beside the old vectors.bin)
        with _saving(2) as bar:  # (vectors.txt of 50,000 words x 100: 2.6 s)
            write_text(out / "config.json", json.dumps({**asdict(config), "files": None}, indent=2))
            w2v.wv.save(out / "vectors.txt")
            bar.update()
            w2v.wv.save(out / "vectors.bin", binary=True)
            files = {name: file_record(out / name) for name in ("vectors.txt", "vectors.bin")}
            write_text(out / "config.json", json.dumps({**asdict(config), "files": files}, indent=2))
            bar.update()
    say(f"{len(w2v.vocab):,} words x {config.dimension:,} dimensions -> {out}/vectors.txt, vectors.bin")
    return 0


def cmd_neighbours(args) -> int:
    from rnnkit.text import WordVectors

    _positive(topn=args.topn)
    _not_empty(args.vectors, "VECTORS", "a word2vec file, or the folder that `rnnkit word2vec --out` wrote")
    binary = {"auto": None, "text": False, "binary": True}[args.format]
    wv = WordVectors.load(args.vectors, binary, args.unicode_errors)
    if args.analogy:
        if len(args.words) != 3:
            raise RnnkitError(
                f"--analogy needs exactly three words A B C (for A - B + C), got {len(args.words)}"
            )
        a, b, c = args.words
        results = [wv.analogy(a, b, c, args.topn)]  # an unknown word is an error before any output
        say(f"{a} - {b} + {c}:")
    else:
        results = [wv.neighbours(w, args.topn) for w in args.words]
    # (words of another language: escaped where the output lacks their characters, as say() writes a report)
    for word, near in zip(args.words, results):
        if not args.analogy:
            say(f"{word}:")
        for w, cos in near:
            say(f"  {cos:.4f}  {w}")
    return 0


def cmd_ngram_train(args) -> int:
    from rnnkit.text import NGramLM

    if args.smoothing == "add-k" and args.discount is not None:
        raise RnnkitError(
            "--discount is for Kneser-Ney smoothing, not --smoothing add-k; leave it out or use --k"
        )
    # (one D for every count, D1 = D2 = D3+: kneser-ney's model, bit for bit)
    if args.smoothing == "modified-kneser-ney" and args.discount is not None:
        raise RnnkitError(
            "--discount fixes one discount for every count, which makes modified-kneser-ney plain kneser-ney; "
            "give --smoothing kneser-ney with it, or leave it out to estimate D1, D2 and D3+"
        )
    if args.smoothing != "add-k" and args.k is not None:
        raise RnnkitError(
            f"--k is the add-k pseudo-count, not used by --smoothing {args.smoothing}; "
            "leave it out or use --smoothing add-k"
        )
    if args.order < 1:
        raise count_error("-n/--order (the n-gram order)", args.order)
    fits_int64("-n/--order (the n-gram order)", args.order)
    if args.min_freq < 1:
        raise count_error("--min-freq", args.min_freq, " (1 keeps every token)")
    out = _out_file(args.out, make=False)
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")  # as numpy names it
    refuse_overwrite(args.out, [out], [args.corpus], "CORPUS")
    lm = NGramLM(args.order, args.smoothing, args.k, args.discount, args.level, args.lower, args.min_freq)
    text = read_text(args.corpus, DRY_RUN_CHARS if args.dry_run else None)
    lm.fit(text, progress=True)
    if not lm.knows_tokens() and lm.min_freq > 1 and lm.vocab.counts[0] > 0:  # it could only ever write <unk>
        raise RnnkitError(
            f"with --min-freq {args.min_freq} the model knows no {args.level} but <unk> (none occurs "
            f"{args.min_freq} times in {args.corpus}); lower --min-freq"
        )
    if not lm.knows_tokens():  # (lowering --min-freq, at 1, could not help)
        raise RnnkitError(f"{args.corpus} holds no {args.level} but line ends and <unk>; give a text with "
                          f"{args.level}s")  # fmt: skip
    out_folder(out.parent)  # made once every option and the corpus are checked
    with _saving(1) as bar:
        lm.save(out)
        bar.update()
    n_tokens = len(lm.vocab)
    say(f"{args.order}-gram {args.level} model, {n_tokens:,} token{'' if n_tokens == 1 else 's'}, "
        f"{sum(len(k) for k in lm.keys[1:]):,} n-grams -> {out}")  # fmt: skip
    return 0


@contextlib.contextmanager
def _saving(files: int):
    """A bar over the files a command writes once its work is done: compressing a big model or index takes seconds
    (ngram train of 4 MB, a 7-gram char model: 4.7 s; tfidf index of 12 MB: 2 s), which sat silent after the work's
    bar said 100%."""
    from tqdm import tqdm

    from rnnkit._io import bar_options

    with tqdm(total=files, desc="saving", unit=" files", **bar_options()) as bar:
        yield bar


def _load_lm(path):
    from rnnkit.text import NGramLM

    # ("$MODEL" unset in a script: pathlib reads '' as '.', said as 'cannot read n-gram model .: Is a directory')
    if not str(path).strip():
        raise RnnkitError("MODEL is empty; give a model file that `rnnkit ngram train --out` wrote (.npz)")
    return NGramLM.load(path)


def cmd_ngram_score(args) -> int:
    from rnnkit.data.corpus import bytes_hint
    from rnnkit.text.ngram import text_tokens

    lm = _load_lm(args.model)
    context = args.context if args.context is not None else _line_start(lm)
    n = len(args.texts)  # (of several, an error names which, as rnnkit score does: 'TEXT 2 of 3 ('  ')')
    scored = []
    for i, t in enumerate(args.texts, 1):
        if not lm.encode(t).size:
            what = "TEXT" if n == 1 else f"TEXT {i} of {n} ({t!r:.40})"
            raise RnnkitError(f"{what} has no {lm.level} to score; give some text")
        scored.append((t, lm.score(t, context)))
    results = sorted(scored, key=lambda r: -r[1].log_prob)
    unit = lm.level
    before = text_tokens(context, lm.level, lm.lower)  # its unknown tokens read as <unk> too (were unsaid)
    for rank, (text, s) in enumerate(results, 1):
        unknown = lm.vocab.unknown([*before, *text_tokens(text, lm.level, lm.lower)])
        if args.json:  # (in JSON's escapes where the output lacks a character, as rnnkit score --json)
            say_json(finite_or_null({"rank": rank, "text": text, **s.as_dict(lm.level), "unknown": unknown}))
            continue
        # (a Latin-1 terminal's 'café', read 'caf\udce9': the hint sample, score and complete give)
        note = f"  (unknown, scored as <unk>: {unknown}){bytes_hint(unknown)}" if unknown else ""
        # (the text quoted as repr quotes it: escaped where the output lacks a character, as ascii() writes it)
        say(f"{rank}. log p = {s.log_prob:.3f} nats  {s.nats_per_token:.4f} nats/{unit}  "
            f"{s.bits_per_token:.4f} bits/{unit}  perplexity {s.perplexity:.3f}  {text!r}{note}")  # fmt: skip
    return 0


def cmd_ngram_eval(args) -> int:
    lm = _load_lm(args.model)
    # the file starts a line, as fit counts its text
    s = lm.score(read_text(args.file), _line_start(lm), progress=True)
    result = {"file": args.file, **s.as_dict(lm.level)}
    # (a FILE named in another language: escaped where the output lacks its characters, as rnnkit eval writes it)
    say(json.dumps(finite_or_null(result)) if args.json else f"{args.file}: {s.nats_per_token:.4f} nats/{lm.level}, "
        f"{s.bits_per_token:.4f} bits/{lm.level}, perplexity {s.perplexity:.3f} ({s.tokens:,} tokens)")  # fmt: skip
    return 0


def cmd_ngram_sample(args) -> int:
    _positive(length=args.length, temperature=args.temperature)
    if not math.isfinite(1.0 / args.temperature):  # (NgramLM.sample's own line names its complete() method)
        raise RnnkitError(
            f"--temperature {args.temperature} is too small: 1/temperature is beyond float64; give 1e-300 or more, "
            "or use `rnnkit ngram complete` for greedy text"
        )
    lm = _load_lm(args.model)
    alpha = 1.0 / args.temperature
    pieces = lm.iter_generate(_line_start(lm) + args.prime, args.length, alpha, args.seed)
    with drawn_bar(pieces, "ngram sample", f" {lm.level}s", args.length) as drawn:
        _print_after(lm, args.prime, drawn)
    return 0


def _line_start(lm) -> str:
    """What a text is read after: it starts a line (a newline before it, <eos> to a word model), as ngram score
    reads it by default and rnnkit score, sample and complete read theirs. A word model's had no context, and its
    first word was scored by Kneser-Ney's continuation counts, not as a sentence's first word (PTB's "the stock
    market fell sharply": -23.86 nats for -21.59). A model that knows no line end (a text of no newline) reads it
    after no context, as rnnkit score does: "\n" was its <unk>, the context of a rare word."""
    return "\n" if ("<eos>" if lm.level == "word" else "\n") in lm.vocab else ""


def _after(lm, prefix: str, continuation: str) -> str:
    """prefix + continuation, with a space between two words (not before a newline, nor after a space)."""
    word = lm.level == "word" and prefix and continuation
    return (
        prefix + (" " if word and not prefix[-1].isspace() and continuation[0] != "\n" else "") + continuation
    )


def _print_after(lm, prefix: str, pieces) -> None:
    """print(_after(lm, prefix, "".join(pieces))), piece by piece as they come."""
    pieces = iter(pieces)
    head = next(pieces, "")
    print_pieces(pieces, _after(lm, prefix, head) if head else prefix)


def cmd_ngram_complete(args) -> int:
    _positive(length=args.length)
    if not args.prefix:
        raise RnnkitError("PREFIX is empty; give some text to complete")
    lm = _load_lm(args.model)
    pieces = lm.iter_generate(_line_start(lm) + args.prefix, args.length, alpha=None)
    with drawn_bar(pieces, "ngram complete", f" {lm.level}s", args.length) as drawn:
        _print_after(lm, args.prefix, drawn)
    return 0


def _documents(path, limit=None) -> tuple[list[str], list[str]]:
    """(names, texts): the non-empty .txt files of a folder, or the non-empty lines of a file, each named file:N with
    N its line number in the file as an editor or grep -n counts it (blank lines too; they were skipped). An empty
    file is skipped as a blank line is (one stopped the whole index: 'docs/b.txt is empty'), and so is a folder named
    .txt (it stopped it: 'Is a directory') and a hidden file, as the shell's *.txt skips it (macOS's ._a.txt beside
    a.txt on a shared drive, binary, stopped it: 'looks binary')."""
    p = pathlib.Path(path)
    if p.is_dir():
        files = [f for f in sorted(p.glob("*.txt")) if not f.is_dir() and not f.name.startswith(".")][:limit]
        if not files:  # (else fit's 'no documents to index; give at least one non-empty document')
            raise RnnkitError(f"{p} holds no .txt file (tfidf index reads the .txt files directly in a folder, not "
                              "in its subfolders); give a folder of .txt files, or a file with one document a line")  # fmt: skip
        named = [(_shown(f.name), read_text(f, empty=True)) for f in files]
        return [n for n, t in named if t.strip()], [t for _, t in named if t.strip()]
    numbered = [(n, line) for n, line in enumerate(read_text(p).split("\n"), 1) if line.strip()][:limit]
    return [f"{_shown(p.name)}:{n}" for n, _ in numbered], [line for _, line in numbered]


def _shown(name: str) -> str:
    """A file name as documents.json can hold it: bytes that are not UTF-8 (a Latin-1 'caf\\xe9.txt' unpacked from an old
    archive, read by Python as a lone surrogate) written as \\xe9, as ls -b does. They stopped the index at
    documents.json, the last of its files ('the output holds characters ('\\udce9') that its encoding, utf-8, can't
    write; set PYTHONIOENCODING=utf-8'), which no setting fixed, and search refused the half index."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def cmd_tfidf_index(args) -> int:
    from rnnkit.text import TfidfConfig, TfidfIndex

    # ("$DOCS" unset in a script: pathlib reads '' as '.', and the current folder's .txt files were indexed in silence)
    if not args.documents.strip():
        raise RnnkitError(
            "DOCUMENTS is empty; give a folder of .txt files, or a text file of one document a line"
        )
    written = [pathlib.Path(args.out) / name for name in ("tfidf.npz", "index.json", "documents.json")]
    if pathlib.Path(args.documents).is_dir():  # (the .txt files _documents reads)
        refuse_overwrite(args.out, written, pathlib.Path(args.documents).glob("*.txt"), "the document")
    else:
        refuse_overwrite(args.out, written, [args.documents], "DOCUMENTS")
    with made_out_folder(args.out) as out:  # gone again if the documents are empty, missing or binary
        names, texts = _documents(args.documents, 100 if args.dry_run else None)
        config = TfidfConfig(
            tf=args.tf, smooth_idf=args.smooth_idf, stop_words=args.stop_words, stem=args.stem
        )
        index = TfidfIndex(config).fit(texts, progress=True)
        with _saving(len(written)) as bar:
            index.save(out)
            bar.update(2)
            docs = [{"name": n, "preview": t[:100].replace("\n", " ")} for n, t in zip(names, texts)]
            # with the sha256 of its tfidf.npz: an index stopped before this file would be read with the old one's
            docs = {"tfidf_sha256": index.sha256, "documents": docs}
            write_text(out / "documents.json", json.dumps(docs, ensure_ascii=False))
            bar.update()
    say(f"{len(texts):,} document{'s' if len(texts) != 1 else ''}, {len(index.terms):,} terms -> {args.out}")
    return 0


def cmd_tfidf_search(args) -> int:
    from rnnkit.text import TfidfIndex

    _positive(top=args.top)
    _not_empty(args.index, "INDEX", "the folder that `rnnkit tfidf index --out` wrote")
    index = TfidfIndex.load(args.index)
    path = pathlib.Path(args.index) / "documents.json"
    try:
        docs = json.loads(path.read_text(encoding="utf-8-sig"))  # (a BOM: no edit)
        if isinstance(docs, dict):  # a list alone in an index written without the sha256
            if docs.get("tfidf_sha256") != index.sha256:
                raise ValueError(
                    "it was written with another tfidf.npz (an index stopped before writing it, or a copy from another)"
                )
            docs = docs.get("documents")
        if not isinstance(docs, list) or len(docs) != index.matrix.shape[0]:
            raise ValueError(f"it lists {len(docs) if isinstance(docs, list) else 'no'} documents for the "
                             f"index's {index.matrix.shape[0]}")  # fmt: skip
        for d in docs:  # each with the name and preview the results print (a KeyError or TypeError traceback)
            if not isinstance(d, dict) or not all(isinstance(d.get(k), str) for k in ("name", "preview")):
                raise ValueError(f"a document in it is {d!r:.60}, not a name and a preview (strings)")
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        raise RnnkitError(
            f"cannot read {path}: {reason}; rebuild the index with `rnnkit tfidf index`"
        ) from None
    for rank, (i, cos) in enumerate(index.search(args.query, args.top), 1):
        # (a document named or written in another language: escaped where the output lacks its characters)
        say(f"{rank}. {cos:.4f}  {docs[i]['name']}  {docs[i]['preview']}")
    return 0


def line_starts(text: str) -> list[str]:
    """The first character of each line of text that has one (lines end at a newline, as read_text leaves them),
    found in place: the list of every line that text.split("\\n") made for it cost the text's size again and 49 bytes
    a line (`rnnkit markov --text` of a 112 MB text peaked at 495 MB, 371 MB without it)."""
    return re.findall(r"^.", text, re.MULTILINE)


def cmd_markov(args) -> int:
    from rnnkit.text.markov import PRESETS, MarkovChain

    preset, text = getattr(args, "preset", None), getattr(args, "text", None)
    if preset and text is not None:  # one before the action, the other after it
        raise RnnkitError("give --preset or --text, not both")
    if args.action != "sample":  # given before the action: sample's options, not this one's
        for name in ("length", "seed"):
            if hasattr(args, name):
                raise RnnkitError(f"--{name} is for markov sample, not markov {args.action}; leave it out")
    if text is not None and not text.strip():  # (an unset variable's: it sampled the abe preset in silence)
        raise RnnkitError("--text is empty; give a text file, or leave --text out for the abe preset")
    length = getattr(args, "length", MARKOV_LENGTH)
    # before --text is read and counted (a bad --length, or no STRING, was said after that work)
    if args.action == "sample":
        _positive(length=length)
    if args.action == "check" and not args.strings:
        raise RnnkitError("markov check needs at least one STRING to check")
    if text is not None:
        body = read_text(text)
        chain = MarkovChain.estimate([body], starts=line_starts(body), progress=True)
    else:
        chain = PRESETS[preset or "abe"]()
    if args.action == "sample":
        with drawn_bar(
            chain.iter_sample(length, getattr(args, "seed", 0)), "markov sample", " symbols", length
        ) as drawn:
            print_pieces(drawn)
    elif args.action == "check":
        starts = f"no line of {text} starts with" if text else "the chain never starts with"
        for s in args.strings:
            reason = chain.why_not(s, starts)
            say(f"allowed: {s}" if reason is None else f"not allowed: {s}  ({reason})")
    else:  # (check's lines and these, its report: escaped where the output lacks a character, as say() writes them)
        for state, p in zip(chain.states, chain.stationary()):
            say(f"{state!r}\t{p:.6f}")
    return 0
