"""What every language model in rnnkit reports when it scores a text, and how it picks the next token.

    log P(x_1 .. x_T) = Σ_t log P(x_t | x_<t)          in nats
    nats/token        = -log P / T
    bits/token        = nats/token / ln 2
    perplexity        = exp(nats/token)

Sampling (deck 004): choose the next token w^(j) with probability ∝ exp(α log P̂(w^(j) | history)),
so α = 1 samples the model, larger α is greedier and α -> ∞ is the argmax (greedy completion).
"""

import math
import sys
from dataclasses import dataclass

import numpy as np

_MAX_EXP = math.log(sys.float_info.max)  # 709.78...: the largest x whose exp(x) is a float


def perplexity(nats_per_token: float) -> float:
    """exp(nats/token), infinite past the largest x whose exp(x) is a float (and for NaN): a cut at 709 said inf of
    exp(709.5) = 1.35e308."""
    return math.exp(nats_per_token) if nats_per_token <= _MAX_EXP else math.inf


@dataclass(frozen=True)
class LMScore:
    log_prob: float  # log P(text) in nats (<= 0)
    tokens: int  # how many tokens were predicted

    @property
    def nats_per_token(self) -> float:
        return -self.log_prob / max(self.tokens, 1)

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nats_per_token)

    def as_dict(self, unit: str = "token") -> dict:
        """The keys of `rnnkit score --json` for the RNN LM, with tokens called `unit`s: for "char",
        log_prob, nats, chars, nats_per_char, bits_per_char, perplexity (infinite for a text of probability 0:
        an n-gram model without smoothing meeting an unseen n-gram)."""
        return {
            "log_prob": self.log_prob,
            "nats": -self.log_prob,
            f"{unit}s": self.tokens,
            f"nats_per_{unit}": self.nats_per_token,
            f"bits_per_{unit}": self.bits_per_token,
            "perplexity": self.perplexity,
        }


def pick_next(p: np.ndarray, alpha: float | None, rng: np.random.Generator) -> int:
    """Argmax of p when alpha is None, else a sample from p^α / Σ p^α (a token with p = 0 never)."""
    if alpha is None:
        return int(np.argmax(p))
    log_p = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -np.inf)
    # α (log p - max log p): 0 at the likeliest, -inf past float64, never NaN (α log p was -inf for all at α = 1e308)
    with np.errstate(over="ignore"):
        q = np.exp(alpha * (log_p - log_p.max()))
    return int(rng.choice(len(q), p=q / q.sum()))
