"""Gated recurrent unit, torch/cuDNN form (reset applied after the recurrent matrix).

Gates in torch order r, z, n:

    [x_r, x_z, x_n] = W_xh x_t + b_xh            [h_r, h_z, h_n] = W_hh h_{t-1} + b_hh
    r_t = σ(x_r + h_r)      z_t = σ(x_z + h_z)
    n_t = tanh(x_n + r_t ⊙ h_n)
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

This equals torch.nn.GRU. The lecture form, W(r ⊙ h_{t-1}), is `gru_cho`.

Backward:
    dz = dh_t ⊙ (h_{t-1} - n_t)     dn = dh_t ⊙ (1 - z_t)       da_n = dn ⊙ (1 - n_t²)
    dr = da_n ⊙ h_n                 da_r = dr ⊙ r(1-r)          da_z = dz ⊙ z(1-z)
    d[x_r, x_z, x_n] = [da_r, da_z, da_n]     d[h_r, h_z, h_n] = [da_r, da_z, da_n ⊙ r_t]
    dh_{t-1} = dh_t ⊙ z_t + d[h_r, h_z, h_n] W_hh
"""

import torch

from rnnkit.cells._base import Cell, linear, recurrent_weights


def gru_step(xw_t, state, P):
    (h_prev,) = state
    W_hh, b_hh = P
    x_r, x_z, x_n = xw_t.chunk(3, dim=1)
    h_r, h_z, h_n = linear(h_prev, W_hh, b_hh).chunk(3, dim=1)
    r_t, z_t = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n_t = torch.tanh(x_n + r_t * h_n)
    h_t = n_t + z_t * (h_prev - n_t)
    return (h_t,), (h_prev,), (r_t, z_t, n_t, h_n, h_prev)


def gru_step_backward(dstate, cache, P):
    (dh_t,) = dstate
    r_t, z_t, n_t, h_n, h_prev = cache
    W_hh, _ = P
    dz = dh_t * (h_prev - n_t)
    da_n = dh_t * (1 - z_t) * (1 - n_t * n_t)
    da_r = da_n * h_n * r_t * (1 - r_t)
    da_z = dz * z_t * (1 - z_t)
    dxw_t = torch.cat((da_r, da_z, da_n), dim=1)
    dhw_t = torch.cat((da_r, da_z, da_n * r_t), dim=1)
    dh_prev = dh_t * z_t + dhw_t @ W_hh
    return dxw_t, (dh_prev,), (dhw_t,), ()


class GRU(Cell):
    """GRU cell equal to torch.nn.GRUCell. Weights W_xh (3H, D), W_hh (3H, H), gates r, z, n."""

    gates = 3
    torch_mode = "GRU"
    step = staticmethod(gru_step)
    step_backward = staticmethod(gru_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (3 * H, H)), ("b_hh", (3 * H,) if bias else None))
        self._place(device, dtype)
        self.reset_parameters()
