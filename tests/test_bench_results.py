"""bench/_results.py: the one file the benchmarks write, bench/RESULTS.md, shared by all of them."""

import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def test_a_failed_write_of_results_md_leaves_it_whole_and_no_temporary_file(tmp_path):
    """update_results wrote RESULTS.md.tmp and renamed it: a write that failed half-way (a full disk, a file-size
    limit) left the old file whole, but RESULTS.md.tmp, half-written, beside it."""
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n")
    before = results.read_bytes()
    script = f"""
import pathlib, resource, signal, sys
sys.path.insert(0, {str(BENCH)!r})
import _results
_results.RESULTS = pathlib.Path({str(results)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    _results.update_results("a", "x" * 100_000)
except OSError as e:
    print("failed:", e.strerror)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("failed: "), done.stderr
    assert results.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]
