"""Training a character language model with truncated BPTT, top to bottom.

    for each step:
        window k of the B streams -> model(batch) -> (logits, loss)     state carried, detached
        loss.backward(); clip; optimizer.step()
        every eval_every steps: validation loss (nats/char, bits/char), checkpoints, loss curve
        every sample_every steps: a sample
    stop at max_steps / max_epochs / time_budget; Ctrl-C or SIGTERM saves and exits; NaN or 3x the
    initial loss (char-rnn's rule) stops with the last good checkpoint kept.

The loop only calls `model(batch) -> (logits, loss)`, `model.state` and `model.sample(...)`.
"""

import collections
import contextlib
import copy
import dataclasses
import errno
import hashlib
import json
import math
import numbers
import os
import pathlib
import re
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rnnkit._io import bar_options, dead_link, kind_of, write_text
from rnnkit._threads import threads_for_the_work
from rnnkit.data.bptt import StreamBatches, eval_streams, split
from rnnkit.data.corpus import load_corpus
from rnnkit.engine import native
from rnnkit.errors import RnnkitError, TooLarge, finite_real
from rnnkit.models.charlm import _IGNORE, CharLM, _as_ids, weights_misfit
from rnnkit.train.checkpoint import (
    _instead,
    hollow,
    hollow_weights,
    load_checkpoint,
    malformed_weights,
    mismatch,
    save_checkpoint,
)
from rnnkit.train.config import RunConfig, validate
from rnnkit.train.metrics import LN2, MetricsLog, load_plotting, plot_losses
from rnnkit.train.optim import clip_gradients, lr_at_epoch, make_optimizer, set_lr

RUN_FILES = ["config.json", "vocab.json", "metrics.csv", "loss.png", "latest.pt", "best.pt"]
EXPLODE = 3.0  # char-rnn aborts when the loss exceeds 3x the initial loss
DRY_RUN_STEPS = 4
DRY_RUN_ID = "dry-run:"  # before the corpus id of a dry run's checkpoints
POSTFIX_EVERY = 0.1  # seconds between settings of the bar's numbers (a live bar is drawn every 0.5 s at most)
VAL_BAR_DELAY = 2.0  # seconds a validation runs before its bar is drawn (a short one draws none)
SPEED_STEPS = 100  # the bar's chars_s: the mean speed of the last steps (one step's ranged 9,400 to 262,281)


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    window: int = 0  # next window of the current epoch
    elapsed: float = (
        0.0  # seconds of training so far, all sessions; validation, samples, checkpoints excluded
    )
    best_val: float = math.inf
    initial_loss: float = 0.0
    smooth_loss: float = 0.0  # running average of the train loss, for the explosion test (0: not started)
    corpus_id: str = ""  # the corpus's length and hash: a resumed run must read the same text


def fingerprint(tokens) -> str:
    """Length and hash of the token array (a memory map too: hashed in place, about 1 GB/s)."""
    data = np.ascontiguousarray(tokens)
    return f"{len(data)}:{hashlib.blake2b(memoryview(data).cast('B'), digest_size=8).hexdigest()}"


def check_out(out, resume: bool, force: bool) -> pathlib.Path:
    """The run folder, checked (nothing is written or removed yet: see clear_out)."""
    if not str(out).strip():
        raise RnnkitError("--out is empty; give a run folder (`--out .` for this one)")
    out = pathlib.Path(out)
    if resume and force:
        raise RnnkitError("give --resume (continue the run) or --force (replace it), not both")
    if out.exists() and not out.is_dir():
        raise RnnkitError(f"--out {out} is {kind_of(out)}; give a folder")
    if dead := dead_link(out):
        raise RnnkitError(dead)
    base = out.absolute()
    while not base.exists():  # the folder that will hold it: it must be a folder we may write in
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        if resume and base == out.absolute():  # the run's own folder: another one has nothing to resume
            raise RnnkitError(f"cannot resume {out}: the folder is not writable (its permissions, or a read-only "
                              "file system); make it writable, then --resume again")  # fmt: skip
        why = "is a file" if not base.is_dir() else "is not writable"
        raise RnnkitError(f"cannot make the --out folder {out}: {base} {why}; give another folder")
    # the checkpoints are what a run would lose: a run that saved none (stopped while the engine compiled, before its
    # first step) starts again, and a folder holding only a best.pt is not written over
    latest, best = ((out / name).exists() for name in ("latest.pt", "best.pt"))
    # (a folder there was read as a run folder: 'train first with `rnnkit train --out RUN/latest.pt`')
    if resume and (out / "latest.pt").is_dir():
        how = "copy the run's best.pt to latest.pt to resume from there, or " if best else ""
        raise RnnkitError(f"{out / 'latest.pt'} is a folder, not a checkpoint; remove it, then {how}start anew "
                          "with --force")  # fmt: skip
    # a run file that is a folder (or a device, a pipe) failed once the run wrote it, after config.json and vocab.json
    # (metrics.csv: "Is a directory"), or in --force's unlink; a link --force removes (not its target) is no matter
    for name in RUN_FILES:
        if (out / name).exists() and not (out / name).is_file() and not (force and (out / name).is_symlink()):
            what = "a folder" if (out / name).is_dir() else kind_of(out / name)
            raise RnnkitError(f"{out / name} is {what}, where the run writes its {name}; remove it, or give another "
                              "--out folder")  # fmt: skip
    config = out / "config.json"
    other = config.exists() and not _run_config(config)  # another command's (word2vec's --out has one)
    if other and not (latest or best) and not force:
        raise RnnkitError(f"{out} holds another command's output (its config.json is not a char-LM run's); "
                          "give another --out folder, or --force to write this run over its config.json")  # fmt: skip
    if resume and not latest:
        how = (
            "copy its best.pt to latest.pt to resume from there"
            if best
            else "drop --resume to start a new run"
        )
        raise RnnkitError(f"nothing to resume in {out} (no latest.pt); {how}")
    if (latest or best) and not resume and not force:
        if _is_dry_run(out / ("latest.pt" if latest else "best.pt")):  # which --resume refuses
            raise RnnkitError(f"{out} already holds a dry run (a smoke test, not a run to continue); --force to "
                              "replace it, or give another --out folder")  # fmt: skip
        how = (
            "use --resume to continue it"
            if latest
            else "copy its best.pt to latest.pt and --resume to continue it,"
        )
        raise RnnkitError(f"{out} already holds a run; {how} or --force to replace it")
    return out


def check_corpus_kept(corpus, out: pathlib.Path) -> None:
    """One line, before any work, where the corpus file is one the run writes into `out` (run/vocab.json, or a link
    to it): it was read, then replaced (or removed by --force's clear_out), the corpus lost. A corpus of another
    name in the run folder is read and kept: --force removes the run's own files alone (and a hard link elsewhere
    keeps its text: the run's files are replaced by a rename, never written in place)."""
    if not corpus or not os.path.isfile(corpus):
        return
    real = pathlib.Path(os.path.realpath(corpus))  # the folder's entry the reads go through
    try:
        inside = os.path.samefile(real.parent, out)
    except OSError:  # no --out folder yet: nothing to overwrite
        return
    if inside and real.name in RUN_FILES:
        raise RnnkitError(f"--out {out} would overwrite CORPUS {corpus}: the run writes its {real.name} there; "
                          "move the corpus out of the run folder or give another --out")  # fmt: skip


def _is_dry_run(path) -> bool:
    """Whether the checkpoint is a dry run's (its progress's corpus_id starts with DRY_RUN_ID), read memory-mapped:
    its tensors are not read. A file that can't be read is not (--resume says what is wrong with it)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return str(ckpt["progress"]["corpus_id"]).startswith(DRY_RUN_ID)
    except Exception:
        return False


def _recorded_best(path, corpus_id) -> tuple[float, str]:
    """The val best.pt records as its own (its progress's best_val), read memory-mapped, and ""; or inf and what is
    wrong with the file: missing, can't be read (damaged, truncated), a dry run's or another corpus's. A kill between
    a validation's best.pt and its latest.pt left latest.pt recording the best of before: higher, and a resume's worse
    validation then replaced the better best.pt; lower (the best of a best.pt since deleted), and a resume's better
    validation did not replace the worse one."""
    if not os.path.exists(path):
        return math.inf, "is missing"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["progress"]
        # (a run saved before the corpus's id was kept: its best.pt is this corpus's, as _check_corpus takes its latest.pt)
        saved_id = saved.get("corpus_id") or corpus_id
        if saved_id != corpus_id:
            dry = saved_id == DRY_RUN_ID + corpus_id
            return math.inf, "is a dry run's" if dry else "is another corpus's"
        val = float(saved["best_val"])
    except Exception:
        return math.inf, "can't be read"
    return (val, "") if val >= 0 else (math.inf, "can't be read")  # (NaN, negative: a damaged record)


def _file_id(path):
    """Which file `path` is now (checkpoints are replaced, never written in place), or None where there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _run_config(path) -> bool:
    """Whether the file is a char-LM run's config.json (sections data, model and train)."""
    try:
        return set(json.loads(path.read_text(encoding="utf-8-sig"))) == {"data", "model", "train"}
    except (OSError, ValueError, TypeError):
        return False


@contextlib.contextmanager
def _writing(out: pathlib.Path):
    """While the run writes to `out`: an flock on the folder (the system lets it go when the process ends, however
    it ends). Two runs in one folder at once (a --resume or --force in another terminal) each wrote there: both
    runs' rows interleaved in metrics.csv, the last writer's checkpoints, the running one's files removed. Made
    here, before clear_out removes anything; no lock without fcntl or on a file system that refuses flock. A folder
    made here is removed again where the run fails before writing into it (a disk full at config.json, Ctrl-C), as
    the other commands do (made_out_folder), instead of left empty."""
    existed = out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnkitError(f"cannot make the --out folder {out}: {e.strerror}; give another folder") from None
    try:
        with _locked(out):
            yield
    except BaseException:
        with contextlib.suppress(OSError):
            if not existed and not any(out.iterdir()):
                out.rmdir()
        raise


@contextlib.contextmanager
def _locked(out: pathlib.Path, busy: str | None = None):
    """_writing's flock on the folder `out`; held elsewhere, an RnnkitError of `busy` (default: another run's)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(out, os.O_RDONLY)
    except OSError:  # a folder that can't be opened to read (write-only): no lock
        yield
        return
    _held_fds.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RnnkitError(busy or f"another run is writing to {out}; wait for it to end (then --resume), or "
                                  "give another --out folder") from None  # fmt: skip
        yield
    finally:
        # (not in a child forked inside the block: it closed its copy, and the number may be reused)
        if fd in _held_fds:
            _held_fds.discard(fd)
            os.close(fd)


# The run folders' descriptors _locked holds open. A child forked meanwhile (by another thread: a program's worker)
# had a copy of each, which kept the folder's flock held for as long as the child lived: once the run had ended, its
# --resume was refused ('another run is writing to ...'). The child closes its copies at once (the lock stays the
# parent's), as rnnkit._native_build does with its build locks.
_held_fds: set = set()


def _close_held_fds():
    for fd in list(_held_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_fds)


def clear_out(out: pathlib.Path, force: bool):
    """With --force, remove the old run's files, once the new run's options and corpus have passed their checks (a
    typo must not cost the old run), and any run file a kill left half-written (the folder: made by _writing)."""
    for name in RUN_FILES if force else []:
        (out / name).unlink(missing_ok=True)
    # atomic_open's temporary files, mkstemp's exact names NAME.XXXXXXXX.tmp (a user's vocab.json.mine.tmp stays)
    pattern = re.compile(f"(?:{'|'.join(map(re.escape, RUN_FILES))})" + r"\.[a-z0-9_]{8}\.tmp")
    for tmp in out.iterdir():
        if pattern.fullmatch(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


def evaluate(model, batches, progress: bool = False, bar: dict | None = None) -> float:
    """Mean loss in nats per character over every window (each character scored once; a padded target, -100, is
    none), from a fresh state; the training state is kept.
    `progress`: a bar on stderr counting the characters predicted, with their rate and an ETA (`rnnkit eval`).
    `bar`: tqdm's options for that bar instead (a run's validation: drawn after a delay, cleared at its end), which
    also shows the mean loss so far."""
    carried, was_training = model.state, model.training
    model.eval()
    model.reset_state()
    total, n, windows = 0.0, 0, 0
    # the characters a StreamBatches predicts: B streams of L (all its windows, the last one ragged or dropped)
    chars = (
        batches.B * min(len(batches) * batches.T, batches.L) if isinstance(batches, StreamBatches) else None
    )
    options, loss_shown = (bar_options(progress), False) if bar is None else (bar, True)
    bar = tqdm(total=chars, desc="eval", unit=" chars", unit_scale=True, **options)
    loss_shown, shown_at = loss_shown and not bar.disable, -math.inf
    try:
        with torch.no_grad():
            for batch in batches:
                _, loss = model(batch)
                # the characters the window's mean loss is over: a target of _IGNORE (padding) is none of them
                scored = int((_as_ids(batch.ys) != _IGNORE).sum())
                if scored:  # (padding alone: a mean loss of NaN)
                    total += float(loss) * scored
                n, windows = n + scored, windows + 1
                # the loss so far set once in POSTFIX_EVERY s (by tqdm's clock), once the bar is drawn (after its
                # delay): a short validation sets it never, as the step bar's numbers are set (3-8 µs each)
                now = bar._time() if loss_shown and n else None
                if now is not None and now >= bar.start_t + bar.delay and now - shown_at >= POSTFIX_EVERY:
                    shown_at = now
                    bar.set_postfix(loss=f"{total / n:.3f}", refresh=False)
                bar.update(scored)
    finally:  # also on Ctrl-C, so that the checkpoint then saved carries the training state
        bar.close()
        model.state = carried
        model.train(was_training)
    if not n:  # (a ZeroDivisionError)
        raise RnnkitError(
            "evaluate was given no windows: give the batches of a split with at least one window"
            if windows == 0
            else f"evaluate was given {windows} window(s) whose targets are all padding (-100): none is scored"
        )
    return total / n


def window_loss(model, batch, state) -> float:
    """The loss of one window run from `state` with the current weights (eval mode, no grad); the training
    state is kept."""
    carried, was_training = model.state, model.training
    model.eval()
    model.state = state
    try:
        with torch.no_grad():
            _, loss = model(batch)
    finally:
        model.state = carried
        model.train(was_training)
    return float(loss)


def sample_text(model, chars, cfg, step: int) -> str:
    """A sample primed with a newline (or the first character), seeded by the step for reproducibility."""
    prime = [chars.index("\n")] if "\n" in chars else [0]
    gen = torch.Generator().manual_seed(cfg.train.seed + step)
    was_training = model.training
    model.eval()
    ids = model.sample(prime, cfg.train.sample_length, cfg.train.sample_temperature, generator=gen)
    model.train(was_training)
    return "".join(chars[i] for i in ids)


def checkpoint_payload(cfg, chars, model, optimizer, progress) -> dict:
    state = model.state
    carry = [] if state is None else list(state) if isinstance(state, tuple) else [state]
    return {
        "config": json.dumps(cfg.to_dict()),
        "chars": "".join(chars),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "param_names": [name for name, _ in model.named_parameters()],
        "progress": dict(vars(progress)),
        "carry": carry,
        "rng": torch.get_rng_state(),
    }


# what a checkpoint needs to resume, each of its kind (a damaged or foreign file ended in a traceback: KeyError, ...)
RESUME_PARTS = {"config": str, "chars": str, "model": dict, "optimizer": dict, "progress": dict, "carry": list | tuple,
                "rng": torch.Tensor}  # fmt: skip


def _check_resumable(ckpt, path):
    """One error for a checkpoint that lacks a part --resume reads, or holds one of another kind."""
    bad = [key for key, kind in RESUME_PARTS.items() if not isinstance(ckpt.get(key), kind)]
    bad += ["rng"] if isinstance(ckpt.get("rng"), torch.Tensor) and ckpt["rng"].dtype != torch.uint8 else []
    # tensors without values (meta, sparse) and an optimizer state_dict of other containers, which reached torch's
    # loaders: 'does not fit this configuration (Cannot copy out of meta tensor; no data!); resume without changing
    # model options' ('NoneType' object is not iterable, of param_groups None), of options never changed
    bad += ["rng"] if hollow(ckpt.get("rng")) else []
    bad += (
        ["carry"] if isinstance(ckpt.get("carry"), list | tuple) and any(map(hollow, ckpt["carry"])) else []
    )
    if isinstance(ckpt.get("optimizer"), dict):
        states, groups = ckpt["optimizer"].get("state", {}), ckpt["optimizer"].get("param_groups", [])
        if (not isinstance(states, dict) or not all(isinstance(s, dict) for s in states.values())
                or not isinstance(groups, list | tuple) or not all(isinstance(g, dict) for g in groups)
                or any(hollow(v) for s in states.values() for v in s.values())):  # fmt: skip
            bad.append("optimizer")
    if bad:
        raise RnnkitError(f"{path} is damaged (its {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} missing or "
                          f"malformed); {_instead(path, True)}")  # fmt: skip
    malformed = malformed_weights(ckpt["model"])
    if malformed:  # (an int key: "does not fit this configuration ('int' object has no attribute ...)")
        raise RnnkitError(f"{path} is damaged ({malformed}); {_instead(path, True)}")


def restore(ckpt, model, optimizer, batches, path="latest.pt") -> Progress:
    """Put a checkpoint's weights, optimizer state, carried state and rng into model, optimizer and torch's
    generator; its progress returned. A refused checkpoint (an error raised) leaves all of them as they were: one
    refused after its weights were in (a damaged rng, progress or carried state) left a caller who caught the
    error a model changed in part."""
    from rnnkit import CELLS

    # (the default, a str, failed in the damaged-checkpoint line: 'str' object has no attribute 'name')
    path = pathlib.Path(path)
    valueless = hollow_weights(ckpt["model"])
    # (meta or sparse: 'Tensor.item() cannot be called on meta tensors; resume without changing model options')
    if valueless:
        raise RnnkitError(f"{path} is damaged ({valueless}); {_instead(path, True)}")
    complex_ = [name for name, w in ckpt["model"].items() if isinstance(w, torch.Tensor) and w.is_complex()]
    if complex_:  # load_state_dict kept the real part, with only torch's warning (as load_run says it)
        raise RnnkitError(f"{path} is damaged (its weights {', '.join(complex_[:3])} are complex numbers; a model's "
                          f"are real); {_instead(path, True)}")  # fmt: skip
    whole = [n for n, w in ckpt["model"].items() if isinstance(w, torch.Tensor) and not w.is_floating_point()]
    if whole:  # copied into the model in silence, and trained on
        raise RnnkitError(f"{path} is damaged (its weights {', '.join(whole[:3])} are {ckpt['model'][whole[0]].dtype}: "
                          f"whole numbers or bools; a model's are floating-point); {_instead(path, True)}")  # fmt: skip
    # (training never saves them: the resume's first step said 'loss became nan ...; a lower --lr', of a damaged file)
    broken = [
        n for n, w in ckpt["model"].items() if isinstance(w, torch.Tensor) and not bool(w.isfinite().all())
    ]
    if broken:
        raise RnnkitError(f"{path} is damaged (its weights {', '.join(broken[:3])} hold NaN or infinite values); "
                          f"{_instead(path, True)}")  # fmt: skip
    carry = ckpt["carry"]
    n, shape = CELLS[model.cfg.cell].num_states, (model.cfg.num_layers, batches.B, model.cfg.hidden_size)
    if carry and (
        len(carry) != n or any(not isinstance(s, torch.Tensor) or tuple(s.shape) != shape for s in carry)
    ):
        raise RnnkitError(f"{path} is damaged (its carried state is not {n} tensor{'s' if n > 1 else ''} of shape "
                          f"{shape}); {_instead(path, True)}")  # fmt: skip
    # (never saved: a step whose state went NaN or infinite has a NaN loss, and the run stops before its checkpoint;
    # an infinite one was taken, and the first step said 'loss became nan ...; a lower --lr', of a damaged file)
    if any(not bool(s.isfinite().all()) for s in carry):
        raise RnnkitError(
            f"{path} is damaged (its carried state holds NaN or infinite values); {_instead(path, True)}"
        )
    kept = torch.get_rng_state()
    try:  # (of another size: said as a configuration that does not fit, to resume 'without changing' options)
        torch.set_rng_state(ckpt["rng"])  # tried, and put back until the rest has passed
    except RuntimeError:
        raise RnnkitError(f"{path} is damaged (its rng is not a state of torch's random generator: "
                          f"{ckpt['rng'].numel()} bytes); {_instead(path, True)}") from None  # fmt: skip
    finally:
        torch.set_rng_state(kept)
    progress = _saved_progress(ckpt["progress"], len(batches), path)
    # the optimizer's checks read it loaded (torch fills in its newer settings), and load_state_dict copies the
    # weights that fit before it refuses one that does not: both are put back if any of it fails
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    moments = copy.deepcopy(optimizer.state_dict())
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(_in_model_order(ckpt, model))
        # torch fills in settings newer than the file; one it lacks (betas) was a KeyError traceback at the first
        # step
        lacking = sorted(
            {k for group in optimizer.param_groups for k in optimizer.defaults if k not in group}
        )
        if lacking:
            raise RnnkitError(f"{path} is damaged (its optimizer state lacks the settings {', '.join(lacking)}); "
                              f"{_instead(path, True)}")  # fmt: skip
        # and one of another kind (betas (0.9,): 'not enough values to unpack' from inside the first step); the lr
        # is set anew at every step
        odd = next(((k, group[k], v) for group in optimizer.param_groups for k, v in optimizer.defaults.items()
                    if k != "lr" and not _same_kind(group[k], v)), None)  # fmt: skip
        if odd:
            raise RnnkitError(f"{path} is damaged (its optimizer setting {odd[0]} is {odd[1]!r}, where the run's "
                              f"optimizer takes a value like {odd[2]!r}); {_instead(path, True)}")  # fmt: skip
        # and a parameter's moments it lacks (exp_avg) were a KeyError traceback from inside the first step
        need = _state_keys(optimizer)
        for name, p in model.named_parameters():
            # (no state at all: the optimizer starts it, as its first step does)
            missing = sorted(need - set(optimizer.state.get(p) or need))
            if missing:
                raise RnnkitError(f"{path} is damaged (its optimizer state of {name} lacks {', '.join(missing)}); "
                                  f"{_instead(path, True)}")  # fmt: skip
            # (exp_avg None: "expected Tensor as element 0 in argument 2, but got NoneType" from the first step's
            # fused kernel, a traceback)
            odd = sorted(k for k, v in (optimizer.state.get(p) or {}).items() if k in need and
                         not isinstance(v, torch.Tensor | numbers.Real))  # fmt: skip
            if odd:
                raise RnnkitError(f"{path} is damaged (its optimizer state of {name} holds no tensor as "
                                  f"{', '.join(odd)}); {_instead(path, True)}")  # fmt: skip
            # (never saved: a step whose gradient is not finite is not taken; the first step's weights became NaN)
            if any(
                isinstance(v, torch.Tensor) and not bool(v.isfinite().all())
                for v in optimizer.state.get(p, {}).values()
            ):
                raise RnnkitError(f"{path} is damaged (its optimizer state of {name} holds NaN or infinite values); "
                                  f"{_instead(path, True)}")  # fmt: skip
            # (never saved either: a count of steps, or a sum or mean of squared gradients, below 0; the update's root or
            # bias correction turned the weights NaN, said 'loss became nan at step 4 ...; a lower --lr')
            negative = sorted(
                k
                for k, v in optimizer.state.get(p, {}).items()
                if k in NON_NEGATIVE and isinstance(v, torch.Tensor) and bool((v < 0).any())
            )
            if negative:
                raise RnnkitError(f"{path} is damaged (its optimizer state of {name} has a negative "
                                  f"{', '.join(negative)}); {_instead(path, True)}")  # fmt: skip
        # the optimizer's own settings over the file's, which load_state_dict took: a resume from Python with another
        # weight_decay (written to config.json) stepped with the run's old one; the moments stay the file's
        for group, own in zip(optimizer.param_groups, moments["param_groups"], strict=True):
            group.update({k: v for k, v in own.items() if k != "params"})
    except BaseException:
        model.load_state_dict(weights)
        optimizer.load_state_dict(moments)
        raise
    model.state = None if not carry else tuple(carry) if len(carry) == 2 else carry[0]
    torch.set_rng_state(ckpt["rng"])
    return progress


# the optimizer state that is never below 0: the steps taken (each optimizer's step), Adam's second moments (and their
# maximum), RMSprop's mean of squared gradients and Adagrad's sum of them
NON_NEGATIVE = {"step", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"}


def _same_kind(value, default) -> bool:
    """Whether an optimizer setting read from a checkpoint is of its default's kind: a finite number for a number
    (a one-element float tensor too, as torch takes a rate), a tuple or list of as many for a tuple (betas). Other
    settings (the switches, foreach and fused, which older runs may hold otherwise) are torch's to read."""
    if isinstance(default, tuple):
        ok = isinstance(value, tuple | list) and len(value) == len(default)
        return ok and all(_same_kind(x, d) for x, d in zip(value, default, strict=True))
    if isinstance(default, bool) or not isinstance(default, int | float):
        return True
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = value.item()
    return isinstance(value, int | float) and finite_real(value)  # (an int past float's range: not one)


def _state_keys(optimizer) -> set:
    """What one step of `optimizer` keeps for each parameter (Adam's step, exp_avg, exp_avg_sq), read off a step of
    one of its kind and settings (the run's, not the file's: a damaged lr is set anew at each step) on a parameter
    of its own."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    probe = type(optimizer)([p], **optimizer.defaults)
    probe.step()
    return set(probe.state[p])


def _check_corpus(corpus, ckpt, out):
    """A resumed run reads the text it was trained on (a dry run's checkpoint is not resumed)."""
    corpus_id = fingerprint(corpus.tokens)
    saved_id = ckpt["progress"].get("corpus_id") or corpus_id  # runs saved before it was kept: not checked
    if isinstance(saved_id, str) and saved_id.startswith(DRY_RUN_ID):
        raise RnnkitError(f"{out} holds a dry run (a few steps on a slice of the corpus, its config the dry "
                          "run's limits), not a run to continue; start the run with --force")  # fmt: skip
    what = ("its vocabulary differs" if "".join(corpus.chars) != ckpt["chars"]
            else "same characters, other text" if saved_id != corpus_id else None)  # fmt: skip
    if what:
        raise RnnkitError(f"the corpus of {out} has changed ({what}); start a new run with --force")


def _check_windows(cfg, ckpt, out):
    """A resume cuts the corpus as the run did: its progress (window k of an epoch), carried state and validation
    split are counted in its seq_len, batch size and val_frac (an edited config.json, or another config given from
    Python, read other text as window k, or trained on the validation text); and it steps with the run's optimizer,
    whose state latest.pt holds (another one's first step was a KeyError traceback), and the run's cell (gru and
    gru_cho, rnn_tanh and rnn_relu have weights of the same shapes: one loaded into the other in silence)."""
    try:
        saved = json.loads(ckpt["config"])
        saved = {**saved["data"], "optimizer": saved["train"]["optimizer"], "cell": saved["model"]["cell"]}
    except (ValueError, TypeError, KeyError):  # a config that can't be read: the checks after it speak
        return
    windows = "in whose windows its progress, carried state and validation split are counted"
    for key, why in [("seq_len", windows), ("batch_size", windows), ("val_frac", windows),
                     ("optimizer", "whose state latest.pt holds"), ("cell", "whose weights latest.pt holds")]:  # fmt: skip
        given = getattr({"optimizer": cfg.train, "cell": cfg.model}.get(key, cfg.data), key)
        if key in saved and saved[key] != given:
            raise RnnkitError(f"cannot resume {out} with {key} {given}: the run was trained with {saved[key]}, "
                              f"{why}; resume with {key} {saved[key]}, or start a new run with --force")  # fmt: skip


def _saved_progress(saved, windows: int, path) -> Progress:
    """The checkpoint's progress, checked: fields of Progress, each of its kind, and a window of the `windows` of an
    epoch (a damaged or foreign file ended in a traceback from Progress(**saved) or from the first window read)."""
    kinds = {f.name: f.type for f in dataclasses.fields(Progress)}
    if not isinstance(saved, dict) or any(
        k not in kinds
        or isinstance(v, bool)
        or not isinstance(v, (int, float) if kinds[k] is float else kinds[k])
        for k, v in saved.items()
    ):
        raise RnnkitError(
            f"{path} is damaged (its progress is malformed: {str(saved)[:100]}); {_instead(path, True)}"
        )
    progress = Progress(**saved)
    # NaN or inf: elapsed < budget was never true, and every resume said 'done' without a step (exit 0); a NaN
    # initial loss turned the explosion test off
    numbers = (progress.elapsed, progress.initial_loss, progress.smooth_loss)
    # (a negative epoch: the first step's 'epoch must be a number >= 0 (the epochs completed), got -3', no file named)
    if not all(0 <= v < math.inf for v in numbers) or math.isnan(progress.best_val) or progress.epoch < 0:
        raise RnnkitError(
            f"{path} is damaged (its progress is malformed: {str(saved)[:100]}); {_instead(path, True)}"
        )
    if not 0 <= progress.window < windows or progress.step < 0:
        raise RnnkitError(f"{path} is damaged (its progress is at window {progress.window} of an epoch of "
                          f"{windows}); {_instead(path, True)}")  # fmt: skip
    return progress


def _in_model_order(ckpt, model) -> dict:
    """The checkpoint's optimizer state_dict with its parameters listed in the model's order (an optimizer's
    state_dict pairs them by position). A version-1 checkpoint has no param_names: then every b_xh came right
    after its W_xh (before the cells torch.nn has took torch.nn's order, W_hh before b_xh)."""
    state = ckpt["optimizer"]
    params = dict(model.named_parameters())
    names = list(params)
    saved = ckpt.get("param_names")
    if saved is None:
        saved = []
        for name in names:
            if not (name.endswith("b_xh") and name[: -len("b_xh")] + "W_xh" in names):
                saved.append(name)
            if name.endswith("W_xh") and name[: -len("W_xh")] + "b_xh" in names:
                saved.append(name[: -len("W_xh")] + "b_xh")
    groups = state.get("param_groups", [])
    if saved != names and len(groups) == 1 and sorted(saved) == sorted(names):
        ids = dict(zip(saved, groups[0]["params"]))
        state = {**state, "param_groups": [{**groups[0], "params": [ids[name] for name in names]}]}
    # torch's load_state_dict checks no tensor's shape, and the fused Adam step then crashed the process
    # (a segmentation fault) on moments of another parameter's shape
    ids = [i for group in state.get("param_groups", []) for i in group.get("params", [])]
    for name, i in zip(names, ids):
        for key, value in state.get("state", {}).get(i, {}).items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape != params[name].shape:
                raise ValueError(f"optimizer {key} of {name} is {tuple(value.shape)}, the parameter "
                                 f"{tuple(params[name].shape)}")  # fmt: skip
    return state


def dry_run_chars(cfg: RunConfig) -> int:
    """The length of a dry run's slice of the corpus: enough for a few windows and a validation split."""
    return max(20_000, 6 * cfg.data.batch_size * cfg.data.seq_len)


def load_data(cfg: RunConfig, dry_run: bool):
    corpus = load_corpus(cfg.data.corpus, cfg.data.data_dir)
    tokens = corpus.tokens
    if dry_run:  # a tiny slice
        tokens = tokens[: dry_run_chars(cfg)]
    B, T = cfg.data.batch_size, cfg.data.seq_len
    # the corpus itself too short, said first: the split's "use --val-frac 0" led there, a two-step dead end
    if len(tokens) < B * T + 1:
        n_train = len(tokens) - int(round(len(tokens) * cfg.data.val_frac))  # (as split holds out)
        part = f" ({n_train:,} for training)" if 0 < n_train < len(tokens) else ""
        raise RnnkitError(
            f"the corpus's {len(tokens):,} characters{part} are too few for {B} streams of windows of {T} (need at "
            f"least {B * T + 1:,} for training); use a longer corpus or a smaller --batch-size/--seq-len"
        )
    train_tokens, val_tokens = split(tokens, cfg.data.val_frac)
    if len(train_tokens) < B * T + 1:  # the corpus is long enough: the split took too much
        # (a split holds out 2 characters at least: with fewer to spare, no lower --val-frac but 0 leaves enough)
        how = "lower --val-frac" if len(tokens) - (B * T + 1) >= 2 else "use --val-frac 0 (no validation)"
        raise RnnkitError(
            f"--val-frac {cfg.data.val_frac:g} leaves {len(train_tokens):,} of the corpus's {len(tokens):,} "
            f"characters for training, too few for {B} streams of windows of {T} (need at least {B * T + 1:,}); "
            f"{how}{', or a smaller --batch-size/--seq-len' if B * T > 1 else ''}"
        )
    batches = StreamBatches(train_tokens, B, T)
    val_batches = (
        eval_streams(val_tokens, cfg.data.batch_size, cfg.data.seq_len) if len(val_tokens) > 1 else None
    )
    return corpus, batches, val_batches


def train(cfg: RunConfig, out, resume=False, force=False, dry_run=False, log=print) -> int:
    """Train (or continue) the run in folder `out`; returns the exit status (0, or 130 after Ctrl-C, 143
    after SIGTERM).
    `log` takes each line the run writes: the header, validation losses, samples, the Ctrl-C notice and the last
    line (`print` by default; `lambda line: None` for none). The progress bar is drawn on stderr.
    `cfg.train.threads` holds for the run only: the caller's thread count is put back after it.
    With `resume=True` the cell, the weights' sizes, the corpus, the windows (seq_len, batch size, val_frac) and the
    optimizer must be the run's (else a one-line RnnkitError); the other settings are taken from `cfg` as given (a
    lower lr or another clip norm to go on with, say), and config.json is rewritten with them. `rnnkit train --resume` instead keeps
    the run's own config.json and refuses flags that change it."""
    # (the count of before the first of the runs under way in the process, put back: see rnnkit._threads)
    with threads_for_the_work():
        return _train(cfg, out, resume, force, dry_run, log)


def _train(cfg, out, resume, force, dry_run, log):
    if resume and dry_run:  # its steps on a slice would land in the run, and its config replace the run's
        raise RnnkitError(
            "--dry-run with --resume would train the run on a slice of its corpus and rewrite its config; "
            "resume without --dry-run (a dry run takes a new --out folder)"
        )
    out = check_out(out, resume, force)
    check_corpus_kept(cfg.data.corpus, out)
    read = _file_id(out / "latest.pt") if resume else None  # (before reading it: a newer one is then refused)
    ckpt = load_checkpoint(out / "latest.pt", resuming=True) if resume else None
    validate(cfg)  # (before a dry run's limits, which would pass a --sample-every -1 that the run refuses)
    if dry_run:
        # its limits are set on a copy: a run trained with the caller's config next took them
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train))
        cfg.train.max_steps = min(cfg.train.max_steps or DRY_RUN_STEPS, DRY_RUN_STEPS)  # fewer if asked
        cfg.train.eval_every = min(cfg.train.eval_every, 2)
        cfg.train.sample_every = 2 if cfg.train.sample_every else 0
        cfg.train.sample_length = min(cfg.train.sample_length, 40)
    if ckpt is not None:
        _check_resumable(ckpt, out / "latest.pt")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        corpus, batches, val_batches = load_data(cfg, dry_run)
    except RnnkitError:  # too short for the windows and split: a resumed run's corpus that changed says so
        if ckpt is not None:  # (not the split's advice, an option a resume can't change)
            _check_corpus(load_corpus(cfg.data.corpus, cfg.data.data_dir), ckpt, out)
        raise
    chars = corpus.chars
    corpus_id = fingerprint(corpus.tokens)
    if ckpt is not None:
        _check_corpus(corpus, ckpt, out)
        _check_windows(cfg, ckpt, out)
    cfg.model.vocab_size = len(chars)
    if (
        ckpt is not None
    ):  # sizes its weights don't have (an edited config.json): said before they are allocated
        with torch.random.fork_rng(devices=[]):
            misfit = weights_misfit(cfg.model, ckpt["model"])
        if misfit:
            raise RnnkitError(f"{out / 'latest.pt'} does not fit this configuration ({misfit}); resume without "
                              "changing model options")  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    try:
        model = CharLM(cfg.model)
    # sizes no tensor holds (--hidden-size 10**17: 'Storage size calculation overflowed'; 10**19: 'Overflow when
    # unpacking long long') ended in torch's traceback; an allocation that fails is out of memory, said by the CLI
    except (RuntimeError, TypeError, TooLarge) as e:  # (TooLarge: CharLM's line for a size of 2^63 or more)
        if not isinstance(e, TooLarge) and "overflow" not in str(e).lower():
            raise
        m = cfg.model
        raise RnnkitError(f"--hidden-size {m.hidden_size} and --embedding-size {m.embedding_size} make no model: a "
                          "weight would be larger than any tensor (2^63 bytes); choose smaller sizes") from None  # fmt: skip
    optimizer = make_optimizer(model.parameters(), cfg.train)
    try:
        progress = (
            restore(ckpt, model, optimizer, batches, out / "latest.pt") if ckpt is not None else Progress()
        )
    except RnnkitError:
        raise
    # (weights keyed by numbers, not names: load_state_dict's AttributeError "'int' object has no attribute ...")
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RnnkitError(
            f"{out / 'latest.pt'} does not fit this configuration ({mismatch(e)}); resume without changing model options"
        ) from None
    progress.corpus_id = DRY_RUN_ID + corpus_id if dry_run else corpus_id  # a dry run is not resumed
    with _writing(out):
        # the folder read again under the lock: a run that wrote there and ended since was written over (a --resume
        # went on from the latest.pt of before, a new run replaced a run without --force)
        check_out(out, resume, force)
        if resume and _file_id(out / "latest.pt") != read:
            raise RnnkitError(f"{out / 'latest.pt'} was replaced by another run while this one started; "
                              "--resume again to continue from it")  # fmt: skip
        # before a finished run's return too: a kill inside its last writes left their temporary files
        clear_out(out, force)
        if resume:  # the val best.pt holds, where it says: a new best is one better than that file's model
            # (not the lower of the two: a kill between the first best.pt of a resume without one and its latest.pt
            # left latest.pt recording the lost best, lower, and better validations than best.pt's were not kept)
            recorded, unusable = _recorded_best(out / "best.pt", progress.corpus_id)
            progress.best_val = recorded if math.isfinite(recorded) else progress.best_val
        # (under the lock: a run writing there still was taken as finished from its latest.pt, exit 0)
        if ckpt is not None and (done := _finished(cfg, progress, batches, out)):
            _redraw_stale_plot(out)
            log(done)  # exit status 0: a restart loop that resumes a finished run sees it done, not failed
            return 0
        if resume and math.isfinite(progress.best_val) and unusable:
            # (deleted, or latest.pt copied into a folder of its own; damaged, truncated, another corpus's: no file
            # held the best the run recorded, the closing line named its val, and no later validation, all worse,
            # wrote best.pt again; Keras's ModelCheckpoint(save_best_only) after a restart likewise writes its file
            # at the first validation)
            log(f"{out / 'best.pt'} {unusable}: the run's best (val {_nats(progress.best_val)}) is gone with it; "
                "the next validation writes best.pt again")  # fmt: skip
            progress.best_val = math.inf
        write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        write_text(out / "vocab.json", json.dumps(chars, ensure_ascii=False) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        used = (
            f"{len(corpus.tokens):,} chars"  # (a dry run's header gave the whole corpus's, not its slice's)
        )
        if dry_run and len(corpus.tokens) > dry_run_chars(cfg):
            used = f"the first {dry_run_chars(cfg):,} of its {used} (dry run)"
        log(
            f"corpus {corpus.name}: {used}, vocabulary {len(chars)} (ln V = {math.log(len(chars)):.3f}); "
            f"{cfg.model.cell} {cfg.model.num_layers}x{cfg.model.hidden_size}, {n_params:,} parameters; "
            f"{len(batches):,} window{'' if len(batches) == 1 else 's'} of {cfg.data.batch_size}x{cfg.data.seq_len} "
            f"per epoch -> {out}"
        )
        metrics = MetricsLog(out / "metrics.csv", resume_step=progress.step if ckpt is not None else None)
        native.load()  # a first run compiles the engine here, before the clock of --time-budget starts
        load_plotting()  # where a Ctrl-C stops the run as in the build (in the loop, a second one cut it half-way)
        return _loop(cfg, out, model, optimizer, progress, batches, val_batches, chars, metrics, log)


# (--lr and --clip-norm cannot change on --resume: the advice names --force, not a resume that refuses them)
RETRY = "start again with --force and a lower --lr or --clip-norm"
RETRY_LR = "start again with --force and a lower --lr"
RETRY_SET = "start again with --force and a lower --lr, or set --clip-norm (0 now: off; 1, say)"


def _retry(t) -> str:
    """The advice after a blow-up: where --clip-norm is 0 (off) one to set, not a lower one (below 0: refused)."""
    return RETRY if t.clip_norm > 0 else RETRY_SET


def _total_steps(cfg, batches) -> int | None:
    limits = [cfg.train.max_steps] if cfg.train.max_steps else []
    if cfg.train.max_epochs:
        # char-rnn runs floor(max_epochs * windows) iterations; the 1e-9 keeps 0.29 * 100 at 29, and a run
        # always takes at least one step; steps past a float's range (1e307 epochs: inf) are 2^63, never reached
        limits.append(max(1, math.floor(min(cfg.train.max_epochs * len(batches) + 1e-9, 2.0**63))))
    return min(limits) if limits else None


def _finished(cfg, progress, batches, out) -> str | None:
    """A resumed run already at one of its limits (--max-steps at or below its step, the run's own limit that
    stopped it) took no step, said 'done' and rewrote its config with that limit: the line that says so, with the
    flag to raise (the run is left as it was), or None."""
    t, step = cfg.train, progress.step
    if t.max_steps and step >= t.max_steps:
        where, fix = f"step {step} (--max-steps {t.max_steps})", f"--max-steps above {step} (0: no limit)"
    elif t.max_epochs and step >= _total_steps(cfg, batches):
        epoch = progress.epoch + progress.window / len(batches)
        where, fix = (
            f"step {step}, epoch {epoch:.4g} (--max-epochs {t.max_epochs:g})",
            "a larger --max-epochs (0: no limit)",
        )
    elif t.time_budget and progress.elapsed >= t.time_budget * 60:
        # (a budget under 6 s read '(0.0 trained)'; in 3 significant digits throughout, a day's run '1.44e+03 trained')
        minutes = progress.elapsed / 60
        trained = f"{minutes:.1f}" if minutes >= 1 else f"{minutes:.3g}"
        where = f"the end of its --time-budget of {t.time_budget:g} minutes ({trained} trained)"
        fix = "a larger --time-budget (minutes of training in all, across restarts; 0: no limit)"
    else:
        return None
    return f"the run in {out} is already at {where}: nothing to do; to train on, resume with {fix}"


def _redraw_stale_plot(out):
    """loss.png drawn again where it is missing or older than metrics.csv: a kill after a finished run's last
    checkpoint and row, before its plot (in its last sample), left the plot of an earlier validation for good."""
    png, rows = out / "loss.png", out / "metrics.csv"
    if rows.is_file() and (not png.is_file() or png.stat().st_mtime_ns < rows.stat().st_mtime_ns):
        plot_losses(MetricsLog.rows_of(rows), png)


def _loop(cfg, out, model, optimizer, progress, batches, val_batches, chars, metrics, log) -> int:
    t = cfg.train
    total = _total_steps(cfg, batches)
    budget = t.time_budget * 60 if t.time_budget else math.inf

    # the output's reader went away at a line: the step under way finished and saved, then the BrokenPipeError raised
    # (it was raised from the line, in a validation: the steps since the last checkpoint were lost)
    closed = []

    def say(line):
        """line to `log`, the bar cleared (validation lines and samples went to stdout whatever `log` was). A sample
        of characters the output's encoding lacks ('→' on an ASCII stdout) is written escaped ('\\u2192'): it
        stopped the run, the steps since the last checkpoint lost."""
        if closed:
            return
        with tqdm.external_write_mode():
            try:
                try:
                    log(line)
                except UnicodeEncodeError as e:
                    # (print's stream's own encoding: the error names an 8-bit code page's codec 'charmap' (cp1251),
                    # which is Latin-1, and a sample's 'é' was refused again, the run stopped)
                    encoding = (getattr(sys.stdout, "encoding", None) if log is print else None) or e.encoding
                    try:
                        log(str(line).encode(encoding, "backslashreplace").decode(encoding))
                    # (a log of its own on such a stream: the error's 'charmap' kept 'é', refused again)
                    except UnicodeEncodeError:
                        log(str(line).encode("ascii", "backslashreplace").decode("ascii"))
            except (
                OSError
            ) as e:  # (`| head`, a pager quit; EIO: the terminal hung up): the run stops after this
                if e.errno not in (errno.EPIPE, errno.EIO):  # step, saved
                    raise
                closed.append(e)

    def save(name):
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):  # the last update overflowed
            raise RnnkitError(
                f"the weights became NaN or infinite at step {progress.step}; stopped, last good checkpoint in "
                f"{out}; {_retry(t)}"
            )
        save_checkpoint(out / name, checkpoint_payload(cfg, chars, model, optimizer, progress))

    chars_per_step = batches.B * batches.T
    recent = collections.deque(maxlen=SPEED_STEPS)  # the last steps' seconds, for the bar's chars_s
    # listed once: walking model.parameters() (its modules' generators) at every step's clip took 12-19 µs
    params = list(model.parameters())
    model.train()
    # a good checkpoint exists before the first step can go wrong; saved before the bar is drawn (an error saving
    # it was said at the end of the bar's line)
    if progress.step == 0:
        save("latest.pt")
    # no bar where there is no stderr (closed: `2>&-`, pythonw): its first write stopped the run, unsaid, exit 1
    # on a terminal a live bar; in a log (stderr no terminal) a line every LOG_EVERY s, not '\r' updates run together
    style = bar_options(live=dict(dynamic_ncols=True, mininterval=0.5))
    # a validation's own bar (40 s for 5% of 112 MB, the step bar still): drawn once it has run VAL_BAR_DELAY s,
    # below the step bar, and cleared at its end; in a log a line every LOG_EVERY s, at the log's left (a bar
    # below another is drawn with the terminal's cursor-up codes, which a log keeps as garbage)
    val_style = dict(style, leave=False, delay=VAL_BAR_DELAY, **({"position": 0} if "file" in style else {}))
    style["file"] = val_style["file"] = _Closable(
        style.get("file") or sys.stderr, closed
    )  # (`2>&1 | head`: as the lines' stdout)
    bar = tqdm(total=total, initial=progress.step, unit="step", **style)
    carried, rng, stepped, row = model.state, None, True, None
    postfix_at = -math.inf  # when the bar's numbers were last set (perf_counter's seconds)
    stop = _StopAfterStep(say)
    put_back = _warnings_above()
    try:
        while (total is None or progress.step < total) and progress.elapsed < budget:
            if progress.window == 0:
                model.reset_state()  # a new epoch reads each stream from its start
            # a step stopped half-way is undone to here: its state, and the random stream its dropout drew from
            carried, rng, stepped, row = model.state, torch.get_rng_state(), False, None
            set_lr(optimizer, lr_at_epoch(t, progress.epoch))
            stop.continued, t0, cpu0 = False, time.perf_counter(), time.process_time()
            window = progress.window
            _, loss = model(batches.window(window))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(params, t.clip_norm, t.clip_value)
            loss = loss.detach().item()
            smooth = _check_loss(loss, progress, out, grad_norm, _retry(t))
            # held from the update to the step's row, written: a second Ctrl-C in the update, or before it is counted,
            # undid a step taken; one before its validation (in the bar's update) or in it stopped the run with the
            # step kept and its validation lost for good (no val_loss in its row, a best.pt that --resume never made);
            # one before the row was marked written wrote it again
            with stop.held():
                optimizer.step()
                stepped, progress.smooth_loss = True, smooth
                progress.step += 1
                progress.window = (progress.window + 1) % len(batches)
                progress.epoch += progress.window == 0
                dt = time.perf_counter() - t0
                if stop.continued:  # stopped in the step (Ctrl-Z, then fg): the time stopped is no training
                    dt = sum(recent) / len(recent) if recent else time.process_time() - cpu0
                progress.elapsed += dt
                speed = chars_per_step / max(dt, 1e-9)
                recent.append(dt)
                row = dict(step=progress.step, epoch=progress.epoch + progress.window / len(batches),
                           wall_s=progress.elapsed, lr=optimizer.param_groups[0]["lr"], train_loss=loss, chars_per_s=speed)  # fmt: skip
                last = (total is not None and progress.step >= total) or progress.elapsed >= budget
                evaluated = (
                    progress.step % t.eval_every == 0 or last
                )  # with --val-frac 0: checkpoint and plot only
                # the bar's numbers set a few times a second (tqdm draws it at most every mininterval), at a
                # validation (its lines redraw the bar) and at the run's last step: at every step they took 3-8 µs
                if not bar.disable and (t0 - postfix_at >= POSTFIX_EVERY or evaluated):
                    postfix_at = t0
                    left = (
                        {"budget_left": f"{max(budget - progress.elapsed, 0) / 60:.1f}min"}
                        if budget < math.inf
                        else {}
                    )
                    mean_speed = chars_per_step * len(recent) / max(sum(recent), 1e-9)
                    bar.set_postfix(loss=f"{loss:.3f}", chars_s=f"{mean_speed:,.0f}", **left, refresh=False)
                bar.update(1)
                if evaluated:
                    _validate(model, val_batches, progress, row, save, say, out,
                              lambda w=window, s=carried: window_loss(model, batches.window(w), s),
                              _retry(t), val_style)  # fmt: skip
                metrics.write(**row)
                row = None
            if evaluated:  # after the step's row: a kill between the two resumes from the checkpoint before
                save("latest.pt")
            if t.sample_every and (progress.step % t.sample_every == 0 or last):
                say(
                    f"---- sample at step {progress.step} ----\n{sample_text(model, chars, cfg, progress.step)}\n----"
                )
            if evaluated:
                plot_losses(metrics.rows, out / "loss.png")
            # Ctrl-C or SIGTERM during the step: stopped here, where the run resumes exactly; in its last step the
            # run is done (it said 'interrupted ...; continue with --resume', and --resume 'nothing to do')
            if stop.asked and not last:
                raise KeyboardInterrupt
            if closed:
                if not evaluated:
                    save("latest.pt")
                raise _as_closed(closed[0])
    # a loss that blew up: the curve of the rows up to it (drawn at validations only, none before the first), what
    # to look at before a lower --lr
    except RnnkitError:
        with contextlib.suppress(Exception):
            _redraw_stale_plot(out)
        raise
    except KeyboardInterrupt:  # a Ctrl-C after the step, or a second one inside it
        # the checkpoint below is what --resume continues from: one more Ctrl-C (or SIGTERM) while it is written cut it
        # (a traceback, or 'rnnkit: interrupted', the steps since the last checkpoint lost)
        stop.finishing = True
        if not stepped:  # the window under way is read again on --resume, from the same state and masks
            model.state = carried
            torch.set_rng_state(rng)
        elif row is not None:
            metrics.write(**row)  # stopped between its validation and its row: the step itself is done
        bar.close()
        save("latest.pt")
        # the plot is drawn at validations only: none before the first. Its failure costs the run nothing saved: a
        # second Ctrl-C that cut the first plot's import of matplotlib left it half-imported, and this redraw's
        # AttributeError was a traceback, exit 1, after latest.pt was saved
        with contextlib.suppress(Exception, KeyboardInterrupt):
            _redraw_stale_plot(out)
        if progress.corpus_id.startswith(DRY_RUN_ID):  # which --resume refuses
            say(f"interrupted at step {progress.step} of a dry run (not resumed); run it, or the run itself, again "
                "with --force")  # fmt: skip
        else:  # (said as the other lines: after SIGHUP the terminal may be gone)
            say(f"interrupted at step {progress.step}; saved {out / 'latest.pt'}; continue with --resume")
        # 130 after Ctrl-C, 143 after SIGTERM (129: SIGHUP), as the shell's
        return 128 + (stop.asked or signal.SIGINT)
    finally:
        bar.close()  # also before an error, whose line then starts a line of its own
        metrics.close()
        stop.restore()
        put_back()
    save("latest.pt")
    log(
        f"done: {progress.step} steps in {_seconds(progress.elapsed)} s of training; best val {_nats(progress.best_val)}; run folder {out}"
    )
    return 0


# The runs under way in this process (in threads) that _warnings_above's showwarning is installed for, and the
# showwarning of before the first of them.
_shown, _shown_lock = {"runs": 0, "before": None}, threading.Lock()


def _shown_after_fork():
    """A child forked while another thread held _shown_lock (a run starting or ending) inherited it held by a thread
    it doesn't have: its first run waited forever. The child takes a fresh lock (the count as inherited: a wrapper
    installed stays, as a run's own reading of it left it before)."""
    global _shown_lock
    _shown_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_shown_after_fork)


def _warnings_above():
    """Warnings said while the bar is drawn (the native engine that can't be built, said at the first step) on lines of
    their own, the bar cleared and drawn again below them, as the loop's own lines: they came at the end of the bar's
    line, '0/5 [00:00<?, ?step/s]rnnkit: warning: ...'. Returns the function that puts warnings.showwarning back.
    The runs under way in the process share one such showwarning (tqdm's write mode clears every bar): the first run
    installs it and the last to end puts back the showwarning of before the first. Each used to put back its own
    reading: a run started in a thread while another's was installed read that one and, ending last, left it
    installed for good."""
    with _shown_lock:
        if not _shown["runs"]:
            shown = warnings.showwarning

            def show(*args, **kwargs):
                with tqdm.external_write_mode():
                    shown(*args, **kwargs)

            _shown["before"], warnings.showwarning = shown, show
        _shown["runs"] += 1

    def put_back():
        with _shown_lock:
            _shown["runs"] -= 1
            if not _shown["runs"]:
                warnings.showwarning, _shown["before"] = _shown["before"], None

    return put_back


def _as_closed(e: OSError) -> BrokenPipeError:
    """The closed output's error as a broken pipe: a hung-up terminal's EIO (`& disown`, the terminal closed) was
    said 'Input/output error; check the path, its permissions and the free space', a disk's fault (its errno kept:
    the command line names both causes an EIO has)."""
    if isinstance(e, BrokenPipeError):
        return e
    closed = BrokenPipeError(e.errno, f"{e.strerror} (the terminal hung up)")
    closed.__cause__ = e
    return closed


class _Closable:
    """The bar's stream, whose reader may go away (`2>&1 | head`, a `| tee` that ended): a write's BrokenPipeError,
    raised inside a step (its update, after the optimizer's step), stopped the run before its checkpoint; it is put
    in `closed` (the loop then stops after the step, saved), and nothing more is written."""

    def __init__(self, file, closed: list):
        self.file, self.closed = file, closed

    def write(self, s):
        if not self.closed:
            try:
                self.file.write(s)
            except BrokenPipeError as e:
                self.closed.append(e)
        return len(s)

    def flush(self):
        if not self.closed:
            try:
                self.file.flush()
            except BrokenPipeError as e:
                self.closed.append(e)

    def __getattr__(self, name):  # isatty, fileno, encoding: the stream's
        return getattr(self.file, name)

    # the stream itself to tqdm.external_write_mode, which clears the bars on sys.stdout/stderr before a line (the
    # validation lines, the samples): unequal to sys.stderr, a live bar was left on the terminal line they overwrote
    def __eq__(self, other):
        return self.file == getattr(other, "file", other)

    def __hash__(self):
        return hash(self.file)


class _StopAfterStep:
    """Ctrl-C (or SIGTERM: kill, timeout, a job scheduler, docker stop; or SIGHUP: a terminal closed) while training
    finishes the step under way (its optimizer step, validation, checkpoint and metrics row) and then stops, so that
    --resume continues exactly
    as an uninterrupted run would; a second one stops at once (the step under way is then undone unless its
    optimizer step was taken), or inside `held()` once its block is done; once stopping (`finishing`), none cuts the
    checkpoint then saved. `asked`: the signal's number, 0 before one. A signal the process was started ignoring stays ignored. Main thread only: elsewhere Python delivers no signals, and both keep their defaults.
    `continued`: a SIGCONT came (the process was stopped, Ctrl-Z, and runs on); the loop clears it at each step."""

    # SIGHUP: the terminal closed, an ssh connection dropped (it killed the run, the steps since the last checkpoint
    # lost; `nohup` ignores it, and an ignored one stays so); none on Windows
    SIGNALS = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))

    def __init__(self, say):
        self.asked, self.say, self.previous = 0, say, {}
        self.holding, self.deferred, self.finishing, self.continued = False, False, False, False
        self.saying, self.pending = False, 0  # the handler writing its line; a signal that came meanwhile
        if threading.current_thread() is threading.main_thread():
            # a signal ignored when the run started (its parent's choice) stays ignored
            kept = [s for s in self.SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
            self.previous = {s: signal.signal(s, self._handler) for s in kept}
            # a step's clock ran on while the process was stopped: an hour's Ctrl-Z was an hour of --time-budget
            if hasattr(signal, "SIGCONT"):
                self.previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._continued)

    def _continued(self, signum, frame):
        self.continued = True

    def _handler(self, signum, frame):
        if self.saying:  # a signal while the handler writes its line: handled once the line is written
            self.pending = signum
            return
        if self.finishing:  # stopping already, its checkpoint being saved: nothing to cut
            said, self.deferred = self.deferred, True
            if not said:
                self._say("saving the checkpoint, then stopping", frame)
            return
        if self.asked and self.holding:
            said, self.deferred = self.deferred, True
            if not said:
                self._say("stopping as soon as this step's update, validation or row is done", frame)
            return
        if self.asked:
            raise KeyboardInterrupt
        self.asked = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self._say(f"{name}: stopping after this step ({name} again to stop now)", frame)

    def _say(self, line, frame):
        """say(line) from the handler; a signal that comes meanwhile is handled once the line is written. A second
        Ctrl-C at once (two sent together: a wrapper that passes the terminal's on, a script's kill -INT twice) raised
        its KeyboardInterrupt inside tqdm's taking of its lock for the first one's line, whose clean-up then released
        the lock it had not taken: 'RuntimeError: cannot release un-acquired lock', a traceback, exit 1, the steps
        since the last checkpoint lost, where a second Ctrl-C stops the run saved."""
        self.saying, self.pending = True, 0
        try:
            self.say(line)
        finally:
            self.saying = False
        if self.pending:
            self._handler(self.pending, frame)

    @contextlib.contextmanager
    def held(self):
        """A block a second signal does not cut: it stops the run once the block is done."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.deferred:
            raise KeyboardInterrupt

    def restore(self):
        for s, previous in self.previous.items():
            if previous is not None:  # (None: a handler not set from Python, which can't be put back)
                signal.signal(s, previous)
        self.previous = {}


def _check_loss(loss: float, progress: Progress, out, grad_norm: float = 0.0, retry: str = RETRY):
    """NaN, or a smoothed loss 3x the initial one, or a gradient norm that overflowed: stop before the optimizer
    step; the checkpoints on disk are the last good ones.

    The loss of one window is noisy, the more so the smaller the batch (min-char-rnn's is one stream of 25
    characters: early on, a few windows can read 3x the start and recover within steps), so the test reads a
    running average, smooth ← 0.7·smooth + 0.3·loss (a lasting blow-up still trips it within a few steps);
    NaN or inf stops at once."""
    if progress.initial_loss == 0.0:
        progress.initial_loss = progress.smooth_loss = loss
    smooth = 0.7 * progress.smooth_loss + 0.3 * loss  # kept once the step is taken (an undone step leaves it)
    if not math.isfinite(loss) or smooth > EXPLODE * progress.initial_loss:
        what = f"became {loss}" if not math.isfinite(loss) else f"exploded to {smooth:.3f} (running average)"
        raise RnnkitError(
            f"loss {what} at step {progress.step + 1} (initial {progress.initial_loss:.3f}); stopped, last good "
            f"checkpoint in {out}; {retry}"
        )
    if not math.isfinite(grad_norm):  # clipping can't mend it: inf/inf scales every gradient to NaN
        raise RnnkitError(
            f"the gradient norm became {grad_norm} at step {progress.step + 1}; stopped, last good checkpoint in "
            f"{out}; {RETRY_LR}"
        )
    return smooth


def _validate(model, val_batches, progress, row, save, say, out, train_loss_now, retry=RETRY, bar=None):
    """Validate after a step and save best.pt (the caller saves latest.pt after the step's metrics row, so that a
    kill between the two leaves no checkpoint without its row). The step's update may have blown the weights up
    after its loss was checked: a validation loss that is not finite, or over 3x the initial train loss while the
    window just trained on also reads over 3x with the new weights (`train_loss_now()`, the train loss char-rnn's
    test reads at the next step), stops before the checkpoints. A high validation loss alone is overfitting, not a blow-up:
    it is recorded, best.pt keeps the best model, and training goes on. `bar`: tqdm's options for its bar (none)."""
    if val_batches is not None:
        val = evaluate(model, val_batches, bar=bar or dict(disable=True))
        limit = EXPLODE * progress.initial_loss
        now = train_loss_now() if math.isfinite(val) and val > limit else None
        if not math.isfinite(val) or now is not None and not now <= limit:  # the update just taken blew up
            raise RnnkitError(
                f"validation loss {'became' if not math.isfinite(val) else 'exploded to'} {val:.4g} at step "
                f"{progress.step} (initial train loss {progress.initial_loss:.3f}"
                + ("" if now is None else f"; the window just trained on reads {now:.4g} now")
                + f"); stopped, last good checkpoint in {out}; {retry}"
            )
        row.update(val_loss=val, val_bpc=val / LN2)
        say(f"step {progress.step}: train {row['train_loss']:.3f}, val {_nats(val)}")
        if val < progress.best_val:
            # best.pt records its own val; a Ctrl-C inside its save puts the old one back (else latest.pt would
            # claim a best that the old best.pt lacks, and a later, slightly worse validation would keep that file)
            before, progress.best_val = progress.best_val, val
            try:
                save("best.pt")
            except BaseException:
                progress.best_val = before
                raise


def _seconds(s: float) -> str:
    """Seconds to 3 significant digits below 100 (a short run's 0.08 s read '0 s'), whole ones above."""
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def _nats(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4f} nats/char ({v / LN2:.4f} bits/char)"
