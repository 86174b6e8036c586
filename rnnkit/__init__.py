"""rnnkit: recurrent neural networks as the lectures teach them, with hand-written BPTT.

CELLS, GradProbe and Recurrent (and the subpackages) are imported on first use, not with the package: the command
line (`rnnkit`, `python -m rnnkit`) imports torch inside its main, so that a Ctrl-C in torch's import, the first
second of every command that uses it, is its one line 'rnnkit: interrupted', not Python's traceback from
`import rnnkit`; the commands that use none (ngram, tfidf, markov, neighbours, the help) don't import it.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["CELLS", "GradProbe", "Recurrent"]
_WHERE = {"CELLS": "rnnkit.cells", "GradProbe": "rnnkit.engine", "Recurrent": "rnnkit.layers"}


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    # rnnkit.cells, rnnkit.layers, ... as `import rnnkit` once loaded them (a name only: 'cells.gru' is none)
    if name.isidentifier() and not name.startswith("__"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
