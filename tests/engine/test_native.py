"""The native backend equals the python backend: outputs, final states, every gradient, the probe.

Both run the same hand-written BPTT, so float64 agrees to rounding (1e-12) and float32 to 1e-5.
"""

import contextlib
import math
import os
import pathlib
import warnings

import pytest
import torch

from rnnkit import Recurrent
from rnnkit.cells import CELLS, LSTMP
from rnnkit.cells._base import cell_class
from rnnkit.engine import GradProbe, native, resolve_backend, run

pytestmark = pytest.mark.skipif(
    native.unsupported(CELLS["lstm"], torch.zeros(1)) is not None,
    reason=f"native backend unavailable: {native._reason}",
)
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
NATIVE = {
    **CELLS,
    "lstmp": LSTMP,
}  # every cell the native loop runs: the lectures' and torch's LSTM with proj_size


def make(name, dtype, D=4, H=5):
    kw = (
        {"learn_alpha": True} if name == "leaky" else {"proj_size": max(1, H // 2)} if name == "lstmp" else {}
    )
    torch.manual_seed(0)
    return NATIVE[name](D, H, **kw).to(dtype)


def states(cell, B, dtype=torch.float32):
    """A random initial state: h (B, output_size), and c (B, H) for the LSTMs."""
    return tuple(
        torch.randn(B, n, dtype=dtype) for n in (cell.output_size, cell.hidden_size)[: cell.num_states]
    )


def grads_of(cell, backend, x, s0, mask, reverse, weights):
    """Everything a backend produces for one loss: outputs, states, all gradients, probe dh."""
    cell.zero_grad()
    x, s0 = x.clone().requires_grad_(), tuple(s.clone().requires_grad_() for s in s0)
    probe = GradProbe()
    hs, sT = run(cell, cell.project_input(x), s0, cell.rec_params(), mask, reverse, backend, probe)
    loss = (hs * weights).sum() + sum((s * s.detach().sign()).sum() for s in sT)  # through the final state
    loss.backward()
    params = [p.grad for p in cell.parameters()]
    return [hs, *sT, x.grad, *[s.grad for s in s0], *params, probe.dh]


@pytest.mark.parametrize("B", [3, 9])  # 9 rows: the time loop splits the batch over threads
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(NATIVE))
def test_native_equals_python(name, dtype, B):
    cell, T = make(name, dtype), 6
    x = torch.randn(T, B, cell.input_size, dtype=dtype)
    s0 = states(cell, B, dtype)
    lengths = torch.tensor([6, 2, 4] * (B // 3))
    mask = (torch.arange(T)[:, None] < lengths[None]).to(dtype)[..., None]
    weights = torch.randn(T, B, cell.output_size, dtype=dtype)
    for m in (None, mask):
        for reverse in (False, True):
            want = grads_of(cell, "python", x, s0, m, reverse, weights)
            got = grads_of(cell, "native", x, s0, m, reverse, weights)
            assert len(want) == len(got)
            for a, b in zip(want, got):
                assert a is not None and b is not None
                torch.testing.assert_close(b, a, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("learn_alpha", [False, True])
def test_native_leaky_equals_python_where_alpha_is_not_one_half(learn_alpha):
    """test_native_equals_python runs leaky at α = 0.5, where α = 1 - α: a native backward with the two swapped
    (dh_{t-1}'s direct part dh α) passed it. Per-unit α here, padded rows and both directions."""
    torch.manual_seed(0)
    cell = CELLS["leaky"](4, 5, alpha=[0.1, 0.3, 0.6, 0.8, 0.95], learn_alpha=learn_alpha).double()
    T, B = 6, 3
    x, s0 = torch.randn(T, B, 4, dtype=torch.float64), states(cell, B, torch.float64)
    mask = (torch.arange(T)[:, None] < torch.tensor([6, 2, 4])[None]).double()[..., None]
    weights = torch.randn(T, B, 5, dtype=torch.float64)
    for reverse in (False, True):
        want = grads_of(cell, "python", x, s0, mask, reverse, weights)
        got = grads_of(cell, "native", x, s0, mask, reverse, weights)
        for a, b in zip(want, got):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(NATIVE))
def test_gradcheck(name):
    """The native Function against finite differences (T=4, B=3, non-zero initial state)."""
    cell = make(name, torch.float64, D=3, H=3)
    T, B = 4, 3
    xw = cell.project_input(torch.randn(T, B, 3, dtype=torch.float64)).detach().requires_grad_()
    s0 = [s.requires_grad_() for s in states(cell, B, torch.float64)]
    P = [None if p is None else p.detach().requires_grad_() for p in cell.rec_params()]
    mask = (torch.arange(T)[:, None] < torch.tensor([4, 2, 3])[None]).double()[..., None]

    def f(xw, *tensors):
        return native.NativeRecurrence.apply(
            type(cell), mask, False, None, False, False, False, len(s0), xw, None, *tensors
        )

    torch.autograd.gradcheck(f, (xw, *s0, *P))


def test_threads_split_rows():
    """With row splitting on, 2 threads and B >= 8 the loop runs per slice of rows; results must not change."""
    cell, threads = make("lstm", torch.float64), torch.get_num_threads()
    native.load().set_row_threads(2)
    xw = cell.project_input(torch.randn(5, 8, 4, dtype=torch.float64))
    s0 = cell.init_state(8)
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(run(cell, xw, s0, cell.rec_params(), backend="native")[0])
    finally:
        torch.set_num_threads(threads)
        native.load().set_row_threads(0)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)


@contextlib.contextmanager
def setting(setter, value, back):
    """The extension's setter(value) inside the block, setter(back) after it."""
    setter(value)
    try:
        yield
    finally:
        setter(back)


def check_three_ways(cell, dtype, T, lengths, other):
    """native == python and native == native run under other() (a setting), with masks, reverse, the probe."""
    B = len(lengths)
    x = torch.randn(T, B, cell.input_size, dtype=dtype)
    s0 = states(cell, B, dtype)
    mask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).to(dtype)[..., None]
    weights = torch.randn(T, B, cell.output_size, dtype=dtype)
    for m in (None, mask):
        for reverse in (False, True):
            want = grads_of(cell, "python", x, s0, m, reverse, weights)
            got = grads_of(cell, "native", x, s0, m, reverse, weights)
            with other():
                alt = grads_of(cell, "native", x, s0, m, reverse, weights)
            for a, b, c in zip(want, got, alt):
                torch.testing.assert_close(b, a, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
                torch.testing.assert_close(b, c, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(NATIVE))
def test_rows_split_over_threads_long_loop(name, dtype):
    """From 8 steps each row-slice thread multiplies by its own prepared (packed) copy of the recurrent
    weights: same numbers as python and as one thread over all rows, with masks, reverse and the probe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # 3 slices of 13 rows (4, 4, 5) even on a 2-core machine
    try:
        with setting(native.load().set_row_threads, 3, 0):
            cell = make(name, dtype, D=7, H=40)
            lengths = [9, 2, 5, 8, 1, 9, 9, 3, 7, 9, 6, 4, 9]
            check_three_ways(cell, dtype, 9, lengths, lambda: setting(native.load().set_row_threads, 1, 3))
    finally:
        torch.set_num_threads(threads)


def test_no_grad_saves_nothing_and_matches():
    cell = make("lstm", torch.float32)
    xw = cell.project_input(torch.randn(7, 2, 4))
    s0 = cell.init_state(2)
    with torch.no_grad():
        hs, sT = run(cell, xw, s0, cell.rec_params(), backend="native")
        ref, refT = run(cell, xw, s0, cell.rec_params(), backend="python")
    assert not hs.requires_grad
    torch.testing.assert_close(hs, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sT[1], refT[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(NATIVE))
@pytest.mark.parametrize("T,B,H", [(1, 3, 8), (2, 8, 16), (7, 8, 16), (12, 3, 64), (9, 3, 256)])
def test_no_grad_every_path_matches(name, T, B, H):
    """Without a backward to follow, the loop keeps 2 state slots and (LSTM, GRU) no caches: the same
    outputs and final states as the python backend, both directions, odd and even T, padded rows, and
    every way of running the loop (one thread, rows split, units split: 2 threads and T >= 8)."""
    cell, threads = make(name, torch.float64, D=5, H=H), torch.get_num_threads()
    torch.manual_seed(1)
    xw = cell.project_input(torch.randn(T, B, 5, dtype=torch.float64))
    s0 = states(cell, B, torch.float64)
    mask = (torch.arange(T)[:, None] < torch.randint(1, T + 1, (B,))[None]).double()[..., None]
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            for reverse in (False, True):
                hs, sT = run(cell, xw, s0, cell.rec_params(), mask, reverse, "native")
                ref, refT = run(cell, xw, s0, cell.rec_params(), mask, reverse, "python")
                torch.testing.assert_close(hs, ref, rtol=1e-12, atol=1e-12)
                for a, b in zip(sT, refT):
                    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["lstm", "gru", "leaky", "mut1"])
def test_inference_mode_matches_no_grad(name):
    """Under torch.inference_mode (serving code) a layer gives what it gives under no_grad, on every backend, as
    inference tensors (recycled buffers included, T = 40: pooled); a normal call after it still tracks gradients."""
    torch.manual_seed(0)
    layer, x = Recurrent(name, 16, 64, num_layers=2, bidirectional=True), torch.randn(5, 40, 16)
    lengths = torch.tensor([40, 3, 17, 40, 9])
    for backend in ("native", "python", "autograd"):
        layer.backend = backend
        with torch.no_grad():
            want, want_h = layer(x, lengths=lengths)
        with torch.inference_mode():
            got, got_h = layer(x, lengths=lengths)
        assert got.is_inference()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got_h, want_h, rtol=0, atol=0)
        out, _ = layer(x, lengths=lengths)
        out.sum().backward()
        assert all(p.grad is not None for p in layer.parameters())
        layer.zero_grad()


def _same_bits_without_and_with_grad(layer, x):
    """layer(x) under no_grad and recording gradients: the same outputs and final states, to the last bit."""
    with torch.no_grad():
        want, want_h = layer(x)
    got, got_h = layer(x)
    assert got.grad_fn is not None
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_h, want_h, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lstm", "lstmp", "gru", "leaky", "mut1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("H, T, layers", [(16, 12, 1), (7, 3, 1), (13, 12, 1), (9, 5, 2), (7, 13, 2)])
def test_evaluation_gives_the_training_forwards_bits(name, dtype, H, T, layers):
    """A forward under no_grad (no caches kept for a backward) gives the outputs and final states of the same forward
    recording gradients, to the last bit, as torch.nn's RNNs do: LSTM's c_t = f c_{t-1} + i g was contracted into
    an FMA one way in the loop that keeps caches and the other way in the one that doesn't (1e-16 off in float64);
    and MKL's sgemm, which picks its kernel by an operand's alignment, read h_prev (and lstmp's h_t = u_t W_hrᵀ)
    from the 2-slot ring at other offsets than from the T+1 slots where B·H is not a multiple of 16 (1e-8 off), and
    the layer above's projection read a lower layer's output as a view of those slots, h_1 at B·H floats past them."""
    torch.manual_seed(0)
    kw = {"proj_size": 5} if name == "lstmp" else {}
    layer = Recurrent("lstm" if name == "lstmp" else name, 16, H, layers, backend="native", dtype=dtype, **kw)
    x = torch.randn(3, T, 16, dtype=dtype)
    _same_bits_without_and_with_grad(layer, x)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru", "leaky"])
@pytest.mark.parametrize("dtype, B", [(torch.float64, 1), (torch.float32, 2), (torch.float64, 4)])
def test_a_stacked_layers_evaluation_gives_the_training_forwards_bits(name, dtype, B):
    """A lower layer's output, recording gradients, is a view of the states the loop keeps (h_1..h_T, a row of B·H
    numbers in): at B·H·itemsize 56 bytes (B = 1, H = 7 in float64) the layer above's projection read it at another
    alignment than the loop's own buffer under no_grad, and MKL's GEMM summed in another order (outputs and h_n 1e-16
    off in float64, 1e-7 in float32). The view is taken only where it lies as the loop's buffers do."""
    torch.manual_seed(0)
    layer = Recurrent(name, 5, 7, num_layers=3, backend="native", dtype=dtype)
    x = torch.randn(B, 12, 5, dtype=dtype)
    _same_bits_without_and_with_grad(layer, x)


@pytest.mark.parametrize("name", ["lstm", "gru", "mut1"])
@pytest.mark.parametrize("T", [3, 12])  # native projects in its own buffers from 8 steps on
def test_inference_mode_under_enable_grad_matches_no_grad(name, T):
    """torch.inference_mode() records nothing, also under torch.enable_grad() (a helper's own enable_grad in serving
    code): there the python and native loops, the native projection and MUT1's tanh (any backend, and the cell
    itself) failed with torch's "Inference tensors cannot be saved for backward", where torch.nn's RNNs run; they
    give what no_grad gives."""
    torch.manual_seed(0)
    layer, x = Recurrent(name, 4, 5, bidirectional=True), torch.randn(3, T, 4, requires_grad=True)
    for backend in ("native", "python", "autograd"):
        layer.backend = backend
        with torch.no_grad():
            want, want_h = layer(x, lengths=[T, 2, 1])
        with torch.inference_mode(), torch.enable_grad():
            got, got_h = layer(x, lengths=[T, 2, 1])
        assert got.is_inference() and not got.requires_grad
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got_h, want_h, rtol=0, atol=0)
    cell = CELLS[name](4, 5)
    with torch.no_grad():
        want = cell(x[:, 0])
    with torch.inference_mode(), torch.enable_grad():
        torch.testing.assert_close(cell(x[:, 0]), want, rtol=0, atol=0)


def test_a_subclass_of_a_cell_that_only_draws_its_weights_otherwise_runs_natively():
    """The engine keyed on the exact class: `class Ortho(LSTM)` with an orthogonal W_hh ran on the python loop,
    2-4x slower, with a warning that it "is not one of rnnkit's cells". A subclass that defines only __init__,
    reset_parameters or extra_repr is its base to the engine; one that defines anything else (its own step,
    another declaration) is a cell of its own, which python runs."""

    class Ortho(CELLS["lstm"]):
        def reset_parameters(self):
            super().reset_parameters()
            torch.nn.init.orthogonal_(self.W_hh)

    class Deeper(Ortho):
        pass

    class Own(CELLS["lstm"]):
        step = staticmethod(CELLS["lstm"].step)

    xw = torch.zeros(1, 1, 16)
    for cls in (Ortho, Deeper):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert resolve_backend("native", cls, xw) == "native"
        torch.manual_seed(0)
        layer = Recurrent(cls, 3, 4, num_layers=2, backend="native")
        ref = Recurrent("lstm", 3, 4, num_layers=2, backend="autograd")
        ref.load_state_dict(layer.state_dict())
        x = torch.randn(2, 5, 3)
        out, _ = layer(x)
        assert type(out.grad_fn).__name__ == "NativeRecurrenceBackward"
        torch.testing.assert_close(out, ref(x)[0])
    with pytest.warns(RuntimeWarning, match="Own is not one of rnnkit's cells"):
        assert resolve_backend("native", Own, xw) == "python"


def test_a_subclass_given_a_step_after_its_first_run_runs_that_step():
    """The engine read a subclass that defined only reset_parameters as its base once, and kept that answer: a step
    and step_backward set on the class afterwards (a notebook's cell run again, `Doubled.step = staticmethod(f)`)
    were never run by a layer on any backend, which computed the base's function in silence (cell(x_t) ran the new
    step). A class whose attributes changed since is read again."""

    class Doubled(CELLS["rnn_tanh"]):
        def reset_parameters(self):
            super().reset_parameters()

    def doubled(xw_t, state, P):
        (h_t,), us, _ = CELLS["rnn_tanh"].step(xw_t, state, P)
        return (2 * h_t,), us, (h_t,)

    def doubled_backward(dstate, cache, P):
        return CELLS["rnn_tanh"].step_backward((2 * dstate[0],), cache, P)

    class Fresh(CELLS["rnn_tanh"]):  # the same step from the start
        step, step_backward = staticmethod(doubled), staticmethod(doubled_backward)

    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    layer = Recurrent(Doubled, 3, 4, dtype=torch.float64)
    fresh = Recurrent(Fresh, 3, 4, dtype=torch.float64)
    fresh.load_state_dict(layer.state_dict())
    layer(x)  # read as rnn_tanh
    Doubled.step, Doubled.step_backward = staticmethod(doubled), staticmethod(doubled_backward)
    assert cell_class(Doubled) is Doubled
    for backend in ("autograd", "python", "native"):
        layer.backend = fresh.backend = backend
        xs = [x.clone().requires_grad_() for _ in range(2)]
        for module, xi in zip((layer, fresh), xs):
            module(xi)[0].pow(2).sum().backward()
        torch.testing.assert_close(layer(x)[0], fresh(x)[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-12, atol=1e-12)


def test_a_subclass_of_a_cell_registered_in_CELLS_still_runs_as_its_base(monkeypatch):
    """Registered in rnnkit.CELLS (to be used by name, `rnnkit train --cell ortho`), such a subclass was taken for one
    of rnnkit's own cells, and so for a cell of its own math: traced into kernels of its own, slower than its base's
    and not its bits, or its base, depending on whether the engine had met the class before it was registered."""

    class Ortho(CELLS["lstm"]):
        def reset_parameters(self):
            super().reset_parameters()
            torch.nn.init.orthogonal_(self.W_hh)

    monkeypatch.setitem(CELLS, "ortho", Ortho)
    torch.manual_seed(0)
    layer = Recurrent("ortho", 3, 4, backend="native")
    ref = Recurrent("lstm", 3, 4, backend="native")
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 3)
    assert cell_class(Ortho) is CELLS["lstm"]
    torch.testing.assert_close(layer(x)[0], ref(x)[0], rtol=0, atol=0)


def test_resolve_backend():
    xw = torch.zeros(1, 1, 4)
    assert resolve_backend(None, CELLS["gru"], xw) == "native"
    # (float16 and bfloat16 run in float32: engine._in_float32)
    assert resolve_backend(None, CELLS["gru"], xw.to(torch.bfloat16)) == "native"
    assert resolve_backend(None, CELLS["gru"], xw.to("meta")) == "python"
    # a backend named is the one that runs, where native would (the python loop: its own bits, any device)
    assert resolve_backend("python", CELLS["gru"], xw) == "python"
    assert resolve_backend("autograd", CELLS["gru"], xw) == "autograd"

    class Mine(CELLS["rnn_tanh"]):  # a user-defined cell: python runs its own step, quietly by default
        step = staticmethod(CELLS["rnn_tanh"].step)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend(None, Mine, xw) == "python"
    with pytest.warns(RuntimeWarning, match="Mine is not one of rnnkit's cells"):  # asked for: said (once)
        assert resolve_backend("native", Mine, xw) == "python"


@pytest.mark.parametrize("name", list(NATIVE))
@pytest.mark.parametrize("mode", ["dnnl", "blas", "packed", "own"])
@pytest.mark.parametrize("T", [5, 9])  # from 8 steps on, the per-step weights are prepared once
def test_forced_gemm_library_matches_python(name, mode, T):
    """Float32 GEMMs go to MKL or oneDNN, whichever is faster per shape; force each at test sizes."""
    cell, B = make(name, torch.float32), 4
    x = torch.randn(T, B, cell.input_size)
    s0 = states(cell, B)
    weights = torch.randn(T, B, cell.output_size)
    native.load().set_gemm(mode)
    try:
        got = grads_of(cell, "native", x, s0, None, False, weights)
    finally:
        native.load().set_gemm("auto")
    want = grads_of(cell, "python", x, s0, None, False, weights)
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gru_cho", "mut1", "mut2", "mut3", "lstm"])
@pytest.mark.parametrize("D", [6, 8])  # mut1-3: D = H reads x itself (an identity block), D != H a projection
def test_onednn_reads_blocks_of_columns_as_they_lie(name, D):
    """oneDNN through torch reads an operand in place only when it is contiguous, transposed or not: the weight
    gradients of a block of dxw's columns (gated cells) were made contiguous by a transposing copy slower than
    the GEMM; the engine now packs such a block row by row (run.h, dense_rows). Every GEMM forced to oneDNN,
    the layer's outputs and gradients equal the autograd backend's."""
    torch.manual_seed(0)
    ours = Recurrent(name, D, 8, num_layers=2, backend="native")
    ref = Recurrent(name, D, 8, num_layers=2, backend="autograd")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 11, D)
    results = []
    for layer, mode in ((ours, "dnnl"), (ref, "auto")):
        native.load().set_gemm(mode)
        try:
            xi = x.clone().requires_grad_()
            out, _ = layer(xi, lengths=torch.tensor([11, 4, 7]))
            out.pow(2).sum().backward()
        finally:
            native.load().set_gemm("auto")
        results.append([out.detach(), xi.grad, *(p.grad for p in layer.parameters())])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(NATIVE))
def test_hidden_units_split_over_threads(name, dtype):
    """From 8 steps and 32 units a thread (gated cells: 256 units), threads split the hidden units (split.h):
    same numbers as python, with masks, reverse, the probe; and as the unsplit loop (RNNKIT_SPLIT=0)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # 3 slabs (96 units: 32, 32, 32... rounded to 16s) even on a 2-core machine
    try:
        with setting(native.load().set_row_threads, 1, 0):  # small weights would split the rows instead
            H = (
                300 if name in ("gru_cho", "mut1", "mut2", "mut3") else 100
            )  # gated cells split from 256 units
            cell = make(name, dtype, D=7, H=H)
            check_three_ways(cell, dtype, 9, [9, 2, 5, 8, 1], lambda: setting(native.load().set_split, 0, 1))
    finally:
        torch.set_num_threads(threads)


def test_hidden_units_split_over_fewer_threads_than_slabs():
    """The units are cut into as many slabs as torch has threads, and OpenMP may give the team fewer (here
    OMP_THREAD_LIMIT=2 under torch.set_num_threads(3)): a thread then prepares and runs several slabs (split.h:
    k = id, id + got, ...). The python backend's numbers, forward and backward, one-GEMM and gated cells (float64)."""
    import subprocess
    import sys

    code = (
        "import torch\nfrom rnnkit.cells import CELLS\nfrom rnnkit.engine import run\n"
        "torch.set_num_threads(3)\n"
        "for name, H in (('lstm', 100), ('gru_cho', 300)):\n"
        "    torch.manual_seed(0)\n"
        "    cell = CELLS[name](7, H).double()\n"
        "    x = torch.randn(9, 5, 7, dtype=torch.float64, requires_grad=True)\n"
        "    s0 = [torch.randn(5, H, dtype=torch.float64) for _ in range(cell.num_states)]\n"
        "    got = []\n"
        "    for backend in ('python', 'native'):\n"
        "        x.grad = None\n"
        "        cell.zero_grad()\n"
        "        hs, sT = run(cell, cell.project_input(x), s0, cell.rec_params(), backend=backend)\n"
        "        (hs * hs).sum().backward()\n"
        "        got.append([hs.detach(), *sT, x.grad, *[p.grad for p in cell.parameters()]])\n"
        "    print(name, max(float((a - b).abs().max()) for a, b in zip(*got)))\n"
    )
    # (RNNKIT_ROW_THREADS=1: the units split, not the rows)
    env = {**os.environ, "OMP_THREAD_LIMIT": "2", "RNNKIT_ROW_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    lines = out.stdout.split("\n")
    assert out.returncode == 0 and len(lines) >= 2, out.stdout + out.stderr
    for line in lines[:2]:
        name, diff = line.split()
        assert float(diff) < 1e-10, out.stdout + out.stderr


def test_recycled_buffers_never_alias_live_tensors():
    """Big buffers come back from a pool (csrc/pool.h) only once nothing holds them: outputs kept from one
    call are not overwritten by the next, and a freed buffer's reuse gives the same numbers."""
    torch.manual_seed(0)
    cell, T, B = CELLS["lstm"](16, 64), 40, 16  # buffers of 160 KB and more: pooled
    xw = cell.project_input(torch.randn(T, B, 16)).detach()
    s0 = (torch.zeros(B, 64), torch.zeros(B, 64))
    with torch.no_grad():
        first, _ = run(cell, xw, s0, cell.rec_params(), backend="native")
        kept = first.clone()
        second, _ = run(cell, xw * 2, s0, cell.rec_params(), backend="native")
        assert first.data_ptr() != second.data_ptr()
        torch.testing.assert_close(first, kept, rtol=0, atol=0)
        del first, second
        again, _ = run(cell, xw, s0, cell.rec_params(), backend="native")
    torch.testing.assert_close(again, kept, rtol=0, atol=0)


def test_recycled_outputs_resize_as_torch_outputs_do():
    """An output in a recycled buffer resizes as at::empty's (torch.nn.LSTM's outputs) does: out.resize_ to a bigger
    shape keeps its values (it raised "Trying to resize storage that is not resizable"), and the buffer it leaves
    goes back to the pool."""
    ext = native.load()
    layer = Recurrent("lstm", 16, 64, backend="native")
    with torch.no_grad():
        out, _ = layer(torch.randn(16, 40, 16))  # 160 KB: pooled
    want, live = out.clone(), ext.pool_stats()[1]
    out.resize_(32, 40, 64)
    torch.testing.assert_close(out[:16], want, rtol=0, atol=0)
    assert ext.pool_stats()[1] <= live - want.numel() * 4
    out.untyped_storage().resize_(0)
    assert out.untyped_storage().nbytes() == 0


@pytest.mark.parametrize("bias", [True, False])
def test_projection_equals_linear(bias):
    """The native input projection (recycled buffers) is F.linear: values and every gradient, float64."""
    torch.manual_seed(0)
    x = torch.randn(9, 4, 6, dtype=torch.float64, requires_grad=True)
    W = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(20, dtype=torch.float64, requires_grad=True) if bias else None
    torch.autograd.gradcheck(native.project, (x, W, b))
    g = torch.randn(9, 4, 20, dtype=torch.float64)
    want = torch.autograd.grad(torch.nn.functional.linear(x, W, b), [x, W] + ([b] if bias else []), g)
    got = torch.autograd.grad(native.project(x, W, b), [x, W] + ([b] if bias else []), g)
    for a, c in zip(want, got):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(NATIVE))
def test_layer_native_projection_equals_python(name, dtype):
    """A layer long enough (T >= 8) for the native projection: where b_xh and b_hh add to the same
    pre-activation the loop adds b_xh + b_hh and the projection has no bias; every gradient as python's."""
    from rnnkit import Recurrent

    torch.manual_seed(0)
    kw = {"learn_alpha": True} if name == "leaky" else {"proj_size": 7} if name == "lstmp" else {}
    name = "lstm" if name == "lstmp" else name
    layer = Recurrent(name, 6, 20, num_layers=2, bidirectional=True, **kw).to(dtype)
    ref = Recurrent(name, 6, 20, num_layers=2, bidirectional=True, **kw).to(dtype)
    ref.load_state_dict(layer.state_dict())
    layer.backend, ref.backend = "native", "python"
    x = torch.randn(3, 9, 6, dtype=dtype)
    lengths = torch.tensor([9, 4, 7])
    for m in (layer, ref):
        out, _ = m(x, lengths=lengths)
        (out * torch.linspace(-1, 1, out.shape[-1], dtype=dtype)).sum().backward()
    for a, b in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    cell = layer.cells[0]
    if cell.b_xh is not None and getattr(cell, "b_hh", None) is not None:
        assert cell.b_xh.grad.data_ptr() != cell.b_hh.grad.data_ptr()


GATED = ["gru_cho", "mut1", "mut2", "mut3"]


@pytest.mark.parametrize("split", ["rows", "units"])
@pytest.mark.parametrize("variant", ["bias", "no bias", "cond", "D = H"])
@pytest.mark.parametrize("name", GATED)
def test_layer_loop_adds_input_bias(name, variant, split):
    """gru_cho and MUT1-3 leave b_xh to the loop (which sums its gradient as it runs), MUT1 its tanh(x̃) too:
    float64 values and every gradient as the python backend's, with the batch rows or (H = 272, three
    threads) the hidden units split over threads; without a bias, with a conditioning vector (added to xw
    after the tanh, so MUT1's x̃ then comes already through it) and with D = H (x̃ = x, no W_xp; MUT1's loop
    then reads x̃ from the input itself and its gradient joins dx inside the projection's backward)."""
    from rnnkit import Recurrent

    H = 272 if split == "units" else 12
    D = H if variant == "D = H" else 5
    kw = dict(bias=variant != "no bias", cond_size=3 if variant == "cond" else 0, bidirectional=True)
    torch.manual_seed(0)
    layer = Recurrent(name, D, H, **kw).double()
    ref = Recurrent(name, D, H, **kw).double()
    ref.load_state_dict(layer.state_dict())
    layer.backend, ref.backend = "native", "python"
    x = torch.randn(3, 9, D, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(3, 3, dtype=torch.float64)
    lengths, w = torch.tensor([9, 4, 8]), torch.randn(3, 9, 2 * H, dtype=torch.float64)
    _, _, fold = layer._project(layer.cells[0], x.transpose(0, 1), raw_ok=variant != "cond")
    assert (fold["xbias"] is not None) == (variant != "no bias")  # the path under test is the one taken
    assert fold["raw_tail"] == (name == "mut1" and variant != "cond")
    assert ("xtilde" in fold) == (name == "mut1" and variant == "D = H")
    threads = torch.get_num_threads()
    try:
        if split == "units":
            torch.set_num_threads(3)
        with setting(native.load().set_row_threads, 1 if split == "units" else 0, 0):
            dx = []
            for m in (layer, ref):
                out, h = m(x, lengths=lengths, cond=cond if variant == "cond" else None)
                ((out * w).sum() + (h * h).sum()).backward()
                dx.append(x.grad)
                x.grad = None
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(dx[0], dx[1], rtol=1e-10, atol=1e-10, msg="dL/dx")
    for (n, a), b in zip(layer.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize("D", [3, 4])
@pytest.mark.parametrize("name", GATED)
def test_layer_loop_adds_input_bias_gradcheck(name, D):
    """The same path (T = 8: the native projection) against finite differences, float64; D = H too."""
    from rnnkit import Recurrent

    torch.manual_seed(0)
    layer = Recurrent(name, D, 4, backend="native").double()
    x = torch.randn(2, 8, D, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))[0]

    torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in layer.parameters()]))


@pytest.mark.parametrize("name", GATED)
def test_layer_loop_adds_input_bias_with_the_rows_split_over_threads(name):
    """The loop sums b_xh's gradient per thread, one row of partial sums each (rows split over threads: B = 9, two
    threads, small weights), and the rows are summed after it: the python backend's gradient, not thread 0's part.
    (test_layer_loop_adds_input_bias's batch of 3 never splits the rows: a thread takes 4 rows at least.)"""
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to split")
    torch.manual_seed(0)
    layer = Recurrent(name, 5, 12, bidirectional=True).double()
    ref = Recurrent(name, 5, 12, bidirectional=True).double()
    ref.load_state_dict(layer.state_dict())
    layer.backend, ref.backend = "native", "python"
    x = torch.randn(9, 9, 5, dtype=torch.float64)
    assert layer._project(layer.cells[0], x.transpose(0, 1), raw_ok=True)[2]["xbias"] is not None  # folded
    lengths = torch.tensor([9, 4, 8, 9, 1, 6, 9, 2, 7])
    with setting(native.load().set_row_threads, 0, 0):
        grads = []
        for m in (layer, ref):
            out, h = m(x, lengths=lengths)
            (out.pow(2).sum() + h.pow(2).sum()).backward()
            grads.append([p.grad for p in m.parameters()])
    for (n, _), a, b in zip(layer.named_parameters(), *grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=n)


@pytest.mark.parametrize("name", ["mut1", "mut2", "lstm"])
def test_layer_native_equals_python_when_input_size_is_hidden_size(name):
    """D = H: MUT1/MUT2 take x̃ = x_t itself (no W_xp) and keep their own projection."""
    from rnnkit import Recurrent

    torch.manual_seed(0)
    layer, ref = Recurrent(name, 12, 12, num_layers=2), Recurrent(name, 12, 12, num_layers=2)
    ref.load_state_dict(layer.state_dict())
    layer.backend, ref.backend = "native", "python"
    x = torch.randn(3, 10, 12, dtype=torch.float32)
    for m in (layer, ref):
        out, _ = m(x)
        (out * torch.linspace(-1, 1, 12)).sum().backward()
    for a, b in zip(layer.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tail, ident", [(6, -1), (0, 6), (6, 12), (0, 0)])
def test_projection_with_tanh_tail_and_identity_block(tail, ident, bias):
    """MUT1/MUT2's projections: the last `tail` columns pass through tanh before the bias, and columns
    [ident, ident + D) are x itself (W has no rows for them), natively as Cell.project_input does it;
    values and gradients (gradcheck, float64)."""
    from rnnkit.cells._base import TanhTail

    torch.manual_seed(0)
    D, G = 6, 18
    x = torch.randn(9, 4, D, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G - (D if ident >= 0 else 0), D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(G, dtype=torch.float64, requires_grad=True) if bias else None

    def reference(x, W, b):
        pre = torch.nn.functional.linear(x, W)
        if ident >= 0:
            pre = torch.cat((pre[..., :ident], x, pre[..., ident:]), -1)
        if tail:
            return TanhTail.apply(pre, tail, b)
        return pre if b is None else pre + b

    torch.autograd.gradcheck(lambda *a: native.project(*a, tail, ident), (x, W, b))
    g = torch.randn(9, 4, G, dtype=torch.float64)
    want_xw, got_xw = reference(x, W, b), native.project(x, W, b, tail, ident)
    torch.testing.assert_close(got_xw, want_xw, rtol=1e-12, atol=1e-12)
    ins = [x, W] + ([b] if bias else [])
    for a, c in zip(torch.autograd.grad(want_xw, ins, g), torch.autograd.grad(got_xw, ins, g)):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tail, ident", [(6, -1), (0, 6), (6, 12)])
def test_projection_with_tanh_tail_or_identity_block_broadcasts_a_one_value_bias(tail, ident):
    """A bias of one value, b (1,), broadcast over the G columns as F.linear and Cell.project_input take it: with a
    tanh tail or an identity block the projection read b[j] for every column j, past its one value (AddressSanitizer:
    heap-buffer-overflow), and gave other numbers than the reference; without either it was right already."""
    from rnnkit.cells._base import affine_input

    torch.manual_seed(0)
    D, G = 6, 18
    x = torch.randn(9, 4, D, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G - (D if ident >= 0 else 0), D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    want = affine_input(x, W, b, tail, None if ident < 0 else ident)
    got = native.project(x, W, b, tail, ident)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(9, 4, G, dtype=torch.float64)
    for a, c in zip(torch.autograd.grad(want, (x, W, b), g), torch.autograd.grad(got, (x, W, b), g)):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 18), (1, 1)])
@pytest.mark.parametrize("ident", [-1, 6])
def test_projection_gives_a_two_dimensional_bias_its_gradient_in_its_shape(shape, ident):
    """A bias of F.linear's broadcast shapes (1, G) or (1, 1): the forward took it, but backward returned Σ dxw as
    (G,), and autograd refused it ('NativeProjectionBackward returned an invalid gradient at index 2 - got [18] but
    expected shape compatible with [1, 18]'); it is summed to b's shape now, as affine_input's gradient."""
    from rnnkit.cells._base import affine_input

    torch.manual_seed(0)
    D, G = 6, 18
    x = torch.randn(9, 4, D, dtype=torch.float64, requires_grad=True)
    W = torch.randn(G - (D if ident >= 0 else 0), D, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    want = affine_input(x, W, b, 0, None if ident < 0 else ident)
    got = native.project(x, W, b, 0, ident)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(9, 4, G, dtype=torch.float64)
    for a, c in zip(torch.autograd.grad(want, (x, W, b), g), torch.autograd.grad(got, (x, W, b), g)):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(NATIVE))
def test_batch_first_outputs(name):
    """batch_first: the native loop writes hs as (B, T, H) and reads dL/dhs so; the same numbers as
    python's time-major hs transposed (float64, masks, reverse, probe, split and unsplit sizes)."""
    for H, T in ((5, 6), (40, 9)):
        cell, B = make(name, torch.float64, D=4, H=H), 9
        x = torch.randn(T, B, 4, dtype=torch.float64)
        s0, Hout = states(cell, B, torch.float64), cell.output_size
        lengths = torch.tensor([T, 2, 4] * 3)
        mask = (torch.arange(T)[:, None] < lengths[None]).double()[..., None]
        weights = torch.randn(B, T, Hout, dtype=torch.float64)
        for reverse in (False, True):
            results = []
            for backend, bf in (("python", False), ("native", True)):
                cell.zero_grad()
                xr, probe = x.clone().requires_grad_(), GradProbe()
                hs, sT = run(
                    cell, cell.project_input(xr), s0, cell.rec_params(), mask, reverse, backend, probe, bf
                )
                hs = hs if bf else hs.transpose(0, 1)
                assert hs.shape == (B, T, Hout)
                ((hs * weights).sum() + sT[0].sum()).backward()
                results.append([hs, *sT, xr.grad, *[p.grad for p in cell.parameters()], probe.dh])
            for a, b in zip(*results):
                torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def plain_rnn_tanh(xw, h0, W_hh, b_hh, mask=None):
    """The reference: h_t = tanh(xw_t + h_{t-1} W_hhᵀ + b_hh), kept where m_t = 1 (outputs 0 at padding)."""
    h, hs = h0, []
    for t in range(xw.shape[0]):
        new = torch.tanh(xw[t] + h @ W_hh.T + b_hh)
        m = 1 if mask is None else mask[t].reshape(-1, 1)
        h = m * new + (1 - m) * h
        hs.append(m * new)
    return torch.stack(hs), h


def test_a_gradient_of_xw_alone_reaches_it():
    """Only xw needs a gradient (a frozen layer fed by a trainable one below it, or dL/dx of a trained model): the
    loop keeps its caches for backward all the same (a loop keeping them only for the state's and the weights'
    gradients fails there with an IndexError). Reference: plain_rnn_tanh, float64."""
    cell, B = make("rnn_tanh", torch.float64), 3
    xw = cell.project_input(torch.randn(6, B, 4, dtype=torch.float64)).detach()
    (h0,), (W_hh, b_hh) = states(cell, B, torch.float64), [p.detach() for p in cell.rec_params()]
    w = torch.randn(6, B, 5, dtype=torch.float64)
    got, want = xw.clone().requires_grad_(), xw.clone().requires_grad_()
    hs, (hT,) = run(cell, got, (h0,), (W_hh, b_hh), backend="native")
    ref, refT = plain_rnn_tanh(want, h0, W_hh, b_hh)
    (dgot,) = torch.autograd.grad((hs * w).sum() + hT.sum(), got)
    (dwant,) = torch.autograd.grad((ref * w).sum() + refT.sum(), want)
    torch.testing.assert_close(dgot, dwant, rtol=1e-12, atol=1e-12)


def test_a_mask_or_weight_laid_out_column_major_is_read_as_its_values():
    """A mask (T, B) or a W_hh laid out column-major (a transposed tensor's .T, as m.T.contiguous().T makes
    them) is read as its values: the C++ loop reads flat row-major memory (read so, a mask of lengths
    [5, 2, 3] gives outputs 0.86 off, a W_hh 0.43 off). Reference: plain_rnn_tanh, float64."""
    cell, B = make("rnn_tanh", torch.float64), 3
    xw = cell.project_input(torch.randn(5, B, 4, dtype=torch.float64)).detach()
    (h0,), (W_hh, b_hh) = states(cell, B, torch.float64), [p.detach() for p in cell.rec_params()]
    mask = (torch.arange(5)[:, None] < torch.tensor([5, 2, 3])).double()
    want = plain_rnn_tanh(xw, h0, W_hh, b_hh, mask)
    for m, W in ((mask.T.contiguous().T, W_hh), (mask, W_hh.T.contiguous().T)):
        assert not (m.is_contiguous() and W.is_contiguous())
        hs, (hT,) = run(cell, xw, (h0,), (W, b_hh), m, backend="native")
        torch.testing.assert_close((hs, hT), want, rtol=1e-12, atol=1e-12)


def test_a_gradient_of_mut1s_xtilde_alone_reaches_it():
    """run(mut1, xw, ..., raw_tail=True, xtilde=x) (Recurrent's D = H path: the loop reads x̃ = x in place) where
    x alone needs a gradient (xw, the state and the weights frozen): the loop is recorded for backward (run
    without it, hs has no grad_fn). Reference: the autograd loop over [xw, tanh(x)] + b_xh."""
    torch.manual_seed(0)
    H, B = 4, 3
    cell = CELLS["mut1"](H, H).double()
    P = tuple(p.detach() for p in cell.rec_params())
    xw, b = torch.randn(5, B, 2 * H, dtype=torch.float64), torch.randn(3 * H, dtype=torch.float64)
    h0, w = torch.randn(B, H, dtype=torch.float64), torch.randn(5, B, H, dtype=torch.float64)
    x = torch.randn(5, B, H, dtype=torch.float64, requires_grad=True)
    hs, _ = run(cell, xw, (h0,), P, backend="native", xbias=b, raw_tail=True, xtilde=x)
    ref, _ = run(cell, torch.cat((xw, torch.tanh(x)), -1) + b, (h0,), P, backend="autograd")
    torch.testing.assert_close(hs, ref, rtol=1e-12, atol=1e-12)
    assert hs.requires_grad
    torch.testing.assert_close(
        torch.autograd.grad((hs * w).sum(), x)[0],
        torch.autograd.grad((ref * w).sum(), x)[0],
        rtol=1e-12,
        atol=1e-12,
    )


def test_projection_backward_of_the_bias_alone():
    """Only b needs a gradient (x and W frozen): the tanh-tail projection still gives Σ dxw."""
    torch.manual_seed(0)
    x, W = torch.randn(9, 4, 6, dtype=torch.float64), torch.randn(12, 6, dtype=torch.float64)
    b = torch.randn(18, dtype=torch.float64, requires_grad=True)
    g = torch.randn(9, 4, 18, dtype=torch.float64)
    (db,) = torch.autograd.grad(native.project(x, W, b, 6, 12), [b], g)
    torch.testing.assert_close(db, g.reshape(-1, 18).sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plan", [0, 1, 2])
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_every_gemm_plan(plan, ta, tb):
    """The float32 GEMM plans the engine times per shape (MKL, oneDNN, the transposed problem) all give
    op(A) op(B) + beta·C (the transposed one only runs with beta = 0)."""
    torch.manual_seed(0)
    M, N, K = 70, 90, 40
    A = torch.randn((K, M) if ta else (M, K))
    B = torch.randn((N, K) if tb else (K, N))
    C0 = torch.randn(M, N)
    want = (A.t() if ta else A) @ (B.t() if tb else B)
    for beta in (0.0, 1.0):
        got = native.load().gemm_run(plan, ta, tb, A, B, beta, C0.clone())
        torch.testing.assert_close(got, want + beta * C0, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name, H, B", [("lstm", 337, 3), ("rnn_tanh", 149, 16)])  # shapes timed nowhere else
def test_first_call_of_a_shape_leaves_the_random_stream_alone(name, H, B):
    """The first call of a new float32 shape times its GEMMs (RNNKIT_GEMM=auto) on fixed operands: it used to
    draw them from torch's generator, so a model with dropout drew other masks on its first call than on
    any backend or on later calls (out off by 0.03 at H = 333)."""
    x = torch.randn(B, 9, 8)  # T >= 8: prepared step weights (16 rows: split over 2 threads)
    with setting(native.load().set_gemm, "auto", "auto"):
        outs, draws = {}, {}
        for backend in ("autograd", "native"):
            torch.manual_seed(1)
            layer = Recurrent(name, 8, H, num_layers=2, dropout=0.3, backend=backend)
            torch.manual_seed(7)
            outs[backend] = layer(x)[0]
            draws[backend] = torch.rand(3)
    torch.testing.assert_close(draws["native"], draws["autograd"], rtol=0, atol=0)
    torch.testing.assert_close(outs["native"], outs["autograd"], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    native.load() is None or not native.load().have_own_gemm(),
    reason="rnnkit's own GEMM kernel needs an AVX-512 CPU",
)
@pytest.mark.parametrize("tw", [False, True])
@pytest.mark.parametrize(
    "M, N, K", [(1, 5, 1), (7, 16, 3), (8, 31, 17), (13, 32, 64), (16, 48, 128), (21, 130, 9)]
)
def test_own_gemm_kernel(M, N, K, tw):
    """rnnkit's AVX-512 kernel (csrc/kernel.h) at every row tail (blocks of 8), panel tail (32 columns) and
    operand layout, with padded leading dimensions: op(W) = Wᵀ (tw) or W, beta 0 and 1."""
    torch.manual_seed(0)
    A = torch.randn(M, K + 3)[:, :K]
    W = torch.randn((N, K) if tw else (K, N))
    C0 = torch.randn(M, N + 5)
    want = A @ (W.t() if tw else W)
    for beta in (0.0, 1.0):
        got = native.load().own_gemm(A, W, tw, N, beta, C0.clone())
        torch.testing.assert_close(got[:, :N], want + beta * C0[:, :N], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(got[:, N:], C0[:, N:], rtol=0, atol=0)  # nothing written past column N


@pytest.mark.parametrize("var, value", [("RNNKIT_GEMM", "fastest"), ("RNNKIT_ROW_THREADS", "two")])
def test_bad_engine_setting_is_a_one_line_error(var, value):
    """A mistyped engine variable stops with one line naming it and the values it takes (a fresh process:
    the extension reads them once, when it loads)."""
    import subprocess
    import sys

    code = (
        "from rnnkit.engine import native\ntry:\n    native.load()\nexcept ValueError as e:\n    print(e)\n"
    )
    env = {**__import__("os").environ, var: value}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and var in lines[0] and value in lines[0], out.stdout + out.stderr


def test_a_float32_layer_runs_where_the_default_dtype_is_float64():
    """Timing a float32 GEMM's options made its output buffer in the default dtype: after
    torch.set_default_dtype(torch.float64), a float32 GRU's first call of a shape not timed yet stopped with
    "expected scalar type Float but found Double" (on native, the default backend). Now the python backend's
    numbers."""
    import subprocess
    import sys

    code = (
        "import torch, rnnkit\n"
        "torch.set_default_dtype(torch.float64)\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(8, 20, 48, dtype=torch.float32)\n"
        "layers = [rnnkit.Recurrent('gru', 48, 64, dtype=torch.float32, backend=b) for b in ('native', 'python')]\n"
        "layers[1].load_state_dict(layers[0].state_dict())\n"
        "outs = [layer(x)[0] for layer in layers]\n"
        "print(outs[0].dtype, float((outs[0] - outs[1]).abs().max()))\n"
    )
    env = {**__import__("os").environ, "RNNKIT_GEMM": "auto", "RNNKIT_GEMM_PLANS": ""}  # (timed in the run)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    dtype, err = out.stdout.split()
    assert dtype == "torch.float32" and float(err) < 1e-5


def test_engine_setting_in_capitals_runs():
    """RNNKIT_GEMM=BLAS was refused while RNNKIT_NATIVE=OFF and RNNKIT_ROW_THREADS=AUTO ran: any case now."""
    import subprocess
    import sys

    code = "from rnnkit.engine import native\nprint(native.load() is not None)"
    env = {**__import__("os").environ, "RNNKIT_GEMM": "BLAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stdout + out.stderr


@pytest.mark.parametrize("H", [5, 300])  # 300 units: split over threads
@pytest.mark.parametrize("name", list(NATIVE))
def test_nan_and_inf_propagate_as_in_python(name, H):
    """A NaN or inf in the input reaches the outputs and gradients where torch's ops take it (torch.relu(NaN) is
    NaN): the trainer's NaN check sees a diverged run whatever the backend."""
    cell = make(name, torch.float32, H=H)
    x = torch.randn(12, 2, cell.input_size)
    x[3, 0, 1], x[5, 1, 0] = float("nan"), float("inf")
    got = []
    for backend in ("python", "native"):
        cell.zero_grad()
        xb = x.clone().requires_grad_()
        hs, _ = run(cell, cell.project_input(xb), states(cell, 2), cell.rec_params(), backend=backend)
        hs.sum().backward()
        got.append((hs.isnan(), hs.isinf(), xb.grad.isnan()))
    for a, b in zip(*got):
        assert torch.equal(a, b)


def test_gemm_choices_are_kept_for_later_processes(tmp_path, monkeypatch):
    """Two GEMM options that run about as fast give other bits, and a timing in each process picked either:
    the same command with the same seed gave other weights now and then (2 runs in 10), and --resume other
    weights than the uninterrupted run. The choices are kept in a file: a later process times nothing and
    gives the same bits. A damaged file is timed afresh and rewritten."""
    import json
    import subprocess
    import sys

    code = (
        "import hashlib, json, torch, rnnkit\nfrom rnnkit.engine import native\n"
        "ext = native.load()\nbefore = ext.gemm_plan_count()\ntorch.manual_seed(0)\n"
        "m = rnnkit.Recurrent('lstm', 64, 128, backend='native')\nx = torch.randn(32, 20, 64, requires_grad=True)\n"
        "out, _ = m(x)\nout.sum().backward()\n"
        "got = [out.detach(), x.grad, *[p.grad for p in m.parameters()]]\n"
        "print(json.dumps([before, ext.gemm_plan_count(), hashlib.sha256(b''.join(t.numpy().tobytes() "
        "for t in got)).hexdigest()]))\n"
    )
    path = tmp_path / "plans.json"
    env = {**__import__("os").environ, "RNNKIT_GEMM_PLANS": str(path), "RNNKIT_GEMM": "auto"}

    def fresh_process():
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    before, timed, bits = fresh_process()
    assert before == 0 and timed > 0 and len(json.loads(path.read_text())) == timed
    assert fresh_process() == [timed, timed, bits]  # read back: nothing timed, the same bits
    for damaged in (
        '[[1, 2], "x"',
        "[[[1e400, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0]]",
        f"[[[{2**70}, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0]]",
    ):
        path.write_text(damaged)  # (numbers past int64 made every call fail)
        assert fresh_process()[:2] == [0, timed] and len(json.loads(path.read_text())) == timed
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", "")
    assert native.plan_file() is None  # empty: none kept, every process times its own


def test_the_loops_write_new_choices_at_most_once_a_while(tmp_path, monkeypatch):
    """Shapes that vary call after call (a batch of other lengths each time) time a new choice on many calls, and
    the file was rewritten whole after each: 5.3 s of 600 calls' 9.3 s. The loops write at most once a
    PLAN_WRITE_EVERY seconds; what is left is written at exit (the test above reads it in a fresh process)."""
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(tmp_path / "plans.json"))
    monkeypatch.setattr(native, "PLAN_WRITE_EVERY", 3600.0, raising=False)
    monkeypatch.setattr(native, "_written_at", -math.inf, raising=False)
    monkeypatch.setattr(native, "_at_exit", os.getpid(), raising=False)  # (no exit hook from a test)
    writes = []
    monkeypatch.setattr(native, "write_text", lambda path, text: writes.append(path))
    ext = native.load()
    layer = Recurrent("lstm", 40, 120, backend="native")  # sizes no other test times
    before = ext.gemm_plan_count()
    for B in range(17, 27):
        layer(torch.randn(B, 3, 40))[0].sum().backward()
    assert ext.gemm_plan_count() > before and len(writes) == 1


def test_a_multiprocessing_worker_keeps_the_choices_of_its_last_second(tmp_path):
    """A worker of multiprocessing (fork or forkserver: a DataLoader's, a Pool's) ends in os._exit, past atexit:
    the choices it timed after its last write were lost (10 of 11 here), timed again by every later process."""
    import json
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(
        "import multiprocessing as mp, torch\nfrom rnnkit import Recurrent\nfrom rnnkit.engine import native\n"
        "def work(q):\n    native.PLAN_WRITE_EVERY = 3600.0\n"
        "    layer = Recurrent('lstm', 5, 7, backend='native')\n"
        "    for B in range(10, 30):\n        layer(torch.randn(B, 20, 5))\n"
        "    q.put(native.load().gemm_plan_count())\n"
        "if __name__ == '__main__':\n    ctx = mp.get_context('forkserver')\n    q = ctx.Queue()\n"
        "    p = ctx.Process(target=work, args=(q,))\n    p.start()\n    print(q.get())\n    p.join()\n"
    )
    path = tmp_path / "plans.json"
    env = {**os.environ, "RNNKIT_GEMM_PLANS": str(path), "RNNKIT_GEMM": "auto"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    timed = int(out.stdout.strip().splitlines()[-1])
    assert timed > 1 and len(json.loads(path.read_text())) == timed


def test_deterministic_algorithms_time_nothing():
    """Under torch.use_deterministic_algorithms(True) no GEMM is timed: the same fixed choices (MKL, its packed
    form for the per-step weights) in every process, also in processes started together before any kept its
    timed choices (whose ranks each timed their own and got other bits)."""
    ext = native.load()
    torch.manual_seed(0)
    layer = Recurrent("lstm", 48, 136, backend="native")  # sizes no other test times
    x = torch.randn(24, 40, 48, requires_grad=True)

    def bits():
        x.grad = None
        layer.zero_grad()
        out, _ = layer(x)
        out.sum().backward()
        return [out.detach(), x.grad, *[p.grad.clone() for p in layer.parameters()]]

    before = ext.gemm_plan_count()
    torch.use_deterministic_algorithms(True)
    try:
        fixed = bits()
    finally:
        torch.use_deterministic_algorithms(False)
    assert ext.gemm_plan_count() == before
    ext.set_gemm("packed")  # the same choices, forced
    try:
        assert all(torch.equal(a, b) for a, b in zip(fixed, bits()))
    finally:
        ext.set_gemm(__import__("os").environ.get("RNNKIT_GEMM", "auto"))


def test_the_loop_lets_other_python_threads_run():
    """The extension held the GIL for a whole loop (a B=16, T=1500 LSTM stopped every other Python thread for
    0.2 s; a first call of a new size, with its GEMM timings, for 1.5 s); it lets go of it as torch's ops do."""
    import threading
    import time

    x, W = torch.randn(60000, 512), torch.randn(512, 512)
    project = native.load().project
    project(x, W, None, [60000, 1, 512], 0, -1)  # timed once
    ticks, stop = [], threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        time.sleep(0.05)
        t0 = time.perf_counter()
        project(x, W, None, [60000, 1, 512], 0, -1)
        t1 = time.perf_counter()
    finally:
        stop.set()
        thread.join()
    during = [t0] + [t for t in ticks if t0 < t < t1] + [t1]
    longest = max(b - a for a, b in zip(during, during[1:]))
    assert longest < 0.5 * (t1 - t0), (longest, t1 - t0)  # held: no tick at all while it ran


def test_a_threads_torch_count_stays_its_own_through_its_first_native_forward():
    """The first call of the loop in each Python thread set that thread's torch count to the one set last by any
    thread (the extension's own copy of torch's lazy init, in at::parallel_for, ran at::init_num_threads): a thread
    at 3 threads (a --threads 3 work) ran at 1 after its first forward where the main thread had set 1 meanwhile, as
    torch's own ops and the python backend do not. Rows split over the thread's 3 threads: a parallel loop."""
    import threading

    layer, x = Recurrent("lstm", 8, 32, backend="native"), torch.randn(16, 10, 8)
    with torch.no_grad():
        layer(x)  # the extension loaded and run in this thread
    before = torch.get_num_threads()
    entered, asked, seen = threading.Event(), threading.Event(), []

    def work():
        torch.get_num_threads()  # (this thread's count taken from torch's, then its own)
        torch.set_num_threads(3)
        entered.set()
        asked.wait(30)
        with torch.no_grad():
            layer(x)
        seen.append(torch.get_num_threads())

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        assert entered.wait(30)
        torch.set_num_threads(1)  # this thread's count, the one set last
        asked.set()
        thread.join(60)
    finally:
        asked.set()
        torch.set_num_threads(before)
    assert not thread.is_alive()
    assert seen == [3]


def test_first_calls_time_their_gemms_on_any_cpu():
    """On a CPU without AVX-512 (an AVX2 AMD EPYC) torch's oneDNN matmul refuses float32 ("mkldnn_matmul bf16
    path needs the cpu support ..."), and timing it made every first call of a big enough shape fail: a 2x512
    LSTM could not train. It is offered only where it runs; RNNKIT_GEMM=dnnl runs as blas there."""
    import subprocess
    import sys

    code = (
        "import torch, rnnkit\nfrom rnnkit.engine import native\nfrom rnnkit.layers import Recurrent\n"
        "torch.manual_seed(0)\nx = torch.randn(32, 12, 64)\nouts = []\n"
        "for backend in ('native', 'python'):\n"
        "    torch.manual_seed(1)\n"
        "    layer = Recurrent('lstm', 64, 320, num_layers=2, backend=backend)\n"
        "    out, _ = layer(x)\n    out.square().sum().backward()\n"
        "    outs.append([out, *[p.grad for p in layer.parameters()]])\n"
        "for a, b in zip(*outs):\n    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)\n"
        "print(native.load().gemm_plan_count(), native.load().have_dnnl())\n"
    )
    for mode in ("auto", "dnnl"):
        env = {**__import__("os").environ, "RNNKIT_GEMM_PLANS": "", "RNNKIT_GEMM": mode}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        timed = int(out.stdout.split()[0])
        assert (timed > 0) == (mode == "auto"), out.stdout


def test_fork_while_another_thread_times_a_gemm_under_a_dispatch_mode():
    """A thread timing a new GEMM shape held the plan table's lock meanwhile; under a TorchDispatchMode its ops
    call back into Python and wait for the GIL, which a thread in fork held while waiting for that lock (fork
    waits for it: lock_for_fork): both froze for good."""
    import subprocess
    import sys

    code = (
        "import os, threading, time, torch\n"
        "from torch.utils._python_dispatch import TorchDispatchMode\n"
        "from rnnkit.engine import native\n"
        "ext = native.load()\nstarted = threading.Event()\n"
        "class Slow(TorchDispatchMode):\n"
        "    def __torch_dispatch__(self, func, types, args=(), kwargs=None):\n"
        "        if not started.is_set():\n"
        "            started.set()\n"
        "            time.sleep(0.3)\n"
        "        return func(*args, **(kwargs or {}))\n"
        "x, W = torch.randn(3000, 200), torch.randn(200, 200)\n"
        "def work():\n"
        "    with Slow():\n"
        "        ext.project(x, W, None, [3000, 1, 200], 0, -1)\n"
        "thread = threading.Thread(target=work)\nthread.start()\nstarted.wait()\ntime.sleep(0.1)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nthread.join()\nprint('timed', ext.gemm_plan_count())\n"
    )
    env = {**__import__("os").environ, "RNNKIT_GEMM_PLANS": ""}  # none kept: the shape is timed afresh
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail("fork froze while another thread timed a GEMM")
    assert out.returncode == 0 and out.stdout.startswith("timed"), out.stdout + out.stderr
    assert int(out.stdout.split()[1]) > 0  # the shape was timed (under the mode)


def test_the_callers_mkl_thread_count_is_put_back():
    """The loops run MKL single-threaded in each of their threads and then set the calling thread's MKL count
    to 'the global setting' instead of what it was: with MKL_NUM_THREADS=1 and torch.set_num_threads(2), the
    user's own torch.mm ran on one thread after an rnnkit call, with other bits."""
    import subprocess
    import sys

    code = (
        "import ctypes, os, torch, rnnkit\n"
        "lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libtorch_cpu.so'))\n"
        "torch.set_num_threads(2)\nseen = [lib.mkl_get_max_threads()]\n"
        "for H in (128, 512):\n"
        "    with torch.no_grad():\n"
        "        rnnkit.Recurrent('lstm', 32, H, backend='native')(torch.randn(16, 20, 32))\n"
        "    seen.append(lib.mkl_get_max_threads())\n"
        "print(seen)\n"
    )
    env = {**__import__("os").environ, "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[2, 2, 2]", out.stdout + out.stderr


def test_threads_loading_the_extension_at_once_load_it_once():
    """Threads whose first calls came together each loaded the extension (and applied the settings again), and
    each waited for the others' lock with 'waiting for another process building the native engine'."""
    import subprocess
    import sys

    code = (
        "import threading\nfrom rnnkit.engine import native\ncalls = []\nbuild = native.build\n"
        "native.build = lambda *a: calls.append(1) or build(*a)\n"
        "threads = [threading.Thread(target=native.load) for _ in range(4)]\n"
        "[t.start() for t in threads]\n[t.join() for t in threads]\nprint(len(calls))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "1" and "waiting" not in out.stderr, out.stdout + out.stderr


def test_rows_or_units_past_l2_is_timed_once_and_kept():
    """Past a core's L2 the loop split the hidden units over its threads, by a rule measured on a Sapphire
    Rapids (2 MB L2); on an AMD Zen 4 (1 MB L2, 32 MB L3) splitting the batch rows ran 2-17% faster at 2x512
    (MUT1 17%, GRU 15%). The forward now times both once per (cell, B up to a power of 2, H, threads) and
    keeps the faster, as it keeps its GEMM choices, and the backward takes the same. Either way: the python
    backend's numbers, and the same bits on every later call. Under 8 steps nothing splits, whatever is kept:
    the backward took a kept "rows" there while its forward had not (other bits for the same input)."""
    import ctypes

    ext = native.load()
    H = 512  # an LSTM's W_hh: 4 MB
    l2 = ctypes.CDLL(None).sysconf(191)  # glibc's _SC_LEVEL2_CACHE_SIZE, as the extension reads it
    if l2 >= 4 * H * H * 4:
        pytest.skip("the weights fit in this CPU's L2: rows split the loop without a timing")
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to split")
    key = lambda B: [2, B, H, 4 * H * H * 4, torch.get_num_threads(), 0, 0, 0, -3, -3]  # noqa: E731
    ext.add_gemm_plans([(key(32), 0), (key(64), 1)])  # kept choices: units, rows (B up to 16: timed here)

    def run(backend, B, T):
        torch.manual_seed(0)
        x = torch.randn(B, T, 24, requires_grad=True)
        torch.manual_seed(1)
        layer = Recurrent("lstm", 24, H, backend=backend)
        out, (h, c) = layer(x)
        ((out * out).sum() + (c * h).sum()).backward()
        return [out, h, c, x.grad, *[p.grad for p in layer.parameters()]]

    with setting(ext.set_gemm, "auto", os.environ.get("RNNKIT_GEMM", "auto")):
        with setting(ext.set_row_threads, 0, 0):
            for B, bucket, choice in ((13, 16, None), (24, 32, 0), (40, 64, 1)):
                results = [run(backend, B, 9) for backend in ("native", "python", "native")]
                for a, b, again in zip(*results):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
                    assert torch.equal(a, again)
                kept = {tuple(k): v for k, v in ext.gemm_plans()}.get(tuple(key(bucket)))
                assert kept in (0, 1), f"B={B}: the split was not timed"
                assert choice is None or kept == choice
            short = run("native", 40, 5)  # rows kept for this B, but 5 steps: no split either way
        with setting(ext.set_row_threads, 1, 0):
            for a, b in zip(short, run("native", 40, 5)):
                assert torch.equal(a, b)


def test_preparing_the_weights_is_timed_for_short_calls_of_big_weights():
    """From 8 steps on every call prepared its per-step weights (a copy, a packed form) by a rule, at about the
    cost of writing them out: at batch 1 with MBs of weights that cost more than it saved until a few dozen steps
    (a 1x1000 GRU at 8 steps: 3.5 ms, against 1.2 ms at 7 steps and 3.2 ms for torch.nn). Past 1 MB of weights, a
    call of 8-63 steps at up to 4 rows now times both ways once per steps' octave and keeps the faster, the
    forward and the backward each their own (a 1x512 LSTM at B1, 8 steps: the forward faster prepared, the
    backward as stored). Either way: the python backend's numbers, and the same bits on every later call."""
    ext = native.load()
    H = 320  # a GRU's W_hh: 1.2 MB

    def key(T, B=1):
        return [3, B, H, 3 * H * H * 4, torch.get_num_threads(), 0, T.bit_length() - 1, 0, -4, -4]

    def run(backend, T, B=1):
        torch.manual_seed(0)
        x = torch.randn(B, T, 16, requires_grad=True)
        h0 = torch.randn(1, B, H, requires_grad=True)
        torch.manual_seed(1)
        layer = Recurrent("gru", 16, H, backend=backend)
        out, h = layer(x, h0)
        ((out * out).sum() + (h * h).sum()).backward()
        return [out, h, x.grad, h0.grad, *[p.grad for p in layer.parameters()]]

    ext.add_gemm_plans([(key(16), 0), (key(32), 1)])  # kept: as stored at 16-31 steps, prepared at 32-63
    with setting(ext.set_gemm, "auto", os.environ.get("RNNKIT_GEMM", "auto")):
        with setting(ext.set_row_threads, 0, 0):
            for T in (9, 20, 40):  # 8-15: timed here
                results = [run(backend, T) for backend in ("native", "python", "native")]
                for a, b, again in zip(*results):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
                    assert torch.equal(a, again)
            kept = {tuple(k): v for k, v in ext.gemm_plans()}
            assert kept.get(tuple(key(9))) in (0, 1), "9 steps: whether to prepare was not timed"
            backward = [*key(9)[:8], -5, -5]  # the backward's own choice
            assert kept.get(tuple(backward)) in (0, 1), "9 steps: the backward's choice was not timed"
            assert kept[tuple(key(20))] == 0 and kept[tuple(key(40))] == 1
            for T, B in ((7, 1), (64, 1), (9, 5)):  # under 8 steps never prepared, from 64 (or 5 rows) always
                run("native", T, B)
                assert tuple(key(T, 8 if B == 5 else B)) not in {tuple(k) for k, _ in ext.gemm_plans()}


# (shapes timed nowhere else in the tests)
@pytest.mark.parametrize(
    "name, H, B, kind", [("gru", 328, 1, -4), ("lstm", 296, 1, -4), ("lstm", 400, 9, -3)]
)
def test_a_timed_forward_without_grad_starts_each_run_from_the_initial_state(name, H, B, kind):
    """A forward that times two ways of running its loop (to prepare the weights or not: 8-63 steps, up to 4 rows,
    weights past 1 MB; rows or units: past L2) runs the loop several times. Without a backward to follow the states
    are a ring of a few slots that overwrites h_0's (c_0's) slot, so each run after the first puts the initial state
    back first: a loop that did not began every later run from a state of the run before. The python backend's
    outputs and final states, and the choice timed."""
    ext = native.load()
    if kind == -3 and torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to split")
    cell_id, gates = {"gru": (3, 3), "lstm": (2, 4)}[name]
    key = [cell_id, 16 if B == 9 else B, H, gates * H * H * 4, torch.get_num_threads(), 0, 0, 0, kind, kind]
    if kind == -4:
        key[6] = 3  # 9 steps: the octave 8-15
    torch.manual_seed(0)
    layer = Recurrent(name, 16, H)
    x = torch.randn(B, 9, 16)
    state = torch.randn(1, B, H) if name == "gru" else (torch.randn(1, B, H), torch.randn(1, B, H))
    results = []
    with setting(ext.set_gemm, "auto", os.environ.get("RNNKIT_GEMM", "auto")):
        with setting(ext.set_row_threads, 0, 0):
            for backend in ("native", "python"):
                layer.backend = backend
                with torch.no_grad():
                    out, final = layer(x, state)
                results.append([out, *(final if isinstance(final, tuple) else (final,))])
    assert tuple(key) in {tuple(k) for k, _ in ext.gemm_plans()}, "the way to run the loop was not timed"
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# (shapes timed nowhere else in the tests)
@pytest.mark.parametrize("name, H, cell_id", [("lstm", 304, 2), ("leaky", 520, 8), ("gru_cho", 304, 4)])
def test_a_timed_backward_starts_each_run_from_the_final_states_gradient(name, H, cell_id):
    """The backward of a short call of big weights (8-63 steps, up to 4 rows, past 1 MB) times its loop prepared
    and as stored, six runs: each starts again from dL/dh_T and dL/dc_T (the loop carries dL/dstate down to dh_0 in
    the same buffers) and from zero sums of the parameters summed over steps (a leaky unit's α, a gated cell's b_xh
    folded into the loop). The python backend's gradients, the final states' included."""
    ext = native.load()
    torch.manual_seed(0)
    layer = Recurrent(name, 16, H, **({"learn_alpha": True} if name == "leaky" else {}))
    x = torch.randn(1, 9, 16)
    n_states = 2 if name == "lstm" else 1
    state = [torch.randn(1, 1, H) for _ in range(n_states)]
    results = []
    with setting(ext.set_gemm, "auto", os.environ.get("RNNKIT_GEMM", "auto")):
        with setting(ext.set_row_threads, 0, 0):
            for backend in ("native", "python"):
                layer.backend = backend
                layer.zero_grad()
                s = [t.clone().requires_grad_() for t in state]
                out, final = layer(x, tuple(s) if n_states == 2 else s[0])
                final = final if n_states == 2 else (final,)
                ((out * out).sum() + sum((f * f).sum() for f in final)).backward()
                results.append([*(t.grad for t in s), *(p.grad for p in layer.parameters())])
    wbytes = {"lstm": 4, "leaky": 1, "gru_cho": 3}[name] * H * H * 4
    key = (cell_id, 1, H, wbytes, torch.get_num_threads(), 0, 3, 0, -5, -5)  # 9 steps: the octave 8-15
    assert {tuple(k): v for k, v in ext.gemm_plans()}.get(key) in (0, 1), "the backward was not timed"
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_timed_call_gives_the_bits_of_the_way_it_keeps():
    """A call that times two ways of running its loop runs them alternately, and where the last run was the way not
    kept it runs the kept one again: its results are the kept way's bits, those of every later call (prepared and
    as-stored weights give other last bits). The rerun is needed where the way tried first is kept: as stored, which
    a 1x1000 GRU at batch 1 and 8 steps runs faster (engine.cpp: 1.3 ms against 3.5 ms prepared on an AMD Zen 4),
    where the GRU of test_preparing_the_weights_is_timed_for_short_calls_of_big_weights took the way run last."""
    ext = native.load()
    H = 1000  # a GRU's W_hh: 12 MB

    def run():
        torch.manual_seed(0)
        layer = Recurrent("gru", 16, H)
        x = torch.randn(1, 8, 16, requires_grad=True)
        h0 = torch.randn(1, 1, H)
        out, h = layer(x, h0)
        ((out * out).sum() + (h * h).sum()).backward()
        return [out, h, x.grad, *[p.grad for p in layer.parameters()]]

    with setting(ext.set_gemm, "auto", os.environ.get("RNNKIT_GEMM", "auto")):
        with setting(ext.set_row_threads, 0, 0):
            first, again = run(), run()
    kept = {tuple(k): v for k, v in ext.gemm_plans()}
    for kind in (-4, -5):  # the forward's choice and the backward's
        assert kept.get((3, 1, H, 3 * H * H * 4, torch.get_num_threads(), 0, 3, 0, kind, kind)) in (0, 1)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


def test_the_tests_keep_their_gemm_choices_out_of_the_users_file():
    """Tests plant choices of their own (test_rows_or_units_past_l2_is_timed_once_and_kept: "units" for an LSTM
    2x512 at B 17-32, slower on an AMD Zen 4), and a choice already in the user's file stood against the planted
    one: after a training run had kept "rows", that test failed, and a test run on a fresh machine left "units"
    in the file for every later run. tests/conftest.py gives each test session an empty file of its own."""
    ext = native.load()
    beside_build = pathlib.Path(ext.__file__).parent
    path = native.plan_file()
    assert path is not None and path.parent != beside_build and path.name == "gemm_plans.json"


def test_cpus_that_a_vm_names_alike_keep_their_own_gemm_choices(monkeypatch):
    """The choices were kept by the CPU's model name alone, which a VM shows as "AMD EPYC" for a Zen 4 and a
    Zen 5 (twice the GEMM rate, other choices): through a shared build cache the one took the other's choices.
    The family and model number are in the key too; an ARM CPU's part tells it apart."""
    monkeypatch.delenv("RNNKIT_GEMM_PLANS", raising=False)
    seen = set()
    cpus = [("AuthenticAMD", "25", "17"), ("AuthenticAMD", "26", "2"), ("AuthenticAMD", "26", "2")]
    for vendor, family, model in cpus:
        cpuinfo = (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                   f"model name\t: AMD EPYC\nflags\t\t: fpu avx512f\n\nprocessor\t: 1\ncpu family\t: 99\n")  # fmt: skip
        monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, text=cpuinfo, **k: text)
        seen.add(native.plan_file().name)
    assert len(seen) == 2, seen
    for part in ("0xd0c", "0xd40"):
        cpuinfo = f"processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
        monkeypatch.setattr(pathlib.Path, "read_text", lambda self, *a, text=cpuinfo, **k: text)
        seen.add(native.plan_file().name)
    assert len(seen) == 4, seen


def test_each_checkout_builds_into_its_own_folder(tmp_path, monkeypatch):
    """The build folder is named by a hash of the sources and flags, and torch's build.ninja by the sources'
    path: a clone beside the working copy shared the folder, and each one's load rebuilt it (a minute or two)."""
    import shutil

    here = native._sources_hash(["-O3"])
    assert native._sources_hash(["-O3"]) == here and native._sources_hash(["-O2"]) != here
    copy = tmp_path / "csrc"
    shutil.copytree(native.CSRC, copy)
    monkeypatch.setattr(native, "CSRC", copy)
    assert native._sources_hash(["-O3"]) != here


def test_only_sources_go_into_the_build_folders_name(tmp_path, monkeypatch):
    """Every file in csrc was hashed: a folder there (mkdir csrc/sub) failed every forward with IsADirectoryError,
    even with RNNKIT_NATIVE=0, and an editor's swap file forced a full rebuild. Sources are *.cpp and *.h; the
    switch is read first, and sources that can't be read are a reason to fall back."""
    import shutil

    copy = tmp_path / "csrc"
    shutil.copytree(native.CSRC, copy)
    monkeypatch.setattr(native, "CSRC", copy)
    here = native._sources_hash(["-O3"])
    (copy / "sub").mkdir()
    (copy / ".engine.cpp.swp").write_bytes(b"vim")
    assert native._sources_hash(["-O3"]) == here
    (copy / "kernel.h").write_text((copy / "kernel.h").read_text() + "\n")
    assert native._sources_hash(["-O3"]) != here
    monkeypatch.setattr(native, "CSRC", tmp_path / "missing")
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    assert native._load() is None and native._reason.startswith("switched off")
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    assert native._load() is None and "could not read the native engine's sources" in native._reason


def _child_exits_cleanly(code):
    """Run `code` in a fresh interpreter; it prints the exit code of the child it forked: 0, not -14 (the child
    hung and its alarm killed it)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0", out.stdout + out.stderr


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork here")
def test_a_child_forked_while_another_thread_loads_the_extension_loads_it_too():
    """A fork while another thread was inside native.load() left the child holding that thread's lock (and its
    copy of the build folder's flock), taken by no thread it has: its first forward waited forever. (The load
    of a library built before, as recorded, takes no flock: _import, not torch's load.)"""
    code = (
        "import os, signal, threading\nimport torch.utils.cpp_extension as ce\nfrom rnnkit import _native_build as nb\n"
        "from rnnkit.engine import native\nparent, inside, release = os.getpid(), threading.Event(), threading.Event()\n"
        "def slow(real):\n    def load(*a, **k):\n        if os.getpid() == parent:\n            inside.set()\n"
        "            release.wait()\n        return real(*a, **k)\n    return load\n"
        "ce.load, nb._import = slow(ce.load), slow(nb._import)\nt = threading.Thread(target=native.load)\nt.start()\n"
        "inside.wait()\n"
        "pid = os.fork()\nif pid == 0:\n    signal.alarm(30)\n    os._exit(0 if native.load() is not None else 3)\n"
        "release.set()\nt.join()\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    _child_exits_cleanly(code)


def test_a_child_forked_while_another_thread_traces_a_cell_traces_it_too():
    """As for load(): a fork while another thread was tracing a cell of one's own (native.traced_id, a C++ compile
    of up to a second) left the child holding that thread's lock: its first forward of such a cell waited forever."""
    code = (
        "import os, signal, threading, torch\nfrom rnnkit.cells import CELLS\nfrom rnnkit.engine import native, traced\n"
        "cell = CELLS['rnn_tanh'](2, 4)\nP, xw = cell.rec_params(), torch.zeros(1, 1, 4)\n"
        "parent, inside, release, real = os.getpid(), threading.Event(), threading.Event(), traced.trace_cell\n"
        "def slow_trace(*a, **k):\n    if os.getpid() == parent:\n        inside.set()\n        release.wait()\n"
        "    return real(*a, **k)\n"
        "traced.trace_cell = slow_trace\nnative.load()\n"
        "t = threading.Thread(target=native.traced_id, args=(type(cell), P, xw))\nt.start()\ninside.wait()\n"
        "pid = os.fork()\nif pid == 0:\n    signal.alarm(30)\n"
        "    os._exit(0 if isinstance(native.traced_id(type(cell), P, xw), int) else 3)\n"
        "release.set()\nt.join()\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    _child_exits_cleanly(code)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork here")
def test_a_child_forked_while_another_thread_keys_a_big_array_runs_the_cell_too():
    """As for load(): a fork while another thread's forward keyed an array of more than 256 entries its cell's step
    reads (traced._big_key, comparing it with its kept copy: numpy lets other threads run meanwhile) left the child
    holding that thread's lock: its first forward of such a cell waited forever."""
    code = (
        "import os, signal, threading, numpy as np, torch\nfrom rnnkit import Recurrent\nfrom rnnkit.cells import CELLS\n"
        "from rnnkit.cells._base import linear\nGAINS = np.ones(300)\n"
        "def step(xw_t, state, P):\n    y = torch.tanh(xw_t + linear(state[0], *P)) * float(GAINS[0])\n"
        "    return (y,), (state[0],), (y,)\n"
        "def step_backward(dstate, cache, P):\n    da = dstate[0] * (1 - cache[0] ** 2)\n"
        "    return da, (da @ P[0],), (da,), ()\n"
        "fns = {'step': staticmethod(step), 'step_backward': staticmethod(step_backward)}\n"
        "layer, x = Recurrent(type('Gained', (CELLS['rnn_tanh'],), fns), 2, 4), torch.zeros(1, 3, 2)\nlayer(x)\n"
        "parent, inside, release, real = os.getpid(), threading.Event(), threading.Event(), np.array_equal\n"
        "def slow_equal(*a, **k):\n    if os.getpid() == parent:\n        inside.set()\n        release.wait()\n"
        "    return real(*a, **k)\n"
        "np.array_equal = slow_equal\nt = threading.Thread(target=layer, args=(x,))\nt.start()\ninside.wait()\n"
        "pid = os.fork()\nif pid == 0:\n    signal.alarm(30)\n    layer(x)\n    os._exit(0)\n"
        "release.set()\nt.join()\nprint(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    _child_exits_cleanly(code)


@pytest.mark.parametrize(
    "var, value",
    [("RNNKIT_ROW_THREADS", "²"), ("RNNKIT_ROW_THREADS", "9" * 20), ("RNNKIT_ROW_THREADS", "0"),
     ("RNNKIT_SPLIT", "2"), ("RNNKIT_NATIVE", "maybe")],
)  # fmt: skip
def test_engine_settings_are_parsed_strictly(monkeypatch, var, value):
    """RNNKIT_ROW_THREADS='²' passed str.isdigit, then int() failed with a traceback; 20 digits overflowed the
    extension's int64 (a TypeError from pybind); RNNKIT_SPLIT and RNNKIT_NATIVE took anything but '0' as on. Each
    is a one-line error naming the variable, before any build."""
    from rnnkit.errors import RnnkitError

    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setattr(native, "build", lambda *a: pytest.fail("built despite a bad setting"))
    monkeypatch.setenv(var, value)
    with pytest.raises(RnnkitError, match=f"^{var}={value!r} is .*; set ") as error:
        native._load()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "var, value", [("RNNKIT_GEMM", "fastest"), ("RNNKIT_ROW_THREADS", "two"), ("RNNKIT_SPLIT", "2")]
)
def test_a_bad_engine_setting_does_not_stop_the_python_loop_when_native_is_off(monkeypatch, var, value):
    """RNNKIT_NATIVE=0 switches the native engine off (the python loop runs), but its own settings were checked
    first: a mistyped RNNKIT_GEMM stopped every forward of the default backend, which never reads it."""
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setattr(native, "build", lambda *a: pytest.fail("built while switched off"))
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    monkeypatch.setenv(var, value)
    assert native._load() is None and native._reason == "switched off by RNNKIT_NATIVE=0"
    layer = Recurrent("lstm", 3, 4)
    hs, _ = layer(torch.randn(2, 5, 3))
    assert hs.shape == (2, 5, 4)


@pytest.mark.parametrize("rows, threads", [(" 3 ", 3), ("AUTO", 0), ("4096", 4096), ("", 0), (" ", 0)])
def test_row_threads_take_a_count_or_auto(monkeypatch, rows, threads):
    monkeypatch.setenv("RNNKIT_ROW_THREADS", rows)
    assert native._row_threads() == threads


@pytest.mark.parametrize(
    "rows, split, gemm, want", [("3", "0", " Packed", (3, 0, "packed")), ("auto", "1", "", (0, 1, "auto"))]
)
def test_the_engine_settings_reach_the_extension(monkeypatch, tmp_path, rows, split, gemm, want):
    """RNNKIT_ROW_THREADS, RNNKIT_SPLIT and RNNKIT_GEMM, read at the first load, are handed to the extension as
    parsed, and the kept GEMM choices of RNNKIT_GEMM_PLANS with them (the other tests parse them alone, or set the
    extension's settings themselves): an extension that records what it is given."""
    got = {}

    class Ext:
        __file__ = str(tmp_path / "ext.so")

        def set_row_threads(self, n):
            got["rows"] = n

        def set_split(self, on):
            got["split"] = on

        def set_gemm(self, mode):
            got["gemm"] = mode

        def add_gemm_plans(self, plans):
            got["plans"] = plans

        def gemm_plan_count(self):
            return len(got["plans"])

    plans = tmp_path / "plans.json"
    plans.write_text("[[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2]]\n")
    for var, value in (("RNNKIT_ROW_THREADS", rows), ("RNNKIT_SPLIT", split), ("RNNKIT_GEMM", gemm)):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(plans))
    monkeypatch.delenv("RNNKIT_NATIVE", raising=False)
    for name, value in (("_ext", None), ("_reason", None), ("_kept", native._kept)):
        monkeypatch.setattr(native, name, value)
    monkeypatch.setattr(native, "build", lambda *a: (Ext(), None))
    assert isinstance(native._load(), Ext)
    assert (got["rows"], got["split"], got["gemm"]) == want
    assert got["plans"] == [([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2)] and native._kept == 1


@pytest.mark.parametrize("var", ["RNNKIT_GEMM", "RNNKIT_ROW_THREADS"])
def test_an_empty_engine_setting_is_its_default(monkeypatch, var):
    """RNNKIT_GEMM= and RNNKIT_ROW_THREADS= (set empty to unset them, as RNNKIT_NATIVE=, RNNKIT_SPLIT= and
    RNNKIT_GEMM_PLANS= take it) stopped every native forward with 'is not a GEMM library' or 'is not a thread
    count'; empty is auto."""
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", None)
    monkeypatch.setattr(native, "build", lambda *a: (None, "not built here"))
    monkeypatch.setenv(var, " ")
    assert native._load() is None and native._reason == "not built here"


def test_damaged_gemm_plans_keep_their_good_entries(tmp_path):
    """100000 nested '[' raised RecursionError from every forward; one bad entry discarded the whole file."""
    path = tmp_path / "plans.json"
    path.write_text("[" * 100000)
    assert native._read_plans(path) == []
    good = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2]
    bad = [[1, 2], 0], [[2**70] + [0] * 9, 0], [[0] * 10, 5], [[0.5] * 10, 0], ["0123456789", 0], {"a": 1}, 7
    path.write_text(__import__("json").dumps([bad[0], good, *bad[1:]]))
    assert native._read_plans(path) == [tuple(good)]
    path.write_text('{"not": "a list"}')
    assert native._read_plans(path) == []


@pytest.mark.parametrize("where", ["folder", "missing folder", "unwritable"])
def test_a_gemm_plans_file_that_cannot_be_kept_is_warned_of_once(tmp_path, monkeypatch, where):
    """RNNKIT_GEMM_PLANS naming a folder (which got <folder>.lock made beside it), a file in a folder that isn't
    there, or a file that can't be written was ignored in silence: every process timed its GEMMs again."""
    given = {"folder": tmp_path, "missing folder": tmp_path / "no" / "plans.json"}.get(
        where, tmp_path / "p.json"
    )
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(given))
    monkeypatch.setattr(native, "_plan_warnings", set())
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    if where == "unwritable":

        def write_text(path, text):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(native, "write_text", write_text)
    native.load()
    message = {"folder": "is a folder; name a file", "missing folder": "is not in a folder"}.get(
        where, "can't be"
    )
    with pytest.warns(RuntimeWarning, match=f"RNNKIT_GEMM_PLANS=.* {message}.*or set it empty to keep none"):
        native.keep_plans()
    monkeypatch.setattr(native, "_kept", -1)
    native.keep_plans()  # once (warnings are errors here)
    assert not pathlib.Path(f"{tmp_path}.lock").exists()


@pytest.mark.parametrize(
    "given",
    ["/tmp/" + "a" * 300 + ".json", "~no_such_user_of_rnnkit/plans.json"],
    ids=["name too long", "no such user"],
)
def test_a_gemm_plans_name_that_cannot_be_looked_up_is_warned_of_once(monkeypatch, given):
    """RNNKIT_GEMM_PLANS naming a file that can't be looked at (a name too long, a ~user that isn't one; a folder one
    may not search is the same) raised OSError ('File name too long') or RuntimeError ('Could not determine home
    directory') from the first forward, a traceback through the layer, and from every write of the choices after."""
    native.load()
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", given)
    monkeypatch.setattr(native, "_plan_warnings", set())
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    with pytest.warns(
        RuntimeWarning, match="RNNKIT_GEMM_PLANS=.* can't be looked up .*or set it empty to keep none"
    ):
        assert native.plan_file() is None
    native.keep_plans()  # once (warnings are errors here)
    out, _ = Recurrent("lstm", 3, 4, backend="native")(torch.randn(2, 9, 3))
    assert out.shape == (2, 9, 4)


@pytest.mark.parametrize("blank", [" ", "\t\n"])
def test_a_blank_gemm_plans_value_keeps_none(tmp_path, monkeypatch, blank):
    """RNNKIT_GEMM_PLANS of spaces only (a quoting slip, a trailing space in a compose file) was taken as a file
    named ' ' in the working directory: the choices and a ' .lock' were written there, in every folder run from.
    Blank keeps none, as empty does (the other RNNKIT_ settings ignore spaces around their values too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", blank)
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    native.load()
    assert native.plan_file() is None
    native.keep_plans()
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("special", ["devnull", "fifo"])
def test_a_gemm_plans_path_that_is_no_regular_file_is_left_alone(tmp_path, monkeypatch, special):
    """RNNKIT_GEMM_PLANS=/dev/null (for none) had the choices written over it: as root (a container) the write's
    rename made the system's /dev/null a JSON file, and a <path>.lock appeared in /dev; a FIFO hung the process
    that read it. /dev/null keeps none, as an empty value does; another file that isn't a regular one is warned
    of, once, and left alone."""
    given = pathlib.Path(os.devnull) if special == "devnull" else tmp_path / "fifo"
    if special == "fifo":
        os.mkfifo(given)
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(given))
    monkeypatch.setattr(native, "_plan_warnings", set())
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    monkeypatch.setattr(native, "flocked", lambda *a: pytest.fail(f"wrote beside {given}"))
    monkeypatch.setattr(native, "write_text", lambda *a: pytest.fail(f"wrote over {given}"))
    native.load()
    if special == "devnull":
        assert native.plan_file() is None
        native.keep_plans()  # in silence (warnings are errors here)
        return
    with pytest.warns(RuntimeWarning, match="RNNKIT_GEMM_PLANS=.* is not a regular file.*or set it empty"):
        assert native.plan_file() is None
    native.keep_plans()  # once
    assert given.is_fifo()


def test_a_read_only_gemm_plans_file_is_not_replaced(tmp_path, monkeypatch):
    """A plans file made read-only (choices to keep as they are) was replaced all the same, in silence: the write
    renames a temporary file over it, which needs only the folder writable; a writable file of the process's
    owner stood there after. It is left as it is, with the warning of a file that can't be written."""
    path = tmp_path / "plans.json"
    path.write_text("[]\n")
    path.chmod(0o444)
    if os.geteuid() == 0:  # root may write any file: the check as any other user's process sees it
        monkeypatch.setattr(
            os, "access", lambda p, mode, **k: not mode & os.W_OK or bool(os.stat(p).st_mode & 0o222)
        )
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(path))
    monkeypatch.setattr(native, "_plan_warnings", set())
    native.load()
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    with pytest.warns(
        RuntimeWarning, match="RNNKIT_GEMM_PLANS=.* can't be written .*name a file you can write"
    ):
        native.keep_plans()
    assert path.read_text() == "[]\n" and path.stat().st_mode & 0o777 == 0o444


def test_a_gemm_plans_file_named_through_a_link_is_written_where_it_points(tmp_path, monkeypatch):
    """RNNKIT_GEMM_PLANS naming a symbolic link (to a file shared by other checkouts, say) had the link replaced
    by a file of its own at the first write (a temporary file renamed over it): the shared file got no choices,
    and the processes that read it directly took other ones. The file the link points to is written."""
    shared = tmp_path / "shared" / "plans.json"
    shared.parent.mkdir()
    shared.write_text("[]\n")
    link = tmp_path / "plans.json"
    link.symlink_to(shared)
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(link))
    native.load().project(torch.randn(64, 64), torch.randn(64, 64), None, [64, 64], 0, -1)  # a choice (timed)
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    native.keep_plans()
    assert link.is_symlink() and len(native._read_plans(shared)) == native.load().gemm_plan_count() > 0


def test_a_plans_write_cut_short_leaves_no_temporary_file_behind(tmp_path, monkeypatch):
    """A process killed while writing the GEMM choices (atomically: a temporary file, then a rename) left its
    <file>.<random>.tmp beside the build for good, one more for every such kill; the next write removes them."""
    path = tmp_path / "plans.json"
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(path))
    native.load()
    stale = tmp_path / "plans.json.x1y2z3.tmp"
    stale.write_text("[[[1, 2")
    other = tmp_path / "other.json.x1y2z3.tmp"  # not this file's
    other.write_text("")
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    native.keep_plans()
    assert not stale.exists() and other.exists()
    assert path.exists()


@pytest.mark.parametrize("where", ["lock", "lock of RNNKIT_GEMM_PLANS", "file beside the build"])
def test_a_folder_in_place_of_a_gemm_plans_file_is_removed(tmp_path, monkeypatch, capsys, where):
    """A folder in place of the plans' lock file (mkdir, a bad copy of the cache), or of the plans file beside the
    build, failed every write of the choices (IsADirectoryError), in silence beside the build: they were timed again
    in every process (RNNKIT_GEMM_PLANS's: 'can't be written; name a file you can write', which it was). The folder
    is removed, said in one line, as the build removes one in place of its lock, and the choices are kept."""
    path = tmp_path / "gemm_plans_x.json"
    if where == "lock of RNNKIT_GEMM_PLANS":
        monkeypatch.setenv("RNNKIT_GEMM_PLANS", str(path))
    else:  # as beside the build (a scratch file: the test session's own is never touched)
        monkeypatch.delenv("RNNKIT_GEMM_PLANS", raising=False)
        monkeypatch.setattr(native, "plan_file", lambda ext=None: path)
    folder = path if where == "file beside the build" else tmp_path / "gemm_plans_x.json.lock"
    (folder / "inner").mkdir(parents=True)
    native.load().project(torch.randn(64, 64), torch.randn(64, 64), None, [64, 64], 0, -1)  # a choice (timed)
    monkeypatch.setattr(native, "_kept", -1)  # choices to add
    native.keep_plans()
    assert (
        f"removing the folder {folder}, in the place of a file of the GEMM choices" in capsys.readouterr().err
    )
    assert path.is_file() and len(native._read_plans(path)) == native.load().gemm_plan_count() > 0


@pytest.mark.parametrize("name", ["gru_cho", "mut1", "mut2", "mut3", "lstm"])
def test_an_input_bias_the_loop_cannot_take_is_refused(name):
    """run's xbias, b_xh (3H,) that the loop of gru_cho and mut1-3 adds, was taken at any size: one of (1,) was
    read 3H floats past its start (other memory in the outputs, ASan: heap-buffer-overflow), and an lstm's was
    ignored (its outputs without it, its gradient None); raw_tail is MUT1's alone."""
    from rnnkit.errors import RnnkitError

    H, (T, B) = 16, (3, 2)
    cell = NATIVE[name](3, H)
    xw = torch.randn(T, B, cell.gates * H)
    s0 = states(cell, B)
    message = "xbias must be" if name != "lstm" else "xbias is the input bias"
    with pytest.raises(RnnkitError, match=message):
        run(cell, xw, s0, cell.rec_params(), backend="native", xbias=torch.zeros(1))
    if name != "lstm":  # the loop checks the size too (check=False, as Recurrent calls it)
        with pytest.raises(RuntimeError, match="b_xh of 1 for"):
            run(cell, xw, s0, cell.rec_params(), backend="native", xbias=torch.zeros(1), check=False)
        run(cell, xw, s0, cell.rec_params(), backend="native", xbias=torch.zeros(cell.gates * H))  # (fits)
    if name != "mut1":
        with pytest.raises(RnnkitError, match="raw_tail is MUT1's"):
            run(cell, xw, s0, cell.rec_params(), backend="native", raw_tail=True)


def test_a_state_of_no_units_takes_an_xw_of_no_columns_only():
    """Zero units skipped run's size checks: an lstmp with h 0 wide read xw as 4c wide whatever its width (ASan:
    heap-buffer-overflow), and 0 units with an xw of columns gave dxw's columns unwritten, memory as it was."""
    from rnnkit.errors import RnnkitError

    T, B, c = 3, 2, 16
    P = (torch.randn(4 * c, 0), torch.randn(4 * c), torch.randn(0, c))
    with pytest.raises(RnnkitError, match=r"must be narrower and at least 1 wide"):
        run(LSTMP, torch.randn(T, B, 1), (torch.zeros(B, 0), torch.zeros(B, c)), P, backend="native")
    xw, h0, P = torch.randn(T, B, 5), (torch.zeros(B, 0),), (torch.zeros(0, 0), torch.zeros(0))
    with pytest.raises(RnnkitError, match=r"xw must be \(T, B, 0\) for a state of 0 units"):
        run(CELLS["rnn_tanh"], xw, h0, P, backend="native")
    with pytest.raises(RuntimeError, match="xw rows of 5 columns for a cell that reads 0"):  # (C++'s check)
        run(CELLS["rnn_tanh"], xw, h0, P, backend="native", check=False)
    hs, (h,) = run(CELLS["rnn_tanh"], xw[..., :0], h0, P, backend="native")
    assert hs.shape == (T, B, 0) and h.shape == (B, 0)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
def test_a_state_of_no_units_runs_forward_and_backward_without_a_null_memcpy(name):
    """The loop copied state_0 into its slot and h_T (c_T) out of it with memcpy, given an empty tensor's data
    pointer, null, at 0 units: undefined behaviour even for 0 bytes (UBSan: 'null pointer passed as argument 1,
    which is declared to never be null', engine.cpp's put and take). Shows only under -fsanitize=undefined."""
    T, B = 3, 2
    for grad in (False, True):
        P = tuple(torch.zeros(s).requires_grad_(grad) for s in ((0, 0), (0,)))
        xw = torch.randn(T, B, 0, requires_grad=grad)
        s0 = tuple(torch.zeros(B, 0, requires_grad=grad) for _ in range(2 if name == "lstm" else 1))
        hs, sT = run(CELLS[name], xw, s0, P, backend="native")
        assert hs.shape == (T, B, 0) and all(s.shape == (B, 0) for s in sT)
        if grad:
            (hs.sum() + sum(s.sum() for s in sT)).backward()
            assert xw.grad.shape == xw.shape and all(s.grad.shape == s.shape for s in s0)


@pytest.mark.parametrize(
    "args",
    [
        (0, False, False, (4, 3), (5, 6), (4, 6)),  # op(A) 4×3 against op(B) 5×6
        (0, True, False, (4, 3), (4, 6), (4, 6)),  # op(A) = Aᵀ is 3×4, C has 4 rows
        (0, False, True, (4, 3), (6, 4), (4, 6)),  # op(B) = Bᵀ is 4×6, A has 3 columns
        (0, False, False, (4, 3), (3, 7), (4, 6)),  # C one column short
        (3, False, False, (4, 3), (3, 6), (4, 6)),  # no plan 3
    ],
)
def test_gemm_run_refuses_operands_that_disagree(args):
    """The tests' gemm_run binding read past its operands when their shapes disagreed (it took M, N, K from
    C and A alone): now an error naming the shapes."""
    plan, ta, tb, a, b, c = args
    with pytest.raises(RuntimeError, match="gemm_run: (shapes disagree|plan is)"):
        native.load().gemm_run(plan, ta, tb, torch.randn(a), torch.randn(b), 0.0, torch.zeros(c))


@pytest.mark.skipif(
    native.load() is None or not native.load().have_own_gemm(),
    reason="rnnkit's own GEMM kernel needs an AVX-512 CPU",
)
@pytest.mark.parametrize(
    "tw, a, w, N, c",
    [
        (False, (4, 3), (3, 6), 7, (4, 7)),  # N past W's columns
        (True, (4, 3), (6, 3), 5, (4, 5)),  # Wᵀ has 6 columns, not 5
        (False, (4, 2), (3, 6), 6, (4, 6)),  # A has 2 columns, K = 3
        (False, (4, 3), (3, 6), 6, (5, 6)),  # C's rows
        (False, (4, 3), (3, 6), 6, (4, 5)),  # C one column short
    ],
)
def test_own_gemm_refuses_operands_that_disagree(tw, a, w, N, c):
    """The same for the own kernel's test binding."""
    with pytest.raises(RuntimeError, match="own_gemm: shapes disagree"):
        native.load().own_gemm(torch.randn(a), torch.randn(w), tw, N, 0.0, torch.zeros(c))


@pytest.mark.skipif(
    native.load() is None or not native.load().have_own_gemm() or torch.get_num_threads() < 2,
    reason="no own GEMM kernel (AVX-512) to choose, or one thread",
)
def test_the_first_call_on_fresh_threads_takes_the_callers_gemm_choice():
    """With the rows split, each worker thread's prepared weights were keyed by that worker's own torch thread
    count, which reads 1 in a worker that has not run torch yet (torch.set_num_threads never called): the first
    forward of a process, and of every new Python thread (whose OpenMP workers are new), took the choice of another
    key than the later calls of the main thread, and gave other bits for the same input."""
    import subprocess
    import sys

    code = (
        "import threading, torch, rnnkit\nfrom rnnkit.engine import native\n"
        "n, H = torch.get_num_threads(), 256\n"
        "key = lambda threads: [4, 4 * H, H, 1, H, 4 * H, 0, threads, -2, -2]  # a 4-row slice's W_hh\n"
        "native.load().add_gemm_plans([(key(n), 3), (key(1), 4)])  # two choices: MKL packed, the own kernel\n"
        "torch.manual_seed(0)\nlayer = rnnkit.Recurrent('lstm', 8, H, backend='native')\n"
        "x = torch.randn(8, 10, 8)\nouts = []\n"
        "def call():\n"
        "    with torch.no_grad():\n"
        "        outs.append(layer(x)[0])\n"
        "for _ in range(3):\n"
        "    call()\n"
        "for _ in range(2):  # each a new Python thread, whose OpenMP workers are new too\n"
        "    thread = threading.Thread(target=call)\n    thread.start()\n    thread.join(timeout=120)\n"
        "print([torch.equal(outs[0], o) for o in outs[1:]])\n"
    )
    env = {**os.environ, "RNNKIT_GEMM_PLANS": "", "RNNKIT_GEMM": "auto", "RNNKIT_ROW_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.strip().splitlines()[-1:] == ["[True, True, True, True]"], out.stdout + out.stderr


def test_the_small_loops_kept_scratch_keeps_its_zeros_and_shares_nothing_between_calls():
    """A small loop's zeros (an absent bias) and per-step scratch come from one block per thread kept from call to
    call (one-step calls): layers of other widths and dtypes, with and without biases, one after another, in two
    threads at once, each give the bits of the same layer recording gradients."""
    import threading

    torch.manual_seed(0)
    layers = [
        Recurrent(cell, 3, H, bias=bias).to(dtype)
        for cell, H, bias, dtype in [("rnn_tanh", 2, True, torch.float32), ("lstm", 9, False, torch.float32),
                                     ("gru", 30, False, torch.float64), ("gru_cho", 5, True, torch.float32),
                                     ("leaky", 17, False, torch.float32), ("lstm", 4, False, torch.float64)]
    ]  # fmt: skip
    xs = [torch.randn(2, 3, 3, dtype=m.cells[0].W_hh.dtype) for m in layers]
    h0s = [
        tuple(torch.randn(1, 2, m.hidden_size, dtype=x.dtype) for _ in range(m.num_states))
        for m, x in zip(layers, xs)
    ]

    def flat(m, x, h0):
        out, state = m(x, h0 if len(h0) == 2 else h0[0])
        return [t.detach() for t in (out, *(state if isinstance(state, tuple) else (state,)))]

    wants = [flat(m, x, h0) for m, x, h0 in zip(layers, xs, h0s)]
    # (the recording run takes the same scratch: against autograd too)
    for m, x, h0, want in zip(layers, xs, h0s, wants):
        m.backend = "autograd"
        tol = 1e-12 if x.dtype == torch.float64 else 1e-6
        for u, v in zip(flat(m, x, h0), want):
            torch.testing.assert_close(u, v, rtol=tol, atol=tol)
        m.backend = None
    failures = []

    def steps():
        for _ in range(20):
            for m, x, h0, want in zip(layers, xs, h0s, wants):
                with torch.no_grad():
                    got = flat(m, x, h0)
                if not all(torch.equal(u, v) for u, v in zip(got, want)):
                    failures.append(m)

    threads = [threading.Thread(target=steps) for _ in range(2)]
    for t in threads:
        t.start()
    steps()
    for t in threads:
        t.join()
    assert not failures
