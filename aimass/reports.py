"""Self-contained HTML and Markdown for the Kubeflow UI: pictures are embedded, nothing is fetched at view time."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: components run in containers with no display
from matplotlib.figure import Figure  # noqa: E402


def figure_png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_page(title: str, figure: Figure, caption: str = "") -> str:
    """A page with one embedded PNG figure (a data: URI, so it renders in the KFP UI's sandboxed iframe)."""
    escaped = html.escape(title)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escaped}</title></head>"
        f"<body style='font-family:sans-serif'><h2>{escaped}</h2>"
        f"<img alt='{escaped}' src='data:image/png;base64,{figure_png_base64(figure)}'/>"
        f"<p>{html.escape(caption)}</p></body></html>"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
