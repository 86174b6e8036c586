"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is a dict of tensors, numbers and strings saved with `torch.save` and read back with
`torch.load(..., weights_only=True)`, which refuses anything that would run code. It is written to
a temporary file in the same folder, flushed to disk, then renamed over the old one, so a crash or
Ctrl-C never leaves a half-written checkpoint.

    {"format": "rnnkit-charlm", "version": 2, "config": <RunConfig as JSON>, "chars": <vocabulary>,
     "model": state_dict, "optimizer": state_dict, "param_names": [the optimizer's parameters, in its order],
     "progress": {...}, "carry": [tensors], "rng": tensor}

Version 2 lists the optimizer's parameters by name: an optimizer's state_dict knows them by position only.
Version 1 (no param_names) was written before the cells torch.nn has listed their parameters in torch.nn's
order; it had each b_xh right after its W_xh (train.loop.restore reads both).
"""

import collections
import os
import pathlib
import pickle
import re
import zipfile

import torch

from rnnkit._io import atomic_open, check_save_path, is_zip, refuse_empty
from rnnkit.errors import RnnkitError, said

FORMAT = "rnnkit-charlm"
VERSION = 2


_PLAIN = (
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.Size,
    torch.dtype,
    torch.device,
    torch.layout,
)


def _unloadable(x, where="payload"):
    """Where in `x` something sits that a weights_only load refuses (a numpy array, a config object, ...),
    or None: tensors, numbers, strings, bytes, dtypes, devices, None and dicts, lists, tuples and sets of them only."""
    # the types themselves: numpy's float64 and str_ subclass float and str, a defaultdict dict and a namedtuple
    # tuple, and loading refuses them all as objects of their own
    # (and what else torch's weights_only load reads: a complex number, bytes, a set, a torch.dtype or torch.device,
    # which a loop of one's own keeps beside its weights; they were refused, "convert it")
    if x is None or type(x) in _PLAIN or isinstance(x, torch.Tensor):
        return None
    if type(x) is set:
        return next((bad for v in x if (bad := _unloadable(v, f"{where} (a set)"))), None)
    if type(x) in (dict, collections.OrderedDict, collections.Counter):  # (a state_dict is an OrderedDict)
        for k, v in x.items():
            bad = _unloadable(k, where) or _unloadable(v, f"{where}[{k!r}]")
            if bad:
                return bad
        return None
    if type(x) in (list, tuple):
        return next((bad for i, v in enumerate(x) if (bad := _unloadable(v, f"{where}[{i}]"))), None)
    return f"{where} ({type(x).__name__})"


def save_checkpoint(path, payload: dict):
    """Write `payload` to `path` atomically (a temporary file, then a rename), in a form that loading reads back
    without executing code from it (weights_only): tensors, numbers, strings and containers of them."""
    refuse_empty(path, "a file name")
    path = pathlib.Path(path)
    bad = _unloadable(payload)
    if bad:
        raise RnnkitError(f"a checkpoint holds tensors, numbers, strings, dtypes and dicts/lists of them only; {bad} "
                          "is not one (convert it: torch.as_tensor(array), dataclasses.asdict(config))")  # fmt: skip
    check_save_path(path)
    # a payload's own "format" or "version" ({"version": "v1.2"} of one's own loop) was written, and the file was then
    # refused by load_checkpoint as damaged, of another format or newer; a loaded checkpoint saved again keeps its own
    version = payload.get("version", VERSION)
    if payload.get("format", FORMAT) != FORMAT or type(version) is not int or not 1 <= version <= VERSION:
        key = "version" if payload.get("format", FORMAT) == FORMAT else "format"
        raise RnnkitError(f"a checkpoint's {key!r} is its file format's ({FORMAT!r}, version 1 to {VERSION}), which "
                          f"loading checks; {payload[key]!r} can't be read back: store it under another key")  # fmt: skip
    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_open(path, "wb") as f:  # a temporary file, then a rename: the old checkpoint stays until then
        try:
            torch.save(payload, f)
        except RuntimeError as e:  # a write that failed (a full disk), which torch's zip writer says as
            # '[enforce fail at inline_container.cc:672] . unexpected pos 7936 vs 7864': the OSError it came from
            # (and a Ctrl-C inside it, raised by the zip writer's close as 'unexpected pos 46 vs 0': a traceback,
            # exit 1, where the command says 'interrupted')
            if isinstance(e.__context__, OSError | KeyboardInterrupt):
                raise e.__context__ from None
            raise


RUN_FILES = ("config.json", "vocab.json", "metrics.csv", "loss.png")  # a run's files besides its checkpoints


def resolve(run) -> pathlib.Path:
    """RUN is a checkpoint file or a run folder (its best.pt, else latest.pt)."""
    refuse_empty(run, "a run folder or a checkpoint file (`.` for the run in this folder)")
    run = pathlib.Path(run)
    if run.is_dir():
        for name in ("best.pt", "latest.pt"):
            if (run / name).is_file():
                return run / name
        from rnnkit.train.loop import _run_config

        if (run / "config.json").is_file() and not _run_config(run / "config.json"):  # word2vec's --out, ...
            raise RnnkitError(f"{run} holds another command's output, not a char-LM run; give a run folder of "
                              "`rnnkit train` or one of its checkpoints")  # fmt: skip
        # (a folder of runs, `rnnkit sample runs`, or of other files, `rnnkit sample .`: training into it is no fix;
        # os.path.isfile, which says False where a subfolder may not be read)
        try:
            inside = list(run.iterdir())
        except OSError:  # (a folder that can't be listed: said as before)
            inside = []
        runs = sorted(str(d) for d in inside if any(os.path.isfile(d / n) for n in ("best.pt", "latest.pt")))
        if runs:
            named = ", ".join(runs[:3]) + (", ..." if len(runs) > 3 else "")
            raise RnnkitError(f"{run} holds no checkpoint (best.pt or latest.pt), but {named} "
                              f"{'does: give it' if len(runs) == 1 else 'do: give one of them'}")  # fmt: skip
        if any(not f.name.startswith(".") and f.suffix != ".tmp" and f.name not in RUN_FILES for f in inside):
            raise RnnkitError(f"{run} holds no checkpoint (best.pt or latest.pt) and is no run folder of `rnnkit "
                              "train`; give a run folder or one of its checkpoints")  # fmt: skip
        raise RnnkitError(
            f"{run} holds no checkpoint (best.pt or latest.pt); train first with `rnnkit train --out {run}`"
        )
    if run.exists() and not run.is_file():  # (is_file alone said a FIFO was "not found")
        raise RnnkitError(f"{run} is not a regular file (a pipe, device or socket); give a run folder or a "
                          "checkpoint file")  # fmt: skip
    if not run.is_file():
        raise RnnkitError(f"{run} not found; give a run folder or a checkpoint file")
    return run


def load_checkpoint(run, resuming: bool = False) -> dict:
    """The checkpoint's dict, or one RnnkitError; `resuming`: read for `rnnkit train --resume`, whose error then
    says how to resume from the run's other checkpoint (a command reading a run takes a file given instead)."""
    path = resolve(run)
    try:  # zipfile.is_zipfile says False for a file it can't open: permission denied read as "corrupt"
        open(path, "rb").close()
    except OSError as e:
        raise RnnkitError(f"cannot read {path}: {e.strerror}; check its permissions") from None
    if path.stat().st_size == 0 or not is_zip(path):
        raise RnnkitError(
            f"{path} is not an rnnkit checkpoint (corrupt, truncated or another format); {_instead(path, resuming)}"
        )
    if _is_npz(path):  # also a zip file, whose torch.load error spoke of "inline_container.cc:180"
        raise RnnkitError(f"{path} is a numpy .npz file (an n-gram model? those take `rnnkit ngram sample|score|"
                          "complete|eval`), not an rnnkit char-LM checkpoint; give a file written by `rnnkit train`")  # fmt: skip
    damaged = _damaged_member(path)
    if damaged:
        raise RnnkitError(
            f"{path} is corrupt (the checksum of its {damaged} fails: changed on disk since it was written); "
            f"{_instead(path, resuming)}"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign files
        code = re.search(r"GLOBAL (\S+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if code:  # torch's own message says a load with weights_only=False "will likely succeed"
            raise RnnkitError(
                f"{path} holds a Python object ({code[1]}) that only running code from the file could make, which "
                f"rnnkit never does (weights_only); it is no rnnkit checkpoint; {_instead(path, resuming)}"
            ) from None
        reason = _first_words(str(e)) or e.__class__.__name__
        raise RnnkitError(
            f"{path} cannot be read as an rnnkit checkpoint ({reason}); it is corrupt or of another format; "
            f"{_instead(path, resuming)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        # --resume reads latest.pt and takes no file instead
        how = _instead(path, True) if resuming else "give a file written by `rnnkit train`"
        raise RnnkitError(f"{path} is not an rnnkit char-LM checkpoint (another format); {how}")
    if not isinstance(ckpt.get("version"), int) or isinstance(ckpt["version"], bool) or ckpt["version"] < 1:
        raise RnnkitError(
            f"{path} has no valid checkpoint format version ({ckpt.get('version')!r}); it is damaged; "
            f"{_instead(path, resuming)}"
        )
    if ckpt["version"] > VERSION:
        raise RnnkitError(
            f"{path} was made by a newer rnnkit (checkpoint format v{ckpt.get('version')}, this one reads up to v{VERSION}); upgrade rnnkit"
        )
    return ckpt


def _instead(path, resuming: bool = False) -> str:
    """What to do about an unreadable checkpoint: the run's other one where it has one."""
    other = {"best.pt": "latest.pt", "latest.pt": "best.pt"}.get(path.name)
    if resuming:  # --resume reads latest.pt only: a file can't be given instead
        if other and (path.parent / other).is_file():
            return f"to resume from the run's {other}, which may be whole, copy it over {path}; or start anew with --force"
        return "start the run anew with --force"
    if other and (path.parent / other).is_file():
        return f"the run's other checkpoint may be whole: give {path.parent / other}"
    return "retrain or use another file"


def _is_npz(path) -> bool:
    """A zip archive of .npy arrays only (numpy.savez: `rnnkit ngram train --out`), which torch.load can't read."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception:  # a damaged directory: torch.load says what it can't read
        return False
    return bool(names) and all(name.endswith(".npy") and "/" not in name for name in names)


def _damaged_member(path) -> str | None:
    """The first member of the checkpoint's zip archive whose CRC-32 fails, or None. torch.load does not check
    the checksums it writes, so a flipped byte inside a tensor would otherwise load as a different model."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception:  # a damaged directory or header: torch.load says what it can't read
        return None
    return None if bad is None else bad.split("/", 1)[-1]


def malformed_weights(state: dict) -> str | None:
    """What is wrong with a checkpoint's weights that are no state_dict: a key that is no weight's name (an int, a
    tuple, None) or a value that is no tensor (None, a string, a dict, a number); None where every key is a str and
    every value a tensor. An int key reached load_state_dict, whose line was "'int' object has no attribute
    'startswith'" ("does not fit this configuration ...; resume without changing model options" on --resume), and a
    value its 'expected torch.Tensor or Tensor-like object from checkpoint', advice of options never changed."""
    keys = [k for k in state if not isinstance(k, str)]
    if keys:
        shown = ", ".join(said(k)[:40] + f" ({type(k).__name__})" for k in keys[:3])
        return f"its weights are keyed by {shown}, not by names; a model's weights are named by strings"
    values = [k for k, w in state.items() if not isinstance(w, torch.Tensor)]
    if values:
        return (f"its weights {', '.join(values[:3])} are not tensors ({type(state[values[0]]).__name__}); "
                "a model's weights are tensors")  # fmt: skip
    return None


def hollow(t) -> bool:
    """Whether t is a tensor that holds no values to copy: of the meta device (its shape only) or sparse."""
    return isinstance(t, torch.Tensor) and (t.is_meta or t.layout != torch.strided)


def hollow_weights(state: dict) -> str | None:
    """What is wrong with a checkpoint's weights that hold no values a model can copy: tensors of the meta device
    (shapes without data, as a model built there saves them) or sparse ones; None where every tensor is dense. Such
    a weight reached load_state_dict, whose line (cut) named neither ('While copying the parameter named
    "head.weight", whose dimensions in the model are torch.Size([30, 16]) and ... torch.Size([3'), and --resume's
    checks, which said 'Tensor.item() cannot be called on meta tensors; resume without changing model options'."""
    for kind, what in ((lambda w: w.is_meta, "hold no values (meta tensors: their shapes only)"),
                       (lambda w: w.layout != torch.strided, "are sparse ({}); a model's are dense")):  # fmt: skip
        found = [(str(n), w) for n, w in state.items() if isinstance(w, torch.Tensor) and kind(w)]
        if found:
            return f"its weights {', '.join(n for n, _ in found[:3])} {what.format(found[0][1].layout)}"
    return None


def mismatch(e: Exception, limit: int = 160) -> str:
    """The line of a load_state_dict error that names what does not fit (its first line only says "Error(s) in
    loading state_dict for CharLM:"), cut to `limit` characters."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [e.__class__.__name__]
    return (lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0])[:limit]


def _first_words(message: str, limit: int = 120) -> str:
    """The first line of an exception's message, cut at a word boundary near `limit` characters."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."
