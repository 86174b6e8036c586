"""Write one benchmark's table into bench/RESULTS.md, between its own markers; and the checks of the
scripts' options.

Each benchmark owns a section `<!-- NAME:begin -->` ... `<!-- NAME:end -->`; re-running it replaces
only that section, so several benchmarks share the file.

The option checks are argparse `type=` functions: a bad value stops the script before any work with
argparse's usage and one line `SCRIPT: error: argument --OPTION: ...` (exit status 2), as
`ArgumentParser.error` does for the checks that involve more than one option.
"""

import argparse
import contextlib
import math
import os
import pathlib
import platform
import re
import sys
import tempfile
import time

import torch

from rnnkit._io import write_text
from rnnkit._native_build import cpu_fields, flocked

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def plural(n: int, word: str) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+"), else the architecture."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_key() -> str:
    """The CPU's vendor, generation where known, and vector width as torch sees it ("amd-zen4-avx512",
    "intel-avx512"): the engine's speed depends on all three, so each such CPU keeps its own section of
    RESULTS.md. A VM names a Zen 4 and a Zen 5 alike ("AMD EPYC"), and the Zen 5 (twice the GEMM rate) wrote
    over the Zen 4's section: the CPU family tells them apart."""
    name = cpu_name().lower()
    vendor = next((v for v in ("intel", "amd", "arm", "apple") if v in name), platform.machine().lower())
    capability = torch.backends.cpu.get_cpu_capability().lower()
    if vendor == "amd":
        family = cpu_fields("cpu family").get("cpu family", "")
        zen = {"23": "zen1-2", "25": "zen4" if capability == "avx512" else "zen3", "26": "zen5"}.get(family)
        vendor = f"amd-{zen or 'family' + family}" if family else vendor
    return f"{vendor}-{capability}"


def machine_line() -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), "
        f"{plural(torch.get_num_threads(), 'thread')}, torch {torch.__version__}"
    )


def update_results(name: str, markdown: str, partial: str | None = None) -> None:
    """Put `markdown` between NAME's markers in RESULTS.md, in place of what was there, or at the end.

    partial: the option that ran part of the script's table (`--only own`), or None: such a table is not written,
    said in one line, as it would replace the whole section with its few rows (the README's `engine.py --only own`
    left the machine's engine section at the 12 rows of cells of one's own). Two scripts that finish together
    write one after the other (an flock beside the system's temporary files): the later one kept only its own.

    A begin
    marker whose end is missing (an edit that cut it, a merge) is replaced up to the next section's begin marker or
    the end of the file: the block was appended after it before, and an end marker before its begin failed. An end
    marker after the next section's begin is not this one's (a later copy of the section), and was taken for it:
    the sections between went with the old block. Later copies of the section (a merge that kept both sides' blocks)
    are removed: re-running the benchmark left them, stale, beside the new table. A lock file that cannot be opened
    (another user's, in a shared /tmp) failed the run at its end, the section not written: it is written without the
    lock, said in one line."""
    if partial:
        print(f"bench/RESULTS.md is left as it is: {partial} runs part of the {name} table, which would replace the "
              "whole section; run without it to write the section (or give --no-write)", file=sys.stderr)  # fmt: skip
        return
    lock = os.path.join(tempfile.gettempdir(), "rnnkit-bench-results.lock")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(flocked(lock))
        # another user's lock (made 0644 by whoever ran first): the write is not lost for it
        except OSError as e:
            print(
                f"bench: cannot open the lock {lock} ({e.strerror}); RESULTS.md written without it",
                file=sys.stderr,
            )
        _update(name, markdown)


def _update(name: str, markdown: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    # (read as it is: read_text turned CRLF line endings into LF, written back so, every line of the file)
    text = (
        RESULTS.read_bytes().decode("utf-8")
        if RESULTS.exists()
        else "# Benchmark results\n\nWritten by the scripts in bench/.\n"
    )
    nl = "\r\n" if "\r\n" in text else "\n"  # the file's line endings
    block = f"{begin}\n{markdown.rstrip()}\n{end}".replace("\r\n", "\n").replace("\n", nl)
    # later copies of the section (a merge that kept both sides' blocks) are older runs of it: re-running it left
    # them in place, two tables of the same benchmark and machine, one of them stale
    while len(spans := _spans(text, begin, end)) > 1:
        i, j = spans[-1]
        head, tail = text[:i].rstrip("\r\n"), text[j:].lstrip("\r\n")
        text = head + (nl + nl + tail if tail else nl)
    if not spans:
        text = text.rstrip() + nl + nl + block + nl
    else:
        i, j = spans[0]
        if not text.startswith(end, j - len(end)):  # cut: up to the next begin, and kept apart from it
            block += nl + nl if j < len(text) else nl
        text = text[:i] + block + text[j:]
    write_text(RESULTS, text)  # a kill or a failed write leaves the old file whole, and no temporary file


def _spans(text: str, begin: str, end: str) -> list[tuple[int, int]]:
    """Where each copy of a section lies, (start, stop): from its begin marker to its end marker, or, where the end
    is missing, to the next section's begin marker or the end of the file (an end past the next begin is a later
    copy's, not this one's)."""
    spans, i = [], text.find(begin)
    while i >= 0:
        following = re.search(r"<!-- [^>]*:begin -->", text[i + len(begin) :])
        stop = i + len(begin) + following.start() if following else len(text)
        j = text.find(end, i, stop)
        j = j + len(end) if j >= 0 else stop
        spans.append((i, j))
        i = text.find(begin, j)
    return spans


def check_results(parser: argparse.ArgumentParser, args: argparse.Namespace, partial: str | None) -> None:
    """Before any work, unless --no-write or a partial run (update_results's `partial`, which writes nothing):
    RESULTS.md must read as UTF-8 and its folder take a new file (the write's temporary one), else argparse's one
    line. A RESULTS.md saved in another encoding (a '±' as Latin-1), or a checkout that is read-only, failed in a
    traceback at the end of the run, after all its timings."""
    if args.no_write or partial:
        return
    try:
        if RESULTS.exists():
            RESULTS.read_bytes().decode("utf-8")
        fd, probe = tempfile.mkstemp(dir=os.path.dirname(os.path.realpath(RESULTS)), prefix=".rnnkit-bench-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        parser.error(f"cannot write {RESULTS}: {e.strerror}; give --no-write to print the tables only")
    except UnicodeDecodeError as e:
        parser.error(f"{RESULTS} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as "
                     "UTF-8, or give --no-write to print the tables only")  # fmt: skip


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; a | inside a cell (|m|) is escaped, else it splits the cell and the table breaks."""

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def int_at_least(low: int, high: int | None = None):
    """argparse type: an integer >= low (and <= high)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def finite_float(low: float, strict: bool):
    """argparse type: a finite number > low (strict) or >= low."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {value:g}")
        return value

    return parse


def folder(text: str) -> str:
    """argparse type: a folder's path, not empty. An empty one (`--out "$OUT"` with OUT unset) is the current folder
    to pathlib: charlm.py's runs and energy.py's figures went there in silence, where rnnkit's own commands refuse
    it ('--out is empty')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a folder (`.` for the current one)")
    return text


def name_list(choices):
    """argparse type: comma-separated names, each one of `choices`, none twice; returns the list."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",")]
        if not all(names):
            raise argparse.ArgumentTypeError(
                f"an empty name in {text!r}; give comma-separated names from {','.join(choices)}"
            )
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown name {', '.join(map(repr, unknown))}; choose from {','.join(choices)}"
            )
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise argparse.ArgumentTypeError(f"{', '.join(twice)} given twice")
        return names

    return parse


def out_folder(parser: argparse.ArgumentParser, out: pathlib.Path) -> None:
    """Make the --out folder and a folder in it (removed again), or stop with argparse's one line: an --out that cannot
    be made (/proc/x) or that takes nothing new (/proc, a read-only mount), which a check of its permissions passes
    as root, failed in a traceback at the first run folder or figure, after minutes of work (charlm.py: its sampling
    timed first; energy.py: every part run)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=out, prefix=".rnnkit-bench-"))
    except OSError as e:
        parser.error(f"cannot write in the --out folder {out}: {e.strerror}; give another folder")


def run_main(main):
    """main() of a benchmark script, a Ctrl-C (KeyboardInterrupt) ending it in one line and exit status 130 instead
    of Python's traceback: RESULTS.md, written whole at the end of a run (atomically), is then as it was."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"\ninterrupted; {RESULTS.name} is as it was", file=sys.stderr)
        sys.exit(130)


def add_no_write(parser: argparse.ArgumentParser, section: str):
    """--no-write: print the tables only (every script has it)."""
    parser.add_argument(
        "--no-write",
        action="store_true",
        help=f"print the tables only; leave bench/RESULTS.md as it is (default: write the {section} section)",
    )
