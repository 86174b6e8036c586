"""The `autograd` backend: a plain loop through autograd. The reference the others are checked against.

It calls the same one-step forward functions as the other backends but lets autograd build the
backward, so it checks every hand-written `*_step_backward` and the engine's BPTT.
"""

import torch


def autograd_loop(cell, xw, state0, P, mask, reverse, probe=None):
    T = xw.shape[0]
    order = range(T - 1, -1, -1) if reverse else range(T)
    outs, state = [None] * T, state0
    hooks = [None] * T
    for t in order:
        new, _, _ = cell.step(xw[t], state, P)
        if mask is not None:
            m = mask[t]
            new = tuple(s + m * (n - s) for n, s in zip(new, state))
        outs[t] = new[0] if mask is None else mask[t] * new[0]
        if probe is not None and new[0].requires_grad:
            hooks[t] = new[0]
        state = new
    if probe is not None:
        _watch(probe, hooks)
    return torch.stack(outs), state


def _watch(probe, hs):
    """Record dL/dh_t of every step into probe once all have arrived."""
    grads = [None] * len(hs)

    def make(t):
        def hook(g):
            grads[t] = g
            if all(x is not None for x in grads):
                probe.record(torch.stack(grads))

        return hook

    for t, h in enumerate(hs):
        if h is not None:
            h.register_hook(make(t))
