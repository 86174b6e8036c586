"""`rnnkit hopfield|rbm|ising ...`: the energy models of deck 001; each writes PNGs to --out and says where.

    rnnkit hopfield recall    store random patterns, a text file, images or digits; recall from noisy cues
    rnnkit hopfield capacity  recall against the load P/N for several N
    rnnkit rbm train          an RBM on scikit-learn's digits: filters, samples, likelihoods
    rnnkit rbm dbn            a stack of RBMs; logistic regression on its features
    rnnkit rbm cd-check       how fast the CD-k gradient approaches the exact gradient as k grows
    rnnkit ising sweep        observables of the 2-D Ising model against temperature
Every subcommand takes --dry-run (tiny sizes for the options not given) for a smoke test. Every option
is checked before any work starts; a bad one is one line naming the flag.
"""

import argparse
import functools
import json
import math
import pathlib
import sys

from rnnkit._io import write_text
from rnnkit.cli import out_folder, refuse_overwrite, say
from rnnkit.errors import RnnkitError, fits_int64

# torch and rnnkit.energy (which imports it) are imported by each command: `rnnkit --help` and the text commands
# register these commands' parsers, and use no torch

# hopfield recall: N units need N² float32 weights, and recall works on a float64 copy (12 N² bytes and
# more: 2.2 GB measured at this size), and one asynchronous sweep is N small steps.
MAX_UNITS = 10_000
BYTES_PER_WEIGHT = 22  # measured: peak memory of a recall over the N² weights of one network
SHOWN = 8  # cues drawn in recall.png and energy.png
MAX_LISTED = 20  # final overlaps printed one by one; past that a summary and the first 20
# ising sweep: the (temperatures, L, L) spins and the sweep's temporaries, 32 bytes a spin measured.
ISING_BYTES_PER_SPIN = 32
MAX_ISING_BYTES = 4e9
# rbm cd-check: the exact Gibbs transition matrix of rbm_exact (V <= 12, V + H <= 24).
CD_MAX_VISIBLE, CD_MAX_UNITS = 12, 24


def _common(p, action: str, writes: str = "the figures"):
    p.add_argument("--out", default=f"runs/{action}", help=f"folder for {writes} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed in [0, 2^32) (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny sizes (for the options not given): a smoke test"
    )


def _check_numbers(args) -> None:
    """nan or inf is never a meaningful number option here; each command checks this first."""
    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise RnnkitError(f"--{name.replace('_', '-')} must be a finite number, got {v}")


def _check_integers(args) -> None:
    """A whole number past 2^63 sizes or counts nothing torch can hold: --hidden, --batch-size, --k, --layers, --random
    or --random-starts 10**30 ended in torch's 'Overflow when unpacking long long' traceback, --epochs, --gibbs-steps
    or --sweeps 10**30 ran without end. Checked in _setup, after each command's own checks (which name a fix)."""
    for name, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not isinstance(v, bool):
                fits_int64(f"--{name.replace('_', '-')}", v)


def _setup(args, writes=()):
    """Check --device, make --out, and seed a generator on --device: once every option is checked. `writes`: the
    files the command writes into --out, each refused where it is a folder, a device or a pipe (a folder failed the
    command once its work was done)."""
    import torch

    _check_numbers(args)
    _check_integers(args)
    _check_device(args.device)
    refuse_overwrite(args.out, [pathlib.Path(args.out) / name for name in writes], [], "")
    out = out_folder(args.out)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    return out, generator


def _no_empty_out(command):
    """command(args), its --out folder (made by _setup) removed again where the command fails before writing into
    it (an RBM that diverged, Ctrl-C), as word2vec and tfidf index do, instead of left empty."""

    @functools.wraps(command)
    def run(args):
        existed = pathlib.Path(args.out).exists()
        try:
            return command(args)
        except BaseException:
            out = pathlib.Path(args.out)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            raise

    return run


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise RnnkitError(f"unknown --device {name!r}; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise RnnkitError(f"--device {name} is not supported; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnkitError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RnnkitError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use cuda:0"
        )


def _wrote(path) -> None:
    say(f"wrote {path}")


def _pick(args, name: str, default, dry):
    """An option's value: as given; else `dry` under --dry-run; else `default`."""
    value = getattr(args, name)
    if value is not None:
        return value
    return dry if args.dry_run else default


def _nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RnnkitError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1000:
            return f"{num_bytes:.3g} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.3g} TB" if num_bytes < 1000 else f"{num_bytes:,.0f} TB"


def _check_units(units: int, what: str, fix: str, command: str = "hopfield recall") -> None:
    """Refuse a network too big to hold before its weights are allocated."""
    if units > MAX_UNITS:
        raise RnnkitError(
            f"{what}: a {units:,}² weight matrix ({_size(4 * units**2)}) is too big; {command} "
            f"takes at most {MAX_UNITS:,} units; {fix}"
        )


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


# Hopfield.
def hopfield_recall(args) -> None:
    from rnnkit.energy import hopfield, patterns_io, plots
    from rnnkit.energy._checks import as_spins, fraction, positive_int

    _check_numbers(args)
    source = next((f"--{k}" for k in ("patterns", "images", "digits") if getattr(args, k) is not None), None)
    if source and args.units is not None:  # the other sources set N themselves
        raise RnnkitError(f"--units is for random patterns, not {source} (its patterns set N); leave it out")
    units = positive_int("--units (number of units N)", _pick(args, "units", 100, 64))
    count = positive_int("--random (number of patterns P)", 5 if args.random is None else args.random)
    fraction("--noise", args.noise)
    positive_int("--max-steps", args.max_steps)
    _check_device(args.device)
    written = [pathlib.Path(args.out) / name for name in ("recall.png", "energy.png")]
    refuse_overwrite(args.out, written, [args.patterns] if args.patterns else args.images or [], source)
    # ('' from an unset shell variable, "$PATTERNS": it was said 'patterns file  not found', or 'image  not found')
    if args.patterns is not None and not args.patterns.strip():
        raise RnnkitError(
            "--patterns is empty; give a text file of ±1 patterns, or leave it out for random patterns"
        )
    if args.images and not all(name.strip() for name in args.images):
        raise RnnkitError(f"--images holds an empty name ({args.images!r}); give PNG or JPEG images")
    if args.patterns is not None:
        patterns, shape = patterns_io.read_patterns(args.patterns)
        n = len(patterns[0]) if patterns else 0
        _check_units(n, f"--patterns {args.patterns} has patterns of {n:,} units", "use shorter patterns")
    elif args.images:
        patterns, shape = patterns_io.read_images(args.images)
        (h, w), n = shape, len(patterns[0])
        _check_units(n, f"--images of {w}x{h} = {n:,} pixels", "resize the images (to 100x100, say)")
    elif args.digits is not None:  # 0 is given too: an error there, not random patterns
        patterns, shape = patterns_io.digit_patterns(args.digits)
    else:
        _check_units(units, f"--units {units}", f"give --units {MAX_UNITS} or less")
        patterns, shape = None, None
    name = (
        "patterns" if args.patterns is None else f"--patterns {args.patterns}: patterns"
    )  # (the file named)
    xi = None if patterns is None else as_spins(patterns, name)  # a bad file is an error before --out is made
    n = units if xi is None else xi.shape[1]
    if n < 2:  # as hopfield capacity: W is 0, and every state went to +1 whatever was stored
        given = (
            "--units 1"
            if xi is None
            else f"{source} {args.patterns or ''}".strip() + " has patterns of 1 unit"
        )
        raise RnnkitError(
            f"{given}: a Hopfield network needs 2 or more units (one unit has no weights: W's diagonal is zero); "
            f"give {'--units 2' if xi is None else 'patterns of 2'} or more"
        )
    if args.erase and round(args.noise * n) == 0:  # (corrupt's count of units: the cues were the patterns)
        raise RnnkitError(
            f"--erase with --noise {args.noise:g} erases no unit of {_plural(n, 'unit')} (round(noise x N) = 0); "
            "give a larger --noise with it, or leave --erase out"
        )
    out, g = _setup(args, ("recall.png", "energy.png"))
    if xi is None:
        xi = hopfield.random_patterns(count, units, g, args.device)
    xi = xi.to(args.device)
    net = hopfield.Hopfield(xi.shape[1], args.rule, device=args.device).store(xi)
    cues = hopfield.corrupt(xi, args.noise, g, erase=args.erase)
    order = g.get_state()  # (async: each sweep's order of units, the same for every cue)
    result = net.recall(cues, args.mode, args.max_steps, g, record=False, progress=True)
    # the energies of the cues drawn, on their own with the same orders (the same states): recording every cue kept a
    # (cues, N x sweeps) float64 trace, twice over, for a figure of 8 (7.8 GB for 800 cues of 4,000 units)
    energies = net.recall(cues[:SHOWN], args.mode, args.max_steps, g.set_state(order)).energies
    m = hopfield.overlap(result.states, xi).diagonal()
    print(
        f"{_plural(len(xi), 'pattern')} of {_plural(xi.shape[1], 'unit')}, {args.rule} rule, {args.mode} updates: ",
        end="",
    )
    print(result.summary())
    if (result.status == hopfield.TWO_CYCLE).any():
        print("synchronous updates entered a 2-cycle for some cues: the state alternates between two states")
    m = m.tolist()
    if len(m) <= MAX_LISTED:
        print("final overlap with the stored pattern: " + " ".join(f"{v:.3f}" for v in m))
    else:  # (1,000 cues were one line of 6,000 characters)
        exact = sum(v == 1 for v in m)
        print(f"final overlap with the stored pattern: mean {sum(m) / len(m):.3f}, lowest {min(m):.3f}, "
              f"{exact:,} of {len(m):,} recalled exactly; the first {MAX_LISTED}: "
              + " ".join(f"{v:.3f}" for v in m[:MAX_LISTED]))  # fmt: skip
    # (200 patterns drew 8 rows, read as all of them, as a filters figure of 100 of 500 hidden units was)
    shown = f"the first {SHOWN} of {len(xi):,}" if len(xi) > SHOWN else ""
    drawn = xi[:SHOWN], cues[:SHOWN], result.states[:SHOWN]
    _wrote(plots.recall_figure(*drawn, out / "recall.png", shape, f"{shown} patterns" if shown else ""))
    title = f"energy, {args.mode} updates" + (f", {shown} cues" if shown else "")
    _wrote(plots.energy_figure(energies, out / "energy.png", title))


def hopfield_capacity(args) -> None:
    from rnnkit.energy import capacity, plots
    from rnnkit.energy._checks import fraction, positive_int

    _check_numbers(args)
    d = capacity.CapacityConfig()
    sizes = _pick(args, "sizes", d.sizes, (32, 64))
    loads = _pick(args, "loads", d.loads, (0.05, 0.15, 0.25))
    for n in sizes:
        if positive_int("--sizes (N)", n) < 2:
            raise RnnkitError(
                f"--sizes (N) must be 2 or more (one unit has no weights: W's diagonal is zero), got {n}"
            )
        _check_units(n, f"--sizes {n}", f"give --sizes of {MAX_UNITS:,} or less", "hopfield capacity")
    for load in loads:
        if not 0 < load <= 1:
            raise RnnkitError(f"--loads (P/N) must be in (0, 1], got {load}")
    fraction("--noise", args.noise)
    min_patterns = positive_int("--min-patterns", _pick(args, "min_patterns", d.min_patterns, 8))
    limit = BYTES_PER_WEIGHT * MAX_UNITS**2  # what the largest recall network may take
    for n in sizes:
        for load in loads:
            networks = capacity.networks_per_point(n, load, min_patterns)
            if BYTES_PER_WEIGHT * networks * n**2 > limit:
                raise RnnkitError(
                    f"--sizes {n} at --loads {load:g}: {networks:,} networks of {n:,} units (for "
                    f"--min-patterns {min_patterns}) need about {_size(BYTES_PER_WEIGHT * networks * n**2)}, "
                    f"more than the {_size(limit)} allowed; give larger --loads, a smaller --min-patterns "
                    "or smaller --sizes"
                )
    cfg = capacity.CapacityConfig(
        tuple(sizes), tuple(loads), args.rule, args.noise,
        positive_int("--random-starts", _pick(args, "random_starts", d.random_starts, 4)),
        min_patterns,
        positive_int("--max-sweeps", _pick(args, "max_sweeps", d.max_sweeps, 5)),
        args.seed,
    ).check()  # fmt: skip
    out, _ = _setup(args, ("capacity.json", "capacity.png"))
    done = []

    def progress(r):
        print(f"N={r['N']:5d} P/N={r['load']:.3f} overlap={r['mean_overlap']:.3f} recalled={r['recalled']:.2f} "
              f"perfect={r['perfect']:.2f} spurious={r['spurious']:.2f} mixtures={r['mixture']:.2f} ({r['seconds']:.1f}s)")  # fmt: skip
        # on disk as each point comes: a Ctrl-C (or a kill) an hour into a run lost every point
        done.append(r)
        write_text(
            out / "capacity.json", json.dumps({"rows": done, "crossings": capacity.crossings(done)}, indent=1)
        )

    try:
        rows = capacity.capacity_experiment(cfg, args.device, progress)
    except KeyboardInterrupt:
        if done:
            print(f"{out / 'capacity.json'} holds the {_plural(len(done), 'point')} done", file=sys.stderr)
        raise
    summary = capacity.crossings(rows)
    for c in summary:
        show = functools.partial(_crossing, [r for r in rows if r["N"] == c["N"]], c)
        say(f"N={c['N']}: half recalled at P/N{show('recalled')} (α_c={c['alpha_c']}), half "
             f"perfect at P/N{show('perfect')} (1/(2 ln N)={c['perfect_bound']:.3f}), "
             f"overlap 1/2 at P/N{show('mean_overlap', 'overlap_half')}")  # fmt: skip
    write_text(out / "capacity.json", json.dumps({"rows": rows, "crossings": summary}, indent=1))
    _wrote(out / "capacity.json")
    _wrote(plots.capacity_figure(rows, out / "capacity.png"))


def _crossing(rows, crossings, key, half=None) -> str:
    """Where `key` falls through 1/2 ("=0.123"), or, where it never does over the loads run, which side of them it
    lies on: "<0.250" under 1/2 already at the smallest load, ">0.300" not under it by the largest ("none" said
    both: a recall of 3% at every load read as one that never fell)."""
    x = crossings[half or f"{key}_half"]
    if x is not None:
        return f"={x:.3f}"
    rows = sorted(rows, key=lambda r: r["load"])
    return f"<{rows[0]['load']:.3f}" if rows[0][key] < 0.5 else f">{rows[-1]['load']:.3f}"


# RBM.
def _digits_split(args):
    import torch

    from rnnkit.energy.digits import load_digits

    x, y = load_digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    x, y = x[order], y[order]
    if args.dry_run:
        x, y = x[:300], y[:300]
    cut = int(0.8 * len(x))
    dev = args.device
    return x[:cut].to(dev), y[:cut], x[cut:].to(dev), y[cut:]


def _standardise(x_train, x_test):
    """Pixels for Gaussian visible units (unit variance): z = (x - μ) / σ, per pixel.

    μ and σ are the training split's only, applied to both splits: statistics of train + test let the test
    digits shape their own inputs (the test scores leaked). σ is clamped at 0.01 (the digits' border pixels
    are constant). Returns (z_train, z_test, μ, σ); x = μ + σ z maps samples back to pixels.
    """
    mean, std = x_train.mean(0), x_train.std(0).clamp(min=1e-2)
    return (x_train - mean) / std, (x_test - mean) / std, mean, std


LR = {"bernoulli": 0.06, "gaussian": 0.005}  # --lr when not given, by --visible
FILTERS_SHOWN = 100  # hidden units drawn in a filters figure (10 x 10)


def _shown(hidden: int) -> str:
    """The part of a filters title that says how many of the hidden units it draws: with --hidden 500 the figure
    showed 100 filters and read as all of them."""
    return f", the first {FILTERS_SHOWN} of {hidden:,}" if hidden > FILTERS_SHOWN else ""


def _train_config(args, visible="bernoulli"):
    """The training options, each checked under its flag's name."""
    from rnnkit.energy.rbm_train import RBMTrainConfig

    flags = {key: "--" + key.replace("_", "-") for key in RBMTrainConfig.NAMES}
    return RBMTrainConfig(
        _pick(args, "epochs", 10, 1), args.batch_size, LR[visible] if args.lr is None else args.lr, args.k,
        not args.cd, args.momentum, args.weight_decay,
    ).check(flags)  # fmt: skip


def _diverged(e, visible="bernoulli"):
    """TrainingDiverged, said with the flag to change and a value to try."""
    lower = LR[visible] if e.lr > LR[visible] else e.lr / 10
    return RnnkitError(
        f"RBM training diverged in epoch {e.epoch + 1} with --lr {e.lr:g}: the weights became NaN or "
        f"infinite; stopped before writing any figure; try a lower --lr, e.g. {lower:g}"
    )


def rbm_train(args) -> None:
    from rnnkit.energy import ais, plots
    from rnnkit.energy._checks import positive_int
    from rnnkit.energy.rbm import RBM
    from rnnkit.energy.rbm_train import TrainingDiverged

    _check_numbers(args)
    cfg = _train_config(args, args.visible)
    hidden = positive_int("--hidden", _pick(args, "hidden", 100, 16))
    steps = positive_int("--gibbs-steps", _pick(args, "gibbs_steps", 1000, 10))
    out, g = _setup(args, ("filters.png", "samples.png"))
    gaussian = args.visible == "gaussian"
    x_train, _, x_test, _ = _digits_split(args)
    if gaussian:
        x_train, x_test, mean, std = _standardise(x_train, x_test)
    rbm = RBM(64, hidden, args.visible, generator=g, device=args.device)

    def log(epoch, r):
        error = r.reconstruction_error(x_test)
        if not math.isfinite(error):
            raise TrainingDiverged(epoch, cfg.lr)
        print(f"epoch {epoch + 1}: reconstruction error of test digits {error:.4f}")

    try:
        rbm.fit(x_train, cfg, g, log)
    except TrainingDiverged as e:
        raise _diverged(e, args.visible) from None
    x_scored = x_test if gaussian else (x_test > 0.5).to(x_test.dtype)  # probabilities of binary digits
    if not gaussian:
        pl = rbm.pseudo_likelihood(x_scored, per_unit=True).mean().item()
        print(f"pseudo-likelihood of binarised test digits: {pl:.4f} per pixel, {pl * 64:.2f} per image")
    chains, betas = (10, 50) if args.dry_run else (100, 2000)
    log_Z, err = ais.log_partition(rbm, chains, betas, x_train, g, progress=True)
    log_p = rbm.log_likelihood(x_scored, log_Z)
    if not (math.isfinite(log_Z) and math.isfinite(log_p)):
        raise RnnkitError(
            f"the AIS estimate of log Z is {log_Z} (log-likelihood {log_p}): the weights grew too large "
            f"(largest |W| {rbm.W.abs().max().item():.3g}); try a lower --lr than {cfg.lr:g}"
        )
    scored = "test digits" if gaussian else "binarised test digits"
    say(f"AIS log Z = {log_Z:.2f} ± {err:.2f}; log-likelihood of {scored} {log_p:.2f} per image")
    title = f"RBM filters: rows of W (hidden x 64 pixels){_shown(hidden)}"
    _wrote(plots.image_grid(rbm.W[:FILTERS_SHOWN], out / "filters.png", title, (8, 8), symmetric=True))
    _, means = rbm.sample(50, steps, generator=g)
    if gaussian:  # back from standardised units to pixels
        means = mean + std * means
    title = f"Gibbs chains from noise after {steps} steps (visible means)"
    # on the pixels' own scale: each image stretched over its own range drew a grey blur (means 0.4 to 0.8) as
    # black on white, a digit as crisp as the data's
    _wrote(plots.image_grid(means, out / "samples.png", title, (8, 8), value_range=(0, 1)))


def rbm_dbn(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from rnnkit.energy import plots
    from rnnkit.energy._checks import positive_float, positive_int
    from rnnkit.energy.dbn import DBN
    from rnnkit.energy.rbm_train import TrainingDiverged

    _check_numbers(args)
    positive_float("--C (inverse regularisation of the classifier)", args.C)
    cfg = _train_config(args)
    layers = _pick(args, "layers", [256, 128], [16, 8])
    for n in layers:
        positive_int("--layers (hidden sizes)", n)
    out, g = _setup(args, ("dbn_filters.png",))
    x_train, y_train, x_test, y_test = _digits_split(args)
    dbn = DBN([64, *layers], generator=g, device=args.device)
    try:
        dbn.fit(x_train, cfg, g, lambda layer, epoch, _: print(f"layer {layer + 1} epoch {epoch + 1}"))
    except TrainingDiverged as e:
        raise _diverged(e) from None

    def accuracy(f_train, f_test):
        with threadpool_limits(1):  # a small fit; extra threads only stall on a busy machine
            clf = LogisticRegression(C=args.C, max_iter=2000).fit(f_train.cpu().numpy(), y_train.numpy())
        return clf.score(f_test.cpu().numpy(), y_test.numpy())

    print(f"logistic regression on raw pixels: accuracy {accuracy(x_train, x_test):.4f}")
    for which in ("top", "all"):
        acc = accuracy(dbn.transform(x_train, which), dbn.transform(x_test, which))
        print(
            f"logistic regression on DBN features ({which} layer{'s' if which == 'all' else ''}): accuracy {acc:.4f}"
        )
    W, title = dbn.rbms[0].W[:FILTERS_SHOWN], f"first-layer filters{_shown(layers[0])}"
    _wrote(plots.image_grid(W, out / "dbn_filters.png", title, (8, 8), symmetric=True))


def rbm_cd_check(args) -> None:
    import torch

    from rnnkit.energy import plots, rbm_exact
    from rnnkit.energy._checks import positive_int
    from rnnkit.energy.rbm import RBM

    _check_numbers(args)
    ks = _pick(args, "ks", [1, 2, 4, 8, 16, 32, 64, 128], [1, 2, 4])
    for k in ks:
        if k < 1:
            raise RnnkitError(f"--ks: k (Gibbs steps) must be an integer >= 1, got {k}")
    V = positive_int("--visible-units", args.visible_units)
    H = positive_int("--hidden-units", args.hidden_units)
    if V > CD_MAX_VISIBLE:  # the Gibbs transition matrix is (2^V, 2^V)
        raise RnnkitError(
            f"--visible-units {V}: the exact CD-k check enumerates 2^V x 2^V visible transitions; "
            f"give --visible-units {CD_MAX_VISIBLE} or less"
        )
    if V + H > CD_MAX_UNITS:  # P(h|v) over all 2^V x 2^H pairs
        raise RnnkitError(
            f"--visible-units {V} with --hidden-units {H}: the exact CD-k check enumerates 2^(V + H) states "
            f"and needs V + H <= {CD_MAX_UNITS}; give --hidden-units {max(CD_MAX_UNITS - V, 1)} or less"
        )
    if args.weight_scale < 0:
        raise RnnkitError(f"--weight-scale (std of the random weights) must be >= 0, got {args.weight_scale}")
    if 10 * args.weight_scale > torch.finfo(torch.float32).max:  # draws of ±inf weights: nan for every k
        raise RnnkitError(f"--weight-scale {args.weight_scale:g} is beyond the range of float32 (the weights' "
                          "type, at most 3.4e+38 a weight); give a smaller one")  # fmt: skip
    out, g = _setup(args, ("cd_check.png",))
    rbm = RBM(V, H, init_scale=args.weight_scale, generator=g, device=args.device)
    data = (torch.rand(200, V, generator=g, device=args.device) < 0.3).float()
    exact = torch.cat([t.flatten() for t in rbm_exact.exact_gradient(rbm, data)])
    errors = []
    for k in ks:
        cd = torch.cat([t.flatten() for t in rbm_exact.cd_gradient_expected(rbm, data, k)])
        errors.append(((cd - exact).norm() / exact.norm()).item())
        print(f"k={k:4d}: |E[CD-k gradient] - exact gradient| / |exact| = {errors[-1]:.2e}")
    title = f"expected CD-k gradient vs exact gradient, V={V}, H={H}"
    path = out / "cd_check.png"
    _wrote(
        plots.line_figure(ks, {"CD-k": errors}, path, "k (Gibbs steps)", "relative error", title, logy=True)
    )


# Ising.
def ising_sweep(args) -> None:
    import torch

    from rnnkit.energy import ising, plots
    from rnnkit.energy._checks import positive_int

    _check_numbers(args)
    t_min, t_max = 1.0 if args.t_min is None else args.t_min, 4.0 if args.t_max is None else args.t_max
    if args.temperatures:  # the range options beside it were ignored without a word
        given = [
            f"--{k.replace('_', '-')}" for k in ("t_min", "t_max", "count") if getattr(args, k) is not None
        ]
        if given:
            names = given[0] if len(given) == 1 else ", ".join(given[:-1]) + " and " + given[-1]
            raise RnnkitError(f"{names} set{'s' if len(given) == 1 else ''} the range of temperatures that "
                              "--temperatures replaces; give --temperatures or --t-min, --t-max and --count")  # fmt: skip
        temps = args.temperatures
        if min(temps) <= 0:
            raise RnnkitError(f"--temperatures must be positive numbers, got {temps}")
        chains = len(temps)
    else:
        if min(t_min, t_max) <= 0:
            raise RnnkitError(f"--t-min and --t-max: temperatures must be positive, got {t_min}, {t_max}")
        # (linspace runs in float32: 1e308 was its 'value cannot be converted to type float without overflow'
        # traceback, 1e-308 the error 'temperatures must be positive numbers, got [0.0, ...]' of no flag)
        ends = torch.tensor([t_min, t_max], dtype=torch.float64).float()
        if not torch.isfinite(ends).all() or (ends <= 0).any():
            raise RnnkitError(f"--t-min and --t-max: temperatures must be numbers that float32 holds (about 1e-38 to "
                              f"3e38), got {t_min:g}, {t_max:g}")  # fmt: skip
        chains = positive_int("--count (number of temperatures)", _pick(args, "count", 32, 4))
        if chains == 1 and args.t_max is not None and t_max != t_min:  # (linspace's one point is t_min)
            raise RnnkitError(f"--count 1 sweeps one temperature, --t-min ({t_min:g}): --t-max {t_max:g} is not "
                              "used; give --count 2 or more for the range, or --temperatures T for one")  # fmt: skip
    size = positive_int("--size (lattice side L)", _pick(args, "size", 64, 8))
    if size % 2:
        raise RnnkitError(f"--size (lattice side L) must be even for the checkerboard update, got {size}")
    sweeps = positive_int("--sweeps", _pick(args, "sweeps", 1000, 20))
    burn_in = _nonnegative_int("--burn-in", _pick(args, "burn_in", 500, 10))
    need = ISING_BYTES_PER_SPIN * chains * size**2
    if need > MAX_ISING_BYTES:
        largest = int(math.sqrt(MAX_ISING_BYTES / (ISING_BYTES_PER_SPIN * chains))) // 2 * 2
        fix = (
            f"give --size {largest:,} or less, or fewer temperatures"
            if largest >= 2
            else "give fewer temperatures"
        )
        raise RnnkitError(
            f"--size {size:,} with {_plural(chains, 'temperature')}: {chains:,} x {size:,}² spins need about "
            f"{_size(need)}, more than the {_size(MAX_ISING_BYTES)} allowed; {fix}"
        )
    if not args.temperatures:  # made only now: --count is within the limit
        temps = torch.linspace(t_min, t_max, chains).tolist()
    out, g = _setup(args, ("ising.json", "ising.png"))
    model = ising.Ising(size, temps, args.coupling, args.field, args.update, args.start, g, args.device)
    # a Ctrl-C an hour into a large sweep lost every temperature: past two measured sweeps it ends the run there
    results = model.run(sweeps, burn_in, progress=True, interruptible=True)
    stopped = model.interrupted
    if stopped:
        print(f"interrupted after {model.measured:,} of {sweeps:,} measured sweeps: the averages below are of those",
              file=sys.stderr)  # fmt: skip
    tc = ising.onsager_tc(args.coupling) if args.field == 0 and args.coupling > 0 else None
    keys = ("temperature", "abs_magnetisation", "energy", "specific_heat", "susceptibility")
    rows = [dict(zip(keys, row)) for row in zip(*(results[k].tolist() for k in keys))]
    for r in rows:
        t = r["temperature"]  # (below a thousandth every row read T=0.000; 1e30 as 31 digits)
        t = f"{t:.3f}" if 1e-3 <= t < 1e6 else f"{t:.3g}"
        say(f"T={t}  |m|={r['abs_magnetisation']:.3f}  e={r['energy']:.3f}  C={r['specific_heat']:.3f}  "
             f"χ={r['susceptibility']:.3f}")  # fmt: skip
    settings = {"size": size, "coupling": args.coupling, "field": args.field, "update": args.update,
                "start": args.start, "burn_in": burn_in, "sweeps": sweeps, "measured": model.measured,
                "seed": args.seed}  # fmt: skip
    write_text(out / "ising.json", json.dumps({**settings, "onsager_tc": tc, "rows": rows}, indent=1))
    _wrote(out / "ising.json")
    onsager = (lambda t: ising.onsager_magnetisation(t, args.coupling)) if tc else None
    _wrote(plots.ising_figure(results, out / "ising.png", tc, onsager))
    if stopped:  # the same one: a Ctrl-C exits 130, a SIGTERM 143 (a new KeyboardInterrupt made it 130)
        raise stopped


def add_commands(sub) -> None:
    """Each action's parser is also its `_parser` default: unrecognized arguments are said with its usage."""
    _add_hopfield(sub.add_parser("hopfield", help="Hopfield networks: recall, capacity"))
    _add_rbm(sub.add_parser("rbm", help="restricted Boltzmann machines on digits"))
    _add_ising(sub.add_parser("ising", help="the 2-D Ising model"))


# hopfield capacity's defaults, said in its help: CapacityConfig's, whose module imports torch (3-5 s for a help that
# takes 0.2 without it); the command runs on CapacityConfig's own, and a test holds the two equal
CAPACITY_DEFAULTS = {"sizes": (100, 200, 500, 1000), "rule": "hebbian", "cue_noise": 0.0, "random_starts": 32,
                     "min_patterns": 200, "max_sweeps": 200}  # fmt: skip


def _add_hopfield(group) -> None:
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("recall", help="store patterns and recall them from corrupted cues")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--random", type=int, metavar="P", help="P random patterns (the default source; P=5)")
    src.add_argument("--patterns", metavar="FILE", help="text file, one ±1 pattern per line")
    src.add_argument("--images", nargs="+", metavar="PNG", help="images of equal size, thresholded")
    src.add_argument("--digits", type=int, metavar="K", help="one image of each of the first K digits")
    p.add_argument("--units", type=int, help=f"N for random patterns (default: 100; 64 with --dry-run; "
                   f"at most {MAX_UNITS:,})")  # fmt: skip
    p.add_argument(
        "--noise", type=float, default=0.2, help="fraction of each cue's units flipped (default: %(default)s)"
    )
    p.add_argument("--erase", action="store_true", help="set those units to 0 (unknown) instead")
    p.add_argument("--mode", default="async", choices=["async", "sync"],
                   help="async: one unit at a time, in a fresh random order each sweep; sync: every unit at once "
                   "(may enter a 2-cycle)")  # fmt: skip
    p.add_argument("--rule", default="hebbian", choices=["hebbian", "storkey"],
                   help="how the patterns set the weights: hebbian (outer products, zero diagonal) or storkey (Storkey's "
                   "incremental rule, a larger capacity)")  # fmt: skip
    p.add_argument("--max-steps", type=int, default=100,
                   help="sweeps (async) or synchronous updates before a recall that has not settled stops")  # fmt: skip
    _common(p, "hopfield-recall")
    p.set_defaults(func=_no_empty_out(hopfield_recall), _parser=p)

    d = argparse.Namespace(**CAPACITY_DEFAULTS)
    p = actions.add_parser("capacity", help="recall against the load P/N (Amit, Gutfreund, Sompolinsky)")
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help=f"numbers of units (default: {' '.join(map(str, d.sizes))}; 32 64 with --dry-run)",
    )
    p.add_argument("--loads", type=float, nargs="+", metavar="P/N",
                   help="loads P/N (default: 0.02 to 0.25; 0.05 0.15 0.25 with --dry-run)")  # fmt: skip
    p.add_argument("--rule", default=d.rule, choices=["hebbian", "storkey"],
                   help="how the patterns set the weights: hebbian (outer products, zero diagonal) or storkey (Storkey's "
                   "incremental rule, a larger capacity)")  # fmt: skip
    p.add_argument("--noise", type=float, default=d.cue_noise, help="fraction of bits flipped in each cue")
    p.add_argument(
        "--random-starts", type=int, help=f"per network (default: {d.random_starts}; 4 with --dry-run)"
    )
    p.add_argument(
        "--min-patterns", type=int, help=f"recalls per point (default: {d.min_patterns}; 8 with --dry-run)"
    )
    p.add_argument("--max-sweeps", type=int, help="asynchronous sweeps before a recall that has not settled "
                   f"stops (default: {d.max_sweeps}; 5 with --dry-run)")  # fmt: skip
    _common(p, "hopfield-capacity", "the figure and capacity.json")
    p.set_defaults(func=_no_empty_out(hopfield_capacity), _parser=p)


def _training_options(p, lr_help=f"learning rate (default: {LR['bernoulli']})") -> None:
    p.add_argument(
        "--epochs", type=int, help="passes over the training digits (default: 10; 1 with --dry-run)"
    )
    p.add_argument("--batch-size", type=int, default=10, help="digits per gradient step")
    p.add_argument("--lr", type=float, help=lr_help)
    p.add_argument("--k", type=int, default=1, help="Gibbs steps per update")
    p.add_argument("--cd", action="store_true", help="CD-k from the data instead of persistent chains")
    p.add_argument("--momentum", type=float, default=0.0,
                   help="in [0, 1): m <- momentum m + lr (g - weight_decay W); W <- W + m")  # fmt: skip
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="L2 penalty on the weights W (not the biases), subtracted from the gradient")  # fmt: skip


def _add_rbm(group) -> None:
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="train an RBM on scikit-learn's digits")
    _training_options(
        p, f"learning rate (default: {LR['bernoulli']}; {LR['gaussian']} with --visible gaussian)"
    )
    p.add_argument("--hidden", type=int, help="hidden units (default: 100; 16 with --dry-run)")
    p.add_argument("--visible", default="bernoulli", choices=["bernoulli", "gaussian"],
                   help="gaussian: standardised pixels, with a smaller default --lr")  # fmt: skip
    p.add_argument(
        "--gibbs-steps", type=int, help="for the samples figure (default: 1000; 10 with --dry-run)"
    )
    _common(p, "rbm-train")
    p.set_defaults(func=_no_empty_out(rbm_train), _parser=p)

    p = actions.add_parser("dbn", help="train a deep belief network; classify with its features")
    _training_options(p)
    p.add_argument(
        "--layers", type=int, nargs="+", help="hidden sizes (default: 256 128; 16 8 with --dry-run)"
    )
    p.add_argument("--C", type=float, default=100.0, help="inverse regularisation of the classifier")
    _common(p, "rbm-dbn")
    p.set_defaults(func=_no_empty_out(rbm_dbn), _parser=p)

    p = actions.add_parser("cd-check", help="CD-k against the exact gradient of a tiny RBM")
    p.add_argument("--visible-units", type=int, default=8,
                   help=f"V of the tiny RBM (at most {CD_MAX_VISIBLE}: its 2^V states are enumerated)")  # fmt: skip
    p.add_argument(
        "--hidden-units", type=int, default=6, help=f"H of the tiny RBM (V + H at most {CD_MAX_UNITS})"
    )
    p.add_argument("--weight-scale", type=float, default=2.0, help="std of the random weights (slow mixing)")
    p.add_argument(
        "--ks", type=int, nargs="+", help="Gibbs steps to try (default: 1 2 4 ... 128; 1 2 4 with --dry-run)"
    )
    _common(p, "rbm-cd-check")
    p.set_defaults(func=_no_empty_out(rbm_cd_check), _parser=p)


def _add_ising(group) -> None:
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("sweep", help="magnetisation, energy, C and χ against temperature")
    p.add_argument("--size", type=int, help="lattice side L, even (default: 64; 8 with --dry-run)")
    p.add_argument("--t-min", type=float, help="lowest of --count evenly spaced temperatures (default: 1.0)")
    p.add_argument("--t-max", type=float, help="highest of --count evenly spaced temperatures (default: 4.0)")
    p.add_argument("--count", type=int, help="number of temperatures (default: 32; 4 with --dry-run)")
    p.add_argument("--temperatures", type=float, nargs="+", help="explicit temperatures instead")
    p.add_argument("--sweeps", type=int, help="measured sweeps (default: 1000; 20 with --dry-run)")
    p.add_argument("--burn-in", type=int,
                   help="sweeps run before the measured ones, not averaged (default: 500; 10 with --dry-run)")  # fmt: skip
    p.add_argument("--update", default="metropolis", choices=["metropolis", "heat-bath"],
                   help="the checkerboard's spin update: Metropolis, or the heat bath (Gibbs sampling)")  # fmt: skip
    p.add_argument("--start", default="ordered", choices=["ordered", "random"],
                   help="spins all aligned (along --field), or random ±1")  # fmt: skip
    p.add_argument("--coupling", type=float, default=1.0, help="J of H = -J Σ σ_i σ_j - h Σ σ_i")
    p.add_argument("--field", type=float, default=0.0, help="h of H = -J Σ σ_i σ_j - h Σ σ_i")
    _common(p, "ising", "the figure and ising.json")
    p.set_defaults(func=_no_empty_out(ising_sweep), _parser=p)
