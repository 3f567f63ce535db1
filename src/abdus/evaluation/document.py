"""Report documents: blocks (heading, paragraph, bullets, table, figure) and their renderers.

A document is a list of blocks rendered twice: Markdown with the PNGs written beside it and
linked, and one self-contained HTML page (Jinja2 template ``templates/document.html.j2``,
autoescaped) with the PNGs embedded as base64 data URIs. Every file
goes through ``abdus.io.atomic``. The reports built from these blocks are
``abdus.evaluation.report``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from abdus.evaluation.tables import Table
from abdus.io.atomic import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Image:
    """A PNG figure: written as ``filename`` beside the Markdown, embedded in the HTML."""

    filename: str
    png: bytes
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("abdus.evaluation", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATES.tests.update(
    heading=lambda block: isinstance(block, Heading),
    paragraph=lambda block: isinstance(block, Paragraph),
    bullets=lambda block: isinstance(block, Bullets),
    table=lambda block: isinstance(block, Table),
)
_TEMPLATES.filters["base64"] = lambda data: base64.b64encode(data).decode("ascii")


def render_markdown(blocks: Sequence[Block], title: str) -> str:
    """Markdown text; figures are linked by file name (written beside it by the caller)."""
    parts = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(block.to_markdown().rstrip("\n"))
        else:
            parts.append(f"![{block.caption}]({block.filename})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page: inline CSS, PNGs as ``data:image/png;base64`` URIs.

    Rendered from ``templates/document.html.j2`` with autoescaping on: every title, text,
    caption and table cell (file names, reader names) is escaped.
    """
    return _TEMPLATES.get_template("document.html.j2").render(blocks=blocks, title=title)


def write_document(
    blocks: Sequence[Block], out_dir: Path, stem: str, title: str
) -> tuple[Path, Path]:
    """Write the figures, ``<stem>.md`` and ``<stem>.html`` into ``out_dir`` (all atomic)."""
    out_dir = Path(out_dir)
    for block in blocks:
        if isinstance(block, Image):
            atomic_write_bytes(out_dir / block.filename, block.png)
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    atomic_write_text(md_path, render_markdown(blocks, title))
    atomic_write_text(html_path, render_html(blocks, title))
    return md_path, html_path
