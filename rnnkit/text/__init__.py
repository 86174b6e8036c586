"""Text representations and the classical baselines: vocabularies, one-hot and embeddings, bag of words,
TF-IDF, n-gram language models, Markov chains, word2vec (decks 002, 003, 004)."""

from rnnkit.text.embedding import Embedding, document_word_matrix, one_hot, svd_embeddings
from rnnkit.text.lmscore import LMScore
from rnnkit.text.markov import MarkovChain, abe_machine, i_before_e_machine
from rnnkit.text.ngram import NGramLM
from rnnkit.text.tfidf import TfidfConfig, TfidfIndex, term_counts, term_frequencies
from rnnkit.text.vocab import Vocabulary, char_tokenize, tokenize, word_tokenize
from rnnkit.text.word2vec import Word2Vec, Word2VecConfig
from rnnkit.text.wordvectors import WordVectors

__all__ = [
    "Embedding",
    "LMScore",
    "MarkovChain",
    "NGramLM",
    "TfidfConfig",
    "TfidfIndex",
    "Vocabulary",
    "Word2Vec",
    "Word2VecConfig",
    "WordVectors",
    "abe_machine",
    "char_tokenize",
    "document_word_matrix",
    "i_before_e_machine",
    "one_hot",
    "svd_embeddings",
    "term_counts",
    "term_frequencies",
    "tokenize",
    "word_tokenize",
]
