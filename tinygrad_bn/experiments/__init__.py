"""Studies that test the tutorial's claims with this engine.

Each study is a module here with
- ``run(quick: bool = False, seed: int = 0, progress: bool = True) -> Result`` — the data (a
  dataclass, so tests can assert on it),
- ``plot(result, path=None)`` — a matplotlib Figure (saved to ``path`` when given),
- ``summary(result) -> str`` — the numbers and an honest verdict on the claim.

``tinygrad-bn experiment NAME [--quick] --out DIR`` runs one, writes ``NAME.png`` and
``NAME.json`` and prints the summary. ``--quick`` sizes run in under a minute.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os

import numpy as np

# name -> (module, one-line description); the modules are imported when used
STUDIES = {
    "learning_rate": ("lr_sweep", "final loss/accuracy over learning rates, with and without BN"),
    "init": ("init_scale", "sensitivity to the weight-init scale, with and without BN"),
    "activations": ("activations", "sigmoid-input percentiles over training (Ioffe & Szegedy Fig. 1)"),
    "entropy": ("entropy", "per-layer activation entropy, saturation and gradient flow"),
    "ics": ("ics", "internal covariate shift (Santurkar et al. Def. 2.1) and noisy BN"),
    "smoothness": ("smoothness", "loss landscape smoothness and gradient predictiveness"),
    "variants": ("variants", "BN placement; Batch/Layer/Group/Instance/RMS norm across batch sizes"),
    "eval_mode": ("eval_mode", "forgetting eval(): train-mode vs eval-mode inference"),
}


def get(name: str):
    """The study module called ``name`` (see ``STUDIES``)."""
    if name not in STUDIES:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(STUDIES)}")
    return importlib.import_module(f"{__name__}.{STUDIES[name][0]}")


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_and_save(name: str, out_dir: str, quick: bool = False, seed: int = 0,
                 progress: bool = True, echo=print):
    """Run study ``name``, write ``NAME.png`` and ``NAME.json`` to ``out_dir``, print the
    summary; returns the result."""
    study = get(name)
    result = study.run(quick=quick, seed=seed, progress=progress)
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{name}.png")
    js = os.path.join(out_dir, f"{name}.json")
    study.plot(result, png)
    with open(js, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    echo(study.summary(result))
    echo(f"\nwrote {png} and {js}")
    return result
