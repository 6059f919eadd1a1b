"""MkDocs hook: render the Sphinx cross-reference roles used in the docstrings.

Docstrings write references as ``:class:`SDE``` (reStructuredText roles). mkdocstrings renders
the backticked part as code and leaves the role name as text; this hook drops the role name so
the page shows just the code, e.g. ``SDE``.
"""

import re

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):(<code>)")


def on_page_content(html, page, config, files):
    return _ROLE.sub(r"\1", html)
