"""Text baselines: word2vec against gensim on PTB, and character Kneser-Ney n-grams on Tiny Shakespeare.

    .venv/bin/python bench/text.py [--data DIR] [--epochs 5] [--max-order 10] [--repeats 2] [--skip-torch]

word2vec: skip-gram, negative sampling 5, window 5, 100 dimensions, 5 epochs, sample 1e-3, min_count 5,
alpha 0.025 for both (CBOW: the same at alpha 0.05, word2vec.c's CBOW default); words/s = corpus words x epochs / wall time of training (vocabulary included).
Quality with the same code for both (rnnkit.text.WordVectors): WordSim-353 Spearman and Google analogy
accuracy (the files inside gensim), on the pairs / questions whose words both vocabularies hold, an
analogy answered by the nearest word of those both hold.
n-grams: first 90% of Tiny Shakespeare to train, last 10% to validate; val nats and bits per character.
"""

import argparse
import importlib.util
import math
import os
import pathlib
import sys
import time
from collections import Counter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from _results import (  # noqa: E402
    add_no_write,
    check_results,
    folder,
    int_at_least,
    machine_line,
    markdown_table,
    plural,
    run_main,
    update_results,
)

from rnnkit.text import NGramLM, Word2Vec, WordVectors, w2v_native  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
# (RNNKIT_DATA empty is unset, as rnnkit's corpus reader takes it)
DATA = os.environ.get("RNNKIT_DATA") or str(ROOT.parent / "shared" / "data")
SETTINGS = dict(dimension=100, window=5, negative=5, sample=1e-3, min_count=5, alpha=0.025, min_alpha=1e-4)


def word2vec_rows(data: pathlib.Path, epochs: int, skip_torch: bool, repeats: int, model: str = "skip-gram"):
    """Skip-gram: gensim and rnnkit's native loop on 1 and 2 workers, and the torch backend. CBOW (the mean, alpha
    0.05, word2vec.c's CBOW default): gensim and rnnkit's native loop on 1 worker, with word2vec.c's update of the
    context vectors and with the exact gradient."""
    import gensim
    from gensim.models import Word2Vec as GensimWord2Vec
    from gensim.test.utils import datapath

    sentences = [line.split() for line in (data / "ptb" / "ptb.train.txt").read_text().splitlines()]
    words = sum(len(s) for s in sentences) * epochs
    w2v_native.load()  # compile outside the timing
    settings = SETTINGS | ({"alpha": 0.05} if model == "cbow" else {})

    def train_gensim(workers):
        g = GensimWord2Vec(sentences, sg=int(model == "skip-gram"), cbow_mean=1, hs=0, vector_size=100, window=5,
                           negative=5, sample=1e-3, min_count=5, alpha=settings["alpha"], min_alpha=1e-4,
                           epochs=epochs, workers=workers, seed=1)  # fmt: skip
        return WordVectors(g.wv.index_to_key, g.wv.vectors)

    def train_rnnkit(backend, workers, update="word2vec"):
        m = Word2Vec(model=model, loss="negative", epochs=epochs, backend=backend, workers=workers,
                     cbow_update=update, **settings)  # fmt: skip
        return m.fit(sentences).wv

    if model == "cbow":
        configs = [(f"gensim {gensim.__version__} (workers=1)", train_gensim, (1,)),
                   ("rnnkit native (workers=1)", train_rnnkit, ("native", 1)),
                   ("rnnkit native, exact gradient (workers=1)", train_rnnkit, ("native", 1, "gradient"))]  # fmt: skip
        skip_torch = True
    else:
        configs = [(f"gensim {gensim.__version__} (workers={w})", train_gensim, (w,)) for w in (1, 2)]
        configs += [(f"rnnkit native (workers={w})", train_rnnkit, ("native", w)) for w in (1, 2)]
    best, vectors = {}, {}
    for r in range(repeats):  # interleaved, best time of `repeats`: the machine is shared
        for name, train, a in configs + (
            [] if skip_torch or r else [("rnnkit torch (batched)", train_rnnkit, ("torch", 1))]
        ):
            t = time.perf_counter()
            wv = train(*a)
            best[name] = min(best.get(name, math.inf), time.perf_counter() - t)
            vectors.setdefault(name, wv)  # quality of the first run
            print(name, f"{best[name]:.1f}s", flush=True)
    common = set.intersection(*(set(wv.words) for wv in vectors.values()))
    rows = []
    for name, wv in vectors.items():
        rho, pairs = wv.evaluate_similarity(datapath("wordsim353.tsv"), restrict=common)
        acc, questions = wv.evaluate_analogies(datapath("questions-words.txt"), restrict=common)
        rows.append([name, f"{best[name]:.1f}", f"{words / best[name]:,.0f}", f"{rho:.4f}", pairs, f"{100 * acc:.2f}", questions])  # fmt: skip
    return rows


def ngram_rows(data: pathlib.Path, max_order: int):
    text = (data / "tinyshakespeare.txt").read_text()
    split = int(0.9 * len(text))
    train, val = text[:split], text[split:]
    rows = []
    for n in range(1, max_order + 1):
        row = [n]
        for smoothing in ("kneser-ney", "modified-kneser-ney"):
            t = time.perf_counter()
            lm = NGramLM(n, smoothing=smoothing, level="char").fit(train)
            train_s = time.perf_counter() - t
            s = lm.score(val, context=train[-(n - 1) :] if n > 1 else "")
            row += [f"{s.nats_per_token:.4f}", f"{s.bits_per_token:.4f}"]
        row += [f"{train_s:.1f}", f"{sum(len(k) for k in lm.keys[1:]):,}"]
        rows.append(row)
        print(row, flush=True)
    return rows


def data_problem(data: pathlib.Path) -> str | None:
    """What leaves the tables nothing to train on, found before any work (an empty or cut file: the n-gram table failed
    in rnnkit's traceback, 'empty training text', and a PTB of too few words in gensim's, 'you must first build
    vocabulary before training the model', after the n-gram table); None if nothing."""
    shakespeare, ptb = data / "tinyshakespeare.txt", data / "ptb" / "ptb.train.txt"
    text = {}
    for path in (shakespeare, ptb):
        try:  # (read as the tables read them: a file saved as Latin-1 was a UnicodeDecodeError traceback)
            text[path] = path.read_text()
        except UnicodeDecodeError as e:
            return f"{path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8"
    n = len(text[shakespeare])
    if int(0.9 * n) in (0, n):  # (split as ngram_rows splits it)
        return f"{shakespeare} holds {plural(n, 'character')}, too few to split into train and val for the n-grams"
    counts = Counter(text[ptb].split())
    frequent = sum(c >= SETTINGS["min_count"] for c in counts.values())
    if frequent < 2:  # (rnnkit's word2vec needs two distinct words, gensim's one)
        return (
            f"{ptb}: {plural(frequent, 'word')} of {len(counts):,} occur {SETTINGS['min_count']} times or more, "
            "too few for word2vec; give the whole PTB training set"
        )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=folder,
        default=DATA,
        help="folder holding ptb/ptb.train.txt and tinyshakespeare.txt (default: RNNKIT_DATA, else ../shared/data)",
    )
    parser.add_argument(
        "--epochs", type=int_at_least(1), default=5, help="word2vec training epochs, for both (default: 5)"
    )
    parser.add_argument(
        "--max-order",
        type=int_at_least(1),
        default=10,
        help="n-gram table: orders 1 to this (default: 10)",
    )
    parser.add_argument(
        "--skip-torch", action="store_true", help="leave out the batched torch backend (default: run it)"
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=2,
        help="word2vec timings: best of this many interleaved runs (default: 2)",
    )
    add_no_write(parser, "text")
    args = parser.parse_args()
    # a run that left rows out would lose the section's copies of them: not written
    left_out = [f"--max-order {args.max_order}"] if args.max_order < parser.get_default("max_order") else []
    left_out += ["--skip-torch"] if args.skip_torch else []
    check_results(parser, args, " ".join(left_out) or None)
    data = pathlib.Path(args.data)
    missing = [name for name in ("ptb/ptb.train.txt", "tinyshakespeare.txt") if not (data / name).is_file()]
    if missing:
        parser.error(f"no {', '.join(missing)} under {data}; set --data or RNNKIT_DATA")
    problem = data_problem(data)
    if problem:
        parser.error(problem)
    if importlib.util.find_spec("gensim") is None:
        parser.error("gensim is not installed (the word2vec baseline); pip install gensim")
    ngram = ngram_rows(data, args.max_order)
    w2v = word2vec_rows(data, args.epochs, args.skip_torch, args.repeats)
    cbow = word2vec_rows(data, args.epochs, args.skip_torch, args.repeats, "cbow")
    md = "\n\n".join([
        "## Text baselines (bench/text.py)",
        machine_line() + f" (shared machine, {os.cpu_count()} cores; other jobs may run alongside)",
        "word2vec on PTB train, "
        + (
            f"best time of {args.repeats} interleaved runs, quality of the first"
            + ("" if args.skip_torch else " (rnnkit torch, the slow batched path, runs once)")
            if args.repeats > 1
            else "one run"
        )
        + f" ({plural(args.epochs, 'epoch')}; skip-gram, negative 5, window 5, 100 dims, sample 1e-3, "
        "min_count 5, alpha 0.025 -> 1e-4). Quality from the same evaluation code for every model, on the "
        "WordSim-353 pairs / Google analogy questions all vocabularies cover, an analogy answered by the nearest "
        "word they all hold. PTB is a small corpus (0.9M words), "
        "so both scores are low for every model and differ between seeds by about as much as between models.",
        markdown_table(["model", "train s", "words/s", "WordSim-353 Spearman", "pairs", "analogy acc %", "questions"], w2v),
        "CBOW, the same but for alpha 0.05 (word2vec.c's CBOW default) and h the mean of the context vectors: "
        "rnnkit moves each context vector as word2vec.c and gensim do (by the whole dJ/dh, its default), or by its "
        "exact gradient (1/m of that, cbow_update=\"gradient\").",
        markdown_table(["model", "train s", "words/s", "WordSim-353 Spearman", "pairs", "analogy acc %", "questions"], cbow),
        "Character n-gram models on Tiny Shakespeare: first 90% train, last 10% val (scored as one stream, "
        "with the end of the training text as history). Interpolated Kneser-Ney (KN, one discount "
        "n1/(n1+2 n2) per order) and modified Kneser-Ney (MKN, discounts D1, D2, D3+ per order). "
        "The baselines the character RNNs must beat; train s is wall time to count all orders 1..n.",
        markdown_table(["n", "KN val nats/char", "KN val bits/char", "MKN val nats/char", "MKN val bits/char",
                        "train s (MKN)", "distinct 1..n-grams"], ngram),
    ])  # fmt: skip
    print(md)
    if not args.no_write:
        update_results("text", md, " ".join(left_out) or None)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
