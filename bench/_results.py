"""Write one benchmark's table into bench/RESULTS.md, between its own markers.

Each benchmark owns a section `<!-- NAME:begin -->` ... `<!-- NAME:end -->`; re-running it replaces
only that section, so several benchmarks share the file.
"""

import pathlib
import platform
import time

import torch

RESULTS = pathlib.Path(__file__).with_name("RESULTS.md")


def machine_line() -> str:
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )


def update_results(name: str, markdown: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmark results\n\nWritten by the scripts in bench/.\n"
    )
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
