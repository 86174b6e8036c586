"""Corpora and batching: text files (UTF-8, any language) as compact token arrays, and the
B parallel streams read in windows of T characters for truncated BPTT (see `bptt`)."""

from rnnkit.data.bptt import StreamBatches, Window, eval_streams, split
from rnnkit.data.corpus import Corpus, load_corpus, load_file

__all__ = ["Corpus", "StreamBatches", "Window", "eval_streams", "load_corpus", "load_file", "split"]
