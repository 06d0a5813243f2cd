"""Optimizers (SGD, Adam, AdamW) and learning-rate schedulers, with torch's update rules.

Parameters are updated in place on ``p.data`` (NumPy), outside the graph. A step is a
transaction (Principle 2): every setting, gradient and parameter is checked first (shape,
dtype, writable); after that the in-place arithmetic cannot fail, and Ctrl-C arriving during
it is held until every parameter and its state have taken the step (``tinygrad_bn._commit``).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._commit import interrupts_held
from .._jit import LOOP_DTYPES
from ..core import ops as _ops
from ..core.tensor import Tensor


class Optimizer:
    """Base class: ``param_groups`` (list of dicts with ``params`` and settings), ``state``
    (per-parameter buffers), ``zero_grad()``, ``step()``."""

    def __init__(self, params, defaults: dict):
        if isinstance(params, Tensor):
            raise TypeError("params should be an iterable of Tensors (e.g. model.parameters()), "
                            "not a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}
        seen: set = set()
        for g in groups:
            g = dict(g)
            g["params"] = list(g["params"])
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError(f"optimizing a Tensor of shape {p.shape} that does not "
                                     "require grad")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one group")
                seen.add(id(p))
            for k, v in self.defaults.items():
                g.setdefault(k, v)
            self._check(g)
            self.param_groups.append(g)

    def _check(self, group: dict) -> None:
        lr = group.get("lr")
        if lr is None or not (lr >= 0):
            raise ValueError(f"invalid learning rate: {lr}")
        wd = group.get("weight_decay", 0.0)
        if not wd >= 0:
            raise ValueError(f"invalid weight_decay value: {wd}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all parameters (set to None, or to zeros)."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _pending(self):
        """``(group, p, grad)`` for each parameter with a gradient, all checked before any
        update: the group's settings are numbers, the gradient has the parameter's shape and a
        dtype it can take, the parameter can be written."""
        out = []
        for group in self.param_groups:
            _check_numbers(group)
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if not isinstance(g, np.ndarray) or g.shape != p.data.shape:
                    raise ValueError(
                        f"{type(self).__name__}.step: the gradient of a parameter of shape "
                        f"{p.shape} has shape {getattr(g, 'shape', type(g).__name__)}; "
                        "nothing was updated"
                    )
                if g.dtype != p.data.dtype and not np.can_cast(
                        np.result_type(p.data, g), p.data.dtype, "same_kind"):
                    raise TypeError(
                        f"{type(self).__name__}.step: a parameter of dtype {p.data.dtype} "
                        f"cannot take a gradient of dtype {g.dtype}; nothing was updated"
                    )
                if not p.data.flags.writeable:
                    raise ValueError(
                        f"{type(self).__name__}.step: a parameter of shape {p.shape} is "
                        "read-only (its array has writeable=False); nothing was updated"
                    )
                out.append((group, p, g))
        return out

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"


def _check_numbers(group: dict) -> None:
    """The settings a step computes with are real numbers (their values are checked when the
    optimizer is made; torch lets a value changed later through, and so do we)."""
    for k, v in group.items():
        if k == "params" or isinstance(v, bool):
            continue
        values = v if k == "betas" and isinstance(v, tuple) and len(v) == 2 else (v,)
        if not all(isinstance(x, numbers.Real) for x in values):
            raise TypeError(f"optimizer setting {k}={v!r} is not a number (betas: a pair of "
                            "numbers); nothing was updated")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

    As torch: ``g = grad + wd·p``; with momentum ``b = μ·b + (1 - dampening)·g`` (``b = g`` at
    the first step), ``g = g + μ·b`` (Nesterov) or ``g = b``; then ``p -= lr·g``. The plain
    momentum step (no dampening, weight decay, Nesterov or maximize) runs as one compiled
    pass when numba is installed (``_momentum_loop``; the same bits as the NumPy lines).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check(self, group: dict) -> None:
        super()._check(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"invalid momentum value: {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def step(self) -> None:
        pending = self._pending()
        with interrupts_held():  # everything was checked: the step below runs to its end
            for group, p, g in pending:
                lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
                wd, nesterov = group["weight_decay"], group["nesterov"]
                plain = not (wd or damp or nesterov or group["maximize"])
                if group["maximize"]:
                    g = -g
                if wd:
                    g = g + wd * p.data
                if mom:
                    st = self.state.setdefault(id(p), {})
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = np.array(g, dtype=p.data.dtype)
                    elif plain and _momentum_loop(p.data, g, buf, mom, lr):
                        continue  # the lines below, in one compiled pass
                    else:
                        buf *= mom
                        buf += (1 - damp) * g if damp else g  # (1·g is g: no product)
                    g = g + mom * buf if nesterov else buf
                p.data -= lr * g


def _momentum_loop(p: np.ndarray, g: np.ndarray, buf: np.ndarray, momentum, lr) -> bool:
    """SGD's momentum step ``buf = momentum·buf + g; p -= lr·buf`` by one compiled loop
    (``core/_kernels.sgd_momentum_``: the same float operations as the NumPy lines of
    ``SGD.step``, bit for bit, in one pass instead of three); False, with nothing done, when
    the loops are not there or the case is not theirs. Theirs: ``p``, ``g`` and ``buf`` of one
    shape and one dtype the loops take, C-contiguous and not overlapping, and ``lr`` and
    ``momentum`` Python numbers (as NumPy, the loop rounds them to the arrays' dtype first;
    a NumPy float64 scalar would make NumPy compute in float64 instead)."""
    k = _ops.loops_for(p.size)
    if k is None or type(lr) not in _PY_NUMBERS or type(momentum) not in _PY_NUMBERS:
        return False
    dt = p.dtype
    if dt not in LOOP_DTYPES or not p.flags.c_contiguous or not _ops._same_layout(g, p) \
            or not _ops._same_layout(buf, p) or np.may_share_memory(p, g) \
            or np.may_share_memory(p, buf) or np.may_share_memory(g, buf):
        return False
    k.sgd_momentum_(p.reshape(-1), g.reshape(-1), buf.reshape(-1), dt.type(momentum),
                    dt.type(lr))
    return True


_PY_NUMBERS = (float, int)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's bias correction; ``weight_decay`` adds ``wd·p`` to the
    gradient (L2), as ``torch.optim.Adam``; ``amsgrad`` keeps the running maximum of v."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _check(self, group: dict) -> None:
        super()._check(group)
        b1, b2 = group["betas"]
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"invalid betas: {group['betas']} (each must be in [0, 1))")
        if not group["eps"] >= 0:
            raise ValueError(f"invalid epsilon value: {group['eps']}")

    def step(self) -> None:
        pending = self._pending()
        with interrupts_held():  # everything was checked: the step below runs to its end
            for group, p, g in pending:
                lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
                wd = group["weight_decay"]
                if group["maximize"]:
                    g = -g
                st = self.state.get(id(p))
                if st is None:
                    st = self.state[id(p)] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                              "exp_avg_sq": np.zeros_like(p.data)}
                if wd:
                    if self._decoupled:
                        p.data *= 1 - lr * wd
                    else:
                        g = g + wd * p.data
                st["step"] = t = st["step"] + 1
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                if group["amsgrad"]:
                    v = st.setdefault("max_exp_avg_sq", np.zeros_like(p.data))
                    np.maximum(v, st["exp_avg_sq"], out=v)
                denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
                p.data -= (lr / (1 - b1 ** t)) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr·wd`` before the Adam step), as
    ``torch.optim.AdamW``; its default ``weight_decay`` is 0.01."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


class LRScheduler:
    """Base class: ``step()`` once per epoch sets each group's ``lr`` from ``get_lr()``."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = 0

    def get_lr(self) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """``lr = base_lr · gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        super().__init__(optimizer)
        self.step_size, self.gamma = step_size, gamma

    def get_lr(self) -> list[float]:
        return [b * self.gamma ** (self.last_epoch // self.step_size) for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) · (1 + cos(π · epoch / T_max)) / 2``."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        super().__init__(optimizer)
        self.T_max, self.eta_min = T_max, eta_min

    def get_lr(self) -> list[float]:
        c = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]

