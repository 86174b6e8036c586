"""Corpora and batching: text files (UTF-8, any language) as compact token arrays, and the
B parallel streams read in windows of T characters for truncated BPTT (see `bptt`).

Each name is imported on first use, not with the package: the text commands read their files with `corpus`,
which needs no torch, where `bptt` imports it."""

from rnnkit._lazy import lazy_names

_WHERE = {
    "StreamBatches": "bptt",
    "Window": "bptt",
    "eval_streams": "bptt",
    "split": "bptt",
    "Corpus": "corpus",
    "load_corpus": "corpus",
    "load_file": "corpus",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
