"""The ``tinygrad-bn`` command."""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of usage + message."""

    def error(self, message):  # pragma: no cover - exercised through main()
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _cmd_gradcheck(args) -> int:
    from .selfcheck import check_primitives, format_table

    t0 = time.perf_counter()
    rows = check_primitives(seed=args.seed)
    print("Gradient check of every primitive: autograd against central differences\n")
    print(format_table(rows))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0 if all(r.passed for _, r in rows) else 1


def _cmd_demo(args) -> int:
    from .selfcheck import check_primitives, format_table

    print(f"tinygrad_bn {__version__} demo\n")
    print("1. Every primitive's backward, checked against central differences (float64)\n")
    rows = check_primitives(seed=args.seed)
    print(format_table(rows))
    ok = all(r.passed for _, r in rows)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tinygrad-bn",
        description="A small autodiff engine over NumPy for seeing how BatchNorm and the "
        "other normalization layers work.",
    )
    p.add_argument("--version", action="version", version=f"tinygrad-bn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="the tour: gradient checks, BatchNorm with and without, "
                       "graphs and plots")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(func=_cmd_demo)

    g = sub.add_parser("gradcheck", help="check every primitive's gradient against central "
                       "differences and print a table")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.set_defaults(func=_cmd_gradcheck)
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
