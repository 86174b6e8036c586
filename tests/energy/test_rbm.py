import contextlib
import copy
import itertools
import math
import os
import re

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from sklearn.neural_network import BernoulliRBM

from rnnkit.energy import _rbm_kernel, ais, exact, rbm_exact, rbm_train
from rnnkit.energy import hopfield as hop
from rnnkit.energy.boltzmann import BoltzmannMachine
from rnnkit.energy.dbn import DBN
from rnnkit.energy.hopfield import Hopfield
from rnnkit.energy.ising import Ising
from rnnkit.energy.rbm import RBM
from rnnkit.energy.rbm_train import RBMTrainConfig
from rnnkit.errors import RnnkitError


def model(V, H, visible="bernoulli", scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(V, H, visible, init_scale=scale, generator=g, dtype=dtype)
    rbm.b += 0.5 * torch.randn(H, generator=g, dtype=dtype)
    rbm.c += 0.5 * torch.randn(V, generator=g, dtype=dtype)
    return rbm


def energy(rbm, v, h):
    visible = 0.5 * ((v - rbm.c) ** 2).sum() if rbm.visible == "gaussian" else -(v @ rbm.c)
    return visible - h @ rbm.b - h @ rbm.W @ v


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_sums_out_the_hidden_units(visible):
    rbm = model(4, 3, visible)
    v = (
        torch.rand(5, 4, dtype=torch.float64).round()
        if visible == "bernoulli"
        else torch.randn(5, 4).double()
    )
    hs = exact.binary_states(3)
    for row, F in zip(v, rbm.free_energy(v)):
        brute = -torch.logsumexp(torch.stack([-energy(rbm, row, h) for h in hs]), 0)
        assert F.item() == pytest.approx(brute.item())


def test_log_partition_by_visible_and_by_hidden_enumeration_agree():
    wide, tall = model(6, 9), model(9, 6)  # the first enumerates v, the second h
    brute = lambda r: torch.logsumexp(-r.free_energy(exact.binary_states(r.num_visible)), 0).item()  # noqa: E731
    assert rbm_exact.log_partition(wide) == pytest.approx(brute(wide))
    assert rbm_exact.log_partition(tall) == pytest.approx(brute(tall))


def test_gaussian_log_partition_matches_numerical_integration():
    rbm = model(1, 3, "gaussian", scale=0.7)
    density = lambda x: math.exp(-rbm.free_energy(torch.tensor([[x]], dtype=torch.float64)).item())  # noqa: E731
    Z, _ = quad(density, -30, 30)
    assert rbm_exact.log_partition(rbm) == pytest.approx(math.log(Z), rel=1e-7)


def test_pseudo_likelihood_is_the_sum_of_exact_conditionals():
    rbm = model(5, 3)
    states = exact.binary_states(5)
    p = rbm_exact.visible_probs(rbm)
    v = states[[3, 17, 30]]
    expected = []
    for row in v:
        total = 0.0
        for j in range(5):
            flipped = row.clone()
            flipped[j] = 1 - flipped[j]
            p_v, p_f = p[exact.state_index(row[None])], p[exact.state_index(flipped[None])]
            total += math.log(p_v / (p_v + p_f))
        expected.append(total)
    torch.testing.assert_close(rbm.pseudo_likelihood(v), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(rbm.pseudo_likelihood(v, per_unit=True), torch.tensor(expected).double() / 5)


def test_scikit_learn_score_is_our_total_pseudo_likelihood_on_average():
    rbm = model(6, 4, dtype=torch.float32)
    v = exact.binary_states(6)[[5, 40]].float()
    scores = np.stack([rbm.to_sklearn(random_state=seed).score_samples(v.numpy()) for seed in range(600)])
    mean = torch.tensor(scores).mean(0)  # V log σ(ΔF) for a random unit: unbiased for the total
    torch.testing.assert_close(mean, rbm.pseudo_likelihood(v).double(), rtol=0.05, atol=0.05)


def test_cd_gradient_approaches_the_exact_gradient_as_k_grows():
    rbm = model(6, 4, scale=2.0)  # strong weights: slow mixing, so k matters
    data = (torch.rand(100, 6, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    exact_grad = torch.cat([t.flatten() for t in rbm_exact.exact_gradient(rbm, data)])
    errors = []
    for k in (1, 2, 4, 8, 16, 32, 64, 128):
        cd = torch.cat([t.flatten() for t in rbm_exact.cd_gradient_expected(rbm, data, k)])
        errors.append(((cd - exact_grad).norm() / exact_grad.norm()).item())
    assert all(b < a or b < 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.05 and errors[-1] < 1e-3, errors


@pytest.mark.parametrize("k", [1, 5, 10**5])
def test_cd_gradient_of_a_small_k_steps_q_without_the_transition_matrix(k):
    """q Tᵏ was always T (2^V, 2^V) built and squared log2(k) times: rbm cd-check --visible-units 12 --hidden-units
    12 took 113 s for k = 1 ... 128. A small k now takes k steps through P(h|v) and P(v'|h), T never formed."""
    rbm = model(8, 4, scale=2.0)
    data = (torch.rand(50, 8, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    shapes = []

    class Record(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if getattr(func, "__name__", "") in ("matmul", "__matmul__", "mm"):
                shapes.append(tuple(out.shape))
            return out

    with Record():
        got = rbm_exact.cd_gradient_expected(rbm, data, k)
    assert ((2**8, 2**8) in shapes) == (k == 10**5)  # (stepping costs more than T there)
    q = rbm_exact.data_distribution(rbm, data) @ torch.linalg.matrix_power(
        rbm_exact.transition_matrix(rbm), k
    )
    states = exact.binary_states(8)
    pos, neg = (
        rbm_exact.statistics(rbm, rbm_exact.data_distribution(rbm, data), states),
        rbm_exact.statistics(rbm, q, states),
    )
    for g, p, n in zip(got, pos, neg):
        torch.testing.assert_close(g, p - n, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("k", [10**12, 10**15, 10**18, 2**63, 10**30])
def test_cd_gradient_of_a_huge_k_is_the_exact_gradient(k):
    """q_k = q_0 T^k by torch.linalg.matrix_power: T's rows sum to 1 within rounding (1 + 3e-17), so q_k grew
    as (1 + 3e-17)^k and E[CD-k] drifted from the exact gradient it converges to: 5e-5 off at k = 10^12, 5% at
    10^15, 6e13 times its size at 10^18 (`rbm cd-check --ks`), and a k of 2^63 or more failed in torch
    ('Overflow when unpacking long long')."""
    rbm = model(8, 6, scale=2.0, seed=0)
    data = (torch.rand(200, 8, generator=torch.Generator().manual_seed(0)) < 0.3).double()
    exact_grad = torch.cat([t.flatten() for t in rbm_exact.exact_gradient(rbm, data)])
    cd = torch.cat([t.flatten() for t in rbm_exact.cd_gradient_expected(rbm, data, k)])
    assert ((cd - exact_grad).norm() / exact_grad.norm()).item() < 1e-9


@pytest.mark.parametrize("k", [1, 3])
def test_sampled_cd_gradient_has_the_enumerated_expectation(k):
    rbm = model(5, 3)
    data = (torch.rand(8, 5, generator=torch.Generator().manual_seed(2)) < 0.5).double()
    grads, _ = rbm_train.cd_gradient(
        rbm, data.repeat(20000, 1), k, generator=torch.Generator().manual_seed(3)
    )
    sampled = torch.cat([t.flatten() for t in grads])
    expected = torch.cat([t.flatten() for t in rbm_exact.cd_gradient_expected(rbm, data, k)])
    assert (sampled - expected).abs().max() < 0.01


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
@pytest.mark.parametrize("persistent, k, momentum, decay, B, Bc", [(True, 1, 0, 0, 10, 10), (False, 2, 0.5, 1e-3, 7, 7),
                                                                    (True, 3, 0.9, 1e-4, 5, 12)])  # fmt: skip
def test_compiled_loop_equals_the_torch_loop(persistent, k, momentum, decay, B, Bc):
    g = torch.Generator().manual_seed(4)
    ours = RBM(20, 17, init_scale=0.5, generator=g)
    twin = copy.deepcopy(ours)
    cfg = RBMTrainConfig(k=k, persistent=persistent, momentum=momentum, weight_decay=decay)
    xs = torch.rand(6, B, 20, generator=g)
    u0, u = rbm_train.draw_noise(ours, 6, B, Bc if persistent else B, k, persistent, g)
    states = [rbm_train.TrainState.start(r, Bc) for r in (ours, twin)]
    rbm_train.torch_pass(ours, xs, u0, u, states[0], cfg)
    _rbm_kernel.cd_pass(_rbm_kernel.load(), twin, xs, u0, u, states[1], cfg)
    for a, b in zip((ours.W, ours.b, ours.c, states[0].chain), (twin.W, twin.b, twin.c, states[1].chain)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_parameters_assigned_as_views_train_as_their_copies(use_kernel):
    # rbm.W = W.t() (a strided view) stopped the compiled loop at a bare assert
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(40, 6, generator=g) < 0.5).float()
    ours, twin = RBM(6, 4), RBM(6, 4)
    W = torch.randn(6, 4, generator=g) * 0.1
    ours.W, twin.W = W.t(), W.t().contiguous()
    ours.c, twin.c = torch.zeros(12)[::2], torch.zeros(6)
    cfg = RBMTrainConfig(epochs=2, use_kernel=use_kernel)
    ours.fit(data, cfg, torch.Generator().manual_seed(1))
    twin.fit(data, cfg, torch.Generator().manual_seed(1))
    assert ours.W.is_contiguous() and ours.c.is_contiguous()
    torch.testing.assert_close(ours.W, twin.W)
    torch.testing.assert_close(ours.c, twin.c)


@pytest.mark.parametrize(
    "name, value, message",
    [("W", torch.zeros(6, 4), r"rbm.W must have shape \(4, 6\)"), ("b", torch.zeros(5), r"rbm.b must have shape"),
     ("c", torch.zeros(6, dtype=torch.float64), "rbm.c is torch.float64 on cpu but rbm.W is torch.float32")],
)  # fmt: skip
def test_parameters_of_the_wrong_shape_or_dtype_are_refused_before_training(name, value, message):
    # the compiled loop reads W, b and c as raw memory of the model's sizes: a wrong shape read past their end
    rbm = RBM(6, 4)
    setattr(rbm, name, value)
    with pytest.raises(RnnkitError, match=message):
        rbm.fit(torch.zeros(10, 6), RBMTrainConfig(epochs=1))


@pytest.mark.parametrize("data", [[[0.9, 0.0, 1.0]], [[-1.0, 0.0, 1.0]], [[1.0, 0.0, 1.0, 1.0]]])
def test_exact_gradients_refuse_data_that_is_not_binary_states(data):
    """x.long() read 0.9 as 0, so grey data silently got the gradient of all-zero states; -1 and a wrong
    width failed deep in torch."""
    rbm = model(3, 2)
    for gradient in (rbm_exact.exact_gradient, lambda r, d: rbm_exact.cd_gradient_expected(r, d, 1)):
        with pytest.raises(RnnkitError, match="binary|units"):
            gradient(rbm, torch.tensor(data))


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_compiled_loop_survives_saturated_units():
    """Pre-activations below -88 (large weights) made the -ffast-math expf of the compiled sigmoid NaN, so
    training 'diverged' where the torch loop trains; both loops now give the same finite weights."""
    x = (torch.rand(10, 64, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    Ws = []
    for use_kernel in (True, False):
        g = torch.Generator().manual_seed(0)
        rbm = RBM(64, 16, generator=g, init_scale=20.0)
        rbm.fit(x, RBMTrainConfig(epochs=1, lr=1e-6, use_kernel=use_kernel), g)
        Ws.append(rbm.W)
    assert Ws[0].isfinite().all()
    torch.testing.assert_close(Ws[0], Ws[1])


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_loading_the_kernel_leaves_the_process_floating_point_alone():
    """Linked with -ffast-math, the library's loading turned on flush-to-zero for the whole process."""
    _rbm_kernel.load()
    assert torch.tensor([1e-40]).mul(1.0).item() > 0  # a float32 denormal stays one


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_a_damaged_kernel_is_built_again(tmp_path, monkeypatch, capsys):
    """_build returned any library that was there: one cut short (a full disk) killed the process loading it, a
    0-byte one fell back to the torch loop in every process. One that doesn't match its build's record is built
    again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = __import__("shutil").which("cc") or __import__("shutil").which("gcc")
    path = _rbm_kernel._build(compiler)
    size = path.stat().st_size
    for damaged in (size // 2, 0):
        with open(path, "r+b") as f:
            f.truncate(damaged)
        assert _rbm_kernel._build(compiler) == path and path.stat().st_size == size
        assert "does not match the record of its build" in capsys.readouterr().err


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_a_build_killed_half_way_leaves_no_folder_behind(tmp_path, monkeypatch):
    """A process killed while it built the kernel (kill -9, the OOM killer) left its temporary folder, with the
    object file, in ~/.cache/rnnkit for good, one more a kill; the next build of that kernel removes them."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    cache, started = tmp_path / "cache", tmp_path / "started"
    compiler = tmp_path / "cc"  # the system's, slowed down where SLOW is set (the killed build)
    real = shutil.which("cc") or shutil.which("gcc")
    compiler.write_text(
        f'#!/bin/sh\n[ -n "$SLOW" ] && echo $$ > {started} && exec sleep 60\nexec {real} "$@"\n'
    )
    compiler.chmod(0o755)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "SLOW": "1"}
    code = f"from rnnkit.energy import _rbm_kernel; _rbm_kernel._build({str(compiler)!r})"
    build = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        for _ in range(600):
            if started.exists() and started.read_text().strip():
                break
            assert build.poll() is None
            time.sleep(0.05)
    finally:
        build.kill()
        build.wait()
    os.kill(int(started.read_text()), signal.SIGKILL)  # the compiler it left running
    assert [p.is_dir() for p in (cache / "rnnkit").iterdir()].count(True) == 1  # the killed build's
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    path = _rbm_kernel._build(str(compiler))
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, path.name + ".lock", path.name + ".sha256"]
    )


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_a_cache_it_cannot_write_in_that_holds_the_kernel_is_loaded_as_it_is(tmp_path, monkeypatch):
    """As the engine's: a read-only or shared cache holding the kernel as built is loaded from. Its lock file could
    not be opened there (OSError: Read-only file system), and training ran the torch loop with a warning; one that
    doesn't match its record is still not trusted."""
    import contextlib
    import errno

    from rnnkit import _native_build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = __import__("shutil").which("cc") or __import__("shutil").which("gcc")
    path = _rbm_kernel._build(compiler)

    @contextlib.contextmanager
    def read_only(lock, waiting=None):
        raise OSError(errno.EROFS, "Read-only file system", str(lock))
        yield

    monkeypatch.setattr(_native_build, "flocked", read_only)
    assert _rbm_kernel._build(compiler) == path
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(OSError, match="Read-only file system"):
        _rbm_kernel._build(compiler)


def test_a_folder_in_place_of_the_kernels_lock_is_removed_before_the_build(tmp_path, monkeypatch, capsys):
    """A folder named as the kernel's lock file in ~/.cache/rnnkit (mkdir, a bad copy of the cache) failed every
    build "IsADirectoryError: [Errno 21] Is a directory: ...; install a C compiler (cc or gcc) or set CC to one", a
    fix that changes nothing; it is removed, said in one line, and the build goes on."""
    pytest.importorskip("fcntl")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = tmp_path / "cc"  # writes what -o names (no library: _build alone is run)
    compiler.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && printf x > "$2"; shift; done\n')
    compiler.chmod(0o755)
    path = _rbm_kernel._build(str(compiler))
    lock = path.with_name(path.name + ".lock")
    for made in (path, lock, path.with_name(path.name + ".sha256")):
        made.unlink()
    (lock / "inside").mkdir(parents=True)
    assert _rbm_kernel._build(str(compiler)) == path and path.is_file() and lock.is_file()
    assert capsys.readouterr().err == (
        f"rnnkit: removing the folder {lock}, in the place of a lock file of the RBM kernel's build\n"
    )


def test_the_kernels_cache_tells_cpus_with_other_flags_apart(monkeypatch):
    """The library is built with -march=native and cached by the CPU: the key was its model name alone, which a
    VM shows as "AMD EPYC" for CPUs with AVX-512 and without, and a shared home directory would give the one's
    library (AVX-512 instructions) to the other, killing its process. The flags are in the key too."""
    seen = {}
    for flags in ("fpu sse2 avx2 fma avx512f avx512bw", "fpu sse2 avx2 fma"):
        cpuinfo = f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n"
        monkeypatch.setattr(_rbm_kernel.pathlib.Path, "read_text", lambda self, *a, text=cpuinfo, **k: text)
        seen[flags] = _rbm_kernel._cpu_name()
    assert len(set(seen.values())) == 2 and all("AMD EPYC" in name for name in seen.values()), seen


def test_the_kernels_cache_tells_arm_cpus_apart(monkeypatch):
    """An ARM CPU's /proc/cpuinfo has no "model name" or "flags" line: every ARM CPU had the same key, and a
    library built with -march=native on one with SVE (Graviton3) would kill the process on one without it."""
    seen = set()
    for features, part in (
        ("fp asimd aes crc32 atomics", "0xd0c"),
        ("fp asimd aes crc32 atomics sve sve2", "0xd40"),
    ):
        cpuinfo = f"processor\t: 0\nFeatures\t: {features}\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
        monkeypatch.setattr(_rbm_kernel.pathlib.Path, "read_text", lambda self, *a, text=cpuinfo, **k: text)
        seen.add(_rbm_kernel._cpu_name())
    assert len(seen) == 2, seen


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """_rbm_kernel as in a new process, its cache in tmp_path; the real one again after the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_rbm_kernel, "_warned", False)
    _rbm_kernel._built.cache_clear()
    yield
    _rbm_kernel._built.cache_clear()


@pytest.mark.parametrize(
    "env, match",
    [
        (
            {"CC": "no-such-cc", "PATH": "/nonexistent"},
            "with no-such-cc or gcc: no-such-cc: not found; install a C",
        ),
        (
            {"CC": "/bin/false", "PATH": "/nonexistent"},
            "/bin/false exited with status 1; install a C compiler",
        ),
        (
            {"XDG_CACHE_HOME": "/dev/null/cache"},
            "NotADirectoryError.*set XDG_CACHE_HOME to a writable folder",
        ),
    ],
)
def test_a_kernel_that_cannot_be_built_is_warned_of_once(fresh_kernel, monkeypatch, env, match):
    """Every failure (no compiler, CC=/bin/false, an unwritable cache) fell back to the torch loop silently:
    one warning names the cause and the fix, once per process; RNNKIT_NATIVE=0 is quiet."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.warns(RuntimeWarning, match=match):
        assert _rbm_kernel.load() is None
    assert _rbm_kernel.load() is None  # no second warning (warnings are errors here)
    _rbm_kernel._built.cache_clear()
    monkeypatch.setattr(_rbm_kernel, "_warned", False)
    monkeypatch.setenv("RNNKIT_NATIVE", "0")
    assert _rbm_kernel.load() is None and _rbm_kernel.unavailable().startswith("switched off")


def test_a_cache_that_links_to_a_missing_folder_is_named_with_its_fix(fresh_kernel, monkeypatch, tmp_path):
    """XDG_CACHE_HOME a link to a folder that isn't there (a disk not mounted, a folder removed): the warning said
    'FileExistsError ...; set XDG_CACHE_HOME to a writable folder', which it was. It names the link and its fix,
    as the native engine's build does."""
    (tmp_path / "cache").symlink_to(tmp_path / "nowhere" / "deeper")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.warns(
        RuntimeWarning, match=r"cache is a link to .*nowhere/deeper, which is not there: create that"
    ):
        assert _rbm_kernel.load() is None


def test_a_user_without_a_home_is_told_where_to_keep_the_kernel(fresh_kernel, monkeypatch):
    """HOME unset for a user without a home in the password database (a container's `docker run -u 1234`): the
    warning said "RuntimeError: Could not determine home directory.; install a C compiler (cc or gcc) or set CC to
    one", a fix for another problem, with a compiler there. It names the cache's variable."""
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setenv("RNNKIT_NATIVE", "1")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.warns(
        RuntimeWarning, match=r"home directory.*; set XDG_CACHE_HOME \(or HOME\) to a writable folder"
    ):
        assert _rbm_kernel.load() is None


def test_a_relative_xdg_cache_home_is_ignored(fresh_kernel, monkeypatch, tmp_path):
    """XDG_CACHE_HOME=cache (relative, which the XDG spec says to ignore) built the kernel in ./cache/rnnkit of the
    working directory, one more folder and a build in every directory the user trained from; it is ~/.cache's."""
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _rbm_kernel._cache_dir() == tmp_path / "home" / ".cache" / "rnnkit"
    if _rbm_kernel.unavailable() is None:
        assert list((tmp_path / "home" / ".cache" / "rnnkit").glob("rbm_cd-*.so"))
    assert list(work.iterdir()) == []


@pytest.mark.skipif(_rbm_kernel.unavailable() is not None, reason=str(_rbm_kernel.unavailable()))
def test_a_cache_on_a_noexec_mount_is_the_fix(fresh_kernel, monkeypatch):
    """A cache on a noexec mount builds the kernel, then dlopen fails ("failed to map segment from shared object"):
    the fix said to install a C compiler, which was there."""

    def noexec(path, *args, **kwargs):
        raise OSError(f"{path}: failed to map segment from shared object")

    monkeypatch.setattr(_rbm_kernel.ctypes, "CDLL", noexec)
    with pytest.warns(RuntimeWarning, match=r"failed to map segment.*mounted noexec\?\): set XDG_CACHE_HOME to a "
                                            r"folder on another"):  # fmt: skip
        assert _rbm_kernel.load() is None


@pytest.mark.skipif(__import__("shutil").which("gcc") is None, reason="no gcc to fall back to")
def test_a_failing_cc_falls_back_to_gcc(fresh_kernel, monkeypatch):
    monkeypatch.setenv("CC", "/bin/false")
    assert _rbm_kernel.load() is not None


@pytest.mark.parametrize("persistent", [True, False])
def test_training_raises_the_exact_log_likelihood_of_digits(persistent):
    from rnnkit.energy.digits import load_digits

    x = (load_digits()[0][:600] > 0.5).float()
    rbm = RBM(64, 12, generator=torch.Generator().manual_seed(0))
    before = rbm.log_likelihood(x)
    errors = []
    cfg = RBMTrainConfig(epochs=5, lr=0.05, k=1, persistent=persistent, momentum=0.5)
    rbm.fit(
        x, cfg, torch.Generator().manual_seed(1), lambda epoch, r: errors.append(r.reconstruction_error(x))
    )
    after = rbm.log_likelihood(x)  # exact: 2^12 hidden states
    assert before < -44 and after > before + 15, (before, after)
    assert errors[-1] < errors[0]


def test_gaussian_visible_units_train_and_sample():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 6, generator=g) * 2
    x = centres[torch.randint(0, 3, (900,), generator=g)] + 0.3 * torch.randn(900, 6, generator=g)
    rbm = RBM(6, 8, "gaussian", generator=g)
    before = rbm.log_likelihood(x)
    rbm.fit(x, RBMTrainConfig(epochs=20, lr=0.01, persistent=False), g)
    assert rbm.log_likelihood(x) > before + 1.0
    samples, means = rbm.sample(200, steps=200, generator=g)
    assert samples.shape == means.shape == (200, 6)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_estimates_log_z_of_a_model_too_wide_to_enumerate_visibly(visible):
    rbm = model(30, 10, visible, scale=0.3)
    estimate, spread = ais.log_partition(
        rbm, num_chains=200, num_betas=1000, generator=torch.Generator().manual_seed(5)
    )
    assert estimate == pytest.approx(rbm_exact.log_partition(rbm), abs=0.1)
    assert spread < 0.1


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_makes_two_matrix_products_per_temperature_with_the_same_estimate(visible):
    """a = v Wᵀ + b gives F_βk-1(v) (β_k-1 a), F_βk(v) and the Gibbs step's p(h | v) (β_k a), and h W_β = β (h W):
    four products a temperature were two too many (784 x 500: 41.5 s with three, 25.4 s with two); the numbers are
    the plain loop's to float64 rounding."""
    rbm = model(12, 5, visible, scale=0.5)
    data, K = torch.rand(20, 12), 30
    counted = []

    class Count(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            counted.append(name in ("matmul", "__matmul__", "mm") and args[1].dim() == 2)  # (not v @ c)
            return func(*args, **(kwargs or {}))

    with Count():
        got = ais.log_partition(rbm, 4, K, data, torch.Generator().manual_seed(1))
    assert sum(counted) <= 2 * K + 2
    # the plain loop: F_β'(v) - F_β(v) and a Gibbs step, each from the parameters at its β
    gen, gaussian = torch.Generator().manual_seed(1), visible == "gaussian"
    W, b, c, c_A = rbm.W, rbm.b, rbm.c, ais.base_visible_bias(rbm, data)
    kw = dict(generator=gen, dtype=torch.float64)
    v = (
        c_A + torch.randn(4, 12, **kw)
        if gaussian
        else (ais.uniform((4, 12), **kw) < torch.sigmoid(c_A)).double()
    )
    log_w = torch.zeros(4, dtype=torch.float64)

    def free_energy(v, beta):
        c_beta = (1 - beta) * c_A + beta * c
        visible_term = 0.5 * ((v - c_beta) ** 2).sum(-1) if gaussian else -v @ c_beta
        return visible_term - torch.nn.functional.softplus(v @ (beta * W).T + beta * b).sum(-1)

    betas = torch.linspace(0, 1, K + 1).tolist()
    for beta_prev, beta in zip(betas, betas[1:]):
        log_w += free_energy(v, beta_prev) - free_energy(v, beta)
        ph = torch.sigmoid(v @ (beta * W).T + beta * b)
        h = (ais.uniform(ph.shape, **kw) < ph).double()
        mean = h @ (beta * W) + ((1 - beta) * c_A + beta * c)
        v = (
            mean + torch.randn(mean.shape, **kw)
            if gaussian
            else (ais.uniform(mean.shape, **kw) < torch.sigmoid(mean)).double()
        )
    log_Z_A = (
        0.5 * 12 * math.log(2 * math.pi) if gaussian else torch.nn.functional.softplus(c_A).sum().item()
    ) + 5 * math.log(2)
    assert math.isclose(got[0], log_Z_A + ais.logmeanexp(log_w).item(), rel_tol=1e-13)
    w = torch.exp(log_w)  # the standard error of log Z: Z's relative one, std(w) / mean(w) / sqrt(chains)
    assert math.isclose(got[1], (w.std() / w.mean() / math.sqrt(4)).item(), rel_tol=1e-9)


def test_transform_sample_and_scikit_learn_round_trip():
    rbm = model(6, 4, dtype=torch.float32)
    x = torch.rand(10, 6)
    features = rbm.transform(x)
    assert features.shape == (10, 4) and ((features > 0) & (features < 1)).all()
    torch.testing.assert_close(torch.tensor(rbm.to_sklearn().transform(x.numpy())).float(), features)
    back = RBM.from_sklearn(rbm.to_sklearn())  # in scikit-learn's float64: its weights exactly
    assert back.W.dtype == torch.float64
    torch.testing.assert_close(back.W.float(), rbm.W)
    est = back.to_sklearn()
    assert (RBM.from_sklearn(est).W.numpy() == est.components_).all()
    from_data, _ = rbm.sample(init=x, steps=3, generator=torch.Generator().manual_seed(0))
    assert from_data.shape == (10, 6) and set(from_data.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.fit(torch.rand(20, 6), RBMTrainConfig(k=0)),
        lambda r: r.fit(torch.rand(20, 6) * 2),
        lambda r: r.fit(torch.rand(20, 5)),
        lambda r: r.pseudo_likelihood(torch.rand(3, 6)),
        lambda r: r.log_likelihood(torch.rand(3, 6), 0.0),  # grey values: -F(v) - log Z of nothing
        lambda r: RBM(6, 0),
        lambda r: RBM(6, 3, visible="poisson"),
        lambda r: rbm_exact.exact_gradient(RBM(30, 3), torch.zeros(2, 30)),
        lambda r: rbm_exact.cd_gradient_expected(r, torch.zeros(2, 6), 0),
        lambda r: rbm_exact.cd_gradient_expected(r, torch.zeros(2, 6), -1),
    ],
)
def test_bad_input(make):
    with pytest.raises(RnnkitError) as e:
        make(RBM(6, 3))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RBM.from_sklearn(object()), "takes a fitted scikit-learn BernoulliRBM .* give one"),
        (lambda: RBM.from_sklearn(BernoulliRBM()), "got BernoulliRBM without them; fit it first"),
        (lambda: RBM(6, 3, dtype=torch.int64), "must be a floating-point torch.dtype .* got torch.int64"),
        (lambda: RBM(6, 3, dtype="float32"), "dtype must be a floating-point torch.dtype"),
        (lambda: BoltzmannMachine(4, 2, dtype=torch.int64), "dtype must be a floating-point torch.dtype"),
        (lambda: Ising(4, [1.0], dtype=torch.int8), "dtype must be a floating-point torch.dtype"),
    ],
)
def test_a_wrong_estimator_or_dtype_is_one_line(make, message):
    # AttributeError: 'object' object has no attribute 'components_'; NotImplementedError: "normal_kernel_cpu"
    # not implemented for 'Long'
    with pytest.raises(RnnkitError, match=message) as e:
        make()
    assert "\n" not in str(e.value)


def test_exact_enumeration_refuses_large_models():
    with pytest.raises(RnnkitError):
        rbm_exact.log_partition(RBM(30, 30))
    assert not rbm_exact.can_enumerate(RBM(30, 30)) and rbm_exact.can_enumerate(RBM(30, 12))
    assert list(itertools.islice(exact.binary_states(2).tolist(), 4)) == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_training_that_diverges_stops_at_once():
    """Gaussian visible units, whose reconstructions grow with W. (Bernoulli units saturate and stay finite in
    both loops: see test_compiled_loop_survives_saturated_units.)"""
    g = torch.Generator().manual_seed(0)
    rbm = RBM(16, 8, "gaussian", generator=g)
    data = (torch.rand(200, 16, generator=g) < 0.3).float()
    epochs = []
    cfg = RBMTrainConfig(epochs=3, lr=1e38)  # the weights overflow float32
    with pytest.raises(
        rbm_train.TrainingDiverged, match="diverged in epoch 1: .* lower learning rate than 1e"
    ):
        rbm.fit(data, cfg, g, lambda epoch, r: epochs.append(epoch))
    assert epochs == []  # no callback saw NaN weights
    assert issubclass(rbm_train.TrainingDiverged, RnnkitError)


@pytest.mark.parametrize(
    "visible, use_kernel", [("bernoulli", True), ("bernoulli", False), ("gaussian", True)]
)
def test_a_learning_rate_beyond_the_models_float_range_is_one_error(visible, use_kernel):
    """lr = 1e39 passed the config's check (a finite Python float) but is inf in float32: the torch loop
    (Gaussian units, or use_kernel=False) failed deep in Tensor.add_ with 'RuntimeError: value cannot be converted
    to type float without overflow', while the compiled loop read it as inf and reported a divergence."""
    rbm = RBM(6, 3, visible)
    with pytest.raises(RnnkitError, match="learning rate 1e\\+39 is beyond the range of torch.float32"):
        rbm.fit(torch.ones(4, 6), RBMTrainConfig(epochs=1, lr=1e39, use_kernel=use_kernel))


@pytest.mark.parametrize("use_kernel", [True, False])
def test_a_rational_lr_momentum_and_weight_decay_train_as_their_floats(use_kernel):
    """RBMTrainConfig's check read lr, momentum and weight_decay as any finite Real and kept them as given: a Fraction
    then failed inside torch's update, "TypeError: add_(): argument 'alpha' must be Number, not Fraction", and an lr
    below float's least, Fraction(1, 10**400), passed as positive and trained at 0.0 (the weights left as drawn).
    Each is now its float (the same run, bit for bit), and an lr that is 0 as a float is one line, as Boltzmann's."""
    from fractions import Fraction

    data = (torch.rand(40, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()

    def trained(**options):
        rbm = RBM(6, 4, generator=torch.Generator().manual_seed(0))
        rbm.fit(data, RBMTrainConfig(epochs=2, batch_size=10, use_kernel=use_kernel, **options),
                torch.Generator().manual_seed(2))  # fmt: skip
        return rbm.W

    want = trained(lr=0.1, momentum=0.5, weight_decay=0.25)
    got = trained(lr=Fraction(1, 10), momentum=Fraction(1, 2), weight_decay=np.longdouble("0.25"))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for tiny in (Fraction(1, 10**400), np.longdouble("1e-400")):
        with pytest.raises(
            RnnkitError, match=r"^learning rate .* is too small: it is 0 as a float; give 1e-300 or more$"
        ):
            trained(lr=tiny)
        with pytest.raises(RnnkitError, match=r"^learning rate .* is too small: it is 0 as a float"):
            BoltzmannMachine(6, 2).fit(data, epochs=1, lr=tiny)


def test_the_default_lr_for_gaussian_visibles_trains_on_all_the_digits():
    from rnnkit.cli import build_parser
    from rnnkit.cli.energy import _digits_split, _standardise, _train_config

    args = build_parser().parse_args(["rbm", "train", "--visible", "gaussian"])
    cfg = _train_config(args, args.visible)  # --lr 0.06 diverged here in the first epoch
    x_train, _, x_test, _ = _digits_split(args)
    x_train, x_test, _, _ = _standardise(x_train, x_test)
    g = torch.Generator().manual_seed(0)
    rbm = RBM(64, 100, "gaussian", generator=g)
    errors = []
    rbm.fit(x_train, cfg, g, lambda epoch, r: errors.append(r.reconstruction_error(x_test)))
    assert len(errors) == 10 and all(math.isfinite(e) for e in errors) and errors[-1] < 0.8 * errors[0]


def test_one_state_is_one_sample_in_every_sampler_and_score():
    # a 1-D state was read as a batch: sample_visible(h (3,)) returned (3, 6)
    rbm, g = RBM(6, 3, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1)
    assert rbm.sample_visible(torch.ones(3), g).shape == (1, 6)
    assert rbm.sample_hidden(torch.ones(6), g).shape == (1, 3)
    assert rbm.gibbs(torch.ones(6), 2, g).shape == (1, 6)
    assert rbm.sample(init=torch.ones(6), steps=2, generator=g)[0].shape == (1, 6)
    assert rbm.free_energy(torch.ones(6)).shape == (1,)


def test_free_energy_takes_what_log_likelihood_takes():
    rbm = RBM(6, 3, generator=torch.Generator().manual_seed(0))
    expected = rbm.free_energy(torch.tensor([[1.0, 0, 1, 0, 1, 0]]))
    for v in ([[1, 0, 1, 0, 1, 0]], np.array([[1, 0, 1, 0, 1, 0]]), torch.tensor([[1, 0, 1, 0, 1, 0]]),
              torch.tensor([[1, 0, 1, 0, 1, 0]], dtype=torch.float64)):  # fmt: skip
        torch.testing.assert_close(rbm.free_energy(v), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.free_energy(torch.ones(2, 5)),
        lambda r: r.free_energy(torch.full((2, 6), 2.0)),
        lambda r: r.free_energy("101010"),
        lambda r: r.sample_visible(torch.ones(2, 4)),
        lambda r: r.sample_visible(torch.full((1, 3), float("nan"))),
        lambda r: r.sample_visible(torch.full((1, 3), 2.0)),
        lambda r: r.sample_hidden(torch.ones(1, 7)),
        lambda r: r.gibbs(torch.ones(1, 5)),
        lambda r: r.gibbs(torch.ones(1, 6), steps=-1),
        lambda r: r.gibbs(torch.ones(1, 6), steps=1.5),
        lambda r: r.log_partition("bogus"),
        lambda r: r.log_partition("Exact"),
        lambda r: r.fit(torch.zeros(10, 6), {"epochs": 1}),
        lambda r: r.fit(torch.zeros(10, 6), RBMTrainConfig(momentum="0.5", epochs=1)),
        lambda r: r.fit(torch.zeros(10, 6), RBMTrainConfig(weight_decay="0", epochs=1)),
    ],
)
def test_bad_states_methods_and_configs_are_one_clear_error(make):
    with pytest.raises(RnnkitError) as e:
        make(RBM(6, 3))
    assert "\n" not in str(e.value)


def test_log_partition_methods():
    rbm = RBM(6, 3, generator=torch.Generator().manual_seed(0))
    exact_log_Z = rbm.log_partition("exact")
    assert rbm.log_partition("auto") == exact_log_Z
    ais_log_Z = rbm.log_partition(
        "ais", num_betas=200, num_chains=20, generator=torch.Generator().manual_seed(0)
    )
    assert ais_log_Z == pytest.approx(exact_log_Z, abs=0.05)


def test_energy_models_follow_torchs_default_dtype():
    """They were float32 whatever the default (as torch.nn's modules are not): float64 data and thresholds
    were cut to float32. A DBN could not be float64 at all."""
    from rnnkit.energy import DBN, BoltzmannMachine, Hopfield, Ising

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert Hopfield(4, thresholds=[0.1] * 4).theta[0].item() == 0.1
        assert RBM(3, 2).W.dtype == BoltzmannMachine(3, 1).W.dtype == torch.float64
        assert Ising(4, [2.0]).spins.dtype == torch.float64
        assert all(r.W.dtype == torch.float64 for r in DBN([4, 3, 2]).rbms)
    finally:
        torch.set_default_dtype(old)
    assert (
        RBM(3, 2).W.dtype == torch.float32
        and DBN([4, 3], dtype=torch.float64).rbms[0].W.dtype == torch.float64
    )


def test_cd_gradient_checks_k_and_the_chain():
    """k=0 was an UnboundLocalError ('ph'), a chain of the wrong width a matmul RuntimeError."""
    rbm = RBM(3, 2)
    with pytest.raises(RnnkitError, match="k \\(Gibbs steps\\) must be an integer >= 1, got 0"):
        rbm_train.cd_gradient(rbm, torch.zeros(2, 3), k=0)
    with pytest.raises(RnnkitError, match="persistent chain .* have 5 units but the model has 2"):
        rbm_train.cd_gradient(rbm, torch.zeros(2, 3), chain=torch.zeros(4, 5))
    (dW, db, dc), chain = rbm_train.cd_gradient(rbm, torch.zeros(2, 3), chain=[0.0, 1.0])  # one chain, a list
    assert dW.shape == (2, 3) and chain.shape == (1, 2)


def test_ais_base_of_one_state_given_as_a_vector_is_that_of_one_row():
    """base_visible_bias smoothed the marginals with len(data): V for a 1-D state, not 1 row."""
    rbm = RBM(5, 3)
    v = torch.tensor([1.0, 0, 0, 1, 1])
    torch.testing.assert_close(ais.base_visible_bias(rbm, v), ais.base_visible_bias(rbm, v[None]))
    torch.testing.assert_close(
        ais.base_visible_bias(rbm, v[None]), torch.log(torch.tensor(2.0)) * (2 * v - 1).double()
    )


def test_num_chains_with_cd_k_is_refused_not_ignored():
    """RBMTrainConfig(persistent=False, num_chains=50) trained CD-k with one chain per row, silently."""
    with pytest.raises(RnnkitError, match="number of chains is for persistent CD"):
        RBM(3, 2).fit(torch.zeros(4, 3), RBMTrainConfig(persistent=False, num_chains=50))
    RBMTrainConfig(persistent=True, num_chains=50).check()


def test_numpy_integer_sizes_and_settings_work_as_python_ints():
    """RBM(np.int64(6), ...) (a size from an array's shape product or a parameter grid) was refused with
    'must be a positive integer, got np.int64(6)', as were numpy epochs, batch size, k and Gibbs steps."""
    data = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]] * 5, dtype=torch.float32)
    config = dict(epochs=2, batch_size=4, k=2)
    expected = RBM(6, 3, generator=torch.Generator().manual_seed(0))
    expected.fit(data, RBMTrainConfig(**config), generator=torch.Generator().manual_seed(1))
    rbm = RBM(np.int64(6), np.int32(3), generator=torch.Generator().manual_seed(0))
    rbm.fit(
        data,
        RBMTrainConfig(**{k: np.int64(v) for k, v in config.items()}),
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(rbm.W, expected.W, rtol=0, atol=0)
    assert rbm.gibbs(data, np.int64(2)).shape == (10, 6)
    assert rbm.sample(np.int64(2), steps=np.int64(3))[0].shape == (2, 6)


@pytest.mark.parametrize("kind", [np.int8, np.uint8, np.int16, np.int32])
def test_narrow_numpy_integer_settings_train_as_python_ints(kind):
    """Settings of a narrow numpy type (np.int16 batch size, np.int8 k) took numpy's arithmetic of that type into
    the noise's chunk size: 'OverflowError: Python integer 4194304 out of bounds for int16', or an int8 product
    that overflowed (a RuntimeWarning, and a wrong chunk)."""
    data = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]] * 5, dtype=torch.float32)
    config = dict(epochs=2, batch_size=4, k=3, num_chains=5)
    expected = RBM(6, 3, generator=torch.Generator().manual_seed(0))
    expected.fit(data, RBMTrainConfig(**config), generator=torch.Generator().manual_seed(1))
    rbm = RBM(6, 3, generator=torch.Generator().manual_seed(0))
    cfg = RBMTrainConfig(**{k: kind(v) for k, v in config.items()})
    rbm.fit(data, cfg, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(rbm.W, expected.W, rtol=0, atol=0)


def test_ais_with_one_chain_is_one_clear_error():
    """num_chains=1 gave torch's 'std(): degrees of freedom is <= 0' warning and a NaN standard error."""
    with pytest.raises(RnnkitError, match="at least 2"):
        ais.log_partition(RBM(4, 2), num_chains=1, num_betas=10)
    with pytest.raises(RnnkitError, match="at least 2"):
        RBM(4, 2).log_partition("ais", num_chains=1)


@pytest.mark.parametrize("name", ["W", "b", "c"])
def test_training_a_model_that_is_already_nan_says_so(name):
    """A NaN parameter before training (a bad state_dict) was reported as 'training diverged in epoch 1 ...
    try a lower learning rate', sending the user after the wrong cause."""
    rbm = RBM(4, 3)
    getattr(rbm, name)[0] = float("nan")
    with pytest.raises(RnnkitError, match="before training") as e:
        rbm.fit(torch.ones(5, 4), RBMTrainConfig(epochs=1))
    assert not isinstance(e.value, rbm_train.TrainingDiverged)


@pytest.mark.parametrize(
    "make", [lambda s: RBM(3, 2, init_scale=s), lambda s: BoltzmannMachine(3, 1, init_scale=s)]
)
@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "0.1", None, True])
def test_a_bad_init_scale_is_one_clear_error(make, scale):
    """init_scale=nan or inf built a model of NaN weights in silence; "0.1" failed deep in torch with
    'only integer tensors of a single element can be converted to an index'."""
    with pytest.raises(RnnkitError, match="init_scale .* must be a finite number"):
        make(scale)


@pytest.mark.parametrize(
    "make", [lambda s: RBM(3, 2, init_scale=s), lambda s: BoltzmannMachine(3, 1, init_scale=s)]
)
@pytest.mark.parametrize("scale", [1e39, -1e300])
def test_an_init_scale_beyond_the_dtypes_range_is_one_clear_error(make, scale):
    """A finite init_scale past float32's range (1e39) passed the check as a Python float and drew weights of
    ±inf in silence: `rbm cd-check --weight-scale 1e300` printed nan for every k and exited 0."""
    with pytest.raises(RnnkitError, match="init_scale .* beyond the range of torch.float32") as e:
        make(scale)
    assert "\n" not in str(e.value)


def test_init_scale_zero_starts_at_zero_weights():
    assert not RBM(3, 2, init_scale=0).W.any() and not BoltzmannMachine(3, 1, init_scale=0.0).W.any()


def test_init_scale_may_be_a_0_d_tensor():
    """As before the check of init_scale: a 0-d tensor is a number (a tensor NaN is still refused)."""
    g = torch.Generator().manual_seed(0)
    a = RBM(3, 2, init_scale=torch.tensor(0.5), generator=g).W
    b = RBM(3, 2, init_scale=0.5, generator=torch.Generator().manual_seed(0)).W
    torch.testing.assert_close(a, b)
    with pytest.raises(RnnkitError, match="must be a finite number"):
        RBM(3, 2, init_scale=torch.tensor(float("nan")))


@pytest.mark.parametrize("switch", ["persistent", "shuffle", "use_kernel"])
@pytest.mark.parametrize("value", ["False", None, 2])
def test_switches_that_are_no_switch_are_refused(switch, value):
    """persistent, shuffle and use_kernel were taken for their truth value: persistent='False' (a config file's
    string) trained PCD-k where CD-k was meant, None CD-k, in silence. Each is one line at check()."""
    with pytest.raises(RnnkitError, match=rf"^{switch} must be True or False, got {value!r}$"):
        RBMTrainConfig(**{switch: value}).check()
    RBMTrainConfig(**{switch: np.bool_(False)}).check()


def test_log_likelihood_takes_log_z_as_one_number():
    """log_likelihood(v, ais.log_partition(rbm)) (the (estimate, standard error) pair whole) failed in Python's
    "unsupported operand type(s) for -: 'float' and 'tuple'", a string likewise, and a 0-d tensor gave a tensor."""
    rbm = RBM(4, 3, dtype=torch.float64)
    v = [[0, 1, 0, 1]]
    expected = rbm.log_likelihood(v, 2.5)
    with pytest.raises(RnnkitError, match=r"log_Z must be a number, got tuple .*pass its \[0\]$"):
        rbm.log_likelihood(v, ais.log_partition(rbm, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(RnnkitError, match="log_Z must be a number, got str '2.5'$"):
        rbm.log_likelihood(v, "2.5")
    got = rbm.log_likelihood(v, torch.tensor(2.5))
    assert type(got) is float and got == expected
    # a 0-d array, as it worked before the check: refused as 'got ndarray'
    assert rbm.log_likelihood(v, np.array(2.5)) == expected
    assert rbm.log_likelihood(v, np.float32(2.5)) == expected


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rbm_is_refused_not_sampled_with_coarse_uniforms(dtype):
    """bfloat16 drew its uniforms in steps of 2^-8: a visible unit of p = σ(-7) = 0.0009 came on at 0.0030; now one
    line, at construction (an RBM, a DBN's) and for one converted afterwards."""
    with pytest.raises(RnnkitError, match=r"samples in float32 or float64.*dtype=torch.float32"):
        RBM(1, 1, dtype=dtype)
    with pytest.raises(RnnkitError, match="samples in float32 or float64"):
        DBN([4, 3, 2], dtype=dtype)
    r = RBM(1, 1).to(dtype)
    with pytest.raises(RnnkitError, match="samples in float32 or float64"):
        r.sample_visible(torch.zeros(5, 1))
    with pytest.raises(RnnkitError, match="samples in float32 or float64"):
        r.sample_hidden(torch.zeros(5, 1))


def _unlikely_units(dtype=torch.float32):
    """An RBM of 4 visible and 3 hidden units, each on with p = σ(-69) = 1e-30 whatever the others do."""
    rbm = RBM(4, 3, init_scale=0, dtype=dtype)
    rbm.b.fill_(-69.0)
    rbm.c.fill_(-69.0)
    return rbm


def _rand_of_zeros(monkeypatch):
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, **kw: torch.zeros(*shape, **kw))


def test_a_uniform_of_zero_switches_no_unlikely_unit_on(monkeypatch):
    """torch.rand returns exactly 0 one draw in 2^24 (float32), and u < p then switched on a unit of any p > 0: one
    of p = 1e-30 came on at a rate of 6e-8, in sample_hidden, sample_visible, gibbs, sample, CD/PCD and AIS."""
    rbm, ones = _unlikely_units(), torch.ones(2, 4)
    _rand_of_zeros(monkeypatch)
    assert not rbm.sample_hidden(ones).any() and not rbm.sample_visible(torch.ones(2, 3)).any()
    assert not rbm.gibbs(ones, 3).any() and not rbm.sample(2, steps=3)[0].any()
    for chain in (None, torch.ones(2, 3)):
        (_, _, dc), h = rbm_train.cd_gradient(rbm, ones, k=2, chain=chain)
        assert not h.any() and torch.equal(dc, torch.ones(4))  # <v>_data - <v>_model
    W, b, c, v = rbm.W.double(), rbm.b.double(), rbm.c.double(), ones.double()
    assert not ais._gibbs_step(v, v @ W.T + b, W, c, False, None).any()


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_a_uniform_of_zero_switches_no_unlikely_unit_on_in_training(monkeypatch, persistent, use_kernel):
    """The same in fit's loops, the torch one and rbm_cd.c, which read the uniforms drawn for them: one step of
    lr 1 moves c by <v>_data - <v>_model = 1 - 0."""
    rbm = _unlikely_units()
    _rand_of_zeros(monkeypatch)
    cfg = RBMTrainConfig(epochs=1, lr=1.0, persistent=persistent, shuffle=False, use_kernel=use_kernel)
    rbm.fit(torch.ones(10, 4), cfg)
    assert torch.equal(rbm.c, torch.full((4,), -68.0))


@pytest.mark.parametrize("seed", [3, np.random.default_rng(0)])
@pytest.mark.parametrize(
    "draw",
    [
        lambda g: RBM(4, 3, generator=g),
        lambda g: RBM(4, 3).sample(2, steps=1, generator=g),
        lambda g: RBM(4, 3).sample_hidden(torch.ones(1, 4), generator=g),
        lambda g: RBM(4, 3).sample_visible(torch.ones(1, 3), generator=g),
        lambda g: RBM(4, 3).gibbs(torch.ones(1, 4), generator=g),
        lambda g: RBM(4, 3).fit(torch.ones(5, 4), RBMTrainConfig(epochs=1), generator=g),
        lambda g: RBM(4, 3).log_partition("ais", num_betas=2, generator=g),
        lambda g: rbm_train.cd_gradient(RBM(4, 3), torch.ones(2, 4), generator=g),
        lambda g: BoltzmannMachine(3, 1, generator=g),
        lambda g: BoltzmannMachine(3, 1).sample(2, 1, generator=g),
        lambda g: BoltzmannMachine(3, 1).fit([[0, 1, 1]], epochs=1, generator=g),
        lambda g: BoltzmannMachine(3, 1).gibbs_sweep(torch.zeros(1, 4), generator=g),
        lambda g: DBN([4, 3], generator=g),
        lambda g: DBN([4, 3]).fit(torch.ones(5, 4), RBMTrainConfig(epochs=1), generator=g),
        lambda g: Ising(4, 2.0, generator=g).run(1, 0),
        lambda g: Hopfield(3).recall([[1, 1, 1]], generator=g),
        lambda g: hop.random_patterns(2, 3, generator=g),
        lambda g: hop.corrupt(torch.ones(2, 3), 0.5, generator=g),
    ],
)
def test_a_seed_given_as_the_generator_is_one_line_with_the_fix(draw, seed):
    # (a seed, or numpy's Generator, failed at the first draw inside torch: "randn() received an invalid combination
    # of arguments", or Ising's only at its first sweep)
    with pytest.raises(RnnkitError, match=r"generator must be a torch.Generator .*manual_seed") as e:
        draw(seed)
    assert "\n" not in str(e.value)


def test_options_that_cannot_act_are_refused_not_dropped():
    """RBM.sample(5, init=x) ran x's rows and dropped the 5; log_partition('exact', num_chains=10) dropped the AIS
    options; onsager_tc(-1) gave T_c = -2.27 (and onsager_magnetisation 0 at every temperature)."""
    from rnnkit.energy import ising

    rbm = RBM(6, 3)
    with pytest.raises(RnnkitError, match=r"num_samples .* or init .*, not both"):
        rbm.sample(5, init=torch.ones(2, 6))
    with pytest.raises(RnnkitError, match=r"log_partition\('exact'\) takes no AIS options, got num_chains"):
        rbm.log_partition("exact", num_chains=10)
    assert rbm.log_partition("exact") == pytest.approx(rbm_exact.log_partition(rbm))
    with pytest.raises(RnnkitError, match=r"ferromagnet's \(J > 0\), got J = -1: .* onsager_tc\(1\)"):
        ising.onsager_tc(-1)
    with pytest.raises(RnnkitError, match="J must be a positive number, got 0"):
        ising.onsager_tc(0)
    assert ising.onsager_tc(2.0) == pytest.approx(2 * ising.onsager_tc())


def test_the_weight_decay_limit_advised_is_below_the_limit():
    """The line refusing lr x weight decay >= 2 (1 + momentum) advises a weight decay below the limit, said to 4
    digits: rounded to the nearest, lr 0.03 said 'below 66.67' (the limit 66.666...), and 66.668, below it, was
    refused by the same line. It is rounded down now: what it says is below is taken."""
    with pytest.raises(RnnkitError, match=r"give a weight decay below 66\.66, or a lower learning rate"):
        RBMTrainConfig(lr=0.03, weight_decay=66.668).check()
    RBMTrainConfig(lr=0.03, weight_decay=66.66).check()
    with pytest.raises(RnnkitError, match=r"below 333\.3, or"):  # (rounded down already: as it was)
        RBMTrainConfig(lr=0.006, weight_decay=1000).check()


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="no process groups here")
def test_a_build_interrupted_in_python_stops_the_compiler_under_its_driver(tmp_path, alive):
    """A KeyboardInterrupt (SIGINT sent to python alone: `kill -INT`, a notebook's interrupt; rnnkit's CLI takes
    SIGTERM so too) during the kernel's compile killed the compiler driver alone, and its compiler proper ran on,
    orphaned (its /tmp/cc*.s left behind). CC here is a driver whose "compiler" (sleep) is its child: it is gone
    within seconds of python. (The traced kernels compile through the same run_compiler.)"""
    import signal
    import subprocess
    import sys
    import time

    pids, cc = tmp_path / "pids", tmp_path / "slowcc"
    # (its pid said a second in: python is in the compile's wait by then, not still starting it)
    cc.write_text(f"#!/bin/sh\nsleep 60 &\nsleep 1\necho $! >> {pids}\nwait\n")
    cc.chmod(0o755)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), CC=str(cc), RNNKIT_NATIVE="1")
    code = "from rnnkit.energy import _rbm_kernel as k\nprint(k.unavailable())"
    p = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not (pids.exists() and pids.read_text().strip()):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGINT)
        assert b"KeyboardInterrupt" in p.communicate(timeout=30)[1]
        pid, deadline = int(pids.read_text().split()[0]), time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the compiler was left running after python was interrupted"
    finally:
        p.kill()
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize(
    "lr, said", [(0.200005, "9.999"), (0.0200003, "99.99"), (200001.0, "9.999e-06"), (0.2, "10")]
)
def test_the_weight_decay_limit_advised_keeps_4_digits_where_it_rounds_to_a_power_of_ten(lr, said):
    """The limit 2 / lr = 9.99975 (lr 0.200005) is 10 to 4 digits, rounded up: the 4th digit of 10.00 taken off said
    'below 9.99', one digit short, where 9.999 (the limit rounded down to 4 digits) is taken as well."""
    with pytest.raises(
        RnnkitError, match=rf"give a weight decay below {re.escape(said)}, or a lower learning rate"
    ):
        RBMTrainConfig(lr=lr, weight_decay=1e6).check()
    if said != "10":
        RBMTrainConfig(lr=lr, weight_decay=float(said)).check()


@pytest.mark.parametrize("persistent, visible", [(False, "bernoulli"), (True, "gaussian")])
def test_a_huge_k_draws_its_gibbs_noise_a_chunk_at_a_time(monkeypatch, persistent, visible):
    """fit drew an update's noise whole, k·Bc·(V+H) numbers: --k 10^5 on 10 rows of the digits held 610 MB more, and
    --k 10^7 could not start, where a Gibbs step needs Bc·(V+H). Past STREAMED_PAST numbers an update's steps draw
    theirs NOISE_PER_CHUNK at a time: the torch loop on the same numbers, and no draw larger."""
    monkeypatch.setattr(rbm_train, "NOISE_PER_CHUNK", 200)  # 4 Gibbs steps of 5 chains, 6 + 4 units
    monkeypatch.setattr(rbm_train, "STREAMED_PAST", 1000, raising=False)
    drawn, uniform = [], rbm_train.uniform

    def watched(shape, **kw):
        drawn.append(math.prod(shape))
        return uniform(shape, **kw)

    monkeypatch.setattr(rbm_train, "uniform", watched)
    g = torch.Generator().manual_seed(5)
    data = (torch.rand(10, 6, generator=g) < 0.5).double()
    ours = RBM(6, 4, visible, init_scale=0.5, generator=g, dtype=torch.float64)
    twin = copy.deepcopy(ours)
    cfg = RBMTrainConfig(epochs=1, batch_size=5, k=41, persistent=persistent, shuffle=False, momentum=0.5)
    ours.fit(data, cfg, torch.Generator().manual_seed(6))
    assert max(drawn) <= 200
    g, state = torch.Generator().manual_seed(6), rbm_train.TrainState.start(twin, 5)
    for xs in data.view(2, 1, 5, 6):  # the same draws, whole, by the torch loop
        u0 = None if persistent else uniform((1, 20), generator=g, dtype=torch.float64)
        u = torch.cat(
            [rbm_train.draw_noise(twin, 1, 0, 5, min(4, 41 - a), True, g)[1][0] for a in range(0, 41, 4)]
        )
        rbm_train.torch_pass(twin, xs, u0, u[None], state, cfg)
    for a, b in zip((ours.W, ours.b, ours.c), (twin.W, twin.b, twin.c)):
        assert torch.equal(a, b)


def test_a_huge_k_gradient_estimate_draws_its_noise_a_chunk_at_a_time(monkeypatch):
    """cd_gradient drew its k Gibbs steps' noise whole too (rnnkit rbm cd-check --ks): the same bound as fit's."""
    monkeypatch.setattr(rbm_train, "NOISE_PER_CHUNK", 200)
    monkeypatch.setattr(rbm_train, "STREAMED_PAST", 1000, raising=False)
    drawn, uniform = [], rbm_train.uniform
    monkeypatch.setattr(
        rbm_train, "uniform", lambda shape, **kw: drawn.append(math.prod(shape)) or uniform(shape, **kw)
    )
    g = torch.Generator().manual_seed(5)
    rbm, v0 = RBM(6, 4, generator=g, dtype=torch.float64), (torch.rand(5, 6, generator=g) < 0.5).double()
    grads, h = rbm_train.cd_gradient(rbm, v0, 41, generator=torch.Generator().manual_seed(6))
    assert max(drawn) <= 200
    g = torch.Generator().manual_seed(6)
    u0 = uniform((20,), generator=g, dtype=torch.float64)
    u = torch.cat(
        [rbm_train.draw_noise(rbm, 1, 0, 5, min(4, 41 - a), True, g)[1][0] for a in range(0, 41, 4)]
    )
    want, chain = rbm_train.cd_gradient_from_noise(rbm, v0, None, u0, u, 41)
    assert all(torch.equal(a, b) for a, b in zip((*grads, h), (*want, chain)))


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_number_past_floats_range_is_refused_in_one_line_by_the_energy_checks(value):
    """A Python int is a Real: RBM(init_scale=10**400) (finite_float), BoltzmannMachine's, and RBMTrainConfig's lr
    raised a bare "OverflowError: int too large to convert to float" from math.isfinite; each says the option."""
    with pytest.raises(RnnkitError, match="must be a finite number"):
        RBM(3, 2, init_scale=value)
    with pytest.raises(RnnkitError, match="init_scale"):
        BoltzmannMachine(3, 1, init_scale=value)
    with pytest.raises(RnnkitError, match="learning rate must be a positive number"):
        RBM(3, 2).fit(torch.tensor([[1.0, 0, 1]]), rbm_train.RBMTrainConfig(epochs=1, lr=value))


def test_a_log_z_past_floats_range_is_refused_in_one_line():
    """log_likelihood(v, log_Z=10**400), a Python int past float's range, failed in float() with a bare
    "OverflowError: int too large to convert to float"; it is one line."""
    rbm = RBM(3, 2)
    for log_Z in (10**400, -(10**400)):
        with pytest.raises(RnnkitError, match="log_Z .* is past float's range"):
            rbm.log_likelihood(torch.tensor([[1.0, 0, 1]]), log_Z=log_Z)


@pytest.mark.parametrize("big", [2**63, np.uint64(2**63), 10**400])
def test_sizes_past_a_64_bit_integer_are_refused_in_one_line_by_the_energy_models(big):
    """Units, chains, rows or temperatures of 2**63 or more failed inside torch with "Overflow when unpacking long
    long" (numpy's uint64 too). A count only looped over is any (recall(max_steps=2**63) stops when stable), and a
    batch size past the data, with num_chains given, is one batch of it all: both still run."""
    data, rbm = torch.randint(0, 2, (6, 4)).float(), RBM(4, 3)
    calls = {
        "number of visible units": lambda: RBM(big, 3), "number of hidden units": lambda: BoltzmannMachine(3, big),
        "number of samples": lambda: rbm.sample(num_samples=big, steps=1), "layer size": lambda: DBN([4, big]),
        "number of chains": lambda: BoltzmannMachine(3).sample(big, 1),
        "batch size": lambda: RBM(4, 3).fit(data, RBMTrainConfig(epochs=1, batch_size=big)),
        "number of AIS chains": lambda: ais.log_partition(rbm, num_chains=big, num_betas=2),
        "number of AIS temperatures": lambda: ais.log_partition(rbm, num_chains=2, num_betas=big),
        "lattice size L": lambda: Ising(big, [2.0]), "number of units N": lambda: Hopfield(big),
        "count (of patterns)": lambda: hop.random_patterns(big, 4),
    }  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(
            RnnkitError, match=re.escape(name) + r" \S+.* is too large \(past a 64-bit integer"
        ):
            call()
    with pytest.raises(RnnkitError, match="number of chains .* is too large"):
        RBM(4, 3).fit(data, RBMTrainConfig(epochs=1, num_chains=big))
    RBM(4, 3).fit(data, RBMTrainConfig(epochs=1, batch_size=big, num_chains=3))  # (runs, as before)
    Hopfield(4).store([[1, -1, 1, -1]]).recall([[1, 1, 1, -1]], max_steps=big)


def _histogram(v: torch.Tensor) -> torch.Tensor:
    return torch.bincount(exact.state_index(v), minlength=2 ** v.shape[1]).double() / len(v)


def test_gibbs_and_sample_draw_the_distribution_of_their_number_of_steps():
    """gibbs(v, s) and sample(init=v, steps=s) draw δ_v Tˢ, sample(n, steps=s) from binary noise (uniform over the
    states) draws uniform Tˢ, T the exact Gibbs transition matrix; sample's visible means are E[v | h] of its last
    hidden sample h, one of the 2^H rows of visible_mean, whose mean over chains is Σ_h P(h | v) E[v | h]."""
    rbm, g, n = model(3, 2, scale=2.0), torch.Generator().manual_seed(0), 100_000
    T, hs, start = (
        rbm_exact.transition_matrix(rbm),
        exact.binary_states(2),
        torch.tensor([[1.0, 0, 1]]).double(),
    )
    from_start, from_noise = _histogram(start), torch.full((8,), 1 / 8, dtype=torch.float64)
    means_of_h = rbm.visible_mean(hs)  # (2^H, V)
    for steps in (1, 2, 3):
        Ts = torch.linalg.matrix_power(T, steps)
        init, means = rbm.sample(init=start.repeat(n, 1), steps=steps, generator=g)
        noise, _ = rbm.sample(n, steps=steps, generator=g)
        for drawn, expected in ((rbm.gibbs(start.repeat(n, 1), steps, g), from_start @ Ts),
                                (init, from_start @ Ts), (noise, from_noise @ Ts)):  # fmt: skip
            assert (_histogram(drawn) - expected).abs().max() < 0.01, (steps, _histogram(drawn), expected)
        assert (means[:, None, :] - means_of_h).abs().amax(-1).amin(1).max() < 1e-12
        if steps == 1:
            ph = rbm.hidden_probs(start)
            p_h = (ph**hs * (1 - ph) ** (1 - hs)).prod(1)  # P(h | start) of each hidden state
            torch.testing.assert_close(means.mean(0), p_h @ means_of_h, rtol=0, atol=0.008)


def test_gaussian_visible_samples_are_their_mean_plus_unit_noise():
    rbm, g = model(4, 3, "gaussian", scale=0.7), torch.Generator().manual_seed(0)
    h = torch.tensor([[1.0, 0, 1]], dtype=torch.float64)
    v = rbm.sample_visible(h.repeat(100_000, 1), g)
    torch.testing.assert_close(v.mean(0), (rbm.c + h @ rbm.W)[0], rtol=0, atol=0.02)
    torch.testing.assert_close(v.var(0), torch.ones(4, dtype=torch.float64), rtol=0, atol=0.03)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_reconstruction_error_is_the_mean_square_of_an_up_down_pass_through_probabilities(visible):
    rbm, g = model(5, 3, visible), torch.Generator().manual_seed(1)
    x = torch.rand(7, 5, generator=g, dtype=torch.float64)
    up = torch.sigmoid(x @ rbm.W.T + rbm.b)
    down = up @ rbm.W + rbm.c
    down = torch.sigmoid(down) if visible == "bernoulli" else down
    assert rbm.reconstruction_error(x) == pytest.approx(((x - down) ** 2).mean().item(), rel=1e-12)


def test_pseudo_likelihood_in_chunks_is_that_of_all_rows_at_once():
    rbm = model(5, 3)  # V H = 15 numbers a row
    v = exact.binary_states(5)[[1, 4, 9, 14, 22, 27, 31]]
    whole = rbm.pseudo_likelihood(v)
    for chunk in (1, 15, 30, 44, 45, 106):
        torch.testing.assert_close(rbm.pseudo_likelihood(v, chunk_elements=chunk), whole, rtol=1e-14, atol=0)


def test_auto_log_partition_enumerates_up_to_20_units_and_is_ais_with_its_options_past_that():
    rbm = model(25, 20, scale=0.1)  # 2^20 hidden states
    assert rbm.log_partition() == rbm_exact.log_partition(rbm)
    rbm = model(21, 21, scale=0.1)
    got = rbm.log_partition(num_chains=2, num_betas=3, generator=torch.Generator().manual_seed(0))
    assert got == ais.log_partition(rbm, 2, 3, generator=torch.Generator().manual_seed(0))[0]


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("path", ["torch", "kernel", "streamed"])
def test_fit_is_cd_k_updates_with_momentum_from_chains_at_h_0_over_every_row(monkeypatch, persistent, path):
    """One epoch of fit, unshuffled, is cd_gradient on each minibatch in turn, the last one short (7 rows in batches
    of 3; 4 rows for CD), each update m <- momentum m + lr (g - weight_decay W), W <- W + m from m = 0, and PCD's
    chains start at h = 0 (as scikit-learn's) and carry each update's last hidden states to the next; on each
    loop: the torch one, the compiled one, and the one that streams a huge k's noise."""
    if path == "kernel" and _rbm_kernel.unavailable() is not None:
        pytest.skip(_rbm_kernel.unavailable())
    if path == "streamed":
        monkeypatch.setattr(rbm_train, "STREAMED_PAST", 0)
    dtype = torch.float32 if path == "kernel" else torch.float64
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(7 if persistent else 4, 6, generator=g) < 0.5).to(dtype)
    ours = RBM(6, 4, init_scale=1.0, generator=g, dtype=dtype)
    ref = copy.deepcopy(ours)
    cfg = RBMTrainConfig(epochs=1, batch_size=3, lr=0.1, k=2, persistent=persistent, momentum=0.5,
                         weight_decay=0.01, shuffle=False, use_kernel=path == "kernel")  # fmt: skip
    ours.fit(data, cfg, torch.Generator().manual_seed(1))
    g, chain = torch.Generator().manual_seed(1), torch.zeros(3, 4, dtype=dtype) if persistent else None
    velocity = [torch.zeros_like(p) for p in (ref.W, ref.b, ref.c)]
    for a in range(0, len(data), 3):
        grads, h = rbm_train.cd_gradient(ref, data[a : a + 3], 2, chain, g)
        for p, grad, m, decay in zip((ref.W, ref.b, ref.c), grads, velocity, (0.01, 0.0, 0.0)):
            m.copy_(0.5 * m + 0.1 * (grad - decay * p))
            p += m
        chain = h if persistent else None
    for a, b in zip((ours.W, ours.b, ours.c), (ref.W, ref.b, ref.c)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_weight_decay_is_refused_exactly_where_the_decay_alone_grows_the_weights():
    """m <- momentum m - lr wd W, W <- W + m multiplies W by the roots z of z² - (1 + momentum - lr wd) z + momentum:
    the config is refused iff the larger |z| is 1 or more (np.roots), lr wd >= 2 (1 + momentum)."""
    for momentum in (0.0, 0.5, 0.9):
        for product in (0.5, 1.9, 2.1, 2.9, 3.1, 3.7, 3.9):
            radius = max(abs(np.roots([1.0, -(1 + momentum - product), momentum])))
            config = RBMTrainConfig(lr=0.5, weight_decay=product / 0.5, momentum=momentum)
            if radius < 1:
                config.check()
            else:
                with pytest.raises(RnnkitError, match="grows the weights without bound"):
                    config.check()


@pytest.mark.parametrize("use_kernel", [True, False])
def test_use_kernel_chooses_the_compiled_loop_or_the_torch_one(monkeypatch, use_kernel):
    ran, cd_pass = [], _rbm_kernel.cd_pass
    monkeypatch.setattr(_rbm_kernel, "cd_pass", lambda *args: ran.append(1) or cd_pass(*args))
    RBM(6, 3).fit(torch.ones(10, 6), RBMTrainConfig(epochs=1, use_kernel=use_kernel))
    assert bool(ran) == (use_kernel and _rbm_kernel.unavailable() is None)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_ais_base_is_the_datas_marginals(visible):
    """c_A: Gaussian units' data means; Bernoulli units' logits log p / (1 - p) of the means smoothed as
    p = (Σ v + 1) / (n + 2)."""
    rbm, data = RBM(4, 3, visible), torch.tensor([[1.0, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
    if visible == "gaussian":
        expected = data.mean(0)
    else:
        p = (data.sum(0) + 1) / (len(data) + 2)
        expected = torch.log(p / (1 - p))
    torch.testing.assert_close(ais.base_visible_bias(rbm, data), expected.double())


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_a_uniform_equal_to_p_leaves_the_unit_off_in_both_loops(monkeypatch, persistent, use_kernel):
    """A unit is on where u < p, strictly (rbm_cd.c's header, the torch loop): with every uniform 0.5 and every
    p = σ(0) = 0.5 (W, b, c = 0) no unit comes on, in the samplers, cd_gradient's chain and fit, where one step of
    lr 1 moves c by <v>_data - <v>_model = 1 - 0."""
    rbm = RBM(4, 3, init_scale=0)
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, **kw: torch.zeros(*shape, **kw) + 0.5)
    cfg = RBMTrainConfig(epochs=1, lr=1.0, persistent=persistent, shuffle=False, use_kernel=use_kernel)
    ones = torch.ones(2, 4)
    assert not rbm.sample_hidden(ones).any() and not rbm.sample_visible(torch.ones(2, 3)).any()
    (_, _, dc), h = rbm_train.cd_gradient(rbm, ones, k=2, chain=torch.ones(2, 3) if persistent else None)
    assert not h.any() and torch.equal(dc, torch.ones(4))
    rbm.fit(torch.ones(10, 4), cfg)
    torch.testing.assert_close(rbm.c, torch.ones(4))  # (rbm_cd.c sums ten rows of 1 × 0.1f: 1 + 1.2e-7)
