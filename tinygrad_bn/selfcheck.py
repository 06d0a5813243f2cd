"""Gradient checks of every primitive, as a printable table (``tinygrad-bn gradcheck``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .core import ops
from .core.gradcheck import GradcheckReport, gradcheck_report
from .core.factories import cat as tg_cat
from .core.tensor import Tensor, where


@dataclass
class Case:
    """One primitive to check: ``func`` applied to inputs of ``shapes``."""

    name: str
    func: Callable
    shapes: tuple
    positive: bool = False  # draw inputs away from 0 (log, sqrt, pow bases, ...)


def _cases() -> list[Case]:
    idx = np.array([0, 2, 2, 1])
    return [
        Case("add (broadcast)", lambda a, b: a + b, ((3, 1, 4), (5, 1))),
        Case("sub (broadcast)", lambda a, b: a - b, ((2, 3), (3,))),
        Case("mul (broadcast)", lambda a, b: a * b, ((4, 1), (1, 3))),
        Case("div", lambda a, b: a / b, ((3, 4), (4,)), positive=True),
        Case("pow (tensor exponent)", lambda a, b: a ** b, ((3, 4), (3, 4)), positive=True),
        Case("pow (scalar 3)", lambda a: a ** 3, ((3, 4),)),
        Case("pow (scalar -0.5)", lambda a: a ** -0.5, ((3, 4),), positive=True),
        Case("neg", lambda a: -a, ((3, 4),)),
        Case("exp", lambda a: a.exp(), ((3, 4),)),
        Case("log", lambda a: a.log(), ((3, 4),), positive=True),
        Case("sqrt", lambda a: a.sqrt(), ((3, 4),), positive=True),
        Case("tanh", lambda a: a.tanh(), ((3, 4),)),
        Case("sigmoid", lambda a: a.sigmoid(), ((3, 4),)),
        Case("relu", lambda a: a.relu(), ((3, 4),), positive=True),
        Case("sum (axis=0)", lambda a: a.sum(axis=0), ((3, 4),)),
        Case("mean (axis=(0, 2), keepdims)", lambda a: a.mean(axis=(0, 2), keepdims=True),
             ((2, 3, 4),)),
        Case("amax (dim=1)", lambda a: a.amax(dim=1), ((3, 4),)),
        Case("max (dim=1) values", lambda a: a.max(1).values, ((3, 4),)),
        Case("abs", lambda a: a.abs(), ((3, 4),)),
        Case("std (unbiased)", lambda a: a.std(0), ((5, 3),)),
        Case("cat", lambda a: tg_cat([a, a * 2], 1), ((2, 3),)),
        Case("var (ddof=1)", lambda a: a.var(axis=0, ddof=1), ((5, 3),)),
        Case("matmul 2-D", lambda a, b: a @ b, ((3, 4), (4, 2))),
        Case("matmul batched", lambda a, b: a @ b, ((2, 3, 4), (4, 5))),
        Case("matmul 1-D @ 2-D", lambda a, b: a @ b, ((4,), (4, 3))),
        Case("linear (x @ Wᵀ + b)", lambda x, w, b: ops.Linear.apply(x, w, b),
             ((5, 3), (4, 3), (4,))),
        Case("reshape", lambda a: a.reshape(4, 3), ((3, 4),)),
        Case("transpose", lambda a: a.transpose(2, 0, 1), ((2, 3, 4),)),
        Case("getitem (slice)", lambda a: a[1:, ::2], ((3, 4),)),
        Case("getitem (repeated ints)", lambda a: a[idx], ((3, 4),)),
        Case("expand", lambda a: a.expand(3, 4), ((1, 4),)),
        Case("where", lambda a, b: where(np.arange(12).reshape(3, 4) % 2 == 0, a, b),
             ((3, 4), (3, 4))),
    ]


def check_primitives(seed: int = 0, eps: float = 1e-6, atol: float = 1e-5,
                     rtol: float = 1e-3) -> list[tuple[Case, GradcheckReport]]:
    """Gradcheck every primitive on small random float64 inputs; one report per case."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in _cases():
        inputs = []
        for s in case.shapes:
            x = rng.standard_normal(s)
            if case.positive:
                x = np.abs(x) + 0.5
            inputs.append(Tensor(x, requires_grad=True))
        rows.append((case, gradcheck_report(case.func, inputs, eps=eps, atol=atol, rtol=rtol)))
    return rows


def format_table(rows: list[tuple[Case, GradcheckReport]]) -> str:
    """An aligned text table of ``check_primitives`` results."""
    head = ("op", "input shapes", "worst |Δ|", "relative", "result")
    body = []
    for case, r in rows:
        shapes = " ".join("x".join(map(str, s)) or "()" for s in case.shapes)
        body.append((case.name, shapes, f"{r.abs_error:.2e}", f"{r.rel_error:.2e}",
                     "ok" if r.passed else "FAIL"))
    widths = [max(len(str(row[i])) for row in [head] + body) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in body]
    n_ok = sum(r.passed for _, r in rows)
    crit = rows[0][1] if rows else None
    if crit is not None:
        out.append(line)
        out.append(f"{n_ok}/{len(rows)} primitives pass: autograd vs central differences "
                   f"(float64, eps={crit.eps:g}), |Δ| <= {crit.atol:g} + {crit.rtol:g}·|numeric|")
    return "\n".join(out)
