"""The Recurrent layer: stacking, skip and residual connections, conditioning, bad input."""

import io
import warnings

import numpy as np
import pytest
import torch
from torch.nn.utils import prune
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import CELLS, GradProbe, Recurrent
from rnnkit.cells._base import Cell
from rnnkit.engine import run
from rnnkit.errors import RnnkitError


@pytest.mark.parametrize("name", list(CELLS))
def test_every_cell_stacked_bidirectional(name):
    layer = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, dropout=0.1, backend="python")
    out, state = layer(torch.randn(2, 5, 3), lengths=torch.tensor([5, 2]))
    assert out.shape == (2, 5, 8)
    assert (out[1, 2:] == 0).all()  # outputs past the end are zero
    states = state if isinstance(state, tuple) else (state,)
    assert all(s.shape == (4, 2, 4) for s in states)


def test_a_state_given_one_tensor_per_layer_says_to_stack_them():
    """[h_layer0, h_layer1] (Keras's states, one per layer) for a 2-layer gru said 'got a tuple of 2', of a list."""
    layer, x = Recurrent("gru", 3, 4, num_layers=2, bidirectional=True), torch.randn(2, 5, 3)
    with pytest.raises(RnnkitError, match=r"^state for gru must be h, got a list of 4 \(one per layer\? h is one "
                       r"tensor \(4, B, H\): torch.stack them\)$"):  # fmt: skip
        layer(x, [torch.zeros(2, 4)] * 4)
    with pytest.raises(RnnkitError, match=r"^state for gru must be h, got a tuple of 3$"):
        layer(x, (torch.zeros(2, 4),) * 3)
    lstm = Recurrent(
        "lstm", 3, 4, num_layers=3
    )  # [(h0, c0), (h1, c1), (h2, c2)]: said 'got tuple, tuple, tuple'
    with pytest.raises(RnnkitError, match=r"got tuple, tuple, tuple; one \(h, c\) per layer\? h and c are each one "
                       r"tensor \(layers, B, H\): torch.stack the layers'$"):  # fmt: skip
        lstm(x, [(torch.zeros(2, 4), torch.zeros(2, 4))] * 3)


def test_dropout_only_in_training():
    layer = Recurrent("gru", 3, 4, num_layers=2, dropout=0.5, backend="python").eval()
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer(x)[0], layer(x)[0])
    layer.train()
    assert not torch.allclose(layer(x)[0], layer(x)[0])


def test_skip_input_and_residual():
    layer = Recurrent("lstm", 3, 4, num_layers=3, skip_input=True, residual=True, backend="python")
    assert layer.cells[1].input_size == 4 + 3
    x = torch.randn(2, 5, 3, requires_grad=True)
    out, _ = layer(x)
    assert out.shape == (2, 5, 4)
    out.sum().backward()
    assert x.grad.abs().sum() > 0


TORCH_RNN = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}


def _torch_layer(layer, level, extra=None):
    """Layer `level` of a Recurrent as a one-layer torch.nn module of its weights (direction d: cells[level·dirs + d]);
    extra: per direction a (G·H, C) block appended to weight_ih (the conditioning W_vh, read as input [x_t, v])."""
    dirs = layer.dirs
    cells = [layer.cells[level * dirs + d] for d in range(dirs)]
    d_in = cells[0].W_xh.shape[1] + (0 if extra is None else extra[0].shape[1])
    m = TORCH_RNN[layer.cell_name](d_in, layer.hidden_size, bidirectional=dirs == 2).double()
    with torch.no_grad():
        for d, cell in enumerate(cells):
            sfx = "_l0" + ("_reverse" if d else "")
            w_ih = cell.W_xh if extra is None else torch.cat([cell.W_xh, extra[d]], 1)
            getattr(m, "weight_ih" + sfx).copy_(w_ih)
            getattr(m, "weight_hh" + sfx).copy_(cell.W_hh)
            getattr(m, "bias_ih" + sfx).copy_(cell.b_xh)
            getattr(m, "bias_hh" + sfx).copy_(cell.b_hh)
    return m


def _run_torch(m, x, lengths, state=None):
    """m over x (T, B, D) time-major with `lengths`, packed as torch.nn takes variable lengths: out (T, B, ·), h_n."""
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, h_n = m(packed, state)
    return pad_packed_sequence(out, total_length=x.shape[0])[0], h_n


@pytest.mark.parametrize(("skip", "dropout", "bidir"), [(True, 0.0, True), (True, 1.0, True), (False, 1.0, True),
                                                        (False, 0.0, False)])  # fmt: skip
def test_skip_input_and_residual_join_torch_nn_layers_as_documented(skip, dropout, bidir):
    """input^ℓ = [h^{ℓ-1}, x] with skip_input (the output below first), out^ℓ = h^ℓ + out^{ℓ-1} with residual from the
    second layer on (the output below without its dropout), 3 layers, against one torch.nn.LSTM per layer holding
    that layer's weights, joined by hand: bidirectional with variable lengths; in training with dropout=1 the layers
    above see zeros from below (x alone through the skip) and the residual still adds the undropped output; one
    direction in eval, also under torch.no_grad (the layer's no-grad fast path, which leaves residual layers alone)."""
    torch.manual_seed(0)
    T, B, D, H = 6, 3, 2, 3
    layer = Recurrent("lstm", D, H, num_layers=3, bidirectional=bidir, skip_input=skip, residual=True,
                      dropout=dropout, batch_first=False).double()  # fmt: skip
    layer.train(dropout > 0)
    x = torch.randn(T, B, D, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4]) if bidir else torch.tensor([T] * B)
    results = [layer(x, lengths=lengths) if bidir else layer(x)]
    if not bidir:
        with torch.no_grad():
            results.append(layer(x))
    x0 = x * (torch.arange(T)[:, None] < lengths)[..., None]
    below, prev, hs, cs = x0, None, [], []
    for level in range(3):
        o, (h, c) = _run_torch(_torch_layer(layer, level), below, lengths)
        o = o if prev is None else o + prev
        prev, below = o, torch.cat([o * (1 - dropout), *[x0] * skip], -1)
        hs.append(h)
        cs.append(c)
    for out, state in results:
        torch.testing.assert_close(out, prev, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state, (torch.cat(hs), torch.cat(cs)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_state_conditioned_layer_given_a_state_needs_no_cond(backend):
    """cond_mode="state": v makes h_0 = tanh(W_vs v + b), which a given state replaces; yet every call with a state
    (truncated BPTT carrying it, a sampler's step() after the first) had to give v again, for nothing ('cond must have
    shape (2, 6), got None'). There it may be left out, with the same numbers; modes input and both still need it."""
    torch.manual_seed(0)
    layer = Recurrent("lstm", 3, 4, num_layers=2, cond_size=6, cond_mode="state", backend=backend).double()
    x, v = torch.randn(2, 7, 3, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    want, state = layer(x[:, :3], cond=v)
    out, _ = layer(x[:, 3:], state)
    torch.testing.assert_close(out, layer(x[:, 3:], state, cond=v)[0], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([want, out], 1), layer(x, cond=v)[0], rtol=1e-12, atol=1e-12)
    steps, s = [], None
    for t in range(7):  # step(): v at the first step only
        o, s = layer.step(x[:, t], s, cond=v if t == 0 else None)
        steps.append(o)
    torch.testing.assert_close(torch.stack(steps, 1), layer(x, cond=v)[0], rtol=1e-12, atol=1e-12)
    o1, s1 = layer(x[0], cond=v[0])  # one unbatched sequence too
    assert layer(x[0], s1)[0].shape == (7, 4)
    with pytest.raises(RnnkitError, match=r"cond must have shape \(2, 6\), got none: give the vector v"):
        layer(x)  # no state: v is needed for h_0
    for mode in ("input", "both"):
        other = Recurrent("gru", 3, 4, cond_size=6, cond_mode=mode, backend=backend)
        with pytest.raises(RnnkitError, match="cond must have shape"):
            other(x.float(), torch.zeros(1, 2, 4))


@pytest.mark.parametrize("mode", ["input", "state", "both"])
def test_conditioning(mode):
    layer = Recurrent("gru", 3, 4, num_layers=2, cond_size=6, cond_mode=mode, backend="python")
    x, v = torch.randn(2, 5, 3), torch.randn(2, 6, requires_grad=True)
    out, _ = layer(x, cond=v)
    out.sum().backward()
    assert v.grad.abs().sum() > 0
    with pytest.raises(RnnkitError, match="cond must have shape"):
        layer(x)
    with pytest.raises(RnnkitError, match="cond is torch.float64 on cpu but input is torch.float32"):
        layer(x, cond=v.detach().double())
    with pytest.raises(RnnkitError, match="cond_size must be an integer >= 0"):
        Recurrent("gru", 3, 4, cond_size=-1)


@pytest.mark.parametrize("mode", ["input", "state", "both"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_conditioning_is_torch_nn_given_v_as_input_and_tanh_of_it_as_h0(cell, mode):
    """Conditioning on v (B, C) as documented, against torch.nn per layer: "input" adds W_vh v to every step's input
    projection, the same as torch.nn fed [x_t, v] with weight_ih = [W_xh, W_vh]; "state" starts each layer and
    direction from h_0 = tanh(W_vs v + b) (an lstm's c_0 = 0); "both" does both, with the W_vh and W_vs of each
    layer·direction in h_n's order. 2 bidirectional layers, variable lengths."""
    torch.manual_seed(0)
    T, B, D, H, C = 5, 3, 2, 3, 2
    layer = Recurrent(cell, D, H, num_layers=2, bidirectional=True, cond_size=C, cond_mode=mode,
                      batch_first=False).double()  # fmt: skip
    x, v = torch.randn(T, B, D, dtype=torch.float64), torch.randn(B, C, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3])
    out, state = layer(x, lengths=lengths, cond=v)
    below, finals = x, []
    for level in range(2):
        i = [2 * level, 2 * level + 1]
        extra = [layer.W_vh[k].weight for k in i] if mode != "state" else None
        m = _torch_layer(layer, level, extra)
        h0 = torch.zeros(2, B, H, dtype=torch.float64)
        if mode != "input":
            h0 = torch.stack([torch.tanh(v @ layer.W_vs[k].weight.T + layer.W_vs[k].bias) for k in i])
        s0 = (h0, torch.zeros_like(h0)) if cell == "lstm" else h0
        inp = below if extra is None else torch.cat([below, v.expand(T, B, C)], -1)
        below, s = _run_torch(m, inp, lengths, s0)
        finals.append(s)
    torch.testing.assert_close(out, below, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        want = tuple(torch.cat([f[k] for f in finals]) for k in range(2))
    else:
        want = torch.cat(finals)
    torch.testing.assert_close(state, want, rtol=1e-12, atol=1e-12)


def test_reset_parameters_draws_the_conditioning_weights_too():
    """reset_parameters draws every weight afresh as at construction: W_vh and W_vs (cond_mode "both") too."""
    layer = Recurrent("gru", 3, 4, num_layers=2, cond_size=2, cond_mode="both")
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    layer.reset_parameters()
    assert [name for name, p in layer.named_parameters() if not p.any()] == []


def test_cond_given_to_an_unconditioned_layer_unbatched_says_the_layer_has_none():
    """cond given to a layer built with cond_size=0: a batch is told so, but one unbatched sequence (T, D) and a step of
    one (D,) were told "cond must have shape (C,) = (0,)", and a cond of shape (0,) then met the batch's line anyway."""
    layer = Recurrent("gru", 3, 4)
    said = r"^cond was given but the layer was built with cond_size=0; build it with cond_size=C .* or leave cond out$"
    for x, v in [(torch.randn(5, 3), torch.randn(2)), (torch.randn(5, 3), torch.randn(1, 2)),
                 (torch.randn(5, 3), torch.randn(0)), (torch.randn(2, 5, 3), torch.randn(2, 2))]:  # fmt: skip
        with pytest.raises(RnnkitError, match=said):
            layer(x, cond=v)
    with pytest.raises(RnnkitError, match=said):
        layer.step(torch.randn(3), cond=torch.randn(2))
    conditioned = Recurrent("gru", 3, 4, cond_size=2)  # (its own unbatched line is kept)
    with pytest.raises(
        RnnkitError,
        match=r"^for one unbatched sequence \(T, D\) cond must have shape \(C,\) = \(2,\), got \(3,\)$",
    ):
        conditioned(torch.randn(5, 3), cond=torch.randn(3))


def test_truncated_bptt_state_carry_equals_full_sequence():
    layer = Recurrent("lstm", 3, 4, backend="python")
    x = torch.randn(2, 10, 3)
    full, _ = layer(x)
    a, st = layer(x[:, :6])
    b, _ = layer(x[:, 6:], tuple(s.detach() for s in st))
    torch.testing.assert_close(torch.cat([a, b], 1), full)


def test_step_equals_sequence():
    layer = Recurrent("mut2", 3, 4, num_layers=2, backend="python")
    x = torch.randn(2, 6, 3)
    full, _ = layer(x)
    state, outs = None, []
    for t in range(6):
        o, state = (
            layer.step(x[:, t], state) if t % 2 else layer.step(x[:, t], hx=state)
        )  # (torch.nn's name too)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), full)
    with pytest.raises(RnnkitError, match="give the state as state or as hx"):
        layer.step(x[:, 0], state, hx=state)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_step_equals_forward_and_drops_out_per_step_in_training(cell):
    """Every cell on every backend, stacked and conditioned: stepping gives forward's outputs and final state (a tuple
    for an lstm). In training mode each step draws a new dropout mask between layers, as forward over that one step
    does for the same seed (the docstring's promise); eval() steps without dropout."""
    for backend in (None, "python", "autograd"):
        torch.manual_seed(0)
        layer = Recurrent(
            cell, 3, 4, num_layers=2, dropout=0.5, cond_size=2, cond_mode="both", backend=backend
        )
        x, cond = torch.randn(2, 5, 3), torch.randn(2, 2)
        layer.eval()
        full, final = layer(x, cond=cond)
        state, outs = None, []
        for t in range(5):
            out_t, state = layer.step(x[:, t], state, cond)
            outs.append(out_t)
        assert type(state) is type(final)
        torch.testing.assert_close(torch.stack(outs, 1), full)
        torch.testing.assert_close(state, final)
        layer.train()
        torch.manual_seed(1)
        dropped, _ = layer.step(x[:, 0], None, cond)
        torch.manual_seed(1)
        torch.testing.assert_close(dropped, layer(x[:, :1], cond=cond)[0][:, 0])
        assert not torch.allclose(dropped, outs[0])


@pytest.mark.parametrize("batch_first", [True, False])
def test_step_of_one_unbatched_input(batch_first):
    """step takes (D,) as torch.nn's cells do: out (H,), state (layers, H), in either layout."""
    layer = Recurrent("gru", 3, 4, num_layers=2, batch_first=batch_first, backend="python")
    x = torch.randn(3)
    out, h = layer.step(x)
    assert out.shape == (4,) and h.shape == (2, 4)
    ref, h1 = layer.step(x[None], h[:, None])
    out, h = layer.step(x, h)
    torch.testing.assert_close(out, ref[0])
    torch.testing.assert_close(h, h1[:, 0])
    with pytest.raises(RnnkitError, match=r"x_t of shape \(B, D\) or \(D,\), got \(1, 2, 3\)"):
        layer.step(torch.randn(1, 2, 3))
    # said in the step's shapes, not those of the sequence of one step it runs as ("... expects 3 (B, T, D)")
    for x_t in (torch.randn(2, 5), torch.randn(5)):
        with pytest.raises(
            RnnkitError,
            match=r"x_t has 5 features but the layer expects 3: x_t \(B, D\) or \(D,\) with D = 3",
        ):
            layer.step(x_t)
    with pytest.raises(RnnkitError, match=r"no time steps: shape \(0, 3\) \(T, D\)"):
        layer(torch.randn(0, 3))


def test_step_runs_the_layers_hooks_as_forward_does():
    """step called self.forward, not the layer as a module: its hooks never ran there, and stepping a layer with a
    pre-hook that scales the input (or a forward hook on the output) gave other outputs than forward over the
    sequence (0.13 off), where the docstring promises forward's. Each step is a call of the layer now."""
    torch.manual_seed(0)
    layer, x = Recurrent("gru", 3, 4, num_layers=2).eval(), torch.randn(2, 5, 3)
    layer.register_forward_pre_hook(lambda m, args: (2 * args[0], *args[1:]))
    layer.register_forward_hook(lambda m, args, out: (out[0] + 1, out[1]))
    full, h_T = layer(x)
    state, outs = None, []
    for t in range(5):
        o, state = layer.step(x[:, t], state)
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), full)
    torch.testing.assert_close(state, h_T)
    torch.testing.assert_close(layer.step(x[0, 0])[0], full[0, 0])  # one unbatched step (D,) too


@pytest.mark.parametrize(
    "call",
    [
        lambda layer: layer(torch.randint(0, 9, (2, 5))),  # (B, T) ids: was 'input size is 5 ... (T, D)'
        lambda layer: layer.step(torch.randint(0, 9, (2,))),  # (B,) ids: was 'x_t has 2 features'
        lambda layer: layer.step(torch.randint(0, 9, (2, 5))),
        lambda layer: layer(torch.randn(2, 5, dtype=torch.complex64)),
    ],
)
def test_token_ids_said_before_sizes(call):
    """Token ids given where their embedding belongs are said as such, not as a wrong feature count."""
    layer = Recurrent("gru", 3, 4, backend="python")
    with pytest.raises(RnnkitError, match=r"must be a floating-point tensor, got torch\.(int64|complex64); "
                       "(embed token ids first|take its real part)"):  # fmt: skip
        call(layer)


def test_probe_per_layer():
    layer = Recurrent("rnn_tanh", 3, 4, num_layers=2, backend="python")
    probes = [GradProbe(), GradProbe()]
    layer(torch.randn(2, 5, 3), probe=probes)[0].sum().backward()
    assert all(p.dh.shape == (5, 2, 4) for p in probes)


def test_one_probe_watches_layer_0_forward():
    """A single GradProbe (not a list) watches layer 0's forward direction, as forward's docstring says: its dh is the
    total gradient reaching that direction's h_t, against plain torch: layer 0 forward unrolled by hand with each h_t's
    grad retained, its reverse direction and layer 1 as torch.nn.RNN modules of the layer's weights."""
    torch.manual_seed(0)
    T, B, D, H = 5, 2, 3, 4
    layer = Recurrent("rnn_tanh", D, H, num_layers=2, bidirectional=True, batch_first=False).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    g = torch.randn(T, B, 2 * H, dtype=torch.float64)
    probe = GradProbe()
    (layer(x, probe=probe)[0] * g).sum().backward()
    c = layer.cells[0]
    h, hs = torch.zeros(B, H, dtype=torch.float64), []
    for t in range(T):
        h = torch.tanh(x[t] @ c.W_xh.T + c.b_xh + h @ c.W_hh.T + c.b_hh)
        h.retain_grad()
        hs.append(h)
    below = torch.cat([torch.stack(hs), _torch_layer(layer, 0)(x)[0][..., H:]], -1)
    (_torch_layer(layer, 1)(below)[0] * g).sum().backward()
    torch.testing.assert_close(probe.dh, torch.stack([h.grad for h in hs]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("probe", [GradProbe, ["oops", None], "ab", 3])
def test_probe_not_a_probe(probe):
    # the class failed with "object of type 'type' has no len()", a list of something else in backward
    layer = Recurrent("lstm", 3, 4, num_layers=2, backend="python")
    with pytest.raises(RnnkitError, match="probe must be an rnnkit.GradProbe"):
        layer(torch.randn(2, 5, 3), probe=probe)


BAD = [
    (lambda: torch.randn(2, 5, 1, 3), "3 dimensions"),
    (lambda: torch.randn(2, 5, 4), "input size is 4"),
    (lambda: torch.randint(0, 3, (2, 5, 3)), "floating-point.*embed token ids"),
    (
        lambda: torch.randn(2, 5, 3, dtype=torch.complex64),
        "floating-point.*real part",
    ),  # (was: embed token ids)
    (
        lambda: torch.randn(2, 5, 3, dtype=torch.float64),
        "input is torch.float64 but the layer.s weights are torch.float32",
    ),
    (lambda: torch.randn(2, 0, 3), "no time steps"),
]


@pytest.mark.parametrize("make,msg", BAD)
def test_bad_input_one_line(make, msg):
    layer = Recurrent("lstm", 3, 4, backend="python")
    with pytest.raises(RnnkitError, match=msg) as e:
        layer(make())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(lengths=torch.tensor([5, 0])), r"lengths must lie in \[1, 5\]"),
        (dict(lengths=torch.tensor([6, 1])), r"lengths must lie"),
        # (torch.nn's pack_padded_sequence cuts float lengths to integers: the fix is named)
        (
            dict(lengths=torch.tensor([5.0, 1.0])),
            r"integer tensor .* got torch.float32 \(2,\); give them as integers, lengths.long\(\)$",
        ),
        (dict(lengths=torch.tensor([True, True])), "integer tensor"),  # a mask is not lengths
        # (was a NotImplementedError: "min_all" not implemented for 'ComplexFloat')
        (dict(lengths=torch.tensor([5, 1], dtype=torch.complex64)), "integer tensor"),
        (dict(lengths=torch.tensor([5, 1, 1])), "shape"),
        (dict(state=torch.zeros(1, 2, 4)), r"must be a tuple \(h, c\), got one tensor"),
        (dict(state=(torch.zeros(1, 2, 4),)), r"must be a tuple \(h, c\), got a tuple of 1"),
        (dict(state=(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4))), r"\(1, 2, 4\)"),
        # were an AttributeError, a TypeError from torch, and "Cannot copy out of meta tensor"
        (dict(state=(None, None)), r"state must be a tuple \(h, c\) of tensors .*got NoneType, NoneType"),
        (dict(state=0), r"state must be a tuple \(h, c\) of tensors .*got int"),
        # h given, c None (as torch.nn.LSTM, which needs both): was "... (or None for zeros), got Tensor, NoneType",
        # read as if c could be None
        (dict(state=(torch.zeros(1, 2, 4), None)), r"state c is None: give both h and c.*or state=None"),
        (dict(state=[None, torch.zeros(1, 2, 4)]), r"state h is None: give both h and c"),
        (dict(lengths="ab"), r"lengths must be integers, one per sequence \(2,\), got 'ab'"),
        (dict(lengths=torch.tensor([5, 3], device="meta")), "lengths is a meta tensor"),
        # said which of h and c, and the fix (was "state is torch.float64 on cpu but input is ...", no more)
        (
            dict(state=(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.float64))),
            r"state c is torch.float64 on cpu but input is torch.float32 on cpu; convert one",
        ),
        (
            dict(state=(torch.zeros(1, 2, 4, device="meta"), torch.zeros(1, 2, 4))),
            r"state h is torch.float32 on meta",
        ),
    ],
)
def test_bad_lengths_and_state(kw, msg):
    layer = Recurrent("lstm", 3, 4, backend="python")
    with pytest.raises(RnnkitError, match=msg):
        layer(torch.randn(2, 5, 3), **kw)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_lengths_given_in_the_state_s_place_are_said_so(cell):
    """layer(x, lengths), the lengths by position, took them for the state: "state h must have shape
    (num_layers*dirs, B, H) = (1, 2, 4), got (2,)" (a gru), "state for lstm must be a tuple (h, c), got one tensor",
    lines that never said that the state is the second argument. A state of integers is refused as such, and where it is
    one tensor of one dimension (or none) the line says how lengths are given."""
    layer = Recurrent(cell, 3, 4, backend="python")
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    fix = r"lengths go by name: layer\(x, lengths=lengths\)"
    with pytest.raises(
        RnnkitError, match=rf"^state h is torch.int64 of shape \(2,\), not floating-point numbers; {fix}"
    ):
        layer(x, lengths)
    with pytest.raises(RnnkitError, match=rf"^state h is torch.int64 of shape \(\), .*{fix}"):
        layer(x[0], torch.tensor(5))  # one sequence, its length
    with pytest.raises(
        RnnkitError, match=r"^state c is torch.int64 of shape \(1, 2, 4\), not floating-point numbers$"
    ):
        Recurrent("lstm", 3, 4)(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, dtype=torch.long)))
    torch.testing.assert_close(layer(x, lengths=lengths)[0][1, 2:], torch.zeros(3, 4))


def test_unbatched_state_h_without_c():
    layer = Recurrent("lstm", 3, 4, backend="python")
    with pytest.raises(RnnkitError, match=r"state c is None: give both h and c"):
        layer(torch.randn(5, 3), (torch.zeros(1, 4), None))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.uint16, torch.uint32, torch.uint64])
def test_lengths_of_any_integer_dtype(dtype):
    """Unsigned lengths (a numpy uint32 array, say) failed deep inside: "min_all" not implemented for 'UInt32'."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(2, 5, 3)
    want = layer(x, lengths=torch.tensor([5, 2]))[0]
    torch.testing.assert_close(layer(x, lengths=torch.tensor([5, 2], dtype=dtype))[0], want)
    torch.testing.assert_close(layer(x[1], lengths=torch.tensor(2, dtype=dtype))[0], want[1])  # one sequence


def test_lengths_of_numpy_unsigned_integers():
    """torch.as_tensor refuses np.uint64(2) and [np.uint64(5), ...]: they were said not to be integers."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(2, 5, 3)
    want = layer(x, lengths=[5, 2])[0]
    torch.testing.assert_close(layer(x, lengths=[np.uint64(5), np.uint32(2)])[0], want)
    torch.testing.assert_close(layer(x[1], lengths=np.uint64(2))[0], want[1])


def test_lengths_of_a_reversed_numpy_array():
    """A numpy array of negative strides (np.sort(lengths)[::-1], longest first) was refused as "lengths must be
    integers", which they are: torch.as_tensor takes no negative strides."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(3, 5, 3)
    want = layer(x, lengths=[5, 3, 2])[0]
    torch.testing.assert_close(layer(x, lengths=np.array([2, 3, 5])[::-1])[0], want)
    one = np.array([3, 5])[::-1][1:]  # one sequence's: an array of one element
    torch.testing.assert_close(layer(x[1], lengths=one)[0], want[1])


def test_lengths_of_a_read_only_numpy_array():
    """A read-only array (np.broadcast_to, np.load(..., mmap_mode="r")) met torch's UserWarning "The given NumPy
    array is not writable ... undefined behavior" (an error where warnings are), though the layer only reads it."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(3, 5, 3)
    want = layer(x, lengths=[5, 5, 5])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(layer(x, lengths=np.broadcast_to(np.int64(5), (3,)))[0], want)


def test_lengths_of_a_big_endian_numpy_array():
    """An array of the other byte order (np.fromfile(f, ">i4"), a big-endian file's) was refused as "lengths must be
    integers", which they are: torch.as_tensor takes no byte order but the machine's."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(3, 5, 3)
    want = layer(x, lengths=[5, 3, 2])[0]
    other = ">i4" if np.little_endian else "<i4"
    torch.testing.assert_close(layer(x, lengths=np.array([5, 3, 2], dtype=other))[0], want)


@pytest.mark.parametrize(
    "given",
    [
        lambda: [np.array(5), np.array(3, dtype=np.uint32), np.array(2, dtype=">i4")],
        lambda: np.array([5, 3, np.int64(2)], dtype=object),
        lambda: np.array([np.uint64(5), 3, 2], dtype=object)[::-1][::-1],
    ],
)
def test_lengths_of_0d_numpy_arrays_or_an_object_array_of_integers(given):
    """A list of 0-d integer arrays ([np.array(5), ...]) and an array of dtype object holding integers (pandas'
    values) were refused as "lengths must be integers, one per sequence", which they are; they are read. A value
    that is no integer (2.5, "a", None, True) is still refused so."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(3, 5, 3)
    want = layer(x, lengths=[5, 3, 2])[0]
    torch.testing.assert_close(layer(x, lengths=given())[0], want)
    for bad in (2.5, "a", None, True):
        for lengths in ([np.array(5), np.array(3), np.array(bad)], np.array([5, 3, bad], dtype=object)):
            with pytest.raises(RnnkitError, match=r"lengths must be integers, one per sequence \(3,\)"):
                layer(x, lengths=lengths)


def test_uint64_lengths_past_int64_are_said_as_given():
    """uint64 lengths of 2**63 or more were read as the negative int64 they wrap to: a length of 2**64 - 1 was
    refused as "got values from -1 to 3", a value nobody gave."""
    layer = Recurrent("gru", 3, 4, backend="python")
    x = torch.randn(2, 5, 3)
    for big, given in (
        (2**64 - 1, np.array([2**64 - 1, 3], dtype=np.uint64)),
        (2**63 + 1, torch.tensor([2**63 + 1, 3], dtype=torch.uint64)),
    ):
        with pytest.raises(
            RnnkitError, match=rf"lengths must lie in \[1, 5\] .*, got values from 3 to {big}$"
        ):
            layer(x, lengths=given)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_cell_converted_alone_is_one_line(backend):
    """layer.cells[1].double() failed inside a matmul ("mat1 and mat2 must have the same dtype")."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, backend=backend)
    layer.cells[1].double()
    with pytest.raises(
        RnnkitError, match=r"layer.cells\[1\] is torch.float64 on cpu but layer.cells\[0\] is "
    ):
        layer(torch.randn(2, 9, 3))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize(
    "kind, cell, name",
    [("lstm", 0, "W_hh"), ("lstm", 1, "W_hh"), ("lstm", 1, "W_xh"), ("lstm", 0, "b_hh"), ("lstm", 1, "b_xh"),
     ("leaky", 0, "alpha_logit"), ("mut1", 0, "W_xp")],
)  # fmt: skip
def test_one_weight_on_another_device_is_one_line(backend, kind, cell, name):
    """A weight of a cell put on another device than the cell's others (layer.weight_hh_l0 = nn.Parameter(w) of
    w elsewhere, a load_state_dict(assign=True)) was said for none of them (only a whole cell was): W_hh on the meta
    device gave silently wrong numbers on autograd and python (torch's linear of a CPU tensor and a meta one
    returns a CPU tensor), torch's "data is not allocated yet" from the native loop, and a bias "Tensor on device
    meta is not on the expected device cpu!"."""
    layer = Recurrent(
        kind, 3, 4, num_layers=2, backend=backend, **({"learn_alpha": True} if kind == "leaky" else {})
    )
    w = getattr(layer.cells[cell], name)
    setattr(layer.cells[cell], name, torch.nn.Parameter(w.detach().to("meta")))
    with pytest.raises(
        RnnkitError,
        match=rf"layer.cells\[{cell}\].{name}( \(\w+\))? is on meta but the cell's other weights are on cpu; ",
    ):
        layer(torch.randn(2, 9, 3))


@pytest.mark.parametrize("name", ["W_vh", "W_vs"])
def test_a_conditioning_weight_converted_alone_is_one_line(name):
    """layer.W_vh[1].double() failed inside a matmul ("expected m1 and m2 to have the same dtype")."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, cond_size=2, cond_mode="both")
    getattr(layer, name)[1].double()
    with pytest.raises(
        RnnkitError, match=rf"layer.{name}\[1\] is torch.float64 on cpu but input is torch.float32"
    ):
        layer(torch.randn(2, 9, 3), cond=torch.randn(2, 2))


@pytest.mark.parametrize("change", [lambda b: b.to("meta"), lambda b: b.double()])
def test_a_conditioning_bias_moved_alone_is_one_line(change):
    """layer.W_vs[1].bias on another device or dtype: torch's "Tensor on device meta is not on the expected device
    cpu!" (or a dtype error from inside the linear), naming no part of the layer; only the weights were checked."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, cond_size=2, cond_mode="both")
    layer.W_vs[1].bias = torch.nn.Parameter(change(layer.W_vs[1].bias.detach()))
    with pytest.raises(
        RnnkitError, match=r"layer.W_vs\[1\].bias is torch.float\d+ on \w+ but input is torch.float32"
    ):
        layer(torch.randn(2, 9, 3), cond=torch.randn(2, 2))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_conditioning_weight_of_another_shape_is_one_line(backend):
    """A W_vh or W_vs of another shape (functional_call, layer.W_vs[0].weight = ...): a W_vh of one row was added to
    every gate's column in silence, a W_vs of other rows failed in torch's matmul or, native, as 'xw rows of 16
    columns for a cell that reads 20', naming neither."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, cond_size=2, cond_mode="both", backend=backend)
    x, v = torch.randn(2, 9, 3), torch.randn(2, 2)
    params = dict(layer.named_parameters())
    with pytest.raises(
        RnnkitError, match=r"layer.W_vh\[1\] has shape \(1, 2\), but this layer needs \(16, 2\)"
    ):
        torch.func.functional_call(layer, {**params, "W_vh.1.weight": torch.randn(1, 2)}, (x,), {"cond": v})
    layer.W_vs[0].weight = torch.nn.Parameter(torch.randn(5, 2))
    with pytest.raises(
        RnnkitError, match=r"layer.W_vs\[0\] has shape \(5, 2\), but this layer needs \(4, 2\)"
    ):
        layer(x, cond=v)
    layer.W_vs[0].weight = torch.nn.Parameter(torch.randn(4, 2))
    layer.W_vs[0].bias = torch.nn.Parameter(torch.randn(5))
    with pytest.raises(
        RnnkitError, match=r"layer.W_vs\[0\].bias has shape \(5,\), but this layer needs \(4,\)"
    ):
        layer(x, cond=v)
    layer.W_vs[0].bias = None  # no bias: h_0 = tanh(W_vs v)
    assert layer(x, cond=v)[0].shape == (2, 9, 4)


def test_bad_construction():
    with pytest.raises(RnnkitError, match="unknown cell"):
        Recurrent("transformer", 3, 4)
    # what is not a cell: AttributeError from inside before
    with pytest.raises(
        RnnkitError, match="got 3; Recurrent\\('lstm', input_size, hidden_size, ...\\): the cell comes"
    ):
        Recurrent(3, 4, 2)
    with pytest.raises(RnnkitError, match="Recurrent.from_torch\\(m\\) converts a torch.nn module"):
        Recurrent(torch.nn.LSTM, 3, 4)
    with pytest.raises(RnnkitError, match="the class, type\\(cell\\) = LSTM"):
        Recurrent(CELLS["lstm"](3, 4), 3, 4)
    # torch.nn.RNN's nonlinearity names the cell (a TypeError from the cell before)
    assert type(Recurrent("rnn_tanh", 3, 4, nonlinearity="relu").cells[0]) is CELLS["rnn_relu"]
    with pytest.raises(RnnkitError, match="nonlinearity='relu' is torch.nn.RNN's option"):
        Recurrent("gru", 3, 4, nonlinearity="relu")
    assert type(Recurrent("rnn_relu", 3, 4, nonlinearity="relu").cells[0]) is CELLS["rnn_relu"]
    with pytest.raises(RnnkitError, match="hidden_size must be an integer >= 1, got"):
        Recurrent("lstm", 3, 0)
    for kw in (dict(input_size=True), dict(num_layers=True), dict(cond_size=True), dict(proj_size=True)):
        with pytest.raises(RnnkitError, match="must be"):  # a bool is not a size (isinstance(True, int))
            Recurrent(**{"cell": "lstm", "input_size": 3, "hidden_size": 4, **kw})
    # switches that are not True or False: batch_first="False" was taken for True, in silence
    for kw in (dict(batch_first="False"), dict(bidirectional="yes"), dict(bias=None), dict(residual=2)):
        with pytest.raises(RnnkitError, match=f"{next(iter(kw))} must be True or False, got"):
            Recurrent("lstm", 3, 4, num_layers=2, **kw)
    layer = Recurrent("lstm", 3, 4, batch_first=0, bidirectional=1)  # 0 and 1 as torch.nn takes them
    assert layer.bidirectional is True and layer.batch_first is False
    for dropout in (1.5, -0.1, "0.1", None, True):
        with pytest.raises(RnnkitError, match="dropout must be a number in"):
            Recurrent("lstm", 3, 4, num_layers=2, dropout=dropout)
    Recurrent("lstm", 3, 4, num_layers=2, dropout=1.0)  # torch.nn takes [0, 1] too
    with pytest.warns(UserWarning, match="does nothing with num_layers=1"):
        Recurrent("lstm", 3, 4, dropout=0.2)
    # skip_input and residual join layers: with one layer they did nothing without a word
    for name in ("skip_input", "residual"):
        with pytest.warns(UserWarning, match=rf"^{name}=True does nothing with num_layers=1"):
            Recurrent("lstm", 3, 4, **{name: True})
    with pytest.raises(RnnkitError, match="cond_mode='state' needs cond_size"):
        Recurrent("lstm", 3, 4, cond_mode="state")
    with pytest.raises(RnnkitError, match="unknown backend 'cuda'"):
        Recurrent("lstm", 3, 4, backend="cuda")
    with pytest.raises(RnnkitError, match="torch.nn has no mut1 cell"):
        Recurrent("mut1", 3, 4).to_torch()
    with pytest.raises(RnnkitError, match="no skip_input or residual: this lstm layer"):
        Recurrent("lstm", 3, 4, num_layers=2, skip_input=True, residual=True).to_torch()


@pytest.mark.parametrize("L", [np.int64(2**62), 10**9])
def test_a_number_of_layers_past_the_memory_is_refused_in_one_line_before_any_is_built(L):
    """Recurrent(num_layers=10**9) or np.int64(2**62) built layers (each small) until the memory ran out, a hang, where
    CharLM's num_layers was bounded; Recurrent takes the same bound (check_layers_fit), with each layer's cell module
    (1 KiB) at the least, so a small hidden_size or a cell of one's own is bounded too. Sizes that fit still build."""
    for cell, H, kw in (
        ("lstm", 8, {}),
        ("rnn_tanh", 1, {"bidirectional": True}),
        ("lstm", 8, {"proj_size": 2}),
    ):
        with pytest.raises(RnnkitError, match=rf"^num_layers {L} of hidden_size {H} need at least .* GiB"):
            Recurrent(cell, 3, H, num_layers=L, **kw)
    own = type("OwnGRU", (CELLS["gru"],), {})  # (a cell of one's own: its weights unknown before it is built)
    with pytest.raises(RnnkitError, match="each layer's cell module alone"):
        Recurrent(own, 3, 4, num_layers=L, dtype=torch.float64)
    assert len(Recurrent("rnn_tanh", 3, 1, num_layers=np.int64(300), bidirectional=True).cells) == 600


def test_repr_shows_sizes_and_options():
    """Printed like torch.nn.LSTM: the cell, D, H and the options that differ from the defaults."""
    layer = Recurrent("lstm", 4, 6, num_layers=2, bidirectional=True, dropout=0.1, bias=False)
    text = repr(layer)
    assert "'lstm', 4, 6, num_layers=2, bidirectional=True, dropout=0.1, bias=False" in text
    assert "LSTM(4, 6, bias=False)" in text and "LSTM(12, 6, bias=False)" in text
    assert "Leaky(3, 5, alpha=0.3)" in repr(Recurrent("leaky", 3, 5, alpha=0.3))
    assert "learn_alpha=True" in repr(Recurrent("leaky", 3, 5, learn_alpha=True))
    assert "LSTM(3, 5, forget_bias=0.0)" in repr(Recurrent("lstm", 3, 5, forget_bias=0.0))


# What torch 2.13's dynamo says of its own internals on its way, shown only with warnings as errors.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be instantiated")
@pytest.mark.parametrize(
    "backend", [None, "autograd"]
)  # the loop as one operator; unrolled (engine/compiled.py)
@pytest.mark.parametrize("name", ["lstm", "mut1"])
def test_torch_compile_same_numbers(name, backend):
    """torch.compile of a model with a Recurrent in it gives the same outputs and gradients."""
    torch.manual_seed(0)
    layer = Recurrent(name, 4, 6, num_layers=2, bidirectional=True, backend=backend)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    x = torch.randn(3, 5, 4, requires_grad=True)
    lengths = torch.tensor([5, 3, 2])
    out = layer(model(x), lengths=lengths)[0]
    (dx,) = torch.autograd.grad(out.square().sum(), x)
    compiled = torch.compile(lambda x: layer(model(x), lengths=lengths)[0], backend="eager")
    out_c = compiled(x)
    (dx_c,) = torch.autograd.grad(out_c.square().sum(), x)
    torch.testing.assert_close(out_c, out)
    torch.testing.assert_close(dx_c, dx)


def test_torch_compile_of_packed_sequences_with_dropout_warns_of_no_failure():
    """Dropout between layers over a PackedSequence put its kept values back through a boolean index (index_put):
    under torch.compile its nonzero failed in the compiler, "Error detected in IndexPutBackward0" (aot_eager) and
    "Backend compiler `inductor` failed with aten.nonzero.default" at every compile, where torch.nn.GRU's was
    silent. The same numbers and gradients as eager, with no such warning."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, num_layers=2, dropout=0.5)
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    torch.manual_seed(1)
    h = layer(packed)[1]
    (dW,) = torch.autograd.grad(h.sum(), layer.cells[0].W_hh)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        h_c = torch.compile(lambda p: layer(p)[1], backend="aot_eager")(packed)
        (dW_c,) = torch.autograd.grad(h_c.sum(), layer.cells[0].W_hh)
    assert not [str(w.message)[:60] for w in caught if "Error detected" in str(w.message)]
    torch.testing.assert_close(h_c, h, rtol=0, atol=0)
    torch.testing.assert_close(dW_c, dW, rtol=0, atol=0)


def test_torch_compile_fullgraph_with_the_python_backend(monkeypatch):
    """backend="python" under torch.compile (the unrolled loop) warned through warnings.warn, a graph break: the
    first fullgraph=True compile in a process failed ("Attempted to call function marked as skipped")."""
    from rnnkit import engine

    monkeypatch.setattr(engine, "_warned", set())  # (a warning given once before would hide it)
    torch.manual_seed(0)
    layer, x = Recurrent("gru", 4, 5, backend="python"), torch.randn(2, 6, 4)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(layer, backend="eager", fullgraph=True)(x)[0], layer(x)[0])


def test_torch_compile_takes_lengths_as_a_list_of_numpy_integers_or_scalar_tensors():
    """Eager code takes lengths as a list of numpy integers (from a dataset's array) or of 0-d tensors; under
    torch.compile, where dynamo sees a numpy integer as an array, torch.as_tensor of such a list failed deep in dynamo
    (TorchRuntimeError, "its data is not allocated yet")."""
    torch.manual_seed(0)
    layer, x = Recurrent("rnn_tanh", 3, 4, backend="autograd"), torch.randn(2, 5, 3)
    torch._dynamo.reset()
    f = torch.compile(lambda x, lengths: layer(x, lengths=lengths)[0], backend="eager", fullgraph=True)
    for lengths in (
        [np.int64(5), np.int64(3)],
        [torch.tensor(2), torch.tensor(5)],
        (np.int32(4), 1),
        np.array([5, 3]),
    ):
        torch.testing.assert_close(f(x, lengths), layer(x, lengths=[int(v) for v in lengths])[0])


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name,kw", [("lstm", {"num_layers": 2}), ("mut1", {"bidirectional": True})])
def test_torch_export_same_numbers(name, kw, strict):
    """torch.export of a model with a Recurrent in it (default backend, variable lengths): the exported program
    computes what the eager model does, for lengths other than the ones it was traced with too. (Non-strict
    export traces FakeTensors, whose memory the native loop can't read: there the layer runs as python;
    lengths outside [1, T] are refused when the program runs: they were accepted in silence, a length of 0
    giving zeros, one past T running T steps.)"""
    torch.manual_seed(0)
    layer = Recurrent(name, 4, 6, **kw)
    head = torch.nn.Linear(6 * layer.dirs, 2)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer, self.head = layer, head

        def forward(self, x, lengths):
            return self.head(self.layer(x, lengths=lengths)[0])

    model = Model().eval()
    x = torch.randn(3, 9, 4)
    program = torch.export.export(model, (x, torch.tensor([9, 4, 1])), strict=strict)
    for lengths in ([9, 4, 1], [2, 9, 5]):
        lengths = torch.tensor(lengths)
        torch.testing.assert_close(program.module()(x, lengths), model(x, lengths))
    for lengths in ([0, 4, 1], [9, 10, 1]):
        with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T\]"):
            program.module()(x, torch.tensor(lengths))


@pytest.mark.parametrize("name,kw", [("lstm", {"num_layers": 2, "proj_size": 3}), ("mut1", {"bidirectional": True}),
                                     ("gru_cho", {"batch_first": False})])  # fmt: skip
def test_torch_export_with_a_dynamic_time_dimension(name, kw):
    """torch.export with T dynamic (torch.export.Dim), as torch.nn's RNNs export: the Python loop of T steps fixed T
    to the example's length and the export failed ("your code specialized it to be a constant"); the loop is one
    scan there, whose program runs any T in range, with lengths, both directions and a given state, and backward.
    (Non-strict, torch.export's default: strict export's dynamo shows T as an int, see exporting_any_length.)"""
    torch.manual_seed(0)
    layer = Recurrent(name, 4, 6, **kw).eval()
    t_dim = 1 if layer.batch_first else 0
    x = torch.randn(3, 5, 4) if layer.batch_first else torch.randn(5, 3, 4)
    with torch.no_grad():
        state = layer(x)[1]  # (a state of the right shapes)
    T = torch.export.Dim("T", min=2, max=64)
    program = torch.export.export(
        layer,
        (x, state, torch.tensor([5, 2, 4])),
        dynamic_shapes=({t_dim: T}, tuple(None for _ in state) if isinstance(state, tuple) else None, None),
    )
    for steps, lengths in ((9, [9, 1, 6]), (2, [2, 2, 1])):
        x = torch.randn(3, steps, 4) if layer.batch_first else torch.randn(steps, 3, 4)
        x.requires_grad_(True)
        got, want = program.module()(x, state, torch.tensor(lengths)), layer(x, state, torch.tensor(lengths))
        torch.testing.assert_close(got, want)
        (g,) = torch.autograd.grad(got[0].sum(), x)
        (w,) = torch.autograd.grad(want[0].sum(), x)
        torch.testing.assert_close(g, w)


def test_torch_export_with_a_dynamic_time_dimension_refuses_no_time_steps():
    """Eager code refuses an input of T = 0 ("input has no time steps"); a program exported with T dynamic (a Dim
    from 0, torch.export's default) checked it only while tracing, and at T = 0 failed deep in its scan
    ("IndexError: select(): index 0 out of range")."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 4, 6).eval()
    program = torch.export.export(
        layer, (torch.randn(3, 5, 4),), dynamic_shapes=({1: torch.export.Dim("T")},)
    )
    x = torch.randn(3, 1, 4)
    torch.testing.assert_close(program.module()(x), layer(x))
    with pytest.raises(RuntimeError, match="input has no time steps"):
        program.module()(torch.randn(3, 0, 4))


def test_torch_export_with_a_dynamic_batch_after_an_export_with_a_static_one():
    """Two exports with a dynamic T in one process, the first with the batch static, the second with it dynamic
    (torch.export.Dim) at the same example size: the second failed with "You marked B as dynamic but your code
    specialized it to be a constant (3)", as torch's scan reused what dynamo had compiled for the first export's
    step, whose guards fixed the batch. Each export traces its scan afresh."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 4, 6).eval()
    x = torch.randn(3, 5, 4)
    T, B = torch.export.Dim("T", min=2, max=32), torch.export.Dim("B", min=2, max=32)
    torch.export.export(layer, (x,), dynamic_shapes=({1: T},))
    program = torch.export.export(layer, (x,), dynamic_shapes=({0: B, 1: T},))
    x = torch.randn(5, 8, 4)
    torch.testing.assert_close(program.module()(x), layer(x))


def test_a_probe_given_to_torch_export_is_said_to_record_nothing():
    """A GradProbe passed while exporting was accepted in silence and recorded nothing (an exported program holds no
    backward): it is said, and the program computes what the layer does."""
    from rnnkit import GradProbe

    torch.manual_seed(0)
    layer, x = Recurrent("gru", 4, 5), torch.randn(2, 6, 4)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, probe=GradProbe())[0]

    with pytest.warns(UserWarning, match="GradProbe records .* not in a torch.export program"):
        program = torch.export.export(Model(), (x,))
    torch.testing.assert_close(program.module()(x), layer(x)[0])


def test_make_fx_graph_computes_what_the_layer_does():
    """make_fx on real tensors recorded the native loop's empty output buffers and not the loop (a C++ call the
    dispatcher never sees): its graph computed garbage (out 8e34 off) without a word. There the layer runs as
    python, whose ops the graph holds, as under a FakeTensor trace (torch.export)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.manual_seed(0)
    layer = Recurrent("lstm", 4, 8, num_layers=2)

    def f(x):
        return layer(x)[0]

    graph = make_fx(f)(torch.randn(2, 9, 4))
    x = torch.randn(2, 9, 4)
    torch.testing.assert_close(graph(x), f(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_jit_trace_is_refused_not_replayed_wrong(backend):
    """torch.jit.trace can't see the loop (native: a C++ call; python: T as a constant), so the traced program
    replayed garbage (3e35 for a (3, 7, 8) batch) with only tracer warnings: it is refused, naming export."""
    layer = Recurrent("lstm", 8, 16, backend=backend).eval().requires_grad_(False)
    with pytest.raises(RnnkitError, match=r"torch.jit.trace .*torch.export.export"):
        torch.jit.trace(lambda x: layer(x)[0], torch.randn(3, 7, 8))
    with pytest.raises(RnnkitError, match="torch.jit.trace"):  # the engine called directly too
        torch.jit.trace(lambda xw: run(CELLS["rnn_tanh"], xw, (torch.zeros(3, 4),), (torch.eye(4), None))[0],
                        torch.randn(5, 3, 4))  # fmt: skip


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_onnx_export_through_jit_trace_names_the_exporter_that_works():
    """torch.onnx.export(..., dynamo=False) traces with torch.jit: it was refused with the line for torch.jit.trace,
    which the caller never called; the line names dynamo=True (through torch.export, which runs the layer)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Recurrent("gru", 4, 6))
    with pytest.raises(RnnkitError, match=r"torch.onnx.export\(\.\.\., dynamo=False\) .*dynamo=True"):
        torch.onnx.export(model, (torch.randn(2, 5, 4),), io.BytesIO(), dynamo=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_onnx_export_of_a_bare_layer_names_the_exporter_that_works():
    """The layer itself as the model: the old exporter passes the defaults of forward's keyword-only arguments
    (hx, input, _sorted) as positional ones, and forward failed with a TypeError ("takes from 1 to 6 positional
    arguments but 9 were given") before it could say which exporter works. Now it is the same one line."""
    layer = Recurrent("gru", 4, 6)
    with pytest.raises(RnnkitError, match=r"torch.onnx.export\(\.\.\., dynamo=False\) .*dynamo=True"):
        torch.onnx.export(layer, (torch.randn(2, 5, 4),), io.BytesIO(), dynamo=False)
    # outside a trace, no more positional arguments than before
    with pytest.raises(TypeError, match="positional"):
        layer(torch.randn(2, 5, 4), None, None, None, None, None)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_jit_script_is_refused_in_one_line():
    """torch.jit.script failed deep inside TorchScript's frontend ('Compiled functions can't take variable
    number of arguments'); a layer, a bare cell and a model holding a layer get one line naming export."""
    layer = Recurrent("lstm", 8, 16)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), layer)
    for module in (layer, CELLS["gru"](8, 16), model):
        with pytest.raises(RnnkitError, match=r"torch.jit.script .*torch.export.export"):
            torch.jit.script(module)


@pytest.mark.parametrize("backend", [None, "python"])
def test_fx_symbolic_trace_keeps_the_layer_as_one_call(backend):
    """torch.fx.symbolic_trace keeps torch.nn's RNNs as one call_module node; it traced into a Recurrent, whose checks
    failed on its proxies ("input must be a torch.Tensor, got Proxy"), so no model holding one could be traced
    (create_feature_extractor, FX quantization). It is one call now, the traced model calling the layer itself with
    what it was given (lengths, hx= too); the layer traced as the root is refused in one line."""
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.rnn = Recurrent("lstm", 4, 6, num_layers=2, backend=backend)

        def forward(self, x, lengths, h, c):
            return self.rnn(self.proj(x), lengths=lengths, hx=(h, c))[0].sum(-1)

    model = Model()
    graph = torch.fx.symbolic_trace(model)
    assert [n.target for n in graph.graph.nodes if n.op == "call_module"] == ["proj", "rnn"]
    x, lengths = torch.randn(3, 9, 4), torch.tensor([9, 2, 5])
    h, c = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    torch.testing.assert_close(graph(x, lengths, h, c), model(x, lengths, h, c))
    with pytest.raises(RnnkitError, match=r"symbolic_trace can't trace into rnnkit's Recurrent .*holds it"):
        torch.fx.symbolic_trace(model.rnn)


def test_fx_symbolic_trace_runs_a_subclass_forward_and_hooks_once():
    """FX traces what a Recurrent's call runs around its forward (its hooks, a subclass's forward calling
    Recurrent.forward) before the layer is reached: one call of the layer there ran them again, and the traced
    model computed something else in silence (a hook's out * 2 and a subclass's x * 2 applied twice)."""
    torch.manual_seed(0)

    class Scaled(Recurrent):
        def forward(self, x, state=None):
            out, state = super().forward(x * 2, state)
            return out * 3, state

    hooked = Recurrent("lstm", 4, 6)
    hooked.register_forward_hook(lambda module, args, out: (out[0] * 2, out[1]))
    for layer in (Scaled("gru", 4, 6), hooked):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), layer)
        graph = torch.fx.symbolic_trace(model)
        x = torch.randn(3, 5, 4)
        torch.testing.assert_close(graph(x)[0], model(x)[0])


def test_fx_symbolic_trace_refuses_a_grad_probe_in_one_line():
    """A GradProbe can't be an argument of a traced model's call: FX failed deep inside ("NotImplementedError:
    argument of type: <class 'rnnkit.engine.GradProbe'>")."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.probe = Recurrent("gru", 4, 6), GradProbe()

        def forward(self, x):
            return self.rnn(x, probe=self.probe)[0]

    model = Model()
    model(torch.randn(2, 5, 4))  # (eagerly it runs)
    with pytest.raises(RnnkitError, match="symbolic_trace can't keep a GradProbe"):
        torch.fx.symbolic_trace(model)


def _results(layer, x, state, g):
    """A layer's outputs, final states and gradients (of x, the state and every parameter), lengths given."""
    x, state = x.detach().requires_grad_(), tuple(s.detach().requires_grad_() for s in state)
    out, st = layer(x, state if len(state) == 2 else state[0], lengths=torch.tensor([len(g[0]), 4, 6]))
    st = st if isinstance(st, tuple) else (st,)
    loss = (out.double() * g).sum() + sum((s.double() * (k + 2)).sum() for k, s in enumerate(st))
    return (out, *st, *torch.autograd.grad(loss, [x, *state, *layer.parameters()]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "mut1"])
def test_a_half_layer_is_its_float32_copy_cast_once(cell, backend, dtype, monkeypatch):
    """A float16 or bfloat16 layer computes in float32 on every backend (the projection, the loop, BPTT), native
    included (its loop runs: the python loop is refused here, and so is a fallback's warning): its outputs and final
    states are those of a float32 copy of it, cast once, and each gradient that copy's, cast to its tensor's dtype
    (the parameters', the input's, the initial state's). Every step ran in the half type (native fell back to python),
    and a 200-step bfloat16 lstm's outputs came 5.5e-3 off float64's, torch.nn.LSTM's 2.6e-3; now 1.7e-3."""
    from rnnkit.engine import python

    torch.manual_seed(0)
    half = Recurrent(cell, 5, 8, num_layers=2, bidirectional=True, backend=backend).to(dtype)
    x, g = torch.randn(3, 9, 5).to(dtype), torch.randn(3, 9, 16).to(dtype).double()
    state = tuple(torch.randn(4, 3, 8).to(dtype) for _ in range(2 if cell == "lstm" else 1))
    want = _results(half.float(), x.float(), tuple(s.float() for s in state), g)
    if backend == "native":
        monkeypatch.setattr(python, "forward_loop", None)  # (a call: TypeError)
    got = _results(half.to(dtype), x, state, g)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype and torch.equal(a, b.to(dtype))


@pytest.mark.parametrize("mode", ["input", "state", "both"])
def test_a_conditioned_half_layer_is_its_float32_copy_cast_once(mode):
    """The conditioning terms W_vh v and h_0 = tanh(W_vs v + b) of a bfloat16 layer are computed in float32 too, as its
    input projection: they ran in bfloat16, the rounding of W_vh v added to every step (200 steps of a gru 2.0e-3 off
    float64's where its float32 copy cast is 1.6e-3), outputs and gradients unequal to the float32 copy's cast."""
    torch.manual_seed(0)
    half = Recurrent("gru", 5, 8, cond_size=3, cond_mode=mode).to(torch.bfloat16)
    x, v = torch.randn(2, 9, 5).to(torch.bfloat16), torch.randn(2, 3).to(torch.bfloat16)

    def results(layer, xs, cond):
        xs, cond = xs.requires_grad_(), cond.requires_grad_()
        out, h = layer(xs, cond=cond)
        loss = (out.double() * torch.arange(8).double()).sum() + h.double().sum()
        return [out, h, *torch.autograd.grad(loss, [xs, cond, *layer.parameters()])]

    got = results(half, x, v)
    for k, (a, b) in enumerate(zip(got, results(half.float(), x.float(), v.float()), strict=True)):
        assert a.dtype == torch.bfloat16
        if k == 3 and mode == "both":  # (dv: W_vh's and W_vs's terms, each cast back, summed in bfloat16)
            torch.testing.assert_close(a, b.to(torch.bfloat16), rtol=2**-7, atol=0)
        else:
            assert torch.equal(a, b.to(torch.bfloat16))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "leaky"])
def test_a_bfloat16_layer_is_within_a_rounding_of_float64(cell, backend):
    """200 steps of a bfloat16 layer against float64 (the same weights, input and state): outputs, final states and
    every gradient within 2.5e-3 (relative to the tensor's norm), the rounding of the result to bfloat16 (1.7e-3 at
    these sizes); the loop ran in bfloat16 and came 2.5-6e-3 off (rnn_tanh's dW_hh 5e-3, lstm's 7.5e-3), torch.nn.LSTM
    2.6-4e-3, torch.nn.GRU and RNN 3-18e-3."""
    torch.manual_seed(0)
    layer = Recurrent(cell, 16, 32, backend=backend).to(torch.bfloat16)
    x, g = torch.randn(3, 200, 16).to(torch.bfloat16), torch.randn(3, 200, 32).to(torch.bfloat16).double()
    state = tuple(torch.randn(1, 3, 32).to(torch.bfloat16) for _ in range(2 if cell == "lstm" else 1))
    got = _results(layer, x, state, g)
    exact = _results(layer.double(), x.double(), tuple(s.double() for s in state), g)
    for a, b in zip(got, exact, strict=True):
        assert a.dtype == torch.bfloat16
        assert (a.double() - b).norm() <= 2.5e-3 * b.norm()


@pytest.mark.parametrize("cell", ["lstm", "mut1", "gru"])
def test_autocast_bfloat16(cell):
    """Under torch.autocast the projection runs in bfloat16 like any F.linear and the loop in float32 (the
    python backend used to fail on a bfloat16 GEMM meeting a float32 state); every backend agrees."""
    outs = {}
    for backend in (None, "python", "autograd"):  # None: native where it builds
        torch.manual_seed(0)
        layer = Recurrent(cell, 8, 16, num_layers=2, bidirectional=True, backend=backend)
        x = torch.randn(4, 10, 8, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(x, lengths=torch.tensor([10, 3, 7, 10]))
            loss = out.float().pow(2).mean()
        loss.backward()
        assert out.dtype == torch.float32
        outs[backend] = (out, x.grad, layer.cells[0].W_hh.grad)
    for backend in (None, "python"):
        for a, b in zip(outs[backend], outs["autograd"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "leaky"])
def test_a_backward_inside_autocast_gives_the_gradients_of_one_outside(cell, backend):
    """The loop runs in float32 under torch.autocast, and so does its BPTT: a loss.backward() called inside the
    autocast block (as torch.nn's RNNs allow, their gradients the same) ran the python loop's backward GEMMs in
    bfloat16, dL/dh_t rounded at every step, gradients 0.5% off those of a backward outside."""
    grads = {}
    for inside in (False, True):
        torch.manual_seed(0)
        layer = Recurrent(cell, 4, 6, num_layers=2, bidirectional=True, backend=backend)
        x = torch.randn(3, 5, 4, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(x, lengths=torch.tensor([5, 3, 2]))
            loss = out.float().pow(2).sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        grads[inside] = [x.grad, *(p.grad for p in layer.parameters())]
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("cell", ["gru", "leaky"])
def test_a_create_graph_backward_inside_autocast_gives_the_gradients_of_one_outside(cell, backend):
    """A gradient taken with create_graph=True inside torch.autocast: the native loop's differentiable backward
    reran the forward as an autograd loop with autocast on, its GEMMs in bfloat16 where the loop had run in float32,
    the gradients (and their own gradients) 0.5% off those taken outside the block; the rerun runs with autocast
    off, as the loop (and the python loop's backward, 63b4921)."""
    grads = {}
    for inside in (False, True):
        torch.manual_seed(0)
        layer = Recurrent(cell, 4, 6, num_layers=2, backend=backend)
        x = torch.randn(3, 5, 4, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(x, lengths=torch.tensor([5, 3, 2]))
            loss = out.float().pow(2).sum()
            if inside:
                (g,) = torch.autograd.grad(loss, x, create_graph=True)
        if not inside:
            (g,) = torch.autograd.grad(loss, x, create_graph=True)
        g.square().sum().backward()
        grads[inside] = [g.detach(), *(p.grad for p in layer.parameters())]
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_autocast_after_a_bfloat16_layer(cell):
    """Under autocast a Linear before the layer gives bfloat16: the layer takes it (and a float32 or bfloat16
    state) as torch.nn's RNNs do, and a cell run by hand takes a float32 state with a bfloat16 x_t."""
    results = {}
    for backend in (None, "python", "autograd"):
        torch.manual_seed(0)
        lin, layer = torch.nn.Linear(3, 8), Recurrent(cell, 8, 16, num_layers=2, backend=backend)
        x = torch.randn(4, 10, 3)
        h = torch.zeros(2, 4, 16)
        state = (h, h.bfloat16()) if cell == "lstm" else h
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = lin(x)
            assert z.dtype == torch.bfloat16
            out, _ = layer(z, state, lengths=torch.tensor([10, 3, 7, 10]))
            out_t, _ = layer.step(z[:, 0])
            by_hand = layer.cells[0](z[:, 0], torch.zeros(4, 16) if cell == "gru" else (h[0], h[0]))
        out.float().pow(2).mean().backward()
        assert out.dtype == out_t.dtype == torch.float32
        results[backend] = (out, lin.weight.grad, layer.cells[0].W_hh.grad)
    assert by_hand[0].dtype == torch.float32
    for backend in (None, "python"):
        for a, b in zip(results[backend], results["autograd"]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cell, D, params, x_dtype, autocast",
    [
        ("gru", 8, torch.bfloat16, torch.bfloat16, torch.float16),  # stacking the final states
        ("mut1", 8, torch.bfloat16, torch.bfloat16, torch.float16),  # [W_xh; W_xp], the bidirectional cat
        ("mut2", 8, torch.float16, torch.float16, torch.bfloat16),  # [W_z; W_xp; W_h]
        ("mut1", 16, torch.float32, torch.float16, torch.bfloat16),  # x itself as MUT1's x̃ block (D = H)
        ("lstm", 8, torch.bfloat16, torch.float16, torch.bfloat16),  # skip_input's cat of h and x
    ],
)
def test_autocast_to_one_half_type_runs_a_layer_or_input_in_the_other(cell, D, params, x_dtype, autocast):
    """A layer kept in bfloat16 under torch.autocast(dtype=float16), or an input in float16 under bfloat16, runs as
    torch.nn's RNNs run it: the layer's torch.cat and torch.stack, which autocast joins in its own dtype or float32,
    raised "Unexpected floating ScalarType in at::autocast::prioritize" from inside torch on the other half type.
    Every backend agrees, packed sequences with dropout too."""
    results = {}
    for backend in (None, "python", "autograd"):
        torch.manual_seed(0)
        layer = Recurrent(cell, D, 16, num_layers=2, bidirectional=True, dropout=0.3, skip_input=cell == "lstm",
                          backend=backend).to(params)  # fmt: skip
        x = torch.randn(3, 9, D).to(x_dtype).requires_grad_()
        lengths = torch.tensor([9, 4, 6])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        with torch.autocast("cpu", dtype=autocast):
            out, state = layer(x, lengths=lengths)
            out_packed, _ = layer(packed)
            loss = out.float().pow(2).mean() + out_packed.data.float().sum()
        loss.backward()
        assert out.dtype == params and torch.isfinite(x.grad).all()
        results[backend] = (out.float(), x.grad.float(), layer.cells[2].W_hh.grad.float())
    for backend in (None, "python"):
        for a, b in zip(results[backend], results["autograd"]):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_meta_tensors_give_shapes(cell):
    """On the meta device (shapes without data: a model's size worked out before it is built, deferred
    initialisation) every cell runs as torch.nn's RNNs do, forward and backward; it raised "unknown device type
    for autocast" from deep inside, asking torch whether autocast was on for a device it has no mode for."""
    with torch.device("meta"):
        layer, one_way = Recurrent(cell, 8, 16, num_layers=2, bidirectional=True), Recurrent(cell, 8, 16)
        x = torch.randn(4, 7, 8, requires_grad=True)
    for lengths in (None, torch.tensor([7, 3, 2, 1]), torch.tensor([7, 3, 2, 1], device="meta")):
        out, state = layer(x, lengths=lengths)
        out.sum().backward()
        h = state[0] if cell == "lstm" else state
        assert out.shape == (4, 7, 32) and h.shape == (4, 4, 16) and out.device.type == "meta"
        assert x.grad.shape == x.shape and layer.cells[0].W_hh.grad.device.type == "meta"
    out_t, _ = one_way.step(x[:, 0])
    assert out_t.shape == (4, 16) and out_t.device.type == "meta"


def test_fake_tensors_with_lengths_give_shapes():
    """Under FakeTensorMode (torch.fx's FakeTensorProp, counting a model's FLOPs or memory without running it) the
    lengths hold no values either, as on the meta device: they are not read. Reading them for the [1, T] check
    raised DataDependentOutputException (aten._local_scalar_dense) from deep inside the layer."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        layer = Recurrent("lstm", 8, 16, num_layers=2, bidirectional=True)
        x = torch.randn(4, 7, 8, requires_grad=True)
        for lengths in (torch.tensor([7, 3, 2, 1]), [7, 3, 2, 1]):
            out, (h, _) = layer(x, lengths=lengths)
            out.sum().backward()
            assert out.shape == (4, 7, 32) and h.shape == (4, 4, 16) and x.grad.shape == x.shape
        out, _ = layer(x[0], lengths=5)
        assert out.shape == (7, 32)


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_a_packed_sequence_on_the_meta_device_gives_shapes_as_torchs(enforce_sorted):
    """torch.nn.LSTM takes a PackedSequence on the meta device (its data and order there, its batch_sizes on the
    CPU) and gives shapes; the layer failed with "Cannot copy out of meta tensor; no data!" from inside
    pad_packed_sequence, which reads the order's values."""
    with torch.device("meta"):
        ref = torch.nn.LSTM(8, 16, 2, batch_first=True, bidirectional=True)
        layer = Recurrent("lstm", 8, 16, 2, bidirectional=True, dropout=0.5, cond_size=3, cond_mode="both")
        x, v = torch.randn(4, 7, 8, requires_grad=True), torch.randn(4, 3)
    lengths = torch.tensor([7, 7, 5, 2] if enforce_sorted else [2, 7, 5, 7])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    want, (h_want, _) = ref(packed)
    out, (h, c) = layer(packed, cond=v)
    assert out.data.shape == want.data.shape and out.data.device.type == "meta"
    assert torch.equal(out.batch_sizes, want.batch_sizes) and out.sorted_indices is packed.sorted_indices
    assert h.shape == c.shape == h_want.shape and h.device.type == "meta"
    out.data.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing(use_reentrant):
    """torch.utils.checkpoint around a layer (the forward run again in backward) gives the same gradients."""
    torch.manual_seed(0)
    layer = Recurrent("lstm", 4, 5, num_layers=2).double()
    x = torch.randn(3, 9, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for wrapped in (False, True):
        layer.zero_grad()
        x.grad = None
        out = (
            torch.utils.checkpoint.checkpoint(lambda t: layer(t)[0], x, use_reentrant=use_reentrant)
            if wrapped
            else layer(x)[0]
        )
        out.pow(2).sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_selective_checkpointing_that_saves_the_matmuls_gives_the_same_gradients(backend):
    """Selective activation checkpointing (context_fn) keeps the outputs of the ops its policy names and hands the
    same tensors back when the forward runs again in backward. MUT1's input projection took tanh of its x̃ block
    in place on the GEMM's output: that output, kept as saved, was changed, and the rerun took tanh of it again
    (tanh(tanh(.) + b) + b), which torch's check of kept tensors missed: wrong gradients in silence. Where x̃ = x
    (D = H, layer 1) the bias was added in place on a concatenation: torch's error "cached ... mutated" for a
    policy that keeps cat."""
    import functools

    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    aten = torch.ops.aten
    keep = {aten.mm.default, aten.addmm.default, aten.cat.default}

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    torch.manual_seed(0)
    layer = Recurrent("mut1", 3, 4, num_layers=2, backend=backend).double()  # layer 1: D = H, x̃ = x
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for context_fn in (None, functools.partial(create_selective_checkpoint_contexts, policy)):
        layer.zero_grad()
        x.grad = None
        out = (
            layer(x)[0]
            if context_fn is None
            else torch.utils.checkpoint.checkpoint(
                lambda t: layer(t)[0], x, use_reentrant=False, context_fn=context_fn
            )
        )
        out.pow(2).sum().backward()
        grads.append([out.detach(), x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_leaky_alpha_of_a_float64_layer_is_the_alpha_given(learn_alpha):
    """A float64 layer's α is the α given to float64 precision, as its other numbers are: it was made in the
    default dtype (float32) and converted, 0.1 becoming 0.10000000149 (fixed) or 0.0999999964 (learned), also
    after reset_parameters(), so a float64 check against an independent formula with α = 0.1 was off by 1e-9."""
    alpha = [0.1, 0.7, 1 / 3, 0.999]
    want = torch.tensor(alpha, dtype=torch.float64)
    for layer in (
        Recurrent("leaky", 3, 4, alpha=alpha, learn_alpha=learn_alpha, dtype=torch.float64),
        Recurrent("leaky", 3, 4, alpha=alpha, learn_alpha=learn_alpha).double(),
    ):
        layer.reset_parameters()
        torch.testing.assert_close(layer.cells[0].alpha, want, rtol=1e-15, atol=0)


def test_device_and_dtype_factory_arguments():
    """device= and dtype= as torch.nn.LSTM takes them: every parameter and buffer made so; not an integer type."""
    layer = Recurrent("leaky", 3, 4, num_layers=2, cond_size=2, device="cpu", dtype=torch.float64)
    assert {t.dtype for t in (*layer.parameters(), *layer.buffers())} == {torch.float64}
    out, _ = layer(torch.randn(2, 5, 3, dtype=torch.float64), cond=torch.randn(2, 2, dtype=torch.float64))
    assert out.dtype == torch.float64
    with pytest.raises(RnnkitError, match="dtype must be a floating-point type"):
        Recurrent("lstm", 3, 4, dtype=torch.int64)
    # a name is not a dtype (was an AttributeError: 'str' object has no attribute 'is_floating_point')
    with pytest.raises(RnnkitError, match="dtype must be a floating-point type .*torch.dtype.*got 'float64'"):
        Recurrent("lstm", 3, 4, dtype="float64")


@pytest.mark.parametrize("convert", [lambda m: m.to(torch.complex64), lambda m: m.type(torch.complex128)])
@pytest.mark.parametrize("make", [lambda: Recurrent("leaky", 3, 4, cond_size=2), lambda: CELLS["lstm"](3, 4)])
def test_a_conversion_to_complex_is_refused_as_dtype_is(convert, make):
    """layer.to(torch.complex64) (or a cell's, or .type) made complex weights in silence, which no call could run:
    a real input was 'input dtype torch.float32 differs from the weights' torch.complex64; convert one', and the
    complex one that asks for 'input must be a floating-point tensor, got torch.complex64'. It is refused in one line
    before anything is converted, as dtype=torch.complex64 is."""
    module = make()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Complex modules", UserWarning)  # (torch's, before the conversion)
        with pytest.raises(RnnkitError, match=r"^rnnkit's cells compute in real numbers: .* can't be converted to "
                                              r"torch.complex(64|128); keep it in a floating-point dtype"):  # fmt: skip
            convert(module)
    after = module.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    module.double()  # a real dtype converts as before
    assert {t.dtype for t in (*module.parameters(), *module.buffers())} == {torch.float64}


def test_a_conversion_reads_its_dtype_once_not_once_per_module_inside():
    """The complex check read the new dtype from fn of an empty tensor in every cell and layer it passed (a 2-layer
    bidirectional LSTM: 5 reads a .to(), which took 56 µs where it took 38 for two layers). The outermost reads it;
    the modules inside take its reading, and a complex conversion is still refused at any depth."""
    layer, seen = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True), []

    def fn(t):
        seen.append(t.numel())
        return t

    layer._apply(fn)
    assert seen.count(0) == 1 and len(seen) == 1 + len(list(layer.parameters()))
    torch.nn.Sequential(torch.nn.Linear(2, 3), layer)._apply(fn)
    assert seen.count(0) == 2
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Complex modules", UserWarning)
        for module in (layer, torch.nn.Sequential(torch.nn.Linear(2, 3), layer), layer.cells[1]):
            with pytest.raises(RnnkitError, match=r"^rnnkit's cells compute in real numbers"):
                module.to(torch.complex64)
    assert {p.dtype for p in layer.parameters()} == {torch.float32}
    layer.double()(torch.randn(2, 5, 3, dtype=torch.float64))  # real conversions as before


@pytest.mark.parametrize("name,make", [("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)])
def test_a_float64_layer_draws_torchs_float64_weights(name, make):
    """Recurrent(..., dtype=torch.float64) drew its weights in float32 and cast them: for the same seed they were
    not torch.nn's, which draws in float64, as the README says the same seed gives."""
    kw = {"forget_bias": None} if name == "lstm" else {}
    torch.manual_seed(0)
    want = make(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    torch.manual_seed(0)
    layer = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    for a, b in zip(want.parameters(), layer.parameters(), strict=True):
        assert b.dtype == torch.float64 and torch.equal(a, b)


def test_a_float64_layer_draws_its_conditioning_weights_in_float64():
    """W_vh and W_vs were drawn in float32 and cast, as the cells' weights were before: a float64 layer's held
    float32 values, and reset_parameters() after the same seed (which draws in float64) gave others."""
    torch.manual_seed(0)
    layer = Recurrent("lstm", 3, 4, num_layers=2, cond_size=2, cond_mode="both", dtype=torch.float64)
    made = {k: v.clone() for k, v in layer.state_dict().items()}
    for k in ("W_vh.1.weight", "W_vs.1.weight", "W_vs.1.bias"):
        assert not torch.equal(made[k], made[k].float().double()), k  # not float32 values
    torch.manual_seed(0)
    layer.reset_parameters()
    for k, v in layer.state_dict().items():
        assert v.dtype == torch.float64 and torch.equal(v, made[k]), k


@pytest.mark.parametrize("backend", [None, "python", "autograd"])  # None: native where it builds
@pytest.mark.parametrize(
    "name,changed",
    # not MUT1's W_xh: its projection reads [W_xh; W_xp] concatenated, a copy made in forward
    [
        (n, c)
        for n in ("lstm", "gru", "mut1", "leaky")
        for c in ("W_hh", "W_xh", "h0")
        if (n, c) != ("mut1", "W_xh")
    ],
)
def test_input_changed_in_place_before_backward_is_torchs_error(backend, name, changed):
    """A weight changed in place between forward and backward (an optimizer step taken too early) or the
    initial state: torch's version-counter error, as torch.nn's RNNs give, never a silently wrong gradient."""
    torch.manual_seed(0)
    layer = Recurrent(name, 3, 4, backend=backend, **({"learn_alpha": True} if name == "leaky" else {}))
    h0 = torch.randn(1, 2, 4, requires_grad=True) * 1.0
    state = (h0, torch.zeros(1, 2, 4)) if name == "lstm" else h0
    x = torch.randn(2, 9, 3, requires_grad=True)  # then dx reads W_xh; 9 steps: the native projection
    out, _ = layer(x, state)
    with torch.no_grad():
        {"W_hh": layer.cells[0].W_hh, "W_xh": layer.cells[0].W_xh, "h0": h0}[changed].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("backend", ["python", "native"])
def test_input_of_a_conditioned_layer_changed_in_place_is_torchs_inplace_error(backend):
    """x changed in place before backward where nothing but the projection saves it (cond adds to xw): torch's
    version-counter error. The native projection saved a view of x made inside its forward, and backward failed with
    torch's 'A view was created in no_grad mode and its base ... modified inplace with grad mode enabled' instead."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 4, 4, backend=backend, batch_first=False, cond_size=2)
    x = torch.randn(9, 3, 4, requires_grad=True)  # time-major: read in place; 9 steps: native projection
    out, _ = layer(x, cond=torch.randn(3, 2))
    with torch.no_grad():
        x.add_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_lengths_of_an_empty_batch_may_be_an_empty_list():
    out, _ = Recurrent("gru", 3, 4)(torch.zeros(0, 5, 3), lengths=[])
    assert out.shape == (0, 5, 4)


def test_torch_names_and_keywords():
    """What torch.nn code does with a layer: load an nn.LSTM state_dict, call with input=/hx=, reset_parameters."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    layer.load_state_dict(ref.state_dict())  # torch's keys (weight_ih_l0_reverse, ...) are renamed to ours
    x, h0 = torch.randn(2, 5, 3), (torch.randn(4, 2, 4), torch.randn(4, 2, 4))
    torch.testing.assert_close(layer(input=x, hx=h0)[0], ref(x, h0)[0])
    wrapped = torch.nn.Sequential(Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True))
    wrapped.load_state_dict(torch.nn.Sequential(ref).state_dict())  # keys under a prefix too
    torch.testing.assert_close(wrapped[0](x)[0], ref(x)[0])
    part = {
        k: v for k, v in ref.state_dict().items() if "_l1" in k
    }  # layer 1 only (was not renamed: no _l0 key)
    fresh = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    missing, unexpected = fresh.load_state_dict(part, strict=False)
    # (missing keys by torch.nn's names, as the dict gives them: layer 0's, both directions)
    assert unexpected == [] and sorted(missing) == sorted(k for k in ref.state_dict() if "_l0" in k)
    torch.testing.assert_close(fresh.cells[2].W_xh, ref.weight_ih_l1)
    with pytest.raises(RnnkitError, match="not both"):
        layer(x, input=x)
    with pytest.raises(RnnkitError, match="no input"):
        layer()
    before = layer.cells[0].W_hh.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.cells[0].W_hh)
    assert (layer.cells[0].b_xh[4:8] == 1.0).all()  # the forget bias, as at construction


def test_converters_keep_mode_and_frozen_weights():
    ref = torch.nn.GRU(3, 4, num_layers=2, dropout=0.5, batch_first=True).eval()
    ref.weight_hh_l0.requires_grad_(False)
    layer = Recurrent.from_torch(ref)
    assert not layer.training and not layer.cells[0].W_hh.requires_grad and layer.cells[0].W_xh.requires_grad
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer(x)[0], ref(x)[0])  # eval mode: no dropout on either side
    back = layer.train().to_torch()
    assert back.training and not back.weight_hh_l0.requires_grad


def test_to_torch_of_a_layer_in_eval_mode_is_a_module_in_eval_mode():
    """to_torch keeps the mode, as from_torch does: an eval() layer with dropout between layers converts to a torch.nn
    module in eval mode, which computes the layer's outputs (a module in training mode drops out)."""
    layer = Recurrent("gru", 3, 4, num_layers=2, dropout=0.5).eval()
    m = layer.to_torch()
    assert not m.training
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(m(x)[0], layer(x)[0])


def test_unbatched_input_errors_say_unbatched():
    layer = Recurrent("lstm", 3, 4)
    with pytest.raises(RnnkitError, match=r"one sequence \(T, D\) = \(T, 3\), got \(5, 7\)"):
        layer(torch.randn(5, 7))
    with pytest.raises(RnnkitError, match="lengths is one number"):
        layer(torch.randn(5, 3), lengths=[4, 5])
    out, _ = layer(torch.randn(5, 3), lengths=[4])
    assert out.shape == (5, 4) and (out[4] == 0).all()
    cond_layer = Recurrent("lstm", 3, 4, cond_size=2)
    with pytest.raises(RnnkitError, match="cond must be a tensor"):
        cond_layer(torch.randn(2, 5, 3), cond=[[1.0, 2.0], [3.0, 4.0]])
    # said in the shapes the caller gave, not the batch of one they run as ("(2, 1, 4), got (2, 1, 5)")
    two = Recurrent("lstm", 3, 4, num_layers=2)
    with pytest.raises(
        RnnkitError, match=r"\(num_layers\*dirs, H\) = \(2, 4\), \(2, 4\), got \(2, 5\), \(2, 4\)"
    ):
        two(torch.randn(5, 3), (torch.zeros(2, 5), torch.zeros(2, 4)))
    with pytest.raises(RnnkitError, match=r"cond must have shape \(C,\) = \(2,\), got \(3,\)"):
        cond_layer(torch.randn(5, 3), cond=torch.randn(3))
    for bad in (
        torch.randn(2, 2),
        torch.tensor(1.0),
    ):  # were "cond must have shape (1, 2), got (2, 2)": a batch of 1
        with pytest.raises(
            RnnkitError, match=r"one unbatched sequence \(T, D\) cond must have shape \(C,\) = \(2,\)"
        ):
            cond_layer(torch.randn(5, 3), cond=bad)
    assert cond_layer(torch.randn(5, 3), cond=torch.randn(1, 2))[0].shape == (5, 4)  # (1, C) as before
    # no cond at all: was "cond must have shape (1, 2), got None", the batch of one they run as
    for call in (lambda: cond_layer(torch.randn(5, 3)), lambda: cond_layer.step(torch.randn(3))):
        with pytest.raises(
            RnnkitError,
            match=r"one unbatched sequence \(T, D\) cond must have shape \(C,\) = \(2,\), got None",
        ):
            call()
    with pytest.raises(RnnkitError, match="state must be a tensor h"):
        Recurrent("gru", 3, 4)(torch.randn(5, 3), 0)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_sparse_or_nested_tensors_are_refused_in_one_line():
    # failed inside torch: "unsupported memory format option Contiguous" (sparse input), "Internal error:
    # NestedTensorImpl doesn't support sizes" (a nested tensor of sequences of different lengths), "Could not run
    # 'aten::min' with arguments from the 'SparseCPU' backend" (sparse lengths)
    layer = Recurrent("lstm", 3, 4)
    x = torch.randn(2, 5, 3)
    with pytest.raises(
        RnnkitError, match=r"input must be a dense tensor, got torch.sparse_coo; x.to_dense\(\)"
    ):
        layer(x.to_sparse())
    with pytest.raises(RnnkitError, match="input must be a dense tensor, got torch.sparse_coo"):
        layer(x[0].to_sparse())  # one unbatched sequence
    for layout in (torch.strided, torch.jagged):
        nested = torch.nested.nested_tensor([torch.randn(5, 3), torch.randn(3, 3)], layout=layout)
        with pytest.raises(
            RnnkitError, match="input must be a dense tensor, got a nested tensor; pad the sequences"
        ):
            layer(nested)
    with pytest.raises(RnnkitError, match="lengths must be a dense tensor, got torch.sparse_coo"):
        layer(x, lengths=torch.tensor([5, 3]).to_sparse())
    with pytest.raises(RnnkitError, match="state must be dense tensors, got torch.sparse_coo"):
        layer(x, (torch.zeros(1, 2, 4).to_sparse(), torch.zeros(1, 2, 4)))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_a_nested_cond_is_refused_in_one_line(layout):
    # a strided one failed inside torch, "Internal error: NestedTensorImpl doesn't support sizes" (a jagged one was
    # said to have shape (2, j1)); x, state and lengths said it in one line
    layer = Recurrent("gru", 3, 4, cond_size=2, cond_mode="both")
    cond = torch.nested.nested_tensor([torch.randn(2), torch.randn(2)], layout=layout)
    for x in (torch.randn(2, 5, 3), torch.randn(5, 3)):  # a batch, one unbatched sequence
        with pytest.raises(
            RnnkitError, match="cond must be a dense tensor, got a nested tensor; stack the vectors"
        ):
            layer(x, cond=cond)
    x, dense = torch.randn(2, 5, 3), torch.randn(2, 2)  # a sparse one computes what the dense one does
    torch.testing.assert_close(layer(x, cond=dense.to_sparse())[0], layer(x, cond=dense)[0])


@pytest.mark.parametrize("lengths", ["ab", object(), [None]])
def test_unbatched_lengths_that_are_not_numbers_are_said_in_one_line(lengths):
    # torch.as_tensor's own errors came out of the unbatched path ("new(): invalid data type 'str'", "Could not
    # infer dtype of object"), where a batch got the one line
    layer = Recurrent("lstm", 3, 4)
    with pytest.raises(RnnkitError, match=r"for one unbatched sequence \(T, D\) lengths is one integer, got"):
        layer(torch.randn(5, 3), lengths=lengths)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_weight_of_another_shape_is_refused(backend):
    """A weight replaced by one of another shape, through torch's name, on the cell or by functional_call: one
    line naming it and the shape wanted. The native loop trusted the shapes and read past the tensor (NaN out,
    no error); the others failed inside torch's matmul."""
    layer = Recurrent("lstm", 3, 8, backend=backend)
    x = torch.randn(2, 9, 3)
    params = dict(layer.named_parameters())
    with pytest.raises(
        RnnkitError, match=r"cells\[0\]\.W_hh \(weight_hh_l0\) has shape \(1, 1\), .* needs \(32, 8\)"
    ):
        torch.func.functional_call(layer, {**params, "cells.0.W_hh": torch.randn(1, 1)}, (x,))
    layer.weight_hh_l0 = torch.nn.Parameter(torch.randn(32, 2))
    with pytest.raises(RnnkitError, match=r"cells\[0\]\.W_hh \(weight_hh_l0\) has shape \(32, 2\)"):
        layer(x)
    gru = Recurrent("mut2", 3, 8, num_layers=2, backend=backend)
    gru.cells[1].b_xh = torch.nn.Parameter(torch.zeros(5))
    with pytest.raises(RnnkitError, match=r"cells\[1\]\.b_xh has shape \(5,\)"):
        gru(x)
    # a weight of another dtype than the cell's others: torch's "expected scalar type Float but found Double"
    # from inside a matmul before
    layer = Recurrent("lstm", 3, 8, backend=backend)
    layer.bias_hh_l0 = torch.nn.Parameter(layer.bias_hh_l0.detach().double())
    with pytest.raises(
        RnnkitError, match=r"cells\[0\]\.b_hh \(bias_hh_l0\) is torch.float64 but .* torch.float32"
    ):
        layer(x)


@pytest.mark.parametrize("name", ["W_xh", "b_xh", "W_hh", "b_hh"])
def test_a_weight_of_another_dtype_is_the_one_named(name):
    """One weight of a float32 cell converted alone (cells[1].W_xh.data = W_xh.data.bfloat16()): the line named the
    weight read after the first, W_xh, as the odd one where W_xh was it ('cells[1].b_xh (bias_ih_l1) is
    torch.float32 but the cell's other weights are torch.bfloat16'). It names the one that differs from the others."""
    layer = Recurrent("lstm", 4, 5, num_layers=2)
    weight = getattr(layer.cells[1], name)
    weight.data = weight.data.bfloat16()
    match = rf"^layer\.cells\[1\]\.{name} \(\w+\) is torch.bfloat16 but the cell's other weights are torch.float32; "
    with pytest.raises(RnnkitError, match=match):
        layer(torch.randn(2, 3, 4))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("T", [3, 9])
def test_a_computed_weight_of_another_shape_or_dtype_is_refused(backend, T):
    """A weight replaced by a tensor computed from another (del cell.W_hh; cell.W_hh = W * mask: weight dropout,
    a mask of one's own) is a plain attribute, not among the cell's parameters, and went unchecked: of another
    shape the native loop read past it (lstm with proj_size: W_hh (16, 1) for (16, 2), outputs in silence), the
    others failed inside torch ('mat1 and mat2 shapes cannot be multiplied', 'expected scalar type Double but
    found Float'). It is held to the shape, dtype and device the parameter had, in the same lines."""
    torch.manual_seed(0)
    x = torch.randn(2, T, 4, dtype=torch.float64)
    bad = [
        ("lstm", dict(proj_size=2), "W_hh", torch.randn(16, 1, dtype=torch.float64), r"has shape \(16, 1\), .* needs \(16, 2\)"),
        ("gru", {}, "W_hh", torch.randn(12, 3, dtype=torch.float64), r"has shape \(12, 3\), .* needs \(12, 4\)"),
        ("mut1", {}, "W_xh", torch.randn(8, 5, dtype=torch.float64), r"has shape \(8, 5\), .* needs \(8, 4\)"),
        ("gru", {}, "W_hh", torch.randn(12, 4), r"is torch.float32 but the cell's other weights are torch.float64"),
        ("leaky", {}, "b_xh", torch.randn(4), r"is torch.float32 but the cell's other weights are torch.float64"),
        ("rnn_tanh", {}, "W_hh", torch.randn(4, 4, dtype=torch.float64, device="meta"), r"is on meta but"),
    ]  # fmt: skip
    for cell, kw, name, W, match in bad:
        layer = Recurrent(cell, 4, 4, num_layers=2, backend=backend, **kw).double()
        base = torch.nn.Parameter(W)
        delattr(layer.cells[1], name)
        setattr(layer.cells[1], name, base * 1.0)
        for grad in (True, False):
            with (
                torch.set_grad_enabled(grad),
                pytest.raises(RnnkitError, match=rf"cells\[1\]\.{name}\b.*{match}"),
            ):
                layer(x)
    # one of the right shape runs, its gradient reaching the weight it is computed from
    layer = Recurrent("lstm", 4, 4, proj_size=2, backend=backend).double()
    base = torch.nn.Parameter(layer.cells[0].W_hh.detach().clone())
    del layer.cells[0].W_hh
    layer.cells[0].W_hh = base * 0.5
    layer(x)[0].sum().backward()
    assert base.grad is not None and base.grad.shape == (16, 2)


class _FirstColumn(torch.nn.Module):
    """A parametrization of another shape than its weight's (register_parametrization(..., unsafe=True))."""

    def forward(self, W):
        return W[:, :1]


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("T", [3, 9])
@pytest.mark.parametrize(("cell", "kw"), [("gru", {}), ("rnn_tanh", {}), ("lstm", dict(proj_size=2))])
def test_a_parametrized_weight_of_another_shape_is_refused(backend, T, cell, kw):
    """A parametrization giving W_hh another shape (unsafe=True): the native loop read past the weight it
    computed in silence (gru: outputs of other memory, 7.57 one call and 7.56 the next), the others failed inside
    torch ('mat1 and mat2 shapes cannot be multiplied'). The weight as computed for the call is held to the
    parameter's shape, in the parameters' line."""
    from torch.nn.utils import parametrize

    x = torch.randn(2, T, 4, dtype=torch.float64)
    layer = Recurrent(cell, 4, 4, num_layers=2, backend=backend, **kw).double()
    parametrize.register_parametrization(layer.cells[1], "W_hh", _FirstColumn(), unsafe=True)
    _refused_with_and_without_grad(layer, x, "W_hh")


def _refused_with_and_without_grad(layer, x, name):
    """layer(x) refused, with gradients and without, for cells[1].<name> as its parametrization computes it: one
    column."""
    for grad in (True, False):
        with (
            torch.set_grad_enabled(grad),
            pytest.raises(
                RnnkitError, match=rf"cells\[1\]\.{name}\b.* computes it, has shape \(\d+, 1\), .* needs"
            ),
        ):
            layer(x)


class _FirstValue(torch.nn.Module):
    def forward(self, b):
        return b[:1]


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("T", [3, 9])
def test_a_parametrized_bias_of_one_value_is_refused_on_every_backend(backend, T):
    """b_hh computed as one value (unsafe=True): autograd and python broadcast it (|out| 12.77), the native loop
    read past it (8.997, no error) for short sequences and folded b_xh + b_hh in broadcast from 8 steps on. Each
    backend now says the shape in one line, the value computed being checked before it is folded."""
    from torch.nn.utils import parametrize

    layer = Recurrent("rnn_tanh", 4, 4, backend=backend).double()
    parametrize.register_parametrization(layer.cells[0], "b_hh", _FirstValue(), unsafe=True)
    with pytest.raises(
        RnnkitError, match=r"cells\[0\]\.b_hh\b.* computes it, has shape \(1,\), .* needs \(4,\)"
    ):
        layer(torch.randn(2, T, 4, dtype=torch.float64))


@pytest.mark.parametrize("cell", ["gru_cho", "mut1", "lstm"])
def test_a_parametrized_input_weight_of_another_shape_is_refused_by_the_native_projection(cell):
    """A parametrization giving W_xh fewer columns (unsafe=True): the native projection (8 steps on) read past
    it in silence (gru_cho: |out| 20.4 without gradients, 19.0 with), where F.linear on the other backends and
    shorter sequences says the shapes can't be multiplied. One line, naming it."""
    from torch.nn.utils import parametrize

    layer = Recurrent(cell, 4, 4, num_layers=2, backend="native").double()
    parametrize.register_parametrization(layer.cells[1], "W_xh", _FirstColumn(), unsafe=True)
    _refused_with_and_without_grad(layer, torch.randn(2, 9, 4, dtype=torch.float64), "W_xh")


@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_leaky_fixed_alpha_of_another_dtype_is_refused(backend):
    """A fixed α (the buffer alpha_fixed) set to a tensor of another dtype than the weights (from numpy: float64)
    is refused in one line naming it, as a weight of another dtype is: 'expected scalar type Float but found
    Double' from inside the native engine before, torch's matmul's error on the other backends."""
    layer = Recurrent("leaky", 3, 4, num_layers=2, backend=backend)
    layer.cells[1].alpha_fixed = torch.from_numpy(np.full(4, 0.3))
    for grad in (False, True):
        with (
            torch.set_grad_enabled(grad),
            pytest.raises(
                RnnkitError,
                match=r"cells\[1\]\.alpha_fixed is torch.float64 but the cell's weights are torch.float32",
            ),
        ):
            layer(torch.randn(2, 3, 3))
    layer.to(torch.float64)  # (the whole layer converted: runs)
    assert layer(torch.randn(2, 3, 3, dtype=torch.float64))[0].dtype == torch.float64


@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_leaky_fixed_alpha_on_another_device_is_refused(backend):
    """A fixed α (the buffer alpha_fixed) set to a tensor on another device than the weights went unchecked, where a
    learned α's alpha_logit is refused: on meta, torch's 'Tensor on device cpu is not on the expected device meta!'
    (python, autograd, a cell called alone), naming no tensor, and the native loop's many-line 'its data is not
    allocated yet' (whose loops read its memory as the CPU's). One line naming it now, for a layer and a cell."""
    layer = Recurrent("leaky", 3, 4, num_layers=2, backend=backend)
    layer.cells[1].alpha_fixed = torch.full((4,), 0.3, device="meta")
    for grad in (False, True):
        with (
            torch.set_grad_enabled(grad),
            pytest.raises(
                RnnkitError,
                match=r"^layer\.cells\[1\]\.alpha_fixed is on meta but the cell's other weights are on cpu",
            ),
        ):
            layer(torch.randn(2, 3, 3))
    for learn_alpha in (False, True):
        cell = CELLS["leaky"](3, 4, learn_alpha=learn_alpha)
        name = "alpha_logit" if learn_alpha else "alpha_fixed"
        alpha = torch.full((4,), 0.3, device="meta")
        setattr(cell, name, torch.nn.Parameter(alpha) if learn_alpha else alpha)
        with pytest.raises(RnnkitError, match=rf"^cell\.{name} is on meta but the cell's weights are on cpu"):
            cell(torch.randn(2, 3))


@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_leaky_fixed_alpha_of_another_shape_or_outside_0_1_is_refused(backend):
    """A fixed α set by hand to another shape than (), (1,) or (H,) failed inside torch ('The expanded size of the
    tensor (4) must match the existing size (5)' from the native engine, a broadcast's error on the others), and
    α = 1.5, 0 or NaN (refused by __init__ and load_state_dict) ran in silence; both are one line naming it."""
    x = torch.randn(2, 3, 3)
    for grad in (False, True):
        for a in (torch.rand(5), torch.rand(4, 1), torch.rand(1, 4)):
            layer = Recurrent("leaky", 3, 4, num_layers=2, backend=backend)
            layer.cells[1].alpha_fixed = a
            shape = str(tuple(a.shape)).replace("(", r"\(").replace(")", r"\)")
            with (
                torch.set_grad_enabled(grad),
                pytest.raises(
                    RnnkitError,
                    match=rf"cells\[1\]\.alpha_fixed has shape {shape}, but .* \(\), \(1,\) or \(4,\)",
                ),
            ):
                layer(x)
        for bad in (1.5, 0.0, float("nan")):
            layer = Recurrent("leaky", 3, 4, num_layers=2, backend=backend)
            layer.cells[0].alpha_fixed = torch.full((4,), 0.5)
            layer(x)  # (checked once; an in-place change is seen)
            with torch.no_grad():
                layer.cells[0].alpha_fixed[2] = bad
            with torch.set_grad_enabled(grad), pytest.raises(RnnkitError, match=r"leaky alpha must lie in \(0, 1\], "
                                                             rf"got {bad:g} in layer.cells\[0\]\.alpha_fixed"):  # fmt: skip
                layer(x)
    for a in (torch.tensor(0.3), torch.tensor([0.3]), torch.rand(4) * 0.9 + 0.1):  # the shapes __init__ takes
        torch.manual_seed(0)
        layer = Recurrent("leaky", 3, 4, backend=backend)
        layer.cells[0].alpha_fixed = a
        torch.manual_seed(0)
        want = Recurrent("leaky", 3, 4, backend=backend, alpha=a)
        torch.testing.assert_close(layer(x)[0], want(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_leaky_fixed_alpha_written_through_data_is_refused(backend):
    """A fixed α written through .data (cell.alpha.data.fill_(2.0)) after a first call changed its values but not
    its _version, which the check's once-per-version reading took as unchanged: every backend ran α = 2 in
    silence (units that overshoot, outputs 3.7 where α = 0.5 gives 0.9); it is refused as any α outside (0, 1]."""
    x = torch.randn(2, 3, 3)
    for grad in (False, True):
        layer = Recurrent("leaky", 3, 4, num_layers=2, backend=backend)
        layer(x)  # (checked once)
        layer.cells[1].alpha.data.fill_(2.0)
        with torch.set_grad_enabled(grad), pytest.raises(RnnkitError, match=r"leaky alpha must lie in \(0, 1\], "
                                                         r"got 2 in layer.cells\[1\]\.alpha_fixed"):  # fmt: skip
            layer(x[:, :1])  # (one step under no_grad: the stack's fast path)
        layer.cells[1].alpha.data.fill_(0.25)  # (back in range: runs again)
        layer(x)


@pytest.mark.parametrize("backend", [None, "python", "autograd"])
def test_leaky_fixed_alpha_made_a_parameter_is_held_to_0_1(backend):
    """A fixed α made an nn.Parameter (layer.cells[0].alpha_fixed = torch.nn.Parameter(...), to learn α itself rather than
    σ(a)) left the buffers, where the check read it: α = 2, or a step of training that took α past 1, ran in silence
    on every backend; it is held to (0, 1] and the weights' dtype as the buffer is, and an α inside runs and learns."""
    x = torch.randn(2, 3, 3)
    layer = Recurrent("leaky", 3, 4, backend=backend)
    layer.cells[0].alpha_fixed = torch.nn.Parameter(torch.full((4,), 0.5))
    layer(x)[0].sum().backward()
    assert layer.cells[0].alpha_fixed.grad.shape == (4,)
    with torch.no_grad():
        layer.cells[0].alpha_fixed.add_(0.75)  # (an optimizer's step past 1)
    with pytest.raises(
        RnnkitError, match=r"leaky alpha must lie in \(0, 1\], got 1.25 in layer.cells\[0\]\.alpha_fixed"
    ):
        layer(x)
    layer.cells[0].alpha_fixed = torch.nn.Parameter(torch.full((4,), 0.5, dtype=torch.float64))
    with pytest.raises(
        RnnkitError, match=r"cells\[0\]\.alpha_fixed is torch.float64 but the cell's weights are"
    ):
        layer(x)


@pytest.mark.parametrize("cell", ["mut1", "mut2"])
def test_input_projection_of_another_shape_or_dtype_is_refused(cell):
    """MUT1's and MUT2's W_xp (x̃ = W_xp x where D ≠ H) is held to its shape and dtype as the other weights are:
    torch's error from inside the projection's cat ('Sizes of tensors must match except in dimension 0') or
    matmul ('self and mat2 must have the same dtype') before, on every path."""
    x = torch.randn(2, 3, 3)
    for grad in (False, True):
        layer = Recurrent(cell, 3, 4, num_layers=2)
        layer.cells[0].W_xp = torch.nn.Parameter(torch.randn(4, 4))
        with (
            torch.set_grad_enabled(grad),
            pytest.raises(RnnkitError, match=r"cells\[0\]\.W_xp has shape \(4, 4\)"),
        ):
            layer(x)
        layer.cells[0].W_xp = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        with (
            torch.set_grad_enabled(grad),
            pytest.raises(RnnkitError, match=r"cells\[0\]\.W_xp is torch.float64"),
        ):
            layer(x)
        layer.cells[0].W_xp = None
        with torch.set_grad_enabled(grad), pytest.raises(RnnkitError, match=r"cells\[0\]\.W_xp is None"):
            layer(x)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize(("cell", "i", "name"), [("gru", 0, "W_hh"), ("mut3", 1, "W_hz"), ("lstm", 0, "W_xh"),
                                                 ("lstm", 1, "W_xh")])  # fmt: skip
def test_weight_set_to_none_is_refused(backend, cell, i, name):
    """A weight matrix set to None (a bias None is no bias, which every backend runs): the native loop ran on without
    it (NaN or other numbers, no error), the others failed inside ("'NoneType' object has no attribute 't'"), and a
    first layer's W_xh in the input's check ("... has no attribute 'device'"). Said in one line, naming it."""
    layer = Recurrent(cell, 3, 4, num_layers=2, backend=backend)
    setattr(layer.cells[i], name, None)
    for T in (3, 9):
        with pytest.raises(
            RnnkitError, match=rf"cells\[{i}\]\.{name}( \(\w+\))? is None, but this layer's {cell} cell needs"
        ):
            layer(torch.randn(2, T, 3))
        with torch.no_grad(), pytest.raises(RnnkitError, match=rf"cells\[{i}\]\.{name}"):
            layer(torch.randn(2, T, 3))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("name", ["W_hh", "b_hh"])
def test_weight_on_another_device_is_refused(backend, name):
    """A weight replaced by one on another device than the cell's others (a Parameter made without device=): the
    autograd and python loops ran a meta W_hh against CPU data and returned numbers, or failed inside torch ("Tensor
    on device meta is not on the expected device cpu!"); the native loop read its memory as the CPU's."""
    layer = Recurrent("gru", 3, 4, backend=backend)
    cell = layer.cells[0]
    setattr(cell, name, torch.nn.Parameter(getattr(cell, name).detach().to("meta")))
    for T in (3, 9):  # (the native projection from 8 steps on)
        with pytest.raises(
            RnnkitError,
            match=rf"cells\[0\]\.{name} \(\w+\) is on meta but the cell's other weights are on cpu",
        ):
            layer(torch.randn(2, T, 3))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_padding_is_never_read(cell, backend):
    """NaN and inf past a sequence's length change nothing, as with pack_padded_sequence (they reached the
    weight gradients through 0·NaN on every backend, and the outputs on the masking-by-product ones)."""
    torch.manual_seed(0)
    layer = Recurrent(cell, 4, 6, num_layers=2, bidirectional=True, skip_input=True, backend=backend)
    lengths = torch.tensor([9, 4, 2])
    x = torch.randn(3, 9, 4)
    x[1, 4:], x[2, 2:] = 0.0, 0.0
    dirty = x.clone()
    dirty[1, 5, :], dirty[2, 3, 0] = float("nan"), float("inf")
    results = []
    for inp in (x, dirty):
        inp = inp.clone().requires_grad_()
        layer.zero_grad()
        out, state = layer(inp, lengths=lengths)
        (out.sum() + sum(s.sum() for s in state)).backward()
        results.append([out, *state, inp.grad, *(p.grad for p in layer.parameters())])
    for clean, got in zip(*results):
        torch.testing.assert_close(got, clean, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["python", "native"])
def test_relu_gradient_passes_nan_on_as_torch_does(backend):
    """relu' as torch's threshold_backward: a NaN h_t passes dh_t on (native and python turned it into 0:
    5 NaN in dx where torch.nn.RNN has 75, a blow-up half hidden)."""
    results = {}
    for b in (backend, "autograd"):
        torch.manual_seed(5)
        layer = Recurrent("rnn_relu", 5, 17, backend=b)
        with torch.no_grad():
            layer.cells[0].W_hh[0, 1] = float("nan")
        x = torch.randn(3, 9, 5, requires_grad=True)
        out, h = layer(x)
        (out.sum() + h.sum()).backward()
        results[b] = (out.isnan(), x.grad.isnan(), layer.cells[0].W_xh.grad.isnan())
    for got, want in zip(results[backend], results["autograd"]):
        assert torch.equal(got, want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "mut1"])
def test_saturated_gates_have_zero_derivative(cell):
    """Inputs of 1e38 saturate every gate: float32 sigmoid is then exactly 0 or 1 and its derivative 0 (the
    native engine's fast exp stopped at 4e-39, which times the input gave weight gradients of 4 to 12)."""
    grads = {}
    for backend in ("native", "autograd"):
        torch.manual_seed(5)
        layer = Recurrent(cell, 5, 17, backend=backend)
        x = torch.randn(3, 10, 5) * 1e38
        out, _ = layer(x)
        out.sum().backward()
        grads[backend] = layer.cells[0].W_xh.grad
    torch.testing.assert_close(grads["native"], grads["autograd"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float16])
def test_an_input_of_another_dtype_or_device_names_both_conversions(x_dtype):
    """An input of another dtype than the weights was 'input dtype torch.float64 differs from the weights'
    torch.float32; convert one', naming no conversion, where torch.nn.LSTM says 'Convert input:
    input.to(torch.float32), or convert model: model.to(torch.float64)'; both are named now, as torch does (and so for
    a device: the input's x.to(...) or the layer's layer.to(...)), unbatched and by step too; a cond of another dtype
    names cond.to(x), as a state does."""
    layer = Recurrent("lstm", 3, 4)
    name = str(x_dtype)
    want = (
        rf"^input is {name} but the layer's weights are torch.float32; convert the input \(x.to\(torch.float32\)\) "
        rf"or the layer \(layer.to\({name}\)\)$"
    )
    for x in (torch.randn(2, 5, 3, dtype=x_dtype), torch.randn(5, 3, dtype=x_dtype)):
        with pytest.raises(RnnkitError, match=want):
            layer(x)
    with pytest.raises(RnnkitError, match=want):
        layer.step(torch.randn(2, 3, dtype=x_dtype))
    with pytest.raises(
        RnnkitError,
        match=r"^input is on meta but the layer's weights are on cpu; move the input \(x.to\('cpu'\)\) or the "
        r"layer \(layer.to\('meta'\)\)$",
    ):
        layer(torch.randn(2, 5, 3, device="meta"))
    conditioned = Recurrent("lstm", 3, 4, cond_size=2)
    with pytest.raises(RnnkitError, match=r"^cond is torch.float64 on cpu but input is torch.float32 on cpu; convert "
                                          r"one \(cond.to\(x\)\)$"):  # fmt: skip
        conditioned(torch.randn(2, 5, 3), cond=torch.randn(2, 2, dtype=torch.float64))


def test_autocast_still_refuses_float64_in_one_line():
    """autocast casts between float32, float16 and bfloat16; a float64 input stays a one-line error."""
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(RnnkitError, match="input is torch.float64 but the layer's weights are torch.float32"),
    ):
        Recurrent("lstm", 3, 4)(torch.randn(2, 5, 3, dtype=torch.float64))


def test_the_layers_warnings_point_at_the_users_line():
    """A fixed stacklevel pointed inside rnnkit (engine/__init__.py, layers/recurrent.py) for the native backend's
    fallback, raised several calls below the layer's forward (itself under torch.nn.Module's call): each warning
    now names the first line outside rnnkit and torch, the caller's."""

    def centred_step(
        xw_t, state, P
    ):  # (a mean over the units: no per-unit kernel, so the python loop runs it)
        (h_t,), us, cache = CELLS["rnn_tanh"].step(xw_t - xw_t.mean(1, keepdim=True), state, P)
        return (h_t,), us, cache

    class Own(Cell):
        step = staticmethod(centred_step)
        step_backward = staticmethod(CELLS["rnn_tanh"].step_backward)

        def __init__(self, input_size, hidden_size, bias=True):
            super().__init__(input_size, hidden_size, bias)
            self.W_hh = torch.nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.b_hh = torch.nn.Parameter(torch.empty(hidden_size))
            self.reset_parameters()

    with pytest.warns(UserWarning, match="does nothing with num_layers=1") as seen:
        Recurrent("gru", 3, 4, dropout=0.5)
    assert seen[0].filename == __file__
    layer = Recurrent(Own, 3, 4, backend="native")
    with pytest.warns(
        RuntimeWarning, match=r"Own.step uses aten.mean.dim \(a reduction over units\)"
    ) as seen:
        layer(torch.randn(2, 5, 3))
    assert [w.filename for w in seen] == [__file__]


@pytest.mark.parametrize("backend", ["python", "native"])
def test_project_input_replaced_on_the_class_after_a_call_is_followed(backend):
    """Whether a cell's projection is its input_affine is kept per class (_affine_projects): a class whose
    project_input is replaced after a first call gets its own projection from then on, and back again."""
    LSTM = CELLS["lstm"]

    class Mine(LSTM):
        pass

    torch.manual_seed(0)
    layer = Recurrent(Mine, 3, 4, backend=backend)
    x = torch.randn(2, 9, 3)  # T >= 8: the native engine's own projection where it applies
    before = layer(x)[0]
    Mine.project_input = lambda self, xs: LSTM.project_input(self, xs) * 0  # an input term of zero
    try:
        zeroed = layer(x)[0]
        want = layer(torch.zeros_like(x))[0]
        torch.testing.assert_close(zeroed, want)
        assert not torch.allclose(zeroed, before)
    finally:
        del Mine.project_input
    torch.testing.assert_close(layer(x)[0], before)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_final_state_of_one_layer_is_its_own(backend, name):
    """One layer's h_n changed in place changes neither out nor the state given, and carries its gradient."""
    torch.manual_seed(0)
    layer = Recurrent(name, 3, 4, backend=backend)
    x = torch.randn(2, 5, 3, requires_grad=True)
    h0 = torch.randn(1, 2, 4)
    given = (h0, torch.randn(1, 2, 4)) if name == "lstm" else h0
    kept = h0.clone()
    out, state = layer(x, given)
    h = state[0] if name == "lstm" else state
    torch.testing.assert_close(h[0], out[:, -1])
    before = out.detach().clone()
    (g,) = torch.autograd.grad(h.sum(), x, retain_graph=True)
    with torch.no_grad():
        h.add_(1.0)
    torch.testing.assert_close(out.detach(), before)
    torch.testing.assert_close(h0, kept)
    torch.testing.assert_close(torch.autograd.grad(out[:, -1].sum(), x)[0], g)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_final_state_is_a_tensor_of_its_own_as_torchs(backend):
    """h_n.detach_() (truncated BPTT as some char-rnn code writes it) and h_n.mul_(2) before backward work as on
    torch.nn.RNN's h_n: a view of the loop's final state refused the one ('Can't detach views in-place') and, where
    the step saved h_t for its backward, the other ('modified by an inplace operation')."""
    torch.manual_seed(0)
    layer = Recurrent("rnn_tanh", 3, 4, backend=backend)
    x = torch.randn(2, 5, 3)
    _, h = layer(x)
    h.detach_()
    assert not h.requires_grad
    out, h = layer(x, h)
    h.mul_(2)
    out.sum().backward()


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_of_a_native_layer_says_nothing(strict, monkeypatch):
    """backend="native" exported: the program is torch's ops, as the README says, strict or not; a non-strict
    export (FakeTensors) warned 'native backend unavailable (FakeTensor tensors ...)' where a strict one said
    nothing, and a user's export test with warnings as errors failed on it."""
    from rnnkit import engine

    monkeypatch.setattr(engine, "_warned", set())  # (a warning given once before would hide it)
    torch.manual_seed(0)
    layer, x = Recurrent("lstm", 4, 5, backend="native").eval(), torch.randn(2, 6, 4)
    program = torch.export.export(layer, (x,), strict=strict)  # (pytest: a warning is an error)
    torch.testing.assert_close(program.module()(x)[0], layer(x)[0])


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8])
def test_numpy_integer_sizes_build_the_layer_python_ints_build(kind):
    """Sizes from a numpy array or a parameter grid (np.int64(8)) were refused with 'hidden_size must be a positive
    integer, got np.int64(8)', which they are (the energy models take them; CharLM's own check passed them on)."""
    torch.manual_seed(0)
    want = Recurrent("lstm", 3, 8, num_layers=2, proj_size=4, cond_size=2)
    torch.manual_seed(0)
    got = Recurrent("lstm", kind(3), kind(8), num_layers=kind(2), proj_size=kind(4), cond_size=kind(2))
    assert [type(c.hidden_size) for c in got.cells] == [int, int]
    x, cond = torch.randn(2, 5, 3), torch.randn(2, 2)
    torch.testing.assert_close(got(x, cond=cond)[0], want(x, cond=cond)[0], rtol=0, atol=0)
    assert repr(got) == repr(want)


@pytest.mark.parametrize(
    "cell, option, said",
    [
        (
            "gru",
            "alpha",
            r"^the gru cell has no option 'alpha' \(it takes none of its own\); alpha is the leaky",
        ),
        (
            "leaky",
            "forget_bias",
            r"^the leaky cell has no option 'forget_bias' \(it takes alpha, learn_alpha\); ",
        ),
        ("lstm", "bias2", r"^the lstm cell has no option 'bias2' \(it takes forget_bias\)$"),
    ],
)
def test_an_option_of_another_cell_is_named_in_one_line(cell, option, said):
    """Recurrent("gru", 3, 4, alpha=0.3) ended in Python's bare "GRU.__init__() got an unexpected keyword argument
    'alpha'"; it now says which options the cell takes, and whose option it is."""
    with pytest.raises(RnnkitError, match=said):
        Recurrent(cell, 3, 4, **{option: 1})


def _watch_fast_path(monkeypatch) -> list:
    """What each call's _forward_fast returned (None: the full path ran), in a list that grows as the layer is called;
    the test skipped where the native backend, which the fast path needs, is unavailable."""
    from rnnkit.engine import native

    if native.load() is None:
        pytest.skip("the native backend is unavailable here; the fast path is native only")
    taken, fast = [], Recurrent._forward_fast

    def watched(self, x, state):
        taken.append(fast(self, x, state))
        return taken[-1]

    monkeypatch.setattr(Recurrent, "_forward_fast", watched)
    return taken


def _full_path_only(monkeypatch):
    """Recurrent's forward without its no-grad fast path (the path every other call takes)."""
    monkeypatch.setattr(Recurrent, "_forward_fast", lambda self, x, state: None)


@pytest.mark.parametrize("cell", sorted(CELLS) + ["lstmp"])
def test_no_grad_fast_path_gives_the_full_paths_numbers_bit_for_bit(cell, monkeypatch):
    """Under torch.no_grad a plain layer on the native backend takes a short path (one-step sampling loops): the
    same numbers, to the last bit, as the full path, for every cell, 1-2 layers, either layout, T = 1 (one step,
    its projection by F.linear) and T = 9 (the native projection), float32 and float64, the state None or given,
    dropout set but in eval mode."""
    taken = _watch_fast_path(monkeypatch)
    torch.manual_seed(0)
    name, options = ("lstm", {"proj_size": 3}) if cell == "lstmp" else (cell, {})
    for layers, batch_first, T, dtype in [(1, True, 1, torch.float32), (2, False, 1, torch.float64),
                                          (2, True, 9, torch.float32), (1, False, 9, torch.float64)]:  # fmt: skip
        drop = 0.5 if layers > 1 else 0.0
        layer = Recurrent(name, 4, 5, num_layers=layers, batch_first=batch_first, dropout=drop, **options)
        layer = layer.to(dtype).eval()
        x = torch.randn((3, T, 4) if batch_first else (T, 3, 4), dtype=dtype)
        with torch.no_grad():
            got, state = layer(x)
            got2, state2 = layer(x, state)
        assert taken[-2] is not None and taken[-1] is not None
        with monkeypatch.context() as m, torch.no_grad():
            _full_path_only(m)
            want, want_state = layer(x)
            want2, want_state2 = layer(x, want_state)
        for a, b in [(got, want), (got2, want2), (state, want_state), (state2, want_state2)]:
            for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
                assert u.dtype == v.dtype and u.shape == v.shape and u.is_contiguous() == v.is_contiguous()
                assert torch.equal(u, v)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", sorted(CELLS) + ["lstmp"])
def test_no_grad_fast_path_of_a_half_layer_gives_the_full_paths_bits(cell, dtype, monkeypatch):
    """A float16 or bfloat16 layer under torch.no_grad or torch.inference_mode took the full path (a one-step call of
    a bfloat16 1x128 LSTM 3x float32's time): it takes the fast path as float32 does, x, the state and the weights
    cast to float32 once and the results cast back, the full path's bits and dtypes (T = 1: the stack in one engine
    call, MUT1's and MUT2's loop of layer calls; T = 9: the native projection)."""
    taken = _watch_fast_path(monkeypatch)
    torch.manual_seed(0)
    name, options = ("lstm", {"proj_size": 3}) if cell == "lstmp" else (cell, {})
    for layers, batch_first, T, mode in [(2, True, 1, torch.no_grad), (1, False, 1, torch.inference_mode),
                                         (2, False, 9, torch.no_grad), (1, True, 9, torch.inference_mode)]:  # fmt: skip
        layer = Recurrent(name, 5, 5, num_layers=layers, batch_first=batch_first, **options).to(dtype).eval()
        x = torch.randn((3, T, 5) if batch_first else (T, 3, 5)).to(dtype)
        with mode():
            got, state = layer(x)
            got2, state2 = layer(x, state)
        assert taken[-2] is not None and taken[-1] is not None
        with monkeypatch.context() as m, mode():
            _full_path_only(m)
            want, want_state = layer(x)
            want2, want_state2 = layer(x, want_state)
        for a, b in [(got, want), (got2, want2), (state, want_state), (state2, want_state2)]:
            for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
                assert u.dtype == v.dtype == dtype and u.shape == v.shape and u.stride() == v.stride()
                assert torch.equal(u, v)


@pytest.mark.parametrize("cell", sorted(CELLS) + ["lstmp"])
def test_no_grad_short_sequence_runs_the_whole_stack_in_one_engine_call(cell, monkeypatch):
    """A one-step call (T < 8) under torch.no_grad runs all layers in one engine call (native.forward_stack: each
    layer's projection, loop and h_n stacked, without Python between layers), equal bit for bit to the layer
    recording gradients; MUT1, whose projection takes tanh(x̃), and MUT2 with x̃ = x (D = H: its layers above the
    first) keep the loop of layer calls."""
    from rnnkit.engine import native

    if native.load() is None:
        pytest.skip("the native backend is unavailable here; the fast path is native only")
    calls, stack = [], Recurrent._forward_stack

    def watched(self, *args):
        calls.append(stack(self, *args))
        return calls[-1]

    monkeypatch.setattr(Recurrent, "_forward_stack", watched)
    torch.manual_seed(0)
    name, options = ("lstm", {"proj_size": 2}) if cell == "lstmp" else (cell, {})
    for D in (4, 5):
        layer = Recurrent(name, D, 5, num_layers=3, batch_first=True, **options).double()
        x, calls[:] = torch.randn(2, 1, D, dtype=torch.float64), []
        with torch.no_grad():
            got, state = layer(x)
            got2, state2 = layer(x, state)
        want, want_state = layer(x)
        want2, want_state2 = layer(x, want_state)
        one_call = cell not in ("mut1", "mut2")  # (mut2's upper layers: D = H)
        assert [type(c) for c in calls] == ([tuple] * 2 if one_call else [bool] * 2)
        for a, b in [(got, want), (got2, want2), (state, want_state), (state2, want_state2)]:
            for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
                assert u.shape == v.shape and u.is_contiguous() and torch.equal(u, v)


@pytest.mark.parametrize("stack", [True, False])
def test_no_grad_short_sequence_without_bias_gives_the_recording_bits(stack, monkeypatch):
    """Without a bias, xs Wᵀ over a 3-D xs is torch's matmul, which folds it into one GEMM or not by whether W
    requires grad: MUT2's W = [W_z; W_xp; W_h] (D ≠ H) is a cat that requires grad only when recording, and at B = 1
    the no-grad call (the whole stack in one engine call, or the loop of layer calls) gave other last bits."""
    from rnnkit.engine import native

    if native.load() is None:
        pytest.skip("the native backend is unavailable here; the fast path is native only")
    if not stack:
        monkeypatch.setattr(Recurrent, "_forward_stack", lambda self, *args: False)
    for seed in range(20):
        torch.manual_seed(seed)
        layer = Recurrent("mut2", 5, 2, bias=False)  # (one layer: above it D = H, x̃ = x, the loop of calls)
        x, h0 = torch.randn(1, 4, 5), torch.randn(1, 1, 2)
        with torch.no_grad():
            got = layer(x, h0)
        want = layer(x, h0)
        assert all(torch.equal(u, v) for u, v in zip(got, want))


def test_no_grad_fast_path_declines_what_it_does_not_run():
    """The fast path leaves to the full path: dropout drawn in training, a pruned weight (its pre-hook recomputes
    it), another backend, a state of the wrong shape (whose error the full path gives), an input that needs a
    gradient recorded."""
    from rnnkit.engine import native

    if native.load() is None:
        pytest.skip("the native backend is unavailable here; the fast path is native only")
    x = torch.randn(2, 3, 4)
    layer = Recurrent("gru", 4, 5, num_layers=2, dropout=0.5)
    with torch.no_grad():
        assert layer._forward_fast(x, None) is None  # training, dropout between layers
        layer.eval()
        assert layer._forward_fast(x, None) is not None
        with pytest.raises(RnnkitError, match=r"state h must have shape \(num_layers\*dirs, B, H\)"):
            layer(x, torch.zeros(2, 3, 5))
        layer.backend = "python"
        assert layer._forward_fast(x, None) is None
        layer.backend = None
        prune.l1_unstructured(layer.cells[1], "W_hh", amount=0.5)
        assert layer._forward_fast(x, None) is None
        out, _ = layer(x)
    layer.cells[1]._forward_pre_hooks.clear()  # the pruned weight as computed, held still
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], out, rtol=0, atol=0)
    assert layer._forward_fast(x, None) is None  # grad mode: the full path records the graph


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_no_grad_fast_path_leaves_jit_trace_to_its_refusal_without_tracer_warnings():
    """torch.jit.trace under torch.no_grad (as a model is traced for deployment): the fast path compared the traced
    input's sizes before asking whether a trace runs, four TracerWarnings ("Converting a tensor to a Python boolean")
    before the refusal, and under warnings as errors the first of them in its place."""
    layer = Recurrent("gru", 4, 5).eval()
    with torch.no_grad(), pytest.raises(RnnkitError, match=r"torch.jit.trace .*torch.export.export"):
        torch.jit.trace(layer, (torch.randn(2, 3, 4),))


@pytest.mark.parametrize("piece", ["_initial_state", "_check_input", "_project", "_dropout", "_cell_hooks"])
def test_no_grad_fast_path_leaves_a_subclass_its_own_pieces(piece):
    """A subclass of Recurrent that redefines a piece of forward (a learned initial state in _initial_state, say)
    had it skipped under torch.no_grad: the fast path's zeros for h_0, its own projection and so on, other numbers
    in evaluation than in training, in silence. The subclass's pieces run there too."""
    called = []

    def own(self, *args, **kwargs):
        called.append(piece)
        return getattr(Recurrent, piece)(self, *args, **kwargs)

    Own = type("Own", (Recurrent,), {piece: own})
    layer = Own("gru", 4, 5, num_layers=2, dropout=0.5).eval()
    with torch.no_grad():
        layer(torch.randn(2, 3, 4))
    assert called


def test_no_grad_fast_path_leaves_a_tensor_subclass_projection_to_the_python_loop():
    """An input weight of a tensor subclass (a wrapper subclass, a tagged tensor) makes xw one too, which the full
    path's engine runs on the python loop (the native loop reads a plain tensor's memory). The fast path handed it to
    the native loop at T < 8: a plain tensor out where the full path gives the subclass, and for a wrapper subclass
    torch's "data is not allocated yet" from inside the loop."""

    class Tagged(torch.Tensor):
        pass

    layer = Recurrent("gru", 4, 5).eval()
    layer.cells[0].W_xh = torch.nn.Parameter(layer.cells[0].W_xh.detach().as_subclass(Tagged))
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        out, h = layer(x)
    want, want_h = layer(x)
    assert type(out) is type(want) is Tagged
    torch.testing.assert_close(out.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor), rtol=0, atol=0)
    torch.testing.assert_close(h.as_subclass(torch.Tensor), want_h.as_subclass(torch.Tensor), rtol=0, atol=0)


@pytest.mark.parametrize("grad", [True, False])
def test_an_input_weight_of_a_tensor_subclass_runs_on_the_python_loop_at_any_length(grad):
    """At T >= 8 the native projection took a W_xh of a tensor subclass and read its memory: torch's "data is not
    allocated yet" from inside for a wrapper subclass, a plain tensor out for a tagged one (T < 8 gives the
    subclass). It declines such a weight as the engine declines such an xw, and the python loop runs."""
    from torch.testing._internal.two_tensor import TwoTensor

    class Tagged(torch.Tensor):
        pass

    torch.manual_seed(0)
    layer, x = Recurrent("gru", 4, 5), torch.randn(2, 9, 4)
    want, want_h = layer(x)
    w = layer.cells[0].W_xh.detach()
    for weight, kind in (
        (TwoTensor(w.clone(), w.clone()), TwoTensor),
        (w.clone().as_subclass(Tagged), Tagged),
    ):
        layer.cells[0].W_xh = torch.nn.Parameter(weight)
        with torch.set_grad_enabled(grad):
            out, h = layer(x)
        assert type(out) is kind
        got = out.a if kind is TwoTensor else out.as_subclass(torch.Tensor)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("T", [3, 9])
@pytest.mark.parametrize("name", ["W_hh", "b_hh"])
def test_a_recurrent_weight_of_a_tensor_subclass_runs_on_the_python_loop(grad, T, name):
    """A W_hh or b_hh of a tensor subclass went to the native loop, which read its memory (the engine declined such
    an xw, and a W_xh, not the parameters P): torch's "data is not allocated yet" from inside for a wrapper
    subclass, at every length, with and without gradients. native.unsupported declines such a P too, the fast path
    and the native projection with it, and the python loop runs."""
    from torch.testing._internal.two_tensor import TwoTensor

    class Tagged(torch.Tensor):
        pass

    torch.manual_seed(0)
    layer, x = Recurrent("gru", 4, 5), torch.randn(2, T, 4)
    want, want_h = layer(x)
    w = getattr(layer.cells[0], name).detach()
    for weight in (TwoTensor(w.clone(), w.clone()), w.clone().as_subclass(Tagged)):
        setattr(layer.cells[0], name, torch.nn.Parameter(weight))
        with torch.set_grad_enabled(grad):
            out, h = layer(x)
        for got, ref in ((out, want), (h, want_h)):
            got = got.a if isinstance(got, TwoTensor) else got.as_subclass(torch.Tensor)
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("piece", ["_initial_state", "_check_input", "_project", "_dropout", "_cell_hooks"])
def test_no_grad_fast_path_leaves_a_layer_its_own_pieces(piece, monkeypatch):
    """A piece of forward set on the layer itself (monkeypatch or mock.patch.object on an instance: a learned h_0 in
    _initial_state) was skipped under torch.no_grad, where a subclass's is run: the fast path asked the class only,
    and evaluation gave other numbers than training, in silence. The layer's own pieces run there too."""
    called = []
    layer = Recurrent("gru", 4, 5, num_layers=2, dropout=0.5).eval()
    original = getattr(layer, piece)

    def own(*args, **kwargs):
        called.append(piece)
        return original(*args, **kwargs)

    monkeypatch.setattr(layer, piece, own)
    with torch.no_grad():
        layer(torch.randn(2, 3, 4))
    assert called


@pytest.mark.parametrize("method", ["rec_params", "input_affine"])
def test_no_grad_fast_path_asks_a_cell_its_own_parameters(method, monkeypatch):
    """A cell's rec_params or input_affine set on the cell itself (mock.patch.object(layer.cells[0], ...)) was
    passed over under torch.no_grad at T < 8, where the fast path read the weights from the cell's _parameters
    (it asked only the class whether they were Cell's): other numbers in evaluation than in training, in silence."""
    torch.manual_seed(0)
    layer, x = Recurrent("gru", 4, 5).eval(), torch.randn(2, 3, 4)
    cell = layer.cells[0]
    original = getattr(cell, method)
    monkeypatch.setattr(cell, method, lambda: tuple(p if p is None else 0.5 * p for p in original()))
    want, want_h = layer(x)
    with torch.no_grad():
        out, h = layer(x)
    torch.testing.assert_close(out, want.detach(), rtol=0, atol=0)
    torch.testing.assert_close(h, want_h.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("D, H", [(16, 5), (8, 12)])
def test_mut1_evaluation_gives_the_training_forwards_bits_at_one_sequence(backend, D, H):
    """MUT1 with D != H projects x̃ with W = cat(W_xh, W_xp), which records gradients only when training; torch's
    matmul of the 3-D input folded it into one GEMM or not by that, and a batch of one sequence gave other bits
    under no_grad than training (7e-8 in float32, every backend). Its rows are multiplied as one (T·B, D) matrix."""
    torch.manual_seed(0)
    layer = Recurrent("mut1", D, H, backend=backend, dtype=torch.float32)
    x = torch.randn(1, 4, D, dtype=torch.float32)
    with torch.no_grad():
        want, _ = layer(x)
    got, _ = layer(x)
    assert torch.equal(got.detach(), want)


@pytest.mark.parametrize("name, D", [("mut1", 4), ("mut1", 3), ("mut2", 4), ("lstm", 3)])
def test_a_layer_pickled_by_an_older_rnnkit_loads_and_computes_the_same(name, D):
    """A layer saved whole (torch.save, pickle) by an older rnnkit lacks attributes __init__ sets now: the layer's
    proj_size and bias (forward failed 'Recurrent object has no attribute output_size', layer.bias raised), and
    MUT1's tanh_tail and MUT2's input_identity, whose class defaults (0, None) projected without tanh(x̃) or x̃
    (MUT1 with D != H 0.11 off in silence). The old format is made here by leaving them out of the pickle."""
    import pickle

    layer = Recurrent(name, D, 4, num_layers=2, backend="autograd")
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        want = layer(x)[0]
    for attr in ("proj_size", "bias", "_weight_shapes"):
        del layer.__dict__[attr]
    for cell in layer.cells:
        for attr in ("tanh_tail", "input_identity"):
            cell.__dict__.pop(attr, None)
    old = pickle.loads(pickle.dumps(layer))
    assert old.bias is True and old.proj_size == 0
    for backend in ("autograd", "python", "native"):
        old.backend = backend
        with torch.no_grad():
            torch.testing.assert_close(old(x)[0], want)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh", "mut1", "leaky"])
def test_no_grad_fast_path_takes_a_subclass_of_the_same_math(name):
    """A subclass of one of rnnkit's cells that only draws its weights another way (README: an orthogonal W_hh in
    reset_parameters) computes as its base and runs on its native loop; the fast path asked `type(cell)` alone and
    sent it to the full path under torch.no_grad, one step at B = 1 of rnn_tanh 1x32 at 72 µs (the python backend's
    speed, 2.3x torch.nn.RNN's 31 µs) where the base cell took 24 µs. It now takes the fast path with the full path's
    bits, T = 1 (the whole stack in one call) and T = 9; a subclass with a step of its own or a parametrized cell
    still takes the full path."""
    from rnnkit.engine import native

    if native.load() is None:
        pytest.skip("the native backend is unavailable here; the fast path is native only")

    class Ortho(CELLS[name]):
        def reset_parameters(self):
            super().reset_parameters()
            torch.nn.init.orthogonal_(self.W_hh)

    torch.manual_seed(0)
    layer = Recurrent(Ortho, 5, 5, num_layers=2).eval()  # (mut1 D = H: x̃ = x)
    for T in (1, 9):
        x = torch.randn(2, T, 5)
        with torch.no_grad():
            got = layer._forward_fast(x, None)
        assert got is not None
        want = layer(x)
        leaves = torch.utils._pytree.tree_leaves
        assert all(torch.equal(u, v) for u, v in zip(leaves(got), leaves(want), strict=True))

    class Doubled(CELLS[name]):
        step = staticmethod(lambda xw_t, state, P: CELLS[name].step(2 * xw_t, state, P))

    with torch.no_grad():
        assert Recurrent(Doubled, 5, 5)._forward_fast(torch.randn(2, 1, 5), None) is None
        parametrized = Recurrent(Ortho, 5, 5)
        torch.nn.utils.parametrizations.weight_norm(parametrized.cells[0], "W_hh")
        assert parametrized._forward_fast(torch.randn(2, 1, 5), None) is None


def test_numpy_bools_are_switches_as_python_bools_are():
    # np.True_ (an array's element, a sweep's grid) was refused: "bidirectional must be True or False, got np.True_"
    import numpy as np

    layer = Recurrent("leaky", 3, 4, bidirectional=np.True_, bias=np.False_, learn_alpha=np.True_)
    assert layer.bidirectional is True and layer.cells[0].bias is False and layer.cells[0].learn_alpha is True
    with pytest.raises(RnnkitError, match="bidirectional must be True or False, got 'False'"):
        Recurrent("lstm", 3, 4, bidirectional="False")


def test_rnn_relu_with_nonlinearity_tanh_is_refused_not_a_tanh_layer():
    # the relu cell named, torch.nn.RNN's nonlinearity="tanh" beside it: a tanh layer was built in silence
    with pytest.raises(
        RnnkitError, match="names two nonlinearities; Recurrent\\('rnn_tanh', ...\\) for tanh"
    ):
        Recurrent("rnn_relu", 3, 4, nonlinearity="tanh")


def test_from_torch_of_a_torch_cell_names_rnnkit_cell_that_takes_its_weights():
    # "from_torch takes torch.nn.RNN, LSTM or GRU, got GRUCell" said no way on for a model built of torch's cells
    m = torch.nn.GRUCell(3, 4, bias=False)
    with pytest.raises(
        RnnkitError, match=r"got GRUCell, which runs one step: rnnkit.cells.GRU\(3, 4, bias=False\)"
    ):
        Recurrent.from_torch(m)
    cell = CELLS["gru"](3, 4, bias=False)
    cell.load_state_dict(m.state_dict())  # the way the line names
    x = torch.randn(2, 3)
    assert torch.equal(cell(x), m(x))
    with pytest.raises(RnnkitError, match=r"rnnkit.cells.RNNReLU\(3, 4\) is that step"):
        Recurrent.from_torch(torch.nn.RNNCell(3, 4, nonlinearity="relu"))


def test_a_bidirectional_layers_state_dict_into_a_stacked_one_is_refused():
    """cells.1 is layer 0's reverse cell in a bidirectional layer and layer 1 in a stacked one: with D = H a
    bidirectional layer's state_dict loaded into a 2-layer one (and back) in silence, the reverse cell run as layer
    1, where torch.nn's keys don't fit (weight_ih_l0_reverse, weight_ih_l1). It is one line of torch's load error,
    also through torch.save/torch.load(weights_only=True) and strict=False; a load that puts no cell in another's
    place (a unidirectional layer into a bidirectional one's forward cell, strict=False) goes on as before."""
    torch.manual_seed(0)
    bi, stacked = Recurrent("gru", 4, 4, bidirectional=True), Recurrent("gru", 4, 4, num_layers=2)
    buf = io.BytesIO()
    torch.save(bi.state_dict(), buf)
    buf.seek(0)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"\n\tcells.1 in this state_dict is layer 0's reverse cell \(a "
                           r"bidirectional layer's\), where this unidirectional layer's cells.1 is layer 1's; build "
                           r"the layer with bidirectional=True to load it$"):  # fmt: skip
            stacked.load_state_dict(torch.load(buf, weights_only=True), strict=strict)
        buf.seek(0)
    with pytest.raises(
        RuntimeError, match=r"cells.1 in this state_dict is layer 1's cell .* bidirectional=False"
    ):
        bi.load_state_dict(stacked.state_dict())
    one = Recurrent("gru", 4, 4)
    assert bi.load_state_dict(one.state_dict(), strict=False).missing_keys == [f"cells.1.{n}" for n in
                                                                                ("W_xh", "W_hh", "b_xh", "b_hh")]  # fmt: skip
    torch.testing.assert_close(bi.cells[0].W_hh, one.cells[0].W_hh, rtol=0, atol=0)
    Recurrent("gru", 4, 4, bidirectional=True).load_state_dict(bi.state_dict())


def test_a_parametrized_W_xh_is_computed_once_a_forward():
    """The layer's input check read cells[0].W_xh for its device and dtype, computing a parametrized one a second
    time a forward (spectral_norm's power iteration run twice where torch.nn's RNNs run it once)."""
    from torch.nn.utils import parametrize

    class Counted(torch.nn.Module):
        calls = 0

        def forward(self, W):
            Counted.calls += 1
            return 2 * W

    layer = Recurrent("gru", 3, 4, backend="python")
    parametrize.register_parametrization(layer.cells[0], "W_xh", Counted())
    Counted.calls = 0
    layer(torch.randn(2, 5, 3))
    assert Counted.calls == 1


def test_a_state_dict_of_another_cell_kind_is_refused():
    """rnn_tanh and rnn_relu layers have the same keys and shapes: one's state_dict loaded into the other in silence
    (and with strict=False a gru_cho's W_xh, b_xh into a gru), another function run on the weights. A cell records its
    kind in the state_dict's metadata and a load of another kind is one line of torch's load error, through
    torch.save/torch.load(weights_only=True) too; a dict without it (a plain dict, torch.nn's) loads as before."""
    torch.manual_seed(0)
    names = list(CELLS)
    sds = {n: Recurrent(n, 4, 4, num_layers=2).state_dict() for n in names}
    shapes = {n: {k: v.shape for k, v in sd.items()} for n, sd in sds.items()}
    pairs = [(a, b) for a in names for b in names if a != b and shapes[a] == shapes[b]]
    assert ("rnn_tanh", "rnn_relu") in pairs
    for a, b in pairs:
        buf = io.BytesIO()
        torch.save(sds[a], buf)
        buf.seek(0)
        with pytest.raises(RuntimeError, match=rf"\n\tthe weights for cells.0 in this state_dict are a '{a}' cell's, "
                           rf"where cells.0 is a '{b}' cell \(\w+\); build it with cell='{a}' \(rnnkit.cells.\w+\) "
                           r"to load them\n"):  # fmt: skip
            Recurrent(b, 4, 4, num_layers=2).load_state_dict(torch.load(buf, weights_only=True))
    layer = Recurrent("rnn_tanh", 4, 4, num_layers=2)
    layer.load_state_dict(dict(sds["rnn_relu"]))  # (no metadata: not known)
    layer.load_state_dict(Recurrent("rnn_relu", 4, 4, num_layers=2).to_torch().state_dict())
    layer.load_state_dict(sds["rnn_tanh"])
    with pytest.raises(RuntimeError, match=r"are a 'gru_cho' cell's, where cells.0 is a 'gru' cell"):
        Recurrent("gru", 4, 4).load_state_dict(Recurrent("gru_cho", 4, 4).state_dict(), strict=False)
    cell = CELLS["rnn_tanh"](3, 4)
    with pytest.raises(
        RuntimeError, match=r"the weights for this cell in this state_dict are a 'rnn_relu' cell's"
    ):
        cell.load_state_dict(CELLS["rnn_relu"](3, 4).state_dict())
    cell.load_state_dict(torch.nn.RNNCell(3, 4, nonlinearity="relu").state_dict())


@pytest.mark.parametrize(
    "make, name, value",
    [
        (lambda: Recurrent("gru", 0, 4), "input_size", 0),
        (lambda: Recurrent("gru", 3, -1), "hidden_size", -1),
        (lambda: Recurrent("gru", 3, 4, num_layers=0), "num_layers", 0),
        (lambda: CELLS["lstm"](3, 2.5), "hidden_size", 2.5),
        (lambda: CELLS["mut1"](True, 4), "input_size", True),
        (lambda: GradProbe(keep=0), r"GradProbe\(keep=...\) \(records kept\)", 0),
    ],
)
def test_a_bad_size_is_said_as_the_command_line_says_a_bad_count(make, name, value):
    """The library said 'hidden_size must be a positive integer' (layers, cells), 'GradProbe(keep=...) must be a whole
    number of records >= 1', where the command line's one wording for a bad count is 'must be an integer >= 1'."""
    with pytest.raises(
        RnnkitError, match=rf"^{name} must be an integer >= 1(, got| \(or None: all\), got) {value!r}$"
    ):
        make()
