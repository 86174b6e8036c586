"""Files written whole or not at all: a temporary file in the same folder, then a rename over the target.

A full disk, a file-size limit or a kill half-way leaves the old file as it was (word2vec's vectors, an n-gram
model, a TF-IDF index, metrics.csv rewritten on resume, figures), never a truncated one that readers then
call malformed. Checkpoints go the same way (rnnkit.train.checkpoint).
"""

import contextlib
import os
import pathlib
import re
import stat
import sys
import tempfile
import time
import zipfile

from rnnkit.errors import RnnkitError

try:  # an advisory lock marks a temporary file a writer holds (_remove_stale); Windows has none: the age alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

STREAM_BYTES = 1 << 30  # the most read from a pipe or a device (/dev/stdin, <(zcat ...)): its size is unknown
NAME_MAX = 255  # bytes of a file's name (Linux, macOS, Windows): a temporary file's name is kept within it
STALE_SECONDS = 60.0  # a temporary file of a target not written to for this long is a write a kill cut short
LOG_EVERY = 30.0  # seconds between a progress bar's lines where stderr is no terminal (a log file, a pipe)
UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(UMASK)


def refuse_empty(path, give: str) -> None:
    """An empty path ('' or spaces: a script's "$VECTORS" unset) is '.' to pathlib, the current folder: a load read
    the word vectors, the TF-IDF index or the run there in silence, and TfidfIndex.save wrote its index into it. One
    line instead, as the command line says it ('RUN is empty; give ...'). `give`: what to give, e.g. 'a word2vec
    file'; a path object is left be (pathlib.Path('') is '.', which was typed as such)."""
    if isinstance(path, str | bytes) and not path.strip():
        raise RnnkitError(f"the path is empty ({path!r}); give {give}")


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kw):
    """open(path, mode) for writing, whose content replaces `path` only once the block ends without error."""
    refuse_empty(path, "a file name")
    path = pathlib.Path(path)
    target = pathlib.Path(os.path.realpath(path))  # through a link, its file: the rename replaced the link
    if target.exists() and not target.is_file() and not target.is_dir():  # (a folder: the rename's own error)
        # a link to /dev/null (or a FIFO): the rename replaced the device itself with a regular file, as root
        raise RnnkitError(f"cannot write {path}: it is {kind_of(target)}; give another path")
    # the name, cut to leave room for mkstemp's '.' + 8 characters + '.tmp': a name of 244 bytes or more (80 CJK
    # characters and '.npz'), which the folder takes, failed with 'File name too long' once the work was done
    name = target.name
    while len(os.fsencode(name)) > NAME_MAX - 13:
        name = name[:-1]
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=name + ".", suffix=".tmp")
    except OSError as e:  # a missing or read-only folder: named by the file asked for, not the temporary one
        e.filename = str(path)
        raise
    # locked until the rename: another write of the target leaves this file be (_remove_stale)
    if fcntl is not None:
        with contextlib.suppress(OSError):  # (a file system without locks: the age alone)
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        try:  # the descriptor stays ours (closefd=False): a mode or option that open() refuses left it open
            with os.fdopen(fd, mode, closefd=False, **kw) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.close(fd)
        try:  # a file replaced keeps its mode (a 0600 run file stays private); mkstemp makes it owner-only
            mode_bits = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:  # a new one: as any other file the user writes
            mode_bits = 0o666 & ~UMASK
        os.chmod(tmp, mode_bits)
        os.replace(tmp, target)
        _sync_folder(target.parent)
        _remove_stale(target.parent, name)
    except OSError as e:
        if e.filename in (None, tmp):  # a failed write names no file, the rename the temporary one
            if e.filename2 is not None:  # (.../v.txt.x1y2z3.tmp -> .../v.txt): one naming the target alone (a
                # filename2 of None is printed, "Is a directory: '.../v.txt' -> None")
                raise type(e)(e.errno, e.strerror, str(path)).with_traceback(e.__traceback__) from None
            e.filename = str(path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_save_path(path, folder: bool = False) -> pathlib.Path:
    """One error, before any work, for a path a library save() can't write: every save creates its file (a TF-IDF
    index its folder) and never the folders above it, as torch.save, numpy.save and gensim's save do (NGramLM.save
    and TfidfIndex.save made them, the other saves failed with a bare FileNotFoundError on a temporary name, and a
    TF-IDF index saved at a file with FileExistsError). `folder`: the path is a folder to write files into."""
    refuse_empty(path, "a folder to save into (`.` for this one)" if folder else "a file name")
    path = pathlib.Path(path)
    target = pathlib.Path(os.path.realpath(path))  # (through a link, where its file goes)
    parent = target.parent
    if not parent.exists():
        raise RnnkitError(
            f"cannot save {path}: the folder {parent} does not exist; create it first (os.makedirs)"
        )
    if not parent.is_dir():
        raise RnnkitError(
            f"cannot save {path}: {parent} is {kind_of(parent)}, not a folder; give a path in a folder"
        )
    if folder and target.exists() and not target.is_dir():
        raise RnnkitError(f"cannot save into {path}: it is {kind_of(target)}, not a folder; give a folder")
    if not folder and target.is_dir():
        raise RnnkitError(f"cannot save {path}: it is a folder; give the path of a file in it")
    where = target if folder and target.is_dir() else parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise RnnkitError(f"cannot save {path}: the folder {where} is not writable; give another path")
    return path


def _sync_folder(folder: pathlib.Path) -> None:
    """fsync the folder after a rename in it: the rename itself is then on disk, not only the file's bytes (a power
    cut after a checkpoint's rename could otherwise bring back the old name's content, or no file where there was
    none). POSIX only; a file system that can't sync a folder (some network ones) is left as it is."""
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(folder: pathlib.Path, name: str) -> None:
    """Remove the temporary files of `name` (NAME.XXXXXXXX.tmp, as mkstemp names them above) not written to for
    STALE_SECONDS: a kill (kill -9, a power cut) during a write left one beside the target, one more a kill, which
    nothing removed. Another file, or one a writer is at work on now (newer, or locked: one that had written nothing
    for a minute, its bytes in Python's buffer, was removed and its rename failed), stays."""
    pattern = re.compile(re.escape(name) + r"\.[a-z0-9_]{8}\.tmp")
    try:
        with os.scandir(folder) as entries:
            stale = [
                e.path for e in entries if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            ]
    except OSError:  # a folder that can't be listed: the write itself is done
        return
    for path in stale:
        try:
            if time.time() - os.lstat(path).st_mtime > STALE_SECONDS:
                _unlink_unless_held(path)
        except OSError:  # gone meanwhile (another writer removed it), or not ours to remove
            pass


def _unlink_unless_held(path: str) -> None:
    """Remove path unless a writer holds its lock (atomic_open's flock; a killed writer's is gone with it). On a file
    system without locks (ENOLCK, EOPNOTSUPP: no writer holds one either) the age alone, as _remove_stale read it."""
    if fcntl is None:
        os.unlink(path)
        return
    # (for writing: NFS's flock is a whole-file fcntl lock, whose LOCK_EX a read-only descriptor can't take: EBADF)
    fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a writer at work on it
            return
        except OSError:  # (no locks here: a kill's file stayed for good, one more a kill)
            pass
        os.unlink(path)
    finally:
        os.close(fd)


def kind_of(path) -> str:
    """What an existing path that is no folder is, for an --out error: 'a file', or what it is where it is no
    regular file (`--out /dev/null` is a device, not a file to save into)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    return "a pipe (FIFO), not a file" if stat.S_ISFIFO(mode) else "a socket, not a file"


def dead_link(out) -> str | None:
    """The line for an --out that is a symbolic link leading to no file (its target missing: a run folder moved
    away; or a loop of links), which mkdir said as 'File exists' of a path `ls` shows no folder at; else None."""
    out = pathlib.Path(out)
    if not out.is_symlink() or out.exists():  # (exists follows the link: False for a loop too)
        return None
    return (f"--out {out} is a symbolic link to {os.readlink(out)}, which leads to no folder (its target is "
            "missing, or the links go round in a loop); remove the link, or give another --out")  # fmt: skip


def write_text(path, text: str) -> None:
    """pathlib.Path.write_text(text) (UTF-8), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_figure(fig, path, **kw) -> None:
    """fig.savefig(path), atomically (the format from path's suffix, as savefig takes it)."""
    path = pathlib.Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kw)


def is_zip(file) -> bool:
    """zipfile.is_zipfile(file) (a path or a binary file), False also where a damaged zip64 end record makes it
    raise (BadZipFile 'zipfiles that span multiple disks are not supported': one flipped byte of a checkpoint)."""
    try:
        return zipfile.is_zipfile(file)
    except zipfile.BadZipFile:
        return False


def read_bytes(path, text: bool = True, most: int | None = None) -> bytes:
    """The bytes of a file a user gave: a regular file whole; a pipe or a device (/dev/stdin, <(zcat ...)) up to
    STREAM_BYTES, and with `text` up to its first NUL byte. /dev/zero, /dev/urandom or an endless pipe were read
    without end, the machine's memory filled ('out of memory ...; choose smaller sizes', or the process killed).
    `most`: the first `most` bytes only (a dry run's start of a corpus)."""
    from rnnkit.errors import RnnkitError

    with open(path, "rb") as f:
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return f.read(most)
        chunks, size = [], 0
        while (most is None or size < most) and (
            chunk := f.read(1 << 20 if most is None else min(1 << 20, most - size))
        ):
            if text and b"\0" in chunk:
                # UTF-16 or UTF-32 text (a pipe of iconv's) is named with the iconv line, as such a file is
                from rnnkit.data.corpus import refuse_wide

                refuse_wide(path, (chunks[0] if chunks else chunk)[:256])
                raise RnnkitError(f"{path} is a pipe or a device that gives binary data (a NUL byte at byte "
                                  f"{size + chunk.index(0):,}); give a text file")  # fmt: skip
            size += len(chunk)
            if size > STREAM_BYTES:
                raise RnnkitError(f"{path} is a pipe or a device that gave more than {STREAM_BYTES:,} bytes "
                                  "without an end (/dev/zero, an endless pipe?); save it to a file first")  # fmt: skip
            chunks.append(chunk)
        return b"".join(chunks)


class _Lines:
    """A progress bar's output as whole lines: tqdm draws the bar again over itself ('\\r', then the bar), which a log
    file (`2> log.txt`, `| tee`) kept as one line of every update run together."""

    def __init__(self, file):
        self.file = file

    def write(self, s):
        s = s.replace("\r", "").rstrip()  # a bar cleared ('\\r' and spaces) or its last '\\n': nothing
        if s:
            self.file.write(s + "\n")

    def flush(self):
        self.file.flush()


# set in a Jupyter kernel and the processes it starts, and in Colab's: a notebook cell's `!rnnkit train ...` reads
# the command's stderr through a pipe and draws '\r' in place, as a terminal does (a pipe only: `!rnnkit train ...
# 2> log.txt` in a cell, or subprocess.run(..., stderr=f) from the kernel, writes a log)
NOTEBOOK_ENV = ("JPY_PARENT_PID", "COLAB_RELEASE_TAG")


def _a_pipe(file) -> bool:
    """Whether `file` writes into a pipe (what a notebook cell reads a command's stderr through)."""
    try:
        return stat.S_ISFIFO(os.fstat(file.fileno()).st_mode)
    except (
        AttributeError,
        ValueError,
        OSError,
    ):  # no fileno (io.StringIO: io.UnsupportedOperation), or closed
        return False


def bar_style(file=None) -> dict:
    """tqdm's options for a progress bar on `file` (stderr): none on a terminal (or a notebook's stream, or the pipe
    a notebook cell reads a command's stderr through, which draw the bar in place too), its live bar; elsewhere (a
    log file, another pipe) a whole line of plain characters at the start, every LOG_EVERY seconds and at the end."""
    file = sys.stderr if file is None else file
    try:
        live = file is None or file.isatty() or type(file).__module__.startswith("ipykernel")
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        live = False
    live = live or (any(os.environ.get(name) for name in NOTEBOOK_ENV) and _a_pipe(file))
    return {} if live else dict(file=_Lines(file), mininterval=LOG_EVERY, maxinterval=LOG_EVERY, ascii=True)


def bar_options(progress: bool = True, live: dict | None = None) -> dict:
    """tqdm's options for one of the library's bars: bar_style's (`live`'s on a terminal), and disabled where
    progress is off or there is no stderr (closed: `2>&-`, pythonw, a service: sys.stderr is None), where the bar's
    first write failed inside tqdm ('NoneType' object has no attribute 'write'). Elsewhere `disable` is left to
    tqdm, whose TQDM_DISABLE=1 then turns every bar off, as it does tqdm's own (disable=False, given, overrode it)."""
    options = dict(bar_style() or live or {})
    if not progress or sys.stderr is None:
        options["disable"] = True
    return options
