"""Neural-network building blocks: modules, layers, norm layers, functional ops, initialization."""
from . import functional
from . import init
from .module import Module, Parameter, Sequential, StateDictError
from .layers import Dropout, Identity, Linear, ReLU, Sigmoid, Tanh
from .conv import (AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, Embedding, Flatten,
                   MaxPool2d)
from .norm import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                   LayerNorm, RMSNorm)

__all__ = [
    "Module", "Parameter", "Sequential", "StateDictError", "Linear", "ReLU", "Tanh", "Sigmoid",
    "Dropout", "Identity", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "RMSNorm", "functional", "init",
    "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Embedding",
]
