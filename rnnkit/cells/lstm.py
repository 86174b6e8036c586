"""Long short-term memory (Hochreiter & Schmidhuber 1997; deck 002, deck 000).

Gates in torch order i, f, g, o, stacked in one matrix:

    a_t = W_xh x_t + b_xh + W_hh h_{t-1} + b_hh          (B, 4H) = [a_i, a_f, a_g, a_o]
    i_t = σ(a_i)   f_t = σ(a_f)   g_t = tanh(a_g)   o_t = σ(a_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)

Backward (dh_t, dc_t: total gradients reaching h_t and c_t):

    do_t = dh_t ⊙ tanh(c_t)
    dc   = dc_t + dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    di_t = dc ⊙ g_t      df_t = dc ⊙ c_{t-1}      dg_t = dc ⊙ i_t
    dc_{t-1} = dc ⊙ f_t                           (the additive path: no squashing, deck 002)
    da = [di ⊙ i(1-i), df ⊙ f(1-f), dg ⊙ (1-g²), do ⊙ o(1-o)]
    dh_{t-1} = da W_hh

The forget-gate bias starts at `forget_bias` (default 1.0: Gers et al. 2000; Jozefowicz et al.
2015 found it closes most of the gap to the GRU).
"""

import torch

from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.errors import finite_real, said


def lstm_step(xw_t, state, P):
    h_prev, c_prev = state
    W_hh, b_hh = P
    a_t = xw_t + linear(h_prev, W_hh, b_hh)  # (B, 4H)
    a_i, a_f, a_g, a_o = a_t.chunk(4, dim=1)
    i_t, f_t, g_t, o_t = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c_t = f_t * c_prev + i_t * g_t
    tanh_c = torch.tanh(c_t)
    h_t = o_t * tanh_c
    return (h_t, c_t), (h_prev,), (i_t, f_t, g_t, o_t, c_prev, tanh_c)


def lstm_step_backward(dstate, cache, P):
    dh_t, dc_t = dstate
    i_t, f_t, g_t, o_t, c_prev, tanh_c = cache
    W_hh, _ = P
    do_t = dh_t * tanh_c
    dc = dc_t + dh_t * o_t * (1 - tanh_c * tanh_c)
    di_t, df_t, dg_t = dc * g_t, dc * c_prev, dc * i_t
    dc_prev = dc * f_t
    da_t = torch.cat(
        (di_t * i_t * (1 - i_t), df_t * f_t * (1 - f_t), dg_t * (1 - g_t * g_t), do_t * o_t * (1 - o_t)),
        dim=1,
    )
    dh_prev = da_t @ W_hh
    return da_t, (dh_prev, dc_prev), (da_t,), ()


class LSTM(Cell):
    """LSTM cell; state (h_t, c_t), each (B, H). Weights W_xh (4H, D), W_hh (4H, H), gates i, f, g, o."""

    gates = 4
    num_states = 2
    torch_mode = "LSTM"
    step = staticmethod(lstm_step)
    step_backward = staticmethod(lstm_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, forget_bias: float = 1.0, device=None, dtype=None):
        # said in one line: a string failed in fill_ below with torch's many-line TypeError, a NaN (or inf) made
        # every output NaN from the first step
        if forget_bias is not None and not finite_real(forget_bias):
            raise ValueError(f"lstm forget_bias must be a finite number (or None: drawn as the other biases), got "
                             f"{said(forget_bias)}")  # fmt: skip
        if not bias and forget_bias not in (None, 1.0):  # (1.0: the default) ignored, yet shown by the repr
            raise ValueError(f"lstm forget_bias={forget_bias} sets the forget gate's bias, and bias=False has none; "
                             "drop forget_bias or use bias=True")  # fmt: skip
        super().__init__(input_size, hidden_size, bias)
        recurrent_weights(self, *self._recurrent_shapes(hidden_size, bias))
        # (a numpy scalar from a parameter grid, np.float32(2.0), failed in reset_parameters' slice assignment:
        # "TypeError: can't assign a numpy.float32 to a torch.FloatTensor")
        if forget_bias is not None and type(forget_bias) not in (int, float):
            forget_bias = float(forget_bias)
        self.forget_bias = forget_bias
        self._place(device, dtype)
        self.reset_parameters()  # (once: a second draw gave other weights than torch.nn's for the same seed)

    def _recurrent_shapes(self, H, bias):
        """(name, shape) of the recurrent parameters (LSTMP's add its projection)."""
        return ("W_hh", (4 * H, H)), ("b_hh", (4 * H,) if bias else None)

    def extra_repr(self):
        fb = "" if self.forget_bias == 1.0 else f", forget_bias={self.forget_bias}"
        return super().extra_repr() + fb

    def reset_parameters(self):
        # a value past the largest of the bias's dtype (float32's 3.4e38) failed in the assignment below, in torch's
        # "value cannot be converted to type float without overflow"; checked here, before any draw, as the bias is
        # now: a float64 cell of 1e308 made float32 (.float()) failed so when reset
        if (
            self.bias
            and self.forget_bias is not None
            and abs(self.forget_bias) > torch.finfo(self.b_xh.dtype).max
        ):
            raise ValueError(f"lstm forget_bias {self.forget_bias:g} is past the largest value of its bias's dtype, "
                             f"{str(self.b_xh.dtype).removeprefix('torch.')} ({torch.finfo(self.b_xh.dtype).max:.6g}); "
                             "give a smaller one")  # fmt: skip
        super().reset_parameters()
        if self.bias and self.forget_bias is not None:
            H = self.hidden_size
            with torch.no_grad():  # split the forget bias over the two bias vectors torch keeps
                # (as a float: an int kept for the repr, 2**63, failed in torch's "Overflow when unpacking long long")
                for name, value in (("b_xh", float(self.forget_bias)), ("b_hh", 0.0)):
                    getattr(self, name)[H : 2 * H] = value
                    # pruned or parametrized, the bias is computed anew from the tensor that keeps it, which is
                    # where torch.nn's reset_parameters draws (a value written only into the computed one was lost)
                    if torch.nn.utils.parametrize.is_parametrized(self, name):
                        kept = getattr(self.parametrizations[name], "original", None)
                    else:
                        kept = getattr(self, name + "_orig", None)  # torch.nn.utils.prune's
                    if isinstance(kept, torch.nn.Parameter):
                        kept[H : 2 * H] = value
