"""Test-session set-up shared by every test directory."""

import contextlib
import os
import shutil
import signal
import tempfile
import threading

import pytest

from rnnkit._io import NOTEBOOK_ENV

_plans_dir = None

# A run started in the background by a shell without job control (`make test &`, nohup, a CI script's `cmd &`) has
# SIGINT ignored, which its subprocesses keep through exec: the Ctrl-C tests' commands then ignored the Ctrl-C they
# were sent (8 failures: exit 2 or 0, not 130). A handler of this process's own is reset to the default in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def pipe(tmp_path):
    """pipe(data, times): a named pipe that a thread fills with `data`, `times` times over (a stand-in, bounded,
    for a device such as /dev/zero or an endless pipe), then closes."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")

    def make(data: bytes, times: int):
        path = tmp_path / f"pipe{len(list(tmp_path.glob('pipe*')))}"
        os.mkfifo(path)

        def fill():
            with contextlib.suppress(BrokenPipeError), open(path, "wb", buffering=0) as f:
                for _ in range(times):
                    f.write(data)

        threading.Thread(target=fill, daemon=True).start()
        return path

    return make


@pytest.fixture
def alive():
    """alive(pid): whether process pid runs (a zombie, dead but not yet reaped, does not); Linux's /proc."""

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] != "Z"
        except OSError:
            return False

    return running


@pytest.fixture(autouse=True)
def _no_global_module_hook_left():
    """A test that leaves one of torch's global module hooks (or the with_kwargs flag torch 2.13's handle.remove()
    leaves behind) fails here, at its own teardown: it made every later torch.compile(module) of the session warn
    of global hooks, 7 failures far from their cause under -W error. The hooks are cleared first, so that the tests
    after it run as they would have."""
    yield
    from torch.nn.modules import module

    left = bool(module._has_any_global_hook())
    for hooks in (module._global_backward_pre_hooks, module._global_backward_hooks, module._global_forward_pre_hooks,
                  module._global_forward_hooks, module._global_forward_hooks_always_called,
                  module._global_forward_hooks_with_kwargs):  # fmt: skip
        hooks.clear()
    assert not left, "a global module hook was left registered by this test"


@pytest.fixture(autouse=True)
def _no_thread_count_left():
    """A test that leaves torch's thread count changed (a bench script's main() run in this process sets its own)
    fails here, at its own teardown: every later test of the session ran on that count, and the native engine's tests
    of a split over threads skip on one thread. The count is put back first, for the tests after it."""
    import torch

    threads = torch.get_num_threads()
    yield
    left = torch.get_num_threads()
    if left != threads:
        torch.set_num_threads(threads)
    assert left == threads, f"torch's thread count was left at {left} (was {threads})"


@pytest.fixture(autouse=True)
def _no_warned_once_forgotten():
    """The engine warns once a process (engine._warned, native._plan_warnings): a test that cleared the real set to see
    a warning again (`engine._warned.clear()`) made the rest of the session warn anew what had been said, and hid from
    the tests after it the state a process is in; such a test takes a set of its own with monkeypatch.setattr, and
    fails here, at its own teardown, if it empties the process's. What it held is put back first, for the tests
    after it."""
    import sys

    def sets():
        engine, native = sys.modules.get("rnnkit.engine"), sys.modules.get("rnnkit.engine.native")
        return [(module, name, getattr(module, name), set(getattr(module, name)))
                for module, name in ((engine, "_warned"), (native, "_plan_warnings"))
                if hasattr(module, name)]  # fmt: skip

    before = sets()
    yield
    lost = [f"{module.__name__}.{name}" for module, name, s, items in before
            if not (getattr(module, name) is s and items <= s)]  # fmt: skip
    for module, name, s, items in before:
        setattr(module, name, s)
        s |= items
    assert not lost, f"{lost[0]} lost what it held: this test emptied it (monkeypatch it)"


def pytest_configure(config):
    """The native engine keeps its timed GEMM and rows-or-units choices in a file beside its build, which later
    processes read (rnnkit/engine/native.py). Tests plant choices of their own (a "units" split that is slower on
    some CPUs) and assert what a fresh timing keeps, so they must neither read the user's file, where a choice
    timed by an earlier training run would stand against the one a test plants, nor write theirs into it, where
    every later run would take them. Each test session gets an empty file of its own."""
    global _plans_dir
    _plans_dir = tempfile.mkdtemp(prefix="rnnkit-test-plans-")
    os.environ["RNNKIT_GEMM_PLANS"] = os.path.join(_plans_dir, "gemm_plans.json")
    # run from a notebook's terminal or cell, the tests of bars in a log would see a notebook's live bar (_io.bar_style)
    for name in NOTEBOOK_ENV:
        os.environ.pop(name, None)


def pytest_unconfigure(config):
    if _plans_dir is not None:
        # the loops write new choices at most once a second, the rest at exit (native.keep_plans_soon): into no
        # file, not into this folder removed ("RNNKIT_GEMM_PLANS=... is not in a folder" at the session's exit)
        os.environ["RNNKIT_GEMM_PLANS"] = ""
        shutil.rmtree(_plans_dir, ignore_errors=True)


class _CtrlCAfter:
    """A stdout that takes `n` characters and is then interrupted, as by a Ctrl-C while a sample is printed."""

    def __init__(self, n):
        self.n, self.text = n, ""

    def write(self, s):
        self.text += s
        if len(self.text) >= self.n and not self.text.endswith("\n"):  # (then takes the line's end)
            raise KeyboardInterrupt
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.fixture
def ctrl_c_after():
    """ctrl_c_after(n): a stdout (for monkeypatch) that raises KeyboardInterrupt once n characters came."""
    return _CtrlCAfter
