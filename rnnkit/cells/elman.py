"""Elman RNN (deck 002, "Vanilla RNN" or "Elman RNN"; deck 000, "Plain Vanilla Recurrent Network").

    a_t = W_xh x_t + b_xh + W_hh h_{t-1} + b_hh
    h_t = φ(a_t)                        φ = tanh (`rnn_tanh`) or max(0, ·) (`rnn_relu`)
                                        (deck 004 writes h_t = σ(...); no logistic-sigmoid cell here: deck 002's tanh)

Backward, with dh_t the total gradient reaching h_t (from the output and from step t+1):

    da_t     = dh_t ⊙ φ'(a_t)           tanh' = 1 - h_t²,  relu' = [h_t > 0]
    dh_{t-1} = da_t W_hh                (in step_backward: the GEMM of every step)
    dW_hh    = Σ_t da_tᵀ h_{t-1}        (one GEMM after the loop, in the engine)

Two biases, as torch.nn.RNN, so converters keep every weight.
"""

import torch

from rnnkit.cells._base import Cell, linear, recurrent_weights
from rnnkit.errors import RnnkitError


def rnn_tanh_step(xw_t, state, P):
    (h_prev,) = state
    W_hh, b_hh = P
    h_t = torch.tanh(xw_t + linear(h_prev, W_hh, b_hh))
    return (h_t,), (h_prev,), (h_t,)


def rnn_tanh_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    W_hh, _ = P
    da_t = dh_t * (1 - h_t * h_t)
    dh_prev = da_t @ W_hh
    return da_t, (dh_prev,), (da_t,), ()


def rnn_relu_step(xw_t, state, P):
    (h_prev,) = state
    W_hh, b_hh = P
    h_t = torch.relu(xw_t + linear(h_prev, W_hh, b_hh))
    return (h_t,), (h_prev,), (h_t,)


def rnn_relu_step_backward(dstate, cache, P):
    (dh_t,), (h_t,) = dstate, cache
    W_hh, _ = P
    da_t = torch.where(h_t <= 0, 0.0, dh_t)  # torch's threshold_backward: a NaN h_t passes dh_t on
    dh_prev = da_t @ W_hh
    return da_t, (dh_prev,), (da_t,), ()


class RNNTanh(Cell):
    """Elman cell h_t = tanh(W_xh x_t + W_hh h_{t-1} + b). Shapes: x_t (B, D), h_t (B, H)."""

    gates = 1
    torch_mode = "RNN_TANH"
    step = staticmethod(rnn_tanh_step)
    step_backward = staticmethod(rnn_tanh_step_backward)

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity=None, device=None, dtype=None):
        # torch.nn.RNNCell's option (in its place after bias), which the class names here: its own is taken
        own = "relu" if self.torch_mode == "RNN_RELU" else "tanh"
        if nonlinearity is not None and nonlinearity != own:
            cls = (
                {"tanh": "RNNTanh", "relu": "RNNReLU"}.get(nonlinearity)
                if isinstance(nonlinearity, str)
                else None
            )
            fix = (
                f"rnnkit.cells.{cls}({input_size}, {hidden_size}, ...)"
                if cls
                else "RNNTanh or RNNReLU ('tanh' or 'relu')"
            )
            raise RnnkitError(f"nonlinearity={nonlinearity!r} is torch.nn.RNNCell's option; here the class names "
                              f"it: {fix}")  # fmt: skip
        super().__init__(input_size, hidden_size, bias)
        H = hidden_size
        recurrent_weights(self, ("W_hh", (H, H)), ("b_hh", (H,) if bias else None))
        self._place(device, dtype)
        self.reset_parameters()

    @property
    def nonlinearity(self) -> str:
        """torch.nn.RNNCell's nonlinearity, "tanh" or "relu", which code written for it reads
        (nn.init.calculate_gain(cell.nonlinearity)); a subclass with a step of its own has none, as in Recurrent."""
        phi = {rnn_tanh_step: "tanh", rnn_relu_step: "relu"}.get(type(self).step)
        if phi is None:
            raise AttributeError("nonlinearity")  # (nn.Module.__getattr__ then says it has no such attribute)
        return phi


class RNNReLU(RNNTanh):
    """Elman cell with ReLU: h_t = max(0, W_xh x_t + W_hh h_{t-1} + b)."""

    torch_mode = "RNN_RELU"
    step = staticmethod(rnn_relu_step)
    step_backward = staticmethod(rnn_relu_step_backward)
