"""Higher-order gradients: backward(create_graph=True) through every backend and layer gives gradients that
differentiate again (gradgradcheck in float64), equal to torch.nn.LSTM's, without keeping the layer's input
projection alive in ordinary training.

The hand-written BPTT reads caches of the forward pass that carry no graph; under create_graph the loops
compute their gradients through a plain autograd loop instead (engine.reference.higher_order_grads)."""

import pytest
import torch
from torch.autograd import gradgradcheck
from torch.func import functional_call

import rnnkit
from rnnkit.cells import CELLS
from rnnkit.engine import GradProbe, native, run

NATIVE = native.unsupported(CELLS["lstm"], torch.zeros(1)) is None
BACKENDS = [
    "python",
    pytest.param("native", marks=pytest.mark.skipif(not NATIVE, reason="native backend unavailable")),
]


def engine_inputs(name, T=4, B=2, H=3):
    torch.manual_seed(0)
    kw = {"learn_alpha": True} if name == "leaky" else {}
    cell = CELLS[name](H, H, **kw).double()
    xw = cell.project_input(torch.randn(T, B, H, dtype=torch.float64)).detach().requires_grad_()
    state0 = tuple(torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(cell.num_states))
    P = cell.rec_params()
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)[:T, :, None]
    return cell, xw, state0, P, mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CELLS))
def test_engine_gradgradcheck(name, backend):
    cell, xw, state0, P, mask = engine_inputs(name)
    n, present = len(state0), [p for p in P if p is not None]

    def f(xw, *rest):
        given = iter(rest[n:])
        hs, state = run(
            cell, xw, rest[:n], tuple(None if p is None else next(given) for p in P), mask, True, backend
        )
        return (hs, *state)

    assert gradgradcheck(f, (xw, *state0, *present), eps=1e-6, atol=1e-5)


LAYERS = [  # (cell, D, H, options): every projection the native engine folds into its loop
    ("lstm", 2, 2, {"bidirectional": True}),  # b_xh + b_hh added in the loop
    ("gru", 2, 2, {"bias": False}),
    ("leaky", 2, 2, {"learn_alpha": True}),
    ("gru_cho", 2, 2, {}),  # b_xh added by the loop
    ("mut1", 3, 2, {}),  # tanh(x̃) taken in the loop
    ("mut1", 2, 2, {"bidirectional": True}),  # x̃ = x (D = H) read in place
    ("mut1", 2, 2, {"num_layers": 2, "skip_input": True, "cond_size": 2, "cond_mode": "both"}),
    ("lstm", 2, 2, {"num_layers": 2, "residual": True, "cond_size": 2}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,D,H,options", LAYERS)
def test_layer_gradgradcheck(cell, D, H, options, backend):
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(cell, D, H, backend=backend, **options).double()
    names = [k for k, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(2, 8, D, dtype=torch.float64, requires_grad=True)  # T = 8: the native projection runs
    cond = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([8, 5])

    def f(x, cond, *ps):
        kw = {"lengths": lengths, **({"cond": cond} if layer.cond_size else {})}
        out, state = functional_call(layer, dict(zip(names, ps)), (x,), kw)
        return (out, *(state if isinstance(state, tuple) else (state,)))

    assert gradgradcheck(f, (x, cond, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_derivative_equals_torch_lstm(backend):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    ours = rnnkit.Recurrent.from_torch(ref)
    ours.backend = backend
    x = torch.randn(2, 10, 3, dtype=torch.float64, requires_grad=True)

    def penalty_grad(m):  # d/dx of a gradient penalty |dL/dx|², as in WGAN-GP or double backprop
        out, _ = m(x)
        (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), x)[0]

    torch.testing.assert_close(penalty_grad(ours), penalty_grad(ref), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_under_create_graph(backend):
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=4)
    probe = GradProbe()
    hs, _ = run(cell, xw, state0, P, None, False, backend, probe)
    torch.autograd.grad(hs[-1].sum(), xw, create_graph=True)
    assert probe.dh.shape == (4, 2, 3)
    torch.testing.assert_close(probe.dh[-1], torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_a_second_order_pass_once(backend):
    """A pass through a create_graph=True gradient reaches h_t along two paths (the rerun's graph and the
    outputs): python and native recorded two partial records, whose sum is autograd's one record."""
    records = {}
    for b in ("autograd", backend):
        cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=6)
        probe = GradProbe()
        hs, _ = run(cell, xw, state0, P, None, False, b, probe)
        (g,) = torch.autograd.grad((hs**2).sum(), xw, create_graph=True)
        first = len(probe.history)
        g.pow(2).sum().backward()
        assert len(probe.history) == first + 1
        records[b] = probe.dh
    torch.testing.assert_close(records[backend], records["autograd"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["autograd", *BACKENDS])
def test_a_second_order_record_with_lengths_is_the_one_without(backend):
    """lengths as long as the input compute what no lengths compute, and a second-order pass's record of dL/dh_t
    too: that pass reaches rnn_tanh's h_t also through its backward's 1 - h_t², which went to the step's own h_t,
    not to the select of it that lengths keep, so the record with lengths missed that path (off by up to 2e2)."""
    records = []
    for lengths in (None, torch.tensor([6, 6])):
        torch.manual_seed(0)
        layer = rnnkit.Recurrent("rnn_tanh", 3, 4, bidirectional=True, backend=backend, dtype=torch.float64)
        probes = [GradProbe(), GradProbe()]
        out, _ = layer(torch.randn(2, 6, 3, dtype=torch.float64), lengths=lengths, probe=probes)
        grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()), create_graph=True)
        sum(g.square().sum() for g in grads).backward()
        records.append(torch.stack([p.dh for p in probes]))
    assert records[0].abs().max() > 1
    torch.testing.assert_close(records[1], records[0], rtol=1e-10, atol=1e-12)


def test_probe_records_nothing_under_batched_gradients():
    """is_grads_batched (and vmap) hand the hooks batched tensors: recording one raised 'Batching rule not
    implemented for aten::detach' and failed the whole gradient."""
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=4)
    probe = GradProbe()
    hs, _ = run(cell, xw, state0, P, None, False, "python", probe)
    V = torch.randn(3, *hs.shape, dtype=hs.dtype)
    with pytest.warns(RuntimeWarning, match="GradProbe records nothing under vmap or batched"):
        (g,) = torch.autograd.grad(hs, xw, V, is_grads_batched=True)
    assert g.shape == (3, *xw.shape) and probe.history == []


def test_probe_warns_of_a_forward_under_vmap(monkeypatch):
    """A forward under vmap, its backward outside (an ensemble's outputs): the hooks sit on vmap's batched tensors,
    which no backward reaches, and the probe recorded nothing without the warning its docstring promises."""
    from rnnkit import engine

    monkeypatch.setattr(engine, "_warned", set())
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=4)
    probe = GradProbe()
    with pytest.warns(RuntimeWarning, match="GradProbe records nothing under vmap or batched"):
        hs = torch.func.vmap(lambda v: run(cell, v, state0, P, None, False, "autograd", probe)[0])(xw[None])
    hs.sum().backward()
    assert probe.history == [] and xw.grad is not None


@pytest.mark.skipif(not NATIVE, reason="native backend unavailable")
def test_training_keeps_no_copy_of_the_projection():
    """Only create_graph needs the loop's input again: the layer hands a way to recompute it instead, and the
    loop saves what that reads, the layer's input (T, B, D) and W_xh, not xw (T, B, 4H)."""
    layer = rnnkit.Recurrent("lstm", 4, 5)
    out, _ = layer(torch.randn(2, 9, 4, requires_grad=True))
    fn = out.grad_fn
    while "NativeRecurrence" not in type(fn).__name__:
        fn = fn.next_functions[0][0]
    x, W, b = fn.saved_tensors[:3]  # (b: none, the loop adds b_xh)
    assert x.shape == (9, 2, 4) and torch.equal(W, layer.cells[0].W_xh) and b is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what", ["x", "W_xh"])
def test_a_change_in_place_before_backward_raises_not_a_wrong_second_derivative(what, backend):
    """create_graph recomputes the projection from the layer's input and W_xh: changed in place between forward
    and backward (a frozen W_xh, an input that needs no gradient, time-major so the layer reads it in place),
    torch's in-place error, as for any tensor a backward reads; the gradient came from the new values before."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent("gru", 4, 5, backend=backend).double()
    layer.cells[0].W_xh.requires_grad_(False)
    x = torch.randn(9, 2, 4, dtype=torch.float64).transpose(0, 1)  # (B, T, D) over time-major memory
    loss = layer(x)[0].pow(2).sum()
    with torch.no_grad():
        (x if what == "x" else layer.cells[0].W_xh).mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, [layer.cells[0].W_hh], create_graph=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["lstm", "gru", "mut1"])  # mut1: the loop takes tanh(x̃) and adds b_xh itself
def test_batched_gradients_give_the_jacobian(name, backend):
    """jacobian(vectorize=True) and grad(..., is_grads_batched=True) run backward on batched gradients (vmap),
    which the C++ loop can't read: there the loops differentiate their autograd rerun. Equal to the reference
    (the native loop gave an error, or with the rerun outside grad mode, wrong numbers)."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(name, 2, 3, backend=backend, dtype=torch.float64)
    x = torch.randn(2, 9, 2, dtype=torch.float64)  # 9 steps: the native layer's own projection too
    ref = rnnkit.Recurrent(name, 2, 3, backend="autograd", dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    want = torch.autograd.functional.jacobian(lambda x: ref(x)[0], x)
    got = torch.autograd.functional.jacobian(lambda x: layer(x)[0], x, vectorize=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    xg = x.clone().requires_grad_()
    eye = torch.eye(2 * 9 * 3, dtype=torch.float64).reshape(-1, 2, 9, 3)
    (rows,) = torch.autograd.grad(layer(xg)[0], xg, eye, is_grads_batched=True)
    torch.testing.assert_close(rows.reshape(2, 9, 3, 2, 9, 2), want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_batched_gradients_of_the_final_state_alone(name, backend):
    """jacobian(vectorize=True) of the final state (h_n, or an lstm's c_n) alone: the loop's dL/dhs is then autograd's
    plain zeros while the state's gradient is batched, and the python loop's buffers, made like dhs, refused the
    batched steps written into them ("vmap: aten::copy_(self, *extra_args) is not possible"), where the autograd
    and native backends give the jacobian."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(name, 2, 3, backend=backend, dtype=torch.float64)
    ref = rnnkit.Recurrent(name, 2, 3, backend="autograd", dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 2, dtype=torch.float64)

    def final(m):  # h_n, or c_n
        return lambda x: m(x)[1][-1] if name == "lstm" else m(x)[1]

    want = torch.autograd.functional.jacobian(final(ref), x)
    got = torch.autograd.functional.jacobian(final(layer), x, vectorize=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_autograd_loop_reads_each_step_through_one_unbind():
    """The reference loop (also what create_graph and torch.func rerun) takes xw's steps as views of ONE unbind:
    xw[t] per step made every step's backward fill a (T, B, G) zero tensor, T² memory (1.7 GB at T=2000, B=2,
    H=8 under create_graph, against 0.35 GB now)."""
    from rnnkit.engine.reference import autograd_loop

    cell = CELLS["gru"](3, 8)
    xw = torch.randn(40, 2, 24, requires_grad=True)
    hs, _ = autograd_loop(cell, xw, (torch.zeros(2, 8),), cell.rec_params(), None, False)
    seen, todo, names = set(), [hs.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    assert names.count("UnbindBackward0") == 1
    assert "SelectBackward0" not in names


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_derivative_through_activation_checkpointing(backend):
    """torch.utils.checkpoint (non-reentrant) lets each saved tensor be unpacked once; the native loop's backward
    under create_graph=True unpacked ctx.saved_tensors twice (once to find its states, again for the rerun) and
    failed with torch's CheckpointError ("Unpack is being triggered for a tensor that was already unpacked
    once"). Now the second derivative is the one without checkpointing."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent("gru", 3, 4, num_layers=2, backend=backend).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)  # T >= 8: the native projection too
    grads = []
    for wrapped in (False, True):
        layer.zero_grad()
        x.grad = None
        out = (
            torch.utils.checkpoint.checkpoint(lambda t: layer(t)[0], x, use_reentrant=False)
            if wrapped
            else layer(x)[0]
        )
        (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        gx.square().sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_graph_through_a_state_from_an_earlier_run_of_the_same_weights(backend):
    """Under create_graph=True the second run's gradients came from autograd.grad with respect to its inputs,
    which ran on through their history: its initial state (the first run's final state) led back to W_hh, so
    that grad ran the first run's backward inside the second's and counted its part of dW_hh twice (truncated
    BPTT without detach, a layer applied to its own output: dW_hh 2% off; a GradProbe got a third record)."""
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=6)
    grads = {}
    for b in ("autograd", backend):
        probe = GradProbe()
        hs1, s1 = run(cell, xw[:3], state0, P, None, False, b, probe)
        hs2, _ = run(cell, xw[3:], s1, P, None, False, b, probe)
        loss = hs1.square().sum() + hs2.sum()
        first = torch.autograd.grad(loss, (xw, *state0, *P), create_graph=True)
        assert len(probe.history) == 2  # one record per run
        second = torch.autograd.grad(sum(g.square().sum() for g in first), (xw, *state0, *P))
        grads[b] = (*first, *second)
    for a, g in zip(grads["autograd"], grads[backend]):
        torch.testing.assert_close(g, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_graph_with_one_tensor_as_both_initial_states(backend):
    """h_0 and c_0 the same tensor: autograd.grad with respect to the native loop's inputs gave each of the two
    the gradient of both, and the Function's two gradients then added up to twice the right one."""
    cell, xw, (h0, _), P, _ = engine_inputs("lstm")
    got = {}
    for b in ("autograd", backend):
        hs, _ = run(cell, xw, (h0, h0), P, None, False, b)
        (g,) = torch.autograd.grad(hs.square().sum(), h0, create_graph=True)
        got[b] = (g, *torch.autograd.grad(g.square().sum(), h0))
    for a, g in zip(got["autograd"], got[backend]):
        torch.testing.assert_close(g, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_order_pass_records_once_per_run_of_a_shared_probe(backend):
    """Two runs sharing one probe (truncated BPTT chunks), a second-order pass: python and native reach each
    run's h_t along two paths, and the records of the two runs came interleaved (run 2, run 1, run 1, run 2);
    only a record right after one of its own run was added to it, so the pass left three records, two of them
    partial, where autograd leaves one per run."""
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=6)
    records = {}
    for b in ("autograd", backend):
        probe = GradProbe()
        hs1, s1 = run(cell, xw[:2], state0, P, None, False, b, probe)
        hs2, _ = run(cell, xw[2:], s1, P, None, False, b, probe)
        (g,) = torch.autograd.grad(hs1.square().sum() + hs2.square().sum(), xw, create_graph=True)
        first = len(probe.history)
        g.square().sum().backward()
        records[b] = sorted(probe.history[first:], key=len)  # (runs of 2 and 4 steps)
    assert len(records[backend]) == len(records["autograd"]) == 2
    for a, g in zip(records["autograd"], records[backend]):
        torch.testing.assert_close(g, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_order_pass_through_a_probe_keeping_one_record_keeps_the_whole_latest(backend):
    """GradProbe(keep=1) shared by two chunks, a second-order pass whose records come (run 2, run 1, run 1, run 2):
    run 2's record, dropped when run 1's came, was appended again with its second path alone, so the probe held a
    partial record of run 2 (python and native) where autograd's holds run 1's whole one."""
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=6)
    kept = {}
    for b in ("autograd", backend):
        probe = GradProbe(keep=1)
        hs1, s1 = run(cell, xw[:2], state0, P, None, False, b, probe)
        hs2, _ = run(cell, xw[2:], s1, P, None, False, b, probe)
        (g,) = torch.autograd.grad(hs1.square().sum() + hs2.square().sum(), xw, create_graph=True)
        g.square().sum().backward()
        kept[b] = probe.history
    assert len(kept[backend]) == len(kept["autograd"]) == 1
    torch.testing.assert_close(kept[backend][0], kept["autograd"][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_order_pass_over_chunks_leaves_dh_the_latest_record(backend):
    """probe.dh is the latest record (of chunks: the first chunk's); a second-order pass whose records come (run 2,
    run 1, run 1, run 2) left dh run 2's record on python and native (the record last added to), run 1's on
    autograd."""
    cell, xw, state0, P, _ = engine_inputs("rnn_tanh", T=6)
    for b in ("autograd", backend):
        probe = GradProbe()
        hs1, s1 = run(cell, xw[:2], state0, P, None, False, b, probe)
        hs2, _ = run(cell, xw[2:], s1, P, None, False, b, probe)
        (g,) = torch.autograd.grad(hs1.square().sum() + hs2.square().sum(), xw, create_graph=True)
        g.square().sum().backward()
        assert probe.dh is probe.history[-1] and len(probe.dh) == 2, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("D", [3, 2])  # x̃ = W_xp x, and x̃ = x (D = H)
def test_mut1_first_order_gradients_under_create_graph_equal_autograds(backend, D):
    """gradgradcheck checks the second derivative against the first one a backward gives, not that first one: the
    projection's tanh(x̃) backward without its (1 - tanh²) under create_graph=True (TanhTail's path that reads tanh
    from the output) passed test_layer_gradgradcheck. The gradients a gradient penalty starts from, here against the
    autograd backend's."""
    torch.manual_seed(0)
    layer = rnnkit.Recurrent("mut1", D, 2, backend="autograd").double()
    x = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    want = torch.autograd.grad(layer(x)[0].pow(2).sum(), (x, *layer.parameters()))
    layer.backend = backend
    got = torch.autograd.grad(layer(x)[0].pow(2).sum(), (x, *layer.parameters()), create_graph=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
