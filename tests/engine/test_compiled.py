"""The native loop as an operator under torch.compile (rnnkit/engine/compiled.py): its registration is what
torch.library's own checker wants, a compiled model gives eager's numbers, and a new length does not
compile the model again."""

import re

import pytest
import torch

from rnnkit import Recurrent
from rnnkit.cells import CELLS
from rnnkit.engine import GradProbe, compiled, native, run
from rnnkit.errors import RnnkitError

pytestmark = [
    pytest.mark.skipif(native.load() is None, reason="the native engine could not be built here"),
    # what torch 2.13's dynamo says of its own internals on its way (shown only with warnings as errors)
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf"),
]
NAMES = list(CELLS)


def test_native_ready_is_marked_as_dynamo_marks_it():
    """compiled.native_ready carries what torch.compiler.assume_constant_result sets (set by hand there, to keep
    dynamo out of `import rnnkit`): if a torch release marks functions otherwise, this says so."""

    def f():
        return True

    torch.compiler.assume_constant_result(f)
    assert vars(f) == {"_dynamo_marked_constant": True}
    assert compiled.native_ready._dynamo_marked_constant is True


def _op_args(
    name, T=5, B=3, H=4, reverse=False, batch_first=False, masked=True, keep=True, b1=False, bias=True
):
    torch.manual_seed(0)
    cell = CELLS[name](3, H, bias=bias).double()
    X = cell.project_input(torch.randn(T, B, 3, dtype=torch.float64)).shape[-1]
    xw = torch.randn(T, B, X, dtype=torch.float64, requires_grad=True)
    state0 = [
        torch.randn(1 if b1 else B, H, dtype=torch.float64, requires_grad=True)
        for _ in range(cell.num_states)
    ]
    given = [k for k, p in enumerate(cell.rec_params()) if p is not None]
    P = [cell.rec_params()[k].detach().clone().requires_grad_() for k in given]
    mask = (
        (torch.arange(T)[:, None] < torch.tensor([T, 2, 1][:B])[None, :]).double()[..., None]
        if masked
        else None
    )
    return (native.CELL_IDS[type(cell)], xw, state0, P, given, mask, reverse, keep, batch_first)


@pytest.mark.parametrize("name", NAMES)
def test_opcheck(name):
    """torch.library.opcheck: the schema, the fake (shape-only) functions against the real outputs, the autograd
    registration and AOTAutograd with dynamic shapes."""
    torch.library.opcheck(compiled.recurrence, _op_args(name))


@pytest.mark.parametrize("kw", [{"reverse": True, "batch_first": True}, {"masked": False, "b1": True},
                                {"keep": False}, {"bias": False}])  # fmt: skip
def test_opcheck_options(kw):
    for name in ("lstm", "leaky", "mut1"):
        torch.library.opcheck(compiled.recurrence, _op_args(name, **kw))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_of_the_operator(name):
    """The operator's registered backward (the C++ BPTT) against finite differences, through the final state
    too, with variable lengths and a state0 of batch 1 broadcast."""
    args = list(_op_args(name, b1=True, bias=name != "lstm"))  # (lstm: without its biases)
    n = len(args[2])

    def f(xw, *rest):
        state0, P = list(rest[:n]), list(rest[n:])
        out = compiled.recurrence(args[0], xw, state0, P, *args[4:])
        return tuple(out[: 1 + n])

    assert torch.autograd.gradcheck(f, (args[1], *args[2], *args[3]))


@pytest.mark.parametrize("name", ["lstm", "gru_cho", "leaky", "mut1"])
def test_gradgradcheck_of_the_operator(name):
    """backward(create_graph=True) through the operator where it runs in eager autograd (torch.compile(backend=
    "eager"), a direct call) gives gradients that differentiate again, as the eager native loop's do: the C++ BPTT's
    recurrence_backward has no derivative, and the second backward failed ("no autograd formula was registered")."""
    args = list(_op_args(name, T=3, B=2, H=2, b1=True, reverse=True, batch_first=True))
    n = len(args[2])

    def f(xw, *rest):
        out = compiled.recurrence(args[0], xw, list(rest[:n]), list(rest[n:]), *args[4:])
        return tuple(out[: 1 + n])

    assert torch.autograd.gradgradcheck(f, (args[1], *args[2], *args[3]))


def test_double_backward_of_a_layer_compiled_with_the_eager_backend():
    """torch.compile(layer, backend="eager") with create_graph=True: the second-order gradients of the autograd
    backend (a gradient penalty), where the second backward failed in torch ("no autograd formula was registered")."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, num_layers=2).double()
    ref = Recurrent("gru", 3, 4, num_layers=2, backend="autograd").double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])

    def second(m, f):
        inputs = [x, h0, *m.parameters()]
        grads = torch.autograd.grad(f(x, h0), inputs, create_graph=True)
        return [*grads, *torch.autograd.grad(sum(g.square().sum() for g in grads), inputs)]

    torch._dynamo.reset()
    g = torch.compile(lambda x, h0: layer(x, h0, lengths=lengths)[0].square().sum(), backend="eager")
    got = second(layer, g)
    want = second(ref, lambda x, h0: ref(x, h0, lengths=lengths)[0].square().sum())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm", "gru", "mut1"])
@pytest.mark.parametrize("through", ["outputs", "final state", "cell state"])
def test_operator_gradients_through_part_of_its_outputs(name, through):
    """The operator's backward gets None, not zeros, for the outputs a loss doesn't read (set_materialize_grads
    False: its caches are megabytes); through hs alone, the final h alone or the LSTM's final c alone it
    gives the autograd.Function's gradients."""
    if through == "cell state" and name != "lstm":
        pytest.skip("only the LSTM has a cell state")
    cell_id, xw, state0, P, given, mask, reverse, keep, bf = _op_args(name)
    cell, n = compiled.CELL_OF_ID[cell_id], len(state0)
    inputs = (xw, *state0, *P)
    out = compiled.recurrence(cell_id, xw, state0, P, given, mask, reverse, keep, bf)
    ref = native.NativeRecurrence.apply(cell, mask, reverse, None, bf, False, False, n, xw, None, *state0, *P)
    pick = {"outputs": 0, "final state": 1, "cell state": 2}[through]
    w = torch.randn_like(out[pick])
    for a, b in zip(torch.autograd.grad((out[pick] * w).sum(), inputs),
                    torch.autograd.grad((ref[pick] * w).sum(), inputs)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _same(f, g, inputs):
    out, out_c = f(), g()
    torch.testing.assert_close(out_c, out, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out, inputs)
    grads_c = torch.autograd.grad(out_c, inputs)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", [*NAMES, "lstmp", "lstm-nobias", "gru-nobias", "leaky-nobias"])
def test_compiled_layer_matches_eager(name):
    """A 2-layer bidirectional layer with variable lengths, compiled (AOTAutograd, whole graph) and eager: the
    same outputs and final states, the same gradients of the input and every parameter (float64). Without
    biases too (a None among the parameters failed AOTAutograd's check of the backward's structure)."""
    torch.manual_seed(0)
    kw = {"proj_size": 3} if name == "lstmp" else {}
    if name.endswith("-nobias"):
        name, kw = name.removesuffix("-nobias"), {"bias": False}
    layer = Recurrent(name.replace("lstmp", "lstm"), 5, 6, num_layers=2, bidirectional=True, **kw).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([7, 4, 1])

    def f(x):
        out, state = layer(x, lengths=lengths)
        state = state if isinstance(state, tuple) else (state,)
        return out.square().sum() + sum(s.sin().sum() for s in state)

    torch._dynamo.reset()
    g = torch.compile(f, backend="aot_eager", fullgraph=True)
    _same(lambda: f(x), lambda: g(x), [x, *layer.parameters()])


def _counting():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return backend, graphs


def test_one_operator_and_no_compile_per_length():
    """The loop is one node `rnnkit.recurrence` of the graph (not T copies of a step), and lengths after the
    second share one graph with a symbolic T: the unrolled loop compiled anew for every length."""
    torch.manual_seed(0)
    layer = Recurrent("lstm", 4, 8, num_layers=2)
    backend, graphs = _counting()
    torch._dynamo.reset()
    f = torch.compile(lambda x: layer(x)[0].sum(), backend=backend, fullgraph=True)
    for T in (5, 9, 13, 40, 3):
        x = torch.randn(2, T, 4, requires_grad=True)
        y = f(x)
        y.backward()
        torch.testing.assert_close(y, layer(x)[0].sum())
    assert len(graphs) == 2  # the first length, then one dynamic graph for every other
    ops = [str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"]
    assert ops.count("rnnkit.recurrence.default") == 2, ops  # one per layer


def test_no_grad_and_probe_and_export_keep_their_paths():
    """Without gradients the operator keeps no caches; a GradProbe (records are Python side effects) and
    torch.export (a program that needs no rnnkit) keep plain torch ops."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 4, 8)
    x = torch.randn(2, 6, 4)
    backend, graphs = _counting()
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(lambda x: layer(x)[0], backend=backend, fullgraph=True)(x)
    torch.testing.assert_close(out, layer(x)[0])
    assert "rnnkit.recurrence.default" in [str(n.target) for n in graphs[0].graph.nodes]

    probe = GradProbe()
    x.requires_grad_()
    torch._dynamo.reset()
    backend, graphs = _counting()
    torch.compile(lambda x: layer(x, probe=probe)[0].sum(), backend=backend)(x)
    assert all("rnnkit.recurrence" not in str(n.target) for g in graphs for n in g.graph.nodes)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)[0]

    program = torch.export.export(Model(), (x.detach(),))
    assert all("rnnkit" not in str(n.target) for n in program.graph.nodes)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # (inductor's own, on some Python versions)
def test_inductor_train_steps():
    """torch.compile's default backend (inductor): a few Adam steps of a small char LM give eager's losses."""
    torch.manual_seed(0)
    emb, layer, head = torch.nn.Embedding(11, 6), Recurrent("lstm", 6, 8), torch.nn.Linear(8, 11)
    params = [*emb.parameters(), *layer.parameters(), *head.parameters()]
    start = [p.detach().clone() for p in params]
    ids = torch.randint(0, 11, (4, 9))

    def loss(ids):
        out, _ = layer(emb(ids[:, :-1]))
        return torch.nn.functional.cross_entropy(head(out).flatten(0, 1), ids[:, 1:].flatten())

    def train(f):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        opt = torch.optim.Adam(params, lr=0.01)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            value = f(ids)
            value.backward()
            opt.step()
            losses.append(value.item())
        return losses

    torch._dynamo.reset()
    eager, comp = train(loss), train(torch.compile(loss))
    torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated"
)  # (torch's vmap decompositions load so)
def test_func_transforms_inside_compile_run_as_plain_ops():
    """torch.func.grad, jvp and vmap and forward-mode AD inside a compiled function: eager's numbers (the operator
    has no rule for them: jvp's tangent came out 0, the others failed)."""
    from torch.autograd import forward_ad

    torch.manual_seed(0)
    layer = Recurrent("gru", 2, 3).double()
    x, v = torch.randn(2, 5, 2, dtype=torch.float64), torch.randn(2, 5, 2, dtype=torch.float64)

    def f(x):
        return layer(x)[0].square().sum()

    def dual(x, v):
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(f(forward_ad.make_dual(x, v))).tangent

    calls = [
        lambda x, v: torch.func.grad(f)(x),
        lambda x, v: torch.func.jvp(f, (x,), (v,))[1],
        lambda x, v: torch.vmap(f)(x[:, None]),
        dual,
    ]
    for call in calls:
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(call, backend="aot_eager")(x, v), call(x, v))


def test_probe_inside_compile_records_what_eager_does():
    """A GradProbe in a compiled function records dL/dh_t as in eager mode (the probed loop runs eagerly: it
    recorded dL/dout_t, hooks on a compiled graph's steps); with fullgraph=True compile says why it can't."""
    torch.manual_seed(0)
    layer = Recurrent("rnn_tanh", 2, 3).double()
    x = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    eager, comp = GradProbe(), GradProbe()
    layer(x, probe=eager)[0].square().sum().backward()
    torch._dynamo.reset()
    torch.compile(lambda x, p: layer(x, probe=p)[0].square().sum(), backend="aot_eager")(x, comp).backward()
    torch.testing.assert_close(comp.dh, eager.dh)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="GradProbe records dL/dh_t"):
        torch.compile(lambda x: layer(x, probe=GradProbe())[0].sum(), backend="aot_eager", fullgraph=True)(x)


@pytest.mark.parametrize("lengths", [[0, 5], [6, 2]])
def test_lengths_out_of_range_under_compile_are_refused(lengths):
    """Eager code refuses lengths outside [1, T]; in a compiled graph their values aren't known while tracing, and a
    length of 0 gave that sequence zeros, one past T ran T steps, in silence. The graph checks them when it runs."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4)
    x = torch.randn(2, 5, 3)
    torch._dynamo.reset()
    f = torch.compile(lambda x, L: layer(x, lengths=L)[0], backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(f(x, torch.tensor([5, 2])), layer(x, lengths=torch.tensor([5, 2]))[0])
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T\]"):
        f(x, torch.tensor(lengths))


@pytest.mark.parametrize("module,cache", [("rnnkit.cells._base", "_math_of"),
                                          ("rnnkit.layers.recurrent", "_AFFINE_PROJECTS")])  # fmt: skip
def test_a_second_call_does_not_compile_again(monkeypatch, module, cache):
    """A cache of cell classes (cells._base._math_of; the layer's _AFFINE_PROJECTS, cell classes whose projection is
    their input_affine's) was traced, empty on the first call and filled by it: dynamo's guard on it ("not
    _math_of") failed on the second call, which compiled the whole model again (a minute on a small machine). The
    lookup is a constant of the graph."""
    import importlib

    monkeypatch.setattr(importlib.import_module(module), cache, {})  # as in a fresh process
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4)
    x = torch.randn(2, 5, 3)
    backend, graphs = _counting()
    torch._dynamo.reset()
    f = torch.compile(lambda x: layer(x)[0].sum(), backend=backend)
    for _ in range(3):
        f(x)
    assert len(graphs) == 1


def test_lengths_as_a_list_do_not_compile_again_for_every_list():
    """lengths given as a Python list (as pack_padded_sequence takes them): torch.as_tensor fixed the list's values
    in the compiled graph, so every new list of lengths compiled the model again, until dynamo's recompile limit.
    After the first change the lengths are symbolic, as any other int dynamo sees change."""
    torch.manual_seed(0)
    layer = Recurrent("gru", 4, 6)
    x = torch.randn(3, 9, 4)
    backend, graphs = _counting()
    torch._dynamo.reset()
    f = torch.compile(lambda x, lengths: layer(x, lengths=lengths)[0], backend=backend)
    for lengths in ([9, 2, 3], [9, 5, 1], [4, 9, 7], [8, 8, 8], [1, 2, 9], [3, 6, 5]):
        torch.testing.assert_close(f(x, lengths), layer(x, lengths=lengths)[0])
    assert len(graphs) <= 3


def test_a_failed_build_is_warned_of_under_compile_too(monkeypatch):
    """Eager, a failed build is one warning (engine.resolve_backend); under torch.compile dynamo traced that
    warnings.warn and dropped it, and a compiled model ran the python loop, 2-3x slower, in silence (say with a
    TORCH_EXTENSIONS_DIR it can't write in, while inductor builds in its own cache). native_ready, which dynamo
    calls eagerly, says it."""
    from rnnkit import engine

    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", "could not build the native engine: c++: not found; install one")
    monkeypatch.setattr(engine, "_warned", set())
    torch._dynamo.reset()
    layer = Recurrent("lstm", 3, 4)
    x = torch.randn(2, 5, 3)
    with pytest.warns(
        RuntimeWarning, match=r"native backend unavailable \(could not build .*c\+\+: not found"
    ):
        got, _ = torch.compile(layer, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(got, layer(x)[0])  # (eager: no second warning; warnings are errors here)
    torch._dynamo.reset()


def test_a_dtype_the_operator_declines_is_said_under_compile_too(monkeypatch):
    """backend="native" with a dtype the native loop doesn't run (float16 was one; now none on a CPU is but GPU
    tensors', so float64 is declined here): eagerly one line says the python loop runs instead; under torch.compile
    `wanted` declined the operator and dynamo unrolled the python loop in silence. Said once, as eager code says it (a
    second call, compiled or eager, says nothing)."""
    from rnnkit import engine
    from rnnkit.engine import native

    monkeypatch.setattr(engine, "_warned", set())
    declined = "dtype torch.float64 (declined here)"
    monkeypatch.setattr(
        native, "unsupported_kind", lambda device, dtype: declined if dtype == torch.float64 else None
    )
    torch._dynamo.reset()
    layer = Recurrent("rnn_tanh", 3, 4, backend="native", dtype=torch.float64)
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    with pytest.warns(
        RuntimeWarning, match=r"native backend unavailable \(dtype torch.float64 .*python backend$"
    ):
        got, _ = torch.compile(layer, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(got, layer(x)[0])  # (eager: no second warning; warnings are errors here)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("RNNKIT_GEMM", "fast", "RNNKIT_GEMM='fast' is not a GEMM library; set auto"),
        ("RNNKIT_ROW_THREADS", "-2", "RNNKIT_ROW_THREADS='-2' is not a thread count; set auto"),
        ("RNNKIT_NATIVE", "maybe", "RNNKIT_NATIVE='maybe' is neither on nor off; set 1"),
    ],
)
def test_a_bad_engine_setting_is_one_line_under_compile_too(monkeypatch, var, value, message):
    """Eager, a mistyped RNNKIT_GEMM (ROW_THREADS, NATIVE) is one RnnkitError line from the first forward; under
    torch.compile it was raised inside native_ready, which dynamo calls as a constant of the graph, and came out as
    torch._dynamo.exc.InternalTorchDynamoError ('RnnkitError: RNNKIT_GEMM=...') after some 40 lines of dynamo's
    own traceback, with dynamo's advice to report it to PyTorch. The graph now refuses to run with the line, as it
    does lengths out of range (raised while tracing, dynamo skipped the frame and ran the autograd loop, silently)."""
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setattr(native, "build", lambda *a: pytest.fail("built with a bad setting"))
    monkeypatch.setenv(var, value)
    torch._dynamo.reset()
    layer = Recurrent("gru", 3, 4)
    x = torch.randn(2, 5, 3)
    with pytest.raises(RuntimeError, match=f"^rnnkit: {re.escape(message)}") as error:
        torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    assert type(error.value) is RuntimeError and "\n" not in str(error.value)
    with pytest.raises(RnnkitError, match=f"^{re.escape(message)}"):
        layer(x)  # (eager: the same line)
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["lstm", "gru", "mut1"])
def test_saved_tensors_unpacked_with_other_strides_give_the_same_gradients(name):
    """An unpack hook that hands a saved tensor back with the same values in another layout (a copy made in another
    order): the operator's backward passed the states and caches to the C++ loop as they came, which read them as
    forward had laid them out, and the compiled model's gradients were wrong in silence (gru 5.8 off), as the eager
    native loop's were (tests/engine/test_saved_tensors.py)."""

    def strided(t):
        return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() >= 2 else t

    def grads(unpack, compile):
        torch.manual_seed(0)
        layer = Recurrent(name, 4, 5, backend="native").double()
        x = torch.randn(3, 9, 4, dtype=torch.float64, requires_grad=True)
        f = lambda x: layer(x)[0]  # noqa: E731
        if compile:
            torch._dynamo.reset()
            f = torch.compile(f, backend="aot_eager", fullgraph=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
            out = f(x)
        out.pow(2).sum().backward()
        return [x.grad, *(p.grad for p in layer.parameters())]

    for got, want in zip(grads(strided, compile=True), grads(lambda t: t, compile=False)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("widths", [(4, 8), (8, 4)])
def test_state_widths_that_do_not_fit_are_refused_under_compile_too(widths):
    """run(LSTM) given an h and a c of other widths under torch.compile: eager code's line, where the size check was
    skipped under compile (building the cell is a graph break) and the operator ran on them: c wider than h gave NaN,
    narrower corrupted the heap ("malloc(): unaligned tcache chunk detected"). Sizes that fit still compile into one
    graph (fullgraph=True), a second length too."""
    torch.manual_seed(0)
    cell = CELLS["lstm"](3, 4)
    P = tuple(cell.rec_params())
    state0 = tuple(torch.randn(2, w) for w in widths)
    torch._dynamo.reset()
    f = torch.compile(lambda xw, state0: run(cell, xw, state0, P), backend="aot_eager")
    with pytest.raises(RnnkitError, match=rf"state \(h, c\) widths \[{widths[0]}, {widths[1]}\] don't fit"):
        f(torch.randn(5, 2, 16), state0)
    torch._dynamo.reset()
    g = torch.compile(lambda xw, state0: run(cell, xw, state0, P)[0], backend="aot_eager", fullgraph=True)
    for T in (5, 7):
        xw, state0 = torch.randn(T, 2, 16), (torch.randn(2, 4), torch.randn(2, 4))
        torch.testing.assert_close(g(xw, state0), run(cell, xw, state0, P)[0])


def test_run_with_a_mask_compiles_in_one_graph_with_dynamic_shapes_where_t_b_and_h_are_equal():
    """torch.compile(dynamic=True) of run(cell, xw, state0, P, mask) with T = B = H (3): _check_sizes made H a number,
    and with it T and B (one symbol, dynamo's duck sizing), and dynamo then found the mask's (3, 3, 1) not in
    ((T, B), (T, B, 1)) and took the raise ("mask must be (T, B, 1) (or (T, B)) = (3, 3, 1) of 0/1, got (3, 3, 1)"):
    fullgraph=True failed, and without it the graph broke there and the operator, reached in a frame of its own with
    its cell id made symbolic, failed ("unhashable type: non-nested SymInt"). The sizes are compared one by one."""
    torch.manual_seed(0)
    cell = CELLS["rnn_tanh"](2, 3).double()
    P = tuple(p.detach().requires_grad_() for p in cell.rec_params())
    xw = torch.randn(3, 3, 3, dtype=torch.float64, requires_grad=True)
    h_0 = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    mask = (torch.arange(3)[:, None] < torch.tensor([3, 1, 2])[None]).double()[..., None]
    torch._dynamo.reset()

    def f(xw, mask, h_0):
        return run(cell, xw, (h_0,), P, mask, True)[0]

    got, want = (
        torch.compile(f, backend="eager", dynamic=True, fullgraph=True)(xw, mask, h_0),
        f(xw, mask, h_0),
    )
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got.sum(), (xw, h_0)), torch.autograd.grad(want.sum(), (xw, h_0))):
        torch.testing.assert_close(g, w)


def test_run_compiles_in_one_graph_with_dynamic_shapes_and_still_refuses_widths_that_do_not_fit():
    """run(cell, ...) under torch.compile(dynamic=True): dynamo shows a symbolic size as an int, so the size check
    handed xw's columns, symbolic, to _size_error, a constant of the graph: fullgraph=True failed ("assume_constant_result
    argument conversion failed"), and without it the graph broke there. The widths are made numbers (a guard each):
    one graph, eager's numbers, and an h and c of other widths are still refused in eager code's line."""
    torch.manual_seed(0)
    cell = CELLS["gru"](3, 4)
    P = tuple(cell.rec_params())
    torch._dynamo.reset()
    f = torch.compile(
        lambda xw, state0: run(cell, xw, state0, P)[0], backend="eager", dynamic=True, fullgraph=True
    )
    for T, B in ((5, 2), (7, 3)):
        xw, state0 = torch.randn(T, B, 12), (torch.randn(B, 4),)
        torch.testing.assert_close(f(xw, state0), run(cell, xw, state0, P)[0])
    lstm = CELLS["lstm"](3, 4)
    P = tuple(lstm.rec_params())
    torch._dynamo.reset()
    g = torch.compile(lambda xw, state0: run(lstm, xw, state0, P)[0], backend="eager", dynamic=True)
    with pytest.raises(RnnkitError, match=r"state \(h, c\) widths \[4, 8\] don't fit"):
        g(torch.randn(5, 2, 16), (torch.randn(2, 4), torch.randn(2, 8)))
