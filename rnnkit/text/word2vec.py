"""word2vec (deck 003): CBOW and skip-gram, with the full softmax or with negative sampling.

Each word j has an input vector u_j (row j of U, V x E) and an output vector v_j (row j of V_out).

    CBOW:       h = (1/m) Σ_{i=1}^m u_{w_i}   (the deck's sum when cbow_mean=False)   predicts w
    skip-gram:  h = u_w                                                                predicts each w_i
    full softmax:        ŷ_j = exp(h·v_j) / Σ_k exp(h·v_k),         J = -log ŷ_target
    negative sampling:   J = -log σ(h·v_target) - Σ_{k=1}^K log σ(-h·v_{n_k}),  n_k ~ unigram^0.75
                         (Mikolov et al. 2013)

Frequent words are subsampled: a word with count f among T keeps each occurrence with probability
(sqrt(f / (sT)) + 1) · sT / f (word2vec.c's formula, threshold s). The window is drawn per centre
word uniformly from 1..window, so near words count more. The learning rate decays linearly from
alpha to min_alpha, each epoch over its own pairs (as gensim's does).
CBOW moves its m context vectors as word2vec.c and gensim do (cbow_update="word2vec", the default): with the
mean each by the whole dJ/dh, m times its gradient (1/m) dJ/dh, and with the sum each by (1/m) dJ/dh, 1/m of
its gradient dJ/dh. cbow_update="gradient" follows the gradient of J exactly, moving them by dJ/du_{w_i}: with
the mean they learn m times slower. On PTB (5 epochs, negative 5, window 5, 2 seeds) WordSim-353 Spearman read
0.10-0.11 with the gradient, 0.15-0.16 with word2vec's rule, 0.16 with gensim at alpha 0.025; 0.11-0.16, 0.21-0.24
and 0.21-0.23 at alpha 0.05 (word2vec.c's CBOW default).

Training is SGD over shuffled (centre, context) pairs with hand-written gradients, by one of two
backends: "torch" takes minibatches (gather rows of U and V_out, compute the gradient of J, add it back
with index_add_; every loss); "native" (negative sampling only, the default when it compiles) runs the
same gradient pair by pair in a compiled loop (w2v_native.py), as word2vec.c does, several times faster.
"""

import dataclasses
import math
import numbers
import os
import re
import threading
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rnnkit._io import bar_options
from rnnkit._threads import threads_for_the_work
from rnnkit.errors import RnnkitError, count_error, finite_real, fits_int64, said, switch
from rnnkit.text import w2v_native
from rnnkit.text.vocab import Vocabulary
from rnnkit.text.wordvectors import WordVectors

DRAW_CHUNK = 1 << 20  # words a piece, where _pairs draws and makes its arrays a piece at a time


def softmax_loss_grads(h: torch.Tensor, V_out: torch.Tensor, target: torch.Tensor):
    """Full softmax: J = Σ_b -log softmax(h_b V_out^T)[target_b].

    Shapes: h (B, E), V_out (V, E), target (B,). Returns J, dJ/dh (B, E), dJ/dV_out (V, E).
    """
    log_y_hat = torch.log_softmax(h @ V_out.T, dim=1)  # (B, V); log of softmax underflowed to -inf in float32
    y_hat = log_y_hat.exp()
    J = -log_y_hat.gather(1, target[:, None]).sum()
    dscores = y_hat.clone()
    dscores[torch.arange(len(target)), target] -= 1  # ŷ - y
    return J, dscores @ V_out, dscores.T @ h


def negative_sampling_loss_grads(
    h: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, need_loss: bool = True
):
    """J = Σ_b [-log σ(h_b·v_b0) - Σ_k log σ(-h_b·v_bk)]; column 0 of v is the target, 1..K the negatives.

    Shapes: h (B, E), v (B, 1+K, E), mask (B, 1+K) is 0 where a negative equals the target (skipped).
    Returns J (None unless need_loss), dJ/dh (B, E), dJ/dv (B, 1+K, E).
    """
    s = torch.bmm(v, h[:, :, None]).squeeze(2)  # (B, 1+K)
    labels = torch.zeros_like(s)
    labels[:, 0] = 1
    ds = (torch.sigmoid(s) - labels) * mask  # d/ds of -log σ(s) is σ(s) - 1; of -log σ(-s) is σ(s)
    J = None
    if need_loss:
        J = -(torch.nn.functional.logsigmoid(torch.where(labels > 0, s, -s)) * mask).sum()
    return J, torch.bmm(ds[:, None, :], v).squeeze(1), ds[:, :, None] * h[:, None, :]


@dataclass
class Word2VecConfig:
    model: str = "skip-gram"  # or "cbow"
    loss: str = "negative"  # or "softmax" (exact, small vocabularies)
    dimension: int = 100
    window: int = 5
    negative: int = 5  # noise words per pair (>= 1) of negative sampling; the softmax loss ignores it
    sample: float = 1e-3  # subsampling threshold s; 0 turns it off
    min_count: int = 5
    epochs: int = 5
    alpha: float = 0.025  # learning rate, decayed linearly to min_alpha
    min_alpha: float = 1e-4
    cbow_mean: bool = True
    cbow_update: str = "word2vec"  # CBOW's context vectors: as word2vec.c and gensim, or "gradient" (exact)
    batch_size: int = 2048  # (centre, context) pairs per SGD step of the batched torch path (<= 16 per word)
    backend: str = "auto"  # "native" (compiled per-pair loop, negative sampling), "torch" (batched), "auto"
    workers: int = 1  # native threads; > 1 is Hogwild, fast but not bit-reproducible
    seed: int = 0


class Word2Vec:
    """Train word vectors on sentences (lists of words). `self.wv` holds the input vectors U.

    Options come from `config`, with any keyword `overrides` (Word2VecConfig's fields) applied on top.
    """

    def __init__(self, config: Word2VecConfig | None = None, **overrides):
        try:
            self.config = dataclasses.replace(config or Word2VecConfig(), **overrides)
        except TypeError as e:  # an option Word2VecConfig does not have
            raise RnnkitError(f"{e}; the options are the fields of Word2VecConfig") from None
        c = self.config
        if c.model not in ("skip-gram", "cbow") or c.loss not in ("negative", "softmax"):
            raise RnnkitError(
                f"model must be skip-gram|cbow and loss negative|softmax, got {c.model}, {c.loss}"
            )
        if c.cbow_update not in ("word2vec", "gradient"):
            raise RnnkitError(f"cbow_update must be word2vec or gradient, got {c.cbow_update!r}")
        if c.backend not in ("auto", "native", "torch"):
            raise RnnkitError(f"backend must be auto, native or torch, got {c.backend!r}")
        for name in ("dimension", "window", "min_count", "epochs", "batch_size", "workers", "negative"):
            # (True is an int: dimension=True trained 1-dimensional vectors)
            if isinstance(getattr(c, name), bool) or not isinstance(getattr(c, name), numbers.Integral):
                raise RnnkitError(
                    f"--{name.replace('_', '-')} must be a whole number, got {getattr(c, name)!r}"
                )
        for name in ("alpha", "min_alpha", "sample"):  # a str: a TypeError from math.isfinite below
            if isinstance(getattr(c, name), bool) or not isinstance(getattr(c, name), numbers.Real):
                raise RnnkitError(f"--{name.replace('_', '-')} must be a number, got {getattr(c, name)!r}")
        # (taken for its truth value: cbow_mean="False", a config file's string, averaged; None summed)
        switch("cbow_mean", c.cbow_mean)
        # numpy's rng refuses a negative seed, torch's generator one of 2**64 or more (a ValueError in fit), and it
        # keeps the low 32 bits of the others: seed 2**32 + 3 drew seed 3's initial vectors and noise words
        if isinstance(c.seed, bool) or not isinstance(c.seed, numbers.Integral) or not 0 <= c.seed < 2**32:
            raise RnnkitError(
                f"--seed must be a whole number >= 0 and < 2**32 (as the command line's), got {said(c.seed)}"
            )
        for name in ("dimension", "window", "min_count", "epochs", "batch_size", "workers"):
            if getattr(c, name) < 1:  # named as the command line's flag (--min-count for min_count)
                raise count_error(f"--{name.replace('_', '-')}", getattr(c, name))
        if c.loss == "negative" and c.negative < 1:  # K = 0 would only pull every pair together
            raise RnnkitError(
                f"--negative (noise words per pair) must be an integer >= 1 for negative sampling, got {said(c.negative, '')}; "
                "for the full softmax, which needs none, use --loss softmax"
            )
        # sizes and counts past a 64-bit integer (--dimension 10**30) ended in torch's or numpy's traceback in fit
        # (min_count, batch_size and workers are compared or capped, not sized: any is taken)
        for name in ("dimension", "window", "negative", "epochs"):
            fits_int64(f"--{name.replace('_', '-')}", getattr(c, name))
        if not (finite_real(c.alpha) and c.alpha > 0):
            raise RnnkitError(f"--alpha (the learning rate) must be a number > 0, got {said(c.alpha, '')}")
        # (a Real > 0 below float's least, Fraction(1, 10**400), trained at a rate of 0.0: the vectors as drawn)
        if float(c.alpha) == 0:
            raise RnnkitError(
                f"--alpha {said(c.alpha)} is too small: it is 0 as a float; give 1e-300 or more"
            )
        # (beyond float32, the step's alpha=-lr was torch's 'cannot be converted' error)
        if c.alpha > torch.finfo(torch.float32).max:
            raise RnnkitError(f"--alpha {c.alpha:g} is beyond the range of float32 (the vectors' type, at most "
                              f"{torch.finfo(torch.float32).max:.3g}); give a smaller one, such as the default 0.025")  # fmt: skip
        if not 0 <= c.min_alpha <= c.alpha:  # the rate decays linearly from alpha to min_alpha
            raise RnnkitError(
                f"--min-alpha (the final learning rate) must lie in [0, alpha = {said(c.alpha, '')}], got {said(c.min_alpha, '')}"
            )
        if not (finite_real(c.sample) and c.sample >= 0):
            raise RnnkitError(
                f"--sample (subsampling threshold) must be >= 0 (0 turns it off), got {said(c.sample, '')}"
            )
        # (one that is 0 as a float, Fraction(1, 10**400), was a threshold sT = 0: numpy's 'divide by zero' warning)
        if c.sample > 0 and float(c.sample) == 0:
            raise RnnkitError(f"--sample {said(c.sample)} is too small: it is 0 as a float, which turns subsampling "
                              "off; give 1e-300 or more, or 0 for none")  # fmt: skip
        # as Python ints (c is our copy): a narrow numpy type's arithmetic (np.int8 epochs) overflowed in fit
        for name in ("dimension", "window", "min_count", "epochs", "batch_size", "workers", "negative"):
            setattr(c, name, int(getattr(c, name)))
        self._width = 1  # a torch batch row's context slots (CBOW: 2·reach, set by _epoch); see _batch_pairs

    def __getattr__(self, name: str):
        """Only for an attribute not set: what fit makes, asked before it, is said so (it was "'Word2Vec' object has
        no attribute 'wv'"); an AttributeError still, as hasattr and pickle expect."""
        if name in ("wv", "vocab", "counts", "U", "V_out", "loss_history"):
            raise AttributeError(
                f"this Word2Vec is not trained yet, so it has no {name}: call fit(sentences) first"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict:
        """The model as pickle and copy.deepcopy take it: without the compiled loop, a module, which they can't write
        (a model trained on the native backend failed with "cannot pickle 'module' object"); fit loads it again."""
        return {**self.__dict__, "native": None}

    def build_vocab(self, sentences: list[list[str]]) -> None:
        """vocab (the words occurring >= min_count times) and their counts; one that fails (fewer than 2 words) leaves
        the model as it was, as fit does (it replaced vocab, of a trained model or one not trained, before failing)."""
        # (str sentences were counted as characters, bytes as numbers)
        sentences = _sentences(sentences, "build_vocab")
        try:
            vocab = Vocabulary.build(
                (w for s in sentences for w in s), min_freq=self.config.min_count, unk=False
            )
        except TypeError:  # Counter's 'unhashable type: list': fit([sentences]), a list of sentences as one
            word = next((w for s in sentences for w in s if not isinstance(w, Hashable)), None)
            if word is None:
                raise
            raise RnnkitError(f"a word is a {type(word).__name__} ({word!r:.40}), not a str: sentences are lists of "
                              "words; are they nested one level too deep (fit([sentences]))?") from None  # fmt: skip
        if len(vocab) < 2:
            raise RnnkitError(
                f"only {len(vocab)} word(s) occur >= {self.config.min_count} times; a window needs at least 2 "
                "distinct words: give a larger corpus or lower --min-count"
            )
        self.vocab, self.counts = vocab, np.array(vocab.counts, dtype=np.float64)

    def fit(self, sentences: list[list[str]], progress: bool = False) -> "Word2Vec":
        # a fit that fails (too few words, no pairs after subsampling, diverged, Ctrl-C) leaves the model as it was:
        # it left the failed corpus's vocab and U beside the old wv. fit sets new objects, never changes the old ones
        # in place, so the attributes as they were are enough
        before = dict(self.__dict__)
        try:
            return self._fit(sentences, progress)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, sentences: list[list[str]], progress: bool) -> "Word2Vec":
        c = self.config
        sentences = _sentences(sentences, "fit")
        if not any(sentences):
            raise RnnkitError("empty corpus: no words to train on")
        self.build_vocab(sentences)
        ids, sent = self._encode(sentences)
        # the lists of words let go of, where fit was given a generator of them (as the command line gives them)
        del sentences
        self.generator = torch.Generator().manual_seed(int(c.seed))  # torch refuses a numpy integer
        self.rng = np.random.default_rng(c.seed)
        V, E = len(self.vocab), c.dimension
        # float32, as word2vec.c and gensim keep them (and the native loop reads), whatever torch's default dtype
        self.U = (
            torch.rand(V, E, generator=self.generator, dtype=torch.float32) - 0.5
        ) / E  # word2vec.c's init
        self.V_out = torch.zeros(V, E, dtype=torch.float32)
        self._noise_distribution()
        self.native = self._native()
        pairs = self._pairs(ids, sent)
        if len(pairs[0]) == 0:
            if (
                c.sample > 0 and len(sent) and np.bincount(sent).max() > 1
            ):  # pairs were there before subsampling
                raise RnnkitError(
                    f"no (centre, context) pairs left after subsampling frequent words (sample {c.sample:g} drops "
                    "most occurrences of every word in a corpus this small); use sample 0 (--sample 0) or more text"
                )
            raise RnnkitError(
                "no (centre, context) pairs: every sentence has a single known word; give longer sentences"
            )
        self.loss_history, total = [], len(pairs[0]) * c.epochs
        # a live bar on a terminal, a line every 30 s in a log, none without stderr
        style = bar_options(progress)
        with tqdm(total=total, desc="word2vec", unit=" pairs", unit_scale=True, **style) as bar:
            # each step is small: a thread pool's barriers cost more than they give (one thread, the count of before
            # the first of the works under way put back: see rnnkit._threads)
            with threads_for_the_work(1):
                if self.native:  # (in a list it empties: a name here held epoch 0's pairs to the end)
                    first, pairs = [pairs], None
                    pairs = self._native_epochs(ids, sent, first, bar)
                for epoch in range(0 if self.native else c.epochs):  # the torch path's
                    # each epoch draws its own windows: the bar's total follows them (it overran by a few %), shown
                    # at its next update (a refresh() here wrote a log line every epoch, not every LOG_EVERY s)
                    if epoch:
                        pairs = self._pairs(ids, sent)
                        bar.total = bar.n + len(pairs[0]) * (c.epochs - epoch)
                    # alpha's schedule, seen / expected: epoch e runs from e / E to (e + 1) / E over its own pairs
                    self.seen, self.expected = epoch * len(pairs[0]), c.epochs * len(pairs[0])
                    self._epoch(*pairs, bar)
                if len(pairs[0]):  # the loss at the end, on a few of the last epoch's pairs (lr 0: no update)
                    w, ctx = torch.from_numpy(pairs[0][:256]).long(), torch.from_numpy(pairs[1][:256]).long()
                    self.loss_history.append(self._step(w, ctx, 0.0, True) / len(w))
        # said as WordVectors says it, it named a word, not the cause; vectors that blew up but stayed finite (the
        # torch backend on 3 words: a loss of 3e34, vectors of 3e17) were returned in silence: the loss at the end
        # past 10 times its start (V_out = 0's, which predicts nothing) diverged too
        first, last = self.loss_history[0], self.loss_history[-1]
        why = None if last <= 10 * first else f"its loss rose from {first:.3g} to {last:.3g} a pair"
        if not torch.isfinite(self.U).all():
            why = "the word vectors became NaN or infinite"
        if why:
            raise RnnkitError(
                f"word2vec training diverged: {why}; give a smaller --alpha "
                f"(the learning rate, {c.alpha:g} here; default {Word2VecConfig.alpha})"
                + self._diverged_hint()
            )
        self.wv = WordVectors(self.vocab.itos, self.U.numpy().copy())
        return self

    def _diverged_hint(self) -> str:
        """The other fix for a torch run that diverged, whose batches add up the updates of a word."""
        if self.native:
            return ""
        why = "this torch backend adds up a batch's updates of a word"
        if self.config.loss == "softmax":  # (the native backend, said here too, refuses the softmax)
            # (the batch that ran: 'a smaller --batch-size (2048 here)' of 40 words, whose batches were 640 pairs,
            # diverged the same at 1024 and 700)
            size, step = self.config.batch_size, self._batch_pairs()
            ran = (
                ""
                if step == size
                else f", the batch here (--batch-size {size}, capped at 16 pairs a word or 256)"
            )
            return (f"; or a --batch-size below {step}{ran}: {why}, and with the softmax each pair updates every "
                    "word's output vector")  # fmt: skip
        return (f"; or the native backend (--backend native), which updates after each pair as word2vec.c does, where "
                f"{why} (a few words' vocabulary diverges so first)")  # fmt: skip

    def _encode(self, sentences):
        """The corpus's word ids, the words not in the vocabulary left out, and the number of each one's sentence:
        read into arrays as they are looked up (-1 for a word left out), int16 ids below 2^15 words (_word_dtype).
        The ids were lists first, a list a sentence (8 bytes a word), then an int32 array."""
        stoi = self.vocab.stoi
        lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
        words = (stoi.get(w, -1) for s in sentences for w in s)
        ids = np.fromiter(words, _word_dtype(len(stoi)), int(lengths.sum()))
        sent = np.repeat(np.arange(len(sentences), dtype=_index_dtype(len(sentences))), lengths)
        known = ids >= 0
        return (ids, sent) if known.all() else (ids[known], sent[known])

    def _noise_distribution(self) -> None:
        """Walker's alias table of P(j) ∝ count_j^0.75 (Vose's construction): word j keeps a uniform draw of slot j
        with probability `noise_keep[j]`, else gives it to `noise_alias[j]`; exact, and as fast as word2vec.c's table
        of slots, whose million slots, each word at least one, gave the rarer half of a million-word vocabulary
        twice its share."""
        q = self.counts**0.75
        q = q / q.sum() * len(q)  # the mean slot holds 1
        keep, alias = np.ones(len(q)), np.arange(len(q))
        small, large = [i for i in range(len(q)) if q[i] < 1], [i for i in range(len(q)) if q[i] >= 1]
        while small and large:
            s, g = small.pop(), large.pop()
            keep[s], alias[s] = q[s], g  # slot s: word s with q_s, the rest of it word g
            q[g] -= 1 - q[s]
            (small if q[g] < 1 else large).append(g)
        self.noise_keep, self.noise_alias = torch.from_numpy(keep), torch.from_numpy(alias)

    def _negatives(self, B: int) -> torch.Tensor:
        """(B, negative) noise words n ~ unigram^0.75, drawn exactly."""
        shape = (B, self.config.negative)
        slot = torch.randint(len(self.noise_keep), shape, generator=self.generator)
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        return torch.where(u < self.noise_keep[slot], slot, self.noise_alias[slot])

    def _pairs(self, ids: np.ndarray, sent: np.ndarray):
        """Subsample, draw each centre's window b ~ U{1..window}, and list the pairs within one sentence.

        Returns centres (P,) and contexts: (P,) for skip-gram, (P, 2·reach) with -1 in the unused places for CBOW
        (reach: the window cut to the longest sentence), as word ids of ids' dtype (int16 below 2^15 words, int32
        below 2^31: _word_dtype; each chunk widened to int64 where it is used), shuffled: views of one (P, 2) or
        (P, 1 + 2·reach) array, each row a pair, made in place in the order of old and shuffled as rows. Its draws
        are the old ones, in their order (rng.random(n), rng.integers(1, window + 1, n), rng.shuffle of P items:
        numpy draws a shuffle's swaps from its length alone, and a draw of n in pieces is the draw of n), so the
        pairs are too. The positions of the pairs, their shuffled order and the gathered copies, 30 bytes a pair at
        the peak (skip-gram, int32), took 110 bytes a word of corpus: PTB twice over (1.8M words) peaked at 196 MB
        to make 53 MB of pairs.
        """
        c, rng = self.config, self.rng
        if c.sample > 0:
            # (a Python float: numpy's scalar warned "overflow encountered in scalar multiply" past 1.8e308, --sample
            # 1e308, and raised it under -W error; inf keeps every word, as the formula does for a threshold that large;
            # the sample too, which a program may give as a numpy scalar: np.float64(1e308) warned, and np.float32's
            # product with a float is a float32, where numpy's count made it a float64)
            sT, keep = float(c.sample) * float(self.counts.sum()), np.empty(len(ids), bool)
            # a piece at a time: f and its formula in float64 took 40 bytes a word at once
            for i in range(0, len(ids), DRAW_CHUNK):
                f = self.counts[ids[i : i + DRAW_CHUNK]]
                keep[i : i + DRAW_CHUNK] = rng.random(len(f)) < (np.sqrt(f / sT) + 1) * sT / f
            ids, sent = ids[keep], sent[keep]
        # no pair is farther apart than the longest sentence is long: window=10**9 looped over empty distances for hours,
        # and cut to the corpus's length, over as many distances as the corpus has words (its length squared in all)
        reach = max(1, min(c.window, int(np.bincount(sent).max(initial=1)) - 1))
        # b as drawn, cut to reach (no distance is farther), in the smallest type that holds it: int64 took 8 bytes a word
        b = np.empty(len(ids), np.min_scalar_type(reach))
        for i in range(0, len(ids), DRAW_CHUNK):
            piece = b[i : i + DRAW_CHUNK]
            piece[:] = np.minimum(rng.integers(1, c.window + 1, len(piece)), reach)
        if c.model == "cbow":
            return self._cbow_windows(ids, sent, b, reach)
        n, groups = len(ids), []  # centre p + a, context p + z at distance o: (o, a, z, pairs)

        def use(o, a):  # the positions p whose pair (p + a, p + (o - a)) is within a sentence and the window
            return (sent[:-o] == sent[o:]) & (o <= b[a : a + n - o])

        for o in range(1, reach + 1):
            groups += [(o, a, o - a, np.count_nonzero(use(o, a))) for a in (0, o)]
        pairs, at = np.empty((sum(g[3] for g in groups), 2), ids.dtype), 0
        for o, a, z, count in groups:  # the masks again, one at a time (a list of them is n bytes each)
            mask = use(o, a)
            pairs[at : at + count, 0] = ids[a : a + n - o][mask]
            pairs[at : at + count, 1] = ids[z : z + n - o][mask]
            at += count
        _shuffle_rows(rng, pairs)
        return pairs[:, 0], pairs[:, 1]

    def _cbow_windows(self, ids, sent, b, reach):
        """Each centre's context words as a row, position -reach..-1, +1..+reach, -1 where a position is out of its
        sentence or its window b: (P, 2·reach), the centres that have a context (reach: the window cut to the longest
        sentence, as in _pairs: rows of 2·window for window=10**9 did not fit). The rows are made a piece of the corpus
        at a time, of the centres that have a context only, beside their centres, and shuffled as rows: every word's
        row (n of them) and the shuffled copy of the kept ones were 2 x 40 bytes a word at once (int32, window 5)."""
        n, offsets = len(ids), [*range(-reach, 0), *range(1, reach + 1)]
        has = np.zeros(n, bool)  # a centre with a context at distance o on one side or the other
        for o in range(1, reach + 1):
            same = sent[:-o] == sent[o:]
            has[:-o] |= same & (o <= b[:-o])
            has[o:] |= same & (o <= b[o:])
        out, at = np.empty((np.count_nonzero(has), 1 + 2 * reach), ids.dtype), 0
        step = max(1, DRAW_CHUNK // (2 * reach))
        for i in range(0, n, step):  # the rows of centres i .. j - 1, then those that have a context
            j = min(n, i + step)
            rows = np.full((j - i, 2 * reach), -1, ids.dtype)
            for k, o in enumerate(offsets):
                lo, hi = max(i, -o), min(j, n - max(0, o))  # centres a in [lo, hi), contexts a + o
                if lo < hi:
                    use = (sent[lo:hi] == sent[lo + o : hi + o]) & (abs(o) <= b[lo:hi])
                    rows[lo - i : hi - i, k] = np.where(use, ids[lo + o : hi + o], -1)
            kept = has[i:j]
            count = np.count_nonzero(kept)
            out[at : at + count, 0], out[at : at + count, 1:] = ids[i:j][kept], rows[kept]
            at += count
        _shuffle_rows(self.rng, out)  # (as ids[has], rows[has] of has shuffled: the same draws)
        return out[:, 0], out[:, 1:]

    def resolved_backend(self) -> str:
        """ "native" or "torch": the backend fit will use (config.backend, "auto" resolved)."""
        return "torch" if self._native() is None else "native"

    def _native(self):
        """The compiled loop when asked for (or "auto") and usable: negative sampling only."""
        c = self.config
        if c.backend == "torch" or c.loss != "negative":
            if c.backend == "native":
                raise RnnkitError(
                    "the native backend runs negative sampling only; use --backend torch for softmax"
                )
            return None
        ext = w2v_native.load()
        if ext is None and c.backend == "native":
            # (the command line's flag named too; and the switch that turned it off, where that was the reason)
            # (from the reason load() gave, which it keeps: not the environment now, unset since in this process)
            unset = ", or unset RNNKIT_NATIVE" if w2v_native.reason.startswith("switched off") else ""
            raise RnnkitError(f"native word2vec unavailable ({w2v_native.reason}); use backend 'torch' "
                              f"(--backend torch){unset}")  # fmt: skip
        if ext is None:
            w2v_native.warn_fallback()
        return ext

    def _native_epochs(self, ids: np.ndarray, sent: np.ndarray, first: list, bar):
        """The native backend's epochs, pipelined: a thread runs an epoch's chunks through the compiled loop (which
        runs without the GIL), another draws the next chunk's negatives meanwhile, and this one the next epoch's pairs
        (here, as the large arrays were: in another thread they took another allocator arena, +180 MB on PTB). Each
        draws from its own generator (torch's, numpy's) in the serial order, so workers=1 is bit-identical to running
        them one after the other. `first` holds the first epoch's pairs; returns the last one's."""
        c, pairs, stop = self.config, first.pop(), threading.Event()
        # leaving the block (Ctrl-C, an error) stops the epoch at its chunk's end and waits: no thread left running
        with ThreadPoolExecutor(2, thread_name_prefix="word2vec") as pool:
            try:
                for epoch in range(c.epochs):
                    self.seen, self.expected = epoch * len(pairs[0]), c.epochs * len(pairs[0])
                    running = pool.submit(self._native_epoch, *pairs, bar, pool, stop)
                    upcoming = self._pairs(ids, sent) if epoch + 1 < c.epochs else None
                    running.result()
                    if upcoming:  # each epoch draws its own windows: the bar's total follows them (see fit)
                        pairs = upcoming
                        bar.total = bar.n + len(pairs[0]) * (c.epochs - epoch - 1)
            finally:
                stop.set()
        return pairs

    def _native_epoch(self, centres: np.ndarray, contexts: np.ndarray, bar, pool, stop) -> None:
        """One epoch of the compiled loop, 100k pairs a call, until `stop` is set; chunk i + 1's negatives are drawn
        (in `pool`) while chunk i runs."""
        c, step = self.config, 100_000
        centres, contexts = torch.from_numpy(centres), torch.from_numpy(contexts)
        starts = range(0, len(centres), step)

        def draw(i):  # the loss probe's negatives (every 10th chunk) before the chunk's, as they were drawn
            B = min(step, len(centres) - starts[i])
            return self._negatives(min(B, 256)) if i % 10 == 0 else None, self._negatives(B)

        drawn = pool.submit(draw, 0) if starts else None
        for i, start in enumerate(starts):
            probe, neg = drawn.result()
            if stop.is_set():
                return
            if i + 1 < len(starts):
                drawn = pool.submit(draw, i + 1)
            # (contiguous: the pairs are columns of one array of rows, which .long() of int64 ones keeps as they are)
            w = centres[start : start + step].long().contiguous()
            ctx = contexts[start : start + step].long().contiguous()
            if probe is not None:  # the loss on a few pairs, to watch (lr 0: no update)
                self.loss_history.append(self._step(w[:256], ctx[:256], 0.0, True, probe) / len(probe))
            # (its counts are 64-bit integers: --epochs 2**63 - 1 made expected larger, pybind11's "TypeError:
            # sgns_pairs(): incompatible function arguments"; at 2**63 - 1, lr = α to float32's precision, as it is)
            seen, expected = min(self.seen, 2**63 - 1), min(self.expected, 2**63 - 1)
            # at most a thread a pair: more had nothing to do (2**62 of them aborted the process)
            try:
                self.native.sgns_pairs(self.U, self.V_out, w, ctx, neg, c.alpha, c.min_alpha, seen, expected,
                                       c.cbow_mean, c.cbow_update == "gradient", min(c.workers, len(w)))  # fmt: skip
            # (the system's limit on threads or their stacks' memory: --workers 2**31 ended in a traceback,
            # "RuntimeError: the word2vec loop could not start thread 225 of 339 (Resource temporarily unavailable)")
            except RuntimeError as e:
                said = re.match(r"the word2vec loop (could not start thread .*); use fewer workers$", str(e))
                if said is None:
                    raise
                raise RnnkitError(f"--workers {c.workers}: the word2vec loop {said[1]}; give fewer --workers (this "
                                  f"machine has {os.cpu_count()} CPUs)") from None  # fmt: skip
            self.seen += len(w)
            bar.update(len(w))

    def _epoch(self, centres: np.ndarray, contexts: np.ndarray, bar) -> None:
        """One epoch of the batched torch path."""
        c = self.config
        centres, contexts = torch.from_numpy(centres), torch.from_numpy(contexts)
        # the batched path adds a batch's gradients up per word (index_add_): in a batch much larger than the
        # vocabulary each word moved by hundreds of times the learning rate at once, which diverged on a toy
        # corpus (9 words, batch 2048: loss 3.7 -> 931); at most 16 pairs a word on average (at least 256)
        self._width = contexts.shape[1] if contexts.dim() == 2 else 1  # CBOW's context slots a row
        step = self._batch_pairs()
        for start in range(0, len(centres), step):
            progress = min(self.seen / self.expected, 1.0)
            lr = c.alpha - (c.alpha - c.min_alpha) * progress
            w, ctx = centres[start : start + step].long(), contexts[start : start + step].long()
            need_loss = start // step % 100 == 0
            J = self._step(w, ctx, lr, need_loss)
            if need_loss:
                self.loss_history.append(J / len(w))
            self.seen += len(w)
            bar.update(len(w))

    def _batch_pairs(self) -> int:
        """The pairs of a torch batch: --batch-size, at most 16 pairs a word on average (at least 256). A CBOW row
        that moves each of its m context vectors by the whole dJ/dh (word2vec's rule with the mean) or its output
        vectors by m times a pair's (the sum h = Σ u) counts as m pairs, m its context slots (2·reach): 256 rows of a
        3-word vocabulary diverged (loss 3.02 -> inf)."""
        c, pairs = self.config, max(256, 16 * self.U.shape[0])
        if c.model == "cbow" and (c.cbow_update == "word2vec" or not c.cbow_mean):
            pairs = max(1, pairs // self._width)
        return min(c.batch_size, pairs)

    def _step(self, w: torch.Tensor, ctx: torch.Tensor, lr: float, need_loss: bool, neg=None) -> float | None:
        """One SGD step on a batch: skip-gram (h = u_w, target ctx) or CBOW (h = mean u_ctx, target w); `neg`, the
        negatives (B, K) drawn beforehand, or None to draw them here."""
        c = self.config
        B, E = len(w), c.dimension
        if c.model == "skip-gram":
            h_rows, u_weight, target = w[:, None], None, ctx
            h = self.U.index_select(0, w)  # (B, E)
        else:  # h = Σ a_i u_{c_i}, u_{c_i} -= lr b_i dh (a_i = b_i: the gradient; else as word2vec.c)
            mask = (ctx >= 0).float()
            mean = mask / mask.sum(1, keepdim=True)
            h_weight = mean if c.cbow_mean else mask
            u_weight = h_weight if c.cbow_update == "gradient" else mask if c.cbow_mean else mean
            h_rows, target = ctx.clamp(min=0), w
            h = (self.U.index_select(0, h_rows.reshape(-1)).view(B, -1, E) * h_weight[:, :, None]).sum(1)
        if self.config.loss == "softmax":
            J, dh, dV = softmax_loss_grads(h, self.V_out, target)
            self.V_out -= lr * dV
        else:
            neg = self._negatives(B) if neg is None else neg
            targets = torch.cat([target[:, None], neg], 1).reshape(-1)  # (B·(1+K),)
            mask = torch.cat([torch.ones(B, 1, dtype=torch.float32), (neg != target[:, None]).float()], 1)
            v = self.V_out.index_select(0, targets).view(B, -1, E)
            J, dh, dv = negative_sampling_loss_grads(h, v, mask, need_loss)
            self.V_out.index_add_(0, targets, dv.view(-1, E), alpha=-lr)
        dU = (
            dh if u_weight is None else (dh[:, None, :] * u_weight[:, :, None]).view(-1, E)
        )  # each row's share
        self.U.index_add_(0, h_rows.reshape(-1), dU, alpha=-lr)
        return None if J is None else float(J)

    def loss_is_finite(self) -> bool:
        return all(math.isfinite(x) for x in self.loss_history)


def _sentences(sentences, method: str) -> list[list]:
    """The sentences as a list of lists of words, each read once (a generator is; a numpy array's truth value is an
    error, an iterator runs dry); a str or bytes, or sentences of them, one RnnkitError: iterated, their characters
    or byte values were taken for words in silence."""
    sentences = sentences if isinstance(sentences, str | bytes | list) else list(sentences)
    if isinstance(sentences, bytes) or any(isinstance(s, bytes) for s in sentences):
        raise RnnkitError(
            f"Word2Vec.{method} takes sentences as lists of words, not bytes: decode them first "
            "([s.decode().split() for s in lines])"
        )
    if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
        raise RnnkitError(
            f"Word2Vec.{method} takes sentences as lists of words, not str: split them first "
            "([s.split() for s in texts])"
        )
    return [s if isinstance(s, list) else list(s) for s in sentences]


def _shuffle_rows(rng: np.random.Generator, rows: np.ndarray) -> None:
    """rng.shuffle of a C-contiguous array's rows, in place, as one array of their bytes: the draws of rng.shuffle
    of any 1-D array as long (numpy shuffles a 2-D one a row at a time through a buffer row, 40 times slower)."""
    rng.shuffle(rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).reshape(len(rows)))


def _word_dtype(words: int):
    """The type of the ids of a vocabulary of `words`: int16 where they fit (with -1, CBOW's pad), else as _index_dtype.
    Its pairs are an epoch's largest arrays: int16 holds them in half int32's memory (PTB's 10,000 words)."""
    return np.int16 if words <= 2**15 else _index_dtype(words)


def _index_dtype(n: int):
    """int32 for indices below n where they fit (half int64's memory), else int64."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64
