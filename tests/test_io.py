import errno
import io
import os
import stat
import subprocess
import sys
import time

import pytest

from rnnkit import _io
from rnnkit._io import LOG_EVERY, NOTEBOOK_ENV, UMASK, atomic_open, bar_style, write_text
from rnnkit.errors import RnnkitError


def test_a_replaced_file_keeps_its_mode_and_a_new_one_takes_the_umask(tmp_path):
    """A rewrite (a temporary file renamed over the target) gave the file the umask's mode: a run file the user
    had made private (0600) or read-only became 0644."""
    private = tmp_path / "config.json"
    write_text(private, "old\n")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o666 & ~UMASK
    os.chmod(private, 0o600)
    write_text(private, "new\n")
    assert private.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_a_rename_is_synced_to_disk_with_its_folder(tmp_path, monkeypatch):
    """The file's bytes were fsynced before the rename, but not the folder after it: a power cut could bring the old
    checkpoint back under its name (or no file). The folder is fsynced after the rename, and a folder that can't
    be synced (a network file system's EINVAL) writes the file all the same."""
    synced, fsync = [], os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_text(tmp_path / "latest.txt", "new\n")
    assert synced == [False, True] and (tmp_path / "latest.txt").read_text() == "new\n"

    def refused(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", refused)
    write_text(tmp_path / "latest.txt", "newer\n")
    assert (tmp_path / "latest.txt").read_text() == "newer\n"


@pytest.mark.parametrize("mode, kw", [("q", {}), ("wb", {"encoding": "utf-8"}), ("w", {"newline": "?"})])
def test_a_file_that_fdopen_refuses_leaks_no_file_descriptor(tmp_path, mode, kw):
    """os.fdopen raising before it took the descriptor (a mode that is none, an encoding for bytes) left mkstemp's descriptor open: one
    leaked per call, until 'Too many open files'."""
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "f.txt", mode, **kw):
            pass
    assert sorted(os.listdir("/proc/self/fd")) == before and list(tmp_path.iterdir()) == []


def test_a_progress_bar_in_a_log_is_a_line_every_log_every_seconds(monkeypatch):
    """A bar on a stderr that is no terminal (`2> log.txt`, `| tee`) wrote each update as '\\r' and the bar again,
    twice a second: the log held them all run together on one line, with the bar's block characters. There it is
    a whole line of plain characters at the start, every LOG_EVERY seconds and at the end; a terminal keeps its
    live bar."""
    import tqdm as tqdm_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert bar_style(Terminal()) == {}
    clock = iter(range(10**6))  # each reading of tqdm's clock a second later
    monkeypatch.setattr(tqdm_module.std, "time", lambda: float(next(clock)))
    monkeypatch.setattr(tqdm_module.tqdm, "monitor_interval", 0)
    log = io.StringIO()
    with tqdm_module.tqdm(total=200, desc="steps", **bar_style(log)) as bar:
        for _ in range(200):
            bar.update(1)
    lines = log.getvalue().split("\n")
    assert (
        "\r" not in log.getvalue()
        and lines[-1] == ""
        and lines[-2].startswith("steps: 100%|##########| 200/200")
    )
    assert (
        lines[0].startswith("steps:   0%|") and 3 <= len(lines) - 3 <= 200 / LOG_EVERY + 1
    )  # start, ..., end


def test_a_command_a_notebook_cell_runs_keeps_its_live_bar(monkeypatch, tmp_path):
    """`!rnnkit train ...` in a Jupyter or Colab cell: stderr is a pipe the notebook reads, and draws '\r' in place
    as a terminal does. The bar there was a line every LOG_EVERY seconds, as in a log file; it is the live bar.
    A log file the same cell writes (`!rnnkit train ... 2> log.txt`, subprocess.run(..., stderr=f) from the kernel)
    keeps its lines: it got the live bar, '\r' and a redraw every 0.1 s, into the file."""
    r, w = os.pipe()
    with open(r, "rb"), open(w, "w") as pipe, open(tmp_path / "log.txt", "w") as log:
        assert bar_style(pipe) != {} and bar_style(log) != {}
        for name in NOTEBOOK_ENV:
            monkeypatch.setenv(name, "1")
            assert bar_style(pipe) == {}
            assert bar_style(log) != {} and bar_style(io.StringIO()) != {}
            monkeypatch.delenv(name)


def test_tqdm_disable_turns_the_bars_off():
    """TQDM_DISABLE=1, tqdm's own switch for every bar (read when tqdm is imported), left rnnkit's on: bar_options
    gave disable=False, which overrides it. It is left to tqdm now; progress=False still turns a bar off."""
    code = (
        "from tqdm import tqdm\n"
        "from rnnkit._io import bar_options\n"
        "for options in (bar_options(), bar_options(live={'ncols': 60}), bar_options(progress=False)):\n"
        "    with tqdm(total=2, desc='bar', **options) as bar:\n"
        "        bar.update(2)\n"
    )
    said = []
    for env in ({"TQDM_DISABLE": "1"}, {}):
        env = {**{k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}, **env}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr[-2000:]
        said.append(out.stderr.count("bar: 100%"))
    assert said == [0, 2]


@pytest.mark.parametrize("model", ["ngram", "tfidf", "word2vec"])
def test_the_library_s_progress_bars_run_without_stderr(model, monkeypatch):
    """Through the Python API (pythonw, a service: sys.stderr is None; the CLI puts the null device there),
    NGramLM, TfidfIndex and Word2Vec fit(progress=True) failed in their bar's first write, inside tqdm ('NoneType'
    object has no attribute 'write'); every bar is drawn by _io.bar_options, left out where there is no stderr."""
    from rnnkit.text import NGramLM, TfidfIndex, Word2Vec

    monkeypatch.setattr("sys.stderr", None)
    if model == "ngram":
        assert NGramLM(n=2).fit("hello world\nhello there\n", progress=True).n == 2
    elif model == "tfidf":
        TfidfIndex().fit(["a cat sat", "a dog ran"], progress=True)
    else:
        w2v = Word2Vec(dimension=4, epochs=1, min_count=1, sample=0, backend="torch")
        assert len(w2v.fit([["a", "cat", "sat"], ["a", "dog", "ran"]] * 4, progress=True).wv.words) == 5


@pytest.mark.parametrize("name", ["模" * 80 + ".npz", "b" * 251 + ".txt"], ids=["cjk", "ascii"])
def test_a_file_of_a_long_name_the_folder_takes_is_written(tmp_path, name):
    """The temporary file's name (the target's, '.', 8 characters, '.tmp') went past the 255 bytes a name may have:
    a name of 244 bytes or more, which the folder takes, failed with 'File name too long' once the work was done."""
    write_text(tmp_path / name, "text\n")
    assert (tmp_path / name).read_text() == "text\n" and os.listdir(tmp_path) == [name]


def test_a_write_removes_the_stale_temporary_files_of_its_target_only(tmp_path):
    """A kill during a write (kill -9, the machine's power) left the target's temporary file (vectors.txt.x1y2z3ab.tmp)
    beside it, which nothing removed: one more a kill. The next write of that target removes those older than a
    minute; a newer one (a writer now at work), another target's and another program's stay."""
    old = time.time() - 3600
    stale = [tmp_path / "vectors.txt.x1y2z3ab.tmp", tmp_path / "vectors.txt.a_b_c_d_.tmp"]
    kept = [tmp_path / "other.tmp", tmp_path / "vectors.bin.x1y2z3ab.tmp", tmp_path / "vectors.txt.x1y2.tmp",
            tmp_path / "vectors.txt.X1Y2Z3AB.tmp", tmp_path / "vectors.txt.x1y2z3ab.tmp.bak"]  # fmt: skip
    for f in stale + kept:
        f.write_text("half\n")
        os.utime(f, (old, old))
    (fresh := tmp_path / "vectors.txt.newer123.tmp").write_text("at work\n")
    write_text(tmp_path / "vectors.txt", "text\n")
    assert sorted(os.listdir(tmp_path)) == sorted(f.name for f in [*kept, fresh, tmp_path / "vectors.txt"])


def test_a_write_keeps_the_temporary_file_of_a_writer_that_has_not_written_for_a_minute(tmp_path):
    """A writer that had nothing on disk for a minute (np.savez_compressed of a big n-gram model compresses an array
    in one call; what it wrote waits in Python's buffer) had its temporary file taken for a kill's and removed by
    another write of the same target: its rename then failed, 'No such file or directory: .../model.npz', its work
    lost. A temporary file a writer holds open stays, whatever its age."""
    target = tmp_path / "model.npz"
    with atomic_open(target, "wb") as f:
        f.write(b"first")
        (tmp,) = tmp_path.glob("model.npz.*.tmp")
        old = time.time() - 3600
        os.utime(tmp, (old, old))  # as if the writer had written nothing for an hour
        write_text(target, "second\n")  # another writer of the same target, done meanwhile
        assert tmp.exists()
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["model.npz"]


def test_a_failed_rename_says_the_target_alone(tmp_path):
    """A write whose rename failed (a folder where the file goes) said "Is a directory: '.../v.txt' -> None" in
    Python (the rename's second file set to None, which OSError prints); it names the target alone."""
    (target := tmp_path / "v.txt").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        write_text(target, "text\n")
    assert str(e.value) == f"[Errno 21] Is a directory: '{target}'" and e.value.filename == str(target)


def test_a_failed_write_says_the_target_alone(tmp_path):
    """A write that failed (a full disk) said "No space left on device: '.../v.txt' -> None"; the target alone."""
    with pytest.raises(OSError) as e, atomic_open(target := tmp_path / "v.txt") as f:
        f.write("text\n")
        raise OSError(28, "No space left on device")
    assert str(e.value) == f"[Errno 28] No space left on device: '{target}'"


@pytest.mark.parametrize("errno_", [errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL])
def test_a_file_system_without_locks_still_removes_stale_temporary_files(tmp_path, monkeypatch, errno_):
    """Where flock fails (NFS without lockd: ENOLCK; a FUSE or SMB mount: EOPNOTSUPP) a writer holds no lock and the
    age alone tells a kill's temporary file; the check of another writer's lock raised there, and a kill's file
    stayed for good, one more a kill. It is removed by its age, as before the locks."""

    def no_locks(fd, op):
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(_io.fcntl, "flock", no_locks)
    (stale := tmp_path / "v.txt.x1y2z3ab.tmp").write_text("half\n")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (fresh := tmp_path / "v.txt.newer123.tmp").write_text("at work\n")
    write_text(tmp_path / "v.txt", "text\n")
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, "v.txt"])


def test_a_writers_lock_is_seen_where_flock_is_a_posix_lock(tmp_path, monkeypatch):
    """On NFS flock is a whole-file fcntl lock: an exclusive one needs a descriptor open for writing, else EBADF.
    The check opened the file read-only, took that EBADF for a file system without locks, and removed a writer's
    file idle for a minute (its rename then failed); it opens it for writing, and sees the writer's lock."""
    import fcntl

    flock = fcntl.flock

    def nfs_flock(fd, op):
        if op & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        flock(fd, op)

    monkeypatch.setattr(_io.fcntl, "flock", nfs_flock)
    target = tmp_path / "v.txt"
    with atomic_open(target) as f:
        f.write("slow\n")
        (held,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        old = time.time() - 3600
        os.utime(held, (old, old))
        write_text(target, "quick\n")
        assert held.exists()
    assert target.read_text() == "slow\n"


def test_a_write_through_a_link_to_a_device_or_a_pipe_is_refused(tmp_path):
    """atomic_open writes a link's file (the rename replaces it, not the link): a link to /dev/null made the rename
    replace /dev/null itself with a regular file (as root; found so, by `ngram train --out m` with m.npz such a link),
    a link to a FIFO the FIFO. Refused in one line, the target left as it was (a FIFO here: /dev/null is shared)."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    for path in (tmp_path / "pipe", tmp_path / "link"):
        with pytest.raises(
            RnnkitError, match=rf"^cannot write {path}: it is a pipe \(FIFO\), not a file; give another "
        ):
            write_text(path, "x")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and not list(tmp_path.glob("*.tmp"))


def test_every_save_creates_no_folder_and_says_a_path_it_cannot_write_in_one_line(tmp_path):
    """NGramLM.save and TfidfIndex.save made missing folders while Vocabulary.save and WordVectors.save failed with a
    bare FileNotFoundError (naming a temporary file), and a TF-IDF index saved at a file raised FileExistsError.
    Every save now creates its file (an index its folder) and no folder above it, as torch.save, numpy.save and
    gensim do (and save_checkpoint did), and says a path it can't write in one RnnkitError naming it."""
    import numpy as np

    from rnnkit.energy.plots import line_figure
    from rnnkit.text import NGramLM, TfidfIndex, Vocabulary, WordVectors
    from rnnkit.train.checkpoint import save_checkpoint

    saves = {
        "vocab.json": Vocabulary({"a": 2, "b": 1}).save,
        "v.txt": WordVectors(["a"], np.ones((1, 2), np.float32)).save,
        "m.npz": NGramLM(2).fit("ab ab").save,
        "c.pt": lambda p: save_checkpoint(p, {"x": 1}),
        "f.png": lambda p: line_figure([0, 1], {"y": [0, 1]}, p, "x", "y"),
        "index": TfidfIndex().fit(["cat dog"]).save,
    }
    (a_file := tmp_path / "a_file").write_text("x")
    for name, save in saves.items():
        missing = tmp_path / "missing" / name
        with pytest.raises(
            RnnkitError, match=f"^cannot save {missing}: the folder {missing.parent} does not exist;"
        ):
            save(missing)
        inside_a_file = a_file / name
        with pytest.raises(
            RnnkitError, match=f"^cannot save {inside_a_file}: {a_file} is a file, not a folder;"
        ):
            save(inside_a_file)
        save(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*saves, "a_file"])
    with pytest.raises(
        RnnkitError, match=f"^cannot save into {a_file}: it is a file, not a folder; give a folder"
    ):
        saves["index"](a_file)
    with pytest.raises(RnnkitError, match=f"^cannot save {tmp_path / 'index'}: it is a folder;"):
        saves["m.npz"](tmp_path / "index")


def test_an_empty_path_is_refused_by_every_load_and_save_not_read_as_the_current_folder(
    tmp_path, monkeypatch
):
    """'' ("$VECTORS" unset in a script) is '.' to pathlib: in a folder holding them, WordVectors.load('') and
    TfidfIndex.load('') read the vectors and the index there in silence, TfidfIndex.save('') wrote its index into it,
    and the other loads and saves said '.' (a path never typed) as a folder, or a bare FileNotFoundError. One line
    each, as the command line's "RUN is empty; give ...", from rnnkit._io.refuse_empty."""
    import numpy as np

    from rnnkit.data.corpus import load_file
    from rnnkit.energy.patterns_io import read_images, read_patterns
    from rnnkit.models.charlm import load_run
    from rnnkit.text import NGramLM, TfidfIndex, WordVectors
    from rnnkit.text.vocab import Vocabulary
    from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint
    from rnnkit.train.metrics import read_metrics

    monkeypatch.chdir(tmp_path)
    wv = WordVectors(["a", "b"], np.ones((2, 3), np.float32))
    wv.save("vectors.txt")
    index = TfidfIndex().fit(["the cat sat", "a dog ran"])
    index.save(".")
    before = sorted(os.listdir("."))
    calls = [
        lambda p: WordVectors.load(p),
        lambda p: TfidfIndex.load(p),
        lambda p: NGramLM.load(p),
        lambda p: Vocabulary.load(p),
        lambda p: load_run(p),
        lambda p: load_checkpoint(p),
        lambda p: read_metrics(p),
        lambda p: load_file(p),
        lambda p: read_patterns(p),
        lambda p: read_images([p]),
        lambda p: wv.save(p),
        lambda p: wv.evaluate_similarity(p),
        lambda p: wv.evaluate_analogies(p),
        lambda p: index.save(p),
        lambda p: NGramLM(n=2).fit("ab ab ab\n").save(p),
        lambda p: save_checkpoint(p, {"step": 1}),
        lambda p: write_text(p, "x"),
    ]
    for call in calls:
        for path in ("", " "):
            with pytest.raises(RnnkitError, match=r"^the path is empty \('\s?'\); give \S"):
                call(path)
    assert sorted(os.listdir(".")) == before  # nothing written here
    assert len(WordVectors.load(".").words) == 2  # '.' typed is this folder, as before
