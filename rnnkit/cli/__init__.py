"""The `rnnkit` command line: subcommands only; each builds a config and calls the library.

Each group of subcommands lives in its own module with an `add_commands(subparsers)` function
that registers parsers whose `func` attribute takes the parsed arguments.
"""

import argparse
import codecs
import contextlib
import errno
import math
import os
import pathlib
import re
import sys

from rnnkit._io import dead_link, kind_of
from rnnkit.errors import RnnkitError, check_seed, interrupt_behind

# module name -> what it provides; each module registers its own subcommands.
COMMAND_MODULES = ["charlm", "energy", "text"]
# the commands that run without torch: main() imports it (see _import_torch) for every other one, and for none where
# there is no command (`rnnkit --help`), a help is asked, or one of these (it was 1.4 s and 225 MB of
# `rnnkit ngram score`'s 2 s)
TORCH_FREE = ("ngram", "tfidf", "markov", "neighbours")


def out_folder(path) -> pathlib.Path:
    """--out as a folder, made now: a file in its place is an error before any work starts."""
    if not str(path).strip():
        raise RnnkitError("--out is empty; give a folder (`--out .` for this one)")
    out = pathlib.Path(path)
    if out.exists() and not out.is_dir():
        raise RnnkitError(f"--out {out} is {kind_of(out)}; give a folder")
    if dead := dead_link(out):
        raise RnnkitError(dead)
    check_writable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnkitError(f"cannot make the --out folder {out}: {e.strerror}; give another folder") from None
    return out


def check_writable(out, folder=None) -> None:
    """One error, before any work, where --out can't be written: its folder (`out`, or `folder` where --out is a
    file; else the nearest folder that exists, which would hold it) is not writable. An existing read-only folder
    passed mkdir, and the command failed once its work was done, naming a temporary file (vectors.txt.x1y2z3.tmp)."""
    base = pathlib.Path(out if folder is None else folder).absolute()
    while not base.exists():
        base = base.parent
    if base.is_dir() and not os.access(base, os.W_OK | os.X_OK):
        raise RnnkitError(f"cannot write --out {out}: the folder {base} is not writable; give another --out")


def refuse_overwrite(out, outputs, inputs, what: str) -> None:
    """One error, before any work, where a file the command writes (`outputs`, into --out `out`) is a file it reads
    (`inputs`: its path, a link to it or a hard link): `rnnkit word2vec out/vectors.txt --out out` wrote its vectors
    over the corpus it had read, the corpus lost. `what` names an input in the error (CORPUS, --patterns).
    And where a file it writes is no file to write: a folder (the command failed once its work was done, "Is a
    directory: m.npz"), a device, a pipe or a socket (a link to /dev/null or a FIFO replaced by a file): `ngram train
    --out m` writes m.npz, which the check of the name given (m) never saw."""
    for path in map(pathlib.Path, outputs):
        if path.is_dir() or (path.exists() and not path.is_file()):
            kind = "a folder" if path.is_dir() else kind_of(path)
            raise RnnkitError(
                f"--out {out}: it writes {path}, which is {kind}; remove it or give another --out"
            )
    for given in inputs:
        for path in outputs:
            try:
                same = os.path.samefile(given, path)
            except OSError:  # either one missing: nothing to overwrite (the reader names a missing input)
                same = False
            if same:
                raise RnnkitError(f"--out {out} would overwrite {what} {given}: it writes {path}, the same file; "
                                  "give another --out")  # fmt: skip


def finite_or_null(values: dict) -> dict:
    """For --json: JSON has no infinity (json.dumps writes Infinity, which parsers refuse), so a value that is
    not finite is null: the perplexity of a text a model finds next to impossible (past 709.78 nats a token, the
    log of the largest float) or of probability 0 (an n-gram model without smoothing)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


@contextlib.contextmanager
def made_out_folder(path):
    """out_folder(path) for the work of a with block: a folder it made is removed again where the work fails
    (bad input found while reading, Ctrl-C) before anything was written into it, instead of left empty."""
    existed = pathlib.Path(path).exists()
    out = out_folder(path)
    try:
        yield out
    except BaseException:
        if not existed and not any(out.iterdir()):
            out.rmdir()
        raise


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose `fill(parser)`, where given, adds the parts that take more imports (train's table of
    presets, from its configs): build_parser calls it for the command that runs only, so that the others' parsers, and
    `rnnkit --help`, are built without them. No fill imports torch: every help is said without it."""

    def __init__(self, *args, fill=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fill = fill


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, each one whole (command None), or that of `command` only (the others without
    what their `fill` adds; '': none, for `rnnkit --help` and `rnnkit --version`)."""
    import importlib

    from rnnkit import __version__

    parser = Parser(
        prog="rnnkit",
        description="Recurrent neural networks as the lectures teach them, and the methods around them. "
        "`rnnkit COMMAND --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices  # name -> its parser, for errors in the command's own words
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rnnkit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"rnnkit.cli.{name}":  # that group is not built yet
                continue
            raise
        module.add_commands(sub)
    for name, p in parser.commands.items():
        if command in (None, name):
            _fill(p)
    _show_defaults(parser)
    return parser


def _fill(parser) -> None:
    if parser.fill:
        parser.fill(parser)
        parser.fill = None
        _show_defaults(parser)


def _command(argv) -> str:
    """The command that `rnnkit ARGV` runs: its first word that is not an option (rnnkit's own options, --help and
    --version, take no value), '' where there is none."""
    return next((word for word in argv if not word.startswith("-")), "")


def _show_defaults(parser):
    """Every option's help ends with its default, where it has one and the help doesn't say it already (as
    argparse's ArgumentDefaultsHelpFormatter, which skips options without a help text and shows None)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                _show_defaults(p)
            continue
        default, help = action.default, action.help or ""
        if (
            not action.option_strings
            or help == argparse.SUPPRESS
            or default is None
            or default is False
            or default == ""
            or default == argparse.SUPPRESS
            or isinstance(action, argparse._StoreConstAction | argparse._HelpAction | argparse._VersionAction)
            or re.search(r"\(default\b|default:", help)
        ):
            continue
        shown = str(default).replace("%", "%%")
        action.help = f"{help} (default: {shown})" if help else f"default: {shown}"


# the sizes to make smaller, by command (the character models' commands: their model's and batch's, see below)
_SIZES = {
    "word2vec": "--dimension, --batch-size, or a larger --min-count (a smaller vocabulary)",
    # (each beam kept holds the model's state and its scores; a run's sizes are its own: complete --beam 2**31 named
    # the training's --hidden-size, --batch-size and --seq-len)
    "complete": "--beam",
}
_CHARLM = ("train", "sample", "score", "complete", "eval")


def _out_of_memory(e, command=None) -> str | None:
    """One line for a failed allocation (a model or batch too big for this machine: --hidden-size 200000 asked
    for 640 GB and ended in a traceback from torch's allocator), or None for any other error. command: the one
    that ran, whose options the line names (word2vec's were named as the character model's --hidden-size)."""
    import re

    msg = str(e)
    if not (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "can't allocate memory" in msg
        or "Storage size calculation overflowed" in msg  # sizes past 2^63 bytes (word2vec --dimension 2**62)
    ):
        return None
    size = re.search(r"allocate (\d+) bytes", msg)
    size = (
        f"{int(size[1]) / 2**30:,.1f} GiB"
        if size
        else (re.findall(r"allocate ([\d.]+ \w+)", msg) or ["memory"])[0]
    )
    try:
        total = (
            f" (this machine has {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:,.1f} GiB)"
        )
    except (ValueError, OSError, AttributeError):
        total = ""
    sizes = _SIZES.get(command) or (
        "the model's --hidden-size/--num-layers, --batch-size, --seq-len or the command's own"
        if command is None or command in _CHARLM
        else f"the options of `rnnkit {command} --help` that set them"
    )
    return f"out of memory: an allocation of {size} failed{total}; choose smaller sizes ({sizes})"


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line says it: one line, not Python's `<frozen runpy>:88: RuntimeWarning: ...`
    (the first frame outside rnnkit, where a library's warning points, is the command's launcher). The library's
    own warnings begin 'rnnkit: ' (for a program that imports it), said once here, not 'rnnkit: warning: rnnkit: '."""
    return f"rnnkit: warning: {str(message).removeprefix('rnnkit: ')}\n"


def say(line: str) -> None:
    """print(line), a character the output's encoding lacks written escaped ('\\u03c7'), as the train loop writes a
    sample: the commands' own symbols (χ, α_c, ±) and a --out named in any language stopped the command on an ASCII
    stdout (PYTHONIOENCODING=ascii, a C locale without UTF-8 mode) with its work done and nothing written after the
    line ('the output holds characters ('\\u03c7') ...', exit 2): every temperature of ising sweep, rbm train's
    figures, the files after the first of --out; and a summary line naming a --out in another language made ngram
    train, word2vec and tfidf index exit 2 after their files were written."""
    try:
        print(line)
    except UnicodeEncodeError as e:  # (nothing of the line was written: it is encoded whole first)
        # the stream's own encoding: the error names an 8-bit code page's codec as 'charmap' (cp1251, koi8-r, cp437),
        # which is Latin-1, so 'é' went through unescaped and was refused again
        encoding = getattr(sys.stdout, "encoding", None) or e.encoding
        print(line.encode(encoding, "backslashreplace").decode(encoding))


def say_json(values: dict) -> None:
    """print() of `values` as a line of JSON, its characters as they are, or, where the output's encoding lacks one
    (PYTHONIOENCODING=ascii, a C locale without UTF-8 mode, a cp1252 redirect), in JSON's own escapes ('\\u4e2d', an
    emoji as its surrogate pair), which every JSON reader reads back as the same text: `rnnkit score --json` of a
    Chinese text, or complete --json, scored or completed it and then stopped, 'the output holds characters ...',
    exit 2, where eval --json, written in escapes always, wrote its line."""
    import json

    try:
        print(json.dumps(values, ensure_ascii=False))
    except UnicodeEncodeError:  # (nothing of the line was written: it is encoded whole first)
        print(json.dumps(values))


def print_pieces(pieces, first: str = "") -> None:
    """Print `first`, then each piece of a text as it is drawn, then a newline: a long --length shows its text at
    once (as char-rnn's sample.lua writes), and Ctrl-C keeps what was written (it came out all at the end, after
    memory for all of it: --length 10**20 printed nothing and grew until stopped)."""
    out, live, written = sys.stdout, sys.stdout.isatty(), False
    try:
        out.write(first)
        written = bool(first)
        for piece in pieces:
            out.write(piece)
            written = written or bool(piece)
            if live:
                out.flush()
    except KeyboardInterrupt:  # the line ended, so that 'rnnkit: interrupted' and the prompt start their own
        try:
            out.write("\n")
            out.flush()
        except (OSError, ValueError, KeyboardInterrupt):
            pass
        raise
    except Exception:
        # a piece the output's encoding lacks (nothing of it written: it is encoded whole first), or the model's
        # error while drawing (log-probabilities of NaN, a beam out of memory): the text so far ends its line, so
        # that main's 'rnnkit: error: ...' has its own (it was joined to the text, 'la cafrnnkit: error: ...', on a
        # terminal and in a 2>&1 log)
        if written:
            with contextlib.suppress(OSError, ValueError):
                out.write("\n")
                out.flush()
        raise
    out.write("\n")


PROGRESS_DELAY = 1.0  # seconds before drawn_bar draws its bar: a short text says nothing


@contextlib.contextmanager
def drawn_bar(pieces, desc: str, unit: str, total: int, delay: float | None = None):
    """`pieces` (of a text being drawn: sample, complete) counted by a bar on stderr where stdout is no terminal (on
    one the text is its own progress), after `delay` seconds (PROGRESS_DELAY): `sample --length 100000000 > out.txt`
    ran for hours with nothing on screen."""
    from tqdm import tqdm

    from rnnkit._io import bar_options

    delay = PROGRESS_DELAY if delay is None else delay
    bar = dict(desc=desc, unit=unit, unit_scale=True, delay=delay, total=total)
    with tqdm(pieces, **bar, **bar_options(not sys.stdout.isatty())) as drawn:
        yield drawn


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a job scheduler, docker stop), raised as a Ctrl-C is: the same clean-up runs."""


def _terminate(signum, frame):
    raise _Terminated


def _import_torch() -> None:
    """import torch with a Ctrl-C during it held until it is done, then raised: torch's import lost one that came in part
    of its first half second (its C++ start-up calls back into Python, where a KeyboardInterrupt raised is swallowed:
    the command ran on to its end, exit 0, or aborted, 'terminate called after throwing an instance of
    pybind11::error_already_set'). Only where SIGINT has Python's own handler, in the main thread, and torch is not
    imported yet."""
    import signal
    import threading

    if "torch" in sys.modules or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        import torch  # noqa: F401
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def _forget_unhandled_interrupt() -> None:
    """A KeyboardInterrupt that left an exec() or eval() of a string (dataclasses and named tuples are made so:
    torch._dynamo's import, seconds of every sample) sets CPython's flag of one left unhandled, caught or not
    (_Py_UnhandledKeyboardInterrupt, in pythonrun.c's run_eval_code_obj), and `python -m rnnkit` then killed itself
    with SIGINT at exit (-2), after 'rnnkit: interrupted', not 130. Each exec of a string clears the flag as it
    starts."""
    exec("")


def _names_as_bytes(out) -> bool:
    """Write the bytes of a name that is not UTF-8 as they are, as Python itself does on a C-locale stdout and as ls
    and cat do: where stdout is strict (a UTF-8 locale such as en_US.UTF-8, PYTHONIOENCODING=utf-8), a file or folder
    named in Latin-1 ('caf\\xe9.txt', read by Python as 'caf\\udce9.txt') stopped every command at its first line
    that names it, 'the output holds characters ('\\udce9') ...; convert the text, e.g. with iconv', exit 2: train
    before its first step, ngram train, word2vec and tfidf index with their files written. Only those stand-ins
    (U+DC80..U+DCFF) are written so; any other character the encoding lacks is still refused. Whether it was
    strict (main puts it back)."""
    if getattr(out, "errors", None) != "strict" or not hasattr(out, "reconfigure"):
        return False
    try:
        out.reconfigure(errors="surrogateescape")
    except (OSError, ValueError):  # (a closed or detached stream: left as it is)
        return False
    return True


def main(argv=None) -> int:
    """Run `rnnkit ARGS`, returning its exit status. main() reads sys.argv (the `rnnkit` script, python -m rnnkit):
    a Ctrl-C is said as 'rnnkit: interrupted', exit 130, no traceback, and a SIGTERM as 'rnnkit: terminated', exit
    143, after the same clean-up (it killed the process there: an empty --out folder and a write's temporary file
    were left behind). main(argv), a call from a program, raises KeyboardInterrupt again after the command's own
    clean-up, so a loop of calls stops, and leaves SIGTERM to the program; a train run's Ctrl-C or SIGTERM is
    still its own: the run saved, 130 or 143 returned."""
    import signal
    import threading
    import warnings

    if sys.stderr is None:  # closed (`2>&-`, pythonw): a bar's first write stopped the command, unsaid
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the process's stderr from here on)
    # stdout closed (`>&-`, pythonw): print() writes nowhere, and the samplers' own writes (print_pieces) ended in a
    # traceback, exit 1; their text goes nowhere too
    # (in UTF-8 and surrogatepass, which write any character: in the locale's encoding, ASCII under LC_ALL=C, a line
    # of 'é' that goes nowhere stopped the command, exit 2, where print() to no stdout had written nothing)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8", errors="surrogatepass")  # noqa: SIM115 (the process's)
    # (the command line's own stdout only: a program calling main(argv) keeps its stream as it set it up)
    strict = sys.stdout if argv is None and _names_as_bytes(sys.stdout) else None
    format_warning, warnings.formatwarning = warnings.formatwarning, _warning_line
    term = (  # a SIGTERM ignored or handled by whoever started the process is left so
        argv is None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )
    if term:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # an interrupt that Python raised as another error (errors.interrupt_behind) is said as the interrupt it is:
        # it ended in a traceback, exit 1, where a Ctrl-C says 'rnnkit: interrupted', exit 130
        try:
            return _main(argv)
        except Exception as e:
            if (interrupt := interrupt_behind(e)) is None:
                raise
            raise interrupt from None
    except (
        KeyboardInterrupt
    ) as e:  # in the commands' imports (torch's, the first second of each) or their work
        if argv is not None:  # a program's call: its loop stops
            raise
        terminated = isinstance(e, _Terminated)
        print(f"rnnkit: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        warnings.formatwarning = format_warning
        if strict is not None:
            with contextlib.suppress(OSError, ValueError):  # (a closed pipe: its BrokenPipeError is said)
                strict.reconfigure(errors="strict")
        if term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if argv is None:  # the process's exit status is ours: see _forget_unhandled_interrupt
            _forget_unhandled_interrupt()


# the options that name a file or folder (markov's --text: its chain's file), each expanded as the shell would
PATH_OPTIONS = ("out", "patterns", "images", "data_dir", "text")


def _expand_user(args) -> None:
    """~ at the start of a path option given as one word, `--out=~/runs` (the shell expands a ~ only at a word's
    start): a folder named '~' was made in the current one and said as '~/runs', read as the home folder (--data-dir
    alone was expanded, by train). Expanded here, for every command, as `--out ~/runs` is by the shell."""
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, os.path.expanduser(value))
        elif isinstance(value, list):
            setattr(args, name, [os.path.expanduser(v) if isinstance(v, str) else v for v in value])


def _named(args) -> str:
    """The command that ran, with its action where it has one: 'hopfield capacity', 'ngram train' (the action's
    dest is `action`, or the group's name for ngram and tfidf)."""
    action = getattr(args, "action", None) or getattr(args, args.command, None)
    return f"{args.command} {action}" if isinstance(action, str) else args.command


def _refused_by(e: UnicodeEncodeError, encoding: str) -> bool:
    """Whether `e` is the error of writing its text in `encoding` (the output's): the codec it names is that
    encoding's, or 'charmap', the codec of every 8-bit code page (cp1252, cp1251, cp437, koi8-r), where `encoding`
    refuses its characters too: `rnnkit sample` on a cp1252 stdout (Windows' redirected output,
    PYTHONIOENCODING=cp1252) of a model that writes 中 ended in a traceback, exit 1, where an ASCII or Latin-1
    stdout is one line, exit 2."""
    if codecs.lookup(e.encoding).name == codecs.lookup(encoding).name:
        return True
    if e.encoding != "charmap":
        return False
    try:
        e.object[e.start : e.end].encode(encoding)
    except UnicodeEncodeError as again:
        return again.encoding == "charmap"
    return False


def _main(argv) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command(words)
    parser = build_parser("")
    if own := parser.commands.get(command):
        _fill(own)
    args, extra = parser.parse_known_args(words)
    if extra:  # said by the action's parser (its usage) in two-level commands, else by the command's
        own = getattr(args, "_parser", None) or parser.commands.get(getattr(args, "command", None), parser)
        own.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # torch imported now, the guarded way, where the command runs on it: once its arguments are parsed, so that a
    # help or a usage error is said without it (`train --help`, `sample RUN --length abc`: 3-5 s, where 0.2 s)
    if argv is None and args.command not in TORCH_FREE:
        _import_torch()
    _expand_user(args)
    try:
        check_seed(getattr(args, "seed", None))  # one range for every command's --seed
        return args.func(args) or 0
    except RnnkitError as e:
        print(f"rnnkit: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError, numpy MemoryError
        said = _out_of_memory(e, getattr(args, "command", None))
        if said is None:
            raise
        print(f"rnnkit: error: {said}", file=sys.stderr)
        return 2
    except (
        UnicodeEncodeError
    ) as e:  # text the output's encoding lacks (a latin-1 locale, a redirect on Windows)
        out = sys.stdout.encoding or "utf-8"
        if not _refused_by(e, out):
            raise
        held = e.object[e.start : e.end]
        # a byte that is not UTF-8, typed in a Latin-1 terminal ('caf\udce9'): no encoding writes it, and
        # PYTHONIOENCODING=utf-8, said as the fix, was the setting it failed under
        from rnnkit.data.corpus import bytes_hint

        fix = bytes_hint(held).strip(" ()") or "set PYTHONIOENCODING=utf-8 (or PYTHONUTF8=1)"
        print(f"rnnkit: error: the output holds characters ({held!r}) that its encoding, {out}, can't write; {fix}",
              file=sys.stderr)  # fmt: skip
        return 2
    except BrokenPipeError as e:  # the reader went away (`rnnkit sample ... | head`): not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no second error when Python flushes stdout at exit)
        if getattr(args, "command", None) == "train":  # a run cut short: its exit 0 read as a run done
            saved = (pathlib.Path(args.out) / "latest.pt").is_file()
            how = "continue with --resume" if saved else "start it again"
            if saved and args.dry_run:  # (--resume refuses a dry run)
                how = "start it again with --force"
            # (the train loop's EIO, a terminal that hung up, or a log file's failing disk: the reader went away
            # said only the first)
            what = ("could not be written (input/output error: a terminal that hung up, or a failing disk)"
                    if e.errno == errno.EIO else "was closed (its reader went away)")  # fmt: skip
            with contextlib.suppress(OSError):  # (stderr the same closed pipe: 2>&1 | head)
                print(f"rnnkit: error: the output {what} and the run stopped; {how}", file=sys.stderr)
            return 2
        if getattr(args, "out", None):  # a command that writes files: cut short, those may be missing
            with contextlib.suppress(OSError):
                print(f"rnnkit: error: the output was closed (its reader went away) before `rnnkit {_named(args)}` "
                      "finished; what it writes to --out may be missing: run it again with its output kept "
                      "(> log.txt)", file=sys.stderr)  # fmt: skip
            return 2
        return 0
    except OSError as e:  # the machine's, not the input's: a full disk, a path it can't write or read
        where = f": {e.filename}" if e.filename else ""
        print(f"rnnkit: error: {e.strerror or e}{where}; check the path, its permissions and the free space "
              "(files written before are left as they were)", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
