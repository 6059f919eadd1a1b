"""Griffe extension used by the API reference: items that document several names; doctest examples.

A section titled ``Example:`` (singular) is read by griffe as an admonition whose ``>>>`` lines
Markdown turns into nested blockquotes; it is renamed ``Examples:``, griffe's examples section, whose
doctest lines are rendered as Python code.

The docstrings sometimes document two related parameters on one line, e.g.
``rtol, atol: tolerances of the adaptive methods.`` Griffe's Google parser expects one name per
item, so this extension rewrites such an item into one item per name (each with the full
description) before the docstring is parsed. Everything else is left untouched, so griffe still
warns about parameters that do not exist.
"""

from __future__ import annotations

import re
from typing import Any, List

import griffe

_SECTIONS = {"args:", "arguments:", "parameters:", "params:", "attributes:", "other parameters:"}
_NAMES = r"(?P<names>[A-Za-z_*]\w*(?:\s*,\s*[A-Za-z_*]\w*)+)"  # two or more comma-separated names
_REST = r"(?P<rest>\s*(?:\([^)]*\))?:\s.*|\s*(?:\([^)]*\))?:)"  # optional "(type)", the colon, the description
_MULTI = re.compile(f"^{_NAMES}{_REST}$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def split_multi_name_items(text: str) -> str:
    """Rewrite ``a, b: description`` items of argument-like sections into one item per name."""
    lines = text.split("\n")
    out: List[str] = []
    i, n = 0, len(lines)
    section_indent = None  # indentation of the current section header, when inside a section
    item_indent = None
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if stripped.lower() in _SECTIONS:
            section_indent, item_indent = _indent(line), None
            out.append(line)
            i += 1
            continue
        if section_indent is not None and stripped:
            ind = _indent(line)
            if ind <= section_indent:
                section_indent = item_indent = None
            else:
                if item_indent is None:
                    item_indent = ind
                m = _MULTI.match(stripped) if ind == item_indent else None
                if m:
                    # the item's continuation lines: more indented than the item, blank lines inside
                    j = i + 1
                    while j < n and (not lines[j].strip() or _indent(lines[j]) > item_indent):
                        j += 1
                    while j > i + 1 and not lines[j - 1].strip():
                        j -= 1
                    body = lines[i + 1 : j]
                    for name in (s.strip() for s in m.group("names").split(",")):
                        out.append(" " * ind + name + m.group("rest"))
                        out.extend(body)
                    i = j
                    continue
        out.append(line)
        i += 1
    return "\n".join(out)


_EXAMPLE = re.compile(r"^(?P<indent>[ ]*)Example:[ ]*$", re.M)


def examples_as_code(text: str) -> str:
    """Rename ``Example:`` section headers to ``Examples:`` (rendered as code by griffe)."""
    return _EXAMPLE.sub(r"\g<indent>Examples:", text)


class MultiNameItems(griffe.Extension):
    """Split multi-name docstring items and render ``Example:`` sections as code (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and "," in obj.docstring.value:
            obj.docstring.value = split_multi_name_items(obj.docstring.value)
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = examples_as_code(obj.docstring.value)
