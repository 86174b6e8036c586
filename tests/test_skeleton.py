import os
import pathlib
import signal
import subprocess
import sys

import pytest

import rnnkit
from rnnkit.cli import main


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "rnnkit" in out.stdout


_SLOW_TORCH = """import sys, time
class SlowTorch:  # torch's import held up, a Ctrl-C landing in it every time
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.stderr.write("importing torch\\n"); sys.stderr.flush(); time.sleep(3)
sys.meta_path.insert(0, SlowTorch())
"""


@pytest.mark.parametrize(
    "launcher", [["-m", "rnnkit"], ["-c", "import sys; from rnnkit.cli import main; sys.exit(main())"]]
)
def test_ctrl_c_while_torch_is_imported_is_one_line(tmp_path, launcher):
    """A Ctrl-C in the first second of a command (`python -m rnnkit`, or the `rnnkit` script: -c as it runs main)
    landed in `import rnnkit`'s import of torch, before main: Python's traceback, exit -2. It is the one line the
    rest of the command line says, 'rnnkit: interrupted', exit 130."""
    (tmp_path / "sitecustomize.py").write_text(_SLOW_TORCH)
    root = pathlib.Path(rnnkit.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, *launcher, "sample", "no-run"]  # a command on torch (ngram runs without it)
    with subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) as p:
        assert p.stderr.readline() == "importing torch\n"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (130, "rnnkit: interrupted\n")


_CTRL_C_IN_TORCH = """import atexit, os, signal, sys
class CtrlC:  # a Ctrl-C as torch's import starts
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self); os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, CtrlC())
atexit.register(lambda: sys.stderr.write("torch whole\\n" if hasattr(sys.modules.get("torch"), "nn") else "torch cut\\n"))
"""


def test_ctrl_c_in_torchs_import_is_held_until_it_is_done(tmp_path):
    """torch's import lost a Ctrl-C landing in part of its first half second (its C++ start-up calls back into Python,
    where the KeyboardInterrupt was swallowed: the command ran on to exit 0, or aborted in pybind11's
    error_already_set). The command line holds a Ctrl-C until torch is imported whole, then stops: one line, 130."""
    (tmp_path / "sitecustomize.py").write_text(_CTRL_C_IN_TORCH)
    root = pathlib.Path(rnnkit.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "rnnkit", "sample", "no-run"]  # a command on torch (ngram runs without it)
    got = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (got.returncode, got.stderr) == (130, "rnnkit: interrupted\ntorch whole\n")


_CTRL_C_IN_EXEC = """import sys
class CtrlC:  # a Ctrl-C landing in code run by exec() of a string (dataclasses', namedtuple's: torch._dynamo's import)
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self); exec("raise KeyboardInterrupt")
sys.meta_path.insert(0, CtrlC())
"""


@pytest.mark.parametrize(
    "launcher", [["-m", "rnnkit"], ["-c", "import sys; from rnnkit.cli import main; sys.exit(main())"]]
)
def test_ctrl_c_in_an_exec_of_a_string_exits_130(tmp_path, launcher):
    """A Ctrl-C landing in an exec() or eval() of a string (torch._dynamo's import, the first seconds of sample,
    makes dataclasses and named tuples so) set CPython's flag of a KeyboardInterrupt left unhandled: python -m
    rnnkit said 'rnnkit: interrupted', then Python killed itself with SIGINT at exit (-2), not 130."""
    (tmp_path / "sitecustomize.py").write_text(_CTRL_C_IN_EXEC)
    root = pathlib.Path(rnnkit.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, *launcher, "sample", "no-run"]  # a command on torch (ngram runs without it)
    got = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (got.returncode, got.stderr) == (130, "rnnkit: interrupted\n")


def test_ctrl_c_stops_a_program_that_calls_main(tmp_path, monkeypatch, capsys):
    """main(argv) turned every Ctrl-C into return 130, so a program running several commands in a loop of
    main([...]) calls went on to the next one; a call with argv re-raises it. main() of sys.argv (the `rnnkit`
    script, python -m rnnkit) still says 'rnnkit: interrupted' and returns 130, in the imports as in the command."""
    import rnnkit.cli
    from rnnkit.energy import ising

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    args = ["ising", "sweep", "--dry-run", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["rnnkit", *args])
    for where, name in (
        (ising.Ising, "run"),
        (rnnkit.cli, "build_parser"),
    ):  # the command's work, its imports
        monkeypatch.setattr(where, name, interrupted)
        with pytest.raises(KeyboardInterrupt):
            main(args)
        assert main() == 130
        assert capsys.readouterr().err == "rnnkit: interrupted\n"


def test_import_leaves_torch_compile_and_the_heavy_libraries_alone():
    """`import rnnkit` (and the command line's parser) imported torch._dynamo at once, for one decorator: 3 s more
    for every command, `rnnkit --help` too, with TORCHINDUCTOR_CACHE_DIR set in os.environ and a warnings filter
    of sympy's added on import. Nor are matplotlib, scikit-learn and scipy imported before a command needs them."""
    code = (
        "import os, sys, warnings, torch\n"
        "modules, environ, filters = set(sys.modules), dict(os.environ), list(warnings.filters)\n"
        "from rnnkit.cli import build_parser; build_parser()\n"
        "heavy = ('torch._dynamo', 'sympy', 'matplotlib', 'sklearn', 'scipy')\n"
        "print(sorted(m for m in heavy if m in set(sys.modules) - modules), os.environ == environ,"
        " warnings.filters == filters)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True", "True"]


HELPS = ["", "ngram", "ngram score", "tfidf search", "markov", "word2vec", "train", "sample", "eval", "hopfield",
         "hopfield recall", "hopfield capacity", "rbm train", "ising sweep"]  # fmt: skip


def test_the_commands_without_torch_and_every_help_import_none_of_it(tmp_path):
    """Every `rnnkit` command imported torch before it parsed its arguments (1.4 s and 225 MB): `rnnkit ngram score`
    took 2-3 s and 240 MB where its work is 0.3 s and 40 MB, `rnnkit --help` as long. ngram, tfidf and markov, and
    every help, run without it; so does `import rnnkit.text`, its names still there. (`train --help` and `hopfield
    capacity --help` imported it for their defaults, the table of presets and CapacityConfig's: 3-5 s.)"""
    (tmp_path / "c.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    (tmp_path / "docs.txt").write_text("the cat sat\na dog ran\ncats and dogs\n")
    (tmp_path / "v.txt").write_text("3 2\ncat 1 0\ndog 0.9 0.1\ncar 0 1\n")
    runs = [
        ["ngram", "train", "c.txt", "--level", "word", "-n", "2", "--out", "m.npz"],
        ["ngram", "score", "m.npz", "the cat sat"],
        ["tfidf", "index", "docs.txt", "--out", "ix"],
        ["tfidf", "search", "ix", "cat"],
        ["markov", "sample", "--length", "5"],
        ["neighbours", "v.txt", "cat"],
        *([*c.split(), "--help"] for c in HELPS),
        ["--version"],
    ]
    code = (
        "import sys, contextlib, io, rnnkit.text\n"
        "from rnnkit.text import NGramLM\n"
        "from rnnkit.cli import main\n"
        "assert 'NGramLM' in dir(rnnkit.text) and 'Word2Vec' in rnnkit.text.__all__\n"
        f"for argv in {runs!r}:\n"
        "    sys.argv = ['rnnkit', *argv]\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            code = main()\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    print(argv[:2], code, bool(out.getvalue()), 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [f"{argv[:2]} 0 True False" for argv in runs], out.stderr[-3000:]


def test_a_usage_error_of_a_command_on_torch_is_said_without_it():
    """main() imported torch, for the commands that run on it, before it parsed their arguments: a mistyped option
    or a missing argument (`rnnkit sample RUN --length abc`, `rnnkit train` without --out) took 3-5 s to say
    argparse's line. Torch is imported once the arguments are parsed."""
    runs = [["sample", "run", "--length", "abc"], ["train"], ["train", "--out", "x", "--bogus"],
            ["hopfield", "recall", "--mode", "foo"], ["rbm"], ["eval", "run"], ["ising", "sweep", "--size", "1.5"]]  # fmt: skip
    code = (
        "import sys, contextlib, io\n"
        "from rnnkit.cli import main\n"
        f"for argv in {runs!r}:\n"
        "    sys.argv = ['rnnkit', *argv]\n"
        "    with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "        try:\n"
        "            code = main()\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    print(argv[0], code, 'error:' in err.getvalue(), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == [f"{argv[0]} 2 True False" for argv in runs]


def test_a_command_on_torch_imports_it_before_its_work_the_guarded_way():
    """main() imports torch with a Ctrl-C held (_import_torch) for the commands that need it, not for their help
    (`train --help`'s table of presets is made without it); a program's main(argv) leaves the signals alone."""
    code = (
        "import sys, rnnkit.cli as cli\n"
        "real, guarded = cli._import_torch, []\n"
        "def spy():\n"
        "    guarded.append('torch' in sys.modules)\n"
        "    real()\n"
        "cli._import_torch = spy\n"
        "sys.argv = ['rnnkit', 'sample', 'no-such-run']\n"
        "print(cli.main(), guarded, 'torch' in sys.modules)\n"
        "sys.argv = ['rnnkit', 'train', '--help']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(guarded, 'A flag not given takes the preset' in cli.build_parser('train').commands['train'].epilog)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[0] == "2 [False] True"
    assert out.stdout.splitlines()[-1] == "[False] True"


def test_figures_leave_the_users_matplotlib_backend_alone(tmp_path):
    """The loss curve that rnnkit.train.train writes, and the energy models' figures, called matplotlib.use("Agg"):
    a notebook's or a script's own backend (inline, QtAgg, ...) was switched to Agg for the rest of the process,
    whose plt.show() then showed nothing. They draw on a Figure of their own, which needs no backend or display."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import torch\n"
        "from rnnkit.train.metrics import plot_losses\n"
        "plot_losses([dict(step=1, wall_s=0.1, train_loss=1.0, val_loss=0.9)], 'loss.png')\n"
        "from rnnkit.energy import plots\n"
        "plots.image_grid(torch.rand(4, 9), 'grid.png', title='t')\n"
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        out.stdout.split() == ["svg"]
        and (tmp_path / "loss.png").is_file()
        and (tmp_path / "grid.png").is_file()
    )


def test_the_wheel_holds_every_file_rnnkit_reads(tmp_path):
    """A wheel built from the sources holds all of rnnkit: the C++ and C sources that the native engine and the RBM
    kernel compile from where rnnkit is installed, not only its modules. Built with warnings as errors: the
    `license = { text = ... }` table was deprecated by setuptools, which refuses such builds from 2027-02-18."""
    import shutil
    import zipfile

    root = _source_root()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src)
    shutil.copytree(
        root / "rnnkit", src / "rnnkit", ignore=shutil.ignore_patterns("__pycache__", ".*", "*.so")
    )
    build = f"from setuptools import build_meta; print('wheel:', build_meta.build_wheel({str(tmp_path)!r}))"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", build], cwd=src, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = tmp_path / out.stdout.rsplit("wheel: ", 1)[1].strip()
    inside = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(src).as_posix() for p in (src / "rnnkit").rglob("*") if p.is_file()}
    assert {"rnnkit/engine/csrc/engine.cpp", "rnnkit/energy/rbm_cd.c"} <= wanted
    assert sorted(wanted - inside) == []
    metadata = zipfile.ZipFile(wheel).read(f"rnnkit-{rnnkit.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {rnnkit.__version__}\n" in metadata  # pip's version is --version's


def test_the_sdist_holds_the_whole_source_tree(tmp_path):
    """The sdist (pip's source of `pip install rnnkit` without a wheel, and a packager's) held setuptools' default
    selection of tests, tests/test*.py alone: not tests/cells/ and the other folders, not conftest.py, and not bench/
    that tests/test_bench_*.py read, so its test suite failed. It holds the tests, bench/ and the Makefile."""
    import shutil
    import tarfile

    root = _source_root()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "Makefile"):
        if (root / name).is_file():
            shutil.copy(root / name, src)
    skip = shutil.ignore_patterns("__pycache__", ".*", "*.so", "*.pyc")
    for folder in ("rnnkit", "tests", "bench", "docs"):
        shutil.copytree(root / folder, src / folder, ignore=skip)
    build = f"from setuptools import build_meta; print('sdist:', build_meta.build_sdist({str(tmp_path)!r}))"
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", build], cwd=src, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sdist = tmp_path / out.stdout.rsplit("sdist: ", 1)[1].strip()
    top = f"rnnkit-{rnnkit.__version__}/"
    inside = {n.removeprefix(top) for n in tarfile.open(sdist).getnames()}
    wanted = {
        p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and ".egg-info" not in str(p)
    }
    assert {"tests/conftest.py", "bench/engine.py", "docs/engine.md", "Makefile"} <= wanted
    assert sorted(wanted - inside) == []


def test_cli_version_and_unknown_options_in_the_commands_words(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rnnkit {rnnkit.__version__}"
    with pytest.raises(SystemExit) as e:
        main(["train", "--bogus", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "rnnkit train: error: unrecognized arguments: --bogus" in err
    for action in (["rbm", "train"], ["markov", "sample"], ["ising", "sweep"]):  # two-level: the action's own
        with pytest.raises(SystemExit):
            main([*action, "--bogus"])
        err = capsys.readouterr().err
        assert f"usage: rnnkit {' '.join(action)}" in err and "error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize(
    "command, shown",
    [
        (
            ["ngram", "train"],
            [
                r"(?s)--order ORDER\s+n: .*?\(default: 5\)",
                r"(?s)--level \{char,word\}\s+tokens .*?\(default: char\)",
            ],
        ),
        (["tfidf", "search"], [r"(?s)--top TOP\s+documents .*?\(default: 10\)"]),
        (["ising", "sweep"], [r"(?s)--update \{metropolis,heat-bath\}\s+the .*?\(default: metropolis\)"]),
        (["ngram", "sample"], [r"--prime PRIME\s+text to start from\n"]),  # no "(default: )" for ""
        (
            ["rbm", "train"],
            [
                r"(?s)--momentum MOMENTUM\s+in \[0, 1\).*?\(default: 0.0\)",
                r"(?s)--visible \{bernoulli,gaussian\}\s+gaussian:.*?\(default: bernoulli\)",
            ],
        ),
    ],
)
def test_help_shows_every_default(capsys, command, shown):
    """Every option with a default shows it, also those without a help text of their own."""
    import re

    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    for pattern in shown:
        assert re.search(pattern, out), (pattern, out)


def _every_command():
    import argparse

    from rnnkit.cli import build_parser

    def walk(parser, path):
        yield path
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, p in action.choices.items():
                    yield from walk(p, [*path, name])

    return list(walk(build_parser(), []))[1:]


def test_no_help_names_its_default_twice(capsys):
    """A help text that says its default itself ("(default 500)") gets no second "(default: 500)"."""
    import re

    for command in _every_command():
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        out = re.sub(r"\s+", " ", capsys.readouterr().out)
        for line in re.split(r" (?=-{1,2}[a-z])", out):
            assert len(re.findall(r"\bdefault\b", line)) < 2, (command, line)


def test_every_option_says_what_it_does():
    """hopfield --max-steps, --mode and --rule, ising --burn-in and --t-min, ngram --min-freq, rbm --momentum and 35
    more said only 'default: X': what they set was left to the code. Each help now says what its option does."""
    import argparse
    import re

    from rnnkit.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, p in action.choices.items():
                    yield from walk(p, [*path, name])
            elif action.option_strings and action.help != argparse.SUPPRESS:
                yield " ".join(path), "/".join(action.option_strings), action.help or ""

    bare = [(command, flag, help) for command, flag, help in walk(build_parser(), [])
            if len(re.sub(r"\(?default:[^)]*\)?", "", help).strip(" ;")) < 3]  # fmt: skip
    assert not bare, bare


@pytest.mark.parametrize("group", ["ngram", "tfidf", "hopfield", "rbm", "ising", "markov"])
def test_a_group_without_its_action_names_it_so(capsys, group):
    with pytest.raises(SystemExit):
        main([group])
    assert "required: ACTION" in capsys.readouterr().err


def test_a_python_backward_leaves_torch_compile_alone():
    """The python loop's backward asks whether it runs inside vmap; the question's decorator (dynamo may not trace
    it) imported torch._dynamo on its first call: 2-3 s at the first backward of every process on that backend
    (the fallback where native can't run). Outside every torch.func transform it is answered without it."""
    code = (
        "import sys, torch, rnnkit\n"
        "x = torch.randn(2, 5, 4, requires_grad=True)\n"
        "rnnkit.Recurrent('gru', 4, 8, backend='python')(x)[0].sum().backward()\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False"]


def test_the_text_baselines_import_scikit_learn_only_where_used():
    """rnnkit.text imported scikit-learn (and scipy.stats) at once, for a stop-word list, a truncated SVD and a
    Spearman correlation: a second or two of every `rnnkit ngram` or `markov` command, which use none of them."""
    code = "import sys, rnnkit.text\nprint(sorted(m for m in ('sklearn', 'scipy.stats') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["[]"]


def test_a_commands_warning_is_one_line_of_rnnkits():
    """A warning a command gave (a compiled loop that can't be built, an edited vocab.json) was printed as Python
    prints it, pointing at the command's launcher: `<frozen runpy>:88: RuntimeWarning: ...` and the line
    `return _run_code(...)` under it. The command line says it as its errors are said."""
    stderr = _stderr_of_a_warning(
        "train", ["train", "--out", "x"], "the loop could not be built; install a compiler"
    )
    assert stderr == "rnnkit: warning: the loop could not be built; install a compiler\n"


def test_a_warning_of_rnnkits_own_says_rnnkit_once():
    """The compiled loops' warnings begin 'rnnkit: ' (as a program importing rnnkit sees them), and the command line
    said 'rnnkit: warning: rnnkit: native word2vec unavailable (...)' where word2vec's or the RBM kernel's build
    failed (a read-only cache)."""
    message = "rnnkit: native word2vec unavailable (x); using the torch path"
    stderr = _stderr_of_a_warning("word2vec", ["word2vec", "--out", "x", "c.txt"], message)
    assert stderr == "rnnkit: warning: native word2vec unavailable (x); using the torch path\n"


def test_every_file_the_readme_names_is_there():
    """The README named `csrc/cells_traced.h`, a path that is not in the repository (it is the engine's,
    rnnkit/engine/csrc/cells_traced.h). Every `path/with/a.file` in backquotes must exist from the root."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    # (docs/engine.md: the README's section on the recurrent core in full)
    for doc, at_least in (("README.md", 10), ("docs/engine.md", 5)):
        named = re.findall(r"`([\w./*-]+/[\w.*-]+\.(?:py|h|cpp|md|toml))`", (root / doc).read_text())
        assert len(named) >= at_least, doc
        assert [p for p in named if not list(root.glob(p))] == [], doc


def _stderr_of_a_warning(command, argv, message) -> str:
    """The stderr of `rnnkit ARGV` (exit 0) in a fresh process, whose COMMAND only warns `message`."""
    code = (
        "import sys, warnings\n"
        "from rnnkit import cli\n"
        "real = cli.build_parser\n"
        "def warn(args):\n"
        f"    warnings.warn({message!r}, RuntimeWarning)\n"
        "def build(*args):\n"
        f"    parser = real(*args); parser.commands[{command!r}].set_defaults(func=warn); return parser\n"
        "cli.build_parser = build\n"
        f"sys.exit(cli.main({argv!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


def _source_root():
    """The folder of rnnkit's sources (pyproject.toml's), for the package builds; skips where setuptools is missing
    or rnnkit is imported from an installed copy."""
    import pathlib

    pytest.importorskip("setuptools", reason="setuptools (the build backend) is not installed here")
    root = pathlib.Path(rnnkit.__file__).parent.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("rnnkit is imported from an installed copy, not from its sources")
    return root


def test_an_attribute_that_is_no_name_is_no_submodule():
    """getattr(rnnkit, "cells.gru") gave the module rnnkit.cells.gru (importing torch), and hasattr(rnnkit, "a.b")
    or hasattr(rnnkit, ".") raised ModuleNotFoundError out of the package's lazy __getattr__: only a name is a
    submodule, anything else is an AttributeError."""
    code = (
        "import sys, rnnkit\n"
        "print([hasattr(rnnkit, n) for n in ('cells.gru', 'a.b', '.', 'cells..x', 'cells.nope')], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout == "[False, False, False, False, False] False\n", out.stderr


def test_every_positional_argument_says_what_it_takes(capsys):
    """`rnnkit tfidf index --help` listed DOCUMENTS with no word of what it takes (a folder of .txt files, or a
    file of one document a line: said only in `rnnkit tfidf --help`'s list), nor did ngram's MODEL, word2vec's
    CORPUS or tfidf search's INDEX: each positional argument of every command has a help text of its own."""
    import argparse

    from rnnkit.cli import build_parser

    def bare(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, p in action.choices.items():
                    yield from bare(p, [*path, name])
            elif not action.option_strings and not action.help:
                yield f"{' '.join(path)} {action.metavar or action.dest}"

    assert list(bare(build_parser(), [])) == []


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    """SIGTERM (timeout, a job scheduler, docker stop) killed a command outright: the --out folder it had made was
    left empty, where a Ctrl-C removes it, and a write under way left its temporary file. It runs the same clean-up,
    'rnnkit: terminated', exit 143."""
    import time

    root = pathlib.Path(rnnkit.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "rnnkit",
        "ising",
        "sweep",
        "--size",
        "32",
        "--burn-in",  # (stopped in its burn-in: past two measured sweeps a stop keeps their averages in --out)
        "10000000",
        "--out",
        str(out),
    ]
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as p:
        deadline = time.monotonic() + 60
        while not out.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.is_dir()
        time.sleep(0.5)  # into the sweep
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    # (before it, the sweep's bar: its first line and its last, as a log gets them)
    assert (p.returncode, err.splitlines()[-1]) == (143, "rnnkit: terminated") and "Traceback" not in err
    assert not out.exists()


def test_the_readmes_log_of_the_progress_bar_takes_stderr():
    """The README said the progress bar is a line every 30 s 'in a log, `2> log.txt` or `| tee`', but the bar is on
    stderr: `rnnkit train ... | tee log.txt` drew the live bar on the terminal and logged none of it. Every tee
    the README names takes stderr too."""
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    tees = re.findall(r"`[^`]*\| tee[^`]*`", text)
    assert tees and [t for t in tees if "2>&1 | tee" not in t] == []


def test_no_docstring_holds_a_surrogate_that_python_3_13_cannot_compile():
    """Python 3.13 cleans docstrings' indentation at compile time through UTF-8, and a docstring holding a lone
    surrogate (an escape such as '\\ud83d' written with one backslash) failed to compile there: `import rnnkit.text`
    raised "UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud83d' ... surrogates not allowed" on Python
    3.13.0, which pyproject's requires-python (>= 3.10) admits. Every docstring of the package, its tests and bench
    must be text that UTF-8 can encode."""
    import ast

    root = pathlib.Path(__file__).resolve().parent.parent
    found = []
    for p in sorted([*root.joinpath("rnnkit").rglob("*.py"), *root.joinpath("tests").rglob("*.py"),
                     *root.joinpath("bench").rglob("*.py")]):  # fmt: skip
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc and any("\ud800" <= c <= "\udfff" for c in doc):
                    found.append(f"{p.relative_to(root)}: {getattr(node, 'name', '<module>')}")
    assert not found, f"docstrings holding surrogates (write the escape with two backslashes): {found}"
