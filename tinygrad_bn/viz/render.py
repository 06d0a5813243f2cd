"""Rendering: DOT source to SVG / PNG / PDF files with Graphviz's ``dot``, safely for big
graphs (a size limit, automatic collapsing, a timeout)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .dot import draw_graph
from .model import Graph

RENDER_FORMATS = ("svg", "png", "pdf")
SOURCE_FORMATS = ("dot", "gv")
#: Above this many drawn nodes ``render_graph`` collapses scopes (as ``collapse=True``); if
#: the graph is still larger it refuses to run ``dot``, which would take minutes.
MAX_NODES = 3000
#: Seconds ``dot`` may take before ``render_graph`` gives up.
TIMEOUT = 60.0

INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH; it is needed to render graphs "
    "(draw_graph() builds the DOT source without it). Install Graphviz: "
    "`sudo apt-get install graphviz` (Debian/Ubuntu), `sudo dnf install graphviz` (Fedora), "
    "`brew install graphviz` (macOS), `conda install -c conda-forge graphviz`, or "
    "https://graphviz.org/download/ (Windows: add its bin folder to PATH). "
    "Or write the DOT source instead: a .dot path, or format='dot'."
)


class GraphvizNotFoundError(RuntimeError):
    """Rendering needs Graphviz's ``dot`` program and it is not on PATH."""


def check_dot() -> str:
    """The path of ``dot``, or GraphvizNotFoundError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise GraphvizNotFoundError(INSTALL_HINT)
    return path


def run_dot(source: str, fmt: str, timeout: float | None = TIMEOUT) -> bytes:
    """Lay out DOT ``source`` with ``dot`` and return the ``fmt`` output."""
    try:
        done = subprocess.run([check_dot(), f"-T{fmt}"], input=source.encode("utf-8"),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(
            f"Graphviz's dot did not finish laying out the graph in {timeout:g} s; draw "
            "less of it (collapse=..., a smaller root), raise timeout=, or write the DOT "
            "source instead (a .dot path)") from None
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz's dot failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def svg_inline(source: str, timeout: float | None = TIMEOUT) -> str:
    """Graphviz's SVG ready to inline in HTML (no XML prolog, no DOCTYPE, no namespaces: an
    HTML parser puts <svg> in the SVG namespace by itself)."""
    text = run_dot(source, "svg", timeout).decode("utf-8")
    text = text[text.index("<svg"):]
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)


def format_of(path: Path, format: str | None) -> str:
    if format is None:
        format = path.suffix.lstrip(".")
        if not format:
            raise ValueError(f"render_graph: cannot tell the format of {str(path)!r}: give the "
                             "file a suffix (.svg, .png, .pdf, .dot) or pass format=")
    fmt = str(format).lower()
    if fmt not in RENDER_FORMATS + SOURCE_FORMATS:
        raise ValueError(f"render_graph: format must be one of "
                         f"{RENDER_FORMATS + SOURCE_FORMATS}, got {format!r}")
    return fmt


def render_graph(root, path, format: str | None = None, *, max_nodes: int = MAX_NODES,
                 timeout: float | None = TIMEOUT, **kwargs) -> Path:
    """Draw the graph behind ``root`` and write it to ``path``; returns the path.

    ``format`` is "svg", "png" or "pdf" (rendered by Graphviz's ``dot``), or "dot" for the
    DOT source (no Graphviz program needed); by default it is the suffix of ``path``.
    ``root`` is what ``draw_graph`` takes, or a ``graphviz.Digraph`` it returned; keyword
    arguments go to ``draw_graph``.

    Big graphs: a graph with more than ``max_nodes`` drawn nodes (default 3000) is drawn
    with ``collapse=True`` (each layer / norm call as one box) unless ``collapse`` was given;
    if that is still too many, ValueError says how to draw a part of it. ``dot`` gets
    ``timeout`` seconds (default 60; None: no limit), then TimeoutError. DOT source is
    always written, whatever the size.

    Raises GraphvizNotFoundError (a RuntimeError) that says how to install Graphviz when
    ``dot`` is not on PATH, and ValueError for an unknown format.
    """
    path = Path(path)
    fmt = format_of(path, format)
    if hasattr(root, "source") and hasattr(root, "pipe"):
        if kwargs:
            raise ValueError("render_graph: drawing options cannot be applied to an already "
                             f"drawn graph (got {sorted(kwargs)})")
        dot = root
    else:
        if fmt in RENDER_FORMATS:
            graph = root if isinstance(root, Graph) else Graph(root, kwargs.pop("params", None))
            root = _fit(graph, kwargs, max_nodes)
        dot = draw_graph(root, **kwargs)
    if fmt in SOURCE_FORMATS:
        path.write_text(dot.source, encoding="utf-8")
        return path
    path.write_bytes(run_dot(dot.source, fmt, timeout))
    return path


def _fit(graph: Graph, kwargs: dict, max_nodes: int) -> Graph:
    """``graph``, collapsed when it is too big to lay out; ValueError if still too big."""
    n = graph.drawn_count()
    if n <= max_nodes:
        return graph
    if kwargs.get("collapse") is None:
        graph.collapse(True)
        kwargs["collapse"] = None  # applied here
    m = graph.drawn_count()
    if m > max_nodes:
        raise ValueError(
            f"render_graph: the graph has {n} nodes to draw ({m} with its scopes collapsed), "
            f"more than max_nodes={max_nodes}: Graphviz would take minutes to lay it out. "
            "Draw a part of it (a Tensor computed earlier as the root, or one layer's "
            "output), collapse more (collapse='module' or a label pattern), raise "
            "max_nodes=, or write the DOT source (a .dot path) for another tool")
    return graph
