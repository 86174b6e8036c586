"""What a graph keeps for its backward: every backend saves it through save_for_backward, so that saved-tensor
hooks see it, torch.utils.checkpoint drops it, backward frees it, and the gradients use what forward saw; and
the native engine's recycled buffers and GEMM plans stay bounded when shapes vary."""

import json
import os
import random

import pytest
import torch

from rnnkit import CELLS, Recurrent
from rnnkit.engine import native

BACKENDS = ["autograd", "python", "native"]
needs_native = pytest.mark.skipif(
    native.unsupported(CELLS["lstm"], torch.zeros(1)) is not None,
    reason=f"native backend unavailable: {native._reason}",
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "leaky"])
def test_hooks_that_save_copies_keep_the_weights_of_forward(cell, backend):
    """A saved-tensor hook that stores copies (offloading, compression), then the weights changed in place
    before backward (an optimizer step): the gradient is the one at forward's weights, as autograd's own graph
    and torch.nn give it (python and native read the module's weights as they were at backward: 0.19 off)."""

    def grad(step):
        torch.manual_seed(0)
        layer = Recurrent(cell, 5, 7, backend=backend).double()
        x = torch.randn(3, 12, 5, dtype=torch.float64)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
            loss = layer(x)[0].pow(2).sum()
        if step:
            with torch.no_grad():
                for p in layer.parameters():
                    p.mul_(1.5)
        loss.backward()
        return [p.grad for p in layer.parameters()]

    for got, want in zip(grad(step=True), grad(step=False)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["python", "native"])
def test_the_loop_caches_go_through_save_for_backward(backend):
    """Hooks see the states and caches (an LSTM's gates: T·B·4H numbers), and backward frees them while the
    output lives on (they were attributes of the graph node: kept as long as the output, out of reach of
    checkpointing)."""
    T, B, H = 20, 4, 8
    layer = Recurrent("lstm", 3, H, backend=backend)
    seen = []

    def pack(t):
        seen.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = layer(torch.randn(B, T, 3))
    assert sum(seen) >= T * B * 4 * H
    node = out.grad_fn
    while "Recurrence" not in type(node).__name__:  # past the layout copy after the loop
        node = next(f for f, _ in node.next_functions if f is not None)
    assert len(node.saved_tensors) > 2
    out.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        node.saved_tensors  # noqa: B018


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_graph_kept_after_backward_holds_no_inputs(backend):
    """A loss kept after its backward (`total = total + loss`, a list of losses) holds autograd's metadata only,
    as with torch.nn.LSTM: not the layer's input nor, above the first layer, the (T, B, H) output of the layer
    below (the recipe that computes xw again for higher-order gradients held them as an attribute of the graph
    node: memory grew by both with every step kept)."""
    import gc

    layer, kept = Recurrent("lstm", 3, 8, num_layers=2, backend=backend), []
    for _ in range(3):
        x = torch.randn(4, 12, 3)
        loss = layer(x)[0].pow(2).mean()
        loss.backward()
        kept.append(loss)
        del x, loss
    gc.collect()
    held = [t.shape for t in gc.get_objects() if type(t) is torch.Tensor and t.dim() == 3]
    assert [s for s in held if sorted(s) in ([3, 4, 12], [4, 8, 12])] == []


@needs_native
def test_checkpointing_keeps_no_caches():
    """Under torch.utils.checkpoint the loop's states and caches don't stay between forward and backward (they
    did as attributes of the graph node: checkpointing saved no memory)."""
    ext = native.load()
    layer = Recurrent("lstm", 3, 64, backend="native")
    x = torch.randn(16, 50, 3)
    caches = 50 * 16 * 4 * 64 * 4  # bytes of an LSTM's gates alone
    base = ext.pool_stats()[1]
    out = layer(x)[0]
    assert ext.pool_stats()[1] - base >= caches
    del out
    base = ext.pool_stats()[1]
    out = torch.utils.checkpoint.checkpoint(lambda x: layer(x)[0], x, use_reentrant=False)
    assert ext.pool_stats()[1] - base < caches / 2  # the output alone
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@needs_native
def test_recycled_buffers_stay_bounded_when_shapes_vary():
    """The pool keeps at most 1.25x the most memory the loops used at once (at least 64 MB): shapes that vary
    from call to call no longer pile up idle blocks of every size met (1.1 GB after 400 random shapes)."""
    ext = native.load()
    native.release_memory()
    assert ext.pool_stats()[0] == 0
    layer = Recurrent("lstm", 16, 256, backend="native")
    random.seed(0)
    met = 0
    for _ in range(40):
        B, T = random.randint(8, 24), random.randint(40, 120)
        out, _ = layer(torch.randn(B, T, 16))
        out.sum().backward()
        met += T * B * 256 * 4 * 4  # the caches alone of this shape
    idle, _, peak = ext.pool_stats()
    assert 0 < idle <= max(64 << 20, peak + peak // 4)
    if peak < met / 8:  # (a test before this one may have used more at once)
        assert idle < met / 4
    assert native.release_memory() == idle and ext.pool_stats()[0] == 0


@needs_native
@pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads the process's memory (RSS) from /proc"
)
def test_release_memory_gives_the_memory_back_to_the_system():
    """release_memory() lowers the process's memory by what it says it released: glibc kept freed blocks under
    its mmap threshold (raised by a big block freed before) in its heap, so RSS did not move at all (579 MB
    before and after releasing 258 MB, in the report)."""
    import gc

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS"))

    layer = Recurrent("gru", 16, 256, backend="native")
    out, _ = layer(torch.randn(48, 300, 16))  # blocks of 15-30 MB, freed: glibc's mmap threshold rises
    out.sum().backward()
    del out, _
    native.release_memory()
    for B in (16, 24, 32):  # then blocks of a few MB: from the heap
        out, _ = layer(torch.randn(B, 100, 16))
        out.sum().backward()
        del out, _
    gc.collect()
    before = rss()
    freed = native.release_memory()
    assert freed > 32 << 20
    assert before - rss() > freed / 2


def _malloc_in_use():
    """Bytes malloc has handed out and not had back (glibc's mallinfo2: its heap's and its own mmapped blocks'),
    or None where that can't be read."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                    "fordblks keepcost".split()]  # fmt: skip

    mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = Mallinfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


needs_mallinfo = pytest.mark.skipif(
    _malloc_in_use() is None, reason="reads malloc's counts (glibc's mallinfo2)"
)


@needs_native
@needs_mallinfo
def test_recycled_buffers_are_mapped_by_the_pool_not_taken_from_malloc():
    """The pool's blocks came from malloc, which (its mmap threshold raised by a big block freed) put them in its
    heap among torch's short-lived tensors, where blocks dropped stayed in the process (a 1x128 LSTM, B 32, trained
    on lengths of 600-784 with RNNKIT_GEMM=blas: 600 MB after 100 steps, 124 MB of it free in malloc's heap; 540 MB
    and 65 MB now). They are mapped by the pool itself, and a block dropped goes back to the system."""
    ext = native.load()
    x, W = torch.randn(4099, 1, 31), torch.randn(523, 31)
    native.project(x, W, None)  # (its GEMM timed first)
    native.release_memory()  # then a new block for it
    before, live = _malloc_in_use(), ext.pool_stats()[1]
    xw = native.project(x, W, None)
    grown = ext.pool_stats()[1] - live
    assert grown >= xw.numel() * 4
    assert _malloc_in_use() - before < grown / 4


@needs_native
@needs_mallinfo
def test_onednn_gemms_over_many_row_counts_meet_a_few_shapes():
    """torch's oneDNN matmul keeps what it made for every shape it meets (about 0.5 MB a shape, up to 1,024 of
    them), and the input projection over a batch's T·B rows met a new one at every new T·B (13.5 MB for these 24
    row counts; a 1x128 LSTM, B 32, trained on lengths of 600-784 held 850 MB after 100 steps, 650 MB now). It runs
    in blocks of a few row counts now, with the same numbers as one call over the rows."""
    ext = native.load()
    if not ext.have_dnnl():
        pytest.skip("oneDNN's matmul doesn't run float32 on this CPU")
    torch.manual_seed(0)
    W = torch.randn(48, 24)  # (N = 48, K = 24: met nowhere else)
    ext.set_gemm("dnnl")  # (every shape by oneDNN, however many this process has run: see the next test)
    try:
        ext.gemm_run(1, False, True, torch.randn(3000, 24), W, 0.0, torch.empty(3000, 48))
        before = _malloc_in_use()
        for i in range(24):
            x = torch.randn(2048 + 40 * i, 24)
            C = ext.gemm_run(1, False, True, x, W, 0.0, torch.empty(len(x), 48))
            for rows in (slice(0, 1000), slice(len(x) - 1000, len(x))):  # (under 2,048 rows: one call)
                assert torch.equal(
                    C[rows], ext.gemm_run(1, False, True, x[rows], W, 0.0, torch.empty(1000, 48))
                )
        assert _malloc_in_use() - before < 4 << 20
    finally:
        ext.set_gemm(os.environ.get("RNNKIT_GEMM", "auto"))


def _in_a_fresh_process(code: str):
    """What `code` prints last, as JSON, run in a process of its own: a fresh count of oneDNN's shapes, the GEMM
    choices timed there (no plan file), torch, rnnkit, native, ext = native.load() and in_use() (malloc's bytes in
    use) at hand, torch's seed 0. Skips where oneDNN's matmul doesn't run float32."""
    import subprocess
    import sys

    head = (
        "import ctypes, json, torch, rnnkit\n"
        "from rnnkit.engine import native\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in 'a b c d hblkhd f g uordblks i j'.split()]\n"
        "info = ctypes.CDLL(None).mallinfo2\n"
        "info.restype = Info\n"
        "def in_use():\n"
        "    i = info()\n"
        "    return i.uordblks + i.hblkhd\n"
        "ext = native.load()\n"
        "if not ext.have_dnnl():\n"
        "    print(json.dumps('no dnnl')); raise SystemExit\n"
        "torch.manual_seed(0)\n"
    )
    env = {**os.environ, "RNNKIT_GEMM": "auto", "RNNKIT_GEMM_PLANS": ""}
    run = subprocess.run(
        [sys.executable, "-c", head + code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    if result == "no dnnl":
        pytest.skip("oneDNN's matmul doesn't run float32 on this CPU")
    return result


@needs_native
@needs_mallinfo
def test_onednn_runs_a_bounded_number_of_shapes_then_mkl():
    """Where sizes follow the data (rows under 2,048, a projection adding its bias, a weight gradient's sum over
    T·B), every new T·B was a new oneDNN shape, about 0.6 MB each in oneDNN's and ideep's caches (a 1x64 LSTM on
    random B and T held 1,065 MB after 1,000 steps and 1,289 after 2,000; MKL alone 391). oneDNN runs at most
    dnnl_shapes()[1] call shapes in a process now, the first met, and later ones by MKL: the same numbers within
    float32's rounding, the same bits at every call of a shape, and no more memory. A GEMM class timed then is not
    given to later processes (the plan file), which time it with oneDNN offered."""
    result = _in_a_fresh_process(
        "W, x = torch.randn(40, 24), torch.randn(1000, 24)\n"
        "def run(M):  # (its bits and its largest error, C dropped)\n"
        "    C = ext.gemm_run(1, False, True, x[:M], W, 0.0, torch.empty(M, 40))\n"
        "    return hash(C.numpy().tobytes()), float((C - x[:M] @ W.T).abs().max())\n"
        "shapes = getattr(ext, 'dnnl_shapes', lambda: (None, 256))  # (None: a build that ran every shape)\n"
        "cap = shapes()[1]\n"
        "first = {M: run(M) for M in range(300, 300 + cap)}\n"
        "before = in_use()\n"
        "later = {M: run(M) for M in range(300 + cap, 400 + cap)}\n"
        "grown = in_use() - before\n"
        "err = max(e for _, e in [*first.values(), *later.values()])\n"
        "same = all(run(M) == C for M, C in {**first, **later}.items())\n"
        "w = torch.randn(301, 37)\n"
        "native.project(torch.randn(3000, 1, 37), w, None)  # (a new class timed, oneDNN not offered: no room)\n"
        "kept = [k for k, _ in ext.gemm_plans() if k[1] == 320 and k[2] == 37]\n"
        "print(json.dumps([grown, err, same, shapes(), kept]))\n"
    )
    grown, err, same, (shapes, cap), kept = result
    assert grown < 4 << 20, f"{grown / 2**20:.1f} MB more for 100 new shapes"
    assert err < 1e-4 and same
    assert shapes == cap
    assert kept == []


@needs_native
@needs_mallinfo
def test_onednn_shapes_are_counted_per_thread_count():
    """oneDNN makes a primitive per call shape and thread count: the 256 shapes of the bound run at 1 thread and then
    at 2 held 137 MB more, where dnnl_shapes() said 256 all the while. A shape at another thread count is one more
    of the bound's, and past it runs by MKL: no more memory, the same bits at every call."""
    result = _in_a_fresh_process(
        "W, x = torch.randn(64, 64), torch.randn(1000, 64)\n"
        "def sweep(threads):  # (the bits of every shape)\n"
        "    torch.set_num_threads(threads)\n"
        "    return [hash(ext.gemm_run(1, False, True, x[:M], W, 0.0, torch.empty(M, 64)).numpy().tobytes())\n"
        "            for M in range(300, 300 + ext.dnnl_shapes()[1])]\n"
        "first = sweep(1)\n"
        "torch.set_num_threads(2)  # (2 threads' own memory: OpenMP's, MKL's)\n"
        "ext.gemm_run(0, False, True, x, W, 0.0, torch.empty(1000, 64))\n"
        "before = in_use()\n"
        "two = sweep(2)\n"
        "grown = in_use() - before\n"
        "same = sweep(2) == two and sweep(1) == first\n"
        "print(json.dumps([grown, same]))\n"
    )
    grown, same = result
    assert grown < 4 << 20, f"{grown / 2**20:.1f} MB more for the same shapes at 2 threads"
    assert same


@needs_native
def test_a_step_class_timed_with_room_for_one_of_its_two_onednn_shapes_is_kept_for_the_process_only():
    """A step's weight W_hh times oneDNN on W as stored and on its transposed copy: two call shapes. With one shape
    left of oneDNN's bound, the first took it and the second ran by MKL, timed as oneDNN, and the class went to the
    plan file as if oneDNN had been timed. The timing takes its shapes before it times, all or none: with room for
    one only it offers oneDNN no more, takes none, and keeps its choice for this process only."""
    result = _in_a_fresh_process(
        "torch.set_num_threads(1)\n"
        "m = rnnkit.Recurrent('lstm', 16, 64, backend='native')\n"
        "m(torch.randn(16, 200, 16))  # (the projection's class and shape: 3,200 rows)\n"
        "W, x = torch.randn(40, 24), torch.randn(1000, 24)\n"
        "M, cap = 300, ext.dnnl_shapes()[1]\n"
        "while ext.dnnl_shapes()[0] < cap - 1:  # (one shape left)\n"
        "    ext.gemm_run(1, False, True, x[:M], W, 0.0, torch.empty(M, 40)); M += 1\n"
        "m(torch.randn(20, 160, 16))  # (the same projection, a new step class: h_{t-1} W_hh^T over 20 rows)\n"
        "kept = [k for k, _ in ext.gemm_plans() if k[0] == 20 and k[8] == -1]\n"
        "print(json.dumps([ext.dnnl_shapes(), kept]))\n"
    )
    (shapes, cap), kept = result
    assert kept == []
    assert shapes == cap - 1  # (none taken)


@needs_native
def test_gemm_plans_are_kept_per_shape_class():
    """A new (T, B) no longer times three GEMM options (10-20x the call): sizes share a plan by eighths of an
    octave, timed on the first shape of the class met, and the same input gives the same bits every call."""
    ext = native.load()
    W = torch.randn(301, 37)

    def mine():  # the plans of this test's projection: K = 37 and N = 301 occur nowhere else
        return [
            k for k, _ in ext.gemm_plans(here=True) if k[1] == 320 and k[2] == 37
        ]  # N = 301: class [289, 320]

    ext.set_gemm("auto")
    try:
        x = torch.randn(3200, 1, 37)
        first = native.project(x, W, None)
        assert [k[0] for k in mine()] == [3328]  # timed for the class [3073, 3328]
        for M in (3300, 3100):
            native.project(torch.randn(M, 1, 37), W, None)
        assert len(mine()) == 1
        assert torch.equal(native.project(x, W, None), first)
    finally:
        ext.set_gemm(os.environ.get("RNNKIT_GEMM", "auto"))


@needs_native
def test_a_class_between_two_agreeing_plans_takes_their_choice_untimed():
    """A fresh machine timed every eighth-octave class of T·B it met, 0.1-0.3 s each: 25 s in the first 60 steps
    of a 2x128 LSTM on random (B, T), 3.5x the steps' own time. A class between two kept classes of the same
    GEMM at most 4x apart, that differ from it in that one size and agree, now takes their choice untimed.
    Planted: MKL on the transposed problem (plan 2), which a timing of this shape would not pick."""
    ext = native.load()
    W = torch.randn(293, 41)  # N = 293 (class 320), K = 41: occur nowhere else

    def mine():
        return {k[0]: v for k, v in ext.gemm_plans(here=True) if k[1] == 320 and k[2] == 41}

    ext.set_gemm("auto")
    try:
        native.project(torch.randn(300, 1, 41), W, None)  # timed: the key of this GEMM
        (key,) = [k for k, _ in ext.gemm_plans(here=True) if k[1] == 320 and k[2] == 41]
        assert ext.add_gemm_plans([([M, *key[1:]], 2) for M in (2048, 4096, 16384 * 4 + 8192)]) == 3
        for M, kept in ((3000, 2), (2900, 2)):  # classes 3072 and 3072: between 2048 and 4096
            x = torch.randn(M, 1, 41)
            out = native.project(x, W, None)
            torch.testing.assert_close(out, x @ W.T, rtol=1e-5, atol=1e-5)
            assert mine()[3072] == kept
        native.project(torch.randn(5000, 1, 41), W, None)  # class 5120: no agreeing neighbour within 4x above
        assert 5120 in mine()
    finally:
        ext.set_gemm(os.environ.get("RNNKIT_GEMM", "auto"))


@needs_native
def test_weight_gradients_run_by_the_timed_gemm_plan():
    """dW_hh = dpreᵀ h_prev over all T·B rows went to at::mm (MKL) and never to the library a timing found
    fastest: on an AMD Zen 4, MKL ran a 2x512 LSTM's dW_hh at 103 GFLOP/s, oneDNN at 188 (a tenth of the
    whole train step). It is now planned like every other GEMM of the engine, with the same gradients."""
    ext = native.load()
    ext.set_gemm("auto")
    try:
        torch.manual_seed(0)
        x = torch.randn(7, 53, 19)  # T·B = 371 rows, H = 52: shapes that occur nowhere else
        grads = []
        for backend in ("native", "python"):
            torch.manual_seed(1)
            layer = Recurrent("lstm", 19, 52, backend=backend)
            out, _ = layer(x)
            out.square().sum().backward()
            grads.append([p.grad for p in layer.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        dW_hh = [208, 52, 384, 1, 0]  # (4H × H) = dpreᵀ h_prev, K = 371 (class 384)
        planned = [k for k, _ in ext.gemm_plans(here=True) if k[:5] == dW_hh]
        assert planned, "dW_hh was not run by a GEMM plan"
    finally:
        ext.set_gemm(os.environ.get("RNNKIT_GEMM", "auto"))


def test_a_cell_of_ones_own_may_cache_anything():
    """A user-defined cell (the python backend runs its step functions) whose cache is not a flat tuple of
    tensors keeps it as it is."""
    from rnnkit.cells._base import linear
    from rnnkit.cells.elman import RNNTanh
    from rnnkit.engine import run

    def step(xw_t, state, P):
        (h_prev,) = state
        h_t = torch.tanh(xw_t + linear(h_prev, *P))
        return (h_t,), (h_prev,), ((h_t, h_prev), 1.0)  # a nested tuple and a number

    def step_backward(dstate, cache, P):
        (dh_t,), ((h_t, _), scale) = dstate, cache
        da = dh_t * (1 - h_t * h_t) * scale
        return da, (da @ P[0],), (da,), ()

    class MyCell(RNNTanh):
        pass

    MyCell.step, MyCell.step_backward = staticmethod(step), staticmethod(step_backward)
    cell = MyCell(3, 4).double()
    xw = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for backend in ("python", "autograd"):
        hs, _ = run(cell, xw, (torch.zeros(2, 4, dtype=torch.float64),), cell.rec_params(), backend=backend)
        grads.append(torch.autograd.grad(hs.sum(), xw)[0])
    torch.testing.assert_close(*grads)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_forward_without_grad_keeps_no_step_caches_on_the_python_loop(mode):
    """Under no_grad or inference_mode (evaluation, sampling) the python loop holds one step's caches at a time, as
    the native loop does: it kept every step's (an LSTM's gates, c_{t-1}, tanh c_t) until the loop ended, for a
    backward that never comes (444 MB at the peak of a 32x1000 forward of a 256-unit LSTM, 190 MB natively)."""
    import weakref

    from rnnkit.cells.lstm import LSTM, lstm_step
    from rnnkit.engine import run

    refs, most = [], 0

    def step(xw_t, state, P):
        nonlocal most
        got = lstm_step(xw_t, state, P)
        most = max(most, sum(r() is not None for r in refs))  # earlier steps' gates still held
        refs.extend(weakref.ref(g) for g in got[2][:4])
        return got

    class Spy(LSTM):
        pass

    Spy.step = staticmethod(step)
    cell = Spy(3, 4)
    P = [p.detach().requires_grad_() for p in cell.rec_params()]
    with mode():
        hs, _ = run(
            cell, cell.project_input(torch.randn(20, 2, 3)), (torch.zeros(2, 4),) * 2, P, backend="python"
        )
    assert hs.shape == (20, 2, 4)
    assert most <= 4


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "mut1"])
def test_saved_tensors_unpacked_with_other_strides_give_the_same_gradients(cell, backend):
    """An unpack hook may hand a saved tensor back with the same values in another layout (a copy made in another
    order, a transposed store): the native loop read the states and caches as forward had laid them out, and its
    gradients were wrong in silence (1.3 off for an lstm), and so were those of the input projection (from 8 steps on:
    its saved input and weight as 2-D tensors)."""

    def strided(t):
        return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() >= 2 else t

    def grads(unpack):
        torch.manual_seed(0)
        layer = Recurrent(cell, 4, 5, backend=backend).double()
        x = torch.randn(3, 9, 4, dtype=torch.float64, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
            out = layer(x)[0]
        out.pow(2).sum().backward()
        return [x.grad, *(p.grad for p in layer.parameters())]

    for got, want in zip(grads(strided), grads(lambda t: t)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_the_python_loop_saves_each_state_once(cell):
    """A step's cache that is a step's u (Elman's h_t, the next step's h_prev; GRU's and leaky's h_prev) is saved
    as a view of the stacked us, not as a second copy: the python loop keeps about what autograd's graph keeps
    (here it kept 1.7x for rnn_tanh and rnn_relu, 1.44x for leaky, 1.14x for mut3; now at most 1.1x)."""

    def saved_bytes(backend):
        torch.manual_seed(0)
        layer, storages = Recurrent(cell, 8, 32, backend=backend), {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(torch.randn(50, 8, 8))
        return sum(storages.values())

    assert saved_bytes("python") <= 1.2 * saved_bytes("autograd")


@needs_native
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "lstmp"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_stacked_native_layer_keeps_the_lower_output_once(cell, bidirectional):
    """The lower layer's output, which the layer above saves as its projection's input, is a view of the states the
    loop saves (h_1..h_T), not a second copy of them: the stack's saved storages hold no (T, B, H) twice (a 2-layer
    rnn_tanh kept 23% of its saved bytes twice, lstm 6%); the gradients those of the autograd backend."""
    T, B, D, H = 20, 4, 5, 16

    def run(backend, lengths=None):
        torch.manual_seed(0)
        opts = {"proj_size": 8} if cell == "lstmp" else {}
        layer = Recurrent("lstm" if cell == "lstmp" else cell, D, H, num_layers=3, bidirectional=bidirectional,
                          backend=backend, **opts).double()  # fmt: skip
        x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
        saved = {}

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.detach()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, _ = layer(x, lengths=lengths)
        grads = torch.autograd.grad(out.pow(2).sum(), [x, *layer.parameters()])
        return list(saved.values()), grads

    saved, grads = run("native")
    hs = [t for t in saved if t.dim() == 3 and t.shape[0] == T]
    states = [t for t in saved if t.dim() == 3 and t.shape[0] == T + 1]
    for h in hs:  # no saved output equals a saved run of states h_1..h_T (h_T..h_1 reversed)
        assert not any(
            h.shape == s[1:].shape and (torch.equal(h, s[1:]) or torch.equal(h, s[:-1])) for s in states
        )
    for lengths in (None, [20, 7, 13, 1]):
        for got, want in zip(run("native", lengths)[1], run("autograd", lengths)[1]):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    small = Recurrent("gru" if cell == "lstmp" else cell, 2, 3, num_layers=2, bidirectional=bidirectional,
                      batch_first=False, backend="native").double()  # fmt: skip
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, *p: small(x)[0], (x, *small.parameters()))
    out, _ = small(x)  # the layer's own output, time-major, is no view: it may still be changed in place
    out.mul_(2).sum().backward()


@needs_native
def test_the_pool_holds_at_most_its_bound_idle_and_in_use_together():
    """Idle blocks were bounded when given back, not when new memory was mapped: a no-grad forward of a new length
    mapped its buffers beside up to 1.25x the peak idle in blocks of other lengths, and the pool held 2.25x its
    peak (a 1x128 LSTM, B 32, lengths of 2000-5000: RSS 866 MB, torch.nn 329 MB). Before a block is mapped, the
    blocks idle longest go back now, so idle and in use together stay within 1.25x the peak (at least 64 MB)."""
    import subprocess
    import sys

    code = (
        "import torch, rnnkit\n"
        "from rnnkit.engine import native\n"
        "torch.set_num_threads(1)\n"
        "ext, layer, over, outs = native.load(), rnnkit.Recurrent('lstm', 8, 64, backend='native'), 0, []\n"
        "with torch.no_grad():\n"
        "    for T in (1000, 2100, 1300, 2600, 1650, 3300, 1000, 2100):\n"
        "        outs.append(layer(torch.randn(16, T, 8))[0])  # (all kept: in use while the next ones run)\n"
        "        idle, live, peak = ext.pool_stats()\n"
        "        over = max(over, idle + live - max(64 << 20, peak + peak // 4))\n"
        "print(over)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) <= 0, f"{int(run.stdout.split()[-1]) >> 20} MB over the bound"
