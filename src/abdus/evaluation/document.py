"""Report documents: blocks (heading, paragraph, bullets, table, figure) and their renderers.

A document is a list of blocks rendered twice: Markdown with the PNGs written beside it and
linked, and one self-contained HTML page with the PNGs embedded as base64 data URIs. Every file
goes through ``abdus.io.atomic``. The reports built from these blocks are
``abdus.evaluation.report``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from abdus.evaluation import plots
from abdus.evaluation.tables import Table
from abdus.io.atomic import atomic_write_text

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 0.4em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


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
    """One self-contained HTML page: inline CSS, PNGs as ``data:image/png;base64`` URIs."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            parts.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            parts.append(block.to_html())
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def write_document(
    blocks: Sequence[Block], out_dir: Path, stem: str, title: str
) -> tuple[Path, Path]:
    """Write the figures, ``<stem>.md`` and ``<stem>.html`` into ``out_dir`` (all atomic)."""
    out_dir = Path(out_dir)
    for block in blocks:
        if isinstance(block, Image):
            plots.write_png(out_dir / block.filename, block.png)
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    atomic_write_text(md_path, render_markdown(blocks, title))
    atomic_write_text(html_path, render_html(blocks, title))
    return md_path, html_path
