"""The ``tinygrad-bn`` command."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import __version__


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default (those that are not None or a flag's False)."""

    def _get_help_string(self, action):
        text = (action.help or "").replace("\u200b", "").strip()
        if ("default:" in text or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return (text + " (default: %(default)s)").strip()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + message, and defaults
    shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        kwargs.setdefault("help", "\u200b")  # (invisible) help text, so its default shows
        return super().add_argument(*args, **kwargs)

    def error(self, message):  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class CommandError(ValueError):
    """A command cannot run as asked: one line for the user, exit status 2."""


# ------------------------------------------------ checks made before any work is done
def out_folder(path: str) -> Path:
    """The output folder ``path``, created with its parents, checked to be a writable folder.

    Every command that writes files calls this (or ``out_file``) before it starts working,
    so that a bad ``--out`` costs nothing."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--out {path}: is a file, not a folder; give a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"--out {path}: cannot create the folder ({e.strerror})") from None
    _check_writable(folder, path)
    return folder


def out_file(path: str) -> Path:
    """The output file ``path``: its folder created and writable, not itself a folder."""
    file = Path(path)
    if file.is_dir():
        raise CommandError(f"--out {path}: is a folder; give a file name, e.g. {file / 'x.svg'}")
    out_folder(str(file.parent) if str(file.parent) else ".")
    if file.exists() and not os.access(file, os.W_OK):
        raise CommandError(f"--out {path}: the file exists and is read-only")
    return file


def _check_writable(folder: Path, shown: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tinygrad-bn-probe-")
    except OSError as e:
        raise CommandError(f"--out {shown}: cannot write into this folder ({e.strerror})") \
            from None
    os.close(fd)
    os.unlink(probe)


def require(module: str, extra: str, purpose: str) -> None:
    """Import ``module`` or stop: "``purpose`` needs ``module``: pip install ...". Commands call
    it for their optional dependencies before doing any work."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise CommandError(f"{purpose} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'tinygrad-bn[{extra}]'") from None


def require_dot(purpose: str) -> None:
    """Graphviz's ``dot`` on PATH, or stop with what to install (and the .dot way out)."""
    if shutil.which("dot") is None:
        raise CommandError(f"{purpose} needs Graphviz's `dot` program, which is not on PATH: "
                           "install Graphviz (apt-get install graphviz, brew install graphviz, "
                           "conda install -c conda-forge graphviz) or write the DOT source "
                           "with --out FILE.dot")


def _cmd_gradcheck(args) -> int:
    from ..selfcheck import check_primitives, format_table

    t0 = time.perf_counter()
    rows = check_primitives(seed=args.seed)
    print("Gradient check of every primitive: autograd against central differences\n")
    print(format_table(rows))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0 if all(r.passed for _, r in rows) else 1


def _cmd_demo(args) -> int:
    from .demo import run

    out_folder(args.out)
    run(out_dir=args.out, seed=args.seed, progress=not args.no_progress,
        epochs=args.epochs)
    return 0


def _hidden(text: str) -> tuple:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        widths = ()
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive widths like "
                                         f"64,64, got {text!r}")
    return widths


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got "
                                             f"{text!r}")
        return v
    return parse


def _finite_json(obj):
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


#: Learning rates when --lr is not given: torch's defaults where torch has one (Adam, AdamW).
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


def _cmd_train(args) -> int:
    from ..training import data, optim
    from .demo import SMOOTHING, smoothed_loss
    from ..training.models import mlp
    from ..training.train import fit

    if args.momentum is not None and args.optimizer != "sgd":
        raise CommandError(f"--momentum applies to --optimizer sgd only ({args.optimizer} "
                           "keeps its own moving averages, with torch's betas)")
    if args.dataset == "digits":
        require("sklearn", "digits", "--dataset digits")
    if args.dataset == "mnist1d":
        require("mnist1d", "mnist1d", "--dataset mnist1d")
    out = out_folder(args.out)
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    ds = data.load(args.dataset, seed=args.seed)
    model = mlp(ds.n_features, args.hidden, ds.n_classes, norm=args.norm,
                activation=args.activation, analytic=args.analytic, rng=args.seed)
    params = model.parameters()
    if args.optimizer == "sgd":
        momentum = 0.9 if args.momentum is None else args.momentum
        opt = optim.SGD(params, lr=lr, momentum=momentum, weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        opt = optim.Adam(params, lr=lr, weight_decay=args.weight_decay)
    else:
        opt = optim.AdamW(params, lr=lr, weight_decay=args.weight_decay)
    print(f"{ds}\n{model}\n{type(opt).__name__} lr={lr:g}\n")
    try:
        hist = fit(model, ds, opt, epochs=args.epochs, batch_size=args.batch_size,
                   seed=args.seed, progress=not args.no_progress,
                   desc=f"{args.dataset}/{args.norm}")
    except KeyboardInterrupt as e:
        hist = getattr(e, "history", None)
        written = _save_run(out, model, hist, args, lr)
        steps = f" after {hist.steps} steps" if hist is not None else ""
        print(f"\ninterrupted{steps}: saved the model (its last finite state) to "
              f"{written[0]}", file=sys.stderr)
        return 130
    written = _save_run(out, model, hist, args, lr)
    if hist.diverged_at is not None:
        print(hist.message)
    else:
        print(f"final loss {smoothed_loss(hist):.4f} (mean of the last "
              f"{min(SMOOTHING, len(hist.step_loss))} steps), train accuracy "
              f"{hist.train_acc[-1]:.1%}, test accuracy {hist.final_test_acc:.1%} after "
              f"{hist.steps} steps")
    try:
        from .plots import plot_histories

        png = out / "curves.png"
        plot_histories({f"{args.norm} norm": hist}, str(png),
                       title=f"{args.dataset}: {args.norm} norm, {args.optimizer} lr={lr:g}")
        written.append(png)
    except ImportError:
        print("(no curves.png: matplotlib is not installed: pip install 'tinygrad-bn[plots]')")
    print("wrote " + ", ".join(str(w) for w in written))
    return 0 if hist.diverged_at is None else 1


def _save_run(out: Path, model, hist, args, lr) -> list:
    """Write ``model.npz`` and (when there is a history) ``history.json`` into ``out``."""
    import json

    from ..training import checkpoint
    from .demo import smoothed_loss

    written = [checkpoint.save(model, out / "model.npz")]
    if hist is not None:
        summary = {
            "dataset": args.dataset, "norm": args.norm, "hidden": list(args.hidden),
            "optimizer": args.optimizer, "lr": lr, "epochs": args.epochs, "seed": args.seed,
            "steps": hist.steps, "final_loss": smoothed_loss(hist),
            "test_accuracy": hist.final_test_acc,
            "train_accuracy": hist.train_acc[-1] if hist.train_acc else None,
            "diverged_at": hist.diverged_at,
        }
        record = {**summary, "step_loss": hist.step_loss, "eval_step": hist.eval_step,
                  "test_acc": hist.test_acc, "train_acc": hist.train_acc}
        with open(out / "history.json", "w") as f:
            json.dump(_finite_json(record), f)  # NaN/inf as null: strict JSON
        written.append(out / "history.json")
    return written


def _cmd_paths(args) -> int:
    import unicodedata

    import numpy as np

    from .. import Tensor, grad, grad_paths
    from ..nn import functional as F

    rng = np.random.default_rng(args.seed)
    dt = np.dtype(args.dtype)
    x = Tensor(rng.standard_normal((8, 3)) * 2 + 1, dtype=dt, requires_grad=True, name="x")
    w = Tensor(rng.uniform(0.5, 1.5, 3), dtype=dt, requires_grad=True, name="γ")
    b = Tensor(rng.standard_normal(3), dtype=dt, requires_grad=True, name="β")
    y = F.batch_norm(x, None, None, w, b, training=True)
    g = rng.standard_normal(y.shape).astype(dt)
    parts = grad_paths(y, x, ("μ", "σ²", "x̂"), grad_output=g)
    (full,) = grad(y, x, grad_outputs=g, retain_graph=True)
    formulas = {
        "x̂": "dx̂ / σ                           (direct: x → x - μ → x̂)",
        "σ²": "dσ² · 2(x - μ) / m               (x → (x - μ)² → σ²)",
        "μ": "dμ / m                           (x → μ, then every later path)",
        "other": "paths through none of them",
    }
    print("BatchNorm over an (8, 3) batch, upstream gradient g, dx̂ = g·γ, m = 8: the gradient "
          "of x split\nby the first of μ, σ², x̂ each path reaches "
          "(tinygrad_bn.grad_paths):\n")
    print(f"  {'part':<6} {'|part|':>10}   formula")
    for k, v in parts.items():
        pad = " " * (6 - sum(not unicodedata.combining(ch) for ch in k))  # x̂ is 2 code points
        print(f"  {k}{pad} {np.linalg.norm(v):10.4g}   {formulas.get(k, '')}")
    total = sum(parts.values())
    err = float(np.abs(total - full.data).max())
    print(f"\n  sum of the parts vs autograd's full gradient: max |difference| = {err:.2e}")
    ok = err <= (1e-10 if dt == np.float64 else 1e-4) * max(1.0, float(np.abs(full.data).max()))
    return 0 if ok else 1


def _cmd_compare(args) -> int:
    import numpy as np

    if args.paths:
        return _cmd_paths(args)

    from ..compare import (BesselBatchNormNoFactorOp, BesselBatchNormOp, bessel_batch_norm,
                          compare, compare_all)

    t0 = time.perf_counter()
    report = compare_all(dtype=np.dtype(args.dtype), seed=args.seed)
    print("Gradients of x, γ, β three ways: autograd through the composed graph, the "
          "hand-derived formula,\nand numeric (central differences, float64), for every norm "
          "and for the tutorial's boxed BatchNorm formula.")
    if not args.full:
        print("One row per norm and pair: the worst of x, γ, β (--full for every gradient).")
    print()
    print(report.table(compact=not args.full))
    print("\nYour own norm: a function of Tensor ops plus one with a hand-written backward, e.g.")
    print("BatchNorm with Bessel's correction inside the normalization and a lecture's one-line")
    print("backward, then the same backward without its n/(n-1) factor (expected to fail):\n")
    own = (compare(bessel_batch_norm, (16, 4), derived=BesselBatchNormOp.apply,
                   dtype=np.dtype(args.dtype), seed=args.seed,
                   label="Bessel BN, one-line backward")
           + compare(bessel_batch_norm, (16, 4), derived=BesselBatchNormNoFactorOp.apply,
                     dtype=np.dtype(args.dtype), seed=args.seed, expect_wrong_dx=True,
                     label="same without n/(n-1)"))
    print(own.table(compact=True))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0 if report.ok and own.ok else 1


def _cmd_experiment(args) -> int:
    from ..studies import run_and_save

    require("matplotlib", "plots", f"experiment {args.name} (its plot)")
    out_folder(args.out)
    run_and_save(args.name, args.out, quick=args.quick, seed=args.seed,
                 progress=not args.no_progress)
    return 0


def _add_graph_parser(subparsers) -> argparse.ArgumentParser:
    """The ``graph`` command."""
    p = subparsers.add_parser(
        "graph",
        help="draw the computation graph of a norm (or of a small MLP) to SVG/PNG/PDF/DOT",
        description="Draw the graph of one normalization call, composed from primitives "
        "(default) or fused (--analytic), or of a small MLP with its loss, annotated with "
        "the gradient norm of every value (--mlp).",
    )
    from ..norms import registry
    from ..viz.dot import RANKDIRS
    from ..viz.render import RENDER_FORMATS, SOURCE_FORMATS

    p.add_argument("--norm", choices=registry.names(variants=False, short=True),
                   default="batch",
                   help="which normalization")
    p.add_argument("--analytic", action="store_true",
                   help="the fused single-node version with the hand-derived backward")
    p.add_argument("--mlp", action="store_true",
                   help="a small MLP (Linear, norm, ReLU, Linear) and its cross-entropy loss, "
                   "with gradient norms")
    p.add_argument("--out", default="graph.svg", metavar="FILE",
                   help="output file; the format comes from its suffix: .svg, .png, .pdf, or "
                   ".dot for the DOT source")
    p.add_argument("--format", choices=RENDER_FORMATS + SOURCE_FORMATS, default=None,
                   help="output format; must agree with the suffix of --out (None: the "
                   "suffix decides; a name without a suffix gets this one)")
    p.add_argument("--show-grad", action="store_true",
                   help="annotate values with gradient norms (always on with --mlp)")
    p.add_argument("--show-data", action="store_true",
                   help="annotate values with their mean and std")
    p.add_argument("--collapse", action="store_true",
                   help="draw each layer / norm call as one box")
    p.add_argument("--rankdir", choices=RANKDIRS, default="LR",
                   help="direction of the data flow")
    p.add_argument("--steps", action="store_true",
                   help="write an HTML page that steps through the backward pass instead "
                   "(--out gets the suffix .html; the drawing options apply to its picture)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=_cmd_graph)
    return p


def _mlp_loss(norm: str, analytic: bool, rng) -> tuple:
    """A small MLP with ``norm`` after the first layer and its loss: ``(loss, model, title)``."""
    import numpy as np

    from .. import nn
    from ..core.tensor import Tensor
    from ..nn import functional as F

    from ..training.models import make_norm

    width = 8
    seed = int(rng.integers(2**31))
    norm_layer = make_norm(norm, width, analytic=analytic)
    model = nn.Sequential(nn.Linear(2, width, rng=seed), norm_layer, nn.ReLU(),
                          nn.Linear(width, 3, rng=seed + 1))
    x = Tensor(rng.standard_normal((16, 2)).astype(np.float32), name="x")
    target = rng.integers(0, 3, size=16)
    loss = F.cross_entropy(model(x), target).named("loss")
    kind = " (analytic)" if analytic else ""
    return loss, model, (f"MLP 2-{width}-3 with {type(norm_layer).__name__}{kind}, cross-entropy "
                         "loss, batch of 16: gradient norms")


def _cmd_graph(args) -> int:
    """``tinygrad-bn graph``: build the example graph and write it to ``args.out`` (a
    picture, or with ``--steps`` the backward stepper page; the drawing options apply to
    both)."""
    import numpy as np

    from ..norms import registry
    from ..viz import GraphvizNotFoundError, render_backward, render_graph, trace
    from ..viz.render import format_of

    out = Path(args.out)
    steps = bool(getattr(args, "steps", False))
    fmt = getattr(args, "format", None)
    suffix = out.suffix.lower().lstrip(".")
    if steps:
        if fmt is not None:
            raise CommandError("--format does not apply with --steps (the page is HTML)")
        if suffix not in ("html", "htm"):
            out = out.with_suffix(".html")
        fmt = "html"
    elif fmt is None:
        fmt = format_of(out, None) if suffix else "svg"
        if not suffix:
            out = out.with_suffix(".svg")
    elif not suffix:
        out = out.with_suffix("." + fmt)
    elif suffix != fmt:
        raise CommandError(f"--format {fmt} and --out {args.out} disagree; name the file "
                           f"{out.with_suffix('.' + fmt).name}, or drop --format")
    else:
        fmt = format_of(out, fmt)
    if fmt not in ("dot", "gv"):
        require_dot(f"--out {out.name}")
    out = out_file(str(out))
    rng = np.random.default_rng(args.seed)
    show_grad = bool(getattr(args, "show_grad", False)) or args.mlp
    show_data = bool(getattr(args, "show_data", False))
    params = None
    with trace() if show_data else contextlib.nullcontext():
        if args.mlp:
            root, params, title = _mlp_loss(args.norm, args.analytic, rng)
        else:
            root, title = registry.get(args.norm).example_call(rng, args.analytic)
    seed = None
    if not args.mlp:  # the sum of a norm's output barely depends on x: a random gradient
        seed = rng.standard_normal(root.shape).astype(root.dtype)
        if show_grad or steps:
            title += "; a random upstream gradient"
    options = dict(params=params, show_data=show_data, rankdir=args.rankdir,
                   collapse=True if args.collapse else None)
    try:
        if steps:
            render_backward(root, out, gradient=seed, title=title, show_grad=show_grad,
                            grad_outputs=seed if show_grad else None, **options)
        else:
            render_graph(root, out, format=fmt, show_grad=show_grad, title=title,
                         grad_outputs=seed if show_grad else None, **options)
    except GraphvizNotFoundError:  # dot vanished between the check and its use
        require_dot(f"--out {out.name}")
        raise
    print(f"wrote {out} ({fmt})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tinygrad-bn",
        description="A small autodiff engine over NumPy for seeing how BatchNorm and the "
        "other normalization layers work.",
    )
    p.add_argument("--version", action="version", version=f"tinygrad-bn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="the tour: BatchNorm vs none on spirals, the gradient "
                       "three ways, graphs and plots (seconds, built-in data)")
    d.add_argument("--out", default="tinygrad_bn_out", help="folder for the pictures")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--epochs", type=_positive(int), default=40, help="epochs per model")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_demo)

    g = sub.add_parser("gradcheck", help="check every primitive's gradient against central "
                       "differences and print a table")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.set_defaults(func=_cmd_gradcheck)

    c = sub.add_parser("compare", help="autograd vs hand-derived formula vs numeric "
                       "differences for every norm, the tutorial's boxed formula, your own norm")
    c.add_argument("--full", action="store_true", help="a row for each of x, γ, β")
    c.add_argument("--paths", action="store_true",
                   help="instead: BatchNorm's gradient of x split into its three paths "
                   "(through μ, through σ², direct through x̂), each with its formula")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="dtype of autograd and hand-derived")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_cmd_compare)

    from ..training.data import DATASETS
    from ..training.models import ACTIVATIONS, NORMS

    t = sub.add_parser("train", help="train one MLP on a dataset; save a checkpoint, its "
                       "history and curves")
    t.add_argument("--dataset", choices=DATASETS, default="moons")
    t.add_argument("--norm", choices=NORMS, default="batch")
    t.add_argument("--analytic", action="store_true",
                   help="use the hand-derived (fused) norm layers")
    t.add_argument("--hidden", type=_hidden, default="64,64",
                   help="hidden widths, comma-separated")
    t.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu")
    t.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="sgd")
    t.add_argument("--lr", type=_positive(float), default=None,
                   help="learning rate (default: 0.1 for sgd, 0.001 for adam and adamw, as "
                   "torch)")
    t.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum (default: 0.9; sgd only)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--epochs", type=_positive(int), default=20)
    t.add_argument("--batch-size", type=_positive(int), default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="tinygrad_bn_out/train", help="output folder")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    from ..studies import STUDIES

    e = sub.add_parser("experiment", help="run a study that tests one of the tutorial's "
                       "claims; writes a plot and its data",
                       description="Studies: " + "; ".join(f"{k}: {v[1]}"
                                                           for k, v in STUDIES.items()))
    e.add_argument("name", choices=tuple(STUDIES), metavar="NAME",
                   help="one of: " + ", ".join(STUDIES))
    e.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default="tinygrad_bn_out/experiments", help="output folder")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_experiment)

    _add_graph_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        print(f"tinygrad-bn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
