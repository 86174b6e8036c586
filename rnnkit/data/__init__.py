"""Corpora and batching: text files (UTF-8, any language) as compact token arrays, and the
B parallel streams read in windows of T characters for truncated BPTT (see `bptt`).

Each name is imported on first use, not with the package: the text commands read their files with `corpus`,
which needs no torch, where `bptt` imports it."""

import importlib

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


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    # rnnkit.data.bptt, rnnkit.data.corpus as the package's import once loaded them (a name only)
    if name.isidentifier() and not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
