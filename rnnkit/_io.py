"""Files written whole or not at all: a temporary file in the same folder, then a rename over the target.

A full disk, a file-size limit or a kill half-way leaves the old file as it was (word2vec's vectors, an n-gram
model, a TF-IDF index, metrics.csv rewritten on resume, figures), never a truncated one that readers then
call malformed. Checkpoints go the same way (rnnkit.train.checkpoint).
"""

import contextlib
import os
import pathlib
import stat
import tempfile
import zipfile

UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it), then put back
os.umask(UMASK)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kw):
    """open(path, mode) for writing, whose content replaces `path` only once the block ends without error."""
    path = pathlib.Path(path)
    target = pathlib.Path(os.path.realpath(path))  # through a link, its file: the rename replaced the link
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    except OSError as e:  # a missing or read-only folder: named by the file asked for, not the temporary one
        e.filename = str(path)
        raise
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
    except OSError as e:
        if e.filename in (None, tmp):  # a failed write names no file, the rename the temporary one
            e.filename, e.filename2 = str(path), None  # (.../v.txt.x1y2z3.tmp -> .../v.txt)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
