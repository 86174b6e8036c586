"""rnnkit: recurrent neural networks as the lectures teach them, with hand-written BPTT.

CELLS, GradProbe and Recurrent (and the subpackages) are imported on first use, not with the package: the command
line (`rnnkit`, `python -m rnnkit`) imports torch inside its main, so that a Ctrl-C in torch's import, the first
second of every command that uses it, is its one line 'rnnkit: interrupted', not Python's traceback from
`import rnnkit`; the commands that use none (ngram, tfidf, markov, neighbours, the help) don't import it.
"""

from rnnkit._lazy import lazy_names

__version__ = "0.1.0"
__all__ = ["CELLS", "GradProbe", "Recurrent"]
_WHERE = {"CELLS": "cells", "GradProbe": "engine", "Recurrent": "layers"}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
