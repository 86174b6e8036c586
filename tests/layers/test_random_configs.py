"""Seeded random layer configurations: every cell (and the LSTM with proj_size) with random sizes, stacking,
direction, skip and residual connections, conditioning, bias, layout, variable lengths and D = H, the default
backend (native where it builds) against the autograd reference in float64: outputs, final states and every
gradient. The options are tested one by one elsewhere; this is for the ways they meet."""

import random

import pytest
import torch

import rnnkit
from rnnkit import Recurrent

CELLS = [*rnnkit.CELLS, "lstmp"]


def random_config(rng):
    name = rng.choice(CELLS)
    D, H = rng.choice([3, 8, 16]), rng.choice([4, 8, 16, 40])
    kw = dict(
        num_layers=rng.choice([1, 2]),
        bidirectional=rng.random() < 0.5,
        skip_input=rng.random() < 0.3,
        residual=rng.random() < 0.3,
        batch_first=rng.random() < 0.7,
        bias=rng.random() < 0.8,
    )
    if kw["num_layers"] == 1:  # (they join layers: with one they warn that they do nothing)
        kw["skip_input"] = kw["residual"] = False
    if rng.random() < 0.3:
        kw.update(cond_size=3, cond_mode=rng.choice(["input", "state", "both"]))
    if name == "lstmp":
        name, kw["proj_size"] = "lstm", rng.randint(1, H - 1)
    if name == "leaky":
        kw["learn_alpha"] = rng.random() < 0.5
    if name in ("mut1", "mut2") and rng.random() < 0.3:
        D = H  # x̃ = x
    B, T = rng.choice([1, 3, 9]), rng.choice([1, 5, 9, 13])
    lengths = torch.tensor([rng.randint(1, T) for _ in range(B)]) if rng.random() < 0.5 else None
    return name, D, H, B, T, lengths, kw


@pytest.mark.parametrize("seed", range(8))
def test_random_configs_equal_autograd(seed):
    rng = random.Random(seed)
    for trial in range(20):
        name, D, H, B, T, lengths, kw = random_config(rng)
        results = []
        for backend in ("autograd", None):
            torch.manual_seed(trial)
            layer = Recurrent(name, D, H, backend=backend, **kw).double()
            gen = torch.Generator().manual_seed(trial)
            shape = (B, T, D) if kw["batch_first"] else (T, B, D)
            x = torch.randn(shape, dtype=torch.float64, generator=gen).requires_grad_()
            cond = torch.randn(B, 3, dtype=torch.float64, generator=gen) if kw.get("cond_size") else None
            out, state = layer(x, lengths=lengths, cond=cond)
            state = state if isinstance(state, tuple) else (state,)
            w = torch.randn(out.shape, dtype=torch.float64, generator=gen)
            loss = (out * w).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(state))
            results.append([out, *state, *torch.autograd.grad(loss, [x, *layer.parameters()])])
        where = f"{name} D={D} H={H} B={B} T={T} lengths={lengths} {kw}"
        for a, b in zip(*results):
            torch.testing.assert_close(
                b, a, rtol=1e-10, atol=1e-10, msg=lambda m, where=where: f"{m}\n{where}"
            )
