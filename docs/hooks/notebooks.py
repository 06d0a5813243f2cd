"""MkDocs hook: the notebooks of ``notebooks/`` as pages of the site, run at build time.

The notebooks live beside ``docs/``, not in it; this hook hands them to the mkdocs-jupyter
plugin (``plugins: - mkdocs-jupyter`` in mkdocs.yml), which executes each one and renders it
with its outputs. Three things here keep that build honest and offline:

- **Quick sizes.** ``TINYGRAD_BN_QUICK=1`` is set for the build, so the notebooks (and the
  kernels they start, which inherit the environment) run their small versions.
- **A failing notebook fails the build.** mkdocs.yml sets ``allow_errors: false``. The
  plugin caches executed notebooks (a second build takes seconds); here the cache lives in
  the system's temporary folder, under a hash of the package's source, so a change in
  ``tinygrad_bn`` runs every notebook again instead of showing old outputs.
- **No network, no TeX left.** nbconvert's page loads MathJax from a CDN and leaves the
  notebooks' ``$...$`` TeX in the text for it. The script tags are removed, and the TeX is
  marked up the way ``pymdownx.arithmatex`` marks it, so ``mathml.py`` (listed after this
  hook) turns it into MathML like every other page's.

A backward stepper shown by a notebook (``viz.render_backward(y)``, an ``<iframe srcdoc>``)
scrolls its first node into view when it loads, and in a frame that also scrolls the page
around it: the reader would land halfway down. Each one is put in a closed ``<details>``;
a frame that is not displayed is not laid out, so nothing moves until the reader opens it.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = ROOT / "tinygrad_bn"
CACHE = Path(tempfile.gettempdir()) / "tinygrad_bn-docs-notebooks"

# nbconvert's scripts that would fetch MathJax / mermaid from a CDN
_SCRIPTS = re.compile(
    r'<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->'
    r'|<script src="[^"]*mathjax[^"]*">\s*</script>'
    r'|<script type="text/x-mathjax-config">.*?</script>'
    r'|<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*?</script>',
    re.S | re.I)
# where TeX must stay as it is: code, outputs, scripts, styles, pictures, frames
_SKIP = re.compile(r"<(pre|code|script|style|svg|math|textarea|iframe)\b.*?</\1>", re.S)
_DISPLAY_ALONE = re.compile(r"<p>\s*\$\$(.+?)\$\$\s*</p>", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\d)")
# the backward stepper page in a notebook's output (tinygrad_bn.viz.BackwardPage)
_STEPPER = re.compile(
    r'<iframe\b[^>]*\bsrcdoc="[^"]*backward-steps[^"]*"[^>]*>\s*</iframe>', re.S)


def _source_hash() -> str:
    """A hash of the package's source: outputs cached under it stay valid for that code."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def on_config(config):
    os.environ["TINYGRAD_BN_QUICK"] = "1"  # the notebooks' small versions
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # figures shown inline, whatever MPLBACKEND the shell has (Agg would show none)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    plugin = config.plugins.get("mkdocs-jupyter")
    if plugin is not None and plugin.config.get("cache"):
        key = _source_hash()
        if CACHE.is_dir():  # outputs of older code can never be used again
            for old in CACHE.iterdir():
                if old.name != key:
                    shutil.rmtree(old, ignore_errors=True)
        plugin.config["cache_dir"] = str(CACHE / key)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns them into pages
def on_files(files, config):
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(File(f"notebooks/{path.name}", src_dir=str(ROOT),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def _mark_math(text: str) -> str:
    """TeX in text outside code, as arithmatex marks it (escaped, as in the page)."""
    text = _DISPLAY.sub(lambda m: '<span class="arithmatex-display">\\[' + m.group(1)
                        + "\\]</span>", text)
    return _INLINE.sub(lambda m: '<span class="arithmatex">\\(' + m.group(1) + "\\)</span>",
                       text)


def on_page_content(content: str, page, config, files):
    if not page.file.src_uri.startswith("notebooks/"):
        return content
    content = _SCRIPTS.sub("", content)
    content = _STEPPER.sub(lambda m: '<details class="stepper-frame"><summary>Show the '
                           "backward stepper</summary>" + m.group(0) + "</details>", content)
    # a paragraph that is one display formula becomes arithmatex's block
    content = _DISPLAY_ALONE.sub(
        lambda m: '<div class="arithmatex">\\[' + m.group(1) + "\\]</div>", content)
    out, pos = [], 0
    for m in _SKIP.finditer(content):
        out.append(_mark_math(content[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(_mark_math(content[pos:]))
    content = "".join(out)
    # a display formula inside a paragraph: end the paragraph around it
    content = re.sub(r'<span class="arithmatex-display">(.*?)</span>',
                     lambda m: '</p><div class="arithmatex">' + m.group(1) + "</div><p>",
                     content, flags=re.S)
    return content.replace("<p></p>", "")

