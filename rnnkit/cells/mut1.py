"""MUT1 (Jozefowicz, Zaremba & Sutskever 2015, as deck 002 writes it).

    z   = σ(W_xz x_t + b_z)
    r   = σ(W_xr x_t + W_hr h_{t-1} + b_r)
    h_t = tanh(W_hh (r ⊙ h_{t-1}) + tanh(x̃_t) + b_h) ⊙ z + h_{t-1} ⊙ (1 - z)

x̃_t = x_t when D = H, else W_xp x_t (see `rnnkit.cells._mut`). Input projection blocks [z, r, h]:
W_xh (2H, D) gives [z, r]; the h block is tanh(x̃_t); b_xh (3H) = [b_z, b_r, b_h].
Recurrent: W_hr (H, H) on h_{t-1}, W_hh (H, H) on u = r ⊙ h_{t-1}.

Backward (h̃ = the tanh term):
    dh̃ = dh_t ⊙ z      dz = dh_t ⊙ (h̃ - h_{t-1})     da_h = dh̃ ⊙ (1 - h̃²)
    du = da_h W_hh      dr = du ⊙ h_{t-1}               da_r = dr ⊙ r(1-r)     da_z = dz ⊙ z(1-z)
    dh_{t-1} = dh_t ⊙ (1 - z) + du ⊙ r + da_r W_hr
"""

import torch

from rnnkit.cells._base import Cell, joined, recurrent_weights
from rnnkit.cells._mut import MUTBase


def mut1_step(xw_t, state, P):
    (h_prev,) = state
    W_hr, W_hh = P
    H = h_prev.shape[1]
    z = torch.sigmoid(xw_t[:, :H])
    r = torch.sigmoid(xw_t[:, H : 2 * H] + h_prev @ W_hr.t())
    u = r * h_prev
    hc = torch.tanh(u @ W_hh.t() + xw_t[:, 2 * H :])
    h_t = h_prev + z * (hc - h_prev)
    return (h_t,), (h_prev, u), (z, r, hc, h_prev)


def mut1_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    z, r, hc, h_prev = cache
    W_hr, W_hh = P
    da_h = dh_t * z * (1 - hc * hc)
    da_z = dh_t * (hc - h_prev) * z * (1 - z)
    du = da_h @ W_hh
    da_r = du * h_prev * r * (1 - r)
    dh_prev = dh_t * (1 - z) + du * r + da_r @ W_hr
    return torch.cat((da_z, da_r, da_h), dim=1), (dh_prev,), (da_r, da_h), ()


class MUT1(MUTBase, Cell):
    """MUT1 cell. Shapes: x_t (B, D), h_t (B, H)."""

    gates = 3
    REC_PARAMS = ("W_hr", "W_hh")
    GEMMS = (("W_hr", None), ("W_hh", None))
    step = staticmethod(mut1_step)
    step_backward = staticmethod(mut1_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        self.W_xh = torch.nn.Parameter(torch.empty(2 * H, input_size))  # [z, r] only
        self._make_projection()
        self._input_blocks()
        recurrent_weights(self, ("W_hr", (H, H)), ("W_hh", (H, H)))
        self._place(device, dtype)
        self.reset_parameters()

    def _input_blocks(self):
        """[z, r, tanh(x̃)] + b: the last H columns through tanh, x_t itself as that block where D = H."""
        self.tanh_tail = self.hidden_size
        self.input_identity = 2 * self.hidden_size if self.W_xp is None else None

    def input_affine(self):
        """[W_xh; W_xp] (D ≠ H) or W_xh with x_t itself as the x̃ block (D = H), tanh on that block."""
        return (self.W_xh if self.W_xp is None else joined(torch.cat, (self.W_xh, self.W_xp))), self.b_xh
