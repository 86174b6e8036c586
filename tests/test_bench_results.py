"""bench/_results.py: the one file the benchmarks write, bench/RESULTS.md, shared by all of them."""

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
# a stand-in tinyshakespeare.txt, long enough for the windows of every charlm.py run (it reads the corpus before any)
CORPUS = "First Citizen:\n" * 300


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


def test_results_md_is_read_as_utf8_whatever_the_locale(tmp_path):
    """RESULTS.md (±, ≈, Σ in its tables) was read in the locale's encoding: under an ASCII locale every benchmark
    failed at its end with a UnicodeDecodeError, its tables lost."""
    import os

    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n<!-- a:begin -->\n1.00 ± 0.01\n<!-- a:end -->\n", encoding="utf-8"
    )
    script = f"""
import pathlib, sys
sys.path.insert(0, {str(BENCH)!r})
import _results
_results.RESULTS = pathlib.Path({str(results)!r})
_results.update_results("b", "2.00 \\u2248 2")  # (the command line itself is ASCII, as the locale)
"""
    env = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONIOENCODING": "utf-8",
    }
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    text = results.read_text(encoding="utf-8")
    assert "1.00 ± 0.01" in text and "<!-- b:begin -->\n2.00 ≈ 2\n<!-- b:end -->" in text


def test_a_begin_marker_whose_end_was_cut_takes_no_other_section_with_it(tmp_path, monkeypatch):
    """A section whose end marker was cut, other sections after it, and a whole copy of the same section further on
    (what update_results wrote before: it appended a fresh block when the end was missing): the end was looked
    for anywhere after the begin, so the next run replaced everything up to the copy's end, the sections between
    lost."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n<!-- a:begin -->\nold a\n\n<!-- b:begin -->\nb's table\n<!-- b:end -->\n\n"
        "<!-- a:begin -->\nnewer a\n<!-- a:end -->\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(_results, "RESULTS", results)
    _results.update_results("a", "newest a")
    text = results.read_text(encoding="utf-8")
    assert "<!-- b:begin -->\nb's table\n<!-- b:end -->" in text
    assert text.startswith(
        "# Benchmark results\n\n<!-- a:begin -->\nnewest a\n<!-- a:end -->\n\n<!-- b:begin -->"
    )
    assert "old a" not in text


def test_every_script_runs_the_rnnkit_of_its_own_checkout(tmp_path):
    """charlm.py and compile.py imported _results, which imports rnnkit, before putting their checkout on sys.path:
    run from a second checkout (a worktree, a clone) with the first one's environment, they benchmarked the
    installed rnnkit, another checkout's code, in silence (and without an install failed: no module rnnkit)."""
    import os

    other = tmp_path / "rnnkit"
    other.mkdir()
    (other / "__init__.py").write_text("raise ImportError('the rnnkit of another checkout')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for script in ("engine", "charlm", "text", "energy", "compile"):
        done = subprocess.run(
            [sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0 and done.stdout.startswith("usage: "), (script, done.stderr[-300:])


def test_an_empty_rnnkit_data_is_unset_as_rnnkit_takes_it():
    """RNNKIT_DATA set empty (export RNNKIT_DATA=) is no folder to rnnkit's corpus reader, which looks further; charlm.py
    and text.py took it as the current folder: with ../shared/data there they stopped, 'no tinyshakespeare.txt; set
    RNNKIT_DATA to the folder holding it', of a file they never looked for where it was."""
    import os

    script = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import charlm, text; print(charlm.DATA); print(text.DATA)"
    env = {**os.environ, "RNNKIT_DATA": ""}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-300:]
    shared = BENCH.parents[1] / "shared" / "data"
    assert done.stdout.splitlines() == [str(shared)] * 2


@pytest.fixture(autouse=True)
def _thread_count_put_back():
    """The bench scripts' main() sets torch's thread count for its process (charlm.py: 1, engine.py: --threads); run
    here, in the test process, it stayed for every later test of the session. It is put back after each test."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _bench_script(monkeypatch, name: str):
    """bench/NAME.py loaded as a module (bench/ on sys.path for its own imports, as when it runs)."""
    monkeypatch.syspath_prepend(str(BENCH))
    # engine.py's main sets RNNKIT_GEMM_PLANS (--plans fresh): back as it was after the test, set or not
    was = os.environ.get("RNNKIT_GEMM_PLANS")
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", "")  # (remembers `was`, None too)
    if was is not None:
        monkeypatch.setenv("RNNKIT_GEMM_PLANS", was)
    else:
        monkeypatch.delenv("RNNKIT_GEMM_PLANS")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sigterm = signal.getsignal(signal.SIGTERM)
    spec.loader.exec_module(module)
    signal.signal(signal.SIGTERM, sigterm)  # (compile.py's exit on SIGTERM is its own, not pytest's)
    return module


def _results_md(tmp_path, monkeypatch, section: str, rows: str):
    """A RESULTS.md in tmp_path, written by the bench scripts in place of bench/RESULTS.md, holding one section of
    these rows: (its path, its text)."""
    import _results

    results = tmp_path / "RESULTS.md"
    before = f"# Benchmark results\n\n<!-- {section}:begin -->\n{rows}<!-- {section}:end -->\n"
    results.write_text(before, encoding="utf-8")
    monkeypatch.setattr(_results, "RESULTS", results)
    return results, before


def _one_row_train(status, names=None):
    """A stand-in for bench/charlm.py's train: a run folder whose metrics.csv has one validated step, at the end of the
    time budget (0.9 s where stopped), returning status (130: stopped); the folders' names go to names."""

    def train(cfg, out, force=False):
        if names is not None:
            names.append(out.name)
        out.mkdir(parents=True, exist_ok=True)
        wall = 0.9 if status else cfg.train.time_budget * 60
        (out / "metrics.csv").write_text(
            f"step,epoch,wall_s,lr,train_loss,val_loss,val_bpc,chars_per_s\n1,0.002,{wall},0.004,4.17,4.1,5.9,2235.9\n"
        )
        return status

    return train


def test_compile_py_stopped_in_its_imports_leaves_no_inductor_folder(tmp_path):
    """compile.py made its inductor cache folder before importing torch and registered its removal after every import:
    a run stopped there (Ctrl-C in torch's import of several seconds, an import that fails) left the folder behind."""
    import os

    fake = tmp_path / "path" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH / "compile.py")], capture_output=True, text=True, env=env
    )
    assert "no torch here" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["path"]


def test_compile_py_stopped_by_sigterm_leaves_no_inductor_folder(tmp_path):
    """compile.py removed its inductor cache folders (its own, and each fresh_cache's) at exit, which a SIGTERM (kill,
    `timeout`, a job scheduler's stop) skips: each run stopped so left them in the system's temporary folder (1 MB
    after one row's compiles). SIGTERM now exits as Ctrl-C does, through the removals (status 143)."""
    import os

    fake = tmp_path / "path" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import time\nprint('importing', flush=True)\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": str(fake.parent), "TMPDIR": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, str(BENCH / "compile.py")], stdout=subprocess.PIPE, text=True, env=env
    ) as run:
        assert run.stdout.readline() == "importing\n"
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=20) == 143
    assert sorted(p.name for p in tmp_path.iterdir()) == ["path"]


def test_compile_py_stopped_in_a_compile_leaves_no_inductor_folder(tmp_path, monkeypatch):
    """Each model's compile times ran in torch's fresh_cache, a new folder beside the system's temporary files that
    torch keeps where its block is stopped (an error, Ctrl-C): every stopped run left one (1 MB after one row). They
    are made inside compile.py's own cache folder, removed at exit."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # (compile.py sets it: put back after the test)
    compile_py = _bench_script(monkeypatch, "compile")

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(compile_py, "compile_times", stopped)
    # (torch.compile's imports of inductor: seconds, and a DeprecationWarning)
    monkeypatch.setattr(compile_py.torch, "compile", lambda model: model)
    try:
        compile_py.row("rnn_tanh", "1x128", 1, False)
    except KeyboardInterrupt:
        pass
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith("rnnkit-bench-inductor-"), left  # (the one removed at exit)


def test_charlm_py_stops_at_a_run_stopped_by_ctrl_c_and_writes_no_table(tmp_path, monkeypatch):
    """train() returns 130 after Ctrl-C (143 after SIGTERM), its run saved; charlm.py took no notice: it went on to
    train the next model for its whole budget, and then wrote the stopped run into RESULTS.md as if it had trained
    its budget (the budget column '3' over a few seconds of training)."""
    charlm = _bench_script(monkeypatch, "charlm")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(CORPUS)
    trained, written = [], []
    monkeypatch.setattr(charlm, "DATA", tmp_path / "data")
    monkeypatch.setattr(charlm, "train", _one_row_train(130, trained))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {})
    monkeypatch.setattr(charlm, "update_results", lambda name, md: written.append(name))
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--only", "lstm,gru", "--out", str(tmp_path / "runs")])
    try:
        charlm.main()
    except SystemExit as e:
        assert e.code == 130
    else:
        raise AssertionError("charlm.py went on after a run stopped by Ctrl-C")
    assert trained == ["lstm"] and written == []


def test_a_partial_run_leaves_its_section_whole(tmp_path, monkeypatch, capsys):
    """`engine.py --only own` (which the README names) replaced the machine's whole engine section with the 12 rows
    it ran, the rest of the table lost; energy.py --skip, charlm.py and compile.py --only likewise. Such a table is not
    written, said in one line; a whole run still writes."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    results = tmp_path / "RESULTS.md"
    before = "# Benchmark results\n\n<!-- engine-x:begin -->\nevery row\n<!-- engine-x:end -->\n"
    results.write_text(before, encoding="utf-8")
    monkeypatch.setattr(_results, "RESULTS", results)
    _results.update_results("engine-x", "the own rows only", partial="--only own")
    assert results.read_text(encoding="utf-8") == before
    err = capsys.readouterr().err
    assert "RESULTS.md is left as it is: --only own runs part of the engine-x table" in err, err
    _results.update_results("engine-x", "every row, again")
    assert "every row, again" in results.read_text(encoding="utf-8")
    for script, option in (
        ("engine", "--only"),
        ("compile", "--only"),
        ("charlm", "--only"),
        ("energy", "--skip"),
    ):
        source = (BENCH / f"{script}.py").read_text(encoding="utf-8")
        assert option in source and "partial" in source.split("update_results(")[-1], script


def test_a_lock_file_that_cannot_be_opened_still_writes_results_md(tmp_path, monkeypatch, capsys):
    """The lock beside the system's temporary files is made 0644 by whoever ran a benchmark first: on a machine
    shared by several users the next user's run ended, after all its timings, in a PermissionError opening it, the
    section not written (charlm.py and energy.py: their tables not printed either). It is written without the lock,
    said in one line."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    (tmp_path / "tmp" / "rnnkit-bench-results.lock").mkdir(
        parents=True
    )  # (root opens any file: a folder fails)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n<!-- b:begin -->\nB\n<!-- b:end -->\n", encoding="utf-8")
    monkeypatch.setattr(_results, "RESULTS", results)
    _results.update_results("a", "A")
    assert results.read_text(encoding="utf-8").endswith(
        "<!-- b:end -->\n\n<!-- a:begin -->\nA\n<!-- a:end -->\n"
    )
    err = capsys.readouterr().err
    assert "rnnkit-bench-results.lock" in err and "without it" in err, err


def test_energy_and_charlm_print_their_tables_before_writing_results_md(tmp_path, monkeypatch, capsys):
    """energy.py and charlm.py printed their tables only after writing RESULTS.md: a write that failed (a read-only
    checkout, a full disk) ended the run in a traceback, every table of its minutes of work lost. They print first,
    as engine.py, compile.py and text.py do."""

    def load(script):
        return _bench_script(monkeypatch, script)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    energy = load("energy")
    monkeypatch.setattr(energy, "bench_ising", lambda out, device: "the Ising table")
    monkeypatch.setattr(energy, "update_results", full_disk)
    monkeypatch.setattr(
        sys, "argv", ["energy.py", "--skip", "rbm", "hopfield", "--out", str(tmp_path / "fig")]
    )
    try:
        energy.main()
    except OSError:
        pass
    assert "the Ising table" in capsys.readouterr().out

    charlm = load("charlm")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(CORPUS)

    monkeypatch.setattr(charlm, "DATA", tmp_path / "data")
    monkeypatch.setattr(charlm, "train", _one_row_train(0))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {"rnnkit": 1.0})
    monkeypatch.setattr(charlm, "update_results", full_disk)
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--preset-budget", "0", "--out", str(tmp_path / "runs")])
    try:
        charlm.main()
    except OSError:
        pass
    assert "## Character language model" in capsys.readouterr().out


def test_results_md_with_crlf_line_endings_keeps_the_other_sections_byte_for_byte(tmp_path, monkeypatch):
    """RESULTS.md with CRLF line endings (a Windows checkout, an editor's setting) was read with newlines translated
    and written back with LF: a run rewrote every line of the file, every other section's included, and its own
    block was LF among CRLF lines. The file's line endings are kept, and the new block written in them."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    results = tmp_path / "RESULTS.md"
    head = b"# Benchmark results\r\n\r\n<!-- b:begin -->\r\nB \xc2\xb1 1\r\n<!-- b:end -->\r\n\r\n"
    tail = b"\r\n\r\n<!-- c:begin -->\r\nC\r\n<!-- c:end -->\r\n"
    results.write_bytes(head + b"<!-- a:begin -->\r\nold\r\n<!-- a:end -->" + tail)
    monkeypatch.setattr(_results, "RESULTS", results)
    _results.update_results("a", "new\n\n| x |\n")
    assert results.read_bytes() == head + b"<!-- a:begin -->\r\nnew\r\n\r\n| x |\r\n<!-- a:end -->" + tail
    _results.update_results("d", "D")
    assert results.read_bytes().endswith(tail + b"\r\n<!-- d:begin -->\r\nD\r\n<!-- d:end -->\r\n")


def _compile_py_untimed(monkeypatch):
    """bench/compile.py with rows that time nothing, and the list its section writes append their `partial` to."""
    compile_py = _bench_script(monkeypatch, "compile")
    written = []
    monkeypatch.setattr(compile_py, "warm_up", lambda: None)
    monkeypatch.setattr(
        compile_py, "row", lambda cell, size, rounds, unrolled: [[f"{cell} {size}", "", "", "", ""]]
    )
    monkeypatch.setattr(compile_py, "update_results", lambda name, md, partial: written.append(partial))
    return compile_py, written


def test_compile_py_sizes_without_its_default_size_is_a_partial_run(monkeypatch):
    """compile.py --sizes 2x512 (its help names the option) wrote the machine's compile section with the 2x512 rows
    only: the 1x128 table, every run's (the default size), was lost, as with --only. A run without 1x128 is a part
    of the table, not written; with it (and more) the section is written."""
    compile_py, written = _compile_py_untimed(monkeypatch)
    for sizes in ("2x512", "2x512,1x128"):
        monkeypatch.setattr(sys, "argv", ["compile.py", "--sizes", sizes, "--rounds", "1"])
        compile_py.main()
    assert written == ["--sizes 2x512", None]


def test_compile_py_only_with_every_default_cell_writes_its_section(monkeypatch):
    """compile.py --only took any --only for a part of the table: --only lstm,gru,mut1 (the default cells, every row of
    the section) or --only lstm,gru,mut1,rnn_tanh (those and one more) was not written, 'RESULTS.md is left as it is:
    --only lstm,gru,mut1 runs part of the compile table', a whole table's timings lost. Only an --only without one of
    the default cells is a part of it, as --sizes without 1x128."""
    compile_py, written = _compile_py_untimed(monkeypatch)
    for only in ("lstm,gru,mut1", "mut1,rnn_tanh,gru,lstm", "lstm,gru"):
        monkeypatch.setattr(sys, "argv", ["compile.py", "--only", only, "--rounds", "1"])
        compile_py.main()
    assert written == [None, None, "--only lstm,gru"]


def _gru_row(tmp_path, monkeypatch, capsys, rows: str) -> str:
    """charlm.py --report-only's table row of a gru run whose metrics.csv holds these rows (after its header)."""
    charlm = _bench_script(monkeypatch, "charlm")
    run = tmp_path / "runs" / "gru"
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.csv").write_text("step,epoch,wall_s,lr,train_loss,val_loss,val_bpc,chars_per_s\n" + rows)
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {"rnnkit": 1.0})
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--report-only", "--only", "gru", "--preset-budget", "0",
                                      "--out", str(tmp_path / "runs"), "--no-write"])  # fmt: skip
    charlm.main()
    return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| rnnkit GRU |"))


def test_charlm_py_shows_a_run_without_a_validation_as_dashes_not_nan(tmp_path, monkeypatch, capsys):
    """A run stopped before its first validation (a short --budget, a run killed early) has no val_loss in its
    metrics.csv: charlm.py's row read "nan" under best val and bits/char, where the table writes "-" for a value
    it has not (its final val and 's to X' columns beside them)."""
    row = _gru_row(tmp_path, monkeypatch, capsys, "1,0.002,0.9,0.004,4.17,,,2235.9\n")
    assert row == "| rnnkit GRU | 3 (stopped at 0.015) | 2,236 | - | - | - | - | - | - | - | - | - | - |", row


def test_charlm_py_without_its_preset_run_leaves_the_preset_rows_whole(tmp_path, monkeypatch, capsys):
    """charlm.py --preset-budget 0 (its help: '0 = skip it') wrote the charlm section with the four models' rows alone:
    the `shakespeare` preset's row and sample, twenty minutes of training, were lost from RESULTS.md, as with --only.
    Such a table is not written, said in one line; a run with the preset still writes."""
    charlm = _bench_script(monkeypatch, "charlm")
    results, before = _results_md(tmp_path, monkeypatch, "charlm", "| `shakespeare` preset | 20 |\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(CORPUS)
    monkeypatch.setattr(charlm, "DATA", tmp_path / "data")
    monkeypatch.setattr(charlm, "train", _one_row_train(0))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {"rnnkit": 1.0})
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--preset-budget", "0", "--out", str(tmp_path / "runs")])
    charlm.main()
    assert results.read_text(encoding="utf-8") == before
    assert (
        "RESULTS.md is left as it is: --preset-budget 0 runs part of the charlm table"
        in capsys.readouterr().err
    )
    monkeypatch.setattr(
        sys, "argv", ["charlm.py", "--preset-budget", "0.01", "--out", str(tmp_path / "runs")]
    )
    charlm.main()
    text = results.read_text(encoding="utf-8")
    assert "| rnnkit tanh RNN | 3 |" in text and "| `shakespeare` preset (rnnkit LSTM 1x512) | 0.01 |" in text


def test_charlm_py_report_only_marks_a_run_stopped_before_its_budget(tmp_path, monkeypatch, capsys):
    """A run stopped by Ctrl-C (charlm.py: 'stopped during the run ...; RESULTS.md has no table of it') and then put in
    the table by --report-only read as if it had trained its budget: budget column '3' over 0.05 minutes of training,
    its val and 's to X' those of a run 60x shorter. Such a run's budget cell says how far it got; a run that trained
    its budget (its last step at or past it) reads as before."""
    run = tmp_path / "runs" / "gru"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"train": {"time_budget": 3, "threads": 1}}')
    row = _gru_row(tmp_path, monkeypatch, capsys, "1,0.002,3.0,0.004,4.17,4.1,5.9,2235.9\n")
    assert row.split(" | ")[1] == "3 (stopped at 0.05)", row
    row = _gru_row(tmp_path, monkeypatch, capsys, "1,0.002,180.0,0.004,4.17,4.1,5.9,2235.9\n")
    assert row.split(" | ")[1] == "3", row


def test_charlm_py_preset_stopped_leaves_the_sections_preset_row(tmp_path, monkeypatch, capsys):
    """charlm.py wrote its section once the four models had trained, without a preset row, and again with the preset's:
    a preset run stopped by Ctrl-C ('RESULTS.md has no table of it') or failing left the section with no preset row,
    the one there from the run before, twenty minutes of training, lost. The table is printed then and written once,
    with the preset's row; a stopped preset leaves the section as it was (--report-only tables it, marked stopped)."""
    charlm = _bench_script(monkeypatch, "charlm")
    results, before = _results_md(tmp_path, monkeypatch, "charlm", "| `shakespeare` preset | 20 |\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text(CORPUS)
    monkeypatch.setattr(charlm, "DATA", tmp_path / "data")
    finished, stopped = _one_row_train(0), _one_row_train(130)
    monkeypatch.setattr(
        charlm, "train", lambda cfg, out, force: (stopped if out.name == "preset" else finished)(cfg, out)
    )
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {"rnnkit": 1.0})
    monkeypatch.setattr(
        sys, "argv", ["charlm.py", "--preset-budget", "0.01", "--out", str(tmp_path / "runs")]
    )
    try:
        charlm.main()
    except SystemExit as e:
        assert e.code == 130
    assert results.read_text(encoding="utf-8") == before
    assert "| rnnkit tanh RNN | 3 |" in capsys.readouterr().out  # (printed)


def test_charlm_py_best_val_above_a_threshold_does_not_read_as_reaching_it(tmp_path, monkeypatch, capsys):
    """Vals were shown to 3 decimals while 's to X' is decided on the unrounded ones: a best val of 2.0004 read '2.000'
    beside 's to 2.0' '-', the figure shown at the threshold the row says the run never reached. Such a val gets the
    decimals that keep it above (2.0004); others read as before."""
    row = _gru_row(tmp_path, monkeypatch, capsys, "1,0.002,180.0,0.004,4.17,2.0004,2.886,2235.9\n").split(
        " | "
    )
    assert row[3:5] == ["2.0004", "2.0004"] and row[7] == "-", row
    row = _gru_row(tmp_path, monkeypatch, capsys, "1,0.002,180.0,0.004,4.17,2.0104,2.9,2235.9\n").split(" | ")
    assert row[3:5] == ["2.010", "2.010"], row


def test_charlm_py_median_speed_of_an_even_count_of_steps_is_the_mean_of_the_middle_two(
    tmp_path, monkeypatch, capsys
):
    """The 'train chars/s (median)' column took the upper of the two middle steps' speeds where a run had an even count
    of steps: a run of 2 steps at 1,000 and 3,000 chars/s read 3,000, the faster step alone; the median is 2,000."""
    row = _gru_row(
        tmp_path,
        monkeypatch,
        capsys,
        "1,0.002,2.0,0.004,4.17,,,1000.0\n2,0.004,2.7,0.004,4.0,3.9,5.6,3000.0\n",
    )
    assert row.split(" | ")[2] == "2,000", row


def test_text_py_with_rows_left_out_leaves_its_section_whole(tmp_path, monkeypatch, capsys):
    """text.py --skip-torch or --max-order below its default 10 wrote the text section with the rows it ran: the
    rnnkit torch row, or the n-gram orders above the one given, lost from RESULTS.md, as with engine.py --only. Such a
    table is not written, said in one line; a run of every row still writes."""
    text_py = _bench_script(monkeypatch, "text")
    results, before = _results_md(tmp_path, monkeypatch, "text", "| rnnkit torch (batched) |\n| 10 |\n")
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text("a b\n" * 5)  # (2 words of min_count 5)
    (tmp_path / "tinyshakespeare.txt").write_text("ab\n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # (gensim not needed)
    monkeypatch.setattr(text_py, "ngram_rows", lambda data, max_order: [[n] for n in range(1, max_order + 1)])
    monkeypatch.setattr(
        text_py,
        "word2vec_rows",
        lambda data, epochs, skip, repeats, model="skip-gram": [["gensim"]] + ([] if skip else [["torch"]]),
    )
    for options in (["--skip-torch"], ["--max-order", "3"]):
        monkeypatch.setattr(sys, "argv", ["text.py", "--data", str(tmp_path), *options])
        assert text_py.main() == 0
        assert results.read_text(encoding="utf-8") == before
        err = capsys.readouterr().err
        assert f"RESULTS.md is left as it is: {' '.join(options)} runs part of the text table" in err, err
    monkeypatch.setattr(
        sys, "argv", ["text.py", "--data", str(tmp_path), "--max-order", "11", "--epochs", "1"]
    )
    assert text_py.main() == 0
    assert "| torch |" in results.read_text(encoding="utf-8") and "| 11 |" in results.read_text(
        encoding="utf-8"
    )


def test_energy_py_on_a_gpu_does_not_say_its_rbm_ran_the_compiled_cpu_loop(monkeypatch):
    """energy.py --device cuda headed its RBM table 'rnnkit runs the compiled CPU loop (rbm_cd.c)' wherever that loop
    built: the loop takes CPU models only (rbm_train uses it where W is on the CPU), and on the GPU the rnnkit row ran
    the torch loop, as its 'rnnkit, torch loop' row does. The heading names the torch loop and the device there."""
    energy = _bench_script(monkeypatch, "energy")
    import numpy as np

    X, y = np.zeros((4, 64), "float32"), np.zeros(4)
    monkeypatch.setattr(energy, "example_digits", lambda: (X, X, y, y))
    monkeypatch.setattr(energy._rbm_kernel, "load", lambda: object())  # (the CPU loop built)
    monkeypatch.setattr(energy, "FITS", dict.fromkeys(energy.FITS, lambda X, seed, device: (None, 0.1)))
    monkeypatch.setattr(energy, "scores", lambda *args: {"accuracy": 0.9})
    heading = energy.bench_rbm(1, "cuda:0").splitlines()[0]
    assert "compiled CPU loop" not in heading and "the torch loop on cuda:0" in heading, heading
    assert "the compiled CPU loop (rbm_cd.c)" in energy.bench_rbm(1, "cpu").splitlines()[0]


@pytest.mark.skipif(not pathlib.Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("out", ["/proc/x", "/proc"])
def test_charlm_py_stops_at_once_on_an_out_folder_it_cannot_write_in(tmp_path, monkeypatch, capsys, out):
    """--out /proc/x (not to be made) or /proc (a folder that takes no new ones), which check_out's permission check
    passes as root: charlm.py timed its sampling, then failed in a traceback at the first model's run folder
    (RnnkitError: cannot make the --out folder /proc/x/lstm). It stops before any work, in argparse's one line."""
    charlm = _bench_script(monkeypatch, "charlm")
    work = []
    (tmp_path / "tinyshakespeare.txt").write_text(CORPUS)
    monkeypatch.setattr(charlm, "DATA", tmp_path)
    monkeypatch.setattr(charlm, "train", lambda *a, **k: work.append("train"))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: work.append("sampling"))
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--preset-budget", "0", "--out", out, "--no-write"])
    with pytest.raises(SystemExit) as stop:
        charlm.main()
    assert stop.value.code == 2 and work == []
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"charlm.py: error: cannot write in the --out folder {out}: "), err


@pytest.mark.skipif(not pathlib.Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_energy_py_stops_at_once_on_an_out_folder_that_takes_no_figures(monkeypatch, capsys):
    """--out /proc: a folder, so mkdir(exist_ok=True) passed it, that takes no files: energy.py ran every part and then
    failed in a traceback at the first figure (FileNotFoundError: '/proc/ising_metropolis.png'). It stops before any
    work, in argparse's one line."""
    energy = _bench_script(monkeypatch, "energy")
    work = []
    monkeypatch.setattr(energy, "bench_ising", lambda out, device: work.append("ising") or "the Ising table")
    monkeypatch.setattr(
        sys, "argv", ["energy.py", "--skip", "rbm", "hopfield", "--out", "/proc", "--no-write"]
    )
    with pytest.raises(SystemExit) as stop:
        energy.main()
    assert stop.value.code == 2 and work == []
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("energy.py: error: cannot write in the --out folder /proc: "), err


def test_a_results_md_that_cannot_be_written_stops_a_script_before_any_work(tmp_path, monkeypatch, capsys):
    """RESULTS.md saved in another encoding (a '±' as Latin-1), a RESULTS.md that is a folder, a folder that takes no
    new file (a read-only checkout): every script ran its whole benchmark (engine.py: tens of minutes) and then
    failed in a traceback at the write ('UnicodeDecodeError: 'utf-8' codec can't decode byte 0xb1 in position 53633'
    from charlm.py --report-only). Each stops before any work in argparse's one line, unless --no-write or a part of
    the table (which is never written)."""
    engine = _bench_script(monkeypatch, "engine")
    import _results

    work = []
    monkeypatch.setattr(engine.native, "unsupported", lambda *a: work.append("native") or None)
    monkeypatch.setattr(engine, "gemm_peak", lambda rounds: work.append("peak") or 1 / 0)
    latin1 = tmp_path / "RESULTS.md"
    latin1.write_bytes(b"# Benchmark results\n\n<!-- a:begin -->\n1.00 \xb1 0.01\n<!-- a:end -->\n")
    (tmp_path / "folder" / "RESULTS.md").mkdir(parents=True)
    cases = [
        (latin1, "is not UTF-8 text (byte 0xb1 at offset 43)"),
        (tmp_path / "folder" / "RESULTS.md", "Is a"),
    ]
    if pathlib.Path("/proc/self").is_dir():
        cases.append((pathlib.Path("/proc/RESULTS.md"), "No such file or directory"))
    for results, why in cases:
        monkeypatch.setattr(_results, "RESULTS", results)
        monkeypatch.setattr(sys, "argv", ["engine.py", "--rounds", "1"])
        with pytest.raises(SystemExit) as stop:
            engine.main()
        err = capsys.readouterr().err.splitlines()
        assert stop.value.code == 2 and work == [] and why in err[-1], (results, err)
        assert err[-1].startswith("engine.py: error: ") and "--no-write" in err[-1], err
    # --no-write, or a part of the table (which update_results leaves unwritten): the run goes on
    for argv in (["--no-write"], ["--only", "own"]):
        work.clear()
        monkeypatch.setattr(sys, "argv", ["engine.py", "--rounds", "1", *argv])
        with pytest.raises(ZeroDivisionError):
            engine.main()
        assert work == ["native", "peak"]
    for script in ("engine", "compile", "charlm", "energy", "text"):
        assert "check_results(" in (BENCH / f"{script}.py").read_text(encoding="utf-8"), script


def test_a_later_copy_of_a_section_goes_when_the_section_is_written(tmp_path, monkeypatch):
    """A RESULTS.md holding a section twice (a merge that kept both sides' blocks, or the copy the old update_results
    appended where an end marker was cut): re-running the benchmark replaced the first copy only, the stale second
    table of the same benchmark and machine left below the other sections. Later copies, whole or cut, go; the
    sections between and after them stay as they were."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(_results, "RESULTS", results)
    b, c = "<!-- b:begin -->\nB\n<!-- b:end -->", "<!-- c:begin -->\nC\n<!-- c:end -->"
    for before in (
        f"# R\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\n{b}\n\n<!-- a:begin -->\nolder\n<!-- a:end -->\n\n{c}\n",
        f"# R\n\n<!-- a:begin -->\nold\n\n{b}\n\n<!-- a:begin -->\nolder\n<!-- a:end -->\n\n{c}\n",
        f"# R\n\n<!-- a:begin -->\nold\n<!-- a:end -->\n\n{b}\n\n<!-- a:begin -->\nolder\n\n{c}\n",
    ):
        results.write_text(before, encoding="utf-8")
        _results.update_results("a", "new")
        after = f"# R\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\n\n{b}\n\n{c}\n"
        assert results.read_text(encoding="utf-8") == after, before
    results.write_text(
        "# R\n\n<!-- a:begin -->\nold\n\n<!-- a:begin -->\nolder\n<!-- a:end -->\n", encoding="utf-8"
    )
    _results.update_results("a", "new")
    assert results.read_text(encoding="utf-8") == "# R\n\n<!-- a:begin -->\nnew\n<!-- a:end -->\n"


@pytest.mark.parametrize("corpus", ["", "First Citizen:\n"])
def test_charlm_py_stops_at_once_on_a_corpus_its_runs_cannot_train_on(tmp_path, monkeypatch, capsys, corpus):
    """An empty tinyshakespeare.txt (a download that failed) or one too short for the runs' windows: charlm.py timed
    its sampling, then failed in a traceback from the first run ('RnnkitError: corpus .../tinyshakespeare.txt is
    empty; ...', '... too few for 32 streams of windows of 64 ...'). It stops before any work, in argparse's one
    line naming the corpus's problem."""
    charlm = _bench_script(monkeypatch, "charlm")
    (tmp_path / "tinyshakespeare.txt").write_text(corpus)
    work = []
    monkeypatch.setattr(charlm, "DATA", tmp_path)
    monkeypatch.setattr(charlm, "train", lambda *a, **k: work.append("train"))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: work.append("sampling"))
    monkeypatch.setattr(sys, "argv", ["charlm.py", "--out", str(tmp_path / "runs"), "--no-write"])
    with pytest.raises(SystemExit) as stop:
        charlm.main()
    assert stop.value.code == 2 and work == []
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("charlm.py: error: ") and ("is empty" if not corpus else "too few") in err, err


@pytest.mark.parametrize(
    "shakespeare, ptb, why",
    [("", "a b\n" * 5, "holds 0 characters"), ("ab\n", "a b c d\n", "0 words of 4 occur 5 times or more")],
)
def test_text_py_stops_at_once_on_data_it_cannot_train_on(
    tmp_path, monkeypatch, capsys, shakespeare, ptb, why
):
    """An empty tinyshakespeare.txt, or a ptb.train.txt cut short (a failed download): text.py failed in rnnkit's
    traceback ('RnnkitError: empty training text; ...') or, after the n-gram table, in gensim's ('RuntimeError: you
    must first build vocabulary before training the model'). It stops before any work, in one line saying which."""
    text_py = _bench_script(monkeypatch, "text")
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text(ptb)
    (tmp_path / "tinyshakespeare.txt").write_text(shakespeare)
    work = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # (gensim not needed)
    monkeypatch.setattr(text_py, "ngram_rows", lambda *a: work.append("ngram"))
    monkeypatch.setattr(text_py, "word2vec_rows", lambda *a: work.append("word2vec"))
    monkeypatch.setattr(sys, "argv", ["text.py", "--data", str(tmp_path), "--no-write"])
    with pytest.raises(SystemExit) as stop:
        text_py.main()
    err = capsys.readouterr().err.splitlines()[-1]
    assert stop.value.code == 2 and work == [] and err.startswith("text.py: error: ") and why in err, err


@pytest.mark.parametrize("latin1", ["tinyshakespeare.txt", "ptb/ptb.train.txt"])
def test_text_py_stops_at_once_on_data_that_is_not_utf8(tmp_path, monkeypatch, capsys, latin1):
    """A data file saved as Latin-1 ('café' as b'caf\\xe9'): data_problem's read ended text.py in a UnicodeDecodeError
    traceback; it stops in one line naming the file and the byte."""
    text_py = _bench_script(monkeypatch, "text")
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.train.txt").write_text("a b\n" * 5)
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\n" * 20)
    (tmp_path / latin1).write_bytes(b"caf\xe9 a b\n" * 5)
    monkeypatch.setattr(sys, "argv", ["text.py", "--data", str(tmp_path), "--no-write"])
    with pytest.raises(SystemExit) as stop:
        text_py.main()
    err = capsys.readouterr().err.splitlines()[-1]
    assert stop.value.code == 2 and err.startswith("text.py: error: "), err
    assert f"{latin1} is not UTF-8 text (byte 0xe9 at offset 3)" in err, err


def test_a_second_charlm_py_in_the_same_out_folder_stops_at_once(tmp_path, monkeypatch, capsys):
    """Two charlm.py in one --out folder (started twice): the second timed its sampling and then failed in a traceback
    at the run the first one was training ('RnnkitError: another run is writing to .../rnn_tanh'), or replaced the
    first one's finished run with its own, which the first one's table then read. It stops before any work, in one
    line; the folder is free again once the first one ends."""
    import fcntl
    import os

    charlm = _bench_script(monkeypatch, "charlm")
    (tmp_path / "tinyshakespeare.txt").write_text(CORPUS)
    out = tmp_path / "runs"
    out.mkdir()
    trained = []
    monkeypatch.setattr(charlm, "DATA", tmp_path)
    monkeypatch.setattr(charlm, "train", _one_row_train(0, trained))
    monkeypatch.setattr(charlm, "sampling_speeds", lambda: {"rnnkit": 1.0})
    monkeypatch.setattr(
        sys, "argv", ["charlm.py", "--only", "gru", "--preset-budget", "0", "--out", str(out)]
    )
    first = os.open(out, os.O_RDONLY)  # (the first charlm.py's lock)
    try:
        fcntl.flock(first, fcntl.LOCK_EX)
        with pytest.raises(SystemExit) as stop:
            charlm.main()
    finally:
        os.close(first)
    err = capsys.readouterr().err.splitlines()[-1]
    assert stop.value.code == 2 and trained == [], err
    assert (
        err
        == f"charlm.py: error: another charlm.py is running in {out}; wait for it to end, or give another --out"
    )
    charlm.main()
    assert trained == ["gru"]


def test_engine_py_only_with_every_row_writes_its_section(tmp_path, monkeypatch, capsys):
    """engine.py --only naming all 13 rows ran the whole table (tens of minutes) and took it for a part of it: 'RESULTS.md
    is left as it is: --only lstm,gru,... runs part of the engine-... table', every timing lost, where compile.py
    writes an --only holding its default cells. Such a run is the whole table: its section is written (so RESULTS.md
    is checked first, as for a run without --only)."""
    engine = _bench_script(monkeypatch, "engine")
    import _results

    work = []
    monkeypatch.setattr(engine.native, "unsupported", lambda *a: work.append("native") or None)
    monkeypatch.setattr(engine, "gemm_peak", lambda rounds: work.append("peak") or 1 / 0)
    results = tmp_path / "RESULTS.md"
    results.write_bytes(b"# Benchmark results\n\n1.00 \xb1 0.01\n")  # (not UTF-8: a run that writes stops)
    monkeypatch.setattr(_results, "RESULTS", results)
    monkeypatch.setattr(
        sys, "argv", ["engine.py", "--rounds", "1", "--only", ",".join(reversed(engine.ROWS))]
    )
    with pytest.raises(SystemExit) as stop:
        engine.main()
    assert stop.value.code == 2 and work == [] and "is not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("script, option", [("charlm", "--out"), ("energy", "--out"), ("text", "--data")])
def test_an_empty_folder_option_is_refused(monkeypatch, capsys, script, option):
    """--out "" (`--out "$OUT"` with OUT unset) was the current folder to pathlib: charlm.py trained its runs into
    ./rnn_tanh and the like, energy.py drew its figures into ./, in silence, where rnnkit's own commands refuse an
    empty --out. The scripts refuse it in argparse's one line, before any work."""
    module = _bench_script(monkeypatch, script)

    def work(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    for name in ("sampling_speeds", "train", "bench_rbm", "bench_hopfield", "bench_ising", "ngram_rows"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, work)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", option, "", "--no-write"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    err = capsys.readouterr().err.splitlines()[-1]
    assert (
        stop.value.code == 2
        and err == f"{script}.py: error: argument {option}: empty; give a folder (`.` for the current one)"
    )


def test_a_ctrl_c_ends_a_benchmark_in_one_line(monkeypatch, capsys):
    """Ctrl-C in engine.py, compile.py, energy.py or text.py was Python's KeyboardInterrupt traceback; it is one line
    and exit status 130 (RESULTS.md, written whole at the end of a run, as it was)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        _results.run_main(interrupted)
    assert e.value.code == 130 and capsys.readouterr().err == "\ninterrupted; RESULTS.md is as it was\n"
    assert _results.run_main(lambda: 3) == 3
    for script in ("charlm", "compile", "energy", "engine", "text"):
        assert "run_main(main)" in (BENCH / f"{script}.py").read_text().rsplit("__main__", 1)[1], script


@pytest.mark.parametrize(
    "plans, kept", [([], False), (["--plans", "fresh"], False), (["--plans", "kept"], True)]
)
def test_engine_py_times_the_engine_choices_afresh_unless_told_to_keep_them(monkeypatch, plans, kept):
    """The native engine keeps its GEMM and thread-split choices in a plan file and never times them again: a
    2x512 MUT1's split over the units, kept from a process that ran while other jobs loaded the machine, read 0.76x
    the LSTM's GEMM rate, and 0.91x over the rows timed afresh on the idle machine. engine.py times them in its own
    run (RNNKIT_GEMM_PLANS empty, before the engine loads) unless --plans kept."""
    engine = _bench_script(monkeypatch, "engine")
    monkeypatch.setenv("RNNKIT_GEMM_PLANS", "/some/plans.json")
    seen = []
    monkeypatch.setattr(engine.native, "unsupported", lambda *a: seen.append(os.environ["RNNKIT_GEMM_PLANS"]))
    monkeypatch.setattr(engine, "gemm_peak", lambda rounds: 1 / 0)
    monkeypatch.setattr(sys, "argv", ["engine.py", "--rounds", "1", "--no-write", *plans])
    with pytest.raises(ZeroDivisionError):
        engine.main()
    assert seen == ["/some/plans.json" if kept else ""]
