"""The engine: gradcheck for every cell and backend, backends equal to the autograd reference."""

import contextlib
import gc
import os
import pathlib
import signal
import subprocess
import sys
import time
import weakref

import pytest
import torch

from rnnkit import CELLS, GradProbe
from rnnkit.cells import LSTMP
from rnnkit.engine import run
from rnnkit.errors import RnnkitError

BACKENDS = ["autograd", "python"]


def setup(name, T=4, B=3, D=3, H=4, dtype=torch.float64, seed=0, lengths=None):
    torch.manual_seed(seed)
    cell = CELLS[name](D, H).to(dtype)
    xw = cell.project_input(torch.randn(T, B, D, dtype=dtype)).detach().requires_grad_()
    state0 = tuple(torch.randn(B, H, dtype=dtype, requires_grad=True) for _ in range(cell.num_states))
    P = tuple(p.detach().requires_grad_() for p in cell.rec_params() if p is not None)
    mask = None
    if lengths is not None:
        mask = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).to(dtype)[..., None]
    return cell, xw, state0, P, mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse,lengths", [(False, None), (True, [4, 2, 1])])
def test_gradcheck(name, backend, reverse, lengths):
    cell, xw, state0, P, mask = setup(name, lengths=lengths)
    n = len(state0)

    def f(xw, *rest):
        hs, state = run(cell, xw, rest[:n], rest[n:], mask, reverse, backend)
        return (hs, *state)  # gradient flows through the outputs AND the final state

    assert torch.autograd.gradcheck(f, (xw, *state0, *P), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(CELLS))
def test_python_equals_autograd_float32(name):
    cell, xw, state0, P, mask = setup(name, T=20, B=8, D=16, H=32, dtype=torch.float32, lengths=None)
    mask = (torch.arange(20)[:, None] < torch.randint(1, 21, (8,))[None]).float()[..., None]
    results = {}
    for backend in BACKENDS:
        hs, state = run(cell, xw, state0, P, mask, False, backend)
        g = torch.randn_like(hs, generator=torch.Generator().manual_seed(5))
        loss = (hs * g).sum() + sum(s.sum() for s in state)
        grads = torch.autograd.grad(loss, (xw, *state0, *P))
        results[backend] = (hs, *state, *grads)
    for a, b in zip(results["autograd"], results["python"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def _packed_rnn_tanh(xw, h_0, W_hh, b_hh, lengths, reverse):
    """torch.nn.RNN's packed run, written out: each sequence runs its own steps only (no padded step); hs 0 past them."""
    hs, h_T = [], []
    for b, n in enumerate(lengths):
        h, out = h_0[b], [None] * n
        for t in range(n - 1, -1, -1) if reverse else range(n):
            h = out[t] = torch.tanh(xw[t, b] + W_hh @ h + b_hh)
        hs.append(torch.stack(out + [torch.zeros_like(h)] * (xw.shape[0] - n)))
        h_T.append(h)
    return torch.stack(hs, 1), torch.stack(h_T)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_inf_recurrent_weight_gives_padded_inputs_no_gradient(name, backend, reverse):
    """run with a mask and W_hh[0, 0] = inf: a padded step ran on a zero state, 0·inf = NaN in its pre-activation,
    and its zero gradient times that made dxw NaN at padded steps ([[1, 0, 1], [1, 1, 0], [0, 1, 1]] per (t, b) for
    rnn_tanh, where torch.nn's packed run and the native loop have NaN at [[1, 0, 1], [1, 0, 0], [0, 0, 0]]). Padded
    inputs get a gradient of 0 (+0.0, as torch.nn's), and rnn_tanh's gradients are the packed run's."""
    lengths = [3, 1, 2]
    cell, xw, state0, P, mask = setup(name, T=3, B=3, D=2, H=3, lengths=lengths)
    # h_0 > 0: tanh(inf) = 1, the forward finite
    state0 = tuple((torch.rand_like(s) + 0.5).requires_grad_() for s in state0)
    with torch.no_grad():
        P[0][0, 0] = float("inf")
    hs, state = run(cell, xw, state0, P, mask, reverse, backend)
    (dxw,) = torch.autograd.grad(hs.sum() + sum(s.sum() for s in state), xw)
    padded = (mask == 0).expand_as(dxw)
    assert (dxw[padded] == 0).all() and not dxw[padded].signbit().any()
    assert dxw[~padded].isnan().any()  # (the inf reaches the valid steps: the case is the one torch.nn has)
    if name == "rnn_tanh":
        hs, h_T = _packed_rnn_tanh(xw, state0[0], *P, lengths, reverse)
        (want,) = torch.autograd.grad(hs.sum() + h_T.sum(), xw)
        torch.testing.assert_close(dxw, want, rtol=1e-12, atol=1e-12, equal_nan=True)


# (torch's own, from the inductor its scan's backward imports)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ["rnn_tanh", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_an_inf_recurrent_weight_gives_padded_inputs_no_gradient_in_a_program_exported_with_a_dynamic_time(
    name, reverse
):
    """The same under torch.export with T dynamic, where run is one scan (reference.scan_loop): a padded step's xw_t
    still got the step's zero gradient times its NaN pre-activation (0·inf), dxw NaN at (t, b) [[1, 0, 1], [1, 1, 0],
    [0, 1, 1]] forward where the autograd backend and torch.nn's packed run have [[1, 0, 1], [1, 0, 0], [0, 0, 0]]."""
    lengths = [3, 1, 2]
    cell, xw, state0, P, mask = setup(name, T=3, B=3, D=2, H=3, lengths=lengths)
    state0 = tuple((torch.rand_like(s) + 0.5).requires_grad_() for s in state0)
    with torch.no_grad():
        P[0][0, 0] = float("inf")
    n = len(state0)

    class Run(torch.nn.Module):
        def forward(self, xw, mask, *rest):
            hs, state = run(cell, xw, rest[:n], rest[n:], mask, reverse)
            return hs, *state

    args = (xw.detach(), mask, *(t.detach() for t in (*state0, *P)))
    T = torch.export.Dim("T", min=2, max=16)
    program = torch.export.export(Run(), args, dynamic_shapes=({0: T}, {0: T}, tuple(None for _ in args[2:])))
    hs, *state = program.module()(xw, mask, *state0, *P)
    (dxw,) = torch.autograd.grad(hs.sum() + sum(s.sum() for s in state), xw)
    padded = (mask == 0).expand_as(dxw)
    assert (dxw[padded] == 0).all() and not dxw[padded].signbit().any()
    hs, state = run(cell, xw, state0, P, mask, reverse, "autograd")
    (want,) = torch.autograd.grad(hs.sum() + sum(s.sum() for s in state), xw)
    assert torch.equal(dxw.isnan(), want.isnan()) and dxw.isnan().any()
    torch.testing.assert_close(dxw, want, rtol=1e-12, atol=1e-12, equal_nan=True)


# (torch's own, from the inductor its scan's backward imports)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("dynamic", [False, True])
def test_run_of_a_leaky_cell_exports(dynamic):
    """torch.export of a module that calls run(leaky, ...) failed, T static or dynamic: "Could not guard on
    data-dependent expression Eq(u0, 1)", from the size check's leaky built on the meta device inside the trace (its
    alpha check, a CPU tensor's bool(), traced as data). The check builds its cell outside torch.export's modes: the
    program gives eager's outputs and input gradient, reversed with lengths, and an xw of the wrong width is still the
    check's one line."""

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = CELLS["leaky"](3, 4, alpha=0.3).double()

        def forward(self, x, h_0, lengths):
            mask = (torch.arange(x.shape[0])[:, None] < lengths[None]).double()[..., None]
            return run(
                self.cell, self.cell.project_input(x), (h_0,), tuple(self.cell.rec_params()), mask, True
            )[0]

    torch.manual_seed(0)
    model, lengths = Model(), torch.tensor([5, 3])
    x, h_0 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    shapes = ({0: torch.export.Dim("T", min=2, max=16)}, None, None) if dynamic else None
    program = torch.export.export(model, (x, h_0, lengths), dynamic_shapes=shapes)
    x = torch.randn(7 if dynamic else 5, 2, 3, dtype=torch.float64, requires_grad=True)
    got, want = program.module()(x, h_0, lengths), model(x, h_0, lengths)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g,), (w,) = torch.autograd.grad(got.sum(), x), torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)

    class Wide(torch.nn.Module):  # (xw of 5 columns for H = 4)
        def forward(self, xw, h_0):
            return run(model.cell, xw, (h_0,), tuple(model.cell.rec_params()))[0]

    with pytest.raises(RnnkitError, match=r"run\(Leaky\): xw must be \(T, B, 4\) for H = 4"):
        torch.export.export(Wide(), (torch.randn(5, 2, 5, dtype=torch.float64), h_0))


@pytest.mark.parametrize("name", ["gru", "lstm", "mut1"])
@pytest.mark.parametrize("reverse,lengths", [(False, None), (True, [4, 2, 1])])
def test_a_state0_of_batch_one_is_broadcast_by_every_backend(name, reverse, lengths):
    """run accepts state0 (1, H) for a batch of B; the python backend failed in torch.stack ([1, 4] and [3, 4])
    where autograd and native broadcast it. Outputs and gradients (summed over the batch) agree."""
    cell, xw, state0, P, mask = setup(name, lengths=lengths)
    state0 = tuple(s[:1].detach().requires_grad_() for s in state0)
    results = {}
    for backend in ("autograd", "python", "native"):
        hs, state = run(cell, xw, state0, P, mask, reverse, backend)
        loss = (hs * torch.linspace(-1, 1, hs.numel(), dtype=hs.dtype).reshape(hs.shape)).sum()
        loss = loss + sum((s * (k + 2)).sum() for k, s in enumerate(state))
        results[backend] = (hs, *state, *torch.autograd.grad(loss, (xw, *state0, *P)))
    for backend in ("python", "native"):
        for a, b in zip(results["autograd"], results[backend]):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_dh_per_step(backend):
    cell, xw, state0, P, _ = setup("rnn_tanh", T=6)
    probe = GradProbe()
    hs, state = run(cell, xw, state0, P, None, False, backend, probe)
    hs[-1].sum().backward()  # loss on the last step only
    assert probe.dh.shape == (6, 3, 4)
    torch.testing.assert_close(probe.dh[-1], torch.ones(3, 4, dtype=torch.float64))
    # dL/dh_{t-1} = dL/dh_t · diag(1 - h_t²) · W_hh : recompute from the recorded values
    h = hs.detach()
    for t in range(5, 0, -1):
        expected = (probe.dh[t] * (1 - h[t] ** 2)) @ P[0]
        torch.testing.assert_close(probe.dh[t - 1], expected)


def test_probe_same_in_both_backends():
    out = {}
    for backend in BACKENDS:
        cell, xw, state0, P, mask = setup("lstm", T=5, lengths=[5, 3, 2])
        probe = GradProbe()
        hs, _ = run(cell, xw, state0, P, mask, False, backend, probe)
        (hs**2).sum().backward()
        out[backend] = probe.dh
    torch.testing.assert_close(out["python"], out["autograd"])


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
def test_probe_with_lengths_records_the_gradient_the_state_carries_past_a_sequences_end(backend):
    """GradProbe's docstring: where a sequence has ended (t >= its length) row t holds the gradient the carried
    state passes through, dL/dh_T for a loss on the final state; before it, the step's own h_t's. (test_probe_same_
    in_both_backends' loss reads hs alone, 0 past the end either way.) Reference: a plain torch loop of rnn_tanh
    with retain_grad on each step's h_t and on the state carried."""
    cell, xw, state0, P, mask = setup("rnn_tanh", T=5, lengths=[5, 3, 1])
    w = torch.linspace(-1, 1, 5 * 3 * 4, dtype=torch.float64).reshape(5, 3, 4)
    probe = GradProbe()
    hs, (hT,) = run(cell, xw, state0, P, mask, False, backend, probe)
    ((hs * w).sum() + (hT * hT).sum()).backward()
    W_hh, b_hh, h, steps, carried = P[0].detach().requires_grad_(), P[1].detach(), state0[0].detach(), [], []
    for t in range(5):
        new = torch.tanh(xw[t].detach() + h @ W_hh.T + b_hh)
        h = mask[t] * new + (1 - mask[t]) * h
        new.retain_grad(), h.retain_grad()
        steps.append(new), carried.append(h)
    loss = sum((mask[t] * steps[t] * w[t]).sum() for t in range(5)) + (h * h).sum()
    loss.backward()
    want = torch.stack([torch.where(mask[t] != 0, steps[t].grad, carried[t].grad) for t in range(5)])
    torch.testing.assert_close(probe.dh, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_each_backward_pass_once(backend):
    """Two backward passes over one graph (retain_graph): two records, the second of that pass alone."""
    cell, xw, state0, P, _ = setup("gru", T=5)
    probe = GradProbe()
    hs, _ = run(cell, xw, state0, P, None, False, backend, probe)
    hs.sum().backward(retain_graph=True)
    (3 * hs).sum().backward()
    assert len(probe.history) == 2
    torch.testing.assert_close(probe.history[1], 3 * probe.history[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_probe_reused_at_every_step_is_bounded_or_says_so(backend):
    """A probe given to every training step kept every step's dh without a word (a slow leak: 100k steps of
    (100, 32, 512) are 650 GB). keep=k holds the latest k; without it, a warning once history passes WARN_BYTES."""
    cell, xw, state0, P, _ = setup("gru", T=5)
    kept, every = GradProbe(keep=2), GradProbe()
    every.WARN_BYTES = 16 * 5 * 3 * 4 * 8 - 1  # under 16 records of (5, 3, 4) float64
    for k in range(40):
        for probe in (kept, every):
            hs, _ = run(cell, xw, state0, P, None, False, backend, probe)
            if probe is every and len(every.history) == 15:
                with pytest.warns(RuntimeWarning, match=r"holds 16 records .* GradProbe\(keep=1\)"):
                    ((k + 1) * hs).sum().backward()
            else:
                ((k + 1) * hs).sum().backward()
    assert len(kept.history) == 2 and kept.dh is kept.history[-1] and len(every.history) == 40
    torch.testing.assert_close(kept.history[0] * 40 / 39, kept.history[1])
    torch.testing.assert_close(kept.dh, every.dh)
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(
            ValueError,
            match=r"GradProbe\(keep=...\) \(records kept\) must be an integer >= 1 \(or None: all\)",
        ):
            GradProbe(keep=bad)


def test_a_probe_says_it_passed_warn_bytes_at_the_record_that_passes_it():
    """The bound was asked every 16 records only: records of (1000, 64, 1024) float32 passed 1 GiB at the 5th and were
    said at the 16th, 3.9 GiB held. Here 4 records of (5, 3, 4) float64 pass it, and the 4th says so."""
    cell, xw, state0, P, _ = setup("gru", T=5)
    probe = GradProbe()
    probe.WARN_BYTES = 4 * 5 * 3 * 4 * 8 - 1
    for _ in range(3):  # (no word yet: -W error)
        run(cell, xw, state0, P, None, False, "python", probe)[0].sum().backward()
    with pytest.warns(RuntimeWarning, match=r"holds 4 records .* GradProbe\(keep=1\)"):
        run(cell, xw, state0, P, None, False, "python", probe)[0].sum().backward()


def test_a_probe_of_records_of_varying_sizes_says_it_passed_warn_bytes_at_the_record_that_passes_it():
    """532b539 summed history where as many records as the latest would pass the bound: 3 records of (5, 3, 4) and one
    of (2, 3, 4) float64 (1,632 bytes) passed a bound of 1,631 at the 4th, where 4 of the latest (768) did not, and
    were said at the 16th. The bytes summed last plus each record's since are at least those held."""
    long, short = setup("gru", T=5), setup("gru", T=2)
    probe = GradProbe()
    probe.WARN_BYTES = 3 * 5 * 3 * 4 * 8 + 2 * 3 * 4 * 8 - 1
    for _ in range(3):  # (no word yet: -W error)
        run(*long[:4], None, False, "python", probe)[0].sum().backward()
    with pytest.warns(RuntimeWarning, match=r"holds 4 records .* GradProbe\(keep=1\)"):
        run(*short[:4], None, False, "python", probe)[0].sum().backward()
    probe = GradProbe()  # history.clear() holds less: said where what is held passes the bound, not before
    probe.WARN_BYTES = 4 * 5 * 3 * 4 * 8 - 1
    for k in range(6):
        run(*long[:4], None, False, "python", probe)[0].sum().backward()
        if k == 2:
            probe.history.clear()
    with pytest.warns(RuntimeWarning, match=r"holds 4 records"):
        run(*long[:4], None, False, "python", probe)[0].sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_a_pass_that_misses_a_step(backend):
    """A loss on c_T alone never reaches h_T: the autograd backend's hooks waited for every step and recorded
    nothing, and a next pass (retain_graph) then recorded steps of both passes mixed (1.35 off)."""
    cell, xw, state0, P, _ = setup("lstm", T=5)
    probe = GradProbe()
    hs, (h, c) = run(cell, xw, state0, P, None, False, backend, probe)
    c.sum().backward(retain_graph=True)
    assert len(probe.history) == 1 and torch.equal(probe.dh[-1], torch.zeros_like(probe.dh[-1]))
    hs.sum().backward()
    assert len(probe.history) == 2
    alone = GradProbe()  # the second pass alone, on a fresh graph
    hs, _ = run(cell, xw, state0, P, None, False, "autograd", alone)
    hs.sum().backward()
    torch.testing.assert_close(probe.dh, alone.dh)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_records_a_pass_that_misses_every_step(backend):
    """A loss on c_T of one step reaches no h_t: the python loop recorded zeros, and the autograd backend's hook,
    on the h_t alone, never fired: no record, probe.dh None where the docstring promises 0."""
    cell, xw, state0, P, _ = setup("lstm", T=1)
    probe = GradProbe()
    _, (h, c) = run(cell, xw, state0, P, None, False, backend, probe)
    c.sum().backward()
    assert len(probe.history) == 1 and torch.equal(probe.dh, torch.zeros(1, *h.shape, dtype=h.dtype))


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize(
    "probe,said",
    [(GradProbe, "the class GradProbe: give an instance"), ([GradProbe()], "list"), ("p", "str")],
)
def test_a_probe_that_is_no_grad_probe_is_one_line_at_the_call(backend, probe, said):
    """run took anything as probe and failed only in backward, from inside the loop's backward or a hook:
    "GradProbe.record() missing 1 required positional argument: 'dh'" (the class without its parentheses),
    "'list' object has no attribute 'record'" (a layer's list of probes)."""
    cell, xw, state0, P, _ = setup("gru")
    with pytest.raises(RnnkitError, match=f"run\\(GRU\\): probe must be an rnnkit.GradProbe .*got {said}"):
        run(cell, xw, state0, P, None, False, backend, probe)


def test_no_units_run_without_a_blas_error(capfd):
    """H = 0 through engine.run: BLAS was handed a leading dimension of 0 and printed an error every step."""
    cell, xw, state0, P, _ = setup("rnn_tanh", T=9, B=3, H=4)
    hs, (h,) = run(cell, xw[..., :0], (state0[0][:, :0],), (P[0][:0, :0], P[1][:0]))
    assert hs.shape == (9, 3, 0) and h.shape == (3, 0)
    assert "ERROR" not in "".join(capfd.readouterr())


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_probe_over_two_runs_in_one_pass_records_each(backend):
    """Truncated BPTT over two chunks with one probe, one backward: two records, not their sum (the merge of a
    second-order pass's two paths caught them)."""
    cell, xw, state0, P, _ = setup("gru", T=6)
    probe = GradProbe()
    hs1, s1 = run(cell, xw[:3], state0, P, None, False, backend, probe)
    hs2, _ = run(cell, xw[3:], s1, P, None, False, backend, probe)
    (hs1.sum() + 2 * hs2.sum()).backward()
    assert len(probe.history) == 2 and {r.shape[0] for r in probe.history} == {3}


def test_unknown_backend_is_a_clear_error():
    cell, xw, state0, P, _ = setup("gru")
    with pytest.raises(ValueError, match="unknown backend"):
        run(cell, xw, state0, P, backend="cuda-magic")


def test_no_grad_forward_matches():
    cell, xw, state0, P, _ = setup("gru")
    with torch.no_grad():
        a, _ = run(cell, xw, state0, P, backend="python")
    b, _ = run(cell, xw, state0, P, backend="autograd")
    torch.testing.assert_close(a, b.detach())


def test_failed_build_warns_once_with_the_default_backend(monkeypatch):
    """A machine where the extension can't build runs python 2-3x slower: the default backend says so once;
    RNNKIT_NATIVE=0 (a choice) and tensors native doesn't run (meta here, as a GPU's) stay quiet."""
    from rnnkit import engine
    from rnnkit.engine import native, resolve_backend

    cell, xw, *_ = setup("lstm", dtype=torch.float32)
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", "could not build the C++ extension: RuntimeError: no compiler")
    monkeypatch.setattr(engine, "_warned", set())
    with pytest.warns(RuntimeWarning, match="no compiler.*RNNKIT_NATIVE=0"):
        assert resolve_backend(None, cell, xw) == "python"
    assert resolve_backend(None, cell, xw) == "python"  # once: no second warning (warnings are errors here)
    assert resolve_backend(None, cell, xw.to("meta")) == "python"
    monkeypatch.setattr(native, "_reason", "switched off by RNNKIT_NATIVE=0")
    monkeypatch.setattr(engine, "_warned", set())
    assert resolve_backend(None, cell, xw) == "python"


def test_build_finds_the_ninja_installed_beside_python(monkeypatch, tmp_path):
    """torch's build looks for ninja on PATH; pip put rnnkit's (the ninja package) beside the interpreter,
    which is not on PATH when the virtual environment isn't activated (`.venv/bin/python -m rnnkit`). It is
    there for the build only: the caller's PATH (its child processes' too) was left changed for good."""
    ninja = pytest.importorskip("ninja", reason="the ninja package (a dependency) is not installed here")
    from rnnkit import _native_build

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # its build folder: not in the user's cache
    seen = []
    module, reason = _native_build.build(
        "a test", "rnnkit_no_such_ext", lambda: seen.append(os.environ["PATH"])
    )
    assert reason is None and ninja.BIN_DIR in seen[0].split(os.pathsep)
    assert os.environ["PATH"] == "/nonexistent"


def test_a_user_without_a_home_is_told_instead_of_a_build_in_the_working_directory(monkeypatch, tmp_path):
    """HOME unset for a user without a home in the password database (a container's `docker run -u 1234`): torch's
    extensions directory became '~/.cache/torch_extensions' taken literally, so the compiled loops were built
    (a minute) in a folder '~' made in the working directory. The build is refused in one line naming the fix."""
    import pwd

    from rnnkit import _native_build

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "XDG_CACHE_HOME", "TORCH_EXTENSIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(tmp_path)
    module, reason = _native_build.build("the test extension", "some_ext", lambda: "module")
    assert module is None and reason.startswith("could not build the test extension: ")
    assert "set TORCH_EXTENSIONS_DIR" in reason and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))  # the fix it names
    assert _native_build.build("the test extension", "some_ext", lambda: "module") == ("module", None)


@pytest.mark.parametrize(
    "given, said, fix",
    [
        ("", "TORCH_EXTENSIONS_DIR is set ", "unset it or set it to a writable folder"),
        ("~/ext", "TORCH_EXTENSIONS_DIR='~/ext'", "set it to the full path"),
        ("~", "TORCH_EXTENSIONS_DIR='~'", "set it to the full path"),
    ],
)
def test_an_empty_or_unexpanded_extensions_dir_is_told_instead_of_a_build_in_the_working_directory(
    monkeypatch, tmp_path, given, said, fix
):
    """TORCH_EXTENSIONS_DIR set empty (`export TORCH_EXTENSIONS_DIR=`, a container's blank default) is not unset to
    torch: it built the engine (a minute) and the word2vec loop in ./rnnkit_native_*/ of the working directory, again
    in every folder run from; and '~/ext' where no shell expanded the '~' (a docker ENV, a systemd unit, a .env file)
    is taken literally, a build in ./~/ext/. The build is refused in one line naming the fix, as without a home."""
    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", given)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.chdir(tmp_path)

    def compile_fn():
        from torch.utils import cpp_extension

        os.makedirs(
            cpp_extension._get_build_directory("some_ext", False), exist_ok=True
        )  # where torch builds
        return "module"

    module, reason = _native_build.build("the test extension", "some_ext", compile_fn)
    assert module is None and reason.startswith(f"could not build the test extension: {said}")
    assert fix in reason and list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))  # the fix it names
    assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)


def test_the_build_runs_the_pinned_ninja_before_a_system_one(monkeypatch, tmp_path):
    """With ninja's folder added after PATH, a system ninja (another version) built where the virtual environment
    was not activated and pip's where it was: each discarded the other's build log and rebuilt everything."""
    ninja = pytest.importorskip("ninja", reason="the ninja package (a dependency) is not installed here")

    from rnnkit import _native_build

    system = tmp_path / "bin"
    system.mkdir()
    (system / "ninja").write_text("#!/bin/sh\n")
    (system / "ninja").chmod(0o755)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    pinned = subprocess.run(
        [os.path.join(ninja.BIN_DIR, "ninja"), "--version"], capture_output=True, text=True
    )
    for path in (str(system), os.pathsep.join([str(system), ninja.BIN_DIR])):  # not activated, activated last
        monkeypatch.setenv("PATH", path)
        module, reason = (
            _native_build.build(  # (the `ninja` on PATH: the pinned one, or the guard running it)
                "a test",
                "rnnkit_no_such_ext",
                lambda: subprocess.run(["ninja", "--version"], capture_output=True, text=True),
            )
        )
        assert reason is None and module.returncode == 0 and module.stdout == pinned.stdout != ""
        assert os.environ["PATH"] == path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard is Linux's (PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_build_stopped_in_python_stops_its_compiles(how, tmp_path, alive):
    """A build's python stopped by a KeyboardInterrupt (SIGINT sent to it alone) or killed outright left ninja's
    compiles running on, orphaned, for a minute or two (torch's subprocess.run killed ninja with SIGKILL; a python
    killed left ninja itself to go on). A slow "compiler" (sleep, in a process group of its own as ninja runs each
    command) stands for one: it is gone within seconds of python."""
    pytest.importorskip("ninja", reason="the ninja package (a dependency) is not installed here")
    pids = tmp_path / "pids"
    code = (
        "import os, sys\nimport torch.utils.cpp_extension as ce\nfrom rnnkit import _native_build as nb\n"
        "def compile_fn():\n    folder = ce._get_build_directory('rnnkit_slow_ext', False)\n"
        f"    open(os.path.join(folder, 'build.ninja'), 'w').write('rule cc\\n  command = sh -c \"echo $$$$ >> {pids}; "
        "exec sleep 60\"\\nbuild a.o: cc\\nbuild b.o: cc\\n')\n"
        "    ce._run_ninja_build(folder, False, 'Error building extension')\n"
        "print(nb.build('a test', 'rnnkit_slow_ext', compile_fn))\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"), RNNKIT_NATIVE="1")
    p = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while len(pids.read_text().split() if pids.exists() else []) < 2:  # both compiles running
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        os.kill(p.pid, getattr(signal, how))
        p.communicate(timeout=30)
        running = [int(pid) for pid in pids.read_text().split()]
        deadline = time.monotonic() + 10
        while running and time.monotonic() < deadline:
            running = [pid for pid in running if alive(pid)]
            time.sleep(0.05)
        assert not running, f"compiles left running after python stopped by {how}"
    finally:
        p.kill()
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def test_a_build_leaves_the_warning_filters_path_and_torch_logs_as_they_were(monkeypatch, tmp_path):
    """The build's own warnings are ignored, ninja goes on PATH and torch's build log is off for the build only:
    the caller's filters, PATH and logger are as they were after it, built or failed, whatever the build did to
    them (torch's load on Windows puts its lib folder on PATH for good: that stayed where ninja was first on PATH
    already, or not installed)."""
    import logging
    import warnings

    ninja = pytest.importorskip("ninja", reason="the ninja package (a dependency) is not installed here")
    from rnnkit import _native_build

    def compile_fn():
        warnings.warn("the build's own", UserWarning, stacklevel=1)  # ignored
        warnings.filterwarnings("ignore", "the user's")
        os.environ["PATH"] = os.pathsep.join(["/torch/lib", os.environ["PATH"]])
        assert logging.getLogger("torch.utils.cpp_extension").disabled
        if fail:
            raise RuntimeError("Error building extension 'x': c++: not found")

    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for path in (os.pathsep.join([ninja.BIN_DIR, "/usr/bin"]), "/usr/bin"):  # ninja first already, or not
        for fail in (False, True):
            monkeypatch.setenv("PATH", path)
            filters = list(warnings.filters)
            _, reason = _native_build.build("a test", "rnnkit_no_such_ext", compile_fn)
            assert (reason is None) != fail
            assert os.environ["PATH"] == path and warnings.filters == filters
            assert not logging.getLogger("torch.utils.cpp_extension").disabled


def test_a_build_lock_left_by_a_killed_build_is_waited_for_then_removed(tmp_path, monkeypatch, capsys):
    """torch's build waits forever for the lock a killed build left; rnnkit waits while it is recent (another
    process may be building) and removes it once older than any build takes."""
    import threading
    import time

    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "some_ext" / "lock"
    lock.parent.mkdir()
    lock.touch()
    old = time.time() - _native_build.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    _native_build._wait_for_lock("the test extension", "some_ext")
    assert not lock.exists() and "left 11 min ago by a build that was stopped" in capsys.readouterr().err
    lock.touch()  # a build under way: waited for until it is done
    threading.Timer(0.6, lock.unlink).start()
    t0 = time.perf_counter()
    _native_build._wait_for_lock("the test extension", "some_ext")
    assert (
        time.perf_counter() - t0 >= 0.5 and "waiting for another process building" in capsys.readouterr().err
    )


def test_a_lock_left_by_a_killed_process_goes_at_once_and_a_live_builder_is_waited_for(
    tmp_path, monkeypatch, capsys
):
    """rnnkit's own flock on the build folder: a process killed inside torch's build or load (SIGKILL, SIGPIPE
    from `| head`) left torch's `lock` behind and every later process waited 10 minutes; the system lets go of
    a dead process's flock, so the next one knows at once. A live builder holds it: waited for."""
    import subprocess
    import sys
    import time

    from rnnkit import _native_build

    pytest.importorskip("fcntl")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "some_ext"
    folder.mkdir()
    (folder / "lock").touch()  # fresh: the age rule would have waited for it
    with _native_build._build_lock("the test extension", "some_ext"):
        assert not (folder / "lock").exists()
    assert "removing" in capsys.readouterr().err
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); "
        "time.sleep(0.8)"), str(folder / "rnnkit.lock")], stdout=subprocess.PIPE)  # fmt: skip
    holder.stdout.readline()  # it holds the lock
    t0 = time.perf_counter()
    with _native_build._build_lock("the test extension", "some_ext"):
        waited = time.perf_counter() - t0
    holder.wait()
    holder.stdout.close()
    assert waited >= 0.3 and "waiting for another process building" in capsys.readouterr().err


def test_a_file_system_without_flock_builds_under_torchs_lock_file(tmp_path, monkeypatch, capsys):
    """Some NFS and Lustre mounts (a cluster's home, where ~/.cache lies) refuse flock (ENOLCK, EOPNOTSUPP): every
    build failed, said as "OSError: [Errno 37] No locks available; install a C++ compiler", after a line that
    another process was building. There the build goes on, torch's lock file waited for by its age as without
    fcntl (a fresh one is not removed: its builder may be alive)."""
    import errno
    import fcntl

    from rnnkit import _native_build

    def no_locks(f, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    assert _native_build.build("the test extension", "some_ext", lambda: "module") == ("module", None)
    waited = []
    monkeypatch.setattr(_native_build, "_wait_for_lock", lambda what, name: waited.append(name))
    (tmp_path / "some_ext" / "lock").touch()
    with _native_build._build_lock("the test extension", "some_ext"):
        assert (tmp_path / "some_ext" / "lock").exists() and waited == ["some_ext"]
    assert "waiting" not in capsys.readouterr().err


def test_a_damaged_build_is_removed_and_built_again(tmp_path, monkeypatch, capsys):
    """A library cut short (a full disk, a copy of the cache that stopped) looked up to date to ninja: loading
    it killed every later process with a bus error, and a 0-byte one fell back in every process. Each build
    records the library's checksum; one that doesn't match (or has no record) is removed and built again."""
    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setattr(_native_build, "_compiler_found", lambda: True)  # (its 'compiling' line, c++ or none)
    so = tmp_path / "some_ext" / "some_ext.so"
    builds = []

    def compile_fn():  # as ninja: makes the library only where it is missing
        if not so.exists():
            builds.append(1)
            so.write_bytes(b"\x7fELF" + bytes(5000))
        return "module"

    assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
    assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
    assert len(builds) == 1 and "compiling" in capsys.readouterr().err  # the second one only loaded it
    for size in (700, 0):
        with open(so, "r+b") as f:
            f.truncate(size)
        assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
        err = capsys.readouterr().err
        assert (
            so.stat().st_size == 5004 and err.count("\n") == 1 and "does not match the record of its" in err
        )
    (tmp_path / "some_ext" / "some_ext.so.sha256").unlink()  # not from a build of ours (an older rnnkit)
    _native_build.build("the test extension", "some_ext", compile_fn)
    assert len(builds) == 4 and _native_build.matches_record(str(so))


def test_a_folder_in_place_of_the_library_or_its_record_is_removed_and_built_again(
    tmp_path, monkeypatch, capsys
):
    """A folder where the library lies (rm X.so; mkdir X.so) was said 'removed it' but not removed (unlink of a
    folder fails), and the build failed 'IsADirectoryError ...; install a C++ compiler (g++) and ninja'."""
    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    so = tmp_path / "some_ext" / "some_ext.so"

    def compile_fn():  # as ninja: makes the library only where it is missing
        if not so.exists():
            so.write_bytes(b"\x7fELF" + bytes(5000))
        return "module"

    assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
    for folder in (so, tmp_path / "some_ext" / "some_ext.so.sha256"):
        folder.unlink()
        (folder / "inside").mkdir(parents=True)
        capsys.readouterr()
        assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
        assert "removed it, building the test extension again" in capsys.readouterr().err
        assert so.is_file() and _native_build.matches_record(str(so))
    # the library gone too: the build's record() wrote into the folder, "IsADirectoryError ...; install a C++
    # compiler (g++) and ninja"
    record = tmp_path / "some_ext" / "some_ext.so.sha256"
    so.unlink()
    record.unlink()
    (record / "inside").mkdir(parents=True)
    assert _native_build.build("the test extension", "some_ext", compile_fn) == ("module", None)
    assert so.is_file() and _native_build.matches_record(str(so))


def _as_torch_builds(so):
    """A compile_fn that takes torch's `lock` as torch's load does (FileBaton: a lock that can't be made is waited
    for while os.path.exists, forever) and makes the library only where it is missing, as ninja."""
    from torch.utils.file_baton import FileBaton

    def compile_fn():
        baton = FileBaton(str(so.parent / "lock"))
        if not baton.try_acquire():
            return "torch would wait here forever"
        if not so.exists():
            so.write_bytes(b"\x7fELF" + bytes(5000))
        baton.release()
        return "module"

    return compile_fn


@pytest.mark.parametrize("flock", [True, False])
def test_a_folder_in_place_of_torchs_lock_is_removed_before_the_build(tmp_path, monkeypatch, capsys, flock):
    """A folder named `lock` in the extension's folder (mkdir lock, a bad copy of the cache) is no lock torch makes,
    but torch's FileBaton waits while it exists, forever: rnnkit's unlink of it failed in silence (with flock), or
    it was waited for STALE_LOCK_S as a builder's, then kept (without). It is removed at once, said in one line."""
    import errno
    import time

    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setattr(_native_build, "STALE_LOCK_S", 3)  # (the old wait, cut short)
    if not flock:
        fcntl = pytest.importorskip("fcntl")

        def no_locks(f, op):
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "flock", no_locks)
    so = tmp_path / "some_ext" / "some_ext.so"
    (so.parent / "lock" / "inside").mkdir(parents=True)
    t0 = time.perf_counter()
    assert _native_build.build("the test extension", "some_ext", _as_torch_builds(so)) == ("module", None)
    assert time.perf_counter() - t0 < 2 and so.is_file() and not (so.parent / "lock").exists()
    assert f"removing the folder {so.parent / 'lock'}" in capsys.readouterr().err


def test_a_folder_in_place_of_rnnkits_own_lock_is_removed_before_the_build(tmp_path, monkeypatch, capsys):
    """A folder named rnnkit.lock in the extension's folder (mkdir, a bad copy of the cache) failed every build
    "IsADirectoryError: [Errno 21] Is a directory: '.../rnnkit.lock'; install a C++ compiler (g++) and ninja", a fix
    that changes nothing; it is removed, said in one line, and the build goes on."""
    from rnnkit import _native_build

    pytest.importorskip("fcntl")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    so = tmp_path / "some_ext" / "some_ext.so"
    (so.parent / "rnnkit.lock" / "inside").mkdir(parents=True)
    assert _native_build.build("the test extension", "some_ext", _as_torch_builds(so)) == ("module", None)
    assert so.is_file() and (so.parent / "rnnkit.lock").is_file()
    assert capsys.readouterr().err.startswith(f"rnnkit: removing the folder {so.parent / 'rnnkit.lock'}, in the "
                                              "place of a lock file of the test extension's build\n")  # fmt: skip


def test_a_lock_that_cannot_be_removed_fails_the_build_in_one_line(tmp_path, monkeypatch, capsys):
    """torch's lock left by a killed build that rnnkit can't remove (another user's, in a shared cache) was kept in
    silence and torch's build then waited for it forever; the build fails in one line naming it."""
    from rnnkit import _native_build

    pytest.importorskip("fcntl")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    so = tmp_path / "some_ext" / "some_ext.so"
    so.parent.mkdir()
    (so.parent / "lock").touch()
    unlink = os.unlink

    def refused(path, *args, **kwargs):
        if os.path.basename(path) == "lock":
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)
    module, why = _native_build.build("the test extension", "some_ext", _as_torch_builds(so))
    assert module is None and why == (
        f"could not build the test extension: PermissionError: [Errno 13] Permission denied: "
        f"'{so.parent / 'lock'}'; set TORCH_EXTENSIONS_DIR to a writable folder"
    )


def test_compiling_is_said_only_where_there_is_a_compiler(tmp_path, monkeypatch, capsys):
    """'compiling the engine once (about a minute...)' was said right before the failure of a build that found no
    compiler (PATH without c++, a CXX naming none); it is said where the compiler torch's build runs is there."""
    from rnnkit import _native_build

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spaced = tmp_path / "my tools"
    spaced.mkdir()
    for name in (bin_dir / "c++", bin_dir / "g++", spaced / "g++"):
        name.write_text("#!/bin/sh\n")
        name.chmod(0o755)

    def compile_fn():
        raise RuntimeError(
            "Error building extension 'some_ext': [1/2] c++ -c x.cpp\n/bin/sh: 1: c++: not found"
        )

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    for path, cxx, said in [
        (tmp_path / "empty", None, False),
        (bin_dir, None, True),
        (bin_dir, "g++", True),
        (bin_dir, str(tmp_path / "no" / "g++"), False),
        (bin_dir, "clang++ -O2", False),
        # torch's build quotes CXX into its compile line (shlex.join): one program's name, arguments or VAR=value
        # in it naming none ("/bin/sh: 1: env FOO=1 g++: not found"), a path with a space a program
        (bin_dir, "g++ -O2", False),
        (bin_dir, "'g++' -O2", False),
        (bin_dir, "env FOO=1 g++", False),
        (bin_dir, "FOO=1 g++", False),
        (bin_dir, "'g++", False),
        (bin_dir, str(spaced / "g++"), True),
    ]:
        monkeypatch.setenv("PATH", str(path))
        if cxx is None:
            monkeypatch.delenv("CXX", raising=False)
        else:
            monkeypatch.setenv("CXX", cxx)
        capsys.readouterr()
        module, reason = _native_build.build("the test extension", "some_ext", compile_fn)
        assert module is None and reason.startswith("could not build the test extension: ")
        assert ("compiling the test extension once" in capsys.readouterr().err) == said, (path, cxx)


def test_a_cache_it_cannot_write_in_that_holds_the_build_is_loaded_as_it_is(tmp_path, monkeypatch):
    """A shared or read-only extensions cache holding the build was refused (the lock file can't be made there),
    and every process ran python, 2-3x slower: a library that matches its build's record is loaded as it is. One
    that doesn't (or has no record) is not trusted: the reason says to set TORCH_EXTENSIONS_DIR."""
    import contextlib

    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    so = tmp_path / "some_ext" / "some_ext.so"
    _native_build.build("the test extension", "some_ext", lambda: so.write_bytes(b"\x7fELF" + bytes(99)))

    @contextlib.contextmanager
    def read_only(what, name):
        raise OSError(30, "Read-only file system", str(tmp_path / name / "rnnkit.lock"))
        yield

    monkeypatch.setattr(_native_build, "_build_lock", read_only)
    monkeypatch.setattr(_native_build, "_import", lambda name, path: ("module", name, path))

    def compile_fn():
        raise AssertionError("torch's load (ninja in the folder) must not run")

    assert _native_build.build("the test extension", "some_ext", compile_fn) == (
        ("module", "some_ext", str(so)),
        None,
    )
    so.write_bytes(b"\x7fELF")  # damaged: not loaded
    module, reason = _native_build.build("the test extension", "some_ext", compile_fn)
    assert module is None and "Read-only file system" in reason and "set TORCH_EXTENSIONS_DIR to a" in reason


@pytest.mark.parametrize(
    "value, on",
    [("0", False), ("false", False), (" Off ", False), ("NO", False), ("1", True), ("true", True), ("On", True),
     ("yes", True), ("", True), (None, True)],
)  # fmt: skip
def test_rnnkit_native_takes_the_usual_words_for_off_and_on(monkeypatch, value, on):
    """Only an exact '0' switched the compiled loops off: RNNKIT_NATIVE=false or off left them on, silently."""
    from rnnkit import _native_build

    if value is None:
        monkeypatch.delenv("RNNKIT_NATIVE", raising=False)
    else:
        monkeypatch.setenv("RNNKIT_NATIVE", value)
    assert _native_build.switch("RNNKIT_NATIVE") is on
    assert (_native_build.switched_off() is None) is on
    if not on:
        assert _native_build.build("a test", "some_ext", lambda: pytest.fail("built while off"))[0] is None


def test_an_unknown_switch_value_is_a_one_line_error(monkeypatch):
    from rnnkit import _native_build
    from rnnkit.errors import RnnkitError

    monkeypatch.setenv("RNNKIT_NATIVE", "maybe")
    with pytest.raises(
        RnnkitError, match="^RNNKIT_NATIVE='maybe' is neither on nor off; set 1, true, on or yes, or 0"
    ):
        _native_build.switched_off()


NINJA_OUTPUT = (  # what torch raises when ninja's first command fails: the cause comes lines later
    "Error building extension 'some_ext': [1/2] c++ -MMD -MF engine.o.d -DTORCH_EXTENSION_NAME=some_ext -O3 -c "
    "engine.cpp -o engine.o\nFAILED: engine.o\nc++ -MMD -MF engine.o.d -O3 -c engine.cpp -o engine.o\n{}\n"
    "ninja: build stopped: subcommand failed.\n"
)


NOT_FOUND, COMPILE_ERROR = "/bin/sh: 1: c++: not found", "engine.cpp:3:1: error: 'x' was not declared"
NO_NINJA = "Ninja is required to load C++ extensions (pip install ninja to get it)"


@pytest.mark.parametrize(
    "error, cause, fix",
    [
        (RuntimeError(NINJA_OUTPUT.format(NOT_FOUND)), NOT_FOUND, "install a C++ compiler"),
        (RuntimeError(NINJA_OUTPUT.format(COMPILE_ERROR)), COMPILE_ERROR, "set CXX"),
        (RuntimeError(NO_NINJA), f"RuntimeError: {NO_NINJA}", "install a C++ compiler"),
        (PermissionError(13, "Permission denied"), "PermissionError: [Errno 13]", "set TORCH_EXTENSIONS_DIR"),
        (OSError(30, "Read-only file system"), "OSError: [Errno 30]", "set TORCH_EXTENSIONS_DIR"),
        (ImportError("some_ext.so: invalid ELF header"), "ImportError: some_ext.so: invalid ELF", "delete"),
        # a cache on a noexec mount (/tmp often): deleting it to build it afresh failed the same way, minutes later
        (
            ImportError("/tmp/x/some_ext.so: failed to map segment from shared object"),
            "ImportError: /tmp/x/",
            "can't load libraries (mounted noexec?): set TORCH_EXTENSIONS_DIR to a folder on another",
        ),
    ],
)
def test_a_failed_build_names_its_cause_and_the_fix(tmp_path, monkeypatch, capfd, error, cause, fix):
    """The reason was the first line of torch's error, cut at 200 characters: "Error building extension ...:
    [1/2] c++ -MMD ...", never the cause ("c++: not found", "error: ..."); torch logged a dozen lines more
    ("Your compiler (c++) is not compatible ..."), and the fix was "Install a C++ compiler (and ninja)" for an
    unwritable cache or a broken library too. Now: the line that says why, and the fix for that."""
    from torch.utils import cpp_extension

    from rnnkit import _native_build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")

    def compile_fn():
        cpp_extension.get_compiler_abi_compatibility_and_version("no-such-c++")  # torch's warning block
        raise error

    module, reason = _native_build.build("the test extension", "some_ext", compile_fn)
    assert module is None and reason.startswith(f"could not build the test extension: {cause}")
    assert fix in reason.split("; ")[-1] and "\n" not in reason
    assert "not compatible" not in capfd.readouterr().err
    if fix == "delete":
        assert str(tmp_path / "some_ext") in reason


def test_a_cxx_that_names_no_compiler_is_the_fix(monkeypatch):
    """CXX=/nonexistent/g++ was told to install a compiler (g++), though one was there: the user's CXX was wrong."""
    from rnnkit import _native_build

    why = "/bin/sh: 1: /nonexistent/g++: not found"
    error = RuntimeError(NINJA_OUTPUT.format(why))
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    assert "CXX='/nonexistent/g++' names no compiler here" in _native_build.fix(error, why, None)
    monkeypatch.setenv("CXX", "g++")  # a CXX that is there: the compiler missing is something else's
    assert _native_build.fix(error, NOT_FOUND, None).startswith("install a C++ compiler")


@pytest.mark.parametrize("cxx", ["env FOO=1 g++", "FOO=1 g++", "env g++ -w"])
def test_a_cxx_of_a_command_line_is_said_to_be_run_as_one_programs_name(monkeypatch, cxx):
    """torch's build quotes CXX into its compile line (shlex.join), so CXX='env FOO=1 g++' ran a program of that
    name: "/bin/sh: 1: env FOO=1 g++: not found", said as 'names no compiler here: ... set it to a g++ on PATH',
    where g++ and env are on PATH; the fix says that torch runs CXX as one program's name."""
    from rnnkit import _native_build

    why = f"/bin/sh: 1: {cxx}: not found"
    monkeypatch.setenv("CXX", cxx)
    assert _native_build.fix(RuntimeError(NINJA_OUTPUT.format(why)), why, None) == (
        f"torch's build runs CXX={cxx!r} as one program's name (not as a command line: no arguments, no "
        "VAR=value); set CXX to the compiler alone, its name or path"
    )
    why = "/bin/sh: 1: /opt/my tools/g++: not found"  # a path with a space: one program's, not there
    monkeypatch.setenv("CXX", "/opt/my tools/g++")
    said = _native_build.fix(RuntimeError(NINJA_OUTPUT.format(why)), why, None)
    assert said.startswith("CXX='/opt/my tools/g++' names no compiler here")


def test_a_torch_in_a_folder_with_a_space_is_the_fix(tmp_path, monkeypatch):
    """torch's build quotes its include folders but not its library folder (-L.../torch/lib): with torch (a virtual
    environment) in a folder like "My Projects", the engine compiled and then failed to link, "ld: cannot find
    Projects/...: No such file or directory", and the fix said to install a C++ compiler, which was there."""
    from rnnkit import _native_build

    why = "/usr/bin/ld: cannot find Projects/venv/lib/python3.11/site-packages/torch/lib: No such file or directory"
    error = RuntimeError(NINJA_OUTPUT.format(why))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(
        torch, "__file__", "/home/a/My Projects/venv/lib/python3.11/site-packages/torch/__init__.py"
    )
    said = _native_build.fix(error, _native_build.cause(error), None)
    assert "'/home/a/My Projects/venv/lib/python3.11/site-packages/torch/lib'" in said and "space" in said
    monkeypatch.setattr(torch, "__file__", "/home/a/venv/lib/python3.11/site-packages/torch/__init__.py")
    assert _native_build.fix(error, _native_build.cause(error), None).startswith("install a C++ compiler")


def test_a_cache_that_is_not_a_folder_says_to_set_torch_extensions_dir(tmp_path, monkeypatch):
    from rnnkit import _native_build

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "file" / "cache"))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    module, reason = _native_build.build("the test extension", "some_ext", lambda: "module")
    assert (
        module is None
        and "NotADirectoryError" in reason
        and "set TORCH_EXTENSIONS_DIR to a writable" in reason
    )


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_run_checks_what_it_is_given(backend):
    """engine.run called by hand: a wrong input is one line before any loop runs. A mask (T, B) was read over
    H by autograd and python (0.97 off where B = H) but not by native: it now means (T, B, 1) on every backend;
    P out of order made the native loop read a bias as a matrix, silently (1.08 off)."""
    from rnnkit.errors import RnnkitError

    cell, xw, state0, P, _ = setup("rnn_tanh", T=5, B=4, H=4)
    m = torch.tensor([[1.0, 1, 0, 0]] * 5, dtype=torch.float64)
    want = run(cell, xw, state0, P, m[..., None], backend="autograd")[0]
    torch.testing.assert_close(run(cell, xw, state0, P, m, backend=backend)[0], want)
    bad = [
        (lambda: run(cell, xw[0], state0, P, backend=backend), r"xw must be .*\(T, B, G·H\), got \(4, 4\)"),
        (
            lambda: run(cell, xw, state0, P[::-1], backend=backend),
            r"W_hh must be a matrix .*REC_PARAMS order",
        ),
        (lambda: run(cell, xw, state0, P[:1], backend=backend), r"P must hold 2 tensors, W_hh, b_hh"),
        (  # (an LSTMP's h0 of width H for proj_size was said as W_hh's fault only)
            lambda: run(cell, xw, (state0[0][:, :3],), P, backend=backend),
            r"P's W_hh \(4, 4\) reads a state of width 4, and state0 is \[\(4, 3\)\]: give a state of that width",
        ),
        (lambda: run(cell, xw, state0, (P[0], P[1][:2]), backend=backend), r"b_hh must be \(4,\)"),
        (lambda: run(cell, xw, (state0[0][:2],), P, backend=backend), r"another batch than xw"),
        (lambda: run(cell, xw, state0 * 2, P, backend=backend), r"state0 must be a tuple of 1 tensor"),
        (
            lambda: run(cell, xw, state0[0], P, backend=backend),
            r"state0 must be a tuple .*got one Tensor \(4, 4\)",
        ),
        (lambda: run(cell, xw, state0, P, m[:, :2], backend=backend), r"mask must be \(T, B, 1\)"),
        # (python: torch's error from inside the loop; native read its memory as the CPU's)
        (
            lambda: run(cell, xw, state0, P, m.to("meta"), backend=backend),
            r"mask is on meta but xw is on cpu",
        ),
        (lambda: run(cell, xw.float(), state0, P, backend=backend), r"share one dtype and device"),
        # (a name: AttributeError "'str' object has no attribute '_modules'"; integers: torch's from inside a matmul)
        (
            lambda: run("rnn_tanh", xw, state0, P, backend=backend),
            r"Cell class or instance \(rnnkit.CELLS\['rnn_tanh'\]",
        ),
        (lambda: run(cell, xw.long(), state0, P, backend=backend), r"xw is torch.int64; give floating-point"),
        # (was a RuntimeError from inside every loop: "stack expects a non-empty TensorList")
        (lambda: run(cell, xw[:0], state0, P, backend=backend), r"xw has no time steps: shape \(0, 4, 4\)"),
    ]
    for call, message in bad:
        with pytest.raises(RnnkitError, match=message):
            call()
    leaky, xw, state0, P, _ = setup("leaky", T=5, B=4, H=4)
    with pytest.raises(RnnkitError, match=r"alpha must be \(4,\)"):
        run(leaky, xw, state0, (*P[:2], P[2][:1]), backend=backend)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_run_checks_every_width_against_the_cell(backend):
    """Widths that don't fit the cell: the native loop trusted them and read or wrote past its buffers (an
    LSTM's c wider than h corrupted the heap, 'free(): invalid next size'); the others failed deep inside."""
    from rnnkit.errors import RnnkitError

    cell, xw, (h, c), (W, b), _ = setup("lstm", T=6, B=3, H=5)
    bad = [
        (lambda: run(cell, xw[..., :5], (h, c), (W, b), backend=backend), r"xw must be \(T, B, 20\) for H = 5"),
        (lambda: run(cell, xw, (h, c), (W[:5], b[:5]), backend=backend), r"W_hh must be \(20, 5\) for H = 5"),
        (lambda: run(cell, xw, (h, torch.cat([c, c], 1)[:, :7]), (W, b), backend=backend),
         r"state \(h, c\) widths \[5, 7\] don't fit one cell; \[7, 7\] would"),
    ]  # fmt: skip
    f64 = dict(dtype=torch.float64)  # an lstmp whose h (7) is wider than its c (5): weights to fit, no cell
    Pp, xp = (
        (torch.randn(20, 7, **f64), torch.randn(20, **f64), torch.randn(7, 5, **f64)),
        torch.randn(6, 3, 20, **f64),
    )
    hc = (torch.zeros(3, 7, **f64), torch.zeros(3, 5, **f64))
    bad.append((lambda: run(LSTMP, xp, hc, Pp, backend=backend), r"h, c's projection, must be narrower"))
    elman, xe, se, Pe, _ = setup("rnn_tanh", T=6, B=3, H=5)
    bad.append((lambda: run(elman, torch.cat([xe, xe], 2)[..., :7], se, Pe, backend=backend), r"\(T, B, 5\)"))
    for call, message in bad:
        with pytest.raises(RnnkitError, match=message):
            call()


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("what", ["state", "param"])
def test_run_under_autocast_checks_devices(backend, what):
    """Under torch.autocast run takes xw, state0 and P in mixed dtypes (the loop casts them), but it took mixed
    devices too: a state or weight on another device than xw reached the loops (the python loop ran a meta W_hh on
    CPU data and returned numbers; native read a state's memory as the CPU's). Only dtypes may differ there."""
    from rnnkit.errors import RnnkitError

    cell, xw, state0, P, _ = setup("gru", T=5, B=2, H=4, dtype=torch.float32)
    if what == "state":
        state0 = (state0[0].detach().to("meta"),)
    else:
        P = (P[0].detach().to("meta"), *P[1:])
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(RnnkitError, match=r"share one dtype and device"),
    ):
        run(cell, xw, state0, P, backend=backend)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("what", ["state", "param"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_run_under_autocast_refuses_a_state_or_weight_that_is_not_real_floating_point(backend, what, dtype):
    """Under torch.autocast run lets xw, state0 and P differ in dtype (the loop casts the floating-point ones), and
    it let an integer, boolean or complex state or weight through as well: torch's 'mat1 and mat2 must have the
    same dtype, but got Long and Float' from inside the autograd and python loops, native's 'expected scalar type
    Float but found ComplexFloat', and an integer state run by native in silence. Outside autocast it is one line;
    so it is there."""
    from rnnkit.errors import RnnkitError

    cell, xw, state0, P, _ = setup("gru", T=5, B=2, H=4, dtype=torch.float32)
    if what == "state":
        state0 = (state0[0].detach().to(dtype),)
    else:
        P = (P[0].detach().to(dtype), *P[1:])
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        pytest.raises(RnnkitError, match=rf"share one dtype and device, got .*{dtype}"),
    ):
        run(cell, xw, state0, P, backend=backend)


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("name", ["gru", "lstm", "leaky"])
def test_run_under_autocast_takes_parameters_of_mixed_dtypes(backend, name):
    """Under torch.autocast run casts xw and state0 to its parameters' dtype, but not the parameters themselves: a
    bfloat16 b_hh beside a float32 W_hh (which run lets differ there) failed inside the loops ('self and mat2 must
    have the same dtype', native's 'expected scalar type Float but found BFloat16'). They run in the dtype they
    promote to, float32 here, each parameter's gradient in its own dtype."""
    cell, xw, state0, P, _ = setup(name, T=5, B=2, H=4, dtype=torch.float32)
    mixed = (P[0], P[1].detach().bfloat16().requires_grad_(), *P[2:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hs, state = run(cell, xw, state0, mixed, backend=backend)
    hs.sum().backward()
    want, _ = run(cell, xw, state0, (P[0], mixed[1].float(), *P[2:]), backend=backend)
    assert hs.dtype == torch.float32 and mixed[1].grad.dtype == torch.bfloat16
    torch.testing.assert_close(hs, want)


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
def test_run_under_autocast_runs_in_the_parameters_dtype_whatever_xws(backend):
    """Under torch.autocast xw comes bfloat16 (the layer's projection runs under it) beside float32 weights: the
    loop runs in the parameters' float32 (_no_autocast), the float32 run of that xw; not in xw's bfloat16 (hs
    bfloat16, 3.5e-3 off)."""
    cell, xw, state0, P, _ = setup("gru", T=5, B=3, H=4, dtype=torch.float32)
    xw = xw.detach().bfloat16()
    want, _ = run(cell, xw.float(), state0, P, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hs, state = run(cell, xw, state0, P, backend=backend)
    assert hs.dtype == state[0].dtype == torch.float32
    torch.testing.assert_close(hs, want)


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
def test_batch_first_outputs_are_contiguous_on_every_backend(backend):
    """run's docstring: with batch_first hs is (B, T, H) contiguous (the native loop writes it so, the others
    copy), not a transposed view."""
    cell, xw, state0, P, _ = setup("gru")
    hs, _ = run(cell, xw, state0, P, None, False, backend, None, True)
    want, _ = run(cell, xw, state0, P, None, False, backend)
    assert hs.is_contiguous()
    assert torch.equal(hs, want.transpose(0, 1))


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("shape", ["T,B", "T,B,1"])
def test_the_callers_mask_changed_after_forward_changes_no_gradient(backend, shape):
    """run keeps its own copy of the mask for backward: the caller's, refilled in place in between (the next
    batch's lengths), gave another dL/dxw on python and native (the loops read it at backward), torch's in-place
    error on autograd."""
    cell, xw, state0, P, mask = setup("gru", lengths=[4, 2, 1])
    mask = mask[..., 0].contiguous() if shape == "T,B" else mask
    hs, _ = run(cell, xw, state0, P, mask, backend=backend)
    (before,) = torch.autograd.grad(hs.sum(), xw, retain_graph=True)  # (1 at the padding too)
    mask.fill_(1.0)
    (after,) = torch.autograd.grad(hs.sum(), xw)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("dtype,w", [(torch.float32, 1e20), (torch.float16, 300.0)])
def test_a_padded_step_that_overflows_keeps_the_state(backend, dtype, w):
    """A padded step's candidate is discarded: one that overflowed to inf (a growing relu state; easily in float16)
    made the kept state NaN on autograd and python (s + m·(n - s) = NaN for m = 0, n = inf), its output too, where
    torch.nn and native keep the state and output 0."""
    cell = CELLS["rnn_relu"](1, 1).to(dtype)
    xw = torch.ones(3, 1, 1, dtype=dtype)  # h_1 = 1, h_2 = w + 1; step 3 is padding: w² + w overflows
    P = (torch.full((1, 1), w, dtype=dtype), torch.zeros(1, dtype=dtype))
    mask = torch.tensor([1.0, 1.0, 0.0], dtype=dtype).reshape(3, 1, 1)
    hs, (h,) = run(cell, xw, (torch.zeros(1, 1, dtype=dtype),), P, mask, backend=backend)
    h2 = torch.tensor(w + 1, dtype=dtype).item()
    assert hs.flatten().tolist() == [1.0, h2, 0.0]
    assert h.item() == h2


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("dtype,w", [(torch.float32, 1e20), (torch.float16, 300.0)])
def test_a_state_that_overflowed_at_a_sequences_end_leaves_the_weight_gradients_finite(backend, dtype, w):
    """A padded step keeps the state the sequence ended with, and that may be inf (a relu state that overflowed at
    its last valid step): the step's gradient, 0, times that state made W_hh's gradient NaN on every backend, also
    for a loss that never reads the sequence, where torch.nn's packed run (which has no padded steps) gives the
    other sequences' gradient."""
    cell = CELLS["rnn_relu"](1, 1).to(dtype)
    # row 0 stays finite; row 1 (3 steps): h = 1, w + 1, then w² + w overflows to inf at its last step
    xw = torch.tensor([[1.0, 1.0], [-100 * w, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=dtype)[..., None]
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=dtype)[..., None]

    def grad(rows):
        W = torch.full((1, 1), w, dtype=dtype, requires_grad=True)
        state0 = (torch.zeros(len(rows), 1, dtype=dtype),)
        hs, (h,) = run(
            cell, xw[:, rows], state0, (W, torch.zeros(1, dtype=dtype)), mask[:, rows], backend=backend
        )
        assert h[1:].isinf().all()  # (row 1's final state, where it is given)
        hs[:, 0].sum().backward()  # row 0 alone
        return W.grad

    torch.testing.assert_close(grad([0, 1]), grad([0]))


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("name", ["gru", "lstm", "rnn_relu"])
def test_a_nan_gradient_at_the_padding_reaches_nothing(backend, name):
    """A padded step's output is 0 whatever came before: dL/dout there reaches nothing, as torch.nn's packed run
    drops it. A masked loss whose gradient is NaN there (sqrt(Σ out²) at 0) made every gradient NaN (m · dhs)."""
    cell, xw, state0, P, mask = setup(name, lengths=[4, 2, 1])
    hs, _ = run(cell, xw, state0, P, mask, backend=backend)
    g = torch.randn(hs.shape, dtype=hs.dtype, generator=torch.Generator().manual_seed(1)) * mask
    inputs = (xw, *state0, *P)
    want = torch.autograd.grad(hs, inputs, g, retain_graph=True)
    got = torch.autograd.grad(hs, inputs, g.masked_fill(mask == 0, float("nan")))
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("name", list(CELLS))
def test_an_inf_gradient_reaching_the_padding_passes_through_it(backend, name):
    """In the reverse direction BPTT reaches a sequence's padding last, with dL/dh_0 of its valid part: where that
    overflowed to inf (huge recurrent weights), python's m · d and (1 - m) · d and native's m · dh (gru, gru_cho,
    mut1-3) made it NaN at the padded steps (0 · inf), and with it every weight gradient (finite on autograd and
    torch.nn, whose packed run has no padded steps) and, on python, c's gradient passed on beside it (lstm's dc_0
    NaN instead of finite)."""
    torch.manual_seed(0)
    cell = CELLS[name](1, 2)
    P0 = [p.detach() * (1e38 if p.dim() == 2 else 1) for p in cell.rec_params() if p is not None]
    mask = torch.tensor([1.0, 0.0]).reshape(2, 1, 1)  # one valid step, then padding (reached last backward)

    def grads(backend):
        P = [p.clone().requires_grad_() for p in P0]
        xw = torch.full((2, 1, cell.gates * 2), 0.3, requires_grad=True)
        state0 = tuple(torch.zeros(1, 2, requires_grad=True) for _ in range(cell.num_states))
        hs, state = run(cell, xw, state0, P, mask, reverse=True, backend=backend)
        (hs.sum() * 1e4 + sum(s.sum() for s in state)).backward()
        return [xw.grad, *(s.grad for s in state0), *(p.grad for p in P)]

    want, got = grads("autograd"), grads(backend)
    names = [n for n, p in zip(cell.REC_PARAMS, cell.rec_params()) if p is not None]
    # W_hh's gradient is finite on autograd (gated cells' W_hr's is NaN there too: 0 · inf with h_0 = 0)
    assert want[1 + cell.num_states + names.index("W_hh")].isfinite().all()
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_run_under_vmap(name):
    """run's size checks build the cell on the meta device, whose reset_parameters draws its weights: under
    torch.func.vmap that failed with "vmap: called random operation while in randomness error mode" (the layer,
    which skips the checks, ran). Now run gives there what it gives outside."""
    cell, xw, state0, P, mask = setup(name, lengths=[4, 2, 1])
    hs, state = torch.func.vmap(lambda v: run(cell, v, state0, P, mask))(xw[None])
    want, want_state = run(cell, xw, state0, P, mask)
    torch.testing.assert_close(hs[0], want)
    for s, w in zip(state, want_state):
        torch.testing.assert_close(s[0], w)


def test_a_library_that_matches_its_record_loads_without_the_build_lock(tmp_path, monkeypatch, capsys):
    """Every process took the build folder's lock to load the extension, built or not: DDP ranks starting together
    each waited for the others' loads and printed 'waiting for another process building or loading ...', and a
    run waited for a build of it in another process. A library that matches the record of its build has nothing to
    build: it is loaded at once, without the lock and without a word; one that doesn't is built under the lock."""
    import subprocess
    import sys

    from rnnkit import _native_build

    pytest.importorskip("fcntl")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    path = _native_build.built_path("some_ext")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pathlib.Path(path).write_bytes(b"a library")
    _native_build.record(path)
    monkeypatch.setattr(_native_build, "_import", lambda name, where: ("module", name, where))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); "
        "time.sleep(0.8)"), os.path.join(os.path.dirname(path), "rnnkit.lock")], stdout=subprocess.PIPE)  # fmt: skip
    holder.stdout.readline()  # another process holds the lock
    got = _native_build.build("the test extension", "some_ext", lambda: pytest.fail("built again"))
    assert holder.poll() is None, "waited for the lock"
    holder.wait()
    holder.stdout.close()
    assert got == (("module", "some_ext", path), None) and capsys.readouterr().err == ""


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_run_refuses_a_mask_of_other_values_than_0_and_1(backend, value):
    """A mask is 0/1 (a step in the sequence or padding), but every backend took 0.5, 2, -1 or NaN as a step in
    silence (h_t = m·step + (1 - m)·h_{t-1}). It is one line naming the value and where it lies; bool masks run."""
    from rnnkit.errors import RnnkitError

    cell, xw, state0, P, mask = setup("gru", lengths=[4, 2, 1])
    bad = mask.clone()
    bad[1, 2, 0] = value
    with pytest.raises(
        RnnkitError, match=rf"mask must hold only 0 and 1 .*got {value} at \(t, b\) = \(1, 2\)"
    ):
        run(cell, xw, state0, P, bad, backend=backend)
    want = run(cell, xw, state0, P, mask, backend=backend)[0]
    torch.testing.assert_close(run(cell, xw, state0, P, mask[..., 0] == 1, backend=backend)[0], want)


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn_tanh", "leaky"])
def test_a_batch_of_none_and_zero_units_runs_backward(cell, backend):
    """B = 0 and H = 0 at once: the python loop's weight gradients reshaped (T·B, G·H) = (0, 0) rows as (-1, 0),
    "cannot reshape tensor of 0 elements into shape [-1, 0]" (native hands such a call to it); autograd ran it."""
    Cell = CELLS[cell]
    G = Cell.gates
    xw = torch.randn(3, 0, G * 0, requires_grad=True)
    state0 = tuple(torch.randn(0, 0, requires_grad=True) for _ in range(Cell.num_states))
    P = [torch.randn(0, 0, requires_grad=True) if "W" in n else torch.randn(G * 0 if "b" in n else 0)
         for n in Cell.REC_PARAMS]  # fmt: skip
    hs, final = run(Cell, xw, state0, P, backend=backend)
    (hs.sum() + sum(f.sum() for f in final)).backward()
    assert hs.shape == (3, 0, 0) and xw.grad.shape == xw.shape


@pytest.mark.parametrize("passes", ["none", "backward", "create_graph"])
@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
def test_a_probed_run_leaves_its_graph_collectable(backend, passes):
    """A GradProbe on the autograd loop (and on the autograd rerun of a create_graph=True backward) watched h_t
    through torch's register_multi_grad_hook, whose hooks hold the steps' grad_fns: a cycle through C++ that gc
    can't see, and every probed call kept its graph (a 1x256 lstm, T = 50, B = 16: 8.3 MB a call without backward,
    4.5 MB with) for the life of the process. The initial state, which only the graph holds, must die with it."""
    cell, xw, state0, P, _ = setup("lstm", T=4)
    h0 = state0[0].detach().clone().requires_grad_()
    hs, state = run(cell, xw, (h0, state0[1]), P, None, False, backend, GradProbe())
    if passes == "backward":
        hs.sum().backward()
    elif passes == "create_graph":
        (g,) = torch.autograd.grad(hs.sum(), xw, create_graph=True)
        g.pow(2).sum().backward()
        del g
    gone = weakref.ref(h0)
    del hs, state, h0
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
@pytest.mark.parametrize("name", ["lstm", "gru", "leaky", "mut1"])
def test_a_half_type_run_is_its_float32_run_cast_once(name, backend, dtype):
    """float16 and bfloat16 tensors run in float32 on every backend, native included (no fallback: warnings are
    errors here): the outputs and final state are those of the float32 run of the same values cast once, and each
    gradient that run's, cast to its tensor's dtype. Every step's GEMMs and gate math ran in the half type (native fell
    back to python), and differed from it: a 200-step bfloat16 lstm's outputs came 5.5e-3 off float64's, torch.nn.LSTM's
    2.6e-3, now 1.7e-3 (the result's own rounding)."""
    T, B, H = 30, 3, 8
    cell, xw, state0, P, mask = setup(name, T=T, B=B, D=5, H=H, dtype=torch.float32, lengths=[T, 17, 4])
    half = [t.detach().to(dtype).requires_grad_() for t in (xw, *state0, *P)]
    n, g = len(state0), torch.randn(T, B, H).to(dtype).float()
    got = {}
    for tensors in (half, [t.detach().float().requires_grad_() for t in half]):
        xw, state0, P = tensors[0], tuple(tensors[1 : 1 + n]), tuple(tensors[1 + n :])
        hs, state = run(cell, xw, state0, P, mask.to(xw.dtype), False, backend)
        loss = (hs.float() * g).sum() + sum((s.float() * (k + 2)).sum() for k, s in enumerate(state))
        got[xw.dtype] = (hs, *state, *torch.autograd.grad(loss, tensors))
    for a, b in zip(got[dtype], got[torch.float32], strict=True):
        assert a.dtype == dtype and torch.equal(a, b.to(dtype))


@pytest.mark.parametrize("backend", [*BACKENDS, "native"])
def test_a_half_type_runs_parameter_gradients_are_float64s_rounded_once(backend):
    """A leaky layer's dα = Σ_t Σ_b dh_t ⊙ (h̃_t - h_{t-1}), dW_hh and db_hh over 400 steps of bfloat16: summed in
    bfloat16 dα came 1.8-3.1% off (7-35% in the worst unit; autograd's 9.8%, and an lstm's db_hh 5%), and summed in
    float32 (since) from steps run in bfloat16, within a rounding of the sum of those steps' own terms, themselves off
    float64's. The steps run in float32 now: each gradient is float64's within one rounding to bfloat16."""
    from rnnkit.cells.leaky import Leaky

    T, B, H, bf = 400, 4, 8, torch.bfloat16
    torch.manual_seed(2)
    xw, g = torch.randn(T, B, H).to(bf), torch.randn(T, B, H).to(bf)
    P0 = ((torch.randn(H, H) / H**0.5).to(bf), (torch.randn(H) / 4).to(bf), torch.full((H,), 0.3, dtype=bf))
    grads = []
    for dtype in (bf, torch.float64):
        P = [p.detach().to(dtype).requires_grad_() for p in P0]
        hs, _ = run(Leaky, xw.to(dtype), (torch.zeros(B, H, dtype=dtype),), P, backend=backend)
        (hs * g.to(dtype)).sum().backward()
        grads.append([p.grad for p in P])
    for got, exact in zip(*grads):
        assert got.dtype == bf
        off = (got.double() - exact).abs()  # (2⁻⁸: bfloat16's unit roundoff)
        assert (off <= 2**-8 * exact.abs() + 1e-5 * exact.abs().max()).all(), off.max().item()


@pytest.mark.parametrize("backend", ["python", "native"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_a_frozen_recurrent_weight_has_its_gradient_product_skipped(name, backend, monkeypatch):
    """W_hh and b_hh that require no grad (a frozen recurrence, the input projection trained): the python and native
    loops still ran dW_hh = Σ_t dpreᵀ h_{t-1}, a GEMM as long as the loop's own products, and threw it away (native:
    an lstm 128 -> 256, T 100, B 16 took the same backward frozen or not). It is no longer run; the other gradients
    are autograd's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from rnnkit.engine import native

    cell, xw, state0, P, _ = setup(name)
    if backend == "native" and native.unsupported(cell, xw) is not None:
        pytest.skip("the native loop is not built here")
    W_hh, b_hh = (p.detach() for p in P)  # frozen
    products = []  # the (G·H, H) products the backward ran, or the native loop's dW_hh and db_hh

    class Products(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.aten.mm.default and out.shape == W_hh.shape:
                products.append(out)
            return out

    real = native.load()

    class Recording:
        def __getattr__(self, name):
            return getattr(real, name)

        def backward(self, *args):
            out = real.backward(*args)
            products.extend(d for d in out[2 + len(state0) : 4 + len(state0)] if d is not None)
            return out

    monkeypatch.setattr(native, "load", lambda: Recording())
    got, want = [], []
    for be, into in ((backend, got), ("autograd", want)):
        hs, state = run(cell, xw, state0, (W_hh, b_hh), backend=be)
        with Products() if be == "python" else contextlib.nullcontext():
            into.extend(torch.autograd.grad((hs**2).sum() + state[0].sum(), (xw, *state0)))
    assert products == []
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("where", ["cache", "build folder"])
def test_an_extensions_dir_that_links_to_a_missing_folder_is_named_with_its_fix(monkeypatch, tmp_path, where):
    """TORCH_EXTENSIONS_DIR (or ~/.cache) a link to a folder that isn't there (a scratch disk not mounted, a folder
    removed): the build failed 'FileNotFoundError: ... No such file or directory' and told the user to 'install a C++
    compiler (g++) and ninja', which were there all along; the build's folder in it such a link (a cache copied with
    its links), 'FileExistsError' and 'set TORCH_EXTENSIONS_DIR to a writable folder', which it was. The reason names
    the link and where it points."""
    from torch.utils import cpp_extension

    from rnnkit import _native_build

    gone = tmp_path / "scratch" / "ext"
    cache = tmp_path / "cache"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(cache))
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    if where == "cache":
        link = cache
    else:
        cache.mkdir()
        link = cache / "some_ext"
    link.symlink_to(gone)
    module, reason = _native_build.build("the test extension", "some_ext", lambda: "module")
    assert module is None and "install a C++ compiler" not in reason and "writable" not in reason
    assert f"{link} is a link to {gone}, which is not there" in reason
    gone.mkdir(parents=True)  # the fix it names
    assert cpp_extension._get_build_directory("some_ext", False).startswith(str(cache))
    assert _native_build.build("the test extension", "some_ext", lambda: "module") == ("module", None)


@pytest.mark.parametrize("first", [None, "native"])
def test_a_failed_build_is_warned_of_once_whichever_backend_asks_first(monkeypatch, first):
    """One failed build, one warning: a process whose layers take the default backend and ask for native (in either
    order) was told of the same failure twice, once as "2-3x slower" and once as "native backend unavailable"."""
    from rnnkit import engine
    from rnnkit.engine import native, resolve_backend

    cell, xw, *_ = setup("lstm", dtype=torch.float32)
    monkeypatch.setattr(native, "_ext", None)
    monkeypatch.setattr(native, "_reason", "could not build the C++ extension: RuntimeError: no compiler")
    monkeypatch.setattr(engine, "_warned", set())
    second = "native" if first is None else None
    with pytest.warns(RuntimeWarning, match="no compiler") as said:
        assert resolve_backend(first, cell, xw) == "python"
    assert len(said) == 1
    assert resolve_backend(second, cell, xw) == "python"  # no second warning (warnings are errors here)
    assert resolve_backend(first, cell, xw) == "python"
