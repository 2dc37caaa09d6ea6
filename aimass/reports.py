"""Self-contained HTML and Markdown for the Kubeflow UI: pictures are embedded, nothing is fetched at view time."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # matplotlib is imported by the stages that draw, not by every stage that writes a table
    from matplotlib.figure import Figure


def figure_png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_page(title: str, figure: Figure | None, caption: str = "") -> str:
    """A page with one embedded PNG figure (a data: URI, so it renders in the KFP UI's sandboxed iframe), or only
    its caption when there is nothing to draw."""
    escaped = html.escape(title)
    image = "" if figure is None else f"<img alt='{escaped}' src='data:image/png;base64,{figure_png_base64(figure)}'/>"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escaped}</title></head>"
        f"<body style='font-family:sans-serif'><h2>{escaped}</h2>{image}"
        f"<p>{html.escape(caption)}</p></body></html>"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# Enough style to read a page whose own stylesheets (on public CDNs) were dropped.
_OFFLINE_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.modal, .ge-walkthrough-modal, .sr-only { display: none; }
"""


class _SelfContained(HTMLParser):
    """Re-emits a page without what a browser would fetch from elsewhere: scripts (external, and inline ones that
    need those), stylesheets and icons by URL, images not embedded as data: URIs, and links to pages that do not
    travel with the artifact (they become plain text)."""

    _DROPPED_WITH_CONTENT = {"script"}

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.parts: list[str] = []
        self.skipping = 0
        self.open_links: list[bool] = []  # per <a>: was it kept?

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in self._DROPPED_WITH_CONTENT:
            self.skipping += 1
            return
        if self.skipping or tag == "link" or (tag == "img" and not attributes.get("src", "").startswith("data:")):
            return
        if tag == "a":
            keep = attributes.get("href", "").startswith("#")
            self.open_links.append(keep)
            if not keep:
                return
        self.parts.append(self.get_starttag_text())
        if tag == "head":
            self.parts.append(f"<style>{_OFFLINE_CSS}</style>")

    def handle_startendtag(self, tag, attrs):
        if not self.skipping and tag not in ("link", "img", "script"):
            self.parts.append(self.get_starttag_text())
        elif tag == "img" and not self.skipping and dict(attrs).get("src", "").startswith("data:"):
            self.parts.append(self.get_starttag_text())

    def handle_endtag(self, tag):
        if tag in self._DROPPED_WITH_CONTENT:
            self.skipping -= 1
            return
        if self.skipping or tag in ("link", "img"):
            return
        if tag == "a" and self.open_links and not self.open_links.pop():
            return
        self.parts.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)

    def handle_entityref(self, name):
        if not self.skipping:
            self.parts.append(f"&{name};")

    def handle_charref(self, name):
        if not self.skipping:
            self.parts.append(f"&#{name};")

    def handle_decl(self, decl):
        self.parts.append(f"<!{decl}>")

    def handle_comment(self, data):
        pass


def self_contained_html(page: str) -> str:
    """`page` with nothing left to fetch at view time, so it renders whole in the KFP UI's sandboxed iframe and in
    clusters without internet access (Great Expectations' Data Docs load Bootstrap, jQuery and Vega from CDNs)."""
    parser = _SelfContained()
    parser.feed(page)
    parser.close()
    return "".join(parser.parts)
