"""LSTM with a recurrent projection layer (Sak, Senior & Beaufays 2014): torch.nn.LSTM's `proj_size`.

The LSTM of lstm.py, but the state it feeds back and outputs is a projection of o_t ⊙ tanh(c_t) to
P < H units, so the recurrent matrix is 4H x P instead of 4H x H:

    a_t = W_xh x_t + b_xh + W_hh h_{t-1} + b_hh          W_hh (4H, P)
    i_t, f_t, g_t, o_t, c_t as in the LSTM               c_t (B, H)
    u_t = o_t ⊙ tanh(c_t)                                (B, H)
    h_t = u_t W_hrᵀ                                      W_hr (P, H), no bias;  h_t (B, P)

Backward (dh_t (B, P), dc_t (B, H)):

    du_t = dh_t W_hr                                     then the LSTM's backward with du_t for dh_t
    dW_hr = Σ_t dh_tᵀ u_t                                (one GEMM after the loop, in the engine)

Two recurrent GEMMs per step, so the engine's list of them has W_hr as a second entry. State (h_t, c_t)
of sizes (P, H), as torch.nn.LSTM keeps them; the layer's output is h_t, P units per direction.
The native loop runs it too (rnnkit/engine/csrc/cells_proj.h).
"""

import numbers

import torch

from rnnkit.cells._base import _torch_name
from rnnkit.cells.lstm import LSTM, lstm_step, lstm_step_backward
from rnnkit.errors import said


def lstmp_step(xw_t, state, P):
    W_hh, b_hh, W_hr = P
    (u_t, c_t), (h_prev,), cache = lstm_step(xw_t, state, (W_hh, b_hh))  # u_t = o_t ⊙ tanh(c_t), (B, H)
    h_t = u_t @ W_hr.t()  # (B, P)
    return (h_t, c_t), (h_prev, u_t), cache


def lstmp_step_backward(dstate, cache, P):
    dh_t, dc_t = dstate
    W_hh, b_hh, W_hr = P
    du_t = dh_t @ W_hr  # (B, H): the LSTM's dh_t
    da_t, dprev, _, _ = lstm_step_backward((du_t, dc_t), cache, (W_hh, b_hh))
    return da_t, dprev, (da_t, dh_t), ()


class LSTMP(LSTM):
    """LSTM cell with a projection: state (h_t (B, P), c_t (B, H)); W_xh (4H, D), W_hh (4H, P), W_hr (P, H).

    Equal to torch.nn.LSTM(..., proj_size=P); `Recurrent("lstm", D, H, proj_size=P)` builds its layers of it."""

    REC_PARAMS = ("W_hh", "b_hh", "W_hr")
    GEMMS = (("W_hh", "b_hh"), ("W_hr", None))
    step = staticmethod(lstmp_step)
    step_backward = staticmethod(lstmp_step_backward)
    weight_hr = _torch_name("W_hr")  # torch.nn.LSTM's weight_hr_l0, as weight_hh is W_hh

    def __init__(
        self,
        input_size,
        hidden_size,
        bias=True,
        forget_bias: float = 1.0,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ):
        # (a hidden_size that is no int: Cell.__init__ names it; compared here, None failed with "'<' not supported")
        if isinstance(hidden_size, numbers.Integral) and (
            isinstance(proj_size, bool)
            or not isinstance(proj_size, numbers.Integral)
            or not 0 < proj_size < hidden_size
        ):
            raise ValueError(
                f"proj_size must be an integer in [1, hidden_size) = [1, {hidden_size}), got {said(proj_size)}"
            )
        self.proj_size = int(proj_size) if isinstance(proj_size, numbers.Integral) else proj_size
        super().__init__(input_size, hidden_size, bias, forget_bias, device, dtype)

    def _recurrent_shapes(self, H, bias):
        P = self.proj_size
        return ("W_hh", (4 * H, P)), ("b_hh", (4 * H,) if bias else None), ("W_hr", (P, H))

    @property
    def output_size(self) -> int:
        return self.proj_size

    def extra_repr(self):
        return super().extra_repr() + f", proj_size={self.proj_size}"

    def init_state(self, batch: int, dtype=None, device=None) -> tuple:
        p = self.W_xh
        kw = dict(dtype=dtype or p.dtype, device=device or p.device)
        return torch.zeros(batch, self.proj_size, **kw), torch.zeros(batch, self.hidden_size, **kw)
