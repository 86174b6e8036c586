"""Build and call rbm_cd.c, the compiled CPU loop for contrastive divergence on Bernoulli RBMs.

The C file is compiled once per machine with the system C compiler (`cc`, or $CC) into
$XDG_CACHE_HOME/rnnkit (~/.cache/rnnkit) and loaded with ctypes; no torch headers are involved, so
the build takes about a second. Without a compiler (warned once), or with RNNKIT_NATIVE=0 (the switch of
the other compiled loops in rnnkit), `load()` returns None and training runs the torch loop in rbm_train.py,
which is the specification the kernel is tested against.
"""

import contextlib
import ctypes
import functools
import glob
import hashlib
import os
import pathlib
import shutil
import tempfile
import warnings

import torch

from rnnkit import _native_build
from rnnkit.errors import user_stacklevel

SOURCE = pathlib.Path(__file__).with_name("rbm_cd.c")
# Compiled with -ffast-math, linked without: with it the linker adds crtfastmath.o, whose loading turns on
# flush-to-zero for the whole process, torch's arithmetic included (float32 denormals read as 0).
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
LINK = ["-shared"]
# the lines of /proc/cpuinfo that tell CPUs apart (x86, then ARM), for the cache key (_cpu_name)
CPUINFO_KEYS = ("model name", "flags", "Features", "CPU implementer", "CPU part")


def _cache_dir() -> pathlib.Path:
    """$XDG_CACHE_HOME/rnnkit, else ~/.cache/rnnkit. A relative XDG_CACHE_HOME is ignored, as the XDG spec says: it
    built the kernel in a folder of that name made in every working directory."""
    root = os.environ.get("XDG_CACHE_HOME", "")
    return (pathlib.Path(root) if os.path.isabs(root) else pathlib.Path.home() / ".cache") / "rnnkit"


def _cpu_name() -> str:
    """The CPU's model name and flags: -march=native code must not travel to another CPU through a shared home
    directory. The first of the two lines alone (the model name) was the key: a VM's CPU shows one ("AMD EPYC")
    for models with and without AVX-512, and a library built on the one (AVX-512 instructions) would kill the
    other's process (SIGILL). An ARM CPU shows neither line: its part and its flags ("Features", SVE or not)."""
    return _native_build.cpu_tag(*CPUINFO_KEYS)


def _build(compiler: str) -> pathlib.Path:
    """The library built with `compiler` (cached); raises OSError or RuntimeError (the compiler's message) when
    it cannot be built."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS + LINK + [compiler, _cpu_name()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"rbm_cd-{key}.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    # parallel test processes may build at once
    lock = target.with_name(target.name + ".lock")
    # a folder in its place (mkdir, a bad copy of the cache) failed "IsADirectoryError ...; install a C compiler"
    if _native_build._folder(lock):
        _native_build._remove_lock(str(lock), "the RBM kernel")
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(_native_build.flocked(lock))
        except OSError as e:
            # a cache we can't write (a shared or read-only one) that holds the kernel as built: load it as it is
            if e.errno in _native_build.UNWRITABLE and _native_build.matches_record(str(target)):
                return target
            raise
        # a library cut short (a full disk) killed the process that loaded it; one that doesn't match the
        # record of its build is built again (see _native_build.record)
        _native_build.remove_damaged("the RBM kernel", str(target))
        # a build cut short (a process killed in it) left its folder, one a kill: every builder holds the lock
        for stale in target.parent.glob(glob.escape(target.name) + ".*.tmp") if held else ():
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=target.name + ".", suffix=".tmp") as tmp:
            built, obj = pathlib.Path(tmp) / target.name, pathlib.Path(tmp) / "rbm_cd.o"
            for command in ([compiler, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
                            [compiler, *LINK, str(obj), "-o", str(built), "-lm"]):  # fmt: skip
                done = _native_build.run_compiler(command, errors="replace")
                if done.returncode != 0:
                    raise RuntimeError(f"Error compiling {SOURCE.name}: {compiler} exited with status "
                                       f"{done.returncode}\n{done.stderr}")  # fmt: skip
            _native_build.record(str(built))
            os.replace(str(built) + ".sha256", str(target) + ".sha256")
            os.replace(built, target)
    return target


@functools.cache
def _built() -> tuple[ctypes.CDLL | None, str | None]:
    """(the library, None), or (None, why not): with $CC (else cc), then gcc where that one fails."""
    if off := _native_build.switched_off():
        return None, off
    try:  # no HOME, and no home in the password database (a container's `docker run -u 1234`)
        _cache_dir()
    except RuntimeError as e:
        why = str(e).rstrip(".")
        return (
            None,
            f"could not build the RBM kernel: {why}; set XDG_CACHE_HOME (or HOME) to a writable folder",
        )
    names = list(dict.fromkeys(c for c in (os.environ.get("CC") or "cc", "gcc")))  # CC=/bin/false: gcc
    failures = []
    for name in names:
        compiler = shutil.which(name)
        if compiler is None:
            failures.append((name, None, f"{name}: not found"))
            continue
        try:
            lib = ctypes.CDLL(str(_build(compiler)))
        except (OSError, RuntimeError) as e:
            failures.append((name, e, _native_build.cause(e)))
            continue
        P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        lib.rbm_cd_pass.argtypes = [P] * 11 + [I] * 6 + [F] * 3
        lib.rbm_cd_pass.restype = None
        lib.rbm_cd_work_size.argtypes = [I] * 4
        lib.rbm_cd_work_size.restype = ctypes.c_long
        return lib, None
    _, e, why = next((f for f in failures if f[1] is not None), failures[0])  # the first that ran says most
    link = _native_build._dangling_link(getattr(e, "filename", None) or str(_cache_dir()))
    if isinstance(e, FileNotFoundError | FileExistsError) and link:  # (a cache on a disk not mounted)
        fix = f"{link} is a link to {os.readlink(link)}, which is not there: create that folder or set XDG_CACHE_HOME to another"
    elif isinstance(e, OSError) and e.errno in _native_build.UNWRITABLE:
        fix = f"set XDG_CACHE_HOME to a writable folder (the kernel is kept in {_cache_dir()})"
    elif "failed to map segment" in why:  # dlopen on a noexec mount
        fix = (f"{_cache_dir()}'s file system can't load libraries (mounted noexec?): set XDG_CACHE_HOME to a "
               "folder on another")  # fmt: skip
    else:
        fix = "install a C compiler (cc or gcc) or set CC to one"
    return None, f"could not build the RBM kernel with {' or '.join(names)}: {why}; {fix}"


def unavailable() -> str | None:
    """Why the kernel can't be used (None: it can), without a warning."""
    return _built()[1]


_warned = False


def load():
    """The ctypes library, or None: switched off (RNNKIT_NATIVE=0), or it can't be built on this machine, which
    a warning says once per process (training then runs the torch loop, a few times slower)."""
    global _warned
    lib, reason = _built()
    if lib is None and not _warned and _native_build.switched_off() is None:
        _warned = True
        warnings.warn(f"rnnkit: {reason}; training runs the torch loop, slower (or set RNNKIT_NATIVE=0 to "
                      "choose it quietly)", RuntimeWarning, stacklevel=user_stacklevel())  # fmt: skip
    return lib


def usable(rbm) -> bool:
    return rbm.visible == "bernoulli" and rbm.W.device.type == "cpu" and rbm.W.dtype == torch.float32


def cd_pass(lib, rbm, xs, u0, u, state, cfg) -> None:
    """The C twin of rbm_train.torch_pass: S updates from minibatches xs (S, B, V), in place."""
    S, B, V = xs.shape
    H, k = rbm.num_hidden, cfg.k
    chain = state.chain if cfg.persistent else xs.new_empty(B, H)
    Bc = chain.shape[0]
    work = torch.empty(lib.rbm_cd_work_size(B, Bc, V, H), dtype=torch.float32)
    tensors = [rbm.W, rbm.b, rbm.c, *state.velocity, xs.contiguous(), u0, u, chain, work]
    assert all(t is None or (t.is_contiguous() and t.dtype == torch.float32) for t in tensors)
    pointers = [None if t is None else t.data_ptr() for t in tensors]
    lib.rbm_cd_pass(*pointers, S, B, Bc, V, H, k, cfg.lr, cfg.momentum, cfg.weight_decay)
