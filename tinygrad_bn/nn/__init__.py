"""Neural-network building blocks: modules, functional ops, initialization."""
from . import functional
