"""The Gallery page's look: the square grid's style and the detail view's first facts.

Kept out of ``pages/gallery.py`` so the page stays widgets and calls into core.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from webui.page import escape_markdown


def grid_style() -> None:
    """Lay each cell's "open" button over its square thumbnail.

    Clicking the picture then opens it (the button keeps the keyboard focus and the label
    "#id" for screen readers). Thumbnails are cut square in core
    (``ImageStore.square_thumbnail_path``), so every cell has the same size whatever the
    originals' shapes. Cells are containers keyed ``g_cell_<id>`` (``g_cellsel_<id>`` for
    the open image, outlined), near-duplicates ``g_ncell_<id>``; their buttons ``g_open_``
    and ``g_near_``.
    """
    st.html("""<style>
    [class*="st-key-g_cell_"], [class*="st-key-g_cellsel_"], [class*="st-key-g_ncell_"] {
      position: relative; gap: 0.2rem; }
    [class*="st-key-g_open_"], [class*="st-key-g_near_"] {
      position: absolute; top: 0; left: 0; width: 100%; aspect-ratio: 1 / 1; z-index: 1; }
    [class*="st-key-g_open_"] :is(.stButton, .stButton > div, .stTooltipIcon, .stTooltipHoverTarget, button),
    [class*="st-key-g_near_"] :is(.stButton, .stButton > div, .stTooltipIcon, .stTooltipHoverTarget, button) {
      width: 100%; height: 100%; }
    [class*="st-key-g_open_"] button, [class*="st-key-g_near_"] button {
      background: transparent; color: transparent; border: 3px solid transparent;
      border-radius: 0.5rem; cursor: zoom-in; }
    [class*="st-key-g_open_"] button:hover, [class*="st-key-g_near_"] button:hover,
    [class*="st-key-g_open_"] button:focus-visible, [class*="st-key-g_near_"] button:focus-visible {
      background: transparent; color: transparent; border-color: rgba(255, 75, 75, 0.8); }
    [class*="st-key-g_cell"] img, [class*="st-key-g_ncell_"] img { border-radius: 0.5rem; }
    [class*="st-key-g_cellsel_"] img { outline: 4px solid #ff4b4b; outline-offset: -4px; }
    .st-key-g_detail_image img { max-height: 70vh; object-fit: contain; }
    </style>""")


def _one_line(value: Any) -> str:
    return escape_markdown(" ".join(str(value).split()))


def detail_facts(detail: dict[str, Any]) -> str:
    """What people look for first, as markdown: class, source, dataset, prompt, seed, model, size."""
    lines = [f"**Class:** {_one_line(detail['class_display_name'])} (`{detail['class']}`)",
             f"**Source:** {detail['source']}",
             f"**Dataset:** {_one_line(detail['dataset'])}",
             f"**Split:** {_one_line(detail['split']) if detail.get('split') else 'none'}"]
    if detail.get("prompt"):
        lines.append(f"**Prompt:** {_one_line(detail['prompt'])}")
    if detail.get("negative_prompt"):
        lines.append(f"**Negative prompt:** {_one_line(detail['negative_prompt'])}")
    if detail.get("seed") is not None:
        lines.append(f"**Seed:** {detail['seed']}")
    if detail.get("model"):
        lines.append(f"**Model:** {_one_line(detail['model'])}")
    lines.append(f"**Size:** {detail['width']} × {detail['height']} px "
                 f"({_one_line(detail.get('format') or '?')})")
    added = detail.get("added_at")
    when = f" on {added:%Y-%m-%d %H:%M}" if hasattr(added, "strftime") else ""
    lines.append(f"**Added by:** {_one_line(detail.get('added_by') or 'unknown')}{when}")
    if detail.get("excluded"):
        lines.append("**Excluded:** yes (left out of views and training sets)")
    return "  \n".join(lines)


# The fields ``detail_facts`` shows; the page lists the rest (hashes, paths) below them.
DETAIL_FIRST_FIELDS = {"class", "class_display_name", "source", "dataset", "split", "prompt",
                       "negative_prompt", "seed", "model", "width", "height", "format",
                       "added_by", "added_at", "excluded"}
