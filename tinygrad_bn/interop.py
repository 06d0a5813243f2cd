"""Moving modules to PyTorch and back: ``to_torch(module)`` and ``from_torch(module)``.

One table (``_LAYERS``) pairs each of our layer classes with its ``torch.nn`` class and a
function that reads its constructor settings. Our layers keep torch's attribute names
(``in_features``, ``eps``, ``momentum``, ``affine``, ...), so the same function reads the
settings of either side's module. A conversion builds the other side's class with those
settings and the parameters' dtype, copies every parameter (with its ``requires_grad``) and
buffer (``running_mean``, ``running_var``, ``num_batches_tracked``), and sets the training
flag. ``Sequential`` is the one container. Adding a layer (Conv2d, Embedding, ...) is one entry
in ``_LAYERS``.

Data is copied: the two modules share no memory. Not converted: gradients (``.grad``),
forward hooks, optimizer state (momentum buffers live in the optimizer, not the module),
``analytic=`` of the norm layers (torch has one implementation; ``from_torch`` gives the
default, composed one) and torch's ``inplace=`` (ReLU, Dropout: the values are the same).
Dropout draws its masks from each library's own generator, so the masks differ.

torch is imported when one of the two functions is called, never at ``import tinygrad_bn``.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable

import numpy as np

from .core import factories
from .core.tensor import Tensor
from .nn.conv import (AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, Embedding, Flatten,
                      MaxPool2d)
from .nn.layers import Dropout, Identity, Linear, ReLU, Sigmoid, Tanh
from .nn.module import Module, Parameter, Sequential
from .norms import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                    LayerNorm, RMSNorm)

if TYPE_CHECKING:  # for the annotations only; torch is imported when a function is called
    import torch

__all__ = ["to_torch", "from_torch"]


# ------------------------------------------------------------------- the settings readers
def _no_settings(m) -> dict:
    return {}


def _linear(m) -> dict:
    return {"in_features": m.in_features, "out_features": m.out_features,
            "bias": m.bias is not None}


def _dropout(m) -> dict:
    return {"p": m.p}


def _channel_norm(m) -> dict:
    """BatchNorm1d/2d, InstanceNorm1d/2d (``bias`` only matters with ``affine``)."""
    return {"num_features": m.num_features, "eps": m.eps, "momentum": m.momentum,
            "affine": m.affine, "track_running_stats": m.track_running_stats,
            "bias": m.bias is not None if m.affine else True}


def _group_norm(m) -> dict:
    return {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps,
            "affine": m.affine, "bias": m.bias is not None if m.affine else True}


def _layer_norm(m) -> dict:
    return {"normalized_shape": tuple(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine,
            "bias": m.bias is not None if m.elementwise_affine else True}


def _conv(m) -> dict:
    """Conv1d, Conv2d."""
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
            "dilation": m.dilation, "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _max_pool(m) -> dict:
    return {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
            "dilation": m.dilation, "return_indices": m.return_indices,
            "ceil_mode": m.ceil_mode}


def _avg_pool(m) -> dict:
    return {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
            "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad,
            "divisor_override": m.divisor_override}


def _adaptive_avg_pool(m) -> dict:
    return {"output_size": m.output_size}


def _flatten(m) -> dict:
    return {"start_dim": m.start_dim, "end_dim": m.end_dim}


def _embedding(m) -> dict:
    return {"num_embeddings": m.num_embeddings, "embedding_dim": m.embedding_dim,
            "padding_idx": m.padding_idx, "max_norm": m.max_norm, "norm_type": m.norm_type,
            "scale_grad_by_freq": m.scale_grad_by_freq, "sparse": m.sparse}


def _rms_norm(m) -> dict:
    return {"normalized_shape": tuple(m.normalized_shape), "eps": m.eps,
            "elementwise_affine": m.elementwise_affine}


# our class -> (name of the torch.nn class, settings(module) -> constructor keywords of both).
# ``dtype=`` is added when the module holds floating-point parameters or buffers.
_LAYERS: dict[type, tuple[str, Callable[[object], dict]]] = {
    Linear: ("Linear", _linear),
    ReLU: ("ReLU", _no_settings),
    Tanh: ("Tanh", _no_settings),
    Sigmoid: ("Sigmoid", _no_settings),
    Identity: ("Identity", _no_settings),
    Dropout: ("Dropout", _dropout),
    Conv1d: ("Conv1d", _conv),
    Conv2d: ("Conv2d", _conv),
    MaxPool2d: ("MaxPool2d", _max_pool),
    AvgPool2d: ("AvgPool2d", _avg_pool),
    AdaptiveAvgPool2d: ("AdaptiveAvgPool2d", _adaptive_avg_pool),
    Flatten: ("Flatten", _flatten),
    Embedding: ("Embedding", _embedding),
    BatchNorm1d: ("BatchNorm1d", _channel_norm),
    BatchNorm2d: ("BatchNorm2d", _channel_norm),
    InstanceNorm1d: ("InstanceNorm1d", _channel_norm),
    InstanceNorm2d: ("InstanceNorm2d", _channel_norm),
    LayerNorm: ("LayerNorm", _layer_norm),
    GroupNorm: ("GroupNorm", _group_norm),
    RMSNorm: ("RMSNorm", _rms_norm),
}


def _supported_names() -> str:
    return ", ".join(["Sequential"] + [name for name, _ in _LAYERS.values()])


# ------------------------------------------------------------------------- the helpers
def _import_torch(fn: str):
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"tinygrad_bn.{fn} needs PyTorch, which could not be imported "
                          f"({e}): pip install torch") from None
    return torch


@contextmanager
def _generators_untouched(torch):
    """Build a layer without moving either library's default generator: the random initial
    weights are overwritten by the copied ones anyway."""
    gen = factories.generator()
    state = gen.bit_generator.state
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        gen.bit_generator.state = state


def _unsupported(fn: str, cls: type, path: str, ours: bool) -> TypeError:
    """The TypeError for a module type that is not in the table."""
    where = f" (at {path!r})" if path else ""
    here, there = ("tinygrad_bn", "torch") if ours else ("torch", "tinygrad_bn")
    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__.split(".")[0] == here:
        why = f"{name}{where} has no {there} counterpart in {fn} yet."
    else:
        why = (f"{name}{where} is a user-defined Module: its forward() is your code, which "
               f"cannot be converted. Convert its children with {fn} and write the same "
               f"forward() in a {there} Module (example in help(tinygrad_bn.to_torch)).")
    return TypeError(f"{fn}: {why} Supported types: {_supported_names()}.")


def _float_dtype(arrays) -> np.dtype | None:
    """The dtype of the first floating-point array (the dtype the layer is built with)."""
    for a in arrays:
        if a.dtype.kind == "f":
            return a.dtype
    return None


def _torch_array(fn: str, what: str, t) -> np.ndarray:
    """A torch tensor's values as an ndarray (on the CPU; may share the tensor's memory, so
    the caller wraps it in a Tensor, which copies)."""
    try:
        return t.detach().cpu().numpy()
    except TypeError as e:  # bfloat16 and other dtypes NumPy lacks
        raise TypeError(f"{fn}: {what} has dtype {t.dtype}, which NumPy cannot hold ({e}); "
                        "convert the module first, e.g. module.float()") from None


def _check_layout(fn: str, cls_name: str, kind: str, src: dict, built: dict) -> None:
    """The source's parameters (or buffers) are the ones a fresh layer has, with its shapes."""
    if set(src) != set(built):
        raise ValueError(f"{fn}: the {cls_name} has {kind}s {sorted(src)}, but {cls_name} "
                         f"built from its settings has {sorted(built)}; was one added or "
                         "removed after construction?")
    for k, shape in built.items():
        if tuple(src[k]) != tuple(shape):
            raise ValueError(f"{fn}: {cls_name}.{k} has shape {tuple(src[k])}, but its "
                             f"settings give {tuple(shape)}")


def _children_first(module) -> list:
    """``(path, module)`` with every module after its children: the reversed depth-first
    order, keeping repeats so that a shared module comes before each of its parents."""
    return list(reversed(list(module.named_modules(remove_duplicate=False))))


# ------------------------------------------------------------------------ our -> torch
def _layer_to_torch(torch, m: Module):
    name, settings = _LAYERS[type(m)]
    params = OrderedDict((k, p) for k, p in m.named_parameters(recurse=False))
    buffers = OrderedDict((k, b) for k, b in m.named_buffers(recurse=False))
    kwargs = settings(m)
    dtype = _float_dtype(t.data for t in (*params.values(), *buffers.values()))
    if dtype is not None:
        kwargs["dtype"] = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    with _generators_untouched(torch):
        tm = getattr(torch.nn, name)(**kwargs)
    t_params = {k: tuple(p.shape) for k, p in tm.named_parameters(recurse=False)}
    t_buffers = {k: tuple(b.shape) for k, b in tm.named_buffers(recurse=False)}
    _check_layout("to_torch", name, "parameter", {k: p.shape for k, p in params.items()},
                  t_params)
    _check_layout("to_torch", name, "buffer", {k: b.shape for k, b in buffers.items()},
                  t_buffers)
    for k, p in params.items():  # each keeps its own dtype and requires_grad
        setattr(tm, k, torch.nn.Parameter(torch.from_numpy(np.array(p.data, copy=True)),
                                          requires_grad=p.requires_grad))
    for k, b in buffers.items():
        setattr(tm, k, torch.from_numpy(np.array(b.data, copy=True)))
    return tm


def to_torch(module: Module) -> torch.nn.Module:
    """An equivalent ``torch.nn.Module``: same classes, settings, weights, buffers and modes.

    Converts ``Sequential`` (nested too; a module shared by two places stays shared),
    ``Linear``, ``Conv1d``, ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
    ``Flatten``, ``Embedding``, ``ReLU``, ``Tanh``, ``Sigmoid``, ``Identity``, ``Dropout`` and
    the norm layers (``BatchNorm1d/2d``, ``InstanceNorm1d/2d``, ``LayerNorm``, ``GroupNorm``,
    ``RMSNorm``).
    Every constructor setting carries over (eps, momentum incl. None, affine,
    track_running_stats, bias=False, ...), each parameter and buffer keeps its dtype and
    ``requires_grad``, and each module its train/eval mode. Values are copied: training one
    afterwards does not change the other. Not carried over: ``.grad``, forward hooks,
    ``analytic=`` (no torch counterpart) and optimizer state such as SGD's momentum buffers.

    A user-defined Module subclass cannot be converted (its ``forward`` is Python code):
    convert its children and write the same forward in torch::

        class TorchNet(torch.nn.Module):      # mirrors our Net(body=Sequential, head=Linear)
            def __init__(self, net):
                super().__init__()
                self.body = tinygrad_bn.to_torch(net.body)
                self.head = tinygrad_bn.to_torch(net.head)

            def forward(self, x):
                return self.head(self.body(x))

    (or build the torch model yourself and ``load_state_dict`` our ``state_dict()``: the keys
    are torch's). Raises TypeError naming a module it cannot convert, ImportError when torch
    is not installed.
    """
    torch = _import_torch("to_torch")
    if not isinstance(module, Module):
        hint = ("; for a torch module use from_torch" if isinstance(module, torch.nn.Module)
                else "")
        raise TypeError(f"to_torch expects a tinygrad_bn.nn.Module, got "
                        f"{type(module).__name__}{hint}")
    items = _children_first(module)
    for path, m in items:  # everything is checked before anything is built
        if type(m) is not Sequential and type(m) not in _LAYERS:
            raise _unsupported("to_torch", type(m), path, ours=True)
    done: dict = {}
    for _, m in items:
        if id(m) in done:
            continue
        if type(m) is Sequential:
            tm = torch.nn.Sequential(OrderedDict(
                (k, None if c is None else done[id(c)]) for k, c in m._modules.items()))
        else:
            tm = _layer_to_torch(torch, m)
        tm.training = m.training
        done[id(m)] = tm
    return done[id(module)]


# ------------------------------------------------------------------------ torch -> our
def _layer_from_torch(torch, cls: type, tm) -> Module:
    name = type(tm).__name__
    params = OrderedDict((k, p) for k, p in tm.named_parameters(recurse=False))
    buffers = OrderedDict((k, b) for k, b in tm.named_buffers(recurse=False))
    p_arrays = {k: _torch_array("from_torch", f"{name}.{k}", p) for k, p in params.items()}
    b_arrays = {k: _torch_array("from_torch", f"{name}.{k}", b) for k, b in buffers.items()}
    kwargs = _LAYERS[cls][1](tm)
    dtype = _float_dtype((*p_arrays.values(), *b_arrays.values()))
    if dtype is not None:
        kwargs["dtype"] = dtype
    with _generators_untouched(torch):
        m = cls(**kwargs)
    _check_layout("from_torch", name, "parameter", {k: a.shape for k, a in p_arrays.items()},
                  {k: p.shape for k, p in m.named_parameters(recurse=False)})
    _check_layout("from_torch", name, "buffer", {k: a.shape for k, a in b_arrays.items()},
                  {k: b.shape for k, b in m.named_buffers(recurse=False)})
    for k, a in p_arrays.items():  # each keeps its own dtype and requires_grad
        setattr(m, k, Parameter(a, requires_grad=params[k].requires_grad))
    for k, a in b_arrays.items():
        setattr(m, k, Tensor(a))
    return m


def from_torch(module: torch.nn.Module) -> Module:
    """The equivalent tinygrad_bn module of a ``torch.nn.Module`` (the reverse of ``to_torch``).

    Converts ``torch.nn.Sequential`` and the torch classes listed in ``to_torch``, with every
    constructor setting, parameter (dtype and ``requires_grad``), buffer and train/eval mode;
    values are copied (no shared memory). The norm layers come back with the default
    ``analytic=False`` (the composed graph); set ``layer.analytic = True`` for the
    hand-derived node. torch's ``inplace=`` (ReLU, Dropout) has no counterpart and is dropped.
    A user-defined ``torch.nn.Module`` subclass cannot be converted: convert its children and
    write the same forward in a ``tinygrad_bn.nn.Module`` (see ``to_torch``). Raises TypeError
    naming a module it cannot convert, ImportError when torch is not installed.
    """
    torch = _import_torch("from_torch")
    if not isinstance(module, torch.nn.Module):
        hint = "; for a tinygrad_bn module use to_torch" if isinstance(module, Module) else ""
        raise TypeError(f"from_torch expects a torch.nn.Module, got "
                        f"{type(module).__name__}{hint}")
    ours = {getattr(torch.nn, name): cls for cls, (name, _) in _LAYERS.items()}
    items = _children_first(module)
    for path, tm in items:  # everything is checked before anything is built
        if type(tm) is not torch.nn.Sequential and type(tm) not in ours:
            raise _unsupported("from_torch", type(tm), path, ours=False)
    done: dict = {}
    for _, tm in items:
        if id(tm) in done:
            continue
        if type(tm) is torch.nn.Sequential:
            m = Sequential(OrderedDict(
                (k, None if c is None else done[id(c)]) for k, c in tm._modules.items()))
        else:
            m = _layer_from_torch(torch, ours[type(tm)], tm)
        object.__setattr__(m, "training", bool(tm.training))
        done[id(tm)] = m
    return done[id(module)]
