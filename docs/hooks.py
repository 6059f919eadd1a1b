"""MkDocs hooks: Sphinx cross-reference roles, math rendered to MathML at build time, offline-safe pages.

* Docstrings write references as ``:class:`SDE``` (reStructuredText roles). mkdocstrings renders
  the backticked part as code and leaves the role name as text; the role name is dropped so the
  page shows just the code, e.g. ``SDE``.
* ``pymdownx.arithmatex`` (generic mode) leaves TeX in ``<span class="arithmatex">\\(...\\)</span>``
  and ``<div class="arithmatex">\\[...\\]</div>``. Instead of a JavaScript renderer fetched by the
  browser, the TeX is converted to MathML here, when the site is built (``latex2mathml``, a pure
  Python package); browsers display MathML natively, so the pages show equations with no network
  and no script.
"""

import html
import re

from latex2mathml.converter import convert

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):(<code>)")
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_DISPLAY = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def tex_to_mathml(tex: str, display: bool) -> str:
    """MathML for the (HTML-escaped) TeX ``tex``; raises ValueError with the formula when it cannot be converted."""
    source = html.unescape(tex).strip()
    try:
        return convert(source, display="block" if display else "inline")
    except Exception as e:  # noqa: BLE001  (the converter raises many types)
        raise ValueError(f"cannot render the formula {source!r}: {e}") from None


def render_math(text: str) -> str:
    """Replace every arithmatex span and div of a page by MathML."""
    text = _DISPLAY.sub(lambda m: '<div class="arithmatex">' + tex_to_mathml(m.group(1), True) + "</div>", text)
    return _INLINE.sub(lambda m: '<span class="arithmatex">' + tex_to_mathml(m.group(1), False) + "</span>", text)


def on_page_content(html_text, page, config, files):
    return render_math(_ROLE.sub(r"\1", html_text))
