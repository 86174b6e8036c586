"""Text representations and the classical baselines: vocabularies, one-hot and embeddings, bag of words,
TF-IDF, n-gram language models, Markov chains, word2vec (decks 002, 003, 004).

Each name is imported on first use, not with the package, as `rnnkit`'s are: `rnnkit ngram|tfidf|markov|neighbours`
use no torch, which word2vec and the embeddings import (it was 1.4 s and 225 MB of every such command)."""

from rnnkit._lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
