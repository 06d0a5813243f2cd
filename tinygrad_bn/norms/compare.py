"""Autograd vs hand-derived vs numeric, for every norm: ``compare`` and ``compare_all``.

For one norm and input shape, the gradients of a random scalar ``L = Σ u·y`` (u a random
upstream gradient) with respect to x, γ and β are computed three ways:

* **autograd**: through the composed graph (``tinygrad_bn.nn.functional``, or your own
  function of Tensor ops);
* **hand-derived**: through one node whose backward is the derived formula
  (``tinygrad_bn.analytic``, or your own ``Function``);
* **numeric**: central differences of L, ``(L(θ + ε) − L(θ − ε)) / 2ε`` for every entry,
  always in float64 (``gradcheck.numerical_jacobian``).

``compare`` takes a registered norm's name, or your own norm: a callable ``f(x, weight,
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

from . import analytic
from .core.gradcheck import numerical_jacobian
from .core.node import Function
from .core.tensor import Tensor
from .nn import functional as F

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


@dataclass
class _Spec:
    """How to call one norm: ``call(fn, x, w, b)`` and the parameter shape for an input."""

    label: str
    composed: Callable
    fused: Callable
    param_shape: Callable  # (x_shape) -> shape of γ and β
    call: Callable  # (fn, x, w, b) -> y
    has_bias: bool = True
    boxed: bool = False


def _spec(norm: str, shape: tuple, training: bool, rng, **kw) -> _Spec:
    """The call for ``norm`` on inputs of ``shape`` (keyword settings as the functions take)."""
    if norm in ("batch_norm", "tutorial_boxed_batch_norm", "instance_norm"):
        c = shape[1]
        rm = rv = None
        if not training:  # evaluation uses fixed running statistics
            rm = Tensor(rng.standard_normal(c))
            rv = Tensor(rng.uniform(0.5, 2.0, c))
        eps = kw.get("eps", 1e-5)
        if norm == "instance_norm":
            def call(fn, x, w, b):
                return fn(x, rm, rv, w, b, use_input_stats=training, eps=eps)
            return _Spec(f"instance_norm ({'input stats' if training else 'running stats'})",
                         F.instance_norm, analytic.instance_norm, lambda s: (c,), call)

        def call(fn, x, w, b):
            return fn(x, rm, rv, w, b, training=training, eps=eps)
        mode = "train" if training else "eval"
        if norm == "batch_norm":
            return _Spec(f"batch_norm ({mode})", F.batch_norm, analytic.batch_norm,
                         lambda s: (c,), call)
        return _Spec(f"tutorial's boxed BN ({mode})", F.batch_norm,
                     analytic.tutorial_boxed_batch_norm, lambda s: (c,), call, boxed=True)
    if norm in ("layer_norm", "rms_norm"):
        ns = tuple(np.atleast_1d(kw.get("normalized_shape", shape[-1:])).tolist())
        if norm == "layer_norm":
            eps = kw.get("eps", 1e-5)

            def call(fn, x, w, b):
                return fn(x, ns, w, b, eps=eps)
            return _Spec(f"layer_norm {ns}", F.layer_norm, analytic.layer_norm,
                         lambda s: ns, call)
        eps = kw.get("eps", None)

        def call(fn, x, w, b):
            return fn(x, ns, w, eps=eps)
        return _Spec(f"rms_norm {ns}", F.rms_norm, analytic.rms_norm, lambda s: ns, call,
                     has_bias=False)
    if norm == "group_norm":
        c = shape[1]
        groups = kw.get("num_groups", 2 if c % 2 == 0 else 1)
        eps = kw.get("eps", 1e-5)

        def call(fn, x, w, b):
            return fn(x, groups, w, b, eps=eps)
        return _Spec(f"group_norm (G={groups})", F.group_norm, analytic.group_norm,
                     lambda s: (c,), call)
    raise ValueError(f"compare: unknown norm {norm!r}; expected one of {NORMS}")


NORMS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
         "tutorial_boxed_batch_norm")

_DEFAULT_TOL = {np.dtype(np.float64): (1e-7, 1e-5), np.dtype(np.float32): (1e-3, 1e-2)}


def _grads(fn, spec: _Spec, arrays: list, u: np.ndarray, dtype) -> list:
    ts = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    x, w = ts[0], ts[1]
    b = ts[2] if spec.has_bias else None
    y = spec.call(fn, x, w, b)
    y.backward(u.astype(dtype))
    return [t.grad.astype(np.float64) for t in ts]


def _numeric(spec: _Spec, arrays: list, u: np.ndarray, eps: float) -> list:
    ts = [Tensor(np.ascontiguousarray(a, dtype=np.float64)) for a in arrays]
    ut = Tensor(u)

    def loss(x, w, b=None):
        return (spec.call(spec.composed, x, w, b) * ut).sum()

    return [numerical_jacobian(loss, ts, i, eps).reshape(arrays[i].shape)
            for i in range(len(ts))]


def _user_spec(norm: Callable, derived, shape: tuple, param_shape, label) -> _Spec:
    """The spec of a user's norm: ``norm(x, weight, bias)`` composed of Tensor ops and
    ``derived(x, weight, bias)`` with a hand-written backward."""
    if not callable(derived):
        raise TypeError("compare: for your own norm pass derived=, a callable f(x, weight, "
                        "bias) whose backward is hand-written (e.g. MyNormOp.apply)")
    if len(shape) < 2 and param_shape is None:
        raise ValueError(f"compare: input shape {shape} has no channel axis; pass param_shape=")
    pshape = tuple(param_shape) if param_shape is not None else (shape[1],)
    name = label or getattr(norm, "__name__", "custom norm")
    return _Spec(name, norm, derived, lambda s: pshape, lambda fn, x, w, b: fn(x, w, b))


def compare(norm, shape: tuple, *, training: bool = True, dtype=np.float64,
            seed: int = 0, atol: float | None = None, rtol: float | None = None,
            fd_eps: float = 1e-6, derived: Callable | None = None, param_shape=None,
            label: str | None = None, expect_wrong_dx: bool = False,
            **kwargs) -> CompareReport:
    """Gradients of x, γ, β for ``norm`` on an input of ``shape``, computed three ways.

    ``norm``: one of ``NORMS`` (``kwargs`` go to it: ``normalized_shape``, ``num_groups``,
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
        spec = _user_spec(norm, derived, shape, param_shape, label)
    else:
        if derived is not None or param_shape is not None:
            raise TypeError("compare: derived= and param_shape= are for your own norm (a "
                            f"callable); {norm!r} is registered with its own")
        spec = _spec(norm, shape, training, rng, **kwargs)
    pshape = spec.param_shape(shape)
    # round the inputs to dtype first, so every method sees the same numbers
    arrays = [rng.standard_normal(shape) * 2.0 + 0.5, rng.uniform(0.5, 1.5, pshape)]
    if spec.has_bias:
        arrays.append(rng.standard_normal(pshape))
    arrays = [a.astype(dtype).astype(np.float64) for a in arrays]
    u = rng.standard_normal(shape).astype(dtype).astype(np.float64)
    results = {
        "autograd": _grads(spec.composed, spec, arrays, u, dtype),
        "hand-derived": _grads(spec.fused, spec, arrays, u, dtype),
        "numeric": _numeric(spec, arrays, u, fd_eps),
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
                norm=spec.label, shape=shape, grad=name, pair=f"{a_name} vs {b_name}",
                max_abs=max_abs, max_rel=max_abs / ref if ref > 0 else max_abs,
                atol=atol, rtol=rtol,
                passed=bool(np.all(err <= atol + rtol * np.abs(b))),
                expected_fail=(spec.boxed and training or expect_wrong_dx) and name == "x"
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
