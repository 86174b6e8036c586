"""What MUT1 and MUT2 share: a parameter-free input term that needs D = H.

MUT1 adds tanh(x_t) to the candidate and MUT2 adds x_t to the reset gate (Jozefowicz et al.
2015). Both only add up when the input size D equals the hidden size H. When D ≠ H we replace
x_t by a learned projection x̃_t = W_xp x_t (W_xp: (H, D), no bias); when D = H, x̃_t = x_t
exactly, with no extra parameter, as in the paper.
"""

import torch
from torch import nn


class MUTBase:
    """Mixin: creates `W_xp` when input_size != hidden_size and gives x̃ = W_xp x or x."""

    def _make_projection(self):
        D, H = self.input_size, self.hidden_size
        self.W_xp = nn.Parameter(torch.empty(H, D)) if D != H else None

    def __setstate__(self, state):
        """Cell's, with the projection's layout (_input_blocks) where a cell pickled by an older rnnkit lacks it:
        the class defaults (tanh_tail 0, input_identity None) projected without tanh(x̃) or x̃, in silence."""
        super().__setstate__(state)
        if "input_identity" not in state:  # (MUT1 had tanh_tail before it)
            self._input_blocks()

    def x_tilde(self, xs):
        return xs if self.W_xp is None else xs @ self.W_xp.t()
