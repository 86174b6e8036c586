import pytest
import torch

from rnnkit.cli import main

PANGRAMS = (
    "the quick brown fox jumps over the lazy dog.\n"
    "pack my box with five dozen liquor jugs.\n"
    "how vexingly quick daft zebras jump!\n"
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy shared machine does not stall them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny corpus: three pangrams repeated (6,150 characters, 30 distinct)."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(PANGRAMS * 50)
    return path


@pytest.fixture
def cli(capsys):
    """Run `rnnkit ARGS...` in-process; returns (exit status, stdout, stderr)."""

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


TINY = ["--cell", "lstm", "--hidden-size", "16", "--num-layers", "1", "--seq-len", "8", "--batch-size", "4",
        "--embedding-size", "8"]  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory, corpus):
    """A run folder after a --dry-run of a tiny model (shared: tests only read it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # (a failed dry run left the session on 1 thread)
        assert main(["train", str(corpus), "--out", str(out), *TINY, "--dry-run"]) == 0
    finally:
        torch.set_num_threads(n)
    return out
