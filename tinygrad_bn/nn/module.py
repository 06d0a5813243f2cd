"""``Module`` (parameters, buffers, children, modes, state_dict), ``Parameter``, ``Sequential``.

Shaped like ``torch.nn.Module``: attributes assigned a ``Parameter`` or a ``Module`` are
registered in assignment order, ``register_buffer`` adds non-trainable state (running
statistics), and ``state_dict()`` uses torch's keys, so weights move between the two.
"""
from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple
from typing import Callable, Iterator, Mapping

import numpy as np

from ..core.node import _grad_mode, scope
from ..core.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a ``Module`` registers as trainable when assigned as an attribute.

    ``Parameter(data, requires_grad=True, dtype=None, name=None)`` copies ``data`` like
    ``Tensor`` and requires grad by default.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None, name: str | None = None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, name=name)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(ValueError, RuntimeError):
    """A state_dict that does not fit a module (keys or shapes).

    A ValueError (bad argument, as elsewhere in tinygrad_bn) that is also a RuntimeError
    (what ``torch.nn.Module.load_state_dict`` raises), so either ``except`` works.
    """


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_hook_ids = itertools.count()


class RemovableHandle:
    """What ``register_forward_hook`` returns: ``.remove()`` unregisters the hook (removing
    twice is harmless); also a context manager that removes the hook on exit."""

    __slots__ = ("_hooks", "id")

    def __init__(self, hooks: dict, hook_id: int):
        self._hooks = hooks
        self.id = hook_id

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False


def _check_name(name, kind: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f"{kind} name can't be empty or contain '.', got {name!r}")


def _as_array(value) -> np.ndarray:
    """A state_dict entry as an ndarray: NumPy arrays, our Tensors, torch tensors, numbers."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor (possibly requiring grad)
        value = value.detach()
    return np.asarray(value)


class Module:
    """Base class of layers and models.

    Subclasses call ``super().__init__()`` first, assign ``Parameter``\\ s, sub-``Module``\\ s
    and buffers (``register_buffer``) as attributes, and define ``forward``. Calling the module
    runs ``forward`` inside a graph scope labelled like ``"BatchNorm1d (bn1)"`` (class name and
    the name under which the parent registered it), which ``viz`` draws as a cluster.
    """

    training: bool
    _forward_hooks: "dict | None" = None  # id -> hook; an instance dict once one is registered

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_label", type(self).__name__)

    # -- calling ----------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward() method")

    def __call__(self, *args, **kwargs):
        if not _grad_mode.enabled:  # nothing is recorded, so no scope is needed
            out = self.forward(*args, **kwargs)
        else:
            with scope(self._label, "module"):
                out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in tuple(self._forward_hooks.values()):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    def register_forward_hook(self, hook: Callable) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every ``forward`` of this module.

        ``inputs`` is the tuple of positional arguments. A hook that returns something other
        than None replaces the output (as in torch). Hooks run in registration order, in
        whatever grad mode the call ran in. Returns a handle whose ``.remove()`` unregisters
        the hook.
        """
        if not callable(hook):
            raise TypeError(f"a forward hook must be callable, got {type(hook).__name__}")
        hooks = self.__dict__.get("_forward_hooks")
        if hooks is None:
            hooks = OrderedDict()
            object.__setattr__(self, "_forward_hooks", hooks)
        hook_id = next(_hook_ids)
        hooks[hook_id] = hook
        return RemovableHandle(hooks, hook_id)

    # -- registration -----------------------------------------------------------------
    def _registries(self, name: str):
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], \
                self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() call "
                f"(call super().__init__() first in {type(self).__name__}.__init__)"
            ) from None

    def _forget(self, name: str, keep: str = "") -> None:
        """Drop ``name`` from the registries other than ``keep`` (where a reassignment keeps
        its place, as in torch)."""
        params, buffers, modules = self._registries(name)
        if keep != "_parameters":
            params.pop(name, None)
        if keep != "_buffers":
            buffers.pop(name, None)
            self._non_persistent.discard(name)
        if keep != "_modules":
            modules.pop(name, None)

    def __setattr__(self, name: str, value) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            self._forget(name, "_parameters")
            d["_parameters"][name] = value
        elif isinstance(value, Module):
            self._forget(name, "_modules")
            d["_modules"][name] = value
            object.__setattr__(value, "_label", f"{type(value).__name__} ({name})")
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                "(a Parameter or None is expected)")
            d["_parameters"][name] = None
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module "
                                f"{name!r} (a Module or None is expected)")
            d["_modules"][name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} "
                                "(a Tensor or None is expected)")
            d["_buffers"][name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if "_parameters" in self.__dict__:
            self._forget(name)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (a Parameter, or None for an absent one such as a bias=False
        layer's bias) under ``name``."""
        _check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} "
                            "(a Parameter or None is expected)")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute {name!r} already exists")
        self._forget(name, "_parameters")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Register non-trainable state (a Tensor, or None) under ``name``.

        Persistent buffers (the default) are part of ``state_dict()``; running statistics
        of the norm layers are buffers.
        """
        _check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer {name!r} "
                            "(a Tensor or None is expected)")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute {name!r} already exists")
        self._forget(name, "_buffers")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Register ``module`` as a child under ``name`` (what attribute assignment does)."""
        _check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute {name!r} already exists")
        if module is None:
            self._forget(name, "_modules")
            self._modules[name] = None
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, module)

    register_module = add_module

    # -- traversal --------------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, "Module"]]:
        """``(name, module)`` for this module and every descendant, depth first in
        registration order (this module's name is ``prefix``, "" by default)."""
        seen: set = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if remove_duplicate:
                if id(m) in seen:
                    continue
                seen.add(id(m))
            yield name, m
            kids = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items()
                    if c is not None]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """``(name, module)`` for the direct children, in registration order."""
        seen: set = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry: str, recurse: bool):
        seen: set = set()
        mods = self.named_modules() if recurse else [("", self)]
        for mname, m in mods:
            for k, v in getattr(m, registry).items():
                if v is None or id(v) in seen:
                    continue
                seen.add(id(v))
                yield (f"{mname}.{k}" if mname else k), v

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` in registration order, children after their parent's own
        parameters; a parameter shared by two modules appears once."""
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse):
            yield b

    # -- modes and gradients ----------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode on this module and all descendants; returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be a bool, got {mode!r}")
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """``train(False)``: norm layers use their running statistics, Dropout is the
        identity. Returns self."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (set to None, or fill with zeros)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Turn gradient tracking of every parameter on or off; returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every descendant and then on self (as torch); returns self."""
        for _, m in reversed(list(self.named_modules())):
            fn(m)
        return self

    # -- state ------------------------------------------------------------------------
    def _state_items(self):
        """``(key, Tensor)`` for every parameter and persistent buffer, in torch's order
        (each module's parameters, then its buffers, then its children)."""
        for mname, m in self.named_modules(remove_duplicate=False):
            pre = f"{mname}." if mname else ""
            for k, p in m._parameters.items():
                if p is not None:
                    yield pre + k, p
            for k, b in m._buffers.items():
                if b is not None and k not in m._non_persistent:
                    yield pre + k, b

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and persistent buffers as copies: an OrderedDict of ndarrays keyed as
        torch keys them (``"0.weight"``, ``"bn1.running_mean"``, ``"bn1.num_batches_tracked"``)."""
        return OrderedDict((k, t.data.copy()) for k, t in self._state_items())

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of ``state_dict`` into the parameters and buffers (cast to their
        dtypes).

        Values may be ndarrays, Tensors or torch tensors. With ``strict`` every key must match;
        missing and unexpected keys are named in the error. A shape mismatch is an error
        whatever ``strict`` says. Everything is checked before anything is assigned, so a
        failed load leaves the module untouched. Returns ``(missing_keys, unexpected_keys)``.
        Raises ``StateDictError`` (a ValueError and a RuntimeError).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"expected a mapping of names to arrays, got "
                            f"{type(state_dict).__name__}")
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict:
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.append("Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ".")
        updates = []
        for k, t in own.items():
            if k not in state_dict:
                continue
            try:
                arr = _as_array(state_dict[k])
            except Exception as e:  # noqa: BLE001 - reported with its key
                errors.append(f"cannot read {k!r} as an array: {e}")
                continue
            if arr.dtype.kind not in "biuf":
                errors.append(f"{k!r} has dtype {arr.dtype}, not a number")
            elif arr.shape != t.data.shape:
                errors.append(f"size mismatch for {k}: copying a param with shape "
                              f"{arr.shape} from checkpoint, the shape in current model is "
                              f"{t.data.shape}.")
            else:
                updates.append((t, arr))
        if errors:
            raise StateDictError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                                 + "\n\t".join(errors))
        for t, arr in updates:
            if t.data.flags.writeable:
                np.copyto(t.data, arr, casting="unsafe")
            else:
                t.data = arr.astype(t.data.dtype, copy=True)
        return IncompatibleKeys(missing, unexpected)

    # -- printing ---------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The settings shown inside the parentheses of ``repr`` (override in layers)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + repr(m).replace("\n", "\n  ")
                       for name, m in self._modules.items()]
        lines = extra_lines + child_lines
        if not lines:
            return f"{type(self).__name__}()"
        if len(extra_lines) == 1 and not child_lines:
            return f"{type(self).__name__}({extra})"
        return type(self).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order: ``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict)``.

    Children are registered as ``"0"``, ``"1"``, ... (or the dict's keys), so parameter names
    are ``"0.weight"``, ``"1.running_mean"``, ... as in torch. Indexable (ints and slices),
    ``len()``, iterable, ``append``.
    """

    def __init__(self, *modules: Module):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def _index(self, idx: int) -> str:
        n = len(self._modules)
        if not isinstance(idx, (int, np.integer)):
            raise TypeError(f"Sequential indices must be integers or slices, not "
                            f"{type(idx).__name__}")
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a Sequential of length {n}")
        return list(self._modules)[idx % n]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        setattr(self, self._index(idx), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        """Add ``module`` at the end (registered under the next index); returns self."""
        self.add_module(str(len(self._modules)), module)
        return self
