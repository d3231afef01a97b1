"""A Griffe extension for the docs site (mkdocs.yml: mkdocstrings' ``extensions``): the
packages' docstrings are reST-flavoured prose, rendered here as markdown without parsing
sections, so a few reST habits are turned into their markdown equivalents first:

- doctest blocks (``>>>`` lines and their output) become ``pycon`` code fences (otherwise an
  output such as ``[(16,)]`` after a line ending in ``]`` reads as a markdown reference link);
- roles such as :class:`~jepa_core.trainer.Trainer` become inline code (``Trainer``);
- a paragraph ending in ``::`` (a reST literal block follows) ends in ``:``.

Nothing in the packages is changed; only the text mkdocstrings renders.
"""

from __future__ import annotations

import re

from griffe import Extension, Object

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|ref|doc|term|envvar):`(~?)([^`]+)`")


def _role(m: re.Match) -> str:
    text = re.sub(r"\s*\n\s*", " ", re.sub(r"\.\s*\n\s*", ".", m.group(2)))  # a role broken over lines
    label = re.match(r"(.*?)\s*<(.+)>$", text)  # :ref:`label <target>`
    if label:
        text = label.group(1)
    elif m.group(1):
        text = text.rsplit(".", 1)[-1]
    return f"`{text}`"


def convert(text: str) -> str:
    """The markdown for one docstring (see the module docstring)."""
    out: list[str] = []
    if "```" not in text:
        text = _ROLE.sub(_role, text)
    lines = text.splitlines()
    i = 0
    fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fence = not fence
        if not fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        if not fence:
            line = _ROLE.sub(_role, line)
            if line.rstrip().endswith("::") and not line.rstrip().endswith(" ::"):
                line = line.rstrip()[:-1]
            elif line.strip() == "::":
                line = ""
        out.append(line)
        i += 1
    return "\n".join(out)


class ReSTToMarkdown(Extension):
    """Convert every docstring's reST habits to markdown once the object tree is loaded."""

    def on_object(self, *, obj: Object, **kwargs) -> None:
        if obj.is_alias or obj.docstring is None:
            return
        obj.docstring.value = convert(obj.docstring.value)
