"""Batching a token stream for truncated backpropagation through time (deck 002).

The corpus is cut into B parallel streams of equal length L; each stream is read left to
right in windows of T characters. The targets are the inputs shifted by one character.
The hidden state of stream b at the end of window k is the initial state of stream b in
window k+1 (carried forward, detached: gradients flow back at most T steps).

    tokens:   c0 c1 c2 ...                                           c(B*L)
    streams:  b=0 | c0      c1      ... c(L-1)   |        B rows of L tokens
              b=1 | c(L)    ...         c(2L-1)  |        (a view: no copy)
              ...
    windows:      |<-- T -->|<-- T -->|<-- T -->|...
                   window 0  window 1  window 2           xs (B, T), ys = xs shifted by one
                       h ------> h ------> h              state carried across windows

Every window of an epoch has the same length T (the last partial window is dropped in
training; `ragged=True` keeps it, for evaluation).
"""

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from rnnkit.errors import RnnkitError, count_error, said


@dataclass
class Window:
    """One training batch: inputs and next-character targets, both (B, T) int64."""

    xs: torch.Tensor  # (B, T)
    ys: torch.Tensor  # (B, T)


def _check_sizes(batch_size, seq_len) -> tuple[int, int]:
    """B and T as Python ints: a narrow numpy integer (np.int8 from an array or a parameter grid) took the window
    arithmetic into its type, where k * T wrapped (an empty last window) or the text's length overflowed it."""
    for name, n in (("batch size (streams)", batch_size), ("seq_len (window length)", seq_len)):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise count_error(name, n)
    return int(batch_size), int(seq_len)


class StreamBatches:
    """Windows of T characters over B parallel streams of a token array.

    Args:
        tokens: (N,) integer array (may be memory-mapped).
        batch_size: B, the number of parallel streams.
        seq_len: T, the window length (the truncation of BPTT).
        ragged: keep a last, shorter window (evaluation) instead of dropping it (training).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, ragged: bool = False):
        batch_size, seq_len = _check_sizes(batch_size, seq_len)
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise RnnkitError(f"tokens must be a 1-D array of integer token ids, got {tokens.dtype} of shape "
                              f"{tokens.shape}")  # fmt: skip
        self.B, self.T = batch_size, seq_len
        self.L = (len(tokens) - 1) // batch_size  # characters per stream
        if self.L < (1 if ragged else seq_len):
            need = batch_size * (1 if ragged else seq_len) + 1
            raise RnnkitError(
                f"{len(tokens):,} characters are too few for {batch_size} streams of windows of {seq_len} "
                f"(need at least {need:,}); use a longer corpus or a smaller --batch-size/--seq-len"
            )
        n = self.B * self.L
        self.inputs = tokens[:n].reshape(self.B, self.L)  # (B, L) view
        self.targets = tokens[1 : n + 1].reshape(self.B, self.L)  # (B, L) view
        self.ragged = ragged

    def __len__(self) -> int:
        """Windows per epoch."""
        return -(-self.L // self.T) if self.ragged else self.L // self.T

    def window(self, k: int) -> Window:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):  # (True was window 1)
            raise TypeError(f"window index must be an integer, got {said(k)}")
        k = int(k)  # (a narrow numpy k wrapped k * T)
        if not 0 <= k < len(self):
            raise IndexError(f"window {k} out of range: there are {len(self)}")
        t0, t1 = k * self.T, min((k + 1) * self.T, self.L)
        xs = torch.from_numpy(np.ascontiguousarray(self.inputs[:, t0:t1]).astype(np.int64))
        ys = torch.from_numpy(np.ascontiguousarray(self.targets[:, t0:t1]).astype(np.int64))
        return Window(xs, ys)

    def __iter__(self):
        for k in range(len(self)):
            yield self.window(k)


def eval_streams(tokens: np.ndarray, batch_size: int, seq_len: int) -> StreamBatches:
    """Evaluation batches: as many streams as the text allows (at most B), last window kept.

    The streams are of equal length L = (N - 1) // B, so the last (N - 1) mod B targets of the text are not scored
    (fewer than B characters; `rnnkit eval --help` says so)."""
    batch_size, seq_len = _check_sizes(batch_size, seq_len)
    B = max(1, min(batch_size, (len(tokens) - 1) // seq_len))
    return StreamBatches(tokens, B, seq_len, ragged=True)


def split(tokens: np.ndarray, val_frac: float):
    """First (1 - val_frac) for training, the rest for validation (nanoGPT's split)."""
    # (a string or None, a config's, failed in "'<=' not supported between instances of 'float' and 'str'")
    if isinstance(val_frac, bool) or not isinstance(val_frac, numbers.Real) or not 0.0 <= val_frac < 1.0:
        raise RnnkitError(f"--val-frac must be a number in [0, 1), got {said(val_frac)}")
    n_val = int(round(len(tokens) * val_frac))
    if val_frac > 0 and n_val < 2:
        least = 2 / max(len(tokens), 1)  # (a value .2g rounds still holds out round(1.9) = 2)
        how = f"a larger --val-frac (at least {least:.2g}), or 0 for none" if least < 1 else "--val-frac 0"
        raise RnnkitError(f"--val-frac {val_frac:g} holds out {n_val} of the corpus's {len(tokens):,} characters, "
                          f"too few to validate on (2 at least); use {how}")  # fmt: skip
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
