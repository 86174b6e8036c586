"""Text representations and the classical baselines: vocabularies, one-hot and embeddings, bag of words,
TF-IDF, n-gram language models, Markov chains, word2vec (decks 002, 003, 004).

Each name is imported on first use, not with the package, as `rnnkit`'s are: `rnnkit ngram|tfidf|markov|neighbours`
use no torch, which word2vec and the embeddings import (it was 1.4 s and 225 MB of every such command)."""

import importlib

_WHERE = {
    "Embedding": "embedding",
    "document_word_matrix": "embedding",
    "one_hot": "embedding",
    "svd_embeddings": "embedding",
    "LMScore": "lmscore",
    "MarkovChain": "markov",
    "abe_machine": "markov",
    "i_before_e_machine": "markov",
    "NGramLM": "ngram",
    "TfidfConfig": "tfidf",
    "TfidfIndex": "tfidf",
    "term_counts": "tfidf",
    "term_frequencies": "tfidf",
    "Vocabulary": "vocab",
    "char_tokenize": "vocab",
    "tokenize": "vocab",
    "word_tokenize": "vocab",
    "Word2Vec": "word2vec",
    "Word2VecConfig": "word2vec",
    "WordVectors": "wordvectors",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    # rnnkit.text.ngram, rnnkit.text.vocab, ... as the package's import once loaded them (a name only)
    if name.isidentifier() and not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
