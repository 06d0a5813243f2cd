"""MkDocs hook: turn the TeX that ``pymdownx.arithmatex`` marks (generic mode) into MathML at
build time, so formulas render with no script and no network (browsers render MathML Core
natively).

``<span class="arithmatex">\\(...\\)</span>`` becomes inline ``<math>``;
``<div class="arithmatex">\\[...\\]</div>`` becomes ``<math display="block">`` inside the same
div (the theme lets a wide formula scroll there instead of widening the page).

The build fails, naming the page and the TeX, when a formula cannot be converted, when the
MathML it gives would not render as written (an unknown command, ``&`` outside a table, a
``\\\\`` line break outside a table, a fraction or script with a missing part), or when TeX
is left in a page's text that arithmatex did not recognise (e.g. ``$$`` inside a paragraph).

A few things ``latex2mathml`` writes that MathML Core (what Chromium, Firefox and Safari
render) does not know, or that TeX would set differently, are rewritten: ``\\boxed``
(``menclose``) becomes a bordered ``mrow``; ``mathvariant`` letters other than "normal" become
Unicode mathematical letters; ``\\hat`` is a fixed-size accent, ``\\sim`` a relation; ``/``
has no spaces around it; primes sit beside their base; paired bars ``|x|``, ``\\|x\\|`` are
fences; a sign after an operator is unary. Pages with math get a small stylesheet: table
column alignment (``columnalign``, ignored by MathML Core) as CSS, and a list of math fonts
to use where the reader has one (Chromium's generic ``math`` family often finds none on
Linux).
"""
from __future__ import annotations

import html
import re
import unicodedata
import xml.etree.ElementTree as ET

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

MATHML = "http://www.w3.org/1998/Math/MathML"
ET.register_namespace("", MATHML)

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
# elements whose children are the parts of a layout: a missing part is a TeX mistake
_ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2,
          "munderover": 3, "mroot": 2}
# text that means TeX was left unconverted (outside code, pre and math)
_LEFTOVER = re.compile(
    r"\$\$|\\(?:frac|dfrac|tfrac|hat|bar|sum|prod|partial|sqrt|mathrm|text|begin|end|left|"
    r"right|cdot|alpha|beta|gamma|sigma|mu|epsilon|nabla|boxed)(?![A-Za-z])|\\[(\[]")
_SKIP = re.compile(r"<(pre|code|math|script|style|svg)\b.*?</\1>", re.S)
_VARIANTS = {"bold": "BOLD", "italic": "ITALIC", "bold-italic": "BOLD ITALIC",
             "double-struck": "DOUBLE-STRUCK", "script": "SCRIPT", "bold-script": "BOLD SCRIPT",
             "fraktur": "FRAKTUR", "bold-fraktur": "BOLD FRAKTUR",
             "sans-serif": "SANS-SERIF", "bold-sans-serif": "SANS-SERIF BOLD",
             "sans-serif-italic": "SANS-SERIF ITALIC", "monospace": "MONOSPACE"}
# letters Unicode keeps in the Letterlike Symbols block instead of the mathematical one
_LETTERLIKE = {("ITALIC", "h"): "ℎ", ("SCRIPT", "B"): "ℬ", ("SCRIPT", "E"): "ℰ",
               ("SCRIPT", "F"): "ℱ", ("SCRIPT", "H"): "ℋ", ("SCRIPT", "I"): "ℐ",
               ("SCRIPT", "L"): "ℒ", ("SCRIPT", "M"): "ℳ", ("SCRIPT", "R"): "ℛ",
               ("SCRIPT", "e"): "ℯ", ("SCRIPT", "g"): "ℊ", ("SCRIPT", "o"): "ℴ",
               ("DOUBLE-STRUCK", "C"): "ℂ", ("DOUBLE-STRUCK", "H"): "ℍ",
               ("DOUBLE-STRUCK", "N"): "ℕ", ("DOUBLE-STRUCK", "P"): "ℙ",
               ("DOUBLE-STRUCK", "Q"): "ℚ", ("DOUBLE-STRUCK", "R"): "ℝ",
               ("DOUBLE-STRUCK", "Z"): "ℤ", ("FRAKTUR", "C"): "ℭ", ("FRAKTUR", "H"): "ℌ",
               ("FRAKTUR", "I"): "ℑ", ("FRAKTUR", "R"): "ℜ", ("FRAKTUR", "Z"): "ℨ"}
PRIMES = ("′", "″", "‴")
SIGNS = ("−", "+", "±", "∓")
CLOSING = (")", "]", "}", "⟩", "|", "‖")


class MathError(ValueError):
    """A formula that cannot be shown as written."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _letter(variant: str, ch: str) -> str:
    """``ch`` in a mathematical alphabet, e.g. ("BOLD", "W") -> "𝐖"."""
    if ("A" <= ch <= "Z" or "a" <= ch <= "z") and variant:
        if (variant, ch) in _LETTERLIKE:
            return _LETTERLIKE[(variant, ch)]
        case = "CAPITAL" if ch.isupper() else "SMALL"
        return unicodedata.lookup(f"MATHEMATICAL {variant} {case} {ch.upper()}")
    if ch.isdigit() and variant in ("BOLD", "DOUBLE-STRUCK", "SANS-SERIF", "SANS-SERIF BOLD",
                                    "MONOSPACE"):
        return unicodedata.lookup(f"MATHEMATICAL {variant} DIGIT {unicodedata.name(ch)[6:]}")
    return ch


def _mo(text: str) -> ET.Element:
    mo = ET.Element(f"{{{MATHML}}}mo", {"lspace": "0", "rspace": "0"})
    mo.text = text
    return mo


def _bar(el: ET.Element) -> ET.Element | None:
    """The | or ‖ that ``el`` is, or that is the base of ``el`` (``\\|x\\|_2``), if no form
    was given to it."""
    if _local(el.tag) in ("msub", "msup", "msubsup") and len(el):
        el = el[0]
    if _local(el.tag) == "mo" and el.text in ("|", "‖") and el.get("form") is None:
        return el
    return None


def _typeset_like_tex(root: ET.Element) -> None:
    """Primes beside their base, |x| and ‖x‖ as fences, unary signs: what TeX does, and what
    MathML Core does not do from latex2mathml's markup."""
    for parent in list(root.iter()):
        for i, el in enumerate(list(parent)):
            tag = _local(el.tag)
            if tag in ("msup", "msubsup") and len(el) == (2 if tag == "msup" else 3):
                script = el[-1]
                if _local(script.tag) in ("mi", "mo") and script.text in PRIMES:
                    base = ET.Element(f"{{{MATHML}}}mrow")
                    base.extend([el[0], _mo(script.text)])
                    if tag == "msup":  # G' -> G′ (a prime is drawn at superscript height)
                        new = base
                    else:  # W_1' -> W′₁
                        new = ET.Element(f"{{{MATHML}}}msub")
                        new.extend([base, el[1]])
                    parent[i] = new
        bars = [b for b in map(_bar, parent) if b is not None]
        if bars and len(bars) % 2 == 0:  # pairs: open, close, open, close, ...
            for k, bar in enumerate(bars):
                bar.set("form", "postfix" if k % 2 else "prefix")
                bar.set("lspace", "0")
                bar.set("rspace", "0")
        before = None
        for el in parent:  # a sign after an operator or an opening fence is unary: -x, (-1/2)
            if (_local(el.tag) == "mo" and el.text in SIGNS and before is not None
                    and _local(before.tag) == "mo" and before.get("form") != "postfix"
                    and before.text not in CLOSING and el.get("form") is None):
                el.set("form", "prefix")
                el.set("lspace", "0")
                el.set("rspace", "0")
            before = el


def _to_core(root: ET.Element) -> None:
    """Check the tree and rewrite what MathML Core does not render, in place."""
    _typeset_like_tex(root)
    for el in root.iter():
        tag = _local(el.tag)
        if tag in _ARITY and len(el) != _ARITY[tag]:
            raise MathError(f"<{tag}> has {len(el)} parts instead of {_ARITY[tag]} "
                            "(a missing argument or a stray ^ or _?)")
        text = el.text or ""
        if tag in ("mi", "mo", "mn") and ("\\" in text or "&" in text):
            raise MathError(f"'{text}' was not understood (an unknown command, or & outside "
                            "a table: use \\begin{align*} or split the formula)")
        if tag == "mspace" and el.get("linebreak"):
            raise MathError("a \\\\ line break outside a table (browsers do not break lines "
                            "in MathML: use \\begin{align*} or separate formulas)")
        if tag == "menclose":
            if el.get("notation", "box") != "box":
                raise MathError(f"menclose notation={el.get('notation')!r} is not supported")
            el.tag = f"{{{MATHML}}}mrow"
            del el.attrib["notation"]
            el.set("style", "border: 0.06em solid; padding: 0.3em 0.4em")
        if tag == "mi" and text == "~":  # latex2mathml reads \sim as "~" (a table comment)
            el.tag, el.text = f"{{{MATHML}}}mo", "∼"
        if tag == "mo" and text == "/" and el.get("stretchy") is None:
            el.set("lspace", "0")  # a / b: TeX sets the slash without spaces
            el.set("rspace", "0")
        if tag == "mover" and el.get("accent") == "true" and len(el) == 2:
            # TeX's \hat is a fixed-size accent (\widehat stretches)
            if _local(el[1].tag) == "mo" and el[1].text == "^":
                el[1].text = "\u02c6"
                el[1].set("stretchy", "false")
        variant = el.attrib.get("mathvariant")
        if variant and variant != "normal":
            if variant not in _VARIANTS or tag not in ("mi", "mn"):
                raise MathError(f"mathvariant={variant!r} on <{tag}> is not rendered by "
                                "browsers")
            try:
                el.text = "".join(_letter(_VARIANTS[variant], c) for c in text)
            except KeyError:
                raise MathError(f"no Unicode letter for '{text}' in mathvariant={variant}") \
                    from None
            del el.attrib["mathvariant"]


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """One formula as a ``<math>`` element that MathML Core renders; MathError if it cannot."""
    tex = tex.strip()
    if not tex:
        raise MathError("empty formula")
    try:
        markup = convert(tex, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many types for malformed TeX
        raise MathError(f"latex2mathml: {type(e).__name__}: {e}") from None
    try:
        root = ET.fromstring(markup)
    except ET.ParseError as e:  # e.g. a bare & outside a table
        raise MathError(f"latex2mathml wrote invalid MathML ({e}): a & outside a table?") \
            from None
    _to_core(root)
    root.set("alttext", tex)  # the source, for assistive technology and for copying
    return ET.tostring(root, encoding="unicode", short_empty_elements=False)


def convert_page(source: str, where: str) -> str:
    """A page's HTML with every arithmatex formula as MathML; PluginError naming ``where``
    and the TeX if one cannot be rendered or if TeX is left in the text."""
    def sub(display):
        def repl(m):
            tex = html.unescape(m.group(1))
            try:
                math = tex_to_mathml(tex, display)
            except MathError as e:
                raise PluginError(f"docs/hooks/mathml.py: {where}: cannot render the formula "
                                  f"'{tex.strip()}': {e}") from None
            return (f'<div class="arithmatex">{math}</div>' if display
                    else f'<span class="arithmatex">{math}</span>')
        return repl

    out = _DISPLAY.sub(sub(True), source)
    out = _INLINE.sub(sub(False), out)
    text = html.unescape(re.sub(r"<[^>]+>", " ", _SKIP.sub(" ", out)))
    left = _LEFTOVER.search(text)
    if left:
        around = " ".join(text[max(0, left.start() - 60):left.end() + 60].split())
        raise PluginError(f"docs/hooks/mathml.py: {where}: TeX left unconverted near "
                          f"'{around}': arithmatex did not recognise it (a $$ block needs blank "
                          "lines around it, and inside a list item four spaces of indentation)")
    return out


# MathML Core ignores columnalign/columnspacing/rowspacing; a math font with an OpenType MATH
# table draws large operators, radicals and accents properly (any of these the reader has)
STYLE = """<style id="tex-mathml">
math { font-family: "Latin Modern Math", "STIX Two Math", "Cambria Math", "Libertinus Math",
  "TeX Gyre Termes Math", "DejaVu Math TeX Gyre", math; }
mtd { padding: 0.2em 0; }
mtd[columnalign="left"] { text-align: left; }
mtd[columnalign="right"] { text-align: right; }
</style>"""


def on_page_content(html_text: str, page, config, files) -> str:
    return convert_page(html_text, page.file.src_uri)


def on_post_page(output: str, page, config) -> str:
    if "<math" not in output:
        return output
    return output.replace("</head>", STYLE + "</head>", 1)
