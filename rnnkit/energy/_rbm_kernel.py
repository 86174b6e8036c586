"""Build and call rbm_cd.c, the compiled CPU loop for contrastive divergence on Bernoulli RBMs.

The C file is compiled once per machine with the system C compiler (`cc`, or $CC) into
$XDG_CACHE_HOME/rnnkit (~/.cache/rnnkit) and loaded with ctypes; no torch headers are involved, so
the build takes about a second. Without a compiler, or with RNNKIT_NATIVE=0 (the switch of the other
compiled loops in rnnkit), `load()` returns None and training runs the torch loop in rbm_train.py,
which is the specification the kernel is tested against.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import torch

from rnnkit import _native_build

SOURCE = pathlib.Path(__file__).with_name("rbm_cd.c")
# Compiled with -ffast-math, linked without: with it the linker adds crtfastmath.o, whose loading turns on
# flush-to-zero for the whole process, torch's arithmetic included (float32 denormals read as 0).
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
LINK = ["-shared"]


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(root) / "rnnkit"


def _cpu_name() -> str:
    try:  # -march=native code must not travel to another CPU through a shared home directory
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        return next((line for line in lines if line.startswith(("model name", "flags"))), "")
    except OSError:
        return platform.processor()


def _build(compiler: str) -> pathlib.Path | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS + LINK + [compiler, _cpu_name()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"rbm_cd-{key}.so"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _native_build.flocked(
        target.with_name(target.name + ".lock")
    ):  # parallel test processes may build at once
        # a library cut short (a full disk) killed the process that loaded it; one that doesn't match the
        # record of its build is built again (see _native_build.record)
        _native_build.remove_damaged("the RBM kernel", str(target))
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built, obj = pathlib.Path(tmp) / target.name, pathlib.Path(tmp) / "rbm_cd.o"
            for command in ([compiler, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
                            [compiler, *LINK, str(obj), "-o", str(built), "-lm"]):  # fmt: skip
                if subprocess.run(command, capture_output=True).returncode != 0:
                    return None
            _native_build.record(str(built))
            os.replace(str(built) + ".sha256", str(target) + ".sha256")
            os.replace(built, target)
    return target


@functools.cache
def load():
    """The ctypes library, or None when this machine cannot build it."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not compiler or not SOURCE.exists() or os.environ.get("RNNKIT_NATIVE", "1") == "0":
        return None
    try:
        path = _build(compiler)
        lib = ctypes.CDLL(str(path)) if path else None
    except OSError:
        return None
    if lib is not None:
        P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        lib.rbm_cd_pass.argtypes = [P] * 11 + [I] * 6 + [F] * 3
        lib.rbm_cd_pass.restype = None
        lib.rbm_cd_work_size.argtypes = [I] * 4
        lib.rbm_cd_work_size.restype = ctypes.c_long
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
