import os
import stat

from rnnkit._io import UMASK, write_text


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
