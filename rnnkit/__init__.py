"""rnnkit: recurrent neural networks as the lectures teach them, with hand-written BPTT."""

__version__ = "0.1.0"
