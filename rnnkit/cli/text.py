"""Subcommands for the text tools: word2vec, neighbours, ngram, tfidf, markov."""

import json
import math
import pathlib
from dataclasses import asdict

from rnnkit.cli import out_folder
from rnnkit.errors import RnnkitError

DRY_RUN_CHARS = 20_000


def add_commands(sub) -> None:
    p = sub.add_parser(
        "word2vec", help="train word vectors (CBOW or skip-gram) on a text file, one sentence a line"
    )
    p.add_argument("corpus")
    p.add_argument("--out", required=True, help="folder for vectors.txt, vectors.bin and config.json")
    p.add_argument("--model", choices=["skip-gram", "cbow"], default="skip-gram")
    p.add_argument("--loss", choices=["negative", "softmax"], default="negative")
    for flag, kind, default in [("--dimension", int, 100), ("--window", int, 5), ("--negative", int, 5),
                                ("--sample", float, 1e-3), ("--min-count", int, 5), ("--epochs", int, 5),
                                ("--alpha", float, 0.025), ("--batch-size", int, 2048), ("--seed", int, 0)]:  # fmt: skip
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--backend", choices=["auto", "native", "torch"], default="auto",
                   help="native: compiled per-pair loop (negative sampling); torch: batched minibatches")  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=1, help="native threads (> 1: Hogwild, not bit-reproducible)"
    )
    p.add_argument("--lower", action="store_true", help="lower-case the corpus")
    p.add_argument(
        "--dry-run", action="store_true", help="one epoch, torch backend, first 20k characters (smoke test)"
    )
    p.set_defaults(func=cmd_word2vec)

    p = sub.add_parser("neighbours", help="nearest words of word vectors (word2vec text or binary format)")
    p.add_argument("vectors")
    p.add_argument("words", nargs="+", metavar="WORD", help="words; with --analogy: A B C for A - B + C")
    p.add_argument("--topn", type=int, default=10)
    p.add_argument("--analogy", action="store_true", help="the words nearest to A - B + C")
    p.add_argument("--format", choices=["auto", "text", "binary"], default="auto",
                   help="word2vec file format (default: guessed from the file)")  # fmt: skip
    p.set_defaults(func=cmd_neighbours)

    ngram = sub.add_parser("ngram", help="n-gram language models").add_subparsers(dest="ngram", required=True)
    p = ngram.add_parser("train", help="count n-grams of a text file")
    p.add_argument("corpus")
    p.add_argument("--out", required=True, help="model file (.npz)")
    p.add_argument("-n", "--order", type=int, default=5)
    p.add_argument(
        "--smoothing", choices=["kneser-ney", "modified-kneser-ney", "add-k"], default="kneser-ney"
    )
    p.add_argument("--k", type=float, default=1.0, help="add-k pseudo-count")
    p.add_argument(
        "--discount", type=float, default=None, help="fixed Kneser-Ney discount (default: estimated)"
    )
    p.add_argument("--level", choices=["char", "word"], default="char")
    p.add_argument("--lower", action="store_true")
    p.add_argument("--min-freq", type=int, default=1)
    p.add_argument("--dry-run", action="store_true", help="the first 20k characters only (smoke test)")
    p.set_defaults(func=cmd_ngram_train)
    p = ngram.add_parser("score", help="log-probability of texts, ranked (as `rnnkit score` for the RNN LM)")
    p.add_argument("model")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument(
        "--context", default=None, help="text before each TEXT (default: a newline for char models)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.set_defaults(func=cmd_ngram_score)
    p = ngram.add_parser("eval", help="nats and bits per token of a text file")
    p.add_argument("model")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ngram_eval)
    p = ngram.add_parser("sample", help="sample text")
    p.add_argument("model")
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_ngram_sample)
    p = ngram.add_parser("complete", help="greedy completion of a prefix")
    p.add_argument("model")
    p.add_argument("prefix")
    p.add_argument("--length", type=int, default=40)
    p.set_defaults(func=cmd_ngram_complete)

    tfidf = sub.add_parser("tfidf", help="TF-IDF index and search").add_subparsers(
        dest="tfidf", required=True
    )
    p = tfidf.add_parser(
        "index", help="index documents: a folder of .txt files, or a file with one document a line"
    )
    p.add_argument("documents")
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--tf", choices=["count", "frequency", "log"], default="count")
    p.add_argument(
        "--smooth-idf", action="store_true", help="1 + log((1 + N) / (1 + df)) instead of 1 + log(N / df)"
    )
    p.add_argument("--stop-words", action="store_true")
    p.add_argument("--stem", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="the first 100 documents only (smoke test)")
    p.set_defaults(func=cmd_tfidf_index)
    p = tfidf.add_parser("search", help="documents ranked by cosine similarity to a query")
    p.add_argument("index")
    p.add_argument("query")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(func=cmd_tfidf_search)

    p = sub.add_parser(
        "markov", help="Markov chains (deck 004): sample, check strings, stationary distribution"
    )
    p.add_argument("action", choices=["sample", "check", "stationary"])
    p.add_argument("strings", nargs="*", metavar="STRING", help="strings to check")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=["abe", "i-before-e"], default="abe")
    source.add_argument("--text", help="estimate a character chain from this file instead")
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_markov)


def read_text(path, limit: int | None = None) -> str:
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RnnkitError(f"cannot read {path}: {e}; give a UTF-8 text file") from None
    text = text[:limit] if limit else text
    if not text.strip():
        raise RnnkitError(f"{path} is empty; give a file with text")
    return text


def _positive(**values) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value <= 0:
            raise RnnkitError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")


def _out_file(path) -> pathlib.Path:
    """--out as a file: its folder is made now; a folder in its place is an error before any work starts."""
    out = pathlib.Path(path)
    if out.is_dir():
        raise RnnkitError(f"--out {out} is a folder; give a file name, e.g. {out / 'model.npz'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise RnnkitError(f"--out {out}: {out.parent} is a file, not a folder; give another path")
    out_folder(out.parent)
    return out


def cmd_word2vec(args) -> int:
    from rnnkit.text import Word2Vec, Word2VecConfig

    out = out_folder(args.out)
    text = read_text(args.corpus, DRY_RUN_CHARS if args.dry_run else None)
    sentences = [(line.lower() if args.lower else line).split() for line in text.splitlines()]
    config = Word2VecConfig(**{k: getattr(args, k) for k in ("model", "loss", "dimension", "window", "negative",
                               "sample", "min_count", "epochs", "alpha", "batch_size", "seed", "backend", "workers")})  # fmt: skip
    if args.dry_run:
        config.epochs, config.min_count, config.backend = 1, 1, "torch"
    w2v = Word2Vec(config).fit(sentences, progress=True)
    w2v.wv.save(out / "vectors.txt")
    w2v.wv.save(out / "vectors.bin", binary=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    print(f"{len(w2v.vocab)} words x {config.dimension} dimensions -> {out}/vectors.txt, vectors.bin")
    return 0


def cmd_neighbours(args) -> int:
    from rnnkit.text import WordVectors

    _positive(topn=args.topn)
    wv = WordVectors.load(args.vectors, binary={"auto": None, "text": False, "binary": True}[args.format])
    if args.analogy:
        if len(args.words) != 3:
            raise RnnkitError(
                f"--analogy needs exactly three words A B C (for A - B + C), got {len(args.words)}"
            )
        a, b, c = args.words
        print(f"{a} - {b} + {c}:")
        results = [wv.analogy(a, b, c, args.topn)]
    else:
        results = [wv.neighbours(w, args.topn) for w in args.words]
    for word, near in zip(args.words, results):
        if not args.analogy:
            print(f"{word}:")
        for w, cos in near:
            print(f"  {cos:.4f}  {w}")
    return 0


def cmd_ngram_train(args) -> int:
    from rnnkit.text import NGramLM

    out = _out_file(args.out)
    out = out if out.suffix == ".npz" else out.with_name(out.name + ".npz")  # as numpy names it
    text = read_text(args.corpus, DRY_RUN_CHARS if args.dry_run else None)
    lm = NGramLM(
        args.order, args.smoothing, args.k, args.discount, args.level, args.lower, args.min_freq
    ).fit(text, progress=True)
    lm.save(out)
    print(f"{args.order}-gram {args.level} model, {len(lm.vocab)} tokens, {sum(len(k) for k in lm.keys[1:]):,} n-grams -> {out}")  # fmt: skip
    return 0


def _load_lm(path):
    from rnnkit.text import NGramLM

    return NGramLM.load(path)


def cmd_ngram_score(args) -> int:
    from rnnkit.text.ngram import text_tokens

    lm = _load_lm(args.model)
    context = args.context if args.context is not None else ("\n" if lm.level == "char" else "")
    results = sorted(((t, lm.score(t, context)) for t in args.texts), key=lambda r: -r[1].log_prob)
    unit = lm.level
    for rank, (text, s) in enumerate(results, 1):
        unknown = lm.vocab.unknown(text_tokens(text, lm.level, lm.lower))
        if args.json:
            print(
                json.dumps(
                    {"rank": rank, "text": text, **s.as_dict(), "unknown": unknown}, ensure_ascii=False
                )
            )
            continue
        note = f"  (unknown, scored as <unk>: {unknown})" if unknown else ""
        print(f"{rank}. log p = {s.log_prob:.3f} nats  {s.nats_per_token:.4f} nats/{unit}  "
              f"{s.bits_per_token:.4f} bits/{unit}  perplexity {s.perplexity:.3f}  {text!r}{note}")  # fmt: skip
    return 0


def cmd_ngram_eval(args) -> int:
    lm = _load_lm(args.model)
    s = lm.score(read_text(args.file))
    result = {"file": args.file, **s.as_dict()}
    print(json.dumps(result) if args.json else f"{args.file}: {s.nats_per_token:.4f} nats/{lm.level}, "
          f"{s.bits_per_token:.4f} bits/{lm.level}, perplexity {s.perplexity:.3f} ({s.tokens:,} tokens)")  # fmt: skip
    return 0


def cmd_ngram_sample(args) -> int:
    _positive(length=args.length, temperature=args.temperature)
    lm = _load_lm(args.model)
    sep = " " if lm.level == "word" and args.prime else ""
    print(args.prime + sep + lm.sample(args.length, args.prime, args.temperature, args.seed))
    return 0


def cmd_ngram_complete(args) -> int:
    _positive(length=args.length)
    if not args.prefix:
        raise RnnkitError("PREFIX is empty; give some text to complete")
    lm = _load_lm(args.model)
    sep = " " if lm.level == "word" else ""
    print(args.prefix + sep + lm.complete(args.prefix, args.length))
    return 0


def _documents(path, limit=None) -> tuple[list[str], list[str]]:
    """(names, texts): the .txt files of a folder, or the non-empty lines of a file."""
    p = pathlib.Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.txt"))[:limit]
        return [f.name for f in files], [read_text(f) for f in files]
    lines = [line for line in read_text(p).splitlines() if line.strip()][:limit]
    return [f"{p.name}:{i + 1}" for i in range(len(lines))], lines


def cmd_tfidf_index(args) -> int:
    from rnnkit.text import TfidfConfig, TfidfIndex

    out_folder(args.out)
    names, texts = _documents(args.documents, 100 if args.dry_run else None)
    config = TfidfConfig(tf=args.tf, smooth_idf=args.smooth_idf, stop_words=args.stop_words, stem=args.stem)
    index = TfidfIndex(config).fit(texts, progress=True)
    index.save(args.out)
    docs = [{"name": n, "preview": t[:100].replace("\n", " ")} for n, t in zip(names, texts)]
    (pathlib.Path(args.out) / "documents.json").write_text(json.dumps(docs, ensure_ascii=False))
    print(f"{len(texts)} documents, {len(index.terms)} terms -> {args.out}")
    return 0


def cmd_tfidf_search(args) -> int:
    from rnnkit.text import TfidfIndex

    _positive(top=args.top)
    index = TfidfIndex.load(args.index)
    path = pathlib.Path(args.index) / "documents.json"
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        raise RnnkitError(
            f"cannot read {path}: {reason}; rebuild the index with `rnnkit tfidf index`"
        ) from None
    for rank, (i, cos) in enumerate(index.search(args.query, args.top), 1):
        print(f"{rank}. {cos:.4f}  {docs[i]['name']}  {docs[i]['preview']}")
    return 0


def cmd_markov(args) -> int:
    from rnnkit.text.markov import PRESETS, MarkovChain

    chain = MarkovChain.estimate([read_text(args.text)]) if args.text else PRESETS[args.preset]()
    if args.action == "sample":
        _positive(length=args.length)
        print(chain.sample(args.length, args.seed))
    elif args.action == "check":
        if not args.strings:
            raise RnnkitError("markov check needs at least one STRING to check")
        for s in args.strings:
            print(f"{'allowed' if chain.allows(s) else 'not allowed'}: {s}")
    else:
        for state, p in zip(chain.states, chain.stationary()):
            print(f"{state!r}\t{p:.6f}")
    return 0
