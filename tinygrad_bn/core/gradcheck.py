"""Finite-difference checks of gradients: ``gradcheck`` and the Jacobians behind it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .autograd import grad as _grad
from .node import no_grad
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """Raised by ``gradcheck`` when autograd and finite differences disagree."""

    def __init__(self, report: "GradcheckReport"):
        super().__init__(str(report))
        self.report = report


@dataclass
class GradcheckReport:
    """The worst disagreement found by ``gradcheck`` (or the best agreement, if it passed)."""

    passed: bool
    input_index: int
    input_name: str | None
    input_shape: tuple
    input_element: tuple
    output_element: tuple
    autograd: float
    numeric: float
    abs_error: float
    rel_error: float
    atol: float
    rtol: float
    eps: float
    n_failed: int
    n_checked: int

    @property
    def analytic(self) -> float:
        """The older name of ``autograd`` (the value from the graph, not a hand-derived one)."""
        return self.autograd

    def __str__(self) -> str:
        who = f"input {self.input_index}"
        if self.input_name:
            who += f" ({self.input_name!r})"
        head = "gradcheck passed" if self.passed else "gradcheck failed: Jacobian mismatch"
        return (
            f"{head} for {who}, shape {self.input_shape}\n"
            f"  worst element: d output{list(self.output_element)} / d input"
            f"{list(self.input_element)}\n"
            f"  autograd = {self.autograd:.10g}\n"
            f"  numeric (central differences, eps={self.eps:g}) = {self.numeric:.10g}\n"
            f"  |autograd - numeric| = {self.abs_error:.3g}, relative {self.rel_error:.3g}\n"
            f"  criterion: |autograd - numeric| <= atol + rtol * |numeric| with "
            f"atol={self.atol:g}, rtol={self.rtol:g}; {self.n_failed} of {self.n_checked} "
            f"entries fail"
        )


def _prepare(inputs) -> list:
    """Float64 copies of the inputs; Tensors that required grad stay differentiable leaves."""
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            data = x.data.astype(np.float64) if x.dtype.kind == "f" else x.data.copy()
            out.append(Tensor(data, requires_grad=x.requires_grad, name=x.name))
        else:
            out.append(x)
    return out


def _as_output(y, what="func") -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{what} must return a Tensor, got {type(y).__name__}")
    return y


def numerical_jacobian(func: Callable, inputs: Sequence, index: int, eps: float = 1e-6) -> np.ndarray:
    """Jacobian of ``func(*inputs)`` w.r.t. ``inputs[index]`` by central differences.

    Shape (output.size, input.size); ``inputs[index].data`` is perturbed in place and
    restored.
    """
    x = inputs[index].data
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_jacobian needs a contiguous input")
    cols = []
    with no_grad():
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            plus = np.array(_as_output(func(*inputs)).data, dtype=np.float64)
            flat[j] = orig - eps
            minus = np.array(_as_output(func(*inputs)).data, dtype=np.float64)
            flat[j] = orig
            cols.append(((plus - minus) / (2 * eps)).reshape(-1))
    if not cols:
        return np.zeros((0, 0))
    return np.stack(cols, axis=1)


def autograd_jacobians(func: Callable, inputs: Sequence) -> tuple[list[np.ndarray], Tensor]:
    """Jacobians of ``func(*inputs)`` w.r.t. each input that requires grad, by autograd.

    One backward pass per output element (``grad`` with a one-hot ``grad_outputs``). Returns
    the list of (output.size, input.size) arrays (None for inputs without grad) and the output.
    """
    y = _as_output(func(*inputs))
    diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    jac = [np.zeros((y.size, x.size)) for x in diff]
    if y.requires_grad:
        for k in range(y.size):
            onehot = np.zeros(y.size, dtype=y.dtype)
            onehot[k] = 1.0
            gs = _grad(y, diff, grad_outputs=Tensor(onehot.reshape(y.shape)),
                       retain_graph=True, allow_unused=True)
            for J, g in zip(jac, gs):
                if g is not None:
                    J[k] = g.data.reshape(-1)
    out, it = [], iter(jac)
    for x in inputs:
        out.append(next(it) if isinstance(x, Tensor) and x.requires_grad else None)
    return out, y


def gradcheck_report(func: Callable, inputs, eps: float = 1e-6, atol: float = 1e-5,
                     rtol: float = 1e-3) -> GradcheckReport:
    """Like ``gradcheck`` but always returns the report of the worst entry (passed or not)."""
    xs = _prepare(inputs)
    idx = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not idx:
        raise ValueError("gradcheck needs at least one input Tensor with requires_grad=True")
    jacs, y = autograd_jacobians(func, xs)
    worst: GradcheckReport | None = None
    worst_score = -1.0
    total_failed = 0
    total = 0
    for i in idx:
        A = jacs[i]
        N = numerical_jacobian(func, xs, i, eps)
        if A.shape != N.shape:
            raise RuntimeError(f"Jacobian shapes differ for input {i}: {A.shape} vs {N.shape}")
        if A.size == 0:
            continue
        err = np.abs(A - N)
        tol = atol + rtol * np.abs(N)
        bad = ~(err <= tol)  # NaN counts as a failure
        total_failed += int(bad.sum())
        total += A.size
        with np.errstate(divide="ignore", invalid="ignore"):  # tol is 0 where atol=0
            score = np.where(np.isnan(err), np.inf, np.where(err == 0, 0.0, err / tol))
        k = int(np.argmax(score))
        r, c = (int(v) for v in np.unravel_index(k, A.shape))
        if score.flat[k] > worst_score:
            worst_score = float(score.flat[k])
            worst = GradcheckReport(
                passed=False,
                input_index=i,
                input_name=xs[i].name,
                input_shape=xs[i].shape,
                input_element=tuple(int(v) for v in np.unravel_index(c, xs[i].shape)),
                output_element=tuple(int(v) for v in np.unravel_index(r, y.shape)),
                autograd=float(A[r, c]),
                numeric=float(N[r, c]),
                abs_error=float(err[r, c]),
                rel_error=float(err[r, c] / max(abs(N[r, c]), 1e-300)),
                atol=atol, rtol=rtol, eps=eps, n_failed=0, n_checked=0,
            )
    if worst is None:  # empty inputs or outputs: nothing to disagree about
        first = xs[idx[0]]
        worst = GradcheckReport(True, idx[0], first.name, first.shape, (), (), 0.0, 0.0, 0.0,
                                0.0, atol, rtol, eps, 0, 0)
    worst.n_failed = total_failed
    worst.n_checked = total
    worst.passed = total_failed == 0
    return worst


def gradcheck(func: Callable, inputs, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True) -> bool:
    """Compare autograd's full Jacobian with central differences, in float64.

    ``func(*inputs)`` must return a Tensor; every input Tensor with ``requires_grad=True`` is
    checked (floating inputs are copied to float64 first). An entry passes when
    ``|autograd - numeric| <= atol + rtol * |numeric|``. Returns True; on a mismatch raises
    ``GradcheckError`` whose message (and ``.report``) names the input, the worst element and
    both values — or returns False when ``raise_exception=False``.
    """
    report = gradcheck_report(func, inputs, eps=eps, atol=atol, rtol=rtol)
    if report.passed:
        return True
    if raise_exception:
        raise GradcheckError(report)
    return False
