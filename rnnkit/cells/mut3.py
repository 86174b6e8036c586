"""MUT3 (Jozefowicz, Zaremba & Sutskever 2015, as deck 002 writes it).

    z   = σ(W_xz x_t + W_hz tanh(h_{t-1}) + b_z)
    r   = σ(W_xr x_t + W_hr h_{t-1} + b_r)
    h_t = tanh(W_hh (r ⊙ h_{t-1}) + W_xh x_t + b_h) ⊙ z + h_{t-1} ⊙ (1 - z)

Input projection W_xh (3H, D), blocks [z, r, h]. Three recurrent GEMMs per step, on three
different vectors: W_hz on tanh(h_{t-1}), W_hr on h_{t-1}, W_hh on u = r ⊙ h_{t-1}.

Backward:
    da_h = dh_t ⊙ z ⊙ (1 - h̃²)     da_z = dh_t ⊙ (h̃ - h_{t-1}) ⊙ z(1-z)
    du = da_h W_hh                   da_r = du ⊙ h_{t-1} ⊙ r(1-r)
    dh_{t-1} = dh_t ⊙ (1 - z) + du ⊙ r + da_r W_hr + (da_z W_hz) ⊙ (1 - tanh²(h_{t-1}))
"""

import torch

from rnnkit.cells._base import Cell, recurrent_weights


def mut3_step(xw_t, state, P):
    (h_prev,) = state
    W_hz, W_hr, W_hh = P
    H = h_prev.shape[1]
    tanh_h = torch.tanh(h_prev)
    z = torch.sigmoid(xw_t[:, :H] + tanh_h @ W_hz.t())
    r = torch.sigmoid(xw_t[:, H : 2 * H] + h_prev @ W_hr.t())
    u = r * h_prev
    hc = torch.tanh(u @ W_hh.t() + xw_t[:, 2 * H :])
    h_t = h_prev + z * (hc - h_prev)
    return (h_t,), (tanh_h, h_prev, u), (z, r, hc, h_prev, tanh_h)


def mut3_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    z, r, hc, h_prev, tanh_h = cache
    W_hz, W_hr, W_hh = P
    da_h = dh_t * z * (1 - hc * hc)
    da_z = dh_t * (hc - h_prev) * z * (1 - z)
    du = da_h @ W_hh
    da_r = du * h_prev * r * (1 - r)
    dh_prev = dh_t * (1 - z) + du * r + da_r @ W_hr + (da_z @ W_hz) * (1 - tanh_h * tanh_h)
    return torch.cat((da_z, da_r, da_h), dim=1), (dh_prev,), (da_z, da_r, da_h), ()


class MUT3(Cell):
    """MUT3 cell. Shapes: x_t (B, D), h_t (B, H)."""

    gates = 3
    REC_PARAMS = ("W_hz", "W_hr", "W_hh")
    GEMMS = (("W_hz", None), ("W_hr", None), ("W_hh", None))
    step = staticmethod(mut3_step)
    step_backward = staticmethod(mut3_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hz", (H, H)), ("W_hr", (H, H)), ("W_hh", (H, H)))
        self._place(device, dtype)
        self.reset_parameters()
