"""Gated recurrent unit as the lectures write it (Cho et al. 2014; decks 002 and 003).

The reset gate acts BEFORE the recurrent matrix of the candidate:

    r_t = σ(W_xr x_t + W_hr h_{t-1} + b_r)
    z_t = σ(W_xz x_t + W_hz h_{t-1} + b_z)
    h̃_t = tanh(W_xh x_t + W_hh (r_t ⊙ h_{t-1}) + b_h)
    h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ h̃_t                 (z keeps the OLD state: decks 002/003)

Deck 000 writes h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t instead, its z_t (u_t here) keeping the NEW
state. It is the same model: with u_t = 1 - z_t = σ(-(W_xz x_t + W_hz h_{t-1} + b_z)), negating W_xz,
W_hz and b_z maps one onto the other (tests/cells/test_variants.py shows it).

Weights: W_xh (3H, D) with blocks [r, z, h̃]; W_hrz (2H, H) = [W_hr; W_hz]; W_hh (H, H).
Two recurrent GEMMs per step, the second on r_t ⊙ h_{t-1}.

Backward:
    dz = dh_t ⊙ (h_{t-1} - h̃_t)        da_h = dh_t ⊙ (1 - z_t) ⊙ (1 - h̃_t²)
    du   = da_h W_hh                    (u = r ⊙ h_{t-1})
    dr = du ⊙ h_{t-1}                   da_rz = [dr ⊙ r(1-r), dz ⊙ z(1-z)]
    dh_{t-1} = dh_t ⊙ z_t + du ⊙ r_t + da_rz W_hrz
"""

import torch

from rnnkit.cells._base import Cell, recurrent_weights


def gru_cho_step(xw_t, state, P):
    (h_prev,) = state
    W_hrz, W_hh = P
    H = h_prev.shape[1]
    rz = torch.sigmoid(xw_t[:, : 2 * H] + h_prev @ W_hrz.t())
    r_t, z_t = rz[:, :H], rz[:, H:]
    u_t = r_t * h_prev
    hc_t = torch.tanh(xw_t[:, 2 * H :] + u_t @ W_hh.t())  # h̃_t
    h_t = hc_t + z_t * (h_prev - hc_t)
    return (h_t,), (h_prev, u_t), (rz, hc_t, h_prev)


def gru_cho_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    rz, hc_t, h_prev = cache
    W_hrz, W_hh = P
    H = h_prev.shape[1]
    r_t, z_t = rz[:, :H], rz[:, H:]
    dz = dh_t * (h_prev - hc_t)
    da_h = dh_t * (1 - z_t) * (1 - hc_t * hc_t)
    du = da_h @ W_hh
    dr = du * h_prev
    da_rz = torch.cat((dr, dz), dim=1) * rz * (1 - rz)
    dh_prev = dh_t * z_t + du * r_t + da_rz @ W_hrz
    return torch.cat((da_rz, da_h), dim=1), (dh_prev,), (da_rz, da_h), ()


class GRUCho(Cell):
    """The lecture GRU (reset before the matrix). Shapes: x_t (B, D), h_t (B, H)."""

    gates = 3
    REC_PARAMS = ("W_hrz", "W_hh")
    GEMMS = (("W_hrz", None), ("W_hh", None))
    step = staticmethod(gru_cho_step)
    step_backward = staticmethod(gru_cho_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hrz", (2 * H, H)), ("W_hh", (H, H)))
        self._place(device, dtype)
        self.reset_parameters()
