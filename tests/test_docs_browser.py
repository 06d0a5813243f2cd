"""The documentation site as a reader sees it: built with mkdocs once for this module, served
on 127.0.0.1, and every page opened in headless Chromium with every non-loopback request
blocked. Each page must render completely offline: formulas as MathML with a size, no TeX
left in the text, every image loaded, no console error, nothing wider than the column.

The pages are the markdown files of docs/ and the notebooks of notebooks/ (executed at build
time by mkdocs-jupyter, see docs/hooks/notebooks.py); the backward stepper
(docs/stepper/bn_backward.html) is a static page of its own, embedded in one of them."""
import functools
import http.server
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import STRICT

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
# the site's pages, named by their source: docs/**/*.md, then notebooks/*.ipynb
PAGES = (sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
         + sorted(f"notebooks/{p.name}" for p in NOTEBOOKS.glob("*.ipynb")))
WIDTH = 1280
# TeX that must never reach a reader's eyes (outside code)
RAW_TEX = re.compile(r"\$|\\(?:frac|dfrac|tfrac|hat|bar|sum|partial|sqrt|mathrm|text|begin|"
                     r"end|left|right|cdot|sigma|mu|gamma|beta|epsilon|nabla|boxed)(?![A-Za-z])"
                     r"|\\[(\[]")


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if STRICT:
            pytest.fail(f"{module} is required when TINYGRAD_BN_STRICT=1 "
                        "(pip install -e '.[docs]')", pytrace=False)
        pytest.skip(f"{module} is not installed (pip install -e '.[docs]')")


def _url(page: str) -> str:
    """The site path of docs/``page`` or of a notebook (MkDocs' directory URLs)."""
    stem = page.rsplit(".", 1)[0]
    if stem == "index":
        return ""
    if stem.endswith("/index"):
        return stem[:-5]
    return stem + "/"


def _markdown(page: str) -> str:
    """The page's markdown with snippets (``--8<-- "path"``) pulled in, code and mkdocstrings'
    ``:::`` blocks removed; for a notebook, its markdown cells."""
    if page.endswith(".ipynb"):
        cells = json.loads((ROOT / page).read_text(encoding="utf-8"))["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
        return re.sub(r"`[^`\n]*`", "", text)
    text = (DOCS / page).read_text(encoding="utf-8")
    text = re.sub(r'^--8<-- "([^"]+)"\s*$',
                  lambda m: (ROOT / m.group(1)).read_text(encoding="utf-8"), text, flags=re.M)
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.M | re.S)
    text = re.sub(r"^::: .*\n(?:[ \t]+.*\n|[ \t]*\n)*", "", text, flags=re.M)  # API blocks
    return re.sub(r"`[^`\n]*`", "", text)


def _display_blocks(md: str, page: str) -> int:
    """How many ``$$ ... $$`` display formulas the markdown has (in a notebook they may also
    sit inside a paragraph)."""
    if page.endswith(".ipynb"):
        return len(re.findall(r"\$\$.+?\$\$", md, flags=re.S))
    return sum(1 for line in md.splitlines() if line.strip().startswith("$$")) // 2


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from this tree into a temporary folder."""
    for module in ("mkdocs", "material", "mkdocstrings", "latex2mathml", "mkdocs_glightbox",
                   "mkdocs_jupyter"):
        _need(module)
    out = tmp_path_factory.mktemp("site")
    # --no-strict: only problems of the pages themselves fail here (docs/hooks/mathml.py stops
    # the build on a formula it cannot render, a notebook that raises stops it too); CI's
    # `mkdocs build --strict` rejects warnings. The notebooks run at quick size (a minute or
    # two), or come from the cache of an earlier build of the same code.
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--no-strict", "-q", "-d", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, f"mkdocs build failed:\n{done.stdout}\n{done.stderr}"
    assert "mathml.py" not in done.stderr, done.stderr
    return out


@pytest.fixture(scope="module")
def server(site):
    """Base URL of the built site, served on 127.0.0.1 from a thread."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _open(browser, base, path):
    """The page at ``base + path``, 1280 px wide, with a list of console errors and one of
    the requests it tried to send anywhere but the local server (those are blocked)."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def route(r):
        url = r.request.url
        if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
            r.continue_()
        else:
            outside.append(url)
            r.abort()
    page.route("**/*", route)
    page.goto(base + path, wait_until="load")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)")
    page.evaluate("document.fonts.ready.then(() => true)")
    return page, errors, outside


# what the reader sees on a page, measured in the browser
_INSPECT = """() => {
  const visible = e => e.checkVisibility ? e.checkVisibility() : e.offsetParent !== null;
  const skip = 'pre, code, script, style, math, svg, .md-search, noscript';
  const texts = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (el && !el.closest(skip) && visible(el) && n.textContent.trim()) texts.push(n.textContent);
  }
  const maths = Array.from(document.querySelectorAll('.md-content math'));
  const content = document.querySelector('.md-content');
  const right = content.getBoundingClientRect().right;
  return {
    text: texts.join(' '),
    maths: maths.map(m => {
      const r = m.getBoundingClientRect();
      return {block: m.getAttribute('display') === 'block', w: r.width, h: r.height,
              display: getComputedStyle(m).display, tex: m.getAttribute('alttext'),
              visible: visible(m)};
    }),
    merrors: document.querySelectorAll('merror').length,
    images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src,
      ok: i.complete && i.naturalWidth > 0, right: i.getBoundingClientRect().right})),
    page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
    content: [content.scrollWidth, content.clientWidth, right],
    scrolling: Array.from(document.querySelectorAll('.md-content div.arithmatex'))
      .filter(d => d.scrollWidth > d.clientWidth + 1)
      .map(d => (d.querySelector('math') || d).getAttribute('alttext')),
  };
}"""


def test_every_built_page_is_checked(site):
    """The pages below are all the site has: one index.html per markdown page."""
    built = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    want = sorted(_url(p) + "index.html" for p in PAGES)
    assert built == want


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_offline(browser, server, page):
    md = _markdown(page)
    view, errors, outside = _open(browser, server, _url(page))
    try:
        seen = view.evaluate(_INSPECT)
    finally:
        view.close()
    assert outside == [], f"{page} asked the network for {outside}"
    assert errors == [], f"{page}: console errors {errors}"
    left = [seen["text"][max(0, m.start() - 40):m.end() + 40]
            for m in RAW_TEX.finditer(seen["text"])]
    assert left == [], f"{page}: TeX left in the visible text: {left[:5]}"
    # formulas: MathML laid out by the browser, each with a size; display formulas as many as
    # the markdown's $$ blocks
    maths = seen["maths"]
    has_math = bool(re.search(r"\$[^$\n]+\$", md))
    if has_math:
        assert maths, f"{page} has math in its markdown but no <math> element"
    assert seen["merrors"] == 0
    for m in maths:
        assert m["visible"] and m["w"] > 0 and m["h"] > 0, f"{page}: empty formula {m['tex']!r}"
        assert "math" in m["display"], f"{page}: MathML not laid out as math: {m}"
    assert sum(m["block"] for m in maths) == _display_blocks(md, page), \
        f"{page}: display formulas rendered vs $$ blocks in the markdown"
    # every image loaded
    broken = [i["src"] for i in seen["images"] if not i["ok"]]
    assert broken == [], f"{page}: images that did not load: {broken}"
    # nothing wider than the column at 1280 px: no page scroll, no formula that must scroll
    assert seen["page"][0] <= seen["page"][1], f"{page}: the page scrolls sideways"
    assert seen["content"][0] <= seen["content"][1], f"{page}: the content column overflows"
    assert seen["scrolling"] == [], f"{page}: formulas wider than the column: {seen['scrolling']}"
    assert all(i["right"] <= seen["content"][2] + 1 for i in seen["images"]), page


def test_derivation_reads_whole_and_its_figure_enlarges(browser, server):
    """The derivation's central steps are display formulas inside the list, the forward pass
    ends in y = γx̂ + β within the column, the graph is our SVG and opens enlarged on click."""
    view, errors, outside = _open(browser, server, "derivation/")
    try:
        steps = view.locator(".md-content ol > li")
        assert steps.count() == 5  # no bogus sixth item from a line starting with "+"
        for k in (2, 3, 4):  # steps 3, 4, 5 hold a display formula each
            assert steps.nth(k).locator("math[display=block]").count() == 1, f"step {k + 1}"
        first = view.locator(".md-content math[display=block]").first
        assert "\\gamma \\hat x_i + \\beta" in first.get_attribute("alttext")
        last_row = first.locator("mtr").last.bounding_box()  # y_i = γ x̂_i + β
        column = view.locator(".md-content").bounding_box()
        assert column["x"] <= last_row["x"]
        assert last_row["x"] + last_row["width"] <= column["x"] + column["width"]
        assert last_row["width"] > 0 and last_row["height"] > 0
        text = view.inner_text(".md-content")
        assert "Tutorial 10: Batch Normalization — Stabilizing Deep Networks" in text
        assert "seed-tutorial" not in text
        figure = view.locator(".md-content a.glightbox img[src$='.svg']")
        assert figure.count() == 1
        _enlarges(view, figure)
        assert errors == [] and outside == []
    finally:
        view.close()


def _enlarges(view, figure):
    """Clicking ``figure`` opens it in the lightbox at the largest size the window allows
    (at most its own size), larger than on the page; Escape closes it."""
    small = figure.bounding_box()
    natural = figure.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    figure.click()
    big = view.locator(".gslide-image img").first
    big.wait_for(state="visible", timeout=5000)
    view.wait_for_timeout(600)  # the opening animation
    large = big.bounding_box()
    window = view.viewport_size
    assert large["width"] > small["width"] and large["height"] > small["height"], (small, large)
    # as large as it can be: its own size, or the window's limit in one direction
    assert (large["width"] >= min(natural[0], 0.8 * window["width"]) - 1
            or large["height"] >= 0.8 * window["height"]), (natural, large)
    view.keyboard.press("Escape")
    view.locator(".glightbox-container").wait_for(state="detached", timeout=5000)


def test_study_figure_enlarges(browser, server):
    """A study's wide plot, shrunk to the column on the page, opens much larger."""
    view, errors, outside = _open(browser, server, "studies/ics/")
    try:
        figure = view.locator(".md-content a.glightbox img").first
        _enlarges(view, figure)
        assert errors == [] and outside == []
    finally:
        view.close()


def test_stepper_page_of_the_site_steps_offline(browser, server):
    """docs/stepper/bn_backward.html is copied into the site as it is (not an MkDocs page):
    served from there it works with the network blocked and steps with keys and buttons."""
    view, errors, outside = _open(browser, server, "stepper/bn_backward.html")
    try:
        total = view.inner_text("#pos")
        assert total.startswith("step 1 / ")
        n = int(total.split("/")[1])
        assert view.locator("svg .cur").count() >= 1  # the node being processed is lit
        view.keyboard.press("ArrowRight")
        assert view.inner_text("#pos") == f"step 2 / {n}"
        view.click("#last")
        assert view.inner_text("#pos").startswith("done")
        assert ".grad" in view.inner_text("#leaves")
        assert errors == [] and outside == []
    finally:
        view.close()


def _open_stepper_frame(view, details):
    """Open the closed ``<details>`` that holds a stepper frame; returns the frame. Loading
    the page must not have scrolled it (the stepper scrolls its node into view, which in a
    frame that is laid out would move the page around it)."""
    assert view.evaluate("window.scrollY") == 0
    summary = details.locator("summary")
    summary.scroll_into_view_if_needed()
    summary.click()
    frame = details.locator("iframe").element_handle().content_frame()
    frame.wait_for_selector("#pos")
    return frame


def test_follow_the_gradient_embeds_the_stepper(browser, server):
    """The page holds the stepper in a frame that loads and steps, without moving the page on
    load; the link next to it opens the same file."""
    view, errors, outside = _open(browser, server, "follow-the-gradient/")
    try:
        details = view.locator(".md-content details.stepper-frame")
        assert details.count() == 1
        frame = _open_stepper_frame(view, details)
        assert frame.inner_text("#pos").startswith("step 1 / ")
        frame.click("#next")
        assert frame.inner_text("#pos").startswith("step 2 / ")
        link = view.locator(".md-content a[href$='stepper/bn_backward.html']")
        assert link.count() == 1
        assert errors == [] and outside == []
    finally:
        view.close()


def test_tour_notebook_shows_its_outputs(browser, server):
    """The tour notebook is in the site executed: its graph (SVG), its stepper (a frame), its
    plot (PNG) and the text its last run printed."""
    view, errors, outside = _open(browser, server, "notebooks/00_tour/")
    try:
        out = ".jp-OutputArea-output "
        assert view.locator(out).count() >= 6
        assert view.locator(out + "img[src^='data:image/svg+xml']").count() == 1  # draw_graph
        assert view.locator(out + "img[src^='data:image/png']").count() >= 1  # the plot
        details = view.locator(out + "details.stepper-frame")  # render_backward
        assert details.count() == 1
        frame = _open_stepper_frame(view, details)
        assert frame.inner_text("#pos").startswith("step 1 / ")
        text = view.inner_text(".md-content")
        assert "Without BatchNorm, at lr 0.4" in text and "Dead ReLU units" in text
        assert "hand-derived vs autograd" in text and "FAIL (expected)" in text
        assert errors == [] and outside == []
    finally:
        view.close()


# the hook itself, without a browser: a formula it cannot render stops the build, naming it

def _hook():
    _need("mkdocs")
    _need("latex2mathml")
    spec = importlib.util.spec_from_file_location("docs_hook_mathml",
                                                  DOCS / "hooks" / "mathml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tex", [r"\frac{a}", r"\foo x", r"a & b", r"a \\ b", r"\left( x", ""])
def test_hook_rejects_what_it_cannot_render(tex):
    hook = _hook()
    with pytest.raises(hook.MathError):
        hook.tex_to_mathml(tex)


def test_hook_names_the_page_and_the_tex():
    from mkdocs.exceptions import PluginError

    hook = _hook()
    ok = hook.convert_page('<p><span class="arithmatex">\\(x &lt; \\hat y\\)</span></p>', "a.md")
    assert "<math" in ok and "\\hat" not in ok.split("alttext")[0]
    with pytest.raises(PluginError, match=r"b\.md: cannot render the formula '\\frac\{a\}'"):
        hook.convert_page('<div class="arithmatex">\\[\\frac{a}\\]</div>', "b.md")
    with pytest.raises(PluginError, match=r"c\.md: TeX left unconverted"):
        hook.convert_page("<li>so $$\\frac{1}{2}$$</li>", "c.md")
    # TeX in code is the reader's to copy, not a leftover
    hook.convert_page("<pre><code>$$\\frac{1}{2}$$</code></pre>", "d.md")
