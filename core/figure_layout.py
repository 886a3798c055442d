"""Figure layout every page's plotly chart shares, so each is readable at its column width.

Plotly draws its toolbar (the "modebar": zoom, download...) over the top right of a chart,
inside the top margin; a title there, or bars reaching the top of the plot area, end up
under its icons (issue 15). So every figure keeps a strip at the top for the toolbar,
puts its title below that strip, left-aligned, and wraps a long title onto more lines
(plotly never wraps: a line wider than the chart is cut off). Parameters go on a smaller
second line, not at the end of one long title.
"""

from __future__ import annotations

import html
import textwrap
from typing import Any

# Height of plotly's toolbar strip (its icons are 14-20 px tall with padding).
MODEBAR_PX = 34
TITLE_FONT_PX = 15
SUBTITLE_FONT_PX = 12
# Average glyph width over font size for plotly's default sans-serif font, generously.
_CHAR_WIDTH = 0.56


def wrap_text(text: str, width_px: int, font_px: int) -> list[str]:
    """``text`` broken at spaces into lines that fit ``width_px`` at ``font_px``."""
    chars = max(12, int(width_px / (font_px * _CHAR_WIDTH)))
    return textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False) or [""]


def title_layout(title: str | None, *, subtitle: str | None = None,
                 width_px: int = 320) -> tuple[dict[str, Any] | None, int]:
    """The layout ``title`` (escaped, wrapped for ``width_px``) and the top margin it needs,
    toolbar strip included. ``width_px``: the narrowest column the figure is drawn in."""
    if not title:
        return None, MODEBAR_PX
    lines = [html.escape(line) for line in wrap_text(title, width_px, TITLE_FONT_PX)]
    sub = wrap_text(subtitle, width_px, SUBTITLE_FONT_PX) if subtitle else []
    lines += [f'<span style="font-size:{SUBTITLE_FONT_PX}px">{html.escape(line)}</span>'
              for line in sub]
    line_px = round(TITLE_FONT_PX * 1.35)
    height = len(lines) * line_px + 10
    # Just above the plot area, from its left edge: clear of the toolbar (top right). With
    # yanchor "bottom" plotly stands the *first* line on the plot area and lets the others
    # hang below it, over the plot: lift the title by its extra lines.
    return ({"text": "<br>".join(lines), "font": {"size": TITLE_FONT_PX},
             "x": 0, "xref": "paper", "xanchor": "left",
             "y": 1, "yref": "paper", "yanchor": "bottom",
             "pad": {"b": 8 + (len(lines) - 1) * line_px}},
            MODEBAR_PX + height)


def readable(figure: Any, title: str | None = None, *, subtitle: str | None = None,
             width_px: int = 320, margin: dict[str, int] | None = None) -> Any:
    """Give ``figure`` its title and margins (``margin``: the other sides)."""
    layout_title, top = title_layout(title, subtitle=subtitle, width_px=width_px)
    sides = {"l": 10, "r": 10, "b": 10, **(margin or {}), "t": top}
    figure.update_layout(title=layout_title or {"text": ""}, margin=sides)
    return figure
