"""Building rnnkit's compiled loops with torch.utils.cpp_extension: the part they all share.

Each loop is compiled on first use and cached in torch's extensions directory, a folder per sources, flags
and torch (build_tag), with the library's checksum beside it: one that no longer matches is built again, and
a cache that can't be written in is loaded from as it is. RNNKIT_NATIVE=0 (or false, off, no) switches every
one of them off; a failed build gives a one-line reason, its cause and its fix, never a traceback, and the
caller falls back to its torch code.
"""

import contextlib
import errno
import hashlib
import logging
import os
import pathlib
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import warnings

import torch

from rnnkit._io import write_text
from rnnkit.errors import RnnkitError


def cpu_fields(*names: str) -> dict[str, str]:
    """The fields of the first processor in /proc/cpuinfo among names ("model name", "cpu family", "flags";
    an ARM CPU's "CPU part", "Features"), those it has; {} where the file can't be read (not Linux)."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        if not line.strip() and fields:
            break  # the first processor's block ends
        name, colon, value = line.partition(":")
        if colon and name.strip() in names:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_tag(*names: str) -> str:
    """The CPU for a cache key: the cpuinfo fields among names, one "name: value" per line, else the
    processor's name (platform.processor())."""
    fields = cpu_fields(*names)
    return "\n".join(f"{n}: {fields[n]}" for n in names if n in fields) or platform.processor()


def vector_flags(name: str, flags: list[str]) -> tuple[str, list[str]]:
    """Add the vector width this CPU has (as torch detects it); the name keeps builds apart."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512":  # 16 floats a vector: the pointwise loops run 1.3-2x faster than with AVX2
        avx512 = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mprefer-vector-width=512"]
        return f"{name}_avx512", [*flags, "-mavx2", "-mfma", *avx512]
    if capability == "AVX2":
        return f"{name}_avx2", [*flags, "-mavx2", "-mfma"]
    return name, list(flags)


def build_tag(flags: list[str], sources) -> str:
    """A hash of what goes into a build, for its folder's name: torch's build cache hashes only the .cpp it is
    given, while headers and flags change too. And where they are: torch's build.ninja names the sources and
    torch's headers and libraries by path, so two checkouts or virtual environments sharing one folder made
    ninja rebuild it, a minute or two, each time the other loaded."""
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    digest = hashlib.sha256("\0".join([*flags, torch.__version__, torch_dir]).encode())
    for source in map(pathlib.Path, sources):
        digest.update(b"\0" + str(source.resolve()).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:10]


@contextlib.contextmanager
def _ninja_on_path():
    """torch's build runs `ninja` found on PATH. The one pip installs with rnnkit (the `ninja` package) sits
    beside the interpreter, which is not on PATH when the virtual environment isn't activated
    (`.venv/bin/python -m rnnkit`, as `make demo` runs): without a system ninja nothing would build. It goes
    first on PATH: after a system ninja (another version) it built only where the environment was not activated,
    and each ninja discarded the other's build log and rebuilt everything. It is there for the build only; the
    caller's PATH is put back after it, whatever the build did to it (torch's load on Windows puts its lib folder
    first on PATH, for good: that stayed where ninja was first already, or not installed)."""
    try:
        import ninja

        bin_dir = ninja.BIN_DIR
    except (ImportError, AttributeError):
        bin_dir = None
    with _first_on_path(bin_dir):
        yield


@contextlib.contextmanager
def _first_on_path(bin_dir: str | None):
    """bin_dir first on PATH (once) for the block (None: PATH as it is); the caller's PATH put back after it,
    whatever the block did to it."""
    path = os.environ.get("PATH")
    entries = path.split(os.pathsep) if path else []
    try:
        if bin_dir is not None and entries[:1] != [bin_dir]:
            os.environ["PATH"] = os.pathsep.join([bin_dir, *(e for e in entries if e != bin_dir)])
        yield
    finally:
        if path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = path


# What torch's build runs as `ninja` on Linux (see _ninja_guard): argv is this process's pid, the real ninja and
# ninja's own arguments.
_GUARD = """import ctypes, os, signal, sys
parent, ninja, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
prctl = ctypes.CDLL(None, use_errno=True).prctl
def tie(to):  # SIGTERM to us when `to`, our parent, dies (PR_SET_PDEATHSIG); gone already: stop
    prctl(1, signal.SIGTERM)
    if os.getppid() != to:
        os._exit(143)
tie(parent)
child = None
def forward(signum, frame):
    if child is not None:
        os.kill(child, signum)
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, forward)
me = os.getpid()
child = os.fork()
if child == 0:
    tie(me)
    os.execv(ninja, [ninja, *args])
while True:
    _, status = os.waitpid(child, 0)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        break
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@contextlib.contextmanager
def _ninja_guard(folder: str):
    """torch's build runs ninja as its child, and each compile as ninja's (in a process group of its own). Stopped
    by a KeyboardInterrupt (a Ctrl-C sent to python alone: `kill -INT`, a notebook's interrupt; rnnkit's CLI takes
    SIGTERM so too), torch's subprocess.run killed ninja with SIGKILL, which can't stop its compiles: they ran on,
    orphaned, for a minute or two; and a python killed outright (SIGTERM without a handler, SIGKILL) left ninja
    itself to finish the build, beside the next process's. On Linux the `ninja` torch runs is a guard (a few lines
    of python, in the build's folder) between them: the guard gets SIGTERM when this process dies, ninja gets it
    when the guard dies, and ninja stops its compiles on SIGTERM (and removes what they had half-written).
    Elsewhere, or with no ninja on PATH (torch says so), the build is as it was."""
    real = shutil.which("ninja")
    if not sys.platform.startswith("linux") or real is None:
        yield
        return
    bin_dir = os.path.join(folder, "rnnkit-ninja")
    os.makedirs(bin_dir, exist_ok=True)
    guard, script, q = os.path.join(bin_dir, "guard.py"), os.path.join(bin_dir, "ninja"), shlex.quote
    line = f'#!/bin/sh\nexec {q(sys.executable)} -I -S {q(guard)} {os.getpid()} {q(real)} "$@"\n'
    for file, text in ((guard, _GUARD), (script, line)):
        with contextlib.suppress(OSError), open(file, encoding="utf-8") as f:
            if f.read() == text:
                continue
        write_text(file, text)
    os.chmod(script, 0o755)
    with _first_on_path(bin_dir):
        yield


def run_compiler(command: list[str], **kw) -> subprocess.CompletedProcess:
    """subprocess.run(command, capture_output=True, text=True, **kw) for a compile that rnnkit runs itself (the
    traced kernels, the RBM kernel), in a process group of its own that is stopped whole (SIGTERM, whereon gcc's
    driver removes its temporary files) where this process is interrupted meanwhile: subprocess.run killed the
    driver alone (SIGKILL), and its compiler proper (cc1plus, cc1) ran on, orphaned, its /tmp/cc*.s left behind."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kw) as p:  # fmt: skip
        try:
            out, err = p.communicate()
        except BaseException:
            if not hasattr(os, "killpg"):  # (Windows: no process groups)
                p.kill()
                raise
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, None)):
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(wait)
                    break
            raise
    return subprocess.CompletedProcess(command, p.returncode, out, err)


def built_path(name: str) -> str:
    """Where torch's build puts extension `name`: `name`.so in its folder of the extensions directory."""
    from torch.utils import cpp_extension

    return os.path.join(cpp_extension._get_build_directory(name, False), f"{name}.so")


# A library whose file was cut short (a full disk, a copy of the cache that stopped half-way) still looks up to
# date to ninja, and loading it killed every later process with a bus error (a 0-byte one failed to load in
# every process). So each build of ours records the library's checksum beside it, and a library that does not
# match its record (or has none) is removed before the build, which then makes it again.
def _fingerprint(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    return f"sha256 {hashlib.sha256(data).hexdigest()} size {len(data)}"


def record(path: str) -> None:
    """Write the checksum of the library at `path` beside it (atomically: a reader sees the old or the new)."""
    write_text(path + ".sha256", _fingerprint(path) + "\n")


def matches_record(path: str) -> bool:
    """Whether the library at `path` is there and is what our build recorded (a sha256 of 1-2 MB: ~1 ms)."""
    try:
        with open(path + ".sha256", encoding="utf-8") as f:
            return f.read().strip() == _fingerprint(path)
    except (OSError, ValueError):
        return False


def remove_damaged(what: str, path: str) -> bool:
    """Remove the library at `path` if it is there but not as built (see above), saying so; whether it did."""
    sha = path + ".sha256"
    if not os.path.exists(path) and os.path.isdir(sha) and not os.path.islink(sha):
        shutil.rmtree(sha)  # (a folder where the build's record goes: the build failed writing it)
    if not os.path.exists(path) or matches_record(path):
        return False
    print(f"rnnkit: {path} does not match the record of its build (damaged, or built by an older rnnkit); "
          f"removed it, building {what} again", file=sys.stderr)  # fmt: skip
    for stale in (path, path + ".sha256"):
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(stale) and not os.path.islink(stale):  # a folder in its place (mkdir X.so)
                shutil.rmtree(stale)
            else:
                os.unlink(stale)
    return True


STALE_LOCK_S = 600  # a build takes a minute or two; a lock older than this was left by a killed one


def _wait_for_lock(what: str, name: str):
    """torch's build holds a `lock` file in the extension's folder while it builds (or loads), and any other
    process waits for it to go, forever: a build killed half-way leaves it behind. Wait here instead, saying
    so, while it is recent; remove it once it is older than any build takes."""
    import time

    from torch.utils import cpp_extension

    lock = os.path.join(cpp_extension._get_build_directory(name, False), "lock")
    said = False
    while True:
        try:
            age = time.time() - os.path.getmtime(lock)
        except OSError:
            return  # no lock (or gone meanwhile)
        if _folder(lock):  # no builder's: removed at once
            _remove_lock(lock, what)
            return
        if age > STALE_LOCK_S:
            print(f"rnnkit: removing {lock}, left {age / 60:.0f} min ago by a build that was stopped",
                  file=sys.stderr)  # fmt: skip
            with contextlib.suppress(OSError):  # (Windows: a live builder's, still open, can't be removed)
                os.unlink(lock)
            return
        if not said:
            print(f"rnnkit: waiting for another process building {what} (lock {lock}; it is removed after "
                  f"{STALE_LOCK_S // 60} min)", file=sys.stderr)  # fmt: skip
            said = True
        time.sleep(0.5)


def _folder(path: str) -> bool:
    """Whether `path` is a folder itself, not a link to one (a link is removed as a file is)."""
    return os.path.isdir(path) and not os.path.islink(path)


def _remove_lock(lock: str, what: str | None = None):
    """Remove torch's `lock` left behind, or a folder in place of a lock file (mkdir lock, a bad copy of the cache):
    torch never makes one, but its FileBaton waits for it while it exists, forever, and rnnkit's own flock can't
    open one (`what`: say so). One that can't be removed (another user's, in a shared cache) fails the build, its
    error naming it, instead of that wait."""
    try:
        if _folder(lock):
            print(f"rnnkit: removing the folder {lock}, in the place of a lock file of {what}'s build",
                  file=sys.stderr)  # fmt: skip
            shutil.rmtree(lock)
        else:
            os.unlink(lock)
    except FileNotFoundError:  # gone meanwhile
        pass


# The lock files this process holds open. A child forked meanwhile (by another thread) has a copy of each, which
# keeps the flock held for as long as the child lives, so its own build or load waited for itself forever: the
# child closes its copies at once.
_held_files: set = set()


def _close_held_files():
    for f in list(_held_files):
        with contextlib.suppress(OSError):
            f.close()
    _held_files.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_files)


@contextlib.contextmanager
def flocked(path, waiting: str | None = None):
    """An exclusive flock on `path` (made if missing) while the block runs: the system lets it go when its process
    dies, however it dies. `waiting`: a line to print when another process holds it. Gives whether it holds one:
    no lock without fcntl, nor on a file system that refuses flock (some NFS and Lustre mounts: ENOLCK)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(path, "a") as f:
        _held_files.add(f)
        try:
            held = True
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # another process holds it
                    if waiting:
                        print(waiting, file=sys.stderr)
                    fcntl.flock(f, fcntl.LOCK_EX)
                else:  # a file system that refuses flock (some NFS and Lustre mounts)
                    held = False
            yield held  # the lock goes with the file
        finally:
            _held_files.discard(f)


@contextlib.contextmanager
def _build_lock(what: str, name: str):
    """Hold rnnkit's own lock on the extension's folder while torch builds or loads it: an flock, which the
    system lets go when its process dies, however it dies. Whoever holds it knows that torch's `lock` file, if
    there is one, is left over from a process killed inside torch's build or load (every live one holds this
    lock too), and removes it at once instead of waiting STALE_LOCK_S for it. Without fcntl (Windows), or on a
    file system without flock: the wait by the lock file's age."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        _wait_for_lock(what, name)
        yield
        return
    from torch.utils import cpp_extension

    folder = cpp_extension._get_build_directory(name, False)
    os.makedirs(folder, exist_ok=True)
    if _folder(own := os.path.join(folder, "rnnkit.lock")):  # (the build failed "IsADirectoryError ...")
        _remove_lock(own, what)
    with flocked(
        own,
        f"rnnkit: waiting for another process building or loading {what}...",
    ) as held:
        left = os.path.join(folder, "lock")
        if not held:
            _wait_for_lock(what, name)
        elif _folder(left):
            _remove_lock(left, what)
        elif os.path.lexists(left):
            print(f"rnnkit: removing {left}, left by a process stopped while building or loading {what}",
                  file=sys.stderr)  # fmt: skip
            _remove_lock(left)
        yield


def switch(name: str) -> bool:
    """An on/off environment variable (on when unset): only an exact '0' was off, so RNNKIT_NATIVE=false or off
    left the loops on, silently. Off: 0, false, off, no; on: 1, true, on, yes or empty (any case, spaces around
    ignored); anything else is a one-line error."""
    value = os.environ.get(name, "1")
    word = value.strip().lower()
    if word in ("0", "false", "off", "no"):
        return False
    if word in ("1", "true", "on", "yes", ""):
        return True
    raise RnnkitError(
        f"{name}={value!r} is neither on nor off; set 1, true, on or yes, or 0, false, off or no"
    )


def switched_off() -> str | None:
    """The reason when RNNKIT_NATIVE switches the compiled loops off, else None."""
    return (
        None
        if switch("RNNKIT_NATIVE")
        else f"switched off by RNNKIT_NATIVE={os.environ['RNNKIT_NATIVE'].strip()}"
    )


UNWRITABLE = (
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EEXIST,
)  # a cache we can't write in


def homeless(cache: str = "TORCH_EXTENSIONS_DIR") -> str | None:
    """Why torch's extensions directory can't be found (None: it can). Its default is ~/.cache/torch_extensions
    (or $XDG_CACHE_HOME's), and where there is no home (HOME unset, a user without one in the password database:
    a container's `docker run -u 1234`) torch took '~' literally, and built in a folder '~' it made in the working
    directory. A relative $XDG_CACHE_HOME did the same, and so did a TORCH_EXTENSIONS_DIR set empty (`export
    TORCH_EXTENSIONS_DIR=`), which torch takes as the working directory, or one starting with a '~' no shell
    expanded."""
    from torch import _appdirs

    given = os.environ.get(cache)
    if given is not None and not given.strip():
        return (f"{cache} is set but empty, which torch takes as the working directory (a build in every folder "
                f"run from); unset it or set it to a writable folder")  # fmt: skip
    if given and given.strip().startswith("~"):
        return (f"{cache}={given!r} starts with '~', which nothing expanded (a shell does; a docker ENV, a systemd "
                "unit or a .env file doesn't), so torch would build in a folder '~' of the working directory (a "
                "build in every folder run from); set it to the full path of a writable folder")  # fmt: skip
    if given:
        return None
    root = _appdirs.user_cache_dir(appname="torch_extensions")
    if os.path.isabs(root):
        return None
    return (f"torch's extensions directory would be {root!r} in the working directory (no home folder: HOME is "
            f"unset and the password database has none for this user; or a relative XDG_CACHE_HOME); set {cache} "
            "(or HOME) to a writable folder")  # fmt: skip


def _import(name: str, path: str):
    """The extension module in the library at `path`, as torch's load imports it after its build."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(what: str, name: str, compile_fn) -> tuple[object, str | None]:
    """(module, None) from `compile_fn()`, which builds extension `name`, or (None, reason) when switched off or
    it cannot build; the reason names the cause and the fix. A first build takes a minute: it says so."""
    if off := switched_off():
        return None, off
    if nowhere := homeless():
        return None, f"could not build {what}: {nowhere}"
    folder, damaged = None, False
    try:
        path = built_path(name)
        folder = os.path.dirname(path)
        # built as recorded (its name hashes sources, flags and torch): nothing to build. Loaded without the lock:
        # processes starting together (DDP ranks) each waited for the others' loads, saying so; one that doesn't
        # load is built again under it
        if matches_record(path):
            with contextlib.suppress(ImportError, OSError):
                return _import(name, path), None
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_build_lock(what, name))
            except OSError as e:
                if e.errno not in UNWRITABLE or not matches_record(path):
                    raise
                # a cache we can't write (a shared or read-only one) that holds the library as built: load it as
                # it is (torch's load would run ninja in the folder, under a lock file it makes there)
                return _import(name, path), None
            damaged = remove_damaged(what, path)  # (says so itself)
            before = _stat(path)
            if before is None and not damaged and _compiler_found():  # (none: the build fails at once)
                print(
                    f"rnnkit: compiling {what} once (about a minute; cached for later runs)...",
                    file=sys.stderr,
                )
            # the build's own warnings are not the user's business
            with warnings.catch_warnings(), _ninja_on_path(), _ninja_guard(folder), _torch_logs_off():
                warnings.simplefilter("ignore")
                module = compile_fn()
            if os.path.exists(path) and (before is None or _stat(path) != before):  # built (again) just now
                record(path)
            return module, None
    except Exception as e:  # no compiler, no ninja, unsupported platform, an unwritable cache, ...
        return None, failure(what, e, folder, damaged)


def _cxx_command() -> list[str] | None:
    """The command the shell runs for $CXX (else c++) in torch's compile line (None: none, a quote left open).
    torch quotes CXX there (shlex.join), so it is one program's name: CXX='env FOO=1 g++' or 'g++ -w' names none,
    "/opt/my tools/g++" is that path; a torch that wrote it as it is left its words to the shell."""
    from torch.utils import cpp_extension

    cxx = cpp_extension.get_cxx_compiler()
    quote = getattr(cpp_extension, "_shell_join", None)
    try:
        return shlex.split(quote([cxx]) if quote is not None and os.name != "nt" else cxx)
    except ValueError:
        return None


def cxx_line_fix() -> str | None:
    """The fix where CXX is a command line (a compiler and its arguments, VAR=value first) that torch's build runs as
    one program's name (see _cxx_command), else None. rnnkit's traced kernels run CXX so too."""
    cxx = os.environ.get("CXX", "").strip()
    words = (
        cxx.split()
    )  # a command line, run as one name ("/opt/my tools/g++" that isn't there names no compiler)
    line = len(words) > 1 and ("=" in words[0] or shutil.which(words[0].strip("'\"")) is not None)
    if line and _cxx_command() == [os.environ["CXX"]]:
        return (f"torch's build runs CXX={cxx!r} as one program's name (not as a command line: no arguments, no "
                "VAR=value); set CXX to the compiler alone, its name or path")  # fmt: skip
    return None


def _compiler_found() -> bool:
    """Whether the compiler torch's build runs ($CXX, else c++) is there to run: without it the build fails at
    once, and 'compiling ... (about a minute)' said before the failure promised a build that never starts."""
    command = _cxx_command()
    return bool(command) and shutil.which(command[0]) is not None


@contextlib.contextmanager
def _torch_logs_off():
    """torch logs a block of a dozen lines when it can't find the compiler or doesn't know it ("Your compiler
    (c++) is not compatible ..."); a failed build says why in one line of ours, a good one needs nothing."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def cause(e: BaseException) -> str:
    """The line that says why a build failed: torch's error starts with the first command ninja ran ("Error
    building extension 'x': [1/2] c++ -MMD ..."), the reason comes lines later ("c++: not found", "error: ...");
    any other error is its type and first line."""
    text = str(e)
    if text.startswith("Error building extension") or text.startswith("Error compiling"):
        lines = [line.strip() for line in text.split(": ", 1)[-1].splitlines() if line.strip()]
        for keys in (("not found", "error:", "No such file", "Permission denied"), ("Error", "ERROR")):
            hit = next((line for line in lines if any(k in line for k in keys)), None)
            if hit is not None:
                return hit[:300]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first}"[:300]


def fix(e: BaseException, why: str, folder: str | None, damaged: bool = False,
        cache: str = "TORCH_EXTENSIONS_DIR") -> str:  # fmt: skip
    """What the user can do about the failure `e` (whose cause is `why`)."""
    if isinstance(e, FileNotFoundError | FileExistsError) and (link := _dangling_link(e.filename or folder)):
        return (f"{link} is a link to {os.readlink(link)}, which is not there: create that folder or set {cache} to "
                "another")  # fmt: skip
    if isinstance(e, OSError) and e.errno in UNWRITABLE or "Read-only file system" in why:
        return f"set {cache} to a writable folder"
    if "failed to map segment" in why:  # dlopen on a noexec mount: built afresh, it fails again
        return f"its folder's file system can't load libraries (mounted noexec?): set {cache} to a folder on another"
    torch_lib = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "lib")
    if "cannot find" in why and any(c.isspace() for c in torch_lib):  # torch's build quotes -I, not its -L
        return (
            f"torch's build can't link against {torch_lib!r}, whose path has a space: install torch (its "
            "virtual environment) in a folder whose path has none"
        )
    cxx = os.environ.get("CXX", "").strip()
    missing = "not found" in why or "No such file" in why
    if missing and cxx in why and (line := cxx_line_fix()):
        return line
    if cxx and missing and cxx.split()[0] in why:  # the user's own CXX
        return f"CXX={cxx!r} names no compiler here: unset CXX, or set it to a g++ (or clang++) on PATH"
    if "not found" in why or "Ninja is required" in why or "No such file or directory: 'ninja'" in why:
        return "install a C++ compiler (g++) and ninja (pip install ninja)"
    if folder is not None and (damaged or isinstance(e, ImportError)):
        return f"delete {folder} to build it afresh"
    if "error:" in why:
        return "set CXX to a recent g++ (or clang++) that compiles it"
    return "install a C++ compiler (g++) and ninja (pip install ninja)"


def _dangling_link(path) -> str | None:
    """The link on the way to `path` that points to nothing (a cache on a disk not mounted, a folder removed), or
    None: the build's folder can't be made through it, FileNotFoundError ('install a C++ compiler' was said), or
    is that link, FileExistsError ('set TORCH_EXTENSIONS_DIR to a writable folder', which it was)."""
    if not isinstance(path, str):
        return None
    path = os.path.abspath(path)
    while path != os.path.dirname(path):
        if os.path.islink(path) and not os.path.exists(path):
            return path
        path = os.path.dirname(path)
    return None


def failure(what: str, e: BaseException, folder: str | None, damaged: bool = False, **kw) -> str:
    """The one-line reason a build failed: its cause and its fix."""
    why = cause(e)
    return f"could not build {what}: {why}; {fix(e, why, folder, damaged, **kw)}"


def _stat(path: str):
    """What changes when ninja writes the file again (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino
