"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is a dict of tensors, numbers and strings saved with `torch.save` and read back with
`torch.load(..., weights_only=True)`, which refuses anything that would run code. It is written to
a temporary file in the same folder, flushed to disk, then renamed over the old one, so a crash or
Ctrl-C never leaves a half-written checkpoint.

    {"format": "rnnkit-charlm", "version": 1, "config": <RunConfig as JSON>, "chars": <vocabulary>,
     "model": state_dict, "optimizer": state_dict, "progress": {...}, "carry": [tensors], "rng": tensor}
"""

import os
import pathlib
import tempfile
import zipfile

import torch

from rnnkit.errors import RnnkitError

FORMAT = "rnnkit-charlm"
VERSION = 1


def save_checkpoint(path, payload: dict):
    path = pathlib.Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve(run) -> pathlib.Path:
    """RUN is a checkpoint file or a run folder (its best.pt, else latest.pt)."""
    run = pathlib.Path(run)
    if run.is_dir():
        for name in ("best.pt", "latest.pt"):
            if (run / name).is_file():
                return run / name
        raise RnnkitError(
            f"{run} holds no checkpoint (best.pt or latest.pt); train first with `rnnkit train --out {run}`"
        )
    if not run.is_file():
        raise RnnkitError(f"{run} not found; give a run folder or a checkpoint file")
    return run


def load_checkpoint(run) -> dict:
    path = resolve(run)
    if path.stat().st_size == 0 or not zipfile.is_zipfile(path):
        raise RnnkitError(
            f"{path} is not an rnnkit checkpoint (corrupt, truncated or another format); retrain or use another file"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or foreign files
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else e.__class__.__name__
        raise RnnkitError(
            f"{path} cannot be read as an rnnkit checkpoint ({reason}); it is corrupt or of another format"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise RnnkitError(
            f"{path} is not an rnnkit char-LM checkpoint (another format); give a file written by `rnnkit train`"
        )
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise RnnkitError(
            f"{path} was made by a newer rnnkit (checkpoint format v{ckpt.get('version')}, this one reads up to v{VERSION}); upgrade rnnkit"
        )
    return ckpt
