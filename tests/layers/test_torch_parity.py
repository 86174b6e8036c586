"""Parity with torch.nn.RNN/LSTM/GRU: outputs, final states, every parameter and input gradient."""

import warnings

import pytest
import torch
import torch.nn.utils.prune  # (torch.nn.utils does not import it: the tests using it failed when run alone)
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnnkit import Recurrent
from rnnkit.errors import RnnkitError

MODULES = {
    "rnn_tanh": lambda *a, **k: nn.RNN(*a, nonlinearity="tanh", **k),
    "rnn_relu": lambda *a, **k: nn.RNN(*a, nonlinearity="relu", **k),
    "lstm": nn.LSTM,
    "gru": nn.GRU,
}
# torch.nn.LSTM's own note that its proj_size path has no oneDNN kernel (the reference side, not rnnkit): warned once
# per process, so a test running a torch.nn.LSTM with proj_size failed alone (-k) and passed after another had
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def run_torch(m, x, state, lengths):
    if lengths is None:
        return m(x, state)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, st = m(packed, state)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, st


@pytest.mark.parametrize("backend", ["python", "autograd"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "layers,bidir,lengths", [(1, False, None), (2, True, [7, 3, 5, 1]), (2, False, [2, 7, 7, 4])]
)
@pytest.mark.parametrize("name", list(MODULES))
def test_parity(name, layers, bidir, lengths, dtype, backend):
    torch.manual_seed(0)
    B, T, D, H = 4, 7, 5, 6
    ref = MODULES[name](D, H, layers, batch_first=True, bidirectional=bidir).to(dtype)
    ours = Recurrent.from_torch(ref, backend=backend)
    x = torch.randn(B, T, D, dtype=dtype)
    n = layers * (2 if bidir else 1)
    h0 = torch.randn(n, B, H, dtype=dtype)
    state = (h0, torch.randn(n, B, H, dtype=dtype)) if name == "lstm" else h0
    flat = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731

    results = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        si = tuple(s.clone().requires_grad_() for s in flat(state))
        s_in = si if name == "lstm" else si[0]
        if m is ref:
            out, st = run_torch(m, xi, s_in, lengths)
        else:
            out, st = m(xi, s_in, lengths=None if lengths is None else torch.tensor(lengths))
        g = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        loss = (out * g).sum() + sum((s * (k + 2)).sum() for k, s in enumerate(flat(st)))
        params = [p for _, p in (m.named_parameters() if m is ref else ours._torch_names())]
        grads = torch.autograd.grad(loss, [xi, *si, *params])
        results.append((out, *flat(st), *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOL[dtype])


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("name", list(MODULES))
def test_an_inf_recurrent_weight_with_padding_gives_torchs_gradients(name, backend):
    """W_hh[0, 0] = inf, a saturated tanh or sigmoid past it, and variable lengths: native's padded steps ran the
    BPTT GEMM with da = 0, 0 · inf = NaN in the dL/dh carried through the padding, NaN in dx and dh_0 (rnn_tanh:
    10 and 9 where torch.nn's packed run, which takes no padded step, had 6 and 7; rnn_relu's weight gradients too).
    Both directions: in reverse the padding is reached last and its dh is dh_0's."""
    torch.manual_seed(0)
    ref = MODULES[name](2, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        ref.weight_hh_l0[0, 0] = ref.weight_hh_l0_reverse[0, 0] = float("inf")
    ours = Recurrent.from_torch(ref, backend=backend)
    x, lengths = torch.randn(3, 3, 2), [3, 1, 2]
    state = tuple(torch.rand(2, 3, 3) + 0.5 for _ in range(2 if name == "lstm" else 1))
    results = []
    for m in (ref, ours):
        xi, si = x.clone().requires_grad_(), tuple(s.clone().requires_grad_() for s in state)
        s_in = si if name == "lstm" else si[0]
        out, st = run_torch(m, xi, s_in, lengths) if m is ref else m(xi, s_in, lengths=torch.tensor(lengths))
        loss = out.sum() + sum(s.sum() for s in (st if isinstance(st, tuple) else (st,)))
        params = [p for _, p in (m.named_parameters() if m is ref else ours._torch_names())]
        results.append(torch.autograd.grad(loss, [xi, *si, *params]))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("backend", ["python", "native", "autograd"])
def test_gru_with_an_inf_incoming_gradient_gives_the_limit_where_torch_gives_nan(backend):
    """Checked, not a defect: dL/dh_t = +inf at (t, b, j) = (0, 0, 0) gives torch.nn.GRU NaN in dL/d(b_r), dL/d(b_n)
    and what they reach (dx, dW at gate rows r and n), where rnnkit's python and native loops give ±inf. torch's
    h_t = (h_{t-1} - n_t) z_t + n_t differentiates to dn = dh - dh·z = inf - inf; the BPTT's dn = dh (1 - z), the
    same function arranged otherwise, is +inf, the limit: each ±inf entry has the sign of torch's gradient at
    dL/dh_t = 1e200, every finite entry is torch's and a NaN comes only where torch's is NaN (an inf - inf of terms
    of opposite sign in dx = dxw W_xh). The autograd backend differentiates the step as torch does: NaN as torch's.
    (Over 4 seeds, every (t, b, j) and both signs the same holds: in 354 of 864 gradients NaN became ±inf.)"""
    torch.manual_seed(0)
    ref = nn.GRU(2, 3).double()
    x, h_0 = torch.randn(3, 2, 2, dtype=torch.float64), torch.randn(1, 2, 3, dtype=torch.float64)
    dh = torch.randn(3, 2, 3, dtype=torch.float64)

    def grads(m, big):
        g = dh.clone()
        g[0, 0, 0] = big
        xi, hi = x.clone().requires_grad_(), h_0.clone().requires_grad_()
        return torch.autograd.grad((m(xi, hi)[0] * g).sum(), [xi, hi, *m.parameters()])

    got = grads(Recurrent.from_torch(ref, backend=backend), float("inf"))
    want, limit = grads(ref, float("inf")), grads(ref, 1e200)
    for a, w, big in zip(got, want, limit):
        fin, inf = a.isfinite(), a.isinf()
        assert torch.equal(fin, w.isfinite())
        torch.testing.assert_close(a[fin], w[fin], rtol=1e-10, atol=1e-12)
        assert torch.equal(a[inf].sign(), big[inf].sign()) and (big[inf].abs() > 1e150).all()
        assert w[a.isnan()].isnan().all()
    # NaNs in dx, dh_0, dW_xh, dW_hh, db_xh, db_hh: torch's [2, 3, 4, 6, 2, 2]
    assert [int(w.isnan().sum()) for w in want] == [2, 3, 4, 6, 2, 2]
    assert [int(a.isnan().sum()) for a in got] == (
        [2, 3, 4, 6, 2, 2] if backend == "autograd" else [1, 3, 0, 0, 0, 0]
    )


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("batch_first", [True, False])
def test_round_trip_keeps_every_weight(name, batch_first):
    ref = MODULES[name](3, 4, 2, batch_first=batch_first, bidirectional=True)
    back = Recurrent.from_torch(ref).to_torch()
    assert type(back) is type(ref) and back.batch_first == batch_first
    sd_ref, sd_back = ref.state_dict(), back.state_dict()
    assert sd_ref.keys() == sd_back.keys()
    for k in sd_ref:
        assert torch.equal(sd_ref[k], sd_back[k]), k
    x = torch.randn(5, 2, 3) if not batch_first else torch.randn(2, 5, 3)
    torch.testing.assert_close(Recurrent.from_torch(ref, backend="python")(x)[0], ref(x)[0])


@pytest.mark.parametrize("backend", ["python", "native"])
def test_round_trip_keeps_tied_weights(backend):
    """A Parameter shared by two layers or directions stays one Parameter both ways: two copies trained apart
    (and a torch.nn optimizer's state, one entry per Parameter, no longer fit)."""
    torch.manual_seed(0)
    ref = nn.LSTM(4, 4, 2, batch_first=True, bidirectional=True)
    ref.weight_hh_l1 = ref.weight_hh_l0
    ref.bias_ih_l0_reverse = ref.bias_ih_l0
    ours = Recurrent.from_torch(ref, backend=backend)
    assert ours.weight_hh_l1 is ours.weight_hh_l0 and ours.bias_ih_l0_reverse is ours.bias_ih_l0
    assert len(list(ours.parameters())) == len(list(ref.parameters()))
    opts = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in (ref, ours)]
    for _ in range(3):
        x, y = torch.randn(3, 6, 4), torch.randn(3, 6, 8)
        losses = []
        for m, opt in zip((ref, ours), opts):
            opt.zero_grad()
            loss = ((m(x)[0] - y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss)
        torch.testing.assert_close(losses[1], losses[0])
    back = ours.to_torch()
    assert back.weight_hh_l1 is back.weight_hh_l0 and back.bias_ih_l0_reverse is back.bias_ih_l0
    torch.testing.assert_close(back(x)[0], ref(x)[0])


def test_torch_state_dict_loads_into_a_layer_with_tied_weights():
    """torch.nn's state_dict of a tied module (to_torch's of a tied layer) holds the shared weight under both names:
    both load. The second was left under its torch name (the layer's own names of its parameters are one per
    Parameter): "Missing key(s): cells.1.W_hh. Unexpected key(s): weight_hh_l0_reverse"."""
    torch.manual_seed(0)
    ours = Recurrent("gru", 3, 4, bidirectional=True)
    ours.cells[1].W_hh = ours.cells[0].W_hh
    m = ours.to_torch()
    other = Recurrent("gru", 3, 4, bidirectional=True)
    other.cells[1].W_hh = other.cells[0].W_hh
    other.load_state_dict(m.state_dict())
    assert other.cells[1].W_hh is other.cells[0].W_hh
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(other(x)[0], m(x)[0])


def test_a_refused_torch_state_dict_leaves_no_torch_names_for_the_next_load():
    """The refusal of weight_hh_l1 for a reparametrized cells[1] came after cells[0] had been given torch's names for
    its keys, and the next load, of the layer's own keys, named them: "Missing key(s): weight_hh_l0" for cells.0.W_hh."""
    m = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    ours = Recurrent("lstm", 3, 4, num_layers=2)
    torch.nn.utils.parametrizations.weight_norm(ours.cells[1], "W_hh")
    with pytest.raises(
        RnnkitError, match=r"weight_hh_l1.*layer.cells\[1\].W_hh.*computed from other parameters"
    ):
        ours.load_state_dict(m.state_dict())
    own = {k: v for k, v in ours.state_dict().items() if k != "cells.0.W_hh"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "cells.0.W_hh"\.'):
        ours.load_state_dict(own)


@pytest.mark.parametrize("reparametrize", [
    lambda cell: torch.nn.utils.parametrizations.weight_norm(cell, "W_hh"),
    lambda cell: torch.nn.utils.prune.l1_unstructured(cell, "W_hh", 0.5),
])  # fmt: skip
def test_torch_state_dict_into_a_reparametrized_cell_is_one_line(reparametrize):
    """A torch.nn weight for a weight computed from others (a parametrization, pruning) failed with a bare KeyError
    (the computed tensor's id); it is said in one line, naming the cell's weight."""
    m = nn.GRU(3, 4, batch_first=True)
    ours = Recurrent("gru", 3, 4)
    reparametrize(ours.cells[0])
    with pytest.raises(
        RnnkitError, match=r"weight_hh_l0.*layer.cells\[0\].W_hh.*computed from other parameters"
    ):
        ours.load_state_dict(m.state_dict())
    ours = Recurrent("gru", 3, 4)
    reparametrize(ours.cells[0])
    sd = {k: v for k, v in m.state_dict().items() if k != "weight_hh_l0"}
    ours.load_state_dict(sd, strict=False)  # the other weights still load by torch's names
    torch.testing.assert_close(ours.cells[0].W_xh, m.weight_ih_l0)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize(
    "name,kw", [("lstm", {}), ("gru", {"bias": False}), ("rnn_relu", {}), ("lstm", {"proj_size": 2})]
)
def test_weights_by_torch_name(name, kw):
    """Code written for torch.nn reaches the weights by torch's names: layer.weight_hh_l0, bias_ih_l1_reverse,
    all_weights, bias; they are this layer's own parameters, so initialising them in place initialises it."""
    ref = MODULES[name](3, 4, 2, batch_first=True, bidirectional=True, **kw)
    ours = Recurrent.from_torch(ref)
    assert ours.bias == ref.bias
    for n, p in ref.named_parameters():
        assert torch.equal(getattr(ours, n), p), n
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [
        [w.shape for w in ws] for ws in ref.all_weights
    ]
    assert ours.weight_hh_l1_reverse is ours.cells[3].W_hh
    assert (ours.mode, ours._flat_weights_names, ours._all_weights) == (
        ref.mode, ref._flat_weights_names, ref._all_weights)  # fmt: skip
    # torch.nn.RNN's nonlinearity ('relu', 'tanh'), which torch.nn.LSTM and GRU lack (an AttributeError before)
    assert getattr(ours, "nonlinearity", None) == getattr(ref, "nonlinearity", None)
    assert all(
        a is getattr(ours, n) for a, n in zip(ours._flat_weights, ref._flat_weights_names, strict=True)
    )
    assert set(ref._flat_weights_names) <= set(dir(ours))
    with torch.no_grad():
        nn.init.orthogonal_(ours.weight_hh_l0)
        ref.weight_hh_l0.copy_(ours.cells[0].W_hh)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    ours.weight_ih_l1 = nn.Parameter(torch.zeros_like(ours.weight_ih_l1))  # replaces, as in torch.nn
    ref.weight_ih_l1 = nn.Parameter(torch.zeros_like(ref.weight_ih_l1))
    assert ours.cells[2].W_xh is ours.weight_ih_l1 and "weight_ih_l1" not in dict(ours.named_parameters())
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    with pytest.raises(AttributeError, match="weight_hh_l2"):
        _ = ours.weight_hh_l2
    mut1 = Recurrent("mut1", 3, 4)
    with pytest.raises(AttributeError, match="weight_hh_l0"):  # torch has no such cell: no torch names
        _ = mut1.weight_hh_l0
    with pytest.raises(RnnkitError, match="torch.nn has no mut1 cell"):
        _ = mut1.all_weights
    assert (mut1.mode, mut1._flat_weights, mut1._all_weights) == (None, [], [])


@pytest.mark.parametrize("name", ["mut1", "leaky", "gru_cho"])
def test_all_weights_of_a_cell_torch_lacks_is_an_attribute_error_too(name):
    """hasattr(layer, "all_weights"), getattr with a default and inspect.getmembers (which read every name dir()
    lists) ask by AttributeError: a layer of a cell torch.nn lacks raised its RnnkitError out of all three."""
    import inspect

    layer = Recurrent(name, 3, 4)
    assert not hasattr(layer, "all_weights") and getattr(layer, "all_weights", None) is None
    assert "all_weights" not in dict(inspect.getmembers(layer))
    with pytest.raises(RnnkitError, match=f"torch.nn has no {name} cell .*named_parameters"):
        _ = layer.all_weights


@pytest.mark.parametrize("name", ["leaky", "mut1"])
def test_torch_weight_names_of_a_cell_torch_lacks_are_one_line(name):
    """layer.weight_hh_l0 (code written for torch.nn: nn.init.orthogonal_(rnn.weight_hh_l0)) of a leaky or mut1 layer
    was the bare "'Recurrent' object has no attribute 'weight_hh_l0'"; it says torch.nn has no such cell and where
    the weights are, still an AttributeError to hasattr."""
    layer = Recurrent(name, 3, 4, bidirectional=True)
    for attr in ("weight_hh_l0", "weight_ih_l0_reverse", "bias_hh_l0"):
        assert not hasattr(layer, attr)
        with pytest.raises(
            RnnkitError, match=rf"^{attr} is torch.nn's name .* no {name} cell: .*cells\[0\]\.W_hh"
        ):
            getattr(layer, attr)
    with pytest.raises(AttributeError, match="no attribute 'weight_xx_l0'$"):
        _ = layer.weight_xx_l0


def test_bias_false_round_trip():
    ref = nn.GRU(3, 4, bias=False, batch_first=True)
    ours = Recurrent.from_torch(ref, backend="python")
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    assert set(ours.to_torch().state_dict()) == set(ref.state_dict())


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence_as_torch(kind, batch_first, enforce_sorted):
    """A PackedSequence in gives a PackedSequence out, in the same order, as torch.nn's RNNs: outputs, final
    states and input gradients equal in float64 (state in the batch's original order, as torch's)."""
    torch.manual_seed(0)
    ref = kind(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first).double()
    ours = Recurrent.from_torch(ref)
    lengths = torch.tensor([7, 5, 5, 2]) if enforce_sorted else torch.tensor([5, 7, 2, 5])
    x = torch.randn(*((4, 7) if batch_first else (7, 4)), 4, dtype=torch.float64)
    h0 = torch.randn(4, 4, 5, dtype=torch.float64)
    results = []
    for m in (ours, ref):
        xx = x.clone().requires_grad_()
        packed = pack_padded_sequence(xx, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
        out, state = m(packed, (h0, 0.5 * h0) if kind is nn.LSTM else h0)
        h = state[0] if isinstance(state, tuple) else state
        (out.data.pow(2).sum() + h.pow(3).sum()).backward()
        results.append((out, h, xx.grad))
    (out, h, g), (ref_out, ref_h, ref_g) = results
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
    for a, b in (
        (out.sorted_indices, ref_out.sorted_indices),
        (out.unsorted_indices, ref_out.unsorted_indices),
    ):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in ((out.data, ref_out.data), (h, ref_h), (g, ref_g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_packed_sequence_and_lengths_is_a_clear_error():
    packed = pack_padded_sequence(torch.randn(2, 3, 4), torch.tensor([3, 2]), batch_first=True)
    with pytest.raises(RnnkitError, match="not both"):
        Recurrent("gru", 4, 5)(packed, lengths=torch.tensor([3, 2]))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("sizes", [(4,), (4, 2)])
def test_a_packed_sequence_of_scalar_steps_is_one_line(batch_first, sizes):
    """pack_sequence of 1-D sequences (one number a step, the feature axis left out) packs data of one dimension,
    which torch.nn refuses ('input must have 2 dimensions, got 1'); it was padded and read as one unbatched
    sequence, refused for the wrong reasons ('lengths is one number', 'input size is 4 but the layer expects 1')
    or failing inside torch's pack_padded_sequence ('Expected `len(lengths)` to be equal to batch_size')."""
    from torch.nn.utils.rnn import pack_sequence

    packed = pack_sequence([torch.randn(n) for n in sizes])
    layer = Recurrent("gru", 1, 5, batch_first=batch_first)
    with pytest.raises(RnnkitError, match=r"data of shape \(sum of the lengths, D\), got shape \(\d+,\)"):
        layer(packed)
    x = pack_sequence([torch.randn(n, 1) for n in sizes])  # what it says to give
    assert layer(x)[0].data.shape == (sum(sizes), 5)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
def test_unbatched_sequence_as_torch(kind, batch_first):
    """One sequence (T, D) without a batch dimension, as torch.nn's RNNs take it: out (T, H·dirs), state
    tensors (layers·dirs, H), equal to torch's, gradients too."""
    torch.manual_seed(0)
    ref = kind(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first).double()
    ours = Recurrent.from_torch(ref)
    ours.flatten_parameters()  # what code written for torch.nn calls: a no-op here
    x, h0 = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    results = []
    for m in (ours, ref):
        xx = x.clone().requires_grad_()
        out, state = m(xx, (h0, -h0) if kind is nn.LSTM else h0)
        h = state[0] if isinstance(state, tuple) else state
        (out.pow(2).sum() + h.sum()).backward()
        results.append((out, h, xx.grad))
    for a, b in zip(*results):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(
        RnnkitError, match=r"for one unbatched sequence \(T, D\) the state must be \(num_layers\*dirs, H\)"
    ):
        ours(x, torch.zeros(4, 1, 4, dtype=torch.float64) if kind is nn.GRU else (h0[:, None], h0[:, None]))


@pytest.mark.parametrize("backend", ["autograd", "python", None])
@pytest.mark.parametrize("batch_first", [True, False])
def test_empty_batch_as_torch(backend, batch_first):
    """A batch of no sequences (the tail of a filtered batch) runs as in torch.nn: empty outputs and states of
    the right shapes, gradients of zero; no time steps stays an error."""
    ref = nn.LSTM(3, 4, 2, bidirectional=True, batch_first=batch_first)
    ours = Recurrent.from_torch(ref, backend=backend)
    x = torch.randn((0, 5, 3) if batch_first else (5, 0, 3))
    for m in (ref, ours):
        m.zero_grad()
        xx = x.clone().requires_grad_()
        out, (h, c) = m(xx) if m is ref else m(xx, lengths=torch.zeros(0, dtype=torch.long))
        assert out.shape == ((0, 5, 8) if batch_first else (5, 0, 8)) and h.shape == c.shape == (4, 0, 4)
        (out.sum() + h.sum()).backward()
        assert xx.grad.shape == x.shape and all(not p.grad.any() for p in m.parameters())
    with pytest.raises(RnnkitError, match="no time steps"):
        ours(torch.randn((2, 0, 3) if batch_first else (0, 2, 3)))


def test_state_by_torch_name_hx():
    """Code written for torch.nn passes the state as hx=: the same result as state=; both is an error."""
    torch.manual_seed(0)
    ref = nn.GRU(3, 4, batch_first=True)
    ours = Recurrent.from_torch(ref)
    x, h0 = torch.randn(2, 5, 3), torch.randn(1, 2, 4)
    torch.testing.assert_close(ours(x, hx=h0)[0], ref(x, hx=h0)[0])
    with pytest.raises(RnnkitError, match="not both"):
        ours(x, h0, hx=h0)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_same_seed_same_dropout_on_every_backend(name, batch_first):
    """In training mode a seed gives the same numbers on every backend, dropout after the layer included: the
    output has one layout on all of them (batch-first: contiguous (B, T, H), which native writes directly), and
    dropout fills its mask in memory order. Native's batch-first output was contiguous and python's a
    transposed view, so a dropout after it drew other positions (0.4 off, training runs 0.02 apart in loss).
    The dropout between layers draws its masks as torch.nn's does."""
    torch.manual_seed(0)
    m = MODULES[name](8, 16, 2, batch_first=batch_first, dropout=0.3)
    x = torch.randn(3, 9, 8) if batch_first else torch.randn(9, 3, 8)  # 9 steps: the native projection too
    torch.manual_seed(5)
    want = m(x)[0]
    outs = {}
    for backend in (None, "python", "autograd"):  # None: native where it builds
        layer = Recurrent.from_torch(m, backend=backend)
        torch.manual_seed(5)
        out = layer(x)[0]
        torch.testing.assert_close(out, want, **TOL[torch.float32])  # inter-layer dropout as torch.nn's
        outs[backend] = (out.stride(), torch.nn.functional.dropout(out, 0.5))
    for backend in (None, "python"):
        assert outs[backend][0] == outs["autograd"][0]
        torch.testing.assert_close(outs[backend][1], outs["autograd"][1], **TOL[torch.float32])


@pytest.mark.parametrize(
    "reparametrize, how",
    [
        (lambda m: torch.nn.utils.parametrizations.weight_norm(m, "weight_hh_l0"), "remove_parametrizations"),
        (lambda m: torch.nn.utils.parametrizations.orthogonal(m, "weight_hh_l0"), "remove_parametrizations"),
        (lambda m: torch.nn.utils.weight_norm(m, "weight_hh_l0"), "remove_weight_norm"),
        (lambda m: torch.nn.utils.spectral_norm(m, "weight_hh_l0"), "remove_spectral_norm"),
        (lambda m: torch.nn.utils.prune.l1_unstructured(m, "weight_hh_l0", 0.5), r"prune.remove"),
    ],
)
def test_from_torch_refuses_a_weight_computed_from_others(reparametrize, how):
    """A weight_norm'ed or orthogonal W_hh was copied frozen (requires_grad False: never trained), and the old
    weight_norm's as last computed (0.086 off after an optimizer step with no forward since)."""
    m = torch.nn.GRU(4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old weight_norm
        reparametrize(m)
    with pytest.raises(RnnkitError, match=f"weight_hh_l0 is computed from other parameters.*{how}"):
        Recurrent.from_torch(m)


OLD_STYLE = {  # torch's hook-based reparametrizations: a forward pre-hook computes the weight on every call
    "prune": lambda m, name: torch.nn.utils.prune.l1_unstructured(m, name, 0.5),
    "spectral_norm": lambda m, name: torch.nn.utils.spectral_norm(m, name),
    "weight_norm": lambda m, name: torch.nn.utils.weight_norm(m, name),
}


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("kind", list(OLD_STYLE))
def test_hook_based_reparametrization_of_a_cell_trains_as_on_torch(kind, backend):
    """The layer never calls its cells as modules, so their forward pre-hooks never ran: a spectral_norm'ed W_hh
    stayed as first computed (norm 1.4, W_hh_orig never trained), and a pruned one failed at the second backward
    ("backward through the graph a second time"). They run once per layer call now: the same training as
    torch.nn.LSTM with the same hook on weight_hh_l0."""
    torch.manual_seed(0)
    x, ref = torch.randn(2, 5, 3, dtype=torch.float64), nn.LSTM(3, 4, batch_first=True).double()
    layer = Recurrent.from_torch(ref, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old weight_norm
        OLD_STYLE[kind](layer.cells[0], "W_hh")
        OLD_STYLE[kind](ref, "weight_hh_l0")
    if kind == "spectral_norm":  # the same power-iteration start
        with torch.no_grad():
            layer.cells[0].W_hh_u.copy_(ref.weight_hh_l0_u), layer.cells[0].W_hh_v.copy_(ref.weight_hh_l0_v)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (layer, ref)]
    for _ in range(3):
        for opt, m in zip(opts, (layer, ref)):
            opt.zero_grad()
            m(x)[0].pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(layer(x)[0], ref(x)[0], **TOL[torch.float64])
    torch.testing.assert_close(layer.cells[0].W_hh, ref.weight_hh_l0, **TOL[torch.float64])  # computed anew


@pytest.mark.parametrize("kind", list(OLD_STYLE))
def test_hook_based_utility_on_a_torch_name_says_which_cell_to_give_it(kind):
    """prune(layer, "weight_hh_l0") and the old weight_norm / spectral_norm raised a bare KeyError: 'weight_hh_l0'
    from inside torch (prune after registering weight_hh_l0_orig on the layer); the torch names are names for
    the cells' parameters, and the error now says which one to give the utility."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    before = dict(layer.named_parameters())
    with warnings.catch_warnings(), pytest.raises(KeyError, match=r"\(layer.cells\[3\], 'W_hh'\)"):
        warnings.simplefilter("ignore", FutureWarning)
        OLD_STYLE[kind](layer, "weight_hh_l1_reverse")
    assert dict(layer.named_parameters()) == before and not layer._forward_pre_hooks


@pytest.mark.parametrize(("cell", "D"), [("lstm", 4), ("gru_cho", 4), ("mut1", 4), ("mut1", 3), ("mut2", 3)])
def test_parametrized_cell_runs_on_the_native_loop(cell, D):
    """parametrizations.weight_norm on layer.cells[0] makes it an instance of ParametrizedLSTM, a class torch makes:
    the native loop took it for a cell of one's own, the default backend ran python (2-3x slower) in silence and
    backend="native" warned that it was not one of rnnkit's cells. The same numbers as autograd's now. MUT1 and MUT2
    with D ≠ H (their projection [W_xh; W_xp]) were refused from 8 steps on: "layer.cells[0].W_xh, as its
    parametrization computes it, has shape (12, 3), but this layer's mut1 cell needs (8, 3)", the whole projection
    held to W_xh's shape."""
    from torch.nn.utils import parametrizations

    x, grads = torch.randn(2, 9, D, dtype=torch.float64, requires_grad=True), {}
    for backend in ("autograd", "native"):
        torch.manual_seed(0)
        layer = Recurrent(cell, D, 4, backend=backend).double()
        parametrizations.weight_norm(layer.cells[0], "W_hh")
        parametrizations.weight_norm(layer.cells[0], "W_xh")
        out = layer(x)[0]  # (a warning fails the test: pytest's filterwarnings = error)
        assert backend != "native" or type(out.grad_fn).__name__ == "NativeRecurrenceBackward"
        grads[backend] = (out, *torch.autograd.grad(out.square().sum(), [x, *layer.parameters()]))
    for ours, ref in zip(grads["native"], grads["autograd"]):
        torch.testing.assert_close(ours, ref, **TOL[torch.float64])


@pytest.mark.parametrize(
    "register",
    [
        lambda m, name: torch.nn.utils.parametrizations.weight_norm(m, name),
        lambda m, name: torch.nn.utils.parametrizations.orthogonal(m, name),
        lambda m, name: torch.nn.utils.parametrize.register_parametrization(m, name, nn.Identity()),
    ],
)
def test_parametrization_on_a_torch_name_says_which_cell_to_give_it(register):
    """parametrizations.weight_norm(layer, "weight_hh_l0"), as code written for torch.nn.LSTM does it, raised torch's
    ValueError with the whole layer's repr in it and no word of the cell."""
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    before = dict(layer.named_parameters())
    with pytest.raises(
        ValueError, match=r"^weight_hh_l1_reverse is torch.nn's name .*\(layer.cells\[3\], 'W_hh'\)$"
    ):
        register(layer, "weight_hh_l1_reverse")
    assert dict(layer.named_parameters()) == before and not torch.nn.utils.parametrize.is_parametrized(layer)
    assert (
        "cells.0.W_hh" not in layer._parameters and "weight_hh_l0" not in layer._parameters
    )  # elsewhere: no


def test_forward_hook_on_a_cell_is_refused_and_the_layer_keeps_its_own():
    layer, x = Recurrent("gru", 3, 4), torch.randn(2, 5, 3)
    seen = []
    layer.register_forward_hook(lambda m, args, out: seen.append(out[0].shape))
    layer(x)
    assert seen == [(2, 5, 4)]
    handle = layer.cells[0].register_forward_hook(lambda *a: None)
    with pytest.raises(
        RnnkitError, match=r"cells\[0\] has a forward or backward hook.*hook the layer itself"
    ):
        layer(x)
    handle.remove()
    layer(x)


@pytest.mark.parametrize("with_kwargs", [False, True])
def test_a_cell_pre_hook_that_returns_a_new_input_is_refused_not_dropped(with_kwargs):
    """A forward pre-hook on a cell that returned a new input ((2 * x,): what torch gives a module in its input's
    place) ran, and the layer computed from x in silence, where the same hook on the cell called alone doubles x.
    It is one line now; a pre-hook returning None (pruning's) or its arguments as they were still runs."""
    layer, x = Recurrent("gru", 3, 4), torch.randn(2, 5, 3)
    ref = layer(x)[0]
    if with_kwargs:
        same = layer.cells[0].register_forward_pre_hook(lambda m, args, kw: (args, kw), with_kwargs=True)
        new = layer.cells[0].register_forward_pre_hook(
            lambda m, args, kw: ((2 * args[0],), kw), with_kwargs=True
        )
    else:
        same = layer.cells[0].register_forward_pre_hook(lambda m, args: args)
        new = layer.cells[0].register_forward_pre_hook(lambda m, args: (2 * args[0],))
    with pytest.raises(RnnkitError, match=r"cells\[0\] has a forward pre-hook that returns a new input.*"
                       r"pre-hook on the layer itself"):  # fmt: skip
        layer(x)
    new.remove()
    torch.testing.assert_close(layer(x)[0], ref, rtol=0, atol=0)
    same.remove()


def test_to_torch_refuses_a_reparametrized_cell():
    layer = Recurrent("lstm", 3, 4)
    torch.nn.utils.prune.l1_unstructured(layer.cells[0], "W_hh", 0.5)
    with pytest.raises(
        RnnkitError, match=r"to_torch: layer.cells\[0\].W_hh is computed.*prune.remove\(layer"
    ):
        layer.to_torch()


def test_the_layers_parameter_dict_survives_copies():
    import copy
    import io

    layer = Recurrent("lstm", 3, 4)
    buf = io.BytesIO()
    torch.save(layer, buf)
    for other in (copy.deepcopy(layer), torch.load(io.BytesIO(buf.getvalue()), weights_only=False)):
        assert other._parameters.owner is other
        with pytest.raises(KeyError, match="cells"):
            other._parameters["weight_hh_l0"]
        with pytest.raises(KeyError) as e:
            other._parameters["nothing"]
        assert type(e.value) is KeyError


def test_a_saved_layer_loads_with_weights_only_as_torchs_rnns_do():
    """torch.load(weights_only=True) of a saved torch.nn.LSTM takes torch.serialization.safe_globals([nn.LSTM]); a
    saved layer could not be loaded so whatever was allowed: its load_state_dict pre-hook, a bound method in the
    module, pickles as getattr ("Unsupported global: GLOBAL getattr"), and its parameter dict was a class of its own
    to allow too. Allowing the layer's own classes (its cells', Linear's of cond) is enough now."""
    import io

    from rnnkit.cells import LSTM

    layer = Recurrent("lstm", 3, 4, 2, cond_size=2, cond_mode="both")
    buf = io.BytesIO()
    torch.save(layer, buf)
    with torch.serialization.safe_globals([Recurrent, nn.ModuleList, LSTM, nn.Linear]):
        other = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    x, v = torch.randn(2, 5, 3), torch.randn(2, 2)
    torch.testing.assert_close(other(x, cond=v), layer(x, cond=v))
    assert other._parameters.owner is other
    other.load_state_dict(Recurrent("lstm", 3, 4, 2, cond_size=2, cond_mode="both").state_dict())
    torch_layer = Recurrent("gru", 3, 4, batch_first=False)
    torch_layer.load_state_dict(nn.GRU(3, 4).state_dict())  # torch.nn's keys still renamed on load


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("rnn_tanh", {}),
        ("gru", {}),
        ("lstm", {"forget_bias": None}),
        ("lstm", {"forget_bias": None, "proj_size": 3}),
    ],
)
def test_parameters_in_torch_order_so_the_same_seed_gives_torchs_weights(kind, kw):
    """parameters() lists weight_ih, weight_hh, bias_ih, bias_hh per layer and direction as torch.nn does
    (W_xh, b_xh, W_hh, b_hh before): vector_to_parameters(parameters_to_vector(torch's), ours) scrambled the
    weights silently. The same order also draws the same initial weights for a seed (an LSTM's forget bias
    aside: 1.0 by default here, torch's with forget_bias=None); with proj_size too, whose cell drew its weights
    twice."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    torch.manual_seed(3)
    layer = Recurrent(kind, 5, 7, num_layers=2, bidirectional=True, **kw)
    torch.manual_seed(3)
    torch_kw = {"proj_size": kw["proj_size"]} if "proj_size" in kw else {}
    ref = MODULES[kind](5, 7, 2, batch_first=True, bidirectional=True, **torch_kw)
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), ref.parameters()))
    assert [p.shape for p in layer.parameters()] == [p.shape for p in ref.parameters()]
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    vector_to_parameters(parameters_to_vector(ref.parameters()), layer.parameters())
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(layer(x)[0], ref(x)[0], **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind, kw", [("gru", {}), ("lstm", {"forget_bias": None, "proj_size": 3})])
def test_dtype_factory_argument_draws_torchs_weights_for_a_seed(kind, kw, dtype):
    """dtype= as torch.nn's factory argument: the weights drawn in that dtype, as torch.nn.GRU(..., dtype=...)
    draws them for the same seed, and the generator left where torch.nn leaves it. They were drawn in float32 and
    converted: other numbers than torch.nn's (float64's off by up to 0.9, each a float32 value)."""
    torch.manual_seed(3)
    layer = Recurrent(kind, 5, 7, num_layers=2, bidirectional=True, dtype=dtype, **kw)
    after = torch.rand(3)
    torch.manual_seed(3)
    torch_kw = {"proj_size": kw["proj_size"]} if "proj_size" in kw else {}
    ref = MODULES[kind](5, 7, 2, batch_first=True, bidirectional=True, dtype=dtype, **torch_kw)
    assert torch.equal(torch.rand(3), after)
    for a, b in zip(layer.parameters(), ref.parameters(), strict=True):
        assert a.dtype == dtype and torch.equal(a, b)


def test_from_torch_reset_parameters_draws_as_torch():
    """A layer from torch.nn.LSTM draws its weights as torch.nn does (the forget bias too, not 1.0)."""
    m = nn.LSTM(3, 5, 2)
    layer = Recurrent.from_torch(m)
    torch.manual_seed(0)
    m.reset_parameters()
    torch.manual_seed(0)
    layer.reset_parameters()
    for name, ours in layer._torch_names():
        torch.testing.assert_close(ours, getattr(m, name), rtol=0, atol=0)


def test_a_plain_tensor_for_a_torch_named_weight_is_refused_as_torch_refuses_it():
    """layer.weight_hh_l0 = torch.randn(...) took the weight's place as a plain tensor, which no optimizer
    trains (torch.nn.LSTM raises); functional_call with torch.nn's keys still puts plain tensors there."""
    with pytest.raises(TypeError, match="cannot assign 'torch.FloatTensor' as parameter 'weight_hh_l0'"):
        nn.LSTM(3, 4).weight_hh_l0 = torch.randn(16, 4)  # (torch's own: and that module is then out of step)
    layer, m = Recurrent("lstm", 3, 4), nn.LSTM(3, 4, batch_first=True)
    with pytest.raises(TypeError, match="cannot assign 'torch.FloatTensor' as parameter 'weight_hh_l0'"):
        layer.weight_hh_l0 = torch.randn(16, 4)
    x = torch.randn(2, 5, 3)
    out = torch.func.functional_call(layer, dict(m.named_parameters()), (x,))[0]
    torch.testing.assert_close(out, m(x)[0])
    assert all(isinstance(p, nn.Parameter) for p in layer.parameters())


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_dropout_draws_as_torch(enforce_sorted, batch_first):
    """Dropout between layers of a PackedSequence in train mode: torch.nn draws it over the packed outputs, so the
    same seed gives its masks (outputs and gradients) and leaves the generator where torch.nn leaves it (drawn
    over the padded outputs before: 0.08 off, and every later draw shifted)."""
    torch.manual_seed(0)
    m = nn.LSTM(4, 5, 3, dropout=0.5, batch_first=batch_first).double()
    layer = Recurrent.from_torch(m)
    lengths = torch.tensor([7, 7, 5, 3] if enforce_sorted else [3, 7, 5, 7])
    x = torch.randn(4, 7, 4, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    outs = []
    for model in (m, layer):
        torch.manual_seed(5)
        out = model(packed)[0].data
        out.pow(2).sum().backward()
        outs.append((out, torch.rand(3), [p.grad for p in model.parameters()]))
    (a, ra, ga), (b, rb, gb) = outs
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert torch.equal(ra, rb)
    for g1, g2 in zip(ga, gb):
        torch.testing.assert_close(g2, g1, rtol=1e-10, atol=1e-12)


def test_to_torch_refuses_a_subclass_that_computes_another_function():
    """A subclass of one of torch's cells with a step of its own keeps the base's torch_mode: to_torch gave a
    torch.nn.RNN that computes the base's function, 0.4 off, in silence. One that only draws its weights otherwise
    (a constant of torch's cell's function) still converts."""
    from rnnkit.cells import GRU, RNNTanh

    class Doubled(RNNTanh):
        @staticmethod
        def step(xw_t, state, P):
            (h_t,), cache, us = RNNTanh.step(2 * xw_t, state, P)
            return (h_t,), cache, us

    with pytest.raises(
        RnnkitError, match=r"to_torch: Doubled redefines step of rnnkit's RNNTanh.*torch.nn.RNN"
    ):
        Recurrent(Doubled, 3, 4, backend="autograd").to_torch()

    class Ortho(GRU):
        def reset_parameters(self):
            super().reset_parameters()
            nn.init.orthogonal_(self.W_hh)

    layer = Recurrent(Ortho, 3, 4)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(layer.to_torch()(x)[0], layer(x)[0])


def test_mode_and_nonlinearity_agree_with_to_torch():
    """A subclass of RNNTanh with a step of its own, which to_torch refuses (torch.nn.RNN computes another
    function), was still mode 'RNN_TANH' and nonlinearity 'tanh': code written for torch.nn took it for torch's RNN.
    It is mode None and has no nonlinearity, as a cell torch.nn lacks; one that only draws its weights otherwise
    keeps them."""
    from rnnkit.cells import RNNReLU, RNNTanh

    class Doubled(RNNTanh):
        @staticmethod
        def step(xw_t, state, P):
            return RNNTanh.step(2 * xw_t, state, P)

    class Ortho(RNNReLU):
        def reset_parameters(self):
            super().reset_parameters()
            nn.init.orthogonal_(self.W_hh)

    doubled, ortho = Recurrent(Doubled, 3, 4), Recurrent(Ortho, 3, 4)
    assert doubled.mode is None and not hasattr(doubled, "nonlinearity")
    assert (ortho.mode, ortho.nonlinearity) == ("RNN_RELU", "relu") == (ortho.to_torch().mode, "relu")


def test_from_torch_names_what_it_was_given_and_what_to_give():
    """A module that is no torch.nn RNN but has the same class name (torch.ao's dynamically quantized LSTM, another
    library's) was refused with 'takes torch.nn.RNN, LSTM or GRU, got LSTM'; a wrapper (torch.compile's
    OptimizedModule, DataParallel) with no word of the module inside."""

    class LSTM(nn.Module):
        pass

    with pytest.raises(RnnkitError, match=r"got \S*test_torch_parity\.LSTM$"):
        Recurrent.from_torch(LSTM())
    with pytest.raises(RnnkitError, match=r"got \S*OptimizedModule; give the module it wraps, m\._orig_mod$"):
        Recurrent.from_torch(torch.compile(nn.GRU(3, 4), backend="eager"))
    with pytest.raises(RnnkitError, match=r"got DataParallel; give the module it wraps, m\.module$"):
        Recurrent.from_torch(nn.DataParallel(nn.GRU(3, 4)))
    with pytest.raises(RnnkitError, match=r"got Sequential$"):
        Recurrent.from_torch(nn.Sequential(nn.GRU(3, 4)))
    # the class itself, not a module of it, was 'got builtins.type'
    with pytest.raises(
        RnnkitError, match=r"got the class torch\.nn\.LSTM; give a module of it, m = nn\.LSTM\(\.\.\.\)$"
    ):
        Recurrent.from_torch(nn.LSTM)


def test_a_one_layer_dropout_is_warned_of_once_in_a_round_trip():
    """torch.nn.LSTM(3, 4, dropout=0.5) warns that dropout does nothing with one layer; from_torch said it again in
    its own words (which a filter of torch's warning did not hold: under warnings-as-errors from_torch raised), and
    to_torch of a layer that had warned made torch warn once more. Each says it once, when the module is made."""
    with pytest.warns(UserWarning, match="dropout option adds dropout"):
        m = nn.LSTM(3, 4, 1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Recurrent.from_torch(m)
        back = layer.to_torch()
    assert layer.dropout == back.dropout == 0.5


def test_a_torch_key_of_the_wrong_shape_is_named_as_given():
    """load_state_dict of torch.nn.LSTM(3, 5)'s weights into a layer of 4 units said "size mismatch for
    cells.0.W_hh", a key the caller never wrote; it names weight_hh_l0 (and rnnkit's key beside it), as for a cell
    given torch.nn.LSTMCell's weight_hh."""
    from rnnkit.cells import LSTM

    with pytest.raises(
        RuntimeError, match=r"size mismatch for weight_hh_l0 \(here cells\.0\.W_hh\): copying"
    ):
        Recurrent("lstm", 3, 4).load_state_dict(nn.LSTM(3, 5).state_dict())
    with pytest.raises(RuntimeError, match=r"size mismatch for weight_hh \(here W_hh\): copying"):
        LSTM(3, 4).load_state_dict(nn.LSTMCell(3, 5).state_dict())
    layer = Recurrent("lstm", 3, 4)
    layer.load_state_dict(nn.LSTM(3, 4).state_dict())
    with pytest.raises(RuntimeError, match=r"size mismatch for cells\.0\.W_hh: copying"):  # rnnkit's own keys
        layer.load_state_dict(Recurrent("lstm", 3, 5).state_dict())


def test_from_torch_refuses_a_module_of_mixed_dtypes():
    """one weight of another dtype (a float64 W_hh in a float32 GRU) was cast to the first weight's in silence, its
    bits lost, where torch.nn refuses to run the module; now one line."""
    m = nn.GRU(3, 4)
    m.weight_hh_l0.data = m.weight_hh_l0.data.double() + 1e-12
    with pytest.raises(
        RnnkitError, match=r"^from_torch: m.weight_hh_l0 is torch.float64 on cpu but m's first weight"
    ):
        Recurrent.from_torch(m)


def test_from_torch_refuses_a_complex_module():
    """A complex torch.nn.GRU (which runs complex sequences on the CPU) was converted to a layer of complex weights
    that no call could run (a real input: 'convert one'; a complex one: 'must be a floating-point tensor'); now one
    line at the conversion."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Complex modules", UserWarning)
        m = nn.GRU(3, 4, dtype=torch.complex64)
    with pytest.raises(RnnkitError, match=r"^from_torch: m's weights are torch.complex64; rnnkit's cells compute in "
                                          r"real numbers"):  # fmt: skip
        Recurrent.from_torch(m)


def test_from_torch_warns_of_a_subclass_with_a_forward_of_its_own():
    """A subclass of torch.nn.LSTM whose forward computes something else (out * 2) was converted as the plain
    module, its weights only, in silence: the layer's outputs 0.3 off m's. It is said in a UserWarning naming the
    subclass; a subclass adding only attributes or methods converts silently, as before."""

    class Doubled(nn.LSTM):
        def forward(self, x, hx=None):
            out, state = super().forward(x, hx)
            return out * 2, state

    class Tagged(nn.GRU):
        tag = "mine"

        def hello(self):
            return 1

    with pytest.warns(
        UserWarning, match=r"^from_torch: \S*Doubled defines a forward of its own; only its weights"
    ):
        layer = Recurrent.from_torch(Doubled(3, 4))
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(layer(x)[0], nn.LSTM.forward(layer.to_torch(), x)[0])
    m = nn.RNN(3, 4)
    m.forward = lambda x, hx=None: nn.RNN.forward(m, x, hx)  # set on the module itself
    with pytest.warns(UserWarning, match=r"^from_torch: m defines a forward of its own"):
        Recurrent.from_torch(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recurrent.from_torch(Tagged(3, 4))


def test_a_missing_torch_key_is_named_as_torch_names_it():
    """torch.nn.LSTM's state_dict with weight_hh_l1 left out said "Missing key(s) in state_dict: "cells.1.W_hh"", a
    name the caller's dict never used; a torch-named dict's missing keys are torch.nn's names (strict=False's
    missing_keys too, as torch.nn.LSTM gives them), an own-named dict's still its own, as for a cell given
    torch.nn.LSTMCell's weights."""
    from rnnkit.cells import LSTM

    sd = nn.LSTM(3, 4, 2, bidirectional=True).state_dict()
    del sd["weight_hh_l1"], sd["bias_ih_l0_reverse"]
    with pytest.raises(
        RuntimeError, match=r'Missing key\(s\) in state_dict: "bias_ih_l0_reverse", "weight_hh_l1"\.'
    ):
        Recurrent("lstm", 3, 4, 2, bidirectional=True).load_state_dict(sd)
    result = Recurrent("lstm", 3, 4, 2, bidirectional=True).load_state_dict(sd, strict=False)
    assert sorted(result.missing_keys) == ["bias_ih_l0_reverse", "weight_hh_l1"]
    sd = Recurrent("lstm", 3, 4, 2).state_dict()
    del sd["cells.1.W_hh"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "cells\.1\.W_hh"\.'):
        Recurrent("lstm", 3, 4, 2).load_state_dict(sd)
    sd = nn.LSTMCell(3, 4).state_dict()
    del sd["bias_hh"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "bias_hh"\.'):
        LSTM(3, 4).load_state_dict(sd)
    outer = nn.Sequential(nn.LSTM(3, 4)).state_dict()  # under a prefix
    del outer["0.weight_ih_l0"]
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "0\.weight_ih_l0"\.'):
        nn.Sequential(Recurrent("lstm", 3, 4)).load_state_dict(outer)


def test_from_torch_warns_of_the_hooks_it_does_not_carry_over():
    """torch.nn.GRU m with a forward hook (out * 2) or pre-hook, or a backward hook, was converted in silence, its
    hooks lost: the layer's outputs 0.67 off m's. It is said in a UserWarning naming the hooks, as a forward of m's own
    is; the layer computes torch.nn's function, and a module without hooks converts silently, as before."""
    m = nn.GRU(3, 4)
    m.register_forward_hook(lambda mod, inputs, out: (out[0] * 2, out[1]))
    m.register_forward_pre_hook(lambda mod, inputs: None)
    m.register_forward_pre_hook(lambda mod, inputs: None)
    with pytest.warns(UserWarning, match=r"^from_torch: m has 2 forward pre-hooks and a forward hook, which are not "
                      r"carried over; the layer computes torch.nn.GRU's function without them"):  # fmt: skip
        layer = Recurrent.from_torch(m)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(layer(x)[0], nn.GRU.forward(m, x)[0])
    m = nn.LSTM(3, 4)
    m.register_full_backward_hook(lambda mod, grad_in, grad_out: None)
    with pytest.warns(UserWarning, match=r"^from_torch: m has a backward hook, which is not carried over"):
        Recurrent.from_torch(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recurrent.from_torch(nn.LSTM(3, 4))


def test_to_torch_warns_of_a_forward_of_its_own_and_of_hooks():
    """The other way: a subclass of Recurrent whose forward computes something else (out * 3), or a layer with a
    forward hook (out * 2), was converted by to_torch to the plain torch.nn module in silence, its outputs 1.0 and
    0.3 off the layer's. Both are said in a UserWarning, as from_torch says them; a plain layer converts silently."""

    class Scaled(Recurrent):
        def forward(self, x, state=None):
            out, state = super().forward(x, state)
            return out * 3, state

    with pytest.warns(UserWarning, match=r"^to_torch: \S*Scaled defines a forward of its own; only its weights are "
                      r"converted, and the module computes torch.nn.GRU's function"):  # fmt: skip
        m = Scaled("gru", 3, 4).to_torch()
    assert type(m) is nn.GRU
    layer = Recurrent("lstm", 3, 4)
    layer.register_forward_hook(lambda mod, inputs, out: (out[0] * 2, out[1]))
    with pytest.warns(UserWarning, match=r"^to_torch: the layer has a forward hook, which is not carried over; the "
                      r"module computes torch.nn.LSTM's function without it"):  # fmt: skip
        layer.to_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recurrent("lstm", 3, 4).to_torch()


@pytest.mark.parametrize("kind", list(MODULES))
def test_from_torch_and_to_torch_leave_the_generator_as_it_was(kind):
    """A conversion copies weights and draws none: from_torch and to_torch drew a whole layer's initial weights
    from the global generator (thrown away by the copy), so a model that swaps in `Recurrent.from_torch(self.rnn)`
    in __init__ initialised its embedding and decoder after it, and drew its dropout masks and batches, otherwise
    than the torch.nn model of the same seed (the word-language-model example's losses 0.015 off)."""
    m = MODULES[kind](3, 5, 2, bidirectional=True)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    layer = Recurrent.from_torch(m)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(0)
    layer.to_torch()
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("batch_first", [True, False])
def test_a_state_whose_batch_is_the_inputs_time_axis_names_batch_first(batch_first):
    """A decoder stepped token by token as torch.nn code writes it, x (1, B, D) and h (L, B, H), into a layer of
    rnnkit's default batch_first=True (a layout no error can tell from x alone) was refused as 'state h must have
    shape (num_layers*dirs, B, H) = (1, 1, 5), got (1, 3, 5)', sending the caller to reshape the state; where
    the state's batch is x's time axis, the line says how x was read and which batch_first reads it as given."""
    layer = Recurrent("gru", 4, 5, batch_first=batch_first)
    x = (
        torch.randn(1, 3, 4) if batch_first else torch.randn(3, 1, 4)
    )  # one step of 3 sequences, the other layout
    with pytest.raises(
        RnnkitError, match=rf"got \(1, 3, 5\); x was read as .* batch_first={not batch_first}$"
    ):
        layer(x, torch.zeros(1, 3, 5))
    with pytest.raises(
        RnnkitError, match=r"got \(1, 2, 5\)$"
    ):  # another batch altogether: no word of the layout
        layer(x, torch.zeros(1, 2, 5))
    fixed = Recurrent.from_torch(layer.to_torch()).train(False)
    fixed.batch_first = not batch_first
    assert fixed(x, torch.zeros(1, 3, 5))[0].shape == x.shape[:2] + (5,)


@pytest.mark.filterwarnings("ignore:(skip_input|residual)=True does nothing with num_layers=1")
def test_to_torch_takes_skip_input_and_residual_that_do_nothing_with_one_layer():
    """skip_input and residual join layers, and with num_layers=1 they do nothing (a warning says so when the layer is
    made): its function is torch.nn.GRU's, yet to_torch refused it ("torch.nn's RNNs have no skip_input or residual:
    this gru layer has no torch.nn equivalent"). It converts; with two layers, and with cond_size, still refused."""
    layer = Recurrent("gru", 3, 4, skip_input=True, residual=True, bidirectional=True)
    x = torch.randn(2, 5, 3)
    m = layer.to_torch()
    want, h = layer(x)
    got, h_m = m(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(h_m, h)
    with pytest.raises(RnnkitError, match="torch.nn's RNNs have no residual: this gru layer"):
        Recurrent("gru", 3, 4, num_layers=2, residual=True).to_torch()
    with pytest.raises(RnnkitError, match="torch.nn's RNNs have no skip_input or cond_size: this gru layer"):
        Recurrent("gru", 3, 4, num_layers=2, skip_input=True, cond_size=2).to_torch()
