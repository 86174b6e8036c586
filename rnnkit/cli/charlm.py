"""`rnnkit train | sample | score | complete | eval`: character language models from the command line."""

import argparse
import dataclasses
import functools
import json
import math
import pathlib
import re
import sys

from rnnkit.cli import drawn_bar, finite_or_null, print_pieces, say, say_json
from rnnkit.errors import RnnkitError, count_error, fits_int64

# flag -> (config section, field, type); every default is None so that only given flags override
TRAIN_OPTIONS = {
    "--cell": ("model", "cell", str), "--hidden-size": ("model", "hidden_size", int),
    "--num-layers": ("model", "num_layers", int), "--dropout": ("model", "dropout", float),
    "--embedding-size": ("model", "embedding_size", int), "--forget-bias": ("model", "forget_bias", float),
    "--backend": ("model", "backend", str),
    "--seq-len": ("data", "seq_len", int), "--batch-size": ("data", "batch_size", int),
    "--val-frac": ("data", "val_frac", float), "--data-dir": ("data", "data_dir", str),
    "--optimizer": ("train", "optimizer", str), "--lr": ("train", "lr", float),
    "--lr-decay": ("train", "lr_decay", float), "--lr-decay-after": ("train", "lr_decay_after", int),
    "--clip-norm": ("train", "clip_norm", float), "--clip-value": ("train", "clip_value", float),
    "--weight-decay": ("train", "weight_decay", float),
    "--max-steps": ("train", "max_steps", int), "--max-epochs": ("train", "max_epochs", float),
    "--time-budget": ("train", "time_budget", float), "--seed": ("train", "seed", int),
    "--eval-every": ("train", "eval_every", int), "--sample-every": ("train", "sample_every", int),
    "--threads": ("train", "threads", int),
}  # fmt: skip
OPTION_HELP = {
    "--cell": "rnn_tanh, rnn_relu, lstm, gru, gru_cho, mut1, mut2, mut3 or leaky (rnnkit.CELLS)",
    "--backend": "autograd, python or native (default: the fastest that runs)",
    "--optimizer": "adam, rmsprop (char-rnn), adagrad (min-char-rnn) or sgd",
    "--embedding-size": "0: one-hot input, as in the lectures",
    "--data-dir": "folder holding tinyshakespeare.txt (else $RNNKIT_DATA, the cache, a download)",
    "--clip-norm": "rescale the gradient above this norm (0: off)",
    "--clip-value": "clamp each gradient element to [-v, v] (0: off; after --clip-norm where both are given)",
    "--weight-decay": "L2 penalty: the optimizer adds wd·θ to every parameter's clipped gradient (torch's weight_decay; "
    "adam's is not AdamW's decoupled decay)",
    "--dropout": "on the outputs of every layer: between layers and before the output layer (as char-rnn; with one "
    "layer, before the output layer only)",
    "--lr-decay": "multiply the learning rate by this at the end of every epoch from --lr-decay-after on",
    "--max-steps": "0: no limit", "--max-epochs": "0: no limit", "--time-budget": "minutes of training; 0: no limit",
    "--eval-every": "steps between validations and checkpoints", "--sample-every": "steps between samples (0: never)",
    "--threads": "torch threads (0: torch's default; 1 on a machine other work keeps busy, where threads that wait "
    "for each other run 3-5x slower)", "--seed": "random seed in [0, 2^32)",
    "--seq-len": "characters per window (the truncation of BPTT; the state carries over between windows)",
    "--batch-size": "parallel streams, each reading its own stretch of the corpus",
    "--val-frac": "fraction of the corpus, at its end, held out for validation (0: none)",
    "--hidden-size": "units of each layer", "--num-layers": "layers stacked", "--lr": "learning rate",
    "--forget-bias": "initial forget-gate bias of an lstm (other cells have none)",
    "--lr-decay-after": "--lr-decay applies at the end of this epoch (counted from 1) and every later one",
}  # fmt: skip
# options that may change when a run is resumed (limits and reporting, not the model or data; data_dir is only
# where the same corpus lies, which the checkpoint's fingerprint of the corpus checks; backend and threads run the
# same model, to float rounding)
RESUMABLE = {
    "max_steps",
    "max_epochs",
    "time_budget",
    "eval_every",
    "sample_every",
    "threads",
    "data_dir",
    "backend",
}


RUN_HELP = "run folder (its best.pt, else latest.pt) or checkpoint file"


def _preset_table() -> str:
    """What each flag is when not given, per preset (and for a CORPUS without --preset): train --help's epilog."""
    from rnnkit.presets import PRESETS
    from rnnkit.train.config import RunConfig

    names = ["default", *(name for name in PRESETS if name != "default"), "CORPUS"]
    configs = [RunConfig() for _ in names]  # one per column, built once (this runs at every start of train)
    for cfg, name in zip(configs, names, strict=True):
        cfg.update(PRESETS.get(name, {}))
    rows = [["", *names]]
    for flag, (section, field, _) in TRAIN_OPTIONS.items():
        if flag in ("--data-dir", "--backend", "--seed"):  # the same under every preset, said in their help
            continue
        values = [getattr(getattr(cfg, section), field) for cfg in configs]
        rows.append([flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in values)])
    width = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in rows]
    return (
        "A flag not given takes the preset's value (CORPUS: a text file without --preset;\n"
        f"--seed is {RunConfig().train.seed} in all):\n" + "\n".join(lines)
    )


def _add_preset_table(p) -> None:
    p.epilog = _preset_table()


def add_commands(sub):
    p = sub.add_parser(
        "train",
        help="train a character language model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        fill=_add_preset_table,  # (the table is made where train runs or says its help)
    )
    p.add_argument(
        "corpus",
        nargs="?",
        help="text file (UTF-8, or gzip of it), 'shakespeare', or omitted: the Python standard library's source (with --preset "
        "shakespeare: Tiny Shakespeare); with --resume, the run's own text in a new place (omitted: where it was)",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--preset", help="min-char-rnn, char-rnn, shakespeare or default (the one used without a "
                   "CORPUS; with one: a 2x128 LSTM, Adam, 50 streams of 50 characters); flags override it")  # fmt: skip
    for flag, (_, _, kind) in TRAIN_OPTIONS.items():
        p.add_argument(flag, type=kind, default=None, help=OPTION_HELP.get(flag))
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its settings")
    p.add_argument("--force", action="store_true", help="replace the run in --out")
    p.add_argument("--dry-run", action="store_true", help="a few steps on a tiny slice (smoke test)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample text from a trained model")
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--length", type=int, default=500, help="characters to sample (default 500)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="p ∝ exp(logit / T): below 1 safer, above 1 more varied (default 1.0)")  # fmt: skip
    p.add_argument(
        "--top-k", type=int, default=0, help="sample among the K most probable only (default 0: all)"
    )
    p.add_argument("--prime", default=None,
                   help="text to start from, read as the start of a line as score reads it (default: a newline, or the "
                   "model's first character if it has none)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="random seed in [0, 2^32) (default: a fresh one)")
    p.add_argument("--greedy", action="store_true",
                   help="always the most probable character; --temperature is taken with it (0 is its limit; any T "
                   "keeps the most probable), --top-k and --seed do nothing and are warned of")  # fmt: skip
    _threads_option(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "score",
        help="log-probability of texts under a model, ranked",
        description="log p(TEXT) = Σ log p(c_t | c_<t) in nats, each text from a zero state with a newline as "
        "the context of its first character (a model that knows no newline scores from the second character, "
        "the first being context). Ranked from the most probable.",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("texts", nargs="+", metavar="TEXT", help="one or more texts (quote each)")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    _threads_option(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "complete",
        help="the most probable continuation of a prefix (greedy or beam search)",
        description="Prints PREFIX and the continuation of exactly --length characters (newlines included) with "
        "the highest log-probability the beam finds; --json adds that log p in nats. The prefix is read as score "
        "reads a text (a newline before it), so that log p is score(PREFIX + completion) - score(PREFIX).",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("prefix", help="text to continue (quote it)")
    p.add_argument("--length", type=int, default=40, help="characters to add (default 40)")
    p.add_argument("--beam", type=int, default=1, help="beam width K (1 = greedy)")
    p.add_argument("--json", action="store_true", help="one JSON object: prefix, completion, log_prob")
    _threads_option(p)
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser(
        "eval",
        help="nats/char and bits/char of a text file under a model",
        description="Loss of a model on a text file, in nats and bits per character. As validation in training, "
        "the file is cut into streams (the run's --batch-size of them, fewer for a short file) read in windows of "
        "the run's --seq-len, each stream from a zero state: the run's own validation text gives its val_loss. "
        "The first character of each stream is context only, and up to streams-1 characters at the end are left "
        "out. --streams 1 reads the file as one text (every character after the first predicted, slower).",
    )
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("file", help="UTF-8 text file, or gzip of it (only characters the model knows)")
    p.add_argument(
        "--streams", type=int, default=0, help="parallel streams (default 0: the run's batch size)"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object: file, chars, streams, nats and bits per char"
    )
    _threads_option(p)
    p.set_defaults(func=cmd_eval)


# sample, score, complete and eval: one-step calls of a small model, where waiting threads cost far more than in
# train's big products (see _with_threads)
THREADS_HELP = (
    "torch threads (0: torch's default; 1 on a machine other work keeps busy, where threads that wait "
    "for each other ran these one-step calls 10-90x slower)"
)


def _threads_option(p):
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)  # (None: 0, which the help says)


def _with_threads(cmd):
    """--threads of sample, score, complete and eval, as train's, for the command only (the caller's count back
    after it, as train() does): on a machine other work keeps busy, threads that wait for each other ran 10-40x
    slower (a one-step call of a 2x32 LSTM on 5 rows: 2.4 ms at 2 threads, 61 us at 1; `complete --beam 5` 9.6 s
    against 0.11 s)."""

    @functools.wraps(cmd)
    def run(args) -> int:
        from rnnkit._threads import threads_for_the_work
        from rnnkit.train.config import MAX_THREADS

        n = args.threads or 0
        if not 0 <= n <= MAX_THREADS:
            raise RnnkitError(
                f"--threads must be a whole number from 0 (torch's default) to {MAX_THREADS}, got {n}"
            )
        if not n:
            return cmd(args)
        with threads_for_the_work(n):  # (commands overlapping in a program's threads: see rnnkit._threads)
            return cmd(args)

    return run


CORPUS_NAMES = ("shakespeare", "stdlib", "default")  # the built-in corpora's names (load_corpus)


def train_config(args):
    """Preset (or the saved config when resuming), then the flags actually given."""
    from rnnkit.presets import preset
    from rnnkit.train.config import RunConfig, _check_types

    # "$CORPUS" unset in a script: '' was read as no CORPUS, the built-in corpus trained on in silence
    if args.corpus is not None and not args.corpus.strip():
        raise RnnkitError("CORPUS is empty; give a text file or 'shakespeare', or leave it out (the built-in "
                          "corpus; with --resume, the run's own text)")  # fmt: skip
    # a built-in corpus's bare name that is also a file here: load_corpus reads the file, which a name can't say
    if args.corpus in CORPUS_NAMES and pathlib.Path(args.corpus).is_file():
        builtin = "run from another folder" if args.corpus == "shakespeare" else "leave CORPUS out"
        raise RnnkitError(f"CORPUS {args.corpus} is both the built-in corpus and the file ./{args.corpus} in this "
                          f"folder; give ./{args.corpus} for the file, or {builtin} for the built-in corpus")  # fmt: skip
    out = pathlib.Path(args.out)
    resuming = args.resume and (out / "latest.pt").is_file()  # else train says there is nothing to resume
    if resuming:
        cfg = _resumed_config(out)
        _check_types(cfg)  # (an edited corpus of 5 was a traceback from its reading below)
        if args.preset is not None:  # ('' too: an unset "$PRESET" is no preset name)
            _refuse_another_preset(cfg, args)
        # the built-in corpus by its name (a file's path is kept absolute): a ./stdlib where it resumed was read
        if not args.corpus and cfg.data.corpus in ("stdlib", "default"):
            cfg.data.corpus = None
        saved = pathlib.Path(cfg.data.corpus or "")
        if not args.corpus and saved.is_absolute() and not saved.exists():
            raise RnnkitError(f"the run's corpus {saved} is gone; if the file moved, give its new place: "
                              f"rnnkit train NEW_PATH --out {out} --resume")  # fmt: skip
    else:
        cfg = RunConfig()
        # ('' is refused by preset(): an unset "$PRESET" trained the default preset, or a CORPUS's, in silence)
        given = args.preset is not None
        cfg.update(preset(args.preset if given else "default") if given or not args.corpus else {})
    # the built-in shakespeare by its name (a preset's, a run's: a file is kept by its absolute path), read as the
    # file ./shakespeare by load_corpus
    if not args.corpus and cfg.data.corpus == "shakespeare" and pathlib.Path("shakespeare").is_file():
        whose = "the run's" if resuming else "the preset's"
        raise RnnkitError(f"{whose} corpus shakespeare is the built-in corpus, but the file ./shakespeare in this "
                          f"folder would be read instead; run from another folder (--out takes any path)")  # fmt: skip
    if args.corpus:  # a file by its absolute path: --resume may run from another folder. Resuming, the run's
        given = pathlib.Path(args.corpus)  # text in a new place: a changed text fails the corpus check
        cfg.data.corpus = str(given.resolve()) if given.is_file() else args.corpus
    for flag, (section, name, _) in TRAIN_OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            if resuming and name not in RESUMABLE and value != getattr(getattr(cfg, section), name):
                can = sorted(f for f, (_, n, _) in TRAIN_OPTIONS.items() if n in RESUMABLE)
                raise RnnkitError(f"{flag} cannot change when resuming; only {', '.join(can)} can")
            setattr(getattr(cfg, section), name, value)
    if args.forget_bias is not None:  # only lstm has a forget gate: other cells ran as if it were not given
        import inspect

        from rnnkit import CELLS

        cell = CELLS.get(cfg.model.cell)
        if cell is not None and "forget_bias" not in inspect.signature(cell).parameters:
            raise RnnkitError(f"--forget-bias sets the forget gate of an lstm; the {cfg.model.cell} cell has none "
                              "(drop --forget-bias)")  # fmt: skip
    # with --lr-decay 1 (the default's and a CORPUS's) no rate ever decayed: --lr-decay-after 5 ran as not given
    # (a negative one: validate's line; resuming, it may only repeat the run's own)
    decay_after = args.lr_decay_after
    if not resuming and decay_after is not None and decay_after >= 0 and cfg.train.lr_decay == 1:
        raise RnnkitError("--lr-decay-after sets the epoch from which --lr-decay applies, but this run's "
                          "--lr-decay is 1 (no decay); give --lr-decay below 1 with it (char-rnn's 0.97), or "
                          "drop --lr-decay-after")  # fmt: skip
    if cfg.data.data_dir is not None and not cfg.data.data_dir.strip():
        raise RnnkitError(
            "--data-dir is empty; give the folder that holds tinyshakespeare.txt, or leave it out"
        )
    if args.data_dir and cfg.data.corpus != "shakespeare":  # only that text is looked for there
        what = cfg.data.corpus or "the standard library's source"
        raise RnnkitError(f"--data-dir is where the shakespeare corpus is found; this run reads {what} "
                          "(drop --data-dir)")  # fmt: skip
    if resuming and not args.data_dir and cfg.data.corpus == "shakespeare" and cfg.data.data_dir:
        from rnnkit.data.corpus import SHAKESPEARE_FILE, _local_copy

        folder = pathlib.Path(cfg.data.data_dir)  # (the run's: it was said as a --data-dir never given)
        if _local_copy(folder) is None:
            what = "holds no " + SHAKESPEARE_FILE if folder.is_dir() else "is gone"
            raise RnnkitError(f"the run's --data-dir {folder} {what}; if it moved, give its new place: "
                              f"rnnkit train --out {out} --resume --data-dir NEW_FOLDER")  # fmt: skip
    if cfg.data.data_dir:  # absolute, as the corpus file: --resume may run from another folder
        cfg.data.data_dir = str(pathlib.Path(cfg.data.data_dir).expanduser().resolve())
    return cfg


def _refuse_another_preset(cfg, args):
    """--preset with --resume: the run's own preset (the command line that started the run) is taken, as the run's
    own value of a flag is; it was refused ('drop --preset') whatever it was. A preset that sets model, data or
    training options to other values than the run's, where no flag given sets them, is refused in one line."""
    from rnnkit.presets import preset

    flags = {(section, name): flag for flag, (section, name, _) in TRAIN_OPTIONS.items()}
    differ, flagless = [], []
    for section, values in preset(args.preset).items():
        for name, value in values.items():
            flag = flags.get((section, name))
            given = flag and getattr(args, flag[2:].replace("-", "_"))
            run = getattr(getattr(cfg, section), name)
            # (the corpus resumed is the run's, wherever CORPUS says it lies now, whatever the preset's)
            if name not in RESUMABLE and name != "corpus" and given is None and value != run:
                differ.append(f"{flag or f'{section}.{name}'} {value} (this run: {run})")
                flagless += [] if flag else [f"{section}.{name}"]
    if flagless:  # (sample_temperature, sample_length: no flag can give the run's value)
        raise RnnkitError(f"--preset {args.preset} sets {', '.join(differ)}; no flag sets {', '.join(flagless)}: "
                          "drop --preset (the run keeps its own settings)")  # fmt: skip
    if differ:
        raise RnnkitError(f"--preset {args.preset} sets {', '.join(differ)}; give the run's values with it, or drop "
                          "--preset (the run keeps its own settings)")  # fmt: skip


def _resumed_config(out: pathlib.Path):
    """The run's config.json; if it is missing, damaged or lacks an option, the config its latest.pt holds (saying so)."""
    from rnnkit.train.checkpoint import load_checkpoint
    from rnnkit.train.config import RunConfig

    if (out / "config.json").is_dir():
        raise RnnkitError(
            f"{out / 'config.json'} is a folder; remove it (the run's config is rewritten on resume)"
        )
    unknown = None
    try:
        # (utf-8-sig: an editor's byte-order mark is no edit)
        saved = json.loads((out / "config.json").read_text(encoding="utf-8-sig"))
        cfg = RunConfig.from_dict(saved)
        # an option left out took its default in silence (a run at --lr 0.01 resumed at 0.002)
        lacking = [f"{section}.{f.name}" for section in ("data", "model", "train")
                   for f in dataclasses.fields(getattr(cfg, section)) if f.name not in saved.get(section, {})]  # fmt: skip
        why = (
            f"incomplete (no {', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''})"
            if lacking
            else None
        )
    except (
        OSError,
        ValueError,
        TypeError,
        AttributeError,
    ) as e:  # missing, not JSON, not a dict, unknown keys
        why = "missing" if isinstance(e, FileNotFoundError) else "unreadable"
        unknown = (
            re.match(r"unknown (?:option|config section) [^;]+", str(e))
            if isinstance(e, RnnkitError)
            else None
        )
    if why is None:
        _refuse_edits(cfg, out)
        return cfg
    ckpt = load_checkpoint(out / "latest.pt", resuming=True)
    try:
        cfg = RunConfig.from_dict(json.loads(ckpt["config"]))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        option = re.match(r"unknown option (\S+);", str(e)) if isinstance(e, RnnkitError) else None
        if option:  # a newer rnnkit's run, which the --force below would delete
            raise RnnkitError(f"cannot resume {out}: its latest.pt was saved by a newer rnnkit (its config holds "
                              f"{option[1]}, which this one does not know); upgrade rnnkit to resume it") from None  # fmt: skip
        raise RnnkitError(f"cannot resume {out}: its config.json is {why} and latest.pt holds no config; "
                          "start a new run with --force") from None  # fmt: skip
    # an option of no rnnkit's (a misspelled limit, "max_stpes"): an edit the fallback dropped, config.json rewritten
    if unknown:
        raise RnnkitError(f"{out / 'config.json'} has an {unknown[0]} (misspelled?); correct it, or "
                          "remove config.json to resume with the config saved in latest.pt")  # fmt: skip
    print(
        f"rnnkit: {out / 'config.json'} is {why}; resuming with the config saved in latest.pt",
        file=sys.stderr,
    )
    return cfg


def _refuse_edits(cfg, out: pathlib.Path):
    """A config.json edited by hand since latest.pt was saved: an option that --resume takes no flag for (lr, say:
    '--lr cannot change when resuming') was taken from it in silence, the run going on with another setting than
    it recorded. Such an edit is refused as the flag is, naming the option and both values; the limits and
    reporting options (RESUMABLE) and where the corpus lies may change. Nothing is said where latest.pt's config
    can't be read (the resume itself says what is wrong with it)."""
    import torch

    from rnnkit.train.config import RunConfig

    try:  # (memory-mapped: the weights are not read here)
        ckpt = torch.load(out / "latest.pt", map_location="cpu", weights_only=True, mmap=True)
        saved = RunConfig.from_dict(json.loads(ckpt["config"])).to_dict()
    except Exception:
        return
    now = cfg.to_dict()
    edits = [f"{section}.{name} {now[section][name]!r} (latest.pt: {value!r})"
             for section, values in saved.items() for name, value in values.items()
             if name not in RESUMABLE and name != "corpus" and now[section].get(name) != value]  # fmt: skip
    if edits:
        raise RnnkitError(f"{out / 'config.json'} was edited since latest.pt was saved: {', '.join(edits)}; only "
                          f"{', '.join(sorted(RESUMABLE))} can change when resuming; put the run's values back, or "
                          "start a new run with --force")  # fmt: skip


def cmd_train(args) -> int:
    from rnnkit.train.loop import train

    return train(train_config(args), args.out, resume=args.resume, force=args.force, dry_run=args.dry_run)


def load_model(run):
    """rnnkit.models.charlm.load_run (the Python API; imported here when needed, with torch)."""
    from rnnkit.models.charlm import load_run

    # ("$RUN" unset in a script: pathlib reads '' as '.', and the run in the current folder, if any, was read in silence)
    if not str(run).strip():
        raise RnnkitError(
            "RUN is empty; give a run folder or a checkpoint file (`.` for the run in this folder)"
        )
    return load_run(run)


def encode(text: str, chars: list, what: str) -> list:
    from rnnkit.models import charlm

    return charlm.encode(text, chars, what)


def score_text(model, chars, text: str, what: str = "TEXT") -> dict:
    from rnnkit.models import charlm

    return charlm.score_text(model, chars, text, what)


def context(text: str, chars: list, what: str) -> list:
    """The ids a prefix is read from: a newline, then the text (its first character starts a line, from a zero
    state, as score reads each text; a model without a newline reads the text alone), so that complete's log p
    of a continuation is score(PREFIX + continuation) - score(PREFIX), and sample --prime continues as complete."""
    # (the newline put before the text apart: in the text, a prime's \r alone was said to be Windows line ends)
    return ([chars.index("\n")] if "\n" in chars else []) + encode(text, chars, what)


def _positive(name, value):
    if value < 1:
        raise count_error(name, value)


@_with_threads
def cmd_sample(args) -> int:
    import torch

    from rnnkit.models import charlm

    _positive("--length", args.length)
    if not args.greedy and not args.temperature > 0:  # NaN too
        raise RnnkitError(
            f"--temperature must be > 0, got {args.temperature}; for the most probable text use --greedy"
        )
    if args.top_k < 0:
        raise RnnkitError(f"--top-k must be >= 0, got {args.top_k}")
    # the argmax is among the top k, and no draw takes the seed: both were ignored in silence
    if args.greedy:
        given = [f for f, v in (("--top-k", args.top_k), ("--seed", args.seed is not None)) if v]
        for flag in given:
            print(f"rnnkit: warning: {flag} does nothing with --greedy (no character is drawn: each is the most "
                  f"probable); leave out {flag} or --greedy", file=sys.stderr)  # fmt: skip
    model, chars = load_model(args.run)
    ids = context(args.prime, chars, "--prime") if args.prime else [chars.index("\n") if "\n" in chars else 0]
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    out = model.iter_sample(ids, args.length, args.temperature, args.top_k, args.greedy, gen)
    # complete's bar, where the text goes elsewhere than a terminal
    with drawn_bar(out, "sample", " chars", args.length, charlm.PROGRESS_DELAY) as drawn:
        print_pieces((chars[i] for i in drawn), args.prime or "")
    return 0


@_with_threads
def cmd_score(args) -> int:
    model, chars = load_model(args.run)
    n = len(args.texts)  # (of several, an error names which: 'TEXT 2 of 3 ('xyz')')
    named = ((t, "TEXT" if n == 1 else f"TEXT {i} of {n} ({t!r:.40})") for i, t in enumerate(args.texts, 1))
    results = sorted((score_text(model, chars, t, what) for t, what in named), key=lambda r: -r["log_prob"])
    if "\n" not in chars:
        print("note: this model knows no newline, so each text's first character is context and not scored",
              file=sys.stderr)  # fmt: skip
    for rank, r in enumerate(results, 1):
        if args.json:
            say_json(finite_or_null({"rank": rank, **r}))
        else:  # (the text quoted as repr quotes it: escaped where the output lacks a character, as ascii() writes it)
            say(f"{rank}. log p = {r['log_prob']:.3f} nats  {r['nats_per_char']:.4f} nats/char  "
                f"{r['bits_per_char']:.4f} bits/char  perplexity {r['perplexity']:.3f}  {r['text']!r}")  # fmt: skip
    return 0


@_with_threads
def cmd_complete(args) -> int:
    _positive("--length", args.length)
    fits_int64("--length", args.length)  # (beam_complete's own line names its argument, length)
    _positive("--beam", args.beam)
    model, chars = load_model(args.run)
    if not args.prefix:
        raise RnnkitError("PREFIX is empty; give some text to complete")
    ids = context(args.prefix, chars, "PREFIX")
    if args.json:  # (one object, written whole once the search is done)
        ids, log_prob = model.beam_complete(ids, args.length, args.beam, progress=True)
        completion = "".join(chars[i] for i in ids)
        say_json(finite_or_null({"prefix": args.prefix, "completion": completion, "log_prob": log_prob}))
        return 0
    # the text as the search settles it, as sample prints its draws: a huge --length shows its text at once and runs
    # in bounded memory until stopped (it printed at the end, after memory for every step: --length 2^63-1 grew until
    # memory was gone); the bar only where the text goes elsewhere than a terminal, which the text itself keeps busy
    # (the text itself is not written altered: main's one line where the output can't write it)
    found = model.iter_complete(ids, args.length, args.beam, progress=not sys.stdout.isatty())
    print_pieces((chars[i] for i in found), args.prefix)
    return 0


def _mapped(tokens, table):
    """table[tokens], written over the file's own tokens a block at a time where they are of table's dtype (as a
    file's and a model's of up to 256 characters are): the gather made a second array of the file's length, in RAM
    where load_file had memory-mapped a file over 64 MB."""
    from rnnkit.data.corpus import ENCODE_BLOCK

    if tokens.dtype != table.dtype or not tokens.flags.writeable:
        return table[tokens]
    for i in range(0, len(tokens), ENCODE_BLOCK):
        tokens[i : i + ENCODE_BLOCK] = table[tokens[i : i + ENCODE_BLOCK]]
    return tokens


def _chars_and_line_ends(corpus) -> str:
    """The file's characters, and one of each kind of line end it holds, '\\n' alone, '\\r\\n', '\\r' alone, in that
    order (read back as such), for the error of a '\\r' the model never saw, whose line_ends_hint tells them apart:
    the characters alone (sorted, '\\n' before '\\r') told '\\r' alone among '\\n' line ends as Windows' '\\r\\n'.
    Counted over the tokens a block at a time (a memory-mapped file's too)."""
    import numpy as np

    from rnnkit.data.corpus import ENCODE_BLOCK

    chars = corpus.chars
    if "\r" not in chars or "\n" not in chars:
        return "".join(chars)
    cr, lf, tokens = chars.index("\r"), chars.index("\n"), corpus.tokens
    crlf = lone_cr = lone_lf = False
    for i in range(
        0, len(tokens) - 1, ENCODE_BLOCK
    ):  # the pairs (tokens[j], tokens[j + 1]) of j in the block
        block = np.asarray(tokens[i : i + ENCODE_BLOCK + 1])
        a, b = block[:-1] == cr, block[1:] == lf
        crlf |= bool((a & b).any())
        lone_cr |= bool((a & ~b).any())
        lone_lf |= bool((b & ~a).any())
    lone_cr |= int(tokens[-1]) == cr  # (the file's last character, which no pair starts)
    lone_lf |= int(tokens[0]) == lf  # (its first, which no pair ends)
    ends = "\n" * lone_lf + "\r\n" * crlf + "\r" * lone_cr
    return "".join(c for c in chars if c not in "\r\n") + ends


@_with_threads
def cmd_eval(args) -> int:
    import numpy as np
    import torch

    from rnnkit.data.bptt import eval_streams
    from rnnkit.data.corpus import load_file, token_dtype
    from rnnkit.train.loop import evaluate

    if args.streams < 0:
        raise RnnkitError(f"--streams must be >= 0 (0: the run's batch size), got {args.streams}")
    # ("$FILE" unset in a script: pathlib reads '' as '.', said as 'file . is a folder', a '.' never typed)
    if not str(args.file).strip():
        raise RnnkitError("FILE is empty; give a UTF-8 text file (or gzip of it) to evaluate")
    model, chars = load_model(args.run)
    # read as training reads (\r\n stays, no BOM), 1-4 bytes a character or memory-mapped; its tokens index the
    # file's own characters, mapped to the model's
    corpus = load_file(args.file, what="file")
    if "\r" in corpus.chars and "\r" not in chars:  # the error, with what the file's line ends are
        encode(_chars_and_line_ends(corpus), chars, args.file)
    ours = encode("".join(corpus.chars), chars, args.file)
    corpus_tokens = _mapped(corpus.tokens, np.array(ours, dtype=token_dtype(len(chars))))
    if len(corpus_tokens) < 2:
        raise RnnkitError(f"{args.file} needs at least 2 characters to evaluate")
    data = model.run_config.data
    streams = eval_streams(corpus_tokens, args.streams or data.batch_size, data.seq_len)
    with torch.no_grad():
        nats = evaluate(model, streams, progress=True)
    result = {
        "file": args.file,
        "chars": sum(batch.ys.numel() for batch in streams),  # predicted (the streams' last odd few are not)
        "streams": streams.B,
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
    }
    # (a FILE named in another language: escaped where the output lacks its characters, as say() writes a --out)
    say(json.dumps(finite_or_null(result)) if args.json else f"{args.file}: {nats:.4f} nats/char, {nats / math.log(2):.4f} bits/char "
        f"({result['chars']:,} character{'s' if result['chars'] > 1 else ''} predicted in {streams.B} "
        f"stream{'s' if streams.B > 1 else ''})")  # fmt: skip
    return 0
