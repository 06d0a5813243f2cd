"""Autograd vs hand-derived vs numeric, for every norm: ``compare`` and ``compare_all``.

For one norm and input shape, the gradients of a random scalar ``L = Σ u·y`` (u a random
upstream gradient) with respect to x, γ and β are computed three ways:

* **autograd**: through the composed graph (``tinygrad_bn.nn.functional``, or your own
  function of Tensor ops);
* **hand-derived**: through one node whose backward is the derived formula
  (``tinygrad_bn.analytic``, or your own ``Function``);
* **numeric**: central differences of L, ``(L(θ + ε) − L(θ − ε)) / 2ε`` for every entry,
  always in float64 (``gradcheck.numerical_jacobian``).

``compare`` takes a registered norm's name (``norms.registry``), or your own norm: a callable ``f(x, weight,
bias)`` composed of Tensor ops, with ``derived=`` a callable of the same signature whose
backward is hand-written (e.g. a ``Function``'s ``apply``). ``bessel_batch_norm`` and
``BesselBatchNormOp`` below are such a pair: BatchNorm with Bessel's correction inside the
normalization and its one-line backward, as a widely followed lecture on backprop writes it.

Each pair "a vs b" (b the reference) is reported with its max abs error ``max|a − b|`` and
max rel error ``max|a − b| / max|b|``, and passes when every entry satisfies
``|a − b| <= atol + rtol·|b|``. ``str(report)`` is an aligned table (``tinygrad-bn compare``).
``compare_all`` runs every norm and adds the tutorial's boxed BatchNorm backward, whose x rows
must fail: they are marked as expected failures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.gradcheck import numerical_jacobian
from ..core.node import Function
from ..core.tensor import Tensor
from . import registry

__all__ = ["CompareRow", "CompareReport", "compare", "compare_all", "NORMS",
           "bessel_batch_norm", "BesselBatchNormOp", "BesselBatchNormNoFactorOp"]

PAIRS = (("hand-derived", "autograd"), ("autograd", "numeric"), ("hand-derived", "numeric"))


@dataclass
class CompareRow:
    """One gradient (``grad``: x, γ or β) of one norm, compared between two methods."""

    norm: str
    shape: tuple
    grad: str
    pair: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    expected_fail: bool = False

    @property
    def as_expected(self) -> bool:
        return self.passed != self.expected_fail

    @property
    def result(self) -> str:
        if self.passed:
            return "pass" if not self.expected_fail else "pass (expected FAIL)"
        return "FAIL (expected)" if self.expected_fail else "FAIL"


@dataclass
class CompareReport:
    """Rows of ``CompareRow``; ``str()`` prints them as a table."""

    rows: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every row is within tolerance."""
        return all(r.passed for r in self.rows)

    @property
    def ok(self) -> bool:
        """True when every row behaves as expected (expected failures do fail)."""
        return all(r.as_expected for r in self.rows)

    def failures(self) -> list:
        """Rows outside tolerance (expected or not)."""
        return [r for r in self.rows if not r.passed]

    def __add__(self, other: "CompareReport") -> "CompareReport":
        return CompareReport(self.rows + other.rows)

    def __str__(self) -> str:
        return self.table()

    def table(self, compact: bool = False) -> str:
        """The aligned table: a row per gradient and pair, or with ``compact=True`` one per
        norm and pair (the worst of x, γ, β; "grad" names which)."""
        rows = self.rows if not compact else self._worst_per_pair()
        header = ["norm", "shape", "grad", "pair", "max abs err", "max rel err", "result"]
        body = [[r.norm, str(r.shape), r.grad, r.pair, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
                 r.result] for r in rows]
        widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
        right = {4, 5}

        def fmt(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        lines = [fmt(header), "  ".join("-" * w for w in widths)]
        lines += [fmt(row) for row in body]
        return "\n".join(lines + [""] + self._footer())

    def _worst_per_pair(self) -> list:
        groups: dict = {}
        for r in self.rows:
            groups.setdefault((r.norm, r.shape, r.pair), []).append(r)
        out = []
        for rs in groups.values():
            bad = [r for r in rs if not r.passed]
            worst = max(bad or rs, key=lambda r: r.max_rel)
            out.append(worst)
        return out

    def _footer(self) -> list:
        lines = []
        n_bad = sum(not r.as_expected for r in self.rows)
        n_xfail = sum(r.expected_fail and not r.passed for r in self.rows)
        tol = sorted({(r.atol, r.rtol) for r in self.rows})
        tol_s = "; ".join(f"atol={a:g}, rtol={b:g}" for a, b in tol)
        lines.append(f"pass: |a - b| <= atol + rtol*|b| for every entry ({tol_s}); "
                     "rel err = max|a - b| / max|b|")
        summary = f"{len(self.rows) - n_bad} of {len(self.rows)} rows as expected"
        if n_xfail:
            boxed = any("boxed" in r.norm for r in self.rows if r.expected_fail)
            summary += (f"; {n_xfail} expected failure(s): " + (
                "the tutorial's boxed formula (sqrt(m) where m belongs) gives wrong gradients"
                if boxed else "a hand-derived formula known to be wrong gives wrong gradients"))
        if n_bad:
            summary += f"; {n_bad} UNEXPECTED"
        lines.append(summary)
        return lines


class _Names:
    """The registered names, read live (a norm registered later is listed too)."""

    def __iter__(self):
        return iter(registry.names())

    def __contains__(self, name) -> bool:
        return name in registry.names()

    def __len__(self) -> int:
        return len(registry.names())

    def __repr__(self) -> str:
        return repr(registry.names())


NORMS = _Names()

_DEFAULT_TOL = {np.dtype(np.float64): (1e-7, 1e-5), np.dtype(np.float32): (1e-3, 1e-2)}


def _user_norm(norm: Callable, derived, shape: tuple, param_shape, label) -> registry.Norm:
    """An unregistered entry for a user's norm: ``norm(x, weight, bias)`` composed of Tensor
    ops and ``derived(x, weight, bias)`` with a hand-written backward."""
    if not callable(derived):
        raise TypeError("compare: for your own norm pass derived=, a callable f(x, weight, "
                        "bias) whose backward is hand-written (e.g. MyNormOp.apply)")
    if len(shape) < 2 and param_shape is None:
        raise ValueError(f"compare: input shape {shape} has no channel axis; pass param_shape=")
    pshape = tuple(param_shape) if param_shape is not None else (shape[1],)
    name = label or getattr(norm, "__name__", "custom norm")
    return registry.Norm(name=name, composed=norm, derived=derived,
                         call=lambda fn, x, w, b, training=True: fn(x, w, b),
                         param_shape=lambda s, settings: pshape,
                         example=lambda rng: (shape, {}), label=lambda *a: name)


def _settings(entry: registry.Norm, shape: tuple, training: bool, rng, kwargs) -> dict:
    """The call's settings; fixed random running statistics for evaluation mode."""
    settings = entry.settings(shape, **kwargs)
    settings["training"] = training
    if entry.running and not training:
        c = shape[1]
        settings["running"] = (Tensor(rng.standard_normal(c)), Tensor(rng.uniform(0.5, 2.0, c)))
    return settings


def _grads(fn, entry, settings: dict, arrays: list, u: np.ndarray, dtype) -> list:
    ts = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    x, w = ts[0], ts[1]
    b = ts[2] if entry.has_bias else None
    y = entry.call(fn, x, w, b, **settings)
    y.backward(u.astype(dtype))
    return [t.grad.astype(np.float64) for t in ts]


def _numeric(entry, settings: dict, arrays: list, u: np.ndarray, eps: float) -> list:
    ts = [Tensor(np.ascontiguousarray(a, dtype=np.float64)) for a in arrays]
    ut = Tensor(u)

    def loss(x, w, b=None):
        return (entry.call(entry.composed, x, w, b, **settings) * ut).sum()

    return [numerical_jacobian(loss, ts, i, eps).reshape(arrays[i].shape)
            for i in range(len(ts))]


def compare(norm, shape: tuple, *, training: bool = True, dtype=np.float64,
            seed: int = 0, atol: float | None = None, rtol: float | None = None,
            fd_eps: float = 1e-6, derived: Callable | None = None, param_shape=None,
            label: str | None = None, expect_wrong_dx: bool = False,
            **kwargs) -> CompareReport:
    """Gradients of x, γ, β for ``norm`` on an input of ``shape``, computed three ways.

    ``norm``: a registered name (``NORMS``; ``kwargs`` go to it: ``normalized_shape``, ``num_groups``,
    ``eps``; ``training=False`` uses fixed running statistics for BatchNorm, InstanceNorm),
    or your own ``f(x, weight, bias) -> Tensor`` composed of Tensor ops, with ``derived=``
    the same function with a hand-written backward, ``param_shape=`` the shape of weight and
    bias (default ``(shape[1],)``), ``label=`` its name in the table, and
    ``expect_wrong_dx=True`` for a hand-derived formula known to get dx wrong (its rows are
    then expected failures, like the tutorial's boxed formula).
    Autograd and hand-derived run in ``dtype``; central differences (step ``fd_eps``) always
    in float64. Tolerances default to atol=1e-7, rtol=1e-5 in float64 (1e-3, 1e-2 in
    float32). Returns a ``CompareReport`` with a row per gradient and pair.

    Example: ``compare(bessel_batch_norm, (16, 4), derived=BesselBatchNormOp.apply)``.
    """
    dtype = np.dtype(dtype)
    d_atol, d_rtol = _DEFAULT_TOL.get(dtype, (1e-3, 1e-2))
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    shape = tuple(shape)
    rng = np.random.default_rng(seed)
    if callable(norm):
        if kwargs:
            raise TypeError(f"compare: settings {sorted(kwargs)} are for registered norms; "
                            "bind them into your function instead")
        entry = _user_norm(norm, derived, shape, param_shape, label)
        settings = {}
    else:
        if derived is not None or param_shape is not None:
            raise TypeError("compare: derived= and param_shape= are for your own norm (a "
                            f"callable); {norm!r} is registered with its own")
        entry = registry.get(norm)
        settings = _settings(entry, shape, training, rng, kwargs)
    pshape = tuple(entry.param_shape(shape, settings))
    label = entry.label(shape, training, settings)
    # round the inputs to dtype first, so every method sees the same numbers
    arrays = [rng.standard_normal(shape) * 2.0 + 0.5, rng.uniform(0.5, 1.5, pshape)]
    if entry.has_bias:
        arrays.append(rng.standard_normal(pshape))
    arrays = [a.astype(dtype).astype(np.float64) for a in arrays]
    u = rng.standard_normal(shape).astype(dtype).astype(np.float64)
    results = {
        "autograd": _grads(entry.composed, entry, settings, arrays, u, dtype),
        "hand-derived": _grads(entry.derived, entry, settings, arrays, u, dtype),
        "numeric": _numeric(entry, settings, arrays, u, fd_eps),
    }
    names = ["x", "γ", "β"][:len(arrays)]
    rows = []
    for i, name in enumerate(names):
        for a_name, b_name in PAIRS:
            a, b = results[a_name][i], results[b_name][i]
            err = np.abs(a - b)
            ref = float(np.abs(b).max()) if b.size else 0.0
            max_abs = float(err.max()) if err.size else 0.0
            rows.append(CompareRow(
                norm=label, shape=shape, grad=name, pair=f"{a_name} vs {b_name}",
                max_abs=max_abs, max_rel=max_abs / ref if ref > 0 else max_abs,
                atol=atol, rtol=rtol,
                passed=bool(np.all(err <= atol + rtol * np.abs(b))),
                expected_fail=(entry.wrong_dx and training or expect_wrong_dx) and name == "x"
                and "hand-derived" in (a_name, b_name),
            ))
    return CompareReport(rows)


# (norm, shape, training, settings) run by ``compare_all``
CASES = (
    ("batch_norm", (8, 3), True, {}),
    ("batch_norm", (4, 3, 5), True, {}),
    ("batch_norm", (3, 2, 3, 3), True, {}),
    ("batch_norm", (8, 3), False, {}),
    ("layer_norm", (4, 6), True, {}),
    ("layer_norm", (2, 3, 4), True, {"normalized_shape": (3, 4)}),
    ("group_norm", (3, 6, 4), True, {"num_groups": 3}),
    ("instance_norm", (3, 4, 5), True, {}),
    ("instance_norm", (3, 4, 5), False, {}),
    ("rms_norm", (4, 6), True, {}),
    ("tutorial_boxed_batch_norm", (8, 3), True, {}),
)


def compare_all(dtype=np.float64, seed: int = 0, atol: float | None = None,
                rtol: float | None = None) -> CompareReport:
    """``compare`` for every norm (``CASES``), the tutorial's boxed BatchNorm formula last.

    The boxed formula's x rows against autograd and central differences are expected to
    fail; ``report.ok`` is True when every row behaves as expected.
    """
    report = CompareReport()
    for norm, shape, training, kw in CASES:
        report = report + compare(norm, shape, training=training, dtype=dtype, seed=seed,
                                  atol=atol, rtol=rtol, **kw)
    return report


# --------------------------------------------------------------- your own norm: an example
def bessel_batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """BatchNorm over axis 0 with Bessel's correction *inside* the normalization, composed of
    Tensor ops: ``σ² = Σ(x − μ)² / (n − 1)``, ``y = γ (x − μ) / √(σ² + ε) + β``. (PyTorch
    normalizes with the biased variance and keeps the unbiased one for running statistics;
    a widely followed lecture on backprop uses this variant.)"""
    n = x.shape[0]
    mu = x.mean(0, keepdim=True).named("μ")
    d = x - mu
    var = ((d * d).sum(0, keepdim=True) / (n - 1)).named("σ²")
    xhat = (d / (var + eps).sqrt()).named("x̂")
    return xhat * weight + bias


class BesselBatchNormOp(Function):
    """``bessel_batch_norm`` as one node with the lecture's one-line backward:

    ``dx = γ / (n √(σ² + ε)) · (n·g − Σg − n/(n−1) · x̂ · Σ(g·x̂))``,
    ``dγ = Σ g·x̂``, ``dβ = Σ g`` (sums over the batch).
    """

    factor = True  # the n/(n-1) that Bessel's correction puts in front of the last term

    @classmethod
    def forward(cls, ctx, x, weight, bias, eps: float = 1e-5):
        xd = x.data
        n = xd.shape[0]
        mu = xd.mean(0, keepdims=True)
        var = ((xd - mu) ** 2).sum(0, keepdims=True) / (n - 1)
        inv = 1.0 / np.sqrt(var + eps)
        xhat = (xd - mu) * inv
        ctx.n = n
        ctx.save_for_backward(Tensor(xhat), Tensor(inv), weight)
        return xhat * weight.data + bias.data

    @classmethod
    def backward(cls, ctx, g):
        xhat, inv, weight = ctx.saved_tensors
        n = ctx.n
        k = n / (n - 1) if cls.factor else 1.0
        gsum = g.sum(0, keepdim=True)
        gx = (g * xhat).sum(0, keepdim=True)
        dx = weight * inv / n * (n * g - gsum - k * xhat * gx)
        return dx, gx.reshape(-1), gsum.reshape(-1)


class BesselBatchNormNoFactorOp(BesselBatchNormOp):
    """The same one-line backward without its n/(n−1) factor: wrong, and ``compare`` says so."""

    factor = False
