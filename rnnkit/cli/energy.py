"""`rnnkit hopfield|rbm|ising ...`: the energy models of deck 001; each writes PNGs to --out and says where.

    rnnkit hopfield recall    store random patterns, a text file, images or digits; recall from noisy cues
    rnnkit hopfield capacity  recall against the load P/N for several N
    rnnkit rbm train          an RBM on scikit-learn's digits: filters, samples, likelihoods
    rnnkit rbm dbn            a stack of RBMs; logistic regression on its features
    rnnkit rbm cd-check       how fast the CD-k gradient approaches the exact gradient as k grows
    rnnkit ising sweep        observables of the 2-D Ising model against temperature
Every subcommand takes --dry-run (tiny sizes) for a smoke test.
"""

import json
import math

import torch

from rnnkit.cli import out_folder
from rnnkit.energy._checks import as_spins, positive_float, positive_int
from rnnkit.errors import RnnkitError


def _common(p, action: str):
    p.add_argument("--out", default=f"runs/{action}", help="folder for the figures (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, for a smoke test")


def _setup(args):
    """Check the options every command shares, make --out, and seed a generator on --device."""
    for name, value in vars(args).items():  # nan or inf is never a meaningful number option here
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise RnnkitError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    _check_device(args.device)
    out = out_folder(args.out)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    return out, generator


def _check_device(name: str) -> None:
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
    print(f"wrote {path}")


# Hopfield.
def hopfield_recall(args) -> None:
    from rnnkit.energy import hopfield, patterns_io, plots

    out, g = _setup(args)
    if args.patterns:
        patterns, shape = patterns_io.read_patterns(args.patterns)
    elif args.images:
        patterns, shape = patterns_io.read_images(args.images)
    elif args.digits is not None:  # 0 is given too: an error there, not random patterns
        patterns, shape = patterns_io.digit_patterns(args.digits)
    else:
        units = positive_int("number of units N", 64 if args.dry_run else args.units)
        count = positive_int("number of patterns P", args.random)
        patterns, shape = hopfield.random_patterns(count, units, g, args.device), None
    xi = as_spins(patterns).to(args.device)
    net = hopfield.Hopfield(xi.shape[1], args.rule, device=args.device).store(xi)
    cues = hopfield.corrupt(xi, args.noise, g, erase=args.erase)
    result = net.recall(cues, args.mode, args.max_steps, g)
    m = hopfield.overlap(result.states, xi).diagonal()
    print(f"{len(xi)} patterns of {xi.shape[1]} units, {args.rule} rule, {args.mode} updates: ", end="")
    print(result.summary())
    if (result.status == hopfield.TWO_CYCLE).any():
        print("synchronous updates entered a 2-cycle for some cues: the state alternates between two states")
    print("final overlap with the stored pattern: " + " ".join(f"{v:.3f}" for v in m.tolist()))
    _wrote(plots.recall_figure(xi[:8], cues[:8], result.states[:8], out / "recall.png", shape))
    _wrote(plots.energy_figure(result.energies[:8], out / "energy.png", f"energy, {args.mode} updates"))


def hopfield_capacity(args) -> None:
    from rnnkit.energy import capacity, plots

    out, _ = _setup(args)
    cfg = capacity.CapacityConfig(
        tuple(args.sizes), tuple(args.loads), args.rule, args.noise, args.random_starts, args.min_patterns,
        args.max_sweeps, args.seed,
    )  # fmt: skip
    if args.dry_run:
        cfg = capacity.CapacityConfig((32, 64), (0.05, 0.15, 0.25), args.rule, args.noise, 4, 8, 5, args.seed)

    def progress(r):
        print(f"N={r['N']:5d} P/N={r['load']:.3f} overlap={r['mean_overlap']:.3f} recalled={r['recalled']:.2f} "
              f"perfect={r['perfect']:.2f} spurious={r['spurious']:.2f} mixtures={r['mixture']:.2f} ({r['seconds']:.1f}s)")  # fmt: skip

    rows = capacity.capacity_experiment(cfg, args.device, progress)
    summary = capacity.crossings(rows)
    show = lambda x: "none" if x is None else f"{x:.3f}"  # noqa: E731
    for c in summary:
        print(f"N={c['N']}: half recalled at P/N={show(c['recalled_half'])} (α_c={c['alpha_c']}), half "
              f"perfect at {show(c['perfect_half'])} (1/(2 ln N)={c['perfect_bound']:.3f}), "
              f"overlap 1/2 at {show(c['overlap_half'])}")  # fmt: skip
    (out / "capacity.json").write_text(json.dumps({"rows": rows, "crossings": summary}, indent=1))
    _wrote(out / "capacity.json")
    _wrote(plots.capacity_figure(rows, out / "capacity.png"))


# RBM.
def _digits_split(args, gaussian=False):
    from rnnkit.energy.digits import load_digits

    x, y = load_digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    x, y = x[order], y[order]
    if args.dry_run:
        x, y = x[:300], y[:300]
    if gaussian:
        x = (x - x.mean(0)) / x.std(0).clamp(min=1e-2)
    cut = int(0.8 * len(x))
    dev = args.device
    return x[:cut].to(dev), y[:cut], x[cut:].to(dev), y[cut:]


def _train_config(args):
    from rnnkit.energy.rbm_train import RBMTrainConfig

    return RBMTrainConfig(1 if args.dry_run else args.epochs, args.batch_size, args.lr, args.k, not args.cd,
                          args.momentum, args.weight_decay)  # fmt: skip


def rbm_train(args) -> None:
    from rnnkit.energy import ais, plots
    from rnnkit.energy.rbm import RBM

    out, g = _setup(args)
    gaussian = args.visible == "gaussian"
    x_train, _, x_test, _ = _digits_split(args, gaussian)
    rbm = RBM(64, 16 if args.dry_run else args.hidden, args.visible, generator=g, device=args.device)
    cfg = _train_config(args)

    def log(epoch, r):
        print(f"epoch {epoch + 1}: reconstruction error of test digits {r.reconstruction_error(x_test):.4f}")

    rbm.fit(x_train, cfg, g, log)
    if not gaussian:
        pl = rbm.pseudo_likelihood((x_test > 0.5).float(), per_unit=True).mean().item()
        print(f"pseudo-likelihood of binarised test digits: {pl:.4f} per pixel, {pl * 64:.2f} per image")
    chains, betas = (10, 50) if args.dry_run else (100, 2000)
    log_Z, err = ais.log_partition(rbm, chains, betas, x_train, g)
    log_p = rbm.log_likelihood(x_test, log_Z)
    print(f"AIS log Z = {log_Z:.2f} ± {err:.2f}; test log-likelihood {log_p:.2f} per image")
    title = "RBM filters: rows of W (hidden x 64 pixels)"
    _wrote(plots.image_grid(rbm.W[:100], out / "filters.png", title, (8, 8), symmetric=True))
    steps = 10 if args.dry_run else args.gibbs_steps
    _, means = rbm.sample(50, steps, generator=g)
    title = f"Gibbs chains from noise after {steps} steps (visible means)"
    _wrote(plots.image_grid(means, out / "samples.png", title, (8, 8)))


def rbm_dbn(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from rnnkit.energy import plots
    from rnnkit.energy.dbn import DBN

    positive_float("--C (inverse regularisation of the classifier)", args.C)
    out, g = _setup(args)
    x_train, y_train, x_test, y_test = _digits_split(args)
    layers = [16, 8] if args.dry_run else args.layers
    dbn = DBN([64, *layers], generator=g, device=args.device)
    dbn.fit(
        x_train, _train_config(args), g, lambda layer, epoch, _: print(f"layer {layer + 1} epoch {epoch + 1}")
    )

    def accuracy(f_train, f_test):
        with threadpool_limits(1):  # a small fit; extra threads only stall on a busy machine
            clf = LogisticRegression(C=args.C, max_iter=2000).fit(f_train.cpu().numpy(), y_train.numpy())
        return clf.score(f_test.cpu().numpy(), y_test.numpy())

    print(f"logistic regression on raw pixels: accuracy {accuracy(x_train, x_test):.4f}")
    for which in ("top", "all"):
        acc = accuracy(dbn.transform(x_train, which), dbn.transform(x_test, which))
        print(f"logistic regression on DBN features ({which} layers): accuracy {acc:.4f}")
    W = dbn.rbms[0].W[:100]
    _wrote(plots.image_grid(W, out / "dbn_filters.png", "first-layer filters", (8, 8), symmetric=True))


def rbm_cd_check(args) -> None:
    from rnnkit.energy import plots, rbm_exact
    from rnnkit.energy.rbm import RBM

    ks = [1, 2, 4] if args.dry_run else args.ks
    for k in ks:
        if k < 1:
            raise RnnkitError(f"--ks: k (Gibbs steps) must be an integer >= 1, got {k}")
    out, g = _setup(args)
    V, H = args.visible_units, args.hidden_units
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
    from rnnkit.energy import ising, plots

    out, g = _setup(args)
    if args.temperatures:
        temps = args.temperatures
    else:
        temps = torch.linspace(
            args.t_min, args.t_max, positive_int("number of temperatures", args.count)
        ).tolist()
    size, sweeps, burn_in = (8, 20, 10) if args.dry_run else (args.size, args.sweeps, args.burn_in)
    temps = temps[:: max(1, len(temps) // 4)] if args.dry_run else temps
    model = ising.Ising(size, temps, args.coupling, args.field, args.update, args.start, g, args.device)
    results = model.run(sweeps, burn_in)
    tc = ising.onsager_tc(args.coupling) if args.field == 0 and args.coupling > 0 else None
    keys = ("temperature", "abs_magnetisation", "energy", "specific_heat", "susceptibility")
    for row in zip(*(results[k].tolist() for k in keys)):
        print("T={:.3f}  |m|={:.3f}  e={:.3f}  C={:.3f}  χ={:.3f}".format(*row))
    onsager = (lambda t: ising.onsager_magnetisation(t, args.coupling)) if tc else None
    _wrote(plots.ising_figure(results, out / "ising.png", tc, onsager))


def add_commands(sub) -> None:
    _add_hopfield(sub.add_parser("hopfield", help="Hopfield networks: recall, capacity"))
    _add_rbm(sub.add_parser("rbm", help="restricted Boltzmann machines on digits"))
    _add_ising(sub.add_parser("ising", help="the 2-D Ising model"))


def _add_hopfield(group) -> None:
    from rnnkit.energy.capacity import CapacityConfig

    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("recall", help="store patterns and recall them from corrupted cues")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--random", type=int, default=5, metavar="P", help="P random patterns (default)")
    src.add_argument("--patterns", metavar="FILE", help="text file, one ±1 pattern per line")
    src.add_argument("--images", nargs="+", metavar="PNG", help="images of equal size, thresholded")
    src.add_argument("--digits", type=int, metavar="K", help="one image of each of the first K digits")
    p.add_argument("--units", type=int, default=100, help="N for random patterns")
    p.add_argument("--noise", type=float, default=0.2, help="fraction of each cue's units flipped")
    p.add_argument("--erase", action="store_true", help="set those units to 0 (unknown) instead")
    p.add_argument("--mode", default="async", choices=["async", "sync"])
    p.add_argument("--rule", default="hebbian", choices=["hebbian", "storkey"])
    p.add_argument("--max-steps", type=int, default=100)
    _common(p, "hopfield-recall")
    p.set_defaults(func=hopfield_recall)

    d = CapacityConfig()
    p = actions.add_parser("capacity", help="recall against the load P/N (Amit, Gutfreund, Sompolinsky)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes))
    p.add_argument("--loads", type=float, nargs="+", default=list(d.loads))
    p.add_argument("--rule", default=d.rule, choices=["hebbian", "storkey"])
    p.add_argument("--noise", type=float, default=d.cue_noise, help="fraction of bits flipped in each cue")
    p.add_argument("--random-starts", type=int, default=d.random_starts)
    p.add_argument("--min-patterns", type=int, default=d.min_patterns)
    p.add_argument("--max-sweeps", type=int, default=d.max_sweeps)
    _common(p, "hopfield-capacity")
    p.set_defaults(func=hopfield_capacity)


def _training_options(p) -> None:
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.06)
    p.add_argument("--k", type=int, default=1, help="Gibbs steps per update")
    p.add_argument("--cd", action="store_true", help="CD-k from the data instead of persistent chains")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)


def _add_rbm(group) -> None:
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="train an RBM on scikit-learn's digits")
    _training_options(p)
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--visible", default="bernoulli", choices=["bernoulli", "gaussian"],
                   help="gaussian: standardised pixels; use a smaller --lr, e.g. 0.005")  # fmt: skip
    p.add_argument("--gibbs-steps", type=int, default=1000, help="for the samples figure")
    _common(p, "rbm-train")
    p.set_defaults(func=rbm_train)

    p = actions.add_parser("dbn", help="train a deep belief network; classify with its features")
    _training_options(p)
    p.add_argument("--layers", type=int, nargs="+", default=[256, 128], help="hidden sizes")
    p.add_argument("--C", type=float, default=100.0, help="inverse regularisation of the classifier")
    _common(p, "rbm-dbn")
    p.set_defaults(func=rbm_dbn)

    p = actions.add_parser("cd-check", help="CD-k against the exact gradient of a tiny RBM")
    p.add_argument("--visible-units", type=int, default=8)
    p.add_argument("--hidden-units", type=int, default=6)
    p.add_argument("--weight-scale", type=float, default=2.0, help="std of the random weights (slow mixing)")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    _common(p, "rbm-cd-check")
    p.set_defaults(func=rbm_cd_check)


def _add_ising(group) -> None:
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("sweep", help="magnetisation, energy, C and χ against temperature")
    p.add_argument("--size", type=int, default=64, help="lattice side L (even)")
    p.add_argument("--t-min", type=float, default=1.0)
    p.add_argument("--t-max", type=float, default=4.0)
    p.add_argument("--count", type=int, default=32, help="number of temperatures")
    p.add_argument("--temperatures", type=float, nargs="+", help="explicit temperatures instead")
    p.add_argument("--sweeps", type=int, default=1000, help="measured sweeps")
    p.add_argument("--burn-in", type=int, default=500)
    p.add_argument("--update", default="metropolis", choices=["metropolis", "heat-bath"])
    p.add_argument("--start", default="ordered", choices=["ordered", "random"])
    p.add_argument("--coupling", type=float, default=1.0, help="J")
    p.add_argument("--field", type=float, default=0.0, help="h")
    _common(p, "ising")
    p.set_defaults(func=ising_sweep)
