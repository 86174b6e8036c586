"""MUT2 (Jozefowicz, Zaremba & Sutskever 2015, as deck 002 writes it).

    z   = σ(W_xz x_t + W_hz h_{t-1} + b_z)
    r   = σ(x̃_t + W_hr h_{t-1} + b_r)
    h_t = tanh(W_hh (r ⊙ h_{t-1}) + W_xh x_t + b_h) ⊙ z + h_{t-1} ⊙ (1 - z)

x̃_t = x_t when D = H, else W_xp x_t (see `rnnkit.cells._mut`). Input projection blocks [z, r, h]:
W_xh (2H, D) gives [z, h]; the r block is x̃_t; b_xh (3H) = [b_z, b_r, b_h].
Recurrent: W_hzr (2H, H) = [W_hz; W_hr] on h_{t-1}; W_hh (H, H) on u = r ⊙ h_{t-1}.

Backward:
    da_h = dh_t ⊙ z ⊙ (1 - h̃²)     da_z = dh_t ⊙ (h̃ - h_{t-1}) ⊙ z(1-z)
    du = da_h W_hh                   da_r = du ⊙ h_{t-1} ⊙ r(1-r)
    dh_{t-1} = dh_t ⊙ (1 - z) + du ⊙ r + [da_z, da_r] W_hzr
"""

import torch

from rnnkit.cells._base import Cell, joined, recurrent_weights
from rnnkit.cells._mut import MUTBase


def mut2_step(xw_t, state, P):
    (h_prev,) = state
    W_hzr, W_hh = P
    H = h_prev.shape[1]
    zr = torch.sigmoid(xw_t[:, : 2 * H] + h_prev @ W_hzr.t())
    z, r = zr[:, :H], zr[:, H:]
    u = r * h_prev
    hc = torch.tanh(u @ W_hh.t() + xw_t[:, 2 * H :])
    h_t = h_prev + z * (hc - h_prev)
    return (h_t,), (h_prev, u), (zr, hc, h_prev)


def mut2_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    zr, hc, h_prev = cache
    W_hzr, W_hh = P
    H = h_prev.shape[1]
    z, r = zr[:, :H], zr[:, H:]
    da_h = dh_t * z * (1 - hc * hc)
    du = da_h @ W_hh
    da_zr = torch.cat((dh_t * (hc - h_prev), du * h_prev), dim=1) * zr * (1 - zr)
    dh_prev = dh_t * (1 - z) + du * r + da_zr @ W_hzr
    return torch.cat((da_zr, da_h), dim=1), (dh_prev,), (da_zr, da_h), ()


class MUT2(MUTBase, Cell):
    """MUT2 cell. Shapes: x_t (B, D), h_t (B, H)."""

    gates = 3
    REC_PARAMS = ("W_hzr", "W_hh")
    GEMMS = (("W_hzr", None), ("W_hh", None))
    step = staticmethod(mut2_step)
    step_backward = staticmethod(mut2_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        self.W_xh = torch.nn.Parameter(torch.empty(2 * H, input_size))  # [z, h] only
        self._make_projection()
        self._input_blocks()
        recurrent_weights(self, ("W_hzr", (2 * H, H)), ("W_hh", (H, H)))
        self._place(device, dtype)
        self.reset_parameters()

    def _input_blocks(self):
        """[z, x̃, h] + b: x_t itself as the x̃ block where D = H."""
        self.input_identity = self.hidden_size if self.W_xp is None else None

    def input_affine(self):
        """[W_z; W_xp; W_h] (D ≠ H) or W_xh = [W_z; W_h] with x_t itself as the x̃ block (D = H)."""
        if self.W_xp is None:
            return self.W_xh, self.b_xh
        H = self.hidden_size
        return joined(torch.cat, (self.W_xh[:H], self.W_xp, self.W_xh[H:])), self.b_xh
