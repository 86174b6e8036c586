import os
import stat

import pytest

from rnnkit._io import UMASK, atomic_open, write_text


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


@pytest.mark.parametrize("mode, kw", [("q", {}), ("wb", {"encoding": "utf-8"}), ("w", {"newline": "?"})])
def test_a_file_that_fdopen_refuses_leaks_no_file_descriptor(tmp_path, mode, kw):
    """os.fdopen raising before it took the descriptor (a mode that is none, an encoding for bytes) left mkstemp's descriptor open: one
    leaked per call, until 'Too many open files'."""
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "f.txt", mode, **kw):
            pass
    assert sorted(os.listdir("/proc/self/fd")) == before and list(tmp_path.iterdir()) == []
