"""Studies that test the BatchNorm tutorial's claims with this engine.

Each study is a module named as the study; ``framework`` explains what a study declares and
what the framework does for it (read it first, then ``learning_rate``). A study module has

- ``run(quick=False, seed=0, progress=True, **config)`` -> its result (a dataclass, so tests
  can assert on the data); ``plot(result, path=None)`` -> a matplotlib Figure;
  ``summary(result)`` -> the numbers and the verdict on the claim, as text;
- ``STUDY``, its ``framework.Study`` (name, claim, configs, and the functions above).

``STUDIES`` maps each name to its ``Study``; ``tinygrad-bn experiment NAME [--quick] --out
DIR`` runs one through ``run_and_save``, which writes ``NAME.png`` and ``NAME.json`` and
prints the summary. ``--quick`` sizes run in under a minute.
"""
from __future__ import annotations

from . import (activations, depth, entropy, eval_mode, ics, init, learning_rate,
               regularization, scale_invariance, smoothness, variants)
from .framework import Study

STUDIES: dict = {m.STUDY.name: m.STUDY for m in (learning_rate, init, activations, entropy,
                                                ics, smoothness, variants, eval_mode, depth,
                                                scale_invariance, regularization)}


def get(name: str) -> Study:
    """The study called ``name`` (see ``STUDIES``)."""
    if name not in STUDIES:
        raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(STUDIES)}")
    return STUDIES[name]


def run_and_save(name: str, out_dir: str, quick: bool = False, seed: int = 0,
                 progress: bool = True, echo=print):
    """Run study ``name``, write ``NAME.png`` and ``NAME.json`` to ``out_dir``, print the
    summary; returns the result."""
    study = get(name)
    result = study.run(quick=quick, seed=seed, progress=progress)
    png, js = study.save(result, out_dir)
    echo(study.summary(result))
    echo(f"\nwrote {png} and {js}")
    return result
