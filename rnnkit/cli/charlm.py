"""`rnnkit train | sample | score | complete | eval`: character language models from the command line."""

import json
import math
import pathlib

from rnnkit.errors import RnnkitError

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
    "--clip-value": "clamp each gradient element to [-v, v] (0: off)",
    "--lr-decay": "multiply the learning rate by this every epoch after --lr-decay-after",
    "--max-steps": "0: no limit", "--max-epochs": "0: no limit", "--time-budget": "minutes of training; 0: no limit",
    "--eval-every": "steps between validations and checkpoints", "--sample-every": "steps between samples (0: never)",
    "--threads": "torch threads (0: torch's default)",
}  # fmt: skip
# options that may change when a run is resumed (limits and reporting, not the model or data; data_dir is only
# where the same corpus lies, which the checkpoint's fingerprint of the corpus checks)
RESUMABLE = {"max_steps", "max_epochs", "time_budget", "eval_every", "sample_every", "threads", "data_dir"}


def add_commands(sub):
    p = sub.add_parser("train", help="train a character language model")
    p.add_argument(
        "corpus", nargs="?", help="text file, 'shakespeare', or omitted: the Python standard library's source"
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--preset", help="min-char-rnn, char-rnn, shakespeare or default (the one used without a "
                   "CORPUS; with one: a 2x128 LSTM, Adam, 50 streams of 50 characters); flags override it")  # fmt: skip
    for flag, (_, _, kind) in TRAIN_OPTIONS.items():
        p.add_argument(flag, type=kind, default=None, help=OPTION_HELP.get(flag))
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="replace the run in --out")
    p.add_argument("--dry-run", action="store_true", help="a few steps on a tiny slice (smoke test)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample text from a trained model")
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--greedy", action="store_true", help="always the most probable character")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("score", help="log-probability of texts under a model, ranked")
    p.add_argument("run")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("complete", help="the most probable continuation of a prefix (greedy or beam search)")
    p.add_argument("run")
    p.add_argument("prefix")
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--beam", type=int, default=1, help="beam width K (1 = greedy)")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("eval", help="nats/char and bits/char of a text file under a model")
    p.add_argument("run")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def train_config(args):
    """Preset (or the saved config when resuming), then the flags actually given."""
    from rnnkit.presets import preset
    from rnnkit.train.config import RunConfig

    out = pathlib.Path(args.out)
    if args.resume and (out / "config.json").is_file():
        cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
        if args.preset or args.corpus:
            raise RnnkitError("--resume continues the saved run; drop --preset and CORPUS")
    else:
        cfg = RunConfig()
        cfg.update(preset(args.preset or "default") if args.preset or not args.corpus else {})
        if args.corpus:  # a file by its absolute path: --resume may run from another folder
            given = pathlib.Path(args.corpus)
            cfg.data.corpus = str(given.resolve()) if given.is_file() else args.corpus
    for flag, (section, name, _) in TRAIN_OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            if args.resume and name not in RESUMABLE:
                raise RnnkitError(
                    f"{flag} cannot change when resuming; only {', '.join(sorted(RESUMABLE))} can"
                )
            setattr(getattr(cfg, section), name, value)
    if cfg.data.data_dir:  # absolute, as the corpus file: --resume may run from another folder
        cfg.data.data_dir = str(pathlib.Path(cfg.data.data_dir).expanduser().resolve())
    return cfg


def cmd_train(args) -> int:
    from rnnkit.train.loop import train

    return train(train_config(args), args.out, resume=args.resume, force=args.force, dry_run=args.dry_run)


def load_model(run):
    """The model and vocabulary of a run folder or checkpoint file, ready for inference."""
    from rnnkit.models.charlm import CharLM
    from rnnkit.train.checkpoint import load_checkpoint
    from rnnkit.train.config import RunConfig

    ckpt = load_checkpoint(run)
    cfg = RunConfig.from_dict(json.loads(ckpt["config"]))
    model = CharLM(cfg.model)
    model.load_state_dict(ckpt["model"])
    return model.eval(), list(ckpt["chars"])


def encode(text: str, chars: list, what: str) -> list:
    index = {c: i for i, c in enumerate(chars)}
    unseen = sorted({c for c in text if c not in index})
    if unseen:
        raise RnnkitError(
            f"{what} has characters the model never saw: {''.join(unseen)!r}; remove or replace them"
        )
    return [index[c] for c in text]


def _positive(name, value):
    if value <= 0:
        raise RnnkitError(f"{name} must be > 0, got {value}")


def cmd_sample(args) -> int:
    import torch

    _positive("--length", args.length)
    if not args.temperature > 0:  # NaN too
        raise RnnkitError(
            f"--temperature must be > 0, got {args.temperature}; for the most probable text use --greedy"
        )
    from rnnkit.train.config import check_seed

    check_seed(args.seed)
    if args.top_k < 0:
        raise RnnkitError(f"--top-k must be >= 0, got {args.top_k}")
    model, chars = load_model(args.run)
    prime = args.prime if args.prime else ("\n" if "\n" in chars else chars[0])
    ids = encode(prime, chars, "--prime")
    gen = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    out = model.sample(ids, args.length, args.temperature, args.top_k, args.greedy, gen)
    print((args.prime or "") + "".join(chars[i] for i in out))
    return 0


def score_text(model, chars, text: str) -> dict:
    """log p(text) = Σ_t log p(c_t | c_<t), starting from a newline as context (if the model knows it)."""
    ids = encode(text, chars, "TEXT")
    context = [chars.index("\n")] if "\n" in chars else ids[:1]
    scored = ids if "\n" in chars else ids[1:]
    nats = -sum(model.log_probs(scored, context))
    n = max(len(scored), 1)
    return {"text": text, "log_prob": -nats, "nats": nats, "chars": len(scored),
            "nats_per_char": nats / n, "bits_per_char": nats / n / math.log(2), "perplexity": math.exp(nats / n)}  # fmt: skip


def cmd_score(args) -> int:
    model, chars = load_model(args.run)
    results = sorted((score_text(model, chars, t) for t in args.texts), key=lambda r: -r["log_prob"])
    for rank, r in enumerate(results, 1):
        if args.json:
            print(json.dumps({"rank": rank, **r}, ensure_ascii=False))
        else:
            print(f"{rank}. log p = {r['log_prob']:.3f} nats  {r['nats_per_char']:.4f} nats/char  "
                  f"{r['bits_per_char']:.4f} bits/char  perplexity {r['perplexity']:.3f}  {r['text']!r}")  # fmt: skip
    return 0


def cmd_complete(args) -> int:
    _positive("--length", args.length)
    _positive("--beam", args.beam)
    model, chars = load_model(args.run)
    if not args.prefix:
        raise RnnkitError("PREFIX is empty; give some text to complete")
    ids, log_prob = model.beam_complete(encode(args.prefix, chars, "PREFIX"), args.length, args.beam)
    print(args.prefix + "".join(chars[i] for i in ids))
    return 0


def cmd_eval(args) -> int:
    import torch

    from rnnkit.data.bptt import eval_streams
    from rnnkit.data.corpus import encode as encode_tokens
    from rnnkit.data.corpus import load_file
    from rnnkit.train.loop import evaluate

    model, chars = load_model(args.run)
    text = "".join(load_file(args.file).chars)  # validates the file and finds its characters
    encode(text, chars, args.file)
    with open(args.file, encoding="utf-8-sig", newline="") as f:  # as training reads: \r\n stays, no BOM
        corpus_tokens = encode_tokens(f.read(), chars)
    if len(corpus_tokens) < 2:
        raise RnnkitError(f"{args.file} needs at least 2 characters to evaluate")
    streams = eval_streams(corpus_tokens, 32, 100)
    with torch.no_grad():
        nats = evaluate(model, streams)
    result = {
        "file": args.file,
        "chars": sum(batch.ys.numel() for batch in streams),  # predicted (the streams' last odd few are not)
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
    }
    print(json.dumps(result) if args.json else f"{args.file}: {nats:.4f} nats/char, {nats / math.log(2):.4f} bits/char "
          f"({result['chars']:,} characters predicted)")  # fmt: skip
    return 0
